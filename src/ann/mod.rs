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

    /// The `n` best ids with their scores against `query`, best first (ties by id).
    pub fn top(&self, query: &[f32], n: usize) -> Vec<(ImageId, f32)> {
        if self.dim == 0 || query.len() != self.dim || n == 0 {
            return Vec::new();
        }
        let mut scored: Vec<(ImageId, f32)> =
            self.data.par_chunks(self.dim).zip(self.ids.par_iter()).map(|(v, id)| (*id, dot(v, query))).collect();
        let order = |a: &(ImageId, f32), b: &(ImageId, f32)| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0));
        if n < scored.len() {
            scored.select_nth_unstable_by(n - 1, order);
            scored.truncate(n);
        }
        scored.par_sort_unstable_by(order);
        scored
    }

    /// Bytes held per vector (the vector and its id).
    pub fn bytes_per_vector(&self) -> usize {
        self.dim * std::mem::size_of::<f32>() + std::mem::size_of::<ImageId>()
    }
}

fn dot(a: &[f32], b: &[f32]) -> f32 {
    // Eight independent accumulators let the compiler vectorise the loop.
    let mut acc = [0f32; 8];
    let (ac, bc) = (a.chunks_exact(8), b.chunks_exact(8));
    let tail: f32 = ac.remainder().iter().zip(bc.remainder()).map(|(x, y)| x * y).sum();
    for (x, y) in ac.zip(bc) {
        for k in 0..8 {
            acc[k] += x[k] * y[k];
        }
    }
    acc.iter().sum::<f32>() + tail
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn top_n_equals_a_full_sort() {
        let mut index = ExactIndex::default();
        let mut state = 7u64;
        let mut next = || {
            state = state.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            ((state >> 33) as f32 / (1u64 << 31) as f32) - 0.5
        };
        for id in 0..500u64 {
            let v: Vec<f32> = (0..19).map(|_| next()).collect();
            index.insert(id * 3, &v);
        }
        // A duplicate of id 0's vector: ties are broken by id.
        let dup = index.data[..19].to_vec();
        index.insert(10_000, &dup);
        let q: Vec<f32> = (0..19).map(|_| next()).collect();
        let all = index.top(&q, usize::MAX);
        assert_eq!(all.len(), 501);
        assert!(all.windows(2).all(|w| w[0].1 >= w[1].1));
        for n in [1, 10, 137, 501] {
            assert_eq!(index.top(&q, n), all[..n.min(501)].to_vec());
        }
        assert!(index.top(&q[..5], 3).is_empty(), "a query of the wrong width finds nothing");
    }
}
