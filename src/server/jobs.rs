//! `GET /api/jobs` and `GET /api/failures`: the background passes of the server (indexing,
//! tagging, captioning, finding faces, thumbnails) with their progress, rate and time left, and the files
//! that could not be indexed with their reasons (the web UI's Jobs view).
//!
//! Rates are measured by the server between the samples it takes when asked: from the first
//! sample of a pass's current run (a run starts again when its count goes back or its total
//! changes), so no pass has to report timings itself.

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

/// Where each pass's current run started: name → (done, total, when).
#[derive(Default)]
pub(super) struct JobClock(Mutex<HashMap<&'static str, (u64, u64, Instant)>>);

impl JobClock {
    /// Items per second and seconds left of the pass `name` at `done` of `total`, once it
    /// has moved since its run started.
    fn measure(&self, name: &'static str, done: u64, total: u64) -> (Option<f64>, Option<u64>) {
        let now = Instant::now();
        let mut runs = self.0.lock().unwrap_or_else(|p| p.into_inner());
        let start = runs.entry(name).or_insert((done, total, now));
        if done < start.0 || total != start.1 || done >= total {
            *start = (done, total, now);
            return (None, None);
        }
        let elapsed = now.duration_since(start.2).as_secs_f64();
        if done == start.0 || elapsed < 0.5 {
            return (None, None);
        }
        let rate = (done - start.0) as f64 / elapsed;
        (Some(rate), Some(((total - done) as f64 / rate).ceil() as u64))
    }
}

pub(super) fn routes(cfg: &mut web::ServiceConfig) {
    cfg.route("/jobs", web::get().to(jobs)).route("/failures", web::get().to(failures));
}

async fn jobs(state: web::Data<AppState>) -> ApiResult<HttpResponse> {
    let indexer = state.indexer.status();
    let shared = state.clone();
    let (library, tagging, captioning, faces) = blocking(move || {
        let library = shared.library.stats()?;
        let faces = shared.library.settings()?.face_model_dir().is_some();
        Ok((library, shared.library.autotag_settings()?.is_some(), shared.library.caption_settings()?.is_some(), faces))
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
                "rate_per_s": rate, "eta_s": eta,
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
