//! OpenCLIP checkpoints in their hub layout (LAION, DataComp, DFN, ...): `open_clip_config.json`
//! with `open_clip_model.safetensors` or `open_clip_pytorch_model.bin`. An OpenCLIP ViT is
//! OpenAI's CLIP architecture, so it runs on the CLIP towers ([`crate::models::clip`]): its
//! config becomes a `CLIPConfig` ([`OpenClipConfig::to_clip_config`]), its state-dict names
//! are read as transformers' (`names`), its preprocessing is open_clip's (torchvision's
//! centre crop, `preprocess_cfg`'s mean, std, filter and resize mode), and its tokenizer is
//! the CLIP BPE at the config's context length, after open_clip's text cleaning (`clean`).
//!
//! A MobileCLIP is an OpenCLIP checkpoint whose image tower is timm's FastViT-MCi: it is built
//! by [`crate::models::mobileclip`] and paired with the CLIP text tower (bidirectional where
//! the config says `no_causal_mask`).
//!
//! [`crate::models::clip::ClipEmbedder`] loads a folder or hub id through here when it has an
//! `open_clip_config.json` and no `config.json`.

mod clean;
mod config;
mod names;

use candle_core::Device;
use candle_nn::VarBuilder;

pub use config::{ModelCfg, OpenClipConfig, PreprocessCfg, TextCfg, VisionCfg};

use crate::error::{Error, Result, first_line};
use crate::models::clip::{ClipConfig, ClipTokenizer, DEFAULT_CLIP_MODEL};
use crate::models::mobileclip::FastVit;
use crate::models::nn::ImageTower;
use crate::models::preprocess::ImageProcessor;
use crate::models::source::{ModelRepo, repo_weights_named};

/// The config file of an OpenCLIP hub checkpoint.
pub const OPEN_CLIP_CONFIG: &str = "open_clip_config.json";

/// The weights of an OpenCLIP hub checkpoint, in order of preference.
pub const OPEN_CLIP_WEIGHTS: [&str; 2] = ["open_clip_model.safetensors", "open_clip_pytorch_model.bin"];

/// An OpenCLIP checkpoint made ready for the CLIP towers.
pub struct OpenClipParts {
    /// The network as a `CLIPConfig`.
    pub config: ClipConfig,
    /// The weights under transformers' names.
    pub weights: VarBuilder<'static>,
    /// The CLIP BPE, cut at the config's context length, with open_clip's cleaning.
    pub tokenizer: ClipTokenizer,
    /// open_clip's inference preprocessing.
    pub processor: ImageProcessor,
    /// A MobileCLIP's FastViT image tower, built from its weights; `None` for a ViT, which
    /// the CLIP towers build from `config`.
    pub image_tower: Option<Box<dyn ImageTower>>,
    /// For a bidirectional text tower (`no_causal_mask`), the id texts are padded with to
    /// the full context.
    pub text_bidirectional_pad: Option<u32>,
}

impl OpenClipParts {
    /// Reads `open_clip_config.json` (`text`, read from the repository), the weights and a
    /// tokenizer. The repository's own `tokenizer.json` (or `vocab.json` + `merges.txt`) when
    /// it has one; otherwise the CLIP BPE of [`DEFAULT_CLIP_MODEL`], the vocabulary open_clip's
    /// `SimpleTokenizer` builds (DFN's checkpoints ship no tokenizer files).
    pub fn load(repo: &ModelRepo, text: &str, device: &Device) -> Result<Self> {
        let name = repo.name();
        let bad = |why: String| Error::model(name, format!("{OPEN_CLIP_CONFIG}: {why}"));
        let parsed: OpenClipConfig = serde_json::from_str(text).map_err(|e| bad(format!("invalid ({e})")))?;
        let context = parsed.model_cfg.text_cfg.context_length;
        let tokenizer = match has_tokenizer(repo)? {
            true => crate::models::clip::load_tokenizer(repo, context)?,
            false => {
                tracing::info!("{name} ships no tokenizer files; using the CLIP BPE of {DEFAULT_CLIP_MODEL}");
                crate::models::clip::load_tokenizer(&ModelRepo::open(DEFAULT_CLIP_MODEL)?, context)
                    .map_err(|e| bad(format!("no tokenizer files, and the CLIP BPE could not be had either: {e}")))?
            }
        }
        .with_specials_as_text()?
        .with_cleaning(clean::open_clip_clean);
        let config = parsed.to_clip_config(tokenizer.end_id).map_err(bad)?;
        if config.text_config.vocab_size <= tokenizer.end_id as usize {
            return Err(bad(format!(
                "vocab_size {} is smaller than the CLIP BPE (end-of-text id {}): not a CLIP-BPE text tower",
                config.text_config.vocab_size, tokenizer.end_id
            )));
        }
        let processor = parsed.processor().map_err(bad)?;
        let text_bidirectional_pad = parsed.text_bidirectional_pad().map_err(bad)?;
        let raw = repo_weights_named(repo, &OPEN_CLIP_WEIGHTS, device)?;
        let image_tower: Option<Box<dyn ImageTower>> = match parsed.fastvit_tower().map_err(bad)? {
            None => None,
            Some(tower) => {
                let built = FastVit::load(&raw.pp("visual.trunk")).map_err(|e| {
                    Error::model(
                        name,
                        format!(
                            "the {tower} image tower's weights (visual.trunk.*) do not load ({}); is this a complete \
                             MobileCLIP checkpoint in open_clip's layout?",
                            first_line(&e)
                        ),
                    )
                })?;
                if built.embed_dim() != config.projection_dim {
                    return Err(bad(format!(
                        "the image tower embeds in {} dimensions, embed_dim says {}",
                        built.embed_dim(),
                        config.projection_dim
                    )));
                }
                Some(Box::new(built))
            }
        };
        let weights = names::OpenClipNames::new(raw).into_var_builder();
        Ok(OpenClipParts { config, weights, tokenizer, processor, image_tower, text_bidirectional_pad })
    }
}

fn has_tokenizer(repo: &ModelRepo) -> Result<bool> {
    Ok(repo.optional("tokenizer.json")?.is_some()
        || (repo.optional("vocab.json")?.is_some() && repo.optional("merges.txt")?.is_some()))
}
