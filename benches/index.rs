//! Indexing throughput on a folder of 12-megapixel JPEGs at ViT-B/32 shapes (random weights),
//! with the reduced-scale JPEG decoding and with full-size decoding, and where the time goes.
//!
//!     cargo bench --bench index [-- N_PHOTOS]
//!
//! The photos are generated from the fixture photos (upscaled to 4000x3000, each tinted
//! differently so that no two share a hash) into a temporary folder.

mod common;

use std::path::{Path, PathBuf};
use std::time::Instant;

use candle_core::{Device, Tensor};
use clipdex::indexer::{IndexOptions, index_pass};
use clipdex::photo::{DEFAULT_MAX_PIXELS, DecodeOptions, decode_photo};
use clipdex::store::Store;
use common::{median_time, random_vit_b32};

fn make_photos(dir: &Path, n: usize) -> Vec<PathBuf> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/images");
    let sources = ["astronaut.jpg", "coffee.png", "chelsea_small.bmp", "rocket.webp"];
    (0..n)
        .map(|i| {
            let src = image::open(root.join(sources[i % sources.len()])).unwrap().to_rgb8();
            let mut big = image::imageops::resize(&src, 4000, 3000, image::imageops::FilterType::Triangle);
            for p in big.pixels_mut() {
                p.0[i % 3] = p.0[i % 3].saturating_add((i * 7 % 50) as u8);
            }
            // A mark of its own, so that no two photos are the same file (a tint can be 0).
            for x in 0..64 {
                big.put_pixel((i * 64 + x) as u32 % 4000, 0, image::Rgb([255, 0, 255]));
            }
            let path = dir.join(format!("photo{i:03}.jpg"));
            let mut out = std::io::BufWriter::new(std::fs::File::create(&path).unwrap());
            image::codecs::jpeg::JpegEncoder::new_with_quality(&mut out, 88).encode_image(&big).unwrap();
            path
        })
        .collect()
}

fn main() -> clipdex::Result<()> {
    let n: usize = std::env::args().nth(1).and_then(|a| a.parse().ok()).unwrap_or(32);
    let tmp = tempfile::tempdir().expect("temporary folder");
    let photos_dir = tmp.path().join("photos");
    std::fs::create_dir_all(&photos_dir).expect("photo folder");
    eprintln!("writing {n} 12 MP JPEGs...");
    let photos = make_photos(&photos_dir, n);
    let bytes: u64 = photos.iter().map(|p| std::fs::metadata(p).unwrap().len()).sum();

    let device = Device::Cpu;
    let clip = random_vit_b32(&device)?;
    println!(
        "clipdex indexing benchmark: {n} JPEGs of 4000x3000 ({:.1} MB), ViT-B/32 shapes, random weights, {} \
         (CLIPDEX_PRECISION), {} threads",
        bytes as f64 / 1e6,
        clip.precision(),
        rayon::current_num_threads()
    );

    // Where one photo's time goes, single-threaded stages measured one at a time.
    let sample = std::fs::read(&photos[0]).unwrap();
    let full = DecodeOptions { max_pixels: DEFAULT_MAX_PIXELS, min_side: None };
    let fast = DecodeOptions { max_pixels: DEFAULT_MAX_PIXELS, min_side: Some(224) };
    let t_full = median_time(5, || {
        decode_photo(&sample, &full).unwrap();
    });
    let t_fast = median_time(5, || {
        decode_photo(&sample, &fast).unwrap();
    });
    let img_full = decode_photo(&sample, &full).unwrap().image;
    let img_fast = decode_photo(&sample, &fast).unwrap().image;
    let t_pre_full = median_time(5, || {
        clip.preprocess(&img_full).unwrap();
    });
    let t_pre_fast = median_time(5, || {
        clip.preprocess(&img_fast).unwrap();
    });
    let hash = median_time(5, || {
        blake3::hash(&sample);
    });
    let pixels = Tensor::randn(0f32, 1.0, (32, 3, 224, 224), &device)?;
    let t_model = median_time(2, || {
        clip.embed_pixels(&pixels).unwrap();
    }) / 32;
    let ms = |d: std::time::Duration| d.as_secs_f64() * 1e3;
    println!("per photo: blake3 {:.1} ms; model {:.1} ms (batch 32)", ms(hash), ms(t_model));
    println!(
        "  full decode {:.1} ms + resize {:.1} ms; reduced decode ({}x{}) {:.1} ms + resize {:.1} ms",
        ms(t_full),
        ms(t_pre_full),
        img_fast.width(),
        img_fast.height(),
        ms(t_fast),
        ms(t_pre_fast)
    );

    let mut ours = 0.0;
    for (label, min_side) in [("reduced-scale decode", Some(224)), ("full-size decode", None)] {
        let db = tmp.path().join(format!("db-{}", min_side.is_some()));
        let store = Store::open(&db)?;
        store.add_root(&std::fs::canonicalize(&photos_dir).unwrap())?;
        let options = IndexOptions {
            decode: DecodeOptions { max_pixels: DEFAULT_MAX_PIXELS, min_side },
            batch_size: 32,
            prune: false,
            video: Default::default(),
        };
        let started = Instant::now();
        let report = index_pass(&store, &clip, &options, &|_, _| {})?;
        let secs = started.elapsed().as_secs_f64();
        assert_eq!(report.embedded as usize, n, "{report:?}");
        let model_share = ms(t_model) * n as f64 / 1e3 / secs;
        println!(
            "index pass, {label}: {:.2} photos/s ({:.1} s for {n}); model {:.0}% of the time",
            n as f64 / secs,
            secs,
            model_share * 100.0
        );
        let started = Instant::now();
        let again = index_pass(&store, &clip, &options, &|_, _| {})?;
        assert_eq!(again.embedded, 0);
        println!("  unchanged re-run: {:.1} ms", started.elapsed().as_secs_f64() * 1e3);
        if min_side.is_some() {
            ours = n as f64 / secs;
        }
    }
    torch_side(&photos_dir, ours);
    Ok(())
}

/// With `CLIPDEX_TORCH_PYTHON` set: PyTorch's figures on the same photos in the same run
/// (`tools/bench_index_torch.py`), and the ratios to clipdex's default (reduced-scale) pass.
fn torch_side(photos: &Path, ours: f64) {
    let Ok(python) = std::env::var("CLIPDEX_TORCH_PYTHON") else { return };
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tools/bench_index_torch.py");
    let threads = rayon::current_num_threads().to_string();
    let out = match std::process::Command::new(python).arg(script).arg(photos).args(["--threads", &threads]).output() {
        Ok(out) => out,
        Err(e) => return eprintln!("cannot run the PyTorch side: {e}"),
    };
    let text = String::from_utf8_lossy(&out.stdout);
    print!("{text}{}", String::from_utf8_lossy(&out.stderr));
    for line in text.lines() {
        if let Some((label, rate)) = line.strip_prefix("torch index, ").and_then(|l| l.split_once(": "))
            && let Some(rate) = rate.split_whitespace().next().and_then(|r| r.parse::<f64>().ok())
        {
            println!("clipdex / PyTorch ({label}): {:.2}x photos/s", ours / rate);
        }
    }
}
