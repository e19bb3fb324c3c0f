//! The pixel operations of the OCR pipeline, computed as OpenCV computes them (the reference,
//! RapidOCR, runs OpenCV): bilinear resizing with OpenCV's 11-bit fixed-point weights and
//! half-pixel centres, the perspective crop of a text box with OpenCV's bicubic kernel
//! (a = -0.75) on a 1/32-pixel grid with 15-bit weights and replicated borders, and the quarter
//! and half turns. Images are 8-bit RGB, row-major.

use image::RgbImage;

/// OpenCV's `INTER_RESIZE_COEF_SCALE`.
const RESIZE_COEF_SCALE: f32 = 2048.0;
/// OpenCV's `INTER_TAB_SIZE`: sub-pixel positions of a remap.
const TAB_SIZE: i64 = 32;
/// OpenCV's `INTER_REMAP_COEF_SCALE`.
const REMAP_COEF_SCALE: f32 = 32768.0;

/// One output position of a linear resize: the two source positions and their fixed-point
/// weights.
#[derive(Clone, Copy)]
struct Tap {
    first: usize,
    second: usize,
    w0: i32,
    w1: i32,
}

/// The taps of OpenCV's bilinear resize along one axis. Along x, OpenCV moves positions before
/// the first or past the last source pixel onto it with weight (1, 0); along y it keeps the
/// fractional weights and clamps only the rows it reads. The two give different fixed-point
/// sums, so `clamp_weights` follows OpenCV per axis (bit-exact with `cv2.resize` on the sizes
/// the pipeline uses).
fn linear_taps(src_len: usize, dst_len: usize, clamp_weights: bool) -> Vec<Tap> {
    let scale = src_len as f64 / dst_len as f64;
    let last = src_len as i64 - 1;
    (0..dst_len)
        .map(|d| {
            let f = ((d as f64 + 0.5) * scale - 0.5) as f32;
            let mut s = f.floor() as i64;
            let mut frac = f - s as f32;
            if clamp_weights && s < 0 {
                frac = 0.0;
                s = 0;
            }
            if clamp_weights && s >= last {
                frac = 0.0;
                s = last;
            }
            Tap {
                first: s.clamp(0, last) as usize,
                second: (s + 1).clamp(0, last) as usize,
                w0: ((1.0 - frac) * RESIZE_COEF_SCALE).round_ties_even() as i32,
                w1: (frac * RESIZE_COEF_SCALE).round_ties_even() as i32,
            }
        })
        .collect()
}

/// `cv2.resize(img, (width, height))` (bilinear) for an 8-bit RGB image. Sizes must be non-zero.
pub(crate) fn resize_linear(src: &RgbImage, width: u32, height: u32) -> RgbImage {
    let (sw, sh) = (src.width() as usize, src.height() as usize);
    let (dw, dh) = (width as usize, height as usize);
    if (sw, sh) == (dw, dh) {
        return src.clone();
    }
    let xs = linear_taps(sw, dw, true);
    let ys = linear_taps(sh, dh, false);
    let data = src.as_raw();
    let horizontal = |row: usize, out: &mut Vec<i32>| {
        out.clear();
        let line = &data[row * sw * 3..(row + 1) * sw * 3];
        for t in &xs {
            for c in 0..3 {
                out.push(line[t.first * 3 + c] as i32 * t.w0 + line[t.second * 3 + c] as i32 * t.w1);
            }
        }
    };
    let mut out = Vec::with_capacity(dw * dh * 3);
    let (mut row0, mut row1) = (Vec::new(), Vec::new());
    let mut cached: (usize, usize) = (usize::MAX, usize::MAX);
    for t in &ys {
        if cached != (t.first, t.second) {
            if cached.1 == t.first {
                std::mem::swap(&mut row0, &mut row1);
            } else {
                horizontal(t.first, &mut row0);
            }
            horizontal(t.second, &mut row1);
            cached = (t.first, t.second);
        }
        // OpenCV's SIMD vertical pass: 16-bit products keeping the high halves, then a
        // rounding shift by 2.
        let (b0, b1) = (t.w0, t.w1);
        for (a, b) in row0.iter().zip(&row1) {
            let v = (((a >> 4) * b0) >> 16) + (((b >> 4) * b1) >> 16);
            out.push(((v + 2) >> 2).clamp(0, 255) as u8);
        }
    }
    RgbImage::from_raw(width, height, out).unwrap_or_else(|| RgbImage::new(width, height))
}

/// OpenCV's cubic kernel (a = -0.75) at offset `x` in [0, 1).
fn cubic_coefficients(x: f32) -> [f32; 4] {
    const A: f32 = -0.75;
    let c0 = ((A * (x + 1.0) - 5.0 * A) * (x + 1.0) + 8.0 * A) * (x + 1.0) - 4.0 * A;
    let c1 = ((A + 2.0) * x - (A + 3.0)) * x * x + 1.0;
    let c2 = ((A + 2.0) * (1.0 - x) - (A + 3.0)) * (1.0 - x) * (1.0 - x) + 1.0;
    [c0, c1, c2, 1.0 - c0 - c1 - c2]
}

/// OpenCV's fixed-point 4x4 bicubic weights for each of the 32x32 sub-pixel positions, each
/// table summing to exactly 2^15.
fn cubic_table() -> Vec<[i32; 16]> {
    let mut tables = Vec::with_capacity((TAB_SIZE * TAB_SIZE) as usize);
    for iy in 0..TAB_SIZE {
        let vy = cubic_coefficients(iy as f32 / TAB_SIZE as f32);
        for ix in 0..TAB_SIZE {
            let vx = cubic_coefficients(ix as f32 / TAB_SIZE as f32);
            let mut t = [0i32; 16];
            let mut sum = 0;
            for i in 0..4 {
                for j in 0..4 {
                    let v = (vy[i] * vx[j] * REMAP_COEF_SCALE).round_ties_even() as i32;
                    t[i * 4 + j] = v.clamp(i16::MIN as i32, i16::MAX as i32);
                    sum += t[i * 4 + j];
                }
            }
            let diff = sum - REMAP_COEF_SCALE as i32;
            if diff != 0 {
                let (mut min_at, mut max_at) = (5usize, 5usize);
                for k1 in 1..3 {
                    for k2 in 1..3 {
                        let k = k1 * 4 + k2;
                        if t[k] < t[min_at] {
                            min_at = k;
                        } else if t[k] > t[max_at] {
                            max_at = k;
                        }
                    }
                }
                if diff < 0 {
                    t[max_at] -= diff;
                } else {
                    t[min_at] -= diff;
                }
            }
            tables.push(t);
        }
    }
    tables
}

/// Solves the 3x3 homography that maps `from[i]` to `to[i]` (OpenCV's
/// `getPerspectiveTransform`), as a row-major matrix. `None` for a degenerate quadrilateral.
fn perspective_transform(from: &[[f64; 2]; 4], to: &[[f64; 2]; 4]) -> Option<[f64; 9]> {
    let mut a = [[0f64; 9]; 8];
    for i in 0..4 {
        let ([x, y], [u, v]) = (from[i], to[i]);
        a[i] = [x, y, 1.0, 0.0, 0.0, 0.0, -x * u, -y * u, u];
        a[i + 4] = [0.0, 0.0, 0.0, x, y, 1.0, -x * v, -y * v, v];
    }
    // Gaussian elimination with partial pivoting.
    for col in 0..8 {
        let pivot = (col..8).max_by(|&p, &q| a[p][col].abs().total_cmp(&a[q][col].abs()))?;
        if a[pivot][col].abs() < 1e-12 {
            return None;
        }
        a.swap(col, pivot);
        for row in 0..8 {
            if row != col {
                let f = a[row][col] / a[col][col];
                let pivot_row = a[col];
                for (v, p) in a[row].iter_mut().zip(pivot_row).skip(col) {
                    *v -= f * p;
                }
            }
        }
    }
    let mut m = [0f64; 9];
    for i in 0..8 {
        m[i] = a[i][8] / a[i][i];
    }
    m[8] = 1.0;
    Some(m)
}

fn invert3(m: &[f64; 9]) -> Option<[f64; 9]> {
    let det =
        m[0] * (m[4] * m[8] - m[5] * m[7]) - m[1] * (m[3] * m[8] - m[5] * m[6]) + m[2] * (m[3] * m[7] - m[4] * m[6]);
    if det.abs() < 1e-300 {
        return None;
    }
    let d = 1.0 / det;
    Some([
        (m[4] * m[8] - m[5] * m[7]) * d,
        (m[2] * m[7] - m[1] * m[8]) * d,
        (m[1] * m[5] - m[2] * m[4]) * d,
        (m[5] * m[6] - m[3] * m[8]) * d,
        (m[0] * m[8] - m[2] * m[6]) * d,
        (m[2] * m[3] - m[0] * m[5]) * d,
        (m[3] * m[7] - m[4] * m[6]) * d,
        (m[1] * m[6] - m[0] * m[7]) * d,
        (m[0] * m[4] - m[1] * m[3]) * d,
    ])
}

/// The text box `quad` (top-left, top-right, bottom-right, bottom-left) of `src` straightened
/// into a `width` x `height` image: `cv2.warpPerspective(.., INTER_CUBIC, BORDER_REPLICATE)`
/// with the matrix of `cv2.getPerspectiveTransform`. `None` when the box is degenerate.
pub(crate) fn warp_quad(src: &RgbImage, quad: &[[f32; 2]; 4], width: u32, height: u32) -> Option<RgbImage> {
    if width == 0 || height == 0 || src.width() == 0 || src.height() == 0 {
        return None;
    }
    let from = quad.map(|[x, y]| [x as f64, y as f64]);
    let (w, h) = (width as f64, height as f64);
    let to = [[0.0, 0.0], [w, 0.0], [w, h], [0.0, h]];
    let inverse = invert3(&perspective_transform(&from, &to)?)?;
    let table = cubic_table();
    let (sw, sh) = (src.width() as i64, src.height() as i64);
    let data = src.as_raw();
    let mut out = Vec::with_capacity(width as usize * height as usize * 3);
    for y in 0..height as i64 {
        for x in 0..width as i64 {
            let (xf, yf) = (x as f64, y as f64);
            let x0 = inverse[0] * xf + inverse[1] * yf + inverse[2];
            let y0 = inverse[3] * xf + inverse[4] * yf + inverse[5];
            let w0 = inverse[6] * xf + inverse[7] * yf + inverse[8];
            let scale = if w0 != 0.0 { TAB_SIZE as f64 / w0 } else { 0.0 };
            let fx = (x0 * scale).clamp(i32::MIN as f64, i32::MAX as f64).round_ties_even() as i64;
            let fy = (y0 * scale).clamp(i32::MIN as f64, i32::MAX as f64).round_ties_even() as i64;
            let (ix, iy) = (fx >> 5, fy >> 5);
            let t = &table[((fy & 31) * TAB_SIZE + (fx & 31)) as usize];
            let mut acc = [0i64; 3];
            for i in 0..4 {
                let sy = (iy - 1 + i as i64).clamp(0, sh - 1);
                for j in 0..4 {
                    let sx = (ix - 1 + j as i64).clamp(0, sw - 1);
                    let p = ((sy * sw + sx) * 3) as usize;
                    let k = t[i * 4 + j] as i64;
                    for c in 0..3 {
                        acc[c] += data[p + c] as i64 * k;
                    }
                }
            }
            for a in acc {
                out.push(((a + (1 << 14)) >> 15).clamp(0, 255) as u8);
            }
        }
    }
    RgbImage::from_raw(width, height, out)
}

/// `np.rot90`: a quarter turn counter-clockwise.
pub(crate) fn rotate_quarter_ccw(src: &RgbImage) -> RgbImage {
    let (w, h) = (src.width(), src.height());
    RgbImage::from_fn(h, w, |x, y| *src.get_pixel(w - 1 - y, x))
}

/// `cv2.rotate(img, ROTATE_180)`.
pub(crate) fn rotate_half(src: &RgbImage) -> RgbImage {
    let (w, h) = (src.width(), src.height());
    RgbImage::from_fn(w, h, |x, y| *src.get_pixel(w - 1 - x, h - 1 - y))
}

/// Black bands of `pad` rows above and below (`cv2.copyMakeBorder`, constant black).
pub(crate) fn pad_vertically(src: &RgbImage, pad: u32) -> RgbImage {
    let mut out = RgbImage::new(src.width(), src.height() + 2 * pad);
    image::imageops::replace(&mut out, src, 0, pad as i64);
    out
}

/// Writes `img` into `out` as normalised planes (x / 127.5 - 1) in BGR order (the models were
/// trained on OpenCV's BGR images), `out` holding 3 planes of `plane_width` x `img.height()`
/// values; columns past the image keep their value (0: the reference pads after normalising).
pub(crate) fn write_bgr_planes(img: &RgbImage, out: &mut [f32], plane_width: usize) {
    let (w, h) = (img.width() as usize, img.height() as usize);
    let plane = plane_width * h;
    let data = img.as_raw();
    for y in 0..h {
        for x in 0..w.min(plane_width) {
            let p = (y * w + x) * 3;
            for c in 0..3 {
                // Channel c of the tensor is B, G, R: RGB index 2 - c.
                let v = data[p + 2 - c] as f32 / 255.0;
                out[c * plane + y * plane_width + x] = (v - 0.5) / 0.5;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resize_to_same_size_is_identity_and_halving_averages() {
        let img = RgbImage::from_fn(4, 2, |x, _| image::Rgb([x as u8 * 10, 0, 255]));
        assert_eq!(resize_linear(&img, 4, 2), img);
        let half = resize_linear(&img, 2, 1);
        assert_eq!(half.get_pixel(0, 0).0, [5, 0, 255]);
        assert_eq!(half.get_pixel(1, 0).0, [25, 0, 255]);
    }

    #[test]
    fn resize_is_bit_exact_with_opencv_at_the_edges() {
        // cv2.resize(src, (7, 7)) with OpenCV 4.11 (opencv-python 4.11.0.86). The first and last
        // rows read one source row with two fractional weights: clamping those weights as
        // along x gave 64 instead of 63 at (3, 0).
        let src: [[[u8; 3]; 4]; 3] = [
            [[255, 228, 34], [121, 243, 189], [6, 131, 102], [168, 82, 193]],
            [[187, 150, 81], [243, 205, 24], [236, 8, 246], [164, 231, 36]],
            [[210, 111, 172], [210, 174, 176], [218, 242, 169], [114, 205, 63]],
        ];
        let want: [[[u8; 3]; 7]; 7] = [
            [
                [255, 228, 34],
                [207, 233, 89],
                [131, 242, 178],
                [63, 187, 145],
                [18, 127, 108],
                [110, 99, 160],
                [168, 82, 193],
            ],
            [
                [245, 217, 41],
                [207, 224, 85],
                [146, 236, 156],
                [89, 175, 144],
                [48, 113, 126],
                [121, 107, 153],
                [167, 103, 170],
            ],
            [
                [216, 183, 61],
                [207, 197, 73],
                [192, 218, 92],
                [164, 141, 139],
                [139, 68, 178],
                [155, 129, 132],
                [166, 167, 103],
            ],
            [
                [187, 150, 81],
                [207, 170, 61],
                [239, 201, 28],
                [240, 107, 135],
                [231, 24, 231],
                [190, 151, 111],
                [164, 231, 36],
            ],
            [
                [197, 133, 120],
                [208, 154, 109],
                [227, 187, 91],
                [228, 150, 151],
                [222, 116, 201],
                [173, 180, 106],
                [142, 220, 48],
            ],
            [
                [207, 116, 159],
                [209, 139, 157],
                [214, 174, 155],
                [218, 193, 167],
                [213, 208, 171],
                [156, 208, 102],
                [121, 209, 59],
            ],
            [
                [210, 111, 172],
                [210, 133, 173],
                [210, 169, 176],
                [214, 208, 172],
                [210, 239, 161],
                [151, 218, 101],
                [114, 205, 63],
            ],
        ];
        let img = RgbImage::from_fn(4, 3, |x, y| image::Rgb(src[y as usize][x as usize]));
        let out = resize_linear(&img, 7, 7);
        for (y, row) in want.iter().enumerate() {
            for (x, px) in row.iter().enumerate() {
                assert_eq!(&out.get_pixel(x as u32, y as u32).0, px, "at ({x}, {y})");
            }
        }
    }

    #[test]
    fn cubic_weights_sum_to_one() {
        for t in cubic_table() {
            assert_eq!(t.iter().sum::<i32>(), 32768);
        }
    }

    #[test]
    fn an_axis_aligned_quad_crops_its_pixels() {
        let img = RgbImage::from_fn(20, 10, |x, y| image::Rgb([x as u8, y as u8, 7]));
        let crop = warp_quad(&img, &[[5.0, 2.0], [15.0, 2.0], [15.0, 8.0], [5.0, 8.0]], 10, 6).unwrap();
        assert_eq!(crop.get_pixel(0, 0).0, [5, 2, 7]);
        assert_eq!(crop.get_pixel(9, 5).0, [14, 7, 7]);
    }

    #[test]
    fn quarter_turn_is_counter_clockwise() {
        let img = RgbImage::from_fn(3, 2, |x, y| image::Rgb([x as u8, y as u8, 0]));
        let r = rotate_quarter_ccw(&img);
        assert_eq!((r.width(), r.height()), (2, 3));
        // np.rot90: the last column becomes the first row.
        assert_eq!(r.get_pixel(0, 0).0, [2, 0, 0]);
        assert_eq!(r.get_pixel(1, 2).0, [0, 1, 0]);
    }
}
