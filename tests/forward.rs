//! Every library command while `clipdex serve` holds a folder library: the command is run by
//! the server and prints exactly what it prints on its own (timings aside), JSON included;
//! commands that change the library take effect in the server; a server with a token needs
//! CLIPDEX_TOKEN; commands that cannot run through the server say so in one line.

use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_json::Value;

mod common;
use common::{Served, fixtures, start_server};

fn model() -> PathBuf {
    fixtures().join("clip-tiny-p32")
}

fn serve(db: &Path, extra: &[&str]) -> Served {
    let mut command = Command::new(env!("CARGO_BIN_EXE_clipdex"));
    command.arg("--db").arg(db).arg("--model").arg(model()).args(["serve", "--bind", "127.0.0.1:0"]).args(extra);
    start_server(command).0
}

fn clipdex<S: AsRef<OsStr>>(db: &Path, cwd: &Path, env: &[(&str, &str)], args: &[S]) -> Output {
    let mut c = Command::new(env!("CARGO_BIN_EXE_clipdex"));
    c.current_dir(cwd).arg("--db").arg(db).arg("--model").arg(model()).args(args).env_remove("CLIPDEX_TOKEN");
    for (k, v) in env {
        c.env(k, v);
    }
    c.output().unwrap()
}

/// Output with timings taken out (`took_ms` in JSON), for comparing two runs.
fn comparable(out: &Output) -> String {
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    text.lines()
        .map(|line| match serde_json::from_str::<Value>(line) {
            Ok(Value::Object(mut o)) => {
                o.remove("took_ms");
                serde_json::to_string(&o).unwrap()
            }
            _ => line.to_string(),
        })
        .collect::<Vec<_>>()
        .join("\n")
}

fn ok(out: Output) -> Output {
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    out
}

fn photo_library(tmp: &Path) -> (PathBuf, PathBuf) {
    let photos = tmp.join("photos");
    std::fs::create_dir_all(photos.join("cats")).unwrap();
    for name in ["coffee.png", "rocket.webp", "camera_gray.png", "chelsea_small.bmp", "astronaut.jpg"] {
        std::fs::copy(fixtures().join("images").join(name), photos.join(name)).unwrap();
    }
    std::fs::copy(fixtures().join("images/chelsea_exif3.jpg"), photos.join("cats/chelsea.jpg")).unwrap();
    std::fs::write(photos.join("broken.jpg"), b"\xFF\xD8\xFF not really a jpeg").unwrap();
    (photos.canonicalize().unwrap(), tmp.join("db"))
}

#[test]
fn library_commands_run_through_the_server_and_print_the_same() {
    let tmp = tempfile::tempdir().unwrap();
    let (photos, db) = photo_library(tmp.path());
    ok(clipdex(&db, tmp.path(), &[], &[OsStr::new("add"), photos.as_os_str()]));
    ok(clipdex(&db, tmp.path(), &[], &["index"]));
    ok(clipdex(&db, tmp.path(), &[], &["autotag", "--vocab", &fixture_vocab(tmp.path()), "--prior-ratio", "1"]));

    // Read-only commands; relative paths are the caller's (run from the photo folder).
    let id = {
        let out = ok(clipdex(&db, tmp.path(), &[], &["search", "a cat", "-k", "1", "--json"]));
        serde_json::from_slice::<Value>(&out.stdout).unwrap()["results"][0]["id"].as_u64().unwrap().to_string()
    };
    let commands: Vec<Vec<String>> = [
        vec!["search", "a cat", "-k", "4"],
        vec!["search", "a cat", "-k", "4", "--json", "--under", "cats"],
        vec!["search", "--tag", "cat", "--json"],
        vec!["similar", "coffee.png", "-k", "3", "--json"],
        vec!["similar", "astronaut.jpg", "-k", "2"],
        vec!["stats"],
        vec!["stats", "--json"],
        vec!["tags", "--json"],
        vec!["tags"],
        vec!["show", &id],
        vec!["show", &id, "--json"],
        vec!["failures", "--json"],
        vec!["failures"],
        vec!["roots", "--json"],
        vec!["duplicates", "--json"],
        vec!["duplicates"],
    ]
    .iter()
    .map(|c| c.iter().map(|s| s.to_string()).collect())
    .collect();
    let served: Vec<Output> = {
        let _server = serve(&db, &["--no-watch"]);
        assert!(db.join("server.json").is_file(), "the server records where it listens");
        let held = clipdex(&db, &photos, &[], &["reindex", "--model", "x"]);
        assert!(!held.status.success());
        let said = String::from_utf8_lossy(&held.stderr);
        assert!(said.contains("held by `clipdex serve` at http://127.0.0.1:"), "{said}");
        commands.iter().map(|c| clipdex(&db, &photos, &[], c)).collect()
    };
    assert!(!db.join("server.json").exists(), "the record goes with the server");
    for (c, through_server) in commands.iter().zip(&served) {
        assert!(through_server.status.success(), "{c:?}: {}", String::from_utf8_lossy(&through_server.stderr));
        let alone = ok(clipdex(&db, &photos, &[], c));
        assert_eq!(comparable(through_server), comparable(&alone), "{c:?}");
        assert!(!through_server.stdout.is_empty(), "{c:?}");
    }
    // An error is the command's own, on stderr, with its exit status.
    let _server = serve(&db, &["--no-watch"]);
    let missing = clipdex(&db, &photos, &[], &["show", "123456789"]);
    assert!(!missing.status.success());
    assert!(String::from_utf8_lossy(&missing.stderr).contains("no image with id 123456789"));
}

#[test]
fn changes_through_the_server_take_effect_in_it() {
    let tmp = tempfile::tempdir().unwrap();
    let (photos, db) = photo_library(tmp.path());
    let _server = serve(&db, &[]);
    let more = tmp.path().join("more");
    std::fs::create_dir_all(&more).unwrap();
    std::fs::copy(fixtures().join("images/coffee_palette.png"), more.join("palette.png")).unwrap();

    let added = ok(clipdex(&db, tmp.path(), &[], &[OsStr::new("add"), photos.as_os_str(), OsStr::new("more")]));
    let said = String::from_utf8_lossy(&added.stdout);
    assert!(
        said.contains(&format!("added {}", more.canonicalize().unwrap().display())),
        "relative to the caller: {said}"
    );
    // `index` waits for a pass that started after it was asked for.
    let report: Value =
        serde_json::from_slice(&ok(clipdex(&db, tmp.path(), &[], &["index", "--json"])).stdout).unwrap();
    assert_eq!((report["seen"].as_u64(), report["embedded"].as_u64()), (Some(8), Some(7)), "{report}");
    let stats: Value = serde_json::from_slice(&ok(clipdex(&db, tmp.path(), &[], &["stats", "--json"])).stdout).unwrap();
    assert_eq!((stats["images"].as_u64(), stats["failures"].as_u64()), (Some(7), Some(1)), "{stats}");

    let removed = ok(clipdex(&db, tmp.path(), &[], &["remove", "more"]));
    assert!(String::from_utf8_lossy(&removed.stdout).contains("1 files forgotten"));
    let tagged = ok(clipdex(&db, tmp.path(), &[], &["autotag", "--vocab", &fixture_vocab(tmp.path()), "--json"]));
    let tagged: Value = serde_json::from_slice(&tagged.stdout).unwrap();
    assert_eq!(tagged["images"], 6, "{tagged}");

    // Commands that need the library to themselves say which server holds it.
    for args in [vec!["watch"], vec!["reindex", "--model", "x"], vec!["index", "--prune"]] {
        let out = clipdex(&db, tmp.path(), &[], &args);
        assert!(!out.status.success(), "{args:?}");
        let said = String::from_utf8_lossy(&out.stderr);
        assert!(said.contains("stop") && said.contains("server"), "{args:?}: {said}");
    }
}

#[test]
fn a_server_with_a_token_needs_it() {
    let tmp = tempfile::tempdir().unwrap();
    let (photos, db) = photo_library(tmp.path());
    ok(clipdex(&db, tmp.path(), &[], &[OsStr::new("add"), photos.as_os_str()]));
    let _server = serve(&db, &["--no-watch", "--token", "sesame"]);
    let refused = clipdex(&db, tmp.path(), &[], &["stats", "--json"]);
    assert!(!refused.status.success());
    assert!(String::from_utf8_lossy(&refused.stderr).contains("CLIPDEX_TOKEN"));
    let wrong = clipdex(&db, tmp.path(), &[("CLIPDEX_TOKEN", "open")], &["stats", "--json"]);
    assert!(!wrong.status.success());
    let stats = ok(clipdex(&db, tmp.path(), &[("CLIPDEX_TOKEN", "sesame")], &["stats", "--json"]));
    let stats: Value = serde_json::from_slice(&stats.stdout).unwrap();
    assert_eq!(stats["roots"], 1);
    // The token is never written into the database folder.
    let record = std::fs::read_to_string(db.join("server.json")).unwrap();
    assert!(!record.contains("sesame"), "{record}");
}

#[test]
fn a_record_left_by_a_killed_server_is_ignored() {
    let tmp = tempfile::tempdir().unwrap();
    let (photos, db) = photo_library(tmp.path());
    ok(clipdex(&db, tmp.path(), &[], &[OsStr::new("add"), photos.as_os_str()]));
    let mut server = std::mem::ManuallyDrop::new(serve(&db, &["--no-watch"]));
    server.0.kill().unwrap();
    server.0.wait().unwrap();
    assert!(db.join("server.json").is_file(), "a SIGKILLed server leaves its record");
    let stats = ok(clipdex(&db, tmp.path(), &[], &["stats", "--json"]));
    assert_eq!(serde_json::from_slice::<Value>(&stats.stdout).unwrap()["roots"], 1);
}

/// A small vocabulary file for `autotag`.
fn fixture_vocab(dir: &Path) -> String {
    let path = dir.join("vocab.txt");
    std::fs::write(&path, "cat\ncoffee\nrocket\nastronaut\ncamera\n").unwrap();
    path.to_string_lossy().into_owned()
}
