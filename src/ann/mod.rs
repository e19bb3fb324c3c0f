//! Nearest-neighbour search over the stored vectors: ids in, ids and cosines out; nothing here
//! knows about paths.
//!
//! Two structures, and a planner between them ([`AnnIndex`]). The exact index holds every
//! vector in one array and scores them all (vectors are L2-normalised, so a dot product is the
//! cosine): exact, no build cost, about 9 ms per query at 100k vectors on two cores. The HNSW
//! graph ([`hnsw`], built with hnsw_rs, searched through its flat form in [`flat`]) answers
//! large libraries in a fraction of that; it is used once a library has [`GRAPH_MIN_VECTORS`]
//! vectors, for the shallow rankings that unfiltered searches ask for. Deep rankings (filters
//! that reject most of the library) and any graph answer that came back short (tombstones) go
//! to the exact scan, so results are never fewer than they should be.
//!
//! Searches never build or write the graph: [`AnnIndex::open`] takes the last snapshot as it
//! is and scans the vectors newer than it exactly beside it; [`AnnIndex::maintain`] (run by the
//! indexer, in the background under `watch`) inserts new vectors or rebuilds the graph.

pub mod codes;
pub mod flat;
pub mod hnsw;

use std::collections::HashSet;
use std::path::Path;

use rayon::prelude::*;

use crate::error::Result;
pub use crate::store::search_types::IndexState;
use crate::store::{ImageId, Store};
use flat::FlatGraph;
use hnsw::HnswGraph;

/// Libraries with fewer vectors are only scanned: the graph would not be faster enough to pay
/// for building it.
pub const GRAPH_MIN_VECTORS: usize = 20_000;
/// The graph is rebuilt when deleted images make up more than this share of it.
pub const REBUILD_TOMBSTONE_SHARE: f64 = 0.2;
/// Rankings deeper than this always use the exact scan.
const GRAPH_MAX_DEPTH: usize = 1000;

/// The exact index and, for large libraries, the graph.
pub struct AnnIndex {
    exact: ExactIndex,
    graph: Option<FlatGraph>,
    search_ef: usize,
    /// Position in `exact` of the first vector newer than the graph.
    fresh_from: usize,
    live: HashSet<ImageId>,
    state: IndexState,
}

impl AnnIndex {
    /// Opens the index of `store` for searching: all vectors for the exact scan and, from
    /// `graph_min` vectors on, the graph snapshot in `dir` as it is. Opening never builds,
    /// inserts or writes (that is [`AnnIndex::maintain`]'s job, run by the indexer): vectors
    /// newer than the snapshot are scanned exactly beside the graph, deleted ones filtered out.
    pub fn open(store: &Store, dir: &Path, graph_min: usize) -> Result<Self> {
        let exact = ExactIndex::load(store)?;
        let mut state = Self::describe(store, dir, graph_min)?;
        let loaded = if state.kind == "hnsw" { hnsw::open_for_search(dir, &exact) } else { None };
        if state.kind == "hnsw" && loaded.is_none() {
            state.needs_rebuild = true;
            // An unusable snapshot: forget it, so that the next maintenance rebuilds.
            hnsw::discard_snapshot(dir);
        }
        let fresh_from = match &loaded {
            Some(s) => exact.ids.partition_point(|id| *id <= s.last_id),
            None => exact.len(),
        };
        let search_ef = loaded.as_ref().map(|s| s.search_ef).unwrap_or(0);
        state.search_ef = search_ef as u64;
        // A graph measured as too poor comes without its flat form: it is not searched.
        let graph = loaded.and_then(|s| s.graph);
        let live = exact.ids.iter().copied().collect();
        Ok(AnnIndex { exact, graph, search_ef, fresh_from, live, state })
    }

    /// Brings the graph snapshot in `dir` up to date with `store`: inserts what came after it,
    /// or rebuilds it when it is missing, unreadable or full of tombstones, and saves it.
    /// Searches keep using the previous snapshot until the new one is in place.
    pub fn maintain(store: &Store, dir: &Path, graph_min: usize) -> Result<IndexState> {
        let mut state = Self::describe(store, dir, graph_min)?;
        if !state.needs_maintenance() {
            return Ok(state);
        }
        let exact = ExactIndex::load(store)?;
        let graph = if state.needs_rebuild { None } else { HnswGraph::load(dir, exact.dim) };
        let mut graph = match graph {
            Some(mut g) => {
                let fresh: Vec<(ImageId, &[f32])> = exact.iter().filter(|(id, _)| *id > g.last_id()).collect();
                g.insert(&fresh);
                state.caught_up = fresh.len() as u64;
                g
            }
            None => {
                tracing::info!("building the search graph over {} vectors", exact.len());
                let mut g = HnswGraph::new(exact.dim, exact.len());
                g.insert(&exact.iter().collect::<Vec<_>>());
                state.rebuilt = true;
                state.tombstones = 0;
                g
            }
        };
        let flat = graph.flatten(&exact);
        let ef = calibrate(&flat, &exact);
        if ef == 0 {
            tracing::warn!("the search graph misses too much even at ef 512; searches scan exactly");
        }
        graph.set_search_ef(ef);
        state.search_ef = ef as u64;
        graph.save(dir, (ef > 0).then_some(&flat))?;
        state.pending = 0;
        state.needs_rebuild = false;
        state.needs_flat_file = false;
        Ok(state)
    }

    /// What the index is and what opening it did.
    pub fn state(&self) -> &IndexState {
        &self.state
    }

    /// Live vectors.
    pub fn len(&self) -> usize {
        self.exact.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.exact.is_empty()
    }

    /// Whether every [`AnnIndex::top`] scans all the vectors (there is no graph to search): a
    /// deep ranking then costs about what a shallow one does.
    pub fn scans(&self) -> bool {
        self.graph.is_none()
    }

    /// The `n` best ids for `query`, best first: from the graph (plus an exact scan of the
    /// vectors newer than it) when it exists and the ranking is shallow and comes back
    /// complete, else from the exact scan.
    pub fn top(&self, query: &[f32], n: usize) -> Vec<(ImageId, f32)> {
        if let Some(g) = &self.graph
            && n <= GRAPH_MAX_DEPTH
        {
            let want = n.min(self.len());
            let ask = want + (self.state.tombstones as usize).min(want * 2);
            let mut hits: Vec<(ImageId, f32)> = g
                .search(&self.exact, query, ask, (ask * 4).max(self.search_ef))
                .into_iter()
                .filter(|(id, _)| self.live.contains(id))
                .collect();
            let from_graph = hits.len();
            hits.extend(self.exact.top_from(query, want, self.fresh_from));
            hits.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
            if from_graph >= want.min(self.fresh_from) && hits.len() >= want {
                hits.truncate(want);
                return hits;
            }
        }
        self.exact.top(query, n)
    }

    /// The index state from the store and the saved snapshot's metadata, without loading
    /// any vector.
    pub fn describe(store: &Store, dir: &Path, graph_min: usize) -> Result<IndexState> {
        let vectors = store.counts()?.vectors;
        let mut state = IndexState { kind: "exact", vectors, ..Default::default() };
        if (vectors as usize) < graph_min.max(1) {
            return Ok(state);
        }
        state.kind = "hnsw";
        match hnsw::snapshot_size(dir) {
            Some((count, last_id)) => {
                state.pending = store.vectors_after(last_id)?;
                let inside = vectors - state.pending;
                state.tombstones = (count as u64).saturating_sub(inside);
                state.needs_rebuild = state.tombstones as f64 > REBUILD_TOMBSTONE_SHARE * count as f64;
                state.needs_flat_file = hnsw::lacks_flat_file(dir);
            }
            None => {
                state.pending = vectors;
                state.needs_rebuild = true;
            }
        }
        Ok(state)
    }
}

/// The smallest beam width (64 to 512) at which the graph finds, on average, 95% of the exact
/// top 10 for queries made from the library's own vectors (midpoints of pairs far apart in
/// the store); 0 when none does. Recall depends on the data, so it is measured, not assumed.
fn calibrate(graph: &FlatGraph, exact: &ExactIndex) -> usize {
    let n = exact.len();
    if n < 2 {
        return 64;
    }
    let queries: Vec<Vec<f32>> = (0..32)
        .map(|k| {
            let (i, j) = (k * n / 32, (k * n / 32 + n / 2) % n);
            let mut q: Vec<f32> = exact.row(i).iter().zip(exact.row(j)).map(|(a, b)| a + b).collect();
            let norm = q.iter().map(|x| x * x).sum::<f32>().sqrt().max(1e-12);
            q.iter_mut().for_each(|x| *x /= norm);
            q
        })
        .collect();
    let truth: Vec<Vec<ImageId>> =
        queries.iter().map(|q| exact.top(q, 10).into_iter().map(|h| h.0).collect()).collect();
    for ef in [64, 128, 256, 512] {
        let found: usize = queries
            .iter()
            .zip(&truth)
            .map(|(q, t)| graph.search(exact, q, 10, ef).iter().filter(|h| t.contains(&h.0)).count())
            .sum();
        let wanted: usize = truth.iter().map(Vec::len).sum();
        if found as f64 >= 0.95 * wanted as f64 {
            return ef;
        }
    }
    0
}

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

    /// The row of an id (the store loads ids in increasing order, so a binary search).
    pub fn position(&self, id: ImageId) -> Option<usize> {
        self.ids.binary_search(&id).ok()
    }

    /// The vector in row `i`.
    pub fn row(&self, i: usize) -> &[f32] {
        &self.data[i * self.dim..(i + 1) * self.dim]
    }

    /// Every id with its vector, in insertion order.
    pub fn iter(&self) -> impl Iterator<Item = (ImageId, &[f32])> {
        self.ids.iter().copied().zip(self.data.chunks(self.dim.max(1)))
    }

    /// Whether the index is empty.
    pub fn is_empty(&self) -> bool {
        self.ids.is_empty()
    }

    /// The `n` best ids with their scores against `query`, best first (ties by id).
    pub fn top(&self, query: &[f32], n: usize) -> Vec<(ImageId, f32)> {
        self.top_from(query, n, 0)
    }

    /// [`ExactIndex::top`] over the vectors from position `start` on (the newest ones: the
    /// store yields ids in increasing order).
    pub fn top_from(&self, query: &[f32], n: usize, start: usize) -> Vec<(ImageId, f32)> {
        if self.dim == 0 || query.len() != self.dim || n == 0 || start >= self.len() {
            return Vec::new();
        }
        let mut scored: Vec<(ImageId, f32)> = self.data[start * self.dim..]
            .par_chunks(self.dim)
            .zip(self.ids[start..].par_iter())
            .map(|(v, id)| (*id, dot(v, query)))
            .collect();
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

/// The dot product of two vectors (the cosine of unit vectors).
pub fn dot(a: &[f32], b: &[f32]) -> f32 {
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma") {
        // SAFETY: the CPU has the features the function is compiled for.
        return unsafe { dot_avx2(a, b) };
    }
    dot_portable(a, b)
}

fn dot_portable(a: &[f32], b: &[f32]) -> f32 {
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

/// The dot product with 256-bit fused multiply-adds, four accumulators deep (the baseline
/// x86-64 build only has 128-bit SSE, and distances are most of a graph search).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn dot_avx2(a: &[f32], b: &[f32]) -> f32 {
    use std::arch::x86_64::*;
    let n = a.len().min(b.len());
    let (pa, pb) = (a.as_ptr(), b.as_ptr());
    let mut acc = [_mm256_setzero_ps(); 4];
    let mut i = 0;
    // SAFETY (all loads): i + 32 <= n, resp. i + 8 <= n, bounds both slices.
    while i + 32 <= n {
        for (k, a) in acc.iter_mut().enumerate() {
            let off = i + 8 * k;
            *a = unsafe { _mm256_fmadd_ps(_mm256_loadu_ps(pa.add(off)), _mm256_loadu_ps(pb.add(off)), *a) };
        }
        i += 32;
    }
    while i + 8 <= n {
        acc[0] = unsafe { _mm256_fmadd_ps(_mm256_loadu_ps(pa.add(i)), _mm256_loadu_ps(pb.add(i)), acc[0]) };
        i += 8;
    }
    let sum = _mm256_add_ps(_mm256_add_ps(acc[0], acc[1]), _mm256_add_ps(acc[2], acc[3]));
    let mut lanes = [0f32; 8];
    // SAFETY: `lanes` holds eight floats.
    unsafe { _mm256_storeu_ps(lanes.as_mut_ptr(), sum) };
    lanes.iter().sum::<f32>() + a[i..n].iter().zip(&b[i..n]).map(|(x, y)| x * y).sum::<f32>()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_simd_dot_product_equals_the_portable_one() {
        for n in [0, 1, 7, 8, 31, 32, 33, 512, 515] {
            let a: Vec<f32> = (0..n).map(|i| ((i * 37 % 101) as f32 - 50.0) / 50.0).collect();
            let b: Vec<f32> = (0..n).map(|i| ((i * 53 % 97) as f32 - 48.0) / 48.0).collect();
            let exact: f64 = a.iter().zip(&b).map(|(x, y)| *x as f64 * *y as f64).sum();
            assert!((dot(&a, &b) as f64 - exact).abs() < 1e-3, "{n}");
            assert!((dot_portable(&a, &b) as f64 - exact).abs() < 1e-3, "{n}");
        }
    }

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

/// Every stored video frame's vector, by video: what finds the moment in a video. Scanned
/// exactly (a library's frames number in the tens of thousands where its photos may number in
/// the hundreds of thousands: 0.24 ms for 10,000 frames, 18.7 ms for 300,000 on this project's
/// 2 cores, `cargo bench --bench video`).
#[derive(Debug, Default, Clone)]
pub struct FrameIndex {
    data: Vec<f32>,
    times: Vec<f32>,
    /// Each video's id and its frames' rows, in id order.
    videos: Vec<(ImageId, std::ops::Range<usize>)>,
    dim: usize,
}

impl FrameIndex {
    /// Loads every frame of the store's videos.
    pub fn load(store: &Store) -> Result<Self> {
        Self::from_frames(store.frame_vectors())
    }

    /// The index of these frames, given by video id then time.
    pub fn from_frames(frames: impl Iterator<Item = Result<(ImageId, crate::store::FrameVector)>>) -> Result<Self> {
        let mut index = FrameIndex::default();
        for item in frames {
            let (id, frame) = item?;
            if index.dim == 0 {
                index.dim = frame.vector.len();
            }
            if frame.vector.len() != index.dim {
                continue;
            }
            let row = index.times.len();
            match index.videos.last_mut() {
                Some((last, rows)) if *last == id => rows.end = row + 1,
                _ => index.videos.push((id, row..row + 1)),
            }
            index.times.push(frame.time);
            index.data.extend_from_slice(&frame.vector);
        }
        Ok(index)
    }

    /// Frames held.
    pub fn len(&self) -> usize {
        self.times.len()
    }

    /// Whether the library has no video.
    pub fn is_empty(&self) -> bool {
        self.videos.is_empty()
    }

    /// Videos held.
    pub fn videos(&self) -> usize {
        self.videos.len()
    }

    /// Every video with its best frame for `query`: `(id, cosine, time)`, best first (ties by
    /// id).
    pub fn top_videos(&self, query: &[f32]) -> Vec<(ImageId, f32, f32)> {
        if self.dim == 0 || query.len() != self.dim {
            return Vec::new();
        }
        let mut best: Vec<(ImageId, f32, f32)> = self
            .videos
            .par_iter()
            .map(|(id, rows)| {
                let (score, row) = rows
                    .clone()
                    .map(|r| (dot(&self.data[r * self.dim..(r + 1) * self.dim], query), r))
                    .fold((f32::NEG_INFINITY, rows.start), |a, b| if b.0 > a.0 { b } else { a });
                (*id, score, self.times[row])
            })
            .collect();
        best.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
        best
    }
}
