//! `GET`/`PUT /api/settings`: the library's settings (its models, their precision, background
//! jobs), as `clipdex config` shows and changes them. A change applies at once: the models it
//! names load on their next use and the background indexer starts again with it.

use actix_web::{HttpResponse, web};
use serde_json::{Value, json};

use super::AppState;
use super::api::{ApiError, ApiResult, blocking};

pub(super) fn routes(cfg: &mut web::ServiceConfig) {
    cfg.route("/settings", web::get().to(get_settings)).route("/settings", web::put().to(put_settings));
}

async fn get_settings(state: web::Data<AppState>) -> ApiResult<HttpResponse> {
    let entries = blocking(move || state.library.setting_entries()).await?;
    Ok(HttpResponse::Ok().json(json!({ "settings": entries })))
}

/// The body: `{"NAME": VALUE, ...}`, a value a string (a model, a precision, `on`/`off`), a
/// boolean (background jobs) or null (forget the recorded value). All are checked before any
/// is recorded.
async fn put_settings(
    state: web::Data<AppState>,
    body: web::Json<serde_json::Map<String, Value>>,
) -> ApiResult<HttpResponse> {
    let mut changes = Vec::new();
    for (name, value) in body.into_inner() {
        let value = match value {
            Value::Null => None,
            Value::String(s) => Some(s),
            Value::Bool(on) => Some(if on { "on" } else { "off" }.to_string()),
            other => return Err(ApiError::bad_request(format!("{name}: a string or null, not {other}"))),
        };
        changes.push((name, value));
    }
    if changes.is_empty() {
        return Err(ApiError::bad_request("no settings given: send {\"NAME\": VALUE}"));
    }
    let entries = blocking(move || {
        // Checked together first, so that one bad value changes nothing.
        let mut check = state.library.settings()?;
        for (name, value) in &changes {
            if name == "model" {
                continue;
            }
            check.set(name, value.as_deref())?;
        }
        for (name, value) in &changes {
            state.library.set_setting_value(name, value.as_deref())?;
        }
        state.indexer.settings_changed();
        state.library.setting_entries()
    })
    .await?;
    Ok(HttpResponse::Ok().json(json!({ "settings": entries })))
}
