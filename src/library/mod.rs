//! The facade the command line, the server and the tests use: one photo library, its database
//! and its model.
//!
//! Opening never loads the model; commands that do not embed (roots, stats, failures) stay
//! instant. The database remembers which model made its vectors and refuses another one, since
//! vectors of different models are not comparable.

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use serde::Serialize;

use crate::ann::{AnnIndex, FrameIndex, GRAPH_MIN_VECTORS, IndexState};
use crate::device::DeviceChoice;
use crate::error::{Error, Result};
use crate::indexer::{self, IndexOptions, IndexReport, Progress};
use crate::models::clip::ClipEmbedder;
use crate::models::clipseg::{Prompt, Segmenter};
use crate::models::precision::Precision;
use crate::models::source::{canonical_spec, local_fingerprint};
use crate::photo::{DEFAULT_MAX_PIXELS, DecodeOptions, WORKING_SIDE, decode_rgb, open_photo_within, open_rgb};
use crate::query::autotag::{self, AutotagReport, AutotagSettings};
use crate::query::tags::{self, ZeroShotClassifier};
use crate::query::{self, Kind, SearchFilter, SearchHit};
use crate::segment::{MAX_MASK_SIDE, Region, RegionOptions, Segmentation, best_region, scale_region, segment_photo};
use crate::store::{DbLocation, Failure, ImageId, ImageRecord, ReindexTarget, Store, StoreCounts, Tag, TagCount};
use crate::thumbnail;
use crate::video::FrameSize;

/// The setting that holds the model a library was set up with before it has vectors.
const CHOSEN_MODEL_SETTING: &str = "chosen_model";

mod browse;
mod captions;
mod companions;
mod display;
mod duplicates;
mod frames;
pub mod migrate;
mod query_search;
pub use browse::{FolderEntry, FolderListing, MonthCount, TimelineCursor, TimelineItem, TimelinePage};
pub use captions::{CaptionHit, CaptionOptions, CaptionReport};
pub use duplicates::{HASH_CACHE, MOVE_JOURNAL, MoveReport, MovedFile, SkippedFile, restore_moved};
pub use query_search::{QueryOptions, RankedHit, SORT_POOL, relevance_of};

/// Labels embedded (and cached) at a time.
const LABEL_CHUNK: usize = 128;

/// The `meta` key of the auto-tagging settings.
const AUTOTAG_SETTING: &str = "autotag";

/// Work a watch does in the background after its passes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Stage {
    /// Captioning new photos (`caption --library` switched it on).
    Captioning,
    /// Making the web UI's thumbnails.
    Thumbnails,
}

/// Every JSON setting a library keeps (what `migrate` carries over): a new setting belongs here.
pub(crate) const SETTINGS: &[&str] = &[AUTOTAG_SETTING, duplicates::DISMISSED_SETTING, captions::CAPTION_SETTING];

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

/// `clipdex stats`.
#[derive(Debug, Clone, Serialize)]
pub struct LibraryStats {
    /// Counts of the store.
    #[serde(flatten)]
    pub counts: StoreCounts,
    /// The model of the stored vectors.
    pub model: Option<String>,
    /// Their width.
    pub dim: Option<usize>,
    /// The arithmetic that made them (`--precision`): one entry, or several when indexing
    /// passes ran at different precisions.
    pub precisions: Vec<Precision>,
    /// Schema version of the database.
    pub schema_version: u32,
    /// The search index: its kind and size.
    pub index: IndexState,
    /// A re-indexing under way (or interrupted: `clipdex reindex` resumes it).
    pub reindex: Option<ReindexState>,
    /// The work shared between processes (PostgreSQL only): files queued, files claimed, and
    /// the processes holding claims.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub jobs: Option<crate::store::JobCounts>,
}

/// Progress of a re-indexing.
#[derive(Debug, Clone, Serialize)]
pub struct ReindexState {
    /// The model it moves to.
    pub to: String,
    /// Images embedded with it so far.
    pub done: u64,
    /// Images in the library.
    pub of: u64,
}

/// Photos a look-ahead thread decodes before the model asks for them.
const DECODE_AHEAD: usize = 2;

/// Runs `each` on every hit with what `open` made of it (its decoded photo), in order, while
/// another thread opens the next ones (up to [`DECODE_AHEAD`]); `progress` hears of each hit
/// done, and the photos/s of the whole go to the log.
fn looking_ahead<T: Send>(
    hits: &[SearchHit],
    open: impl Fn(&SearchHit) -> T + Sync,
    progress: Progress,
    mut each: impl FnMut(&SearchHit, T) -> Result<()>,
) -> Result<()> {
    let started = std::time::Instant::now();
    let total = hits.len() as u64;
    progress(0, total);
    std::thread::scope(|scope| -> Result<()> {
        let (opened, received) = std::sync::mpsc::sync_channel(DECODE_AHEAD);
        let open = &open;
        scope.spawn(move || {
            for hit in hits {
                if opened.send(open(hit)).is_err() {
                    return;
                }
            }
        });
        for (done, (hit, photo)) in hits.iter().zip(received).enumerate() {
            each(hit, photo)?;
            progress(done as u64 + 1, total);
        }
        Ok(())
    })?;
    let seconds = started.elapsed().as_secs_f64();
    tracing::info!("CLIPSeg looked at {total} photos in {seconds:.1} s ({:.2} photos/s)", total as f64 / seconds);
    Ok(())
}

/// A region of a photo that shows a text ([`Library::crops`]).
#[derive(Debug, Clone)]
pub struct Crop {
    /// The photo, as the search found it.
    pub hit: SearchHit,
    /// The region, in the photo's full upright pixels (a video's frame size).
    pub region: Region,
}

/// An indexed image segmented ([`Library::segment_indexed`]).
#[derive(Debug, Clone)]
pub struct SegmentedImage {
    /// The image's full upright width.
    pub width: u32,
    /// The image's full upright height.
    pub height: u32,
    /// Per prompt: the map at the size segmented (at most [`MAX_MASK_SIDE`] on the long
    /// side) and the regions in the full upright pixels.
    pub found: Vec<Segmentation>,
}

/// One photo library.
pub struct Library {
    config: LibraryConfig,
    store: Store,
    /// The model of the current vectors: the configured one, until `reindex` switches.
    model: RwLock<String>,
    clip: RwLock<Option<Arc<ClipEmbedder>>>,
    segmenter: std::sync::Mutex<Option<Arc<Segmenter>>>,
    /// The search index, kept while the store does not change.
    index: std::sync::Mutex<Option<CachedIndex>>,
    /// The videos' frames, kept while the store does not change: (changes, generation, index).
    frames: std::sync::Mutex<Option<(u64, u32, Arc<FrameIndex>)>>,
    /// The caption ranking, kept while no caption changes: (caption changes, index).
    caption_index: std::sync::Mutex<Option<(u64, Arc<query::captions::CaptionIndex>)>>,
    /// Captioning models by name, loaded on first use ([`Library::captioner`]).
    captioner: std::sync::Mutex<std::collections::HashMap<String, Arc<crate::models::blip::BlipCaptioner>>>,
    /// The JPEGs of the video frames served last ([`Library::video_frame`]).
    recent_frames: std::sync::Mutex<frames::RecentFrames>,
}

struct CachedIndex {
    changes: u64,
    generation: u32,
    index: Arc<AnnIndex>,
}

fn log_maintenance(outcome: std::thread::Result<Result<IndexState>>) {
    match outcome {
        Ok(Ok(s)) if s.rebuilt => tracing::info!("search graph rebuilt over {} vectors", s.vectors),
        Ok(Ok(s)) => tracing::debug!("search graph caught up with {} vectors", s.caught_up),
        Ok(Err(e)) => tracing::warn!("maintaining the search graph failed: {e}; searches scan exactly meanwhile"),
        Err(_) => tracing::warn!("maintaining the search graph panicked; searches scan exactly meanwhile"),
    }
}

/// Everything known about one image (the API's image metadata).
#[derive(Debug, Clone, Serialize)]
pub struct ImageDetails {
    /// Its id.
    pub id: ImageId,
    /// The date searches sort and filter by: EXIF date taken, else the file's modification
    /// time (seconds since the epoch).
    pub date: i64,
    /// Hash, size, dimensions, EXIF.
    #[serde(flatten)]
    pub record: ImageRecord,
    /// The files holding it. In JSON: `paths`, and `paths_bytes` when one is not UTF-8.
    #[serde(flatten, serialize_with = "crate::path_text::paths_field")]
    pub paths: Vec<PathBuf>,
    /// Its auto-tags, most probable first.
    pub tags: Vec<Tag>,
    /// Its BLIP caption (`clipdex caption --library`), when it has one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub caption: Option<String>,
    /// A Live Photo's MOV, a RAW+JPEG pair's RAW (`live_video`, `raw_path` in JSON; a Motion
    /// Photo's video is the record's `motion_video`).
    #[serde(flatten)]
    pub companions: crate::photo::companions::Companions,
    /// Why its Live Photo video cannot be played, if so: the failure recorded for the MOV
    /// (unreadable, not a movie, or gone since the pass that paired it).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub live_video_problem: Option<String>,
}

/// Longest side at which [`Library::locate`] looks for regions.
pub const LOCATE_SIDE: u32 = 1024;

/// What `reindex` did.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct ReindexReport {
    /// The model the vectors came from.
    pub from: String,
    /// The model they come from now.
    pub to: String,
    /// Images embedded with the new model in this run.
    pub embedded: u64,
    /// Images whose new vectors an interrupted run had already written.
    pub resumed: u64,
    /// Images whose files could not be read any more: they were forgotten (with a failure
    /// recorded), and come back on the next `index` if their files do.
    pub failed: u64,
    /// Images auto-tagged again with the new model.
    pub tagged: u64,
    /// With an adapter of the library's model (`finetune --train adapter`): images whose
    /// stored vector was mapped through the adapter, no photo read (an addition to the JSON).
    pub mapped: u64,
}

impl Library {
    /// Opens (creating if needed) the library database.
    ///
    /// A local model directory is one model however it is spelt (`./model`, `/abs/model/`, a
    /// symbolic link): the database records its canonical path. When the folder has moved,
    /// the library follows it if the files are the same (same `config.json`, same weights by
    /// size and their first and last MiB; see [`local_fingerprint`]) and records the new
    /// place; another model is refused, since vectors of different models do not compare.
    pub fn open(mut config: LibraryConfig) -> Result<Self> {
        config.model = canonical_spec(&config.model);
        let store = Store::open(&config.db)?;
        if let Some((stored, _)) = store.model()?
            && stored != config.model
        {
            let recorded = store.model_fingerprint()?.or_else(|| local_fingerprint(&stored));
            let same_place = canonical_spec(&stored) == config.model;
            let same_files = recorded.is_some() && recorded == local_fingerprint(&config.model);
            if !same_place && !same_files {
                return Err(Error::Invalid(format!(
                    "the database {} holds vectors of model {stored}, not {}; pass --model {stored} \
                     (or use a separate --db for the other model)",
                    config.db, config.model
                )));
            }
            tracing::info!("the library's model {stored} is now found at {}", config.model);
            store.rename_model(&config.model)?;
            if same_files {
                store.set_model_fingerprint(recorded.as_deref())?;
            }
        }
        Ok(Library::with_store(config, store))
    }

    /// Records the library's model (`config.model`) before any photo is embedded, so that
    /// later commands use it without `--model`; checks that the name can be a model (an
    /// existing folder or a hub id) without loading it. A library with vectors keeps theirs.
    pub fn remember_model(&self) -> Result<()> {
        if self.store.model()?.is_some() {
            return Ok(());
        }
        crate::models::source::ModelRepo::open(&self.config.model)?;
        let json = serde_json::to_vec(&self.config.model).map_err(|e| Error::Store(e.to_string()))?;
        self.store.set_setting_json(CHOSEN_MODEL_SETTING, &json)
    }

    /// Opens the library with the model its vectors come from, whatever `config.model` says
    /// (for `reindex`, whose `--model` names the model to move to).
    pub fn open_as_stored(mut config: LibraryConfig) -> Result<Self> {
        config.model = canonical_spec(&config.model);
        let store = Store::open(&config.db)?;
        if let Some((stored, _)) = store.model()? {
            config.model = stored;
        } else if let Some(chosen) = store.setting_json(CHOSEN_MODEL_SETTING)? {
            // Named when the library was set up (`add --model M`), before any vector.
            config.model = serde_json::from_slice(&chosen).map_err(|e| Error::Store(e.to_string()))?;
        }
        Ok(Library::with_store(config, store))
    }

    fn with_store(config: LibraryConfig, store: Store) -> Self {
        Library {
            model: RwLock::new(config.model.clone()),
            config,
            store,
            clip: RwLock::new(None),
            segmenter: Default::default(),
            index: Default::default(),
            frames: Default::default(),
            caption_index: Default::default(),
            captioner: Default::default(),
            recent_frames: Default::default(),
        }
    }

    /// Whether searches load the HNSW graph (see [`LibraryConfig::load_graph`]).
    pub fn set_load_graph(&mut self, load: bool) {
        self.config.load_graph = load;
        *self.index.get_mut().expect("index lock") = None;
    }

    /// The model of the library's vectors (and of its queries).
    pub fn model(&self) -> String {
        self.model.read().expect("model lock").clone()
    }

    /// The store.
    pub fn store(&self) -> &Store {
        &self.store
    }

    /// The CLIP model, loaded on first use.
    pub fn clip(&self) -> Result<Arc<ClipEmbedder>> {
        if let Some(c) = self.clip.read().expect("model lock").as_ref() {
            return Ok(c.clone());
        }
        let mut slot = self.clip.write().expect("model lock");
        if let Some(c) = slot.as_ref() {
            return Ok(c.clone());
        }
        let clip = Arc::new(
            ClipEmbedder::load_with_text_model(
                &self.model(),
                self.config.text_model.as_deref(),
                &self.config.device.open()?,
            )?
            .with_precision(self.config.precision),
        );
        *slot = Some(clip.clone());
        Ok(clip)
    }

    /// Uses an embedder built by the caller (random weights in a benchmark, a model loaded
    /// some other way) instead of loading the configured model on first use. Its name must
    /// be the configured model's, since the database records which model made its vectors.
    pub fn set_embedder(&self, clip: Arc<ClipEmbedder>) -> Result<()> {
        if clip.name() != self.model() {
            return Err(Error::Invalid(format!("the library uses {}, not {}", self.model(), clip.name())));
        }
        *self.clip.write().expect("model lock") = Some(clip);
        Ok(())
    }

    /// The CLIPSeg model (`LibraryConfig::seg_model`), loaded on first use.
    pub fn segmenter(&self) -> Result<Arc<Segmenter>> {
        let mut slot = self.segmenter.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(s) = slot.as_ref() {
            return Ok(s.clone());
        }
        let loaded = Arc::new(Segmenter::load(&self.config.seg_model, &self.config.device.open()?)?);
        *slot = Some(loaded.clone());
        Ok(loaded)
    }

    /// Crop search (`crop-search`, `GET /api/crops`): the regions showing `text` in the
    /// `candidates` photos nearest to `query` (its embedding) that pass `filter`, most probable
    /// first (then by the photo's score), at most `k`. A photo that cannot be read is skipped.
    /// Photos and frames are segmented at most [`MAX_MASK_SIDE`] px on the long side; boxes
    /// are in their full upright pixels (a video's frame size). The text is embedded once; the
    /// next photos are decoded while CLIPSeg looks at one, and `progress` hears of each photo
    /// looked at. [`Library::crop_image`] cuts a crop out.
    pub fn crops(
        &self,
        text: &str,
        query: &[f32],
        (candidates, k): (usize, usize),
        filter: &SearchFilter,
        options: &RegionOptions,
        progress: Progress,
    ) -> Result<Vec<Crop>> {
        let hits = self.search_vector(query, candidates, filter)?;
        let segmenter = self.segmenter()?;
        let prompt = segmenter.embed_prompts(&[Prompt::Text(text)])?;
        let mut crops = Vec::new();
        looking_ahead(
            &hits,
            |hit| self.open_hit(hit, MAX_MASK_SIDE),
            progress,
            |hit, photo| {
                match photo {
                    Ok((pixels, full)) => {
                        for found in segment_photo(&segmenter, &pixels, &prompt, options)? {
                            crops.extend(found.regions.into_iter().map(|region| Crop {
                                hit: hit.clone(),
                                region: scale_region(region, pixels.dimensions(), full),
                            }));
                        }
                    }
                    Err(e) => tracing::warn!("crop search skips {e}"),
                }
                Ok(())
            },
        )?;
        crops.sort_by(|a, b| {
            b.region.mean_probability.total_cmp(&a.region.mean_probability).then(b.hit.score.total_cmp(&a.hit.score))
        });
        crops.truncate(k);
        Ok(crops)
    }

    /// The pixels of a crop found by [`Library::crops`]: its box cut out of the photo (or the
    /// video's frame at the time that matched) as it was segmented, at most
    /// [`MAX_MASK_SIDE`] px on the long side.
    pub fn crop_image(&self, crop: &Crop) -> Result<image::RgbImage> {
        let (pixels, full) = self.open_hit(&crop.hit, MAX_MASK_SIDE)?;
        let region = scale_region(crop.region.clone(), full, pixels.dimensions());
        Ok(crate::segment::crop(&pixels, &region))
    }

    /// What a search hit shows, at most `max_side` px on the long side (a video's frame at
    /// the time that matched), with its full upright size.
    fn open_hit(&self, hit: &SearchHit, max_side: u32) -> Result<(image::RgbImage, (u32, u32))> {
        match hit.media {
            query::Media::Video { time, .. } => {
                let frame = self.frame_image(&hit.path, time, FrameSize::Fit(max_side))?;
                let full = self.store.image(hit.id)?.map_or(frame.dimensions(), |r| (r.width, r.height));
                Ok((frame, full))
            }
            query::Media::Photo => {
                let decode = DecodeOptions { max_pixels: self.config.max_pixels, min_side: None };
                let photo = open_photo_within(&hit.path, &decode, max_side)?;
                Ok((photo.image, (photo.width, photo.height)))
            }
        }
    }

    /// For each hit, the region of its photo that best shows `text` (CLIPSeg), or `None`
    /// when no region passes the threshold or the file cannot be read. Boxes are in the
    /// photo's full upright pixels. For speed the photo is looked at reduced to at most
    /// [`LOCATE_SIDE`] px on the long side and the regions found there are scaled up. The text
    /// is embedded once; the next photos are decoded while CLIPSeg looks at one, and
    /// `progress` hears of each.
    pub fn locate(
        &self,
        text: &str,
        hits: &[SearchHit],
        options: &RegionOptions,
        progress: Progress,
    ) -> Result<Vec<Option<Region>>> {
        let segmenter = self.segmenter()?;
        let prompt = segmenter.embed_prompts(&[Prompt::Text(text)])?;
        // What CLIPSeg looks at (at most LOCATE_SIDE) and the full upright size its regions
        // are scaled to: a video's frame that matched, or the photo.
        let open = |hit: &SearchHit| {
            self.open_hit(hit, LOCATE_SIDE)
                .map_err(|e| tracing::warn!("cannot locate {text:?} in {}: {e}", hit.path.display()))
                .ok()
        };
        let mut located = Vec::with_capacity(hits.len());
        looking_ahead(hits, open, progress, |_, pixels| {
            located.push(match pixels {
                Some((small, full)) => {
                    let found = segment_photo(&segmenter, &small, &prompt, options)?;
                    let best = found.into_iter().next().and_then(|s| best_region(&s.regions).cloned());
                    best.map(|r| scale_region(r, small.dimensions(), full))
                }
                None => None,
            });
            Ok(())
        })?;
        Ok(located)
    }

    /// Segments indexed image `id` for each prompt (`GET /api/images/{id}/segment`): the
    /// photo (a video's poster frame) reduced to at most [`MAX_MASK_SIDE`] px on the long
    /// side, its maps at that size, and their regions in its full upright pixels.
    pub fn segment_indexed(&self, id: ImageId, prompts: &[&str], options: &RegionOptions) -> Result<SegmentedImage> {
        let (pixels, (width, height)) = self.open_indexed_within(id, MAX_MASK_SIDE)?;
        let segmenter = self.segmenter()?;
        let prompts: Vec<Prompt> = prompts.iter().map(|p| Prompt::Text(p)).collect();
        let mut found = segment_photo(&segmenter, &pixels, &segmenter.embed_prompts(&prompts)?, options)?;
        for s in &mut found {
            for r in &mut s.regions {
                *r = scale_region(r.clone(), pixels.dimensions(), (width, height));
            }
        }
        Ok(SegmentedImage { width, height, found })
    }

    /// Adds a folder to watch; returns its canonical path.
    pub fn add_root(&self, path: &Path) -> Result<PathBuf> {
        let root = indexer::canonical_root(path)?;
        self.store.add_root(&root)?;
        Ok(root)
    }

    /// Stops watching a folder and forgets its files; returns how many were forgotten.
    pub fn remove_root(&self, path: &Path) -> Result<u64> {
        let root = indexer::root_path(path);
        if !self.store.remove_root(&root)? {
            return Err(Error::NotFound(format!("{} is not a root; see `clipdex roots`", path.display())));
        }
        let mut forgotten = 0;
        let others = self.store.roots()?;
        for (file, _) in self.store.paths_under(&root)? {
            if !others.iter().any(|r| file.starts_with(r)) {
                self.store.unlink_path(&file)?;
                forgotten += 1;
            }
        }
        for (file, _) in self.store.failures()? {
            if file.starts_with(&root) && !others.iter().any(|r| file.starts_with(r)) {
                self.store.clear_failure(&file)?;
            }
        }
        self.store.flush()?;
        Ok(forgotten)
    }

    /// The watched folders.
    pub fn roots(&self) -> Result<Vec<PathBuf>> {
        self.store.roots()
    }

    /// Brings the database in step with the folders, once, then the search graph in step
    /// with the database (large libraries).
    pub fn index(&self, progress: Progress) -> Result<IndexReport> {
        let mut report = self.index_pass(false, progress)?;
        self.maintain_index()?;
        report.captioned = self.caption_pending(progress, &|| false)?.map_or(0, |r| r.captioned);
        Ok(report)
    }

    /// [`Library::index`], and the photos of roots that look unmounted (a folder with no
    /// photo left, or on another device than before) are forgotten too: for a user who did
    /// empty the folder or move it to another drive.
    pub fn index_and_prune(&self, progress: Progress) -> Result<IndexReport> {
        let mut report = self.index_pass(true, progress)?;
        self.maintain_index()?;
        report.captioned = self.caption_pending(progress, &|| false)?.map_or(0, |r| r.captioned);
        Ok(report)
    }

    /// One indexing pass over the folders, and auto-tagging of what it added.
    /// `clipdex worker`: embeds what the scanning processes of this PostgreSQL library queue
    /// (see [`indexer::work`]); the library's model must be the one it holds.
    pub fn work(
        &self,
        worker: &indexer::WorkerOptions,
        stop: &std::sync::atomic::AtomicBool,
        on_batch: &mut dyn FnMut(&IndexReport),
    ) -> Result<IndexReport> {
        if self.store.work_queue().is_none() {
            return Err(Error::Invalid(
                "a worker helps the indexers of a PostgreSQL library; a folder library has one indexing process".into(),
            ));
        }
        let clip = self.clip()?;
        self.record_precision(clip.precision())?;
        match self.store.model()? {
            Some((_, dim)) if dim != clip.dim() => {
                Err(Error::Invalid(format!("stored vectors are {dim}-d but the model gives {}", clip.dim())))
            }
            None => Err(Error::Invalid(
                "the library has no model yet: run `clipdex index` (which scans the folders) first".into(),
            )),
            Some(_) => indexer::work(&self.store, &clip, &self.index_options(&clip), worker, stop, on_batch),
        }
    }

    fn index_pass(&self, prune: bool, progress: Progress) -> Result<IndexReport> {
        let clip = self.clip()?;
        self.record_precision(clip.precision())?;
        match self.store.model()? {
            None => {
                self.store.set_model(&self.model(), clip.dim())?;
                self.store.set_model_fingerprint(local_fingerprint(&self.model()).as_deref())?;
            }
            Some((_, dim)) if dim != clip.dim() => {
                return Err(Error::Invalid(format!("stored vectors are {dim}-d but the model gives {}", clip.dim())));
            }
            Some(_) => {}
        }
        let options = IndexOptions { prune, ..self.index_options(&clip) };
        let mut report = indexer::index_pass(&self.store, &clip, &options, progress)?;
        if report.removed > 0 || report.linked > 0 || report.embedded > 0 {
            self.store.prune_model_vectors()?;
        }
        if let Some(settings) = self.autotag_settings()? {
            report.tagged = self.autotag(Some(settings))?.tagged;
        }
        Ok(report)
    }

    /// Inserts new vectors into the search graph, or rebuilds it (see [`AnnIndex::maintain`]);
    /// nothing for libraries too small for a graph.
    pub fn maintain_index(&self) -> Result<IndexState> {
        if let Some(state) = self.store.maintain_vector_index(self.config.graph_min)? {
            return Ok(state);
        }
        let state = AnnIndex::maintain(&self.store, &self.graph_dir()?, self.config.graph_min)?;
        if state.rebuilt || state.caught_up > 0 {
            *self.index.lock().expect("index lock") = None; // searches pick the new snapshot
        }
        Ok(state)
    }

    fn index_options(&self, clip: &ClipEmbedder) -> IndexOptions {
        let side = clip.processor().output_size().map(|(h, w)| h.min(w));
        IndexOptions {
            decode: DecodeOptions { max_pixels: self.config.max_pixels, min_side: side },
            batch_size: self.config.batch_size,
            prune: false,
            // Video frames are held to the photos' pixel budget.
            video: crate::video::SampleOptions { max_pixels: self.config.max_pixels, ..self.config.video },
        }
    }

    /// Re-embeds every image with `model` and then switches the library to it. Until the
    /// switch the current vectors keep answering searches (from this process: other threads
    /// may search meanwhile); the switch is one atomic write, and an interrupted run resumes
    /// where it stopped. Photos indexed meanwhile are re-embedded before the switch.
    pub fn reindex(&self, model: &str, progress: Progress) -> Result<ReindexReport> {
        let model = canonical_spec(model);
        let model = model.as_str();
        let Some((from, _)) = self.store.model()? else {
            return Err(Error::Invalid(format!(
                "the database {} has no vectors yet: index it with `clipdex index --model {model}`",
                self.config.db
            )));
        };
        if from == model {
            if self.store.reindex_target()?.is_some() {
                self.store.cancel_reindex()?;
            }
            return Err(Error::Invalid(format!("the library already uses {model}")));
        }
        let device = self.config.device.open()?;
        let clip = Arc::new(ClipEmbedder::load(model, &device)?.with_precision(self.config.precision));
        // An adapter of this library's model maps the stored vectors: nothing is read or embedded.
        let adapter = self.adapter_of(model, &device)?;
        self.store.begin_reindex(&ReindexTarget { model: model.to_string(), dim: clip.dim() })?;
        let mut report = ReindexReport {
            from,
            to: model.to_string(),
            resumed: self.store.next_vector_count()?,
            ..Default::default()
        };
        let options = self.index_options(&clip);
        let old_graph = self.graph_dir()?;
        loop {
            if let Some(adapter) = &adapter {
                report.mapped += self.map_into_next_vectors(adapter, progress)?;
            } else {
                let (embedded, forgotten) = indexer::reembed::reembed_pass(&self.store, &clip, &options, progress)?;
                report.embedded += embedded;
                report.failed += forgotten;
            }
            if self.store.switch_to_next_vectors()? {
                break;
            }
        }
        if adapter.is_none() {
            self.store.set_setting(PRECISIONS_SETTING, &[clip.precision()])?;
        }
        self.store.set_model_fingerprint(local_fingerprint(model).as_deref())?;
        *self.model.write().expect("model lock") = model.to_string();
        *self.clip.write().expect("model lock") = Some(clip);
        if let Err(e) = std::fs::remove_dir_all(&old_graph)
            && e.kind() != std::io::ErrorKind::NotFound
        {
            tracing::warn!("cannot remove the old search graph {}: {e}", old_graph.display());
        }
        if let Some(settings) = self.autotag_settings()? {
            report.tagged = self.autotag(Some(settings))?.tagged;
        }
        self.maintain_index()?;
        Ok(report)
    }

    /// Writes, for every image without one, the next model's vector as the adapter maps the
    /// current one: `normalise(A · v)`. Returns how many.
    fn map_into_next_vectors(&self, adapter: &candle_core::Tensor, progress: Progress) -> Result<u64> {
        let ids = self.store.images_without_next_vector()?;
        let total = ids.len() as u64;
        let mut done = 0;
        for chunk in ids.chunks(256) {
            let mut rows = Vec::with_capacity(chunk.len());
            let mut kept = Vec::with_capacity(chunk.len());
            for &id in chunk {
                if let Some(v) = self.store.vector(id)? {
                    rows.push(candle_core::Tensor::from_vec(v, adapter.dim(1)?, adapter.device())?);
                    kept.push(id);
                }
            }
            if rows.is_empty() {
                continue;
            }
            let map = |rows: &[candle_core::Tensor]| -> Result<Vec<Vec<f32>>> {
                let stacked = candle_core::Tensor::stack(rows, 0)?;
                Ok(crate::models::clip::l2_normalize(&stacked.matmul(&adapter.t()?)?)?.to_vec2::<f32>()?)
            };
            for (id, v) in kept.iter().zip(map(&rows)?) {
                // A video's frames are mapped with it.
                let mut frames = self.store.frames_of(*id)?;
                if !frames.is_empty() {
                    let dim = adapter.dim(1)?;
                    let rows = frames
                        .iter()
                        .map(|f| candle_core::Tensor::from_slice(&f.vector, dim, adapter.device()))
                        .collect::<candle_core::Result<Vec<_>>>()?;
                    for (f, mapped) in frames.iter_mut().zip(map(&rows)?) {
                        f.vector = mapped;
                    }
                }
                if self.store.put_next_vectors(*id, &v, &frames)? {
                    done += 1;
                }
            }
            progress(done, total);
        }
        Ok(done)
    }

    /// Indexes now, then follows the folders (see [`indexer::watch`]) until `stop` is set;
    /// `on_pass` sees every pass's report. The search graph is maintained in the background:
    /// after a pass that left it behind, a thread inserts the new vectors or rebuilds it while
    /// passes go on (one such thread at a time); searches meanwhile use the previous snapshot
    /// plus an exact scan of what is newer.
    pub fn watch(
        &self,
        options: &indexer::watch::WatchOptions,
        stop: &std::sync::atomic::AtomicBool,
        progress: Progress,
        on_pass: &mut dyn FnMut(&IndexReport),
        on_stage: &(dyn Fn(Stage, u64, u64) + Sync),
    ) -> Result<()> {
        use std::sync::atomic::{AtomicBool, Ordering};
        let roots = self.roots()?;
        if roots.is_empty() {
            return Err(Error::Invalid("no folders to watch: add one with `clipdex add ROOT`".into()));
        }
        let pass_running = AtomicBool::new(false);
        std::thread::scope(|scope| {
            let mut maintenance: Option<std::thread::ScopedJoinHandle<'_, Result<IndexState>>> = None;
            let mut background: Option<std::thread::ScopedJoinHandle<'_, ()>> = None;
            let followed = indexer::watch::follow(&roots, options, stop, || {
                pass_running.store(true, Ordering::Relaxed);
                let report = self.index_pass(false, progress);
                pass_running.store(false, Ordering::Relaxed);
                let report = report?;
                on_pass(&report);
                if maintenance.as_ref().is_none_or(|m| m.is_finished()) {
                    if let Some(done) = maintenance.take() {
                        log_maintenance(done.join());
                    }
                    if self.index_state()?.needs_maintenance() {
                        maintenance = Some(scope.spawn(|| self.maintain_index()));
                    }
                }
                // Captions and thumbnails of what the pass added, in the background; they give
                // way to the next pass (which starts them again when it ends).
                if background.as_ref().is_none_or(|b| b.is_finished()) {
                    if let Some(done) = background.take() {
                        let _ = done.join();
                    }
                    let pause = || stop.load(Ordering::Relaxed) || pass_running.load(Ordering::Relaxed);
                    background = Some(scope.spawn(move || self.background_work(&pause, on_stage)));
                }
                Ok(())
            });
            if let Some(running) = maintenance {
                log_maintenance(running.join());
            }
            if let Some(running) = background {
                let _ = running.join();
            }
            followed
        })
    }

    /// What follows a watch's pass, at lower priority: captions (when captioning is on) and the
    /// web UI's thumbnails of every photo not yet done; `pause` ends it early. Failures are
    /// logged, not fatal: they are retried after the next pass.
    fn background_work(&self, pause: &dyn Fn() -> bool, on_stage: &(dyn Fn(Stage, u64, u64) + Sync)) {
        if let Err(e) = self.caption_pending(&|done, total| on_stage(Stage::Captioning, done, total), pause) {
            tracing::warn!("captioning new photos failed: {e}");
        }
        if pause() {
            return;
        }
        if let Err(e) = self.make_thumbnails(&|done, total| on_stage(Stage::Thumbnails, done, total), pause) {
            tracing::warn!("making thumbnails failed: {e}");
        }
    }

    /// Makes the web UI's thumbnails ([`thumbnail::UI_SIZES`]) of every photo that lacks one;
    /// `pause` ends it early. A photo that cannot be read now is skipped.
    pub fn make_thumbnails(&self, progress: Progress, pause: &dyn Fn() -> bool) -> Result<u64> {
        let records: Vec<(ImageId, ImageRecord)> = self.store.images().collect::<Result<_>>()?;
        let total = records.len() as u64;
        let mut made = 0;
        progress(0, total);
        for (done, (id, record)) in records.iter().enumerate() {
            for size in thumbnail::UI_SIZES {
                if self.thumbnail_path(&record.hash, size).is_file() {
                    continue;
                }
                if pause() {
                    return Ok(made);
                }
                match self.thumbnail(*id, size) {
                    Ok(_) => made += 1,
                    Err(e) => tracing::debug!("no thumbnail for image {id}: {e}"),
                }
            }
            progress(done as u64 + 1, total);
        }
        Ok(made)
    }

    /// The graph snapshot of the current vectors (one folder per vector generation, so a
    /// graph of another model's vectors is never loaded).
    fn graph_dir(&self) -> Result<PathBuf> {
        let dir = self.config.db.local_dir();
        Ok(match self.store.vectors_generation()? {
            0 => dir.join("hnsw"),
            g => dir.join(format!("hnsw.{g}")),
        })
    }

    /// The search index (see [`AnnIndex::open`]), kept in memory until the store changes or
    /// the graph is maintained.
    pub fn search_index(&self) -> Result<Arc<AnnIndex>> {
        let mut cached = self.index.lock().expect("index lock");
        let (changes, generation) = (self.store.changes()?, self.store.vectors_generation()?);
        if let Some(c) = cached.as_ref()
            && c.changes == changes
            && c.generation == generation
        {
            return Ok(c.index.clone());
        }
        let graph_min = if self.config.load_graph { self.config.graph_min } else { usize::MAX };
        let index = Arc::new(AnnIndex::open(&self.store, &self.graph_dir()?, graph_min)?);
        *cached = Some(CachedIndex { changes, generation, index: index.clone() });
        Ok(index)
    }

    /// Every video frame's vector (see [`FrameIndex`]), kept in memory until the store changes.
    pub fn frame_index(&self) -> Result<Arc<FrameIndex>> {
        let mut cached = self.frames.lock().expect("frames lock");
        let (changes, generation) = (self.store.changes()?, self.store.vectors_generation()?);
        if let Some((c, g, index)) = cached.as_ref()
            && *c == changes
            && *g == generation
        {
            return Ok(index.clone());
        }
        let index = Arc::new(FrameIndex::load(&self.store)?);
        *cached = Some((changes, generation, index.clone()));
        Ok(index)
    }

    /// The stored auto-tagging settings, if `autotag` has been run.
    pub fn autotag_settings(&self) -> Result<Option<AutotagSettings>> {
        self.store.setting(AUTOTAG_SETTING)
    }

    /// A classifier for `labels` in `templates`, with label embeddings from the store's cache
    /// (keyed by model and prompt set); the missing ones are embedded and cached. Returns it
    /// with the number of labels embedded now.
    pub fn classifier(&self, labels: &[String], templates: &[String]) -> Result<(ZeroShotClassifier, usize)> {
        let clip = self.clip()?;
        // Labels embedded by a text model are cached apart from the CLIP's own.
        let text_model = clip.text_model().map(|t| format!("\u{0}text={}", canonical_spec(t))).unwrap_or_default();
        let prefix = format!("{}{text_model}\u{0}{}", self.model(), tags::templates_fingerprint(templates));
        let mut cached = self.store.cached_label_embeddings(&prefix, labels)?;
        let missing: Vec<String> =
            labels.iter().zip(&cached).filter(|(_, c)| c.is_none()).map(|(l, _)| l.clone()).collect();
        if !missing.is_empty() {
            // Cached a chunk at a time: an interrupted run (a kill, a crash) keeps what it did.
            let mut fresh = Vec::with_capacity(missing.len());
            for chunk in missing.chunks(LABEL_CHUNK) {
                let embedded = tags::embed_labels(&clip, chunk, templates)?;
                self.store.cache_label_embeddings(&prefix, chunk, &embedded)?;
                fresh.extend(embedded);
            }
            let mut fresh = fresh.into_iter();
            cached.iter_mut().filter(|c| c.is_none()).for_each(|c| *c = fresh.next());
        }
        let embeddings = cached.into_iter().map(|c| c.expect("every label embedded")).collect();
        Ok((ZeroShotClassifier::from_embeddings(labels.to_vec(), embeddings, clip.scoring())?, missing.len()))
    }

    /// Tags every image not yet tagged with these settings (new settings are stored and used
    /// by later `index`/`watch` passes; `None` reuses the stored ones, or the built-in
    /// vocabulary with the photo templates the first time).
    pub fn autotag(&self, settings: Option<AutotagSettings>) -> Result<AutotagReport> {
        let settings = match settings {
            Some(s) => s,
            None => self.autotag_settings()?.unwrap_or_else(|| {
                AutotagSettings::new(
                    tags::parse_vocabulary(tags::DEFAULT_VOCABULARY),
                    tags::PHOTO_TEMPLATES.iter().map(|t| t.to_string()).collect(),
                )
            }),
        };
        settings.validate()?;
        if self.autotag_settings()?.as_ref() != Some(&settings) {
            self.store.set_setting(AUTOTAG_SETTING, &settings)?;
        }
        let (classifier, embedded) = self.classifier(&settings.labels, &settings.templates)?;
        let fingerprint = settings.fingerprint(&self.model());
        let mut report = autotag::autotag_store(&self.store, &classifier, &settings, &fingerprint)?;
        report.labels_embedded = embedded as u64;
        Ok(report)
    }

    /// Labels in use, with how many images carry each.
    pub fn tag_counts(&self) -> Result<Vec<TagCount>> {
        self.store.tag_counts()
    }

    /// Images carrying `filter.tag`, most probable first.
    pub fn search_tag(&self, k: usize, filter: &SearchFilter) -> Result<Vec<SearchHit>> {
        let mut hits = query::search_tagged(&self.store, k, &self.resolve_tag(filter)?)?;
        self.attach_companions(&mut hits)?;
        Ok(hits)
    }

    /// The filter with its tag spelt as stored: a tag typed in another case ("Dog") matches
    /// the stored label ("dog") when that label is in use and the typed one is not.
    fn resolve_tag(&self, filter: &SearchFilter) -> Result<SearchFilter> {
        let mut filter = filter.clone();
        if let Some(tag) = &filter.tag
            && !self.store.tag_in_use(tag)?
            && let Some(c) = self.store.tag_counts()?.into_iter().find(|c| c.label.to_lowercase() == tag.to_lowercase())
        {
            filter.tag = Some(c.label);
        }
        Ok(filter)
    }

    /// Text search re-ranked by a fine-tuned CLIP (`model`: a directory or hub id): the
    /// library's best `max(k, top)` re-scored by the fine-tuned model's cosine, the best `k`
    /// returned. The fine-tuned model's vectors of the candidates are cached in the database.
    pub fn search_reranked_finetuned(
        &self,
        model: &str,
        text: &str,
        (k, top): (usize, usize),
        filter: &SearchFilter,
    ) -> Result<Vec<query::rerank::FinetunedHit>> {
        let model = canonical_spec(model);
        let tuned = ClipEmbedder::load(&model, &self.config.device.open()?)?.with_precision(self.config.precision);
        self.search_reranked_with(&tuned, text, (k, top), filter)
    }

    /// [`Library::search_reranked_finetuned`] with the fine-tuned model already loaded (the
    /// server keeps its registered models).
    pub fn search_reranked_with(
        &self,
        tuned: &ClipEmbedder,
        text: &str,
        (k, top): (usize, usize),
        filter: &SearchFilter,
    ) -> Result<Vec<query::rerank::FinetunedHit>> {
        let model = tuned.name().to_string();
        let device = tuned.device().clone();
        let hits = self.search_text(text, top.max(k), filter)?;
        let mut ranked = match self.adapter_of(&model, &device)? {
            // An adapter of this library's model maps the stored vectors: nothing to embed.
            Some(adapter) => query::rerank::rerank_adapted(&self.store, tuned, &adapter, text, hits)?,
            None => {
                // Cached by what the files are, so a moved or re-downloaded model keeps its cache.
                let key = local_fingerprint(&model).map_or_else(|| format!("hub:{model}"), |f| format!("files:{f}"));
                query::rerank::rerank_finetuned(&self.store, tuned, &key, text, hits, self.config.max_pixels)?
            }
        };
        ranked.truncate(k);
        Ok(ranked)
    }

    /// The adapter matrix of `model` when it is an adapter (`finetune --train adapter`) of
    /// this library's model (same model files, or the same spelling for a hub id).
    fn adapter_of(&self, model: &str, device: &candle_core::Device) -> Result<Option<candle_core::Tensor>> {
        let dir = Path::new(model);
        let Ok(text) = std::fs::read_to_string(dir.join(crate::finetune::ADAPTER_FILE)) else { return Ok(None) };
        let Ok(info) = serde_json::from_str::<crate::finetune::AdapterInfo>(&text) else { return Ok(None) };
        let ours = self.store.model_fingerprint()?.or_else(|| local_fingerprint(&self.model()));
        let same = match (&info.base_files, &ours) {
            (Some(a), Some(b)) => a == b,
            _ => canonical_spec(&info.base) == self.model(),
        };
        if !same {
            return Ok(None);
        }
        let weights = candle_core::safetensors::load(dir.join(crate::finetune::ADAPTER_WEIGHTS), device)
            .map_err(|e| Error::model(model, format!("cannot read {}: {e}", crate::finetune::ADAPTER_WEIGHTS)))?;
        Ok(weights.get("adapter").cloned())
    }

    /// Text-to-image search.
    pub fn search_text(&self, text: &str, k: usize, filter: &SearchFilter) -> Result<Vec<SearchHit>> {
        let q = self.embed_text(text)?;
        self.search_vector(&q, k, filter)
    }

    /// The CLIP embedding of a text query.
    pub fn embed_text(&self, text: &str) -> Result<Vec<f32>> {
        Ok(self.clip()?.embed_texts(&[text])?.remove(0))
    }

    /// The images nearest to a query vector (an embedding of this library's model).
    /// Photos are ranked by their vectors, videos by their frames (each once, at its best
    /// frame); the two rankings are merged by score.
    pub fn search_vector(&self, query: &[f32], k: usize, filter: &SearchFilter) -> Result<Vec<SearchHit>> {
        let mut hits = self.search_media(query, k, filter)?;
        self.attach_companions(&mut hits)?;
        Ok(hits)
    }

    /// [`Library::search_vector`] without the companions.
    fn search_media(&self, query: &[f32], k: usize, filter: &SearchFilter) -> Result<Vec<SearchHit>> {
        let filter = self.resolve_tag(filter)?;
        let frames = self.frame_index()?;
        if frames.is_empty() {
            // No video: every stored vector is a photo's.
            return match filter.kind {
                Kind::Video => Ok(Vec::new()),
                _ => self.search_photos(query, k, &filter),
            };
        }
        let mut hits = match filter.kind {
            Kind::Video => Vec::new(),
            _ => self.search_photos(query, k, &SearchFilter { kind: Kind::Photo, ..filter.clone() })?,
        };
        hits.extend(query::search_videos(&self.store, &frames, query, k, &filter)?);
        hits.sort_by(|a, b| b.score.total_cmp(&a.score).then(a.id.cmp(&b.id)));
        hits.truncate(k);
        Ok(hits)
    }

    /// The photos (stored vectors) nearest to a query vector: PostgreSQL ranks in the
    /// database, the folder store with the library's own index.
    fn search_photos(&self, query: &[f32], k: usize, filter: &SearchFilter) -> Result<Vec<SearchHit>> {
        if let Some(hits) = self.store.nearest(query, k, filter)? {
            return Ok(hits);
        }
        query::search(&self.store, &*self.search_index()?, query, k, filter)
    }

    /// Image-to-image search; the image may be outside the library.
    /// A video must be in the library: its stored vector (the mean of its frames') is the query.
    pub fn search_image(&self, path: &Path, k: usize, filter: &SearchFilter) -> Result<Vec<SearchHit>> {
        if indexer::videos::is_video_file(path) {
            let absolute =
                std::fs::canonicalize(path).map_err(|e| Error::NotFound(format!("{}: {e}", path.display())))?;
            let Some(entry) = self.store.path_entry(&absolute)? else {
                return Err(Error::NotFound(format!(
                    "{}: a video is searched by the frames `clipdex index` stored, and this one is not in the library \
                     (add its folder and index it)",
                    path.display()
                )));
            };
            return self.search_like(entry.id, k, filter);
        }
        let clip = self.clip()?;
        let image = open_rgb(path, &DecodeOptions { max_pixels: self.config.max_pixels, min_side: None })?;
        let q = clip.embed_images(&[image])?.remove(0);
        self.search_vector(&q, k, filter)
    }

    /// Image-to-image search from encoded image bytes (an upload), decoded with the same
    /// limits as the indexer's.
    pub fn search_image_bytes(&self, bytes: &[u8], k: usize, filter: &SearchFilter) -> Result<Vec<SearchHit>> {
        let q = self.embed_image_bytes(bytes)?;
        self.search_vector(&q, k, filter)
    }

    /// The CLIP embedding of encoded image bytes; a bad image is an [`Error::Image`] named
    /// "upload".
    pub fn embed_image_bytes(&self, bytes: &[u8]) -> Result<Vec<f32>> {
        let clip = self.clip()?;
        let options = self.index_options(&clip).decode;
        let image = decode_rgb(bytes, &options).map_err(|problem| Error::Image { path: "upload".into(), problem })?;
        Ok(clip.embed_images(&[image])?.remove(0))
    }

    /// "More like this": the images nearest to an indexed one (itself first), from its
    /// stored vector, so nothing is decoded or embedded.
    /// The indexed image that `spec` names: one of its paths, or its id as search results give
    /// it (`1000003` or `#1000003`). An existing file is taken as a path first, so a photo
    /// named `1000003` is still found by its name.
    pub fn resolve_image(&self, spec: &Path) -> Result<ImageId> {
        if spec.exists() {
            let absolute =
                std::fs::canonicalize(spec).map_err(|e| Error::NotFound(format!("{}: {e}", spec.display())))?;
            return match self.store.path_entry(&absolute)? {
                Some(entry) => Ok(entry.id),
                None => Err(Error::NotFound(format!(
                    "{} is not in the library (add its folder and index it, or give an id from search results)",
                    spec.display()
                ))),
            };
        }
        match image_id_of(spec) {
            Some(id) if self.store.image(id)?.is_some() => Ok(id),
            Some(id) => Err(Error::NotFound(format!("no image with id {id} in the library"))),
            None => Err(Error::NotFound(format!("{}: no such file, and not an image id", spec.display()))),
        }
    }

    pub fn search_like(&self, id: ImageId, k: usize, filter: &SearchFilter) -> Result<Vec<SearchHit>> {
        let q = self.stored_vector(id)?;
        self.search_vector(&q, k, filter)
    }

    /// The stored vector of an indexed image.
    pub fn stored_vector(&self, id: ImageId) -> Result<Vec<f32>> {
        self.store.vector(id)?.ok_or_else(|| Error::NotFound(format!("no image with id {id}")))
    }

    /// Everything known about one image.
    pub fn image_details(&self, id: ImageId) -> Result<ImageDetails> {
        let record = self.store.image(id)?.ok_or_else(|| Error::NotFound(format!("no image with id {id}")))?;
        let paths = self.store.paths_of(id)?;
        let companions = self.companion_files(&paths)?;
        let live_video_problem = self.live_video_problem(&paths, &companions)?;
        Ok(ImageDetails {
            id,
            date: record.date(),
            record,
            companions,
            live_video_problem,
            paths,
            tags: self.store.tags_of(id)?.map(|(_, tags)| tags).unwrap_or_default(),
            caption: self.store.caption_of(id)?.map(|c| c.text),
        })
    }

    /// A file of image `id` as it was indexed: the only files clipdex hands out. The path
    /// lies under one of the library's folders, and the file there (symbolic links followed,
    /// so a linked album outside the folder is served like the rest: it was indexed from the
    /// folder) still has the size and modification time it was indexed with; a file swapped
    /// or edited since is not served until the next pass has looked at it.
    /// [`Error::NotFound`] when the image or all its files are gone, [`Error::Forbidden`]
    /// when its files changed since they were indexed.
    pub fn image_file(&self, id: ImageId) -> Result<PathBuf> {
        let paths = self.store.paths_of(id)?;
        if paths.is_empty() {
            return Err(Error::NotFound(format!("no image with id {id}")));
        }
        let roots = self.roots()?;
        let mut changed = false;
        for path in &paths {
            if !roots.iter().any(|r| path.starts_with(r)) {
                continue;
            }
            let (Some(entry), Ok(meta)) = (self.store.path_entry(path)?, std::fs::metadata(path)) else { continue };
            if !meta.is_file() {
                continue;
            }
            if meta.len() == entry.size && indexer::mtime_ns(&meta) == entry.mtime_ns {
                return Ok(path.clone());
            }
            changed = true;
        }
        Err(if changed {
            Error::Forbidden(format!(
                "the files of image {id} changed since they were indexed (the next index pass looks at them again)"
            ))
        } else {
            Error::NotFound(format!("the files of image {id} are gone (the next index pass forgets it)"))
        })
    }

    /// The upright pixels of indexed image `id`, from the file [`Library::image_file`] hands
    /// out, at most [`WORKING_SIDE`] px on the long side (what models look at: a larger photo
    /// is reduced while it is decoded); with `min_side`, a JPEG may be decoded at a reduced
    /// DCT scale keeping that many pixels on its short side.
    /// A video's pixels are its poster frame's (the frame nearest the mean of its frames).
    pub fn open_indexed(&self, id: ImageId, min_side: Option<u32>) -> Result<image::RgbImage> {
        let path = self.image_file(id)?;
        let record = self.store.image(id)?.ok_or_else(|| Error::NotFound(format!("no image with id {id}")))?;
        self.open_media(&record, &path, &DecodeOptions { max_pixels: self.config.max_pixels, min_side })
    }

    /// The upright pixels of indexed image `id` at most `max_side` px on the long side (a
    /// video's poster frame), with the image's full upright size.
    pub fn open_indexed_within(&self, id: ImageId, max_side: u32) -> Result<(image::RgbImage, (u32, u32))> {
        let path = self.image_file(id)?;
        let record = self.store.image(id)?.ok_or_else(|| Error::NotFound(format!("no image with id {id}")))?;
        match &record.video {
            Some(video) => {
                Ok((self.frame_image(&path, video.poster, FrameSize::Fit(max_side))?, (record.width, record.height)))
            }
            None => {
                let decode = DecodeOptions { max_pixels: self.config.max_pixels, min_side: None };
                let photo = open_photo_within(&path, &decode, max_side)?;
                Ok((photo.image, (photo.width, photo.height)))
            }
        }
    }

    /// The pixels of a stored image's file, at most [`WORKING_SIDE`] px on the long side: a
    /// photo decoded, a video's poster frame.
    pub(crate) fn open_media(
        &self,
        record: &ImageRecord,
        path: &Path,
        decode: &DecodeOptions,
    ) -> Result<image::RgbImage> {
        match &record.video {
            Some(video) => {
                let size = decode.min_side.map_or(FrameSize::Fit(WORKING_SIDE), FrameSize::Cover);
                self.frame_image(path, video.poster, size)
            }
            None => Ok(open_photo_within(path, decode, WORKING_SIDE)?.image),
        }
    }

    /// Where the library's database is.
    pub fn location(&self) -> &DbLocation {
        &self.config.db
    }

    /// The arithmetic of the library's models' linear layers (`--precision`).
    pub fn precision(&self) -> Precision {
        self.config.precision
    }

    /// The device the library's models run on.
    pub fn device(&self) -> Result<candle_core::Device> {
        self.config.device.open()
    }

    /// The decoding limit for photos (`--max-pixels`).
    pub fn max_pixels(&self) -> u64 {
        self.config.max_pixels
    }

    /// A JPEG thumbnail of image `id` whose longer side is `size` pixels (never enlarged),
    /// upright; made once and kept in the database folder (`thumbs/SIZE/HASH.jpg`).
    pub fn thumbnail(&self, id: ImageId, size: u32) -> Result<PathBuf> {
        if !(thumbnail::MIN_SIZE..=thumbnail::MAX_SIZE).contains(&size) {
            return Err(Error::Invalid(format!(
                "thumbnail size must be between {} and {} pixels",
                thumbnail::MIN_SIZE,
                thumbnail::MAX_SIZE
            )));
        }
        let record = self.store.image(id)?.ok_or_else(|| Error::NotFound(format!("no image with id {id}")))?;
        let cached = self.thumbnail_path(&record.hash, size);
        if cached.is_file() {
            return Ok(cached);
        }
        let source = self.image_file(id)?;
        let jpeg = match &record.video {
            Some(video) => self.video_frame_jpeg(&source, video.poster, size)?,
            None => {
                let bytes = crate::photo::read_image_file(&source, self.config.max_pixels)
                    .map_err(|p| Error::image(&source, p))?;
                thumbnail::render(&bytes, size, self.config.max_pixels).map_err(|p| Error::image(&source, p))?
            }
        };
        thumbnail::store(&cached, &jpeg)?;
        Ok(cached)
    }

    /// A JPEG of the frame a video shows at `time` seconds, its longer side `size` (not cached:
    /// any moment may be asked for). [`Error::Invalid`] for a photo.
    pub fn video_frame(&self, id: ImageId, time: f64, size: u32) -> Result<Vec<u8>> {
        if !(thumbnail::MIN_SIZE..=thumbnail::MAX_SIZE).contains(&size) || !time.is_finite() {
            return Err(Error::Invalid(format!(
                "a frame's size must be between {} and {} pixels, at a time in seconds",
                thumbnail::MIN_SIZE,
                thumbnail::MAX_SIZE
            )));
        }
        let record = self.store.image(id)?.ok_or_else(|| Error::NotFound(format!("no image with id {id}")))?;
        if !record.is_video() {
            return Err(Error::Invalid(format!("image {id} is a photo: a time is for videos")));
        }
        // The frames served last are kept: a player scrubbing, or a page of moments, asks for
        // the same ones again, and each costs FFmpeg a decode at the video's full size.
        let key = frames::frame_key(id, time, size);
        let kept = self.recent_frames.lock().unwrap_or_else(|e| e.into_inner()).get(key);
        if let Some(jpeg) = kept {
            return Ok(jpeg.to_vec());
        }
        let jpeg = self.video_frame_jpeg(&self.image_file(id)?, time, size)?;
        self.recent_frames.lock().unwrap_or_else(|e| e.into_inner()).put(key, Arc::new(jpeg.clone()));
        Ok(jpeg)
    }

    fn video_frame_jpeg(&self, source: &Path, time: f64, size: u32) -> Result<Vec<u8>> {
        let frame = self.frame_image(source, time, FrameSize::Fit(size))?;
        thumbnail::encode(frame, size).map_err(|p| Error::image(source, p))
    }

    /// The upright frame a video file shows at `time`, scaled down by FFmpeg as `size` asks
    /// and within the pixel budget (`--max-pixels`).
    fn frame_image(&self, source: &Path, time: f64, size: FrameSize) -> Result<image::RgbImage> {
        let tools = crate::video::Tools::from_env();
        let limit = indexer::videos::PROBE_LIMIT;
        let problem = |p: crate::video::VideoProblem| Error::Invalid(format!("{}: {p}", source.display()));
        let info = crate::video::probe(&tools, source, limit).map_err(problem)?;
        crate::video::frame_at(&tools, source, &info, time, size, self.config.max_pixels, limit).map_err(problem)
    }

    /// Where the thumbnail of the content `hash` at `size` is cached.
    fn thumbnail_path(&self, hash: &str, size: u32) -> PathBuf {
        self.config.db.local_dir().join("thumbs").join(size.to_string()).join(format!("{hash}.jpg"))
    }

    /// The search index's state from the store and the snapshot's metadata (no vector loaded).
    fn index_state(&self) -> Result<IndexState> {
        if let Some(state) = self.store.vector_index_state(self.config.graph_min)? {
            return Ok(state);
        }
        AnnIndex::describe(&self.store, &self.graph_dir()?, self.config.graph_min)
    }

    /// Records that vectors are (about to be) embedded at `precision`, before any is stored.
    fn record_precision(&self, precision: Precision) -> Result<()> {
        let mut made = self.precisions()?;
        if !made.contains(&precision) {
            made.push(precision);
            self.store.set_setting(PRECISIONS_SETTING, &made)?;
        }
        Ok(())
    }

    /// The precisions that made the stored vectors (f32 for a library from before they were
    /// recorded).
    pub fn precisions(&self) -> Result<Vec<Precision>> {
        Ok(self.store.setting(PRECISIONS_SETTING)?.unwrap_or_else(|| vec![Precision::F32]))
    }

    /// Counts, model and index state.
    pub fn stats(&self) -> Result<LibraryStats> {
        let counts = self.store.counts()?;
        let model = self.store.model()?;
        Ok(LibraryStats {
            index: self.index_state()?,
            reindex: match self.store.reindex_target()? {
                Some(t) => Some(ReindexState { to: t.model, done: self.store.next_vector_count()?, of: counts.images }),
                None => None,
            },
            counts,
            model: model.as_ref().map(|m| m.0.clone()),
            dim: model.map(|m| m.1),
            precisions: self.precisions()?,
            schema_version: self.store.schema_version()?,
            jobs: self.store.work_queue().map(|q| q.job_counts()).transpose()?,
        })
    }

    /// Files that could not be indexed.
    pub fn failures(&self) -> Result<Vec<(PathBuf, Failure)>> {
        self.store.failures()
    }
}

/// An image id as results print it: digits, optionally after `#`.
fn image_id_of(spec: &Path) -> Option<ImageId> {
    let text = spec.to_str()?;
    text.strip_prefix('#').unwrap_or(text).parse().ok()
}
