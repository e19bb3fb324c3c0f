//! The SigLIP network as transformers' `SiglipModel` computes it: a ViT image tower without a
//! class token, pooled by a multi-head attention-pooling head (MAP: one learned probe attends
//! over the patches), and a bidirectional text tower pooled at its last position (texts are
//! padded to the full context, so that is a padding token) and projected by its `head`.
//! Weight names mirror transformers' through `vb.pp(..)`; the encoder stack is CLIP's
//! (`nn::layers::Encoder`), fused and precision-switchable alike.

use candle_core::{DType, Device, Module, Tensor};
use candle_nn::{Embedding, LayerNorm, VarBuilder};

use super::config::{SiglipConfig, SiglipTextConfig, SiglipVisionConfig};
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

    /// `[b, n, d]` states pooled to `[b, d]`.
    fn forward(&self, hidden: &Tensor) -> CResult<Tensor> {
        let (b, n, d) = hidden.dims3()?;
        let (h, hd) = (self.heads, d / self.heads);
        let kv = self.kv.forward(hidden, None)?.reshape((b, n, 2, h, hd))?;
        let keys = kv.narrow(2, 0, 1)?.squeeze(2)?.transpose(1, 2)?.contiguous()?; // [b, h, n, hd]
        let values = kv.narrow(2, 1, 1)?.squeeze(2)?.transpose(1, 2)?.contiguous()?;
        let query = self.query.reshape((1, h, 1, hd))?.broadcast_as((b, h, 1, hd))?.contiguous()?;
        let weights = candle_nn::ops::softmax_last_dim(&query.matmul(&keys.t()?)?)?; // [b, h, 1, n]
        let attended = weights.matmul(&values)?.reshape((b, d))?;
        let xs = self.out.forward(&attended, None)?;
        &xs + self.mlp.forward(&self.ln.forward(&xs)?)?
    }
}

/// The image tower up to its pooled state (the image embedding, unnormalised).
struct VisionTower {
    patch: Tensor,
    patch_bias: Tensor,
    positions: Tensor,
    encoder: Encoder,
    post_ln: LayerNorm,
    head: PoolingHead,
    patch_size: usize,
    grid: usize,
}

impl VisionTower {
    fn load(c: &SiglipVisionConfig, vb: VarBuilder) -> CResult<Self> {
        let grid = c.image_size / c.patch_size;
        let d = c.hidden_size;
        let emb = vb.pp("embeddings");
        Ok(VisionTower {
            patch: patch_matrix(d, c.num_channels, c.patch_size, emb.pp("patch_embedding"))?,
            patch_bias: emb.get(d, "patch_embedding.bias")?,
            positions: emb.get((grid * grid, d), "position_embedding.weight")?,
            encoder: Encoder::load(c.into(), vb.pp("encoder"))?,
            post_ln: layer_norm(d, c.layer_norm_eps, vb.pp("post_layernorm"))?,
            head: PoolingHead::load(c, vb.pp("head"))?,
            patch_size: c.patch_size,
            grid,
        })
    }

    fn pooled(&self, pixels: &Tensor) -> CResult<Tensor> {
        let b = pixels.dim(0)?;
        let (g, d) = (self.grid, self.positions.dim(1)?);
        let tokens = patches(pixels, g, self.patch_size)?.matmul(&self.patch)?.broadcast_add(&self.patch_bias)?;
        let xs = tokens.reshape((b, g * g, d))?.broadcast_add(&self.positions.unsqueeze(0)?)?;
        let hidden = self.post_ln.forward(&self.encoder.forward(&xs, false)?)?;
        self.head.forward(&hidden)
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
    pub fn load(config: &SiglipConfig, vb: VarBuilder) -> CResult<Self> {
        let scalar =
            |name: &str| -> CResult<f32> { vb.get(1, name)?.to_dtype(DType::F32)?.reshape(())?.to_scalar::<f32>() };
        Ok(SiglipModel {
            vision: VisionTower::load(&config.vision_config, vb.pp("vision_model"))?,
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

    /// `get_image_features`: the pooled image state, not normalised, `[b, hidden]`.
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
