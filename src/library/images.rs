//! One indexed image: what is known about it, the file clipdex may hand out, its pixels (a
//! video's poster or any frame) and its thumbnails.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::Serialize;

use crate::error::{Error, Result};
use crate::indexer;
use crate::photo::{DecodeOptions, WORKING_SIDE, open_photo_within};
use crate::store::{ImageId, ImageRecord, Tag};
use crate::thumbnail;
use crate::video::FrameSize;

use super::{Library, frames};

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
    /// Where it was taken (`{"city", "region", "country", "lat", "lon", "geonameid"}`), null
    /// without GPS.
    pub place: Option<crate::places::Place>,
    /// The files holding it. In JSON: `paths`, and `paths_bytes` when one is not UTF-8.
    #[serde(flatten, serialize_with = "crate::path_text::paths_field")]
    pub paths: Vec<PathBuf>,
    /// Its auto-tags, most probable first.
    pub tags: Vec<Tag>,
    /// The faces found in it, with their persons (none before the face pass).
    pub faces: Vec<super::FaceDetails>,
    /// Its BLIP caption (`clipdex caption --library`), when it has one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub caption: Option<String>,
    /// The lines of text read in it (`ocr --library`), in reading order; null when its text
    /// was not read.
    pub text: Option<Vec<crate::store::TextLine>>,
    /// A Live Photo's MOV, a RAW+JPEG pair's RAW (`live_video`, `raw_path` in JSON; a Motion
    /// Photo's video is the record's `motion_video`).
    #[serde(flatten)]
    pub companions: crate::photo::companions::Companions,
    /// Why its Live Photo video cannot be played, if so: the failure recorded for the MOV
    /// (unreadable, not a movie, or gone since the pass that paired it).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub live_video_problem: Option<String>,
}

impl Library {
    /// Everything known about one image.
    pub fn image_details(&self, id: ImageId) -> Result<ImageDetails> {
        let record = self.store.image(id)?.ok_or_else(|| Error::NotFound(format!("no image with id {id}")))?;
        let paths = self.store.paths_of(id)?;
        let companions = self.companion_files(&paths)?;
        let live_video_problem = self.live_video_problem(&paths, &companions)?;
        Ok(ImageDetails {
            id,
            date: record.date(),
            place: record.place(),
            record,
            companions,
            live_video_problem,
            paths,
            tags: self.store.tags_of(id)?.map(|(_, tags)| tags).unwrap_or_default(),
            faces: self.faces_in(id)?,
            caption: self.store.caption_of(id)?.map(|c| c.text),
            text: self.store.text_of(id)?.map(|t| t.lines),
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

    pub(super) fn video_frame_jpeg(&self, source: &Path, time: f64, size: u32) -> Result<Vec<u8>> {
        let frame = self.frame_image(source, time, FrameSize::Fit(size))?;
        thumbnail::encode(frame, size).map_err(|p| Error::image(source, p))
    }

    /// The upright frame a video file shows at `time`, scaled down by FFmpeg as `size` asks
    /// and within the pixel budget (`--max-pixels`).
    pub(super) fn frame_image(&self, source: &Path, time: f64, size: FrameSize) -> Result<image::RgbImage> {
        let tools = crate::video::Tools::from_env();
        let limit = indexer::videos::PROBE_LIMIT;
        let problem = |p: crate::video::VideoProblem| Error::Invalid(format!("{}: {p}", source.display()));
        let info = crate::video::probe(&tools, source, limit).map_err(problem)?;
        crate::video::frame_at(&tools, source, &info, time, size, self.config.max_pixels, limit).map_err(problem)
    }

    /// Where the thumbnail of the content `hash` at `size` is cached.
    pub(super) fn thumbnail_path(&self, hash: &str, size: u32) -> PathBuf {
        self.config.db.local_dir().join("thumbs").join(size.to_string()).join(format!("{hash}.jpg"))
    }
}
