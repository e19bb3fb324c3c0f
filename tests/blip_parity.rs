//! BLIP against transformers on the tiny fixture (`tools/make_blip_fixtures.py`): so far the
//! image encoder, its preprocessing and greedy captioning (issue 6 is in progress).

use std::path::{Path, PathBuf};

use candle_core::Device;
use clipdex::models::blip::{BlipCaptioner, BlipImageEncoder};
use clipdex::photo::{DecodeOptions, open_rgb};

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

fn encoder() -> BlipImageEncoder {
    BlipImageEncoder::load(fixtures().join("blip/blip-tiny-captioning").to_str().unwrap(), &Device::Cpu).unwrap()
}

fn photo(name: &str) -> image::RgbImage {
    open_rgb(&fixtures().join("images").join(name), &DecodeOptions::default()).unwrap()
}

#[test]
fn image_encoder_states_match_the_reference() {
    let enc = encoder();
    let golden =
        candle_core::safetensors::load(fixtures().join("blip/blip-tiny-captioning.golden.safetensors"), &Device::Cpu)
            .unwrap();
    for name in ["astronaut.jpg", "coffee.png", "chelsea_exif6.jpg"] {
        let ours = enc.encode(&photo(name)).unwrap();
        let reference = golden[&format!("vision/{name}")].to_dtype(candle_core::DType::F32).unwrap();
        assert_eq!(ours.dims(), reference.dims());
        let diff = (ours - reference).unwrap().abs().unwrap().max_all().unwrap().to_scalar::<f32>().unwrap();
        assert!(diff < 1e-4, "{name}: encoder states differ by {diff}");
    }
}

#[test]
fn preprocessing_is_the_reference_bicubic_384() {
    let enc = encoder();
    let reference = image::open(fixtures().join("blip/chelsea_exif6.jpg.384.png")).unwrap().to_rgb8();
    let pixels = enc.preprocess(&photo("chelsea_exif6.jpg")).unwrap().to_vec3::<f32>().unwrap();
    let (mean, std) = (clipdex::models::preprocess::OPENAI_CLIP_MEAN, clipdex::models::preprocess::OPENAI_CLIP_STD);
    let mut worst = 0f32;
    for (x, y, p) in reference.enumerate_pixels() {
        for c in 0..3 {
            let ours = (pixels[c][y as usize][x as usize] * std[c] + mean[c]) * 255.0;
            worst = worst.max((ours - p.0[c] as f32).abs());
        }
    }
    assert!(worst < 0.01, "resized pixels differ by {worst}");
}

#[test]
fn a_clip_directory_is_not_blip() {
    let e = BlipImageEncoder::load(fixtures().join("clip-tiny-p32").to_str().unwrap(), &Device::Cpu)
        .err()
        .unwrap()
        .to_string();
    assert!(e.contains("not BLIP"), "{e}");
}

#[test]
fn greedy_captions_match_the_reference_token_by_token() {
    let dir = fixtures().join("blip");
    let cap = BlipCaptioner::load(dir.join("blip-tiny-captioning").to_str().unwrap(), &Device::Cpu).unwrap();
    let golden: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("blip-tiny-captioning.golden.json")).unwrap()).unwrap();
    let probes =
        candle_core::safetensors::load(dir.join("blip-tiny-captioning.golden.safetensors"), &Device::Cpu).unwrap();
    let probe_ids: Vec<u32> = serde_json::from_value(golden["probe_ids"].clone()).unwrap();
    let prompt = golden["prompt"].as_str().unwrap();
    let max_new = golden["max_new_tokens"].as_u64().unwrap() as usize;
    let mut checked = 0;
    for case in golden["cases"].as_array().unwrap().iter().filter(|c| c["beams"] == 1) {
        let expected: Vec<u32> = serde_json::from_value(case["ids"].clone()).unwrap();
        let start = cap.start_ids(case["prompted"].as_bool().unwrap().then_some(prompt)).unwrap();
        assert_eq!(start[..], expected[..start.len()], "start tokens");
        let steps = cap.greedy(&photo(case["image"].as_str().unwrap()), &start, max_new).unwrap();
        let ours: Vec<u32> = start.iter().copied().chain(steps.iter().map(|s| s.token)).collect();
        let key = case["key"].as_str().unwrap();
        assert_eq!(ours, expected, "{key}: token ids");
        let reference = probes[key].to_vec2::<f32>().unwrap();
        for (i, (step, want)) in steps.iter().zip(&reference).enumerate() {
            let logits = step.logits.to_vec1::<f32>().unwrap();
            let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
            let lse = max + logits.iter().map(|l| (l - max).exp()).sum::<f32>().ln();
            let got: Vec<f32> = probe_ids.iter().map(|&t| logits[t as usize]).chain([max, lse]).collect();
            for (g, w) in got.iter().zip(want) {
                assert!((g - w).abs() < 1e-3, "{key} step {i}: logit {g} vs {w}");
            }
        }
        assert_eq!(cap.decode(&ours).unwrap(), case["text"].as_str().unwrap());
        checked += 1;
    }
    assert_eq!(checked, 6);
}

#[test]
fn beam_search_matches_the_reference() {
    let dir = fixtures().join("blip");
    let cap = BlipCaptioner::load(dir.join("blip-tiny-captioning").to_str().unwrap(), &Device::Cpu).unwrap();
    let golden: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("blip-tiny-captioning.golden.json")).unwrap()).unwrap();
    let prompt = golden["prompt"].as_str().unwrap();
    let max_new = golden["max_new_tokens"].as_u64().unwrap() as usize;
    let cases: Vec<&serde_json::Value> =
        golden["cases"].as_array().unwrap().iter().filter(|c| c["beams"] == 3).collect();
    assert_eq!(cases.len(), 6);
    for case in cases {
        let expected: Vec<u32> = serde_json::from_value(case["ids"].clone()).unwrap();
        let start = cap.start_ids(case["prompted"].as_bool().unwrap().then_some(prompt)).unwrap();
        let ours = cap.beam_search(&photo(case["image"].as_str().unwrap()), &start, 3, max_new).unwrap();
        assert_eq!(ours, expected, "{}", case["key"]);
    }
}

#[test]
fn the_caption_command_prints_the_reference_captions() {
    let dir = fixtures().join("blip");
    let golden: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("blip-tiny-captioning.golden.json")).unwrap()).unwrap();
    let case = golden["cases"].as_array().unwrap().iter().find(|c| c["key"] == "coffee.png/prompt/3").unwrap();
    let image = fixtures().join("images/coffee.png");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_clipdex"))
        .args(["--caption-model", dir.join("blip-tiny-captioning").to_str().unwrap(), "caption"])
        .args([image.to_str().unwrap(), "/no/such.jpg", "--prompt", golden["prompt"].as_str().unwrap()])
        .args(["--beams", "3", "--max-tokens", "12", "--json"])
        .output()
        .unwrap();
    assert!(!out.status.success(), "one image is missing");
    let doc: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let rows = doc["captions"].as_array().unwrap();
    assert_eq!(rows[0]["path"].as_str().unwrap(), image.to_str().unwrap());
    assert_eq!(rows[0]["caption"], case["text"]);
    assert!(rows[1]["error"].as_str().unwrap().contains("no such file"));
    assert!(String::from_utf8_lossy(&out.stderr).contains("1 of 2 images"));
}
