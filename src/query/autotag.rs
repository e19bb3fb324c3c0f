//! Auto-tagging the library: every indexed image is scored against a vocabulary from its
//! stored vector (no image is decoded again), and only its confident labels are kept.
//!
//! # Which labels are confident
//!
//! A zero-shot probability is relative to the vocabulary: with `N` labels a label picked at
//! random gets `1/N`, so "probability ≥ 0.3" means much more among 300 labels than among 3. The
//! rule measures a label against that prior instead: a label is kept when its probability is at
//! least `prior_ratio` times `1/N` (default 30: thirty times likelier than chance), capped at
//! an absolute majority of 0.5 for vocabularies too small for that ratio to be reachable
//! (`N ≤ 60` by default). So among 333 labels a tag needs p ≥ 0.09, among 1,000 p ≥ 0.03, and
//! among 3 it needs p ≥ 0.5. At most `max_tags` are kept, most probable first. Several
//! labels can pass together when they share the mass (`dog`, `puppy`, `pet`), which is what a
//! photo with several subjects should get, while an image that fits nothing in the vocabulary
//! spreads its mass and gets no tag at all.

use std::collections::HashMap;

use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use super::tags::{LabelScore, ZeroShotClassifier};
use crate::error::{Error, Result};
use crate::store::{Store, Tag};

/// Default for [`AutotagSettings::prior_ratio`].
pub const DEFAULT_PRIOR_RATIO: f32 = 30.0;
/// The threshold never exceeds this probability, however small the vocabulary.
pub const MAJORITY: f32 = 0.5;
/// Default for [`AutotagSettings::max_tags`].
pub const DEFAULT_MAX_TAGS: usize = 8;

/// How the library is auto-tagged; stored in the database by `clipdex autotag` and reused by
/// later runs, `index` and `watch`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AutotagSettings {
    /// The vocabulary.
    pub labels: Vec<String>,
    /// The prompt templates each label is put into.
    pub templates: Vec<String>,
    /// A label is kept when its probability is at least this many times `1/N`.
    pub prior_ratio: f32,
    /// At most this many tags per image.
    pub max_tags: usize,
}

impl AutotagSettings {
    /// Settings with the default rule.
    pub fn new(labels: Vec<String>, templates: Vec<String>) -> Self {
        AutotagSettings { labels, templates, prior_ratio: DEFAULT_PRIOR_RATIO, max_tags: DEFAULT_MAX_TAGS }
    }

    /// Checks the settings make sense.
    pub fn validate(&self) -> Result<()> {
        if self.labels.is_empty() {
            return Err(Error::Invalid("the auto-tagging vocabulary has no labels".into()));
        }
        if !(self.prior_ratio.is_finite() && self.prior_ratio > 0.0) {
            return Err(Error::Invalid(format!("--prior-ratio must be a positive number, not {}", self.prior_ratio)));
        }
        if self.max_tags == 0 {
            return Err(Error::Invalid("--max-tags must be at least 1".into()));
        }
        Ok(())
    }

    /// The probability a label needs to be kept.
    pub fn threshold(&self) -> f32 {
        (self.prior_ratio / self.labels.len() as f32).min(MAJORITY)
    }

    /// The confident labels among `ranked` (best first).
    pub fn keep(&self, ranked: &[LabelScore]) -> Vec<Tag> {
        let threshold = self.threshold();
        ranked
            .iter()
            .take_while(|s| s.probability >= threshold)
            .take(self.max_tags)
            .map(|s| Tag { label: s.label.clone(), probability: s.probability, cosine: s.cosine })
            .collect()
    }

    /// Identifies these settings with a model: images tagged under another fingerprint are
    /// tagged again.
    pub fn fingerprint(&self, model: &str) -> String {
        let mut h = blake3::Hasher::new();
        h.update(model.as_bytes());
        h.update(&serde_json::to_vec(self).expect("settings serialise"));
        h.finalize().to_hex()[..16].to_string()
    }
}

/// What an auto-tagging run did.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct AutotagReport {
    /// Images in the library.
    pub images: u64,
    /// Images tagged in this run (new, or tagged before with other settings).
    pub tagged: u64,
    /// Images already tagged with these settings.
    pub unchanged: u64,
    /// Vocabulary labels whose prompts were embedded in this run (0 once cached).
    pub labels_embedded: u64,
    /// Tags kept in this run.
    pub tags: u64,
}

/// A tag given by hand: kept through auto-tagging runs, first among an image's tags.
pub fn user_tag(label: &str) -> Tag {
    Tag { label: label.to_string(), probability: 1.0, cosine: 1.0 }
}

/// Tags every stored image not yet tagged under `fingerprint`; the tags given by hand
/// (`user_tags`, labels by content hash) stay with the images they were given to.
pub fn autotag_store(
    store: &Store,
    classifier: &ZeroShotClassifier,
    settings: &AutotagSettings,
    fingerprint: &str,
    user_tags: &HashMap<String, Vec<String>>,
) -> Result<AutotagReport> {
    let mut report = AutotagReport::default();
    let mut todo = Vec::new();
    for item in store.vectors() {
        let (id, vector) = item?;
        report.images += 1;
        match store.tags_of(id)? {
            Some((f, _)) if f == fingerprint => report.unchanged += 1,
            _ => todo.push((id, vector)),
        }
    }
    for chunk in todo.chunks(4096) {
        let tagged: Vec<_> = chunk.par_iter().map(|(id, v)| (*id, settings.keep(&classifier.classify(v)))).collect();
        for (id, mut tags) in tagged {
            if !user_tags.is_empty()
                && let Some(labels) = store.image(id)?.and_then(|record| user_tags.get(&record.hash))
            {
                let mut given: Vec<Tag> =
                    labels.iter().filter(|l| !tags.iter().any(|t| &t.label == *l)).map(|l| user_tag(l)).collect();
                given.append(&mut tags);
                tags = given;
            }
            // An image deleted meanwhile is skipped; its vector went with it.
            if store.set_tags(id, fingerprint, &tags)? {
                report.tagged += 1;
                report.tags += tags.len() as u64;
            }
        }
    }
    store.flush()?;
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ranked(probabilities: &[f32]) -> Vec<LabelScore> {
        probabilities
            .iter()
            .enumerate()
            .map(|(i, &p)| LabelScore { label: format!("l{i}"), probability: p, cosine: p })
            .collect()
    }

    fn settings(n: usize) -> AutotagSettings {
        AutotagSettings::new((0..n).map(|i| format!("l{i}")).collect(), vec!["{}".into()])
    }

    #[test]
    fn the_threshold_follows_the_prior_and_is_capped_at_a_majority() {
        assert_eq!(settings(3).threshold(), 0.5);
        assert_eq!(settings(60).threshold(), 0.5);
        assert!((settings(300).threshold() - 0.1).abs() < 1e-6);
        assert!((settings(1000).threshold() - 0.03).abs() < 1e-6);
    }

    #[test]
    fn keeps_the_confident_prefix_up_to_max_tags() {
        // Three labels: only a majority counts.
        let three = settings(3);
        assert_eq!(three.keep(&ranked(&[0.9, 0.07, 0.03])).len(), 1);
        assert!(three.keep(&ranked(&[0.45, 0.44, 0.11])).is_empty(), "a split vote is not confident");
        // 300 labels: several subjects can share the mass.
        let many = settings(300);
        let kept = many.keep(&ranked(&[0.4, 0.3, 0.12, 0.05, 0.01]));
        assert_eq!(kept.iter().map(|t| t.label.as_str()).collect::<Vec<_>>(), ["l0", "l1", "l2"]);
        let mut capped = settings(300);
        capped.max_tags = 2;
        assert_eq!(capped.keep(&ranked(&[0.4, 0.3, 0.12])).len(), 2);
        assert!(many.keep(&ranked(&[0.02, 0.02, 0.01])).is_empty(), "nothing fits: no tag");
    }

    #[test]
    fn fingerprints_change_with_settings_and_model() {
        let a = settings(3);
        let mut b = a.clone();
        b.prior_ratio = 10.0;
        assert_ne!(a.fingerprint("m"), b.fingerprint("m"));
        assert_ne!(a.fingerprint("m"), a.fingerprint("n"));
        assert_eq!(a.fingerprint("m"), a.clone().fingerprint("m"));
    }

    #[test]
    fn bad_settings_are_refused() {
        let mut s = settings(3);
        s.prior_ratio = 0.0;
        assert!(s.validate().is_err());
        s.prior_ratio = f32::NAN;
        assert!(s.validate().is_err());
        let mut s = settings(3);
        s.max_tags = 0;
        assert!(s.validate().is_err());
        assert!(settings(0).validate().is_err());
    }
}
