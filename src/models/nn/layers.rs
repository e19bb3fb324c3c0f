//! The layers every family builds from: dense and layer-norm loaders, multi-head
//! self-attention with fused input projections, the transformer MLP, the pre-norm encoder
//! layer (CLIP's towers, BLIP's image encoder), ViT patch cutting and row normalisation.
//! Weight names are the Hugging Face ones, under the `VarBuilder` the caller gives.

use candle_core::{D, Module, Tensor};
use candle_nn::{LayerNorm, VarBuilder};

use super::activation::HiddenAct;
use super::kernels::{self, Dense};

type CResult<T> = candle_core::Result<T>;

/// A linear layer `weight` `[out, in]` and `bias` `[out]` under `vb`.
pub(crate) fn dense(in_dim: usize, out_dim: usize, vb: VarBuilder) -> CResult<Dense> {
    Dense::new(&vb.get((out_dim, in_dim), "weight")?, Some(vb.get(out_dim, "bias")?))
}

/// A layer norm `weight` and `bias` `[dim]` under `vb`.
pub(crate) fn layer_norm(dim: usize, eps: f64, vb: VarBuilder) -> CResult<LayerNorm> {
    Ok(LayerNorm::new(vb.get(dim, "weight")?, vb.get(dim, "bias")?, eps))
}

/// Multi-head self-attention with fused input projections.
pub(crate) struct SelfAttention {
    qkv: Dense,
    out: Dense,
    heads: usize,
}

impl SelfAttention {
    pub(crate) fn load(dim: usize, heads: usize, vb: VarBuilder) -> CResult<Self> {
        let scale = ((dim / heads) as f64).powf(-0.5);
        let part = |name: &str| -> CResult<(Tensor, Tensor)> {
            let vb = vb.pp(name);
            Ok((vb.get((dim, dim), "weight")?, vb.get(dim, "bias")?))
        };
        let (qw, qb) = part("q_proj")?;
        let (kw, kb) = part("k_proj")?;
        let (vw, vbias) = part("v_proj")?;
        let w = Tensor::cat(&[(qw * scale)?, kw, vw], 0)?;
        let b = Tensor::cat(&[(qb * scale)?, kb, vbias], 0)?;
        Ok(SelfAttention { qkv: Dense::new(&w, Some(b))?, out: dense(dim, dim, vb.pp("out_proj"))?, heads })
    }

    /// From one fused `qkv` linear (`[3d, d]`: queries, keys, values) and an output
    /// projection, as BLIP stores them.
    pub(crate) fn from_fused(dim: usize, heads: usize, qkv: VarBuilder, out: VarBuilder) -> CResult<Self> {
        let scale = ((dim / heads) as f64).powf(-0.5);
        let (w, b) = (qkv.get((3 * dim, dim), "weight")?, qkv.get(3 * dim, "bias")?);
        let w = Tensor::cat(&[(w.narrow(0, 0, dim)? * scale)?, w.narrow(0, dim, 2 * dim)?], 0)?;
        let b = Tensor::cat(&[(b.narrow(0, 0, dim)? * scale)?, b.narrow(0, dim, 2 * dim)?], 0)?;
        Ok(SelfAttention { qkv: Dense::new(&w, Some(b))?, out: dense(dim, dim, out)?, heads })
    }

    pub(crate) fn for_each_dense(&mut self, f: &mut dyn FnMut(&mut Dense)) {
        f(&mut self.qkv);
        f(&mut self.out);
    }

    pub(crate) fn forward(&self, xs: &Tensor, causal: bool) -> CResult<Tensor> {
        self.forward_masked(xs, causal, None)
    }

    /// [`SelfAttention::forward`] with `mask` (`[b, 1, 1, s]`, 0 or -∞) hiding padded keys.
    pub(crate) fn forward_masked(&self, xs: &Tensor, causal: bool, mask: Option<&Tensor>) -> CResult<Tensor> {
        let qkv = self.qkv.forward(xs, None)?;
        self.out.forward(&kernels::attention(&qkv, self.heads, causal, mask)?, None)
    }
}

/// The two-layer MLP of a transformer block.
pub(crate) struct Mlp {
    fc1: Dense,
    fc2: Dense,
    act: HiddenAct,
}

impl Mlp {
    /// `fc1` and `fc2` under `vb`.
    pub(crate) fn load(dim: usize, hidden: usize, act: HiddenAct, vb: VarBuilder) -> CResult<Self> {
        Ok(Mlp { fc1: dense(dim, hidden, vb.pp("fc1"))?, fc2: dense(hidden, dim, vb.pp("fc2"))?, act })
    }

    pub(crate) fn for_each_dense(&mut self, f: &mut dyn FnMut(&mut Dense)) {
        f(&mut self.fc1);
        f(&mut self.fc2);
    }

    pub(crate) fn forward(&self, xs: &Tensor) -> CResult<Tensor> {
        self.fc2.forward(&self.fc1.forward(xs, Some(self.act))?, None)
    }
}

/// One pre-norm transformer block: `x + attention(LN₁(x))`, then `x + mlp(LN₂(x))`. CLIP's
/// towers and BLIP's image encoder both stack it; the attention comes loaded, since the two
/// store its projections differently ([`SelfAttention::load`], [`SelfAttention::from_fused`]).
pub(crate) struct EncoderLayer {
    ln1: LayerNorm,
    attn: SelfAttention,
    ln2: LayerNorm,
    mlp: Mlp,
}

impl EncoderLayer {
    /// `layer_norm1`, `layer_norm2` and `mlp` under `vb`, around `attn`.
    pub(crate) fn load(
        dim: usize,
        mlp_dim: usize,
        act: HiddenAct,
        eps: f64,
        attn: SelfAttention,
        vb: VarBuilder,
    ) -> CResult<Self> {
        Ok(EncoderLayer {
            ln1: layer_norm(dim, eps, vb.pp("layer_norm1"))?,
            attn,
            ln2: layer_norm(dim, eps, vb.pp("layer_norm2"))?,
            mlp: Mlp::load(dim, mlp_dim, act, vb.pp("mlp"))?,
        })
    }

    pub(crate) fn for_each_dense(&mut self, f: &mut dyn FnMut(&mut Dense)) {
        self.attn.for_each_dense(f);
        self.mlp.for_each_dense(f);
    }

    pub(crate) fn forward(&self, xs: &Tensor, causal: bool) -> CResult<Tensor> {
        self.forward_masked(xs, causal, None)
    }

    /// [`EncoderLayer::forward`] with padded keys hidden by `mask` (`[b, 1, 1, s]`).
    pub(crate) fn forward_masked(&self, xs: &Tensor, causal: bool, mask: Option<&Tensor>) -> CResult<Tensor> {
        let xs = (xs + self.attn.forward_masked(&self.ln1.forward(xs)?, causal, mask)?)?;
        &xs + self.mlp.forward(&self.ln2.forward(&xs)?)?
    }
}

/// The sizes of one tower's encoder stack.
#[derive(Debug, Clone, Copy)]
pub(crate) struct EncoderShape {
    pub(crate) dim: usize,
    pub(crate) mlp_dim: usize,
    pub(crate) heads: usize,
    pub(crate) layers: usize,
    pub(crate) act: HiddenAct,
    pub(crate) eps: f64,
}

/// `impl From<&Config> for EncoderShape` for tower configs with transformers' field names
/// (`hidden_size`, `intermediate_size`, `num_attention_heads`, `num_hidden_layers`,
/// `hidden_act`, `layer_norm_eps`).
macro_rules! encoder_shape_from {
    ($($config:ty),+) => {$(
        impl From<&$config> for $crate::models::nn::layers::EncoderShape {
            fn from(c: &$config) -> Self {
                $crate::models::nn::layers::EncoderShape {
                    dim: c.hidden_size,
                    mlp_dim: c.intermediate_size,
                    heads: c.num_attention_heads,
                    layers: c.num_hidden_layers,
                    act: c.hidden_act,
                    eps: c.layer_norm_eps,
                }
            }
        }
    )+};
}
pub(crate) use encoder_shape_from;

/// A stack of pre-norm encoder layers under `vb` (`layers.N`, each with `self_attn`'s
/// separate `q_proj`, `k_proj`, `v_proj` and `out_proj`): the towers of CLIP (and so of
/// OpenCLIP, Chinese-CLIP's image side and CLIPSeg's backbone) and of SigLIP.
pub(crate) struct Encoder {
    pub(crate) layers: Vec<EncoderLayer>,
}

impl Encoder {
    pub(crate) fn load(shape: EncoderShape, vb: VarBuilder) -> CResult<Self> {
        let EncoderShape { dim, mlp_dim, heads, layers: n, act, eps } = shape;
        let vb = vb.pp("layers");
        let layers = (0..n)
            .map(|i| {
                let vb = vb.pp(i);
                EncoderLayer::load(dim, mlp_dim, act, eps, SelfAttention::load(dim, heads, vb.pp("self_attn"))?, vb)
            })
            .collect::<CResult<Vec<_>>>()?;
        Ok(Encoder { layers })
    }

    pub(crate) fn for_each_dense(&mut self, f: &mut dyn FnMut(&mut Dense)) {
        for l in &mut self.layers {
            l.for_each_dense(f);
        }
    }

    /// Every layer in turn; `causal` masks later positions (a CLIP text tower).
    pub(crate) fn forward(&self, xs: &Tensor, causal: bool) -> CResult<Tensor> {
        self.forward_masked(xs, causal, None)
    }

    /// Every layer in turn, padded keys hidden by `mask` (`[b, 1, 1, s]`, 0 or -∞): batched
    /// sequences of different lengths (SigLIP 2 NaFlex's patch grids).
    pub(crate) fn forward_masked(&self, xs: &Tensor, causal: bool, mask: Option<&Tensor>) -> CResult<Tensor> {
        let mut xs = xs.clone();
        for l in &self.layers {
            xs = l.forward_masked(&xs, causal, mask)?;
        }
        Ok(xs)
    }
}

/// A ViT's patch convolution `weight` `[d, ch, p, p]` under `vb`, as the `[ch·p·p, d]` matrix
/// that multiplies [`patches`]' rows (stride = kernel, so the convolution is one matmul).
pub(crate) fn patch_matrix(d: usize, ch: usize, p: usize, vb: VarBuilder) -> CResult<Tensor> {
    vb.get((d, ch, p, p), "weight")?.reshape((d, ch * p * p))?.t()?.contiguous()
}

/// `[b, ch, g·p, g·p]` pixels cut into `[b·g², ch·p·p]` patch rows, in the order a
/// convolution with stride = kernel = `p` reads them (so a patch embedding is one matmul).
pub(crate) fn patches(pixels: &Tensor, g: usize, p: usize) -> CResult<Tensor> {
    let (b, ch, h, w) = pixels.dims4()?;
    if h != g * p || w != g * p {
        candle_core::bail!("expected {}x{} pixels, got {h}x{w}", g * p, g * p);
    }
    pixels.reshape((b, ch, g, p, g, p))?.permute((0, 2, 4, 1, 3, 5))?.contiguous()?.reshape((b * g * g, ch * p * p))
}

/// L2-normalises each row.
pub fn l2_normalize(xs: &Tensor) -> CResult<Tensor> {
    let norm = xs.sqr()?.sum_keepdim(D::Minus1)?.sqrt()?.clamp(1e-12, f64::INFINITY)?;
    xs.broadcast_div(&norm)
}
