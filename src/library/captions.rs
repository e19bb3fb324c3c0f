//! Captions in the library: captioning every indexed image with BLIP (incremental and
//! resumable: each caption is stored as it is made, and images already captioned with the
//! same settings are skipped), searching by caption (BM25), and blending caption matches into
//! CLIP's ranking (see [`crate::query::captions`]).

use std::sync::Arc;

use serde::Serialize;

use super::Library;
use crate::error::Result;
use crate::indexer::Progress;
use crate::models::blip::BlipCaptioner;
use crate::photo::DecodeOptions;
use crate::query::captions::{BlendedHit, CaptionIndex, fuse};
use crate::query::{self, SearchFilter, SearchHit};
use crate::store::{ImageId, StoredCaption};

/// The setting holding how new photos are captioned (stored by `caption --library`).
pub(crate) const CAPTION_SETTING: &str = "caption";

/// How `caption --library` captions.
#[derive(Debug, Clone, PartialEq, Serialize, serde::Deserialize)]
pub struct CaptionOptions {
    /// The captioning model's name (hub id or directory), part of the settings fingerprint.
    pub model: String,
    /// Text every caption starts with.
    pub prompt: Option<String>,
    /// Beam width (1: greedy).
    pub beams: usize,
    /// Most tokens after the prompt.
    pub max_tokens: usize,
}

impl CaptionOptions {
    /// What a stored caption records of how it was made, as it is stored.
    pub fn fingerprint(&self) -> String {
        crate::store::settings_as_stored(&format!(
            "{}{sep}{}{sep}beams={}{sep}max={}",
            self.model,
            self.prompt.as_deref().unwrap_or(""),
            self.beams,
            self.max_tokens,
            sep = crate::store::SETTINGS_SEPARATOR
        ))
    }
}

/// What a `caption --library` pass did.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct CaptionReport {
    /// Images in the library.
    pub images: u64,
    /// Images captioned now.
    pub captioned: u64,
    /// Images already captioned with these settings.
    pub unchanged: u64,
    /// Images none of whose files could be read (they keep any older caption).
    pub failed: u64,
}

/// A caption search result.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CaptionHit {
    /// The image, its file, and its caption's BM25 score (`score`).
    #[serde(flatten)]
    pub hit: SearchHit,
    /// The caption.
    pub caption: String,
}

impl Library {
    /// Captions every image not yet captioned with these settings, storing each caption as it
    /// is made. `progress` gets (images done, images in the library).
    pub fn caption_library(
        &self,
        captioner: &BlipCaptioner,
        options: &CaptionOptions,
        progress: Progress,
    ) -> Result<CaptionReport> {
        self.caption_images(captioner, options, progress, &|| false)
    }

    /// Captions every image not yet captioned with `options`, asking `pause` between images:
    /// when it says so, the run ends early (what was captioned is kept).
    fn caption_images(
        &self,
        captioner: &BlipCaptioner,
        options: &CaptionOptions,
        progress: Progress,
        pause: &dyn Fn() -> bool,
    ) -> Result<CaptionReport> {
        let fingerprint = options.fingerprint();
        let start = captioner.start_ids(options.prompt.as_deref())?;
        let decode =
            DecodeOptions { max_pixels: self.config.max_pixels, min_side: Some(2 * captioner.encoder().input_side()) };
        let ids: Vec<ImageId> = self.store.images().map(|r| r.map(|(id, _)| id)).collect::<Result<_>>()?;
        let mut report = CaptionReport { images: ids.len() as u64, ..Default::default() };
        progress(0, report.images);
        for (done, &id) in ids.iter().enumerate() {
            if self.store.caption_of(id)?.is_some_and(|c| crate::store::settings_as_stored(&c.settings) == fingerprint)
            {
                report.unchanged += 1;
            } else if pause() {
                break;
            } else {
                // A video is captioned by its poster frame.
                let record = self.store.image(id)?;
                let image =
                    self.store.paths_of(id)?.iter().find_map(|p| match self.open_media(record.as_ref()?, p, &decode) {
                        Ok(image) => Some(image),
                        Err(e) => {
                            tracing::warn!("cannot caption {}: {e}", p.display());
                            None
                        }
                    });
                match image {
                    Some(image) => {
                        let ids = captioner.beam_search(&image, &start, options.beams, options.max_tokens)?;
                        let caption = StoredCaption::new(&captioner.decode(&ids)?, &fingerprint);
                        if self.store.set_caption(id, &caption)? {
                            report.captioned += 1;
                        }
                    }
                    None => report.failed += 1,
                }
            }
            progress(done as u64 + 1, report.images);
        }
        self.store.flush()?;
        Ok(report)
    }

    /// How new photos are captioned, when captioning is on for the library.
    pub fn caption_settings(&self) -> Result<Option<CaptionOptions>> {
        match self.store.setting_json(CAPTION_SETTING)? {
            None => Ok(None),
            Some(json) => serde_json::from_slice::<Option<CaptionOptions>>(&json)
                .map_err(|e| crate::Error::Store(format!("the setting {CAPTION_SETTING} is not readable: {e}"))),
        }
    }

    /// Switches captioning of new photos on with `options` (`caption --library` does), or off.
    pub fn set_caption_settings(&self, options: Option<&CaptionOptions>) -> Result<()> {
        let json = serde_json::to_vec(&options).map_err(|e| crate::Error::Store(e.to_string()))?;
        self.store.set_setting_json(CAPTION_SETTING, &json)
    }

    /// Captions the photos the stored settings have not captioned yet (nothing when captioning
    /// is off), loading the captioning model once per library; `pause` ends the run early.
    pub fn caption_pending(&self, progress: Progress, pause: &dyn Fn() -> bool) -> Result<Option<CaptionReport>> {
        let Some(options) = self.caption_settings()? else { return Ok(None) };
        let captioner = self.captioner(&options.model)?;
        self.caption_images(&captioner, &options, progress, pause).map(Some)
    }

    /// The captioning model `model`, loaded once per library (background captioning and the
    /// server's caption requests share it). A failed load is not kept: the next call tries again.
    pub fn captioner(&self, model: &str) -> Result<Arc<BlipCaptioner>> {
        // `./model` and `/abs/model` are one model.
        let key = crate::models::source::canonical_spec(model);
        let mut cached = self.captioner.lock().expect("captioner lock");
        if let Some(captioner) = cached.get(&key) {
            return Ok(captioner.clone());
        }
        let loaded =
            Arc::new(BlipCaptioner::load(model, &self.config.device.open()?)?.with_precision(self.config.precision));
        cached.insert(key, loaded.clone());
        Ok(loaded)
    }

    /// Captions one indexed image now, from the file it was indexed from, and stores the
    /// caption with these settings (replacing any other).
    pub fn caption_image(&self, captioner: &BlipCaptioner, options: &CaptionOptions, id: ImageId) -> Result<String> {
        let start = captioner.start_ids(options.prompt.as_deref())?;
        let image = self.open_indexed(id, Some(2 * captioner.encoder().input_side()))?;
        let ids = captioner.beam_search(&image, &start, options.beams, options.max_tokens)?;
        let caption = StoredCaption::new(&captioner.decode(&ids)?, &options.fingerprint());
        self.store.set_caption(id, &caption)?;
        self.store.flush()?;
        Ok(caption.text)
    }

    /// The caption ranking, rebuilt when captions changed since the last one.
    fn caption_index(&self) -> Result<Arc<CaptionIndex>> {
        let mut cached = self.caption_index.lock().expect("caption index lock");
        let changes = self.store.caption_changes()?;
        if let Some((c, index)) = cached.as_ref()
            && *c == changes
        {
            return Ok(index.clone());
        }
        let captions = self.store.captions().map(|r| r.map(|(id, c)| (id, c.text))).collect::<Result<Vec<_>>>()?;
        let index = Arc::new(CaptionIndex::build(captions));
        *cached = Some((changes, index.clone()));
        Ok(index)
    }

    /// Whether any image has a caption. Asked on every search (to blend captions in), so it
    /// reads the cached caption ranking rather than counting every table of the store.
    pub fn has_captions(&self) -> Result<bool> {
        Ok(!self.caption_index()?.is_empty())
    }

    /// The `k` images whose captions best match `text` (BM25) and pass `filter`.
    pub fn search_captions(&self, text: &str, k: usize, filter: &SearchFilter) -> Result<Vec<CaptionHit>> {
        let filter = self.resolve_tag(filter)?;
        let mut hits = Vec::with_capacity(k);
        for (id, score) in self.caption_index()?.rank(text) {
            if hits.len() == k {
                break;
            }
            let Some(path) = query::passing_path(&self.store, id, &filter)? else { continue };
            let Some(caption) = self.store.caption_of(id)? else { continue };
            let media = query::Media::of_image(&self.store, id)?;
            hits.push(CaptionHit { hit: SearchHit { id, path, score, media }, caption: caption.text });
        }
        Ok(hits)
    }

    /// Text search blending CLIP with caption matches: weighted reciprocal rank fusion of
    /// CLIP's and the captions' best `max(k, 50)` (weight `weight` on captions); `score` stays
    /// the CLIP cosine.
    pub fn search_blended(&self, text: &str, k: usize, filter: &SearchFilter, weight: f32) -> Result<Vec<BlendedHit>> {
        self.search_blended_with(&self.embed_text(text)?, text, k, filter, weight)
    }

    /// [`Library::search_blended`] with the text's CLIP embedding already computed.
    pub fn search_blended_with(
        &self,
        query: &[f32],
        text: &str,
        k: usize,
        filter: &SearchFilter,
        weight: f32,
    ) -> Result<Vec<BlendedHit>> {
        let depth = k.max(50);
        let clip = self.search_vector(query, depth, filter)?;
        let captions = self.search_captions(text, depth, filter)?;
        let clip_ids: Vec<ImageId> = clip.iter().map(|h| h.id).collect();
        let caption_ids: Vec<ImageId> = captions.iter().map(|h| h.hit.id).collect();
        let mut out = Vec::with_capacity(k);
        for (id, blended) in fuse(&clip_ids, &caption_ids, weight).into_iter().take(k) {
            let caption = captions.iter().find(|c| c.hit.id == id);
            let hit = match clip.iter().find(|h| h.id == id) {
                Some(h) => h.clone(),
                None => {
                    let c = caption.expect("a fused id comes from one of the lists");
                    let vector = self.store.vector(id)?.unwrap_or_default();
                    let score = vector.iter().zip(query).map(|(a, b)| a * b).sum();
                    SearchHit { id, path: c.hit.path.clone(), score, media: c.hit.media }
                }
            };
            out.push(BlendedHit { hit, caption_score: caption.map(|c| c.hit.score), blended });
        }
        Ok(out)
    }
}
