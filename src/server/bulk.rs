//! The web UI's writes on several photos at once: moving duplicates out of the library and
//! back (`POST /api/duplicates/resolve`, `POST /api/duplicates/restore`, which indexes them
//! again before it answers), and giving selected
//! photos a tag (`POST /api/tags/add`). Each handler checks its body and calls the library.

use std::time::Duration;

use actix_web::{HttpResponse, web};
use serde::Deserialize;
use serde_json::{Map, Value, json};

use super::AppState;
use super::api::{ApiError, ApiResult, MAX_DISMISS, blocking};
use crate::library::{GroupChoice, MoveReport};
use crate::path_text;
use crate::store::ImageId;

/// The longest a write waits for the index pass it started.
const INDEX_WAIT: Duration = Duration::from_secs(120);

pub(super) fn routes(cfg: &mut web::ServiceConfig) {
    cfg.route("/duplicates/resolve", web::post().to(resolve))
        .route("/duplicates/restore", web::post().to(restore))
        .route("/tags/add", web::post().to(add_tag));
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ResolveBody {
    /// The groups' choices; absent with `all`.
    #[serde(default)]
    groups: Option<Vec<GroupChoice>>,
    /// Every group: keep the suggested photo, move out the others.
    #[serde(default)]
    all: bool,
    /// The threshold the groups were found at (as `GET /api/duplicates?threshold=`).
    #[serde(default)]
    threshold: Option<f64>,
}

/// Moves out of the library the photos chosen (or every group's but the suggested one), into
/// a new batch of the duplicates folder; the answer names the batch that undoes it.
async fn resolve(state: web::Data<AppState>, body: web::Json<ResolveBody>) -> ApiResult<HttpResponse> {
    let body = body.into_inner();
    let threshold = match body.threshold {
        None => crate::query::duplicates::DEFAULT_THRESHOLD,
        // Read wide, as GET /api/duplicates reads it: 1.0000000001 is over 1.
        Some(t) if t > 0.0 && t <= 1.0 => (t as f32).max(f32::MIN_POSITIVE),
        Some(t) => return Err(ApiError::bad_request(format!("threshold must be a number in (0, 1], not {t}"))),
    };
    let choices = match (body.all, body.groups) {
        (true, None) => None,
        (false, Some(groups)) if !groups.is_empty() => {
            if groups.iter().map(|g| g.move_out.len() + 1).sum::<usize>() > MAX_DISMISS {
                return Err(ApiError::bad_request(format!("at most {MAX_DISMISS} photos at a time")));
            }
            Some(groups)
        }
        _ => {
            return Err(ApiError::bad_request(
                "send either {\"groups\": [{\"keep\": ID, \"move\": [ID, ...]}, ...]} or {\"all\": true}",
            ));
        }
    };
    let shared = state.clone();
    let resolved = blocking(move || shared.library.resolve_duplicates(threshold, choices.as_deref())).await?;
    let mut body = moves_json(&resolved.report, "moved");
    body.insert("batch".into(), resolved.batch.into());
    path_text::insert(&mut body, "folder", &resolved.folder);
    Ok(HttpResponse::Ok().json(body))
}

#[derive(Deserialize)]
struct RestoreBody {
    batch: String,
}

/// Puts back the files of a batch; a new index pass, started now, indexes them again.
async fn restore(state: web::Data<AppState>, body: web::Json<RestoreBody>) -> ApiResult<HttpResponse> {
    let batch = body.into_inner().batch;
    let shared = state.clone();
    let report = blocking(move || shared.library.restore_duplicates(&batch)).await?;
    let mut body = moves_json(&report, "restored");
    body.insert("indexed".into(), index_now(&state).await.into());
    Ok(HttpResponse::Ok().json(body))
}

/// Runs an index pass now, when the server indexes (not paused, not waiting for its model),
/// and waits for it (at most [`INDEX_WAIT`]), so that the answer's next read sees what it
/// found; whether one ran.
pub(super) async fn index_now(state: &web::Data<AppState>) -> bool {
    use super::IndexerState::{Off, Paused, WaitingForModel};
    if matches!(state.indexer.status().state, Off | Paused | WaitingForModel) {
        return false;
    }
    let indexer = state.indexer.clone();
    web::block(move || indexer.index_now(INDEX_WAIT)).await.ok().flatten().is_some()
}

/// A move's report as `clipdex duplicates --move-to DIR --json` prints it: `{VERB: [{id,
/// from, to}], skipped: [{path, reason}], journal}`.
fn moves_json(report: &MoveReport, verb: &str) -> Map<String, Value> {
    let moved: Vec<Value> = report
        .moved
        .iter()
        .map(|m| {
            let mut o = Map::new();
            o.insert("id".into(), m.id.into());
            path_text::insert(&mut o, "from", &m.from);
            path_text::insert(&mut o, "to", &m.to);
            Value::Object(o)
        })
        .collect();
    let skipped: Vec<Value> =
        report.skipped.iter().map(|s| path_text::object(&s.path, json!({ "reason": s.reason }))).collect();
    let mut o = Map::new();
    o.insert(verb.into(), moved.into());
    o.insert("skipped".into(), skipped.into());
    path_text::insert(&mut o, "journal", &report.journal);
    o
}

#[derive(Deserialize)]
struct AddTagBody {
    ids: Vec<ImageId>,
    tag: String,
}

/// Gives the photos a tag by hand (kept through auto-tagging runs).
async fn add_tag(state: web::Data<AppState>, body: web::Json<AddTagBody>) -> ApiResult<HttpResponse> {
    let AddTagBody { ids, tag } = body.into_inner();
    if ids.len() > MAX_DISMISS {
        return Err(ApiError::bad_request(format!("at most {MAX_DISMISS} photos at a time")));
    }
    let label = tag.trim().to_string();
    let echoed = label.clone();
    let tagged = blocking(move || state.library.add_tag(&ids, &label)).await?;
    Ok(HttpResponse::Ok().json(json!({ "tag": echoed, "tagged": tagged })))
}
