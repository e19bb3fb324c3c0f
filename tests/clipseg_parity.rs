//! CLIPSeg against transformers' `CLIPSegForImageSegmentation` on the tiny fixtures (plain and
//! refined heads): logits for text prompts on three photos and for a visual prompt, the
//! probability map as an 8-bit PNG, and the preprocessing.

mod common;

use std::path::{Path, PathBuf};

use candle_core::{IndexOp, Tensor};
use clipdex::models::clipseg::{Prompt, Segmenter};
use clipdex::photo::{DecodeOptions, open_rgb};
use serde_json::Value;

const MODELS: [&str; 2] = ["clipseg-tiny", "clipseg-tiny-refined"];

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

fn photo(name: &str) -> image::RgbImage {
    open_rgb(&fixtures().join("images").join(name), &DecodeOptions::default()).unwrap()
}

fn load(name: &str) -> Segmenter {
    Segmenter::load(fixtures().join("clipseg").join(name).to_str().unwrap(), &common::device()).unwrap()
}

fn golden(name: &str) -> (Value, std::collections::HashMap<String, Tensor>) {
    let dir = fixtures().join("clipseg");
    let json: Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join(format!("{name}.golden.json"))).unwrap()).unwrap();
    let tensors =
        candle_core::safetensors::load(dir.join(format!("{name}.golden.safetensors")), &common::device()).unwrap();
    (json, tensors)
}

/// Largest difference between our logits (every `stride`-th pixel) and the reference's.
fn max_diff(ours: &Tensor, reference: &Tensor, stride: usize) -> f32 {
    let (n, h, w) = ours.dims3().unwrap();
    let ours = ours.to_vec3::<f32>().unwrap();
    let reference = reference.to_dtype(candle_core::DType::F32).unwrap().to_vec3::<f32>().unwrap();
    let mut worst = 0f32;
    for p in 0..n {
        for (ry, y) in (0..h).step_by(stride).enumerate() {
            for (rx, x) in (0..w).step_by(stride).enumerate() {
                worst = worst.max((ours[p][y][x] - reference[p][ry][rx]).abs());
            }
        }
    }
    worst
}

fn mean_std(t: &Tensor) -> Vec<(f32, f32)> {
    (0..t.dim(0).unwrap())
        .map(|i| {
            let v = t.i(i).unwrap().flatten_all().unwrap().to_vec1::<f32>().unwrap();
            let mean = v.iter().map(|&x| x as f64).sum::<f64>() / v.len() as f64;
            let var = v.iter().map(|&x| (x as f64 - mean).powi(2)).sum::<f64>() / (v.len() - 1) as f64;
            (mean as f32, var.sqrt() as f32)
        })
        .collect()
}

#[test]
fn text_prompt_logits_match_the_reference() {
    for name in MODELS {
        let seg = load(name);
        let (golden, tensors) = golden(name);
        let stride = golden["stride"].as_u64().unwrap() as usize;
        for case in golden["cases"].as_array().unwrap().iter().filter(|c| c.get("prompts").is_some()) {
            let prompts: Vec<String> = serde_json::from_value(case["prompts"].clone()).unwrap();
            let texts: Vec<Prompt> = prompts.iter().map(|p| Prompt::Text(p)).collect();
            let logits =
                seg.logits(&photo(case["image"].as_str().unwrap()), &seg.embed_prompts(&texts).unwrap()).unwrap();
            assert_eq!(logits.dims(), &[prompts.len(), 352, 352]);
            let key = case["key"].as_str().unwrap();
            let diff = max_diff(&logits, &tensors[key], stride);
            assert!(diff < 1e-3, "{name} {key}: logits differ by {diff}");
            for (i, (mean, std)) in mean_std(&logits).into_iter().enumerate() {
                assert!((mean - case["mean"][i].as_f64().unwrap() as f32).abs() < 1e-3, "{name} {key} mean");
                assert!((std - case["std"][i].as_f64().unwrap() as f32).abs() < 1e-3, "{name} {key} std");
            }
        }
    }
}

#[test]
fn a_visual_prompt_matches_the_reference() {
    for name in MODELS {
        let seg = load(name);
        let (golden, tensors) = golden(name);
        let case = golden["cases"].as_array().unwrap().iter().find(|c| c.get("example").is_some()).unwrap();
        let example = photo(case["example"].as_str().unwrap());
        let logits = seg
            .logits(&photo(case["image"].as_str().unwrap()), &seg.embed_prompts(&[Prompt::Example(&example)]).unwrap())
            .unwrap();
        let key = case["key"].as_str().unwrap();
        let diff = max_diff(&logits, &tensors[key], golden["stride"].as_u64().unwrap() as usize);
        assert!(diff < 1e-3, "{name} {key}: logits differ by {diff}");
    }
}

#[test]
fn mixed_prompts_in_one_batch_equal_each_prompt_alone() {
    let seg = load("clipseg-tiny-refined");
    let image = photo("coffee.png");
    let example = photo("rocket.webp");
    let together = seg
        .logits(
            &image,
            &seg.embed_prompts(&[Prompt::Text("coffee"), Prompt::Example(&example), Prompt::Text("a cat")]).unwrap(),
        )
        .unwrap();
    let alone = [
        seg.logits(&image, &seg.embed_prompts(&[Prompt::Text("coffee")]).unwrap()).unwrap(),
        seg.logits(&image, &seg.embed_prompts(&[Prompt::Example(&example)]).unwrap()).unwrap(),
        seg.logits(&image, &seg.embed_prompts(&[Prompt::Text("a cat")]).unwrap()).unwrap(),
    ];
    for (i, a) in alone.iter().enumerate() {
        let d = (together.i(i).unwrap() - a.i(0).unwrap())
            .unwrap()
            .abs()
            .unwrap()
            .max_all()
            .unwrap()
            .to_scalar::<f32>()
            .unwrap();
        assert!(d < 1e-4, "prompt {i} differs by {d} in a batch");
    }
    // And the prompts do change the answer.
    let d = (alone[0].i(0).unwrap() - alone[2].i(0).unwrap())
        .unwrap()
        .abs()
        .unwrap()
        .mean_all()
        .unwrap()
        .to_scalar::<f32>()
        .unwrap();
    assert!(d > 0.1, "prompts barely matter: {d}");
}

#[test]
fn the_probability_map_png_matches_within_one_level() {
    for name in MODELS {
        let seg = load(name);
        let (golden, _) = golden(name);
        let spec = &golden["probability_png"];
        let maps = seg
            .probabilities(
                &photo(spec["image"].as_str().unwrap()),
                &seg.embed_prompts(&[Prompt::Text(spec["prompt"].as_str().unwrap())]).unwrap(),
            )
            .unwrap();
        let ours = clipdex::segment::probability_png(&maps[0]);
        let reference =
            image::open(fixtures().join("clipseg").join(spec["file"].as_str().unwrap())).unwrap().to_luma8();
        assert_eq!(ours.dimensions(), reference.dimensions());
        let worst = ours.pixels().zip(reference.pixels()).map(|(a, b)| a.0[0].abs_diff(b.0[0])).max().unwrap();
        assert!(worst <= 1, "{name}: probability PNG differs by {worst}/255");
    }
}

#[test]
fn preprocessing_is_the_reference_bilinear_resize() {
    for name in MODELS {
        let seg = load(name);
        let (golden, _) = golden(name);
        let spec = &golden["resized_png"];
        let reference = image::open(fixtures().join("clipseg").join(spec["file"].as_str().unwrap())).unwrap().to_rgb8();
        let pixels = seg.preprocess(&photo(spec["image"].as_str().unwrap())).unwrap().to_vec3::<f32>().unwrap();
        let (mean, std) = ([0.485f32, 0.456, 0.406], [0.229f32, 0.224, 0.225]);
        let mut worst = 0f32;
        for (x, y, p) in reference.enumerate_pixels() {
            for c in 0..3 {
                let ours = (pixels[c][y as usize][x as usize] * std[c] + mean[c]) * 255.0;
                worst = worst.max((ours - p.0[c] as f32).abs());
            }
        }
        assert!(worst < 0.01, "{name}: resized pixels differ by {worst}");
    }
}

#[test]
fn wrong_models_are_refused_clearly() {
    let clip = fixtures().join("clip-tiny-p32");
    let e = Segmenter::load(clip.to_str().unwrap(), &common::device()).err().unwrap().to_string();
    assert!(e.contains("not CLIPSeg") && e.contains("clipseg"), "{e}");
    let e = Segmenter::load("/no/such/clipseg", &common::device()).err().unwrap().to_string();
    assert!(e.contains("/no/such/clipseg"), "{e}");
    let seg = load("clipseg-tiny");
    let e = seg.embed_prompts(&[]).unwrap_err().to_string();
    assert!(e.contains("no prompt"), "{e}");
}
