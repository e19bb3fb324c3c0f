//! CLIPSeg: a text (or an example image) in, a probability map over the image out.
//!
//! The network is transformers' `CLIPSegForImageSegmentation`: a CLIP whose vision tower runs
//! at 352 px (position embeddings resampled bicubically from its native grid), the outputs
//! of a few of its layers (`extract_layers`), and a small decoder: each activation is reduced
//! to `reduce_dim`, summed into a running state, FiLM-conditioned on the prompt's CLIP
//! embedding at `conditional_layer`, passed through a post-norm transformer layer, and the
//! final patch grid is upsampled by transposed convolutions (one, or the "refined" variant's
//! conv + two) to 352 x 352 logits. Weight names mirror transformers' through `vb.pp(..)`.
//!
//! Several prompts for one image share its vision pass: the activations are computed once
//! (batch 1) and broadcast only where the prompts make them differ (from the FiLM layer on).

use candle_core::{DType, Device, Module, Tensor};
use candle_nn::{LayerNorm, VarBuilder};
use image::RgbImage;
use serde::Deserialize;

use crate::error::{Error, Result, first_line};
use crate::models::clip::{ClipConfig, ClipModel, ClipTokenizer, load_tokenizer};
use crate::models::nn::layers::{Mlp, SelfAttention, dense, layer_norm};
use crate::models::nn::{Dense, HiddenAct};
use crate::models::preprocess::ImageProcessor;
use crate::models::source::{ModelRepo, repo_weights};

type CResult<T> = candle_core::Result<T>;

/// The CLIPSeg model used when none is named.
pub const DEFAULT_SEG_MODEL: &str = "CIDAS/clipseg-rd64-refined";

/// Side of CLIPSeg's input and of its logits.
pub const INPUT_SIZE: u32 = 352;

fn default_extract_layers() -> Vec<usize> {
    vec![3, 6, 9]
}
fn default_reduce_dim() -> usize {
    64
}
fn default_decoder_heads() -> usize {
    4
}
fn default_decoder_mlp() -> usize {
    2048
}

impl ClipSegConfig {
    /// `CIDAS/clipseg-rd64-refined`'s shapes: CLIP ViT-B/16, activations of layers 3, 6 and
    /// 9, a 64-wide decoder, the refined head.
    pub fn rd64_refined() -> Self {
        let mut clip = ClipConfig::vit_base_patch32();
        clip.model_type = Some("clipseg".into());
        clip.vision_config.patch_size = 16;
        ClipSegConfig {
            clip,
            extract_layers: default_extract_layers(),
            reduce_dim: default_reduce_dim(),
            decoder_num_attention_heads: default_decoder_heads(),
            decoder_intermediate_size: default_decoder_mlp(),
            conditional_layer: 0,
            use_complex_transposed_convolution: true,
        }
    }
}

/// `config.json` of a CLIPSeg checkpoint: a CLIP config plus the decoder's.
#[derive(Debug, Clone, Deserialize)]
pub struct ClipSegConfig {
    /// The CLIP inside.
    #[serde(flatten)]
    pub clip: ClipConfig,
    /// Vision layers whose outputs feed the decoder (numbered from 0).
    #[serde(default = "default_extract_layers")]
    pub extract_layers: Vec<usize>,
    /// Width of the decoder.
    #[serde(default = "default_reduce_dim")]
    pub reduce_dim: usize,
    /// Attention heads of the decoder.
    #[serde(default = "default_decoder_heads")]
    pub decoder_num_attention_heads: usize,
    /// MLP width of the decoder.
    #[serde(default = "default_decoder_mlp")]
    pub decoder_intermediate_size: usize,
    /// The decoder layer whose input is FiLM-conditioned on the prompt.
    #[serde(default)]
    pub conditional_layer: usize,
    /// The "refined" head: conv 3x3, ReLU, transposed conv, ReLU, transposed conv.
    #[serde(default)]
    pub use_complex_transposed_convolution: bool,
}

/// A transposed convolution whose stride equals its kernel (every output pixel comes from one
/// input pixel): a matmul and a reshape.
struct PatchUpsample {
    weight: Tensor,
    bias: Tensor,
    out: usize,
    k: usize,
}

impl PatchUpsample {
    fn load(inp: usize, out: usize, k: usize, vb: VarBuilder) -> CResult<Self> {
        let weight = vb.get((inp, out, k, k), "weight")?.reshape((inp, out * k * k))?;
        Ok(PatchUpsample { weight, bias: vb.get(out, "bias")?.reshape((1, out, 1, 1))?, out, k })
    }

    fn forward(&self, xs: &Tensor) -> CResult<Tensor> {
        let (b, c, h, w) = xs.dims4()?;
        let (o, k) = (self.out, self.k);
        xs.permute((0, 2, 3, 1))?
            .reshape((b * h * w, c))?
            .matmul(&self.weight)?
            .reshape((b, h, w, o, k, k))?
            .permute((0, 3, 1, 4, 2, 5))?
            .reshape((b, o, h * k, w * k))?
            .broadcast_add(&self.bias)
    }
}

/// The upsampling head.
enum Head {
    /// `CIDAS/clipseg-rd64`: one transposed convolution by the patch size.
    Plain(PatchUpsample),
    /// `CIDAS/clipseg-rd64-refined`.
    Refined { conv_w: Tensor, conv_b: Tensor, up1: PatchUpsample, up2: PatchUpsample },
}

impl Head {
    fn forward(&self, xs: &Tensor) -> CResult<Tensor> {
        match self {
            Head::Plain(up) => up.forward(xs),
            Head::Refined { conv_w, conv_b, up1, up2 } => {
                let xs = xs.conv2d(conv_w, 1, 1, 1, 1)?.broadcast_add(conv_b)?.relu()?;
                up2.forward(&up1.forward(&xs)?.relu()?)
            }
        }
    }
}

/// A post-norm transformer layer with a ReLU MLP.
struct DecoderLayer {
    attn: SelfAttention,
    ln1: LayerNorm,
    mlp: Mlp,
    ln2: LayerNorm,
}

impl DecoderLayer {
    fn forward(&self, xs: &Tensor) -> CResult<Tensor> {
        let xs = self.ln1.forward(&(xs + self.attn.forward(xs, false)?)?)?;
        self.ln2.forward(&(&xs + self.mlp.forward(&xs)?)?)
    }
}

/// The CLIPSeg network.
pub struct ClipSegModel {
    clip: ClipModel,
    extract: Vec<usize>,
    reduces: Vec<Dense>,
    film_mul: Dense,
    film_add: Dense,
    layers: Vec<DecoderLayer>,
    conditional_layer: usize,
    head: Head,
}

impl ClipSegModel {
    /// Builds the model from weights named as in transformers, for `side` x `side` inputs.
    pub fn load(config: &ClipSegConfig, side: usize, vb: VarBuilder) -> CResult<Self> {
        let mut clip = ClipModel::load(&config.clip, vb.pp("clip"))?;
        clip.set_image_size(side)?;
        let vc = &config.clip.vision_config;
        let r = config.reduce_dim;
        let n = config.extract_layers.len();
        if n == 0 || config.conditional_layer >= n {
            candle_core::bail!("conditional_layer {} is not one of the {n} decoder layers", config.conditional_layer);
        }
        let dec = vb.pp("decoder");
        let reduces = (0..n).map(|i| dense(vc.hidden_size, r, dec.pp("reduces").pp(i))).collect::<CResult<Vec<_>>>()?;
        let layers = (0..n)
            .map(|i| {
                let vb = dec.pp("layers").pp(i);
                Ok(DecoderLayer {
                    attn: SelfAttention::load(r, config.decoder_num_attention_heads, vb.pp("self_attn"))?,
                    ln1: layer_norm(r, vc.layer_norm_eps, vb.pp("layer_norm1"))?,
                    mlp: Mlp::load(r, config.decoder_intermediate_size, HiddenAct::Relu, vb.pp("mlp"))?,
                    ln2: layer_norm(r, vc.layer_norm_eps, vb.pp("layer_norm2"))?,
                })
            })
            .collect::<CResult<Vec<_>>>()?;
        let p = vc.patch_size;
        let tc = dec.pp("transposed_convolution");
        let head = if config.use_complex_transposed_convolution {
            let k = p / 4;
            if k * 4 != p {
                candle_core::bail!("the refined head needs a patch size divisible by 4, not {p}");
            }
            Head::Refined {
                conv_w: tc.pp("0").get((r, r, 3, 3), "weight")?,
                conv_b: tc.pp("0").get(r, "bias")?.reshape((1, r, 1, 1))?,
                up1: PatchUpsample::load(r, r / 2, k, tc.pp("2"))?,
                up2: PatchUpsample::load(r / 2, 1, k, tc.pp("4"))?,
            }
        } else {
            Head::Plain(PatchUpsample::load(r, 1, p, tc)?)
        };
        let proj = config.clip.projection_dim;
        Ok(ClipSegModel {
            clip,
            extract: config.extract_layers.clone(),
            reduces,
            film_mul: dense(proj, r, dec.pp("film_mul"))?,
            film_add: dense(proj, r, dec.pp("film_add"))?,
            layers,
            conditional_layer: config.conditional_layer,
            head,
        })
    }

    /// The vision activations the decoder reads, for `[b, 3, side, side]` pixels.
    pub fn activations(&self, pixels: &Tensor) -> CResult<Vec<Tensor>> {
        self.clip.vision_hidden_states_at(pixels, &self.extract)
    }

    /// Prompt embeddings of tokenised texts (`get_text_features`, not normalised).
    pub fn text_conditionals(&self, ids: &[Vec<u32>], pad: u32, device: &Device) -> CResult<Tensor> {
        self.clip.text_features(ids, pad, device)
    }

    /// Prompt embeddings of example images (`get_image_features` at the input size).
    pub fn image_conditionals(&self, pixels: &Tensor) -> CResult<Tensor> {
        self.clip.image_features(pixels)
    }

    /// Logits `[n, side, side]` for one image's activations (batch 1) and `n` prompt
    /// embeddings `[n, projection_dim]`.
    pub fn decode(&self, activations: &[Tensor], conditionals: &Tensor) -> CResult<Tensor> {
        let n = conditionals.dim(0)?;
        let mut state: Option<Tensor> = None;
        for (i, ((activation, reduce), layer)) in
            activations.iter().rev().zip(&self.reduces).zip(&self.layers).enumerate()
        {
            let reduced = reduce.forward(activation, None)?;
            let mut xs = match state {
                Some(s) => s.broadcast_add(&reduced)?,
                None => reduced,
            };
            if i == self.conditional_layer {
                let mul = self.film_mul.forward(conditionals, None)?.unsqueeze(1)?;
                let add = self.film_add.forward(conditionals, None)?.unsqueeze(1)?;
                xs = xs.broadcast_mul(&mul)?.broadcast_add(&add)?;
            }
            state = Some(layer.forward(&xs)?);
        }
        let state = state.expect("at least one decoder layer");
        let (b, t, r) = state.dims3()?;
        let side = ((t - 1) as f64).sqrt() as usize;
        let grid = state.narrow(1, 1, t - 1)?.transpose(1, 2)?.contiguous()?.reshape((b, r, side, side))?;
        let grid = if b == n { grid } else { grid.broadcast_as((n, r, side, side))?.contiguous()? };
        self.head.forward(&grid)?.squeeze(1)
    }
}

/// What to look for.
#[derive(Debug, Clone, Copy)]
pub enum Prompt<'a> {
    /// A text such as "a dog".
    Text(&'a str),
    /// An example image of the thing (a visual prompt).
    Example(&'a RgbImage),
}

/// A loaded CLIPSeg with its tokenizer and image processor.
pub struct Segmenter {
    name: String,
    model: ClipSegModel,
    tokenizer: ClipTokenizer,
    processor: ImageProcessor,
    device: Device,
}

impl Segmenter {
    /// Loads a CLIPSeg model from a hub id or a local directory.
    pub fn load(model: &str, device: &Device) -> Result<Self> {
        Self::load_from(&ModelRepo::open(model)?, device)
    }

    /// Loads a CLIPSeg model from an opened repository.
    pub fn load_from(repo: &ModelRepo, device: &Device) -> Result<Self> {
        let name = repo.name();
        let config = read_config(name, &repo.required("config.json")?)?;
        let vb = repo_weights(repo, device)?;
        let tokenizer = load_tokenizer(repo, config.clip.text_config.max_position_embeddings)?;
        let defaults = ImageProcessor::vit_default(INPUT_SIZE);
        let processor = match repo.optional("preprocessor_config.json")? {
            Some(p) => ImageProcessor::from_file(name, &p, defaults)?,
            None => defaults,
        };
        let side = match processor.output_size() {
            Some((h, w)) if h == w => h as usize,
            other => {
                return Err(Error::model(
                    name,
                    format!("preprocessor_config.json gives {other:?} inputs; CLIPSeg needs squares"),
                ));
            }
        };
        let model = ClipSegModel::load(&config, side, vb).map_err(|e| {
            Error::model(
                name,
                format!(
                    "the weights do not fit config.json ({}); is this a complete CLIPSeg checkpoint?",
                    first_line(&e)
                ),
            )
        })?;
        Ok(Segmenter { name: name.to_string(), model, tokenizer, processor, device: device.clone() })
    }

    /// Assembles a segmenter from parts (benchmarks with random weights).
    pub fn from_parts(
        name: &str,
        config: &ClipSegConfig,
        vb: VarBuilder,
        tokenizer: ClipTokenizer,
        processor: ImageProcessor,
        device: &Device,
    ) -> Result<Self> {
        let side = processor.output_size().map_or(INPUT_SIZE as usize, |(h, _)| h as usize);
        let model = ClipSegModel::load(config, side, vb)?;
        Ok(Segmenter { name: name.to_string(), model, tokenizer, processor, device: device.clone() })
    }

    /// The model's name as given.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The `[3, side, side]` input of an image.
    pub fn preprocess(&self, image: &RgbImage) -> Result<Tensor> {
        self.processor.preprocess(image, &self.device)
    }

    /// Logits `[n, side, side]` of `prompts` on one image (encoded once).
    pub fn logits(&self, image: &RgbImage, prompts: &PromptEmbeddings) -> Result<Tensor> {
        let pixels = self.preprocess(image)?.unsqueeze(0)?;
        let activations = self.model.activations(&pixels)?;
        Ok(self.model.decode(&activations, &prompts.0)?)
    }

    /// Probability maps (sigmoid of the logits), one `side` x `side` row-major map per prompt.
    pub fn probabilities(&self, image: &RgbImage, prompts: &PromptEmbeddings) -> Result<Vec<ProbabilityMap>> {
        let logits = self.logits(image, prompts)?;
        let (_, h, w) = logits.dims3()?;
        let probs = candle_nn::ops::sigmoid(&logits)?.to_dtype(DType::F32)?.to_device(&Device::Cpu)?;
        Ok(probs
            .flatten_from(1)?
            .to_vec2::<f32>()?
            .into_iter()
            .map(|values| ProbabilityMap { width: w as u32, height: h as u32, values })
            .collect())
    }

    /// The prompts embedded, once for any number of photos: texts in one batch, examples in
    /// another, in order.
    pub fn embed_prompts(&self, prompts: &[Prompt]) -> Result<PromptEmbeddings> {
        if prompts.is_empty() {
            return Err(Error::Invalid("no prompt: give a text or an example image".into()));
        }
        let mut rows: Vec<Option<Tensor>> = vec![None; prompts.len()];
        let texts: Vec<(usize, &str)> = prompts
            .iter()
            .enumerate()
            .filter_map(|(i, p)| if let Prompt::Text(t) = p { Some((i, *t)) } else { None })
            .collect();
        if !texts.is_empty() {
            let ids = texts.iter().map(|(_, t)| self.tokenizer.encode(t)).collect::<Result<Vec<_>>>()?;
            let feats = self.model.text_conditionals(&ids, self.tokenizer.end_id, &self.device)?;
            for (row, (i, _)) in texts.iter().enumerate() {
                rows[*i] = Some(feats.get(row)?);
            }
        }
        for (i, p) in prompts.iter().enumerate() {
            if let Prompt::Example(image) = p {
                let pixels = self.preprocess(image)?.unsqueeze(0)?;
                rows[i] = Some(self.model.image_conditionals(&pixels)?.squeeze(0)?);
            }
        }
        let rows: Vec<Tensor> = rows.into_iter().map(|r| r.expect("every prompt embedded")).collect();
        Ok(PromptEmbeddings(Tensor::stack(&rows, 0)?))
    }
}

/// Prompts embedded by [`Segmenter::embed_prompts`]: `[prompts, projection]`.
#[derive(Debug)]
pub struct PromptEmbeddings(Tensor);

/// A probability per pixel, row-major.
#[derive(Debug, Clone, PartialEq)]
pub struct ProbabilityMap {
    /// Width in pixels.
    pub width: u32,
    /// Height in pixels.
    pub height: u32,
    /// `width * height` probabilities.
    pub values: Vec<f32>,
}

fn read_config(model: &str, path: &std::path::Path) -> Result<ClipSegConfig> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| Error::model(model, format!("cannot read {}: {e}", path.display())))?;
    let config: ClipSegConfig =
        serde_json::from_str(&text).map_err(|e| Error::model(model, format!("invalid {}: {e}", path.display())))?;
    match config.clip.model_type.as_deref() {
        Some("clipseg") => Ok(config),
        other => Err(Error::model(
            model,
            format!(
                "config.json describes a {} model, not CLIPSeg (model_type \"clipseg\"); pass one such as {DEFAULT_SEG_MODEL}",
                other.unwrap_or("untyped")
            ),
        )),
    }
}
