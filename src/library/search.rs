//! Searching: by text, by image (a file, an upload or an indexed image), by tag; re-ranking by
//! a fine-tuned CLIP; the search index and the video frames' index kept between searches.

use std::path::Path;
use std::sync::Arc;

use crate::ann::{AnnIndex, FrameIndex};
use crate::error::{Error, Result};
use crate::indexer;
use crate::models::clip::ClipEmbedder;
use crate::models::source::{canonical_spec, local_fingerprint};
use crate::photo::{DecodeOptions, decode_rgb, open_rgb};
use crate::query::{self, Kind, SearchFilter, SearchHit};
use crate::store::ImageId;

use super::{CachedIndex, Library};

impl Library {
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
        let started = std::time::Instant::now();
        let index = Arc::new(AnnIndex::open(&self.store, &self.graph_dir()?, graph_min)?);
        tracing::debug!("opened the search index in {:.0} ms", started.elapsed().as_secs_f64() * 1e3);
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

    /// Images carrying `filter.tag`, most probable first.
    pub fn search_tag(&self, k: usize, filter: &SearchFilter) -> Result<Vec<SearchHit>> {
        let mut hits = query::search_tagged(&self.store, k, &self.resolve_tag(filter)?)?;
        self.attach_companions(&mut hits)?;
        Ok(hits)
    }

    /// The filter with its tag spelt as stored: a tag typed in another case ("Dog") matches
    /// the stored label ("dog") when that label is in use and the typed one is not.
    pub(super) fn resolve_tag(&self, filter: &SearchFilter) -> Result<SearchFilter> {
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
        let tuned = ClipEmbedder::load(&model, &self.config.device.open()?)?.with_precision(self.precision());
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

    /// The indexed image that `spec` names: one of its paths, or its id as search results give
    /// it (`1000003` or `#1000003`). An existing file is taken as a path first, so a photo
    /// named `1000003` is still found by its name.
    pub fn resolve_image(&self, spec: &Path) -> Result<ImageId> {
        if spec.exists() {
            let absolute =
                std::fs::canonicalize(spec).map_err(|e| Error::NotFound(format!("{}: {e}", spec.display())))?;
            // A Live Photo's MOV, a RAW+JPEG pair's RAW: the item they belong to.
            let id = match self.store.path_entry(&absolute)? {
                Some(entry) => Some(entry.id),
                None => self.item_of_companion(&absolute)?,
            };
            return match id {
                Some(id) => Ok(id),
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

    /// "More like this": the `k` images nearest to an indexed one, itself left out (it is
    /// what the user is looking at), from its stored vector, so nothing is decoded or embedded.
    pub fn search_like(&self, id: ImageId, k: usize, filter: &SearchFilter) -> Result<Vec<SearchHit>> {
        let q = self.stored_vector(id)?;
        let mut hits = self.search_vector(&q, k.saturating_add(1), filter)?;
        hits.retain(|h| h.id != id);
        hits.truncate(k);
        Ok(hits)
    }

    /// The indexed image of a file given by the user, a companion file included (the item it
    /// belongs to); `None` for a file outside the library (to compare by its pixels).
    pub fn indexed_image_of(&self, path: &Path) -> Result<Option<ImageId>> {
        let Ok(absolute) = std::fs::canonicalize(path) else { return Ok(None) };
        if let Some(entry) = self.store.path_entry(&absolute)? {
            return Ok(Some(entry.id));
        }
        self.item_of_companion(&absolute)
    }

    /// The stored vector of an indexed image.
    pub fn stored_vector(&self, id: ImageId) -> Result<Vec<f32>> {
        self.store.vector(id)?.ok_or_else(|| Error::NotFound(format!("no image with id {id}")))
    }
}

/// An image id as results print it: digits, optionally after `#`.
fn image_id_of(spec: &Path) -> Option<ImageId> {
    let text = spec.to_str()?;
    text.strip_prefix('#').unwrap_or(text).parse().ok()
}
