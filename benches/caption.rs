//! BLIP captioning speed at `Salesforce/blip-image-captioning-base`'s shapes (ViT-B/16 at
//! 384 px, 12-layer BERT decoder; random weights, so captions run to the token limit): the
//! image encoder alone, then captions of 10 and 20 new tokens, greedy and with 3 beams.
//!
//!     cargo bench --bench caption [-- RUNS]

mod common;

use candle_core::Device;
use common::median_time;

fn main() -> clipdex::Result<()> {
    let runs: usize = std::env::args().skip(1).find(|a| !a.starts_with('-')).and_then(|a| a.parse().ok()).unwrap_or(3);
    let cap = common::random_blip_captioning(&Device::Cpu)?;
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/images");
    let photo = clipdex::photo::open_rgb(&root.join("astronaut.jpg"), &Default::default())?;
    let start = cap.start_ids(None)?;
    println!(
        "clipdex BLIP captioning benchmark: blip-image-captioning-base shapes, random weights, f32, {} threads, median of {runs}",
        rayon::current_num_threads()
    );
    println!("{:<36} {:>10} {:>12}", "", "ms", "captions/s");
    let row = |name: &str, d: std::time::Duration| {
        println!("{name:<36} {:>10.0} {:>12.2}", d.as_secs_f64() * 1e3, 1.0 / d.as_secs_f64());
    };
    row(
        "image encoder only",
        median_time(runs, || {
            cap.beam_search(&photo, &start, 1, 0).unwrap();
        }),
    );
    for (beams, tokens) in [(1, 10), (1, 20), (3, 10), (3, 20)] {
        let d = median_time(runs, || {
            cap.beam_search(&photo, &start, beams, tokens).unwrap();
        });
        row(&format!("{} beam{}, {tokens} tokens", beams, if beams > 1 { "s" } else { "" }), d);
    }
    Ok(())
}
