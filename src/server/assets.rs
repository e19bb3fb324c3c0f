//! The web UI: the files of `web/`, built into the binary so that one file deploys, and
//! served by name from a fixed table (a request can never name a file on disk).

use actix_web::http::header;
use actix_web::{HttpResponse, web};

/// `(URL path, content type, bytes)` of every UI file.
const ASSETS: &[(&str, &str, &[u8])] = &[
    ("/", "text/html; charset=utf-8", include_bytes!("../../web/index.html")),
    ("/app.js", "text/javascript; charset=utf-8", include_bytes!("../../web/app.js")),
    ("/settings.js", "text/javascript; charset=utf-8", include_bytes!("../../web/settings.js")),
    ("/jobs.js", "text/javascript; charset=utf-8", include_bytes!("../../web/jobs.js")),
    ("/duplicates.js", "text/javascript; charset=utf-8", include_bytes!("../../web/duplicates.js")),
    ("/select.js", "text/javascript; charset=utf-8", include_bytes!("../../web/select.js")),
    ("/setup.js", "text/javascript; charset=utf-8", include_bytes!("../../web/setup.js")),
    ("/people.js", "text/javascript; charset=utf-8", include_bytes!("../../web/people.js")),
    ("/query-help.js", "text/javascript; charset=utf-8", include_bytes!("../../web/query-help.js")),
    ("/style.css", "text/css; charset=utf-8", include_bytes!("../../web/style.css")),
    ("/favicon.svg", "image/svg+xml", include_bytes!("../../web/favicon.svg")),
];

pub(super) fn routes(cfg: &mut web::ServiceConfig) {
    for &(path, content_type, bytes) in ASSETS {
        cfg.route(
            path,
            web::get().to(move || async move {
                HttpResponse::Ok()
                    .content_type(content_type)
                    .insert_header((header::CACHE_CONTROL, "no-cache"))
                    .insert_header(("X-Content-Type-Options", "nosniff"))
                    // The UI loads nothing from other sites.
                    .insert_header((
                        header::CONTENT_SECURITY_POLICY,
                        "default-src 'self'; img-src 'self' blob: data:; style-src 'self'; script-src 'self'",
                    ))
                    .body(bytes)
            }),
        );
    }
}
