//! Which full-text index answers a library's caption and text searches, and how a stored
//! caption or text reaches it.
//!
//! A folder library keeps its index on disk ([`crate::query::text_index`], the `text-index`
//! folder beside `sled`), opened on first use and rebuilt from the stored records when it is
//! missing, stale or damaged. Each write marks the index dirty, stores the record in sled,
//! flushes sled, then commits the index and clears the mark: a process killed anywhere in
//! between leaves either an index that holds the write or one that the next open rebuilds.
//! A photo that leaves the library (pruned, rescanned, removed, moved out) takes its caption
//! and text with it in the store's transaction, which moves the same stamp and journals the
//! removal; the index drops the photo's documents on its next write, search or open (sled
//! flushed first, then one commit holding the new stamp), or is rebuilt when the journal does
//! not account for every change since its stamp.
//! PostgreSQL libraries (and a folder library whose index cannot be written, e.g. a read-only
//! disk) rank with the in-memory index ([`crate::query::fulltext::FullTextIndex`]) as before.

use std::sync::Arc;

use super::Library;
use crate::error::Result;
use crate::query::fulltext::{Field, FullTextIndex, TextMatches, TextQuery};
use crate::query::text_index::{TextIndex, TextWrite};
use crate::store::{DbLocation, ImageId};

/// The folder of a folder library's full-text index, beside `sled`.
pub const TEXT_INDEX_FOLDER: &str = "text-index";

/// The library's full-text index, whichever kind it has.
pub(super) enum FullText {
    /// On disk (a folder library).
    Disk(Arc<TextIndex>),
    /// In memory, built from the store.
    Memory(Arc<FullTextIndex>),
}

impl FullText {
    /// Documents holding `field`.
    pub(super) fn len(&self, field: Field) -> Result<usize> {
        match self {
            FullText::Disk(index) => index.len(field),
            FullText::Memory(index) => Ok(index.len(field)),
        }
    }

    /// See [`FullTextIndex::rank_captions`].
    pub(super) fn rank_captions(&self, query: &str) -> Result<Vec<(ImageId, f32)>> {
        match self {
            FullText::Disk(index) => index.rank_captions(query),
            FullText::Memory(index) => Ok(index.rank_captions(query)),
        }
    }

    /// See [`FullTextIndex::rank_text`].
    pub(super) fn rank_text(
        &self,
        query: &TextQuery,
        text_of: &dyn Fn(ImageId) -> Option<String>,
    ) -> Result<TextMatches> {
        match self {
            FullText::Disk(index) => index.rank_text(query),
            FullText::Memory(index) => Ok(index.rank_text(query, text_of)),
        }
    }
}

/// The state of a folder library's index in the library: not opened yet (`None`), open, or
/// unusable in this process (`Some(None)`: the in-memory index answers).
pub(super) type DiskTextIndex = std::sync::Mutex<Option<Option<Arc<TextIndex>>>>;

impl Library {
    /// The folder library's index on disk, opened (or built) on first use; `None` for a
    /// PostgreSQL library or when it cannot be opened nor built (said once, in the log).
    pub(super) fn disk_text_index(&self) -> Option<Arc<TextIndex>> {
        let DbLocation::Dir(dir) = self.store.location() else { return None };
        let mut state = self.text_index.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(index) = state.as_ref() {
            return index.clone();
        }
        let load = || {
            let captions = self.store.captions().map(|r| r.map(|(id, c)| (id, c.text))).collect::<Result<Vec<_>>>()?;
            let texts = self.store.texts().map(|r| r.map(|(id, t)| (id, t.joined()))).collect::<Result<Vec<_>>>()?;
            Ok((captions, texts))
        };
        let stamp = match self.store.full_text_stamp() {
            Ok(stamp) => stamp,
            Err(e) => {
                tracing::warn!("{e}; searching captions and photo text in memory");
                *state = Some(None);
                return None;
            }
        };
        let folder = dir.join(TEXT_INDEX_FOLDER);
        let catch_up = |index: &TextIndex| -> Result<bool> {
            let Some(removed) = self.removals_since(index.stamp(), stamp, 0)? else { return Ok(false) };
            let mut write = index.begin()?;
            self.store.flush()?;
            remove_documents(&mut write, &removed)?;
            write.commit(stamp)?;
            Ok(true)
        };
        let index = match TextIndex::open_or_build(&folder, stamp, catch_up, load) {
            Ok(index) => {
                self.forget_removals(stamp);
                Some(Arc::new(index))
            }
            Err(e) => {
                // Said once per process: the state is kept below.
                tracing::warn!(
                    "{e}; this process searches captions and photo text in memory instead (same answers, \
                     slower on large libraries; clipdex builds the index when it next opens the library and \
                     can write {})",
                    folder.display()
                );
                None
            }
        };
        *state = Some(index.clone());
        index
    }

    /// Stops using the index on disk in this process after `error` (logged); the next open
    /// rebuilds it (the version file goes, or the index is behind the store's stamp).
    fn give_up_disk_index(&self, index: &TextIndex, error: &crate::error::Error) {
        let version = index.dir().join(crate::query::text_index::VERSION_FILE);
        let then = match std::fs::remove_file(&version) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => "",
            _ => "; it is rebuilt when the library is next opened",
        };
        tracing::warn!("{error}; this process searches captions and photo text in memory instead{then}");
        *self.text_index.lock().unwrap_or_else(|p| p.into_inner()) = Some(None);
    }

    /// The index that answers caption and text searches, holding every removal stored.
    pub(super) fn full_text(&self) -> Result<FullText> {
        if let Some(index) = self.disk_text_index()
            && self.catch_up_disk_index(&index)?
        {
            return Ok(FullText::Disk(index));
        }
        Ok(FullText::Memory(self.full_text_index()?))
    }

    /// The images removed from the store with their caption or text after the stamp `from`
    /// up to `upto`, when they and `own` writes just made account for every change between;
    /// `None` when something else was stored (an index at `from` misses it).
    fn removals_since(&self, from: Option<u64>, upto: Option<u64>, own: u64) -> Result<Option<Vec<ImageId>>> {
        let (Some(from), Some(upto)) = (from, upto) else { return Ok((from == upto && own == 0).then(Vec::new)) };
        if upto < from {
            return Ok(None);
        }
        let removals: Vec<(u64, ImageId)> =
            self.store.full_text_removals(from)?.into_iter().filter(|(stamp, _)| *stamp <= upto).collect();
        Ok((upto - from == removals.len() as u64 + own).then(|| removals.into_iter().map(|(_, id)| id).collect()))
    }

    /// Forgets the journal of removals an index at `stamp` holds (best effort: entries left
    /// are ignored and forgotten later).
    fn forget_removals(&self, stamp: Option<u64>) {
        if let Some(stamp) = stamp
            && let Err(e) = self.store.forget_full_text_removals(stamp)
        {
            tracing::debug!("{e}");
        }
    }

    /// Brings the index to the store's stamp by dropping the documents of images removed
    /// since; `false` when it cannot (logged; this process then searches in memory).
    fn catch_up_disk_index(&self, index: &TextIndex) -> Result<bool> {
        if index.stamp() == self.store.full_text_stamp()? {
            return Ok(true);
        }
        let mut write = match index.begin() {
            Ok(write) => write,
            Err(e) => {
                self.give_up_disk_index(index, &e);
                return Ok(false);
            }
        };
        // Under the writer's lock: another thread may have caught up meanwhile.
        let now = self.store.full_text_stamp()?;
        let applied = match self.removals_since(index.stamp(), now, 0)? {
            Some(removed) => {
                self.store.flush()?;
                remove_documents(&mut write, &removed).and_then(|()| write.commit(now))
            }
            None => Err(not_held(index)),
        };
        match applied {
            Ok(()) => {
                self.forget_removals(now);
                Ok(true)
            }
            Err(e) => {
                self.give_up_disk_index(index, &e);
                Ok(false)
            }
        }
    }

    /// Stores one caption or text with `store` (`false`: the store refused it) and gives the
    /// library's index `value` for it (`None`: the image has none now).
    pub(super) fn write_full_text(
        &self,
        field: Field,
        id: ImageId,
        value: Option<&str>,
        store: impl FnOnce() -> Result<bool>,
    ) -> Result<bool> {
        if let Some(index) = self.disk_text_index() {
            let mut write = match index.begin() {
                Ok(write) => write,
                Err(e) => {
                    self.give_up_disk_index(&index, &e);
                    return self.write_full_text(field, id, value, store);
                }
            };
            let stored = store()?;
            let after = self.store.full_text_stamp()?;
            // The record is stored: an index that fails now, or that turns out not to hold
            // every write before this one, is rebuilt on the next open (its dirty mark stays),
            // and this process searches in memory meanwhile. Images removed since the index's
            // last commit (their removals are journaled) are dropped from it in this commit.
            let written = match self.removals_since(index.stamp(), after, u64::from(stored))? {
                Some(removed) => {
                    if after != index.stamp() {
                        // sled first: the index never holds what sled could still lose.
                        self.store.flush()?;
                    }
                    let set = if stored { write.set(field, id, value) } else { Ok(()) };
                    set.and_then(|()| remove_documents(&mut write, &removed)).map(|()| !removed.is_empty())
                }
                None => Err(not_held(&index)),
            };
            match written.and_then(|removed| write.commit(after).map(|()| removed)) {
                Ok(removed) => {
                    if removed {
                        self.forget_removals(after);
                    }
                }
                Err(e) => self.give_up_disk_index(&index, &e),
            }
            return Ok(stored);
        }
        let before = match field {
            Field::Caption => self.store.caption_changes()?,
            Field::Text => self.store.text_changes()?,
        };
        let stored = store()?;
        self.full_text_written(field, before, |index| {
            if stored {
                match field {
                    Field::Caption => index.set_caption(id, value),
                    Field::Text => index.set_text(id, value),
                }
            }
        })?;
        Ok(stored)
    }
}

/// Drops both documents of each of `removed` from the index.
fn remove_documents(write: &mut TextWrite<'_>, removed: &[ImageId]) -> Result<()> {
    for &id in removed {
        write.set(Field::Caption, id, None)?;
        write.set(Field::Text, id, None)?;
    }
    Ok(())
}

/// The error of an index that misses a caption or text the store holds.
fn not_held(index: &TextIndex) -> crate::error::Error {
    crate::error::Error::Store(format!(
        "the text index {} does not hold every caption and text stored",
        index.dir().display()
    ))
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::path::{Path, PathBuf};

    use super::*;
    use crate::library::LibraryConfig;
    use crate::store::{ImageRecord, StoredCaption, StoredText, TextLine};

    const WORDS: &[&str] = &["total", "invoice", "48213", "receipt", "main", "street", "moon", "bill", "dog", "beach"];
    const QUERIES: &[&str] = &["total", "48213 bill", "\"main street\"", "recept", "moon dog beach"];

    fn record(n: u64) -> ImageRecord {
        ImageRecord {
            hash: format!("{n:064x}"),
            size: 100,
            width: 40,
            height: 30,
            modified: 1,
            taken: None,
            camera: None,
            gps: None,
            lens: None,
            video: None,
            motion_video: None,
            motion_video_problem: None,
        }
    }

    fn open(db: &Path) -> Library {
        let library = Library::open(LibraryConfig::new(db, "test-model")).unwrap();
        library.store.set_model("test-model", 4).unwrap();
        library
    }

    /// A photo at `path` with content `n`, its text and (every third) a caption, all written
    /// as the library writes them.
    fn add(library: &Library, path: &Path, n: u64, seed: u64) -> ImageId {
        let id = library.store.commit_image(path, 100, 1, &record(n), &[1.0, 0.0, 0.0, 0.0]).unwrap();
        let words = |k: u64| (0..1 + k % 7).map(|j| WORDS[((seed * 7 + j * 3 + k) % 10) as usize]).collect::<Vec<_>>();
        let lines = vec![TextLine { text: words(seed).join(" "), score: 0.9, quad: [[0.0; 2]; 4] }];
        assert!(library.write_text(id, &StoredText::new(&record(n).hash, "ocr", lines)).unwrap());
        if seed.is_multiple_of(3) {
            let caption = StoredCaption::new(&words(seed + 1).join(" "), "blip");
            assert!(library.write_caption(id, &caption).unwrap());
        }
        id
    }

    /// The library answers through its index on disk, with the images, matched words and
    /// scores (within 1e-6) of an index rebuilt from the store; the index holds no document
    /// of a removed image.
    fn assert_as_a_rebuild(library: &Library, context: &str) {
        let FullText::Disk(index) = library.full_text().unwrap() else { panic!("{context}: not on disk") };
        let captions: Vec<_> = library.store.captions().map(|r| r.map(|(i, c)| (i, c.text)).unwrap()).collect();
        let texts: Vec<_> = library.store.texts().map(|r| r.map(|(i, t)| (i, t.joined())).unwrap()).collect();
        assert_eq!(index.len(Field::Text).unwrap(), texts.len(), "{context}");
        assert_eq!(index.len(Field::Caption).unwrap(), captions.len(), "{context}");
        let tmp = tempfile::tempdir().unwrap();
        let rebuilt = TextIndex::build(&tmp.path().join("text-index"), None, captions, texts).unwrap();
        for q in QUERIES {
            let parsed = TextQuery::parse(q);
            let (a, b) = (index.rank_text(&parsed).unwrap(), rebuilt.rank_text(&parsed).unwrap());
            assert_eq!(a.matched_terms, b.matched_terms, "{context}: {q}");
            let ids = |m: &TextMatches| m.hits.iter().map(|h| (h.id, h.coverage)).collect::<Vec<_>>();
            assert_eq!(ids(&a), ids(&b), "{context}: {q}");
            for (x, y) in a.hits.iter().zip(&b.hits) {
                assert!((x.score - y.score).abs() <= 1e-6, "{context}: {q}: {} against {} rebuilt", x.score, y.score);
            }
            let (a, b) = (index.rank_captions(q).unwrap(), rebuilt.rank_captions(q).unwrap());
            assert_eq!(a.iter().map(|h| h.0).collect::<Vec<_>>(), b.iter().map(|h| h.0).collect::<Vec<_>>());
            for (x, y) in a.iter().zip(&b) {
                assert!((x.1 - y.1).abs() <= 1e-6, "{context}: caption {q}: {} against {} rebuilt", x.1, y.1);
            }
        }
    }

    /// Photos leave the library in random order, as `index` prunes them (a file gone, a file
    /// whose content changed, a second copy going first), with additions between: each time
    /// the index answers as a rebuild. A removal stored by a process that never opened the
    /// index is applied when the next process opens it, without a rebuild; a text stored
    /// past the index (not journaled) makes the next open rebuild it.
    #[test]
    fn removed_photos_leave_the_index_and_it_scores_as_a_rebuild() {
        let tmp = tempfile::tempdir().unwrap();
        let db = tmp.path().join("db");
        let library = open(&db);
        let mut paths: BTreeMap<PathBuf, u64> = BTreeMap::new();
        let mut next = 0u64;
        for _ in 0..40 {
            let path = PathBuf::from(format!("/photos/{next}.jpg"));
            add(&library, &path, next, next);
            paths.insert(path, next);
            next += 1;
        }
        // A second file of photo 0: its text stays while one file holds it.
        let first = library.store.path_entry(Path::new("/photos/0.jpg")).unwrap().unwrap().id;
        library.store.link_path(Path::new("/more/0.jpg"), first, 100, 1).unwrap();
        assert_as_a_rebuild(&library, "indexed");
        let mut state = 12345u64;
        let mut below = |n: u64| {
            state = state.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            (state >> 33) % n
        };
        for step in 0..30 {
            let victim = paths.keys().nth(below(paths.len() as u64) as usize).unwrap().clone();
            match below(4) {
                // The file changed: its new content replaces the old image at the same path.
                0 => {
                    add(&library, &victim, next, next);
                    next += 1;
                }
                // A new photo.
                1 => {
                    let path = PathBuf::from(format!("/photos/{next}.jpg"));
                    add(&library, &path, next, next);
                    paths.insert(path, next);
                    next += 1;
                }
                // Gone (pruned, removed, moved out of the library).
                _ => {
                    library.store.unlink_path(&victim).unwrap();
                    paths.remove(&victim);
                }
            }
            if step % 3 == 0 {
                assert_as_a_rebuild(&library, &format!("step {step}"));
            }
        }
        library.store.unlink_path(Path::new("/photos/0.jpg")).unwrap();
        assert_as_a_rebuild(&library, "one of two files gone");
        library.store.unlink_path(Path::new("/more/0.jpg")).unwrap();
        assert_as_a_rebuild(&library, "both files gone");
        drop(library);

        // A process that removes photos without opening the index (`index` without text).
        let library = Library::open(LibraryConfig::new(db.as_path(), "test-model")).unwrap();
        for path in paths.keys().take(5) {
            library.store.unlink_path(path).unwrap();
        }
        drop(library);
        let marker = db.join(TEXT_INDEX_FOLDER).join("not-rebuilt");
        std::fs::write(&marker, b"").unwrap();
        let library = open(&db);
        assert_as_a_rebuild(&library, "reopened after removals");
        assert!(marker.exists(), "the removals were applied, not rebuilt");
        assert!(library.store.full_text_removals(0).unwrap().is_empty(), "the journal is forgotten once applied");

        // A text stored behind the index's back: nothing accounts for it, so it is rebuilt.
        let (path, n) = paths.iter().nth(10).map(|(p, n)| (p.clone(), *n)).unwrap();
        let id = library.store.path_entry(&path).unwrap().unwrap().id;
        let lines = vec![TextLine { text: "airport moon".into(), score: 0.9, quad: [[0.0; 2]; 4] }];
        assert!(library.store.set_text(id, &StoredText::new(&record(n).hash, "ocr", lines)).unwrap());
        assert!(matches!(library.full_text().unwrap(), FullText::Memory(_)));
        drop(library);
        let library = open(&db);
        assert_as_a_rebuild(&library, "rebuilt");
        assert!(!marker.exists(), "rebuilt");
    }

    /// Something that cannot be replaced where the index belongs (a plain file): the library
    /// answers from memory, and the error says so without promising a rebuild.
    #[test]
    fn a_file_in_place_of_the_index_is_searched_in_memory() {
        let tmp = tempfile::tempdir().unwrap();
        let db = tmp.path().join("db");
        let library = open(&db);
        add(&library, Path::new("/photos/1.jpg"), 1, 1);
        drop(library);
        let folder = db.join(TEXT_INDEX_FOLDER);
        std::fs::remove_dir_all(&folder).unwrap();
        std::fs::write(&folder, b"not an index").unwrap();
        let e = TextIndex::open_or_build(&folder, Some(1), |_| Ok(false), || panic!("nothing is loaded"))
            .err()
            .unwrap()
            .to_string();
        assert!(e.contains("a file is in its place") && !e.contains("rebuilt"), "{e}");
        assert!(!folder.with_extension("building").exists());
        let library = open(&db);
        for _ in 0..2 {
            assert!(matches!(library.full_text().unwrap(), FullText::Memory(_)));
            let hits = library.full_text().unwrap().rank_text(&TextQuery::parse("dog"), &|_| None).unwrap();
            assert_eq!(hits.hits.len(), 1);
        }
        assert_eq!(std::fs::read(&folder).unwrap(), b"not an index");
    }
}
