//! Moving a library to another model (`clipdex reindex`): every image re-embedded (or its
//! vector mapped through an adapter of the current model), then one atomic switch.

use std::sync::Arc;

use serde::Serialize;

use crate::error::{Error, Result};
use crate::indexer::{self, Progress};
use crate::models::clip::ClipEmbedder;
use crate::models::source::{canonical_spec, local_fingerprint};
use crate::store::ReindexTarget;

use super::{Library, PRECISIONS_SETTING};

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
        let clip = Arc::new(ClipEmbedder::load(model, &device)?.with_precision(self.precision()));
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
}
