//! A database written by schema version 1 (`tests/fixtures/db-v1`, from `tools/make_db_v1.sh`)
//! opens with this build, is migrated to the current schema, answers queries and takes tags,
//! captions and the text in photos.

use std::path::Path;

use clipdex::query::SearchFilter;
use clipdex::query::autotag::AutotagSettings;
use clipdex::store::SCHEMA_VERSION;
use clipdex::{Library, LibraryConfig};

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        if e.file_type().unwrap().is_dir() {
            copy_dir(&e.path(), &to.join(e.file_name()));
        } else {
            std::fs::copy(e.path(), to.join(e.file_name())).unwrap();
        }
    }
}

#[test]
fn a_version_1_database_opens_and_answers() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let tmp = tempfile::tempdir().unwrap();
    let db = tmp.path().join("db");
    copy_dir(&root.join("tests/fixtures/db-v1"), &db);
    // The model is recorded as it was named when the database was written.
    let lib = Library::open(LibraryConfig::new(&db, "tests/fixtures/clip-tiny-p32")).unwrap();
    let stats = lib.stats().unwrap();
    assert_eq!(stats.schema_version, SCHEMA_VERSION);
    assert_eq!((stats.counts.images, stats.counts.paths, stats.counts.vectors, stats.counts.roots), (3, 3, 3, 1));
    assert_eq!(stats.dim, Some(24));
    assert!(lib.store().check().unwrap().is_empty());
    let hits = lib.search_text("an astronaut", 3, &SearchFilter::default()).unwrap();
    assert_eq!(hits.len(), 3);
    let names: Vec<String> = hits.iter().map(|h| h.path.file_name().unwrap().to_string_lossy().into_owned()).collect();
    for n in ["astronaut.jpg", "chelsea_small.bmp", "rocket.webp"] {
        assert!(names.contains(&n.to_string()), "{names:?}");
    }
    // Version 2 added the tag trees: the migrated database takes tags.
    let labels: Vec<String> = ["astronaut", "cat", "rocket"].iter().map(|s| s.to_string()).collect();
    let report = lib.autotag(Some(AutotagSettings::new(labels, vec!["a photo of a {}.".into()]))).unwrap();
    assert_eq!((report.images, report.tagged), (3, 3));
    assert!(lib.store().check().unwrap().is_empty());
    // Version 5 added the text in photos: the migrated database stores it, searches it, and
    // drops it with its image.
    let id = hits[1].id;
    let hash = lib.store().image(id).unwrap().unwrap().hash;
    let line = clipdex::store::TextLine { text: "Bill 48213".into(), score: 0.9, quad: [[0.0, 0.0]; 4] };
    let text = clipdex::store::StoredText::new(&hash, "test", vec![line]);
    assert!(lib.store().set_text(id, &text).unwrap());
    assert_eq!(lib.search_photo_text("48213", 3, &SearchFilter::default()).unwrap()[0].hit.id, id);
    lib.store().unlink_path(&hits[1].path).unwrap();
    assert_eq!(lib.store().text_of(id).unwrap(), None);
    assert!(lib.store().check().unwrap().is_empty());
    // Version 4 added captions: the migrated database stores them, and drops one with its image.
    let id = hits[0].id;
    let caption = clipdex::store::StoredCaption { text: "a cat".into(), settings: "test".into() };
    assert!(lib.store().set_caption(id, &caption).unwrap());
    assert_eq!(lib.store().caption_of(id).unwrap(), Some(caption));
    // Written past the library (straight into the store), the caption reaches the library's
    // full-text index when the library next opens it.
    drop(lib);
    let lib = Library::open(LibraryConfig::new(&db, "tests/fixtures/clip-tiny-p32")).unwrap();
    assert_eq!(lib.search_captions("cats", 3, &SearchFilter::default()).unwrap()[0].hit.id, id);
    lib.store().unlink_path(&hits[0].path).unwrap();
    assert_eq!(lib.store().caption_of(id).unwrap(), None);
    assert_eq!(lib.stats().unwrap().counts.captioned, 0);
}
