//! The text in photos in a library, through the binary, on every backend: `index --ocr` reads
//! every photo with the real PP-OCRv6 small model (fetched by tools/fetch_ocr_models.sh; `.ci/run`
//! fetches it), `search --in text` finds the photo carrying a number, a phrase, a word with a
//! typo first, a plain `search` blends it into the top 3, `GET`-like `show` returns its lines,
//! and a second pass reads nothing again. Without the models the test says so and passes,
//! unless `CI` is set.

use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_json::Value;

mod common;
use common::backends::test_databases;
use common::{fixtures, picture};

/// Photos without text besides the three that carry some: enough that the one sought must be
/// ranked, not merely found, while each still costs a detector pass on a loaded CI machine.
const PLAIN_PHOTOS: u32 = 40;

fn ocr_models() -> Option<PathBuf> {
    let root = std::env::var_os("CLIPDEX_OCR_MODELS").map(PathBuf::from).unwrap_or_else(|| {
        let cache = std::env::var_os("XDG_CACHE_HOME")
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from(std::env::var_os("HOME").unwrap_or_default()).join(".cache"));
        cache.join("clipdex-ci/ocr-models")
    });
    let dir = root.join("v6");
    if dir.join(".complete").exists() {
        return Some(dir);
    }
    if std::env::var_os("CI").is_some() {
        panic!("CI is set but the OCR models are not in {}: run tools/fetch_ocr_models.sh", dir.display());
    }
    eprintln!("skipped: no OCR models in {} (run tools/fetch_ocr_models.sh)", dir.display());
    None
}

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

fn ok_json(out: Output) -> Value {
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).unwrap()
}

fn names(results: &Value) -> Vec<String> {
    results["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| Path::new(r["path"].as_str().unwrap()).file_name().unwrap().to_string_lossy().into_owned())
        .collect()
}

#[test]
fn photos_are_found_by_the_text_in_them() {
    let Some(models) = ocr_models() else { return };
    for db in test_databases() {
        let tmp = tempfile::tempdir().unwrap();
        let photos = tmp.path().join("photos");
        std::fs::create_dir_all(&photos).unwrap();
        for name in ["receipt.png", "sign.jpg", "photo_caption.jpg"] {
            std::fs::copy(fixtures().join("ocr").join(name), photos.join(name)).unwrap();
        }
        for seed in 0..PLAIN_PHOTOS {
            picture(seed).save(photos.join(format!("plain-{seed:03}.png"))).unwrap();
        }
        let db = db.arg();
        assert!(clipdex(&db, &["add", photos.to_str().unwrap()]).status.success());

        // Without a model, `index --ocr` says what to do.
        let out = clipdex(&db, &["index", "--ocr"]);
        assert!(!out.status.success());
        assert!(String::from_utf8_lossy(&out.stderr).contains("--ocr-model"));

        let report = ok_json(clipdex(&db, &["index", "--ocr", "--ocr-model", models.to_str().unwrap(), "--json"]));
        assert_eq!(report["text_read"], PLAIN_PHOTOS as u64 + 3, "{report}");

        let search = |args: &[&str]| names(&ok_json(clipdex(&db, &[&["search", "--json"][..], args].concat())));
        // A number, exactly; a phrase; a word with a typo; a word in another case.
        assert_eq!(search(&["--in", "text", "48213"]).first().map(String::as_str), Some("receipt.png"));
        assert!(search(&["--in", "text", "4821"]).is_empty(), "numbers match only exactly");
        assert_eq!(search(&["--in", "text", "\"main street\""]).first().map(String::as_str), Some("sign.jpg"));
        assert_eq!(search(&["--in", "text", "airpert"]).first().map(String::as_str), Some("sign.jpg"));
        assert_eq!(search(&["--in", "text", "MOON"]).first().map(String::as_str), Some("photo_caption.jpg"));

        // The snippet and the boxes of what matched.
        let found = ok_json(clipdex(&db, &["search", "--json", "--in", "text", "48213"]));
        let text = &found["results"][0]["text"];
        assert!(text["snippet"].as_str().unwrap().contains("48213"), "{text}");
        assert_eq!(text["boxes"].as_array().unwrap().len(), 1, "{text}");

        // A plain search blends the text in: the photo carrying the words comes in the top 3,
        // although the tiny test CLIP cannot read.
        for (query, photo) in [("48213", "receipt.png"), ("Airport", "sign.jpg")] {
            let blended = search(&[query]);
            assert!(blended.iter().take(3).any(|n| n == photo), "{query}: {blended:?}");
        }

        // The photo's lines in its details.
        let id = found["results"][0]["id"].as_u64().unwrap().to_string();
        let details = ok_json(clipdex(&db, &["show", &id, "--json"]));
        let lines: Vec<&str> =
            details["text"].as_array().unwrap().iter().map(|l| l["text"].as_str().unwrap()).collect();
        assert!(lines.contains(&"Bill no. 48213"), "{lines:?}");

        // Read once: a second pass reads nothing again.
        let again = ok_json(clipdex(&db, &["ocr", "--library", "--json"]));
        assert_eq!((again["read"].as_u64(), again["unchanged"].as_u64()), (Some(0), Some(PLAIN_PHOTOS as u64 + 3)));
    }
}
