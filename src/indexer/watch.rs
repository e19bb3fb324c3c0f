//! Following the folders after the first pass: file-system events (notify, debounced) trigger
//! a new pass, and a periodic rescan catches what events miss (inotify watch limits, network
//! drives, changes while clipdex was not running).
//!
//! An event does not tell the pass what to do; it only says "something changed". The pass
//! itself compares every file with the store (a `stat` per unchanged file), which handles the
//! awkward cases events make hard — a directory renamed or deleted as one event, a folder
//! moved in from outside, a file still being written (it fails to decode, and its next write
//! changes its size and time, so it is retried) — with the same code as a one-shot `index`.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use notify::{EventKind, RecursiveMode};

use crate::error::{Error, Result};

/// Timing of the watcher.
#[derive(Debug, Clone, Copy)]
pub struct WatchOptions {
    /// Quiet time after the last event before a pass starts.
    pub debounce: Duration,
    /// A full pass at least this often, events or not.
    pub rescan_every: Duration,
}

impl Default for WatchOptions {
    fn default() -> Self {
        WatchOptions { debounce: Duration::from_secs(2), rescan_every: Duration::from_secs(600) }
    }
}

fn relevant(kind: &EventKind) -> bool {
    use notify::event::{AccessKind, AccessMode};
    match kind {
        EventKind::Access(AccessKind::Close(AccessMode::Write)) => true,
        EventKind::Access(_) => false,
        _ => true,
    }
}

/// Runs `pass` now, after every burst of changes under `roots`, and every
/// `options.rescan_every`, until `stop` is set. Returns the first error of a pass.
pub fn follow(
    roots: &[PathBuf],
    options: &WatchOptions,
    stop: &AtomicBool,
    mut pass: impl FnMut() -> Result<()>,
) -> Result<()> {
    let (tx, rx) = mpsc::channel();
    let mut debouncer = notify_debouncer_full::new_debouncer(options.debounce, None, tx)
        .map_err(|e| Error::Invalid(format!("cannot watch the file system: {e}")))?;
    for root in roots {
        if let Err(e) = debouncer.watch(root, RecursiveMode::Recursive) {
            tracing::warn!("cannot watch {} ({e}); relying on the periodic rescan", root.display());
        }
    }
    pass()?;
    let mut next_rescan = Instant::now() + options.rescan_every;
    while !stop.load(Ordering::Relaxed) {
        let wait = next_rescan.saturating_duration_since(Instant::now()).min(Duration::from_millis(250));
        match rx.recv_timeout(wait) {
            Ok(Ok(events)) => {
                if events.iter().any(|e| relevant(&e.kind)) {
                    pass()?;
                    next_rescan = Instant::now() + options.rescan_every;
                }
            }
            Ok(Err(errors)) => {
                // Lost events (a queue overflow, say): a pass catches up with whatever happened.
                for e in errors {
                    tracing::warn!("file watcher: {e}");
                }
                pass()?;
            }
            Err(mpsc::RecvTimeoutError::Timeout) => {
                if Instant::now() >= next_rescan {
                    pass()?;
                    next_rescan = Instant::now() + options.rescan_every;
                }
            }
            Err(mpsc::RecvTimeoutError::Disconnected) => {
                return Err(Error::Invalid("the file watcher stopped".into()));
            }
        }
    }
    Ok(())
}
