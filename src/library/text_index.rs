//! Which full-text index answers a library's caption and text searches, and how a stored
//! caption or text reaches it.
//!
//! A folder library keeps its index on disk ([`crate::query::text_index`], the `text-index`
//! folder beside `sled`), opened on first use and rebuilt from the stored records when it is
//! missing, stale or damaged. Each write marks the index dirty, stores the record in sled,
//! flushes sled, then commits the index and clears the mark: a process killed anywhere in
//! between leaves either an index that holds the write or one that the next open rebuilds.
//! PostgreSQL libraries (and a folder library whose index cannot be written, e.g. a read-only
//! disk) rank with the in-memory index ([`crate::query::fulltext::FullTextIndex`]) as before.

use std::sync::Arc;

use super::Library;
use crate::error::Result;
use crate::query::fulltext::{Field, FullTextIndex, TextMatches, TextQuery};
use crate::query::text_index::TextIndex;
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
        let index = match TextIndex::open_or_build(&dir.join(TEXT_INDEX_FOLDER), stamp, load) {
            Ok(index) => Some(Arc::new(index)),
            Err(e) => {
                tracing::warn!("{e}; searching captions and photo text in memory");
                None
            }
        };
        *state = Some(index.clone());
        index
    }

    /// Stops using the index on disk in this process after `error` (logged); the next open
    /// rebuilds it (its dirty mark stays).
    fn give_up_disk_index(&self, index: &TextIndex, error: &crate::error::Error) {
        tracing::warn!("{error}; searching captions and photo text in memory until the library is opened again");
        let _ = std::fs::remove_file(index.dir().join(crate::query::text_index::VERSION_FILE));
        *self.text_index.lock().unwrap_or_else(|p| p.into_inner()) = Some(None);
    }

    /// The index that answers caption and text searches.
    pub(super) fn full_text(&self) -> Result<FullText> {
        match self.disk_text_index() {
            Some(index) => Ok(FullText::Disk(index)),
            None => Ok(FullText::Memory(self.full_text_index()?)),
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
            let before = self.store.full_text_stamp()?;
            let stored = store()?;
            if stored {
                // sled first: the index never holds what sled could still lose.
                self.store.flush()?;
            }
            let after = self.store.full_text_stamp()?;
            // The record is stored: an index that fails now, or that turns out not to hold
            // every write before this one, is rebuilt on the next open (its dirty mark stays),
            // and this process searches in memory meanwhile.
            let written = if index.stamp() != before {
                Err(crate::error::Error::Store(format!(
                    "the text index {} does not hold every caption and text stored",
                    index.dir().display()
                )))
            } else if stored {
                write.set(field, id, value)
            } else {
                Ok(())
            };
            if let Err(e) = written.and_then(|()| write.commit(after)) {
                self.give_up_disk_index(&index, &e);
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
