//! The HTTP API through actix's test harness, on the tiny fixture model and a small indexed
//! folder: every endpoint, and the bad input each must refuse with a JSON error.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use actix_web::http::StatusCode;
use actix_web::{App, test, web};
use clipdex::query::SearchFilter;
use clipdex::server::{AppState, BackgroundIndexer, ServeOptions, configure};
use clipdex::{Library, LibraryConfig};
use serde_json::Value;

mod common;
use common::backends::{TestDb, off, test_databases};
use common::picture;

fn model() -> String {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/clip-tiny-p32").to_string_lossy().into_owned()
}

fn seg_model() -> String {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/clipseg/clipseg-tiny").to_string_lossy().into_owned()
}

fn fixture_image(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/images").join(name)
}

struct Setup {
    tmp: tempfile::TempDir,
    library: Arc<Library>,
    photos: PathBuf,
    db: TestDb,
}

/// Nine photos (eight generated in two folders, one rotated by EXIF), indexed into `db`.
fn setup(db: TestDb) -> Setup {
    let tmp = tempfile::tempdir().unwrap();
    let photos = tmp.path().join("photos");
    for i in 0..8u32 {
        let dir = photos.join(if i % 2 == 0 { "even" } else { "odd" });
        std::fs::create_dir_all(&dir).unwrap();
        picture(i).save(dir.join(format!("p{i}.jpg"))).unwrap();
    }
    std::fs::copy(fixture_image("chelsea_exif6.jpg"), photos.join("even/rotated.jpg")).unwrap();
    let photos = std::fs::canonicalize(&photos).unwrap();
    let mut config = LibraryConfig::new(db.location.clone(), model());
    config.seg_model = seg_model();
    let library = Library::open(config).unwrap();
    library.add_root(&photos).unwrap();
    let report = library.index(&|_, _| {}).unwrap();
    assert_eq!(report.embedded, 9);
    Setup { tmp, library: Arc::new(library), photos, db }
}

fn state(s: &Setup, options: &ServeOptions) -> web::Data<AppState> {
    web::Data::new(AppState::new(s.library.clone(), BackgroundIndexer::off(), options))
}

macro_rules! service {
    ($setup:expr) => {
        service!($setup, &ServeOptions::default())
    };
    ($setup:expr, $options:expr) => {
        app!(state($setup, $options))
    };
}

/// The app over `state`, as a browser or `curl` reaches it: with a `Host` header (HTTP/1.1
/// requires one, and the server refuses requests without), which actix's test requests leave
/// out unless a test sets one.
macro_rules! app {
    ($state:expr) => {
        test::init_service(
            App::new()
                .wrap_fn(|mut req, srv| {
                    use actix_web::http::header::{HOST, HeaderValue};
                    if !req.headers().contains_key(HOST) {
                        req.headers_mut().insert(HOST, HeaderValue::from_static("127.0.0.1:7878"));
                    }
                    actix_web::dev::Service::call(srv, req)
                })
                .configure(configure($state)),
        )
        .await
    };
}

/// Sends a request; returns status and JSON body (Null when the body is not JSON).
macro_rules! call {
    ($app:expr, $req:expr) => {{
        let response = test::call_service(&$app, $req.to_request()).await;
        let status = response.status();
        let body = test::read_body(response).await;
        (status, serde_json::from_slice::<Value>(&body).unwrap_or(Value::Null))
    }};
}

fn ids(body: &Value) -> Vec<u64> {
    body["results"].as_array().unwrap().iter().map(|r| r["id"].as_u64().unwrap()).collect()
}

fn id_of(s: &Setup, name: &str) -> u64 {
    let path = s.photos.join(name);
    off(|| s.library.store().path_entry(&path).unwrap().unwrap().id)
}

fn multipart(fields: &[(&str, Option<&str>, &[u8])]) -> (String, Vec<u8>) {
    let boundary = "clipdexTestBoundary7MA4YWxk";
    let mut body = Vec::new();
    for (name, filename, data) in fields {
        body.extend_from_slice(format!("--{boundary}\r\n").as_bytes());
        match filename {
            Some(f) => body.extend_from_slice(
                format!(
                    "Content-Disposition: form-data; name=\"{name}\"; filename=\"{f}\"\r\nContent-Type: application/octet-stream\r\n\r\n"
                )
                .as_bytes(),
            ),
            None => body.extend_from_slice(format!("Content-Disposition: form-data; name=\"{name}\"\r\n\r\n").as_bytes()),
        }
        body.extend_from_slice(data);
        body.extend_from_slice(b"\r\n");
    }
    body.extend_from_slice(format!("--{boundary}--\r\n").as_bytes());
    (format!("multipart/form-data; boundary={boundary}"), body)
}

fn upload(uri: &str, fields: &[(&str, Option<&str>, &[u8])]) -> test::TestRequest {
    let (content_type, body) = multipart(fields);
    test::TestRequest::post().uri(uri).insert_header(("content-type", content_type)).set_payload(body)
}

fn assert_error(status: StatusCode, body: &Value, expected: StatusCode, needle: &str) {
    assert_eq!(status, expected, "{body}");
    let message = body["error"].as_str().unwrap_or_else(|| panic!("no JSON error in {body}"));
    assert!(message.to_lowercase().contains(&needle.to_lowercase()), "{message:?} lacks {needle:?}");
}

#[actix_web::test]
async fn text_search_matches_the_library_and_pages_through_it() {
    for db in test_databases() {
        let s = off(|| setup(db));
        let app = service!(&s);
        let (status, body) = call!(app, test::TestRequest::get().uri("/api/search?q=a%20red%20car&k=9"));
        assert_eq!(status, StatusCode::OK, "{body}");
        assert!(body["took_ms"].as_f64().unwrap() >= 0.0);
        let expected = off(|| s.library.search_text("a red car", 9, &SearchFilter::default()).unwrap());
        assert_eq!(ids(&body), expected.iter().map(|h| h.id).collect::<Vec<_>>());
        let first = &body["results"][0];
        assert!((first["score"].as_f64().unwrap() - expected[0].score as f64).abs() < 1e-6);
        assert_eq!(first["path"].as_str().unwrap(), expected[0].path.to_str().unwrap());
        assert!(first["date"].as_i64().is_some() && first["width"].as_u64().is_some());

        // Pages of 4 put together are the ranking of 9.
        let mut paged = Vec::new();
        for offset in [0, 4, 8] {
            let (_, page) =
                call!(app, test::TestRequest::get().uri(&format!("/api/search?q=a%20red%20car&k=4&offset={offset}")));
            paged.extend(ids(&page));
        }
        assert_eq!(paged, ids(&body));

        // Filters: a folder, dates.
        let under = s.photos.join("odd");
        let uri = format!("/api/search?q=car&k=9&under={}", under.display());
        let (_, body) = call!(app, test::TestRequest::get().uri(&uri));
        assert_eq!(ids(&body).len(), 4);
        assert!(body["results"].as_array().unwrap().iter().all(|r| r["path"].as_str().unwrap().contains("/odd/")));
        let (_, body) = call!(app, test::TestRequest::get().uri("/api/search?q=car&before=1990"));
        assert_eq!(ids(&body).len(), 0);
        let (_, body) = call!(app, test::TestRequest::get().uri("/api/search?q=car&after=1990-01-01&k=50"));
        assert_eq!(ids(&body).len(), 9);
    }
}

#[actix_web::test]
async fn text_search_can_locate_the_query_in_each_result() {
    for db in test_databases() {
        let s = off(|| setup(db));
        let app = service!(&s);
        let (status, body) = call!(app, test::TestRequest::get().uri("/api/search?q=a%20cat&k=4&crops=true"));
        assert_eq!(status, StatusCode::OK, "{body}");
        let results = body["results"].as_array().unwrap();
        assert_eq!(results.len(), 4);
        let hits: Vec<clipdex::query::SearchHit> = results
            .iter()
            .map(|r| {
                assert_eq!(r["kind"], "photo");
                let (id, path) = (r["id"].as_u64().unwrap(), r["path"].as_str().unwrap().into());
                clipdex::query::SearchHit::photo(id, path, r["score"].as_f64().unwrap() as f32)
            })
            .collect();
        let expected = off(|| s.library.locate("a cat", &hits, &Default::default(), &|_, _| {}).unwrap());
        for (r, e) in results.iter().zip(&expected) {
            assert!(r.get("region").is_some(), "every result says where (or null)");
            assert_eq!(r["region"], serde_json::to_value(e).unwrap());
            if let Some(e) = e {
                assert!(e.bbox[0] + e.bbox[2] <= r["width"].as_u64().unwrap() as u32);
            }
        }
        assert!(expected.iter().any(Option::is_some));
        // The photos decoded ahead come back in order: each hit alone gives what it gave among
        // the others, a missing file in the middle gives None without moving the rest, and
        // progress counts every hit.
        let mut with_missing = hits.clone();
        with_missing.insert(2, clipdex::query::SearchHit::photo(999, s.photos.join("gone.jpg"), 0.5));
        let seen = std::sync::Mutex::new(Vec::new());
        let record = |done, total| seen.lock().unwrap().push((done, total));
        let located = off(|| s.library.locate("a cat", &with_missing, &Default::default(), &record).unwrap());
        assert_eq!(located[2], None);
        assert_eq!([&located[..2], &located[3..]].concat(), expected);
        for (i, hit) in hits.iter().enumerate() {
            let alone = off(|| s.library.locate("a cat", std::slice::from_ref(hit), &Default::default(), &|_, _| {}));
            assert_eq!(alone.unwrap()[0], expected[i]);
        }
        assert_eq!(seen.into_inner().unwrap(), (0..=5).map(|d| (d, 5)).collect::<Vec<_>>());
        // Without crops, no region key at all.
        let (_, plain) = call!(app, test::TestRequest::get().uri("/api/search?q=a%20cat&k=4"));
        assert!(plain["results"][0].get("region").is_none());
        for (uri, needle) in
            [("/api/search?q=cat&crops=maybe", "crops must be"), ("/api/search?q=cat&crops=1", "crops must be")]
        {
            let (status, body) = call!(app, test::TestRequest::get().uri(uri));
            assert_error(status, &body, StatusCode::BAD_REQUEST, needle);
        }
        // Regions for at most 50 results a page; none without a text query.
        let (status, body) = call!(app, test::TestRequest::get().uri("/api/search?q=cat&crops=true&k=51"));
        assert_eq!(status, StatusCode::OK, "{body}");
        assert!(body["results"].as_array().unwrap().len() <= 50);
        let (status, body) = call!(app, test::TestRequest::get().uri("/api/search?tag=x&crops=true"));
        assert_eq!((status, &body["results"]), (StatusCode::OK, &serde_json::json!([])), "{body}");

        // A segmentation model that cannot be loaded is the server's problem, said clearly.
        let mut config = LibraryConfig::new(s.tmp.path().join("db3"), model());
        config.seg_model = "/no/such/clipseg-model".into();
        let lib = Library::open(config).unwrap();
        lib.add_root(&s.photos).unwrap();
        lib.index(&|_, _| {}).unwrap();
        let state = web::Data::new(AppState::new(Arc::new(lib), BackgroundIndexer::off(), &ServeOptions::default()));
        let app = app!(state);
        let (status, body) = call!(app, test::TestRequest::get().uri("/api/search?q=cat&k=2&crops=true"));
        assert_error(status, &body, StatusCode::SERVICE_UNAVAILABLE, "/no/such/clipseg-model");
    }
}

#[actix_web::test]
async fn bad_search_requests_get_clear_json_errors() {
    for db in test_databases() {
        let s = off(|| setup(db));
        let app = service!(&s);
        let long = "x".repeat(3000);
        let cases = [
            ("/api/search?q=cat&k=0".to_string(), "k must be"),
            ("/api/search?q=cat&k=1000000".to_string(), "k must be"),
            ("/api/search?q=cat&k=99999999999999999999999".to_string(), "k"),
            ("/api/search?q=cat&k=-1".to_string(), "k"),
            ("/api/search?q=cat&k=abc".to_string(), "k"),
            ("/api/search?q=cat&offset=99999999".to_string(), "offset"),
            (format!("/api/search?q={long}"), "longer than"),
            ("/api/search?q=cat&after=yesterday".to_string(), "after"),
            ("/api/search?q=cat&before=2024-13-45".to_string(), "before"),
            ("/api/search?q=cat&under=photos/even".to_string(), "absolute"),
            ("/api/search?q=cat&under=%2Ftmp%2F%00x".to_string(), "NUL"),
            ("/api/search?q=cat&k=".to_string(), "k must be"),
        ];
        // A folder with `..` names nothing in the library (its paths are canonical): no results.
        for uri in ["/api/search?q=cat&under=/tmp/../etc", "/api/search?q=cat&under=%2F..%2F..%2Fetc%2Fpasswd"] {
            let (status, body) = call!(app, test::TestRequest::get().uri(uri));
            assert_eq!((status, &body["results"]), (StatusCode::OK, &serde_json::json!([])), "{uri}: {body}");
        }
        // Nothing to look for (no query, a blank one, no tag): nothing found, not an error.
        for uri in ["/api/search", "/api/search?q=%20%20", "/api/search?in=captions"] {
            let (status, body) = call!(app, test::TestRequest::get().uri(uri));
            assert_eq!((status, &body["results"]), (StatusCode::OK, &serde_json::json!([])), "{uri}: {body}");
        }
        for (uri, needle) in cases {
            let (status, body) = call!(app, test::TestRequest::get().uri(&uri));
            assert_error(status, &body, StatusCode::BAD_REQUEST, needle);
        }
        let (status, body) = call!(app, test::TestRequest::get().uri("/api/nothing/here"));
        assert_error(status, &body, StatusCode::NOT_FOUND, "no such endpoint");
        // A method the endpoint does not take: 405, with the ones it takes.
        let response =
            test::call_service(&app, test::TestRequest::delete().uri("/api/search?q=cat").to_request()).await;
        assert_eq!(response.status(), StatusCode::METHOD_NOT_ALLOWED);
        assert_eq!(response.headers().get("allow").unwrap(), "GET");
        let response = test::call_service(&app, test::TestRequest::put().uri("/api/roots").to_request()).await;
        assert_eq!(response.status(), StatusCode::METHOD_NOT_ALLOWED);
        assert_eq!(response.headers().get("allow").unwrap(), "DELETE, GET, POST");
        // An unknown tag is not an error: nothing carries it.
        let (status, body) = call!(app, test::TestRequest::get().uri("/api/search?tag=unicorn"));
        assert_eq!((status, ids(&body).len()), (StatusCode::OK, 0));
    }
}

#[actix_web::test]
async fn search_by_image_takes_an_upload_or_an_indexed_id() {
    for db in test_databases() {
        let s = off(|| setup(db));
        let app = service!(&s);
        let target = id_of(&s, "odd/p3.jpg");
        let bytes = std::fs::read(s.photos.join("odd/p3.jpg")).unwrap();
        let (status, body) = call!(app, upload("/api/search/image?k=3", &[("image", Some("p3.jpg"), &bytes)]));
        assert_eq!(status, StatusCode::OK, "{body}");
        assert_eq!(ids(&body)[0], target);
        assert!(body["results"][0]["score"].as_f64().unwrap() > 0.99);

        // "More like this": the photo itself left out, as `similar` leaves it out.
        let (status, by_id) = call!(app, test::TestRequest::post().uri(&format!("/api/search/image?id={target}&k=3")));
        assert_eq!(status, StatusCode::OK, "{by_id}");
        assert_eq!(ids(&by_id).len(), 3, "{by_id}");
        assert!(!ids(&by_id).contains(&target), "{by_id}");
        let expected = off(|| s.library.search_like(target, 3, &SearchFilter::default()).unwrap());
        assert_eq!(ids(&by_id), expected.iter().map(|h| h.id).collect::<Vec<_>>());
        // Paged: the next page goes on from there, still without it.
        let (_, next) =
            call!(app, test::TestRequest::post().uri(&format!("/api/search/image?id={target}&k=3&offset=3")));
        let expected = off(|| s.library.search_like(target, 6, &SearchFilter::default()).unwrap());
        assert_eq!(ids(&next), expected[3..].iter().map(|h| h.id).collect::<Vec<_>>(), "{next}");
        let (_, by_body) = call!(
            app,
            test::TestRequest::post().uri("/api/search/image?k=3").set_json(serde_json::json!({ "id": target }))
        );
        assert_eq!(ids(&by_body), ids(&by_id));

        let cases: Vec<(test::TestRequest, StatusCode, &str)> = vec![
            (test::TestRequest::post().uri("/api/search/image?id=abc"), StatusCode::BAD_REQUEST, "not an image id"),
            (
                test::TestRequest::post().uri("/api/search/image?id=..%2F..%2Fetc"),
                StatusCode::BAD_REQUEST,
                "not an image id",
            ),
            (
                test::TestRequest::post().uri("/api/search/image?id=987654"),
                StatusCode::NOT_FOUND,
                "no image with id 987654",
            ),
            (test::TestRequest::post().uri("/api/search/image"), StatusCode::BAD_REQUEST, "send an image"),
            (
                test::TestRequest::post().uri("/api/search/image").set_payload("{\"id\": 1}"),
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "application/json",
            ),
            (
                test::TestRequest::post()
                    .uri("/api/search/image")
                    .insert_header(("content-type", "application/json"))
                    .set_payload("{\"id\": \"x\"}"),
                StatusCode::BAD_REQUEST,
                "bad JSON",
            ),
            (upload("/api/search/image", &[("image", Some("a.jpg"), b"")]), StatusCode::BAD_REQUEST, "empty"),
            (
                upload("/api/search/image", &[("image", Some("a.jpg"), b"just some text")]),
                StatusCode::BAD_REQUEST,
                "not an image",
            ),
            (
                upload("/api/search/image", &[("image", Some("a.jpg"), &bytes[..bytes.len() / 3])]),
                StatusCode::BAD_REQUEST,
                "upload",
            ),
            (upload("/api/search/image", &[("photo", Some("a.jpg"), &bytes)]), StatusCode::BAD_REQUEST, "no `image`"),
            (
                test::TestRequest::post()
                    .uri("/api/search/image")
                    .insert_header(("content-type", "multipart/form-data; boundary=xyz"))
                    .set_payload("garbage without boundaries"),
                StatusCode::BAD_REQUEST,
                "multipart",
            ),
            (
                upload("/api/search/image?k=0", &[("image", Some("a.jpg"), &bytes)]),
                StatusCode::BAD_REQUEST,
                "k must be",
            ),
        ];
        for (req, status_expected, needle) in cases {
            let (status, body) = call!(app, req);
            assert_error(status, &body, status_expected, needle);
        }
        assert!(off(|| s.library.store().check().unwrap().is_empty()), "bad requests changed nothing");
    }
}

#[actix_web::test]
async fn uploads_over_the_limits_are_refused() {
    for db in test_databases() {
        let s = off(|| setup(db));
        let app = service!(&s, &ServeOptions { max_upload: 2000, ..Default::default() });
        let bytes = std::fs::read(s.photos.join("odd/p3.jpg")).unwrap();
        assert!(bytes.len() > 2000);
        let (status, body) = call!(app, upload("/api/search/image", &[("image", Some("p3.jpg"), &bytes)]));
        assert_error(status, &body, StatusCode::PAYLOAD_TOO_LARGE, "larger than the limit");

        // A decompression bomb: a small file declaring too many pixels.
        let bomb_lib =
            Library::open(LibraryConfig { max_pixels: 1000, ..LibraryConfig::new(s.tmp.path().join("db2"), model()) })
                .unwrap();
        let state =
            web::Data::new(AppState::new(Arc::new(bomb_lib), BackgroundIndexer::off(), &ServeOptions::default()));
        let app = app!(state);
        let (status, body) = call!(app, upload("/api/search/image", &[("image", Some("p3.jpg"), &bytes)]));
        assert_error(status, &body, StatusCode::PAYLOAD_TOO_LARGE, "exceeds the limit");
    }
}

#[actix_web::test]
async fn image_metadata_thumbnails_and_files() {
    for db in test_databases() {
        let s = off(|| setup(db));
        let app = service!(&s);
        let id = id_of(&s, "even/rotated.jpg");
        let (status, body) = call!(app, test::TestRequest::get().uri(&format!("/api/images/{id}")));
        assert_eq!(status, StatusCode::OK, "{body}");
        let record = off(|| s.library.store().image(id).unwrap().unwrap());
        assert_eq!(body["id"].as_u64(), Some(id));
        assert_eq!(body["paths"][0].as_str().unwrap(), s.photos.join("even/rotated.jpg").to_str().unwrap());
        assert_eq!(
            (body["width"].as_u64(), body["height"].as_u64()),
            (Some(record.width as u64), Some(record.height as u64))
        );
        assert_eq!(body["hash"].as_str(), Some(record.hash.as_str()));
        assert!(body["tags"].as_array().unwrap().is_empty());
        assert!(body.get("caption").is_none());

        // The thumbnail is upright (EXIF orientation 6 swaps the sides) and cached.
        let response = test::call_service(
            &app,
            test::TestRequest::get().uri(&format!("/api/images/{id}/thumb?size=64")).to_request(),
        )
        .await;
        assert_eq!(response.status(), StatusCode::OK);
        assert_eq!(response.headers().get("content-type").unwrap(), "image/jpeg");
        let thumb = image::load_from_memory(&test::read_body(response).await).unwrap();
        assert_eq!(thumb.width().max(thumb.height()), 64);
        assert_eq!(thumb.width() > thumb.height(), record.width > record.height, "upright like the record");
        let cached = s.db.location.local_dir().join("thumbs/64").join(format!("{}.jpg", record.hash));
        assert!(cached.is_file());
        // Served from the cache even once the file is gone.
        std::fs::rename(s.photos.join("even/rotated.jpg"), s.tmp.path().join("moved.jpg")).unwrap();
        let (status, _) = call!(app, test::TestRequest::get().uri(&format!("/api/images/{id}/thumb?size=64")));
        assert_eq!(status, StatusCode::OK);
        let (status, body) = call!(app, test::TestRequest::get().uri(&format!("/api/images/{id}/thumb?size=128")));
        assert_error(status, &body, StatusCode::NOT_FOUND, "gone");
        let (status, body) = call!(app, test::TestRequest::get().uri(&format!("/api/images/{id}/file")));
        assert_error(status, &body, StatusCode::NOT_FOUND, "gone");

        let other = id_of(&s, "odd/p1.jpg");
        let response =
            test::call_service(&app, test::TestRequest::get().uri(&format!("/api/images/{other}/file")).to_request())
                .await;
        assert_eq!(response.status(), StatusCode::OK);
        assert_eq!(response.headers().get("content-type").unwrap(), "image/jpeg");
        assert_eq!(test::read_body(response).await.to_vec(), std::fs::read(s.photos.join("odd/p1.jpg")).unwrap());

        for (uri, expected, needle) in [
            ("/api/images/abc".to_string(), StatusCode::BAD_REQUEST, "not an image id"),
            ("/api/images/-1".to_string(), StatusCode::BAD_REQUEST, "not an image id"),
            ("/api/images/..%2F..%2Fetc%2Fpasswd".to_string(), StatusCode::BAD_REQUEST, "not an image id"),
            ("/api/images/..%2F..%2Fetc%2Fpasswd/file".to_string(), StatusCode::BAD_REQUEST, "not an image id"),
            ("/api/images/424242".to_string(), StatusCode::NOT_FOUND, "no image"),
            ("/api/images/424242/file".to_string(), StatusCode::NOT_FOUND, "no image"),
            ("/api/images/424242/thumb".to_string(), StatusCode::NOT_FOUND, "no image"),
            (format!("/api/images/{other}/thumb?size=0"), StatusCode::BAD_REQUEST, "between"),
            (format!("/api/images/{other}/thumb?size=100000"), StatusCode::BAD_REQUEST, "between"),
            (format!("/api/images/{other}/thumb?size=..%2F..%2Fx"), StatusCode::BAD_REQUEST, "size"),
        ] {
            let (status, body) = call!(app, test::TestRequest::get().uri(&uri));
            assert_error(status, &body, expected, needle);
        }
    }
}

#[cfg(unix)]
#[actix_web::test]
async fn only_files_as_they_were_indexed_are_served() {
    for db in test_databases() {
        let s = off(|| setup(db));
        let app = service!(&s);
        let id = id_of(&s, "odd/p5.jpg");
        let original = std::fs::read(s.photos.join("odd/p5.jpg")).unwrap();
        // The photo moved out of the folder, a symbolic link left in its place (a linked album):
        // the same file as indexed, so it is served.
        let outside = s.tmp.path().join("album/p5.jpg");
        std::fs::create_dir_all(outside.parent().unwrap()).unwrap();
        std::fs::rename(s.photos.join("odd/p5.jpg"), &outside).unwrap();
        std::os::unix::fs::symlink(&outside, s.photos.join("odd/p5.jpg")).unwrap();
        let response =
            test::call_service(&app, test::TestRequest::get().uri(&format!("/api/images/{id}/file")).to_request())
                .await;
        assert_eq!(response.status(), StatusCode::OK);
        assert_eq!(test::read_body(response).await, original);
        let (status, _) = call!(app, test::TestRequest::get().uri(&format!("/api/images/{id}/thumb?size=32")));
        assert_eq!(status, StatusCode::OK);
        // The link now points at another file (a secret, say): not what was indexed, not served.
        let secret = s.tmp.path().join("secret.txt");
        std::fs::write(&secret, b"not a photo of yours").unwrap();
        std::fs::remove_file(s.photos.join("odd/p5.jpg")).unwrap();
        std::os::unix::fs::symlink(&secret, s.photos.join("odd/p5.jpg")).unwrap();
        let (status, body) = call!(app, test::TestRequest::get().uri(&format!("/api/images/{id}/file")));
        assert_error(status, &body, StatusCode::FORBIDDEN, "changed since");
        let (status, body) = call!(app, test::TestRequest::get().uri(&format!("/api/images/{id}/thumb?size=64")));
        assert_error(status, &body, StatusCode::FORBIDDEN, "changed since");
        // A decoy of the indexed size and time (anyone who can write a file can forge both):
        // the content is checked on the file opened, so it is not served either.
        let decoy = s.tmp.path().join("decoy.txt");
        std::fs::write(&decoy, vec![b'x'; original.len()]).unwrap();
        let indexed_time = std::fs::metadata(&outside).unwrap().modified().unwrap();
        std::fs::File::options().write(true).open(&decoy).unwrap().set_modified(indexed_time).unwrap();
        assert_eq!(std::fs::metadata(&decoy).unwrap().modified().unwrap(), indexed_time, "a perfect forgery");
        std::fs::remove_file(s.photos.join("odd/p5.jpg")).unwrap();
        std::os::unix::fs::symlink(&decoy, s.photos.join("odd/p5.jpg")).unwrap();
        let (status, body) = call!(app, test::TestRequest::get().uri(&format!("/api/images/{id}/file")));
        assert_error(status, &body, StatusCode::FORBIDDEN, "changed since");
    }
}

#[actix_web::test]
async fn tagging_an_indexed_image_or_an_upload() {
    for db in test_databases() {
        let s = off(|| setup(db));
        let app = service!(&s);
        let id = id_of(&s, "even/p2.jpg");
        let labels = ["a cat", "a dog", "a red car"];
        let (status, body) = call!(
            app,
            test::TestRequest::post().uri("/api/tag").set_json(serde_json::json!({"labels": labels, "id": id}))
        );
        assert_eq!(status, StatusCode::OK, "{body}");
        let got = body["labels"].as_array().unwrap();
        assert_eq!(got.len(), 3);
        let sum: f64 = got.iter().map(|l| l["probability"].as_f64().unwrap()).sum();
        assert!((sum - 1.0).abs() < 1e-4);
        let labels: Vec<String> = labels.iter().map(|l| l.to_string()).collect();
        let templates = vec![clipdex::query::tags::DEFAULT_TEMPLATE.to_string()];
        let (classifier, _) = off(|| s.library.classifier(&labels, &templates).unwrap());
        let expected = classifier.classify(&off(|| s.library.stored_vector(id).unwrap()));
        for (g, e) in got.iter().zip(&expected) {
            assert_eq!(g["label"].as_str().unwrap(), e.label);
            assert!((g["probability"].as_f64().unwrap() - e.probability as f64).abs() < 1e-6);
        }

        let bytes = std::fs::read(s.photos.join("even/p2.jpg")).unwrap();
        let (status, uploaded) = call!(
            app,
            upload("/api/tag", &[("image", Some("p2.jpg"), &bytes), ("labels", None, b"a cat, a dog, a red car")])
        );
        assert_eq!(status, StatusCode::OK, "{uploaded}");
        assert_eq!(uploaded["labels"][0]["label"], body["labels"][0]["label"]);

        let many: Vec<String> = (0..1001).map(|i| format!("label {i}")).collect();
        let cases = [
            (serde_json::json!({"labels": [], "id": id}), StatusCode::BAD_REQUEST, "no labels"),
            (serde_json::json!({"labels": " , ", "id": id}), StatusCode::BAD_REQUEST, "no labels"),
            (serde_json::json!({"labels": many, "id": id}), StatusCode::BAD_REQUEST, "at most"),
            (serde_json::json!({"labels": ["x".repeat(500)], "id": id}), StatusCode::BAD_REQUEST, "at most"),
            (
                serde_json::json!({"labels": ["cat"], "id": id, "templates": "../../etc/passwd"}),
                StatusCode::BAD_REQUEST,
                "templates",
            ),
            (serde_json::json!({"labels": ["cat"]}), StatusCode::BAD_REQUEST, "bad JSON"),
            (serde_json::json!({"labels": ["cat"], "id": 999999}), StatusCode::NOT_FOUND, "no image"),
        ];
        for (json, expected, needle) in cases {
            let (status, body) = call!(app, test::TestRequest::post().uri("/api/tag").set_json(json));
            assert_error(status, &body, expected, needle);
        }
        let (status, body) = call!(app, upload("/api/tag", &[("image", Some("p2.jpg"), &bytes)]));
        assert_error(status, &body, StatusCode::BAD_REQUEST, "labels");
    }
}

#[actix_web::test]
async fn status_tags_and_roots() {
    for db in test_databases() {
        let s = off(|| setup(db));
        let app = service!(&s);
        let (status, body) = call!(app, test::TestRequest::get().uri("/api/status"));
        assert_eq!(status, StatusCode::OK);
        assert_eq!(body["library"]["images"].as_u64(), Some(9));
        assert_eq!(body["library"]["model"].as_str(), Some(model().as_str()));
        assert_eq!(body["indexer"]["state"], "off");
        let (status, body) = call!(app, test::TestRequest::get().uri("/api/tags"));
        assert_eq!((status, body["tags"].as_array().map(Vec::len)), (StatusCode::OK, Some(0)));

        let (_, body) = call!(app, test::TestRequest::get().uri("/api/roots"));
        assert_eq!(body["roots"], serde_json::json!([s.photos]));
        let more = s.tmp.path().join("more");
        std::fs::create_dir_all(&more).unwrap();
        let (status, body) =
            call!(app, test::TestRequest::post().uri("/api/roots").set_json(serde_json::json!({"path": more})));
        assert_eq!(status, StatusCode::CREATED, "{body}");
        assert_eq!(body["root"].as_str().unwrap(), std::fs::canonicalize(&more).unwrap().to_str().unwrap());
        for (json, needle) in [
            (serde_json::json!({"path": "relative/folder"}), "absolute"),
            (serde_json::json!({"path": ""}), "path"),
            (serde_json::json!({"path": "/tmp/\u{0}x"}), "NUL"),
            (serde_json::json!({"folder": "/tmp"}), "bad JSON"),
        ] {
            let (status, body) = call!(app, test::TestRequest::post().uri("/api/roots").set_json(json));
            assert_error(status, &body, StatusCode::BAD_REQUEST, needle);
        }
        // A folder that is not there is not found (`..` is resolved like any path).
        for missing in ["/no/such/folder", "/no/such/../folder"] {
            let (status, body) =
                call!(app, test::TestRequest::post().uri("/api/roots").set_json(serde_json::json!({"path": missing})));
            assert_error(status, &body, StatusCode::NOT_FOUND, missing);
        }

        let uri = format!("/api/roots?path={}", s.photos.join("odd").display());
        let (status, body) = call!(app, test::TestRequest::delete().uri(&uri));
        assert_error(status, &body, StatusCode::NOT_FOUND, "not a root");
        let (status, body) = call!(app, test::TestRequest::delete().uri("/api/roots"));
        assert_error(status, &body, StatusCode::BAD_REQUEST, "give the folder");
        let (status, body) =
            call!(app, test::TestRequest::delete().uri("/api/roots").set_json(serde_json::json!({"path": s.photos})));
        assert_eq!((status, body["removed"].as_u64()), (StatusCode::OK, Some(9)));
        let (_, body) = call!(app, test::TestRequest::get().uri("/api/status"));
        assert_eq!(body["library"]["images"].as_u64(), Some(0));
    }
}

#[actix_web::test]
async fn a_token_guards_every_api_call_but_not_the_page() {
    for db in test_databases() {
        let s = off(|| setup(db));
        let options = ServeOptions { token: Some("s3cret-token".into()), ..Default::default() };
        let app = service!(&s, &options);
        let id = id_of(&s, "odd/p1.jpg");
        for uri in
            ["/api/status", "/api/search?q=cat", "/api/openapi.json", &format!("/api/images/{id}/file"), "/api/nope"]
        {
            for auth in [
                None,
                Some("Bearer wrong"),
                Some("s3cret-token"),
                Some("Bearer s3cret-tokenX"),
                Some("Basic s3cret-token"),
            ] {
                let mut req = test::TestRequest::get().uri(uri);
                if let Some(a) = auth {
                    req = req.insert_header(("authorization", a));
                }
                let response = test::call_service(&app, req.to_request()).await;
                assert_eq!(response.status(), StatusCode::UNAUTHORIZED, "{uri} with {auth:?}");
                assert_eq!(response.headers().get("www-authenticate").unwrap(), "Bearer");
                let body: Value = serde_json::from_slice(&test::read_body(response).await).unwrap();
                assert!(body["error"].as_str().unwrap().contains("token"));
            }
        }
        let (status, _) = call!(
            app,
            test::TestRequest::get().uri("/api/status").insert_header(("authorization", "Bearer s3cret-token"))
        );
        assert_eq!(status, StatusCode::OK);
        let response = test::call_service(&app, test::TestRequest::get().uri("/").to_request()).await;
        assert_eq!(response.status(), StatusCode::OK);
    }
}

#[actix_web::test]
async fn cors_only_for_configured_origins() {
    for db in test_databases() {
        let s = off(|| setup(db));
        let app = service!(&s);
        let response = test::call_service(
            &app,
            test::TestRequest::get().uri("/api/status").insert_header(("origin", "https://evil.example")).to_request(),
        )
        .await;
        assert!(response.headers().get("access-control-allow-origin").is_none());

        let options = ServeOptions { cors_origins: vec!["https://photos.example".into()], ..Default::default() };
        let app = service!(&s, &options);
        let get = |origin: &'static str| test::TestRequest::get().uri("/api/status").insert_header(("origin", origin));
        let response = test::call_service(&app, get("https://photos.example").to_request()).await;
        assert_eq!(response.headers().get("access-control-allow-origin").unwrap(), "https://photos.example");
        let response = test::call_service(&app, get("https://evil.example").to_request()).await;
        assert!(response.headers().get("access-control-allow-origin").is_none());
        let preflight = test::TestRequest::default()
            .method(actix_web::http::Method::OPTIONS)
            .uri("/api/search")
            .insert_header(("origin", "https://photos.example"))
            .insert_header(("access-control-request-method", "GET"));
        let response = test::call_service(&app, preflight.to_request()).await;
        assert_eq!(response.status(), StatusCode::NO_CONTENT);
        assert!(
            response.headers().get("access-control-allow-headers").unwrap().to_str().unwrap().contains("Authorization")
        );
    }
}

#[actix_web::test]
async fn every_endpoint_in_the_openapi_document_exists() {
    for db in test_databases() {
        let s = off(|| setup(db));
        let app = service!(&s);
        let (status, doc) = call!(app, test::TestRequest::get().uri("/api/openapi.json"));
        assert_eq!(status, StatusCode::OK);
        assert_eq!(doc["openapi"], "3.0.3");
        let id = id_of(&s, "odd/p1.jpg");
        let paths = doc["paths"].as_object().unwrap();
        assert!(paths.len() >= 10);
        let mut operations = 0;
        for (path, methods) in paths {
            for method in methods.as_object().unwrap().keys() {
                let uri = path.replace("{id}", &id.to_string());
                let req = test::TestRequest::default().method(method.to_uppercase().parse().unwrap()).uri(&uri);
                let (status, body) = call!(app, req);
                assert!(
                    body["error"].as_str() != Some("no such endpoint") && status != StatusCode::METHOD_NOT_ALLOWED,
                    "{method} {path}: {status} {body}"
                );
                operations += 1;
            }
        }
        assert_eq!(operations, 46);
    }
}

#[actix_web::test]
async fn the_timeline_pages_through_the_library_and_the_folders_count_it() {
    for db in test_databases() {
        let s = off(|| setup(db));
        let app = service!(&s);
        // Nine photos (8 pictures and the rotated one) in `even/` and `odd/`, four at a time.
        let mut seen = Vec::new();
        let mut uri = "/api/timeline?limit=4".to_string();
        loop {
            let (status, page) = call!(app, test::TestRequest::get().uri(&uri));
            assert_eq!(status, StatusCode::OK, "{page}");
            for item in page["items"].as_array().unwrap() {
                assert!(item["width"].as_u64().unwrap() > 0 && item["height"].as_u64().unwrap() > 0, "{item}");
                assert_eq!(item["kind"], "photo");
                assert_eq!(item["month"].as_str().unwrap().len(), 7, "{item}");
                seen.push((item["date"].as_i64().unwrap(), item["id"].as_u64().unwrap()));
            }
            match page["next"].as_str() {
                Some(next) => uri = format!("/api/timeline?limit=4&cursor={next}"),
                None => break,
            }
        }
        assert_eq!(seen.len(), 9);
        assert!(seen.windows(2).all(|w| w[0] > w[1]), "newest first, each once: {seen:?}");
        let (_, months) = call!(app, test::TestRequest::get().uri("/api/timeline/months"));
        let total: u64 = months["months"].as_array().unwrap().iter().map(|m| m["count"].as_u64().unwrap()).sum();
        assert_eq!(total, 9);
        let odd = s.photos.join("odd");
        let uri = format!("/api/timeline?folder={}", odd.display());
        let (_, page) = call!(app, test::TestRequest::get().uri(&uri));
        assert_eq!(page["items"].as_array().unwrap().len(), 4, "{page}");
        for bad in ["cursor=12", "cursor=%2B1_2", "month=2024-13", "limit=0", "limit=501", "folder=relative"] {
            let (status, body) = call!(app, test::TestRequest::get().uri(&format!("/api/timeline?{bad}")));
            assert_eq!(status, StatusCode::BAD_REQUEST, "{bad}: {body}");
        }

        let (status, roots) = call!(app, test::TestRequest::get().uri("/api/folders"));
        assert_eq!(status, StatusCode::OK);
        assert_eq!(
            roots["folders"],
            serde_json::json!([{"path": s.photos.to_str().unwrap(), "name": s.photos.to_str().unwrap(), "photos": 9, "subfolders": true}])
        );
        let uri = format!("/api/folders?path={}", s.photos.display());
        let (_, listing) = call!(app, test::TestRequest::get().uri(&uri));
        let counts: Vec<(&str, u64)> = listing["folders"]
            .as_array()
            .unwrap()
            .iter()
            .map(|f| (f["name"].as_str().unwrap(), f["photos"].as_u64().unwrap()))
            .collect();
        assert_eq!(counts, vec![("even", 5), ("odd", 4)]);
        let (status, body) = call!(app, test::TestRequest::get().uri("/api/folders?path=/etc"));
        assert_eq!(status, StatusCode::NOT_FOUND, "{body}");
        assert!(body["error"].as_str().unwrap().contains("not in a library folder"), "{body}");
    }
}

#[actix_web::test]
async fn duplicates_are_listed_and_can_be_dismissed() {
    for db in test_databases() {
        let s = off(|| setup(db));
        // A half-size copy of the EXIF-rotated photo, saved upright.
        let upright = clipdex::photo::open_rgb(&s.photos.join("even/rotated.jpg"), &Default::default()).unwrap();
        let (w, h) = upright.dimensions();
        image::imageops::resize(&upright, w / 2, h / 2, image::imageops::FilterType::Triangle)
            .save(s.photos.join("odd/copy.png"))
            .unwrap();
        off(|| s.library.index(&|_, _| {}).unwrap());
        let app = service!(&s);
        let (status, body) = call!(app, test::TestRequest::get().uri("/api/duplicates"));
        assert_eq!(status, StatusCode::OK, "{body}");
        let groups = body["groups"].as_array().unwrap();
        assert_eq!(groups.len(), 1, "{body}");
        let paths: Vec<&str> =
            groups[0]["images"].as_array().unwrap().iter().map(|i| i["path"].as_str().unwrap()).collect();
        assert!(paths[0].ends_with("even/rotated.jpg") && paths[1].ends_with("odd/copy.png"), "{body}");
        assert_eq!(groups[0]["keep"], id_of(&s, "even/rotated.jpg"));

        for bad in ["0", "1.5", "x", "-1"] {
            let (status, body) = call!(app, test::TestRequest::get().uri(&format!("/api/duplicates?threshold={bad}")));
            assert_eq!(status, StatusCode::BAD_REQUEST, "{bad}: {body}");
        }
        let (a, b) = (id_of(&s, "even/rotated.jpg"), id_of(&s, "odd/copy.png"));
        for (ids, want) in [
            (serde_json::json!([a]), StatusCode::BAD_REQUEST),
            (serde_json::json!([a, 123456789]), StatusCode::NOT_FOUND),
            (serde_json::json!("1,2"), StatusCode::BAD_REQUEST),
            (serde_json::json!([a, b]), StatusCode::OK),
        ] {
            let req =
                test::TestRequest::post().uri("/api/duplicates/dismiss").set_json(serde_json::json!({ "ids": ids }));
            let (status, body) = call!(app, req);
            assert_eq!(status, want, "{ids}: {body}");
        }
        let (_, body) = call!(app, test::TestRequest::get().uri("/api/duplicates"));
        assert_eq!(body["groups"], serde_json::json!([]), "dismissed");
    }
}

#[actix_web::test]
async fn the_web_ui_is_served_from_the_binary_and_nothing_else_is() {
    for db in test_databases() {
        let s = off(|| setup(db));
        let app = service!(&s);
        for (uri, kind, needle) in [
            ("/", "text/html", "<title>clipdex</title>"),
            ("/app.js", "text/javascript", "/api/search"),
            ("/style.css", "text/css", "#results"),
            ("/favicon.svg", "image/svg+xml", "<svg"),
        ] {
            let response = test::call_service(&app, test::TestRequest::get().uri(uri).to_request()).await;
            assert_eq!(response.status(), StatusCode::OK, "{uri}");
            assert!(response.headers().get("content-type").unwrap().to_str().unwrap().starts_with(kind));
            let body = String::from_utf8(test::read_body(response).await.to_vec()).unwrap();
            assert!(body.contains(needle), "{uri}");
            // Nothing from the internet (an SVG's namespace is a name, not a request).
            let body = body.replace("xmlns=\"http://www.w3.org/2000/svg\"", "");
            assert!(!body.contains("http://") && !body.contains("https://"), "{uri} loads something from outside");
        }
        for uri in
            ["/../Cargo.toml", "/%2e%2e/Cargo.toml", "/web/index.html", "/src/main.rs", "/index.html/../../etc/passwd"]
        {
            let response = test::call_service(&app, test::TestRequest::get().uri(uri).to_request()).await;
            assert_eq!(response.status(), StatusCode::NOT_FOUND, "{uri}");
        }
    }
}

#[actix_web::test]
async fn off_loopback_needs_a_token() {
    use clipdex::server::resolve_bind;
    assert!(resolve_bind("127.0.0.1:0", None).is_ok());
    assert!(resolve_bind("[::1]:0", None).is_ok());
    assert!(resolve_bind("localhost:0", None).is_ok());
    let e = resolve_bind("0.0.0.0:7878", None).unwrap_err().to_string();
    assert!(e.contains("--token"), "{e}");
    assert!(resolve_bind("0.0.0.0:7878", Some("")).is_err());
    assert!(resolve_bind("0.0.0.0:7878", Some("a-token")).is_ok());
    assert!(resolve_bind("no port here", None).is_err());
}

#[actix_web::test]
async fn the_background_indexer_indexes_follows_and_reports() {
    for db in test_databases() {
        let s = off(|| setup(db));
        let options = clipdex::indexer::watch::WatchOptions {
            debounce: std::time::Duration::from_millis(100),
            rescan_every: std::time::Duration::from_secs(1),
        };
        let (indexer, thread) = BackgroundIndexer::start(s.library.clone(), options);
        let wait_for = |what: &dyn Fn(&clipdex::server::IndexerStatus) -> bool| {
            let start = std::time::Instant::now();
            loop {
                let status = indexer.status();
                if what(&status) {
                    return status;
                }
                assert!(start.elapsed().as_secs() < 60, "indexer stuck: {status:?}");
                std::thread::sleep(std::time::Duration::from_millis(50));
            }
        };
        let first = wait_for(&|st| st.passes >= 1);
        assert_eq!(first.last_pass.as_ref().unwrap().unchanged, 9);
        picture(42).save(s.photos.join("odd/new.jpg")).unwrap();
        // A later pass embeds it (passes come every second here, so look at the store, not at
        // whichever pass was last).
        let later =
            wait_for(&|st| st.passes > first.passes && off(|| s.library.store().counts().unwrap().images) == 10);
        assert!(later.last_error.is_none());
        // Searches are answered meanwhile.
        assert_eq!(off(|| s.library.search_text("a photo", 20, &SearchFilter::default()).unwrap().len()), 10);
        indexer.stop();
        thread.join().unwrap();
    }
}

#[actix_web::test]
async fn queries_are_answered_while_the_indexer_writes() {
    for db in test_databases() {
        let s = off(|| setup(db));
        for i in 0..40u32 {
            picture(100 + i).save(s.photos.join(format!("odd/new{i}.jpg"))).unwrap();
        }
        let options = clipdex::indexer::watch::WatchOptions {
            debounce: std::time::Duration::from_millis(100),
            rescan_every: std::time::Duration::from_secs(3600),
        };
        let (indexer, thread) = BackgroundIndexer::start(s.library.clone(), options);
        let state = web::Data::new(AppState::new(s.library.clone(), indexer.clone(), &ServeOptions::default()));
        let app = app!(state);
        let (mut during, mut counts) = (0, Vec::new());
        let start = std::time::Instant::now();
        while indexer.status().passes == 0 {
            assert!(start.elapsed().as_secs() < 120, "the pass never finished");
            let indexing = indexer.status().state == clipdex::server::IndexerState::Indexing;
            let (status, body) = call!(app, test::TestRequest::get().uri("/api/search?q=a%20photo&k=100"));
            assert_eq!(status, StatusCode::OK, "{body}");
            counts.push(ids(&body).len());
            let (status, st) = call!(app, test::TestRequest::get().uri("/api/status"));
            assert_eq!(status, StatusCode::OK);
            if indexing {
                during += 1;
                assert!(st["indexer"]["total"].as_u64().unwrap() >= st["indexer"]["done"].as_u64().unwrap());
            }
        }
        indexer.stop();
        thread.join().unwrap();
        assert!(during > 0, "no query landed during the pass");
        assert!(counts.windows(2).all(|w| w[0] <= w[1]), "results only grow as photos land: {counts:?}");
        assert!(counts[0] >= 9);
        let (_, body) = call!(app, test::TestRequest::get().uri("/api/search?q=a%20photo&k=100"));
        assert_eq!(ids(&body).len(), 49);
    }
}

#[actix_web::test]
async fn serve_refuses_an_open_address_without_a_token_and_answers_on_loopback() {
    use std::io::BufRead;
    for db in test_databases() {
        let s = off(|| setup(db));
        let db = s.db.arg();
        drop(s.library); // the binary opens the database itself
        let bin = env!("CARGO_BIN_EXE_clipdex");
        let out = std::process::Command::new(bin)
            .args(["--db", db.to_str().unwrap(), "--model", &model(), "serve", "--bind", "0.0.0.0:0"])
            .env_remove("CLIPDEX_TOKEN")
            .output()
            .unwrap();
        assert!(!out.status.success());
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains("refusing to serve") && stderr.contains("--token"), "{stderr}");

        let mut child = std::process::Command::new(bin)
            .args(["--db", db.to_str().unwrap(), "--model", &model(), "serve", "--bind", "127.0.0.1:0", "--no-watch"])
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let mut line = String::new();
        std::io::BufReader::new(child.stdout.take().unwrap()).read_line(&mut line).unwrap();
        let url =
            line.split_whitespace().find(|w| w.starts_with("http://")).expect("the address is printed").to_string();
        let status: Value = ureq::get(&format!("{url}api/status")).call().unwrap().into_json().unwrap();
        let results: Value = ureq::get(&format!("{url}api/search?q=cat&k=3")).call().unwrap().into_json().unwrap();
        child.kill().unwrap();
        child.wait().unwrap();
        assert_eq!(status["library"]["images"].as_u64(), Some(9));
        assert_eq!(status["indexer"]["state"], "off");
        assert_eq!(results["results"].as_array().unwrap().len(), 3);
    }
}

#[actix_web::test]
async fn captions_are_shown_searched_and_blended() {
    for db in test_databases() {
        let s = off(|| setup(db));
        let captioner = clipdex::models::blip::BlipCaptioner::load(
            Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/blip/blip-tiny-captioning").to_str().unwrap(),
            &candle_core::Device::Cpu,
        )
        .unwrap();
        let options =
            clipdex::library::CaptionOptions { model: "blip-tiny".into(), prompt: None, beams: 1, max_tokens: 6 };
        let report = off(|| s.library.caption_library(&captioner, &options, &|_, _| {}).unwrap());
        assert_eq!((report.images, report.captioned), (9, 9));
        let app = service!(&s);
        let id = id_of(&s, "even/rotated.jpg");
        let (_, body) = call!(app, test::TestRequest::get().uri(&format!("/api/images/{id}")));
        let caption = body["caption"].as_str().unwrap().to_string();
        assert_eq!(caption, off(|| s.library.store().caption_of(id).unwrap().unwrap().text));

        // in=captions: BM25 results carry their caption; the first shares the query's word.
        let terms = clipdex::query::captions::terms(&caption);
        let word = terms.iter().find(|t| t.chars().all(|c| c.is_ascii_alphanumeric())).unwrap().as_str();
        let (status, body) = call!(app, test::TestRequest::get().uri(&format!("/api/search?q={word}&in=captions")));
        assert_eq!(status, StatusCode::OK, "{body}");
        let expected = off(|| s.library.search_captions(word, 20, &SearchFilter::default()).unwrap());
        assert_eq!(ids(&body), expected.iter().map(|h| h.hit.id).collect::<Vec<_>>());
        let first = body["results"][0]["caption"].as_str().unwrap();
        assert!(clipdex::query::captions::terms(first).iter().any(|w| w == word), "{first} lacks {word}");

        // Text searches on a captioned library are blended unless caption_weight=0.
        let (_, body) = call!(app, test::TestRequest::get().uri(&format!("/api/search?q={word}&k=5")));
        let blended = off(|| s.library.search_blended(word, 5, &SearchFilter::default(), 0.3).unwrap());
        assert_eq!(ids(&body), blended.iter().map(|h| h.hit.id).collect::<Vec<_>>());
        assert!(body["results"][0]["blended"].is_f64());
        let (_, body) = call!(app, test::TestRequest::get().uri(&format!("/api/search?q={word}&k=5&caption_weight=0")));
        let plain = off(|| s.library.search_text(word, 5, &SearchFilter::default()).unwrap());
        assert_eq!(ids(&body), plain.iter().map(|h| h.id).collect::<Vec<_>>());
        assert!(body["results"][0].get("blended").is_none());

        for bad in ["in=pixels&q=x", "in=", "q=x&caption_weight=2", "q=x&caption_weight=nan", "q=x&caption_weight="] {
            let (status, body) = call!(app, test::TestRequest::get().uri(&format!("/api/search?{bad}")));
            assert_eq!(status, StatusCode::BAD_REQUEST, "{bad}: {body}");
            assert!(body["error"].is_string());
        }
    }
}

#[actix_web::test]
async fn without_a_token_only_loopback_host_names_are_answered() {
    for db in test_databases() {
        let s = off(|| setup(db));
        let app = service!(&s);
        let get = |host: &'static str| test::TestRequest::get().uri("/api/status").insert_header(("host", host));
        for host in ["127.0.0.1:7878", "localhost", "localhost:7878", "[::1]:7878", "127.0.0.2", "LOCALHOST:80"] {
            let (status, _) = call!(app, get(host));
            assert_eq!(status, StatusCode::OK, "{host}");
        }
        // A page on another site whose name was re-bound to 127.0.0.1 sends its own name.
        for host in ["evil.example", "evil.example:7878", "127.0.0.1.evil.example", "localhost.evil.example:7878"] {
            let (status, body) = call!(app, get(host));
            assert_error(status, &body, StatusCode::FORBIDDEN, "loopback");
            let response =
                test::call_service(&app, test::TestRequest::get().uri("/").insert_header(("host", host)).to_request())
                    .await;
            assert_eq!(response.status(), StatusCode::FORBIDDEN, "the page too, for {host}");
        }
        // With a token, any name (a server on the LAN is reached by its name).
        let options = ServeOptions { token: Some("t0ken".into()), ..Default::default() };
        let app = service!(&s, &options);
        let (status, _) = call!(
            app,
            test::TestRequest::get()
                .uri("/api/status")
                .insert_header(("host", "nas.local:7878"))
                .insert_header(("authorization", "bearer t0ken"))
        );
        assert_eq!(status, StatusCode::OK, "the scheme is case-insensitive");
    }
}

#[actix_web::test]
async fn cross_site_posts_and_text_bodies_are_refused() {
    for db in test_databases() {
        let s = off(|| setup(db));
        let app = service!(&s);
        let id = id_of(&s, "odd/p1.jpg");
        let body = format!("{{\"labels\": [\"cat\", \"dog\"], \"id\": {id}}}");
        // A cross-site form can send text/plain without a CORS preflight.
        let (status, reply) = call!(
            app,
            test::TestRequest::post()
                .uri("/api/tag")
                .insert_header(("content-type", "text/plain"))
                .set_payload(body.clone())
        );
        assert_error(status, &reply, StatusCode::UNSUPPORTED_MEDIA_TYPE, "application/json");
        let (status, reply) = call!(
            app,
            test::TestRequest::post()
                .uri("/api/tag")
                .insert_header(("content-type", "application/json; charset=utf-8"))
                .set_payload(body.clone())
        );
        assert_eq!(status, StatusCode::OK, "{reply}");
        // A multipart upload posted by a page of another origin.
        let png = std::fs::read(fixture_image("coffee.png")).unwrap();
        let req = upload("/api/search/image", &[("image", Some("q.png"), &png)])
            .insert_header(("host", "127.0.0.1:7878"))
            .insert_header(("origin", "https://evil.example"));
        let (status, reply) = call!(app, req);
        assert_error(status, &reply, StatusCode::FORBIDDEN, "evil.example");
        // The UI's own page posts with its own origin.
        let req = upload("/api/search/image", &[("image", Some("q.png"), &png)])
            .insert_header(("host", "127.0.0.1:7878"))
            .insert_header(("origin", "http://127.0.0.1:7878"));
        let (status, reply) = call!(app, req);
        assert_eq!(status, StatusCode::OK, "{reply}");
    }
}

#[cfg(unix)]
#[actix_web::test]
async fn non_utf8_file_names_are_answered_with_their_exact_bytes() {
    use std::os::unix::ffi::OsStrExt;
    for db in test_databases() {
        let s = off(|| setup(db));
        let name = std::ffi::OsStr::from_bytes(b"caf\xe9\nlatin1.png");
        let path = s.photos.join("odd").join(name);
        picture(77).save(&path).unwrap();
        off(|| s.library.index(&|_, _| {}).unwrap());
        let id = off(|| s.library.store().path_entry(&path).unwrap().unwrap().id);
        let app = service!(&s);
        let (status, body) = call!(app, test::TestRequest::get().uri("/api/search?q=photo&k=20"));
        assert_eq!(status, StatusCode::OK, "{body}");
        let hit =
            body["results"].as_array().unwrap().iter().find(|r| r["id"] == id).expect("the photo is found").clone();
        let exact = clipdex::path_text::from_json(hit["path"].as_str().unwrap(), hit["path_bytes"].as_str()).unwrap();
        assert_eq!(exact, path);
        assert!(
            body["results"].as_array().unwrap().iter().filter(|r| r["id"] != id).all(|r| r.get("path_bytes").is_none())
        );
        let (status, body) = call!(app, test::TestRequest::get().uri(&format!("/api/images/{id}")));
        assert_eq!(status, StatusCode::OK, "{body}");
        assert_eq!(body["paths_bytes"][0], hit["path_bytes"]);
        let response =
            test::call_service(&app, test::TestRequest::get().uri(&format!("/api/images/{id}/file")).to_request())
                .await;
        assert_eq!(response.status(), StatusCode::OK);
        // More like it: found by its id, itself left out.
        let (status, body) = call!(app, test::TestRequest::post().uri(&format!("/api/search/image?id={id}&k=1")));
        assert_eq!((status, body["results"].as_array().map(Vec::len)), (StatusCode::OK, Some(1)), "{body}");
        assert_ne!(body["results"][0]["id"].as_u64(), Some(id), "{body}");
    }
}

#[actix_web::test]
async fn searches_rerank_with_registered_fine_tuned_models_only() {
    for db in test_databases() {
        let s = off(|| setup(db));
        let p16 =
            Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/clip-tiny-p16").to_string_lossy().into_owned();
        let options = ServeOptions { finetuned: vec![("p16".into(), p16)], ..Default::default() };
        let app = service!(&s, &options);
        let (status, body) = call!(app, test::TestRequest::get().uri("/api/status"));
        assert_eq!((status, body["finetuned"].clone()), (StatusCode::OK, serde_json::json!(["p16"])));
        let (status, body) =
            call!(app, test::TestRequest::get().uri("/api/search?q=a%20cat&k=4&rerank=clip:p16&rerank_top=9"));
        assert_eq!(status, StatusCode::OK, "{body}");
        let results = body["results"].as_array().unwrap();
        assert_eq!(results.len(), 4);
        let scores: Vec<f64> = results.iter().map(|r| r["finetuned"].as_f64().unwrap()).collect();
        assert!(scores.windows(2).all(|w| w[0] >= w[1]), "{scores:?}");
        assert!(results.iter().all(|r| r["score"].is_f64()));
        // The same ranking as the CLI's re-ranking through the library.
        let tuned = clipdex::ClipEmbedder::load(
            Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/clip-tiny-p16").to_str().unwrap(),
            &candle_core::Device::Cpu,
        )
        .unwrap();
        let direct = off(|| s.library.search_reranked_with(&tuned, "a cat", (4, 9), &SearchFilter::default()).unwrap());
        let ids: Vec<u64> = direct.iter().map(|r| r.hit.id).collect();
        assert_eq!(ids, self::ids(&body));
        // Paging goes on in the re-ranked order.
        let (_, page2) =
            call!(app, test::TestRequest::get().uri("/api/search?q=a%20cat&k=4&offset=4&rerank=clip:p16&rerank_top=9"));
        let all = off(|| s.library.search_reranked_with(&tuned, "a cat", (8, 9), &SearchFilter::default()).unwrap());
        assert_eq!(self::ids(&page2), all[4..8].iter().map(|r| r.hit.id).collect::<Vec<_>>());
        for (uri, expected, needle) in [
            ("/api/search?q=cat&rerank=clip:other", StatusCode::BAD_REQUEST, "known: p16"),
            ("/api/search?q=cat&rerank=clip:/etc", StatusCode::BAD_REQUEST, "no fine-tuned model"),
            ("/api/search?q=cat&rerank=blip", StatusCode::BAD_REQUEST, "itm or clip:NAME"),
            ("/api/search?q=cat&rerank=", StatusCode::BAD_REQUEST, "rerank must be"),
            ("/api/search?q=cat&rerank=clip:p16&rerank_top=500", StatusCode::BAD_REQUEST, "rerank_top"),
        ] {
            let (status, body) = call!(app, test::TestRequest::get().uri(uri));
            assert_error(status, &body, expected, needle);
        }
    }
}

#[actix_web::test]
async fn a_request_body_that_trickles_in_times_out_with_json() {
    use std::io::{Read, Write};
    for db in test_databases() {
        let s = off(|| setup(db));
        let library = Arc::try_unwrap(s.library).ok().expect("the only handle");
        let options = ServeOptions {
            bind: "127.0.0.1:0".into(),
            watch: false,
            body_timeout: std::time::Duration::from_secs(1),
            ..Default::default()
        };
        let (tx, rx) = std::sync::mpsc::channel();
        // The server runs until the test process ends.
        std::thread::spawn(move || {
            clipdex::server::serve(library, options, |addrs| tx.send(addrs[0]).unwrap()).unwrap();
        });
        let addr = rx.recv_timeout(std::time::Duration::from_secs(30)).unwrap();
        let mut conn = std::net::TcpStream::connect(addr).unwrap();
        conn.set_read_timeout(Some(std::time::Duration::from_secs(20))).unwrap();
        // A JSON body announced as 100 bytes, of which one arrives.
        let head = format!(
            "POST /api/tag HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{{"
        );
        conn.write_all(head.as_bytes()).unwrap();
        let started = std::time::Instant::now();
        let mut reply = Vec::new();
        let mut buf = [0u8; 4096];
        while let Ok(n) = conn.read(&mut buf) {
            if n == 0 {
                break;
            }
            reply.extend_from_slice(&buf[..n]);
            if String::from_utf8_lossy(&reply).contains("}") {
                break;
            }
        }
        let reply = String::from_utf8_lossy(&reply).into_owned();
        assert!(reply.starts_with("HTTP/1.1 408"), "{reply}");
        assert!(reply.contains("{\"error\":\"the request body took longer than 1 s"), "{reply}");
        assert!(started.elapsed() < std::time::Duration::from_secs(10));
        drop(s.tmp);
    }
}

fn blip_options() -> ServeOptions {
    let blip = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/blip");
    let name = |dir: &str| blip.join(dir).to_string_lossy().into_owned();
    ServeOptions {
        blip: clipdex::server::BlipModels {
            caption: name("blip-tiny-captioning"),
            vqa: name("blip-tiny-vqa"),
            itm: name("blip-tiny-itm"),
        },
        ..Default::default()
    }
}

#[actix_web::test]
async fn questions_captions_and_matching_on_an_indexed_photo() {
    use clipdex::models::blip::{BlipAnswerer, BlipMatcher};
    for db in test_databases() {
        let s = off(|| setup(db));
        let options = blip_options();
        let app = service!(&s, &options);
        let id = id_of(&s, "even/rotated.jpg");
        let image = off(|| s.library.open_indexed(id, None).unwrap());
        let device = candle_core::Device::Cpu;

        // The same answer and scores as the models give directly (the CLI's `ask` and `match`).
        let question = "what is in the picture?";
        let req = test::TestRequest::post()
            .uri(&format!("/api/images/{id}/ask"))
            .set_json(serde_json::json!({"question": question}));
        let (status, body) = call!(app, req);
        assert_eq!(status, StatusCode::OK, "{body}");
        let want = BlipAnswerer::load(&options.blip.vqa, &device).unwrap().answer(&image, question, 3, 10).unwrap();
        assert_eq!(body["answer"], want.text.as_str(), "{body}");
        assert_eq!(body["question"], question);

        let texts = ["a cat", "a red bus", "a cat on a sofa"];
        let req = test::TestRequest::post()
            .uri(&format!("/api/images/{id}/match"))
            .set_json(serde_json::json!({"texts": texts}));
        let (status, body) = call!(app, req);
        assert_eq!(status, StatusCode::OK, "{body}");
        let want = BlipMatcher::load(&options.blip.itm, &device).unwrap().score(&image, &texts).unwrap();
        let matches = body["matches"].as_array().unwrap();
        assert_eq!(matches.len(), 3);
        for ((m, w), t) in matches.iter().zip(&want).zip(texts) {
            assert_eq!(m["text"], t);
            assert!((m["itm"].as_f64().unwrap() - f64::from(w.itm)).abs() < 1e-6, "{m}");
            assert!((m["itc"].as_f64().unwrap() - f64::from(w.itc)).abs() < 1e-6, "{m}");
        }

        // A caption made on request is stored with the photo.
        let (status, body) = call!(app, test::TestRequest::post().uri(&format!("/api/images/{id}/caption")));
        assert_eq!(status, StatusCode::OK, "{body}");
        let caption = body["caption"].as_str().unwrap().to_string();
        let (_, details) = call!(app, test::TestRequest::get().uri(&format!("/api/images/{id}")));
        assert_eq!(details["caption"], caption.as_str());

        // Bad requests.
        let many: Vec<String> = (0..33).map(|i| format!("text {i}")).collect();
        let long = "x".repeat(501);
        for (uri, body, want) in [
            (format!("/api/images/{id}/ask"), serde_json::json!({"question": "  "}), StatusCode::BAD_REQUEST),
            (format!("/api/images/{id}/ask"), serde_json::json!({"question": long}), StatusCode::BAD_REQUEST),
            (format!("/api/images/{id}/ask"), serde_json::json!({}), StatusCode::BAD_REQUEST),
            ("/api/images/999999999/ask".to_string(), serde_json::json!({"question": "why?"}), StatusCode::NOT_FOUND),
            ("/api/images/x/ask".to_string(), serde_json::json!({"question": "why?"}), StatusCode::BAD_REQUEST),
            (format!("/api/images/{id}/match"), serde_json::json!({"texts": []}), StatusCode::BAD_REQUEST),
            (format!("/api/images/{id}/match"), serde_json::json!({"texts": many}), StatusCode::BAD_REQUEST),
            (format!("/api/images/{id}/match"), serde_json::json!({"texts": ["ok", ""]}), StatusCode::BAD_REQUEST),
        ] {
            let (status, answer) = call!(app, test::TestRequest::post().uri(&uri).set_json(&body));
            assert_eq!(status, want, "{uri} {body}: {answer}");
            assert!(answer["error"].is_string(), "{answer}");
        }

        // A model that cannot be loaded: 503 with the reason, and the rest of the API unaffected.
        let broken = ServeOptions {
            blip: clipdex::server::BlipModels {
                vqa: s.tmp.path().join("no-such-model").to_string_lossy().into(),
                ..blip_options().blip
            },
            ..Default::default()
        };
        let app = service!(&s, &broken);
        let req = test::TestRequest::post()
            .uri(&format!("/api/images/{id}/ask"))
            .set_json(serde_json::json!({"question": "why?"}));
        let (status, body) = call!(app, req);
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
        assert!(body["error"].as_str().unwrap().contains("no-such-model"), "{body}");
        let (status, _) = call!(app, test::TestRequest::get().uri("/api/search?q=cat"));
        assert_eq!(status, StatusCode::OK);
    }
}

#[actix_web::test]
async fn masks_regions_crops_and_itm_reranking() {
    for db in test_databases() {
        let s = off(|| setup(db));
        let options = blip_options();
        let app = service!(&s, &options);
        let id = id_of(&s, "even/rotated.jpg");
        let (w, h) = off(|| s.library.open_indexed(id, None).unwrap().dimensions());

        let response = test::call_service(
            &app,
            test::TestRequest::get().uri(&format!("/api/images/{id}/segment?prompt=a%20cat")).to_request(),
        )
        .await;
        assert_eq!(response.status(), StatusCode::OK);
        assert_eq!(response.headers().get("content-type").unwrap(), "image/png");
        let png = image::load_from_memory(&test::read_body(response).await).unwrap();
        assert_eq!((png.width(), png.height()), (w, h), "the mask has the upright photo's size");

        let uri = format!("/api/images/{id}/segment?prompt=a%20cat&prompt=a%20sofa&format=json&threshold=0.3");
        let (status, body) = call!(app, test::TestRequest::get().uri(&uri));
        assert_eq!(status, StatusCode::OK, "{body}");
        assert_eq!((body["width"].as_u64(), body["height"].as_u64()), (Some(w.into()), Some(h.into())));
        let prompts = body["prompts"].as_array().unwrap();
        assert_eq!(prompts.len(), 2);
        assert_eq!(prompts[1]["prompt"], "a sofa");
        assert!(prompts.iter().all(|p| p["regions"].is_array()));

        let nine = (0..9).map(|i| format!("prompt=p{i}")).collect::<Vec<_>>().join("&");
        for bad in [
            format!("/api/images/{id}/segment"),
            format!("/api/images/{id}/segment?prompt="),
            format!("/api/images/{id}/segment?{nine}"),
            format!("/api/images/{id}/segment?prompt=a&format=gif"),
            format!("/api/images/{id}/segment?prompt=a&threshold=2"),
            "/api/crops".to_string(),
            "/api/crops?q=cat&k=0".to_string(),
            "/api/crops?q=cat&candidates=1000".to_string(),
            "/api/search?q=cat&rerank=blip".to_string(),
        ] {
            let (status, body) = call!(app, test::TestRequest::get().uri(&bad));
            assert_eq!(status, StatusCode::BAD_REQUEST, "{bad}: {body}");
        }

        let (status, body) = call!(app, test::TestRequest::get().uri("/api/crops?q=a%20cat&k=3&threshold=0.2"));
        assert_eq!(status, StatusCode::OK, "{body}");
        let crops = body["crops"].as_array().unwrap();
        assert!(crops.len() <= 3);
        let p: Vec<f64> = crops.iter().map(|c| c["mean_probability"].as_f64().unwrap()).collect();
        assert!(p.windows(2).all(|w| w[0] >= w[1]), "most probable first: {p:?}");
        assert!(crops.iter().all(|c| c["box"].as_array().unwrap().len() == 4 && c["path"].is_string()));

        // ITM re-ranking: the first page of the re-scored top 9, ordered by match probability.
        let (status, body) =
            call!(app, test::TestRequest::get().uri("/api/search?q=a%20cat&rerank=itm&rerank_top=9&k=5"));
        assert_eq!(status, StatusCode::OK, "{body}");
        let results = body["results"].as_array().unwrap();
        assert_eq!(results.len(), 5);
        let itm: Vec<f64> = results.iter().map(|r| r["itm"].as_f64().unwrap()).collect();
        assert!(itm.windows(2).all(|w| w[0] >= w[1]), "{itm:?}");
        assert!(results.iter().all(|r| r["itc"].is_number()));
        let (_, next) =
            call!(app, test::TestRequest::get().uri("/api/search?q=a%20cat&rerank=itm&rerank_top=9&k=5&offset=5"));
        let more = next["results"].as_array().unwrap();
        assert_eq!(more.len(), 4, "the rest of the nine");
        assert!(more[0]["itm"].as_f64().unwrap() <= itm[4]);
        // ITM re-scores at most the best 100: a page past them is empty, one across them is cut.
        let (status, past) = call!(app, test::TestRequest::get().uri("/api/search?q=cat&rerank=itm&offset=100&k=5"));
        assert_eq!((status, &past["results"]), (StatusCode::OK, &serde_json::json!([])));
        let (status, _) =
            call!(app, test::TestRequest::get().uri("/api/search?q=cat&rerank=itm&rerank_top=150&k=60&offset=50"));
        assert_eq!(status, StatusCode::OK);
    }
}

/// A video in the library: searches say where in it (`kind=`), thumbnails of any moment, and
/// the file streamed by byte ranges as video players ask for it.
#[actix_web::test]
async fn videos_are_searched_by_moment_and_served_by_byte_ranges() {
    if !common::video::have_ffmpeg() {
        return;
    }
    for db in test_databases() {
        let s = off(|| setup(db));
        let clip = s.photos.join("odd/cut.mp4");
        common::video::cut_between(&fixture_image("astronaut.jpg"), &fixture_image("coffee.png"), &clip);
        let report = off(|| s.library.index(&|_, _| {}).unwrap());
        assert_eq!((report.videos, report.frames), (1, 4));
        let video = id_of(&s, "odd/cut.mp4");
        let photo = id_of(&s, "even/p0.jpg");
        let app = service!(&s);

        let (status, body) = call!(app, test::TestRequest::get().uri("/api/search?q=a%20cup&k=5&kind=video"));
        assert_eq!(status, StatusCode::OK, "{body}");
        assert_eq!(ids(&body), [video]);
        let hit = &body["results"][0];
        assert_eq!((&hit["kind"], hit["duration"].as_f64().map(f64::round)), (&"video".into(), Some(6.0)));
        assert!([0.0, 2.0, 3.0, 5.0].contains(&hit["time"].as_f64().unwrap()), "{hit}");
        let (_, body) = call!(app, test::TestRequest::get().uri("/api/search?q=a%20cup&k=20&kind=photo"));
        assert_eq!(ids(&body).len(), 9);
        assert!(body["results"].as_array().unwrap().iter().all(|r| r["kind"] == "photo" && r.get("time").is_none()));
        let (_, body) = call!(app, test::TestRequest::get().uri("/api/search?q=a%20cup&k=20"));
        assert_eq!(ids(&body).len(), 10, "photos and the video, once");
        let (status, body) = call!(app, test::TestRequest::get().uri("/api/search?q=a%20cup&kind=films"));
        assert_error(status, &body, StatusCode::BAD_REQUEST, "photo, video or all");

        // Thumbnails: the poster frame, any moment, and no moment of a photo.
        for uri in [format!("/api/images/{video}/thumb?size=64"), format!("/api/images/{video}/thumb?size=64&time=4.5")]
        {
            let response = test::call_service(&app, test::TestRequest::get().uri(&uri).to_request()).await;
            assert_eq!(response.status(), StatusCode::OK, "{uri}");
            let jpeg = test::read_body(response).await;
            let thumb = image::load_from_memory(&jpeg).unwrap().to_rgb8();
            assert_eq!(thumb.dimensions(), (64, 48), "{uri}");
        }
        let response = test::call_service(
            &app,
            test::TestRequest::get().uri(&format!("/api/images/{video}/thumb?size=64&time=4.5")).to_request(),
        )
        .await;
        let at = image::load_from_memory(&test::read_body(response).await).unwrap().to_rgb8();
        let coffee =
            image::open(fixture_image("coffee.png")).unwrap().resize_exact(64, 48, image::imageops::Triangle).to_rgb8();
        let astronaut = image::open(fixture_image("astronaut.jpg"))
            .unwrap()
            .resize_exact(64, 48, image::imageops::Triangle)
            .to_rgb8();
        let distance = |a: &image::RgbImage, b: &image::RgbImage| -> u64 {
            a.as_raw().iter().zip(b.as_raw()).map(|(x, y)| u64::from(x.abs_diff(*y))).sum()
        };
        assert!(distance(&at, &coffee) < distance(&at, &astronaut), "4.5 s shows the second photo");
        for (uri, needle) in [
            (format!("/api/images/{photo}/thumb?time=1"), "photo"),
            (format!("/api/images/{video}/thumb?time=soon"), "seconds"),
            (format!("/api/images/{video}/thumb?time=-1"), "seconds"),
        ] {
            let (status, body) = call!(app, test::TestRequest::get().uri(&uri));
            assert_error(status, &body, StatusCode::BAD_REQUEST, needle);
        }

        // The file: whole, or the byte range asked for.
        let bytes = std::fs::read(&clip).unwrap();
        let len = bytes.len();
        let get = |range: Option<&str>| {
            let mut req = test::TestRequest::get().uri(&format!("/api/images/{video}/file"));
            if let Some(r) = range {
                req = req.insert_header(("range", r.to_string()));
            }
            req.to_request()
        };
        // (Range header, status, Content-Range, the bytes that come back)
        type Case<'a> = (Option<&'a str>, StatusCode, Option<String>, std::ops::Range<usize>);
        let cases: [Case; 6] = [
            (None, StatusCode::OK, None, 0..len),
            (Some("bytes=100-199"), StatusCode::PARTIAL_CONTENT, Some(format!("bytes 100-199/{len}")), 100..200),
            (
                Some("bytes=1000-"),
                StatusCode::PARTIAL_CONTENT,
                Some(format!("bytes 1000-{}/{len}", len - 1)),
                1000..len,
            ),
            (
                Some("bytes=-50"),
                StatusCode::PARTIAL_CONTENT,
                Some(format!("bytes {}-{}/{len}", len - 50, len - 1)),
                len - 50..len,
            ),
            (Some("bytes=0-10,20-30"), StatusCode::OK, None, 0..len),
            (Some("bytes=10-5"), StatusCode::OK, None, 0..len),
        ];
        for (range, status, content_range, expected) in cases {
            let response = test::call_service(&app, get(range)).await;
            assert_eq!(response.status(), status, "{range:?}");
            assert_eq!(response.headers().get("accept-ranges").unwrap(), "bytes");
            assert_eq!(response.headers().get("content-type").unwrap(), "video/mp4");
            let header = response.headers().get("content-range").map(|v| v.to_str().unwrap().to_string());
            assert_eq!(header, content_range, "{range:?}");
            assert!(test::read_body(response).await == bytes[expected], "{range:?}: the bytes asked for");
        }
        let response = test::call_service(&app, get(Some(&format!("bytes={len}-")))).await;
        assert_eq!(response.status(), StatusCode::RANGE_NOT_SATISFIABLE);
        assert_eq!(response.headers().get("content-range").unwrap().to_str().unwrap(), format!("bytes */{len}"));
        drop(s.tmp);
    }
}

#[actix_web::test]
async fn every_json_body_refuses_another_content_type_with_415_as_documented() {
    for db in test_databases() {
        let s = off(|| setup(db));
        let app = service!(&s);
        let id = id_of(&s, "odd/p1.jpg");
        let (_, doc) = call!(app, test::TestRequest::get().uri("/api/openapi.json"));
        let mut checked = Vec::new();
        for (path, methods) in doc["paths"].as_object().unwrap() {
            for (method, operation) in methods.as_object().unwrap() {
                if operation["requestBody"]["content"].get("application/json").is_none() {
                    continue;
                }
                assert!(operation["responses"].get("415").is_some(), "{method} {path} does not document 415");
                let uri = path.replace("{id}", &id.to_string());
                let req = match method.as_str() {
                    "post" => test::TestRequest::post(),
                    "delete" => test::TestRequest::delete(),
                    "put" => test::TestRequest::put(),
                    "patch" => test::TestRequest::patch(),
                    other => panic!("{other} {path}"),
                }
                .uri(&uri)
                .insert_header(("content-type", "text/plain"))
                .set_payload(r#"{"path": "/tmp", "ids": [1, 2], "question": "what?", "texts": ["a cat"], "labels": ["cat"], "id": 1, "args": ["stats"], "cwd": "/"}"#);
                let (status, body) = call!(app, req);
                assert_eq!(status, StatusCode::UNSUPPORTED_MEDIA_TYPE, "{method} {path}: {body}");
                assert!(body["error"].as_str().unwrap().contains("application/json"), "{body}");
                checked.push(format!("{method} {path}"));
            }
        }
        assert!(checked.contains(&"post /api/roots".to_string()), "{checked:?}");
        assert!(checked.contains(&"put /api/settings".to_string()), "{checked:?}");
    }
}

#[actix_web::test]
async fn the_openapi_document_lists_the_registered_fine_tuned_models() {
    for db in test_databases() {
        let s = off(|| setup(db));
        let rerank_schema = |doc: &Value| {
            doc["paths"]["/api/search"]["get"]["parameters"]
                .as_array()
                .unwrap()
                .iter()
                .find(|p| p["name"] == "rerank")
                .unwrap()["schema"]
                .clone()
        };
        let options = ServeOptions { finetuned: vec![("p16".into(), "/models/p16".into())], ..Default::default() };
        let app = service!(&s, &options);
        let (_, doc) = call!(app, test::TestRequest::get().uri("/api/openapi.json"));
        assert_eq!(rerank_schema(&doc), serde_json::json!({"type": "string", "enum": ["itm", "clip:p16"]}));
        // A name the document leaves out is the one the server refuses.
        let (status, body) = call!(app, test::TestRequest::get().uri("/api/search?q=cat&rerank=clip:other"));
        assert_error(status, &body, StatusCode::BAD_REQUEST, "known: p16");
        let app = service!(&s);
        let (_, doc) = call!(app, test::TestRequest::get().uri("/api/openapi.json"));
        assert_eq!(rerank_schema(&doc), serde_json::json!({"type": "string", "enum": ["itm"]}));
    }
}

#[actix_web::test]
async fn a_request_without_a_host_header_is_refused() {
    use std::io::{Read, Write};
    let s = off(|| setup(test_databases().remove(0)));
    let library = Arc::try_unwrap(s.library).ok().expect("the only handle");
    let options = ServeOptions { bind: "127.0.0.1:0".into(), watch: false, ..Default::default() };
    let (tx, rx) = std::sync::mpsc::channel();
    // The server runs until the test process ends.
    std::thread::spawn(move || {
        clipdex::server::serve(library, options, |addrs| tx.send(addrs[0]).unwrap()).unwrap();
    });
    let addr = rx.recv_timeout(std::time::Duration::from_secs(30)).unwrap();
    let ask = |head: &str| {
        let mut conn = std::net::TcpStream::connect(addr).unwrap();
        conn.set_read_timeout(Some(std::time::Duration::from_secs(20))).unwrap();
        conn.write_all(head.as_bytes()).unwrap();
        let mut reply = Vec::new();
        let _ = conn.read_to_end(&mut reply);
        String::from_utf8_lossy(&reply).into_owned()
    };
    for path in ["/api/status", "/"] {
        let reply = ask(&format!("GET {path} HTTP/1.0\r\n\r\n"));
        assert!(reply.starts_with("HTTP/1.0 403") || reply.starts_with("HTTP/1.1 403"), "{path}: {reply}");
        assert!(reply.contains("no Host header"), "{reply}");
    }
    let reply = ask(&format!("GET /api/status HTTP/1.0\r\nHost: {addr}\r\n\r\n"));
    assert!(reply.starts_with("HTTP/1.0 200") || reply.starts_with("HTTP/1.1 200"), "{reply}");
    drop(s.tmp);
}

/// The entries of a zip answer: name → bytes.
fn unzip(bytes: &[u8]) -> std::collections::BTreeMap<String, Vec<u8>> {
    use std::io::Read;
    let mut zip = zip::ZipArchive::new(std::io::Cursor::new(bytes)).unwrap();
    (0..zip.len())
        .map(|i| {
            let mut entry = zip.by_index(i).unwrap();
            let mut data = Vec::new();
            entry.read_to_end(&mut data).unwrap();
            (entry.name().unwrap().to_string(), data)
        })
        .collect()
}

#[actix_web::test]
async fn chosen_photos_download_as_one_zip_of_their_originals() {
    for db in test_databases() {
        let s = off(|| setup(db));
        let app = service!(&s);
        // Two photos with the same file name in different folders get distinct names.
        picture(42).save(s.photos.join("odd/rotated.jpg")).unwrap();
        off(|| s.library.index(&|_, _| {}).unwrap());
        let (a, b, c) = (id_of(&s, "even/p2.jpg"), id_of(&s, "even/rotated.jpg"), id_of(&s, "odd/rotated.jpg"));
        for req in [
            test::TestRequest::get().uri(&format!("/api/download?ids={a},{b},{c},{a}")),
            test::TestRequest::post().uri("/api/download").set_json(serde_json::json!({ "ids": [a, b, c] })),
        ] {
            let response = test::call_service(&app, req.to_request()).await;
            assert_eq!(response.status(), StatusCode::OK);
            assert_eq!(response.headers().get("content-type").unwrap(), "application/zip");
            let disposition = response.headers().get("content-disposition").unwrap().to_str().unwrap().to_string();
            assert_eq!(disposition, "attachment; filename=\"clipdex-3-photos.zip\"");
            let entries = unzip(&test::read_body(response).await);
            let names: Vec<&str> = entries.keys().map(String::as_str).collect();
            assert_eq!(names, ["p2.jpg", "rotated (2).jpg", "rotated.jpg"]);
            assert_eq!(entries["p2.jpg"], std::fs::read(s.photos.join("even/p2.jpg")).unwrap());
            assert_eq!(entries["rotated.jpg"], std::fs::read(s.photos.join("even/rotated.jpg")).unwrap());
            assert_eq!(entries["rotated (2).jpg"], std::fs::read(s.photos.join("odd/rotated.jpg")).unwrap());
        }
        // Bad requests are refused before any byte of a zip.
        let too_many: Vec<u64> = (0..1001).collect();
        for (req, expected, needle) in [
            (test::TestRequest::get().uri("/api/download"), StatusCode::BAD_REQUEST, "name the photos"),
            (test::TestRequest::get().uri("/api/download?ids=1,x"), StatusCode::BAD_REQUEST, "not an image id"),
            (test::TestRequest::get().uri("/api/download?ids=%2B1"), StatusCode::BAD_REQUEST, "not an image id"),
            (test::TestRequest::get().uri("/api/download?ids=+1"), StatusCode::BAD_REQUEST, "not an image id"),
            (
                test::TestRequest::post().uri("/api/download").set_json(serde_json::json!({ "ids": [] })),
                StatusCode::BAD_REQUEST,
                "name the photos",
            ),
            (
                test::TestRequest::post().uri("/api/download").set_json(serde_json::json!({ "ids": too_many })),
                StatusCode::BAD_REQUEST,
                "at most 1000",
            ),
        ] {
            let (status, body) = call!(app, req);
            assert_error(status, &body, expected, needle);
        }
    }
}

#[cfg(unix)]
#[actix_web::test]
async fn a_download_never_holds_a_file_outside_the_library_or_one_not_asked_for() {
    for db in test_databases() {
        let s = off(|| setup(db));
        let app = service!(&s);
        let (kept, linked, deleted, late) =
            (id_of(&s, "even/p0.jpg"), id_of(&s, "odd/p3.jpg"), id_of(&s, "odd/p5.jpg"), id_of(&s, "odd/p7.jpg"));
        // An id the library does not know refuses the whole download.
        let (status, body) = call!(app, test::TestRequest::get().uri(&format!("/api/download?ids={kept},424242")));
        assert_error(status, &body, StatusCode::NOT_FOUND, "no image with id 424242");
        // A photo replaced by a link to a secret outside the library, and one deleted.
        let secret = s.tmp.path().join("secret.txt");
        std::fs::write(&secret, b"not a photo of yours").unwrap();
        std::fs::remove_file(s.photos.join("odd/p3.jpg")).unwrap();
        std::os::unix::fs::symlink(&secret, s.photos.join("odd/p3.jpg")).unwrap();
        std::fs::remove_file(s.photos.join("odd/p5.jpg")).unwrap();
        let (status, body) = call!(app, test::TestRequest::get().uri(&format!("/api/download?ids={linked},{deleted}")));
        assert_error(status, &body, StatusCode::NOT_FOUND, "none of the photos can be read");
        // With a readable photo beside them, the zip holds it and says what it left out.
        let response = test::call_service(
            &app,
            test::TestRequest::post()
                .uri("/api/download")
                .set_json(serde_json::json!({ "ids": [kept, linked, deleted, late] }))
                .to_request(),
        )
        .await;
        assert_eq!(response.status(), StatusCode::OK);
        // A photo deleted after the download was answered, while the zip streams.
        std::fs::remove_file(s.photos.join("odd/p7.jpg")).unwrap();
        let bytes = test::read_body(response).await;
        assert!(!bytes.windows(b"not a photo".len()).any(|w| w == b"not a photo"), "the secret leaked");
        let entries = unzip(&bytes);
        let names: Vec<&str> = entries.keys().map(String::as_str).collect();
        assert_eq!(names, ["NOT INCLUDED.txt", "p0.jpg"]);
        assert_eq!(entries["p0.jpg"], std::fs::read(s.photos.join("even/p0.jpg")).unwrap());
        let note = String::from_utf8(entries["NOT INCLUDED.txt"].clone()).unwrap();
        for expected in [format!("#{linked}: "), format!("#{deleted}: "), "p7.jpg: ".to_string()] {
            assert!(note.contains(&expected), "{expected:?} not in {note}");
        }
        assert!(note.contains("changed since") && note.contains("gone"), "{note}");
    }
}
