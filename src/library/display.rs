//! Renditions a browser can show: a JPEG of a photo whose own format browsers do not read
//! (HEIC, most RAW, JPEG XL and AVIF in some browsers), at a bounded size, made once per
//! content and size and kept in the database folder among the thumbnails.

use std::path::PathBuf;

use crate::error::{Error, Result};
use crate::store::ImageId;
use crate::thumbnail;

use super::Library;

impl Library {
    /// A JPEG of image `id` whose longer side is at most `size` pixels (the largest power of two
    /// that is; never enlarged),
    /// upright; a video's is its poster frame. Made once and kept in the database folder
    /// (`thumbs/display/SIZE/HASH.jpg`); the photo is decoded within the pixel limit and the decode
    /// budget as every photo is. [`Error::Invalid`] for a size outside
    /// [`thumbnail::MIN_SIZE`]..=[`thumbnail::DISPLAY_MAX_SIZE`].
    pub fn display_jpeg(&self, id: ImageId, size: u32) -> Result<PathBuf> {
        self.display_jpeg_unless(id, size, &|| false)?
            .ok_or_else(|| Error::Invalid(format!("the rendition of image {id} was cancelled")))
    }

    /// [`Library::display_jpeg`] for a request that may go away: `cancelled` is asked before
    /// each costly step (reading, decoding, encoding), and once it says so the work stops
    /// there and nothing is kept (`Ok(None)`). A rendition already kept is returned at once.
    pub fn display_jpeg_unless(&self, id: ImageId, size: u32, cancelled: &dyn Fn() -> bool) -> Result<Option<PathBuf>> {
        if !(thumbnail::MIN_SIZE..=thumbnail::DISPLAY_MAX_SIZE).contains(&size) {
            return Err(Error::Invalid(format!(
                "a rendition's size must be between {} and {} pixels",
                thumbnail::MIN_SIZE,
                thumbnail::DISPLAY_MAX_SIZE
            )));
        }
        // Sizes are kept in steps (the largest power of two at most the one asked for), so that
        // asking for every size in turn does not decode the photo two thousand times.
        let size = 1u32 << (31 - size.leading_zeros());
        let record = self.store.image(id)?.ok_or_else(|| Error::NotFound(format!("no image with id {id}")))?;
        let cached = self.config.db.local_dir().join("thumbs").join("display").join(size.to_string());
        let cached = cached.join(format!("{}.jpg", record.hash));
        // The file is checked first even when a rendition is kept: one whose file changed or
        // went is not served (as `/file` would not serve it).
        let source = self.image_file(id)?;
        // A link planted where a rendition is kept is not followed (nor served).
        if cached.symlink_metadata().is_ok_and(|m| m.is_file()) {
            return Ok(Some(cached));
        }
        if cancelled() {
            return Ok(None);
        }
        let jpeg = match &record.video {
            Some(video) => self.video_frame_jpeg(&source, video.poster, size)?,
            None => {
                let bytes = crate::photo::read_image_file(&source, self.config.max_pixels)
                    .map_err(|p| Error::image(&source, p))?;
                if cancelled() {
                    return Ok(None);
                }
                let rendered = thumbnail::render_display_unless(&bytes, size, self.config.max_pixels, cancelled)
                    .map_err(|p| Error::image(&source, p))?;
                match rendered {
                    Some(jpeg) => jpeg,
                    None => return Ok(None),
                }
            }
        };
        thumbnail::store(&cached, &jpeg)?;
        Ok(Some(cached))
    }
}
