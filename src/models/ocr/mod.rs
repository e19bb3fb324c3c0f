//! Text in photos: PaddleOCR's PP-OCR models (text detection, line orientation, recognition)
//! run from their ONNX files with [`rten`], a pure-Rust runtime, so users need no system
//! library.
//!
//! The pipeline is RapidOCR's (rapidocr 3.10.0, the reference our parity test compares with,
//! for PP-OCRv4 mobile and PP-OCRv6 small alike):
//!
//! 1. the photo is brought within 30..=2000 px a side (multiples of 32), and a wide or short
//!    one is padded with black above and below;
//! 2. detection runs on the photo resized so its short side is at least `limit_side_len`
//!    (736), normalised to [-1, 1] in BGR order; the probability map gives boxes ([`db`]);
//! 3. each box is cut out straightened (a tall one turned a quarter), optionally turned half
//!    when the orientation classifier is sure it is upside down;
//! 4. recognition reads batches of lines, each resized to 48 px high and padded to the widest
//!    of its batch, and CTC greedy decoding turns them into text with the model's dictionary
//!    (stored in the recogniser's ONNX metadata, or a dictionary file beside it);
//! 5. empty lines and lines scoring under `text_score` are dropped; the rest come in reading
//!    order with boxes in the photo's pixels.
//!
//! Every threshold is RapidOCR's default and can be changed in [`OcrConfig`]. Work per photo is
//! bounded: a photo is never enlarged past `max_side_len`, so the detector sees at most about
//! 3000 x 736 pixels (or 2000 x 2000), and at most `max_candidates` regions are examined
//! ([`OcrPage::capped`] says when more were found).
//!
//! ```no_run
//! use clipdex::models::ocr::{OcrConfig, OcrModel};
//! # fn main() -> clipdex::Result<()> {
//! let model = OcrModel::open(std::path::Path::new("ocr-models/v6"), OcrConfig::default())?;
//! let photo = image::open("receipt.jpg").map_err(|e| clipdex::Error::Invalid(e.to_string()))?.to_rgb8();
//! for line in model.read(&photo)? {
//!     println!("{:.3} {}", line.score, line.text);
//! }
//! # Ok(()) }
//! ```

mod db;
pub(crate) mod raster;

use std::path::{Path, PathBuf};

use image::RgbImage;
use rten::{Model, Value};
use serde::Serialize;

use crate::error::{Error, Result};
use db::DbSettings;

/// How the detector's input size is limited (RapidOCR's `limit_type`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LimitType {
    /// The short side is brought up to at least `limit_side_len`.
    Min,
    /// The long side is brought down to at most `limit_side_len`.
    Max,
}

/// The pipeline's settings; the defaults are RapidOCR's.
#[derive(Debug, Clone)]
pub struct OcrConfig {
    /// Photos are first brought within `min_side_len..=max_side_len` px a side.
    pub min_side_len: u32,
    /// See `min_side_len`.
    pub max_side_len: u32,
    /// Pad a short (`<= min_height`) or wide (`width / height > width_height_ratio`) photo with
    /// black above and below before detection.
    pub use_vertical_padding: bool,
    /// See `use_vertical_padding`.
    pub min_height: u32,
    /// See `use_vertical_padding`.
    pub width_height_ratio: f64,
    /// The detector's input size limit.
    pub limit_side_len: u32,
    /// How `limit_side_len` applies.
    pub limit_type: LimitType,
    /// Probability above which a map pixel is text.
    pub thresh: f32,
    /// Mean probability a box needs to be kept.
    pub box_thresh: f32,
    /// At most this many regions of the map are examined.
    pub max_candidates: usize,
    /// How far boxes are grown: area x ratio / perimeter.
    pub unclip_ratio: f64,
    /// Dilate the thresholded map by 2x2 before finding regions.
    pub use_dilation: bool,
    /// Run the orientation classifier (when the model folder has one).
    pub use_cls: bool,
    /// Confidence above which a line classified upside down is turned.
    pub cls_thresh: f32,
    /// Lines per classifier batch.
    pub cls_batch: usize,
    /// Lines per recognition batch (a batch is padded to its widest line, so this changes
    /// results slightly; 6 as in RapidOCR).
    pub rec_batch: usize,
    /// Recognition input height and minimum width.
    pub rec_height: u32,
    /// See `rec_height`.
    pub rec_width: u32,
    /// Lines scoring under this are dropped.
    pub text_score: f32,
}

impl Default for OcrConfig {
    fn default() -> Self {
        OcrConfig {
            min_side_len: 30,
            max_side_len: 2000,
            use_vertical_padding: true,
            min_height: 30,
            width_height_ratio: 8.0,
            limit_side_len: 736,
            limit_type: LimitType::Min,
            thresh: 0.3,
            box_thresh: 0.5,
            max_candidates: 1000,
            unclip_ratio: 1.6,
            use_dilation: true,
            use_cls: true,
            cls_thresh: 0.9,
            cls_batch: 6,
            rec_batch: 6,
            rec_height: 48,
            rec_width: 320,
            text_score: 0.5,
        }
    }
}

/// One line of text read in a photo.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct OcrLine {
    /// The text.
    pub text: String,
    /// The recogniser's confidence: the mean probability of the characters read, 0..=1.
    pub score: f32,
    /// The line's box in the photo's pixels: top-left, top-right, bottom-right, bottom-left.
    #[serde(rename = "box")]
    pub quad: [[f32; 2]; 4],
}

/// What was read in one photo.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct OcrPage {
    /// The lines, in reading order.
    pub lines: Vec<OcrLine>,
    /// The detector found more regions than `max_candidates`; only the first were read.
    pub capped: bool,
}

/// The files of an OCR model set.
#[derive(Debug, Clone)]
pub struct OcrModelFiles {
    /// Text detection (DB).
    pub det: PathBuf,
    /// Text recognition (CTC).
    pub rec: PathBuf,
    /// Line orientation (0/180), optional.
    pub cls: Option<PathBuf>,
    /// A dictionary file, when the recogniser's metadata has none.
    pub dict: Option<PathBuf>,
}

impl OcrModelFiles {
    /// Finds the models in `dir`: RapidOCR's wheel layout (ONNX files named `*det*`, `*rec*`,
    /// `*cls*` in the folder or its `models/`) or PaddleOCR's inference layout (`det/`, `rec/`,
    /// `cls/` subfolders each with one ONNX file).
    pub fn find(dir: &Path) -> Result<Self> {
        let fail = |reason: String| Error::model(dir.display().to_string(), reason);
        if !dir.is_dir() {
            return Err(fail(
                "not a folder; give a folder holding the PP-OCR ONNX files (`clipdex models download ocr` fetches them)"
                    .into(),
            ));
        }
        let mut onnx = Vec::new();
        let mut texts = Vec::new();
        for sub in [dir.to_path_buf(), dir.join("models"), dir.join("det"), dir.join("rec"), dir.join("cls")] {
            let Ok(entries) = std::fs::read_dir(&sub) else { continue };
            let mut files: Vec<PathBuf> = entries.filter_map(|e| e.ok().map(|e| e.path())).collect();
            files.sort();
            for f in files {
                match f.extension().and_then(|e| e.to_str()) {
                    Some("onnx") => onnx.push(f),
                    Some("txt") => texts.push(f),
                    _ => {}
                }
            }
        }
        let role = |p: &Path, key: &str| {
            let rel = p.strip_prefix(dir).unwrap_or(p).to_string_lossy().to_lowercase();
            rel.contains(key)
        };
        let pick = |key: &str| onnx.iter().find(|p| role(p, key)).cloned();
        let det =
            pick("det").ok_or_else(|| fail("no detection model (an ONNX file or det/ folder named det)".into()))?;
        let rec =
            pick("rec").ok_or_else(|| fail("no recognition model (an ONNX file or rec/ folder named rec)".into()))?;
        let cls = pick("cls");
        let dict = texts.into_iter().find(|p| {
            let name = p.file_name().map(|n| n.to_string_lossy().to_lowercase()).unwrap_or_default();
            name.contains("dict") || name.contains("keys")
        });
        Ok(OcrModelFiles { det, rec, cls, dict })
    }
}

/// A loaded PP-OCR model set with its pipeline settings.
pub struct OcrModel {
    det: Model,
    rec: Model,
    cls: Option<Model>,
    /// Index 0 is CTC's blank; the dictionary follows, then a space.
    characters: Vec<String>,
    config: OcrConfig,
    name: String,
}

impl std::fmt::Debug for OcrModel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OcrModel").field("name", &self.name).field("characters", &self.characters.len()).finish()
    }
}

/// How long reading one model file may take: a real one takes milliseconds, while some damaged
/// files make the ONNX reader loop for ever.
const LOAD_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(60);

fn load_onnx(name: &str, path: &Path) -> Result<Model> {
    load_onnx_within(name, path, LOAD_TIMEOUT)
}

fn load_onnx_within(name: &str, path: &Path, timeout: std::time::Duration) -> Result<Model> {
    // Read on a thread of its own so that a file the reader never finishes is an error, not a
    // hang (the thread is left behind; the process ends or moves on).
    let (sender, receiver) = std::sync::mpsc::channel();
    let file = path.to_path_buf();
    std::thread::Builder::new()
        .name("ocr-model-load".into())
        .spawn(move || {
            let _ = sender.send(Model::load_file(&file));
        })
        .map_err(|e| Error::model(name, format!("cannot start reading {}: {e}", path.display())))?;
    match receiver.recv_timeout(timeout) {
        Ok(loaded) => loaded.map_err(|e| Error::model(name, format!("cannot load {}: {e}", path.display()))),
        Err(_) => Err(Error::model(
            name,
            format!("cannot load {}: not read within {} s (a damaged ONNX file?)", path.display(), timeout.as_secs()),
        )),
    }
}

impl OcrModel {
    /// Loads the models found in `dir` (see [`OcrModelFiles::find`]).
    pub fn open(dir: &Path, config: OcrConfig) -> Result<Self> {
        let files = OcrModelFiles::find(dir)?;
        Self::from_files(&dir.display().to_string(), &files, config)
    }

    /// Loads the given model files; `name` names the set in messages.
    pub fn from_files(name: &str, files: &OcrModelFiles, config: OcrConfig) -> Result<Self> {
        let det = load_onnx(name, &files.det)?;
        let rec = load_onnx(name, &files.rec)?;
        let cls = match &files.cls {
            Some(p) if config.use_cls => Some(load_onnx(name, p)?),
            _ => None,
        };
        let mut dictionary: Vec<String> = match rec.metadata().get("character") {
            Some(text) => text.lines().map(str::to_string).collect(),
            None => {
                let Some(path) = &files.dict else {
                    return Err(Error::model(
                        name,
                        format!(
                            "{} has no dictionary in its metadata and no *dict*.txt or *keys*.txt lies beside it",
                            files.rec.display()
                        ),
                    ));
                };
                let text = std::fs::read_to_string(path)
                    .map_err(|e| Error::model(name, format!("cannot read the dictionary {}: {e}", path.display())))?;
                text.lines().map(|l| l.trim_end_matches('\r').to_string()).collect()
            }
        };
        dictionary.insert(0, String::new()); // CTC blank
        dictionary.push(" ".into());
        if config.rec_batch == 0 || config.cls_batch == 0 || config.rec_height == 0 {
            return Err(Error::Invalid("OCR batch sizes and the recognition height must be positive".into()));
        }
        Ok(OcrModel { det, rec, cls, characters: dictionary, config, name: name.to_string() })
    }

    /// The pipeline's settings.
    pub fn config(&self) -> &OcrConfig {
        &self.config
    }

    /// Reads the text in an upright RGB photo: its lines in reading order.
    pub fn read(&self, image: &RgbImage) -> Result<Vec<OcrLine>> {
        Ok(self.read_page(image)?.lines)
    }

    /// Like [`read`](Self::read), also saying whether the detector's region cap was reached.
    pub fn read_page(&self, image: &RgbImage) -> Result<OcrPage> {
        let c = &self.config;
        let (ori_w, ori_h) = (image.width(), image.height());
        if ori_w == 0 || ori_h == 0 {
            return Ok(OcrPage::default());
        }
        // 1. Within min/max side (RapidOCR's resize_image_within_bounds).
        let (mut img, mut ratio_w, mut ratio_h) = (image.clone(), 1.0f64, 1.0f64);
        if ori_w.max(ori_h) > c.max_side_len {
            let r = c.max_side_len as f64 / ori_w.max(ori_h) as f64;
            let Some((w, h)) = round32(ori_w, ori_h, r) else { return Ok(OcrPage::default()) };
            img = raster::resize_linear(image, w, h);
            (ratio_w, ratio_h) = (ori_w as f64 / w as f64, ori_h as f64 / h as f64);
        }
        if img.width().min(img.height()) < c.min_side_len {
            let (w0, h0) = (img.width(), img.height());
            // Unlike RapidOCR, the enlargement stops where the long side reaches max_side_len: a
            // 2000 x 1 line would otherwise become 60000 x 32 and, padded, a 60000 x 15000
            // detector input (2.7 GB). Photos RapidOCR enlarges within that limit are unchanged.
            let r = (c.min_side_len as f64 / w0.min(h0) as f64).min(c.max_side_len as f64 / w0.max(h0) as f64);
            let Some((w, h)) = round32(w0, h0, r) else { return Ok(OcrPage::default()) };
            img = raster::resize_linear(&img, w, h);
            // As RapidOCR, the ratio of this step replaces the first one's.
            (ratio_w, ratio_h) = (w0 as f64 / w as f64, h0 as f64 / h as f64);
        }
        // 2. Vertical padding of short or wide photos.
        let mut top = 0u32;
        if c.use_vertical_padding {
            let (w, h) = (img.width() as f64, img.height() as f64);
            let wide = c.width_height_ratio != -1.0 && w / h > c.width_height_ratio;
            if h <= c.min_height as f64 || wide {
                let new_h = ((w / c.width_height_ratio) as i64).max(c.min_height as i64) * 2;
                top = ((new_h - h as i64).abs() / 2) as u32;
                img = raster::pad_vertically(&img, top);
            }
        }
        // 3. Detection.
        let (mut boxes, capped) = self.detect(&img)?;
        db::reading_order(&mut boxes);
        // 4. Crops, orientation, recognition.
        let mut crops = Vec::with_capacity(boxes.len());
        let mut kept = Vec::with_capacity(boxes.len());
        for b in boxes {
            if let Some(crop) = crop_box(&img, &b) {
                crops.push(crop);
                kept.push(b);
            }
        }
        if let Some(cls) = &self.cls {
            self.orient(cls, &mut crops)?;
        }
        let read = self.recognise(&crops)?;
        // 5. Back to the photo's pixels; empty and unsure lines dropped.
        let mut lines = Vec::new();
        for (b, (text, score)) in kept.into_iter().zip(read) {
            if text.trim().is_empty() || score < c.text_score {
                continue;
            }
            let quad = b.map(|[x, y]| {
                let x = (x * ratio_w as f32).clamp(0.0, ori_w as f32);
                let y = ((y - top as f32) * ratio_h as f32).clamp(0.0, ori_h as f32);
                [x, y]
            });
            lines.push(OcrLine { text, score, quad });
        }
        Ok(OcrPage { lines, capped })
    }

    fn run(&self, model: &Model, shape: [usize; 4], data: Vec<f32>) -> Result<Value> {
        let input = Value::from_shape(shape, data).map_err(|e| Error::model(&self.name, e.to_string()))?;
        model.run_one(input.into(), None).map_err(|e| Error::model(&self.name, format!("inference failed: {e}")))
    }

    fn detect(&self, img: &RgbImage) -> Result<(Vec<[[f32; 2]; 4]>, bool)> {
        let c = &self.config;
        let (w, h) = (img.width(), img.height());
        let limit = c.limit_side_len as f64;
        let ratio = match c.limit_type {
            LimitType::Max if w.max(h) as f64 > limit => limit / w.max(h) as f64,
            LimitType::Min if (w.min(h) as f64) < limit => limit / w.min(h) as f64,
            _ => 1.0,
        };
        let Some((rw, rh)) = round32(w, h, ratio) else { return Ok((Vec::new(), false)) };
        let resized = raster::resize_linear(img, rw, rh);
        let (rw, rh) = (rw as usize, rh as usize);
        let mut data = vec![0f32; 3 * rw * rh];
        raster::write_bgr_planes(&resized, &mut data, rw);
        let out = self.run(&self.det, [1, 3, rh, rw], data)?;
        let (shape, map) =
            out.into_shape_vec::<f32, 4>().map_err(|e| Error::model(&self.name, format!("detection output: {e}")))?;
        let (mh, mw) = (shape[2], shape[3]);
        if map.len() < mh * mw {
            return Err(Error::model(&self.name, "detection output is smaller than its shape"));
        }
        let settings = DbSettings {
            thresh: c.thresh,
            box_thresh: c.box_thresh,
            max_candidates: c.max_candidates,
            unclip_ratio: c.unclip_ratio,
            use_dilation: c.use_dilation,
        };
        let found = db::boxes_from_map(&map[..mh * mw], mw, mh, w as usize, h as usize, &settings);
        Ok((found.boxes, found.capped))
    }

    /// Turns lines the classifier finds upside down (label "180" above `cls_thresh`).
    fn orient(&self, cls: &Model, crops: &mut [RgbImage]) -> Result<()> {
        let c = &self.config;
        let (ch, cw) = (48u32, 192u32);
        let order = by_aspect(crops);
        for batch in order.chunks(c.cls_batch) {
            let plane = (ch * cw) as usize;
            let mut data = vec![0f32; batch.len() * 3 * plane];
            for (slot, &i) in batch.iter().enumerate() {
                let img = &crops[i];
                let ratio = img.width() as f64 / img.height() as f64;
                let rw = ((ch as f64 * ratio).ceil() as u32).clamp(1, cw);
                let resized = raster::resize_linear(img, rw, ch);
                raster::write_bgr_planes(&resized, &mut data[slot * 3 * plane..(slot + 1) * 3 * plane], cw as usize);
            }
            let out = self.run(cls, [batch.len(), 3, ch as usize, cw as usize], data)?;
            let (shape, probs) = out
                .into_shape_vec::<f32, 2>()
                .map_err(|e| Error::model(&self.name, format!("classifier output: {e}")))?;
            if shape[0] != batch.len() || shape[1] < 2 {
                return Err(Error::model(&self.name, format!("classifier output shape {shape:?}")));
            }
            for (slot, &i) in batch.iter().enumerate() {
                let p = &probs[slot * shape[1]..(slot + 1) * shape[1]];
                let (label, score) = argmax(p);
                if label == 1 && score > c.cls_thresh {
                    crops[i] = raster::rotate_half(&crops[i]);
                }
            }
        }
        Ok(())
    }

    /// CTC greedy decoding of each line: (text, score), in the order of `crops`.
    fn recognise(&self, crops: &[RgbImage]) -> Result<Vec<(String, f32)>> {
        let c = &self.config;
        let mut results = vec![(String::new(), 0.0f32); crops.len()];
        let order = by_aspect(crops);
        for batch in order.chunks(c.rec_batch) {
            let h = c.rec_height;
            let mut max_ratio = c.rec_width as f64 / h as f64;
            for &i in batch {
                max_ratio = max_ratio.max(crops[i].width() as f64 / crops[i].height() as f64);
            }
            let width = (h as f64 * max_ratio) as usize;
            let plane = width * h as usize;
            let mut data = vec![0f32; batch.len() * 3 * plane];
            for (slot, &i) in batch.iter().enumerate() {
                let img = &crops[i];
                let ratio = img.width() as f64 / img.height() as f64;
                let rw = ((h as f64 * ratio).ceil() as usize).clamp(1, width);
                let resized = raster::resize_linear(img, rw as u32, h);
                raster::write_bgr_planes(&resized, &mut data[slot * 3 * plane..(slot + 1) * 3 * plane], width);
            }
            let out = self.run(&self.rec, [batch.len(), 3, h as usize, width], data)?;
            let (shape, probs) = out
                .into_shape_vec::<f32, 3>()
                .map_err(|e| Error::model(&self.name, format!("recognition output: {e}")))?;
            let (steps, classes) = (shape[1], shape[2]);
            if shape[0] != batch.len() || classes != self.characters.len() {
                return Err(Error::model(
                    &self.name,
                    format!(
                        "the recogniser has {classes} classes but its dictionary {} (blank and space included): \
                         the dictionary does not belong to this model",
                        self.characters.len()
                    ),
                ));
            }
            for (slot, &i) in batch.iter().enumerate() {
                let seq = &probs[slot * steps * classes..(slot + 1) * steps * classes];
                results[i] = ctc_decode(seq, classes, &self.characters);
            }
        }
        Ok(results)
    }
}

/// `int(round(int(side * ratio) / 32) * 32)` for both sides (Python's round: half to even);
/// `None` when a side would be 0.
fn round32(w: u32, h: u32, ratio: f64) -> Option<(u32, u32)> {
    let side = |s: u32| (((s as f64 * ratio) as i64) as f64 / 32.0).round_ties_even() as i64 * 32;
    let (rw, rh) = (side(w), side(h));
    (rw > 0 && rh > 0).then_some((rw as u32, rh as u32))
}

/// Indices sorted by width / height (ascending; stable), as RapidOCR batches lines.
fn by_aspect(crops: &[RgbImage]) -> Vec<usize> {
    let mut order: Vec<usize> = (0..crops.len()).collect();
    let ratio = |i: usize| crops[i].width() as f64 / crops[i].height() as f64;
    order.sort_by(|&a, &b| ratio(a).total_cmp(&ratio(b)));
    order
}

fn argmax(p: &[f32]) -> (usize, f32) {
    let mut best = (0, f32::MIN);
    for (i, &v) in p.iter().enumerate() {
        if v > best.1 {
            best = (i, v);
        }
    }
    best
}

/// RapidOCR's `get_rotate_crop_image`: the box straightened to its longer edges' lengths,
/// turned a quarter counter-clockwise when at least 1.5 times taller than wide.
fn crop_box(img: &RgbImage, b: &[[f32; 2]; 4]) -> Option<RgbImage> {
    let dist = |p: [f32; 2], q: [f32; 2]| ((p[0] - q[0]).powi(2) + (p[1] - q[1]).powi(2)).sqrt();
    let w = dist(b[0], b[1]).max(dist(b[2], b[3])) as u32;
    let h = dist(b[0], b[3]).max(dist(b[1], b[2])) as u32;
    let crop = raster::warp_quad(img, b, w, h)?;
    if crop.height() as f64 / crop.width() as f64 >= 1.5 { Some(raster::rotate_quarter_ccw(&crop)) } else { Some(crop) }
}

/// Python's `round(x, 5)` on a probability.
fn round5(x: f64) -> f64 {
    (x * 1e5).round_ties_even() / 1e5
}

/// CTC greedy decoding (RapidOCR's `CTCLabelDecode`): the best class per step, repeats merged,
/// blanks dropped; the score is the mean of the kept steps' probabilities (each rounded to 5
/// decimals, as RapidOCR does), 0 for an empty line.
fn ctc_decode(seq: &[f32], classes: usize, characters: &[String]) -> (String, f32) {
    let mut text = String::new();
    let mut probs = Vec::new();
    let mut previous = usize::MAX;
    for step in seq.chunks_exact(classes) {
        let (index, p) = argmax(step);
        if index != previous && index != 0 {
            if let Some(ch) = characters.get(index) {
                text.push_str(ch);
            }
            probs.push(round5(p as f64));
        }
        previous = index;
    }
    let score = if probs.is_empty() { 0.0 } else { probs.iter().sum::<f64>() / probs.len() as f64 };
    (text, round5(score) as f32)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_model_file_the_reader_never_finishes_is_an_error() {
        // Random bytes on which rten 0.27's ONNX reader loops for ever.
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/hostile/ocr-endless.onnx");
        let err = load_onnx_within("test", &path, std::time::Duration::from_secs(3)).unwrap_err();
        assert!(err.to_string().contains("not read within 3 s"), "{err}");
    }

    #[test]
    fn ctc_merges_repeats_and_drops_blanks() {
        let chars: Vec<String> = ["", "a", "b", " "].iter().map(|s| s.to_string()).collect();
        // Steps: a a blank a b b -> "aab".
        let mut seq = Vec::new();
        for best in [1, 1, 0, 1, 2, 2] {
            let mut step = vec![0.1f32; 4];
            step[best] = 0.7;
            seq.extend(step);
        }
        let (text, score) = ctc_decode(&seq, 4, &chars);
        assert_eq!(text, "aab");
        assert!((score - 0.7).abs() < 1e-6);
        assert_eq!(ctc_decode(&[0.9, 0.1, 0.0, 0.0], 4, &chars), (String::new(), 0.0));
    }

    #[test]
    fn sizes_round_to_multiples_of_32_or_refuse_zero() {
        // 2000 / 32 = 62.5 rounds to 62 (half to even).
        assert_eq!(round32(2000, 1500, 1.0), Some((1984, 1504)));
        assert_eq!(round32(1, 20000, 0.1), None);
    }
}
