//! The flat graph on disk, so that opening a library's index reads one file instead of
//! loading hnsw_rs's snapshot and flattening it again: to the first answer, 0.13 s instead of
//! 4.2 s at 100k vectors, 3.4 s instead of about a minute at 1M (`cargo bench --bench ann`).
//!
//! Layout, little-endian: a header (magic, version, width, entry node, node count, upper
//! layer count, layer-0 link count), the image ids, the codes' scales and bytes, the layer-0
//! offsets and links, the upper layers (per layer: node count, then each node, its list's
//! length and the list), and last a blake3 hash of everything before it. The full vectors are
//! not in it: live nodes point into the exact index, which the store fills on open, and a node
//! whose image has been deleted since (a tombstone, never returned) walks on its decoded codes.
//!
//! The file is derived data like the rest of the snapshot: one that is missing, corrupt or of
//! another version is ignored and the graph is flattened from hnsw_rs's dump instead.

use std::collections::HashMap;
use std::fs::File;
use std::io::{self, BufWriter, Write};
use std::path::Path;

use super::{FlatGraph, LAYER1_BEAM};
use crate::ann::ExactIndex;
use crate::ann::codes::Codes;
use crate::store::ImageId;

const MAGIC: &[u8; 8] = b"CDXFLAT\0";
const VERSION: u32 = 1;
/// hnsw_rs builds at most 16 layers; anything far above is corruption.
const MAX_UPPER_LAYERS: usize = 64;

/// Hashes what passes through on its way to the file.
struct Hashing {
    file: File,
    hasher: blake3::Hasher,
}

impl Write for Hashing {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.file.write(buf)?;
        self.hasher.update(&buf[..n]);
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.file.flush()
    }
}

fn put_u32s(w: &mut impl Write, values: impl IntoIterator<Item = u32>) -> io::Result<()> {
    values.into_iter().try_for_each(|v| w.write_all(&v.to_le_bytes()))
}

impl FlatGraph {
    /// Writes the graph to `path` (the caller syncs and renames it into place).
    pub fn save(&self, path: &Path) -> io::Result<()> {
        let hashing = Hashing { file: File::create(path)?, hasher: blake3::Hasher::new() };
        // Buffered before hashing, so that the hasher sees large blocks, not four bytes at a time.
        let mut w = BufWriter::with_capacity(1 << 20, hashing);
        let n = self.ids.len();
        w.write_all(MAGIC)?;
        put_u32s(&mut w, [VERSION, self.dim as u32, self.entry, n as u32, self.upper.len() as u32])?;
        w.write_all(&(self.links.len() as u64).to_le_bytes())?;
        self.ids.iter().try_for_each(|id| w.write_all(&id.to_le_bytes()))?;
        let (bytes, scales) = self.codes.parts();
        put_u32s(&mut w, scales.iter().map(|s| s.to_bits()))?;
        for chunk in bytes.chunks(1 << 16) {
            w.write_all(&chunk.iter().map(|b| *b as u8).collect::<Vec<u8>>())?;
        }
        put_u32s(&mut w, self.offsets.iter().copied())?;
        put_u32s(&mut w, self.links.iter().copied())?;
        for layer in &self.upper {
            let mut nodes: Vec<(&u32, &Vec<u32>)> = layer.iter().collect();
            nodes.sort_unstable_by_key(|(node, _)| **node);
            put_u32s(&mut w, [nodes.len() as u32])?;
            for (node, list) in nodes {
                put_u32s(&mut w, [*node, list.len() as u32])?;
                put_u32s(&mut w, list.iter().copied())?;
            }
        }
        let mut hashing = w.into_inner().map_err(|e| e.into_error())?;
        let hash = hashing.hasher.finalize();
        hashing.file.write_all(hash.as_bytes())
    }

    /// Reads a graph written by [`FlatGraph::save`], to search beside `exact` (which must hold
    /// the store's vectors now; images deleted since the save become tombstones). An error
    /// when the file cannot be read, is corrupt or truncated, or is of another width.
    pub fn load(path: &Path, exact: &ExactIndex) -> io::Result<Self> {
        let data = std::fs::read(path)?;
        let bad = |what: &str| io::Error::new(io::ErrorKind::InvalidData, format!("{}: {what}", path.display()));
        if data.len() < 32 {
            return Err(bad("truncated"));
        }
        let (body, hash) = data.split_at(data.len() - 32);
        if blake3::hash(body).as_bytes()[..] != hash[..] {
            return Err(bad("checksum mismatch (damaged or truncated)"));
        }
        let mut r = Reader { data: body, at: 0 };
        let short = || bad("shorter than its header says");
        if r.take(8).ok_or_else(short)? != MAGIC {
            return Err(bad("not a clipdex graph file"));
        }
        let header = r.u32s(5).ok_or_else(short)?;
        let [version, dim, entry, n, layers] = [header[0], header[1], header[2], header[3], header[4]];
        let (dim, n, layers) = (dim as usize, n as usize, layers as usize);
        if version != VERSION {
            return Err(bad(&format!("version {version}, this build reads {VERSION}")));
        }
        if dim == 0 || (exact.dim != 0 && dim != exact.dim) {
            return Err(bad(&format!("vectors of width {dim}, the library's are {}", exact.dim)));
        }
        if layers > MAX_UPPER_LAYERS || (n > 0 && entry as usize >= n) {
            return Err(bad("malformed header"));
        }
        let link_count = r.u64().ok_or_else(short)? as usize;
        let ids: Vec<ImageId> = r
            .take(n.checked_mul(8).ok_or_else(short)?)
            .ok_or_else(short)?
            .chunks_exact(8)
            .map(|c| u64::from_le_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]]))
            .collect();
        let scales: Vec<f32> = r.u32s(n).ok_or_else(short)?.into_iter().map(f32::from_bits).collect();
        let bytes: Vec<i8> =
            r.take(n.checked_mul(dim).ok_or_else(short)?).ok_or_else(short)?.iter().map(|b| *b as i8).collect();
        let codes = Codes::from_parts(dim, bytes, scales).ok_or_else(short)?;
        let offsets = r.u32s(n + 1).ok_or_else(short)?;
        let links = r.u32s(link_count).ok_or_else(short)?;
        let in_range = |node: &u32| (*node as usize) < n;
        let offsets_fit = offsets.first() == Some(&0)
            && offsets.windows(2).all(|w| w[0] <= w[1])
            && offsets.last().is_some_and(|last| *last as usize == links.len());
        if !offsets_fit || !links.iter().all(in_range) {
            return Err(bad("malformed layer 0"));
        }
        let mut upper = Vec::with_capacity(layers);
        for _ in 0..layers {
            let count = r.u32().ok_or_else(short)? as usize;
            let mut layer = HashMap::with_capacity(count.min(n));
            for _ in 0..count {
                let node = r.u32().ok_or_else(short)?;
                let len = r.u32().ok_or_else(short)? as usize;
                let list = r.u32s(len).ok_or_else(short)?;
                if !in_range(&node) || !list.iter().all(in_range) {
                    return Err(bad("malformed upper layer"));
                }
                layer.insert(node, list);
            }
            upper.push(layer);
        }
        if r.at != body.len() {
            return Err(bad("trailing bytes"));
        }

        // Rows in today's exact index; deleted images walk on their decoded codes.
        let live_rows = exact.len() as u32;
        let mut rows = Vec::with_capacity(n);
        let mut extra = Vec::new();
        for (node, id) in ids.iter().enumerate() {
            match exact.position(*id) {
                Some(row) => rows.push(row as u32),
                None => {
                    extra.extend(codes.decode(node));
                    rows.push(live_rows + (extra.len() / dim) as u32 - 1);
                }
            }
        }
        Ok(FlatGraph {
            dim,
            entry,
            ids,
            rows,
            live_rows,
            extra,
            codes,
            offsets,
            links,
            upper,
            layer1_beam: LAYER1_BEAM,
        })
    }
}

/// Reads a byte slice front to back; `None` past its end.
struct Reader<'a> {
    data: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, len: usize) -> Option<&'a [u8]> {
        let end = self.at.checked_add(len).filter(|end| *end <= self.data.len())?;
        let out = &self.data[self.at..end];
        self.at = end;
        Some(out)
    }

    fn u32(&mut self) -> Option<u32> {
        self.take(4).map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]]))
    }

    fn u64(&mut self) -> Option<u64> {
        self.take(8).map(|c| u64::from_le_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]]))
    }

    fn u32s(&mut self, count: usize) -> Option<Vec<u32>> {
        let raw = self.take(count.checked_mul(4)?)?;
        Some(raw.chunks_exact(4).map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect())
    }
}

#[cfg(test)]
mod tests {
    use super::super::Walk;
    use super::*;

    /// A few hundred points on a spiral in 8 dimensions, each linked to its next few, with a
    /// sparse upper layer.
    fn graph(exact: &mut ExactIndex) -> FlatGraph {
        let n = 300;
        for i in 0..n {
            let a = i as f32 * 0.05;
            let v: Vec<f32> = (0..8).map(|k| (a * (k + 1) as f32).sin() + 0.1 * k as f32).collect();
            let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt();
            exact.insert(i as ImageId * 2 + 1, &v.iter().map(|x| x / norm).collect::<Vec<_>>());
        }
        let nodes = (0..n).map(|i| {
            let near = |step: usize| (1..=4).map(move |d| ((i + d * step) % n) as ImageId * 2 + 1).collect();
            let layer = usize::from(i % 10 == 0);
            let mut neighbours = vec![near(1)];
            if layer == 1 {
                neighbours.push(near(10));
            }
            super::super::SourceNode { id: i as ImageId * 2 + 1, layer, vector: None, neighbours }
        });
        let mut g = FlatGraph::new(8, nodes, exact);
        g.add_reverse_links(exact, 12);
        g
    }

    /// The test graph saved: its folder (kept for the test's length), the file, the vectors
    /// and the graph.
    fn saved() -> (tempfile::TempDir, std::path::PathBuf, ExactIndex, FlatGraph) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("flat.bin");
        let mut exact = ExactIndex::default();
        let g = graph(&mut exact);
        g.save(&path).unwrap();
        (dir, path, exact, g)
    }

    fn queries() -> Vec<Vec<f32>> {
        (0..6).map(|q| (0..8).map(|k| ((q * 7 + k) as f32 * 0.9).cos()).collect()).collect()
    }

    #[test]
    fn a_saved_graph_loads_and_searches_the_same() {
        let (_dir, path, exact, g) = saved();
        let loaded = FlatGraph::load(&path, &exact).unwrap();
        assert_eq!((loaded.entry, &loaded.ids, &loaded.rows), (g.entry, &g.ids, &g.rows));
        assert_eq!((&loaded.offsets, &loaded.links, &loaded.upper), (&g.offsets, &g.links, &g.upper));
        assert_eq!(loaded.codes.parts(), g.codes.parts());
        for q in queries() {
            for walk in [Walk::Bytes, Walk::Vectors] {
                let found = g.search_with(&exact, &q, 10, 32, walk);
                assert_eq!(found.len(), 10);
                assert_eq!(loaded.search_with(&exact, &q, 10, 32, walk), found);
            }
        }
    }

    #[test]
    fn images_deleted_since_the_save_walk_on_their_codes() {
        let (_dir, path, exact, _) = saved();
        // Every third image is gone from the store when the graph is opened again.
        let mut today = ExactIndex::default();
        for (id, v) in exact.iter().filter(|(id, _)| id % 3 != 0) {
            today.insert(id, v);
        }
        let loaded = FlatGraph::load(&path, &today).unwrap();
        assert_eq!(loaded.extra.len(), 100 * 8, "a hundred tombstones");
        for node in 0..loaded.len() as u32 {
            let id = loaded.ids[node as usize];
            let original = exact.row(exact.position(id).unwrap());
            let now = loaded.vector(&today, node);
            assert!(original.iter().zip(now).all(|(a, b)| (a - b).abs() < 0.01), "image {id}");
        }
        // Live answers carry their exact cosines; tombstones may be among them (the caller
        // filters them out), with their approximate ones.
        for q in queries() {
            let found = loaded.search(&today, &q, 10, 32);
            assert_eq!(found.len(), 10);
            for (id, score) in found.iter().filter(|(id, _)| id % 3 != 0) {
                assert_eq!(*score, crate::ann::dot(&q, today.row(today.position(*id).unwrap())));
            }
        }
    }

    #[test]
    fn damaged_files_are_refused() {
        let (dir, path, exact, g) = saved();
        let good = std::fs::read(&path).unwrap();
        let refused = |bytes: &[u8]| {
            std::fs::write(&path, bytes).unwrap();
            FlatGraph::load(&path, &exact).err().map(|e| e.to_string()).unwrap_or_default()
        };
        let mut flipped = good.clone();
        flipped[good.len() / 2] ^= 0x40;
        assert!(refused(&flipped).contains("checksum"));
        assert!(refused(&good[..good.len() - 100]).contains("checksum"));
        assert!(refused(b"").contains("truncated"));
        assert!(refused(&[b'x'; 64]).contains("checksum"));
        // A well-formed file whose content lies: a link to a node that does not exist.
        let mut lying = good[..good.len() - 32].to_vec();
        let upper_bytes: usize =
            g.upper.iter().map(|l| 4 + l.values().map(|list| 8 + 4 * list.len()).sum::<usize>()).sum();
        let links_end = lying.len() - upper_bytes;
        lying[links_end - 4..links_end].copy_from_slice(&9999u32.to_le_bytes());
        lying.extend_from_slice(blake3::hash(&lying).as_bytes());
        assert!(refused(&lying).contains("malformed layer 0"));
        // Another width.
        let mut narrow = ExactIndex::default();
        narrow.insert(1, &[1.0, 0.0]);
        std::fs::write(&path, &good).unwrap();
        let error = FlatGraph::load(&path, &narrow).err().map(|e| e.to_string()).unwrap_or_default();
        assert!(error.contains("width 8"), "{error}");
        assert!(FlatGraph::load(&dir.path().join("none"), &exact).is_err());
    }
}
