//! The face pass by itself, with dlib's real models (tools/fetch_face_models.sh): `face_model`
//! as a library setting (a disagreeing flag refused), `index --faces` finding and grouping the
//! faces, a pass killed midway that loses nothing and is completed by the next one. Without
//! the models the tests say so and pass, unless `CI` is set.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use clipdex::{Library, LibraryConfig};

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/faces")
}

fn clip() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/clip-tiny-p32")
}

/// Where tools/fetch_face_models.sh puts the models (or `CLIPDEX_FACE_MODELS`), when they are
/// there; without them the tests say so and pass, unless `CI` is set.
fn models() -> Option<PathBuf> {
    let dir = std::env::var_os("CLIPDEX_FACE_MODELS").map(PathBuf::from).unwrap_or_else(|| {
        let cache = std::env::var_os("XDG_CACHE_HOME")
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from(std::env::var_os("HOME").unwrap_or_default()).join(".cache"));
        cache.join("clipdex-ci/face-models")
    });
    if dir.join("mmod_human_face_detector.dat").is_file() {
        return Some(dir);
    }
    assert!(std::env::var_os("CI").is_none(), "CI is set but the face models are not in {}", dir.display());
    eprintln!("skipped: no face models in {} (run tools/fetch_face_models.sh)", dir.display());
    None
}

fn clipdex(db: &Path) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_clipdex"));
    command.arg("--db").arg(db).arg("--model").arg(clip()).env_remove("CLIPDEX_FACE_MODEL");
    command
}

fn run(db: &Path, args: &[&str]) -> Output {
    clipdex(db).args(args).output().unwrap()
}

fn ok(db: &Path, args: &[&str]) -> String {
    let out = run(db, args);
    assert!(out.status.success(), "{args:?}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap()
}

/// The photos: four of one man, a stranger, an astronaut and a coffee cup (6 faces, as dlib
/// finds them).
const PHOTOS: [&str; 7] =
    ["obama.png", "obama_flip.png", "obama_large.png", "obama_small.png", "biden.png", "astronaut.png", "coffee.png"];
const FACES: u64 = 6;

fn library_with_photos(tmp: &Path) -> PathBuf {
    let photos = tmp.join("photos");
    std::fs::create_dir_all(&photos).unwrap();
    for name in PHOTOS {
        std::fs::copy(fixtures().join(name), photos.join(name)).unwrap();
    }
    let db = tmp.join("db");
    ok(&db, &["add", photos.to_str().unwrap()]);
    db
}

/// Faces, persons and the store's own check, read through the library.
fn state(db: &Path) -> (u64, usize, Vec<usize>) {
    let lib = Library::open_as_stored(LibraryConfig::new(db, clip().to_str().unwrap())).unwrap();
    let problems = lib.store().check().unwrap();
    assert!(problems.is_empty(), "inconsistent after a kill: {problems:?}");
    let images = lib.store().images().count();
    let scanned =
        lib.store().images().filter(|r| lib.store().face_scan(r.as_ref().unwrap().0).unwrap().is_some()).count();
    let people: Vec<usize> = lib.people(true).unwrap().iter().map(|p| p.faces).collect();
    assert!(scanned <= images);
    (lib.store().face_count().unwrap(), scanned, people)
}

#[test]
fn the_face_model_is_a_library_setting_and_index_finds_faces_by_itself() {
    let Some(models) = models() else { return };
    let tmp = tempfile::tempdir().unwrap();
    let db = library_with_photos(tmp.path());
    let models = models.to_str().unwrap();
    // Without a model, --faces says how to give one.
    let out = run(&db, &["index", "--faces"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--face-model DIR"));
    // `none`: no face data is made, and a folder disagreeing with it is refused.
    ok(&db, &["config", "set", "face_model", "none"]);
    let report: serde_json::Value = serde_json::from_str(&ok(&db, &["index", "--json"])).unwrap();
    assert_eq!(report["faces_scanned"], 0, "{report}");
    let out = run(&db, &["index", "--face-model", models]);
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && said.contains("config set face_model"), "{said}");
    assert_eq!(state(&db).0, 0);
    // Forgotten, a flag records it; the faces are found after embedding and grouped.
    ok(&db, &["config", "set", "face_model", "default"]);
    let report: serde_json::Value =
        serde_json::from_str(&ok(&db, &["index", "--faces", "--face-model", models, "--json"])).unwrap();
    assert_eq!(report["faces_scanned"], PHOTOS.len(), "{report}");
    let got: serde_json::Value = serde_json::from_str(&ok(&db, &["config", "get", "face_model", "--json"])).unwrap();
    assert_eq!(got["value"], std::fs::canonicalize(models).unwrap().to_str().unwrap());
    let (faces, scanned, people) = state(&db);
    assert_eq!((faces, scanned), (FACES, PHOTOS.len()), "4 of him, the stranger, the astronaut");
    assert_eq!(people, [4], "his four photos are one person");
    // Nothing changed: the next pass looks at nothing; another folder is refused.
    let report: serde_json::Value = serde_json::from_str(&ok(&db, &["index", "--json"])).unwrap();
    assert_eq!(report["faces_scanned"], 0, "{report}");
    let elsewhere = tmp.path().join("elsewhere");
    std::fs::create_dir(&elsewhere).unwrap();
    let out = run(&db, &["people", "--scan", "--face-model", elsewhere.to_str().unwrap()]);
    assert!(!out.status.success(), "a disagreeing --face-model is refused");
    let scan: serde_json::Value = serde_json::from_str(&ok(&db, &["people", "--scan", "--json"])).unwrap();
    assert_eq!(scan["scanned"], 0, "{scan}");
}

/// The face pass killed (SIGKILL) after it stored some images' faces: the store is consistent,
/// every image is either looked at in full or not at all, and the next pass completes it to
/// what an uninterrupted pass finds.
#[test]
fn a_face_pass_killed_midway_loses_nothing() {
    let Some(models) = models() else { return };
    let tmp = tempfile::tempdir().unwrap();
    let db = library_with_photos(tmp.path());
    ok(&db, &["index"]);
    ok(&db, &["config", "set", "face_model", models.to_str().unwrap()]);
    for (round, after) in [1usize, 3].into_iter().enumerate() {
        let mut child = clipdex(&db)
            .args(["people", "--scan"])
            .env("RUST_LOG", "clipdex::library=debug")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        // Killed once `after` more images' faces are stored (the pass logs each).
        let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
        let mut stored = 0;
        while stored < after {
            match lines.next() {
                Some(Ok(line)) if line.contains("faces of image") => stored += 1,
                Some(_) => {}
                None => break,
            }
        }
        child.kill().unwrap();
        child.wait().unwrap();
        let (_, scanned, _) = state(&db);
        eprintln!("round {round}: killed after {stored} images, {scanned} of {} looked at", PHOTOS.len());
        assert!(scanned >= stored && scanned < PHOTOS.len(), "killed midway: {scanned} looked at");
    }
    let scan: serde_json::Value = serde_json::from_str(&ok(&db, &["people", "--scan", "--json"])).unwrap();
    assert!(scan["scanned"].as_u64().unwrap() < PHOTOS.len() as u64, "the rerun goes on where the kill stopped");
    let (faces, scanned, people) = state(&db);
    assert_eq!((faces, scanned), (FACES, PHOTOS.len()));
    assert_eq!(people, [4], "{scan}");
}
