//! SigLIP 2 NaFlex (`model_type` `siglip2`) parity with transformers' `Siglip2Model` on a tiny
//! fixture built from the real `google/siglip-base-patch16-224` config with the layer counts and
//! widths cut (3 heads of width 12, patch 8, a 5x5 position table, at most 48 patches), with a
//! Gemma-style `tokenizer.json`: each photo's patch grid as `Siglip2ImageProcessor` picks it
//! (portrait, panorama, square, a single pixel), image embeddings at a cosine of at least 0.9999
//! alone and batched with photos of other grids, token ids identical, text embeddings at 0.9999,
//! sigmoid zero-shot probabilities within 1e-4; the reduced precisions; and a library on the
//! model through the binary. The goldens come from `tools/make_siglip2_naflex_fixture.py`.

mod common;

use std::path::Path;

use clipdex::ClipEmbedder;
use clipdex::models::clip::Scoring;
use clipdex::models::precision::Precision;
use clipdex::models::siglip::SiglipConfig;
use clipdex::photo::{DecodeOptions, open_rgb};
use clipdex::query::tags::ZeroShotClassifier;
use common::{clipdex_on, cosine, fixtures, ok_json};
use serde::Deserialize;
use serde_json::Value;

#[derive(Deserialize)]
struct Golden {
    model_dir: String,
    dim: usize,
    logit_scale: f32,
    logit_bias: f32,
    texts: Vec<GoldenText>,
    images: Vec<GoldenImage>,
    zeroshot: ZeroShot,
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
    grid: [usize; 2],
    embedding: Vec<f32>,
    probabilities: Vec<f32>,
}

#[derive(Deserialize)]
struct ZeroShot {
    labels: Vec<String>,
    template: String,
}

fn golden() -> Golden {
    let text = std::fs::read_to_string(fixtures().join("golden/siglip2-tiny-naflex.json")).unwrap();
    serde_json::from_str(&text).unwrap()
}

fn load(g: &Golden) -> ClipEmbedder {
    ClipEmbedder::load(fixtures().join(&g.model_dir).to_str().unwrap(), &common::device()).unwrap()
}

fn images(g: &Golden) -> Vec<image::RgbImage> {
    let options = DecodeOptions::default();
    g.images.iter().map(|im| open_rgb(&fixtures().join("images").join(&im.file), &options).unwrap()).collect()
}

#[test]
fn siglip2_naflex_matches_transformers() {
    let g = golden();
    let clip = load(&g);
    assert_eq!(clip.family(), "siglip2");
    assert_eq!(clip.dim(), g.dim);
    assert_eq!(clip.scoring(), Scoring::Sigmoid { logit_scale: g.logit_scale, logit_bias: g.logit_bias });
    // A NaFlex processor has no one output size: photos are not decoded at a reduced scale.
    assert_eq!(clip.processor().output_size(), None);
    // Fine-tuning reads a fixed-size tower: refused with a message, not a panic.
    let refused = clip.siglip_config().map(|_| ()).unwrap_err().to_string();
    assert!(refused.contains("NaFlex") && refused.contains(&g.model_dir), "{refused}");

    for t in &g.texts {
        assert_eq!(clip.tokenize(&t.text).unwrap(), t.ids, "token ids of {:?}", t.text);
    }
    let texts: Vec<&str> = g.texts.iter().map(|t| t.text.as_str()).collect();
    let batched = clip.embed_texts(&texts).unwrap();
    for (t, b) in g.texts.iter().zip(&batched) {
        let c = cosine(b, &t.embedding);
        assert!(c >= 0.9999, "{:?}: cosine {c}", t.text);
    }

    let rgb = images(&g);
    // The patch grid each photo is cut to (row 0 of its input holds it), then all photos in one
    // batch: portrait, panorama, square and single-pixel grids padded side by side.
    let grids: Vec<usize> = g.images.iter().map(|im| im.grid[0] * im.grid[1]).collect();
    assert!(grids.iter().any(|&n| n < 48) && grids.contains(&48), "the fixture must pad some photos: {grids:?}");
    for (im, photo) in g.images.iter().zip(&rgb) {
        let input = clip.preprocess(photo).unwrap();
        assert_eq!(input.dims(), &[49, 3 * 8 * 8]);
        let header: Vec<f32> = input.get(0).unwrap().narrow(0, 0, 2).unwrap().to_vec1().unwrap();
        assert_eq!(header, [im.grid[0] as f32, im.grid[1] as f32], "{}", im.file);
    }
    let together = clip.embed_images(&rgb).unwrap();
    let classifier = ZeroShotClassifier::new(&clip, &g.zeroshot.labels, &[&g.zeroshot.template]).unwrap();
    let (mut worst, mut worst_p) = (1f32, 0f32);
    for ((im, photo), batched) in g.images.iter().zip(&rgb).zip(&together) {
        let alone = clip.embed_images(std::slice::from_ref(photo)).unwrap().remove(0);
        let (ca, cb) = (cosine(&alone, &im.embedding), cosine(batched, &im.embedding));
        assert!(ca >= 0.9999 && cb >= 0.9999, "{} ({:?}): alone {ca}, batched {cb}", im.file, im.grid);
        worst = worst.min(ca).min(cb);
        for (s, want) in classifier.scores(&alone).iter().zip(&im.probabilities) {
            worst_p = worst_p.max((s.probability - want).abs());
            assert!((s.probability - want).abs() < 1e-4, "{}: {}: {} vs {want}", im.file, s.label, s.probability);
        }
    }
    let spread = cosine(&g.images[0].embedding, &g.images[2].embedding);
    assert!(spread < 0.99, "fixture photos too alike ({spread})");
    eprintln!("siglip2 NaFlex: worst image cosine {worst:.6}; probabilities within {worst_p:.2e}");
}

#[test]
fn a_hub_style_siglip2_config_reads_as_naflex() {
    // The hub's NaFlex config.json names only what differs from transformers' defaults.
    let text = r#"{"model_type": "siglip2", "text_config": {"model_type": "siglip2_text_model", "vocab_size": 256000},
        "vision_config": {"model_type": "siglip2_vision_model"}}"#;
    let config: SiglipConfig = serde_json::from_str(text).unwrap();
    assert!(config.is_naflex());
    assert_eq!(config.position_side(), Some(16));
    assert_eq!(config.vision_config.patch_size, 16);
    assert!(config.shape_problem().is_none());
    let odd: SiglipConfig =
        serde_json::from_str(r#"{"model_type": "siglip2", "vision_config": {"num_patches": 250}}"#).unwrap();
    assert!(odd.shape_problem().unwrap().contains("250"), "{:?}", odd.shape_problem());
    // A fixed-resolution SigLIP 2 (google/siglip2-base-patch16-224) says `siglip`.
    let fixed: SiglipConfig = serde_json::from_str(r#"{"model_type": "siglip"}"#).unwrap();
    assert!(!fixed.is_naflex());
}

#[test]
fn reduced_precisions_stay_within_the_fidelity_gate() {
    let g = golden();
    let f32_model = load(&g);
    let texts: Vec<&str> = g.texts.iter().map(|t| t.text.as_str()).collect();
    let rgb = images(&g);
    let (want_t, want_i) = (f32_model.embed_texts(&texts).unwrap(), f32_model.embed_images(&rgb).unwrap());
    for precision in [Precision::Bf16, Precision::Int8] {
        let m = load(&g).with_precision(precision);
        // Int8 runs as bf16 (f32 where the CPU has no bf16 products), and says so.
        assert_ne!(m.precision(), Precision::Int8);
        let (t, i) = (m.embed_texts(&texts).unwrap(), m.embed_images(&rgb).unwrap());
        let worst = t.iter().zip(&want_t).chain(i.iter().zip(&want_i)).map(|(a, b)| cosine(a, b)).fold(1f32, f32::min);
        assert!(worst >= 0.999, "{precision:?} (runs as {:?}): cosine {worst}", m.precision());
        eprintln!("{precision:?} runs as {:?} on this CPU: worst cosine {worst:.6}", m.precision());
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
fn a_naflex_library_indexes_searches_tags_and_describes_with_sigmoid_probabilities() {
    let g = golden();
    let model = fixtures().join(&g.model_dir);
    let tmp = tempfile::tempdir().unwrap();
    let photos = tmp.path().join("photos");
    std::fs::create_dir_all(&photos).unwrap();
    // Files of distinct contents (identical files share one entry).
    let photos_in: Vec<&GoldenImage> = g.images.iter().collect();
    for im in &photos_in {
        std::fs::copy(fixtures().join("images").join(&im.file), photos.join(&im.file)).unwrap();
    }
    let db = tmp.path().join("db");
    assert!(clipdex_on(&db, &model, &["add", photos.to_str().unwrap()]).status.success());
    let report = ok_json(clipdex_on(&db, &model, &["index", "--json"]));
    assert_eq!(report["embedded"].as_u64(), Some(photos_in.len() as u64), "{report}");

    // Text search ranks as transformers' embeddings do (every photo at its own grid).
    let text = &g.texts[1];
    let mut expected: Vec<(&str, f32)> =
        photos_in.iter().map(|im| (im.file.as_str(), cosine(&text.embedding, &im.embedding))).collect();
    expected.sort_by(|a, b| b.1.total_cmp(&a.1));
    let k = photos_in.len().to_string();
    let res = ok_json(clipdex_on(&db, &model, &["search", &text.text, "-k", &k, "--min-score", "0", "--json"]));
    let want: Vec<String> = expected.iter().map(|(n, _)| n.to_string()).collect();
    assert_eq!(file_names(&res), want, "{res}");

    // Zero-shot tags: transformers' sigmoid probabilities, and the output says they are.
    let labels = g.zeroshot.labels.join(",");
    for im in photos_in.iter().take(3) {
        let path = photos.join(&im.file);
        let args = ["tag", path.to_str().unwrap(), "--labels", &labels, "--template", &g.zeroshot.template];
        let res = ok_json(clipdex_on(&db, &model, &[&args[..], &["--json"]].concat()));
        assert_eq!(res["scoring"], "sigmoid", "{res}");
        for l in res["images"][0]["labels"].as_array().unwrap() {
            let i = g.zeroshot.labels.iter().position(|x| x == l["label"].as_str().unwrap()).unwrap();
            let p = l["probability"].as_f64().unwrap() as f32;
            assert!(
                (p - im.probabilities[i]).abs() < 1e-4,
                "{}: {}: {p} vs {}",
                im.file,
                l["label"],
                im.probabilities[i]
            );
        }
        let human = clipdex_on(&db, &model, &args);
        assert!(human.status.success());
        let out = String::from_utf8_lossy(&human.stdout);
        assert!(out.contains("sigmoid") && out.contains("not a softmax"), "{out}");
    }

    // describe: sigmoid probabilities of the photo's cosines with its vocabulary.
    let vocab = tmp.path().join("vocab.txt");
    std::fs::write(&vocab, "cat\ndog\nrocket\n").unwrap();
    let path = photos.join(&photos_in[0].file);
    let res = ok_json(clipdex_on(
        &db,
        &model,
        &["describe", path.to_str().unwrap(), "--vocab", vocab.to_str().unwrap(), "--json"],
    ));
    assert_eq!(res["scoring"], "sigmoid", "{res}");
    let described = res["labels"].as_array().unwrap();
    assert_eq!(described.len(), 3, "{res}");
    for l in described {
        let (c, p) = (l["cosine"].as_f64().unwrap(), l["probability"].as_f64().unwrap());
        let want = 1.0 / (1.0 + (-(f64::from(g.logit_scale) * c + f64::from(g.logit_bias))).exp());
        assert!((p - want).abs() < 1e-4, "{l}: sigmoid({} x {c} + {}) = {want}", g.logit_scale, g.logit_bias);
    }
}
