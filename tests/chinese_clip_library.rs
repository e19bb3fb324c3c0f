//! A library on the fixture Chinese-CLIP: indexed, searched in Chinese, `similar`, zero-shot
//! tags and autotag with a Chinese vocabulary and prompt, each against transformers' figures
//! (`tests/fixtures/golden/chinese-clip-tiny-p16.json`, from
//! `tools/make_chinese_clip_fixtures.py`).

use std::path::Path;

use serde::Deserialize;

mod common;
use common::{clipdex_on, fixtures, ok_json};

const MODEL: &str = "chinese-clip-tiny-p16";

#[derive(Deserialize)]
struct Golden {
    texts: Vec<GoldenText>,
    images: Vec<GoldenImage>,
    zeroshot: ZeroShot,
}

#[derive(Deserialize)]
struct GoldenText {
    text: String,
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

fn golden() -> Golden {
    let text = std::fs::read_to_string(fixtures().join(format!("golden/{MODEL}.json"))).unwrap();
    serde_json::from_str(&text).unwrap()
}

fn dot(a: &[f32], b: &[f32]) -> f32 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

/// The fixture photos the indexer decodes exactly as the reference does (JPEGs are decoded at
/// reduced scale while indexing, so they are left out).
fn indexed(g: &Golden) -> Vec<&GoldenImage> {
    g.images.iter().filter(|i| !i.file.ends_with(".jpg")).collect()
}

fn run(db: &Path, args: &[&str]) -> serde_json::Value {
    ok_json(clipdex_on(db, fixtures().join(MODEL), args))
}

fn file_names(results: &serde_json::Value) -> Vec<String> {
    results["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| Path::new(r["path"].as_str().unwrap()).file_name().unwrap().to_string_lossy().into_owned())
        .collect()
}

/// Names ordered by falling score.
fn ranked<'a>(scored: impl Iterator<Item = (&'a str, f32)>) -> Vec<String> {
    let mut v: Vec<(&str, f32)> = scored.collect();
    v.sort_by(|a, b| b.1.total_cmp(&a.1));
    v.into_iter().map(|(n, _)| n.to_string()).collect()
}

#[test]
fn a_chinese_clip_library_searches_in_chinese_and_tags_with_a_chinese_vocabulary() {
    let g = golden();
    let photos_in = indexed(&g);
    assert!(photos_in.len() >= 6);
    let tmp = tempfile::tempdir().unwrap();
    let photos = tmp.path().join("photos");
    std::fs::create_dir_all(&photos).unwrap();
    for im in &photos_in {
        std::fs::copy(fixtures().join("images").join(&im.file), photos.join(&im.file)).unwrap();
    }
    let db = tmp.path().join("db");
    assert!(clipdex_on(&db, fixtures().join(MODEL), &["add", photos.to_str().unwrap()]).status.success());
    let report = run(&db, &["index", "--json"]);
    assert_eq!(report["embedded"].as_u64(), Some(photos_in.len() as u64), "{report}");

    // Text search in Chinese (and the other scripts of the goldens): transformers' order.
    let k = photos_in.len().to_string();
    for query in
        ["一只猫坐在沙发上", "北京天安门广场的夜景，灯火辉煌。", "東京タワーと富士山の写真", "서울의 밤 풍경 사진"]
    {
        let text = g.texts.iter().find(|t| t.text == query).unwrap();
        let expected = ranked(photos_in.iter().map(|im| (im.file.as_str(), dot(&text.embedding, &im.embedding))));
        let res = run(&db, &["search", query, "-k", &k, "--json"]);
        assert_eq!(file_names(&res), expected, "{query}");
        let top = &res["results"][0];
        let want = photos_in.iter().find(|im| im.file == expected[0]).unwrap();
        let score = top["score"].as_f64().unwrap() as f32;
        assert!((score - dot(&text.embedding, &want.embedding)).abs() < 1e-3, "{query}: {score}");
    }

    // Image to image.
    let probe = photos_in[0];
    let expected = ranked(photos_in.iter().map(|im| (im.file.as_str(), dot(&probe.embedding, &im.embedding))));
    let res = run(&db, &["similar", photos.join(&probe.file).to_str().unwrap(), "-k", &k, "--json"]);
    assert_eq!(expected[0], probe.file, "the probe is most like itself");
    assert_eq!(file_names(&res), expected[1..], "similar leaves the probe itself out");

    // Zero-shot tags with Chinese labels and a Chinese prompt: transformers' probabilities.
    let vocab = tmp.path().join("vocab-zh.txt");
    std::fs::write(&vocab, g.zeroshot.labels.join("\n")).unwrap();
    let templates = tmp.path().join("templates-zh.txt");
    std::fs::write(&templates, format!("{}\n", g.zeroshot.template)).unwrap();
    let labels = g.zeroshot.labels.join(",");
    for im in &photos_in {
        let path = photos.join(&im.file);
        let res = run(
            &db,
            &["tag", path.to_str().unwrap(), "--labels", &labels, "--template", &g.zeroshot.template, "--json"],
        );
        for l in res["images"][0]["labels"].as_array().unwrap() {
            let i = g.zeroshot.labels.iter().position(|x| x == l["label"].as_str().unwrap()).unwrap();
            let p = l["probability"].as_f64().unwrap() as f32;
            assert!(
                (p - im.probabilities[i]).abs() < 0.01,
                "{}: {}: {p} vs {}",
                im.file,
                g.zeroshot.labels[i],
                im.probabilities[i]
            );
        }
    }

    // Autotag with the Chinese vocabulary: each photo's most probable label is among its tags,
    // and a tag search in Chinese finds the photos carrying it.
    let report = run(
        &db,
        &[
            "autotag",
            "--vocab",
            vocab.to_str().unwrap(),
            "--templates",
            templates.to_str().unwrap(),
            "--prior-ratio",
            "1",
            "--json",
        ],
    );
    assert_eq!(report["tagged"].as_u64(), Some(photos_in.len() as u64), "{report}");
    for im in &photos_in {
        let best =
            (0..im.probabilities.len()).max_by(|&a, &b| im.probabilities[a].total_cmp(&im.probabilities[b])).unwrap();
        let label = &g.zeroshot.labels[best];
        let res = run(&db, &["search", "--tag", label, "-k", "50", "--json"]);
        assert!(file_names(&res).contains(&im.file), "{}: not found under the tag {label}", im.file);
    }
}
