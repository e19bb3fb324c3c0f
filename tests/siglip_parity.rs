//! SigLIP parity with transformers on two tiny fixture models built from the real
//! `google/siglip-base-patch16-224` config with widths and depths cut (other heads, widths,
//! patch and input sizes, a text tower narrower than the embedding), each with a SentencePiece
//! `spiece.model` trained for it: token ids identical, text and image embeddings at a cosine of
//! at least 0.9999 (the portrait and the panorama included), sigmoid zero-shot probabilities
//! within 1e-4. Then the real hub config read as transformers reads it, the reduced precisions,
//! and a library on the tiny SigLIP through the binary. The goldens come from
//! `tools/make_siglip_fixtures.py`.

mod common;

use std::path::Path;

use clipdex::ClipEmbedder;
use clipdex::models::clip::Scoring;
use clipdex::models::precision::Precision;
use clipdex::models::preprocess::{ImageProcessor, Resample, ResizeTo};
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
    embedding: Vec<f32>,
    probabilities: Vec<f32>,
}

#[derive(Deserialize)]
struct ZeroShot {
    labels: Vec<String>,
    template: String,
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
    assert_eq!(clip.family(), "siglip");
    assert_eq!(clip.dim(), g.dim);
    assert_eq!(clip.scoring(), Scoring::Sigmoid { logit_scale: g.logit_scale, logit_bias: g.logit_bias });
    // What only a CLIP has (fine-tuning's layers) is refused with a message, not a panic.
    let refused = clip.config().map(|_| ()).unwrap_err().to_string();
    assert!(refused.contains("SigLIP") && refused.contains(&g.model_dir), "{refused}");
    for t in &g.texts {
        assert_eq!(clip.tokenize(&t.text).unwrap(), t.ids, "{name}: token ids of {:?}", t.text);
    }
    let texts: Vec<&str> = g.texts.iter().map(|t| t.text.as_str()).collect();
    let batched = clip.embed_texts(&texts).unwrap();
    let (mut worst_text, mut worst_image, mut worst_p) = (1f32, 1f32, 0f32);
    for (t, b) in g.texts.iter().zip(&batched) {
        let single = clip.embed_texts(&[&t.text]).unwrap().remove(0);
        let (cs, cb) = (cosine(&single, &t.embedding), cosine(b, &t.embedding));
        assert!(cs >= 0.9999 && cb >= 0.9999, "{name}: {:?}: alone {cs}, batched {cb}", t.text);
        worst_text = worst_text.min(cs).min(cb);
    }
    let spread = cosine(&g.texts[1].embedding, &g.texts[4].embedding);
    assert!(spread < 0.9, "{name}: fixture texts too alike ({spread})");

    let classifier = ZeroShotClassifier::new(&clip, &g.zeroshot.labels, &[&g.zeroshot.template]).unwrap();
    let options = DecodeOptions::default();
    for im in &g.images {
        let rgb = open_rgb(&fixtures().join("images").join(&im.file), &options).unwrap();
        let e = clip.embed_images(&[rgb]).unwrap().remove(0);
        let c = cosine(&e, &im.embedding);
        assert!(c >= 0.9999, "{name}: {}: cosine {c}", im.file);
        worst_image = worst_image.min(c);
        for (s, want) in classifier.scores(&e).iter().zip(&im.probabilities) {
            worst_p = worst_p.max((s.probability - want).abs());
            assert!(
                (s.probability - want).abs() < 1e-4,
                "{name}: {}: {}: {} vs {want}",
                im.file,
                s.label,
                s.probability
            );
        }
    }
    eprintln!(
        "{name}: worst cosine texts {worst_text:.6}, images {worst_image:.6}; probabilities within {worst_p:.2e}"
    );
}

#[test]
fn siglip_p16_matches_transformers() {
    check("siglip-tiny-p16");
}

#[test]
fn siglip_p10_with_a_narrow_text_tower_matches_transformers() {
    check("siglip-tiny-p10");
}

#[test]
fn the_hub_siglip_config_reads_as_transformers_reads_it() {
    let dir = fixtures().join("hub-configs-siglip/google--siglip-base-patch16-224");
    let config: SiglipConfig =
        serde_json::from_str(&std::fs::read_to_string(dir.join("config.json")).unwrap()).unwrap();
    assert!(config.shape_problem().is_none());
    let want: Value =
        serde_json::from_str(&std::fs::read_to_string(fixtures().join("golden/siglip-hub-config.json")).unwrap())
            .unwrap();
    let n = |v: &Value| v.as_u64().unwrap() as usize;
    let (t, v) = (&config.text_config, &config.vision_config);
    let (wt, wv) = (&want["text"], &want["vision"]);
    for (got, key) in [
        (t.hidden_size, "hidden_size"),
        (t.intermediate_size, "intermediate_size"),
        (t.num_hidden_layers, "num_hidden_layers"),
        (t.num_attention_heads, "num_attention_heads"),
        (t.vocab_size, "vocab_size"),
        (t.max_position_embeddings, "max_position_embeddings"),
        (t.embedding_width(), "projection_size"),
    ] {
        assert_eq!(got, n(&wt[key]), "text {key}");
    }
    for (got, key) in [
        (v.hidden_size, "hidden_size"),
        (v.intermediate_size, "intermediate_size"),
        (v.num_hidden_layers, "num_hidden_layers"),
        (v.num_attention_heads, "num_attention_heads"),
        (v.image_size, "image_size"),
        (v.patch_size, "patch_size"),
        (v.num_channels, "num_channels"),
    ] {
        assert_eq!(got, n(&wv[key]), "vision {key}");
    }
    for (got, w) in [(t.layer_norm_eps, &wt["layer_norm_eps"]), (v.layer_norm_eps, &wv["layer_norm_eps"])] {
        assert_eq!(got, w.as_f64().unwrap());
    }
    assert_eq!(wt["hidden_act"], "gelu_pytorch_tanh");
    assert_eq!(t.hidden_act, clipdex::models::clip::HiddenAct::GeluTanh);
    assert_eq!(v.hidden_act, clipdex::models::clip::HiddenAct::GeluTanh);
    // The processor SigLIP uses where a repository ships none: transformers' defaults.
    let p = &want["processor"];
    let d = ImageProcessor::siglip_default(224);
    assert_eq!(p["size"]["height"], 224);
    assert_eq!(p["size"]["width"], 224);
    assert_eq!(d.resize, Some(ResizeTo::Exact { width: 224, height: 224 }));
    assert_eq!((p["resample"].as_u64(), d.resample), (Some(3), Resample::Bicubic));
    assert_eq!(d.center_crop, None);
    assert!(p.get("do_center_crop").is_none());
    assert_eq!(d.rescale, Some(p["rescale_factor"].as_f64().unwrap() as f32));
    let mean_std = |k: &str| -> [f32; 3] {
        let v: Vec<f32> = p[k].as_array().unwrap().iter().map(|x| x.as_f64().unwrap() as f32).collect();
        [v[0], v[1], v[2]]
    };
    assert_eq!(d.normalize, Some((mean_std("image_mean"), mean_std("image_std"))));
}

#[test]
fn reduced_precisions_stay_within_the_fidelity_gate() {
    let g = golden("siglip-tiny-p10");
    let f32_model = load(&g);
    let texts: Vec<&str> = g.texts.iter().map(|t| t.text.as_str()).collect();
    let options = DecodeOptions::default();
    let images: Vec<_> =
        g.images.iter().map(|im| open_rgb(&fixtures().join("images").join(&im.file), &options).unwrap()).collect();
    let (want_t, want_i) = (f32_model.embed_texts(&texts).unwrap(), f32_model.embed_images(&images).unwrap());
    for precision in [Precision::Bf16, Precision::Int8] {
        let m = load(&g).with_precision(precision);
        let (t, i) = (m.embed_texts(&texts).unwrap(), m.embed_images(&images).unwrap());
        for (a, b) in t.iter().zip(&want_t).chain(i.iter().zip(&want_i)) {
            let c = cosine(a, b);
            assert!(c >= 0.999, "{precision:?} (runs as {:?}): cosine {c}", m.precision());
        }
        eprintln!("{precision:?} runs as {:?} on this CPU", m.precision());
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
fn a_siglip_library_indexes_searches_and_tags_with_sigmoid_probabilities() {
    let g = golden("siglip-tiny-p16");
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

    // Text search ranks as transformers' embeddings do.
    let text = &g.texts[1];
    let mut expected: Vec<(&str, f32)> =
        photos_in.iter().map(|im| (im.file.as_str(), cosine(&text.embedding, &im.embedding))).collect();
    expected.sort_by(|a, b| b.1.total_cmp(&a.1));
    let k = photos_in.len().to_string();
    let res = ok_json(clipdex_on(&db, &model, &["search", &text.text, "-k", &k, "--min-score", "0", "--json"]));
    let want: Vec<String> = expected.iter().map(|(n, _)| n.to_string()).collect();
    assert_eq!(file_names(&res), want, "{res}");

    // Image to image.
    let probe = photos_in[0];
    let mut expected: Vec<(&str, f32)> =
        photos_in.iter().map(|im| (im.file.as_str(), cosine(&probe.embedding, &im.embedding))).collect();
    expected.sort_by(|a, b| b.1.total_cmp(&a.1));
    let want: Vec<String> = expected.iter().map(|(n, _)| n.to_string()).collect();
    let probe_path = photos.join(&probe.file);
    let res = ok_json(clipdex_on(&db, &model, &["similar", probe_path.to_str().unwrap(), "-k", &k, "--json"]));
    assert_eq!(want[0], probe.file, "the probe is most like itself");
    assert_eq!(file_names(&res), want[1..], "{res}: similar leaves the probe itself out");

    // Zero-shot tags: transformers' sigmoid probabilities, and the output says they are.
    let labels = g.zeroshot.labels.join(",");
    for im in &photos_in {
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
}
