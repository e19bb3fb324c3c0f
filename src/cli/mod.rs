//! The command line: what `clipdex` accepts, and one file per group of commands that runs
//! them and prints the result (human-readable by default, `--json` for scripts).
//!
//! `main.rs` parses ([`parse`]) and hands each [`Command`] to its file:
//!
//! - [`library`]: `add`, `roots`, `remove`, `index`, `watch`, `worker`; [`serve`]: `serve`.
//! - [`search`]: `search`, `similar`; [`show`]: `show`; [`regions`]: `segment`, `crop-search`
//!   and `search --crops`.
//! - [`tags`]: `tag`, `describe`, `autotag`, `tags`, `eval zeroshot`; [`captions`]: `caption`,
//!   `ask`, `match` and the caption searches; [`ocr`]: `ocr`; [`faces`]: `faces`; [`embed`]: `embed`; [`finetune`]:
//!   `finetune`.
//! - [`maintenance`]: `stats`, `failures`, `reindex`, `migrate`; [`duplicates`]: `duplicates`.
//! - [`install`]: `completions`, `man`, `serve --print-systemd-unit`; [`models`]: `models`,
//!   `models download`.
//!
//! Commands on an open library go through [`session`], which opens it, or sends the command
//! to the server that holds it ([`forward`]); the server runs them with the same code.
//! [`help`] groups the commands in `clipdex --help` and keeps each command's `--help` to the
//! global options it uses. Global options (`--model`, `--device`, ...) are accepted before or
//! after the command and fall back to environment variables.

use std::path::PathBuf;

use anyhow::Context;
use clap::{Args, FromArgMatches, Parser, Subcommand};

pub mod bench;
pub mod captions;
pub mod config;
pub mod duplicates;
pub mod embed;
pub mod faces;
pub mod finetune;
pub mod forward;
pub mod help;
pub mod install;
pub mod library;
pub mod maintenance;
pub mod models;
pub mod ocr;
pub mod people;
pub mod places;
pub mod regions;
pub mod search;
pub mod serve;
pub mod session;
pub mod show;
pub mod tags;

use clipdex::models::precision::Precision;
use clipdex::store::DbLocation;
use clipdex::{DEFAULT_CLIP_MODEL, DeviceChoice, LibraryConfig};

/// clipdex: semantic search over your photo library.
#[derive(Debug, Parser)]
#[command(name = "clipdex", version, about, long_about = None)]
pub struct Cli {
    #[command(flatten)]
    pub global: GlobalOptions,

    #[command(subcommand)]
    pub command: Command,
}

/// The command line of this process, parsed with the grouped help of [`help::command`];
/// `--help` and usage errors print and exit here.
pub fn parse() -> Cli {
    let matches = help::command().get_matches();
    let mut cli = Cli::from_arg_matches(&matches).unwrap_or_else(|e| e.exit());
    cli.global.given = GIVEN
        .iter()
        .filter(|id| {
            matches!(
                matches.value_source(id),
                Some(clap::parser::ValueSource::CommandLine | clap::parser::ValueSource::EnvVariable)
            )
        })
        .map(|id| id.to_string())
        .collect();
    cli
}

/// The options that the library's settings stand in for when they are not given.
const GIVEN: &[&str] = &["model", "text_model", "precision", "seg_model", "caption_model", "vqa_model", "itm_model"];

/// Options every command understands.
#[derive(Debug, Clone, Args)]
pub struct GlobalOptions {
    /// CLIP model: a Hugging Face id (downloaded once into the HF cache) or a local directory
    /// with config.json, weights, tokenizer and preprocessor files. Default: the model the
    /// library was indexed with, or openai/clip-vit-base-patch32 for a new library.
    #[arg(long, global = true, env = "CLIPDEX_MODEL")]
    pub model: Option<String>,

    /// A multilingual text model that embeds texts (queries, tag labels, `embed --text`) in place
    /// of the CLIP's text tower, while images use --model: a sentence-transformers model trained
    /// for that CLIP's image space, e.g. sentence-transformers/clip-ViT-B-32-multilingual-v1 for
    /// openai/clip-vit-base-patch32 (a hub id or a local directory). Not recorded in the library.
    #[arg(long, global = true, env = "CLIPDEX_TEXT_MODEL", value_name = "MODEL")]
    pub text_model: Option<String>,

    /// Where the models run: cpu, cuda (needs a build with `--features cuda`), or auto.
    #[arg(long, global = true, env = "CLIPDEX_DEVICE", default_value = "cpu", value_parser = parse_device)]
    pub device: DeviceChoice,

    /// Arithmetic of the CLIP's linear layers: f32; bf16 (bfloat16 operands, f32 sums; about
    /// twice the speed of f32 for indexing on CPUs with AVX-512 BF16); or int8 (dynamically
    /// quantised 8-bit operands, exact integer sums; CPUs with AVX-512 VNNI). Embeddings stay
    /// within cosine 0.999 of f32; a CPU without the instructions runs f32. Queries of a few
    /// tokens stay f32 either way.
    #[arg(long, global = true, env = "CLIPDEX_PRECISION", default_value = "f32", value_parser = parse_precision)]
    pub precision: Precision,

    /// Videos: a frame is sampled at least every this many seconds (and at every scene
    /// change); a long video's interval widens to keep within --video-max-frames.
    #[arg(long, global = true, default_value_t = 2.0, value_name = "SECONDS", value_parser = parse_video_interval)]
    pub video_interval: f64,

    /// Videos: at most this many frames sampled and embedded per video.
    #[arg(long, global = true, default_value_t = 300, value_name = "N",
          value_parser = clap::value_parser!(u32).range(1..=10_000))]
    pub video_max_frames: u32,

    /// The library database folder [default: the platform data folder, e.g. ~/.local/share/clipdex].
    #[arg(long, global = true, env = "CLIPDEX_DB", value_name = "DIR")]
    pub db: Option<PathBuf>,

    /// CLIPSeg model for `segment`, `crop-search` and `search --crops`: a Hugging Face id or a
    /// local directory.
    #[arg(long, global = true, env = "CLIPDEX_SEG_MODEL", default_value = clipdex::models::clipseg::DEFAULT_SEG_MODEL)]
    pub seg_model: String,

    /// BLIP captioning model for `caption`: a Hugging Face id or a local directory.
    #[arg(long, global = true, env = "CLIPDEX_CAPTION_MODEL", default_value = clipdex::models::blip::DEFAULT_CAPTION_MODEL)]
    pub caption_model: String,

    /// BLIP visual question answering model for `ask`: a Hugging Face id or a local directory.
    #[arg(long, global = true, env = "CLIPDEX_VQA_MODEL", default_value = clipdex::models::blip::DEFAULT_VQA_MODEL)]
    pub vqa_model: String,

    /// BLIP image-text matching model for `match` and `search --rerank itm`: a Hugging Face id
    /// or a local directory.
    #[arg(long, global = true, env = "CLIPDEX_ITM_MODEL", default_value = clipdex::models::blip::DEFAULT_ITM_MODEL)]
    pub itm_model: String,

    /// Refuse images with more pixels than this (decompression bombs).
    #[arg(long, global = true, value_name = "N", default_value_t = clipdex::photo::DEFAULT_MAX_PIXELS)]
    pub max_pixels: u64,

    /// The options among [`GIVEN`] given on the command line or in the environment (the
    /// others take the library's settings, [`config::settle`]).
    #[arg(skip)]
    pub given: Vec<String>,

    /// The library's OCR model folder, where it records one (`ocr` uses it without --ocr-model).
    #[arg(skip)]
    pub ocr_model: Option<String>,
}

impl GlobalOptions {
    /// The CLIP model to load where no library says which: --model, or the default.
    pub fn clip_model(&self) -> &str {
        self.model.as_deref().unwrap_or(DEFAULT_CLIP_MODEL)
    }

    /// The library's database: `--db` (a folder or a `postgres://` URL), else `clipdex` in the
    /// platform's data folder.
    pub fn database(&self) -> anyhow::Result<DbLocation> {
        Ok(match &self.db {
            Some(db) => DbLocation::parse(db.as_os_str())?,
            None => DbLocation::Dir(
                dirs::data_dir().context("no data folder on this platform: pass --db DIR")?.join("clipdex"),
            ),
        })
    }

    /// How the library is opened with these options, embedding `batch_size` photos per model call.
    pub fn library_config(&self, batch_size: usize) -> anyhow::Result<LibraryConfig> {
        let mut config = LibraryConfig::new(self.database()?, self.clip_model());
        config.text_model = self.text_model.clone();
        config.device = self.device;
        config.precision = self.precision;
        config.max_pixels = self.max_pixels;
        config.batch_size = batch_size;
        config.seg_model = self.seg_model.clone();
        config.video.interval = self.video_interval;
        config.video.max_frames = self.video_max_frames as usize;
        Ok(config)
    }
}

/// The commands, in the order `clipdex --help` lists them (grouped there by [`help::GROUPS`]).
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Add photo folders to the library (then run `clipdex index`).
    Add(library::AddArgs),
    /// Scan the folders once: embed new photos, forget deleted ones.
    ///
    /// Photos that changed are embedded again; copies and moves of indexed photos are linked
    /// to their vectors, not embedded.
    Index(library::IndexArgs),
    /// Index, then follow the folders and index their changes.
    ///
    /// The folders are also rescanned every --rescan-secs, which catches what file events miss.
    Watch(library::WatchArgs),
    /// Serve the web UI and the HTTP API, indexing meanwhile.
    ///
    /// The folders are indexed and followed in the background (not with --no-watch).
    Serve(serve::ServeArgs),
    /// List the library's folders.
    Roots(library::RootsArgs),
    /// Remove a folder from the library and forget its photos.
    Remove(library::RemoveArgs),
    /// Embed a PostgreSQL library's queue on another machine.
    ///
    /// Embeds what the indexers of a PostgreSQL library queue, scanning nothing: for a machine
    /// (a GPU box) that sees the photos over a network share. Runs until Ctrl-C.
    Worker(library::WorkerArgs),
    /// Search the library by words, images and filters, or by tag.
    Search(search::SearchArgs),
    /// Find photos similar to an image (in the library or not).
    Similar(search::SimilarArgs),
    /// Search for regions of photos: CLIPSeg crops of the best matches.
    CropSearch(regions::CropSearchArgs),
    /// One indexed image: files, size, date, camera, tags and caption.
    Show(show::ShowArgs),
    /// Where the photos were taken (from their GPS), with counts.
    Places(places::PlacesArgs),
    /// Labels in use in the library, with how many photos carry each.
    Tags(tags::TagsArgs),
    /// The persons the faces are grouped into: list, name, merge, hide, correct.
    ///
    /// Without options, lists the persons with their numbers of faces and photos and the face
    /// that stands for each. The user's decisions survive regrouping and a new face model.
    People(people::PeopleArgs),
    /// Score images against labels (zero-shot, as in the CLIP paper).
    Tag(tags::TagArgs),
    /// Image to text: the vocabulary entries closest to an image.
    Describe(tags::DescribeArgs),
    /// Auto-tag every indexed photo with a vocabulary.
    ///
    /// Only confident tags are kept; the settings are remembered, and later `index`/`watch`
    /// passes tag new photos with them.
    Autotag(tags::AutotagArgs),
    /// Caption images with BLIP.
    ///
    /// Greedy or beam search, optionally continuing a prompt; with --library, every indexed
    /// photo, the captions stored for `show` and `search`.
    Caption(captions::CaptionArgs),
    /// Ask a question about an image (BLIP visual question answering).
    Ask(captions::AskArgs),
    /// Score texts against an image with BLIP.
    ///
    /// Image-text matching: the ITM probability and the ITC cosine of each text.
    Match(captions::MatchArgs),
    /// Masks and crops of what a text names in an image (CLIPSeg).
    ///
    /// Text-prompted (or example-prompted) masks, overlays and crops: where in the image is it?
    Segment(regions::SegmentArgs),
    /// Read the text in images (PP-OCR models): lines with scores and boxes.
    Ocr(ocr::OcrArgs),
    /// Find the faces in images (dlib's models): boxes, scores and landmarks.
    Faces(faces::FacesArgs),
    /// Embed images and texts with CLIP and print the vectors.
    Embed(embed::EmbedArgs),
    /// Fine-tune the CLIP of --model on your own image–text pairs.
    ///
    /// The result is saved as a Hugging Face model folder: load it with --model DIR.
    Finetune(finetune::FinetuneArgs),
    /// Measure the models on your own labelled data.
    Eval {
        #[command(subcommand)]
        what: tags::EvalCommand,
    },
    /// How fast the models run here: CPU features, precisions, images/s and texts/s.
    ///
    /// Prints the CPU's features, what each --precision runs as, and images/s and texts/s of
    /// the library's CLIP (or --model, or --random-weights) at its batch size.
    Bench(bench::BenchArgs),
    /// Recommended models: sizes, languages, published quality.
    ///
    /// Lists the checkpoints clipdex recommends (every one loads with --model ID), with image
    /// size, embedding width, languages, weights size and the published retrieval or zero-shot
    /// figure with its source, then which to pick for quality, CPU speed and languages.
    Models(models::ModelsArgs),
    /// The library's settings: its models, their precision, background jobs.
    ///
    /// Recorded once in the library; every command and `serve` use them without flags, and a
    /// flag that disagrees with one is refused. `clipdex config set NAME default` forgets one.
    Config(config::ConfigArgs),
    /// Counts, model and index state.
    Stats(maintenance::StatsArgs),
    /// Files that could not be indexed, and why.
    Failures(maintenance::FailuresArgs),
    /// Near-duplicate photos: burst shots, resized or re-encoded copies.
    ///
    /// Near-duplicates (burst shots, resized or re-encoded copies, light edits) are pairs close
    /// in the vector index, confirmed by a perceptual hash, grouped; the best of each group
    /// (resolution, then file size, then earliest date) is suggested to keep. Nothing is
    /// deleted.
    Duplicates(duplicates::DuplicatesArgs),
    /// Move the library to the model given by --model.
    ///
    /// Re-embeds the library with that model, then switches to it; searches keep using the old
    /// vectors until the switch. Resumes if interrupted.
    Reindex(maintenance::ReindexArgs),
    /// Copy a folder library into PostgreSQL.
    ///
    /// Copies the folder library given by --db into an empty PostgreSQL database (nothing
    /// re-embedded; tags, captions, failures and settings kept), then checks that the counts
    /// and sample searches agree. The folder library is only read.
    Migrate(maintenance::MigrateArgs),
    /// Print shell completions (bash, zsh, fish, elvish, powershell).
    ///
    /// Generated from the same definition as --help, so they know every command and option.
    Completions(install::CompletionsArgs),
    /// Print the manual page, or write a page a command with --out.
    ///
    /// Generated from the same definition as --help (roff, for `man`).
    Man(install::ManArgs),
}

fn parse_precision(s: &str) -> Result<Precision, String> {
    s.parse().map_err(|e: clipdex::Error| e.to_string())
}

fn parse_device(s: &str) -> Result<DeviceChoice, String> {
    s.parse().map_err(|e: clipdex::Error| e.to_string())
}

fn parse_video_interval(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(v) if (0.1..=3600.0).contains(&v) => Ok(v),
        _ => Err(format!("{s:?} is not a number of seconds between 0.1 and 3600")),
    }
}

/// A probability flag (`--threshold`, `--caption-weight`): a number in [0, 1].
pub(crate) fn parse_probability(s: &str) -> Result<f32, String> {
    match s.parse::<f32>() {
        Ok(p) if (0.0..=1.0).contains(&p) => Ok(p),
        _ => Err(format!("{s:?} is not a probability between 0 and 1")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn probabilities_parse_or_say_why() {
        assert_eq!(parse_probability("0.4"), Ok(0.4));
        assert!(parse_probability("1.5").is_err() && parse_probability("-0.1").is_err());
    }
}
