//! BLIP on an indexed library through the binary (`search --rerank itm`, library captions), on
//! every backend.

use std::ffi::{OsStr, OsString};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_json::Value;

mod common;
use common::backends::{TestDb, test_databases};

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

fn clipdex(db: &OsStr, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_clipdex"))
        .arg("--db")
        .arg(db)
        .args(["--model", fixtures().join("clip-tiny-p32").to_str().unwrap()])
        .args(["--itm-model", fixtures().join("blip/blip-tiny-itm").to_str().unwrap()])
        .args(["--caption-model", fixtures().join("blip/blip-tiny-captioning").to_str().unwrap()])
        .args(args)
        .output()
        .unwrap()
}

fn ok_json(out: Output) -> Value {
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).unwrap()
}

/// A library of the three photos the ITM goldens score, in `db`.
fn library(tmp: &Path, db: &TestDb) -> (OsString, PathBuf) {
    let photos = tmp.join("photos");
    std::fs::create_dir_all(&photos).unwrap();
    for name in ["astronaut.jpg", "coffee.png", "chelsea_exif6.jpg"] {
        std::fs::copy(fixtures().join("images").join(name), photos.join(name)).unwrap();
    }
    let db = db.arg();
    assert!(clipdex(&db, &["add", photos.to_str().unwrap()]).status.success());
    assert!(clipdex(&db, &["index"]).status.success());
    (db, photos)
}

fn itm_golden(text: &str) -> Vec<(String, f64)> {
    let golden: Value =
        serde_json::from_str(&std::fs::read_to_string(fixtures().join("blip/blip-tiny-itm.golden.json")).unwrap())
            .unwrap();
    let t = golden["texts"].as_array().unwrap().iter().position(|x| x == text).unwrap();
    golden["cases"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| (c["image"].as_str().unwrap().to_string(), c["itm"][t].as_f64().unwrap()))
        .collect()
}

fn file_name(r: &Value) -> String {
    Path::new(r["path"].as_str().unwrap()).file_name().unwrap().to_string_lossy().into_owned()
}

#[test]
fn rerank_orders_clips_results_by_itm() {
    for test_db in test_databases() {
        let tmp = tempfile::tempdir().unwrap();
        let (db, photos) = library(tmp.path(), &test_db);
        let text = "a cup of coffee";
        let plain = ok_json(clipdex(&db, &["search", text, "-k", "3", "--json"]));
        let clip_scores: Vec<(String, f64)> =
            plain["results"].as_array().unwrap().iter().map(|r| (file_name(r), r["score"].as_f64().unwrap())).collect();

        let doc = ok_json(clipdex(&db, &["search", text, "-k", "3", "--rerank", "itm", "--json"]));
        let results = doc["results"].as_array().unwrap();
        assert_eq!(results.len(), 3);
        let golden = itm_golden(text);
        let mut expected = golden.clone();
        expected.sort_by(|a, b| b.1.total_cmp(&a.1));
        for (r, (name, itm)) in results.iter().zip(&expected) {
            assert_eq!(&file_name(r), name, "{doc}");
            // Photos this small are decoded at full size, so the scores are the reference's.
            assert!((r["itm"].as_f64().unwrap() - itm).abs() < 1e-4, "{name}: {} vs {itm}", r["itm"]);
            assert!(r["itc"].is_f64());
            // `score` stays CLIP's cosine.
            let clip = clip_scores.iter().find(|(n, _)| n == name).unwrap().1;
            assert!((r["score"].as_f64().unwrap() - clip).abs() < 1e-6);
        }
        // The re-ranked order is not CLIP's here, so the re-ranking did something.
        let clip_order: Vec<&String> = clip_scores.iter().map(|(n, _)| n).collect();
        let itm_order: Vec<String> = results.iter().map(file_name).collect();
        assert_ne!(clip_order, itm_order.iter().collect::<Vec<_>>());

        // -k smaller than --rerank-top: the best k of the re-ranked top.
        let doc = ok_json(clipdex(&db, &["search", text, "-k", "1", "--rerank", "itm", "--rerank-top", "3", "--json"]));
        assert_eq!(file_name(&doc["results"][0]), expected[0].0);
        // --rerank-top 1 re-scores only CLIP's first result.
        let doc = ok_json(clipdex(&db, &["search", text, "-k", "1", "--rerank", "itm", "--rerank-top", "1", "--json"]));
        assert_eq!(file_name(&doc["results"][0]), clip_scores[0].0);

        // A photo deleted since indexing keeps its place at the end, unscored.
        std::fs::remove_file(photos.join(&expected[0].0)).unwrap();
        let doc = ok_json(clipdex(&db, &["search", text, "-k", "3", "--rerank", "itm", "--json"]));
        let results = doc["results"].as_array().unwrap();
        assert_eq!(file_name(&results[2]), expected[0].0);
        assert!(results[2]["itm"].is_null() && results[0]["itm"].is_f64());

        // Needs a text; not with --crops; a wrong model is a clear error.
        assert!(!clipdex(&db, &["search", "--tag", "x", "--rerank", "itm"]).status.success());
        assert!(!clipdex(&db, &["search", text, "--rerank", "itm", "--crops"]).status.success());
        let out = Command::new(env!("CARGO_BIN_EXE_clipdex"))
            .arg("--db")
            .arg(&db)
            .args(["--model", fixtures().join("clip-tiny-p32").to_str().unwrap()])
            .args(["--itm-model", "/no/such", "search", text, "--rerank", "itm"])
            .output()
            .unwrap();
        assert!(!out.status.success() && String::from_utf8_lossy(&out.stderr).contains("/no/such"));
    }
}

fn caption_golden(key: &str) -> String {
    let golden: Value = serde_json::from_str(
        &std::fs::read_to_string(fixtures().join("blip/blip-tiny-captioning.golden.json")).unwrap(),
    )
    .unwrap();
    let case = golden["cases"].as_array().unwrap().iter().find(|c| c["key"] == key).unwrap();
    case["text"].as_str().unwrap().to_string()
}

fn ids_by_name(db: &OsStr) -> Vec<(String, u64)> {
    let doc = ok_json(clipdex(db, &["search", "x", "-k", "100", "--caption-weight", "0", "--json"]));
    doc["results"].as_array().unwrap().iter().map(|r| (file_name(r), r["id"].as_u64().unwrap())).collect()
}

#[test]
fn library_captions_are_stored_incremental_shown_and_searchable() {
    for test_db in test_databases() {
        let tmp = tempfile::tempdir().unwrap();
        let (db, photos) = library(tmp.path(), &test_db);
        let prompted =
            ["caption", "--library", "--prompt", "a picture of", "--beams", "3", "--max-tokens", "12", "--json"];
        let report = ok_json(clipdex(&db, &prompted));
        assert_eq!(report, serde_json::json!({"images": 3, "captioned": 3, "unchanged": 0, "failed": 0}));

        // Stored captions are the reference's, shown by `show` (text and JSON).
        for (name, id) in ids_by_name(&db) {
            let shown = ok_json(clipdex(&db, &["show", &id.to_string(), "--json"]));
            assert_eq!(shown["caption"], caption_golden(&format!("{name}/prompt/3")), "{name}");
            assert_eq!(shown["id"], id);
            assert!(shown["paths"][0].as_str().unwrap().ends_with(&name));
            let text = clipdex(&db, &["show", &id.to_string()]);
            assert!(String::from_utf8_lossy(&text.stdout).contains(&caption_golden(&format!("{name}/prompt/3"))));
        }

        // Incremental: nothing to do a second time; other settings redo every caption.
        let report = ok_json(clipdex(&db, &prompted));
        assert_eq!((report["captioned"].as_u64(), report["unchanged"].as_u64()), (Some(0), Some(3)));
        let greedy = ["caption", "--library", "--beams", "1", "--max-tokens", "12", "--json"];
        let report = ok_json(clipdex(&db, &greedy));
        assert_eq!(report["captioned"], 3);
        let coffee = ids_by_name(&db).into_iter().find(|(n, _)| n == "coffee.png").unwrap().1;
        let shown = ok_json(clipdex(&db, &["show", &coffee.to_string(), "--json"]));
        assert_eq!(shown["caption"], caption_golden("coffee.png/plain/1"));

        // A new photo: `index` captions it with the remembered settings, and only it. A deleted
        // one takes its caption with it.
        std::fs::copy(fixtures().join("images/rocket.webp"), photos.join("rocket.webp")).unwrap();
        let indexed = ok_json(clipdex(&db, &["index", "--json"]));
        assert_eq!(indexed["captioned"], 1, "{indexed}");
        let report = ok_json(clipdex(&db, &greedy));
        assert_eq!(report, serde_json::json!({"images": 4, "captioned": 0, "unchanged": 4, "failed": 0}));
        std::fs::remove_file(photos.join("astronaut.jpg")).unwrap();
        assert!(clipdex(&db, &["index"]).status.success());
        let stats = ok_json(clipdex(&db, &["stats", "--json"]));
        assert_eq!((stats["images"].as_u64(), stats["captioned"].as_u64()), (Some(3), Some(3)));
        let schema = if test_db.backend == "sled" {
            clipdex::store::SCHEMA_VERSION
        } else {
            clipdex::store::postgres::SCHEMA_VERSION
        };
        assert_eq!(stats["schema_version"], schema);

        // Search by caption: coffee.png's greedy caption is one word repeated ("misses ...").
        let word = caption_golden("coffee.png/plain/1").split(' ').next().unwrap().to_string();
        let doc = ok_json(clipdex(&db, &["search", &word, "--in", "captions", "--json"]));
        let results = doc["results"].as_array().unwrap();
        assert_eq!(file_name(&results[0]), "coffee.png", "{doc}");
        assert_eq!(results[0]["caption"], caption_golden("coffee.png/plain/1"));
        assert!(results[0]["score"].as_f64().unwrap() > 0.0);
        // Only captions sharing a word are found; filters apply.
        assert!(results.iter().all(|r| r["caption"].as_str().unwrap().split(' ').any(|w| w == word)));
        let elsewhere = tmp.path().join("elsewhere");
        std::fs::create_dir_all(&elsewhere).unwrap();
        let doc = ok_json(clipdex(
            &db,
            &["search", &word, "--in", "captions", "--under", elsewhere.to_str().unwrap(), "--json"],
        ));
        assert!(doc["results"].as_array().unwrap().is_empty());
        assert!(!clipdex(&db, &["search", "--tag", "x", "--in", "captions"]).status.success());

        // Blended by default on a captioned library: every result has both scores; the caption
        // match is ranked first at weight 1 and CLIP's order is kept at weight 0.
        let plain = ok_json(clipdex(&db, &["search", &word, "-k", "3", "--caption-weight", "0", "--json"]));
        assert!(plain["results"][0].get("blended").is_none());
        let blended = ok_json(clipdex(&db, &["search", &word, "-k", "3", "--json"]));
        let rows = blended["results"].as_array().unwrap();
        assert!(rows.iter().all(|r| r["blended"].is_f64() && r.get("caption_score").is_some()));
        let clip_score = |name: &str| {
            plain["results"].as_array().unwrap().iter().find(|r| file_name(r) == name).unwrap()["score"]
                .as_f64()
                .unwrap()
        };
        for r in rows {
            assert!((r["score"].as_f64().unwrap() - clip_score(&file_name(r))).abs() < 1e-6, "score stays CLIP's");
        }
        let captions_first = ok_json(clipdex(&db, &["search", &word, "-k", "3", "--caption-weight", "1", "--json"]));
        assert_eq!(file_name(&captions_first["results"][0]), "coffee.png");
    }
}

#[test]
fn an_interrupted_library_captioning_resumes_where_it_stopped() {
    for test_db in test_databases() {
        let tmp = tempfile::tempdir().unwrap();
        library(tmp.path(), &test_db);
        let mut config =
            clipdex::LibraryConfig::new(test_db.location.clone(), fixtures().join("clip-tiny-p32").to_str().unwrap());
        config.load_graph = false;
        let library = clipdex::Library::open(config).unwrap();
        let captioner = clipdex::models::blip::BlipCaptioner::load(
            fixtures().join("blip/blip-tiny-captioning").to_str().unwrap(),
            &candle_core::Device::Cpu,
        )
        .unwrap();
        let options = clipdex::library::CaptionOptions { model: "tiny".into(), prompt: None, beams: 1, max_tokens: 8 };
        // Interrupted after the second caption (a panic in the progress callback, as a crash would).
        let interrupted = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            library
                .caption_library(&captioner, &options, &|done, _| {
                    if done == 2 {
                        panic!("interrupted");
                    }
                })
                .unwrap()
        }));
        assert!(interrupted.is_err());
        assert_eq!(library.stats().unwrap().counts.captioned, 2);
        let report = library.caption_library(&captioner, &options, &|_, _| {}).unwrap();
        assert_eq!((report.images, report.captioned, report.unchanged), (3, 1, 2));
    }
}

/// `caption --library` switches captioning on for the library: `index` captions what it adds,
/// `serve` captions new photos and makes the UI's thumbnails in the background (its status
/// shows the stages), and `caption --library --off` switches it off again.
#[test]
fn captioning_and_thumbnails_keep_up_with_new_photos() {
    for test_db in test_databases() {
        let tmp = tempfile::tempdir().unwrap();
        let (db, photos) = library(tmp.path(), &test_db);
        let first = ok_json(clipdex(&db, &["caption", "--library", "--beams", "1", "--max-tokens", "5", "--json"]));
        assert_eq!(first["captioned"], 3, "{first}");

        // `index` captions the new photo with the remembered settings.
        std::fs::copy(fixtures().join("images/rocket.webp"), photos.join("rocket.webp")).unwrap();
        let report = ok_json(clipdex(&db, &["index", "--json"]));
        assert_eq!((report["embedded"].as_u64(), report["captioned"].as_u64()), (Some(1), Some(1)), "{report}");
        let rocket = ok_json(clipdex(&db, &["search", "x", "-k", "4", "--json"]))["results"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| file_name(r) == "rocket.webp")
            .unwrap()["id"]
            .to_string();
        assert!(ok_json(clipdex(&db, &["show", &rocket, "--json"]))["caption"].is_string());

        // `serve`: a photo added while it runs gets its caption and thumbnails in the background.
        let mut command = Command::new(env!("CARGO_BIN_EXE_clipdex"));
        command.arg("--db").arg(&db).args(["--model", fixtures().join("clip-tiny-p32").to_str().unwrap()]).args([
            "serve",
            "--bind",
            "127.0.0.1:0",
            "--debounce-ms",
            "100",
        ]);
        let (server, url) = common::start_server(command);
        std::fs::copy(fixtures().join("images/camera_gray.png"), photos.join("camera.png")).unwrap();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(120);
        let status = loop {
            let status: Value = ureq::get(&format!("{url}/api/status")).call().unwrap().into_json().unwrap();
            let stages = &status["stages"];
            let thumbs = &stages["thumbnails"];
            if status["library"]["images"] == 5
                && stages["captioning"]["done"] == 5
                && thumbs.is_object()
                && thumbs["done"] == thumbs["total"]
                && thumbs["total"] == 5
            {
                break status;
            }
            assert!(std::time::Instant::now() < deadline, "{status}");
            std::thread::sleep(std::time::Duration::from_millis(200));
        };
        assert_eq!(status["stages"]["captioning"]["total"], 5, "{status}");
        assert!(status["stages"]["tagging"].is_null(), "auto-tagging is off: {status}");
        for size in ["256", "1024"] {
            assert_eq!(
                std::fs::read_dir(test_db.location.local_dir().join("thumbs").join(size)).unwrap().count(),
                5,
                "{size}"
            );
        }
        // Through the server (it holds the library): the new photo has its caption.
        let found = ok_json(clipdex(&db, &["search", "x", "-k", "5", "--json"]));
        let camera = found["results"].as_array().unwrap().iter().find(|r| file_name(r) == "camera.png").unwrap()["id"]
            .to_string();
        assert!(ok_json(clipdex(&db, &["show", &camera, "--json"]))["caption"].is_string());
        drop(server);

        // Off: new photos are indexed but not captioned.
        let off = ok_json(clipdex(&db, &["caption", "--library", "--off", "--json"]));
        assert_eq!(off["captioning"], "off");
        std::fs::copy(fixtures().join("images/chelsea_small.bmp"), photos.join("cat.bmp")).unwrap();
        let report = ok_json(clipdex(&db, &["index", "--json"]));
        assert_eq!((report["embedded"].as_u64(), report["captioned"].as_u64()), (Some(1), Some(0)), "{report}");
    }
}
