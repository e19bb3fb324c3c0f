//! Keeping the store in step with the photo folders.
//!
//! A pass walks every root, and for each image file decides from the store alone what to do:
//! unchanged (same size and modification time) or failed in the same state: nothing; otherwise
//! its bytes are hashed, and a content already stored is only linked to the path (a copy, a
//! move, a rename: no embedding), while a new content is decoded on a thread pool, embedded in
//! batches and committed, record + vector + path in one transaction. Files the pass did not
//! see under a root that still exists are forgotten; a root that is missing (an unplugged
//! drive) is left as it is, and so is one that looks like an unmounted drive: it yields no
//! image file while the store holds photos under it, or it sits on another file-system device
//! than when it was last indexed, or it vanished during the pass. `--prune` (`IndexOptions::prune`)
//! forgets those photos when the user means it. Bad files are recorded in `failures` and
//! retried only once their size or modification time changes.

use crate::photo::companions;
use crate::store::{LivePair, LivePairs};
pub mod reembed;
pub mod videos;
pub mod watch;

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::time::UNIX_EPOCH;

use candle_core::Tensor;
use rayon::prelude::*;

use crate::error::{Error, ImageProblem, Result};
use crate::models::clip::ClipEmbedder;
use crate::photo::{DecodeOptions, check_raw_preview, decode_photo, read_exif, read_image_file};
use crate::store::{ImageRecord, Store};
use crate::video::{SampleOptions, VideoInfo};

/// File extensions the indexer looks at (case-insensitive): the photo formats of phones and
/// cameras, camera RAW included. What a file is, is decided by its content, not by this list.
pub const IMAGE_EXTENSIONS: &[&str] = &[
    "jpg", "jpeg", "jpe", "jfif", "png", "webp", "gif", "bmp", "tif", "tiff", "heic", "heif", "hif", "avif", "jxl",
    "dng", "cr2", "cr3", "nef", "nrw", "arw", "srf", "sr2", "pef", "srw", "orf", "rw2", "raf",
];

/// How a pass runs.
#[derive(Debug, Clone, Copy)]
pub struct IndexOptions {
    /// Decoding limits; `min_side` enables the reduced-scale JPEG decoding.
    pub decode: DecodeOptions,
    /// Images embedded per model call.
    pub batch_size: usize,
    /// Forget the photos of roots that exist but look unmounted (empty, or on another
    /// device): the user says the photos are really gone.
    pub prune: bool,
    /// How videos are sampled (`--video-interval`, `--video-max-frames`).
    pub video: SampleOptions,
}

/// What a pass did.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct IndexReport {
    /// Image files seen.
    pub seen: u64,
    /// Unchanged since the last pass.
    pub unchanged: u64,
    /// New contents embedded (photos and videos).
    pub embedded: u64,
    /// Of those, videos.
    pub videos: u64,
    /// Video frames sampled and embedded.
    pub frames: u64,
    /// Paths linked to an already stored content (copies, moves, touched files).
    pub linked: u64,
    /// Of those, touched files whose image took its date from the file's new time.
    pub redated: u64,
    /// Paths forgotten (deleted or moved away).
    pub removed: u64,
    /// Files that failed in this pass.
    pub failed: u64,
    /// Files skipped because they failed before in the same state.
    pub skipped_failures: u64,
    /// Roots that do not exist now, or that look unmounted (no image file while the store
    /// holds photos there, or another device than before): their photos are left untouched.
    #[serde(serialize_with = "crate::path_text::display_list")]
    pub missing_roots: Vec<PathBuf>,
    /// Images auto-tagged after the pass (when `clipdex autotag` has been set up).
    pub tagged: u64,
    /// Images captioned after the pass (`clipdex index`, when `caption --library` has switched
    /// captioning on; `watch` and `serve` caption in the background instead).
    pub captioned: u64,
    /// Images whose text was read after the pass (when an OCR model is set for the library).
    pub text_read: u64,
    /// Images looked at for faces after the pass (when a face model is set for the library).
    pub faces_scanned: u64,
    /// Roots another process was scanning (PostgreSQL: one process scans a root at a time;
    /// this one helped embed what that one queued).
    #[serde(serialize_with = "crate::path_text::display_list")]
    pub busy_roots: Vec<PathBuf>,
    /// Results thrown away because this process's claim on the file ran out before it was
    /// done (another process may have it now).
    pub discarded: u64,
    /// Queued files a worker could not read (left to the process that scans their folder).
    pub unreadable: u64,
}

/// How `clipdex worker` runs.
#[derive(Debug, Clone, Default)]
pub struct WorkerOptions {
    /// Path prefixes as the library records them, and where this machine sees them
    /// (`--path-map FROM=TO`); the first match applies.
    pub path_map: Vec<(PathBuf, PathBuf)>,
    /// End when the queue is empty instead of waiting for more.
    pub once: bool,
}

impl WorkerOptions {
    /// Where this machine reads `path`, when a mapping applies.
    pub fn local_path(&self, path: &Path) -> Option<PathBuf> {
        self.path_map.iter().find_map(|(from, to)| path.strip_prefix(from).ok().map(|rest| to.join(rest)))
    }
}

/// `clipdex worker`: embeds what the processes scanning a shared library's folders queue,
/// without scanning anything itself (a GPU machine that sees the photos over a network share).
/// Runs until `stop` (or, with `once`, until the queue is empty); `on_batch` sees the running
/// totals after every batch. Nothing is forgotten or recorded as failed for want of reading a
/// file here: that is for the scanner to judge.
pub fn work(
    store: &Store,
    clip: &ClipEmbedder,
    options: &IndexOptions,
    worker_options: &WorkerOptions,
    stop: &std::sync::atomic::AtomicBool,
    on_batch: &mut dyn FnMut(&IndexReport),
) -> Result<IndexReport> {
    let Some(q) = store.work_queue() else {
        return Err(Error::Invalid(
            "a worker helps the indexers of a PostgreSQL library; a folder library has one indexing process".into(),
        ));
    };
    let (worker, lease) = (worker_name(), lease());
    let mut report = IndexReport::default();
    while !stop.load(std::sync::atomic::Ordering::Relaxed) {
        let claimed = q.claim(&worker, options.batch_size.max(1), lease)?;
        if claimed.is_empty() {
            if worker_options.once {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(500));
            continue;
        }
        let chunk: Vec<Candidate> = claimed
            .into_iter()
            .map(|(path, size, mtime_ns)| {
                let read_from = worker_options.local_path(&path);
                Candidate { path, size, mtime_ns, read_from }
            })
            .collect();
        process_batch(store, clip, options, &chunk, &mut report, Some((q, &worker)), false)?;
        store.flush()?;
        on_batch(&report);
    }
    Ok(report)
}

/// How long a claim on a queued file lasts (`CLIPDEX_LEASE_SECS`, default 600): a process
/// that dies leaves its files to others after that.
fn lease() -> std::time::Duration {
    let secs = std::env::var("CLIPDEX_LEASE_SECS").ok().and_then(|s| s.parse::<f64>().ok()).filter(|s| *s > 0.0);
    std::time::Duration::from_secs_f64(secs.unwrap_or(600.0))
}

/// This process's name in the work queue: host and process id.
fn worker_name() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .or_else(|| std::env::var("HOSTNAME").ok())
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "host".into());
    format!("{host}:{}", std::process::id())
}

/// Progress callback: `(files done, files to do)`.
pub type Progress<'a> = &'a (dyn Fn(u64, u64) + Sync);

struct Candidate {
    path: PathBuf,
    size: u64,
    mtime_ns: i64,
    /// Where this machine reads it, when that differs from `path` (`worker --path-map`).
    read_from: Option<PathBuf>,
}

enum Prepared {
    Known {
        id: u64,
    },
    New {
        record: ImageRecord,
        pixels: Tensor,
    },
    /// A video to sample and embed (after the batch's photos, one at a time).
    NewVideo {
        record: ImageRecord,
        info: VideoInfo,
    },
    Failed(String),
    /// Deleted since the scan listed it.
    Vanished,
    /// A worker (which did not scan) cannot read it: whether the file is gone or this
    /// machine's view of the share is wrong is for the scanner to say.
    Unreadable(String),
}

pub(crate) fn is_image_file(path: &Path) -> bool {
    path.extension()
        .and_then(|e| e.to_str())
        .is_some_and(|e| IMAGE_EXTENSIONS.iter().any(|x| x.eq_ignore_ascii_case(e)))
}

/// Whether a pass looks at a file: a photo or a video, by its extension.
pub(crate) fn is_media_file(path: &Path) -> bool {
    is_image_file(path) || videos::is_video_file(path)
}

/// A file's modification time in nanoseconds since the epoch, as the store records it.
pub(crate) fn mtime_ns(meta: &std::fs::Metadata) -> i64 {
    meta.modified().ok().and_then(|t| t.duration_since(UNIX_EPOCH).ok()).map(|d| d.as_nanos() as i64).unwrap_or(0)
}

/// Runs one pass over every root of the store.
pub fn index_pass(
    store: &Store,
    clip: &ClipEmbedder,
    options: &IndexOptions,
    progress: Progress,
) -> Result<IndexReport> {
    let mut report = IndexReport::default();
    let mut todo = Vec::new();
    let mut scanned = Vec::new();
    let queue = store.work_queue();
    for root in store.roots()? {
        let Some(device) = root_device(&root) else {
            tracing::warn!("root {} is missing; leaving its images in place", root.display());
            report.missing_roots.push(root);
            continue;
        };
        if !options.prune
            && let Some(before) = store.root_device(&root)?
            && before != device
        {
            tracing::warn!(
                "root {} is on another device than when it was indexed (an unmounted drive?); leaving \
                 its images in place (`clipdex index --prune` forgets them)",
                root.display()
            );
            report.missing_roots.push(root);
            continue;
        }
        // With several processes on one library (PostgreSQL), one scans a root at a time: two
        // scans of one root could each forget a file the other had just added.
        let lock = match queue {
            Some(q) => match q.lock_root(&root)? {
                Some(lock) => Some(lock),
                None => {
                    report.busy_roots.push(root);
                    continue;
                }
            },
            None => None,
        };
        let mut seen = HashSet::new();
        let seen_before = report.seen;
        scan_root(store, &root, &mut seen, &mut todo, &mut report)?;
        let stored = store.paths_under(&root)?.len();
        if report.seen == seen_before && stored > 0 && !options.prune {
            tracing::warn!(
                "root {} holds no photo now but the library has {stored} there (an unmounted drive?); leaving \
                 them in place (`clipdex index --prune` forgets them)",
                root.display()
            );
            report.missing_roots.push(root);
            continue;
        }
        scanned.push((root, device, seen, lock));
    }
    // New and changed files first: a moved file's new path then links to its stored image
    // before the old path is released, so the move costs no embedding.
    let total = todo.len() as u64;
    let mut done = 0u64;
    let mut vanished = HashSet::new();
    progress(0, total);
    match queue {
        None => {
            for chunk in todo.chunks(options.batch_size.max(1)) {
                vanished.extend(process_batch(store, clip, options, chunk, &mut report, None, true)?);
                store.flush()?;
                done += chunk.len() as u64;
                progress(done, total);
            }
        }
        Some(q) => {
            // Shared work: queue what this scan found, then embed batches claimed from the
            // queue (this scan's files, and those of roots other processes scan) until none
            // is left and no other process is still scanning a root of this library.
            q.enqueue(&todo.iter().map(|c| (c.path.clone(), c.size, c.mtime_ns)).collect::<Vec<_>>())?;
            let (worker, lease) = (worker_name(), lease());
            loop {
                let claimed = q.claim(&worker, options.batch_size.max(1), lease)?;
                if claimed.is_empty() {
                    if !q.being_scanned(&report.busy_roots)? {
                        break;
                    }
                    std::thread::sleep(std::time::Duration::from_millis(100));
                    continue;
                }
                let chunk: Vec<Candidate> = claimed
                    .into_iter()
                    .map(|(path, size, mtime_ns)| Candidate { path, size, mtime_ns, read_from: None })
                    .collect();
                vanished.extend(process_batch(store, clip, options, &chunk, &mut report, Some((q, &worker)), true)?);
                store.flush()?;
                done += chunk.len() as u64;
                progress(done, total.max(done));
            }
        }
    }
    // Then forget what is no longer there: deleted, moved out, renamed. A root that vanished
    // while the pass ran is held like a missing one, and so are the files of held roots nested
    // in a scanned one (the scan of the outer root did not see them).
    let mut held = report.missing_roots.clone();
    let mut forget = Vec::new();
    for (root, device, seen, lock) in scanned {
        if root_device(&root) != Some(device) {
            tracing::warn!("root {} vanished during the pass; leaving its images in place", root.display());
            report.missing_roots.push(root.clone());
            held.push(root);
        } else {
            forget.push((root, device, seen, lock));
        }
    }
    for (root, device, seen, _lock) in forget {
        store.set_root_device(&root, device)?;
        for (path, _) in store.paths_under(&root)? {
            let gone = !seen.contains(&path) || vanished.contains(&path);
            if gone && !held.iter().any(|h| path.starts_with(h)) {
                store.unlink_path(&path)?;
                report.removed += 1;
            }
        }
        for (path, _) in store.failures()? {
            if path.starts_with(&root) && !seen.contains(&path) && !held.iter().any(|h| path.starts_with(h)) {
                store.clear_failure(&path)?;
            }
        }
    }
    store.flush()?;
    Ok(report)
}

/// The device of a root that is a folder now, `None` when it is missing (or not a folder).
fn root_device(root: &Path) -> Option<u64> {
    let meta = std::fs::metadata(root).ok().filter(|m| m.is_dir())?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::MetadataExt;
        Some(meta.dev())
    }
    #[cfg(not(unix))]
    {
        drop(meta);
        Some(0)
    }
}

fn scan_root(
    store: &Store,
    root: &Path,
    seen: &mut HashSet<PathBuf>,
    todo: &mut Vec<Candidate>,
    report: &mut IndexReport,
) -> Result<()> {
    let known = store
        .live_pairs(root)?
        .into_iter()
        .filter_map(|(still, pair)| Some((still, (pair.video, pair.mtimes.filter(|_| pair.by_identifier)?))))
        .collect();
    let mut groups = companions::FolderGroups::for_scan(known);
    let mut live = LivePairs::new();
    // A link to a folder is followed only where it stays inside the library's folders: one to
    // a folder elsewhere (`/`, `/proc`, a whole disk, a loop through the parent) is never
    // walked, and is reported as a failure of the link. A link to a file is followed wherever
    // it leads (a linked album, a git-annex library): the user put it there, and the server
    // serves such a file only while its content is the one indexed.
    let roots = store.roots()?;
    let mut outside = Vec::new();
    let walk = walkdir::WalkDir::new(root).follow_links(true).into_iter().filter_entry(|e| {
        if !e.path_is_symlink() || !e.file_type().is_dir() {
            return true;
        }
        match std::fs::canonicalize(e.path()) {
            Ok(target) if !roots.iter().any(|r| target.starts_with(r)) => {
                outside.push((e.path().to_path_buf(), target));
                false
            }
            // Inside, or unreadable (walkdir reports that).
            _ => true,
        }
    });
    for entry in walk {
        let entry = match entry {
            Ok(e) => e,
            Err(e) => {
                // A loop or an unreadable folder: record it, keep walking.
                let path = e.path().map(Path::to_path_buf).unwrap_or_else(|| root.to_path_buf());
                let reason = if e.loop_ancestor().is_some() {
                    "symbolic link loop".to_string()
                } else {
                    match e.io_error().map(|io| io.kind()) {
                        Some(std::io::ErrorKind::PermissionDenied) => "permission denied".to_string(),
                        _ => e.to_string(),
                    }
                };
                seen.insert(path.clone());
                report.seen += 1;
                if store.failure(&path)?.map(|f| f.reason) != Some(reason.clone()) {
                    store.record_failure(&path, &reason, 0, 0)?;
                    report.failed += 1;
                } else {
                    report.skipped_failures += 1;
                }
                continue;
            }
        };
        if !entry.file_type().is_file() || !is_media_file(entry.path()) {
            continue;
        }
        let path = entry.into_path();
        if let companions::Role::Companion { still, live_video } = groups.role(&path)
            // A RAW whose JPEG twin cannot be decoded is the pair's item itself (its preview).
            && (live_video || !failed_as_it_is(store, &still)?)
        {
            // Part of another file's item: seen (its folder still holds it), never embedded,
            // and no longer an item of its own if it was one before the pair formed.
            seen.insert(path.clone());
            keep_companion(store, &path, &still, live_video, report)?;
            if live_video {
                let by_identifier = path.file_stem() != still.file_stem();
                let mtimes = match (companions::modified_ns(&still), companions::modified_ns(&path)) {
                    (Some(s), Some(v)) if by_identifier => Some((s, v)),
                    _ => None,
                };
                live.insert(still, LivePair { video: path, by_identifier, gone: false, mtimes });
            }
            continue;
        }
        seen.insert(path.clone());
        report.seen += 1;
        let meta = match std::fs::metadata(&path) {
            Ok(m) => m,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                // Deleted between the listing and now: not there, so not seen.
                seen.remove(&path);
                report.seen -= 1;
                continue;
            }
            Err(e) => {
                store.record_failure(&path, &format!("cannot read: {e}"), 0, 0)?;
                report.failed += 1;
                continue;
            }
        };
        let (size, mtime) = (meta.len(), mtime_ns(&meta));
        if let Some(entry) = store.path_entry(&path)?
            && entry.size == size
            && entry.mtime_ns == mtime
        {
            report.unchanged += 1;
            continue;
        }
        if let Some(f) = store.failure(&path)?
            && f.size == size
            && f.mtime_ns == mtime
            && !f.reason.starts_with(companions::LIVE_VIDEO_PROBLEM)
        {
            report.skipped_failures += 1;
            continue;
        }
        todo.push(Candidate { path, size, mtime_ns: mtime, read_from: None });
    }
    for (link, target) in outside {
        let reason = format!(
            "{LINK_OUTSIDE}: {} (add that folder with `clipdex add` to index it)",
            crate::path_text::escaped(&target)
        );
        seen.insert(link.clone());
        report.seen += 1;
        if store.failure(&link)?.map(|f| f.reason) != Some(reason.clone()) {
            store.record_failure(&link, &reason, 0, 0)?;
            report.failed += 1;
        } else {
            report.skipped_failures += 1;
        }
    }
    record_live_pairs(store, root, live, seen, report)
}

/// How the recorded failure of a symbolic link to a folder outside every root starts: it is
/// not followed (a link to `/` or to another disk would index what the user did not add).
pub const LINK_OUTSIDE: &str = "not followed: a symbolic link to a folder outside the library's folders";

/// Whether `path` has a failure recorded in its present state (same size and modification
/// time; a Live Photo video's problem does not count: its still is indexed all the same).
fn failed_as_it_is(store: &Store, path: &Path) -> Result<bool> {
    let Some(f) = store.failure(path)? else { return Ok(false) };
    let Ok(meta) = std::fs::metadata(path) else { return Ok(false) };
    Ok(f.size == meta.len() && f.mtime_ns == mtime_ns(&meta) && !f.reason.starts_with(companions::LIVE_VIDEO_PROBLEM))
}

/// Records the Live Photos this scan paired, and reports each still that had a live video at
/// the last scan and has none now because its MOV is gone: a failure of the MOV's path, kept
/// (the path counts as seen) while the still is there without it.
fn record_live_pairs(
    store: &Store,
    root: &Path,
    mut live: LivePairs,
    seen: &mut HashSet<PathBuf>,
    report: &mut IndexReport,
) -> Result<()> {
    let before = store.live_pairs(root)?;
    for (still, pair) in &before {
        if live.contains_key(still) || !seen.contains(still) || pair.video.exists() {
            continue;
        }
        let reason = format!(
            "{}: its MOV is gone (the still {} had it at the last pass)",
            companions::LIVE_VIDEO_PROBLEM,
            crate::path_text::escaped(still)
        );
        if store.failure(&pair.video)?.map(|f| f.reason) != Some(reason.clone()) {
            store.record_failure(&pair.video, &reason, 0, 0)?;
            report.failed += 1;
        }
        seen.insert(pair.video.clone());
        live.insert(still.clone(), LivePair { gone: true, ..pair.clone() });
    }
    if live != before {
        store.set_live_pairs(root, &live)?;
    }
    Ok(())
}

/// A companion file met by the scan: forgotten as an item of its own (a MOV indexed as a
/// video before its still arrived), and a Live Photo's video that cannot be played recorded
/// as a failure naming its still (which is indexed all the same).
fn keep_companion(store: &Store, path: &Path, still: &Path, live_video: bool, report: &mut IndexReport) -> Result<()> {
    if store.path_entry(path)?.is_some() && store.unlink_path(path)?.is_some() {
        report.removed += 1;
    }
    let problem = if live_video { companions::live_video_problem(path) } else { None };
    match problem {
        Some(reason) => {
            let meta = std::fs::metadata(path).ok();
            let (size, mtime) = meta.as_ref().map_or((0, 0), |m| (m.len(), mtime_ns(m)));
            let reason = format!("{reason} ({})", crate::path_text::escaped(still));
            if store.failure(path)?.map(|f| f.reason) != Some(reason.clone()) {
                store.record_failure(path, &reason, size, mtime)?;
                report.failed += 1;
            }
        }
        None => {
            if store.failure(path)?.is_some() {
                store.clear_failure(path)?;
            }
        }
    }
    Ok(())
}

fn prepare(
    store: &Store,
    clip: &ClipEmbedder,
    decode: &DecodeOptions,
    c: &Candidate,
    scanned: bool,
) -> Result<Prepared> {
    if videos::is_video_file(&c.path) {
        return videos::prepare(store, c, scanned);
    }
    let bytes = match read_image_file(c.read_from.as_ref().unwrap_or(&c.path), decode.max_pixels) {
        Ok(b) => b,
        Err(p @ (ImageProblem::NotFound | ImageProblem::PermissionDenied | ImageProblem::Io(_))) if !scanned => {
            return Ok(Prepared::Unreadable(p.to_string()));
        }
        Err(ImageProblem::NotFound) => return Ok(Prepared::Vanished),
        Err(problem) => return Ok(Prepared::Failed(problem.to_string())),
    };
    let hash = blake3::hash(&bytes).to_hex().to_string();
    if let Some(id) = store.id_for_hash(&hash)? {
        return Ok(Prepared::Known { id });
    }
    let started = std::time::Instant::now();
    let photo =
        match decode_photo(&bytes, decode).and_then(|p| check_raw_preview(&bytes, &p, decode.min_side).map(|()| p)) {
            Ok(p) => p,
            Err(problem) => return Ok(Prepared::Failed(problem.to_string())),
        };
    // `RUST_LOG=clipdex=debug` shows what each format costs (tools/bench_index_torch.py reads it).
    tracing::debug!(path = %c.path.display(), ms = started.elapsed().as_secs_f64() * 1e3, "decoded");
    let exif = read_exif(&bytes);
    let (motion_video, motion_video_problem) = match crate::photo::motion::find_motion_video(&bytes) {
        Ok(found) => (found, None),
        Err(reason) => {
            tracing::warn!("{}: {reason}; indexed as a still photo", c.path.display());
            (None, Some(reason))
        }
    };
    let pixels = clip.preprocess(&photo.image)?;
    let record = ImageRecord {
        hash,
        size: bytes.len() as u64,
        width: photo.width,
        height: photo.height,
        modified: ImageRecord::modified_at(c.mtime_ns),
        taken: exif.taken,
        camera: exif.camera,
        gps: exif.gps,
        lens: exif.lens,
        video: None,
        motion_video,
        motion_video_problem,
    };
    Ok(Prepared::New { record, pixels })
}

/// Embeds (or links, or records as failed) a batch of files. With a shared queue, each file's
/// result is kept only if this process still holds its claim (`worker`'s lease).
fn process_batch(
    store: &Store,
    clip: &ClipEmbedder,
    options: &IndexOptions,
    chunk: &[Candidate],
    report: &mut IndexReport,
    queue: Option<(&dyn crate::store::WorkQueue, &str)>,
    scanned: bool,
) -> Result<Vec<PathBuf>> {
    // Jobs a process committed and died before ending: the file is stored as queued, so the
    // job is only ended (and not counted: the scan that queued it counted it).
    let owned;
    let chunk = match queue {
        Some((q, worker)) => {
            let mut todo = Vec::with_capacity(chunk.len());
            let mut done = Vec::new();
            for c in chunk {
                match store.path_entry(&c.path)? {
                    Some(e) if e.size == c.size && e.mtime_ns == c.mtime_ns => done.push(c.path.as_path()),
                    _ => todo.push(c),
                }
            }
            q.finish(worker, &done)?;
            owned = todo;
            owned.as_slice()
        }
        None => {
            owned = chunk.iter().collect();
            owned.as_slice()
        }
    };
    let prepared: Vec<Result<Prepared>> =
        chunk.par_iter().map(|c| prepare(store, clip, &options.decode, c, scanned)).collect();
    let prepared: Vec<Prepared> = prepared.into_iter().collect::<Result<_>>()?;
    // The claims still held, checked in one round trip for the batch; they are ended only once
    // the batch is committed (a process killed in between leaves them to the next one).
    let mut held = vec![true; chunk.len()];
    if let Some((q, worker)) = queue {
        let readable: Vec<usize> =
            (0..chunk.len()).filter(|&i| !matches!(prepared[i], Prepared::Unreadable(_))).collect();
        let paths: Vec<&Path> = readable.iter().map(|&i| chunk[i].path.as_path()).collect();
        for (i, still) in readable.into_iter().zip(q.held(worker, &paths)?) {
            held[i] = still;
        }
    }
    let done: Vec<&Path> = chunk
        .iter()
        .zip(&held)
        .zip(&prepared)
        .filter_map(|((c, held), p)| (*held && !matches!(p, Prepared::Unreadable(_))).then_some(c.path.as_path()))
        .collect();
    let mut fresh = Vec::new();
    let mut new_videos = Vec::new();
    let mut vanished = Vec::new();
    let mut fallbacks = Vec::new();
    for ((c, p), held) in chunk.iter().zip(prepared).zip(held) {
        if let Prepared::Unreadable(reason) = &p {
            // Left claimed: after the lease another process (the scanner) takes it.
            tracing::warn!("cannot read {} here ({reason}); left to other processes", c.path.display());
            report.unreadable += 1;
            continue;
        }
        if !held {
            report.discarded += 1;
            continue;
        }
        match p {
            Prepared::Vanished => {
                report.seen = report.seen.saturating_sub(1);
                vanished.push(c.path.clone());
                // Another process may have scanned it: forget it here.
                if queue.is_some() && store.unlink_path(&c.path)?.is_some() {
                    report.removed += 1;
                }
            }
            Prepared::Known { id } => {
                // A touched file re-dates its image (a scan re-dated by hand, a photo tool's
                // date fix): its content is the same, so the file's time is the news.
                if store.relink_dated(&c.path, id, c.size, c.mtime_ns)? {
                    report.redated += 1;
                }
                report.linked += 1;
            }
            Prepared::Failed(reason) => {
                tracing::debug!("{}: {reason}", c.path.display());
                store.record_failure(&c.path, &reason, c.size, c.mtime_ns)?;
                report.failed += 1;
                fallbacks.extend(raw_twin(c));
            }
            Prepared::New { record, pixels } => fresh.push((c, record, pixels)),
            Prepared::NewVideo { record, info } => new_videos.push((c, record, info)),
            Prepared::Unreadable(_) => unreachable!("skipped above"),
        }
    }
    // Identical new files in one batch: embed the content once, link the others after it.
    let mut seen_hashes = HashSet::new();
    let (unique, copies): (Vec<_>, Vec<_>) =
        fresh.into_iter().partition(|(_, r, _)| seen_hashes.insert(r.hash.clone()));
    if !unique.is_empty() {
        let pixels = Tensor::stack(&unique.iter().map(|(_, _, p)| p.clone()).collect::<Vec<_>>(), 0)?;
        let vectors = clip.embed_pixels(&pixels)?;
        for ((c, record, _), vector) in unique.iter().zip(vectors) {
            store.commit_image(&c.path, c.size, c.mtime_ns, record, &vector)?;
            report.embedded += 1;
        }
    }
    for (c, record, _) in copies {
        let id = store.id_for_hash(&record.hash)?.ok_or_else(|| Error::Store(format!("{} vanished", record.hash)))?;
        store.link_path(&c.path, id, c.size, c.mtime_ns)?;
        report.linked += 1;
    }
    for (c, mut record, info) in new_videos {
        // A copy of a video embedded earlier in this batch: linked.
        if let Some(id) = store.id_for_hash(&record.hash)? {
            store.link_path(&c.path, id, c.size, c.mtime_ns)?;
            report.linked += 1;
            continue;
        }
        let path = c.read_from.as_ref().unwrap_or(&c.path);
        if info.duration > options.video.keyframes_after {
            tracing::info!(
                "{}: a video of {:.0} min, sampled among its keyframes (at most {} frames)",
                c.path.display(),
                info.duration / 60.0,
                options.video.max_frames
            );
        }
        match videos::embed_video(clip, path, &info, &options.video, options.batch_size)? {
            Ok(embedded) => {
                if let Some(meta) = record.video.as_mut() {
                    meta.poster = embedded.poster;
                }
                store.commit_with_frames(&c.path, c.size, c.mtime_ns, &record, &embedded.vector, &embedded.frames)?;
                report.embedded += 1;
                report.videos += 1;
                report.frames += embedded.frames.len() as u64;
            }
            Err(problem) => {
                tracing::debug!("{}: {problem}", c.path.display());
                store.record_failure(&c.path, &problem.to_string(), c.size, c.mtime_ns)?;
                report.failed += 1;
            }
        }
    }
    if let Some((q, worker)) = queue {
        q.finish(worker, &done)?;
    }
    if !fallbacks.is_empty() {
        // The RAWs of pairs whose JPEG failed: each is the item now (the scan took it for a
        // companion, so it was not counted as seen). Nobody queued them: no claim to check.
        report.seen += fallbacks.len() as u64;
        vanished.extend(process_batch(store, clip, options, &fallbacks, report, None, scanned)?);
    }
    Ok(vanished)
}

/// The RAW of a RAW+JPEG pair whose JPEG is `c`, to index in its place (the JPEG failed).
fn raw_twin(c: &Candidate) -> Option<Candidate> {
    let read = c.read_from.as_ref().unwrap_or(&c.path);
    let raw = companions::companions_of(read).raw_path?;
    let meta = std::fs::metadata(&raw).ok().filter(|m| m.is_file())?;
    let path = c.path.with_file_name(raw.file_name()?);
    let read_from = c.read_from.is_some().then_some(raw);
    Some(Candidate { path, size: meta.len(), mtime_ns: mtime_ns(&meta), read_from })
}

/// A folder the user names as a root, in the form the library records roots: absolute, with
/// symbolic links resolved; when it no longer exists, absolute with `.` and `..` resolved by
/// name (`remove` of a folder that was deleted).
pub fn root_path(path: &Path) -> PathBuf {
    if let Ok(p) = std::fs::canonicalize(path) {
        return p;
    }
    let absolute = std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf());
    let mut normal = PathBuf::new();
    for c in absolute.components() {
        match c {
            std::path::Component::ParentDir => {
                normal.pop();
            }
            std::path::Component::CurDir => {}
            c => normal.push(c),
        }
    }
    normal
}

/// Canonical form of a root as the user typed it (absolute, symlinks resolved).
pub fn canonical_root(path: &Path) -> Result<PathBuf> {
    let p = std::fs::canonicalize(path).map_err(|e| {
        let message = format!("{}: cannot use as a photo folder: {e}", path.display());
        if e.kind() == std::io::ErrorKind::NotFound { Error::NotFound(message) } else { Error::Invalid(message) }
    })?;
    if !p.is_dir() {
        return Err(Error::NotFound(format!("{}: no folder there (a file is)", path.display())));
    }
    Ok(p)
}
