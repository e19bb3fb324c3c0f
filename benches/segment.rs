//! CLIPSeg speed at `CIDAS/clipseg-rd64-refined`'s shapes (ViT-B/16 at 352 px, random
//! weights): images per second with one prompt and with five (the image is encoded once and
//! the five prompts share its activations), and where the time goes.
//!
//! CLIPSeg runs in f32 whatever `--precision` says: at bf16 its fixtures' probabilities moved
//! by up to 5.4/255 (the gate is 2/255), with either the attention or the MLP products alone
//! in bf16 too.
//!
//! With `CLIPDEX_TORCH_PYTHON` set, transformers runs the same rows in the same run
//! (`tools/bench_models_torch.py clipseg`; it has no way to share one vision pass among
//! prompts, so its five prompts repeat the photo) and the speed-ups are printed.
//!
//!     [CLIPDEX_TORCH_PYTHON=~/venv-ref/bin/python] cargo bench --bench segment [-- RUNS]

mod common;

use std::time::Instant;

use clipdex::models::clipseg::Prompt;
use common::median_time;

fn main() -> clipdex::Result<()> {
    let runs: usize = std::env::args().skip(1).find(|a| !a.starts_with('-')).and_then(|a| a.parse().ok()).unwrap_or(5);
    let device = common::device()?;
    let t = Instant::now();
    let seg = common::random_clipseg_refined(&device)?;
    println!(
        "clipdex CLIPSeg benchmark: rd64-refined shapes (ViT-B/16 at 352 px), random weights, f32, {} threads; built in {:.1} s",
        rayon::current_num_threads(),
        t.elapsed().as_secs_f64()
    );
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/images");
    let photo = clipdex::photo::open_rgb(&root.join("astronaut.jpg"), &Default::default())?;
    let five = ["a person", "a flag", "a helmet", "the sky", "a rocket"];
    let one = [Prompt::Text(five[0])];
    let many: Vec<Prompt> = five.iter().map(|p| Prompt::Text(p)).collect();

    let pre = median_time(runs, || {
        seg.preprocess(&photo).unwrap();
    });
    let t1 = median_time(runs, || {
        seg.probabilities(&photo, &seg.embed_prompts(&one).unwrap()).unwrap();
    });
    let t5 = median_time(runs, || {
        seg.probabilities(&photo, &seg.embed_prompts(&many).unwrap()).unwrap();
    });
    let regions = median_time(runs, || {
        clipdex::segment::segment_photo(&seg, &photo, &seg.embed_prompts(&one).unwrap(), &Default::default()).unwrap();
    });
    println!("{:<40} {:>10} {:>10}", "", "ms", "images/s");
    let mut rows = Vec::new();
    let mut row = |name: &str, d: std::time::Duration| {
        println!("{name:<40} {:>10.1} {:>10.2}", d.as_secs_f64() * 1e3, 1.0 / d.as_secs_f64());
        rows.push((name.to_string(), d));
    };
    row("preprocess (512x512 -> 352x352)", pre);
    row("1 prompt", t1);
    row("5 prompts (one vision pass)", t5);
    row("1 prompt + map at 512x512 + regions", regions);
    println!("per extra prompt: {:.1} ms", (t5.as_secs_f64() - t1.as_secs_f64()) / 4.0 * 1e3);
    common::compare_with_torch("clipseg", runs, &rows);
    Ok(())
}
