//! Fused CPU kernels for the two places where a transformer on a CPU loses most of its time
//! outside matrix multiplication: attention over short sequences (hundreds of tiny per-head
//! matmuls plus permute copies) and the bias + activation after each projection (several
//! single-purpose passes over the largest activations).
//!
//! Both are exact rewrites of the generic tensor code they replace (kept below as the path for
//! other devices and non-f32 tensors), parallel over rows with rayon. The attention kernel is the
//! training one's forward pass ([`super::train_kernels`]) on pre-scaled queries.

use candle_core::{CpuStorage, CustomOp2, D, Layout, Shape, Tensor};
use rayon::prelude::*;

use super::config::HiddenAct;

type CResult<T> = candle_core::Result<T>;

pub(super) fn f32_slice<'a>(storage: &'a CpuStorage, layout: &Layout, what: &str) -> CResult<&'a [f32]> {
    let CpuStorage::F32(data) = storage else { candle_core::bail!("{what}: expected f32") };
    if !layout.is_contiguous() {
        candle_core::bail!("{what}: expected a contiguous tensor")
    }
    Ok(&data[layout.start_offset()..layout.start_offset() + layout.shape().elem_count()])
}

pub(super) fn dot(a: &[f32], b: &[f32]) -> f32 {
    // Eight independent accumulators let the compiler vectorise the loop.
    let mut acc = [0f32; 8];
    let (ac, bc) = (a.chunks_exact(8), b.chunks_exact(8));
    let (ar, br) = (ac.remainder(), bc.remainder());
    for (x, y) in ac.zip(bc) {
        for k in 0..8 {
            acc[k] += x[k] * y[k];
        }
    }
    acc.iter().sum::<f32>() + ar.iter().zip(br).map(|(x, y)| x * y).sum::<f32>()
}

/// Longest sequence for the fused kernel: beyond it (CLIPSeg's 485 tokens at 352 px) the
/// per-row dot products lose to batched matrix multiplication.
const FUSED_MAX_TOKENS: usize = 256;

/// Attention from fused `[b, s, 3d]` projections to `[b, s, d]`. `mask` (`[b, 1, 1, s]`, 0 or
/// -∞) hides padded keys of batched sequences; the fused kernel takes unmasked inputs only.
pub(crate) fn attention(qkv: &Tensor, heads: usize, causal: bool, mask: Option<&Tensor>) -> CResult<Tensor> {
    if mask.is_none()
        && qkv.device().is_cpu()
        && qkv.dtype() == candle_core::DType::F32
        && qkv.dim(1)? <= FUSED_MAX_TOKENS
    {
        // Queries come pre-scaled: the training kernel's forward pass with a scale of 1.
        return super::train_kernels::attention_no_grad(qkv, heads, causal);
    }
    attention_generic(qkv, heads, causal, mask)
}

/// The same attention in generic tensor operations (any device, any dtype).
fn attention_generic(qkv: &Tensor, heads: usize, causal: bool, mask: Option<&Tensor>) -> CResult<Tensor> {
    let (b, s, d3) = qkv.dims3()?;
    let (d, hd) = (d3 / 3, d3 / 3 / heads);
    let qkv = qkv.reshape((b, s, 3, heads, hd))?.permute((2, 0, 3, 1, 4))?;
    let (q, k, v) = (qkv.get(0)?.contiguous()?, qkv.get(1)?.contiguous()?, qkv.get(2)?.contiguous()?);
    let mut scores = q.matmul(&k.t()?)?;
    if causal {
        let mask: Vec<f32> =
            (0..s).flat_map(|i| (0..s).map(move |j| if j > i { f32::NEG_INFINITY } else { 0.0 })).collect();
        scores = scores.broadcast_add(&Tensor::from_vec(mask, (s, s), qkv.device())?.to_dtype(scores.dtype())?)?;
    }
    if let Some(mask) = mask {
        scores = scores.broadcast_add(&mask.to_dtype(scores.dtype())?)?;
    }
    let probs = candle_nn::ops::softmax_last_dim(&scores)?;
    probs.matmul(&v)?.transpose(1, 2)?.reshape((b, s, d))
}

/// `act(x + bias)` over the last dimension in one parallel pass.
struct BiasAct {
    act: Option<HiddenAct>,
}

impl CustomOp2 for BiasAct {
    fn name(&self) -> &'static str {
        "clipdex-bias-act"
    }

    fn cpu_fwd(&self, xs: &CpuStorage, xl: &Layout, bs: &CpuStorage, bl: &Layout) -> CResult<(CpuStorage, Shape)> {
        let x = f32_slice(xs, xl, self.name())?;
        let bias = f32_slice(bs, bl, self.name())?;
        let n = bias.len();
        if xl.shape().dims().last() != Some(&n) {
            candle_core::bail!("{}: bias of {n} for shape {:?}", self.name(), xl.shape());
        }
        let act = self.act;
        let mut out = vec![0f32; x.len()];
        out.par_chunks_mut(n * 64).zip(x.par_chunks(n * 64)).for_each(|(o, x)| {
            for (o_row, x_row) in o.chunks_mut(n).zip(x.chunks(n)) {
                for ((o, &x), &b) in o_row.iter_mut().zip(x_row).zip(bias) {
                    let v = x + b;
                    *o = match act {
                        None => v,
                        Some(HiddenAct::QuickGelu) => v / (1.0 + (-1.702 * v).exp()),
                        Some(HiddenAct::Gelu) => {
                            0.5 * v * (1.0 + candle_core::cpu::erf::erf_f32(v * std::f32::consts::FRAC_1_SQRT_2))
                        }
                        Some(HiddenAct::GeluTanh) => {
                            0.5 * v * (1.0 + ((2.0 / std::f32::consts::PI).sqrt() * (v + 0.044_715 * v * v * v)).tanh())
                        }
                        Some(HiddenAct::Relu) => v.max(0.0),
                    };
                }
            }
        });
        Ok((CpuStorage::F32(out), xl.shape().clone()))
    }
}

impl HiddenAct {
    fn apply(self, xs: &Tensor) -> CResult<Tensor> {
        match self {
            HiddenAct::QuickGelu => xs * candle_nn::ops::sigmoid(&(xs * 1.702)?)?,
            HiddenAct::Gelu => xs.gelu_erf(),
            HiddenAct::GeluTanh => xs.gelu(),
            HiddenAct::Relu => xs.relu(),
        }
    }
}

/// `act(xs + bias)`, or `xs + bias` when `act` is `None`.
pub(super) fn bias_act(xs: &Tensor, bias: &Tensor, act: Option<HiddenAct>) -> CResult<Tensor> {
    if xs.device().is_cpu() && xs.dtype() == candle_core::DType::F32 && bias.dtype() == candle_core::DType::F32 {
        return xs.contiguous()?.apply_op2_no_bwd(&bias.contiguous()?, &BiasAct { act });
    }
    bias_act_generic(xs, bias, act)
}

fn bias_act_generic(xs: &Tensor, bias: &Tensor, act: Option<HiddenAct>) -> CResult<Tensor> {
    let ys = xs.broadcast_add(bias)?;
    match act {
        None => Ok(ys),
        Some(a) => a.apply(&ys),
    }
}

/// A dense layer with its weight stored transposed (`[in, out]`) for a contiguous matmul, and,
/// from the first product of a few rows on, laid out once more for those (see `skinny`).
pub(crate) struct Dense {
    weight_t: Tensor,
    bias: Option<Tensor>,
    panels: std::sync::OnceLock<Option<super::skinny::Panels>>,
}

impl Dense {
    pub(crate) fn new(weight: &Tensor, bias: Option<Tensor>) -> CResult<Self> {
        Ok(Dense { weight_t: weight.t()?.contiguous()?, bias, panels: Default::default() })
    }

    /// `xs` (`[rows, in]`) times the weight, through the few-rows kernel when it applies.
    fn product(&self, xs: &Tensor, rows: usize) -> CResult<Tensor> {
        use super::skinny;
        let applies = (1..=skinny::max_rows()).contains(&rows)
            && xs.device().is_cpu()
            && xs.dtype() == candle_core::DType::F32
            && self.weight_t.dtype() == candle_core::DType::F32;
        if applies {
            let (k, n) = self.weight_t.dims2()?;
            let panels = self.panels.get_or_init(|| {
                let weight_t = self.weight_t.flatten_all().and_then(|w| w.to_vec1::<f32>()).ok()?;
                skinny::Panels::pack(&weight_t, k, n)
            });
            if let Some(panels) = panels {
                let x = xs.flatten_all()?.to_vec1::<f32>()?;
                return Tensor::from_vec(panels.product(&x, rows), (rows, n), xs.device());
            }
        }
        xs.matmul(&self.weight_t)
    }

    /// Output width.
    pub(crate) fn out_dim(&self) -> usize {
        self.weight_t.dims()[1]
    }

    /// `act(xs · Wᵀ + b)` for `xs` of shape `[.., in]`.
    pub(crate) fn forward(&self, xs: &Tensor, act: Option<HiddenAct>) -> CResult<Tensor> {
        let dims = xs.dims().to_vec();
        let rows: usize = dims[..dims.len() - 1].iter().product();
        let ys = self.product(&xs.reshape((rows, dims[dims.len() - 1]))?, rows)?;
        let ys = match &self.bias {
            Some(b) => bias_act(&ys, b, act)?,
            None => match act {
                Some(a) => a.apply(&ys)?,
                None => ys,
            },
        };
        let mut out_dims = dims;
        *out_dims.last_mut().expect("at least one dimension") = ys.dim(D::Minus1)?;
        ys.reshape(out_dims)
    }
}

#[cfg(test)]
mod tests {
    use candle_core::Device;

    use super::*;

    fn max_abs_diff(a: &Tensor, b: &Tensor) -> f32 {
        (a - b).unwrap().abs().unwrap().flatten_all().unwrap().max(0).unwrap().to_scalar::<f32>().unwrap()
    }

    #[test]
    fn fused_attention_equals_the_generic_path() {
        let qkv = Tensor::randn(0f32, 1.0, (3, 7, 3 * 12), &Device::Cpu).unwrap();
        for causal in [false, true] {
            let fused = attention(&qkv, 3, causal, None).unwrap();
            let generic = attention_generic(&qkv, 3, causal, None).unwrap();
            assert_eq!(fused.dims(), &[3, 7, 12]);
            assert!(max_abs_diff(&fused, &generic) < 1e-5, "causal {causal}");
        }
    }

    #[test]
    fn fused_bias_activation_equals_the_generic_path() {
        let xs = Tensor::randn(0f32, 2.0, (5, 130, 33), &Device::Cpu).unwrap();
        let bias = Tensor::randn(0f32, 1.0, 33, &Device::Cpu).unwrap();
        let acts =
            [None, Some(HiddenAct::QuickGelu), Some(HiddenAct::Gelu), Some(HiddenAct::GeluTanh), Some(HiddenAct::Relu)];
        for act in acts {
            let fused = bias_act(&xs, &bias, act).unwrap();
            let generic = bias_act_generic(&xs, &bias, act).unwrap();
            assert!(max_abs_diff(&fused, &generic) < 1e-5, "{act:?}");
        }
    }
}
