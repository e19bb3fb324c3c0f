//! `clipdex bench`: what this machine offers the models and how fast a CLIP runs on it, so a
//! user can report their machine and compare models and precisions: the CPU's features (as
//! detected and as used, after `CLIPDEX_CPU_FEATURES`), what each `--precision` resolves to,
//! and images/s and texts/s at each precision this CPU runs.

use std::io::Write;
use std::process::ExitCode;

use clap::Args;
use serde_json::json;

use clipdex::models::bench::{self, Rate};
use clipdex::models::precision::Precision;
use clipdex::{ClipEmbedder, DEFAULT_CLIP_MODEL, Library};

use super::GlobalOptions;

/// `clipdex bench`.
#[derive(Debug, Args)]
pub struct BenchArgs {
    /// Images and texts per model call (the indexing batch by default).
    #[arg(long, default_value_t = 32, value_parser = clap::value_parser!(u64).range(1..=1024))]
    pub batch_size: u64,
    /// Timed calls per figure, after one warm-up call; the median is printed.
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u64).range(1..=100))]
    pub runs: u64,
    /// Measure a CLIP with random weights at ViT-B/32's shapes (openai/clip-vit-base-patch32)
    /// instead of the library's model or --model: nothing is downloaded.
    #[arg(long)]
    pub random_weights: bool,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
}

/// The model to measure: --model, else the library's (when there is one), else the default.
fn model_name(g: &GlobalOptions) -> String {
    if let Some(model) = &g.model {
        return model.clone();
    }
    let Ok(config) = g.library_config(32) else { return DEFAULT_CLIP_MODEL.to_string() };
    let exists = match &config.db {
        clipdex::store::DbLocation::Dir(dir) => dir.exists(),
        clipdex::store::DbLocation::Postgres(_) => true,
    };
    if exists && let Ok(library) = Library::open_as_stored(config) {
        return library.model();
    }
    DEFAULT_CLIP_MODEL.to_string()
}

/// The CPU's name from `/proc/cpuinfo` (Linux), if it says.
fn cpu_name() -> Option<String> {
    let info = std::fs::read_to_string("/proc/cpuinfo").ok()?;
    let line = info.lines().find(|l| l.starts_with("model name"))?;
    Some(line.split_once(':')?.1.trim().to_string())
}

pub fn run(g: &GlobalOptions, args: &BenchArgs) -> anyhow::Result<ExitCode> {
    let device = g.device.open()?;
    let (batch, runs) = (args.batch_size as usize, args.runs as usize);
    let features = bench::cpu_features();
    let precisions = bench::precisions();
    let threads = rayon::current_num_threads();
    let name = if args.random_weights { "random ViT-B/32".to_string() } else { model_name(g) };
    let mut out = std::io::stdout().lock();
    if !args.json {
        writeln!(out, "CPU: {} (class {})", cpu_name().unwrap_or_else(|| "unknown".into()), bench::cpu_class())?;
        let list: Vec<String> = features
            .iter()
            .map(|f| match (f.detected, f.used) {
                (true, true) => format!("{} yes", f.name),
                (true, false) => format!("{} off (CLIPDEX_CPU_FEATURES)", f.name),
                (false, _) => format!("{} no", f.name),
            })
            .collect();
        writeln!(out, "features: {}", list.join(", "))?;
        let resolved: Vec<String> = precisions.iter().map(|(a, r)| format!("{a} runs {r}")).collect();
        writeln!(out, "--precision: {}", resolved.join(", "))?;
        writeln!(out, "model: {name}, batch {batch}, {threads} threads, median of {runs} calls")?;
        out.flush()?;
    }
    let load = || -> anyhow::Result<ClipEmbedder> {
        Ok(if args.random_weights {
            bench::random_vit_b32(&device)?
        } else {
            ClipEmbedder::load_with_text_model(&name, g.text_model.as_deref(), &device)?
        })
    };
    let mut clip = load()?;
    // Each precision this CPU runs, once.
    let mut distinct: Vec<Precision> = Vec::new();
    for p in [Precision::F32, Precision::Bf16, Precision::Int8] {
        if !distinct.contains(&p.effective()) {
            distinct.push(p.effective());
        }
    }
    let mut rows = Vec::new();
    if !args.json {
        writeln!(out, "{:<10} {:>12} {:>12}", "precision", "images/s", "texts/s")?;
    }
    for precision in distinct {
        clip = clip.with_precision(precision);
        let images: Rate = bench::image_rate(&clip, batch, runs)?;
        let texts: Rate = bench::text_rate(&clip, batch, runs)?;
        if !args.json {
            writeln!(out, "{:<10} {:>12.2} {:>12.2}", precision.to_string(), images.per_second, texts.per_second)?;
            out.flush()?;
        }
        rows.push(json!({"precision": precision, "images": images, "texts": texts}));
    }
    // The attention of the long-sequence models (BLIP, CLIPSeg) and of CLIP's image tower,
    // which no precision changes.
    let mut attention = Vec::new();
    if !args.json {
        writeln!(out, "attention of one image, 12 layers x 12 heads of 64 (no projections):")?;
    }
    for (model, tokens) in [("BLIP 384 px", 577), ("CLIPSeg 352 px", 485), ("CLIP ViT-B/32", 50)] {
        let rate = bench::attention_rate(tokens, runs.max(5))?;
        if !args.json {
            writeln!(out, "  {model:<16} {tokens:>4} tokens: {:>8.2} ms", rate.ms_per_batch)?;
        }
        attention.push(json!({"model": model, "tokens": tokens, "ms": rate.ms_per_batch}));
    }
    if args.json {
        let report = json!({
            "attention": attention,
            "cpu": {"name": cpu_name(), "class": bench::cpu_class(), "features": features},
            "precisions": precisions.iter().map(|(a, r)| (a.to_string(), json!(r))).collect::<serde_json::Map<_, _>>(),
            "model": name,
            "batch_size": batch,
            "threads": threads,
            "runs": runs,
            "rates": rows,
        });
        writeln!(out, "{}", serde_json::to_string_pretty(&report)?)?;
    } else {
        writeln!(out, "(a CLIP's text tower runs bf16, or f32 without AVX-512 BF16, when int8 is asked)")?;
    }
    Ok(ExitCode::SUCCESS)
}
