//! Places: photos with EXIF GPS positions in six countries (tests/fixtures/places, written by
//! tools/make_place_fixtures.py) resolve to the GeoNames city each was taken in; `place:`
//! finds them by any of a city's, region's or country's names, `near:` by distance; a photo
//! without GPS has no place and matches neither. On every backend.

use std::path::{Path, PathBuf};

use clipdex::library::{Facet, QueryOptions};
use clipdex::query::SearchFilter;
use clipdex::{Library, LibraryConfig};
use serde_json::Value;

mod common;
use common::backends::test_databases;
use common::{clipdex_on, ok_json};

fn model() -> String {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/clip-tiny-p32").to_string_lossy().into_owned()
}

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/places")
}

/// Each fixture and the GeoNames row (cities1000) its position must resolve to, copied by
/// hand from geonames.org: id, name, admin1 name, country.
const ROWS: &[(&str, u32, &str, &str, &str)] = &[
    ("munich.jpg", 2867714, "Munich", "Bavaria", "Germany"),
    ("lisbon.jpg", 2267057, "Lisbon", "Lisbon", "Portugal"),
    ("rio.jpg", 3451190, "Rio de Janeiro", "Rio de Janeiro", "Brazil"),
    ("sydney.jpg", 2147714, "Sydney", "New South Wales", "Australia"),
    ("tokyo.jpg", 1850147, "Tokyo", "Tokyo", "Japan"),
    ("reykjavik.jpg", 3413829, "Reykjavík", "Capital Region", "Iceland"),
];

fn names(library: &Library, query: &str) -> Vec<String> {
    let options = QueryOptions { k: 20, allow_paths: true, ..Default::default() };
    let mut found: Vec<String> = library
        .search_query(query, &SearchFilter::default(), &options)
        .unwrap_or_else(|e| panic!("{query}: {e}"))
        .iter()
        .map(|r| r.hit.path.file_name().unwrap().to_string_lossy().into_owned())
        .collect();
    found.sort();
    found
}

#[test]
fn photos_resolve_to_their_city_and_are_found_by_place_and_distance() {
    for db in test_databases() {
        eprintln!("places on {}", db.backend);
        let tmp = tempfile::tempdir().unwrap();
        let photos = tmp.path().join("photos");
        std::fs::create_dir_all(&photos).unwrap();
        for entry in std::fs::read_dir(fixtures()).unwrap() {
            let path = entry.unwrap().path();
            std::fs::copy(&path, photos.join(path.file_name().unwrap())).unwrap();
        }
        let photos = std::fs::canonicalize(&photos).unwrap();
        let library = Library::open(LibraryConfig::new(db.location.clone(), model())).unwrap();
        library.add_root(&photos).unwrap();
        let report = library.index(&|_, _| {}).unwrap();
        assert_eq!((report.embedded, report.failed), (7, 0));

        // Each photo's place is its GeoNames row.
        for &(file, geonameid, city, region, country) in ROWS {
            let id = library.resolve_image(&photos.join(file)).unwrap();
            let details = library.image_details(id).unwrap();
            let place = details.place.unwrap_or_else(|| panic!("{file}: no place"));
            assert_eq!(
                (place.geonameid, place.city.as_str(), place.region.as_deref(), place.country.as_str()),
                (geonameid, city, Some(region), country),
                "{file}"
            );
            let (lat, lon) = details.record.gps.unwrap();
            assert_eq!((place.lat, place.lon), (lat, lon));
        }
        let nogps = library.resolve_image(&photos.join("nogps.jpg")).unwrap();
        assert_eq!(library.image_details(nogps).unwrap().place, None);

        // place: by the city's name in several languages, its region's or country's name.
        for (query, want) in [
            ("photo place:München", vec!["munich.jpg"]),
            ("photo place:Munich", vec!["munich.jpg"]),
            ("photo place:MUNCHEN", vec!["munich.jpg"]),
            ("photo place:ミュンヘン", vec!["munich.jpg"]),
            ("photo place:Lisboa", vec!["lisbon.jpg"]),
            ("photo place:Lissabon", vec!["lisbon.jpg"]),
            ("photo place:東京", vec!["tokyo.jpg"]),
            ("photo place:reykjavik", vec!["reykjavik.jpg"]),
            ("photo place:Bavaria", vec!["munich.jpg"]),
            ("photo place:\"New South Wales\"", vec!["sydney.jpg"]),
            ("photo place:Brazil", vec!["rio.jpg"]),
            // Countries in other languages (ISO 3166 names' translations).
            ("photo place:Deutschland", vec!["munich.jpg"]),
            ("photo place:Allemagne", vec!["munich.jpg"]),
            ("photo place:Alemania", vec!["munich.jpg"]),
            ("photo place:日本", vec!["tokyo.jpg"]),
            ("photo place:Japon", vec!["tokyo.jpg"]),
            ("photo place:Brasilien", vec!["rio.jpg"]),
            ("photo place:Ísland", vec!["reykjavik.jpg"]),
            ("photo place:\"Federal Republic of Germany\"", vec!["munich.jpg"]),
            ("photo place:Österreich", vec![]),
            // Regions in other languages (ISO 3166-2 subdivisions' names and translations).
            ("photo place:Bayern", vec!["munich.jpg"]),
            ("photo place:Baviera", vec!["munich.jpg"]),
            ("photo place:巴伐利亚", vec!["munich.jpg"]),
            ("photo place:Bavière", vec!["munich.jpg"]),
            ("photo place:\"Nueva Gales del Sur\"", vec!["sydney.jpg"]),
            ("photo place:Nouvelle-Galles-du-Sud", vec!["sydney.jpg"]),
            ("photo place:东京都", vec!["tokyo.jpg"]),
            ("photo place:Bayern place:Deutschland", vec!["munich.jpg"]),
            ("photo place:Bayern place:Japan", vec![]),
            ("photo place:Germany place:Munich", vec!["munich.jpg"]),
            ("photo place:Germany place:Lisbon", vec![]),
        ] {
            assert_eq!(names(&library, query), want, "{query}");
        }
        // lens: a substring of the lens's make and model (EXIF LensMake, LensModel), any case.
        for (query, want) in [
            ("photo lens:xf23", vec!["munich.jpg"]),
            ("photo lens:FUJIFILM", vec!["munich.jpg"]),
            ("photo lens:\"f/1.8 stm\"", vec!["lisbon.jpg"]),
            ("photo lens:canon lens:50mm", vec!["lisbon.jpg"]),
            ("photo lens:canon lens:xf23", vec![]),
            ("photo lens:mm", vec!["lisbon.jpg", "munich.jpg"]),
            ("photo lens:nikkor", vec![]),
            ("lens:EF50", vec!["lisbon.jpg"]),
        ] {
            assert_eq!(names(&library, query), want, "{query}");
        }
        let munich = library.resolve_image(&photos.join("munich.jpg")).unwrap();
        assert_eq!(library.image_details(munich).unwrap().record.lens.as_deref(), Some("FUJIFILM XF23mmF2 R WR"));

        // near: within a distance, both hemispheres; a photo without GPS is never near.
        for (query, want) in [
            ("photo near:48.14,11.58,5", vec!["munich.jpg"]),
            ("photo near:-33.87,151.21,1", vec!["sydney.jpg"]),
            ("photo near:-22.9,-43.2,10", vec!["rio.jpg"]),
            ("photo near:48.8566,2.3522,300", vec![]),
            // Paris to Munich is 685 km.
            ("photo near:48.8566,2.3522,700", vec!["munich.jpg"]),
            (
                "photo near:0,0,20000",
                vec!["lisbon.jpg", "munich.jpg", "reykjavik.jpg", "rio.jpg", "sydney.jpg", "tokyo.jpg"],
            ),
        ] {
            assert_eq!(names(&library, query), want, "{query}");
        }
        // Filters alone list what passes them.
        assert_eq!(names(&library, "place:Lisboa"), ["lisbon.jpg"]);
        assert_eq!(names(&library, "near:0,0,20000").len(), 6);
        let all = names(&library, "photo");
        assert!(all.contains(&"nogps.jpg".to_string()), "{all:?}");
        let unknown = library.search_query("photo place:Xyzzyville", &SearchFilter::default(), &Default::default());
        assert!(unknown.unwrap_err().to_string().contains("place:Xyzzyville"));

        // Facets of what a query matched.
        let everything = clipdex::query::syntax::parse("photo").unwrap();
        let embed = |t: &str| library.embed_text(t);
        let kinds = [Facet::Place, Facet::Camera, Facet::Year];
        let facets = library.search_facets(&everything, &SearchFilter::default(), None, true, &kinds, &embed).unwrap();
        assert_eq!(facets["place"].len(), 6, "{facets:?}");
        let munich = facets["place"].iter().find(|p| p.value == "Munich").unwrap();
        assert_eq!(
            (munich.region.clone(), munich.country.as_deref(), munich.count),
            (Some(Some("Bavaria".into())), Some("Germany"), 1)
        );
        assert_eq!(facets["camera"].len(), 1);
        assert_eq!((facets["camera"][0].value.as_str(), facets["camera"][0].count), ("FixtureCam", 6));
        assert_eq!(facets["year"].iter().map(|y| y.count).sum::<u64>(), 7);
        let germany = clipdex::query::syntax::parse("place:Germany").unwrap();
        let facets =
            library.search_facets(&germany, &SearchFilter::default(), None, true, &[Facet::Place], &embed).unwrap();
        assert_eq!(facets["place"].iter().map(|p| (p.value.as_str(), p.count)).collect::<Vec<_>>(), [("Munich", 1)]);

        // Counts of the library's places.
        let counts = library.place_counts().unwrap();
        assert_eq!((counts.located, counts.unplaced, counts.places.len()), (6, 0, 6));
        assert!(counts.places.iter().all(|p| p.count == 1));
        assert!(counts.places.iter().any(|p| p.city == "Munich" && p.region.as_deref() == Some("Bavaria")));
        drop(library);

        // The binary: `places --json`, `show --json`, and places in search results.
        let db_arg = PathBuf::from(db.arg());
        let places = ok_json(clipdex_on(&db_arg, model(), &["places", "--json"]));
        assert_eq!(places["located"], 6);
        assert_eq!(places["places"].as_array().unwrap().len(), 6);
        let shown = ok_json(clipdex_on(&db_arg, model(), &["show", "--json", &format!("{nogps}")]));
        assert_eq!(shown["place"], Value::Null);
        let found = ok_json(clipdex_on(&db_arg, model(), &["search", "photo place:Lisboa", "--json"]));
        let results = found["results"].as_array().unwrap();
        assert_eq!(results.len(), 1);
        assert_eq!(results[0]["place"]["city"], "Lisbon");
        assert_eq!(results[0]["place"]["country"], "Portugal");
        assert_eq!(results[0]["place"]["geonameid"], 2267057);
        let text = clipdex_on(&db_arg, model(), &["places"]);
        assert!(String::from_utf8_lossy(&text.stdout).contains("      1  Munich, Bavaria, Germany"));
    }
}

/// A video whose container records where it was filmed (an MP4's `location`, QuickTime's
/// `©xyz`: ISO 6709, as phones write it and FFmpeg's `-metadata location=` does) has that place;
/// one without has none. On every backend.
#[test]
fn videos_have_the_place_their_container_records() {
    if !common::video::have_ffmpeg() {
        return;
    }
    for db in test_databases() {
        eprintln!("video places on {}", db.backend);
        let tmp = tempfile::tempdir().unwrap();
        let videos = tmp.path().join("videos");
        std::fs::create_dir_all(&videos).unwrap();
        let videos = std::fs::canonicalize(&videos).unwrap();
        let make = |name: &str, location: Option<&str>| {
            let path = videos.join(name);
            let mut args = vec!["-f", "lavfi", "-i", "testsrc=duration=1:size=64x48:rate=5"];
            if let Some(location) = location {
                args.extend(["-metadata", location]);
            }
            args.extend(["-c:v", "libx264", "-pix_fmt", "yuv420p", path.to_str().unwrap()]);
            common::video::ffmpeg(&args);
        };
        make("lisbon.mp4", Some("location=+38.7255-009.1495/"));
        make("sydney.mov", Some("location=-33.8690+151.2080+012.000/"));
        make("nowhere.mp4", None);
        let library = Library::open(LibraryConfig::new(db.location.clone(), model())).unwrap();
        library.add_root(&videos).unwrap();
        let report = library.index(&|_, _| {}).unwrap();
        assert_eq!((report.embedded, report.failed), (3, 0));
        for (file, geonameid, city, country) in
            [("lisbon.mp4", 2267057, "Lisbon", "Portugal"), ("sydney.mov", 2147714, "Sydney", "Australia")]
        {
            let id = library.resolve_image(&videos.join(file)).unwrap();
            let place = library.image_details(id).unwrap().place.unwrap_or_else(|| panic!("{file}: no place"));
            assert_eq!((place.geonameid, place.city.as_str(), place.country.as_str()), (geonameid, city, country));
        }
        let nowhere = library.resolve_image(&videos.join("nowhere.mp4")).unwrap();
        assert_eq!(library.image_details(nowhere).unwrap().place, None);
        assert_eq!(names(&library, "pattern place:Lissabon"), ["lisbon.mp4"]);
        assert_eq!(names(&library, "place:Australia"), ["sydney.mov"]);
        assert_eq!(names(&library, "pattern near:38.72,-9.14,5"), ["lisbon.mp4"]);
    }
}

/// How fast the place data loads and a position is looked up (a printed figure, not an
/// assertion).
#[test]
fn lookup_speed() {
    let started = std::time::Instant::now();
    let places = clipdex::places::gazetteer().unwrap();
    let loaded = started.elapsed();
    let mut x: u64 = 0x2545_f491_4f6c_dd1d;
    let mut next = || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        (x % 1_000_000) as f64 / 1_000_000.0
    };
    let positions: Vec<(f64, f64)> = (0..100_000).map(|_| (next() * 140.0 - 60.0, next() * 360.0 - 180.0)).collect();
    let started = std::time::Instant::now();
    let found = positions.iter().filter(|(lat, lon)| places.nearest_city(*lat, *lon).is_some()).count();
    let per = started.elapsed() / positions.len() as u32;
    let started = std::time::Instant::now();
    assert!(!places.resolve("München").is_empty());
    let names = started.elapsed();
    eprintln!(
        "places: {} cities loaded in {loaded:?}; {per:?} per lookup ({found} of {} random positions within \
         {} km of a city); name index built in {names:?}",
        places.len(),
        positions.len(),
        clipdex::places::MAX_DISTANCE_KM
    );
}

/// A PostgreSQL library stored before places were (schema 5) gets its images' places when it
/// is opened (the migration geocodes them), and `place:` finds them in SQL.
#[test]
fn a_postgres_library_from_before_places_is_geocoded_by_its_migration() {
    let Some(pg) = common::backends::postgres_database() else { return };
    let location = clipdex::store::DbLocation::Postgres(pg.url.clone());
    let record = |i: u64, gps| clipdex::store::ImageRecord {
        hash: format!("{i:064x}"),
        size: 1,
        width: 10,
        height: 10,
        modified: 1_700_000_000 + i as i64,
        taken: None,
        camera: None,
        gps,
        lens: None,
        video: None,
        motion_video: None,
        motion_video_problem: None,
    };
    {
        let library = Library::open(LibraryConfig::new(location.clone(), model())).unwrap();
        let dim = library.embed_text("x").unwrap().len();
        let store = library.store();
        store.set_model(&model(), dim).unwrap();
        let v = |i: usize| (0..dim).map(|j| if j == i { 1.0 } else { 0.0 }).collect::<Vec<f32>>();
        store.commit_image(Path::new("/x/lisbon.jpg"), 1, 1, &record(1, Some((38.7251, -9.1498))), &v(0)).unwrap();
        store.commit_image(Path::new("/x/munich.jpg"), 1, 1, &record(2, Some((48.1374, 11.5755))), &v(1)).unwrap();
        store.commit_image(Path::new("/x/none.jpg"), 1, 1, &record(3, None), &v(2)).unwrap();
    }
    // Back to schema 5 (no place column, no trigram index of schema 7), as a library stored by an
    // older clipdex.
    common::backends::off(|| {
        let mut client = postgres::Client::connect(&pg.url, postgres::NoTls).unwrap();
        client
            .batch_execute(
                "ALTER TABLE images DROP COLUMN place; DROP INDEX texts_terms_trigrams; \
                 DELETE FROM schema_migrations WHERE version >= 6",
            )
            .unwrap();
    });
    let library = Library::open(LibraryConfig::new(location, model())).unwrap();
    let places: Vec<(String, Option<i64>)> = common::backends::off(|| {
        let mut client = postgres::Client::connect(&pg.url, postgres::NoTls).unwrap();
        let rows = client
            .query("SELECT p.path, i.place FROM images i JOIN paths p ON p.image_id = i.id ORDER BY p.path", &[])
            .unwrap();
        rows.iter().map(|r| (String::from_utf8(r.get::<_, Vec<u8>>(0)).unwrap(), r.get(1))).collect()
    });
    assert_eq!(
        places,
        [
            ("/x/lisbon.jpg".to_string(), Some(2267057)),
            ("/x/munich.jpg".to_string(), Some(2867714)),
            ("/x/none.jpg".to_string(), None)
        ]
    );
    assert_eq!(names(&library, "photo place:Lissabon"), ["lisbon.jpg"]);
    assert_eq!(names(&library, "photo place:Germany"), ["munich.jpg"]);
    assert_eq!(names(&library, "photo near:38.7,-9.1,10"), ["lisbon.jpg"]);
}
