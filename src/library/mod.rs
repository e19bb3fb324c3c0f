//! The facade the command line, the server and the tests use: one photo library, its database
//! and its model.
//!
//! Opening never loads the model; commands that do not embed (roots, stats, failures) stay
//! instant. The database remembers which model made its vectors and refuses another one, since
//! vectors of different models are not comparable.
//!
//! The facade is split by concern, one `impl Library` per file: opening and the models
//! (`open.rs`), indexing and maintenance (`indexing.rs`, `reindex.rs`), searching
//! (`search.rs`, `regions.rs` for CLIPSeg's crops), one image's files, pixels and thumbnails
//! (`images.rs`), tags (`tags.rs`) and tags given by hand (`user_tags.rs`), captions
//! (`captions.rs`), the text in photos (`photo_text.rs`), duplicates (`duplicates.rs`, and
//! `duplicate_batches.rs` for the web UI's moves), paused passes and retried failures
//! (`jobs.rs`), faces and people (`people.rs`), and `migrate` into PostgreSQL.

use std::sync::{Arc, RwLock};

use crate::ann::{AnnIndex, FrameIndex, GRAPH_MIN_VECTORS};
use crate::device::DeviceChoice;
use crate::models::clip::ClipEmbedder;
use crate::models::clipseg::Segmenter;
use crate::models::precision::Precision;
use crate::photo::DEFAULT_MAX_PIXELS;
use crate::store::{DbLocation, Store};

mod browse;
mod captions;
mod companions;
mod display;
mod duplicate_batches;
mod duplicates;
mod face_pass;
mod face_thumbs;
mod facets;
mod frames;
mod images;
mod indexing;
mod jobs;
pub mod migrate;
mod open;
mod people;
mod photo_text;
mod places;
mod query_search;
mod regions;
mod reindex;
mod search;
mod settings;
mod tags;
mod text_filter;
mod text_index;
mod user_tags;
pub use browse::{FolderEntry, FolderListing, MonthCount, TimelineCursor, TimelineItem, TimelinePage};
pub use captions::{CaptionHit, CaptionOptions, CaptionReport};
pub use duplicate_batches::{GroupChoice, ResolvedBatch};
pub use duplicates::{HASH_CACHE, MOVE_JOURNAL, MoveReport, MovedFile, SkippedFile, restore_moved};
pub use face_thumbs::{FACE_THUMB_MAX_SIZE, FACE_THUMB_SIZE};
pub use facets::{FACET_POOL, Facet, FacetValue, Facets, MAX_FACET_VALUES};
pub use images::ImageDetails;
pub use indexing::{LibraryStats, ReindexState, Stage};
pub use jobs::PAUSABLE_PASSES;
pub use people::{FACE_SIDE, FaceDetails, FaceFinder, FaceReport, FoundFace, PersonSummary};
pub use photo_text::{LoadedOcrModel, OcrReport, OcrSettings, TextHit, ocr_model_id};
pub use places::{PlaceCount, PlaceCounts};
pub use query_search::{QueryOptions, RankedHit, SORT_POOL, relevance_of};
pub use regions::{Crop, LOCATE_SIDE, SegmentedImage};
pub use reindex::ReindexReport;
pub use settings::{DEFAULT_DUPLICATES_FOLDER, SETTING_NAMES, SETTINGS_KEY, SettingEntry, Settings, default_of};
pub use user_tags::MAX_TAG_CHARS;

/// How to open a library.
#[derive(Debug, Clone)]
pub struct LibraryConfig {
    /// The database: a folder, or a PostgreSQL URL.
    pub db: DbLocation,
    /// The CLIP model (hub id or directory).
    pub model: String,
    /// A multilingual text tower that embeds queries and labels in place of the CLIP's own
    /// (`--text-model`); the library does not record it.
    pub text_model: Option<String>,
    /// Where the model runs.
    pub device: DeviceChoice,
    /// The arithmetic of the CLIP's linear layers (`--precision`).
    pub precision: Precision,
    /// Decoding limit for photos.
    pub max_pixels: u64,
    /// Images embedded per model call while indexing.
    pub batch_size: usize,
    /// From this many photos on, searches use the HNSW graph.
    pub graph_min: usize,
    /// The CLIPSeg model for `--crops` (hub id or directory; loaded on first use).
    pub seg_model: String,
    /// Whether searches load the HNSW graph. Right for a long-lived process (the index is
    /// kept in memory between searches); a one-shot search is faster without, since opening
    /// the graph of 100,000 photos takes 0.13 s and scanning them exactly 9 ms.
    pub load_graph: bool,
    /// How videos are sampled while indexing.
    pub video: crate::video::SampleOptions,
}

impl LibraryConfig {
    /// A configuration with defaults for everything but the database and the model.
    pub fn new(db: impl Into<DbLocation>, model: impl Into<String>) -> Self {
        LibraryConfig {
            db: db.into(),
            model: model.into(),
            text_model: None,
            device: DeviceChoice::Cpu,
            precision: Precision::F32,
            max_pixels: DEFAULT_MAX_PIXELS,
            batch_size: crate::models::clip::MAX_BATCH,
            graph_min: GRAPH_MIN_VECTORS,
            seg_model: crate::models::clipseg::DEFAULT_SEG_MODEL.to_string(),
            load_graph: true,
            video: crate::video::SampleOptions::default(),
        }
    }
}

/// The setting that records the precisions the stored vectors were made at.
const PRECISIONS_SETTING: &str = "vector_precisions";

/// Every JSON setting a library keeps (what `migrate` carries over): a new setting belongs here.
pub(crate) const SETTINGS: &[&str] = &[
    tags::AUTOTAG_SETTING,
    duplicates::DISMISSED_SETTING,
    captions::CAPTION_SETTING,
    // Folded into the settings when the copy is first opened.
    photo_text::LEGACY_OCR_SETTING,
    people::PEOPLE_SETTING,
    settings::SETTINGS_KEY,
];

/// One photo library.
pub struct Library {
    config: LibraryConfig,
    store: Store,
    /// The model of the current vectors: the configured one, until `reindex` switches.
    model: RwLock<String>,
    /// The settings a server may change while it runs (`config set`, `PUT /api/settings`).
    live: RwLock<LiveSettings>,
    clip: RwLock<Option<Arc<ClipEmbedder>>>,
    segmenter: std::sync::Mutex<Option<Arc<Segmenter>>>,
    /// The search index, kept while the store does not change.
    index: std::sync::Mutex<Option<CachedIndex>>,
    /// The videos' frames, kept while the store does not change: (changes, generation, index).
    frames: std::sync::Mutex<Option<(u64, u32, Arc<FrameIndex>)>>,
    /// The full-text index of captions and photo text, kept while neither changes:
    /// ((caption changes, text changes), index).
    full_text: std::sync::Mutex<Option<photo_text::CachedFullText>>,
    /// A folder library's full-text index on disk ([`text_index`]).
    text_index: text_index::DiskTextIndex,
    /// The OCR model last loaded, by folder ([`Library::ocr_model`]).
    ocr_model: std::sync::Mutex<Option<(String, Arc<photo_text::LoadedOcrModel>)>>,
    /// Captioning models by name, loaded on first use ([`Library::captioner`]).
    captioner: std::sync::Mutex<std::collections::HashMap<String, Arc<crate::models::blip::BlipCaptioner>>>,
    /// The JPEGs of the video frames served last ([`Library::video_frame`]).
    recent_frames: std::sync::Mutex<frames::RecentFrames>,
    /// The face model of the face pass, once loaded or set ([`Library::face_finder`]).
    face_finder: RwLock<face_pass::FaceFinderSlot>,
}

/// The models' settings in use: the recorded ones, else the configured ones.
#[derive(Debug, Clone, PartialEq)]
struct LiveSettings {
    text_model: Option<String>,
    precision: Precision,
    seg_model: String,
}

struct CachedIndex {
    changes: u64,
    generation: u32,
    index: Arc<AnnIndex>,
}
