//! Auto-tagging the library on the fixture model, on every backend under test: stored tags
//! carry the reference probabilities, tagging is incremental (the vocabulary is embedded once
//! per model and prompt set, images once per settings), new photos are tagged by `index`,
//! deleted ones lose their tags, and tag filters return k results when k exist.

use std::collections::HashMap;
use std::path::PathBuf;

use clipdex::query::SearchFilter;
use clipdex::query::autotag::AutotagSettings;
use clipdex::{Library, LibraryConfig};

mod common;
use common::backends::{TestDb, test_databases};
use common::fixtures;

const MODEL: &str = "clip-tiny-p32";

fn open(db: &TestDb) -> Library {
    Library::open(LibraryConfig::new(db.location.clone(), fixtures().join(MODEL).to_string_lossy())).unwrap()
}

fn quiet(_: u64, _: u64) {}

/// The reference probabilities of the single-template case, by image name.
fn reference() -> (Vec<String>, HashMap<String, Vec<f32>>) {
    let g = common::zeroshot_golden(MODEL);
    let single = g.cases.into_iter().filter(|c| c.templates.len() == 1).map(|c| (c.image, c.probability)).collect();
    (g.labels, single)
}

fn settings(labels: &[String], prior_ratio: f32) -> AutotagSettings {
    let mut s = AutotagSettings::new(labels.to_vec(), vec!["a photo of a {}.".into()]);
    s.prior_ratio = prior_ratio;
    s.max_tags = labels.len();
    s
}

/// A library of fixture photos that the indexer decodes exactly as the reference does (JPEGs
/// are decoded at reduced scale while indexing, so they are left out).
fn library_of_fixture_photos() -> (tempfile::TempDir, PathBuf, Vec<String>) {
    let tmp = tempfile::tempdir().unwrap();
    let photos = tmp.path().join("photos");
    std::fs::create_dir_all(&photos).unwrap();
    let names: Vec<String> =
        ["coffee.png", "rocket.webp", "chelsea_small.bmp", "camera_gray.png", "astronaut_rgba.png"]
            .iter()
            .map(|s| s.to_string())
            .collect();
    for n in &names {
        std::fs::copy(fixtures().join("images").join(n), photos.join(n)).unwrap();
    }
    (tmp, std::fs::canonicalize(photos).unwrap(), names)
}

#[test]
fn stored_tags_carry_the_reference_probabilities_and_tagging_twice_embeds_nothing() {
    for db in test_databases() {
        eprintln!("{}", db.backend);
        let (labels, reference) = reference();
        let (_tmp, photos, names) = library_of_fixture_photos();
        let lib = open(&db);
        lib.add_root(&photos).unwrap();
        lib.index(&quiet).unwrap();

        let s = settings(&labels, 1.0); // keep what is likelier than chance
        let first = lib.autotag(Some(s.clone())).unwrap();
        assert_eq!((first.images, first.tagged, first.unchanged), (5, 5, 0));
        assert_eq!(first.labels_embedded, labels.len() as u64);

        let threshold = 1.0 / labels.len() as f32;
        let mut kept = 0;
        for name in &names {
            let id = lib.store().path_entry(&photos.join(name)).unwrap().unwrap().id;
            let (_, tags) = lib.store().tags_of(id).unwrap().unwrap();
            let want = &reference[name];
            for t in &tags {
                let i = labels.iter().position(|l| *l == t.label).unwrap();
                assert!((t.probability - want[i]).abs() < 1e-4, "{name} {}: {} vs {}", t.label, t.probability, want[i]);
            }
            // The kept labels are exactly those above the threshold (borderline ones aside).
            for (i, &p) in want.iter().enumerate() {
                if (p - threshold).abs() > 1e-4 {
                    assert_eq!(tags.iter().any(|t| t.label == labels[i]), p >= threshold, "{name} {}: {p}", labels[i]);
                }
            }
            assert!(tags.windows(2).all(|w| w[0].probability >= w[1].probability));
            kept += tags.len();
        }
        assert_eq!(first.tags, kept as u64);
        assert!(kept > 0);

        // Again, and after reopening: the cache answers and every image is up to date.
        let again = lib.autotag(None).unwrap();
        assert_eq!((again.tagged, again.unchanged, again.labels_embedded), (0, 5, 0));
        drop(lib);
        let lib = open(&db);
        let reopened = lib.autotag(None).unwrap();
        assert_eq!((reopened.tagged, reopened.unchanged, reopened.labels_embedded), (0, 5, 0));

        // One more label: only it is embedded, and every image is tagged again.
        let mut wider = s.clone();
        wider.labels.push("bicycle".into());
        let widened = lib.autotag(Some(wider)).unwrap();
        assert_eq!((widened.tagged, widened.labels_embedded), (5, 1));
        // Another prompt set is another cache entry.
        let mut prompts = s;
        prompts.templates.push("a picture of the {}.".into());
        assert_eq!(lib.autotag(Some(prompts)).unwrap().labels_embedded, labels.len() as u64);
        assert!(lib.store().check().unwrap().is_empty());
    }
}

#[test]
fn index_tags_new_photos_and_deleted_photos_lose_their_tags() {
    for db in test_databases() {
        eprintln!("{}", db.backend);
        let (labels, _) = reference();
        let (_tmp, photos, _) = library_of_fixture_photos();
        let lib = open(&db);
        lib.add_root(&photos).unwrap();
        assert_eq!(lib.index(&quiet).unwrap().tagged, 0, "no tagging before `autotag`");
        lib.autotag(Some(settings(&labels, 0.5))).unwrap();
        let total = |lib: &Library| lib.tag_counts().unwrap().iter().map(|c| c.count).sum::<u64>();
        let before = total(&lib);

        std::fs::copy(fixtures().join("images/coffee_palette.gif"), photos.join("new.gif")).unwrap();
        let report = lib.index(&quiet).unwrap();
        assert_eq!((report.embedded, report.tagged), (1, 1));
        let id = lib.store().path_entry(&photos.join("new.gif")).unwrap().unwrap().id;
        let new_tags = lib.store().tags_of(id).unwrap().unwrap().1.len() as u64;
        assert!(new_tags > 0, "with a low threshold every photo has tags");
        assert_eq!(total(&lib), before + new_tags);

        std::fs::remove_file(photos.join("new.gif")).unwrap();
        let report = lib.index(&quiet).unwrap();
        assert_eq!((report.removed, report.tagged), (1, 0));
        assert!(lib.store().tags_of(id).unwrap().is_none());
        assert_eq!(total(&lib), before);
        assert!(lib.store().check().unwrap().is_empty());
    }
}

#[test]
fn tag_filters_return_k_results_when_k_exist() {
    for db in test_databases() {
        eprintln!("{}", db.backend);
        let (labels, _) = reference();
        let tmp = tempfile::tempdir().unwrap();
        let photos = tmp.path().join("photos");
        for (i, name) in
            std::fs::read_dir(fixtures().join("images")).unwrap().map(|e| e.unwrap().file_name()).enumerate()
        {
            let sub = photos.join(if i % 2 == 0 { "even" } else { "odd" });
            std::fs::create_dir_all(&sub).unwrap();
            std::fs::copy(fixtures().join("images").join(&name), sub.join(&name)).unwrap();
        }
        let photos = std::fs::canonicalize(photos).unwrap();
        let lib = open(&db);
        lib.add_root(&photos).unwrap();
        lib.index(&quiet).unwrap();
        lib.autotag(Some(settings(&labels, 1.0))).unwrap();

        let counts = lib.tag_counts().unwrap();
        assert!(counts.windows(2).all(|w| w[0].count >= w[1].count));
        let top = &counts[0];
        assert!(top.count >= 3, "{counts:?}");
        let filter = SearchFilter { tag: Some(top.label.clone()), ..Default::default() };

        // Tag only: every tagged image, most probable first.
        let tagged = lib.search_tag(100, &filter).unwrap();
        assert_eq!(tagged.len() as u64, top.count);
        assert!(tagged.windows(2).all(|w| w[0].score >= w[1].score));
        assert_eq!(lib.search_tag(2, &filter).unwrap(), tagged[..2]);

        // Text and tag: k results when k exist, the best of the tagged ones by cosine.
        let everything = lib.search_text("a photo", 100, &SearchFilter::default()).unwrap();
        let expected: Vec<_> = everything.iter().filter(|h| lib.store().has_tag(h.id, &top.label).unwrap()).collect();
        for k in [1, 2, top.count as usize, top.count as usize + 5] {
            let hits = lib.search_text("a photo", k, &filter).unwrap();
            assert_eq!(hits.len(), k.min(top.count as usize));
            for (h, e) in hits.iter().zip(&expected) {
                assert_eq!(h.id, e.id);
            }
        }

        // With a folder too.
        let even = photos.join("even");
        let both = SearchFilter { under: Some(even.clone()), ..filter.clone() };
        let hits = lib.search_text("a photo", 100, &both).unwrap();
        assert_eq!(
            hits.len(),
            expected.iter().filter(|e| lib.store().paths_of(e.id).unwrap()[0].starts_with(&even)).count()
        );
        assert!(hits.iter().all(|h| h.path.starts_with(&even)));

        // Another case finds the stored label.
        let shouted = SearchFilter { tag: Some(top.label.to_uppercase()), ..Default::default() };
        assert_eq!(lib.search_tag(100, &shouted).unwrap(), tagged);

        let none = SearchFilter { tag: Some("no such tag".into()), ..Default::default() };
        assert!(lib.search_text("a photo", 5, &none).unwrap().is_empty());
        assert!(lib.search_tag(5, &none).unwrap().is_empty());
    }
}

/// Tags given by hand (the web UI's "Add a tag"): a tag filter finds exactly the photos given
/// one, before any auto-tagging and after runs with one vocabulary and then another, which
/// replace every auto-tag; an unknown id or an empty tag changes nothing.
#[test]
fn tags_given_by_hand_are_found_and_kept_through_auto_tagging() {
    for db in test_databases() {
        eprintln!("{}", db.backend);
        let (labels, _) = reference();
        let (_tmp, photos, names) = library_of_fixture_photos();
        let lib = open(&db);
        lib.add_root(&photos).unwrap();
        lib.index(&quiet).unwrap();
        let id = |name: &str| lib.store().path_entry(&photos.join(name)).unwrap().unwrap().id;
        let mut picked = vec![id(&names[0]), id(&names[2]), id(&names[3])];
        picked.sort();
        let found = |lib: &Library| {
            let filter = SearchFilter { tag: Some("picked".into()), ..Default::default() };
            let mut ids: Vec<u64> = lib.search_tag(100, &filter).unwrap().iter().map(|h| h.id).collect();
            ids.sort();
            ids
        };

        assert!(lib.add_tag(&[picked[0], 999_999_999], "picked").is_err(), "an unknown id");
        assert!(lib.add_tag(&picked, "  ").is_err(), "an empty tag");
        assert!(lib.add_tag(&picked, "a\nb").is_err(), "a control character");
        assert!(found(&lib).is_empty(), "nothing recorded by a refused call");
        assert_eq!(lib.add_tag(&picked, " picked ").unwrap(), 3);
        assert_eq!(lib.add_tag(&picked[..1], "picked").unwrap(), 1, "given twice, kept once");
        assert_eq!(found(&lib), picked);
        let counted = lib.tag_counts().unwrap();
        assert!(counted.iter().any(|c| c.label == "picked" && c.count == 3), "{counted:?}");

        lib.autotag(Some(settings(&labels, 1.0))).unwrap();
        assert_eq!(found(&lib), picked, "kept by a first auto-tagging run");
        lib.autotag(Some(settings(&labels[..labels.len() - 1], 1.0))).unwrap();
        assert_eq!(found(&lib), picked, "kept by a run with another vocabulary");
        let tags = lib.store().tags_of(picked[0]).unwrap().unwrap().1;
        assert_eq!(tags.iter().filter(|t| t.label == "picked").count(), 1, "{tags:?}");
    }
}
