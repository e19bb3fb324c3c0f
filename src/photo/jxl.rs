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
    bytes.starts_with(&[0xFF, 0x0A]) || bytes.starts_with(b"\0\0\0\x0cJXL \r\n\x87\n")
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
