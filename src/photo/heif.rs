//! HEIC/HEIF (HEVC) and AVIF (AV1) through libheif, loaded at run time.
//!
//! clipdex builds without any system library: libheif (Debian's `libheif1`, Homebrew's
//! `libheif`) is opened with `libloading` the first time a HEIF file is met, and where it is
//! missing such a file is a recorded failure that names the package to install, while every
//! other photo decodes as before. Only libheif's stable C API of 1.x is used, as a Python user
//! of `pillow-heif` gets it: the primary image (bursts and multi-image files: the primary one,
//! grids assembled by libheif), decoded to interleaved 8-bit RGB (libheif reduces 10 and 12-bit
//! samples and drops alpha), with the container's `irot`/`imir` applied by libheif — so EXIF
//! orientation is *not* applied again. The size is read from the parsed header and checked
//! against the pixel limit and the decode budget before anything is decoded.

use std::ffi::{CStr, c_char, c_int, c_void};
use std::sync::OnceLock;

use crate::error::ImageProblem;

/// What libheif reports from every call (`struct heif_error`).
#[repr(C)]
#[derive(Clone, Copy)]
struct HeifError {
    code: c_int,
    subcode: c_int,
    message: *const c_char,
}

/// Opaque libheif objects.
type Ctx = c_void;
type Handle = c_void;
type Img = c_void;

const COLORSPACE_YCBCR: c_int = 0;
const COLORSPACE_RGB: c_int = 1;
const CHROMA_420: c_int = 1;
const CHROMA_INTERLEAVED_RGB: c_int = 10;
const CHANNEL_Y: c_int = 0;
const CHANNEL_CB: c_int = 1;
const CHANNEL_CR: c_int = 2;
const CHANNEL_INTERLEAVED: c_int = 10;

/// The head of `struct heif_color_profile_nclx`, as far as clipdex reads it (the matrix and
/// the range; the fields before them fix the layout).
#[repr(C)]
#[allow(dead_code)]
struct Nclx {
    version: u8,
    color_primaries: c_int,
    transfer_characteristics: c_int,
    matrix_coefficients: c_int,
    full_range_flag: u8,
}

/// The libheif functions clipdex calls, resolved once.
struct Api {
    _lib: libloading::Library,
    context_alloc: unsafe extern "C" fn() -> *mut Ctx,
    context_free: unsafe extern "C" fn(*mut Ctx),
    set_max_size: unsafe extern "C" fn(*mut Ctx, c_int),
    read_from_memory: unsafe extern "C" fn(*mut Ctx, *const c_void, usize, *const c_void) -> HeifError,
    primary_handle: unsafe extern "C" fn(*mut Ctx, *mut *mut Handle) -> HeifError,
    handle_release: unsafe extern "C" fn(*const Handle),
    handle_width: unsafe extern "C" fn(*const Handle) -> c_int,
    handle_height: unsafe extern "C" fn(*const Handle) -> c_int,
    luma_bits: unsafe extern "C" fn(*const Handle) -> c_int,
    metadata_count: unsafe extern "C" fn(*const Handle, *const c_char) -> c_int,
    metadata_ids: unsafe extern "C" fn(*const Handle, *const c_char, *mut u32, c_int) -> c_int,
    metadata_size: unsafe extern "C" fn(*const Handle, u32) -> usize,
    metadata: unsafe extern "C" fn(*const Handle, u32, *mut c_void) -> HeifError,
    decode: unsafe extern "C" fn(*const Handle, *mut *mut Img, c_int, c_int, *const c_void) -> HeifError,
    image_release: unsafe extern "C" fn(*const Img),
    image_width: unsafe extern "C" fn(*const Img, c_int) -> c_int,
    image_height: unsafe extern "C" fn(*const Img, c_int) -> c_int,
    plane: unsafe extern "C" fn(*const Img, c_int, *mut c_int) -> *const u8,
    image_colorspace: unsafe extern "C" fn(*const Img) -> c_int,
    image_chroma: unsafe extern "C" fn(*const Img) -> c_int,
    image_bits: unsafe extern "C" fn(*const Img, c_int) -> c_int,
    handle_nclx: unsafe extern "C" fn(*const Handle, *mut *mut Nclx) -> HeifError,
    nclx_free: unsafe extern "C" fn(*mut Nclx),
}

/// The file names libheif's shared library has on Linux, macOS and Windows.
const LIBRARY_NAMES: &[&str] = &[
    "libheif.so.1",
    "libheif.so",
    "libheif.1.dylib",
    "libheif.dylib",
    "/opt/homebrew/lib/libheif.1.dylib",
    "/usr/local/lib/libheif.1.dylib",
    "heif.dll",
    "libheif.dll",
];

/// What to tell a user whose machine has no libheif.
const INSTALL_HINT: &str = "HEIC/HEIF and AVIF need libheif, which is not installed here: install it \
    (`apt install libheif1`, `dnf install libheif`, `brew install libheif`) and index again";

fn api() -> Result<&'static Api, ImageProblem> {
    static API: OnceLock<Result<Api, String>> = OnceLock::new();
    API.get_or_init(load).as_ref().map_err(|reason| ImageProblem::Unsupported(reason.clone()))
}

/// The failure of a HEIF file on a machine without a usable libheif: it names what to install.
pub fn missing() -> ImageProblem {
    match api() {
        Err(problem) => problem,
        Ok(_) => ImageProblem::Unsupported(INSTALL_HINT.into()),
    }
}

/// Whether libheif could be loaded on this machine (tests and `doctor`-style checks).
pub fn available() -> bool {
    api().is_ok()
}

fn load() -> Result<Api, String> {
    // `CLIPDEX_LIBHEIF` names the library file to use instead of searching the usual names (a
    // libheif of one's own build; tests use it to see a machine without one).
    let chosen = std::env::var_os("CLIPDEX_LIBHEIF");
    let names: Vec<std::ffi::OsString> = match chosen {
        Some(path) => vec![path],
        None => LIBRARY_NAMES.iter().map(|name| std::ffi::OsString::from(*name)).collect(),
    };
    let lib = names
        .iter()
        // SAFETY: loading libheif runs its initialisers, which only register its codecs.
        .find_map(|name| unsafe { libloading::Library::new(name.as_os_str()) }.ok())
        .ok_or_else(|| INSTALL_HINT.to_string())?;
    // SAFETY: each symbol is looked up with the signature of libheif 1.x's C API (heif.h), which
    // has kept these functions unchanged since 1.4.
    unsafe {
        macro_rules! sym {
            ($name:literal) => {
                *lib.get($name)
                    .map_err(|e| format!("libheif was found but lacks {} ({e}): install libheif 1.10 or newer (`apt install libheif1`, `brew install libheif`)", $name))?
            };
        }
        // Since 1.13 libheif wants heif_init before use (it loads plugins); older ones lack it.
        if let Ok(init) = lib.get::<unsafe extern "C" fn(*const c_void) -> HeifError>("heif_init") {
            let e = init(std::ptr::null());
            if e.code != 0 {
                return Err(format!("libheif failed to start: {}", message(&e)));
            }
        }
        Ok(Api {
            context_alloc: sym!("heif_context_alloc"),
            context_free: sym!("heif_context_free"),
            set_max_size: sym!("heif_context_set_maximum_image_size_limit"),
            read_from_memory: sym!("heif_context_read_from_memory_without_copy"),
            primary_handle: sym!("heif_context_get_primary_image_handle"),
            handle_release: sym!("heif_image_handle_release"),
            handle_width: sym!("heif_image_handle_get_width"),
            handle_height: sym!("heif_image_handle_get_height"),
            luma_bits: sym!("heif_image_handle_get_luma_bits_per_pixel"),
            metadata_count: sym!("heif_image_handle_get_number_of_metadata_blocks"),
            metadata_ids: sym!("heif_image_handle_get_list_of_metadata_block_IDs"),
            metadata_size: sym!("heif_image_handle_get_metadata_size"),
            metadata: sym!("heif_image_handle_get_metadata"),
            decode: sym!("heif_decode_image"),
            image_release: sym!("heif_image_release"),
            image_width: sym!("heif_image_get_width"),
            image_height: sym!("heif_image_get_height"),
            plane: sym!("heif_image_get_plane_readonly"),
            image_colorspace: sym!("heif_image_get_colorspace"),
            image_chroma: sym!("heif_image_get_chroma_format"),
            image_bits: sym!("heif_image_get_bits_per_pixel_range"),
            handle_nclx: sym!("heif_image_handle_get_nclx_color_profile"),
            nclx_free: sym!("heif_nclx_color_profile_free"),
            _lib: lib,
        })
    }
}

/// libheif's message for an error.
fn message(e: &HeifError) -> String {
    if e.message.is_null() {
        return format!("libheif error {}.{}", e.code, e.subcode);
    }
    // SAFETY: libheif's messages are static NUL-terminated strings or live as long as the
    // context, which outlives this call.
    unsafe { CStr::from_ptr(e.message) }.to_string_lossy().trim().to_string()
}

/// libheif's verdict as clipdex's, naming the format (`kind`, from [`sniff`]).
fn check(kind: &str, e: HeifError) -> Result<(), ImageProblem> {
    if e.code == 0 { Ok(()) } else { Err(ImageProblem::Corrupt(format!("{kind}: {}", message(&e)))) }
}

/// Whether `bytes` (the first dozen or more of a file) open an ISO-BMFF image file whose
/// brand libheif reads: HEIC/HEIF (HEVC) or AVIF (AV1). Returns the format's name.
pub fn sniff(bytes: &[u8]) -> Option<&'static str> {
    if bytes.len() < 12 || &bytes[4..8] != b"ftyp" {
        return None;
    }
    let box_len = u32::from_be_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]) as usize;
    let brands = bytes.get(8..box_len.clamp(12, bytes.len())).unwrap_or(&bytes[8..12]);
    // The major brand, then the compatible brands (every 4 bytes after the minor version).
    let major = &brands[..4];
    let compatible = brands.get(8..).unwrap_or_default().chunks_exact(4);
    let name = |brand: &[u8]| match brand {
        b"avif" | b"avis" => Some("AVIF"),
        b"heic" | b"heix" | b"hevc" | b"hevx" | b"heim" | b"heis" | b"mif1" | b"msf1" => Some("HEIC/HEIF"),
        _ => None,
    };
    // `mif1` with `avif` among the compatible brands is an AVIF file.
    let avif = std::iter::once(major).chain(compatible.clone()).any(|b| b == b"avif" || b == b"avis");
    if avif { Some("AVIF") } else { name(major).or_else(|| compatible.clone().find_map(name)) }
}

/// A parsed HEIF file and its primary image, released on drop.
pub struct HeifFile<'a> {
    api: &'static Api,
    ctx: *mut Ctx,
    handle: *mut Handle,
    /// `HEIC/HEIF` or `AVIF`, for messages.
    kind: &'static str,
    /// An AVIF whose AV1 stream is 4:2:0 (its `av1C` says so): its colour is converted here.
    avif_420: bool,
    /// libheif reads the bytes in place: they must outlive the context.
    _bytes: std::marker::PhantomData<&'a [u8]>,
}

impl Drop for HeifFile<'_> {
    fn drop(&mut self) {
        // SAFETY: both were allocated by this libheif and are released once, handle first.
        unsafe {
            if !self.handle.is_null() {
                (self.api.handle_release)(self.handle);
            }
            (self.api.context_free)(self.ctx);
        }
    }
}

/// The HEIF file at the start of `bytes`, without a file appended to it: a Motion Photo's MP4
/// follows the HEIC's boxes with an `ftyp` box of its own, which libheif would take for the
/// file's (and refuse its brands). Top-level boxes are walked by their sizes; a size that does
/// not fit leaves the bytes as they are, for libheif to judge.
fn without_appended_file(bytes: &[u8]) -> &[u8] {
    let mut at = 0usize;
    while at + 8 <= bytes.len() {
        let size = u32::from_be_bytes([bytes[at], bytes[at + 1], bytes[at + 2], bytes[at + 3]]) as u64;
        if at > 0 && &bytes[at + 4..at + 8] == b"ftyp" {
            return &bytes[..at];
        }
        let size = match size {
            0 => return bytes,
            1 => match bytes.get(at + 8..at + 16) {
                Some(b) => u64::from_be_bytes(b.try_into().unwrap_or_default()),
                None => return bytes,
            },
            s => s,
        };
        if size < 8 {
            return bytes;
        }
        match usize::try_from(size).ok().and_then(|s| at.checked_add(s)) {
            Some(next) => at = next,
            None => return bytes,
        }
    }
    bytes
}

impl<'a> HeifFile<'a> {
    /// Parses the boxes of a HEIF file (nothing is decoded) and finds its primary image. No
    /// side may exceed `max_side` (libheif's own guard, applied while parsing).
    pub fn parse(bytes: &'a [u8], max_side: u64) -> Result<Self, ImageProblem> {
        let bytes = without_appended_file(bytes);
        let api = api()?;
        // SAFETY: a fresh context is used only through this value, which frees it.
        let ctx = unsafe { (api.context_alloc)() };
        if ctx.is_null() {
            return Err(ImageProblem::Io("libheif could not allocate a context".into()));
        }
        let kind = sniff(bytes).unwrap_or("HEIF");
        let mut file = HeifFile {
            api,
            ctx,
            handle: std::ptr::null_mut(),
            kind,
            avif_420: avif_420(bytes),
            _bytes: std::marker::PhantomData,
        };
        // SAFETY: `ctx` is live; `bytes` outlives `file` (the lifetime 'a); a null options pointer
        // means libheif's defaults.
        unsafe {
            (api.set_max_size)(ctx, max_side.clamp(1, i32::MAX as u64) as c_int);
            check(kind, (api.read_from_memory)(ctx, bytes.as_ptr().cast(), bytes.len(), std::ptr::null()))?;
            check(kind, (api.primary_handle)(ctx, &mut file.handle))?;
        }
        if file.handle.is_null() {
            return Err(ImageProblem::Corrupt(format!("{kind}: the file has no primary image")));
        }
        Ok(file)
    }

    /// The primary image's size as its header declares it (grids: the whole grid).
    pub fn dimensions(&self) -> (u32, u32) {
        // SAFETY: the handle is live while `self` is.
        let (w, h) = unsafe { ((self.api.handle_width)(self.handle), (self.api.handle_height)(self.handle)) };
        (w.max(0) as u32, h.max(0) as u32)
    }

    /// Bits per luma sample (8, 10 or 12; unknown: 8).
    pub fn bit_depth(&self) -> u32 {
        // SAFETY: as above.
        let bits = unsafe { (self.api.luma_bits)(self.handle) };
        if bits > 0 { bits as u32 } else { 8 }
    }

    /// The primary image's EXIF block (the TIFF structure, without the 4-byte offset the Exif
    /// item starts with), when there is one.
    pub fn exif(&self) -> Option<Vec<u8>> {
        let filter = c"Exif".as_ptr();
        // SAFETY: the handle is live; the ID array is sized to the count libheif reported and
        // the metadata buffer to the size it reported for that ID.
        unsafe {
            let count = (self.api.metadata_count)(self.handle, filter);
            if count <= 0 {
                return None;
            }
            let mut ids = vec![0u32; count.min(64) as usize];
            let n = (self.api.metadata_ids)(self.handle, filter, ids.as_mut_ptr(), ids.len() as c_int);
            let id = *ids.get(..n.max(0) as usize)?.first()?;
            let size = (self.api.metadata_size)(self.handle, id);
            // An EXIF block is at most 64 KB in JPEG; allow a generous margin, no more.
            if !(4..=(16 << 20)).contains(&size) {
                return None;
            }
            let mut data = vec![0u8; size];
            if (self.api.metadata)(self.handle, id, data.as_mut_ptr().cast()).code != 0 {
                return None;
            }
            let skip = u32::from_be_bytes([data[0], data[1], data[2], data[3]]) as usize + 4;
            data.get(skip..).map(<[u8]>::to_vec)
        }
    }

    /// Decodes the primary image to upright 8-bit RGB: libheif assembles grids, applies
    /// `irot`/`imir`, reduces deeper samples to 8 bits and drops alpha.
    ///
    /// The reference reads AVIF with libavif, which upsamples 4:2:0 chroma bilinearly, where
    /// libheif (1.15) repeats each chroma sample: on edges the two differ by up to 34/255. So a
    /// 4:2:0 AVIF is decoded to its YCbCr planes and converted here as libavif does; HEIC, which
    /// the reference reads with libheif itself, keeps libheif's conversion. A 10 or 12-bit AVIF
    /// is reduced to 8 bits before its conversion, as libavif does it.
    pub fn decode_rgb(&self) -> Result<image::RgbImage, ImageProblem> {
        if self.avif_420 {
            let mut img: *mut Img = std::ptr::null_mut();
            // SAFETY: as below; the image is released on every path.
            unsafe {
                check(
                    self.kind,
                    (self.api.decode)(self.handle, &mut img, COLORSPACE_YCBCR, CHROMA_420, std::ptr::null()),
                )?;
                if img.is_null() {
                    return Err(ImageProblem::Corrupt(format!("{}: libheif returned no image", self.kind)));
                }
                let rgb = self.convert_420(img);
                (self.api.image_release)(img);
                if let Some(rgb) = rgb? {
                    return Ok(rgb);
                }
            }
        }
        let mut img: *mut Img = std::ptr::null_mut();
        // SAFETY: the handle is live; a null options pointer means libheif's defaults (which apply
        // the container's transformations); the image is released below on every path.
        unsafe {
            check(
                self.kind,
                (self.api.decode)(self.handle, &mut img, COLORSPACE_RGB, CHROMA_INTERLEAVED_RGB, std::ptr::null()),
            )?;
            if img.is_null() {
                return Err(ImageProblem::Corrupt(format!("{}: libheif returned no image", self.kind)));
            }
            let rgb = self.copy_rgb(img);
            (self.api.image_release)(img);
            rgb
        }
    }

    /// Converts a decoded 4:2:0 YCbCr image to RGB with bilinear chroma upsampling (libyuv's
    /// 9:3:3:1 weights, as libavif uses them) and the matrix and range of its `nclx` profile;
    /// `None` for what this conversion does not cover (other matrices, no profile), which
    /// libheif then converts.
    ///
    /// # Safety
    /// `img` must be a live image decoded by this libheif.
    unsafe fn convert_420(&self, img: *const Img) -> Result<Option<image::RgbImage>, ImageProblem> {
        // SAFETY: per the caller's contract; each plane holds `height` rows of `stride` bytes,
        // with at least `width` samples of `bits` (one byte to 8 bits, else two, native order).
        unsafe {
            let api = self.api;
            if (api.image_colorspace)(img) != COLORSPACE_YCBCR || (api.image_chroma)(img) != CHROMA_420 {
                return Ok(None);
            }
            // The file's `colr` box (libheif 1.15 leaves the decoded image without it).
            let mut nclx: *mut Nclx = std::ptr::null_mut();
            if (api.handle_nclx)(self.handle, &mut nclx).code != 0 || nclx.is_null() {
                return Ok(None);
            }
            let (matrix, full) = ((*nclx).matrix_coefficients, (*nclx).full_range_flag != 0);
            (api.nclx_free)(nclx);
            let (kr, kb) = match matrix {
                1 => (0.2126, 0.0722),
                2 | 5 | 6 => (0.299, 0.114),
                9 => (0.2627, 0.0593),
                _ => return Ok(None),
            };
            let bits = (api.image_bits)(img, CHANNEL_Y);
            let plane = |channel: c_int| -> Option<(Vec<u16>, usize, usize)> {
                let (w, h) = ((api.image_width)(img, channel), (api.image_height)(img, channel));
                let mut stride: c_int = 0;
                let data = (api.plane)(img, channel, &mut stride);
                let wide = bits > 8;
                let row = if wide { 2 * w as i64 } else { w as i64 };
                if data.is_null()
                    || w <= 0
                    || h <= 0
                    || i64::from(stride) < row
                    || (api.image_bits)(img, channel) != bits
                {
                    return None;
                }
                let (w, h, stride) = (w as usize, h as usize, stride as usize);
                let mut samples = Vec::with_capacity(w * h);
                for y in 0..h {
                    let line = std::slice::from_raw_parts(data.add(y * stride), row as usize);
                    if wide {
                        samples.extend(line.chunks_exact(2).map(|b| u16::from_ne_bytes([b[0], b[1]])));
                    } else {
                        samples.extend(line.iter().map(|&b| u16::from(b)));
                    }
                }
                Some((samples, w, h))
            };
            if !(8..=16).contains(&bits) {
                return Ok(None);
            }
            let (Some(luma), Some(cb), Some(cr)) = (plane(CHANNEL_Y), plane(CHANNEL_CB), plane(CHANNEL_CR)) else {
                return Ok(None);
            };
            let (w, h) = (luma.1, luma.2);
            if cb.1 != w.div_ceil(2) || cb.2 != h.div_ceil(2) || (cr.1, cr.2) != (cb.1, cb.2) {
                return Ok(None);
            }
            Ok(Some(ycbcr_420_to_rgb(&luma.0, &cb.0, &cr.0, w, h, bits as u32, full, kr, kb)))
        }
    }

    /// Copies an interleaved RGB plane out of a decoded libheif image.
    ///
    /// # Safety
    /// `img` must be a live image decoded to interleaved RGB by this libheif.
    unsafe fn copy_rgb(&self, img: *const Img) -> Result<image::RgbImage, ImageProblem> {
        let mut stride: c_int = 0;
        // SAFETY: per the caller's contract; libheif's plane holds `height` rows of `stride`
        // bytes, each with at least `width * 3` bytes of pixels.
        unsafe {
            let w = (self.api.image_width)(img, CHANNEL_INTERLEAVED);
            let h = (self.api.image_height)(img, CHANNEL_INTERLEAVED);
            let plane = (self.api.plane)(img, CHANNEL_INTERLEAVED, &mut stride);
            if plane.is_null() || w <= 0 || h <= 0 || (stride as i64) < i64::from(w) * 3 {
                return Err(ImageProblem::Corrupt(format!("{}: libheif returned no RGB pixels", self.kind)));
            }
            let (w, h, stride) = (w as usize, h as usize, stride as usize);
            let mut pixels = Vec::with_capacity(w * h * 3);
            for y in 0..h {
                pixels.extend_from_slice(std::slice::from_raw_parts(plane.add(y * stride), w * 3));
            }
            image::RgbImage::from_raw(w as u32, h as u32, pixels)
                .ok_or_else(|| ImageProblem::Corrupt(format!("{}: libheif returned a short plane", self.kind)))
        }
    }
}

/// Whether an AVIF's AV1 configuration (`av1C`) declares 4:2:0 colour (not monochrome).
fn avif_420(bytes: &[u8]) -> bool {
    if sniff(bytes) != Some("AVIF") {
        return false;
    }
    let Some(at) = bytes.windows(4).position(|w| w == b"av1C") else { return false };
    // After the marker/version and profile/level bytes: tier, high bit depth, twelve bit,
    // monochrome, subsampling x, subsampling y, chroma sample position (2 bits).
    bytes.get(at + 6).is_some_and(|&b| b & 0b0001_1100 == 0b0000_1100)
}

/// 4:2:0 YCbCr samples of `bits` (planes of `w` x `h` and `ceil(w/2)` x `ceil(h/2)` samples)
/// to 8-bit RGB as libavif converts them (the reference, with libyuv as Pillow's wheel builds
/// it): samples deeper than 8 bits first shifted down to 8, truncating (libyuv's
/// `Convert16To8Plane`); chroma then upsampled with weights 9:3:3:1 (the nearest chroma
/// sample, its horizontal and vertical neighbours on the side of the pixel, the diagonal one;
/// rounded to a sample); then the matrix with luma weights `kr`, `kb`, in full or limited
/// range. (Converting a 10-bit image at its full depth and rounding only at the end is closer
/// to the encoded colour, but lands up to 3/255 away from the reference.) Public for the
/// parity tests, which feed it the planes another AV1 decoder gives.
#[allow(clippy::too_many_arguments)]
pub fn ycbcr_420_to_rgb(
    luma: &[u16],
    cb: &[u16],
    cr: &[u16],
    w: usize,
    h: usize,
    bits: u32,
    full: bool,
    kr: f64,
    kb: f64,
) -> image::RgbImage {
    let (cw, ch) = (w.div_ceil(2), h.div_ceil(2));
    if !(8..=16).contains(&bits) || luma.len() < w * h || cb.len() < cw * ch || cr.len() < cw * ch {
        return image::RgbImage::default();
    }
    let shift = bits - 8;
    let reduce = |plane: &[u16]| -> Vec<u16> { plane.iter().map(|&v| (v >> shift).min(255)).collect() };
    let (luma, cb, cr) = (reduce(luma), reduce(cb), reduce(cr));
    ycbcr8_420_to_rgb(&luma, &cb, &cr, w, h, full, kr, kb)
}

/// [`ycbcr_420_to_rgb`] on 8-bit samples.
#[allow(clippy::too_many_arguments)]
fn ycbcr8_420_to_rgb(
    luma: &[u16],
    cb: &[u16],
    cr: &[u16],
    w: usize,
    h: usize,
    full: bool,
    kr: f64,
    kb: f64,
) -> image::RgbImage {
    let (cw, ch) = (w.div_ceil(2), h.div_ceil(2));
    let (max, half) = (255.0, 128.0);
    let kg = 1.0 - kr - kb;
    let (cr_r, cb_b) = (2.0 * (1.0 - kr), 2.0 * (1.0 - kb));
    let (cb_g, cr_g) = (2.0 * (1.0 - kb) * kb / kg, 2.0 * (1.0 - kr) * kr / kg);
    let up = |plane: &[u16], x: usize, y: usize| -> f64 {
        let (cx, cy) = (x / 2, y / 2);
        let nx = if x.is_multiple_of(2) { cx.saturating_sub(1) } else { (cx + 1).min(cw - 1) };
        let ny = if y.is_multiple_of(2) { cy.saturating_sub(1) } else { (cy + 1).min(ch - 1) };
        let at = |x: usize, y: usize| u32::from(plane[y * cw + x]);
        f64::from((9 * at(cx, cy) + 3 * at(nx, cy) + 3 * at(cx, ny) + at(nx, ny) + 8) >> 4)
    };
    let to_8 = |v: f64| (v.clamp(0.0, 1.0) * 255.0).round() as u8;
    let mut rgb = Vec::with_capacity(w * h * 3);
    for y in 0..h {
        for x in 0..w {
            let (yy, u, v) = (f64::from(luma[y * w + x]), up(cb, x, y), up(cr, x, y));
            let (yy, u, v) = if full {
                (yy / max, (u - half) / max, (v - half) / max)
            } else {
                ((yy - 16.0) / 219.0, (u - 128.0) / 224.0, (v - 128.0) / 224.0)
            };
            rgb.extend_from_slice(&[to_8(yy + cr_r * v), to_8(yy - cb_g * u - cr_g * v), to_8(yy + cb_b * u)]);
        }
    }
    image::RgbImage::from_raw(w as u32, h as u32, rgb).unwrap_or_default()
}
