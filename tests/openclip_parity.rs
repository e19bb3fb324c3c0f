//! OpenCLIP parity with open_clip on two tiny checkpoints in the hub layout
//! (`open_clip_config.json` + `open_clip_model.safetensors`, or `open_clip_pytorch_model.bin`),
//! one with GELU and one with QuickGELU, at other heads, widths, MLP ratios, patch and input
//! sizes, context lengths and preprocessing (shortest edge + torchvision's centre crop, and a
//! squashing bilinear resize): token ids identical (open_clip's text cleaning included), text
//! and image embeddings at a cosine of at least 0.9999 (the portrait and the panorama
//! included). Then the reduced precisions, a library on an OpenCLIP through the binary, and what
//! a folder without tokenizer files does offline. The goldens come from
//! `tools/make_openclip_fixtures.py`.

mod common;

use std::path::Path;
use std::process::Command;

use clipdex::ClipEmbedder;
use clipdex::models::clip::Scoring;
use clipdex::models::precision::Precision;
use clipdex::photo::{DecodeOptions, open_rgb};
use common::{clipdex_on, cosine, fixtures, ok_json};
use serde::Deserialize;
use serde_json::Value;

#[derive(Deserialize)]
struct Golden {
    model_dir: String,
    dim: usize,
    context_length: usize,
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
    embedding: Vec<f32>,
}

fn golden(name: &str) -> Golden {
    let text = std::fs::read_to_string(fixtures().join("golden").join(format!("{name}.json"))).unwrap();
    serde_json::from_str(&text).unwrap()
}

fn load(g: &Golden) -> ClipEmbedder {
    ClipEmbedder::load(fixtures().join(&g.model_dir).to_str().unwrap(), &common::device()).unwrap()
}

fn check(name: &str) {
    let g = golden(name);
    let clip = load(&g);
    assert_eq!(clip.family(), "open_clip");
    assert_eq!(clip.dim(), g.dim);
    let Scoring::Softmax { logit_scale } = clip.scoring() else { panic!("an OpenCLIP scores with a softmax") };
    assert!((logit_scale - g.logit_scale).abs() < 1e-4 * g.logit_scale, "{logit_scale} vs {}", g.logit_scale);
    // Fine-tuning reads Hugging Face names: refused with a message, not a panic.
    let refused = clip.config().map(|_| ()).unwrap_err().to_string();
    assert!(refused.contains("OpenCLIP") && refused.contains(&g.model_dir), "{refused}");
    for t in &g.texts {
        assert_eq!(clip.tokenize(&t.text).unwrap(), t.ids, "{name}: token ids of {:?}", t.text);
    }
    assert!(g.texts.iter().any(|t| t.ids.len() == g.context_length), "{name}: no text reaches the context");
    let texts: Vec<&str> = g.texts.iter().map(|t| t.text.as_str()).collect();
    let batched = clip.embed_texts(&texts).unwrap();
    let (mut worst_text, mut worst_image) = (1f32, 1f32);
    for (t, b) in g.texts.iter().zip(&batched) {
        let single = clip.embed_texts(&[&t.text]).unwrap().remove(0);
        let (cs, cb) = (cosine(&single, &t.embedding), cosine(b, &t.embedding));
        assert!(cs >= 0.9999 && cb >= 0.9999, "{name}: {:?}: alone {cs}, batched {cb}", t.text);
        worst_text = worst_text.min(cs).min(cb);
    }
    let spread = cosine(&g.texts[1].embedding, &g.texts[4].embedding);
    assert!(spread < 0.9, "{name}: fixture texts too alike ({spread})");

    let options = DecodeOptions::default();
    let mut embedded = Vec::new();
    for im in &g.images {
        let rgb = open_rgb(&fixtures().join("images").join(&im.file), &options).unwrap();
        let e = clip.embed_images(&[rgb]).unwrap().remove(0);
        let c = cosine(&e, &im.embedding);
        assert!(c >= 0.9999, "{name}: {}: cosine {c}", im.file);
        worst_image = worst_image.min(c);
        embedded.push(e);
    }
    let spread = cosine(&g.images[0].embedding, &g.images[1].embedding);
    assert!(spread < 0.9, "{name}: fixture images too alike ({spread})");
    eprintln!("{name}: worst cosine texts {worst_text:.6}, images {worst_image:.6}");
}

#[test]
fn openclip_gelu_safetensors_matches_open_clip() {
    check("openclip-tiny-gelu");
}

#[test]
fn openclip_quickgelu_bin_matches_open_clip() {
    check("openclip-tiny-quickgelu");
}

#[test]
fn the_preprocessing_is_open_clips_own() {
    use clipdex::models::preprocess::{CropOffset, Resample, ResizeTo};
    let gelu = load(&golden("openclip-tiny-gelu"));
    let p = gelu.processor();
    assert_eq!(
        (p.resize, p.center_crop, p.resample),
        (Some(ResizeTo::ShortestEdge(40)), Some((40, 40)), Resample::Bicubic)
    );
    assert_eq!(p.crop_offset, CropOffset::RoundHalfEven);
    assert_eq!(p.normalize, Some(([0.52, 0.47, 0.41], [0.21, 0.27, 0.33])));
    let quick = load(&golden("openclip-tiny-quickgelu"));
    let p = quick.processor();
    assert_eq!(
        (p.resize, p.center_crop, p.resample),
        (Some(ResizeTo::Exact { width: 36, height: 36 }), None, Resample::Bilinear)
    );
}

#[test]
fn reduced_precisions_stay_within_the_fidelity_gate() {
    for name in ["openclip-tiny-gelu", "openclip-tiny-quickgelu"] {
        let g = golden(name);
        let f32_model = load(&g);
        let texts: Vec<&str> = g.texts.iter().map(|t| t.text.as_str()).collect();
        let options = DecodeOptions::default();
        let images: Vec<_> =
            g.images.iter().map(|im| open_rgb(&fixtures().join("images").join(&im.file), &options).unwrap()).collect();
        let (want_t, want_i) = (f32_model.embed_texts(&texts).unwrap(), f32_model.embed_images(&images).unwrap());
        for precision in [Precision::Bf16, Precision::Int8] {
            let m = load(&g).with_precision(precision);
            let (t, i) = (m.embed_texts(&texts).unwrap(), m.embed_images(&images).unwrap());
            let worst =
                t.iter().zip(&want_t).chain(i.iter().zip(&want_i)).map(|(a, b)| cosine(a, b)).fold(1f32, f32::min);
            assert!(worst >= 0.999, "{name}: {precision:?} (runs as {:?}): cosine {worst}", m.precision());
            eprintln!("{name}: {precision:?} runs as {:?} on this CPU, worst cosine {worst:.5}", m.precision());
        }
    }
}

fn file_names(results: &Value) -> Vec<String> {
    results["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| Path::new(r["path"].as_str().unwrap()).file_name().unwrap().to_string_lossy().into_owned())
        .collect()
}

#[test]
fn an_openclip_library_indexes_and_searches_as_open_clip_ranks() {
    let g = golden("openclip-tiny-gelu");
    let model = fixtures().join(&g.model_dir);
    // JPEGs are decoded at reduced scale while indexing; the rest exactly as the reference.
    let photos_in: Vec<&GoldenImage> = g.images.iter().filter(|i| !i.file.ends_with(".jpg")).collect();
    assert!(photos_in.len() >= 3);
    let tmp = tempfile::tempdir().unwrap();
    let photos = tmp.path().join("photos");
    std::fs::create_dir_all(&photos).unwrap();
    for im in &photos_in {
        std::fs::copy(fixtures().join("images").join(&im.file), photos.join(&im.file)).unwrap();
    }
    let db = tmp.path().join("db");
    assert!(clipdex_on(&db, &model, &["add", photos.to_str().unwrap()]).status.success());
    let report = ok_json(clipdex_on(&db, &model, &["index", "--json"]));
    assert_eq!(report["embedded"].as_u64(), Some(photos_in.len() as u64), "{report}");
    let k = photos_in.len().to_string();
    for text in [&g.texts[1], &g.texts[3]] {
        let mut expected: Vec<(&str, f32)> =
            photos_in.iter().map(|im| (im.file.as_str(), cosine(&text.embedding, &im.embedding))).collect();
        expected.sort_by(|a, b| b.1.total_cmp(&a.1));
        let res = ok_json(clipdex_on(&db, &model, &["search", &text.text, "-k", &k, "--min-score", "0", "--json"]));
        let want: Vec<String> = expected.iter().map(|(n, _)| n.to_string()).collect();
        assert_eq!(file_names(&res), want, "{res}");
    }
}

#[test]
fn a_checkpoint_without_tokenizer_files_asks_for_the_clip_bpe_by_name() {
    // DFN's checkpoints ship only the config and the weights: the CLIP BPE then comes from
    // openai/clip-vit-base-patch32, which offline and uncached is an error that says so.
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("dfn-like");
    std::fs::create_dir(&dir).unwrap();
    let src = fixtures().join("openclip-tiny-gelu");
    for f in ["open_clip_config.json", "open_clip_model.safetensors"] {
        std::fs::copy(src.join(f), dir.join(f)).unwrap();
    }
    let out = Command::new(env!("CARGO_BIN_EXE_clipdex"))
        .args(["--db", tmp.path().join("db").to_str().unwrap(), "--model", dir.to_str().unwrap()])
        .args(["search", "a cat", "--json"])
        .env("HF_HOME", tmp.path().join("hf"))
        .env("HF_HUB_OFFLINE", "1")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("no tokenizer files") && err.contains("openai/clip-vit-base-patch32"), "{err}");
    // Given the tokenizer (here the CLIP fixture's copy of the real BPE), the folder loads.
    std::fs::copy(fixtures().join("clip-tiny-p32/tokenizer.json"), dir.join("tokenizer.json")).unwrap();
    let clip = ClipEmbedder::load(dir.to_str().unwrap(), &common::device()).unwrap();
    assert_eq!(clip.tokenize("a photo of a cat").unwrap(), golden("openclip-tiny-gelu").texts[1].ids);
}
