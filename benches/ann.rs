//! Search speed over clustered 512-d unit vectors (photo embeddings cluster; uniform noise
//! would flatter nothing and test nothing): the exact scan at every size, and the HNSW graph
//! (M 16, ef_construction 200) where it is built: insert rate, queries/s and recall@10 against
//! the exact scan for clipdex's flat search and for hnsw_rs's own, memory, cold start from the
//! saved snapshot to the first answer (from the flat file, and from hnsw_rs's dump flattened).
//!
//!     cargo bench --bench ann [-- N ...]     (default: 100000 1000000; the graph up to 100000)
//!
//! The graph is built up to `CLIPDEX_ANN_GRAPH_MAX` vectors (default 100000);
//! `CLIPDEX_ANN_GRAPH_CACHE=DIR` saves it there and later runs load it instead of building
//! (the vectors come from a fixed seed), to compare searches on one graph.
//! `CLIPDEX_ANN_REVERSE_CAPS=0,64` adds recall and rate rows for other caps on the reverse
//! links the flat search restores (0: the graph as hnsw_rs built it);
//! `CLIPDEX_ANN_LAYER1_BEAMS=0,16` for other caps on the layer-1 beam (0: greedy). With
//! `CLIPDEX_ANN_DUMP=DIR`, the vectors and queries of each size are written there as raw
//! little-endian f32 (`vectors-N.f32`, `queries-N.f32`), for `tools/bench_hnswlib.py` to run
//! hnswlib on exactly the same data.

use std::time::Instant;

use clipdex::ann::ExactIndex;
use clipdex::ann::flat::Walk;
use clipdex::ann::hnsw::{self, HnswGraph};

struct Rng(u64);

impl Rng {
    fn uniform(&mut self) -> f32 {
        self.0 = self.0.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        ((self.0 >> 40) as f32 + 0.5) / (1u64 << 24) as f32
    }

    fn normal(&mut self) -> f32 {
        let (u, v) = (self.uniform(), self.uniform());
        (-2.0 * u.ln()).sqrt() * (std::f32::consts::TAU * v).cos()
    }
}

fn unit(mut v: Vec<f32>) -> Vec<f32> {
    let n = v.iter().map(|x| x * x).sum::<f32>().sqrt();
    v.iter_mut().for_each(|x| *x /= n);
    v
}

/// The comma-separated numbers in environment variable `name` (none when unset).
fn env_list(name: &str) -> Vec<usize> {
    std::env::var(name).map(|v| v.split(',').filter_map(|c| c.trim().parse().ok()).collect()).unwrap_or_default()
}

/// A search under measurement: query in, ids and cosines out.
type Searcher<'a> = dyn Fn(&[f32]) -> Vec<(u64, f32)> + 'a;

/// Queries/s and recall@10 of `search` over `queries`, four rounds.
fn measure(queries: &[Vec<f32>], truth: &[Vec<u64>], search: &Searcher) -> String {
    let started = Instant::now();
    let mut found = 0;
    for _ in 0..4 {
        for (q, t) in queries.iter().zip(truth) {
            found += search(q).into_iter().filter(|h| t.contains(&h.0)).count();
        }
    }
    let per_query = started.elapsed().as_secs_f64() / (4 * queries.len()) as f64;
    format!("{:.0} queries/s (recall@10 {:.3})", 1.0 / per_query, found as f64 / (4 * 10 * queries.len()) as f64)
}

fn main() {
    const DIM: usize = 512;
    let sizes: Vec<usize> = std::env::args().skip(1).filter_map(|a| a.parse().ok()).collect();
    let sizes = if sizes.is_empty() { vec![100_000, 1_000_000] } else { sizes };
    let mut rng = Rng(42);
    let centres: Vec<Vec<f32>> = (0..1000).map(|_| unit((0..DIM).map(|_| rng.normal()).collect())).collect();
    println!(
        "clipdex exact search: clustered {DIM}-d unit vectors (1000 clusters), {} threads",
        rayon::current_num_threads()
    );
    for n in sizes {
        let vectors: Vec<Vec<f32>> = (0..n)
            .map(|i| unit(centres[i % 1000].iter().map(|c| c + 0.6 * rng.normal() / (DIM as f32).sqrt()).collect()))
            .collect();
        let started = Instant::now();
        let mut index = ExactIndex::default();
        for (i, v) in vectors.iter().enumerate() {
            index.insert(i as u64, v);
        }
        let load = started.elapsed().as_secs_f64();
        let queries: Vec<Vec<f32>> = (0..50)
            .map(|q| {
                unit(vectors[(q * 7919) % n].iter().map(|x| x + 0.3 * rng.normal() / (DIM as f32).sqrt()).collect())
            })
            .collect();
        if let Ok(dir) = std::env::var("CLIPDEX_ANN_DUMP") {
            let raw = |vs: &[Vec<f32>]| vs.iter().flatten().flat_map(|x| x.to_le_bytes()).collect::<Vec<u8>>();
            std::fs::create_dir_all(&dir).expect("dump folder");
            std::fs::write(format!("{dir}/vectors-{n}.f32"), raw(&vectors)).expect("dump vectors");
            std::fs::write(format!("{dir}/queries-{n}.f32"), raw(&queries)).expect("dump queries");
        }
        let started = Instant::now();
        for q in &queries {
            std::hint::black_box(index.top(q, 10));
        }
        let per_query = started.elapsed().as_secs_f64() / queries.len() as f64;
        println!(
            "{n:>8} vectors: {:.0} queries/s ({:.1} ms each, recall@10 1.0 by construction), loads {:.0}k vectors/s, {} bytes per vector",
            1.0 / per_query,
            per_query * 1e3,
            n as f64 / load / 1e3,
            index.bytes_per_vector()
        );
        let graph_max: usize =
            std::env::var("CLIPDEX_ANN_GRAPH_MAX").ok().and_then(|v| v.parse().ok()).unwrap_or(100_000);
        if n > graph_max {
            println!(
                "{n:>8} vectors: HNSW not built (over CLIPDEX_ANN_GRAPH_MAX={graph_max}: it takes half an hour at 1M)"
            );
            continue;
        }
        // CLIPDEX_ANN_GRAPH_CACHE=DIR: reuse a graph built by an earlier run on the same vectors
        // (the vectors come from a fixed seed), to measure search changes without a rebuild.
        let cache = std::env::var("CLIPDEX_ANN_GRAPH_CACHE")
            .ok()
            .map(|d| std::path::PathBuf::from(d).join(format!("hnsw-{n}")));
        let started = Instant::now();
        let cached = cache.as_ref().and_then(|c| HnswGraph::load(c, DIM));
        let reused = cached.is_some();
        let graph = cached.unwrap_or_else(|| {
            let mut graph = HnswGraph::new(DIM, n);
            let items: Vec<(u64, &[f32])> = index.iter().collect();
            graph.insert(&items);
            if let Some(c) = &cache {
                graph.save(c, None).expect("save the graph cache");
            }
            graph
        });
        let build = started.elapsed().as_secs_f64();
        if reused {
            println!(
                "{n:>8} vectors, HNSW: loaded from CLIPDEX_ANN_GRAPH_CACHE in {build:.1} s (build rate not measured)"
            );
        }
        let truth: Vec<Vec<u64>> =
            queries.iter().map(|q| index.top(q, 10).into_iter().map(|h| h.0).collect()).collect();
        let mut flat = graph.flatten(&index);
        let measure = |search: &Searcher| measure(&queries, &truth, search);
        for cap in env_list("CLIPDEX_ANN_REVERSE_CAPS") {
            // 0: the graph as hnsw_rs built it; the searches below use flatten()'s cap.
            let started = Instant::now();
            let other = graph.flatten_with(&index, cap);
            println!(
                "{n:>8} vectors, HNSW with reverse links up to {cap}: flattened in {:.1} s, {} bytes per vector for the links and byte codes",
                started.elapsed().as_secs_f64(),
                other.bytes() / n
            );
            for ef in [16usize, 32, 64, 128, 256, 512] {
                let rate = measure(&|q| other.search(&index, q, 10, ef));
                println!("{n:>8} vectors, HNSW reverse cap {cap} ef {ef:>3}: clipdex {rate}");
            }
        }
        for beam in env_list("CLIPDEX_ANN_LAYER1_BEAMS") {
            flat.set_layer1_beam(beam);
            for ef in [16usize, 32, 64, 128, 256, 512] {
                let rate = measure(&|q| flat.search(&index, q, 10, ef));
                println!("{n:>8} vectors, HNSW layer-1 beam up to {beam} ef {ef:>3}: clipdex {rate}");
            }
        }
        flat.set_layer1_beam(clipdex::ann::flat::LAYER1_BEAM);
        for ef in [10usize, 16, 32, 64, 128, 256, 512] {
            let rates = [
                measure(&|q| flat.search_with(&index, q, 10, ef, Walk::Bytes)),
                measure(&|q| flat.search_with(&index, q, 10, ef, Walk::Vectors)),
                measure(&|q| graph.search(q, 10, ef)),
            ];
            println!(
                "{n:>8} vectors, HNSW ef {ef:>3}: clipdex {}; walking the full vectors {}; hnsw_rs search {}",
                rates[0], rates[1], rates[2]
            );
        }
        println!(
            "{n:>8} vectors, HNSW: {} bytes per vector for the links and byte codes, beside the exact index's {}",
            flat.bytes() / n,
            index.bytes_per_vector()
        );
        let dir = tempfile::tempdir().expect("temporary folder");
        let snap = dir.path().join("hnsw");
        graph.save(&snap, Some(&flat)).expect("save");
        let flat_mb = std::fs::metadata(snap.join("flat.bin")).map(|m| m.len()).unwrap_or(0) as f64 / 1e6;
        drop(flat);
        // How a search process opens the snapshot: the flat file (the vectors are the exact
        // index's, loaded from the store: see the exact rows above for that rate).
        let started = Instant::now();
        let opened = hnsw::open_for_search(&snap, &index).and_then(|s| s.graph).expect("open the snapshot");
        std::hint::black_box(opened.search(&index, &queries[0], 10, 64));
        let t_open = started.elapsed().as_secs_f64();
        drop(opened);
        // How snapshots without the flat file open: hnsw_rs's dump, then flattening.
        let started = Instant::now();
        let loaded = HnswGraph::load(&snap, DIM).expect("load");
        let t_load = started.elapsed().as_secs_f64();
        let started = Instant::now();
        std::hint::black_box(loaded.flatten(&index).search(&index, &queries[0], 10, 64));
        let t_flatten = started.elapsed().as_secs_f64();
        let built =
            if reused { String::new() } else { format!("built at {:.0} vectors/s ({build:.0} s); ", n as f64 / build) };
        println!(
            "{n:>8} vectors, HNSW: {built}cold start to the first answer {:.2} s from the flat file ({flat_mb:.0} MB), {:.2} s from hnsw_rs's dump ({:.2} s load + {:.2} s flatten)",
            t_open,
            t_load + t_flatten,
            t_load,
            t_flatten
        );
    }
}
