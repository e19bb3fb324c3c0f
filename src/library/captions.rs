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
use crate::query::captions::{BlendedHit, DEFAULT_TEXT_WEIGHT, fuse_with_text};
use crate::query::fulltext::Field;
use crate::query::{self, SearchFilter, SearchHit};
use crate::store::{ImageId, StoredCaption};

/// Photos captioned together: one encoder pass, their decoders' steps shared (see
/// [`BlipCaptioner::caption_batch`]). Eight keeps the decoding rows (8 × 3 beams) within the
/// few-rows kernel's reach and the batch's decoded photos small.
pub const CAPTION_BATCH: usize = 8;

/// Some images to caption (`None`: none of its files could be read), after `unchanged`
/// images already captioned with the run's settings.
struct PhotoBatch {
    unchanged: u64,
    photos: Vec<(ImageId, Option<image::RgbImage>)>,
}

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

    /// Captions every image not yet captioned with `options`, [`CAPTION_BATCH`] at a time,
    /// asking `pause` before each batch: when it says so, the run ends early (what was
    /// captioned is kept). The next batch's photos are decoded on another thread while the
    /// model captions this one.
    fn caption_images(
        &self,
        captioner: &BlipCaptioner,
        options: &CaptionOptions,
        progress: Progress,
        pause: &dyn Fn() -> bool,
    ) -> Result<CaptionReport> {
        let fingerprint = options.fingerprint();
        let start = captioner.start_ids(options.prompt.as_deref())?;
        let ids: Vec<ImageId> = self.store.images().map(|r| r.map(|(id, _)| id)).collect::<Result<_>>()?;
        let mut report = CaptionReport { images: ids.len() as u64, ..Default::default() };
        progress(0, report.images);
        let mut done = 0u64;
        std::thread::scope(|scope| -> Result<()> {
            let (batches, received) = std::sync::mpsc::sync_channel::<Result<PhotoBatch>>(1);
            let fingerprint = &fingerprint;
            let ids = &ids;
            scope.spawn(move || {
                for batch in self.photo_batches(ids, fingerprint, 2 * captioner.encoder().input_side()) {
                    let failed = batch.is_err();
                    if batches.send(batch).is_err() || failed {
                        return;
                    }
                }
            });
            for batch in received {
                let PhotoBatch { unchanged, photos } = batch?;
                report.unchanged += unchanged;
                done += unchanged;
                progress(done, report.images);
                if photos.is_empty() {
                    continue;
                }
                if pause() {
                    break;
                }
                let total = photos.len() as u64;
                let (ids, images): (Vec<ImageId>, Vec<image::RgbImage>) =
                    photos.into_iter().filter_map(|(id, image)| Some((id, image?))).unzip();
                report.failed += total - images.len() as u64;
                done += total - images.len() as u64;
                let captions = captioner.caption_batch(&images, &start, options.beams, options.max_tokens)?;
                for (id, caption_ids) in ids.into_iter().zip(captions) {
                    let caption = StoredCaption::new(&captioner.decode(&caption_ids)?, fingerprint);
                    if self.write_caption(id, &caption)? {
                        report.captioned += 1;
                    }
                    done += 1;
                    progress(done, report.images);
                }
            }
            Ok(())
        })?;
        self.store.flush()?;
        Ok(report)
    }

    /// The images of `ids` to caption, decoded (at least `min_side` pixels on the short side),
    /// [`CAPTION_BATCH`] at a time, each batch with the count of images before it that are
    /// already captioned with `fingerprint`. A video is captioned by its poster frame; an
    /// image none of whose files can be read comes as `None`.
    fn photo_batches<'a>(
        &'a self,
        ids: &'a [ImageId],
        fingerprint: &'a str,
        min_side: u32,
    ) -> impl Iterator<Item = Result<PhotoBatch>> + 'a {
        let decode = DecodeOptions { max_pixels: self.config.max_pixels, min_side: Some(min_side) };
        let mut rest = ids.iter();
        std::iter::from_fn(move || {
            let mut unchanged = 0;
            let mut todo = Vec::with_capacity(CAPTION_BATCH);
            for &id in rest.by_ref() {
                match self.store.caption_of(id) {
                    Ok(Some(c)) if crate::store::settings_as_stored(&c.settings) == fingerprint => unchanged += 1,
                    Ok(_) => todo.push(id),
                    Err(e) => return Some(Err(e)),
                }
                if todo.len() == CAPTION_BATCH {
                    break;
                }
            }
            if unchanged == 0 && todo.is_empty() {
                return None;
            }
            use rayon::prelude::*;
            let photos = todo.par_iter().map(|&id| Ok((id, self.open_any(id, &decode)?))).collect::<Result<Vec<_>>>();
            Some(photos.map(|photos| PhotoBatch { unchanged, photos }))
        })
    }

    /// The image `id` from the first of its files that opens (a video's poster frame), or
    /// `None` when none does (each failure logged).
    pub(super) fn open_any(&self, id: ImageId, decode: &DecodeOptions) -> Result<Option<image::RgbImage>> {
        let Some(record) = self.store.image(id)? else { return Ok(None) };
        Ok(self.store.paths_of(id)?.iter().find_map(|p| match self.open_media(&record, p, decode) {
            Ok(image) => Some(image),
            Err(e) => {
                tracing::warn!("cannot read {}: {e}", p.display());
                None
            }
        }))
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
            Arc::new(BlipCaptioner::load(model, &self.config.device.open()?)?.with_precision(self.precision()));
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
        self.write_caption(id, &caption)?;
        self.store.flush()?;
        Ok(caption.text)
    }

    /// Stores the caption of `id` (`false`: refused) and applies it to the cached full-text
    /// index.
    pub(super) fn write_caption(&self, id: ImageId, caption: &StoredCaption) -> Result<bool> {
        self.write_full_text(Field::Caption, id, Some(&caption.text), || self.store.set_caption(id, caption))
    }

    /// Whether any image has a caption. Asked on every search (to blend captions in), so it
    /// reads the cached caption ranking rather than counting every table of the store.
    pub fn has_captions(&self) -> Result<bool> {
        Ok(self.full_text()?.len(Field::Caption)? > 0)
    }

    /// The `k` images whose captions best match `text` (BM25) and pass `filter`.
    pub fn search_captions(&self, text: &str, k: usize, filter: &SearchFilter) -> Result<Vec<CaptionHit>> {
        let filter = self.resolve_tag(filter)?;
        let mut hits = Vec::with_capacity(k);
        for (id, score) in self.full_text()?.rank_captions(text)? {
            if hits.len() == k {
                break;
            }
            let Some(path) = query::passing_path(&self.store, id, &filter)? else { continue };
            let Some(caption) = self.store.caption_of(id)? else { continue };
            let media = query::Media::of_image(&self.store, id)?;
            let mut hit = SearchHit { id, path, score, media, companions: Default::default() };
            self.attach_companions(std::slice::from_mut(&mut hit))?;
            hits.push(CaptionHit { hit, caption: caption.text });
        }
        Ok(hits)
    }

    /// Text search blending CLIP with caption matches and matches of the text in photos:
    /// weighted reciprocal rank fusion of CLIP's, the captions' and the photo text's best
    /// `max(k, 50)` (weight `weight` on captions, [`DEFAULT_TEXT_WEIGHT`] times the share of
    /// the query matched on photo text); `score` stays the CLIP cosine.
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
        let captions = if weight > 0.0 { self.search_captions(text, depth, filter)? } else { Vec::new() };
        let texts = if self.has_text()? { self.search_photo_text(text, depth, filter)? } else { Vec::new() };
        let clip_ids: Vec<ImageId> = clip.iter().map(|h| h.id).collect();
        let caption_ids: Vec<ImageId> = captions.iter().map(|h| h.hit.id).collect();
        let text_ids: Vec<(ImageId, f32)> = texts.iter().map(|h| (h.hit.id, h.coverage)).collect();
        let mut out = Vec::with_capacity(k);
        for (id, blended) in
            fuse_with_text(&clip_ids, &caption_ids, weight, &text_ids, DEFAULT_TEXT_WEIGHT).into_iter().take(k)
        {
            let caption = captions.iter().find(|c| c.hit.id == id);
            let photo_text = texts.iter().find(|t| t.hit.id == id);
            let hit = match clip.iter().find(|h| h.id == id) {
                Some(h) => h.clone(),
                None => {
                    let Some(c) = caption.map(|c| &c.hit).or(photo_text.map(|t| &t.hit)) else { continue };
                    let vector = self.store.vector(id)?.unwrap_or_default();
                    let score = vector.iter().zip(query).map(|(a, b)| a * b).sum();
                    SearchHit { id, path: c.path.clone(), score, media: c.media, companions: c.companions.clone() }
                }
            };
            out.push(BlendedHit {
                hit,
                caption_score: caption.map(|c| c.hit.score),
                text_score: photo_text.map(|t| t.hit.score),
                text: photo_text.map(|t| t.text.clone()),
                blended,
            });
        }
        Ok(out)
    }
}
