//! The storage backends tested against each other: one seeded random sequence of store
//! operations (commits of photos and of videos with their frames, copies, moves, touches, deletions, failures, roots, tags, captions, photo text,
//! re-indexing, caches, settings) applied to a sled store and to a PostgreSQL store, with
//! everything each one holds compared after every step, and each store's own invariant check
//! clean. Ids differ between backends (each allocates its own), so images are compared by
//! content hash.
//!
//! `CLIPDEX_STORE_STEPS` sets the number of steps (default 400), `CLIPDEX_STORE_SEED` the seed.

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use clipdex::store::{
    DbLocation, FrameVector, ImageRecord, ReindexTarget, Store, StoredCaption, StoredText, Tag, TextLine, VideoMeta,
};
use common::Rng;
use common::backends::{postgres_database, test_databases};

const PATHS: usize = 14;
const CONTENTS: usize = 9;
const LABELS: [&str; 5] = ["cat", "dog", "beach", "ключ", "夜景"];

fn path(i: usize) -> PathBuf {
    // Two folders, so prefixes are exercised; one name that is not UTF-8.
    let folder = if i.is_multiple_of(2) { "/photos/a" } else { "/photos/ab" };
    if i == 13 {
        use std::os::unix::ffi::OsStrExt;
        return Path::new(folder).join(std::ffi::OsStr::from_bytes(b"caf\xe9.jpg"));
    }
    Path::new(folder).join(format!("{i:02}.jpg"))
}

fn hash(c: usize) -> String {
    format!("{c:064x}")
}

fn record(c: usize) -> ImageRecord {
    ImageRecord {
        hash: hash(c),
        size: 100 + c as u64,
        width: 40 + c as u32,
        height: 30,
        modified: 1_600_000_000 + c as i64,
        taken: c.is_multiple_of(2).then_some(1_500_000_000 + c as i64),
        camera: c.is_multiple_of(3).then(|| format!("cam {c}")),
        gps: (c == 4).then_some((59.9, 10.7)),
        lens: None,
        video: is_video(c).then(|| VideoMeta { duration: 10.0 + c as f64, codec: "h264".into(), poster: 1.5 }),
        motion_video: None,
        motion_video_problem: None,
    }
}

/// Contents 2, 5 and 8 are videos, of 1, 2 and 3 frames.
fn is_video(c: usize) -> bool {
    c % 3 == 2
}

fn frame_count(c: usize) -> usize {
    if is_video(c) { 1 + c / 3 } else { 0 }
}

/// A content's frames with their vectors of a generation (none for a photo).
fn frames(c: usize, generation: u32) -> Vec<FrameVector> {
    (0..frame_count(c))
        .map(|f| FrameVector {
            time: f as f32 * 2.5,
            vector: vector(c + 3 * f, generation).iter().map(|x| x + f as f32).collect(),
        })
        .collect()
}

fn commit(store: &Store, p: &Path, content: usize, time: i64, generation: u32) -> clipdex::Result<u64> {
    let (r, v) = (record(content), vector(content, generation));
    store.commit_with_frames(p, 100 + content as u64, time, &r, &v, &frames(content, generation))
}

fn vector(c: usize, generation: u32) -> Vec<f32> {
    (0..8).map(|i| ((c * 7 + i * 3 + generation as usize * 5) % 11) as f32 / 10.0 - 0.5).collect()
}

/// What a store holds of one image: its record, vector, files and (a video's) frames.
type Held = (ImageRecord, Vec<f32>, Vec<PathBuf>, Vec<FrameVector>);

/// Everything a store holds, with images named by content hash.
#[derive(Debug, PartialEq)]
struct Snapshot {
    paths: Vec<(PathBuf, String, u64, i64)>,
    images: BTreeMap<String, Held>,
    failures: Vec<(PathBuf, String, u32, u64, i64)>,
    roots: Vec<(PathBuf, Option<u64>)>,
    tags: BTreeMap<String, (String, Vec<Tag>)>,
    tagged: Vec<(String, Vec<(String, f32)>)>,
    tag_counts: Vec<(String, u64)>,
    captions: BTreeMap<String, StoredCaption>,
    texts: BTreeMap<String, StoredText>,
    text_count: u64,
    counts: clipdex::store::StoreCounts,
    model: Option<(String, usize)>,
    generation: u32,
    reindex: Option<ReindexTarget>,
    next_vectors: u64,
    without_next: Vec<String>,
    model_vectors: Vec<Option<Vec<f32>>>,
    label_cache: Vec<Option<Vec<f32>>>,
    setting: Option<serde_json::Value>,
    /// The timeline as (date, hash), ties (ordered by ids, which differ) put in hash order.
    timeline: Vec<(i64, String)>,
}

fn hash_of(store: &Store, id: u64) -> String {
    store.image(id).unwrap().map(|r| r.hash).unwrap_or_else(|| format!("missing image {id}"))
}

fn snapshot(store: &Store) -> Snapshot {
    let mut images = BTreeMap::new();
    for item in store.images() {
        let (id, rec) = item.unwrap();
        let v = store.vector(id).unwrap().unwrap_or_default();
        images.insert(rec.hash.clone(), (rec, v, store.paths_of(id).unwrap(), store.frames_of(id).unwrap()));
    }
    let mut streamed: BTreeMap<String, Vec<FrameVector>> = BTreeMap::new();
    for item in store.frame_vectors() {
        let (id, frame) = item.unwrap();
        streamed.entry(hash_of(store, id)).or_default().push(frame);
    }
    let stored: BTreeMap<String, Vec<FrameVector>> =
        images.iter().filter(|(_, i)| !i.3.is_empty()).map(|(h, i)| (h.clone(), i.3.clone())).collect();
    assert_eq!(streamed, stored, "frame_vectors() and frames_of disagree");
    let ids: Vec<u64> = (0..CONTENTS).filter_map(|c| store.id_for_hash(&hash(c)).unwrap()).collect();
    let mut tags = BTreeMap::new();
    let mut captions = BTreeMap::new();
    let mut texts = BTreeMap::new();
    for &id in &ids {
        if let Some(t) = store.text_of(id).unwrap() {
            texts.insert(hash_of(store, id), t);
        }
        if let Some(t) = store.tags_of(id).unwrap() {
            tags.insert(hash_of(store, id), t);
        }
        if let Some(c) = store.caption_of(id).unwrap() {
            captions.insert(hash_of(store, id), c);
        }
    }
    let streamed: BTreeMap<String, StoredCaption> =
        store.captions().map(|r| r.unwrap()).map(|(id, c)| (hash_of(store, id), c)).collect();
    assert_eq!(streamed, captions, "captions() and caption_of disagree");
    let streamed: BTreeMap<String, StoredText> =
        store.texts().map(|r| r.unwrap()).map(|(id, t)| (hash_of(store, id), t)).collect();
    assert_eq!(streamed, texts, "texts() and text_of disagree");
    let streamed = store.vectors().collect::<clipdex::Result<Vec<_>>>().unwrap().len();
    assert_eq!(streamed as u64, store.counts().unwrap().vectors);
    Snapshot {
        paths: store
            .paths_under(Path::new(""))
            .unwrap()
            .into_iter()
            .map(|(p, e)| (p, hash_of(store, e.id), e.size, e.mtime_ns))
            .collect(),
        images,
        failures: store
            .failures()
            .unwrap()
            .into_iter()
            .map(|(p, f)| (p, f.reason, f.attempts, f.size, f.mtime_ns))
            .collect(),
        roots: store.roots().unwrap().into_iter().map(|r| (r.clone(), store.root_device(&r).unwrap())).collect(),
        tags,
        tagged: LABELS
            .iter()
            .map(|l| {
                let mut hits: Vec<(String, f32)> =
                    store.images_tagged(l).unwrap().into_iter().map(|(id, p)| (hash_of(store, id), p)).collect();
                // Ties are ordered by id, and ids differ between backends.
                hits.sort_by(|a, b| b.1.total_cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
                (l.to_string(), hits)
            })
            .collect(),
        tag_counts: store.tag_counts().unwrap().into_iter().map(|t| (t.label, t.count)).collect(),
        captions,
        text_count: store.text_count().unwrap(),
        texts,
        counts: store.counts().unwrap(),
        model: store.model().unwrap(),
        generation: store.vectors_generation().unwrap(),
        reindex: store.reindex_target().unwrap(),
        next_vectors: store.next_vector_count().unwrap(),
        without_next: {
            let mut h: Vec<String> =
                store.images_without_next_vector().unwrap().into_iter().map(|id| hash_of(store, id)).collect();
            h.sort();
            h
        },
        model_vectors: store.model_vectors("tuned\u{0}1", &ids).unwrap(),
        label_cache: store
            .cached_label_embeddings("m\u{0}t", &LABELS.iter().map(|l| l.to_string()).collect::<Vec<_>>())
            .unwrap(),
        setting: store.setting("autotag").unwrap(),
        timeline: {
            let page = store.timeline(None, 100).unwrap();
            let dates: Vec<i64> = page.iter().map(|(_, r)| r.date()).collect();
            // PostgreSQL orders by its `date` column: a re-dated record must have moved it.
            assert!(dates.windows(2).all(|w| w[0] >= w[1]), "the timeline is out of date order: {dates:?}");
            let mut items: Vec<(i64, String)> = page.into_iter().map(|(_, r)| (r.date(), r.hash)).collect();
            items.sort_by(|a, b| b.0.cmp(&a.0).then_with(|| a.1.cmp(&b.1)));
            items
        },
    }
}

/// Applies one random operation to a store; `id(c)` finds content `c`'s id in it. Returns a
/// description, and the operation's own result as text (which must agree between backends).
fn apply(store: &Store, op: u64, args: &[usize; 4], unit: f32) -> (String, String) {
    let id = |c: usize| store.id_for_hash(&hash(c)).unwrap();
    let [a, b, c, d] = *args;
    let p = path(a % PATHS);
    let content = b % CONTENTS;
    let generation = store.vectors_generation().unwrap();
    match op {
        0..=3 => {
            let r = commit(store, &p, content, c as i64, generation);
            (format!("commit {} <- {content}", p.display()), format!("{:?}", r.map(|id| hash_of(store, id))))
        }
        4 => match id(content) {
            Some(i) => (
                format!("link {} -> {content}", p.display()),
                format!("{:?}", store.link_path(&p, i, 100 + content as u64, c as i64)),
            ),
            None => ("link to a missing image".into(), format!("{}", store.link_path(&p, u64::MAX - 1, 1, 1).is_err())),
        },
        // A pass finding known content: a touched file re-dates its image (whole seconds, so
        // that the date moves).
        5 => match id(content) {
            Some(i) => (
                format!("relink dated {} -> {content}", p.display()),
                format!("{:?}", store.relink_dated(&p, i, 100 + content as u64, d as i64 * 1_000_000_000)),
            ),
            None => (
                "relink dated to a missing image".into(),
                format!("{}", store.relink_dated(&p, u64::MAX - 1, 1, 1).is_err()),
            ),
        },
        6..=7 => (
            format!("unlink {}", p.display()),
            // Ids differ between backends: the mapping is compared without its id.
            format!("{:?}", store.unlink_path(&p).map(|e| e.map(|e| (e.size, e.mtime_ns)))),
        ),
        8 => (
            format!("fail {}", p.display()),
            format!("{:?}", store.record_failure(&p, &format!("bad {c}"), c as u64, d as i64)),
        ),
        9 => (format!("clear failure {}", p.display()), format!("{:?}", store.clear_failure(&p))),
        10 => {
            let root = if c % 2 == 0 { Path::new("/photos/a") } else { Path::new("/photos/ab") };
            match d % 3 {
                0 => (format!("add root {}", root.display()), format!("{:?}", store.add_root(root))),
                1 => (format!("remove root {}", root.display()), format!("{:?}", store.remove_root(root))),
                _ => (
                    format!("root device {}", root.display()),
                    format!("{:?}", store.set_root_device(root, u64::MAX - d as u64)),
                ),
            }
        }
        11..=12 => match id(content) {
            Some(i) => {
                let tags: Vec<Tag> = (0..c % 3)
                    .map(|k| Tag {
                        label: LABELS[(d + k) % LABELS.len()].into(),
                        probability: unit + k as f32,
                        cosine: 0.25,
                    })
                    .collect();
                (format!("tag {content}"), format!("{:?}", store.set_tags(i, &format!("v{d}"), &tags)))
            }
            None => ("tag nothing".into(), String::new()),
        },
        13 => ("clear tags".into(), format!("{:?}", store.clear_tags())),
        14 => match id(content) {
            Some(i) => {
                let caption = StoredCaption { text: format!("a photo {c}"), settings: format!("s{d}") };
                (format!("caption {content}"), format!("{:?}", store.set_caption(i, &caption)))
            }
            None => ("caption nothing".into(), String::new()),
        },
        15 => {
            let target = ReindexTarget { model: format!("model-{}", d % 2), dim: 8 };
            (format!("begin reindex {}", target.model), format!("{:?}", store.begin_reindex(&target)))
        }
        16 => match (store.reindex_target().unwrap(), id(content)) {
            (Some(_), Some(i)) => (
                format!("next vector {content}"),
                format!(
                    "{:?}",
                    store.put_next_vectors(i, &vector(content, generation + 1), &frames(content, generation + 1))
                ),
            ),
            _ => ("no next vector".into(), String::new()),
        },
        17 => match store.reindex_target().unwrap() {
            Some(_) if c % 4 == 0 => ("cancel reindex".into(), format!("{:?}", store.cancel_reindex())),
            Some(_) => ("switch".into(), format!("{:?}", store.switch_to_next_vectors())),
            None => ("set model".into(), format!("{:?}", store.set_model(&format!("base-{d}"), 8))),
        },
        18 => {
            let ids: Vec<(u64, Vec<f32>)> =
                (0..CONTENTS).filter_map(|k| id(k).map(|i| (i, vec![k as f32, unit]))).take(c % 4).collect();
            // Pruning counts differ by design: sled keeps a gone image's cached vectors until
            // pruned, PostgreSQL drops them with the image. Only success is compared.
            (
                "cache model vectors".into(),
                format!("{:?} {}", store.cache_model_vectors("tuned\u{0}1", &ids), store.prune_model_vectors().is_ok()),
            )
        }
        19 => {
            let labels: Vec<String> = LABELS.iter().take(1 + c % 5).map(|l| l.to_string()).collect();
            let embeddings: Vec<Vec<f32>> = labels.iter().map(|_| vec![unit, d as f32]).collect();
            ("cache labels".into(), format!("{:?}", store.cache_label_embeddings("m\u{0}t", &labels, &embeddings)))
        }
        20 => match id(content) {
            Some(i) => {
                // Lines read from this content, or (one time in four) from another: refused.
                let hash = if d % 4 == 0 { hash((content + 1) % CONTENTS) } else { hash(content) };
                let lines: Vec<TextLine> = (0..c % 3)
                    .map(|k| TextLine {
                        text: format!("TOTAL {}\0 €{k}", d % 7),
                        score: unit,
                        quad: [[k as f32, 1.5], [10.0, 1.5], [10.0, 7.25], [k as f32, 7.25]],
                    })
                    .collect();
                let text = StoredText::new(&hash, &format!("ocr-{}", d % 2), lines);
                (format!("text {content}"), format!("{:?}", store.set_text(i, &text)))
            }
            None => ("text nothing".into(), String::new()),
        },
        _ => ("setting".into(), format!("{:?}", store.set_setting("autotag", &serde_json::json!({"k": d, "s": "ü"})))),
    }
}

#[test]
fn every_backend_holds_the_same_after_the_same_operations() {
    let steps: usize = std::env::var("CLIPDEX_STORE_STEPS").ok().and_then(|s| s.parse().ok()).unwrap_or(400);
    let seed: u64 = std::env::var("CLIPDEX_STORE_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or(0x5eed_cafe);
    let dbs = test_databases();
    let stores: Vec<Store> = dbs.iter().map(|db| Store::open(&db.location).unwrap()).collect();
    let mut rng = Rng(seed);
    for step in 0..steps {
        let op = rng.next() % 22;
        let args = [rng.below(1000), rng.below(1000), rng.below(1000), rng.below(1000)];
        let unit = rng.unit();
        let mut outcomes = Vec::new();
        for (db, store) in dbs.iter().zip(&stores) {
            let (what, result) = apply(store, op, &args, unit);
            let problems = store.check().unwrap();
            assert!(problems.is_empty(), "{} after step {step} ({what}; seed {seed}): {problems:?}", db.backend);
            outcomes.push((what, result, snapshot(store)));
        }
        for (db, o) in dbs.iter().zip(&outcomes).skip(1) {
            let (what, result, snap) = o;
            assert_eq!(
                result, &outcomes[0].1,
                "{} and sled answered {what} differently at step {step} (seed {seed})",
                db.backend
            );
            assert_eq!(
                snap, &outcomes[0].2,
                "{} and sled hold different things after step {step}: {what} (seed {seed})",
                db.backend
            );
        }
    }
    // Whatever the sequence, reopening keeps everything.
    let before: Vec<Snapshot> = stores.iter().map(snapshot).collect();
    drop(stores);
    for (db, before) in dbs.iter().zip(before) {
        let store = Store::open(&db.location).unwrap();
        assert_eq!(snapshot(&store), before, "{} lost something on reopening", db.backend);
    }
}

/// A pass that finds a file touched with its content unchanged re-dates the image by the
/// file's new time (`relink_dated`), in the store's record and its timeline order; a copy (a
/// path new to the image) keeps the date; an EXIF date still wins; an unknown image is refused
/// and changes nothing.
#[test]
fn a_touched_file_re_dates_its_image_and_a_copy_does_not() {
    const SECOND: i64 = 1_000_000_000;
    for db in test_databases() {
        let store = Store::open(&db.location).unwrap();
        let (a, b, c) = (Path::new("/photos/a/1.jpg"), Path::new("/photos/a/2.jpg"), Path::new("/photos/ab/3.jpg"));
        // Contents 1 and 3 have no EXIF date (their file's time counts), 4 has one.
        let date = |id| store.image(id).unwrap().unwrap().date();
        let first = commit(&store, a, 1, 1_000 * SECOND, 0).unwrap();
        let with_exif = commit(&store, b, 4, 1_000 * SECOND, 0).unwrap();
        let other = commit(&store, c, 3, 1_000 * SECOND, 0).unwrap();
        let order = |store: &Store| store.timeline(None, 10).unwrap().into_iter().map(|(id, _)| id).collect::<Vec<_>>();
        assert_eq!(order(&store), [other, first, with_exif], "{}", db.backend);

        // Touched: the photo without EXIF takes the file's new time, and moves in the timeline.
        let newer = 1_700_000_000;
        assert!(store.relink_dated(a, first, 101, newer * SECOND + 5).unwrap(), "{}", db.backend);
        assert_eq!(date(first), newer, "{}", db.backend);
        assert_eq!(order(&store), [first, other, with_exif], "{}", db.backend);
        assert_eq!(store.path_entry(a).unwrap().unwrap().mtime_ns, newer * SECOND + 5);
        assert!(store.month_counts().unwrap().iter().any(|(m, n)| m == "2023-11" && *n == 1), "{}", db.backend);
        // The same time again: nothing to re-date.
        assert!(!store.relink_dated(a, first, 101, newer * SECOND + 5).unwrap(), "{}", db.backend);

        // A copy (a path new to the image) with another time keeps the image's date.
        let copy = Path::new("/photos/ab/copy.jpg");
        assert!(!store.relink_dated(copy, first, 101, 5 * SECOND).unwrap(), "{}", db.backend);
        assert_eq!(date(first), newer, "{}", db.backend);
        assert_eq!(store.paths_of(first).unwrap().len(), 2);

        // The EXIF date wins over the file's time: the record's file time moves, the date not.
        let exif_date = date(with_exif);
        assert!(!store.relink_dated(b, with_exif, 104, 2_000_000_000 * SECOND).unwrap(), "{}", db.backend);
        let record = store.image(with_exif).unwrap().unwrap();
        assert_eq!((record.date(), record.modified), (exif_date, 2_000_000_000), "{}", db.backend);

        // A path that held another image is relinked without re-dating either.
        assert!(!store.relink_dated(c, first, 101, 9 * SECOND).unwrap(), "{}", db.backend);
        assert!(store.image(other).unwrap().is_none(), "its last path gone, {}", db.backend);
        assert_eq!(date(first), newer);

        // An unknown image: refused, nothing changed.
        assert!(store.relink_dated(a, u64::MAX - 1, 1, 1).is_err());
        assert_eq!(store.path_entry(a).unwrap().unwrap().id, first);
        assert!(store.check().unwrap().is_empty(), "{}", db.backend);
        drop(store);
        let store = Store::open(&db.location).unwrap();
        assert_eq!(store.image(first).unwrap().unwrap().date(), newer, "the new date is durable, {}", db.backend);
    }
}

/// Many processes share a PostgreSQL library: first connections at once must each find the
/// schema applied exactly once (the advisory lock), and writers that commit, copy and delete the
/// same contents at the same time (one unlinking an image's last file while another links a
/// new file to it) must leave exactly what a serial order would.
#[test]
fn concurrent_connections_and_writers_share_a_postgres_library() {
    let Some(pg) = postgres_database() else { return };
    let location = DbLocation::Postgres(pg.url.clone());
    let opened: Vec<_> = (0..8)
        .map(|_| {
            let location = location.clone();
            std::thread::spawn(move || Store::open(location).and_then(|s| s.schema_version()))
        })
        .collect();
    for h in opened {
        assert_eq!(h.join().unwrap().unwrap(), clipdex::store::postgres::SCHEMA_VERSION);
    }
    const WRITERS: usize = 4;
    const FILES: usize = 40;
    let writers: Vec<_> = (0..WRITERS)
        .map(|w| {
            let location = location.clone();
            std::thread::spawn(move || {
                let store = Store::open(location).unwrap();
                let file = |i: usize| PathBuf::from(format!("/w{w}/{i:02}.jpg"));
                for i in 0..FILES {
                    let c = i % 10;
                    match store.id_for_hash(&hash(c)).unwrap() {
                        Some(id) if i % 3 == 0 => {
                            // A copy of a stored image; it may be gone by now (another writer
                            // unlinked its last file): then it is committed anew.
                            if store.link_path(&file(i), id, 1, 1).is_err() {
                                commit(&store, &file(i), c, 1, 0).unwrap();
                            }
                        }
                        _ => {
                            commit(&store, &file(i), c, 1, 0).unwrap();
                        }
                    }
                    if i % 2 == 1 {
                        store.unlink_path(&file(i)).unwrap();
                    }
                }
            })
        })
        .collect();
    for h in writers {
        h.join().unwrap();
    }
    let store = Store::open(location).unwrap();
    assert_eq!(store.check().unwrap(), Vec::<String>::new());
    let paths = store.paths_under(Path::new("")).unwrap();
    assert_eq!(paths.len(), WRITERS * FILES / 2, "every even file stays, every odd one went");
    let held: std::collections::BTreeSet<String> =
        paths.iter().map(|(_, e)| store.image(e.id).unwrap().unwrap().hash).collect();
    // Even files hold the even contents only; the odd contents went with their last file.
    let expected: std::collections::BTreeSet<String> = (0..10).step_by(2).map(hash).collect();
    assert_eq!(held, expected);
    let counts = store.counts().unwrap();
    assert_eq!((counts.images, counts.vectors), (5, 5));
}

/// Connecting can go wrong in several ways; each says what is wrong and what to do, and none
/// creates anything.
#[test]
fn postgres_connection_errors_say_what_to_do() {
    let Some(pg) = postgres_database() else { return };
    let open_err = |url: String| match Store::open(DbLocation::Postgres(url)) {
        Ok(_) => panic!("opened"),
        Err(e) => e.to_string(),
    };
    let (head, _) = pg.url.rsplit_once('/').unwrap();
    let missing = open_err(format!("{head}/clipdex_no_such_database"));
    assert!(missing.contains("does not exist") && missing.contains("createdb"), "{missing}");
    let (scheme_user, rest) = pg.url.split_once('@').unwrap();
    let (scheme_user, _password) = scheme_user.rsplit_once(':').unwrap();
    let wrong = open_err(format!("{scheme_user}:not-the-password@{rest}"));
    assert!(wrong.contains("password") && !wrong.contains("not-the-password"), "{wrong}");
    let down = open_err("postgres://clipdex:secret@127.0.0.1:1/photos?connect_timeout=5".to_string());
    assert!(down.contains("is the server running") && !down.contains("secret"), "{down}");
}

/// TLS as libpq's `sslmode` asks (the CI server has a certificate for "localhost" signed by
/// the authority in `CLIPDEX_TEST_PG_CA`): encrypted by default when the server offers it,
/// plain with `disable`, the authority checked with `verify-ca`, the host name too with
/// `verify-full`; an untrusted authority or another host name is refused with what to do.
#[test]
fn postgres_connections_are_encrypted_and_checked_as_sslmode_asks() {
    let Some(pg) = postgres_database() else { return };
    let ca = match std::env::var("CLIPDEX_TEST_PG_CA") {
        Ok(ca) if !ca.is_empty() => ca,
        _ if std::env::var_os("CI").is_some() || std::env::var("CLIPDEX_PG").is_ok_and(|v| v == "require") => {
            panic!("CI must test TLS to PostgreSQL: set CLIPDEX_TEST_PG_CA (.ci/run does)")
        }
        _ => return eprintln!("CLIPDEX_TEST_PG_CA is not set: TLS to PostgreSQL is not tested"),
    };
    assert!(pg.url.contains("@localhost:"), "the test server is reached as localhost: {}", pg.url);
    let with = |host: &str, params: &str| {
        let url = pg.url.replace("@localhost:", &format!("@{host}:"));
        format!("{url}{}{params}", if url.contains('?') { '&' } else { '?' })
    };
    let mut admin = postgres::Client::connect(&pg.url, postgres::NoTls).unwrap();
    // Whether the server sees this process's connection named `name` encrypted.
    let mut encrypted = |url: String, name: &str| -> bool {
        let store = Store::open(DbLocation::Postgres(format!("{url}&application_name={name}"))).unwrap();
        let rows = admin
            .query(
                "SELECT s.ssl FROM pg_stat_ssl s JOIN pg_stat_activity a USING (pid)
                 WHERE a.datname = current_database() AND a.application_name = $1",
                &[&name],
            )
            .unwrap();
        drop(store);
        assert_eq!(rows.len(), 1, "{name}: one idle connection");
        rows[0].get(0)
    };
    assert!(encrypted(with("localhost", "connect_timeout=10"), "tls_default"), "prefer: encrypted");
    assert!(!encrypted(with("localhost", "sslmode=disable"), "tls_disable"));
    assert!(encrypted(with("localhost", "sslmode=require"), "tls_require"));
    assert!(encrypted(with("localhost", &format!("sslmode=verify-full&sslrootcert={ca}")), "tls_full"));
    assert!(encrypted(with("127.0.0.1", &format!("sslmode=verify-ca&sslrootcert={ca}")), "tls_ca"));

    let open_err = |url: String| match Store::open(DbLocation::Postgres(url)) {
        Ok(_) => panic!("opened"),
        Err(e) => e.to_string(),
    };
    let e = open_err(with("127.0.0.1", &format!("sslmode=verify-full&sslrootcert={ca}")));
    assert!(e.contains("names another host") && e.contains("verify-ca"), "{e}");
    let e = open_err(with("localhost", "sslmode=verify-full&sslrootcert=system"));
    assert!(e.contains("not signed by an authority in sslrootcert"), "{e}");
    let e = open_err(with("localhost", "sslmode=verify-full"));
    assert!(e.contains("sslrootcert=FILE"), "{e}");
    let e = open_err(with("localhost", "sslmode=verify"));
    assert!(e.contains("not a mode") && !e.contains("clipdex:clipdex"), "{e}");
}

/// A unit vector near one of `clusters` centres (so that neighbours are meaningful).
fn clustered(rng: &mut Rng, clusters: &[Vec<f32>]) -> Vec<f32> {
    let centre = &clusters[rng.below(clusters.len())];
    let v: Vec<f32> = centre.iter().map(|c| c + 0.35 * (rng.unit() - 0.5)).collect();
    let n = v.iter().map(|x| x * x).sum::<f32>().sqrt();
    v.into_iter().map(|x| x / n).collect()
}

/// Searching 1,500 vectors past the graph threshold: the folder store's HNSW graph and
/// PostgreSQL's HNSW index (pgvector, iterative scans for filters) both find the exact top 10
/// at recall ≥ 0.9, and every filter (folder, dates, a tag on 1% of the photos) returns k
/// results when k pass, each of them passing, at the exact filtered ranking's recall.
#[test]
fn searches_past_the_graph_threshold_find_the_exact_neighbours_with_every_filter() {
    use clipdex::query::SearchFilter;
    use clipdex::{Library, LibraryConfig};
    const N: usize = 1500;
    const DIM: usize = 32;
    let mut rng = Rng(0x5eed_1234);
    let clusters: Vec<Vec<f32>> = (0..12).map(|_| (0..DIM).map(|_| rng.unit() - 0.5).collect()).collect();
    let vectors: Vec<Vec<f32>> = (0..N).map(|_| clustered(&mut rng, &clusters)).collect();
    let folder = |i: usize| if i.is_multiple_of(3) { "/lib/b" } else { "/lib/a" };
    let date = |i: usize| 1_500_000_000 + (i as i64 % 50) * 86_400;
    let rare = |i: usize| i % 100 == 7;
    let dot = |a: &[f32], b: &[f32]| a.iter().zip(b).map(|(x, y)| x * y).sum::<f32>();
    for db in test_databases() {
        let mut config = LibraryConfig::new(db.location.clone(), "test-model");
        config.graph_min = 300;
        let library = Library::open(config).unwrap();
        let store = library.store();
        store.set_model("test-model", DIM).unwrap();
        let mut ids = Vec::with_capacity(N);
        for (i, v) in vectors.iter().enumerate() {
            let mut r = record(10_000 + i);
            r.taken = Some(date(i));
            r.video = None;
            let path = Path::new(folder(i)).join(format!("{i:05}.jpg"));
            ids.push(store.commit_image(&path, 1, 1, &r, v).unwrap());
            if rare(i) {
                store.set_tags(ids[i], "v", &[Tag { label: "rare".into(), probability: 0.9, cosine: 0.3 }]).unwrap();
            }
        }
        let state = library.maintain_index().unwrap();
        assert_eq!(state.kind, "hnsw", "{}: {state:?}", db.backend);
        assert_eq!(library.stats().unwrap().index.kind, "hnsw", "{}", db.backend);
        type Passes = Box<dyn Fn(usize) -> bool>;
        let filters: Vec<(&str, SearchFilter, Passes)> = vec![
            ("none", SearchFilter::default(), Box::new(|_| true)),
            (
                "folder",
                SearchFilter { under: Some("/lib/b/".into()), ..Default::default() },
                Box::new(move |i| folder(i) == "/lib/b"),
            ),
            (
                "dates",
                SearchFilter { after: Some(date(10)), before: Some(date(20)), ..Default::default() },
                Box::new(move |i| date(i) >= date(10) && date(i) < date(20)),
            ),
            ("tag", SearchFilter { tag: Some("rare".into()), ..Default::default() }, Box::new(rare)),
        ];
        for (name, filter, passes) in &filters {
            let (mut found, mut wanted) = (0usize, 0usize);
            for q in 0..20 {
                let query = clustered(&mut rng, &clusters);
                let k = if q == 0 && *name == "tag" { 40 } else { 10 };
                let hits = library.search_vector(&query, k, filter).unwrap();
                let mut exact: Vec<usize> = (0..N).filter(|&i| passes(i)).collect();
                exact.sort_by(|&a, &b| dot(&vectors[b], &query).total_cmp(&dot(&vectors[a], &query)));
                exact.truncate(k);
                assert_eq!(
                    hits.len(),
                    exact.len(),
                    "{} {name}: {} results, {} pass",
                    db.backend,
                    hits.len(),
                    exact.len()
                );
                for h in &hits {
                    let i = ids.iter().position(|&id| id == h.id).unwrap();
                    assert!(passes(i), "{} {name}: {} does not pass", db.backend, h.path.display());
                    assert!(h.path.starts_with(folder(i)), "{} {name}: {}", db.backend, h.path.display());
                    assert!((h.score - dot(&vectors[i], &query)).abs() < 1e-4, "{} {name}: score", db.backend);
                }
                assert!(hits.windows(2).all(|w| w[0].score >= w[1].score - 1e-6), "{} {name}: order", db.backend);
                found += exact.iter().filter(|&&i| hits.iter().any(|h| h.id == ids[i])).count();
                wanted += exact.len();
            }
            let recall = found as f64 / wanted as f64;
            eprintln!("{} {name}: recall@10 {recall:.3}", db.backend);
            assert!(recall >= 0.9, "{} {name}: recall {recall}", db.backend);
        }
    }
}

/// `clipdex migrate`: a folder library after a random sequence of operations, copied into
/// PostgreSQL, holds everything the folder library holds (but the caches, which are not
/// copied), and the folder library is unchanged. A database that already holds a library, a
/// target that is not PostgreSQL and a source that is not a folder library are refused.
#[test]
fn migrate_copies_a_folder_library_into_postgres_and_checks_it() {
    let Some(pg) = postgres_database() else { return };
    let folder = tempfile::tempdir().unwrap();
    let dir = folder.path().join("db");
    let mut rng = Rng(0x0123_4567);
    {
        let store = Store::open(DbLocation::Dir(dir.clone())).unwrap();
        for _ in 0..250 {
            let op = rng.next() % 22;
            let args = [rng.below(1000), rng.below(1000), rng.below(1000), rng.below(1000)];
            apply(&store, op, &args, rng.unit());
        }
        if store.reindex_target().unwrap().is_some() {
            store.cancel_reindex().unwrap();
        }
        assert!(store.counts().unwrap().images > 0);
        // A caption as an older clipdex stored it: settings separated by NUL, which PostgreSQL's
        // text cannot hold.
        let (id, _) = store.images().next().unwrap().unwrap();
        let legacy = StoredCaption { text: "a cat\0".into(), settings: "blip\0\0beams=3\0max=20".into() };
        store.set_caption(id, &legacy).unwrap();
    }
    // Caches are not copied, generations count switches that the copy did not make, and
    // captions are copied as today's clipdex stores them.
    let comparable = |mut s: Snapshot| {
        (s.model_vectors, s.label_cache, s.generation, s.counts.cached_labels) = (Vec::new(), Vec::new(), 0, 0);
        for c in s.captions.values_mut() {
            *c = StoredCaption::new(&c.text, &c.settings);
        }
        s
    };
    let before = snapshot(&Store::open(DbLocation::Dir(dir.clone())).unwrap());
    let to = DbLocation::Postgres(pg.url.clone());
    let report = clipdex::library::migrate::migrate(&dir, &to, 20_000).unwrap();
    assert_eq!(report.copied.images, before.counts.images);
    assert!(report.checked_searches > 0);
    let after = snapshot(&Store::open(DbLocation::Dir(dir.clone())).unwrap());
    assert_eq!(after, before, "the folder library changed");
    let copied = snapshot(&Store::open(to.clone()).unwrap());
    assert_eq!(comparable(copied), comparable(before), "the copy differs from the folder library");

    let run = |args: &[&std::ffi::OsStr]| {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_clipdex")).args(args).output().unwrap();
        assert!(!out.status.success());
        String::from_utf8_lossy(&out.stderr).into_owned()
    };
    let url = std::ffi::OsString::from(&pg.url);
    let (d, t) = (dir.as_os_str(), std::ffi::OsStr::new("--to"));
    let e = run(&["--db".as_ref(), d, "migrate".as_ref(), t, &url]);
    assert!(e.contains("already holds a library"), "{e}");
    let e = run(&["--db".as_ref(), d, "migrate".as_ref(), t, folder.path().join("x").as_os_str()]);
    assert!(e.contains("postgres://"), "{e}");
    let e = run(&["--db".as_ref(), &url, "migrate".as_ref(), t, &url]);
    assert!(e.contains("folder library"), "{e}");
    let e = run(&["--db".as_ref(), folder.path().join("none").as_os_str(), "migrate".as_ref(), t, &url]);
    assert!(e.contains("no library at"), "{e}");
    assert!(!e.contains("clipdex:clipdex@"), "the password is shown: {e}");
}

/// The connection to PostgreSQL lost in the middle of `clipdex index` (every session of the
/// library's database terminated): the pass stops with an error that says what happened,
/// nothing is half-written (the store's invariants hold), and the next pass indexes the rest.
#[test]
fn a_connection_lost_mid_pass_stops_it_cleanly_and_the_next_pass_resumes() {
    let Some(pg) = postgres_database() else { return };
    let tmp = tempfile::tempdir().unwrap();
    let photos = tmp.path().join("photos");
    std::fs::create_dir_all(&photos).unwrap();
    const N: u32 = 120;
    for i in 0..N {
        common::picture(i).save(photos.join(format!("p{i:03}.png"))).unwrap();
    }
    let clipdex = |args: &[&str]| clipdex_on_db(&pg.url, args);
    assert!(clipdex(&["add", photos.to_str().unwrap()]).output().unwrap().status.success());
    let store = Store::open(DbLocation::Postgres(pg.url.clone())).unwrap();
    let child = clipdex(&["index", "--batch-size", "4", "--json"]).spawn().unwrap();
    // Once some photos are in, cut every other session of this database.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while store.counts().unwrap().images < 8 && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let mut admin = postgres::Client::connect(&pg.url, postgres::NoTls).unwrap();
    let cut = admin
        .query(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity
             WHERE datname = current_database() AND pid <> pg_backend_pid() AND application_name <> 'keep'",
            &[],
        )
        .unwrap()
        .len();
    let out = child.wait_with_output().unwrap();
    let stored = Store::open(DbLocation::Postgres(pg.url.clone())).unwrap();
    let problems = stored.check().unwrap();
    assert!(problems.is_empty(), "half-written after the cut: {problems:?}");
    let first = stored.counts().unwrap();
    eprintln!(
        "cut {cut} sessions; the pass {} with {} of {N} images stored: {}",
        if out.status.success() { "finished" } else { "stopped" },
        first.images,
        String::from_utf8_lossy(&out.stderr).trim()
    );
    if !out.status.success() {
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains("connection") || err.contains("terminat"), "{err}");
        assert!(!err.contains("clipdex:clipdex@"), "the password is shown: {err}");
        assert!(first.images < N as u64);
    }
    let again = clipdex(&["index", "--json"]).output().unwrap();
    assert!(again.status.success(), "{}", String::from_utf8_lossy(&again.stderr));
    let counts = stored.counts().unwrap();
    assert_eq!((counts.images, counts.paths, counts.vectors), (N as u64, N as u64, N as u64));
    assert!(stored.check().unwrap().is_empty());
}

/// Several `clipdex index` processes on one PostgreSQL library at once share the work: one
/// scans the folder, all of them embed what it queued, and each photo is embedded exactly once
/// (the embedded and linked counts of all processes add up to the number of photos), every
/// photo ends up stored, and every process embedded some. Rounds of two processes, then one of
/// four; `CLIPDEX_QUEUE_ROUNDS` sets the rounds of two (default 2).
#[test]
fn concurrent_indexers_embed_each_photo_once_and_share_the_work() {
    let Some(pg) = postgres_database() else { return };
    let tmp = tempfile::tempdir().unwrap();
    let photos = tmp.path().join("photos");
    std::fs::create_dir_all(&photos).unwrap();
    const N: u32 = 240;
    for i in 0..N {
        common::picture(i).save(photos.join(format!("p{i:04}.png"))).unwrap();
    }
    let clipdex = |args: &[&str]| clipdex_on_db(&pg.url, args);
    assert!(clipdex(&["add", photos.to_str().unwrap()]).output().unwrap().status.success());
    let store = Store::open(DbLocation::Postgres(pg.url.clone())).unwrap();
    let mut stored = 0u64;
    let pairs: usize = std::env::var("CLIPDEX_QUEUE_ROUNDS").ok().and_then(|r| r.parse().ok()).unwrap_or(2);
    for (round, processes) in std::iter::repeat_n(2usize, pairs.max(1)).chain([4]).enumerate() {
        // Each round after the first adds new photos for the processes to share.
        if round > 0 {
            let first = N * round as u32;
            for i in first..first + N {
                common::picture(i).save(photos.join(format!("p{i:04}.png"))).unwrap();
            }
        }
        let children: Vec<_> =
            (0..processes).map(|_| clipdex(&["index", "--batch-size", "2", "--json"]).spawn().unwrap()).collect();
        let reports: Vec<serde_json::Value> = children
            .into_iter()
            .map(|c| {
                let out = c.wait_with_output().unwrap();
                assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
                serde_json::from_slice(&out.stdout).unwrap()
            })
            .collect();
        let embedded: Vec<u64> = reports.iter().map(|r| r["embedded"].as_u64().unwrap()).collect();
        let linked: u64 = reports.iter().map(|r| r["linked"].as_u64().unwrap()).sum();
        eprintln!("{processes} processes embedded {embedded:?}");
        // Each file handled by exactly one process (a file's copy is linked, not embedded).
        assert_eq!(embedded.iter().sum::<u64>() + linked, N as u64, "round {round}: {reports:?}");
        assert!(embedded.iter().all(|&e| e > 0), "a process did no work: {embedded:?}");
        assert!(reports.iter().all(|r| r["discarded"] == 0), "{reports:?}");
        stored += N as u64;
        let counts = store.counts().unwrap();
        assert_eq!((counts.images, counts.paths, counts.vectors), (stored, stored, stored));
        assert!(store.check().unwrap().is_empty());
        assert_eq!(store.work_queue().unwrap().job_counts().unwrap(), clipdex::store::JobCounts::default());
    }
}

/// Each queued job is claimed by exactly one process while processes come and go: claimers
/// that take a new store (a new process, which registers its presence at its first claim) for
/// every claim, from stores opened ahead by other threads, claim and finish concurrently and
/// together claim every job once. (A claim once judged the holders' presence from `pg_locks`,
/// which PostgreSQL reads once per statement, so a process that registered and claimed while
/// another's claim ran looked gone to it, and both got the job.) `CLIPDEX_QUEUE_ROUNDS` sets
/// the rounds (default 4).
#[test]
fn work_queue_claims_each_job_exactly_once_while_processes_come_and_go() {
    let Some(pg) = postgres_database() else { return };
    // Without TLS: a handshake per process would leave few processes starting at once.
    let plain = format!("{}{}sslmode=disable", pg.url, if pg.url.contains('?') { '&' } else { '?' });
    let location = DbLocation::Postgres(plain);
    let rounds: usize = std::env::var("CLIPDEX_QUEUE_ROUNDS").ok().and_then(|r| r.parse().ok()).unwrap_or(4);
    let long = std::time::Duration::from_secs(600);
    let first = Store::open(location.clone()).unwrap();
    for round in 0..rounds {
        const JOBS: usize = 600;
        let jobs: Vec<clipdex::store::Job> =
            (0..JOBS).map(|i| (PathBuf::from(format!("/round{round}/{i:04}.jpg")), 1, 1)).collect();
        first.work_queue().unwrap().enqueue(&jobs).unwrap();
        // With statistics, as a queue in use has them: PostgreSQL then plans the claim as it
        // would there (the old race needed that plan).
        let mut client = postgres::Client::connect(&pg.url, postgres::NoTls).unwrap();
        client.batch_execute("ANALYZE jobs").unwrap();
        let done = std::sync::atomic::AtomicBool::new(false);
        let (ready, stores) = std::sync::mpsc::sync_channel::<Store>(12);
        let stores = std::sync::Mutex::new(stores);
        let claimed: Vec<Vec<PathBuf>> = std::thread::scope(|scope| {
            for _ in 0..4 {
                let (ready, location, done) = (ready.clone(), location.clone(), &done);
                scope.spawn(move || {
                    while !done.load(std::sync::atomic::Ordering::Relaxed) {
                        if ready.send(Store::open(location.clone()).unwrap()).is_err() {
                            return;
                        }
                    }
                });
            }
            drop(ready);
            let claimers: Vec<_> = (0..12)
                .map(|t| {
                    let stores = &stores;
                    scope.spawn(move || {
                        let mut mine = Vec::new();
                        loop {
                            let store = stores.lock().unwrap().recv().unwrap();
                            let queue = store.work_queue().unwrap();
                            let worker = format!("w{t}");
                            let got = queue.claim(&worker, 2, long).unwrap();
                            if got.is_empty() {
                                return mine;
                            }
                            let paths: Vec<&Path> = got.iter().map(|j| j.0.as_path()).collect();
                            queue.finish(&worker, &paths).unwrap();
                            mine.extend(got.into_iter().map(|j| j.0));
                        }
                    })
                })
                .collect();
            let claimed = claimers.into_iter().map(|t| t.join().unwrap()).collect();
            done.store(true, std::sync::atomic::Ordering::Relaxed);
            // Openers blocked on a full channel end when it closes.
            stores.lock().unwrap().try_iter().for_each(drop);
            claimed
        });
        let mut all: Vec<&PathBuf> = claimed.iter().flatten().collect();
        all.sort();
        let twice: Vec<&&PathBuf> = all.windows(2).filter(|w| w[0] == w[1]).map(|w| &w[0]).collect();
        assert!(twice.is_empty(), "round {round}: claimed twice: {twice:?}");
        assert_eq!(all.len(), JOBS, "round {round}: every job claimed");
        assert_eq!(first.work_queue().unwrap().job_counts().unwrap(), clipdex::store::JobCounts::default());
    }
}

/// The work queue's claims: a claim excludes other processes while its lease lasts, a claim
/// whose lease ran out is free again and its first holder's result is refused (`finish` says
/// to discard it), and a claim of a process that is gone is free at once.
#[test]
fn work_queue_claims_expire_and_late_results_are_discarded() {
    let Some(pg) = postgres_database() else { return };
    let location = DbLocation::Postgres(pg.url.clone());
    let (a, b) = (Store::open(location.clone()).unwrap(), Store::open(location.clone()).unwrap());
    let (qa, qb) = (a.work_queue().unwrap(), b.work_queue().unwrap());
    let jobs: Vec<clipdex::store::Job> = (0..6).map(|i| (PathBuf::from(format!("/q/{i}.jpg")), 10, i)).collect();
    qa.enqueue(&jobs).unwrap();
    let long = std::time::Duration::from_secs(60);
    let short = std::time::Duration::from_millis(300);
    assert_eq!(qa.claim("a", 2, short).unwrap().len(), 2);
    assert_eq!(qb.claim("b", 10, long).unwrap().len(), 4, "the leased two are not free");
    assert_eq!(qb.job_counts().unwrap().leased, 6);
    std::thread::sleep(std::time::Duration::from_millis(500));
    // a's lease ran out: b gets those two, and a's results are refused.
    let late = qb.claim("b", 10, long).unwrap();
    assert_eq!(
        late.iter().map(|j| j.0.clone()).collect::<Vec<_>>(),
        vec![PathBuf::from("/q/0.jpg"), "/q/1.jpg".into()]
    );
    assert_eq!(qa.finish("a", &[Path::new("/q/0.jpg")]).unwrap(), [false]);
    // One round trip for a batch, answered path by path (no job for /q/9.jpg).
    assert_eq!(qb.finish("b", &[Path::new("/q/9.jpg"), Path::new("/q/0.jpg")]).unwrap(), [false, true]);
    // A changed file re-queued loses its claim; the claim of a process that is gone is free.
    qa.enqueue(&[(PathBuf::from("/q/1.jpg"), 11, 1)]).unwrap();
    assert_eq!(qa.claim("a", 10, long).unwrap().len(), 1);
    drop(b);
    let c = Store::open(location).unwrap();
    let freed = c.work_queue().unwrap().claim("c", 10, long).unwrap();
    assert_eq!(freed.len(), 4, "b's claims did not come back when b went away: {freed:?}");
    let counts = qa.job_counts().unwrap();
    assert_eq!((counts.pending, counts.leased), (0, 5));

    // A root being scanned is seen as such by every process, without taking its lock.
    let (root, other) = (PathBuf::from("/q"), PathBuf::from("/elsewhere"));
    let held = qa.lock_root(&root).unwrap().expect("nobody scans /q");
    let qc = c.work_queue().unwrap();
    assert!(qc.being_scanned(&[other.clone(), root.clone()]).unwrap());
    assert!(!qc.being_scanned(std::slice::from_ref(&other)).unwrap());
    assert!(qc.lock_root(&root).unwrap().is_none(), "looking did not take the lock from a");
    drop(held);
    // The server ends the session (and its lock) a moment after the client hangs up.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while qc.being_scanned(&[other.clone(), root.clone()]).unwrap() {
        assert!(std::time::Instant::now() < deadline, "the lock outlived its connection");
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

/// `clipdex worker`: a machine that scans nothing embeds what is queued, reading the files
/// through `--path-map` while the library keeps the paths as the scanner recorded them; a
/// worker SIGKILLed mid-run leaves its claims to the next worker at once; a file the worker
/// cannot read is neither forgotten nor recorded as failed, but left to the scanner.
#[test]
fn a_worker_embeds_queued_files_through_a_path_map_and_a_killed_one_leaves_them_to_others() {
    let Some(pg) = postgres_database() else { return };
    let tmp = tempfile::tempdir().unwrap();
    let (empty, local) = (tmp.path().join("empty"), tmp.path().join("nas"));
    std::fs::create_dir_all(&empty).unwrap();
    std::fs::create_dir_all(&local).unwrap();
    let clipdex = |args: &[&str]| clipdex_on_db(&pg.url, args);
    // The library gets its model from a first (empty) pass.
    assert!(clipdex(&["add", empty.to_str().unwrap()]).output().unwrap().status.success());
    assert!(clipdex(&["index"]).output().unwrap().status.success());
    let store = Store::open(DbLocation::Postgres(pg.url.clone())).unwrap();
    let queue = store.work_queue().unwrap();
    // What a scanner on the NAS would queue: its paths, under /srv/photos.
    let make = |range: std::ops::Range<u32>| -> Vec<clipdex::store::Job> {
        range
            .map(|i| {
                let file = local.join(format!("p{i:03}.png"));
                common::picture(i).save(&file).unwrap();
                let meta = std::fs::metadata(&file).unwrap();
                (PathBuf::from(format!("/srv/photos/p{i:03}.png")), meta.len(), 1)
            })
            .collect()
    };
    queue.enqueue(&make(0..20)).unwrap();
    let map = format!("/srv/photos={}", local.display());
    let out = clipdex(&["worker", "--path-map", &map, "--once", "--json", "--batch-size", "3"]).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["embedded"], 20, "{report}");
    assert!(store.path_entry(Path::new("/srv/photos/p007.png")).unwrap().is_some(), "stored under the recorded path");
    assert!(store.paths_under(&local).unwrap().is_empty(), "the local view is not recorded");

    // Killed mid-run: the next worker takes over at once (no lease to wait out).
    queue.enqueue(&make(20..120)).unwrap();
    let mut child = clipdex(&["worker", "--path-map", &map, "--batch-size", "2"]).spawn().unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while store.counts().unwrap().images < 30 && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    assert!(store.counts().unwrap().images < 120, "the worker finished before it was killed");
    assert!(store.check().unwrap().is_empty());
    // The server ends the dead worker's session (and with it its claims) as soon as it sees
    // the socket closed: a moment, not the 600 s lease.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while queue.job_counts().unwrap().leased > 0 {
        assert!(std::time::Instant::now() < deadline, "the killed worker's claims outlived it");
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let out = clipdex(&["worker", "--path-map", &map, "--once", "--json"]).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(store.counts().unwrap().images, 120);

    // A file this machine cannot see: left queued for the scanner, nothing recorded.
    queue.enqueue(&[(PathBuf::from("/elsewhere/x.png"), 5, 1)]).unwrap();
    let out = clipdex(&["worker", "--path-map", &map, "--once", "--json"]).output().unwrap();
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!((report["unreadable"].as_u64(), report["failed"].as_u64()), (Some(1), Some(0)), "{report}");
    assert!(store.failures().unwrap().is_empty());
    let stats = ok_json_of(clipdex(&["stats", "--json"]).output().unwrap());
    assert_eq!(stats["jobs"]["pending"], 1, "{stats}");

    // A folder library has no queue to work on.
    let folder = tmp.path().join("db");
    let out = clipdex_on_db(folder.to_str().unwrap(), &["worker", "--once"]).output().unwrap();
    assert!(!out.status.success() && String::from_utf8_lossy(&out.stderr).contains("PostgreSQL"));
}

fn ok_json_of(out: std::process::Output) -> serde_json::Value {
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).unwrap()
}

/// With PostgreSQL nothing holds the library: while `serve` runs on it, the command line
/// searches, adds a folder and indexes it, and the server then finds the new photos.
#[test]
fn commands_run_on_a_postgres_library_while_it_is_served() {
    let Some(pg) = postgres_database() else { return };
    let tmp = tempfile::tempdir().unwrap();
    let (first, second) = (tmp.path().join("a"), tmp.path().join("b"));
    for (dir, seeds) in [(&first, 0..4u32), (&second, 10..13)] {
        std::fs::create_dir_all(dir).unwrap();
        for i in seeds {
            common::picture(i).save(dir.join(format!("p{i}.png"))).unwrap();
        }
    }
    let clipdex = |args: &[&str]| clipdex_on_db(&pg.url, args);
    assert!(clipdex(&["add", first.to_str().unwrap()]).output().unwrap().status.success());
    assert!(clipdex(&["index"]).output().unwrap().status.success());
    let (server, url) = common::start_server(clipdex(&["serve", "--bind", "127.0.0.1:0", "--no-watch"]));
    let url = format!("{url}/");
    let results = |k: usize| -> usize {
        let body: serde_json::Value =
            ureq::get(&format!("{url}api/search?q=a%20photo&k={k}")).call().unwrap().into_json().unwrap();
        body["results"].as_array().unwrap().len()
    };
    let during = [
        clipdex(&["search", "a photo", "--json"]).output().unwrap(),
        clipdex(&["add", second.to_str().unwrap()]).output().unwrap(),
        clipdex(&["index", "--json"]).output().unwrap(),
        clipdex(&["stats", "--json"]).output().unwrap(),
    ];
    let served = results(20);
    // Every kind of request answers on a PostgreSQL library (each runs its store calls off
    // the server's event loop).
    let get = |path: &str| {
        ureq::get(&format!("{url}{path}")).call().map(|r| r.status()).unwrap_or_else(|e| panic!("{path}: {e}"))
    };
    let first_id = {
        let body: serde_json::Value =
            ureq::get(&format!("{url}api/search?q=a%20photo&k=1")).call().unwrap().into_json().unwrap();
        body["results"][0]["id"].as_u64().unwrap()
    };
    for path in [
        "api/status".to_string(),
        "api/tags".into(),
        "api/roots".into(),
        format!("api/images/{first_id}"),
        format!("api/images/{first_id}/thumb?size=64"),
        format!("api/images/{first_id}/file"),
        "api/search?q=a%20photo&under=/&after=2000&k=3".into(),
    ] {
        assert_eq!(get(&path), 200, "{path}");
    }
    let similar = ureq::post(&format!("{url}api/search/image?id={first_id}&k=3")).call().unwrap();
    assert_eq!(similar.status(), 200);
    let tagged = ureq::post(&format!("{url}api/tag"))
        .send_json(serde_json::json!({"labels": "cat,dog", "id": first_id}))
        .unwrap();
    assert_eq!(tagged.status(), 200);
    drop(server);
    for out in &during {
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    }
    let stats: serde_json::Value = serde_json::from_slice(&during[3].stdout).unwrap();
    assert_eq!(stats["images"], 7);
    assert_eq!(served, 7, "the server sees what the command line indexed");
}

/// The clipdex binary on the library `db` (a folder or a URL) with the fixture CLIP, output
/// captured.
fn clipdex_on_db(db: &str, args: &[&str]) -> std::process::Command {
    let mut c = std::process::Command::new(env!("CARGO_BIN_EXE_clipdex"));
    c.arg("--db").arg(db).arg("--model").arg(common::fixtures().join("clip-tiny-p32")).args(args);
    c.stdout(std::process::Stdio::piped()).stderr(std::process::Stdio::piped());
    c
}
