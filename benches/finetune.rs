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
    let mut ours = Vec::new();
    for (name, scope) in
        [("projection", TrainScope::Projection), ("last:2", TrainScope::Last(2)), ("all", TrainScope::All)]
    {
        let model = TrainableClip::load(&config, &vb, scope)?;
        let mut opt = AdamW::new(
            model.vars().values(),
            AdamWConfig { lr: 1e-5, betas: (0.9, 0.98), eps: 1e-6, weight_decay: 0.2 },
        )?;
        let t = median_time(3, || {
            let loss = model.contrastive_loss(&pixels, &texts, 49407).unwrap();
            opt.backward_step(&loss).unwrap();
        });
        println!("--train {name:<10} {:>7.2} s per step   (peak RSS so far {} MB)", t.as_secs_f64(), peak_rss_mb());
        ours.push((name, t.as_secs_f64()));
    }
    if let Ok(python) = std::env::var("CLIPDEX_TORCH_PYTHON") {
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tools/bench_finetune_torch.py");
        let out = std::process::Command::new(python)
            .arg(script)
            .output()
            .map_err(|e| clipdex::Error::Invalid(e.to_string()))?;
        let text = String::from_utf8_lossy(&out.stdout);
        print!("{text}");
        for (name, t) in &ours {
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
