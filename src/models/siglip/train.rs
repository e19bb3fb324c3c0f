//! A trainable SigLIP beside the inference one ([`super::SiglipModel`]), for `clipdex finetune`.
//!
//! Like the trainable CLIP (`models::clip::train`, whose layers it shares through
//! [`NamedWeights`]), it keeps every weight under its Hugging Face name and uses only
//! differentiable ops; trainable weights are [`Var`]s, frozen ones plain tensors. The loss is
//! transformers' `SiglipModel` loss ([`sigmoid_loss`]).
//!
//! What each `--train` scope changes, SigLIP having no projections:
//! - `projection`: the heads, that is the image tower's attention-pooling head (`vision_model.head`:
//!   probe, attention, layer norm and MLP, the part that turns patch states into the embedding)
//!   and the text tower's `head` (its linear map to the embedding), with `logit_scale` and
//!   `logit_bias`;
//! - `last:N`: those, the top `N` encoder layers of each tower and the final layer norms
//!   (`vision_model.post_layernorm`, `text_model.final_layer_norm`);
//! - `all`: every weight;
//! - `adapter`: the text `head`, `logit_scale` and `logit_bias`, trained on the images' stored
//!   vectors: the image tower is not changed at all (a map on the image side cannot be folded
//!   into the pooling head, whose residual MLP is not linear), so a library indexed with the base
//!   keeps its vectors.

use std::collections::BTreeMap;

use candle_core::{D, DType, Device, Tensor, Var};
use candle_nn::VarBuilder;

use super::config::SiglipConfig;
use crate::models::nn::trainable::{
    EncoderSettings, NamedWeights, TrainScope, activation, encoder_layer_shapes, linear_with, normalize,
};

type CResult<T> = candle_core::Result<T>;

/// The names and shapes of every weight of a `SiglipModel`, in a fixed order.
pub fn parameter_shapes(config: &SiglipConfig) -> Vec<(String, Vec<usize>)> {
    let (t, v) = (&config.text_config, &config.vision_config);
    let mut out: Vec<(String, Vec<usize>)> = Vec::new();
    let mut add = |name: String, shape: &[usize]| out.push((name, shape.to_vec()));
    let (td, vd) = (t.hidden_size, v.hidden_size);
    add("text_model.embeddings.token_embedding.weight".into(), &[t.vocab_size, td]);
    add("text_model.embeddings.position_embedding.weight".into(), &[t.max_position_embeddings, td]);
    encoder_layer_shapes(&mut add, "text_model", t.num_hidden_layers, td, t.intermediate_size);
    add("text_model.final_layer_norm.weight".into(), &[td]);
    add("text_model.final_layer_norm.bias".into(), &[td]);
    add("text_model.head.weight".into(), &[t.embedding_width(), td]);
    add("text_model.head.bias".into(), &[t.embedding_width()]);
    let grid = v.image_size / v.patch_size;
    let e = "vision_model.embeddings";
    add(format!("{e}.patch_embedding.weight"), &[vd, v.num_channels, v.patch_size, v.patch_size]);
    add(format!("{e}.patch_embedding.bias"), &[vd]);
    add(format!("{e}.position_embedding.weight"), &[grid * grid, vd]);
    encoder_layer_shapes(&mut add, "vision_model", v.num_hidden_layers, vd, v.intermediate_size);
    add("vision_model.post_layernorm.weight".into(), &[vd]);
    add("vision_model.post_layernorm.bias".into(), &[vd]);
    let h = "vision_model.head";
    add(format!("{h}.probe"), &[1, 1, vd]);
    add(format!("{h}.attention.in_proj_weight"), &[3 * vd, vd]);
    add(format!("{h}.attention.in_proj_bias"), &[3 * vd]);
    add(format!("{h}.attention.out_proj.weight"), &[vd, vd]);
    add(format!("{h}.attention.out_proj.bias"), &[vd]);
    add(format!("{h}.layernorm.weight"), &[vd]);
    add(format!("{h}.layernorm.bias"), &[vd]);
    add(format!("{h}.mlp.fc1.weight"), &[v.intermediate_size, vd]);
    add(format!("{h}.mlp.fc1.bias"), &[v.intermediate_size]);
    add(format!("{h}.mlp.fc2.weight"), &[vd, v.intermediate_size]);
    add(format!("{h}.mlp.fc2.bias"), &[vd]);
    add("logit_scale".into(), &[1]);
    add("logit_bias".into(), &[1]);
    out
}

/// Whether `scope` trains the weight `name` (see the module doc).
fn is_trained(scope: TrainScope, config: &SiglipConfig, name: &str) -> bool {
    let scalars = name == "logit_scale" || name == "logit_bias";
    let text_head = name.starts_with("text_model.head.");
    let heads = scalars || text_head || name.starts_with("vision_model.head.");
    match scope {
        TrainScope::All => true,
        TrainScope::Projection => heads,
        TrainScope::Adapter => scalars || text_head,
        TrainScope::Last(n) => {
            let top_layer = |prefix: &str, layers: usize| {
                name.strip_prefix(prefix)
                    .and_then(|rest| rest.split('.').next())
                    .and_then(|i| i.parse::<usize>().ok())
                    .is_some_and(|i| i + n >= layers)
            };
            heads
                || name.starts_with("text_model.final_layer_norm.")
                || name.starts_with("vision_model.post_layernorm.")
                || top_layer("text_model.encoder.layers.", config.text_config.num_hidden_layers)
                || top_layer("vision_model.encoder.layers.", config.vision_config.num_hidden_layers)
        }
    }
}

/// A SigLIP whose weights can be trained.
pub struct TrainableSiglip {
    config: SiglipConfig,
    /// Every weight, under its Hugging Face name; trainable ones are the tensors of `vars`.
    weights: BTreeMap<String, Tensor>,
    vars: BTreeMap<String, Var>,
    device: Device,
}

impl NamedWeights for TrainableSiglip {
    fn w(&self, name: &str) -> CResult<Tensor> {
        match self.vars.get(name) {
            Some(v) => Ok(v.as_tensor().clone()),
            None => self.weights.get(name).cloned().ok_or_else(|| candle_core::Error::Msg(format!("no weight {name}"))),
        }
    }
}

impl TrainableSiglip {
    /// Takes the weights from `vb` (f32), making those of `scope` trainable.
    pub fn load(config: &SiglipConfig, vb: &VarBuilder, scope: TrainScope) -> CResult<Self> {
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
        Ok(TrainableSiglip { config: config.clone(), weights, vars, device: vb.device().clone() })
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

    fn settings(&self, vision: bool) -> EncoderSettings {
        let (heads, act, eps) = if vision {
            let v = &self.config.vision_config;
            (v.num_attention_heads, v.hidden_act, v.layer_norm_eps)
        } else {
            let t = &self.config.text_config;
            (t.num_attention_heads, t.hidden_act, t.layer_norm_eps)
        };
        EncoderSettings { heads, act, eps, causal: false }
    }

    /// `get_image_features` for `[b, 3, H, W]` pixels: the pooling head's output, not normalised.
    pub fn image_features(&self, pixels: &Tensor) -> CResult<Tensor> {
        self.vision_from(&self.vision_embeddings(pixels)?, 0)
    }

    /// Patch and position embeddings of `[b, 3, H, W]` pixels, `[b, grid², d]`.
    fn vision_embeddings(&self, pixels: &Tensor) -> CResult<Tensor> {
        let v = &self.config.vision_config;
        let (b, p, d) = (pixels.dim(0)?, v.patch_size, v.hidden_size);
        let g = v.image_size / p;
        let patches = crate::models::nn::layers::patches(&pixels.to_dtype(DType::F32)?, g, p)?;
        let e = "vision_model.embeddings";
        let kernel = self.w(&format!("{e}.patch_embedding.weight"))?.reshape((d, v.num_channels * p * p))?;
        let bias = self.w(&format!("{e}.patch_embedding.bias"))?;
        let tokens = linear_with(&patches, &kernel, Some(&bias))?.reshape((b, g * g, d))?;
        tokens.broadcast_add(&self.w(&format!("{e}.position_embedding.weight"))?.unsqueeze(0)?)
    }

    /// The image tower from the input of its encoder layer `from` to the pooled embedding.
    fn vision_from(&self, x: &Tensor, from: usize) -> CResult<Tensor> {
        let v = &self.config.vision_config;
        let x =
            self.pre_norm_layers(x, "vision_model.encoder.layers", from..v.num_hidden_layers, self.settings(true))?;
        let x = self.layer_norm(&x, "vision_model.post_layernorm", v.layer_norm_eps)?;
        self.pooling_head(&x)
    }

    /// `SiglipMultiheadAttentionPoolingHead`: the probe attends over the `[b, n, d]` states
    /// (torch's `nn.MultiheadAttention`, one query), then a residual MLP after a layer norm.
    fn pooling_head(&self, hidden: &Tensor) -> CResult<Tensor> {
        let v = &self.config.vision_config;
        let (b, n, d) = hidden.dims3()?;
        let (h, hd) = (v.num_attention_heads, d / v.num_attention_heads);
        let p = "vision_model.head";
        let w = self.w(&format!("{p}.attention.in_proj_weight"))?;
        let bias = self.w(&format!("{p}.attention.in_proj_bias"))?;
        let probe = self.w(&format!("{p}.probe"))?.reshape((1, d))?;
        let query = (linear_with(&probe, &w.narrow(0, 0, d)?, Some(&bias.narrow(0, 0, d)?))? * (hd as f64).powf(-0.5))?;
        let query = query.reshape((1, h, 1, hd))?.broadcast_as((b, h, 1, hd))?.contiguous()?;
        let kv = linear_with(hidden, &w.narrow(0, d, 2 * d)?, Some(&bias.narrow(0, d, 2 * d)?))?;
        let split = |t: Tensor| -> CResult<Tensor> { t.reshape((b, n, h, hd))?.transpose(1, 2)?.contiguous() };
        let keys = split(kv.narrow(2, 0, d)?)?;
        let values = split(kv.narrow(2, d, d)?)?;
        let scores = query.matmul(&keys.t()?.contiguous()?)?; // [b, h, 1, n]
        // Softmax over the patches; the shift by the row maximum carries no gradient.
        let shifted = scores.broadcast_sub(&scores.max_keepdim(D::Minus1)?.detach())?.exp()?;
        let probs = shifted.broadcast_div(&shifted.sum_keepdim(D::Minus1)?)?;
        let attended = probs.matmul(&values)?.reshape((b, d))?; // [b, h, 1, hd]: heads in order
        let x = self.linear(&attended, &format!("{p}.attention.out_proj"), true)?;
        let y = self.layer_norm(&x, &format!("{p}.layernorm"), v.layer_norm_eps)?;
        let y = activation(&self.linear(&y, &format!("{p}.mlp.fc1"), true)?, v.hidden_act)?;
        &x + self.linear(&y, &format!("{p}.mlp.fc2"), true)?
    }

    /// The text tower's state at the last position after `final_layer_norm`, before its `head`,
    /// for texts padded to one length (the tokenizer pads to the context; no mask, as
    /// `get_text_features` is called with ids only).
    pub fn text_pooled(&self, batch: &[Vec<u32>]) -> CResult<Tensor> {
        self.text_from(&self.text_embeddings(batch)?, 0)
    }

    /// Token and position embeddings of texts padded to one length, `[b, s, d]`.
    fn text_embeddings(&self, batch: &[Vec<u32>]) -> CResult<Tensor> {
        let t = &self.config.text_config;
        let b = batch.len();
        let s = batch.first().map(Vec::len).unwrap_or(0);
        if s == 0 || s > t.max_position_embeddings || batch.iter().any(|ids| ids.len() != s) {
            candle_core::bail!(
                "SigLIP texts must all be padded to one length of at most {}",
                t.max_position_embeddings
            );
        }
        let ids = Tensor::from_vec(batch.concat(), b * s, &self.device)?;
        let d = t.hidden_size;
        let tokens =
            self.w("text_model.embeddings.token_embedding.weight")?.index_select(&ids, 0)?.reshape((b, s, d))?;
        let positions = self.w("text_model.embeddings.position_embedding.weight")?.narrow(0, 0, s)?;
        tokens.broadcast_add(&positions.unsqueeze(0)?)
    }

    /// The text tower from the input of its encoder layer `from` to the pooled state.
    fn text_from(&self, x: &Tensor, from: usize) -> CResult<Tensor> {
        let t = &self.config.text_config;
        let x =
            self.pre_norm_layers(x, "text_model.encoder.layers", from..t.num_hidden_layers, self.settings(false))?;
        let s = x.dim(1)?;
        let last = x.narrow(1, s - 1, 1)?.squeeze(1)?;
        self.layer_norm(&last, "text_model.final_layer_norm", t.layer_norm_eps)
    }

    /// `get_text_features` for padded token ids: `[b, embedding width]`, not normalised.
    pub fn text_features(&self, batch: &[Vec<u32>]) -> CResult<Tensor> {
        self.linear(&self.text_pooled(batch)?, "text_model.head", true)
    }

    /// How many leading encoder layers of each tower (vision, text) no trained weight touches,
    /// embeddings included: their output never changes during training, so it is computed
    /// once per example ([`TrainableSiglip::frozen_prefix`]).
    pub fn frozen_layers(&self) -> (usize, usize) {
        let count = |tower: &str, layers: usize| {
            if self.vars.keys().any(|n| n.starts_with(&format!("{tower}.embeddings."))) {
                return 0;
            }
            let prefix = format!("{tower}.encoder.layers.");
            (0..layers).find(|i| self.vars.keys().any(|n| n.starts_with(&format!("{prefix}{i}.")))).unwrap_or(layers)
        };
        (
            count("vision_model", self.config.vision_config.num_hidden_layers),
            count("text_model", self.config.text_config.num_hidden_layers),
        )
    }

    /// The frozen part of one example, computed once: each tower's states after its frozen
    /// layers (`[grid², d]` and `[context, d]`).
    pub fn frozen_prefix(&self, pixels: &Tensor, ids: &[u32]) -> CResult<FrozenPrefix> {
        let (fv, ft) = self.frozen_layers();
        let image = self.pre_norm_layers(
            &self.vision_embeddings(&pixels.unsqueeze(0)?)?,
            "vision_model.encoder.layers",
            0..fv,
            self.settings(true),
        )?;
        let text = self.pre_norm_layers(
            &self.text_embeddings(&[ids.to_vec()])?,
            "text_model.encoder.layers",
            0..ft,
            self.settings(false),
        )?;
        Ok(FrozenPrefix { image: image.squeeze(0)?.detach(), text: text.squeeze(0)?.detach() })
    }

    /// [`TrainableSiglip::loss`] from frozen prefixes: only the layers after them run.
    pub fn loss_from(&self, prefixes: &[&FrozenPrefix]) -> CResult<Tensor> {
        let (fv, ft) = self.frozen_layers();
        let images = Tensor::stack(&prefixes.iter().map(|p| p.image.clone()).collect::<Vec<_>>(), 0)?;
        let texts = Tensor::stack(&prefixes.iter().map(|p| p.text.clone()).collect::<Vec<_>>(), 0)?;
        sigmoid_loss(
            &self.vision_from(&images, fv)?,
            &self.linear(&self.text_from(&texts, ft)?, "text_model.head", true)?,
            &self.w("logit_scale")?,
            &self.w("logit_bias")?,
        )
    }

    /// The loss of a batch of matching pairs ([`sigmoid_loss`]).
    pub fn loss(&self, pixels: &Tensor, texts: &[Vec<u32>]) -> CResult<Tensor> {
        sigmoid_loss(
            &self.image_features(pixels)?,
            &self.text_features(texts)?,
            &self.w("logit_scale")?,
            &self.w("logit_bias")?,
        )
    }
}

/// What the frozen layers of a [`TrainableSiglip`] compute for one example, kept for every step.
pub struct FrozenPrefix {
    image: Tensor,
    text: Tensor,
}

/// transformers' `SiglipModel` loss for matching rows of image and text features (not yet
/// normalised): with `logits = exp(logit_scale) · cos(text, image) + logit_bias` and labels +1
/// on the diagonal and −1 elsewhere, the sum over each text's row of `−log σ(label · logit)`,
/// averaged over the texts.
pub fn sigmoid_loss(image: &Tensor, text: &Tensor, logit_scale: &Tensor, logit_bias: &Tensor) -> CResult<Tensor> {
    let (image, text) = (normalize(image)?, normalize(text)?);
    let n = text.dim(0)?;
    let logits = text
        .matmul(&image.t()?)?
        .broadcast_mul(&logit_scale.reshape(())?.exp()?)?
        .broadcast_add(&logit_bias.reshape(())?)?;
    let signs = ((Tensor::eye(n, DType::F32, text.device())? * 2.0)? - 1.0)?;
    // −log σ(z) = softplus(−z) = relu(−z) + log(1 + e^(−|z|)), with −|z| = z − 2·relu(z):
    // stable for any z, and built from ops that all carry gradients.
    let z = (logits * signs)?;
    let neg = z.neg()?;
    let softplus = (neg.relu()? + ((&z - (z.relu()? * 2.0)?)?.exp()? + 1.0)?.log()?)?;
    softplus.sum_all()? / n as f64
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;
    use crate::models::nn::l2_normalize;
    use crate::models::preprocess::ImageProcessor;
    use crate::models::siglip::SiglipParts;

    /// The inference model beside the trainable one (the tests compare them).
    struct Reference {
        parts: SiglipParts,
        processor: ImageProcessor,
    }

    impl Reference {
        fn siglip_config(&self) -> Option<&SiglipConfig> {
            Some(&self.parts.config)
        }

        fn preprocess(&self, image: &image::RgbImage) -> Option<Tensor> {
            self.processor.preprocess(image, &Device::Cpu).ok()
        }

        fn tokenize(&self, text: &str) -> Option<Vec<u32>> {
            self.parts.tokenizer.encode(text).ok()
        }
    }

    fn load(name: &str, scope: TrainScope) -> (Reference, TrainableSiglip) {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures").join(name);
        let repo = crate::models::source::ModelRepo::open(&dir.to_string_lossy()).unwrap();
        let text = std::fs::read_to_string(dir.join("config.json")).unwrap();
        let vb = crate::models::source::repo_weights(&repo, &Device::Cpu).unwrap();
        let (parts, processor) = SiglipParts::load(&repo, &text, vb.clone()).unwrap();
        let trainable = TrainableSiglip::load(&parts.config, &vb, scope).unwrap();
        (Reference { parts, processor }, trainable)
    }

    fn inputs(embedder: &Reference, side: usize) -> (Tensor, Vec<Vec<u32>>) {
        let images: Vec<Tensor> = (0..3u32)
            .map(|s| {
                let img = image::RgbImage::from_fn(side as u32 + 13, side as u32, |x, y| {
                    image::Rgb([(x * 7 + s * 50) as u8, (y * 3 + s * 20) as u8, ((x + y) * s) as u8])
                });
                embedder.preprocess(&img).unwrap()
            })
            .collect();
        let texts = ["a photo of a cat", "a dog", "an astronaut riding a horse on the moon"]
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
        for name in ["siglip-tiny-p16", "siglip-tiny-p10"] {
            let (embedder, trainable) = load(name, TrainScope::All);
            let side = embedder.siglip_config().unwrap().vision_config.image_size;
            let (pixels, texts) = inputs(&embedder, side);
            let model = &embedder.parts.model;
            let fast_image = l2_normalize(&model.image_features(&pixels).unwrap()).unwrap();
            let slow_image = normalize(&trainable.image_features(&pixels).unwrap()).unwrap();
            let fast_text = l2_normalize(&model.text_features(&texts, &Device::Cpu).unwrap()).unwrap();
            let slow_text = l2_normalize(&trainable.text_features(&texts).unwrap()).unwrap();
            let (di, dt) = (max_abs_diff(&fast_image, &slow_image), max_abs_diff(&fast_text, &slow_text));
            assert!(di < 1e-5 && dt < 1e-5, "{name}: image {di}, text {dt}");
        }
    }

    #[test]
    fn the_loss_is_transformers_sigmoid_loss() {
        // Two pairs, 2-d features: cosines 1 on the diagonal, 0 off it; scale e^0 = 1, bias −1:
        // logits [[0, −1], [−1, 0]], loss = (−log σ(0) − log σ(1)) · 2 / 2.
        let image = Tensor::new(&[[2.0f32, 0.0], [0.0, 3.0]], &Device::Cpu).unwrap();
        let text = Tensor::new(&[[1.0f32, 0.0], [0.0, 0.5]], &Device::Cpu).unwrap();
        let scale = Tensor::new(&[0.0f32], &Device::Cpu).unwrap();
        let bias = Tensor::new(&[-1.0f32], &Device::Cpu).unwrap();
        let loss = sigmoid_loss(&image, &text, &scale, &bias).unwrap().to_scalar::<f32>().unwrap();
        let sigma = |z: f64| 1.0 / (1.0 + (-z).exp());
        let want = -(sigma(0.0).ln() + sigma(1.0).ln());
        assert!((f64::from(loss) - want).abs() < 1e-6, "{loss} vs {want}");
        // Large logits stay finite.
        let big = Tensor::new(&[10.0f32], &Device::Cpu).unwrap();
        let loss = sigmoid_loss(&image, &text, &big, &bias).unwrap().to_scalar::<f32>().unwrap();
        assert!(loss.is_finite() && loss > 0.0);
    }

    #[test]
    fn every_trainable_tensor_receives_a_gradient() {
        for name in ["siglip-tiny-p16", "siglip-tiny-p10"] {
            let (embedder, trainable) = load(name, TrainScope::All);
            let side = embedder.siglip_config().unwrap().vision_config.image_size;
            let (pixels, texts) = inputs(&embedder, side);
            let grads = trainable.loss(&pixels, &texts).unwrap().backward().unwrap();
            let norm_of = |param: &str| -> f32 {
                let g = grads
                    .get(trainable.vars()[param].as_tensor())
                    .unwrap_or_else(|| panic!("{name}: no gradient for {param}"));
                g.sqr().unwrap().sum_all().unwrap().to_scalar::<f32>().unwrap().sqrt()
            };
            for param in trainable.vars().keys() {
                let norm = norm_of(param);
                // A key bias adds the same amount to every score of a query: softmax ignores it.
                if let Some(layer) = param.strip_suffix("k_proj.bias") {
                    let weight = norm_of(&format!("{layer}k_proj.weight"));
                    assert!(norm < 1e-3 * weight, "{name}: {param} {norm} beside the weight's {weight}");
                } else {
                    assert!(norm > 0.0, "{name}: zero gradient for {param}");
                }
            }
        }
    }

    #[test]
    fn the_loss_from_frozen_prefixes_equals_the_loss_from_inputs() {
        for (scope, frozen) in
            [(TrainScope::Last(1), (1, 1)), (TrainScope::Projection, (2, 2)), (TrainScope::All, (0, 0))]
        {
            let (embedder, trainable) = load("siglip-tiny-p16", scope);
            assert_eq!(trainable.frozen_layers(), frozen, "{scope:?}");
            let (pixels, texts) = inputs(&embedder, 64);
            let direct = trainable.loss(&pixels, &texts).unwrap().to_scalar::<f32>().unwrap();
            let prefixes: Vec<FrozenPrefix> = texts
                .iter()
                .enumerate()
                .map(|(i, t)| trainable.frozen_prefix(&pixels.get(i).unwrap(), t).unwrap())
                .collect();
            let cached = trainable.loss_from(&prefixes.iter().collect::<Vec<_>>()).unwrap().to_scalar::<f32>().unwrap();
            assert!((direct - cached).abs() <= 1e-5 * direct.abs().max(1.0), "{scope:?}: {direct} vs {cached}");
        }
    }

    #[test]
    fn scopes_choose_the_trained_weights() {
        let (_, head) = load("siglip-tiny-p16", TrainScope::Projection);
        let names: Vec<&String> = head.vars().keys().collect();
        assert!(names.iter().all(|n| n.contains(".head.") || n.starts_with("logit_")), "{names:?}");
        assert!(names.iter().any(|n| n.as_str() == "vision_model.head.probe"));
        assert!(names.iter().any(|n| n.as_str() == "text_model.head.weight"));
        let (_, last) = load("siglip-tiny-p16", TrainScope::Last(1));
        let names: Vec<&String> = last.vars().keys().collect();
        assert!(names.iter().any(|n| n.starts_with("text_model.encoder.layers.1.")));
        assert!(!names.iter().any(|n| n.starts_with("vision_model.encoder.layers.0.")));
        assert!(names.iter().any(|n| n.as_str() == "vision_model.post_layernorm.weight"));
        assert!(!names.iter().any(|n| n.contains("embeddings")));
        let (_, adapter) = load("siglip-tiny-p16", TrainScope::Adapter);
        let names: Vec<&str> = adapter.vars().keys().map(String::as_str).collect();
        assert_eq!(names, ["logit_bias", "logit_scale", "text_model.head.bias", "text_model.head.weight"]);
    }
}
