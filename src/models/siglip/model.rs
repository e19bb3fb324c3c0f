//! The SigLIP network as transformers' `SiglipModel` computes it: a ViT image tower without a
//! class token, pooled by a multi-head attention-pooling head (MAP: one learned probe attends
//! over the patches), and a bidirectional text tower pooled at its last position (texts are
//! padded to the full context, so that is a padding token) and projected by its `head`.
//! Weight names mirror transformers' through `vb.pp(..)`; the encoder stack is CLIP's
//! (`nn::layers::Encoder`), fused and precision-switchable alike.
//!
//! SigLIP 2 NaFlex (`Siglip2Model`) is the same network but for its image input: patches cut
//! at each photo's own aspect ([`super::naflex`]), embedded by a linear layer, the square
//! position table resized to each photo's grid, and the padded patches hidden from every
//! attention (the encoder's and the pooling head's) by a key mask.

use std::collections::HashMap;
use std::sync::Mutex;

use candle_core::{DType, Device, Module, Tensor};
use candle_nn::{Embedding, LayerNorm, VarBuilder};

use super::config::{SiglipConfig, SiglipTextConfig, SiglipVisionConfig};
use super::naflex::{NaflexInput, resize_positions};
use crate::models::nn::layers::{Encoder, Mlp, dense, encoder_shape_from, layer_norm, patch_matrix, patches};
use crate::models::nn::{Dense, precision::Precision};

type CResult<T> = candle_core::Result<T>;

encoder_shape_from!(SiglipVisionConfig, SiglipTextConfig);

/// The attention-pooling head (`SiglipMultiheadAttentionPoolingHead`): a learned probe
/// attends over all patch states (torch's `nn.MultiheadAttention`), then a residual MLP.
struct PoolingHead {
    /// The probe's query, projected once at load (it is a constant), scaled, `[heads, head_dim]`.
    query: Tensor,
    /// Keys and values of the patch states in one product.
    kv: Dense,
    out: Dense,
    ln: LayerNorm,
    mlp: Mlp,
    heads: usize,
}

impl PoolingHead {
    fn load(c: &SiglipVisionConfig, vb: VarBuilder) -> CResult<Self> {
        let d = c.hidden_size;
        let heads = c.num_attention_heads;
        let attn = vb.pp("attention");
        let w = attn.get((3 * d, d), "in_proj_weight")?;
        let b = attn.get(3 * d, "in_proj_bias")?;
        let probe = vb.get((1, 1, d), "probe")?.reshape((1, d))?;
        let scale = ((d / heads) as f64).powf(-0.5);
        let query = ((probe.matmul(&w.narrow(0, 0, d)?.t()?)? + b.narrow(0, 0, d)?.unsqueeze(0)?)? * scale)?
            .reshape((heads, d / heads))?
            .to_dtype(DType::F32)?;
        Ok(PoolingHead {
            query,
            kv: Dense::new(&w.narrow(0, d, 2 * d)?, Some(b.narrow(0, d, 2 * d)?))?,
            out: dense(d, d, attn.pp("out_proj"))?,
            ln: layer_norm(d, c.layer_norm_eps, vb.pp("layernorm"))?,
            mlp: Mlp::load(d, c.intermediate_size, c.hidden_act, vb.pp("mlp"))?,
            heads,
        })
    }

    fn for_each_dense(&mut self, f: &mut dyn FnMut(&mut Dense)) {
        f(&mut self.kv);
        f(&mut self.out);
        self.mlp.for_each_dense(f);
    }

    /// `[b, n, d]` states pooled to `[b, d]`; `mask` (`[b, 1, 1, n]`, 0 or -∞) hides padded
    /// states from the probe, as `Siglip2MultiheadAttentionPoolingHead` masks them.
    fn forward(&self, hidden: &Tensor, mask: Option<&Tensor>) -> CResult<Tensor> {
        let (b, n, d) = hidden.dims3()?;
        let (h, hd) = (self.heads, d / self.heads);
        let kv = self.kv.forward(hidden, None)?.reshape((b, n, 2, h, hd))?;
        let keys = kv.narrow(2, 0, 1)?.squeeze(2)?.transpose(1, 2)?.contiguous()?; // [b, h, n, hd]
        let values = kv.narrow(2, 1, 1)?.squeeze(2)?.transpose(1, 2)?.contiguous()?;
        let query = self.query.reshape((1, h, 1, hd))?.broadcast_as((b, h, 1, hd))?.contiguous()?;
        let mut scores = query.matmul(&keys.t()?)?; // [b, h, 1, n]
        if let Some(mask) = mask {
            scores = scores.broadcast_add(mask)?;
        }
        let weights = candle_nn::ops::softmax_last_dim(&scores)?;
        let attended = weights.matmul(&values)?.reshape((b, d))?;
        let xs = self.out.forward(&attended, None)?;
        &xs + self.mlp.forward(&self.ln.forward(&xs)?)?
    }
}

/// How the image tower turns its input into patch states with positions.
enum PatchInput {
    /// SigLIP: square images, a convolution (as a matrix), one position per grid cell.
    Square { positions: Tensor, grid: usize },
    /// SigLIP 2 NaFlex: padded patch rows, a linear layer, the square table resized per grid.
    Flexible {
        input: NaflexInput,
        /// The position table on the host, `[side², d]`, for resizing.
        table: Vec<f32>,
        side: usize,
        /// Resized tables `[max_patches, d]` by grid: photos of one camera share a few.
        resized: Mutex<HashMap<(usize, usize), Tensor>>,
    },
}

/// The most resized position tables kept (a few MB at real widths).
const MAX_RESIZED_TABLES: usize = 64;

/// The image tower up to its pooled state (the image embedding, unnormalised).
struct VisionTower {
    /// `[ch·p·p, d]`: the patch convolution (SigLIP) or linear layer (NaFlex) as one matrix.
    patch: Tensor,
    patch_bias: Tensor,
    input: PatchInput,
    encoder: Encoder,
    post_ln: LayerNorm,
    head: PoolingHead,
    patch_size: usize,
}

impl VisionTower {
    fn load(c: &SiglipVisionConfig, naflex: Option<(NaflexInput, usize)>, vb: VarBuilder) -> CResult<Self> {
        let d = c.hidden_size;
        let emb = vb.pp("embeddings");
        let (patch, input) = match naflex {
            None => {
                let grid = c.image_size / c.patch_size;
                let positions = emb.get((grid * grid, d), "position_embedding.weight")?;
                (
                    patch_matrix(d, c.num_channels, c.patch_size, emb.pp("patch_embedding"))?,
                    PatchInput::Square { positions, grid },
                )
            }
            Some((input, side)) => {
                let patch = emb.get((d, input.row_width()), "patch_embedding.weight")?.t()?.contiguous()?;
                let table = emb
                    .get((side * side, d), "position_embedding.weight")?
                    .to_dtype(DType::F32)?
                    .flatten_all()?
                    .to_vec1::<f32>()?;
                (patch, PatchInput::Flexible { input, table, side, resized: Mutex::new(HashMap::new()) })
            }
        };
        Ok(VisionTower {
            patch,
            patch_bias: emb.get(d, "patch_embedding.bias")?,
            input,
            encoder: Encoder::load(c.into(), vb.pp("encoder"))?,
            post_ln: layer_norm(d, c.layer_norm_eps, vb.pp("post_layernorm"))?,
            head: PoolingHead::load(c, vb.pp("head"))?,
            patch_size: c.patch_size,
        })
    }

    fn pooled(&self, pixels: &Tensor) -> CResult<Tensor> {
        let d = self.patch.dim(1)?;
        match &self.input {
            PatchInput::Square { positions, grid } => {
                let (b, g) = (pixels.dim(0)?, *grid);
                let tokens =
                    patches(pixels, g, self.patch_size)?.matmul(&self.patch)?.broadcast_add(&self.patch_bias)?;
                let xs = tokens.reshape((b, g * g, d))?.broadcast_add(&positions.unsqueeze(0)?)?;
                let hidden = self.post_ln.forward(&self.encoder.forward(&xs, false)?)?;
                self.head.forward(&hidden, None)
            }
            PatchInput::Flexible { input, .. } => {
                let (rows, grids) = input.unpack(pixels)?;
                let (b, m) = (grids.len(), input.max_patches);
                let tokens = rows
                    .reshape((b * m, input.row_width()))?
                    .matmul(&self.patch)?
                    .broadcast_add(&self.patch_bias)?
                    .reshape((b, m, d))?;
                let positions =
                    grids.iter().map(|&(h, w)| self.positions(h, w, pixels.device())).collect::<CResult<Vec<_>>>()?;
                let xs = (tokens + Tensor::stack(&positions, 0)?)?;
                // Keys past each image's patches are padding: 0 for real ones, -∞ for the rest.
                let bias: Vec<f32> = grids
                    .iter()
                    .flat_map(|&(h, w)| (0..m).map(move |i| if i < h * w { 0.0 } else { f32::NEG_INFINITY }))
                    .collect();
                let mask = Tensor::from_vec(bias, (b, 1, 1, m), pixels.device())?.to_dtype(xs.dtype())?;
                let hidden = self.post_ln.forward(&self.encoder.forward_masked(&xs, false, Some(&mask))?)?;
                self.head.forward(&hidden, Some(&mask))
            }
        }
    }

    /// A NaFlex image's positions `[max_patches, d]`: the table resized to its `h` × `w` grid,
    /// then the first of them repeated over the padding (as `Siglip2VisionEmbeddings` pads).
    fn positions(&self, h: usize, w: usize, device: &Device) -> CResult<Tensor> {
        let PatchInput::Flexible { input, table, side, resized } = &self.input else {
            candle_core::bail!("positions per grid are for SigLIP 2 NaFlex");
        };
        if let Some(t) = resized.lock().ok().and_then(|cache| cache.get(&(h, w)).cloned()) {
            return Ok(t);
        }
        let d = self.patch.dim(1)?;
        let mut rows = resize_positions(table, *side, d, h, w);
        let first = rows[..d].to_vec();
        for _ in h * w..input.max_patches {
            rows.extend_from_slice(&first);
        }
        let t = Tensor::from_vec(rows, (input.max_patches, d), device)?.to_dtype(self.patch.dtype())?;
        if let Ok(mut cache) = resized.lock() {
            if cache.len() >= MAX_RESIZED_TABLES {
                cache.clear();
            }
            cache.insert((h, w), t.clone());
        }
        Ok(t)
    }
}

/// The text tower up to its projected last-position state.
struct TextTower {
    tokens: Embedding,
    positions: Tensor,
    encoder: Encoder,
    final_ln: LayerNorm,
    head: Dense,
}

impl TextTower {
    fn load(c: &SiglipTextConfig, vb: VarBuilder) -> CResult<Self> {
        let d = c.hidden_size;
        let emb = vb.pp("embeddings");
        Ok(TextTower {
            tokens: Embedding::new(emb.get((c.vocab_size, d), "token_embedding.weight")?, d),
            positions: emb.get((c.max_position_embeddings, d), "position_embedding.weight")?,
            encoder: Encoder::load(c.into(), vb.pp("encoder"))?,
            final_ln: layer_norm(d, c.layer_norm_eps, vb.pp("final_layer_norm"))?,
            head: dense(d, c.embedding_width(), vb.pp("head"))?,
        })
    }

    /// Embeddings of sequences of one length (the tokenizer pads every text to the context):
    /// no mask, as SigLIP was trained, and pooled at the last position.
    fn features(&self, batch: &[Vec<u32>], device: &Device) -> CResult<Tensor> {
        self.head.forward(&self.pooled(batch, device)?, None)
    }

    /// The last position's state after `final_layer_norm`, before the `head`.
    fn pooled(&self, batch: &[Vec<u32>], device: &Device) -> CResult<Tensor> {
        let b = batch.len();
        let s = batch.first().map(Vec::len).unwrap_or(0);
        let max_len = self.positions.dim(0)?;
        if s == 0 || s > max_len || batch.iter().any(|ids| ids.len() != s) {
            candle_core::bail!("SigLIP texts must all be padded to one length of at most {max_len} tokens");
        }
        let ids = Tensor::from_vec(batch.concat(), (b, s), device)?;
        let xs = self.tokens.forward(&ids)?.broadcast_add(&self.positions.narrow(0, 0, s)?.unsqueeze(0)?)?;
        let hidden = self.encoder.forward(&xs, false)?;
        let last = hidden.narrow(1, s - 1, 1)?.squeeze(1)?.contiguous()?;
        self.final_ln.forward(&last)
    }
}

/// A loaded SigLIP model.
pub struct SiglipModel {
    vision: VisionTower,
    text: TextTower,
    logit_scale: f32,
    logit_bias: f32,
}

impl SiglipModel {
    /// Builds the model from weights named as in transformers' `SiglipModel`.
    /// A SigLIP 2 NaFlex (`config.is_naflex()`) needs `naflex`, how its images are cut.
    pub fn load(config: &SiglipConfig, naflex: Option<NaflexInput>, vb: VarBuilder) -> CResult<Self> {
        let naflex_shape = match (config.is_naflex(), naflex, config.position_side()) {
            (false, _, _) => None,
            (true, Some(input), Some(side)) => Some((input, side)),
            _ => candle_core::bail!("a SigLIP 2 NaFlex needs its input's shape and a square position table"),
        };
        let scalar =
            |name: &str| -> CResult<f32> { vb.get(1, name)?.to_dtype(DType::F32)?.reshape(())?.to_scalar::<f32>() };
        Ok(SiglipModel {
            vision: VisionTower::load(&config.vision_config, naflex_shape, vb.pp("vision_model"))?,
            text: TextTower::load(&config.text_config, vb.pp("text_model"))?,
            logit_scale: scalar("logit_scale")?.exp(),
            logit_bias: scalar("logit_bias")?,
        })
    }

    /// Runs the linear layers at `precision`, except int8, which runs as bf16 (f32 where the
    /// CPU has no bf16 products). Not a kernel fault: the AVX2 kernel's image embeddings equal,
    /// to the last bit, those of the scalar product of the same quantised values (cosine 0.862
    /// of f32's on the p10 test model), and per-column 8-bit weights as VNNI and `sdot` take them
    /// reach only 0.962. The loss comes from quantising the attention's input projections
    /// (0.91 from those alone): the test models' attention weights are drawn three times larger
    /// than their fan-in asks (`tools/make_siglip_fixtures.py`), so that attending to another
    /// token visibly changes the output, which makes each softmax nearly one-hot and lets one
    /// quantisation step flip it. Int8 in the MLPs alone passes with AVX2's
    /// weights and misses with VNNI's (0.9989), so SigLIP stays off int8 altogether.
    pub fn set_precision(&mut self, precision: Precision) {
        let precision = precision.without_int8();
        let mut set = |d: &mut Dense| d.set_precision(precision);
        self.vision.encoder.for_each_dense(&mut set);
        self.vision.head.for_each_dense(&mut set);
        self.text.encoder.for_each_dense(&mut set);
        set(&mut self.text.head);
    }

    /// The multiplier of cosines in the logits (`exp` of the stored `logit_scale`).
    pub fn logit_scale(&self) -> f32 {
        self.logit_scale
    }

    /// The offset added to the scaled cosines: a label's probability is
    /// `sigmoid(logit_scale × cosine + logit_bias)`.
    pub fn logit_bias(&self) -> f32 {
        self.logit_bias
    }

    /// How a SigLIP 2 NaFlex cuts its images (`None` for a fixed-size SigLIP).
    pub fn naflex_input(&self) -> Option<NaflexInput> {
        match &self.vision.input {
            PatchInput::Flexible { input, .. } => Some(*input),
            PatchInput::Square { .. } => None,
        }
    }

    /// `get_image_features`: the pooled image state, not normalised, `[b, hidden]`. A fixed-size
    /// SigLIP takes `[b, 3, H, W]` pixels, a NaFlex one `[b, 1 + max_patches, row]` inputs from
    /// [`NaflexInput::preprocess`].
    pub fn image_features(&self, pixels: &Tensor) -> CResult<Tensor> {
        self.vision.pooled(pixels)
    }

    /// The text tower's pooled states, before its `head` (an adapter trains on them).
    pub fn text_pooled(&self, batch: &[Vec<u32>], device: &Device) -> CResult<Tensor> {
        self.text.pooled(batch, device)
    }

    /// `get_text_features` for token sequences padded to one length, `[b, projection]`.
    pub fn text_features(&self, batch: &[Vec<u32>], device: &Device) -> CResult<Tensor> {
        self.text.features(batch, device)
    }
}
