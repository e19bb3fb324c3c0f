//! Command-line parsing. Global options (`--model`, `--device`) are accepted before or after the
//! command and fall back to environment variables; each command is a thin call into the library.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

use clipdex::{DEFAULT_CLIP_MODEL, DeviceChoice};

/// clipdex: semantic search over your photo library.
#[derive(Debug, Parser)]
#[command(name = "clipdex", version, about, long_about = None)]
pub struct Cli {
    #[command(flatten)]
    pub global: GlobalOptions,

    #[command(subcommand)]
    pub command: Command,
}

/// Options every command understands.
#[derive(Debug, Args)]
pub struct GlobalOptions {
    /// CLIP model: a Hugging Face id (downloaded once into the HF cache) or a local directory
    /// with config.json, weights, tokenizer and preprocessor files.
    #[arg(long, global = true, env = "CLIPDEX_MODEL", default_value = DEFAULT_CLIP_MODEL)]
    pub model: String,

    /// Where the models run: cpu, cuda (needs a build with `--features cuda`), or auto.
    #[arg(long, global = true, env = "CLIPDEX_DEVICE", default_value = "cpu", value_parser = parse_device)]
    pub device: DeviceChoice,
}

fn parse_device(s: &str) -> Result<DeviceChoice, String> {
    s.parse().map_err(|e: clipdex::Error| e.to_string())
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Embed images and texts with CLIP and print the vectors.
    Embed(EmbedArgs),
}

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

    /// Refuse images with more pixels than this (decompression bombs).
    #[arg(long, value_name = "N", default_value_t = clipdex::photo::DEFAULT_MAX_PIXELS)]
    pub max_pixels: u64,
}
