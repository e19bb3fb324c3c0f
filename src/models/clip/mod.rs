//! CLIP: image and text embeddings in one space.
//!
//! [`ClipEmbedder`] is the typed entry point everything else uses: it loads a Hugging Face CLIP
//! (hub id or directory; any size, from its `config.json`), preprocesses images as
//! `CLIPImageProcessor` does, tokenises as `CLIPTokenizerFast` does, and returns L2-normalised
//! vectors, so that a dot product is a cosine similarity. It also runs a SigLIP
//! ([`crate::models::siglip`]) when `config.json` says `siglip`: the same calls, with the
//! family's own towers, tokenizer and processor, and [`Scoring::Sigmoid`] for labels. An
//! OpenCLIP checkpoint in its hub layout (`open_clip_config.json`) runs on the CLIP towers
//! ([`openclip`]).

mod chinese;
mod config;
pub(crate) mod model;
pub mod openclip;
pub(crate) mod tokenizer;
pub mod train;

use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;
use image::RgbImage;
use rayon::prelude::*;

pub use crate::models::nn::{Embedding, MAX_BATCH, l2_normalize};
pub use chinese::CHINESE_CLIP_CONTEXT;
pub use config::{ClipConfig, HiddenAct, TextConfig, VisionConfig};
pub use model::ClipModel;
pub use tokenizer::{ClipTokenizer, wordpiece};

use crate::error::{Error, Result, first_line};
use crate::models::precision::Precision;
use crate::models::preprocess::ImageProcessor;
use crate::models::sentence::SentenceEncoder;
use crate::models::siglip::SiglipParts;
use crate::models::source::{ModelRepo, repo_weights};
use crate::photo::{DecodeOptions, open_rgb};
use openclip::{OPEN_CLIP_CONFIG, OpenClipParts};

/// The CLIP model used when none is named.
pub const DEFAULT_CLIP_MODEL: &str = "openai/clip-vit-base-patch32";

/// How a model turns an image–text cosine into a label probability.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Scoring {
    /// CLIP: the softmax of `logit_scale × cosine` over the labels (probabilities sum to 1).
    Softmax {
        /// The multiplier of cosines.
        logit_scale: f32,
    },
    /// SigLIP: `sigmoid(logit_scale × cosine + logit_bias)` for each label on its own.
    Sigmoid {
        /// The multiplier of cosines.
        logit_scale: f32,
        /// The offset added to the scaled cosine.
        logit_bias: f32,
    },
}

impl Scoring {
    /// `softmax` or `sigmoid`, as JSON output names it.
    pub fn name(&self) -> &'static str {
        match self {
            Scoring::Softmax { .. } => "softmax",
            Scoring::Sigmoid { .. } => "sigmoid",
        }
    }

    /// What a probability means, for people.
    pub fn meaning(&self) -> &'static str {
        match self {
            Scoring::Softmax { .. } => "probabilities: a softmax over the labels (they sum to 100%)",
            Scoring::Sigmoid { .. } => {
                "probabilities: SigLIP's sigmoid, each label on its own (not a softmax over the labels: \
                 they need not sum to 100%)"
            }
        }
    }
}

/// The network behind an embedder, with its tokenizer.
#[allow(clippy::large_enum_variant, reason = "one per loaded model, never moved in a hot path")]
enum Family {
    /// A CLIP or Chinese-CLIP; `open_clip` when it came from an OpenCLIP checkpoint.
    Clip {
        config: ClipConfig,
        model: ClipModel,
        tokenizer: ClipTokenizer,
        open_clip: bool,
    },
    Siglip(Box<SiglipParts>),
}

/// A loaded CLIP model (or SigLIP) with its tokenizer and image processor.
pub struct ClipEmbedder {
    name: String,
    family: Family,
    processor: ImageProcessor,
    device: Device,
    /// A multilingual text tower that embeds texts in place of the CLIP's own (`--text-model`).
    text_model: Option<SentenceEncoder>,
    /// The precision the linear layers run at (as effective on this CPU).
    precision: Precision,
}

impl ClipEmbedder {
    /// Loads a CLIP model from a hub id or a local directory.
    pub fn load(model: &str, device: &Device) -> Result<Self> {
        Self::load_from(&ModelRepo::open(model)?, device)
    }

    /// Loads a CLIP model whose texts are embedded by `text_model` (a sentence-transformers
    /// model trained for this CLIP's image space), when one is given.
    pub fn load_with_text_model(model: &str, text_model: Option<&str>, device: &Device) -> Result<Self> {
        let clip = Self::load(model, device)?;
        match text_model {
            Some(t) => clip.with_text_model(SentenceEncoder::load(t, device)?),
            None => Ok(clip),
        }
    }

    /// Embeds texts with `encoder` from now on (images still with the CLIP). Its embeddings
    /// must have the CLIP's width; that they share its space is the user's word.
    pub fn with_text_model(mut self, encoder: SentenceEncoder) -> Result<Self> {
        if encoder.dim() != self.dim() {
            return Err(Error::model(
                encoder.name(),
                format!(
                    "embeds texts in {} dimensions but the image model {} embeds images in {}: a text model \
                     must be trained for the image model's space (clip-ViT-B-32-multilingual-v1 for \
                     openai/clip-vit-base-patch32)",
                    encoder.dim(),
                    self.name,
                    self.dim()
                ),
            ));
        }
        self.text_model = Some(encoder);
        Ok(self)
    }

    /// The text model that embeds texts in place of the CLIP's own, if any.
    pub fn text_model(&self) -> Option<&str> {
        self.text_model.as_ref().map(SentenceEncoder::name)
    }

    /// Loads a CLIP model from an opened repository.
    pub fn load_from(repo: &ModelRepo, device: &Device) -> Result<Self> {
        let name = repo.name();
        let (which, config_path) = repo.first_of(&["config.json", OPEN_CLIP_CONFIG])?;
        let text = std::fs::read_to_string(&config_path)
            .map_err(|e| Error::model(name, format!("cannot read {}: {e}", config_path.display())))?;
        if which == 1 {
            let p = OpenClipParts::load(repo, &text, device)?;
            let loaded = match p.image_tower {
                Some(tower) => ClipModel::load_text_with_image_tower(&p.config, &p.weights, tower),
                None => ClipModel::load_text_first(&p.config, p.weights),
            };
            let mut model = Self::clip_model(name, OPEN_CLIP_CONFIG, loaded)?;
            if let Some(pad) = p.text_bidirectional_pad {
                model.set_text_bidirectional(pad);
            }
            let family = Family::Clip { config: p.config, model, tokenizer: p.tokenizer, open_clip: true };
            return Ok(Self::assemble(name, family, p.processor, device));
        }
        if matches!(model_type(&text).as_deref(), Some("siglip" | "siglip2")) {
            let (parts, processor) = SiglipParts::load(repo, &text, repo_weights(repo, device)?)?;
            return Ok(Self::assemble(name, Family::Siglip(Box::new(parts)), processor, device));
        }
        let config = read_config(name, &config_path, &text)?;
        let vb = repo_weights(repo, device)?;
        let tokenizer = match &config.bert_text {
            Some(bert) => chinese::load_tokenizer(repo, bert)?,
            None => load_tokenizer(repo, config.text_config.max_position_embeddings)?,
        };
        let side = config.vision_config.image_size as u32;
        let processor = match repo.optional("preprocessor_config.json")? {
            Some(p) => ImageProcessor::from_file(name, &p, ImageProcessor::clip_default(side))?,
            None => ImageProcessor::clip_default(side),
        };
        if processor.output_size() != Some((side, side)) {
            return Err(Error::model(
                name,
                format!(
                    "preprocessor_config.json produces {:?} images but the model takes {side}x{side}",
                    processor.output_size()
                ),
            ));
        }
        // The image tower is built when a first image needs it: a text query reads only the
        // text tower's weights.
        let model = Self::clip_model(name, "config.json", ClipModel::load_text_first(&config, vb))?;
        Ok(Self::assemble(name, Family::Clip { config, model, tokenizer, open_clip: false }, processor, device))
    }

    /// Assembles an embedder from parts: a config, weights, a tokenizer and a processor. Used
    /// for benchmarks with random weights and for fine-tuned models held in memory.
    pub fn from_parts(
        name: &str,
        config: ClipConfig,
        vb: VarBuilder,
        tokenizer: ClipTokenizer,
        processor: ImageProcessor,
        device: &Device,
    ) -> Result<Self> {
        let model = Self::clip_model(name, "config.json", ClipModel::load(&config, vb))?;
        Ok(Self::assemble(name, Family::Clip { config, model, tokenizer, open_clip: false }, processor, device))
    }

    /// The CLIP towers, or why the weights do not fit `config` (read from the file `config_file`).
    fn clip_model(name: &str, config_file: &str, loaded: candle_core::Result<ClipModel>) -> Result<ClipModel> {
        loaded.map_err(|e| {
            Error::model(
                name,
                format!(
                    "the weights do not fit {config_file} ({}); is this a complete CLIP checkpoint?",
                    first_line(&e)
                ),
            )
        })
    }

    fn assemble(name: &str, family: Family, processor: ImageProcessor, device: &Device) -> Self {
        ClipEmbedder {
            name: name.to_string(),
            family,
            processor,
            device: device.clone(),
            text_model: None,
            precision: Precision::F32,
        }
    }

    /// Runs the model's linear layers at `precision` from now on (`f32` where the CPU has no
    /// bf16 arithmetic; [`ClipEmbedder::precision`] says which runs).
    pub fn with_precision(mut self, precision: Precision) -> Self {
        self.precision = precision.effective();
        match &mut self.family {
            // On the OpenCLIP fixtures int8 took image embeddings to cosine 0.982 of f32's
            // (CLIP's pass at 0.9993): an OpenCLIP runs int8 as bf16, as SigLIP does.
            Family::Clip { model, open_clip: true, .. } => {
                self.precision = self.precision.without_int8().effective();
                model.set_precision(self.precision)
            }
            Family::Clip { model, .. } => model.set_precision(self.precision),
            // SigLIP runs int8 as bf16 (see `SiglipModel::set_precision`); say so.
            Family::Siglip(parts) => {
                self.precision = self.precision.without_int8().effective();
                parts.set_precision(self.precision)
            }
        }
        self
    }

    /// The precision the model's linear layers run at.
    pub fn precision(&self) -> Precision {
        self.precision
    }

    /// The model's name as given (hub id or directory).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Embedding width.
    pub fn dim(&self) -> usize {
        match &self.family {
            Family::Clip { config, .. } => config.projection_dim,
            Family::Siglip(parts) => parts.dim(),
        }
    }

    /// The multiplier of cosines in the model's logits (100 for OpenAI's CLIPs).
    pub fn logit_scale(&self) -> f32 {
        match &self.family {
            Family::Clip { model, .. } => model.logit_scale(),
            Family::Siglip(parts) => parts.model.logit_scale(),
        }
    }

    /// How label probabilities are computed from cosines: a softmax over the labels for CLIP,
    /// a sigmoid per label for SigLIP.
    pub fn scoring(&self) -> Scoring {
        match &self.family {
            Family::Clip { model, .. } => Scoring::Softmax { logit_scale: model.logit_scale() },
            Family::Siglip(parts) => {
                Scoring::Sigmoid { logit_scale: parts.model.logit_scale(), logit_bias: parts.model.logit_bias() }
            }
        }
    }

    /// The model family's name: `clip`, `chinese_clip`, `open_clip`, `mobileclip`, `siglip` or
    /// `siglip2` (SigLIP 2 NaFlex).
    pub fn family(&self) -> &str {
        match &self.family {
            Family::Clip { open_clip: true, model, .. } if model.has_foreign_image_tower() => "mobileclip",
            Family::Clip { open_clip: true, .. } => "open_clip",
            Family::Clip { config, .. } => config.model_type.as_deref().unwrap_or("clip"),
            Family::Siglip(parts) if parts.naflex().is_some() => "siglip2",
            Family::Siglip(_) => "siglip",
        }
    }

    /// The parsed `config.json` of a CLIP in the Hugging Face layout (fine-tuning reads its
    /// weights by transformers' names); an error for another family or layout.
    pub fn config(&self) -> Result<&ClipConfig> {
        match &self.family {
            Family::Clip { config, open_clip: false, .. } => Ok(config),
            _ => Err(self.not_clip()),
        }
    }

    /// The text tower's pooled states before its last linear map (a CLIP's `text_projection`,
    /// a SigLIP's `head`), of token ids from [`ClipEmbedder::tokenize`] without a text model.
    pub fn text_pooled(&self, ids: &[Vec<u32>]) -> Result<Tensor> {
        Ok(match &self.family {
            Family::Clip { model, tokenizer, .. } => model.text_pooled(ids, tokenizer.pad_id, &self.device)?,
            Family::Siglip(parts) => parts.model.text_pooled(ids, &self.device)?,
        })
    }

    /// The parsed `config.json` of a SigLIP (fine-tuning reads its weights by transformers'
    /// names); an error for another family.
    pub fn siglip_config(&self) -> Result<&crate::models::siglip::SiglipConfig> {
        match &self.family {
            Family::Siglip(parts) if parts.naflex().is_some() => Err(Error::model(
                &self.name,
                "is a SigLIP 2 NaFlex: fine-tuning takes a CLIP or a fixed-resolution SigLIP (siglip, or \
                 siglip2 at a fixed size such as google/siglip2-base-patch16-224)",
            )),
            Family::Siglip(parts) => Ok(&parts.config),
            Family::Clip { .. } => Err(Error::model(&self.name, "is not a SigLIP")),
        }
    }

    fn not_clip(&self) -> Error {
        let what = match &self.family {
            Family::Clip { .. } => {
                "an OpenCLIP checkpoint: this needs a CLIP in the Hugging Face layout (fine-tuning \
                                    OpenCLIP checkpoints is not supported yet)"
            }
            Family::Siglip(parts) if parts.naflex().is_some() => "a SigLIP 2 NaFlex: this needs a CLIP",
            Family::Siglip(_) => "a SigLIP: this needs a CLIP",
        };
        Error::model(&self.name, format!("is {what}; pass a CLIP model such as {DEFAULT_CLIP_MODEL}"))
    }

    /// The image preprocessing in use.
    pub fn processor(&self) -> &ImageProcessor {
        &self.processor
    }

    /// The device the model runs on.
    pub fn device(&self) -> &Device {
        &self.device
    }

    /// The underlying network of a CLIP (or OpenCLIP); an error for another family.
    pub fn model(&self) -> Result<&ClipModel> {
        match &self.family {
            Family::Clip { model, .. } => Ok(model),
            Family::Siglip(_) => Err(self.not_clip()),
        }
    }

    /// The end-of-text id (a CLIP's also pads batched texts).
    pub fn tokenizer_end_id(&self) -> u32 {
        match &self.family {
            Family::Clip { tokenizer, .. } => tokenizer.end_id,
            Family::Siglip(parts) => parts.tokenizer.pad_id,
        }
    }

    /// The id that pads batched texts.
    pub fn tokenizer_pad_id(&self) -> u32 {
        match &self.family {
            Family::Clip { tokenizer, .. } => tokenizer.pad_id,
            Family::Siglip(parts) => parts.tokenizer.pad_id,
        }
    }

    /// Token ids of a text as the model sees them (start and end tokens, truncated); the text
    /// model's when there is one.
    pub fn tokenize(&self, text: &str) -> Result<Vec<u32>> {
        match &self.text_model {
            Some(t) => t.tokenize(text),
            None => match &self.family {
                Family::Clip { tokenizer, .. } => tokenizer.encode(text),
                Family::Siglip(parts) => parts.tokenizer.encode(text),
            },
        }
    }

    /// Embeds texts (any number; batched internally).
    pub fn embed_texts<S: AsRef<str>>(&self, texts: &[S]) -> Result<Vec<Embedding>> {
        let ids = texts.iter().map(|t| self.tokenize(t.as_ref())).collect::<Result<Vec<_>>>()?;
        self.embed_token_ids(&ids)
    }

    /// Embeds already tokenised texts (tokenised by [`ClipEmbedder::tokenize`]).
    pub fn embed_token_ids(&self, ids: &[Vec<u32>]) -> Result<Vec<Embedding>> {
        if let Some(t) = &self.text_model {
            return t.embed_token_ids(ids);
        }
        let mut out = Vec::with_capacity(ids.len());
        for chunk in ids.chunks(MAX_BATCH) {
            let feats = match &self.family {
                Family::Clip { model, tokenizer, .. } => model.text_features(chunk, tokenizer.pad_id, &self.device)?,
                Family::Siglip(parts) => parts.text_features(chunk, &self.device)?,
            };
            out.extend(to_rows(&l2_normalize(&feats)?)?);
        }
        Ok(out)
    }

    /// The input tensor of one image: `[3, H, W]` pixels, or for a SigLIP 2 NaFlex its
    /// patches padded to the model's most (`[1 + max_patches, 3·p²]`, see
    /// [`crate::models::siglip::naflex`]). A model's inputs all have one shape, so they stack.
    pub fn preprocess(&self, image: &RgbImage) -> Result<Tensor> {
        match &self.family {
            Family::Siglip(parts) => parts.preprocess(&self.processor, image, &self.device),
            Family::Clip { .. } => self.processor.preprocess(image, &self.device),
        }
    }

    /// Embeds decoded images (any number; preprocessed in parallel, batched internally).
    pub fn embed_images(&self, images: &[RgbImage]) -> Result<Vec<Embedding>> {
        let mut out = Vec::with_capacity(images.len());
        for chunk in images.chunks(MAX_BATCH) {
            let tensors = chunk.par_iter().map(|im| self.preprocess(im)).collect::<Result<Vec<_>>>()?;
            out.extend(self.embed_pixels(&Tensor::stack(&tensors, 0)?)?);
        }
        Ok(out)
    }

    /// Embeds a batch of [`ClipEmbedder::preprocess`]'s tensors stacked (`[N, 3, H, W]`).
    pub fn embed_pixels(&self, pixels: &Tensor) -> Result<Vec<Embedding>> {
        let pixels = pixels.to_dtype(DType::F32)?;
        let feats = match &self.family {
            Family::Clip { model, .. } => model.image_features(&pixels)?,
            Family::Siglip(parts) => parts.model.image_features(&pixels)?,
        };
        to_rows(&l2_normalize(&feats)?)
    }

    /// Reads, decodes and embeds image files. Each file gets its own result, so one bad file
    /// costs only its own entry.
    pub fn embed_image_files(&self, paths: &[PathBuf], options: &DecodeOptions) -> Vec<Result<Embedding>> {
        let mut out: Vec<Result<Embedding>> = Vec::with_capacity(paths.len());
        for chunk in paths.chunks(MAX_BATCH) {
            let prepared: Vec<Result<Tensor>> =
                chunk.par_iter().map(|p| open_rgb(p, options).and_then(|im| self.preprocess(&im))).collect();
            let good: Vec<Tensor> = prepared.iter().filter_map(|r| r.as_ref().ok().cloned()).collect();
            let mut embedded = if good.is_empty() {
                Vec::new()
            } else {
                match Tensor::stack(&good, 0).map_err(Error::from).and_then(|t| self.embed_pixels(&t)) {
                    Ok(rows) => rows,
                    Err(e) => {
                        let msg = e.to_string();
                        out.extend(prepared.into_iter().map(|r| r.and_then(|_| Err(Error::Invalid(msg.clone())))));
                        continue;
                    }
                }
            }
            .into_iter();
            out.extend(prepared.into_iter().map(|r| r.map(|_| embedded.next().expect("one row per good image"))));
        }
        out
    }
}

/// The CLIP tokenizer of a repository: `tokenizer.json`, or `vocab.json` and `merges.txt`.
pub(crate) fn load_tokenizer(repo: &ModelRepo, max_len: usize) -> Result<ClipTokenizer> {
    let name = repo.name();
    match repo.optional("tokenizer.json")? {
        Some(json) => ClipTokenizer::from_json(name, &json, max_len),
        None => match (repo.optional("vocab.json")?, repo.optional("merges.txt")?) {
            (Some(v), Some(m)) => ClipTokenizer::from_vocab_merges(name, &v, &m, max_len),
            _ => Err(Error::model(name, "no tokenizer: expected tokenizer.json, or vocab.json and merges.txt")),
        },
    }
}

fn to_rows(t: &Tensor) -> Result<Vec<Embedding>> {
    Ok(t.to_dtype(DType::F32)?.to_device(&Device::Cpu)?.to_vec2::<f32>()?)
}

/// The `model_type` of a `config.json`, if it parses and names one.
fn model_type(config: &str) -> Option<String> {
    #[derive(serde::Deserialize)]
    struct Typed {
        model_type: Option<String>,
    }
    serde_json::from_str::<Typed>(config).ok()?.model_type
}

/// Parses `config.json` (`text`, read from `path`) and checks that it describes a CLIP.
fn read_config(model: &str, path: &Path, text: &str) -> Result<ClipConfig> {
    let config: ClipConfig =
        serde_json::from_str(text).map_err(|e| Error::model(model, format!("invalid {}: {e}", path.display())))?;
    match config.model_type.as_deref() {
        Some("clip" | "chinese_clip") => {}
        other => {
            return Err(Error::model(
                model,
                format!(
                    "config.json describes a {} model, not CLIP or SigLIP (model_type \"clip\", \"chinese_clip\", \"siglip\" or \"siglip2\"); pass a CLIP model such as {DEFAULT_CLIP_MODEL}",
                    other.unwrap_or("untyped")
                ),
            ));
        }
    }
    let v = &config.vision_config;
    let (text_width, text_heads) = match &config.bert_text {
        Some(b) => (b.hidden_size, b.num_attention_heads),
        None => (config.text_config.hidden_size, config.text_config.num_attention_heads),
    };
    if v.patch_size == 0
        || !v.image_size.is_multiple_of(v.patch_size)
        || !v.hidden_size.is_multiple_of(v.num_attention_heads.max(1))
        || !text_width.is_multiple_of(text_heads.max(1))
        || v.num_attention_heads == 0
        || text_heads == 0
    {
        return Err(Error::model(
            model,
            format!("{} has inconsistent shapes (patch, image or head sizes)", path.display()),
        ));
    }
    Ok(config)
}
