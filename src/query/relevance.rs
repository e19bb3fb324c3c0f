//! Relevance: a 0–100 figure for a cosine score, calibrated per model on the library itself,
//! and the orders results can be shown in.
//!
//! Models' cosine ranges differ (CLIP ViT-B/32's unrelated text–photo pairs sit near 0.15 and
//! good matches near 0.3; other models elsewhere), so a flat threshold is wrong for all but
//! one. The calibration measures what an *unrelated* text scores against this library: the
//! labels of a fixed spread of the built-in tag vocabulary (every n-th of its labels, as "a
//! photo of a LABEL."), each scored against a sample of the stored vectors. Of those scores,
//! the median is the `floor` (what a text that has nothing to do with a photo gets) and the
//! 99th percentile the `cut` (what only the best 1 % of unrelated pairs reach). Relevance is
//! then linear in the cosine: 0 at the floor, 50 at the cut, 100 at twice the cut's distance
//! from the floor, clamped to 0–100. The web UI's default cut-off is relevance
//! [`DEFAULT_UI_MIN_RELEVANCE`] (= the cut): a result there scores above 99 % of unrelated
//! text–photo pairs.

use serde::{Deserialize, Serialize};

use super::SearchHit;
use crate::store::Store;

/// Relevance the web UI keeps by default: the calibrated cut.
pub const DEFAULT_UI_MIN_RELEVANCE: f32 = 50.0;

/// How many vocabulary labels the calibration scores.
pub const CALIBRATION_TEXTS: usize = 48;

/// How many stored vectors (at most) the calibration scores them against.
pub const CALIBRATION_VECTORS: usize = 1000;

/// The noise level of one model on one library.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Calibration {
    /// The model the scores are of.
    pub model: String,
    /// How many vectors the library held when calibrated (recalibrated when it doubles or halves).
    pub vectors: u64,
    /// Median cosine of unrelated text–photo pairs: relevance 0.
    pub floor: f32,
    /// 99th percentile of those cosines: relevance 50.
    pub cut: f32,
}

impl Calibration {
    /// The calibration from the scores of unrelated text–photo pairs; `None` when there are none.
    pub fn from_scores(model: &str, vectors: u64, mut scores: Vec<f32>) -> Option<Self> {
        scores.retain(|s| s.is_finite());
        if scores.is_empty() {
            return None;
        }
        scores.sort_by(f32::total_cmp);
        let at = |q: f64| scores[((scores.len() - 1) as f64 * q).round() as usize];
        let (floor, cut) = (at(0.5), at(0.99));
        // A library of one photo, or identical ones: keep the scale usable.
        let cut = if cut - floor < 1e-3 { floor + 1e-3 } else { cut };
        Some(Calibration { model: model.to_string(), vectors, floor, cut })
    }

    /// Relevance 0–100 of a cosine score.
    pub fn relevance(&self, score: f32) -> f32 {
        let r = 50.0 * (score - self.floor) / (self.cut - self.floor);
        if r.is_nan() { 0.0 } else { r.clamp(0.0, 100.0) }
    }

    /// The cosine that has relevance `relevance` (the inverse of [`Calibration::relevance`]
    /// within 0–100).
    pub fn score_at(&self, relevance: f32) -> f32 {
        self.floor + relevance.clamp(0.0, 100.0) / 50.0 * (self.cut - self.floor)
    }

    /// Whether a library of `vectors` vectors and model `model` should be calibrated again.
    pub fn is_stale(&self, model: &str, vectors: u64) -> bool {
        self.model != model
            || vectors > self.vectors.saturating_mul(2).max(self.vectors + 50)
            || vectors * 2 < self.vectors
    }
}

/// The calibration texts: an even spread of the built-in vocabulary's labels.
pub fn calibration_texts() -> Vec<String> {
    let labels: Vec<&str> = super::tags::DEFAULT_VOCABULARY
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .collect();
    let step = (labels.len() / CALIBRATION_TEXTS).max(1);
    labels
        .iter()
        .step_by(step)
        .take(CALIBRATION_TEXTS)
        .map(|l| super::tags::DEFAULT_TEMPLATE.replace("{}", l))
        .collect()
}

/// The order results are shown in (`--sort`, API `sort=`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum SortOrder {
    /// Best first.
    #[default]
    Score,
    /// Oldest first (EXIF date, else file time).
    Date,
    /// Newest first.
    NewestFirst,
    /// By file name, then path.
    Name,
}

impl std::str::FromStr for SortOrder {
    type Err = crate::Error;

    fn from_str(s: &str) -> crate::Result<Self> {
        match s.trim() {
            "score" | "" => Ok(SortOrder::Score),
            "date" => Ok(SortOrder::Date),
            "-date" => Ok(SortOrder::NewestFirst),
            "name" => Ok(SortOrder::Name),
            other => Err(crate::Error::Invalid(format!("sort {other:?}: say score, date, -date or name"))),
        }
    }
}

/// Orders `hits` (ties by score, then id, so the order is stable).
pub fn sort_hits(store: &Store, hits: &mut [SearchHit], order: SortOrder) -> crate::Result<()> {
    let by_score = |a: &SearchHit, b: &SearchHit| b.score.total_cmp(&a.score).then(a.id.cmp(&b.id));
    match order {
        SortOrder::Score => hits.sort_by(by_score),
        SortOrder::Date | SortOrder::NewestFirst => {
            let mut dates = std::collections::HashMap::with_capacity(hits.len());
            for h in hits.iter() {
                dates.insert(h.id, store.image(h.id)?.map_or(i64::MIN, |r| r.date()));
            }
            hits.sort_by(|a, b| {
                let (da, db) = (dates[&a.id], dates[&b.id]);
                let dates = if order == SortOrder::Date { da.cmp(&db) } else { db.cmp(&da) };
                dates.then_with(|| by_score(a, b))
            });
        }
        SortOrder::Name => hits.sort_by(|a, b| {
            a.path.file_name().cmp(&b.path.file_name()).then_with(|| a.path.cmp(&b.path)).then_with(|| by_score(a, b))
        }),
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relevance_is_zero_at_the_floor_and_fifty_at_the_cut() {
        let scores: Vec<f32> = (0..=100).map(|i| 0.1 + 0.001 * i as f32).collect();
        let c = Calibration::from_scores("m", 10, scores).unwrap();
        assert!((c.floor - 0.15).abs() < 1e-6 && (c.cut - 0.199).abs() < 1e-6, "{c:?}");
        assert_eq!(c.relevance(0.0), 0.0);
        assert!((c.relevance(c.cut) - 50.0).abs() < 1e-3);
        assert_eq!(c.relevance(0.9), 100.0);
        assert!((c.relevance(c.score_at(73.0)) - 73.0).abs() < 1e-3);
        assert!(Calibration::from_scores("m", 1, vec![f32::NAN]).is_none());
        assert!(c.is_stale("other", 10) && c.is_stale("m", 100) && !c.is_stale("m", 12));
    }

    #[test]
    fn sort_orders_parse_or_say_which_exist() {
        assert_eq!("-date".parse::<SortOrder>().unwrap(), SortOrder::NewestFirst);
        assert_eq!("name".parse::<SortOrder>().unwrap(), SortOrder::Name);
        assert!("newest".parse::<SortOrder>().unwrap_err().to_string().contains("-date"));
        assert_eq!(calibration_texts().len(), CALIBRATION_TEXTS);
    }
}
