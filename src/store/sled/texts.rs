//! The text read in photos, in the `texts` tree: image id → [`StoredText`] (JSON).

use sled::Transactional;
use sled::transaction::ConflictableTransactionError;

use super::keys::{id_from_key, id_key};
use super::{SledStore, json, parse};
use crate::error::Result;
use crate::store::{ImageId, ImageRecord, Records, StoredText, TextStore};

impl TextStore for SledStore {
    fn set_text(&self, id: ImageId, text: &StoredText) -> Result<bool> {
        let bytes = json(text);
        let stored = (&self.images, &self.texts)
            .transaction(|(images, texts)| {
                // Only the text of the image's own content: lines read from a file that changed
                // meanwhile belong to another image.
                let Some(record) = images.get(id_key(id))? else { return Ok(false) };
                let record: ImageRecord = serde_json::from_slice(&record)
                    .map_err(|e| ConflictableTransactionError::Abort(format!("corrupt image record {id}: {e}")))?;
                if record.hash != text.hash {
                    return Ok(false);
                }
                texts.insert(&id_key(id), bytes.as_slice())?;
                Ok(true)
            })
            .map_err(|e: sled::transaction::TransactionError<String>| self.err(format!("store photo text: {e}")))?;
        self.text_changes.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        Ok(stored)
    }

    fn text_of(&self, id: ImageId) -> Result<Option<StoredText>> {
        match self.texts.get(id_key(id)).map_err(|e| self.err(e))? {
            Some(b) => Ok(Some(parse(&self.dir, "photo text", &b)?)),
            None => Ok(None),
        }
    }

    fn texts(&self) -> Records<'_, StoredText> {
        Box::new(self.texts.iter().filter_map(move |kv| {
            let (k, v) = match kv {
                Ok(kv) => kv,
                Err(e) => return Some(Err(self.err(e))),
            };
            let id = id_from_key(&k)?;
            Some(parse(&self.dir, "photo text", &v).map(|t| (id, t)))
        }))
    }

    fn text_count(&self) -> Result<u64> {
        Ok(self.texts.len() as u64)
    }

    fn text_changes(&self) -> Result<u64> {
        // Texts of removed images are filtered out when results are resolved to paths.
        Ok(self.text_changes.load(std::sync::atomic::Ordering::SeqCst))
    }
}
