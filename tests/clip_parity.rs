//! Parity with the reference (transformers + PIL) on the tiny fixture models: token ids
//! identical, 8-bit crops within 2/255, every embedding at cosine >= 0.9999.
//! The goldens come from `tools/make_fixtures.py`.

mod common;

use std::path::PathBuf;

use clipdex::ClipEmbedder;
use clipdex::photo::{DecodeOptions, open_rgb};
use common::{cosine, fixtures};
use serde::Deserialize;

#[derive(Deserialize)]
struct Golden {
    model_dir: String,
    dim: usize,
    logit_scale: f32,
    texts: Vec<GoldenText>,
    images: Vec<GoldenImage>,
}

#[derive(Deserialize)]
struct GoldenText {
    text: String,
    ids: Vec<u32>,
    embedding: Vec<f32>,
}

#[derive(Deserialize)]
struct GoldenImage {
    file: String,
    upright_size: [u32; 2],
    crop: String,
    pixel_head: Vec<f32>,
    embedding: Vec<f32>,
}

fn golden(name: &str) -> Golden {
    let text = std::fs::read_to_string(fixtures().join("golden").join(format!("{name}.json"))).unwrap();
    serde_json::from_str(&text).unwrap()
}

fn load(g: &Golden) -> ClipEmbedder {
    ClipEmbedder::load(fixtures().join(&g.model_dir).to_str().unwrap(), &common::device()).unwrap()
}

fn check_texts(name: &str) {
    let g = golden(name);
    let clip = load(&g);
    assert_eq!(clip.dim(), g.dim);
    assert!(
        (clip.logit_scale() - g.logit_scale).abs() < 1e-3 * g.logit_scale,
        "{} vs {}",
        clip.logit_scale(),
        g.logit_scale
    );
    let mut problems = Vec::new();
    for t in &g.texts {
        let ids = clip.tokenize(&t.text).unwrap();
        if ids != t.ids {
            problems.push(format!("{:?}: ids {:?}\n  expected {:?}", t.text, ids, t.ids));
        }
    }
    // All texts in one padded batch: padding must not leak into the pooled states.
    let texts: Vec<&str> = g.texts.iter().map(|t| t.text.as_str()).collect();
    let embedded = clip.embed_texts(&texts).unwrap();
    for (t, e) in g.texts.iter().zip(&embedded) {
        let c = cosine(e, &t.embedding);
        if c < 0.9999 {
            problems.push(format!("{:?}: cosine {c}", t.text));
        }
    }
    assert!(problems.is_empty(), "{name}:\n{}", problems.join("\n"));
}

fn check_images(name: &str) {
    let g = golden(name);
    let clip = load(&g);
    let (mean, std) = clip.processor().normalize.unwrap();
    let mut problems = Vec::new();
    let mut report = Vec::new();
    for im in &g.images {
        let path = fixtures().join("images").join(&im.file);
        let rgb = match open_rgb(&path, &DecodeOptions::default()) {
            Ok(rgb) => rgb,
            Err(e) => {
                problems.push(format!("{}: {e}", im.file));
                continue;
            }
        };
        if [rgb.width(), rgb.height()] != im.upright_size {
            problems.push(format!("{}: upright size {:?}, expected {:?}", im.file, rgb.dimensions(), im.upright_size));
            continue;
        }
        let crop = clip.processor().resize_and_crop(&rgb).unwrap();
        let want = image::open(fixtures().join("golden").join(&im.crop)).unwrap().to_rgb8();
        assert_eq!(crop.dimensions(), want.dimensions(), "{}", im.file);
        let diffs: Vec<i32> =
            crop.as_raw().iter().zip(want.as_raw()).map(|(a, b)| (*a as i32 - *b as i32).abs()).collect();
        let max = *diffs.iter().max().unwrap();
        let mean_diff = diffs.iter().sum::<i32>() as f64 / diffs.len() as f64;
        if max > 2 {
            problems.push(format!("{}: crop differs by up to {max}/255 (mean {mean_diff:.3})", im.file));
        }
        // The rescale + normalise step, on the first four pixels of each channel's top row.
        let pixels = clip.preprocess(&rgb).unwrap();
        for (c, std_c) in std.iter().enumerate() {
            for x in 0..4 {
                let got = pixels.get(c).unwrap().get(0).unwrap().get(x).unwrap().to_scalar::<f32>().unwrap();
                let want = im.pixel_head[c * 4 + x];
                if (got - want).abs() * std_c > 2.0 / 255.0 + 1e-6 {
                    problems.push(format!("{}: pixel ({c},0,{x}) = {got}, expected {want} (mean {:?})", im.file, mean));
                }
            }
        }
        let e = clip.embed_images(&[rgb]).unwrap().remove(0);
        let c = cosine(&e, &im.embedding);
        report.push(format!("{:<28} max diff {max}/255, mean {mean_diff:.3}, cosine {c:.6}", im.file));
        if c < 0.9999 {
            problems.push(format!("{}: embedding cosine {c}", im.file));
        }
    }
    eprintln!("{name}:\n{}", report.join("\n"));
    assert!(problems.is_empty(), "{name}:\n{}", problems.join("\n"));
}

#[test]
fn p32_tokens_and_text_embeddings_match_the_reference() {
    check_texts("clip-tiny-p32");
}

#[test]
fn p16_tokens_from_vocab_and_merges_match_the_reference() {
    check_texts("clip-tiny-p16");
}

#[test]
fn p32_images_match_the_reference() {
    check_images("clip-tiny-p32");
}

#[test]
fn p16_images_match_the_reference() {
    check_images("clip-tiny-p16");
}

#[test]
fn batching_does_not_change_embeddings() {
    let g = golden("clip-tiny-p32");
    let clip = load(&g);
    let paths: Vec<PathBuf> = g.images.iter().map(|im| fixtures().join("images").join(&im.file)).collect();
    let batched = clip.embed_image_files(&paths, &DecodeOptions::default());
    for (path, got) in paths.iter().zip(batched) {
        let single = clip.embed_images(&[open_rgb(path, &DecodeOptions::default()).unwrap()]).unwrap().remove(0);
        let c = cosine(&got.unwrap(), &single);
        assert!(c > 0.99999, "{}: {c}", path.display());
    }
}
