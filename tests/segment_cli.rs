//! `clipdex segment`, `search --crops` and `crop-search` through the binary, on the tiny
//! CLIP and CLIPSeg fixtures.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_json::Value;

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

fn seg_model() -> String {
    fixtures().join("clipseg/clipseg-tiny-refined").to_string_lossy().into_owned()
}

fn clipdex(db: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_clipdex"))
        .args(["--db", db.to_str().unwrap()])
        .args(["--model", fixtures().join("clip-tiny-p32").to_str().unwrap()])
        .args(["--seg-model", &seg_model()])
        .args(args)
        .output()
        .unwrap()
}

fn ok_json(out: Output) -> Value {
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).unwrap()
}

fn fails_with(out: Output, needle: &str) {
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains(needle), "{err:?} lacks {needle:?}");
}

#[test]
fn segment_writes_masks_overlays_and_crops_per_prompt() {
    let tmp = tempfile::tempdir().unwrap();
    let out_dir = tmp.path().join("out");
    let image = fixtures().join("images/chelsea_exif6.jpg");
    let example = fixtures().join("images/rocket.webp");
    let doc = ok_json(clipdex(
        tmp.path(),
        &[
            "segment",
            image.to_str().unwrap(),
            "--prompt",
            "a cat",
            "--prompt",
            "coffee",
            "--example",
            example.to_str().unwrap(),
            "--threshold",
            "0.5",
            "--out",
            out_dir.to_str().unwrap(),
            "--json",
        ],
    ));
    let (w, h) = (doc["width"].as_u64().unwrap() as u32, doc["height"].as_u64().unwrap() as u32);
    // Upright: EXIF orientation 6 turns the stored 300 x 451 into 451 x 300.
    assert_eq!((w, h), (451, 300));
    let prompts = doc["prompts"].as_array().unwrap();
    assert_eq!(prompts.len(), 3);
    assert_eq!(prompts[0]["prompt"], "a cat");
    assert_eq!(prompts[2]["example"].as_str().unwrap(), example.to_str().unwrap());
    for (i, p) in prompts.iter().enumerate() {
        assert_eq!(p["index"].as_u64(), Some(i as u64));
        let mask_path = PathBuf::from(p["mask"].as_str().unwrap());
        assert_eq!(mask_path, out_dir.join(format!("chelsea_exif6.{i}.mask.png")));
        let mask = image::open(&mask_path).unwrap();
        assert_eq!(mask.color(), image::ColorType::L8, "8-bit grayscale");
        assert_eq!((mask.width(), mask.height()), (w, h), "at the image's own resolution");
        let overlay = image::open(p["overlay"].as_str().unwrap()).unwrap();
        assert_eq!((overlay.width(), overlay.height()), (w, h));
        let mask = mask.to_luma8();
        let above = mask.pixels().filter(|px| px.0[0] as f32 / 255.0 >= 0.5).count() as f32 / (w * h) as f32;
        let regions = p["regions"].as_array().unwrap();
        let covered: f64 = regions.iter().map(|r| r["area"].as_f64().unwrap()).sum();
        assert!(covered <= above as f64 + 0.01, "regions cover at most the pixels over the threshold");
        for r in regions {
            let b: Vec<u32> = r["box"].as_array().unwrap().iter().map(|v| v.as_u64().unwrap() as u32).collect();
            assert!(b[0] + b[2] <= w && b[1] + b[3] <= h, "box inside the image: {b:?}");
            let crop = image::open(r["crop"].as_str().unwrap()).unwrap();
            assert_eq!((crop.width(), crop.height()), (b[2], b[3]));
            let p = r["mean_probability"].as_f64().unwrap();
            assert!((0.5..=1.0).contains(&p));
        }
    }
    // The prompts see different things.
    let a = std::fs::read(out_dir.join("chelsea_exif6.0.mask.png")).unwrap();
    let b = std::fs::read(out_dir.join("chelsea_exif6.1.mask.png")).unwrap();
    assert_ne!(a, b);
}

#[test]
fn segment_refuses_bad_input_clearly() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("out");
    let image = fixtures().join("images/coffee.png");
    let (img, dir) = (image.to_str().unwrap(), out.to_str().unwrap());
    fails_with(clipdex(tmp.path(), &["segment", img, "--out", dir]), "nothing to look for");
    fails_with(clipdex(tmp.path(), &["segment", "/no/such.jpg", "--prompt", "x", "--out", dir]), "/no/such.jpg");
    fails_with(
        clipdex(tmp.path(), &["segment", img, "--prompt", "x", "--threshold", "1.5", "--out", dir]),
        "probability",
    );
    fails_with(clipdex(tmp.path(), &["segment", img, "--prompt", " ", "--out", dir]), "empty prompt");
    let text = tmp.path().join("notes.jpg");
    std::fs::write(&text, "not a picture").unwrap();
    fails_with(
        clipdex(tmp.path(), &["segment", text.to_str().unwrap(), "--prompt", "x", "--out", dir]),
        "not an image",
    );
    let clip = fixtures().join("clip-tiny-p32");
    let out = Command::new(env!("CARGO_BIN_EXE_clipdex"))
        .args(["--seg-model", clip.to_str().unwrap(), "segment", img, "--prompt", "x", "--out", dir])
        .output()
        .unwrap();
    fails_with(out, "not CLIPSeg");
}

#[test]
fn search_with_crops_and_crop_search() {
    let tmp = tempfile::tempdir().unwrap();
    let photos = tmp.path().join("photos");
    std::fs::create_dir_all(&photos).unwrap();
    for name in ["astronaut.jpg", "coffee.png", "chelsea_exif6.jpg", "rocket.webp"] {
        std::fs::copy(fixtures().join("images").join(name), photos.join(name)).unwrap();
    }
    let db = tmp.path().join("db");
    assert!(clipdex(&db, &["add", photos.to_str().unwrap()]).status.success());
    assert!(clipdex(&db, &["index"]).status.success());

    let doc = ok_json(clipdex(&db, &["search", "a cat", "-k", "3", "--crops", "--threshold", "0.3", "--json"]));
    let results = doc["results"].as_array().unwrap();
    assert_eq!(results.len(), 3);
    for r in results {
        assert!(r["id"].is_u64() && r["path"].is_string() && r["score"].is_f64());
        let region = &r["region"];
        if !region.is_null() {
            let b: Vec<u64> = region["box"].as_array().unwrap().iter().map(|v| v.as_u64().unwrap()).collect();
            let upright =
                clipdex::photo::open_rgb(Path::new(r["path"].as_str().unwrap()), &Default::default()).unwrap();
            assert!(b[0] + b[2] <= upright.width() as u64 && b[1] + b[3] <= upright.height() as u64);
            assert!(region["mean_probability"].as_f64().unwrap() >= 0.3);
        }
    }
    assert!(results.iter().any(|r| !r["region"].is_null()), "some result has a region: {doc}");
    fails_with(clipdex(&db, &["search", "--tag", "cat", "--crops"]), "QUERY");

    let crops_dir = tmp.path().join("crops");
    let doc = ok_json(clipdex(
        &db,
        &["crop-search", "a cat", "-k", "2", "--threshold", "0.3", "--out", crops_dir.to_str().unwrap(), "--json"],
    ));
    let crops = doc["crops"].as_array().unwrap();
    assert!(!crops.is_empty() && crops.len() <= 2, "{doc}");
    let probabilities: Vec<f64> = crops.iter().map(|c| c["mean_probability"].as_f64().unwrap()).collect();
    assert!(probabilities.windows(2).all(|w| w[0] >= w[1]), "most probable first");
    for c in crops {
        let file = c["crop"].as_str().unwrap();
        let img = image::open(file).unwrap();
        assert_eq!(img.width() as u64, c["box"][2].as_u64().unwrap());
        assert_eq!(img.height() as u64, c["box"][3].as_u64().unwrap());
    }
    // Its own folder takes more crops; the library's database folder or the photos do not.
    ok_json(clipdex(&db, &["crop-search", "a cat", "-k", "1", "--out", crops_dir.to_str().unwrap(), "--json"]));
    let before = std::fs::read_dir(&db).unwrap().count();
    fails_with(
        clipdex(&db, &["crop-search", "a cat", "-k", "1", "--out", db.to_str().unwrap()]),
        "library database (sled/",
    );
    assert_eq!(std::fs::read_dir(&db).unwrap().count(), before, "nothing was written into the database folder");
    // Nor the library's folders, or a new folder inside one (its crops would be indexed).
    let inside = photos.join("crops");
    for dir in [&photos, &inside] {
        fails_with(
            clipdex(&db, &["crop-search", "a cat", "-k", "1", "--out", dir.to_str().unwrap()]),
            "overlaps the library folder",
        );
    }
    assert!(!inside.exists());
    assert_eq!(std::fs::read_dir(&photos).unwrap().count(), 4);
}

/// `segment --out` writes into a new or empty folder, or one it wrote before; a folder that
/// holds other files (the photos themselves, say) is refused, naming them, before any work.
#[test]
fn segment_out_refuses_a_folder_of_other_files() {
    let tmp = tempfile::tempdir().unwrap();
    let photos = tmp.path().join("photos");
    std::fs::create_dir_all(&photos).unwrap();
    let image = photos.join("coffee.png");
    std::fs::copy(fixtures().join("images/coffee.png"), &image).unwrap();
    let (img, dir) = (image.to_str().unwrap(), photos.to_str().unwrap());
    fails_with(clipdex(tmp.path(), &["segment", img, "--prompt", "a cup", "--out", dir]), "coffee.png");
    assert_eq!(std::fs::read_dir(&photos).unwrap().count(), 1, "nothing was written beside the photo");
    // A new folder, and the same one again.
    let out = tmp.path().join("masks");
    for _ in 0..2 {
        ok_json(clipdex(tmp.path(), &["segment", img, "--prompt", "a cup", "--out", out.to_str().unwrap(), "--json"]));
    }
    assert!(out.join("coffee.0.mask.png").is_file());
    // A link planted where an output goes is replaced, not followed out of the folder.
    let outside = tmp.path().join("notes.txt");
    std::fs::write(&outside, b"mine").unwrap();
    std::fs::remove_file(out.join("coffee.0.mask.png")).unwrap();
    std::os::unix::fs::symlink(&outside, out.join("coffee.0.mask.png")).unwrap();
    ok_json(clipdex(tmp.path(), &["segment", img, "--prompt", "a cup", "--out", out.to_str().unwrap(), "--json"]));
    assert_eq!(std::fs::read(&outside).unwrap(), b"mine");
    assert!(!out.join("coffee.0.mask.png").symlink_metadata().unwrap().file_type().is_symlink());
}
