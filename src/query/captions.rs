//! Ranking images by their BLIP captions, and blending that ranking with CLIP's.
//!
//! Captions are short ("a dog running on the beach"), so the ranking is Okapi BM25 (k1 1.2,
//! b 0.75, Lucene's always-positive IDF) over word tokens: lowercased letters and digits,
//! plurals folded ("dogs" → "dog", "puppies" → "puppy", "boxes" → "box"), and a short stop
//! list of words every caption has ("a", "of", "the", "with", …). The index lives in memory,
//! built from the store's captions on first use and rebuilt when captions change (about 1 s
//! per million captions).
//!
//! Blending is weighted reciprocal rank fusion over CLIP's and the captions' top results:
//! `(1 − w) / (60 + clip_rank) + w / (60 + caption_rank)`, a missing rank contributing 0.
//! Ranks, not scores, because CLIP cosines and BM25 scores live on unrelated scales.

use std::collections::HashMap;

use serde::Serialize;

use crate::store::ImageId;

/// BM25's term-frequency saturation.
const K1: f32 = 1.2;
/// BM25's length normalisation.
const B: f32 = 0.75;
/// Reciprocal rank fusion's damping constant (the usual 60).
pub const RRF_K: f32 = 60.0;
/// The default weight of caption matches in a blended search.
pub const DEFAULT_CAPTION_WEIGHT: f32 = 0.3;
/// The weight of matches of the text in photos in a blended search, times the share of the
/// query's words the photo's text holds: a photo whose text holds every word of the query at
/// text rank r weighs as much as CLIP's result at rank r (0.7 = 1 − the caption weight), so a
/// photo carrying the very words searched for comes among the first results even when CLIP,
/// which cannot read, ranks it low.
pub const DEFAULT_TEXT_WEIGHT: f32 = 0.7;

/// Words nearly every caption has, which would only add noise.
const STOP_WORDS: &[&str] = &[
    "a", "an", "and", "are", "as", "at", "be", "by", "for", "from", "has", "in", "into", "is", "it", "its", "of", "on",
    "or", "that", "the", "there", "this", "to", "with",
];

/// The index terms of a text: lowercased runs of letters and digits, plurals folded, stop
/// words dropped.
pub fn terms(text: &str) -> Vec<String> {
    text.split(|c: char| !c.is_alphanumeric())
        .filter(|w| !w.is_empty())
        .map(|w| fold_plural(&w.to_lowercase()))
        .filter(|w| !STOP_WORDS.contains(&w.as_str()))
        .collect()
}

/// English plural to singular for the common regular cases; anything else unchanged.
fn fold_plural(w: &str) -> String {
    let n = w.chars().count();
    if n > 4 && w.ends_with("ies") {
        return format!("{}y", &w[..w.len() - 3]);
    }
    if n > 4 && ["ches", "shes", "sses", "xes", "zes"].iter().any(|s| w.ends_with(s)) {
        return w[..w.len() - 2].to_string();
    }
    if n > 3 && w.ends_with('s') && !["ss", "us", "is"].iter().any(|s| w.ends_with(s)) {
        return w[..w.len() - 1].to_string();
    }
    w.to_string()
}

/// An in-memory BM25 index of captions.
#[derive(Debug, Default)]
pub struct CaptionIndex {
    postings: HashMap<String, Vec<(ImageId, u16)>>,
    lengths: HashMap<ImageId, u32>,
    average_length: f32,
}

impl CaptionIndex {
    /// Indexes `(id, caption)` pairs.
    pub fn build(captions: impl IntoIterator<Item = (ImageId, String)>) -> Self {
        let mut index = CaptionIndex::default();
        let mut total = 0u64;
        for (id, text) in captions {
            let words = terms(&text);
            total += words.len() as u64;
            index.lengths.insert(id, words.len() as u32);
            let mut counts: HashMap<String, u16> = HashMap::new();
            for w in words {
                *counts.entry(w).or_default() += 1;
            }
            for (w, tf) in counts {
                index.postings.entry(w).or_default().push((id, tf));
            }
        }
        index.average_length = if index.lengths.is_empty() { 0.0 } else { total as f32 / index.lengths.len() as f32 };
        index
    }

    /// Captions indexed.
    pub fn len(&self) -> usize {
        self.lengths.len()
    }

    /// Whether no caption is indexed.
    pub fn is_empty(&self) -> bool {
        self.lengths.is_empty()
    }

    /// Every image whose caption shares a term with `query`, best BM25 score first (ties by
    /// id, so the order is stable).
    pub fn rank(&self, query: &str) -> Vec<(ImageId, f32)> {
        let n = self.lengths.len() as f32;
        let mut query_terms = terms(query);
        query_terms.sort();
        query_terms.dedup();
        let mut scores: HashMap<ImageId, f32> = HashMap::new();
        for term in &query_terms {
            let Some(posting) = self.postings.get(term) else { continue };
            let df = posting.len() as f32;
            let idf = (1.0 + (n - df + 0.5) / (df + 0.5)).ln();
            for &(id, tf) in posting {
                let len = self.lengths[&id] as f32;
                let tf = tf as f32;
                let norm = K1 * (1.0 - B + B * len / self.average_length.max(1e-6));
                *scores.entry(id).or_default() += idf * tf * (K1 + 1.0) / (tf + norm);
            }
        }
        let mut ranked: Vec<(ImageId, f32)> = scores.into_iter().collect();
        ranked.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
        ranked
    }
}

/// A result of a blended search.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct BlendedHit {
    /// The image, its file and its CLIP cosine (`score`).
    #[serde(flatten)]
    pub hit: super::SearchHit,
    /// Its caption's BM25 score for the query, when the caption matched.
    pub caption_score: Option<f32>,
    /// Its text's BM25 score for the query, when the text in the photo matched.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub text_score: Option<f32>,
    /// What matched in the photo's text.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub text: Option<super::fulltext::TextSnippet>,
    /// The fused score results are ordered by.
    pub blended: f32,
}

/// Weighted reciprocal rank fusion of two rankings (best first): ids with their fused score,
/// best first (ties by id).
pub fn fuse(clip: &[ImageId], captions: &[ImageId], weight: f32) -> Vec<(ImageId, f32)> {
    fuse_with_text(clip, captions, weight, &[], 0.0)
}

/// [`fuse`] with a third ranking, of the text in photos: each `(id, coverage)` adds
/// `text_weight × coverage / (60 + text_rank)`.
pub fn fuse_with_text(
    clip: &[ImageId],
    captions: &[ImageId],
    weight: f32,
    text: &[(ImageId, f32)],
    text_weight: f32,
) -> Vec<(ImageId, f32)> {
    let mut fused: HashMap<ImageId, f32> = HashMap::new();
    for (rank, &(id, coverage)) in text.iter().enumerate() {
        *fused.entry(id).or_default() += text_weight * coverage / (RRF_K + rank as f32 + 1.0);
    }
    for (rank, &id) in clip.iter().enumerate() {
        *fused.entry(id).or_default() += (1.0 - weight) / (RRF_K + rank as f32 + 1.0);
    }
    for (rank, &id) in captions.iter().enumerate() {
        *fused.entry(id).or_default() += weight / (RRF_K + rank as f32 + 1.0);
    }
    let mut out: Vec<(ImageId, f32)> = fused.into_iter().collect();
    out.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn terms_fold_plurals_and_drop_stop_words() {
        assert_eq!(terms("Two DOGS playing in the Snow, with puppies!"), ["two", "dog", "playing", "snow", "puppy"]);
        assert_eq!(terms("boxes of glasses; a bus and a cactus"), ["box", "glass", "bus", "cactus"]);
        assert_eq!(terms("un café à Lyon 2024"), ["un", "café", "à", "lyon", "2024"]);
        assert!(terms("  ,,, ").is_empty());
    }

    #[test]
    fn bm25_prefers_rarer_terms_repeated_terms_and_shorter_captions() {
        let index = CaptionIndex::build([
            (1, "a dog on a beach".to_string()),
            (2, "a dog and a dog on a sofa".to_string()),
            (3, "a cat on a sofa next to a window in a very large living room".to_string()),
            (4, "a cat".to_string()),
            (5, "a dog in the park".to_string()),
        ]);
        assert_eq!(index.len(), 5);
        // "cat" is rarer than "dog": a cat caption outranks a dog caption for "dog cat" ...
        let ranked = index.rank("dog cat");
        assert_eq!(ranked[0].0, 4, "{ranked:?}");
        // ... and the shorter cat caption beats the longer one.
        let pos = |id| ranked.iter().position(|r| r.0 == id).unwrap();
        assert!(pos(4) < pos(3));
        // Two "dog"s beat one, at similar lengths.
        let dogs = index.rank("dogs");
        assert_eq!(dogs[0].0, 2);
        assert_eq!(dogs.len(), 3);
        // Stop words and unknown words match nothing.
        assert!(index.rank("the a of").is_empty());
        assert!(index.rank("zebra").is_empty());
        // A repeated query term counts once.
        assert_eq!(index.rank("cat cat"), index.rank("cat"));
    }

    #[test]
    fn fusion_weights_ranks() {
        let clip = [1, 2, 3];
        let captions = [3, 4];
        // Weight 0: CLIP's order, caption-only images last with nothing.
        let ids: Vec<ImageId> = fuse(&clip, &captions, 0.0).iter().map(|f| f.0).collect();
        assert_eq!(ids, [1, 2, 3, 4]);
        // Weight 1: the captions' order first.
        let ids: Vec<ImageId> = fuse(&clip, &captions, 1.0).iter().map(|f| f.0).collect();
        assert_eq!(ids[..2], [3, 4]);
        // Half and half: 3 is in both lists and wins.
        let fused = fuse(&clip, &captions, 0.5);
        assert_eq!(fused[0].0, 3);
        let expected = 0.5 / 63.0 + 0.5 / 61.0;
        assert!((fused[0].1 - expected).abs() < 1e-7);
        // A photo whose text holds the whole query at text rank 1 passes CLIP's first result
        // with the default weights, even ranked last by CLIP; half the query, found by the text
        // alone, does not.
        let clip: Vec<ImageId> = (1..=50).collect();
        let fused = fuse_with_text(&clip, &[], DEFAULT_CAPTION_WEIGHT, &[(50, 1.0), (99, 0.5)], DEFAULT_TEXT_WEIGHT);
        assert_eq!(fused[0].0, 50);
        assert!(fused.iter().position(|f| f.0 == 99).unwrap() > 1);
    }
}
