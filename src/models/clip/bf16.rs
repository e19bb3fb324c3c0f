//! Linear layers in bfloat16 with float32 accumulation (`--precision bf16`), for CPUs with
//! AVX-512 BF16 (AMD Zen 4 and later, Intel Cooper Lake and Sapphire Rapids and later). There
//! one `vdpbf16ps` does 32 multiply-adds where an f32 FMA does 16, so a layer's product takes
//! about half the time; the values are rounded to bf16's 8 significant bits on the way in and
//! summed in f32, as PyTorch's bf16 autocast and oneDNN do.
//!
//! The weight is laid out once, in panels of 32 output columns; within a panel, each pair of
//! input positions holds the 32 columns' two values side by side (the operand order of
//! `vdpbf16ps`). A product converts a block of input rows to bf16 (round to nearest even),
//! then for each panel runs tiles of 12 rows × 32 columns held in 24 registers over the whole
//! input width; row blocks run in parallel. On other CPUs the caller keeps f32 (see
//! [`available`]): emulating bf16 there would be slower than f32 for no gain.

use half::bf16;
use rayon::prelude::*;

/// Output columns per panel: two AVX-512 registers of f32.
const PANEL: usize = 32;

/// Rows a tile holds in registers (24 accumulators of the 32 registers).
const TILE: usize = 12;

/// Pairs of input positions a pass over a panel takes at once (16 KiB of the panel).
const CHUNK_PAIRS: usize = 128;

/// Whether this CPU runs the kernel.
pub(crate) fn available() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        static AVAILABLE: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
        *AVAILABLE.get_or_init(|| {
            std::arch::is_x86_feature_detected!("avx512f") && std::arch::is_x86_feature_detected!("avx512bf16")
        })
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// A weight `[k, n]` in bf16, laid out as `⌈n / 32⌉` panels of `⌈k / 2⌉` pairs of input
/// positions × 32 columns × 2 values (zero-padded past `k` and `n`).
pub(crate) struct Bf16Panels {
    data: Vec<u16>,
    k: usize,
    n: usize,
}

impl Bf16Panels {
    /// Lays out `weight_t` (`[k, n]`, row-major); `None` when its length is not `k × n`.
    pub(crate) fn pack(weight_t: &[f32], k: usize, n: usize) -> Option<Self> {
        if weight_t.len() != k * n || k == 0 || n == 0 {
            return None;
        }
        let pairs = k.div_ceil(2);
        let mut data = vec![0u16; n.div_ceil(PANEL) * pairs * PANEL * 2];
        for (p, panel) in data.chunks_exact_mut(pairs * PANEL * 2).enumerate() {
            let width = PANEL.min(n - p * PANEL);
            for (q, pair) in panel.chunks_exact_mut(PANEL * 2).enumerate() {
                for half_ in 0..2 {
                    let kk = 2 * q + half_;
                    if kk >= k {
                        continue;
                    }
                    let row = &weight_t[kk * n + p * PANEL..][..width];
                    for (c, &w) in row.iter().enumerate() {
                        pair[2 * c + half_] = bf16::from_f32(w).to_bits();
                    }
                }
            }
        }
        Some(Bf16Panels { data, k, n })
    }

    /// Input width.
    /// `x` (`[m, k]`, row-major) times the weight: `[m, n]`. Callers check [`available`].
    pub(crate) fn product(&self, x: &[f32], m: usize) -> Vec<f32> {
        assert!(available(), "callers check bf16::available() first");
        assert_eq!(x.len(), m * self.k, "input is not [{m}, {}]", self.k);
        let (k, n, pairs) = (self.k, self.n, self.k.div_ceil(2));
        let mut ys = vec![0f32; m * n];
        if m == 0 {
            return ys;
        }
        // Blocks of up to 96 rows (their bf16 copy stays in L2 beside one panel), and enough
        // of them to keep every thread busy.
        let threads = rayon::current_num_threads().max(1);
        let block = m.div_ceil(2 * threads).div_ceil(TILE).clamp(1, 8) * TILE;
        ys.par_chunks_mut(block * n).zip(x.par_chunks(block * k)).for_each(|(ys, x)| {
            let rows = x.len() / k;
            let mut a = vec![0u16; rows * 2 * pairs];
            for (dst, src) in a.chunks_exact_mut(2 * pairs).zip(x.chunks_exact(k)) {
                to_bf16(src, &mut dst[..k]);
            }
            // Panels in chunks of input positions: a panel's chunk (16 KiB) stays in L1 while
            // every tile of the block passes over it; the tiles' sums wait in `sums` (L1 too).
            let mut sums = vec![0f32; rows * PANEL];
            for (p, panel) in self.data.chunks_exact(pairs * PANEL * 2).enumerate() {
                let width = PANEL.min(n - p * PANEL);
                for first_pair in (0..pairs).step_by(CHUNK_PAIRS) {
                    let count = CHUNK_PAIRS.min(pairs - first_pair);
                    let chunk = &panel[first_pair * 2 * PANEL..][..count * 2 * PANEL];
                    for first in (0..rows).step_by(TILE) {
                        let r = TILE.min(rows - first);
                        let a = &a[first * 2 * pairs + 2 * first_pair..];
                        tile_product(chunk, a, pairs, count, r, &mut sums[first * PANEL..], first_pair > 0);
                    }
                }
                for i in 0..rows {
                    ys[i * n + p * PANEL..][..width].copy_from_slice(&sums[i * PANEL..][..width]);
                }
            }
        });
        ys
    }
}

/// `src` rounded to bf16 (to nearest, ties to even) into `dst` (as long).
fn to_bf16(src: &[f32], dst: &mut [u16]) {
    #[cfg(target_arch = "x86_64")]
    {
        // SAFETY: `available()` found AVX-512 F and BF16 (checked by `product`).
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

/// `r` rows of `a` (row stride `2 · stride` values) over `count` pairs, times a panel's chunk
/// of `count` pairs, into `out` (`[r, 32]`): added to what `out` holds when `accumulate`.
fn tile_product(chunk: &[u16], a: &[u16], stride: usize, count: usize, r: usize, out: &mut [f32], accumulate: bool) {
    assert!(chunk.len() >= count * 2 * PANEL && out.len() >= r * PANEL, "tile out of bounds");
    assert!(r >= 1 && a.len() >= (r - 1) * 2 * stride + 2 * count, "tile rows out of bounds");
    #[cfg(target_arch = "x86_64")]
    {
        // SAFETY (every arm): `available()` found AVX-512 F and BF16 (checked by `product`);
        // the bounds were checked above.
        macro_rules! rows {
            ($($r:literal)*) => {
                match r {
                    $($r => unsafe { tile_avx512::<$r>(chunk, a, stride, count, out, accumulate) },)*
                    _ => unreachable!("at most {TILE} rows a tile"),
                }
            };
        }
        rows!(1 2 3 4 5 6 7 8 9 10 11 12)
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        let _ = (chunk, a, stride, count, r, out, accumulate);
        unreachable!("the kernel is only offered on x86-64");
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bf16")]
unsafe fn tile_avx512<const R: usize>(
    chunk: &[u16],
    a: &[u16],
    stride: usize,
    count: usize,
    out: &mut [f32],
    accumulate: bool,
) {
    use std::arch::x86_64::{
        __m512, __m512bh, _mm512_dpbf16_ps, _mm512_loadu_ps, _mm512_loadu_si512, _mm512_set1_epi32, _mm512_setzero_ps,
        _mm512_storeu_ps,
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

#[cfg(test)]
mod tests {
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

    fn values(len: usize, seed: u64) -> Vec<f32> {
        let mut s = seed;
        (0..len)
            .map(|_| {
                s = s.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                ((s >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
            })
            .collect()
    }

    #[test]
    fn panels_times_rows_is_the_product_of_the_rounded_values() {
        if !available() {
            eprintln!("this CPU has no AVX-512 BF16: the kernel is not offered here");
            return;
        }
        // Odd widths, a partial last panel and tile, more rows than one block.
        for (m, k, n) in [(1, 1, 1), (5, 7, 33), (13, 64, 32), (250, 129, 70), (37, 512, 96), (30, 700, 40)] {
            let x = values(m * k, 1 + m as u64);
            let w = values(k * n, 7 + n as u64);
            let got = Bf16Panels::pack(&w, k, n).unwrap().product(&x, m);
            let want = reference(&x, &w, m, k, n);
            for (i, (g, e)) in got.iter().zip(&want).enumerate() {
                assert!((g - e).abs() <= 1e-5 * (k as f32).sqrt() + 1e-6 * e.abs(), "[{m},{k},{n}] at {i}: {g} vs {e}");
            }
        }
    }

    #[test]
    fn packing_refuses_a_weight_of_the_wrong_size() {
        assert!(Bf16Panels::pack(&[0.0; 5], 2, 3).is_none());
        assert!(Bf16Panels::pack(&[], 0, 3).is_none());
    }
}
