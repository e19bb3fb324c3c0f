//! Near-duplicates in the library (see [`crate::query::duplicates`] for how pairs are found
//! and confirmed): finding the groups, remembering groups the user says are not duplicates,
//! and moving the extra copies out of the library, recorded so that it can be undone.
//!
//! clipdex never deletes a photo. A move writes its intent to a journal in the destination
//! folder before touching the file, never replaces an existing file, and copies across file
//! systems before removing the original, so at every moment at least one whole copy exists.

use std::collections::{HashMap, HashSet};
use std::io::Write;
use std::path::{Path, PathBuf};

use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use super::Library;
use crate::error::{Error, Result};
use crate::indexer::{self, Progress};
use crate::query::SearchFilter;
use crate::query::duplicates::{
    DuplicateGroup, DuplicateImage, DuplicateReport, MAX_HASH_DISTANCE, NEIGHBOURS, best_first, group_pairs,
    hash_distance, hash_from_vector, hash_to_vector, perceptual_hash,
};
use crate::store::{ImageId, ImageRecord};

/// The name the perceptual hashes are cached under among the vectors of other models.
pub const HASH_CACHE: &str = "clipdex:phash-dct64";

/// The setting holding the groups the user marked as not duplicates (as content hashes, which
/// survive re-indexing).
pub(crate) const DISMISSED_SETTING: &str = "duplicates_dismissed";

/// The journal a move keeps in its destination folder.
pub const MOVE_JOURNAL: &str = "clipdex-moves.jsonl";

/// The short side photos are decoded at for hashing (the hash looks at 32 × 32 pixels).
const HASH_DECODE_SIDE: u32 = 64;

#[derive(Debug, Default, Serialize, Deserialize)]
struct Dismissed {
    groups: Vec<Vec<String>>,
}

/// One file a move put away (a line of the journal).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct MovedFile {
    /// Where it was in the library (a still's companion file, its Live Photo MOV or its RAW,
    /// moves with it and has a line of its own, with the still's id and hash).
    pub from: PathBuf,
    /// Where it is now.
    pub to: PathBuf,
    /// The image it held.
    pub id: ImageId,
    /// The image's content hash (blake3).
    pub hash: String,
}

/// A file left where it was, and why.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct SkippedFile {
    /// The file.
    pub path: PathBuf,
    /// Why it was not moved.
    pub reason: String,
}

/// What `duplicates --move-to` or `--restore` did.
#[derive(Debug, Clone, Default, Serialize)]
pub struct MoveReport {
    /// Files moved (away, or back).
    pub moved: Vec<MovedFile>,
    /// Files left alone.
    pub skipped: Vec<SkippedFile>,
    /// The journal.
    pub journal: PathBuf,
}

impl Library {
    /// Groups of near-duplicate photos: pairs whose stored vectors have a cosine of at least
    /// `threshold`, confirmed by perceptual hashes at most [`MAX_HASH_DISTANCE`] bits apart,
    /// joined transitively; groups the user dismissed are left out. Only stored vectors are
    /// read (no model is loaded); photos are decoded once for their hash, which is cached.
    pub fn duplicates(&self, threshold: f32, progress: Progress) -> Result<DuplicateReport> {
        if !(threshold > 0.0 && threshold <= 1.0) {
            return Err(Error::Invalid(format!("the similarity threshold must be in (0, 1], not {threshold}")));
        }
        let records: HashMap<ImageId, ImageRecord> = self.store.images().collect::<Result<_>>()?;
        let ids: Vec<ImageId> = records.keys().copied().collect();
        let done = std::sync::atomic::AtomicU64::new(0);
        let total = ids.len() as u64;
        let found: Vec<Vec<(ImageId, ImageId, f32)>> = ids
            .par_iter()
            .map(|&id| {
                let Some(vector) = self.store.vector(id)? else { return Ok(Vec::new()) };
                let hits = self.search_vector(&vector, NEIGHBOURS + 1, &SearchFilter::default())?;
                progress(done.fetch_add(1, std::sync::atomic::Ordering::Relaxed) + 1, total);
                Ok(hits
                    .into_iter()
                    .filter(|h| h.id != id && h.score >= threshold)
                    .map(|h| (id.min(h.id), id.max(h.id), h.score.min(1.0)))
                    .collect())
            })
            .collect::<Result<_>>()?;
        let mut pairs: HashMap<(ImageId, ImageId), f32> = HashMap::new();
        for (a, b, cosine) in found.into_iter().flatten() {
            let best = pairs.entry((a, b)).or_insert(cosine);
            *best = best.max(cosine);
        }
        let dismissed = self.dismissed()?;
        let hash_of = |id: ImageId| records.get(&id).map(|r| r.hash.as_str()).unwrap_or_default();
        pairs.retain(|&(a, b), _| !dismissed.iter().any(|g| g.contains(hash_of(a)) && g.contains(hash_of(b))));

        let mut candidates: Vec<ImageId> = pairs.keys().flat_map(|&(a, b)| [a, b]).collect();
        candidates.sort_unstable();
        candidates.dedup();
        let hashes = self.perceptual_hashes(&candidates)?;
        let confirmed: Vec<(ImageId, ImageId, f32)> = pairs
            .into_iter()
            .filter(|((a, b), _)| match (hashes.get(a), hashes.get(b)) {
                (Some(&ha), Some(&hb)) => hash_distance(ha, hb) <= MAX_HASH_DISTANCE,
                _ => false,
            })
            .map(|((a, b), cosine)| (a, b, cosine))
            .collect();

        let mut groups = Vec::new();
        for (members, similarity) in group_pairs(&confirmed) {
            let mut ranked: Vec<(ImageId, ImageRecord)> =
                members.iter().filter_map(|id| records.get(id).map(|r| (*id, r.clone()))).collect();
            ranked.sort_by(best_first);
            let mut images = Vec::with_capacity(ranked.len());
            for (id, record) in ranked {
                let Some(path) = self.store.paths_of(id)?.into_iter().next() else { continue };
                images.push(DuplicateImage {
                    id,
                    path,
                    width: record.width,
                    height: record.height,
                    size: record.size,
                    date: record.date(),
                });
            }
            if images.len() >= 2 {
                groups.push(DuplicateGroup { keep: images[0].id, images, similarity });
            }
        }
        groups.sort_by(|a, b| b.similarity.total_cmp(&a.similarity).then(a.images[0].id.cmp(&b.images[0].id)));
        Ok(DuplicateReport { groups })
    }

    /// The perceptual hashes of `ids`: cached ones read, the others computed from the photos
    /// (in parallel) and cached. Images whose files are gone or changed since indexing are
    /// left out: a pair can only be confirmed from the photos as they were indexed.
    fn perceptual_hashes(&self, ids: &[ImageId]) -> Result<HashMap<ImageId, u64>> {
        let cached = self.store.model_vectors(HASH_CACHE, ids)?;
        let mut hashes: HashMap<ImageId, u64> = HashMap::new();
        let mut missing = Vec::new();
        for (&id, vector) in ids.iter().zip(cached) {
            match vector.as_deref().and_then(hash_from_vector) {
                Some(hash) => {
                    hashes.insert(id, hash);
                }
                None => missing.push(id),
            }
        }
        let computed: Vec<(ImageId, u64)> = missing
            .par_iter()
            .filter_map(|&id| Some((id, perceptual_hash(&self.open_indexed(id, Some(HASH_DECODE_SIDE)).ok()?))))
            .collect();
        let vectors: Vec<(ImageId, Vec<f32>)> = computed.iter().map(|&(id, h)| (id, hash_to_vector(h))).collect();
        self.store.cache_model_vectors(HASH_CACHE, &vectors)?;
        hashes.extend(computed);
        Ok(hashes)
    }

    /// The dismissed groups, as sets of content hashes.
    fn dismissed(&self) -> Result<Vec<HashSet<String>>> {
        let Some(json) = self.store.setting_json(DISMISSED_SETTING)? else { return Ok(Vec::new()) };
        let dismissed: Dismissed = serde_json::from_slice(&json)
            .map_err(|e| Error::Store(format!("the setting {DISMISSED_SETTING} is not readable: {e}")))?;
        Ok(dismissed.groups.into_iter().map(|g| g.into_iter().collect()).collect())
    }

    /// Remembers that these images are not duplicates of each other: later reports keep them
    /// apart (pairs inside the set are ignored; each may still group with other photos).
    pub fn dismiss_duplicates(&self, ids: &[ImageId]) -> Result<()> {
        let mut hashes = Vec::new();
        for &id in ids {
            let record = self.store.image(id)?.ok_or_else(|| Error::NotFound(format!("no image with id {id}")))?;
            if !hashes.contains(&record.hash) {
                hashes.push(record.hash);
            }
        }
        if hashes.len() < 2 {
            return Err(Error::Invalid("name at least two different images to mark as not duplicates".into()));
        }
        hashes.sort();
        let mut dismissed: Dismissed = match self.store.setting_json(DISMISSED_SETTING)? {
            Some(json) => serde_json::from_slice(&json)
                .map_err(|e| Error::Store(format!("the setting {DISMISSED_SETTING} is not readable: {e}")))?,
            None => Dismissed::default(),
        };
        if !dismissed.groups.contains(&hashes) {
            dismissed.groups.push(hashes);
        }
        let json = serde_json::to_vec(&dismissed).map_err(|e| Error::Store(e.to_string()))?;
        self.store.set_setting_json(DISMISSED_SETTING, &json)
    }

    /// Refuses a folder that `what` would write into when it lies inside a library folder (its
    /// files would be indexed as photos) or holds one; checked before anything is created.
    pub fn check_outside_library(&self, dir: &Path, what: &str) -> Result<()> {
        let resolved = resolve_missing(dir)?;
        let roots = self.roots()?;
        match roots.iter().find(|r| resolved.starts_with(r) || r.starts_with(&resolved)) {
            Some(root) => Err(Error::Invalid(format!(
                "{} overlaps the library folder {}: {what} to a folder outside the library",
                dir.display(),
                root.display()
            ))),
            None => Ok(()),
        }
    }

    /// Moves every image of each group but the one to keep out of the library into `dir`
    /// (below a folder named after the library folder it came from, keeping its relative
    /// path), and forgets those files. Each move is journalled in `dir` first; a file that
    /// changed since it was indexed, whose destination exists, or whose group's keeper is
    /// gone is left where it is.
    pub fn move_duplicates(&self, groups: &[DuplicateGroup], dir: &Path) -> Result<MoveReport> {
        self.check_outside_library(dir, "move duplicates")?;
        let roots = self.roots()?;
        crate::output_dir::prepare_output_dir(dir, "duplicates --move-to", Some(MOVE_JOURNAL))?;
        let dir = dir.canonicalize().map_err(|e| file_error(dir, &e))?;
        let journal_path = dir.join(MOVE_JOURNAL);
        let mut journal = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&journal_path)
            .map_err(|e| file_error(&journal_path, &e))?;
        let mut report = MoveReport { journal: journal_path.clone(), ..Default::default() };
        for group in groups {
            if let Err(e) = self.image_file(group.keep) {
                for image in group.images.iter().filter(|i| i.id != group.keep) {
                    report.skipped.push(SkippedFile {
                        path: image.path.clone(),
                        reason: format!("the photo to keep (id {}) is not available: {e}", group.keep),
                    });
                }
                continue;
            }
            for image in group.images.iter().filter(|i| i.id != group.keep) {
                let Some(record) = self.store.image(image.id)? else { continue };
                for from in self.store.paths_of(image.id)? {
                    let Some(root) = roots.iter().find(|r| from.starts_with(r)) else { continue };
                    // A Live Photo's MOV and a RAW+JPEG pair's RAW go with their still: left
                    // behind, the MOV would be indexed as a video of its own and the RAW lose
                    // its JPEG. Found before the still moves (the pairing is by folder).
                    let companions = crate::photo::companions::companions_of(&from);
                    match self.move_one(&from, root, &dir, image.id, &record.hash, &mut journal, &journal_path) {
                        Ok(moved) => report.moved.push(moved),
                        Err(reason) => {
                            report.skipped.push(SkippedFile { path: from, reason });
                            continue;
                        }
                    }
                    for companion in [companions.live_video, companions.raw_path].into_iter().flatten() {
                        match put_away(&companion, root, &dir, image.id, &record.hash, &mut journal, &journal_path) {
                            Ok(moved) => report.moved.push(moved),
                            Err(reason) => report.skipped.push(SkippedFile { path: companion, reason }),
                        }
                    }
                }
            }
        }
        Ok(report)
    }

    /// Moves one indexed file; the reason it stays otherwise.
    #[allow(clippy::too_many_arguments)]
    fn move_one(
        &self,
        from: &Path,
        root: &Path,
        dir: &Path,
        id: ImageId,
        hash: &str,
        journal: &mut std::fs::File,
        journal_path: &Path,
    ) -> std::result::Result<MovedFile, String> {
        let entry = self.store.path_entry(from).map_err(|e| e.to_string())?.ok_or("no longer indexed")?;
        let meta = std::fs::metadata(from).map_err(|e| e.to_string())?;
        if meta.len() != entry.size || indexer::mtime_ns(&meta) != entry.mtime_ns {
            return Err("changed since it was indexed (run `clipdex index` first)".into());
        }
        let moved = put_away(from, root, dir, id, hash, journal, journal_path)?;
        self.store.unlink_path(from).map_err(|e| e.to_string())?;
        Ok(moved)
    }
}

/// Moves `from` (under library folder `root`) into `dir`, below a folder named after `root`
/// with its relative path kept, journalling the move first; the reason it stays otherwise.
fn put_away(
    from: &Path,
    root: &Path,
    dir: &Path,
    id: ImageId,
    hash: &str,
    journal: &mut std::fs::File,
    journal_path: &Path,
) -> std::result::Result<MovedFile, String> {
    let folder = root.file_name().map(PathBuf::from).unwrap_or_else(|| PathBuf::from("root"));
    let to = dir.join(folder).join(from.strip_prefix(root).map_err(|e| e.to_string())?);
    if to.symlink_metadata().is_ok() {
        return Err(format!("{} already exists", to.display()));
    }
    let moved = MovedFile { from: from.to_path_buf(), to: to.clone(), id, hash: hash.to_string() };
    append_line(journal, &moved).map_err(|e| format!("cannot write the journal {}: {e}", journal_path.display()))?;
    move_file(from, &to)?;
    Ok(moved)
}

/// Puts back the files a move journalled in `dir` (`duplicates --restore`): each goes back
/// where it was unless something is there now; the journal keeps what was not restored. The
/// next index pass indexes them again.
pub fn restore_moved(dir: &Path) -> Result<MoveReport> {
    let journal_path = dir.join(MOVE_JOURNAL);
    let text = std::fs::read_to_string(&journal_path).map_err(|e| file_error(&journal_path, &e))?;
    let mut report = MoveReport { journal: journal_path.clone(), ..Default::default() };
    let mut kept = Vec::new();
    for (n, line) in text.lines().enumerate().filter(|(_, l)| !l.trim().is_empty()) {
        let Ok(moved) = serde_json::from_str::<MovedFile>(line) else {
            report.skipped.push(SkippedFile {
                path: journal_path.clone(),
                reason: format!("line {} of the journal is not readable; kept", n + 1),
            });
            kept.push(line.to_string());
            continue;
        };
        let (here, there) = (moved.to.symlink_metadata().is_ok(), moved.from.symlink_metadata().is_ok());
        let outcome = match (here, there) {
            // Journalled but never moved (interrupted before the move): nothing to undo.
            (false, true) => continue,
            (true, false) => move_file(&moved.to, &moved.from),
            (true, true) => Err(format!("{} exists again; both copies left as they are", moved.from.display())),
            (false, false) => Err(format!("{} is gone from the destination", moved.to.display())),
        };
        match outcome {
            Ok(()) => report.moved.push(moved),
            Err(reason) => {
                report.skipped.push(SkippedFile { path: moved.to.clone(), reason });
                kept.push(line.to_string());
            }
        }
    }
    let rest: String = kept.iter().map(|l| format!("{l}\n")).collect();
    let temp = dir.join(format!(".{MOVE_JOURNAL}.tmp"));
    std::fs::write(&temp, rest)
        .and_then(|()| std::fs::File::open(&temp)?.sync_all())
        .and_then(|()| std::fs::rename(&temp, &journal_path))
        .map_err(|e| file_error(&journal_path, &e))?;
    Ok(report)
}

/// `path` with its longest existing ancestor resolved (symbolic links, `..`) and the rest
/// appended as given.
fn resolve_missing(path: &Path) -> Result<PathBuf> {
    let absolute = std::path::absolute(path).map_err(|e| file_error(path, &e))?;
    let mut rest = Vec::new();
    let mut existing = absolute.as_path();
    loop {
        if let Ok(resolved) = existing.canonicalize() {
            return Ok(rest.iter().rev().fold(resolved, |p, c| p.join(c)));
        }
        match (existing.parent(), existing.file_name()) {
            (Some(parent), Some(name)) => {
                rest.push(name.to_os_string());
                existing = parent;
            }
            _ => return Ok(absolute),
        }
    }
}

fn file_error(path: &Path, e: &std::io::Error) -> Error {
    Error::Invalid(format!("{}: {e}", path.display()))
}

/// Appends one JSON line and makes it durable before the move it announces.
fn append_line(journal: &mut std::fs::File, moved: &MovedFile) -> std::io::Result<()> {
    let mut line = serde_json::to_vec(moved).map_err(std::io::Error::other)?;
    line.push(b'\n');
    journal.write_all(&line)?;
    journal.sync_data()
}

/// Moves a file without ever replacing one: a hard link then removal on one file system (the
/// link fails if the destination exists), else a copy into a new file, flushed to disk, then
/// removal of the original.
fn move_file(from: &Path, to: &Path) -> std::result::Result<(), String> {
    if let Some(parent) = to.parent() {
        std::fs::create_dir_all(parent).map_err(|e| format!("cannot create {}: {e}", parent.display()))?;
    }
    match std::fs::hard_link(from, to) {
        Ok(()) => return std::fs::remove_file(from).map_err(|e| format!("moved, but the original stays: {e}")),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
            return Err(format!("{} already exists", to.display()));
        }
        Err(_) => {} // another file system, or one without hard links: copy
    }
    let copy = || -> std::io::Result<()> {
        let mut source = std::fs::File::open(from)?;
        let mut target = std::fs::OpenOptions::new().write(true).create_new(true).open(to)?;
        let copied = std::io::copy(&mut source, &mut target)?;
        target.sync_all()?;
        if copied != source.metadata()?.len() {
            return Err(std::io::Error::other("the copy is shorter than the original"));
        }
        Ok(())
    };
    if let Err(e) = copy() {
        if e.kind() != std::io::ErrorKind::AlreadyExists {
            let _ = std::fs::remove_file(to);
        }
        return Err(format!("cannot copy to {}: {e}", to.display()));
    }
    std::fs::remove_file(from).map_err(|e| format!("copied, but the original stays: {e}"))
}
