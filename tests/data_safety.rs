//! Data safety end to end through the real binary: touching or restoring a photo never loses
//! it, an emptied or remounted root keeps its photos until `index --prune`, and files that
//! would make preprocessing allocate without bound are handled within a bounded memory. The
//! photo-keeping tests run on every backend under test (a folder, and PostgreSQL when
//! `CLIPDEX_TEST_PG` names a server).

#![cfg(unix)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, SystemTime};

use serde_json::Value;

mod common;
use common::backends::{TestDb, test_databases};
use common::{ok_json, picture};

fn model() -> String {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/clip-tiny-p32").to_string_lossy().into_owned()
}

fn clipdex(db: &Path, args: &[&str]) -> Output {
    common::clipdex_on(db, model(), args)
}

/// The binary on a library of any backend.
fn on(db: &TestDb, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_clipdex"))
        .arg("--db")
        .arg(db.arg())
        .arg("--model")
        .arg(model())
        .args(args)
        .output()
        .unwrap()
}

/// `stats --json` as (images, paths, vectors).
fn counts(db: &Path) -> (u64, u64, u64) {
    counts_of(&ok_json(clipdex(db, &["stats", "--json"])))
}

fn counts_on(db: &TestDb) -> (u64, u64, u64) {
    counts_of(&ok_json(on(db, &["stats", "--json"])))
}

fn counts_of(s: &Value) -> (u64, u64, u64) {
    let n = |k: &str| s[k].as_u64().unwrap();
    (n("images"), n("paths"), n("vectors"))
}

/// A folder of `n` generated photos in a temporary folder.
fn photo_folder(n: u32) -> (tempfile::TempDir, PathBuf) {
    let tmp = tempfile::tempdir().unwrap();
    let photos = tmp.path().join("photos");
    std::fs::create_dir_all(&photos).unwrap();
    for i in 0..n {
        picture(i).save(photos.join(format!("p{i:02}.png"))).unwrap();
    }
    (tmp, std::fs::canonicalize(&photos).unwrap())
}

fn library(n: u32) -> (tempfile::TempDir, PathBuf, PathBuf) {
    let (tmp, photos) = photo_folder(n);
    let db = tmp.path().join("db");
    assert!(clipdex(&db, &["add", photos.to_str().unwrap()]).status.success());
    let first = ok_json(clipdex(&db, &["index", "--json"]));
    assert_eq!(first["embedded"], n);
    (tmp, db, photos)
}

/// [`library`] on every backend under test.
fn libraries(n: u32) -> Vec<(tempfile::TempDir, TestDb, PathBuf)> {
    test_databases()
        .into_iter()
        .map(|db| {
            let (tmp, photos) = photo_folder(n);
            assert!(on(&db, &["add", photos.to_str().unwrap()]).status.success());
            let first = ok_json(on(&db, &["index", "--json"]));
            assert_eq!(first["embedded"], n, "{}", db.backend);
            (tmp, db, photos)
        })
        .collect()
}

fn set_mtime(path: &Path, t: SystemTime) {
    std::fs::File::options().write(true).open(path).unwrap().set_modified(t).unwrap();
}

#[test]
fn a_touched_photo_is_kept() {
    for (_tmp, db, photos) in libraries(10) {
        let a = photos.join("p00.png");
        set_mtime(&a, SystemTime::now() + Duration::from_secs(60));
        let pass = ok_json(on(&db, &["index", "--json"]));
        assert_eq!((pass["linked"].as_u64(), pass["removed"].as_u64()), (Some(1), Some(0)), "{pass}");
        assert_eq!(counts_on(&db), (10, 10, 10));
        // The next pass calls it unchanged, and it is still found.
        let again = ok_json(on(&db, &["index", "--json"]));
        assert_eq!(again["unchanged"], 10, "{again}");
        let res = ok_json(on(&db, &["show", a.to_str().unwrap(), "--json"]));
        assert!(res["paths"].as_array().unwrap().iter().any(|p| p == a.to_str().unwrap()), "{res}");
    }
}

#[test]
fn a_photo_restored_from_a_backup_is_kept() {
    for (tmp, db, photos) in libraries(4) {
        let a = photos.join("p01.png");
        let backup = tmp.path().join("backup.png");
        std::fs::copy(&a, &backup).unwrap();
        // Restored over itself: same bytes, a new modification time.
        std::fs::remove_file(&a).unwrap();
        std::fs::copy(&backup, &a).unwrap();
        set_mtime(&a, SystemTime::now() + Duration::from_secs(120));
        ok_json(on(&db, &["index", "--json"]));
        assert_eq!(counts_on(&db), (4, 4, 4));
        // Edited and then restored from the backup: back to the stored content.
        picture(99).save(&a).unwrap();
        ok_json(on(&db, &["index", "--json"]));
        std::fs::copy(&backup, &a).unwrap();
        set_mtime(&a, SystemTime::now() + Duration::from_secs(240));
        ok_json(on(&db, &["index", "--json"]));
        assert_eq!(counts_on(&db), (4, 4, 4));
        let res = ok_json(on(&db, &["similar", backup.to_str().unwrap(), "-k", "1", "--json"]));
        assert_eq!(res["results"][0]["path"], a.to_str().unwrap());
        assert!(res["results"][0]["score"].as_f64().unwrap() > 0.9999);
    }
}

#[test]
fn an_emptied_root_keeps_its_photos_until_prune() {
    for (_tmp, db, photos) in libraries(5) {
        // What an unmounted drive's mount point looks like.
        std::fs::remove_dir_all(&photos).unwrap();
        std::fs::create_dir(&photos).unwrap();
        let pass = ok_json(on(&db, &["index", "--json"]));
        assert_eq!(pass["removed"], 0, "{pass}");
        assert_eq!(pass["missing_roots"][0], photos.to_str().unwrap(), "{pass}");
        assert_eq!(counts_on(&db), (5, 5, 5));
        let text = on(&db, &["index"]);
        assert!(String::from_utf8_lossy(&text.stdout).contains("--prune"), "{}", String::from_utf8_lossy(&text.stdout));
        // The user means it.
        let pruned = ok_json(on(&db, &["index", "--prune", "--json"]));
        assert_eq!(pruned["removed"], 5, "{pruned}");
        assert_eq!(counts_on(&db), (0, 0, 0));
    }
}

#[test]
fn deleting_some_photos_still_forgets_them() {
    for (_tmp, db, photos) in libraries(4) {
        std::fs::remove_file(photos.join("p02.png")).unwrap();
        let pass = ok_json(on(&db, &["index", "--json"]));
        assert_eq!((pass["removed"].as_u64(), pass["missing_roots"].as_array().map(Vec::len)), (Some(1), Some(0)));
        assert_eq!(counts_on(&db), (3, 3, 3));
    }
}

#[test]
fn a_root_on_another_device_keeps_its_photos() {
    for (_tmp, db, photos) in libraries(3) {
        {
            // The device recorded at the last pass is not the one the folder is on now: as if
            // another drive were mounted there. (Mounting needs privileges tests do not have.)
            let lib = clipdex::Library::open(clipdex::LibraryConfig::new(db.location.clone(), model())).unwrap();
            let recorded = lib.store().root_device(&photos).unwrap();
            assert!(recorded.is_some(), "the pass records the root's device");
            lib.store().set_root_device(&photos, recorded.unwrap() ^ 0x5a5a).unwrap();
        }
        std::fs::remove_file(photos.join("p00.png")).unwrap();
        let pass = ok_json(on(&db, &["index", "--json"]));
        assert_eq!(pass["removed"], 0, "{pass}");
        assert_eq!(pass["missing_roots"][0], photos.to_str().unwrap());
        assert_eq!(counts_on(&db), (3, 3, 3));
        let pruned = ok_json(on(&db, &["index", "--prune", "--json"]));
        assert_eq!(pruned["removed"], 1, "{pruned}");
        // The device is recorded anew, so later passes are ordinary.
        let again = ok_json(on(&db, &["index", "--json"]));
        assert_eq!(again["missing_roots"].as_array().map(Vec::len), Some(0), "{again}");
    }
}

#[test]
fn index_counts_add_up() {
    for (_tmp, db, photos) in libraries(3) {
        std::fs::write(photos.join("broken.jpg"), b"no image here").unwrap();
        std::os::unix::fs::symlink(&photos, photos.join("loop")).unwrap();
        picture(50).save(photos.join("new.png")).unwrap();
        std::fs::copy(photos.join("p00.png"), photos.join("copy.png")).unwrap();
        for pass in 0..2 {
            let r = ok_json(on(&db, &["index", "--json"]));
            let n = |k: &str| r[k].as_u64().unwrap();
            let accounted = n("unchanged") + n("embedded") + n("linked") + n("failed") + n("skipped_failures");
            assert_eq!(n("seen"), accounted, "pass {pass}: {r}");
        }
    }
}

/// Runs the binary on the library; returns its output and peak resident memory in bytes.
fn run_measured(db: &Path, args: &[&str]) -> (Output, u64) {
    let mut command = Command::new(env!("CARGO_BIN_EXE_clipdex"));
    command.arg("--db").arg(db).arg("--model").arg(model()).args(args);
    common::run_measured(command)
}

#[test]
fn a_one_pixel_high_png_of_179_million_pixels_does_not_crash_the_indexer() {
    let (_tmp, db, photos) = library(2);
    // 178,956,970 x 1 grey: inside the pixel limit, a few hundred KB on disk; resized to a
    // 224 px short side it would be 40 billion pixels.
    let strip = image::GrayImage::new(178_956_970, 1);
    strip.save(photos.join("strip.png")).unwrap();
    drop(strip);
    image::GrayImage::from_fn(20_000, 2, |x, y| image::Luma([((x + y) % 251) as u8]))
        .save(photos.join("wide.png"))
        .unwrap();
    let (out, peak) = run_measured(&db, &["index", "--json"]);
    assert!(out.status.success(), "{:?}: {}", out.status, String::from_utf8_lossy(&out.stderr));
    let r: Value = serde_json::from_slice(&out.stdout).unwrap();
    eprintln!("index over the strips: {r}; peak RSS {} MB", peak >> 20);
    // The 20000 x 2 strip is an image like any other; the other one is either embedded or a
    // recorded failure (it needs more memory than one decode may take), never a crash.
    assert_eq!(r["embedded"].as_u64().unwrap() + r["failed"].as_u64().unwrap(), 2, "{r}");
    assert!(peak < 1 << 30, "peak RSS {} MB", peak >> 20);
    let (images, ..) = counts(&db);
    assert_eq!(images, 2 + r["embedded"].as_u64().unwrap());
    let (out, peak) = run_measured(&db, &["similar", photos.join("wide.png").to_str().unwrap(), "-k", "1", "--json"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(peak < 1 << 30, "similar: peak RSS {} MB", peak >> 20);
}

#[test]
fn the_model_is_one_model_by_any_spelling_and_follows_its_folder() {
    let tmp = tempfile::tempdir().unwrap();
    let root = std::fs::canonicalize(tmp.path()).unwrap();
    let model_dir = root.join("models/clip");
    std::fs::create_dir_all(&model_dir).unwrap();
    for entry in std::fs::read_dir(model()).unwrap() {
        let entry = entry.unwrap();
        std::fs::copy(entry.path(), model_dir.join(entry.file_name())).unwrap();
    }
    let photos = root.join("photos");
    std::fs::create_dir_all(&photos).unwrap();
    for i in 0..3 {
        picture(i).save(photos.join(format!("p{i}.png"))).unwrap();
    }
    let run = |model: &str, args: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_clipdex"))
            .current_dir(&root)
            .args(["--db", "db", "--model", model])
            .args(args)
            .output()
            .unwrap()
    };
    assert!(run("./models/clip", &["add", "photos"]).status.success());
    assert_eq!(ok_json(run("./models/clip", &["index", "--json"]))["embedded"], 3);
    // Another spelling: absolute with a trailing slash, a symbolic link, `..` inside.
    std::os::unix::fs::symlink(&model_dir, root.join("link")).unwrap();
    for spelling in [format!("{}/", model_dir.display()), "link".into(), "models/../models/clip".into()] {
        let r = ok_json(run(&spelling, &["index", "--json"]));
        assert_eq!((r["unchanged"].as_u64(), r["embedded"].as_u64()), (Some(3), Some(0)), "{spelling}: {r}");
    }
    let stats = ok_json(run("models/clip", &["stats", "--json"]));
    assert_eq!(stats["model"], model_dir.to_str().unwrap(), "the canonical path is recorded");
    // The folder moves: the same files elsewhere are the same model, and the library follows.
    let moved = root.join("elsewhere");
    std::fs::create_dir_all(&moved).unwrap();
    std::fs::rename(&model_dir, moved.join("clip")).unwrap();
    let r = ok_json(run("elsewhere/clip", &["index", "--json"]));
    assert_eq!((r["unchanged"].as_u64(), r["embedded"].as_u64()), (Some(3), Some(0)), "{r}");
    let stats = ok_json(run("elsewhere/clip", &["stats", "--json"]));
    assert_eq!(stats["model"], moved.join("clip").to_str().unwrap());
    // Another model is still refused.
    let other = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/clip-tiny-p16");
    let out = run(other.to_str().unwrap(), &["stats"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("holds vectors of model"));
}

#[test]
fn a_closed_pipe_ends_output_quietly() {
    let (_tmp, db, _photos) = library(1);
    // ~100 KB of JSON: more than a pipe holds, so the writes must meet the closed reader.
    let texts: Vec<String> = (0..24).map(|i| format!("text number {i}")).collect();
    let mut args = vec!["embed".to_string(), "--json".into()];
    for t in &texts {
        args.push("--text".into());
        args.push(t.clone());
    }
    let mut child = Command::new(env!("CARGO_BIN_EXE_clipdex"))
        .arg("--db")
        .arg(&db)
        .arg("--model")
        .arg(model())
        .args(&args)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    drop(child.stdout.take()); // `| head -0`
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "{:?}: {}", out.status, String::from_utf8_lossy(&out.stderr));
    assert!(!String::from_utf8_lossy(&out.stderr).contains("Broken pipe"));
}

#[test]
fn logs_written_to_a_file_have_no_colour_codes_and_empty_searches_say_why() {
    let (tmp, db, photos) = library(2);
    let aside = tmp.path().join("unplugged");
    std::fs::rename(&photos, &aside).unwrap();
    let out = clipdex(&db, &["index"]);
    let log = String::from_utf8_lossy(&out.stderr);
    assert!(log.contains("missing"), "{log}");
    assert!(!log.contains('\u{1b}'), "escape codes in {log:?}");
    std::fs::rename(&aside, &photos).unwrap();
    let out = clipdex(&db, &["search", "a photo", "--after", "2100-01-01"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("none of the 2 photos") && text.contains("filters"), "{text}");
    let empty = tmp.path().join("empty-db");
    let out = clipdex(&empty, &["search", "a photo"]);
    assert!(String::from_utf8_lossy(&out.stdout).contains("holds no photo"));
}

#[test]
fn non_utf8_names_travel_exactly_through_the_command_line() {
    use std::ffi::OsStr;
    use std::os::unix::ffi::OsStrExt;
    let (_tmp, db, photos) = library(2);
    let odd = photos.join(OsStr::from_bytes(b"caf\xe9\nnew.png"));
    picture(30).save(&odd).unwrap();
    let broken = photos.join(OsStr::from_bytes(b"bro\xefken.jpg"));
    std::fs::write(&broken, b"not an image").unwrap();
    let r = ok_json(clipdex(&db, &["index", "--json"]));
    assert_eq!((r["embedded"].as_u64(), r["failed"].as_u64()), (Some(1), Some(1)), "{r}");
    let exact =
        |v: &Value| clipdex::path_text::from_json(v["path"].as_str().unwrap(), v["path_bytes"].as_str()).unwrap();
    let run = |args: &[&OsStr]| common::clipdex_on(&db, model(), args);
    // A query photo named by its raw bytes (a copy outside the library, compared by its
    // pixels), found under its raw bytes.
    let copy = _tmp.path().join(OsStr::from_bytes(b"caf\xe9 copy.png"));
    std::fs::copy(&odd, &copy).unwrap();
    let res = ok_json(run(&[
        OsStr::new("similar"),
        copy.as_os_str(),
        OsStr::new("-k"),
        OsStr::new("1"),
        OsStr::new("--json"),
    ]));
    assert_eq!(exact(&res["results"][0]), odd);
    assert!(res["results"][0]["path"].as_str().unwrap().contains('\u{fffd}'));
    let res = ok_json(run(&[
        OsStr::new("search"),
        OsStr::new("photo"),
        OsStr::new("-k"),
        OsStr::new("3"),
        OsStr::new("--json"),
    ]));
    assert!(res["results"].as_array().unwrap().iter().any(|r| exact(r) == odd), "{res}");
    let failures = ok_json(run(&[OsStr::new("failures"), OsStr::new("--json")]));
    assert_eq!(exact(&failures["failures"][0]), broken);
    // Text output: one line per result, every byte visible.
    let text = run(&[OsStr::new("search"), OsStr::new("photo"), OsStr::new("-k"), OsStr::new("3")]);
    let text = String::from_utf8(text.stdout).unwrap();
    assert_eq!(text.lines().count(), 3, "{text}");
    assert!(text.contains("caf\\xE9\\nnew.png"), "{text}");
    let failures = String::from_utf8(run(&[OsStr::new("failures")]).stdout).unwrap();
    assert!(failures.contains("bro\\xEFken.jpg"), "{failures}");
    let res = ok_json(run(&[OsStr::new("embed"), OsStr::new("--image"), odd.as_os_str(), OsStr::new("--json")]));
    assert_eq!(exact(&res["images"][0]), odd);
}

#[test]
fn every_command_prints_non_utf8_names_without_failing() {
    use std::ffi::{OsStr, OsString};
    use std::os::unix::ffi::OsStrExt;
    let tmp = tempfile::tempdir().unwrap();
    let base = std::fs::canonicalize(tmp.path()).unwrap();
    // A root whose own name is not UTF-8, holding a photo whose name is not either.
    let root = base.join(OsStr::from_bytes(b"Fotos-\xc4ltere"));
    std::fs::create_dir_all(&root).unwrap();
    let photo = root.join(OsStr::from_bytes(b"r\xe9sum\xe9.png"));
    picture(5).save(&photo).unwrap();
    let db = base.join("db");
    let fixtures = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures");
    let run = |args: &[&OsStr]| {
        Command::new(env!("CARGO_BIN_EXE_clipdex"))
            .arg("--db")
            .arg(&db)
            .arg("--model")
            .arg(model())
            .arg("--seg-model")
            .arg(fixtures.join("clipseg/clipseg-tiny"))
            .arg("--caption-model")
            .arg(fixtures.join("blip/blip-tiny-captioning"))
            .args(args)
            .output()
            .unwrap()
    };
    let s = |x: &str| OsString::from(x);
    let exact = |v: &Value, key: &str| {
        clipdex::path_text::from_json(v[key].as_str().unwrap(), v[format!("{key}_bytes")].as_str()).unwrap()
    };
    assert!(run(&[&s("add"), root.as_os_str()]).status.success());
    let roots = ok_json(run(&[&s("roots"), &s("--json")]));
    assert_eq!(
        clipdex::path_text::from_json(roots["roots"][0].as_str().unwrap(), roots["roots_bytes"][0].as_str()).unwrap(),
        root
    );
    let roots_text = String::from_utf8(run(&[&s("roots")]).stdout).unwrap();
    assert!(roots_text.contains("Fotos-\\xC4ltere"), "{roots_text}");
    assert_eq!(ok_json(run(&[&s("index"), &s("--json")]))["embedded"], 1);
    let tag = ok_json(run(&[&s("tag"), photo.as_os_str(), &s("--labels"), &s("cat,dog"), &s("--json")]));
    assert_eq!(exact(&tag["images"][0], "path"), photo);
    let described = ok_json(run(&[&s("describe"), photo.as_os_str(), &s("-k"), &s("2"), &s("--json")]));
    assert_eq!(exact(&described, "path"), photo);
    let found = ok_json(run(&[&s("search"), &s("photo"), &s("--json")]));
    let id = found["results"][0]["id"].as_u64().unwrap().to_string();
    let shown = ok_json(run(&[&s("show"), &s(&id), &s("--json")]));
    assert_eq!(
        clipdex::path_text::from_json(shown["paths"][0].as_str().unwrap(), shown["paths_bytes"][0].as_str()).unwrap(),
        photo
    );
    let captions = ok_json(run(&[
        &s("caption"),
        photo.as_os_str(),
        &s("--beams"),
        &s("1"),
        &s("--max-tokens"),
        &s("3"),
        &s("--json"),
    ]));
    assert_eq!(exact(&captions["captions"][0], "path"), photo);
    let out = base.join("masks");
    let seg = ok_json(run(&[
        &s("segment"),
        photo.as_os_str(),
        &s("--prompt"),
        &s("a cat"),
        &s("--out"),
        out.as_os_str(),
        &s("--json"),
    ]));
    assert_eq!(exact(&seg, "image"), photo);
    // The output files keep the photo's name byte for byte.
    let mask = exact(&seg["prompts"][0], "mask");
    assert!(mask.is_file(), "{mask:?}");
    assert!(mask.file_name().unwrap().as_bytes().starts_with(b"r\xe9sum\xe9.0."));
}

#[test]
fn a_killed_autotag_keeps_the_labels_it_embedded() {
    let (tmp, db, _photos) = library(2);
    let vocab = tmp.path().join("vocab.txt");
    let labels: Vec<String> = (0..3000).map(|i| format!("thing number {i}")).collect();
    std::fs::write(&vocab, labels.join("\n")).unwrap();
    let cached = || ok_json(clipdex(&db, &["stats", "--json"]))["cached_labels"].as_u64().unwrap();
    // Kill it later and later until it dies with part of the labels embedded.
    let mut delay = 150u64;
    let kept = loop {
        let mut child = Command::new(env!("CARGO_BIN_EXE_clipdex"))
            .arg("--db")
            .arg(&db)
            .arg("--model")
            .arg(model())
            .args(["autotag", "--templates", "photo", "--vocab", vocab.to_str().unwrap()])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(Duration::from_millis(delay));
        let finished = child.try_wait().unwrap().is_some();
        let _ = child.kill();
        let _ = child.wait();
        let n = cached();
        if n > 0 && n < labels.len() as u64 {
            break n;
        }
        assert!(!finished && n == 0, "all {} labels were embedded within {delay} ms: use more", labels.len());
        assert!(delay < 20_000, "never caught it half-way");
        delay += 150;
    };
    let report =
        ok_json(clipdex(&db, &["autotag", "--templates", "photo", "--vocab", vocab.to_str().unwrap(), "--json"]));
    assert_eq!(report["labels_embedded"].as_u64(), Some(labels.len() as u64 - kept), "{report}");
}
