//! BLIP (issue 6, in progress): so far its image encoder, `BlipVisionModel`, which captioning,
//! visual question answering and image–text matching all start from. Weight names mirror
//! transformers' through `vb.pp(..)`; the text side comes next.
//!
//! The ViT differs from CLIP's in small ways that matter for parity: the patch convolution
//! has a bias, there is no layer norm before the encoder, attention projections are one fused
//! `qkv` linear plus `projection`, and the final layer norm applies to every token.

use candle_core::{Module, Tensor};
use candle_nn::{LayerNorm, VarBuilder};
use image::RgbImage;
use serde::Deserialize;

use crate::error::{Error, Result, first_line};
use crate::models::clip::kernels::Dense;
use crate::models::clip::model::{Mlp, SelfAttention, dense, layer_norm, patches};
use crate::models::clip::{HiddenAct, repo_weights};
use crate::models::preprocess::{ImageProcessor, OPENAI_CLIP_MEAN, OPENAI_CLIP_STD, Resample, ResizeTo};
use crate::models::source::ModelRepo;

type CResult<T> = candle_core::Result<T>;

/// The captioning model used when none is named.
pub const DEFAULT_CAPTION_MODEL: &str = "Salesforce/blip-image-captioning-base";

fn default_eps() -> f64 {
    1e-5
}

/// `vision_config` of a BLIP checkpoint.
#[derive(Debug, Clone, Deserialize)]
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
    #[serde(default = "default_eps")]
    pub layer_norm_eps: f64,
}

fn default_text_eps() -> f64 {
    1e-12
}
fn default_bos() -> u32 {
    30522
}
fn default_sep() -> u32 {
    102
}

/// `text_config` of a BLIP checkpoint (a BERT with cross-attention to the image).
#[derive(Debug, Clone, Deserialize)]
pub struct BlipTextConfig {
    /// Vocabulary size (BERT's 30,522 plus `[DEC]` and `[ENC]`).
    pub vocab_size: usize,
    /// Token width.
    pub hidden_size: usize,
    /// Width of the image states attended to.
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
    #[serde(default = "default_text_eps")]
    pub layer_norm_eps: f64,
    /// `[DEC]`, the first token of every caption.
    #[serde(default = "default_bos")]
    pub bos_token_id: u32,
    /// `[SEP]`, which ends a caption.
    #[serde(default = "default_sep")]
    pub sep_token_id: u32,
}

/// The parts of a BLIP `config.json` read so far.
#[derive(Debug, Clone, Deserialize)]
pub struct BlipConfig {
    /// Must be `blip`.
    pub model_type: Option<String>,
    /// The image encoder.
    pub vision_config: BlipVisionConfig,
    /// The text side.
    pub text_config: Option<BlipTextConfig>,
}

impl BlipConfig {
    /// `Salesforce/blip-image-captioning-base`'s shapes: ViT-B/16 at 384 px, a 12-layer
    /// BERT-base decoder.
    pub fn captioning_base() -> Self {
        BlipConfig {
            model_type: Some("blip".into()),
            vision_config: BlipVisionConfig {
                hidden_size: 768,
                intermediate_size: 3072,
                num_hidden_layers: 12,
                num_attention_heads: 12,
                image_size: 384,
                patch_size: 16,
                hidden_act: HiddenAct::Gelu,
                layer_norm_eps: 1e-5,
            },
            text_config: Some(BlipTextConfig {
                vocab_size: 30524,
                hidden_size: 768,
                encoder_hidden_size: 768,
                intermediate_size: 3072,
                num_hidden_layers: 12,
                num_attention_heads: 12,
                max_position_embeddings: 512,
                hidden_act: HiddenAct::Gelu,
                layer_norm_eps: 1e-12,
                bos_token_id: 30522,
                sep_token_id: 102,
            }),
        }
    }
}

/// BERT attention with its output projection and post-norm: self-attention (causal, for the
/// decoder) or cross-attention to the image states.
struct BertAttention {
    query: Dense,
    key: Dense,
    value: Dense,
    out: Dense,
    ln: LayerNorm,
    heads: usize,
}

impl BertAttention {
    fn load(dim: usize, kv_dim: usize, heads: usize, eps: f64, vb: VarBuilder) -> CResult<Self> {
        let sv = vb.pp("self");
        Ok(BertAttention {
            query: dense(dim, dim, sv.pp("query"))?,
            key: dense(kv_dim, dim, sv.pp("key"))?,
            value: dense(kv_dim, dim, sv.pp("value"))?,
            out: dense(dim, dim, vb.pp("output").pp("dense"))?,
            ln: layer_norm(dim, eps, vb.pp("output").pp("LayerNorm"))?,
            heads,
        })
    }

    /// Keys and values of `source` `[b, t, e]`, split into heads: `[b, heads, t, hd]` each.
    fn keys_values(&self, source: &Tensor) -> CResult<(Tensor, Tensor)> {
        let (b, t, _) = source.dims3()?;
        let hd = self.out.out_dim() / self.heads;
        let split = |x: Tensor| x.reshape((b, t, self.heads, hd))?.transpose(1, 2)?.contiguous();
        Ok((split(self.key.forward(source, None)?)?, split(self.value.forward(source, None)?)?))
    }

    /// `LN(out(attention(xs → source)) + xs)`.
    fn forward(&self, xs: &Tensor, source: &Tensor, causal: bool) -> CResult<Tensor> {
        self.forward_kv(xs, &self.keys_values(source)?, causal)
    }

    /// The same with the source's keys and values already computed (the image's, which stay
    /// the same for every decoding step).
    fn forward_kv(&self, xs: &Tensor, (k, v): &(Tensor, Tensor), causal: bool) -> CResult<Tensor> {
        let (b, s, d) = xs.dims3()?;
        let t = k.dim(2)?;
        let (h, hd) = (self.heads, d / self.heads);
        let q = self.query.forward(xs, None)?.reshape((b, s, h, hd))?.transpose(1, 2)?.contiguous()?;
        let mut scores = (q.matmul(&k.t()?)? / (hd as f64).sqrt())?;
        if causal {
            let mask: Vec<f32> =
                (0..s).flat_map(|i| (0..t).map(move |j| if j > i { f32::NEG_INFINITY } else { 0.0 })).collect();
            scores = scores.broadcast_add(&Tensor::from_vec(mask, (s, t), xs.device())?)?;
        }
        let probs = candle_nn::ops::softmax_last_dim(&scores)?;
        let context = probs.matmul(v)?.transpose(1, 2)?.reshape((b, s, d))?;
        self.ln.forward(&(self.out.forward(&context, None)? + xs)?)
    }
}

/// One decoder layer: causal self-attention, cross-attention to the image, MLP; post-norm.
struct TextLayer {
    attention: BertAttention,
    cross: BertAttention,
    intermediate: Dense,
    act: HiddenAct,
    output: Dense,
    ln: LayerNorm,
}

impl TextLayer {
    fn forward(&self, xs: &Tensor, image_kv: &(Tensor, Tensor)) -> CResult<Tensor> {
        let xs = self.attention.forward(xs, xs, true)?;
        let xs = self.cross.forward_kv(&xs, image_kv, false)?;
        let hidden = self.intermediate.forward(&xs, Some(self.act))?;
        self.ln.forward(&(self.output.forward(&hidden, None)? + &xs)?)
    }
}

/// Per-layer cross-attention keys and values of one image.
pub struct ImageKeysValues(Vec<(Tensor, Tensor)>);

/// `BlipTextLMHeadModel`: token ids and image states to next-token logits.
pub struct BlipTextDecoder {
    words: Tensor,
    positions: Tensor,
    emb_ln: LayerNorm,
    layers: Vec<TextLayer>,
    transform: Dense,
    act: HiddenAct,
    transform_ln: LayerNorm,
    /// The LM head's weight, transposed (`[d, vocab]`); tied to the word embeddings.
    vocab_t: Tensor,
    vocab_bias: Tensor,
}

impl BlipTextDecoder {
    /// Builds the decoder from weights named as in transformers (under `text_decoder`).
    pub fn load(c: &BlipTextConfig, vb: VarBuilder) -> CResult<Self> {
        let d = c.hidden_size;
        let bert = vb.pp("bert");
        let emb = bert.pp("embeddings");
        let words = emb.get((c.vocab_size, d), "word_embeddings.weight")?;
        let layers = (0..c.num_hidden_layers)
            .map(|i| {
                let vb = bert.pp("encoder").pp("layer").pp(i);
                let (h, eps) = (c.num_attention_heads, c.layer_norm_eps);
                Ok(TextLayer {
                    attention: BertAttention::load(d, d, h, eps, vb.pp("attention"))?,
                    cross: BertAttention::load(d, c.encoder_hidden_size, h, eps, vb.pp("crossattention"))?,
                    intermediate: dense(d, c.intermediate_size, vb.pp("intermediate").pp("dense"))?,
                    act: c.hidden_act,
                    output: dense(c.intermediate_size, d, vb.pp("output").pp("dense"))?,
                    ln: layer_norm(d, eps, vb.pp("output").pp("LayerNorm"))?,
                })
            })
            .collect::<CResult<Vec<_>>>()?;
        let head = vb.pp("cls").pp("predictions");
        let vocab = if head.contains_tensor("decoder.weight") {
            head.get((c.vocab_size, d), "decoder.weight")?
        } else {
            words.clone()
        };
        Ok(BlipTextDecoder {
            positions: emb.get((c.max_position_embeddings, d), "position_embeddings.weight")?,
            emb_ln: layer_norm(d, c.layer_norm_eps, emb.pp("LayerNorm"))?,
            words,
            layers,
            transform: dense(d, d, head.pp("transform").pp("dense"))?,
            act: c.hidden_act,
            transform_ln: layer_norm(d, c.layer_norm_eps, head.pp("transform").pp("LayerNorm"))?,
            vocab_t: vocab.t()?.contiguous()?,
            vocab_bias: head.get(c.vocab_size, "bias")?,
        })
    }

    /// The cross-attention keys and values of image states `[1, t, e]`, one pair per layer:
    /// computed once per image, used at every decoding step.
    pub fn image_keys_values(&self, image: &Tensor) -> CResult<ImageKeysValues> {
        Ok(ImageKeysValues(self.layers.iter().map(|l| l.cross.keys_values(image)).collect::<CResult<Vec<_>>>()?))
    }

    /// Logits `[vocab]` of the token after `ids`, attending to an image (its
    /// [`BlipTextDecoder::image_keys_values`]).
    pub fn next_logits(&self, ids: &[u32], image: &ImageKeysValues) -> CResult<Tensor> {
        let s = ids.len();
        if s == 0 || s > self.positions.dim(0)? {
            candle_core::bail!("{s} tokens: the decoder takes 1 to {}", self.positions.dim(0)?);
        }
        let idx = Tensor::new(ids, self.words.device())?;
        let xs = self.words.index_select(&idx, 0)?.add(&self.positions.narrow(0, 0, s)?)?;
        let mut xs = self.emb_ln.forward(&xs)?.unsqueeze(0)?;
        for (layer, kv) in self.layers.iter().zip(&image.0) {
            xs = layer.forward(&xs, kv)?;
        }
        let last = xs.squeeze(0)?.get(s - 1)?.unsqueeze(0)?;
        let h = self.transform_ln.forward(&self.transform.forward(&last, Some(self.act))?)?;
        h.matmul(&self.vocab_t)?.squeeze(0)?.add(&self.vocab_bias)
    }
}

/// One pre-norm encoder layer.
struct VisionLayer {
    ln1: LayerNorm,
    attn: SelfAttention,
    ln2: LayerNorm,
    mlp: Mlp,
}

impl VisionLayer {
    fn forward(&self, xs: &Tensor) -> CResult<Tensor> {
        let xs = (xs + self.attn.forward(&self.ln1.forward(xs)?, false)?)?;
        &xs + self.mlp.forward(&self.ln2.forward(&xs)?)?
    }
}

/// `BlipVisionModel`: pixels to the post-normalised states of all tokens.
pub struct BlipVisionModel {
    patch: Tensor,
    patch_bias: Tensor,
    class: Tensor,
    positions: Tensor,
    layers: Vec<VisionLayer>,
    post_ln: LayerNorm,
    patch_size: usize,
    grid: usize,
}

impl BlipVisionModel {
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
                Ok(VisionLayer {
                    ln1: layer_norm(d, c.layer_norm_eps, vb.pp("layer_norm1"))?,
                    attn: SelfAttention::from_fused(d, c.num_attention_heads, attn.pp("qkv"), attn.pp("projection"))?,
                    ln2: layer_norm(d, c.layer_norm_eps, vb.pp("layer_norm2"))?,
                    mlp: Mlp::load(d, c.intermediate_size, c.hidden_act, vb.pp("mlp"))?,
                })
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
            xs = layer.forward(&xs)?;
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
    /// Loads the image encoder of any BLIP checkpoint (captioning, VQA or retrieval).
    pub fn load(model: &str, device: &candle_core::Device) -> Result<Self> {
        let repo = ModelRepo::open(model)?;
        let config = read_config(&repo)?;
        Self::from_repo(&repo, &config, &repo_weights(&repo, device)?, device)
    }

    /// The encoder of an opened repository whose config and weights the caller has read.
    fn from_repo(repo: &ModelRepo, config: &BlipConfig, vb: &VarBuilder, device: &candle_core::Device) -> Result<Self> {
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

    /// The `[3, H, W]` input of an image.
    pub fn preprocess(&self, image: &RgbImage) -> Result<Tensor> {
        self.processor.preprocess(image, &self.device)
    }

    /// The encoder's states `[1 + grid², d]` for one image.
    pub fn encode(&self, image: &RgbImage) -> Result<Tensor> {
        Ok(self.model.forward(&self.preprocess(image)?.unsqueeze(0)?)?.squeeze(0)?)
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

/// One step of decoding: the token chosen and the logits it was chosen from.
#[derive(Debug, Clone)]
pub struct DecodeStep {
    /// The token.
    pub token: u32,
    /// Next-token logits `[vocab]`.
    pub logits: Tensor,
}

/// BLIP captioning (`BlipForConditionalGeneration`): greedy decoding so far.
pub struct BlipCaptioner {
    encoder: BlipImageEncoder,
    decoder: BlipTextDecoder,
    tokenizer: tokenizers::Tokenizer,
    bos: u32,
    sep: u32,
}

impl BlipCaptioner {
    /// Assembles a captioner from parts (benchmarks with random weights): the full model's
    /// weights under `vb` (`vision_model`, `text_decoder`).
    pub fn from_parts(
        config: &BlipConfig,
        vb: VarBuilder,
        tokenizer: tokenizers::Tokenizer,
        device: &candle_core::Device,
    ) -> Result<Self> {
        let tc = config.text_config.as_ref().ok_or_else(|| Error::Invalid("no text_config".into()))?;
        let side = config.vision_config.image_size as u32;
        let encoder = BlipImageEncoder {
            model: BlipVisionModel::load(&config.vision_config, vb.pp("vision_model"))?,
            processor: blip_processor_default(side),
            device: device.clone(),
        };
        let decoder = BlipTextDecoder::load(tc, vb.pp("text_decoder"))?;
        Ok(BlipCaptioner { encoder, decoder, tokenizer, bos: tc.bos_token_id, sep: tc.sep_token_id })
    }

    /// Loads a captioning checkpoint from a hub id or a local directory.
    pub fn load(model: &str, device: &candle_core::Device) -> Result<Self> {
        // One read of the config and one mapping of the weights serve both halves.
        let repo = ModelRepo::open(model)?;
        let name = repo.name();
        let config = read_config(&repo)?;
        let vb = repo_weights(&repo, device)?;
        let encoder = BlipImageEncoder::from_repo(&repo, &config, &vb, device)?;
        let tc = config.text_config.ok_or_else(|| Error::model(name, "config.json has no text_config"))?;
        let decoder = BlipTextDecoder::load(&tc, vb.pp("text_decoder")).map_err(|e| {
            Error::model(
                name,
                format!("no captioning decoder in the weights ({}); is this a BLIP captioning model?", first_line(&e)),
            )
        })?;
        let tok_path = repo.required("tokenizer.json")?;
        let mut tokenizer = tokenizers::Tokenizer::from_file(&tok_path)
            .map_err(|e| Error::Tokenizer { model: name.to_string(), reason: e.to_string() })?;
        // Some tokenizer.json files pad or truncate to a fixed length; prompts need neither.
        tokenizer.with_padding(None);
        tokenizer
            .with_truncation(None)
            .map_err(|e| Error::Tokenizer { model: name.to_string(), reason: e.to_string() })?;
        Ok(BlipCaptioner { encoder, decoder, tokenizer, bos: tc.bos_token_id, sep: tc.sep_token_id })
    }

    /// The first tokens of a caption: `[DEC]`, then the prompt's tokens (as transformers:
    /// the prompt tokenised with `[CLS]`/`[SEP]`, the first replaced by `[DEC]`, the last
    /// dropped).
    pub fn start_ids(&self, prompt: Option<&str>) -> Result<Vec<u32>> {
        let Some(prompt) = prompt else { return Ok(vec![self.bos]) };
        let enc = self
            .tokenizer
            .encode(prompt, true)
            .map_err(|e| Error::Tokenizer { model: "blip".into(), reason: e.to_string() })?;
        let mut ids = enc.get_ids().to_vec();
        if ids.len() < 2 {
            return Ok(vec![self.bos]);
        }
        ids[0] = self.bos;
        ids.pop();
        Ok(ids)
    }

    /// Greedy decoding: up to `max_new` tokens after `start`, stopping after `[SEP]`.
    pub fn greedy(&self, image: &RgbImage, start: &[u32], max_new: usize) -> Result<Vec<DecodeStep>> {
        let states = self.decoder.image_keys_values(&self.encoder.encode(image)?.unsqueeze(0)?)?;
        let mut ids = start.to_vec();
        let mut steps = Vec::new();
        for _ in 0..max_new {
            let logits = self.decoder.next_logits(&ids, &states)?;
            let token = logits.argmax(0)?.to_scalar::<u32>()?;
            steps.push(DecodeStep { token, logits });
            ids.push(token);
            if token == self.sep {
                break;
            }
        }
        Ok(steps)
    }

    /// Beam search as transformers' `generate(num_beams=N)` with its defaults (length penalty
    /// 1, no early stopping): at each step the best `2N` continuations of the `N` beams are
    /// ranked by summed log-probability; one ending in `[SEP]` among the first `N` becomes a
    /// finished caption scored by its sum over its new-token count; the others continue.
    /// Returns the best caption's ids, `start` included.
    pub fn beam_search(&self, image: &RgbImage, start: &[u32], beams: usize, max_new: usize) -> Result<Vec<u32>> {
        if beams <= 1 {
            let steps = self.greedy(image, start, max_new)?;
            return Ok(start.iter().copied().chain(steps.iter().map(|s| s.token)).collect());
        }
        let states = self.decoder.image_keys_values(&self.encoder.encode(image)?.unsqueeze(0)?)?;
        let mut running: Vec<(Vec<u32>, f32)> = vec![(start.to_vec(), 0.0)];
        let mut finished: Vec<(Vec<u32>, f32)> = Vec::new();
        for step in 1..=max_new {
            let mut candidates: Vec<(f32, usize, u32)> = Vec::new();
            for (b, (ids, score)) in running.iter().enumerate() {
                let logp =
                    candle_nn::ops::log_softmax(&self.decoder.next_logits(ids, &states)?, 0)?.to_vec1::<f32>()?;
                let mut order: Vec<u32> = (0..logp.len() as u32).collect();
                let keep = (2 * beams).min(order.len());
                order.select_nth_unstable_by(keep - 1, |&x, &y| logp[y as usize].total_cmp(&logp[x as usize]));
                candidates.extend(order[..keep].iter().map(|&t| (score + logp[t as usize], b, t)));
            }
            candidates.sort_by(|x, y| y.0.total_cmp(&x.0));
            let mut next = Vec::with_capacity(beams);
            for (rank, &(score, b, token)) in candidates.iter().enumerate() {
                let mut ids = running[b].0.clone();
                ids.push(token);
                if token == self.sep {
                    if rank < beams {
                        finished.push((ids, score / step as f32));
                    }
                    continue;
                }
                next.push((ids, score));
                if next.len() == beams {
                    break;
                }
            }
            running = next;
            // Done once enough captions finished and no running beam can beat the worst of them.
            if finished.len() >= beams {
                finished.sort_by(|x, y| y.1.total_cmp(&x.1));
                finished.truncate(beams);
                let best_running = running.first().map_or(f32::NEG_INFINITY, |r| r.1 / step as f32);
                if finished[beams - 1].1 >= best_running {
                    break;
                }
            }
        }
        let steps = |ids: &Vec<u32>| (ids.len() - start.len()).max(1) as f32;
        finished.extend(running.into_iter().map(|(ids, score)| {
            let n = steps(&ids);
            (ids, score / n)
        }));
        let best = finished.into_iter().max_by(|x, y| x.1.total_cmp(&y.1));
        Ok(best.map(|b| b.0).unwrap_or_else(|| start.to_vec()))
    }

    /// The caption's text from its ids (special tokens dropped).
    pub fn decode(&self, ids: &[u32]) -> Result<String> {
        self.tokenizer.decode(ids, true).map_err(|e| Error::Tokenizer { model: "blip".into(), reason: e.to_string() })
    }
}
