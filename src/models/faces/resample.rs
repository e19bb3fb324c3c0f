//! The image operations dlib's face pipeline is made of, reproduced to the rounding: its
//! bilinear `resize_image` (the SSE paths, with their float32 steps and truncations), the
//! 2x `pyramid_up` the Python bindings upsample with, `pyramid_down<2>`'s 5x5 filter, its
//! similarity and affine transforms, and the bilinear `transform_image` that cuts face chips.
//! Matching dlib here is what keeps boxes and landmarks on the same pixels as the reference.

use image::RgbImage;

/// A 2-D affine map `p -> m * p + b` (dlib's `point_transform_affine`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Affine {
    pub m: [[f64; 2]; 2],
    pub b: [f64; 2],
}

impl Affine {
    pub(crate) fn apply(&self, p: [f64; 2]) -> [f64; 2] {
        [self.m[0][0] * p[0] + self.m[0][1] * p[1] + self.b[0], self.m[1][0] * p[0] + self.m[1][1] * p[1] + self.b[1]]
    }
}

/// The least-squares similarity transform taking `from` to `to` (Umeyama, as dlib's
/// `find_similarity_transform`; in 2-D its SVD has this closed form).
pub(crate) fn similarity_transform(from: &[[f64; 2]], to: &[[f64; 2]]) -> Affine {
    let n = from.len().max(1) as f64;
    let mean = |pts: &[[f64; 2]]| {
        let s = pts.iter().fold([0.0, 0.0], |a, p| [a[0] + p[0], a[1] + p[1]]);
        [s[0] / n, s[1] / n]
    };
    let (mf, mt) = (mean(from), mean(to));
    let (mut a, mut b, mut sigma) = (0.0, 0.0, 0.0);
    for (f, t) in from.iter().zip(to) {
        let (fx, fy) = (f[0] - mf[0], f[1] - mf[1]);
        let (tx, ty) = (t[0] - mt[0], t[1] - mt[1]);
        a += fx * tx + fy * ty;
        b += fx * ty - fy * tx;
        sigma += fx * fx + fy * fy;
    }
    if sigma == 0.0 {
        return Affine { m: [[1.0, 0.0], [0.0, 1.0]], b: [mt[0] - mf[0], mt[1] - mf[1]] };
    }
    let (c, s) = (a / sigma, b / sigma);
    let m = [[c, -s], [s, c]];
    Affine { m, b: [mt[0] - (c * mf[0] - s * mf[1]), mt[1] - (s * mf[0] + c * mf[1])] }
}

/// The affine transform taking three points exactly onto three others.
pub(crate) fn affine_from_3(from: [[f64; 2]; 3], to: [[f64; 2]; 3]) -> Affine {
    // Solve [x y 1] * coefficients = target for both coordinates.
    let (p0, p1, p2) = (from[0], from[1], from[2]);
    let det = (p1[0] - p0[0]) * (p2[1] - p0[1]) - (p2[0] - p0[0]) * (p1[1] - p0[1]);
    if det == 0.0 {
        return Affine { m: [[1.0, 0.0], [0.0, 1.0]], b: [0.0, 0.0] };
    }
    let mut m = [[0.0; 2]; 2];
    let mut b = [0.0; 2];
    for k in 0..2 {
        let (d1, d2) = (to[1][k] - to[0][k], to[2][k] - to[0][k]);
        let gx = (d1 * (p2[1] - p0[1]) - d2 * (p1[1] - p0[1])) / det;
        let gy = (d2 * (p1[0] - p0[0]) - d1 * (p2[0] - p0[0])) / det;
        m[k] = [gx, gy];
        b[k] = to[0][k] - gx * p0[0] - gy * p0[1];
    }
    Affine { m, b }
}

/// `std::lround` (halves away from zero), which dlib uses to turn `drectangle`s into
/// `rectangle`s; Rust's `round` does the same.
pub(crate) fn lround(v: f64) -> i64 {
    v.round() as i64
}

/// dlib's `pyramid_up` with `pyramid_down<2>`: the image 2x bigger by `resize_image`'s bilinear
/// SSE path for RGB (truncating), sized by `rect_up` of the image rectangle.
pub(crate) fn pyramid_up(img: &RgbImage) -> RgbImage {
    let (nc, nr) = (img.width() as i64, img.height() as i64);
    if nc == 0 || nr == 0 {
        return RgbImage::new(0, 0);
    }
    // rect_up((0,0)-(nc-1,nr-1)) = ((p + (1.25, 0.75)) * 2), rounded.
    let right = lround((nc as f64 - 1.0 + 1.25) * 2.0);
    let bottom = lround((nr as f64 - 1.0 + 0.75) * 2.0);
    let mut out = RgbImage::new((right + 1) as u32, (bottom + 1) as u32);
    resize_rgb(img, &mut out);
    out
}

/// `resize_image(in, out, interpolate_bilinear)` for RGB images, as dlib's SSE code does it.
pub(crate) fn resize_rgb(src: &RgbImage, dst: &mut RgbImage) {
    let (in_nc, in_nr) = (src.width() as i64, src.height() as i64);
    let (out_nc, out_nr) = (dst.width() as i64, dst.height() as i64);
    if in_nc == 0 || in_nr == 0 || out_nc == 0 || out_nr == 0 {
        return;
    }
    let sp = src.as_raw();
    let px = |r: i64, c: i64, ch: usize| sp[((r * in_nc + c) * 3) as usize + ch] as f32;
    let x_scale = (in_nc - 1) as f64 / ((out_nc - 1).max(1)) as f64;
    let y_scale = (in_nr - 1) as f64 / ((out_nr - 1).max(1)) as f64;
    let dp = dst.as_mut();
    let mut y = -y_scale;
    for r in 0..out_nr {
        y += y_scale;
        let top = y.floor() as i64;
        let bottom = (top + 1).min(in_nr - 1);
        let tb_frac = y - top as f64;
        let x = -4.0 * x_scale;
        let tb = tb_frac as f32;
        let inv_tb = (1.0 - tb_frac) as f32;
        let xs4 = (4.0 * x_scale) as f32;
        let mut lanes = [x as f32, (x + x_scale) as f32, (x + 2.0 * x_scale) as f32, (x + 3.0 * x_scale) as f32];
        let mut c = 0i64;
        loop {
            for l in &mut lanes {
                *l += xs4;
            }
            let left = lanes.map(|v| v as i32 as i64);
            if left[3] + 1 >= in_nc || c + 3 >= out_nc {
                break;
            }
            for lane in 0..4 {
                let lr = lanes[lane] - left[lane] as f32;
                let inv_lr = 1.0 - lr;
                let (tlf, trf, blf, brf) = (inv_tb * inv_lr, inv_tb * lr, tb * inv_lr, tb * lr);
                let (l, rr) = (left[lane], left[lane] + 1);
                for ch in 0..3 {
                    let v = tlf * px(top, l, ch)
                        + trf * px(top, rr, ch)
                        + blf * px(bottom, l, ch)
                        + brf * px(bottom, rr, ch);
                    dp[(((r * out_nc) + c + lane as i64) * 3) as usize + ch] = v as i32 as u8;
                }
            }
            c += 4;
        }
        let mut x = -x_scale + c as f64 * x_scale;
        while c < out_nc {
            x += x_scale;
            let left = x.floor() as i64;
            let right = (left + 1).min(in_nc - 1);
            let lr = x - left as f64;
            for ch in 0..3 {
                let g = |r: i64, c: i64| sp[((r * in_nc + c) * 3) as usize + ch] as f64;
                let v = (1.0 - tb_frac) * ((1.0 - lr) * g(top, left) + lr * g(top, right))
                    + tb_frac * ((1.0 - lr) * g(bottom, left) + lr * g(bottom, right));
                dp[(((r * out_nc) + c) * 3) as usize + ch] = v as u8;
            }
            c += 1;
        }
    }
}

/// A float image plane inside a larger buffer (dlib's `sub_image` over a tensor channel).
pub(crate) struct Plane {
    pub offset: usize,
    pub stride: usize,
    pub rows: usize,
    pub cols: usize,
}

/// `resize_image` of one float plane into another of the same buffer (dlib's float SSE path,
/// which `tt::resize_bilinear` runs to build the detector's image pyramid).
pub(crate) fn resize_plane(buf: &mut [f32], src: &Plane, dst: &Plane) {
    let (in_nc, in_nr) = (src.cols as i64, src.rows as i64);
    let (out_nc, out_nr) = (dst.cols as i64, dst.rows as i64);
    if in_nc == 0 || in_nr == 0 || out_nc == 0 || out_nr == 0 {
        return;
    }
    let x_scale = (in_nc - 1) as f64 / ((out_nc - 1).max(1)) as f64;
    let y_scale = (in_nr - 1) as f64 / ((out_nr - 1).max(1)) as f64;
    let at = |r: i64, c: i64| src.offset + r as usize * src.stride + c as usize;
    let mut y = -y_scale;
    for r in 0..out_nr {
        y += y_scale;
        let top = y.floor() as i64;
        let bottom = (top + 1).min(in_nr - 1);
        let tb_frac = y - top as f64;
        let x = -4.0 * x_scale;
        let tb = tb_frac as f32;
        let inv_tb = (1.0 - tb_frac) as f32;
        let xs4 = (4.0 * x_scale) as f32;
        let mut lanes = [x as f32, (x + x_scale) as f32, (x + 2.0 * x_scale) as f32, (x + 3.0 * x_scale) as f32];
        let row_out = dst.offset + r as usize * dst.stride;
        let mut c = 0i64;
        loop {
            for l in &mut lanes {
                *l += xs4;
            }
            let left = lanes.map(|v| v as i32 as i64);
            if left[3] + 1 >= in_nc || c + 3 >= out_nc {
                break;
            }
            for lane in 0..4 {
                let lr = lanes[lane] - left[lane] as f32;
                let inv_lr = 1.0 - lr;
                let (l, rr) = (left[lane], left[lane] + 1);
                let v = inv_tb * inv_lr * buf[at(top, l)]
                    + inv_tb * lr * buf[at(top, rr)]
                    + tb * inv_lr * buf[at(bottom, l)]
                    + tb * lr * buf[at(bottom, rr)];
                buf[row_out + c as usize + lane] = v;
            }
            c += 4;
        }
        let mut x = -x_scale + c as f64 * x_scale;
        while c < out_nc {
            x += x_scale;
            let left = x.floor() as i64;
            let right = (left + 1).min(in_nc - 1);
            let lr = (x - left as f64) as f32;
            let top_mix = (1.0 - lr) * buf[at(top, left)] + lr * buf[at(top, right)];
            let bottom_mix = (1.0 - lr) * buf[at(bottom, left)] + lr * buf[at(bottom, right)];
            let v = (1.0 - tb_frac) * top_mix as f64 + tb_frac * bottom_mix as f64;
            buf[row_out + c as usize] = v as f32;
            c += 1;
        }
    }
}

/// `pyramid_down<2>` on an RGB image: a 5x5 binomial filter in 16-bit sums, every other row
/// and column kept.
pub(crate) fn pyramid_down2(img: &RgbImage) -> RgbImage {
    let (nc, nr) = (img.width() as usize, img.height() as usize);
    if nr <= 8 || nc <= 8 {
        return RgbImage::new(0, 0);
    }
    let tc = (nc - 3) / 2;
    let (out_r, out_c) = ((nr - 3) / 2, tc);
    let sp = img.as_raw();
    let mut temp = vec![0u16; nr * tc * 3];
    for r in 0..nr {
        for c in 0..tc {
            let oc = 2 * c;
            for ch in 0..3 {
                let p = |k: usize| sp[(r * nc + oc + k) * 3 + ch] as u16;
                temp[(r * tc + c) * 3 + ch] = p(0)
                    .wrapping_add(p(1).wrapping_mul(4))
                    .wrapping_add(p(2).wrapping_mul(6))
                    .wrapping_add(p(3).wrapping_mul(4))
                    .wrapping_add(p(4));
            }
        }
    }
    let mut out = RgbImage::new(out_c as u32, out_r as u32);
    let op = out.as_mut();
    let mut dr = 0;
    let mut r = 2;
    while r + 2 < nr && dr < out_r {
        for c in 0..tc {
            for ch in 0..3 {
                let t = |rr: usize| temp[(rr * tc + c) * 3 + ch];
                let v = t(r - 2)
                    .wrapping_add(t(r - 1).wrapping_mul(4))
                    .wrapping_add(t(r).wrapping_mul(6))
                    .wrapping_add(t(r + 1).wrapping_mul(4))
                    .wrapping_add(t(r + 2));
                op[(dr * out_c + c) * 3 + ch] = (v / 256) as u8;
            }
        }
        dr += 1;
        r += 2;
    }
    out
}

/// A window of an RGB image (dlib's `sub_image`), clipped to the image.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Window {
    pub left: i64,
    pub top: i64,
    pub cols: i64,
    pub rows: i64,
}

/// `transform_image(sub_image(img, window), out, interpolate_bilinear(), map)`: each output
/// pixel takes the bilinear value at `map(c, r)` in the window, black where that falls off it.
pub(crate) fn transform_bilinear(img: &RgbImage, window: Window, out_size: u32, map: &Affine) -> RgbImage {
    let mut out = RgbImage::new(out_size, out_size);
    let (w, sp) = (img.width() as i64, img.as_raw());
    for r in 0..out_size {
        for c in 0..out_size {
            let p = map.apply([c as f64, r as f64]);
            let left = p[0].floor() as i64;
            let top = p[1].floor() as i64;
            if !(left >= 0 && top >= 0 && left + 1 < window.cols && top + 1 < window.rows) {
                continue;
            }
            let lr = p[0] - left as f64;
            let tb = p[1] - top as f64;
            let at =
                |rr: i64, cc: i64, ch: usize| sp[(((window.top + rr) * w + window.left + cc) * 3) as usize + ch] as f64;
            let pixel = out.get_pixel_mut(c, r);
            for ch in 0..3 {
                let v = (1.0 - tb) * ((1.0 - lr) * at(top, left, ch) + lr * at(top, left + 1, ch))
                    + tb * ((1.0 - lr) * at(top + 1, left, ch) + lr * at(top + 1, left + 1, ch));
                pixel[ch] = v as u8;
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pyramid_up_has_dlibs_odd_size() {
        // dlib.pyramid_down(2).rect_up(rectangle(0,0,6,4)) == [(3, 2) (15, 10)]
        let up = pyramid_up(&RgbImage::new(7, 5));
        assert_eq!((up.width(), up.height()), (16, 11));
    }

    #[test]
    fn similarity_transform_recovers_a_rotation_and_scale() {
        let t = Affine { m: [[0.6, -0.8], [0.8, 0.6]], b: [3.0, -2.0] };
        let from = [[0.0, 0.0], [10.0, 0.0], [0.0, 5.0], [7.0, 7.0]];
        let to: Vec<[f64; 2]> = from.iter().map(|p| t.apply(*p)).collect();
        let found = similarity_transform(&from, &to);
        for k in 0..2 {
            assert!((found.b[k] - t.b[k]).abs() < 1e-9);
            for j in 0..2 {
                assert!((found.m[k][j] - t.m[k][j]).abs() < 1e-9);
            }
        }
        let a = affine_from_3(
            [[0.0, 0.0], [1.0, 0.0], [0.0, 1.0]],
            [t.apply([0.0, 0.0]), t.apply([1.0, 0.0]), t.apply([0.0, 1.0])],
        );
        assert!((a.m[1][0] - 0.8).abs() < 1e-12 && (a.b[0] - 3.0).abs() < 1e-12);
    }
}
