//! InsightFace's ONNX pair (the buffalo_l layout) against insightface 0.7.3 on onnxruntime:
//! tiny random-weight models with the real files' names, inputs and outputs
//! (tests/fixtures/insightface-tiny, tools/make_insightface_fixtures.py), run over the face
//! fixture photos. Boxes within 2 px, keypoints within 1 px, embeddings at cosine >= 0.999;
//! damaged model files are clear errors.

use std::path::{Path, PathBuf};

use clipdex::models::faces::{EmbeddingKind, FaceModel, FaceOptions};

fn models() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/insightface-tiny")
}

fn golden() -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(models().join("golden.json")).unwrap()).unwrap()
}

fn floats(v: &serde_json::Value) -> Vec<f64> {
    v.as_array().unwrap().iter().map(|x| x.as_f64().unwrap()).collect()
}

#[test]
fn scrfd_and_arcface_match_insightface_on_onnxruntime() {
    let mut model = FaceModel::load(&models()).unwrap();
    assert_eq!(model.embedding_kind(), EmbeddingKind::ArcFace);
    assert!(model.id().starts_with("insightface:"), "{}", model.id());
    model.set_options(FaceOptions { min_face: 0, ..FaceOptions::default() });
    let golden = golden();
    let mut compared = 0;
    let (mut worst_box, mut worst_point, mut worst_cosine) = (0f64, 0f64, 1f64);
    for entry in golden["photos"].as_array().unwrap() {
        let name = entry["photo"].as_str().unwrap();
        let photo = image::open(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/faces").join(name))
            .unwrap()
            .to_rgb8();
        let (w, h) = (photo.width() as f64, photo.height() as f64);
        let faces = model.faces(&photo).unwrap();
        // insightface keeps boxes that stick out of the photo; clipdex clips them, and drops
        // boxes left empty.
        let want: Vec<_> = entry["faces"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|f| {
                let b = floats(&f["box"]);
                b[2].min(w) > b[0].max(0.0) && b[3].min(h) > b[1].max(0.0)
            })
            .collect();
        assert_eq!(faces.len(), want.len(), "{name}: {faces:?}");
        for (got, want) in faces.iter().zip(want) {
            let b = floats(&want["box"]);
            let clipped = [b[0].clamp(0.0, w), b[1].clamp(0.0, h), b[2].clamp(0.0, w), b[3].clamp(0.0, h)];
            let corners = [got.bbox[0], got.bbox[1], got.bbox[0] + got.bbox[2], got.bbox[1] + got.bbox[3]];
            for (g, c) in corners.iter().zip(clipped) {
                worst_box = worst_box.max((*g as f64 - c).abs());
                assert!((*g as f64 - c).abs() <= 2.0, "{name}: box {corners:?} vs {clipped:?}");
            }
            assert!((got.score as f64 - want["score"].as_f64().unwrap()).abs() < 1e-3, "{name}: score");
            for (g, p) in got.landmarks.iter().zip(want["landmarks"].as_array().unwrap()) {
                let p = floats(p);
                worst_point = worst_point.max((g[0] as f64 - p[0]).abs()).max((g[1] as f64 - p[1]).abs());
                assert!(
                    (g[0] as f64 - p[0]).abs() <= 1.0 && (g[1] as f64 - p[1]).abs() <= 1.0,
                    "{name}: keypoint {g:?} vs {p:?}"
                );
            }
            let e = floats(&want["embedding"]);
            assert_eq!(got.embedding.len(), 512);
            let dot: f64 = got.embedding.iter().zip(&e).map(|(a, b)| *a as f64 * b).sum();
            let norms = got.embedding.iter().map(|a| (*a as f64).powi(2)).sum::<f64>().sqrt()
                * e.iter().map(|b| b * b).sum::<f64>().sqrt();
            assert!((got.embedding.iter().map(|a| a * a).sum::<f32>() - 1.0).abs() < 1e-4, "normalised");
            worst_cosine = worst_cosine.min(dot / norms);
            assert!(dot / norms >= 0.999, "{name}: cosine {}", dot / norms);
            compared += 1;
        }
    }
    eprintln!(
        "{compared} faces: boxes within {worst_box:.2e} px, keypoints within {worst_point:.2e} px, \
         cosine at least {worst_cosine:.7}"
    );
    assert!(compared >= 40, "only {compared} faces compared");
}

#[test]
fn the_minimum_face_size_applies_to_insightface_boxes() {
    let model = FaceModel::load(&models()).unwrap();
    let photo = image::open(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/faces/astronaut_tilt15.png"))
        .unwrap()
        .to_rgb8();
    let faces = model.faces(&photo).unwrap();
    assert!(!faces.is_empty());
    assert!(faces.iter().all(|f| f.bbox[2].max(f.bbox[3]) >= 40.0), "{faces:?}");
}

#[test]
fn other_buffalo_l_files_are_ignored_and_a_missing_or_damaged_file_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    for file in ["det_10g.onnx", "w600k_r50.onnx"] {
        std::fs::copy(models().join(file), dir.path().join(file)).unwrap();
    }
    std::fs::write(dir.path().join("genderage.onnx"), b"not a model").unwrap();
    std::fs::write(dir.path().join("1k3d68.onnx"), b"").unwrap();
    assert!(FaceModel::load(dir.path()).is_ok());

    // Truncated.
    let bytes = std::fs::read(models().join("w600k_r50.onnx")).unwrap();
    std::fs::write(dir.path().join("w600k_r50.onnx"), &bytes[..bytes.len() / 3]).unwrap();
    let err = FaceModel::load(dir.path()).err().expect("a truncated model is refused").to_string();
    assert!(err.contains("w600k_r50.onnx"), "{err}");

    // Garbage, and an ONNX file of the wrong kind (the embedder where the detector goes).
    std::fs::write(dir.path().join("w600k_r50.onnx"), &bytes).unwrap();
    std::fs::write(dir.path().join("det_10g.onnx"), b"\x08\x07garbage that is no protobuf \xff\xff").unwrap();
    let err = FaceModel::load(dir.path()).err().expect("garbage is refused").to_string();
    assert!(err.contains("det_10g.onnx"), "{err}");
    std::fs::write(dir.path().join("det_10g.onnx"), &bytes).unwrap();
    let err = FaceModel::load(dir.path()).err().expect("a wrong model is refused").to_string();
    assert!(err.contains("9 (scores, boxes and keypoints"), "{err}");

    // One of the pair missing.
    std::fs::remove_file(dir.path().join("det_10g.onnx")).unwrap();
    let err = FaceModel::load(dir.path()).err().expect("half a pair is refused").to_string();
    assert!(err.contains("needs det_10g.onnx and w600k_r50.onnx"), "{err}");
}
