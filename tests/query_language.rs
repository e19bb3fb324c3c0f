//! The query language end to end: every filter means the same on every backend (the folder
//! store checks records, PostgreSQL runs SQL predicates), a negative term demotes what it
//! names, relevance cut-offs and orders hold, and the CLI and the API answer one query string
//! with the same results.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use actix_web::http::StatusCode;
use actix_web::test as actix_test;
use actix_web::{App, web};
use clipdex::library::QueryOptions;
use clipdex::query::SearchFilter;
use clipdex::query::relevance::SortOrder;
use clipdex::server::{AppState, BackgroundIndexer, ServeOptions, configure};
use clipdex::store::{ImageRecord, Tag};
use clipdex::{Library, LibraryConfig};
use serde_json::Value;

mod common;
use common::backends::test_databases;
use common::picture;

fn model() -> String {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/clip-tiny-p32").to_string_lossy().into_owned()
}

fn options(k: usize) -> QueryOptions {
    QueryOptions { k, allow_paths: true, ..Default::default() }
}

/// A deterministic unit vector.
fn unit(seed: u64, dim: usize) -> Vec<f32> {
    let mut x = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    let v: Vec<f32> = (0..dim)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x % 10_000) as f32 / 10_000.0 - 0.5
        })
        .collect();
    let n = v.iter().map(|a| a * a).sum::<f32>().sqrt();
    v.into_iter().map(|a| a / n).collect()
}

/// 60 stored images with cameras, sizes, folders, extensions, dates and tags, then each filter
/// of the language searched with an indexed photo as the term: the results are exactly the
/// images the filter describes, best first, on the folder store and on PostgreSQL.
#[test]
fn every_filter_means_the_same_on_every_backend() {
    const N: usize = 60;
    struct Item {
        path: PathBuf,
        record: ImageRecord,
        tags: Vec<&'static str>,
    }
    let items: Vec<Item> = (0..N)
        .map(|i| {
            let folder = if i % 2 == 0 { "Holidays" } else { "Work" };
            let year = if i % 3 == 0 { "2024" } else { "2025" };
            let ext = ["jpg", "PNG", "heic", "jpeg"][i % 4];
            let (width, height) = match i % 3 {
                0 => (4000 + i as u32, 3000),
                1 => (1000, 1500 + i as u32),
                _ => (2000, 2000),
            };
            let camera = match i % 5 {
                0 => Some("FUJIFILM X-T3".to_string()),
                1 => Some("Canon EOS R5".to_string()),
                2 => Some("Fujifilm X100V".to_string()),
                _ => None,
            };
            let mut tags = Vec::new();
            if i % 4 == 0 {
                tags.push("dog");
            }
            if i % 7 == 0 {
                tags.push("beach");
            }
            Item {
                path: PathBuf::from(format!("/lib/{folder}/{year}/p{i:02}.{ext}")),
                record: ImageRecord {
                    hash: format!("{i:064x}"),
                    size: 1000 + i as u64,
                    width,
                    height,
                    modified: 1_600_000_000,
                    taken: Some(1_700_000_000 + i as i64 * 86_400 * 10),
                    camera,
                    // GeoNames' positions of Munich, Lisbon and Sydney, and none.
                    gps: [Some((48.1374, 11.5755)), Some((38.7251, -9.1498)), Some((-33.8678, 151.2073)), None][i % 4],
                    lens: None,
                    video: None,
                    motion_video: None,
                    motion_video_problem: None,
                },
                tags,
            }
        })
        .collect();
    type Passes = Box<dyn Fn(&Item) -> bool>;
    let lower_ext = |it: &Item| it.path.extension().unwrap().to_string_lossy().to_lowercase();
    let cases: Vec<(&str, Passes)> = vec![
        ("tag:dog", Box::new(|it| it.tags.contains(&"dog"))),
        ("tag:dog tag:beach", Box::new(|it| it.tags.contains(&"dog") && it.tags.contains(&"beach"))),
        ("in:Holidays", Box::new(|it| it.path.starts_with("/lib/Holidays"))),
        ("in:/lib/Work/2024", Box::new(|it| it.path.starts_with("/lib/Work/2024"))),
        ("in:Holidays/2025", Box::new(|it| it.path.starts_with("/lib/Holidays/2025"))),
        ("in:2024 in:Work", Box::new(|it| it.path.starts_with("/lib/Work/2024"))),
        ("in:olidays", Box::new(|_| false)),
        ("camera:fuji", Box::new(|it| it.record.camera.as_deref().is_some_and(|c| c.to_lowercase().contains("fuji")))),
        ("camera:\"eos r\"", Box::new(|it| it.record.camera.as_deref() == Some("Canon EOS R5"))),
        ("camera:50%", Box::new(|_| false)),
        ("ext:png", Box::new(move |it| lower_ext(it) == "png")),
        ("ext:jpg,jpeg", Box::new(move |it| matches!(lower_ext(it).as_str(), "jpg" | "jpeg"))),
        ("orientation:portrait", Box::new(|it| it.record.height > it.record.width)),
        ("orientation:landscape", Box::new(|it| it.record.width > it.record.height)),
        ("orientation:square", Box::new(|it| it.record.width == it.record.height)),
        ("width>4020", Box::new(|it| it.record.width > 4020)),
        ("height<=1530 width>=1000", Box::new(|it| it.record.height <= 1530 && it.record.width >= 1000)),
        ("width=2000", Box::new(|it| it.record.width == 2000)),
        ("after:2024-01 before:2024-03", {
            let (a, b) =
                (clipdex::query::parse_date("2024-01").unwrap(), clipdex::query::parse_date("2024-03").unwrap());
            Box::new(move |it| it.record.taken.is_some_and(|t| t >= a && t < b))
        }),
        ("place:München", Box::new(|it| it.record.gps.is_some_and(|g| g.0 > 48.0))),
        ("place:munich", Box::new(|it| it.record.gps.is_some_and(|g| g.0 > 48.0))),
        ("place:Portugal", Box::new(|it| it.record.gps.is_some_and(|g| g.1 < 0.0))),
        ("place:Germany place:Lisbon", Box::new(|_| false)),
        ("near:-33.87,151.21,5", Box::new(|it| it.record.gps.is_some_and(|g| g.0 < 0.0))),
        ("near:45,0,1500", Box::new(|it| it.record.gps.is_some_and(|g| g.0 > 0.0))),
        (
            "near:45,0,1500 ext:png",
            Box::new(move |it| it.record.gps.is_some_and(|g| g.0 > 0.0) && lower_ext(it) == "png"),
        ),
        (
            "tag:dog camera:fuji ext:heic,jpg in:Holidays orientation:landscape",
            Box::new(move |it| {
                it.tags.contains(&"dog")
                    && it.record.camera.as_deref().is_some_and(|c| c.to_lowercase().contains("fuji"))
                    && matches!(lower_ext(it).as_str(), "heic" | "jpg")
                    && it.path.starts_with("/lib/Holidays")
                    && it.record.width > it.record.height
            }),
        ),
    ];
    for db in test_databases() {
        let library = Library::open(LibraryConfig::new(db.location.clone(), model())).unwrap();
        let dim = library.embed_text("x").unwrap().len();
        let store = library.store();
        store.set_model(&model(), dim).unwrap();
        let mut ids = Vec::new();
        for (i, it) in items.iter().enumerate() {
            let id = store.commit_image(&it.path, 1, 1, &it.record, &unit(i as u64 + 1, dim)).unwrap();
            let tags: Vec<Tag> =
                it.tags.iter().map(|t| Tag { label: t.to_string(), probability: 0.9, cosine: 0.3 }).collect();
            if !tags.is_empty() {
                store.set_tags(id, "v", &tags).unwrap();
            }
            ids.push(id);
        }
        let probe = ids[5];
        for (filter, passes) in &cases {
            let query = format!("#{probe} {filter}");
            let hits = library.search_query(&query, &SearchFilter::default(), &options(N)).unwrap();
            let mut found: Vec<u64> = hits.iter().map(|h| h.hit.id).collect();
            let mut wanted: Vec<u64> = (0..N).filter(|&i| passes(&items[i])).map(|i| ids[i]).collect();
            assert!(hits.windows(2).all(|w| w[0].hit.score >= w[1].hit.score - 1e-6), "{}: {query}: order", db.backend);
            for h in &hits {
                let i = ids.iter().position(|&id| id == h.hit.id).unwrap();
                assert_eq!(h.hit.path, items[i].path, "{}: {query}: the file shown", db.backend);
            }
            found.sort_unstable();
            wanted.sort_unstable();
            assert_eq!(found, wanted, "{}: {query}", db.backend);
        }
        // The options combine with the query: both must hold.
        let filter = SearchFilter { under: Some("/lib/Work".into()), ..Default::default() };
        let hits = library.search_query(&format!("#{probe} tag:dog"), &filter, &options(N)).unwrap();
        assert!(hits.iter().all(|h| h.hit.path.starts_with("/lib/Work")), "{}", db.backend);
        let expected = (0..N).filter(|&i| items[i].tags.contains(&"dog") && i % 2 == 1).count();
        assert_eq!(hits.len(), expected, "{}", db.backend);
        // A tag-only query lists the tag's photos, its probability as relevance.
        let tagged = library.search_query("tag:beach", &SearchFilter::default(), &options(N)).unwrap();
        assert_eq!(tagged.len(), (0..N).filter(|i| i % 7 == 0).count(), "{}", db.backend);
        assert!(tagged.iter().all(|h| (h.relevance - 90.0).abs() < 1e-3), "{}", db.backend);
        // Filters alone and no tag: every photo that passes, newest first.
        let listed =
            library.search_query("near:45,0,1500 ext:png,heic", &SearchFilter::default(), &options(N)).unwrap();
        let mut wanted: Vec<usize> = (0..N)
            .filter(|&i| {
                items[i].record.gps.is_some_and(|g| g.0 > 0.0)
                    && matches!(lower_ext(&items[i]).as_str(), "png" | "heic")
            })
            .collect();
        wanted.sort_by_key(|&i| std::cmp::Reverse(items[i].record.taken));
        assert!(!wanted.is_empty());
        assert_eq!(
            listed.iter().map(|h| h.hit.id).collect::<Vec<_>>(),
            wanted.iter().map(|&i| ids[i]).collect::<Vec<_>>(),
            "{}",
            db.backend
        );
        assert!(listed.iter().all(|h| h.relevance == 100.0 && h.place.is_some()), "{}", db.backend);
        let first = library.search_query("ext:png", &SearchFilter::default(), &options(3)).unwrap();
        assert_eq!(first.len(), 3, "{}: k of them", db.backend);
        // Nothing at all: nothing to rank by, said so.
        let e = library.search_query("", &SearchFilter::default(), &options(5)).unwrap_err();
        assert!(e.to_string().contains("nothing to look for"), "{e}");
        // Sorted by date: the relevant ones, oldest first; newest first; by name.
        let by_date = |sort| {
            let o = QueryOptions { sort, ..options(10) };
            library.search_query(&format!("#{probe} in:Holidays"), &SearchFilter::default(), &o).unwrap()
        };
        let best: Vec<u64> = {
            let mut v: Vec<u64> = by_date(SortOrder::Score).iter().map(|h| h.hit.id).collect();
            v.sort_unstable();
            v
        };
        let taken = |id: u64| items[ids.iter().position(|&x| x == id).unwrap()].record.taken.unwrap();
        let oldest = by_date(SortOrder::Date);
        let newest = by_date(SortOrder::NewestFirst);
        assert_eq!(oldest.len(), 10);
        assert!(oldest.windows(2).all(|w| taken(w[0].hit.id) <= taken(w[1].hit.id)), "{}", db.backend);
        assert!(newest.windows(2).all(|w| taken(w[0].hit.id) >= taken(w[1].hit.id)), "{}", db.backend);
        // 30 photos are in Holidays: the sort pool is all of them, so the order picks the
        // oldest 10 of the 30 (not of the 10 best).
        let holidays_oldest: Vec<u64> = (0..N).filter(|i| i % 2 == 0).take(10).map(|i| ids[i]).collect();
        assert_eq!(oldest.iter().map(|h| h.hit.id).collect::<Vec<_>>(), holidays_oldest, "{}", db.backend);
        assert_eq!(best.len(), 10);
        let names = by_date(SortOrder::Name);
        assert!(names.windows(2).all(|w| w[0].hit.path.file_name() <= w[1].hit.path.file_name()));
    }
}

/// A cut-off keeps exactly the results at or above it; the relevance is monotone in the score.
#[test]
fn min_score_keeps_what_reaches_it_and_relevance_follows_the_score() {
    for s in indexed_setups(12) {
        let all = s.library.search_query("a photo", &SearchFilter::default(), &options(12)).unwrap();
        assert_eq!(all.len(), 12);
        assert!(all.windows(2).all(|w| w[0].relevance >= w[1].relevance), "relevance follows the score");
        assert!(all.iter().all(|h| (0.0..=100.0).contains(&h.relevance)));
        let calibration = s.library.calibration().unwrap().unwrap();
        for h in &all {
            assert!((h.relevance - calibration.relevance(h.hit.score)).abs() < 1e-4);
        }
        let middle = all[5].relevance;
        let cut = QueryOptions { min_relevance: Some(middle), ..options(12) };
        let kept = s.library.search_query("a photo", &SearchFilter::default(), &cut).unwrap();
        let expected: Vec<u64> = all.iter().filter(|h| h.relevance >= middle).map(|h| h.hit.id).collect();
        assert_eq!(kept.iter().map(|h| h.hit.id).collect::<Vec<_>>(), expected);
        assert!(kept.len() >= 6 && kept.len() < 12 || all[11].relevance >= middle);
        // --sort date orders what passes the cut-off: the oldest 3 of the results at or above
        // it, not the oldest 3 photos, nor the best 3 put in date order. (The photos' dates, their
        // files' times, run against their names, so neither order is the ranking's.)
        let date = |id: u64| s.library.store().image(id).unwrap().unwrap().date();
        let mut passing: Vec<(i64, u64)> =
            all.iter().filter(|h| h.relevance >= middle).map(|h| (date(h.hit.id), h.hit.id)).collect();
        passing.sort_unstable();
        let oldest = QueryOptions { min_relevance: Some(middle), sort: SortOrder::Date, ..options(3) };
        let found = s.library.search_query("a photo", &SearchFilter::default(), &oldest).unwrap();
        assert_eq!(
            found.iter().map(|h| h.hit.id).collect::<Vec<_>>(),
            passing.iter().take(3).map(|p| p.1).collect::<Vec<_>>(),
            "{}",
            s.db.backend
        );
        assert!(found.iter().all(|h| h.relevance >= middle));
        let newest = QueryOptions { min_relevance: Some(middle), sort: SortOrder::NewestFirst, ..options(3) };
        let found = s.library.search_query("a photo", &SearchFilter::default(), &newest).unwrap();
        assert_eq!(
            found.iter().map(|h| h.hit.id).collect::<Vec<_>>(),
            passing.iter().rev().take(3).map(|p| p.1).collect::<Vec<_>>(),
            "{}",
            s.db.backend
        );
    }
}

struct Indexed {
    _tmp: tempfile::TempDir,
    library: Arc<Library>,
    photos: PathBuf,
    db: common::backends::TestDb,
}

fn indexed_setups(n: u32) -> Vec<Indexed> {
    test_databases().into_iter().map(|db| indexed(db, n)).collect()
}

fn indexed(db: common::backends::TestDb, n: u32) -> Indexed {
    let tmp = tempfile::tempdir().unwrap();
    let photos = tmp.path().join("photos");
    for i in 0..n {
        let dir = photos.join(if i % 2 == 0 { "even" } else { "odd" });
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join(format!("p{i:02}.{}", if i % 3 == 0 { "png" } else { "jpg" }));
        picture(i).save(&path).unwrap();
        // Dated a day apart, the last name the oldest.
        let time = std::time::UNIX_EPOCH + std::time::Duration::from_secs(1_600_000_000 + u64::from(n - i) * 86_400);
        std::fs::File::options().write(true).open(&path).unwrap().set_modified(time).unwrap();
    }
    let photos = std::fs::canonicalize(&photos).unwrap();
    let library = Library::open(LibraryConfig::new(db.location.clone(), model())).unwrap();
    library.add_root(&photos).unwrap();
    assert_eq!(library.index(&|_, _| {}).unwrap().embedded, n as u64);
    Indexed { _tmp: tmp, library: Arc::new(library), photos, db }
}

/// Rank of `id` in `hits` (0 best).
fn rank(hits: &[clipdex::library::RankedHit], id: u64) -> usize {
    hits.iter().position(|h| h.hit.id == id).unwrap()
}

/// A negative term pushes the photos it matches down: the fixture photos the model finds
/// closest to the subtracted text, and the subtracted photo itself, rank lower with it than
/// without it.
#[test]
fn a_negative_term_demotes_the_photos_it_matches() {
    for s in indexed_setups(12) {
        let lib = &s.library;
        let plain = lib.search_query("a photo", &SearchFilter::default(), &options(12)).unwrap();
        // The photos the model finds closest to "stripes": the three best of a search for it.
        let stripes = lib.search_query("stripes", &SearchFilter::default(), &options(3)).unwrap();
        let without = lib.search_query("a photo -stripes", &SearchFilter::default(), &options(12)).unwrap();
        let mean_rank = |hits: &[clipdex::library::RankedHit]| {
            stripes.iter().map(|m| rank(hits, m.hit.id)).sum::<usize>() as f64 / stripes.len() as f64
        };
        let (before, after) = (mean_rank(&plain), mean_rank(&without));
        eprintln!("{}: the 3 photos nearest to \"stripes\": mean rank {before:.2} → {after:.2}", s.db.backend);
        assert!(after > before, "{}: {before} → {after}", s.db.backend);
        // NOT "phrase" is the same subtraction.
        let not = lib.search_query("a photo NOT \"stripes\"", &SearchFilter::default(), &options(12)).unwrap();
        assert_eq!(
            not.iter().map(|h| h.hit.id).collect::<Vec<_>>(),
            without.iter().map(|h| h.hit.id).collect::<Vec<_>>()
        );
        // Subtracting a photo pushes it down.
        let top = plain[0].hit.id;
        let minus = lib.search_query(&format!("a photo -#{top}"), &SearchFilter::default(), &options(12)).unwrap();
        // (The tiny model's photo vectors lie close together, so "last" is too strong a claim.)
        assert!(rank(&minus, top) > 0, "{}", s.db.backend);
        // And the arithmetic is the library's: 2·"a photo" + #top equals the vector computed by hand.
        let text = lib.embed_text("a photo").unwrap();
        let stored = lib.stored_vector(top).unwrap();
        let parsed = clipdex::query::syntax::parse(&format!("2:a photo + #{top}")).unwrap();
        let q = lib.query_vector(&parsed, None, false, &|t| lib.embed_text(t)).unwrap();
        let norm = |v: &[f32]| v.iter().map(|x| x * x).sum::<f32>().sqrt();
        let by_hand: Vec<f32> =
            text.iter().zip(&stored).map(|(a, b)| 2.0 * a / norm(&text) + b / norm(&stored)).collect();
        let n = norm(&by_hand);
        assert!(q.iter().zip(&by_hand).all(|(a, b)| (a - b / n).abs() < 1e-5));
        // A path is refused where paths are not allowed (the server), with its column.
        let image = s.photos.join("even/p00.png");
        let parsed = clipdex::query::syntax::parse(&format!("dog + {}", image.display())).unwrap();
        let e = lib.query_vector(&parsed, None, false, &|t| lib.embed_text(t)).unwrap_err();
        assert!(e.to_string().contains("column 7") && e.to_string().contains("#ID"), "{e}");
        // Allowed in the CLI: the same as the indexed photo's own vector.
        let by_path = lib.query_vector(&parsed, None, true, &|t| lib.embed_text(t)).unwrap();
        let id = lib.resolve_image(&image).unwrap();
        let by_id = clipdex::query::syntax::parse(&format!("dog + #{id}")).unwrap();
        let by_id = lib.query_vector(&by_id, None, true, &|t| lib.embed_text(t)).unwrap();
        assert!(by_path.iter().zip(&by_id).all(|(a, b)| (a - b).abs() < 1e-4));
    }
}

macro_rules! app {
    ($state:expr) => {
        actix_test::init_service(
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

macro_rules! call {
    ($app:expr, $req:expr) => {{
        let response = actix_test::call_service(&$app, $req.to_request()).await;
        let status = response.status();
        let body = actix_test::read_body(response).await;
        (status, serde_json::from_slice::<Value>(&body).unwrap_or(Value::Null))
    }};
}

fn ids_and_relevance(body: &Value) -> Vec<(u64, String, i64)> {
    body["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r["id"].as_u64().unwrap(),
                r["path"].as_str().unwrap().to_string(),
                (r["relevance"].as_f64().unwrap() * 1000.0).round() as i64,
            )
        })
        .collect()
}

/// One query string, the same results through the API and the CLI (ids, files, relevance), and
/// the same error with its column.
#[actix_web::test]
async fn the_cli_and_the_api_answer_a_query_alike() {
    let db = test_databases().into_iter().next().unwrap();
    let s = indexed(db, 12);
    let even = s.photos.join("even");
    let some = s.library.search_query("a photo", &SearchFilter::default(), &options(4)).unwrap()[3].hit.id;
    let queries = [
        "a photo -stripes".to_string(),
        format!("\"2:red and green\" + #{some} - blue"),
        format!("\"2:red and green\" + #{some} - blue tag:none"),
        "a photo ext:png".to_string(),
        format!("a photo in:{} width>=160 orientation:landscape", even.display()),
        "a photo in:odd".to_string(),
        // Filters alone: what passes, newest first.
        "ext:png".to_string(),
    ];
    let mut api = Vec::new();
    let api_facets: Value;
    {
        let state =
            web::Data::new(AppState::new(s.library.clone(), BackgroundIndexer::off(), &ServeOptions::default()));
        let app = app!(state);
        for q in &queries {
            let uri = format!("/api/search?k=12&sort=-date&q={}", urlencoding(q));
            let (status, body) = call!(app, actix_test::TestRequest::get().uri(&uri));
            assert_eq!(status, StatusCode::OK, "{q}: {body}");
            api.push(ids_and_relevance(&body));
        }
        let (status, body) = call!(app, actix_test::TestRequest::get().uri("/api/search?q=colour%3Ared"));
        assert_eq!(status, StatusCode::BAD_REQUEST);
        assert!(body["error"].as_str().unwrap().contains("column 1"), "{body}");
        let (status, body) =
            call!(app, actix_test::TestRequest::get().uri(&format!("/api/search?q={}", urlencoding("dog + ./x.jpg"))));
        assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
        let (status, body) = call!(app, actix_test::TestRequest::get().uri("/api/search?q=a+photo&min_score=101"));
        assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
        let (status, body) = call!(app, actix_test::TestRequest::get().uri("/api/search?q=a+photo&sort=newest"));
        assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
        // min_score: what is left reaches it.
        let (_, body) = call!(app, actix_test::TestRequest::get().uri("/api/search?q=a+photo&k=12&min_score=40"));
        assert!(ids_and_relevance(&body).iter().all(|r| r.2 >= 40_000), "{body}");
        // Facets count what the query matched: every PNG, whatever k.
        let (status, body) = call!(
            app,
            actix_test::TestRequest::get().uri("/api/search?q=a+photo+ext%3Apng&k=1&facets=year,tag,camera,place")
        );
        assert_eq!(status, StatusCode::OK, "{body}");
        assert_eq!(body["results"].as_array().unwrap().len(), 1);
        let pngs = (0..12).filter(|i| i % 3 == 0).count() as u64;
        let years = body["facets"]["year"].as_array().unwrap();
        assert_eq!(years.iter().map(|y| y["count"].as_u64().unwrap()).sum::<u64>(), pngs, "{body}");
        assert_eq!(body["facets"]["camera"], serde_json::json!([]), "{body}");
        assert_eq!(body["facets"]["place"], serde_json::json!([]), "{body}");
        api_facets = body["facets"].clone();
        // No photo has GPS: no place.
        let (status, body) = call!(app, actix_test::TestRequest::get().uri("/api/places"));
        assert_eq!(status, StatusCode::OK, "{body}");
        assert_eq!(body, serde_json::json!({"places": [], "located": 0, "unplaced": 0}));
        let (status, body) = call!(app, actix_test::TestRequest::get().uri("/api/search?q=a+photo&facets=colour"));
        assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
        assert!(body["error"].as_str().unwrap().contains("year, place, camera or tag"), "{body}");
    }
    let Ok(library) = Arc::try_unwrap(s.library) else { panic!("the library is still shared") };
    drop(library);
    for (q, from_api) in queries.iter().zip(&api) {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_clipdex"))
            .arg("--db")
            .arg(s.db.arg())
            .args(["search", q, "-k", "12", "--sort", "-date", "--caption-weight", "0", "--json"])
            .output()
            .unwrap();
        assert!(out.status.success(), "{q}: {}", String::from_utf8_lossy(&out.stderr));
        let body: Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(&ids_and_relevance(&body), from_api, "{q}");
        assert!(!from_api.is_empty() || q.contains("tag:none"), "{q}");
    }
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_clipdex"))
        .arg("--db")
        .arg(s.db.arg())
        .args(["search", "a photo ext:png", "-k", "1", "--facets", "year,tag,camera,place", "--json"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let body: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(body["facets"], api_facets, "the CLI's facets are the API's");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_clipdex"))
        .arg("--db")
        .arg(s.db.arg())
        .args(["search", "colour:red"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("column 1") && err.contains("unknown key \"colour\""), "{err}");
}

/// Percent-encodes a query parameter.
fn urlencoding(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}
