//! The `clipdex` binary: parses the command line, calls the library, prints the result
//! (human-readable by default, `--json` for scripts). Errors end here, as one line on stderr.

mod blip;
mod cli;
mod duplicates;
mod forward;
mod segmenting;
mod tagging;

use std::io::Write;
use std::process::ExitCode;

use anyhow::Context;
use clap::Parser;
use serde_json::json;

use clipdex::path_text;
use clipdex::photo::DecodeOptions;
use clipdex::query::{Media, SearchFilter, SearchHit, parse_date};
use clipdex::store::DbLocation;
use clipdex::{ClipEmbedder, Library, LibraryConfig};

use cli::{Cli, Command, EmbedArgs, EvalCommand, FilterArgs, GlobalOptions};

fn main() -> ExitCode {
    // Colours only on a terminal: a log written to a file must not fill with escape codes.
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()))
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    let db = database(&cli.global).ok();
    match run(cli) {
        Ok(code) => code,
        // The reader went away (`clipdex failures | head -1`): not an error of ours.
        Err(e) if is_broken_pipe(&e) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            if let Some(hint) = db.as_ref().and_then(|db| forward::held_by(db, &e)) {
                eprintln!("{hint}");
            }
            ExitCode::FAILURE
        }
    }
}

pub(crate) fn is_broken_pipe(e: &anyhow::Error) -> bool {
    e.chain().any(|cause| {
        let kind = cause
            .downcast_ref::<std::io::Error>()
            .map(std::io::Error::kind)
            .or_else(|| cause.downcast_ref::<serde_json::Error>().and_then(serde_json::Error::io_error_kind));
        kind == Some(std::io::ErrorKind::BrokenPipe)
    })
}

fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    let g = &cli.global;
    match &cli.command {
        Command::Embed(args) => {
            let clip = ClipEmbedder::load_with_text_model(g.clip_model(), g.text_model.as_deref(), &g.device.open()?)?
                .with_precision(g.precision);
            return embed(&clip, args, g.max_pixels);
        }
        Command::Tag(args) => {
            return tagging::tag(&tagging::ZeroShotModel::open(g)?, args, g.max_pixels);
        }
        Command::Describe { image, k, vocab, json } => {
            let model = tagging::ZeroShotModel::open(g)?;
            return tagging::describe(&model, image, *k, vocab.as_deref(), *json, g.max_pixels);
        }
        Command::Finetune(args) => return cli::finetune::run(g, args),
        Command::Bench(args) => return cli::bench::run(g, args),
        Command::Segment(args) => return segmenting::segment(g, args),
        Command::Caption(args) => return blip::caption(g, args),
        Command::Ask(args) => return blip::ask(g, args),
        Command::Match(args) => return blip::match_texts(g, args),
        Command::Eval { what: EvalCommand::Zeroshot(args) } => {
            let clip = ClipEmbedder::load_with_text_model(g.clip_model(), g.text_model.as_deref(), &g.device.open()?)?
                .with_precision(g.precision);
            return tagging::eval_zeroshot(&clip, args, g.max_pixels);
        }
        _ => {}
    }
    let batch_size = match &cli.command {
        Command::Index { batch_size, .. }
        | Command::Watch { batch_size, .. }
        | Command::Reindex { batch_size, .. }
        | Command::Worker { batch_size, .. } => *batch_size as usize,
        Command::Serve(args) => args.batch_size as usize,
        _ => clipdex::models::clip::MAX_BATCH,
    };
    if let Command::Reindex { json, .. } = &cli.command {
        return reindex(g, batch_size, *json);
    }
    if let Command::Migrate { to, json } = &cli.command {
        return migrate(g, to, *json);
    }
    if let Command::Duplicates { restore: Some(dir), json, .. } = &cli.command {
        duplicates::restore(dir, *json)?;
        return Ok(ExitCode::SUCCESS);
    }
    let config = library_config(g, batch_size)?;
    let opened = match &cli.command {
        // Reading records and stored vectors needs no CLIP model: open whatever model made them;
        // and without --model every command uses the library's own model.
        Command::Show { .. } | Command::Duplicates { .. } => Library::open_as_stored(config),
        _ if g.model.is_none() => Library::open_as_stored(config),
        _ => Library::open(config),
    };
    let mut library = match opened {
        Ok(library) => library,
        // The folder library is held: by a server, which runs the command for us.
        Err(e) => return forward::to_server(g, &cli.command, e),
    };
    if matches!(cli.command, Command::Search(_) | Command::Similar { .. } | Command::CropSearch(_)) {
        // One search: scanning every vector (9 ms at 100,000 photos) beats loading the graph.
        library.set_load_graph(false);
    }
    if let Command::Serve(args) = &cli.command {
        return serve(g, library, args);
    }
    let mut out = std::io::stdout().lock();
    let code = on_library(g, &library, cli.command, &mut out, &Runner::default())?;
    out.flush()?;
    Ok(code)
}

/// Who runs a command on the library.
#[derive(Default)]
pub(crate) struct Runner<'a> {
    /// The indexer of the server that holds the library, when the server runs a command
    /// another process forwarded; `None` when this process opened the library itself.
    pub server: Option<&'a clipdex::server::BackgroundIndexer>,
}

/// A command on an open library, printing to `out`: the same code whether this process runs
/// it or the server holding the library runs it for another process.
pub(crate) fn on_library(
    g: &GlobalOptions,
    library: &Library,
    command: Command,
    out: &mut dyn Write,
    ctx: &Runner,
) -> anyhow::Result<ExitCode> {
    match command {
        Command::Embed(_)
        | Command::Tag(_)
        | Command::Describe { .. }
        | Command::Eval { .. }
        | Command::Segment(_)
        | Command::Caption(_)
        | Command::Ask(_)
        | Command::Match(_)
        | Command::Finetune(_)
        | Command::Bench(_) => {
            unreachable!("handled above")
        }
        Command::Reindex { .. } | Command::Migrate { .. } => unreachable!("handled above"),
        Command::Autotag(args) => return tagging::autotag(library, &args, out),
        Command::Tags { json } => return tagging::tag_counts(library, json, out),
        Command::Add { roots } => {
            if g.model.is_some() && ctx.server.is_none() {
                library.remember_model()?; // later commands need no --model
            }
            for root in roots {
                let added = library.add_root(&root)?;
                writeln!(out, "added {}", path_text::escaped(&added))?;
            }
            match ctx.server {
                Some(indexer) => {
                    indexer.roots_changed();
                    writeln!(out, "the server indexes them now")?;
                }
                None => writeln!(out, "run `clipdex index` to index them")?,
            }
        }
        Command::Roots { json } => {
            let roots = library.roots()?;
            if json {
                let mut doc = serde_json::Map::new();
                path_text::insert_list(&mut doc, "roots", "roots_bytes", &roots);
                writeln!(out, "{}", serde_json::Value::Object(doc))?;
            } else {
                for r in roots {
                    writeln!(out, "{}", path_text::escaped(&r))?;
                }
            }
        }
        Command::Remove { root } => {
            let n = library.remove_root(&root)?;
            if let Some(indexer) = ctx.server {
                indexer.roots_changed();
            }
            let root = clipdex::indexer::root_path(&root);
            writeln!(out, "removed {} ({n} files forgotten)", path_text::escaped(&root))?;
        }
        Command::Index { json, prune, .. } => {
            let report = match ctx.server {
                // The server's own indexer runs the pass: two passes at once would embed the
                // same new photos twice.
                Some(indexer) => {
                    anyhow::ensure!(
                        !prune,
                        "index --prune cannot run while the server indexes the library; stop it first"
                    );
                    indexer.index_now(std::time::Duration::from_secs(24 * 3600)).context(
                        "the server does not index (serve --no-watch): stop it, or restart it without --no-watch",
                    )?
                }
                None => with_progress(
                    |progress| {
                        if prune { library.index_and_prune(progress) } else { library.index(progress) }
                    },
                )?,
            };
            if json {
                writeln!(out, "{}", serde_json::to_string(&report)?)?;
            } else {
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
                        format!("; the new include {} videos ({} frames)", report.videos, report.frames)
                    } else {
                        String::new()
                    },
                    if report.tagged > 0 { format!("; {} auto-tagged", report.tagged) } else { String::new() }
                )?;
                for r in &report.missing_roots {
                    writeln!(
                        out,
                        "warning: {} is missing or looks unmounted (no photo, or another drive); its photos were \
                         left in place (`clipdex index --prune` forgets them)",
                        r.display()
                    )?;
                }
                for r in &report.busy_roots {
                    writeln!(
                        out,
                        "{}: another process was scanning it; this one helped embed what it found",
                        r.display()
                    )?;
                }
            }
        }
        Command::Worker { path_map, once, json, .. } => {
            static STOP: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);
            if let Err(e) = ctrlc::set_handler(|| STOP.store(true, std::sync::atomic::Ordering::Relaxed)) {
                tracing::warn!("cannot catch Ctrl-C ({e}); stopping it ends the worker mid-batch");
            }
            let options = clipdex::indexer::WorkerOptions { path_map, once };
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
            if json {
                writeln!(out, "{}", serde_json::to_string(&report)?)?;
            } else {
                writeln!(
                    out,
                    "embedded {}, linked {}, failed {}, unreadable here {}, discarded {}",
                    report.embedded, report.linked, report.failed, report.unreadable, report.discarded
                )?;
            }
        }
        Command::Watch { json, debounce_ms, rescan_secs, .. } => {
            let options = clipdex::indexer::watch::WatchOptions {
                debounce: std::time::Duration::from_millis(debounce_ms),
                rescan_every: std::time::Duration::from_secs(rescan_secs),
            };
            let stop = std::sync::atomic::AtomicBool::new(false);
            library.watch(
                &options,
                &stop,
                &|_, _| {},
                &mut |report| {
                    let mut out = std::io::stdout().lock();
                    let line = if json {
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
        }
        Command::Search(args) => return cli::search::run(g, library, &args, out),
        Command::Similar { image, filter: f } => {
            let filter = filter_of(&f)?;
            library.clip()?;
            let started = std::time::Instant::now();
            // A file is searched by its pixels, in the library or not; an id by its stored vector.
            let hits = if image.exists() {
                library.search_image(&image, f.k as usize, &filter)?
            } else {
                library.search_like(library.resolve_image(&image)?, f.k as usize, &filter)?
            };
            print_hits(out, &hits, started, f.json, &|| no_results(library, &filter))?;
        }
        Command::Serve(_) => unreachable!("handled before"),
        Command::CropSearch(args) => {
            let filter = filter_of(&args.filter)?;
            return segmenting::crop_search(library, &args, &filter, out);
        }
        Command::Duplicates { threshold, json, move_to, dismiss, .. } => {
            duplicates::run(library, duplicates::DuplicatesArgs { threshold, json, move_to, dismiss }, out)?;
        }
        Command::Show { image, json } => {
            let details = library.image_details(library.resolve_image(&image)?)?;
            if json {
                writeln!(out, "{}", serde_json::to_string(&details)?)?;
            } else {
                blip::print_details(out, &details)?;
            }
        }
        Command::Stats { json } => {
            let s = library.stats()?;
            if json {
                writeln!(out, "{}", serde_json::to_string(&s)?)?;
            } else {
                writeln!(out, "database  {} (schema {})", library.store().location(), s.schema_version)?;
                writeln!(out, "model     {}", s.model.as_deref().unwrap_or("(none yet)"))?;
                let precisions: Vec<String> = s.precisions.iter().map(|p| p.to_string()).collect();
                writeln!(out, "precision {}", precisions.join(", "))?;
                writeln!(out, "images    {}", s.counts.images)?;
                if s.counts.videos > 0 {
                    writeln!(out, "videos    {} ({} frames)", s.counts.videos, s.counts.frames)?;
                }
                writeln!(out, "paths     {}", s.counts.paths)?;
                writeln!(out, "vectors   {}", s.counts.vectors)?;
                writeln!(out, "failures  {}", s.counts.failures)?;
                writeln!(out, "roots     {}", s.counts.roots)?;
                writeln!(out, "tags      {} on {} tagged images", s.counts.tags, s.counts.tagged)?;
                if let Some(j) = s.jobs.as_ref().filter(|j| j.pending + j.leased > 0) {
                    writeln!(
                        out,
                        "jobs      {} queued, {} being embedded by {}",
                        j.pending,
                        j.leased,
                        if j.workers.is_empty() { "nobody".to_string() } else { j.workers.join(", ") }
                    )?;
                }
                if let Some(r) = &s.reindex {
                    writeln!(
                        out,
                        "reindex   to {}: {} of {} images (run `clipdex reindex --model {}` to finish)",
                        r.to, r.done, r.of, r.to
                    )?;
                }
                writeln!(
                    out,
                    "index     {} ({} vectors, {} tombstones)",
                    s.index.kind, s.index.vectors, s.index.tombstones
                )?;
            }
        }
        Command::Failures { json } => {
            let failures = library.failures()?;
            if json {
                let rows: Vec<_> = failures
                    .iter()
                    .map(|(p, f)| path_text::object(p, json!({"reason": f.reason, "attempts": f.attempts})))
                    .collect();
                writeln!(out, "{}", json!({ "failures": rows }))?;
            } else {
                for (p, f) in &failures {
                    writeln!(out, "{}: {} ({} attempts)", path_text::escaped(p), f.reason, f.attempts)?;
                }
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// `clipdex reindex`: the library opens with the model of its vectors; `--model` names the
/// model to move to.
fn reindex(g: &GlobalOptions, batch_size: usize, json: bool) -> anyhow::Result<ExitCode> {
    let Some(to) = &g.model else {
        anyhow::bail!("reindex moves the library to another model: name it with --model M")
    };
    let library = Library::open_as_stored(library_config(g, batch_size)?)?;
    let report = with_progress(|progress| library.reindex(to, progress))?;
    let mut out = std::io::stdout().lock();
    if json {
        writeln!(out, "{}", serde_json::to_string(&report)?)?;
    } else {
        writeln!(
            out,
            "switched from {} to {}: {} photos embedded ({} already done by an interrupted run), {} forgotten{}",
            report.from,
            report.to,
            report.embedded,
            report.resumed,
            report.failed,
            if report.failed > 0 { " (their files changed or went away; `clipdex index` picks them up)" } else { "" }
        )?;
    }
    Ok(ExitCode::SUCCESS)
}

fn serve(g: &GlobalOptions, library: Library, args: &cli::ServeArgs) -> anyhow::Result<ExitCode> {
    let options = clipdex::server::ServeOptions {
        bind: args.bind.clone(),
        token: args.token.clone(),
        watch: !args.no_watch,
        watch_options: clipdex::indexer::watch::WatchOptions {
            debounce: std::time::Duration::from_millis(args.debounce_ms),
            rescan_every: std::time::Duration::from_secs(args.rescan_secs),
        },
        max_upload: args.max_upload,
        cors_origins: args.cors_origins.clone(),
        workers: 0,
        finetuned: args.finetuned.clone(),
        body_timeout: clipdex::server::ServeOptions::default().body_timeout,
        blip: clipdex::server::BlipModels {
            caption: g.caption_model.clone(),
            vqa: g.vqa_model.clone(),
            itm: g.itm_model.clone(),
        },
        commands: Some(forward::runner(g)),
        heavy_running: args.heavy_requests as usize,
        heavy_waiting: args.heavy_queue as usize,
    };
    let photos = library.store().counts()?.images;
    let watching = if args.no_watch { "not indexing (--no-watch)" } else { "indexing in the background" };
    clipdex::server::serve(library, options, |addrs| {
        let mut out = std::io::stdout().lock();
        for a in addrs {
            let _ = writeln!(out, "clipdex serving http://{a}/ ({photos} photos; {watching})");
        }
        let _ = out.flush();
    })?;
    Ok(ExitCode::SUCCESS)
}

/// The library's database: `--db` (a folder or a `postgres://` URL), else `clipdex` in the
/// platform's data folder.
/// `clipdex migrate --to URL`.
fn migrate(g: &GlobalOptions, to: &std::ffi::OsStr, json: bool) -> anyhow::Result<ExitCode> {
    let DbLocation::Dir(from) = database(g)? else {
        anyhow::bail!("migrate copies a folder library: --db names it (the library is already in PostgreSQL)");
    };
    let to = DbLocation::parse(to)?;
    let report = clipdex::library::migrate::migrate(&from, &to, clipdex::ann::GRAPH_MIN_VECTORS)?;
    let mut out = std::io::stdout().lock();
    if json {
        writeln!(out, "{}", serde_json::to_string(&report)?)?;
    } else {
        let c = &report.copied;
        writeln!(
            out,
            "copied {} images ({} files, {} vectors), {} failures, {} folders, {} tagged, {} captions into {}",
            c.images, c.paths, c.vectors, c.failures, c.roots, c.tagged, c.captions, report.to
        )?;
        writeln!(
            out,
            "checked: counts agree, {} sample searches return the same images; search index: {}; {:.1} s",
            report.checked_searches, report.index, report.seconds
        )?;
        writeln!(out, "use it with --db {}", report.to)?;
    }
    Ok(ExitCode::SUCCESS)
}

pub(crate) fn database(g: &GlobalOptions) -> anyhow::Result<DbLocation> {
    Ok(match &g.db {
        Some(db) => DbLocation::parse(db.as_os_str())?,
        None => {
            DbLocation::Dir(dirs::data_dir().context("no data folder on this platform: pass --db DIR")?.join("clipdex"))
        }
    })
}

pub(crate) fn library_config(g: &GlobalOptions, batch_size: usize) -> anyhow::Result<LibraryConfig> {
    let mut config = LibraryConfig::new(database(g)?, g.clip_model());
    config.text_model = g.text_model.clone();
    config.device = g.device;
    config.precision = g.precision;
    config.max_pixels = g.max_pixels;
    config.batch_size = batch_size;
    config.seg_model = g.seg_model.clone();
    config.video.interval = g.video_interval;
    config.video.max_frames = g.video_max_frames as usize;
    Ok(config)
}

fn open_library(g: &GlobalOptions, batch_size: usize) -> anyhow::Result<Library> {
    Ok(Library::open(library_config(g, batch_size)?)?)
}

/// Runs `job` with a progress bar on a terminal (files done of files to do).
pub(crate) fn with_progress<T>(
    job: impl FnOnce(clipdex::indexer::Progress) -> clipdex::Result<T>,
) -> anyhow::Result<T> {
    let bar = progress_bar();
    let outcome = job(&|done, total| {
        if let Some(b) = &bar {
            b.set_length(total);
            b.set_position(done);
        }
    });
    if let Some(b) = bar {
        b.finish_and_clear();
    }
    Ok(outcome?)
}

pub(crate) fn filter_of(f: &FilterArgs) -> anyhow::Result<SearchFilter> {
    let under = match &f.under {
        Some(p) => Some(std::fs::canonicalize(p).with_context(|| format!("--under {}", p.display()))?),
        None => None,
    };
    Ok(SearchFilter {
        under,
        after: f.after.as_deref().map(parse_date).transpose()?,
        before: f.before.as_deref().map(parse_date).transpose()?,
        tag: f.tag.as_ref().map(|t| t.trim().to_string()),
        kind: f.kind.parse()?,
        ..Default::default()
    })
}

/// Why a search found nothing, in words a user can act on.
pub(crate) fn no_results(library: &Library, filter: &SearchFilter) -> String {
    let images = library.stats().map(|s| s.counts.images).unwrap_or(0);
    if images == 0 {
        "no results: the library holds no photo yet (`clipdex add FOLDER`, then `clipdex index`)".into()
    } else if let Some(tag) =
        filter.tag.as_deref().filter(|_| filter.under.is_none() && filter.after.is_none() && filter.before.is_none())
    {
        format!("no results: no photo is tagged {tag:?} (tags in use: `clipdex tags`)")
    } else if !filter.is_empty() {
        format!("no results: none of the {images} photos in the library passes the filters")
    } else {
        "no results".into()
    }
}

/// Prints results; `empty` explains an empty list in the human-readable output.
pub(crate) fn print_hits(
    out: &mut dyn Write,
    hits: &[SearchHit],
    started: std::time::Instant,
    json: bool,
    empty: &dyn Fn() -> String,
) -> anyhow::Result<()> {
    let took_ms = started.elapsed().as_secs_f64() * 1e3;
    if json {
        writeln!(out, "{}", json!({ "results": hits, "took_ms": took_ms }))?;
    } else {
        for h in hits {
            match h.media {
                Media::Photo => writeln!(out, "{:.4}  {}  #{}", h.score, path_text::escaped(&h.path), h.id)?,
                Media::Video { time, .. } => {
                    writeln!(out, "{:.4}  {}  @ {}  #{}", h.score, path_text::escaped(&h.path), clock(time), h.id)?
                }
            }
        }
        if hits.is_empty() {
            writeln!(out, "{}", empty())?;
        }
    }
    Ok(())
}

/// A time in a video as a player shows it: `m:ss.s`, or `h:mm:ss.s`.
pub(crate) fn clock(seconds: f64) -> String {
    let tenths = (seconds.max(0.0) * 10.0).round() as u64;
    let (h, m, s) = (tenths / 36_000, tenths / 600 % 60, tenths % 600);
    let s = format!("{:02}.{}", s / 10, s % 10);
    if h > 0 { format!("{h}:{m:02}:{s}") } else { format!("{m}:{s}") }
}

/// A progress bar on a terminal, nothing otherwise.
pub(crate) fn progress_bar() -> Option<indicatif::ProgressBar> {
    if forward::forwarded() || !std::io::IsTerminal::is_terminal(&std::io::stderr()) {
        return None;
    }
    let bar = indicatif::ProgressBar::new(0);
    bar.set_style(
        indicatif::ProgressStyle::with_template("{bar:40} {pos}/{len} photos  {per_sec}  eta {eta}")
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    Some(bar)
}

fn embed(clip: &ClipEmbedder, args: &EmbedArgs, max_pixels: u64) -> anyhow::Result<ExitCode> {
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
