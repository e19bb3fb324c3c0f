//! BLIP speed at the base checkpoints' shapes (ViT-B/16 at 384 px, 12-layer BERT text models;
//! random weights, so captions and answers run to the token limit):
//!
//! - captioning (`blip-image-captioning-base`): the image encoder alone, captions of 10 and 20
//!   new tokens, greedy and with 3 beams (the beams share one decoder pass per step), and 8
//!   photos captioned together as `caption --library` does (one encoder pass, every step of
//!   all 8 searches in one decoder pass);
//! - VQA (`blip-vqa-base`): an answer of 5 tokens for a new image, and for one more question
//!   about an image already encoded;
//! - ITM re-ranking (`blip-itm-base-coco`): one query against the top 10 and top 50 results
//!   (photos already decoded, encoded 8 at a time).
//!
//! "per s" counts images for the encoder and ITM rows, captions or answers for the others. With
//! `CLIPDEX_TORCH_PYTHON` set, transformers runs the same rows in the same run
//! (`tools/bench_models_torch.py blip`) and the speed-ups are printed.
//!
//!     [CLIPDEX_TORCH_PYTHON=~/venv-ref/bin/python] [CLIPDEX_PRECISION=bf16] cargo bench --bench caption [-- RUNS]

mod common;

use common::median_time;

fn main() -> clipdex::Result<()> {
    let device = common::device()?;
    let runs: usize = std::env::args().skip(1).find(|a| !a.starts_with('-')).and_then(|a| a.parse().ok()).unwrap_or(3);
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/images");
    let photo = clipdex::photo::open_rgb(&root.join("astronaut.jpg"), &Default::default())?;
    println!(
        "clipdex BLIP benchmark: base shapes, random weights, {} (CLIPDEX_PRECISION: the image encoder), {} \
         threads, median of {runs}",
        common::precision().effective(),
        rayon::current_num_threads()
    );
    println!("{:<44} {:>10} {:>10}", "", "ms", "per s");
    let mut rows = Vec::new();
    let mut row = |name: &str, d: std::time::Duration, per: f64| {
        println!("{name:<44} {:>10.0} {:>10.2}", d.as_secs_f64() * 1e3, per / d.as_secs_f64());
        rows.push((name.to_string(), d));
    };

    let cap = common::random_blip_captioning(&device)?;
    let start = cap.start_ids(None)?;
    let d = median_time(runs, || {
        cap.beam_search(&photo, &start, 1, 0).unwrap();
    });
    row("image encoder, 1 image", d, 1.0);
    let eight = vec![photo.clone(); 8];
    let d = median_time(runs, || {
        cap.encoder().encode_batch(&eight).unwrap();
    });
    row("image encoder, batch of 8", d, 8.0);
    for (beams, tokens) in [(1, 10), (1, 20), (3, 10), (3, 20)] {
        let d = median_time(runs, || {
            cap.beam_search(&photo, &start, beams, tokens).unwrap();
        });
        row(&format!("caption: {} beam{}, {tokens} tokens", beams, if beams > 1 { "s" } else { "" }), d, 1.0);
    }
    for beams in [1, 3] {
        let d = median_time(runs, || {
            cap.caption_batch(&eight, &start, beams, 10).unwrap();
        });
        row(&format!("caption 8 photos together: {beams} beam{}, 10 tokens", if beams > 1 { "s" } else { "" }), d, 8.0);
    }
    drop(cap);

    let vqa = common::random_blip_vqa(&device)?;
    let question = "how many dogs are on the beach?";
    let d = median_time(runs, || {
        vqa.answer(&photo, question, 1, 5).unwrap();
    });
    row("answer: new image, greedy, 5 tokens", d, 1.0);
    let states = vqa.encoder().encode(&photo)?;
    let d = median_time(runs, || {
        vqa.answer_states(&states, question, 1, 5).unwrap();
    });
    row("answer: image encoded, greedy, 5 tokens", d, 1.0);
    let d = median_time(runs, || {
        vqa.answer_states(&states, question, 3, 5).unwrap();
    });
    row("answer: image encoded, 3 beams, 5 tokens", d, 1.0);
    drop(vqa);

    let itm = common::random_blip_itm(&device)?;
    for top in [10, 50] {
        let images = vec![photo.clone(); top];
        let d = median_time(if top > 10 { 1 } else { runs }, || {
            itm.score_images(&images, "a dog running on the beach").unwrap();
        });
        row(&format!("re-rank top {top} with ITM"), d, top as f64);
    }
    common::compare_with_torch("blip", runs, &rows);
    Ok(())
}
