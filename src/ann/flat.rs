//! The search-side form of the HNSW graph: hnsw_rs builds, inserts and persists the graph,
//! and for searching its links are copied into flat arrays and walked here.
//!
//! Why: hnsw_rs's own search allocates a reference-counted record for every node it visits and
//! keeps the visited set in a hash map; on two cores that held it to about half of hnswlib's
//! query rate at the same ef. Here a search touches only contiguous arrays (neighbour lists
//! in one buffer, a visited bitset, the vectors where the exact index already holds them), so
//! the vectors are held once: live nodes point into the exact index, and only deleted images
//! (tombstones, at most a fifth of the graph) keep a copy here, because paths run through them.

use std::cmp::Ordering;
use std::collections::{BinaryHeap, HashMap};

use super::{ExactIndex, dot};
use crate::store::ImageId;

/// A score with a total order, for the heaps.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Scored(f32, u32);

impl Eq for Scored {}

impl PartialOrd for Scored {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Scored {
    fn cmp(&self, other: &Self) -> Ordering {
        self.0.total_cmp(&other.0).then(other.1.cmp(&self.1))
    }
}

/// Asks the CPU to start loading a vector (its first cache lines) into cache.
#[inline]
fn prefetch(v: &[f32]) {
    #[cfg(target_arch = "x86_64")]
    for line in v.chunks(16).take(8) {
        // SAFETY: prefetching has no effect on memory; the pointer is valid anyway.
        unsafe { std::arch::x86_64::_mm_prefetch(line.as_ptr() as *const i8, std::arch::x86_64::_MM_HINT_T0) };
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = v;
}

/// An HNSW graph in flat arrays; nodes are numbered densely.
pub struct FlatGraph {
    dim: usize,
    entry: u32,
    /// Node → image id.
    ids: Vec<ImageId>,
    /// Node → row of its vector: below `live_rows` in the exact index, above it in `extra`.
    rows: Vec<u32>,
    live_rows: u32,
    extra: Vec<f32>,
    /// Layer-0 neighbours of node `n`: `links[offsets[n]..offsets[n + 1]]`.
    offsets: Vec<u32>,
    links: Vec<u32>,
    /// Upper layers (index 0 is layer 1): node → neighbours.
    upper: Vec<HashMap<u32, Vec<u32>>>,
}

/// One node of the source graph.
pub struct SourceNode {
    /// Its image.
    pub id: ImageId,
    /// The highest layer it is on.
    pub layer: usize,
    /// Its vector, needed only for images the exact index does not hold (tombstones).
    pub vector: Option<Vec<f32>>,
    /// Neighbour image ids, per layer from 0.
    pub neighbours: Vec<Vec<ImageId>>,
}

impl FlatGraph {
    /// Copies a graph's links. `nodes` are all of its nodes; vectors of images that `exact`
    /// holds are not copied.
    pub fn new(dim: usize, nodes: impl Iterator<Item = SourceNode>, exact: &ExactIndex) -> Self {
        let nodes: Vec<SourceNode> = nodes.collect();
        let index: HashMap<ImageId, u32> = nodes.iter().enumerate().map(|(i, n)| (n.id, i as u32)).collect();
        let live_rows = exact.len() as u32;
        let mut graph = FlatGraph {
            dim,
            entry: 0,
            ids: Vec::with_capacity(nodes.len()),
            rows: Vec::with_capacity(nodes.len()),
            live_rows,
            extra: Vec::new(),
            offsets: Vec::with_capacity(nodes.len() + 1),
            links: Vec::new(),
            upper: Vec::new(),
        };
        graph.offsets.push(0);
        let mut top = 0;
        for (i, n) in nodes.iter().enumerate() {
            graph.ids.push(n.id);
            let row = match exact.position(n.id) {
                Some(p) => p as u32,
                None => {
                    match &n.vector {
                        Some(v) if v.len() == dim => graph.extra.extend_from_slice(v),
                        _ => graph.extra.extend(std::iter::repeat_n(0.0, dim)),
                    }
                    live_rows + (graph.extra.len() / dim.max(1)) as u32 - 1
                }
            };
            graph.rows.push(row);
            let mapped =
                |layer: &Vec<ImageId>| layer.iter().filter_map(|id| index.get(id).copied()).collect::<Vec<_>>();
            if let Some(l0) = n.neighbours.first() {
                graph.links.extend(mapped(l0));
            }
            graph.offsets.push(graph.links.len() as u32);
            for (l, layer) in n.neighbours.iter().enumerate().take(n.layer + 1).skip(1) {
                if layer.is_empty() {
                    continue;
                }
                if graph.upper.len() < l {
                    graph.upper.resize_with(l, HashMap::new);
                }
                graph.upper[l - 1].insert(i as u32, mapped(layer));
            }
            if n.layer > top || i == 0 {
                top = n.layer;
                graph.entry = i as u32;
            }
        }
        graph.upper.truncate(top);
        graph
    }

    /// Bytes this structure holds (links, ids, rows, tombstone vectors), about.
    pub fn bytes(&self) -> usize {
        let upper: usize = self.upper.iter().flat_map(|l| l.values()).map(|v| 16 + 4 * v.len()).sum();
        4 * (self.links.len() + self.offsets.len() + self.rows.len() + self.extra.len()) + 8 * self.ids.len() + upper
    }

    /// Nodes in the graph (tombstones included).
    pub fn len(&self) -> usize {
        self.ids.len()
    }

    /// Whether the graph is empty.
    pub fn is_empty(&self) -> bool {
        self.ids.is_empty()
    }

    fn vector<'a>(&'a self, exact: &'a ExactIndex, node: u32) -> &'a [f32] {
        let row = self.rows[node as usize];
        if row < self.live_rows {
            exact.row(row as usize)
        } else {
            let r = (row - self.live_rows) as usize * self.dim;
            &self.extra[r..r + self.dim]
        }
    }

    /// The `n` nodes most similar to `query` (cosine, best first), tombstones included: greedy
    /// descent through the upper layers, then a beam of width `ef` on layer 0.
    pub fn search(&self, exact: &ExactIndex, query: &[f32], n: usize, ef: usize) -> Vec<(ImageId, f32)> {
        if self.ids.is_empty() || query.len() != self.dim {
            return Vec::new();
        }
        let score = |node: u32| dot(self.vector(exact, node), query);
        let mut cur = self.entry;
        let mut cur_score = score(cur);
        for layer in self.upper.iter().rev() {
            loop {
                let mut moved = false;
                for &nb in layer.get(&cur).map(Vec::as_slice).unwrap_or_default() {
                    let s = score(nb);
                    if s > cur_score {
                        (cur, cur_score, moved) = (nb, s, true);
                    }
                }
                if !moved {
                    break;
                }
            }
        }
        let ef = ef.max(n);
        let mut visited = vec![0u64; self.ids.len().div_ceil(64)];
        let mut seen = |node: u32| {
            let (w, b) = (node as usize / 64, 1u64 << (node % 64));
            let was = visited[w] & b != 0;
            visited[w] |= b;
            was
        };
        seen(cur);
        // Candidates: best first. Results: worst first, at most ef.
        let mut fresh: Vec<u32> = Vec::with_capacity(64);
        let mut candidates = BinaryHeap::from([Scored(cur_score, cur)]);
        let mut results = BinaryHeap::from([std::cmp::Reverse(Scored(cur_score, cur))]);
        while let Some(Scored(s, node)) = candidates.pop() {
            let worst = results.peek().map(|r| r.0.0).unwrap_or(f32::NEG_INFINITY);
            if results.len() >= ef && s < worst {
                break;
            }
            let (a, b) = (self.offsets[node as usize] as usize, self.offsets[node as usize + 1] as usize);
            // Unvisited neighbours first, their vectors prefetched: the distances then read
            // from cache instead of waiting on memory one vector at a time.
            fresh.clear();
            fresh.extend(self.links[a..b].iter().copied().filter(|&nb| !seen(nb)));
            for &nb in &fresh {
                prefetch(self.vector(exact, nb));
            }
            for &nb in &fresh {
                let s = score(nb);
                let worst = results.peek().map(|r| r.0.0).unwrap_or(f32::NEG_INFINITY);
                if results.len() < ef || s > worst {
                    candidates.push(Scored(s, nb));
                    results.push(std::cmp::Reverse(Scored(s, nb)));
                    if results.len() > ef {
                        results.pop();
                    }
                }
            }
        }
        let mut out: Vec<(ImageId, f32)> = results.into_iter().map(|r| (self.ids[r.0.1 as usize], r.0.0)).collect();
        out.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
        out.truncate(n);
        out
    }
}
