//! The facade the command line, the server and the tests use: one photo library, its database
//! and its model.
//!
//! Opening never loads the model; commands that do not embed (roots, stats, failures) stay
//! instant. The database remembers which model made its vectors and refuses another one, since
//! vectors of different models are not comparable.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use serde::Serialize;

use crate::ann::{AnnIndex, GRAPH_MIN_VECTORS, IndexState};
use crate::device::DeviceChoice;
use crate::error::{Error, Result};
use crate::indexer::{self, IndexOptions, IndexReport, Progress};
use crate::models::clip::ClipEmbedder;
use crate::photo::{DEFAULT_MAX_PIXELS, DecodeOptions, open_rgb};
use crate::query::autotag::{self, AutotagReport, AutotagSettings};
use crate::query::tags::{self, ZeroShotClassifier};
use crate::query::{self, SearchFilter, SearchHit};
use crate::store::{Failure, Store, StoreCounts, TagCount};

/// The `meta` key of the auto-tagging settings.
const AUTOTAG_SETTING: &str = "autotag";

/// How to open a library.
#[derive(Debug, Clone)]
pub struct LibraryConfig {
    /// The database folder.
    pub db: PathBuf,
    /// The CLIP model (hub id or directory).
    pub model: String,
    /// Where the model runs.
    pub device: DeviceChoice,
    /// Decoding limit for photos.
    pub max_pixels: u64,
    /// Images embedded per model call while indexing.
    pub batch_size: usize,
    /// From this many photos on, searches use the HNSW graph.
    pub graph_min: usize,
}

impl LibraryConfig {
    /// A configuration with defaults for everything but the database and the model.
    pub fn new(db: impl Into<PathBuf>, model: impl Into<String>) -> Self {
        LibraryConfig {
            db: db.into(),
            model: model.into(),
            device: DeviceChoice::Cpu,
            max_pixels: DEFAULT_MAX_PIXELS,
            batch_size: crate::models::clip::MAX_BATCH,
            graph_min: GRAPH_MIN_VECTORS,
        }
    }
}

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
    /// Schema version of the database.
    pub schema_version: u32,
    /// The search index: its kind and size.
    pub index: IndexState,
}

/// One photo library.
pub struct Library {
    config: LibraryConfig,
    store: Store,
    clip: OnceLock<ClipEmbedder>,
}

impl Library {
    /// Opens (creating if needed) the library database.
    pub fn open(config: LibraryConfig) -> Result<Self> {
        let store = Store::open(&config.db)?;
        if let Some((stored, _)) = store.model()?
            && stored != config.model
        {
            return Err(Error::Invalid(format!(
                "the database {} holds vectors of model {stored}, not {}; pass --model {stored} \
                 (or use a separate --db for the other model)",
                config.db.display(),
                config.model
            )));
        }
        Ok(Library { config, store, clip: OnceLock::new() })
    }

    /// The store.
    pub fn store(&self) -> &Store {
        &self.store
    }

    /// The CLIP model, loaded on first use.
    pub fn clip(&self) -> Result<&ClipEmbedder> {
        if let Some(c) = self.clip.get() {
            return Ok(c);
        }
        let device = self.config.device.open()?;
        let clip = ClipEmbedder::load(&self.config.model, &device)?;
        Ok(self.clip.get_or_init(|| clip))
    }

    /// Adds a folder to watch; returns its canonical path.
    pub fn add_root(&self, path: &Path) -> Result<PathBuf> {
        let root = indexer::canonical_root(path)?;
        self.store.add_root(&root)?;
        Ok(root)
    }

    /// Stops watching a folder and forgets its files; returns how many were forgotten.
    pub fn remove_root(&self, path: &Path) -> Result<u64> {
        let root = std::fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf());
        if !self.store.remove_root(&root)? {
            return Err(Error::Invalid(format!("{} is not a root; see `clipdex roots`", path.display())));
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

    /// Brings the database in step with the folders, once.
    pub fn index(&self, progress: Progress) -> Result<IndexReport> {
        let clip = self.clip()?;
        match self.store.model()? {
            None => self.store.set_model(&self.config.model, clip.dim())?,
            Some((_, dim)) if dim != clip.dim() => {
                return Err(Error::Invalid(format!("stored vectors are {dim}-d but the model gives {}", clip.dim())));
            }
            Some(_) => {}
        }
        let side = clip.processor().output_size().map(|(h, w)| h.min(w));
        let options = IndexOptions {
            decode: DecodeOptions { max_pixels: self.config.max_pixels, min_side: side },
            batch_size: self.config.batch_size,
        };
        let mut report = indexer::index_pass(&self.store, clip, &options, progress)?;
        if let Some(settings) = self.autotag_settings()? {
            report.tagged = self.autotag(Some(settings))?.tagged;
        }
        // Bring the graph up to date now rather than in the next search (small libraries
        // have no graph, and loading their vectors here would be wasted).
        let large = self.store.counts().vectors as usize >= self.config.graph_min;
        if large && (report.embedded > 0 || report.removed > 0) {
            self.search_index()?;
        }
        Ok(report)
    }

    /// Indexes now, then follows the folders (see [`indexer::watch`]) until `stop` is set;
    /// `on_pass` sees every pass's report.
    pub fn watch(
        &self,
        options: &indexer::watch::WatchOptions,
        stop: &std::sync::atomic::AtomicBool,
        on_pass: &mut dyn FnMut(&IndexReport),
    ) -> Result<()> {
        let roots = self.roots()?;
        if roots.is_empty() {
            return Err(Error::Invalid("no folders to watch: add one with `clipdex add ROOT`".into()));
        }
        indexer::watch::follow(&roots, options, stop, || {
            let report = self.index(&|_, _| {})?;
            on_pass(&report);
            Ok(())
        })
    }

    fn graph_dir(&self) -> PathBuf {
        self.config.db.join("hnsw")
    }

    /// Opens the search index (see [`AnnIndex::open`]).
    pub fn search_index(&self) -> Result<AnnIndex> {
        AnnIndex::open(&self.store, &self.graph_dir(), self.config.graph_min)
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
        let prefix = format!("{}\u{0}{}", self.config.model, tags::templates_fingerprint(templates));
        let mut cached = self.store.cached_label_embeddings(&prefix, labels)?;
        let missing: Vec<String> =
            labels.iter().zip(&cached).filter(|(_, c)| c.is_none()).map(|(l, _)| l.clone()).collect();
        if !missing.is_empty() {
            let fresh = tags::embed_labels(clip, &missing, templates)?;
            self.store.cache_label_embeddings(&prefix, &missing, &fresh)?;
            let mut fresh = fresh.into_iter();
            cached.iter_mut().filter(|c| c.is_none()).for_each(|c| *c = fresh.next());
        }
        let embeddings = cached.into_iter().map(|c| c.expect("every label embedded")).collect();
        Ok((ZeroShotClassifier::from_embeddings(labels.to_vec(), embeddings, clip.logit_scale())?, missing.len()))
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
        let fingerprint = settings.fingerprint(&self.config.model);
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
        query::search_tagged(&self.store, k, filter)
    }

    /// Text-to-image search.
    pub fn search_text(&self, text: &str, k: usize, filter: &SearchFilter) -> Result<Vec<SearchHit>> {
        let q = self.clip()?.embed_texts(&[text])?.remove(0);
        query::search(&self.store, &self.search_index()?, &q, k, filter)
    }

    /// Image-to-image search; the image may be outside the library.
    pub fn search_image(&self, path: &Path, k: usize, filter: &SearchFilter) -> Result<Vec<SearchHit>> {
        let clip = self.clip()?;
        let image = open_rgb(path, &DecodeOptions { max_pixels: self.config.max_pixels, min_side: None })?;
        let q = clip.embed_images(&[image])?.remove(0);
        query::search(&self.store, &self.search_index()?, &q, k, filter)
    }

    /// Counts, model and index state.
    pub fn stats(&self) -> Result<LibraryStats> {
        let counts = self.store.counts();
        let model = self.store.model()?;
        Ok(LibraryStats {
            index: AnnIndex::describe(&self.store, &self.graph_dir(), self.config.graph_min)?,
            counts,
            model: model.as_ref().map(|m| m.0.clone()),
            dim: model.map(|m| m.1),
            schema_version: self.store.schema_version()?,
        })
    }

    /// Files that could not be indexed.
    pub fn failures(&self) -> Result<Vec<(PathBuf, Failure)>> {
        self.store.failures()
    }
}
