//! JPEG decoding speed: the 12 MP fixture photo decoded at full size and at the reduced DCT
//! scale indexing uses (short side ≥ 224), median of 9 runs each. Built with `nasm` on the
//! PATH, libjpeg-turbo's decoder has its SIMD code; without it, C only (same pixels). To
//! compare, move `nasm` aside, `cargo clean --release -p mozjpeg-sys`, run again, put it back.
//!
//!     cargo bench --bench jpeg

use std::time::Instant;

use clipdex::photo::{DEFAULT_MAX_PIXELS, DecodeOptions, decode_photo};

fn median_ms(runs: usize, mut f: impl FnMut()) -> f64 {
    let mut times: Vec<f64> = (0..runs)
        .map(|_| {
            let t = Instant::now();
            f();
            t.elapsed().as_secs_f64() * 1e3
        })
        .collect();
    times.sort_by(f64::total_cmp);
    times[runs / 2]
}

fn main() {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/images/coffee_12mp.jpg");
    let bytes = std::fs::read(&path).expect("the fixture photo");
    let nasm = std::process::Command::new("nasm").arg("-v").output().is_ok();
    println!(
        "JPEG decoding, {} ({} KB); nasm on PATH now: {nasm} (what counts is at build time)",
        path.display(),
        bytes.len() / 1024
    );
    for (label, min_side) in [("full size", None), ("reduced scale (short side >= 224)", Some(224))] {
        let options = DecodeOptions { max_pixels: DEFAULT_MAX_PIXELS, min_side };
        let size = decode_photo(&bytes, &options).expect("decodes").image.dimensions();
        let ms = median_ms(9, || {
            decode_photo(&bytes, &options).expect("decodes");
        });
        println!("  {label}: {}x{} in {ms:.1} ms", size.0, size.1);
    }
}
