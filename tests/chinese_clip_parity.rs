//! Chinese-CLIP parity with transformers on two tiny fixture models (other heads, widths,
//! depths, patch and input sizes; one with only `vocab.txt`, the other with `tokenizer.json`)
//! with Chinese-CLIP's real vocabulary: token ids identical for texts in many scripts, every
//! text and image embedding at cosine >= 0.9999, texts embedded one by one and in padded
//! batches. The goldens come from `tools/make_chinese_clip_fixtures.py`.

mod common;

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
    embedding: Vec<f32>,
}

fn golden(name: &str) -> Golden {
    let text = std::fs::read_to_string(fixtures().join("golden").join(format!("{name}.json"))).unwrap();
    serde_json::from_str(&text).unwrap()
}

fn check(name: &str) {
    let g = golden(name);
    assert!(g.texts.len() >= 25 && g.images.len() >= 5);
    let clip = ClipEmbedder::load(fixtures().join(&g.model_dir).to_str().unwrap(), &common::device()).unwrap();
    assert_eq!(clip.dim(), g.dim);
    assert!((clip.logit_scale() - g.logit_scale).abs() < 1e-3 * g.logit_scale);
    for t in &g.texts {
        assert_eq!(clip.tokenize(&t.text).unwrap(), t.ids, "{name}: token ids of {:?}", t.text);
    }
    // One by one, then all at once (padded to the longest, the mask hiding the padding).
    let texts: Vec<&str> = g.texts.iter().map(|t| t.text.as_str()).collect();
    let batched = clip.embed_texts(&texts).unwrap();
    for (t, b) in g.texts.iter().zip(&batched) {
        let single = clip.embed_texts(&[&t.text]).unwrap().remove(0);
        let (cs, cb) = (cosine(&single, &t.embedding), cosine(b, &t.embedding));
        assert!(cs >= 0.9999 && cb >= 0.9999, "{name}: {:?}: alone {cs}, batched {cb}", t.text);
    }
    // The texts differ: the embeddings are not all alike (a path that does nothing would be).
    let spread = cosine(&g.texts[1].embedding, &g.texts[5].embedding);
    assert!(spread < 0.9, "{name}: fixture texts too alike ({spread})");
    let options = DecodeOptions::default();
    for im in &g.images {
        let rgb = open_rgb(&fixtures().join("images").join(&im.file), &options).unwrap();
        let e = clip.embed_images(&[rgb]).unwrap().remove(0);
        let c = cosine(&e, &im.embedding);
        assert!(c >= 0.9999, "{name}: {}: cosine {c}", im.file);
    }
}

#[test]
fn chinese_clip_p16_with_vocab_txt_matches_transformers() {
    check("chinese-clip-tiny-p16");
}

#[test]
fn chinese_clip_p32_with_tokenizer_json_matches_transformers() {
    check("chinese-clip-tiny-p32");
}
