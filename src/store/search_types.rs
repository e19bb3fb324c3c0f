//! The types that a search hands across layers: its filter and its results ([`SearchFilter`],
//! [`SearchHit`], from [`crate::query`]) and the state of the vector index ([`IndexState`], from
//! [`crate::ann`]). They live here, in the lowest layer that needs them, because a backend can
//! answer a search itself (PostgreSQL with pgvector) and report its own index.

use std::path::PathBuf;

use serde::Serialize;

use crate::error::Result;
use crate::photo::companions::Companions;
use crate::store::{ImageId, Store};

/// Restrictions on results.
#[derive(Debug, Clone, Default)]
pub struct SearchFilter {
    /// Only images with a file at or under this folder.
    pub under: Option<PathBuf>,
    /// Only images dated at or after this (seconds since the epoch; EXIF date, else mtime).
    pub after: Option<i64>,
    /// Only images dated before this.
    pub before: Option<i64>,
    /// Only images auto-tagged with this label.
    pub tag: Option<String>,
    /// Only photos, only videos, or both.
    pub kind: Kind,
    /// More tags and folders, camera, extension, orientation and size (the query language's
    /// filters).
    pub attributes: crate::store::attributes::AttributeFilter,
}

/// What a search returns (`--kind`, API `kind=`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    /// Photos and videos.
    #[default]
    All,
    Photo,
    Video,
}

impl std::str::FromStr for Kind {
    type Err = crate::Error;

    fn from_str(s: &str) -> Result<Self> {
        match s {
            "all" => Ok(Kind::All),
            "photo" => Ok(Kind::Photo),
            "video" => Ok(Kind::Video),
            _ => Err(crate::Error::Invalid(format!("kind {s:?}: say photo, video or all"))),
        }
    }
}

impl SearchFilter {
    /// Whether the filter lets every image through.
    pub fn is_empty(&self) -> bool {
        self.under.is_none()
            && self.after.is_none()
            && self.before.is_none()
            && self.tag.is_none()
            && self.kind == Kind::All
            && self.attributes.is_empty()
    }
}

/// What a result is: a photo, or a video at a moment.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum Media {
    Photo,
    Video {
        /// Seconds from the start of the frame the score is of (for a result that is not
        /// ranked by frames, as a tag's, the video's poster frame).
        time: f64,
        /// The video's length, seconds.
        duration: f64,
    },
}

impl Media {
    /// A stored image's kind, a video at its poster frame.
    pub fn of(record: &crate::store::ImageRecord) -> Self {
        match &record.video {
            Some(v) => Media::Video { time: v.poster, duration: v.duration },
            None => Media::Photo,
        }
    }

    /// The kind of stored image `id`, a video at its poster frame (a photo when it is gone).
    pub fn of_image(store: &Store, id: ImageId) -> Result<Self> {
        Ok(store.image(id)?.as_ref().map(Media::of).unwrap_or(Media::Photo))
    }
}

/// One result.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SearchHit {
    /// The image's id.
    pub id: ImageId,
    /// A file holding it (under the filter's folder, when there is one). In JSON: `path`, and
    /// `path_bytes` when it is not UTF-8 (see [`crate::path_text`]).
    #[serde(flatten, serialize_with = "crate::path_text::path_field")]
    pub path: PathBuf,
    /// Cosine similarity to the query.
    pub score: f32,
    /// Photo or video; in JSON `"kind"` (`"photo"`, `"video"`), and for a video `"time"` and
    /// `"duration"` (seconds).
    #[serde(flatten)]
    pub media: Media,
    /// A photo's companion files and embedded video: in JSON `live_video`, `raw_path` and
    /// `motion_video`, each only when present (see [`crate::photo::companions`]).
    #[serde(flatten)]
    pub companions: Companions,
}

impl SearchHit {
    /// A photo's result.
    pub fn photo(id: ImageId, path: PathBuf, score: f32) -> Self {
        SearchHit { id, path, score, media: Media::Photo, companions: Companions::default() }
    }
}

/// What the search index is and holds.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct IndexState {
    /// `exact` or `hnsw`.
    pub kind: &'static str,
    /// Live vectors.
    pub vectors: u64,
    /// Deleted images still in the graph.
    pub tombstones: u64,
    /// Vectors newer than the graph snapshot: searches scan them exactly until the next
    /// maintenance inserts them.
    pub pending: u64,
    /// Whether the graph needs a rebuild (none yet, unreadable, or too many tombstones);
    /// searches use what there is (or the exact scan) meanwhile.
    pub needs_rebuild: bool,
    /// Vectors inserted into the graph by this maintenance.
    pub caught_up: u64,
    /// Whether this maintenance rebuilt the graph from the store.
    pub rebuilt: bool,
    /// The beam width the graph was measured to need for recall@10 ≥ 0.95 on the library's
    /// own vectors (0: none up to 512 did, so searches scan exactly).
    pub search_ef: u64,
    /// Whether the snapshot lacks the flat file that searches open (written before there was
    /// one); maintenance adds it.
    #[serde(skip)]
    pub needs_flat_file: bool,
}

impl IndexState {
    /// Whether [`crate::ann::AnnIndex::maintain`] has anything to do.
    pub fn needs_maintenance(&self) -> bool {
        self.kind == "hnsw" && (self.needs_rebuild || self.pending > 0 || self.needs_flat_file)
    }
}
