//! Zero-shot tagging as in the CLIP paper: every label is put into prompt templates, the text
//! embeddings of a label's prompts are averaged and normalised again, and an image's label
//! probabilities are the softmax of `logit_scale × cosine` over the vocabulary.
//!
//! Probabilities are relative to the vocabulary: the same photo gets lower numbers against 300
//! labels than against 3. The cosine is reported beside them for that reason. A SigLIP scores
//! each label on its own instead ([`Scoring::Sigmoid`]): `sigmoid(logit_scale × cosine +
//! logit_bias)`, the same number whatever the other labels.

use serde::Serialize;

use crate::error::{Error, Result};
pub use crate::models::clip::Scoring;
use crate::models::clip::{ClipEmbedder, Embedding};

/// Templates written for personal photos, used with `--templates photo`: how people's pictures
/// look (snapshots, close-ups, dark, blurry, cropped), not the benchmark datasets'.
pub const PHOTO_TEMPLATES: &[&str] = &[
    "a photo of a {}.",
    "a photo of the {}.",
    "a snapshot of a {}.",
    "a close-up photo of a {}.",
    "a photo of a small {}.",
    "a photo of a large {}.",
    "a dark photo of a {}.",
    "a bright photo of a {}.",
    "a blurry photo of a {}.",
    "a cropped photo of a {}.",
    "a phone photo of a {}.",
    "a picture showing a {}.",
];

/// Longest label a request may carry, in bytes (CLIP reads 77 tokens of a prompt).
pub const MAX_LABEL_BYTES: usize = 200;

/// The template of the CLIP paper's single-prompt baseline.
pub const DEFAULT_TEMPLATE: &str = "a photo of a {}.";

/// clipdex's built-in vocabulary of everyday photo concepts (objects, animals, food, scenes,
/// events, weather, times of day, kinds of picture).
pub const DEFAULT_VOCABULARY: &str = include_str!("vocabulary.txt");

/// Labels from a vocabulary text: one per line, `#` starts a comment, blank lines skipped,
/// control characters removed, surrounding spaces trimmed, duplicates dropped (first one kept).
pub fn parse_vocabulary(text: &str) -> Vec<String> {
    let mut seen = std::collections::HashSet::new();
    text.lines()
        .map(|l| l.split('#').next().unwrap_or_default().replace(|c: char| c.is_control(), " "))
        .map(|l| l.trim().to_string())
        .filter(|l| !l.is_empty())
        .filter(|l| seen.insert(l.clone()))
        .collect()
}

/// Labels from a comma-separated list (`--labels "cat,dog,car"`), with the same rules.
pub fn parse_label_list(list: &str) -> Vec<String> {
    parse_vocabulary(&list.replace(',', "\n"))
}

/// Templates from a file: one per line, each with a `{}` where the label goes.
pub fn parse_templates(text: &str) -> Result<Vec<String>> {
    let templates = parse_vocabulary(text);
    check_templates(&templates)?;
    Ok(templates)
}

fn check_templates<S: AsRef<str>>(templates: &[S]) -> Result<()> {
    if templates.is_empty() {
        return Err(Error::Invalid("no prompt templates".into()));
    }
    for t in templates {
        if !t.as_ref().contains("{}") {
            return Err(Error::Invalid(format!("template {:?} has no {{}} for the label", t.as_ref())));
        }
    }
    Ok(())
}

/// One label's score for one image.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LabelScore {
    /// The label.
    pub label: String,
    /// Softmax of `logit_scale × cosine` over the vocabulary (CLIP), or the label's own
    /// `sigmoid(logit_scale × cosine + logit_bias)` (SigLIP).
    pub probability: f32,
    /// Cosine between the image and the label's (averaged) prompt embedding.
    pub cosine: f32,
}

/// A vocabulary embedded once, ready to score any number of images.
pub struct ZeroShotClassifier {
    labels: Vec<String>,
    embeddings: Vec<Embedding>,
    scoring: Scoring,
}

/// Each label's prompt embedding: the label put into every template, the prompts embedded in
/// one batched pass, each label's embeddings averaged and normalised again.
pub fn embed_labels<S: AsRef<str>>(clip: &ClipEmbedder, labels: &[String], templates: &[S]) -> Result<Vec<Embedding>> {
    check_templates(templates)?;
    if labels.is_empty() {
        return Ok(Vec::new());
    }
    let prompts: Vec<String> =
        labels.iter().flat_map(|l| templates.iter().map(move |t| t.as_ref().replace("{}", l))).collect();
    let embedded = clip.embed_texts(&prompts)?;
    Ok(embedded.chunks(templates.len()).map(mean_direction).collect())
}

/// The mean of unit vectors, normalised again: the direction they share (a label's prompts, a
/// video's frames).
pub fn mean_direction(group: &[Embedding]) -> Embedding {
    let mut mean = vec![0f32; group[0].len()];
    for e in group {
        mean.iter_mut().zip(e).for_each(|(m, x)| *m += x / group.len() as f32);
    }
    let norm = mean.iter().map(|x| x * x).sum::<f32>().sqrt().max(1e-12);
    mean.iter_mut().for_each(|m| *m /= norm);
    mean
}

/// A fingerprint of a prompt set (which templates, in which order), for caches.
pub fn templates_fingerprint<S: AsRef<str>>(templates: &[S]) -> String {
    let mut h = blake3::Hasher::new();
    for t in templates {
        h.update(t.as_ref().as_bytes());
        h.update(b"\n");
    }
    h.finalize().to_hex()[..16].to_string()
}

impl ZeroShotClassifier {
    /// Embeds every label in every template (one batched pass over all prompts).
    pub fn new<S: AsRef<str>>(clip: &ClipEmbedder, labels: &[String], templates: &[S]) -> Result<Self> {
        let embeddings = embed_labels(clip, labels, templates)?;
        Self::from_embeddings(labels.to_vec(), embeddings, clip.scoring())
    }

    /// A classifier from label embeddings computed before (see [`embed_labels`]).
    pub fn from_embeddings(labels: Vec<String>, embeddings: Vec<Embedding>, scoring: Scoring) -> Result<Self> {
        if labels.is_empty() {
            return Err(Error::Invalid("no labels to classify with".into()));
        }
        if labels.len() != embeddings.len() {
            return Err(Error::Invalid(format!("{} labels but {} embeddings", labels.len(), embeddings.len())));
        }
        Ok(ZeroShotClassifier { labels, embeddings, scoring })
    }

    /// How probabilities are computed (softmax over the labels, or a sigmoid per label).
    pub fn scoring(&self) -> Scoring {
        self.scoring
    }

    /// The labels, in vocabulary order.
    pub fn labels(&self) -> &[String] {
        &self.labels
    }

    /// Scores of every label for an image embedding, in vocabulary order.
    pub fn scores(&self, image: &[f32]) -> Vec<LabelScore> {
        let cosines: Vec<f32> = self.embeddings.iter().map(|t| t.iter().zip(image).map(|(a, b)| a * b).sum()).collect();
        let probabilities: Vec<f32> = match self.scoring {
            Scoring::Softmax { logit_scale } => {
                let logits: Vec<f32> = cosines.iter().map(|c| logit_scale * c).collect();
                let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
                let exps: Vec<f32> = logits.iter().map(|l| (l - max).exp()).collect();
                let total: f32 = exps.iter().sum();
                exps.iter().map(|e| e / total).collect()
            }
            Scoring::Sigmoid { logit_scale, logit_bias } => {
                cosines.iter().map(|c| 1.0 / (1.0 + (-(logit_scale * c + logit_bias)).exp())).collect()
            }
        };
        self.labels
            .iter()
            .zip(cosines.iter().zip(probabilities))
            .map(|(label, (&cosine, probability))| LabelScore { label: label.clone(), probability, cosine })
            .collect()
    }

    /// The labels ranked by probability (equivalently by cosine), best first.
    pub fn classify(&self, image: &[f32]) -> Vec<LabelScore> {
        let mut s = self.scores(image);
        s.sort_by(|a, b| b.probability.total_cmp(&a.probability).then_with(|| a.label.cmp(&b.label)));
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vocabulary_files_tolerate_comments_blanks_duplicates_and_unicode() {
        let text = "# animals\ncat\n\n  dog  \ncat\nchat noir # French\n狗\n   \n# end\n";
        assert_eq!(parse_vocabulary(text), vec!["cat", "dog", "chat noir", "狗"]);
        assert_eq!(parse_label_list("cat, dog,,car ,cat"), vec!["cat", "dog", "car"]);
    }

    #[test]
    fn the_built_in_vocabulary_is_large_and_clean() {
        let labels = parse_vocabulary(DEFAULT_VOCABULARY);
        assert!(labels.len() >= 300, "{}", labels.len());
        assert_eq!(
            labels.len(),
            DEFAULT_VOCABULARY.lines().filter(|l| !l.trim().is_empty() && !l.starts_with('#')).count()
        );
    }

    #[test]
    fn a_sigmoid_scores_each_label_on_its_own_where_a_softmax_shares_out_one() {
        let unit = |x: f32, y: f32| vec![x, y];
        let image = unit(1.0, 0.0);
        let labels = vec!["a".to_string(), "b".to_string(), "c".to_string()];
        let embeddings = vec![unit(1.0, 0.0), unit(0.6, 0.8), unit(0.0, 1.0)];
        let sigmoid = Scoring::Sigmoid { logit_scale: 10.0, logit_bias: -5.0 };
        let s = ZeroShotClassifier::from_embeddings(labels.clone(), embeddings.clone(), sigmoid).unwrap();
        let p: Vec<f32> = s.scores(&image).iter().map(|l| l.probability).collect();
        let expected = [1.0 / (1.0 + (-5f32).exp()), 1.0 / (1.0 + (-1f32).exp()), 1.0 / (1.0 + 5f32.exp())];
        for (got, want) in p.iter().zip(expected) {
            assert!((got - want).abs() < 1e-6, "{p:?}");
        }
        // Dropping a label leaves the others' probabilities as they were.
        let two = ZeroShotClassifier::from_embeddings(labels[..2].to_vec(), embeddings[..2].to_vec(), sigmoid).unwrap();
        assert_eq!(two.scores(&image)[0].probability, p[0]);
        let softmax = Scoring::Softmax { logit_scale: 10.0 };
        let s = ZeroShotClassifier::from_embeddings(labels, embeddings, softmax).unwrap();
        let total: f32 = s.scores(&image).iter().map(|l| l.probability).sum();
        assert!((total - 1.0).abs() < 1e-6);
    }

    #[test]
    fn templates_need_a_placeholder() {
        assert!(parse_templates("a photo of a {}.\nart of {}").is_ok());
        assert!(parse_templates("a photo").unwrap_err().to_string().contains("no {}"));
        assert!(parse_templates("# nothing").is_err());
        assert!(PHOTO_TEMPLATES.iter().all(|t| t.contains("{}")));
    }
}
