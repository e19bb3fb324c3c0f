//! `reindex`: moving a library from one fixture model to the other. The old vectors answer
//! while the new ones are written, the switch leaves exactly the vectors a fresh index with the
//! new model would have, an interrupted run resumes, photos indexed meanwhile are included,
//! and a photo edited since it was indexed is dropped and picked up by the next `index`. On
//! every backend under test (PostgreSQL too when `CLIPDEX_TEST_PG` names a server).

use std::path::{Path, PathBuf};
use std::sync::Mutex;

use clipdex::query::SearchFilter;
use clipdex::query::autotag::AutotagSettings;
use clipdex::{Library, LibraryConfig};

mod common;
use common::backends::{TestDb, test_databases};

fn model(name: &str) -> String {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures").join(name).to_string_lossy().into_owned()
}

fn fixture_image(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/images").join(name)
}

fn quiet(_: u64, _: u64) {}

const PHOTOS: &[&str] = &["astronaut.jpg", "coffee.png", "rocket.webp", "chelsea_small.bmp", "camera_gray.jpg"];

/// A library of five photos indexed with the p32 fixture in `db`, reindexed in batches of two.
fn indexed_library(tmp: &Path, db: &TestDb) -> (Library, PathBuf) {
    let photos = tmp.join("photos");
    std::fs::create_dir_all(&photos).unwrap();
    for p in PHOTOS {
        std::fs::copy(fixture_image(p), photos.join(p)).unwrap();
    }
    let photos = std::fs::canonicalize(photos).unwrap();
    let mut config = LibraryConfig::new(db.location.clone(), model("clip-tiny-p32"));
    config.batch_size = 2;
    let lib = Library::open(config).unwrap();
    lib.add_root(&photos).unwrap();
    lib.index(&quiet).unwrap();
    (lib, photos)
}

fn vectors(lib: &Library) -> Vec<(PathBuf, Vec<f32>)> {
    let mut out: Vec<_> = lib
        .store()
        .paths_under(Path::new(""))
        .unwrap()
        .into_iter()
        .map(|(p, e)| (PathBuf::from(p.file_name().unwrap()), lib.store().vector(e.id).unwrap().unwrap()))
        .collect();
    out.sort_by(|a, b| a.0.cmp(&b.0));
    out
}

#[test]
fn reindex_switches_to_exactly_the_new_models_vectors_while_the_old_ones_answer() {
    for db in test_databases() {
        eprintln!("{}", db.backend);
        let tmp = tempfile::tempdir().unwrap();
        let (lib, _) = indexed_library(tmp.path(), &db);
        let labels: Vec<String> = ["cat", "rocket", "cup of coffee"].iter().map(|s| s.to_string()).collect();
        lib.autotag(Some(AutotagSettings::new(labels, vec!["a photo of a {}.".into()]))).unwrap();
        let before = lib.search_text("a rocket", 5, &SearchFilter::default()).unwrap();
        let old_dim = lib.stats().unwrap().dim.unwrap();

        // Searches made while the new vectors are written see the old model's answers.
        let during = Mutex::new(None);
        let report = lib
            .reindex(&model("clip-tiny-p16"), &|done, _| {
                if done == 2 {
                    *during.lock().unwrap() = Some(lib.search_text("a rocket", 5, &SearchFilter::default()).unwrap());
                    assert_eq!(lib.stats().unwrap().reindex.unwrap().done, 2);
                }
            })
            .unwrap();
        assert_eq!(during.lock().unwrap().take().unwrap(), before);
        assert_eq!((report.embedded, report.resumed, report.failed, report.tagged), (5, 0, 0, 5));

        let stats = lib.stats().unwrap();
        assert_eq!(stats.model.as_deref(), Some(model("clip-tiny-p16").as_str()));
        assert!(stats.reindex.is_none());
        assert_ne!(stats.dim, Some(old_dim));
        assert_eq!(stats.counts.vectors, 5);
        assert!(lib.store().check().unwrap().is_empty());

        // The same vectors as a library indexed with the new model from the start.
        let fresh_tmp = tempfile::tempdir().unwrap();
        let fresh = Library::open(LibraryConfig::new(fresh_tmp.path().join("db"), model("clip-tiny-p16"))).unwrap();
        fresh.add_root(&tmp.path().join("photos")).unwrap();
        fresh.index(&quiet).unwrap();
        let (a, b) = (vectors(&lib), vectors(&fresh));
        assert_eq!(a.len(), b.len());
        for ((pa, va), (pb, vb)) in a.iter().zip(&b) {
            assert_eq!(pa, pb);
            assert!(va.iter().zip(vb).all(|(x, y)| (x - y).abs() < 1e-5), "{}", pa.display());
        }
        // Searches now embed with the new model, in this process and after reopening.
        assert_eq!(lib.search_text("a rocket", 5, &SearchFilter::default()).unwrap().len(), 5);
        drop(lib);
        let reopened = Library::open(LibraryConfig::new(db.location.clone(), model("clip-tiny-p16"))).unwrap();
        let got = reopened.search_text("a rocket", 5, &SearchFilter::default()).unwrap();
        let want = fresh.search_text("a rocket", 5, &SearchFilter::default()).unwrap();
        for (g, w) in got.iter().zip(&want) {
            assert_eq!(g.path, w.path);
            assert!((g.score - w.score).abs() < 1e-5);
        }
        assert!(reopened.reindex(&model("clip-tiny-p16"), &quiet).unwrap_err().to_string().contains("already uses"));
        drop(reopened);
        let refused = Library::open(LibraryConfig::new(db.location.clone(), model("clip-tiny-p32")));
        assert!(refused.err().unwrap().to_string().contains("holds vectors of model"));
    }
}

#[test]
fn an_interrupted_reindex_resumes_and_photos_added_meanwhile_are_included() {
    for db in test_databases() {
        eprintln!("{}", db.backend);
        let tmp = tempfile::tempdir().unwrap();
        let (lib, photos) = indexed_library(tmp.path(), &db);
        let interrupted = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            lib.reindex(&model("clip-tiny-p16"), &|done, _| assert!(done < 4, "interrupted")).unwrap();
        }));
        assert!(interrupted.is_err());
        drop(lib);

        let mut config = LibraryConfig::new(db.location.clone(), model("clip-tiny-p32"));
        config.batch_size = 2;
        let lib = Library::open(config).unwrap();
        let state = lib.stats().unwrap().reindex.unwrap();
        assert_eq!((state.done, state.of), (4, 5));
        // Still the old model until the switch.
        assert_eq!(lib.search_text("x", 5, &SearchFilter::default()).unwrap().len(), 5);

        // Resume; a photo arrives (and is indexed with the old model) during the run.
        let added = Mutex::new(false);
        let report = lib
            .reindex(&model("clip-tiny-p16"), &|done, total| {
                let mut added = added.lock().unwrap();
                if done == total && !*added {
                    *added = true;
                    std::fs::copy(fixture_image("coffee_palette.gif"), photos.join("new.gif")).unwrap();
                    assert_eq!(lib.index(&quiet).unwrap().embedded, 1);
                }
            })
            .unwrap();
        assert_eq!((report.resumed, report.embedded), (4, 2), "the fifth photo, then the new one");
        assert_eq!(lib.stats().unwrap().counts.vectors, 6);
        assert!(lib.store().check().unwrap().is_empty());
        let dim = lib.stats().unwrap().dim.unwrap();
        assert!(lib.store().vectors().all(|v| v.unwrap().1.len() == dim));
    }
}

#[test]
fn a_photo_edited_since_indexing_is_dropped_and_comes_back_with_the_next_index() {
    for db in test_databases() {
        eprintln!("{}", db.backend);
        let tmp = tempfile::tempdir().unwrap();
        let (lib, photos) = indexed_library(tmp.path(), &db);
        std::fs::copy(fixture_image("coffee_palette.png"), photos.join("coffee.png")).unwrap();
        let report = lib.reindex(&model("clip-tiny-p16"), &quiet).unwrap();
        assert_eq!((report.embedded, report.failed), (4, 1));
        assert!(lib.store().path_entry(&photos.join("coffee.png")).unwrap().is_none());
        let again = lib.index(&quiet).unwrap();
        assert_eq!(again.embedded, 1);
        assert_eq!(lib.stats().unwrap().counts.vectors, 5);
        assert!(lib.store().check().unwrap().is_empty());
    }
}

#[test]
fn the_search_graph_of_the_old_vectors_is_replaced() {
    // The folder store's own graph (PostgreSQL's index is tested in store_backends).
    let tmp = tempfile::tempdir().unwrap();
    let dbs = test_databases();
    let clipdex::store::DbLocation::Dir(dir) = dbs[0].location.clone() else { unreachable!("sled first") };
    let (lib, photos) = indexed_library(tmp.path(), &dbs[0]);
    drop(lib);
    let open = |m: &str| {
        let mut config = LibraryConfig::new(dir.clone(), model(m));
        config.graph_min = 1;
        Library::open_as_stored(config).unwrap()
    };
    let lib = open("clip-tiny-p32");
    assert!(lib.maintain_index().unwrap().rebuilt);
    assert_eq!(lib.search_text("x", 3, &SearchFilter::default()).unwrap().len(), 3);
    assert_eq!(lib.stats().unwrap().index.kind, "hnsw");
    assert!(dir.join("hnsw").is_dir());
    lib.reindex(&model("clip-tiny-p16"), &quiet).unwrap();
    assert!(!dir.join("hnsw").exists());
    assert!(dir.join("hnsw.1").is_dir(), "reindex builds the new graph");
    assert!(!lib.stats().unwrap().index.needs_maintenance());
    let hits = lib.search_text("x", 5, &SearchFilter::default()).unwrap();
    // The new graph ranks like an exact scan of the new vectors.
    let q = lib.clip().unwrap().embed_texts(&["x"]).unwrap().remove(0);
    let mut exact: Vec<(PathBuf, f32)> = lib
        .store()
        .paths_under(&photos)
        .unwrap()
        .into_iter()
        .map(|(p, e)| {
            let v = lib.store().vector(e.id).unwrap().unwrap();
            (p, v.iter().zip(&q).map(|(a, b)| a * b).sum())
        })
        .collect();
    exact.sort_by(|a, b| b.1.total_cmp(&a.1));
    for (h, (p, s)) in hits.iter().zip(&exact) {
        assert_eq!(&h.path, p);
        assert!((h.score - s).abs() < 1e-4);
    }
}

#[test]
fn reindex_moves_a_clip_library_to_an_openclip_or_a_siglip() {
    for (target, dim) in
        [("openclip-tiny-gelu", 20), ("mobileclip-tiny-s", 24), ("siglip-tiny-p16", 32), ("siglip2-tiny-naflex", 36)]
    {
        for db in test_databases() {
            eprintln!("{} -> {target}", db.backend);
            let tmp = tempfile::tempdir().unwrap();
            let (lib, photos) = indexed_library(tmp.path(), &db);
            let report = lib.reindex(&model(target), &quiet).unwrap();
            assert_eq!((report.embedded, report.failed), (5, 0), "{target}");
            let stats = lib.stats().unwrap();
            assert_eq!((stats.model.as_deref(), stats.dim), (Some(model(target).as_str()), Some(dim)));
            assert!(lib.store().check().unwrap().is_empty());

            // Exactly the vectors of a library indexed with that model from the start.
            let fresh_tmp = tempfile::tempdir().unwrap();
            let fresh = Library::open(LibraryConfig::new(fresh_tmp.path().join("db"), model(target))).unwrap();
            fresh.add_root(&photos).unwrap();
            fresh.index(&quiet).unwrap();
            let (a, b) = (vectors(&lib), vectors(&fresh));
            assert_eq!(a.len(), 5);
            for ((pa, va), (pb, vb)) in a.iter().zip(&b) {
                assert_eq!(pa, pb);
                assert!(va.iter().zip(vb).all(|(x, y)| (x - y).abs() < 1e-5), "{target}: {}", pa.display());
            }
            drop(lib);
            // Reopened, queries embed with the new family's text tower.
            let reopened = Library::open(LibraryConfig::new(db.location.clone(), model(target))).unwrap();
            let got = reopened.search_text("a rocket", 5, &SearchFilter::default()).unwrap();
            let want = fresh.search_text("a rocket", 5, &SearchFilter::default()).unwrap();
            assert_eq!(got.len(), 5);
            for (g, w) in got.iter().zip(&want) {
                assert_eq!(g.path, w.path);
                assert!((g.score - w.score).abs() < 1e-5);
            }
        }
    }
}
