//! `clipdex ocr IMAGE...`: the text in photos, indexed or not, read with PP-OCR models
//! ([`clipdex::models::ocr`]). Human-readable lines by default; `--json` prints
//! `[{"path": P, "lines": [{"text": T, "score": S, "box": [[x, y], ...]}]}]`.
//! `clipdex ocr --library` reads the text of every library photo not read yet and stores it
//! (searched with `search --in text`); [`choose_model`] is how `index`, `watch` and `serve`
//! set the library's OCR model.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::Args;
use serde_json::json;

use clipdex::Library;
use clipdex::library::OcrSettings;
use clipdex::models::ocr::{OcrConfig, OcrModel};
use clipdex::path_text;
use clipdex::photo::{DecodeOptions, open_rgb};

use super::GlobalOptions;

/// `clipdex ocr`.
#[derive(Debug, Args)]
pub struct OcrArgs {
    /// The images to read (any file clipdex decodes; they need not be in a library).
    #[arg(required_unless_present = "library", conflicts_with = "library", value_name = "IMAGE")]
    pub images: Vec<PathBuf>,
    /// Read the text of every photo of the library (--db) not read yet by this model, and
    /// store it for `search --in text`; the library remembers the model, and `index`, `watch`
    /// and `serve` read new photos with it.
    #[arg(long)]
    pub library: bool,
    /// The OCR models: a folder with PP-OCR ONNX files (RapidOCR's wheel layout, or PaddleOCR's
    /// inference layout with det/, rec/ and cls/ subfolders; the dictionary from the
    /// recogniser's metadata or a *dict*.txt / *keys*.txt file), or `none` to read nothing.
    /// Default: the folder `clipdex models download ocr` fills (PP-OCRv6 small), once it has.
    #[arg(long, value_name = "DIR|none", env = "CLIPDEX_OCR_MODEL")]
    pub ocr_model: Option<String>,
    /// Skip the line orientation classifier (upside-down lines are then misread).
    #[arg(long)]
    pub no_cls: bool,
    /// Drop lines the recogniser scores under this (0..1).
    #[arg(long, default_value_t = 0.5)]
    pub text_score: f32,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
}

/// The folder `clipdex models download ocr` filled, when it did: the model used where none is
/// given or recorded.
fn downloaded() -> Option<String> {
    clipdex::models::fetch::downloaded_model_dir(clipdex::models::ModelKind::Ocr)
        .map(|dir| dir.to_string_lossy().into_owned())
}

/// Records the library's OCR model (its `ocr_model` setting) from `--ocr-model DIR` when it
/// records none; a flag that disagrees with the recorded model is refused, as other settings'
/// flags are (`clipdex config set ocr_model DIR|default` changes it). With `required`
/// (`index --ocr`, `ocr --library`) a model must be known: recorded, given, or in
/// `CLIPDEX_OCR_MODEL`, or downloaded by `clipdex models download ocr`.
pub fn choose_model(library: &Library, spec: Option<&str>, required: bool) -> anyhow::Result<()> {
    let settings = library.settings()?;
    let spec = match spec {
        Some(s) => Some(s.to_string()),
        None if required && settings.ocr_model.is_none() => std::env::var("CLIPDEX_OCR_MODEL").ok().or_else(downloaded),
        None => None,
    };
    match (spec.as_deref(), &settings.ocr_model) {
        (Some(given), Some(_)) => {
            if let Some(refusal) = settings.disagreement("ocr_model", given)? {
                anyhow::bail!(refusal);
            }
        }
        (Some("none"), None) => {}
        (Some(dir), None) => {
            let canonical = std::fs::canonicalize(dir)
                .map_err(|e| anyhow::anyhow!("--ocr-model {dir}: {e}; give a folder of PP-OCR ONNX files"))?;
            // Checked now, so a wrong folder is an error here, not in the background.
            clipdex::library::ocr_model_id(&canonical)?;
            library.set_ocr_settings(Some(&OcrSettings { model: canonical.to_string_lossy().into_owned() }))?;
        }
        (None, None) if required => anyhow::bail!(
            "no OCR model: run `clipdex models download ocr` once, or give --ocr-model DIR (a folder with PP-OCR \
             ONNX files), set CLIPDEX_OCR_MODEL, or record it in the library with `clipdex config set ocr_model DIR`"
        ),
        (None, _) => {}
    }
    Ok(())
}

/// `clipdex ocr --library`.
fn read_library(g: &GlobalOptions, args: &OcrArgs) -> anyhow::Result<ExitCode> {
    let config = g.library_config(clipdex::models::clip::MAX_BATCH)?;
    // Reading text needs no CLIP model: open whatever model made the vectors.
    let library = Library::open_as_stored(config)?;
    choose_model(&library, args.ocr_model.as_deref().or(g.ocr_model.as_deref()), true)?;
    let Some(settings) = library.ocr_settings()? else {
        writeln!(std::io::stdout().lock(), "reading the text in photos is off (stored text stays)")?;
        return Ok(ExitCode::SUCCESS);
    };
    let model = library.ocr_model(&settings.model)?;
    let report = super::session::with_progress(|progress| library.read_text(&model, progress, &|| false))?;
    let mut out = std::io::stdout().lock();
    if args.json {
        writeln!(out, "{}", serde_json::to_string(&report)?)?;
    } else {
        writeln!(
            out,
            "{} images: {} read ({:.2} photos/s), {} with text, {} already read, {} unreadable",
            report.images,
            report.read,
            report.read as f64 / report.seconds.max(1e-9),
            report.with_text,
            report.unchanged,
            report.failed
        )?;
    }
    Ok(ExitCode::SUCCESS)
}

/// Runs `clipdex ocr`.
pub fn run(g: &GlobalOptions, args: &OcrArgs) -> anyhow::Result<ExitCode> {
    if args.library {
        return read_library(g, args);
    }
    if let (Some(given), Some(recorded)) = (&args.ocr_model, &g.ocr_model) {
        let settings = clipdex::library::Settings { ocr_model: Some(recorded.clone()), ..Default::default() };
        if let Some(refusal) = settings.disagreement("ocr_model", given)? {
            anyhow::bail!(refusal);
        }
    }
    let downloaded = downloaded();
    let Some(spec) = args.ocr_model.as_deref().or(g.ocr_model.as_deref()).or(downloaded.as_deref()) else {
        anyhow::bail!(
            "no OCR model: run `clipdex models download ocr` once, or give --ocr-model DIR (a folder with PP-OCR \
             ONNX files), set CLIPDEX_OCR_MODEL, or record it in the library with `clipdex config set ocr_model DIR`"
        );
    };
    let model = if spec == "none" {
        None
    } else {
        let config = OcrConfig { use_cls: !args.no_cls, text_score: args.text_score, ..OcrConfig::default() };
        Some(OcrModel::open(std::path::Path::new(spec), config)?)
    };
    let options = DecodeOptions { max_pixels: g.max_pixels, ..DecodeOptions::default() };
    let mut out = std::io::stdout().lock();
    let (mut rows, mut failures) = (Vec::new(), 0usize);
    for path in &args.images {
        let outcome = open_rgb(path, &options).and_then(|image| match &model {
            Some(model) => model.read_page(&image),
            None => Ok(Default::default()),
        });
        match outcome {
            Ok(page) => {
                if page.capped {
                    eprintln!(
                        "{}: more text regions than {} were found; only the first were read",
                        path_text::escaped(path),
                        model.as_ref().map_or(0, |m| m.config().max_candidates)
                    );
                }
                if args.json {
                    let mut fields = json!({ "lines": page.lines });
                    if page.capped {
                        fields["capped"] = json!(true);
                    }
                    rows.push(path_text::object(path, fields));
                } else {
                    writeln!(out, "{}:", path_text::escaped(path))?;
                    for line in &page.lines {
                        writeln!(out, "  {:.3}  {}", line.score, line.text)?;
                    }
                    if page.lines.is_empty() {
                        writeln!(out, "  (no text found)")?;
                    }
                }
            }
            Err(e) => {
                failures += 1;
                if args.json {
                    rows.push(path_text::object(path, json!({ "lines": [], "error": e.to_string() })));
                } else {
                    writeln!(out, "{}: error: {e}", path_text::escaped(path))?;
                }
            }
        }
    }
    if args.json {
        writeln!(out, "{}", serde_json::Value::Array(rows))?;
    }
    if failures > 0 {
        eprintln!("error: {failures} of {} images could not be read", args.images.len());
        return Ok(ExitCode::FAILURE);
    }
    Ok(ExitCode::SUCCESS)
}
