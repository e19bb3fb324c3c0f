//! BLIP's image encoder, `BlipVisionModel`, which captioning, visual question answering and
//! image–text matching all start from, and its preprocessing (`BlipImageProcessor`).
//!
//! The ViT differs from CLIP's in small ways that matter for parity: the patch convolution
//! has a bias, there is no layer norm before the encoder, attention projections are one fused
//! `qkv` linear plus `projection`, and the final layer norm applies to every token.

use candle_core::{Module, Tensor};
use candle_nn::{LayerNorm, VarBuilder};
use image::RgbImage;

use super::{BlipConfig, BlipVisionConfig};
use crate::error::{Error, Result, first_line};
use crate::models::nn::layers::{EncoderLayer, SelfAttention, layer_norm, patches};
use crate::models::nn::precision::Precision;
use crate::models::preprocess::{ImageProcessor, OPENAI_CLIP_MEAN, OPENAI_CLIP_STD, Resample, ResizeTo};
use crate::models::source::{ModelRepo, repo_weights};

type CResult<T> = candle_core::Result<T>;

/// `BlipVisionModel`: pixels to the post-normalised states of all tokens.
pub struct BlipVisionModel {
    patch: Tensor,
    patch_bias: Tensor,
    class: Tensor,
    positions: Tensor,
    layers: Vec<EncoderLayer>,
    post_ln: LayerNorm,
    patch_size: usize,
    grid: usize,
}

impl BlipVisionModel {
    /// Runs the encoder's linear layers at `precision` (see [`Precision`]); bf16 when int8 is
    /// asked: at int8 the fixtures' token states fall to cosine 0.9988 to f32, under the gate
    /// (bf16: 0.99992).
    pub fn set_precision(&mut self, precision: Precision) {
        let precision = precision.without_int8();
        let mut set = |d: &mut crate::models::nn::Dense| d.set_precision(precision);
        for l in &mut self.layers {
            l.for_each_dense(&mut set);
        }
    }

    /// Builds the encoder from weights named as in transformers (under `vision_model`).
    pub fn load(c: &BlipVisionConfig, vb: VarBuilder) -> CResult<Self> {
        let (d, p) = (c.hidden_size, c.patch_size);
        let grid = c.image_size / p;
        let emb = vb.pp("embeddings");
        let patch = emb.get((d, 3, p, p), "patch_embedding.weight")?.reshape((d, 3 * p * p))?.t()?.contiguous()?;
        let layers = (0..c.num_hidden_layers)
            .map(|i| {
                let vb = vb.pp("encoder").pp("layers").pp(i);
                let attn = vb.pp("self_attn");
                let attn = SelfAttention::from_fused(d, c.num_attention_heads, attn.pp("qkv"), attn.pp("projection"))?;
                EncoderLayer::load(d, c.intermediate_size, c.hidden_act, c.layer_norm_eps, attn, vb)
            })
            .collect::<CResult<Vec<_>>>()?;
        Ok(BlipVisionModel {
            patch,
            patch_bias: emb.get(d, "patch_embedding.bias")?,
            class: emb.get((1, 1, d), "class_embedding")?,
            positions: emb.get((1, grid * grid + 1, d), "position_embedding")?,
            layers,
            post_ln: layer_norm(d, c.layer_norm_eps, vb.pp("post_layernorm"))?,
            patch_size: p,
            grid,
        })
    }

    /// `[b, 3, H, W]` pixels to `[b, 1 + grid², d]` states (`last_hidden_state`).
    pub fn forward(&self, pixels: &Tensor) -> CResult<Tensor> {
        let (b, g) = (pixels.dim(0)?, self.grid);
        let d = self.patch_bias.dim(0)?;
        let tokens = patches(pixels, g, self.patch_size)?
            .matmul(&self.patch)?
            .broadcast_add(&self.patch_bias)?
            .reshape((b, g * g, d))?;
        let class = self.class.broadcast_as((b, 1, d))?;
        let mut xs = Tensor::cat(&[class, tokens], 1)?.broadcast_add(&self.positions)?;
        for layer in &self.layers {
            xs = layer.forward(&xs, false)?;
        }
        self.post_ln.forward(&xs)
    }
}

/// `BlipImageProcessor`'s defaults: an exact bicubic resize to the model's size, OpenAI's
/// CLIP normalisation.
pub fn blip_processor_default(size: u32) -> ImageProcessor {
    ImageProcessor {
        resize: Some(ResizeTo::Exact { width: size, height: size }),
        resample: Resample::Bicubic,
        center_crop: None,
        crop_offset: Default::default(),
        rescale: Some(1.0 / 255.0),
        normalize: Some((OPENAI_CLIP_MEAN, OPENAI_CLIP_STD)),
    }
}

/// A BLIP image encoder with its processor, loaded from a hub id or directory.
pub struct BlipImageEncoder {
    model: BlipVisionModel,
    processor: ImageProcessor,
    device: candle_core::Device,
}

impl BlipImageEncoder {
    /// Runs the encoder's linear layers at `precision` (`f32` where the CPU has no bf16
    /// arithmetic; bf16 for int8, see [`BlipVisionModel::set_precision`]). They are most of a
    /// caption's arithmetic, though not of its time: attention over the 577 tokens of a 384 px
    /// photo stays f32.
    pub fn set_precision(&mut self, precision: Precision) {
        self.model.set_precision(precision);
    }

    /// Loads the image encoder of any BLIP checkpoint (captioning, VQA or retrieval).
    pub fn load(model: &str, device: &candle_core::Device) -> Result<Self> {
        let repo = ModelRepo::open(model)?;
        let config = super::read_config(&repo)?;
        Self::from_repo(&repo, &config, &repo_weights(&repo, device)?, device)
    }

    /// The encoder of random or already-mapped weights with the default processor
    /// (benchmarks): `vb` holds `vision_model`.
    pub fn from_parts(config: &BlipConfig, vb: &VarBuilder, device: &candle_core::Device) -> Result<Self> {
        Ok(BlipImageEncoder {
            model: BlipVisionModel::load(&config.vision_config, vb.pp("vision_model"))?,
            processor: blip_processor_default(config.vision_config.image_size as u32),
            device: device.clone(),
        })
    }

    /// The encoder of an opened repository whose config and weights the caller has read.
    pub(super) fn from_repo(
        repo: &ModelRepo,
        config: &BlipConfig,
        vb: &VarBuilder,
        device: &candle_core::Device,
    ) -> Result<Self> {
        let name = repo.name();
        let side = config.vision_config.image_size as u32;
        let processor = match repo.optional("preprocessor_config.json")? {
            Some(p) => ImageProcessor::from_file(name, &p, blip_processor_default(side))?,
            None => blip_processor_default(side),
        };
        let model = BlipVisionModel::load(&config.vision_config, vb.pp("vision_model")).map_err(|e| {
            Error::model(
                name,
                format!("the weights do not fit config.json ({}); is this a BLIP checkpoint?", first_line(&e)),
            )
        })?;
        Ok(BlipImageEncoder { model, processor, device: device.clone() })
    }

    /// The side of the model's square input, in pixels.
    pub fn input_side(&self) -> u32 {
        (self.model.grid * self.model.patch_size) as u32
    }

    /// The `[3, H, W]` input of an image.
    pub fn preprocess(&self, image: &RgbImage) -> Result<Tensor> {
        self.processor.preprocess(image, &self.device)
    }

    /// The encoder's states `[1 + grid², d]` for one image.
    pub fn encode(&self, image: &RgbImage) -> Result<Tensor> {
        Ok(self.encode_batch(std::slice::from_ref(image))?.squeeze(0)?)
    }

    /// The states `[b, 1 + grid², d]` of several images in one forward pass.
    pub fn encode_batch(&self, images: &[RgbImage]) -> Result<Tensor> {
        let pixels = images.iter().map(|i| self.preprocess(i)).collect::<Result<Vec<_>>>()?;
        Ok(self.model.forward(&Tensor::stack(&pixels, 0)?)?)
    }
}
