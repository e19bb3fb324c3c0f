//! The HNSW graph (hnsw_rs) for libraries too large to scan, persisted beside the store.
//!
//! The graph is derived data: the store stays the source of truth and the graph can always be
//! rebuilt from it. It is saved as a snapshot (`hnsw/`, written to a temporary folder, synced,
//! then renamed into place, since hnsw_rs's own dump neither syncs nor replaces atomically)
//! that remembers the largest image id it holds. The snapshot also holds the graph's flat form
//! (`flat.bin`, see [`FlatGraph::save`]), which is what searches open: one file read instead of
//! loading hnsw_rs's dump and flattening it; the dump is for inserting. Image ids only grow
//! (sled's `generate_id`), so on open everything above that id is new and is inserted; nothing
//! is re-embedded and the graph is not rebuilt. hnsw_rs cannot delete: images removed from the store stay in the graph
//! as tombstones, filtered out of results, and the graph is rebuilt once they pass a fifth of it.

use std::path::{Path, PathBuf};

use hnsw_rs::prelude::{AnnT, Distance, Hnsw, HnswIo};
use serde::{Deserialize, Serialize};

use super::ExactIndex;
use super::flat::{FlatGraph, SourceNode};
use crate::error::{Error, Result};
use crate::store::ImageId;

/// Neighbours per node (hnswlib's `M`).
pub const MAX_CONNECTIONS: usize = 16;
/// Candidate list size while building (`ef_construction`).
pub const EF_CONSTRUCTION: usize = 200;
/// Layer-0 neighbours per node once the reverse links are added (see
/// [`FlatGraph::add_reverse_links`]): at 1M clustered vectors, recall@10 at ef 256 went from
/// 0.84 to 0.96 with 48 (64 found no more and cost more distance computations).
pub const REVERSE_LINK_CAP: usize = 48;
/// hnsw_rs only reloads dumps made with 16 layers.
const MAX_LAYERS: usize = 16;
const BASENAME: &str = "graph";
/// The flat form of the graph, saved beside hnsw_rs's dump (see [`FlatGraph::save`]).
const FLAT_FILE: &str = "flat.bin";

/// `1 - cosine` for unit vectors, clamped at 0: rounding can push a vector's similarity with
/// itself above 1, and a negative distance breaks the graph's ordering.
#[derive(Debug, Clone, Copy, Default)]
pub struct CosineDistance;

impl Distance<f32> for CosineDistance {
    fn eval(&self, a: &[f32], b: &[f32]) -> f32 {
        (1.0 - super::dot(a, b)).max(0.0)
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct SnapshotMeta {
    dim: usize,
    count: usize,
    last_id: ImageId,
    /// The beam width searches use, measured when the snapshot was written (0: the graph
    /// missed too much at any width, searches scan exactly).
    #[serde(default = "default_search_ef")]
    search_ef: usize,
}

fn default_search_ef() -> usize {
    64
}

/// An HNSW graph over image vectors.
pub struct HnswGraph {
    graph: Hnsw<'static, f32, CosineDistance>,
    dim: usize,
    count: usize,
    last_id: ImageId,
    search_ef: usize,
}

impl HnswGraph {
    /// An empty graph sized for about `capacity` vectors.
    pub fn new(dim: usize, capacity: usize) -> Self {
        HnswGraph {
            graph: Hnsw::new(MAX_CONNECTIONS, capacity.max(1), MAX_LAYERS, EF_CONSTRUCTION, CosineDistance),
            dim,
            count: 0,
            last_id: 0,
            search_ef: default_search_ef(),
        }
    }

    /// The beam width searches should use (0: do not search this graph).
    pub fn search_ef(&self) -> usize {
        self.search_ef
    }

    /// Records the beam width searches should use, saved with the snapshot.
    pub fn set_search_ef(&mut self, ef: usize) {
        self.search_ef = ef;
    }

    /// Inserts vectors (in parallel); their ids must be larger than any already inside.
    pub fn insert(&mut self, items: &[(ImageId, &[f32])]) {
        let batch: Vec<(&[f32], usize)> =
            items.iter().filter(|(_, v)| v.len() == self.dim).map(|(id, v)| (*v, *id as usize)).collect();
        self.graph.parallel_insert_slice(&batch);
        self.count += batch.len();
        if let Some(max) = items.iter().map(|(id, _)| *id).max() {
            self.last_id = self.last_id.max(max);
        }
    }

    /// Vectors inserted (tombstones included).
    pub fn count(&self) -> usize {
        self.count
    }

    /// The largest id inside.
    pub fn last_id(&self) -> ImageId {
        self.last_id
    }

    /// The graph's links in flat arrays for searching (see [`FlatGraph`]), with the reverse
    /// links hnsw_rs dropped restored on layer 0.
    pub fn flatten(&self, exact: &ExactIndex) -> FlatGraph {
        self.flatten_with(exact, REVERSE_LINK_CAP)
    }

    /// The same with reverse links up to `reverse_cap` neighbours (0: the graph as hnsw_rs
    /// built it), for measuring.
    pub fn flatten_with(&self, exact: &ExactIndex, reverse_cap: usize) -> FlatGraph {
        let points = self.graph.get_point_indexation();
        let nodes = points.into_iter().map(|p| SourceNode {
            id: p.get_origin_id() as ImageId,
            layer: p.get_point_id().0 as usize,
            // Only deleted images need their vector here; live ones are in the exact index.
            vector: exact.position(p.get_origin_id() as ImageId).is_none().then(|| p.get_v().to_vec()),
            neighbours: p
                .get_neighborhood_id()
                .into_iter()
                .map(|layer| layer.into_iter().map(|nb| nb.d_id as ImageId).collect())
                .collect(),
        });
        let mut flat = FlatGraph::new(self.dim, nodes, exact);
        if reverse_cap > 0 {
            flat.add_reverse_links(exact, reverse_cap);
        }
        flat
    }

    /// The `n` nearest ids with their cosine, best first (tombstones included).
    pub fn search(&self, query: &[f32], n: usize, ef: usize) -> Vec<(ImageId, f32)> {
        if query.len() != self.dim || self.count == 0 {
            return Vec::new();
        }
        self.graph.search(query, n, ef.max(n)).into_iter().map(|nb| (nb.d_id as ImageId, 1.0 - nb.distance)).collect()
    }

    /// Writes the snapshot to `dir` (replacing any previous one), with `flat`, the graph's
    /// flat form, for searches to open.
    pub fn save(&self, dir: &Path, flat: Option<&FlatGraph>) -> Result<()> {
        let err =
            |e: &dyn std::fmt::Display| Error::Store(format!("saving the search graph in {}: {e}", dir.display()));
        let tmp = sibling(dir, "tmp");
        let old = sibling(dir, "old");
        let _ = std::fs::remove_dir_all(&tmp);
        std::fs::create_dir_all(&tmp).map_err(|e| err(&e))?;
        let written = self.graph.file_dump(&tmp, BASENAME).map_err(|e| err(&e))?;
        if written != BASENAME {
            return Err(err(&format!("hnsw_rs wrote {written} instead of {BASENAME}")));
        }
        let meta = SnapshotMeta { dim: self.dim, count: self.count, last_id: self.last_id, search_ef: self.search_ef };
        std::fs::write(tmp.join("meta.json"), serde_json::to_vec(&meta).map_err(|e| err(&e))?).map_err(|e| err(&e))?;
        if let Some(flat) = flat {
            flat.save(&tmp.join(FLAT_FILE)).map_err(|e| err(&e))?;
        }
        for entry in std::fs::read_dir(&tmp).map_err(|e| err(&e))? {
            let path = entry.map_err(|e| err(&e))?.path();
            std::fs::File::open(&path).and_then(|f| f.sync_all()).map_err(|e| err(&e))?;
        }
        let _ = std::fs::remove_dir_all(&old);
        if dir.exists() {
            std::fs::rename(dir, &old).map_err(|e| err(&e))?;
        }
        std::fs::rename(&tmp, dir).map_err(|e| err(&e))?;
        let _ = std::fs::remove_dir_all(&old);
        Ok(())
    }

    /// Reads the snapshot in `dir`; `None` when there is none or it does not fit `dim` (the
    /// caller rebuilds).
    pub fn load(dir: &Path, dim: usize) -> Option<Self> {
        let meta = read_meta(dir)?;
        if meta.dim != dim {
            return None;
        }
        // hnsw_rs's loaded graph borrows from its loader for ever: give the loader (a few
        // bytes of paths and options) a static lifetime.
        let io: &'static mut HnswIo = Box::leak(Box::new(HnswIo::new(dir, BASENAME)));
        // hnsw_rs panics (unwraps) on some corrupt files instead of returning an error.
        let loaded = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            io.load_hnsw_with_dist::<f32, CosineDistance>(CosineDistance)
        }));
        match loaded {
            Ok(Ok(graph)) if graph.get_nb_point() == meta.count => {
                Some(HnswGraph { graph, dim, count: meta.count, last_id: meta.last_id, search_ef: meta.search_ef })
            }
            Ok(Ok(_)) => {
                tracing::warn!("the search graph in {} is incomplete; rebuilding it", dir.display());
                None
            }
            Ok(Err(e)) => {
                tracing::warn!("cannot load the search graph in {} ({e}); rebuilding it", dir.display());
                None
            }
            Err(_) => {
                tracing::warn!("the search graph in {} is corrupt; rebuilding it", dir.display());
                None
            }
        }
    }
}

/// What searches need of a snapshot.
pub struct SearchSnapshot {
    /// The graph, flat; `None` when it is not to be searched (its beam width is 0).
    pub graph: Option<FlatGraph>,
    /// The largest image id inside.
    pub last_id: ImageId,
    /// The beam width to search it with.
    pub search_ef: usize,
}

/// Opens the snapshot in `dir` for searching beside `exact`: the flat graph saved with it
/// when that is there and sound (one file read), else hnsw_rs's dump loaded and flattened
/// (snapshots written before the flat file existed, or a damaged flat file, which is removed
/// for the next maintenance to write again). `None` when the snapshot cannot be used (the
/// caller rebuilds).
pub fn open_for_search(dir: &Path, exact: &ExactIndex) -> Option<SearchSnapshot> {
    let meta = read_meta(dir).filter(|m| m.dim == exact.dim)?;
    let (last_id, search_ef) = (meta.last_id, meta.search_ef);
    if search_ef == 0 {
        return Some(SearchSnapshot { graph: None, last_id, search_ef });
    }
    let path = dir.join(FLAT_FILE);
    let unusable = match FlatGraph::load(&path, exact) {
        Ok(graph) if graph.len() == meta.count => {
            return Some(SearchSnapshot { graph: Some(graph), last_id, search_ef });
        }
        Ok(graph) => format!("{} holds {} nodes where the snapshot has {}", path.display(), graph.len(), meta.count),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
        Err(e) => e.to_string(),
    };
    if !unusable.is_empty() {
        // Dropped, so that the next maintenance writes it again.
        tracing::warn!("cannot use the flat search graph ({unusable}); flattening hnsw_rs's graph instead");
        if let Err(e) = std::fs::remove_file(&path) {
            tracing::warn!("cannot remove {}: {e}", path.display());
        }
    }
    let graph = HnswGraph::load(dir, exact.dim)?;
    Some(SearchSnapshot { graph: Some(graph.flatten(exact)), last_id: graph.last_id, search_ef: graph.search_ef })
}

/// Whether the snapshot in `dir` lacks its flat file although it is to be searched (one
/// written before there was a flat file: the next maintenance adds it).
pub fn lacks_flat_file(dir: &Path) -> bool {
    read_meta(dir).is_some_and(|m| m.search_ef > 0) && !dir.join(FLAT_FILE).exists()
}

/// Marks the snapshot in `dir` as unusable (its metadata goes; the next maintenance rebuilds).
pub fn discard_snapshot(dir: &Path) {
    if let Err(e) = std::fs::remove_file(dir.join("meta.json"))
        && e.kind() != std::io::ErrorKind::NotFound
    {
        tracing::warn!("cannot discard the search graph in {}: {e}", dir.display());
    }
}

/// `(entries, last id)` of the snapshot in `dir`, read from its metadata only.
pub fn snapshot_size(dir: &Path) -> Option<(usize, ImageId)> {
    read_meta(dir).map(|m| (m.count, m.last_id))
}

fn read_meta(dir: &Path) -> Option<SnapshotMeta> {
    serde_json::from_slice(&std::fs::read(dir.join("meta.json")).ok()?).ok()
}

fn sibling(dir: &Path, suffix: &str) -> PathBuf {
    let mut name = dir.file_name().map(|n| n.to_os_string()).unwrap_or_default();
    name.push(format!(".{suffix}"));
    dir.with_file_name(name)
}
