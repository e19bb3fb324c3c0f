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

    /// Adds reverse links on layer 0: node `u` also gets the nodes that link to it and that
    /// its own list lacks, nearest first, up to `cap` neighbours in all. hnsw_rs trims an
    /// overfull list by dropping its farthest entry (hnswlib re-applies the diversity
    /// heuristic), so a node's long links, the ones that lead out of its cluster, are the
    /// first to go; in clustered libraries of a million photos the graph then misses a tenth
    /// of the answers even with a wide beam. The links pointing *to* a node are those that
    /// other nodes kept, and restoring them makes layer 0 nearly undirected.
    pub fn add_reverse_links(&mut self, exact: &ExactIndex, cap: usize) {
        use rayon::prelude::*;
        let n = self.ids.len();
        let mut reverse: Vec<Vec<u32>> = vec![Vec::new(); n];
        for u in 0..n {
            for &v in &self.links[self.offsets[u] as usize..self.offsets[u + 1] as usize] {
                reverse[v as usize].push(u as u32);
            }
        }
        let lists: Vec<Vec<u32>> = (0..n)
            .into_par_iter()
            .map(|u| {
                let forward = &self.links[self.offsets[u] as usize..self.offsets[u + 1] as usize];
                let mut list = forward.to_vec();
                let mut extra: Vec<u32> =
                    reverse[u].iter().copied().filter(|v| *v as usize != u && !forward.contains(v)).collect();
                if list.len() + extra.len() > cap {
                    let me = self.vector(exact, u as u32);
                    let mut scored: Vec<(f32, u32)> =
                        extra.iter().map(|&v| (dot(me, self.vector(exact, v)), v)).collect();
                    scored.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)));
                    extra = scored.into_iter().map(|(_, v)| v).take(cap.saturating_sub(list.len())).collect();
                }
                list.extend(extra);
                list
            })
            .collect();
        drop(reverse);
        self.links.clear();
        self.offsets.clear();
        self.offsets.push(0);
        for list in lists {
            self.links.extend(list);
            self.offsets.push(self.links.len() as u32);
        }
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

#[cfg(test)]
mod tests {
    use super::*;

    fn unit(i: usize) -> Vec<f32> {
        let a = i as f32 * 0.7;
        vec![a.cos(), a.sin(), 0.3]
    }

    /// A star: every node links to node 0 only; node 0 links to node 1.
    fn star(n: usize, exact: &mut ExactIndex) -> FlatGraph {
        for i in 0..n {
            exact.insert(i as ImageId + 1, &unit(i));
        }
        let nodes = (0..n).map(|i| SourceNode {
            id: i as ImageId + 1,
            layer: 0,
            vector: None,
            neighbours: vec![vec![if i == 0 { 2 } else { 1 }]],
        });
        FlatGraph::new(3, nodes, exact)
    }

    fn list(g: &FlatGraph, node: usize) -> Vec<u32> {
        g.links[g.offsets[node] as usize..g.offsets[node + 1] as usize].to_vec()
    }

    #[test]
    fn reverse_links_make_layer_0_undirected_up_to_the_cap() {
        let mut exact = ExactIndex::default();
        let mut g = star(10, &mut exact);
        assert_eq!(g.search(&exact, &unit(7), 10, 16).len(), 2);
        g.add_reverse_links(&exact, 48);
        // Node 0 kept its own link and gained all nine that point to it.
        let mut hub = list(&g, 0);
        assert_eq!(hub[0], 1);
        hub.sort();
        assert_eq!(hub, (1..10).collect::<Vec<u32>>());
        // The others keep theirs (node 1 already linked back to 0: no duplicate).
        assert_eq!(list(&g, 1), [0]);
        assert_eq!(list(&g, 5), [0]);
        // Before, only nodes 0 and 1 were reachable from the entry; now every node is.
        let found = g.search(&exact, &unit(7), 10, 16);
        assert_eq!(found.len(), 10);
        assert_eq!(found[0].0, 8);

        // With a cap of 4 the hub keeps its link and the three nearest of the others.
        let mut exact = ExactIndex::default();
        let mut g = star(10, &mut exact);
        g.add_reverse_links(&exact, 4);
        let hub = list(&g, 0);
        assert_eq!(hub.len(), 4);
        let me = unit(0);
        let mut others: Vec<(f32, u32)> = (2..10u32).map(|v| (dot(&me, &unit(v as usize)), v)).collect();
        others.sort_by(|a, b| b.0.total_cmp(&a.0));
        assert_eq!(hub[1..], others[..3].iter().map(|o| o.1).collect::<Vec<_>>()[..]);
    }
}
