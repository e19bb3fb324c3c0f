//! BLIP captions in the store: one per image, with the settings fingerprint it was made with.

use serde::{Deserialize, Serialize};
use sled::Transactional;

use super::records::{id_from_key, id_key};
use super::{Store, json, parse};
use crate::error::Result;
use crate::store::ImageId;

/// A stored caption.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredCaption {
    /// The caption.
    pub text: String,
    /// What made it (model, prompt, beams, token limit), as `caption --library` compares it.
    pub settings: String,
}

impl Store {
    /// Stores an image's caption. Returns false (and stores nothing) when the image is no
    /// longer stored (it went away while being captioned).
    pub fn set_caption(&self, id: ImageId, caption: &StoredCaption) -> Result<bool> {
        let bytes = json(caption);
        let stored = (&self.images, &self.captions)
            .transaction(|(images, captions)| {
                if images.get(id_key(id))?.is_none() {
                    return Ok(false);
                }
                captions.insert(&id_key(id), bytes.as_slice())?;
                Ok(true)
            })
            .map_err(|e: sled::transaction::TransactionError<String>| self.err(format!("store caption: {e}")))?;
        self.caption_changes.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        Ok(stored)
    }

    /// An image's caption.
    pub fn caption_of(&self, id: ImageId) -> Result<Option<StoredCaption>> {
        match self.captions.get(id_key(id)).map_err(|e| self.err(e))? {
            Some(b) => Ok(Some(parse(&self.dir, "caption", &b)?)),
            None => Ok(None),
        }
    }

    /// Every stored caption, in id order.
    pub fn captions(&self) -> impl Iterator<Item = Result<(ImageId, StoredCaption)>> + '_ {
        self.captions.iter().filter_map(move |kv| {
            let (k, v) = match kv {
                Ok(kv) => kv,
                Err(e) => return Some(Err(self.err(e))),
            };
            let id = id_from_key(&k)?;
            Some(parse(&self.dir, "caption", &v).map(|c| (id, c)))
        })
    }

    /// Bumped by every caption written (for in-memory caption rankings; captions of removed
    /// images are filtered out when results are resolved to paths).
    pub fn caption_changes(&self) -> u64 {
        self.caption_changes.load(std::sync::atomic::Ordering::SeqCst)
    }
}
