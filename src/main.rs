//! The `clipdex` binary: parses the command line, calls the library, prints the result
//! (human-readable by default, `--json` for scripts). Errors end here, as one line on stderr.

mod cli;

use std::io::Write;
use std::process::ExitCode;

use anyhow::Context;
use clap::Parser;
use serde_json::json;

use clipdex::ClipEmbedder;
use clipdex::photo::DecodeOptions;

use cli::{Cli, Command, EmbedArgs};

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    match run(cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    let device = cli.global.device.open()?;
    match cli.command {
        Command::Embed(args) => {
            let clip = ClipEmbedder::load(&cli.global.model, &device)?;
            embed(&clip, &args)
        }
    }
}

fn embed(clip: &ClipEmbedder, args: &EmbedArgs) -> anyhow::Result<ExitCode> {
    if args.images.is_empty() && args.texts.is_empty() {
        anyhow::bail!("nothing to embed: give at least one --image PATH or --text STRING");
    }
    let options = DecodeOptions {
        max_pixels: args.max_pixels,
    };
    let images = clip.embed_image_files(&args.images, &options);
    let ids = args
        .texts
        .iter()
        .map(|t| clip.tokenize(t))
        .collect::<Result<Vec<_>, _>>()?;
    let texts = clip.embed_token_ids(&ids)?;
    let failures = images.iter().filter(|r| r.is_err()).count();

    let mut out = std::io::stdout().lock();
    if args.json {
        let images: Vec<_> = args
            .images
            .iter()
            .zip(&images)
            .map(|(path, r)| match r {
                Ok(e) => json!({"path": path, "embedding": e}),
                Err(err) => json!({"path": path, "error": err.to_string()}),
            })
            .collect();
        let texts: Vec<_> = args
            .texts
            .iter()
            .zip(ids.iter().zip(&texts))
            .map(|(t, (ids, e))| json!({"text": t, "ids": ids, "embedding": e}))
            .collect();
        let doc = json!({
            "model": clip.name(),
            "dim": clip.dim(),
            "logit_scale": clip.logit_scale(),
            "images": images,
            "texts": texts,
        });
        serde_json::to_writer(&mut out, &doc)?;
        writeln!(out)?;
    } else {
        writeln!(
            out,
            "model {} ({}-d, logit scale {:.2})",
            clip.name(),
            clip.dim(),
            clip.logit_scale()
        )?;
        for (path, r) in args.images.iter().zip(&images) {
            match r {
                Ok(e) => writeln!(out, "image {}: {}", path.display(), preview(e))?,
                Err(err) => writeln!(out, "image {}: error: {err}", path.display())?,
            }
        }
        for (t, (ids, e)) in args.texts.iter().zip(ids.iter().zip(&texts)) {
            writeln!(out, "text {t:?}: {} tokens, {}", ids.len(), preview(e))?;
        }
    }
    out.flush().context("writing the output")?;
    if failures > 0 {
        eprintln!(
            "error: {failures} of {} images could not be embedded",
            args.images.len()
        );
        return Ok(ExitCode::FAILURE);
    }
    Ok(ExitCode::SUCCESS)
}

fn preview(e: &[f32]) -> String {
    let head: Vec<String> = e.iter().take(4).map(|v| format!("{v:+.4}")).collect();
    format!("[{}, ...]", head.join(", "))
}
