//! Near-duplicates on every backend under test: a resized, a re-encoded and a brightened copy
//! of a photo group with it, and a small BMP with the EXIF-rotated JPEG it was made from;
//! different photos stay apart even when the (random-weight) model finds them close; the best
//! copy is suggested; dismissed groups stay dismissed; `--move-to` moves the extra copies out
//! of the library with a journal and `--restore` puts every one of them back.

use std::collections::BTreeSet;
use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use clipdex::library::GroupChoice;
use clipdex::store::DbLocation;
use clipdex::{Library, LibraryConfig};
use serde_json::Value;

mod common;
use common::backends::{TestDb, test_databases};
use common::{fixtures, ok_json};

const MODEL: &str = "clip-tiny-p32";

fn quiet(_: u64, _: u64) {}

fn clipdex<S: AsRef<OsStr>>(db: &TestDb, args: &[S]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_clipdex"))
        .arg("--db")
        .arg(db.arg())
        .arg("--model")
        .arg(fixtures().join(MODEL))
        .args(args)
        .output()
        .unwrap()
}

/// Photos: four versions of the astronaut, two of the cat, three unrelated pictures.
fn photo_folder(tmp: &Path) -> PathBuf {
    let photos = tmp.join("photos");
    let images = fixtures().join("images");
    for dir in ["trip", "backup"] {
        std::fs::create_dir_all(photos.join(dir)).unwrap();
    }
    for name in
        ["astronaut.jpg", "chelsea_exif3.jpg", "chelsea_small.bmp", "coffee.png", "camera_gray.png", "rocket.webp"]
    {
        std::fs::copy(images.join(name), photos.join("trip").join(name)).unwrap();
    }
    let astronaut = image::open(images.join("astronaut.jpg")).unwrap().to_rgb8();
    let jpeg = |img: &image::RgbImage, quality: u8, path: PathBuf| {
        let mut out = std::fs::File::create(path).unwrap();
        image::codecs::jpeg::JpegEncoder::new_with_quality(&mut out, quality).encode_image(img).unwrap();
    };
    image::imageops::resize(&astronaut, 256, 256, image::imageops::FilterType::Lanczos3)
        .save(photos.join("trip/astronaut_small.png"))
        .unwrap();
    jpeg(&astronaut, 60, photos.join("backup/astronaut_copy.jpg"));
    let mut brighter = astronaut.clone();
    brighter.pixels_mut().for_each(|p| p.0 = p.0.map(|c| c.saturating_add(18)));
    jpeg(&brighter, 60, photos.join("trip/astronaut_bright.jpg"));
    std::fs::canonicalize(photos).unwrap()
}

/// Each group as the set of its files' names, and the keeper's name.
fn groups_of(report: &Value) -> Vec<(BTreeSet<String>, String)> {
    let mut groups: Vec<(BTreeSet<String>, String)> = report["groups"]
        .as_array()
        .unwrap()
        .iter()
        .map(|g| {
            let name =
                |i: &Value| Path::new(i["path"].as_str().unwrap()).file_name().unwrap().to_string_lossy().into_owned();
            let images = g["images"].as_array().unwrap();
            let keep = images.iter().find(|i| i["id"] == g["keep"]).expect("the keeper is in its group");
            assert_eq!(images[0]["id"], g["keep"], "the keeper comes first");
            let similarity = g["similarity"].as_f64().unwrap();
            assert!((0.95..=1.0).contains(&similarity), "{similarity}");
            (images.iter().map(name).collect(), name(keep))
        })
        .collect();
    groups.sort();
    groups
}

fn set(names: &[&str]) -> BTreeSet<String> {
    names.iter().map(|s| s.to_string()).collect()
}

fn expected() -> Vec<(BTreeSet<String>, String)> {
    vec![
        (
            set(&["astronaut.jpg", "astronaut_bright.jpg", "astronaut_copy.jpg", "astronaut_small.png"]),
            // 512 x 512 like two of the others, and the largest file of those.
            "astronaut.jpg".into(),
        ),
        (set(&["chelsea_exif3.jpg", "chelsea_small.bmp"]), "chelsea_exif3.jpg".into()),
    ]
}

#[test]
fn copies_and_light_edits_group_with_the_best_one_to_keep() {
    for db in test_databases() {
        eprintln!("{}", db.backend);
        let tmp = tempfile::tempdir().unwrap();
        let photos = photo_folder(tmp.path());
        ok(clipdex(&db, &[OsStr::new("add"), photos.as_os_str()]));
        ok_json(clipdex(&db, &["index", "--json"]));

        let report = ok_json(clipdex(&db, &["duplicates", "--json"]));
        assert_eq!(groups_of(&report), expected(), "{report}");
        for image in report["groups"][0]["images"].as_array().unwrap() {
            for field in ["id", "width", "height", "size", "date"] {
                assert!(image[field].is_u64() || image[field].is_i64(), "{field} in {image}");
            }
        }

        // The random-weight model puts unrelated pictures close together too: at a low
        // threshold they become candidates, and the perceptual hash keeps them apart.
        let loose = ok_json(clipdex(&db, &["duplicates", "--json", "--threshold", "0.3"]));
        assert_eq!(groups_of(&loose), expected(), "{loose}");

        // The hashes of the candidates are cached: nothing to decode the next time.
        let lib =
            Library::open_as_stored(LibraryConfig::new(db.location.clone(), fixtures().join(MODEL).to_string_lossy()))
                .unwrap();
        let ids: Vec<u64> =
            report["groups"][0]["images"].as_array().unwrap().iter().map(|i| i["id"].as_u64().unwrap()).collect();
        let cached = lib.store().model_vectors(clipdex::library::HASH_CACHE, &ids).unwrap();
        assert!(cached.iter().all(|v| v.as_ref().is_some_and(|v| v.len() == 4)), "{cached:?}");
        drop(lib);

        let text = clipdex(&db, &["duplicates"]);
        assert!(text.status.success());
        let text = String::from_utf8_lossy(&text.stdout);
        assert!(text.contains("keep") && text.contains("astronaut_small.png") && text.contains("2 groups"), "{text}");

        let bad = clipdex(&db, &["duplicates", "--threshold", "1.5"]);
        assert!(!bad.status.success());
        assert!(String::from_utf8_lossy(&bad.stderr).contains("threshold"));
    }
}

#[test]
fn dismissed_groups_stay_apart() {
    for db in test_databases() {
        eprintln!("{}", db.backend);
        let tmp = tempfile::tempdir().unwrap();
        let photos = photo_folder(tmp.path());
        let lib =
            Library::open(LibraryConfig::new(db.location.clone(), fixtures().join(MODEL).to_string_lossy())).unwrap();
        lib.add_root(&photos).unwrap();
        lib.index(&quiet).unwrap();
        let id = |name: &str| lib.store().path_entry(&photos.join(name)).unwrap().unwrap().id;
        let (cat, small_cat) = (id("trip/chelsea_exif3.jpg"), id("trip/chelsea_small.bmp"));
        assert_eq!(lib.duplicates(0.95, &quiet).unwrap().groups.len(), 2);

        assert!(lib.dismiss_duplicates(&[cat]).is_err(), "one image is not a group");
        assert!(lib.dismiss_duplicates(&[cat, 999_999_999]).is_err(), "unknown id");
        lib.dismiss_duplicates(&[cat, small_cat]).unwrap();
        // Dismissing the astronaut's small copy from the original alone leaves the others
        // joining them: each pair inside the dismissed set is ignored, nothing more.
        lib.dismiss_duplicates(&[id("trip/astronaut.jpg"), id("trip/astronaut_small.png")]).unwrap();
        drop(lib);

        let report = ok_json(clipdex(&db, &["duplicates", "--json"]));
        let groups = groups_of(&report);
        assert_eq!(groups, vec![expected()[0].clone()], "remembered after reopening: {report}");
    }
}

#[test]
fn moved_copies_leave_the_library_and_come_back() {
    for db in test_databases() {
        eprintln!("{}", db.backend);
        let tmp = tempfile::tempdir().unwrap();
        let photos = photo_folder(tmp.path());
        let away = tmp.path().join("away");
        ok(clipdex(&db, &[OsStr::new("add"), photos.as_os_str()]));
        ok_json(clipdex(&db, &["index", "--json"]));
        let before: BTreeSet<(PathBuf, Vec<u8>)> = files_under(&photos);

        // A destination inside the library is refused: the copies would be indexed again.
        let inside =
            clipdex(&db, &[OsStr::new("duplicates"), OsStr::new("--move-to"), photos.join("dups").as_os_str()]);
        assert!(!inside.status.success());
        assert!(String::from_utf8_lossy(&inside.stderr).contains("outside the library"));

        let moved = ok_json(clipdex(
            &db,
            &[OsStr::new("duplicates"), OsStr::new("--json"), OsStr::new("--move-to"), away.as_os_str()],
        ));
        let moved_names: BTreeSet<String> = moved["moved"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| Path::new(m["from"].as_str().unwrap()).file_name().unwrap().to_string_lossy().into_owned())
            .collect();
        assert_eq!(
            moved_names,
            set(&["astronaut_bright.jpg", "astronaut_copy.jpg", "astronaut_small.png", "chelsea_small.bmp"])
        );
        assert_eq!(moved["skipped"].as_array().unwrap().len(), 0, "{moved}");
        for m in moved["moved"].as_array().unwrap() {
            let (from, to) = (Path::new(m["from"].as_str().unwrap()), Path::new(m["to"].as_str().unwrap()));
            assert!(!from.exists() && to.is_file(), "{m}");
            assert!(to.starts_with(away.join("photos")), "kept below the library folder's name: {m}");
        }
        assert!(away.join("photos/backup/astronaut_copy.jpg").is_file(), "relative paths kept");
        // Nothing lost: every file's bytes are in the library or in the destination.
        let after: BTreeSet<Vec<u8>> =
            files_under(&photos).into_iter().chain(files_under(&away)).map(|(_, bytes)| bytes).collect();
        assert!(before.iter().all(|(_, bytes)| after.contains(bytes)));
        // The library forgot them at once.
        let stats = ok_json(clipdex(&db, &["stats", "--json"]));
        assert_eq!(stats["images"], 5, "{stats}");
        assert_eq!(ok_json(clipdex(&db, &["duplicates", "--json"]))["groups"].as_array().unwrap().len(), 0);

        let restored = ok_json(clipdex(
            &db,
            &[OsStr::new("duplicates"), OsStr::new("--json"), OsStr::new("--restore"), away.as_os_str()],
        ));
        assert_eq!(restored["restored"].as_array().unwrap().len(), 4, "{restored}");
        assert_eq!(files_under(&photos), before, "every file back where it was, byte for byte");
        let journal = std::fs::read_to_string(away.join(clipdex::library::MOVE_JOURNAL)).unwrap();
        assert!(journal.trim().is_empty(), "restored entries leave the journal: {journal}");
        ok_json(clipdex(&db, &["index", "--json"]));
        assert_eq!(groups_of(&ok_json(clipdex(&db, &["duplicates", "--json"]))), expected());
    }
}

#[test]
fn a_live_photo_moves_out_with_its_video_and_comes_back_with_it() {
    let db = &test_databases()[0];
    let tmp = tempfile::tempdir().unwrap();
    let photos = photo_folder(tmp.path());
    // The low-quality copy of the astronaut is a Live Photo: its MOV must travel with it, or
    // the next pass would index the MOV as a video of its own.
    let mov = photos.join("backup/astronaut_copy.mov");
    std::fs::copy(fixtures().join("companions/IMG_0002.mov"), &mov).unwrap();
    let away = tmp.path().join("away");
    ok(clipdex(db, &[OsStr::new("add"), photos.as_os_str()]));
    ok_json(clipdex(db, &["index", "--json"]));
    let before = files_under(&photos);
    let moved = ok_json(clipdex(
        db,
        &[OsStr::new("duplicates"), OsStr::new("--json"), OsStr::new("--move-to"), away.as_os_str()],
    ));
    let froms: BTreeSet<PathBuf> =
        moved["moved"].as_array().unwrap().iter().map(|m| PathBuf::from(m["from"].as_str().unwrap())).collect();
    assert!(froms.contains(&mov) && froms.contains(&photos.join("backup/astronaut_copy.jpg")), "{moved}");
    assert!(!mov.exists() && away.join("photos/backup/astronaut_copy.mov").is_file());
    let index = ok_json(clipdex(db, &["index", "--json"]));
    let stats = ok_json(clipdex(db, &["stats", "--json"]));
    assert_eq!(stats["images"], 5, "no video appeared where the Live Photo was: {stats} {index}");
    let restored = ok_json(clipdex(
        db,
        &[OsStr::new("duplicates"), OsStr::new("--json"), OsStr::new("--restore"), away.as_os_str()],
    ));
    assert_eq!(restored["restored"].as_array().unwrap().len(), 5, "{restored}");
    assert_eq!(files_under(&photos), before, "the photos and the MOV back where they were");
}

#[test]
fn a_restore_never_replaces_a_file_that_came_back_meanwhile() {
    let tmp = tempfile::tempdir().unwrap();
    let db = &test_databases()[0];
    let photos = photo_folder(tmp.path());
    let away = tmp.path().join("away");
    ok(clipdex(db, &[OsStr::new("add"), photos.as_os_str()]));
    ok_json(clipdex(db, &["index", "--json"]));
    ok_json(clipdex(db, &[OsStr::new("duplicates"), OsStr::new("--json"), OsStr::new("--move-to"), away.as_os_str()]));
    // The user put something else where a moved copy was.
    std::fs::write(photos.join("trip/astronaut_small.png"), b"a new file").unwrap();
    let restored = ok_json(clipdex(
        db,
        &[OsStr::new("duplicates"), OsStr::new("--json"), OsStr::new("--restore"), away.as_os_str()],
    ));
    assert_eq!(restored["restored"].as_array().unwrap().len(), 3, "{restored}");
    assert_eq!(restored["skipped"].as_array().unwrap().len(), 1, "{restored}");
    assert_eq!(std::fs::read(photos.join("trip/astronaut_small.png")).unwrap(), b"a new file");
    assert!(away.join("photos/trip/astronaut_small.png").is_file(), "the moved copy stays");
    let journal = std::fs::read_to_string(away.join(clipdex::library::MOVE_JOURNAL)).unwrap();
    assert_eq!(journal.lines().count(), 1, "only the entry not restored stays: {journal}");
}

fn files_under(dir: &Path) -> BTreeSet<(PathBuf, Vec<u8>)> {
    walk(dir)
        .into_iter()
        .filter(|p| p.file_name() != Some(OsStr::new(clipdex::library::MOVE_JOURNAL)))
        .map(|p| {
            let bytes = std::fs::read(&p).unwrap();
            (p.strip_prefix(dir).unwrap().to_path_buf(), bytes)
        })
        .collect()
}

fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir) else { return out };
    for e in entries.flatten() {
        let p = e.path();
        if p.is_dir() {
            out.extend(walk(&p));
        } else {
            out.push(p);
        }
    }
    out
}

fn ok(out: Output) {
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
}

/// `--move-to` writes only into a new or empty folder, or one it moved copies into before: a
/// folder that holds something else is refused, naming what is there, and left as it was.
#[test]
fn move_to_refuses_a_folder_that_holds_other_files() {
    let tmp = tempfile::tempdir().unwrap();
    let db = &test_databases()[0];
    let photos = photo_folder(tmp.path());
    ok(clipdex(db, &[OsStr::new("add"), photos.as_os_str()]));
    ok_json(clipdex(db, &["index", "--json"]));
    let notes = tmp.path().join("notes");
    std::fs::create_dir(&notes).unwrap();
    std::fs::write(notes.join("diary.txt"), b"dear diary").unwrap();
    let refused =
        clipdex(db, &[OsStr::new("duplicates"), OsStr::new("--json"), OsStr::new("--move-to"), notes.as_os_str()]);
    assert!(!refused.status.success());
    let err = String::from_utf8_lossy(&refused.stderr);
    assert!(err.contains("diary.txt"), "{err}");
    let left: Vec<PathBuf> = walk(&notes);
    assert_eq!(left, vec![notes.join("diary.txt")], "the folder was written into");
    assert_eq!(ok_json(clipdex(db, &["stats", "--json"]))["images"], 9, "nothing was moved");
    // A folder it moved copies into before takes more.
    let away = tmp.path().join("away");
    ok_json(clipdex(db, &[OsStr::new("duplicates"), OsStr::new("--json"), OsStr::new("--move-to"), away.as_os_str()]));
    ok_json(clipdex(db, &[OsStr::new("duplicates"), OsStr::new("--json"), OsStr::new("--move-to"), away.as_os_str()]));
}

/// The web UI's way (`Library::resolve_duplicates`): a group's chosen photos move into a new
/// batch of the duplicates folder, laid out as `--move-to` lays out its folder; a choice whose
/// photos are not grouped together (a stale page) is refused before anything moves; restoring
/// the batch puts back exactly its files; a batch name is one folder name, nothing more. A
/// PostgreSQL library needs the folder set; a folder library has one in its database folder.
#[test]
fn a_resolved_group_moves_into_a_batch_that_restores_it() {
    for db in test_databases() {
        eprintln!("{}", db.backend);
        let tmp = tempfile::tempdir().unwrap();
        let photos = photo_folder(tmp.path());
        let lib =
            Library::open(LibraryConfig::new(db.location.clone(), fixtures().join(MODEL).to_string_lossy())).unwrap();
        lib.add_root(&photos).unwrap();
        lib.index(&quiet).unwrap();
        let id = |name: &str| lib.store().path_entry(&photos.join(name)).unwrap().unwrap().id;
        let (astronaut, copy, cat) =
            (id("trip/astronaut.jpg"), id("backup/astronaut_copy.jpg"), id("trip/chelsea_exif3.jpg"));
        let choice = |keep, moved: Vec<u64>| GroupChoice { keep, move_out: moved };
        let before = files_under(&photos);
        // A tag given by hand to the copy that will move out and come back.
        lib.add_tag(&[copy], "keepme").unwrap();

        match &db.location {
            DbLocation::Postgres(_) => {
                let error = lib.resolve_duplicates(0.95, Some(&[choice(astronaut, vec![copy])])).unwrap_err();
                assert!(error.to_string().contains("config set duplicates_folder"), "{error}");
                lib.set_setting_value("duplicates_folder", Some(tmp.path().join("moved").to_str().unwrap())).unwrap();
            }
            DbLocation::Dir(dir) => {
                assert!(lib.duplicates_folder().unwrap().starts_with(std::path::absolute(dir).unwrap()))
            }
        }
        let folder = lib.duplicates_folder().unwrap();

        // Stale: the cat is not in the astronaut's group; nothing moves, no batch is made.
        let error = lib.resolve_duplicates(0.95, Some(&[choice(astronaut, vec![copy, cat])])).unwrap_err();
        assert!(error.to_string().contains(&format!("#{cat}")), "{error}");
        assert!(lib.resolve_duplicates(0.95, Some(&[choice(astronaut, vec![astronaut])])).is_err(), "keep and move");
        assert!(lib.resolve_duplicates(0.95, Some(&[choice(astronaut, vec![])])).is_err(), "nothing to move");
        assert_eq!(files_under(&photos), before);
        assert!(!folder.exists() || std::fs::read_dir(&folder).unwrap().next().is_none());

        let resolved = lib.resolve_duplicates(0.95, Some(&[choice(astronaut, vec![copy])])).unwrap();
        assert_eq!(resolved.folder, folder.join(&resolved.batch));
        assert_eq!(resolved.report.moved.len(), 1, "{:?}", resolved.report);
        assert!(!photos.join("backup/astronaut_copy.jpg").exists());
        assert!(resolved.folder.join("photos/backup/astronaut_copy.jpg").is_file());
        assert!(photos.join("trip/astronaut_small.png").exists(), "a photo of the group not chosen stays");

        for bad in ["..", "../elsewhere", "/tmp", "a/b", ""] {
            assert!(lib.restore_duplicates(bad).is_err(), "{bad:?}");
        }
        let restored = lib.restore_duplicates(&resolved.batch).unwrap();
        assert_eq!(restored.moved.len(), 1);
        assert_eq!(files_under(&photos), before, "every file back, unchanged");
        // Indexed again (under a new id), the copy has its hand-given tag back.
        lib.index(&quiet).unwrap();
        let back = id("backup/astronaut_copy.jpg");
        let tags = lib.store().tags_of(back).unwrap().map(|(_, t)| t).unwrap_or_default();
        assert!(tags.iter().any(|t| t.label == "keepme"), "the hand-given tag is lost: {tags:?}");
    }
}
