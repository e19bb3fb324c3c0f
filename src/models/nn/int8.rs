//! Linear layers in 8-bit integers (`--precision int8`), dynamically quantised as ONNX
//! Runtime's and PyTorch's dynamic quantisation do. Three kernels on x86-64 and three on
//! aarch64, picked at run time (see [`super::cpu`]):
//!
//! - AVX-512 VNNI (AMD Zen 4 and later, Intel Cascade Lake and later): one `vpdpbusd` does 64
//!   multiply-adds of bytes into 32-bit sums, four times an f32 FMA's 16.
//! - AVX-VNNI (Intel Alder Lake and later, AMD Zen 5 without AVX-512): the same instruction in
//!   its 32-byte VEX form.
//! - AVX2: `vpmaddubsw` (pairs of unsigned × signed bytes into 16-bit sums, saturating) and
//!   `vpmaddwd` by ones (pairs of those into 32 bits). Two products of 255 × 127 overflow 16
//!   bits, so for this kernel a column's scale is set by its largest *pair* of neighbouring
//!   weights (`|w₂ₚ| + |w₂ₚ₊₁|` maps to 127), not its largest weight: no pair can then
//!   saturate and the sums stay exact, at the cost of a fraction of a bit (usually the
//!   largest weight's neighbour is small). Plain 7-bit weights, or 7-bit inputs, failed the
//!   fidelity gate (an image of the clip-tiny-p32 fixture at cosine 0.9989 and 0.9988).
//! - aarch64 with the int8 matrix multiply (i8mm: Apple M2 and later, Neoverse V1/N2): `smmla`
//!   (a 2×8 by 8×2 product of signed bytes, 32 multiply-adds, into a 2×2 block of sums); with
//!   only the dot-product extension, `sdot` (16 multiply-adds of signed bytes into four 32-bit
//!   sums); without either, NEON's widening multiplies (see [`super::neon`]). All three multiply
//!   signed bytes, so an input row's bytes are shifted by −128 after quantising, and its zero
//!   point with them: the integer sums, and so the outputs, are those of the unsigned inputs.
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

use super::cpu::{Feature, has};
#[cfg(target_arch = "x86_64")]
use super::kernels::avx512f;
use super::packed::{Format, PANEL, Panels};

#[cfg(target_arch = "aarch64")]
const _: () = assert!(super::neon::PANEL == PANEL);

/// The int8 kernels.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kernel {
    /// `vpdpbusd` on 64 bytes.
    Avx512Vnni,
    /// `vpdpbusd` on 32 bytes (VEX).
    AvxVnni,
    /// `vpmaddubsw` + `vpmaddwd` on 32 bytes, weights scaled by their largest pair.
    Avx2,
    /// aarch64 with i8mm: `smmla` on two rows × two columns × 8 bytes, inputs shifted to
    /// signed bytes.
    I8mm,
    /// aarch64: `sdot` on 16 bytes, inputs shifted to signed bytes.
    Sdot,
    /// aarch64 without `sdot`: `smull` + `sadalp`, inputs shifted to signed bytes.
    Widening,
}

impl Kernel {
    /// The largest quantised input: an input row's range maps onto `0..=levels`.
    fn input_levels(self) -> i32 {
        255
    }

    /// Whether a column's scale comes from its largest pair of neighbouring weights (see the
    /// module's doc) rather than its largest weight.
    fn scales_by_pairs(self) -> bool {
        self == Kernel::Avx2
    }

    /// Whether it multiplies signed input bytes (the quantised bytes less 128).
    fn signed_inputs(self) -> bool {
        matches!(self, Kernel::I8mm | Kernel::Sdot | Kernel::Widening)
    }

    /// Whether this CPU runs it (and `CLIPDEX_CPU_FEATURES` leaves it on).
    pub(crate) fn runs(self) -> bool {
        has(match self {
            Kernel::Avx512Vnni => Feature::Avx512Vnni,
            Kernel::AvxVnni => Feature::AvxVnni,
            Kernel::Avx2 => Feature::Avx2,
            Kernel::I8mm => Feature::I8mm,
            Kernel::Sdot => Feature::Dotprod,
            Kernel::Widening => Feature::Neon,
        })
    }
}

/// Every kernel, fastest first.
const KERNELS: [Kernel; 6] =
    [Kernel::Avx512Vnni, Kernel::AvxVnni, Kernel::Avx2, Kernel::I8mm, Kernel::Sdot, Kernel::Widening];

/// The fastest kernel this CPU runs, if any.
pub(crate) fn kernel() -> Option<Kernel> {
    KERNELS.into_iter().find(|k| k.runs())
}

/// Whether this CPU runs a kernel.
pub(crate) fn available() -> bool {
    kernel().is_some()
}

/// The int8 format: each column's weight scale and the sum of its quantised weights, and the
/// kernel they were quantised for.
pub(super) struct Int8 {
    scales: Vec<f32>,
    column_sums: Vec<i32>,
    kernel: Kernel,
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
/// length is not `k × n` or the CPU has no int8 kernel.
pub(super) fn pack(weight_t: &[f32], k: usize, n: usize) -> Option<Int8Panels> {
    pack_for(kernel()?, weight_t, k, n)
}

/// [`pack`] for `kernel`; `None` also when this CPU does not run it.
fn pack_for(kernel: Kernel, weight_t: &[f32], k: usize, n: usize) -> Option<Int8Panels> {
    if weight_t.len() != k * n || k == 0 || n == 0 || !kernel.runs() {
        return None;
    }
    let (quantised, format) = quantise_columns(weight_t, n, kernel);
    Some(Panels::lay_out(format, k, n, |kk, j| quantised[kk * n + j] as u8))
}

/// Each column's values as multiples of its scale (its largest magnitude / 127, or for the
/// AVX2 kernel its largest sum of a pair's magnitudes / 127; 1 for a column of zeros), with
/// the scales and the sums of the multiples.
fn quantise_columns(weight_t: &[f32], n: usize, kernel: Kernel) -> (Vec<i8>, Int8) {
    let limit = 127.0;
    let mut largest = vec![0f32; n];
    let rows = if kernel.scales_by_pairs() { 2 } else { 1 };
    for pair in weight_t.chunks(rows * n) {
        for (c, m) in largest.iter_mut().enumerate() {
            let magnitude: f32 = pair.chunks_exact(n).map(|row| row[c].abs()).sum();
            *m = m.max(magnitude);
        }
    }
    let scales: Vec<f32> = largest.iter().map(|&m| if m > 0.0 { m / limit } else { 1.0 }).collect();
    let quantised: Vec<i8> = weight_t
        .iter()
        .enumerate()
        .map(|(i, &w)| (w / scales[i % n]).round_ties_even().clamp(-limit, limit) as i8)
        .collect();
    let mut column_sums = vec![0i32; n];
    for row in quantised.chunks_exact(n) {
        for (s, &q) in column_sums.iter_mut().zip(row) {
            *s += i32::from(q);
        }
    }
    (quantised, Int8 { scales, column_sums, kernel })
}

/// A row's scale and zero point: its range, widened to hold 0, onto 0..=levels.
fn row_scale(src: &[f32], levels: i32) -> RowScale {
    let (lo, hi) = min_max(src);
    let (lo, hi) = (lo.min(0.0), hi.max(0.0));
    let scale = if hi > lo { (hi - lo) / levels as f32 } else { 1.0 };
    RowScale { scale, zero: ((-lo / scale).round_ties_even() as i32).clamp(0, levels) }
}

/// One value quantised as [`quantise_row`] does.
fn quantise(v: f32, inverse: f32, zero: i32, levels: i32) -> u8 {
    ((v * inverse).round_ties_even() as i32 + zero).clamp(0, levels) as u8
}

/// The least and greatest of `src` (NaN ignored; 0 and 0 when empty).
fn min_max(src: &[f32]) -> (f32, f32) {
    #[cfg(target_arch = "x86_64")]
    if avx512f() && src.len() >= 16 {
        // SAFETY: the CPU has AVX-512 F (checked by `avx512f`).
        return unsafe { min_max_avx512(src) };
    } else if super::kernels::avx2() && src.len() >= 8 {
        // SAFETY: the CPU has AVX2 (checked by `avx2`).
        return unsafe { min_max_avx2(src) };
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

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
fn min_max_avx2(src: &[f32]) -> (f32, f32) {
    use std::arch::x86_64::{_mm256_loadu_ps, _mm256_max_ps, _mm256_min_ps, _mm256_setzero_ps, _mm256_storeu_ps};
    let (mut lo, mut hi) = (_mm256_setzero_ps(), _mm256_setzero_ps());
    let whole = src.len() / 8 * 8;
    for i in (0..whole).step_by(8) {
        // SAFETY: i + 8 <= len.
        let v = unsafe { _mm256_loadu_ps(src.as_ptr().add(i)) };
        // With a NaN in `v`, min/max return their second operand: the running value.
        lo = _mm256_min_ps(v, lo);
        hi = _mm256_max_ps(v, hi);
    }
    let (mut los, mut his) = ([0f32; 8], [0f32; 8]);
    // SAFETY: each array holds 8 values.
    unsafe {
        _mm256_storeu_ps(los.as_mut_ptr(), lo);
        _mm256_storeu_ps(his.as_mut_ptr(), hi);
    }
    let (lo, hi) = los.iter().zip(&his).fold((0f32, 0f32), |(l, h), (&a, &b)| (l.min(a), h.max(b)));
    src[whole..].iter().fold((lo, hi), |(lo, hi), &v| (lo.min(v), hi.max(v)))
}

/// `src` quantised at `row` onto `0..=levels` into `dst` (as long).
fn quantise_row(src: &[f32], row: RowScale, levels: i32, dst: &mut [u8]) {
    let inverse = 1.0 / row.scale;
    #[cfg(target_arch = "x86_64")]
    let done = if avx512f() && levels == 255 {
        // SAFETY: the CPU has AVX-512 F (checked by `avx512f`).
        unsafe { quantise_avx512(src, inverse, row.zero, dst) }
    } else if super::kernels::avx2() {
        // SAFETY: the CPU has AVX2 (checked by `avx2`).
        unsafe { quantise_avx2(src, inverse, row.zero, levels, dst) }
    } else {
        0
    };
    #[cfg(not(target_arch = "x86_64"))]
    let done = 0;
    for (d, &v) in dst[done..].iter_mut().zip(&src[done..]) {
        *d = quantise(v, inverse, row.zero, levels);
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

/// [`quantise`] 8 values at a time (rounding to nearest even, as the scalar one); returns how
/// many it wrote.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
fn quantise_avx2(src: &[f32], inverse: f32, zero: i32, levels: i32, dst: &mut [u8]) -> usize {
    use std::arch::x86_64::{
        _mm256_add_epi32, _mm256_cvtps_epi32, _mm256_extract_epi32, _mm256_loadu_ps, _mm256_max_epi32,
        _mm256_min_epi32, _mm256_mul_ps, _mm256_packus_epi16, _mm256_packus_epi32, _mm256_set1_epi32, _mm256_set1_ps,
        _mm256_setzero_si256,
    };
    let len = src.len().min(dst.len());
    let whole = len / 8 * 8;
    let (inverse, zero) = (_mm256_set1_ps(inverse), _mm256_set1_epi32(zero));
    for i in (0..whole).step_by(8) {
        // SAFETY: i + 8 <= len for both slices. The conversion rounds to nearest even (the
        // default rounding mode); the clamp to 0..=levels (at most 255) makes the packs below
        // exact.
        unsafe {
            let q = _mm256_cvtps_epi32(_mm256_mul_ps(_mm256_loadu_ps(src.as_ptr().add(i)), inverse));
            let q = _mm256_add_epi32(q, zero);
            let q = _mm256_min_epi32(_mm256_max_epi32(q, _mm256_setzero_si256()), _mm256_set1_epi32(levels));
            // Within each 128-bit lane: 4 words, then 4 bytes, at the lane's start.
            let q = _mm256_packus_epi16(_mm256_packus_epi32(q, q), _mm256_packus_epi32(q, q));
            let (low, high) = (_mm256_extract_epi32::<0>(q) as u32, _mm256_extract_epi32::<4>(q) as u32);
            dst.as_mut_ptr().add(i).cast::<u32>().write_unaligned(low.to_le());
            dst.as_mut_ptr().add(i + 4).cast::<u32>().write_unaligned(high.to_le());
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
        let levels = self.kernel.input_levels();
        let mut row = row_scale(src, levels);
        quantise_row(src, row, levels, dst);
        if self.kernel.signed_inputs() {
            // q − 128 as a signed byte is q with its top bit flipped; Σ (q − 128)·w less
            // (zero − 128)·Σ w is Σ q·w less zero·Σ w.
            dst.iter_mut().for_each(|q| *q ^= 0x80);
            row.zero -= 128;
        }
        row
    }

    #[cfg(target_arch = "x86_64")]
    unsafe fn tile<const R: usize>(
        &self,
        chunk: &[u8],
        a: &[u8],
        stride: usize,
        count: usize,
        out: &mut [i32],
        accumulate: bool,
    ) {
        // SAFETY (each arm): `pack_for` checked that the CPU runs the kernel; the caller, the
        // bounds.
        unsafe {
            match self.kernel {
                Kernel::Avx512Vnni => tile_avx512::<R>(chunk, a, stride, count, out, accumulate),
                Kernel::AvxVnni => tile_avxvnni::<R>(chunk, a, stride, count, out, accumulate),
                Kernel::Avx2 => tile_avx2::<R>(chunk, a, stride, count, out, accumulate),
                Kernel::I8mm | Kernel::Sdot | Kernel::Widening => {
                    unreachable!("{:?} is only detected on aarch64", self.kernel)
                }
            }
        }
    }

    #[cfg(target_arch = "aarch64")]
    unsafe fn tile<const R: usize>(
        &self,
        chunk: &[u8],
        a: &[u8],
        stride: usize,
        count: usize,
        out: &mut [i32],
        accumulate: bool,
    ) {
        use super::neon::{tile_sdot, tile_smmla, tile_widening};
        // SAFETY (each arm): `pack_for` checked that the CPU runs the kernel; the caller, the
        // bounds.
        unsafe {
            match self.kernel {
                Kernel::I8mm => tile_smmla::<R>(chunk, a, stride, count, out, accumulate),
                Kernel::Sdot => tile_sdot::<R>(chunk, a, stride, count, out, accumulate),
                Kernel::Widening => tile_widening::<R>(chunk, a, stride, count, out, accumulate),
                other => unreachable!("{other:?} is only detected on x86-64"),
            }
        }
    }

    fn finish(&self, sums: &[i32], row: RowScale, first: usize, out: &mut [f32]) {
        let columns = first..first + out.len();
        let (scales, column_sums) = (&self.scales[columns.clone()], &self.column_sums[columns]);
        #[cfg(target_arch = "x86_64")]
        let done = if avx512f() {
            // SAFETY: the CPU has AVX-512 F (checked by `avx512f`).
            unsafe { finish_avx512(sums, row, scales, column_sums, out) }
        } else if super::kernels::avx2() {
            // SAFETY: the CPU has AVX2 (checked by `avx2`).
            unsafe { finish_avx2(sums, row, scales, column_sums, out) }
        } else {
            0
        };
        #[cfg(not(target_arch = "x86_64"))]
        let done = 0;
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

/// [`finish_avx512`] 8 outputs at a time.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
fn finish_avx2(sums: &[i32], row: RowScale, scales: &[f32], column_sums: &[i32], out: &mut [f32]) -> usize {
    use std::arch::x86_64::{
        __m256i, _mm256_cvtepi32_ps, _mm256_loadu_ps, _mm256_loadu_si256, _mm256_mul_ps, _mm256_mullo_epi32,
        _mm256_set1_epi32, _mm256_set1_ps, _mm256_storeu_ps, _mm256_sub_epi32,
    };
    let len = out.len().min(sums.len()).min(scales.len()).min(column_sums.len());
    let whole = len / 8 * 8;
    let (scale, zero) = (_mm256_set1_ps(row.scale), _mm256_set1_epi32(row.zero));
    for i in (0..whole).step_by(8) {
        // SAFETY: i + 8 <= len for every slice.
        unsafe {
            let c = _mm256_loadu_si256(column_sums.as_ptr().add(i).cast::<__m256i>());
            let s = _mm256_loadu_si256(sums.as_ptr().add(i).cast::<__m256i>());
            let s = _mm256_sub_epi32(s, _mm256_mullo_epi32(zero, c));
            let w = _mm256_mul_ps(scale, _mm256_loadu_ps(scales.as_ptr().add(i)));
            _mm256_storeu_ps(out.as_mut_ptr().add(i), _mm256_mul_ps(w, _mm256_cvtepi32_ps(s)));
        }
    }
    whole
}

/// The AVX-512 VNNI tile: `R` rows × 32 columns in `2R` registers.
///
/// # Safety
/// The CPU has AVX-512 F and VNNI; the bounds of [`Format::tile`] hold.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512vnni")]
unsafe fn tile_avx512<const R: usize>(
    chunk: &[u8],
    a: &[u8],
    stride: usize,
    count: usize,
    out: &mut [i32],
    accumulate: bool,
) {
    use std::arch::x86_64::{
        __m512i, _mm512_dpbusd_epi32, _mm512_loadu_si512, _mm512_set1_epi32, _mm512_setzero_si512, _mm512_storeu_si512,
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

/// The 32-byte tiles: rows three at a time (12 sums in registers, of 16), each
/// `acc = $madd(acc, quad of input bytes, 8 columns' quads of weight bytes)`.
macro_rules! tile_32_bytes {
    ($name:ident, $rows:ident, $features:literal, $madd:expr) => {
        /// # Safety
        /// The CPU has the features it is compiled for; the bounds of [`Format::tile`] hold.
        #[cfg(target_arch = "x86_64")]
        #[target_feature(enable = $features)]
        unsafe fn $name<const R: usize>(
            chunk: &[u8],
            a: &[u8],
            stride: usize,
            count: usize,
            out: &mut [i32],
            accumulate: bool,
        ) {
            let mut first = 0;
            while first < R {
                let a = &a[first * 4 * stride..];
                let out = &mut out[first * PANEL..];
                // SAFETY: the rows from `first` on lie inside `a` and `out` (the caller's
                // bounds for R rows).
                unsafe {
                    match R - first {
                        1 => $rows::<1>(chunk, a, stride, count, out, accumulate),
                        2 => $rows::<2>(chunk, a, stride, count, out, accumulate),
                        _ => $rows::<3>(chunk, a, stride, count, out, accumulate),
                    }
                }
                first += 3;
            }
        }

        /// # Safety
        /// As the tile's, for `N` rows.
        #[cfg(target_arch = "x86_64")]
        #[target_feature(enable = $features)]
        unsafe fn $rows<const N: usize>(
            chunk: &[u8],
            a: &[u8],
            stride: usize,
            count: usize,
            out: &mut [i32],
            accumulate: bool,
        ) {
            use std::arch::x86_64::{
                __m256i, _mm256_loadu_si256, _mm256_set1_epi32, _mm256_setzero_si256, _mm256_storeu_si256,
            };
            let mut acc: [[__m256i; 4]; N] = [[_mm256_setzero_si256(); 4]; N];
            if accumulate {
                for (r, acc) in acc.iter_mut().enumerate() {
                    for (j, acc) in acc.iter_mut().enumerate() {
                        // SAFETY: out holds N × 32 values.
                        *acc = unsafe { _mm256_loadu_si256(out.as_ptr().add(r * PANEL + 8 * j).cast()) };
                    }
                }
            }
            let (w, xs) = (chunk.as_ptr(), a.as_ptr());
            for q in 0..count {
                // SAFETY: q < count, so the loads lie inside the chunk (count × 128 bytes) and
                // each row's quad inside `a`.
                unsafe {
                    let w: [__m256i; 4] =
                        std::array::from_fn(|j| _mm256_loadu_si256(w.add(q * 4 * PANEL + 32 * j).cast()));
                    for (r, acc) in acc.iter_mut().enumerate() {
                        let quad = _mm256_set1_epi32(xs.add(r * 4 * stride + 4 * q).cast::<i32>().read_unaligned());
                        for (acc, &w) in acc.iter_mut().zip(&w) {
                            *acc = $madd(*acc, quad, w);
                        }
                    }
                }
            }
            for (r, acc) in acc.iter().enumerate() {
                for (j, acc) in acc.iter().enumerate() {
                    // SAFETY: out holds N × 32 values.
                    unsafe { _mm256_storeu_si256(out.as_mut_ptr().add(r * PANEL + 8 * j).cast(), *acc) };
                }
            }
        }
    };
}

tile_32_bytes!(tile_avxvnni, rows_avxvnni, "avx2,avxvnni", |acc, quad, w| {
    std::arch::x86_64::_mm256_dpbusd_avx_epi32(acc, quad, w)
});

tile_32_bytes!(tile_avx2, rows_avx2, "avx2", |acc, quad, w| {
    use std::arch::x86_64::{_mm256_add_epi32, _mm256_madd_epi16, _mm256_maddubs_epi16, _mm256_set1_epi16};
    // Pairs of u8 × i8 (at most 255 × 127 together: no saturation), then pairs of those.
    _mm256_add_epi32(acc, _mm256_madd_epi16(_mm256_maddubs_epi16(quad, w), _mm256_set1_epi16(1)))
});

#[cfg(test)]
mod tests {
    use super::super::packed::{TEST_SHAPES, test_values};
    use super::*;

    /// The product as the format defines it, one value at a time: each row quantised by its
    /// own range, each column by its largest magnitude, the integer sums exact (i64).
    fn reference(kernel: Kernel, x: &[f32], w: &[f32], m: usize, k: usize, n: usize) -> Vec<f32> {
        let (wq, format) = quantise_columns(w, n, kernel);
        let mut ys = vec![0f32; m * n];
        for i in 0..m {
            let src = &x[i * k..][..k];
            let (lo, hi) = src.iter().fold((0f32, 0f32), |(lo, hi), &v| (lo.min(v), hi.max(v)));
            let levels = kernel.input_levels();
            let scale = if hi > lo { (hi - lo) / levels as f32 } else { 1.0 };
            let zero = ((-lo / scale).round_ties_even() as i32).clamp(0, levels);
            let xq: Vec<i64> = src.iter().map(|&v| i64::from(quantise(v, 1.0 / scale, zero, levels))).collect();
            for j in 0..n {
                let sum: i64 = (0..k).map(|kk| (xq[kk] - i64::from(zero)) * i64::from(wq[kk * n + j])).sum();
                ys[i * n + j] = scale * format.scales[j] * sum as f32;
            }
        }
        ys
    }

    /// The kernels this CPU runs.
    fn kernels() -> Vec<Kernel> {
        let kernels: Vec<Kernel> = KERNELS.into_iter().filter(|k| k.runs()).collect();
        eprintln!("int8 kernels on this CPU: {kernels:?}");
        kernels
    }

    #[test]
    fn panels_times_rows_is_the_product_of_the_quantised_values() {
        for kernel in kernels() {
            check_kernel(kernel);
        }
    }

    fn check_kernel(kernel: Kernel) {
        // And the SigLIP p10 test model's attention input projection (seven images), the
        // product its int8 embeddings were lost in: the kernels compute it exactly too (the loss
        // is the quantisation's; see `SiglipModel::set_precision`).
        for (m, k, n) in TEST_SHAPES.into_iter().chain([(175, 40, 120)]) {
            // Rows of mixed signs, all positive (after an activation), and of one value.
            let mut x = test_values(m * k, 3 + m as u64);
            x.chunks_mut(k).enumerate().for_each(|(i, row)| match i % 3 {
                1 => row.iter_mut().for_each(|v| *v = v.abs() * 4.0),
                2 if i % 6 == 2 => row.fill(0.0),
                _ => {}
            });
            let w = test_values(k * n, 11 + n as u64);
            let panels = pack_for(kernel, &w, k, n).unwrap();
            let got = panels.product(&x, m, &|_, _| {});
            let want = reference(kernel, &x, &w, m, k, n);
            for (i, (g, e)) in got.iter().zip(&want).enumerate() {
                assert!((g - e).abs() <= 1e-6 * e.abs() + 1e-7, "{kernel:?} [{m},{k},{n}] at {i}: {g} vs {e}");
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
            // (Scaled by pairs: a step up to twice as large.)
            let bound = 0.05 * (k as f32).sqrt() * if kernel.scales_by_pairs() { 2.0 } else { 1.0 };
            assert!(worst <= bound, "{kernel:?} [{m},{k},{n}]: {worst} from the f32 product");
        }
    }

    #[test]
    fn quantising_a_row_rounds_like_the_scalar_formula() {
        let src: Vec<f32> = (0..70).map(|i| (i as f32 - 20.0) * 0.37 + 0.5 * (i % 3) as f32).collect();
        for levels in [255, 127] {
            let row = row_scale(&src, levels);
            let mut dst = vec![0u8; src.len()];
            quantise_row(&src, row, levels, &mut dst);
            let want: Vec<u8> = src.iter().map(|&v| quantise(v, 1.0 / row.scale, row.zero, levels)).collect();
            assert_eq!(dst, want);
            assert_eq!(dst.iter().min(), Some(&0));
            assert_eq!(dst.iter().max(), Some(&(levels as u8)));
        }
        assert_eq!(min_max(&src), src.iter().fold((0f32, 0f32), |(l, h), &v| (l.min(v), h.max(v))));
    }

    /// The ARM kernels' signed inputs (bytes and zero point shifted by 128) give the outputs of
    /// the unsigned ones, and their weights are VNNI's: checked here on any CPU, the ARM tiles
    /// themselves under qemu.
    #[test]
    fn signed_inputs_give_the_outputs_of_unsigned_ones() {
        let (k, n) = (37, 5);
        let x: Vec<f32> = test_values(k, 7).iter().map(|v| 3.0 * v + 0.5).collect();
        let w = test_values(k * n, 8);
        let (wq, unsigned) = quantise_columns(&w, n, Kernel::AvxVnni);
        for kernel in [Kernel::I8mm, Kernel::Sdot, Kernel::Widening] {
            let (wq_signed, signed) = quantise_columns(&w, n, kernel);
            assert_eq!(wq_signed, wq, "{kernel:?}: weights as VNNI's");
            let (mut bytes_u, mut bytes_s) = (vec![0u8; k], vec![0u8; k]);
            let (row_u, row_s) = (unsigned.convert(&x, &mut bytes_u), signed.convert(&x, &mut bytes_s));
            assert_eq!(row_s.zero, row_u.zero - 128);
            let sums = |bytes: &[u8], signed: bool| -> Vec<i32> {
                let byte = |b: u8| if signed { i32::from(b as i8) } else { i32::from(b) };
                (0..n).map(|j| (0..k).map(|kk| byte(bytes[kk]) * i32::from(wq[kk * n + j])).sum()).collect()
            };
            let (mut out_u, mut out_s) = (vec![0f32; n], vec![0f32; n]);
            unsigned.finish(&sums(&bytes_u, false), row_u, 0, &mut out_u);
            signed.finish(&sums(&bytes_s, true), row_s, 0, &mut out_s);
            assert_eq!(out_s, out_u, "{kernel:?}");
        }
    }

    #[test]
    fn packing_refuses_a_weight_of_the_wrong_size() {
        assert!(pack(&[0.0; 5], 2, 3).is_none());
        assert!(pack(&[], 0, 3).is_none());
    }
}
