//! The library's folders and their indexing: `add`, `roots`, `remove`, `index`, `watch` and
//! `worker` (embedding a PostgreSQL library's queue on another machine).

use std::io::Write;
use std::path::PathBuf;

use anyhow::Context;
use clap::Args;

use clipdex::{Library, path_text};

use super::GlobalOptions;
use super::session::{Runner, with_progress};

/// `clipdex add`.
#[derive(Debug, Args)]
pub struct AddArgs {
    /// Folders to add.
    #[arg(required = true, value_name = "ROOT")]
    pub roots: Vec<PathBuf>,
}

/// `clipdex roots`.
#[derive(Debug, Args)]
pub struct RootsArgs {
    /// Print JSON: {"roots": [...]}.
    #[arg(long)]
    pub json: bool,
}

/// `clipdex remove`.
#[derive(Debug, Args)]
pub struct RemoveArgs {
    /// The folder.
    #[arg(value_name = "ROOT")]
    pub root: PathBuf,
}

/// `clipdex index`.
#[derive(Debug, Args)]
pub struct IndexArgs {
    /// Print the report as JSON.
    #[arg(long)]
    pub json: bool,
    /// Also forget the photos of roots that look unmounted: a folder that holds no photo
    /// now, or sits on another drive than when it was indexed (without it, their photos
    /// are kept and the root is reported as missing).
    #[arg(long)]
    pub prune: bool,
    /// Photos embedded per model call (memory grows with it).
    #[arg(long, default_value_t = 32, value_parser = clap::value_parser!(u64).range(1..=1024))]
    pub batch_size: u64,
    /// After embedding, read the text in the photos not read yet (see `clipdex ocr --library`);
    /// the library remembers it, and later passes read new photos too.
    #[arg(long)]
    pub ocr: bool,
    /// The OCR model that reads the text in photos (a folder of PP-OCR ONNX
    /// files); recorded as the library's `ocr_model` setting the first time, and refused when
    /// it differs from the recorded one (`clipdex config set ocr_model DIR|default` changes it).
    #[arg(long, value_name = "DIR|none")]
    pub ocr_model: Option<String>,
    /// After embedding, find the faces in the photos not looked at yet and group them into
    /// persons (with the library's face model, --face-model or CLIPDEX_FACE_MODEL); once the
    /// library has a face model, every pass does.
    #[arg(long)]
    pub faces: bool,
    /// The face models (a folder with dlib's files; tools/fetch_face_models.sh fetches them),
    /// or `none` to make no face data; the library remembers it (`config set face_model`).
    #[arg(long, value_name = "DIR|none")]
    pub face_model: Option<String>,
}

/// `clipdex worker`.
#[derive(Debug, Args)]
pub struct WorkerArgs {
    /// Where this machine sees the library's paths, when not at the same place: the
    /// recorded prefix FROM read from TO (repeatable; the first match applies), e.g.
    /// /srv/photos=/mnt/nas/photos.
    #[arg(long = "path-map", value_name = "FROM=TO", value_parser = parse_path_map)]
    pub path_map: Vec<(PathBuf, PathBuf)>,
    /// Stop when the queue is empty instead of waiting for more.
    #[arg(long)]
    pub once: bool,
    /// Print the final report as JSON (as `index --json`).
    #[arg(long)]
    pub json: bool,
    /// Photos embedded per model call.
    #[arg(long, default_value_t = 32, value_parser = clap::value_parser!(u64).range(1..=1024))]
    pub batch_size: u64,
}

/// `clipdex watch`.
#[derive(Debug, Args)]
pub struct WatchArgs {
    /// Print each pass's report as one JSON line.
    #[arg(long)]
    pub json: bool,
    /// Photos embedded per model call.
    #[arg(long, default_value_t = 32, value_parser = clap::value_parser!(u64).range(1..=1024))]
    pub batch_size: u64,
    /// Quiet time after a change before indexing, in milliseconds.
    #[arg(long, default_value_t = 2000)]
    pub debounce_ms: u64,
    /// Full rescan interval in seconds (catches what file events miss).
    #[arg(long, default_value_t = 600, value_parser = clap::value_parser!(u64).range(1..))]
    pub rescan_secs: u64,
    /// Read the text in photos in the background with this OCR model (a folder of PP-OCR ONNX
    /// files); recorded as the library's `ocr_model` setting the first time, and refused when
    /// it differs from the recorded one (`clipdex config set ocr_model DIR|default` changes it).
    #[arg(long, value_name = "DIR|none")]
    pub ocr_model: Option<String>,
    /// Find the faces in photos in the background with these face models (a folder with dlib's
    /// files), or `none` to make no face data; the library remembers it.
    #[arg(long, value_name = "DIR|none")]
    pub face_model: Option<String>,
}

fn parse_path_map(s: &str) -> Result<(PathBuf, PathBuf), String> {
    match s.split_once('=') {
        Some((from, to)) if !from.is_empty() && !to.is_empty() => Ok((PathBuf::from(from), PathBuf::from(to))),
        _ => Err(format!("{s:?}: expected FROM=TO, e.g. /srv/photos=/mnt/nas/photos")),
    }
}

/// `clipdex add ROOT...`.
pub fn add(
    g: &GlobalOptions,
    library: &Library,
    args: AddArgs,
    out: &mut dyn Write,
    ctx: &Runner,
) -> anyhow::Result<()> {
    if g.model.is_some() && ctx.server.is_none() {
        library.remember_model()?; // later commands need no --model
    }
    for root in args.roots {
        let added = library.add_root(&root)?;
        writeln!(out, "added {}", path_text::escaped(&added))?;
    }
    match ctx.server {
        Some(indexer) => {
            indexer.roots_changed();
            writeln!(out, "the server indexes them now")?;
        }
        None => {
            let clipdex = super::install::program();
            writeln!(
                out,
                "run `{clipdex} index` to index them, or `{clipdex} serve`, which indexes them while it serves"
            )?
        }
    }
    Ok(())
}

/// `clipdex roots`.
pub fn roots(library: &Library, args: RootsArgs, out: &mut dyn Write) -> anyhow::Result<()> {
    let roots = library.roots()?;
    if args.json {
        let mut doc = serde_json::Map::new();
        path_text::insert_list(&mut doc, "roots", "roots_bytes", &roots);
        writeln!(out, "{}", serde_json::Value::Object(doc))?;
    } else {
        for r in roots {
            writeln!(out, "{}", path_text::escaped(&r))?;
        }
    }
    Ok(())
}

/// `clipdex remove ROOT`.
pub fn remove(library: &Library, args: RemoveArgs, out: &mut dyn Write, ctx: &Runner) -> anyhow::Result<()> {
    let n = library.remove_root(&args.root)?;
    if let Some(indexer) = ctx.server {
        indexer.roots_changed();
    }
    let root = clipdex::indexer::root_path(&args.root);
    writeln!(out, "removed {} ({n} files forgotten)", path_text::escaped(&root))?;
    Ok(())
}

/// `clipdex index`: here, or by the indexer of the server that holds the library.
pub fn index(library: &Library, args: IndexArgs, out: &mut dyn Write, ctx: &Runner) -> anyhow::Result<()> {
    let IndexArgs { json, prune, ocr, ocr_model, faces, face_model, .. } = args;
    super::ocr::choose_model(library, ocr_model.as_deref(), ocr)?;
    super::people::choose_face_model(library, face_model.as_deref(), faces)?;
    let report = match ctx.server {
        // The server's own indexer runs the pass: two passes at once would embed the
        // same new photos twice.
        Some(indexer) => {
            anyhow::ensure!(!prune, "index --prune cannot run while the server indexes the library; stop it first");
            indexer
                .index_now(std::time::Duration::from_secs(24 * 3600))
                .context("the server does not index (serve --no-watch): stop it, or restart it without --no-watch")?
        }
        None => {
            with_progress(|progress| if prune { library.index_and_prune(progress) } else { library.index(progress) })?
        }
    };
    if json {
        writeln!(out, "{}", serde_json::to_string(&report)?)?;
        return Ok(());
    }
    writeln!(
        out,
        "{} photos: {} new, {} linked (copies or moves), {} unchanged, {} removed, {} failed{}{}{}",
        report.seen,
        report.embedded,
        report.linked,
        report.unchanged,
        report.removed,
        report.failed,
        if report.failed > 0 { " (see `clipdex failures`)" } else { "" },
        if report.videos > 0 {
            let videos = if report.videos == 1 { "video" } else { "videos" };
            format!("; the new include {} {videos} ({} frames)", report.videos, report.frames)
        } else {
            String::new()
        },
        if report.tagged > 0 { format!("; {} auto-tagged", report.tagged) } else { String::new() }
    )?;
    if report.redated > 0 {
        writeln!(out, "{} touched photos re-dated by their file's new time", report.redated)?;
    }
    if report.text_read > 0 {
        writeln!(out, "text read in {} photos", report.text_read)?;
    }
    if report.faces_scanned > 0 {
        writeln!(out, "faces looked for in {} photos", report.faces_scanned)?;
    }
    for r in &report.missing_roots {
        writeln!(
            out,
            "warning: {} is missing or looks unmounted (no photo, or another drive); its photos were \
             left in place (`clipdex index --prune` forgets them)",
            r.display()
        )?;
    }
    for r in &report.busy_roots {
        writeln!(out, "{}: another process was scanning it; this one helped embed what it found", r.display())?;
    }
    Ok(())
}

/// `clipdex worker`: embeds the queue of a PostgreSQL library until Ctrl-C (or, with
/// `--once`, until it is empty).
pub fn worker(library: &Library, args: WorkerArgs, out: &mut dyn Write) -> anyhow::Result<()> {
    static STOP: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);
    if let Err(e) = ctrlc::set_handler(|| STOP.store(true, std::sync::atomic::Ordering::Relaxed)) {
        tracing::warn!("cannot catch Ctrl-C ({e}); stopping it ends the worker mid-batch");
    }
    let options = clipdex::indexer::WorkerOptions { path_map: args.path_map, once: args.once };
    let terminal = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let report = library.work(&options, &STOP, &mut |r| {
        if terminal {
            eprint!(
                "\rworker: {} embedded, {} linked, {} failed, {} unreadable here",
                r.embedded, r.linked, r.failed, r.unreadable
            );
        }
    })?;
    if terminal {
        eprintln!();
    }
    if args.json {
        writeln!(out, "{}", serde_json::to_string(&report)?)?;
    } else {
        writeln!(
            out,
            "embedded {}, linked {}, failed {}, unreadable here {}, discarded {}",
            report.embedded, report.linked, report.failed, report.unreadable, report.discarded
        )?;
    }
    Ok(())
}

/// `clipdex watch`: indexes, then follows the folders, printing a line per pass.
pub fn watch(library: &Library, args: WatchArgs) -> anyhow::Result<()> {
    super::ocr::choose_model(library, args.ocr_model.as_deref(), false)?;
    super::people::choose_face_model(library, args.face_model.as_deref(), false)?;
    let options = clipdex::indexer::watch::WatchOptions {
        debounce: std::time::Duration::from_millis(args.debounce_ms),
        rescan_every: std::time::Duration::from_secs(args.rescan_secs),
    };
    let stop = std::sync::atomic::AtomicBool::new(false);
    library.watch(
        &options,
        &stop,
        &|_, _| {},
        &mut |report| {
            let mut out = std::io::stdout().lock();
            let line = if args.json {
                serde_json::to_string(report).unwrap_or_default()
            } else {
                format!(
                    "{} new, {} linked, {} removed, {} failed, {} auto-tagged ({} photos)",
                    report.embedded, report.linked, report.removed, report.failed, report.tagged, report.seen
                )
            };
            let _ = writeln!(out, "{line}");
            let _ = out.flush();
        },
        &|_, _, _| {},
    )?;
    Ok(())
}
