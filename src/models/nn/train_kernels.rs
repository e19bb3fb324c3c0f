//! Fused CPU kernels with hand-written backward passes, for fine-tuning.
//!
//! candle's autograd is generic: every elementary op keeps its output for the backward pass,
//! and every gradient it hands back is summed into a fresh zero tensor. A transformer layer
//! written in elementary ops (layer norm as mean, subtract, square, mean, add, square root,
//! divide, multiply, add; attention's split copies, scores, softmax and merge; quick-GELU as
//! five ops; a linear layer's reshapes, transpose and bias) makes dozens of activation-sized
//! passes forward and as many again backward. Each op here does its piece in one pass forward
//! and one backward, derivatives written out, as PyTorch's fused kernels do. The tests below
//! check values and gradients against the elementary-op versions ([`crate::models::clip::train`] keeps those
//! for other devices and dtypes).

use std::cell::RefCell;

use candle_core::{CpuStorage, CustomOp1, CustomOp2, CustomOp3, DType, InplaceOp2, Layout, Shape, Tensor};
use rayon::prelude::*;

use super::kernels::{dot, f32_slice};
use super::short_attention::Problem;

type CResult<T> = candle_core::Result<T>;

/// Whether the fused kernels can take `t`: f32 on the CPU.
pub(crate) fn applies(t: &Tensor) -> bool {
    t.device().is_cpu() && t.dtype() == DType::F32
}

fn parallelism() -> gemm::Parallelism {
    match rayon::current_num_threads() {
        0 | 1 => gemm::Parallelism::None,
        n => gemm::Parallelism::Rayon(n),
    }
}

/// `x · Wᵀ (+ b)` for `x` `[rows, k]` and `W` `[n, k]`, row-major, into a new `[rows, n]`.
fn product_wt(x: &[f32], rows: usize, k: usize, w: &[f32], n: usize, bias: Option<&[f32]>) -> Vec<f32> {
    let mut dst = match bias {
        Some(b) => b.repeat(rows),
        None => vec![0f32; rows * n],
    };
    if rows == 0 || n == 0 {
        return dst;
    }
    // SAFETY: `dst` holds rows × n values (row stride n), `x` rows × k (row stride k) and `w`
    // n × k read as its transpose (k × n: row stride 1, column stride k); nothing aliases.
    unsafe {
        gemm::gemm(
            rows,
            n,
            k,
            dst.as_mut_ptr(),
            1,
            n as isize,
            bias.is_some(),
            x.as_ptr(),
            1,
            k as isize,
            w.as_ptr(),
            k as isize,
            1,
            1.0,
            1.0,
            false,
            false,
            false,
            parallelism(),
        );
    }
    dst
}

/// `x · Wᵀ + b` over the last dimension of `x` (any rank).
struct Linear;

impl Linear {
    fn forward(
        x: (&CpuStorage, &Layout),
        w: (&CpuStorage, &Layout),
        b: Option<(&CpuStorage, &Layout)>,
    ) -> CResult<(CpuStorage, Shape)> {
        let xs = f32_slice(x.0, x.1, "linear input")?;
        let ws = f32_slice(w.0, w.1, "linear weight")?;
        let (n, k) = w.1.shape().dims2()?;
        let bias = b.map(|(s, l)| f32_slice(s, l, "linear bias")).transpose()?;
        let mut dims = x.1.shape().dims().to_vec();
        if dims.last() != Some(&k) {
            candle_core::bail!("linear: input {:?} against weight {:?}", dims, (n, k));
        }
        let rows = xs.len() / k.max(1);
        *dims.last_mut().expect("rank ≥ 1") = n;
        Ok((CpuStorage::F32(product_wt(xs, rows, k, ws, n, bias)), Shape::from(dims)))
    }

    /// The gradients of input, weight and bias, each only where the graph needs it.
    fn backward(x: &Tensor, w: &Tensor, bias: Option<&Tensor>, grad: &Tensor) -> CResult<[Option<Tensor>; 3]> {
        let (n, k) = w.dims2()?;
        let rows = x.elem_count() / k.max(1);
        let g = grad.contiguous()?.reshape((rows, n))?;
        let dx = if x.track_op() { Some(g.matmul(w)?.reshape(x.shape())?) } else { None };
        let dw = if w.track_op() { Some(g.t()?.matmul(&x.contiguous()?.reshape((rows, k))?)?) } else { None };
        let db = match bias {
            Some(b) if b.track_op() => Some(g.apply_op1_no_bwd(&ColumnSums)?),
            _ => None,
        };
        Ok([dx, dw, db])
    }
}

/// The sums of the columns of a `[rows, n]` matrix, `[n]` (candle's `sum(0)` walks the
/// matrix column by column: a hundred times slower on a bias's gradient).
struct ColumnSums;

impl CustomOp1 for ColumnSums {
    fn name(&self) -> &'static str {
        "clipdex-column-sums"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> CResult<(CpuStorage, Shape)> {
        const BLOCK: usize = 64;
        let (_, n) = l.shape().dims2()?;
        let g = f32_slice(s, l, self.name())?;
        let partials: Vec<Vec<f32>> = g
            .par_chunks(BLOCK * n.max(1))
            .map(|block| {
                let mut sums = vec![0f32; n];
                for row in block.chunks(n) {
                    for (s, v) in sums.iter_mut().zip(row) {
                        *s += v;
                    }
                }
                sums
            })
            .collect();
        let mut sums = vec![0f32; n];
        for p in partials {
            for (s, v) in sums.iter_mut().zip(&p) {
                *s += v;
            }
        }
        Ok((CpuStorage::F32(sums), Shape::from(n)))
    }
}

impl CustomOp3 for Linear {
    fn name(&self) -> &'static str {
        "clipdex-train-linear"
    }

    fn cpu_fwd(
        &self,
        xs: &CpuStorage,
        xl: &Layout,
        ws: &CpuStorage,
        wl: &Layout,
        bs: &CpuStorage,
        bl: &Layout,
    ) -> CResult<(CpuStorage, Shape)> {
        Linear::forward((xs, xl), (ws, wl), Some((bs, bl)))
    }

    fn bwd(
        &self,
        x: &Tensor,
        w: &Tensor,
        b: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> CResult<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let [dx, dw, db] = Linear::backward(x, w, Some(b), grad)?;
        Ok((dx, dw, db))
    }
}

struct LinearNoBias;

impl CustomOp2 for LinearNoBias {
    fn name(&self) -> &'static str {
        "clipdex-train-linear-no-bias"
    }

    fn cpu_fwd(&self, xs: &CpuStorage, xl: &Layout, ws: &CpuStorage, wl: &Layout) -> CResult<(CpuStorage, Shape)> {
        Linear::forward((xs, xl), (ws, wl), None)
    }

    fn bwd(&self, x: &Tensor, w: &Tensor, _res: &Tensor, grad: &Tensor) -> CResult<(Option<Tensor>, Option<Tensor>)> {
        let [dx, dw, _] = Linear::backward(x, w, None, grad)?;
        Ok((dx, dw))
    }
}

/// `x · Wᵀ + b` over the last dimension, differentiable in all three.
pub(crate) fn linear(x: &Tensor, w: &Tensor, b: Option<&Tensor>) -> CResult<Tensor> {
    let (x, w) = (x.contiguous()?, w.contiguous()?);
    match b {
        Some(b) => x.apply_op3(&w, &b.contiguous()?, Linear),
        None => x.apply_op2(&w, LinearNoBias),
    }
}

/// Mean and 1/σ of a row (biased variance), as the elementary version computes them.
fn row_stats(x: &[f32], eps: f32) -> (f32, f32) {
    let d = x.len() as f32;
    let mean = x.iter().sum::<f32>() / d;
    let var = x.iter().map(|v| (v - mean) * (v - mean)).sum::<f32>() / d;
    (mean, 1.0 / (var + eps).sqrt())
}

/// Layer norm over the last dimension with weight and bias.
struct LayerNorm {
    eps: f32,
}

impl CustomOp3 for LayerNorm {
    fn name(&self) -> &'static str {
        "clipdex-train-layer-norm"
    }

    fn cpu_fwd(
        &self,
        xs: &CpuStorage,
        xl: &Layout,
        ws: &CpuStorage,
        wl: &Layout,
        bs: &CpuStorage,
        bl: &Layout,
    ) -> CResult<(CpuStorage, Shape)> {
        let x = f32_slice(xs, xl, self.name())?;
        let (w, b) = (f32_slice(ws, wl, self.name())?, f32_slice(bs, bl, self.name())?);
        let d = w.len();
        let mut out = vec![0f32; x.len()];
        out.par_chunks_mut(d).zip(x.par_chunks(d)).for_each(|(y, x)| {
            let (mean, rstd) = row_stats(x, self.eps);
            for (((y, &x), &w), &b) in y.iter_mut().zip(x).zip(w).zip(b) {
                *y = (x - mean) * rstd * w + b;
            }
        });
        Ok((CpuStorage::F32(out), xl.shape().clone()))
    }

    fn bwd(
        &self,
        x: &Tensor,
        w: &Tensor,
        _b: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> CResult<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let d = w.elem_count();
        let rows = x.elem_count() / d.max(1);
        let packed = x.apply_op3_no_bwd(w, &grad.contiguous()?, &LayerNormBackward { eps: self.eps })?;
        let dx = packed.narrow(0, 0, rows)?.reshape(x.shape())?;
        Ok((Some(dx), Some(packed.get(rows)?), Some(packed.get(rows + 1)?)))
    }
}

/// Rows of `x`, weight, gradient of the output → `[rows + 2, d]`: the input's gradient, then
/// the weight's and the bias's.
struct LayerNormBackward {
    eps: f32,
}

impl CustomOp3 for LayerNormBackward {
    fn name(&self) -> &'static str {
        "clipdex-train-layer-norm-backward"
    }

    fn cpu_fwd(
        &self,
        xs: &CpuStorage,
        xl: &Layout,
        ws: &CpuStorage,
        wl: &Layout,
        gs: &CpuStorage,
        gl: &Layout,
    ) -> CResult<(CpuStorage, Shape)> {
        const BLOCK: usize = 16;
        let (x, w, g) =
            (f32_slice(xs, xl, self.name())?, f32_slice(ws, wl, self.name())?, f32_slice(gs, gl, self.name())?);
        let d = w.len();
        let rows = x.len() / d.max(1);
        let mut out = vec![0f32; (rows + 2) * d];
        let (dx_all, sums) = out.split_at_mut(rows * d);
        let partials: Vec<(Vec<f32>, Vec<f32>)> = dx_all
            .par_chunks_mut(BLOCK * d)
            .enumerate()
            .map(|(block, dx_block)| {
                let (mut dw, mut db) = (vec![0f32; d], vec![0f32; d]);
                for (r, dx) in dx_block.chunks_mut(d).enumerate() {
                    let row = block * BLOCK + r;
                    let (x, g) = (&x[row * d..(row + 1) * d], &g[row * d..(row + 1) * d]);
                    let (mean, rstd) = row_stats(x, self.eps);
                    let (mut sum_dy, mut sum_dy_xhat) = (0f32, 0f32);
                    for ((((&x, &g), &w), dw), db) in x.iter().zip(g).zip(w).zip(dw.iter_mut()).zip(db.iter_mut()) {
                        let xhat = (x - mean) * rstd;
                        let dy = g * w;
                        sum_dy += dy;
                        sum_dy_xhat += dy * xhat;
                        *dw += g * xhat;
                        *db += g;
                    }
                    let (m1, m2) = (sum_dy / d as f32, sum_dy_xhat / d as f32);
                    for (((dx, &x), &g), &w) in dx.iter_mut().zip(x).zip(g).zip(w) {
                        let xhat = (x - mean) * rstd;
                        *dx = rstd * (g * w - m1 - xhat * m2);
                    }
                }
                (dw, db)
            })
            .collect();
        let (dw_sum, db_sum) = sums.split_at_mut(d);
        for (dw, db) in partials {
            for j in 0..d {
                dw_sum[j] += dw[j];
                db_sum[j] += db[j];
            }
        }
        Ok((CpuStorage::F32(out), Shape::from((rows + 2, d))))
    }
}

/// Layer norm over the last dimension, differentiable in input, weight and bias.
pub(crate) fn layer_norm(x: &Tensor, w: &Tensor, b: &Tensor, eps: f64) -> CResult<Tensor> {
    x.contiguous()?.apply_op3(&w.contiguous()?, &b.contiguous()?, LayerNorm { eps: eps as f32 })
}

/// Activations with a fused backward pass.
#[derive(Clone, Copy)]
pub(crate) enum Act {
    /// `x · σ(1.702 x)`.
    QuickGelu,
    /// `x · Φ(x)` with the exact normal CDF (erf).
    GeluErf,
}

impl Act {
    fn value(self, x: f32) -> f32 {
        match self {
            Act::QuickGelu => x / (1.0 + (-1.702 * x).exp()),
            Act::GeluErf => (candle_core::cpu::erf::erf_f32(x * std::f32::consts::FRAC_1_SQRT_2) + 1.0) * 0.5 * x,
        }
    }

    fn derivative(self, x: f32) -> f32 {
        match self {
            Act::QuickGelu => {
                let s = 1.0 / (1.0 + (-1.702 * x).exp());
                s + 1.702 * x * s * (1.0 - s)
            }
            Act::GeluErf => {
                let cdf = (candle_core::cpu::erf::erf_f32(x * std::f32::consts::FRAC_1_SQRT_2) + 1.0) * 0.5;
                let pdf =
                    (-0.5 * x * x).exp() * (0.5 * std::f32::consts::FRAC_2_SQRT_PI * std::f32::consts::FRAC_1_SQRT_2);
                cdf + x * pdf
            }
        }
    }
}

const CHUNK: usize = 4096;

impl CustomOp1 for Act {
    fn name(&self) -> &'static str {
        "clipdex-train-activation"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> CResult<(CpuStorage, Shape)> {
        let x = f32_slice(s, l, self.name())?;
        let mut out = vec![0f32; x.len()];
        out.par_chunks_mut(CHUNK).zip(x.par_chunks(CHUNK)).for_each(|(y, x)| {
            for (y, &x) in y.iter_mut().zip(x) {
                *y = self.value(x);
            }
        });
        Ok((CpuStorage::F32(out), l.shape().clone()))
    }

    fn bwd(&self, x: &Tensor, _res: &Tensor, grad: &Tensor) -> CResult<Option<Tensor>> {
        Ok(Some(x.apply_op2_no_bwd(&grad.contiguous()?, &ActBackward(*self))?))
    }
}

/// `x`, the output's gradient → the input's gradient.
struct ActBackward(Act);

impl CustomOp2 for ActBackward {
    fn name(&self) -> &'static str {
        "clipdex-train-activation-backward"
    }

    fn cpu_fwd(&self, xs: &CpuStorage, xl: &Layout, gs: &CpuStorage, gl: &Layout) -> CResult<(CpuStorage, Shape)> {
        let (x, g) = (f32_slice(xs, xl, self.name())?, f32_slice(gs, gl, self.name())?);
        let mut out = vec![0f32; x.len()];
        out.par_chunks_mut(CHUNK).zip(x.par_chunks(CHUNK).zip(g.par_chunks(CHUNK))).for_each(|(dx, (x, g))| {
            for ((dx, &x), &g) in dx.iter_mut().zip(x).zip(g) {
                *dx = g * self.0.derivative(x);
            }
        });
        Ok((CpuStorage::F32(out), xl.shape().clone()))
    }
}

/// The activation, differentiable.
pub(crate) fn activation(x: &Tensor, act: Act) -> CResult<Tensor> {
    x.contiguous()?.apply_op1(act)
}

/// Multi-head self-attention on fused projections `[b, s, 3d]` (queries, keys, values, heads
/// side by side) to the concatenated head outputs `[b, s, d]`: scores scaled by `scale`,
/// causal or not, and keys at or past `lengths[b]` hidden (padding).
#[derive(Clone)]
struct Attention {
    heads: usize,
    causal: bool,
    scale: f32,
    lengths: Option<Vec<usize>>,
}

impl Attention {
    fn problem(&self) -> Problem<'_> {
        Problem { heads: self.heads, causal: self.causal, scale: self.scale, lengths: self.lengths.as_deref() }
    }

    /// How many keys query `i` of sequence `bi` sees.
    fn visible(&self, bi: usize, i: usize, s: usize) -> usize {
        self.problem().visible(bi, i, s)
    }

    /// The softmax of query `q`'s scaled scores against the first `probs.len()` keys of head
    /// `h` in `seq` (`[s, 3d]`).
    fn probs(&self, seq: &[f32], q: &[f32], h: usize, d: usize, probs: &mut [f32]) {
        let (d3, hd) = (3 * d, d / self.heads);
        let mut max = f32::NEG_INFINITY;
        for (j, p) in probs.iter_mut().enumerate() {
            *p = dot(q, &seq[j * d3 + d + h * hd..j * d3 + d + (h + 1) * hd]) * self.scale;
            max = max.max(*p);
        }
        let mut total = 0f32;
        for p in probs.iter_mut() {
            *p = (*p - max).exp();
            total += *p;
        }
        for p in probs.iter_mut() {
            *p /= total;
        }
    }
}

impl CustomOp1 for Attention {
    fn name(&self) -> &'static str {
        "clipdex-train-attention"
    }

    fn cpu_fwd(&self, storage: &CpuStorage, layout: &Layout) -> CResult<(CpuStorage, Shape)> {
        let (b, s, d3) = layout.shape().dims3()?;
        let src = f32_slice(storage, layout, self.name())?;
        let d = d3 / 3;
        if let Some(out) = super::short_attention::attention(src, b, s, d, &self.problem()) {
            return Ok((CpuStorage::F32(out), Shape::from((b, s, d))));
        }
        let hd = d / self.heads;
        let mut out = vec![0f32; b * s * d];
        out.par_chunks_mut(d).enumerate().for_each(|(row, out_row)| {
            let (bi, i) = (row / s, row % s);
            let seq = &src[bi * s * d3..(bi + 1) * s * d3];
            let mut probs = vec![0f32; self.visible(bi, i, s)];
            for h in 0..self.heads {
                self.probs(seq, &seq[i * d3 + h * hd..i * d3 + (h + 1) * hd], h, d, &mut probs);
                let o = &mut out_row[h * hd..(h + 1) * hd];
                for (j, &p) in probs.iter().enumerate() {
                    let v = &seq[j * d3 + 2 * d + h * hd..j * d3 + 2 * d + (h + 1) * hd];
                    for (o, v) in o.iter_mut().zip(v) {
                        *o += p * v;
                    }
                }
            }
        });
        Ok((CpuStorage::F32(out), Shape::from((b, s, d))))
    }

    fn bwd(&self, qkv: &Tensor, _res: &Tensor, grad: &Tensor) -> CResult<Option<Tensor>> {
        Ok(Some(qkv.apply_op2_no_bwd(&grad.contiguous()?, &AttentionBackward(self.clone()))?))
    }
}

/// Projections `[b, s, 3d]`, the output's gradient `[b, s, d]` → the projections' gradient.
/// The probabilities are recomputed (cheaper than keeping them for short sequences).
struct AttentionBackward(Attention);

impl CustomOp2 for AttentionBackward {
    fn name(&self) -> &'static str {
        "clipdex-train-attention-backward"
    }

    fn cpu_fwd(&self, qs: &CpuStorage, ql: &Layout, gs: &CpuStorage, gl: &Layout) -> CResult<(CpuStorage, Shape)> {
        let a = &self.0;
        let (b, s, d3) = ql.shape().dims3()?;
        let (src, g) = (f32_slice(qs, ql, self.name())?, f32_slice(gs, gl, self.name())?);
        let d = d3 / 3;
        let hd = d / a.heads;
        let mut out = vec![0f32; b * s * d3];
        out.par_chunks_mut(s * d3).enumerate().for_each(|(bi, dst)| {
            let seq = &src[bi * s * d3..(bi + 1) * s * d3];
            let gseq = &g[bi * s * d..(bi + 1) * s * d];
            let (mut probs, mut dp, mut dq) = (vec![0f32; s], vec![0f32; s], vec![0f32; hd]);
            for h in 0..a.heads {
                for i in 0..s {
                    let n = a.visible(bi, i, s);
                    let q = &seq[i * d3 + h * hd..i * d3 + (h + 1) * hd];
                    a.probs(seq, q, h, d, &mut probs[..n]);
                    let go = &gseq[i * d + h * hd..i * d + (h + 1) * hd];
                    let mut weighted = 0f32;
                    for j in 0..n {
                        let v = &seq[j * d3 + 2 * d + h * hd..j * d3 + 2 * d + (h + 1) * hd];
                        dp[j] = dot(go, v);
                        weighted += probs[j] * dp[j];
                        let dv = &mut dst[j * d3 + 2 * d + h * hd..j * d3 + 2 * d + (h + 1) * hd];
                        for (dv, go) in dv.iter_mut().zip(go) {
                            *dv += probs[j] * go;
                        }
                    }
                    dq.fill(0.0);
                    for j in 0..n {
                        let ds = probs[j] * (dp[j] - weighted) * a.scale;
                        let k = &seq[j * d3 + d + h * hd..j * d3 + d + (h + 1) * hd];
                        for (dq, k) in dq.iter_mut().zip(k) {
                            *dq += ds * k;
                        }
                        let dk = &mut dst[j * d3 + d + h * hd..j * d3 + d + (h + 1) * hd];
                        for (dk, q) in dk.iter_mut().zip(q) {
                            *dk += ds * q;
                        }
                    }
                    dst[i * d3 + h * hd..i * d3 + (h + 1) * hd].copy_from_slice(&dq);
                }
            }
        });
        Ok((CpuStorage::F32(out), ql.shape().clone()))
    }
}

/// Self-attention on fused `[b, s, 3d]` projections, differentiable: `[b, s, d]`.
pub(crate) fn attention(
    qkv: &Tensor,
    heads: usize,
    causal: bool,
    scale: f64,
    lengths: Option<Vec<usize>>,
) -> CResult<Tensor> {
    qkv.contiguous()?.apply_op1(Attention { heads, causal, scale: scale as f32, lengths })
}

/// [`attention`] without a backward pass, on pre-scaled queries (the inference path); with
/// `lengths`, the keys of each sequence `b` at or past `lengths[b]` hidden.
pub(crate) fn attention_no_grad(
    qkv: &Tensor,
    heads: usize,
    causal: bool,
    lengths: Option<Vec<usize>>,
) -> CResult<Tensor> {
    qkv.contiguous()?.apply_op1_no_bwd(&Attention { heads, causal, scale: 1.0, lengths })
}

/// One AdamW update in place on a weight from its gradient, with the moments kept beside it.
pub(crate) struct AdamStep<'a> {
    pub moments: RefCell<(&'a mut [f32], &'a mut [f32])>,
    pub lr: f32,
    pub betas: (f32, f32),
    pub eps: f32,
    /// `1 − lr · weight_decay` (1 without decay).
    pub decay: f32,
    /// Bias corrections `1 − β₁ᵗ`, `√(1 − β₂ᵗ)`.
    pub corrections: (f32, f32),
}

impl InplaceOp2 for AdamStep<'_> {
    fn name(&self) -> &'static str {
        "clipdex-adamw-step"
    }

    fn cpu_fwd(&self, dst: &mut CpuStorage, dst_l: &Layout, gs: &CpuStorage, gl: &Layout) -> CResult<()> {
        let CpuStorage::F32(theta) = dst else { candle_core::bail!("{}: expected f32", self.name()) };
        if !dst_l.is_contiguous() {
            candle_core::bail!("{}: expected a contiguous weight", self.name())
        }
        let theta = &mut theta[dst_l.start_offset()..dst_l.start_offset() + dst_l.shape().elem_count()];
        let g = f32_slice(gs, gl, self.name())?;
        let mut moments = self.moments.borrow_mut();
        let (m, v) = &mut *moments;
        if g.len() != theta.len() || m.len() != theta.len() || v.len() != theta.len() {
            candle_core::bail!("{}: sizes differ", self.name())
        }
        let (b1, b2) = self.betas;
        let (c1, c2) = self.corrections;
        let (step, decay, eps) = (self.lr / c1, self.decay, self.eps);
        theta
            .par_chunks_mut(CHUNK)
            .zip(m.par_chunks_mut(CHUNK))
            .zip(v.par_chunks_mut(CHUNK))
            .zip(g.par_chunks(CHUNK))
            .for_each(|(((theta, m), v), g)| {
                for (((theta, m), v), &g) in theta.iter_mut().zip(m.iter_mut()).zip(v.iter_mut()).zip(g) {
                    *m = b1 * *m + (1.0 - b1) * g;
                    *v = b2 * *v + (1.0 - b2) * g * g;
                    *theta = *theta * decay - step * *m / (v.sqrt() / c2 + eps);
                }
            });
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use candle_core::{D, Device, Var};

    use super::*;

    fn max_abs_diff(a: &Tensor, b: &Tensor) -> f32 {
        (a - b).unwrap().abs().unwrap().flatten_all().unwrap().max(0).unwrap().to_scalar::<f32>().unwrap()
    }

    fn random(shape: &[usize], seed: u64) -> Var {
        // A fixed pseudo-random fill (candle's randn has no seed on the CPU).
        let n: usize = shape.iter().product();
        let mut state = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        let values: Vec<f32> = (0..n)
            .map(|_| {
                state = state.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                ((state >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
            })
            .collect();
        Var::from_tensor(&Tensor::from_vec(values, shape, &Device::Cpu).unwrap()).unwrap()
    }

    /// Values and gradients of `fused` and `plain` (same inputs) agree: the loss is a fixed
    /// random projection of the output, so every output element carries a different weight.
    fn check(inputs: &[&Var], fused: impl Fn() -> Tensor, plain: impl Fn() -> Tensor, tolerance: f32, what: &str) {
        let (a, b) = (fused(), plain());
        assert_eq!(a.dims(), b.dims(), "{what}");
        let diff = max_abs_diff(&a, &b);
        assert!(diff < tolerance, "{what}: values differ by {diff}");
        let weights = random(a.dims(), 99).as_tensor().clone();
        let (ga, gb) = (
            (a * &weights).unwrap().sum_all().unwrap().backward().unwrap(),
            (b * &weights).unwrap().sum_all().unwrap().backward().unwrap(),
        );
        for (i, input) in inputs.iter().enumerate() {
            let (x, y) = (ga.get(input.as_tensor()).unwrap(), gb.get(input.as_tensor()).unwrap());
            let scale = y.abs().unwrap().flatten_all().unwrap().max(0).unwrap().to_scalar::<f32>().unwrap().max(1e-3);
            let diff = max_abs_diff(x, y) / scale;
            assert!(diff < tolerance, "{what}: gradient of input {i} differs by {diff} (relative)");
        }
    }

    #[test]
    fn linear_matches_matmul_and_bias() {
        let (x, w, b) = (random(&[2, 5, 12], 1), random(&[7, 12], 2), random(&[7], 3));
        check(
            &[&x, &w, &b],
            || linear(&x, &w, Some(&b)).unwrap(),
            || x.broadcast_matmul(&w.t().unwrap()).unwrap().broadcast_add(&b).unwrap(),
            1e-5,
            "linear",
        );
        check(
            &[&x, &w],
            || linear(&x, &w, None).unwrap(),
            || x.broadcast_matmul(&w.t().unwrap()).unwrap(),
            1e-5,
            "linear without bias",
        );
    }

    #[test]
    fn layer_norm_matches_mean_and_variance() {
        let (x, w, b) = (random(&[3, 37, 24], 4), random(&[24], 5), random(&[24], 6));
        let plain = || {
            let x = x.as_tensor();
            let mean = x.mean_keepdim(D::Minus1).unwrap();
            let centred = x.broadcast_sub(&mean).unwrap();
            let var = centred.sqr().unwrap().mean_keepdim(D::Minus1).unwrap();
            let normed = centred.broadcast_div(&(var + 1e-5).unwrap().sqrt().unwrap()).unwrap();
            normed.broadcast_mul(&w).unwrap().broadcast_add(&b).unwrap()
        };
        check(&[&x, &w, &b], || layer_norm(&x, &w, &b, 1e-5).unwrap(), plain, 1e-4, "layer norm");
    }

    #[test]
    fn activations_match_their_formulas() {
        let x = random(&[5, 9001], 7);
        let scaled = || (x.as_tensor() * 4.0).unwrap();
        let quick =
            || scaled().mul(&((scaled() * -1.702).unwrap().exp().unwrap() + 1.0).unwrap().recip().unwrap()).unwrap();
        check(&[&x], || activation(&scaled(), Act::QuickGelu).unwrap(), quick, 1e-5, "quick-GELU");
        check(&[&x], || activation(&scaled(), Act::GeluErf).unwrap(), || scaled().gelu_erf().unwrap(), 1e-5, "GELU");
    }

    #[test]
    fn attention_matches_the_elementary_ops() {
        let (b, s, heads, hd) = (3, 11, 4, 6);
        let d = heads * hd;
        let qkv = random(&[b, s, 3 * d], 8);
        let scale = (hd as f64).powf(-0.5);
        for (causal, lengths) in [(false, None), (true, None), (false, Some(vec![11, 4, 7]))] {
            let plain = || {
                let split = |i: usize| {
                    qkv.as_tensor()
                        .narrow(2, i * d, d)
                        .unwrap()
                        .reshape((b, s, heads, hd))
                        .unwrap()
                        .transpose(1, 2)
                        .unwrap()
                        .contiguous()
                        .unwrap()
                };
                let (q, k, v) = ((split(0) * scale).unwrap(), split(1), split(2));
                let mut scores = q.matmul(&k.t().unwrap().contiguous().unwrap()).unwrap();
                let mut mask = vec![0f32; b * s * s];
                for bi in 0..b {
                    for i in 0..s {
                        for j in 0..s {
                            let hidden = (causal && j > i) || lengths.as_ref().is_some_and(|l: &Vec<usize>| j >= l[bi]);
                            if hidden {
                                mask[(bi * s + i) * s + j] = f32::NEG_INFINITY;
                            }
                        }
                    }
                }
                scores = scores.broadcast_add(&Tensor::from_vec(mask, (b, 1, s, s), &Device::Cpu).unwrap()).unwrap();
                let shifted =
                    scores.broadcast_sub(&scores.max_keepdim(D::Minus1).unwrap().detach()).unwrap().exp().unwrap();
                let probs = shifted.broadcast_div(&shifted.sum_keepdim(D::Minus1).unwrap()).unwrap();
                probs.matmul(&v).unwrap().transpose(1, 2).unwrap().contiguous().unwrap().reshape((b, s, d)).unwrap()
            };
            let fused = || attention(&qkv, heads, causal, scale, lengths.clone()).unwrap();
            check(&[&qkv], fused, plain, 1e-5, &format!("attention causal={causal} lengths={lengths:?}"));
        }
    }

    #[test]
    fn the_adamw_step_matches_its_formula() {
        let theta = random(&[4, 3000], 10);
        let g = random(&[4, 3000], 11).as_tensor().clone();
        let before = theta.as_tensor().copy().unwrap();
        let (mut m, mut v) = (vec![0.01f32; 12000], vec![0.02f32; 12000]);
        let (lr, b1, b2, eps, wd) = (1e-3f32, 0.9f32, 0.98f32, 1e-6f32, 0.2f32);
        let (c1, c2) = (1.0 - b1 * b1, (1.0 - b2 * b2).sqrt());
        let step = AdamStep {
            moments: RefCell::new((&mut m, &mut v)),
            lr,
            betas: (b1, b2),
            eps,
            decay: 1.0 - lr * wd,
            corrections: (c1, c2),
        };
        theta.as_tensor().inplace_op2(&g, &step).unwrap();
        let m_new = ((g.clone() * (1.0 - b1) as f64).unwrap() + 0.01 * b1 as f64).unwrap();
        let v_new = ((g.sqr().unwrap() * (1.0 - b2) as f64).unwrap() + 0.02 * b2 as f64).unwrap();
        let denom = ((v_new.sqrt().unwrap() / c2 as f64).unwrap() + eps as f64).unwrap();
        let want = ((before * (1.0 - lr * wd) as f64).unwrap()
            - (m_new.div(&denom).unwrap() * (lr / c1) as f64).unwrap())
        .unwrap();
        assert!(max_abs_diff(theta.as_tensor(), &want) < 1e-6);
        let m_got = Tensor::from_slice(&m, (4, 3000), &Device::Cpu).unwrap();
        assert!(max_abs_diff(&m_got, &m_new) < 1e-7);
    }
}
