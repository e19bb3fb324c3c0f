//! dlib's CNN face detector (`mmod_human_face_detector.dat`, max-margin object detection),
//! run as dlib runs it:
//!
//! ```text
//! loss_mmod<con<1,9,9,1,1, rcon5<rcon5<rcon5< downsampler< input_rgb_image_pyramid<pyramid_down<6>> >>>>>>
//! downsampler = 3 x (con 5x5 stride 2 -> affine -> relu),  rcon5 = con 5x5 (45) -> affine -> relu
//! ```
//!
//! The photo is first enlarged 2x (`pyramid_up`, as face_recognition's one upsampling), then
//! tiled with all its 5/6 reductions into one image (`create_tiled_pyramid`, padding 10,
//! outer padding 11, background the mean colour), normalised by the means and 256. Every
//! output cell scoring above 0 is a detection window (80x80 in the tiled image), mapped back
//! through the layers' strides and the tile it falls in; windows are kept best first unless
//! they overlap a kept one (dlib's `test_box_overlap`: intersection over the bounding box of
//! both above the model's threshold, or one box covered past its fraction), then taken back
//! down from the 2x image.

use candle_core::{Device, Tensor};
use image::RgbImage;

use super::dlib_format::{Layer, Reader, read_network};
use super::landmarks::Rect;
use super::resample::{Plane, lround, pyramid_up, resize_plane};
use crate::error::Result;

/// `test_box_overlap`.
#[derive(Debug, Clone, Copy)]
struct Overlap {
    iou: f64,
    covered: f64,
}

impl Overlap {
    fn overlaps(&self, a: &Rect, b: &Rect) -> bool {
        let area = |r: &Rect| ((r.right - r.left + 1).max(0) * (r.bottom - r.top + 1).max(0)) as f64;
        let inter = Rect {
            left: a.left.max(b.left),
            top: a.top.max(b.top),
            right: a.right.min(b.right),
            bottom: a.bottom.min(b.bottom),
        };
        let inner = if inter.right < inter.left || inter.bottom < inter.top { 0.0 } else { area(&inter) };
        if inner == 0.0 {
            return false;
        }
        let outer = area(&Rect {
            left: a.left.min(b.left),
            top: a.top.min(b.top),
            right: a.right.max(b.right),
            bottom: a.bottom.max(b.bottom),
        });
        inner / outer > self.iou || inner / area(a) > self.covered || inner / area(b) > self.covered
    }
}

/// One layer ready for candle.
enum Op {
    Con { weight: Tensor, bias: Tensor, stride: usize, padding: usize, size: usize },
    Affine { gamma: Tensor, beta: Tensor },
    Relu,
}

/// A loaded CNN face detector.
pub(crate) struct Detector {
    window: (usize, usize),
    nms: Overlap,
    avg: [f32; 3],
    padding: usize,
    outer_padding: usize,
    ops: Vec<Op>,
}

/// A detection in the photo's pixels (dlib's inclusive rectangle) with its score.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Detection {
    pub rect: Rect,
    pub score: f32,
}

/// How much work one photo may cost.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Budget {
    /// The most pixels the (enlarged) photo given to the network may have.
    pub max_pixels: u64,
    /// The most windows scored above zero that are kept for suppression.
    pub max_candidates: usize,
}

impl Detector {
    pub(crate) fn read(bytes: &[u8], file: &str) -> Result<Self> {
        let mut r = Reader::new(bytes, file);
        if r.int("the loss layer version")? != 1 {
            return Err(r.error("loss layer version"));
        }
        r.expect_string(&["loss_mmod_"], "the MMOD loss")?;
        let version = r.int("the MMOD options version")?;
        if !(1..=4).contains(&version) {
            return Err(r.error(&format!("MMOD options version {version}")));
        }
        let window = if version == 1 {
            (r.count("window width", 1 << 12)?, r.count("window height", 1 << 12)?)
        } else {
            let n = r.count("the number of detector windows", 64)?;
            if n != 1 {
                return Err(r.error("more than one detector window (only single-window models are supported)"));
            }
            let v = r.int("the window version")?;
            let w = (r.count("window width", 1 << 12)?, r.count("window height", 1 << 12)?);
            if v == 2 {
                r.string("the window label")?;
            }
            w
        };
        r.float("loss_per_false_alarm")?;
        r.float("loss_per_missed_target")?;
        r.float("truth_match_iou_threshold")?;
        let nms = Overlap { iou: r.float("the NMS overlap")?, covered: r.float("the NMS coverage")? };
        r.float("overlaps_ignore")?;
        r.float("overlaps_ignore")?;
        if version >= 3 {
            r.int("assume_image_pyramid")?;
        }
        if version >= 4 && r.boolean("use_bounding_box_regression")? {
            return Err(r.error("bounding box regression (not in dlib's face detector)"));
        }
        if version >= 4 {
            r.float("bbr_lambda")?;
        }
        let net = read_network(&mut r)?;
        if !r.at_end() {
            return Err(r.error("bytes after the network"));
        }
        if !net.input.kind.starts_with("input_rgb_image_pyramid") {
            return Err(r.error("the detector's input is not an RGB image pyramid"));
        }
        let dev = Device::Cpu;
        let mut ops = Vec::new();
        for layer in net.layers {
            ops.push(match layer {
                Layer::Con { filters, bias, stride, padding } => {
                    let [o, i, kh, kw] = filters.shape;
                    if stride.0 != stride.1 || padding.0 != padding.1 || kh != kw {
                        return Err(r.error("a non-square convolution"));
                    }
                    Op::Con {
                        weight: Tensor::from_vec(filters.data, (o, i, kh, kw), &dev)?,
                        bias: Tensor::from_vec(bias, (1, o, 1, 1), &dev)?,
                        stride: stride.0,
                        padding: padding.0,
                        size: kh,
                    }
                }
                Layer::Affine { gamma, beta } => {
                    let n = gamma.len();
                    Op::Affine {
                        gamma: Tensor::from_vec(gamma, (1, n, 1, 1), &dev)?,
                        beta: Tensor::from_vec(beta, (1, n, 1, 1), &dev)?,
                    }
                }
                Layer::Relu => Op::Relu,
                _ => return Err(r.error("a layer the face detector does not have")),
            });
        }
        Ok(Self {
            window,
            nms,
            avg: net.input.avg,
            padding: net.input.pyramid_padding,
            outer_padding: net.input.pyramid_outer_padding,
            ops,
        })
    }

    /// The smaller side of the detector's window: the smallest face it sees in its input.
    pub(crate) fn window_side(&self) -> usize {
        self.window.0.min(self.window.1)
    }

    /// Whether a detection at `b` is suppressed by a kept one at `a` (the model's own overlap
    /// rule, as between the windows of one search).
    pub(crate) fn suppresses(&self, a: &Rect, b: &Rect) -> bool {
        self.nms.overlaps(a, b)
    }

    /// Faces in `photo`, best first, in its pixels. Returns whether the photo had to be
    /// reduced to fit the budget (then its smallest faces may be missed).
    pub(crate) fn detect(&self, photo: &RgbImage, budget: Budget) -> Result<(Vec<Detection>, bool)> {
        if photo.width() < 2 || photo.height() < 2 {
            return Ok((Vec::new(), false));
        }
        // face_recognition upsamples once; photos too big for that are given as they are, or
        // reduced, so the network's input stays within the budget.
        let pixels = photo.width() as u64 * photo.height() as u64;
        let (input, upsampled, scale) = if pixels * 4 <= budget.max_pixels {
            (pyramid_up(photo), true, (1.0, 1.0))
        } else if pixels <= budget.max_pixels {
            (photo.clone(), false, (1.0, 1.0))
        } else {
            let s = (budget.max_pixels as f64 / pixels as f64).sqrt();
            let w = ((photo.width() as f64 * s).floor() as u32).max(1);
            let h = ((photo.height() as f64 * s).floor() as u32).max(1);
            let mut small = RgbImage::new(w, h);
            super::resample::resize_rgb(photo, &mut small);
            // resize_image samples the photo at p * (in - 1) / (out - 1).
            let scale = |full: u32, reduced: u32| (full.max(2) - 1) as f64 / (reduced.max(2) - 1) as f64;
            (small, false, (scale(photo.width(), w), scale(photo.height(), h)))
        };
        let mut dets = self.run(&input, budget.max_candidates)?;
        for d in &mut dets {
            let r = d.rect;
            if upsampled {
                // pyramid_down<2>::rect_down: p / 2 - (1.25, 0.75), rounded.
                d.rect = Rect {
                    left: lround(r.left as f64 / 2.0 - 1.25),
                    top: lround(r.top as f64 / 2.0 - 0.75),
                    right: lround(r.right as f64 / 2.0 - 1.25),
                    bottom: lround(r.bottom as f64 / 2.0 - 0.75),
                };
            } else if scale != (1.0, 1.0) {
                d.rect = Rect {
                    left: lround(r.left as f64 * scale.0),
                    top: lround(r.top as f64 * scale.1),
                    right: lround(r.right as f64 * scale.0),
                    bottom: lround(r.bottom as f64 * scale.1),
                };
            }
        }
        Ok((dets, !upsampled))
    }

    /// Whether an input of `rows` x `cols` leaves at least one output cell (a photo of a few
    /// pixels does not; dlib has nothing to scan there either).
    fn output_is_nonempty(&self, rows: usize, cols: usize) -> bool {
        let (mut r, mut c) = (rows, cols);
        for op in &self.ops {
            if let Op::Con { stride, padding, size, .. } = op {
                if r + 2 * padding < *size || c + 2 * padding < *size {
                    return false;
                }
                r = (r + 2 * padding - size) / stride + 1;
                c = (c + 2 * padding - size) / stride + 1;
            }
        }
        r > 0 && c > 0
    }

    /// `net(image)`: detections in `img`'s pixels.
    fn run(&self, img: &RgbImage, max_candidates: usize) -> Result<Vec<Detection>> {
        let (rects, nr, nc) = tiled_pyramid_layout(
            img.height() as i64,
            img.width() as i64,
            self.padding as i64,
            self.outer_padding as i64,
        );
        if rects.is_empty() || !self.output_is_nonempty(nr as usize, nc as usize) {
            return Ok(Vec::new());
        }
        // The tiled pyramid, channel by channel, in normalised floats (zero elsewhere).
        let plane = (nr * nc) as usize;
        let mut data = vec![0f32; 3 * plane];
        let raw = img.as_raw();
        let r0 = rects[0];
        for ch in 0..3 {
            for r in 0..img.height() as i64 {
                for c in 0..img.width() as i64 {
                    let v = raw[((r * img.width() as i64 + c) * 3) as usize + ch] as f32;
                    data[ch * plane + ((r + r0.top) * nc + c + r0.left) as usize] = (v - self.avg[ch]) / 256.0;
                }
            }
            for i in 1..rects.len() {
                let at = |t: &Rect| Plane {
                    offset: ch * plane + (t.top * nc + t.left) as usize,
                    stride: nc as usize,
                    rows: (t.bottom - t.top + 1) as usize,
                    cols: (t.right - t.left + 1) as usize,
                };
                resize_plane(&mut data, &at(&rects[i - 1]), &at(&rects[i]));
            }
        }
        let mut x = Tensor::from_vec(data, (1, 3, nr as usize, nc as usize), &Device::Cpu)?;
        for op in &self.ops {
            x = match op {
                Op::Con { weight, bias, stride, padding, .. } => {
                    x.conv2d(weight, *padding, *stride, 1, 1)?.broadcast_add(bias)?
                }
                Op::Affine { gamma, beta } => x.broadcast_mul(gamma)?.broadcast_add(beta)?,
                Op::Relu => x.relu()?,
            };
        }
        let (_, k, _, out_c) = x.dims4()?;
        if k != 1 {
            return Err(crate::error::Error::Model {
                model: "mmod_human_face_detector.dat".into(),
                reason: format!("the detector has {k} output channels, 1 expected"),
            });
        }
        let scores = x.flatten_all()?.to_vec1::<f32>()?;
        let mut cands: Vec<(f32, usize)> =
            scores.iter().enumerate().filter(|(_, s)| **s > 0.0).map(|(i, s)| (*s, i)).collect();
        cands.sort_by(|a, b| b.0.total_cmp(&a.0));
        cands.truncate(max_candidates);
        let mut kept: Vec<Detection> = Vec::new();
        for (score, i) in cands {
            let (r, c) = ((i / out_c) as f64, (i % out_c) as f64);
            // Back through the layers: each con maps p to p * stride - padding + size / 2.
            let (mut px, mut py) = (c, r);
            for op in self.ops.iter().rev() {
                if let Op::Con { stride, padding, size, .. } = op {
                    px = px * *stride as f64 - *padding as f64 + (*size / 2) as f64;
                    py = py * *stride as f64 - *padding as f64 + (*size / 2) as f64;
                }
            }
            let (w, h) = (self.window.0 as f64 - 1.0, self.window.1 as f64 - 1.0);
            let d = [px - w / 2.0, py - h / 2.0, px + w / 2.0, py + h / 2.0];
            let rect = tiled_to_image(&rects, d);
            if kept.iter().any(|k| self.nms.overlaps(&k.rect, &rect)) {
                continue;
            }
            kept.push(Detection { rect, score });
        }
        Ok(kept)
    }
}

/// `compute_tiled_image_pyramid_details` for `pyramid_down<6>`: where each level sits in the
/// tiled image, and that image's size.
fn tiled_pyramid_layout(nr: i64, nc: i64, padding: i64, outer_padding: i64) -> (Vec<Rect>, i64, i64) {
    if nr * nc == 0 {
        return (Vec::new(), 0, 0);
    }
    let rect = |w: i64, h: i64| Rect { left: 0, top: 0, right: w - 1, bottom: h - 1 };
    let (w_of, h_of) = (|r: &Rect| r.right - r.left + 1, |r: &Rect| r.bottom - r.top + 1);
    let mut rects = vec![rect(nc, nr)];
    let (mut r, mut c) = (nr, nc);
    let rate = 5.0 / 6.0;
    loop {
        r = (rate * r as f64).floor() as i64;
        c = (rate * c as f64).floor() as i64;
        if r * c == 0 || r < 5 {
            break;
        }
        rects.push(rect(c, r));
    }
    let mut total_height: i64 = rects.iter().map(|i| h_of(i) + padding).sum();
    total_height -= padding * 2;
    let (mut height, mut prev_width) = (0i64, 0i64);
    let (w0, h0) = (w_of(&rects[0]), h_of(&rects[0]));
    for i in &rects {
        if w_of(i) <= w0 - prev_width - padding && (height - h0) * 2 >= total_height - h0 {
            break;
        }
        height += h_of(i) + padding;
        prev_width = w_of(i);
    }
    height -= padding;
    let width = w0;
    let out_nr = height + outer_padding * 2;
    let out_nc = width + outer_padding * 2;
    let translate = |r: &Rect, dx: i64, dy: i64| Rect {
        left: r.left + dx,
        top: r.top + dy,
        right: r.right + dx,
        bottom: r.bottom + dy,
    };
    let mut y = outer_padding;
    let mut i = 0;
    while y < height + outer_padding && i < rects.len() {
        rects[i] = translate(&rects[i], outer_padding, y);
        y += h_of(&rects[i]) + padding;
        i += 1;
    }
    y -= padding;
    while i < rects.len() {
        let (p1x, p1y) = (outer_padding + width - 1, y - 1);
        let (p2x, p2y) = (p1x - rects[i].right, p1y - rects[i].bottom);
        let r = Rect { left: p1x.min(p2x), top: p1y.min(p2y), right: p1x.max(p2x), bottom: p1y.max(p2y) };
        let r0 = rects[0];
        let intersects = r.left.max(r0.left) <= r.right.min(r0.right) && r.top.max(r0.top) <= r.bottom.min(r0.bottom);
        if intersects {
            break;
        }
        rects[i] = r;
        y -= h_of(&rects[i]) + padding;
        i += 1;
    }
    rects.truncate(i);
    (rects, out_nr, out_nc)
}

/// `tiled_pyramid_to_image`: a box in the tiled image back into the level it falls in, then up
/// to the image (each level up is `p * 6/5 + 0.3`), rounded to a `rectangle`.
fn tiled_to_image(rects: &[Rect], d: [f64; 4]) -> Rect {
    let (cx, cy) = ((d[0] + d[2]) / 2.0, (d[1] + d[3]) / 2.0);
    let (px, py) = ((cx + 0.5).floor() as i64, (cy + 0.5).floor() as i64);
    let mut best = 0;
    let mut best_dist = f64::INFINITY;
    for (i, r) in rects.iter().enumerate() {
        if px >= r.left && px <= r.right && py >= r.top && py <= r.bottom {
            best = i;
            break;
        }
        let nx = px.clamp(r.left, r.right);
        let ny = py.clamp(r.top, r.bottom);
        let dist = (((nx - px) * (nx - px) + (ny - py) * (ny - py)) as f64).sqrt();
        if dist < best_dist {
            best_dist = dist;
            best = i;
        }
    }
    let o = rects[best];
    let mut p = [d[0] - o.left as f64, d[1] - o.top as f64, d[2] - o.left as f64, d[3] - o.top as f64];
    for _ in 0..best {
        for v in &mut p {
            *v = *v * (6.0 / 5.0) + 0.3;
        }
    }
    Rect { left: lround(p[0]), top: lround(p[1]), right: lround(p[2]), bottom: lround(p[3]) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn overlap_uses_the_bounding_box_of_both() {
        let o = Overlap { iou: 0.5, covered: 0.95 };
        let a = Rect { left: 0, top: 0, right: 9, bottom: 9 };
        assert!(o.overlaps(&a, &Rect { left: 2, top: 0, right: 11, bottom: 9 }));
        assert!(!o.overlaps(&a, &Rect { left: 20, top: 0, right: 29, bottom: 9 }));
        // Fully inside a bigger box: covered.
        assert!(o.overlaps(
            &Rect { left: 0, top: 0, right: 99, bottom: 99 },
            &Rect { left: 10, top: 10, right: 19, bottom: 19 }
        ));
    }

    #[test]
    fn pyramid_levels_fit_in_the_tiled_image() {
        let (rects, nr, nc) = tiled_pyramid_layout(300, 400, 10, 11);
        assert!(rects.len() > 5);
        assert_eq!((rects[0].left, rects[0].top), (11, 11));
        for r in &rects {
            assert!(r.left >= 0 && r.top >= 0 && r.right < nc && r.bottom < nr);
        }
    }
}
