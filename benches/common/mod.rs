#![allow(dead_code)] // each benchmark uses a different part

//! Shared by the benchmarks: a CLIP with random weights at ViT-B/32's shapes and a timer.

use std::path::Path;
use std::time::{Duration, Instant};

use candle_core::{DType, Device, Shape, Tensor};
use candle_nn::var_builder::SimpleBackend;
use candle_nn::{Init, VarBuilder};
use clipdex::ClipEmbedder;
use clipdex::models::clip::{ClipConfig, ClipTokenizer};
use clipdex::models::preprocess::ImageProcessor;

/// Random weights of whatever shape the model asks for.
pub struct RandomWeights;

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

/// Median wall time of `runs` calls after one warm-up call.
pub fn median_time(runs: usize, mut f: impl FnMut()) -> Duration {
    f();
    let mut times: Vec<Duration> = (0..runs)
        .map(|_| {
            let t = Instant::now();
            f();
            t.elapsed()
        })
        .collect();
    times.sort();
    times[runs / 2]
}

/// ViT-B/32 with random weights and the real CLIP tokenizer (from the test fixtures).
pub fn random_vit_b32(device: &Device) -> clipdex::Result<ClipEmbedder> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let vb = VarBuilder::from_backend(Box::new(RandomWeights), DType::F32, device.clone());
    let tokenizer = ClipTokenizer::from_json("bench", &root.join("tests/fixtures/clip-tiny-p32/tokenizer.json"), 77)?;
    Ok(ClipEmbedder::from_parts(
        "random ViT-B/32",
        ClipConfig::vit_base_patch32(),
        vb,
        tokenizer,
        ImageProcessor::clip_default(224),
        device,
    )?
    .with_precision(precision()))
}

/// The precision benchmarks run the CLIP at: `CLIPDEX_PRECISION` (f32 by default), as the
/// command line takes it.
#[allow(dead_code)]
pub fn precision() -> clipdex::models::precision::Precision {
    std::env::var("CLIPDEX_PRECISION").ok().and_then(|p| p.parse().ok()).unwrap_or_default()
}

/// CLIPSeg at `CIDAS/clipseg-rd64-refined`'s shapes with random weights and the real CLIP
/// tokenizer, for 352 px inputs.
pub fn random_clipseg_refined(device: &Device) -> clipdex::Result<clipdex::models::clipseg::Segmenter> {
    use clipdex::models::clipseg::{ClipSegConfig, INPUT_SIZE, Segmenter};
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let vb = VarBuilder::from_backend(Box::new(RandomWeights), DType::F32, device.clone());
    let tokenizer = ClipTokenizer::from_json("bench", &root.join("tests/fixtures/clip-tiny-p32/tokenizer.json"), 77)?;
    Segmenter::from_parts(
        "random clipseg-rd64-refined",
        &ClipSegConfig::rd64_refined(),
        vb,
        tokenizer,
        ImageProcessor::vit_default(INPUT_SIZE),
        device,
    )
}

fn blip_tokenizer() -> clipdex::Result<tokenizers::Tokenizer> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    tokenizers::Tokenizer::from_file(root.join("tests/fixtures/blip/blip-tiny-captioning/tokenizer.json"))
        .map_err(|e| clipdex::Error::Invalid(e.to_string()))
}

fn random_vb(device: &Device) -> VarBuilder<'static> {
    VarBuilder::from_backend(Box::new(RandomWeights), DType::F32, device.clone())
}

/// BLIP captioning at `Salesforce/blip-image-captioning-base`'s shapes with random weights and
/// the real BERT tokenizer (from the test fixture).
pub fn random_blip_captioning(device: &Device) -> clipdex::Result<clipdex::models::blip::BlipCaptioner> {
    use clipdex::models::blip::{BlipCaptioner, BlipConfig};
    Ok(BlipCaptioner::from_parts(&BlipConfig::captioning_base(), random_vb(device), blip_tokenizer()?, device)?
        .with_precision(precision()))
}

/// BLIP VQA at `Salesforce/blip-vqa-base`'s shapes with random weights.
pub fn random_blip_vqa(device: &Device) -> clipdex::Result<clipdex::models::blip::BlipAnswerer> {
    use clipdex::models::blip::{BlipAnswerer, BlipConfig};
    Ok(BlipAnswerer::from_parts(&BlipConfig::captioning_base(), random_vb(device), blip_tokenizer()?, device)?
        .with_precision(precision()))
}

/// BLIP image-text matching at `Salesforce/blip-itm-base-coco`'s shapes with random weights.
pub fn random_blip_itm(device: &Device) -> clipdex::Result<clipdex::models::blip::BlipMatcher> {
    use clipdex::models::blip::{BlipConfig, BlipMatcher};
    Ok(BlipMatcher::from_parts(&BlipConfig::captioning_base(), random_vb(device), blip_tokenizer()?, device)?
        .with_precision(precision()))
}

/// With `CLIPDEX_TORCH_PYTHON` set (a Python with torch and transformers): transformers' times
/// for the rows of `ours` that `tools/bench_models_torch.py MODEL` also measures, in fp32 and,
/// when clipdex runs a reduced precision (bf16 or int8), under bf16 autocast too (PyTorch's
/// fastest CPU mode), printed beside clipdex's with the speed-ups (PyTorch's time / clipdex's).
pub fn compare_with_torch(model: &str, runs: usize, ours: &[(String, Duration)]) {
    let Ok(python) = std::env::var("CLIPDEX_TORCH_PYTHON") else { return };
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tools/bench_models_torch.py");
    let threads = rayon::current_num_threads().to_string();
    let mut modes = vec![("fp32", false)];
    if precision().effective() != clipdex::models::precision::Precision::F32 {
        modes.push(("bf16 autocast", true));
    }
    let mut columns = Vec::new();
    for (label, bf16) in &modes {
        let mut cmd = std::process::Command::new(&python);
        cmd.arg(&script).arg(model).args(["--threads", &threads, "--runs", &runs.to_string()]);
        if *bf16 {
            cmd.arg("--bf16");
        }
        let out = match cmd.output() {
            Ok(out) if out.status.success() => out,
            Ok(out) => return eprintln!("the PyTorch side failed:\n{}", String::from_utf8_lossy(&out.stderr)),
            Err(e) => return eprintln!("cannot run the PyTorch side: {e}"),
        };
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        if let Some(header) = text.lines().next() {
            println!("{header}");
        }
        let prefix = format!("torch {model}, ");
        let times: std::collections::HashMap<String, f64> = text
            .lines()
            .filter_map(|l| l.strip_prefix(&prefix)?.rsplit_once(": "))
            .filter_map(|(name, ms)| Some((name.to_string(), ms.trim_end_matches(" ms").parse().ok()?)))
            .collect();
        columns.push((*label, times));
    }
    print!("{:<44} {:>10}", "same run, ms", "clipdex");
    for (label, _) in &columns {
        print!(" {:>14} {:>8}", format!("torch {label}"), "speed-up");
    }
    println!();
    for (name, ours) in ours {
        let ours = ours.as_secs_f64() * 1e3;
        if !columns.iter().any(|(_, t)| t.contains_key(name)) {
            continue;
        }
        print!("{name:<44} {ours:>10.0}");
        for (_, times) in &columns {
            match times.get(name) {
                Some(theirs) => print!(" {theirs:>14.0} {:>7.2}x", theirs / ours),
                None => print!(" {:>14} {:>8}", "-", ""),
            }
        }
        println!();
    }
}

/// Where the benchmarks run the models: `CLIPDEX_DEVICE` (`cpu` by default, or `cuda` in a
/// build with `--features cuda`), as the command line takes it.
pub fn device() -> clipdex::Result<Device> {
    std::env::var("CLIPDEX_DEVICE").unwrap_or_else(|_| "cpu".into()).parse::<clipdex::DeviceChoice>()?.open()
}
