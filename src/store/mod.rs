//! The database: every image record, path, vector, failure, tag and caption of a library.
//!
//! The store is the source of truth; the search index is rebuilt from it. One interface,
//! [`Backend`], with one implementation per engine: the embedded sled store of a folder
//! ([`sled`]), for a library on one machine. [`Store`] is what the rest of clipdex holds: it
//! opens the backend a [`DbLocation`] names and derefs to it, so callers never ask which one
//! they have. A PostgreSQL database with pgvector ([`postgres`]) holds a library that several
//! machines share. Identical files share one id and one vector, and the last path to go takes the
//! image and its vector with it, in every backend.

pub mod attributes;
mod backend;
pub mod faces;
mod live_pairs;
mod location;
mod photo_text;
pub mod postgres;
mod records;
pub mod search_types;
pub mod sled;

pub use backend::{
    Backend, CaptionStore, FIRST_DATE, Job, JobCounts, LAST_DATE, MAX_CACHED_LABELS, ModelVectorStore, Records,
    ReindexStore, RootLock, TagStore, UNDATED_MONTH, WorkQueue, month_of, newest_records,
};
pub use faces::{FaceId, FaceScan, FaceStore, NewFace, PeopleChange, Person, PersonId, StoredFace};
pub use live_pairs::{LivePair, LivePairs};
pub use location::DbLocation;
pub use photo_text::{StoredText, TextLine, TextStore};
pub use records::{
    Failure, FrameVector, ImageId, ImageRecord, PathEntry, ReindexTarget, SETTINGS_SEPARATOR, StoreCounts,
    StoredCaption, Tag, TagCount, VideoMeta, settings_as_stored,
};
pub use sled::SCHEMA_VERSION;

use crate::error::{Error, Result};

/// An opened library database, whichever backend holds it.
pub struct Store {
    location: DbLocation,
    backend: Box<dyn Backend>,
}

impl Store {
    /// Opens (creating if needed) the database at `location` and brings its schema up to date.
    pub fn open(location: impl Into<DbLocation>) -> Result<Self> {
        let location = location.into();
        let backend: Box<dyn Backend> = match &location {
            DbLocation::Dir(dir) => Box::new(sled::SledStore::open(dir)?),
            DbLocation::Postgres(url) => Box::new(postgres::PgStore::open(url)?),
        };
        Ok(Store { location, backend })
    }

    /// Where the database is.
    pub fn location(&self) -> &DbLocation {
        &self.location
    }

    /// A JSON setting (e.g. the auto-tagging settings).
    pub fn setting<T: serde::de::DeserializeOwned>(&self, key: &str) -> Result<Option<T>> {
        match self.backend.setting_json(key)? {
            Some(bytes) => serde_json::from_slice(&bytes)
                .map(Some)
                .map_err(|e| Error::Store(format!("database {}: corrupt {key} setting: {e}", self.location))),
            None => Ok(None),
        }
    }

    /// Stores a JSON setting.
    pub fn set_setting<T: serde::Serialize>(&self, key: &str, value: &T) -> Result<()> {
        self.backend.set_setting_json(key, &serde_json::to_vec(value).expect("settings serialise"))
    }
}

impl std::ops::Deref for Store {
    type Target = dyn Backend;

    fn deref(&self) -> &Self::Target {
        &*self.backend
    }
}
