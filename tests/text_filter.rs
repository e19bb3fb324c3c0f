//! `text:` in the query language: the words read in photos (by the real PP-OCRv6 small model,
//! fetched by tools/fetch_ocr_models.sh) as a filter, through the CLI and `/api/search?q=` on
//! every backend: CLIP's ranking restricted to the photos whose text matches, a filter-only
//! list, `-text:` leaving photos out, phrases, several values that must all match, case folded;
//! and, before any text is read, an error saying how to turn reading on. Without the models
//! the test says so and passes, unless `CI` is set.

use std::ffi::OsStr;
use std::io::{Read, Write};
use std::path::Path;
use std::process::{Command, Output};

use serde_json::Value;

mod common;
use common::backends::test_databases;
use common::{fixtures, picture};

fn clipdex(db: &OsStr, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_clipdex"))
        .arg("--db")
        .arg(db)
        .args(["--model", fixtures().join("clip-tiny-p32").to_str().unwrap()])
        .args(args)
        .env_remove("CLIPDEX_OCR_MODEL")
        .output()
        .unwrap()
}

fn names(results: &Value) -> Vec<String> {
    let mut names: Vec<String> = results["results"]
        .as_array()
        .unwrap_or_else(|| panic!("{results}"))
        .iter()
        .map(|r| Path::new(r["path"].as_str().unwrap()).file_name().unwrap().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

/// A `GET` of `path` from the server at `base` (`http://127.0.0.1:PORT`): status and JSON body.
fn get(base: &str, path: &str) -> (u16, Value) {
    let address = base.trim_start_matches("http://");
    let mut conn = std::net::TcpStream::connect(address).unwrap();
    write!(conn, "GET {path} HTTP/1.0\r\nHost: {address}\r\n\r\n").unwrap();
    let mut response = String::new();
    conn.read_to_string(&mut response).unwrap();
    let status = response.split_whitespace().nth(1).unwrap().parse().unwrap();
    let body = response.split_once("\r\n\r\n").map_or("", |(_, b)| b);
    (status, serde_json::from_str(body).unwrap_or_else(|e| panic!("{e}: {response}")))
}

fn encoded(q: &str) -> String {
    q.bytes().map(|b| if b.is_ascii_alphanumeric() { (b as char).to_string() } else { format!("%{b:02X}") }).collect()
}

#[test]
fn text_filters_keep_the_photos_whose_words_match() {
    let Some(models) = common::ocr_models("v6") else { return };
    for db in test_databases() {
        let tmp = tempfile::tempdir().unwrap();
        let photos = tmp.path().join("photos");
        std::fs::create_dir_all(&photos).unwrap();
        for name in ["receipt.png", "sign.jpg", "photo_caption.jpg"] {
            std::fs::copy(fixtures().join("ocr").join(name), photos.join(name)).unwrap();
        }
        for seed in 0..3 {
            picture(seed).save(photos.join(format!("plain-{seed}.png"))).unwrap();
        }
        let backend = db.backend;
        let db = db.arg();
        assert!(clipdex(&db, &["add", photos.to_str().unwrap()]).status.success());
        assert!(clipdex(&db, &["index"]).status.success());

        // No text read and no model to read it: the error says how to turn reading on.
        let out = clipdex(&db, &["search", "--json", "dog text:menu"]);
        assert!(!out.status.success(), "{backend}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains("config set ocr_model"), "{backend}: {stderr}");

        // Reading turned on, nothing read yet: an empty result says so, and how to read.
        let set = clipdex(&db, &["config", "set", "ocr_model", models.to_str().unwrap()]);
        assert!(set.status.success(), "{}", String::from_utf8_lossy(&set.stderr));
        let out = clipdex(&db, &["search", "text:48213"]);
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success(), "{backend}: {}", String::from_utf8_lossy(&out.stderr));
        assert!(stdout.contains("no text has been read") && stdout.contains("clipdex ocr --library"), "{stdout}");
        let out = clipdex(&db, &["search", "--in", "text", "48213"]);
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(stdout.contains("`clipdex ocr --library`") && !stdout.contains("DIR"), "{backend}: {stdout}");

        let report = clipdex(&db, &["ocr", "--library", "--ocr-model", models.to_str().unwrap(), "--json"]);
        assert!(report.status.success(), "{}", String::from_utf8_lossy(&report.stderr));

        let search = |q: &str| {
            let out = clipdex(&db, &["search", "--json", "-k", "20", q]);
            assert!(out.status.success(), "{q} ({backend}): {}", String::from_utf8_lossy(&out.stderr));
            names(&serde_json::from_slice(&out.stdout).unwrap())
        };
        let all = ["photo_caption.jpg", "plain-0.png", "plain-1.png", "plain-2.png", "receipt.png", "sign.jpg"];
        // CLIP's ranking of the words, restricted to the photos whose text matches.
        assert_eq!(search("a photo text:\"48213\""), ["receipt.png"], "{backend}");
        assert_eq!(search("a photo text:48213"), ["receipt.png"], "{backend}");
        assert!(search("a photo text:4821").is_empty(), "numbers match exactly ({backend})");
        // Filters alone: the photos whose text matches; a phrase; case folded.
        assert_eq!(search("text:\"main street\""), ["sign.jpg"], "{backend}");
        assert_eq!(search("text:MOON"), ["photo_caption.jpg"], "{backend}");
        // Several values: all must match.
        assert!(search("text:48213 text:airport").is_empty(), "{backend}");
        // -text: leaves them out.
        let without: Vec<&str> = all.iter().copied().filter(|n| *n != "receipt.png").collect();
        assert_eq!(search("-text:48213"), without, "{backend}");
        assert_eq!(search("a photo -text:48213"), without, "{backend}");
        // -text: that leaves nothing out still filters: every photo.
        assert_eq!(search("-text:zzzz"), all, "{backend}");

        // A library with read text blends CLIP with the text; results keep the fields every
        // search has (relevance, place, #ID) and gain the blend's.
        for args in [&["dog"][..], &["--caption-weight", "0", "dog"], &["dog text:48213"], &["dog ext:png"]] {
            let out = clipdex(&db, &[&["search", "-k", "1"][..], args].concat());
            let stdout = String::from_utf8_lossy(&out.stdout);
            assert!(out.status.success(), "{args:?} ({backend}): {}", String::from_utf8_lossy(&out.stderr));
            let fields: Vec<&str> = stdout.lines().next().unwrap_or_default().split_whitespace().collect();
            assert!(fields.len() >= 4, "{args:?}: score relevance path #ID: {stdout}");
            assert!(fields[0].parse::<f32>().is_ok() && fields[1].parse::<f32>().is_ok(), "{stdout}");
            assert!(fields[3].starts_with('#') && fields[3][1..].parse::<u64>().is_ok(), "{args:?}: {stdout}");
            let out = clipdex(&db, &[&["search", "--json", "-k", "1"][..], args].concat());
            let body: Value = serde_json::from_slice(&out.stdout).unwrap();
            let hit = &body["results"][0];
            for field in ["id", "path", "score", "relevance", "place", "blended", "caption_score"] {
                assert!(hit.get(field).is_some(), "{args:?} ({backend}): no {field} in {hit}");
            }
            assert!(hit["relevance"].as_f64().is_some_and(|r| (0.0..=100.0).contains(&r)), "{hit}");
        }

        // --in text looks for the query's words; its filters filter.
        let in_text = |q: &str| {
            let out = clipdex(&db, &["search", "--json", "-k", "20", "--in", "text", q]);
            assert!(out.status.success(), "{q} ({backend}): {}", String::from_utf8_lossy(&out.stderr));
            names(&serde_json::from_slice(&out.stdout).unwrap())
        };
        assert_eq!(in_text("\"main street\" after:2000"), ["sign.jpg"], "{backend}");
        assert_eq!(in_text("street ext:jpg"), ["sign.jpg"], "{backend}");
        assert!(in_text("street text:48213").is_empty(), "{backend}");
        let out = clipdex(&db, &["search", "--in", "text", "text:48213"]);
        assert!(!out.status.success(), "{backend}");
        assert!(String::from_utf8_lossy(&out.stderr).contains("--in text needs words to look for"), "{backend}");
        // Signs mean what they mean in the main query: a subtracted word leaves photos out
        // (it was looked for as a word); weights and images are refused, naming the column.
        assert_eq!(in_text("street cafe"), ["receipt.png", "sign.jpg"], "{backend}");
        assert_eq!(in_text("street cafe -latte"), ["sign.jpg"], "{backend}");
        assert_eq!(in_text("street cafe NOT \"main street\""), ["receipt.png"], "{backend}");
        assert_eq!(in_text("street cafe - airport croissant"), Vec::<String>::new(), "{backend}");
        assert_eq!(in_text("street + cafe"), ["receipt.png", "sign.jpg"], "{backend}");
        for (q, says) in [
            ("2:cafe", "column 1: 2:cafe: the text in photos is ranked by its words alone"),
            ("cafe #1", "column 6: an image"),
        ] {
            let out = clipdex(&db, &["search", "--in", "text", q]);
            assert!(!out.status.success(), "{q} ({backend})");
            assert!(
                String::from_utf8_lossy(&out.stderr).contains(says),
                "{q} ({backend}): {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }

        // The same through the API, with its chip's query (a served library holds its folder).
        let mut serve = Command::new(env!("CARGO_BIN_EXE_clipdex"));
        serve
            .arg("--db")
            .arg(&db)
            .args(["--model", fixtures().join("clip-tiny-p32").to_str().unwrap()])
            .args(["serve", "--bind", "127.0.0.1:0", "--no-watch"])
            .env_remove("CLIPDEX_OCR_MODEL");
        let (_served, base) = common::start_server(serve);
        for (q, expected) in [
            ("a photo text:\"48213\"", vec!["receipt.png"]),
            ("text:\"main street\"", vec!["sign.jpg"]),
            ("-text:48213", without.clone()),
            ("-text:zzzz", all.to_vec()),
        ] {
            let (status, body) = get(&base, &format!("/api/search?k=20&q={}", encoded(q)));
            assert_eq!(status, 200, "{q} ({backend}): {body}");
            assert_eq!(names(&body), expected, "{q} ({backend})");
        }
        let (status, body) = get(&base, &format!("/api/search?in=text&q={}", encoded("text:48213")));
        assert_eq!(status, 400, "{body}");
        assert!(body["error"].as_str().unwrap().contains("in=text needs words"), "{body}");
        let (status, body) = get(&base, &format!("/api/search?k=20&in=text&q={}", encoded("street text:48213")));
        assert_eq!((status, names(&body)), (200, Vec::<String>::new()), "{body}");
        let (status, body) = get(&base, &format!("/api/search?k=20&in=text&q={}", encoded("street cafe -latte")));
        assert_eq!((status, names(&body)), (200, vec!["sign.jpg".to_string()]), "{body}");
        let (status, body) = get(&base, &format!("/api/search?in=text&q={}", encoded("street 2:cafe")));
        assert_eq!(status, 400, "{body}");
        assert!(body["error"].as_str().unwrap().contains("column 8: 2:cafe"), "{body}");
        let (status, body) = get(&base, &format!("/api/search?q={}", encoded("text:\"!?\"")));
        assert_eq!(status, 400, "{body}");
        assert!(body["error"].as_str().unwrap().contains("column 6"), "{body}");
    }
}
