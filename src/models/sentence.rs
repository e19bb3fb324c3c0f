//! Multilingual text towers: sentence-transformers models that map text into a CLIP's image
//! space (`sentence-transformers/clip-ViT-B-32-multilingual-v1` for
//! `openai/clip-vit-base-patch32`), so a library indexed with that CLIP answers queries in 50+
//! languages without re-indexing (`--text-model`).
//!
//! The layout is sentence-transformers': `modules.json` lists the modules in order: a
//! `Transformer` (at the root, or in a folder such as `0_Transformer/`: DistilBERT, BERT or
//! XLM-RoBERTa, with `sentence_bert_config.json`), a `Pooling` (mean, `[CLS]` or max, from its
//! `config.json`), optional `Dense` layers (weights `linear.weight`/`linear.bias`, activation from
//! their config) and `Normalize`. The embedding is the chain's output, L2-normalised.

use std::path::Path;

use candle_core::{DType, Device, Tensor};
use serde::Deserialize;
use serde_json::Value;
use tokenizers::{Tokenizer, TruncationDirection, TruncationParams, TruncationStrategy};

use crate::error::{Error, Result, first_line};
use crate::models::bert::{BertLayout, BertShape, BertStack, Pooling, pool};
use crate::models::nn::{Dense, Embedding, HiddenAct, MAX_BATCH, l2_normalize};
use crate::models::source::ModelRepo;

/// One entry of `modules.json`.
#[derive(Deserialize)]
struct ModuleEntry {
    #[serde(default)]
    path: String,
    #[serde(rename = "type")]
    kind: String,
}

/// `sentence_bert_config.json`.
#[derive(Deserialize, Default)]
struct SentenceBertConfig {
    #[serde(default)]
    max_seq_length: Option<usize>,
    #[serde(default)]
    do_lower_case: bool,
}

/// A `Pooling` module's `config.json`.
#[derive(Deserialize)]
struct PoolingConfig {
    #[serde(default)]
    pooling_mode_cls_token: bool,
    #[serde(default)]
    pooling_mode_mean_tokens: bool,
    #[serde(default)]
    pooling_mode_max_tokens: bool,
    #[serde(default)]
    pooling_mode_mean_sqrt_len_tokens: bool,
    #[serde(default)]
    pooling_mode_weightedmean_tokens: bool,
    #[serde(default)]
    pooling_mode_lasttoken: bool,
}

/// A `Dense` module's `config.json`.
#[derive(Deserialize)]
struct DenseConfig {
    in_features: usize,
    out_features: usize,
    #[serde(default = "yes")]
    bias: bool,
    #[serde(default)]
    activation_function: Option<String>,
}

fn yes() -> bool {
    true
}

/// The activation after a Dense layer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum HeadActivation {
    Identity,
    Tanh,
    Relu,
    Sigmoid,
    Gelu,
}

impl HeadActivation {
    /// From the torch class name sentence-transformers writes.
    fn parse(name: Option<&str>) -> Option<Self> {
        let short = name.map_or("Tanh", |n| n.rsplit('.').next().unwrap_or(n));
        Some(match short {
            "Identity" => HeadActivation::Identity,
            "Tanh" => HeadActivation::Tanh,
            "ReLU" => HeadActivation::Relu,
            "Sigmoid" => HeadActivation::Sigmoid,
            "GELU" => HeadActivation::Gelu,
            _ => return None,
        })
    }

    fn apply(self, x: &Tensor) -> candle_core::Result<Tensor> {
        match self {
            HeadActivation::Identity => Ok(x.clone()),
            HeadActivation::Tanh => x.tanh(),
            HeadActivation::Relu => x.relu(),
            HeadActivation::Sigmoid => candle_nn::ops::sigmoid(x),
            HeadActivation::Gelu => x.gelu_erf(),
        }
    }
}

struct DenseHead {
    linear: Dense,
    act: HeadActivation,
}

/// A loaded sentence-transformers text encoder.
pub struct SentenceEncoder {
    name: String,
    tokenizer: Tokenizer,
    lowercase: bool,
    bert: BertStack,
    pad_id: u32,
    pooling: Pooling,
    heads: Vec<DenseHead>,
    dim: usize,
}

/// The encoder's config, whichever family it is.
struct Encoder {
    shape: BertShape,
    layout: BertLayout,
    pad_id: u32,
    family: &'static str,
}

fn read_json<T: serde::de::DeserializeOwned>(model: &str, path: &Path) -> Result<T> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| Error::model(model, format!("cannot read {}: {e}", path.display())))?;
    serde_json::from_str(&text).map_err(|e| Error::model(model, format!("invalid {}: {e}", path.display())))
}

/// The encoder shapes of a Transformer module's `config.json`, with transformers' defaults.
fn encoder_config(model: &str, config: &Value) -> Result<Encoder> {
    let int = |key: &str, default: usize| config.get(key).and_then(Value::as_u64).map_or(default, |v| v as usize);
    let act = |key: &str| -> Result<HiddenAct> {
        match config.get(key) {
            None => Ok(HiddenAct::Gelu),
            Some(v) => serde_json::from_value(v.clone())
                .map_err(|_| Error::model(model, format!("config.json: unsupported activation {v}"))),
        }
    };
    let model_type = config.get("model_type").and_then(Value::as_str).unwrap_or("");
    match model_type {
        "distilbert" => Ok(Encoder {
            shape: BertShape {
                vocab_size: int("vocab_size", 30522),
                hidden_size: int("dim", 768),
                intermediate_size: int("hidden_dim", 3072),
                num_hidden_layers: int("n_layers", 6),
                num_attention_heads: int("n_heads", 12),
                max_position_embeddings: int("max_position_embeddings", 512),
                type_vocab_size: 0,
                hidden_act: act("activation")?,
                // DistilBERT's layer norms are built with eps 1e-12, whatever the config says.
                layer_norm_eps: 1e-12,
                first_position: 0,
            },
            layout: BertLayout::DistilBert,
            pad_id: int("pad_token_id", 0) as u32,
            family: "distilbert",
        }),
        "bert" | "roberta" | "xlm-roberta" => {
            if let Some(kind) = config.get("position_embedding_type").and_then(Value::as_str)
                && kind != "absolute"
            {
                return Err(Error::model(
                    model,
                    format!("{kind} position embeddings are not supported (only absolute)"),
                ));
            }
            let roberta = model_type != "bert";
            let pad = int("pad_token_id", if roberta { 1 } else { 0 });
            Ok(Encoder {
                shape: BertShape {
                    vocab_size: int("vocab_size", 30522),
                    hidden_size: int("hidden_size", 768),
                    intermediate_size: int("intermediate_size", 3072),
                    num_hidden_layers: int("num_hidden_layers", 12),
                    num_attention_heads: int("num_attention_heads", 12),
                    max_position_embeddings: int("max_position_embeddings", 512),
                    type_vocab_size: int("type_vocab_size", 2),
                    hidden_act: act("hidden_act")?,
                    layer_norm_eps: config.get("layer_norm_eps").and_then(Value::as_f64).unwrap_or(1e-12),
                    // RoBERTa numbers positions from padding_idx + 1.
                    first_position: if roberta { pad + 1 } else { 0 },
                },
                layout: BertLayout::Bert,
                pad_id: pad as u32,
                family: if roberta { "roberta" } else { "bert" },
            })
        }
        other => Err(Error::model(
            model,
            format!(
                "the text model's encoder is {:?}; clipdex reads DistilBERT, BERT and XLM-RoBERTa encoders",
                if other.is_empty() { "untyped" } else { other }
            ),
        )),
    }
}

impl SentenceEncoder {
    /// Loads a sentence-transformers model from a hub id or a local directory.
    pub fn load(spec: &str, device: &Device) -> Result<Self> {
        let repo = ModelRepo::open(spec)?;
        let name = repo.name().to_string();
        let modules: Vec<ModuleEntry> = match repo.optional("modules.json")? {
            Some(p) => read_json(&name, &p)?,
            None => {
                return Err(Error::model(
                    &name,
                    "no modules.json: not a sentence-transformers model (a --text-model such as \
                     sentence-transformers/clip-ViT-B-32-multilingual-v1)",
                ));
            }
        };
        let dir = |m: &ModuleEntry| if m.path.is_empty() { String::new() } else { format!("{}/", m.path) };
        let mut modules = modules.iter();
        let transformer = modules
            .next()
            .filter(|m| m.kind.ends_with(".Transformer"))
            .ok_or_else(|| Error::model(&name, "modules.json must begin with a Transformer module"))?;
        let at = dir(transformer);
        let config: Value = read_json(&name, &repo.required(&format!("{at}config.json"))?)?;
        let encoder = encoder_config(&name, &config)?;
        let st: SentenceBertConfig = match repo.optional(&format!("{at}sentence_bert_config.json"))? {
            Some(p) => read_json(&name, &p)?,
            None => SentenceBertConfig::default(),
        };
        let positions = encoder.shape.max_position_embeddings.saturating_sub(encoder.shape.first_position);
        let max_len = st.max_seq_length.unwrap_or(positions).min(positions);
        let tokenizer = truncated(&name, crate::models::bert::tokenizer::bert_tokenizer_in(&repo, &at)?, max_len)?;
        let vb = crate::models::source::repo_weights_at(&repo, &at, device)?;
        let prefix = ["", "distilbert.", "bert.", "roberta.", "model."]
            .into_iter()
            .find(|p| vb.contains_tensor(&format!("{p}embeddings.word_embeddings.weight")))
            .unwrap_or("");
        let vb = if prefix.is_empty() { vb } else { vb.pp(prefix.trim_end_matches('.')) };
        let bert = BertStack::load(&encoder.shape, encoder.layout, None, vb).map_err(|e| {
            Error::model(&name, format!("the {} weights do not fit config.json ({})", encoder.family, first_line(&e)))
        })?;
        let mut width = encoder.shape.hidden_size;
        let mut pooling = None;
        let mut heads = Vec::new();
        for m in modules {
            let kind = m.kind.rsplit('.').next().unwrap_or(&m.kind);
            let at = dir(m);
            match kind {
                "Pooling" => {
                    let c: PoolingConfig = read_json(&name, &repo.required(&format!("{at}config.json"))?)?;
                    pooling = Some(pooling_mode(&name, &c)?);
                }
                "Dense" => {
                    let c: DenseConfig = read_json(&name, &repo.required(&format!("{at}config.json"))?)?;
                    if c.in_features != width {
                        return Err(Error::model(
                            &name,
                            format!("{at}: a Dense layer of {} inputs after {width} features", c.in_features),
                        ));
                    }
                    let act = HeadActivation::parse(c.activation_function.as_deref()).ok_or_else(|| {
                        Error::model(&name, format!("{at}: unsupported activation {:?}", c.activation_function))
                    })?;
                    let vb = crate::models::source::repo_weights_at(&repo, &at, device)?;
                    let weight = vb.get((c.out_features, c.in_features), "linear.weight");
                    let bias = if c.bias { Some(vb.get(c.out_features, "linear.bias")) } else { None };
                    let linear = (|| Dense::new(&weight?, bias.transpose()?))()
                        .map_err(|e| Error::model(&name, format!("{at}: {}", first_line(&e))))?;
                    heads.push(DenseHead { linear, act });
                    width = c.out_features;
                }
                // The embedding is normalised in any case.
                "Normalize" => {}
                other => {
                    return Err(Error::model(&name, format!("unsupported sentence-transformers module {other}")));
                }
            }
        }
        let pooling = pooling.ok_or_else(|| Error::model(&name, "modules.json has no Pooling module"))?;
        Ok(SentenceEncoder {
            name,
            tokenizer,
            lowercase: st.do_lower_case,
            bert,
            pad_id: encoder.pad_id,
            pooling,
            heads,
            dim: width,
        })
    }

    /// Assembles an encoder from parts, for benchmarks with random weights: the Transformer
    /// module's `config.json` as JSON, its weights, a tokenizer (truncated here to `max_len`),
    /// the pooling and, optionally, a bias-free linear head to `dense` outputs (weights under
    /// `dense.linear.weight`) as in clip-ViT-B-32-multilingual-v1.
    pub fn from_parts(
        name: &str,
        config: &Value,
        vb: candle_nn::VarBuilder,
        tokenizer: Tokenizer,
        max_len: usize,
        pooling: Pooling,
        dense: Option<usize>,
    ) -> Result<Self> {
        let encoder = encoder_config(name, config)?;
        let bert = BertStack::load(&encoder.shape, encoder.layout, None, vb.clone())?;
        let mut heads = Vec::new();
        let mut dim = encoder.shape.hidden_size;
        if let Some(out) = dense {
            let weight = vb.pp("dense").get((out, dim), "linear.weight")?;
            heads.push(DenseHead { linear: Dense::new(&weight, None)?, act: HeadActivation::Identity });
            dim = out;
        }
        Ok(SentenceEncoder {
            name: name.to_string(),
            tokenizer: truncated(name, tokenizer, max_len)?,
            lowercase: false,
            bert,
            pad_id: encoder.pad_id,
            pooling,
            heads,
            dim,
        })
    }

    /// The model's name as given.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Embedding width.
    pub fn dim(&self) -> usize {
        self.dim
    }

    /// Token ids of `text` as the encoder sees them (special tokens added, truncated).
    pub fn tokenize(&self, text: &str) -> Result<Vec<u32>> {
        let lowered;
        let text = if self.lowercase {
            lowered = text.to_lowercase();
            lowered.as_str()
        } else {
            text
        };
        let enc = self
            .tokenizer
            .encode(text, true)
            .map_err(|e| Error::Tokenizer { model: self.name.clone(), reason: e.to_string() })?;
        Ok(enc.get_ids().to_vec())
    }

    /// Embeds already tokenised texts: L2-normalised rows.
    pub fn embed_token_ids(&self, ids: &[Vec<u32>]) -> Result<Vec<Embedding>> {
        let mut out = Vec::with_capacity(ids.len());
        for chunk in ids.chunks(MAX_BATCH) {
            let (states, keep) = self.bert.forward_padded(chunk, self.pad_id)?;
            let mut x = pool(&states, &keep, self.pooling)?;
            for head in &self.heads {
                x = head.act.apply(&head.linear.forward(&x, None)?)?;
            }
            out.extend(l2_normalize(&x)?.to_dtype(DType::F32)?.to_device(&Device::Cpu)?.to_vec2::<f32>()?);
        }
        Ok(out)
    }
}

fn pooling_mode(model: &str, c: &PoolingConfig) -> Result<Pooling> {
    let modes = [
        (c.pooling_mode_cls_token, Some(Pooling::Cls)),
        (c.pooling_mode_mean_tokens, Some(Pooling::Mean)),
        (c.pooling_mode_max_tokens, Some(Pooling::Max)),
        (c.pooling_mode_mean_sqrt_len_tokens, None),
        (c.pooling_mode_weightedmean_tokens, None),
        (c.pooling_mode_lasttoken, None),
    ];
    let on: Vec<Option<Pooling>> = modes.iter().filter(|(set, _)| *set).map(|(_, p)| *p).collect();
    match on.as_slice() {
        [Some(p)] => Ok(*p),
        _ => Err(Error::model(model, "1_Pooling: clipdex pools with exactly one of mean, [CLS] or max tokens")),
    }
}

fn truncated(name: &str, mut tokenizer: Tokenizer, max_len: usize) -> Result<Tokenizer> {
    tokenizer.with_padding(None);
    tokenizer
        .with_truncation(Some(TruncationParams {
            max_length: max_len,
            strategy: TruncationStrategy::LongestFirst,
            direction: TruncationDirection::Right,
            stride: 0,
        }))
        .map_err(|e| Error::model(name, format!("tokenizer truncation: {e}")))?;
    Ok(tokenizer)
}
