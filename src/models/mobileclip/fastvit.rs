//! timm's `FastVit` as MobileCLIP's image towers use it (`fastvit_mci0` … `fastvit_mci4`),
//! reparameterised at load time (see `fuse`) and run channels-last: a MobileOne stem (3×3
//! stride 2, depthwise 3×3 stride 2, 1×1), stages of RepMixer blocks (one depthwise 3×3 once
//! fused) and of attention blocks (a norm, 32-wide heads), each stage after the first opened by a
//! downsampler (a depthwise 7×7 stride 2 beside a 3×3, squeeze-excite where present, then a
//! 1×1) and, before attention, a conditional positional encoding (a depthwise 7×7 plus the
//! input); then the final MobileOne 3×3 with squeeze-excite, average pooling and the linear
//! head that open_clip uses as the projection (`timm_proj: null`).
//!
//! The shape is read from the weights (stage count, depths, widths, MLP ratios, which blocks
//! attend, which downsamplers squeeze, BatchNorm or LayerNorm before attention, a stem with or
//! without scale branches), so `fastvit_mci1`, `mci2` and MobileCLIP2's `mci3`/`mci4` all load.
//! What the weights do not say is timm's for every `fastvit_mci*`: GELU, 32-wide heads,
//! activations after the large-kernel downsamplers (`lkc_use_act`), ε = 1e-5.
//!
//! The tower runs on the CPU (its inputs are moved there and its outputs back).
//!
//! Departures from a literal port, exact up to float rounding: BatchNorm before attention is
//! folded into the `qkv` weights, the attention scale into the queries, and the layer scales
//! into the linear layers before them.

use candle_core::{D, DType, Tensor};
use candle_nn::{LayerNorm, Module, VarBuilder};

use super::fuse::{Kernel, batch_norm, mobileone, read, read_vec};
use crate::models::nn::conv::GroupedConv;
use crate::models::nn::precision::Precision;
use crate::models::nn::{Dense, HiddenAct, ImageTower, kernels};

type CResult<T> = candle_core::Result<T>;

/// timm's `Attention` in FastViT: heads of 32 channels.
const HEAD_DIM: usize = 32;
/// timm's `LayerNorm2d` as `fastvit_mci3`/`mci4` configure it.
const LAYER_NORM_EPS: f64 = 1e-5;

fn conv(kernel: Kernel, cin: usize, stride: usize) -> CResult<GroupedConv> {
    GroupedConv::from_torch(&kernel.w, kernel.bias, (kernel.cout, kernel.cin_g, kernel.k), cin, stride)
}

/// A 1×1 convolution (or linear layer) as a dense layer, its outputs scaled by `scale`.
fn pointwise(kernel: Kernel, cin: usize, scale: Option<&[f32]>) -> CResult<Dense> {
    if kernel.k != 1 || kernel.cin_g != cin {
        candle_core::bail!("expected a 1x1 convolution over all {cin} channels");
    }
    let (mut w, mut b) = (kernel.w, kernel.bias);
    if let Some(s) = scale {
        for (o, row) in w.chunks_mut(cin).enumerate() {
            row.iter_mut().for_each(|v| *v *= s[o]);
            b[o] *= s[o];
        }
    }
    let cout = kernel.cout;
    Dense::new(
        &Tensor::from_vec(w, (cout, cin), &candle_core::Device::Cpu)?,
        Some(Tensor::new(b, &candle_core::Device::Cpu)?),
    )
}

/// A layer scale (`[c, 1, 1]` gamma), or ones where the block has none.
fn layer_scale(vb: &VarBuilder, name: &str, c: usize) -> CResult<Vec<f32>> {
    if vb.contains_tensor(name) { read_vec(vb, name, c) } else { Ok(vec![1.0; c]) }
}

/// Squeeze-excite: the mean of each channel through two 1×1 layers, ReLU between, a sigmoid
/// gate on the input.
struct SqueezeExcite {
    fc1: Dense,
    fc2: Dense,
}

impl SqueezeExcite {
    fn load(vb: &VarBuilder, c: usize) -> CResult<Option<Self>> {
        if !vb.contains_tensor("fc1.weight") {
            return Ok(None);
        }
        let fc1 = Kernel::conv(&vb.pp("fc1"))?;
        let rd = fc1.cout;
        Ok(Some(SqueezeExcite {
            fc1: pointwise(fc1, c, None)?,
            fc2: pointwise(Kernel::conv(&vb.pp("fc2"))?, rd, None)?,
        }))
    }

    fn forward(&self, xs: &Tensor) -> CResult<Tensor> {
        let (b, _, _, c) = xs.dims4()?;
        let squeezed = xs.mean(1)?.mean(1)?;
        let gate = self.fc2.forward(&self.fc1.forward(&squeezed, Some(HiddenAct::Relu))?, None)?;
        xs.broadcast_mul(&candle_nn::ops::sigmoid(&gate)?.reshape((b, 1, 1, c))?)
    }

    fn for_each_dense(&mut self, f: &mut dyn FnMut(&mut Dense)) {
        f(&mut self.fc1);
        f(&mut self.fc2);
    }
}

/// timm's `ConvMlp`: a depthwise 7×7 with BatchNorm, then two 1×1 layers with GELU between
/// (the block's layer scale folded into the second).
struct ConvMlp {
    conv: GroupedConv,
    fc1: Dense,
    fc2: Dense,
}

impl ConvMlp {
    fn load(vb: &VarBuilder, c: usize, scale: &[f32]) -> CResult<Self> {
        let fc1 = Kernel::conv(&vb.pp("fc1"))?;
        let hidden = fc1.cout;
        Ok(ConvMlp {
            conv: conv(Kernel::conv_bn(&vb.pp("conv"))?, c, 1)?,
            fc1: pointwise(fc1, c, None)?,
            fc2: pointwise(Kernel::conv(&vb.pp("fc2"))?, hidden, Some(scale))?,
        })
    }

    fn forward(&self, xs: &Tensor) -> CResult<Tensor> {
        let hidden = self.fc1.forward(&self.conv.forward(xs)?, Some(HiddenAct::Gelu))?;
        self.fc2.forward(&hidden, None)
    }
}

/// What mixes tokens in a block.
#[allow(clippy::large_enum_variant, reason = "a few dozen per model, never moved in a hot path")]
enum Mixer {
    /// RepMixer, fused into one depthwise convolution (the residual included).
    Rep(GroupedConv),
    /// Self-attention over all positions, added to the input.
    Attention {
        /// A LayerNorm over channels; `None` where a BatchNorm was folded into `qkv`.
        norm: Option<LayerNorm>,
        qkv: Dense,
        proj: Dense,
        heads: usize,
    },
}

struct Block {
    mixer: Mixer,
    mlp: ConvMlp,
}

impl Block {
    fn load(vb: &VarBuilder, c: usize) -> CResult<Self> {
        if vb.contains_tensor("token_mixer.qkv.weight") {
            return Self::load_attention(vb, c);
        }
        let tm = vb.pp("token_mixer");
        let (_, dims) = read(&tm, "mixer.conv_kxk.0.conv.weight")?;
        let k = dims.get(2).copied().unwrap_or(3);
        let mixer = mobileone(&tm.pp("mixer"), c, k, c)?;
        let norm = mobileone(&tm.pp("norm"), c, k, c)?;
        if (mixer.cin_g, norm.cin_g) != (1, 1) {
            candle_core::bail!("RepMixer convolutions must be depthwise");
        }
        // x + γ·(mixer(x) − norm(x)) as one convolution, as timm's `RepMixer.reparameterize`.
        let gamma = layer_scale(&tm, "layer_scale.gamma", c)?;
        let mut fused = Kernel::identity(c, 1, k, None, vec![0.0; c]);
        let per = k * k;
        let rows = fused.w.chunks_mut(per).zip(mixer.w.chunks(per)).zip(norm.w.chunks(per));
        for (o, ((f, m), n)) in rows.enumerate() {
            f.iter_mut().zip(m.iter().zip(n)).for_each(|(fv, (mv, nv))| *fv += gamma[o] * (mv - nv));
            fused.bias[o] = gamma[o] * (mixer.bias[o] - norm.bias[o]);
        }
        let scale = layer_scale(vb, "layer_scale.gamma", c)?;
        Ok(Block { mixer: Mixer::Rep(conv(fused, c, 1)?), mlp: ConvMlp::load(&vb.pp("mlp"), c, &scale)? })
    }

    fn load_attention(vb: &VarBuilder, c: usize) -> CResult<Self> {
        if !c.is_multiple_of(HEAD_DIM) {
            candle_core::bail!("an attention stage of width {c} does not split into heads of {HEAD_DIM}");
        }
        let tm = vb.pp("token_mixer");
        let (mut w, dims) = read(&tm, "qkv.weight")?;
        if dims != [3 * c, c] {
            candle_core::bail!("token_mixer.qkv.weight has shape {dims:?}, expected [{}, {c}]", 3 * c);
        }
        let mut b = if tm.contains_tensor("qkv.bias") { read_vec(&tm, "qkv.bias", 3 * c)? } else { vec![0.0; 3 * c] };
        let norm = if vb.contains_tensor("norm.running_mean") {
            // qkv(x·s + t) = (W·diag(s))·x + W·t + b.
            let (s, t) = batch_norm(&vb.pp("norm"), c)?;
            for (r, row) in w.chunks_mut(c).enumerate() {
                b[r] += row.iter().zip(&t).map(|(wv, tv)| wv * tv).sum::<f32>();
                row.iter_mut().zip(&s).for_each(|(wv, sv)| *wv *= sv);
            }
            None
        } else {
            let device = candle_core::Device::Cpu;
            let weight = Tensor::new(read_vec(vb, "norm.weight", c)?, &device)?;
            let bias = Tensor::new(read_vec(vb, "norm.bias", c)?, &device)?;
            Some(LayerNorm::new(weight, bias, LAYER_NORM_EPS))
        };
        let q_scale = (HEAD_DIM as f32).powf(-0.5);
        w[..c * c].iter_mut().for_each(|v| *v *= q_scale);
        b[..c].iter_mut().for_each(|v| *v *= q_scale);
        let device = candle_core::Device::Cpu;
        let qkv = Dense::new(&Tensor::from_vec(w, (3 * c, c), &device)?, Some(Tensor::new(b, &device)?))?;
        let ls1 = layer_scale(vb, "layer_scale_1.gamma", c)?;
        let proj = pointwise(
            Kernel { w: read(&tm, "proj.weight")?.0, bias: read_vec(&tm, "proj.bias", c)?, cout: c, cin_g: c, k: 1 },
            c,
            Some(&ls1),
        )?;
        let ls2 = layer_scale(vb, "layer_scale_2.gamma", c)?;
        Ok(Block {
            mixer: Mixer::Attention { norm, qkv, proj, heads: c / HEAD_DIM },
            mlp: ConvMlp::load(&vb.pp("mlp"), c, &ls2)?,
        })
    }

    fn forward(&self, xs: &Tensor) -> CResult<Tensor> {
        let xs = match &self.mixer {
            Mixer::Rep(conv) => conv.forward(xs)?,
            Mixer::Attention { norm, qkv, proj, heads } => {
                let (b, h, w, c) = xs.dims4()?;
                let normed = match norm {
                    Some(n) => n.forward(xs)?,
                    None => xs.clone(),
                };
                let tokens = qkv.forward(&normed.reshape((b, h * w, c))?, None)?;
                let attended = proj.forward(&kernels::attention(&tokens, *heads, false, None)?, None)?;
                (xs + attended.reshape((b, h, w, c))?)?
            }
        };
        &xs + self.mlp.forward(&xs)?
    }

    fn for_each_dense(&mut self, f: &mut dyn FnMut(&mut Dense)) {
        if let Mixer::Attention { qkv, proj, .. } = &mut self.mixer {
            f(qkv);
            f(proj);
        }
        f(&mut self.mlp.fc1);
        f(&mut self.mlp.fc2);
    }
}

/// A stage's opening downsampler (`PatchEmbed`).
struct Downsample {
    large: GroupedConv,
    se: Option<SqueezeExcite>,
    pointwise: Dense,
}

struct Stage {
    downsample: Option<Downsample>,
    position: Option<GroupedConv>,
    blocks: Vec<Block>,
}

impl Stage {
    /// Stage `vb` over `cin` channels; `None` when there is no such stage.
    fn load(vb: &VarBuilder, cin: usize) -> CResult<Option<(Self, usize)>> {
        if !vb.contains_tensor("blocks.0.mlp.fc1.weight") {
            return Ok(None);
        }
        let mut c = cin;
        let downsample = if vb.contains_tensor("downsample.proj.0.large_conv.conv.weight") {
            let lk = vb.pp("downsample.proj.0");
            let mut large = Kernel::conv_bn(&lk.pp("large_conv"))?;
            if lk.contains_tensor("small_conv.conv.weight") {
                let k = large.k;
                large = large.add(&Kernel::conv_bn(&lk.pp("small_conv"))?.padded_to(k)?)?;
            }
            let large = conv(large, cin, 2)?;
            c = large.out_channels();
            let se = SqueezeExcite::load(&lk.pp("se"), c)?;
            let pw = mobileone(&vb.pp("downsample.proj.1"), c, 1, 1)?;
            Some(Downsample { large, se, pointwise: pointwise(pw, c, None)? })
        } else {
            None
        };
        let position = if vb.contains_tensor("pos_emb.pos_enc.weight") {
            // x + pos_enc(x) as one convolution, as timm's `RepConditionalPosEnc.reparameterize`.
            let pe = Kernel::conv(&vb.pp("pos_emb.pos_enc"))?;
            let id = Kernel::identity(pe.cout, pe.cin_g, pe.k, None, vec![0.0; pe.cout]);
            Some(conv(pe.add(&id)?, c, 1)?)
        } else {
            None
        };
        let mut blocks = Vec::new();
        while vb.contains_tensor(&format!("blocks.{}.mlp.fc1.weight", blocks.len())) {
            blocks.push(Block::load(&vb.pp(format!("blocks.{}", blocks.len())), c)?);
        }
        Ok(Some((Stage { downsample, position, blocks }, c)))
    }

    fn forward(&self, xs: &Tensor) -> CResult<Tensor> {
        let mut xs = xs.clone();
        if let Some(d) = &self.downsample {
            xs = d.large.forward(&xs)?;
            if let Some(se) = &d.se {
                xs = se.forward(&xs)?;
            }
            xs = d.pointwise.forward(&xs.gelu_erf()?, Some(HiddenAct::Gelu))?;
        }
        if let Some(p) = &self.position {
            xs = p.forward(&xs)?;
        }
        for block in &self.blocks {
            xs = block.forward(&xs)?;
        }
        Ok(xs)
    }
}

/// A MobileCLIP image tower: timm's FastViT with its classifier head as the projection.
pub struct FastVit {
    stem: [GroupedConv; 2],
    stem_pointwise: Dense,
    stages: Vec<Stage>,
    final_conv: GroupedConv,
    final_se: Option<SqueezeExcite>,
    head: Dense,
}

impl FastVit {
    /// Builds the tower from timm's unfused weights under `vb` (open_clip's `visual.trunk`).
    pub fn load(vb: &VarBuilder) -> CResult<Self> {
        let s0 = mobileone(&vb.pp("stem.0"), 3, 3, 1)?;
        let c = s0.cout;
        let stem0 = conv(s0, 3, 2)?;
        let stem1 = conv(mobileone(&vb.pp("stem.1"), c, 3, c)?, c, 2)?;
        let stem_pointwise = pointwise(mobileone(&vb.pp("stem.2"), c, 1, 1)?, c, None)?;
        let mut stages = Vec::new();
        let mut c = c;
        while let Some((stage, out)) = Stage::load(&vb.pp(format!("stages.{}", stages.len())), c)? {
            stages.push(stage);
            c = out;
        }
        if stages.is_empty() {
            candle_core::bail!("no FastViT stage (stages.0.blocks.0.mlp.fc1.weight) under the image tower");
        }
        let final_conv = conv(mobileone(&vb.pp("final_conv"), c, 3, c)?, c, 1)?;
        let wide = final_conv.out_channels();
        let final_se = SqueezeExcite::load(&vb.pp("final_conv.se"), wide)?;
        let (w, dims) = read(vb, "head.fc.weight")?;
        let &[embed, width] = dims.as_slice() else { candle_core::bail!("head.fc.weight of shape {dims:?}") };
        if width != wide {
            candle_core::bail!("head.fc.weight takes {width} features, the tower gives {wide}");
        }
        let bias =
            if vb.contains_tensor("head.fc.bias") { read_vec(vb, "head.fc.bias", embed)? } else { vec![0.0; embed] };
        let head = pointwise(Kernel { w, bias, cout: embed, cin_g: wide, k: 1 }, wide, None)?;
        Ok(FastVit { stem: [stem0, stem1], stem_pointwise, stages, final_conv, final_se, head })
    }

    /// Width of the embeddings.
    pub fn embed_dim(&self) -> usize {
        self.head.out_dim()
    }

    fn for_each_dense(&mut self, f: &mut dyn FnMut(&mut Dense)) {
        f(&mut self.stem_pointwise);
        for stage in &mut self.stages {
            if let Some(d) = &mut stage.downsample {
                f(&mut d.pointwise);
                if let Some(se) = &mut d.se {
                    se.for_each_dense(f);
                }
            }
            stage.blocks.iter_mut().for_each(|b| b.for_each_dense(f));
        }
        if let Some(se) = &mut self.final_se {
            se.for_each_dense(f);
        }
        f(&mut self.head);
    }
}

impl ImageTower for FastVit {
    fn image_features(&self, pixels: &Tensor) -> CResult<Tensor> {
        // The fused weights live on the CPU, where the convolution kernel runs.
        let device = pixels.device().clone();
        let xs = pixels.to_device(&candle_core::Device::Cpu)?.to_dtype(DType::F32)?;
        let xs = xs.permute((0, 2, 3, 1))?.contiguous()?;
        let xs = self.stem[0].forward(&xs)?.gelu_erf()?;
        let xs = self.stem[1].forward(&xs)?.gelu_erf()?;
        let mut xs = self.stem_pointwise.forward(&xs, Some(HiddenAct::Gelu))?;
        for stage in &self.stages {
            xs = stage.forward(&xs)?;
        }
        xs = self.final_conv.forward(&xs)?;
        if let Some(se) = &self.final_se {
            xs = se.forward(&xs)?;
        }
        let pooled = xs.gelu_erf()?.mean(1)?.mean(D::Minus2)?;
        self.head.forward(&pooled, None)?.to_device(&device)
    }

    fn set_precision(&mut self, precision: Precision) {
        self.for_each_dense(&mut |d: &mut Dense| d.set_precision(precision));
    }
}
