//! The queue in front of the model-heavy endpoints (BLIP, CLIPSeg, re-ranking): at most
//! `running` requests do model work at once, at most `waiting` more wait their turn, and any
//! request beyond those is answered at once with 503 and `Retry-After`. Each running request
//! holds a photo's working pixels and a model's activations, so N requests at once would cost
//! N times that; the queue caps it at `running` times, whatever N.
//!
//! A request is admitted on the async side (cheap, never blocks) and takes its turn on the
//! blocking pool, where waiting costs a parked thread and no memory of note.

use std::sync::{Arc, Condvar, Mutex};

use actix_web::http::StatusCode;

use super::api::ApiError;

/// Default number of heavy requests that run at once.
pub const DEFAULT_HEAVY_RUNNING: usize = 2;
/// Default number of heavy requests that may wait for a turn.
pub const DEFAULT_HEAVY_WAITING: usize = 8;
/// Seconds a refused client is told to wait (`Retry-After`).
pub const RETRY_AFTER_SECS: u32 = 5;

/// Requests running and waiting.
#[derive(Debug, Default)]
struct Counts {
    running: usize,
    waiting: usize,
}

/// The bounded queue of heavy requests.
#[derive(Debug)]
pub(super) struct HeavyQueue {
    /// What it queues, as the 503 names it ("model requests").
    what: &'static str,
    running: usize,
    waiting: usize,
    counts: Mutex<Counts>,
    turn: Condvar,
}

impl HeavyQueue {
    /// A queue running at most `running` requests (at least 1) with at most `waiting` more.
    pub(super) fn new(running: usize, waiting: usize) -> Arc<Self> {
        Self::of("model requests", running, waiting)
    }

    /// A queue of `what` (the 503 names them), as [`HeavyQueue::new`].
    pub(super) fn of(what: &'static str, running: usize, waiting: usize) -> Arc<Self> {
        Arc::new(HeavyQueue {
            what,
            running: running.max(1),
            waiting,
            counts: Mutex::new(Counts::default()),
            turn: Condvar::new(),
        })
    }

    /// A place in the queue, or 503 with `Retry-After` when it is full.
    pub(super) fn admit(self: &Arc<Self>) -> Result<Ticket, ApiError> {
        let mut counts = self.counts.lock().unwrap_or_else(|p| p.into_inner());
        if counts.running + counts.waiting >= self.running + self.waiting {
            return Err(ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                format!(
                    "the server is busy with {} {} ({} running, the rest waiting); retry in {} s",
                    counts.running + counts.waiting,
                    self.what,
                    counts.running,
                    RETRY_AFTER_SECS
                ),
            )
            .retry_after(RETRY_AFTER_SECS));
        }
        counts.waiting += 1;
        Ok(Ticket { queue: Some(self.clone()) })
    }
}

/// A request admitted and waiting; [`Ticket::run`] waits for its turn. Dropped unused (the
/// client went away), it gives its place back.
pub(super) struct Ticket {
    queue: Option<Arc<HeavyQueue>>,
}

impl Ticket {
    /// Blocks until fewer than the queue's `running` requests run, then runs until the
    /// returned turn is dropped.
    pub(super) fn run(mut self) -> Turn {
        let queue = self.queue.take().expect("a ticket runs once");
        {
            let mut counts = queue.counts.lock().unwrap_or_else(|p| p.into_inner());
            while counts.running >= queue.running {
                counts = queue.turn.wait(counts).unwrap_or_else(|p| p.into_inner());
            }
            counts.waiting -= 1;
            counts.running += 1;
        }
        Turn { queue }
    }
}

impl Drop for Ticket {
    fn drop(&mut self) {
        if let Some(queue) = self.queue.take() {
            queue.counts.lock().unwrap_or_else(|p| p.into_inner()).waiting -= 1;
        }
    }
}

/// A request doing its model work; dropping it lets the next one run.
pub(super) struct Turn {
    queue: Arc<HeavyQueue>,
}

impl Drop for Turn {
    fn drop(&mut self) {
        self.queue.counts.lock().unwrap_or_else(|p| p.into_inner()).running -= 1;
        self.queue.turn.notify_one();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn admits_running_plus_waiting_then_refuses_with_retry_after() {
        let queue = HeavyQueue::new(1, 1);
        let first = queue.admit().unwrap();
        let second = queue.admit().unwrap();
        let refused = queue.admit().err().unwrap();
        assert_eq!(refused.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(refused.retry_after_secs(), Some(RETRY_AFTER_SECS));
        // A ticket given back unused frees its place.
        drop(second);
        let second = queue.admit().unwrap();
        let turn = first.run();
        assert!(queue.admit().is_err());
        // The waiting one runs once the running one is done.
        let waiter = std::thread::spawn(move || {
            let _turn = second.run();
        });
        drop(turn);
        waiter.join().unwrap();
        let counts = queue.counts.lock().unwrap();
        assert_eq!((counts.running, counts.waiting), (0, 0));
    }
}
