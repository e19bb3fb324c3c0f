//! BLIP on an indexed library through the binary: `search --rerank itm`.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_json::Value;

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

fn clipdex(db: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_clipdex"))
        .args(["--db", db.to_str().unwrap()])
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

/// A library of the three photos the ITM goldens score.
fn library(tmp: &Path) -> (PathBuf, PathBuf) {
    let photos = tmp.join("photos");
    std::fs::create_dir_all(&photos).unwrap();
    for name in ["astronaut.jpg", "coffee.png", "chelsea_exif6.jpg"] {
        std::fs::copy(fixtures().join("images").join(name), photos.join(name)).unwrap();
    }
    let db = tmp.join("db");
    assert!(clipdex(&db, &["add", photos.to_str().unwrap()]).status.success());
    assert!(clipdex(&db, &["index"]).status.success());
    (db, photos)
}

fn itm_golden(text: &str) -> Vec<(String, f64)> {
    let golden: Value = serde_json::from_str(
        &std::fs::read_to_string(fixtures().join("blip/blip-tiny-itm.golden.json")).unwrap(),
    )
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
    let tmp = tempfile::tempdir().unwrap();
    let (db, photos) = library(tmp.path());
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
        .args(["--db", db.to_str().unwrap(), "--model", fixtures().join("clip-tiny-p32").to_str().unwrap()])
        .args(["--itm-model", "/no/such", "search", text, "--rerank", "itm"])
        .output()
        .unwrap();
    assert!(!out.status.success() && String::from_utf8_lossy(&out.stderr).contains("/no/such"));
}
