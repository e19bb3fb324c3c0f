//! `clipdex ocr IMAGE...`: the text in photos, indexed or not, read with PP-OCR models
//! ([`clipdex::models::ocr`]). Human-readable lines by default; `--json` prints
//! `[{"path": P, "lines": [{"text": T, "score": S, "box": [[x, y], ...]}]}]`.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::Args;
use serde_json::json;

use clipdex::models::ocr::{OcrConfig, OcrModel};
use clipdex::path_text;
use clipdex::photo::{DecodeOptions, open_rgb};

use super::GlobalOptions;

/// `clipdex ocr`.
#[derive(Debug, Args)]
pub struct OcrArgs {
    /// The images to read (any file clipdex decodes; they need not be in a library).
    #[arg(required = true, value_name = "IMAGE")]
    pub images: Vec<PathBuf>,
    /// The OCR models: a folder with PP-OCR ONNX files (RapidOCR's wheel layout, or PaddleOCR's
    /// inference layout with det/, rec/ and cls/ subfolders; the dictionary from the
    /// recogniser's metadata or a *dict*.txt / *keys*.txt file), or `none` to read nothing.
    /// tools/fetch_ocr_models.sh fetches PP-OCRv6 small and PP-OCRv4 mobile.
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

/// Runs `clipdex ocr`.
pub fn run(g: &GlobalOptions, args: &OcrArgs) -> anyhow::Result<ExitCode> {
    if let (Some(given), Some(recorded)) = (&args.ocr_model, &g.ocr_model)
        && clipdex::models::source::canonical_spec(given) != *recorded
        && given != "none"
    {
        anyhow::bail!(
            "the library is set to --ocr-model {recorded}, not {given}: leave --ocr-model out to use the library's, \
             or change the library's setting with `clipdex config set ocr_model {given}`"
        );
    }
    let Some(spec) = args.ocr_model.as_deref().or(g.ocr_model.as_deref()) else {
        anyhow::bail!(
            "no OCR model: give --ocr-model DIR (a folder with PP-OCR ONNX files; \
             tools/fetch_ocr_models.sh fetches them), set CLIPDEX_OCR_MODEL, or record it in the library with \
             `clipdex config set ocr_model DIR`"
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
