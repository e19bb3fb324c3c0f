//! Parity of the multilingual text towers (`--text-model`) with sentence-transformers on three
//! tiny fixture encoders, one of each family and layout (DistilBERT at the root with mean
//! pooling and a bias-free Dense; BERT in `0_Transformer/`, lower-cased, `[CLS]` pooling, a
//! Dense with tanh; XLM-RoBERTa with a Unigram tokenizer, max pooling): token ids identical and
//! embeddings at cosine >= 0.9999 for texts in many scripts, one by one and in padded batches.
//! The goldens come from `tools/make_multilingual_fixtures.py`.

mod common;

use clipdex::models::sentence::SentenceEncoder;
use common::{cosine, fixtures};
use serde::Deserialize;

#[derive(Deserialize)]
struct Golden {
    model_dir: String,
    dim: usize,
    texts: Vec<GoldenText>,
}

#[derive(Deserialize)]
struct GoldenText {
    text: String,
    ids: Vec<u32>,
    embedding: Vec<f32>,
}

fn check(name: &str) {
    let text = std::fs::read_to_string(fixtures().join("golden").join(format!("{name}.json"))).unwrap();
    let g: Golden = serde_json::from_str(&text).unwrap();
    assert!(g.texts.len() >= 25);
    let encoder = SentenceEncoder::load(fixtures().join(&g.model_dir).to_str().unwrap(), &common::device()).unwrap();
    assert_eq!(encoder.dim(), g.dim);
    let ids: Vec<Vec<u32>> = g.texts.iter().map(|t| encoder.tokenize(&t.text).unwrap()).collect();
    for (t, got) in g.texts.iter().zip(&ids) {
        assert_eq!(got, &t.ids, "{name}: token ids of {:?}", t.text);
    }
    let batched = encoder.embed_token_ids(&ids).unwrap();
    for (t, (b, one)) in g.texts.iter().zip(batched.iter().zip(&ids)) {
        let single = encoder.embed_token_ids(std::slice::from_ref(one)).unwrap().remove(0);
        let (cs, cb) = (cosine(&single, &t.embedding), cosine(b, &t.embedding));
        assert!(cs >= 0.9999 && cb >= 0.9999, "{name}: {:?}: alone {cs}, batched {cb}", t.text);
    }
}

#[test]
fn distilbert_with_mean_pooling_and_a_dense_head_matches_sentence_transformers() {
    check("st-distilbert-tiny");
}

#[test]
fn bert_in_a_subfolder_with_cls_pooling_and_tanh_matches_sentence_transformers() {
    check("st-bert-tiny");
}

#[test]
fn xlm_roberta_with_max_pooling_matches_sentence_transformers() {
    check("st-xlmr-tiny");
}

#[test]
fn a_directory_that_is_not_a_sentence_transformers_model_is_refused_in_one_line() {
    let Err(e) = SentenceEncoder::load(fixtures().join("clip-tiny-p32").to_str().unwrap(), &common::device()) else {
        panic!("a CLIP directory loaded as a text model");
    };
    let e = e.to_string();
    assert!(e.contains("modules.json") && !e.contains('\n'), "{e}");
}
