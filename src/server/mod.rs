//! `clipdex serve`: the JSON API under `/api` and the web UI from `web/`, one binary.
//!
//! Handlers only translate: request → [`Library`] call (on actix's blocking pool, since
//! embedding and scanning are CPU work) → JSON. The indexer runs in a thread beside the
//! server ([`indexer::BackgroundIndexer`]); queries are answered from the store while it
//! writes.
//!
//! Security: the server listens on loopback unless told otherwise, and refuses any other
//! address without a bearer token, which every `/api` call must then carry (compared in
//! constant time; the scheme is case-insensitive). Without a token the server answers only
//! requests whose `Host` is a loopback name (`127.0.0.1`, `[::1]`, `localhost`, any port), so
//! a web page whose name an attacker re-binds to 127.0.0.1 cannot read the API (DNS
//! rebinding); a request without `Host` (HTTP/1.0) is refused like a foreign name. Commands
//! forwarded by other `clipdex` processes must also carry the server's secret (see
//! [`forward`]). A `POST` or `DELETE` from a browser page of another origin (a cross-site form,
//! which needs no CORS preflight) is refused unless that origin is configured for CORS, and
//! JSON bodies must say `Content-Type: application/json`. Files are handed out only by image
//! id, and only when they resolve inside a library folder. No CORS headers unless origins are
//! configured. A handler that panics answers 500 with `{"error"}` instead of dropping the
//! connection.

mod api;
mod assets;
mod bulk;
mod download;
mod forward;
pub mod indexer;
mod jobs;
mod openapi;
mod people;
mod queue;
mod settings;
mod vision;

use std::net::{SocketAddr, ToSocketAddrs};
use std::sync::{Arc, Mutex};

use actix_web::body::MessageBody;
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::{Method, StatusCode, header};
use actix_web::middleware::Next;
use actix_web::{HttpResponse, ResponseError, web};

use crate::Library;
use crate::error::{Error, Result};
use crate::indexer::watch::WatchOptions;

pub use api::ApiError;
pub use forward::{
    CommandRunner, ForwardedCommand, ForwardedOutcome, SECRET_FILE, SECRET_HEADER, SERVER_FILE, ServerRecord,
    random_hex, recorded_server, server_proof,
};
pub use indexer::{BackgroundIndexer, IndexerState, IndexerStatus};
pub use openapi::{openapi, openapi_with};
pub use queue::{DEFAULT_HEAVY_RUNNING, DEFAULT_HEAVY_WAITING, RETRY_AFTER_SECS};
pub use vision::BlipModels;

/// Default address of `clipdex serve`.
pub const DEFAULT_BIND: &str = "127.0.0.1:7878";
/// Most results one search returns.
pub const MAX_K: usize = 1000;
/// Deepest a page may start (`offset`).
pub const MAX_OFFSET: usize = 10_000;
/// Longest text query, in bytes (CLIP reads 77 tokens; this only stops abuse).
pub const MAX_QUERY_BYTES: usize = 2000;
/// Most labels one `POST /api/tag` scores.
pub const MAX_LABELS: usize = 1000;
/// Default upload limit, bytes.
pub const DEFAULT_MAX_UPLOAD: usize = 32 << 20;

/// How to serve.
#[derive(Debug, Clone)]
pub struct ServeOptions {
    /// Address to listen on (`host:port`; port 0 picks a free one).
    pub bind: String,
    /// Bearer token every API call must carry; required off loopback.
    pub token: Option<String>,
    /// Index and follow the folders in the background.
    pub watch: bool,
    /// Timing of the watcher.
    pub watch_options: WatchOptions,
    /// Largest accepted upload, bytes.
    pub max_upload: usize,
    /// Origins allowed to call the API from other sites (CORS); none by default.
    pub cors_origins: Vec<String>,
    /// Worker threads (0: one per core).
    pub workers: usize,
    /// Fine-tuned CLIPs searches may be re-ranked with (`rerank=clip:NAME`), by name: only
    /// these, never a path from a request. Loaded on first use.
    pub finetuned: Vec<(String, String)>,
    /// How long a request body may take to arrive (60 s).
    pub body_timeout: std::time::Duration,
    /// The BLIP models the captioning, question and matching endpoints use.
    pub blip: BlipModels,
    /// Runs commands forwarded by other `clipdex` processes (`POST /api/cli`); none: the
    /// endpoint answers 404.
    pub commands: Option<CommandRunner>,
    /// Model-heavy requests (BLIP, CLIPSeg, re-ranking) that run at once (at least 1).
    pub heavy_running: usize,
    /// Model-heavy requests that may wait for a turn; more are answered 503 with
    /// `Retry-After`.
    pub heavy_waiting: usize,
}

impl Default for ServeOptions {
    fn default() -> Self {
        ServeOptions {
            bind: DEFAULT_BIND.into(),
            token: None,
            watch: true,
            watch_options: WatchOptions::default(),
            max_upload: DEFAULT_MAX_UPLOAD,
            cors_origins: Vec::new(),
            workers: 0,
            finetuned: Vec::new(),
            body_timeout: api::BODY_TIMEOUT,
            blip: BlipModels::default(),
            commands: None,
            heavy_running: DEFAULT_HEAVY_RUNNING,
            heavy_waiting: DEFAULT_HEAVY_WAITING,
        }
    }
}

/// What every handler shares.
pub struct AppState {
    library: Arc<Library>,
    indexer: Arc<BackgroundIndexer>,
    token: Option<String>,
    max_upload: usize,
    cors_origins: Vec<String>,
    /// Text query embeddings by model and text: paging through a search (and the same query
    /// from many users) embeds the text once.
    queries: Mutex<QueryCache>,
    /// The registered fine-tuned models (name, model), loaded on first use.
    finetuned: Vec<(String, String)>,
    loaded: Mutex<std::collections::HashMap<String, Arc<crate::ClipEmbedder>>>,
    body_timeout: std::time::Duration,
    /// The BLIP models by name; the answering and matching ones loaded on first use (the
    /// captioning one is the library's, shared with background captioning).
    blip: BlipModels,
    answerer: vision::OnDemand<crate::models::blip::BlipAnswerer>,
    matcher: vision::OnDemand<crate::models::blip::BlipMatcher>,
    commands: Option<CommandRunner>,
    /// The secret forwarded commands must carry (written to [`SECRET_FILE`]); `None` when the
    /// server runs no commands.
    forward_secret: Option<String>,
    /// The queue model-heavy requests take their turn in.
    heavy: Arc<queue::HeavyQueue>,
    /// The queue JPEG renditions (`/file?format=jpeg`) are made in: a burst of requests
    /// cannot pile up unbounded decoding work.
    renditions: Arc<queue::HeavyQueue>,
    /// Where the background passes' runs started, for their rates (`GET /api/jobs`).
    jobs: jobs::JobClock,
}

/// Query embeddings by (model, text).
type QueryCache = std::collections::HashMap<(String, String), Arc<Vec<f32>>>;

/// Query embeddings kept before the cache starts over.
const QUERY_CACHE: usize = 1024;

impl AppState {
    /// State for a library; `indexer` reports progress (use [`BackgroundIndexer::off`] for
    /// none).
    pub fn new(library: Arc<Library>, indexer: Arc<BackgroundIndexer>, options: &ServeOptions) -> Self {
        AppState {
            library,
            indexer,
            token: options.token.clone().filter(|t| !t.is_empty()),
            max_upload: options.max_upload,
            cors_origins: options.cors_origins.clone(),
            queries: Mutex::new(Default::default()),
            finetuned: options.finetuned.clone(),
            loaded: Mutex::new(Default::default()),
            body_timeout: options.body_timeout,
            blip: options.blip.clone(),
            answerer: Default::default(),
            matcher: Default::default(),
            commands: options.commands.clone(),
            forward_secret: options.commands.as_ref().and_then(|_| {
                random_hex(32)
                    .map_err(|e| tracing::warn!("no random secret ({e}): commands of other processes are refused"))
                    .ok()
            }),
            heavy: queue::HeavyQueue::new(options.heavy_running, options.heavy_waiting),
            renditions: queue::HeavyQueue::of("renditions", api::RENDITIONS_RUNNING, api::RENDITIONS_WAITING),
            jobs: Default::default(),
        }
    }

    /// The BLIP models in use: those the library's settings name (they may change while the
    /// server runs), else the server's.
    pub(super) fn blip_models(&self) -> Result<BlipModels> {
        Ok(self.blip.with_settings(&self.library.settings()?))
    }

    /// The names of the fine-tuned models searches may be re-ranked with.
    pub fn finetuned_names(&self) -> Vec<String> {
        self.finetuned.iter().map(|(name, _)| name.clone()).collect()
    }

    /// The registered fine-tuned model `name`, loaded once.
    fn finetuned_model(&self, name: &str) -> Result<Arc<crate::ClipEmbedder>> {
        let Some((_, spec)) = self.finetuned.iter().find(|(n, _)| n == name) else {
            let known = self.finetuned_names();
            return Err(Error::Invalid(format!(
                "no fine-tuned model {name:?} is registered{}",
                if known.is_empty() {
                    " (serve --finetuned NAME=DIR)".to_string()
                } else {
                    format!("; known: {}", known.join(", "))
                }
            )));
        };
        if let Some(m) = self.loaded.lock().unwrap_or_else(|p| p.into_inner()).get(name) {
            return Ok(m.clone());
        }
        let base = self.library.clip()?;
        let model = Arc::new(
            crate::ClipEmbedder::load(&crate::models::source::canonical_spec(spec), base.device())?
                .with_precision(base.precision()),
        );
        self.loaded.lock().unwrap_or_else(|p| p.into_inner()).insert(name.to_string(), model.clone());
        Ok(model)
    }

    pub(super) fn query_embedding(&self, text: &str) -> Result<Arc<Vec<f32>>> {
        let key = (self.library.embedder_key(), text.to_string());
        if let Some(q) = self.queries.lock().unwrap_or_else(|p| p.into_inner()).get(&key) {
            return Ok(q.clone());
        }
        let q = Arc::new(self.library.embed_text(text)?);
        let mut cache = self.queries.lock().unwrap_or_else(|p| p.into_inner());
        if cache.len() >= QUERY_CACHE {
            cache.clear();
        }
        cache.insert(key, q.clone());
        Ok(q)
    }
}

/// Registers the API (behind the token check and CORS) and the web UI.
pub fn configure(state: web::Data<AppState>) -> impl FnOnce(&mut web::ServiceConfig) {
    move |cfg| {
        cfg.app_data(state)
            .app_data(web::QueryConfig::default().error_handler(|e, _| ApiError::bad_request(e.to_string()).into()))
            .app_data(web::PathConfig::default().error_handler(|e, _| ApiError::bad_request(e.to_string()).into()))
            .app_data(web::JsonConfig::default().limit(1 << 20).error_handler(|e, _| {
                match e {
                    actix_web::error::JsonPayloadError::ContentType => ApiError::new(
                        StatusCode::UNSUPPORTED_MEDIA_TYPE,
                        "send the body as JSON with `Content-Type: application/json`",
                    )
                    .into(),
                    e => ApiError::bad_request(format!("bad JSON body: {e}")).into(),
                }
            }))
            .service(
                web::scope("")
                    .wrap(actix_web::middleware::from_fn(catch_panics))
                    .wrap(actix_web::middleware::from_fn(check_host_and_origin))
                    .service(
                        web::scope("/api")
                            .wrap(actix_web::middleware::from_fn(guard))
                            .configure(api::routes)
                            .configure(people::routes)
                            .configure(vision::routes)
                            .configure(settings::routes)
                            .configure(jobs::routes)
                            .configure(bulk::routes)
                            .configure(download::routes)
                            .configure(forward::routes)
                            .configure(undeclared_methods)
                            .default_service(web::to(|| async {
                                ApiError::not_found("no such endpoint").error_response()
                            })),
                    )
                    .configure(assets::routes),
            );
    }
}

/// Whether a `Host` value names this machine's loopback interface (with or without a port).
fn is_loopback_host(host: &str) -> bool {
    let name = match host.strip_prefix('[') {
        Some(rest) => rest.split(']').next().unwrap_or(""),
        None => {
            host.rsplit_once(':').map_or(host, |(name, port)| if port.parse::<u16>().is_ok() { name } else { host })
        }
    };
    name.eq_ignore_ascii_case("localhost")
        || name.eq_ignore_ascii_case("localhost.")
        || name.parse::<std::net::IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

/// The host (and port) of an `Origin` header value (`scheme://host[:port]`).
fn origin_host(origin: &str) -> Option<&str> {
    origin.split_once("://").map(|(_, rest)| rest.trim_end_matches('/'))
}

/// Refuses, before any handler runs: without a token, a `Host` that is not a loopback name
/// (DNS rebinding); and a state-changing request from a page of another origin that is not
/// configured for CORS (cross-site form posts need no preflight).
async fn check_host_and_origin(
    req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> std::result::Result<ServiceResponse<impl MessageBody>, actix_web::Error> {
    let state = req.app_data::<web::Data<AppState>>().cloned().expect("state is registered");
    let host = req.headers().get(header::HOST).and_then(|h| h.to_str().ok()).map(str::to_string);
    let refuse = |req: ServiceRequest, message: String| {
        let response = HttpResponse::build(StatusCode::FORBIDDEN).json(serde_json::json!({ "error": message }));
        Ok(req.into_response(response).map_into_right_body())
    };
    // A request without `Host` (HTTP/1.0) could come from any page: refused like a foreign name.
    if state.token.is_none() && !host.as_deref().is_some_and(is_loopback_host) {
        return refuse(
            req,
            format!(
                "{}: without --token this server answers only 127.0.0.1, [::1] and localhost",
                match host.as_deref() {
                    Some(host) => format!("Host {host:?} is not a loopback name"),
                    None => "the request has no Host header".to_string(),
                }
            ),
        );
    }
    if matches!(*req.method(), Method::POST | Method::DELETE | Method::PUT | Method::PATCH)
        && let Some(origin) = req.headers().get(header::ORIGIN).and_then(|o| o.to_str().ok()).map(str::to_string)
    {
        let same = origin_host(&origin).is_some_and(|o| host.as_deref().is_some_and(|h| o.eq_ignore_ascii_case(h)));
        if !same && !state.cors_origins.contains(&origin) {
            return refuse(req, format!("requests from the page {origin:?} are not allowed (see serve --cors-origin)"));
        }
    }
    Ok(next.call(req).await?.map_into_left_body())
}

/// A handler that panics answers 500 with `{"error"}`, like any other failure, instead of
/// dropping the connection with no answer. (The panic becomes an error that actix answers
/// with [`ApiError`]'s response: the request itself is gone with the panicking handler.)
async fn catch_panics(
    req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> std::result::Result<ServiceResponse<impl MessageBody>, actix_web::Error> {
    use futures_util::FutureExt;
    let path = req.path().to_string();
    match std::panic::AssertUnwindSafe(next.call(req)).catch_unwind().await {
        Ok(response) => response,
        Err(panic) => {
            let what = panic
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_default();
            tracing::error!("the handler of {path} panicked: {what}");
            Err(ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal error (a bug in clipdex: please report it)")
                .into())
        }
    }
}

/// The token check and CORS for every `/api` request.
async fn guard(
    req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> std::result::Result<ServiceResponse<impl MessageBody>, actix_web::Error> {
    let state = req.app_data::<web::Data<AppState>>().cloned().expect("state is registered");
    let origin = req
        .headers()
        .get(header::ORIGIN)
        .and_then(|o| o.to_str().ok())
        .filter(|o| state.cors_origins.iter().any(|allowed| allowed == o))
        .map(str::to_string);
    if req.method() == Method::OPTIONS && origin.is_some() {
        let response = HttpResponse::NoContent()
            .insert_header((header::ACCESS_CONTROL_ALLOW_METHODS, "GET, POST, PUT, DELETE"))
            .insert_header((header::ACCESS_CONTROL_ALLOW_HEADERS, "Authorization, Content-Type"))
            .insert_header((header::ACCESS_CONTROL_MAX_AGE, "600"))
            .finish();
        return Ok(with_cors(req.into_response(response), origin.as_deref()).map_into_right_body());
    }
    // The proof endpoint answers without the token: a command asks it before it sends the
    // token, and its answer gives nothing away (see `forward`).
    if let Some(token) = state.token.as_ref().filter(|_| req.path() != forward::PROOF_PATH) {
        let offered = req
            .headers()
            .get(header::AUTHORIZATION)
            .and_then(|h| h.to_str().ok())
            .and_then(|h| h.trim_start().split_once(' '))
            .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
            .map_or("", |(_, token)| token);
        if !constant_time_eq::constant_time_eq(offered.trim().as_bytes(), token.as_bytes()) {
            let response = HttpResponse::build(StatusCode::UNAUTHORIZED)
                .insert_header((header::WWW_AUTHENTICATE, "Bearer"))
                .json(serde_json::json!({"error": "missing or wrong token: send `Authorization: Bearer TOKEN`"}));
            return Ok(with_cors(req.into_response(response), origin.as_deref()).map_into_right_body());
        }
    }
    let response = next.call(req).await?;
    Ok(with_cors(response, origin.as_deref()).map_into_left_body())
}

fn with_cors<B>(mut response: ServiceResponse<B>, origin: Option<&str>) -> ServiceResponse<B> {
    if let Some(origin) = origin.and_then(|o| header::HeaderValue::from_str(o).ok()) {
        let headers = response.headers_mut();
        headers.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, origin);
        headers.insert(header::VARY, header::HeaderValue::from_static("Origin"));
    }
    response
}

/// The addresses `bind` names, refused when any is off loopback and there is no token.
pub fn resolve_bind(bind: &str, token: Option<&str>) -> Result<Vec<SocketAddr>> {
    let addrs: Vec<SocketAddr> = bind
        .to_socket_addrs()
        .map_err(|e| Error::Invalid(format!("cannot listen on {bind:?}: {e} (expected HOST:PORT)")))?
        .collect();
    if addrs.is_empty() {
        return Err(Error::Invalid(format!("{bind:?} names no address")));
    }
    if token.is_none_or(str::is_empty)
        && let Some(open) = addrs.iter().find(|a| !a.ip().is_loopback())
    {
        return Err(Error::Invalid(format!(
            "refusing to serve on {open} without a token: anyone who can reach it could read your photos. \
             Pass --token TOKEN (or set CLIPDEX_TOKEN), or bind to 127.0.0.1"
        )));
    }
    Ok(addrs)
}

/// Every path of the API answers a method it does not take with 405 and the methods it does
/// take (`Allow`), from the OpenAPI document, so the two cannot disagree.
fn undeclared_methods(cfg: &mut web::ServiceConfig) {
    let doc = openapi();
    for (path, methods) in doc["paths"].as_object().into_iter().flatten() {
        let Some(local) = path.strip_prefix("/api") else { continue };
        let allow: Vec<String> = methods.as_object().into_iter().flatten().map(|(m, _)| m.to_uppercase()).collect();
        let allow = allow.join(", ");
        cfg.route(
            local,
            web::route().to(move || {
                let allow = allow.clone();
                async move {
                    HttpResponse::MethodNotAllowed()
                        .insert_header((header::ALLOW, allow.clone()))
                        .json(serde_json::json!({ "error": format!("this endpoint takes {allow}") }))
                }
            }),
        );
    }
}

/// Serves the library until the process is interrupted (Ctrl-C). `on_listen` sees the
/// addresses actually bound (port 0 resolved) before the first request.
pub fn serve(library: Library, options: ServeOptions, on_listen: impl FnOnce(&[SocketAddr])) -> Result<()> {
    let addrs = resolve_bind(&options.bind, options.token.as_deref())?;
    let library = Arc::new(library);
    let (indexer, thread) = if options.watch {
        let (indexer, thread) = BackgroundIndexer::start(library.clone(), options.watch_options);
        (indexer, Some(thread))
    } else {
        (BackgroundIndexer::off(), None)
    };
    let db = library.location().clone();
    let state = web::Data::new(AppState::new(library, indexer.clone(), &options));
    let secret = state.forward_secret.clone();
    let workers =
        if options.workers > 0 { options.workers } else { std::thread::available_parallelism().map_or(2, |n| n.get()) };
    let outcome = actix_web::rt::System::new().block_on(async move {
        let server = actix_web::HttpServer::new(move || actix_web::App::new().configure(configure(state.clone())))
            .workers(workers)
            .bind(&addrs[..])
            .map_err(|e| Error::Invalid(format!("cannot listen on {}: {e}", options.bind)))?;
        let _recorded = server.addrs().first().and_then(|addr| forward::record(&db, *addr, secret.as_deref()));
        on_listen(&server.addrs());
        server.run().await.map_err(|e| Error::Invalid(format!("the server stopped: {e}")))
    });
    // The indexer stops between passes; a pass under way is not waited for long, since the
    // store is crash-safe and the next start resumes where it stopped.
    indexer.stop();
    if let Some(thread) = thread {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(3);
        while !thread.is_finished() && std::time::Instant::now() < deadline {
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        if thread.is_finished() {
            let _ = thread.join();
        } else {
            tracing::info!("leaving the indexing pass under way; the next start resumes it");
        }
    }
    outcome
}

#[cfg(test)]
mod tests {
    use actix_web::{App, test as actix_test};

    use super::*;

    #[test]
    fn loopback_host_names() {
        for host in ["127.0.0.1", "127.0.0.1:7878", "localhost", "localhost:1", "[::1]", "[::1]:7878", "LocalHost"] {
            assert!(is_loopback_host(host), "{host}");
        }
        for host in ["evil.example", "localhost.evil.example", "127.0.0.1.nip.io:80", "[::2]:7878", "10.0.0.1", ""] {
            assert!(!is_loopback_host(host), "{host}");
        }
    }

    async fn boom() -> HttpResponse {
        panic!("deliberate")
    }

    #[actix_web::test]
    async fn a_panicking_handler_answers_500_with_json() {
        let app = actix_test::init_service(
            App::new()
                .wrap(actix_web::middleware::from_fn(catch_panics))
                .route("/boom", web::get().to(boom))
                .route("/fine", web::get().to(|| async { HttpResponse::Ok().body("ok") })),
        )
        .await;
        let error = actix_test::try_call_service(&app, actix_test::TestRequest::get().uri("/boom").to_request())
            .await
            .err()
            .unwrap();
        let response = error.error_response();
        assert_eq!(response.status(), StatusCode::INTERNAL_SERVER_ERROR);
        let body = actix_web::body::to_bytes(response.into_body()).await.unwrap();
        let body: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert!(body["error"].as_str().unwrap().contains("internal error"));
        let response = actix_test::call_service(&app, actix_test::TestRequest::get().uri("/fine").to_request()).await;
        assert_eq!(response.status(), StatusCode::OK);
    }
}
