//! The folder library's full-text index on disk (`text-index/` beside `sled`), through the
//! binary: built on first use, kept up to date by each text written, rebuilt when it is
//! missing, damaged or behind the store, and never answering otherwise than a rebuild after a
//! text pass is killed, whether during the reading of a photo (SIGKILL) or between storing a
//! text and committing the index (an abort at that point). Needs the PP-OCRv6 models (see
//! tests/photo_text.rs); without them it says so and passes, unless `CI` is set.

use std::ffi::OsStr;
use std::io::BufRead;
use std::path::Path;
use std::process::{Command, Output, Stdio};

use serde_json::Value;

mod common;
use common::{fixtures, picture};

const QUERIES: &[&str] = &["48213", "\"main street\"", "airpert", "moon", "bill", "total"];

fn clipdex(db: &OsStr, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_clipdex"))
        .arg("--db")
        .arg(db)
        .args(["--model", fixtures().join("clip-tiny-p32").to_str().unwrap()])
        .args(args)
        .env_remove("CLIPDEX_OCR_MODEL")
        .env_remove("CLIPDEX_CRASH_AT")
        .output()
        .unwrap()
}

fn ok_json(out: Output) -> Value {
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).unwrap()
}

/// Every query's results: (file name, score, snippet), best first.
fn answers(db: &OsStr) -> Vec<Vec<(String, f64, String)>> {
    QUERIES
        .iter()
        .map(|q| {
            let out = ok_json(clipdex(db, &["search", "--json", "--in", "text", q]));
            out["results"]
                .as_array()
                .unwrap()
                .iter()
                .map(|r| {
                    let name =
                        Path::new(r["path"].as_str().unwrap()).file_name().unwrap().to_string_lossy().into_owned();
                    (name, r["score"].as_f64().unwrap(), r["text"]["snippet"].as_str().unwrap_or("").to_string())
                })
                .collect()
        })
        .collect()
}

/// The answers are those of an index rebuilt from the store (the folder removed).
fn assert_answers_as_a_rebuild(db: &Path, context: &str) -> Vec<Vec<(String, f64, String)>> {
    let kept = answers(db.as_os_str());
    std::fs::remove_dir_all(db.join("text-index")).unwrap();
    let rebuilt = answers(db.as_os_str());
    assert!(db.join("text-index").join("meta.json").exists(), "{context}: rebuilt on the first search");
    assert_eq!(kept.len(), rebuilt.len());
    for ((q, a), b) in QUERIES.iter().zip(&kept).zip(&rebuilt) {
        let names = |x: &Vec<(String, f64, String)>| x.iter().map(|h| (h.0.clone(), h.2.clone())).collect::<Vec<_>>();
        assert_eq!(names(a), names(b), "{context}: query {q}");
        for (x, y) in a.iter().zip(b) {
            assert!((x.1 - y.1).abs() <= 1e-4 * y.1.abs().max(1.0), "{context}: query {q}: {x:?} {y:?}");
        }
    }
    kept
}

fn library(tmp: &Path, plain: u32) -> std::path::PathBuf {
    let photos = tmp.join("photos");
    std::fs::create_dir_all(&photos).unwrap();
    for name in ["receipt.png", "sign.jpg", "photo_caption.jpg"] {
        std::fs::copy(fixtures().join("ocr").join(name), photos.join(name)).unwrap();
    }
    for seed in 0..plain {
        picture(seed).save(photos.join(format!("plain-{seed:03}.png"))).unwrap();
    }
    let db = tmp.join("db");
    assert!(clipdex(db.as_os_str(), &["add", photos.to_str().unwrap()]).status.success());
    assert!(clipdex(db.as_os_str(), &["index"]).status.success());
    db
}

/// A pass that dies after storing a text but before the index commits it (the process aborts
/// at that point): the index is marked, the next command rebuilds it, and it then answers as
/// a rebuild does; a pass that completes leaves an index that answers as a rebuild does too.
#[test]
fn a_pass_dying_between_store_and_index_leaves_an_index_that_is_rebuilt() {
    let Some(models) = common::ocr_models("v6") else { return };
    let tmp = tempfile::tempdir().unwrap();
    let db = library(tmp.path(), 2);
    let out = Command::new(env!("CARGO_BIN_EXE_clipdex"))
        .arg("--db")
        .arg(&db)
        .args(["--model", fixtures().join("clip-tiny-p32").to_str().unwrap()])
        .args(["ocr", "--library", "--json", "--ocr-model", models.to_str().unwrap()])
        .env_remove("CLIPDEX_OCR_MODEL")
        .env("CLIPDEX_CRASH_AT", "text-index-commit:3")
        .output()
        .unwrap();
    assert!(!out.status.success(), "the pass was to abort: {}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stderr).contains("crash point text-index-commit"));
    // Three texts are in sled; the index committed two and is marked.
    let index = db.join("text-index");
    assert!(index.join("dirty").exists());
    {
        let store = clipdex::store::Store::open(clipdex::store::DbLocation::Dir(db.clone())).unwrap();
        assert_eq!(store.text_count().unwrap(), 3);
    }
    assert_answers_as_a_rebuild(&db, "after the abort");
    assert!(!index.join("dirty").exists());
    // The pass resumes and completes; the index kept up to date answers as a rebuild.
    let again = ok_json(clipdex(db.as_os_str(), &["ocr", "--library", "--json"]));
    assert_eq!(again["unchanged"].as_u64(), Some(3), "{again}");
    let answers = assert_answers_as_a_rebuild(&db, "after the pass");
    assert_eq!(answers[0].first().map(|h| h.0.as_str()), Some("receipt.png"), "{answers:?}");
    assert_eq!(answers[1].first().map(|h| h.0.as_str()), Some("sign.jpg"), "{answers:?}");
}

/// `ocr --library` SIGKILLed after some photos, twice: whatever the index holds then answers
/// as an index rebuilt from the store, and a third pass completes.
#[test]
fn a_pass_killed_midway_leaves_an_index_that_answers_as_a_rebuild() {
    let Some(models) = common::ocr_models("v6") else { return };
    let tmp = tempfile::tempdir().unwrap();
    let db = library(tmp.path(), 6);
    for kill_after in [2, 3] {
        let mut child = Command::new(env!("CARGO_BIN_EXE_clipdex"))
            .arg("--db")
            .arg(&db)
            .args(["--model", fixtures().join("clip-tiny-p32").to_str().unwrap()])
            .args(["ocr", "--library", "--json", "--ocr-model", models.to_str().unwrap()])
            .env_remove("CLIPDEX_OCR_MODEL")
            .env_remove("CLIPDEX_CRASH_AT")
            .env("RUST_LOG", "clipdex::library::photo_text=debug")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let stderr = std::io::BufReader::new(child.stderr.take().unwrap());
        let mut reported = 0;
        for line in stderr.lines() {
            if line.unwrap().contains("photo text read") {
                reported += 1;
                if reported == kill_after {
                    break;
                }
            }
        }
        child.kill().unwrap();
        child.wait().unwrap();
        assert_answers_as_a_rebuild(&db, &format!("killed after {kill_after}"));
    }
    let done = ok_json(clipdex(db.as_os_str(), &["ocr", "--library", "--json"]));
    assert_eq!(done["failed"].as_u64(), Some(0), "{done}");
    let answers = assert_answers_as_a_rebuild(&db, "after the last pass");
    assert_eq!(answers[0].first().map(|h| h.0.as_str()), Some("receipt.png"), "{answers:?}");
}

/// A damaged index (a segment file overwritten) or one of another version is rebuilt by the
/// next command and answers as before.
#[test]
fn a_damaged_or_old_index_is_rebuilt() {
    let Some(models) = common::ocr_models("v6") else { return };
    let tmp = tempfile::tempdir().unwrap();
    let db = library(tmp.path(), 0);
    ok_json(clipdex(db.as_os_str(), &["ocr", "--library", "--json", "--ocr-model", models.to_str().unwrap()]));
    let before = answers(db.as_os_str());
    assert_eq!(before[0].first().map(|h| h.0.as_str()), Some("receipt.png"), "{before:?}");
    let index = db.join("text-index");
    for entry in std::fs::read_dir(&index).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "idx" || e == "term" || e == "pos") {
            let len = std::fs::metadata(&path).unwrap().len() as usize;
            std::fs::write(&path, vec![0x5a; len]).unwrap();
        }
    }
    assert_eq!(answers(db.as_os_str()), before, "damaged");
    std::fs::write(index.join("clipdex-version"), "clipdex text index 0").unwrap();
    assert_eq!(answers(db.as_os_str()), before, "old version");
    assert_eq!(std::fs::read_to_string(index.join("clipdex-version")).unwrap(), clipdex::query::text_index::VERSION);
}

/// One answer over HTTP: (file name, score, snippet) of each result, best first.
fn http_answer(agent: &ureq::Agent, url: &str, query: &str) -> Vec<(String, f64, String)> {
    let response = agent
        .get(&format!("{url}/api/search"))
        .query("q", query)
        .query("in", "text")
        .query("k", "50")
        .call()
        .unwrap_or_else(|e| panic!("search {query}: {e}"));
    let body: Value = response.into_json().unwrap();
    body["results"]
        .as_array()
        .unwrap_or_else(|| panic!("search {query}: {body}"))
        .iter()
        .map(|r| {
            let name = Path::new(r["path"].as_str().unwrap()).file_name().unwrap().to_string_lossy().into_owned();
            (name, r["score"].as_f64().unwrap(), r["text"]["snippet"].as_str().unwrap_or("").to_string())
        })
        .collect()
}

/// `serve` answers text searches over HTTP while its background pass reads the photos' text
/// and writes each into the index: every answer is a success, holds only photos whose stored
/// text matches (with that text's snippet), and the answer once the pass is over equals an
/// index rebuilt from the store.
#[test]
fn serve_answers_text_searches_while_a_pass_writes() {
    let Some(models) = common::ocr_models("v6") else { return };
    let tmp = tempfile::tempdir().unwrap();
    let db = library(tmp.path(), 6);
    let mut command = Command::new(env!("CARGO_BIN_EXE_clipdex"));
    command
        .arg("--db")
        .arg(&db)
        .args(["--model", fixtures().join("clip-tiny-p32").to_str().unwrap()])
        .args(["serve", "--bind", "127.0.0.1:0", "--ocr-model", models.to_str().unwrap()])
        .env_remove("CLIPDEX_OCR_MODEL")
        .env_remove("CLIPDEX_CRASH_AT");
    let (server, url) = common::start_server(command);
    let agent = ureq::AgentBuilder::new().timeout(std::time::Duration::from_secs(120)).build();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(600);
    let mut seen: Vec<Vec<Vec<(String, f64, String)>>> = Vec::new();
    let passed = |agent: &ureq::Agent| {
        let status: Value = agent.get(&format!("{url}/api/status")).call().unwrap().into_json().unwrap();
        // Thumbnails come after the text pass.
        !status["stages"]["thumbnails"].is_null()
    };
    loop {
        let over = passed(&agent);
        seen.push(QUERIES.iter().map(|q| http_answer(&agent, &url, q)).collect());
        if over {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "the text pass did not finish in 10 minutes");
    }
    drop(server);
    let last = seen.last().unwrap().clone();
    let rebuilt = assert_answers_as_a_rebuild(&db, "after serving");
    for ((q, a), b) in QUERIES.iter().zip(&last).zip(&rebuilt) {
        let names = |x: &Vec<(String, f64, String)>| x.iter().map(|h| (h.0.clone(), h.2.clone())).collect::<Vec<_>>();
        assert_eq!(names(a), names(b), "the last answer over HTTP: query {q}");
        for (x, y) in a.iter().zip(b) {
            assert!((x.1 - y.1).abs() <= 1e-4 * y.1.abs().max(1.0), "query {q}: {x:?} {y:?}");
        }
    }
    for (round, answers) in seen.iter().enumerate() {
        for ((q, answer), full) in QUERIES.iter().zip(answers).zip(&rebuilt) {
            for hit in answer {
                assert!(
                    full.iter().any(|h| h.0 == hit.0 && h.2 == hit.2),
                    "round {round}, query {q}: {hit:?} is not among the stored texts' matches {full:?}"
                );
            }
        }
    }
    assert_eq!(rebuilt[0].first().map(|h| h.0.as_str()), Some("receipt.png"), "{rebuilt:?}");
    eprintln!("{} rounds of {} searches while the pass wrote", seen.len(), QUERIES.len());
}
