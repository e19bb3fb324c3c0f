//! Commands on an open library: opening it as the command needs (or sending the command to the
//! `clipdex serve` that holds it, [`super::forward`]), then running it with [`on_library`],
//! the same code whether this process opened the library or the server runs a command another
//! process forwarded. Also the progress bar every long command shows on a terminal.

use std::io::Write;
use std::process::ExitCode;

use clipdex::Library;

use super::{
    Command, GlobalOptions, config, duplicates, library, maintenance, people, regions, search, serve, show, tags,
};

/// Runs a command on the library named by `--db`: opened here, or, when `clipdex serve` holds
/// it, by that server.
pub fn run(g: &GlobalOptions, command: Command) -> anyhow::Result<ExitCode> {
    let batch_size = match &command {
        Command::Index(args) => args.batch_size,
        Command::Watch(args) => args.batch_size,
        Command::Worker(args) => args.batch_size,
        Command::Serve(args) => args.batch_size,
        _ => clipdex::models::clip::MAX_BATCH as u64,
    } as usize;
    let config = g.library_config(batch_size)?;
    let opened = match &command {
        // Reading records and stored vectors needs no CLIP model: open whatever model made them;
        // and without --model every command uses the library's own model.
        Command::Show(_) | Command::Places(_) | Command::Duplicates(_) | Command::People(_) | Command::Config(_) => {
            Library::open_as_stored(config)
        }
        _ if g.model.is_none() => Library::open_as_stored(config),
        _ => Library::open(config),
    };
    let mut library = match opened {
        Ok(library) => library,
        // The folder library is held: by a server, which runs the command for us.
        Err(e) => return super::forward::to_server(g, &command, e),
    };
    // The library's recorded settings stand in for options not given; a given one that
    // disagrees is refused.
    let g = &config::settle(g, &library.settings()?)?;
    if matches!(command, Command::Search(_) | Command::Similar(_) | Command::CropSearch(_)) {
        // One search: scanning every vector (9 ms at 100,000 photos) beats loading the graph.
        library.set_load_graph(false);
    }
    if let Command::Serve(args) = &command {
        return serve::serve(g, library, args);
    }
    let mut out = std::io::stdout().lock();
    let code = on_library(g, &library, command, &mut out, &Runner::default())?;
    out.flush()?;
    Ok(code)
}

/// Who runs a command on the library.
#[derive(Default)]
pub struct Runner<'a> {
    /// The indexer of the server that holds the library, when the server runs a command
    /// another process forwarded; `None` when this process opened the library itself.
    pub server: Option<&'a clipdex::server::BackgroundIndexer>,
}

/// A command on an open library, printing to `out`: the same code whether this process runs
/// it or the server holding the library runs it for another process.
pub fn on_library(
    g: &GlobalOptions,
    library: &Library,
    command: Command,
    out: &mut dyn Write,
    ctx: &Runner,
) -> anyhow::Result<ExitCode> {
    match command {
        Command::Add(args) => library::add(g, library, args, out, ctx)?,
        Command::Roots(args) => library::roots(library, args, out)?,
        Command::Remove(args) => library::remove(library, args, out, ctx)?,
        Command::Index(args) => library::index(library, args, out, ctx)?,
        Command::Watch(args) => library::watch(library, args)?,
        Command::Worker(args) => library::worker(library, args, out)?,
        Command::Search(args) => return search::search(g, library, args, out),
        Command::Similar(args) => search::similar(library, args, out)?,
        Command::CropSearch(args) => return regions::crop_search(library, &args, out),
        Command::Show(args) => show::show(library, args, out)?,
        Command::Places(args) => super::places::places(library, &args, out)?,
        Command::Tags(args) => return tags::tag_counts(library, &args, out),
        Command::Autotag(args) => return tags::autotag(library, &args, out),
        Command::Stats(args) => maintenance::stats(library, args, out)?,
        Command::Config(args) => config::run(library, args, out, ctx)?,
        Command::Failures(args) => maintenance::failures(library, args, out)?,
        Command::Duplicates(args) => duplicates::run(library, args, out)?,
        Command::People(args) => people::run(library, args, out)?,
        // Each of these opens what it needs itself (`main` runs them).
        Command::Serve(_)
        | Command::Tag(_)
        | Command::Describe(_)
        | Command::Caption(_)
        | Command::Ask(_)
        | Command::Match(_)
        | Command::Segment(_)
        | Command::Ocr(_)
        | Command::Faces(_)
        | Command::Embed(_)
        | Command::Bench(_)
        | Command::Models(_)
        | Command::Finetune(_)
        | Command::Eval { .. }
        | Command::Reindex(_)
        | Command::Migrate(_)
        | Command::Completions(_)
        | Command::Man(_) => anyhow::bail!("this command does not run on an open library"),
    }
    Ok(ExitCode::SUCCESS)
}

/// Whether `e` is a write to a reader that went away (`clipdex failures | head -1`): not an
/// error of ours.
pub fn is_broken_pipe(e: &anyhow::Error) -> bool {
    e.chain().any(|cause| {
        let kind = cause
            .downcast_ref::<std::io::Error>()
            .map(std::io::Error::kind)
            .or_else(|| cause.downcast_ref::<serde_json::Error>().and_then(serde_json::Error::io_error_kind));
        kind == Some(std::io::ErrorKind::BrokenPipe)
    })
}

/// Runs `job` with a progress bar on a terminal (files done of files to do).
pub fn with_progress<T>(job: impl FnOnce(clipdex::indexer::Progress) -> clipdex::Result<T>) -> anyhow::Result<T> {
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

/// A progress bar on a terminal, nothing otherwise (nor for a command forwarded to a server).
pub fn progress_bar() -> Option<indicatif::ProgressBar> {
    if super::forward::forwarded() || !std::io::IsTerminal::is_terminal(&std::io::stderr()) {
        return None;
    }
    let bar = indicatif::ProgressBar::new(0);
    bar.set_style(
        indicatif::ProgressStyle::with_template("{bar:40} {pos}/{len} photos  {per_sec}  eta {eta}")
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    Some(bar)
}
