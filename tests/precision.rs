//! The fidelity gate of `--precision bf16`: on every CLIP fixture, each image and text
//! embedding at cosine >= 0.999 to f32, and the zero-shot top-1 label of each photo unchanged
//! (the zero-shot goldens' labels) wherever f32's top label leads the next by more than 0.01.
//! The random fixtures have near-ties (leads of 0.0004-0.0015) that bf16's rounding may swap,
//! as it would for a real model's near-ties; those are counted, not required. A Chinese-CLIP's
//! BERT text side stays f32 (see `ClipModel::set_precision`): its texts must not change at all.
//! BLIP's image encoder at bf16: its states at cosine >= 0.999 to f32 token by token, and the
//! first word of each fixture caption the same.
//! On a CPU without AVX-512 BF16 the precision falls back to f32 and the test says so.

mod common;

use std::path::PathBuf;

use candle_core::Device;
use clipdex::ClipEmbedder;
use clipdex::models::precision::Precision;
use clipdex::photo::DecodeOptions;
use common::{cosine, fixtures, zeroshot_golden};
use serde::Deserialize;

#[derive(Deserialize)]
struct Golden {
    texts: Vec<GoldenText>,
}

#[derive(Deserialize)]
struct GoldenText {
    text: String,
}

fn top1(image: &[f32], labels: &[Vec<f32>]) -> usize {
    let scores: Vec<f32> = labels.iter().map(|l| cosine(image, l)).collect();
    (0..scores.len()).max_by(|&a, &b| scores[a].total_cmp(&scores[b])).unwrap()
}

/// Every photo of the fixtures (as the parity goldens list them, one of each decoder).
fn photos() -> Vec<PathBuf> {
    let mut paths: Vec<PathBuf> =
        std::fs::read_dir(fixtures().join("images")).unwrap().map(|e| e.unwrap().path()).collect();
    paths.sort();
    paths
}

/// Least lead of f32's top label for which bf16 must keep it.
const CLEAR_LEAD: f32 = 0.01;

fn check(model: &str, golden: &str, bert_text: bool) {
    let dir = fixtures().join(model);
    let f32_clip = ClipEmbedder::load(dir.to_str().unwrap(), &Device::Cpu).unwrap();
    let bf16_clip = ClipEmbedder::load(dir.to_str().unwrap(), &Device::Cpu).unwrap().with_precision(Precision::Bf16);
    if bf16_clip.precision() != Precision::Bf16 {
        eprintln!("this CPU has no AVX-512 BF16: bf16 runs as f32 here, nothing to compare");
        return;
    }
    let g: Golden = serde_json::from_str(
        &std::fs::read_to_string(fixtures().join("golden").join(format!("{golden}.json"))).unwrap(),
    )
    .unwrap();
    let texts: Vec<&str> = g.texts.iter().map(|t| t.text.as_str()).collect();
    let paths = photos();
    let options = DecodeOptions::default();
    let images = |clip: &ClipEmbedder| -> Vec<Vec<f32>> {
        clip.embed_image_files(&paths, &options).into_iter().map(|r| r.unwrap()).collect()
    };
    let (a_images, b_images) = (images(&f32_clip), images(&bf16_clip));
    let (a_texts, b_texts) = (f32_clip.embed_texts(&texts).unwrap(), bf16_clip.embed_texts(&texts).unwrap());

    let mut worst = 1f32;
    let mut changed = 0;
    for (what, a, b) in [("image", &a_images, &b_images), ("text", &a_texts, &b_texts)] {
        for (i, (a, b)) in a.iter().zip(b.iter()).enumerate() {
            let c = cosine(a, b);
            worst = worst.min(c);
            changed += usize::from(a != b);
            assert!(c >= 0.999, "{model}: {what} {i} at cosine {c} to f32");
        }
    }
    // The bf16 path must have run: a batch of images goes through it, so values differ.
    assert!(changed > 0, "{model}: bf16 embeddings are identical to f32: the bf16 kernel never ran");

    let labels: Vec<String> =
        zeroshot_golden("clip-tiny-p32").labels.iter().map(|l| format!("a photo of a {l}.")).collect();
    // Labels as a batch of texts of many rows, so bf16 runs on the text side too.
    let (a_labels, b_labels) = (f32_clip.embed_texts(&labels).unwrap(), bf16_clip.embed_texts(&labels).unwrap());
    if bert_text {
        assert_eq!(a_texts, b_texts, "{model}: the BERT text side must stay f32");
        assert_eq!(a_labels, b_labels, "{model}: the BERT text side must stay f32");
    }
    let (mut clear, mut swapped_ties) = (0, 0);
    for (i, path) in paths.iter().enumerate() {
        let (want, got) = (top1(&a_images[i], &a_labels), top1(&b_images[i], &b_labels));
        let mut scores: Vec<f32> = a_labels.iter().map(|l| cosine(&a_images[i], l)).collect();
        scores.sort_by(|a, b| b.total_cmp(a));
        let lead = scores[0] - scores[1];
        if lead > CLEAR_LEAD {
            clear += 1;
            assert_eq!(want, got, "{model}: zero-shot top-1 of {} (lead {lead}) changed under bf16", path.display());
        } else if want != got {
            swapped_ties += 1;
        }
    }
    assert!(clear > 0, "{model}: no photo has a clear zero-shot winner: the check checked nothing");
    eprintln!(
        "{model}: {changed} embeddings changed by bf16, worst cosine to f32 {worst:.6}; top-1 held on {clear} \
         clear cases, {swapped_ties} near-ties swapped"
    );
}

#[test]
fn bf16_embeddings_stay_within_cosine_0_999_of_f32_and_top1_holds() {
    check("clip-tiny-p32", "clip-tiny-p32", false);
    check("clip-tiny-p16", "clip-tiny-p16", false);
    check("chinese-clip-tiny-p16", "chinese-clip-tiny-p16", true);
    check("chinese-clip-tiny-p32", "chinese-clip-tiny-p32", true);
}

#[test]
fn blip_captions_start_with_the_same_word_at_bf16() {
    use clipdex::models::blip::BlipCaptioner;
    if Precision::Bf16.effective() != Precision::Bf16 {
        eprintln!("this CPU has no AVX-512 BF16: bf16 runs as f32 here, nothing to compare");
        return;
    }
    let dir = fixtures().join("blip/blip-tiny-captioning");
    let f32_model = BlipCaptioner::load(dir.to_str().unwrap(), &Device::Cpu).unwrap();
    let bf16_model = BlipCaptioner::load(dir.to_str().unwrap(), &Device::Cpu).unwrap().with_precision(Precision::Bf16);
    let options = DecodeOptions::default();
    let (mut whole, mut worst, mut changed) = (0, 1f32, 0);
    let paths = photos();
    for path in &paths {
        let image = clipdex::photo::open_rgb(path, &options).unwrap();
        let (a, b) = (f32_model.encoder().encode(&image).unwrap(), bf16_model.encoder().encode(&image).unwrap());
        let (a, b): (Vec<Vec<f32>>, Vec<Vec<f32>>) = (a.to_vec2().unwrap(), b.to_vec2().unwrap());
        for (x, y) in a.iter().zip(&b) {
            let c = cosine(x, y);
            worst = worst.min(c);
            assert!(c >= 0.999, "{}: a token's state at cosine {c} to f32", path.display());
        }
        changed += usize::from(a != b);
        let start = f32_model.start_ids(None).unwrap();
        let (x, y) = (
            f32_model.beam_search(&image, &start, 1, 12).unwrap(),
            bf16_model.beam_search(&image, &start, 1, 12).unwrap(),
        );
        assert_eq!(x.get(start.len()), y.get(start.len()), "{}: first word changed under bf16", path.display());
        whole += usize::from(x == y);
    }
    assert!(changed > 0, "bf16 states are identical to f32: the bf16 kernel never ran");
    eprintln!("BLIP: worst token cosine {worst:.6}; {whole} of {} greedy captions identical", paths.len());
}
