//! Linear layers in bfloat16 with float32 accumulation (`--precision bf16`), for CPUs with
//! AVX-512 BF16 (AMD Zen 4 and later, Intel Cooper Lake and Sapphire Rapids and later) and
//! 64-bit ARM with bf16 (ARMv8.6: Apple M2 and later, Neoverse V1/N2). On x86 one `vdpbf16ps`
//! does 32 multiply-adds where an f32 FMA does 16, so a layer's product takes about half the
//! time; on ARM one `bfmmla` (a 2×4 by 4×2 product, see [`super::neon`]) does 16 where a NEON
//! FMA does 4 (not measured: no ARM machine yet); the values are rounded to bf16's 8 significant bits on the way in and
//! summed in f32, as PyTorch's bf16 autocast and oneDNN do.
//!
//! The weight is laid out once (see [`super::packed`]): within a panel of 32 columns, each
//! pair of input positions holds the 32 columns' two values side by side. A product rounds a
//! block of input rows to bf16 (to nearest, ties to even) and runs tiles of up to 12 rows × 32
//! columns over each panel. On other CPUs the caller keeps f32 (see [`available`]): emulating
//! bf16 there would be slower than f32 for no gain.

use half::bf16;

use super::packed::{Format, Panels};

/// Whether this CPU runs the kernel (and `CLIPDEX_CPU_FEATURES` leaves it on).
pub(crate) fn available() -> bool {
    use super::cpu::{Feature, has};
    has(Feature::Avx512Bf16) || has(Feature::Bf16)
}

/// The bf16 format: values rounded to bf16, sums in f32, no scaling.
pub(super) struct Bf16;

/// A weight laid out in bf16.
pub(super) type Bf16Panels = Panels<Bf16>;

/// Lays out `weight_t` (`[k, n]`, row-major) in bf16; `None` when its length is not `k × n`
/// or the CPU has neither AVX-512 BF16 nor ARM's bf16.
pub(super) fn pack(weight_t: &[f32], k: usize, n: usize) -> Option<Bf16Panels> {
    if weight_t.len() != k * n || k == 0 || n == 0 || !available() {
        return None;
    }
    Some(Panels::lay_out(Bf16, k, n, |kk, j| bf16::from_f32(weight_t[kk * n + j]).to_bits()))
}

impl Format for Bf16 {
    const GROUP: usize = 2;
    type Value = u16;
    type Sum = f32;
    type Row = ();

    fn convert(&self, src: &[f32], dst: &mut [u16]) {
        to_bf16(src, dst)
    }

    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx512f,avx512bf16")]
    unsafe fn tile<const R: usize>(
        &self,
        chunk: &[u16],
        a: &[u16],
        stride: usize,
        count: usize,
        out: &mut [f32],
        accumulate: bool,
    ) {
        use super::packed::PANEL;
        use std::arch::x86_64::{
            __m512, __m512bh, _mm512_dpbf16_ps, _mm512_loadu_ps, _mm512_loadu_si512, _mm512_set1_epi32,
            _mm512_setzero_ps, _mm512_storeu_ps,
        };
        let mut acc: [[__m512; 2]; R] = [[_mm512_setzero_ps(); 2]; R];
        if accumulate {
            for (r, acc) in acc.iter_mut().enumerate() {
                // SAFETY: out holds R × 32 values (checked by the caller).
                unsafe {
                    acc[0] = _mm512_loadu_ps(out.as_ptr().add(r * PANEL));
                    acc[1] = _mm512_loadu_ps(out.as_ptr().add(r * PANEL + 16));
                }
            }
        }
        let (w, xs) = (chunk.as_ptr(), a.as_ptr());
        for q in 0..count {
            // SAFETY: q < count, so both loads lie inside the chunk (count × 64 values) and each
            // row's pair inside `a` (checked by the caller); the casts only reinterpret 512 bits.
            unsafe {
                let w0: __m512bh = std::mem::transmute(_mm512_loadu_si512(w.add(q * 2 * PANEL).cast()));
                let w1: __m512bh = std::mem::transmute(_mm512_loadu_si512(w.add(q * 2 * PANEL + PANEL).cast()));
                for (r, acc) in acc.iter_mut().enumerate() {
                    let pair = xs.add(r * 2 * stride + 2 * q).cast::<i32>().read_unaligned();
                    let v: __m512bh = std::mem::transmute(_mm512_set1_epi32(pair));
                    acc[0] = _mm512_dpbf16_ps(acc[0], w0, v);
                    acc[1] = _mm512_dpbf16_ps(acc[1], w1, v);
                }
            }
        }
        for (r, acc) in acc.iter().enumerate() {
            // SAFETY: out holds R × 32 values.
            unsafe {
                _mm512_storeu_ps(out.as_mut_ptr().add(r * PANEL), acc[0]);
                _mm512_storeu_ps(out.as_mut_ptr().add(r * PANEL + 16), acc[1]);
            }
        }
    }

    fn finish(&self, sums: &[f32], _row: (), _first: usize, out: &mut [f32]) {
        out.copy_from_slice(sums);
    }

    /// `bfmmla`, two rows by two columns by four values an instruction.
    #[cfg(target_arch = "aarch64")]
    unsafe fn tile<const R: usize>(
        &self,
        chunk: &[u16],
        a: &[u16],
        stride: usize,
        count: usize,
        out: &mut [f32],
        accumulate: bool,
    ) {
        // SAFETY: `pack` checked that the CPU has bf16 (`available`); the caller, the bounds.
        unsafe { super::neon::tile_bfmmla::<R>(chunk, a, stride, count, out, accumulate) }
    }
}

/// `src` rounded to bf16 (to nearest, ties to even) into `dst` (as long).
fn to_bf16(src: &[f32], dst: &mut [u16]) {
    #[cfg(target_arch = "x86_64")]
    {
        // SAFETY: `available()` found AVX-512 F and BF16 (checked by `pack`).
        unsafe { to_bf16_avx512(src, dst) }
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        for (d, &s) in dst.iter_mut().zip(src) {
            *d = bf16::from_f32(s).to_bits();
        }
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bf16")]
unsafe fn to_bf16_avx512(src: &[f32], dst: &mut [u16]) {
    use std::arch::x86_64::{__m512bh, __m512i, _mm512_cvtne2ps_pbh, _mm512_loadu_ps, _mm512_storeu_si512};
    assert_eq!(src.len(), dst.len());
    let whole = src.len() / 32 * 32;
    for i in (0..whole).step_by(32) {
        // SAFETY: i + 32 <= len for both slices; the cast only reinterprets 512 bits.
        unsafe {
            let lo = _mm512_loadu_ps(src.as_ptr().add(i));
            let hi = _mm512_loadu_ps(src.as_ptr().add(i + 16));
            let packed = _mm512_cvtne2ps_pbh(hi, lo);
            _mm512_storeu_si512(dst.as_mut_ptr().add(i).cast(), std::mem::transmute::<__m512bh, __m512i>(packed));
        }
    }
    for (d, &s) in dst[whole..].iter_mut().zip(&src[whole..]) {
        *d = bf16::from_f32(s).to_bits();
    }
}

#[cfg(test)]
mod tests {
    use super::super::packed::{TEST_SHAPES, test_values};
    use super::*;

    /// The product of the bf16-rounded operands, summed in f64.
    fn reference(x: &[f32], w: &[f32], m: usize, k: usize, n: usize) -> Vec<f32> {
        let round = |v: f32| bf16::from_f32(v).to_f32() as f64;
        let mut ys = vec![0f32; m * n];
        for i in 0..m {
            for j in 0..n {
                ys[i * n + j] = (0..k).map(|kk| round(x[i * k + kk]) * round(w[kk * n + j])).sum::<f64>() as f32;
            }
        }
        ys
    }

    #[test]
    fn panels_times_rows_is_the_product_of_the_rounded_values() {
        if !available() {
            eprintln!("this CPU has neither AVX-512 BF16 nor ARM's bf16: the kernel is not offered here");
            return;
        }
        for (m, k, n) in TEST_SHAPES {
            let x = test_values(m * k, 1 + m as u64);
            let w = test_values(k * n, 7 + n as u64);
            let got = pack(&w, k, n).unwrap().product(&x, m, &|_, _| {});
            let want = reference(&x, &w, m, k, n);
            for (i, (g, e)) in got.iter().zip(&want).enumerate() {
                assert!((g - e).abs() <= 1e-5 * (k as f32).sqrt() + 1e-6 * e.abs(), "[{m},{k},{n}] at {i}: {g} vs {e}");
            }
        }
    }

    #[test]
    fn packing_refuses_a_weight_of_the_wrong_size() {
        assert!(pack(&[0.0; 5], 2, 3).is_none());
        assert!(pack(&[], 0, 3).is_none());
    }
}
