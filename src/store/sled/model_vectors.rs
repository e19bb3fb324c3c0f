//! Vectors of the library's images under other models than the library's own (a fine-tuned
//! CLIP that re-ranks searches): a cache, so that a second query with the same model costs only
//! the text. Keyed by `model key ++ 0 ++ image id`; entries of images no longer stored are
//! pruned after index passes.

use super::SledStore;
use super::keys::{id_from_key, id_key, vector_bytes, vector_from_bytes};
use crate::error::Result;
use crate::store::{Backend, ImageId, ModelVectorStore};

fn key(model: &str, id: ImageId) -> Vec<u8> {
    let mut k = model.as_bytes().to_vec();
    k.push(0);
    k.extend_from_slice(&id_key(id));
    k
}

impl ModelVectorStore for SledStore {
    /// The cached vectors of `ids` under `model` (`None` where not cached).
    fn model_vectors(&self, model: &str, ids: &[ImageId]) -> Result<Vec<Option<Vec<f32>>>> {
        ids.iter()
            .map(|&id| {
                let v = self.model_vectors.get(key(model, id)).map_err(|e| self.err(e))?;
                Ok(v.map(|b| vector_from_bytes(&b)))
            })
            .collect()
    }

    /// Caches vectors of images under `model`.
    fn cache_model_vectors(&self, model: &str, vectors: &[(ImageId, Vec<f32>)]) -> Result<()> {
        let mut batch = sled::Batch::default();
        for (id, v) in vectors {
            if self.image(*id)?.is_some() {
                batch.insert(key(model, *id), vector_bytes(v));
            }
        }
        self.model_vectors.apply_batch(batch).map_err(|e| self.err(e))
    }

    /// Drops cached vectors of images that are no longer stored; returns how many.
    fn prune_model_vectors(&self) -> Result<usize> {
        let mut gone = Vec::new();
        for k in self.model_vectors.iter().keys() {
            let k = k.map_err(|e| self.err(e))?;
            let id = k.len().checked_sub(8).and_then(|at| id_from_key(&k[at..]));
            if id.is_none_or(|id| self.image(id).is_ok_and(|r| r.is_none())) {
                gone.push(k);
            }
        }
        for k in &gone {
            self.model_vectors.remove(k).map_err(|e| self.err(e))?;
        }
        Ok(gone.len())
    }

    /// How many vectors of other models are cached.
    fn model_vector_count(&self) -> Result<u64> {
        Ok(self.model_vectors.len() as u64)
    }
}
