//! What the query language costs: a query with three filters and a negative term against the
//! plain text query, over a folder library of 100,000 photos (synthetic clustered vectors and
//! metadata written straight into the store). A printed figure, not an assertion of speed; the
//! test checks that both queries answer, and that every filtered result passes the filters.
//!
//!     cargo test --test query_speed -- --ignored --nocapture     [CLIPDEX_SPEED_PHOTOS=N]
//!
//! The test build compiles clipdex without optimisation (its dependencies with), so the figures
//! are slower than a release build's; the ratio between the two queries is the figure to read.
//! Query texts are embedded once before timing (as the server's cache does for a repeated
//! query): what is timed is parsing, the query vector, ranking, filtering and the results'
//! places. The text tower's cost comes on top, once per text in the query (see Speed in the
//! manual for the tower's figures).

use std::collections::HashMap;
use std::path::Path;
use std::time::{Duration, Instant};

use clipdex::library::QueryOptions;
use clipdex::query::SearchFilter;
use clipdex::store::ImageRecord;
use clipdex::{Library, LibraryConfig};

fn model() -> String {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/clip-tiny-p32").to_string_lossy().into_owned()
}

/// Unit vectors around 100 centres (xorshift-seeded, reproducible).
fn vectors(n: usize, dim: usize) -> impl Iterator<Item = Vec<f32>> {
    let mut state = 0x9e37_79b9_7f4a_7c15u64;
    let mut uniform = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        ((state >> 40) as f32 + 0.5) / (1u64 << 24) as f32
    };
    let mut normal = move || {
        let (u, v) = (uniform(), uniform());
        (-2.0 * u.ln()).sqrt() * (std::f32::consts::TAU * v).cos()
    };
    let centres: Vec<Vec<f32>> = (0..100).map(|_| (0..dim).map(|_| normal()).collect()).collect();
    (0..n).map(move |i| {
        let mut v: Vec<f32> = centres[i % centres.len()].iter().map(|c| c + 0.6 * normal()).collect();
        let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt();
        v.iter_mut().for_each(|x| *x /= norm);
        v
    })
}

/// Photo `i`'s record: a quarter Fuji, a quarter Canon, half iPhone; dated evenly over 2015–2024;
/// a third portrait; every fifth with a position (Lisbon).
fn record(i: usize) -> ImageRecord {
    const YEAR: i64 = 365 * 86_400;
    let camera = ["FUJIFILM X-T3", "Canon EOS R5", "Apple iPhone 15", "Apple iPhone 15"][i % 4];
    let (width, height) = if i.is_multiple_of(3) { (3000, 4000) } else { (4000, 3000) };
    ImageRecord {
        hash: format!("{i:064x}"),
        size: 1,
        width,
        height,
        modified: 1_700_000_000,
        taken: Some(1_420_070_400 + (i as i64).wrapping_mul(2_654_435_761).rem_euclid(10 * YEAR)),
        camera: Some(camera.into()),
        gps: i.is_multiple_of(5).then_some((38.7223, -9.1393)),
        lens: None,
        video: None,
        motion_video: None,
        motion_video_problem: None,
    }
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
#[ignore = "a speed figure: cargo test --test query_speed -- --ignored --nocapture"]
fn three_filters_and_a_negative_term_against_the_plain_text_query() {
    let n: usize = std::env::var("CLIPDEX_SPEED_PHOTOS").ok().and_then(|v| v.parse().ok()).unwrap_or(100_000);
    let tmp = tempfile::tempdir().unwrap();
    let library = Library::open(LibraryConfig::new(tmp.path().join("db"), model())).unwrap();
    let dim = library.embed_text("x").unwrap().len();
    let store = library.store();
    store.set_model(&model(), dim).unwrap();
    let started = Instant::now();
    for (i, v) in vectors(n, dim).enumerate() {
        let path = tmp.path().join(format!("photos/{:03}/{i:06}.jpg", i % 1000));
        store.commit_image(&path, 1, 0, &record(i), &v).unwrap();
    }
    let written = started.elapsed();

    let plain = "a dog on a beach";
    let filtered = "a dog on a beach -night camera:fuji after:2020 orientation:landscape";
    let texts: HashMap<String, Vec<f32>> =
        ["a dog on a beach", "night"].iter().map(|t| (t.to_string(), library.embed_text(t).unwrap())).collect();
    let embed = |t: &str| Ok(texts.get(t).cloned().unwrap_or_else(|| panic!("{t:?} not embedded")));
    let options = QueryOptions { k: 20, ..Default::default() };
    let search = |query: &str| {
        let parsed = clipdex::query::syntax::parse(query).unwrap();
        library.search_parsed_with(&parsed, None, &SearchFilter::default(), &options, &embed).unwrap()
    };

    // Both answer; the filtered results pass every filter.
    assert_eq!(search(plain).len(), 20);
    let found = search(filtered);
    assert_eq!(found.len(), 20);
    let since_2020 = 1_577_836_800;
    for r in &found {
        let record = store.image(r.hit.id).unwrap().unwrap();
        assert!(record.camera.as_deref().unwrap().contains("FUJIFILM"), "{record:?}");
        assert!(record.width > record.height && record.date() >= since_2020, "{record:?}");
    }

    let runs = 21;
    let plain_time = median(runs, || drop(search(plain)));
    let filtered_time = median(runs, || drop(search(filtered)));
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    println!(
        "query language at {n} photos ({dim}-d vectors, written in {:.0} s), k=20, median of {runs}, \
         texts embedded beforehand, test build (clipdex unoptimised, dependencies optimised):",
        written.as_secs_f64()
    );
    println!("  plain text       {plain:?}: {:.1} ms", ms(plain_time));
    println!("  3 filters + NOT  {filtered:?}: {:.1} ms", ms(filtered_time));
    println!("  ratio            {:.2}", filtered_time.as_secs_f64() / plain_time.as_secs_f64());
}
