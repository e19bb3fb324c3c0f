//! Commands forwarded by other `clipdex` processes. A folder library (sled) admits one
//! process, so while `serve` holds it a CLI command cannot open it; the server records where it
//! listens in the database folder (`server.json`: its address and process id, never the
//! token), and a command that finds the library held sends its arguments here. The server runs
//! the very code the command runs on its own, on the library it holds, and sends back what it
//! printed, so the output is the same byte for byte.
//!
//! Only requests from this machine (a loopback peer) are taken, with the token when the server
//! has one: a command names paths of this machine, and may move files (`duplicates --move-to`).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use actix_web::{HttpRequest, HttpResponse, web};
use serde::{Deserialize, Serialize};

use super::api::{ApiError, ApiResult, blocking};
use super::{AppState, BackgroundIndexer};
use crate::Library;
use crate::store::DbLocation;

/// The file in a folder library that says which server holds it.
pub const SERVER_FILE: &str = "server.json";

/// A command another process asks the server to run.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ForwardedCommand {
    /// Its arguments, without the program name.
    pub args: Vec<String>,
    /// Its working directory (relative paths in `args` are relative to it).
    pub cwd: PathBuf,
}

/// What a forwarded command did.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct ForwardedOutcome {
    /// What it printed on standard output.
    pub stdout: String,
    /// What it printed on standard error (its error, when it failed).
    pub stderr: String,
    /// Its exit status.
    pub exit: i32,
}

/// The function that runs a forwarded command on the library.
pub type RunCommand = dyn Fn(&Library, &BackgroundIndexer, ForwardedCommand) -> ForwardedOutcome + Send + Sync;

/// Runs forwarded commands: the binary's own command code, given to the server by `serve`.
#[derive(Clone)]
pub struct CommandRunner(pub Arc<RunCommand>);

impl std::fmt::Debug for CommandRunner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("CommandRunner")
    }
}

/// Where a server holding the folder library `dir` listens, as it recorded it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ServerRecord {
    /// Its base URL, e.g. `http://127.0.0.1:7878`.
    pub url: String,
    /// Its process id.
    pub pid: u32,
}

/// Records that this process serves the library `db` at `addr`; the record is removed when
/// the returned guard is dropped. Nothing for a PostgreSQL library (no lock to work around).
pub(super) fn record(db: &DbLocation, addr: std::net::SocketAddr) -> Option<RecordGuard> {
    let DbLocation::Dir(dir) = db else { return None };
    // A wildcard address is reached through loopback from this machine.
    let ip = match addr.ip() {
        ip if ip.is_unspecified() && ip.is_ipv4() => std::net::Ipv4Addr::LOCALHOST.into(),
        ip if ip.is_unspecified() => std::net::Ipv6Addr::LOCALHOST.into(),
        ip => ip,
    };
    let record =
        ServerRecord { url: format!("http://{}", std::net::SocketAddr::new(ip, addr.port())), pid: std::process::id() };
    let path = dir.join(SERVER_FILE);
    let temp = dir.join(format!(".{SERVER_FILE}.tmp"));
    let written = serde_json::to_vec(&record)
        .map_err(std::io::Error::other)
        .and_then(|json| std::fs::write(&temp, json))
        .and_then(|()| std::fs::rename(&temp, &path));
    match written {
        Ok(()) => Some(RecordGuard { path, pid: record.pid }),
        Err(e) => {
            tracing::warn!("cannot record the server in {} ({e}); other commands will not find it", path.display());
            None
        }
    }
}

/// Removes the server record at shutdown (if it is still this process's).
pub(super) struct RecordGuard {
    path: PathBuf,
    pid: u32,
}

impl Drop for RecordGuard {
    fn drop(&mut self) {
        if read_record(&self.path).is_some_and(|r| r.pid == self.pid) {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

fn read_record(path: &Path) -> Option<ServerRecord> {
    serde_json::from_slice(&std::fs::read(path).ok()?).ok()
}

/// The server recorded in the folder library `dir`, if its process is still running.
pub fn recorded_server(dir: &Path) -> Option<ServerRecord> {
    let record = read_record(&dir.join(SERVER_FILE))?;
    // Where processes can be looked up, a record left by a killed server is ignored.
    if Path::new("/proc/self").exists() && !Path::new(&format!("/proc/{}", record.pid)).exists() {
        return None;
    }
    Some(record)
}

pub(super) fn routes(cfg: &mut web::ServiceConfig) {
    cfg.route("/cli", web::post().to(run_command));
}

async fn run_command(
    state: web::Data<AppState>,
    req: HttpRequest,
    body: web::Json<ForwardedCommand>,
) -> ApiResult<HttpResponse> {
    if !req.peer_addr().is_some_and(|a| a.ip().is_loopback()) {
        return Err(ApiError::new(actix_web::http::StatusCode::FORBIDDEN, "commands are taken only from this machine"));
    }
    let Some(runner) = state.commands.clone() else {
        return Err(ApiError::not_found("this server does not run commands"));
    };
    let command = body.into_inner();
    if !command.cwd.is_absolute() {
        return Err(ApiError::bad_request("cwd must be an absolute path"));
    }
    let outcome = blocking(move || Ok((runner.0)(&state.library, &state.indexer, command))).await?;
    Ok(HttpResponse::Ok().json(outcome))
}
