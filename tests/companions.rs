//! Companion files on both backends: Apple Live Photos (a HEIC or JPEG and a MOV of the same
//! name), RAW+JPEG pairs and Motion Photos (an MP4 appended to a JPEG, announced in its XMP), as
//! `tools/make_companion_fixtures.py` writes them. Each pair is one item (the MOV and the RAW are
//! not results of their own), its companions show in results, `show` and the API, which serves
//! the videos with byte ranges; the pairing follows the folder; bad companions are recorded
//! problems while the still indexes; a still and a MOV whose names differ pair by the content
//! identifier both carry, and a MOV deleted after pairing is reported.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use actix_web::http::StatusCode;
use actix_web::{App, web};
use clipdex::photo::heif;
use clipdex::query::{Kind, SearchFilter, SearchHit};
use clipdex::server::{AppState, BackgroundIndexer, ServeOptions, configure};
use clipdex::{Library, LibraryConfig};
use serde_json::Value;

mod common;
use common::backends::{TestDb, off, test_databases};

fn model() -> String {
    common::fixtures().join("clip-tiny-p32").to_string_lossy().into_owned()
}

fn fixture(name: &str) -> PathBuf {
    common::fixtures().join("companions").join(name)
}

/// The fixtures of the pairs, HEIC ones only where libheif is (CI requires it).
fn fixture_names() -> Vec<&'static str> {
    let mut names =
        vec!["IMG_0002.JPG", "IMG_0002.mov", "DSC_0003.JPG", "DSC_0003.DNG", "PXL_0004.MP.jpg", "SAM_0005.jpg"];
    if heif::available() {
        names.extend(["IMG_0001.HEIC", "IMG_0001.MOV", "PXL_0006.MP.heic"]);
    } else {
        assert!(std::env::var_os("CI").is_none(), "CI must test HEIC Live Photos: install libheif1");
        eprintln!("libheif is not installed: the HEIC Live Photo is left out");
    }
    names
}

fn photo_folder(dir: &Path, names: &[&str]) -> PathBuf {
    let photos = dir.join("photos");
    std::fs::create_dir_all(&photos).unwrap();
    for name in names {
        std::fs::copy(fixture(name), photos.join(name)).unwrap();
    }
    std::fs::canonicalize(photos).unwrap()
}

fn open(db: &TestDb, photos: &Path) -> Library {
    let lib = Library::open(LibraryConfig::new(db.location.clone(), model())).unwrap();
    lib.add_root(photos).unwrap();
    lib
}

fn all(lib: &Library) -> Vec<SearchHit> {
    lib.search_text("a photo", 50, &SearchFilter::default()).unwrap()
}

fn named<'a>(hits: &'a [SearchHit], name: &str) -> &'a SearchHit {
    hits.iter()
        .find(|h| h.path.file_name().unwrap() == name)
        .unwrap_or_else(|| panic!("{name} is not among {:?}", hits.iter().map(|h| &h.path).collect::<Vec<_>>()))
}

/// Where the fixture's appended MP4 starts, found by its `ftyp` box after the JPEG.
fn mp4_start(bytes: &[u8]) -> u64 {
    let at = bytes.windows(8).rposition(|w| w == b"ftypisom").expect("an MP4 after the still");
    (at - 4) as u64
}

#[test]
fn each_pair_is_one_item_with_its_companions_in_results_show_and_similar() {
    let names = fixture_names();
    let heic = names.contains(&"IMG_0001.HEIC");
    for db in test_databases() {
        let tmp = tempfile::tempdir().unwrap();
        let photos = photo_folder(tmp.path(), &names);
        let lib = open(&db, &photos);
        let report = lib.index(&|_, _| {}).unwrap();
        assert_eq!(lib.failures().unwrap(), vec![], "{}", db.backend);
        let items = 4 + 2 * usize::from(heic);
        assert_eq!((report.embedded as usize, report.videos), (items, 0), "{}: one item per pair", db.backend);
        let hits = all(&lib);
        assert_eq!(hits.len(), items, "{}: the MOVs and the RAW are no results of their own", db.backend);
        assert!(hits.iter().all(|h| !h.path.to_string_lossy().to_lowercase().ends_with(".mov")));
        assert!(hits.iter().all(|h| !h.path.to_string_lossy().ends_with(".DNG")));
        let videos = lib.search_text("a photo", 50, &SearchFilter { kind: Kind::Video, ..Default::default() });
        assert_eq!(videos.unwrap(), vec![], "{}: no video", db.backend);

        let live = named(&hits, "IMG_0002.JPG");
        assert_eq!(live.companions.live_video.as_deref(), Some(photos.join("IMG_0002.mov").as_path()));
        assert_eq!((live.companions.raw_path.as_ref(), live.companions.motion_video), (None, None));
        let pair = named(&hits, "DSC_0003.JPG");
        assert_eq!(pair.companions.raw_path.as_deref(), Some(photos.join("DSC_0003.DNG").as_path()));
        assert_eq!(pair.companions.live_video, None);
        if heic {
            let live = named(&hits, "IMG_0001.HEIC");
            assert_eq!(live.companions.live_video.as_deref(), Some(photos.join("IMG_0001.MOV").as_path()));
        }
        let motion_photos: &[&str] = if heic {
            &["PXL_0004.MP.jpg", "SAM_0005.jpg", "PXL_0006.MP.heic"]
        } else {
            &["PXL_0004.MP.jpg", "SAM_0005.jpg"]
        };
        for name in motion_photos {
            let bytes = std::fs::read(photos.join(name)).unwrap();
            let motion =
                named(&hits, name).companions.motion_video.unwrap_or_else(|| panic!("{name}: no motion video"));
            assert_eq!(motion.offset, mp4_start(&bytes), "{name}");
            assert_eq!(motion.offset + motion.length, bytes.len() as u64, "{name}: the MP4 runs to the end");
        }
        for hit in &hits {
            let name = hit.path.file_name().unwrap().to_string_lossy().into_owned();
            // "More like this" leaves the photo itself out, and gives the others' companions.
            let like = lib.search_like(hit.id, 50, &SearchFilter::default()).unwrap();
            assert_eq!(like.len(), items - 1, "{name}: similar");
            assert!(like.iter().all(|h| h.id != hit.id), "{name}: similar lists the photo itself");
            for other in &like {
                let same = hits.iter().find(|h| h.id == other.id).unwrap();
                assert_eq!(other.companions, same.companions, "{name}: similar");
            }
            // A companion file names its item.
            for companion in [&hit.companions.live_video, &hit.companions.raw_path].into_iter().flatten() {
                assert_eq!(lib.resolve_image(companion).unwrap(), hit.id, "{}", companion.display());
                assert_eq!(lib.indexed_image_of(companion).unwrap(), Some(hit.id), "{}", companion.display());
            }
            assert_eq!(lib.resolve_image(&hit.path).unwrap(), hit.id, "{name}");
            let details = lib.image_details(hit.id).unwrap();
            assert_eq!(details.companions.live_video, hit.companions.live_video, "{name}: show");
            assert_eq!(details.companions.raw_path, hit.companions.raw_path, "{name}: show");
            assert_eq!(details.record.motion_video, hit.companions.motion_video, "{name}: show");
            let json = serde_json::to_value(&details).unwrap();
            assert_eq!(json["live_video"].as_str().is_some(), hit.companions.live_video.is_some(), "{name}: {json}");
            assert_eq!(json["raw_path"].as_str().is_some(), hit.companions.raw_path.is_some(), "{name}: {json}");
            assert_eq!(json["motion_video"].is_object(), hit.companions.motion_video.is_some(), "{name}: {json}");
            let thumb = std::fs::read(lib.thumbnail(hit.id, 64).unwrap()).unwrap();
            assert_eq!(image::guess_format(&thumb).unwrap(), image::ImageFormat::Jpeg, "{name}: thumbnail");
        }
        // The JPEG's pixels are the pair's: the item's vector is the JPEG's.
        let jpeg = std::fs::read(photos.join("DSC_0003.JPG")).unwrap();
        let c = common::cosine(&lib.stored_vector(pair.id).unwrap(), &lib.embed_image_bytes(&jpeg).unwrap());
        assert!(c > 0.9999, "{}: the pair's vector is its JPEG's ({c})", db.backend);

        // The command line: search and show as JSON, show as text.
        drop(lib);
        let arg = db.arg();
        let db_path = Path::new(&arg);
        let results =
            common::ok_json(common::clipdex_on(db_path, model(), &["search", "a photo", "--json", "-k", "20"]));
        let results = results["results"].as_array().unwrap();
        assert_eq!(results.len(), items);
        let find = |name: &str| results.iter().find(|r| r["path"].as_str().unwrap().ends_with(name)).unwrap().clone();
        assert_eq!(find("IMG_0002.JPG")["live_video"], photos.join("IMG_0002.mov").to_str().unwrap());
        assert_eq!(find("DSC_0003.JPG")["raw_path"], photos.join("DSC_0003.DNG").to_str().unwrap());
        assert!(find("SAM_0005.jpg")["motion_video"]["offset"].as_u64().is_some());
        let still = photos.join("IMG_0002.JPG");
        let shown = common::ok_json(common::clipdex_on(db_path, model(), &["show", still.to_str().unwrap(), "--json"]));
        assert_eq!(shown["live_video"], photos.join("IMG_0002.mov").to_str().unwrap());
        let text = common::clipdex_on(db_path, model(), &["show", photos.join("DSC_0003.JPG").to_str().unwrap()]);
        let text = String::from_utf8_lossy(&text.stdout).into_owned();
        assert!(text.contains("raw      ") && text.contains("DSC_0003.DNG"), "{text}");
        assert!(text.starts_with(&format!("id       {}  [raw+jpeg]\n", pair.id)), "{text}");

        // `show` and `similar` on a companion file: the item it belongs to, not "not in the
        // library"; `similar` leaves that item out, for a file of it as for its id.
        let mov = photos.join("IMG_0002.mov");
        let live_id = find("IMG_0002.JPG")["id"].as_u64().unwrap();
        let shown = common::ok_json(common::clipdex_on(db_path, model(), &["show", mov.to_str().unwrap(), "--json"]));
        assert_eq!(shown["id"].as_u64(), Some(live_id), "{shown}");
        let raw = photos.join("DSC_0003.DNG");
        let shown = common::ok_json(common::clipdex_on(db_path, model(), &["show", raw.to_str().unwrap(), "--json"]));
        assert_eq!(shown["id"].as_u64(), Some(pair.id), "{shown}");
        for query in [mov.to_str().unwrap().to_string(), still.to_str().unwrap().to_string(), format!("#{live_id}")] {
            let like =
                common::ok_json(common::clipdex_on(db_path, model(), &["similar", &query, "-k", "20", "--json"]));
            let ids: Vec<u64> = like["results"].as_array().unwrap().iter().map(|r| r["id"].as_u64().unwrap()).collect();
            assert_eq!(ids.len(), items - 1, "{query}: {like}");
            assert!(!ids.contains(&live_id), "{query}: the photo itself is listed: {like}");
        }
        // A file outside the library is compared as it is: a copy of the still finds it first.
        let outside = tmp.path().join("copy.jpg");
        std::fs::copy(&still, &outside).unwrap();
        let like =
            common::ok_json(common::clipdex_on(db_path, model(), &["similar", outside.to_str().unwrap(), "--json"]));
        assert_eq!(like["results"][0]["id"].as_u64(), Some(live_id), "{like}");

        // Text output marks what a photo carries besides its pixels.
        let text = common::clipdex_on(db_path, model(), &["search", "a photo", "-k", "20"]);
        let text = String::from_utf8_lossy(&text.stdout).into_owned();
        let line = |name: &str| text.lines().find(|l| l.contains(name)).unwrap_or_else(|| panic!("{name}: {text}"));
        assert!(line("IMG_0002.JPG").contains("IMG_0002.JPG  [live]  #"), "{text}");
        assert!(line("DSC_0003.JPG").contains("DSC_0003.JPG  [raw+jpeg]  #"), "{text}");
        assert!(line("SAM_0005.jpg").contains("SAM_0005.jpg  [motion]  #"), "{text}");
        let text = common::clipdex_on(db_path, model(), &["similar", &format!("#{}", pair.id), "-k", "20"]);
        let text = String::from_utf8_lossy(&text.stdout).into_owned();
        assert!(line_of(&text, "IMG_0002.JPG").contains("[live]"), "{text}");
        let shown = common::clipdex_on(db_path, model(), &["show", still.to_str().unwrap()]);
        let shown = String::from_utf8_lossy(&shown.stdout).into_owned();
        assert!(shown.starts_with(&format!("id       {live_id}  [live]\n")), "{shown}");
    }
}

fn line_of<'a>(text: &'a str, name: &str) -> &'a str {
    text.lines().find(|l| l.contains(name)).unwrap_or_else(|| panic!("{name}: {text}"))
}

#[test]
fn the_pairing_follows_the_folder() {
    if !common::video::have_ffmpeg() {
        return;
    }
    for db in test_databases() {
        let tmp = tempfile::tempdir().unwrap();
        // The MOV first: an ordinary video.
        let photos = photo_folder(tmp.path(), &["IMG_0002.mov"]);
        let lib = open(&db, &photos);
        let report = lib.index(&|_, _| {}).unwrap();
        assert_eq!(report.videos, 1, "{}: alone, a MOV is a video ({:?})", db.backend, lib.failures().unwrap());
        // Its still arrives: the pair forms, the video goes.
        std::fs::copy(fixture("IMG_0002.JPG"), photos.join("IMG_0002.JPG")).unwrap();
        let report = lib.index(&|_, _| {}).unwrap();
        assert_eq!((report.embedded, report.removed), (1, 1), "{}", db.backend);
        let hits = all(&lib);
        assert_eq!(hits.len(), 1, "{}: one item", db.backend);
        assert_eq!(hits[0].companions.live_video.as_deref(), Some(photos.join("IMG_0002.mov").as_path()));
        assert_eq!(lib.store().counts().unwrap().videos, 0, "{}", db.backend);
        // Another pass changes nothing.
        let report = lib.index(&|_, _| {}).unwrap();
        assert_eq!((report.embedded, report.removed, report.failed), (0, 0, 0), "{}", db.backend);
        // The still is deleted: the MOV is a video again.
        std::fs::remove_file(photos.join("IMG_0002.JPG")).unwrap();
        let report = lib.index(&|_, _| {}).unwrap();
        assert_eq!((report.videos, report.removed), (1, 1), "{}", db.backend);
        let hits = all(&lib);
        assert_eq!(hits.len(), 1);
        assert!(hits[0].path.ends_with("IMG_0002.mov") && hits[0].companions.live_video.is_none());
    }
}

/// `SAM_0005.jpg` with its ten-digit MicroVideoOffset replaced by `offset`.
fn with_micro_offset(offset: &str) -> Vec<u8> {
    let mut bytes = std::fs::read(fixture("SAM_0005.jpg")).unwrap();
    let key = b"MicroVideoOffset=\"";
    let at = bytes.windows(key.len()).position(|w| w == key).unwrap() + key.len();
    assert_eq!(offset.len(), 10);
    bytes[at..at + 10].copy_from_slice(offset.as_bytes());
    bytes
}

/// A JPEG with a maximal XMP segment of junk that claims a Motion Photo.
fn with_hostile_xmp() -> Vec<u8> {
    let jpeg = std::fs::read(fixture("DSC_0003.JPG")).unwrap();
    let mut xmp = b"http://ns.adobe.com/xap/1.0/\0<x:xmpmeta GCamera:MotionPhoto=\"1\" ".to_vec();
    while xmp.len() < 65_000 {
        xmp.extend_from_slice(
            b"<Container:Item Item:Semantic=\"MotionPhoto\" Item:Length=\"99999999999999999999999 <<\"'",
        );
    }
    xmp.truncate(65_000);
    let mut out = jpeg[..2].to_vec();
    out.extend_from_slice(&[0xFF, 0xE1]);
    out.extend_from_slice(&((xmp.len() + 2) as u16).to_be_bytes());
    out.extend_from_slice(&xmp);
    out.extend_from_slice(&jpeg[2..]);
    out
}

#[test]
fn bad_companions_are_recorded_problems_and_the_stills_index() {
    for db in test_databases() {
        let tmp = tempfile::tempdir().unwrap();
        let photos = photo_folder(tmp.path(), &["IMG_0002.JPG", "DSC_0003.JPG", "DSC_0003.DNG"]);
        // A corrupt MOV beside a still; a Live Photo whose MOV goes after pairing.
        let mut other = std::fs::read(fixture("DSC_0003.JPG")).unwrap();
        other.push(0); // another content than DSC_0003.JPG's
        std::fs::write(photos.join("BAD_0010.jpg"), other).unwrap();
        std::fs::write(photos.join("BAD_0010.MOV"), b"this is not a movie, just text".repeat(10)).unwrap();
        std::fs::copy(fixture("IMG_0002.mov"), photos.join("IMG_0002.mov")).unwrap();
        // Motion Photos whose offset is wrong, past the end, and one with hostile XMP.
        let len = std::fs::metadata(fixture("SAM_0005.jpg")).unwrap().len();
        std::fs::write(photos.join("WRONG.jpg"), with_micro_offset(&format!("{:010}", len - 1000))).unwrap();
        std::fs::write(photos.join("PAST.jpg"), with_micro_offset("9999999999")).unwrap();
        std::fs::write(photos.join("HOSTILE.jpg"), with_hostile_xmp()).unwrap();
        let lib = open(&db, &photos);
        let report = lib.index(&|_, _| {}).unwrap();
        assert_eq!(report.embedded, 6, "{}: every still indexes ({:?})", db.backend, lib.failures().unwrap());
        let failures = lib.failures().unwrap();
        assert_eq!(failures.len(), 1, "{}: {failures:?}", db.backend);
        assert_eq!(failures[0].0, photos.join("BAD_0010.MOV"));
        let reason = &failures[0].1.reason;
        assert!(reason.contains("Live Photo") && reason.contains("not a QuickTime movie"), "{reason}");
        assert!(reason.contains("BAD_0010.jpg"), "{reason}: names the still");
        let hits = all(&lib);
        assert_eq!(hits.len(), 6);
        let bad = named(&hits, "BAD_0010.jpg");
        assert_eq!(bad.companions.live_video.as_deref(), Some(photos.join("BAD_0010.MOV").as_path()));
        let problem = lib.image_details(bad.id).unwrap().live_video_problem.unwrap_or_default();
        assert!(problem.contains("not a QuickTime movie"), "show reports the pair's problem: {problem:?}");
        // A problem of that item, not an unreadable photo (the web UI's header counts those).
        let stats = lib.stats().unwrap();
        let counts = (stats.counts.failures, stats.unreadable, stats.companion_problems, stats.skipped_links);
        assert_eq!(counts, (1, 0, 1, 0), "{}", db.backend);
        for (name, why) in [("WRONG.jpg", "not an MP4"), ("PAST.jpg", "past the start"), ("HOSTILE.jpg", "Item:Length")]
        {
            let hit = named(&hits, name);
            assert_eq!(hit.companions.motion_video, None, "{name}");
            let details = lib.image_details(hit.id).unwrap();
            let problem = details.record.motion_video_problem.unwrap_or_default();
            assert!(problem.contains(why), "{name}: {problem:?}");
            let err = lib.motion_video(hit.id).unwrap_err().to_string();
            assert!(err.contains(why), "{name}: {err}");
        }
        // Another pass: the corrupt MOV stays recorded, nothing is redone.
        let report = lib.index(&|_, _| {}).unwrap();
        assert_eq!((report.embedded, report.failed), (0, 0), "{}", db.backend);
        assert_eq!(lib.failures().unwrap().len(), 1);
        // Repaired, the failure goes.
        std::fs::copy(fixture("IMG_0002.mov"), photos.join("BAD_0010.MOV")).unwrap();
        lib.index(&|_, _| {}).unwrap();
        assert_eq!(lib.failures().unwrap(), vec![], "{}", db.backend);
        // The MOV deleted after pairing: the still stays, without a live video to serve.
        let id = named(&hits, "IMG_0002.JPG").id;
        assert!(lib.live_video(id).is_ok());
        std::fs::remove_file(photos.join("IMG_0002.mov")).unwrap();
        let err = lib.live_video(id).unwrap_err().to_string();
        assert!(err.contains("not a Live Photo"), "{err}");
        assert_eq!(lib.image_details(id).unwrap().companions.live_video, None);
        let report = lib.index(&|_, _| {}).unwrap();
        assert_eq!((report.embedded, report.removed), (0, 0), "{}", db.backend);
        assert_eq!(all(&lib).len(), 6);
        // ... and the pair is reported: the still had a live video at the last pass.
        assert_eq!(report.failed, 1, "{}: the lost MOV is reported", db.backend);
        let gone = lib.failures().unwrap();
        assert_eq!(gone.len(), 1, "{}: {gone:?}", db.backend);
        assert_eq!(gone[0].0, photos.join("IMG_0002.mov"));
        assert!(gone[0].1.reason.contains("Live Photo") && gone[0].1.reason.contains("gone"), "{:?}", gone[0]);
        assert!(gone[0].1.reason.contains("IMG_0002.JPG"), "{:?}: names the still", gone[0]);
        let problem = lib.image_details(id).unwrap().live_video_problem.unwrap_or_default();
        assert!(problem.contains("gone"), "show reports the lost MOV: {problem:?}");
        // Reported once, and kept while the still is there without it.
        let report = lib.index(&|_, _| {}).unwrap();
        assert_eq!((report.embedded, report.failed), (0, 0), "{}", db.backend);
        assert_eq!(lib.failures().unwrap().len(), 1, "{}", db.backend);
        // The still deleted too: nothing left to report.
        std::fs::remove_file(photos.join("IMG_0002.JPG")).unwrap();
        lib.index(&|_, _| {}).unwrap();
        assert_eq!(lib.failures().unwrap(), vec![], "{}", db.backend);
    }
}

#[test]
fn live_photos_whose_names_differ_pair_by_content_identifier() {
    for db in test_databases() {
        let tmp = tempfile::tempdir().unwrap();
        // IMG_0007.JPG and IMG_0007_video.MOV carry the same identifier; LONE.JPG carries none.
        let photos = photo_folder(tmp.path(), &["IMG_0007.JPG", "IMG_0007_video.MOV"]);
        std::fs::copy(fixture("IMG_0002.JPG"), photos.join("LONE.JPG")).unwrap();
        let video = photos.join("IMG_0007_video.MOV");
        let lib = open(&db, &photos);
        let report = lib.index(&|_, _| {}).unwrap();
        assert_eq!(lib.failures().unwrap(), vec![], "{}", db.backend);
        assert_eq!((report.embedded, report.videos), (2, 0), "{}: the MOV is no video of its own", db.backend);
        let hits = all(&lib);
        assert_eq!(hits.len(), 2, "{}", db.backend);
        let live = named(&hits, "IMG_0007.JPG");
        assert_eq!(live.companions.live_video.as_deref(), Some(video.as_path()), "{}", db.backend);
        assert_eq!(named(&hits, "LONE.JPG").companions.live_video, None);
        let details = lib.image_details(live.id).unwrap();
        assert_eq!(details.companions.live_video.as_deref(), Some(video.as_path()), "{}: show", db.backend);
        assert_eq!(details.live_video_problem, None);
        assert_eq!(lib.live_video(live.id).unwrap(), video, "{}: served", db.backend);
        let lone = named(&hits, "LONE.JPG").id;
        let like = lib.search_like(lone, 1, &SearchFilter::default()).unwrap();
        assert_eq!(like[0].id, live.id, "{}: similar", db.backend);
        assert_eq!(like[0].companions.live_video.as_deref(), Some(video.as_path()), "{}: similar", db.backend);
        // The MOV, paired by identifier only, names its still.
        assert_eq!(lib.resolve_image(&video).unwrap(), live.id, "{}: show the MOV", db.backend);
        // Another pass changes nothing.
        let report = lib.index(&|_, _| {}).unwrap();
        assert_eq!((report.embedded, report.removed, report.failed), (0, 0, 0), "{}", db.backend);
        // The MOV deleted: reported; put back: paired again, the report gone.
        std::fs::remove_file(&video).unwrap();
        let report = lib.index(&|_, _| {}).unwrap();
        assert_eq!((report.embedded, report.failed), (0, 1), "{}", db.backend);
        let details = lib.image_details(live.id).unwrap();
        assert_eq!(details.companions.live_video, None);
        assert!(details.live_video_problem.unwrap_or_default().contains("gone"), "{}", db.backend);
        std::fs::copy(fixture("IMG_0007_video.MOV"), &video).unwrap();
        lib.index(&|_, _| {}).unwrap();
        assert_eq!(lib.failures().unwrap(), vec![], "{}", db.backend);
        assert_eq!(all(&lib).len(), 2, "{}", db.backend);
        assert_eq!(lib.image_details(live.id).unwrap().companions.live_video.as_deref(), Some(video.as_path()));
    }
}

macro_rules! app {
    ($state:expr) => {
        actix_web::test::init_service(
            App::new()
                .wrap_fn(|mut req, srv| {
                    use actix_web::http::header::{HOST, HeaderValue};
                    if !req.headers().contains_key(HOST) {
                        req.headers_mut().insert(HOST, HeaderValue::from_static("127.0.0.1:7878"));
                    }
                    actix_web::dev::Service::call(srv, req)
                })
                .configure(configure($state)),
        )
        .await
    };
}

/// Status, headers of interest (content type, content range) and body of a GET.
macro_rules! get {
    ($app:expr, $uri:expr, $range:expr) => {{
        let mut req = actix_web::test::TestRequest::get().uri(&$uri);
        if let Some(r) = $range {
            req = req.insert_header(("range", r));
        }
        let response = actix_web::test::call_service(&$app, req.to_request()).await;
        let status = response.status();
        let header = |name: &str| response.headers().get(name).map(|v| v.to_str().unwrap().to_string());
        let (kind, range) = (header("content-type"), header("content-range"));
        (status, kind, range, actix_web::test::read_body(response).await.to_vec())
    }};
}

#[actix_web::test]
async fn the_api_shows_companions_and_serves_the_videos_with_ranges() {
    for db in test_databases() {
        let tmp = tempfile::tempdir().unwrap();
        let photos = photo_folder(tmp.path(), &["IMG_0002.JPG", "IMG_0002.mov", "DSC_0003.JPG", "DSC_0003.DNG"]);
        std::fs::copy(fixture("PXL_0004.MP.jpg"), photos.join("PXL_0004.MP.jpg")).unwrap();
        let (lib, ids) = off(|| {
            let lib = open(&db, &photos);
            lib.index(&|_, _| {}).unwrap();
            let ids: Vec<(String, u64)> = all(&lib)
                .into_iter()
                .map(|h| (h.path.file_name().unwrap().to_string_lossy().into_owned(), h.id))
                .collect();
            (Arc::new(lib), ids)
        });
        let id = |name: &str| ids.iter().find(|(n, _)| n == name).unwrap().1;
        let app = app!(web::Data::new(AppState::new(lib.clone(), BackgroundIndexer::off(), &ServeOptions::default())));

        let (status, _, _, body) = get!(app, "/api/search?q=photo&k=10", None::<&str>);
        assert_eq!(status, StatusCode::OK);
        let results: Value = serde_json::from_slice(&body).unwrap();
        let results = results["results"].as_array().unwrap();
        assert_eq!(results.len(), 3, "{}: {results:?}", db.backend);
        let by_name = |name: &str| results.iter().find(|r| r["path"].as_str().unwrap().ends_with(name)).unwrap();
        assert_eq!(by_name("IMG_0002.JPG")["live_video"], photos.join("IMG_0002.mov").to_str().unwrap());
        assert_eq!(by_name("DSC_0003.JPG")["raw_path"], photos.join("DSC_0003.DNG").to_str().unwrap());
        assert!(by_name("PXL_0004.MP.jpg")["motion_video"]["length"].as_u64().unwrap() > 0);
        let (_, _, _, body) = get!(app, format!("/api/images/{}", id("DSC_0003.JPG")), None::<&str>);
        let details: Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(details["raw_path"], photos.join("DSC_0003.DNG").to_str().unwrap());

        // The Live Photo's MOV, whole and by range.
        let mov = std::fs::read(photos.join("IMG_0002.mov")).unwrap();
        let live = format!("/api/images/{}/live", id("IMG_0002.JPG"));
        let (status, kind, _, body) = get!(app, live.clone(), None::<&str>);
        assert_eq!((status, kind.as_deref()), (StatusCode::OK, Some("video/quicktime")));
        assert!(body == mov);
        let (status, _, range, body) = get!(app, live.clone(), Some("bytes=10-19"));
        assert_eq!((status, range), (StatusCode::PARTIAL_CONTENT, Some(format!("bytes 10-19/{}", mov.len()))));
        assert!(body == mov[10..20]);

        // The Motion Photo's MP4: its own bytes, ranges counted within them.
        let file = std::fs::read(photos.join("PXL_0004.MP.jpg")).unwrap();
        let mp4 = &file[mp4_start(&file) as usize..];
        let motion = format!("/api/images/{}/motion", id("PXL_0004.MP.jpg"));
        let (status, kind, _, body) = get!(app, motion.clone(), None::<&str>);
        assert_eq!((status, kind.as_deref()), (StatusCode::OK, Some("video/mp4")));
        assert!(body == mp4, "{}: the embedded MP4", db.backend);
        let (status, _, range, body) = get!(app, motion.clone(), Some("bytes=-8"));
        assert_eq!(status, StatusCode::PARTIAL_CONTENT);
        assert_eq!(range, Some(format!("bytes {}-{}/{}", mp4.len() - 8, mp4.len() - 1, mp4.len())));
        assert!(body == mp4[mp4.len() - 8..]);
        let (status, _, _, _) = get!(app, motion.clone(), Some(format!("bytes={}-", mp4.len())));
        assert_eq!(status, StatusCode::RANGE_NOT_SATISFIABLE);

        // Photos without them: 404 with a reason.
        for uri in
            [format!("/api/images/{}/live", id("DSC_0003.JPG")), format!("/api/images/{}/motion", id("IMG_0002.JPG"))]
        {
            let (status, _, _, body) = get!(app, uri.clone(), None::<&str>);
            assert_eq!(status, StatusCode::NOT_FOUND, "{uri}");
            let error: Value = serde_json::from_slice(&body).unwrap();
            assert!(error["error"].as_str().unwrap().contains("image"), "{uri}: {error}");
        }
        // A MOV that is a link out of the library's folders is not served.
        let outside = tmp.path().join("outside.mov");
        std::fs::copy(fixture("IMG_0002.mov"), &outside).unwrap();
        std::fs::remove_file(photos.join("IMG_0002.mov")).unwrap();
        std::os::unix::fs::symlink(&outside, photos.join("IMG_0002.mov")).unwrap();
        let (status, _, _, _) = get!(app, live.clone(), None::<&str>);
        assert_eq!(status, StatusCode::FORBIDDEN, "{}", db.backend);
        drop(app);
        off(move || drop(lib));
    }
}

#[test]
fn content_identifiers_are_read_from_both_halves() {
    use clipdex::photo::live_identifier::{movie_identifier, still_identifier};
    let id = "6E4B3A1C-2D5F-4A8B-9C0D-1E2F3A4B5C6D";
    assert_eq!(movie_identifier(&fixture("IMG_0007_video.MOV")).as_deref(), Some(id));
    assert_eq!(still_identifier(&fixture("IMG_0007.JPG")).as_deref(), Some(id));
    assert_eq!(movie_identifier(&fixture("IMG_0002.mov")), None);
    assert_eq!(still_identifier(&fixture("IMG_0002.JPG")), None);
}

#[test]
fn a_raw_jpeg_pair_whose_jpeg_is_broken_is_indexed_from_its_raw() {
    for db in test_databases() {
        let tmp = tempfile::tempdir().unwrap();
        let photos = photo_folder(tmp.path(), &["DSC_0003.DNG"]);
        std::fs::write(photos.join("DSC_0003.JPG"), b"a JPEG cut off by a full card").unwrap();
        // The reverse: a broken RAW beside a good JPEG.
        let mut good = std::fs::read(fixture("DSC_0003.JPG")).unwrap();
        good.push(0); // another content than the pair's JPEG once repaired
        std::fs::write(photos.join("GOOD_0001.JPG"), good).unwrap();
        std::fs::write(photos.join("GOOD_0001.DNG"), b"not a RAW at all").unwrap();
        let lib = open(&db, &photos);
        let report = lib.index(&|_, _| {}).unwrap();
        assert_eq!((report.embedded, report.failed), (2, 1), "{}: {:?}", db.backend, lib.failures().unwrap());
        assert_eq!(report.seen, report.embedded + report.failed, "{}: {report:?}", db.backend);
        let failures = lib.failures().unwrap();
        assert_eq!(failures.len(), 1, "{}: {failures:?}", db.backend);
        assert_eq!(failures[0].0, photos.join("DSC_0003.JPG"));
        // The pair is not lost from search: its RAW's preview is the item.
        let hits = all(&lib);
        assert_eq!(hits.len(), 2, "{}: {hits:?}", db.backend);
        let raw = named(&hits, "DSC_0003.DNG");
        assert_eq!(lib.resolve_image(&photos.join("DSC_0003.DNG")).unwrap(), raw.id);
        let good = named(&hits, "GOOD_0001.JPG");
        assert_eq!(good.companions.raw_path.as_deref(), Some(photos.join("GOOD_0001.DNG").as_path()));
        // Another pass keeps it so, and redoes nothing.
        let report = lib.index(&|_, _| {}).unwrap();
        let counts = (report.embedded, report.failed, report.removed, report.skipped_failures);
        assert_eq!(counts, (0, 0, 0, 1), "{}: {report:?}", db.backend);
        assert_eq!(all(&lib).len(), 2, "{}", db.backend);
        // The JPEG repaired: the pair is one item from its JPEG again.
        std::fs::copy(fixture("DSC_0003.JPG"), photos.join("DSC_0003.JPG")).unwrap();
        let report = lib.index(&|_, _| {}).unwrap();
        assert_eq!((report.embedded, report.removed), (1, 1), "{}: {report:?}", db.backend);
        assert_eq!(lib.failures().unwrap(), vec![], "{}", db.backend);
        let hits = all(&lib);
        assert_eq!(hits.len(), 2, "{}", db.backend);
        let pair = named(&hits, "DSC_0003.JPG");
        assert_eq!(pair.companions.raw_path.as_deref(), Some(photos.join("DSC_0003.DNG").as_path()));
    }
}

#[cfg(unix)]
#[test]
fn links_to_folders_outside_the_folders_are_not_followed_and_are_reported() {
    use std::os::unix::fs::symlink;
    for db in test_databases() {
        let tmp = tempfile::tempdir().unwrap();
        let photos = photo_folder(tmp.path(), &["IMG_0002.JPG"]);
        let elsewhere = tmp.path().join("elsewhere");
        std::fs::create_dir_all(&elsewhere).unwrap();
        std::fs::copy(fixture("DSC_0003.JPG"), elsewhere.join("private.jpg")).unwrap();
        std::fs::copy(fixture("SAM_0005.jpg"), elsewhere.join("other.jpg")).unwrap();
        // A link to a folder elsewhere (not followed), a link to a file elsewhere (a linked
        // album: followed), a link to a folder inside (followed) and one to `/proc` (never
        // walked; a link to `/` or another parent is a loop, reported as such).
        symlink(&elsewhere, photos.join("linked-folder")).unwrap();
        symlink(elsewhere.join("other.jpg"), photos.join("linked.jpg")).unwrap();
        std::fs::create_dir_all(photos.join("inner")).unwrap();
        symlink(photos.join("inner"), photos.join("inner-again")).unwrap();
        std::fs::copy(fixture("IMG_0002.JPG"), photos.join("inner/copy.jpg")).unwrap();
        symlink("/proc", photos.join("everything")).unwrap();
        let lib = open(&db, &photos);
        let report = lib.index(&|_, _| {}).unwrap();
        let hits = all(&lib);
        assert_eq!(hits.len(), 2, "{}: IMG_0002 and the linked file: {hits:?}", db.backend);
        assert!(hits.iter().all(|h| !h.path.starts_with(photos.join("linked-folder"))), "{hits:?}");
        assert_eq!((report.embedded, report.linked, report.failed), (2, 2, 2), "{}: {report:?}", db.backend);
        let failures = lib.failures().unwrap();
        let reasons: Vec<(&Path, &str)> = failures.iter().map(|(p, f)| (p.as_path(), f.reason.as_str())).collect();
        assert_eq!(reasons.len(), 2, "{}: {reasons:?}", db.backend);
        for (link, target) in [("linked-folder", "elsewhere ("), ("everything", ": /proc (")] {
            let (_, reason) = reasons.iter().find(|(p, _)| *p == photos.join(link)).unwrap();
            assert!(reason.starts_with("not followed: a symbolic link to a folder outside"), "{reason}");
            assert!(reason.contains(target), "{reason}");
        }
        let stats = lib.stats().unwrap();
        assert_eq!((stats.unreadable, stats.skipped_links), (0, 2), "{}", db.backend);
        // Reported once; the next pass skips them as any failure in the same state.
        let report = lib.index(&|_, _| {}).unwrap();
        assert_eq!((report.failed, report.skipped_failures), (0, 2), "{}: {report:?}", db.backend);
        assert_eq!(report.seen, report.unchanged + report.skipped_failures, "{}: {report:?}", db.backend);
        // Once that place is a folder of the library, the link leads inside and is followed.
        lib.add_root(&elsewhere).unwrap();
        lib.index(&|_, _| {}).unwrap();
        assert_eq!(lib.stats().unwrap().skipped_links, 1, "{}: {:?}", db.backend, lib.failures().unwrap());
        assert_eq!(all(&lib).len(), 3, "{}", db.backend);
    }
}
