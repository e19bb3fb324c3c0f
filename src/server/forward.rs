//! Commands forwarded by other `clipdex` processes. A folder library (sled) admits one
//! process, so while `serve` holds it a CLI command cannot open it; the server records where it
//! listens in the database folder (`server.json`: its address and process id, never the
//! token), and a command that finds the library held sends its arguments here. The server runs
//! the very code the command runs on its own, on the library it holds, and sends back what it
//! printed, so the output is the same byte for byte.
//!
//! Loopback is not a user boundary, so a command must prove it comes from the user who runs
//! the server: at start the server writes a random secret into `server.secret` beside the
//! record, a file only its user can read (mode 0600), and runs a command only when the request
//! carries that secret (and the token, when the server has one). A command then reads and
//! writes paths as the user the server runs as, which is the caller's own. Before sending the
//! secret or the token, the command asks the address in the record to prove it knows the
//! secret ([`server_proof`] of a fresh nonce and the address it was reached at): a stale record
//! whose address or process id another program took over gets nothing.

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
/// The file beside [`SERVER_FILE`] with the server's secret, readable by its user only.
pub const SECRET_FILE: &str = "server.secret";
/// The request header a forwarded command carries the secret in.
pub const SECRET_HEADER: &str = "x-clipdex-secret";

/// `n` random bytes from the operating system, as hex.
pub fn random_hex(n: usize) -> std::io::Result<String> {
    use std::io::Read;
    let mut bytes = vec![0u8; n];
    std::fs::File::open("/dev/urandom")?.read_exact(&mut bytes)?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

/// What a server that knows `secret` answers to `nonce` when reached at `addr` (`host:port`,
/// as in the record's URL): a keyed hash, so the answer neither gives the secret away nor
/// serves for another address (a program relaying to the real server is found out).
pub fn server_proof(secret: &str, addr: &str, nonce: &str) -> String {
    let key = blake3::derive_key("clipdex 2026-12-07 server proof", secret.as_bytes());
    blake3::keyed_hash(&key, format!("{addr}\n{nonce}").as_bytes()).to_hex().to_string()
}

/// The address other processes of this machine reach a listener bound to `addr` at (a
/// wildcard address through loopback).
fn reachable(addr: std::net::SocketAddr) -> std::net::SocketAddr {
    let ip = match addr.ip() {
        ip if ip.is_unspecified() && ip.is_ipv4() => std::net::Ipv4Addr::LOCALHOST.into(),
        ip if ip.is_unspecified() => std::net::Ipv6Addr::LOCALHOST.into(),
        ip => ip,
    };
    std::net::SocketAddr::new(ip, addr.port())
}

/// A command another process asks the server to run.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ForwardedCommand {
    /// Its arguments, without the program name.
    pub args: Vec<String>,
    /// Its working directory (relative paths in `args` are relative to it).
    pub cwd: PathBuf,
    /// The library settings the command asked for (`model`, always, as the library records
    /// models; the others only when given on its command line or in its environment), by
    /// option name: the server refuses the command when they are not its own.
    #[serde(default)]
    pub settings: Vec<(String, String)>,
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

/// Records that this process serves the library `db` at `addr`, with its `secret` beside the
/// record; both are removed when the returned guard is dropped. Nothing for a PostgreSQL
/// library (no lock to work around), nor without a secret (no command could prove itself).
pub(super) fn record(db: &DbLocation, addr: std::net::SocketAddr, secret: Option<&str>) -> Option<RecordGuard> {
    let DbLocation::Dir(dir) = db else { return None };
    let secret = secret?;
    let record = ServerRecord { url: format!("http://{}", reachable(addr)), pid: std::process::id() };
    let path = dir.join(SERVER_FILE);
    let secret_path = dir.join(SECRET_FILE);
    let temp = dir.join(format!(".{SERVER_FILE}.tmp"));
    let written = write_secret(&secret_path, secret)
        .and_then(|()| serde_json::to_vec(&record).map_err(std::io::Error::other))
        .and_then(|json| std::fs::write(&temp, json))
        .and_then(|()| std::fs::rename(&temp, &path));
    match written {
        Ok(()) => Some(RecordGuard { path, secret_path, pid: record.pid }),
        Err(e) => {
            tracing::warn!("cannot record the server in {} ({e}); other commands will not find it", dir.display());
            None
        }
    }
}

/// Writes the secret into a new file only this user can read. A file left there (by a killed
/// server, or planted by someone who can write the folder) is replaced, never written through.
fn write_secret(path: &Path, secret: &str) -> std::io::Result<()> {
    use std::io::Write;
    match std::fs::remove_file(path) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e),
        _ => {}
    }
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    options.open(path)?.write_all(secret.as_bytes())
}

/// Removes the server record and secret at shutdown (if they are still this process's).
pub(super) struct RecordGuard {
    path: PathBuf,
    secret_path: PathBuf,
    pid: u32,
}

impl Drop for RecordGuard {
    fn drop(&mut self) {
        if read_record(&self.path).is_some_and(|r| r.pid == self.pid) {
            let _ = std::fs::remove_file(&self.path);
            let _ = std::fs::remove_file(&self.secret_path);
        }
    }
}

fn read_record(path: &Path) -> Option<ServerRecord> {
    serde_json::from_slice(&std::fs::read(path).ok()?).ok()
}

/// The server recorded in the folder library `dir`, if its process is still running (a
/// hint only: a process id is reused, so a command proves the server with [`server_proof`]).
pub fn recorded_server(dir: &Path) -> Option<ServerRecord> {
    let record = read_record(&dir.join(SERVER_FILE))?;
    // Where processes can be looked up, a record left by a killed server is ignored.
    if Path::new("/proc/self").exists() && !Path::new(&format!("/proc/{}", record.pid)).exists() {
        return None;
    }
    Some(record)
}

/// The path of the proof endpoint, which answers without the token: a command asks it before
/// it sends the token anywhere.
pub(super) const PROOF_PATH: &str = "/api/cli/proof";

pub(super) fn routes(cfg: &mut web::ServiceConfig) {
    cfg.route("/cli", web::post().to(run_command)).route("/cli/proof", web::get().to(prove));
}

/// The server's secret, when it runs commands and the request comes from this machine.
fn secret_for(state: &AppState, req: &HttpRequest) -> ApiResult<String> {
    if !req.peer_addr().is_some_and(|a| a.ip().is_loopback()) {
        return Err(ApiError::new(actix_web::http::StatusCode::FORBIDDEN, "commands are taken only from this machine"));
    }
    match (&state.commands, &state.forward_secret) {
        (Some(_), Some(secret)) => Ok(secret.clone()),
        _ => Err(ApiError::not_found("this server does not run commands")),
    }
}

/// Whether the request carries the server's secret in [`SECRET_HEADER`] (compared in constant
/// time).
fn carries_secret(req: &HttpRequest, secret: &str) -> bool {
    let offered = req.headers().get(SECRET_HEADER).map_or(&b""[..], |v| v.as_bytes());
    constant_time_eq::constant_time_eq(offered, secret.as_bytes())
}

/// Changes that reach outside the library (which folders it reads) come only from the
/// server's own user when no token guards the server: loopback is not a user boundary, and
/// another local user could otherwise have the server read a folder only its user can. Such a
/// request carries the secret of [`SECRET_FILE`], as `clipdex add` does through `/api/cli`.
pub(super) fn owner_only(state: &AppState, req: &HttpRequest) -> ApiResult<()> {
    let Some(secret) = state.forward_secret.as_ref().filter(|_| state.token.is_none()) else { return Ok(()) };
    if carries_secret(req, secret) {
        return Ok(());
    }
    Err(ApiError::new(
        actix_web::http::StatusCode::FORBIDDEN,
        format!(
            "without --token, folders are added and removed only by the user who runs this server: use \
             `clipdex add`/`clipdex remove`, or send the secret of {SECRET_FILE} in {SECRET_HEADER}"
        ),
    ))
}

#[derive(Deserialize)]
struct ProofQuery {
    nonce: String,
}

/// `GET /api/cli/proof?nonce=HEX`: [`server_proof`] of the nonce and the address the request
/// reached.
async fn prove(state: web::Data<AppState>, req: HttpRequest, query: web::Query<ProofQuery>) -> ApiResult<HttpResponse> {
    let secret = secret_for(&state, &req)?;
    let nonce = &query.nonce;
    if !(32..=128).contains(&nonce.len()) || !nonce.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(ApiError::bad_request("nonce must be 32 to 128 hexadecimal digits"));
    }
    let addr = reachable(req.app_config().local_addr());
    Ok(HttpResponse::Ok().json(serde_json::json!({ "proof": server_proof(&secret, &addr.to_string(), nonce) })))
}

async fn run_command(
    state: web::Data<AppState>,
    req: HttpRequest,
    body: web::Json<ForwardedCommand>,
) -> ApiResult<HttpResponse> {
    let secret = secret_for(&state, &req)?;
    if !carries_secret(&req, &secret) {
        return Err(ApiError::new(
            actix_web::http::StatusCode::FORBIDDEN,
            format!(
                "commands are taken only from the user who runs this server: a `clipdex` command of that user \
                 sends the secret it reads from {SECRET_FILE} in the library's folder"
            ),
        ));
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
