//! Commands on a folder library that `clipdex serve` holds (sled admits one process): the
//! command is sent to the server, which runs the same code on the library it holds and sends
//! back what it printed (see `clipdex::server` for the server's side).

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::Parser;
use clipdex::server::{BackgroundIndexer, CommandRunner, ForwardedCommand, ForwardedOutcome, recorded_server};
use clipdex::store::DbLocation;
use clipdex::{Library, path_text};

use crate::cli::{Cli, Command};

/// The name of a command that can run through the server; `None` for one that cannot.
fn forwardable(command: &Command) -> Option<&'static str> {
    Some(match command {
        Command::Search(_) => "search",
        Command::Similar { .. } => "similar",
        Command::CropSearch(_) => "crop-search",
        Command::Stats { .. } => "stats",
        Command::Tags { .. } => "tags",
        Command::Show { .. } => "show",
        Command::Failures { .. } => "failures",
        Command::Roots { .. } => "roots",
        Command::Add { .. } => "add",
        Command::Remove { .. } => "remove",
        Command::Index { .. } => "index",
        Command::Autotag(_) => "autotag",
        Command::Duplicates { .. } => "duplicates",
        _ => return None,
    })
}

/// The library could not be opened (`error`): when a running server holds it, the command
/// runs there; otherwise the error stands.
pub fn to_server(g: &crate::cli::GlobalOptions, command: &Command, error: clipdex::Error) -> anyhow::Result<ExitCode> {
    let Ok(DbLocation::Dir(dir)) = crate::database(g) else { return Err(error.into()) };
    let Some(server) = recorded_server(&dir) else { return Err(error.into()) };
    if forwardable(command).is_none() {
        return Err(error.into()); // `main` says which server holds the library
    }
    let args: Vec<String> =
        std::env::args_os().skip(1).map(|a| a.into_string()).collect::<Result<_, _>>().map_err(|a| {
            anyhow::anyhow!("{a:?} is not UTF-8: it cannot be sent to the server that holds the library")
        })?;
    let cwd = std::env::current_dir()?;
    let mut request = ureq::post(&format!("{}/api/cli", server.url)).timeout(std::time::Duration::from_secs(24 * 3600));
    if let Ok(token) = std::env::var("CLIPDEX_TOKEN") {
        request = request.set("Authorization", &format!("Bearer {token}"));
    }
    let outcome: ForwardedOutcome = match request.send_json(ForwardedCommand { args, cwd }) {
        Ok(response) => response.into_json()?,
        Err(ureq::Error::Status(401, _)) => anyhow::bail!(
            "the library is held by `clipdex serve` at {}, which needs its token: set CLIPDEX_TOKEN",
            server.url
        ),
        Err(ureq::Error::Status(code, response)) => {
            let message = response
                .into_json::<serde_json::Value>()
                .ok()
                .and_then(|v| v["error"].as_str().map(str::to_string))
                .unwrap_or_default();
            anyhow::bail!("the server at {} that holds the library answered {code}: {message}", server.url)
        }
        Err(e) => anyhow::bail!("{error}\n(the server recorded at {} does not answer: {e})", server.url),
    };
    std::io::stdout().write_all(outcome.stdout.as_bytes())?;
    std::io::stdout().flush()?;
    eprint!("{}", outcome.stderr);
    Ok(ExitCode::from(u8::try_from(outcome.exit).unwrap_or(1)))
}

/// For a command that failed because the folder library is locked: which server holds it.
pub fn held_by(db: &DbLocation, error: &anyhow::Error) -> Option<String> {
    let DbLocation::Dir(dir) = db else { return None };
    if !format!("{error:#}").contains("is another clipdex using it") {
        return None;
    }
    let server = recorded_server(dir)?;
    Some(format!(
        "the library is held by `clipdex serve` at {} (process {}); this command cannot run through it: stop the server first",
        server.url, server.pid
    ))
}

thread_local! {
    /// Set while a server runs a forwarded command on this thread: no progress bar on the
    /// server's terminal for another process's command.
    static FORWARDED: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Whether the running command was forwarded to this server.
pub fn forwarded() -> bool {
    FORWARDED.with(|f| f.get())
}

/// What `serve` hands the server to run forwarded commands with.
pub fn runner() -> CommandRunner {
    CommandRunner(std::sync::Arc::new(run_forwarded))
}

fn run_forwarded(library: &Library, indexer: &BackgroundIndexer, command: ForwardedCommand) -> ForwardedOutcome {
    let cli = match Cli::try_parse_from(std::iter::once("clipdex".to_string()).chain(command.args)) {
        Ok(cli) => cli,
        Err(e) => return ForwardedOutcome { stderr: e.render().to_string(), exit: 2, ..Default::default() },
    };
    let Cli { global, command: mut parsed } = cli;
    if forwardable(&parsed).is_none() {
        return ForwardedOutcome {
            stderr: "error: this command cannot run through the server; stop it first\n".into(),
            exit: 1,
            ..Default::default()
        };
    }
    absolutize(&mut parsed, &command.cwd);
    let mut stdout = Vec::new();
    FORWARDED.with(|f| f.set(true));
    let ctx = crate::Runner { server: Some(indexer) };
    let result = crate::on_library(&global, library, parsed, &mut stdout, &ctx);
    FORWARDED.with(|f| f.set(false));
    let stdout = String::from_utf8_lossy(&stdout).into_owned();
    match result {
        Ok(code) => {
            ForwardedOutcome { stdout, exit: if code == ExitCode::SUCCESS { 0 } else { 1 }, ..Default::default() }
        }
        Err(e) if crate::is_broken_pipe(&e) => ForwardedOutcome { stdout, ..Default::default() },
        Err(e) => ForwardedOutcome { stdout, stderr: format!("error: {e:#}\n"), exit: 1 },
    }
}

/// Relative paths in a forwarded command are relative to the sender's working directory.
fn absolutize(command: &mut Command, cwd: &Path) {
    let fix = |p: &mut PathBuf| {
        if p.is_relative() {
            *p = cwd.join(&*p);
        }
    };
    match command {
        Command::Add { roots } => roots.iter_mut().for_each(fix),
        Command::Remove { root } => fix(root),
        Command::Similar { image, filter } => {
            fix(image);
            filter.under.as_mut().map(fix);
        }
        Command::Search(args) => {
            args.filter.under.as_mut().map(fix);
        }
        Command::CropSearch(args) => {
            args.filter.under.as_mut().map(fix);
            args.out.as_mut().map(fix);
        }
        Command::Autotag(args) => {
            args.vocab.as_mut().map(fix);
            if let Some(t) = args.templates.as_mut().filter(|t| !["photo", "single"].contains(&t.as_str())) {
                let mut p = PathBuf::from(&*t);
                fix(&mut p);
                *t = path_text::display(&p);
            }
        }
        Command::Duplicates { move_to, .. } => {
            move_to.as_mut().map(fix);
        }
        _ => {}
    }
}
