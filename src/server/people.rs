//! `/api/people`: the persons faces are grouped into, and the user's decisions about them.
//! Each handler translates a request into one library call ([`crate::Library::people`],
//! [`crate::Library::name_person`], [`crate::Library::merge_people`], ...).

use actix_web::http::header;
use actix_web::{HttpResponse, web};
use serde::Deserialize;
use serde_json::json;

use super::AppState;
use super::api::{ApiError, ApiResult, blocking, number_param};
use crate::store::{FaceId, PersonId};

/// The most persons one request may merge into another.
pub(super) const MAX_MERGE: usize = 1000;

pub(super) fn routes(cfg: &mut web::ServiceConfig) {
    cfg.route("/people", web::get().to(list))
        .route("/people/{id}", web::get().to(person))
        .route("/people/{id}", web::patch().to(change))
        .route("/people/{id}", web::post().to(change))
        .route("/faces/{id}/split", web::post().to(split))
        .route("/faces/{id}/not", web::post().to(not_person))
        .route("/faces/{id}/thumb", web::get().to(face_thumbnail));
}

#[derive(Deserialize)]
struct ListParams {
    /// `true`: hidden persons too.
    hidden: Option<String>,
}

fn flag(raw: Option<&str>, name: &str) -> ApiResult<bool> {
    match raw {
        None | Some("false") => Ok(false),
        Some("true") => Ok(true),
        Some(other) => Err(ApiError::bad_request(format!("{name} must be true or false, not {other:?}"))),
    }
}

fn id_of(raw: &str, what: &str) -> ApiResult<u64> {
    raw.trim().parse().map_err(|_| ApiError::bad_request(format!("{raw:?} is not a {what} id")))
}

async fn list(state: web::Data<AppState>, params: web::Query<ListParams>) -> ApiResult<HttpResponse> {
    let hidden = flag(params.hidden.as_deref(), "hidden")?;
    let people = blocking(move || state.library.people(hidden)).await?;
    Ok(HttpResponse::Ok().json(json!({ "people": people })))
}

/// One person, with its faces.
async fn person(state: web::Data<AppState>, id: web::Path<String>) -> ApiResult<HttpResponse> {
    let id: PersonId = id_of(&id, "person")?;
    let (summary, faces) = blocking(move || {
        let summary = state.library.people(true)?.into_iter().find(|p| p.id == id);
        let faces = state.library.faces_of_person(id)?;
        Ok((summary, faces))
    })
    .await?;
    let Some(summary) = summary else {
        return Err(ApiError::new(actix_web::http::StatusCode::NOT_FOUND, format!("no person {id}")));
    };
    Ok(HttpResponse::Ok().json(json!({ "person": summary, "faces": faces })))
}

/// What a PATCH (or POST) of a person changes; absent members stay as they are.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PersonChange {
    /// A new name (empty: no name).
    name: Option<String>,
    /// Hidden from the list, or shown again.
    hidden: Option<bool>,
    /// Persons merged into this one.
    merge: Option<Vec<PersonId>>,
}

async fn change(
    state: web::Data<AppState>,
    id: web::Path<String>,
    body: web::Json<PersonChange>,
) -> ApiResult<HttpResponse> {
    let id: PersonId = id_of(&id, "person")?;
    let body = body.into_inner();
    if body.merge.as_ref().is_some_and(|m| m.len() > MAX_MERGE) {
        return Err(ApiError::bad_request(format!("at most {MAX_MERGE} persons merged at a time")));
    }
    let summary = blocking(move || {
        let library = &state.library;
        // Every person named must exist before anything changes.
        let known: std::collections::HashSet<PersonId> = library.store().persons()?.iter().map(|p| p.id).collect();
        for p in std::iter::once(&id).chain(body.merge.iter().flatten()) {
            if !known.contains(p) {
                return Err(crate::Error::NotFound(format!("no person {p}")));
            }
        }
        for &from in body.merge.iter().flatten() {
            if from != id {
                library.merge_people(id, from)?;
            }
        }
        if let Some(name) = &body.name {
            library.name_person(id, name)?;
        }
        if let Some(hidden) = body.hidden {
            library.hide_person(id, hidden)?;
        }
        Ok(library.people(true)?.into_iter().find(|p| p.id == id))
    })
    .await?;
    Ok(HttpResponse::Ok().json(json!({ "person": summary })))
}

/// Splits a face off its person into a person of its own.
async fn split(state: web::Data<AppState>, id: web::Path<String>) -> ApiResult<HttpResponse> {
    let face: FaceId = id_of(&id, "face")?;
    let person = blocking(move || state.library.split_face(face)).await?;
    Ok(HttpResponse::Ok().json(json!({ "face": face, "person": person })))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NotBody {
    person: PersonId,
}

/// Marks a face as not a person.
async fn not_person(
    state: web::Data<AppState>,
    id: web::Path<String>,
    body: web::Json<NotBody>,
) -> ApiResult<HttpResponse> {
    let face: FaceId = id_of(&id, "face")?;
    let person = body.person;
    blocking(move || state.library.not_person(face, person)).await?;
    Ok(HttpResponse::Ok().json(json!({ "face": face, "not": person })))
}

#[derive(Deserialize)]
struct FaceThumbParams {
    size: Option<String>,
}

/// A square JPEG around one face (the People page shows each person by one).
async fn face_thumbnail(
    state: web::Data<AppState>,
    id: web::Path<String>,
    params: web::Query<FaceThumbParams>,
) -> ApiResult<HttpResponse> {
    let face: FaceId = id_of(&id, "face")?;
    let (min, max) = (crate::thumbnail::MIN_SIZE as usize, crate::library::FACE_THUMB_MAX_SIZE as usize);
    let size = number_param(params.size.as_deref(), "size", crate::library::FACE_THUMB_SIZE as usize, min, max)? as u32;
    let jpeg = blocking(move || state.library.face_thumbnail(face, size)).await?;
    // A face id is not reused for another face, but its box may move when faces are found
    // again: browsers keep it a short while only.
    Ok(HttpResponse::Ok()
        .content_type("image/jpeg")
        .insert_header((header::CACHE_CONTROL, "private, max-age=300"))
        .body(jpeg))
}
