//! The `/api` handlers: each checks its input, calls the library on the blocking pool, and
//! answers JSON; errors are `{"error": MESSAGE}` with a status that says whose fault it is.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use actix_multipart::Multipart;
use actix_web::http::{StatusCode, header};
use actix_web::{HttpRequest, HttpResponse, ResponseError, web};
use futures_util::StreamExt;
use serde::{Deserialize, Serialize};
use serde_json::json;

use super::{AppState, MAX_K, MAX_LABELS, MAX_OFFSET, MAX_QUERY_BYTES};
use crate::error::{Error, ImageProblem};
use crate::library::{QueryOptions, RankedHit};
use crate::query::relevance::SortOrder;
use crate::query::syntax::{self, ParsedQuery, Term, TermSource};
use crate::query::{Kind, Media, SearchFilter, SearchHit, parse_date, tags};
use crate::store::ImageId;

/// An API error: a status and a message, answered as `{"error": MESSAGE}`.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    message: String,
    /// Seconds to wait before trying again, answered as `Retry-After`.
    retry_after: Option<u32>,
}

impl ApiError {
    pub(crate) fn new(status: StatusCode, message: impl Into<String>) -> Self {
        ApiError { status, message: message.into(), retry_after: None }
    }

    /// The same error, telling the client to retry after `secs` seconds.
    pub(crate) fn retry_after(mut self, secs: u32) -> Self {
        self.retry_after = Some(secs);
        self
    }

    /// The status answered.
    pub fn status(&self) -> StatusCode {
        self.status
    }

    /// The `Retry-After` answered, in seconds.
    pub fn retry_after_secs(&self) -> Option<u32> {
        self.retry_after
    }

    pub(crate) fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, message)
    }

    pub(crate) fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, message)
    }
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl ResponseError for ApiError {
    fn status_code(&self) -> StatusCode {
        self.status
    }

    fn error_response(&self) -> HttpResponse {
        let mut response = HttpResponse::build(self.status);
        if let Some(secs) = self.retry_after {
            response.insert_header((header::RETRY_AFTER, secs.to_string()));
        }
        response.json(json!({ "error": self.message }))
    }
}

impl From<Error> for ApiError {
    fn from(e: Error) -> Self {
        let status = match &e {
            Error::Invalid(_) => StatusCode::BAD_REQUEST,
            Error::NotFound(_) => StatusCode::NOT_FOUND,
            Error::Forbidden(_) => StatusCode::FORBIDDEN,
            Error::Image { problem: ImageProblem::TooLarge { .. } | ImageProblem::TooMuchMemory { .. }, .. } => {
                StatusCode::PAYLOAD_TOO_LARGE
            }
            Error::Image { problem: ImageProblem::NotFound, .. } => StatusCode::NOT_FOUND,
            Error::Image { path, .. } if path == Path::new("upload") => StatusCode::BAD_REQUEST,
            Error::Image { .. } => StatusCode::UNPROCESSABLE_ENTITY,
            Error::Model { .. } | Error::Tokenizer { .. } | Error::Device(_) | Error::Unreachable { .. } => {
                StatusCode::SERVICE_UNAVAILABLE
            }
            Error::Compute(_) | Error::Store(_) => StatusCode::INTERNAL_SERVER_ERROR,
        };
        if status.is_server_error() {
            tracing::warn!("request failed: {e}");
        }
        ApiError::new(status, e.to_string())
    }
}

pub(super) type ApiResult<T> = Result<T, ApiError>;

/// Runs library work on the blocking pool.
pub(super) async fn blocking<T: Send + 'static>(
    job: impl FnOnce() -> crate::Result<T> + Send + 'static,
) -> ApiResult<T> {
    web::block(job)
        .await
        .map_err(|_| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "the worker failed"))?
        .map_err(Into::into)
}

pub(super) fn routes(cfg: &mut web::ServiceConfig) {
    cfg.route("/search", web::get().to(search))
        .route("/search/image", web::post().to(search_image))
        .route("/images/{id}", web::get().to(image))
        .route("/images/{id}/thumb", web::get().to(thumbnail))
        .route("/images/{id}/file", web::get().to(file))
        .route("/images/{id}/live", web::get().to(live_video))
        .route("/images/{id}/motion", web::get().to(motion_video))
        .route("/tag", web::post().to(tag))
        .route("/tags", web::get().to(tag_counts))
        .route("/places", web::get().to(place_counts))
        .route("/duplicates", web::get().to(duplicates))
        .route("/duplicates/dismiss", web::post().to(dismiss_duplicates))
        .route("/status", web::get().to(status))
        .route("/timeline", web::get().to(timeline))
        .route("/timeline/months", web::get().to(timeline_months))
        .route("/folders", web::get().to(folders))
        .route("/roots", web::get().to(roots))
        .route("/roots", web::post().to(add_root))
        .route("/roots", web::delete().to(remove_root))
        .route(
            "/openapi.json",
            web::get().to(|state: web::Data<AppState>| async move {
                HttpResponse::Ok().json(super::openapi_with(&state.finetuned_names()))
            }),
        );
}

/// Paging and filters, shared by both searches.
#[derive(Debug, Default, Deserialize)]
struct SearchParams {
    q: Option<String>,
    k: Option<String>,
    offset: Option<String>,
    under: Option<String>,
    after: Option<String>,
    before: Option<String>,
    tag: Option<String>,
    /// Only images of this named person.
    person: Option<String>,
    /// `photo`, `video` or `all` (default).
    kind: Option<String>,
    /// Search by image: an indexed image's id.
    id: Option<String>,
    /// Text searches: also find where in each result the text is (CLIPSeg).
    crops: Option<String>,
    /// `clip` (default), `captions` (BM25 over stored BLIP captions) or `text` (the text read
    /// in photos).
    #[serde(rename = "in")]
    rank_in: Option<String>,
    /// Weight of caption matches blended into a CLIP text search (0 to 1, default 0.3; only
    /// when the library has captions).
    caption_weight: Option<String>,
    /// `clip:NAME`: re-rank a text search with the fine-tuned model registered as NAME.
    rerank: Option<String>,
    /// How many results the re-ranker re-scores (at least offset + k).
    rerank_top: Option<String>,
    /// Keep only results of at least this relevance (0 to 100).
    min_score: Option<String>,
    /// `score` (default), `date`, `-date` or `name`.
    sort: Option<String>,
    /// Counts of what the query matched: `year,place,camera,tag` (any of them).
    facets: Option<String>,
}

impl SearchParams {
    /// `(k, offset)`, checked.
    fn page(&self) -> ApiResult<(usize, usize)> {
        let k = number_param(self.k.as_deref(), "k", 20, 1, MAX_K)?;
        let offset = number_param(self.offset.as_deref(), "offset", 0, 0, MAX_OFFSET)?;
        Ok((k, offset))
    }

    /// `(min_score, sort)`, checked.
    fn cut_and_order(&self) -> ApiResult<(Option<f32>, SortOrder)> {
        let min = match self.min_score.as_deref().map(str::trim).filter(|m| !m.is_empty()) {
            None => None,
            Some(m) => match m.parse::<f32>() {
                Ok(m) if (0.0..=100.0).contains(&m) => Some(m),
                _ => return Err(ApiError::bad_request(format!("min_score must be between 0 and 100, not {m:?}"))),
            },
        };
        let sort = match self.sort.as_deref() {
            None => SortOrder::Score,
            Some(s) => s.parse().map_err(|e: crate::Error| ApiError::bad_request(e.to_string()))?,
        };
        Ok((min, sort))
    }

    /// The query string parsed ([`crate::query::syntax`]), empty when there is none.
    fn query(&self) -> ApiResult<ParsedQuery> {
        let text = self.q.as_deref().map(str::trim).unwrap_or("");
        if text.chars().count() > MAX_QUERY_BYTES {
            return Err(ApiError::bad_request(format!("the query is longer than {MAX_QUERY_BYTES} characters")));
        }
        Ok(syntax::parse(text).map_err(crate::Error::from)?)
    }

    fn filter(&self) -> ApiResult<SearchFilter> {
        let date = |d: &Option<String>, name: &str| -> ApiResult<Option<i64>> {
            match d.as_deref().map(str::trim).filter(|d| !d.is_empty()) {
                None => Ok(None),
                Some(d) => parse_date(d).map(Some).map_err(|e| ApiError::bad_request(format!("{name}: {e}"))),
            }
        };
        let under = match self.under.as_deref().filter(|u| !u.is_empty()) {
            None => None,
            Some(u) => Some(folder_param(u)?),
        };
        let tag = self.tag.as_deref().map(str::trim).filter(|t| !t.is_empty()).map(str::to_string);
        if tag.as_ref().is_some_and(|t| t.len() > tags::MAX_LABEL_BYTES) {
            return Err(ApiError::bad_request("tag is too long"));
        }
        let kind = match self.kind.as_deref().map(str::trim).filter(|k| !k.is_empty()) {
            None => Kind::All,
            Some(k) => k.parse().map_err(|e: crate::Error| ApiError::bad_request(e.to_string()))?,
        };
        let persons: Vec<String> =
            self.person.as_deref().map(str::trim).filter(|p| !p.is_empty()).map(str::to_string).into_iter().collect();
        if persons.iter().any(|p| p.len() > tags::MAX_LABEL_BYTES) {
            return Err(ApiError::bad_request("person is too long"));
        }
        Ok(SearchFilter {
            under,
            after: date(&self.after, "after")?,
            before: date(&self.before, "before")?,
            tag,
            kind,
            attributes: crate::store::attributes::AttributeFilter { persons, ..Default::default() },
        })
    }
}

/// A whole-number parameter within `min..=max`, `default` when absent.
/// The most images one "not duplicates" mark may name.
pub(super) const MAX_DISMISS: usize = 1000;

pub(super) fn number_param(raw: Option<&str>, name: &str, default: usize, min: usize, max: usize) -> ApiResult<usize> {
    // Absent: the default. Present, even empty, it must be a number (as documented).
    let Some(raw) = raw.map(str::trim) else { return Ok(default) };
    match raw.parse::<usize>() {
        Ok(n) if (min..=max).contains(&n) => Ok(n),
        _ => Err(ApiError::bad_request(format!("{name} must be a whole number between {min} and {max}, not {raw:?}"))),
    }
}

/// A folder a search is restricted to: absolute. Stored paths are canonical (no `..`), so a
/// folder with `..` in it simply holds no result: it can name nothing outside the library.
fn folder_param(p: &str) -> ApiResult<PathBuf> {
    let path = PathBuf::from(p);
    if !path.is_absolute() {
        return Err(ApiError::bad_request(format!("{p:?} is not an absolute path")));
    }
    if p.contains('\0') {
        return Err(ApiError::bad_request("a path cannot contain a NUL byte"));
    }
    Ok(path)
}

/// One search result: the CLI's `{id, path, score}` plus the image's date and size, and with
/// `crops` the region that best shows the query.
#[derive(Debug, Serialize)]
struct Hit {
    id: ImageId,
    #[serde(flatten, serialize_with = "crate::path_text::path_field")]
    path: PathBuf,
    score: f32,
    /// 0–100, calibrated per model on the library (absent for `in=captions`, whose score is
    /// BM25).
    #[serde(skip_serializing_if = "Option::is_none")]
    relevance: Option<f32>,
    /// `"kind"`, and a video's `"time"` and `"duration"`.
    #[serde(flatten)]
    media: Media,
    /// `"live_video"`, `"raw_path"`, `"motion_video"` when the photo has them.
    #[serde(flatten)]
    companions: crate::photo::companions::Companions,
    date: Option<i64>,
    width: Option<u32>,
    height: Option<u32>,
    /// Where the photo was taken (null without GPS).
    place: Option<crate::places::Place>,
    #[serde(skip_serializing_if = "Option::is_none")]
    region: Option<Option<crate::segment::Region>>,
    /// With `in=captions`: the caption matched (`score` is then its BM25 score).
    #[serde(skip_serializing_if = "Option::is_none")]
    caption: Option<String>,
    /// Blended searches: the caption's BM25 score (null when it did not match) ...
    #[serde(skip_serializing_if = "Option::is_none")]
    caption_score: Option<Option<f32>>,
    /// ... and the fused score the results are ordered by.
    #[serde(skip_serializing_if = "Option::is_none")]
    blended: Option<f32>,
    /// Re-ranked searches: the fine-tuned model's cosine (null when the photo could not be
    /// read); results are ordered by it.
    #[serde(skip_serializing_if = "Option::is_none")]
    finetuned: Option<Option<f32>>,
    /// `rerank=itm`: BLIP's match probability (null when the photo could not be read; results
    /// are ordered by it) and its ITC cosine.
    #[serde(skip_serializing_if = "Option::is_none")]
    itm: Option<Option<f32>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    itc: Option<Option<f32>>,
    /// With `in=text`, and blended searches where the photo's text matched: the matching
    /// lines and their boxes (`score` is the text's BM25 score with `in=text`).
    #[serde(skip_serializing_if = "Option::is_none")]
    text: Option<crate::query::fulltext::TextSnippet>,
}

/// How a search is re-ranked.
enum Rerank {
    /// By a registered fine-tuned CLIP.
    Clip(String),
    /// By BLIP's image–text matching head.
    Itm,
}

/// Most results a re-ranked search re-scores.
const MAX_RERANK_TOP: usize = 200;

/// Most results `rerank=itm` re-scores (each costs a BLIP image encoding).
pub(super) const MAX_ITM_TOP: usize = 100;

/// Results located with CLIPSeg at most (each costs a segmentation).
const MAX_CROPS: usize = 50;

fn page_of(state: &AppState, hits: Vec<SearchHit>, offset: usize) -> crate::Result<Vec<Hit>> {
    let calibration = state.library.calibration()?;
    let mut page = page_without_relevance(state, hits, offset)?;
    for hit in &mut page {
        hit.relevance = Some(crate::library::relevance_of(calibration.as_ref(), hit.score));
    }
    Ok(page)
}

/// A page of ranked results (relevance as the search gave it).
fn page_of_ranked(state: &AppState, ranked: Vec<RankedHit>, offset: usize) -> crate::Result<Vec<Hit>> {
    let relevance: Vec<f32> = ranked.iter().skip(offset).map(|r| r.relevance).collect();
    let mut page = page_without_relevance(state, ranked.into_iter().map(|r| r.hit).collect(), offset)?;
    for (hit, r) in page.iter_mut().zip(relevance) {
        hit.relevance = Some(r);
    }
    Ok(page)
}

fn page_without_relevance(state: &AppState, hits: Vec<SearchHit>, offset: usize) -> crate::Result<Vec<Hit>> {
    hits.into_iter()
        .skip(offset)
        .map(|h| {
            let record = state.library.store().image(h.id)?;
            Ok(Hit {
                id: h.id,
                path: h.path,
                score: h.score,
                relevance: None,
                media: h.media,
                companions: h.companions,
                date: record.as_ref().map(|r| r.date()),
                width: record.as_ref().map(|r| r.width),
                height: record.as_ref().map(|r| r.height),
                place: record.as_ref().and_then(|r| r.place()),
                region: None,
                caption: None,
                caption_score: None,
                blended: None,
                finetuned: None,
                itm: None,
                itc: None,
                text: None,
            })
        })
        .collect()
}

fn results(hits: Vec<Hit>, started: std::time::Instant) -> HttpResponse {
    HttpResponse::Ok().json(json!({"results": hits, "took_ms": started.elapsed().as_secs_f64() * 1000.0}))
}

/// An image id as the API documents it: digits only (Rust's own parsing would also take a
/// leading `+`).
pub(super) fn parse_id(raw: &str) -> ApiResult<ImageId> {
    let digits = raw.trim();
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return Err(ApiError::bad_request(format!("{raw:?} is not an image id: ids are digits")));
    }
    digits.parse().map_err(|_| ApiError::bad_request(format!("{raw:?} is not an image id")))
}

async fn search(state: web::Data<AppState>, params: web::Query<SearchParams>) -> ApiResult<HttpResponse> {
    let (k, offset) = params.page()?;
    let mut parsed = params.query()?;
    // A search of the text in photos looks for the query's words as written ("quoted phrases"
    // stay); its filters apply as filters, and its subtracted words as -text: filters.
    let photo_text = if params.rank_in.as_deref().map(str::trim) == Some("text") {
        let search = crate::query::syntax::text_search(params.q.as_deref().unwrap_or_default())
            .map_err(|e| ApiError::bad_request(e.to_string()))?;
        parsed.filters.not_texts.extend(search.excluded);
        search.words
    } else {
        String::new()
    };
    let filter = {
        // The query's text: filters ask the store (PostgreSQL blocks): off the runtime.
        let (s, q, f) = (state.clone(), parsed.clone(), params.filter()?);
        blocking(move || s.library.narrow_query(&q, &f)).await?
    };
    let (min_score, sort) = params.cut_and_order()?;
    let facets = match params.facets.as_deref() {
        None => None,
        Some(list) => Some(crate::library::Facet::parse_list(list).map_err(|e| ApiError::bad_request(e.to_string()))?),
    };
    let ranks_by_clip_alone = min_score.is_some() || sort != SortOrder::Score;
    // Captions and re-rankers compare words with words: they take a plain text query; regions
    // look for the query's words.
    let text = parsed.plain_text().unwrap_or("").to_string();
    let crops = match params.crops.as_deref() {
        None | Some("false") => false,
        Some("true") => true,
        Some(other) => return Err(ApiError::bad_request(format!("crops must be true or false, not {other:?}"))),
    };
    let (in_captions, in_text) = match params.rank_in.as_deref().map(str::trim) {
        None | Some("clip") => (false, false),
        Some("captions") => (true, false),
        Some("text") => (false, true),
        Some(other) => {
            return Err(ApiError::bad_request(format!("in must be clip, captions or text, not {other:?}")));
        }
    };
    if in_text
        && params.q.as_deref().is_some_and(|q| !q.trim().is_empty())
        && crate::query::fulltext::TextQuery::parse(&photo_text).is_empty()
    {
        return Err(ApiError::bad_request(
            "in=text needs words to look for (filters such as text:WORD only narrow the results)",
        ));
    }
    let weight = match params.caption_weight.as_deref().map(str::trim) {
        None => crate::query::captions::DEFAULT_CAPTION_WEIGHT,
        Some(w) => match w.parse::<f32>() {
            Ok(w) if (0.0..=1.0).contains(&w) => w,
            _ => return Err(ApiError::bad_request(format!("caption_weight must be between 0 and 1, not {w:?}"))),
        },
    };
    let rerank = match params.rerank.as_deref().map(str::trim) {
        None => None,
        Some("itm") => Some(Rerank::Itm),
        Some(r) => match r.strip_prefix("clip:") {
            Some(name) if !name.is_empty() => Some(Rerank::Clip(name.to_string())),
            _ => return Err(ApiError::bad_request(format!("rerank must be itm or clip:NAME, not {r:?}"))),
        },
    };
    let top = number_param(
        params.rerank_top.as_deref(),
        "rerank_top",
        crate::query::rerank::DEFAULT_RERANK_TOP,
        1,
        MAX_RERANK_TOP,
    )?;
    // Filters alone list what passes them, newest first (the library does); no query at all
    // finds nothing.
    if !parsed.has_terms()
        && parsed.filters == Default::default()
        && filter.tag.is_none()
        && filter.attributes.persons.is_empty()
    {
        if params.q.as_deref().is_some_and(|q| !q.trim().is_empty()) {
            return Err(ApiError::bad_request(
                "the query has nothing to look for: add words, an image (#ID) or a filter (tag:dog, person:Anna, after:2024, ...)",
            ));
        }
        // Nothing to look for: nothing found.
        let mut response = json!({"results": [], "took_ms": 0.0});
        if let Some(facets) = &facets {
            response["facets"] =
                json!(facets.iter().map(|f| (f.name(), json!([]))).collect::<std::collections::BTreeMap<_, _>>());
        }
        return Ok(HttpResponse::Ok().json(response));
    }
    if text.is_empty() && parsed.has_terms() && (in_captions || rerank.is_some()) {
        return Err(ApiError::bad_request(
            "in=captions and rerank take a plain text query (no weights, images or negative terms; filters are fine)",
        ));
    }
    if ranks_by_clip_alone && (in_captions || rerank.is_some()) {
        return Err(ApiError::bad_request("in=captions and rerank take neither min_score nor sort"));
    }
    let region_text = parsed.positive_text().unwrap_or_default();
    // Options that do not go together are settled by precedence (each is valid on its own, and
    // the API takes every request its description allows): ranking by captions, then
    // re-ranking, then regions (the text in photos before all); they need a text query and
    // are ignored without one.
    let in_text = in_text && !photo_text.trim().is_empty();
    let in_captions = in_captions && !text.is_empty() && !in_text;
    let rerank = rerank.filter(|_| !text.is_empty() && !in_captions && !in_text);
    let crops = crops && !region_text.is_empty() && !in_captions && !in_text && rerank.is_none();
    // Bounded work: regions for at most MAX_CROPS results a page; ITM re-scores at most the
    // best MAX_ITM_TOP, so its pages end there.
    let k = if crops { k.min(MAX_CROPS) } else { k };
    let (k, top) = match rerank {
        Some(Rerank::Itm) if offset >= MAX_ITM_TOP => return Ok(results(Vec::new(), std::time::Instant::now())),
        Some(Rerank::Itm) => (k.min(MAX_ITM_TOP - offset), top.min(MAX_ITM_TOP)),
        _ => (k, top),
    };
    let started = std::time::Instant::now();
    // Re-ranking and regions run models on photos: they take their turn in the heavy queue.
    let ticket = if rerank.is_some() || crops { Some(state.heavy.admit()?) } else { None };
    let (facet_state, facet_query, facet_filter) = (state.clone(), parsed.clone(), filter.clone());
    let hits = blocking(move || {
        let _turn = ticket.map(super::queue::Ticket::run);
        if let Some(Rerank::Itm) = rerank {
            let device = state.library.device()?;
            let name = state.blip_models()?.itm;
            let matcher = state.matcher.get(&state, &name, |name| {
                Ok(crate::models::blip::BlipMatcher::load(name, &device)?.with_precision(state.library.precision()))
            })?;
            let q = state.query_embedding(&text)?;
            let hits = state.library.search_vector(&q, top.max(offset + k), &filter)?;
            let mut ranked = crate::query::rerank::rerank_itm(&matcher, &text, hits, state.library.max_pixels())?;
            ranked.truncate(offset + k);
            let scores: Vec<(Option<f32>, Option<f32>)> = ranked.iter().skip(offset).map(|r| (r.itm, r.itc)).collect();
            let mut page = page_of(&state, ranked.into_iter().map(|r| r.hit).collect(), offset)?;
            for (hit, (itm, itc)) in page.iter_mut().zip(scores) {
                hit.itm = Some(itm);
                hit.itc = Some(itc);
            }
            return Ok(page);
        }
        if let Some(Rerank::Clip(name)) = rerank {
            let tuned = state.finetuned_model(&name)?;
            let ranked =
                state.library.search_reranked_with(&tuned, &text, (offset + k, top.max(offset + k)), &filter)?;
            let scores: Vec<Option<f32>> = ranked.iter().skip(offset).map(|r| r.finetuned).collect();
            let mut page = page_of(&state, ranked.into_iter().map(|r| r.hit).collect(), offset)?;
            for (hit, score) in page.iter_mut().zip(scores) {
                hit.finetuned = Some(score);
            }
            return Ok(page);
        }
        if in_text {
            let found = state.library.search_photo_text(&photo_text, offset + k, &filter)?;
            let snippets: Vec<_> = found.iter().skip(offset).map(|h| h.text.clone()).collect();
            let mut page = page_of(&state, found.into_iter().map(|h| h.hit).collect(), offset)?;
            for (hit, snippet) in page.iter_mut().zip(snippets) {
                hit.text = Some(snippet);
            }
            return Ok(page);
        }
        if in_captions {
            let found = state.library.search_captions(&text, offset + k, &filter)?;
            let captions: Vec<String> = found.iter().skip(offset).map(|h| h.caption.clone()).collect();
            let mut page = page_of(&state, found.into_iter().map(|h| h.hit).collect(), offset)?;
            for (hit, caption) in page.iter_mut().zip(captions) {
                hit.caption = Some(caption);
            }
            return Ok(page);
        }
        if !text.is_empty()
            && !crops
            && !ranks_by_clip_alone
            && ((weight > 0.0 && state.library.has_captions()?) || state.library.has_text()?)
        {
            let q = state.query_embedding(&text)?;
            let found = state.library.search_blended_with(&q, &text, offset + k, &filter, weight)?;
            let fused: Vec<_> =
                found.iter().skip(offset).map(|h| (h.caption_score, h.blended, h.text.clone())).collect();
            let mut page = page_of(&state, found.into_iter().map(|h| h.hit).collect(), offset)?;
            for (hit, (caption_score, blended, text)) in page.iter_mut().zip(fused) {
                hit.caption_score = Some(caption_score);
                hit.blended = Some(blended);
                hit.text = text;
            }
            return Ok(page);
        }
        let options = QueryOptions { k: offset + k, min_relevance: min_score, sort, allow_paths: false };
        let embed = |t: &str| state.query_embedding(t).map(|q| q.as_ref().clone());
        // The filter is already narrowed by the query: narrowing again changes nothing.
        let ranked = state.library.search_parsed_with(&parsed, None, &filter, &options, &embed)?;
        let mut page = page_of_ranked(&state, ranked, offset)?;
        if crops {
            let shown: Vec<SearchHit> = page
                .iter()
                .map(|h| SearchHit {
                    id: h.id,
                    path: h.path.clone(),
                    score: h.score,
                    media: h.media,
                    companions: h.companions.clone(),
                })
                .collect();
            let located =
                state.library.locate(&region_text, &shown, &crate::segment::RegionOptions::default(), &|_, _| {})?;
            for (hit, region) in page.iter_mut().zip(located) {
                hit.region = Some(region);
            }
        }
        Ok(page)
    })
    .await?;
    let Some(facets) = facets else { return Ok(results(hits, started)) };
    // What the query matched, counted: the query again, ranked by score, with the same filters
    // and cut-off.
    let counted = blocking(move || {
        let embed = |t: &str| facet_state.query_embedding(t).map(|q| q.as_ref().clone());
        facet_state.library.search_facets(&facet_query, &facet_filter, min_score, false, &facets, &embed)
    })
    .await?;
    Ok(HttpResponse::Ok().json(json!({
        "results": hits,
        "took_ms": started.elapsed().as_secs_f64() * 1000.0,
        "facets": counted,
    })))
}

/// The parts of a multipart form clipdex reads: `image` (a file) and short text fields.
#[derive(Default)]
struct Form {
    image: Option<Vec<u8>>,
    labels: Option<String>,
    templates: Option<String>,
}

async fn read_form(req: &HttpRequest, payload: web::Payload, limit: usize) -> ApiResult<Form> {
    let mut parts = Multipart::new(req.headers(), payload);
    let mut form = Form::default();
    let mut total = 0usize;
    while let Some(field) = parts.next().await {
        let mut field = field.map_err(|e| ApiError::bad_request(format!("bad multipart body: {e}")))?;
        let name = field.name().unwrap_or_default().to_string();
        let mut data = Vec::new();
        while let Some(chunk) = field.next().await {
            let chunk = chunk.map_err(|e| ApiError::bad_request(format!("bad multipart body: {e}")))?;
            total += chunk.len();
            if total > limit {
                return Err(ApiError::new(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    format!("the upload is larger than the limit of {limit} bytes (--max-upload)"),
                ));
            }
            data.extend_from_slice(&chunk);
        }
        let text =
            || String::from_utf8(data.clone()).map_err(|_| ApiError::bad_request(format!("{name} is not UTF-8")));
        match name.as_str() {
            "image" => form.image = Some(data),
            "labels" => form.labels = Some(text()?),
            "templates" => form.templates = Some(text()?),
            _ => {}
        }
    }
    Ok(form)
}

/// How long an upload or a request body may take to arrive (a client that sends a byte a
/// second must not hold a worker forever).
pub(crate) const BODY_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(60);

/// Reads a request body within the server's body timeout ([`BODY_TIMEOUT`] by default).
async fn within_time<T>(req: &HttpRequest, read: impl std::future::Future<Output = ApiResult<T>>) -> ApiResult<T> {
    let limit = req.app_data::<web::Data<AppState>>().map_or(BODY_TIMEOUT, |s| s.body_timeout);
    actix_web::rt::time::timeout(limit, read).await.unwrap_or_else(|_| {
        Err(ApiError::new(
            StatusCode::REQUEST_TIMEOUT,
            format!("the request body took longer than {} s to arrive", limit.as_secs_f64()),
        ))
    })
}

/// A JSON body of at most `limit` bytes. The content type must say JSON: a `text/plain` body
/// is what a cross-site form can send without asking, so it is refused.
async fn json_body<T: serde::de::DeserializeOwned>(
    req: &HttpRequest,
    payload: web::Payload,
    limit: usize,
) -> ApiResult<T> {
    let is_json = req
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|v| v.trim().eq_ignore_ascii_case("application/json"));
    if !is_json {
        return Err(ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "send the body as JSON with `Content-Type: application/json` (or a multipart form)",
        ));
    }
    let body = within_time(req, async {
        let body = payload.to_bytes_limited(limit).await.map_err(|_| {
            ApiError::new(StatusCode::PAYLOAD_TOO_LARGE, format!("the body is larger than {limit} bytes"))
        })?;
        body.map_err(|e| ApiError::bad_request(format!("cannot read the body: {e}")))
    })
    .await?;
    serde_json::from_slice(&body).map_err(|e| ApiError::bad_request(format!("bad JSON body: {e}")))
}

fn is_multipart(req: &HttpRequest) -> bool {
    req.headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.to_ascii_lowercase().starts_with("multipart/form-data"))
}

/// An image-to-image query: an upload, or the id of an indexed image (query string or JSON
/// body `{"id"}`).
enum ImageQuery {
    Upload(Vec<u8>),
    Indexed(ImageId),
}

#[derive(Deserialize)]
struct IdBody {
    id: ImageId,
}

async fn image_query(
    req: &HttpRequest,
    payload: web::Payload,
    id: Option<&str>,
    limit: usize,
) -> ApiResult<(ImageQuery, Form)> {
    if is_multipart(req) {
        let mut form = within_time(req, read_form(req, payload, limit)).await?;
        let image = form.image.take().ok_or_else(|| ApiError::bad_request("the form has no `image` file"))?;
        return Ok((ImageQuery::Upload(image), form));
    }
    if let Some(id) = id {
        return Ok((ImageQuery::Indexed(parse_id(id)?), Form::default()));
    }
    let length = req.headers().get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok());
    let has_body = length.is_some_and(|v| v.trim() != "0") || req.headers().contains_key(header::TRANSFER_ENCODING);
    if req.headers().get(header::CONTENT_TYPE).is_none() && !has_body {
        return Err(ApiError::bad_request("send an image (multipart field `image`) or an image id"));
    }
    let parsed: IdBody = json_body(req, payload, 64 << 10).await?;
    Ok((ImageQuery::Indexed(parsed.id), Form::default()))
}

async fn search_image(
    state: web::Data<AppState>,
    req: HttpRequest,
    payload: web::Payload,
    params: web::Query<SearchParams>,
) -> ApiResult<HttpResponse> {
    let (k, offset) = params.page()?;
    let mut parsed = params.query()?;
    let filter = {
        // The query's text: filters ask the store (PostgreSQL blocks): off the runtime.
        let (s, q, f) = (state.clone(), parsed.clone(), params.filter()?);
        blocking(move || s.library.narrow_query(&q, &f)).await?
    };
    let (min_score, sort) = params.cut_and_order()?;
    let (query, _) = image_query(&req, payload, params.id.as_deref(), state.max_upload).await?;
    let started = std::time::Instant::now();
    let hits = blocking(move || {
        // The image is one more term of the query (weight 1), with the words of `q` if any.
        let options = QueryOptions { k: offset + k, min_relevance: min_score, sort, allow_paths: false };
        let embed = |t: &str| state.query_embedding(t).map(|q| q.as_ref().clone());
        let ranked = match query {
            ImageQuery::Upload(bytes) => {
                state.library.search_parsed_with(&parsed, Some(&bytes), &filter, &options, &embed)?
            }
            ImageQuery::Indexed(id) => {
                // "More like this": the photo itself is left out, as `similar` leaves it out.
                parsed.terms.push(Term { weight: 1.0, source: TermSource::Image(id), column: 0 });
                let options = QueryOptions { k: options.k + 1, ..options };
                let mut ranked = state.library.search_parsed_with(&parsed, None, &filter, &options, &embed)?;
                ranked.retain(|r| r.hit.id != id);
                ranked.truncate(options.k - 1);
                ranked
            }
        };
        page_of_ranked(&state, ranked, offset)
    })
    .await?;
    Ok(results(hits, started))
}

async fn image(state: web::Data<AppState>, id: web::Path<String>) -> ApiResult<HttpResponse> {
    let id = parse_id(&id)?;
    let details = blocking(move || state.library.image_details(id)).await?;
    Ok(HttpResponse::Ok().json(details))
}

#[derive(Deserialize)]
struct ThumbParams {
    size: Option<String>,
    /// Videos: the frame shown at this many seconds (default: the poster frame).
    time: Option<String>,
}

async fn thumbnail(
    state: web::Data<AppState>,
    id: web::Path<String>,
    params: web::Query<ThumbParams>,
) -> ApiResult<HttpResponse> {
    let id = parse_id(&id)?;
    let (min, max) = (crate::thumbnail::MIN_SIZE as usize, crate::thumbnail::MAX_SIZE as usize);
    let size = number_param(params.size.as_deref(), "size", 256, min, max)? as u32;
    let time = match params.time.as_deref().map(str::trim).filter(|t| !t.is_empty()) {
        None => None,
        Some(t) => match t.parse::<f64>() {
            Ok(t) if t.is_finite() && t >= 0.0 => Some(t),
            _ => return Err(ApiError::bad_request(format!("time {t:?} is not a number of seconds"))),
        },
    };
    let bytes = blocking(move || match time {
        Some(time) => state.library.video_frame(id, time, size),
        None => {
            let path = state.library.thumbnail(id, size)?;
            std::fs::read(&path).map_err(|e| Error::Store(format!("cannot read the thumbnail {}: {e}", path.display())))
        }
    })
    .await?;
    // An id's content never changes (ids are per content hash), so browsers may keep it.
    Ok(HttpResponse::Ok()
        .content_type("image/jpeg")
        .insert_header((header::CACHE_CONTROL, "private, max-age=86400"))
        .body(bytes))
}

fn content_type(path: &Path) -> &'static str {
    let ext = path.extension().and_then(|e| e.to_str()).map(str::to_ascii_lowercase);
    match ext.as_deref() {
        Some("jpg" | "jpeg" | "jpe" | "jfif") => "image/jpeg",
        Some("png") => "image/png",
        Some("webp") => "image/webp",
        Some("gif") => "image/gif",
        Some("bmp") => "image/bmp",
        Some("tif" | "tiff") => "image/tiff",
        Some("heic" | "hif") => "image/heic",
        Some("heif") => "image/heif",
        Some("avif") => "image/avif",
        Some("jxl") => "image/jxl",
        Some("mp4" | "m4v") => "video/mp4",
        Some("mov") => "video/quicktime",
        Some("webm") => "video/webm",
        Some("mkv") => "video/x-matroska",
        Some("avi") => "video/x-msvideo",
        Some("3gp") => "video/3gpp",
        _ => "application/octet-stream",
    }
}

/// The original file, streamed from disk (a video is never read whole into memory), with
/// HTTP range requests (`Range: bytes=START-END`, `START-`, `-SUFFIX`), which video players
/// seek with: `206 Partial Content` for a satisfiable range, `416` for one past the end; a
/// request for several ranges gets the whole file.
///
/// With `format=jpeg` the answer is instead a JPEG rendition a browser can show (HEIC, RAW,
/// JPEG XL, AVIF are not shown by every browser), upright, at most `size` px on its longer side.
async fn file(
    state: web::Data<AppState>,
    id: web::Path<String>,
    params: web::Query<FileParams>,
    req: HttpRequest,
) -> ApiResult<HttpResponse> {
    let id = parse_id(&id)?;
    match params.format.as_deref() {
        None => {}
        Some("jpeg" | "jpg") => return display(state, id, params.size.as_deref()).await,
        Some(other) => {
            return Err(ApiError::bad_request(format!(
                "format must be jpeg (a JPEG rendition) or left out (the original file), not {other:?}"
            )));
        }
    }
    if params.size.is_some() {
        return Err(ApiError::bad_request("size is for format=jpeg: the original file has the size it has"));
    }
    let (path, file, len) = blocking(move || {
        let path = state.library.image_file(id)?;
        let hash = indexed_hash(&state.library, id)?;
        let (file, len) = open_to_serve(&state.library, &path, id, Some(&hash))?;
        Ok((path, file, len))
    })
    .await?;
    Ok(serve_part(&req, &path, content_type(&path), file, (0, len)))
}

/// Opens a file of the library to send it, once: the file opened is the file checked. Where
/// it really is (the open file's place, links resolved) must lie inside one of the library's
/// folders; a file reached through a link leading elsewhere (a linked album) is served only
/// when its content is the indexed image's (`indexed_hash`), read from the open file itself,
/// so a link swapped between a check and the open cannot hand out another file.
pub(super) fn open_to_serve(
    library: &crate::Library,
    path: &Path,
    id: ImageId,
    indexed_hash: Option<&str>,
) -> crate::Result<(std::fs::File, u64)> {
    use std::io::Seek;
    let cannot = |e: std::io::Error| Error::NotFound(format!("cannot read image {id}: {e}"));
    let mut file = crate::photo::open_regular_file(path).map_err(cannot)?;
    let meta = file.metadata().map_err(cannot)?;
    let real = real_path(&file, path).map_err(cannot)?;
    if library.roots()?.iter().any(|root| real.starts_with(root)) {
        return Ok((file, meta.len()));
    }
    let Some(indexed_hash) = indexed_hash else {
        return Err(Error::Forbidden(format!(
            "the file of image {id} leads outside the library's folders; it is not served"
        )));
    };
    let mut hasher = blake3::Hasher::new();
    hasher.update_reader(&file).map_err(cannot)?;
    if hasher.finalize().to_hex().as_str() != indexed_hash {
        return Err(Error::Forbidden(format!(
            "the files of image {id} changed since they were indexed (the next index pass looks at them again)"
        )));
    }
    file.rewind().map_err(cannot)?;
    Ok((file, meta.len()))
}

/// The content hash stored for image `id`.
pub(super) fn indexed_hash(library: &crate::Library, id: ImageId) -> crate::Result<String> {
    Ok(library.store().image(id)?.ok_or_else(|| Error::NotFound(format!("no image with id {id}")))?.hash)
}

/// Where an open file really is: on Linux the kernel's own answer for the descriptor; elsewhere
/// the path resolved (a link swapped in between goes unnoticed there).
fn real_path(file: &std::fs::File, path: &Path) -> std::io::Result<PathBuf> {
    #[cfg(target_os = "linux")]
    {
        use std::os::fd::AsRawFd;
        let _ = path;
        std::fs::read_link(format!("/proc/self/fd/{}", file.as_raw_fd()))
    }
    #[cfg(not(target_os = "linux"))]
    {
        let _ = file;
        std::fs::canonicalize(path)
    }
}

/// A Live Photo's MOV, served as [`file`] serves the original (range requests included).
async fn live_video(state: web::Data<AppState>, id: web::Path<String>, req: HttpRequest) -> ApiResult<HttpResponse> {
    let id = parse_id(&id)?;
    let (path, file, len) = blocking(move || {
        let path = state.library.live_video(id)?;
        let (file, len) = open_to_serve(&state.library, &path, id, None)?;
        Ok((path, file, len))
    })
    .await?;
    Ok(serve_part(&req, &path, "video/quicktime", file, (0, len)))
}

/// A Motion Photo's embedded MP4: the bytes of the photo's file that its XMP points at, as a
/// file of their own (range requests counted within them).
async fn motion_video(state: web::Data<AppState>, id: web::Path<String>, req: HttpRequest) -> ApiResult<HttpResponse> {
    let id = parse_id(&id)?;
    let (path, file, part) = blocking(move || {
        let (path, motion) = state.library.motion_video(id)?;
        let hash = indexed_hash(&state.library, id)?;
        let (file, len) = open_to_serve(&state.library, &path, id, Some(&hash))?;
        if motion.offset.saturating_add(motion.length) > len {
            return Err(Error::NotFound(format!("the Motion Photo video of image {id} is past the end of its file")));
        }
        Ok((path.with_extension("mp4"), file, (motion.offset, motion.length)))
    })
    .await?;
    Ok(serve_part(&req, &path, "video/mp4", file, part))
}

/// `len` bytes of `file` from `base` as a whole response named after `path`, honouring a
/// `Range` header within them.
fn serve_part(
    req: &HttpRequest,
    path: &Path,
    content_type: &str,
    file: std::fs::File,
    (base, len): (u64, u64),
) -> HttpResponse {
    let name = path.file_name().map(|n| n.to_string_lossy().replace(['"', '\\', '\r', '\n'], "_")).unwrap_or_default();
    let range = req.headers().get(header::RANGE).and_then(|v| v.to_str().ok()).and_then(|r| byte_range(r, len));
    let mut response = match range {
        None => HttpResponse::Ok(),
        Some(Ok(_)) => HttpResponse::PartialContent(),
        Some(Err(())) => {
            return HttpResponse::RangeNotSatisfiable()
                .insert_header((header::CONTENT_RANGE, format!("bytes */{len}")))
                .insert_header((header::ACCEPT_RANGES, "bytes"))
                .finish();
        }
    };
    let (start, end) = match range {
        Some(Ok((start, end))) => {
            response.insert_header((header::CONTENT_RANGE, format!("bytes {start}-{end}/{len}")));
            (start, end + 1)
        }
        _ => (0, len),
    };
    response
        .content_type(content_type)
        .insert_header((header::ACCEPT_RANGES, "bytes"))
        .insert_header((header::CONTENT_DISPOSITION, format!("inline; filename=\"{name}\"")))
        .insert_header(("X-Content-Type-Options", "nosniff"))
        .body(actix_web::body::SizedStream::new(end - start, file_stream(file, base + start, end - start)))
}

#[derive(Deserialize)]
struct FileParams {
    /// `jpeg`: a JPEG rendition instead of the original bytes.
    format: Option<String>,
    /// The rendition's longer side (default and most: [`crate::thumbnail::DISPLAY_MAX_SIZE`]).
    size: Option<String>,
}

/// Renditions made at once.
pub(super) const RENDITIONS_RUNNING: usize = 2;
/// Rendition requests that may wait for their turn; more are answered 503 with `Retry-After`.
pub(super) const RENDITIONS_WAITING: usize = 16;

/// Set when the request it belongs to is dropped (the client went away): the rendition's
/// blocking work looks at it and stops.
struct CancelOnDrop(Arc<std::sync::atomic::AtomicBool>);

impl Drop for CancelOnDrop {
    fn drop(&mut self) {
        self.0.store(true, std::sync::atomic::Ordering::Relaxed);
    }
}

/// The JPEG rendition of image `id` (`/file?format=jpeg`), made once and cached. Renditions
/// take their turn in a bounded queue, and one whose client went away (while waiting or
/// while being made) is given up: no decoding or encoding for nobody.
async fn display(state: web::Data<AppState>, id: ImageId, size: Option<&str>) -> ApiResult<HttpResponse> {
    let (min, max) = (crate::thumbnail::MIN_SIZE as usize, crate::thumbnail::DISPLAY_MAX_SIZE as usize);
    let size = number_param(size, "size", max, min, max)? as u32;
    let ticket = state.renditions.admit()?;
    let cancelled = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let _cancel_on_drop = CancelOnDrop(cancelled.clone());
    let (path, bytes) = blocking(move || {
        let _turn = ticket.run();
        let gone = || cancelled.load(std::sync::atomic::Ordering::Relaxed);
        let path = state.library.image_file(id)?;
        let cached = state.library.display_jpeg_unless(id, size, &gone)?.ok_or_else(|| {
            Error::Invalid(format!("the rendition of image {id} was cancelled: its client went away"))
        })?;
        let bytes = read_no_follow(&cached)
            .map_err(|e| Error::Store(format!("cannot read the rendition {}: {e}", cached.display())))?;
        Ok((path, bytes))
    })
    .await?;
    let stem = path.file_stem().map(|n| n.to_string_lossy().replace(['"', '\\', '\r', '\n'], "_")).unwrap_or_default();
    // An id's content never changes (ids are per content hash), so browsers may keep it.
    Ok(HttpResponse::Ok()
        .content_type("image/jpeg")
        .insert_header((header::CACHE_CONTROL, "private, max-age=86400"))
        .insert_header((header::CONTENT_DISPOSITION, format!("inline; filename=\"{stem}.jpg\"")))
        .insert_header(("X-Content-Type-Options", "nosniff"))
        .body(bytes))
}

/// A file's bytes, refusing a symbolic link in its place (a rendition kept in the database
/// folder is never a link clipdex made).
fn read_no_follow(path: &Path) -> std::io::Result<Vec<u8>> {
    use std::io::Read;
    let mut options = std::fs::OpenOptions::new();
    options.read(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::custom_flags(&mut options, libc::O_NOFOLLOW);
    let mut file = options.open(path)?;
    let mut bytes = Vec::new();
    file.read_to_end(&mut bytes)?;
    Ok(bytes)
}

/// The one byte range a `Range` header asks of a file of `len` bytes, inclusive: `None` when
/// the whole file is to be sent (no byte range, several ranges, or a header that is not one),
/// `Some(Err(()))` when the range lies past the end.
fn byte_range(header: &str, len: u64) -> Option<std::result::Result<(u64, u64), ()>> {
    let spec = header.trim().strip_prefix("bytes=")?.trim();
    if spec.contains(',') {
        return None;
    }
    let (first, last) = spec.split_once('-')?;
    let (first, last) = (first.trim(), last.trim());
    let number = |s: &str| if s.bytes().all(|b| b.is_ascii_digit()) { s.parse::<u64>().ok() } else { None };
    let range = if first.is_empty() {
        // The last `last` bytes.
        let suffix = number(last)?;
        if suffix == 0 || len == 0 {
            return Some(Err(()));
        }
        (len.saturating_sub(suffix), len - 1)
    } else {
        let start = number(first)?;
        let end = if last.is_empty() { u64::MAX } else { number(last)? };
        if end < start {
            return None;
        }
        if start >= len {
            return Some(Err(()));
        }
        (start, end.min(len - 1))
    };
    Some(Ok(range))
}

/// `len` bytes of `file` from `start`, read in pieces on the blocking pool as the client takes
/// them.
fn file_stream(
    file: std::fs::File,
    start: u64,
    len: u64,
) -> impl futures_util::Stream<Item = std::result::Result<web::Bytes, std::io::Error>> {
    const PIECE: u64 = 256 * 1024;
    futures_util::stream::unfold(Some((file, start, len)), |state| async move {
        let (mut file, at, left) = state?;
        if left == 0 {
            return None;
        }
        let n = left.min(PIECE) as usize;
        let read = web::block(move || {
            use std::io::{Read, Seek};
            let mut buf = vec![0u8; n];
            file.seek(std::io::SeekFrom::Start(at))?;
            file.read_exact(&mut buf)?;
            Ok::<_, std::io::Error>((file, buf))
        })
        .await;
        match read {
            Ok(Ok((file, buf))) => Some((Ok(web::Bytes::from(buf)), Some((file, at + n as u64, left - n as u64)))),
            Ok(Err(e)) => Some((Err(e), None)),
            Err(e) => Some((Err(std::io::Error::other(e.to_string())), None)),
        }
    })
}

/// `POST /api/tag` as JSON: labels (a list or one comma-separated string) and an image id.
#[derive(Deserialize)]
struct TagBody {
    labels: LabelList,
    id: ImageId,
    templates: Option<String>,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum LabelList {
    List(Vec<String>),
    Text(String),
}

fn labels_of(list: LabelList) -> ApiResult<Vec<String>> {
    let labels = match list {
        LabelList::List(l) => tags::parse_label_list(&l.join(",")),
        LabelList::Text(t) => tags::parse_label_list(&t),
    };
    if labels.is_empty() {
        return Err(ApiError::bad_request("no labels: send e.g. {\"labels\": [\"cat\", \"dog\"], \"id\": 1}"));
    }
    if labels.len() > MAX_LABELS {
        return Err(ApiError::bad_request(format!("at most {MAX_LABELS} labels per request")));
    }
    if labels.iter().any(|l| l.len() > tags::MAX_LABEL_BYTES) {
        return Err(ApiError::bad_request(format!("labels are at most {} bytes", tags::MAX_LABEL_BYTES)));
    }
    Ok(labels)
}

fn templates_of(name: Option<&str>) -> ApiResult<Vec<String>> {
    match name.unwrap_or("single") {
        "photo" => Ok(tags::PHOTO_TEMPLATES.iter().map(|s| s.to_string()).collect()),
        "single" => Ok(vec![tags::DEFAULT_TEMPLATE.to_string()]),
        other => Err(ApiError::bad_request(format!("templates must be \"photo\" or \"single\", not {other:?}"))),
    }
}

async fn tag(state: web::Data<AppState>, req: HttpRequest, payload: web::Payload) -> ApiResult<HttpResponse> {
    let (query, labels, templates) = if is_multipart(&req) {
        let (query, form) = image_query(&req, payload, None, state.max_upload).await?;
        let labels = form.labels.ok_or_else(|| ApiError::bad_request("the form has no `labels` field"))?;
        (query, labels_of(LabelList::Text(labels))?, templates_of(form.templates.as_deref())?)
    } else {
        let parsed: TagBody = json_body(&req, payload, 1 << 20).await?;
        (ImageQuery::Indexed(parsed.id), labels_of(parsed.labels)?, templates_of(parsed.templates.as_deref())?)
    };
    let ranked = blocking(move || {
        let image = match query {
            ImageQuery::Upload(bytes) => state.library.embed_image_bytes(&bytes)?,
            ImageQuery::Indexed(id) => state.library.stored_vector(id)?,
        };
        let (classifier, _) = state.library.classifier(&labels, &templates)?;
        Ok(classifier.classify(&image))
    })
    .await?;
    Ok(HttpResponse::Ok().json(json!({ "labels": ranked })))
}

async fn tag_counts(state: web::Data<AppState>) -> ApiResult<HttpResponse> {
    let counts = blocking(move || state.library.tag_counts()).await?;
    Ok(HttpResponse::Ok().json(json!({ "tags": counts })))
}

async fn place_counts(state: web::Data<AppState>) -> ApiResult<HttpResponse> {
    let counts = blocking(move || state.library.place_counts()).await?;
    Ok(HttpResponse::Ok().json(counts))
}

#[derive(Deserialize)]
struct DuplicatesParams {
    threshold: Option<String>,
}

/// The near-duplicate groups (`clipdex duplicates --json`). The photos of candidate pairs are
/// decoded once for their perceptual hash, so a first call on a large library takes a while.
async fn duplicates(state: web::Data<AppState>, params: web::Query<DuplicatesParams>) -> ApiResult<HttpResponse> {
    let threshold = match params.threshold.as_deref().map(str::trim) {
        None => crate::query::duplicates::DEFAULT_THRESHOLD,
        // Parsed wide: a tiny positive number is still above 0 (and then the smallest f32).
        Some(raw) => match raw.parse::<f64>() {
            Ok(t) if t > 0.0 && t <= 1.0 => (t as f32).max(f32::MIN_POSITIVE),
            _ => return Err(ApiError::bad_request(format!("threshold must be a number in (0, 1], not {raw:?}"))),
        },
    };
    let report = blocking(move || state.library.duplicates(threshold, &|_, _| {})).await?;
    Ok(HttpResponse::Ok().json(report))
}

#[derive(Deserialize)]
struct DismissBody {
    ids: Vec<ImageId>,
}

/// Marks images as not duplicates of each other (`clipdex duplicates --dismiss`).
async fn dismiss_duplicates(state: web::Data<AppState>, body: web::Json<DismissBody>) -> ApiResult<HttpResponse> {
    let ids = body.into_inner().ids;
    if ids.len() > MAX_DISMISS {
        return Err(ApiError::bad_request(format!("at most {MAX_DISMISS} ids at a time")));
    }
    let echoed = ids.clone();
    blocking(move || state.library.dismiss_duplicates(&ids)).await?;
    Ok(HttpResponse::Ok().json(json!({ "dismissed": echoed })))
}

async fn status(state: web::Data<AppState>) -> ApiResult<HttpResponse> {
    let indexer = state.indexer.status();
    let finetuned = state.finetuned_names();
    let (library, tagging, captioning) = blocking(move || {
        let library = state.library.stats()?;
        Ok((library, state.library.autotag_settings()?.is_some(), state.library.caption_settings()?.is_some()))
    })
    .await?;
    // Each stage: images done of the library's (embedding: files of the running pass); null
    // for a stage that is switched off or has not run yet.
    let (images, counts) = (library.counts.images, &library.counts);
    let stages = json!({
        "embedding": {"done": indexer.done, "total": indexer.total},
        "tagging": tagging.then(|| json!({"done": counts.tagged, "total": images})),
        "captioning": captioning.then(|| json!({"done": counts.captioned, "total": images})),
        // Reading text: the background run's position, as for thumbnails (the store keeps no
        // count of photos read by the current model).
        "reading_text": indexer.reading_text,
        "finding_faces": indexer.finding_faces,
        "thumbnails": indexer.thumbnails,
    });
    Ok(HttpResponse::Ok()
        .json(json!({ "library": library, "indexer": indexer, "stages": stages, "finetuned": finetuned })))
}

/// Most items a timeline page holds.
pub(super) const MAX_TIMELINE_LIMIT: usize = 500;

#[derive(Deserialize)]
struct TimelineParams {
    cursor: Option<String>,
    limit: Option<String>,
    /// `YYYY-MM`: start at the newest item of that month (ignored with a cursor).
    month: Option<String>,
    /// Only images with a file at or under this absolute folder.
    folder: Option<String>,
}

/// An optional folder parameter: absent or empty, none.
fn optional_folder(raw: Option<&str>) -> ApiResult<Option<PathBuf>> {
    raw.filter(|p| !p.is_empty()).map(folder_param).transpose()
}

/// The library newest first, a page at a time (`next` is the cursor of the following page).
async fn timeline(state: web::Data<AppState>, params: web::Query<TimelineParams>) -> ApiResult<HttpResponse> {
    let limit = number_param(params.limit.as_deref(), "limit", 60, 1, MAX_TIMELINE_LIMIT)?;
    let folder = optional_folder(params.folder.as_deref())?;
    let cursor =
        match (params.cursor.as_deref().filter(|c| !c.is_empty()), params.month.as_deref().filter(|m| !m.is_empty())) {
            (Some(cursor), _) => Some(cursor.parse::<crate::library::TimelineCursor>()?),
            (None, Some(month)) => Some(crate::library::TimelineCursor::month_start(month)?),
            (None, None) => None,
        };
    let page = blocking(move || state.library.timeline(cursor, limit, folder.as_deref())).await?;
    Ok(HttpResponse::Ok().json(page))
}

#[derive(Deserialize)]
struct FolderParams {
    folder: Option<String>,
}

/// How many items each month holds, newest first (the timeline's date scrubber).
async fn timeline_months(state: web::Data<AppState>, params: web::Query<FolderParams>) -> ApiResult<HttpResponse> {
    let folder = optional_folder(params.folder.as_deref())?;
    let months = blocking(move || state.library.timeline_months(folder.as_deref())).await?;
    Ok(HttpResponse::Ok().json(json!({ "months": months })))
}

#[derive(Deserialize)]
struct FoldersParams {
    path: Option<String>,
}

/// The roots with their photo counts, or a folder's subfolders with theirs.
async fn folders(state: web::Data<AppState>, params: web::Query<FoldersParams>) -> ApiResult<HttpResponse> {
    let folder = optional_folder(params.path.as_deref())?;
    let listing = blocking(move || state.library.folders(folder.as_deref())).await?;
    Ok(HttpResponse::Ok().json(listing))
}

async fn roots(state: web::Data<AppState>) -> ApiResult<HttpResponse> {
    let roots = blocking(move || state.library.roots()).await?;
    let mut doc = serde_json::Map::new();
    crate::path_text::insert_list(&mut doc, "roots", "roots_bytes", &roots);
    Ok(HttpResponse::Ok().json(doc))
}

#[derive(Deserialize)]
struct RootBody {
    path: String,
}

/// A library folder named in a request: absolute. `..` is allowed here (unlike in a search
/// filter): the folder is resolved before it is stored, and removing one compares it with the
/// stored folders.
fn root_param(p: &str) -> ApiResult<PathBuf> {
    if p.trim().is_empty() {
        return Err(ApiError::bad_request("give the folder's path"));
    }
    folder_param(p)
}

async fn add_root(state: web::Data<AppState>, req: HttpRequest, body: web::Json<RootBody>) -> ApiResult<HttpResponse> {
    super::forward::owner_only(&state, &req)?;
    let path = root_param(&body.path)?;
    let indexer = state.indexer.clone();
    let root = blocking(move || state.library.add_root(&path)).await?;
    indexer.roots_changed();
    let mut doc = serde_json::Map::new();
    crate::path_text::insert(&mut doc, "root", &root);
    Ok(HttpResponse::Created().json(doc))
}

#[derive(Deserialize)]
struct RootQuery {
    path: Option<String>,
}

async fn remove_root(
    state: web::Data<AppState>,
    req: HttpRequest,
    query: web::Query<RootQuery>,
    body: Option<web::Json<RootBody>>,
) -> ApiResult<HttpResponse> {
    super::forward::owner_only(&state, &req)?;
    let raw = match (&query.path, &body) {
        (Some(p), _) => p.clone(),
        (None, Some(b)) => b.path.clone(),
        (None, None) => return Err(ApiError::bad_request("give the folder: ?path=FOLDER or {\"path\": FOLDER}")),
    };
    let path = root_param(&raw)?;
    let indexer = state.indexer.clone();
    let library: Arc<crate::Library> = state.library.clone();
    let removed = blocking(move || library.remove_root(&path)).await?;
    indexer.roots_changed();
    Ok(HttpResponse::Ok().json(json!({ "removed": removed })))
}
