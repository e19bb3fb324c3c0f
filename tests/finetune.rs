//! `clipdex finetune` against PyTorch: the fixture CLIP trained on 12 pairs for 3 steps
//! (`tools/make_finetune_golden.py`, float64 reference) must give the same per-step losses
//! (1e-4 relative), the same weight updates (5% relative L2 per tensor; `k_proj.bias`, whose
//! true gradient is 0, left out), unchanged frozen weights (bit for bit), and a saved model
//! whose embeddings equal the reference's (cosine ≥ 0.9999). The same for the fixture
//! Chinese-CLIP (a BERT text tower with a padding mask) on Chinese captions. Plus the bad inputs.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use candle_core::{DType, Device, Tensor};
use serde_json::Value;

mod common;
use common::{fixtures, ok_json};

fn model() -> PathBuf {
    fixtures().join("clip-tiny-p32")
}

fn clipdex(model: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_clipdex")).arg("--model").arg(model).args(args).output().unwrap()
}

/// A parity setting: the base model, its golden, pairs and reference updates, and the files a
/// saved model must carry.
struct Parity {
    model: PathBuf,
    golden: &'static str,
    pairs: &'static str,
    deltas: &'static str,
    /// The key projections' biases: their true gradient is 0, so their update is rounding.
    key_bias: &'static [&'static str],
    files: &'static [&'static str],
}

fn clip_parity() -> Parity {
    Parity {
        model: model(),
        golden: "golden.json",
        pairs: "pairs.jsonl",
        deltas: "delta-",
        key_bias: &["k_proj.bias"],
        files: &["config.json", "tokenizer.json", "preprocessor_config.json"],
    }
}

fn chinese_parity() -> Parity {
    Parity {
        model: fixtures().join("chinese-clip-tiny-p16"),
        golden: "golden-zh.json",
        pairs: "pairs-zh.jsonl",
        deltas: "delta-zh-",
        key_bias: &["k_proj.bias", "attention.self.key.bias"],
        files: &["config.json", "vocab.txt", "tokenizer_config.json", "preprocessor_config.json"],
    }
}

fn siglip_parity() -> Parity {
    Parity {
        model: fixtures().join("siglip-tiny-p16"),
        golden: "golden-siglip.json",
        pairs: "pairs.jsonl",
        deltas: "delta-siglip-",
        key_bias: &["k_proj.bias"],
        files: &["config.json", "spiece.model", "tokenizer_config.json", "preprocessor_config.json"],
    }
}

fn tensors(path: &Path) -> HashMap<String, Tensor> {
    candle_core::safetensors::load(path, &Device::Cpu)
        .unwrap()
        .into_iter()
        .map(|(k, v)| (k, v.to_dtype(DType::F64).unwrap()))
        .collect()
}

fn norm(t: &Tensor) -> f64 {
    t.sqr().unwrap().sum_all().unwrap().to_scalar::<f64>().unwrap().sqrt()
}

fn train_on(setting: &Parity, out: &Path, scope: &str) -> Value {
    let pairs = fixtures().join("finetune").join(setting.pairs);
    ok_json(clipdex(
        &setting.model,
        &[
            "finetune",
            "--pairs",
            pairs.to_str().unwrap(),
            "--out",
            out.to_str().unwrap(),
            "--train",
            scope,
            "--no-shuffle",
            "--batch-size",
            "4",
            "--schedule",
            "constant",
            "--lr",
            "1e-4",
            "--val-split",
            "0",
            "--epochs",
            "1",
            "--json",
        ],
    ))
}

fn cosine(a: &[f64], b: &[f64]) -> f64 {
    let dot: f64 = a.iter().zip(b).map(|(x, y)| x * y).sum();
    dot / (a.iter().map(|x| x * x).sum::<f64>().sqrt() * b.iter().map(|x| x * x).sum::<f64>().sqrt())
}

fn floats(v: &Value) -> Vec<f64> {
    v.as_array().unwrap().iter().map(|x| x.as_f64().unwrap()).collect()
}

fn check_run(setting: &Parity, tag: &str, scope: &str) {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("tuned");
    let report = train_on(setting, &out, scope);
    let golden: Value =
        serde_json::from_str(&std::fs::read_to_string(fixtures().join("finetune").join(setting.golden)).unwrap())
            .unwrap();
    let want = &golden["runs"][tag];
    // Per-step losses.
    let (ours, theirs) = (floats(&report["losses"]), floats(&want["losses"]));
    assert_eq!(ours.len(), theirs.len(), "{tag}: steps");
    for (step, (a, b)) in ours.iter().zip(&theirs).enumerate() {
        assert!((a - b).abs() <= 1e-4 * b.abs(), "{tag}: step {step} loss {a} vs PyTorch's {b}");
    }
    eprintln!("{tag}: losses {ours:?} (PyTorch {theirs:?})");
    // Weight updates, and frozen weights untouched.
    let base = tensors(&setting.model.join("model.safetensors"));
    let tuned = tensors(&out.join("model.safetensors"));
    let reference = tensors(&fixtures().join(format!("finetune/{}{tag}.safetensors", setting.deltas)));
    let trained: Vec<&str> = want["trained"].as_array().unwrap().iter().map(|v| v.as_str().unwrap()).collect();
    assert_eq!(tuned.len(), base.len(), "{tag}: every weight is saved");
    let mut worst = (0.0f64, String::new());
    for (name, b) in &base {
        let t = &tuned[name];
        let delta = (t - b).unwrap();
        if !trained.contains(&name.as_str()) {
            assert_eq!(norm(&delta), 0.0, "{tag}: frozen {name} changed");
            continue;
        }
        if setting.key_bias.iter().any(|b| name.ends_with(b)) {
            continue;
        }
        let want = &reference[name];
        let rel = norm(&(&delta - want).unwrap()) / norm(want);
        if rel > worst.0 {
            worst = (rel, name.clone());
        }
        assert!(rel < 0.05, "{tag}: {name} updated {rel:.4} (relative L2) away from PyTorch's update");
    }
    eprintln!("{tag}: largest relative difference of an update: {:.5} ({})", worst.0, worst.1);
    // The saved folder is a model: it loads with --model and embeds as PyTorch's does.
    let images: Vec<PathBuf> = want["probe_images"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| fixtures().join("images").join(v.as_str().unwrap()))
        .collect();
    let mut args = vec!["embed".to_string(), "--json".into()];
    for i in &images {
        args.extend(["--image".into(), i.to_string_lossy().into_owned()]);
    }
    for t in want["probe_texts"].as_array().unwrap() {
        args.extend(["--text".into(), t.as_str().unwrap().to_string()]);
    }
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let embedded = ok_json(clipdex(&out, &args));
    for (i, e) in embedded["images"].as_array().unwrap().iter().enumerate() {
        let c = cosine(&floats(&e["embedding"]), &floats(&want["image_embeddings"][i]));
        assert!(c >= 0.9999, "{tag}: image {i} cosine {c}");
    }
    for (i, e) in embedded["texts"].as_array().unwrap().iter().enumerate() {
        let c = cosine(&floats(&e["embedding"]), &floats(&want["text_embeddings"][i]));
        assert!(c >= 0.9999, "{tag}: text {i} cosine {c}");
    }
    for file in setting.files {
        assert!(out.join(file).is_file(), "{tag}: {file} copied");
    }
}

#[test]
fn training_everything_matches_pytorch() {
    check_run(&clip_parity(), "all", "all");
}

#[test]
fn training_the_last_layer_matches_pytorch_and_freezes_the_rest() {
    check_run(&clip_parity(), "last1", "last:1");
}

#[test]
fn training_a_chinese_clip_matches_pytorch() {
    check_run(&chinese_parity(), "all", "all");
}

#[test]
fn training_the_last_layer_of_a_chinese_clip_matches_pytorch_and_freezes_the_rest() {
    check_run(&chinese_parity(), "last1", "last:1");
}

#[test]
fn training_a_siglip_with_its_sigmoid_loss_matches_pytorch() {
    check_run(&siglip_parity(), "all", "all");
}

#[test]
fn training_the_last_layer_of_a_siglip_matches_pytorch_and_freezes_the_rest() {
    check_run(&siglip_parity(), "last1", "last:1");
}

#[test]
fn training_a_siglip_s_heads_matches_pytorch_and_freezes_the_towers() {
    check_run(&siglip_parity(), "projection", "projection");
}

#[test]
fn a_fine_tuned_siglip_and_a_siglip_adapter_rerank_a_siglip_library() {
    let tmp = tempfile::tempdir().unwrap();
    let photos = tmp.path().join("photos");
    std::fs::create_dir_all(&photos).unwrap();
    let (train, val) = shapes(&photos);
    let pairs = tmp.path().join("train.jsonl");
    for (from, to) in [(&train, &pairs), (&val, &tmp.path().join("val.jsonl"))] {
        let text = std::fs::read_to_string(from).unwrap().replace("\"image\": \"", "\"image\": \"photos/");
        std::fs::write(to, text).unwrap();
        std::fs::remove_file(from).unwrap();
    }
    let base = fixtures().join("siglip-tiny-p16");
    let db = tmp.path().join("db");
    let run = |model: &Path, args: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_clipdex"))
            .arg("--db")
            .arg(&db)
            .arg("--model")
            .arg(model)
            .args(args)
            .env("RUST_LOG", "clipdex=info")
            .output()
            .unwrap()
    };
    assert!(run(&base, &["add", photos.to_str().unwrap()]).status.success());
    assert_eq!(ok_json(run(&base, &["index", "--json"]))["embedded"], 48);
    let finetune = |out: &Path, scope: &str, epochs: &str| {
        let (pairs, out) = (pairs.to_str().unwrap(), out.to_str().unwrap());
        let args = ["finetune", "--pairs", pairs, "--out", out, "--train", scope, "--batch-size", "12"];
        run(&base, &[&args[..], &["--epochs", epochs, "--lr", "1e-3", "--val-split", "0", "--json"][..]].concat())
    };
    let query = "a red circle";
    let embed = |m: &Path, args: &[&str]| ok_json(clipdex(m, &[&["embed", "--json"][..], args].concat()));

    // A fine-tuned SigLIP re-ranks with its own cosines.
    let tuned = tmp.path().join("tuned");
    let report = ok_json(finetune(&tuned, "last:1", "2"));
    assert_eq!(report["steps"], 6, "{report}");
    let rerank = format!("clip:{}", tuned.display());
    let ranked =
        ok_json(run(&base, &["search", query, "-k", "5", "--rerank", &rerank, "--rerank-top", "48", "--json"]));
    let results = ranked["results"].as_array().unwrap().clone();
    assert_eq!(results.len(), 5);
    let mut files: Vec<PathBuf> = std::fs::read_dir(&photos).unwrap().map(|e| e.unwrap().path()).collect();
    files.sort();
    let mut args = vec!["--text".to_string(), query.into()];
    for f in &files {
        args.extend(["--image".into(), f.to_string_lossy().into_owned()]);
    }
    let embedded = embed(&tuned, &args.iter().map(String::as_str).collect::<Vec<_>>());
    let q = floats(&embedded["texts"][0]["embedding"]);
    let mut expected: Vec<(f64, String)> = embedded["images"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| (cosine(&floats(&e["embedding"]), &q), e["path"].as_str().unwrap().to_string()))
        .collect();
    expected.sort_by(|a, b| b.0.total_cmp(&a.0));
    for (r, (cos, path)) in results.iter().zip(&expected) {
        assert_eq!(r["path"].as_str().unwrap(), path, "{ranked}");
        assert!((r["finetuned"].as_f64().unwrap() - cos).abs() < 1e-4);
    }
    let base_query = floats(&embed(&base, &["--text", query])["texts"][0]["embedding"]);
    let c = cosine(&base_query, &q);
    assert!(c < 0.9999, "the text tower's last layer was trained: cosine {c}");

    // An adapter: trained on the library's vectors, its image tower the base's, and re-ranking
    // with it reads no photo.
    let adapter = tmp.path().join("adapter");
    let trained = finetune(&adapter, "adapter", "20");
    let log = String::from_utf8_lossy(&trained.stderr).into_owned();
    let report = ok_json(trained);
    assert!(log.contains("36 of 36 image vectors from the library"), "{log}");
    let losses = floats(&report["losses"]);
    assert!(losses.last().unwrap() < &(0.9 * losses[0]), "{losses:?}");
    let photo = photos.join("red_circle_3.png");
    let image = |m: &Path| floats(&embed(m, &["--image", photo.to_str().unwrap()])["images"][0]["embedding"]);
    let c = cosine(&image(&adapter), &image(&base));
    assert!(c >= 0.99999, "the image tower is the base's: cosine {c}");
    let adapted_query = floats(&embed(&adapter, &["--text", query])["texts"][0]["embedding"]);
    assert!(cosine(&adapted_query, &base_query) < 0.9999, "the text head was trained");
    let aside = tmp.path().join("aside");
    std::fs::rename(&photos, &aside).unwrap();
    let rerank = format!("clip:{}", adapter.display());
    let ranked = ok_json(run(&base, &["search", query, "-k", "48", "--rerank", &rerank, "--json"]));
    let results = ranked["results"].as_array().unwrap();
    assert_eq!(results.len(), 48);
    assert!(results.iter().all(|r| r["finetuned"].is_f64()), "{ranked}");
    std::fs::rename(&aside, &photos).unwrap();
    let top = results[0]["path"].as_str().unwrap();
    let expected = cosine(&floats(&embed(&adapter, &["--image", top])["images"][0]["embedding"]), &adapted_query);
    assert!((results[0]["finetuned"].as_f64().unwrap() - expected).abs() < 1e-4);
}

#[test]
fn bad_input_is_one_line_and_writes_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let good = fixtures().join("images/coffee.png");
    let write = |name: &str, lines: &[String]| {
        let p = dir.join(name);
        std::fs::write(&p, lines.join("\n")).unwrap();
        p
    };
    let pair = |image: &Path, text: &str| format!("{{\"image\": {:?}, \"text\": {text:?}}}", image.to_str().unwrap());
    let many: Vec<String> = (0..6).map(|i| pair(&good, &format!("text {i}"))).collect();
    let missing = write("missing.jsonl", &[many.clone(), vec![pair(&dir.join("gone.jpg"), "gone")]].concat());
    let one = write("one.jsonl", &[pair(&good, "alone")]);
    let dup = write("dup.jsonl", &[many.clone(), vec![pair(&good, "text 2")]].concat());
    let fine = write("fine.jsonl", &many);
    let exists = dir.join("exists");
    std::fs::create_dir(&exists).unwrap();
    let out = dir.join("out");
    let run = |model: &Path, pairs: &Path, out: &Path, extra: &[&str]| {
        let mut args =
            vec!["finetune", "--pairs", pairs.to_str().unwrap(), "--out", out.to_str().unwrap(), "--val-split", "0"];
        args.extend_from_slice(extra);
        clipdex(model, &args)
    };
    let cases: Vec<(Output, &str)> = vec![
        (run(&model(), &missing, &out, &["--batch-size", "2"]), "line 7"),
        (run(&model(), &one, &out, &["--batch-size", "2"]), "at least 2"),
        (run(&model(), &dup, &out, &["--batch-size", "2"]), "repeats the pair of line 3"),
        (run(&model(), &fine, &out, &["--batch-size", "64"]), "larger than the 6 training pairs"),
        (run(&model(), &fine, &exists, &["--batch-size", "2"]), "--force"),
        (run(&fixtures().join("clipseg/clipseg-tiny"), &fine, &out, &["--batch-size", "2"]), "not CLIP"),
        (run(&model(), &dir.join("nope.jsonl"), &out, &[]), "cannot read the pairs file"),
    ];
    for (i, (output, needle)) in cases.iter().enumerate() {
        let err = String::from_utf8_lossy(&output.stderr);
        assert_ne!(output.status.code(), Some(0), "case {i}: {err}");
        assert!(err.contains(needle), "case {i}: {err:?} lacks {needle:?}");
        assert_eq!(err.trim().lines().count(), 1, "case {i}: {err}");
        assert!(!out.exists(), "case {i}: something was written");
    }
    // Flags clap checks: its message first, then its usage hint.
    for (flags, needle) in
        [(["--train", "last:0"], "last:N"), (["--train", "lora"], "adapter"), (["--betas", "0.9"], "two numbers")]
    {
        let output = run(&model(), &fine, &out, &flags);
        let err = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(2), "{flags:?}: {err}");
        assert!(err.lines().next().unwrap().contains(needle), "{flags:?}: {err}");
    }
    // --skip-bad trains on the rest and says what it skipped.
    let report =
        ok_json(run(&model(), &missing, &out, &["--batch-size", "2", "--epochs", "1", "--skip-bad", "--json"]));
    assert_eq!(report["train_pairs"], 6);
    assert!(report["skipped"][0].as_str().unwrap().contains("line 7"));
    assert!(out.join("model.safetensors").is_file());
    // No half model is left behind in the parent folder.
    let leftovers: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .filter_map(Result::ok)
        .filter(|e| e.file_name().to_string_lossy().starts_with('.'))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
}

/// A learnable set: six colours × two shapes at random places and sizes, three photos of each
/// to train on and one to hold out.
fn shapes(dir: &Path) -> (PathBuf, PathBuf) {
    let colours = [
        ("red", [220, 30, 30]),
        ("green", [30, 180, 40]),
        ("blue", [30, 60, 220]),
        ("yellow", [240, 220, 30]),
        ("purple", [140, 40, 170]),
        ("orange", [250, 140, 20]),
    ];
    let mut state = 0x1234_5678_9abc_def1u64;
    let mut next = |n: u32| {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        (state % u64::from(n)) as u32
    };
    let (mut train, mut val) = (String::new(), String::new());
    for (name, rgb) in colours {
        for shape in ["square", "circle"] {
            for v in 0..4 {
                let r = 40 + next(50) as i64;
                let (cx, cy) = (r + next(224 - 2 * r as u32) as i64, r + next(224 - 2 * r as u32) as i64);
                let img = image::RgbImage::from_fn(224, 224, |x, y| {
                    let (dx, dy) = (x as i64 - cx, y as i64 - cy);
                    let inside =
                        if shape == "square" { dx.abs() <= r && dy.abs() <= r } else { dx * dx + dy * dy <= r * r };
                    image::Rgb(if inside { rgb } else { [235, 235, 235] })
                });
                let file = format!("{name}_{shape}_{v}.png");
                img.save(dir.join(&file)).unwrap();
                let line = format!("{{\"image\": \"{file}\", \"text\": \"a {name} {shape}\"}}\n");
                if v == 3 { val.push_str(&line) } else { train.push_str(&line) }
            }
        }
    }
    std::fs::write(dir.join("train.jsonl"), train).unwrap();
    std::fs::write(dir.join("val.jsonl"), val).unwrap();
    (dir.join("train.jsonl"), dir.join("val.jsonl"))
}

#[test]
fn fine_tuning_learns_what_the_pairs_teach() {
    let tmp = tempfile::tempdir().unwrap();
    let (train, val) = shapes(tmp.path());
    let out = tmp.path().join("tuned");
    let report = ok_json(clipdex(
        &model(),
        &[
            "finetune",
            "--pairs",
            train.to_str().unwrap(),
            "--val",
            val.to_str().unwrap(),
            "--out",
            out.to_str().unwrap(),
            "--train",
            "all",
            "--batch-size",
            "12",
            "--epochs",
            "30",
            "--lr",
            "1e-3",
            "--weight-decay",
            "0",
            "--json",
        ],
    ));
    let eval = &report["eval"];
    let r1 = |which: &str| {
        (eval[which]["image_to_text"][0].as_f64().unwrap() + eval[which]["text_to_image"][0].as_f64().unwrap()) / 2.0
    };
    let (base, tuned) = (r1("base"), r1("finetuned"));
    eprintln!(
        "held-out recall@1 (mean of both directions) on 12 unseen photos: base {base:.3}, fine-tuned {tuned:.3}; {eval}"
    );
    assert!(tuned >= base + 0.2 && tuned >= 3.0 * base, "recall@1 {base:.3} -> {tuned:.3}");
    let losses = floats(&report["losses"]);
    assert!(losses.last().unwrap() < &(losses[0] / 4.0), "{losses:?}");
}

#[test]
fn searches_rerank_with_a_fine_tuned_model_and_cache_its_vectors() {
    let tmp = tempfile::tempdir().unwrap();
    let photos = tmp.path().join("photos");
    std::fs::create_dir_all(&photos).unwrap();
    let (train, _) = shapes(&photos);
    std::fs::remove_file(photos.join("val.jsonl")).unwrap();
    let tuned = tmp.path().join("tuned");
    ok_json(clipdex(
        &model(),
        &[
            "finetune",
            "--pairs",
            train.to_str().unwrap(),
            "--out",
            tuned.to_str().unwrap(),
            "--train",
            "all",
            "--batch-size",
            "12",
            "--epochs",
            "10",
            "--lr",
            "1e-3",
            "--val-split",
            "0",
            "--json",
        ],
    ));
    std::fs::remove_file(&train).unwrap();
    let db = tmp.path().join("db");
    let lib = |args: &[&str]| common::clipdex_on(&db, model(), args);
    assert!(lib(&["add", photos.to_str().unwrap()]).status.success());
    assert_eq!(ok_json(lib(&["index", "--json"]))["embedded"], 48);
    let query = "a red circle";
    let rerank = format!("clip:{}", tuned.display());
    let ranked = ok_json(lib(&["search", query, "-k", "5", "--rerank", &rerank, "--rerank-top", "48", "--json"]));
    let results = ranked["results"].as_array().unwrap().clone();
    assert_eq!(results.len(), 5);
    // The reference ranking: the fine-tuned model's own cosines for every photo.
    let mut files: Vec<PathBuf> = std::fs::read_dir(&photos).unwrap().map(|e| e.unwrap().path()).collect();
    files.sort();
    let mut args = vec!["embed".to_string(), "--json".into(), "--text".into(), query.into()];
    for f in &files {
        args.extend(["--image".into(), f.to_string_lossy().into_owned()]);
    }
    let embedded = ok_json(clipdex(&tuned, &args.iter().map(String::as_str).collect::<Vec<_>>()));
    let q = floats(&embedded["texts"][0]["embedding"]);
    let mut expected: Vec<(f64, String)> = embedded["images"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| (cosine(&floats(&e["embedding"]), &q), e["path"].as_str().unwrap().to_string()))
        .collect();
    expected.sort_by(|a, b| b.0.total_cmp(&a.0));
    for (r, (cos, path)) in results.iter().zip(&expected) {
        assert_eq!(r["path"].as_str().unwrap(), path, "{ranked}");
        assert!((r["finetuned"].as_f64().unwrap() - cos).abs() < 1e-4);
        assert!(r["score"].is_f64(), "the library model's cosine stays");
    }
    // The candidates' vectors are cached: a result whose file went away keeps its score.
    let first = PathBuf::from(results[0]["path"].as_str().unwrap());
    let aside = tmp.path().join("aside.png");
    std::fs::rename(&first, &aside).unwrap();
    let again = ok_json(lib(&["search", query, "-k", "5", "--rerank", &rerank, "--rerank-top", "48", "--json"]));
    assert_eq!(again["results"][0]["path"], results[0]["path"]);
    assert!(again["results"][0]["finetuned"].is_f64(), "{again}");
    // An index pass forgets the photo, and its cached vector with it.
    ok_json(lib(&["index", "--json"]));
    let library = clipdex::Library::open(clipdex::LibraryConfig::new(&db, model().to_string_lossy())).unwrap();
    assert_eq!(library.store().model_vector_count().unwrap(), 47);
    drop(library);
    let text = String::from_utf8(lib(&["search", query, "-k", "2", "--rerank", &rerank]).stdout).unwrap();
    assert_eq!(text.lines().count(), 2, "{text}");
    let out = lib(&["search", query, "--rerank", "clip:"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("itm or clip:DIR"));
}

#[cfg(unix)]
#[test]
fn ctrl_c_stops_between_steps_and_writes_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("tuned");
    let pairs = fixtures().join("finetune/pairs.jsonl");
    let child = Command::new(env!("CARGO_BIN_EXE_clipdex"))
        .arg("--model")
        .arg(model())
        .args(["finetune", "--pairs", pairs.to_str().unwrap(), "--out", out.to_str().unwrap()])
        .args(["--batch-size", "4", "--epochs", "10000", "--val-split", "0"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(std::time::Duration::from_millis(1500));
    assert_eq!(unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGINT) }, 0);
    let output = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{err}");
    assert!(err.contains("stopped: nothing was written"), "{err}");
    assert!(std::fs::read_dir(tmp.path()).unwrap().next().is_none(), "nothing is written");
}

#[test]
fn an_adapter_trains_on_stored_vectors_folds_into_the_model_and_reranks_without_reading_photos() {
    let tmp = tempfile::tempdir().unwrap();
    let photos = tmp.path().join("photos");
    std::fs::create_dir_all(&photos).unwrap();
    let (train, val) = shapes(&photos);
    let pairs = tmp.path().join("train.jsonl");
    let held = tmp.path().join("val.jsonl");
    // The pairs file lives elsewhere now: its relative paths point into photos/.
    for (from, to) in [(&train, &pairs), (&val, &held)] {
        let text = std::fs::read_to_string(from).unwrap().replace("\"image\": \"", "\"image\": \"photos/");
        std::fs::write(to, text).unwrap();
        std::fs::remove_file(from).unwrap();
    }
    let db = tmp.path().join("db");
    let run = |model: &Path, args: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_clipdex"))
            .arg("--db")
            .arg(&db)
            .arg("--model")
            .arg(model)
            .args(args)
            .env("RUST_LOG", "clipdex=info")
            .output()
            .unwrap()
    };
    assert!(run(&model(), &["add", photos.to_str().unwrap()]).status.success());
    assert_eq!(ok_json(run(&model(), &["index", "--json"]))["embedded"], 48);
    // An adapter trained into `out`, at `precision`: the run's output.
    let train = |out: &Path, precision: &str| {
        let (pairs, held, out) = (pairs.to_str().unwrap(), held.to_str().unwrap(), out.to_str().unwrap());
        run(
            &model(),
            &[
                "finetune",
                "--pairs",
                pairs,
                "--val",
                held,
                "--out",
                out,
                "--train",
                "adapter",
                "--batch-size",
                "12",
                "--epochs",
                "60",
                "--lr",
                "1e-2",
                "--weight-decay",
                "0",
                "--precision",
                precision,
                "--json",
            ],
        )
    };
    // Mean held-out recall@1 of both directions.
    let r1 = |report: &Value, which: &str| {
        let e = &report["eval"][which];
        (e["image_to_text"][0].as_f64().unwrap() + e["text_to_image"][0].as_f64().unwrap()) / 2.0
    };
    let out = tmp.path().join("adapter");
    let started = std::time::Instant::now();
    let trained = train(&out, "f32");
    let log = String::from_utf8_lossy(&trained.stderr).into_owned();
    let report = ok_json(trained);
    eprintln!("adapter run: {:.2} s; {}", started.elapsed().as_secs_f64(), report["eval"]);
    assert!(log.contains("36 of 36 image vectors from the library"), "{log}");
    assert!(r1(&report, "finetuned") >= r1(&report, "base") + 0.15, "{}", report["eval"]);
    // The text pass in bf16 (`--precision`, where the CPU has it) learns as well.
    let bf16_report = ok_json(train(&tmp.path().join("adapter-bf16"), "bf16"));
    assert!(r1(&bf16_report, "finetuned") >= r1(&bf16_report, "base") + 0.15, "{}", bf16_report["eval"]);
    // Folded: the saved model embeds a photo as the adapter maps the base embedding.
    let adapter = tensors(&out.join("clipdex_adapter.safetensors"))["adapter"].clone();
    let photo = photos.join("red_circle_3.png");
    let embed = |m: &Path| {
        floats(&ok_json(clipdex(m, &["embed", "--image", photo.to_str().unwrap(), "--json"]))["images"][0]["embedding"])
    };
    let base = embed(&model());
    let d = base.len();
    let mapped: Vec<f64> = adapter
        .matmul(&Tensor::from_vec(base, (d, 1), &Device::Cpu).unwrap())
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1()
        .unwrap();
    let c = cosine(&embed(&out), &mapped);
    assert!(c >= 0.9999, "folded adapter: cosine {c}");
    // Re-ranking with it maps the stored vectors: no photo is read (they are all moved away).
    let aside = tmp.path().join("aside");
    std::fs::rename(&photos, &aside).unwrap();
    let rerank = format!("clip:{}", out.display());
    let ranked = ok_json(run(&model(), &["search", "a red circle", "-k", "48", "--rerank", &rerank, "--json"]));
    let results = ranked["results"].as_array().unwrap();
    assert_eq!(results.len(), 48);
    assert!(results.iter().all(|r| r["finetuned"].is_f64()), "{ranked}");
    let scores: Vec<f64> = results.iter().map(|r| r["finetuned"].as_f64().unwrap()).collect();
    assert!(scores.windows(2).all(|w| w[0] >= w[1]));
    std::fs::rename(&aside, &photos).unwrap();
    let q = floats(&ok_json(clipdex(&out, &["embed", "--text", "a red circle", "--json"]))["texts"][0]["embedding"]);
    let top = PathBuf::from(results[0]["path"].as_str().unwrap());
    let expected = cosine(
        &floats(
            &ok_json(clipdex(&out, &["embed", "--image", top.to_str().unwrap(), "--json"]))["images"][0]["embedding"],
        ),
        &q,
    );
    assert!((scores[0] - expected).abs() < 1e-4, "{} vs {expected}", scores[0]);
    // Moving the library onto the adapter maps the stored vectors too: no photo is read (they
    // are away again), and searches then score as the re-ranking did.
    std::fs::rename(&photos, &aside).unwrap();
    let moved = ok_json(run(&out, &["reindex", "--model", out.to_str().unwrap(), "--json"]));
    let counts = (moved["mapped"].as_u64(), moved["embedded"].as_u64(), moved["failed"].as_u64());
    assert_eq!(counts, (Some(48), Some(0), Some(0)), "{moved}");
    std::fs::rename(&aside, &photos).unwrap();
    let after = ok_json(run(&out, &["search", "a red circle", "-k", "48", "--json"]));
    for (a, r) in after["results"].as_array().unwrap().iter().zip(results) {
        assert_eq!(a["id"], r["id"]);
        assert!((a["score"].as_f64().unwrap() - r["finetuned"].as_f64().unwrap()).abs() < 1e-4);
    }
}

#[test]
fn wise_ft_saves_and_evaluates_weight_interpolations() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("tuned");
    let pairs = fixtures().join("finetune/pairs.jsonl");
    let report = ok_json(clipdex(
        &model(),
        &[
            "finetune",
            "--pairs",
            pairs.to_str().unwrap(),
            "--out",
            out.to_str().unwrap(),
            "--train",
            "last:1",
            "--batch-size",
            "3",
            "--epochs",
            "2",
            "--lr",
            "1e-3",
            "--val-split",
            "0.25",
            "--wise",
            "0.25,0.5",
            "--json",
        ],
    ));
    let wise = report["wise"].as_array().unwrap();
    assert_eq!(wise.len(), 2);
    assert_eq!(report["eval"]["wise"].as_array().unwrap().len(), 2);
    assert_eq!(report["eval"]["wise"][1]["alpha"], 0.5);
    assert!(report["eval"]["wise"][1]["text_to_image"].is_array());
    let base = tensors(&model().join("model.safetensors"));
    let tuned = tensors(&out.join("model.safetensors"));
    let half = tensors(&PathBuf::from(wise[1]["out"].as_str().unwrap()).join("model.safetensors"));
    assert_eq!(PathBuf::from(wise[1]["out"].as_str().unwrap()), tmp.path().join("tuned-wise0.5"));
    for name in ["visual_projection.weight", "text_model.encoder.layers.1.mlp.fc1.weight", "logit_scale"] {
        let want = ((&base[name] * 0.5).unwrap() + (&tuned[name] * 0.5).unwrap()).unwrap();
        let diff = norm(&(&half[name] - &want).unwrap());
        assert!(diff <= 1e-6 * norm(&want).max(1.0), "{name}: {diff}");
        assert!(norm(&(&tuned[name] - &base[name]).unwrap()) > 0.0, "{name} was trained");
    }
    // The interpolation at 0.5 embeds, as any model folder does.
    let wise_dir = PathBuf::from(wise[0]["out"].as_str().unwrap());
    ok_json(clipdex(&wise_dir, &["embed", "--text", "a cat", "--json"]));
    let refused = clipdex(
        &model(),
        &[
            "finetune",
            "--pairs",
            pairs.to_str().unwrap(),
            "--out",
            tmp.path().join("x").to_str().unwrap(),
            "--wise",
            "1.5",
        ],
    );
    assert!(String::from_utf8_lossy(&refused.stderr).contains("strictly between 0 and 1"));
}

#[test]
fn class_folders_train_with_templates_and_report_zero_shot_accuracy_and_forgetting() {
    let tmp = tempfile::tempdir().unwrap();
    let flat = tmp.path().join("flat");
    std::fs::create_dir_all(&flat).unwrap();
    shapes(&flat);
    // One folder per colour: DIR/red/red_circle_0.png ...
    let folders = tmp.path().join("classes");
    for entry in std::fs::read_dir(&flat).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        if let Some((colour, _)) = name.split_once('_').filter(|_| name.ends_with(".png")) {
            std::fs::create_dir_all(folders.join(colour)).unwrap();
            std::fs::copy(&path, folders.join(colour).join(&name)).unwrap();
        }
    }
    let out = tmp.path().join("tuned");
    let report = ok_json(clipdex(
        &model(),
        &[
            "finetune",
            "--folders",
            folders.to_str().unwrap(),
            "--template",
            "a photo of something {}.",
            "--out",
            out.to_str().unwrap(),
            "--train",
            "all",
            "--batch-size",
            "6",
            "--epochs",
            "20",
            "--lr",
            "1e-3",
            "--weight-decay",
            "0",
            "--val-split",
            "0.25",
            "--json",
        ],
    ));
    let eval = &report["eval"];
    eprintln!("{eval}");
    let zero_shot = |which: &str| eval[which]["zero_shot"][0].as_f64().unwrap();
    assert!(zero_shot("finetuned") >= zero_shot("base") + 0.3, "{eval}");
    assert_eq!(eval["forgetting"]["queries"], 100);
    let overlap = eval["forgetting"]["overlap"].as_f64().unwrap();
    assert!((0.0..=1.0).contains(&overlap));
    assert_eq!(report["train_pairs"].as_u64().unwrap() + eval["pairs"].as_u64().unwrap(), 48);
    // Pairs files have no classes: no zero-shot figure there.
    let pairs = fixtures().join("finetune/pairs.jsonl");
    let plain = ok_json(clipdex(
        &model(),
        &[
            "finetune",
            "--pairs",
            pairs.to_str().unwrap(),
            "--out",
            tmp.path().join("p").to_str().unwrap(),
            "--batch-size",
            "3",
            "--epochs",
            "1",
            "--val-split",
            "0.25",
            "--json",
        ],
    ));
    assert!(plain["eval"]["finetuned"].get("zero_shot").is_none());
    let one_class = tmp.path().join("one");
    std::fs::create_dir_all(one_class.join("red")).unwrap();
    std::fs::copy(flat.join("red_circle_0.png"), one_class.join("red/a.png")).unwrap();
    let out = clipdex(
        &model(),
        &["finetune", "--folders", one_class.to_str().unwrap(), "--out", tmp.path().join("q").to_str().unwrap()],
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("one class folder"));
}

/// A folder of `n` training pairs (copies of one photo with distinct texts) and its pairs
/// file, inside the folder as users keep them.
fn training_folder(dir: &Path, n: usize) -> PathBuf {
    std::fs::create_dir_all(dir).unwrap();
    let mut lines = String::new();
    for i in 0..n {
        std::fs::copy(fixtures().join("images/coffee.png"), dir.join(format!("p{i}.png"))).unwrap();
        lines.push_str(&format!("{{\"image\": \"p{i}.png\", \"text\": \"photo number {i}\"}}\n"));
    }
    std::fs::write(dir.join("pairs.jsonl"), lines).unwrap();
    dir.join("pairs.jsonl")
}

fn quick_run(pairs: &Path, out: &Path, extra: &[&str]) -> Output {
    let mut args = vec![
        "finetune",
        "--pairs",
        pairs.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
        "--train",
        "projection",
        "--batch-size",
        "2",
        "--epochs",
        "1",
        "--val-split",
        "0",
        "--json",
    ];
    args.extend_from_slice(extra);
    let mut command = Command::new(env!("CARGO_BIN_EXE_clipdex"));
    command.arg("--model").arg(model()).args(&args);
    // The usual umask, whatever the test runner's: saved files must follow it.
    unsafe {
        std::os::unix::process::CommandExt::pre_exec(&mut command, || {
            libc::umask(0o022);
            Ok(())
        });
    }
    command.output().unwrap()
}

fn fails_naming(output: Output, needle: &str) {
    let err = String::from_utf8_lossy(&output.stderr);
    assert_ne!(output.status.code(), Some(0), "{err}");
    assert!(err.contains(needle), "{err:?} lacks {needle:?}");
}

/// Hidden entries (interrupted or refused saves) in a folder.
fn hidden(dir: &Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .unwrap()
        .filter_map(Result::ok)
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with('.'))
        .collect()
}

/// `--force` replaces only a model folder that clipdex wrote: the folder of the training
/// photos, a library database, or a model folder with other files in it are refused with a
/// message naming what is there, and stay as they were. Saved files have the user's usual
/// permissions, and a half-written model an interrupted run left is cleaned at the next start.
#[test]
fn force_replaces_only_a_model_folder_clipdex_wrote() {
    use std::os::unix::fs::PermissionsExt;
    let tmp = tempfile::tempdir().unwrap();
    let photos = tmp.path().join("photos");
    let pairs = training_folder(&photos, 4);
    fails_naming(quick_run(&pairs, &photos, &["--force"]), "pairs.jsonl");
    assert_eq!(std::fs::read_dir(&photos).unwrap().count(), 5, "the training folder was touched");
    assert!(hidden(tmp.path()).is_empty(), "{:?}", hidden(tmp.path()));
    let db = tmp.path().join("library");
    std::fs::create_dir_all(db.join("sled")).unwrap();
    std::fs::create_dir_all(db.join("thumbs")).unwrap();
    fails_naming(quick_run(&pairs, &db, &["--force"]), "library database (sled/, thumbs/)");
    assert!(db.join("sled").is_dir() && db.join("thumbs").is_dir());

    // A save an interrupted run left (its process is gone) is removed at the next start.
    let out = tmp.path().join("tuned");
    let stale = tmp.path().join(".tuned.partial-2000000000");
    std::fs::create_dir(&stale).unwrap();
    std::fs::write(stale.join("model.safetensors"), b"half").unwrap();
    // A folder named like one that holds something else is not ours: it stays.
    let lookalike = tmp.path().join(".tuned.partial-2000000001");
    std::fs::create_dir(&lookalike).unwrap();
    std::fs::write(lookalike.join("keep.txt"), b"mine").unwrap();
    ok_json(quick_run(&pairs, &out, &[]));
    assert!(!stale.exists(), "the half-written model stays");
    assert!(lookalike.join("keep.txt").is_file(), "a folder of someone else's was removed");
    std::fs::remove_dir_all(&lookalike).unwrap();
    assert!(hidden(tmp.path()).is_empty(), "{:?}", hidden(tmp.path()));
    for file in ["model.safetensors", "config.json", ".clipdex-model"] {
        let mode = std::fs::metadata(out.join(file)).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o644, "{file} has mode {mode:o}");
    }
    // Its own model folder is replaced; not once the user put something of theirs in it.
    fails_naming(quick_run(&pairs, &out, &[]), "--force");
    ok_json(quick_run(&pairs, &out, &["--force"]));
    std::fs::write(out.join("notes.txt"), b"mine").unwrap();
    fails_naming(quick_run(&pairs, &out, &["--force"]), "notes.txt");
    assert_eq!(std::fs::read(out.join("notes.txt")).unwrap(), b"mine");
}

/// With `--wise`, every folder the run would write is checked before training: an existing
/// `OUT-wiseA` without `--force` stops the run at once, and nothing is written, not even a
/// hidden folder.
#[test]
fn an_existing_wise_folder_stops_the_run_before_anything_is_written() {
    let tmp = tempfile::tempdir().unwrap();
    let pairs = training_folder(&tmp.path().join("photos"), 4);
    let out = tmp.path().join("tuned");
    let wise = tmp.path().join("tuned-wise0.5");
    std::fs::create_dir(&wise).unwrap();
    std::fs::write(wise.join("config.json"), b"{}").unwrap();
    std::fs::write(wise.join("model.safetensors"), b"x").unwrap();
    let output = quick_run(&pairs, &out, &["--wise", "0.5"]);
    fails_naming(output, "tuned-wise0.5 exists; pass --force");
    assert!(!out.exists(), "the fine-tuned model was written");
    assert!(hidden(tmp.path()).is_empty(), "{:?}", hidden(tmp.path()));
    assert_eq!(std::fs::read(wise.join("model.safetensors")).unwrap(), b"x");
    // With --force both are written.
    let report = ok_json(quick_run(&pairs, &out, &["--wise", "0.5", "--force"]));
    assert_eq!(report["wise"][0]["out"].as_str().unwrap(), wise.to_str().unwrap());
    assert!(out.join("model.safetensors").is_file());
    assert!(std::fs::metadata(wise.join("model.safetensors")).unwrap().len() > 1);
}

/// A last batch of a single pair is never a step (its loss is 0, yet AdamW would move the
/// weights): 5 pairs in batches of 2 make 2 steps, the single pair joining the batch before.
#[test]
fn a_single_pair_never_makes_a_training_step() {
    let tmp = tempfile::tempdir().unwrap();
    let pairs = training_folder(&tmp.path().join("photos"), 5);
    let report = ok_json(quick_run(&pairs, &tmp.path().join("tuned"), &["--no-shuffle"]));
    let losses = floats(&report["losses"]);
    assert_eq!(report["steps"], 2, "{report}");
    assert!(losses.iter().all(|&l| l > 0.0), "a step without a contrast: {losses:?}");
}

/// A caption line longer than clipdex reads is refused with its line number, before it is
/// held or tokenised (a 10 MB line once cost the tokenizer close to a gigabyte).
#[test]
fn an_overlong_caption_line_is_refused_with_its_number() {
    let tmp = tempfile::tempdir().unwrap();
    let pairs = training_folder(&tmp.path().join("photos"), 4);
    let mut text = std::fs::read_to_string(&pairs).unwrap();
    text.push_str(&format!("{{\"image\": \"p0.png\", \"text\": \"{}\"}}\n", "long ".repeat(2_000_000)));
    std::fs::write(&pairs, text).unwrap();
    let out = tmp.path().join("tuned");
    fails_naming(quick_run(&pairs, &out, &[]), "pairs.jsonl:5: the line is longer than");
    assert!(!out.exists());
}
