//! `clipdex embed`: CLIP vectors of images and texts, for scripts and for checking a model.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::Args;
use serde_json::json;

use clipdex::photo::DecodeOptions;
use clipdex::{ClipEmbedder, path_text};

use super::GlobalOptions;

/// `clipdex embed`.
#[derive(Debug, Args)]
pub struct EmbedArgs {
    /// An image to embed (repeatable).
    #[arg(long = "image", value_name = "PATH")]
    pub images: Vec<PathBuf>,

    /// A text to embed (repeatable).
    #[arg(long = "text", value_name = "STRING")]
    pub texts: Vec<String>,

    /// Print one JSON object: {"model", "dim", "logit_scale", "images": [{"path", "embedding"}],
    /// "texts": [{"text", "ids", "embedding"}]}. An image that cannot be read has "error" in
    /// place of "embedding".
    #[arg(long)]
    pub json: bool,
}

/// `clipdex embed`.
pub fn embed(g: &GlobalOptions, args: &EmbedArgs) -> anyhow::Result<ExitCode> {
    let clip = ClipEmbedder::load_with_text_model(g.clip_model(), g.text_model.as_deref(), &g.device.open()?)?
        .with_precision(g.precision);
    let max_pixels = g.max_pixels;
    if args.images.is_empty() && args.texts.is_empty() {
        anyhow::bail!("nothing to embed: give at least one --image PATH or --text STRING");
    }
    let options = DecodeOptions { max_pixels, min_side: None };
    let images = clip.embed_image_files(&args.images, &options);
    let ids = args.texts.iter().map(|t| clip.tokenize(t)).collect::<Result<Vec<_>, _>>()?;
    let texts = clip.embed_token_ids(&ids)?;
    let failures = images.iter().filter(|r| r.is_err()).count();

    let mut out = std::io::stdout().lock();
    if args.json {
        let images: Vec<_> = args
            .images
            .iter()
            .zip(&images)
            .map(|(path, r)| match r {
                Ok(e) => path_text::object(path, json!({"embedding": e})),
                Err(err) => path_text::object(path, json!({"error": err.to_string()})),
            })
            .collect();
        let texts: Vec<_> = args
            .texts
            .iter()
            .zip(ids.iter().zip(&texts))
            .map(|(t, (ids, e))| json!({"text": t, "ids": ids, "embedding": e}))
            .collect();
        let mut doc = json!({
            "model": clip.name(),
            "dim": clip.dim(),
            "logit_scale": clip.logit_scale(),
            "images": images,
            "texts": texts,
        });
        // With --text-model, which model embedded (and tokenised) the texts.
        if let Some(t) = clip.text_model() {
            doc["text_model"] = json!(t);
        }
        serde_json::to_writer(&mut out, &doc)?;
        writeln!(out)?;
    } else {
        writeln!(out, "model {} ({}-d, logit scale {:.2})", clip.name(), clip.dim(), clip.logit_scale())?;
        for (path, r) in args.images.iter().zip(&images) {
            match r {
                Ok(e) => writeln!(out, "image {}: {}", path_text::escaped(path), preview(e))?,
                Err(err) => writeln!(out, "image {}: error: {err}", path_text::escaped(path))?,
            }
        }
        for (t, (ids, e)) in args.texts.iter().zip(ids.iter().zip(&texts)) {
            writeln!(out, "text {t:?}: {} tokens, {}", ids.len(), preview(e))?;
        }
    }
    out.flush().context("writing the output")?;
    if failures > 0 {
        eprintln!("error: {failures} of {} images could not be embedded", args.images.len());
        return Ok(ExitCode::FAILURE);
    }
    Ok(ExitCode::SUCCESS)
}

fn preview(e: &[f32]) -> String {
    let head: Vec<String> = e.iter().take(4).map(|v| format!("{v:+.4}")).collect();
    format!("[{}, ...]", head.join(", "))
}
