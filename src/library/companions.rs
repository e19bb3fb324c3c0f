//! A library item's companion files as the interfaces show and serve them: a Live Photo's MOV,
//! a RAW+JPEG pair's RAW, a Motion Photo's embedded MP4. Which file is whose companion is
//! decided in one place, [`crate::photo::companions`]; this only looks it up for the files
//! of stored items.

use std::path::PathBuf;

use super::Library;
use crate::error::{Error, Result};
use crate::photo::companions::{self, Companions};
use crate::photo::motion::MotionVideo;
use crate::query::{Media, SearchHit};
use crate::store::{ImageId, LivePairs};

/// The pairs the last scans made by content identifier, read from the store once, when a
/// still without a same-named MOV first asks.
struct RecordedPairs<'a> {
    library: &'a Library,
    pairs: Option<LivePairs>,
}

impl RecordedPairs<'_> {
    /// The MOV a scan paired with the still at `path` by content identifier (their names
    /// differ, so the folder alone does not tell), while it is there.
    fn video_of(&mut self, path: &std::path::Path) -> Result<Option<PathBuf>> {
        let pairs = match &mut self.pairs {
            Some(pairs) => pairs,
            None => self.pairs.insert(self.library.recorded_live_pairs()?),
        };
        Ok(pairs.get(path).filter(|p| p.by_identifier && !p.gone && p.video.is_file()).map(|p| p.video.clone()))
    }
}

impl Library {
    /// Fills in the companions of the photos among `hits` (from their folders as they are now,
    /// and the Motion Photo video their records hold).
    pub fn attach_companions(&self, hits: &mut [SearchHit]) -> Result<()> {
        // Results often share folders: each is listed once.
        let paths: Vec<&std::path::Path> =
            hits.iter().filter(|h| matches!(h.media, Media::Photo)).map(|h| h.path.as_path()).collect();
        let mut folders = companions::FolderGroups::of(&paths);
        let mut recorded = RecordedPairs { library: self, pairs: None };
        for hit in hits.iter_mut().filter(|h| matches!(h.media, Media::Photo)) {
            let mut found = match folders.role(&hit.path) {
                companions::Role::Item(c) => c,
                companions::Role::Companion { .. } => Companions::default(),
            };
            if found.live_video.is_none() {
                found.live_video = recorded.video_of(&hit.path)?;
            }
            if found.is_empty() {
                // One photo saved in several places: the companions may be beside another of
                // its files than the one shown.
                let paths = self.store.paths_of(hit.id)?;
                if paths.len() > 1 {
                    found = self.companions_among(&paths, &mut recorded)?;
                }
            }
            found.motion_video = self.store.image(hit.id)?.and_then(|r| r.motion_video);
            hit.companions = found;
        }
        Ok(())
    }

    /// The companion files of the first of `paths` that has any (a Motion Photo's video is in
    /// the image's record, not here).
    pub(super) fn companion_files(&self, paths: &[PathBuf]) -> Result<Companions> {
        self.companions_among(paths, &mut RecordedPairs { library: self, pairs: None })
    }

    fn companions_among(&self, paths: &[PathBuf], recorded: &mut RecordedPairs) -> Result<Companions> {
        for path in paths {
            let mut found = companions::companions_of(path);
            if found.live_video.is_none() {
                found.live_video = recorded.video_of(path)?;
            }
            if !found.is_empty() {
                return Ok(found);
            }
        }
        Ok(Companions::default())
    }

    /// Why the Live Photo video of the still at one of `paths` cannot be played: the failure
    /// recorded for its MOV, whether the MOV is there (unreadable, not a movie) or gone since
    /// the last pass paired it.
    pub(super) fn live_video_problem(&self, paths: &[PathBuf], companions: &Companions) -> Result<Option<String>> {
        if let Some(video) = &companions.live_video {
            return Ok(self.store.failure(video)?.map(|f| f.reason));
        }
        for path in paths {
            if let Some(pair) = self.store.live_pair_of(path)?.filter(|p| p.gone) {
                return Ok(self.store.failure(&pair.video)?.map(|f| f.reason));
            }
        }
        Ok(None)
    }

    /// The item that the companion file at `path` (absolute) belongs to: the still of a Live
    /// Photo's MOV (paired by name or by content identifier), the JPEG of a RAW+JPEG pair's
    /// RAW; `None` when it is no companion of an indexed item.
    pub(super) fn item_of_companion(&self, path: &std::path::Path) -> Result<Option<ImageId>> {
        if let companions::Role::Companion { still, .. } = companions::role_of(path)
            && let Some(entry) = self.store.path_entry(&still)?
        {
            return Ok(Some(entry.id));
        }
        for (still, pair) in self.recorded_live_pairs()? {
            if pair.video == path
                && let Some(entry) = self.store.path_entry(&still)?
            {
                return Ok(Some(entry.id));
            }
        }
        Ok(None)
    }

    /// The Live Photos of every root as the last scan paired them.
    fn recorded_live_pairs(&self) -> Result<LivePairs> {
        let mut all = LivePairs::new();
        for root in self.store.roots()? {
            all.extend(self.store.live_pairs(&root)?);
        }
        Ok(all)
    }

    /// The MOV of Live Photo `id`, to serve: beside one of its files (the first that has one),
    /// inside one of the library's folders (a link leading elsewhere is not served), and a
    /// QuickTime movie (a MOV that is not is a problem, reported, not served).
    pub fn live_video(&self, id: ImageId) -> Result<PathBuf> {
        let paths = self.store.paths_of(id)?;
        if paths.is_empty() {
            return Err(Error::NotFound(format!("no image with id {id}")));
        }
        let Some(video) = self.companion_files(&paths)?.live_video else {
            return Err(Error::NotFound(format!(
                "image {id} is not a Live Photo (no MOV with its name or its content identifier beside {})",
                crate::path_text::escaped(&paths[0])
            )));
        };
        if let Some(problem) = companions::live_video_problem(&video) {
            return Err(Error::NotFound(format!("the Live Photo video of image {id} cannot be played: {problem}")));
        }
        let real = std::fs::canonicalize(&video).map_err(|e| {
            Error::NotFound(format!("the Live Photo video {} of image {id}: {e}", crate::path_text::escaped(&video)))
        })?;
        if !real.is_file() || !self.roots()?.iter().any(|r| real.starts_with(r)) {
            return Err(Error::Forbidden(format!(
                "the Live Photo video of image {id} leads outside the library's folders; it is not served"
            )));
        }
        Ok(video)
    }

    /// The file of Motion Photo `id` and where its MP4 lies in it.
    pub fn motion_video(&self, id: ImageId) -> Result<(PathBuf, MotionVideo)> {
        let record = self.store.image(id)?.ok_or_else(|| Error::NotFound(format!("no image with id {id}")))?;
        let Some(motion) = record.motion_video else {
            let why = record.motion_video_problem.map(|p| format!(" ({p})")).unwrap_or_default();
            return Err(Error::NotFound(format!("image {id} has no Motion Photo video{why}")));
        };
        Ok((self.image_file(id)?, motion))
    }
}
