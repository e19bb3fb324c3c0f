//! The BERT encoder every BERT-shaped text model here shares: BLIP's text side (with
//! cross-attention to the image, causal in its decoders), Chinese-CLIP's text tower and the
//! multilingual sentence-transformers encoders (bidirectional, batches padded with a mask).
//!
//! Post-norm layers as transformers writes them: `LN(x + attention(x))`, then
//! `LN(x + fc2(act(fc1(x))))`; embeddings are word + position (+ token type 0 where the model
//! has token types), then a layer norm. Weight names follow the checkpoint's layout
//! ([`BertLayout`]): BERT's (`encoder.layer.N.attention.self.query` ...) or DistilBERT's
//! (`transformer.layer.N.attention.q_lin` ...).

use candle_core::{D, Module, Tensor};
use candle_nn::{LayerNorm, VarBuilder};

use crate::models::nn::layers::{dense, layer_norm};
use crate::models::nn::{Dense, HiddenAct, kernels};

pub mod tokenizer;

type CResult<T> = candle_core::Result<T>;

/// The shapes of a BERT encoder, from its config. As read from a Chinese-CLIP's
/// `text_config` (`ChineseCLIPTextConfig`), every field a file leaves out has transformers'
/// default (those of `BertConfig`), and unknown keys are ignored.
#[derive(Debug, Clone, Copy, serde::Deserialize)]
#[serde(default)]
pub struct BertShape {
    /// Token vocabulary size.
    pub vocab_size: usize,
    /// Width.
    pub hidden_size: usize,
    /// MLP width.
    pub intermediate_size: usize,
    /// Layers.
    pub num_hidden_layers: usize,
    /// Attention heads.
    pub num_attention_heads: usize,
    /// Rows of the position table.
    pub max_position_embeddings: usize,
    /// Rows of the token-type table (0: the model has none).
    pub type_vocab_size: usize,
    /// MLP activation.
    pub hidden_act: HiddenAct,
    /// Layer-norm epsilon.
    pub layer_norm_eps: f64,
    /// Position of the first token: 0 for BERT; RoBERTa-style models (XLM-R) number positions
    /// from `pad_token_id + 1`.
    #[serde(skip)]
    pub first_position: usize,
}

impl Default for BertShape {
    fn default() -> Self {
        BertShape {
            vocab_size: 30522,
            hidden_size: 768,
            intermediate_size: 3072,
            num_hidden_layers: 12,
            num_attention_heads: 12,
            max_position_embeddings: 512,
            type_vocab_size: 2,
            hidden_act: HiddenAct::Gelu,
            layer_norm_eps: 1e-12,
            first_position: 0,
        }
    }
}

/// How a checkpoint names the encoder's weights.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BertLayout {
    /// BERT, RoBERTa, XLM-RoBERTa, Chinese-CLIP's text model, BLIP's text side.
    Bert,
    /// DistilBERT.
    DistilBert,
}

/// BERT self-attention (causal in the decoders) with its output projection and post-norm. The
/// query, key and value projections are fused into one (the attention scale folded into the
/// query's), so an unmasked pass runs the fused CPU attention kernel CLIP uses.
struct SelfAttention {
    qkv: Dense,
    out: Dense,
    ln: LayerNorm,
    heads: usize,
}

impl SelfAttention {
    /// From the three projections' `(weight, bias)`, the output projection and its layer norm.
    fn fuse(parts: [(Tensor, Tensor); 3], out: Dense, ln: LayerNorm, heads: usize) -> CResult<Self> {
        let [(qw, qb), (kw, kb), (vw, vb)] = parts;
        let scale = ((qw.dim(0)? / heads) as f64).powf(-0.5);
        let w = Tensor::cat(&[(qw * scale)?, kw, vw], 0)?;
        let b = Tensor::cat(&[(qb * scale)?, kb, vb], 0)?;
        Ok(SelfAttention { qkv: Dense::new(&w, Some(b))?, out, ln, heads })
    }

    /// BERT's names under `vb` (`self.query` ..., `output.dense`, `output.LayerNorm`).
    fn load(dim: usize, heads: usize, eps: f64, vb: VarBuilder) -> CResult<Self> {
        let sv = vb.pp("self");
        let part = |name: &str| -> CResult<(Tensor, Tensor)> {
            Ok((sv.pp(name).get((dim, dim), "weight")?, sv.pp(name).get(dim, "bias")?))
        };
        let parts = [part("query")?, part("key")?, part("value")?];
        let out = dense(dim, dim, vb.pp("output").pp("dense"))?;
        Self::fuse(parts, out, layer_norm(dim, eps, vb.pp("output").pp("LayerNorm"))?, heads)
    }

    /// DistilBERT's names: `attention.{q,k,v,out}_lin` and the layer's `sa_layer_norm`.
    fn load_distilbert(dim: usize, heads: usize, eps: f64, layer: &VarBuilder) -> CResult<Self> {
        let a = layer.pp("attention");
        let part = |name: &str| -> CResult<(Tensor, Tensor)> {
            Ok((a.pp(name).get((dim, dim), "weight")?, a.pp(name).get(dim, "bias")?))
        };
        let parts = [part("q_lin")?, part("k_lin")?, part("v_lin")?];
        let out = dense(dim, dim, a.pp("out_lin"))?;
        Self::fuse(parts, out, layer_norm(dim, eps, layer.pp("sa_layer_norm"))?, heads)
    }

    /// `LN(out(attention(xs)) + xs)`; `mask` (`[b, 1, 1, s]`, 0 or -∞) hides padded keys. With
    /// `cache`, the keys and values are kept (`[n, t, d]` each): with an empty cache the
    /// sequences' own (the prompt, causal); with a filled one, `xs` holds one new token per
    /// sequence, attending to the cached tokens and itself, and its key and value are appended.
    fn forward_cached(
        &self,
        xs: &Tensor,
        causal: bool,
        mask: Option<&Tensor>,
        cache: Option<&mut Option<(Tensor, Tensor)>>,
    ) -> CResult<Tensor> {
        let qkv = self.qkv.forward(xs, None)?;
        let (n, s, d3) = qkv.dims3()?;
        let d = d3 / 3;
        let context = match cache {
            None => kernels::attention(&qkv, self.heads, causal, mask)?,
            Some(slot) => {
                let (k, v) = (qkv.narrow(2, d, d)?, qkv.narrow(2, 2 * d, d)?);
                match slot.take() {
                    None => {
                        *slot = Some((k.contiguous()?, v.contiguous()?));
                        kernels::attention(&qkv, self.heads, causal, mask)?
                    }
                    Some((past_k, past_v)) => {
                        if s != 1 {
                            candle_core::bail!("a cached step takes one token per sequence, not {s}");
                        }
                        let (k, v) = (Tensor::cat(&[&past_k, &k], 1)?, Tensor::cat(&[&past_v, &v], 1)?);
                        let (h, hd, t) = (self.heads, d / self.heads, k.dim(1)?);
                        let split = |x: &Tensor| x.reshape((n, t, h, hd))?.transpose(1, 2)?.contiguous();
                        // Queries come pre-scaled (see `fuse`).
                        let context = attend(&qkv.narrow(2, 0, d)?, &(split(&k)?, split(&v)?), h, 1.0)?;
                        *slot = Some((k, v));
                        context
                    }
                }
            }
        };
        self.ln.forward(&(self.out.forward(&context, None)? + xs)?)
    }
}

/// BERT cross-attention to a source (the image's states, or the question's), with its output
/// projection and post-norm.
struct BertAttention {
    query: Dense,
    key: Dense,
    value: Dense,
    out: Dense,
    ln: LayerNorm,
    heads: usize,
}

impl BertAttention {
    /// BERT's names under `vb` (`self.query` ..., `output.dense`, `output.LayerNorm`).
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

    /// `LN(out(attention(xs → (k, v))) + xs)`. `xs` may have batch 1 against a batched source
    /// (one text against several images: it is broadcast), or a batch against a source of
    /// batch 1 (beams attending to one image).
    fn forward_kv(&self, xs: &Tensor, kv: &(Tensor, Tensor)) -> CResult<Tensor> {
        let (n, s, d) = xs.dims3()?;
        let b = kv.0.dim(0)?;
        if b == 1 {
            return self.forward_groups(xs, &[(kv, n)]);
        }
        let xs = if n == b { xs.clone() } else { xs.broadcast_as((b, s, d))?.contiguous()? };
        let context = attend(&self.query.forward(&xs, None)?, kv, self.heads, ((d / self.heads) as f64).sqrt())?;
        self.ln.forward(&(self.out.forward(&context, None)? + xs)?)
    }

    /// Cross-attention for consecutive runs of sequences, each run against its own source of
    /// batch 1 (one image's beams; several images' beams decoded together): the projections
    /// run once over every row; each run's queries attend as one row block, so a source's keys
    /// and values are not copied per sequence.
    fn forward_groups(&self, xs: &Tensor, groups: &[(&(Tensor, Tensor), usize)]) -> CResult<Tensor> {
        let (n, s, d) = xs.dims3()?;
        if groups.iter().map(|g| g.1).sum::<usize>() != n {
            candle_core::bail!("cross-attention groups do not cover the {n} sequences");
        }
        let q = self.query.forward(xs, None)?;
        let divisor = ((d / self.heads) as f64).sqrt();
        let mut contexts = Vec::with_capacity(groups.len());
        let mut first = 0;
        for &(kv, rows) in groups {
            if kv.0.dim(0)? != 1 {
                candle_core::bail!("a cross-attention group's source must have batch 1");
            }
            let block = q.narrow(0, first, rows)?.reshape((1, rows * s, d))?;
            contexts.push(attend(&block, kv, self.heads, divisor)?.reshape((rows, s, d))?);
            first += rows;
        }
        let context = Tensor::cat(&contexts, 0)?;
        self.ln.forward(&(self.out.forward(&context, None)? + xs)?)
    }
}

/// Multi-head attention of projected queries `q` (`[b, m, d]`) to keys and values already split
/// into heads (`[b, heads, t, hd]` each), the scores divided by `divisor` (1: queries come
/// pre-scaled): the context `[b, m, d]`.
fn attend(q: &Tensor, (k, v): &(Tensor, Tensor), heads: usize, divisor: f64) -> CResult<Tensor> {
    let (b, m, d) = q.dims3()?;
    let q = q.reshape((b, m, heads, d / heads))?.transpose(1, 2)?.contiguous()?;
    let mut scores = q.matmul(&k.t()?)?;
    if divisor != 1.0 {
        scores = (scores / divisor)?;
    }
    let probs = candle_nn::ops::softmax_last_dim(&scores)?;
    probs.matmul(v)?.transpose(1, 2)?.reshape((b, m, d))
}

/// One layer: self-attention, cross-attention to the source when there is one, MLP; post-norm.
struct BertLayer {
    attention: SelfAttention,
    cross: Option<BertAttention>,
    intermediate: Dense,
    act: HiddenAct,
    output: Dense,
    ln: LayerNorm,
}

impl BertLayer {
    fn forward(
        &self,
        xs: &Tensor,
        causal: bool,
        mask: Option<&Tensor>,
        sources: &[(&(Tensor, Tensor), usize)],
        cache: Option<&mut Option<(Tensor, Tensor)>>,
    ) -> CResult<Tensor> {
        let xs = self.attention.forward_cached(xs, causal, mask, cache)?;
        let xs = match (sources, &self.cross) {
            ([], _) => xs,
            ([(kv, _)], Some(cross)) => cross.forward_kv(&xs, kv)?,
            (groups, Some(cross)) => cross.forward_groups(&xs, groups)?,
            (_, None) => candle_core::bail!("this text model has no cross-attention"),
        };
        let hidden = self.intermediate.forward(&xs, Some(self.act))?;
        self.ln.forward(&(self.output.forward(&hidden, None)? + &xs)?)
    }
}

/// A causal decoder's self-attention keys and values for the tokens it has seen, per layer
/// (`[n, t, d]` each, one row per sequence): each decoding step then runs only the new token.
#[derive(Default)]
pub struct DecoderCache {
    layers: Vec<Option<(Tensor, Tensor)>>,
}

impl DecoderCache {
    /// Tokens cached per sequence.
    pub fn len(&self) -> usize {
        self.first_keys().map_or(0, |k| k.dims()[1])
    }

    /// Whether nothing is cached yet.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Sequences cached (`None` when empty).
    fn rows(&self) -> Option<usize> {
        self.first_keys().map(|k| k.dims()[0])
    }

    /// The first layer's cached keys (`[n, t, d]`), when any.
    fn first_keys(&self) -> Option<&Tensor> {
        self.layers.first()?.as_ref().map(|(k, _)| k)
    }

    /// Keeps the rows `rows` (in that order, repeats allowed): the sequences that continue,
    /// each from the row it extends.
    pub fn select(&mut self, rows: &[u32]) -> CResult<()> {
        let Some(first) = self.first_keys() else { return Ok(()) };
        let idx = Tensor::new(rows, first.device())?;
        for (k, v) in self.layers.iter_mut().flatten() {
            *k = k.contiguous()?.index_select(&idx, 0)?;
            *v = v.contiguous()?.index_select(&idx, 0)?;
        }
        Ok(())
    }
}

/// Per-layer cross-attention keys and values of one source: computed once, used at every
/// decoding step (or for every text matched against the same images).
pub struct SourceKeysValues(Vec<(Tensor, Tensor)>);

/// A BERT without a pooler: embeddings and layers.
pub struct BertStack {
    pub(crate) words: Tensor,
    /// Position rows, with the token-type-0 row already added where the model has token types.
    positions: Tensor,
    first_position: usize,
    emb_ln: LayerNorm,
    layers: Vec<BertLayer>,
}

impl BertStack {
    /// Builds the encoder from weights named as `layout` names them, with cross-attention
    /// layers (`crossattention`, attending to a source of width `cross_dim`) when given.
    pub fn load(c: &BertShape, layout: BertLayout, cross_dim: Option<usize>, vb: VarBuilder) -> CResult<Self> {
        let d = c.hidden_size;
        let (h, eps) = (c.num_attention_heads, c.layer_norm_eps);
        let emb = vb.pp("embeddings");
        let layers = (0..c.num_hidden_layers)
            .map(|i| match layout {
                BertLayout::Bert => {
                    let vb = vb.pp("encoder").pp("layer").pp(i);
                    Ok(BertLayer {
                        attention: SelfAttention::load(d, h, eps, vb.pp("attention"))?,
                        cross: cross_dim
                            .map(|e| BertAttention::load(d, e, h, eps, vb.pp("crossattention")))
                            .transpose()?,
                        intermediate: dense(d, c.intermediate_size, vb.pp("intermediate").pp("dense"))?,
                        act: c.hidden_act,
                        output: dense(c.intermediate_size, d, vb.pp("output").pp("dense"))?,
                        ln: layer_norm(d, eps, vb.pp("output").pp("LayerNorm"))?,
                    })
                }
                BertLayout::DistilBert => {
                    let vb = vb.pp("transformer").pp("layer").pp(i);
                    Ok(BertLayer {
                        attention: SelfAttention::load_distilbert(d, h, eps, &vb)?,
                        cross: None,
                        intermediate: dense(d, c.intermediate_size, vb.pp("ffn").pp("lin1"))?,
                        act: c.hidden_act,
                        output: dense(c.intermediate_size, d, vb.pp("ffn").pp("lin2"))?,
                        ln: layer_norm(d, eps, vb.pp("output_layer_norm"))?,
                    })
                }
            })
            .collect::<CResult<Vec<_>>>()?;
        let mut positions = emb.get((c.max_position_embeddings, d), "position_embeddings.weight")?;
        if c.type_vocab_size > 0 {
            let types = emb.get((c.type_vocab_size, d), "token_type_embeddings.weight")?;
            positions = positions.broadcast_add(&types.narrow(0, 0, 1)?)?;
        }
        Ok(BertStack {
            words: emb.get((c.vocab_size, d), "word_embeddings.weight")?,
            positions,
            first_position: c.first_position,
            emb_ln: layer_norm(d, c.layer_norm_eps, emb.pp("LayerNorm"))?,
            layers,
        })
    }

    /// The longest sequence the position embeddings cover.
    pub fn max_tokens(&self) -> usize {
        self.positions.dims()[0].saturating_sub(self.first_position)
    }

    /// Width of the states.
    pub fn width(&self) -> usize {
        self.words.dims()[1]
    }

    /// The cross-attention keys and values of a source `[b, t, e]`, one pair per layer.
    pub fn source_keys_values(&self, source: &Tensor) -> CResult<SourceKeysValues> {
        let kv = self.layers.iter().map(|l| match &l.cross {
            Some(cross) => cross.keys_values(source),
            None => candle_core::bail!("this text model has no cross-attention"),
        });
        Ok(SourceKeysValues(kv.collect::<CResult<Vec<_>>>()?))
    }

    /// The states `[b, s, d]` of `ids` (one sequence; `b` is the source's batch, or 1 without
    /// a source).
    pub fn forward(&self, ids: &[u32], causal: bool, source: Option<&SourceKeysValues>) -> CResult<Tensor> {
        let groups: Vec<(&SourceKeysValues, usize)> = source.map(|s| (s, 1)).into_iter().collect();
        self.forward_grouped(&[ids], causal, &groups, None)
    }

    /// The embedding layer's output for `n` sequences of length `s` given flat.
    fn embed(&self, flat: &[u32], n: usize, s: usize) -> CResult<Tensor> {
        self.embed_at(flat, n, s, 0)
    }

    /// [`Self::embed`] for tokens at positions `offset..offset + s`.
    fn embed_at(&self, flat: &[u32], n: usize, s: usize, offset: usize) -> CResult<Tensor> {
        let idx = Tensor::new(flat, self.words.device())?;
        let xs = self.words.index_select(&idx, 0)?.reshape((n, s, self.width()))?;
        let xs = xs.broadcast_add(&self.positions.narrow(0, self.first_position + offset, s)?)?;
        self.emb_ln.forward(&xs)
    }

    /// The states `[n, s, d]` of `n` sequences of equal length `s`, in consecutive runs each
    /// attending to its own source (`(source, sequences in the run)`; a single run's source may
    /// also have batch `n`, or batch `b` against one sequence), or to none when `groups` is
    /// empty. With `cache` (causal decoders): an empty cache takes whole sequences (the prompt)
    /// and keeps their keys and values; a filled one takes the next token of each of its
    /// sequences (`seqs` of length 1), at the position after the cached ones.
    pub fn forward_grouped(
        &self,
        seqs: &[&[u32]],
        causal: bool,
        groups: &[(&SourceKeysValues, usize)],
        mut cache: Option<&mut DecoderCache>,
    ) -> CResult<Tensor> {
        let past = cache.as_ref().map_or(0, |c| c.len());
        let (n, s) = (seqs.len(), seqs.first().map_or(0, |x| x.len()));
        if s == 0 || s > self.max_tokens() {
            candle_core::bail!("{s} tokens: the text model takes 1 to {}", self.max_tokens());
        }
        if seqs.iter().any(|x| x.len() != s) {
            candle_core::bail!("sequences of different lengths in one batch");
        }
        if past + s > self.max_tokens() {
            candle_core::bail!("{} tokens: the text model takes 1 to {}", past + s, self.max_tokens());
        }
        if let Some(cache) = cache.as_deref_mut() {
            cache.layers.resize(self.layers.len(), None);
            if past > 0 && cache.rows() != Some(n) {
                candle_core::bail!("the decoder cache holds other sequences than the {n} given");
            }
        }
        let flat: Vec<u32> = seqs.iter().flat_map(|x| x.iter().copied()).collect();
        let mut xs = self.embed_at(&flat, n, s, past)?;
        for (i, layer) in self.layers.iter().enumerate() {
            let sources: Vec<(&(Tensor, Tensor), usize)> = groups.iter().map(|(kv, n)| (&kv.0[i], *n)).collect();
            let slot = cache.as_deref_mut().map(|c| &mut c.layers[i]);
            xs = layer.forward(&xs, causal, None, &sources, slot)?;
        }
        Ok(xs)
    }

    /// The states `[n, s, d]` of sequences of any lengths, bidirectional: right-padded with
    /// `pad` to the longest (`s`), the padding hidden from every query by an attention mask
    /// (transformers' `attention_mask`). Also returns the mask `[n, s]` (1 for tokens, 0 for
    /// padding), for pooling.
    pub fn forward_padded(&self, seqs: &[Vec<u32>], pad: u32) -> CResult<(Tensor, Tensor)> {
        let n = seqs.len();
        let s = seqs.iter().map(Vec::len).max().unwrap_or(0);
        if s == 0 || s > self.max_tokens() {
            candle_core::bail!("{s} tokens: the text model takes 1 to {}", self.max_tokens());
        }
        let mut flat = Vec::with_capacity(n * s);
        for ids in seqs {
            flat.extend_from_slice(ids);
            flat.extend(std::iter::repeat_n(pad, s - ids.len()));
        }
        let device = self.words.device();
        let is_token = |ids: &Vec<u32>, j: usize| j < ids.len();
        let keep: Vec<f32> =
            seqs.iter().flat_map(|ids| (0..s).map(move |j| f32::from(u8::from(is_token(ids, j))))).collect();
        // 0 where a key is a token, -∞ where it is padding (no row is all padding: every
        // sequence has at least one token).
        let mask = if seqs.iter().any(|ids| ids.len() < s) {
            let additive: Vec<f32> = keep.iter().map(|&k| if k > 0.0 { 0.0 } else { f32::NEG_INFINITY }).collect();
            Some(Tensor::from_vec(additive, (n, 1, 1, s), device)?)
        } else {
            None
        };
        let keep = Tensor::from_vec(keep, (n, s), device)?;
        let mut xs = self.embed(&flat, n, s)?;
        for layer in &self.layers {
            xs = layer.forward(&xs, false, mask.as_ref(), &[], None)?;
        }
        Ok((xs, keep))
    }
}

/// How a sentence-transformers model pools token states into one vector.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pooling {
    /// The first token's state (`[CLS]`).
    Cls,
    /// The mean over tokens (padding excluded).
    Mean,
    /// The element-wise maximum over tokens (padding excluded).
    Max,
}

/// Pools states `[n, s, d]` under a token mask `[n, s]` (1 token, 0 padding) into `[n, d]`.
pub fn pool(states: &Tensor, keep: &Tensor, how: Pooling) -> CResult<Tensor> {
    match how {
        Pooling::Cls => states.narrow(1, 0, 1)?.squeeze(1),
        Pooling::Mean => {
            let weights = keep.unsqueeze(D::Minus1)?;
            let sum = states.broadcast_mul(&weights)?.sum(1)?;
            // sentence-transformers clamps the token count at 1e-9.
            let count = weights.sum(1)?.clamp(1e-9, f64::INFINITY)?;
            sum.broadcast_div(&count)
        }
        Pooling::Max => {
            // Padding set to -1e9 before the maximum, as sentence-transformers does.
            let keep = keep.unsqueeze(D::Minus1)?;
            states.broadcast_mul(&keep)?.broadcast_add(&((keep - 1.0)? * 1e9)?)?.max(1)
        }
    }
}
