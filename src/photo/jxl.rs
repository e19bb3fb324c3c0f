//! JPEG XL through `jxl-oxide` (pure Rust: nothing to install).
//!
//! The image header (size, orientation) is parsed before any pixel is decoded, so the size is
//! checked against the pixel limit and the decode budget first; `jxl-oxide` then renders the
//! first frame in the image's colour space (sRGB for almost every photo) with the codestream's
//! orientation applied, alpha left out, and its allocations capped by the same budget.

use jxl_oxide::{AllocTracker, InitializeResult, JxlImage, PixelFormat};

use crate::error::ImageProblem;

/// Whether `bytes` start a JPEG XL file: a bare codestream or the ISO-BMFF container.
pub fn sniff(bytes: &[u8]) -> bool {
    bytes.starts_with(&[0xFF, 0x0A]) || bytes.starts_with(b"\0\0\0\x0cJXL ")
}

fn corrupt(e: impl std::fmt::Display) -> ImageProblem {
    ImageProblem::Corrupt(format!("JPEG XL: {e}"))
}

/// A JPEG XL file whose header has been read and nothing decoded.
pub struct JxlFile {
    image: JxlImage,
}

impl JxlFile {
    /// Parses the header; `memory_limit` caps what the decoder may allocate later.
    pub fn parse(bytes: &[u8], memory_limit: u64) -> Result<Self, ImageProblem> {
        let tracker = AllocTracker::with_limit(usize::try_from(memory_limit).unwrap_or(usize::MAX));
        let mut uninit = JxlImage::builder().alloc_tracker(tracker).build_uninit();
        uninit.feed_bytes(bytes).map_err(corrupt)?;
        match uninit.try_init().map_err(corrupt)? {
            InitializeResult::Initialized(mut image) => {
                image.finalize().map_err(corrupt)?;
                Ok(JxlFile { image })
            }
            InitializeResult::NeedMoreData(_) => Err(corrupt("the file ends inside its header (truncated)")),
        }
    }

    /// The upright size the header declares.
    pub fn dimensions(&self) -> (u32, u32) {
        (self.image.width(), self.image.height())
    }

    /// Renders the first frame as upright 8-bit RGB.
    pub fn decode_rgb(&self) -> Result<image::RgbImage, ImageProblem> {
        if self.image.num_loaded_keyframes() == 0 {
            return Err(corrupt("no complete frame (the file is truncated)"));
        }
        let gray = match self.image.pixel_format() {
            PixelFormat::Rgb | PixelFormat::Rgba => false,
            PixelFormat::Gray | PixelFormat::Graya => true,
            other => return Err(ImageProblem::Unsupported(format!("JPEG XL in {other:?} (convert it to RGB)"))),
        };
        let render = self.image.render_frame(0).map_err(corrupt)?;
        let mut stream = render.stream_no_alpha();
        let (w, h, channels) = (stream.width(), stream.height(), stream.channels() as usize);
        let mut samples = vec![0u8; w as usize * h as usize * channels];
        stream.write_to_buffer(&mut samples);
        let rgb = match (gray, channels) {
            (false, 3) => samples,
            (true, 1) => samples.iter().flat_map(|&v| [v, v, v]).collect(),
            _ => return Err(corrupt(format!("{channels} colour channels rendered"))),
        };
        image::RgbImage::from_raw(w, h, rgb).ok_or_else(|| corrupt("a short frame"))
    }
}

/// Reads just enough of a JPEG XL file to learn its upright size.
pub fn dimensions(bytes: &[u8]) -> Result<(u32, u32), ImageProblem> {
    let mut uninit = JxlImage::builder().build_uninit();
    // The header and an ICC profile fit in the first few KB of any real file; feed more only
    // while the decoder asks for it.
    let (mut start, mut end) = (0, 0);
    loop {
        end = (end + 16 * 1024).min(bytes.len());
        // The container parser may keep back a box header it has not seen whole: those bytes
        // are fed again with the next chunk.
        start += uninit.feed_bytes(&bytes[start..end]).map_err(corrupt)?;
        match uninit.try_init().map_err(corrupt)? {
            InitializeResult::Initialized(image) => return Ok((image.width(), image.height())),
            InitializeResult::NeedMoreData(more) if end < bytes.len() => uninit = more,
            InitializeResult::NeedMoreData(_) => return Err(corrupt("the file ends inside its header (truncated)")),
        }
    }
}

/// The EXIF block (its TIFF structure) of a JPEG XL file's `Exif` box, when it has one.
///
/// The box should hold a 4-byte offset to the TIFF header, then the header; some writers
/// (pillow-jxl-plugin) put the TIFF header first, which is read as well.
pub fn exif(bytes: &[u8]) -> Option<Vec<u8>> {
    let mut at = 0usize;
    // Top-level boxes: a 32-bit size (1: a 64-bit size follows; 0: to the end) and a type.
    while at.checked_add(8)? <= bytes.len() {
        let size = u32::from_be_bytes(bytes[at..at + 4].try_into().ok()?) as u64;
        let kind = &bytes[at + 4..at + 8];
        let (header, size) = match size {
            0 => (8, (bytes.len() - at) as u64),
            1 => (16, u64::from_be_bytes(bytes.get(at + 8..at + 16)?.try_into().ok()?)),
            n => (8, n),
        };
        let end = usize::try_from(size).ok().and_then(|s| at.checked_add(s)).filter(|&e| e <= bytes.len())?;
        if size < header as u64 {
            return None;
        }
        if kind == b"Exif" {
            let payload = &bytes[at + header..end];
            if payload.starts_with(b"II*\0") || payload.starts_with(b"MM\0*") {
                return Some(payload.to_vec());
            }
            let offset = u32::from_be_bytes(payload.get(..4)?.try_into().ok()?) as usize;
            return payload.get(4usize.checked_add(offset)?..).map(<[u8]>::to_vec);
        }
        at = end;
    }
    None
}
