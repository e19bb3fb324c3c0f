//! The text in photos in the library: reading every indexed photo's text with a PP-OCR model
//! (incremental and resumable: each photo's lines are stored as soon as they are read, and a
//! photo is read again only when its content or the model changes), searching it through the
//! library's one full-text index ([`crate::query::fulltext`]), and blending text matches into
//! CLIP's ranking (see [`crate::query::captions::fuse_with_text`]).
//!
//! Which model reads new photos is the library's `ocr_model` setting ([`super::Settings`]),
//! recorded by `config set ocr_model DIR` or by the first `--ocr-model DIR` (`ocr --library`,
//! `index --ocr`, `serve`, `watch`) and used by them all without the flag. A model is known by
//! its folder's name and a checksum of its files ([`ocr_model_id`]), so the same files moved
//! elsewhere are the same model, and a changed file is another. A photo of one colour is
//! stored as holding no text without running the model (a blank page, a black video frame).

use std::path::Path;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use super::Library;
use crate::error::{Error, Result};
use crate::indexer::Progress;
use crate::models::ocr::{OcrConfig, OcrModel, OcrModelFiles, OcrPage};
use crate::photo::DecodeOptions;
use crate::query::fulltext::{Field, FullTextIndex, TextMatches, TextQuery, TextSnippet, matching_lines};
use crate::query::{self, SearchFilter, SearchHit};
use crate::store::{ImageId, StoredText, TextLine};

/// Where libraries before the one settings record kept which OCR model reads new photos (JSON
/// `{"model": DIR}` or `null`). [`fold_legacy_ocr_setting`] moves it into the library's
/// settings (`ocr_model`) when such a library is opened, and leaves `null` here; `migrate`
/// still copies it, so a library copied before it was opened folds it on its first open.
pub(crate) const LEGACY_OCR_SETTING: &str = "ocr";

/// Photos are decoded at a reduced scale down to this short side at most: the OCR pipeline
/// works on at most 2000 pixels a side, so decoding a 12 MP JPEG at full size buys nothing.
const OCR_DECODE_SIDE: u32 = 1500;

/// How many photos the database ranks for a text query (PostgreSQL) before the library applies
/// phrases and the words' coverage.
const DATABASE_CANDIDATES: usize = 1000;

/// The full-text index kept while neither captions nor texts change: ((caption changes, text
/// changes), index).
pub(super) type CachedFullText = ((u64, u64), Arc<FullTextIndex>);

/// How a library reads the text in its photos.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OcrSettings {
    /// The folder holding the PP-OCR model files.
    pub model: String,
}

/// What a pass over the library's photos did.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct OcrReport {
    /// Images in the library.
    pub images: u64,
    /// Images read now.
    pub read: u64,
    /// Of those, images where some text was found.
    pub with_text: u64,
    /// Images already read by this model from their current content.
    pub unchanged: u64,
    /// Images none of whose files could be read (read again by the next pass).
    pub failed: u64,
    /// Seconds the pass took.
    pub seconds: f64,
}

/// A result of a search of the text in photos.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TextHit {
    /// The image, its file and its BM25 score (`score`).
    #[serde(flatten)]
    pub hit: SearchHit,
    /// The share of the query's words and phrases its text holds (0..=1).
    pub coverage: f32,
    /// What matched: the matching lines and their boxes.
    pub text: TextSnippet,
}

/// The id of the OCR model in `dir`: its folder's name and a checksum of its files (detection,
/// recognition, orientation, dictionary), as stored with each photo's text.
pub fn ocr_model_id(dir: &Path) -> Result<String> {
    let files = OcrModelFiles::find(dir)?;
    let mut hasher = blake3::Hasher::new();
    for path in [Some(&files.det), Some(&files.rec), files.cls.as_ref(), files.dict.as_ref()].into_iter().flatten() {
        let bytes = std::fs::read(path)
            .map_err(|e| Error::model(dir.display().to_string(), format!("cannot read {}: {e}", path.display())))?;
        hasher.update(&(bytes.len() as u64).to_le_bytes());
        hasher.update(&bytes);
    }
    let name = dir.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_else(|| dir.display().to_string());
    Ok(format!("{name}:{}", &hasher.finalize().to_hex()[..16]))
}

/// Moves the OCR model that a library made before the one settings record kept in
/// [`LEGACY_OCR_SETTING`] into its settings' `ocr_model` (unless that records one already), and
/// empties the old record, so each library is upgraded once. Returns the settings as they now
/// stand.
pub(super) fn fold_legacy_ocr_setting(
    store: &crate::store::Store,
    mut settings: super::Settings,
) -> Result<super::Settings> {
    let Some(json) = store.setting_json(LEGACY_OCR_SETTING)? else { return Ok(settings) };
    let legacy: Option<OcrSettings> = serde_json::from_slice(&json).map_err(|e| {
        Error::Store(format!(
            "the old OCR setting {LEGACY_OCR_SETTING:?} is not readable ({e}); record the model with \
             `clipdex config set ocr_model DIR`"
        ))
    })?;
    let Some(legacy) = legacy else { return Ok(settings) };
    if settings.ocr_model.is_none() {
        settings.ocr_model = Some(legacy.model);
        store.set_setting(super::settings::SETTINGS_KEY, &settings)?;
    }
    store.set_setting_json(LEGACY_OCR_SETTING, b"null")?;
    Ok(settings)
}

/// An OCR model loaded for the library, with its id.
pub struct LoadedOcrModel {
    /// The model.
    pub model: OcrModel,
    /// Its id (see [`ocr_model_id`]).
    pub id: String,
}

/// A snippet of a photo's text: the lines holding a matched term (all lines when none does, as
/// for a phrase matched across lines), joined with " … ", and their boxes.
fn snippet_of(text: &StoredText, matches: &TextMatches) -> TextSnippet {
    let mut lines = matching_lines(text.lines.iter().map(|l| l.text.as_str()), &matches.matched_terms);
    if lines.is_empty() {
        lines = (0..text.lines.len()).collect();
    }
    let mut snippet = String::new();
    let mut boxes = Vec::new();
    for &i in &lines {
        let line: &TextLine = &text.lines[i];
        if !snippet.is_empty() {
            snippet.push_str(" … ");
        }
        snippet.push_str(&line.text);
        boxes.push(line.quad);
    }
    TextSnippet { snippet, boxes }
}

impl Library {
    /// How new photos' text is read, when reading is on for the library (its `ocr_model`
    /// setting is recorded).
    pub fn ocr_settings(&self) -> Result<Option<OcrSettings>> {
        Ok(self.settings()?.ocr_model.map(|model| OcrSettings { model }))
    }

    /// Switches reading the text of photos on with `settings` (recorded as the `ocr_model`
    /// setting), or off (the setting forgotten; stored text stays).
    pub fn set_ocr_settings(&self, settings: Option<&OcrSettings>) -> Result<()> {
        self.set_setting_value("ocr_model", settings.map(|s| s.model.as_str())).map(drop)
    }

    /// The OCR model in `dir`, loaded once per library (a pass and the server share it). A
    /// failed load is not kept: the next call tries again.
    pub fn ocr_model(&self, dir: &str) -> Result<Arc<LoadedOcrModel>> {
        let mut cached = self.ocr_model.lock().expect("ocr model lock");
        if let Some((d, loaded)) = cached.as_ref()
            && d == dir
        {
            return Ok(loaded.clone());
        }
        let path = Path::new(dir);
        let loaded =
            Arc::new(LoadedOcrModel { id: ocr_model_id(path)?, model: OcrModel::open(path, OcrConfig::default())? });
        *cached = Some((dir.to_string(), loaded.clone()));
        Ok(loaded)
    }

    /// Reads the text of every photo not yet read by `model` from its current content, storing
    /// each photo's lines as they are read; `pause` ends the run early (what was read is kept).
    /// A video is read on its poster frame. `progress` gets (images done, images).
    pub fn read_text(&self, model: &LoadedOcrModel, progress: Progress, pause: &dyn Fn() -> bool) -> Result<OcrReport> {
        let started = std::time::Instant::now();
        let ids: Vec<ImageId> = self.store.images().map(|r| r.map(|(id, _)| id)).collect::<Result<_>>()?;
        let mut report = OcrReport { images: ids.len() as u64, ..Default::default() };
        progress(0, report.images);
        let decode = DecodeOptions { max_pixels: self.config.max_pixels, min_side: Some(OCR_DECODE_SIDE) };
        let mut done = 0u64;
        std::thread::scope(|scope| -> Result<()> {
            // The next photo is decoded while the model reads this one.
            let (photos, received) = std::sync::mpsc::sync_channel::<Result<(ImageId, Option<PhotoToRead>)>>(2);
            let ids = &ids;
            let decode = &decode;
            scope.spawn(move || {
                for &id in ids {
                    let todo = self.photo_to_read(id, &model.id, decode);
                    let failed = todo.is_err();
                    if photos.send(todo.map(|t| (id, t))).is_err() || failed {
                        return;
                    }
                }
            });
            for item in received {
                let (id, todo) = item?;
                done += 1;
                match todo {
                    None => report.unchanged += 1,
                    Some(PhotoToRead { hash: _, image: None }) => report.failed += 1,
                    Some(PhotoToRead { hash, image: Some(image) }) => {
                        if pause() {
                            break;
                        }
                        // A photo of one colour (a blank page, a black video frame) has no
                        // text: the detector, which would see it enlarged to 736 px at least, is
                        // not run.
                        let page =
                            if is_one_colour(&image) { OcrPage::default() } else { model.model.read_page(&image)? };
                        if page.capped {
                            tracing::info!("image {id}: more text regions than the model reads; the first were read");
                        }
                        let lines: Vec<TextLine> = page
                            .lines
                            .into_iter()
                            .map(|l| TextLine { text: l.text, score: l.score, quad: l.quad })
                            .collect();
                        let with_text = !lines.is_empty();
                        tracing::debug!(image = id, lines = lines.len(), "photo text read");
                        let text = StoredText::new(&hash, &model.id, lines);
                        if self.write_text(id, &text)? {
                            // On disk before the next photo: a pass killed now loses at most the
                            // photo it is reading (seconds of work), not sled's last half second.
                            self.store.flush()?;
                            report.read += 1;
                            report.with_text += u64::from(with_text);
                        }
                    }
                }
                progress(done, report.images);
            }
            Ok(())
        })?;
        self.store.flush()?;
        report.seconds = started.elapsed().as_secs_f64();
        Ok(report)
    }

    /// `None` when `id`'s text was read by model `model_id` from its current content; else its
    /// content hash and its pixels (`None` when no file of it opens).
    fn photo_to_read(&self, id: ImageId, model_id: &str, decode: &DecodeOptions) -> Result<Option<PhotoToRead>> {
        let Some(record) = self.store.image(id)? else { return Ok(None) };
        if self.store.text_of(id)?.is_some_and(|t| t.is_current(&record.hash, model_id)) {
            return Ok(None);
        }
        let image = self.open_any(id, decode)?;
        Ok(Some(PhotoToRead { hash: record.hash, image }))
    }

    /// Reads the text of the photos the library's OCR model has not read yet (nothing when
    /// reading is off); `pause` ends the run early.
    pub fn read_text_pending(&self, progress: Progress, pause: &dyn Fn() -> bool) -> Result<Option<OcrReport>> {
        let Some(settings) = self.ocr_settings()? else { return Ok(None) };
        let model = self.ocr_model(&settings.model)?;
        self.read_text(&model, progress, pause).map(Some)
    }

    /// The text read in one image, if it was read.
    pub fn text_of(&self, id: ImageId) -> Result<Option<StoredText>> {
        self.store.text_of(id)
    }

    /// Stores the text read in `id` (refused, `false`, when the photo's content changed
    /// meanwhile) and applies it to the cached full-text index.
    pub(super) fn write_text(&self, id: ImageId, text: &StoredText) -> Result<bool> {
        let joined = text.joined();
        self.write_full_text(Field::Text, id, Some(&joined), || self.store.set_text(id, text))
    }

    /// Applies one write of `field` to the cached full-text index with `update`, when the
    /// store's change counter for the field shows that this write (counter `before` when it
    /// began) is the only change since the index was made; otherwise (another writer came
    /// between) the next search rebuilds the index. A pass over N photos thus costs N small
    /// updates, not N rebuilds, however often the library is searched meanwhile.
    pub(super) fn full_text_written(
        &self,
        field: Field,
        before: u64,
        update: impl FnOnce(&mut FullTextIndex),
    ) -> Result<()> {
        let mut cached = self.full_text.lock().unwrap_or_else(|p| p.into_inner());
        let Some(((captions, texts), index)) = cached.as_mut() else { return Ok(()) };
        let (counter, now) = match field {
            Field::Caption => (captions, self.store.caption_changes()?),
            Field::Text => (texts, self.store.text_changes()?),
        };
        if *counter == before && now == before + 1 {
            // A search holding the index keeps its copy; the update goes into a new one then.
            update(Arc::make_mut(index));
            *counter = now;
        }
        Ok(())
    }

    /// The full-text index of captions and photo text, built from the store when there is
    /// none or when it changed in ways the library did not apply ([`Self::full_text_written`]).
    pub(super) fn full_text_index(&self) -> Result<Arc<FullTextIndex>> {
        let mut cached = self.full_text.lock().unwrap_or_else(|p| p.into_inner());
        let changes = (self.store.caption_changes()?, self.store.text_changes()?);
        if let Some((c, index)) = cached.as_ref()
            && *c == changes
        {
            return Ok(index.clone());
        }
        let captions = self.store.captions().map(|r| r.map(|(id, c)| (id, c.text))).collect::<Result<Vec<_>>>()?;
        let texts = self.store.texts().map(|r| r.map(|(id, t)| (id, t.joined()))).collect::<Result<Vec<_>>>()?;
        let index = Arc::new(FullTextIndex::build(captions, texts));
        *cached = Some((changes, index.clone()));
        Ok(index)
    }

    /// Whether any photo has text read in it. Asked on every search (to blend text matches in),
    /// so it reads the cached full-text index rather than counting a table.
    pub fn has_text(&self) -> Result<bool> {
        if self.store.search_text_in_database(&[], &[], false, 0)?.is_some() {
            return Ok(self.store.text_count()? > 0);
        }
        Ok(self.full_text()?.len(Field::Text)? > 0)
    }

    /// The photos whose text best matches `query` and pass `filter`, at most `k` (see
    /// [`crate::query::fulltext`] for what matches). In PostgreSQL the database finds the
    /// candidates (its own text search over the same terms); phrases and coverage are then
    /// applied to their texts (and typo tolerance, to the candidates pg_trgm found).
    pub fn search_photo_text(&self, query: &str, k: usize, filter: &SearchFilter) -> Result<Vec<TextHit>> {
        let parsed = TextQuery::parse(query);
        if parsed.is_empty() || k == 0 {
            return Ok(Vec::new());
        }
        let filter = self.resolve_tag(filter)?;
        let text_of = |id: ImageId| self.store.text_of(id).ok().flatten().map(|t| t.joined());
        let matches = match self.store.search_text_in_database(
            &parsed.terms(),
            &parsed.typo_tolerant_words(),
            false,
            DATABASE_CANDIDATES,
        )? {
            Some(candidates) => {
                let mut texts = Vec::with_capacity(candidates.len());
                for (id, _) in candidates {
                    if let Some(t) = self.store.text_of(id)? {
                        texts.push((id, t.joined()));
                    }
                }
                FullTextIndex::build(std::iter::empty(), texts).rank_text(&parsed, &text_of)
            }
            None => self.full_text()?.rank_text(&parsed, &text_of)?,
        };
        let mut hits = Vec::with_capacity(k.min(matches.hits.len()));
        for m in &matches.hits {
            if hits.len() == k {
                break;
            }
            let Some(path) = query::passing_path(&self.store, m.id, &filter)? else { continue };
            let Some(text) = self.store.text_of(m.id)? else { continue };
            let media = query::Media::of_image(&self.store, m.id)?;
            let mut hit = SearchHit { id: m.id, path, score: m.score, media, companions: Default::default() };
            self.attach_companions(std::slice::from_mut(&mut hit))?;
            hits.push(TextHit { hit, coverage: m.coverage, text: snippet_of(&text, &matches) });
        }
        Ok(hits)
    }
}

/// Whether every pixel of `image` has the same colour.
fn is_one_colour(image: &image::RgbImage) -> bool {
    let mut pixels = image.as_raw().chunks_exact(3);
    let Some(first) = pixels.next() else { return true };
    pixels.all(|p| p == first)
}

/// A photo whose text is to be read: its content hash and pixels (`None`: no file opens).
struct PhotoToRead {
    hash: String,
    image: Option<image::RgbImage>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_colour_photos_are_told_apart_from_any_other() {
        let mut image = image::RgbImage::from_pixel(40, 30, image::Rgb([200, 180, 150]));
        assert!(is_one_colour(&image));
        image.put_pixel(39, 29, image::Rgb([200, 180, 151]));
        assert!(!is_one_colour(&image));
        assert!(is_one_colour(&image::RgbImage::new(0, 0)));
    }
}
