//! The face pass: finding the faces in every photo (a video on its poster frame) with the
//! library's face model, after embedding, as `index`, `watch` and `serve` run it and
//! `people --scan` asks for it.
//!
//! Which model finds faces is the library's `face_model` setting (a folder of dlib's models,
//! or `none`: no face data is made); it is loaded once per folder and kept. An image is
//! looked at again only when its content or the face model changed (each image's faces are
//! stored with the scan that found them: model and content hash). The pass is safe to kill:
//! an image's faces are stored in one transaction as soon as they are found, and the faces
//! that were not yet grouped into persons are grouped by the next pass. The store is flushed
//! after each photo, so a kill loses none that was looked at. New faces join
//! persons after every [`PLACE_EVERY`] images, so people appear while a long pass runs.

use std::sync::Arc;

use super::Library;
use super::people::{FACE_SIDE, FaceFinder, FaceReport};
use crate::error::Result;
use crate::indexer::Progress;
use crate::store::{FaceScan, ImageId, NewFace};

/// New faces are grouped into persons after this many images looked at (and at the end).
pub const PLACE_EVERY: usize = 32;

/// The face finder a library holds: the folder it was loaded from (`None`: set by the
/// program with [`Library::set_face_finder`]) and the model.
pub(super) type FaceFinderSlot = Option<(Option<String>, Arc<dyn FaceFinder>)>;

impl Library {
    /// Sets (or with `None` removes) the face model of the face pass in place of the one the
    /// library's `face_model` setting names. A library set to `none` finds no faces either way.
    pub fn set_face_finder(&self, finder: Option<Arc<dyn FaceFinder>>) {
        *self.face_finder.write().unwrap_or_else(|e| e.into_inner()) = finder.map(|f| (None, f));
    }

    /// The face model of the face pass: the one set with [`Library::set_face_finder`], else
    /// the one the `face_model` setting names (loaded once per folder); `None` when the library
    /// has none or is set to `none`.
    pub fn face_finder(&self) -> Result<Option<Arc<dyn FaceFinder>>> {
        let settings = self.settings()?;
        if settings.face_model.as_deref() == Some("none") {
            return Ok(None);
        }
        let wanted = settings.face_model_dir().map(str::to_string);
        if let Some((from, finder)) = self.face_finder.read().unwrap_or_else(|e| e.into_inner()).as_ref()
            && (from.is_none() || *from == wanted)
        {
            return Ok(Some(finder.clone()));
        }
        let Some(dir) = wanted else { return Ok(None) };
        let finder: Arc<dyn FaceFinder> = Arc::new(crate::models::faces::FaceModel::open(&dir)?);
        *self.face_finder.write().unwrap_or_else(|e| e.into_inner()) = Some((Some(dir), finder.clone()));
        Ok(Some(finder))
    }

    /// What the library's face model's embeddings are, without loading it: the finder set by
    /// the program, else whether the `face_model` folder holds InsightFace's files.
    pub(super) fn face_embedding_kind(&self) -> Result<crate::models::faces::EmbeddingKind> {
        use crate::models::faces::{EmbeddingKind, insight};
        if let Some((_, finder)) = self.face_finder.read().unwrap_or_else(|e| e.into_inner()).as_ref() {
            return Ok(EmbeddingKind::of_model_id(&finder.id()));
        }
        let settings = self.settings()?;
        Ok(match settings.face_model_dir() {
            Some(dir) if insight::is_insight_dir(std::path::Path::new(dir)) => EmbeddingKind::ArcFace,
            _ => EmbeddingKind::Dlib,
        })
    }

    /// Finds the faces of the images the library's face model has not looked at in their
    /// current content (nothing when it has no face model); `pause` ends the run early (what was
    /// found is kept and grouped). `progress` gets (images done, images).
    pub fn find_faces_pending(&self, progress: Progress, pause: &dyn Fn() -> bool) -> Result<Option<FaceReport>> {
        let Some(finder) = self.face_finder()? else { return Ok(None) };
        self.find_faces_with(&*finder, progress, pause).map(Some)
    }

    /// Looks for faces in every image whose content or face model changed since its faces were
    /// last looked for, grouping the new faces into persons after every [`PLACE_EVERY`] images
    /// and at the end; `pause` ends it early. Safe to interrupt: each image's faces are stored
    /// at once, and the next pass goes on where this one stopped.
    pub fn find_faces_with(
        &self,
        finder: &dyn FaceFinder,
        progress: Progress,
        pause: &dyn Fn() -> bool,
    ) -> Result<FaceReport> {
        let model = finder.id();
        let mut report = FaceReport::default();
        let mut todo = Vec::new();
        let mut images = 0u64;
        for item in self.store.images() {
            let (id, record) = item?;
            images += 1;
            let scan = self.store.face_scan(id)?;
            if scan.as_ref().is_none_or(|s| s.model != model || s.hash != record.hash) {
                todo.push((id, record.hash));
            }
        }
        let unchanged = images - todo.len() as u64;
        progress(unchanged, images);
        let mut since_placed = 0;
        for (done, (id, hash)) in todo.into_iter().enumerate() {
            if pause() {
                break;
            }
            match self.find_faces_in(finder, id, &FaceScan { model: model.clone(), hash }, pause) {
                // Given up midway (a shutdown): not recorded, so the next pass looks at it.
                Ok(None) => break,
                Ok(Some(n)) => {
                    // On disk before the next photo (a detection costs far more than this), so
                    // a kill loses no photo that was looked at.
                    self.store.flush()?;
                    tracing::debug!("faces of image {id}: {n} stored");
                    report.scanned += 1;
                    report.faces += n;
                }
                Err(e) => {
                    tracing::debug!("faces of image {id}: {e}");
                    report.failed.push((id, e.to_string()));
                }
            }
            since_placed += 1;
            if since_placed == PLACE_EVERY {
                since_placed = 0;
                let (placed, formed) = self.place_pending_faces()?;
                report.placed += placed;
                report.new_persons += formed;
            }
            progress(unchanged + done as u64 + 1, images);
        }
        let (placed, formed) = self.place_pending_faces()?;
        report.placed += placed;
        report.new_persons += formed;
        self.store.flush()?;
        Ok(report)
    }

    /// Finds and stores the faces of one image (a video: of its poster frame), carrying the
    /// user's decisions over from the faces it had (matched by box overlap). Returns how many
    /// faces it has; `None` (nothing stored) when `pause` said to give up before it was done.
    pub(super) fn find_faces_in(
        &self,
        finder: &dyn FaceFinder,
        id: ImageId,
        scan: &FaceScan,
        pause: &dyn Fn() -> bool,
    ) -> Result<Option<usize>> {
        let (photo, (width, _)) = self.open_indexed_within(id, FACE_SIDE)?;
        let scale = if photo.width() == 0 { 1.0 } else { width as f32 / photo.width() as f32 };
        let Some(found) = finder.faces_unless(&photo, pause)? else { return Ok(None) };
        let faces: Vec<NewFace> = found
            .into_iter()
            .map(|f| NewFace {
                bbox: f.bbox.map(|v| v * scale),
                score: f.score,
                landmarks: f.landmarks.map(|[x, y]| [x * scale, y * scale]),
                embedding: f.embedding,
                person: None,
                pinned: false,
            })
            .collect();
        self.store_found_faces(id, scan, faces).map(Some)
    }

    /// The face pass after indexing in the background: failures are logged, not fatal (the
    /// images are looked at again by the next pass).
    pub(super) fn find_faces_in_background(&self, progress: Progress, pause: &dyn Fn() -> bool) {
        match self.find_faces_pending(progress, pause) {
            Ok(Some(report)) if !report.failed.is_empty() => {
                tracing::warn!("faces: {} images could not be looked at", report.failed.len());
            }
            Ok(_) => {}
            Err(e) => tracing::warn!("finding faces failed: {e}"),
        }
    }
}
