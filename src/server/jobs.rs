//! `GET /api/jobs` and `GET /api/failures`: the background passes of the server (indexing,
//! tagging, captioning, finding faces, thumbnails) with their progress, rate and time left, and
//! the files that could not be indexed with their reasons (the web UI's Jobs view);
//! `POST /api/jobs/{name}/pause` and `/resume` (remembered by the library across restarts),
//! and `POST /api/failures/retry`, which forgets a failure and starts a pass that tries the
//! file again.
//!
//! Rates are measured by the server between the samples it takes when asked: from the first
//! sample of a pass's current run (a run starts again when its count goes back below the
//! previous sample or its total changes), so no pass has to report timings itself.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Instant;

use actix_web::{HttpResponse, web};
use serde::Deserialize;
use serde_json::{Value, json};

use super::AppState;
use super::api::{ApiError, ApiResult, blocking};

/// Most failures one `GET /api/failures` lists.
const MAX_FAILURES: usize = 1000;

/// Where each pass's current run started, and its last sample.
#[derive(Default)]
pub(super) struct JobClock(Mutex<HashMap<&'static str, Run>>);

/// A pass's run as the samples saw it.
#[derive(Clone, Copy)]
struct Run {
    /// Items done at its first sample.
    start: u64,
    total: u64,
    since: Instant,
    /// Items done at the latest sample: a count below it is a new run.
    last: u64,
}

impl JobClock {
    /// Items per second and seconds left of the pass `name` at `done` of `total`, once it
    /// has moved since its run started.
    fn measure(&self, name: &'static str, done: u64, total: u64) -> (Option<f64>, Option<u64>) {
        self.measure_at(name, done, total, Instant::now())
    }

    /// [`JobClock::measure`] at the instant `now`.
    fn measure_at(&self, name: &'static str, done: u64, total: u64, now: Instant) -> (Option<f64>, Option<u64>) {
        let mut runs = self.0.lock().unwrap_or_else(|p| p.into_inner());
        let fresh = Run { start: done, total, since: now, last: done };
        let run = runs.entry(name).or_insert(fresh);
        // A count that went back (a new pass, even one interrupted before it finished), another
        // total, or the end: a new run starts from this sample.
        if done < run.last || total != run.total || done >= total {
            *run = fresh;
            return (None, None);
        }
        run.last = done;
        let elapsed = now.duration_since(run.since).as_secs_f64();
        if done == run.start || elapsed < 0.5 {
            return (None, None);
        }
        let rate = (done - run.start) as f64 / elapsed;
        (Some(rate), Some(((total - done) as f64 / rate).ceil() as u64))
    }
}

pub(super) fn routes(cfg: &mut web::ServiceConfig) {
    cfg.route("/jobs", web::get().to(jobs))
        .route("/jobs/{name}/pause", web::post().to(pause))
        .route("/jobs/{name}/resume", web::post().to(resume))
        .route("/failures", web::get().to(failures))
        .route("/failures/retry", web::post().to(retry));
}

/// Pauses a background pass (remembered by the library) and restarts the indexer with it.
async fn pause(state: web::Data<AppState>, name: web::Path<String>) -> ApiResult<HttpResponse> {
    set_paused(state, name.into_inner(), true).await
}

/// Resumes a paused background pass.
async fn resume(state: web::Data<AppState>, name: web::Path<String>) -> ApiResult<HttpResponse> {
    set_paused(state, name.into_inner(), false).await
}

async fn set_paused(state: web::Data<AppState>, name: String, paused: bool) -> ApiResult<HttpResponse> {
    let shared = state.clone();
    let echoed = name.clone();
    let now = blocking(move || shared.library.set_pass_paused(&name, paused)).await?;
    // A running pass ends; the indexer starts again with the change (or stays paused).
    state.indexer.settings_changed();
    Ok(HttpResponse::Ok().json(json!({ "name": echoed, "paused": paused, "paused_passes": now })))
}

#[derive(Deserialize)]
struct RetryBody {
    /// As `GET /api/failures` lists it (`path_bytes`: the exact bytes of a path that is not
    /// UTF-8).
    path: String,
    path_bytes: Option<String>,
}

/// Forgets a failure and runs an index pass that tries the file again; says whether it
/// failed again, and why.
async fn retry(state: web::Data<AppState>, body: web::Json<RetryBody>) -> ApiResult<HttpResponse> {
    let RetryBody { path, path_bytes } = body.into_inner();
    let tried = crate::path_text::from_json(&path, path_bytes.as_deref())
        .ok_or_else(|| ApiError::bad_request("path_bytes is not base64"))?;
    let shared = state.clone();
    let again = tried.clone();
    blocking(move || shared.library.retry_failure(&tried)).await?;
    let indexed = super::bulk::index_now(&state).await;
    let shared = state.clone();
    let failure = blocking(move || shared.library.failure(&again)).await?;
    Ok(HttpResponse::Ok().json(json!({
        "retrying": path, "indexed": indexed, "failed_again": failure.map(|f| f.reason),
    })))
}

async fn jobs(state: web::Data<AppState>) -> ApiResult<HttpResponse> {
    let indexer = state.indexer.status();
    let shared = state.clone();
    let (library, tagging, captioning, paused, faces) = blocking(move || {
        let library = shared.library.stats()?;
        let tagging = shared.library.autotag_settings()?.is_some();
        let faces = shared.library.settings()?.face_model_dir().is_some();
        Ok((library, tagging, shared.library.caption_settings()?.is_some(), shared.library.paused_passes()?, faces))
    })
    .await?;
    let images = library.counts.images;
    let passes: [Pass; 5] = [
        ("indexing", "Indexing new and changed files", Some((indexer.done, indexer.total))),
        ("tagging", "Auto-tagging", tagging.then_some((library.counts.tagged, images))),
        ("captioning", "Captioning", captioning.then_some((library.counts.captioned, images))),
        // Until its first run reports, a face pass that is on has looked at nothing.
        (
            "finding_faces",
            "Finding faces",
            faces.then(|| indexer.finding_faces.map_or((0, images), |p| (p.done, p.total))),
        ),
        ("thumbnails", "Thumbnails", indexer.thumbnails.map(|t| (t.done, t.total))),
    ];
    let jobs: Vec<Value> = passes
        .into_iter()
        .map(|(name, label, progress)| {
            let (done, total) = progress.unwrap_or((0, 0));
            let (rate, eta) = match progress {
                Some((done, total)) => state.jobs.measure(name, done, total),
                None => (None, None),
            };
            json!({
                "name": name, "label": label, "on": progress.is_some(),
                "done": done, "total": total, "running": progress.is_some() && done < total,
                "rate_per_s": rate, "eta_s": eta, "paused": paused.iter().any(|p| p == name),
            })
        })
        .collect();
    Ok(HttpResponse::Ok().json(json!({
        "state": indexer.state, "last_error": indexer.last_error, "jobs": jobs, "failures": library.counts.failures,
    })))
}

/// A pass: its name, its label, and its progress (done, total) when it is on.
type Pass = (&'static str, &'static str, Option<(u64, u64)>);

#[derive(Deserialize)]
struct FailureParams {
    limit: Option<String>,
}

async fn failures(state: web::Data<AppState>, params: web::Query<FailureParams>) -> ApiResult<HttpResponse> {
    let limit = match params.limit.as_deref() {
        None => 200,
        Some(text) => match text.parse::<usize>() {
            Ok(n) if (1..=MAX_FAILURES).contains(&n) => n,
            _ => return Err(ApiError::bad_request(format!("limit is a number from 1 to {MAX_FAILURES}"))),
        },
    };
    let failures = blocking(move || state.library.failures()).await?;
    let total = failures.len();
    let listed: Vec<Value> = failures
        .iter()
        .take(limit)
        .map(|(path, f)| crate::path_text::object(path, json!({"reason": f.reason, "attempts": f.attempts})))
        .collect();
    Ok(HttpResponse::Ok().json(json!({ "failures": listed, "total": total })))
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn the_rate_and_time_left_come_from_the_start_of_the_current_run() {
        let clock = JobClock::default();
        let t0 = Instant::now();
        let at = |s: f64| t0 + Duration::from_secs_f64(s);
        // The first sample starts the run: nothing measured yet.
        assert_eq!(clock.measure_at("indexing", 10, 110, at(0.0)), (None, None));
        // Not moved, or too soon: still nothing.
        assert_eq!(clock.measure_at("indexing", 10, 110, at(0.2)), (None, None));
        assert_eq!(clock.measure_at("indexing", 12, 110, at(0.3)), (None, None));
        // 20 items in 4 s: 5/s, and 80 left take 16 s.
        assert_eq!(clock.measure_at("indexing", 30, 110, at(4.0)), (Some(5.0), Some(16)));
        // Time left rounds up: 3 items in 2 s is 1.5/s, 77 left take 51.3 s, said 52.
        let clock = JobClock::default();
        clock.measure_at("captioning", 30, 110, at(0.0));
        assert_eq!(clock.measure_at("captioning", 33, 110, at(2.0)), (Some(1.5), Some(52)));
        // Each pass has its own run.
        assert_eq!(clock.measure_at("thumbnails", 0, 50, at(2.0)), (None, None));
        assert_eq!(clock.measure_at("thumbnails", 25, 50, at(7.0)), (Some(5.0), Some(5)));
    }

    #[test]
    fn a_run_starts_again_when_its_count_goes_back_or_its_total_changes() {
        let clock = JobClock::default();
        let t0 = Instant::now();
        let at = |s: u64| t0 + Duration::from_secs(s);
        clock.measure_at("indexing", 0, 100, at(0));
        assert_eq!(clock.measure_at("indexing", 50, 100, at(10)), (Some(5.0), Some(10)));
        // A new pass (its count back to 0): measured from here, not from the old start.
        assert_eq!(clock.measure_at("indexing", 0, 100, at(20)), (None, None));
        assert_eq!(clock.measure_at("indexing", 10, 100, at(30)), (Some(1.0), Some(90)));
        // More files found (the total changed): a new run too.
        assert_eq!(clock.measure_at("indexing", 20, 200, at(31)), (None, None));
        assert_eq!(clock.measure_at("indexing", 60, 200, at(35)), (Some(10.0), Some(14)));
        // Done: no rate and no time left.
        assert_eq!(clock.measure_at("indexing", 200, 200, at(40)), (None, None));
    }
}
