//! The CLIP network: a ViT image tower and a causal text transformer, each projected into one
//! embedding space. Weight names mirror transformers' `CLIPModel` through `vb.pp(..)`, so any
//! Hugging Face CLIP checkpoint loads as it is.
//!
//! Departures from a literal port, all exact up to float rounding: the query, key and value
//! projections are fused into one matmul (with the attention scale folded into the query
//! weights); attention and bias + activation run as fused CPU kernels ([`crate::models::nn`]);
//! and the patch convolution, whose stride equals its kernel, is a reshape and one matmul.

use candle_core::{D, DType, Device, IndexOp, Module, Tensor};
use candle_nn::{Embedding, LayerNorm, VarBuilder};

use super::chinese::ChineseTextTower;
use super::config::{ClipConfig, TextConfig, VisionConfig};
use crate::models::nn::layers::{Encoder, encoder_shape_from, layer_norm, patch_matrix, patches};
use crate::models::nn::{Dense, ImageTower, precision::Precision};

type CResult<T> = candle_core::Result<T>;

fn dense_no_bias(in_dim: usize, out_dim: usize, vb: VarBuilder) -> CResult<Dense> {
    Dense::new(&vb.get((out_dim, in_dim), "weight")?, None)
}

encoder_shape_from!(VisionConfig, TextConfig);

/// The image tower up to its pooled, normalised class token.
struct VisionTower {
    patch: Tensor,
    class: Tensor,
    positions: Tensor,
    pre_ln: LayerNorm,
    encoder: Encoder,
    post_ln: LayerNorm,
    patch_size: usize,
    grid: usize,
}

impl VisionTower {
    fn load(c: &VisionConfig, vb: VarBuilder) -> CResult<Self> {
        let grid = c.image_size / c.patch_size;
        let emb = vb.pp("embeddings");
        let d = c.hidden_size;
        Ok(VisionTower {
            patch: patch_matrix(d, c.num_channels, c.patch_size, emb.pp("patch_embedding"))?,
            class: emb.get(d, "class_embedding")?,
            positions: emb.get((grid * grid + 1, d), "position_embedding.weight")?,
            pre_ln: layer_norm(d, c.layer_norm_eps, vb.pp("pre_layrnorm"))?,
            encoder: Encoder::load(c.into(), vb.pp("encoder"))?,
            post_ln: layer_norm(d, c.layer_norm_eps, vb.pp("post_layernorm"))?,
            patch_size: c.patch_size,
            grid,
        })
    }

    /// Patch + class + position embeddings of `[b, 3, H, W]` pixels: `[b, 1 + grid², d]`.
    fn embed(&self, pixels: &Tensor) -> CResult<Tensor> {
        let b = pixels.dim(0)?;
        let g = self.grid;
        let d = self.class.dim(0)?;
        let patches = patches(pixels, g, self.patch_size)?;
        let tokens = patches.matmul(&self.patch)?.reshape((b, g * g, d))?;
        let class = self.class.reshape((1, 1, d))?.broadcast_as((b, 1, d))?;
        Tensor::cat(&[class, tokens], 1)?.broadcast_add(&self.positions.unsqueeze(0)?)
    }

    /// All hidden states after the encoder, `[b, 1 + grid², d]` (CLIPSeg reads these).
    fn forward(&self, pixels: &Tensor) -> CResult<Tensor> {
        let xs = self.pre_ln.forward(&self.embed(pixels)?)?;
        self.encoder.forward(&xs, false)
    }

    /// The outputs of the encoder layers numbered in `layers` (from 0), running only as many
    /// layers as the deepest one needs.
    fn hidden_states_at(&self, pixels: &Tensor, layers: &[usize]) -> CResult<Vec<Tensor>> {
        let deepest = layers.iter().copied().max().unwrap_or(0);
        if deepest >= self.encoder.layers.len() {
            candle_core::bail!("layer {deepest} asked for, the vision tower has {}", self.encoder.layers.len());
        }
        let mut xs = self.pre_ln.forward(&self.embed(pixels)?)?;
        let mut kept = vec![None; layers.len()];
        for (i, layer) in self.encoder.layers[..=deepest].iter().enumerate() {
            xs = layer.forward(&xs, false)?;
            for (slot, _) in kept.iter_mut().zip(layers).filter(|(_, l)| **l == i) {
                *slot = Some(xs.clone());
            }
        }
        Ok(kept.into_iter().map(|t| t.expect("every layer visited")).collect())
    }

    /// Takes `side` x `side` inputs: the position embeddings are resampled to the new grid
    /// as transformers' `interpolate_pos_encoding` does (bicubic, a = -0.75, half-pixel
    /// centres, edges clamped).
    fn resize_input(&mut self, side: usize) -> CResult<()> {
        let grid = side / self.patch_size;
        if grid * self.patch_size != side || grid == 0 {
            candle_core::bail!("{side} px is not a multiple of the patch size {}", self.patch_size);
        }
        if grid == self.grid {
            return Ok(());
        }
        let d = self.positions.dim(1)?;
        let old = self.positions.to_dtype(DType::F32)?.to_vec2::<f32>()?;
        let (g, n) = (self.grid, grid);
        let taps = bicubic_taps(g, n);
        // Rows first (along x), then columns (along y), like torch's separable kernel.
        let mut resized = vec![vec![0f32; d]; 1 + n * n];
        resized[0].copy_from_slice(&old[0]);
        for (oy, ty) in taps.iter().enumerate() {
            for (ox, tx) in taps.iter().enumerate() {
                let out = &mut resized[1 + oy * n + ox];
                for c in 0..d {
                    let mut acc = 0f64;
                    for (&iy, &wy) in ty.0.iter().zip(&ty.1) {
                        let mut row = 0f64;
                        for (&ix, &wx) in tx.0.iter().zip(&tx.1) {
                            row += wx * f64::from(old[1 + iy * g + ix][c]);
                        }
                        acc += wy * row;
                    }
                    out[c] = acc as f32;
                }
            }
        }
        let flat: Vec<f32> = resized.into_iter().flatten().collect();
        self.positions =
            Tensor::from_vec(flat, (1 + n * n, d), self.positions.device())?.to_dtype(self.positions.dtype())?;
        self.grid = grid;
        Ok(())
    }

    fn pooled(&self, pixels: &Tensor) -> CResult<Tensor> {
        let hidden = self.forward(pixels)?;
        self.post_ln.forward(&hidden.i((.., 0, ..))?.contiguous()?)
    }
}

/// torch's `upsample_bicubic2d` weights along one axis (`align_corners=False`): for each
/// output index, the four input indices (clamped to the edges) and their weights.
fn bicubic_taps(input: usize, output: usize) -> Vec<([usize; 4], [f64; 4])> {
    const A: f64 = -0.75;
    let near = |x: f64| ((A + 2.0) * x - (A + 3.0)) * x * x + 1.0;
    let far = |x: f64| ((A * x - 5.0 * A) * x + 8.0 * A) * x - 4.0 * A;
    let scale = input as f64 / output as f64;
    (0..output)
        .map(|o| {
            let real = scale * (o as f64 + 0.5) - 0.5;
            let base = real.floor();
            let t = real - base;
            let at = |k: i64| (base as i64 + k).clamp(0, input as i64 - 1) as usize;
            ([at(-1), at(0), at(1), at(2)], [far(t + 1.0), near(t), near(1.0 - t), far(2.0 - t)])
        })
        .collect()
}

/// The text tower up to its pooled end-of-text state.
struct TextTower {
    tokens: Embedding,
    positions: Tensor,
    encoder: Encoder,
    final_ln: LayerNorm,
    legacy_pooling: bool,
    eos: u32,
    /// open_clip's `no_causal_mask` (MobileCLIP-S*): texts attend both ways, padded to the
    /// full context with this id, unmasked, as open_clip runs them.
    bidirectional_pad: Option<u32>,
}

impl TextTower {
    fn load(c: &TextConfig, vb: VarBuilder) -> CResult<Self> {
        let d = c.hidden_size;
        let emb = vb.pp("embeddings");
        Ok(TextTower {
            tokens: Embedding::new(emb.get((c.vocab_size, d), "token_embedding.weight")?, d),
            positions: emb.get((c.max_position_embeddings, d), "position_embedding.weight")?,
            encoder: Encoder::load(c.into(), vb.pp("encoder"))?,
            final_ln: layer_norm(d, c.layer_norm_eps, vb.pp("final_layer_norm"))?,
            legacy_pooling: c.eos_token_id == 2,
            eos: c.eos_token_id,
            bidirectional_pad: None,
        })
    }

    /// Where transformers pools a sequence: the first end-of-text token, or for legacy configs
    /// (`eos_token_id == 2`) the first position of the largest id.
    fn pool_position(&self, ids: &[u32]) -> usize {
        if self.legacy_pooling {
            let max = ids.iter().copied().max().unwrap_or(0);
            ids.iter().position(|&t| t == max).unwrap_or(0)
        } else {
            ids.iter().position(|&t| t == self.eos).unwrap_or(0)
        }
    }

    /// Pooled states for token sequences of any lengths (right-padded here; the causal mask
    /// keeps padding from reaching the pooled position).
    fn pooled(&self, batch: &[Vec<u32>], pad: u32, device: &Device) -> CResult<Tensor> {
        let b = batch.len();
        let max_len = self.positions.dim(0)?;
        // Bidirectional: every position sees the padding, so the padding is open_clip's.
        let (s, pad) = match self.bidirectional_pad {
            Some(pad) => (max_len, pad),
            None => (batch.iter().map(Vec::len).max().unwrap_or(1).max(1), pad),
        };
        let longest = batch.iter().map(Vec::len).max().unwrap_or(0);
        if longest > max_len {
            candle_core::bail!("{longest} tokens exceed the model's context of {max_len}");
        }
        let mut flat = Vec::with_capacity(b * s);
        let mut gather = Vec::with_capacity(b);
        for (i, ids) in batch.iter().enumerate() {
            flat.extend_from_slice(ids);
            flat.extend(std::iter::repeat_n(pad, s - ids.len()));
            gather.push((i * s + self.pool_position(ids)) as u32);
        }
        let ids = Tensor::from_vec(flat, (b, s), device)?;
        let xs = self.tokens.forward(&ids)?.broadcast_add(&self.positions.narrow(0, 0, s)?.unsqueeze(0)?)?;
        let hidden = self.encoder.forward(&xs, self.bidirectional_pad.is_none())?;
        let d = hidden.dim(D::Minus1)?;
        let picked = hidden.reshape((b * s, d))?.index_select(&Tensor::from_vec(gather, b, device)?, 0)?;
        self.final_ln.forward(&picked)
    }
}

/// The text tower of a CLIP, or of a Chinese-CLIP.
enum TextSide {
    Clip(TextTower),
    Chinese(ChineseTextTower),
}

impl TextSide {
    fn pooled(&self, batch: &[Vec<u32>], pad: u32, device: &Device) -> CResult<Tensor> {
        match self {
            TextSide::Clip(tower) => tower.pooled(batch, pad, device),
            TextSide::Chinese(tower) => tower.pooled(batch, pad),
        }
    }
}

/// The image tower with its projection.
struct ImageSide {
    tower: VisionTower,
    projection: Dense,
}

impl ImageSide {
    fn load(config: &ClipConfig, vb: &VarBuilder, precision: Precision) -> CResult<Self> {
        let vc = &config.vision_config;
        let mut side = ImageSide {
            tower: VisionTower::load(vc, vb.pp("vision_model"))?,
            projection: dense_no_bias(vc.hidden_size, config.projection_dim, vb.pp("visual_projection"))?,
        };
        side.set_precision(precision);
        Ok(side)
    }

    fn set_precision(&mut self, precision: Precision) {
        self.tower.encoder.for_each_dense(&mut |d: &mut Dense| d.set_precision(precision));
        self.projection.set_precision(precision);
    }
}

/// Where the image side comes from when it is built on first use.
struct DeferredImageSide {
    config: ClipConfig,
    weights: VarBuilder<'static>,
    /// Taken while the image side is being built, so that it is built once.
    building: std::sync::Mutex<()>,
}

/// A loaded CLIP model (or Chinese-CLIP).
///
/// [`ClipModel::load_text_first`] builds the text side at once and the image side (its tower
/// and projection: 88 M of a ViT-B/32's 151 M parameters) when an image first needs it, so
/// that a text query reads and keeps only the text tower's weights.
pub struct ClipModel {
    image: std::sync::OnceLock<ImageSide>,
    /// An image tower other than the ViT (MobileCLIP's FastViT), projection included.
    image_tower: Option<Box<dyn ImageTower>>,
    deferred: Option<DeferredImageSide>,
    /// The precision of the image side's linear layers (also for one built later).
    image_precision: Precision,
    text: TextSide,
    text_projection: Dense,
    logit_scale: f32,
}

impl ClipModel {
    /// Builds the model from weights named as in transformers' `CLIPModel`.
    pub fn load(config: &ClipConfig, vb: VarBuilder) -> CResult<Self> {
        let mut model = Self::load_text_side(config, &vb)?;
        let image = ImageSide::load(config, &vb, Precision::F32)?;
        model.image = image.into();
        Ok(model)
    }

    /// Builds the text side now and the image side on first use (see [`ClipModel`]). A
    /// missing or misshapen image weight is then reported by the first image embedding.
    pub fn load_text_first(config: &ClipConfig, vb: VarBuilder<'static>) -> CResult<Self> {
        let mut model = Self::load_text_side(config, &vb)?;
        model.deferred = Some(DeferredImageSide { config: config.clone(), weights: vb, building: Default::default() });
        Ok(model)
    }

    fn load_text_side(config: &ClipConfig, vb: &VarBuilder) -> CResult<Self> {
        let logit_scale = vb.get((), "logit_scale")?.to_dtype(DType::F32)?.to_scalar::<f32>()?.exp();
        let (text, text_width) = match &config.bert_text {
            Some(bert) => (TextSide::Chinese(ChineseTextTower::load(bert, vb.pp("text_model"))?), bert.hidden_size),
            None => {
                let tc = &config.text_config;
                (TextSide::Clip(TextTower::load(tc, vb.pp("text_model"))?), tc.hidden_size)
            }
        };
        Ok(ClipModel {
            image: Default::default(),
            image_tower: None,
            deferred: None,
            image_precision: Precision::F32,
            text,
            text_projection: dense_no_bias(text_width, config.projection_dim, vb.pp("text_projection"))?,
            logit_scale,
        })
    }

    /// Builds the text side from CLIP weights and pairs it with `tower` for images (a
    /// MobileCLIP: open_clip's text transformer beside a FastViT).
    pub fn load_text_with_image_tower(
        config: &ClipConfig,
        vb: &VarBuilder,
        tower: Box<dyn ImageTower>,
    ) -> CResult<Self> {
        let mut model = Self::load_text_side(config, vb)?;
        model.image_tower = Some(tower);
        Ok(model)
    }

    /// Runs the text tower bidirectionally, on texts padded to the full context with `pad`
    /// (open_clip's `no_causal_mask`).
    pub fn set_text_bidirectional(&mut self, pad: u32) {
        if let TextSide::Clip(tower) = &mut self.text {
            tower.bidirectional_pad = Some(pad);
        }
    }

    /// Whether the image tower is one other than the CLIP ViT (a MobileCLIP's FastViT).
    pub fn has_foreign_image_tower(&self) -> bool {
        self.image_tower.is_some()
    }

    /// The image side, built now if it was deferred.
    fn image(&self) -> CResult<&ImageSide> {
        if let Some(image) = self.image.get() {
            return Ok(image);
        }
        let Some(deferred) = &self.deferred else { candle_core::bail!("the CLIP has no image tower") };
        let _building = deferred.building.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(image) = self.image.get() {
            return Ok(image);
        }
        let built = ImageSide::load(&deferred.config, &deferred.weights, self.image_precision).map_err(|e| {
            candle_core::Error::Msg(format!(
                "the image tower's weights do not fit the model's config ({}); is this a complete CLIP checkpoint?",
                crate::error::first_line(&e)
            ))
        })?;
        Ok(self.image.get_or_init(|| built))
    }

    /// Whether the image tower is built (a text query leaves it unbuilt).
    pub fn has_image_tower(&self) -> bool {
        self.image.get().is_some() || self.image_tower.is_some()
    }

    /// Runs the linear layers at `precision` (see [`Precision`]): the image tower's, and the
    /// text tower's for a CLIP. Texts are few and cheap next to photos, so where a reduced
    /// precision costs a text side more fidelity it steps back: a Chinese-CLIP's BERT stays
    /// f32 (its post-norm layers amplify bf16's rounding: texts at cosine 0.994 to f32 on the
    /// fixtures, against 0.9997 for the CLIP towers), and a CLIP's text tower runs bf16 when
    /// int8 is asked (its int8 texts at cosine 0.9990 to f32 on the fixtures, under the gate;
    /// its images 0.9993 and above).
    pub fn set_precision(&mut self, precision: Precision) {
        self.image_precision = precision;
        if let Some(tower) = &mut self.image_tower {
            tower.set_precision(precision);
        }
        if let Some(image) = self.image.get_mut() {
            image.set_precision(precision);
        }
        if let TextSide::Clip(tower) = &mut self.text {
            let text = precision.without_int8();
            tower.encoder.for_each_dense(&mut |d: &mut Dense| d.set_precision(text));
            self.text_projection.set_precision(text);
        }
    }

    /// The multiplier of cosine similarities in CLIP's logits (`exp` of the stored parameter).
    pub fn logit_scale(&self) -> f32 {
        self.logit_scale
    }

    /// `get_image_features`: projected, not normalised, `[b, projection_dim]`.
    pub fn image_features(&self, pixels: &Tensor) -> CResult<Tensor> {
        if let Some(tower) = &self.image_tower {
            return tower.image_features(pixels);
        }
        let image = self.image()?;
        image.projection.forward(&image.tower.pooled(pixels)?, None)
    }

    /// `get_text_features` for token sequences (with their start and end tokens), padded with
    /// `pad` (CLIP: the end token; Chinese-CLIP: `[PAD]`, masked).
    pub fn text_features(&self, batch: &[Vec<u32>], pad: u32, device: &Device) -> CResult<Tensor> {
        self.text_projection.forward(&self.text_pooled(batch, pad, device)?, None)
    }

    /// The text tower's pooled states, before `text_projection` (an adapter trains on them).
    pub fn text_pooled(&self, batch: &[Vec<u32>], pad: u32, device: &Device) -> CResult<Tensor> {
        self.text.pooled(batch, pad, device)
    }

    /// The outputs of the vision encoder's layers `layers` (numbered from 0), each
    /// `[b, 1 + grid², width]` (CLIPSeg's activations).
    pub fn vision_hidden_states_at(&self, pixels: &Tensor, layers: &[usize]) -> CResult<Vec<Tensor>> {
        self.image()?.tower.hidden_states_at(pixels, layers)
    }

    /// Makes the vision tower take `side` x `side` images, resampling its position
    /// embeddings (CLIPSeg runs a 224 px CLIP at 352 px).
    pub fn set_image_size(&mut self, side: usize) -> CResult<()> {
        self.image()?;
        match self.image.get_mut() {
            Some(image) => image.tower.resize_input(side),
            None => candle_core::bail!("the CLIP has no image tower"),
        }
    }

    /// The vision encoder's hidden states, `[b, 1 + grid², width]`.
    pub fn vision_hidden_states(&self, pixels: &Tensor) -> CResult<Tensor> {
        self.image()?.tower.forward(pixels)
    }
}
