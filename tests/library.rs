//! The library database end to end, on the tiny fixture model and generated photo folders,
//! on every backend: a folder (sled) and, when `CLIPDEX_TEST_PG` names a server, PostgreSQL.

use std::path::{Path, PathBuf};

use clipdex::query::SearchFilter;
use clipdex::{Library, LibraryConfig};

mod common;
use common::backends::{TestDb, test_databases};
use common::picture;

fn model() -> String {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/clip-tiny-p32").to_string_lossy().into_owned()
}

fn fixture_image(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/images").join(name)
}

fn write_picture(dir: &Path, name: &str, seed: u32) -> PathBuf {
    std::fs::create_dir_all(dir).unwrap();
    let path = dir.join(name);
    picture(seed).save(&path).unwrap();
    path
}

fn open(db: &TestDb) -> Library {
    Library::open(LibraryConfig::new(db.location.clone(), model())).unwrap()
}

fn quiet(_: u64, _: u64) {}

struct Setup {
    _tmp: tempfile::TempDir,
    db: TestDb,
    photos: PathBuf,
}

/// A photo folder of `n` pictures and an empty library, for each backend under test.
fn setups(n: u32) -> Vec<Setup> {
    test_databases().into_iter().map(|db| setup_on(db, n)).collect()
}

fn setup_on(db: TestDb, n: u32) -> Setup {
    let tmp = tempfile::tempdir().unwrap();
    let photos = tmp.path().join("photos");
    std::fs::create_dir_all(&photos).unwrap();
    for i in 0..n {
        let sub = if i % 2 == 0 { photos.join("even") } else { photos.join("odd") };
        write_picture(&sub, &format!("p{i:02}.{}", if i % 3 == 0 { "png" } else { "jpg" }), i);
    }
    let photos = std::fs::canonicalize(&photos).unwrap();
    Setup { db, photos, _tmp: tmp }
}

fn all(lib: &Library, k: usize) -> Vec<clipdex::query::SearchHit> {
    lib.search_text("a photo", k, &SearchFilter::default()).unwrap()
}

#[test]
fn indexes_once_and_an_unchanged_rerun_embeds_nothing() {
    for s in setups(10) {
        eprintln!("indexes_once_and_an_unchanged_rerun_embeds_nothing: {}", s.db.backend);
        indexes_once_and_an_unchanged_rerun_embeds_nothing_on(&s);
    }
}

fn indexes_once_and_an_unchanged_rerun_embeds_nothing_on(s: &Setup) {
    let lib = open(&s.db);
    lib.add_root(&s.photos).unwrap();
    let r = lib.index(&quiet).unwrap();
    assert_eq!((r.seen, r.embedded, r.failed), (10, 10, 0));
    let st = lib.stats().unwrap();
    assert_eq!((st.counts.images, st.counts.paths, st.counts.vectors), (10, 10, 10));
    assert_eq!(st.model.as_deref(), Some(model().as_str()));

    let r = lib.index(&quiet).unwrap();
    assert_eq!((r.seen, r.unchanged, r.embedded, r.linked, r.removed), (10, 10, 0, 0, 0));
    assert!(lib.store().check().unwrap().is_empty());
}

#[test]
fn renames_moves_copies_deletions_and_edits() {
    for s in setups(6) {
        eprintln!("renames_moves_copies_deletions_and_edits: {}", s.db.backend);
        renames_moves_copies_deletions_and_edits_on(&s);
    }
}

fn renames_moves_copies_deletions_and_edits_on(s: &Setup) {
    let lib = open(&s.db);
    lib.add_root(&s.photos).unwrap();
    lib.index(&quiet).unwrap();
    let id_of = |p: &Path| lib.store().path_entry(p).unwrap().map(|e| e.id);

    // Rename and move: same id, nothing embedded.
    let a = s.photos.join("even/p00.png");
    let a_id = id_of(&a).unwrap();
    let renamed = s.photos.join("odd/moved-here.png");
    std::fs::rename(&a, &renamed).unwrap();
    // Copy: shares the id.
    let b = s.photos.join("odd/p01.jpg");
    let b_id = id_of(&b).unwrap();
    let copy = s.photos.join("even/copy-of-p01.jpg");
    std::fs::copy(&b, &copy).unwrap();
    // Delete.
    let c = s.photos.join("even/p02.jpg");
    let c_id = id_of(&c).unwrap();
    std::fs::remove_file(&c).unwrap();
    // Edit: new content under the same name.
    let d = s.photos.join("odd/p03.png");
    let d_id = id_of(&d).unwrap();
    picture(99).save(&d).unwrap();

    let r = lib.index(&quiet).unwrap();
    assert_eq!(r.embedded, 1, "only the edited file is embedded: {r:?}");
    assert_eq!(r.linked, 2, "{r:?}");
    assert_eq!(id_of(&renamed), Some(a_id));
    assert_eq!(id_of(&a), None);
    assert_eq!(id_of(&copy), Some(b_id));
    assert_eq!(lib.store().paths_of(b_id).unwrap().len(), 2);
    assert_eq!(id_of(&c), None);
    assert!(lib.store().image(c_id).unwrap().is_none(), "a deleted image leaves the store");
    let new_d = id_of(&d).unwrap();
    assert_ne!(new_d, d_id);
    assert!(lib.store().image(d_id).unwrap().is_none());

    let hits = all(&lib, 100);
    assert_eq!(hits.len(), 5);
    assert!(hits.iter().all(|h| h.id != c_id && h.id != d_id && h.path != a));
    assert!(lib.store().check().unwrap().is_empty());
}

#[test]
fn identical_files_share_one_embedding() {
    for s in setups(0) {
        eprintln!("identical_files_share_one_embedding: {}", s.db.backend);
        identical_files_share_one_embedding_on(&s);
    }
}

fn identical_files_share_one_embedding_on(s: &Setup) {
    let p = write_picture(&s.photos.join("x"), "one.jpg", 5);
    std::fs::create_dir_all(s.photos.join("y")).unwrap();
    std::fs::copy(&p, s.photos.join("y/two.jpg")).unwrap();
    std::fs::copy(&p, s.photos.join("y/three.jpg")).unwrap();
    let lib = open(&s.db);
    lib.add_root(&s.photos).unwrap();
    let r = lib.index(&quiet).unwrap();
    assert_eq!((r.embedded, r.linked), (1, 2));
    let st = lib.stats().unwrap();
    assert_eq!((st.counts.images, st.counts.paths, st.counts.vectors), (1, 3, 1));
}

#[test]
fn an_image_is_its_own_nearest_neighbour() {
    for s in setups(8) {
        eprintln!("an_image_is_its_own_nearest_neighbour: {}", s.db.backend);
        an_image_is_its_own_nearest_neighbour_on(&s);
    }
}

fn an_image_is_its_own_nearest_neighbour_on(s: &Setup) {
    let lib = open(&s.db);
    lib.add_root(&s.photos).unwrap();
    lib.index(&quiet).unwrap();
    for i in [1u32, 4, 6] {
        let sub = if i % 2 == 0 { "even" } else { "odd" };
        let path = s.photos.join(sub).join(format!("p{i:02}.{}", if i % 3 == 0 { "png" } else { "jpg" }));
        let hits = lib.search_image(&path, 3, &SearchFilter::default()).unwrap();
        assert_eq!(hits[0].path, path);
        assert!(hits[0].score > 0.999, "{}", hits[0].score);
        assert!(hits[0].score > hits[1].score);
    }
}

#[test]
fn filters_return_k_results_when_k_exist() {
    for s in setups(12) {
        eprintln!("filters_return_k_results_when_k_exist: {}", s.db.backend);
        filters_return_k_results_when_k_exist_on(&s);
    }
}

fn filters_return_k_results_when_k_exist_on(s: &Setup) {
    // Dates from file times: odd pictures in 2020, even ones in 2023.
    for entry in walk(&s.photos) {
        let year = if entry.to_string_lossy().contains("/odd/") { 2020 } else { 2023 };
        let t = std::time::UNIX_EPOCH
            + std::time::Duration::from_secs(clipdex::query::parse_date(&format!("{year}-06-01")).unwrap() as u64);
        std::fs::File::options().write(true).open(&entry).unwrap().set_modified(t).unwrap();
    }
    let lib = open(&s.db);
    lib.add_root(&s.photos).unwrap();
    lib.index(&quiet).unwrap();

    let under = SearchFilter { under: Some(s.photos.join("odd")), ..Default::default() };
    let hits = lib.search_text("colours", 4, &under).unwrap();
    assert_eq!(hits.len(), 4);
    assert!(hits.iter().all(|h| h.path.starts_with(s.photos.join("odd"))));
    assert_eq!(lib.search_text("colours", 50, &under).unwrap().len(), 6, "all there are, no more");

    let old = SearchFilter { before: Some(clipdex::query::parse_date("2021").unwrap()), ..Default::default() };
    let hits = lib.search_text("colours", 5, &old).unwrap();
    assert_eq!(hits.len(), 5);
    assert!(hits.iter().all(|h| h.path.to_string_lossy().contains("/odd/")));
    let recent = SearchFilter { after: Some(clipdex::query::parse_date("2023-01").unwrap()), ..Default::default() };
    let hits = lib.search_text("colours", 6, &recent).unwrap();
    assert_eq!(hits.len(), 6);
    assert!(hits.iter().all(|h| h.path.to_string_lossy().contains("/even/")));
    let scores: Vec<f32> = hits.iter().map(|h| h.score).collect();
    assert!(scores.windows(2).all(|w| w[0] >= w[1]), "best first");
}

fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() { out.extend(walk(&p)) } else { out.push(p) }
    }
    out
}

#[test]
fn bad_files_are_recorded_and_retried_only_when_they_change() {
    for s in setups(2) {
        eprintln!("bad_files_are_recorded_and_retried_only_when_they_change: {}", s.db.backend);
        bad_files_are_recorded_and_retried_only_when_they_change_on(&s);
    }
}

fn bad_files_are_recorded_and_retried_only_when_they_change_on(s: &Setup) {
    let bad = s.photos.join("bad");
    std::fs::create_dir_all(&bad).unwrap();
    std::fs::write(bad.join("empty.jpg"), b"").unwrap();
    std::fs::write(bad.join("notes.jpg"), b"this is a text file\n").unwrap();
    let jpeg = std::fs::read(fixture_image("astronaut.jpg")).unwrap();
    std::fs::write(bad.join("truncated.jpg"), &jpeg[..jpeg.len() / 4]).unwrap();
    std::fs::write(bad.join("phone.heic"), b"\0\0\0\x18ftypheic\0\0\0\0mif1heic").unwrap();
    image::RgbImage::new(3000, 3000).save(bad.join("bomb.png")).unwrap();
    #[cfg(unix)]
    {
        use std::os::unix::ffi::OsStrExt;
        let name = std::ffi::OsStr::from_bytes(b"caf\xe9-latin1.png");
        picture(42).save(bad.join(name)).unwrap();
        std::os::unix::fs::symlink(&bad, bad.join("loop")).unwrap();
    }
    let mut config = LibraryConfig::new(s.db.location.clone(), model());
    config.max_pixels = 4_000_000;
    let lib = Library::open(config.clone()).unwrap();
    lib.add_root(&s.photos).unwrap();
    let r = lib.index(&quiet).unwrap();

    let failures = lib.failures().unwrap();
    let reason = |name: &str| {
        failures
            .iter()
            .find(|(p, _)| p.file_name().is_some_and(|f| f.to_string_lossy() == name))
            .map(|(_, f)| f.reason.clone())
            .unwrap_or_else(|| panic!("no failure for {name}: {failures:?}"))
    };
    assert!(reason("empty.jpg").contains("empty"));
    assert!(reason("notes.jpg").contains("not an image"));
    assert!(reason("truncated.jpg").contains("corrupt"), "{}", reason("truncated.jpg"));
    assert!(reason("phone.heic").contains("HEIC"));
    assert!(reason("bomb.png").contains("exceeds the limit"));
    #[cfg(unix)]
    assert!(reason("loop").contains("loop"), "{}", reason("loop"));
    // The non-UTF-8 name is indexed like any other file.
    assert_eq!(r.embedded, 3, "{r:?}");

    let r = lib.index(&quiet).unwrap();
    assert_eq!(r.embedded + r.failed, 0, "nothing retried while unchanged: {r:?}");
    // Five bad files and the symbolic link loop, each seen and skipped.
    assert_eq!(r.skipped_failures, 6);
    assert_eq!(r.seen, r.unchanged + r.skipped_failures, "{r:?}");

    // Fixed files are retried and indexed; their failures go away.
    picture(7).save(bad.join("notes.png")).unwrap();
    std::fs::remove_file(bad.join("notes.jpg")).unwrap();
    std::fs::write(bad.join("truncated.jpg"), &jpeg).unwrap();
    let r = lib.index(&quiet).unwrap();
    assert_eq!(r.embedded, 2, "{r:?}");
    let failures = lib.failures().unwrap();
    assert!(failures.iter().all(|(p, _)| !p.ends_with("notes.jpg") && !p.ends_with("truncated.jpg")), "{failures:?}");
    assert_eq!(lib.stats().unwrap().counts.failures, failures.len() as u64);
    assert!(lib.store().check().unwrap().is_empty());
}

#[test]
fn another_model_is_refused() {
    for s in setups(1) {
        eprintln!("another_model_is_refused: {}", s.db.backend);
        another_model_is_refused_on(&s);
    }
}

fn another_model_is_refused_on(s: &Setup) {
    let lib = open(&s.db);
    lib.add_root(&s.photos).unwrap();
    lib.index(&quiet).unwrap();
    drop(lib);
    let other = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/clip-tiny-p16");
    let err =
        Library::open(LibraryConfig::new(s.db.location.clone(), other.to_string_lossy())).err().unwrap().to_string();
    assert!(err.contains("holds vectors of model") && err.contains("clip-tiny-p32"), "{err}");
}

#[test]
fn a_missing_root_keeps_its_photos_and_remove_forgets_them() {
    for s in setups(3) {
        eprintln!("a_missing_root_keeps_its_photos_and_remove_forgets_them: {}", s.db.backend);
        a_missing_root_keeps_its_photos_and_remove_forgets_them_on(&s);
    }
}

fn a_missing_root_keeps_its_photos_and_remove_forgets_them_on(s: &Setup) {
    let lib = open(&s.db);
    lib.add_root(&s.photos).unwrap();
    lib.index(&quiet).unwrap();
    let aside = s.photos.with_file_name("unplugged");
    std::fs::rename(&s.photos, &aside).unwrap();
    let r = lib.index(&quiet).unwrap();
    assert_eq!(r.missing_roots, vec![s.photos.clone()]);
    assert_eq!(lib.stats().unwrap().counts.images, 3);
    std::fs::rename(&aside, &s.photos).unwrap();
    assert_eq!(lib.remove_root(&s.photos).unwrap(), 3);
    let st = lib.stats().unwrap();
    assert_eq!((st.counts.images, st.counts.paths, st.counts.vectors, st.counts.roots), (0, 0, 0, 0));
}

#[test]
fn fast_jpeg_decoding_stays_close_to_the_exact_path() {
    use clipdex::photo::{DecodeOptions, decode_photo};
    let clip = clipdex::ClipEmbedder::load(&model(), &candle_core::Device::Cpu).unwrap();
    for name in ["coffee_12mp.jpg", "astronaut.jpg", "chelsea_exif6.jpg", "panorama_4000x300.jpg"] {
        let bytes = std::fs::read(fixture_image(name)).unwrap();
        let exact = decode_photo(&bytes, &DecodeOptions::default()).unwrap();
        let fast = decode_photo(&bytes, &DecodeOptions { min_side: Some(224), ..Default::default() }).unwrap();
        assert_eq!((fast.width, fast.height), (exact.width, exact.height), "{name}: full size is kept");
        assert!(fast.image.width().min(fast.image.height()) >= 224.min(exact.width.min(exact.height)));
        let (fw, fh) = fast.image.dimensions();
        let e = clip.embed_images(&[exact.image, fast.image]).unwrap();
        let cos: f32 = e[0].iter().zip(&e[1]).map(|(a, b)| a * b).sum();
        eprintln!(
            "{name}: decoded at {}x{} for {}x{}, cosine to the exact path {cos:.5}",
            fw, fh, exact.width, exact.height
        );
        assert!(cos >= 0.995, "{name}: cosine {cos}");
    }
}

#[test]
fn watch_maintains_the_search_graph_in_the_background() {
    for s in setups(6) {
        eprintln!("watch_maintains_the_search_graph_in_the_background: {}", s.db.backend);
        watch_maintains_the_search_graph_in_the_background_on(&s);
    }
}

fn watch_maintains_the_search_graph_in_the_background_on(s: &Setup) {
    let mut config = LibraryConfig::new(s.db.location.clone(), model());
    config.graph_min = 3;
    let lib = Library::open(config).unwrap();
    lib.add_root(&s.photos).unwrap();
    let stop = std::sync::atomic::AtomicBool::new(false);
    let options = clipdex::indexer::watch::WatchOptions {
        debounce: std::time::Duration::from_millis(100),
        rescan_every: std::time::Duration::from_millis(300),
    };
    let passes = std::sync::atomic::AtomicU64::new(0);
    std::thread::scope(|scope| {
        let watcher = scope.spawn(|| {
            lib.watch(
                &options,
                &stop,
                &|_, _| {},
                &mut |_| {
                    passes.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                },
                &|_, _, _| {},
            )
        });
        // The first pass embeds six photos; a maintenance thread then builds the graph while
        // later passes go on.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
        let settled =
            || passes.load(std::sync::atomic::Ordering::SeqCst) > 0 && !lib.stats().unwrap().index.needs_maintenance();
        while !settled() && std::time::Instant::now() < deadline {
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        stop.store(true, std::sync::atomic::Ordering::SeqCst);
        watcher.join().unwrap().unwrap();
    });
    assert!(passes.load(std::sync::atomic::Ordering::SeqCst) >= 1);
    let state = lib.stats().unwrap().index;
    assert_eq!((state.kind, state.pending, state.needs_rebuild), ("hnsw", 0, false));
    if let clipdex::store::DbLocation::Dir(dir) = &s.db.location {
        assert!(dir.join("hnsw").is_dir());
    }
    assert_eq!(all(&lib, 10).len(), 6);
}

#[test]
fn the_search_index_is_kept_until_the_library_changes() {
    // The folder store's own index (PostgreSQL searches in the database).
    let s = &setups(4)[0];
    let lib = open(&s.db);
    lib.add_root(&s.photos).unwrap();
    lib.index(&quiet).unwrap();
    let a = lib.search_index().unwrap();
    assert!(std::sync::Arc::ptr_eq(&a, &lib.search_index().unwrap()), "reused between searches");
    assert_eq!(a.len(), 4);
    write_picture(&s.photos, "new.png", 99);
    assert_eq!(lib.index(&quiet).unwrap().embedded, 1);
    let b = lib.search_index().unwrap();
    assert!(!std::sync::Arc::ptr_eq(&a, &b), "reloaded after a change");
    assert_eq!(b.len(), 5);
    assert_eq!(all(&lib, 10).len(), 5);
}
