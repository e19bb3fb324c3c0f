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
use crate::models::bert::BertLayout;
pub use crate::models::bert::{BertStack, DecoderCache, SourceKeysValues};
use crate::models::nn::layers::{dense, layer_norm};
use crate::models::nn::{Dense, HiddenAct};

type CResult<T> = candle_core::Result<T>;

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
        let bert = BertStack::load(&c.shape(), BertLayout::Bert, Some(c.encoder_hidden_size), vb.pp("bert"))?;
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

    /// Logits `[n, vocab]` of the token after each of `n` sequences of equal length, given in
    /// consecutive runs each attending to its own source (one image's beams, or several
    /// images'), in one pass: the weights are read once for all of them. With `cache`: whole
    /// sequences while it is empty, then only each sequence's newest token (see
    /// [`BertStack::forward_grouped`]).
    pub fn next_logits(
        &self,
        seqs: &[&[u32]],
        groups: &[(&SourceKeysValues, usize)],
        cache: Option<&mut DecoderCache>,
    ) -> CResult<Tensor> {
        let xs = self.bert.forward_grouped(seqs, true, groups, cache)?;
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
    let mut cache = DecoderCache::default();
    for _ in 0..max_new {
        // The whole start first, then the newest token.
        let seq = if cache.is_empty() { &ids[..] } else { &ids[ids.len() - 1..] };
        let logits = decoder.next_logits(&[seq], &[(source, 1)], Some(&mut cache))?.squeeze(0)?;
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
    let mut best = beam_search_many(decoder, &[source], start, stop, beams, max_new)?;
    Ok(best.pop().expect("one search per source"))
}

/// [`beam_search`] for several sources at once (one caption per image): every step runs the
/// running beams of all unfinished searches through the decoder in one pass, so its weights
/// are read once per step for all of them rather than once per image. Each search advances
/// exactly as it would alone.
pub fn beam_search_many(
    decoder: &BlipTextDecoder,
    sources: &[&SourceKeysValues],
    start: &[u32],
    stop: u32,
    beams: usize,
    max_new: usize,
) -> CResult<Vec<Vec<u32>>> {
    let beams = beams.max(1);
    let mut searches: Vec<Search> = sources.iter().map(|_| Search::new(start, beams)).collect();
    // The cache's rows are the running beams of the active searches, in order.
    let mut cache = DecoderCache::default();
    let mut active: Vec<usize> = (0..searches.len()).collect();
    for step in 1..=max_new {
        if active.is_empty() {
            break;
        }
        let rows = {
            // The whole start first, then each beam's newest token.
            let seqs: Vec<&[u32]> = active
                .iter()
                .flat_map(|&i| searches[i].running.iter())
                .map(|(ids, _)| if cache.is_empty() { ids.as_slice() } else { &ids[ids.len() - 1..] })
                .collect();
            let groups: Vec<(&SourceKeysValues, usize)> =
                active.iter().map(|&i| (sources[i], searches[i].running.len())).collect();
            let logits = decoder.next_logits(&seqs, &groups, Some(&mut cache))?;
            // Greedy picks the largest logit (as `greedy` does); beams rank log-probabilities.
            if beams == 1 { logits } else { candle_nn::ops::log_softmax(&logits, 1)? }.to_vec2::<f32>()?
        };
        let mut rows = rows.into_iter();
        let (mut keep, mut first) = (Vec::new(), 0u32);
        for &i in &active {
            let n = searches[i].running.len();
            let mine: Vec<Vec<f32>> = rows.by_ref().take(n).collect();
            let parents = searches[i].advance(mine, step, stop);
            if !searches[i].done {
                keep.extend(parents.iter().map(|&p| first + p as u32));
            }
            first += n as u32;
        }
        active.retain(|&i| !searches[i].done);
        cache.select(&keep)?;
    }
    Ok(searches.into_iter().map(|s| s.best(start)).collect())
}

/// One caption's search: its running beams (ids, summed log-probability) and finished
/// sequences (ids, score per new token).
struct Search {
    beams: usize,
    running: Vec<(Vec<u32>, f32)>,
    finished: Vec<(Vec<u32>, f32)>,
    done: bool,
}

impl Search {
    fn new(start: &[u32], beams: usize) -> Self {
        Search { beams, running: vec![(start.to_vec(), 0.0)], finished: Vec::new(), done: false }
    }

    /// One step from each running beam's next-token scores (logits when greedy, else
    /// log-probabilities), in the order of `running`. Returns, for each beam now running, the
    /// index of the beam it extends.
    fn advance(&mut self, scores: Vec<Vec<f32>>, step: usize, stop: u32) -> Vec<usize> {
        let beams = self.beams;
        if beams == 1 {
            let logits = &scores[0];
            let token = (0..logits.len()).fold(0, |best, t| if logits[t] > logits[best] { t } else { best }) as u32;
            self.running[0].0.push(token);
            self.done = token == stop;
            return vec![0];
        }
        let mut candidates: Vec<(f32, usize, u32)> = Vec::new();
        for (b, ((_, score), logp)) in self.running.iter().zip(scores).enumerate() {
            let mut order: Vec<u32> = (0..logp.len() as u32).collect();
            let keep = (2 * beams).min(order.len());
            order.select_nth_unstable_by(keep - 1, |&x, &y| logp[y as usize].total_cmp(&logp[x as usize]));
            candidates.extend(order[..keep].iter().map(|&t| (score + logp[t as usize], b, t)));
        }
        candidates.sort_by(|x, y| y.0.total_cmp(&x.0));
        let mut next = Vec::with_capacity(beams);
        let mut parents = Vec::with_capacity(beams);
        for (rank, &(score, b, token)) in candidates.iter().enumerate() {
            let mut ids = self.running[b].0.clone();
            ids.push(token);
            if token == stop {
                if rank < beams {
                    self.finished.push((ids, score / step as f32));
                }
                continue;
            }
            next.push((ids, score));
            parents.push(b);
            if next.len() == beams {
                break;
            }
        }
        self.running = next;
        // Done once enough sequences finished and no running beam can beat the worst of them.
        if self.finished.len() >= beams {
            self.finished.sort_by(|x, y| y.1.total_cmp(&x.1));
            self.finished.truncate(beams);
            let best_running = self.running.first().map_or(f32::NEG_INFINITY, |r| r.1 / step as f32);
            self.done = self.finished[beams - 1].1 >= best_running;
        }
        self.done |= self.running.is_empty();
        parents
    }

    /// The best sequence, `start` included (`start` alone when there is none).
    fn best(self, start: &[u32]) -> Vec<u32> {
        if self.beams == 1 {
            return self.running.into_iter().next().map_or_else(|| start.to_vec(), |r| r.0);
        }
        let new_tokens = |ids: &Vec<u32>| (ids.len() - start.len()).max(1) as f32;
        let mut finished = self.finished;
        finished.extend(self.running.into_iter().map(|(ids, score)| {
            let n = new_tokens(&ids);
            (ids, score / n)
        }));
        let best = finished.into_iter().max_by(|x, y| x.1.total_cmp(&y.1));
        best.map_or_else(|| start.to_vec(), |b| b.0)
    }
}
