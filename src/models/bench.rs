//! How fast a CLIP runs on this machine (`clipdex bench`): the CPU's features, what each
//! `--precision` resolves to here, and images/s and texts/s at a batch size. A CLIP with
//! random weights at ViT-B/32's shapes stands in where no model should be downloaded (a
//! forward pass costs the same whatever the weights hold).

use std::time::{Duration, Instant};

use candle_core::{DType, Device, Shape, Tensor};
use candle_nn::var_builder::SimpleBackend;
use candle_nn::{Init, VarBuilder};

use crate::error::{Error, Result};
use crate::models::clip::{ClipConfig, ClipEmbedder, ClipTokenizer};
use crate::models::nn::cpu::{self, Feature};
use crate::models::precision::Precision;
use crate::models::preprocess::ImageProcessor;

/// Weights drawn at random (N(0, 0.02)) in whatever shape the model asks for.
struct RandomWeights;

impl SimpleBackend for RandomWeights {
    fn get(&self, s: Shape, name: &str, _: Init, dtype: DType, dev: &Device) -> candle_core::Result<Tensor> {
        if name == "logit_scale" {
            return Tensor::new(100f32.ln(), dev)?.to_dtype(dtype);
        }
        Tensor::randn(0f32, 0.02, s, dev)?.to_dtype(dtype)
    }

    fn get_unchecked(&self, name: &str, _: DType, _: &Device) -> candle_core::Result<Tensor> {
        candle_core::bail!("no shape for {name}")
    }

    fn contains_tensor(&self, _: &str) -> bool {
        true
    }
}

/// A CLIP at ViT-B/32's shapes with random weights, and a tokenizer that knows only its
/// special tokens (every word becomes the end token: the tower's cost depends on the number
/// of tokens, not on which).
pub fn random_vit_b32(device: &Device) -> Result<ClipEmbedder> {
    use tokenizers::models::wordlevel::WordLevel;
    let name = "random ViT-B/32";
    let vocab = [("<|startoftext|>".to_string(), 49406), ("<|endoftext|>".to_string(), 49407)];
    let model = WordLevel::builder()
        .vocab(vocab.into_iter().collect())
        .unk_token("<|endoftext|>".to_string())
        .build()
        .map_err(|e| Error::model(name, format!("placeholder tokenizer: {e}")))?;
    let mut inner = tokenizers::Tokenizer::new(model);
    inner.with_pre_tokenizer(Some(tokenizers::pre_tokenizers::whitespace::Whitespace {}));
    let tokenizer = ClipTokenizer::from_tokenizer(name, inner, 77)?;
    let vb = VarBuilder::from_backend(Box::new(RandomWeights), DType::F32, device.clone());
    ClipEmbedder::from_parts(
        name,
        ClipConfig::vit_base_patch32(),
        vb,
        tokenizer,
        ImageProcessor::clip_default(224),
        device,
    )
}

/// A CPU feature as detected and as used.
#[derive(Debug, Clone, serde::Serialize)]
pub struct FeatureState {
    /// Its name (`avx2`, `avx512vnni`, …).
    pub name: &'static str,
    /// Whether the CPU reports it.
    pub detected: bool,
    /// Whether the kernels use it (detected and not switched off by `CLIPDEX_CPU_FEATURES`).
    pub used: bool,
}

/// The features the kernels are picked by on this architecture.
pub fn cpu_features() -> Vec<FeatureState> {
    Feature::ALL
        .iter()
        .filter(|f| f.of_this_architecture())
        .map(|&f| FeatureState { name: f.name(), detected: cpu::detected(f), used: cpu::has(f) })
        .collect()
}

/// The CPU class of the speed tables (`AVX-512`, `AVX2+VNNI`, `AVX2`, `NEON+i8mm`, `NEON+dotprod`,
/// `NEON`, `portable`; ARM ones with `+bf16` where present: see `cpu::class`).
pub fn cpu_class() -> &'static str {
    cpu::class()
}

/// What each precision that can be asked for runs as on this machine (`auto` included).
pub fn precisions() -> Vec<(Precision, Precision)> {
    Precision::ASKABLE.iter().map(|&p| (p, p.effective())).collect()
}

/// A measured rate.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Rate {
    /// Items (images or texts) per call.
    pub batch: usize,
    /// Items per second (the median call's).
    pub per_second: f64,
    /// The median call's milliseconds.
    pub ms_per_batch: f64,
}

impl Rate {
    fn of(batch: usize, median: Duration) -> Self {
        let secs = median.as_secs_f64().max(1e-9);
        Rate { batch, per_second: batch as f64 / secs, ms_per_batch: secs * 1e3 }
    }
}

/// The median of `runs` calls of `f` after one warm-up call (which also lays the weights out).
fn median_time(runs: usize, mut f: impl FnMut() -> Result<()>) -> Result<Duration> {
    f()?;
    let mut times = Vec::with_capacity(runs.max(1));
    for _ in 0..runs.max(1) {
        let t = Instant::now();
        f()?;
        times.push(t.elapsed());
    }
    times.sort();
    Ok(times[times.len() / 2])
}

/// The image tower's rate on `batch` random images at the model's input size.
pub fn image_rate(clip: &ClipEmbedder, batch: usize, runs: usize) -> Result<Rate> {
    // The size the processor hands the image tower (CLIP's crop, SigLIP's exact resize).
    let (height, width) = clip
        .processor()
        .output_size()
        .ok_or_else(|| Error::model(clip.name(), "bench input: the processor gives no fixed size"))?;
    let pixels = Tensor::randn(0f32, 1.0, (batch, 3, height as usize, width as usize), clip.device())
        .map_err(|e| Error::model(clip.name(), format!("bench input: {e}")))?;
    Ok(Rate::of(batch, median_time(runs, || clip.embed_pixels(&pixels).map(drop))?))
}

/// The text tower's rate on `batch` texts that fill the model's context.
pub fn text_rate(clip: &ClipEmbedder, batch: usize, runs: usize) -> Result<Rate> {
    let long = "a photo of a small dog running on the beach near the sea at sunset ".repeat(8);
    let ids = clip.tokenize(&long)?;
    let batch_ids = vec![ids; batch];
    Ok(Rate::of(batch, median_time(runs, || clip.embed_token_ids(&batch_ids).map(drop))?))
}

/// One image's self-attention in every layer of a ViT-B encoder (12 layers, 12 heads of 64)
/// over `tokens` tokens: BLIP's 577 at 384 px, CLIPSeg's 485 at 352 px, CLIP ViT-B/32's 50.
/// Only the attention (scores, softmax, weighted values), not the projections around it.
pub fn attention_rate(tokens: usize, runs: usize) -> Result<Rate> {
    let (d, heads, layers) = (768, 12, 12);
    let qkv = Tensor::randn(0f32, 1.0, (1, tokens, 3 * d), &Device::Cpu)
        .map_err(|e| Error::Invalid(format!("bench input: {e}")))?;
    let t = median_time(runs, || {
        for _ in 0..layers {
            crate::models::nn::kernels::attention(&qkv, heads, false, None)
                .map_err(|e| Error::Invalid(format!("attention: {e}")))?;
        }
        Ok(())
    })?;
    Ok(Rate::of(1, t))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_random_model_tokenizes_to_the_full_context() {
        let tokenizer_only = random_vit_b32(&Device::Cpu).unwrap();
        let ids = tokenizer_only.tokenize(&"word ".repeat(100)).unwrap();
        assert_eq!(ids.len(), 77);
        assert!(!cpu_features().is_empty());
        assert!(precisions().iter().any(|(asked, _)| *asked == Precision::Auto));
    }
}
