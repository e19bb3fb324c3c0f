//! Command-line parsing. Global options (`--model`, `--device`) are accepted before or after the
//! command and fall back to environment variables; each command is a thin call into the library.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

pub mod bench;
pub mod finetune;
pub mod search;
pub use finetune::FinetuneArgs;

use clipdex::models::precision::Precision;
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
    /// quantised 8-bit operands, exact integer sums; CPUs with AVX-512 VNNI, AVX-VNNI or AVX2);
    /// or auto (the fastest on this CPU class: `clipdex bench` says which). Embeddings stay
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
}

impl GlobalOptions {
    /// The CLIP model to load where no library says which: --model, or the default.
    pub fn clip_model(&self) -> &str {
        self.model.as_deref().unwrap_or(DEFAULT_CLIP_MODEL)
    }
}

fn parse_path_map(s: &str) -> Result<(PathBuf, PathBuf), String> {
    match s.split_once('=') {
        Some((from, to)) if !from.is_empty() && !to.is_empty() => Ok((PathBuf::from(from), PathBuf::from(to))),
        _ => Err(format!("{s:?}: expected FROM=TO, e.g. /srv/photos=/mnt/nas/photos")),
    }
}

fn parse_precision(s: &str) -> Result<Precision, String> {
    s.parse().map_err(|e: clipdex::Error| e.to_string())
}

fn parse_device(s: &str) -> Result<DeviceChoice, String> {
    s.parse().map_err(|e: clipdex::Error| e.to_string())
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Fine-tune the CLIP model given by --model on your own image–text pairs and save it as a
    /// Hugging Face model folder (load it with --model DIR).
    Finetune(FinetuneArgs),
    /// How fast the models run on this machine: CPU features, what each --precision runs as,
    /// images/s and texts/s of the library's CLIP (or --model, or --random-weights).
    Bench(bench::BenchArgs),
    /// Embed images and texts with CLIP and print the vectors.
    Embed(EmbedArgs),
    /// Zero-shot classification: score images against labels, as in the CLIP paper.
    Tag(TagArgs),
    /// Image to text: the vocabulary entries closest to an image.
    Describe {
        /// The image.
        #[arg(value_name = "IMAGE")]
        image: PathBuf,
        /// How many entries.
        #[arg(short = 'k', long = "k", default_value_t = 10)]
        k: usize,
        /// Vocabulary file (one label per line, `#` comments) [default: the built-in one].
        #[arg(long, value_name = "FILE")]
        vocab: Option<PathBuf>,
        /// Print JSON: {"path", "labels": [{"label", "probability", "cosine"}]}.
        #[arg(long)]
        json: bool,
    },
    /// Auto-tag every indexed photo with a vocabulary, keeping only confident tags; the
    /// settings are remembered and later `index`/`watch` passes tag new photos with them.
    Autotag(AutotagArgs),
    /// Labels in use in the library, with how many photos carry each.
    Tags {
        /// Print JSON: {"tags": [{"label", "count"}]}.
        #[arg(long)]
        json: bool,
    },
    /// Measure the models on your own labelled data.
    Eval {
        #[command(subcommand)]
        what: EvalCommand,
    },
    /// Add photo folders to the library (then run `clipdex index`).
    Add {
        /// Folders to add.
        #[arg(required = true, value_name = "ROOT")]
        roots: Vec<PathBuf>,
    },
    /// List the library's folders.
    Roots {
        /// Print JSON: {"roots": [...]}.
        #[arg(long)]
        json: bool,
    },
    /// Remove a folder from the library and forget its photos.
    Remove {
        /// The folder.
        #[arg(value_name = "ROOT")]
        root: PathBuf,
    },
    /// Scan the folders once: embed new and changed photos, forget deleted ones.
    Index {
        /// Print the report as JSON.
        #[arg(long)]
        json: bool,
        /// Also forget the photos of roots that look unmounted: a folder that holds no photo
        /// now, or sits on another drive than when it was indexed (without it, their photos
        /// are kept and the root is reported as missing).
        #[arg(long)]
        prune: bool,
        /// Photos embedded per model call (memory grows with it).
        #[arg(long, default_value_t = 32, value_parser = clap::value_parser!(u64).range(1..=1024))]
        batch_size: u64,
    },
    /// Embed what the indexers of a PostgreSQL library queue, scanning nothing: for a machine
    /// (a GPU box) that sees the photos over a network share. Runs until Ctrl-C.
    Worker {
        /// Where this machine sees the library's paths, when not at the same place: the
        /// recorded prefix FROM read from TO (repeatable; the first match applies), e.g.
        /// /srv/photos=/mnt/nas/photos.
        #[arg(long = "path-map", value_name = "FROM=TO", value_parser = parse_path_map)]
        path_map: Vec<(PathBuf, PathBuf)>,
        /// Stop when the queue is empty instead of waiting for more.
        #[arg(long)]
        once: bool,
        /// Print the final report as JSON (as `index --json`).
        #[arg(long)]
        json: bool,
        /// Photos embedded per model call.
        #[arg(long, default_value_t = 32, value_parser = clap::value_parser!(u64).range(1..=1024))]
        batch_size: u64,
    },
    /// Re-embed the library with the model given by --model, then switch to it; searches keep
    /// using the old vectors until the switch. Resumes if interrupted.
    Reindex {
        /// Print the report as JSON: {"from", "to", "embedded", "resumed", "failed", "tagged",
        /// "mapped"} ("mapped": vectors mapped through an adapter of the library's model).
        #[arg(long)]
        json: bool,
        /// Photos embedded per model call.
        #[arg(long, default_value_t = 32, value_parser = clap::value_parser!(u64).range(1..=1024))]
        batch_size: u64,
    },
    /// Index, then follow the folders: re-index on changes and every --rescan-secs.
    Watch {
        /// Print each pass's report as one JSON line.
        #[arg(long)]
        json: bool,
        /// Photos embedded per model call.
        #[arg(long, default_value_t = 32, value_parser = clap::value_parser!(u64).range(1..=1024))]
        batch_size: u64,
        /// Quiet time after a change before indexing, in milliseconds.
        #[arg(long, default_value_t = 2000)]
        debounce_ms: u64,
        /// Full rescan interval in seconds (catches what file events miss).
        #[arg(long, default_value_t = 600, value_parser = clap::value_parser!(u64).range(1..))]
        rescan_secs: u64,
    },
    /// Search the library by text, by tag, or both.
    Search(SearchArgs),
    /// Find photos similar to an image (which may be outside the library).
    Similar {
        /// The image: a file (in the library or not), or an indexed photo's id (`#ID` or
        /// `ID`, as search results give it).
        #[arg(value_name = "PATH|ID")]
        image: PathBuf,
        #[command(flatten)]
        filter: FilterArgs,
    },
    /// Caption images with BLIP (greedy or beam search; optionally continuing a prompt).
    Caption(CaptionArgs),
    /// Visual question answering with BLIP: ask a question about an image.
    Ask(AskArgs),
    /// Image-text matching with BLIP: ITM probability and ITC cosine of texts against an image.
    Match(MatchArgs),
    /// Text-prompted masks and crops (CLIPSeg): where in the image is it?
    Segment(SegmentArgs),
    /// Search for regions rather than whole photos: CLIPSeg crops of the best matches.
    CropSearch(CropSearchArgs),
    /// Serve the HTTP API and the web UI, indexing and following the folders meanwhile.
    Serve(ServeArgs),
    /// Near-duplicate photos (burst shots, resized or re-encoded copies, light edits): pairs
    /// close in the vector index, confirmed by a perceptual hash, grouped; the best of each
    /// group (resolution, then file size, then earliest date) is suggested to keep. Nothing is
    /// deleted.
    Duplicates {
        /// Cosine similarity from which two photos are candidates (then confirmed by their
        /// perceptual hashes).
        #[arg(long, value_name = "T", default_value_t = clipdex::query::duplicates::DEFAULT_THRESHOLD)]
        threshold: f32,
        /// Print JSON: {"groups": [{"images": [{"id", "path", "width", "height", "size",
        /// "date"}], "similarity", "keep"}]}.
        #[arg(long)]
        json: bool,
        /// Move every photo of each group but the one to keep into DIR (outside the library),
        /// recorded in DIR/clipdex-moves.jsonl; `--restore DIR` puts them back.
        #[arg(long, value_name = "DIR", conflicts_with_all = ["restore", "dismiss"])]
        move_to: Option<PathBuf>,
        /// Put back the photos a `--move-to DIR` moved (then `clipdex index` indexes them again).
        #[arg(long, value_name = "DIR", conflicts_with = "dismiss")]
        restore: Option<PathBuf>,
        /// Mark these images (ids, comma-separated) as not duplicates of each other; remembered
        /// by later runs.
        #[arg(long, value_name = "ID,ID,...", value_delimiter = ',')]
        dismiss: Vec<u64>,
    },
    /// One indexed image: files, size, date, camera, tags and caption.
    Show {
        /// The image: its id (`ID` or `#ID`, as search results give it) or one of its paths.
        #[arg(value_name = "ID|PATH")]
        image: PathBuf,
        /// Print JSON: the same object as GET /api/images/{id}.
        #[arg(long)]
        json: bool,
    },
    /// Copy the folder library given by --db into an empty PostgreSQL database (nothing
    /// re-embedded; tags, captions, failures and settings kept), then check that the counts
    /// and sample searches agree. The folder library is only read.
    Migrate {
        /// The PostgreSQL database: postgres://USER:PASSWORD@HOST:PORT/NAME (created and empty).
        #[arg(long, value_name = "URL")]
        to: std::ffi::OsString,
        /// Print JSON: {"from", "to", "images", "paths", "vectors", "failures", "roots",
        /// "tagged", "captions", "settings", "checked_searches", "index", "seconds"}.
        #[arg(long)]
        json: bool,
    },
    /// Counts, model and index state.
    Stats {
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Files that could not be indexed, and why.
    Failures {
        /// Print JSON: {"failures": [{"path", "reason", "attempts"}]}.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Debug, Args)]
pub struct TagArgs {
    /// Images to tag.
    #[arg(required = true, value_name = "IMAGE")]
    pub images: Vec<PathBuf>,
    /// Comma-separated labels, e.g. "cat,dog,car".
    #[arg(long, value_name = "LIST", conflicts_with = "vocab")]
    pub labels: Option<String>,
    /// Vocabulary file (one label per line, `#` comments) [default without --labels: the
    /// built-in vocabulary of everyday photo concepts].
    #[arg(long, value_name = "FILE")]
    pub vocab: Option<PathBuf>,
    /// A prompt template with {} for the label (repeatable) [default: "a photo of a {}."].
    #[arg(long, value_name = "TEMPLATE", conflicts_with = "templates")]
    pub template: Vec<String>,
    /// A prompt ensemble: `photo` (built-in templates for personal photos) or a file of
    /// templates, one per line.
    #[arg(long, value_name = "photo|FILE")]
    pub templates: Option<String>,
    /// Show only the N most probable labels per image [default: all of --labels, 10 of a
    /// vocabulary].
    #[arg(long, value_name = "N")]
    pub top: Option<usize>,
    /// Print JSON: {"images": [{"path", "labels": [{"label", "probability", "cosine"}]}]}.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Subcommand)]
pub enum EvalCommand {
    /// Zero-shot accuracy on a folder per class (DIR/CLASS/IMAGE): top-1 and top-5, per class,
    /// the most confused pairs, and the confusion matrix as CSV and PNG.
    Zeroshot(EvalZeroshotArgs),
}

#[derive(Debug, Args)]
pub struct EvalZeroshotArgs {
    /// The dataset: one sub-folder of images per class.
    #[arg(value_name = "DATASET_DIR")]
    pub dataset: PathBuf,
    /// Labels file: `folder = label` lines name a class's label (default: the folder name with
    /// _ and - as spaces); other lines add distractor labels that have no images.
    #[arg(long, value_name = "FILE")]
    pub labels: Option<PathBuf>,
    /// The single prompt template [default: "a photo of a {}."].
    #[arg(long, value_name = "TEMPLATE")]
    pub template: Option<String>,
    /// Also evaluate a prompt ensemble and compare: `photo` (built-in) or a file of templates.
    #[arg(long, value_name = "photo|FILE")]
    pub templates: Option<String>,
    /// Where to write confusion.csv and confusion.png (and confusion-ensemble.*).
    #[arg(long, value_name = "DIR", default_value = ".")]
    pub out: PathBuf,
    /// Print JSON: {"dataset", "labels", "images", "failed", "runs": [{"name", "templates",
    /// "top1", "top5", "top_k", "per_class", "confused", "confusion"}], "files"}.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct AutotagArgs {
    /// Vocabulary file (one label per line, `#` comments) [default: the stored settings' one,
    /// else the built-in vocabulary].
    #[arg(long, value_name = "FILE")]
    pub vocab: Option<PathBuf>,
    /// Prompts: `photo` (built-in ensemble), `single` ("a photo of a {}."), or a file of
    /// templates [default: the stored settings', else photo].
    #[arg(long, value_name = "photo|single|FILE")]
    pub templates: Option<String>,
    /// Keep a tag when its probability is at least this many times 1/(vocabulary size), capped
    /// at 0.5 [default: the stored settings', else 30].
    #[arg(long, value_name = "R")]
    pub prior_ratio: Option<f32>,
    /// At most this many tags per photo [default: the stored settings', else 8].
    #[arg(long, value_name = "N")]
    pub max_tags: Option<usize>,
    /// Print the report as JSON: {"images", "tagged", "unchanged", "labels_embedded", "tags",
    /// "labels", "threshold"}.
    #[arg(long)]
    pub json: bool,
}

/// The query language, as `clipdex search --help` shows it.
const QUERY_HELP: &str = "\
QUERY is words, images and filters (docs: Searching):
  dog on a beach -night               words; -word or NOT \"a phrase\" takes away
  \"2:golden retriever\" + ./pool.jpg - fruit
                                      W: weighs a term; + adds, - subtracts (rclip's arithmetic);
                                      an image is a path or an indexed photo #ID
  tag:dog in:/photos/2024 in:Holidays after:2024-06 before:last-month kind:video
  camera:fuji ext:jpg,heic orientation:portrait width>3000 height<=1000
Quotes keep phrases and values together (tag:\"golden retriever\"); an unknown key, a bad date
or an unbalanced quote is an error naming its column. The options --under, --after, --before,
--tag and --kind combine with the query's filters (both must hold).";

#[derive(Debug, Args)]
#[command(after_long_help = QUERY_HELP)]
pub struct SearchArgs {
    /// What to look for: words, images (#ID, ./photo.jpg) and filters (tag:dog after:2024
    /// camera:fuji width>3000), optional with --tag. See the end of `--help` for the syntax.
    #[arg(required_unless_present = "tag", value_name = "QUERY")]
    pub text: Option<String>,
    /// Keep only results of at least this relevance (0-100; 50 is the library's calibrated
    /// cut: a result there scores above 99% of unrelated text-photo pairs).
    #[arg(long, value_name = "S", value_parser = parse_relevance)]
    pub min_score: Option<f32>,
    /// Order of the results that pass: score (best first), date (oldest first), -date (newest
    /// first) or name (file name). Other than score, it orders the best 1000 results.
    #[arg(long, default_value = "score", value_parser = ["score", "date", "-date", "name"], allow_hyphen_values = true)]
    pub sort: String,
    /// The folder relative image paths in the query are relative to (set for a command
    /// forwarded to a server: the sender's working directory).
    #[arg(skip)]
    pub query_base: Option<PathBuf>,
    /// Also find where in each result the text is (CLIPSeg): adds "region": {"box": [x, y,
    /// width, height], "area", "mean_probability"} (or null) to each JSON result.
    #[arg(long, requires = "text")]
    pub crops: bool,
    /// Probability a pixel needs to count as part of a region (with --crops).
    #[arg(long, default_value_t = clipdex::segment::DEFAULT_THRESHOLD, value_parser = parse_probability)]
    pub threshold: f32,
    /// What to rank by: `clip` (image embeddings, blended with caption matches when the
    /// library has captions; see --caption-weight) or `captions` (BM25 over the stored
    /// captions; JSON results gain "caption").
    #[arg(long = "in", value_enum, default_value = "clip")]
    pub rank_in: SearchIn,
    /// Weight of caption matches when blending them into CLIP's ranking (reciprocal rank
    /// fusion; 0 turns blending off). Only when the library has captions; JSON results then
    /// gain "caption_score" and "blended".
    #[arg(long, default_value_t = clipdex::query::captions::DEFAULT_CAPTION_WEIGHT, value_parser = parse_probability)]
    pub caption_weight: f32,
    /// Re-score CLIP's top results and order them by the new score: `itm` (BLIP image-text
    /// matching, the model of --itm-model; JSON results gain "itm" and "itc") or `clip:DIR`
    /// (a CLIP fine-tuned with `clipdex finetune`, a folder or hub id; JSON results gain
    /// "finetuned", its cosine; its vectors of the candidates are cached in the database).
    #[arg(long, value_parser = parse_rerank, value_name = "itm|clip:DIR", requires = "text", conflicts_with = "crops")]
    pub rerank: Option<Rerank>,
    /// How many of CLIP's results to re-score (with --rerank); k of them are printed.
    #[arg(long, default_value_t = clipdex::query::rerank::DEFAULT_RERANK_TOP as u64,
          value_parser = clap::value_parser!(u64).range(1..=1000))]
    pub rerank_top: u64,
    #[command(flatten)]
    pub filter: FilterArgs,
}

/// What `search` ranks by.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum SearchIn {
    /// CLIP image embeddings.
    Clip,
    /// Stored BLIP captions.
    Captions,
}

/// Re-rankers for `search --rerank`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Rerank {
    /// BLIP image-text matching.
    Itm,
    /// A fine-tuned CLIP (folder or hub id).
    Clip(String),
}

fn parse_named_model(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((name, dir))
            if !name.is_empty()
                && !dir.is_empty()
                && name.chars().all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c)) =>
        {
            Ok((name.to_string(), dir.to_string()))
        }
        _ => Err(format!("{s:?}: expected NAME=DIR, NAME of letters, digits, '-', '_' or '.'")),
    }
}

fn parse_rerank(s: &str) -> Result<Rerank, String> {
    match s {
        "itm" => Ok(Rerank::Itm),
        _ => match s.strip_prefix("clip:") {
            Some(model) if !model.trim().is_empty() => Ok(Rerank::Clip(model.to_string())),
            _ => Err(format!("{s:?}: expected itm or clip:DIR (a fine-tuned CLIP)")),
        },
    }
}

/// `clipdex caption`.
#[derive(Debug, Args)]
pub struct CaptionArgs {
    /// The images.
    #[arg(value_name = "IMAGE", required_unless_present = "library", conflicts_with = "library")]
    pub images: Vec<PathBuf>,
    /// Caption every indexed image instead, storing the captions in the database (shown by
    /// `show`, searched by `search --in captions`). Incremental: images already captioned with
    /// the same model, prompt, beams and token limit are skipped, so an interrupted run
    /// resumes. JSON: {"images", "captioned", "unchanged", "failed"}. The settings are
    /// remembered: later `index`, `watch` and `serve` passes caption new photos with them.
    #[arg(long)]
    pub library: bool,
    /// With --library: stop captioning new photos (stored captions stay).
    #[arg(long, requires = "library")]
    pub off: bool,
    /// Text the caption starts with (e.g. "a picture of").
    #[arg(long)]
    pub prompt: Option<String>,
    /// Beam width (1: greedy).
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u64).range(1..=16))]
    pub beams: u64,
    /// Most tokens generated after the prompt.
    #[arg(long, default_value_t = 30, value_parser = clap::value_parser!(u64).range(1..=200))]
    pub max_tokens: u64,
    /// Print JSON: {"captions": [{"path", "caption"}]} (an unreadable image gets "error").
    #[arg(long)]
    pub json: bool,
}

/// `clipdex ask`.
#[derive(Debug, Args)]
pub struct AskArgs {
    /// The image.
    #[arg(value_name = "IMAGE")]
    pub image: PathBuf,
    /// The question.
    #[arg(value_name = "QUESTION")]
    pub question: String,
    /// Beam width (1: greedy).
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u64).range(1..=16))]
    pub beams: u64,
    /// Most tokens in the answer.
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..=200))]
    pub max_tokens: u64,
    /// Print JSON: {"path", "question", "answer"}.
    #[arg(long)]
    pub json: bool,
}

/// `clipdex match`.
#[derive(Debug, Args)]
pub struct MatchArgs {
    /// The image.
    #[arg(value_name = "IMAGE")]
    pub image: PathBuf,
    /// A text to match against the image (repeatable).
    #[arg(long = "text", value_name = "TEXT", required = true)]
    pub texts: Vec<String>,
    /// Print JSON: {"path", "matches": [{"text", "itm", "itc"}]}.
    #[arg(long)]
    pub json: bool,
}

/// `clipdex segment`.
#[derive(Debug, Args)]
pub struct SegmentArgs {
    /// The image.
    #[arg(value_name = "IMAGE")]
    pub image: PathBuf,
    /// What to find, in words (repeatable; all run in one batch).
    #[arg(long = "prompt", value_name = "TEXT")]
    pub prompts: Vec<String>,
    /// An example image of what to find (a visual prompt; repeatable; after the texts).
    #[arg(long = "example", value_name = "IMG")]
    pub examples: Vec<PathBuf>,
    /// Probability a pixel needs to count as part of a region.
    #[arg(long, default_value_t = clipdex::segment::DEFAULT_THRESHOLD, value_parser = parse_probability)]
    pub threshold: f32,
    /// Folder for the masks, overlays and crops (created if needed).
    #[arg(long, value_name = "DIR")]
    pub out: PathBuf,
    /// Print JSON: {"image", "width", "height", "prompts": [{"index", "prompt" or "example",
    /// "mask", "overlay", "regions": [{"box", "area", "mean_probability", "crop"}]}]}.
    #[arg(long)]
    pub json: bool,
}

/// `clipdex crop-search`.
#[derive(Debug, Args)]
pub struct CropSearchArgs {
    /// What to look for, in words.
    pub text: String,
    /// Photos (best CLIP matches) examined for regions [default: 3 x k, at least 20].
    #[arg(long, value_name = "N")]
    pub candidates: Option<usize>,
    /// Probability a pixel needs to count as part of a region.
    #[arg(long, default_value_t = clipdex::segment::DEFAULT_THRESHOLD, value_parser = parse_probability)]
    pub threshold: f32,
    /// Write the crops as PNG files into this folder.
    #[arg(long, value_name = "DIR")]
    pub out: Option<PathBuf>,
    #[command(flatten)]
    pub filter: FilterArgs,
}

fn parse_relevance(s: &str) -> Result<f32, String> {
    match s.parse::<f32>() {
        Ok(p) if (0.0..=100.0).contains(&p) => Ok(p),
        _ => Err(format!("{s:?} is not a relevance between 0 and 100")),
    }
}

fn parse_probability(s: &str) -> Result<f32, String> {
    match s.parse::<f32>() {
        Ok(p) if (0.0..=1.0).contains(&p) => Ok(p),
        _ => Err(format!("{s:?} is not a probability between 0 and 1")),
    }
}

fn parse_video_interval(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(v) if (0.1..=3600.0).contains(&v) => Ok(v),
        _ => Err(format!("{s:?} is not a number of seconds between 0.1 and 3600")),
    }
}

#[derive(Debug, Args)]
pub struct FilterArgs {
    /// Number of results.
    #[arg(short = 'k', long = "k", default_value_t = 20, value_parser = clap::value_parser!(u64).range(1..=10_000))]
    pub k: u64,
    /// Only photos at or under this folder.
    #[arg(long, value_name = "PATH")]
    pub under: Option<PathBuf>,
    /// Only photos dated on or after this (YYYY, YYYY-MM, YYYY-MM-DD; EXIF date, else file time).
    #[arg(long, value_name = "DATE")]
    pub after: Option<String>,
    /// Only photos dated before this.
    #[arg(long, value_name = "DATE")]
    pub before: Option<String>,
    /// Only photos auto-tagged with this label (see `clipdex autotag` and `clipdex tags`).
    #[arg(long, value_name = "LABEL")]
    pub tag: Option<String>,
    /// Only photos, only videos, or both.
    #[arg(long, value_name = "KIND", default_value = "all", value_parser = ["all", "photo", "video"])]
    pub kind: String,
    /// Print JSON: {"results": [{"id", "path", "score", "kind"}], "took_ms"}; a video's
    /// result also has "time" (seconds, its best frame) and "duration"; `search` results also
    /// have "relevance" (0-100).
    #[arg(long)]
    pub json: bool,
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
}

/// `clipdex serve`.
#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Address to listen on. Anything but loopback needs --token.
    #[arg(long, default_value = clipdex::server::DEFAULT_BIND, value_name = "HOST:PORT")]
    pub bind: String,
    /// Serve only: do not index or follow the folders.
    #[arg(long)]
    pub no_watch: bool,
    /// Bearer token every API call must send (`Authorization: Bearer TOKEN`); required to
    /// listen off loopback.
    #[arg(long, env = "CLIPDEX_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// Largest image upload accepted, bytes (suffixes K, M, G).
    #[arg(long, default_value = "32M", value_parser = parse_size, value_name = "SIZE")]
    pub max_upload: usize,
    /// Allow web pages from this origin (e.g. https://photos.example.org) to call the API;
    /// repeat for several. None by default.
    #[arg(long = "cors-origin", value_name = "ORIGIN")]
    pub cors_origins: Vec<String>,
    /// A fine-tuned CLIP that searches may be re-ranked with, as NAME=DIR (repeatable); the API
    /// takes `rerank=clip:NAME` and the web UI offers a switch. Only registered models, never
    /// a path from a request.
    #[arg(long = "finetuned", value_name = "NAME=DIR", value_parser = parse_named_model)]
    pub finetuned: Vec<(String, String)>,
    /// Photos embedded per model call while indexing.
    #[arg(long, default_value_t = 32, value_parser = clap::value_parser!(u64).range(1..=1024))]
    pub batch_size: u64,
    /// Quiet time after a change before indexing, in milliseconds.
    #[arg(long, default_value_t = 2000)]
    pub debounce_ms: u64,
    /// Full rescan interval in seconds.
    #[arg(long, default_value_t = 600, value_parser = clap::value_parser!(u64).range(1..))]
    pub rescan_secs: u64,
    /// Model-heavy requests (captions, questions, matching, masks, crops, re-ranking,
    /// regions) that run at once; each holds a photo reduced to at most 2048 px and a model's
    /// working memory.
    #[arg(long, default_value_t = clipdex::server::DEFAULT_HEAVY_RUNNING as u64, value_parser = clap::value_parser!(u64).range(1..=64))]
    pub heavy_requests: u64,
    /// Model-heavy requests that may wait for a turn; more are answered 503 with Retry-After.
    #[arg(long, default_value_t = clipdex::server::DEFAULT_HEAVY_WAITING as u64, value_parser = clap::value_parser!(u64).range(0..=1024))]
    pub heavy_queue: u64,
}

fn parse_size(s: &str) -> Result<usize, String> {
    let s = s.trim();
    let (digits, unit) = match s.char_indices().find(|(_, c)| !c.is_ascii_digit()) {
        Some((i, _)) => s.split_at(i),
        None => (s, ""),
    };
    let n: usize = digits.parse().map_err(|_| format!("{s:?} is not a size (e.g. 32M)"))?;
    let unit: usize = match unit.trim().to_ascii_uppercase().trim_end_matches("IB").trim_end_matches('B') {
        "" => 1,
        "K" => 1 << 10,
        "M" => 1 << 20,
        "G" => 1 << 30,
        _ => return Err(format!("{s:?}: unknown unit (use K, M or G)")),
    };
    n.checked_mul(unit).filter(|&n| n > 0).ok_or_else(|| format!("{s:?} is not a usable size"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_and_probabilities_parse_or_say_why() {
        assert_eq!(parse_size("32M"), Ok(32 << 20));
        assert_eq!(parse_size("512k"), Ok(512 << 10));
        assert_eq!(parse_size("1GiB"), Ok(1 << 30));
        assert_eq!(parse_size("1000"), Ok(1000));
        assert!(parse_size("0").is_err());
        assert!(parse_size("12X").unwrap_err().contains("unknown unit"));
        assert!(parse_size("lots").is_err());
        assert_eq!(parse_probability("0.4"), Ok(0.4));
        assert!(parse_probability("1.5").is_err() && parse_probability("-0.1").is_err());
    }
}
