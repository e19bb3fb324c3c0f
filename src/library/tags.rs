//! Zero-shot tags: classifiers with cached label embeddings, and auto-tagging the library.

use crate::error::Result;
use crate::models::source::canonical_spec;
use crate::query::autotag::{self, AutotagReport, AutotagSettings};
use crate::query::tags::{self, ZeroShotClassifier};
use crate::store::TagCount;

use super::Library;

/// Labels embedded (and cached) at a time.
const LABEL_CHUNK: usize = 128;

/// The `meta` key of the auto-tagging settings.
pub(super) const AUTOTAG_SETTING: &str = "autotag";

impl Library {
    /// The stored auto-tagging settings, if `autotag` has been run.
    pub fn autotag_settings(&self) -> Result<Option<AutotagSettings>> {
        self.store.setting(AUTOTAG_SETTING)
    }

    /// A classifier for `labels` in `templates`, with label embeddings from the store's cache
    /// (keyed by model and prompt set); the missing ones are embedded and cached. Returns it
    /// with the number of labels embedded now.
    pub fn classifier(&self, labels: &[String], templates: &[String]) -> Result<(ZeroShotClassifier, usize)> {
        let clip = self.clip()?;
        // Labels embedded by a text model are cached apart from the CLIP's own.
        let text_model = clip.text_model().map(|t| format!("\u{0}text={}", canonical_spec(t))).unwrap_or_default();
        let prefix = format!("{}{text_model}\u{0}{}", self.model(), tags::templates_fingerprint(templates));
        let mut cached = self.store.cached_label_embeddings(&prefix, labels)?;
        let missing: Vec<String> =
            labels.iter().zip(&cached).filter(|(_, c)| c.is_none()).map(|(l, _)| l.clone()).collect();
        if !missing.is_empty() {
            // Cached a chunk at a time: an interrupted run (a kill, a crash) keeps what it did.
            let mut fresh = Vec::with_capacity(missing.len());
            for chunk in missing.chunks(LABEL_CHUNK) {
                let embedded = tags::embed_labels(&clip, chunk, templates)?;
                self.store.cache_label_embeddings(&prefix, chunk, &embedded)?;
                fresh.extend(embedded);
            }
            let mut fresh = fresh.into_iter();
            cached.iter_mut().filter(|c| c.is_none()).for_each(|c| *c = fresh.next());
        }
        let embeddings = cached.into_iter().map(|c| c.expect("every label embedded")).collect();
        Ok((ZeroShotClassifier::from_embeddings(labels.to_vec(), embeddings, clip.scoring())?, missing.len()))
    }

    /// Tags every image not yet tagged with these settings (new settings are stored and used
    /// by later `index`/`watch` passes; `None` reuses the stored ones, or the built-in
    /// vocabulary with the photo templates the first time).
    pub fn autotag(&self, settings: Option<AutotagSettings>) -> Result<AutotagReport> {
        let settings = match settings {
            Some(s) => s,
            None => self.autotag_settings()?.unwrap_or_else(|| {
                AutotagSettings::new(
                    tags::parse_vocabulary(tags::DEFAULT_VOCABULARY),
                    tags::PHOTO_TEMPLATES.iter().map(|t| t.to_string()).collect(),
                )
            }),
        };
        settings.validate()?;
        if self.autotag_settings()?.as_ref() != Some(&settings) {
            self.store.set_setting(AUTOTAG_SETTING, &settings)?;
        }
        let (classifier, embedded) = self.classifier(&settings.labels, &settings.templates)?;
        let fingerprint = settings.fingerprint(&self.model());
        let mut report = autotag::autotag_store(&self.store, &classifier, &settings, &fingerprint, &self.user_tags()?)?;
        report.labels_embedded = embedded as u64;
        Ok(report)
    }

    /// Labels in use, with how many images carry each.
    pub fn tag_counts(&self) -> Result<Vec<TagCount>> {
        self.store.tag_counts()
    }
}
