//! Self-attention over long sequences on the CPU (BLIP's 577 image tokens, CLIPSeg's 485), in
//! blocks that stay in cache.
//!
//! The generic path makes four activation-sized copies (queries, keys and values split out of
//! the fused projections per head, the merged output), writes every head's full score matrix
//! (12 × 577 × 577 floats, 16 MB per image, out of cache) and reads it back twice for the
//! softmax and once for the weighted sum. Here each task takes one head of one sequence and a
//! block of [`QUERY_BLOCK`] queries: its scores (64 × 577 floats, 148 KB) are computed by a
//! matrix product straight from the fused projections (strided, no copy), turned into
//! probabilities in place (a vectorised exponential where the CPU has AVX-512, AVX2 or NEON),
//! and multiplied by the head's values straight into the output's columns. Tasks run in
//! parallel over rayon; the products inside a task are single-threaded `gemm` calls.

use candle_core::{CpuStorage, CustomOp1, Layout, Shape, Tensor};
use rayon::prelude::*;

use super::kernels::f32_slice;

type CResult<T> = candle_core::Result<T>;

/// Queries per task: their scores (`QUERY_BLOCK` × keys) stay in L2 beside the head's keys and
/// values while the softmax and the second product read them.
const QUERY_BLOCK: usize = 64;

/// Attention from fused `[b, s, 3d]` projections (queries pre-scaled) to `[b, s, d]`.
/// `key_bias` (`[b, s]`, 0 or -∞ in practice) is added to every query's score of each key.
pub(super) fn attention(qkv: &Tensor, heads: usize, causal: bool, key_bias: Option<Vec<f32>>) -> CResult<Tensor> {
    qkv.contiguous()?.apply_op1_no_bwd(&Blocked { heads, causal, key_bias })
}

struct Blocked {
    heads: usize,
    causal: bool,
    key_bias: Option<Vec<f32>>,
}

/// The output buffer shared by the tasks; each writes its own disjoint rows × columns.
#[derive(Clone, Copy)]
struct OutPtr(*mut f32);
// SAFETY: tasks write disjoint regions (one head's columns of one block of rows).
unsafe impl Send for OutPtr {}
unsafe impl Sync for OutPtr {}

impl OutPtr {
    /// The pointer (a method, so that closures capture the whole `Sync` wrapper).
    fn get(self) -> *mut f32 {
        self.0
    }
}

impl CustomOp1 for Blocked {
    fn name(&self) -> &'static str {
        "clipdex-blocked-attention"
    }

    fn cpu_fwd(&self, storage: &CpuStorage, layout: &Layout) -> CResult<(CpuStorage, Shape)> {
        let (b, s, d3) = layout.shape().dims3()?;
        let qkv = f32_slice(storage, layout, self.name())?;
        let (d, heads) = (d3 / 3, self.heads);
        if heads == 0 || d3 % 3 != 0 || d % heads != 0 {
            candle_core::bail!("{}: {d3} projections do not split into 3 × {heads} heads", self.name())
        }
        if let Some(bias) = &self.key_bias
            && bias.len() != b * s
        {
            candle_core::bail!("{}: key bias of {} for {b} × {s} keys", self.name(), bias.len())
        }
        let hd = d / heads;
        let blocks = s.div_ceil(QUERY_BLOCK);
        let mut out = vec![0f32; b * s * d];
        let dst = OutPtr(out.as_mut_ptr());
        (0..b * heads * blocks).into_par_iter().for_each_init(Vec::new, |scores, task| {
            let (bi, h, block) = (task / (heads * blocks), task / blocks % heads, task % blocks);
            let q0 = block * QUERY_BLOCK;
            let rows = QUERY_BLOCK.min(s - q0);
            // Causal: no query of the block sees past its last row.
            let keys = if self.causal { q0 + rows } else { s };
            scores.resize(rows * keys, 0.0);
            let seq = &qkv[bi * s * d3..(bi + 1) * s * d3];
            let bias = self.key_bias.as_ref().map(|b| &b[bi * s..bi * s + keys]);
            // SAFETY: the query block is rows × hd at row stride d3 inside `seq`, the keys are
            // read as their transpose (hd × keys: row stride 1, column stride d3) and the values
            // as keys × hd at row stride d3, all inside `seq`; `scores` holds rows × keys; the
            // output block (rows × hd at row stride d, column offset h·hd) is this task's alone.
            unsafe {
                product(
                    (rows, keys, hd),
                    (scores.as_mut_ptr(), keys),
                    (seq.as_ptr().add(q0 * d3 + h * hd), 1, d3),
                    (seq.as_ptr().add(d + h * hd), d3, 1),
                );
                for (r, row) in scores.chunks_mut(keys).enumerate() {
                    let visible = if self.causal { q0 + r + 1 } else { keys };
                    softmax_in_place(row, visible, bias);
                }
                product(
                    (rows, hd, keys),
                    (dst.get().add((bi * s + q0) * d + h * hd), d),
                    (scores.as_ptr(), 1, keys),
                    (seq.as_ptr().add(2 * d + h * hd), 1, d3),
                );
            }
        });
        Ok((CpuStorage::F32(out), Shape::from((b, s, d))))
    }
}

/// `dst = lhs · rhs` for an `m × k` `lhs` and a `k × n` `rhs`, each given as (pointer, column
/// stride, row stride), into `dst` (pointer, row stride; columns contiguous), on this thread.
///
/// # Safety
/// Every element the strides reach must be inside its buffer, and `dst` must not overlap the
/// inputs or be written by another thread meanwhile.
unsafe fn product(
    (m, n, k): (usize, usize, usize),
    (dst, dst_rs): (*mut f32, usize),
    (lhs, lhs_cs, lhs_rs): (*const f32, usize, usize),
    (rhs, rhs_cs, rhs_rs): (*const f32, usize, usize),
) {
    // SAFETY: the caller's contract.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            dst,
            1,
            dst_rs as isize,
            false,
            lhs,
            lhs_cs as isize,
            lhs_rs as isize,
            rhs,
            rhs_cs as isize,
            rhs_rs as isize,
            0.0,
            1.0,
            false,
            false,
            false,
            gemm::Parallelism::None,
        )
    }
}

/// The softmax of `row[..visible]` plus `bias`, in place; the rest of the row set to 0.
fn softmax_in_place(row: &mut [f32], visible: usize, bias: Option<&[f32]>) {
    let (seen, hidden) = row.split_at_mut(visible);
    hidden.fill(0.0);
    if let Some(bias) = bias {
        for (x, b) in seen.iter_mut().zip(bias) {
            *x += b;
        }
    }
    let max = seen.iter().fold(f32::NEG_INFINITY, |m, &x| m.max(x));
    let total = exp_minus(seen, max);
    let inv = 1.0 / total;
    for x in seen.iter_mut() {
        *x *= inv;
    }
}

/// `x ← e^(x − max)` over `xs`; returns the sum.
fn exp_minus(xs: &mut [f32], max: f32) -> f32 {
    #[cfg(target_arch = "x86_64")]
    {
        if super::kernels::avx512f() {
            // SAFETY: the CPU has AVX-512 F (checked above).
            let (done, sum) = unsafe { exp_minus_avx512(xs, max) };
            return sum + exp_minus_scalar(&mut xs[done..], max);
        }
        if super::kernels::avx2() {
            // SAFETY: the CPU has AVX2 and FMA (checked above).
            let (done, sum) = unsafe { exp_minus_avx2(xs, max) };
            return sum + exp_minus_scalar(&mut xs[done..], max);
        }
    }
    #[cfg(target_arch = "aarch64")]
    if super::kernels::neon() {
        // SAFETY: the CPU has NEON (checked above).
        let (done, sum) = unsafe { super::neon::exp_minus(xs, max) };
        return sum + exp_minus_scalar(&mut xs[done..], max);
    }
    exp_minus_scalar(xs, max)
}

fn exp_minus_scalar(xs: &mut [f32], max: f32) -> f32 {
    let mut sum = 0f32;
    for x in xs {
        *x = (*x - max).exp();
        sum += *x;
    }
    sum
}

/// [`exp_minus`] 16 values at a time; returns how many it did and their sum.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn exp_minus_avx512(xs: &mut [f32], max: f32) -> (usize, f32) {
    use std::arch::x86_64::{
        _mm512_add_ps, _mm512_loadu_ps, _mm512_reduce_add_ps, _mm512_set1_ps, _mm512_setzero_ps, _mm512_storeu_ps,
        _mm512_sub_ps,
    };
    let whole = xs.len() / 16 * 16;
    let m = _mm512_set1_ps(max);
    let mut sum = _mm512_setzero_ps();
    for i in (0..whole).step_by(16) {
        // SAFETY: i + 16 <= xs.len().
        unsafe {
            let e = super::kernels::exp16(_mm512_sub_ps(_mm512_loadu_ps(xs.as_ptr().add(i)), m));
            _mm512_storeu_ps(xs.as_mut_ptr().add(i), e);
            sum = _mm512_add_ps(sum, e);
        }
    }
    (whole, _mm512_reduce_add_ps(sum))
}

/// [`exp_minus`] 8 values at a time; returns how many it did and their sum.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn exp_minus_avx2(xs: &mut [f32], max: f32) -> (usize, f32) {
    use std::arch::x86_64::{
        _mm256_add_ps, _mm256_loadu_ps, _mm256_set1_ps, _mm256_setzero_ps, _mm256_storeu_ps, _mm256_sub_ps,
    };
    let whole = xs.len() / 8 * 8;
    let m = _mm256_set1_ps(max);
    let mut sum = _mm256_setzero_ps();
    for i in (0..whole).step_by(8) {
        // SAFETY: i + 8 <= xs.len().
        unsafe {
            let e = super::kernels::exp8(_mm256_sub_ps(_mm256_loadu_ps(xs.as_ptr().add(i)), m));
            _mm256_storeu_ps(xs.as_mut_ptr().add(i), e);
            sum = _mm256_add_ps(sum, e);
        }
    }
    let mut lanes = [0f32; 8];
    // SAFETY: `lanes` holds 8 values.
    unsafe { _mm256_storeu_ps(lanes.as_mut_ptr(), sum) };
    (whole, lanes.iter().sum())
}

#[cfg(test)]
mod tests {
    use candle_core::{Device, Tensor};

    use super::*;

    /// The textbook attention, one score at a time in f64.
    fn reference(
        qkv: &[f32],
        b: usize,
        s: usize,
        d: usize,
        heads: usize,
        causal: bool,
        bias: Option<&[f32]>,
    ) -> Vec<f32> {
        let (d3, hd) = (3 * d, d / heads);
        let mut out = vec![0f32; b * s * d];
        for bi in 0..b {
            let seq = &qkv[bi * s * d3..];
            for h in 0..heads {
                for i in 0..s {
                    let keys = if causal { i + 1 } else { s };
                    let scores: Vec<f64> = (0..keys)
                        .map(|j| {
                            let dot: f64 = (0..hd)
                                .map(|c| seq[i * d3 + h * hd + c] as f64 * seq[j * d3 + d + h * hd + c] as f64)
                                .sum();
                            dot + bias.map_or(0.0, |b| b[bi * s + j] as f64)
                        })
                        .collect();
                    let max = scores.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
                    let e: Vec<f64> = scores.iter().map(|x| (x - max).exp()).collect();
                    let total: f64 = e.iter().sum();
                    for c in 0..hd {
                        let v: f64 = (0..keys).map(|j| e[j] / total * seq[j * d3 + 2 * d + h * hd + c] as f64).sum();
                        out[(bi * s + i) * d + h * hd + c] = v as f32;
                    }
                }
            }
        }
        out
    }

    #[test]
    fn blocked_attention_matches_the_textbook_formula() {
        // Lengths below, at and across block boundaries (and a partial 16-wide tail in the
        // softmax); head widths of 8 and 24; causal or not; padded keys hidden by a bias.
        for (b, s, d, heads) in [(2, 5, 16, 2), (1, 64, 48, 2), (2, 130, 24, 3), (1, 200, 64, 8)] {
            let qkv = Tensor::randn(0f32, 1.0, (b, s, 3 * d), &Device::Cpu).unwrap();
            let values = qkv.flatten_all().unwrap().to_vec1::<f32>().unwrap();
            let padded: Vec<f32> =
                (0..b * s).map(|i| if i % s >= s - s / 4 - 1 { f32::NEG_INFINITY } else { 0.0 }).collect();
            for (causal, bias) in [(false, None), (true, None), (false, Some(padded))] {
                let got = attention(&qkv, heads, causal, bias.clone()).unwrap();
                assert_eq!(got.dims(), &[b, s, d]);
                let got = got.flatten_all().unwrap().to_vec1::<f32>().unwrap();
                let want = reference(&values, b, s, d, heads, causal, bias.as_deref());
                let err = got.iter().zip(&want).map(|(g, w)| (g - w).abs()).fold(0f32, f32::max);
                assert!(err < 2e-5, "b {b} s {s} d {d} heads {heads} causal {causal}: {err}");
            }
        }
    }
}
