//! Face thumbnails: a square crop around one face, for the People page and wherever a person
//! is shown by a face. Cut from the image's own pixels (a video's poster frame) rather than
//! from a grid thumbnail, so a small face in a large photo is still sharp; made once and kept
//! beside the thumbnails, keyed by the image's content hash and the face's box, so an edited
//! photo (a new hash) or a face found elsewhere gets a new one.

use std::path::PathBuf;

use super::Library;
use crate::error::{Error, Result};
use crate::store::FaceId;
use crate::thumbnail;

/// The side a face thumbnail has unless asked otherwise, pixels.
pub const FACE_THUMB_SIZE: u32 = 160;
/// The largest face thumbnail served, pixels.
pub const FACE_THUMB_MAX_SIZE: u32 = 512;
/// The crop's side as a multiple of the face box's longer side: the face with its hair and chin.
const MARGIN: f32 = 1.6;
/// The most pixels on the long side an image is decoded at to cut a face from.
const MAX_DECODE_SIDE: f32 = 4096.0;

impl Library {
    /// A JPEG of face `face`: a square around its box (1.6 times the box's longer side, moved
    /// inside the image at its edges), `size` pixels a side at most (a small face in a small
    /// image is not enlarged). Made once and kept in the database folder
    /// (`thumbs/faces/SIZE/HASH-BOX.jpg`).
    pub fn face_thumbnail(&self, face: FaceId, size: u32) -> Result<Vec<u8>> {
        if !(thumbnail::MIN_SIZE..=FACE_THUMB_MAX_SIZE).contains(&size) {
            return Err(Error::Invalid(format!(
                "a face thumbnail's size must be between {} and {FACE_THUMB_MAX_SIZE} pixels",
                thumbnail::MIN_SIZE
            )));
        }
        let stored = self.store.face(face)?.ok_or_else(|| {
            Error::NotFound(format!("no face {face}: /api/people and /api/images/ID list the face ids"))
        })?;
        let record = self
            .store
            .image(stored.image)?
            .ok_or_else(|| Error::NotFound(format!("no image with id {} (face {face})", stored.image)))?;
        let [x, y, w, h] = stored.face.bbox;
        let cached = self.face_thumbnail_path(&record.hash, stored.face.bbox, size);
        if let Ok(jpeg) = std::fs::read(&cached) {
            return Ok(jpeg);
        }
        // The square (in the image's pixels) is at most the image's shorter side; the image is
        // decoded only as large as the square needs to be `size` pixels.
        let shorter = record.width.min(record.height).max(1) as f32;
        let side = (w.max(h) * MARGIN).clamp(1.0, shorter);
        let long = record.width.max(record.height).max(1) as f32;
        let decode_side = (long * size as f32 / side).ceil().min(long).clamp(64.0, MAX_DECODE_SIDE) as u32;
        let (photo, (width, _)) = self.open_indexed_within(stored.image, decode_side)?;
        let (pw, ph) = photo.dimensions();
        if pw == 0 || ph == 0 || width == 0 {
            return Err(Error::Invalid(format!("image {} has no pixels to cut face {face} from", stored.image)));
        }
        let scale = pw as f32 / width as f32;
        let crop = ((side * scale).round() as u32).clamp(1, pw.min(ph));
        let place = |centre: f32, limit: u32| -> u32 {
            let start = (centre * scale - crop as f32 / 2.0).round();
            start.clamp(0.0, (limit - crop) as f32) as u32
        };
        let (left, top) = (place(x + w / 2.0, pw), place(y + h / 2.0, ph));
        let square = image::imageops::crop_imm(&photo, left, top, crop, crop).to_image();
        let path = self.image_file(stored.image)?;
        let jpeg = thumbnail::encode(square, size).map_err(|p| Error::image(&path, p))?;
        // A cache that cannot be written costs the next request a decode, not this one its face.
        if let Err(e) = thumbnail::store(&cached, &jpeg) {
            tracing::warn!("{e}");
        }
        Ok(jpeg)
    }

    /// Where the thumbnail of the face at `bbox` in the content `hash` at `size` is cached.
    fn face_thumbnail_path(&self, hash: &str, bbox: [f32; 4], size: u32) -> PathBuf {
        let [x, y, w, h] = bbox.map(|v| v.round() as i64);
        self.config
            .db
            .local_dir()
            .join("thumbs")
            .join("faces")
            .join(size.to_string())
            .join(format!("{hash}-{x}_{y}_{w}_{h}.jpg"))
    }
}
