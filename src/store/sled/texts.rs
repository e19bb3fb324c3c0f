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
        let stored = (&self.images, &self.texts, &self.meta)
            .transaction(|(images, texts, meta)| {
                // Only the text of the image's own content: lines read from a file that changed
                // meanwhile belong to another image.
                let Some(record) = images.get(id_key(id))? else { return Ok(false) };
                let record: ImageRecord = serde_json::from_slice(&record)
                    .map_err(|e| ConflictableTransactionError::Abort(format!("corrupt image record {id}: {e}")))?;
                if record.hash != text.hash {
                    return Ok(false);
                }
                texts.insert(&id_key(id), bytes.as_slice())?;
                bump_full_text_stamp(meta)?;
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

    fn full_text_stamp(&self) -> Result<Option<u64>> {
        let stamp = self.meta.get(FULL_TEXT_STAMP).map_err(|e| self.err(e))?;
        Ok(Some(stamp.map(|b| be_u64(&b)).unwrap_or(0)))
    }

    fn full_text_removals(&self, after: u64) -> Result<Vec<(u64, ImageId)>> {
        let start = removal_key(after.saturating_add(1));
        let mut out = Vec::new();
        for kv in self.meta.range(start..) {
            let (k, v) = kv.map_err(|e| self.err(e))?;
            let Some(stamp) = k.strip_prefix(REMOVAL_PREFIX) else { break };
            out.push((be_u64(stamp), be_u64(&v)));
        }
        Ok(out)
    }

    fn forget_full_text_removals(&self, upto: u64) -> Result<()> {
        let end = removal_key(upto.saturating_add(1));
        for k in self.meta.range(removal_key(0)..end).keys() {
            let k = k.map_err(|e| self.err(e))?;
            self.meta.remove(k).map_err(|e| self.err(e))?;
        }
        Ok(())
    }
}

/// The key in `meta` of [`TextStore::full_text_stamp`].
const FULL_TEXT_STAMP: &str = "full_text_stamp";

fn be_u64(bytes: &[u8]) -> u64 {
    bytes.try_into().map(u64::from_be_bytes).unwrap_or(0)
}

/// The keys in `meta` of the journal of removals ([`TextStore::full_text_removals`]): this
/// prefix, then the stamp the removal moved to (big-endian, so keys sort by stamp).
const REMOVAL_PREFIX: &[u8] = b"full_text_removed/";

fn removal_key(stamp: u64) -> Vec<u8> {
    [REMOVAL_PREFIX, &stamp.to_be_bytes()].concat()
}

/// Inside a transaction writing a caption or a text: moves the full-text stamp. Returns the
/// new stamp.
pub(super) fn bump_full_text_stamp(
    meta: &sled::transaction::TransactionalTree,
) -> std::result::Result<u64, ConflictableTransactionError<String>> {
    let stamp = meta.get(FULL_TEXT_STAMP)?.map(|b| be_u64(&b)).unwrap_or(0).wrapping_add(1);
    meta.insert(FULL_TEXT_STAMP, &stamp.to_be_bytes())?;
    Ok(stamp)
}

/// Inside a transaction removing an image that had a caption or a text: moves the full-text
/// stamp and records which image went at that stamp, so that an index on disk can drop its
/// documents rather than be rebuilt.
pub(super) fn journal_full_text_removal(
    meta: &sled::transaction::TransactionalTree,
    id: ImageId,
) -> std::result::Result<(), ConflictableTransactionError<String>> {
    let stamp = bump_full_text_stamp(meta)?;
    meta.insert(removal_key(stamp), &id.to_be_bytes())?;
    Ok(())
}
