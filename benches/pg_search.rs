//! Search in a PostgreSQL library beside the folder store, in one run: the same `N` clustered
//! 512-d unit vectors (default 100,000; `CLIPDEX_BENCH_N`) in a folder library (clipdex's HNSW
//! graph) and, copied with `migrate`'s import, in PostgreSQL (pgvector HNSW, `m = 16`,
//! `ef_construction = 64`); queries/s (one client, sequential) and recall@10 against the exact
//! ranking, unfiltered at `ef_search` 40 and 100, filtered by a tag on 1 in 10 and 1 in 100
//! photos, `halfvec` beside `vector` (recall, speed, index size), build times and cold start
//! (a fresh library's first search).
//!
//!     CLIPDEX_BENCH_PG=postgres://USER:PASS@localhost:5432/postgres cargo bench --bench pg_search
//!
//! The URL names a server on which the role may create databases (a `clipdex_bench_*`
//! database is made and dropped). Without it the benchmark says so and does nothing.
//!
//! `CLIPDEX_BENCH_FOLDER_GRAPH=0` leaves the folder store without its graph (it then scans
//! exactly, as it does below the graph threshold): at 1,000,000 vectors the graph takes longer
//! than 30 minutes to build on 2 cores.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use clipdex::query::SearchFilter;
use clipdex::store::{DbLocation, ImageRecord, Tag};
use clipdex::{Library, LibraryConfig};

const DIM: usize = 512;
const QUERIES: usize = 200;
const K: usize = 10;

/// xorshift64*, seeded: the same vectors every run.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn unit(&mut self) -> f32 {
        (self.next() >> 40) as f32 / (1u64 << 24) as f32
    }
}

fn normalised(v: Vec<f32>) -> Vec<f32> {
    let n = v.iter().map(|x| x * x).sum::<f32>().sqrt();
    v.into_iter().map(|x| x / n).collect()
}

fn with_database(url: &str, name: &str) -> String {
    let after_scheme = url.find("://").map(|i| i + 3).unwrap_or(0);
    let host_end = url[after_scheme..].find('/').map(|i| i + after_scheme).unwrap_or(url.len());
    format!("{}/{name}", &url[..host_end])
}

fn record(i: usize) -> ImageRecord {
    ImageRecord {
        hash: format!("{i:064x}"),
        size: 1000,
        width: 640,
        height: 480,
        modified: 1_600_000_000,
        taken: Some(1_500_000_000 + i as i64),
        camera: None,
        gps: None,
        lens: None,
        video: None,
        motion_video: None,
        motion_video_problem: None,
    }
}

/// The dot product, in eight lanes (so that it vectorises).
fn dot(a: &[f32], b: &[f32]) -> f32 {
    let mut lanes = [0f32; 8];
    for (x, y) in a.chunks_exact(8).zip(b.chunks_exact(8)) {
        for l in 0..8 {
            lanes[l] += x[l] * y[l];
        }
    }
    lanes.iter().sum()
}

/// Queries/s and recall@10 of `search` over the queries, against `exact`.
fn measure(queries: &[Vec<f32>], exact: &[Vec<u64>], search: &dyn Fn(&[f32]) -> Vec<u64>) -> (f64, f64) {
    search(&queries[0]);
    let started = Instant::now();
    let mut found = 0;
    let mut wanted = 0;
    for (q, truth) in queries.iter().zip(exact) {
        let hits = search(q);
        found += truth.iter().filter(|id| hits.contains(id)).count();
        wanted += truth.len();
    }
    (queries.len() as f64 / started.elapsed().as_secs_f64(), found as f64 / wanted.max(1) as f64)
}

fn main() -> clipdex::Result<()> {
    let Some(base) = std::env::var("CLIPDEX_BENCH_PG").ok().or_else(|| std::env::var("CLIPDEX_TEST_PG").ok()) else {
        println!("CLIPDEX_BENCH_PG is not set: no PostgreSQL server to measure (see the benchmark's doc)");
        return Ok(());
    };
    let n: usize = std::env::var("CLIPDEX_BENCH_N").ok().and_then(|v| v.parse().ok()).unwrap_or(100_000);
    let mut rng = Rng(0x5eed_0001);
    let centres: Vec<Vec<f32>> = (0..64).map(|_| (0..DIM).map(|_| rng.unit() - 0.5).collect()).collect();
    let near = |rng: &mut Rng, spread: f32| {
        let c = &centres[(rng.next() % centres.len() as u64) as usize];
        normalised(c.iter().map(|x| x + spread * (rng.unit() - 0.5)).collect())
    };
    let vectors: Vec<Vec<f32>> = (0..n).map(|_| near(&mut rng, 0.6)).collect();
    let queries: Vec<Vec<f32>> = (0..QUERIES).map(|_| near(&mut rng, 0.6)).collect();
    println!("clipdex search benchmark: {n} clustered {DIM}-d vectors, {QUERIES} queries, k = {K}, one client");
    let folder_graph = std::env::var("CLIPDEX_BENCH_FOLDER_GRAPH").map_or(true, |v| v != "0");

    // The folder library.
    let tmp = tempfile::tempdir().map_err(|e| clipdex::Error::Invalid(e.to_string()))?;
    let folder = tmp.path().join("db");
    let folder_config = || {
        let mut config = LibraryConfig::new(DbLocation::Dir(folder.clone()), "bench-model");
        config.load_graph = folder_graph;
        config
    };
    let started = Instant::now();
    let mut ids = Vec::with_capacity(n);
    {
        let library = Library::open(LibraryConfig::new(DbLocation::Dir(folder.clone()), "bench-model"))?;
        let store = library.store();
        store.set_model("bench-model", DIM)?;
        for (i, v) in vectors.iter().enumerate() {
            let path = PathBuf::from(format!("/bench/{:03}/{i:07}.jpg", i % 1000));
            let id = store.commit_image(&path, 1000, 1, &record(i), v)?;
            ids.push(id);
            let mut tags = Vec::new();
            if i.is_multiple_of(10) {
                tags.push(Tag { label: "tenth".into(), probability: 0.9, cosine: 0.3 });
            }
            if i.is_multiple_of(100) {
                tags.push(Tag { label: "hundredth".into(), probability: 0.9, cosine: 0.3 });
            }
            if !tags.is_empty() {
                store.set_tags(id, "bench", &tags)?;
            }
        }
        store.flush()?;
        println!("folder store: {n} images written in {:.1} s", started.elapsed().as_secs_f64());
        if folder_graph {
            let started = Instant::now();
            let state = library.maintain_index()?;
            println!(
                "folder store: HNSW graph built in {:.1} s (kind {}, search_ef {})",
                started.elapsed().as_secs_f64(),
                state.kind,
                state.search_ef
            );
        } else {
            println!("folder store: no graph (CLIPDEX_BENCH_FOLDER_GRAPH=0): exact scans");
        }
    }

    // PostgreSQL: a fresh database, filled by `migrate`'s import.
    let name = format!("clipdex_bench_{}", std::process::id());
    let mut admin =
        postgres::Client::connect(&base, postgres::NoTls).map_err(|e| clipdex::Error::Store(e.to_string()))?;
    admin.batch_execute(&format!("CREATE DATABASE {name}")).map_err(|e| clipdex::Error::Store(e.to_string()))?;
    let url = with_database(&base, &name);
    let outcome = (|| -> clipdex::Result<()> {
        let started = Instant::now();
        let report = clipdex::library::migrate::migrate(&folder, &DbLocation::Postgres(url.clone()), usize::MAX)?;
        println!(
            "PostgreSQL: {} images imported and checked in {:.1} s",
            report.copied.images,
            started.elapsed().as_secs_f64()
        );
        let pg = Library::open(LibraryConfig::new(DbLocation::Postgres(url.clone()), "bench-model"))?;
        let started = Instant::now();
        let state = pg.maintain_index()?;
        println!("PostgreSQL: pgvector HNSW index built in {:.1} s ({})", started.elapsed().as_secs_f64(), state.kind);
        let sled = Library::open(folder_config())?;

        let exact_for = |keep: &(dyn Fn(usize) -> bool + Sync)| -> Vec<Vec<u64>> {
            use rayon::prelude::*;
            queries
                .par_iter()
                .map(|q| {
                    let mut scored: Vec<(f32, usize)> =
                        (0..n).filter(|&i| keep(i)).map(|i| (dot(&vectors[i], q), i)).collect();
                    scored.sort_by(|a, b| b.0.total_cmp(&a.0));
                    scored.into_iter().take(K).map(|(_, i)| ids[i]).collect()
                })
                .collect()
        };
        fn search<'a>(lib: &'a Library, filter: &'a SearchFilter) -> impl Fn(&[f32]) -> Vec<u64> + 'a {
            move |q: &[f32]| lib.search_vector(q, K, filter).unwrap().into_iter().map(|h| h.id).collect::<Vec<_>>()
        }
        let set_ef = |ef: &str| {
            // SAFETY: the benchmark is single-threaded here; nothing reads the environment
            // concurrently.
            unsafe { std::env::set_var("CLIPDEX_PG_EF_SEARCH", ef) };
        };
        println!("| search | folder store (clipdex graph) | PostgreSQL ef_search 40 | PostgreSQL ef_search 100 |");
        println!("| --- | ---: | ---: | ---: |");
        for (label, filter, keep) in [
            ("no filter", SearchFilter::default(), Box::new(|_: usize| true) as Box<dyn Fn(usize) -> bool + Sync>),
            (
                "tag on 1 in 10",
                SearchFilter { tag: Some("tenth".into()), ..Default::default() },
                Box::new(|i: usize| i.is_multiple_of(10)),
            ),
            (
                "tag on 1 in 100",
                SearchFilter { tag: Some("hundredth".into()), ..Default::default() },
                Box::new(|i: usize| i.is_multiple_of(100)),
            ),
        ] {
            let exact = exact_for(&*keep);
            let (sq, sr) = measure(&queries, &exact, &search(&sled, &filter));
            set_ef("40");
            let (p40q, p40r) = measure(&queries, &exact, &search(&pg, &filter));
            set_ef("100");
            let (p100q, p100r) = measure(&queries, &exact, &search(&pg, &filter));
            println!(
                "| {label} | {sq:.0} q/s, recall {sr:.3} | {p40q:.0} q/s, recall {p40r:.3} | {p100q:.0} q/s, recall {p100r:.3} |"
            );
        }

        // halfvec beside vector, in SQL: an index of half-precision copies.
        let mut client =
            postgres::Client::connect(&url, postgres::NoTls).map_err(|e| clipdex::Error::Store(e.to_string()))?;
        let started = Instant::now();
        client
            .batch_execute(&format!(
                "SET maintenance_work_mem = '1GB';
                 CREATE INDEX bench_halfvec ON vectors USING hnsw ((embedding::halfvec({DIM})) halfvec_cosine_ops)
                 WITH (m = 16, ef_construction = 64) WHERE generation = 0"
            ))
            .map_err(|e| clipdex::Error::Store(e.to_string()))?;
        let half_build = started.elapsed().as_secs_f64();
        let sizes = client
            .query(
                "SELECT c.relname, pg_relation_size(c.oid) FROM pg_class c
                 WHERE c.relname = 'bench_halfvec' OR c.relname LIKE 'vectors\\_hnsw\\_%'",
                &[],
            )
            .map_err(|e| clipdex::Error::Store(e.to_string()))?;
        let exact = exact_for(&|_| true);
        let mut half = |q: &[f32]| -> Vec<u64> {
            let mut tx = client.transaction().unwrap();
            tx.batch_execute("SET LOCAL hnsw.ef_search = 100").unwrap();
            let rows = tx
                .query(
                    &format!(
                        "SELECT image_id FROM vectors WHERE generation = 0
                         ORDER BY embedding::halfvec({DIM}) <=> $1::real[]::halfvec({DIM}) LIMIT {K}"
                    ),
                    &[&q.to_vec()],
                )
                .unwrap();
            tx.commit().unwrap();
            rows.iter().map(|r| r.get::<_, i64>(0) as u64).collect()
        };
        half(&queries[0]);
        let started = Instant::now();
        let mut found = 0;
        for (q, truth) in queries.iter().zip(&exact) {
            let hits = half(q);
            found += truth.iter().filter(|id| hits.contains(id)).count();
        }
        let qps = QUERIES as f64 / started.elapsed().as_secs_f64();
        println!(
            "halfvec index (ef_search 100, SQL alone): built in {half_build:.1} s, {qps:.0} q/s, recall {:.3}",
            found as f64 / (QUERIES * K) as f64
        );
        for r in &sizes {
            println!("index size: {} {:.1} MB", r.get::<_, String>(0), r.get::<_, i64>(1) as f64 / 1e6);
        }

        // Cold start: a fresh library object's first search (the folder store loads its graph).
        let cold = |config: LibraryConfig| -> clipdex::Result<Duration> {
            let started = Instant::now();
            let lib = Library::open(config)?;
            lib.search_vector(&queries[1], K, &SearchFilter::default())?;
            Ok(started.elapsed())
        };
        drop(sled);
        println!(
            "cold start (open + first search): folder store {:.0} ms, PostgreSQL {:.0} ms",
            cold(folder_config())?.as_secs_f64() * 1e3,
            cold(LibraryConfig::new(DbLocation::Postgres(url.clone()), "bench-model"))?.as_secs_f64() * 1e3
        );
        Ok(())
    })();
    let _ = admin.batch_execute(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"));
    outcome
}
