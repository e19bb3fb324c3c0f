//! Opening a library and the models it runs: which CLIP its vectors come from (and the
//! precision that made them), loaded on first use; CLIPSeg; adapters of its model.

use std::path::Path;
use std::sync::{Arc, RwLock};

use crate::error::{Error, Result};
use crate::models::clip::ClipEmbedder;
use crate::models::clipseg::Segmenter;
use crate::models::precision::Precision;
use crate::models::source::{canonical_spec, local_fingerprint};
use crate::store::{DbLocation, Store};

use super::{Library, LibraryConfig, PRECISIONS_SETTING};

/// The setting that holds the model a library was set up with before it has vectors.
pub(super) const CHOSEN_MODEL_SETTING: &str = "chosen_model";

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
        let recorded = match store.setting::<super::Settings>(super::settings::SETTINGS_KEY) {
            // A library older than the one settings record kept its OCR model apart: fold it in.
            Ok(recorded) => {
                match super::photo_text::fold_legacy_ocr_setting(&store, recorded.clone().unwrap_or_default()) {
                    Ok(settings) => Some(settings),
                    Err(e) => {
                        tracing::warn!("{e}");
                        recorded
                    }
                }
            }
            Err(e) => {
                tracing::warn!("{e}; using the models given on the command line");
                None
            }
        };
        let library = Library {
            model: RwLock::new(config.model.clone()),
            live: RwLock::new(super::LiveSettings {
                text_model: config.text_model.clone(),
                precision: config.precision,
                seg_model: config.seg_model.clone(),
            }),
            config,
            store,
            clip: RwLock::new(None),
            segmenter: Default::default(),
            index: Default::default(),
            frames: Default::default(),
            full_text: Default::default(),
            text_index: Default::default(),
            ocr_model: Default::default(),
            captioner: Default::default(),
            recent_frames: Default::default(),
            face_finder: Default::default(),
        };
        // Recorded settings win over the configured defaults (the command line refuses a flag
        // that disagrees with one before it opens the library).
        library.apply_settings(&recorded.unwrap_or_default());
        library
    }

    fn live(&self) -> super::LiveSettings {
        self.live.read().unwrap_or_else(|p| p.into_inner()).clone()
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
        let live = self.live();
        let started = std::time::Instant::now();
        let clip = Arc::new(
            ClipEmbedder::load_with_text_model(&self.model(), live.text_model.as_deref(), &self.config.device.open()?)?
                .with_precision(live.precision),
        );
        tracing::debug!("loaded {} in {:.0} ms", self.model(), started.elapsed().as_secs_f64() * 1e3);
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
        let loaded = Arc::new(Segmenter::load(&self.live().seg_model, &self.config.device.open()?)?);
        *slot = Some(loaded.clone());
        Ok(loaded)
    }

    /// The adapter matrix of `model` when it is an adapter (`finetune --train adapter`) of
    /// this library's model (same model files, or the same spelling for a hub id).
    pub(super) fn adapter_of(&self, model: &str, device: &candle_core::Device) -> Result<Option<candle_core::Tensor>> {
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

    /// Where the library's database is.
    pub fn location(&self) -> &DbLocation {
        &self.config.db
    }

    /// The arithmetic of the library's models' linear layers (`--precision`).
    pub fn precision(&self) -> Precision {
        self.live().precision
    }

    /// The device the library's models run on.
    pub fn device(&self) -> Result<candle_core::Device> {
        self.config.device.open()
    }

    /// The decoding limit for photos (`--max-pixels`).
    pub fn max_pixels(&self) -> u64 {
        self.config.max_pixels
    }

    /// The precisions that made the stored vectors (f32 for a library from before they were
    /// recorded).
    pub fn precisions(&self) -> Result<Vec<Precision>> {
        Ok(self.store.setting(PRECISIONS_SETTING)?.unwrap_or_else(|| vec![Precision::F32]))
    }

    /// Records that vectors are (about to be) embedded at `precision`, before any is stored.
    pub(super) fn record_precision(&self, precision: Precision) -> Result<()> {
        let mut made = self.precisions()?;
        if !made.contains(&precision) {
            made.push(precision);
            self.store.set_setting(PRECISIONS_SETTING, &made)?;
        }
        Ok(())
    }
}
