//! Nearest-neighbour search over the stored vectors.
//!
//! Today this is an exact index: every vector in one contiguous array, scored with a dot
//! product (vectors are L2-normalised, so this is the cosine) in parallel chunks. It is exact,
//! has no build cost, and stays in the low milliseconds for a personal library of up to ~100k
//! photos; the HNSW graph for larger libraries is the next step (issue 3). It knows nothing of
//! paths: ids in, ids and scores out.

use rayon::prelude::*;

use crate::error::Result;
use crate::store::{ImageId, Store};

/// All vectors of the store, in one array.
#[derive(Debug, Default, Clone)]
pub struct ExactIndex {
    ids: Vec<ImageId>,
    data: Vec<f32>,
    dim: usize,
}

impl ExactIndex {
    /// Loads every vector of the store.
    pub fn load(store: &Store) -> Result<Self> {
        let mut index = ExactIndex::default();
        for item in store.vectors() {
            let (id, v) = item?;
            index.insert(id, &v);
        }
        Ok(index)
    }

    /// Adds one vector (of the index's width; the first one sets it).
    pub fn insert(&mut self, id: ImageId, v: &[f32]) {
        if self.dim == 0 {
            self.dim = v.len();
        }
        if v.len() == self.dim {
            self.ids.push(id);
            self.data.extend_from_slice(v);
        }
    }

    /// Number of vectors.
    pub fn len(&self) -> usize {
        self.ids.len()
    }

    /// Whether the index is empty.
    pub fn is_empty(&self) -> bool {
        self.ids.is_empty()
    }

    /// Every id with its score against `query`, best first.
    pub fn ranked(&self, query: &[f32]) -> Vec<(ImageId, f32)> {
        if self.dim == 0 || query.len() != self.dim {
            return Vec::new();
        }
        let mut scored: Vec<(ImageId, f32)> = self
            .data
            .par_chunks(self.dim)
            .zip(self.ids.par_iter())
            .map(|(v, id)| (*id, v.iter().zip(query).map(|(a, b)| a * b).sum::<f32>()))
            .collect();
        scored.par_sort_unstable_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
        scored
    }
}
