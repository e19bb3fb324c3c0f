//! Text search over HTTP on loopback: `clipdex serve`'s server in this process, a library of
//! 10,000 images (clustered 512-d vectors written straight into the store), the text tower at
//! ViT-B/32 shapes with random weights, and client threads with keep-alive connections.
//! Prints queries/s and p50/p99 latency for distinct queries (each embeds its text) and for
//! repeated ones (the query-embedding cache answers; what is left is the scan and HTTP).
//!
//!     cargo bench --bench serve [-- IMAGES SECONDS]     (default: 10000 images, 8 s per run)

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use candle_core::Device;
use clipdex::server::{ServeOptions, serve};
use clipdex::store::ImageRecord;
use clipdex::{Library, LibraryConfig};

fn vectors(n: usize, dim: usize) -> Vec<Vec<f32>> {
    let mut state = 0x9e3779b97f4a7c15u64;
    let mut uniform = move || {
        state = state.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        ((state >> 40) as f32 + 0.5) / (1u64 << 24) as f32
    };
    let mut normal = move || {
        let (u, v) = (uniform(), uniform());
        (-2.0 * u.ln()).sqrt() * (std::f32::consts::TAU * v).cos()
    };
    let centres: Vec<Vec<f32>> = (0..100).map(|_| (0..dim).map(|_| normal()).collect()).collect();
    (0..n)
        .map(|i| {
            let mut v: Vec<f32> = centres[i % centres.len()].iter().map(|c| c + 0.6 * normal()).collect();
            let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt();
            v.iter_mut().for_each(|x| *x /= norm);
            v
        })
        .collect()
}

struct Run {
    queries: usize,
    qps: f64,
    p50: Duration,
    p99: Duration,
}

fn load(url: &str, clients: usize, seconds: u64, distinct: bool) -> Run {
    let stop = Arc::new(AtomicBool::new(false));
    let counter = Arc::new(AtomicUsize::new(0));
    let start = Instant::now();
    let threads: Vec<_> = (0..clients)
        .map(|c| {
            let (url, stop, counter) = (url.to_string(), stop.clone(), counter.clone());
            std::thread::spawn(move || {
                let agent = ureq::AgentBuilder::new().build();
                let mut latencies = Vec::new();
                while !stop.load(Ordering::Relaxed) {
                    let i = counter.fetch_add(1, Ordering::Relaxed);
                    let q =
                        if distinct { format!("photo {i} of a dog on a beach") } else { format!("a dog {}", c % 2) };
                    let t = Instant::now();
                    let response = agent.get(&format!("{url}api/search")).query("q", &q).query("k", "20").call();
                    let body: serde_json::Value = response.expect("search answers").into_json().expect("JSON");
                    assert_eq!(body["results"].as_array().map(Vec::len), Some(20));
                    latencies.push(t.elapsed());
                }
                latencies
            })
        })
        .collect();
    std::thread::sleep(Duration::from_secs(seconds));
    stop.store(true, Ordering::Relaxed);
    let mut all: Vec<Duration> = threads.into_iter().flat_map(|t| t.join().unwrap()).collect();
    let elapsed = start.elapsed();
    all.sort();
    Run {
        queries: all.len(),
        qps: all.len() as f64 / elapsed.as_secs_f64(),
        p50: all[all.len() / 2],
        p99: all[(all.len() * 99 / 100).min(all.len() - 1)],
    }
}

fn main() -> clipdex::Result<()> {
    let mut args = std::env::args().skip(1).filter(|a| !a.starts_with('-'));
    let n: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(10_000);
    let seconds: u64 = args.next().and_then(|a| a.parse().ok()).unwrap_or(8);

    let tmp = tempfile::tempdir().expect("temporary folder");
    let clip = Arc::new(common::random_vit_b32(&Device::Cpu)?);
    let library = Library::open(LibraryConfig::new(tmp.path().join("db"), clip.name()))?;
    library.set_embedder(clip.clone())?;
    let store = library.store();
    store.set_model(clip.name(), clip.dim())?;
    let t = Instant::now();
    for (i, v) in vectors(n, clip.dim()).iter().enumerate() {
        let record = ImageRecord {
            hash: format!("{i:064x}"),
            size: 1,
            width: 4000,
            height: 3000,
            modified: 1_600_000_000 + i as i64,
            taken: None,
            camera: None,
            gps: None,
            lens: None,
            video: None,
            motion_video: None,
            motion_video_problem: None,
        };
        store.commit_image(&tmp.path().join(format!("photos/{i:06}.jpg")), 1, 0, &record, v)?;
    }
    let load_secs = t.elapsed().as_secs_f64();

    let (tx, rx) = std::sync::mpsc::channel();
    let options = ServeOptions { bind: "127.0.0.1:0".into(), watch: false, ..Default::default() };
    std::thread::spawn(move || serve(library, options, |addrs| tx.send(addrs[0]).unwrap()));
    let url = format!("http://{}/", rx.recv().expect("the server listens"));
    // Warm up: the first search builds the in-memory index.
    ureq::get(&format!("{url}api/search?q=warm&k=20")).call().expect("search answers");

    println!(
        "clipdex serve benchmark: {n} images ({load_secs:.1} s to write them), ViT-B/32 text tower with random weights, \
         {} server workers, loopback, k=20, {seconds} s per run",
        std::thread::available_parallelism().map_or(2, |p| p.get())
    );
    println!("{:<28} {:>8} {:>9} {:>9} {:>9}", "run", "queries", "q/s", "p50 ms", "p99 ms");
    for (distinct, clients) in [(true, 1), (true, 4), (false, 1), (false, 4)] {
        let r = load(&url, clients, seconds, distinct);
        let name = format!(
            "{} queries, {clients} client{}",
            if distinct { "distinct" } else { "repeated" },
            if clients > 1 { "s" } else { "" }
        );
        println!(
            "{name:<28} {:>8} {:>9.1} {:>9.2} {:>9.2}",
            r.queries,
            r.qps,
            r.p50.as_secs_f64() * 1000.0,
            r.p99.as_secs_f64() * 1000.0
        );
    }
    Ok(())
}
