//! The default relevance cut-off measured on a labelled library: precision and recall of what
//! it keeps, per query.
//!
//! The test models have random weights, so no photo truly shows a dog: the labelled library is
//! built in vector space instead. Unrelated photos are random directions; their cosines with
//! any text spread around 0 with a standard deviation σ = 1/√dim (0.20 for the 24-d test
//! model). Each of four queries (texts embedded by the test model) has 25 relevant photos
//! planted at 2σ to 4.5σ from the query (0.41 to 0.92 here), as a real CLIP ViT-B/32 puts a
//! partial to a clear match 2 to 5 of its unrelated pairs' σ (about 0.03) above their mean
//! (about 0.15); 900 photos are unrelated. The library then calibrates itself as it would on
//! real photos (the built-in labels scored against its vectors), and every query is searched
//! with the UI's default cut-off. The figures say how the calibration behaves on this
//! geometry, not how well a real model's matches are found.
//!
//!     cargo test --test cutoff -- --nocapture

use std::path::Path;

use clipdex::library::QueryOptions;
use clipdex::query::SearchFilter;
use clipdex::query::relevance::DEFAULT_UI_MIN_RELEVANCE;
use clipdex::store::ImageRecord;
use clipdex::{Library, LibraryConfig};

fn model() -> String {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/clip-tiny-p32").to_string_lossy().into_owned()
}

const QUERIES: [&str; 4] = ["a dog on a beach", "a red car in the rain", "snow on the mountains", "a birthday cake"];
const RELEVANT: usize = 25;
const UNRELATED: usize = 900;

struct Rng(u64);

impl Rng {
    fn uniform(&mut self) -> f32 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        ((self.0 >> 40) as f32 + 0.5) / (1u64 << 24) as f32
    }

    fn normal(&mut self) -> f32 {
        let (u, v) = (self.uniform(), self.uniform());
        (-2.0 * u.ln()).sqrt() * (std::f32::consts::TAU * v).cos()
    }

    /// A random direction.
    fn unit(&mut self, dim: usize) -> Vec<f32> {
        normalised((0..dim).map(|_| self.normal()).collect())
    }
}

fn normalised(v: Vec<f32>) -> Vec<f32> {
    let n = v.iter().map(|x| x * x).sum::<f32>().sqrt();
    v.into_iter().map(|x| x / n).collect()
}

fn dot(a: &[f32], b: &[f32]) -> f32 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

/// A unit vector at cosine `c` from the unit vector `q`, in a random direction otherwise.
fn at_cosine(q: &[f32], c: f32, rng: &mut Rng) -> Vec<f32> {
    let r = rng.unit(q.len());
    let along = dot(&r, q);
    let across = normalised(r.iter().zip(q).map(|(x, y)| x - along * y).collect());
    q.iter().zip(&across).map(|(a, b)| c * a + (1.0 - c * c).sqrt() * b).collect()
}

fn record(i: usize) -> ImageRecord {
    ImageRecord {
        hash: format!("{i:064x}"),
        size: 1,
        width: 40,
        height: 30,
        modified: 1_600_000_000 + i as i64,
        taken: None,
        camera: None,
        gps: None,
        lens: None,
        video: None,
        motion_video: None,
        motion_video_problem: None,
    }
}

#[test]
fn the_default_cut_off_keeps_the_planted_matches_and_drops_the_rest() {
    let tmp = tempfile::tempdir().unwrap();
    let library = Library::open(LibraryConfig::new(tmp.path().join("db"), model())).unwrap();
    let queries: Vec<Vec<f32>> = QUERIES.iter().map(|q| normalised(library.embed_text(q).unwrap())).collect();
    let dim = queries[0].len();
    let store = library.store();
    store.set_model(&model(), dim).unwrap();
    let mut rng = Rng(0x2545_f491_4f6c_dd1d);
    // Photo i is relevant to query i / RELEVANT while i < 4 · RELEVANT; the rest are unrelated.
    let mut n = 0;
    for q in &queries {
        for j in 0..RELEVANT {
            let z = 2.0 + 2.5 * j as f32 / (RELEVANT - 1) as f32;
            let c = z / (dim as f32).sqrt();
            let v = at_cosine(q, c, &mut rng);
            store.commit_image(&tmp.path().join(format!("p/{n:04}.jpg")), 1, 0, &record(n), &v).unwrap();
            n += 1;
        }
    }
    for _ in 0..UNRELATED {
        let v = rng.unit(dim);
        store.commit_image(&tmp.path().join(format!("p/{n:04}.jpg")), 1, 0, &record(n), &v).unwrap();
        n += 1;
    }

    let calibration_texts: Vec<Vec<f32>> = clipdex::query::relevance::calibration_texts()
        .iter()
        .map(|t| normalised(library.embed_text(t).unwrap()))
        .collect();
    let mean_cosine = |a: &[Vec<f32>], b: &[Vec<f32>]| {
        let all: Vec<f32> = a.iter().flat_map(|x| b.iter().map(move |y| dot(x, y))).collect();
        all.iter().sum::<f32>() / all.len() as f32
    };
    let options = QueryOptions { k: n, min_relevance: Some(DEFAULT_UI_MIN_RELEVANCE), ..Default::default() };
    let everything = QueryOptions { k: n, ..Default::default() };
    let (mut kept_all, mut relevant_kept_all) = (0, 0);
    println!(
        "cut-off at relevance {DEFAULT_UI_MIN_RELEVANCE} on {n} photos ({dim}-d): {RELEVANT} planted matches per \
         query at 2σ–4.5σ ({:.2}–{:.2}), {UNRELATED} random; the test model's texts lie at a mean cosine of \
         {:.2} to the calibration's labels",
        2.0 / (dim as f32).sqrt(),
        4.5 / (dim as f32).sqrt(),
        mean_cosine(&queries, &calibration_texts)
    );
    let calibration = library.calibration().unwrap();
    for (qi, query) in QUERIES.iter().enumerate() {
        let relevant = |id: u64| {
            let i = store.image(id).unwrap().unwrap().modified - 1_600_000_000;
            (i as usize) / RELEVANT == qi && (i as usize) < QUERIES.len() * RELEVANT
        };
        let all = library.search_query(query, &SearchFilter::default(), &everything).unwrap();
        assert_eq!(all.len(), n, "without a cut-off every photo is a result");
        let kept = library.search_query(query, &SearchFilter::default(), &options).unwrap();
        let hits = kept.iter().filter(|h| relevant(h.hit.id)).count();
        let precision = if kept.is_empty() { 1.0 } else { hits as f64 / kept.len() as f64 };
        let recall = hits as f64 / RELEVANT as f64;
        // The clear matches: planted at 3σ or more (the last 15 of the 25).
        let clear = kept
            .iter()
            .filter(|h| {
                relevant(h.hit.id) && (store.image(h.hit.id).unwrap().unwrap().modified as usize) % RELEVANT >= 10
            })
            .count();
        println!(
            "  {query:<24} kept {:>4}  precision {precision:.3}  recall {recall:.3}  (of those at 3σ or more: {:.3})",
            kept.len(),
            clear as f64 / 15.0
        );
        (kept_all, relevant_kept_all) = (kept_all + kept.len(), relevant_kept_all + hits);
        // What the cut keeps is what reaches it.
        assert!(kept.iter().all(|h| h.relevance >= DEFAULT_UI_MIN_RELEVANCE));
        assert_eq!(kept.len(), all.iter().filter(|h| h.relevance >= DEFAULT_UI_MIN_RELEVANCE).count());
    }
    let precision = relevant_kept_all as f64 / kept_all.max(1) as f64;
    let recall = relevant_kept_all as f64 / (QUERIES.len() * RELEVANT) as f64;
    println!(
        "  all queries              kept {kept_all:>4}  precision {precision:.3}  recall {recall:.3}  \
         (calibration: {calibration:?})"
    );
}
