//! BLIP against transformers on the tiny fixtures (`tools/make_blip_fixtures.py`): the image
//! encoder and its preprocessing, captioning (greedy with per-step logits, beam search, with
//! and without a prompt), VQA (question-encoder states, greedy and beam answers), ITM and ITC,
//! the `caption`, `ask` and `match` commands, and wrong models and broken images.

mod common;

use std::path::{Path, PathBuf};

use clipdex::models::blip::{BlipAnswerer, BlipCaptioner, BlipImageEncoder, BlipMatcher};
use clipdex::photo::{DecodeOptions, open_rgb};

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

fn encoder() -> BlipImageEncoder {
    BlipImageEncoder::load(fixtures().join("blip/blip-tiny-captioning").to_str().unwrap(), &common::device()).unwrap()
}

fn photo(name: &str) -> image::RgbImage {
    open_rgb(&fixtures().join("images").join(name), &DecodeOptions::default()).unwrap()
}

#[test]
fn image_encoder_states_match_the_reference() {
    let enc = encoder();
    let golden = candle_core::safetensors::load(
        fixtures().join("blip/blip-tiny-captioning.golden.safetensors"),
        &common::device(),
    )
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
    let e = BlipImageEncoder::load(fixtures().join("clip-tiny-p32").to_str().unwrap(), &common::device())
        .err()
        .unwrap()
        .to_string();
    assert!(e.contains("not BLIP"), "{e}");
}

#[test]
fn greedy_captions_match_the_reference_token_by_token() {
    let dir = fixtures().join("blip");
    let cap = BlipCaptioner::load(dir.join("blip-tiny-captioning").to_str().unwrap(), &common::device()).unwrap();
    let golden: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("blip-tiny-captioning.golden.json")).unwrap()).unwrap();
    let probes =
        candle_core::safetensors::load(dir.join("blip-tiny-captioning.golden.safetensors"), &common::device()).unwrap();
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
    let cap = BlipCaptioner::load(dir.join("blip-tiny-captioning").to_str().unwrap(), &common::device()).unwrap();
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
fn captioning_a_batch_gives_each_image_its_reference_caption() {
    // Every golden case, batched by beams and prompt: one encoder pass and the searches of all
    // the batch's images advanced together must give each image the reference's ids.
    let dir = fixtures().join("blip");
    let cap = BlipCaptioner::load(dir.join("blip-tiny-captioning").to_str().unwrap(), &common::device()).unwrap();
    let golden = golden("blip-tiny-captioning");
    let max_new = golden["max_new_tokens"].as_u64().unwrap() as usize;
    let mut batches = 0;
    for beams in [1, 3] {
        for prompted in [false, true] {
            let cases: Vec<&serde_json::Value> = golden["cases"]
                .as_array()
                .unwrap()
                .iter()
                .filter(|c| c["beams"] == beams && c["prompted"] == prompted)
                .collect();
            let images: Vec<image::RgbImage> = cases.iter().map(|c| photo(c["image"].as_str().unwrap())).collect();
            let start = cap.start_ids(prompted.then(|| golden["prompt"].as_str().unwrap())).unwrap();
            let ours = cap.caption_batch(&images, &start, beams, max_new).unwrap();
            assert_eq!(ours.len(), cases.len());
            for (ids, case) in ours.iter().zip(&cases) {
                let expected: Vec<u32> = serde_json::from_value(case["ids"].clone()).unwrap();
                assert_eq!(ids, &expected, "{} in a batch of {}", case["key"], cases.len());
            }
            // Captions of different lengths in one batch: the searches end independently.
            let lengths: std::collections::BTreeSet<usize> = ours.iter().map(Vec::len).collect();
            batches += usize::from(cases.len() > 1 && lengths.len() > 1);
        }
    }
    assert!(batches > 0, "no batch mixed caption lengths: the independent ends are untested");
    assert!(cap.caption_batch(&[], &[0], 3, 5).unwrap().is_empty());
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

fn golden(name: &str) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(fixtures().join("blip").join(format!("{name}.golden.json"))).unwrap())
        .unwrap()
}

fn model_dir(name: &str) -> String {
    fixtures().join("blip").join(name).to_str().unwrap().to_string()
}

/// The probed logits of each step (the ids in `probe_ids`, then max and log-sum-exp) within 1e-3.
fn assert_probes(key: &str, steps: &[clipdex::models::blip::DecodeStep], probe_ids: &[u32], reference: &[Vec<f32>]) {
    assert_eq!(steps.len(), reference.len(), "{key}: steps");
    for (i, (step, want)) in steps.iter().zip(reference).enumerate() {
        let logits = step.logits.to_vec1::<f32>().unwrap();
        let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
        let lse = max + logits.iter().map(|l| (l - max).exp()).sum::<f32>().ln();
        let got: Vec<f32> = probe_ids.iter().map(|&t| logits[t as usize]).chain([max, lse]).collect();
        for (g, w) in got.iter().zip(want) {
            assert!((g - w).abs() < 1e-3, "{key} step {i}: logit {g} vs {w}");
        }
    }
}

#[test]
fn vqa_question_states_and_answers_match_the_reference() {
    let vqa = BlipAnswerer::load(&model_dir("blip-tiny-vqa"), &common::device()).unwrap();
    let golden = golden("blip-tiny-vqa");
    let tensors =
        candle_core::safetensors::load(fixtures().join("blip/blip-tiny-vqa.golden.safetensors"), &common::device())
            .unwrap();
    let probe_ids: Vec<u32> = serde_json::from_value(golden["probe_ids"].clone()).unwrap();
    let max_new = golden["max_new_tokens"].as_u64().unwrap() as usize;
    let (mut greedy, mut beams, mut ended) = (0, 0, 0);
    for case in golden["cases"].as_array().unwrap() {
        let key = case["key"].as_str().unwrap();
        let name = case["image"].as_str().unwrap();
        let image = vqa.encoder().encode(&photo(name)).unwrap();
        let question = case["question"].as_str().unwrap();
        let ids = vqa.question_ids(question).unwrap();
        assert_eq!(serde_json::json!(ids), case["question_ids"], "{key}: question ids");
        if let Some(reference) = tensors.get(&format!("question/{name}")).filter(|_| key.ends_with("/0/1")) {
            let ours = vqa.question_states(&image, &ids).unwrap().squeeze(0).unwrap();
            let diff = (ours - reference.to_dtype(candle_core::DType::F32).unwrap())
                .unwrap()
                .abs()
                .unwrap()
                .max_all()
                .unwrap()
                .to_scalar::<f32>()
                .unwrap();
            assert!(diff < 1e-4, "{key}: question states differ by {diff}");
        }
        let expected: Vec<u32> = serde_json::from_value(case["ids"].clone()).unwrap();
        let n = case["beams"].as_u64().unwrap() as usize;
        let answer = vqa.answer_states(&image, question, n, max_new).unwrap();
        assert_eq!(answer.ids, expected, "{key}: answer ids");
        assert_eq!(answer.text, case["answer"].as_str().unwrap(), "{key}");
        ended += usize::from(expected.contains(&102));
        if n == 1 {
            let steps = vqa.greedy(&image, &ids, max_new).unwrap();
            assert_probes(key, &steps, &probe_ids, &tensors[key].to_vec2::<f32>().unwrap());
            greedy += 1;
        } else {
            beams += 1;
        }
    }
    assert_eq!((greedy, beams), (9, 9));
    assert!(ended > 0 && ended < 18, "some answers end with [SEP], some at the limit");
}

#[test]
fn itm_probabilities_and_itc_cosines_match_the_reference() {
    let matcher = BlipMatcher::load(&model_dir("blip-tiny-itm"), &common::device()).unwrap();
    let golden = golden("blip-tiny-itm");
    let texts: Vec<&str> = golden["texts"].as_array().unwrap().iter().map(|t| t.as_str().unwrap()).collect();
    let mut photos = Vec::new();
    for case in golden["cases"].as_array().unwrap() {
        let name = case["image"].as_str().unwrap();
        let scores = matcher.score(&photo(name), &texts).unwrap();
        for (i, s) in scores.iter().enumerate() {
            let (itm, itc) = (case["itm"][i].as_f64().unwrap() as f32, case["itc"][i].as_f64().unwrap() as f32);
            assert!((s.itm - itm).abs() < 1e-4, "{name} / {}: itm {} vs {itm}", texts[i], s.itm);
            assert!((s.itc - itc).abs() < 1e-4, "{name} / {}: itc {} vs {itc}", texts[i], s.itc);
        }
        photos.push(photo(name));
    }
    // Batched re-ranking scores (one text, all photos in one pass) equal the one-by-one scores.
    for (t, text) in texts.iter().enumerate() {
        let batched = matcher.score_images(&photos, text).unwrap();
        for (case, s) in golden["cases"].as_array().unwrap().iter().zip(&batched) {
            assert!((s.itm - case["itm"][t].as_f64().unwrap() as f32).abs() < 1e-4, "batched itm");
            assert!((s.itc - case["itc"][t].as_f64().unwrap() as f32).abs() < 1e-4, "batched itc");
        }
    }
}

fn clipdex(args: &[&str]) -> std::process::Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_clipdex")).args(args).output().unwrap()
}

#[test]
fn the_ask_command_prints_the_reference_answer() {
    let golden = golden("blip-tiny-vqa");
    let case = golden["cases"].as_array().unwrap().iter().find(|c| c["key"] == "chelsea_exif6.jpg/0/3").unwrap();
    let image = fixtures().join("images/chelsea_exif6.jpg");
    let (vqa, image) = (model_dir("blip-tiny-vqa"), image.to_str().unwrap());
    let question = case["question"].as_str().unwrap();
    let out = clipdex(&["--vqa-model", &vqa, "ask", image, question, "--beams", "3", "--max-tokens", "8", "--json"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let doc: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(doc, serde_json::json!({"path": image, "question": question, "answer": case["answer"]}));
    let plain = clipdex(&["--vqa-model", &vqa, "ask", image, question, "--beams", "3", "--max-tokens", "8"]);
    assert_eq!(String::from_utf8_lossy(&plain.stdout).trim(), case["answer"].as_str().unwrap());
}

#[test]
fn the_match_command_prints_itm_and_itc_per_text() {
    let golden = golden("blip-tiny-itm");
    let case = &golden["cases"][1];
    let image = fixtures().join("images").join(case["image"].as_str().unwrap());
    let itm = model_dir("blip-tiny-itm");
    let (t0, t1) = (golden["texts"][0].as_str().unwrap(), golden["texts"][2].as_str().unwrap());
    let out = clipdex(&["--itm-model", &itm, "match", image.to_str().unwrap(), "--text", t0, "--text", t1, "--json"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let doc: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(doc["path"], image.to_str().unwrap());
    let rows = doc["matches"].as_array().unwrap();
    assert_eq!(rows.len(), 2);
    for (row, (t, i)) in rows.iter().zip([(t0, 0), (t1, 2)]) {
        assert_eq!(row["text"], t);
        assert!((row["itm"].as_f64().unwrap() - case["itm"][i].as_f64().unwrap()).abs() < 1e-4);
        assert!((row["itc"].as_f64().unwrap() - case["itc"][i].as_f64().unwrap()).abs() < 1e-4);
    }
}

#[test]
fn wrong_models_and_broken_images_give_clear_errors() {
    let image = fixtures().join("images/coffee.png");
    let image = image.to_str().unwrap();
    // A captioning checkpoint has no question encoder; a VQA one has no matching heads.
    let out = clipdex(&["--vqa-model", &model_dir("blip-tiny-captioning"), "ask", image, "what?"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("question encoder") && err.contains("VQA"), "{err}");
    let out = clipdex(&["--itm-model", &model_dir("blip-tiny-vqa"), "match", image, "--text", "a cat"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("matching"), "{err}");
    let out = clipdex(&["--caption-model", &model_dir("blip-tiny-itm"), "caption", image]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("captioning"), "{err}");
    // A CLIP directory, a missing directory.
    let clip = fixtures().join("clip-tiny-p32");
    let out = clipdex(&["--vqa-model", clip.to_str().unwrap(), "ask", image, "what?"]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("not BLIP"));
    let out = clipdex(&["--itm-model", "/no/such/model", "match", image, "--text", "a cat"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("/no/such/model"), "{err}");
    // Broken and missing images, an empty question.
    let dir = tempfile::tempdir().unwrap();
    let broken = dir.path().join("broken.jpg");
    std::fs::write(&broken, b"\xff\xd8\xff\xe0 not really a jpeg").unwrap();
    let vqa = model_dir("blip-tiny-vqa");
    for (img, q) in [(broken.to_str().unwrap(), "what?"), ("/no/such.jpg", "what?"), (image, "  ")] {
        let out = clipdex(&["--vqa-model", &vqa, "ask", img, q]);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success() && err.starts_with("error: "), "{img} {q:?}: {err}");
        assert!(out.stdout.is_empty());
    }
    let out = clipdex(&["--itm-model", &model_dir("blip-tiny-itm"), "match", broken.to_str().unwrap(), "--text", "x"]);
    assert!(!out.status.success() && String::from_utf8_lossy(&out.stderr).contains("broken.jpg"));
}
