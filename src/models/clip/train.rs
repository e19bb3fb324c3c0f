//! A trainable CLIP beside the inference one ([`super::ClipModel`]).
//!
//! The inference network prepares its weights for speed (fused and pre-scaled q/k/v, transposed
//! copies, fused CPU kernels without gradients, `logit_scale` read once as a number), which cuts
//! the autograd graph everywhere. This one keeps every weight under its Hugging Face name and
//! uses only differentiable candle ops: plain matmul + bias, layer norm written out with mean
//! and variance, softmax over the last dimension, quick-GELU / GELU. Trainable weights are
//! [`Var`]s, frozen ones plain tensors (so freezing costs nothing: no gradient is tracked
//! through them). A test proves its forward pass equal to the inference model's, and that every
//! trainable tensor receives a gradient (which catches silent graph cuts).
//!
//! The optimiser is PyTorch's `AdamW` to the letter (decoupled weight decay applied before the
//! update, bias-corrected moments, `eps` added to `sqrt(v̂)`), with weight decay only on
//! tensors of two or more dimensions, as open_clip does.

use std::collections::BTreeMap;

use candle_core::{D, DType, Device, IndexOp, Tensor, Var};
use candle_nn::VarBuilder;

use super::config::ClipConfig;
use crate::models::nn::train_kernels as fused;
use crate::models::nn::trainable::{EncoderSettings, NamedWeights, activation, encoder_layer_shapes, linear_with};
pub use crate::models::nn::trainable::{TrainScope, normalize};

type CResult<T> = candle_core::Result<T>;

/// The names and shapes of every weight of a `CLIPModel`, in a fixed order.
pub fn parameter_shapes(config: &ClipConfig) -> Vec<(String, Vec<usize>)> {
    let (t, v) = (&config.text_config, &config.vision_config);
    let mut out: Vec<(String, Vec<usize>)> = Vec::new();
    let mut add = |name: String, shape: &[usize]| out.push((name, shape.to_vec()));
    let layers = encoder_layer_shapes;
    let td = match &config.bert_text {
        // Chinese-CLIP's BERT text tower, under `ChineseCLIPTextModel`'s names.
        Some(b) => {
            let d = b.hidden_size;
            let e = "text_model.embeddings";
            add(format!("{e}.word_embeddings.weight"), &[b.vocab_size, d]);
            add(format!("{e}.position_embeddings.weight"), &[b.max_position_embeddings, d]);
            add(format!("{e}.token_type_embeddings.weight"), &[b.type_vocab_size, d]);
            add(format!("{e}.LayerNorm.weight"), &[d]);
            add(format!("{e}.LayerNorm.bias"), &[d]);
            for i in 0..b.num_hidden_layers {
                let p = format!("text_model.encoder.layer.{i}");
                for (name, out, inp) in [
                    ("attention.self.query", d, d),
                    ("attention.self.key", d, d),
                    ("attention.self.value", d, d),
                    ("attention.output.dense", d, d),
                    ("intermediate.dense", b.intermediate_size, d),
                    ("output.dense", d, b.intermediate_size),
                ] {
                    add(format!("{p}.{name}.weight"), &[out, inp]);
                    add(format!("{p}.{name}.bias"), &[out]);
                }
                for ln in ["attention.output.LayerNorm", "output.LayerNorm"] {
                    add(format!("{p}.{ln}.weight"), &[d]);
                    add(format!("{p}.{ln}.bias"), &[d]);
                }
            }
            d
        }
        None => {
            let td = t.hidden_size;
            add("text_model.embeddings.token_embedding.weight".into(), &[t.vocab_size, td]);
            add("text_model.embeddings.position_embedding.weight".into(), &[t.max_position_embeddings, td]);
            layers(&mut add, "text_model", t.num_hidden_layers, td, t.intermediate_size);
            add("text_model.final_layer_norm.weight".into(), &[td]);
            add("text_model.final_layer_norm.bias".into(), &[td]);
            td
        }
    };
    let vd = v.hidden_size;
    let grid = v.image_size / v.patch_size;
    add("vision_model.embeddings.class_embedding".into(), &[vd]);
    add("vision_model.embeddings.patch_embedding.weight".into(), &[vd, v.num_channels, v.patch_size, v.patch_size]);
    add("vision_model.embeddings.position_embedding.weight".into(), &[grid * grid + 1, vd]);
    add("vision_model.pre_layrnorm.weight".into(), &[vd]);
    add("vision_model.pre_layrnorm.bias".into(), &[vd]);
    layers(&mut add, "vision_model", v.num_hidden_layers, vd, v.intermediate_size);
    add("vision_model.post_layernorm.weight".into(), &[vd]);
    add("vision_model.post_layernorm.bias".into(), &[vd]);
    add("visual_projection.weight".into(), &[config.projection_dim, vd]);
    add("text_projection.weight".into(), &[config.projection_dim, td]);
    add("logit_scale".into(), &[]);
    out
}

/// Whether `scope` trains the weight `name`.
fn is_trained(scope: TrainScope, config: &ClipConfig, name: &str) -> bool {
    let head = name.starts_with("visual_projection.") || name.starts_with("text_projection.") || name == "logit_scale";
    match scope {
        TrainScope::All => true,
        TrainScope::Projection => head,
        TrainScope::Adapter => name.starts_with("text_projection.") || name == "logit_scale",
        TrainScope::Last(n) => {
            let top_layer = |prefix: &str, layers: usize| {
                name.strip_prefix(prefix)
                    .and_then(|rest| rest.split('.').next())
                    .and_then(|i| i.parse::<usize>().ok())
                    .is_some_and(|i| i + n >= layers)
            };
            head || name.starts_with("text_model.final_layer_norm.")
                || name.starts_with("vision_model.post_layernorm.")
                || top_layer(text_layer_prefix(config), text_layers(config))
                || top_layer("vision_model.encoder.layers.", config.vision_config.num_hidden_layers)
        }
    }
}

/// How the text tower names its layers: CLIP's `layers.N`, BERT's `layer.N`.
fn text_layer_prefix(config: &ClipConfig) -> &'static str {
    if config.bert_text.is_some() { "text_model.encoder.layer." } else { "text_model.encoder.layers." }
}

/// The text tower's depth.
fn text_layers(config: &ClipConfig) -> usize {
    config.bert_text.as_ref().map_or(config.text_config.num_hidden_layers, |b| b.num_hidden_layers)
}

/// A CLIP (or Chinese-CLIP) whose weights can be trained.
pub struct TrainableClip {
    config: ClipConfig,
    /// Every weight, under its Hugging Face name; trainable ones are the tensors of `vars`.
    weights: BTreeMap<String, Tensor>,
    vars: BTreeMap<String, Var>,
    device: Device,
}

impl TrainableClip {
    /// Takes the weights from `vb` (f32), making those of `scope` trainable.
    pub fn load(config: &ClipConfig, vb: &VarBuilder, scope: TrainScope) -> CResult<Self> {
        let mut weights = BTreeMap::new();
        let mut vars = BTreeMap::new();
        for (name, shape) in parameter_shapes(config) {
            let t = vb.get(shape.as_slice(), &name)?.to_dtype(DType::F32)?;
            if is_trained(scope, config, &name) {
                let var = Var::from_tensor(&t)?;
                weights.insert(name.clone(), var.as_tensor().clone());
                vars.insert(name, var);
            } else {
                weights.insert(name, t);
            }
        }
        Ok(TrainableClip { config: config.clone(), weights, vars, device: vb.device().clone() })
    }

    /// The config.
    pub fn config(&self) -> &ClipConfig {
        &self.config
    }

    /// The trainable weights by name.
    pub fn vars(&self) -> &BTreeMap<String, Var> {
        &self.vars
    }

    /// Every weight's current value by name (trainable ones as they are now).
    pub fn tensors(&self) -> BTreeMap<String, Tensor> {
        self.weights
            .iter()
            .map(|(name, t)| {
                let current = self.vars.get(name).map_or_else(|| t.clone(), |v| v.as_tensor().clone());
                (name.clone(), current)
            })
            .collect()
    }

    /// The encoder layers `from..to` of the tower under `prefix` (`text_model`, causal; or
    /// `vision_model`).
    fn encoder_layers(&self, x: &Tensor, prefix: &str, from: usize, to: usize) -> CResult<Tensor> {
        let causal = prefix == "text_model";
        let (heads, act, eps) = if causal {
            let t = &self.config.text_config;
            (t.num_attention_heads, t.hidden_act, t.layer_norm_eps)
        } else {
            let v = &self.config.vision_config;
            (v.num_attention_heads, v.hidden_act, v.layer_norm_eps)
        };
        self.pre_norm_layers(
            x,
            &format!("{prefix}.encoder.layers"),
            from..to,
            EncoderSettings { heads, act, eps, causal },
        )
    }

    /// Patch, class and position embeddings of `[b, 3, H, W]` pixels, after `pre_layrnorm`.
    fn vision_embeddings(&self, pixels: &Tensor) -> CResult<Tensor> {
        let v = &self.config.vision_config;
        let (b, p, d) = (pixels.dim(0)?, v.patch_size, v.hidden_size);
        let g = v.image_size / p;
        let patches = crate::models::nn::layers::patches(&pixels.to_dtype(DType::F32)?, g, p)?;
        let kernel = self.w("vision_model.embeddings.patch_embedding.weight")?.reshape((d, v.num_channels * p * p))?;
        let tokens = linear_with(&patches, &kernel, None)?.reshape((b, g * g, d))?;
        let class = self.w("vision_model.embeddings.class_embedding")?.reshape((1, 1, d))?.broadcast_as((b, 1, d))?;
        let x = Tensor::cat(&[class, tokens], 1)?
            .broadcast_add(&self.w("vision_model.embeddings.position_embedding.weight")?.unsqueeze(0)?)?;
        self.layer_norm(&x, "vision_model.pre_layrnorm", v.layer_norm_eps)
    }

    /// From the vision encoder's output: `post_layernorm` of the class token, projected.
    fn vision_head(&self, x: &Tensor) -> CResult<Tensor> {
        let pooled = self.layer_norm(
            &x.i((.., 0, ..))?,
            "vision_model.post_layernorm",
            self.config.vision_config.layer_norm_eps,
        )?;
        self.linear(&pooled, "visual_projection", false)
    }

    /// `get_image_features` for `[b, 3, H, W]` pixels: projected, not normalised.
    pub fn image_features(&self, pixels: &Tensor) -> CResult<Tensor> {
        let layers = self.config.vision_config.num_hidden_layers;
        self.vision_head(&self.encoder_layers(&self.vision_embeddings(pixels)?, "vision_model", 0, layers)?)
    }

    /// `get_text_features` for token sequences (with their start and end tokens), padded
    /// with `pad` on the right; pooled where transformers pools.
    pub fn text_features(&self, batch: &[Vec<u32>], pad: u32) -> CResult<Tensor> {
        self.linear(&self.text_pooled(batch, pad)?, "text_projection", false)
    }

    /// Where transformers pools a sequence: the first end-of-text token, or for legacy configs
    /// (`eos_token_id == 2`) the first position of the largest id.
    fn pool_position(&self, ids: &[u32]) -> usize {
        let t = &self.config.text_config;
        let at = if t.eos_token_id == 2 {
            let max = ids.iter().copied().max().unwrap_or(0);
            ids.iter().position(|&x| x == max)
        } else {
            ids.iter().position(|&x| x == t.eos_token_id)
        };
        at.unwrap_or(0)
    }

    /// Token and position embeddings of the sequences right-padded with `pad` to one length,
    /// `[b, s, d]`, with the pooling position of each.
    fn text_embeddings(&self, batch: &[Vec<u32>], pad: u32) -> CResult<(Tensor, Vec<usize>)> {
        let t = &self.config.text_config;
        let b = batch.len();
        let s = batch.iter().map(Vec::len).max().unwrap_or(1).max(1);
        if s > t.max_position_embeddings {
            candle_core::bail!("{s} tokens exceed the model's context of {}", t.max_position_embeddings);
        }
        let mut flat = Vec::with_capacity(b * s);
        for ids in batch {
            flat.extend_from_slice(ids);
            flat.extend(std::iter::repeat_n(pad, s - ids.len()));
        }
        let ids = Tensor::from_vec(flat, b * s, &self.device)?;
        let d = t.hidden_size;
        let tokens =
            self.w("text_model.embeddings.token_embedding.weight")?.index_select(&ids, 0)?.reshape((b, s, d))?;
        let positions = self.w("text_model.embeddings.position_embedding.weight")?.narrow(0, 0, s)?;
        Ok((tokens.broadcast_add(&positions.unsqueeze(0)?)?, batch.iter().map(|ids| self.pool_position(ids)).collect()))
    }

    /// From the text encoder's output `[b, s, d]`: the states at the pooling positions, after
    /// `final_layer_norm`.
    fn text_head(&self, x: &Tensor, positions: &[usize]) -> CResult<Tensor> {
        let (b, s, d) = x.dims3()?;
        let gather: Vec<u32> = positions.iter().enumerate().map(|(i, p)| (i * s + p) as u32).collect();
        let picked = x.reshape((b * s, d))?.index_select(&Tensor::from_vec(gather, b, &self.device)?, 0)?;
        self.layer_norm(&picked, "text_model.final_layer_norm", self.config.text_config.layer_norm_eps)
    }

    /// The text tower's pooled states, before `text_projection`.
    pub fn text_pooled(&self, batch: &[Vec<u32>], pad: u32) -> CResult<Tensor> {
        if self.config.bert_text.is_some() {
            let x = self.bert_embeddings(batch, pad)?;
            let lengths: Vec<usize> = batch.iter().map(Vec::len).collect();
            let layers = text_layers(&self.config);
            return self.bert_layers(&x, 0, layers, padding_mask(&lengths, &self.device)?.as_ref())?.i((.., 0, ..));
        }
        let (x, positions) = self.text_embeddings(batch, pad)?;
        let layers = self.config.text_config.num_hidden_layers;
        self.text_head(&self.encoder_layers(&x, "text_model", 0, layers)?, &positions)
    }

    /// Chinese-CLIP's text embeddings of sequences right-padded with `pad` to one length: word
    /// + position + token type 0, then the embedding layer norm; `[b, s, d]`.
    fn bert_embeddings(&self, batch: &[Vec<u32>], pad: u32) -> CResult<Tensor> {
        let bert = self.config.bert_text.as_ref().expect("a BERT text tower");
        let b = batch.len();
        let s = batch.iter().map(Vec::len).max().unwrap_or(1).max(1);
        if s > bert.max_position_embeddings {
            candle_core::bail!("{s} tokens exceed the model's context of {}", bert.max_position_embeddings);
        }
        let mut flat = Vec::with_capacity(b * s);
        for ids in batch {
            flat.extend_from_slice(ids);
            flat.extend(std::iter::repeat_n(pad, s - ids.len()));
        }
        let ids = Tensor::from_vec(flat, b * s, &self.device)?;
        let d = bert.hidden_size;
        let e = "text_model.embeddings";
        let words = self.w(&format!("{e}.word_embeddings.weight"))?.index_select(&ids, 0)?.reshape((b, s, d))?;
        let positions = self.w(&format!("{e}.position_embeddings.weight"))?.narrow(0, 0, s)?;
        let types = self.w(&format!("{e}.token_type_embeddings.weight"))?.narrow(0, 0, 1)?;
        let x = words.broadcast_add(&positions.unsqueeze(0)?)?.broadcast_add(&types.unsqueeze(0)?)?;
        self.layer_norm(&x, &format!("{e}.LayerNorm"), bert.layer_norm_eps)
    }

    /// Chinese-CLIP's BERT layers `from..to` (post-norm, bidirectional; `mask` hides padding).
    fn bert_layers(&self, x: &Tensor, from: usize, to: usize, mask: Option<&Tensor>) -> CResult<Tensor> {
        let bert = self.config.bert_text.as_ref().expect("a BERT text tower");
        let (heads, eps) = (bert.num_attention_heads, bert.layer_norm_eps);
        let mut x = x.clone();
        for i in from..to {
            let p = format!("text_model.encoder.layer.{i}");
            let names = ["self.query", "self.key", "self.value", "output.dense"].map(|n| format!("{p}.attention.{n}"));
            let attended = self.attention(&x, names.each_ref().map(String::as_str), heads, false, mask)?;
            let h = self.layer_norm(&(&x + attended)?, &format!("{p}.attention.output.LayerNorm"), eps)?;
            let inner = activation(&self.linear(&h, &format!("{p}.intermediate.dense"), true)?, bert.hidden_act)?;
            let out = self.linear(&inner, &format!("{p}.output.dense"), true)?;
            x = self.layer_norm(&(&h + out)?, &format!("{p}.output.LayerNorm"), eps)?;
        }
        Ok(x)
    }

    /// transformers' `clip_loss` for a batch of matching pairs (see [`clip_loss`]).
    pub fn contrastive_loss(&self, pixels: &Tensor, texts: &[Vec<u32>], pad: u32) -> CResult<Tensor> {
        clip_loss(&self.image_features(pixels)?, &self.text_features(texts, pad)?, &self.w("logit_scale")?)
    }

    /// How many leading encoder layers of each tower (vision, text) no trained weight touches,
    /// embeddings included: their output never changes during training, so it can be computed
    /// once per example ([`TrainableClip::frozen_prefix`]).
    pub fn frozen_layers(&self) -> (usize, usize) {
        let count = |tower: &str, layer_prefix: &str, layers: usize| {
            let embeddings_trained = self.vars.keys().any(|n| {
                n.starts_with(&format!("{tower}.embeddings.")) || n.starts_with(&format!("{tower}.pre_layrnorm."))
            });
            if embeddings_trained {
                return 0;
            }
            (0..layers)
                .find(|i| self.vars.keys().any(|n| n.starts_with(&format!("{layer_prefix}{i}."))))
                .unwrap_or(layers)
        };
        (
            count("vision_model", "vision_model.encoder.layers.", self.config.vision_config.num_hidden_layers),
            count("text_model", text_layer_prefix(&self.config), text_layers(&self.config)),
        )
    }

    /// The frozen part of one example, computed once: the vision encoder's states after its
    /// frozen layers `[1 + grid², d]`, the text encoder's after its frozen layers `[len, d]`
    /// (the sequence unpadded) and the text's pooling position.
    pub fn frozen_prefix(&self, pixels: &Tensor, ids: &[u32]) -> CResult<FrozenPrefix> {
        let (fv, ft) = self.frozen_layers();
        let image = self.encoder_layers(&self.vision_embeddings(&pixels.unsqueeze(0)?)?, "vision_model", 0, fv)?;
        let (text, position) = if self.config.bert_text.is_some() {
            // One unpadded sequence: no mask; BERT pools the first token.
            (self.bert_layers(&self.bert_embeddings(&[ids.to_vec()], 0)?, 0, ft, None)?, 0)
        } else {
            let (x, positions) = self.text_embeddings(&[ids.to_vec()], 0)?;
            (self.encoder_layers(&x, "text_model", 0, ft)?, positions[0])
        };
        Ok(FrozenPrefix { image: image.squeeze(0)?.detach(), text: text.squeeze(0)?.detach(), position })
    }

    /// [`TrainableClip::contrastive_loss`] from frozen prefixes: only the layers after them run.
    /// Equal to the loss from pixels and token ids: the text states are right-padded with zeros,
    /// which the causal mask keeps from every pooled position, as it keeps the pad tokens.
    pub fn contrastive_loss_from(&self, prefixes: &[&FrozenPrefix]) -> CResult<Tensor> {
        let (fv, ft) = self.frozen_layers();
        let images = Tensor::stack(&prefixes.iter().map(|p| p.image.clone()).collect::<Vec<_>>(), 0)?;
        let image = self.vision_head(&self.encoder_layers(
            &images,
            "vision_model",
            fv,
            self.config.vision_config.num_hidden_layers,
        )?)?;
        let s = prefixes.iter().map(|p| p.text.dim(0)).collect::<CResult<Vec<_>>>()?.into_iter().max().unwrap_or(1);
        let texts =
            prefixes.iter().map(|p| p.text.pad_with_zeros(0, 0, s - p.text.dim(0)?)).collect::<CResult<Vec<_>>>()?;
        let pooled = if self.config.bert_text.is_some() {
            // Zero-padded states: the mask keeps the padding from every query.
            let lengths = prefixes.iter().map(|p| p.text.dim(0)).collect::<CResult<Vec<_>>>()?;
            let mask = padding_mask(&lengths, &self.device)?;
            let x = self.bert_layers(&Tensor::stack(&texts, 0)?, ft, text_layers(&self.config), mask.as_ref())?;
            x.i((.., 0, ..))?
        } else {
            let x = self.encoder_layers(
                &Tensor::stack(&texts, 0)?,
                "text_model",
                ft,
                self.config.text_config.num_hidden_layers,
            )?;
            let positions: Vec<usize> = prefixes.iter().map(|p| p.position).collect();
            self.text_head(&x, &positions)?
        };
        let text = self.linear(&pooled, "text_projection", false)?;
        clip_loss(&image, &text, &self.w("logit_scale")?)
    }
}

impl NamedWeights for TrainableClip {
    fn w(&self, name: &str) -> CResult<Tensor> {
        match self.vars.get(name) {
            Some(v) => Ok(v.as_tensor().clone()),
            None => self.weights.get(name).cloned().ok_or_else(|| candle_core::Error::Msg(format!("no weight {name}"))),
        }
    }
}

/// The additive attention mask `[b, 1, 1, s]` (0 for tokens, -∞ for padding) of sequences of
/// `lengths` padded to the longest; `None` when none is padded.
fn padding_mask(lengths: &[usize], device: &Device) -> CResult<Option<Tensor>> {
    let s = lengths.iter().copied().max().unwrap_or(0);
    if lengths.iter().all(|&l| l == s) {
        return Ok(None);
    }
    let mask: Vec<f32> =
        lengths.iter().flat_map(|&l| (0..s).map(move |j| if j < l { 0.0 } else { f32::NEG_INFINITY })).collect();
    Ok(Some(Tensor::from_vec(mask, (lengths.len(), 1, 1, s), device)?))
}

/// The part of an example's forward pass that frozen layers compute, kept for every step.
pub struct FrozenPrefix {
    image: Tensor,
    text: Tensor,
    position: usize,
}

/// transformers' `clip_loss` for matching rows of image and text features (not yet
/// normalised): the mean of the cross-entropies of `logit_scale.exp() · cos` over texts and
/// over images, the diagonal being right.
pub fn clip_loss(image: &Tensor, text: &Tensor, logit_scale: &Tensor) -> CResult<Tensor> {
    let (image, text) = (normalize(image)?, normalize(text)?);
    let logits_per_text = text.matmul(&image.t()?)?.broadcast_mul(&logit_scale.exp()?)?;
    let n = text.dim(0)?;
    let eye = Tensor::eye(n, DType::F32, text.device())?;
    let diagonal_ce = |logits: &Tensor| -> CResult<Tensor> {
        let log_probs = candle_nn::ops::log_softmax(logits, D::Minus1)?;
        ((log_probs * &eye)?.sum_all()? / n as f64)?.neg()
    };
    (diagonal_ce(&logits_per_text)? + diagonal_ce(&logits_per_text.t()?)?)? / 2.0
}

/// PyTorch's `AdamW` (see the module doc), with weight decay only on tensors of two or more
/// dimensions.
pub struct AdamW {
    params: Vec<AdamState>,
    /// Learning rate of the next step (schedules change it).
    pub lr: f64,
    beta1: f64,
    beta2: f64,
    eps: f64,
    weight_decay: f64,
    step: u64,
}

struct AdamState {
    var: Var,
    moments: Moments,
    decay: bool,
}

/// First and second moments: plain vectors updated in place with the weight by one fused pass
/// on the CPU ([`fused::AdamStep`]), tensors elsewhere.
enum Moments {
    Cpu(Vec<f32>, Vec<f32>),
    Tensors(Tensor, Tensor),
}

/// AdamW's settings.
#[derive(Debug, Clone, Copy)]
pub struct AdamWConfig {
    /// Learning rate.
    pub lr: f64,
    /// β₁, β₂.
    pub betas: (f64, f64),
    /// Added to √v̂.
    pub eps: f64,
    /// Decoupled weight decay (on tensors of ≥ 2 dimensions).
    pub weight_decay: f64,
}

impl AdamW {
    /// An optimiser for `vars`.
    pub fn new<'a>(vars: impl IntoIterator<Item = &'a Var>, config: AdamWConfig) -> CResult<Self> {
        let params = vars
            .into_iter()
            .map(|var| {
                let moments = if fused::applies(var.as_tensor()) && var.as_tensor().is_contiguous() {
                    Moments::Cpu(vec![0.0; var.elem_count()], vec![0.0; var.elem_count()])
                } else {
                    Moments::Tensors(var.zeros_like()?, var.zeros_like()?)
                };
                Ok(AdamState { var: var.clone(), moments, decay: var.rank() >= 2 })
            })
            .collect::<CResult<Vec<_>>>()?;
        Ok(AdamW {
            params,
            lr: config.lr,
            beta1: config.betas.0,
            beta2: config.betas.1,
            eps: config.eps,
            weight_decay: config.weight_decay,
            step: 0,
        })
    }

    /// One step from the gradients of `loss`.
    pub fn backward_step(&mut self, loss: &Tensor) -> CResult<()> {
        let grads = loss.backward()?;
        self.step += 1;
        let t = self.step as i32;
        let (bc1, bc2) = (1.0 - self.beta1.powi(t), 1.0 - self.beta2.powi(t));
        for p in &mut self.params {
            let Some(g) = grads.get(p.var.as_tensor()) else { continue };
            let decay = if p.decay { 1.0 - self.lr * self.weight_decay } else { 1.0 };
            match &mut p.moments {
                Moments::Cpu(m, v) => {
                    let step = fused::AdamStep {
                        moments: std::cell::RefCell::new((m, v)),
                        lr: self.lr as f32,
                        betas: (self.beta1 as f32, self.beta2 as f32),
                        eps: self.eps as f32,
                        decay: decay as f32,
                        corrections: (bc1 as f32, bc2.sqrt() as f32),
                    };
                    p.var.as_tensor().inplace_op2(&g.contiguous()?, &step)?;
                }
                Moments::Tensors(m, v) => {
                    let theta = (p.var.as_tensor() * decay)?;
                    *m = ((&*m * self.beta1)? + (g * (1.0 - self.beta1))?)?;
                    *v = ((&*v * self.beta2)? + (g.sqr()? * (1.0 - self.beta2))?)?;
                    let denom = ((v.sqrt()? / bc2.sqrt())? + self.eps)?;
                    let update = (m.div(&denom)? * (self.lr / bc1))?;
                    p.var.set(&(theta - update)?)?;
                }
            }
        }
        Ok(())
    }
}

/// Keeps memory that training frees in the process for the next step instead of handing it
/// back to the system: a step allocates and frees gigabytes of activations, and memory handed
/// back comes back as fresh pages the kernel must zero (about 5% of a step at ViT-B/32,
/// batch 32). glibc only; a no-op elsewhere. Returns whether it took.
pub fn keep_freed_memory() -> bool {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        // SAFETY: mallopt only changes allocator thresholds; called before the large
        // allocations, and glibc serialises it with them.
        unsafe {
            libc::mallopt(libc::M_MMAP_THRESHOLD, 1 << 30) == 1 && libc::mallopt(libc::M_TRIM_THRESHOLD, i32::MAX) == 1
        }
    }
    #[cfg(not(all(target_os = "linux", target_env = "gnu")))]
    false
}

/// The learning rate at `step` (0-based) of `total`: linear warm-up over `warmup` steps, then
/// constant or cosine down to 0 (open_clip's `cosine_lr`).
pub fn scheduled_lr(base: f64, step: usize, total: usize, warmup: usize, cosine: bool) -> f64 {
    if step < warmup {
        return base * (step + 1) as f64 / warmup as f64;
    }
    if !cosine || total <= warmup {
        return base;
    }
    let progress = (step - warmup) as f64 / (total - warmup) as f64;
    0.5 * (1.0 + (std::f64::consts::PI * progress).cos()) * base
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;
    use crate::models::clip::{ClipEmbedder, l2_normalize};

    fn fixture(name: &str) -> String {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures").join(name).to_string_lossy().into_owned()
    }

    fn load(name: &str, scope: TrainScope) -> (ClipEmbedder, TrainableClip) {
        let repo = crate::models::source::ModelRepo::open(&fixture(name)).unwrap();
        let embedder = ClipEmbedder::load_from(&repo, &Device::Cpu).unwrap();
        let vb = crate::models::source::repo_weights(&repo, &Device::Cpu).unwrap();
        let trainable = TrainableClip::load(embedder.config().unwrap(), &vb, scope).unwrap();
        (embedder, trainable)
    }

    fn inputs(embedder: &ClipEmbedder) -> (Tensor, Vec<Vec<u32>>) {
        let side = embedder.config().unwrap().vision_config.image_size;
        let images: Vec<Tensor> = (0..3u32)
            .map(|s| {
                let img = image::RgbImage::from_fn(side as u32 + 13, side as u32, |x, y| {
                    image::Rgb([(x * 7 + s * 50) as u8, (y * 3 + s * 20) as u8, ((x + y) * s) as u8])
                });
                embedder.preprocess(&img).unwrap()
            })
            .collect();
        let texts = ["a photo of a cat", "一只狗", "an astronaut riding a horse on the moon"]
            .iter()
            .map(|t| embedder.tokenize(t).unwrap())
            .collect();
        (Tensor::stack(&images, 0).unwrap(), texts)
    }

    fn max_abs_diff(a: &Tensor, b: &Tensor) -> f32 {
        (a - b).unwrap().abs().unwrap().max_all().unwrap().to_scalar::<f32>().unwrap()
    }

    #[test]
    fn its_forward_equals_the_inference_model() {
        for name in ["clip-tiny-p32", "clip-tiny-p16", "chinese-clip-tiny-p16", "chinese-clip-tiny-p32"] {
            let (embedder, trainable) = load(name, TrainScope::All);
            let (pixels, texts) = inputs(&embedder);
            let pad = embedder.tokenizer_pad_id();
            let fast_image = l2_normalize(&embedder.model().unwrap().image_features(&pixels).unwrap()).unwrap();
            let slow_image = normalize(&trainable.image_features(&pixels).unwrap()).unwrap();
            let fast_text =
                l2_normalize(&embedder.model().unwrap().text_features(&texts, pad, &Device::Cpu).unwrap()).unwrap();
            let slow_text = normalize(&trainable.text_features(&texts, pad).unwrap()).unwrap();
            let (di, dt) = (max_abs_diff(&fast_image, &slow_image), max_abs_diff(&fast_text, &slow_text));
            assert!(di < 1e-5 && dt < 1e-5, "{name}: image {di}, text {dt}");
            let scale = trainable.w("logit_scale").unwrap().exp().unwrap().to_scalar::<f32>().unwrap();
            assert!((scale - embedder.logit_scale()).abs() < 1e-4 * scale);
        }
    }

    #[test]
    fn every_trainable_tensor_receives_a_gradient() {
        for name in ["clip-tiny-p32", "clip-tiny-p16", "chinese-clip-tiny-p16", "chinese-clip-tiny-p32"] {
            let (embedder, trainable) = load(name, TrainScope::All);
            let (pixels, texts) = inputs(&embedder);
            let loss = trainable.contrastive_loss(&pixels, &texts, embedder.tokenizer_pad_id()).unwrap();
            let grads = loss.backward().unwrap();
            let norm_of = |param: &str| -> f32 {
                let var = &trainable.vars()[param];
                let g = grads.get(var.as_tensor()).unwrap_or_else(|| panic!("{name}: no gradient for {param}"));
                g.sqr().unwrap().sum_all().unwrap().to_scalar::<f32>().unwrap().sqrt()
            };
            for param in trainable.vars().keys() {
                let norm = norm_of(param);
                // A key bias adds the same amount to every score of a query: softmax ignores
                // it, so its true gradient is 0 (what is left is rounding).
                let key_bias = param.strip_suffix("k_proj.bias").map(|l| format!("{l}k_proj.weight")).or_else(|| {
                    param.strip_suffix("attention.self.key.bias").map(|l| format!("{l}attention.self.key.weight"))
                });
                if let Some(key_weight) = key_bias {
                    let weight = norm_of(&key_weight);
                    assert!(norm < 1e-3 * weight, "{name}: {param} {norm} beside the weight's {weight}");
                } else {
                    assert!(norm > 0.0, "{name}: zero gradient for {param}");
                }
            }
        }
    }

    #[test]
    fn the_loss_from_frozen_prefixes_equals_the_loss_from_inputs() {
        for (name, scope, frozen) in [
            ("clip-tiny-p32", TrainScope::Last(1), (1, 1)),
            ("clip-tiny-p16", TrainScope::Projection, (3, 3)),
            ("clip-tiny-p32", TrainScope::All, (0, 0)),
            ("chinese-clip-tiny-p16", TrainScope::Last(1), (1, 1)),
            ("chinese-clip-tiny-p32", TrainScope::Projection, (3, 3)),
            ("chinese-clip-tiny-p32", TrainScope::All, (0, 0)),
        ] {
            let (embedder, trainable) = load(name, scope);
            assert_eq!(trainable.frozen_layers(), frozen, "{name} {scope:?}");
            let (pixels, texts) = inputs(&embedder);
            let pad = embedder.tokenizer_pad_id();
            let direct = trainable.contrastive_loss(&pixels, &texts, pad).unwrap().to_scalar::<f32>().unwrap();
            let prefixes: Vec<FrozenPrefix> = texts
                .iter()
                .enumerate()
                .map(|(i, t)| trainable.frozen_prefix(&pixels.get(i).unwrap(), t).unwrap())
                .collect();
            let cached = trainable
                .contrastive_loss_from(&prefixes.iter().collect::<Vec<_>>())
                .unwrap()
                .to_scalar::<f32>()
                .unwrap();
            assert!((direct - cached).abs() <= 1e-5 * direct.abs().max(1.0), "{name}: {direct} vs {cached}");
        }
    }

    #[test]
    fn scopes_choose_the_trained_weights() {
        let (_, last) = load("clip-tiny-p32", TrainScope::Last(1));
        let names: Vec<&String> = last.vars().keys().collect();
        assert!(names.iter().any(|n| n.starts_with("text_model.encoder.layers.1.")));
        assert!(!names.iter().any(|n| n.starts_with("text_model.encoder.layers.0.")));
        assert!(names.iter().any(|n| n.as_str() == "vision_model.post_layernorm.weight"));
        assert!(names.iter().any(|n| n.as_str() == "logit_scale"));
        assert!(!names.iter().any(|n| n.contains("embeddings")));
        let (_, head) = load("clip-tiny-p32", TrainScope::Projection);
        assert_eq!(head.vars().len(), 3);
        assert_eq!("last:2".parse::<TrainScope>(), Ok(TrainScope::Last(2)));
        assert!("last:0".parse::<TrainScope>().is_err() && "some".parse::<TrainScope>().is_err());
    }

    #[test]
    fn schedules_warm_up_then_decay() {
        assert_eq!(scheduled_lr(1.0, 0, 10, 2, true), 0.5);
        assert_eq!(scheduled_lr(1.0, 1, 10, 2, true), 1.0);
        assert!((scheduled_lr(1.0, 6, 10, 2, true) - 0.5).abs() < 1e-12);
        assert_eq!(scheduled_lr(1.0, 9, 10, 0, false), 1.0);
    }
}
