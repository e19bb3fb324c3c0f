//! The library tested as a database: a seeded random sequence of what users do to photo
//! folders (add, touch, edit, copy, rename, move, delete, restore from a backup, remove and
//! re-add a root, empty a root as an unmounted drive does, prune) and SIGKILLs of a running
//! `clipdex index`, checked after every step against a simple model of what the library must
//! hold: every file that is there (or held under a root that looks unmounted) with its exact
//! content, nothing else, and searches that return exactly those images.
//!
//! `CLIPDEX_MODEL_STEPS` sets the number of steps (default 1000) and `CLIPDEX_MODEL_SEED` the
//! seed (a failure prints both, so it can be replayed).

#![cfg(unix)]

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, SystemTime};

use clipdex::query::SearchFilter;
use clipdex::store::DbLocation;
use clipdex::{Library, LibraryConfig};
use common::Rng;
use common::backends::{TestDb, test_databases};

fn model_dir() -> String {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/clip-tiny-p32").to_string_lossy().into_owned()
}

/// The PNG bytes of content `seed` (a small pool, so identical files happen often).
fn content(seed: u32) -> Vec<u8> {
    let img = image::RgbImage::from_fn(24, 18, |x, y| {
        image::Rgb([(x * 9 + seed * 37) as u8, (y * 13 + seed * 71) as u8, (seed * 29 + x * y) as u8])
    });
    let mut out = Vec::new();
    img.write_to(&mut std::io::Cursor::new(&mut out), image::ImageFormat::Png).unwrap();
    out
}

fn hash(bytes: &[u8]) -> String {
    blake3::hash(bytes).to_hex().to_string()
}

/// The image files under `dir` with their content hashes.
fn on_disk(dir: &Path) -> BTreeMap<PathBuf, String> {
    let mut out = BTreeMap::new();
    if dir.is_dir() {
        for e in walkdir::WalkDir::new(dir).into_iter().filter_map(Result::ok) {
            if e.file_type().is_file() {
                out.insert(e.path().to_path_buf(), hash(&std::fs::read(e.path()).unwrap()));
            }
        }
    }
    out
}

/// What the library must hold: files (path -> content hash) per watched root.
struct Model {
    roots: Vec<PathBuf>,
    watched: BTreeSet<PathBuf>,
    expected: BTreeMap<PathBuf, String>,
}

impl Model {
    /// An index pass: each watched root's files as they are on disk, except a root that
    /// holds no photo while the library has photos there (an unmounted drive), unless pruning.
    fn index(&mut self, prune: bool) {
        for root in &self.roots {
            let disk = on_disk(root);
            let held = self.expected.keys().any(|p| p.starts_with(root));
            if !self.watched.contains(root) || (disk.is_empty() && held && !prune) {
                continue;
            }
            self.expected.retain(|p, _| !p.starts_with(root));
            self.expected.extend(disk);
        }
    }

    fn unwatch(&mut self, root: &Path) {
        self.watched.remove(root);
        self.expected.retain(|p, _| !p.starts_with(root));
    }
}

fn open(db: &DbLocation) -> Library {
    let mut config = LibraryConfig::new(db, model_dir());
    config.batch_size = 8;
    config.graph_min = usize::MAX; // exact scans: the check compares exact results
    Library::open(config).unwrap()
}

/// The library equals the model: paths, contents, images, vectors, and what a search returns.
fn check(lib: &Library, model: &Model, step: usize, what: &str) {
    let ctx = format!("after step {step} ({what})");
    let problems = lib.store().check().unwrap();
    assert!(problems.is_empty(), "{ctx}: {problems:?}");
    let stored: BTreeMap<PathBuf, String> = lib
        .store()
        .paths_under(Path::new(""))
        .unwrap()
        .into_iter()
        .map(|(p, e)| (p, lib.store().image(e.id).unwrap().expect("path points at an image").hash))
        .collect();
    if stored != model.expected {
        let missing: Vec<_> = model.expected.keys().filter(|p| !stored.contains_key(*p)).collect();
        let extra: Vec<_> = stored.keys().filter(|p| !model.expected.contains_key(*p)).collect();
        let wrong: Vec<_> = stored.iter().filter(|(p, h)| model.expected.get(*p).is_some_and(|e| e != *h)).collect();
        panic!("{ctx}: missing {missing:?}, extra {extra:?}, wrong content {wrong:?}");
    }
    let contents: BTreeSet<&String> = model.expected.values().collect();
    let counts = lib.store().counts().unwrap();
    assert_eq!((counts.images, counts.vectors), (contents.len() as u64, contents.len() as u64), "{ctx}");
    let hits = lib.search_text("a photo", contents.len() + 5, &SearchFilter::default()).unwrap();
    assert_eq!(hits.len(), contents.len(), "{ctx}: search returns every image once");
    for h in &hits {
        let expected = model.expected.get(&h.path).unwrap_or_else(|| panic!("{ctx}: search returned {h:?}"));
        assert_eq!(&lib.store().image(h.id).unwrap().unwrap().hash, expected, "{ctx}");
    }
}

fn set_mtime(path: &Path, t: SystemTime) {
    std::fs::File::options().write(true).open(path).unwrap().set_modified(t).unwrap();
}

#[test]
fn random_operations_and_kills_against_a_model() {
    let steps: usize = std::env::var("CLIPDEX_MODEL_STEPS").ok().and_then(|s| s.parse().ok()).unwrap_or(1000);
    let seed: u64 = std::env::var("CLIPDEX_MODEL_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or(0x005e_edc1_1de7);
    for db in test_databases() {
        eprintln!("{}: CLIPDEX_MODEL_SEED={seed} CLIPDEX_MODEL_STEPS={steps}", db.backend);
        let started = std::time::Instant::now();
        run(&db, steps, seed);
        eprintln!("{}: {:.1} s", db.backend, started.elapsed().as_secs_f64());
    }
}

fn run(test_db: &TestDb, steps: usize, seed: u64) {
    let mut rng = Rng(seed.max(1));
    let tmp = tempfile::tempdir().unwrap();
    let base = std::fs::canonicalize(tmp.path()).unwrap();
    let roots = vec![base.join("a"), base.join("b")];
    let backup = base.join("backup");
    std::fs::create_dir_all(&backup).unwrap();
    let db = &test_db.location;
    let mut lib = open(db);
    for r in &roots {
        std::fs::create_dir_all(r.join("sub")).unwrap();
        lib.add_root(r).unwrap();
    }
    let mut model = Model { roots: roots.clone(), watched: roots.iter().cloned().collect(), expected: BTreeMap::new() };
    let pool: Vec<Vec<u8>> = (0..24).map(content).collect();
    let mut clock = SystemTime::now();
    let mut next_name = 0u32;
    let mut fresh_name = |rng: &mut Rng, roots: &[PathBuf]| {
        next_name += 1;
        let dir = if rng.below(3) == 0 { "sub" } else { "" };
        roots[rng.below(roots.len())].join(dir).join(format!("f{next_name}.png"))
    };
    let (mut kills, mut ops, mut held_files) = (0, BTreeMap::<&str, usize>::new(), 0usize);
    for step in 0..steps {
        let files: Vec<PathBuf> = roots.iter().flat_map(|r| on_disk(r).into_keys()).collect();
        clock += Duration::from_secs(1);
        let roll = rng.below(100);
        let what: &str = match roll {
            0..=19 => {
                let p = fresh_name(&mut rng, &roots);
                std::fs::create_dir_all(p.parent().unwrap()).unwrap();
                std::fs::write(&p, rng.pick(&pool).unwrap()).unwrap();
                "add"
            }
            20..=29 => match rng.pick(&files) {
                Some(p) => {
                    set_mtime(p, clock);
                    "touch"
                }
                None => "touch (nothing)",
            },
            30..=37 => match rng.pick(&files) {
                Some(p) => {
                    std::fs::write(p, rng.pick(&pool).unwrap()).unwrap();
                    set_mtime(p, clock);
                    "edit"
                }
                None => "edit (nothing)",
            },
            38..=45 => match rng.pick(&files) {
                Some(p) => {
                    let to = fresh_name(&mut rng, &roots);
                    std::fs::create_dir_all(to.parent().unwrap()).unwrap();
                    std::fs::copy(p, &to).unwrap();
                    "copy"
                }
                None => "copy (nothing)",
            },
            46..=55 => match rng.pick(&files) {
                Some(p) => {
                    let to = fresh_name(&mut rng, &roots);
                    std::fs::create_dir_all(to.parent().unwrap()).unwrap();
                    std::fs::rename(p, &to).unwrap();
                    "rename or move"
                }
                None => "move (nothing)",
            },
            56..=65 => match rng.pick(&files) {
                Some(p) => {
                    // Kept in the backup first, so a later step can restore it.
                    std::fs::copy(p, backup.join(p.strip_prefix(&base).unwrap().to_string_lossy().replace('/', "_")))
                        .unwrap();
                    std::fs::remove_file(p).unwrap();
                    "delete"
                }
                None => "delete (nothing)",
            },
            66..=75 => {
                let saved: Vec<PathBuf> = on_disk(&backup).into_keys().collect();
                match rng.pick(&saved) {
                    Some(b) => {
                        let name = b.file_name().unwrap().to_string_lossy().replacen('_', "/", 2);
                        let to = base.join(name);
                        if let Some(parent) = to.parent().filter(|p| p.is_dir()) {
                            std::fs::copy(b, &to).unwrap();
                            set_mtime(&to, clock);
                            let _ = parent;
                            "restore from backup"
                        } else {
                            "restore (folder gone)"
                        }
                    }
                    None => "restore (nothing)",
                }
            }
            76..=78 => {
                // Unmount: the folder stays, empty; its files wait aside.
                let r = rng.pick(&roots).unwrap().clone();
                let aside = base.join(format!("unmounted-{}", r.file_name().unwrap().to_string_lossy()));
                if aside.exists() {
                    // Mount it again.
                    std::fs::remove_dir_all(&r).unwrap();
                    std::fs::rename(&aside, &r).unwrap();
                    "remount"
                } else {
                    std::fs::rename(&r, &aside).unwrap();
                    std::fs::create_dir(&r).unwrap();
                    "unmount"
                }
            }
            79..=80 => {
                let r = rng.pick(&roots).unwrap().clone();
                if model.watched.contains(&r) {
                    lib.remove_root(&r).unwrap();
                    model.unwatch(&r);
                    "remove root"
                } else {
                    lib.add_root(&r).unwrap();
                    model.watched.insert(r);
                    "add root"
                }
            }
            81..=82 => "prune",
            83..=88 => "kill -9 during index",
            _ => "index only",
        };
        *ops.entry(what).or_default() += 1;
        if what == "kill -9 during index" {
            // New photos first, so the killed pass has work under way.
            for _ in 0..6 {
                let p = fresh_name(&mut rng, &roots);
                std::fs::create_dir_all(p.parent().unwrap()).unwrap();
                std::fs::write(&p, rng.pick(&pool).unwrap()).unwrap();
            }
            drop(lib);
            let mut child = Command::new(env!("CARGO_BIN_EXE_clipdex"))
                .arg("--db")
                .arg(test_db.arg())
                .arg("--model")
                .arg(model_dir())
                .args(["index", "--batch-size", "2"])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .unwrap();
            std::thread::sleep(Duration::from_millis(20 + rng.below(180) as u64));
            let _ = child.kill();
            let _ = child.wait();
            kills += 1;
            lib = open(db);
            let problems = lib.store().check().unwrap();
            assert!(problems.is_empty(), "{}: after the kill at step {step}: {problems:?}", test_db.backend);
        }
        let prune = what == "prune";
        let report = if prune { lib.index_and_prune(&|_, _| {}) } else { lib.index(&|_, _| {}) }
            .unwrap_or_else(|e| panic!("{}: step {step} ({what}): {e}", test_db.backend));
        let accounted = report.unchanged + report.embedded + report.linked + report.failed + report.skipped_failures;
        assert_eq!(report.seen, accounted, "step {step} ({what}): {report:?}");
        model.index(prune);
        check(&lib, &model, step, &format!("{what}; {}", test_db.backend));
        held_files += model.expected.len();
    }
    let mean = held_files as f64 / steps.max(1) as f64;
    eprintln!("{steps} steps, {kills} kills: {ops:?}; {mean:.1} files on average, {} at the end", model.expected.len());
    assert!(mean >= 5.0, "the sequence kept too few files to test anything");
}
