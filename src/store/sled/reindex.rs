//! Switching the library to another model without a gap: `reindex` writes the new model's
//! vectors into the next generation's tree while the current tree keeps answering, then one
//! atomic write of `meta` (model, dim, generation) makes the next tree current, and the old
//! tree is dropped. An interrupted re-indexing resumes where it stopped (the next tree keeps
//! what was written), and a re-indexing towards another model starts the next tree afresh.

use sled::Transactional;
use sled::transaction::TransactionError;

use super::keys::{FRAME_COUNTS, frames_key_parts, frames_prefix, id_from_key, id_key, vector_bytes};
use super::{SledStore, be_u32, frames_value, json, parse, tx_set_frames, vector_tree_name};
use crate::error::{Error, Result};
use crate::store::{Backend, FrameVector, ImageId, ReindexStore, ReindexTarget};

const TARGET_KEY: &str = "reindex";

impl ReindexStore for SledStore {
    /// Which generation of vectors is current (0 until the first model switch).
    fn vectors_generation(&self) -> Result<u32> {
        Ok(self.vectors.read().expect("vector trees lock").generation)
    }

    /// The re-indexing under way, if any.
    fn reindex_target(&self) -> Result<Option<ReindexTarget>> {
        match self.meta.get(TARGET_KEY).map_err(|e| self.err(e))? {
            Some(b) => Ok(Some(parse(&self.dir, "reindex", &b)?)),
            None => Ok(None),
        }
    }

    /// Starts (or resumes, for the same target) writing vectors for `target`.
    fn begin_reindex(&self, target: &ReindexTarget) -> Result<()> {
        if self.reindex_target()?.as_ref() != Some(target) {
            let trees = self.vectors.read().expect("vector trees lock");
            trees.next.clear().map_err(|e| self.err(e))?;
            self.drop_frames_of_generation(trees.generation + 1)?;
            self.meta.insert(TARGET_KEY, json(target)).map_err(|e| self.err(e))?;
        }
        self.flush()
    }

    /// Abandons the re-indexing under way and its vectors.
    fn cancel_reindex(&self) -> Result<()> {
        let trees = self.vectors.read().expect("vector trees lock");
        trees.next.clear().map_err(|e| self.err(e))?;
        self.drop_frames_of_generation(trees.generation + 1)?;
        self.meta.remove(TARGET_KEY).map_err(|e| self.err(e))?;
        self.flush()
    }

    /// Stored images that have no vector of the next model yet, in id order.
    fn images_without_next_vector(&self) -> Result<Vec<ImageId>> {
        let next = self.vectors.read().expect("vector trees lock").next.clone();
        let mut out = Vec::new();
        for k in self.images.iter().keys() {
            let k = k.map_err(|e| self.err(e))?;
            if !next.contains_key(&k).map_err(|e| self.err(e))? {
                out.push(id_from_key(&k).ok_or_else(|| self.err("corrupt image key"))?);
            }
        }
        Ok(out)
    }

    /// Vectors of the next model written so far.
    fn next_vector_count(&self) -> Result<u64> {
        Ok(self.vectors.read().expect("vector trees lock").next.len() as u64)
    }

    /// Stores an image's vector of the next model; false (nothing stored) when the image went
    /// away meanwhile.
    fn put_next_vectors(&self, id: ImageId, vector: &[f32], frames: &[FrameVector]) -> Result<bool> {
        let (next, generation) = {
            let trees = self.vectors.read().expect("vector trees lock");
            (trees.next.clone(), trees.generation + 1)
        };
        let bytes = vector_bytes(vector);
        let frames = frames_value(frames);
        (&self.images, &next, &self.frames)
            .transaction(|(images, next, frames_tree)| {
                if images.get(id_key(id))?.is_none() {
                    return Ok(false);
                }
                next.insert(&id_key(id), bytes.as_slice())?;
                tx_set_frames(frames_tree, generation, id, frames.as_ref())?;
                Ok(true)
            })
            .map_err(|e: TransactionError<String>| self.err(format!("store a vector: {e}")))
    }

    /// Makes the next model's vectors current, if every stored image has one; returns false
    /// (and changes nothing) when some image still lacks one, e.g. one indexed meanwhile.
    /// Holds the vector trees exclusively, so no image can be committed halfway through.
    fn switch_to_next_vectors(&self) -> Result<bool> {
        let mut trees = self.vectors.write().expect("vector trees lock");
        let Some(target) = self.reindex_target()? else {
            return Err(Error::Invalid("no re-indexing is under way".into()));
        };
        for k in self.images.iter().keys() {
            if !trees.next.contains_key(k.map_err(|e| self.err(e))?).map_err(|e| self.err(e))? {
                return Ok(false);
            }
        }
        let generation = trees.generation + 1;
        self.meta
            .transaction(|m| {
                m.insert("model", target.model.as_bytes())?;
                m.insert("dim", &(target.dim as u32).to_be_bytes())?;
                m.insert("vectors_generation", &generation.to_be_bytes())?;
                // The old model's fingerprint; the caller records the new one.
                m.remove("model_fingerprint")?;
                m.remove(TARGET_KEY)?;
                Ok(())
            })
            .map_err(|e: TransactionError<()>| self.err(format!("switch models: {e:?}")))?;
        self.flush()?;
        let old = vector_tree_name(trees.generation);
        trees.current = trees.next.clone();
        trees.next = self.db.open_tree(vector_tree_name(generation + 1)).map_err(|e| self.err(e))?;
        trees.generation = generation;
        self.changes.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        self.db.drop_tree(old).map_err(|e| self.err(e))?;
        self.drop_frames_of_generation(generation - 1)?;
        self.flush()?;
        Ok(true)
    }
}

impl SledStore {
    /// Drops vector trees of neither the current nor the next generation (left by a crash
    /// between a model switch and the removal of the old vectors).
    pub(super) fn drop_stale_vector_trees(&self) -> Result<()> {
        let generation = self.meta.get("vectors_generation").map_err(|e| self.err(e))?.map(|v| be_u32(&v));
        let generation = generation.unwrap_or(0);
        let keep = [vector_tree_name(generation), vector_tree_name(generation + 1)];
        for name in self.db.tree_names() {
            let name = String::from_utf8_lossy(&name).into_owned();
            if (name == "vectors" || name.starts_with("vectors.")) && !keep.contains(&name) {
                tracing::info!("dropping stale vectors tree {name}");
                self.db.drop_tree(name.as_bytes()).map_err(|e| self.err(e))?;
            }
        }
        // Found by their counts, so that no vector is read.
        for k in self.frames.scan_prefix([FRAME_COUNTS]).keys() {
            let k = k.map_err(|e| self.err(e))?;
            match frames_key_parts(&k) {
                Some((g, id)) if g != generation && g != generation + 1 => self.remove_frames(g, id)?,
                Some(_) => {}
                None => drop(self.frames.remove(k).map_err(|e| self.err(e))?),
            }
        }
        Ok(())
    }

    /// Removes a video's frames (vectors and count together) in `generation`.
    fn remove_frames(&self, generation: u32, id: ImageId) -> Result<()> {
        self.frames
            .transaction(|frames| Ok(tx_set_frames(frames, generation, id, None)?))
            .map_err(|e: TransactionError<()>| self.err(format!("remove frames: {e:?}")))
    }

    /// Removes the frames of one vector generation (a re-indexing abandoned, or the old model's
    /// once the switch is made).
    fn drop_frames_of_generation(&self, generation: u32) -> Result<()> {
        for k in self.frames.scan_prefix(frames_prefix(FRAME_COUNTS, generation)).keys() {
            let k = k.map_err(|e| self.err(e))?;
            if let Some((_, id)) = frames_key_parts(&k) {
                self.remove_frames(generation, id)?;
            }
        }
        Ok(())
    }
}
