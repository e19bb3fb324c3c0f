//! `--text-model`: a library indexed with a CLIP answers queries embedded by a multilingual
//! text tower, without re-indexing. The fixture CLIP `clip-tiny-p32` (width 24) embeds the
//! photos and the fixture sentence-transformers encoder `st-distilbert-tiny` (width 24) the
//! texts; results follow the reference embeddings of both (goldens from `tools/`). Labels
//! embedded by a text model are cached apart from the CLIP's, the server searches with it, and
//! a text model of another width, or one that is not a sentence-transformers model, is refused.

use std::io::BufRead;
use std::path::Path;

use serde::Deserialize;
use serde_json::Value;

mod common;
use common::{fixtures, ok_json};

const CLIP: &str = "clip-tiny-p32";
const TEXT: &str = "st-distilbert-tiny";

#[derive(Deserialize)]
struct Golden {
    texts: Vec<GoldenText>,
}

#[derive(Deserialize)]
struct GoldenText {
    text: String,
    embedding: Vec<f32>,
}

#[derive(Deserialize)]
struct ClipGolden {
    images: Vec<ClipImage>,
}

#[derive(Deserialize)]
struct ClipImage {
    file: String,
    embedding: Vec<f32>,
}

fn read<T: serde::de::DeserializeOwned>(name: &str) -> T {
    serde_json::from_str(&std::fs::read_to_string(fixtures().join(format!("golden/{name}.json"))).unwrap()).unwrap()
}

fn clipdex(db: &Path, text_model: Option<&str>, args: &[&str]) -> std::process::Output {
    let mut c = std::process::Command::new(env!("CARGO_BIN_EXE_clipdex"));
    c.arg("--db").arg(db).arg("--model").arg(fixtures().join(CLIP));
    if let Some(t) = text_model {
        c.arg("--text-model").arg(fixtures().join(t));
    }
    c.args(args).env_remove("CLIPDEX_TEXT_MODEL").output().unwrap()
}

fn names(res: &Value) -> Vec<String> {
    res["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| Path::new(r["path"].as_str().unwrap()).file_name().unwrap().to_string_lossy().into_owned())
        .collect()
}

#[test]
fn a_library_indexed_with_clip_is_searched_through_a_multilingual_text_model() {
    let texts: Golden = read(TEXT);
    let images: ClipGolden = read(CLIP);
    // Photos the indexer decodes exactly as the reference does (no JPEGs: draft decoding).
    let photos_in: Vec<&ClipImage> =
        ["coffee.png", "rocket.webp", "chelsea_small.bmp", "camera_gray.png", "coffee_palette.gif"]
            .iter()
            .map(|f| images.images.iter().find(|i| i.file == *f).unwrap())
            .collect();
    let tmp = tempfile::tempdir().unwrap();
    let photos = tmp.path().join("photos");
    std::fs::create_dir_all(&photos).unwrap();
    for im in &photos_in {
        std::fs::copy(fixtures().join("images").join(&im.file), photos.join(&im.file)).unwrap();
    }
    let db = tmp.path().join("db");
    assert!(clipdex(&db, None, &["add", photos.to_str().unwrap()]).status.success());
    ok_json(clipdex(&db, None, &["index", "--json"]));

    let k = photos_in.len().to_string();
    for query in
        ["一只猫坐在沙发上", "ein Hund, der am Strand läuft", "Фотография кошки на диване", "서울의 밤 풍경 사진"]
    {
        let q = &texts.texts.iter().find(|t| t.text == query).unwrap().embedding;
        let mut expected: Vec<(&str, f32)> = photos_in
            .iter()
            .map(|im| (im.file.as_str(), q.iter().zip(&im.embedding).map(|(a, b)| a * b).sum()))
            .collect();
        expected.sort_by(|a, b| b.1.total_cmp(&a.1));
        let res = ok_json(clipdex(&db, Some(TEXT), &["search", query, "-k", &k, "--json"]));
        assert_eq!(names(&res), expected.iter().map(|e| e.0.to_string()).collect::<Vec<_>>(), "{query}");
        let score = res["results"][0]["score"].as_f64().unwrap() as f32;
        assert!((score - expected[0].1).abs() < 1e-3, "{query}: {score} vs {}", expected[0].1);
        // The CLIP's own text tower ranks differently for at least the score.
        let own = ok_json(clipdex(&db, None, &["search", query, "-k", &k, "--json"]));
        assert!((own["results"][0]["score"].as_f64().unwrap() as f32 - score).abs() > 1e-4, "{query}");
    }

    // embed --json says which model embedded the texts, with its ids.
    let out = ok_json(clipdex(&db, Some(TEXT), &["embed", "--text", "一只猫坐在沙发上", "--json"]));
    assert!(out["text_model"].as_str().unwrap().ends_with(TEXT));
    let golden = texts.texts.iter().find(|t| t.text == "一只猫坐在沙发上").unwrap();
    let e: Vec<f32> =
        out["texts"][0]["embedding"].as_array().unwrap().iter().map(|v| v.as_f64().unwrap() as f32).collect();
    assert!(e.iter().zip(&golden.embedding).map(|(a, b)| a * b).sum::<f32>() > 0.9999);

    // Labels embedded by the text model are cached apart from the CLIP's own.
    let vocab = tmp.path().join("vocab.txt");
    std::fs::write(&vocab, "猫\n狗\n火箭\n").unwrap();
    let args = ["autotag", "--vocab", vocab.to_str().unwrap(), "--templates", "single", "--prior-ratio", "1", "--json"];
    assert_eq!(ok_json(clipdex(&db, None, &args))["labels_embedded"].as_u64(), Some(3));
    assert_eq!(ok_json(clipdex(&db, Some(TEXT), &args))["labels_embedded"].as_u64(), Some(3));
    assert_eq!(ok_json(clipdex(&db, Some(TEXT), &args))["labels_embedded"].as_u64(), Some(0));

    // The server searches with it.
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_clipdex"))
        .arg("--db")
        .arg(&db)
        .arg("--model")
        .arg(fixtures().join(CLIP))
        .args(["serve", "--bind", "127.0.0.1:0", "--no-watch"])
        .env("CLIPDEX_TEXT_MODEL", fixtures().join(TEXT))
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    std::io::BufReader::new(child.stdout.take().unwrap()).read_line(&mut line).unwrap();
    let url = line.split_whitespace().find(|w| w.starts_with("http://")).expect("the address is printed").to_string();
    let query = "ein Hund, der am Strand läuft";
    let served: Result<Value, _> =
        ureq::get(&format!("{url}api/search")).query("q", query).query("k", &k).call().map(|r| r.into_json().unwrap());
    child.kill().unwrap();
    child.wait().unwrap();
    let cli = ok_json(clipdex(&db, Some(TEXT), &["search", query, "-k", &k, "--json"]));
    assert_eq!(names(&served.unwrap()), names(&cli));

    // A text model of another width, or not a text model at all: one line, nothing changed.
    for (bad, says) in [("st-bert-tiny", "16 dimensions"), ("clip-tiny-p16", "modules.json")] {
        let out = clipdex(&db, Some(bad), &["search", "a cat", "--json"]);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success() && err.contains(says) && err.trim().lines().count() == 1, "{bad}: {err}");
    }
    let out = clipdex(&db, Some(TEXT), &["finetune", "--pairs", "x.jsonl", "--out", "y"]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("--text-model"));
}
