//! BLIP (`Salesforce/blip-*`) in candle: captioning (`BlipForConditionalGeneration`), visual
//! question answering (`BlipForQuestionAnswering`) and image–text matching
//! (`BlipForImageTextRetrieval`, its ITM head and ITC cosine). Weight names mirror
//! transformers' through `vb.pp(..)`; configs, tokenizers and errors follow the CLIP loader's
//! rules (hub id or local directory).
//!
//! - [`vision`]: the image encoder and `BlipImageProcessor`'s preprocessing;
//! - [`text`]: the BERT stacks (decoders, question encoder, matching text encoder), greedy and
//!   beam search;
//! - [`vqa`], [`itm`]: the answering and matching models.

pub mod itm;
pub mod text;
pub mod vision;
pub mod vqa;

use candle_nn::VarBuilder;
use image::RgbImage;
use serde::Deserialize;

pub use itm::{BlipMatcher, DEFAULT_ITM_MODEL, MatchScore};
pub use text::{BlipTextDecoder, DecodeStep};
pub use vision::{BlipImageEncoder, BlipVisionModel, blip_processor_default};
pub use vqa::{BlipAnswerer, DEFAULT_VQA_MODEL};

use crate::error::{Error, Result, first_line};
use crate::models::nn::HiddenAct;
use crate::models::source::{ModelRepo, repo_weights};

/// The captioning model used when none is named.
pub const DEFAULT_CAPTION_MODEL: &str = "Salesforce/blip-image-captioning-base";

/// `vision_config` of a BLIP checkpoint. Every field has `BlipVisionConfig`'s default in
/// transformers, so a file that leaves one out (as the hub's, saved by transformers 4.26, do
/// for some) reads as transformers reads it; keys clipdex does not use are ignored.
#[derive(Debug, Clone, Deserialize)]
#[serde(default)]
pub struct BlipVisionConfig {
    /// Token width.
    pub hidden_size: usize,
    /// MLP width.
    pub intermediate_size: usize,
    /// Encoder layers.
    pub num_hidden_layers: usize,
    /// Attention heads.
    pub num_attention_heads: usize,
    /// Input side in pixels.
    pub image_size: usize,
    /// Patch side in pixels.
    pub patch_size: usize,
    /// MLP activation.
    pub hidden_act: HiddenAct,
    /// Layer-norm epsilon.
    pub layer_norm_eps: f64,
}

impl Default for BlipVisionConfig {
    fn default() -> Self {
        BlipVisionConfig {
            hidden_size: 768,
            intermediate_size: 3072,
            num_hidden_layers: 12,
            num_attention_heads: 12,
            image_size: 384,
            patch_size: 16,
            hidden_act: HiddenAct::Gelu,
            layer_norm_eps: 1e-5,
        }
    }
}

/// `text_config` of a BLIP checkpoint (a BERT with cross-attention to the image), with
/// `BlipTextConfig`'s defaults (note its 8 attention heads: every real checkpoint says 12).
#[derive(Debug, Clone, Deserialize)]
#[serde(default)]
pub struct BlipTextConfig {
    /// Vocabulary size (BERT's 30,522 plus `[DEC]` and `[ENC]`).
    pub vocab_size: usize,
    /// Token width.
    pub hidden_size: usize,
    /// Width of the image states attended to. Whatever the file says, the vision tower's
    /// width, as `BlipConfig` sets it (the hub's base checkpoints leave it out; the large
    /// ones need 1024 beside a 768-wide text model).
    pub encoder_hidden_size: usize,
    /// MLP width.
    pub intermediate_size: usize,
    /// Layers.
    pub num_hidden_layers: usize,
    /// Attention heads.
    pub num_attention_heads: usize,
    /// Longest sequence.
    pub max_position_embeddings: usize,
    /// MLP activation.
    pub hidden_act: HiddenAct,
    /// Layer-norm epsilon.
    pub layer_norm_eps: f64,
    /// `[DEC]`, the first token of every caption.
    pub bos_token_id: u32,
    /// `[SEP]`, which ends a caption: BLIP's generation stops at `sep_token_id`, not at
    /// `eos_token_id` (2 in the hub's files, an unused token).
    pub sep_token_id: u32,
}

impl BlipTextConfig {
    /// The encoder's shapes (BLIP's text side has no token types).
    pub fn shape(&self) -> crate::models::bert::BertShape {
        crate::models::bert::BertShape {
            vocab_size: self.vocab_size,
            hidden_size: self.hidden_size,
            intermediate_size: self.intermediate_size,
            num_hidden_layers: self.num_hidden_layers,
            num_attention_heads: self.num_attention_heads,
            max_position_embeddings: self.max_position_embeddings,
            type_vocab_size: 0,
            hidden_act: self.hidden_act,
            layer_norm_eps: self.layer_norm_eps,
            first_position: 0,
        }
    }
}

impl Default for BlipTextConfig {
    fn default() -> Self {
        BlipTextConfig {
            vocab_size: 30524,
            hidden_size: 768,
            encoder_hidden_size: 768,
            intermediate_size: 3072,
            num_hidden_layers: 12,
            num_attention_heads: 8,
            max_position_embeddings: 512,
            hidden_act: HiddenAct::Gelu,
            layer_norm_eps: 1e-12,
            bos_token_id: 30522,
            sep_token_id: 102,
        }
    }
}

/// The parts of a BLIP `config.json` that clipdex reads, as transformers' `BlipConfig` reads
/// them: absent towers get their defaults, and the text tower's `encoder_hidden_size` is the
/// vision tower's width.
#[derive(Debug, Clone, Deserialize)]
#[serde(from = "RawBlipConfig")]
pub struct BlipConfig {
    /// Must be `blip`.
    pub model_type: Option<String>,
    /// The image encoder.
    pub vision_config: BlipVisionConfig,
    /// The text side.
    pub text_config: BlipTextConfig,
    /// Width of the shared space of the matching model's ITC projections.
    pub image_text_hidden_size: usize,
}

/// `config.json` as written, before `BlipConfig`'s rules apply.
#[derive(Deserialize)]
struct RawBlipConfig {
    model_type: Option<String>,
    #[serde(default)]
    vision_config: Option<BlipVisionConfig>,
    #[serde(default)]
    text_config: Option<BlipTextConfig>,
    #[serde(default = "default_itc_dim")]
    image_text_hidden_size: usize,
}

impl From<RawBlipConfig> for BlipConfig {
    fn from(raw: RawBlipConfig) -> Self {
        // `null` towers are transformers' defaults too.
        let vision_config = raw.vision_config.unwrap_or_default();
        let mut text_config = raw.text_config.unwrap_or_default();
        text_config.encoder_hidden_size = vision_config.hidden_size;
        BlipConfig {
            model_type: raw.model_type,
            vision_config,
            text_config,
            image_text_hidden_size: raw.image_text_hidden_size,
        }
    }
}

fn default_itc_dim() -> usize {
    256
}

impl BlipConfig {
    /// `Salesforce/blip-image-captioning-base`'s shapes (and those of `blip-vqa-base` and
    /// `blip-itm-base-coco`): ViT-B/16 at 384 px, 12-layer BERT-base text models.
    pub fn captioning_base() -> Self {
        BlipConfig {
            model_type: Some("blip".into()),
            vision_config: BlipVisionConfig::default(),
            text_config: BlipTextConfig { num_attention_heads: 12, ..BlipTextConfig::default() },
            image_text_hidden_size: 256,
        }
    }
}

/// Reads `config.json`, checking first that it describes a BLIP.
fn read_config(repo: &ModelRepo) -> Result<BlipConfig> {
    let name = repo.name();
    let path = repo.required("config.json")?;
    let text = std::fs::read_to_string(&path)
        .map_err(|e| Error::model(name, format!("cannot read {}: {e}", path.display())))?;
    let invalid = |e: serde_json::Error| Error::model(name, format!("invalid {}: {e}", path.display()));
    let value: serde_json::Value = serde_json::from_str(&text).map_err(invalid)?;
    match value.get("model_type").and_then(|t| t.as_str()) {
        Some("blip") => serde_json::from_value(value).map_err(invalid),
        other => Err(Error::model(
            name,
            format!("config.json describes a {} model, not BLIP (model_type \"blip\")", other.unwrap_or("untyped")),
        )),
    }
}

/// What every BLIP model starts from: the opened repository (one read of the config, one
/// mapping of the weights), its image encoder and its tokenizer.
struct Opened {
    name: String,
    config: BlipConfig,
    vb: VarBuilder<'static>,
    encoder: BlipImageEncoder,
    tokenizer: tokenizers::Tokenizer,
}

impl Opened {
    fn open(model: &str, device: &candle_core::Device) -> Result<Self> {
        let repo = ModelRepo::open(model)?;
        let config = read_config(&repo)?;
        let vb = repo_weights(&repo, device)?;
        let encoder = BlipImageEncoder::from_repo(&repo, &config, &vb, device)?;
        let tokenizer = load_tokenizer(&repo)?;
        Ok(Opened { name: repo.name().to_string(), config, vb, encoder, tokenizer })
    }

    /// Random or already-mapped weights with the default processor (benchmarks).
    fn from_parts(
        config: &BlipConfig,
        vb: VarBuilder<'static>,
        tokenizer: tokenizers::Tokenizer,
        device: &candle_core::Device,
    ) -> Result<Self> {
        let encoder = BlipImageEncoder::from_parts(config, &vb, device)?;
        Ok(Opened { name: "(random weights)".into(), config: config.clone(), vb, encoder, tokenizer })
    }

    fn text_config(&self) -> Result<&BlipTextConfig> {
        Ok(&self.config.text_config)
    }
}

/// The model's tokenizer (`tokenizer.json`: BERT uncased with `[DEC]` and `[ENC]`), with any
/// fixed padding or truncation switched off.
fn load_tokenizer(repo: &ModelRepo) -> Result<tokenizers::Tokenizer> {
    let name = repo.name();
    let path = repo.required("tokenizer.json")?;
    let err = |e: tokenizers::Error| Error::Tokenizer { model: name.to_string(), reason: e.to_string() };
    let mut tokenizer = tokenizers::Tokenizer::from_file(&path).map_err(err)?;
    tokenizer.with_padding(None);
    tokenizer.with_truncation(None).map_err(err)?;
    Ok(tokenizer)
}

/// `[CLS] text [SEP]` ids, as the processor gives them to the text encoders; an error past the
/// model's `max` positions.
fn text_ids(tokenizer: &tokenizers::Tokenizer, text: &str, max: usize) -> Result<Vec<u32>> {
    let enc =
        tokenizer.encode(text, true).map_err(|e| Error::Tokenizer { model: "blip".into(), reason: e.to_string() })?;
    let ids = enc.get_ids().to_vec();
    if ids.len() > max {
        return Err(Error::Invalid(format!("the text is {} tokens long; the model takes at most {max}", ids.len())));
    }
    Ok(ids)
}

/// Loads a text part, turning missing or misshapen weights into an error naming the model and
/// what kind of BLIP checkpoint was expected.
fn load_part<T>(name: &str, what: &str, part: candle_core::Result<T>) -> Result<T> {
    part.map_err(|e| {
        Error::model(name, format!("no {what} in the weights ({}); is this {}?", first_line(&e), what_model(what)))
    })
}

fn what_model(part: &str) -> &'static str {
    match part {
        "captioning decoder" => "a BLIP captioning model (BlipForConditionalGeneration)",
        "question encoder" | "answer decoder" => "a BLIP VQA model (BlipForQuestionAnswering)",
        _ => "a BLIP image-text matching model (BlipForImageTextRetrieval)",
    }
}

/// BLIP captioning (`BlipForConditionalGeneration`): greedy and beam search, with or without a
/// prompt.
pub struct BlipCaptioner {
    encoder: BlipImageEncoder,
    decoder: BlipTextDecoder,
    tokenizer: tokenizers::Tokenizer,
    bos: u32,
    sep: u32,
}

impl BlipCaptioner {
    /// Runs the image encoder's linear layers at `precision` (the text side stays f32).
    pub fn with_precision(mut self, precision: crate::models::precision::Precision) -> Self {
        self.encoder.set_precision(precision);
        self
    }

    /// Assembles a captioner from parts (benchmarks with random weights): the full model's
    /// weights under `vb` (`vision_model`, `text_decoder`).
    pub fn from_parts(
        config: &BlipConfig,
        vb: VarBuilder<'static>,
        tokenizer: tokenizers::Tokenizer,
        device: &candle_core::Device,
    ) -> Result<Self> {
        Self::assemble(Opened::from_parts(config, vb, tokenizer, device)?)
    }

    /// Loads a captioning checkpoint from a hub id or a local directory.
    pub fn load(model: &str, device: &candle_core::Device) -> Result<Self> {
        Self::assemble(Opened::open(model, device)?)
    }

    fn assemble(m: Opened) -> Result<Self> {
        let tc = m.text_config()?;
        let decoder = load_part(&m.name, "captioning decoder", BlipTextDecoder::load(tc, m.vb.pp("text_decoder")))?;
        let (bos, sep) = (tc.bos_token_id, tc.sep_token_id);
        Ok(BlipCaptioner { encoder: m.encoder, decoder, tokenizer: m.tokenizer, bos, sep })
    }

    /// The image encoder (its states can be computed once and captioned several ways).
    pub fn encoder(&self) -> &BlipImageEncoder {
        &self.encoder
    }

    /// The first tokens of a caption: `[DEC]`, then the prompt's tokens (as transformers:
    /// the prompt tokenised with `[CLS]`/`[SEP]`, the first replaced by `[DEC]`, the last
    /// dropped).
    pub fn start_ids(&self, prompt: Option<&str>) -> Result<Vec<u32>> {
        let Some(prompt) = prompt else { return Ok(vec![self.bos]) };
        let mut ids = text_ids(&self.tokenizer, prompt, usize::MAX)?;
        if ids.len() < 2 {
            return Ok(vec![self.bos]);
        }
        ids[0] = self.bos;
        ids.pop();
        Ok(ids)
    }

    /// Greedy decoding: up to `max_new` tokens after `start`, stopping after `[SEP]`.
    pub fn greedy(&self, image: &RgbImage, start: &[u32], max_new: usize) -> Result<Vec<DecodeStep>> {
        let source = self.decoder.source_keys_values(&self.encoder.encode(image)?.unsqueeze(0)?)?;
        Ok(text::greedy(&self.decoder, &source, start, self.sep, max_new)?)
    }

    /// Beam search (see [`text::beam_search`]); one beam is greedy decoding. Returns the
    /// caption's ids, `start` included.
    pub fn beam_search(&self, image: &RgbImage, start: &[u32], beams: usize, max_new: usize) -> Result<Vec<u32>> {
        self.caption_states(&self.encoder.encode(image)?, start, beams, max_new)
    }

    /// The same from the image encoder's states `[t, d]`.
    pub fn caption_states(
        &self,
        states: &candle_core::Tensor,
        start: &[u32],
        beams: usize,
        max_new: usize,
    ) -> Result<Vec<u32>> {
        let source = self.decoder.source_keys_values(&states.unsqueeze(0)?)?;
        Ok(text::beam_search(&self.decoder, &source, start, self.sep, beams, max_new)?)
    }

    /// Captions several images: one encoder pass over all of them, then their beam searches
    /// advanced together (see [`text::beam_search_many`]); each caption is the one
    /// [`Self::caption_states`] makes from the same states. Returns each caption's ids, `start`
    /// included, in order.
    pub fn caption_batch(
        &self,
        images: &[RgbImage],
        start: &[u32],
        beams: usize,
        max_new: usize,
    ) -> Result<Vec<Vec<u32>>> {
        if images.is_empty() {
            return Ok(Vec::new());
        }
        let states = self.encoder.encode_batch(images)?;
        self.caption_states_batch(&states, start, beams, max_new)
    }

    /// [`Self::caption_batch`] from the image encoder's states `[b, t, d]`.
    pub fn caption_states_batch(
        &self,
        states: &candle_core::Tensor,
        start: &[u32],
        beams: usize,
        max_new: usize,
    ) -> Result<Vec<Vec<u32>>> {
        let sources = (0..states.dim(0)?)
            .map(|i| self.decoder.source_keys_values(&states.narrow(0, i, 1)?))
            .collect::<candle_core::Result<Vec<_>>>()?;
        let sources: Vec<&text::SourceKeysValues> = sources.iter().collect();
        Ok(text::beam_search_many(&self.decoder, &sources, start, self.sep, beams, max_new)?)
    }

    /// The caption's text from its ids (special tokens dropped).
    pub fn decode(&self, ids: &[u32]) -> Result<String> {
        decode(&self.tokenizer, ids)
    }
}

fn decode(tokenizer: &tokenizers::Tokenizer, ids: &[u32]) -> Result<String> {
    tokenizer.decode(ids, true).map_err(|e| Error::Tokenizer { model: "blip".into(), reason: e.to_string() })
}
