//! Attention over short sequences (a CLIP image's 50 tokens, a text's 77, up to the fused
//! kernel's 256) on CPUs with AVX-512 (16 keys a register), AVX2 + FMA (8 keys a register,
//! [`avx2`]) or NEON (4 keys a register, [`neon`]), for heads of up to 64 values. Attention is about 1% of
//! a ViT-B/32's arithmetic but took a sixth of its time at int8 one dot product at a time;
//! here 16 keys at once.
//!
//! For each sequence and block of [`QUERIES`] queries, head by head: the keys the block sees
//! are laid out transposed (`[head width, keys]`, zero past them) so that a query's scores
//! against 16 keys are one register, its head width of multiply-adds (four key blocks kept in
//! flight); the softmax runs 16 scores at a time (its exponential from
//! [`super::kernels::exp16`]); the output sums the values' rows weighted by the
//! probabilities, a head's ≤ 64 values in four registers. The same arithmetic as the scalar
//! kernel, but for that exponential and the order of the sums.

use rayon::prelude::*;

use super::kernels::{avx2, avx512f, neon};

/// The kernels.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kernel {
    Avx512,
    Avx2,
    /// aarch64.
    Neon,
}

/// The kernel this CPU runs, if any.
fn kernel() -> Option<Kernel> {
    if avx512f() {
        Some(Kernel::Avx512)
    } else if avx2() {
        Some(Kernel::Avx2)
    } else if neon() {
        Some(Kernel::Neon)
    } else {
        None
    }
}

/// Queries a task takes when there are few sequences: they share one transposed copy of each
/// head's keys.
const QUERIES: usize = 16;

/// The widest head it takes (four registers of output).
const MAX_HEAD: usize = 64;

/// What one call computes: `heads` heads over `[b, s, 3d]` projections.
#[derive(Debug, Clone, Copy)]
pub(super) struct Problem<'a> {
    pub heads: usize,
    pub causal: bool,
    /// Multiplies each score before the softmax.
    pub scale: f32,
    /// Keys at or past `lengths[b]` are hidden (padding).
    pub lengths: Option<&'a [usize]>,
}

impl Problem<'_> {
    /// How many keys query `i` of sequence `bi` sees.
    pub(super) fn visible(&self, bi: usize, i: usize, s: usize) -> usize {
        let len = self.lengths.map_or(s, |l| l[bi].min(s));
        if self.causal { (i + 1).min(len) } else { len }
    }
}

/// `[b, s, d]` attention outputs of the projections `src` (`[b, s, 3d]`: queries, keys and
/// values, heads side by side), or `None` when this CPU lacks AVX-512 and AVX2 or a head is
/// wider than 64 (the caller's kernel then runs).
pub(super) fn attention(src: &[f32], b: usize, s: usize, d: usize, problem: &Problem) -> Option<Vec<f32>> {
    attention_with(kernel()?, src, b, s, d, problem)
}

/// [`attention`] with `kernel`, which the caller checked this CPU runs.
fn attention_with(kernel: Kernel, src: &[f32], b: usize, s: usize, d: usize, problem: &Problem) -> Option<Vec<f32>> {
    let heads = problem.heads;
    if heads == 0 || !d.is_multiple_of(heads) || d / heads > MAX_HEAD || src.len() != b * s * 3 * d {
        return None;
    }
    let mut out = vec![0f32; b * s * d];
    if s == 0 || d == 0 {
        return Some(out);
    }
    // With sequences enough for every thread, one task a sequence (one copy of its keys per
    // head); otherwise blocks of queries too.
    let queries = if b >= 2 * rayon::current_num_threads() { s } else { QUERIES };
    out.par_chunks_mut(s * d).enumerate().for_each(|(bi, out)| {
        let seq = &src[bi * s * 3 * d..][..s * 3 * d];
        out.par_chunks_mut(queries * d).enumerate().for_each(|(block, out)| {
            // SAFETY (each arm): the CPU has the kernel's features (checked by `kernel`).
            unsafe {
                match kernel {
                    Kernel::Avx512 => query_block(seq, s, d, problem, bi, block * queries, out),
                    Kernel::Avx2 => avx2::query_block(seq, s, d, problem, bi, block * queries, out),
                    Kernel::Neon => neon::query_block(seq, s, d, problem, bi, block * queries, out),
                }
            }
        });
    });
    Some(out)
}

/// The outputs of queries `first..` (as many as `out` has rows of `d`) of sequence `bi`
/// (`seq`, `[s, 3d]`), every head.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
fn query_block(seq: &[f32], s: usize, d: usize, problem: &Problem, bi: usize, first: usize, out: &mut [f32]) {
    let rows = out.len() / d;
    let hd = d / problem.heads;
    // Every query of the block sees at most what its last one sees.
    let keys = (first..first + rows).map(|i| problem.visible(bi, i, s)).max().unwrap_or(0);
    let stride = keys.div_ceil(16) * 16;
    let mut kt = vec![0f32; hd * stride];
    let mut scores = vec![0f32; stride];
    for h in 0..problem.heads {
        for j in 0..keys {
            let key = &seq[j * 3 * d + d + h * hd..][..hd];
            for (t, &k) in key.iter().enumerate() {
                kt[t * stride + j] = k;
            }
        }
        for (r, out) in out.chunks_exact_mut(d).enumerate() {
            let i = first + r;
            let visible = problem.visible(bi, i, s);
            let out = &mut out[h * hd..][..hd];
            if visible == 0 {
                out.fill(0.0);
                continue;
            }
            let q = &seq[i * 3 * d + h * hd..][..hd];
            key_scores(q, &kt, stride, visible.div_ceil(16), &mut scores);
            softmax(&mut scores[..visible.div_ceil(16) * 16], visible, problem.scale);
            weighted_values(seq, d, h, &scores[..visible], out);
        }
    }
}

#[cfg(not(target_arch = "x86_64"))]
fn query_block(_: &[f32], _: usize, _: usize, _: &Problem, _: usize, _: usize, _: &mut [f32]) {
    unreachable!("the kernel is only offered on x86-64");
}

/// `scores[16 c + l] = q · key(16 c + l)` for the first `blocks` blocks of 16 keys of `kt`
/// (`[q.len(), stride]`).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
fn key_scores(q: &[f32], kt: &[f32], stride: usize, blocks: usize, scores: &mut [f32]) {
    assert!(kt.len() >= q.len() * stride && blocks * 16 <= stride && scores.len() >= blocks * 16);
    let mut c = 0;
    while c < blocks {
        let n = (blocks - c).min(4);
        // SAFETY (each arm): blocks c..c + n lie within `stride` and `scores` (asserted above).
        unsafe {
            match n {
                4 => scores_of::<4>(q, kt, stride, c, scores),
                3 => scores_of::<3>(q, kt, stride, c, scores),
                2 => scores_of::<2>(q, kt, stride, c, scores),
                _ => scores_of::<1>(q, kt, stride, c, scores),
            }
        }
        c += n;
    }
}

/// [`key_scores`] for blocks `c..c + N`, their sums side by side in registers.
///
/// # Safety
/// `16 (c + N) ≤ stride`, `kt` holds `q.len() · stride` values and `scores` `16 (c + N)`.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn scores_of<const N: usize>(q: &[f32], kt: &[f32], stride: usize, c: usize, scores: &mut [f32]) {
    use std::arch::x86_64::{_mm512_fmadd_ps, _mm512_loadu_ps, _mm512_set1_ps, _mm512_setzero_ps, _mm512_storeu_ps};
    let mut acc = [_mm512_setzero_ps(); N];
    for (t, &qt) in q.iter().enumerate() {
        let qt = _mm512_set1_ps(qt);
        for (n, acc) in acc.iter_mut().enumerate() {
            // SAFETY: t · stride + 16 (c + n) + 16 ≤ q.len() · stride (the caller's bounds).
            *acc = _mm512_fmadd_ps(qt, unsafe { _mm512_loadu_ps(kt.as_ptr().add(t * stride + 16 * (c + n))) }, *acc);
        }
    }
    for (n, acc) in acc.iter().enumerate() {
        // SAFETY: 16 (c + n) + 16 ≤ scores.len().
        unsafe { _mm512_storeu_ps(scores.as_mut_ptr().add(16 * (c + n)), *acc) };
    }
}

/// The softmax of the first `visible` values of `scores` (whole registers long), each
/// multiplied by `scale` first; the rest become 0.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
fn softmax(scores: &mut [f32], visible: usize, scale: f32) {
    use std::arch::x86_64::{
        __mmask16, _mm512_add_ps, _mm512_div_ps, _mm512_loadu_ps, _mm512_mask_max_ps, _mm512_maskz_mov_ps,
        _mm512_mul_ps, _mm512_reduce_add_ps, _mm512_reduce_max_ps, _mm512_set1_ps, _mm512_setzero_ps, _mm512_storeu_ps,
        _mm512_sub_ps,
    };
    assert!(scores.len().is_multiple_of(16) && visible <= scores.len());
    let mask = |c: usize| -> __mmask16 {
        let left = visible.saturating_sub(16 * c).min(16);
        ((1u32 << left) - 1) as __mmask16
    };
    let scale = _mm512_set1_ps(scale);
    let mut max = _mm512_set1_ps(f32::NEG_INFINITY);
    for c in 0..scores.len() / 16 {
        // SAFETY: 16 c + 16 ≤ scores.len().
        let v = _mm512_mul_ps(unsafe { _mm512_loadu_ps(scores.as_ptr().add(16 * c)) }, scale);
        unsafe { _mm512_storeu_ps(scores.as_mut_ptr().add(16 * c), v) };
        max = _mm512_mask_max_ps(max, mask(c), max, v);
    }
    let max = _mm512_set1_ps(_mm512_reduce_max_ps(max));
    let mut total = _mm512_setzero_ps();
    for c in 0..scores.len() / 16 {
        // SAFETY: as above.
        let v = unsafe { _mm512_loadu_ps(scores.as_ptr().add(16 * c)) };
        let e = _mm512_maskz_mov_ps(mask(c), super::kernels::exp16(_mm512_sub_ps(v, max)));
        unsafe { _mm512_storeu_ps(scores.as_mut_ptr().add(16 * c), e) };
        total = _mm512_add_ps(total, e);
    }
    let total = _mm512_set1_ps(_mm512_reduce_add_ps(total));
    for c in 0..scores.len() / 16 {
        // SAFETY: as above.
        unsafe {
            let v = _mm512_loadu_ps(scores.as_ptr().add(16 * c));
            _mm512_storeu_ps(scores.as_mut_ptr().add(16 * c), _mm512_div_ps(v, total));
        }
    }
}

/// `out = Σ_j probs[j] · value_j` of head `h` (`out.len()` ≤ 64 values) in `seq` (`[s, 3d]`).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
fn weighted_values(seq: &[f32], d: usize, h: usize, probs: &[f32], out: &mut [f32]) {
    let hd = out.len();
    assert!(hd <= MAX_HEAD && (h + 1) * hd <= d && probs.len() * 3 * d <= seq.len());
    // SAFETY (each arm): the bounds asserted above, and C registers hold the hd values.
    unsafe {
        match hd.div_ceil(16) {
            0 => {}
            1 => values_of::<1>(seq, d, h, probs, out),
            2 => values_of::<2>(seq, d, h, probs, out),
            3 => values_of::<3>(seq, d, h, probs, out),
            _ => values_of::<4>(seq, d, h, probs, out),
        }
    }
}

/// [`weighted_values`] with the head's values in `C` registers.
///
/// # Safety
/// `16 (C − 1) < out.len() ≤ 16 C`, `(h + 1) · out.len() ≤ d` and `probs.len() · 3d ≤ seq.len()`.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn values_of<const C: usize>(seq: &[f32], d: usize, h: usize, probs: &[f32], out: &mut [f32]) {
    use std::arch::x86_64::{
        __mmask16, _mm512_fmadd_ps, _mm512_mask_storeu_ps, _mm512_maskz_loadu_ps, _mm512_set1_ps, _mm512_setzero_ps,
    };
    let hd = out.len();
    let masks: [__mmask16; C] = std::array::from_fn(|c| ((1u32 << (hd - 16 * c).min(16)) - 1) as __mmask16);
    let mut acc = [_mm512_setzero_ps(); C];
    for (j, &p) in probs.iter().enumerate() {
        let p = _mm512_set1_ps(p);
        let value = seq[j * 3 * d + 2 * d + h * hd..][..hd].as_ptr();
        for (c, acc) in acc.iter_mut().enumerate() {
            // SAFETY: 16 c < hd, so the pointer lies inside the value's `hd` values, and the
            // masked load reads only the lanes below `hd − 16 c`.
            *acc = _mm512_fmadd_ps(p, unsafe { _mm512_maskz_loadu_ps(masks[c], value.add(16 * c)) }, *acc);
        }
    }
    for (c, acc) in acc.iter().enumerate() {
        // SAFETY: as above, inside `out`.
        unsafe { _mm512_mask_storeu_ps(out.as_mut_ptr().add(16 * c), masks[c], *acc) };
    }
}

/// The same kernel 8 keys (and 8 of a head's values) a register, with AVX2 and FMA.
#[cfg(target_arch = "x86_64")]
mod avx2 {
    use std::arch::x86_64::{
        __m256, _mm256_add_ps, _mm256_and_ps, _mm256_castsi256_ps, _mm256_cmpgt_epi32, _mm256_div_ps, _mm256_fmadd_ps,
        _mm256_loadu_ps, _mm256_max_ps, _mm256_mul_ps, _mm256_set1_epi32, _mm256_set1_ps, _mm256_setr_epi32,
        _mm256_setzero_ps, _mm256_storeu_ps, _mm256_sub_ps,
    };

    use super::Problem;

    /// [`super::query_block`] with AVX2.
    #[target_feature(enable = "avx2,fma")]
    pub(super) fn query_block(
        seq: &[f32],
        s: usize,
        d: usize,
        problem: &Problem,
        bi: usize,
        first: usize,
        out: &mut [f32],
    ) {
        let rows = out.len() / d;
        let hd = d / problem.heads;
        let keys = (first..first + rows).map(|i| problem.visible(bi, i, s)).max().unwrap_or(0);
        let stride = keys.div_ceil(8) * 8;
        let mut kt = vec![0f32; hd * stride];
        let mut scores = vec![0f32; stride];
        for h in 0..problem.heads {
            for j in 0..keys {
                let key = &seq[j * 3 * d + d + h * hd..][..hd];
                for (t, &k) in key.iter().enumerate() {
                    kt[t * stride + j] = k;
                }
            }
            for (r, out) in out.chunks_exact_mut(d).enumerate() {
                let i = first + r;
                let visible = problem.visible(bi, i, s);
                let out = &mut out[h * hd..][..hd];
                if visible == 0 {
                    out.fill(0.0);
                    continue;
                }
                let q = &seq[i * 3 * d + h * hd..][..hd];
                key_scores(q, &kt, stride, visible.div_ceil(8), &mut scores);
                softmax(&mut scores[..visible.div_ceil(8) * 8], visible, problem.scale);
                weighted_values(seq, d, h, &scores[..visible], out);
            }
        }
    }

    /// `scores[8 c + l] = q · key(8 c + l)` for the first `blocks` blocks of 8 keys of `kt`.
    #[target_feature(enable = "avx2,fma")]
    fn key_scores(q: &[f32], kt: &[f32], stride: usize, blocks: usize, scores: &mut [f32]) {
        assert!(kt.len() >= q.len() * stride && blocks * 8 <= stride && scores.len() >= blocks * 8);
        let mut c = 0;
        while c < blocks {
            let n = (blocks - c).min(4);
            // SAFETY (each arm): blocks c..c + n lie within `stride` and `scores` (asserted).
            unsafe {
                match n {
                    4 => scores_of::<4>(q, kt, stride, c, scores),
                    3 => scores_of::<3>(q, kt, stride, c, scores),
                    2 => scores_of::<2>(q, kt, stride, c, scores),
                    _ => scores_of::<1>(q, kt, stride, c, scores),
                }
            }
            c += n;
        }
    }

    /// # Safety
    /// `8 (c + N) ≤ stride`, `kt` holds `q.len() · stride` values and `scores` `8 (c + N)`.
    #[target_feature(enable = "avx2,fma")]
    unsafe fn scores_of<const N: usize>(q: &[f32], kt: &[f32], stride: usize, c: usize, scores: &mut [f32]) {
        let mut acc = [_mm256_setzero_ps(); N];
        for (t, &qt) in q.iter().enumerate() {
            let qt = _mm256_set1_ps(qt);
            for (n, acc) in acc.iter_mut().enumerate() {
                // SAFETY: t · stride + 8 (c + n) + 8 ≤ q.len() · stride.
                *acc = _mm256_fmadd_ps(qt, unsafe { _mm256_loadu_ps(kt.as_ptr().add(t * stride + 8 * (c + n))) }, *acc);
            }
        }
        for (n, acc) in acc.iter().enumerate() {
            // SAFETY: 8 (c + n) + 8 ≤ scores.len().
            unsafe { _mm256_storeu_ps(scores.as_mut_ptr().add(8 * (c + n)), *acc) };
        }
    }

    /// The 8 lanes of `v`.
    #[target_feature(enable = "avx2,fma")]
    fn lanes(v: __m256) -> [f32; 8] {
        let mut out = [0f32; 8];
        // SAFETY: `out` holds 8 values.
        unsafe { _mm256_storeu_ps(out.as_mut_ptr(), v) };
        out
    }

    /// The softmax of the first `visible` values of `scores` (whole registers long), each
    /// multiplied by `scale` first; the rest become 0.
    #[target_feature(enable = "avx2,fma")]
    fn softmax(scores: &mut [f32], visible: usize, scale: f32) {
        assert!(scores.len().is_multiple_of(8) && visible <= scores.len() && visible > 0);
        let iota = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
        // All ones in the lanes of register `c` below `visible`.
        let mask = |c: usize| {
            let left = visible.saturating_sub(8 * c).min(8) as i32;
            _mm256_castsi256_ps(_mm256_cmpgt_epi32(_mm256_set1_epi32(left), iota))
        };
        for x in &mut scores[visible..] {
            *x = f32::NEG_INFINITY;
        }
        let scale = _mm256_set1_ps(scale);
        let mut max = _mm256_set1_ps(f32::NEG_INFINITY);
        for c in 0..scores.len() / 8 {
            // SAFETY: 8 c + 8 ≤ scores.len().
            let v = _mm256_mul_ps(unsafe { _mm256_loadu_ps(scores.as_ptr().add(8 * c)) }, scale);
            unsafe { _mm256_storeu_ps(scores.as_mut_ptr().add(8 * c), v) };
            max = _mm256_max_ps(max, v);
        }
        let max = _mm256_set1_ps(lanes(max).iter().fold(f32::NEG_INFINITY, |m, &v| m.max(v)));
        let mut total = _mm256_setzero_ps();
        for c in 0..scores.len() / 8 {
            // SAFETY: as above.
            let v = unsafe { _mm256_loadu_ps(scores.as_ptr().add(8 * c)) };
            let e = _mm256_and_ps(mask(c), super::super::kernels::exp8(_mm256_sub_ps(v, max)));
            unsafe { _mm256_storeu_ps(scores.as_mut_ptr().add(8 * c), e) };
            total = _mm256_add_ps(total, e);
        }
        let total = _mm256_set1_ps(lanes(total).iter().sum());
        for c in 0..scores.len() / 8 {
            // SAFETY: as above.
            unsafe {
                let v = _mm256_loadu_ps(scores.as_ptr().add(8 * c));
                _mm256_storeu_ps(scores.as_mut_ptr().add(8 * c), _mm256_div_ps(v, total));
            }
        }
    }

    /// `out = Σ_j probs[j] · value_j` of head `h` (`out.len()` ≤ 64 values) in `seq`.
    #[target_feature(enable = "avx2,fma")]
    fn weighted_values(seq: &[f32], d: usize, h: usize, probs: &[f32], out: &mut [f32]) {
        let hd = out.len();
        assert!(hd <= super::MAX_HEAD && (h + 1) * hd <= d && probs.len() * 3 * d <= seq.len());
        // SAFETY (each arm): the bounds asserted above; C whole registers lie inside hd.
        unsafe {
            match hd / 8 {
                0 => {}
                1 => values_of::<1>(seq, d, h, probs, out),
                2 => values_of::<2>(seq, d, h, probs, out),
                3 => values_of::<3>(seq, d, h, probs, out),
                4 => values_of::<4>(seq, d, h, probs, out),
                5 => values_of::<5>(seq, d, h, probs, out),
                6 => values_of::<6>(seq, d, h, probs, out),
                7 => values_of::<7>(seq, d, h, probs, out),
                _ => values_of::<8>(seq, d, h, probs, out),
            }
        }
        // The values past the whole registers, one at a time.
        for t in hd / 8 * 8..hd {
            out[t] = probs.iter().enumerate().map(|(j, &p)| p * seq[j * 3 * d + 2 * d + h * hd + t]).sum();
        }
    }

    /// # Safety
    /// `8 C ≤ out.len()`, `(h + 1) · out.len() ≤ d` and `probs.len() · 3d ≤ seq.len()`.
    #[target_feature(enable = "avx2,fma")]
    unsafe fn values_of<const C: usize>(seq: &[f32], d: usize, h: usize, probs: &[f32], out: &mut [f32]) {
        let hd = out.len();
        let mut acc = [_mm256_setzero_ps(); C];
        for (j, &p) in probs.iter().enumerate() {
            let p = _mm256_set1_ps(p);
            let value = seq[j * 3 * d + 2 * d + h * hd..][..hd].as_ptr();
            for (c, acc) in acc.iter_mut().enumerate() {
                // SAFETY: 8 c + 8 ≤ hd, inside the value's `hd` values.
                *acc = _mm256_fmadd_ps(p, unsafe { _mm256_loadu_ps(value.add(8 * c)) }, *acc);
            }
        }
        for (c, acc) in acc.iter().enumerate() {
            // SAFETY: as above, inside `out`.
            unsafe { _mm256_storeu_ps(out.as_mut_ptr().add(8 * c), *acc) };
        }
    }
}

#[cfg(not(target_arch = "x86_64"))]
mod avx2 {
    pub(super) fn query_block(_: &[f32], _: usize, _: usize, _: &super::Problem, _: usize, _: usize, _: &mut [f32]) {
        unreachable!("the kernel is only offered on x86-64");
    }
}

/// The same kernel 4 keys (and 4 of a head's values) a register, with NEON.
#[cfg(target_arch = "aarch64")]
mod neon {
    use std::arch::aarch64::{
        vaddq_f32, vaddvq_f32, vdupq_n_f32, vfmaq_f32, vld1q_f32, vmaxq_f32, vmaxvq_f32, vmulq_f32, vst1q_f32,
        vsubq_f32,
    };

    use super::super::neon::exp4;
    use super::Problem;

    /// [`super::query_block`] with NEON.
    ///
    /// # Safety
    /// The CPU has NEON.
    #[target_feature(enable = "neon")]
    pub(super) unsafe fn query_block(
        seq: &[f32],
        s: usize,
        d: usize,
        problem: &Problem,
        bi: usize,
        first: usize,
        out: &mut [f32],
    ) {
        let rows = out.len() / d;
        let hd = d / problem.heads;
        let keys = (first..first + rows).map(|i| problem.visible(bi, i, s)).max().unwrap_or(0);
        let stride = keys.div_ceil(4) * 4;
        let mut kt = vec![0f32; hd * stride];
        let mut scores = vec![0f32; stride];
        for h in 0..problem.heads {
            for j in 0..keys {
                let key = &seq[j * 3 * d + d + h * hd..][..hd];
                for (t, &k) in key.iter().enumerate() {
                    kt[t * stride + j] = k;
                }
            }
            for (r, out) in out.chunks_exact_mut(d).enumerate() {
                let i = first + r;
                let visible = problem.visible(bi, i, s);
                let out = &mut out[h * hd..][..hd];
                if visible == 0 {
                    out.fill(0.0);
                    continue;
                }
                let q = &seq[i * 3 * d + h * hd..][..hd];
                let scores = &mut scores[..visible.div_ceil(4) * 4];
                key_scores(q, &kt, stride, scores);
                softmax(scores, visible, problem.scale);
                weighted_values(seq, d, h, &scores[..visible], out);
            }
        }
    }

    /// `scores[4 c + l] = q · key(4 c + l)` for every block of 4 keys `scores` holds, four
    /// blocks at a time.
    #[target_feature(enable = "neon")]
    fn key_scores(q: &[f32], kt: &[f32], stride: usize, scores: &mut [f32]) {
        assert!(kt.len() >= q.len() * stride && scores.len() <= stride && scores.len().is_multiple_of(4));
        for (c, scores) in scores.chunks_mut(16).enumerate() {
            let mut acc = [vdupq_n_f32(0.0); 4];
            let n = scores.len() / 4;
            for (t, &qt) in q.iter().enumerate() {
                let qt = vdupq_n_f32(qt);
                for (m, acc) in acc.iter_mut().enumerate().take(n) {
                    // SAFETY: t · stride + 16 c + 4 m + 4 ≤ t · stride + scores' length ≤ kt.len().
                    *acc = vfmaq_f32(*acc, qt, unsafe { vld1q_f32(kt.as_ptr().add(t * stride + 16 * c + 4 * m)) });
                }
            }
            for (m, acc) in acc.iter().enumerate().take(n) {
                // SAFETY: 4 m + 4 ≤ this chunk's length.
                unsafe { vst1q_f32(scores.as_mut_ptr().add(4 * m), *acc) };
            }
        }
    }

    /// The softmax of the first `visible` values of `scores` (whole registers long), each
    /// multiplied by `scale` first; the rest become 0.
    #[target_feature(enable = "neon")]
    fn softmax(scores: &mut [f32], visible: usize, scale: f32) {
        assert!(scores.len().is_multiple_of(4) && visible <= scores.len() && visible > 0);
        let (scale, mut max) = (vdupq_n_f32(scale), vdupq_n_f32(f32::NEG_INFINITY));
        for c in (0..scores.len()).step_by(4) {
            // SAFETY: c + 4 ≤ scores.len().
            unsafe {
                let v = vmulq_f32(vld1q_f32(scores.as_ptr().add(c)), scale);
                vst1q_f32(scores.as_mut_ptr().add(c), v);
                if c + 4 <= visible {
                    max = vmaxq_f32(max, v);
                }
            }
        }
        let max = scores[visible / 4 * 4..visible].iter().fold(vmaxvq_f32(max), |m, &v| m.max(v));
        let max = vdupq_n_f32(max);
        for c in (0..scores.len()).step_by(4) {
            // SAFETY: as above.
            unsafe {
                let e = exp4(vsubq_f32(vld1q_f32(scores.as_ptr().add(c)), max));
                vst1q_f32(scores.as_mut_ptr().add(c), e);
            }
        }
        scores[visible..].fill(0.0);
        let mut total = vdupq_n_f32(0.0);
        for c in (0..scores.len()).step_by(4) {
            // SAFETY: as above.
            total = vaddq_f32(total, unsafe { vld1q_f32(scores.as_ptr().add(c)) });
        }
        let inverse = vdupq_n_f32(1.0 / vaddvq_f32(total));
        for c in (0..scores.len()).step_by(4) {
            // SAFETY: as above.
            unsafe { vst1q_f32(scores.as_mut_ptr().add(c), vmulq_f32(vld1q_f32(scores.as_ptr().add(c)), inverse)) };
        }
    }

    /// `out = Σ_j probs[j] · value_j` of head `h` (`out.len()` ≤ 64 values) in `seq`, 4 values
    /// a register (the rest one at a time).
    #[target_feature(enable = "neon")]
    fn weighted_values(seq: &[f32], d: usize, h: usize, probs: &[f32], out: &mut [f32]) {
        let hd = out.len();
        assert!(hd <= super::MAX_HEAD && (h + 1) * hd <= d && probs.len() * 3 * d <= seq.len());
        let whole = hd / 4;
        let mut acc = [vdupq_n_f32(0.0); super::MAX_HEAD / 4];
        for (j, &p) in probs.iter().enumerate() {
            let p = vdupq_n_f32(p);
            let value = seq[j * 3 * d + 2 * d + h * hd..][..hd].as_ptr();
            for (c, acc) in acc.iter_mut().enumerate().take(whole) {
                // SAFETY: 4 c + 4 ≤ hd, inside the value's `hd` values.
                *acc = vfmaq_f32(*acc, p, unsafe { vld1q_f32(value.add(4 * c)) });
            }
        }
        for (c, acc) in acc.iter().enumerate().take(whole) {
            // SAFETY: 4 c + 4 ≤ hd = out.len().
            unsafe { vst1q_f32(out.as_mut_ptr().add(4 * c), *acc) };
        }
        for t in whole * 4..hd {
            out[t] = probs.iter().enumerate().map(|(j, &p)| p * seq[j * 3 * d + 2 * d + h * hd + t]).sum();
        }
    }
}

#[cfg(not(target_arch = "aarch64"))]
mod neon {
    /// # Safety
    /// None needed: it only panics.
    pub(super) unsafe fn query_block(
        _: &[f32],
        _: usize,
        _: usize,
        _: &super::Problem,
        _: usize,
        _: usize,
        _: &mut [f32],
    ) {
        unreachable!("the kernel is only offered on aarch64");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The attention one value at a time, in f64.
    fn reference(src: &[f32], b: usize, s: usize, d: usize, problem: &Problem) -> Vec<f32> {
        let hd = d / problem.heads;
        let mut out = vec![0f32; b * s * d];
        for bi in 0..b {
            let at = |j: usize, part: usize, h: usize, t: usize| {
                f64::from(src[(bi * s + j) * 3 * d + part * d + h * hd + t])
            };
            for i in 0..s {
                let visible = problem.visible(bi, i, s);
                for h in 0..problem.heads {
                    let scores: Vec<f64> = (0..visible)
                        .map(|j| {
                            (0..hd).map(|t| at(i, 0, h, t) * at(j, 1, h, t)).sum::<f64>() * f64::from(problem.scale)
                        })
                        .collect();
                    let max = scores.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
                    let exps: Vec<f64> = scores.iter().map(|v| (v - max).exp()).collect();
                    let total: f64 = exps.iter().sum();
                    for t in 0..hd {
                        let v: f64 = exps.iter().enumerate().map(|(j, e)| e / total * at(j, 2, h, t)).sum();
                        out[(bi * s + i) * d + h * hd + t] = v as f32;
                    }
                }
            }
        }
        out
    }

    #[test]
    fn matches_the_definition_on_every_shape() {
        let kernels: Vec<Kernel> = [(Kernel::Avx512, avx512f()), (Kernel::Avx2, avx2()), (Kernel::Neon, neon())]
            .into_iter()
            .filter_map(|(k, runs)| runs.then_some(k))
            .collect();
        if kernels.is_empty() {
            eprintln!("skipped: this CPU has none of AVX-512, AVX2 and NEON");
        }
        for kernel in kernels {
            check(kernel);
        }
    }

    fn check(kernel: Kernel) {
        // (batch, tokens, width, heads): one head, heads of 8/12/16/20/64 values (a partial
        // register), sequences shorter than a block, across blocks and query blocks, 77 and 50.
        let shapes = [
            (1, 1, 8, 1),
            (2, 5, 24, 2),
            (3, 17, 48, 4),
            (2, 50, 768, 12),
            (1, 77, 512, 8),
            (2, 33, 60, 3),
            (1, 130, 128, 2),
        ];
        for (seed, &(b, s, d, heads)) in shapes.iter().enumerate() {
            let src: Vec<f32> =
                super::super::packed::test_values(b * s * 3 * d, seed as u64 + 1).iter().map(|v| 3.0 * v).collect();
            let lengths: Vec<usize> = (0..b).map(|bi| s - bi * s / 3).collect();
            for causal in [false, true] {
                for lengths in [None, Some(&lengths[..])] {
                    let problem = Problem { heads, causal, scale: 0.7, lengths };
                    let ours = attention_with(kernel, &src, b, s, d, &problem).expect("heads ≤ 64");
                    let want = reference(&src, b, s, d, &problem);
                    let worst = ours.iter().zip(&want).map(|(a, b)| (a - b).abs()).fold(0f32, f32::max);
                    // Scores reach ±100 here, where an f32 ulp is 8e-6 (wrong keys, heads or
                    // masks are off by the values' own size, ~1).
                    assert!(
                        worst < 1e-4,
                        "{kernel:?} {b}x{s}x{d}, {heads} heads, causal {causal}, lengths {lengths:?}: off by {worst}"
                    );
                }
            }
        }
    }

    #[test]
    fn declines_what_it_does_not_take() {
        let problem = Problem { heads: 1, causal: false, scale: 1.0, lengths: None };
        assert!(attention(&vec![0.0; 3 * 80], 1, 1, 80, &problem).is_none(), "a head of 80");
        assert!(attention(&[0.0; 5], 1, 1, 2, &problem).is_none(), "a wrong length");
    }
}
