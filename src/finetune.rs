//! Fine-tuning CLIP (and SigLIP) on the user's own image–text pairs (`clipdex finetune`).
//!
//! The semantics are fixed, since scripts and a parity test depend on them: batches of
//! `batch_size` consecutive training pairs (file order without shuffling, the last partial
//! batch kept, a last single pair joined to the batch before it); images decoded and
//! preprocessed exactly as for embedding (upright, the model's resize and crop, full-size
//! decoding), no augmentation; texts tokenised as for queries; the
//! loss is transformers' `clip_loss` (a SigLIP's: transformers' sigmoid loss,
//! [`crate::models::siglip::train`]); PyTorch's AdamW with weight decay on tensors of two or
//! more dimensions only; after each step a CLIP's `logit_scale` is clamped to [0, ln 100]; f32
//! throughout; frozen weights never change. The result is a Hugging Face CLIP directory
//! (`config.json`, `model.safetensors` with transformers' names, the base's tokenizer and
//! preprocessor files) that `--model DIR` and `CLIPModel.from_pretrained(DIR)` both load. Every
//! folder a run writes (`--out`, each WiSE-FT `OUT-wiseA`) is checked before training (only a
//! model folder may be replaced: [`crate::output_dir`]), written in full into a hidden folder
//! beside it, and renamed into place only when all are written, so a failed or interrupted run
//! leaves no half model; the hidden folders of a run whose process is gone are removed by the
//! next run.

use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};

use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;
use serde::Serialize;

use crate::error::{Error, Result};
use crate::models::clip::train::{AdamW, AdamWConfig, TrainScope, TrainableClip, scheduled_lr};
use crate::models::clip::{ClipEmbedder, l2_normalize};
use crate::models::precision::Precision;
use crate::models::siglip::train::TrainableSiglip;
use crate::models::source::ModelRepo;
use crate::photo::{DecodeOptions, open_rgb};

/// One training example: an image and its caption, with the line it came from.
#[derive(Debug, Clone, PartialEq)]
pub struct Pair {
    /// The image (relative paths in the file resolved against the file's folder).
    pub image: PathBuf,
    /// Its text.
    pub text: String,
    /// 1-based line number in the pairs file (the image's number, from `--folders`).
    pub line: usize,
    /// Its class (index into [`FinetuneOptions::labels`]) when the pairs come from class
    /// folders: a batch never holds two photos of one class.
    pub class: Option<usize>,
}

/// Pairs from a folder of class folders (`--folders`): every image of `DIR/CLASS/` with the
/// text `template` (`{}` replaced by the class label: the folder's name with `_` and `-` as
/// spaces). Returns the pairs and the labels, in class order.
pub fn pairs_from_folders(dir: &Path, template: &str) -> Result<(Vec<Pair>, Vec<String>)> {
    if !template.contains("{}") {
        return Err(Error::Invalid(format!("the template {template:?} has no {{}} for the label")));
    }
    let dataset = crate::eval::Dataset::open(dir, None)?;
    if dataset.classes.len() < 2 {
        return Err(Error::Invalid(format!("{} has one class folder: fine-tuning needs at least 2", dir.display())));
    }
    let mut pairs = Vec::new();
    for (c, class) in dataset.classes.iter().enumerate() {
        for image in &class.images {
            let text = template.replace("{}", &class.label);
            pairs.push(Pair { image: image.clone(), text, line: pairs.len() + 1, class: Some(c) });
        }
    }
    Ok((pairs, dataset.classes.into_iter().map(|c| c.label).collect()))
}

/// Reads a pairs file: JSON Lines `{"image": PATH, "text": CAPTION}`, or CSV `image,text`
/// (an optional header line `image,text`; a text with commas or quotes in double quotes).
/// Lines are at most [`crate::text_lines::MAX_LINE_BYTES`] long.
pub fn read_pairs(path: &Path) -> Result<Vec<Pair>> {
    let text = crate::text_lines::read_text_lines(path, "the pairs file")?;
    let base = path.parent().unwrap_or(Path::new("."));
    let mut pairs = Vec::new();
    for (i, raw) in text.lines().enumerate() {
        let line = i + 1;
        let raw = raw.trim();
        if raw.is_empty() || raw.starts_with('#') || (line == 1 && raw.eq_ignore_ascii_case("image,text")) {
            continue;
        }
        let bad = |why: &str| Error::Invalid(format!("{}:{line}: {why}", path.display()));
        let (image, caption) = if raw.starts_with('{') {
            let v: serde_json::Value = serde_json::from_str(raw).map_err(|e| bad(&format!("bad JSON ({e})")))?;
            match (v["image"].as_str(), v["text"].as_str()) {
                (Some(i), Some(t)) => (i.to_string(), t.to_string()),
                _ => return Err(bad("expected {\"image\": PATH, \"text\": CAPTION}")),
            }
        } else {
            let (image, rest) = raw.split_once(',').ok_or_else(|| bad("expected image,text"))?;
            let rest = rest.trim();
            let caption = match rest.strip_prefix('"').and_then(|r| r.strip_suffix('"')) {
                Some(quoted) => quoted.replace("\"\"", "\""),
                None => rest.to_string(),
            };
            (image.trim().to_string(), caption)
        };
        if caption.trim().is_empty() {
            return Err(bad("the text is empty"));
        }
        pairs.push(Pair { image: base.join(image), text: caption, line, class: None });
    }
    Ok(pairs)
}

/// How to fine-tune.
#[derive(Debug, Clone)]
pub struct FinetuneOptions {
    /// Which weights change.
    pub scope: TrainScope,
    /// Passes over the training pairs.
    pub epochs: usize,
    /// Pairs per step.
    pub batch_size: usize,
    /// AdamW.
    pub optimizer: AdamWConfig,
    /// Cosine decay after the warm-up (else constant).
    pub cosine: bool,
    /// Linear warm-up steps.
    pub warmup: usize,
    /// Shuffle the training pairs each epoch (seeded).
    pub shuffle: bool,
    /// Seed of the shuffling and of the validation split.
    pub seed: u64,
    /// Share of the pairs held out for evaluation (0 ≤ f < 1), unless `validation` is given.
    pub val_split: f64,
    /// Held-out pairs given separately.
    pub validation: Option<Vec<Pair>>,
    /// Skip pairs whose image cannot be read (listed) instead of stopping.
    pub skip_bad: bool,
    /// Replace an existing output folder.
    pub force: bool,
    /// WiSE-FT: also save (as `OUT-wiseA`) and evaluate the interpolations
    /// `(1 − A)·base + A·fine-tuned` of the weights, for each `A` in (0, 1).
    pub wise: Vec<f64>,
    /// Decoding limit.
    /// The arithmetic of the frozen model's passes: evaluation, and for `adapter` the text
    /// tower's one pass (`--precision`). Training itself is f32 whatever this says.
    pub precision: Precision,
    pub max_pixels: u64,
    /// The class labels of `--folders` pairs (their `class` indexes them), with the template
    /// that made their texts: held-out photos are also classified zero-shot among them.
    pub labels: Vec<String>,
    /// The template of the labels (`a photo of a {}.`).
    pub template: String,
}

impl Default for FinetuneOptions {
    fn default() -> Self {
        FinetuneOptions {
            scope: TrainScope::Last(2),
            epochs: 5,
            batch_size: 32,
            optimizer: AdamWConfig { lr: 5e-5, betas: (0.9, 0.98), eps: 1e-6, weight_decay: 0.2 },
            cosine: true,
            warmup: 0,
            shuffle: true,
            seed: 0,
            val_split: 0.2,
            validation: None,
            skip_bad: false,
            force: false,
            wise: Vec::new(),
            labels: Vec::new(),
            template: crate::query::tags::DEFAULT_TEMPLATE.to_string(),
            precision: Precision::F32,
            max_pixels: crate::photo::DEFAULT_MAX_PIXELS,
        }
    }
}

/// Held-out retrieval: recall@1/5/10 of finding each image's text among all held-out texts,
/// and each text's image among all held-out images.
#[derive(Debug, Clone, Serialize)]
pub struct Retrieval {
    /// Image → text recall at 1, 5, 10.
    pub image_to_text: [f64; 3],
    /// Text → image recall at 1, 5, 10.
    pub text_to_image: [f64; 3],
    /// With `--folders`: zero-shot top-1 and top-5 accuracy of the held-out photos among the
    /// class labels.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub zero_shot: Option<[f64; 2]>,
}

/// How much the fine-tuned model changed what the base model finds for queries it was not
/// trained on: for each of `queries` labels of the built-in vocabulary (`a photo of a
/// {label}.`), the share of the base model's top `k` held-out photos the fine-tuned model also
/// puts in its top `k`, averaged (1: nothing forgotten).
#[derive(Debug, Clone, Serialize)]
pub struct Forgetting {
    /// Vocabulary queries.
    pub queries: usize,
    /// Photos compared per query: 10, or half the held-out photos when there are fewer than 20.
    pub k: usize,
    /// Mean top-k overlap.
    pub overlap: f64,
}

/// The evaluation of a run: the base model and the fine-tuned one on the held-out pairs.
#[derive(Debug, Clone, Serialize)]
pub struct Evaluation {
    /// Held-out pairs.
    pub pairs: usize,
    /// The base model.
    pub base: Retrieval,
    /// The fine-tuned model.
    pub finetuned: Retrieval,
    /// The WiSE-FT interpolations (`--wise`).
    pub wise: Vec<WiseEvaluation>,
    /// Base vs fine-tuned on vocabulary queries.
    pub forgetting: Forgetting,
}

/// One WiSE-FT interpolation's held-out recall.
#[derive(Debug, Clone, Serialize)]
pub struct WiseEvaluation {
    /// Its weight of the fine-tuned model.
    pub alpha: f64,
    /// Its recall.
    #[serde(flatten)]
    pub retrieval: Retrieval,
}

/// A WiSE-FT model written.
#[derive(Debug, Clone, Serialize)]
pub struct WiseModel {
    /// Its weight of the fine-tuned model.
    pub alpha: f64,
    /// Its folder.
    pub out: PathBuf,
}

/// What a run did (`finetune --json`).
#[derive(Debug, Clone, Serialize)]
pub struct FinetuneReport {
    /// The model folder written.
    pub out: PathBuf,
    /// Optimiser steps.
    pub steps: usize,
    /// The training loss of each step, in order.
    pub losses: Vec<f32>,
    /// Pairs trained on and held out.
    pub train_pairs: usize,
    /// Held-out evaluation (absent without held-out pairs).
    pub eval: Option<Evaluation>,
    /// Pairs skipped (`--skip-bad`): `"file:line: reason"`.
    pub skipped: Vec<String>,
    /// The WiSE-FT models written (`--wise`).
    pub wise: Vec<WiseModel>,
}

/// Progress: `(step, of, loss)`.
pub type StepProgress<'a> = &'a dyn Fn(usize, usize, f32);

/// The library's vector of an image by its content hash (blake3, hex), if it has one.
pub type StoredVectors<'a> = &'a dyn Fn(&str) -> Option<Vec<f32>>;

pub use crate::output_dir::{ADAPTER_FILE, ADAPTER_WEIGHTS};

/// What [`ADAPTER_FILE`] holds.
#[derive(Debug, Clone, Serialize, serde::Deserialize)]
pub struct AdapterInfo {
    /// The base model as given.
    pub base: String,
    /// The fingerprint of the base model's files (`None` for a hub id).
    pub base_files: Option<String>,
}

/// `ln 100`, the upper bound of `logit_scale` (CLIP's temperature clamp).
const MAX_LOGIT_SCALE: f64 = 4.605_170_185_988_092;

/// The base model's files copied beside the fine-tuned weights.
const COPIED_FILES: &[&str] = &[
    "config.json",
    "preprocessor_config.json",
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "vocab.json",
    "merges.txt",
    "vocab.txt",
    "spiece.model",
];

/// Fine-tunes `base` on `pairs` and writes the model to `out`. `stop` ends the run between
/// steps (Ctrl-C): nothing is written then.
///
/// `stored` gives the library's vector of an image by its content hash, when the library was
/// indexed with `base` (`--train adapter` then embeds only the images it lacks).
#[allow(clippy::too_many_arguments)]
pub fn finetune(
    base: &str,
    pairs: Vec<Pair>,
    out: &Path,
    options: &FinetuneOptions,
    device: &Device,
    stored: StoredVectors,
    stop: &AtomicBool,
    progress: StepProgress,
) -> Result<FinetuneReport> {
    if options.batch_size < 2 {
        return Err(Error::Invalid("the batch size must be at least 2: a contrastive loss compares pairs".into()));
    }
    if let Some(a) = options.wise.iter().find(|a| !(**a > 0.0 && **a < 1.0)) {
        return Err(Error::Invalid(format!("--wise takes weights strictly between 0 and 1, not {a}")));
    }
    if !(0.0..1.0).contains(&options.val_split) {
        return Err(Error::Invalid(format!("--val-split must be in [0, 1), not {}", options.val_split)));
    }
    // Every folder the run will write is checked before any work, so that a run that cannot
    // save everything fails at once and writes nothing.
    for target in model_folders(out, &options.wise) {
        clean_stale_saves(&target);
        check_target(&target, options.force)?;
    }
    let repo = ModelRepo::open(base)?;
    let embedder = ClipEmbedder::load_from(&repo, device)?.with_precision(options.precision);
    let siglip = embedder.family() == "siglip";
    if !siglip {
        embedder.config()?; // a CLIP's or a SigLIP's layers are trained: another family is refused here
    }
    check_duplicates(&pairs)?;
    let (pairs, skipped) = readable(pairs, options)?;
    let (train, held_out) = match &options.validation {
        Some(v) => (pairs, readable(v.clone(), options)?.0),
        None => split(pairs, options.val_split, options.seed),
    };
    if train.len() < 2 {
        return Err(Error::Invalid(format!(
            "{} training pair(s): fine-tuning needs at least 2 (and a few hundred to help)",
            train.len()
        )));
    }
    if options.batch_size > train.len() {
        return Err(Error::Invalid(format!(
            "the batch size {} is larger than the {} training pairs; pass --batch-size {} or fewer",
            options.batch_size,
            train.len(),
            train.len()
        )));
    }

    let decode = DecodeOptions { max_pixels: options.max_pixels, min_side: None };
    let prepare = |pairs: &[Pair]| -> Result<(Vec<Tensor>, Vec<Vec<u32>>)> {
        let pixels =
            pairs.iter().map(|p| embedder.preprocess(&open_rgb(&p.image, &decode)?)).collect::<Result<Vec<_>>>()?;
        let texts = pairs.iter().map(|p| embedder.tokenize(&p.text)).collect::<Result<Vec<_>>>()?;
        Ok((pixels, texts))
    };
    let pad = embedder.tokenizer_pad_id();
    let vb = crate::models::source::repo_weights(&repo, device)?;
    if options.scope == TrainScope::Adapter {
        let run = AdapterRun { base, repo: &repo, embedder: &embedder, vb: &vb, options, stored, device };
        return run.train(&train, &held_out, skipped, out, stop, progress);
    }
    let (pixels, texts) = prepare(&train)?;

    let model = Network::load(&embedder, &vb, options.scope)
        .map_err(|e| Error::model(base, format!("cannot set up training: {e}")))?;
    let mut optimizer = AdamW::new(model.vars().values(), options.optimizer)?;
    // What frozen layers compute never changes: computed once per pair, each step runs only
    // the trained layers (for last:N and projection most of the work).
    let prefixes = match &model {
        Network::Clip(clip) if clip.frozen_layers() != (0, 0) => Some(Prefixes::Clip(
            pixels
                .iter()
                .zip(&texts)
                .map(|(p, t)| clip.frozen_prefix(p, t))
                .collect::<candle_core::Result<Vec<_>>>()?,
        )),
        Network::Siglip(siglip) if siglip.frozen_layers() != (0, 0) => Some(Prefixes::Siglip(
            pixels
                .iter()
                .zip(&texts)
                .map(|(p, t)| siglip.frozen_prefix(p, t))
                .collect::<candle_core::Result<Vec<_>>>()?,
        )),
        _ => None,
    };
    let losses = run_steps(&train, options, &mut optimizer, model.clamped_scale(), stop, progress, &|batch| {
        match (&prefixes, &model) {
            (Some(Prefixes::Clip(kept)), Network::Clip(clip)) => {
                return Ok(clip.contrastive_loss_from(&batch.iter().map(|&i| &kept[i]).collect::<Vec<_>>())?);
            }
            (Some(Prefixes::Siglip(kept)), Network::Siglip(siglip)) => {
                return Ok(siglip.loss_from(&batch.iter().map(|&i| &kept[i]).collect::<Vec<_>>())?);
            }
            _ => {}
        }
        let batch_pixels = Tensor::stack(&batch.iter().map(|&i| pixels[i].clone()).collect::<Vec<_>>(), 0)?;
        let batch_texts: Vec<Vec<u32>> = batch.iter().map(|&i| texts[i].clone()).collect();
        Ok(model.loss(&batch_pixels, &batch_texts, pad)?)
    })?;

    let tuned = model.tensors();
    let base_tensors = model
        .tensors()
        .into_keys()
        .map(|name| Ok((name.clone(), vb.get(tuned[&name].shape(), &name)?)))
        .collect::<Result<BTreeMap<_, _>>>()?;
    let interpolate = |alpha: f64| -> Result<BTreeMap<String, Tensor>> {
        tuned.iter().map(|(name, t)| Ok((name.clone(), mix(&base_tensors[name], t, alpha)?))).collect()
    };
    let held = if held_out.is_empty() {
        None
    } else {
        let (pixels, texts) = prepare(&held_out)?;
        Some((Tensor::stack(&pixels, 0)?, texts, evaluation_texts(&embedder, options)?))
    };
    let embed_at = |alpha: f64| -> Result<HeldOut> {
        let (pixels, texts, (labels, vocabulary)) = held.as_ref().expect("evaluated only with held-out pairs");
        let tensors = interpolate(alpha)?;
        let vb = VarBuilder::from_tensors(tensors.into_iter().collect(), DType::F32, device);
        let m = Network::load(&embedder, &vb, TrainScope::Projection)?;
        let texts_of = |ids: &[Vec<u32>]| -> Result<Tensor> { Ok(l2_normalize(&m.text_features(ids, pad)?)?) };
        Ok(HeldOut {
            images: l2_normalize(&m.image_features(pixels)?)?,
            texts: texts_of(texts)?,
            labels: if labels.is_empty() { None } else { Some(texts_of(labels)?) },
            vocabulary: texts_of(vocabulary)?,
        })
    };
    let trained = Trained { losses, train_pairs: train.len(), skipped };
    conclude(&repo, out, options, &held_out, trained, &interpolate, &embed_at, &[])
}

/// The network a run trains: a CLIP (or Chinese-CLIP) with its contrastive loss, or a SigLIP
/// with its sigmoid loss.
enum Network {
    Clip(TrainableClip),
    Siglip(TrainableSiglip),
}

impl Network {
    /// The trainable network of `embedder`'s model, its weights from `vb`.
    fn load(embedder: &ClipEmbedder, vb: &VarBuilder, scope: TrainScope) -> Result<Self> {
        Ok(if embedder.family() == "siglip" {
            Network::Siglip(TrainableSiglip::load(embedder.siglip_config()?, vb, scope)?)
        } else {
            Network::Clip(TrainableClip::load(embedder.config()?, vb, scope)?)
        })
    }

    fn vars(&self) -> &BTreeMap<String, candle_core::Var> {
        match self {
            Network::Clip(m) => m.vars(),
            Network::Siglip(m) => m.vars(),
        }
    }

    fn tensors(&self) -> BTreeMap<String, Tensor> {
        match self {
            Network::Clip(m) => m.tensors(),
            Network::Siglip(m) => m.tensors(),
        }
    }

    /// The weight clamped after each step: CLIP's `logit_scale`, to [0, ln 100]. A SigLIP
    /// clamps nothing, as neither transformers nor big_vision does.
    fn clamped_scale(&self) -> Option<&candle_core::Var> {
        match self {
            Network::Clip(m) => m.vars().get("logit_scale"),
            Network::Siglip(_) => None,
        }
    }

    fn loss(&self, pixels: &Tensor, texts: &[Vec<u32>], pad: u32) -> candle_core::Result<Tensor> {
        match self {
            Network::Clip(m) => m.contrastive_loss(pixels, texts, pad),
            Network::Siglip(m) => m.loss(pixels, texts),
        }
    }

    fn image_features(&self, pixels: &Tensor) -> candle_core::Result<Tensor> {
        match self {
            Network::Clip(m) => m.image_features(pixels),
            Network::Siglip(m) => m.image_features(pixels),
        }
    }

    fn text_features(&self, ids: &[Vec<u32>], pad: u32) -> candle_core::Result<Tensor> {
        match self {
            Network::Clip(m) => m.text_features(ids, pad),
            Network::Siglip(m) => m.text_features(ids),
        }
    }
}

/// What the frozen layers computed for each training pair, kept for every step.
enum Prefixes {
    Clip(Vec<crate::models::clip::train::FrozenPrefix>),
    Siglip(Vec<crate::models::siglip::train::FrozenPrefix>),
}

/// What a training loop leaves for [`conclude`] to report.
struct Trained {
    losses: Vec<f32>,
    train_pairs: usize,
    skipped: Vec<String>,
}

/// The loop both ways of training share: epochs of planned batches (shuffled per epoch unless
/// told not to), the learning-rate schedule, Ctrl-C between steps, a finite-loss check, one
/// AdamW step, and `logit_scale` clamped to [0, ln 100]. Returns every step's loss.
#[allow(clippy::too_many_arguments)]
fn run_steps(
    train: &[Pair],
    options: &FinetuneOptions,
    optimizer: &mut AdamW,
    logit_scale: Option<&candle_core::Var>,
    stop: &AtomicBool,
    progress: StepProgress,
    loss_of: &dyn Fn(&[usize]) -> Result<Tensor>,
) -> Result<Vec<f32>> {
    let steps_per_epoch = plan_batches(&(0..train.len()).collect::<Vec<_>>(), train, options.batch_size).len();
    if steps_per_epoch == 0 {
        return Err(Error::Invalid(
            "the training photos are all of one class: a batch needs photos of two classes to compare".into(),
        ));
    }
    let total = steps_per_epoch * options.epochs;
    let mut order: Vec<usize> = (0..train.len()).collect();
    let mut rng = options.seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    let mut losses = Vec::with_capacity(total);
    for epoch in 0..options.epochs {
        if options.shuffle {
            shuffle(&mut order, &mut rng);
        }
        for (b, batch) in plan_batches(&order, train, options.batch_size).iter().enumerate() {
            if stop.load(Ordering::Relaxed) {
                return Err(Error::Invalid("stopped: nothing was written".into()));
            }
            let step = epoch * steps_per_epoch + b;
            optimizer.lr = scheduled_lr(options.optimizer.lr, step, total, options.warmup, options.cosine);
            let loss = loss_of(batch)?;
            let value = loss.to_scalar::<f32>()?;
            if !value.is_finite() {
                return Err(Error::Invalid(format!("the loss became {value} at step {step}: try a lower --lr")));
            }
            optimizer.backward_step(&loss)?;
            if let Some(scale) = logit_scale {
                scale.set(&scale.as_tensor().clamp(0.0, MAX_LOGIT_SCALE)?)?;
            }
            losses.push(value);
            progress(step + 1, total, value);
        }
    }
    Ok(losses)
}

/// `(1 − alpha)·base + alpha·tuned`.
fn mix(base: &Tensor, tuned: &Tensor, alpha: f64) -> Result<Tensor> {
    Ok(((base * (1.0 - alpha))? + (tuned * alpha)?)?)
}

/// What both ways of training end with: the model saved (with `extra` files beside it), the
/// WiSE-FT interpolations saved beside it, with held-out pairs every one evaluated, and the
/// run's report.
/// `interpolate(alpha)` gives the weights at `alpha` (1: fine-tuned), `evaluate(alpha)` their
/// held-out recall (0: the base model).
#[allow(clippy::type_complexity, clippy::too_many_arguments)]
fn conclude(
    repo: &ModelRepo,
    out: &Path,
    options: &FinetuneOptions,
    held_out: &[Pair],
    trained: Trained,
    interpolate: &dyn Fn(f64) -> Result<BTreeMap<String, Tensor>>,
    embed_at: &dyn Fn(f64) -> Result<HeldOut>,
    extra: &[(&str, Vec<u8>)],
) -> Result<FinetuneReport> {
    let eval = if held_out.is_empty() {
        None
    } else {
        let classes: Vec<Option<usize>> = held_out.iter().map(|p| p.class).collect();
        let (base, tuned) = (embed_at(0.0)?, embed_at(1.0)?);
        let wise = options
            .wise
            .iter()
            .map(|&alpha| Ok(WiseEvaluation { alpha, retrieval: score(&embed_at(alpha)?, &classes)? }))
            .collect::<Result<Vec<_>>>()?;
        Some(Evaluation {
            pairs: held_out.len(),
            base: score(&base, &classes)?,
            finetuned: score(&tuned, &classes)?,
            wise,
            forgetting: forgetting(&base, &tuned)?,
        })
    };
    // Every model is written in full before any is put in place: a failure leaves nothing.
    let targets = model_folders(out, &options.wise);
    let mut staged = Vec::with_capacity(targets.len());
    for (i, target) in targets.iter().enumerate() {
        let (alpha, files) = match i.checked_sub(1) {
            None => (1.0, extra),
            Some(w) => (options.wise[w], &[][..]),
        };
        let written = interpolate(alpha).and_then(|tensors| stage(repo, &tensors, files, target));
        match written {
            Ok(tmp) => staged.push(tmp),
            Err(e) => {
                for tmp in &staged {
                    let _ = std::fs::remove_dir_all(tmp);
                }
                return Err(e);
            }
        }
    }
    let mut installed = Ok(());
    for (tmp, target) in staged.iter().zip(&targets) {
        if installed.is_ok() {
            installed = install(tmp, target, options.force);
        }
        if installed.is_err() {
            let _ = std::fs::remove_dir_all(tmp);
        }
    }
    installed?;
    let written =
        options.wise.iter().zip(&targets[1..]).map(|(&alpha, path)| WiseModel { alpha, out: path.clone() }).collect();
    let Trained { losses, train_pairs, skipped } = trained;
    Ok(FinetuneReport {
        out: out.to_path_buf(),
        steps: losses.len(),
        losses,
        train_pairs,
        eval,
        skipped,
        wise: written,
    })
}

/// Refuses the same image with the same text twice: in one batch they would be each
/// other's false negatives.
fn check_duplicates(pairs: &[Pair]) -> Result<()> {
    let mut seen = BTreeMap::new();
    for p in pairs {
        if let Some(first) = seen.insert((p.image.clone(), p.text.clone()), p.line) {
            return Err(Error::Invalid(format!(
                "line {} repeats the pair of line {first} ({}, {:?}); remove one",
                p.line,
                p.image.display(),
                p.text
            )));
        }
    }
    Ok(())
}

/// The pairs whose image can be read; the others stop the run (listed with their lines), or
/// with `skip_bad` are returned as skipped.
fn readable(pairs: Vec<Pair>, options: &FinetuneOptions) -> Result<(Vec<Pair>, Vec<String>)> {
    let mut good = Vec::with_capacity(pairs.len());
    let mut bad = Vec::new();
    for p in pairs {
        match crate::photo::read_image_file(&p.image, options.max_pixels) {
            Ok(_) => good.push(p),
            Err(problem) => bad.push(format!("line {}: {}: {problem}", p.line, p.image.display())),
        }
    }
    if !bad.is_empty() && !options.skip_bad {
        let shown: Vec<&str> = bad.iter().take(10).map(String::as_str).collect();
        let more = if bad.len() > 10 { format!(" (and {} more)", bad.len() - 10) } else { String::new() };
        return Err(Error::Invalid(format!(
            "{} image(s) cannot be read: {}{more}; fix them or pass --skip-bad",
            bad.len(),
            shown.join("; ")
        )));
    }
    Ok((good, bad))
}

/// A seeded split: the held-out share drawn without replacement, the rest in file order.
fn split(pairs: Vec<Pair>, share: f64, seed: u64) -> (Vec<Pair>, Vec<Pair>) {
    let n = ((pairs.len() as f64) * share).round() as usize;
    if n == 0 {
        return (pairs, Vec::new());
    }
    let mut order: Vec<usize> = (0..pairs.len()).collect();
    let mut rng = seed.wrapping_mul(0xd1b5_4a32_d192_ed03) | 1;
    shuffle(&mut order, &mut rng);
    let held: HashSet<usize> = order[..n].iter().copied().collect();
    let (mut train, mut val) = (Vec::new(), Vec::new());
    for (i, p) in pairs.into_iter().enumerate() {
        if held.contains(&i) { val.push(p) } else { train.push(p) }
    }
    (train, val)
}

/// The batches of an epoch: `order` cut into runs of `batch_size`, or for class-folder pairs,
/// batches of distinct classes (two photos of one class in a batch would be each other's
/// false negatives): each batch takes the next photo of the classes with the most photos left,
/// in the order the shuffled `order` first meets them. The number of batches depends only on
/// the class sizes, so the schedule can count the steps in advance.
///
/// A batch of one pair is never trained on: its contrastive loss is 0, yet AdamW's weight
/// decay and momentum would still move the weights. A last single pair joins the batch
/// before it (one batch of `batch_size + 1`); with class folders, where the batch before holds
/// a photo of the same class, the single photos at the end of an epoch are left out of it
/// (like PyTorch's `drop_last`; shuffling leaves out others the next epoch).
fn plan_batches(order: &[usize], pairs: &[Pair], batch_size: usize) -> Vec<Vec<usize>> {
    if pairs.iter().all(|p| p.class.is_none()) {
        let mut batches: Vec<Vec<usize>> = order.chunks(batch_size).map(<[usize]>::to_vec).collect();
        if batches.len() > 1 && batches.last().is_some_and(|b| b.len() == 1) {
            let single = batches.pop().unwrap_or_default();
            if let Some(before) = batches.last_mut() {
                before.extend(single);
            }
        }
        return batches;
    }
    let mut queues: Vec<(usize, std::collections::VecDeque<usize>)> = Vec::new();
    for &i in order {
        let class = pairs[i].class.unwrap_or(usize::MAX);
        match queues.iter_mut().find(|(c, _)| *c == class) {
            Some((_, q)) => q.push_back(i),
            None => queues.push((class, std::collections::VecDeque::from([i]))),
        }
    }
    let mut batches = Vec::new();
    loop {
        // Stable: among classes with as many photos left, the first met comes first.
        let mut ranked: Vec<usize> = (0..queues.len()).filter(|&q| !queues[q].1.is_empty()).collect();
        if ranked.is_empty() {
            batches.retain(|b: &Vec<usize>| b.len() > 1);
            return batches;
        }
        ranked.sort_by_key(|&q| std::cmp::Reverse(queues[q].1.len()));
        let batch: Vec<usize> = ranked.into_iter().take(batch_size).filter_map(|q| queues[q].1.pop_front()).collect();
        batches.push(batch);
    }
}

/// Fisher–Yates with xorshift64*.
fn shuffle(items: &mut [usize], state: &mut u64) {
    for i in (1..items.len()).rev() {
        *state ^= *state >> 12;
        *state ^= *state << 25;
        *state ^= *state >> 27;
        let r = state.wrapping_mul(0x2545_f491_4f6c_dd1d);
        items.swap(i, (r % (i as u64 + 1)) as usize);
    }
}

/// The held-out set as one model (or interpolation) embeds it, every row L2-normalised: the
/// photos, their texts, the class labels (`--folders`) and the vocabulary queries of the
/// forgetting figure.
pub struct HeldOut {
    images: Tensor,
    texts: Tensor,
    labels: Option<Tensor>,
    vocabulary: Tensor,
}

/// Token id sequences, one per text.
type TokenIds = Vec<Vec<u32>>;

/// Vocabulary labels the forgetting figure queries with.
const FORGETTING_QUERIES: usize = 100;

/// The texts of the held-out evaluation besides the pairs': the labels with the run's
/// template, and the first vocabulary labels with the default one.
fn evaluation_texts(embedder: &ClipEmbedder, options: &FinetuneOptions) -> Result<(TokenIds, TokenIds)> {
    let labels = options
        .labels
        .iter()
        .map(|l| embedder.tokenize(&options.template.replace("{}", l)))
        .collect::<Result<Vec<_>>>()?;
    let vocabulary = crate::query::tags::parse_vocabulary(crate::query::tags::DEFAULT_VOCABULARY)
        .into_iter()
        .take(FORGETTING_QUERIES)
        .map(|l| embedder.tokenize(&crate::query::tags::DEFAULT_TEMPLATE.replace("{}", &l)))
        .collect::<Result<Vec<_>>>()?;
    Ok((labels, vocabulary))
}

/// Recall in both directions and, with labels, zero-shot accuracy of `classes`.
fn score(h: &HeldOut, classes: &[Option<usize>]) -> Result<Retrieval> {
    let mut r = ranks_to_recall(&h.images.matmul(&h.texts.t()?)?.to_vec2()?)?;
    if let Some(labels) = &h.labels {
        let sims: Vec<Vec<f32>> = h.images.matmul(&labels.t()?)?.to_vec2()?;
        let ranks: Vec<usize> = sims
            .iter()
            .zip(classes)
            .filter_map(|(row, c)| c.map(|c| row.iter().filter(|&&s| s > row[c]).count()))
            .collect();
        let n = ranks.len().max(1) as f64;
        r.zero_shot = Some([1, 5].map(|k| ranks.iter().filter(|&&r| r < k).count() as f64 / n));
    }
    Ok(r)
}

/// The top-k overlap of base and fine-tuned rankings for the vocabulary queries.
fn forgetting(base: &HeldOut, tuned: &HeldOut) -> Result<Forgetting> {
    let n = base.images.dim(0)?;
    let k = if n >= 20 { 10 } else { (n / 2).max(1) };
    let top = |h: &HeldOut| -> Result<Vec<Vec<usize>>> {
        let sims: Vec<Vec<f32>> = h.vocabulary.matmul(&h.images.t()?)?.to_vec2()?;
        Ok(sims
            .into_iter()
            .map(|row| {
                let mut order: Vec<usize> = (0..row.len()).collect();
                order.sort_by(|&a, &b| row[b].total_cmp(&row[a]));
                order.truncate(k);
                order
            })
            .collect())
    };
    let (b, t) = (top(base)?, top(tuned)?);
    let overlap =
        b.iter().zip(&t).map(|(x, y)| x.iter().filter(|i| y.contains(i)).count() as f64 / k as f64).sum::<f64>()
            / b.len().max(1) as f64;
    Ok(Forgetting { queries: b.len(), k, overlap })
}

/// Recall at 1, 5 and 10 in both directions from image × text similarities (row i's right
/// answer is column i).
fn ranks_to_recall(sims: &[Vec<f32>]) -> Result<Retrieval> {
    let n = sims.len();
    // The rank of the right answer in each row (0 = first).
    let rank = |row: &[f32], right: usize| row.iter().filter(|&&s| s > row[right]).count();
    let image_ranks: Vec<usize> = (0..n).map(|i| rank(&sims[i], i)).collect();
    let text_ranks: Vec<usize> = (0..n).map(|j| rank(&(0..n).map(|i| sims[i][j]).collect::<Vec<_>>(), j)).collect();
    let recall = |ranks: &[usize]| [1, 5, 10].map(|k| ranks.iter().filter(|&&r| r < k).count() as f64 / n as f64);
    Ok(Retrieval { image_to_text: recall(&image_ranks), text_to_image: recall(&text_ranks), zero_shot: None })
}

/// The folders a run writes: `out`, then `OUT-wiseA` for each WiSE-FT weight.
fn model_folders(out: &Path, wise: &[f64]) -> Vec<PathBuf> {
    let mut folders = vec![out.to_path_buf()];
    for alpha in wise {
        let mut name = out.file_name().unwrap_or_default().to_os_string();
        name.push(format!("-wise{alpha}"));
        folders.push(out.with_file_name(name));
    }
    folders
}

/// Whether the run may write `target`: a folder that is not there yet, or with `force` a
/// model folder that clipdex may replace (see [`crate::output_dir`]).
fn check_target(target: &Path, force: bool) -> Result<()> {
    if target.symlink_metadata().is_err() {
        return Ok(());
    }
    crate::output_dir::check_replaceable_model(target)?;
    if !force {
        return Err(Error::Invalid(format!("{} exists; pass --force to replace it", target.display())));
    }
    Ok(())
}

/// The folder beside `out` where a save is written (`partial`) or where the model it replaces
/// waits until the new one is in place (`replaced`), for process `pid`.
fn save_folder(out: &Path, kind: &str, pid: u32) -> PathBuf {
    let parent = out.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    let name = out.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_else(|| "model".into());
    parent.join(format!(".{name}.{kind}-{pid}"))
}

/// Whether process `pid` runs (on this machine): its save folders are then its own business.
fn process_alive(pid: u32) -> bool {
    if pid == std::process::id() {
        return true;
    }
    #[cfg(unix)]
    {
        let Ok(pid) = libc::pid_t::try_from(pid) else { return false };
        // SAFETY: signal 0 only checks that the process exists and may be signalled.
        let sent = unsafe { libc::kill(pid, 0) };
        sent == 0 || std::io::Error::last_os_error().raw_os_error() == Some(libc::EPERM)
    }
    #[cfg(not(unix))]
    {
        false
    }
}

/// Cleans up after saves of `out` that were interrupted (their process is gone): a half-written
/// model is removed, and a model that was moved aside to be replaced goes back to `out` when
/// nothing took its place (else it is removed).
fn clean_stale_saves(out: &Path) {
    let parent = save_folder(out, "partial", 0).parent().map(Path::to_path_buf).unwrap_or_default();
    let Some(name) = out.file_name().map(|n| n.to_string_lossy().into_owned()) else { return };
    let Ok(read) = std::fs::read_dir(&parent) else { return };
    for entry in read.flatten() {
        let file = entry.file_name().to_string_lossy().into_owned();
        let Some(rest) = file.strip_prefix(&format!(".{name}.")) else { continue };
        let Some((kind, pid)) = rest.split_once('-') else { continue };
        let Ok(pid) = pid.parse::<u32>() else { continue };
        if !matches!(kind, "partial" | "replaced") || process_alive(pid) {
            continue;
        }
        let path = entry.path();
        if kind == "replaced" && out.symlink_metadata().is_err() && std::fs::rename(&path, out).is_ok() {
            tracing::warn!("{}: put back the model an interrupted run had moved aside", out.display());
            continue;
        }
        // Only what a save of ours holds: a folder with other files is someone else's.
        if !crate::output_dir::holds_only_model_files(&path) {
            tracing::warn!(
                "{} looks like a save left by an interrupted run but holds other files: kept",
                path.display()
            );
            continue;
        }
        tracing::info!("removing {}, left by an interrupted run", path.display());
        let _ = std::fs::remove_dir_all(&path);
    }
}

/// Writes a model folder for `out` into a hidden folder beside it (with the marker that lets
/// a later `--force` replace it, and every file with the user's usual permissions), and
/// returns that folder.
fn stage(
    repo: &ModelRepo,
    tensors: &BTreeMap<String, Tensor>,
    extra: &[(&str, Vec<u8>)],
    out: &Path,
) -> Result<PathBuf> {
    let tmp = save_folder(out, "partial", std::process::id());
    let parent = tmp.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(parent).map_err(|e| Error::Invalid(format!("cannot create {}: {e}", parent.display())))?;
    let fail = |what: &str, e: &dyn std::fmt::Display| Error::Invalid(format!("cannot write {what}: {e}"));
    let _ = std::fs::remove_dir_all(&tmp);
    std::fs::create_dir(&tmp).map_err(|e| fail(&tmp.display().to_string(), &e))?;
    let written = (|| -> Result<()> {
        let mut files = Vec::new();
        for file in COPIED_FILES {
            if let Some(src) = repo.optional(file)? {
                std::fs::copy(&src, tmp.join(file)).map_err(|e| fail(file, &e))?;
                files.push(file.to_string());
            }
        }
        let contiguous: Vec<(String, Tensor)> =
            tensors.iter().map(|(k, t)| Ok((k.clone(), t.contiguous()?))).collect::<candle_core::Result<Vec<_>>>()?;
        candle_core::safetensors::save(&contiguous.into_iter().collect(), tmp.join("model.safetensors"))
            .map_err(|e| fail("model.safetensors", &e))?;
        files.push("model.safetensors".into());
        for (name, bytes) in extra {
            std::fs::write(tmp.join(name), bytes).map_err(|e| fail(name, &e))?;
            files.push(name.to_string());
        }
        // The marker is a new file, so it has the mode the user's umask gives; the weights
        // (written through a private temporary file) and the copies (which keep the base's
        // mode, read-only in some caches) get the same.
        crate::output_dir::write_model_marker(&tmp, &files)?;
        let mode = std::fs::metadata(tmp.join(crate::output_dir::MODEL_MARKER))
            .map_err(|e| fail(crate::output_dir::MODEL_MARKER, &e))?
            .permissions();
        for file in &files {
            std::fs::set_permissions(tmp.join(file), mode.clone()).map_err(|e| fail(file, &e))?;
        }
        Ok(())
    })();
    match written {
        Ok(()) => Ok(tmp),
        Err(e) => {
            let _ = std::fs::remove_dir_all(&tmp);
            Err(e)
        }
    }
}

/// Puts a staged model folder in place at `out`: an existing `out` (with `force`, and only a
/// model clipdex may replace) is moved aside first and removed after.
fn install(tmp: &Path, out: &Path, force: bool) -> Result<()> {
    let fail = |e: &dyn std::fmt::Display| Error::Invalid(format!("cannot write {}: {e}", out.display()));
    // Checked again: training takes a while, and the folder may have changed meanwhile.
    check_target(out, force)?;
    let aside = save_folder(out, "replaced", std::process::id());
    let replacing = out.symlink_metadata().is_ok();
    if replacing {
        std::fs::rename(out, &aside).map_err(|e| fail(&e))?;
    }
    if let Err(e) = std::fs::rename(tmp, out) {
        if replacing {
            let _ = std::fs::rename(&aside, out);
        }
        return Err(fail(&e));
    }
    let _ = std::fs::remove_dir_all(&aside);
    Ok(())
}

/// `--train adapter`: a linear map `A` on the normalised image embedding, trained on the
/// images' vectors (the library's, or embedded once), with `text_projection` and
/// `logit_scale`; the text tower runs once per text, the image tower never in the loop.
/// Since `normalise(A · normalise(P·x)) = normalise((A·P)·x)`, the map folds into
/// `visual_projection`, and the saved model is an ordinary CLIP. A SigLIP's adapter trains
/// its text side only ([`AdapterRun::train_siglip`]).
struct AdapterRun<'a> {
    base: &'a str,
    repo: &'a ModelRepo,
    embedder: &'a ClipEmbedder,
    vb: &'a VarBuilder<'static>,
    options: &'a FinetuneOptions,
    stored: StoredVectors<'a>,
    device: &'a Device,
}

/// Held-out image vectors, their pooled text states, and the pooled states of the zero-shot
/// labels (if any) and of the retrieval vocabulary.
type HeldOutInputs = (Tensor, Tensor, Option<Tensor>, Tensor);

impl AdapterRun<'_> {
    /// The normalised image vectors `[n, d]` and the text tower's pooled states `[n, w]` of
    /// `pairs`, and how many images came from the library.
    fn inputs(&self, pairs: &[Pair]) -> Result<(Tensor, Tensor, usize)> {
        let decode = DecodeOptions { max_pixels: self.options.max_pixels, min_side: None };
        let mut vectors = Vec::with_capacity(pairs.len());
        let mut reused = 0;
        for p in pairs {
            let bytes = crate::photo::read_image_file(&p.image, self.options.max_pixels)
                .map_err(|problem| Error::image(&p.image, problem))?;
            let hash = blake3::hash(&bytes).to_hex().to_string();
            let v = match (self.stored)(&hash) {
                Some(v) => {
                    reused += 1;
                    v
                }
                None => {
                    let image =
                        crate::photo::decode_rgb(&bytes, &decode).map_err(|problem| Error::image(&p.image, problem))?;
                    self.embedder.embed_images(&[image])?.remove(0)
                }
            };
            vectors.push(Tensor::from_vec(v, self.embedder.dim(), self.device)?);
        }
        // The frozen text tower runs once per distinct text (class templates repeat), on the
        // fast inference path.
        let mut distinct: Vec<&str> = Vec::new();
        let mut row_of: std::collections::HashMap<&str, u32> = std::collections::HashMap::new();
        let rows: Vec<u32> = pairs
            .iter()
            .map(|p| {
                *row_of.entry(&p.text).or_insert_with(|| {
                    distinct.push(&p.text);
                    (distinct.len() - 1) as u32
                })
            })
            .collect();
        let texts = distinct.iter().map(|t| self.embedder.tokenize(t)).collect::<Result<Vec<_>>>()?;
        let pooled = texts.chunks(64).map(|chunk| self.embedder.text_pooled(chunk)).collect::<Result<Vec<_>>>()?;
        let pooled = Tensor::cat(&pooled, 0)?.index_select(&Tensor::from_vec(rows, pairs.len(), self.device)?, 0)?;
        Ok((Tensor::stack(&vectors, 0)?, pooled, reused))
    }

    /// What the held-out evaluation of an adapter needs, once (`None` without held-out pairs):
    /// the pairs' image vectors and pooled text states, and the pooled states of the zero-shot
    /// labels (if any) and of the retrieval vocabulary.
    fn held_out_inputs(&self, held_out: &[Pair]) -> Result<Option<HeldOutInputs>> {
        if held_out.is_empty() {
            return Ok(None);
        }
        let (images, pooled, _) = self.inputs(held_out)?;
        let (labels, vocabulary) = evaluation_texts(self.embedder, self.options)?;
        let pool = |ids: &[Vec<u32>]| -> Result<Option<Tensor>> {
            if ids.is_empty() { Ok(None) } else { Ok(Some(self.embedder.text_pooled(ids)?)) }
        };
        Ok(Some((images, pooled, pool(&labels)?, pool(&vocabulary)?.expect("the vocabulary is not empty"))))
    }

    #[allow(clippy::too_many_arguments)]
    fn train(
        &self,
        train: &[Pair],
        held_out: &[Pair],
        skipped: Vec<String>,
        out: &Path,
        stop: &AtomicBool,
        progress: StepProgress,
    ) -> Result<FinetuneReport> {
        if self.embedder.family() == "siglip" {
            return self.train_siglip(train, held_out, skipped, out, stop, progress);
        }
        let model = TrainableClip::load(self.embedder.config()?, self.vb, TrainScope::Adapter)
            .map_err(|e| Error::model(self.base, format!("cannot set up training: {e}")))?;
        let (images, pooled, reused) = self.inputs(train)?;
        tracing::info!("adapter: {reused} of {} image vectors from the library", train.len());
        let d = self.embedder.dim();
        let adapter = candle_core::Var::from_tensor(&Tensor::eye(d, DType::F32, self.device)?)?;
        let text_projection = model.vars()["text_projection.weight"].clone();
        let logit_scale = model.vars()["logit_scale"].clone();
        let mut optimizer = AdamW::new([&adapter, &text_projection, &logit_scale], self.options.optimizer)?;
        let losses = run_steps(train, self.options, &mut optimizer, Some(&logit_scale), stop, progress, &|batch| {
            let rows = Tensor::from_vec(batch.iter().map(|&i| i as u32).collect::<Vec<_>>(), batch.len(), self.device)?;
            let image = images.index_select(&rows, 0)?.matmul(&adapter.as_tensor().t()?)?;
            let text = pooled.index_select(&rows, 0)?.matmul(&text_projection.as_tensor().t()?)?;
            Ok(crate::models::clip::train::clip_loss(&image, &text, logit_scale.as_tensor())?)
        })?;
        let tensors = model.tensors();
        let (visual, base_text) = (
            tensors["visual_projection.weight"].clone(),
            self.vb.get(text_projection.shape(), "text_projection.weight")?,
        );
        let base_scale = self.vb.get((), "logit_scale")?.to_dtype(DType::F32)?;
        let eye = Tensor::eye(d, DType::F32, self.device)?;
        // At alpha: the adapter (1 − alpha)·I + alpha·A folded in, the text projection and
        // logit_scale interpolated; every other weight is the base's.
        let at = |alpha: f64| -> Result<(Tensor, Tensor)> {
            Ok((mix(&eye, adapter.as_tensor(), alpha)?, mix(&base_text, text_projection.as_tensor(), alpha)?))
        };
        let interpolate = |alpha: f64| -> Result<BTreeMap<String, Tensor>> {
            let (a, t) = at(alpha)?;
            let mut out = tensors.clone();
            out.insert("visual_projection.weight".into(), a.matmul(&visual)?);
            out.insert("text_projection.weight".into(), t);
            out.insert("logit_scale".into(), mix(&base_scale, logit_scale.as_tensor(), alpha)?);
            Ok(out)
        };
        let held = self.held_out_inputs(held_out)?;
        let embed_at = |alpha: f64| -> Result<HeldOut> {
            let (images, pooled, labels, vocabulary) = held.as_ref().expect("evaluated only with held-out pairs");
            let (a, t) = at(alpha)?;
            let project = |x: &Tensor| -> Result<Tensor> { Ok(l2_normalize(&x.matmul(&t.t()?)?)?) };
            Ok(HeldOut {
                images: l2_normalize(&images.matmul(&a.t()?)?)?,
                texts: project(pooled)?,
                labels: labels.as_ref().map(project).transpose()?,
                vocabulary: project(vocabulary)?,
            })
        };
        let info = AdapterInfo {
            base: crate::models::source::canonical_spec(self.base),
            base_files: crate::models::source::local_fingerprint(self.base),
        };
        let matrix = adapter.as_tensor().contiguous()?;
        let weights = safetensors::serialize([("adapter", &matrix)], None)
            .map_err(|e| Error::Invalid(format!("cannot write the adapter weights: {e}")))?;
        let extra = [(ADAPTER_FILE, serde_json::to_vec_pretty(&info).unwrap_or_default()), (ADAPTER_WEIGHTS, weights)];
        let trained = Trained { losses, train_pairs: train.len(), skipped };
        conclude(self.repo, out, self.options, held_out, trained, &interpolate, &embed_at, &extra)
    }

    /// `--train adapter` for a SigLIP: its `head` (the text tower's last linear map),
    /// `logit_scale` and `logit_bias` trained with the sigmoid loss on the images' vectors, which
    /// stay as they are (the adapter is the identity: a map on the image side cannot be folded
    /// into SigLIP's pooling head). The library keeps its vectors; re-ranking and `reindex`
    /// read none of the photos.
    fn train_siglip(
        &self,
        train: &[Pair],
        held_out: &[Pair],
        skipped: Vec<String>,
        out: &Path,
        stop: &AtomicBool,
        progress: StepProgress,
    ) -> Result<FinetuneReport> {
        let config = self.embedder.siglip_config()?;
        let model = TrainableSiglip::load(config, self.vb, TrainScope::Adapter)
            .map_err(|e| Error::model(self.base, format!("cannot set up training: {e}")))?;
        let (images, pooled, reused) = self.inputs(train)?;
        tracing::info!("adapter: {reused} of {} image vectors from the library", train.len());
        let vars = model.vars();
        let (weight, bias) = (vars["text_model.head.weight"].clone(), vars["text_model.head.bias"].clone());
        let (scale, offset) = (vars["logit_scale"].clone(), vars["logit_bias"].clone());
        let mut optimizer = AdamW::new([&weight, &bias, &scale, &offset], self.options.optimizer)?;
        let losses = run_steps(train, self.options, &mut optimizer, None, stop, progress, &|batch| {
            let rows = Tensor::from_vec(batch.iter().map(|&i| i as u32).collect::<Vec<_>>(), batch.len(), self.device)?;
            let text =
                pooled.index_select(&rows, 0)?.matmul(&weight.as_tensor().t()?)?.broadcast_add(bias.as_tensor())?;
            let image = images.index_select(&rows, 0)?;
            Ok(crate::models::siglip::train::sigmoid_loss(&image, &text, scale.as_tensor(), offset.as_tensor())?)
        })?;
        let tensors = model.tensors();
        let trained = ["text_model.head.weight", "text_model.head.bias", "logit_scale", "logit_bias"];
        let base_values = trained
            .iter()
            .map(|name| Ok((*name, self.vb.get(tensors[*name].shape(), name)?.to_dtype(DType::F32)?)))
            .collect::<Result<BTreeMap<_, _>>>()?;
        let interpolate = |alpha: f64| -> Result<BTreeMap<String, Tensor>> {
            let mut out = tensors.clone();
            for (name, base) in &base_values {
                out.insert(name.to_string(), mix(base, &tensors[*name], alpha)?);
            }
            Ok(out)
        };
        let held = self.held_out_inputs(held_out)?;
        let embed_at = |alpha: f64| -> Result<HeldOut> {
            let (images, pooled, labels, vocabulary) = held.as_ref().expect("evaluated only with held-out pairs");
            let w = mix(&base_values["text_model.head.weight"], weight.as_tensor(), alpha)?;
            let b = mix(&base_values["text_model.head.bias"], bias.as_tensor(), alpha)?;
            let project = |x: &Tensor| -> Result<Tensor> { Ok(l2_normalize(&x.matmul(&w.t()?)?.broadcast_add(&b)?)?) };
            Ok(HeldOut {
                images: images.clone(),
                texts: project(pooled)?,
                labels: labels.as_ref().map(project).transpose()?,
                vocabulary: project(vocabulary)?,
            })
        };
        let info = AdapterInfo {
            base: crate::models::source::canonical_spec(self.base),
            base_files: crate::models::source::local_fingerprint(self.base),
        };
        let identity = Tensor::eye(self.embedder.dim(), DType::F32, self.device)?;
        let weights = safetensors::serialize([("adapter", &identity)], None)
            .map_err(|e| Error::Invalid(format!("cannot write the adapter weights: {e}")))?;
        let extra = [(ADAPTER_FILE, serde_json::to_vec_pretty(&info).unwrap_or_default()), (ADAPTER_WEIGHTS, weights)];
        let trained = Trained { losses, train_pairs: train.len(), skipped };
        conclude(self.repo, out, self.options, held_out, trained, &interpolate, &embed_at, &extra)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_json_lines_and_csv_with_relative_paths() {
        let dir = tempfile::tempdir().unwrap();
        let jsonl = dir.path().join("pairs.jsonl");
        std::fs::write(&jsonl, "{\"image\": \"a.jpg\", \"text\": \"a cat\"}\n\n{\"image\": \"/abs/b.png\", \"text\": \"a dog, sleeping\"}\n").unwrap();
        let pairs = read_pairs(&jsonl).unwrap();
        assert_eq!(pairs[0], Pair { image: dir.path().join("a.jpg"), text: "a cat".into(), line: 1, class: None });
        assert_eq!((pairs[1].image.as_path(), pairs[1].line), (Path::new("/abs/b.png"), 3));
        let csv = dir.path().join("pairs.csv");
        std::fs::write(&csv, "image,text\nx/a.jpg,a cat\nb.jpg,\"a dog, \"\"Rex\"\"\"\n").unwrap();
        let pairs = read_pairs(&csv).unwrap();
        assert_eq!(pairs.len(), 2);
        assert_eq!(pairs[1].text, "a dog, \"Rex\"");
        std::fs::write(&csv, "a.jpg\n").unwrap();
        assert!(read_pairs(&csv).unwrap_err().to_string().contains("pairs.csv:1"));
        std::fs::write(&jsonl, "{\"image\": \"a.jpg\"}\n").unwrap();
        assert!(read_pairs(&jsonl).unwrap_err().to_string().contains(":1:"));
    }

    #[test]
    fn class_batches_never_repeat_a_class() {
        // Classes of 5, 3, 1 and 1 photos, shuffled.
        let classes = [0, 0, 0, 0, 0, 1, 1, 1, 2, 3];
        let pairs: Vec<Pair> = classes
            .iter()
            .enumerate()
            .map(|(i, &c)| Pair {
                image: PathBuf::from(format!("{i}.jpg")),
                text: format!("t{i}"),
                line: i + 1,
                class: Some(c),
            })
            .collect();
        let order = [7, 2, 9, 0, 5, 3, 8, 1, 6, 4];
        // Batches of 3 and 4 end with single photos of class 0 (5 photos), left out.
        for (batch_size, batches_planned, left_out) in [(2, 5, 0), (3, 3, 2), (4, 3, 2)] {
            let batches = plan_batches(&order, &pairs, batch_size);
            let mut seen: Vec<usize> = batches.iter().flatten().copied().collect();
            seen.sort();
            seen.dedup();
            assert_eq!(seen.len(), 10 - left_out, "every pair at most once, {left_out} left out");
            assert!((0..10).filter(|i| !seen.contains(i)).all(|i| classes[i] == 0));
            for b in &batches {
                let mut c: Vec<usize> = b.iter().map(|&i| classes[i]).collect();
                c.sort();
                c.dedup();
                assert_eq!(c.len(), b.len(), "batch {b:?} repeats a class");
                assert!(b.len() >= 2 && b.len() <= batch_size, "{b:?}");
            }
            assert_eq!(batches.len(), batches_planned);
        }
    }

    #[test]
    fn a_single_pair_never_makes_a_batch() {
        let pairs: Vec<Pair> = (0..7)
            .map(|i| Pair { image: PathBuf::from(format!("{i}.jpg")), text: format!("t{i}"), line: i + 1, class: None })
            .collect();
        let order: Vec<usize> = (0..7).collect();
        // 7 = 3 + 3 + 1: the single pair joins the batch before it.
        assert_eq!(plan_batches(&order, &pairs, 3), vec![vec![0, 1, 2], vec![3, 4, 5, 6]]);
        assert_eq!(plan_batches(&order, &pairs, 2), vec![vec![0, 1], vec![2, 3], vec![4, 5, 6]]);
        assert_eq!(plan_batches(&order, &pairs, 4), vec![vec![0, 1, 2, 3], vec![4, 5, 6]]);
        assert_eq!(plan_batches(&order[..3], &pairs[..3], 2), vec![vec![0, 1, 2]]);
        // Two photos of one class and one of another: the lone photo left is not trained on.
        let classes: Vec<Pair> =
            [0, 0, 1].iter().zip(&pairs).map(|(&c, p)| Pair { class: Some(c), ..p.clone() }).collect();
        assert_eq!(plan_batches(&order[..3], &classes, 2), vec![vec![0, 2]]);
    }

    #[test]
    fn splits_are_seeded_and_keep_file_order() {
        let pairs: Vec<Pair> = (0..10)
            .map(|i| Pair { image: PathBuf::from(format!("{i}.jpg")), text: format!("t{i}"), line: i + 1, class: None })
            .collect();
        let (train, val) = split(pairs.clone(), 0.2, 7);
        assert_eq!((train.len(), val.len()), (8, 2));
        assert!(train.windows(2).all(|w| w[0].line < w[1].line));
        assert_eq!(split(pairs.clone(), 0.2, 7).1, val);
        assert_eq!(split(pairs, 0.0, 7).1.len(), 0);
    }
}
