//! Re-ranking the library's results: with BLIP's image–text matching, or with a CLIP
//! fine-tuned on the user's own pairs ([`rerank_finetuned`]).
//!
//! With BLIP: CLIP's cosine ranks the whole
//! library cheaply; the ITM head, which reads the text while attending to the image, then
//! re-scores the top few (`--rerank-top`, 50 by default) and orders them by match
//! probability. Large JPEGs are decoded at a reduced DCT scale that keeps at least twice the
//! model's input side (768 px for 384) on the short side, which costs nothing visible after
//! the bicubic resize; the photos are decoded in parallel and encoded in batches.

use serde::Serialize;

use crate::error::Result;
use crate::models::blip::BlipMatcher;
use crate::models::clip::ClipEmbedder;
use crate::photo::{DecodeOptions, open_photo_within};
use crate::query::SearchHit;
use crate::store::Store;

/// How many of CLIP's results `--rerank itm` re-scores by default.
pub const DEFAULT_RERANK_TOP: usize = 50;

/// A result re-scored by ITM.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RerankedHit {
    /// The CLIP result (`score` stays CLIP's cosine).
    #[serde(flatten)]
    pub hit: SearchHit,
    /// ITM probability that the text describes the image; `null` when the file could no
    /// longer be read (such results go last, in CLIP's order).
    pub itm: Option<f32>,
    /// ITC cosine (BLIP's own embedding similarity).
    pub itc: Option<f32>,
}

/// Re-scores `hits` against `text` and returns them best ITM first (ties and unreadable files
/// keep CLIP's order).
pub fn rerank_itm(
    matcher: &BlipMatcher,
    text: &str,
    hits: Vec<SearchHit>,
    max_pixels: u64,
) -> Result<Vec<RerankedHit>> {
    use rayon::prelude::*;
    let side = matcher.encoder().input_side();
    let options = DecodeOptions { max_pixels, min_side: Some(2 * side) };
    // Decoded on the thread pool: dozens of photos, each reduced while decoding (to at most
    // 4x BLIP's side, so the ones held together stay small whatever their size).
    let decoded: Vec<Option<image::RgbImage>> = hits
        .par_iter()
        .map(|hit| {
            open_photo_within(&hit.path, &options, 4 * side)
                .map(|photo| photo.image)
                .map_err(|e| tracing::warn!("re-ranking skips {}: {e}", hit.path.display()))
                .ok()
        })
        .collect();
    let readable: Vec<bool> = decoded.iter().map(Option::is_some).collect();
    let images: Vec<image::RgbImage> = decoded.into_iter().flatten().collect();
    let mut scores = matcher.score_images(&images, text)?.into_iter();
    let mut out: Vec<RerankedHit> = hits
        .into_iter()
        .zip(readable)
        .map(|(hit, ok)| {
            let s = if ok { scores.next() } else { None };
            RerankedHit { hit, itm: s.map(|s| s.itm), itc: s.map(|s| s.itc) }
        })
        .collect();
    best_first(&mut out, |h| h.itm);
    Ok(out)
}

/// A result re-scored by a fine-tuned CLIP.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct FinetunedHit {
    /// The result of the library's model (`score` stays its cosine).
    #[serde(flatten)]
    pub hit: SearchHit,
    /// The fine-tuned model's cosine between the text and the image; `null` when the image
    /// had to be embedded and its file could no longer be read (such results go last).
    pub finetuned: Option<f32>,
}

/// Re-scores `hits` with a fine-tuned CLIP `model` (whose vectors of the library's images are
/// cached in the store under `model_key`: a second query embeds only its text) and returns
/// them best first.
pub fn rerank_finetuned(
    store: &Store,
    model: &ClipEmbedder,
    model_key: &str,
    text: &str,
    hits: Vec<SearchHit>,
    max_pixels: u64,
) -> Result<Vec<FinetunedHit>> {
    let ids: Vec<_> = hits.iter().map(|h| h.id).collect();
    let mut vectors = store.model_vectors(model_key, &ids)?;
    let missing: Vec<usize> = (0..hits.len()).filter(|&i| vectors[i].is_none()).collect();
    if !missing.is_empty() {
        let side = model.processor().output_size().map(|(h, w)| h.min(w));
        let options = DecodeOptions { max_pixels, min_side: side };
        let paths: Vec<_> = missing.iter().map(|&i| hits[i].path.clone()).collect();
        let mut fresh = Vec::new();
        for (&i, embedded) in missing.iter().zip(model.embed_image_files(&paths, &options)) {
            match embedded {
                Ok(v) => {
                    fresh.push((hits[i].id, v.clone()));
                    vectors[i] = Some(v);
                }
                Err(e) => tracing::warn!("re-ranking skips {}: {e}", hits[i].path.display()),
            }
        }
        store.cache_model_vectors(model_key, &fresh)?;
    }
    let query = model.embed_texts(&[text])?.remove(0);
    let mut out: Vec<FinetunedHit> = hits
        .into_iter()
        .zip(vectors)
        .map(|(hit, v)| FinetunedHit { hit, finetuned: v.map(|v| v.iter().zip(&query).map(|(a, b)| a * b).sum()) })
        .collect();
    best_first(&mut out, |h| h.finetuned);
    Ok(out)
}

/// Re-scores `hits` with an adapter model (`clipdex finetune --train adapter`) of the library's
/// own model: the candidates' stored vectors times the adapter matrix, renormalised, against the
/// adapter model's text embedding. No image is read.
pub fn rerank_adapted(
    store: &Store,
    model: &ClipEmbedder,
    adapter: &candle_core::Tensor,
    text: &str,
    hits: Vec<SearchHit>,
) -> Result<Vec<FinetunedHit>> {
    let query = model.embed_texts(&[text])?.remove(0);
    let mut out = Vec::with_capacity(hits.len());
    for hit in hits {
        let finetuned = match store.vector(hit.id)? {
            Some(v) => {
                let v = candle_core::Tensor::from_vec(v, (1, adapter.dim(1)?), adapter.device())?;
                let mapped =
                    crate::models::clip::l2_normalize(&v.matmul(&adapter.t()?)?)?.flatten_all()?.to_vec1::<f32>()?;
                Some(mapped.iter().zip(&query).map(|(a, b)| a * b).sum())
            }
            None => None,
        };
        out.push(FinetunedHit { hit, finetuned });
    }
    best_first(&mut out, |h| h.finetuned);
    Ok(out)
}

/// Sorts by score, highest first; unscored items (unreadable files) go last; ties and the
/// unscored keep their order (the library model's ranking).
fn best_first<T>(items: &mut [T], score: impl Fn(&T) -> Option<f32>) {
    items.sort_by(|a, b| match (score(a), score(b)) {
        (Some(x), Some(y)) => y.total_cmp(&x),
        (Some(_), None) => std::cmp::Ordering::Less,
        (None, Some(_)) => std::cmp::Ordering::Greater,
        (None, None) => std::cmp::Ordering::Equal,
    });
}
