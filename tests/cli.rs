//! The `clipdex` binary as users and scripts call it.

use std::process::{Command, Output};

use serde_json::{Value, json};

mod common;
use common::backends::test_databases;
use common::{cosine, fixtures};

fn model_dir() -> String {
    fixtures().join("clip-tiny-p32").to_string_lossy().into_owned()
}

fn image(name: &str) -> String {
    fixtures().join("images").join(name).to_string_lossy().into_owned()
}

fn clipdex(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_clipdex"))
        .args(args)
        .env("CLIPDEX_DB", "/nonexistent/clipdex-test-db")
        .env_remove("CLIPDEX_MODEL")
        .env_remove("CLIPDEX_DEVICE")
        .output()
        .unwrap()
}

fn golden() -> Value {
    serde_json::from_str(&std::fs::read_to_string(fixtures().join("golden/clip-tiny-p32.json")).unwrap()).unwrap()
}

fn floats(v: &Value) -> Vec<f32> {
    v.as_array().unwrap().iter().map(|x| x.as_f64().unwrap() as f32).collect()
}

#[test]
fn embed_json_matches_the_reference() {
    let m = model_dir();
    let out =
        clipdex(&["embed", "--model", &m, "--text", "a photo of a cat", "--image", &image("coffee.png"), "--json"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let doc: Value = serde_json::from_slice(&out.stdout).unwrap();
    let g = golden();
    assert_eq!(doc["model"], m.as_str());
    assert_eq!(doc["dim"], 24);
    assert!((doc["logit_scale"].as_f64().unwrap() - 100.0).abs() < 0.1);

    let text = &doc["texts"][0];
    assert_eq!(text["text"], "a photo of a cat");
    let gt = g["texts"].as_array().unwrap().iter().find(|t| t["text"] == "a photo of a cat").unwrap();
    assert_eq!(text["ids"], gt["ids"]);
    assert!(cosine(&floats(&text["embedding"]), &floats(&gt["embedding"])) > 0.9999);

    let img = &doc["images"][0];
    assert_eq!(img["path"], image("coffee.png").as_str());
    let gi = g["images"].as_array().unwrap().iter().find(|i| i["file"] == "coffee.png").unwrap();
    let e = floats(&img["embedding"]);
    assert_eq!(e.len(), 24);
    assert!(cosine(&e, &floats(&gi["embedding"])) > 0.9999);
}

#[test]
fn global_options_go_before_or_after_the_command_or_in_the_environment() {
    let m = model_dir();
    let before = clipdex(&["--model", &m, "embed", "--text", "dog", "--json"]);
    let after = clipdex(&["embed", "--text", "dog", "--json", "--model", &m, "--device", "cpu"]);
    let env = Command::new(env!("CARGO_BIN_EXE_clipdex"))
        .args(["embed", "--text", "dog", "--json"])
        .env("CLIPDEX_MODEL", &m)
        .env("CLIPDEX_DEVICE", "cpu")
        .output()
        .unwrap();
    for out in [&before, &after, &env] {
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    }
    let docs: Vec<Value> = [&before, &after, &env].iter().map(|o| serde_json::from_slice(&o.stdout).unwrap()).collect();
    assert_eq!(docs[0], docs[1]);
    assert_eq!(docs[0], docs[2]);
}

#[test]
fn a_bad_image_is_reported_and_the_rest_still_run() {
    let m = model_dir();
    let notes = std::env::temp_dir().join(format!("clipdex-notes-{}.jpg", std::process::id()));
    std::fs::write(&notes, "shopping list: milk, eggs\n").unwrap();
    let out = clipdex(&[
        "embed",
        "--model",
        &m,
        "--json",
        "--image",
        "/no/such/file.jpg",
        "--image",
        notes.to_str().unwrap(),
        "--image",
        &image("astronaut.jpg"),
        "--text",
        "astronaut",
    ]);
    std::fs::remove_file(&notes).unwrap();
    assert_eq!(out.status.code(), Some(1), "partial failure exits 1");
    let doc: Value = serde_json::from_slice(&out.stdout).unwrap();
    let images = doc["images"].as_array().unwrap();
    assert_eq!(images.len(), 3);
    assert!(images[0]["error"].as_str().unwrap().contains("no such file"));
    assert!(images[1]["error"].as_str().unwrap().contains("not an image"));
    assert_eq!(images[2]["embedding"].as_array().unwrap().len(), 24);
    assert_eq!(doc["texts"][0]["embedding"].as_array().unwrap().len(), 24);
    assert!(String::from_utf8_lossy(&out.stderr).contains("2 of 3 images"));
}

#[test]
fn human_output_is_a_short_summary() {
    let out = clipdex(&["embed", "--model", &model_dir(), "--text", "a red car", "--image", &image("rocket.webp")]);
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(text.starts_with("model "), "{text}");
    assert!(text.contains("24-d") && text.contains("logit scale 100.0"), "{text}");
    assert!(text.contains("text \"a red car\": 5 tokens"), "{text}");
    assert!(text.contains("rocket.webp: ["), "{text}");
}

#[test]
fn usage_errors_are_one_clear_line() {
    let out = clipdex(&["embed", "--model", &model_dir()]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("nothing to embed"));

    let out = clipdex(&["embed", "--model", "/no/model/here", "--text", "x"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.contains("/no/model/here"), "{err}");

    let out = clipdex(&["embed", "--device", "tpu", "--text", "x"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("use cpu, cuda or auto"));
}

#[cfg(not(feature = "cuda"))]
#[test]
fn cuda_without_the_feature_says_so() {
    let out = clipdex(&["embed", "--model", &model_dir(), "--device", "cuda", "--text", "x"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("built without CUDA support"));
}

fn clipdex_db(db: &std::ffi::OsStr, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_clipdex"))
        .args(args)
        .env("CLIPDEX_DB", db)
        .env("CLIPDEX_MODEL", model_dir())
        .env_remove("CLIPDEX_DEVICE")
        .env_remove("CLIPDEX_PRECISION")
        .output()
        .unwrap()
}

fn ok_json(out: Output) -> Value {
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).unwrap()
}

#[test]
fn the_library_records_the_precision_of_its_vectors() {
    let tmp = tempfile::tempdir().unwrap();
    let photos = tmp.path().join("photos");
    std::fs::create_dir_all(&photos).unwrap();
    std::fs::copy(image("astronaut.jpg"), photos.join("astronaut.jpg")).unwrap();
    let db = tmp.path().join("db");
    let db = db.as_os_str();
    assert!(clipdex_db(db, &["add", photos.to_str().unwrap()]).status.success());
    ok_json(clipdex_db(db, &["index", "--json"]));
    assert_eq!(ok_json(clipdex_db(db, &["stats", "--json"]))["precisions"], json!(["f32"]));

    // More photos at bf16: the record says both (bf16 only where this CPU runs it).
    for name in ["coffee.png", "rocket.webp", "chelsea_small.bmp"] {
        std::fs::copy(image(name), photos.join(name)).unwrap();
    }
    let report = ok_json(clipdex_db(db, &["index", "--precision", "bf16", "--json"]));
    assert_eq!(report["embedded"], 3);
    let bf16_runs = clipdex::models::precision::Precision::Bf16.effective().to_string();
    let want = if bf16_runs == "bf16" { json!(["f32", "bf16"]) } else { json!(["f32"]) };
    assert_eq!(ok_json(clipdex_db(db, &["stats", "--json"]))["precisions"], want);
    let human = clipdex_db(db, &["stats"]);
    assert!(String::from_utf8_lossy(&human.stdout).contains("precision f32"), "{human:?}");
    let res = ok_json(clipdex_db(db, &["search", "a rocket", "-k", "4", "--precision", "bf16", "--json"]));
    assert_eq!(res["results"].as_array().unwrap().len(), 4);

    // And at int8 (where this CPU runs it): three precisions on record, in the order used.
    std::fs::copy(image("camera_gray.png"), photos.join("camera_gray.png")).unwrap();
    let report = ok_json(clipdex_db(db, &["index", "--precision", "int8", "--json"]));
    assert_eq!(report["embedded"], 1);
    let mut want = want.as_array().unwrap().clone();
    let int8_runs = clipdex::models::precision::Precision::Int8.effective().to_string();
    if !want.contains(&json!(int8_runs)) {
        want.push(json!(int8_runs));
    }
    assert_eq!(ok_json(clipdex_db(db, &["stats", "--json"]))["precisions"], json!(want));

    for bad in ["f16", "int4"] {
        let out = clipdex_db(db, &["stats", "--precision", bad]);
        assert_eq!(out.status.code(), Some(2), "{bad}");
        assert!(String::from_utf8_lossy(&out.stderr).contains("unknown precision"), "{bad}: {out:?}");
    }
}

#[test]
fn library_commands_and_their_json() {
    for test_db in test_databases() {
        let tmp = tempfile::tempdir().unwrap();
        let photos = tmp.path().join("photos");
        std::fs::create_dir_all(photos.join("cats")).unwrap();
        for name in ["astronaut.jpg", "coffee.png", "rocket.webp"] {
            std::fs::copy(image(name), photos.join(name)).unwrap();
        }
        std::fs::copy(image("chelsea_small.bmp"), photos.join("cats/chelsea.bmp")).unwrap();
        std::fs::copy(image("chelsea_exif6.jpg"), photos.join("cats/sideways.jpg")).unwrap();
        std::fs::write(photos.join("broken.jpg"), b"not really").unwrap();
        let db = test_db.arg();
        let photos = std::fs::canonicalize(&photos).unwrap();

        let out = clipdex_db(&db, &["add", photos.to_str().unwrap()]);
        assert!(out.status.success());
        let roots = ok_json(clipdex_db(&db, &["roots", "--json"]));
        assert_eq!(roots["roots"][0], photos.to_str().unwrap());

        let report = ok_json(clipdex_db(&db, &["index", "--json"]));
        assert_eq!((report["embedded"].as_u64(), report["failed"].as_u64()), (Some(5), Some(1)));

        let res = ok_json(clipdex_db(&db, &["search", "a cat", "-k", "3", "--json"]));
        let results = res["results"].as_array().unwrap();
        assert_eq!(results.len(), 3);
        for r in results {
            assert!(r["id"].is_u64() && r["path"].is_string() && r["score"].is_f64(), "{r}");
        }
        assert!(res["took_ms"].as_f64().unwrap() >= 0.0);

        let cats = photos.join("cats");
        let res =
            ok_json(clipdex_db(&db, &["search", "a cat", "-k", "5", "--under", cats.to_str().unwrap(), "--json"]));
        let results = res["results"].as_array().unwrap();
        assert_eq!(results.len(), 2);
        assert!(results.iter().all(|r| r["path"].as_str().unwrap().starts_with(cats.to_str().unwrap())));

        // Similar: the query image may live outside the library; a copy of an indexed photo finds it.
        let outside = tmp.path().join("query.png");
        std::fs::copy(photos.join("coffee.png"), &outside).unwrap();
        let res = ok_json(clipdex_db(&db, &["similar", outside.to_str().unwrap(), "-k", "1", "--json"]));
        assert_eq!(res["results"][0]["path"], photos.join("coffee.png").to_str().unwrap());

        let stats = ok_json(clipdex_db(&db, &["stats", "--json"]));
        for (key, want) in [("images", 5), ("paths", 5), ("vectors", 5), ("failures", 1), ("roots", 1)] {
            assert_eq!(stats[key].as_u64(), Some(want), "{key} in {stats}");
        }
        assert_eq!(stats["index"]["tombstones"].as_u64(), Some(0));
        assert_eq!(stats["model"], model_dir().as_str());

        let failures = ok_json(clipdex_db(&db, &["failures", "--json"]));
        assert_eq!(failures["failures"][0]["path"], photos.join("broken.jpg").to_str().unwrap());
        assert!(failures["failures"][0]["reason"].as_str().unwrap().contains("not an image"));
        assert_eq!(failures["failures"][0]["attempts"], 1);

        // Bad requests: k out of range, a bad date, another model.
        let out = clipdex_db(&db, &["search", "x", "-k", "0"]);
        assert!(!out.status.success());
        let out = clipdex_db(&db, &["search", "x", "--after", "last tuesday"]);
        assert_eq!(out.status.code(), Some(1));
        assert!(String::from_utf8_lossy(&out.stderr).contains("bad date"));
        let other = fixtures().join("clip-tiny-p16");
        let out = clipdex_db(&db, &["stats", "--model", other.to_str().unwrap()]);
        assert_eq!(out.status.code(), Some(1));
        assert!(String::from_utf8_lossy(&out.stderr).contains("holds vectors of model"));

        // Named the long way round, it is removed and printed as the library records it.
        let roundabout = photos.join("..").join(photos.file_name().unwrap()).join(".");
        let out = clipdex_db(&db, &["remove", roundabout.to_str().unwrap()]);
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        let printed = String::from_utf8_lossy(&out.stdout);
        let canonical = photos.canonicalize().unwrap();
        assert!(printed.starts_with(&format!("removed {} (", canonical.display())), "{printed}");
        let stats = ok_json(clipdex_db(&db, &["stats", "--json"]));
        assert_eq!((stats["images"].as_u64(), stats["failures"].as_u64()), (Some(0), Some(0)));
    }
}

#[test]
fn watch_follows_new_and_deleted_files() {
    use std::io::BufRead;
    use std::sync::mpsc;
    use std::time::Duration;

    for test_db in test_databases() {
        let tmp = tempfile::tempdir().unwrap();
        let photos = tmp.path().join("photos");
        std::fs::create_dir_all(&photos).unwrap();
        std::fs::copy(image("astronaut.jpg"), photos.join("a.jpg")).unwrap();
        std::fs::copy(image("coffee.png"), photos.join("b.png")).unwrap();
        let db = test_db.arg();
        assert!(clipdex_db(&db, &["add", photos.to_str().unwrap()]).status.success());

        let mut child = Command::new(env!("CARGO_BIN_EXE_clipdex"))
            .args(["watch", "--json", "--debounce-ms", "300", "--rescan-secs", "3600"])
            .env("CLIPDEX_DB", &db)
            .env("CLIPDEX_MODEL", model_dir())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        let (tx, rx) = mpsc::channel::<Value>();
        let stdout = child.stdout.take().unwrap();
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(stdout).lines().map_while(Result::ok) {
                if let Ok(v) = serde_json::from_str(&line) {
                    let _ = tx.send(v);
                }
            }
        });
        let wait_for = |what: &str, pred: &dyn Fn(&Value) -> bool| {
            let deadline = std::time::Instant::now() + Duration::from_secs(60);
            while std::time::Instant::now() < deadline {
                if let Ok(report) = rx.recv_timeout(Duration::from_millis(200))
                    && pred(&report)
                {
                    return report;
                }
            }
            panic!("no pass with {what} within 60 s");
        };
        wait_for("the first two photos", &|r| r["embedded"] == 2);
        std::fs::copy(image("rocket.webp"), photos.join("c.webp")).unwrap();
        wait_for("the new photo", &|r| r["embedded"] == 1);
        std::fs::remove_file(photos.join("a.jpg")).unwrap();
        wait_for("the deleted photo", &|r| r["removed"] == 1);
        child.kill().unwrap();
        child.wait().unwrap();
        let stats = ok_json(clipdex_db(&db, &["stats", "--json"]));
        assert_eq!((stats["images"].as_u64(), stats["paths"].as_u64()), (Some(2), Some(2)));
    }
}

#[test]
fn tag_and_describe_print_ranked_labels() {
    let m = model_dir();
    let out = clipdex(&[
        "tag",
        "--model",
        &m,
        &image("astronaut.jpg"),
        "/no/such.png",
        "--labels",
        "cat, dog,astronaut",
        "--json",
    ]);
    assert_eq!(out.status.code(), Some(1), "one image failed");
    let doc: Value = serde_json::from_slice(&out.stdout).unwrap();
    let labels = doc["images"][0]["labels"].as_array().unwrap();
    assert_eq!(labels.len(), 3);
    let probs: Vec<f64> = labels.iter().map(|l| l["probability"].as_f64().unwrap()).collect();
    assert!((probs.iter().sum::<f64>() - 1.0).abs() < 1e-4);
    assert!(probs.windows(2).all(|w| w[0] >= w[1]));
    assert!(labels.iter().all(|l| l["label"].is_string() && l["cosine"].is_f64()));
    assert!(doc["images"][1]["error"].as_str().unwrap().contains("no such file"));

    // The built-in vocabulary with the photo ensemble; --top limits the list.
    let out = clipdex(&["tag", "--model", &m, &image("coffee.png"), "--templates", "photo", "--top", "5", "--json"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let doc: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(doc["images"][0]["labels"].as_array().unwrap().len(), 5);

    let out = clipdex(&["tag", "--model", &m, &image("coffee.png"), "--labels", "cat", "--template", "no placeholder"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("has no {}"));

    let vocab = std::env::temp_dir().join(format!("clipdex-vocab-{}.txt", std::process::id()));
    std::fs::write(&vocab, "# mine\nespresso\n\nlatte\nespresso\n").unwrap();
    let out = clipdex(&["describe", "--model", &m, &image("coffee.png"), "--vocab", vocab.to_str().unwrap(), "--json"]);
    std::fs::remove_file(&vocab).unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let doc: Value = serde_json::from_slice(&out.stdout).unwrap();
    let labels: Vec<&str> = doc["labels"].as_array().unwrap().iter().map(|l| l["label"].as_str().unwrap()).collect();
    assert_eq!(labels.len(), 2);
    assert!(labels.contains(&"espresso") && labels.contains(&"latte"));
}

#[test]
fn autotag_tags_and_tag_search_from_the_command_line() {
    for test_db in test_databases() {
        let tmp = tempfile::tempdir().unwrap();
        let photos = tmp.path().join("photos");
        std::fs::create_dir_all(&photos).unwrap();
        for name in ["coffee.png", "rocket.webp", "chelsea_small.bmp", "camera_gray.png", "coffee_palette.gif"] {
            std::fs::copy(image(name), photos.join(name)).unwrap();
        }
        let db = test_db.arg();
        assert!(clipdex_db(&db, &["add", photos.to_str().unwrap()]).status.success());
        ok_json(clipdex_db(&db, &["index", "--json"]));
        let out = clipdex_db(&db, &["search", "--tag", "rocket"]);
        assert!(out.status.success());
        assert!(String::from_utf8_lossy(&out.stdout).contains("no results"), "no tags before autotag");

        let vocab = tmp.path().join("vocab.txt");
        std::fs::write(&vocab, "cat\ndog\nrocket\ncup of coffee\ncamera\n").unwrap();
        let report = ok_json(clipdex_db(
            &db,
            &["autotag", "--vocab", vocab.to_str().unwrap(), "--templates", "single", "--prior-ratio", "1", "--json"],
        ));
        assert_eq!((report["images"].as_u64(), report["tagged"].as_u64()), (Some(5), Some(5)));
        assert_eq!(report["labels_embedded"].as_u64(), Some(5));
        assert_eq!(report["labels"].as_u64(), Some(5));
        assert!((report["threshold"].as_f64().unwrap() - 0.2).abs() < 1e-6);
        // The settings are remembered: a second run has nothing to do.
        let again = ok_json(clipdex_db(&db, &["autotag", "--json"]));
        assert_eq!((again["tagged"].as_u64(), again["unchanged"].as_u64()), (Some(0), Some(5)));
        assert_eq!(again["labels_embedded"].as_u64(), Some(0));

        let tags = ok_json(clipdex_db(&db, &["tags", "--json"]));
        let tags = tags["tags"].as_array().unwrap();
        assert!(!tags.is_empty());
        let total: u64 = tags.iter().map(|t| t["count"].as_u64().unwrap()).sum();
        assert_eq!(Some(total), report["tags"].as_u64());
        let (label, count) = (tags[0]["label"].as_str().unwrap(), tags[0]["count"].as_u64().unwrap());

        let res = ok_json(clipdex_db(&db, &["search", "--tag", label, "-k", "50", "--json"]));
        assert_eq!(res["results"].as_array().unwrap().len() as u64, count);
        let res = ok_json(clipdex_db(&db, &["search", "a photo", "--tag", label, "-k", "1", "--json"]));
        assert_eq!(res["results"].as_array().unwrap().len(), 1);

        // describe keeps the embeddings of its vocabulary in a library of the same model.
        let stats = ok_json(clipdex_db(&db, &["stats", "--json"]));
        assert_eq!(stats["cached_labels"].as_u64(), Some(5));
        assert_eq!(stats["tags"].as_u64(), Some(total));
        assert_eq!(stats["tagged"].as_u64(), Some(5));
        let described = ok_json(clipdex_db(&db, &["describe", &image("coffee.png"), "-k", "3", "--json"]));
        assert_eq!(described["labels"].as_array().unwrap().len(), 3);
        let stats = ok_json(clipdex_db(&db, &["stats", "--json"]));
        let built_in =
            5 + clipdex::query::tags::parse_vocabulary(clipdex::query::tags::DEFAULT_VOCABULARY).len() as u64;
        assert_eq!(stats["cached_labels"].as_u64(), Some(built_in));

        // Neither text nor tag is a usage error; a bad ratio is refused.
        let out = clipdex_db(&db, &["search"]);
        assert_eq!(out.status.code(), Some(2));
        let out = clipdex_db(&db, &["autotag", "--prior-ratio=0"]);
        assert_eq!(out.status.code(), Some(1));
        assert!(String::from_utf8_lossy(&out.stderr).contains("--prior-ratio"));
    }
}

#[test]
fn reindex_moves_the_library_to_another_model() {
    for test_db in test_databases() {
        let tmp = tempfile::tempdir().unwrap();
        let photos = tmp.path().join("photos");
        std::fs::create_dir_all(&photos).unwrap();
        for name in ["coffee.png", "rocket.webp", "astronaut.jpg"] {
            std::fs::copy(image(name), photos.join(name)).unwrap();
        }
        let db = test_db.arg();
        assert!(clipdex_db(&db, &["add", photos.to_str().unwrap()]).status.success());
        ok_json(clipdex_db(&db, &["index", "--json"]));
        let p16 = fixtures().join("clip-tiny-p16").to_string_lossy().into_owned();
        let report = ok_json(clipdex_db(&db, &["reindex", "--model", &p16, "--json"]));
        assert_eq!(report["from"], model_dir().as_str());
        assert_eq!(report["to"], p16.as_str());
        assert_eq!((report["embedded"].as_u64(), report["resumed"].as_u64()), (Some(3), Some(0)));
        assert_eq!((report["failed"].as_u64(), report["tagged"].as_u64()), (Some(0), Some(0)));

        // The library now answers with the new model only.
        let stats = ok_json(clipdex_db(&db, &["stats", "--model", &p16, "--json"]));
        assert_eq!(stats["model"], p16.as_str());
        assert!(stats["reindex"].is_null());
        let res = ok_json(clipdex_db(&db, &["search", "a rocket", "--model", &p16, "--json"]));
        assert_eq!(res["results"].as_array().unwrap().len(), 3);
        let out = clipdex_db(&db, &["stats"]);
        assert_eq!(out.status.code(), Some(1));
        assert!(String::from_utf8_lossy(&out.stderr).contains("holds vectors of model"));
        let out = clipdex_db(&db, &["reindex", "--model", &p16]);
        assert_eq!(out.status.code(), Some(1));
        assert!(String::from_utf8_lossy(&out.stderr).contains("already uses"));
    }
}

/// Runs the binary on library `db` with no --model anywhere (flag or environment).
fn clipdex_without_model(db: &std::path::Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_clipdex"))
        .arg("--db")
        .arg(db)
        .args(args)
        .env_remove("CLIPDEX_MODEL")
        .env_remove("CLIPDEX_DEVICE")
        .output()
        .unwrap()
}

#[test]
fn commands_use_the_library_model_and_take_ids_or_paths() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("db");
    let photos = dir.path().join("photos");
    std::fs::create_dir(&photos).unwrap();
    for name in ["coffee.png", "chelsea_exif6.jpg", "astronaut.jpg"] {
        std::fs::copy(image(name), photos.join(name)).unwrap();
    }
    // Indexed with a model that is not the default...
    let p16 = fixtures().join("clip-tiny-p16").to_string_lossy().into_owned();
    let with = |args: &[&str]| {
        let mut all = vec!["--db", db.to_str().unwrap(), "--model", p16.as_str()];
        all.extend_from_slice(args);
        clipdex(&all)
    };
    // A model that cannot be one is refused when the library is set up; the model given to
    // `add` is the library's from then on, before any photo is embedded.
    let nowhere = dir.path().join("no-such-model");
    let refused = clipdex(&["--db", db.to_str().unwrap(), "--model", nowhere.to_str().unwrap(), "add", "."]);
    assert!(String::from_utf8_lossy(&refused.stderr).contains("no such directory"), "{refused:?}");
    assert!(with(&["add", photos.to_str().unwrap()]).status.success());
    ok_json(clipdex_without_model(&db, &["index", "--json"]));
    let stats = ok_json(clipdex_without_model(&db, &["stats", "--json"]));
    assert!(stats["model"].as_str().unwrap().ends_with("clip-tiny-p16"), "{stats}");

    // ... every later command runs without --model, on the library's model.
    let found = ok_json(clipdex_without_model(&db, &["search", "a cup of coffee", "--json"]));
    let results = found["results"].as_array().unwrap();
    assert_eq!(results.len(), 3);
    let (id, path) = (results[0]["id"].as_u64().unwrap(), results[0]["path"].as_str().unwrap().to_string());
    let same = ok_json(with(&["search", "a cup of coffee", "--json"]));
    assert_eq!(same["results"], found["results"], "the library's model, not the default, answered");

    // Text output gives each result's id.
    let text = clipdex_without_model(&db, &["search", "a cup of coffee"]);
    assert!(text.status.success(), "{}", String::from_utf8_lossy(&text.stderr));
    let first = String::from_utf8_lossy(&text.stdout).lines().next().unwrap().to_string();
    assert!(first.ends_with(&format!("  #{id}")), "{first}");

    // `show` by id, by #id and by path: the same photo.
    for spec in [id.to_string(), format!("#{id}"), path.clone()] {
        let shown = ok_json(clipdex_without_model(&db, &["show", &spec, "--json"]));
        assert_eq!(shown["id"].as_u64(), Some(id), "show {spec}");
    }
    // `similar` by id gives the other photos, the photo itself left out.
    let like = ok_json(clipdex_without_model(&db, &["similar", &id.to_string(), "--json"]));
    let ids: Vec<u64> = like["results"].as_array().unwrap().iter().map(|r| r["id"].as_u64().unwrap()).collect();
    assert!(!ids.is_empty() && !ids.contains(&id), "{like}");
    // Unknown ids and files outside the library are one clear line each.
    for (args, says) in [
        (vec!["show", "99999999"], "no image with id 99999999"),
        (vec!["similar", "#99999999"], "no image with id 99999999"),
        (vec!["show", image("coffee.png").leak()], "is not in the library"),
        (vec!["show", "IMG_0001.jpg"], "no such file, and not an image id"),
    ] {
        let out = clipdex_without_model(&db, &args);
        assert!(!out.status.success(), "{args:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(says), "{args:?}: {err}");
    }
    // A --model that disagrees with the library is still refused, and reindex needs one.
    let other = clipdex(&["--db", db.to_str().unwrap(), "--model", &model_dir(), "search", "x"]);
    assert!(String::from_utf8_lossy(&other.stderr).contains("holds vectors of model"));
    let reindex = clipdex_without_model(&db, &["reindex"]);
    assert!(String::from_utf8_lossy(&reindex.stderr).contains("name it with --model"));
}

fn help_text(args: &[&str]) -> String {
    let out = clipdex(args);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap()
}

/// Where a command's line of the root help starts (two spaces, the name, padding).
fn listed_at(help: &str, name: &str) -> usize {
    help.lines()
        .scan(0, |at, line| {
            let here = *at;
            *at += line.len() + 1;
            Some((here, line))
        })
        .find(|(_, line)| {
            line.strip_prefix("  ").and_then(|l| l.strip_prefix(name)).is_some_and(|r| r.starts_with("  "))
        })
        .map(|(at, _)| at)
        .unwrap_or_else(|| panic!("`{name}` is not listed in:\n{help}"))
}

#[test]
fn help_lists_the_commands_by_task_in_the_order_a_user_meets_them() {
    let help = help_text(&["--help"]);
    assert_eq!(help, help_text(&["help"]));
    let headings: Vec<usize> = ["Library:", "Search:", "Models:", "Maintenance:", "Options:"]
        .iter()
        .map(|h| help.find(&format!("\n{h}\n")).unwrap_or_else(|| panic!("no {h} heading in:\n{help}")))
        .collect();
    assert!(headings.windows(2).all(|w| w[0] < w[1]), "{help}");
    let order = ["add", "index", "watch", "serve", "search", "similar", "tag", "caption", "ask", "stats"];
    let at: Vec<usize> = order.iter().map(|name| listed_at(&help, name)).collect();
    assert!(at.windows(2).all(|w| w[0] < w[1]), "{help}");
    assert!(headings[0] < at[0] && at[3] < headings[1] && at[5] < headings[2] && at[8] < headings[3], "{help}");
    // Every listed command is one the binary runs, and clap's own list is not printed twice.
    let names: Vec<&str> = help[..headings[4]]
        .lines()
        .filter_map(|l| l.strip_prefix("  ").filter(|l| !l.starts_with(' ')))
        .filter_map(|l| l.split_whitespace().next())
        .collect();
    assert!(names.len() >= 27, "{names:?}");
    for name in &names {
        assert_eq!(names.iter().filter(|n| *n == name).count(), 1, "{name} listed twice");
        assert!(clipdex(&[name, "--help"]).status.success(), "`clipdex {name} --help` fails");
    }
    assert!(!help.contains("\nCommands:\n"), "{help}");
    // One short line a command: the list fits a terminal of 80 columns.
    for line in help[headings[0]..headings[4]].lines() {
        assert!(line.chars().count() <= 80, "too long for the list: {line:?}");
    }
}

#[test]
fn a_commands_help_shows_only_the_global_options_it_uses() {
    let search = help_text(&["search", "--help"]);
    for unused in ["--video-interval", "--video-max-frames", "--caption-model", "--vqa-model"] {
        assert!(!search.contains(unused), "search --help lists {unused}:\n{search}");
    }
    for used in ["--model", "--db", "--seg-model", "--itm-model", "--max-pixels", "--under", "--tag", "--json"] {
        assert!(search.contains(used), "search --help lacks {used}:\n{search}");
    }
    let index = help_text(&["index", "--help"]);
    assert!(index.contains("--video-interval") && index.contains("--batch-size"), "{index}");
    assert!(!index.contains("--seg-model") && !index.contains("--itm-model"), "{index}");
    let ask = help_text(&["ask", "--help"]);
    assert!(ask.contains("--vqa-model") && !ask.contains("--db") && !ask.contains("--seg-model"), "{ask}");
    let stats = help_text(&["stats", "--help"]);
    assert!(stats.contains("--db") && !stats.contains("--precision"), "{stats}");
    // The root still lists them all.
    let root = help_text(&["--help"]);
    assert!(root.contains("--video-interval") && root.contains("--vqa-model"), "{root}");
}

#[test]
fn global_options_a_command_ignores_are_still_accepted() {
    // Scripts that pass every global option to every command keep working.
    let out = clipdex(&[
        "embed",
        "--text",
        "dog",
        "--json",
        "--model",
        &model_dir(),
        "--video-interval",
        "3",
        "--seg-model",
        "x",
        "--db",
        "/nonexistent/other",
    ]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let doc: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(doc["texts"].as_array().unwrap().len(), 1);
    let bad = clipdex(&["embed", "--text", "dog", "--video-interval", "0"]);
    assert_eq!(bad.status.code(), Some(2), "a hidden option's value is still checked");
}

#[test]
fn help_search_ends_with_three_examples() {
    for args in [&["help", "search"][..], &["search", "--help"], &["search", "-h"]] {
        let help = help_text(args);
        let (_, examples) = help.rsplit_once("\nExamples:\n").unwrap_or_else(|| panic!("no examples:\n{help}"));
        let commands: Vec<&str> = examples.lines().map(str::trim).filter(|l| l.starts_with("clipdex search")).collect();
        assert_eq!(commands.len(), 3, "{examples}");
        assert!(examples.lines().all(|l| l.trim().is_empty() || l.starts_with("  ")), "{examples}");
    }
}

#[test]
fn ocr_says_when_a_photo_has_no_text() {
    // `--ocr-model none` reads nothing: every photo is one without text.
    let out = clipdex(&["ocr", "--ocr-model", "none", &image("astronaut.jpg")]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(text, format!("{}:\n  (no text found)\n", image("astronaut.jpg")));
    // JSON keeps the empty list.
    let out = clipdex(&["ocr", "--ocr-model", "none", "--json", &image("astronaut.jpg")]);
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v[0]["lines"], json!([]), "{v}");
}
