//! Indexing and maintenance: the folders, indexing passes (once, following the folders, or
//! as a worker of a PostgreSQL library), the search graph, thumbnails, and the library's state
//! (`stats`, `failures`).

use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::ann::{AnnIndex, IndexState};
use crate::error::{Error, Result};
use crate::indexer::{self, IndexOptions, IndexReport, Progress};
use crate::models::clip::ClipEmbedder;
use crate::models::precision::Precision;
use crate::models::source::local_fingerprint;
use crate::photo::DecodeOptions;
use crate::store::{Failure, ImageId, ImageRecord, StoreCounts};
use crate::thumbnail;

use super::Library;

/// Work a watch does in the background after its passes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Stage {
    /// Captioning new photos (`caption --library` switched it on).
    Captioning,
    /// Reading the text in new photos (an OCR model is set for the library).
    ReadingText,
    /// Finding the faces in new photos (a face model is set for the library).
    FindingFaces,
    /// Making the web UI's thumbnails.
    Thumbnails,
}

/// `clipdex stats`.
#[derive(Debug, Clone, Serialize)]
pub struct LibraryStats {
    /// Counts of the store.
    #[serde(flatten)]
    pub counts: StoreCounts,
    /// The model of the stored vectors.
    pub model: Option<String>,
    /// Their width.
    pub dim: Option<usize>,
    /// The arithmetic that made them (`--precision`): one entry, or several when indexing
    /// passes ran at different precisions.
    pub precisions: Vec<Precision>,
    /// Schema version of the database.
    pub schema_version: u32,
    /// The search index: its kind and size.
    pub index: IndexState,
    /// A re-indexing under way (or interrupted: `clipdex reindex` resumes it).
    pub reindex: Option<ReindexState>,
    /// The work shared between processes (PostgreSQL only): files queued, files claimed, and
    /// the processes holding claims.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub jobs: Option<crate::store::JobCounts>,
    /// What the `failures` count is made of: files that could not be indexed at all, ...
    pub unreadable: u64,
    /// ... companions whose item is indexed without them (a Live Photo's broken or lost MOV:
    /// a problem of that item, not an unreadable photo), ...
    pub companion_problems: u64,
    /// ... and symbolic links not followed because they lead outside the library's folders.
    pub skipped_links: u64,
}

/// Progress of a re-indexing.
#[derive(Debug, Clone, Serialize)]
pub struct ReindexState {
    /// The model it moves to.
    pub to: String,
    /// Images embedded with it so far.
    pub done: u64,
    /// Images in the library.
    pub of: u64,
}

fn log_maintenance(outcome: std::thread::Result<Result<IndexState>>) {
    match outcome {
        Ok(Ok(s)) if s.rebuilt => tracing::info!("search graph rebuilt over {} vectors", s.vectors),
        Ok(Ok(s)) => tracing::debug!("search graph caught up with {} vectors", s.caught_up),
        Ok(Err(e)) => tracing::warn!("maintaining the search graph failed: {e}; searches scan exactly meanwhile"),
        Err(_) => tracing::warn!("maintaining the search graph panicked; searches scan exactly meanwhile"),
    }
}

impl Library {
    /// Adds a folder to watch; returns its canonical path.
    pub fn add_root(&self, path: &Path) -> Result<PathBuf> {
        let root = indexer::canonical_root(path)?;
        self.store.add_root(&root)?;
        Ok(root)
    }

    /// Stops watching a folder and forgets its files; returns how many were forgotten.
    pub fn remove_root(&self, path: &Path) -> Result<u64> {
        let root = indexer::root_path(path);
        if !self.store.remove_root(&root)? {
            return Err(Error::NotFound(format!("{} is not a root; see `clipdex roots`", path.display())));
        }
        let mut forgotten = 0;
        let others = self.store.roots()?;
        for (file, _) in self.store.paths_under(&root)? {
            if !others.iter().any(|r| file.starts_with(r)) {
                self.store.unlink_path(&file)?;
                forgotten += 1;
            }
        }
        for (file, _) in self.store.failures()? {
            if file.starts_with(&root) && !others.iter().any(|r| file.starts_with(r)) {
                self.store.clear_failure(&file)?;
            }
        }
        self.store.flush()?;
        Ok(forgotten)
    }

    /// The watched folders.
    pub fn roots(&self) -> Result<Vec<PathBuf>> {
        self.store.roots()
    }

    /// Brings the database in step with the folders, once, then the search graph in step
    /// with the database (large libraries).
    pub fn index(&self, progress: Progress) -> Result<IndexReport> {
        let mut report = self.index_pass(false, false, progress)?;
        self.maintain_index()?;
        report.captioned = self.caption_pending(progress, &|| false)?.map_or(0, |r| r.captioned);
        report.text_read = self.read_text_pending(progress, &|| false)?.map_or(0, |r| r.read);
        report.faces_scanned = self.find_faces_pending(progress, &|| false)?.map_or(0, |r| r.scanned as u64);
        Ok(report)
    }

    /// [`Library::index`], and the photos of roots that look unmounted (a folder with no
    /// photo left, or on another device than before) are forgotten too: for a user who did
    /// empty the folder or move it to another drive.
    pub fn index_and_prune(&self, progress: Progress) -> Result<IndexReport> {
        let mut report = self.index_pass(true, false, progress)?;
        self.maintain_index()?;
        report.captioned = self.caption_pending(progress, &|| false)?.map_or(0, |r| r.captioned);
        report.text_read = self.read_text_pending(progress, &|| false)?.map_or(0, |r| r.read);
        report.faces_scanned = self.find_faces_pending(progress, &|| false)?.map_or(0, |r| r.scanned as u64);
        Ok(report)
    }

    /// One indexing pass over the folders, and auto-tagging of what it added.
    /// `clipdex worker`: embeds what the scanning processes of this PostgreSQL library queue
    /// (see [`indexer::work`]); the library's model must be the one it holds.
    pub fn work(
        &self,
        worker: &indexer::WorkerOptions,
        stop: &std::sync::atomic::AtomicBool,
        on_batch: &mut dyn FnMut(&IndexReport),
    ) -> Result<IndexReport> {
        if self.store.work_queue().is_none() {
            return Err(Error::Invalid(
                "a worker helps the indexers of a PostgreSQL library; a folder library has one indexing process".into(),
            ));
        }
        let clip = self.clip()?;
        self.record_precision(clip.precision())?;
        match self.store.model()? {
            Some((_, dim)) if dim != clip.dim() => {
                Err(Error::Invalid(format!("stored vectors are {dim}-d but the model gives {}", clip.dim())))
            }
            None => Err(Error::Invalid(
                "the library has no model yet: run `clipdex index` (which scans the folders) first".into(),
            )),
            Some(_) => indexer::work(&self.store, &clip, &self.index_options(&clip), worker, stop, on_batch),
        }
    }

    /// One index pass, then auto-tagging when it is on (in the `background`, unless the user
    /// paused tagging).
    fn index_pass(&self, prune: bool, background: bool, progress: Progress) -> Result<IndexReport> {
        let clip = self.clip()?;
        self.record_precision(clip.precision())?;
        match self.store.model()? {
            None => {
                self.store.set_model(&self.model(), clip.dim())?;
                self.store.set_model_fingerprint(local_fingerprint(&self.model()).as_deref())?;
            }
            Some((_, dim)) if dim != clip.dim() => {
                return Err(Error::Invalid(format!("stored vectors are {dim}-d but the model gives {}", clip.dim())));
            }
            Some(_) => {}
        }
        let options = IndexOptions { prune, ..self.index_options(&clip) };
        let mut report = indexer::index_pass(&self.store, &clip, &options, progress)?;
        if report.removed > 0 || report.linked > 0 || report.embedded > 0 {
            self.store.prune_model_vectors()?;
        }
        if report.linked > 0 || report.embedded > 0 {
            self.reapply_user_tags()?;
        }
        if let Some(settings) = self.autotag_settings()?
            && !(background && self.pass_paused("tagging"))
        {
            report.tagged = self.autotag(Some(settings))?.tagged;
        }
        Ok(report)
    }

    /// Inserts new vectors into the search graph, or rebuilds it (see [`AnnIndex::maintain`]);
    /// nothing for libraries too small for a graph.
    pub fn maintain_index(&self) -> Result<IndexState> {
        if let Some(state) = self.store.maintain_vector_index(self.config.graph_min)? {
            return Ok(state);
        }
        let state = AnnIndex::maintain(&self.store, &self.graph_dir()?, self.config.graph_min)?;
        if state.rebuilt || state.caught_up > 0 {
            *self.index.lock().expect("index lock") = None; // searches pick the new snapshot
        }
        Ok(state)
    }

    pub(super) fn index_options(&self, clip: &ClipEmbedder) -> IndexOptions {
        let side = clip.processor().output_size().map(|(h, w)| h.min(w));
        IndexOptions {
            decode: DecodeOptions { max_pixels: self.config.max_pixels, min_side: side },
            batch_size: self.config.batch_size,
            prune: false,
            // Video frames are held to the photos' pixel budget.
            video: crate::video::SampleOptions { max_pixels: self.config.max_pixels, ..self.config.video },
        }
    }

    /// Indexes now, then follows the folders (see [`indexer::watch`]) until `stop` is set;
    /// `on_pass` sees every pass's report. The search graph is maintained in the background:
    /// after a pass that left it behind, a thread inserts the new vectors or rebuilds it while
    /// passes go on (one such thread at a time); searches meanwhile use the previous snapshot
    /// plus an exact scan of what is newer.
    pub fn watch(
        &self,
        options: &indexer::watch::WatchOptions,
        stop: &std::sync::atomic::AtomicBool,
        progress: Progress,
        on_pass: &mut dyn FnMut(&IndexReport),
        on_stage: &(dyn Fn(Stage, u64, u64) + Sync),
    ) -> Result<()> {
        use std::sync::atomic::{AtomicBool, Ordering};
        let roots = self.roots()?;
        if roots.is_empty() {
            return Err(Error::Invalid("no folders to watch: add one with `clipdex add ROOT`".into()));
        }
        let pass_running = AtomicBool::new(false);
        std::thread::scope(|scope| {
            let mut maintenance: Option<std::thread::ScopedJoinHandle<'_, Result<IndexState>>> = None;
            let mut background: Option<std::thread::ScopedJoinHandle<'_, ()>> = None;
            let followed = indexer::watch::follow(&roots, options, stop, || {
                pass_running.store(true, Ordering::Relaxed);
                let report = self.index_pass(false, true, progress);
                pass_running.store(false, Ordering::Relaxed);
                let report = report?;
                on_pass(&report);
                if maintenance.as_ref().is_none_or(|m| m.is_finished()) {
                    if let Some(done) = maintenance.take() {
                        log_maintenance(done.join());
                    }
                    if self.index_state()?.needs_maintenance() {
                        maintenance = Some(scope.spawn(|| self.maintain_index()));
                    }
                }
                // Captions and thumbnails of what the pass added, in the background; they give
                // way to the next pass (which starts them again when it ends).
                if background.as_ref().is_none_or(|b| b.is_finished()) {
                    if let Some(done) = background.take() {
                        let _ = done.join();
                    }
                    let pause = || stop.load(Ordering::Relaxed) || pass_running.load(Ordering::Relaxed);
                    background = Some(scope.spawn(move || self.background_work(&pause, on_stage)));
                }
                Ok(())
            });
            if let Some(running) = maintenance {
                log_maintenance(running.join());
            }
            if let Some(running) = background {
                let _ = running.join();
            }
            followed
        })
    }

    /// What follows a watch's pass, at lower priority: captions (when captioning is on), the
    /// text in photos (when an OCR model is set), faces (when a face model is set), and the
    /// web UI's thumbnails of every photo not yet done; `pause` ends it early. Failures are
    /// logged, not fatal: they are retried after the next pass.
    fn background_work(&self, pause: &dyn Fn() -> bool, on_stage: &(dyn Fn(Stage, u64, u64) + Sync)) {
        if !self.pass_paused("captioning")
            && let Err(e) = self.caption_pending(&|done, total| on_stage(Stage::Captioning, done, total), pause)
        {
            tracing::warn!("captioning new photos failed: {e}");
        }
        if pause() {
            return;
        }
        if !self.pass_paused("reading_text")
            && let Err(e) = self.read_text_pending(&|done, total| on_stage(Stage::ReadingText, done, total), pause)
        {
            tracing::warn!("reading the text in new photos failed: {e}");
        }
        if pause() {
            return;
        }
        if !self.pass_paused("finding_faces") {
            self.find_faces_in_background(&|done, total| on_stage(Stage::FindingFaces, done, total), pause);
        }
        if pause() {
            return;
        }
        if !self.pass_paused("thumbnails")
            && let Err(e) = self.make_thumbnails(&|done, total| on_stage(Stage::Thumbnails, done, total), pause)
        {
            tracing::warn!("making thumbnails failed: {e}");
        }
    }

    /// Makes the web UI's thumbnails ([`thumbnail::UI_SIZES`]) of every photo that lacks one;
    /// `pause` ends it early. A photo that cannot be read now is skipped.
    pub fn make_thumbnails(&self, progress: Progress, pause: &dyn Fn() -> bool) -> Result<u64> {
        let records: Vec<(ImageId, ImageRecord)> = self.store.images().collect::<Result<_>>()?;
        let total = records.len() as u64;
        let mut made = 0;
        progress(0, total);
        for (done, (id, record)) in records.iter().enumerate() {
            for size in thumbnail::UI_SIZES {
                if self.thumbnail_path(&record.hash, size).is_file() {
                    continue;
                }
                if pause() {
                    return Ok(made);
                }
                match self.thumbnail(*id, size) {
                    Ok(_) => made += 1,
                    Err(e) => tracing::debug!("no thumbnail for image {id}: {e}"),
                }
            }
            progress(done as u64 + 1, total);
        }
        Ok(made)
    }

    /// The graph snapshot of the current vectors (one folder per vector generation, so a
    /// graph of another model's vectors is never loaded).
    pub(super) fn graph_dir(&self) -> Result<PathBuf> {
        let dir = self.config.db.local_dir();
        Ok(match self.store.vectors_generation()? {
            0 => dir.join("hnsw"),
            g => dir.join(format!("hnsw.{g}")),
        })
    }

    /// The search index's state from the store and the snapshot's metadata (no vector loaded).
    fn index_state(&self) -> Result<IndexState> {
        if let Some(state) = self.store.vector_index_state(self.config.graph_min)? {
            return Ok(state);
        }
        AnnIndex::describe(&self.store, &self.graph_dir()?, self.config.graph_min)
    }

    /// Counts, model and index state.
    pub fn stats(&self) -> Result<LibraryStats> {
        let counts = self.store.counts()?;
        let model = self.store.model()?;
        let (mut companion_problems, mut skipped_links) = (0, 0);
        if counts.failures > 0 {
            for (_, f) in self.store.failures()? {
                if f.reason.starts_with(crate::photo::companions::LIVE_VIDEO_PROBLEM) {
                    companion_problems += 1;
                } else if f.reason.starts_with(indexer::LINK_OUTSIDE) {
                    skipped_links += 1;
                }
            }
        }
        Ok(LibraryStats {
            unreadable: counts.failures.saturating_sub(companion_problems + skipped_links),
            companion_problems,
            skipped_links,
            index: self.index_state()?,
            reindex: match self.store.reindex_target()? {
                Some(t) => Some(ReindexState { to: t.model, done: self.store.next_vector_count()?, of: counts.images }),
                None => None,
            },
            counts,
            model: model.as_ref().map(|m| m.0.clone()),
            dim: model.map(|m| m.1),
            precisions: self.precisions()?,
            schema_version: self.store.schema_version()?,
            jobs: self.store.work_queue().map(|q| q.job_counts()).transpose()?,
        })
    }

    /// Files that could not be indexed.
    pub fn failures(&self) -> Result<Vec<(PathBuf, Failure)>> {
        self.store.failures()
    }
}
