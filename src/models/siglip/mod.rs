//! SigLIP (and SigLIP 2 at fixed resolution, the same network with Gemma's tokenizer; and
//! SigLIP 2 NaFlex, `model_type` `siglip2`, which takes each photo at its own aspect): image
//! and text embeddings in one space, scored with a sigmoid instead of a softmax.
//!
//! What differs from CLIP, as transformers does it: no class token, the image tower pooled by
//! an attention-pooling head and not projected; a bidirectional text tower fed texts padded to
//! its full context (64) and pooled at the last position, then its `head`; a label's
//! probability is `sigmoid(logit_scale × cosine + logit_bias)` on its own (several labels can
//! be likely at once, and none need be); images are resized to the square input without a crop
//! and normalised with mean and std 0.5. [`SiglipParts`] is what `ClipEmbedder` holds for a
//! SigLIP: the network, its tokenizer and its config. A NaFlex model's images are resized to
//! a patch grid of their own aspect, at most `max_num_patches` patches
//! (`preprocessor_config.json`), and batched padded with a mask ([`naflex`]).

mod config;
mod model;
pub mod naflex;
mod tokenizer;
pub mod train;

use candle_core::{Device, Tensor};
use candle_nn::VarBuilder;
use serde::Deserialize;

pub use config::{SiglipConfig, SiglipTextConfig, SiglipVisionConfig};
pub use model::SiglipModel;
pub use naflex::NaflexInput;
pub use tokenizer::SiglipTokenizer;

use crate::error::{Error, Result, first_line};
use crate::models::nn::precision::Precision;
use crate::models::preprocess::ImageProcessor;
use crate::models::source::ModelRepo;

/// A loaded SigLIP: network, tokenizer and config.
pub struct SiglipParts {
    /// The parsed `config.json`.
    pub config: SiglipConfig,
    /// The network.
    pub model: SiglipModel,
    /// The tokenizer (texts padded to the context).
    pub tokenizer: SiglipTokenizer,
}

impl SiglipParts {
    /// Loads a SigLIP from an opened repository whose `config.json` (`text`) says `siglip`.
    pub fn load(repo: &ModelRepo, text: &str, vb: VarBuilder) -> Result<(Self, ImageProcessor)> {
        let name = repo.name();
        let config: SiglipConfig =
            serde_json::from_str(text).map_err(|e| Error::model(name, format!("invalid config.json: {e}")))?;
        if let Some(problem) = config.shape_problem() {
            return Err(Error::model(name, format!("config.json has inconsistent shapes: {problem}")));
        }
        let tokenizer = load_tokenizer(repo, config.text_config.max_position_embeddings)?;
        let (naflex, processor) = if config.is_naflex() {
            let file = repo.optional("preprocessor_config.json")?;
            let text = match &file {
                Some(p) => Some(
                    std::fs::read_to_string(p)
                        .map_err(|e| Error::model(name, format!("cannot read {}: {e}", p.display())))?,
                ),
                None => None,
            };
            let input = NaflexInput::from_processor_config(name, text.as_deref(), config.vision_config.patch_size)?;
            if config.vision_config.num_channels != input.channels {
                return Err(Error::model(
                    name,
                    format!("the image tower takes {} channels; photos have 3", config.vision_config.num_channels),
                ));
            }
            let mut processor = match &file {
                Some(p) => ImageProcessor::from_file(name, p, NaflexInput::default_processor())?,
                None => NaflexInput::default_processor(),
            };
            // The size is each photo's own (NaflexInput::preprocess), not the processor's.
            processor.resize = None;
            processor.center_crop = None;
            (Some(input), processor)
        } else {
            let side = config.vision_config.image_size as u32;
            let defaults = ImageProcessor::siglip_default(side);
            let processor = match repo.optional("preprocessor_config.json")? {
                Some(p) => ImageProcessor::from_file(name, &p, defaults)?,
                None => defaults,
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
            (None, processor)
        };
        let model = SiglipModel::load(&config, naflex, vb).map_err(|e| {
            Error::model(
                name,
                format!(
                    "the weights do not fit config.json ({}); is this a complete SigLIP checkpoint?",
                    first_line(&e)
                ),
            )
        })?;
        Ok((SiglipParts { config, model, tokenizer }, processor))
    }

    /// How a SigLIP 2 NaFlex cuts its images (`None` for a fixed-size SigLIP).
    pub fn naflex(&self) -> Option<NaflexInput> {
        self.model.naflex_input()
    }

    /// One image's input tensor: `[3, H, W]` pixels for a fixed-size SigLIP, the padded
    /// patches of [`NaflexInput::preprocess`] for a NaFlex one.
    pub fn preprocess(&self, processor: &ImageProcessor, image: &image::RgbImage, device: &Device) -> Result<Tensor> {
        match self.naflex() {
            Some(input) => input.preprocess(processor, image, device),
            None => processor.preprocess(image, device),
        }
    }

    /// Embedding width.
    pub fn dim(&self) -> usize {
        self.config.vision_config.hidden_size
    }

    /// Runs the linear layers at `precision`.
    pub fn set_precision(&mut self, precision: Precision) {
        self.model.set_precision(precision);
    }

    /// Unnormalised text embeddings of padded token ids.
    pub fn text_features(&self, ids: &[Vec<u32>], device: &Device) -> Result<Tensor> {
        Ok(self.model.text_features(ids, device)?)
    }
}

/// `tokenizer_config.json`'s fields that change SigLIP's tokenisation.
#[derive(Deserialize, Default)]
struct TokenizerConfig {
    do_lower_case: Option<bool>,
}

/// SigLIP's tokenizer: `tokenizer.json` where there is one (SigLIP 2), else `spiece.model`.
/// Texts are lower-cased unless `tokenizer_config.json` says `do_lower_case: false`: SigLIP's
/// tokenizer does it, and SigLIP 2 was trained on lower-cased texts.
fn load_tokenizer(repo: &ModelRepo, context: usize) -> Result<SiglipTokenizer> {
    let name = repo.name();
    let settings: TokenizerConfig = match repo.optional("tokenizer_config.json")? {
        Some(p) => {
            let text = std::fs::read_to_string(&p)
                .map_err(|e| Error::model(name, format!("cannot read {}: {e}", p.display())))?;
            serde_json::from_str(&text).map_err(|e| Error::model(name, format!("invalid {}: {e}", p.display())))?
        }
        None => TokenizerConfig::default(),
    };
    let lower_case = settings.do_lower_case.unwrap_or(true);
    if let Some(json) = repo.optional("tokenizer.json")? {
        return SiglipTokenizer::from_json(name, &json, context, lower_case);
    }
    match repo.optional("spiece.model")? {
        Some(spiece) => SiglipTokenizer::from_spiece(name, &spiece, context, lower_case),
        None => Err(Error::model(name, "no tokenizer: expected spiece.model (SigLIP) or tokenizer.json (SigLIP 2)")),
    }
}
