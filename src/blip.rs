//! The BLIP commands: `caption` (images given on the command line), `ask` (visual question
//! answering) and `match` (ITM probability and ITC cosine of texts against an image).

use std::io::Write;
use std::process::ExitCode;

use serde_json::json;

use clipdex::Library;
use clipdex::library::{CaptionOptions, ImageDetails};
use clipdex::models::blip::{BlipAnswerer, BlipCaptioner, BlipMatcher};
use clipdex::path_text;
use clipdex::photo::{DecodeOptions, WORKING_SIDE, open_photo_within};
use clipdex::query::SearchFilter;
use clipdex::query::rerank::rerank_itm;

use crate::cli::{AskArgs, CaptionArgs, GlobalOptions, MatchArgs};

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
    let config = crate::library_config(g, clipdex::models::clip::MAX_BATCH)?;
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
    let report = crate::with_progress(|progress| library.caption_library(&captioner, &options, progress))?;
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

/// `search TEXT --rerank itm`: CLIP's best `top` (at least k), re-scored by ITM; k printed.
pub fn search_reranked(
    g: &GlobalOptions,
    library: &Library,
    text: &str,
    (k, top): (usize, usize),
    filter: &SearchFilter,
    json: bool,
    out: &mut dyn Write,
) -> anyhow::Result<ExitCode> {
    library.clip()?;
    let matcher = BlipMatcher::load(&g.itm_model, &g.device.open()?)?.with_precision(g.precision);
    let started = std::time::Instant::now();
    let hits = library.search_text(text, top.max(k), filter)?;
    let mut ranked = rerank_itm(&matcher, text, hits, g.max_pixels)?;
    ranked.truncate(k);
    let took_ms = started.elapsed().as_secs_f64() * 1e3;
    if json {
        writeln!(out, "{}", json!({ "results": ranked, "took_ms": took_ms }))?;
        return Ok(ExitCode::SUCCESS);
    }
    let fmt = |x: Option<f32>| x.map_or("    -  ".to_string(), |x| format!("{x:.4}"));
    for r in &ranked {
        writeln!(out, "{}  {:.4}  {}", fmt(r.itm), r.hit.score, path_text::escaped(&r.hit.path))?;
    }
    if ranked.is_empty() {
        writeln!(out, "{}", crate::no_results(library, filter))?;
    }
    Ok(ExitCode::SUCCESS)
}

/// `search TEXT --in captions`: BM25 over the stored captions.
pub fn search_captions(
    library: &Library,
    text: &str,
    k: usize,
    filter: &SearchFilter,
    json: bool,
    out: &mut dyn Write,
) -> anyhow::Result<ExitCode> {
    let started = std::time::Instant::now();
    let hits = library.search_captions(text, k, filter)?;
    let took_ms = started.elapsed().as_secs_f64() * 1e3;
    if json {
        writeln!(out, "{}", json!({ "results": hits, "took_ms": took_ms }))?;
    } else {
        for h in &hits {
            writeln!(out, "{:.4}  {}  {}", h.hit.score, path_text::escaped(&h.hit.path), h.caption)?;
        }
        if hits.is_empty() {
            let why = if library.has_captions()? {
                "no caption matches"
            } else {
                "no captions yet: run `clipdex caption --library`"
            };
            writeln!(out, "no results ({why})")?;
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// `search TEXT` on a captioned library: CLIP blended with caption matches.
pub fn search_blended(
    library: &Library,
    text: &str,
    k: usize,
    filter: &SearchFilter,
    weight: f32,
    json: bool,
    out: &mut dyn Write,
) -> anyhow::Result<ExitCode> {
    let started = std::time::Instant::now();
    let hits = library.search_blended(text, k, filter, weight)?;
    let took_ms = started.elapsed().as_secs_f64() * 1e3;
    if json {
        writeln!(out, "{}", json!({ "results": hits, "took_ms": took_ms }))?;
    } else {
        for h in &hits {
            let caption = if h.caption_score.is_some() { "  (caption matches)" } else { "" };
            writeln!(out, "{:.4}  {}{caption}", h.hit.score, path_text::escaped(&h.hit.path))?;
        }
        if hits.is_empty() {
            writeln!(out, "{}", crate::no_results(library, filter))?;
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// `show ID` as text.
pub fn print_details(out: &mut dyn Write, d: &ImageDetails) -> anyhow::Result<()> {
    writeln!(out, "id       {}", d.id)?;
    for p in &d.paths {
        writeln!(out, "file     {}", path_text::escaped(p))?;
    }
    writeln!(out, "size     {} x {} px, {} bytes", d.record.width, d.record.height, d.record.size)?;
    let date = chrono::DateTime::from_timestamp(d.date, 0).map(|t| t.format("%Y-%m-%d %H:%M:%S UTC").to_string());
    let source = if d.record.taken.is_some() { "taken" } else { "file modified" };
    writeln!(out, "date     {} ({source})", date.unwrap_or_else(|| d.date.to_string()))?;
    if let Some(c) = &d.record.camera {
        writeln!(out, "camera   {c}")?;
    }
    if let Some((lat, lon)) = d.record.gps {
        writeln!(out, "gps      {lat:.5}, {lon:.5}")?;
    }
    if let Some(p) = &d.companions.live_video {
        writeln!(out, "live     {} (Live Photo video)", path_text::escaped(p))?;
    }
    if let Some(problem) = &d.live_video_problem {
        writeln!(out, "live     cannot be played: {problem}")?;
    }
    if let Some(p) = &d.companions.raw_path {
        writeln!(out, "raw      {}", path_text::escaped(p))?;
    }
    if let Some(m) = &d.record.motion_video {
        writeln!(out, "motion   Motion Photo video: {} bytes at offset {}", m.length, m.offset)?;
    }
    if let Some(p) = &d.record.motion_video_problem {
        writeln!(out, "motion   none: {p}")?;
    }
    if !d.tags.is_empty() {
        let tags: Vec<String> = d.tags.iter().map(|t| format!("{} ({:.2})", t.label, t.probability)).collect();
        writeln!(out, "tags     {}", tags.join(", "))?;
    }
    writeln!(out, "caption  {}", d.caption.as_deref().unwrap_or("(none: run `clipdex caption --library`)"))?;
    Ok(())
}
