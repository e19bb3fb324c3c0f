//! The 64-bit ARM (NEON) kernels, the counterparts of the AVX2 ones for Apple Silicon, a
//! Raspberry Pi 4 or 5 and ARM servers: 4-wide f32 FMA for the few-rows products
//! ([`skinny_panel`]), the bias + quick-GELU epilogue and the long-sequence softmax's
//! exponential (the short-sequence attention's NEON kernel lives with the others in
//! `short_attention`, on [`exp4`]), and two int8
//! tiles for [`super::packed`]'s layout: `sdot` where the CPU has the dot-product extension
//! (ARMv8.2+, every Apple M chip, Cortex-A76 and later: 16 multiply-adds of bytes into four
//! 32-bit sums, as `vpdpbusd` does 64), and widening multiplies (`smull` into 16 bits, pairs
//! added into 32 with `sadalp`) on the older cores without it.
//!
//! Both int8 tiles multiply *signed* bytes: an input row's unsigned quantised bytes come shifted
//! by −128 (see `int8`'s `Format::convert`), and its zero point with them, so that the integer
//! sums stay exact and the outputs equal those of the x86 kernels' unsigned inputs. Weights are
//! full 8-bit (a column's largest magnitude maps to 127): `sdot` and `smull` cannot saturate.
//!
//! Self-contained (only `core::arch`), with tests against scalar definitions, so that the file
//! also builds and runs alone under `qemu-aarch64`. Callers check the features at run time
//! ([`super::cpu`]), so that `CLIPDEX_CPU_FEATURES=-neon` or `-dotprod` forces each fallback.

use std::arch::aarch64::{
    float32x4_t, int8x16_t, int32x4_t, uint32x4_t, vaddq_f32, vaddq_s32, vaddvq_f32, vcombine_f32, vcombine_s32,
    vcombine_u64, vcreate_u64, vcvtq_s32_f32, vdivq_f32, vdupq_n_f32, vdupq_n_s32, vdupq_n_u32, vfmaq_f32, vfmsq_f32,
    vget_high_f32, vget_high_s32, vget_low_f32, vget_low_s8, vget_low_s32, vld1_f32, vld1_s32, vld1q_f32, vld1q_s8,
    vld1q_s32, vld1q_u32, vmaxq_f32, vminq_f32, vmull_high_s8, vmull_s8, vmulq_f32, vpadalq_s16, vpaddq_s32,
    vreinterpretq_f32_s32, vreinterpretq_s8_u32, vreinterpretq_u32_u64, vrndnq_f32, vshlq_n_s32, vst1_f32, vst1_s32,
    vst1q_f32, vst1q_s32, vsubq_f32, vzip1q_u32, vzip2q_u32,
};

/// Output columns per panel (both `packed`'s and `skinny`'s): eight registers of four.
pub(super) const PANEL: usize = 32;

/// `e^t` of 4 values: the polynomial of the x86 kernels' `exp8` (`2ⁿ · e^r`, `|r| ≤ ln 2 / 2`,
/// degree 6), `2ⁿ` built in the exponent bits. The argument is clamped to [-87, 88].
#[inline]
#[target_feature(enable = "neon")]
pub(super) fn exp4(t: float32x4_t) -> float32x4_t {
    let t = vminq_f32(vmaxq_f32(t, vdupq_n_f32(-87.0)), vdupq_n_f32(88.0));
    // Round to nearest (even), as the x86 kernels' `roundscale`/`round` with mode 8.
    let n = vrndnq_f32(vmulq_f32(t, vdupq_n_f32(std::f32::consts::LOG2_E)));
    let r = vfmsq_f32(t, n, vdupq_n_f32(0.693_145_75));
    let r = vfmsq_f32(r, n, vdupq_n_f32(1.428_606_8e-6));
    let mut p = vdupq_n_f32(1.0 / 720.0);
    for c in [1.0 / 120.0, 1.0 / 24.0, 1.0 / 6.0, 0.5, 1.0, 1.0] {
        p = vfmaq_f32(vdupq_n_f32(c), p, r);
    }
    // n is integral and within [-126, 127]: the conversion is exact.
    let two_n = vshlq_n_s32::<23>(vaddq_s32(vcvtq_s32_f32(n), vdupq_n_s32(127)));
    vmulq_f32(p, vreinterpretq_f32_s32(two_n))
}

/// `o = o + bias`, then, when `quick_gelu`, `v · sigmoid(1.702 v)`, 4 values at a time;
/// returns how many it wrote (the rest, fewer than 4, are the caller's).
///
/// # Safety
/// The CPU has NEON (the caller checked that it is not switched off).
#[target_feature(enable = "neon")]
pub(super) unsafe fn bias_act_row(o: &mut [f32], bias: &[f32], quick_gelu: bool) -> usize {
    let len = o.len().min(bias.len());
    let whole = len / 4 * 4;
    for i in (0..whole).step_by(4) {
        // SAFETY: i + 4 <= len for both slices.
        unsafe {
            let v = vaddq_f32(vld1q_f32(o.as_ptr().add(i)), vld1q_f32(bias.as_ptr().add(i)));
            let y = if quick_gelu {
                let e = exp4(vmulq_f32(v, vdupq_n_f32(-1.702)));
                vdivq_f32(v, vaddq_f32(vdupq_n_f32(1.0), e))
            } else {
                v
            };
            vst1q_f32(o.as_mut_ptr().add(i), y);
        }
    }
    whole
}

/// `x ← e^(x − max)` 4 values at a time; returns how many it did and their sum.
///
/// # Safety
/// The CPU has NEON.
#[target_feature(enable = "neon")]
pub(super) unsafe fn exp_minus(xs: &mut [f32], max: f32) -> (usize, f32) {
    let whole = xs.len() / 4 * 4;
    let m = vdupq_n_f32(max);
    let mut sum = vdupq_n_f32(0.0);
    for i in (0..whole).step_by(4) {
        // SAFETY: i + 4 <= xs.len().
        unsafe {
            let e = exp4(vsubq_f32(vld1q_f32(xs.as_ptr().add(i)), m));
            vst1q_f32(xs.as_mut_ptr().add(i), e);
            sum = vaddq_f32(sum, e);
        }
    }
    (whole, vaddvq_f32(sum))
}

/// `R` rows of `x` (`[R, k]`) times one `skinny` panel (`[k, 32]`) into `out` (`[R, 32]`):
/// each row's 32 sums in eight registers.
///
/// # Safety
/// `panel` holds `k × 32` values, `x` `R × k` and `out` at least `R × 32`.
#[target_feature(enable = "neon")]
pub(super) unsafe fn skinny_panel<const R: usize>(panel: &[f32], x: &[f32], k: usize, out: &mut [f32]) {
    debug_assert!(panel.len() >= k * PANEL && x.len() >= R * k && out.len() >= R * PANEL);
    let mut acc: [[float32x4_t; 8]; R] = [[vdupq_n_f32(0.0); 8]; R];
    let (w, xs) = (panel.as_ptr(), x.as_ptr());
    for kk in 0..k {
        // SAFETY: kk < k, so the loads are inside the panel and each row's value inside `x`.
        unsafe {
            let row = w.add(kk * PANEL);
            for (r, a) in acc.iter_mut().enumerate() {
                let v = vdupq_n_f32(*xs.add(r * k + kk));
                for (j, aj) in a.iter_mut().enumerate() {
                    *aj = vfmaq_f32(*aj, v, vld1q_f32(row.add(4 * j)));
                }
            }
        }
    }
    for (r, a) in acc.iter().enumerate() {
        for (j, aj) in a.iter().enumerate() {
            // SAFETY: out holds R × 32 values.
            unsafe { vst1q_f32(out.as_mut_ptr().add(r * PANEL + 4 * j), *aj) };
        }
    }
}

/// `acc + Σ a·b` over each lane's four bytes (`sdot`). Stable Rust has no intrinsic for it yet
/// (`vdotq_s32` is unstable), so one instruction of inline assembly.
#[inline]
#[target_feature(enable = "neon,dotprod")]
fn sdot(acc: int32x4_t, a: int8x16_t, b: int8x16_t) -> int32x4_t {
    let mut acc = acc;
    // SAFETY: a register-only instruction the CPU has (the function's features).
    unsafe {
        std::arch::asm!(
            "sdot {acc:v}.4s, {a:v}.16b, {b:v}.16b",
            acc = inout(vreg) acc,
            a = in(vreg) a,
            b = in(vreg) b,
            options(pure, nomem, nostack, preserves_flags)
        );
    }
    acc
}

/// An input row's quad of (signed) bytes, in every lane.
///
/// # Safety
/// `p` points at 4 readable bytes.
#[inline]
#[target_feature(enable = "neon")]
unsafe fn quad(p: *const u8) -> int8x16_t {
    // SAFETY: the caller's.
    vreinterpretq_s8_u32(vdupq_n_u32(unsafe { p.cast::<u32>().read_unaligned() }))
}

/// The `sdot` int8 tile: `R` rows of `a` (signed bytes, each `4 · stride`) over `count` quads
/// times a panel's chunk (`count` quads of 32 columns × 4 bytes) into `out` (`[R, 32]` sums),
/// added to what `out` holds when `accumulate`. Rows go three at a time (24 sums in registers).
///
/// # Safety
/// The CPU has the dot-product extension; `chunk` holds `count × 128` bytes, `out` `R × 32`
/// sums, and `a` each row's `count` quads.
#[target_feature(enable = "neon,dotprod")]
pub(super) unsafe fn tile_sdot<const R: usize>(
    chunk: &[u8],
    a: &[u8],
    stride: usize,
    count: usize,
    out: &mut [i32],
    accumulate: bool,
) {
    let mut first = 0;
    while first < R {
        let (a, out) = (&a[first * 4 * stride..], &mut out[first * PANEL..]);
        // SAFETY: the rows from `first` on lie inside `a` and `out` (the caller's bounds).
        unsafe {
            match R - first {
                1 => rows_sdot::<1>(chunk, a, stride, count, out, accumulate),
                2 => rows_sdot::<2>(chunk, a, stride, count, out, accumulate),
                _ => rows_sdot::<3>(chunk, a, stride, count, out, accumulate),
            }
        }
        first += 3;
    }
}

/// # Safety
/// As [`tile_sdot`]'s, for `N` rows.
#[target_feature(enable = "neon,dotprod")]
unsafe fn rows_sdot<const N: usize>(
    chunk: &[u8],
    a: &[u8],
    stride: usize,
    count: usize,
    out: &mut [i32],
    accumulate: bool,
) {
    let mut acc: [[int32x4_t; 8]; N] = [[vdupq_n_s32(0); 8]; N];
    if accumulate {
        for (r, acc) in acc.iter_mut().enumerate() {
            for (j, acc) in acc.iter_mut().enumerate() {
                // SAFETY: out holds N × 32 sums.
                *acc = unsafe { vld1q_s32(out.as_ptr().add(r * PANEL + 4 * j)) };
            }
        }
    }
    let (w, xs) = (chunk.as_ptr(), a.as_ptr());
    for q in 0..count {
        // SAFETY: q < count, so the weight loads lie inside the chunk (count × 128 bytes) and
        // each row's quad inside `a`.
        unsafe {
            let quads: [int8x16_t; N] = std::array::from_fn(|r| quad(xs.add(r * 4 * stride + 4 * q)));
            for j in 0..8 {
                let wj = vld1q_s8(w.add(q * 4 * PANEL + 16 * j).cast());
                for (acc, &x) in acc.iter_mut().zip(&quads) {
                    acc[j] = sdot(acc[j], wj, x);
                }
            }
        }
    }
    for (r, acc) in acc.iter().enumerate() {
        for (j, acc) in acc.iter().enumerate() {
            // SAFETY: out holds N × 32 sums.
            unsafe { vst1q_s32(out.as_mut_ptr().add(r * PANEL + 4 * j), *acc) };
        }
    }
}

/// The int8 tile without the dot-product extension: per 16 weight bytes (4 columns × 4 inputs),
/// `smull`/`smull2` into 16-bit products (at most 128 × 127: exact) and `sadalp` adding their
/// pairs into 32-bit sums, two per column, joined by `addp` at the end. A row at a time (16
/// sums in registers). Arguments and safety as [`tile_sdot`]'s, but needing only NEON.
///
/// # Safety
/// As [`tile_sdot`]'s, less the dot-product extension.
#[target_feature(enable = "neon")]
pub(super) unsafe fn tile_widening<const R: usize>(
    chunk: &[u8],
    a: &[u8],
    stride: usize,
    count: usize,
    out: &mut [i32],
    accumulate: bool,
) {
    let w = chunk.as_ptr();
    for r in 0..R {
        let mut acc = [vdupq_n_s32(0); 16];
        for q in 0..count {
            // SAFETY: q < count, so the loads lie inside the chunk and the row's quad inside `a`.
            unsafe {
                let x = quad(a.as_ptr().add(r * 4 * stride + 4 * q));
                let x_low = vget_low_s8(x);
                for j in 0..8 {
                    let wj = vld1q_s8(w.add(q * 4 * PANEL + 16 * j).cast());
                    acc[2 * j] = vpadalq_s16(acc[2 * j], vmull_s8(vget_low_s8(wj), x_low));
                    acc[2 * j + 1] = vpadalq_s16(acc[2 * j + 1], vmull_high_s8(wj, x));
                }
            }
        }
        for j in 0..8 {
            let sums = vpaddq_s32(acc[2 * j], acc[2 * j + 1]);
            // SAFETY: out holds R × 32 sums.
            unsafe {
                let dst = out.as_mut_ptr().add(r * PANEL + 4 * j);
                let sums = if accumulate { vaddq_s32(vld1q_s32(dst), sums) } else { sums };
                vst1q_s32(dst, sums);
            }
        }
    }
}

/// `acc + A·Bᵀ` for two 2×8 matrices of signed bytes, `A`'s rows in `a`'s halves and `B`'s in
/// `b`'s: the 2×2 sums, row-major (`smmla`, 32 multiply-adds). One instruction of inline
/// assembly, as [`sdot`] (`vmmlaq_s32` is unstable).
#[inline]
#[target_feature(enable = "neon,i8mm")]
fn smmla(acc: int32x4_t, a: uint32x4_t, b: uint32x4_t) -> int32x4_t {
    let mut acc = acc;
    // SAFETY: a register-only instruction the CPU has (the function's features).
    unsafe {
        std::arch::asm!(
            "smmla {acc:v}.4s, {a:v}.16b, {b:v}.16b",
            acc = inout(vreg) acc,
            a = in(vreg) a,
            b = in(vreg) b,
            options(pure, nomem, nostack, preserves_flags)
        );
    }
    acc
}

/// [`smmla`] for two 2×4 matrices of bf16 values, summed into f32 (`bfmmla`, 16 multiply-adds).
/// The instruction flushes subnormal inputs to zero and rounds its intermediate sums to odd;
/// the fidelity of the bf16 products is checked against f64 sums in the tests.
#[inline]
#[target_feature(enable = "neon,bf16")]
fn bfmmla(acc: float32x4_t, a: uint32x4_t, b: uint32x4_t) -> float32x4_t {
    let mut acc = acc;
    // SAFETY: a register-only instruction the CPU has (the function's features).
    unsafe {
        std::arch::asm!(
            "bfmmla {acc:v}.4s, {a:v}.8h, {b:v}.8h",
            acc = inout(vreg) acc,
            a = in(vreg) a,
            b = in(vreg) b,
            options(pure, nomem, nostack, preserves_flags)
        );
    }
    acc
}

/// The matrix-multiply tiles (`smmla` for int8, `bfmmla` for bf16). Both formats' groups are 4
/// bytes (four int8 inputs, or a pair of bf16), so one tile serves both: per two groups `g`,
/// `g + 1` of a panel, `zip1`/`zip2` of their 16-byte loads (columns `4j..4j + 4`) give two
/// columns' 8 bytes each, `B`'s two rows; two input rows' 8 bytes at `g` are `A`. Each
/// instruction adds a 2 rows × 2 columns block of sums. An odd last group is zipped with zeros,
/// and an odd last row is the row before it again (its sums are not stored). Rows go six at a
/// time (three pairs), columns eight at a time (12 accumulators, 4 weight registers).
macro_rules! mmla_tile {
    ($(#[$doc:meta])* $tile:ident, $pairs:ident, $features:literal, $value:ty, $sum:ty, $reg:ty, $mmla:ident,
     $zero:expr, $load2:ident, $combine:ident, $store2:ident, $low:ident, $high:ident) => {
        $(#[$doc])*
        #[target_feature(enable = $features)]
        pub(super) unsafe fn $tile<const R: usize>(
            chunk: &[$value],
            a: &[$value],
            stride: usize,
            count: usize,
            out: &mut [$sum],
            accumulate: bool,
        ) {
            // Values per 4-byte group: four bytes, or two bf16.
            let per_group = 4 / std::mem::size_of::<$value>();
            let mut first = 0;
            while first < R {
                let rows = (R - first).min(6);
                let (a, out) = (&a[first * per_group * stride..], &mut out[first * PANEL..]);
                let (w, x, o) = (chunk.as_ptr().cast::<u8>(), a.as_ptr().cast::<u8>(), out.as_mut_ptr());
                // SAFETY: the rows from `first` on lie inside `a` and `out`, each row's `count`
                // groups inside `a`, the chunk's `count` groups inside `chunk` (the caller's bounds).
                unsafe {
                    match rows.div_ceil(2) {
                        1 => $pairs::<1>(w, x, 4 * stride, count, o, rows, accumulate),
                        2 => $pairs::<2>(w, x, 4 * stride, count, o, rows, accumulate),
                        _ => $pairs::<3>(w, x, 4 * stride, count, o, rows, accumulate),
                    }
                }
                first += 6;
            }
        }

        /// `P` pairs of rows (`rows` is `2P` or `2P − 1`) at `x`, `row_bytes` apart, times a
        /// chunk at `w`, into `out` (`rows × 32` sums).
        ///
        /// # Safety
        /// The CPU has the function's features; `w` holds `count × 128` bytes, each row at `x`
        /// `4 · count` bytes, and `out` `rows × 32` sums.
        #[target_feature(enable = $features)]
        #[allow(clippy::too_many_arguments)]
        unsafe fn $pairs<const P: usize>(
            w: *const u8,
            x: *const u8,
            row_bytes: usize,
            count: usize,
            out: *mut $sum,
            rows: usize,
            accumulate: bool,
        ) {
            // Each pair's rows: the second is the first again past the last row.
            let pair: [(usize, usize); P] = std::array::from_fn(|p| (2 * p, (2 * p + 1).min(rows - 1)));
            for block in 0..PANEL / 8 {
                let mut acc: [[$reg; 4]; P] = [[$zero; 4]; P];
                if accumulate {
                    for (acc, &(r0, r1)) in acc.iter_mut().zip(&pair) {
                        for (cp, acc) in acc.iter_mut().enumerate() {
                            let column = 8 * block + 2 * cp;
                            // SAFETY: both rows are below `rows`; two sums at `column` < 32.
                            *acc = unsafe {
                                $combine($load2(out.add(r0 * PANEL + column)), $load2(out.add(r1 * PANEL + column)))
                            };
                        }
                    }
                }
                let mut g = 0;
                while g < count {
                    let whole = g + 1 < count;
                    // SAFETY: groups `g` (and `g + 1` when `whole`) are below `count`: the loads
                    // lie inside the chunk and each row's groups.
                    unsafe {
                        let load = |g: usize, j: usize| vld1q_u32(w.add(g * 4 * PANEL + 16 * j).cast());
                        let (w0, w2) = (load(g, 2 * block), load(g, 2 * block + 1));
                        let (w1, w3) = if whole {
                            (load(g + 1, 2 * block), load(g + 1, 2 * block + 1))
                        } else {
                            (vdupq_n_u32(0), vdupq_n_u32(0))
                        };
                        let b = [vzip1q_u32(w0, w1), vzip2q_u32(w0, w1), vzip1q_u32(w2, w3), vzip2q_u32(w2, w3)];
                        let row = |r: usize| {
                            let p = x.add(r * row_bytes + 4 * g);
                            let bytes = if whole {
                                p.cast::<u64>().read_unaligned()
                            } else {
                                u64::from(p.cast::<u32>().read_unaligned())
                            };
                            vcreate_u64(u64::from_le(bytes))
                        };
                        for (acc, &(r0, r1)) in acc.iter_mut().zip(&pair) {
                            let xs = vreinterpretq_u32_u64(vcombine_u64(row(r0), row(r1)));
                            for (acc, &b) in acc.iter_mut().zip(&b) {
                                *acc = $mmla(*acc, xs, b);
                            }
                        }
                    }
                    g += 2;
                }
                for (acc, &(r0, r1)) in acc.iter().zip(&pair) {
                    for (cp, &acc) in acc.iter().enumerate() {
                        let column = 8 * block + 2 * cp;
                        // SAFETY: as the loads above.
                        unsafe {
                            $store2(out.add(r0 * PANEL + column), $low(acc));
                            if r1 != r0 {
                                $store2(out.add(r1 * PANEL + column), $high(acc));
                            }
                        }
                    }
                }
            }
        }
    };
}

mmla_tile!(
    /// The int8 tile with the matrix-multiply extension (`smmla`): as [`tile_sdot`], whose
    /// arguments and signed input bytes it takes, twice its multiply-adds per instruction.
    ///
    /// # Safety
    /// The CPU has i8mm; the bounds of [`tile_sdot`] hold.
    tile_smmla, pairs_smmla, "neon,i8mm", u8, i32, int32x4_t, smmla,
    vdupq_n_s32(0), vld1_s32, vcombine_s32, vst1_s32, vget_low_s32, vget_high_s32
);

mmla_tile!(
    /// The bf16 tile (`bfmmla`): `R` rows of `a` (bf16 bits, each `2 · stride`) over `count`
    /// pairs times a panel's chunk (`count` pairs of 32 columns × 2 values, as `bf16`'s
    /// layout) into `out` (`[R, 32]` f32 sums), added to what `out` holds when `accumulate`.
    ///
    /// # Safety
    /// The CPU has bf16; `chunk` holds `count × 64` values, `out` `R × 32` sums, and `a` each
    /// row's `count` pairs.
    tile_bfmmla, pairs_bfmmla, "neon,bf16", u16, f32, float32x4_t, bfmmla,
    vdupq_n_f32(0.0), vld1_f32, vcombine_f32, vst1_f32, vget_low_f32, vget_high_f32
);

#[cfg(test)]
mod tests {
    use super::*;

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
    fn exponential_is_within_float_rounding() {
        let ts: Vec<f32> = (0..4000).map(|i| -90.0 + i as f32 * 0.045).collect();
        let mut got = ts.clone();
        let (done, _) = unsafe { exp_minus(&mut got, 0.0) };
        assert_eq!(done, ts.len());
        for (t, g) in ts.iter().zip(&got) {
            let want = f64::from(t.clamp(-87.0, 88.0)).exp();
            assert!((f64::from(*g) - want).abs() <= 3e-7 * want, "e^{t}: {g} vs {want}");
        }
        // The sum of what it wrote (four f32 running sums), where that is finite.
        let mut got: Vec<f32> = ts.iter().map(|t| t / 4.0).collect();
        let (_, sum) = unsafe { exp_minus(&mut got, 1.0) };
        let total: f64 = got.iter().map(|&g| f64::from(g)).sum();
        assert!((f64::from(sum) - total).abs() <= 1e-4 * total, "{sum} vs {total}");
    }

    #[test]
    fn bias_and_quick_gelu_match_their_formula() {
        for width in [3, 4, 33, 64] {
            let x: Vec<f32> = values(width, 1).iter().map(|v| v * 12.0).collect();
            let bias = values(width, 2);
            for quick_gelu in [false, true] {
                let mut o = x.clone();
                let done = unsafe { bias_act_row(&mut o, &bias, quick_gelu) };
                assert_eq!(done, width / 4 * 4);
                for i in 0..done {
                    let v = x[i] + bias[i];
                    let want = if quick_gelu { v / (1.0 + (-1.702 * v).exp()) } else { v };
                    assert!((o[i] - want).abs() <= 1e-6 * (1.0 + want.abs()), "{i}: {} vs {want}", o[i]);
                }
                assert_eq!(o[done..], x[done..], "the tail is the caller's");
            }
        }
    }

    #[test]
    fn skinny_panel_is_the_matrix_product() {
        let k = 37;
        let panel = values(k * PANEL, 3);
        let x = values(3 * k, 4);
        let mut out = vec![0f32; 3 * PANEL];
        unsafe { skinny_panel::<3>(&panel, &x, k, &mut out) };
        for r in 0..3 {
            for c in 0..PANEL {
                let want: f32 = (0..k).map(|kk| x[r * k + kk] * panel[kk * PANEL + c]).sum();
                assert!((out[r * PANEL + c] - want).abs() < 1e-4, "row {r} column {c}");
            }
        }
    }

    /// The int8 tiles this CPU has against the integer sums, for every row count (odd ones
    /// included: `smmla` takes rows in pairs), with and without accumulating, over an odd number
    /// of quads (`smmla` takes them in pairs), the extreme bytes included.
    #[test]
    fn int8_tiles_are_exact_integer_sums() {
        let (count, stride) = (9, 11);
        let byte = |v: f32| (v * 128.0).clamp(-128.0, 127.0) as i8 as u8;
        let mut chunk: Vec<u8> = values(count * 4 * PANEL, 5).into_iter().map(byte).collect();
        chunk[0] = (-127i8) as u8;
        chunk[1] = 127;
        let mut a: Vec<u8> = values(12 * 4 * stride, 6).into_iter().map(byte).collect();
        a[0] = 0x80; // -128
        a[1] = 0x7f;
        let want = |r: usize, c: usize| -> i32 {
            (0..count * 4)
                .map(|i| {
                    let (q, g) = (i / 4, i % 4);
                    i32::from(a[r * 4 * stride + i] as i8) * i32::from(chunk[q * 4 * PANEL + 4 * c + g] as i8)
                })
                .sum()
        };
        let sdot = std::arch::is_aarch64_feature_detected!("dotprod");
        let smmla = std::arch::is_aarch64_feature_detected!("i8mm");
        eprintln!(
            "int8 tiles tested: widening{}{}",
            if sdot { ", sdot" } else { "" },
            if smmla { ", smmla" } else { "" }
        );
        macro_rules! check {
            ($($r:literal)*) => {$(
                for accumulate in [false, true] {
                    let start: Vec<i32> = (0..$r * PANEL as i32).map(|i| i * 7 - 300).collect();
                    let mut tiles = vec![("widening", start.clone())];
                    unsafe { tile_widening::<$r>(&chunk, &a, stride, count, &mut tiles[0].1, accumulate) };
                    if sdot {
                        tiles.push(("sdot", start.clone()));
                        unsafe { tile_sdot::<$r>(&chunk, &a, stride, count, &mut tiles[1].1, accumulate) };
                    }
                    if smmla {
                        let mut out = start.clone();
                        unsafe { tile_smmla::<$r>(&chunk, &a, stride, count, &mut out, accumulate) };
                        tiles.push(("smmla", out));
                    }
                    for (name, out) in &tiles {
                        for r in 0..$r {
                            for c in 0..PANEL {
                                let base = if accumulate { start[r * PANEL + c] } else { 0 };
                                assert_eq!(out[r * PANEL + c], base + want(r, c), "{name}, {} rows: {r}, {c}", $r);
                            }
                        }
                    }
                }
            )*};
        }
        check!(1 2 3 4 5 7 12);
    }

    /// The `bfmmla` tile against the f64 sums of the same bf16 values, for every row count,
    /// with and without accumulating, over an odd number of pairs. The instruction's sums are
    /// f32 (rounded to odd within a block of four products), so within a few f32 roundings.
    #[test]
    fn bf16_tile_is_the_product_of_the_bf16_values() {
        if !std::arch::is_aarch64_feature_detected!("bf16") {
            eprintln!("this CPU has no bf16: the bfmmla tile is not tested here");
            return;
        }
        let (count, stride) = (9, 11);
        // bf16 bits of a value (truncated: the tile takes the bits it is given).
        let bits = |v: f32| (v.to_bits() >> 16) as u16;
        let value = |b: u16| f64::from(f32::from_bits(u32::from(b) << 16));
        let chunk: Vec<u16> = values(count * 2 * PANEL, 7).into_iter().map(bits).collect();
        let a: Vec<u16> = values(12 * 2 * stride, 8).into_iter().map(|v| bits(v * 3.0)).collect();
        // The sum and the sum of magnitudes (what bounds the roundings).
        let want = |r: usize, c: usize| -> (f64, f64) {
            (0..count * 2)
                .map(|i| value(a[r * 2 * stride + i]) * value(chunk[i / 2 * 2 * PANEL + 2 * c + i % 2]))
                .fold((0.0, 0.0), |(s, m), p| (s + p, m + p.abs()))
        };
        macro_rules! check {
            ($($r:literal)*) => {$(
                for accumulate in [false, true] {
                    let start: Vec<f32> = (0..$r * PANEL).map(|i| i as f32 * 0.25 - 9.0).collect();
                    let mut out = start.clone();
                    unsafe { tile_bfmmla::<$r>(&chunk, &a, stride, count, &mut out, accumulate) };
                    for r in 0..$r {
                        for c in 0..PANEL {
                            let base = if accumulate { f64::from(start[r * PANEL + c]) } else { 0.0 };
                            let ((sum, magnitude), got) = (want(r, c), f64::from(out[r * PANEL + c]));
                            // Two roundings per instruction (five here), each within 2⁻²⁴ of
                            // the running magnitude.
                            let bound = 10.0 * (base.abs() + magnitude) / f64::from(1u32 << 24);
                            let (error, rows) = ((got - base - sum).abs(), $r);
                            assert!(error <= bound, "{rows} rows: {r}, {c}: {got} vs {}", base + sum);
                        }
                    }
                }
            )*};
        }
        check!(1 2 3 4 5 7 12);
    }
}
