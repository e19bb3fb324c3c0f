//! BLIP's text side: a BERT whose layers also attend to a source (the image's states, or for
//! VQA's answer decoder the question's), used three ways: the captioning and answer decoders
//! (causal, with an LM head), the question encoder (bidirectional, attending to the image) and
//! the matching model's text encoder (bidirectional, with or without the image).
//!
//! Decoding (greedy and beam search as transformers' `generate`) lives here too, since
//! captions and answers share it.

use candle_core::{Module, Tensor};
use candle_nn::{LayerNorm, VarBuilder};

use super::BlipTextConfig;
use crate::models::clip::HiddenAct;
use crate::models::clip::kernels::Dense;
use crate::models::clip::model::{dense, layer_norm};

type CResult<T> = candle_core::Result<T>;

/// BERT attention with its output projection and post-norm: self-attention (causal in the
/// decoders) or cross-attention to a source.
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

    /// `LN(out(attention(xs → (k, v))) + xs)`. `xs` may have batch 1 against a batched source
    /// (one text against several images: it is broadcast), or a batch against a source of
    /// batch 1 (beams attending to one image).
    fn forward_kv(&self, xs: &Tensor, (k, v): &(Tensor, Tensor), causal: bool) -> CResult<Tensor> {
        let (n, s, d) = xs.dims3()?;
        let b = k.dim(0)?;
        if b == 1 && n > 1 && !causal {
            // Several sequences (beams) against one source: one row block of queries, so the
            // source's keys and values are not copied per sequence.
            return self.forward_kv(&xs.reshape((1, n * s, d))?, &(k.clone(), v.clone()), false)?.reshape((n, s, d));
        }
        let xs = if n == b { xs.clone() } else { xs.broadcast_as((b, s, d))?.contiguous()? };
        let t = k.dim(2)?;
        let (h, hd) = (self.heads, d / self.heads);
        let q = self.query.forward(&xs, None)?.reshape((b, s, h, hd))?.transpose(1, 2)?.contiguous()?;
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

/// One layer: self-attention, cross-attention to the source when there is one, MLP; post-norm.
struct TextLayer {
    attention: BertAttention,
    cross: BertAttention,
    intermediate: Dense,
    act: HiddenAct,
    output: Dense,
    ln: LayerNorm,
}

impl TextLayer {
    fn forward(&self, xs: &Tensor, causal: bool, source: Option<&(Tensor, Tensor)>) -> CResult<Tensor> {
        let xs = self.attention.forward_kv(xs, &self.attention.keys_values(xs)?, causal)?;
        let xs = match source {
            Some(kv) => self.cross.forward_kv(&xs, kv, false)?,
            None => xs,
        };
        let hidden = self.intermediate.forward(&xs, Some(self.act))?;
        self.ln.forward(&(self.output.forward(&hidden, None)? + &xs)?)
    }
}

/// Per-layer cross-attention keys and values of one source: computed once, used at every
/// decoding step (or for every text matched against the same images).
pub struct SourceKeysValues(Vec<(Tensor, Tensor)>);

/// `BlipTextModel` without a pooler: embeddings and layers.
pub struct BertStack {
    words: Tensor,
    positions: Tensor,
    emb_ln: LayerNorm,
    layers: Vec<TextLayer>,
}

impl BertStack {
    /// Builds the stack from weights named as in transformers (`embeddings`, `encoder.layer.N`).
    pub fn load(c: &BlipTextConfig, vb: VarBuilder) -> CResult<Self> {
        let d = c.hidden_size;
        let emb = vb.pp("embeddings");
        let layers = (0..c.num_hidden_layers)
            .map(|i| {
                let vb = vb.pp("encoder").pp("layer").pp(i);
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
        Ok(BertStack {
            words: emb.get((c.vocab_size, d), "word_embeddings.weight")?,
            positions: emb.get((c.max_position_embeddings, d), "position_embeddings.weight")?,
            emb_ln: layer_norm(d, c.layer_norm_eps, emb.pp("LayerNorm"))?,
            layers,
        })
    }

    /// The longest sequence the position embeddings cover.
    pub fn max_tokens(&self) -> usize {
        self.positions.dims()[0]
    }

    /// The cross-attention keys and values of a source `[b, t, e]`, one pair per layer.
    pub fn source_keys_values(&self, source: &Tensor) -> CResult<SourceKeysValues> {
        Ok(SourceKeysValues(self.layers.iter().map(|l| l.cross.keys_values(source)).collect::<CResult<Vec<_>>>()?))
    }

    /// The states `[b, s, d]` of `ids` (one sequence; `b` is the source's batch, or 1 without
    /// a source).
    pub fn forward(&self, ids: &[u32], causal: bool, source: Option<&SourceKeysValues>) -> CResult<Tensor> {
        self.forward_batch(&[ids], causal, source)
    }

    /// The states `[n, s, d]` of `n` sequences of equal length `s` (beams), against a source
    /// of batch 1 or `n`.
    pub fn forward_batch(&self, seqs: &[&[u32]], causal: bool, source: Option<&SourceKeysValues>) -> CResult<Tensor> {
        let (n, s) = (seqs.len(), seqs.first().map_or(0, |x| x.len()));
        if s == 0 || s > self.max_tokens() {
            candle_core::bail!("{s} tokens: the text model takes 1 to {}", self.max_tokens());
        }
        if seqs.iter().any(|x| x.len() != s) {
            candle_core::bail!("sequences of different lengths in one batch");
        }
        let flat: Vec<u32> = seqs.iter().flat_map(|x| x.iter().copied()).collect();
        let idx = Tensor::new(flat.as_slice(), self.words.device())?;
        let xs = self.words.index_select(&idx, 0)?.reshape((n, s, self.words.dim(1)?))?;
        let xs = xs.broadcast_add(&self.positions.narrow(0, 0, s)?)?;
        let mut xs = self.emb_ln.forward(&xs)?;
        for (i, layer) in self.layers.iter().enumerate() {
            xs = layer.forward(&xs, causal, source.map(|kv| &kv.0[i]))?;
        }
        Ok(xs)
    }
}

/// `BlipTextLMHeadModel`: token ids and a source to next-token logits.
pub struct BlipTextDecoder {
    bert: BertStack,
    transform: Dense,
    act: HiddenAct,
    transform_ln: LayerNorm,
    /// The LM head's weight, transposed (`[d, vocab]`); tied to the word embeddings.
    vocab_t: Tensor,
    vocab_bias: Tensor,
}

impl BlipTextDecoder {
    /// Builds the decoder from weights named as in transformers (`bert`, `cls`).
    pub fn load(c: &BlipTextConfig, vb: VarBuilder) -> CResult<Self> {
        let d = c.hidden_size;
        let bert = BertStack::load(c, vb.pp("bert"))?;
        let head = vb.pp("cls").pp("predictions");
        let vocab = if head.contains_tensor("decoder.weight") {
            head.get((c.vocab_size, d), "decoder.weight")?
        } else {
            bert.words.clone()
        };
        Ok(BlipTextDecoder {
            bert,
            transform: dense(d, d, head.pp("transform").pp("dense"))?,
            act: c.hidden_act,
            transform_ln: layer_norm(d, c.layer_norm_eps, head.pp("transform").pp("LayerNorm"))?,
            vocab_t: vocab.t()?.contiguous()?,
            vocab_bias: head.get(c.vocab_size, "bias")?,
        })
    }

    /// The cross-attention keys and values of a source `[1, t, e]` (image or question states).
    pub fn source_keys_values(&self, source: &Tensor) -> CResult<SourceKeysValues> {
        self.bert.source_keys_values(source)
    }

    /// Logits `[vocab]` of the token after `ids`, attending to a source.
    pub fn next_logits(&self, ids: &[u32], source: &SourceKeysValues) -> CResult<Tensor> {
        self.next_logits_batch(&[ids], source)?.squeeze(0)
    }

    /// Logits `[n, vocab]` of the token after each of `n` sequences of equal length (beams),
    /// in one pass: the weights are read once for all of them.
    pub fn next_logits_batch(&self, seqs: &[&[u32]], source: &SourceKeysValues) -> CResult<Tensor> {
        let xs = self.bert.forward_batch(seqs, true, Some(source))?;
        let last = xs.narrow(1, xs.dim(1)? - 1, 1)?.squeeze(1)?;
        let h = self.transform_ln.forward(&self.transform.forward(&last, Some(self.act))?)?;
        h.matmul(&self.vocab_t)?.broadcast_add(&self.vocab_bias)
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

/// Greedy decoding: up to `max_new` tokens after `start`, stopping after `stop`.
pub fn greedy(
    decoder: &BlipTextDecoder,
    source: &SourceKeysValues,
    start: &[u32],
    stop: u32,
    max_new: usize,
) -> CResult<Vec<DecodeStep>> {
    let mut ids = start.to_vec();
    let mut steps = Vec::new();
    for _ in 0..max_new {
        let logits = decoder.next_logits(&ids, source)?;
        let token = logits.argmax(0)?.to_scalar::<u32>()?;
        steps.push(DecodeStep { token, logits });
        ids.push(token);
        if token == stop {
            break;
        }
    }
    Ok(steps)
}

/// Beam search as transformers' `generate(num_beams=N)` with its defaults (length penalty 1,
/// no early stopping): at each step the best `2N` continuations of the `N` beams are ranked by
/// summed log-probability; one ending in `stop` among the first `N` becomes a finished
/// sequence scored by its sum over its new-token count; the others continue. Returns the best
/// sequence's ids, `start` included. One beam is greedy decoding.
pub fn beam_search(
    decoder: &BlipTextDecoder,
    source: &SourceKeysValues,
    start: &[u32],
    stop: u32,
    beams: usize,
    max_new: usize,
) -> CResult<Vec<u32>> {
    if beams <= 1 {
        let steps = greedy(decoder, source, start, stop, max_new)?;
        return Ok(start.iter().copied().chain(steps.iter().map(|s| s.token)).collect());
    }
    let mut running: Vec<(Vec<u32>, f32)> = vec![(start.to_vec(), 0.0)];
    let mut finished: Vec<(Vec<u32>, f32)> = Vec::new();
    for step in 1..=max_new {
        let mut candidates: Vec<(f32, usize, u32)> = Vec::new();
        let seqs: Vec<&[u32]> = running.iter().map(|(ids, _)| ids.as_slice()).collect();
        let logps = candle_nn::ops::log_softmax(&decoder.next_logits_batch(&seqs, source)?, 1)?.to_vec2::<f32>()?;
        for (b, ((_, score), logp)) in running.iter().zip(logps).enumerate() {
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
            if token == stop {
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
        // Done once enough sequences finished and no running beam can beat the worst of them.
        if finished.len() >= beams {
            finished.sort_by(|x, y| y.1.total_cmp(&x.1));
            finished.truncate(beams);
            let best_running = running.first().map_or(f32::NEG_INFINITY, |r| r.1 / step as f32);
            if finished[beams - 1].1 >= best_running {
                break;
            }
        }
    }
    let new_tokens = |ids: &Vec<u32>| (ids.len() - start.len()).max(1) as f32;
    finished.extend(running.into_iter().map(|(ids, score)| {
        let n = new_tokens(&ids);
        (ids, score / n)
    }));
    let best = finished.into_iter().max_by(|x, y| x.1.total_cmp(&y.1));
    Ok(best.map(|b| b.0).unwrap_or_else(|| start.to_vec()))
}
