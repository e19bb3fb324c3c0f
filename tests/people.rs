//! People on every backend: faces stored per image, grouped into persons, named, merged,
//! hidden, split and corrected, searched by person; the user's decisions checked against a
//! simple model through random operations, reclusterings and face model changes.
//!
//! The faces come from fake face models: each picture's faces (how many, where, who) follow
//! from its index, and each identity's embeddings lie around a centre of
//! [`synthetic_faces`]'s scale. The second model's embeddings live in another space
//! (coordinates permuted and shifted) and its boxes are a pixel off, as a new model's would be.
//!
//! `CLIPDEX_PEOPLE_STEPS` sets the number of random steps (default 300) and
//! `CLIPDEX_PEOPLE_SEED` the seed (a failure prints both).

mod common;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::Path;

use clipdex::library::{FaceFinder, FoundFace};
use clipdex::query::people::synthetic_faces;
use clipdex::store::{FaceScan, ImageId, NewFace, PersonId};
use clipdex::{Library, LibraryConfig};
use common::backends::{TestDb, test_databases};
use common::{Rng, picture};

const IDENTITIES: usize = 5;
const FACE_SIDE: f32 = 36.0;

fn model() -> String {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/clip-tiny-p32").to_string_lossy().into_owned()
}

/// A library of `n` indexed pictures; their ids in the order of their files.
fn library_of(db: &TestDb, dir: &Path, n: u32) -> (Library, Vec<ImageId>) {
    std::fs::create_dir_all(dir).unwrap();
    for i in 0..n {
        picture(i).save(dir.join(format!("p{i:02}.png"))).unwrap();
    }
    let lib = Library::open(LibraryConfig::new(db.location.clone(), model())).unwrap();
    lib.add_root(dir).unwrap();
    lib.index(&|_, _| {}).unwrap();
    let root = std::fs::canonicalize(dir).unwrap();
    let ids = (0..n).map(|i| lib.store().path_entry(&root.join(format!("p{i:02}.png"))).unwrap().unwrap().id).collect();
    (lib, ids)
}

/// The identities in picture `i`: 1 to 3 faces.
fn identities_in(i: usize) -> Vec<usize> {
    let n = 1 + (i * 7 + 3) % 3;
    (0..n).map(|k| (i * 3 + k * 2) % IDENTITIES).collect()
}

/// A fake face model: `version` 1 or 2 (another embedding space, boxes a pixel off).
struct Faces {
    centres: Vec<Vec<f32>>,
}

impl Faces {
    fn new() -> Self {
        // One face of each identity from the synthetic set: far apart, as persons are.
        let (mut faces, truth) = synthetic_faces(IDENTITIES, 1, 7);
        assert_eq!(truth[..IDENTITIES], (0..IDENTITIES).collect::<Vec<_>>());
        faces.truncate(IDENTITIES);
        Faces { centres: faces }
    }

    /// The faces of picture `i` as model `version` finds them.
    fn of(&self, i: usize, version: u32) -> Vec<FoundFace> {
        let shift = if version == 2 { 1.0 } else { 0.0 };
        identities_in(i)
            .into_iter()
            .enumerate()
            .map(|(k, who)| {
                let mut rng = Rng((i as u64 + 1) * 1_000_003 + k as u64 * 7919 + u64::from(version));
                let mut embedding: Vec<f32> =
                    self.centres[who].iter().map(|c| c + 0.02 * (rng.unit() * 2.0 - 1.0)).collect();
                if version == 2 {
                    embedding.rotate_left(17);
                    for v in &mut embedding {
                        *v += 0.3;
                    }
                }
                let x = 20.0 + 45.0 * k as f32 + shift;
                FoundFace {
                    bbox: [x, 30.0 + shift, FACE_SIDE, FACE_SIDE],
                    score: 0.9 - 0.1 * k as f32,
                    landmarks: [
                        [x + 10.0, 40.0],
                        [x + 26.0, 40.0],
                        [x + 18.0, 50.0],
                        [x + 12.0, 58.0],
                        [x + 24.0, 58.0],
                    ],
                    embedding,
                }
            })
            .collect()
    }
}

fn new_faces(found: Vec<FoundFace>) -> Vec<NewFace> {
    found
        .into_iter()
        .map(|f| NewFace {
            bbox: f.bbox,
            score: f.score,
            landmarks: f.landmarks,
            embedding: f.embedding,
            person: None,
            pinned: false,
        })
        .collect()
}

/// Which face of its picture a stored face is (from its box).
fn slot(bbox: &[f32; 4]) -> usize {
    ((bbox[0] - 20.0) / 45.0).round() as usize
}

type FaceKey = (usize, usize);

/// What must hold whatever grouping does: the user's decisions.
#[derive(Default, Debug)]
struct Model {
    /// Faces the user placed, and where.
    pinned: BTreeMap<FaceKey, PersonId>,
    names: BTreeMap<PersonId, String>,
    hidden: HashSet<PersonId>,
    /// Face F is not person P.
    not: HashSet<(FaceKey, PersonId)>,
}

/// The stored faces by key: (face id, person, pinned).
fn faces_now(lib: &Library, ids: &[ImageId]) -> BTreeMap<FaceKey, (u64, Option<PersonId>, bool)> {
    let mut out = BTreeMap::new();
    for (i, &id) in ids.iter().enumerate() {
        for f in lib.store().faces_of(id).unwrap() {
            out.insert((i, slot(&f.face.bbox)), (f.id, f.face.person, f.face.pinned));
        }
    }
    out
}

fn check(lib: &Library, ids: &[ImageId], model: &Model, context: &str) {
    let faces = faces_now(lib, ids);
    for (key, person) in &model.pinned {
        let (_, p, pinned) = faces[key];
        assert!(
            p == Some(*person) && pinned,
            "{context}: face {key:?} should be pinned to {person}, is {p:?} {pinned}"
        );
    }
    let persons = lib.store().persons().unwrap();
    let named: BTreeMap<PersonId, String> = persons.iter().filter_map(|p| Some((p.id, p.name.clone()?))).collect();
    assert_eq!(named, model.names, "{context}: names");
    let hidden: HashSet<PersonId> = persons.iter().filter(|p| p.hidden).map(|p| p.id).collect();
    assert_eq!(hidden, model.hidden, "{context}: hidden persons");
    for (key, person) in &model.not {
        assert_ne!(faces[key].1, Some(*person), "{context}: face {key:?} was marked as not {person}");
    }
    let problems = lib.store().check().unwrap();
    assert!(problems.is_empty(), "{context}: {problems:?}");
}

fn scan(version: u32, lib: &Library, id: ImageId) -> FaceScan {
    FaceScan { model: format!("fake-{version}"), hash: lib.store().image(id).unwrap().unwrap().hash }
}

/// Finds every picture's faces with model `version` (the decisions carried over by box).
fn detect_all(lib: &Library, ids: &[ImageId], faces: &Faces, version: u32) {
    for (i, &id) in ids.iter().enumerate() {
        lib.store_found_faces(id, &scan(version, lib, id), new_faces(faces.of(i, version))).unwrap();
    }
    lib.place_pending_faces().unwrap();
}

#[test]
fn user_decisions_survive_random_operations_reclustering_and_model_changes() {
    let steps: usize = std::env::var("CLIPDEX_PEOPLE_STEPS").ok().and_then(|s| s.parse().ok()).unwrap_or(300);
    let seed: u64 = std::env::var("CLIPDEX_PEOPLE_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or(42);
    let faces = Faces::new();
    for db in test_databases() {
        let tmp = tempfile::tempdir().unwrap();
        let (lib, ids) = library_of(&db, &tmp.path().join("photos"), 12);
        let mut version = 1;
        detect_all(&lib, &ids, &faces, version);
        // The fake faces are clean clusters: grouping finds the identities exactly.
        let now = faces_now(&lib, &ids);
        let mut person_of = HashMap::new();
        for ((i, k), (_, person, _)) in &now {
            let who = identities_in(*i)[*k];
            let person = person.unwrap_or_else(|| panic!("{}: face {i}/{k} not grouped", db.backend));
            assert_eq!(*person_of.entry(who).or_insert(person), person, "{}: identity {who} split", db.backend);
        }
        assert_eq!(person_of.values().collect::<HashSet<_>>().len(), IDENTITIES, "{}: identities merged", db.backend);

        let mut model = Model::default();
        let mut rng = Rng(seed);
        for step in 0..steps {
            let context =
                format!("{} step {step} (CLIPDEX_PEOPLE_SEED={seed} CLIPDEX_PEOPLE_STEPS={steps})", db.backend);
            let now = faces_now(&lib, &ids);
            let persons: Vec<PersonId> = lib.store().persons().unwrap().iter().map(|p| p.id).collect();
            let members = |p: PersonId| -> Vec<FaceKey> {
                now.iter().filter(|(_, (_, q, _))| *q == Some(p)).map(|(k, _)| *k).collect()
            };
            let op = rng.below(100);
            match op {
                0..=19 if !persons.is_empty() => {
                    let p = *rng.pick(&persons).unwrap();
                    let name = format!("Person {step}");
                    lib.name_person(p, &name).unwrap();
                    model.names.insert(p, name);
                    for k in members(p) {
                        model.pinned.insert(k, p);
                    }
                }
                20..=34 if persons.len() >= 2 => {
                    let a = *rng.pick(&persons).unwrap();
                    let b = *rng.pick(&persons).unwrap();
                    if a == b {
                        assert!(lib.merge_people(a, b).is_err(), "{context}: a merge into itself");
                        continue;
                    }
                    lib.merge_people(a, b).unwrap();
                    let joined: HashSet<FaceKey> = members(a).into_iter().chain(members(b)).collect();
                    for k in &joined {
                        model.pinned.insert(*k, a);
                    }
                    if let Some(name) = model.names.remove(&b) {
                        model.names.entry(a).or_insert(name);
                    }
                    if model.hidden.remove(&b) {
                        model.hidden.insert(a);
                    }
                    let not: Vec<(FaceKey, PersonId)> = model.not.drain().collect();
                    for (k, p) in not {
                        let p = if p == b { a } else { p };
                        if !(p == a && joined.contains(&k)) {
                            model.not.insert((k, p));
                        }
                    }
                }
                35..=44 if !persons.is_empty() => {
                    let p = *rng.pick(&persons).unwrap();
                    let hide = rng.below(3) > 0;
                    lib.hide_person(p, hide).unwrap();
                    if hide {
                        model.hidden.insert(p);
                    } else {
                        model.hidden.remove(&p);
                    }
                    for k in members(p) {
                        model.pinned.insert(k, p);
                    }
                }
                45..=59 => {
                    let keys: Vec<FaceKey> = now.keys().copied().collect();
                    let key = *rng.pick(&keys).unwrap();
                    let (face, old, _) = now[&key];
                    let new = lib.split_face(face).unwrap();
                    model.pinned.insert(key, new);
                    if let Some(old) = old {
                        model.not.insert((key, old));
                    }
                }
                60..=74 if !persons.is_empty() => {
                    let keys: Vec<FaceKey> = now.keys().copied().collect();
                    let key = *rng.pick(&keys).unwrap();
                    // Mostly the face's own person (the usual correction), sometimes another.
                    let p = match now[&key].1 {
                        Some(p) if rng.below(4) > 0 => p,
                        _ => *rng.pick(&persons).unwrap(),
                    };
                    lib.not_person(now[&key].0, p).unwrap();
                    model.not.insert((key, p));
                    if model.pinned.get(&key) == Some(&p) {
                        model.pinned.remove(&key);
                    }
                }
                75..=84 => {
                    lib.recluster().unwrap();
                }
                85..=92 => {
                    version = 3 - version;
                    detect_all(&lib, &ids, &faces, version);
                }
                _ => {
                    lib.place_pending_faces().unwrap();
                }
            }
            check(&lib, &ids, &model, &context);
        }
        // A last reclustering and model change lose nothing either.
        lib.recluster().unwrap();
        check(&lib, &ids, &model, &format!("{}: final recluster", db.backend));
        detect_all(&lib, &ids, &faces, 3 - version);
        check(&lib, &ids, &model, &format!("{}: final model change", db.backend));
        assert!(!model.names.is_empty() && !model.not.is_empty(), "the random steps exercised names and corrections");
    }
}

/// The images holding a face of `person`.
fn images_of(lib: &Library, ids: &[ImageId], person: PersonId) -> HashSet<ImageId> {
    ids.iter()
        .copied()
        .filter(|&id| lib.store().faces_of(id).unwrap().iter().any(|f| f.face.person == Some(person)))
        .collect()
}

/// The fake model as a [`FaceFinder`]: it recognises the test pictures by their pixels.
struct PixelFinder {
    faces: Faces,
    version: u32,
    pictures: Vec<image::RgbImage>,
}

impl FaceFinder for PixelFinder {
    fn id(&self) -> String {
        format!("pixel-finder-{}", self.version)
    }

    fn faces(&self, photo: &image::RgbImage) -> clipdex::Result<Vec<FoundFace>> {
        match self.pictures.iter().position(|p| p == photo) {
            Some(i) => Ok(self.faces.of(i, self.version)),
            None => Err(clipdex::Error::Invalid("not a test picture".into())),
        }
    }
}

#[test]
fn face_pass_search_by_person_and_forget() {
    for db in test_databases() {
        let tmp = tempfile::tempdir().unwrap();
        let n = 9;
        let (lib, ids) = library_of(&db, &tmp.path().join("photos"), n);
        let pictures = (0..n).map(picture).collect();
        let mut finder = PixelFinder { faces: Faces::new(), version: 1, pictures };
        let report = lib.find_faces(&finder).unwrap();
        let expected: usize = (0..n as usize).map(|i| identities_in(i).len()).sum();
        assert_eq!((report.scanned, report.faces, report.failed.len()), (n as usize, expected, 0), "{}", db.backend);
        // An identity seen fewer than min_faces (3) times forms no person yet.
        let mut seen = HashMap::<usize, usize>::new();
        for i in 0..n as usize {
            for who in identities_in(i) {
                *seen.entry(who).or_default() += 1;
            }
        }
        let groupable: usize = seen.values().filter(|&&c| c >= 3).sum();
        assert!(groupable < expected, "the fixture has an identity too rare to group");
        assert_eq!(report.placed, groupable, "{}: every face of a frequent identity grouped", db.backend);
        // Nothing changed: nothing is looked at again.
        assert_eq!(lib.find_faces(&finder).unwrap().scanned, 0, "{}", db.backend);

        let listed = lib.people(false).unwrap();
        assert_eq!(listed.iter().map(|p| p.faces).sum::<usize>(), groupable);
        let anna = listed[0].id;
        let ben = listed[1].id;
        lib.name_person(anna, "Anna").unwrap();
        lib.name_person(ben, "Ben").unwrap();
        assert!(lib.name_person(ben, "anna").is_err(), "two persons cannot share a name");

        // person:Anna alone lists Anna's photos; two persons, the photos of both.
        let search = |q: &str| -> HashSet<ImageId> {
            let options = clipdex::library::QueryOptions { k: 100, ..Default::default() };
            let hits = lib.search_query(q, &Default::default(), &options).unwrap();
            hits.iter().map(|h| h.hit.id).collect()
        };
        let of_anna = images_of(&lib, &ids, anna);
        let of_ben = images_of(&lib, &ids, ben);
        assert_eq!(search("person:Anna"), of_anna, "{}", db.backend);
        assert_eq!(search("person:anna person:Ben"), &of_anna & &of_ben, "{}", db.backend);
        assert!(!(&of_anna & &of_ben).is_empty(), "the fixture has photos of both");
        // With words, the person filters the ranking.
        assert!(search("a photo person:Ben").is_subset(&of_ben), "{}", db.backend);
        let e = lib.search_query("person:Nobody", &Default::default(), &Default::default()).unwrap_err();
        assert!(e.to_string().contains("Anna, Ben"), "{e}");

        // Image details carry the faces with names.
        let details = lib.image_details(*of_anna.iter().next().unwrap()).unwrap();
        assert!(details.faces.iter().any(|f| f.person.as_deref() == Some("Anna")));

        // A new face model: every photo is looked at again, the names stay with the faces.
        finder.version = 2;
        let report = lib.find_faces(&finder).unwrap();
        assert_eq!(report.scanned, n as usize, "{}", db.backend);
        assert_eq!(images_of(&lib, &ids, anna), of_anna, "{}: Anna's faces carried over", db.backend);
        assert_eq!(search("person:Anna"), of_anna, "{}", db.backend);

        lib.forget_faces().unwrap();
        assert_eq!(lib.store().face_count().unwrap(), 0);
        assert!(lib.store().persons().unwrap().is_empty() && lib.store().corrections().unwrap().is_empty());
        assert!(lib.people(true).unwrap().is_empty());
        assert!(lib.store().check().unwrap().is_empty());
    }
}

#[test]
fn faces_go_with_their_image() {
    for db in test_databases() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("photos");
        let (lib, ids) = library_of(&db, &dir, 3);
        let faces = Faces::new();
        detect_all(&lib, &ids, &faces, 1);
        let before = lib.store().face_count().unwrap();
        let gone = identities_in(0).len() as u64;
        std::fs::remove_file(dir.join("p00.png")).unwrap();
        lib.index(&|_, _| {}).unwrap();
        assert_eq!(lib.store().face_count().unwrap(), before - gone, "{}", db.backend);
        assert!(lib.store().faces_of(ids[0]).unwrap().is_empty());
        assert!(lib.store().check().unwrap().is_empty(), "{}", db.backend);
        // An image that went away meanwhile stores nothing.
        let stored = lib.store_found_faces(ids[0], &scan_of_gone(), new_faces(faces.of(0, 1)));
        assert!(stored.is_ok());
        assert!(lib.store().faces_of(ids[0]).unwrap().is_empty());
    }
}

fn scan_of_gone() -> FaceScan {
    FaceScan { model: "fake-1".into(), hash: "gone".into() }
}

#[test]
fn people_command_names_merges_and_searches() {
    let Some(db) = test_databases().into_iter().find(|d| d.backend == "sled") else { return };
    let tmp = tempfile::tempdir().unwrap();
    let (lib, ids) = library_of(&db, &tmp.path().join("photos"), 6);
    detect_all(&lib, &ids, &Faces::new(), 1);
    drop(lib);
    let db_dir = match &db.location {
        clipdex::store::DbLocation::Dir(d) => d.clone(),
        _ => unreachable!(),
    };
    let run = |args: &[&str]| common::ok_json(common::clipdex_on(&db_dir, model(), args));
    let listed = run(&["people", "--json"]);
    let people = listed["people"].as_array().unwrap();
    assert!(people.len() >= 2, "{listed}");
    let (a, b) = (people[0]["id"].as_u64().unwrap(), people[1]["id"].as_u64().unwrap());
    assert!(people[0]["representative"]["box"].as_array().is_some_and(|b| b.len() == 4), "{listed}");
    run(&["people", "--name", &a.to_string(), "Anna", "--json"]);
    run(&["people", "--merge", "Anna", &b.to_string(), "--json"]);
    let listed = run(&["people", "--json"]);
    let anna = listed["people"].as_array().unwrap().iter().find(|p| p["id"] == a).unwrap().clone();
    assert_eq!(anna["name"], "Anna");
    assert_eq!(
        anna["faces"].as_u64().unwrap(),
        people[0]["faces"].as_u64().unwrap() + people[1]["faces"].as_u64().unwrap()
    );
    let found = run(&["search", "--person", "Anna", "--json"]);
    assert_eq!(found["results"].as_array().unwrap().len() as u64, anna["images"].as_u64().unwrap(), "{found}");
    run(&["people", "--hide", "Anna", "--json"]);
    let listed = run(&["people", "--json"]);
    assert!(listed["people"].as_array().unwrap().iter().all(|p| p["id"] != a), "hidden: {listed}");
    run(&["people", "--recluster", "--max-distance", "0.45", "--min-faces", "2", "--json"]);
    let listed = run(&["people", "--json", "--all"]);
    assert!(listed["people"].as_array().unwrap().iter().any(|p| p["id"] == a && p["name"] == "Anna"), "{listed}");
    run(&["people", "--forget", "--json"]);
    assert!(run(&["people", "--json", "--all"])["people"].as_array().unwrap().is_empty());
}

/// Sends a request to the app; returns status and JSON body (Null when not JSON).
macro_rules! call {
    ($app:expr, $req:expr $(,)?) => {{
        let req = $req.insert_header(("host", "127.0.0.1:7878")).to_request();
        let response = actix_web::test::call_service(&$app, req).await;
        let status = response.status().as_u16();
        let body = actix_web::test::read_body(response).await;
        (status, serde_json::from_slice::<serde_json::Value>(&body).unwrap_or(serde_json::Value::Null))
    }};
}

#[actix_web::test]
async fn people_api_lists_changes_and_searches() {
    use actix_web::test::TestRequest;
    use clipdex::server::{AppState, BackgroundIndexer, ServeOptions, configure};
    use common::backends::off;
    for db in off(test_databases) {
        let tmp = tempfile::tempdir().unwrap();
        let (lib, ids) = off(|| {
            let (lib, ids) = library_of(&db, &tmp.path().join("photos"), 9);
            detect_all(&lib, &ids, &Faces::new(), 1);
            (lib, ids)
        });
        let lib = std::sync::Arc::new(lib);
        let state =
            actix_web::web::Data::new(AppState::new(lib.clone(), BackgroundIndexer::off(), &ServeOptions::default()));
        let app = actix_web::test::init_service(actix_web::App::new().configure(configure(state))).await;

        let (status, listed) = call!(app, TestRequest::get().uri("/api/people"));
        assert_eq!(status, 200, "{listed}");
        let people = listed["people"].as_array().unwrap().clone();
        let (a, b) = (people[0]["id"].as_u64().unwrap(), people[1]["id"].as_u64().unwrap());
        let (status, changed) = call!(
            app,
            TestRequest::patch()
                .uri(&format!("/api/people/{a}"))
                .set_json(serde_json::json!({"name": "Anna", "merge": [b]})),
        );
        assert_eq!(status, 200, "{changed}");
        assert_eq!(changed["person"]["name"], "Anna");
        let merged = people[0]["faces"].as_u64().unwrap() + people[1]["faces"].as_u64().unwrap();
        assert_eq!(changed["person"]["faces"].as_u64().unwrap(), merged, "{changed}");

        let (status, one) = call!(app, TestRequest::get().uri(&format!("/api/people/{a}")));
        assert_eq!((status, one["faces"].as_array().unwrap().len() as u64), (200, merged), "{one}");
        let face = one["faces"][0]["id"].as_u64().unwrap();
        let image = one["faces"][0]["image"].as_u64().unwrap();
        let (status, details) = call!(app, TestRequest::get().uri(&format!("/api/images/{image}")));
        assert_eq!(status, 200);
        assert!(
            details["faces"].as_array().unwrap().iter().any(|f| f["id"] == face && f["person"] == "Anna"),
            "{details}"
        );

        let of_anna = off(|| images_of(&lib, &ids, a));
        let (status, found) = call!(app, TestRequest::get().uri("/api/search?person=anna&k=50"));
        assert_eq!(status, 200, "{found}");
        let found: HashSet<u64> =
            found["results"].as_array().unwrap().iter().map(|r| r["id"].as_u64().unwrap()).collect();
        assert_eq!(found, of_anna, "{}", db.backend);
        let (status, e) = call!(app, TestRequest::get().uri("/api/search?person=Nobody"));
        assert_eq!(status, 400, "{e}");

        let (status, not) = call!(
            app,
            TestRequest::post().uri(&format!("/api/faces/{face}/not")).set_json(serde_json::json!({"person": a}))
        );
        assert_eq!(status, 200, "{not}");
        let (_, one) = call!(app, TestRequest::get().uri(&format!("/api/people/{a}")));
        assert!(one["faces"].as_array().unwrap().iter().all(|f| f["id"] != face), "{one}");
        let (status, split) = call!(app, TestRequest::post().uri(&format!("/api/faces/{face}/split")));
        assert_eq!(status, 200, "{split}");
        let (status, hidden) = call!(
            app,
            TestRequest::post().uri(&format!("/api/people/{a}")).set_json(serde_json::json!({"hidden": true}))
        );
        assert_eq!((status, &hidden["person"]["hidden"]), (200, &serde_json::json!(true)), "{hidden}");
        let (_, listed) = call!(app, TestRequest::get().uri("/api/people"));
        assert!(listed["people"].as_array().unwrap().iter().all(|p| p["id"] != a), "hidden: {listed}");
        let (status, _) = call!(app, TestRequest::get().uri("/api/people/123456789"));
        assert_eq!(status, 404);
        let (status, _) = call!(
            app,
            TestRequest::patch().uri(&format!("/api/people/{a}")).set_json(serde_json::json!({"merge": [987654321]})),
        );
        assert_eq!(status, 404);
        off(|| assert!(lib.store().check().unwrap().is_empty()));
    }
}

/// A pass told to stop while a photo is being looked at (a server shutting down) gives that
/// photo up: nothing is recorded for it, and the next pass looks at it.
#[test]
fn a_face_pass_told_to_stop_within_a_photo_leaves_it_to_the_next_pass() {
    for db in test_databases() {
        let tmp = tempfile::tempdir().unwrap();
        let n = 3;
        let (lib, ids) = library_of(&db, &tmp.path().join("photos"), n);
        let finder = PixelFinder { faces: Faces::new(), version: 1, pictures: (0..n).map(picture).collect() };
        // Asked before the first photo (go on), then within it (stop).
        let asked = std::cell::Cell::new(0);
        let pause = || {
            asked.set(asked.get() + 1);
            asked.get() > 1
        };
        let report = lib.find_faces_with(&finder, &|_, _| {}, &pause).unwrap();
        assert_eq!(report.scanned, 0, "{}", db.backend);
        assert!(ids.iter().all(|&id| lib.store().face_scan(id).unwrap().is_none()), "{}", db.backend);
        let report = lib.find_faces_with(&finder, &|_, _| {}, &|| false).unwrap();
        assert_eq!(report.scanned, n as usize, "{}", db.backend);
    }
}
