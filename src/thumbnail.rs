//! Thumbnails for the web UI: upright (EXIF orientation applied), the longer side scaled to
//! the requested size, JPEG. They are made once and kept in the database folder by content
//! hash, so identical files share one and an edited file (a new hash) gets a new one.

use std::path::Path;

use image::codecs::jpeg::JpegEncoder;
use image::imageops::FilterType;

use crate::error::{Error, ImageProblem, Result};
use crate::photo::{DecodeOptions, decode_photo_within};

/// Smallest thumbnail side served.
pub const MIN_SIZE: u32 = 16;
/// Largest thumbnail side served (larger views load the file itself).
pub const MAX_SIZE: u32 = 1024;
/// The sizes the web UI asks for (the grid, the detail view): `serve` makes them in the
/// background after indexing, so the first scroll through a new library is instant.
pub const UI_SIZES: [u32; 2] = [256, 1024];
/// JPEG quality of thumbnails.
const QUALITY: u8 = 85;
/// Largest side of a browser rendition ([`render_display`]): what a detail view on a large
/// screen shows, and the side models' working copies are held to.
pub const DISPLAY_MAX_SIZE: u32 = crate::photo::WORKING_SIDE;
/// JPEG quality of browser renditions (looked at closely, full screen).
const DISPLAY_QUALITY: u8 = 90;

/// Encodes a thumbnail of `bytes` whose longer side is `size` (smaller images keep their size).
pub fn render(bytes: &[u8], size: u32, max_pixels: u64) -> Result<Vec<u8>, ImageProblem> {
    // A JPEG decodes at the smallest DCT scale that still covers the thumbnail; any photo is
    // then averaged down to twice the thumbnail's side while its decode holds the budget, so
    // the filter below never works on (and never allocates in proportion to) a huge image.
    let photo =
        decode_photo_within(bytes, &DecodeOptions { max_pixels, min_side: Some(size) }, size.saturating_mul(2))?;
    encode(photo.image, size)
}

/// Encodes a JPEG a browser can show of a photo it may not (HEIC, AVIF, JPEG XL, a RAW's
/// preview): upright, its longer side at most `size` (smaller photos keep theirs), decoded
/// through the same checks and decode budget as every photo and reduced by area averaging
/// while the decode holds its share.
pub fn render_display(bytes: &[u8], size: u32, max_pixels: u64) -> Result<Vec<u8>, ImageProblem> {
    render_display_unless(bytes, size, max_pixels, &|| false)?
        .ok_or_else(|| ImageProblem::Io("the rendition was cancelled".into()))
}

/// [`render_display`], given up (`None`) when `cancelled` says so after the decoding: the
/// encoding is not started for nobody.
pub fn render_display_unless(
    bytes: &[u8],
    size: u32,
    max_pixels: u64,
    cancelled: &dyn Fn() -> bool,
) -> Result<Option<Vec<u8>>, ImageProblem> {
    let photo = decode_photo_within(bytes, &DecodeOptions { max_pixels, min_side: Some(size) }, size)?;
    if cancelled() {
        return Ok(None);
    }
    let mut out = Vec::new();
    JpegEncoder::new_with_quality(&mut out, DISPLAY_QUALITY)
        .encode_image(&photo.image)
        .map_err(|e| ImageProblem::Io(format!("cannot encode the JPEG rendition: {e}")))?;
    Ok(Some(out))
}

/// Encodes a thumbnail of a decoded image (a video's frame) whose longer side is `size`.
pub fn encode(image: image::RgbImage, size: u32) -> Result<Vec<u8>, ImageProblem> {
    let (w, h) = image.dimensions();
    let scale = (size as f64 / w.max(h) as f64).min(1.0);
    let (tw, th) = (((w as f64 * scale).round() as u32).max(1), ((h as f64 * scale).round() as u32).max(1));
    let image = if (tw, th) == (w, h) { image } else { image::imageops::resize(&image, tw, th, FilterType::Triangle) };
    let mut out = Vec::new();
    JpegEncoder::new_with_quality(&mut out, QUALITY)
        .encode_image(&image)
        .map_err(|e| ImageProblem::Io(format!("cannot encode the thumbnail: {e}")))?;
    Ok(out)
}

/// Writes a thumbnail into the cache atomically (a reader never sees half a file).
pub fn store(path: &Path, jpeg: &[u8]) -> Result<()> {
    let fail = |e: std::io::Error| Error::Store(format!("cannot write the thumbnail {}: {e}", path.display()));
    let dir = path.parent().ok_or_else(|| Error::Store(format!("bad thumbnail path {}", path.display())))?;
    std::fs::create_dir_all(dir).map_err(fail)?;
    let tmp = dir.join(format!(".{}.{}.tmp", std::process::id(), unique()));
    std::fs::write(&tmp, jpeg).map_err(fail)?;
    std::fs::rename(&tmp, path).map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        fail(e)
    })
}

fn unique() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static NEXT: AtomicU64 = AtomicU64::new(0);
    NEXT.fetch_add(1, Ordering::Relaxed)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn png(w: u32, h: u32) -> Vec<u8> {
        let img = image::RgbImage::from_fn(w, h, |x, y| image::Rgb([(x % 256) as u8, (y % 256) as u8, 128]));
        let mut out = std::io::Cursor::new(Vec::new());
        img.write_to(&mut out, image::ImageFormat::Png).unwrap();
        out.into_inner()
    }

    #[test]
    fn a_display_rendition_is_a_jpeg_within_its_size() {
        let t = image::load_from_memory(&render_display(&png(3000, 1000), 2048, u64::MAX).unwrap()).unwrap();
        assert_eq!((t.width(), t.height()), (2048, 683));
        let t = image::load_from_memory(&render_display(&png(30, 50), 2048, u64::MAX).unwrap()).unwrap();
        assert_eq!((t.width(), t.height()), (30, 50));
    }

    #[test]
    fn the_longer_side_becomes_the_size_and_small_images_keep_theirs() {
        let t = image::load_from_memory(&render(&png(400, 100), 64, u64::MAX).unwrap()).unwrap();
        assert_eq!((t.width(), t.height()), (64, 16));
        let t = image::load_from_memory(&render(&png(30, 50), 64, u64::MAX).unwrap()).unwrap();
        assert_eq!((t.width(), t.height()), (30, 50));
    }

    #[test]
    fn broken_and_oversized_images_are_refused() {
        assert_eq!(render(b"", 64, u64::MAX), Err(ImageProblem::Empty));
        assert!(matches!(render(&png(100, 100), 64, 50), Err(ImageProblem::TooLarge { .. })));
        assert!(render(b"plain text, not a picture", 64, u64::MAX).is_err());
    }
}
