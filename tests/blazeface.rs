//! MediaPipe's BlazeFace detectors (tools/fetch_blazeface_models.sh) against TensorFlow Lite
//! running the same files with MediaPipe's pre- and post-processing
//! (tools/make_blazeface_goldens.py): the raw outputs on a fixed input, and the detections on
//! the face fixtures, the face-cluster set and turned and mirrored copies. Without the models
//! the tests say so and pass, unless `CI` is set.

use std::path::{Path, PathBuf};

use clipdex::models::faces::{BlazeFace, FULL_RANGE_FILE, SHORT_RANGE_FILE};
use image::RgbImage;

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// Where tools/fetch_blazeface_models.sh puts the models (or `CLIPDEX_BLAZEFACE_MODELS`).
fn models_dir() -> PathBuf {
    std::env::var_os("CLIPDEX_BLAZEFACE_MODELS").map(PathBuf::from).unwrap_or_else(|| {
        let cache = std::env::var_os("XDG_CACHE_HOME")
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from(std::env::var_os("HOME").unwrap_or_default()).join(".cache"));
        cache.join("clipdex-ci/blazeface-models")
    })
}

fn models() -> Option<[(&'static str, BlazeFace); 2]> {
    let dir = models_dir();
    if !dir.join(SHORT_RANGE_FILE).is_file() {
        if std::env::var_os("CI").is_some() {
            panic!(
                "CI is set but the BlazeFace models are not in {}: run tools/fetch_blazeface_models.sh",
                dir.display()
            );
        }
        eprintln!("skipped: no BlazeFace models in {} (run tools/fetch_blazeface_models.sh)", dir.display());
        return None;
    }
    let load = |f: &str| BlazeFace::load(&dir.join(f)).expect("the BlazeFace model loads");
    Some([("short", load(SHORT_RANGE_FILE)), ("full", load(FULL_RANGE_FILE))])
}

fn golden(name: &str) -> serde_json::Value {
    let path = root().join("tests/fixtures/blazeface").join(name);
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

#[test]
fn raw_outputs_match_tensorflow_lite() {
    let Some(models) = models() else { return };
    let raw = golden("raw.json");
    for (name, model) in &models {
        let want = &raw[name];
        let input = image::open(root().join("tests/fixtures/blazeface").join(want["input"].as_str().unwrap()))
            .unwrap()
            .to_rgb8();
        let tensor: Vec<f32> = input.as_raw().iter().map(|&v| v as f32 * (2.0 / 255.0) - 1.0).collect();
        let (regressors, scores) = model.raw(tensor).unwrap();
        // Differences relative to the value's size past 1: logits and pixel offsets run to about
        // 100, where float32 sums in another order differ in the 6th digit.
        let (mut worst, mut worst_abs) = (0f64, 0f64);
        let mut compare = |got: f32, want: f64| {
            let d = (got as f64 - want).abs();
            worst_abs = worst_abs.max(d);
            worst = worst.max(d / want.abs().max(1.0));
        };
        for (got, want) in scores.iter().zip(want["scores"].as_array().unwrap()) {
            compare(*got, want.as_f64().unwrap());
        }
        assert_eq!(scores.len(), want["scores"].as_array().unwrap().len());
        for (anchor, values) in want["regressors"].as_object().unwrap() {
            let i: usize = anchor.parse().unwrap();
            for (k, v) in values.as_array().unwrap().iter().enumerate() {
                compare(regressors[i * 16 + k], v.as_f64().unwrap());
            }
        }
        eprintln!("{name}: largest difference to TensorFlow Lite {worst_abs:.2e}, relative {worst:.2e}");
        assert!(worst < 1e-4, "{name}: raw outputs differ from TensorFlow Lite by {worst}");
    }
}

/// The photo a golden names: a fixture, or a turned or mirrored copy of it (`#ccw90`, ...).
fn photo(key: &str) -> RgbImage {
    let (path, variant) = key.split_once('#').unwrap_or((key, ""));
    let img = image::open(root().join(path)).unwrap().to_rgb8();
    match variant {
        "" => img,
        "ccw90" => image::imageops::rotate270(&img),
        "rot180" => image::imageops::rotate180(&img),
        "flip" => image::imageops::flip_horizontal(&img),
        other => panic!("unknown variant {other}"),
    }
}

#[test]
fn detections_match_mediapipe_within_two_pixels() {
    let Some(models) = models() else { return };
    let goldens = golden("detections.json");
    let mut failures = Vec::new();
    let (mut faces, mut worst) = (0, 0f64);
    for (name, model) in &models {
        for (key, want) in goldens[name].as_object().unwrap() {
            let got = model.detect(&photo(key)).unwrap();
            let want = want.as_array().unwrap();
            if got.len() != want.len() {
                failures.push(format!("{name} {key}: {} faces, MediaPipe finds {}: {got:?}", got.len(), want.len()));
                continue;
            }
            for (g, w) in got.iter().zip(want) {
                faces += 1;
                let wb: Vec<f64> = w["box"].as_array().unwrap().iter().map(|v| v.as_f64().unwrap()).collect();
                let mut d = (0..4).map(|k| (g.bbox[k] as f64 - wb[k]).abs()).fold(0f64, f64::max);
                for (gk, wk) in g.keypoints.iter().zip(w["keypoints"].as_array().unwrap()) {
                    for c in 0..2 {
                        d = d.max((gk[c] as f64 - wk[c].as_f64().unwrap()).abs());
                    }
                }
                worst = worst.max(d);
                if d > 2.0 || (g.score as f64 - w["score"].as_f64().unwrap()).abs() > 0.02 {
                    failures.push(format!("{name} {key}: {g:?}, MediaPipe {w}"));
                }
            }
        }
    }
    eprintln!("{faces} faces compared; largest box or keypoint difference {worst:.3} px");
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn truncated_or_altered_model_files_give_errors_never_panics() {
    let dir = models_dir();
    let Ok(bytes) = std::fs::read(dir.join(SHORT_RANGE_FILE)) else {
        eprintln!("skipped: no BlazeFace models in {}", dir.display());
        return;
    };
    for len in (0..bytes.len()).step_by(4099).chain([1, 7, 8, 9, 16, 64, 1000, bytes.len() - 1]) {
        let err = BlazeFace::from_bytes(&bytes[..len], "cut.tflite").err().expect("a cut file is refused");
        assert!(err.to_string().contains("cut.tflite"), "{err}");
    }
    let photo = RgbImage::from_pixel(40, 30, image::Rgb([200, 150, 120]));
    let (mut state, mut loaded) = (0x2545_f491_4f6c_dd1du64, 0);
    // Bit flips in the first 64 KB (the graph's tables and the first weights) and anywhere.
    for round in 0..400 {
        let mut altered = bytes.clone();
        for _ in 0..1 + round % 3 {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            let span = if round % 2 == 0 { 65_536.min(altered.len()) } else { altered.len() };
            let at = (state >> 8) as usize % span;
            altered[at] ^= 1 << (state % 8);
        }
        if let Ok(model) = BlazeFace::from_bytes(&altered, "altered.tflite") {
            loaded += 1;
            // Running it may fail (with an error) or find nonsense; it must not panic.
            if loaded <= 12 {
                let _ = model.detect(&photo);
            }
        }
    }
    eprintln!("{loaded} of 400 altered files still loaded");
}

/// Where tools/fetch_face_models.sh puts dlib's models (or `CLIPDEX_FACE_MODELS`).
fn dlib_dir() -> PathBuf {
    std::env::var_os("CLIPDEX_FACE_MODELS").map(PathBuf::from).unwrap_or_else(|| {
        let cache = std::env::var_os("XDG_CACHE_HOME")
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from(std::env::var_os("HOME").unwrap_or_default()).join(".cache"));
        cache.join("clipdex-ci/face-models")
    })
}

/// BlazeFace's boxes, then dlib's landmarks and embedding, on the face-cluster set
/// (tests/fixtures/face-clusters): every face dlib's Python bindings find is found, its
/// embedding near dlib's own, and the grouping at the defaults as good as with dlib's detector.
/// Prints the recall against dlib and the time per photo of both detectors (debug build).
#[test]
#[ignore = "runs dlib's embedding on 51 faces and dlib's detector on 47 photos: minutes in a debug build"]
fn blazeface_boxes_with_dlib_embeddings_group_the_cluster_set() {
    use clipdex::models::faces::FaceModel;
    use clipdex::query::people::{ClusterOptions, FacePoint, Placement, pairwise_precision_recall, place_faces};
    let Some([(_, short), _]) = models() else { return };
    let dir = dlib_dir();
    if !dir.join(clipdex::models::faces::DETECTOR_FILE).is_file() {
        eprintln!("skipped: no dlib face models in {}", dir.display());
        return;
    }
    let dlib = FaceModel::load(&dir).unwrap();
    let blaze = FaceModel::load(&dir).unwrap().with_blazeface(short);
    assert_ne!(dlib.id(), blaze.id());
    let set: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(root().join("tests/fixtures/face-clusters/set.json")).unwrap())
            .unwrap();
    let (mut truth, mut ours, mut names) = (Vec::new(), Vec::new(), std::collections::BTreeMap::new());
    let (mut wanted, mut found, mut extra, mut worst) = (0, 0, 0, 1f64);
    let (mut t_blaze, mut t_dlib) = (std::time::Duration::ZERO, std::time::Duration::ZERO);
    let detector_only = BlazeFace::load(&models_dir().join(SHORT_RANGE_FILE)).unwrap();
    let mut t_detect = std::time::Duration::ZERO;
    for (photo, entry) in set["photos"].as_object().unwrap() {
        let img = image::open(root().join("tests/fixtures/face-clusters").join(photo)).unwrap().to_rgb8();
        let t = std::time::Instant::now();
        let _ = detector_only.detect(&img).unwrap();
        t_detect += t.elapsed();
        let t = std::time::Instant::now();
        let faces = blaze.faces(&img).unwrap();
        t_blaze += t.elapsed();
        let t = std::time::Instant::now();
        let _ = dlib.faces(&img).unwrap();
        t_dlib += t.elapsed();
        let mut used = vec![false; faces.len()];
        for want in entry["faces"].as_array().unwrap() {
            wanted += 1;
            let b: Vec<f32> = want["box"].as_array().unwrap().iter().map(|v| v.as_f64().unwrap() as f32).collect();
            let (cx, cy) = (b[0] + b[2] / 2.0, b[1] + b[3] / 2.0);
            let Some(i) = faces.iter().position(|g| {
                ((g.bbox[0] + g.bbox[2] / 2.0) - cx).abs() < b[2] / 2.0
                    && ((g.bbox[1] + g.bbox[3] / 2.0) - cy).abs() < b[3] / 2.0
            }) else {
                eprintln!("{photo}: dlib's face {b:?} not found by BlazeFace");
                continue;
            };
            found += 1;
            used[i] = true;
            let e: Vec<f64> = want["embedding"].as_array().unwrap().iter().map(|v| v.as_f64().unwrap()).collect();
            let g = &faces[i].embedding;
            let dot: f64 = g.iter().zip(&e).map(|(a, b)| *a as f64 * b).sum();
            let cosine = dot
                / (g.iter().map(|a| (*a as f64).powi(2)).sum::<f64>().sqrt()
                    * e.iter().map(|b| b * b).sum::<f64>().sqrt());
            worst = worst.min(cosine);
            let n = names.len();
            truth.push(*names.entry(want["person"].as_str().unwrap().to_string()).or_insert(n));
            ours.push(g.clone());
        }
        extra += used.iter().filter(|u| !**u).count();
    }
    let points: Vec<FacePoint> =
        ours.iter().enumerate().map(|(i, e)| FacePoint { id: i as u64, embedding: e, person: None }).collect();
    let mut grouped = vec![None; ours.len()];
    for (face, placement) in place_faces(&points, &std::collections::HashSet::new(), &ClusterOptions::default()) {
        if let Placement::NewPerson(g) = placement {
            grouped[face as usize] = Some(g);
        }
    }
    let (p, r) = pairwise_precision_recall(&truth, &grouped);
    let photos = set["photos"].as_object().unwrap().len() as f64;
    println!(
        "BlazeFace (short range) + dlib: {found} of dlib's {wanted} faces found, {extra} others; worst cosine to \
         dlib's embedding {worst:.4}; grouping precision {p:.4}, recall {r:.4}; photos/s with BlazeFace {:.2}, \
         with dlib's detector {:.2} (whole pipeline, this build); BlazeFace's detection alone {:.1} photos/s",
        photos / t_blaze.as_secs_f64(),
        photos / t_dlib.as_secs_f64(),
        photos / t_detect.as_secs_f64()
    );
    assert!(found as f64 >= 0.95 * wanted as f64, "{found} of {wanted}");
    assert!(p >= 0.95 && r >= 0.9, "precision {p:.4}, recall {r:.4}");
}

/// `blazeface:DIR` opens dlib's files and BlazeFace's from one folder, changes the model's id
/// (so a library finds faces again) and finds the face of a portrait; a folder without the
/// .tflite file is refused with its name.
#[test]
fn a_blazeface_spec_opens_both_models_from_one_folder() {
    use clipdex::models::faces::FaceModel;
    let (dlib, blaze) = (dlib_dir(), models_dir());
    if !dlib.join(clipdex::models::faces::DETECTOR_FILE).is_file() || !blaze.join(SHORT_RANGE_FILE).is_file() {
        eprintln!("skipped: no dlib or BlazeFace models");
        return;
    }
    let both = tempfile::tempdir().unwrap();
    for dir in [&dlib, &blaze] {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.extension().is_some_and(|e| e == "dat" || e == "tflite") {
                std::fs::copy(&path, both.path().join(path.file_name().unwrap())).unwrap();
            }
        }
    }
    let dir = both.path().to_str().unwrap();
    let model = FaceModel::open(&format!("blazeface:{dir}")).unwrap();
    assert!(model.id().starts_with("blazeface:"), "{}", model.id());
    assert_ne!(model.id(), FaceModel::open(dir).unwrap().id());
    let faces = model.faces(&image::open(root().join("tests/fixtures/faces/obama.png")).unwrap().to_rgb8()).unwrap();
    assert_eq!(faces.len(), 1, "{faces:?}");
    assert_eq!(faces[0].embedding.len(), 128);
    let [x, y, w, h] = faces[0].bbox;
    assert!(x > 80.0 && y > 20.0 && w > 60.0 && h > 60.0 && x + w < 230.0, "{:?}", faces[0].bbox);

    std::fs::remove_file(both.path().join(SHORT_RANGE_FILE)).unwrap();
    let err = FaceModel::open(&format!("blazeface:{dir}")).err().expect("refused").to_string();
    assert!(err.contains(SHORT_RANGE_FILE), "{err}");
}

/// The library records `blazeface:DIR` as its face model once DIR holds both dlib's detector and
/// the .tflite file (the folder part made canonical, the detector part kept), and refuses it,
/// naming the missing file, before.
#[test]
fn the_library_records_a_blazeface_face_model() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join(clipdex::models::faces::DETECTOR_FILE), b"x").unwrap();
    let spec = format!("blazeface:{}", dir.path().display());
    let mut settings = clipdex::library::Settings::default();
    let refused = settings.set("face_model", Some(&spec)).unwrap_err().to_string();
    assert!(refused.contains(SHORT_RANGE_FILE), "{refused}");
    std::fs::write(dir.path().join(SHORT_RANGE_FILE), b"x").unwrap();
    settings.set("face_model", Some(&spec)).unwrap();
    let canonical = std::fs::canonicalize(dir.path()).unwrap();
    assert_eq!(settings.face_model_dir(), Some(format!("blazeface:{}", canonical.display()).as_str()));
    let refused = settings.set("face_model", Some(&format!("blazeface-full:{}", dir.path().display()))).unwrap_err();
    assert!(refused.to_string().contains(FULL_RANGE_FILE), "{refused}");
}
