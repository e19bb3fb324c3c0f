//! What a storage backend provides: the one interface the indexer, the queries and the server
//! use, whichever engine holds the library. Every write that touches several records is atomic
//! in every backend (a crash leaves all of it or none), and every backend keeps the same
//! invariants, which [`Backend::check`] reports on.

use std::path::{Path, PathBuf};

use super::TextStore;
use super::{
    Failure, FrameVector, ImageId, ImageRecord, PathEntry, ReindexTarget, StoreCounts, StoredCaption, Tag, TagCount,
};
use crate::error::Result;
use crate::store::search_types::{IndexState, SearchFilter, SearchHit};

/// A fallible iterator over records, in id order.
pub type Records<'a, T> = Box<dyn Iterator<Item = Result<(ImageId, T)>> + 'a>;

/// A library's database: image records, the files holding them, vectors, failures, watched
/// folders and settings, plus tags, captions, re-indexing and cached vectors of other models
/// and faces with people (the supertraits).
pub trait Backend:
    TagStore + CaptionStore + TextStore + ReindexStore + ModelVectorStore + super::faces::FaceStore + Send + Sync
{
    /// The recorded schema version.
    fn schema_version(&self) -> Result<u32>;

    /// The model whose vectors the store holds, with their width, if any were stored.
    fn model(&self) -> Result<Option<(String, usize)>>;

    /// Records the model of the vectors (once, before the first vector).
    fn set_model(&self, name: &str, dim: usize) -> Result<()>;

    /// Records where the model of the vectors is now (the same model, found elsewhere).
    fn rename_model(&self, name: &str) -> Result<()>;

    /// The fingerprint of the vectors' model's files, when recorded (local models).
    fn model_fingerprint(&self) -> Result<Option<String>>;

    /// Records (or clears) the fingerprint of the vectors' model's files.
    fn set_model_fingerprint(&self, fingerprint: Option<&str>) -> Result<()>;

    /// A setting's JSON text (see [`super::Store::setting`] for typed access).
    fn setting_json(&self, key: &str) -> Result<Option<Vec<u8>>>;

    /// Stores a setting's JSON text.
    fn set_setting_json(&self, key: &str, json: &[u8]) -> Result<()>;

    /// Adds a watched folder; false when it was watched already.
    fn add_root(&self, root: &Path) -> Result<bool>;

    /// The file-system device a root was on when its files were last indexed (`None` for a
    /// root not indexed yet, or recorded before devices were).
    fn root_device(&self, root: &Path) -> Result<Option<u64>>;

    /// Records the device of a root whose files were just indexed. Does nothing for a root
    /// that is not (or no longer) watched: a root removed meanwhile must not come back.
    fn set_root_device(&self, root: &Path, device: u64) -> Result<()>;

    /// Removes a watched folder (its images stay until the next `index`).
    fn remove_root(&self, root: &Path) -> Result<bool>;

    /// The watched folders, in path order.
    fn roots(&self) -> Result<Vec<PathBuf>>;

    /// The mapping of one file, if indexed.
    fn path_entry(&self, path: &Path) -> Result<Option<PathEntry>>;

    /// Every indexed file at or under `prefix` (all when `prefix` is empty), in path order.
    fn paths_under(&self, prefix: &Path) -> Result<Vec<(PathBuf, PathEntry)>>;

    /// The image with this content hash, if stored.
    fn id_for_hash(&self, hash: &str) -> Result<Option<ImageId>>;

    /// One image's record.
    fn image(&self, id: ImageId) -> Result<Option<ImageRecord>>;

    /// The files holding an image, in path order.
    fn paths_of(&self, id: ImageId) -> Result<Vec<PathBuf>>;

    /// One image's vector.
    fn vector(&self, id: ImageId) -> Result<Option<Vec<f32>>>;

    /// How many stored vectors have an id above `id` (those added after it: ids only grow).
    fn vectors_after(&self, id: ImageId) -> Result<u64>;

    /// Every stored vector, in id order.
    fn vectors(&self) -> Records<'_, Vec<f32>>;

    /// Every stored image record, in id order.
    fn images(&self) -> Records<'_, ImageRecord>;

    /// Up to `limit` stored images newest first (by [`ImageRecord::date`], then id, both
    /// descending), starting after `before` (a `(date, id)` key: only images ordered after it
    /// come back). The folder store reads every record and keeps the newest `limit`; PostgreSQL
    /// answers with an ordered keyset query.
    fn timeline(&self, before: Option<(i64, ImageId)>, limit: usize) -> Result<Vec<(ImageId, ImageRecord)>> {
        newest_records(self.images(), before, limit)
    }

    /// [`Backend::timeline`] of the images with a file at or under `folder`.
    fn timeline_under(
        &self,
        folder: &Path,
        before: Option<(i64, ImageId)>,
        limit: usize,
    ) -> Result<Vec<(ImageId, ImageRecord)>> {
        newest_records(records_under(self, folder)?, before, limit)
    }

    /// [`Backend::month_counts`] of the images with a file at or under `folder`.
    fn month_counts_under(&self, folder: &Path) -> Result<Vec<(String, u64)>> {
        count_months(records_under(self, folder)?)
    }

    /// How many stored images fall in each month (`YYYY-MM` of [`ImageRecord::date`], read as
    /// UTC), newest month first.
    fn month_counts(&self) -> Result<Vec<(String, u64)>> {
        count_months(self.images())
    }

    /// A counter that moves whenever images or vectors change, so that in-memory indexes know
    /// when they are stale.
    fn changes(&self) -> Result<u64>;

    /// Stores a new image found at `path`: its record, vector, hash and path mapping at once.
    /// If the content is already stored (another file, or a race), `path` is linked to that
    /// image instead. Any previous mapping of `path` is released, and its failure forgotten.
    fn commit_image(
        &self,
        path: &Path,
        size: u64,
        mtime_ns: i64,
        record: &ImageRecord,
        vector: &[f32],
    ) -> Result<ImageId> {
        self.commit_with_frames(path, size, mtime_ns, record, vector, &[])
    }

    /// [`Backend::commit_image`] for a video: its frames' vectors are stored with it, in the
    /// same transaction (none for a photo).
    fn commit_with_frames(
        &self,
        path: &Path,
        size: u64,
        mtime_ns: i64,
        record: &ImageRecord,
        vector: &[f32],
        frames: &[FrameVector],
    ) -> Result<ImageId>;

    /// The frames of a video with their current vectors, in time order (none for a photo).
    fn frames_of(&self, id: ImageId) -> Result<Vec<FrameVector>>;

    /// Every stored frame with its current vector, by video id then time.
    fn frame_vectors(&self) -> Records<'_, FrameVector>;

    /// Points `path` at an already stored image (a copy, a move, an unchanged touch), releasing
    /// its previous mapping. When the path already holds that image (a touched file, a file
    /// restored from a backup) only its size and time change.
    fn link_path(&self, path: &Path, id: ImageId, size: u64, mtime_ns: i64) -> Result<()>;

    /// [`Backend::link_path`] for a file a pass found holding stored content, dating the image
    /// by it: when `path` held that image already and its modification time moved (a `touch`,
    /// a date set by a photo tool), the record's [`ImageRecord::modified`] becomes that time,
    /// in the same transaction as the mapping, so the timeline and the date filters follow (an
    /// EXIF date, when the photo has one, still wins: [`ImageRecord::date`]). A path new to the
    /// image (a copy, a move) keeps the image's date. Returns whether the image's date moved.
    fn relink_dated(&self, path: &Path, id: ImageId, size: u64, mtime_ns: i64) -> Result<bool>;

    /// Forgets a file (deleted, moved away, or its root removed). The image goes too, with its
    /// vector, tags and caption, when no other file holds it. Returns the mapping it had.
    fn unlink_path(&self, path: &Path) -> Result<Option<PathEntry>>;

    /// Records that `path` could not be indexed in its current state.
    fn record_failure(&self, path: &Path, reason: &str, size: u64, mtime_ns: i64) -> Result<()>;

    /// The failure recorded for `path`, if any.
    fn failure(&self, path: &Path) -> Result<Option<Failure>>;

    /// Forgets a failure (the file is gone).
    fn clear_failure(&self, path: &Path) -> Result<()>;

    /// Every recorded failure, in path order.
    fn failures(&self) -> Result<Vec<(PathBuf, Failure)>>;

    /// What the store holds.
    fn counts(&self) -> Result<StoreCounts>;

    /// Makes everything written so far durable.
    fn flush(&self) -> Result<()>;

    /// Checks the store's invariants: every image has a vector, a hash entry and at least one
    /// path; every path points at a stored image; no vector or tags without an image. Returns
    /// the problems found.
    fn check(&self) -> Result<Vec<String>>;

    /// The `k` images whose current vectors are nearest to `query` (a unit vector) among those
    /// passing `filter`, best first, when the database searches by itself (PostgreSQL with
    /// pgvector); `None` when the library's own index answers (the folder store).
    fn nearest(&self, _query: &[f32], _k: usize, _filter: &SearchFilter) -> Result<Option<Vec<SearchHit>>> {
        Ok(None)
    }

    /// Keeps the database's own vector index: builds it once the current generation holds
    /// `min_vectors` vectors, drops those of other generations. `None` when there is no such
    /// index (the library keeps its graph beside the store).
    fn maintain_vector_index(&self, _min_vectors: usize) -> Result<Option<IndexState>> {
        Ok(None)
    }

    /// The database's own vector index as [`Backend::maintain_vector_index`] would find it,
    /// changing nothing.
    fn vector_index_state(&self, _min_vectors: usize) -> Result<Option<IndexState>> {
        Ok(None)
    }

    /// The queue through which several processes share indexing (PostgreSQL); `None` when
    /// this process is the library's only writer (the folder store's lock sees to that).
    fn work_queue(&self) -> Option<&dyn WorkQueue> {
        None
    }
}

/// The newest `limit` records of `records` ordered after `before`, newest first (the order of
/// [`Backend::timeline`]): one pass, holding no more than `limit` records.
pub fn newest_records(
    records: Records<'_, ImageRecord>,
    before: Option<(i64, ImageId)>,
    limit: usize,
) -> Result<Vec<(ImageId, ImageRecord)>> {
    use std::cmp::Reverse;
    use std::collections::BinaryHeap;
    // A min-heap on (date, id): its top is the oldest kept, dropped when a newer one comes.
    let mut kept: BinaryHeap<Reverse<(i64, ImageId)>> = BinaryHeap::with_capacity(limit + 1);
    let mut records_of = std::collections::HashMap::with_capacity(limit + 1);
    for item in records {
        let (id, record) = item?;
        let key = (record.date(), id);
        if before.is_some_and(|b| key >= b) || limit == 0 {
            continue;
        }
        if kept.len() == limit {
            match kept.peek() {
                Some(Reverse(oldest)) if *oldest < key => {
                    if let Some(Reverse((_, dropped))) = kept.pop() {
                        records_of.remove(&dropped);
                    }
                }
                _ => continue,
            }
        }
        kept.push(Reverse(key));
        records_of.insert(id, record);
    }
    let mut newest: Vec<(i64, ImageId)> = kept.into_iter().map(|Reverse(k)| k).collect();
    newest.sort_unstable_by(|a, b| b.cmp(a));
    Ok(newest.into_iter().filter_map(|(_, id)| records_of.remove(&id).map(|r| (id, r))).collect())
}

/// How many of `records` fall in each month, newest month first.
fn count_months(records: Records<'_, ImageRecord>) -> Result<Vec<(String, u64)>> {
    let mut counts = std::collections::BTreeMap::<String, u64>::new();
    for item in records {
        let (_, record) = item?;
        *counts.entry(month_of(record.date())).or_default() += 1;
    }
    Ok(counts.into_iter().rev().collect())
}

/// The records of the images with a file at or under `folder`, each once.
fn records_under<'a, B: Backend + ?Sized>(store: &'a B, folder: &Path) -> Result<Records<'a, ImageRecord>> {
    let mut seen = std::collections::HashSet::new();
    let ids: Vec<ImageId> =
        store.paths_under(folder)?.into_iter().map(|(_, e)| e.id).filter(|id| seen.insert(*id)).collect();
    Ok(Box::new(ids.into_iter().filter_map(move |id| store.image(id).transpose().map(|r| r.map(|r| (id, r))))))
}

/// The month of a date (seconds since the epoch, read as UTC) as `YYYY-MM`.
pub fn month_of(date: i64) -> String {
    match chrono::DateTime::from_timestamp(date, 0) {
        Some(t) if (FIRST_DATE..=LAST_DATE).contains(&date) => t.format("%Y-%m").to_string(),
        // Outside years 1 to 9999 (a corrupt EXIF date): grouped apart, never an error.
        _ => UNDATED_MONTH.to_string(),
    }
}

/// The month of dates outside years 1 to 9999.
pub const UNDATED_MONTH: &str = "0000-00";
/// 0001-01-01T00:00:00Z and 9999-12-31T23:59:59Z: the dates [`month_of`] names a month of.
pub const FIRST_DATE: i64 = -62_135_596_800;
pub const LAST_DATE: i64 = 253_402_300_799;

/// A file to embed: its path, and its size and modification time when it was listed.
pub type Job = (PathBuf, u64, i64);

/// Held while this process scans a root; dropping it lets another process scan it.
pub type RootLock = Box<dyn Send>;

/// Work shared by every process indexing one library (see `migrations/postgres/0002_jobs.sql`).
pub trait WorkQueue: Sync {
    /// The right to scan `root` (list its files and forget the deleted ones), held until the
    /// lock is dropped; `None` while another process holds it. A process that dies releases it.
    fn lock_root(&self, root: &Path) -> Result<Option<RootLock>>;

    /// Whether some process holds the scanning lock of one of `roots` (without taking it).
    fn being_scanned(&self, roots: &[PathBuf]) -> Result<bool>;

    /// Queues files to embed, replacing an older job of the same path.
    fn enqueue(&self, jobs: &[Job]) -> Result<()>;

    /// Claims up to `n` jobs that no live lease holds, for `lease`.
    fn claim(&self, worker: &str, n: usize, lease: std::time::Duration) -> Result<Vec<Job>>;

    /// Whether `worker` still holds the lease of each of `paths`, in one round trip: `false`
    /// when the lease ran out (another worker may have it now), and the caller discards its
    /// result. A worker checks before it commits and ends the jobs ([`WorkQueue::finish`])
    /// only after: killed in between, its jobs go back to the queue with its session, and the
    /// next worker finds their contents stored (a link, no embedding).
    fn held(&self, worker: &str, paths: &[&Path]) -> Result<Vec<bool>>;

    /// Ends the jobs of `paths` that `worker` still holds the lease of, in one round trip:
    /// for each path, `true` when it did.
    fn finish(&self, worker: &str, paths: &[&Path]) -> Result<Vec<bool>>;

    /// Jobs waiting, jobs leased, and the workers holding leases.
    fn job_counts(&self) -> Result<JobCounts>;
}

/// The state of the shared work queue (`stats --json`: `"jobs"`).
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct JobCounts {
    /// Files queued and not claimed (or whose lease ran out).
    pub pending: u64,
    /// Files claimed under a live lease.
    pub leased: u64,
    /// The workers holding live leases.
    pub workers: Vec<String>,
}

/// Zero-shot tags: each image's confident tags with the vocabulary fingerprint they came from,
/// an index from label to images, and a bounded cache of label embeddings.
pub trait TagStore {
    /// Replaces an image's tags, recording the vocabulary fingerprint they came from. Returns
    /// false (and stores nothing) when the image is no longer stored.
    fn set_tags(&self, id: ImageId, vocabulary: &str, tags: &[Tag]) -> Result<bool>;

    /// Removes every image's tags (a new vocabulary, or auto-tagging switched off).
    fn clear_tags(&self) -> Result<()>;

    /// An image's tags, most probable first, and the vocabulary fingerprint they came from.
    fn tags_of(&self, id: ImageId) -> Result<Option<(String, Vec<Tag>)>>;

    /// Whether an image carries a tag.
    fn has_tag(&self, id: ImageId, label: &str) -> Result<bool>;

    /// Whether any image carries a tag.
    fn tag_in_use(&self, label: &str) -> Result<bool>;

    /// The images carrying a tag, most probable first (ties by id).
    fn images_tagged(&self, label: &str) -> Result<Vec<(ImageId, f32)>>;

    /// Every label in use with its number of images, most frequent first (ties by label).
    fn tag_counts(&self) -> Result<Vec<TagCount>>;

    /// Cached label embeddings under `prefix` (model and prompt set), `None` where missing.
    fn cached_label_embeddings(&self, prefix: &str, labels: &[String]) -> Result<Vec<Option<Vec<f32>>>>;

    /// Caches label embeddings under `prefix`. The cache is bounded: when it would pass
    /// [`MAX_CACHED_LABELS`] it starts over (whoever asks for labels again re-embeds them), so
    /// requests with ever new labels cannot grow the database without end.
    fn cache_label_embeddings(&self, prefix: &str, labels: &[String], embeddings: &[Vec<f32>]) -> Result<()>;
}

/// Most label embeddings the cache keeps (about 40 MB of 512-d vectors).
pub const MAX_CACHED_LABELS: usize = 20_000;

/// BLIP captions: one per image, with the settings fingerprint it was made with.
pub trait CaptionStore {
    /// Stores an image's caption. Returns false (and stores nothing) when the image is no
    /// longer stored (it went away while being captioned).
    fn set_caption(&self, id: ImageId, caption: &StoredCaption) -> Result<bool>;

    /// An image's caption.
    fn caption_of(&self, id: ImageId) -> Result<Option<StoredCaption>>;

    /// Every stored caption, in id order.
    fn captions(&self) -> Records<'_, StoredCaption>;

    /// Moves whenever a caption is written (for in-memory caption rankings; captions of removed
    /// images are filtered out when results are resolved to paths).
    fn caption_changes(&self) -> Result<u64>;
}

/// Switching the library to another model without a gap: `reindex` writes the new model's
/// vectors beside the current ones, which keep answering, then one atomic switch makes them
/// current. An interrupted re-indexing resumes where it stopped; one towards another model
/// starts afresh.
pub trait ReindexStore {
    /// Which generation of vectors is current (0 until the first model switch).
    fn vectors_generation(&self) -> Result<u32>;

    /// The re-indexing under way, if any.
    fn reindex_target(&self) -> Result<Option<ReindexTarget>>;

    /// Starts (or resumes, for the same target) writing vectors for `target`.
    fn begin_reindex(&self, target: &ReindexTarget) -> Result<()>;

    /// Abandons the re-indexing under way and its vectors.
    fn cancel_reindex(&self) -> Result<()>;

    /// Stored images that have no vector of the next model yet, in id order.
    fn images_without_next_vector(&self) -> Result<Vec<ImageId>>;

    /// Vectors of the next model written so far.
    fn next_vector_count(&self) -> Result<u64>;

    /// Stores an image's vector of the next model; false (nothing stored) when the image went
    /// away meanwhile.
    fn put_next_vector(&self, id: ImageId, vector: &[f32]) -> Result<bool> {
        self.put_next_vectors(id, vector, &[])
    }

    /// [`ReindexStore::put_next_vector`] for a video: with its frames' vectors of the next
    /// model, in one transaction.
    fn put_next_vectors(&self, id: ImageId, vector: &[f32], frames: &[FrameVector]) -> Result<bool>;

    /// Makes the next model's vectors current, if every stored image has one; returns false
    /// (and changes nothing) when some image still lacks one, e.g. one indexed meanwhile. No
    /// image can be committed halfway through the switch. Clears the model fingerprint (the
    /// caller records the new model's).
    fn switch_to_next_vectors(&self) -> Result<bool>;
}

/// Vectors of the library's images under other models than the library's own (a fine-tuned
/// CLIP that re-ranks searches): a cache, so that a second query with the same model costs only
/// the text.
pub trait ModelVectorStore {
    /// The cached vectors of `ids` under `model` (`None` where not cached).
    fn model_vectors(&self, model: &str, ids: &[ImageId]) -> Result<Vec<Option<Vec<f32>>>>;

    /// Caches vectors of images under `model` (those of images no longer stored are skipped).
    fn cache_model_vectors(&self, model: &str, vectors: &[(ImageId, Vec<f32>)]) -> Result<()>;

    /// Drops cached vectors of images that are no longer stored; returns how many.
    fn prune_model_vectors(&self) -> Result<usize>;

    /// How many vectors of other models are cached.
    fn model_vector_count(&self) -> Result<u64>;
}
