//! Re-dating, on every backend: a photo without an EXIF date that is `touch`ed (its content
//! unchanged) takes the file's new time as its date, whether `clipdex index` finds it or the
//! watcher of a running `serve`; the CLI reports it, `show` prints the new date, and the
//! timeline API puts the photo where its new date belongs.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant, SystemTime};

use common::backends::test_databases;
use common::{clipdex_on, fixtures, ok_json, picture, start_server};
use serde_json::Value;

/// 1 June of `year` at noon UTC, in seconds (2020 to 2023).
fn june(year: u64) -> u64 {
    1_590_969_600 + 43_200 + (year - 2020) * 365 * 86_400 + u64::from(year > 2020) * 86_400
}

/// Sets a file's modification time, as `touch -d` does.
fn touch(path: &Path, seconds: u64) {
    let file = std::fs::File::options().write(true).open(path).unwrap();
    file.set_modified(SystemTime::UNIX_EPOCH + Duration::from_secs(seconds)).unwrap();
}

fn model() -> PathBuf {
    fixtures().join("clip-tiny-p32")
}

/// The timeline's first page as (id, date), newest first.
fn timeline(url: &str) -> Vec<(u64, i64)> {
    let page: Value = ureq::get(&format!("{url}/api/timeline")).call().unwrap().into_json().unwrap();
    page["items"].as_array().unwrap().iter().map(|i| (i["id"].as_u64().unwrap(), i["date"].as_i64().unwrap())).collect()
}

#[test]
fn a_touched_photo_is_re_dated_by_index_and_by_the_watcher_of_serve() {
    for test_db in test_databases() {
        let tmp = tempfile::tempdir().unwrap();
        let photos = tmp.path().join("photos");
        std::fs::create_dir_all(&photos).unwrap();
        let (a, b) = (photos.join("a.png"), photos.join("b.png"));
        picture(1).save(&a).unwrap();
        picture(2).save(&b).unwrap();
        touch(&a, june(2020));
        touch(&b, june(2021));
        let arg = test_db.arg();
        let db = Path::new(&arg);
        let run = |args: &[&str]| clipdex_on(db, model(), args);
        assert!(run(&["add", photos.to_str().unwrap()]).status.success());
        let report = ok_json(run(&["index", "--json"]));
        assert_eq!((report["embedded"].as_u64(), report["redated"].as_u64()), (Some(2), Some(0)), "{report}");
        let shown = |path: &Path| ok_json(run(&["show", path.to_str().unwrap(), "--json"]));
        let id_a = shown(&a)["id"].as_u64().unwrap();
        let id_b = shown(&b)["id"].as_u64().unwrap();
        assert_eq!(shown(&a)["date"].as_u64(), Some(june(2020)), "{}", test_db.backend);

        // Re-dated by hand: the next pass finds the same content and takes the new time.
        touch(&a, june(2022));
        let report = ok_json(run(&["index", "--json"]));
        assert_eq!(
            (report["embedded"].as_u64(), report["linked"].as_u64(), report["redated"].as_u64()),
            (Some(0), Some(1), Some(1)),
            "{}: {report}",
            test_db.backend
        );
        assert_eq!(shown(&a)["date"].as_u64(), Some(june(2022)), "{}", test_db.backend);
        assert_eq!(shown(&a)["id"].as_u64(), Some(id_a), "the same image, not a new one");
        touch(&a, june(2022) + 3600);
        let out = run(&["index"]);
        assert!(String::from_utf8_lossy(&out.stdout).contains("1 touched photos re-dated"), "{out:?}");

        // A copy with a newer time is the same image: its date stays.
        std::fs::copy(&b, photos.join("copy of b.png")).unwrap();
        let report = ok_json(run(&["index", "--json"]));
        assert_eq!((report["linked"].as_u64(), report["redated"].as_u64()), (Some(1), Some(0)), "{report}");
        assert_eq!(shown(&b)["date"].as_u64(), Some(june(2021)), "{}", test_db.backend);

        // The timeline follows; then `serve`'s watcher re-dates a photo touched while it runs.
        let mut serve = Command::new(env!("CARGO_BIN_EXE_clipdex"));
        serve.arg("--db").arg(db).arg("--model").arg(model());
        serve.args(["serve", "--bind", "127.0.0.1:0", "--debounce-ms", "300"]);
        let (_server, url) = start_server(serve);
        let expected = vec![(id_a, (june(2022) + 3600) as i64), (id_b, june(2021) as i64)];
        assert_eq!(timeline(&url), expected, "{}", test_db.backend);
        touch(&b, june(2023));
        let deadline = Instant::now() + Duration::from_secs(60);
        let mut seen = timeline(&url);
        while seen.first() != Some(&(id_b, june(2023) as i64)) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(200));
            seen = timeline(&url);
        }
        assert_eq!(
            seen,
            vec![(id_b, june(2023) as i64), (id_a, (june(2022) + 3600) as i64)],
            "{}: the watcher's pass did not re-date b",
            test_db.backend
        );
    }
}
