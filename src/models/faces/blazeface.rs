//! MediaPipe's BlazeFace face detectors (Apache-2.0; the `.tflite` files of the npm package
//! `@mediapipe/face_detection`, which tools/fetch_blazeface_models.sh and `clipdex models
//! download faces` fetch), run by [`tflite`](super::tflite) with MediaPipe's own pre- and
//! post-processing, from the options its face detection graphs give its calculators:
//!
//! - **ImageToTensorCalculator**: the photo is letterboxed into the square input (128 px short
//!   range, 192 px full range) by OpenCV's bilinear `warpPerspective` with its 1/32-pixel
//!   fixed-point arithmetic and black borders, then scaled to [-1, 1].
//! - **SsdAnchorsCalculator**: short range has 896 anchors (16x16 cells with 2 anchors, 8x8
//!   with 6), full range 2,304 (48x48 with 1); all of fixed size, centred in their cell.
//! - **TensorsToDetectionsCalculator**: per anchor 16 values, x/y/w/h of the box then six
//!   keypoints, in input pixels relative to the anchor; the score is the sigmoid of the logit
//!   clipped to ±100; min score 0.5 (short) or 0.6 (full); boxes of negative size dropped.
//! - **NonMaxSuppressionCalculator**, WEIGHTED: the best box takes every box overlapping it by
//!   IoU > 0.3 and becomes their score-weighted mean (keeping its own score).
//! - **DetectionLetterboxRemovalCalculator**: coordinates back into the photo's pixels.
//!
//! tools/make_blazeface_goldens.py computes the same with TensorFlow Lite and OpenCV; the
//! tests compare both.

use std::path::Path;

use image::RgbImage;

use super::tflite::{TfliteModel, Value};
use crate::error::{Error, Result};

/// The short-range model's file name in the package.
pub const SHORT_RANGE_FILE: &str = "face_detection_short_range.tflite";
/// The full-range model's file name in the package.
pub const FULL_RANGE_FILE: &str = "face_detection_full_range.tflite";

/// Which BlazeFace: faces close to the camera (selfies, portraits) or further away.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BlazeFaceRange {
    /// 128x128 input; faces within about 2 m.
    Short,
    /// 192x192 input; faces within about 5 m.
    Full,
}

impl BlazeFaceRange {
    /// The input's side in pixels.
    pub fn input_size(self) -> usize {
        match self {
            BlazeFaceRange::Short => 128,
            BlazeFaceRange::Full => 192,
        }
    }

    fn min_score(self) -> f32 {
        match self {
            BlazeFaceRange::Short => 0.5,
            BlazeFaceRange::Full => 0.6,
        }
    }

    /// The SSD anchors' strides and whether each cell has the interpolated second anchor.
    fn strides(self) -> (&'static [usize], bool) {
        match self {
            BlazeFaceRange::Short => (&[8, 16, 16, 16], true),
            BlazeFaceRange::Full => (&[4], false),
        }
    }
}

/// One face BlazeFace found.
#[derive(Debug, Clone, PartialEq)]
pub struct BlazeFaceDetection {
    /// x, y, w, h in the photo's pixels (MediaPipe's relative box times the photo's size).
    pub bbox: [f32; 4],
    /// The sigmoid score, 0..1.
    pub score: f32,
    /// The person's right eye, left eye, nose tip, mouth centre, right ear tragion, left ear
    /// tragion, in pixels.
    pub keypoints: [[f32; 2]; 6],
}

/// A BlazeFace detector, loaded.
pub struct BlazeFace {
    model: TfliteModel,
    range: BlazeFaceRange,
    anchors: Vec<[f32; 2]>,
    id: String,
    /// Detections scoring below this are dropped (MediaPipe's default for the model).
    pub min_score: f32,
}

impl BlazeFace {
    /// Reads a BlazeFace `.tflite` file; which range it is comes from its input size.
    pub fn load(path: &Path) -> Result<Self> {
        let bytes = std::fs::read(path).map_err(|e| {
            Error::model(
                path.display().to_string(),
                format!("cannot read it ({e}); `clipdex models download faces` fetches the BlazeFace models"),
            )
        })?;
        Self::from_bytes(&bytes, &path.display().to_string())
    }

    /// As [`load`](Self::load), from the file's bytes; `name` names it in errors.
    pub fn from_bytes(bytes: &[u8], name: &str) -> Result<Self> {
        let model = TfliteModel::read(bytes, name)?;
        let range = match model.input_shape(0) {
            Some([1, 128, 128, 3]) => BlazeFaceRange::Short,
            Some([1, 192, 192, 3]) => BlazeFaceRange::Full,
            other => {
                return Err(Error::model(
                    name,
                    format!(
                        "an input of shape {other:?}; BlazeFace takes 1x128x128x3 (short range) or 1x192x192x3 (full range)"
                    ),
                ));
            }
        };
        let anchors = anchors(range);
        if model.output_names().len() != 2 {
            return Err(Error::model(name, "BlazeFace has two outputs (boxes and scores); this model has not"));
        }
        let id = blake3::hash(bytes).to_hex()[..16].to_string();
        Ok(Self { model, range, anchors, id, min_score: range.min_score() })
    }

    /// A hash of the model file.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// Short or full range.
    pub fn range(&self) -> BlazeFaceRange {
        self.range
    }

    /// The network's raw outputs for an input tensor (NHWC, values in [-1, 1]): per anchor the
    /// 16 regressor values, and the score logits.
    pub fn raw(&self, tensor: Vec<f32>) -> Result<(Vec<f32>, Vec<f32>)> {
        let s = self.range.input_size();
        let outputs = self.model.run(Value::f32(vec![1, s, s, 3], tensor))?;
        let n = self.anchors.len();
        let mut regressors = None;
        let mut scores = None;
        for o in &outputs {
            match (o.shape.as_slice(), o.as_f32()) {
                ([1, a, 16], Some(v)) if *a == n => regressors = Some(v.to_vec()),
                ([1, a, 1], Some(v)) if *a == n => scores = Some(v.to_vec()),
                _ => {}
            }
        }
        match (regressors, scores) {
            (Some(r), Some(c)) => Ok((r, c)),
            _ => Err(Error::model(
                "BlazeFace",
                format!(
                    "outputs of shapes {:?}; 1x{n}x16 and 1x{n}x1 expected",
                    outputs.iter().map(|o| &o.shape).collect::<Vec<_>>()
                ),
            )),
        }
    }

    /// The faces in `photo` (already oriented), best first.
    pub fn detect(&self, photo: &RgbImage) -> Result<Vec<BlazeFaceDetection>> {
        let (w, h) = (photo.width() as f32, photo.height() as f32);
        if photo.width() == 0 || photo.height() == 0 {
            return Ok(Vec::new());
        }
        let (tensor, [left, top, right, bottom]) = letterbox(photo, self.range.input_size());
        let (regressors, logits) = self.raw(tensor)?;
        let candidates = decode(&regressors, &logits, &self.anchors, self.range.input_size() as f32, self.min_score);
        let (sx, sy) = (1.0 - left - right, 1.0 - top - bottom);
        Ok(weighted_nms(candidates, 0.3)
            .into_iter()
            .map(|d| {
                let mut keypoints = [[0f32; 2]; 6];
                for (k, p) in keypoints.iter_mut().zip(&d.keypoints) {
                    *k = [(p[0] - left) / sx * w, (p[1] - top) / sy * h];
                }
                BlazeFaceDetection {
                    bbox: [
                        (d.bbox[0] - left) / sx * w,
                        (d.bbox[1] - top) / sy * h,
                        d.bbox[2] / sx * w,
                        d.bbox[3] / sy * h,
                    ],
                    score: d.score,
                    keypoints,
                }
            })
            .collect())
    }
}

/// The anchors' centres (relative), as SsdAnchorsCalculator lays them out.
fn anchors(range: BlazeFaceRange) -> Vec<[f32; 2]> {
    let (strides, interpolated) = range.strides();
    let size = range.input_size();
    let mut out = Vec::new();
    let mut layer = 0;
    while layer < strides.len() {
        let mut per_cell = 0;
        let mut last = layer;
        while last < strides.len() && strides[last] == strides[layer] {
            per_cell += if interpolated { 2 } else { 1 };
            last += 1;
        }
        let cells = size.div_ceil(strides[layer]);
        for y in 0..cells {
            for x in 0..cells {
                for _ in 0..per_cell {
                    out.push([(x as f32 + 0.5) / cells as f32, (y as f32 + 0.5) / cells as f32]);
                }
            }
        }
        layer = last;
    }
    out
}

/// ImageToTensorCalculator's CPU path: OpenCV's `warpPerspective` (INTER_LINEAR,
/// BORDER_CONSTANT 0) of the square around the photo onto `size`x`size`, rounded to 8 bits as
/// OpenCV does, then scaled to [-1, 1]. Returns the tensor and the padding (left, top, right,
/// bottom) as fractions of the square.
fn letterbox(photo: &RgbImage, size: usize) -> (Vec<f32>, [f32; 4]) {
    let (w, h) = (photo.width() as f64, photo.height() as f64);
    let side = w.max(h);
    let scale = side / size as f64;
    let (x0, y0) = (w / 2.0 - side / 2.0, h / 2.0 - side / 2.0);
    let (pw, ph) = (photo.width() as i64, photo.height() as i64);
    let raw = photo.as_raw();
    let mut tensor = Vec::with_capacity(size * size * 3);
    // OpenCV: source coordinates in 1/32 pixel (cvRound), fixed-point weights summing to 2^15.
    let fixed = |v: f64| -> (i64, i64) {
        let q = (v * 32.0).round_ties_even() as i64;
        (q >> 5, q & 31)
    };
    for y in 0..size {
        let (iy, fy) = fixed(y0 + y as f64 * scale);
        for x in 0..size {
            let (ix, fx) = fixed(x0 + x as f64 * scale);
            let weights = [(32 - fy) * (32 - fx), (32 - fy) * fx, fy * (32 - fx), fy * fx];
            let taps = [(iy, ix), (iy, ix + 1), (iy + 1, ix), (iy + 1, ix + 1)];
            for c in 0..3 {
                let mut acc = 0i64;
                for (&(ty, tx), &wt) in taps.iter().zip(&weights) {
                    if wt != 0 && (0..ph).contains(&ty) && (0..pw).contains(&tx) {
                        acc += wt * 32 * raw[((ty * pw + tx) * 3 + c) as usize] as i64;
                    }
                }
                let v = ((acc + (1 << 14)) >> 15).clamp(0, 255) as f32;
                tensor.push(v * (2.0 / 255.0) - 1.0);
            }
        }
    }
    let (hp, vp) = (((side - w) / side / 2.0) as f32, ((side - h) / side / 2.0) as f32);
    (tensor, [hp, vp, hp, vp])
}

/// A detection in relative coordinates of the input square.
#[derive(Debug, Clone)]
struct Candidate {
    bbox: [f32; 4],
    score: f32,
    keypoints: [[f32; 2]; 6],
}

/// TensorsToDetectionsCalculator with BlazeFace's options.
fn decode(regressors: &[f32], logits: &[f32], anchors: &[[f32; 2]], size: f32, min_score: f32) -> Vec<Candidate> {
    let mut out = Vec::new();
    for (i, (a, logit)) in anchors.iter().zip(logits).enumerate() {
        let score = 1.0 / (1.0 + (-logit.clamp(-100.0, 100.0)).exp());
        if score < min_score || !score.is_finite() {
            continue;
        }
        let Some(r) = regressors.get(i * 16..i * 16 + 16) else { break };
        let (xc, yc) = (r[0] / size + a[0], r[1] / size + a[1]);
        let (w, h) = (r[2] / size, r[3] / size);
        if w.is_nan() || h.is_nan() || w < 0.0 || h < 0.0 {
            continue;
        }
        let mut keypoints = [[0f32; 2]; 6];
        for (k, p) in keypoints.iter_mut().enumerate() {
            *p = [r[4 + 2 * k] / size + a[0], r[5 + 2 * k] / size + a[1]];
        }
        out.push(Candidate { bbox: [xc - w / 2.0, yc - h / 2.0, w, h], score, keypoints });
    }
    out
}

/// MediaPipe's rectangle IoU (`OverlapSimilarity`, INTERSECTION_OVER_UNION).
fn iou(a: &[f32; 4], b: &[f32; 4]) -> f32 {
    let (x0, y0) = (a[0].max(b[0]), a[1].max(b[1]));
    let (x1, y1) = ((a[0] + a[2]).min(b[0] + b[2]), (a[1] + a[3]).min(b[1] + b[3]));
    if x0 > x1 || y0 > y1 {
        return 0.0;
    }
    let inter = (x1 - x0) * (y1 - y0);
    let union = a[2] * a[3] + b[2] * b[3] - inter;
    if union > 0.0 { inter / union } else { 0.0 }
}

/// NonMaxSuppressionCalculator's WeightedNonMaxSuppression.
fn weighted_nms(candidates: Vec<Candidate>, threshold: f32) -> Vec<Candidate> {
    let mut order: Vec<usize> = (0..candidates.len()).collect();
    order.sort_by(|&a, &b| candidates[b].score.total_cmp(&candidates[a].score));
    let mut out = Vec::new();
    while let Some(&first) = order.first() {
        let top = &candidates[first];
        let (overlapping, rest): (Vec<usize>, Vec<usize>) =
            order.iter().partition(|&&i| iou(&candidates[i].bbox, &top.bbox) > threshold);
        let mut merged = top.clone();
        if !overlapping.is_empty() {
            let total: f32 = overlapping.iter().map(|&i| candidates[i].score).sum();
            let mut corners = [0f32; 4];
            let mut keypoints = [[0f32; 2]; 6];
            for &i in &overlapping {
                let c = &candidates[i];
                let s = c.score;
                corners[0] += c.bbox[0] * s;
                corners[1] += c.bbox[1] * s;
                corners[2] += (c.bbox[0] + c.bbox[2]) * s;
                corners[3] += (c.bbox[1] + c.bbox[3]) * s;
                for (k, p) in keypoints.iter_mut().zip(&c.keypoints) {
                    k[0] += p[0] * s;
                    k[1] += p[1] * s;
                }
            }
            let [x0, y0, x1, y1] = corners.map(|v| v / total);
            merged.bbox = [x0, y0, x1 - x0, y1 - y0];
            merged.keypoints = keypoints.map(|[x, y]| [x / total, y / total]);
        }
        out.push(merged);
        if rest.len() == order.len() {
            break;
        }
        order = rest;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn anchors_are_laid_out_as_mediapipe_counts_them() {
        let short = anchors(BlazeFaceRange::Short);
        assert_eq!(short.len(), 896);
        assert_eq!(short[0], [0.5 / 16.0, 0.5 / 16.0]);
        assert_eq!(short[1], short[0]);
        assert_eq!(short[512], [0.5 / 8.0, 0.5 / 8.0]);
        assert_eq!(short[517], short[512]);
        assert_eq!(short[518], [1.5 / 8.0, 0.5 / 8.0]);
        let full = anchors(BlazeFaceRange::Full);
        assert_eq!(full.len(), 2304);
        assert_eq!(full[49], [1.5 / 48.0, 1.5 / 48.0]);
    }

    fn candidate(x: f32, score: f32) -> Candidate {
        Candidate { bbox: [x, 0.0, 1.0, 1.0], score, keypoints: [[x, 0.5]; 6] }
    }

    #[test]
    fn weighted_suppression_averages_overlapping_boxes_by_score_and_keeps_the_best_score() {
        let out = weighted_nms(vec![candidate(0.1, 0.6), candidate(0.0, 0.9), candidate(5.0, 0.7)], 0.3);
        assert_eq!(out.len(), 2);
        assert_eq!(out[0].score, 0.9);
        let x = (0.1 * 0.6 + 0.0 * 0.9) / 1.5;
        assert!((out[0].bbox[0] - x).abs() < 1e-6 && (out[0].bbox[2] - 1.0).abs() < 1e-6);
        assert!((out[0].keypoints[3][0] - x).abs() < 1e-6);
        assert!((out[1].bbox[0] - 5.0).abs() < 1e-5, "{:?}", out[1].bbox);
    }

    #[test]
    fn letterbox_pads_the_short_side_with_black() {
        let photo = RgbImage::from_pixel(64, 32, image::Rgb([255, 255, 255]));
        let (t, pad) = letterbox(&photo, 128);
        assert_eq!(pad, [0.0, 0.25, 0.0, 0.25]);
        assert_eq!(t[0], -1.0);
        assert!((t[(64 * 128 + 64) * 3] - 1.0).abs() < 1e-6);
    }
}
