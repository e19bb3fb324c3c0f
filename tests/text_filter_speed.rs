//! What a `text:` filter costs when its word is in almost every photo: a library of 100,000
//! photos whose read text (written straight into the store, no OCR) all holds "the", a tenth
//! "menu" and ten "zebra", on every backend. Prints the time of the filter's set of images
//! alone and of searches with it, against the plain query; checks only that the answers are
//! right, never how fast they came.
//!
//!     cargo test --test text_filter_speed -- --ignored --nocapture     [CLIPDEX_SPEED_PHOTOS=N]
//!
//! (PostgreSQL too with CLIPDEX_TEST_PG set; `bash .ci/postgres.sh` starts one.) The test
//! build compiles clipdex without optimisation (its dependencies with); the figures to read
//! are the ratios between the queries.

use std::collections::HashMap;
use std::path::Path;
use std::time::{Duration, Instant};

use clipdex::library::QueryOptions;
use clipdex::query::SearchFilter;
use clipdex::store::{ImageRecord, StoredText, TextLine};
use clipdex::{Library, LibraryConfig};

mod common;
use common::backends::test_databases;

fn model() -> String {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/clip-tiny-p32").to_string_lossy().into_owned()
}

/// A unit vector per photo, spread by a xorshift generator (reproducible).
fn vector(i: usize, dim: usize) -> Vec<f32> {
    let mut state = 0x9e37_79b9_7f4a_7c15u64 ^ (i as u64).wrapping_mul(0x2545_f491_4f6c_dd1d);
    let mut v: Vec<f32> = (0..dim)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            ((state >> 40) as f32 / (1u64 << 24) as f32) - 0.5
        })
        .collect();
    let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt();
    v.iter_mut().for_each(|x| *x /= norm);
    v
}

fn record(i: usize) -> ImageRecord {
    ImageRecord {
        hash: format!("{i:064x}"),
        size: 1,
        width: 4000,
        height: 3000,
        modified: 1_700_000_000,
        taken: Some(1_600_000_000 + i as i64 * 60),
        camera: None,
        gps: None,
        lens: None,
        video: None,
        motion_video: None,
        motion_video_problem: None,
    }
}

/// Photo `i`'s text: "the" always, "menu" in every tenth, "zebra" in ten of them.
fn text(i: usize, n: usize) -> String {
    let mut words = vec![format!("the shop {i}")];
    if i.is_multiple_of(10) {
        words.push("menu of the day".into());
    }
    if i.is_multiple_of(n / 10) {
        words.push("zebra crossing".into());
    }
    words.join("\n")
}

fn median(runs: usize, mut f: impl FnMut()) -> Duration {
    f();
    let mut times: Vec<Duration> = (0..runs)
        .map(|_| {
            let t = Instant::now();
            f();
            t.elapsed()
        })
        .collect();
    times.sort();
    times[runs / 2]
}

#[test]
#[ignore = "a measurement: run with --ignored --nocapture"]
fn a_word_in_every_photo_against_a_rare_one() {
    let n: usize = std::env::var("CLIPDEX_SPEED_PHOTOS").ok().and_then(|v| v.parse().ok()).unwrap_or(100_000);
    for db in test_databases() {
        let config = || LibraryConfig::new(db.location.clone(), model());
        let started = Instant::now();
        {
            let library = Library::open(config()).unwrap();
            let dim = library.embed_text("x").unwrap().len();
            let store = library.store();
            store.set_model(&model(), dim).unwrap();
            for i in 0..n {
                let path = Path::new("/photos").join(format!("{:03}/{i:06}.jpg", i % 1000));
                let id = store.commit_image(&path, 1, 0, &record(i), &vector(i, dim)).unwrap();
                let lines =
                    text(i, n).lines().map(|l| TextLine { text: l.into(), score: 0.99, quad: [[0.0; 2]; 4] }).collect();
                assert!(store.set_text(id, &StoredText::new(&record(i).hash, "synthetic", lines)).unwrap());
            }
        }
        let written = started.elapsed();
        // Texts written into the store reach the folder library's on-disk index when it opens.
        let started = Instant::now();
        let library = Library::open(config()).unwrap();
        assert_eq!(library.images_with_text("zebra").unwrap().len(), 10);
        let indexed = started.elapsed();

        let texts: HashMap<String, Vec<f32>> =
            ["a dog on a beach"].iter().map(|t| (t.to_string(), library.embed_text(t).unwrap())).collect();
        let embed = |t: &str| Ok(texts.get(t).cloned().unwrap_or_else(|| panic!("{t:?} not embedded")));
        let options = QueryOptions { k: 20, ..Default::default() };
        let search = |query: &str| {
            let parsed = clipdex::query::syntax::parse(query).unwrap();
            let filter = library.narrow_query(&parsed, &SearchFilter::default()).unwrap();
            library.search_parsed_with(&parsed, None, &filter, &options, &embed).unwrap()
        };

        // The answers: every photo holds "the", a tenth "menu", none both "the" and not "the".
        assert_eq!(library.images_with_text("the").unwrap().len(), n);
        assert_eq!(library.images_with_text("menu").unwrap().len(), n / 10);
        assert_eq!(search("a dog on a beach").len(), 20);
        assert_eq!(search("a dog on a beach text:the").len(), 20);
        assert_eq!(search("a dog on a beach text:zebra").len(), 10);
        assert_eq!(search("a dog on a beach -text:the").len(), 0);
        let menu = search("a dog on a beach text:menu");
        assert_eq!(menu.len(), 20);
        for r in &menu {
            assert!(library.text_of(r.hit.id).unwrap().unwrap().joined().contains("menu"));
        }

        let runs = 5;
        let ms = |d: Duration| d.as_secs_f64() * 1e3;
        println!(
            "text: filters on {} at {n} photos (written in {:.0} s, reopened in {:.1} s), k=20, median of {runs}, \
             test build:",
            db.backend,
            written.as_secs_f64(),
            indexed.as_secs_f64()
        );
        for (what, word) in [("every photo", "the"), ("a tenth", "menu"), ("ten photos", "zebra")] {
            let t = median(runs, || drop(library.images_with_text(word).unwrap()));
            println!("  the set alone, {what:<12} {word:>7}: {:>9.1} ms", ms(t));
        }
        let plain = median(runs, || drop(search("a dog on a beach")));
        println!("  plain query                 : {:>9.1} ms", ms(plain));
        for query in [
            "a dog on a beach text:the",
            "a dog on a beach text:menu",
            "a dog on a beach text:zebra",
            "a dog on a beach -text:the",
        ] {
            let t = median(runs, || drop(search(query)));
            println!("  {query:<28}: {:>9.1} ms ({:.1}x)", ms(t), t.as_secs_f64() / plain.as_secs_f64());
        }
    }
}
