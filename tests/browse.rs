//! Browsing without a query, on every backend: the timeline's pages cover the library once,
//! newest first, whatever happens between pages; months and the scrubber's jump; a folder's
//! timeline; the folders view with its counts. Records are committed straight into the store
//! (no model needed): what is tested is the order and the paging.

mod common;

use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};

use clipdex::library::TimelineCursor;
use clipdex::store::{ImageRecord, VideoMeta, month_of};
use clipdex::{Library, LibraryConfig};
use common::backends::test_databases;

/// Day `d` of 2024 at noon, in seconds.
fn day(d: i64) -> i64 {
    1_704_067_200 + d * 86_400 + 43_200
}

fn record(c: usize, taken: Option<i64>, modified: i64, video: bool) -> ImageRecord {
    ImageRecord {
        hash: format!("{c:064x}"),
        size: 100,
        width: 40 + c as u32,
        height: 30,
        modified,
        taken,
        camera: None,
        gps: None,
        lens: None,
        video: video.then(|| VideoMeta { duration: 3.0, codec: "h264".into(), poster: 1.0 }),
        motion_video: None,
        motion_video_problem: None,
    }
}

struct Fixture {
    library: Library,
    /// Every image's (date, id), and its path.
    items: Vec<((i64, u64), PathBuf)>,
}

/// 40 items over about five months in `/photos/{2024,2024/trip,2024b}` and `/more`: every
/// third has no EXIF date (its file time counts), pairs share a date (ties go by id), one in
/// seven is a video.
fn fixture(location: clipdex::store::DbLocation) -> Fixture {
    let library = Library::open(LibraryConfig::new(location, "test-model")).unwrap();
    let store = library.store();
    store.set_model("test-model", 4).unwrap();
    for root in ["/photos", "/more"] {
        store.add_root(Path::new(root)).unwrap();
    }
    let mut items = Vec::new();
    for c in 0..40usize {
        let date = day((c as i64 * 37) % 150 / 2 * 2);
        let (taken, modified) = if c % 3 == 0 { (None, date) } else { (Some(date), day(300)) };
        let folder = ["/photos/2024", "/photos/2024/trip", "/photos/2024b", "/more"][c % 4];
        let path = PathBuf::from(format!("{folder}/{c:02}.jpg"));
        let id =
            store.commit_image(&path, 100, 1, &record(c, taken, modified, c % 7 == 0), &[1.0, 0.0, 0.0, 0.0]).unwrap();
        items.push(((date, id), path));
    }
    // A second file of the first image, in another folder: one item, counted once per folder.
    let copy = PathBuf::from("/more/copy-of-00.jpg");
    store.link_path(&copy, items[0].0.1, 100, 1).unwrap();
    Fixture { library, items }
}

/// Every page of the timeline (of `folder`), `limit` at a time: each page's ids.
fn all_pages(library: &Library, limit: usize, folder: Option<&Path>) -> Vec<Vec<u64>> {
    let mut pages = Vec::new();
    let mut cursor = None;
    loop {
        let page = library.timeline(cursor, limit, folder).unwrap();
        assert!(page.items.len() <= limit);
        pages.push(page.items.iter().map(|i| i.id).collect());
        match page.next {
            Some(next) => cursor = Some(next.parse::<TimelineCursor>().unwrap()),
            None => return pages,
        }
    }
}

fn newest_first(items: &[((i64, u64), PathBuf)], keep: impl Fn(&Path) -> bool) -> Vec<u64> {
    let mut keys: Vec<(i64, u64)> = items.iter().filter(|(_, p)| keep(p)).map(|(k, _)| *k).collect();
    keys.sort_unstable_by(|a, b| b.cmp(a));
    keys.dedup();
    keys.into_iter().map(|(_, id)| id).collect()
}

#[test]
fn timeline_pages_cover_the_library_once_newest_first() {
    for db in test_databases() {
        let f = fixture(db.location.clone());
        let want = newest_first(&f.items, |_| true);
        for limit in [1, 7, 40, 100] {
            let pages = all_pages(&f.library, limit, None);
            let got: Vec<u64> = pages.concat();
            assert_eq!(got, want, "{}: limit {limit}", db.backend);
            assert!(
                pages.iter().rev().skip(1).all(|p| p.len() == limit),
                "{}: only the last page is short",
                db.backend
            );
        }
        let page = f.library.timeline(None, 40, None).unwrap();
        for item in &page.items {
            let record = f.library.store().image(item.id).unwrap().unwrap();
            assert_eq!(item.date, record.date());
            assert_eq!((item.width, item.height), (record.width, record.height));
            assert_eq!(item.month, month_of(item.date));
            assert_eq!(item.kind, if record.is_video() { "video" } else { "photo" });
        }
        assert!(page.items.iter().any(|i| i.kind == "video"), "videos are in the timeline");
    }
}

#[test]
fn a_page_after_a_cursor_stays_put_when_the_library_changes() {
    for db in test_databases() {
        let f = fixture(db.location.clone());
        let first = f.library.timeline(None, 10, None).unwrap();
        let cursor: TimelineCursor = first.next.clone().unwrap().parse().unwrap();
        // One newer than everything (it belongs before the cursor) and one among the rest.
        let store = f.library.store();
        store
            .commit_image(Path::new("/photos/new.jpg"), 1, 1, &record(100, Some(day(400)), 0, false), &[0.0; 4])
            .unwrap();
        let old = store
            .commit_image(Path::new("/photos/old.jpg"), 1, 1, &record(101, Some(day(-50)), 0, false), &[0.0; 4])
            .unwrap();
        let mut rest = Vec::new();
        let mut cursor = Some(cursor);
        while let Some(c) = cursor {
            let page = f.library.timeline(Some(c), 10, None).unwrap();
            rest.extend(page.items.iter().map(|i| i.id));
            cursor = page.next.map(|n| n.parse().unwrap());
        }
        let mut want = newest_first(&f.items, |_| true);
        want.push(old);
        let shown: Vec<u64> = first.items.iter().map(|i| i.id).chain(rest).collect();
        assert_eq!(
            shown, want,
            "{}: nothing shown twice or skipped; the new photo is on the first page only",
            db.backend
        );
    }
}

#[test]
fn months_count_the_items_and_a_month_jump_starts_at_its_newest() {
    for db in test_databases() {
        let f = fixture(db.location.clone());
        let mut want = BTreeMap::<String, u64>::new();
        for ((date, _), _) in f.items.iter() {
            *want.entry(month_of(*date)).or_default() += 1;
        }
        let months = f.library.timeline_months(None).unwrap();
        let got: Vec<(String, u64)> = months.iter().map(|m| (m.month.clone(), m.count)).collect();
        assert_eq!(got, want.clone().into_iter().rev().collect::<Vec<_>>(), "{}", db.backend);
        assert!(months.len() >= 4, "the fixture spans months");
        let all = newest_first(&f.items, |_| true);
        for m in &months {
            let page = f.library.timeline(Some(TimelineCursor::month_start(&m.month).unwrap()), 5, None).unwrap();
            assert_eq!(page.items[0].month, m.month, "{}: a jump to {} starts in it", db.backend, m.month);
            let at = all.iter().position(|id| *id == page.items[0].id).unwrap();
            assert!(at == 0 || f.library.timeline(None, at, None).unwrap().items.iter().all(|i| i.month > m.month));
        }
        // A month with nothing in it starts at the next older item.
        let page = f.library.timeline(Some(TimelineCursor::month_start("2030-01").unwrap()), 1, None).unwrap();
        assert_eq!(page.items[0].id, all[0]);
    }
}

#[test]
fn a_folders_timeline_holds_what_is_at_or_under_it() {
    for db in test_databases() {
        let f = fixture(db.location.clone());
        let folder = Path::new("/photos/2024");
        let want = newest_first(&f.items, |p| p.starts_with(folder));
        assert_eq!(
            all_pages(&f.library, 4, Some(folder)).concat(),
            want,
            "{}: /photos/2024b is not under it",
            db.backend
        );
        let spelt_otherwise = all_pages(&f.library, 100, Some(Path::new("/photos/./2024/"))).concat();
        assert_eq!(spelt_otherwise, want, "{}: the same folder with a trailing slash", db.backend);
        assert_eq!(all_pages(&f.library, 100, Some(Path::new("/"))).concat(), newest_first(&f.items, |_| true));
        let file = all_pages(&f.library, 100, Some(Path::new("/photos/2024/trip/01.jpg"))).concat();
        assert_eq!(file.len(), 1, "{}: a file is at itself", db.backend);
        let page = f.library.timeline(None, 100, Some(folder)).unwrap();
        assert!(page.items.iter().all(|i| i.path.starts_with(folder)));
        // The image with a second file under /more shows that file in /more's timeline.
        let more = f.library.timeline(None, 100, Some(Path::new("/more"))).unwrap();
        let first = f.items[0].0.1;
        let shown = more.items.iter().find(|i| i.id == first).unwrap();
        assert!(shown.path.starts_with("/more"));
        let months = f.library.timeline_months(Some(folder)).unwrap();
        assert_eq!(months.iter().map(|m| m.count).sum::<u64>(), want.len() as u64);
    }
}

#[test]
fn folders_list_the_roots_and_subfolders_with_their_counts() {
    for db in test_databases() {
        let f = fixture(db.location.clone());
        let count = |prefix: &str| {
            let ids: HashSet<u64> =
                f.items.iter().filter(|(_, p)| p.starts_with(prefix)).map(|((_, id), _)| *id).collect();
            ids.len() as u64
        };
        let roots = f.library.folders(None).unwrap();
        assert_eq!(roots.path, None);
        let listed: Vec<(PathBuf, u64, bool)> =
            roots.folders.iter().map(|e| (e.path.clone(), e.photos, e.subfolders)).collect();
        // /more holds its ten and the copy of image 0 (itself from /photos/2024).
        assert_eq!(
            listed,
            vec![
                (PathBuf::from("/more"), count("/more") + 1, false),
                (PathBuf::from("/photos"), count("/photos"), true)
            ],
            "{}",
            db.backend
        );
        let photos = f.library.folders(Some(Path::new("/photos"))).unwrap();
        assert_eq!(photos.photos, 0);
        let subs: Vec<(&str, u64, bool)> =
            photos.folders.iter().map(|e| (e.name.as_str(), e.photos, e.subfolders)).collect();
        assert_eq!(subs, vec![("2024", count("/photos/2024"), true), ("2024b", count("/photos/2024b"), false)]);
        let year = f.library.folders(Some(Path::new("/photos/2024"))).unwrap();
        assert_eq!(year.photos, count("/photos/2024") - count("/photos/2024/trip"));
        assert_eq!(year.folders.len(), 1);
        assert_eq!(year.folders[0].path, Path::new("/photos/2024/trip"));
        let err = f.library.folders(Some(Path::new("/etc"))).unwrap_err();
        assert!(matches!(err, clipdex::Error::NotFound(_)), "{err}");
    }
}
