//! The embedded backend: sled trees in a folder, for a library on one machine.
//!
//! Every change that touches more than one tree (a new image with its vector and path, a path
//! moving to another image, a path going away) is one sled transaction, so a crash leaves all of
//! it or none. Identical files share one id and one vector: `hashes` maps content to id, `refs`
//! counts the paths that hold an id, and the last path to go takes the image and its vector with
//! it.

mod captions;
mod faces;
pub(crate) mod keys;
mod model_vectors;
mod reindex;
mod tags;
mod texts;

#[path = "../../../migrations/mod.rs"]
mod migrations;

use std::path::{Path, PathBuf};
use std::sync::RwLock;

use sled::transaction::{ConflictableTransactionError, TransactionError, TransactionalTree};
use sled::{Transactional, Tree};

use keys::{
    FRAME_COUNTS, FRAME_VECTORS, frames_bytes, frames_from_bytes, frames_key, frames_key_parts, frames_prefix,
    id_from_key, id_key, image_path_key, path_from_key, path_key, vector_bytes, vector_from_bytes,
};

use super::{Backend, Failure, FrameVector, ImageId, ImageRecord, PathEntry, Records, StoreCounts, TextStore};
use crate::error::{Error, Result};

/// The schema version this build writes.
pub const SCHEMA_VERSION: u32 = 5;

/// A library in a sled database.
pub struct SledStore {
    dir: PathBuf,
    db: sled::Db,
    meta: Tree,
    roots: Tree,
    images: Tree,
    paths: Tree,
    image_paths: Tree,
    refs: Tree,
    hashes: Tree,
    vectors: RwLock<VectorTrees>,
    /// Videos' frames with their vectors, and their numbers, by generation (those of the vector
    /// trees) and video (see [`keys::FRAME_COUNTS`]).
    frames: Tree,
    failures: Tree,
    tags: Tree,
    tag_index: Tree,
    label_cache: Tree,
    /// Vectors of images under other models (a fine-tuned CLIP that re-ranks searches), by
    /// `model key ++ 0 ++ image id`: a cache, filled on demand and pruned of gone images.
    model_vectors: Tree,
    captions: Tree,
    /// Each image's faces with the scan they came from, by image id (see [`faces`]).
    faces: Tree,
    /// Face id → image id.
    face_index: Tree,
    /// Person id → person.
    persons: Tree,
    /// `face ++ person`: face F is not person P.
    face_corrections: Tree,
    /// Bumped by every caption written, so the in-memory caption ranking knows when it is stale.
    caption_changes: std::sync::atomic::AtomicU64,
    /// The text read in photos (see [`crate::store::StoredText`]), removed with the image.
    texts: Tree,
    /// Bumped by every photo text written.
    text_changes: std::sync::atomic::AtomicU64,
    /// Bumped by every change of images or vectors, so that in-memory indexes know when
    /// they are stale.
    changes: std::sync::atomic::AtomicU64,
}

fn db_error(dir: &Path, e: impl std::fmt::Display) -> Error {
    Error::Store(format!("database {}: {e}", dir.display()))
}

fn json<T: serde::Serialize>(v: &T) -> Vec<u8> {
    serde_json::to_vec(v).expect("records serialise")
}

fn parse<T: serde::de::DeserializeOwned>(dir: &Path, what: &str, bytes: &[u8]) -> Result<T> {
    serde_json::from_slice(bytes).map_err(|e| db_error(dir, format!("corrupt {what} record: {e}")))
}

/// A big-endian `u32` value (schema version, width, reference count); 0 if malformed.
fn be_u32(bytes: &[u8]) -> u32 {
    bytes.try_into().map(u32::from_be_bytes).unwrap_or(0)
}

type TxResult<T> = std::result::Result<T, ConflictableTransactionError<String>>;

/// The vectors of the current model, and the ones `reindex` is writing for the next model (an
/// empty tree when no re-indexing is under way). Switching models makes the next tree current
/// with one atomic write of `meta`.
struct VectorTrees {
    generation: u32,
    current: Tree,
    next: Tree,
}

/// The tree holding the vectors of a generation (`vectors` for the first one).
fn vector_tree_name(generation: u32) -> String {
    if generation == 0 { "vectors".to_string() } else { format!("vectors.{generation}") }
}

/// The trees a change of files touches, inside one transaction.
struct Tx<'a> {
    paths: &'a TransactionalTree,
    image_paths: &'a TransactionalTree,
    refs: &'a TransactionalTree,
    images: &'a TransactionalTree,
    hashes: &'a TransactionalTree,
    vectors: &'a TransactionalTree,
    next_vectors: &'a TransactionalTree,
    failures: &'a TransactionalTree,
    tags: &'a TransactionalTree,
    tag_index: &'a TransactionalTree,
    captions: &'a TransactionalTree,
    frames: &'a TransactionalTree,
    texts: &'a TransactionalTree,
    faces: &'a TransactionalTree,
    /// Settings and counters; here for the full-text stamp (see [`texts::journal_full_text_removal`]).
    meta: &'a TransactionalTree,
    /// The current vector generation (the frames' keys start with it).
    generation: u32,
}

fn abort(e: impl std::fmt::Display) -> ConflictableTransactionError<String> {
    ConflictableTransactionError::Abort(e.to_string())
}

/// Inside a transaction: removes `path`'s mapping, and the image with its vector and tags when
/// no other path holds it. Returns the removed mapping.
fn tx_unlink(t: &Tx, path: &Path) -> TxResult<Option<PathEntry>> {
    let Tx { paths, image_paths, refs, images, hashes, vectors, .. } = *t;
    let Some(old) = paths.remove(path_key(path))? else { return Ok(None) };
    let entry: PathEntry = serde_json::from_slice(&old).map_err(abort)?;
    image_paths.remove(image_path_key(entry.id, path))?;
    let key = id_key(entry.id);
    let count = refs.get(key)?.map(|b| be_u32(&b)).unwrap_or(0);
    if count <= 1 {
        refs.remove(&key)?;
        if let Some(rec) = images.remove(&key)? {
            let rec: ImageRecord = serde_json::from_slice(&rec).map_err(abort)?;
            hashes.remove(rec.hash.as_bytes())?;
        }
        vectors.remove(&key)?;
        t.next_vectors.remove(&key)?;
        tx_set_frames(t.frames, t.generation, entry.id, None)?;
        tx_set_frames(t.frames, t.generation + 1, entry.id, None)?;
        tags::tx_clear(t.tags, t.tag_index, entry.id)?;
        let had_caption = t.captions.remove(&key)?.is_some();
        let had_text = t.texts.remove(&key)?.is_some();
        if had_caption || had_text {
            texts::journal_full_text_removal(t.meta, entry.id)?;
        }
        t.faces.remove(&key)?;
    } else {
        refs.insert(&key, &(count - 1).to_be_bytes())?;
    }
    Ok(Some(entry))
}

/// Inside a transaction: points `path` at `entry`. When the path already points at the same
/// image (a touched file, a file restored from a backup) only its size and time change: going
/// through [`tx_unlink`] first would delete an image whose last path this is, and then link the
/// path to the deleted image.
fn tx_relink(t: &Tx, path: &Path, entry: &PathEntry) -> TxResult<()> {
    if let Some(old) = t.paths.get(path_key(path))? {
        let old: PathEntry = serde_json::from_slice(&old).map_err(abort)?;
        if old.id == entry.id {
            t.paths.insert(path_key(path), json(entry))?;
            return Ok(());
        }
        tx_unlink(t, path)?;
    }
    tx_link(t, path, entry)
}

/// A video's frames as the `frames` tree stores them: the frames' value and their number.
type FramesValue = (Vec<u8>, [u8; 4]);

fn frames_value(frames: &[FrameVector]) -> Option<FramesValue> {
    (!frames.is_empty()).then(|| (frames_bytes(frames), (frames.len() as u32).to_be_bytes()))
}

/// Inside a transaction: stores a video's frames (and their number) in `generation`, or with
/// `None` removes them.
fn tx_set_frames(
    tree: &TransactionalTree,
    generation: u32,
    id: ImageId,
    frames: Option<&FramesValue>,
) -> std::result::Result<(), sled::transaction::UnabortableTransactionError> {
    let (count, vectors) = (frames_key(FRAME_COUNTS, generation, id), frames_key(FRAME_VECTORS, generation, id));
    match frames {
        Some((bytes, n)) => {
            tree.insert(&count, &n[..])?;
            tree.insert(&vectors, bytes.as_slice())?;
        }
        None => {
            tree.remove(&count)?;
            tree.remove(&vectors)?;
        }
    }
    Ok(())
}

fn tx_link(t: &Tx, path: &Path, entry: &PathEntry) -> TxResult<()> {
    let Tx { paths, image_paths, refs, .. } = *t;
    paths.insert(path_key(path), json(entry))?;
    image_paths.insert(image_path_key(entry.id, path), &[] as &[u8])?;
    let key = id_key(entry.id);
    let count = refs.get(key)?.map(|b| be_u32(&b)).unwrap_or(0);
    refs.insert(&key, &(count + 1).to_be_bytes())?;
    Ok(())
}

impl SledStore {
    /// Opens (creating if needed) the database in `dir` and brings its schema up to date.
    pub fn open(dir: &Path) -> Result<Self> {
        std::fs::create_dir_all(dir).map_err(|e| db_error(dir, format!("cannot create the folder: {e}")))?;
        let db = sled::Config::new()
            .path(dir.join("sled"))
            .open()
            .map_err(|e| db_error(dir, format!("cannot open ({e}); is another clipdex using it?")))?;
        let meta = db.open_tree("meta").map_err(|e| db_error(dir, e))?;
        let version = meta.get("schema_version").map_err(|e| db_error(dir, e))?.map(|v| be_u32(&v)).unwrap_or(0);
        if version > SCHEMA_VERSION {
            return Err(db_error(
                dir,
                format!(
                    "schema version {version} is newer than this clipdex understands ({SCHEMA_VERSION}); upgrade clipdex"
                ),
            ));
        }
        for m in migrations::MIGRATIONS.iter().filter(|m| m.version > version) {
            tracing::info!("migrating {} to schema {}: {}", dir.display(), m.version, m.description);
            (m.apply)(&db).map_err(|e| db_error(dir, format!("migration to schema {} failed: {e}", m.version)))?;
            meta.insert("schema_version", &m.version.to_be_bytes()).map_err(|e| db_error(dir, e))?;
            db.flush().map_err(|e| db_error(dir, e))?;
        }
        let tree = |name: &str| db.open_tree(name).map_err(|e| db_error(dir, e));
        let generation = meta.get("vectors_generation").map_err(|e| db_error(dir, e))?.map(|v| be_u32(&v)).unwrap_or(0);
        let vectors = VectorTrees {
            generation,
            current: tree(&vector_tree_name(generation))?,
            next: tree(&vector_tree_name(generation + 1))?,
        };
        let store = SledStore {
            dir: dir.to_path_buf(),
            roots: tree("roots")?,
            images: tree("images")?,
            paths: tree("paths")?,
            image_paths: tree("image_paths")?,
            refs: tree("refs")?,
            hashes: tree("hashes")?,
            vectors: RwLock::new(vectors),
            frames: tree("frames")?,
            failures: tree("failures")?,
            tags: tree("tags")?,
            tag_index: tree("tag_index")?,
            label_cache: tree("label_cache")?,
            model_vectors: tree("model_vectors")?,
            captions: tree("captions")?,
            faces: tree("faces")?,
            face_index: tree("face_index")?,
            persons: tree("persons")?,
            face_corrections: tree("face_corrections")?,
            caption_changes: Default::default(),
            texts: tree("texts")?,
            text_changes: Default::default(),
            changes: Default::default(),
            meta,
            db,
        };
        store.drop_stale_vector_trees()?;
        Ok(store)
    }

    /// The database folder.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn err(&self, e: impl std::fmt::Display) -> Error {
        db_error(&self.dir, e)
    }

    /// The tree of the current model's vectors (a cheap handle).
    fn current_vectors(&self) -> Tree {
        self.vectors.read().expect("vector trees lock").current.clone()
    }

    fn run_tx<T>(&self, what: &str, f: impl Fn(&Tx) -> TxResult<T>) -> Result<T> {
        let vectors = self.vectors.read().expect("vector trees lock");
        // A slice: sled's tuples of trees stop at 14.
        let trees: [&Tree; 15] = [
            &self.paths,
            &self.image_paths,
            &self.refs,
            &self.images,
            &self.hashes,
            &vectors.current,
            &vectors.next,
            &self.failures,
            &self.tags,
            &self.tag_index,
            &self.captions,
            &self.frames,
            &self.texts,
            &self.faces,
            &self.meta,
        ];
        let generation = vectors.generation;
        let outcome = trees[..].transaction(|t| {
            let [
                paths,
                image_paths,
                refs,
                images,
                hashes,
                vectors,
                next_vectors,
                failures,
                tags,
                tag_index,
                captions,
                frames,
                texts,
                faces,
                meta,
            ] = &t[..]
            else {
                return Err(abort("a transaction over the wrong number of trees"));
            };
            f(&Tx {
                paths,
                image_paths,
                refs,
                images,
                hashes,
                vectors,
                next_vectors,
                failures,
                tags,
                tag_index,
                captions,
                frames,
                texts,
                faces,
                meta,
                generation,
            })
        });
        self.changes.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        outcome.map_err(|e| match e {
            TransactionError::Abort(msg) => self.err(format!("{what}: {msg}")),
            TransactionError::Storage(e) => self.err(format!("{what}: {e}")),
        })
    }
}

impl Backend for SledStore {
    /// The recorded schema version.
    fn schema_version(&self) -> Result<u32> {
        let v = self.meta.get("schema_version").map_err(|e| self.err(e))?;
        Ok(v.map(|v| be_u32(&v)).unwrap_or(0))
    }

    fn setting_json(&self, key: &str) -> Result<Option<Vec<u8>>> {
        Ok(self.meta.get(key).map_err(|e| self.err(e))?.map(|b| b.to_vec()))
    }

    fn set_setting_json(&self, key: &str, json: &[u8]) -> Result<()> {
        self.meta.insert(key, json).map_err(|e| self.err(e))?;
        self.flush()
    }

    /// The model whose vectors the store holds, with their width, if any were stored.
    fn model(&self) -> Result<Option<(String, usize)>> {
        let name = self.meta.get("model").map_err(|e| self.err(e))?;
        let dim = self.meta.get("dim").map_err(|e| self.err(e))?;
        Ok(match (name, dim) {
            (Some(n), Some(d)) => Some((String::from_utf8_lossy(&n).into_owned(), be_u32(&d) as usize)),
            _ => None,
        })
    }

    /// Records the model of the vectors (once, before the first vector).
    fn set_model(&self, name: &str, dim: usize) -> Result<()> {
        self.meta.insert("model", name.as_bytes()).map_err(|e| self.err(e))?;
        self.meta.insert("dim", &(dim as u32).to_be_bytes()).map_err(|e| self.err(e))?;
        self.flush()
    }

    /// Records where the model of the vectors is now (the same model, found elsewhere).
    fn rename_model(&self, name: &str) -> Result<()> {
        self.meta.insert("model", name.as_bytes()).map_err(|e| self.err(e))?;
        self.flush()
    }

    /// The fingerprint of the vectors' model's files, when recorded (local models).
    fn model_fingerprint(&self) -> Result<Option<String>> {
        let v = self.meta.get("model_fingerprint").map_err(|e| self.err(e))?;
        Ok(v.map(|v| String::from_utf8_lossy(&v).into_owned()))
    }

    /// Records (or clears) the fingerprint of the vectors' model's files.
    fn set_model_fingerprint(&self, fingerprint: Option<&str>) -> Result<()> {
        match fingerprint {
            Some(f) => self.meta.insert("model_fingerprint", f.as_bytes()).map(drop),
            None => self.meta.remove("model_fingerprint").map(drop),
        }
        .map_err(|e| self.err(e))?;
        self.flush()
    }

    /// Adds a watched folder.
    /// A root added again keeps the device it was indexed on (the guard against an unmounted
    /// drive's emptied folder).
    fn add_root(&self, root: &Path) -> Result<bool> {
        let swapped = self.roots.compare_and_swap(path_key(root), None as Option<&[u8]>, Some(&[] as &[u8]));
        let new = swapped.map_err(|e| self.err(e))?.is_ok();
        self.flush()?;
        Ok(new)
    }

    /// The file-system device a root was on when its files were last indexed (`None` for a
    /// root not indexed yet, or recorded before devices were).
    fn root_device(&self, root: &Path) -> Result<Option<u64>> {
        let value = self.roots.get(path_key(root)).map_err(|e| self.err(e))?;
        Ok(value.and_then(|v| <[u8; 8]>::try_from(v.as_ref()).ok()).map(u64::from_be_bytes))
    }

    /// Records the device of a root whose files were just indexed. Does nothing for a root
    /// that is not (or no longer) watched.
    fn set_root_device(&self, root: &Path, device: u64) -> Result<()> {
        let key = path_key(root);
        let bytes = device.to_be_bytes();
        // Only an existing root is updated: a root removed meanwhile must not come back.
        let Some(current) = self.roots.get(&key).map_err(|e| self.err(e))? else { return Ok(()) };
        let swapped = self.roots.compare_and_swap(&key, Some(current), Some(&bytes[..])).map_err(|e| self.err(e))?;
        // A lost race means the root was removed or updated meanwhile: either way nothing to do.
        drop(swapped);
        Ok(())
    }

    /// Removes a watched folder (its images stay until the next `index`).
    fn remove_root(&self, root: &Path) -> Result<bool> {
        let had = self.roots.remove(path_key(root)).map_err(|e| self.err(e))?.is_some();
        self.flush()?;
        Ok(had)
    }

    /// The watched folders.
    fn roots(&self) -> Result<Vec<PathBuf>> {
        self.roots.iter().keys().map(|k| k.map(|k| path_from_key(&k)).map_err(|e| self.err(e))).collect()
    }

    /// The mapping of one file, if indexed.
    fn path_entry(&self, path: &Path) -> Result<Option<PathEntry>> {
        match self.paths.get(path_key(path)).map_err(|e| self.err(e))? {
            Some(b) => Ok(Some(parse(&self.dir, "path", &b)?)),
            None => Ok(None),
        }
    }

    /// Every indexed file at or under `prefix` (all when `prefix` is empty).
    fn paths_under(&self, prefix: &Path) -> Result<Vec<(PathBuf, PathEntry)>> {
        let mut out = Vec::new();
        for kv in self.paths.scan_prefix(path_key(prefix)) {
            let (k, v) = kv.map_err(|e| self.err(e))?;
            let path = path_from_key(&k);
            if path.starts_with(prefix) {
                out.push((path, parse(&self.dir, "path", &v)?));
            }
        }
        Ok(out)
    }

    /// The image with this content hash, if stored.
    fn id_for_hash(&self, hash: &str) -> Result<Option<ImageId>> {
        Ok(self.hashes.get(hash.as_bytes()).map_err(|e| self.err(e))?.and_then(|b| id_from_key(&b)))
    }

    /// One image's record.
    fn image(&self, id: ImageId) -> Result<Option<ImageRecord>> {
        match self.images.get(id_key(id)).map_err(|e| self.err(e))? {
            Some(b) => Ok(Some(parse(&self.dir, "image", &b)?)),
            None => Ok(None),
        }
    }

    /// The files holding an image, in path order.
    fn paths_of(&self, id: ImageId) -> Result<Vec<PathBuf>> {
        self.image_paths
            .scan_prefix(id_key(id))
            .keys()
            .map(|k| k.map(|k| path_from_key(&k[8..])).map_err(|e| self.err(e)))
            .collect()
    }

    /// One image's vector.
    fn vector(&self, id: ImageId) -> Result<Option<Vec<f32>>> {
        Ok(self.current_vectors().get(id_key(id)).map_err(|e| self.err(e))?.map(|b| vector_from_bytes(&b)))
    }

    /// How many stored vectors have an id above `id` (those added after it: ids only grow).
    fn vectors_after(&self, id: ImageId) -> Result<u64> {
        let Some(next) = id.checked_add(1) else { return Ok(0) };
        let mut n = 0;
        for k in self.current_vectors().range(id_key(next)..).keys() {
            k.map_err(|e| self.err(e))?;
            n += 1;
        }
        Ok(n)
    }

    /// Every stored vector, in id order.
    fn vectors(&self) -> Records<'_, Vec<f32>> {
        Box::new(self.current_vectors().iter().map(move |kv| {
            let (k, v) = kv.map_err(|e| self.err(e))?;
            let id = id_from_key(&k).ok_or_else(|| self.err("corrupt vector key"))?;
            Ok((id, vector_from_bytes(&v)))
        }))
    }

    /// Every stored image record, in id order.
    fn images(&self) -> Records<'_, ImageRecord> {
        Box::new(self.images.iter().map(move |kv| {
            let (k, v) = kv.map_err(|e| self.err(e))?;
            let id = id_from_key(&k).ok_or_else(|| self.err("corrupt image key"))?;
            Ok((id, parse(&self.dir, "image", &v)?))
        }))
    }

    /// A counter that moves whenever images or vectors change (in this process).
    fn changes(&self) -> Result<u64> {
        Ok(self.changes.load(std::sync::atomic::Ordering::SeqCst))
    }

    /// Stores a new image found at `path`: its record, vector, hash and path mapping in one
    /// transaction. If the content is already stored (another file, or a race), `path` is
    /// linked to that image instead. Any previous mapping of `path` is released.
    fn commit_with_frames(
        &self,
        path: &Path,
        size: u64,
        mtime_ns: i64,
        record: &ImageRecord,
        vector: &[f32],
        frames: &[FrameVector],
    ) -> Result<ImageId> {
        let fresh = self.db.generate_id().map_err(|e| self.err(e))?;
        let record_bytes = json(record);
        let vector = vector_bytes(vector);
        let frames = frames_value(frames);
        self.run_tx("commit image", |t| {
            let id = match t.hashes.get(record.hash.as_bytes())?.and_then(|b| id_from_key(&b)) {
                Some(existing) => existing,
                None => {
                    t.images.insert(&id_key(fresh), record_bytes.as_slice())?;
                    t.vectors.insert(&id_key(fresh), vector.as_slice())?;
                    tx_set_frames(t.frames, t.generation, fresh, frames.as_ref())?;
                    t.hashes.insert(record.hash.as_bytes(), &id_key(fresh))?;
                    fresh
                }
            };
            tx_relink(t, path, &PathEntry { id, size, mtime_ns })?;
            t.failures.remove(path_key(path))?;
            Ok(id)
        })
    }

    fn frames_of(&self, id: ImageId) -> Result<Vec<FrameVector>> {
        let generation = self.vectors.read().expect("vector trees lock").generation;
        match self.frames.get(frames_key(FRAME_VECTORS, generation, id)).map_err(|e| self.err(e))? {
            Some(b) => frames_from_bytes(&b).ok_or_else(|| self.err(format!("corrupt frames of video {id}"))),
            None => Ok(Vec::new()),
        }
    }

    fn frame_vectors(&self) -> Records<'_, FrameVector> {
        let generation = self.vectors.read().expect("vector trees lock").generation;
        let items = self.frames.scan_prefix(frames_prefix(FRAME_VECTORS, generation)).flat_map(move |kv| {
            let decoded = kv.map_err(|e| self.err(e)).and_then(|(k, v)| {
                let (_, id) = frames_key_parts(&k).ok_or_else(|| self.err("corrupt frames key"))?;
                let frames = frames_from_bytes(&v).ok_or_else(|| self.err(format!("corrupt frames of video {id}")))?;
                Ok((id, frames))
            });
            let items: Vec<Result<(ImageId, FrameVector)>> = match decoded {
                Ok((id, frames)) => frames.into_iter().map(|f| Ok((id, f))).collect(),
                Err(e) => vec![Err(e)],
            };
            items
        });
        Box::new(items)
    }

    /// Points `path` at an already stored image (a copy, a move, an unchanged touch), releasing
    /// its previous mapping.
    fn link_path(&self, path: &Path, id: ImageId, size: u64, mtime_ns: i64) -> Result<()> {
        self.run_tx("link path", |t| {
            if t.images.get(id_key(id))?.is_none() {
                return Err(abort(format!("image {id} is not stored")));
            }
            tx_relink(t, path, &PathEntry { id, size, mtime_ns })?;
            t.failures.remove(path_key(path))?;
            Ok(())
        })
    }

    /// [`Backend::relink_dated`]: the record is read and rewritten in the transaction that
    /// moves the mapping, so a crash leaves the old date with the old mapping or both new.
    fn relink_dated(&self, path: &Path, id: ImageId, size: u64, mtime_ns: i64) -> Result<bool> {
        self.run_tx("link path", |t| {
            let Some(stored) = t.images.get(id_key(id))? else {
                return Err(abort(format!("image {id} is not stored")));
            };
            let touched = match t.paths.get(path_key(path))? {
                Some(old) => {
                    let old: PathEntry = serde_json::from_slice(&old).map_err(abort)?;
                    old.id == id && old.mtime_ns != mtime_ns
                }
                None => false,
            };
            let mut redated = false;
            if touched {
                let mut record: ImageRecord = serde_json::from_slice(&stored).map_err(abort)?;
                let (modified, before) = (ImageRecord::modified_at(mtime_ns), record.date());
                if record.modified != modified {
                    record.modified = modified;
                    t.images.insert(&id_key(id), json(&record))?;
                    redated = record.date() != before;
                }
            }
            tx_relink(t, path, &PathEntry { id, size, mtime_ns })?;
            t.failures.remove(path_key(path))?;
            Ok(redated)
        })
    }

    /// Forgets a file (deleted, moved away, or its root removed). The image goes too when no
    /// other file holds it. Returns the mapping it had.
    fn unlink_path(&self, path: &Path) -> Result<Option<PathEntry>> {
        self.run_tx("unlink path", |t| {
            t.failures.remove(path_key(path))?;
            tx_unlink(t, path)
        })
    }

    /// Records that `path` could not be indexed in its current state.
    fn record_failure(&self, path: &Path, reason: &str, size: u64, mtime_ns: i64) -> Result<()> {
        let key = path_key(path);
        let attempts = match self.failures.get(&key).map_err(|e| self.err(e))? {
            Some(b) => parse::<Failure>(&self.dir, "failure", &b)?.attempts + 1,
            None => 1,
        };
        let f = Failure { reason: reason.to_string(), attempts, size, mtime_ns };
        self.failures.insert(key, json(&f)).map_err(|e| self.err(e))?;
        Ok(())
    }

    /// The failure recorded for `path`, if any.
    fn failure(&self, path: &Path) -> Result<Option<Failure>> {
        match self.failures.get(path_key(path)).map_err(|e| self.err(e))? {
            Some(b) => Ok(Some(parse(&self.dir, "failure", &b)?)),
            None => Ok(None),
        }
    }

    /// Forgets a failure (the file is gone).
    fn clear_failure(&self, path: &Path) -> Result<()> {
        self.failures.remove(path_key(path)).map_err(|e| self.err(e))?;
        Ok(())
    }

    /// Every recorded failure, in path order.
    fn failures(&self) -> Result<Vec<(PathBuf, Failure)>> {
        self.failures
            .iter()
            .map(|kv| {
                let (k, v) = kv.map_err(|e| self.err(e))?;
                Ok((path_from_key(&k), parse(&self.dir, "failure", &v)?))
            })
            .collect()
    }

    /// What the store holds.
    fn counts(&self) -> Result<StoreCounts> {
        let generation = self.vectors.read().expect("vector trees lock").generation;
        let (mut videos, mut frames) = (0, 0);
        for n in self.frames.scan_prefix(frames_prefix(FRAME_COUNTS, generation)).values() {
            videos += 1;
            frames += u64::from(be_u32(&n.map_err(|e| self.err(e))?));
        }
        Ok(StoreCounts {
            videos,
            frames,
            images: self.images.len() as u64,
            paths: self.paths.len() as u64,
            vectors: self.current_vectors().len() as u64,
            failures: self.failures.len() as u64,
            roots: self.roots.len() as u64,
            tagged: self.tags.len() as u64,
            tags: self.tag_index.len() as u64,
            cached_labels: self.label_cache.len() as u64,
            captioned: self.captions.len() as u64,
        })
    }

    /// Makes everything written so far durable.
    fn flush(&self) -> Result<()> {
        self.db.flush().map_err(|e| self.err(e))?;
        Ok(())
    }

    /// Checks the store's invariants: every image has a vector, a hash entry and as many paths
    /// as its reference count; every path points at a stored image. Returns the problems found.
    fn check(&self) -> Result<Vec<String>> {
        let mut problems = Vec::new();
        for item in self.images() {
            let (id, rec) = item?;
            if self.vector(id)?.is_none() {
                problems.push(format!("image {id} has no vector"));
            }
            let frames = self.frames_of(id)?.len();
            match (rec.is_video(), frames) {
                (true, 0) => problems.push(format!("video {id} has no frames")),
                (false, 1..) => problems.push(format!("photo {id} has {frames} frames")),
                _ => {}
            }
            if self.id_for_hash(&rec.hash)? != Some(id) {
                problems.push(format!("image {id}: hash {} does not map back to it", rec.hash));
            }
            let paths = self.paths_of(id)?;
            let refs = self.refs.get(id_key(id)).map_err(|e| self.err(e))?.map(|b| be_u32(&b)).unwrap_or(0);
            if paths.is_empty() || paths.len() as u32 != refs {
                problems.push(format!("image {id}: {} paths, reference count {refs}", paths.len()));
            }
        }
        for item in self.vectors() {
            let (id, _) = item?;
            if self.image(id)?.is_none() {
                problems.push(format!("orphan vector {id}"));
            }
        }
        for k in self.frames.scan_prefix([FRAME_COUNTS]).keys() {
            let k = k.map_err(|e| self.err(e))?;
            if let Some((_, id)) = frames_key_parts(&k)
                && self.image(id)?.is_none()
            {
                problems.push(format!("frames of missing video {id}"));
            }
        }
        for id in self.tags.iter().keys() {
            let id = id.map_err(|e| self.err(e)).map(|k| id_from_key(&k))?;
            if let Some(id) = id
                && self.image(id)?.is_none()
            {
                problems.push(format!("tags of missing image {id}"));
            }
        }
        for item in self.texts() {
            let (id, text) = item?;
            match self.image(id)? {
                None => problems.push(format!("photo text of missing image {id}")),
                Some(rec) if rec.hash != text.hash => {
                    problems.push(format!("photo text of image {id} was read from other content"))
                }
                Some(_) => {}
            }
        }
        for (path, entry) in self.paths_under(Path::new(""))? {
            if self.image(entry.id)?.is_none() {
                problems.push(format!("{} points at missing image {}", path.display(), entry.id));
            }
        }
        self.check_faces(&mut problems)?;
        Ok(problems)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{CaptionStore, StoredCaption, Tag, TagStore};

    fn record(hash: &str) -> ImageRecord {
        ImageRecord {
            hash: hash.into(),
            size: 10,
            width: 4,
            height: 3,
            modified: 0,
            taken: None,
            camera: None,
            gps: None,
            lens: None,
            video: None,
            motion_video: None,
            motion_video_problem: None,
        }
    }

    #[test]
    fn relinking_a_path_to_its_own_image_keeps_the_image_its_tags_and_caption() {
        let dir = tempfile::tempdir().unwrap();
        let store = SledStore::open(dir.path()).unwrap();
        let path = Path::new("/photos/a.jpg");
        let id = store.commit_image(path, 10, 1, &record("h1"), &[1.0, 0.0]).unwrap();
        let caption = StoredCaption { text: "a cat".into(), settings: "s".into() };
        assert!(store.set_caption(id, &caption).unwrap());
        store.set_tags(id, "v", &[Tag { label: "cat".into(), probability: 0.9, cosine: 0.3 }]).unwrap();
        // A touch: the same content under the same path, a new time.
        store.link_path(path, id, 10, 2).unwrap();
        // A restore from a backup found as new content by a racing pass: the same hash.
        assert_eq!(store.commit_image(path, 10, 3, &record("h1"), &[1.0, 0.0]).unwrap(), id);
        assert!(store.check().unwrap().is_empty(), "{:?}", store.check());
        assert_eq!(store.path_entry(path).unwrap().unwrap(), PathEntry { id, size: 10, mtime_ns: 3 });
        assert_eq!(store.caption_of(id).unwrap().unwrap().text, "a cat");
        assert!(store.has_tag(id, "cat").unwrap());
        // An edit: the path moves to a new image and the old one, now without files, goes.
        let new = store.commit_image(path, 11, 4, &record("h2"), &[0.0, 1.0]).unwrap();
        assert_ne!(new, id);
        assert!(store.image(id).unwrap().is_none() && store.caption_of(id).unwrap().is_none());
        assert!(store.check().unwrap().is_empty());
        assert_eq!(store.counts().unwrap().images, 1);
    }
}
