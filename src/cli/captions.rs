//! The BLIP commands: `caption` (images given on the command line, or the whole library),
//! `ask` (visual question answering) and `match` (ITM probability and ITC cosine of texts
//! against an image). Searching the stored captions is `search --in captions` ([`super::search`]).

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::Args;
use serde_json::json;

use clipdex::Library;
use clipdex::library::CaptionOptions;
use clipdex::models::blip::{BlipAnswerer, BlipCaptioner, BlipMatcher};
use clipdex::path_text;
use clipdex::photo::{DecodeOptions, WORKING_SIDE, open_photo_within};

use super::GlobalOptions;
use super::session::with_progress;

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

/// The photo at `path` as BLIP is handed it: a large one reduced to [`WORKING_SIDE`] px on
/// the long side while it is decoded (BLIP looks at 384 px).
fn open_for_blip(g: &GlobalOptions, path: &std::path::Path) -> clipdex::Result<image::RgbImage> {
    let decode = DecodeOptions { max_pixels: g.max_pixels, min_side: None };
    Ok(open_photo_within(path, &decode, WORKING_SIDE)?.image)
}

pub fn caption(g: &GlobalOptions, args: &CaptionArgs) -> anyhow::Result<ExitCode> {
    if args.library {
        return caption_library(g, args);
    }
    let captioner = BlipCaptioner::load(&g.caption_model, &g.device.open()?)?.with_precision(g.precision);
    let start = captioner.start_ids(args.prompt.as_deref())?;
    let mut out = std::io::stdout().lock();
    let (mut rows, mut failures) = (Vec::new(), 0);
    for path in &args.images {
        let outcome = open_for_blip(g, path).and_then(|image| {
            let ids = captioner.beam_search(&image, &start, args.beams as usize, args.max_tokens as usize)?;
            captioner.decode(&ids)
        });
        match outcome {
            Ok(caption) if args.json => rows.push(path_text::object(path, json!({"caption": caption}))),
            Ok(caption) => writeln!(out, "{}: {caption}", path_text::escaped(path))?,
            Err(e) => {
                failures += 1;
                if args.json {
                    rows.push(path_text::object(path, json!({"error": e.to_string()})));
                } else {
                    writeln!(out, "{}: error: {e}", path_text::escaped(path))?;
                }
            }
        }
    }
    if args.json {
        writeln!(out, "{}", json!({ "captions": rows }))?;
    }
    if failures > 0 {
        eprintln!("error: {failures} of {} images could not be captioned", args.images.len());
        return Ok(ExitCode::FAILURE);
    }
    Ok(ExitCode::SUCCESS)
}

/// `caption --library`: every indexed image not yet captioned with these settings.
fn caption_library(g: &GlobalOptions, args: &CaptionArgs) -> anyhow::Result<ExitCode> {
    let config = g.library_config(clipdex::models::clip::MAX_BATCH)?;
    // Captioning needs no CLIP model: open whatever model made the vectors.
    let library = Library::open_as_stored(config)?;
    if args.off {
        library.set_caption_settings(None)?;
        let mut out = std::io::stdout().lock();
        if args.json {
            writeln!(out, "{}", json!({ "captioning": "off" }))?;
        } else {
            writeln!(out, "new photos are no longer captioned (stored captions stay)")?;
        }
        return Ok(ExitCode::SUCCESS);
    }
    let captioner = BlipCaptioner::load(&g.caption_model, &g.device.open()?)?.with_precision(g.precision);
    let options = CaptionOptions {
        model: clipdex::models::source::canonical_spec(&g.caption_model),
        prompt: args.prompt.clone(),
        beams: args.beams as usize,
        max_tokens: args.max_tokens as usize,
    };
    // Remembered first: an interrupted run leaves captioning on, and the next pass resumes it.
    library.set_caption_settings(Some(&options))?;
    let started = std::time::Instant::now();
    let report = with_progress(|progress| library.caption_library(&captioner, &options, progress))?;
    let mut out = std::io::stdout().lock();
    if args.json {
        writeln!(out, "{}", serde_json::to_string(&report)?)?;
    } else {
        let secs = started.elapsed().as_secs_f64();
        writeln!(
            out,
            "{} images: {} captioned ({:.2} captions/s), {} already captioned, {} unreadable",
            report.images,
            report.captioned,
            report.captioned as f64 / secs.max(1e-9),
            report.unchanged,
            report.failed
        )?;
    }
    Ok(ExitCode::SUCCESS)
}

pub fn ask(g: &GlobalOptions, args: &AskArgs) -> anyhow::Result<ExitCode> {
    anyhow::ensure!(!args.question.trim().is_empty(), "the question is empty");
    // The image first: a missing file should not wait for a model download.
    let image = open_for_blip(g, &args.image)?;
    let model = BlipAnswerer::load(&g.vqa_model, &g.device.open()?)?.with_precision(g.precision);
    let answer = model.answer(&image, &args.question, args.beams as usize, args.max_tokens as usize)?;
    let mut out = std::io::stdout().lock();
    if args.json {
        let doc = path_text::object(&args.image, json!({"question": args.question, "answer": answer.text}));
        writeln!(out, "{doc}")?;
    } else {
        writeln!(out, "{}", answer.text)?;
    }
    Ok(ExitCode::SUCCESS)
}

pub fn match_texts(g: &GlobalOptions, args: &MatchArgs) -> anyhow::Result<ExitCode> {
    anyhow::ensure!(args.texts.iter().all(|t| !t.trim().is_empty()), "a --text is empty");
    let image = open_for_blip(g, &args.image)?;
    let model = BlipMatcher::load(&g.itm_model, &g.device.open()?)?.with_precision(g.precision);
    let texts: Vec<&str> = args.texts.iter().map(String::as_str).collect();
    let scores = model.score(&image, &texts)?;
    let mut out = std::io::stdout().lock();
    if args.json {
        let rows: Vec<_> =
            texts.iter().zip(&scores).map(|(t, s)| json!({"text": t, "itm": s.itm, "itc": s.itc})).collect();
        writeln!(out, "{}", path_text::object(&args.image, json!({"matches": rows})))?;
    } else {
        writeln!(out, "{:>7}  {:>7}  text", "itm", "itc")?;
        for (t, s) in texts.iter().zip(&scores) {
            writeln!(out, "{:>7.4}  {:>7.4}  {t}", s.itm, s.itc)?;
        }
    }
    Ok(ExitCode::SUCCESS)
}
