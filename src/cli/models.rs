//! `clipdex models`: the recommended checkpoints ([`clipdex::models::catalog`]) with their
//! sizes and published figures, and a plain recommendation.

use std::io::Write;
use std::process::ExitCode;

use clap::Args;
use serde_json::json;

use clipdex::models::catalog::{self, CatalogEntry};

/// `clipdex models`.
#[derive(Debug, Args)]
pub struct ModelsArgs {
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
}

const NOT_MEASURED: &str = "image and text ms are not measured with clipdex yet for these checkpoints (null): \
                            `clipdex bench --model ID` measures them on this machine";

pub fn run(args: &ModelsArgs) -> anyhow::Result<ExitCode> {
    let models = catalog::recommended();
    let mut out = std::io::stdout().lock();
    if args.json {
        let recommendation: Vec<_> =
            catalog::RECOMMENDATION.iter().map(|(what, id, why)| json!({"for": what, "id": id, "why": why})).collect();
        let doc = json!({"models": models, "recommendation": recommendation, "note": NOT_MEASURED});
        writeln!(out, "{}", serde_json::to_string_pretty(&doc)?)?;
        return Ok(ExitCode::SUCCESS);
    }
    writeln!(
        out,
        "{:<48} {:<12} {:>5} {:>5} {:<12} {:>8}  published",
        "model", "family", "px", "dim", "languages", "weights"
    )?;
    for m in &models {
        writeln!(
            out,
            "{:<48} {:<12} {:>5} {:>5} {:<12} {:>6} MB  {}",
            m.id,
            m.family,
            m.image_size,
            m.embedding_width,
            m.languages,
            m.weights_mb,
            published(m)
        )?;
    }
    writeln!(out)?;
    for (what, id, why) in catalog::RECOMMENDATION {
        writeln!(out, "{what}: {id}\n  {why}")?;
    }
    writeln!(out, "\nSources:")?;
    let mut sources: Vec<&str> = models.iter().flat_map(|m| m.published.iter().map(|p| p.source)).collect();
    sources.dedup();
    sources.sort_unstable();
    sources.dedup();
    for s in sources {
        writeln!(out, "  {s}")?;
    }
    writeln!(out, "Weights: f32, from each architecture's parameter count. The {NOT_MEASURED}.")?;
    Ok(ExitCode::SUCCESS)
}

fn published(m: &CatalogEntry) -> String {
    let all: Vec<String> = m.published.iter().map(|p| format!("{:.1} ({})", p.value, p.metric)).collect();
    if all.is_empty() { "-".into() } else { all.join("; ") }
}
