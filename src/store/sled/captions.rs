//! BLIP captions in the store: one per image, with the settings fingerprint it was made with.

use sled::Transactional;

use super::keys::{id_from_key, id_key};
use super::{SledStore, json, parse};
use crate::error::Result;
use crate::store::{CaptionStore, ImageId, Records, StoredCaption};

impl CaptionStore for SledStore {
    /// Stores an image's caption. Returns false (and stores nothing) when the image is no
    /// longer stored (it went away while being captioned).
    fn set_caption(&self, id: ImageId, caption: &StoredCaption) -> Result<bool> {
        let bytes = json(caption);
        let stored = (&self.images, &self.captions, &self.meta)
            .transaction(|(images, captions, meta)| {
                if images.get(id_key(id))?.is_none() {
                    return Ok(false);
                }
                captions.insert(&id_key(id), bytes.as_slice())?;
                super::texts::bump_full_text_stamp(meta)?;
                Ok(true)
            })
            .map_err(|e: sled::transaction::TransactionError<String>| self.err(format!("store caption: {e}")))?;
        self.caption_changes.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        Ok(stored)
    }

    /// An image's caption.
    fn caption_of(&self, id: ImageId) -> Result<Option<StoredCaption>> {
        match self.captions.get(id_key(id)).map_err(|e| self.err(e))? {
            Some(b) => Ok(Some(parse(&self.dir, "caption", &b)?)),
            None => Ok(None),
        }
    }

    /// Every stored caption, in id order.
    fn captions(&self) -> Records<'_, StoredCaption> {
        Box::new(self.captions.iter().filter_map(move |kv| {
            let (k, v) = match kv {
                Ok(kv) => kv,
                Err(e) => return Some(Err(self.err(e))),
            };
            let id = id_from_key(&k)?;
            Some(parse(&self.dir, "caption", &v).map(|c| (id, c)))
        }))
    }

    /// Bumped by every caption written (for in-memory caption rankings; captions of removed
    /// images are filtered out when results are resolved to paths).
    fn caption_changes(&self) -> Result<u64> {
        Ok(self.caption_changes.load(std::sync::atomic::Ordering::SeqCst))
    }
}
