//! Exact search speed over clustered 512-d unit vectors (photo embeddings cluster; uniform noise
//! would flatter nothing and test nothing): queries/s for the 10 best, load rate, memory.
//!
//!     cargo bench --bench ann [-- N ...]     (default: 100000 1000000)

use std::time::Instant;

use clipdex::ann::ExactIndex;

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
    }
}
