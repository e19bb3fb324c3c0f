//! The HNSW graph: searches never build it (maintenance does), recall against the exact scan,
//! a snapshot that survives a restart and is caught up instead of rebuilt, new vectors found
//! before they are caught up, tombstones that never come back, a rebuild when they pile up, and
//! searches that open the saved flat graph (or hnsw_rs's dump when that file is damaged).

use std::path::{Path, PathBuf};

use clipdex::ann::AnnIndex;
use clipdex::store::{ImageRecord, Store};

const DIM: usize = 32;

struct Rng(u64);

impl Rng {
    fn normal(&mut self) -> f32 {
        let mut u = || {
            self.0 = self.0.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            ((self.0 >> 40) as f32 + 0.5) / (1u64 << 24) as f32
        };
        let (a, b) = (u(), u());
        (-2.0 * a.ln()).sqrt() * (std::f32::consts::TAU * b).cos()
    }
}

fn unit(mut v: Vec<f32>) -> Vec<f32> {
    let n = v.iter().map(|x| x * x).sum::<f32>().sqrt();
    v.iter_mut().for_each(|x| *x /= n);
    v
}

/// Clustered unit vectors, as photo embeddings are.
fn vectors(rng: &mut Rng, n: usize) -> Vec<Vec<f32>> {
    let centres: Vec<Vec<f32>> = (0..20).map(|_| unit((0..DIM).map(|_| rng.normal()).collect())).collect();
    (0..n).map(|i| unit(centres[i % 20].iter().map(|c| c + 0.35 * rng.normal()).collect())).collect()
}

fn add(store: &Store, tag: &str, vs: &[Vec<f32>]) -> Vec<PathBuf> {
    vs.iter()
        .enumerate()
        .map(|(i, v)| {
            let path = PathBuf::from(format!("/photos/{tag}-{i}.jpg"));
            let record = ImageRecord {
                hash: format!("{tag}-{i}"),
                size: 1,
                width: 1,
                height: 1,
                modified: 0,
                taken: None,
                camera: None,
                gps: None,
                lens: None,
                video: None,
                motion_video: None,
                motion_video_problem: None,
            };
            store.commit_image(&path, 1, 0, &record, v).unwrap();
            path
        })
        .collect()
}

fn recall_at_10(index: &AnnIndex, exact: &AnnIndex, queries: &[Vec<f32>]) -> f64 {
    let mut found = 0;
    for q in queries {
        let truth: Vec<u64> = exact.top(q, 10).into_iter().map(|h| h.0).collect();
        found += index.top(q, 10).into_iter().filter(|h| truth.contains(&h.0)).count();
    }
    found as f64 / (10 * queries.len()) as f64
}

#[test]
fn graph_lifecycle() {
    let tmp = tempfile::tempdir().unwrap();
    let store = Store::open(tmp.path().join("db")).unwrap();
    let graph_dir: &Path = &tmp.path().join("db/hnsw");
    let mut rng = Rng(9);
    let first = add(&store, "a", &vectors(&mut rng, 2000));
    let queries = vectors(&mut rng, 50);
    let exact = AnnIndex::open(&store, graph_dir, usize::MAX).unwrap();
    assert_eq!(exact.state().kind, "exact");

    // Opening for search never builds: until maintenance, the exact scan answers.
    let index = AnnIndex::open(&store, graph_dir, 500).unwrap();
    assert_eq!(index.state().kind, "hnsw");
    assert!(index.state().needs_rebuild);
    assert_eq!(index.state().pending, 2000);
    assert!(!graph_dir.exists());
    assert_eq!(recall_at_10(&index, &exact, &queries), 1.0);

    // Maintenance builds and saves it; good recall.
    let built = AnnIndex::maintain(&store, graph_dir, 500).unwrap();
    assert!(built.rebuilt && !built.needs_rebuild);
    assert!((64..=512).contains(&built.search_ef), "calibrated beam width {}", built.search_ef);
    let index = AnnIndex::open(&store, graph_dir, 500).unwrap();
    assert!(!index.state().needs_rebuild);
    assert_eq!(index.state().search_ef, built.search_ef, "the width is saved with the snapshot");
    assert_eq!(index.state().pending, 0);
    let recall = recall_at_10(&index, &exact, &queries);
    assert!(recall >= 0.95, "recall@10 {recall}");
    let again = AnnIndex::maintain(&store, graph_dir, 500).unwrap();
    assert!(!again.rebuilt && again.caught_up == 0, "nothing to do");

    // New vectors are found at once (scanned beside the graph), then caught up, not rebuilt.
    let fresh = vectors(&mut rng, 200);
    add(&store, "b", &fresh);
    let b17 = store.path_entry(Path::new("/photos/b-17.jpg")).unwrap().unwrap().id;
    let index = AnnIndex::open(&store, graph_dir, 500).unwrap();
    assert_eq!(index.state().pending, 200);
    let hit = index.top(&fresh[17], 1);
    assert_eq!(hit[0].0, b17);
    assert!(hit[0].1 > 0.999);
    let caught = AnnIndex::maintain(&store, graph_dir, 500).unwrap();
    assert!(!caught.rebuilt);
    assert_eq!(caught.caught_up, 200);
    let index = AnnIndex::open(&store, graph_dir, 500).unwrap();
    assert_eq!(index.state().pending, 0);
    assert_eq!(index.top(&fresh[17], 1)[0].0, b17);

    // Deleted images are tombstones: counted, never returned.
    let gone: Vec<u64> = first[..100].iter().map(|p| store.unlink_path(p).unwrap().unwrap().id).collect();
    let index = AnnIndex::open(&store, graph_dir, 500).unwrap();
    assert_eq!(index.state().tombstones, 100);
    assert!(!index.state().needs_rebuild);
    for q in &queries {
        assert!(index.top(q, 10).iter().all(|h| !gone.contains(&h.0)));
    }
    let described = AnnIndex::describe(&store, graph_dir, 500).unwrap();
    assert_eq!((described.kind, described.tombstones), ("hnsw", 100));

    // Past a fifth of the graph a rebuild is due; searches stay right meanwhile.
    let mut gone = gone;
    for p in &first[100..700] {
        gone.push(store.unlink_path(p).unwrap().unwrap().id);
    }
    let index = AnnIndex::open(&store, graph_dir, 500).unwrap();
    assert!(index.state().needs_rebuild);
    let exact = AnnIndex::open(&store, graph_dir, usize::MAX).unwrap();
    for q in &queries {
        assert!(index.top(q, 10).iter().all(|h| !gone.contains(&h.0)));
    }
    assert!(recall_at_10(&index, &exact, &queries) >= 0.95);
    let rebuilt = AnnIndex::maintain(&store, graph_dir, 500).unwrap();
    assert!(rebuilt.rebuilt);
    let index = AnnIndex::open(&store, graph_dir, 500).unwrap();
    assert_eq!(index.state().tombstones, 0);
    assert!(recall_at_10(&index, &exact, &queries) >= 0.95);
}

#[test]
fn a_corrupt_snapshot_is_rebuilt() {
    let tmp = tempfile::tempdir().unwrap();
    let store = Store::open(tmp.path().join("db")).unwrap();
    let graph_dir = tmp.path().join("db/hnsw");
    let mut rng = Rng(3);
    add(&store, "a", &vectors(&mut rng, 600));
    AnnIndex::maintain(&store, &graph_dir, 100).unwrap();
    // Both forms of the graph damaged: hnsw_rs's dump and the flat file.
    for entry in std::fs::read_dir(&graph_dir).unwrap() {
        let p = entry.unwrap().path();
        if p.extension().is_some_and(|e| e == "graph" || e == "bin") {
            std::fs::write(&p, b"garbage").unwrap();
        }
    }
    let index = AnnIndex::open(&store, &graph_dir, 100).unwrap();
    assert!(index.state().needs_rebuild);
    assert_eq!(index.top(&vectors(&mut Rng(5), 1)[0], 5).len(), 5, "the exact scan answers meanwhile");
    assert!(AnnIndex::maintain(&store, &graph_dir, 100).unwrap().rebuilt);
    assert!(!AnnIndex::open(&store, &graph_dir, 100).unwrap().state().needs_rebuild);
}

/// The files of the snapshot in `dir` whose name ends in `ext`, with their bytes.
fn snapshot_files(dir: &Path, ext: &str) -> Vec<(PathBuf, Vec<u8>)> {
    let mut files: Vec<(PathBuf, Vec<u8>)> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == ext))
        .map(|p| (p.clone(), std::fs::read(&p).unwrap()))
        .collect();
    files.sort();
    files
}

#[test]
fn searches_open_the_flat_file_and_fall_back_to_hnsw_rs_dump() {
    let tmp = tempfile::tempdir().unwrap();
    let store = Store::open(tmp.path().join("db")).unwrap();
    let graph_dir = tmp.path().join("db/hnsw");
    let mut rng = Rng(21);
    add(&store, "a", &vectors(&mut rng, 800));
    let queries = vectors(&mut rng, 20);
    assert!(AnnIndex::maintain(&store, &graph_dir, 100).unwrap().rebuilt);
    let flat = snapshot_files(&graph_dir, "bin");
    let dump = snapshot_files(&graph_dir, "graph");
    assert_eq!(flat.len(), 1, "the flat graph is saved with the snapshot");
    assert_eq!(dump.len(), 1);
    let answers = |index: &AnnIndex| queries.iter().map(|q| index.top(q, 10)).collect::<Vec<_>>();
    let opened = AnnIndex::open(&store, &graph_dir, 100).unwrap();
    let expected = answers(&opened);
    let exact = AnnIndex::open(&store, &graph_dir, usize::MAX).unwrap();
    assert!(recall_at_10(&opened, &exact, &queries) >= 0.95);

    // Opening reads the flat file only: hnsw_rs's dump is not needed to search.
    std::fs::write(&dump[0].0, b"garbage").unwrap();
    let index = AnnIndex::open(&store, &graph_dir, 100).unwrap();
    assert!(!index.state().needs_rebuild && !index.state().needs_maintenance());
    assert_eq!(answers(&index), expected);
    std::fs::write(&dump[0].0, &dump[0].1).unwrap();

    // A damaged flat file: the graph is flattened from hnsw_rs's dump, same answers, and the
    // file is dropped for maintenance to write again.
    let mut damaged = flat[0].1.clone();
    let middle = damaged.len() / 2;
    damaged[middle] ^= 1;
    std::fs::write(&flat[0].0, &damaged).unwrap();
    let index = AnnIndex::open(&store, &graph_dir, 100).unwrap();
    assert!(!index.state().needs_rebuild);
    assert_eq!(answers(&index), expected);
    assert!(snapshot_files(&graph_dir, "bin").is_empty());

    // So is a snapshot from before the flat file: it opens, and maintenance adds the file
    // without rebuilding or inserting anything.
    let state = AnnIndex::describe(&store, &graph_dir, 100).unwrap();
    assert!(state.needs_maintenance());
    assert_eq!(answers(&AnnIndex::open(&store, &graph_dir, 100).unwrap()), expected);
    let maintained = AnnIndex::maintain(&store, &graph_dir, 100).unwrap();
    assert!(!maintained.rebuilt && maintained.caught_up == 0);
    assert_eq!(snapshot_files(&graph_dir, "bin").len(), 1);
    assert!(!AnnIndex::describe(&store, &graph_dir, 100).unwrap().needs_maintenance());
    assert_eq!(answers(&AnnIndex::open(&store, &graph_dir, 100).unwrap()), expected);
}
