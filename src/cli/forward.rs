//! Commands on a folder library that `clipdex serve` holds (sled admits one process): the
//! command is sent to the server, which runs the same code on the library it holds and sends
//! back what it printed (see `clipdex::server` for the server's side).
//!
//! A command is sent only when the library is locked, the address recorded in `server.json`
//! proves it knows the secret in `server.secret` (which only the server's user can read), and
//! then with that secret: a program that took over a stale record's address or process id gets
//! nothing, and another user's command is refused. Library settings the command asks for
//! (`--model`, `--precision`, ...) must be the server's.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::Parser;
use clap::parser::ValueSource;
use clipdex::models::source::canonical_spec;
use clipdex::server::{
    BackgroundIndexer, CommandRunner, ForwardedCommand, ForwardedOutcome, SECRET_FILE, SECRET_HEADER, SERVER_FILE,
    random_hex, recorded_server, server_proof,
};
use clipdex::store::DbLocation;
use clipdex::{Library, path_text};

use super::session::{Runner, is_broken_pipe, on_library};
use super::{Cli, Command, GlobalOptions};

/// The name of a command that can run through the server; `None` for one that cannot.
fn forwardable(command: &Command) -> Option<&'static str> {
    Some(match command {
        Command::Search(_) => "search",
        Command::Similar(_) => "similar",
        Command::CropSearch(_) => "crop-search",
        Command::Stats(_) => "stats",
        Command::Tags(_) => "tags",
        Command::Show(_) => "show",
        Command::Places(_) => "places",
        Command::Failures(_) => "failures",
        Command::Roots(_) => "roots",
        Command::Add(_) => "add",
        Command::Remove(_) => "remove",
        Command::Index(_) => "index",
        Command::Autotag(_) => "autotag",
        Command::Duplicates(_) => "duplicates",
        Command::People(_) => "people",
        Command::Config(_) => "config",
        _ => return None,
    })
}

/// Whether the library could not be opened because another process holds it.
fn is_held(error: &dyn std::fmt::Display) -> bool {
    format!("{error:#}").contains("is another clipdex using it")
}

/// The library could not be opened (`error`): when a running server holds it, the command
/// runs there; otherwise the error stands.
pub fn to_server(g: &GlobalOptions, command: &Command, error: clipdex::Error) -> anyhow::Result<ExitCode> {
    let Ok(DbLocation::Dir(dir)) = g.database() else { return Err(error.into()) };
    // Any other failure (a folder this user may not open, a damaged database) is the error.
    if !is_held(&error) {
        return Err(error.into());
    }
    let Some(server) = recorded_server(&dir) else { return Err(error.into()) };
    let Some(name) = forwardable(command) else {
        return Err(error.into()); // `main` says which server holds the library
    };
    let secret_path = dir.join(SECRET_FILE);
    let secret = match std::fs::read_to_string(&secret_path) {
        Ok(secret) => secret.trim().to_string(),
        Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied => anyhow::bail!(
            "the library is held by `clipdex serve` at {}, which another user runs: `{name}` runs through a server \
             only for the user who started it ({} cannot be read: {e})",
            server.url,
            secret_path.display()
        ),
        Err(e) => anyhow::bail!(
            "the library is held by another clipdex process, and its server's secret {} cannot be read ({e}); \
             nothing was sent to {} (recorded in {SERVER_FILE}). If `clipdex serve` holds it, restart the server",
            secret_path.display(),
            server.url
        ),
    };
    prove(&server.url, &secret)?;
    let args: Vec<String> =
        std::env::args_os().skip(1).map(|a| a.into_string()).collect::<Result<_, _>>().map_err(|a| {
            anyhow::anyhow!("{a:?} is not UTF-8: it cannot be sent to the server that holds the library")
        })?;
    let cwd = std::env::current_dir()?;
    let settings = settings_asked(g, command)?;
    let mut request = ureq::post(&format!("{}/api/cli", server.url))
        .timeout(std::time::Duration::from_secs(24 * 3600))
        .set(SECRET_HEADER, &secret);
    if let Ok(token) = std::env::var("CLIPDEX_TOKEN") {
        request = request.set("Authorization", &format!("Bearer {token}"));
    }
    let outcome: ForwardedOutcome = match request.send_json(ForwardedCommand { args, cwd, settings }) {
        Ok(response) => response.into_json().map_err(|e| {
            anyhow::anyhow!("the server at {} that holds the library sent an answer that is not one ({e})", server.url)
        })?,
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
        // Not the lock's error: the server was there a moment ago, so stopping it is no advice.
        Err(e) => anyhow::bail!(
            "the server at {} that holds the library stopped answering while it ran `{name}` ({e}); the command \
             may have done part of its work. See the server's log, and run the command again",
            server.url
        ),
    };
    std::io::stdout().write_all(outcome.stdout.as_bytes())?;
    std::io::stdout().flush()?;
    eprint!("{}", outcome.stderr);
    Ok(ExitCode::from(u8::try_from(outcome.exit).unwrap_or(1)))
}

/// Asks the program at `url` to prove that it knows `secret` (see [`server_proof`]), before
/// anything else is sent to it.
fn prove(url: &str, secret: &str) -> anyhow::Result<()> {
    let nonce = random_hex(16).map_err(|e| anyhow::anyhow!("no random nonce from the system: {e}"))?;
    let addr = url.strip_prefix("http://").unwrap_or(url);
    let answer = ureq::get(&format!("{url}/api/cli/proof"))
        .query("nonce", &nonce)
        .timeout(std::time::Duration::from_secs(30))
        .call()
        .ok()
        .and_then(|response| response.into_json::<serde_json::Value>().ok());
    let proof = answer.as_ref().and_then(|v| v["proof"].as_str());
    if proof != Some(server_proof(secret, addr, &nonce).as_str()) {
        anyhow::bail!(
            "the library is held by another clipdex process, but the program at {url} (recorded in {SERVER_FILE}) is \
             not the `clipdex serve` that holds it: nothing was sent to it. If a server holds the library, it \
             does not take commands (restart it); otherwise wait for the process that holds it"
        );
    }
    Ok(())
}

/// The settings the library is opened with, by option name (`--model` is `model`), as both
/// sides compare them.
fn library_settings(g: &GlobalOptions) -> Vec<(&'static str, String)> {
    vec![
        ("model", canonical_spec(g.clip_model())),
        ("text_model", g.text_model.as_deref().map(canonical_spec).unwrap_or_default()),
        ("device", format!("{:?}", g.device).to_lowercase()),
        ("precision", format!("{:?}", g.precision).to_lowercase()),
        ("max_pixels", g.max_pixels.to_string()),
        ("seg_model", canonical_spec(&g.seg_model)),
        ("caption_model", canonical_spec(&g.caption_model)),
        ("vqa_model", canonical_spec(&g.vqa_model)),
        ("itm_model", canonical_spec(&g.itm_model)),
        ("video_interval", g.video_interval.to_string()),
        ("video_max_frames", g.video_max_frames.to_string()),
    ]
}

/// The library settings this command asks for: those given on its command line or in its
/// environment (a command without --model takes the library's; `show` and `duplicates` need
/// none).
fn settings_asked(g: &GlobalOptions, command: &Command) -> anyhow::Result<Vec<(String, String)>> {
    let matches = <Cli as clap::CommandFactory>::command().try_get_matches_from(std::env::args_os())?;
    let needs_model = !matches!(
        command,
        Command::Show(_) | Command::Places(_) | Command::Duplicates(_) | Command::People(_) | Command::Config(_)
    );
    Ok(library_settings(g)
        .into_iter()
        .filter(|(id, _)| {
            (needs_model || *id != "model")
                && matches!(matches.value_source(id), Some(ValueSource::CommandLine | ValueSource::EnvVariable))
        })
        .map(|(id, value)| (id.to_string(), value))
        .collect())
}

/// The first setting a forwarded command asks for that is not the server's, as the error
/// to answer with.
fn disagreement(server: &[(&'static str, String)], library: &Library, asked: &[(String, String)]) -> Option<String> {
    // The library's recorded settings first: they are what the server uses now.
    let recorded = match library.settings() {
        Ok(recorded) => recorded,
        Err(e) => return Some(e.to_string()),
    };
    // (An error here is an option that is not one of the library's settings: `device`, ...)
    if let Some(refusal) = asked.iter().find_map(|(id, value)| recorded.disagreement(id, value).ok().flatten()) {
        return Some(refusal);
    }
    asked.iter().find_map(|(id, value)| {
        // A recorded setting was checked above; the BLIP models are loaded per command, so
        // only a recorded one binds them.
        if recorded.get(id).ok().flatten().is_some()
            || matches!(id.as_str(), "caption_model" | "vqa_model" | "itm_model")
        {
            return None;
        }
        let own = if id == "model" {
            library.model()
        } else {
            server.iter().find(|(name, _)| name == id).map(|(_, v)| v.clone()).unwrap_or_default()
        };
        let flag = format!("--{}", id.replace('_', "-"));
        (own != *value).then(|| match id.as_str() {
            "model" => format!(
                "the database holds vectors of model {own}, not {value}, and the server that holds it runs with \
                 {own}: pass --model {own}"
            ),
            _ => format!(
                "the server that holds the library runs with {flag} {}, not {value}: leave {flag} out to use \
                 the server's, or stop the server first",
                if own.is_empty() { "unset".to_string() } else { own }
            ),
        })
    })
}

/// For a command that failed because the folder library is locked: which server holds it.
pub fn held_by(db: &DbLocation, error: &anyhow::Error) -> Option<String> {
    let DbLocation::Dir(dir) = db else { return None };
    if !is_held(error) {
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

/// What `serve` (run with the options `g`) hands the server to run forwarded commands with.
pub fn runner(g: &GlobalOptions) -> CommandRunner {
    let settings = library_settings(g);
    CommandRunner(std::sync::Arc::new(
        move |library: &Library, indexer: &BackgroundIndexer, command: ForwardedCommand| {
            run_forwarded(&settings, library, indexer, command)
        },
    ))
}

fn run_forwarded(
    settings: &[(&'static str, String)],
    library: &Library,
    indexer: &BackgroundIndexer,
    command: ForwardedCommand,
) -> ForwardedOutcome {
    if let Some(error) = disagreement(settings, library, &command.settings) {
        return ForwardedOutcome { stderr: format!("error: {error}\n"), exit: 1, ..Default::default() };
    }
    let cli = match Cli::try_parse_from(std::iter::once("clipdex".to_string()).chain(command.args)) {
        Ok(cli) => cli,
        Err(e) => return ForwardedOutcome { stderr: e.render().to_string(), exit: 2, ..Default::default() },
    };
    let Cli { mut global, command: mut parsed } = cli;
    // The options the sender gave were checked above; the others are the library's.
    global.given = command.settings.iter().map(|(id, _)| id.clone()).collect();
    let global = match library.settings().map_err(anyhow::Error::from).and_then(|s| super::config::settle(&global, &s))
    {
        Ok(global) => global,
        Err(e) => return ForwardedOutcome { stderr: format!("error: {e:#}\n"), exit: 1, ..Default::default() },
    };
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
    let ctx = Runner { server: Some(indexer) };
    let result = on_library(&global, library, parsed, &mut stdout, &ctx);
    FORWARDED.with(|f| f.set(false));
    let stdout = String::from_utf8_lossy(&stdout).into_owned();
    match result {
        Ok(code) => {
            ForwardedOutcome { stdout, exit: if code == ExitCode::SUCCESS { 0 } else { 1 }, ..Default::default() }
        }
        Err(e) if is_broken_pipe(&e) => ForwardedOutcome { stdout, ..Default::default() },
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
        Command::Add(args) => args.roots.iter_mut().for_each(fix),
        Command::Remove(args) => fix(&mut args.root),
        // An image that is not a file of the sender's is an id (`similar 2000005`), kept as is.
        Command::Similar(args) => {
            if cwd.join(&args.image).exists() {
                fix(&mut args.image);
            }
            args.filter.under.as_mut().map(fix);
        }
        Command::Show(args) if cwd.join(&args.image).exists() => fix(&mut args.image),
        Command::Search(args) => {
            args.filter.under.as_mut().map(fix);
            // Image paths in the query (`./pool.jpg`) are the sender's too.
            args.query_base = Some(cwd.to_path_buf());
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
        Command::Duplicates(args) => {
            args.move_to.as_mut().map(fix);
        }
        _ => {}
    }
}
