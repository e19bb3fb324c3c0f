//! What the trainable networks (`models::clip::train`, `models::siglip::train`) share: the
//! `--train` scopes, and the differentiable layers built on weights looked up by their Hugging
//! Face names ([`NamedWeights`]: linear, layer norm, attention, pre-norm encoder layers), fused
//! on the CPU through [`super::train_kernels`] and written in elementary candle ops elsewhere.

use candle_core::{D, Tensor};

use super::HiddenAct;
use super::train_kernels as fused;

type CResult<T> = candle_core::Result<T>;

/// Which weights a fine-tuning run changes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TrainScope {
    /// Every weight.
    All,
    /// The top `n` encoder layers of each tower, the final layer norms (text `final_layer_norm`,
    /// vision `post_layernorm`), both projections and `logit_scale` (a SigLIP's heads,
    /// `logit_scale` and `logit_bias`).
    Last(usize),
    /// Both projections and `logit_scale` (a SigLIP's image pooling head and text head,
    /// `logit_scale` and `logit_bias`).
    Projection,
    /// A linear map on the normalised image embedding (trained on stored vectors, then folded
    /// into `visual_projection`), with `text_projection` and `logit_scale`: the towers never
    /// run on images. The network here trains only the text side of it. A SigLIP's: its text
    /// head, `logit_scale` and `logit_bias` on the stored vectors, the image side unchanged.
    Adapter,
}

impl std::str::FromStr for TrainScope {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "all" => Ok(TrainScope::All),
            "projection" => Ok(TrainScope::Projection),
            "adapter" => Ok(TrainScope::Adapter),
            _ => match s.strip_prefix("last:").map(str::parse::<usize>) {
                Some(Ok(n)) if n >= 1 => Ok(TrainScope::Last(n)),
                _ => Err(format!("{s:?}: expected all, last:N (N ≥ 1), projection or adapter")),
            },
        }
    }
}

/// The names and shapes of `n` pre-norm encoder layers of width `d` (CLIP's and SigLIP's
/// `{prefix}.encoder.layers.N`), each passed to `add`.
pub(crate) fn encoder_layer_shapes(
    add: &mut dyn FnMut(String, &[usize]),
    prefix: &str,
    n: usize,
    d: usize,
    mlp: usize,
) {
    for i in 0..n {
        let p = format!("{prefix}.encoder.layers.{i}");
        for proj in ["q_proj", "k_proj", "v_proj", "out_proj"] {
            add(format!("{p}.self_attn.{proj}.weight"), &[d, d]);
            add(format!("{p}.self_attn.{proj}.bias"), &[d]);
        }
        for ln in ["layer_norm1", "layer_norm2"] {
            add(format!("{p}.{ln}.weight"), &[d]);
            add(format!("{p}.{ln}.bias"), &[d]);
        }
        add(format!("{p}.mlp.fc1.weight"), &[mlp, d]);
        add(format!("{p}.mlp.fc1.bias"), &[mlp]);
        add(format!("{p}.mlp.fc2.weight"), &[d, mlp]);
        add(format!("{p}.mlp.fc2.bias"), &[d]);
    }
}

/// Weights by their Hugging Face names, and the differentiable layers built from them that the
/// trainable CLIP and SigLIP share.
pub(crate) trait NamedWeights {
    /// The weight `name` as it is now (a trainable one's current value).
    fn w(&self, name: &str) -> CResult<Tensor>;

    /// `x · Wᵀ + b` for `x` of any rank.
    fn linear(&self, x: &Tensor, prefix: &str, bias: bool) -> CResult<Tensor> {
        let w = self.w(&format!("{prefix}.weight"))?;
        let b = if bias { Some(self.w(&format!("{prefix}.bias"))?) } else { None };
        linear_with(x, &w, b.as_ref())
    }

    /// Layer norm over the last dimension, with mean and (biased) variance.
    fn layer_norm(&self, x: &Tensor, prefix: &str, eps: f64) -> CResult<Tensor> {
        let (w, b) = (self.w(&format!("{prefix}.weight"))?, self.w(&format!("{prefix}.bias"))?);
        if fused::applies(x) {
            return fused::layer_norm(x, &w, &b, eps);
        }
        let mean = x.mean_keepdim(D::Minus1)?;
        let centred = x.broadcast_sub(&mean)?;
        let var = centred.sqr()?.mean_keepdim(D::Minus1)?;
        let normed = centred.broadcast_div(&(var + eps)?.sqrt()?)?;
        normed.broadcast_mul(&w)?.broadcast_add(&b)
    }

    /// Multi-head self-attention over `[b, s, d]` with its output projection (before any
    /// residual), from the weights named `names` (query, key, value, output): causal for CLIP's
    /// text tower; `mask` (`[b, 1, 1, s]`, 0 or -∞) hides padded keys in Chinese-CLIP's.
    fn attention(
        &self,
        x: &Tensor,
        names: [&str; 4],
        heads: usize,
        causal: bool,
        mask: Option<&Tensor>,
    ) -> CResult<Tensor> {
        let (b, s, d) = x.dims3()?;
        let dh = d / heads;
        if fused::applies(x) {
            // One product for queries, keys and values; the kernel scales, masks and merges.
            let w = Tensor::cat(
                &names[..3].iter().map(|n| self.w(&format!("{n}.weight"))).collect::<CResult<Vec<_>>>()?,
                0,
            )?;
            let bias =
                Tensor::cat(&names[..3].iter().map(|n| self.w(&format!("{n}.bias"))).collect::<CResult<Vec<_>>>()?, 0)?;
            let qkv = fused::linear(x, &w, Some(&bias))?;
            let lengths = mask.map(key_lengths).transpose()?;
            let out = fused::attention(&qkv, heads, causal, (dh as f64).powf(-0.5), lengths)?;
            return self.linear(&out, names[3], true);
        }
        let split = |t: Tensor| -> CResult<Tensor> { t.reshape((b, s, heads, dh))?.transpose(1, 2)?.contiguous() };
        let q = split((self.linear(x, names[0], true)? * (dh as f64).powf(-0.5))?)?;
        let k = split(self.linear(x, names[1], true)?)?;
        let v = split(self.linear(x, names[2], true)?)?;
        let mut scores = q.matmul(&k.t()?.contiguous()?)?;
        if causal {
            let mask: Vec<f32> =
                (0..s).flat_map(|i| (0..s).map(move |j| if j > i { f32::NEG_INFINITY } else { 0.0 })).collect();
            scores = scores.broadcast_add(&Tensor::from_vec(mask, (s, s), x.device())?)?;
        }
        if let Some(mask) = mask {
            scores = scores.broadcast_add(mask)?;
        }
        // Softmax over the last dimension; the shift by the row maximum carries no gradient.
        let shifted = scores.broadcast_sub(&scores.max_keepdim(D::Minus1)?.detach())?.exp()?;
        let probs = shifted.broadcast_div(&shifted.sum_keepdim(D::Minus1)?)?;
        let out = probs.matmul(&v)?.transpose(1, 2)?.contiguous()?.reshape((b, s, d))?;
        self.linear(&out, names[3], true)
    }

    /// The pre-norm encoder layers `layers` named `{prefix}.N` (CLIP's and SigLIP's
    /// `layer_norm1`, `self_attn`, `layer_norm2`, `mlp`).
    fn pre_norm_layers(
        &self,
        x: &Tensor,
        prefix: &str,
        layers: std::ops::Range<usize>,
        s: EncoderSettings,
    ) -> CResult<Tensor> {
        let mut x = x.clone();
        for i in layers {
            let p = format!("{prefix}.{i}");
            let h = self.layer_norm(&x, &format!("{p}.layer_norm1"), s.eps)?;
            let names = ["q_proj", "k_proj", "v_proj", "out_proj"].map(|n| format!("{p}.self_attn.{n}"));
            x = (&x + self.attention(&h, names.each_ref().map(String::as_str), s.heads, s.causal, None)?)?;
            let h = self.layer_norm(&x, &format!("{p}.layer_norm2"), s.eps)?;
            let h = activation(&self.linear(&h, &format!("{p}.mlp.fc1"), true)?, s.act)?;
            x = (&x + self.linear(&h, &format!("{p}.mlp.fc2"), true)?)?;
        }
        Ok(x)
    }
}

/// The shape of a stack of encoder layers.
#[derive(Debug, Clone, Copy)]
pub(crate) struct EncoderSettings {
    /// Attention heads.
    pub heads: usize,
    /// MLP activation.
    pub act: HiddenAct,
    /// Layer norm epsilon.
    pub eps: f64,
    /// Whether each position sees only those before it (CLIP's text tower).
    pub causal: bool,
}

/// An activation, differentiable (fused on the CPU where a kernel exists).
pub(crate) fn activation(x: &Tensor, act: HiddenAct) -> CResult<Tensor> {
    if fused::applies(x) {
        match act {
            HiddenAct::QuickGelu => return fused::activation(x, fused::Act::QuickGelu),
            HiddenAct::Gelu => return fused::activation(x, fused::Act::GeluErf),
            HiddenAct::GeluTanh | HiddenAct::Relu => {}
        }
    }
    match act {
        // x · σ(1.702 x), σ written out: 1 / (1 + e^(-z)).
        HiddenAct::QuickGelu => x.mul(&((x * -1.702)?.exp()? + 1.0)?.recip()?),
        HiddenAct::Gelu => x.gelu_erf(),
        HiddenAct::GeluTanh => x.gelu(),
        HiddenAct::Relu => x.relu(),
    }
}

/// `x · Wᵀ + b` over the last dimension of `x` (any rank).
pub(crate) fn linear_with(x: &Tensor, w: &Tensor, b: Option<&Tensor>) -> CResult<Tensor> {
    if fused::applies(x) {
        return fused::linear(x, w, b);
    }
    let dims = x.dims().to_vec();
    let (rows, d) = (dims[..dims.len() - 1].iter().product::<usize>(), dims[dims.len() - 1]);
    let mut y = x.reshape((rows, d))?.matmul(&w.t()?)?;
    if let Some(b) = b {
        y = y.broadcast_add(b)?;
    }
    let mut out = dims;
    *out.last_mut().expect("rank ≥ 1") = y.dim(1)?;
    y.reshape(out)
}

/// The unpadded length of each sequence from an additive padding mask (`[b, 1, 1, s]`, 0 then
/// -∞).
fn key_lengths(mask: &Tensor) -> CResult<Vec<usize>> {
    let (b, s) = (mask.dim(0)?, mask.dim(D::Minus1)?);
    let rows = mask.reshape((b, s))?.to_vec2::<f32>()?;
    Ok(rows.iter().map(|r| r.iter().take_while(|v| v.is_finite()).count()).collect())
}

/// Rows scaled to unit length, as transformers' `CLIPModel.forward` does it: no floor under the
/// norm, unlike [`l2_normalize`](crate::models::nn::l2_normalize), so the training graph matches the
/// reference's and carries no clamp to backpropagate through.
pub fn normalize(x: &Tensor) -> CResult<Tensor> {
    x.broadcast_div(&x.sqr()?.sum_keepdim(D::Minus1)?.sqrt()?)
}
