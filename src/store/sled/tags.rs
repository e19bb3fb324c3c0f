//! Zero-shot tags in the store: each image's confident tags with the vocabulary fingerprint
//! they came from, an index from label to images for tag filters and counts, and a cache of
//! label embeddings so that a vocabulary is embedded once per model and prompt set.

use serde::{Deserialize, Serialize};
use sled::Transactional;
use sled::transaction::TransactionalTree;

use super::keys::{id_from_key, id_key, vector_bytes, vector_from_bytes};
use super::{SledStore, TxResult, abort, json, parse};
use crate::error::Result;
use crate::store::{Backend, ImageId, MAX_CACHED_LABELS, Tag, TagCount, TagStore};

#[derive(Serialize, Deserialize)]
struct TagSet {
    vocabulary: String,
    tags: Vec<Tag>,
}

/// `label ++ 0x00 ++ id`: labels never contain NUL (vocabulary parsing drops control
/// characters), so a label's entries are exactly the keys starting with `label ++ 0x00`.
fn index_key(label: &str, id: ImageId) -> Vec<u8> {
    let mut k = label_prefix(label);
    k.extend_from_slice(&id_key(id));
    k
}

fn label_prefix(label: &str) -> Vec<u8> {
    let mut k = label.as_bytes().to_vec();
    k.push(0);
    k
}

/// Inside a transaction: removes an image's tags and their index entries.
pub(super) fn tx_clear(tags: &TransactionalTree, tag_index: &TransactionalTree, id: ImageId) -> TxResult<()> {
    if let Some(old) = tags.remove(&id_key(id))? {
        let old: TagSet = serde_json::from_slice(&old).map_err(abort)?;
        for t in &old.tags {
            tag_index.remove(index_key(&t.label, id))?;
        }
    }
    Ok(())
}

fn cache_key(prefix: &str, label: &str) -> Vec<u8> {
    let mut k = prefix.as_bytes().to_vec();
    k.push(0);
    k.extend_from_slice(label.as_bytes());
    k
}

impl TagStore for SledStore {
    /// Replaces an image's tags, recording the vocabulary fingerprint they came from. Returns
    /// false (and stores nothing) when the image is no longer stored.
    fn set_tags(&self, id: ImageId, vocabulary: &str, tags: &[Tag]) -> Result<bool> {
        let set = json(&TagSet { vocabulary: vocabulary.to_string(), tags: tags.to_vec() });
        (&self.images, &self.tags, &self.tag_index)
            .transaction(|(images, tag_tree, tag_index)| {
                if images.get(id_key(id))?.is_none() {
                    return Ok(false);
                }
                tx_clear(tag_tree, tag_index, id)?;
                for t in tags {
                    tag_index.insert(index_key(&t.label, id), &t.probability.to_le_bytes())?;
                }
                tag_tree.insert(&id_key(id), set.as_slice())?;
                Ok(true)
            })
            .map_err(|e: sled::transaction::TransactionError<String>| match e {
                sled::transaction::TransactionError::Abort(msg) => self.err(format!("store tags: {msg}")),
                sled::transaction::TransactionError::Storage(e) => self.err(format!("store tags: {e}")),
            })
    }

    /// Removes every image's tags (a new vocabulary, or auto-tagging switched off).
    fn clear_tags(&self) -> Result<()> {
        self.tags.clear().map_err(|e| self.err(e))?;
        self.tag_index.clear().map_err(|e| self.err(e))?;
        self.flush()
    }

    /// An image's tags, most probable first, and the vocabulary fingerprint they came from.
    fn tags_of(&self, id: ImageId) -> Result<Option<(String, Vec<Tag>)>> {
        match self.tags.get(id_key(id)).map_err(|e| self.err(e))? {
            Some(b) => {
                let set: TagSet = parse(&self.dir, "tags", &b)?;
                Ok(Some((set.vocabulary, set.tags)))
            }
            None => Ok(None),
        }
    }

    /// Whether an image carries a tag.
    fn has_tag(&self, id: ImageId, label: &str) -> Result<bool> {
        self.tag_index.contains_key(index_key(label, id)).map_err(|e| self.err(e))
    }

    /// Whether any image carries a tag.
    fn tag_in_use(&self, label: &str) -> Result<bool> {
        Ok(self.tag_index.scan_prefix(label_prefix(label)).next().transpose().map_err(|e| self.err(e))?.is_some())
    }

    /// The images carrying a tag, most probable first.
    fn images_tagged(&self, label: &str) -> Result<Vec<(ImageId, f32)>> {
        let prefix = label_prefix(label);
        let mut out = Vec::new();
        for kv in self.tag_index.scan_prefix(&prefix) {
            let (k, v) = kv.map_err(|e| self.err(e))?;
            let id = id_from_key(&k[prefix.len()..]).ok_or_else(|| self.err("corrupt tag index key"))?;
            let p = v.as_ref().try_into().map(f32::from_le_bytes).unwrap_or(0.0);
            out.push((id, p));
        }
        out.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
        Ok(out)
    }

    /// Every label in use with its number of images, most frequent first.
    fn tag_counts(&self) -> Result<Vec<TagCount>> {
        let mut out: Vec<TagCount> = Vec::new();
        for k in self.tag_index.iter().keys() {
            let k = k.map_err(|e| self.err(e))?;
            let label = k.len().checked_sub(9).map(|n| String::from_utf8_lossy(&k[..n])).unwrap_or_default();
            match out.last_mut() {
                Some(last) if last.label == label => last.count += 1,
                _ => out.push(TagCount { label: label.into_owned(), count: 1 }),
            }
        }
        out.sort_by(|a, b| b.count.cmp(&a.count).then_with(|| a.label.cmp(&b.label)));
        Ok(out)
    }

    /// Cached label embeddings under `prefix` (model and prompt set), `None` where missing.
    fn cached_label_embeddings(&self, prefix: &str, labels: &[String]) -> Result<Vec<Option<Vec<f32>>>> {
        labels
            .iter()
            .map(|l| {
                let v = self.label_cache.get(cache_key(prefix, l)).map_err(|e| self.err(e))?;
                Ok(v.map(|b| vector_from_bytes(&b)))
            })
            .collect()
    }

    /// Caches label embeddings under `prefix`. The cache is bounded: when it would pass
    /// `MAX_CACHED_LABELS` (20 000) it starts over (whoever asks for labels again re-embeds them), so
    /// requests with ever new labels cannot grow the database without end.
    fn cache_label_embeddings(&self, prefix: &str, labels: &[String], embeddings: &[Vec<f32>]) -> Result<()> {
        if self.label_cache.len() + labels.len() > MAX_CACHED_LABELS {
            self.label_cache.clear().map_err(|e| self.err(e))?;
        }
        let mut batch = sled::Batch::default();
        for (l, e) in labels.iter().zip(embeddings) {
            batch.insert(cache_key(prefix, l), vector_bytes(e));
        }
        self.label_cache.apply_batch(batch).map_err(|e| self.err(e))?;
        self.flush()
    }
}
