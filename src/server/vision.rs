//! The model-heavy endpoints: BLIP questions, captions and image–text matching on an indexed
//! photo, CLIPSeg masks and regions, and crop search. Each model loads on first use (a model
//! that cannot be loaded answers 503 with the reason, and the next request tries again), each
//! request runs on the blocking pool so searches stay fast meanwhile, the work of one
//! request is bounded (prompts, texts, candidates, photos reduced to a bounded side), and
//! the requests at once are bounded by the server's heavy queue (503 with `Retry-After`
//! beyond it).

use std::sync::{Arc, Mutex};

use actix_web::{HttpRequest, HttpResponse, web};
use serde::Deserialize;
use serde_json::json;

use super::AppState;
use super::api::{ApiError, ApiResult, blocking, number_param, parse_id};
use crate::error::Result;
use crate::library::CaptionOptions;
use crate::models::blip::{BlipAnswerer, BlipMatcher};
use crate::segment::{self, RegionOptions};

/// The BLIP models the server uses, by name (hub id or directory).
#[derive(Debug, Clone)]
pub struct BlipModels {
    /// Captioning (`POST /api/images/{id}/caption`).
    pub caption: String,
    /// Visual question answering (`POST /api/images/{id}/ask`).
    pub vqa: String,
    /// Image–text matching (`POST /api/images/{id}/match`, `rerank=itm`).
    pub itm: String,
}

impl Default for BlipModels {
    fn default() -> Self {
        BlipModels {
            caption: crate::models::blip::DEFAULT_CAPTION_MODEL.into(),
            vqa: crate::models::blip::DEFAULT_VQA_MODEL.into(),
            itm: crate::models::blip::DEFAULT_ITM_MODEL.into(),
        }
    }
}

/// A model loaded on first use and kept while the library's settings name it; a failed load
/// is not kept, so a model put in place later (or a network back) works without a restart,
/// and so does a model the settings change to.
pub(super) struct OnDemand<T> {
    slot: Mutex<Option<(String, Arc<T>)>>,
}

impl<T> Default for OnDemand<T> {
    fn default() -> Self {
        OnDemand { slot: Mutex::new(None) }
    }
}

impl<T> OnDemand<T> {
    /// The model `name` at the library's precision now, loading it with `load` when another
    /// (or none) is loaded (one load at a time).
    pub(super) fn get(&self, state: &AppState, name: &str, load: impl FnOnce(&str) -> Result<T>) -> Result<Arc<T>> {
        let key = format!("{name} {}", state.library.precision());
        let mut slot = self.slot.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((loaded, model)) = slot.as_ref()
            && *loaded == key
        {
            return Ok(model.clone());
        }
        *slot = None;
        let model = Arc::new(load(name)?);
        *slot = Some((key, model.clone()));
        Ok(model)
    }
}

impl BlipModels {
    /// The models the library's settings name, these where it names none.
    pub(super) fn with_settings(&self, settings: &crate::library::Settings) -> BlipModels {
        BlipModels {
            caption: settings.caption_model.clone().unwrap_or_else(|| self.caption.clone()),
            vqa: settings.vqa_model.clone().unwrap_or_else(|| self.vqa.clone()),
            itm: settings.itm_model.clone().unwrap_or_else(|| self.itm.clone()),
        }
    }
}

/// The most prompts one segmentation request may give.
pub(crate) const MAX_PROMPTS: usize = 8;
/// The most texts one matching request may give.
pub(crate) const MAX_MATCH_TEXTS: usize = 32;
/// The most bytes of a question, a prompt or a text.
pub(crate) const MAX_TEXT_BYTES: usize = 500;
/// The most candidates a crop search segments.
pub(crate) const MAX_CROP_CANDIDATES: usize = 100;

/// Beam width and answer length of `ask` (as the CLI's defaults).
const ASK_BEAMS: usize = 3;
const ASK_TOKENS: usize = 10;
/// Beam width and caption length of a caption made on request (as `caption`'s defaults).
const CAPTION_BEAMS: usize = 3;
const CAPTION_TOKENS: usize = 30;

pub(super) fn routes(cfg: &mut web::ServiceConfig) {
    cfg.route("/images/{id}/ask", web::post().to(ask))
        .route("/images/{id}/caption", web::post().to(caption))
        .route("/images/{id}/match", web::post().to(match_texts))
        .route("/images/{id}/segment", web::get().to(segment_image))
        .route("/crops", web::get().to(crops));
}

fn text_param(text: &str, what: &str) -> ApiResult<String> {
    let text = text.trim();
    if text.is_empty() {
        return Err(ApiError::bad_request(format!("the {what} is empty")));
    }
    if text.chars().count() > MAX_TEXT_BYTES {
        return Err(ApiError::bad_request(format!("the {what} is longer than {MAX_TEXT_BYTES} characters")));
    }
    Ok(text.to_string())
}

#[derive(Deserialize)]
struct AskBody {
    question: String,
}

async fn ask(state: web::Data<AppState>, id: web::Path<String>, body: web::Json<AskBody>) -> ApiResult<HttpResponse> {
    let id = parse_id(&id)?;
    let question = text_param(&body.question, "question")?;
    let asked = question.clone();
    let ticket = state.heavy.admit()?;
    let answer = blocking(move || {
        let _turn = ticket.run();
        let image = state.library.open_indexed(id, None)?;
        let device = state.library.device()?;
        let name = state.blip_models()?.vqa;
        let model = state.answerer.get(&state, &name, |name| {
            Ok(BlipAnswerer::load(name, &device)?.with_precision(state.library.precision()))
        })?;
        model.answer(&image, &asked, ASK_BEAMS, ASK_TOKENS)
    })
    .await?;
    Ok(HttpResponse::Ok().json(json!({ "question": question, "answer": answer.text })))
}

async fn caption(state: web::Data<AppState>, id: web::Path<String>) -> ApiResult<HttpResponse> {
    let id = parse_id(&id)?;
    let ticket = state.heavy.admit()?;
    let text = blocking(move || {
        let _turn = ticket.run();
        let name = state.blip_models()?.caption;
        let model = state.library.captioner(&name)?;
        let options = CaptionOptions { model: name, prompt: None, beams: CAPTION_BEAMS, max_tokens: CAPTION_TOKENS };
        state.library.caption_image(&model, &options, id)
    })
    .await?;
    Ok(HttpResponse::Ok().json(json!({ "caption": text })))
}

#[derive(Deserialize)]
struct MatchBody {
    texts: Vec<String>,
}

async fn match_texts(
    state: web::Data<AppState>,
    id: web::Path<String>,
    body: web::Json<MatchBody>,
) -> ApiResult<HttpResponse> {
    let id = parse_id(&id)?;
    let texts = &body.texts;
    if texts.is_empty() || texts.len() > MAX_MATCH_TEXTS {
        return Err(ApiError::bad_request(format!("give 1 to {MAX_MATCH_TEXTS} texts")));
    }
    let texts: Vec<String> = texts.iter().map(|t| text_param(t, "text")).collect::<ApiResult<_>>()?;
    let scored = texts.clone();
    let ticket = state.heavy.admit()?;
    let scores = blocking(move || {
        let _turn = ticket.run();
        let image = state.library.open_indexed(id, None)?;
        let device = state.library.device()?;
        let name = state.blip_models()?.itm;
        let model = state.matcher.get(&state, &name, |name| {
            Ok(BlipMatcher::load(name, &device)?.with_precision(state.library.precision()))
        })?;
        let texts: Vec<&str> = scored.iter().map(String::as_str).collect();
        model.score(&image, &texts)
    })
    .await?;
    let matches: Vec<_> =
        texts.iter().zip(&scores).map(|(t, s)| json!({"text": t, "itm": s.itm, "itc": s.itc})).collect();
    Ok(HttpResponse::Ok().json(json!({ "matches": matches })))
}

/// The query string's pairs, repeated keys kept (`prompt=a&prompt=b`).
fn query_pairs(req: &HttpRequest) -> ApiResult<Vec<(String, String)>> {
    serde_urlencoded::from_str(req.query_string()).map_err(|e| ApiError::bad_request(format!("bad query string: {e}")))
}

fn threshold_param(raw: Option<&str>) -> ApiResult<f32> {
    match raw.map(str::trim) {
        None => Ok(segment::DEFAULT_THRESHOLD),
        Some(t) => match t.parse::<f32>() {
            Ok(v) if (0.0..=1.0).contains(&v) => Ok(v),
            _ => Err(ApiError::bad_request(format!("threshold must be between 0 and 1, not {t:?}"))),
        },
    }
}

/// `GET /api/images/{id}/segment?prompt=…[&prompt=…][&format=json][&threshold=0.4]`: the
/// mask (PNG, grey level = probability; the most probable prompt per pixel when several; the
/// photo's size up to [`segment::MAX_MASK_SIDE`] on the long side), or with `format=json`
/// each prompt's regions (boxes in the photo's full pixels).
async fn segment_image(state: web::Data<AppState>, id: web::Path<String>, req: HttpRequest) -> ApiResult<HttpResponse> {
    let id = parse_id(&id)?;
    let pairs = query_pairs(&req)?;
    let value = |key: &str| pairs.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str());
    let prompts: Vec<String> =
        pairs.iter().filter(|(k, _)| k == "prompt").map(|(_, v)| text_param(v, "prompt")).collect::<ApiResult<_>>()?;
    if prompts.is_empty() || prompts.len() > MAX_PROMPTS {
        return Err(ApiError::bad_request(format!("give 1 to {MAX_PROMPTS} prompts (prompt=…, repeatable)")));
    }
    let as_json = match value("format") {
        None | Some("png") => false,
        Some("json") => true,
        Some(other) => return Err(ApiError::bad_request(format!("format must be png or json, not {other:?}"))),
    };
    let threshold = threshold_param(value("threshold"))?;
    let asked = prompts.clone();
    let ticket = state.heavy.admit()?;
    let segmented = blocking(move || {
        let _turn = ticket.run();
        let prompts: Vec<&str> = asked.iter().map(String::as_str).collect();
        state.library.segment_indexed(id, &prompts, &RegionOptions { threshold, ..Default::default() })
    })
    .await?;
    let crate::library::SegmentedImage { width, height, found } = segmented;
    if as_json {
        let rows: Vec<_> =
            prompts.iter().zip(&found).map(|(p, s)| json!({"prompt": p, "regions": s.regions})).collect();
        return Ok(HttpResponse::Ok().json(json!({ "width": width, "height": height, "prompts": rows })));
    }
    let mut maps = found.into_iter().map(|s| s.map);
    let mut mask = maps.next().expect("one map per prompt");
    for other in maps {
        mask.values.iter_mut().zip(&other.values).for_each(|(m, o)| *m = m.max(*o));
    }
    let mut png = Vec::new();
    segment::probability_png(&mask)
        .write_to(&mut std::io::Cursor::new(&mut png), image::ImageFormat::Png)
        .map_err(|e| ApiError::from(crate::Error::Invalid(format!("cannot encode the mask: {e}"))))?;
    Ok(HttpResponse::Ok().content_type("image/png").body(png))
}

#[derive(Deserialize)]
struct CropParams {
    q: Option<String>,
    k: Option<String>,
    candidates: Option<String>,
    threshold: Option<String>,
}

/// `GET /api/crops?q=…&k=10&candidates=30&threshold=0.4`: the regions of the best-matching
/// photos that show the text, most probable first (as `clipdex crop-search --json`).
async fn crops(state: web::Data<AppState>, params: web::Query<CropParams>) -> ApiResult<HttpResponse> {
    let text = text_param(params.q.as_deref().unwrap_or(""), "query (q)")?;
    let k = number_param(params.k.as_deref(), "k", 10, 1, MAX_CROP_CANDIDATES)?;
    let candidates = number_param(
        params.candidates.as_deref(),
        "candidates",
        (3 * k).clamp(20, MAX_CROP_CANDIDATES),
        1,
        MAX_CROP_CANDIDATES,
    )?;
    let threshold = threshold_param(params.threshold.as_deref())?;
    let started = std::time::Instant::now();
    let ticket = state.heavy.admit()?;
    let rows = blocking(move || {
        let _turn = ticket.run();
        let q = state.query_embedding(&text)?;
        let options = RegionOptions { threshold, ..Default::default() };
        let crops = state.library.crops(&text, &q, (candidates, k), &Default::default(), &options, &|_, _| {})?;
        Ok(crops
            .into_iter()
            .map(|crate::library::Crop { hit, region: r }| {
                let mut row = crate::path_text::object(
                    &hit.path,
                    json!({"id": hit.id, "score": hit.score, "box": r.bbox, "area": r.area, "mean_probability": r.mean_probability}),
                );
                // A video's kind, time and duration, as search results have them.
                if let (Some(row), Ok(serde_json::Value::Object(media))) =
                    (row.as_object_mut(), serde_json::to_value(hit.media))
                {
                    row.extend(media);
                }
                row
            })
            .collect::<Vec<_>>())
    })
    .await?;
    let took_ms = started.elapsed().as_secs_f64() * 1e3;
    Ok(HttpResponse::Ok().json(json!({ "crops": rows, "took_ms": took_ms })))
}
