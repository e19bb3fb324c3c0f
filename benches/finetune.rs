//! Seconds per fine-tuning step at ViT-B/32 shapes (random weights: a step costs the same
//! whatever the weights hold), batch 32, for each `--train` scope, and the process's peak
//! memory. With `CLIPDEX_TORCH_PYTHON` set to a Python with torch and transformers, runs
//! `tools/bench_finetune_torch.py` in the same run and prints the ratio.
//!
//!     cargo bench --bench finetune
//!     CLIPDEX_TORCH_PYTHON=~/venv-ref/bin/python cargo bench --bench finetune

mod common;

use std::path::Path;

use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;
use clipdex::models::clip::ClipConfig;
use clipdex::models::clip::train::{AdamW, AdamWConfig, TrainScope, TrainableClip};
use clipdex::models::precision::Precision;
use common::median_time;

const BATCH: usize = 32;

fn peak_rss_mb() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines().find_map(|l| {
                l.strip_prefix("VmHWM:").map(|v| v.trim().trim_end_matches(" kB").trim().parse::<u64>().unwrap_or(0))
            })
        })
        .unwrap_or(0)
        / 1024
}

fn main() -> clipdex::Result<()> {
    let device = Device::Cpu;
    if std::env::var_os("CLIPDEX_BENCH_RETURN_MEMORY").is_none() {
        clipdex::models::clip::train::keep_freed_memory();
    }
    let config = ClipConfig::vit_base_patch32();
    let vb = VarBuilder::from_backend(Box::new(common::RandomWeights), DType::F32, device.clone());
    let pixels = Tensor::randn(0f32, 1.0, (BATCH, 3, 224, 224), &device)?;
    // 16-token captions: start, 14 words, end.
    let texts: Vec<Vec<u32>> = (0..BATCH)
        .map(|i| {
            std::iter::once(49406)
                .chain((0..14).map(|j| 320 + (i * 14 + j) as u32))
                .chain(std::iter::once(49407))
                .collect()
        })
        .collect();
    println!(
        "clipdex fine-tuning benchmark: ViT-B/32 shapes, random weights, batch {BATCH}, f32, {} threads",
        rayon::current_num_threads()
    );
    // CLIPDEX_BENCH_SCOPES=all,adapter runs only those.
    let only = std::env::var("CLIPDEX_BENCH_SCOPES").ok();
    let wanted = |name: &str| only.as_deref().is_none_or(|o| o.split(',').any(|s| s == name));
    let mut ours = Vec::new();
    for (name, scope) in
        [("projection", TrainScope::Projection), ("last:2", TrainScope::Last(2)), ("all", TrainScope::All)]
    {
        if !wanted(name) {
            continue;
        }
        let model = TrainableClip::load(&config, &vb, scope)?;
        let mut opt = AdamW::new(
            model.vars().values(),
            AdamWConfig { lr: 1e-5, betas: (0.9, 0.98), eps: 1e-6, weight_decay: 0.2 },
        )?;
        // As `finetune` runs: what frozen layers compute is computed once per pair.
        let started = std::time::Instant::now();
        let prefixes = if model.frozen_layers() == (0, 0) {
            None
        } else {
            let p = (0..BATCH).map(|i| model.frozen_prefix(&pixels.get(i).unwrap(), &texts[i]));
            Some(p.collect::<candle_core::Result<Vec<_>>>()?)
        };
        let once = started.elapsed().as_secs_f64() / BATCH as f64;
        let t = median_time(3, || {
            let loss = match &prefixes {
                Some(p) => model.contrastive_loss_from(&p.iter().collect::<Vec<_>>()).unwrap(),
                None => model.contrastive_loss(&pixels, &texts, 49407).unwrap(),
            };
            opt.backward_step(&loss).unwrap();
        });
        let note = if prefixes.is_some() {
            format!(", plus {once:.3} s once per pair (frozen layers)")
        } else {
            String::new()
        };
        println!(
            "--train {name:<10} {:>7.2} s per step{note}   (peak RSS so far {} MB)",
            t.as_secs_f64(),
            peak_rss_mb()
        );
        ours.push((name, t.as_secs_f64()));
    }
    // --train adapter on 1,000 pairs whose image vectors the library holds: the text tower runs
    // once per caption, then 5 epochs of batch-32 steps on [1000, 512] vectors.
    if !wanted("adapter") {
        return torch_side(&ours);
    }
    // Both precisions of the frozen text pass, or the one CLIPDEX_PRECISION names.
    let mut precisions = match std::env::var("CLIPDEX_PRECISION") {
        Ok(_) => vec![common::precision().effective()],
        Err(_) => vec![Precision::F32, Precision::Bf16.effective()],
    };
    precisions.dedup();
    for precision in precisions {
        adapter_run(&config, &vb, precision, &device)?;
    }
    torch_side(&ours)
}

/// One `--train adapter` run at `precision` (of the frozen text pass), timed and printed.
fn adapter_run(config: &ClipConfig, vb: &VarBuilder, precision: Precision, device: &Device) -> clipdex::Result<()> {
    let model = TrainableClip::load(config, vb, TrainScope::Adapter)?;
    // As `finetune` runs it: the frozen text tower on the fused inference path. (Timed from
    // here: making random weights is this benchmark's own cost; `finetune` maps a file.)
    let mut inference = clipdex::models::clip::ClipModel::load(config, vb.clone())?;
    inference.set_precision(precision);
    let images = clipdex::models::clip::train::normalize(&Tensor::randn(0f32, 1.0, (1000, 512), device)?)?;
    let started = std::time::Instant::now();
    let captions: Vec<Vec<u32>> = (0..1000)
        .map(|i| {
            std::iter::once(49406)
                .chain((0..10).map(|j| 320 + ((i * 10 + j) % 40000) as u32))
                .chain(std::iter::once(49407))
                .collect()
        })
        .collect();
    let pooled = Tensor::cat(
        &captions
            .chunks(64)
            .map(|c| inference.text_pooled(c, 49407, device))
            .collect::<candle_core::Result<Vec<_>>>()?,
        0,
    )?;
    let texts_done = started.elapsed();
    let adapter = candle_core::Var::from_tensor(&Tensor::eye(512, DType::F32, device)?)?;
    let (tp, ls) = (model.vars()["text_projection.weight"].clone(), model.vars()["logit_scale"].clone());
    let mut opt =
        AdamW::new([&adapter, &tp, &ls], AdamWConfig { lr: 1e-3, betas: (0.9, 0.98), eps: 1e-6, weight_decay: 0.2 })?;
    for _ in 0..5 {
        for start in (0..1000).step_by(BATCH) {
            let n = BATCH.min(1000 - start);
            let image = images.narrow(0, start, n)?.matmul(&adapter.as_tensor().t()?)?;
            let text = pooled.narrow(0, start, n)?.matmul(&tp.as_tensor().t()?)?;
            let loss = clipdex::models::clip::train::clip_loss(&image, &text, ls.as_tensor())?;
            opt.backward_step(&loss)?;
        }
    }
    println!(
        "--train adapter    1,000 stored vectors, 5 epochs, text pass {precision}: {:.2} s ({:.2} s of it the text \
         tower over the captions)",
        started.elapsed().as_secs_f64(),
        texts_done.as_secs_f64()
    );
    Ok(())
}

/// With `CLIPDEX_TORCH_PYTHON` set: PyTorch's figures in the same run, and the ratios.
fn torch_side(ours: &[(&str, f64)]) -> clipdex::Result<()> {
    if let Ok(python) = std::env::var("CLIPDEX_TORCH_PYTHON") {
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tools/bench_finetune_torch.py");
        let out = std::process::Command::new(python)
            .arg(script)
            .output()
            .map_err(|e| clipdex::Error::Invalid(e.to_string()))?;
        let text = String::from_utf8_lossy(&out.stdout);
        print!("{text}");
        for (name, t) in ours {
            if let Some(torch) = text.lines().find_map(|l| {
                l.strip_prefix(&format!("torch --train {name} "))
                    .and_then(|r| r.split_whitespace().next())
                    .and_then(|v| v.parse::<f64>().ok())
            }) {
                println!("--train {name:<10} clipdex / PyTorch time: {:.2}x (below 1 is faster)", t / torch);
            }
        }
    }
    Ok(())
}
