//! A library whose face model is InsightFace's pair (the tiny random-weight buffalo_l layout in
//! tests/fixtures/insightface-tiny): 512-d face vectors stored and read back on both backends,
//! ArcFace's grouping defaults, a change to a model of another width, and the CLI end to end
//! (`faces --face-model DIR`, `index --faces --face-model DIR`).

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;

use clipdex::library::{FaceFinder, FoundFace};
use clipdex::models::faces::FaceModel;
use clipdex::query::people::ClusterOptions;
use clipdex::{Library, LibraryConfig};
use common::backends::test_databases;

const PHOTOS: [&str; 4] = ["astronaut.png", "astronaut_tilt15.png", "biden.png", "two_people.png"];

fn insight() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/insightface-tiny")
}

fn clip() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/clip-tiny-p32")
}

fn photos_in(dir: &Path) -> PathBuf {
    let photos = dir.join("photos");
    std::fs::create_dir_all(&photos).unwrap();
    for name in PHOTOS {
        std::fs::copy(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/faces").join(name), photos.join(name))
            .unwrap();
    }
    photos
}

/// A model of dlib's width: one 128-d face per photo.
struct Narrow;

impl FaceFinder for Narrow {
    fn id(&self) -> String {
        "narrow-128".into()
    }

    fn faces(&self, _: &image::RgbImage) -> clipdex::Result<Vec<FoundFace>> {
        Ok(vec![FoundFace {
            bbox: [1.0, 1.0, 60.0, 60.0],
            score: 1.0,
            landmarks: [[10.0, 10.0]; 5],
            embedding: vec![0.1; 128],
        }])
    }
}

#[test]
fn arcface_vectors_are_stored_on_both_backends_and_a_change_of_width_is_taken() {
    for db in test_databases() {
        let tmp = tempfile::tempdir().unwrap();
        let photos = photos_in(tmp.path());
        let lib = Library::open(LibraryConfig::new(db.location.clone(), clip().to_str().unwrap())).unwrap();
        lib.add_root(&photos).unwrap();
        lib.index(&|_, _| {}).unwrap();
        assert_eq!(lib.cluster_options().unwrap(), ClusterOptions::default(), "{}: dlib's until told", db.backend);
        let model = Arc::new(FaceModel::load(&insight()).unwrap());
        let expected: usize = PHOTOS
            .iter()
            .map(|p| {
                let img = image::open(photos.join(p)).unwrap().to_rgb8();
                model.faces(&img).unwrap().len()
            })
            .sum();
        assert!(expected > 0, "the tiny detector finds faces of 40 px and more");
        lib.set_face_finder(Some(model.clone()));
        assert_eq!(lib.cluster_options().unwrap(), ClusterOptions::arcface(), "{}", db.backend);
        let report = lib.find_faces_pending(&|_, _| {}, &|| false).unwrap().unwrap();
        assert_eq!((report.scanned, report.faces, report.failed.len()), (PHOTOS.len(), expected, 0), "{}", db.backend);
        let mut stored = 0;
        for item in lib.store().images() {
            for face in lib.store().faces_of(item.unwrap().0).unwrap() {
                let e = &face.face.embedding;
                assert_eq!(e.len(), 512, "{}", db.backend);
                assert!((e.iter().map(|v| v * v).sum::<f32>() - 1.0).abs() < 1e-4, "{}: unit length", db.backend);
                stored += 1;
            }
        }
        assert_eq!(stored, expected, "{}", db.backend);
        assert!(lib.store().check().unwrap().is_empty(), "{}", db.backend);

        // Another model of another width: every photo is looked at again, and the 128-d
        // vectors replace the 512-d ones.
        lib.set_face_finder(Some(Arc::new(Narrow)));
        let report = lib.find_faces_pending(&|_, _| {}, &|| false).unwrap().unwrap();
        assert_eq!((report.scanned, report.failed.len()), (PHOTOS.len(), 0), "{}", db.backend);
        for item in lib.store().images() {
            let faces = lib.store().faces_of(item.unwrap().0).unwrap();
            assert!(faces.iter().all(|f| f.face.embedding.len() == 128), "{}", db.backend);
        }
        assert!(lib.store().check().unwrap().is_empty(), "{}", db.backend);
    }
}

fn clipdex(db: &Path, args: &[&str]) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_clipdex"))
        .arg("--db")
        .arg(db)
        .arg("--model")
        .arg(clip())
        .env_remove("CLIPDEX_FACE_MODEL")
        .args(args)
        .output()
        .unwrap();
    assert!(out.status.success(), "{args:?}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap()
}

#[test]
fn the_cli_finds_faces_and_indexes_a_library_with_insightface_models() {
    let tmp = tempfile::tempdir().unwrap();
    let photos = photos_in(tmp.path());
    let db = tmp.path().join("db");
    let models = insight();
    let models = models.to_str().unwrap();
    let photo = photos.join("astronaut.png");
    let json: serde_json::Value =
        serde_json::from_str(&clipdex(&db, &["faces", "--face-model", models, photo.to_str().unwrap(), "--json"]))
            .unwrap();
    let faces = json[0]["faces"].as_array().unwrap();
    assert!(!faces.is_empty(), "{json}");
    assert!(faces.iter().all(|f| f["landmarks"].as_array().unwrap().len() == 5), "{json}");

    clipdex(&db, &["add", photos.to_str().unwrap()]);
    let report: serde_json::Value =
        serde_json::from_str(&clipdex(&db, &["index", "--faces", "--face-model", models, "--json"])).unwrap();
    assert_eq!(report["faces_scanned"], PHOTOS.len(), "{report}");
    let got: serde_json::Value =
        serde_json::from_str(&clipdex(&db, &["config", "get", "face_model", "--json"])).unwrap();
    assert_eq!(got["value"], std::fs::canonicalize(models).unwrap().to_str().unwrap());
    let lib = Library::open_as_stored(LibraryConfig::new(&db, clip().to_str().unwrap())).unwrap();
    assert_eq!(lib.cluster_options().unwrap(), ClusterOptions::arcface(), "ArcFace's defaults from the setting");
    let faces = lib.store().face_count().unwrap();
    assert!(faces > 0);
    drop(lib);
    // Nothing changed: nothing is looked at again.
    let report: serde_json::Value = serde_json::from_str(&clipdex(&db, &["index", "--json"])).unwrap();
    assert_eq!(report["faces_scanned"], 0, "{report}");
}
