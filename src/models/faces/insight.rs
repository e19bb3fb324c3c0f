//! InsightFace's ONNX pair in the `buffalo_l` layout (Immich's face models): the SCRFD detector
//! `det_10g.onnx` (boxes and 5 keypoints) and the ArcFace embedding `w600k_r50.onnx` (512-d),
//! run with [`rten`] and computed as insightface 0.7.3 computes them (`model_zoo.scrfd.SCRFD`,
//! `arcface_onnx.ArcFaceONNX`, `utils.face_align.norm_crop`; FaceAnalysis's `det_size` 640):
//!
//! - detection: the photo is resized keeping its aspect (OpenCV's bilinear resize, bit-exact)
//!   into the top-left corner of a black 640x640 square, normalised as (x - 127.5) / 128 in RGB
//!   order; the nine outputs are scores, box distances and keypoint offsets for strides 8, 16
//!   and 32 with two anchors per cell; anchors scoring at least 0.5 are decoded
//!   (`distance2bbox`, `distance2kps`), scaled back and suppressed at IoU 0.4 (insightface's
//!   `nms`, with its +1 areas);
//! - embedding: the 5 keypoints are mapped onto ArcFace's 112x112 template by the least-squares
//!   similarity (Umeyama, as scikit-image's `SimilarityTransform.estimate`), the photo is warped
//!   with OpenCV's fixed-point bilinear `warpAffine` (black border), normalised as
//!   (x - 127.5) / 127.5 in RGB order, and the network's 512 values are returned as they are.
//!
//! Other files of the buffalo_l folder (`1k3d68.onnx`, `2d106det.onnx`, `genderage.onnx`) are
//! ignored. The work per photo is bounded by the fixed 640x640 input.

use std::path::Path;

use image::RgbImage;
use rten::{Model, Value};

use crate::error::{Error, Result};
use crate::models::ocr::raster::resize_linear;

/// The detector file of the buffalo_l layout (SCRFD-10GF with keypoints).
pub const DETECTOR_FILE: &str = "det_10g.onnx";
/// The embedding file of the buffalo_l layout (ArcFace, ResNet-50, WebFace600K).
pub const EMBEDDING_FILE: &str = "w600k_r50.onnx";

/// The detector's input side (FaceAnalysis's `det_size`).
const DET_SIZE: usize = 640;
/// SCRFD's strides, each with two anchors per cell.
const STRIDES: [usize; 3] = [8, 16, 32];
const ANCHORS: usize = 2;
/// insightface's `det_thresh` and `nms_thresh`.
const SCORE_THRESHOLD: f32 = 0.5;
const NMS_THRESHOLD: f32 = 0.4;
/// ArcFace's five points in a 112x112 crop (`face_align.arcface_dst`).
const ARCFACE_TEMPLATE: [[f32; 2]; 5] =
    [[38.2946, 51.6963], [73.5318, 51.5014], [56.0252, 71.7366], [41.5493, 92.3655], [70.7299, 92.2041]];

/// Whether `dir` holds the InsightFace layout (either of its two files).
pub fn is_insight_dir(dir: &Path) -> bool {
    dir.join(DETECTOR_FILE).is_file() || dir.join(EMBEDDING_FILE).is_file()
}

/// One SCRFD detection in the photo's pixels, as insightface returns it (not clipped).
#[derive(Debug, Clone, Copy, PartialEq)]
pub(super) struct Detection {
    /// x1, y1, x2, y2.
    pub corners: [f32; 4],
    pub score: f32,
    /// Left eye, right eye, nose, left and right mouth corners (as seen in the photo).
    pub keypoints: [[f32; 2]; 5],
}

/// The two networks, loaded.
pub(super) struct InsightFaces {
    name: String,
    detector: Model,
    embedder: Model,
    /// The embedding network's input side (112 for ArcFace).
    crop: usize,
}

impl InsightFaces {
    /// Loads both files from `dir`; returns them with an id that changes with either file.
    pub(super) fn load(dir: &Path) -> Result<(Self, String)> {
        let name = dir.display().to_string();
        let mut hasher = blake3::Hasher::new();
        let mut models = Vec::new();
        for file in [DETECTOR_FILE, EMBEDDING_FILE] {
            let path = dir.join(file);
            let bytes = std::fs::read(&path).map_err(|e| {
                Error::model(
                    &name,
                    format!(
                        "cannot read {} ({e}); an InsightFace folder needs {DETECTOR_FILE} and {EMBEDDING_FILE} \
                         (buffalo_l's files)",
                        path.display()
                    ),
                )
            })?;
            hasher.update(&(bytes.len() as u64).to_le_bytes());
            hasher.update(&bytes);
            models.push(load_onnx(&path, bytes)?);
        }
        let id = format!("insightface:{}", &hasher.finalize().to_hex()[..16]);
        let embedder = models.pop().ok_or_else(|| Error::model(&name, "no embedding model"))?;
        let detector = models.pop().ok_or_else(|| Error::model(&name, "no detector"))?;
        let path = |file: &str| dir.join(file).display().to_string();
        if detector.input_ids().len() != 1 || detector.output_ids().len() != 9 {
            return Err(Error::model(
                path(DETECTOR_FILE),
                format!(
                    "{} inputs and {} outputs; an SCRFD detector with keypoints has 1 and 9 (scores, boxes and \
                     keypoints for strides 8, 16 and 32)",
                    detector.input_ids().len(),
                    detector.output_ids().len()
                ),
            ));
        }
        if embedder.input_ids().len() != 1 || embedder.output_ids().len() != 1 {
            return Err(Error::model(path(EMBEDDING_FILE), "an ArcFace model has one input and one output"));
        }
        let crop = match embedder.input_shape(0).as_deref() {
            Some([_, _, rten::Dimension::Fixed(h), rten::Dimension::Fixed(w)]) if h == w && *h % 112 == 0 => *h,
            Some([_, _, rten::Dimension::Fixed(h), rten::Dimension::Fixed(w)]) => {
                return Err(Error::model(
                    path(EMBEDDING_FILE),
                    format!("input {w}x{h}; ArcFace models take a square multiple of 112"),
                ));
            }
            _ => 112,
        };
        Ok((Self { name, detector, embedder, crop }, id))
    }

    /// The faces SCRFD finds in `photo`, best first, at most `max_candidates` of them going
    /// into suppression.
    pub(super) fn detect(&self, photo: &RgbImage, max_candidates: usize) -> Result<Vec<Detection>> {
        let (w, h) = (photo.width() as usize, photo.height() as usize);
        if w == 0 || h == 0 {
            return Ok(Vec::new());
        }
        // SCRFD.detect's letterbox, in its float64 arithmetic.
        let im_ratio = h as f64 / w as f64;
        let (new_w, new_h) = if im_ratio > 1.0 {
            (((DET_SIZE as f64 / im_ratio) as usize).max(1), DET_SIZE)
        } else {
            (DET_SIZE, ((DET_SIZE as f64 * im_ratio) as usize).max(1))
        };
        let det_scale = (new_h as f64 / h as f64) as f32;
        let resized = resize_linear(photo, new_w as u32, new_h as u32);
        let plane = DET_SIZE * DET_SIZE;
        let mut data = vec![(0.0 - 127.5) / 128.0; 3 * plane];
        for (i, px) in resized.pixels().enumerate() {
            let (y, x) = (i / new_w, i % new_w);
            for c in 0..3 {
                data[c * plane + y * DET_SIZE + x] = (px.0[c] as f32 - 127.5) * (1.0 / 128.0);
            }
        }
        let outputs = self.run(&self.detector, [1, 3, DET_SIZE, DET_SIZE], data, DETECTOR_FILE)?;
        let mut outputs: Vec<Vec<f32>> =
            outputs.into_iter().map(|v| self.floats(v, DETECTOR_FILE)).collect::<Result<_>>()?;
        let mut found = Vec::new();
        for (level, stride) in STRIDES.iter().enumerate() {
            let side = DET_SIZE / stride;
            let anchors = side * side * ANCHORS;
            let kps = std::mem::take(&mut outputs[level + 6]);
            let boxes = std::mem::take(&mut outputs[level + 3]);
            let scores = std::mem::take(&mut outputs[level]);
            if scores.len() != anchors || boxes.len() != anchors * 4 || kps.len() != anchors * 10 {
                return Err(Error::model(
                    format!("{}/{DETECTOR_FILE}", self.name),
                    format!(
                        "stride {stride}: {} scores, {} box values and {} keypoint values for {anchors} anchors; \
                         expected SCRFD's outputs at 640x640 (scores, boxes, keypoints per stride 8, 16, 32)",
                        scores.len(),
                        boxes.len(),
                        kps.len()
                    ),
                ));
            }
            let s = *stride as f32;
            for (i, &score) in scores.iter().enumerate() {
                if score.is_nan() || score < SCORE_THRESHOLD {
                    continue;
                }
                let cell = i / ANCHORS;
                let (cx, cy) = (((cell % side) * stride) as f32, ((cell / side) * stride) as f32);
                let d = &boxes[i * 4..i * 4 + 4];
                let corners = [cx - d[0] * s, cy - d[1] * s, cx + d[2] * s, cy + d[3] * s].map(|v| v / det_scale);
                let k = &kps[i * 10..i * 10 + 10];
                let mut keypoints = [[0f32; 2]; 5];
                for (j, p) in keypoints.iter_mut().enumerate() {
                    *p = [(cx + k[2 * j] * s) / det_scale, (cy + k[2 * j + 1] * s) / det_scale];
                }
                found.push(Detection { corners, score, keypoints });
            }
        }
        found.sort_by(|a, b| b.score.total_cmp(&a.score));
        found.truncate(max_candidates.max(1));
        Ok(suppress(found))
    }

    /// The ArcFace embeddings of the faces at `keypoints` in `photo` (512 values each, not
    /// normalised, as the network returns them).
    pub(super) fn embed(&self, photo: &RgbImage, keypoints: &[[[f32; 2]; 5]]) -> Result<Vec<Vec<f32>>> {
        let side = self.crop;
        let plane = side * side;
        let mut embeddings = Vec::with_capacity(keypoints.len());
        for batch in keypoints.chunks(16) {
            let mut data = Vec::with_capacity(batch.len() * 3 * plane);
            for points in batch {
                let crop = norm_crop(photo, points, side);
                let raw = crop.as_raw();
                for c in 0..3 {
                    data.extend((0..plane).map(|i| (raw[i * 3 + c] as f32 - 127.5) * (1.0 / 127.5)));
                }
            }
            let n = batch.len();
            let out = self.run(&self.embedder, [n, 3, side, side], data, EMBEDDING_FILE)?;
            let values = match out.into_iter().next() {
                Some(v) => self.floats(v, EMBEDDING_FILE)?,
                None => Vec::new(),
            };
            if values.is_empty() || values.len() % n != 0 {
                return Err(Error::model(
                    format!("{}/{EMBEDDING_FILE}", self.name),
                    format!("{} output values for {n} faces", values.len()),
                ));
            }
            embeddings.extend(values.chunks(values.len() / n).map(<[f32]>::to_vec));
        }
        Ok(embeddings)
    }

    fn run(&self, model: &Model, shape: [usize; 4], data: Vec<f32>, file: &str) -> Result<Vec<Value>> {
        let named = || format!("{}/{file}", self.name);
        let input = Value::from_shape(shape, data).map_err(|e| Error::model(named(), e.to_string()))?;
        let id = model.input_ids()[0];
        model
            .run(vec![(id, input.into())], model.output_ids(), None)
            .map_err(|e| Error::model(named(), format!("inference failed: {e}")))
    }

    fn floats(&self, value: Value, file: &str) -> Result<Vec<f32>> {
        value
            .into_tensor::<f32>()
            .map(|t| t.into_data())
            .ok_or_else(|| Error::model(format!("{}/{file}", self.name), "an output is not a float tensor".to_string()))
    }
}

/// Reads an ONNX file on a thread of its own, so that a damaged file the reader never finishes
/// (rten 0.27 loops on some) is an error after a minute, not a hang.
fn load_onnx(path: &Path, bytes: Vec<u8>) -> Result<Model> {
    const TIMEOUT: std::time::Duration = std::time::Duration::from_secs(60);
    let (sender, receiver) = std::sync::mpsc::channel();
    std::thread::Builder::new()
        .name("face-model-load".into())
        .spawn(move || {
            let _ = sender.send(Model::load(bytes));
        })
        .map_err(|e| Error::model(path.display().to_string(), format!("cannot start reading: {e}")))?;
    let named = path.display().to_string();
    match receiver.recv_timeout(TIMEOUT) {
        Ok(loaded) => loaded.map_err(|e| {
            Error::model(named, format!("not a usable ONNX model ({e}); download buffalo_l's file again"))
        }),
        Err(_) => Err(Error::model(named, "not read within 60 s (a damaged ONNX file?)")),
    }
}

/// insightface's `SCRFD.nms` over detections sorted best first: areas and overlaps with +1.
fn suppress(sorted: Vec<Detection>) -> Vec<Detection> {
    let area = |c: &[f32; 4]| (c[2] - c[0] + 1.0) * (c[3] - c[1] + 1.0);
    let mut keep: Vec<Detection> = Vec::new();
    let mut removed = vec![false; sorted.len()];
    for i in 0..sorted.len() {
        if removed[i] {
            continue;
        }
        let a = sorted[i].corners;
        for j in i + 1..sorted.len() {
            if removed[j] {
                continue;
            }
            let b = sorted[j].corners;
            let w = (a[2].min(b[2]) - a[0].max(b[0]) + 1.0).max(0.0);
            let h = (a[3].min(b[3]) - a[1].max(b[1]) + 1.0).max(0.0);
            let inter = w * h;
            let overlap = inter / (area(&a) + area(&b) - inter);
            if overlap.is_nan() || overlap > NMS_THRESHOLD {
                removed[j] = true;
            }
        }
        keep.push(sorted[i]);
    }
    keep
}

/// `face_align.estimate_norm`: the similarity (2x3, float64) that maps `points` onto ArcFace's
/// template at `side` pixels, by Umeyama's least squares as scikit-image estimates it.
pub(super) fn estimate_norm(points: &[[f32; 2]; 5], side: usize) -> [f64; 6] {
    let ratio = side as f32 / 112.0;
    let dst = ARCFACE_TEMPLATE.map(|[x, y]| [(x * ratio) as f64, (y * ratio) as f64]);
    let src = points.map(|[x, y]| [x as f64, y as f64]);
    let mean = |p: &[[f64; 2]; 5]| {
        let (sx, sy) = p.iter().fold((0.0, 0.0), |(a, b), q| (a + q[0], b + q[1]));
        [sx / 5.0, sy / 5.0]
    };
    let (ms, md) = (mean(&src), mean(&dst));
    // A = dst_demeanᵀ · src_demean / n, and the variance of the source.
    let mut a = [[0f64; 2]; 2];
    let mut var = 0.0;
    for (s, d) in src.iter().zip(&dst) {
        let (s0, s1) = (s[0] - ms[0], s[1] - ms[1]);
        let (d0, d1) = (d[0] - md[0], d[1] - md[1]);
        a[0][0] += d0 * s0 / 5.0;
        a[0][1] += d0 * s1 / 5.0;
        a[1][0] += d1 * s0 / 5.0;
        a[1][1] += d1 * s1 / 5.0;
        var += (s0 * s0 + s1 * s1) / 5.0;
    }
    // For 2x2, the rotation maximising trace(Rᵀ A) and the sum of singular values with the
    // reflection sign (S · d) have a closed form.
    let (p, q) = (a[0][0] + a[1][1], a[1][0] - a[0][1]);
    let norm = (p * p + q * q).sqrt();
    if norm == 0.0 || var == 0.0 {
        return [1.0, 0.0, 0.0, 0.0, 1.0, 0.0];
    }
    let (cos, sin) = (p / norm, q / norm);
    let scale = norm / var;
    let (r00, r01, r10, r11) = (scale * cos, -scale * sin, scale * sin, scale * cos);
    [r00, r01, md[0] - (r00 * ms[0] + r01 * ms[1]), r10, r11, md[1] - (r10 * ms[0] + r11 * ms[1])]
}

/// `face_align.norm_crop`: `cv2.warpAffine(img, M, (side, side), borderValue=0)` with OpenCV's
/// fixed-point bilinear interpolation (1/32-pixel grid, 15-bit weights).
pub(super) fn norm_crop(photo: &RgbImage, points: &[[f32; 2]; 5], side: usize) -> RgbImage {
    let m = estimate_norm(points, side);
    // warpAffine inverts the matrix (dst → src) as OpenCV does.
    let det = m[0] * m[4] - m[1] * m[3];
    let d = if det != 0.0 { 1.0 / det } else { 0.0 };
    let (a11, a22) = (m[4] * d, m[0] * d);
    let (a12, a21) = (-m[1] * d, -m[3] * d);
    let b1 = -a11 * m[2] - a12 * m[5];
    let b2 = -a21 * m[2] - a22 * m[5];
    const AB_SCALE: f64 = 1024.0;
    const ROUND_DELTA: i64 = 16;
    let sat = |v: f64| v.round_ties_even().clamp(i32::MIN as f64, i32::MAX as f64) as i64;
    let (sw, sh) = (photo.width() as i64, photo.height() as i64);
    let raw = photo.as_raw();
    let mut out = Vec::with_capacity(side * side * 3);
    for y in 0..side {
        let x0 = sat((a12 * y as f64 + b1) * AB_SCALE) + ROUND_DELTA;
        let y0 = sat((a22 * y as f64 + b2) * AB_SCALE) + ROUND_DELTA;
        for x in 0..side {
            let gx = (x0 + sat(a11 * x as f64 * AB_SCALE)) >> 5;
            let gy = (y0 + sat(a21 * x as f64 * AB_SCALE)) >> 5;
            let (ix, iy, fx, fy) = (gx >> 5, gy >> 5, gx & 31, gy & 31);
            let weights = [(32 - fx) * (32 - fy) * 32, fx * (32 - fy) * 32, (32 - fx) * fy * 32, fx * fy * 32];
            let mut acc = [0i64; 3];
            for (k, (dx, dy)) in [(0, 0), (1, 0), (0, 1), (1, 1)].into_iter().enumerate() {
                let (px, py) = (ix + dx, iy + dy);
                if px < 0 || py < 0 || px >= sw || py >= sh {
                    continue;
                }
                let at = ((py * sw + px) * 3) as usize;
                for c in 0..3 {
                    acc[c] += raw[at + c] as i64 * weights[k];
                }
            }
            out.extend(acc.map(|a| ((a + (1 << 14)) >> 15).clamp(0, 255) as u8));
        }
    }
    RgbImage::from_raw(side as u32, side as u32, out).unwrap_or_else(|| RgbImage::new(side as u32, side as u32))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_template_maps_onto_itself_and_a_scaled_shift_is_undone() {
        let m = estimate_norm(&ARCFACE_TEMPLATE, 112);
        for (got, want) in m.iter().zip([1.0, 0.0, 0.0, 0.0, 1.0, 0.0]) {
            assert!((got - want).abs() < 1e-9, "{m:?}");
        }
        let moved = ARCFACE_TEMPLATE.map(|[x, y]| [2.0 * x + 10.0, 2.0 * y - 4.0]);
        let m = estimate_norm(&moved, 112);
        let [x, y] = [2.0 * 38.2946f64 + 10.0, 2.0 * 51.6963 - 4.0];
        assert!((m[0] * x + m[1] * y + m[2] - 38.2946).abs() < 1e-3, "{m:?}");
        assert!((m[0] - 0.5).abs() < 1e-9 && m[1].abs() < 1e-9, "{m:?}");
    }

    #[test]
    fn suppression_keeps_the_best_of_overlapping_boxes() {
        let d = |x: f32, score| Detection { corners: [x, 0.0, x + 10.0, 10.0], score, keypoints: [[0.0; 2]; 5] };
        let kept = suppress(vec![d(0.0, 0.9), d(1.0, 0.8), d(50.0, 0.7)]);
        assert_eq!(kept.iter().map(|k| k.score).collect::<Vec<_>>(), vec![0.9, 0.7]);
    }
}
