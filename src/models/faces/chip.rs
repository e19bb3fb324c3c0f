//! The 150x150 face chip the embedding network reads: dlib's `get_face_chip_details` (the
//! 5 landmarks mapped by a similarity transform onto a mean face with 0.25 padding) and
//! `extract_image_chips` (bilinear sampling, from a 2x-reduced copy of the photo when the face
//! is much larger than the chip).

use image::RgbImage;

use super::resample::{Window, affine_from_3, lround, pyramid_down2, similarity_transform, transform_bilinear};

/// dlib's mean 5-point face, in the unit square.
const MEAN_FACE: [[f64; 2]; 5] = [
    [0.8595674595992, 0.2134981538014],
    [0.6460604764104, 0.2289674387677],
    [0.1205750620789, 0.2137274526848],
    [0.3340850613712, 0.2290642403242],
    [0.4901123135679, 0.6277975316475],
];

/// A `drectangle`: inclusive corners in floats.
#[derive(Debug, Clone, Copy)]
struct DRect {
    l: f64,
    t: f64,
    r: f64,
    b: f64,
}

impl DRect {
    fn empty() -> Self {
        Self { l: 0.0, t: 0.0, r: -1.0, b: -1.0 }
    }
    fn is_empty(&self) -> bool {
        self.t > self.b || self.l > self.r
    }
    fn area(&self) -> f64 {
        if self.is_empty() { 0.0 } else { (self.r - self.l + 1.0) * (self.b - self.t + 1.0) }
    }
    fn center(&self) -> [f64; 2] {
        [(self.l + self.r) / 2.0, (self.t + self.b) / 2.0]
    }
    /// `pyramid_down<2>::rect_down`.
    fn down(&self) -> Self {
        Self { l: self.l / 2.0 - 1.25, t: self.t / 2.0 - 0.75, r: self.r / 2.0 - 1.25, b: self.b / 2.0 - 0.75 }
    }
    fn include(&mut self, p: [f64; 2]) {
        if self.is_empty() {
            *self = Self { l: p[0], t: p[1], r: p[0], b: p[1] };
        } else {
            *self = Self { l: self.l.min(p[0]), t: self.t.min(p[1]), r: self.r.max(p[0]), b: self.b.max(p[1]) };
        }
    }
}

fn rotate(center: [f64; 2], p: [f64; 2], angle: f64) -> [f64; 2] {
    let (s, c) = angle.sin_cos();
    let (x, y) = (p[0] - center[0], p[1] - center[1]);
    [c * x - s * y + center[0], s * x + c * y + center[1]]
}

/// The face chip of `size` x `size` pixels for 5 landmarks, as
/// `extract_image_chip(img, get_face_chip_details(shape, size, padding))`.
pub(crate) fn face_chip(img: &RgbImage, landmarks: &[[i64; 2]], size: u32, padding: f64) -> RgbImage {
    let from: Vec<[f64; 2]> = MEAN_FACE
        .iter()
        .map(|p| {
            [
                (padding + p[0]) / (2.0 * padding + 1.0) * size as f64,
                (padding + p[1]) / (2.0 * padding + 1.0) * size as f64,
            ]
        })
        .collect();
    let to: Vec<[f64; 2]> = landmarks.iter().map(|p| [p[0] as f64, p[1] as f64]).collect();
    let tform = similarity_transform(&from, &to);
    // chip_details: the angle and scale of the transform, and the rectangle it covers.
    let p = [tform.m[0][0], tform.m[1][0]];
    let angle = p[1].atan2(p[0]);
    let scale = (p[0] * p[0] + p[1] * p[1]).sqrt();
    let centre = tform.apply([size as f64 / 2.0, size as f64 / 2.0]);
    let (w, h) = (size as f64 * scale - 1.0, size as f64 * scale - 1.0);
    let rect = DRect { l: centre[0] - w / 2.0, t: centre[1] - h / 2.0, r: centre[0] + w / 2.0, b: centre[1] + h / 2.0 };
    let chip_area = (size * size) as f64;

    // extract_image_chips: how deep a 2x pyramid is needed, and the window of the photo used.
    let mut depth = 0;
    let mut grow = 2.0;
    let mut d = rect.down();
    while d.area() > chip_area {
        d = d.down();
        depth += 1;
        grow = grow * 2.0 + 2.0;
    }
    let c = rect.center();
    let mut rot = DRect::empty();
    for corner in [[rect.l, rect.t], [rect.r, rect.t], [rect.l, rect.b], [rect.r, rect.b]] {
        rot.include(rotate(c, corner, angle));
    }
    let grown = DRect { l: rot.l - grow, t: rot.t - grow, r: rot.r + grow, b: rot.b + grow };
    let (iw, ih) = (img.width() as f64, img.height() as f64);
    let clipped =
        DRect { l: grown.l.max(0.0), t: grown.t.max(0.0), r: grown.r.min(iw - 1.0), b: grown.b.min(ih - 1.0) };
    if clipped.is_empty() {
        return RgbImage::new(size, size);
    }
    let bbox = Window {
        left: lround(clipped.l),
        top: lround(clipped.t),
        cols: lround(clipped.r) - lround(clipped.l) + 1,
        rows: lround(clipped.b) - lround(clipped.t) + 1,
    };

    let mut rel = DRect {
        l: rect.l - bbox.left as f64,
        t: rect.t - bbox.top as f64,
        r: rect.r - bbox.left as f64,
        b: rect.b - bbox.top as f64,
    };
    let mut level = -1i32;
    while rel.down().area() > chip_area {
        level += 1;
        rel = rel.down();
    }
    let s = (size - 1) as f64;
    let rc = rel.center();
    let map = affine_from_3(
        [[0.0, 0.0], [s, 0.0], [0.0, s]],
        [rotate(rc, [rel.l, rel.t], angle), rotate(rc, [rel.r, rel.t], angle), rotate(rc, [rel.l, rel.b], angle)],
    );
    if level < 0 || depth == 0 {
        return transform_bilinear(img, bbox, size, &map);
    }
    let mut source =
        image::imageops::crop_imm(img, bbox.left as u32, bbox.top as u32, bbox.cols as u32, bbox.rows as u32)
            .to_image();
    for _ in 0..=level.min(depth - 1) {
        source = pyramid_down2(&source);
    }
    let whole = Window { left: 0, top: 0, cols: source.width() as i64, rows: source.height() as i64 };
    transform_bilinear(&source, whole, size, &map)
}
