//! How well faces are grouped into persons, on real faces: the set of
//! `tests/fixtures/face-clusters/` (tools/make_face_cluster_set.py) holds augmented photos of
//! four known people (crops, face sizes, mirror images, small rotations, lighting, noise, JPEG
//! quality, two people side by side) and what dlib's Python bindings find in each (box, person,
//! embedding). The library's grouping (as `people --recluster` runs it: every face placed
//! afresh) is measured by pairwise precision and recall against who each face is.

use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};

use clipdex::query::people::{ClusterOptions, FacePoint, Placement, pairwise_precision_recall, place_faces};

fn set_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/face-clusters")
}

/// A face of the set: its photo, its box, who it is (None: no one of the set), its embedding.
struct Face {
    photo: String,
    bbox: [f32; 4],
    person: Option<String>,
    embedding: Vec<f32>,
}

fn set() -> (serde_json::Value, Vec<Face>) {
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(set_dir().join("set.json")).unwrap()).unwrap();
    let mut faces = Vec::new();
    for (photo, entry) in json["photos"].as_object().unwrap() {
        for f in entry["faces"].as_array().unwrap() {
            let num = |v: &serde_json::Value| v.as_f64().unwrap() as f32;
            let b: Vec<f32> = f["box"].as_array().unwrap().iter().map(num).collect();
            faces.push(Face {
                photo: photo.clone(),
                bbox: [b[0], b[1], b[2], b[3]],
                person: f["person"].as_str().map(str::to_owned),
                embedding: f["embedding"].as_array().unwrap().iter().map(num).collect(),
            });
        }
    }
    (json, faces)
}

/// Who each face is, as numbers: the set's people first, a face of no one alone.
fn truth(faces: &[Face]) -> Vec<usize> {
    let mut ids: BTreeMap<String, usize> = BTreeMap::new();
    faces
        .iter()
        .enumerate()
        .map(|(i, f)| {
            let key = f.person.clone().unwrap_or_else(|| format!("{}#{i}", f.photo));
            let n = ids.len();
            *ids.entry(key).or_insert(n)
        })
        .collect()
}

/// The library's grouping of `embeddings` from scratch (nothing placed, no corrections): each
/// face's new person, or None for a face left waiting.
fn group(embeddings: &[&[f32]], options: &ClusterOptions) -> Vec<Option<usize>> {
    let points: Vec<FacePoint> =
        embeddings.iter().enumerate().map(|(i, e)| FacePoint { id: i as u64, embedding: e, person: None }).collect();
    let mut grouped = vec![None; embeddings.len()];
    for (face, placement) in place_faces(&points, &HashSet::new(), options) {
        match placement {
            Placement::NewPerson(g) => grouped[face as usize] = Some(g),
            Placement::Person(p) => panic!("face {face} joined person {p}, but none existed"),
        }
    }
    grouped
}

/// Per person of the set: its faces, and into how many persons they went (and how many waited).
fn breakdown(faces: &[Face], grouped: &[Option<usize>]) -> String {
    let mut by: BTreeMap<&str, (usize, HashSet<usize>, usize)> = BTreeMap::new();
    for (f, g) in faces.iter().zip(grouped) {
        let e = by.entry(f.person.as_deref().unwrap_or("(no one)")).or_default();
        e.0 += 1;
        match g {
            Some(g) => {
                e.1.insert(*g);
            }
            None => e.2 += 1,
        }
    }
    by.iter()
        .map(|(who, (n, gs, waiting))| format!("{who}: {n} faces in {} persons, {waiting} waiting\n", gs.len()))
        .collect()
}

/// At the defaults (0.5, 3), on dlib's embeddings of the set (clipdex's are within cosine
/// 0.999 of them: tests/faces.rs): no two people mixed up, and most pairs of one person found.
/// The figures are in docs/src/people-library.md.
#[test]
fn real_faces_group_into_their_people_at_the_defaults() {
    let (json, faces) = set();
    assert!(faces.len() >= 40, "the set holds {} faces", faces.len());
    let people: HashSet<&str> = faces.iter().filter_map(|f| f.person.as_deref()).collect();
    assert_eq!(people.len(), 4, "{people:?}");
    let embeddings: Vec<&[f32]> = faces.iter().map(|f| f.embedding.as_slice()).collect();
    let grouped = group(&embeddings, &ClusterOptions::default());
    let (precision, recall) = pairwise_precision_recall(&truth(&faces), &grouped);
    println!(
        "{} faces in {} photos; defaults {:?}: pairwise precision {precision:.4}, recall {recall:.4} \
         (dlib's own rule, {}: {} / {})\n{}",
        faces.len(),
        json["photos"].as_object().unwrap().len(),
        ClusterOptions::default(),
        json["reference"]["rule"],
        json["reference"]["precision"],
        json["reference"]["recall"],
        breakdown(&faces, &grouped)
    );
    assert!(precision >= PRECISION_FLOOR, "precision {precision:.4}\n{}", breakdown(&faces, &grouped));
    assert!(recall >= RECALL_FLOOR, "recall {recall:.4}\n{}", breakdown(&faces, &grouped));
}

/// What the defaults measure on the set (1.0 and 1.0 today), less a margin: one face of the
/// 51 put in the wrong person costs precision about 0.03; a face left waiting costs recall
/// about 0.03.
const PRECISION_FLOOR: f64 = 0.95;
const RECALL_FLOOR: f64 = 0.9;

/// The table behind the defaults: both parameters swept on the set (printed; run with
/// `cargo test --test face_clusters -- --ignored --nocapture`).
#[test]
#[ignore = "prints the parameter sweep of docs/src/people-library.md"]
fn cluster_parameters_swept_on_real_faces() {
    let (_, faces) = set();
    let truth = truth(&faces);
    let embeddings: Vec<&[f32]> = faces.iter().map(|f| f.embedding.as_slice()).collect();
    println!("| max_distance | min_faces | precision | recall | F1 | persons | waiting |");
    println!("| --- | --- | --- | --- | --- | --- | --- |");
    for max_distance in [0.35f32, 0.4, 0.45, 0.5, 0.55, 0.6, 0.65] {
        for min_faces in [2usize, 3, 4, 5] {
            let grouped = group(&embeddings, &ClusterOptions { max_distance, min_faces });
            let (p, r) = pairwise_precision_recall(&truth, &grouped);
            let persons: HashSet<usize> = grouped.iter().flatten().copied().collect();
            let waiting = grouped.iter().filter(|g| g.is_none()).count();
            println!(
                "| {max_distance:.2} | {min_faces} | {p:.3} | {r:.3} | {:.3} | {} | {waiting} |",
                2.0 * p * r / (p + r).max(1e-9),
                persons.len()
            );
        }
    }
}

/// Where tools/fetch_face_models.sh puts the models (or `CLIPDEX_FACE_MODELS`).
fn models_dir() -> PathBuf {
    std::env::var_os("CLIPDEX_FACE_MODELS").map(PathBuf::from).unwrap_or_else(|| {
        let cache = std::env::var_os("XDG_CACHE_HOME")
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from(std::env::var_os("HOME").unwrap_or_default()).join(".cache"));
        cache.join("clipdex-ci/face-models")
    })
}

/// clipdex's own faces of the set: each of dlib's faces found, and the grouping of clipdex's
/// embeddings as good as dlib's. On a PNG the pixels are dlib's: box within 2 px, embedding at
/// cosine >= 0.999. A JPEG is decoded by the `image` crate here and by libjpeg (Pillow) for
/// dlib, which differ by a level here and there: box within 4 px, cosine >= 0.99. Ignored by
/// default: 47 photos through the detector take minutes in a debug build.
#[test]
#[ignore = "runs clipdex's face model on every photo of the set: minutes in a debug build"]
fn clipdex_finds_and_groups_the_set_as_dlib_does() {
    let dir = models_dir();
    if !dir.join(clipdex::models::faces::DETECTOR_FILE).is_file() {
        eprintln!("skipped: no face models in {} (run tools/fetch_face_models.sh)", dir.display());
        return;
    }
    let model = clipdex::models::faces::FaceModel::load(&dir).unwrap();
    let (_, faces) = set();
    let mut ours: Vec<Vec<f32>> = Vec::new();
    let mut photos: Vec<&str> = faces.iter().map(|f| f.photo.as_str()).collect();
    photos.dedup();
    let (mut worst_png, mut worst_jpeg) = (1.0f64, 1.0f64);
    for photo in photos {
        let img = image::open(set_dir().join(photo)).unwrap().to_rgb8();
        let found = model.faces(&img).unwrap();
        let png = photo.ends_with(".png");
        let (near, least) = if png { (2.0, 0.999) } else { (4.0, 0.99) };
        for want in faces.iter().filter(|f| f.photo == photo) {
            let got = found
                .iter()
                .find(|g| (0..4).all(|k| (g.bbox[k] - want.bbox[k]).abs() <= near))
                .unwrap_or_else(|| panic!("{photo}: dlib's face {:?} not found in {:?}", want.bbox, found));
            let dot: f64 = got.embedding.iter().zip(&want.embedding).map(|(a, b)| (*a as f64) * (*b as f64)).sum();
            let norm = |v: &[f32]| v.iter().map(|x| (*x as f64).powi(2)).sum::<f64>().sqrt();
            let cosine = dot / (norm(&got.embedding) * norm(&want.embedding));
            let worst = if png { &mut worst_png } else { &mut worst_jpeg };
            *worst = worst.min(cosine);
            assert!(cosine >= least, "{photo}: cosine {cosine}");
            ours.push(got.embedding.clone());
        }
    }
    let embeddings: Vec<&[f32]> = ours.iter().map(Vec::as_slice).collect();
    let grouped = group(&embeddings, &ClusterOptions::default());
    let (p, r) = pairwise_precision_recall(&truth(&faces), &grouped);
    println!(
        "clipdex's embeddings: worst cosine to dlib {worst_png:.6} on PNG, {worst_jpeg:.6} on JPEG; \
         precision {p:.4}, recall {r:.4}"
    );
    assert!(p >= PRECISION_FLOOR && r >= RECALL_FLOOR, "precision {p:.4}, recall {r:.4}");
}
