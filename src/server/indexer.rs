//! The indexer behind `clipdex serve`: a thread that indexes the library's folders and then
//! follows them ([`Library::watch`]) while the server answers queries, and reports its
//! progress for `GET /api/status`.
//!
//! A failed pass does not end it: the error is reported and the watch starts again after a
//! pause. When the folders change (`POST`/`DELETE /api/roots`) the watch restarts on the new
//! set.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::Library;
use crate::indexer::IndexReport;
use crate::indexer::watch::WatchOptions;
use crate::library::Stage;

/// Pause after a failed pass before the watch starts again.
const RETRY_AFTER: Duration = Duration::from_secs(10);

/// The first and the longest pause before the model is tried again (doubling in between).
const MODEL_RETRY_FIRST: Duration = Duration::from_secs(10);
const MODEL_RETRY_MAX: Duration = Duration::from_secs(300);

/// How often a paused indexer looks at the library's settings again.
const PAUSED_CHECK: Duration = Duration::from_secs(5);

/// What the indexer is doing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum IndexerState {
    /// `serve --no-watch`: nothing is indexed.
    Off,
    /// Loading the model, before the first pass.
    Starting,
    /// A pass is running (`done` of `total` files).
    Indexing,
    /// Up to date; waiting for changes in the folders.
    Watching,
    /// The library has no folders yet.
    NoFolders,
    /// The last pass failed (`last_error`); it is retried.
    Failed,
    /// Background jobs are off in the library's settings (`background_jobs`), or indexing is
    /// paused in the Jobs view: nothing is indexed until they are on again.
    Paused,
    /// The library's CLIP model cannot be loaded (not downloaded, no network, a folder that is
    /// not there; `last_error` says why): tried again with growing pauses, and at once when
    /// the settings or the folders change. The web UI shows how to get the model.
    WaitingForModel,
}

/// The indexer's progress, as `GET /api/status` shows it.
#[derive(Debug, Clone, Serialize)]
pub struct IndexerStatus {
    /// What it is doing.
    pub state: IndexerState,
    /// Files handled by the running pass.
    pub done: u64,
    /// Files the running pass has to look at.
    pub total: u64,
    /// Passes finished since the server started.
    pub passes: u64,
    /// The last finished pass.
    pub last_pass: Option<IndexReport>,
    /// The last error, until a pass succeeds.
    pub last_error: Option<String>,
    /// While waiting for the model: which model, and the seconds until the next try.
    pub waiting_for_model: Option<String>,
    pub retry_in_s: Option<u64>,
    /// Background work after the passes: captioning new photos (images looked at of the
    /// library's), and making the UI's thumbnails; `None` until it starts.
    pub captioning: Option<StageProgress>,
    /// Reading the text in new photos (images looked at of the library's), when an OCR model
    /// is set; `None` until it starts.
    pub reading_text: Option<StageProgress>,
    /// Finding the faces in new photos (images looked at of the library's), when a face model
    /// is set; `None` until it starts.
    pub finding_faces: Option<StageProgress>,
    pub thumbnails: Option<StageProgress>,
}

/// How far a background stage got in its latest run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct StageProgress {
    /// Images looked at.
    pub done: u64,
    /// Images in the library.
    pub total: u64,
}

/// The background indexer; dropping the server stops it through [`BackgroundIndexer::stop`].
pub struct BackgroundIndexer {
    status: Mutex<IndexerStatus>,
    /// Ends the current watch (folders changed, or shutting down).
    interrupt: AtomicBool,
    shutdown: AtomicBool,
}

impl BackgroundIndexer {
    /// An indexer that never runs (`--no-watch`).
    pub fn off() -> Arc<Self> {
        Arc::new(Self::with_state(IndexerState::Off))
    }

    fn with_state(state: IndexerState) -> Self {
        BackgroundIndexer {
            status: Mutex::new(IndexerStatus {
                state,
                done: 0,
                total: 0,
                passes: 0,
                last_pass: None,
                last_error: None,
                waiting_for_model: None,
                retry_in_s: None,
                captioning: None,
                reading_text: None,
                finding_faces: None,
                thumbnails: None,
            }),
            interrupt: AtomicBool::new(false),
            shutdown: AtomicBool::new(false),
        }
    }

    /// Starts indexing and following the library's folders in a thread.
    pub fn start(library: Arc<Library>, options: WatchOptions) -> (Arc<Self>, JoinHandle<()>) {
        let indexer = Arc::new(Self::with_state(IndexerState::Starting));
        let handle = {
            let indexer = indexer.clone();
            std::thread::Builder::new()
                .name("clipdex-indexer".into())
                .spawn(move || indexer.run(&library, &options))
                .expect("the indexer thread starts")
        };
        (indexer, handle)
    }

    /// The current progress.
    pub fn status(&self) -> IndexerStatus {
        self.lock().clone()
    }

    /// The folders changed: follow the new set.
    pub fn roots_changed(&self) {
        if self.lock().state != IndexerState::Off {
            self.interrupt.store(true, Ordering::Relaxed);
        }
    }

    /// Runs a pass now and returns its report (a forwarded `clipdex index`): a pass under way
    /// is finished first, then a new one looks at the folders as they are now. `None` when the
    /// server does not index (`serve --no-watch`) or no pass ends within `limit`.
    pub fn index_now(&self, limit: Duration) -> Option<IndexReport> {
        let target = {
            let s = self.lock();
            match s.state {
                IndexerState::Off => return None,
                IndexerState::Indexing => s.passes + 2,
                _ => s.passes + 1,
            }
        };
        self.interrupt.store(true, Ordering::Relaxed);
        let start = Instant::now();
        while start.elapsed() < limit {
            {
                let s = self.lock();
                if s.passes >= target {
                    return s.last_pass.clone();
                }
                // The loop has looked at the folders again since the request (it clears
                // `interrupt` first) and found none: nothing to index.
                if s.state == IndexerState::NoFolders
                    && !self.interrupt.load(Ordering::Relaxed)
                    && start.elapsed() > Duration::from_millis(200)
                {
                    return Some(IndexReport::default());
                }
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        None
    }

    /// The library's settings changed: a pass under way ends, and the indexer starts again
    /// with them (or pauses, when background jobs are now off).
    pub fn settings_changed(&self) {
        if self.lock().state != IndexerState::Off {
            self.interrupt.store(true, Ordering::Relaxed);
        }
    }

    /// Ends the indexer after the running pass.
    pub fn stop(&self) {
        self.shutdown.store(true, Ordering::Relaxed);
        self.interrupt.store(true, Ordering::Relaxed);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, IndexerStatus> {
        self.status.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn set_state(&self, state: IndexerState) {
        self.lock().state = state;
    }

    fn run(&self, library: &Library, options: &WatchOptions) {
        let mut model_retry = MODEL_RETRY_FIRST;
        while !self.shutdown.load(Ordering::Relaxed) {
            self.interrupt.store(false, Ordering::Relaxed);
            match library.settings() {
                Ok(settings) if !settings.background_jobs() || library.pass_paused("indexing") => {
                    self.set_state(IndexerState::Paused);
                    // Until the settings change (or another process changes them: looked at
                    // again now and then).
                    self.wait(PAUSED_CHECK);
                    continue;
                }
                Ok(_) => {}
                Err(e) => {
                    self.failed(&e);
                    continue;
                }
            }
            // The model first: without it nothing can be embedded, and the UI says how to get it.
            match library.clip() {
                Ok(_) => {
                    if self.lock().waiting_for_model.take().is_some() {
                        tracing::info!("the model {} is loaded: indexing starts", library.model());
                        let mut s = self.lock();
                        (s.state, s.last_error, s.retry_in_s) = (IndexerState::Starting, None, None);
                    }
                    model_retry = MODEL_RETRY_FIRST;
                }
                Err(e @ (crate::Error::Model { .. } | crate::Error::Tokenizer { .. } | crate::Error::Device(_))) => {
                    self.wait_for_model(library, &e, model_retry);
                    model_retry = (model_retry * 2).min(MODEL_RETRY_MAX);
                    continue;
                }
                Err(e) => {
                    self.failed(&e);
                    continue;
                }
            }
            match library.roots() {
                Ok(roots) if roots.is_empty() => {
                    self.set_state(IndexerState::NoFolders);
                    self.wait(Duration::MAX);
                    continue;
                }
                Ok(_) => {
                    // A watch starts with a pass (the first one also loads the model).
                    let mut s = self.lock();
                    if s.state != IndexerState::Starting {
                        s.state = IndexerState::Indexing;
                        (s.done, s.total) = (0, 0);
                    }
                }
                Err(e) => {
                    self.failed(&e);
                    continue;
                }
            }
            let progress = |done: u64, total: u64| {
                let mut s = self.lock();
                s.state = IndexerState::Indexing;
                (s.done, s.total) = (done, total);
            };
            let on_stage = |stage: Stage, done: u64, total: u64| {
                let mut s = self.lock();
                let progress = Some(StageProgress { done, total });
                match stage {
                    Stage::Captioning => s.captioning = progress,
                    Stage::ReadingText => s.reading_text = progress,
                    Stage::FindingFaces => s.finding_faces = progress,
                    Stage::Thumbnails => s.thumbnails = progress,
                }
            };
            let outcome = library.watch(
                options,
                &self.interrupt,
                &progress,
                &mut |report| {
                    let mut s = self.lock();
                    s.state = IndexerState::Watching;
                    s.passes += 1;
                    s.last_pass = Some(report.clone());
                    s.last_error = None;
                },
                &on_stage,
            );
            if let Err(e) = outcome {
                self.failed(&e);
            }
        }
    }

    fn failed(&self, e: &crate::Error) {
        tracing::warn!("indexing failed: {e}; retrying in {} s", RETRY_AFTER.as_secs());
        {
            let mut s = self.lock();
            s.state = IndexerState::Failed;
            s.last_error = Some(e.to_string());
        }
        self.wait(RETRY_AFTER);
    }

    /// The model could not be loaded: said once in the log (not at every try), shown in the
    /// status, and tried again after `pause` (or when the settings or folders change).
    fn wait_for_model(&self, library: &Library, e: &crate::Error, pause: Duration) {
        let first = {
            let mut s = self.lock();
            let first = s.waiting_for_model.is_none();
            s.state = IndexerState::WaitingForModel;
            s.last_error = Some(e.to_string());
            s.waiting_for_model = Some(library.model());
            s.retry_in_s = Some(pause.as_secs());
            first
        };
        if first {
            tracing::warn!(
                "waiting for a model: {e}. The web UI shows how to get it onto this machine (see also \
                 `clipdex help serve`); retrying now and then, quietly"
            );
        } else {
            tracing::debug!("the model is still not there: {e}");
        }
        self.wait(pause);
    }

    /// Sleeps until `interrupt` is set or `limit` passes.
    fn wait(&self, limit: Duration) {
        let start = Instant::now();
        while !self.interrupt.load(Ordering::Relaxed) && start.elapsed() < limit {
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}
