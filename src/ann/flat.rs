//! The search-side form of the HNSW graph: hnsw_rs builds, inserts and persists the graph,
//! and for searching its links are copied into flat arrays and walked here.
//!
//! Why: hnsw_rs's own search allocates a reference-counted record for every node it visits and
//! keeps the visited set in a hash map; on two cores that held it to about half of hnswlib's
//! query rate at the same ef. Here a search touches only contiguous arrays: neighbour lists in
//! one buffer, a visited bitset, and 8-bit codes of the vectors ([`super::codes`]) for the walk.
//! The full vectors are held once: live nodes point into the exact index for the final
//! rescoring, and only deleted images (tombstones, at most a fifth of the graph) keep a copy
//! here, because paths run through them.

mod file;

use std::cmp::Ordering;
use std::collections::{BinaryHeap, HashMap};

use rayon::prelude::*;

use super::codes::{Codes, Query};
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

/// Asks the CPU to start loading `v` into cache, a 64-byte line at a time.
#[inline]
fn prefetch<T>(v: &[T]) {
    #[cfg(target_arch = "x86_64")]
    for line in v.chunks((64 / std::mem::size_of::<T>().max(1)).max(1)) {
        // SAFETY: prefetching has no effect on memory; the pointer is valid anyway.
        unsafe { std::arch::x86_64::_mm_prefetch(line.as_ptr() as *const i8, std::arch::x86_64::_MM_HINT_T0) };
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = v;
}

/// How many of the beam's best are scored again with the full vectors (at least twice the
/// results asked for).
const RESCORED: usize = 32;

/// The widest beam on layer 1. Textbook HNSW descends the upper layers greedily and only
/// layer 0 gets a beam. In a library of clusters (a million photos of a thousand subjects)
/// the upper layers hold few nodes of each cluster, so greedy descent often stops in the wrong
/// one and layer 0 cannot walk out: recall@10 stayed at 0.81 at ef 64 and needed ef 512 for
/// 0.97. Searching layer 1 with a beam as wide as layer 0's, up to 64, gave 0.99 at ef 64 on
/// the same graph for about the cost of a second, small layer-0 search.
pub const LAYER1_BEAM: usize = 64;

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
    /// Node → its vector in bytes, for the walk (see [`super::codes`]).
    codes: Codes,
    /// Layer-0 neighbours of node `n`: `links[offsets[n]..offsets[n + 1]]`.
    offsets: Vec<u32>,
    links: Vec<u32>,
    /// Upper layers (index 0 is layer 1): node → neighbours.
    upper: Vec<HashMap<u32, Vec<u32>>>,
    /// The widest beam on layer 1 (0: greedy like the layers above).
    layer1_beam: usize,
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
            codes: Codes::default(),
            offsets: Vec::with_capacity(nodes.len() + 1),
            links: Vec::new(),
            upper: Vec::new(),
            layer1_beam: LAYER1_BEAM,
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
        graph.codes = Codes::encode(dim, (0..graph.ids.len()).into_par_iter().map(|i| graph.vector(exact, i as u32)));
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
        4 * (self.links.len() + self.offsets.len() + self.rows.len() + self.extra.len())
            + 8 * self.ids.len()
            + self.codes.bytes()
            + upper
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
    /// descent through the upper layers above layer 1, a beam on layer 1 (see [`LAYER1_BEAM`]),
    /// then a beam of width `ef` on layer 0, all on the byte codes; the best of the beam are
    /// scored again with the full vectors.
    pub fn search(&self, exact: &ExactIndex, query: &[f32], n: usize, ef: usize) -> Vec<(ImageId, f32)> {
        self.search_with(exact, query, n, ef, Walk::default())
    }

    /// The same, walking the graph as `walk` says (for measuring).
    pub fn search_with(
        &self,
        exact: &ExactIndex,
        query: &[f32],
        n: usize,
        ef: usize,
        walk: Walk,
    ) -> Vec<(ImageId, f32)> {
        if self.ids.is_empty() || query.len() != self.dim {
            return Vec::new();
        }
        let exact_score = |node: u32| dot(self.vector(exact, node), query);
        let best = match walk {
            Walk::Vectors => {
                return self
                    .beam(exact_score, |node| self.vector(exact, node), n, ef)
                    .into_iter()
                    .take(n)
                    .map(|node| (self.ids[node.1 as usize], node.0))
                    .collect();
            }
            Walk::Bytes => {
                let q = Query::new(query);
                self.beam(|node| self.codes.dot(&q, node as usize), |node| self.codes.row(node as usize), n, ef)
            }
        };
        // The codes rank to about 1e-3; the best few of the beam, scored exactly, decide.
        let best: Vec<u32> = best.into_iter().take(RESCORED.max(2 * n)).map(|s| s.1).collect();
        for &node in &best {
            prefetch(self.vector(exact, node));
        }
        let mut out: Vec<(ImageId, f32)> =
            best.into_iter().map(|node| (self.ids[node as usize], exact_score(node))).collect();
        out.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
        out.truncate(n);
        out
    }

    /// The walk itself, scoring nodes with `score` and prefetching what `data` gives for a
    /// node before scoring it: the beam's nodes, best first.
    fn beam<'a, T: 'a>(
        &'a self,
        score: impl Fn(u32) -> f32,
        data: impl Fn(u32) -> &'a [T],
        n: usize,
        ef: usize,
    ) -> Vec<Scored> {
        let mut cur = self.entry;
        let mut cur_score = score(cur);
        // Greedy through the upper layers but the lowest, which is searched with a beam as wide
        // as layer 0's (up to `layer1_beam`); all it finds seed layer 0.
        let ef = ef.max(n);
        let layer1_beam = ef.min(self.layer1_beam);
        let greedy = if layer1_beam > 0 { self.upper.len().saturating_sub(1) } else { self.upper.len() };
        for layer in self.upper.iter().skip(self.upper.len() - greedy).rev() {
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
        let mut entries = vec![Scored(cur_score, cur)];
        if greedy < self.upper.len() {
            let layer = &self.upper[0];
            entries = self.layer_beam(
                entries,
                |node| layer.get(&node).map(Vec::as_slice).unwrap_or_default(),
                &score,
                &data,
                layer1_beam,
            );
        }
        let layer0 =
            |node: u32| &self.links[self.offsets[node as usize] as usize..self.offsets[node as usize + 1] as usize];
        self.layer_beam(entries, layer0, &score, &data, ef)
    }

    /// A beam search of width `ef` on one layer from `entries`: the beam, best first.
    fn layer_beam<'a, 'b, T: 'a>(
        &self,
        entries: Vec<Scored>,
        neighbours: impl Fn(u32) -> &'b [u32],
        score: &impl Fn(u32) -> f32,
        data: &impl Fn(u32) -> &'a [T],
        ef: usize,
    ) -> Vec<Scored> {
        let mut visited = vec![0u64; self.ids.len().div_ceil(64)];
        let mut seen = |node: u32| {
            let (w, b) = (node as usize / 64, 1u64 << (node % 64));
            let was = visited[w] & b != 0;
            visited[w] |= b;
            was
        };
        for e in &entries {
            seen(e.1);
        }
        // Candidates: best first. Results: worst first, at most ef.
        let mut fresh: Vec<u32> = Vec::with_capacity(64);
        let mut candidates: BinaryHeap<Scored> = entries.iter().copied().collect();
        let mut results: BinaryHeap<std::cmp::Reverse<Scored>> = entries.into_iter().map(std::cmp::Reverse).collect();
        while results.len() > ef {
            results.pop();
        }
        while let Some(Scored(s, node)) = candidates.pop() {
            let worst = results.peek().map(|r| r.0.0).unwrap_or(f32::NEG_INFINITY);
            if results.len() >= ef && s < worst {
                break;
            }
            // Unvisited neighbours first, their vectors prefetched: the distances then read
            // from cache instead of waiting on memory one vector at a time.
            fresh.clear();
            fresh.extend(neighbours(node).iter().copied().filter(|&nb| !seen(nb)));
            for &nb in &fresh {
                prefetch(data(nb));
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
        results.into_sorted_vec().into_iter().map(|r| r.0).collect()
    }

    /// Caps the beam on layer 1 at `width` (0: greedy descent there too), for measuring.
    pub fn set_layer1_beam(&mut self, width: usize) {
        self.layer1_beam = width;
    }
}

/// How a search walks the graph.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Walk {
    /// Every distance with the full vectors.
    Vectors,
    /// The byte codes of the vectors and of the query, the best rescored.
    #[default]
    Bytes,
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

    fn angle(deg: f32) -> Vec<f32> {
        vec![deg.to_radians().cos(), deg.to_radians().sin()]
    }

    /// Entry 0 on layer 1 links to 1 (facing away from the query), which links to 2 (near
    /// it); on layer 0 the graph is two islands, {0, 4} and {2, 3}.
    fn islands(exact: &mut ExactIndex) -> FlatGraph {
        for (id, deg) in [(1, 90.0), (2, 180.0), (3, 10.0), (4, 5.0), (5, 100.0)] {
            exact.insert(id, &angle(deg));
        }
        let node = |id, layer, neighbours: Vec<Vec<ImageId>>| SourceNode { id, layer, vector: None, neighbours };
        let nodes = vec![
            node(1, 1, vec![vec![5], vec![2]]),
            node(2, 1, vec![vec![], vec![1, 3]]),
            node(3, 1, vec![vec![4], vec![2]]),
            node(4, 0, vec![vec![3]]),
            node(5, 0, vec![vec![1]]),
        ];
        FlatGraph::new(2, nodes.into_iter(), exact)
    }

    #[test]
    fn a_beam_on_layer_1_finds_what_greedy_descent_misses() {
        let mut exact = ExactIndex::default();
        let mut g = islands(&mut exact);
        let query = angle(0.0);
        // Greedy: node 2 scores worse than the entry, so the walk stays on the entry's island.
        g.set_layer1_beam(0);
        assert_eq!(g.search(&exact, &query, 1, 8)[0].0, 1);
        g.set_layer1_beam(4);
        let found = g.search(&exact, &query, 2, 8);
        assert_eq!(found.iter().map(|h| h.0).collect::<Vec<_>>(), [4, 3]);
    }

    #[test]
    fn byte_walks_return_the_exact_cosines_of_the_full_walk() {
        let mut exact = ExactIndex::default();
        let mut g = star(40, &mut exact);
        g.add_reverse_links(&exact, 48);
        for q in [unit(3), unit(17), vec![0.2, -0.9, 0.1]] {
            let full = g.search_with(&exact, &q, 5, 16, Walk::Vectors);
            assert_eq!(full.len(), 5);
            assert_eq!(g.search_with(&exact, &q, 5, 16, Walk::Bytes), full);
            for (id, score) in full {
                assert_eq!(score, dot(&q, exact.row(exact.position(id).unwrap())));
            }
        }
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
