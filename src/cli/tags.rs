//! Tags (zero-shot CLIP): `tag`, `describe`, `autotag`, `tags` and `eval zeroshot`. Each
//! builds its labels and prompts from the flags, calls the library, and prints a table or JSON.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context;
use clap::{Args, Subcommand};
use serde_json::json;

use clipdex::eval::{self, Dataset, EvalRun};
use clipdex::path_text;
use clipdex::photo::DecodeOptions;
use clipdex::query::autotag::AutotagSettings;
use clipdex::query::tags::{self, ZeroShotClassifier};
use clipdex::{ClipEmbedder, Library};

use super::GlobalOptions;
use super::session::progress_bar;

/// `clipdex tag`.
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

/// `clipdex eval`.
#[derive(Debug, Subcommand)]
pub enum EvalCommand {
    /// Zero-shot accuracy on a folder per class (DIR/CLASS/IMAGE): top-1 and top-5, per class,
    /// the most confused pairs, and the confusion matrix as CSV and PNG.
    Zeroshot(EvalZeroshotArgs),
}

/// `clipdex eval zeroshot`.
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

/// `clipdex autotag`.
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

/// `clipdex describe`.
#[derive(Debug, Args)]
pub struct DescribeArgs {
    /// The image.
    #[arg(value_name = "IMAGE")]
    pub image: PathBuf,
    /// How many entries.
    #[arg(short = 'k', long = "k", default_value_t = 10)]
    pub k: usize,
    /// Vocabulary file (one label per line, `#` comments) [default: the built-in one].
    #[arg(long, value_name = "FILE")]
    pub vocab: Option<PathBuf>,
    /// Print JSON: {"path", "labels": [{"label", "probability", "cosine"}]}.
    #[arg(long)]
    pub json: bool,
}

/// `clipdex tags`.
#[derive(Debug, Args)]
pub struct TagsArgs {
    /// Print JSON: {"tags": [{"label", "count"}]}.
    #[arg(long)]
    pub json: bool,
}

/// The model for `tag` and `describe`, with the label-embedding cache of the library when one
/// of the same model exists: the built-in vocabulary in the photo ensemble is about 4,000
/// prompts, embedded once per model instead of on every call.
pub struct ZeroShotModel {
    library: Option<Library>,
    clip: Option<Arc<ClipEmbedder>>,
}

impl ZeroShotModel {
    pub fn open(g: &GlobalOptions) -> anyhow::Result<Self> {
        // Never create a database for this; use one that is there and free.
        let library = g
            .library_config(clipdex::models::clip::MAX_BATCH)
            .ok()
            .filter(|config| config.db.exists())
            .and_then(|config| Library::open(config).ok());
        let clip = match library {
            Some(_) => None,
            None => Some(Arc::new(
                ClipEmbedder::load_with_text_model(g.clip_model(), g.text_model.as_deref(), &g.device.open()?)?
                    .with_precision(g.precision),
            )),
        };
        Ok(ZeroShotModel { library, clip })
    }

    pub fn clip(&self) -> anyhow::Result<Arc<ClipEmbedder>> {
        match (&self.clip, &self.library) {
            (Some(c), _) => Ok(c.clone()),
            (None, Some(l)) => Ok(l.clip()?),
            (None, None) => unreachable!("one of the two is always set"),
        }
    }

    fn classifier(&self, labels: &[String], templates: &[String]) -> anyhow::Result<ZeroShotClassifier> {
        Ok(match &self.library {
            Some(l) => l.classifier(labels, templates)?.0,
            None => ZeroShotClassifier::new(&*self.clip()?, labels, templates)?,
        })
    }
}

fn read_text(path: &Path) -> anyhow::Result<String> {
    Ok(clipdex::text_lines::read_text_lines(path, "the file")?)
}

fn vocabulary(vocab: Option<&Path>) -> anyhow::Result<Vec<String>> {
    let labels = match vocab {
        Some(path) => tags::parse_vocabulary(&read_text(path)?),
        None => tags::parse_vocabulary(tags::DEFAULT_VOCABULARY),
    };
    anyhow::ensure!(!labels.is_empty(), "the vocabulary has no labels");
    Ok(labels)
}

/// `clipdex tag IMAGE...`.
pub fn tag(g: &GlobalOptions, args: &TagArgs) -> anyhow::Result<ExitCode> {
    let model = ZeroShotModel::open(g)?;
    let max_pixels = g.max_pixels;
    let clip = model.clip()?;
    let (labels, from_list) = match &args.labels {
        Some(list) => (tags::parse_label_list(list), true),
        None => (vocabulary(args.vocab.as_deref())?, false),
    };
    anyhow::ensure!(!labels.is_empty(), "no labels: give --labels \"cat,dog\" or --vocab FILE");
    let templates: Vec<String> = match (&args.templates, args.template.is_empty()) {
        (Some(t), _) => templates_named(t)?,
        (None, false) => args.template.clone(),
        (None, true) => vec![tags::DEFAULT_TEMPLATE.to_string()],
    };
    let classifier = model.classifier(&labels, &templates)?;
    let top = args.top.unwrap_or(if from_list { labels.len() } else { 10 });
    let options = DecodeOptions { max_pixels, min_side: None };
    let embedded = clip.embed_image_files(&args.images, &options);
    let failures = embedded.iter().filter(|r| r.is_err()).count();
    let mut out = std::io::stdout().lock();
    let mut rows = Vec::new();
    let scoring = classifier.scoring();
    if !args.json && matches!(scoring, tags::Scoring::Sigmoid { .. }) {
        writeln!(out, "({})", scoring.meaning())?;
    }
    for (path, r) in args.images.iter().zip(&embedded) {
        match r {
            Ok(e) => {
                let mut ranked = classifier.classify(e);
                ranked.truncate(top);
                if args.json {
                    rows.push(path_text::object(path, json!({"labels": ranked})));
                } else {
                    writeln!(out, "{}", path_text::escaped(path))?;
                    for l in &ranked {
                        writeln!(out, "  {:>6.2}%  {}  (cosine {:.3})", l.probability * 100.0, l.label, l.cosine)?;
                    }
                }
            }
            Err(err) => {
                if args.json {
                    rows.push(path_text::object(path, json!({"error": err.to_string()})));
                } else {
                    writeln!(out, "{}: error: {err}", path_text::escaped(path))?;
                }
            }
        }
    }
    if args.json {
        writeln!(out, "{}", json!({ "images": rows, "scoring": scoring.name() }))?;
    }
    out.flush()?;
    if failures > 0 {
        eprintln!("error: {failures} of {} images could not be tagged", args.images.len());
        return Ok(ExitCode::FAILURE);
    }
    Ok(ExitCode::SUCCESS)
}

/// `clipdex describe IMAGE`.
pub fn describe(g: &GlobalOptions, args: &DescribeArgs) -> anyhow::Result<ExitCode> {
    let model = ZeroShotModel::open(g)?;
    let DescribeArgs { image, k, vocab, json } = args;
    let (k, json, max_pixels) = (*k, *json, g.max_pixels);
    let labels = vocabulary(vocab.as_deref())?;
    let clip = model.clip()?;
    let classifier = model.classifier(&labels, &templates_named("photo")?)?;
    let rgb = clipdex::photo::open_rgb(image, &DecodeOptions { max_pixels, min_side: None })?;
    let e = clip.embed_images(&[rgb])?.remove(0);
    let mut ranked = classifier.classify(&e);
    ranked.truncate(k);
    let mut out = std::io::stdout().lock();
    if json {
        let scoring = classifier.scoring().name();
        writeln!(out, "{}", path_text::object(image, json!({"labels": ranked, "scoring": scoring})))?;
    } else {
        for l in &ranked {
            writeln!(out, "{:.3}  {}", l.cosine, l.label)?;
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// Templates named on the command line: `photo` (the built-in ensemble), `single` (the CLIP
/// paper's one template), or a file of templates.
fn templates_named(name: &str) -> anyhow::Result<Vec<String>> {
    Ok(match name {
        "photo" => tags::PHOTO_TEMPLATES.iter().map(|s| s.to_string()).collect(),
        "single" => vec![tags::DEFAULT_TEMPLATE.to_string()],
        file => tags::parse_templates(&read_text(Path::new(file))?)?,
    })
}

/// `clipdex autotag`.
pub fn autotag(library: &Library, args: &AutotagArgs, out: &mut dyn Write) -> anyhow::Result<ExitCode> {
    let mut settings = match library.autotag_settings()? {
        Some(s) => s,
        None => AutotagSettings::new(vocabulary(None)?, templates_named("photo")?),
    };
    if let Some(file) = &args.vocab {
        settings.labels = vocabulary(Some(file))?;
    }
    if let Some(t) = &args.templates {
        settings.templates = templates_named(t)?;
    }
    if let Some(r) = args.prior_ratio {
        settings.prior_ratio = r;
    }
    if let Some(n) = args.max_tags {
        settings.max_tags = n;
    }
    let (n_labels, threshold) = (settings.labels.len(), settings.threshold());
    let report = library.autotag(Some(settings.clone()))?;
    if args.json {
        let mut doc = serde_json::to_value(&report)?;
        doc["labels"] = json!(n_labels);
        doc["threshold"] = json!(threshold);
        writeln!(out, "{doc}")?;
    } else {
        writeln!(
            out,
            "{} photos: {} tagged, {} already tagged; {} tags kept (probability ≥ {:.3} = min({} × 1/{}, 0.5)); \
             {} labels embedded",
            report.images,
            report.tagged,
            report.unchanged,
            report.tags,
            threshold,
            settings.prior_ratio,
            n_labels,
            report.labels_embedded
        )?;
    }
    Ok(ExitCode::SUCCESS)
}

/// `clipdex tags`.
pub fn tag_counts(library: &Library, args: &TagsArgs, out: &mut dyn Write) -> anyhow::Result<ExitCode> {
    let json = args.json;
    let counts = library.tag_counts()?;
    if json {
        writeln!(out, "{}", json!({ "tags": counts }))?;
    } else if counts.is_empty() {
        writeln!(out, "no tags yet: run `clipdex autotag`")?;
    } else {
        for c in &counts {
            writeln!(out, "{:>7}  {}", c.count, c.label)?;
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// `clipdex eval ...`.
pub fn eval(g: &GlobalOptions, what: &EvalCommand) -> anyhow::Result<ExitCode> {
    match what {
        EvalCommand::Zeroshot(args) => {
            let clip = ClipEmbedder::load_with_text_model(g.clip_model(), g.text_model.as_deref(), &g.device.open()?)?
                .with_precision(g.precision);
            eval_zeroshot(&clip, args, g.max_pixels)
        }
    }
}

/// `clipdex eval zeroshot DATASET_DIR`.
fn eval_zeroshot(clip: &ClipEmbedder, args: &EvalZeroshotArgs, max_pixels: u64) -> anyhow::Result<ExitCode> {
    let labels_text = args.labels.as_deref().map(read_text).transpose()?;
    let dataset = Dataset::open(&args.dataset, labels_text.as_deref())?;
    let labels = dataset.labels();
    let mut runs: Vec<(&str, Vec<String>)> =
        vec![("single", vec![args.template.clone().unwrap_or_else(|| tags::DEFAULT_TEMPLATE.to_string())])];
    if let Some(t) = &args.templates {
        runs.push(("ensemble", templates_named(t)?));
    }

    let files: Vec<(usize, PathBuf)> =
        dataset.classes.iter().enumerate().flat_map(|(i, c)| c.images.iter().map(move |p| (i, p.clone()))).collect();
    let paths: Vec<_> = files.iter().map(|(_, p)| p.clone()).collect();
    let bar = progress_bar();
    let options = DecodeOptions { max_pixels, min_side: None };
    let mut embedded = Vec::new();
    let mut failed = Vec::new();
    for (chunk_files, chunk) in files.chunks(64).zip(paths.chunks(64)) {
        for ((class, path), r) in chunk_files.iter().zip(clip.embed_image_files(chunk, &options)) {
            match r {
                Ok(e) => embedded.push((*class, e)),
                Err(e) => failed.push(path_text::object(path, json!({"error": e.to_string()}))),
            }
        }
        if let Some(b) = &bar {
            b.set_length(paths.len() as u64);
            b.inc(chunk.len() as u64);
        }
    }
    if let Some(b) = bar {
        b.finish_and_clear();
    }
    anyhow::ensure!(!embedded.is_empty(), "none of the {} images could be read", paths.len());

    std::fs::create_dir_all(&args.out).with_context(|| format!("cannot create {}", args.out.display()))?;
    let mut results: Vec<EvalRun> = Vec::new();
    let mut written = Vec::new();
    for (name, templates) in &runs {
        let classifier = ZeroShotClassifier::new(clip, &labels, templates)?;
        let run = eval::evaluate(name, templates, &dataset, &embedded, &classifier);
        let stem = if *name == "single" { "confusion".to_string() } else { format!("confusion-{name}") };
        let csv = args.out.join(format!("{stem}.csv"));
        std::fs::write(&csv, eval::confusion_csv(&run, &labels))
            .with_context(|| format!("cannot write {}", csv.display()))?;
        let png = args.out.join(format!("{stem}.png"));
        let title = format!("{name} prompt: top-1 {:.1}%, rows = true class", run.top1 * 100.0);
        eval::write_heatmap(&run.confusion, &labels, &title, &png)?;
        written.extend([csv, png]);
        results.push(run);
    }

    let mut out = std::io::stdout().lock();
    if args.json {
        let doc = json!({
            "dataset": args.dataset,
            "labels": labels,
            "images": embedded.len(),
            "failed": failed,
            "runs": results,
            "files": written,
        });
        writeln!(out, "{doc}")?;
    } else {
        print_eval(&mut out, &args.dataset, &dataset, embedded.len(), &failed, &results, &written)?;
    }
    Ok(ExitCode::SUCCESS)
}

fn print_eval(
    out: &mut impl Write,
    dir: &Path,
    dataset: &Dataset,
    images: usize,
    failed: &[serde_json::Value],
    runs: &[EvalRun],
    written: &[PathBuf],
) -> anyhow::Result<()> {
    writeln!(
        out,
        "{}: {} classes, {} images{}, {} distractor labels",
        dir.display(),
        dataset.classes.len(),
        images,
        if failed.is_empty() { String::new() } else { format!(" ({} unreadable, skipped)", failed.len()) },
        dataset.distractors.len()
    )?;
    for r in runs {
        writeln!(
            out,
            "{:<9} {:>2} template(s)  top-1 {:>5.1}%  top-{} {:>5.1}%",
            r.name,
            r.templates.len(),
            r.top1 * 100.0,
            r.top_k,
            r.top5 * 100.0
        )?;
    }
    let header: String = runs.iter().map(|r| format!("{:>10}", r.name)).collect();
    writeln!(out, "\n{:<32}{header}  images", "top-1 per class")?;
    for (i, c) in dataset.classes.iter().enumerate() {
        let cells: String = runs.iter().map(|r| format!("{:>9.1}%", r.per_class[i].top1 * 100.0)).collect();
        writeln!(out, "  {:<30}{cells}  {:>6}", c.label, runs[0].per_class[i].images)?;
    }
    let last = runs.last().expect("at least one run");
    if !last.confused.is_empty() {
        writeln!(out, "\nmost confused ({}):", last.name)?;
        for c in &last.confused {
            writeln!(out, "  {} → {}: {} ({:.0}% of the class)", c.truth, c.predicted, c.count, c.share * 100.0)?;
        }
    }
    writeln!(out, "\nwrote {}", written.iter().map(|p| p.display().to_string()).collect::<Vec<_>>().join(", "))?;
    Ok(())
}
