//! Speed of the CLIP towers at ViT-B/32 shapes with random weights (a forward pass costs the
//! same whatever the weights hold), so no download is needed.
//!
//!     [CLIPDEX_DEVICE=cuda] [CLIPDEX_PRECISION=bf16] [CLIPDEX_TORCH_PYTHON=~/venv-ref/bin/python] cargo bench --bench clip
//!
//! Prints images/s and texts/s at batch sizes 1 and 32, single-query latency, and the cost of
//! decoding + preprocessing a 12-megapixel JPEG; with `CLIPDEX_TORCH_PYTHON`, transformers' times
//! for the same rows in the same run (`tools/bench_models_torch.py clip`: fp32, and bf16 autocast
//! when clipdex runs a reduced precision) and the speed-ups.

mod common;

use std::path::Path;

use candle_core::Tensor;
use clipdex::photo::{DecodeOptions, open_rgb};
use common::{median_time, random_vit_b32};

fn main() -> clipdex::Result<()> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let device = common::device()?;
    let clip = random_vit_b32(&device)?;

    println!(
        "clipdex CLIP benchmark: ViT-B/32 shapes, random weights, {} (CLIPDEX_PRECISION), {} threads",
        clip.precision(),
        rayon::current_num_threads()
    );
    // Batch 256 on a GPU only (on a CPU it is batch 32 eight times over).
    let batches: &[usize] = if device.is_cpu() { &[1, 32] } else { &[1, 32, 256] };
    let mut rows = Vec::new();
    for &batch in batches {
        let pixels = Tensor::randn(0f32, 1.0, (batch, 3, 224, 224), &device)?;
        let runs = if batch == 1 { 15 } else { 3 };
        let t = median_time(runs, || {
            clip.embed_pixels(&pixels).unwrap();
        });
        println!(
            "image tower  batch {batch:>3}: {:>7.2} images/s  ({:.1} ms per batch)",
            batch as f64 / t.as_secs_f64(),
            t.as_secs_f64() * 1e3
        );
        rows.push((format!("image tower, batch {batch}"), t));
    }
    for batch in [1usize, 32] {
        // 77 tokens: start, 75 words, end (the model's full context).
        let ids: Vec<Vec<u32>> = (0..batch)
            .map(|i| {
                std::iter::once(49406)
                    .chain((0..75).map(|j| 320 + ((i * 75 + j) % 40000) as u32))
                    .chain(std::iter::once(49407))
                    .collect()
            })
            .collect();
        let runs = if batch == 1 { 15 } else { 3 };
        let t = median_time(runs, || {
            clip.embed_token_ids(&ids).unwrap();
        });
        println!(
            "text tower   batch {batch:>2}: {:>7.2} texts/s   ({:.1} ms per batch, 77 tokens)",
            batch as f64 / t.as_secs_f64(),
            t.as_secs_f64() * 1e3
        );
        rows.push((format!("text tower, batch {batch}, 77 tokens"), t));
    }
    let query = "a photo of a dog on the beach";
    let t = median_time(21, || {
        clip.embed_texts(&[query]).unwrap();
    });
    println!("query latency (tokenize + text tower, {query:?}): {:.2} ms", t.as_secs_f64() * 1e3);
    rows.push(("query (tokenise + text tower)".to_string(), t));
    // One text by its length: up to 48 tokens the few-rows kernel runs (where the CPU has
    // AVX-512; CLIPDEX_SKINNY=0 switches it off to compare).
    for tokens in [12usize, 24, 48, 77] {
        let ids: Vec<Vec<u32>> =
            vec![std::iter::once(49406).chain((0..tokens - 2).map(|j| 320 + j as u32)).chain([49407]).collect()];
        let t = median_time(15, || {
            clip.embed_token_ids(&ids).unwrap();
        });
        println!("one text of {tokens:>2} tokens: {:.2} ms", t.as_secs_f64() * 1e3);
    }

    let photo = root.join("tests/fixtures/images/coffee_12mp.jpg");
    let options = DecodeOptions::default();
    let t_decode = median_time(5, || {
        open_rgb(&photo, &options).unwrap();
    });
    let rgb = open_rgb(&photo, &options)?;
    let t_pre = median_time(5, || {
        clip.preprocess(&rgb).unwrap();
    });
    println!(
        "12 MP JPEG (4000x3000): decode {:.1} ms, resize + crop + normalise {:.1} ms",
        t_decode.as_secs_f64() * 1e3,
        t_pre.as_secs_f64() * 1e3
    );
    rows.push(("12 MP JPEG: decode".to_string(), t_decode));
    rows.push(("12 MP JPEG: resize + crop + normalise".to_string(), t_pre));
    common::compare_with_torch("clip", 3, &rows);
    Ok(())
}
