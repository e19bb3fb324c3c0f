//! Kill the indexer (SIGKILL) at arbitrary moments, several times, and check that the store
//! stays consistent: no orphan vectors, every image with its vector, hash and paths, nothing
//! committed lost, and indexing resumes to completion.

#![cfg(unix)]

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use clipdex::{Library, LibraryConfig};
use image::{Rgb, RgbImage};

fn model() -> String {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/clip-tiny-p32").to_string_lossy().into_owned()
}

fn picture(seed: u32) -> RgbImage {
    RgbImage::from_fn(200, 150, |x, y| {
        let v = (x * (seed % 7 + 1) + y * (seed % 5 + 2) + seed * 31) % 256;
        Rgb([v as u8, ((x + seed) % 256) as u8, ((y * 3 + seed * 11) % 256) as u8])
    })
}

fn clipdex(db: &Path, args: &[&str]) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_clipdex"));
    c.arg("--db").arg(db).arg("--model").arg(model()).args(args).stdout(Stdio::null()).stderr(Stdio::null());
    c
}

fn check(db: &Path) -> (u64, u64) {
    let lib = Library::open(LibraryConfig::new(db, model())).unwrap();
    let problems = lib.store().check().unwrap();
    assert!(problems.is_empty(), "inconsistent after a kill: {problems:?}");
    let c = lib.store().counts().unwrap();
    assert_eq!(c.images, c.vectors);
    (c.images, c.paths)
}

#[test]
fn sigkill_at_random_moments_leaves_a_consistent_store() {
    let tmp = tempfile::tempdir().unwrap();
    let photos = tmp.path().join("photos");
    std::fs::create_dir_all(&photos).unwrap();
    // 32 photos to start with, 12 more before each round: every round has work to interrupt.
    const ROUNDS: u32 = 8;
    const N: u32 = 32 + 12 * ROUNDS;
    let add = |range: std::ops::Range<u32>| {
        for i in range {
            let ext = if i % 2 == 0 { "png" } else { "jpg" };
            picture(i).save(photos.join(format!("img{i:03}.{ext}"))).unwrap();
        }
    };
    add(0..32);
    let db = tmp.path().join("db");
    assert!(clipdex(&db, &["add", photos.to_str().unwrap()]).status().unwrap().success());

    // A fixed pseudo-random sequence of delays, so a failure can be replayed.
    let mut state = 0x2545_f491_4f6c_dd1du64;
    let mut last_images = 0;
    for round in 0..ROUNDS {
        add(32 + 12 * round..32 + 12 * (round + 1));
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        let delay = Duration::from_millis(100 + state % 1500);
        // Renames between rounds exercise the link/unlink transactions too.
        if round % 3 == 2 {
            let from = photos.join(format!("img{:03}.png", round * 2));
            if from.exists() {
                std::fs::rename(&from, photos.join(format!("renamed{round}.png"))).unwrap();
            }
        }
        let mut child = clipdex(&db, &["index", "--batch-size", "4"]).spawn().unwrap();
        std::thread::sleep(delay);
        let _ = child.kill();
        let _ = child.wait();
        let (images, _) = check(&db);
        assert!(
            images >= last_images,
            "round {round}: {images} images after {last_images} before: committed work lost"
        );
        eprintln!("round {round}: killed after {delay:?}, {images} images stored");
        last_images = images;
    }
    assert!(clipdex(&db, &["index"]).status().unwrap().success());
    let (images, paths) = check(&db);
    assert_eq!((images, paths), (N as u64, N as u64));
    // Resumed without redoing: a final pass finds everything unchanged.
    let lib = Library::open(LibraryConfig::new(&db, model())).unwrap();
    let report = lib.index(&|_, _| {}).unwrap();
    assert_eq!((report.unchanged, report.embedded), (N as u64, 0));
}
