//! Linear layers in 8-bit integers (`--precision int8`), dynamically quantised as ONNX
//! Runtime's and PyTorch's dynamic quantisation do, for CPUs with AVX-512 VNNI (AMD Zen 4 and
//! later, Intel Cascade Lake and later). One `vpdpbusd` does 64 multiply-adds of bytes into
//! 32-bit sums, four times an f32 FMA's 16.
//!
//! - The weight is quantised once, per output column (symmetric: its largest magnitude maps
//!   to 127), and laid out as [`super::packed`] says, each quad of input positions holding the
//!   32 columns' four bytes side by side.
//! - Each input row is quantised when it arrives (dynamic), to unsigned bytes with its own
//!   scale and zero point (asymmetric: its range, widened to hold 0, maps onto 0..=255).
//!   ONNX Runtime and PyTorch take one scale for the whole input; one a row costs nothing
//!   more here and keeps a row of small values from losing its precision to another row's
//!   large ones.
//! - A row's sums become outputs as `scale_row · scale_column · (sum − zero_row · Σ column)`:
//!   exact integer sums, then one rounding to f32.
//!
//! On other CPUs the caller keeps f32 (see [`available`]).

use super::packed::{Format, PANEL, Panels};

/// Whether this CPU runs the kernel.
pub(crate) fn available() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        static AVAILABLE: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
        *AVAILABLE.get_or_init(|| {
            std::arch::is_x86_feature_detected!("avx512f") && std::arch::is_x86_feature_detected!("avx512vnni")
        })
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// The int8 format: each column's weight scale and the sum of its quantised weights.
pub(super) struct Int8 {
    scales: Vec<f32>,
    column_sums: Vec<i32>,
}

/// A weight laid out in int8.
pub(super) type Int8Panels = Panels<Int8>;

/// A row's quantisation: `x ≈ scale · (q − zero)`.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub(super) struct RowScale {
    scale: f32,
    zero: i32,
}

/// Quantises `weight_t` (`[k, n]`, row-major) per column and lays it out; `None` when its
/// length is not `k × n` or the CPU has no AVX-512 VNNI.
pub(super) fn pack(weight_t: &[f32], k: usize, n: usize) -> Option<Int8Panels> {
    if weight_t.len() != k * n || k == 0 || n == 0 || !available() {
        return None;
    }
    let (quantised, format) = quantise_columns(weight_t, n);
    Some(Panels::lay_out(format, k, n, |kk, j| quantised[kk * n + j] as u8))
}

/// Each column's values as multiples of its scale (its largest magnitude / 127; 1 for a
/// column of zeros), with the scales and the sums of the multiples.
fn quantise_columns(weight_t: &[f32], n: usize) -> (Vec<i8>, Int8) {
    let mut largest = vec![0f32; n];
    for row in weight_t.chunks_exact(n) {
        for (m, &w) in largest.iter_mut().zip(row) {
            *m = m.max(w.abs());
        }
    }
    let scales: Vec<f32> = largest.iter().map(|&m| if m > 0.0 { m / 127.0 } else { 1.0 }).collect();
    let quantised: Vec<i8> = weight_t
        .iter()
        .enumerate()
        .map(|(i, &w)| (w / scales[i % n]).round_ties_even().clamp(-127.0, 127.0) as i8)
        .collect();
    let mut column_sums = vec![0i32; n];
    for row in quantised.chunks_exact(n) {
        for (s, &q) in column_sums.iter_mut().zip(row) {
            *s += i32::from(q);
        }
    }
    (quantised, Int8 { scales, column_sums })
}

/// A row's scale and zero point: its range, widened to hold 0, onto 0..=255.
fn row_scale(src: &[f32]) -> RowScale {
    let (lo, hi) = min_max(src);
    let (lo, hi) = (lo.min(0.0), hi.max(0.0));
    let scale = if hi > lo { (hi - lo) / 255.0 } else { 1.0 };
    RowScale { scale, zero: ((-lo / scale).round_ties_even() as i32).clamp(0, 255) }
}

/// One value quantised as [`quantise_row`] does.
fn quantise(v: f32, inverse: f32, zero: i32) -> u8 {
    ((v * inverse).round_ties_even() as i32 + zero).clamp(0, 255) as u8
}

/// The least and greatest of `src` (NaN ignored; 0 and 0 when empty).
fn min_max(src: &[f32]) -> (f32, f32) {
    #[cfg(target_arch = "x86_64")]
    if available() && src.len() >= 16 {
        // SAFETY: the CPU has AVX-512 F (checked by `available`).
        return unsafe { min_max_avx512(src) };
    }
    src.iter().fold((0f32, 0f32), |(lo, hi), &v| (lo.min(v), hi.max(v)))
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
fn min_max_avx512(src: &[f32]) -> (f32, f32) {
    use std::arch::x86_64::{
        _mm512_loadu_ps, _mm512_max_ps, _mm512_min_ps, _mm512_reduce_max_ps, _mm512_reduce_min_ps, _mm512_setzero_ps,
    };
    let (mut lo, mut hi) = (_mm512_setzero_ps(), _mm512_setzero_ps());
    let whole = src.len() / 16 * 16;
    for i in (0..whole).step_by(16) {
        // SAFETY: i + 16 <= len.
        let v = unsafe { _mm512_loadu_ps(src.as_ptr().add(i)) };
        // With a NaN in `v`, min/max return their second operand: the running value.
        lo = _mm512_min_ps(v, lo);
        hi = _mm512_max_ps(v, hi);
    }
    let (lo, hi) = (_mm512_reduce_min_ps(lo), _mm512_reduce_max_ps(hi));
    src[whole..].iter().fold((lo, hi), |(lo, hi), &v| (lo.min(v), hi.max(v)))
}

/// `src` quantised at `row` into `dst` (as long).
fn quantise_row(src: &[f32], row: RowScale, dst: &mut [u8]) {
    let inverse = 1.0 / row.scale;
    let mut done = 0;
    #[cfg(target_arch = "x86_64")]
    if available() {
        // SAFETY: the CPU has AVX-512 F (checked by `available`).
        done = unsafe { quantise_avx512(src, inverse, row.zero, dst) };
    }
    for (d, &v) in dst[done..].iter_mut().zip(&src[done..]) {
        *d = quantise(v, inverse, row.zero);
    }
}

/// [`quantise`] 16 values at a time (rounding to nearest even, as the scalar one); returns how
/// many it wrote.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
fn quantise_avx512(src: &[f32], inverse: f32, zero: i32, dst: &mut [u8]) -> usize {
    use std::arch::x86_64::{
        __m128i, _mm_storeu_si128, _mm512_add_epi32, _mm512_cvtps_epi32, _mm512_cvtusepi32_epi8, _mm512_loadu_ps,
        _mm512_max_epi32, _mm512_mul_ps, _mm512_set1_epi32, _mm512_set1_ps, _mm512_setzero_si512,
    };
    let len = src.len().min(dst.len());
    let whole = len / 16 * 16;
    let (inverse, zero) = (_mm512_set1_ps(inverse), _mm512_set1_epi32(zero));
    for i in (0..whole).step_by(16) {
        // SAFETY: i + 16 <= len for both slices. The conversion rounds to nearest even (the
        // default rounding mode); below 0 clamps to 0 and above 255 saturates to 255.
        unsafe {
            let q = _mm512_cvtps_epi32(_mm512_mul_ps(_mm512_loadu_ps(src.as_ptr().add(i)), inverse));
            let q = _mm512_max_epi32(_mm512_add_epi32(q, zero), _mm512_setzero_si512());
            _mm_storeu_si128(dst.as_mut_ptr().add(i).cast::<__m128i>(), _mm512_cvtusepi32_epi8(q));
        }
    }
    whole
}

impl Format for Int8 {
    const GROUP: usize = 4;
    type Value = u8;
    type Sum = i32;
    type Row = RowScale;

    fn convert(&self, src: &[f32], dst: &mut [u8]) -> RowScale {
        let row = row_scale(src);
        quantise_row(src, row, dst);
        row
    }

    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx512f,avx512vnni")]
    unsafe fn tile<const R: usize>(
        chunk: &[u8],
        a: &[u8],
        stride: usize,
        count: usize,
        out: &mut [i32],
        accumulate: bool,
    ) {
        use std::arch::x86_64::{
            __m512i, _mm512_dpbusd_epi32, _mm512_loadu_si512, _mm512_set1_epi32, _mm512_setzero_si512,
            _mm512_storeu_si512,
        };
        let mut acc: [[__m512i; 2]; R] = [[_mm512_setzero_si512(); 2]; R];
        if accumulate {
            for (r, acc) in acc.iter_mut().enumerate() {
                // SAFETY: out holds R × 32 values (checked by the caller).
                unsafe {
                    acc[0] = _mm512_loadu_si512(out.as_ptr().add(r * PANEL).cast());
                    acc[1] = _mm512_loadu_si512(out.as_ptr().add(r * PANEL + 16).cast());
                }
            }
        }
        let (w, xs) = (chunk.as_ptr(), a.as_ptr());
        for q in 0..count {
            // SAFETY: q < count, so both loads lie inside the chunk (count × 128 bytes) and each
            // row's quad inside `a` (checked by the caller).
            unsafe {
                let w0 = _mm512_loadu_si512(w.add(q * 4 * PANEL).cast());
                let w1 = _mm512_loadu_si512(w.add(q * 4 * PANEL + 64).cast());
                for (r, acc) in acc.iter_mut().enumerate() {
                    let quad = _mm512_set1_epi32(xs.add(r * 4 * stride + 4 * q).cast::<i32>().read_unaligned());
                    acc[0] = _mm512_dpbusd_epi32(acc[0], quad, w0);
                    acc[1] = _mm512_dpbusd_epi32(acc[1], quad, w1);
                }
            }
        }
        for (r, acc) in acc.iter().enumerate() {
            // SAFETY: out holds R × 32 values.
            unsafe {
                _mm512_storeu_si512(out.as_mut_ptr().add(r * PANEL).cast(), acc[0]);
                _mm512_storeu_si512(out.as_mut_ptr().add(r * PANEL + 16).cast(), acc[1]);
            }
        }
    }

    fn finish(&self, sums: &[i32], row: RowScale, first: usize, out: &mut [f32]) {
        let columns = first..first + out.len();
        let (scales, column_sums) = (&self.scales[columns.clone()], &self.column_sums[columns]);
        let mut done = 0;
        #[cfg(target_arch = "x86_64")]
        if available() {
            // SAFETY: the CPU has AVX-512 F (checked by `available`).
            done = unsafe { finish_avx512(sums, row, scales, column_sums, out) };
        }
        for (((o, &s), &w), &c) in out.iter_mut().zip(sums).zip(scales).zip(column_sums).skip(done) {
            *o = row.scale * w * (s - row.zero * c) as f32;
        }
    }
}

/// [`Format::finish`] 16 outputs at a time, with the same operations in the same order (so the
/// same results); returns how many it wrote. Whole-register stores also let the epilogue's
/// whole-register loads of the same outputs be forwarded from the stores, where the narrower
/// stores of the scalar loop made each of them wait for the cache.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
fn finish_avx512(sums: &[i32], row: RowScale, scales: &[f32], column_sums: &[i32], out: &mut [f32]) -> usize {
    use std::arch::x86_64::{
        _mm512_cvtepi32_ps, _mm512_loadu_ps, _mm512_loadu_si512, _mm512_mul_ps, _mm512_mullo_epi32, _mm512_set1_epi32,
        _mm512_set1_ps, _mm512_storeu_ps, _mm512_sub_epi32,
    };
    let len = out.len().min(sums.len()).min(scales.len()).min(column_sums.len());
    let whole = len / 16 * 16;
    let (scale, zero) = (_mm512_set1_ps(row.scale), _mm512_set1_epi32(row.zero));
    for i in (0..whole).step_by(16) {
        // SAFETY: i + 16 <= len for every slice.
        unsafe {
            let c = _mm512_loadu_si512(column_sums.as_ptr().add(i).cast());
            let s = _mm512_sub_epi32(_mm512_loadu_si512(sums.as_ptr().add(i).cast()), _mm512_mullo_epi32(zero, c));
            let w = _mm512_mul_ps(scale, _mm512_loadu_ps(scales.as_ptr().add(i)));
            _mm512_storeu_ps(out.as_mut_ptr().add(i), _mm512_mul_ps(w, _mm512_cvtepi32_ps(s)));
        }
    }
    whole
}

#[cfg(test)]
mod tests {
    use super::super::packed::{TEST_SHAPES, test_values};
    use super::*;

    /// The product as the format defines it, one value at a time: each row quantised by its
    /// own range, each column by its largest magnitude, the integer sums exact (i64).
    fn reference(x: &[f32], w: &[f32], m: usize, k: usize, n: usize) -> Vec<f32> {
        let (wq, format) = quantise_columns(w, n);
        let mut ys = vec![0f32; m * n];
        for i in 0..m {
            let src = &x[i * k..][..k];
            let (lo, hi) = src.iter().fold((0f32, 0f32), |(lo, hi), &v| (lo.min(v), hi.max(v)));
            let scale = if hi > lo { (hi - lo) / 255.0 } else { 1.0 };
            let zero = ((-lo / scale).round_ties_even() as i32).clamp(0, 255);
            let xq: Vec<i64> = src.iter().map(|&v| i64::from(quantise(v, 1.0 / scale, zero))).collect();
            for j in 0..n {
                let sum: i64 = (0..k).map(|kk| (xq[kk] - i64::from(zero)) * i64::from(wq[kk * n + j])).sum();
                ys[i * n + j] = scale * format.scales[j] * sum as f32;
            }
        }
        ys
    }

    #[test]
    fn panels_times_rows_is_the_product_of_the_quantised_values() {
        if !available() {
            eprintln!("this CPU has no AVX-512 VNNI: the kernel is not offered here");
            return;
        }
        for (m, k, n) in TEST_SHAPES {
            // Rows of mixed signs, all positive (after an activation), and of one value.
            let mut x = test_values(m * k, 3 + m as u64);
            x.chunks_mut(k).enumerate().for_each(|(i, row)| match i % 3 {
                1 => row.iter_mut().for_each(|v| *v = v.abs() * 4.0),
                2 if i % 6 == 2 => row.fill(0.0),
                _ => {}
            });
            let w = test_values(k * n, 11 + n as u64);
            let panels = pack(&w, k, n).unwrap();
            let got = panels.product(&x, m, &|_, _| {});
            let want = reference(&x, &w, m, k, n);
            for (i, (g, e)) in got.iter().zip(&want).enumerate() {
                assert!((g - e).abs() <= 1e-6 * e.abs() + 1e-7, "[{m},{k},{n}] at {i}: {g} vs {e}");
            }
            // The epilogue sees every output once, told its column.
            let column = |out: &mut [f32], first: usize| {
                out.iter_mut().enumerate().for_each(|(c, v)| *v = (first + c) as f32 - *v);
            };
            let shifted = panels.product(&x, m, &column);
            for (i, (s, g)) in shifted.iter().zip(&got).enumerate() {
                assert_eq!(*s, (i % n) as f32 - g, "[{m},{k},{n}] at {i}");
            }
            // And near the f32 product: an output's error is at most half a step of each
            // operand over its k terms; on uniform values it is far below that.
            let exact: Vec<f32> =
                (0..m * n).map(|o| (0..k).map(|kk| x[o / n * k + kk] * w[kk * n + o % n]).sum()).collect();
            let worst = got.iter().zip(&exact).map(|(g, e)| (g - e).abs()).fold(0f32, f32::max);
            assert!(worst <= 0.05 * (k as f32).sqrt(), "[{m},{k},{n}]: {worst} from the f32 product");
        }
    }

    #[test]
    fn quantising_a_row_rounds_like_the_scalar_formula() {
        if !available() {
            return;
        }
        let src: Vec<f32> = (0..70).map(|i| (i as f32 - 20.0) * 0.37 + 0.5 * (i % 3) as f32).collect();
        let row = row_scale(&src);
        let mut dst = vec![0u8; src.len()];
        quantise_row(&src, row, &mut dst);
        let want: Vec<u8> = src.iter().map(|&v| quantise(v, 1.0 / row.scale, row.zero)).collect();
        assert_eq!(dst, want);
        assert_eq!(dst.iter().min(), Some(&0));
        assert_eq!(dst.iter().max(), Some(&255));
        assert_eq!(min_max(&src), src.iter().fold((0f32, 0f32), |(l, h), &v| (l.min(v), h.max(v))));
    }

    #[test]
    fn packing_refuses_a_weight_of_the_wrong_size() {
        assert!(pack(&[0.0; 5], 2, 3).is_none());
        assert!(pack(&[], 0, 3).is_none());
    }
}
