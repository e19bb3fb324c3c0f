//! Reading photos: every format a photo library holds, turned into an upright 8-bit RGB image.
//!
//! The order matters and mirrors what the reference pipeline (PIL + `ImageOps.exif_transpose` +
//! `convert("RGB")`) sees: first frame only (GIF), EXIF orientation applied, alpha dropped,
//! grayscale and palette expanded, CMYK converted, and 16-bit samples *scaled* to 8 bits
//! (`round(v / 257)`), not clipped.
//!
//! Memory is bounded for every input: a file is sniffed from its first bytes and its header
//! read before it is read whole (a multi-GB file that is no image, or far larger than the
//! pixels it declares, is never loaded); the pixel count is checked from the header before any
//! decoding, so a decompression bomb costs nothing; and decodes draw the memory they will
//! need from one process-wide budget ([`DECODE_BUDGET_BYTES`]), so parallel decodes of large
//! photos wait for each other instead of adding up, and a photo that alone needs more is
//! refused.

use std::io::Cursor;
use std::path::Path;

use image::{DynamicImage, ImageDecoder, ImageReader, RgbImage};

use crate::error::{Error, ImageProblem, Result};

pub mod companions;
pub mod heif;
pub mod jxl;
pub mod live_identifier;
pub mod motion;
pub mod raw;

/// Default upper bound on decoded pixels (the same order as PIL's bomb guard, enough for any
/// camera and most panoramas).
pub const DEFAULT_MAX_PIXELS: u64 = 178_956_970;

/// The memory all decodes in flight may take together (decoded samples, the RGB conversion
/// and a rotated copy). A 100 MP RGB photo needs about 300 MB; JPEGs bound for a model decode
/// at a reduced scale and need far less.
pub const DECODE_BUDGET_BYTES: u64 = 640 << 20;

/// The longest side of the pixels models look at when they are handed a photo's pixels
/// rather than a reduced copy of their own (BLIP's captions, questions and matching, the
/// perceptual hashes of `duplicates`): a larger photo is reduced to it while it is decoded
/// ([`decode_photo_within`]), since the models see 224 to 384 px and a 144 MP photo held at
/// full size would cost 432 MB per request.
pub const WORKING_SIDE: u32 = 2048;

/// Most scans a JPEG may have. Real encoders write one (baseline) to a dozen or two
/// (progressive, optimised); a file with thousands makes the decoder walk every block of the
/// image thousands of times (a "scan bomb": seconds to minutes of CPU from a few hundred KB).
pub const MAX_JPEG_SCANS: usize = 200;

/// Largest camera RAW file read (a 100 MP medium-format RAW is about 200 MB). A RAW holds
/// sensor data far larger than the preview it is indexed by, so the check of a file's size
/// against its declared pixels cannot apply; this bound takes its place.
pub const RAW_MAX_FILE_BYTES: u64 = 512 << 20;

/// Slack allowed beyond the largest encoding of the declared pixels (metadata, embedded
/// previews, ICC profiles).
const FILE_SLACK_BYTES: u64 = 32 << 20;

/// The process-wide decoding budget: bytes in use, and a condition to wait on.
static BUDGET: (std::sync::Mutex<u64>, std::sync::Condvar) = (std::sync::Mutex::new(0), std::sync::Condvar::new());

/// Memory held from [`BUDGET`] while one decode runs.
struct BudgetPermit(u64);

impl BudgetPermit {
    /// Waits until `bytes` fit in the budget beside the decodes in flight.
    fn acquire(bytes: u64) -> Self {
        let (lock, ready) = &BUDGET;
        let mut used = lock.lock().unwrap_or_else(|e| e.into_inner());
        while *used + bytes > DECODE_BUDGET_BYTES {
            used = ready.wait(used).unwrap_or_else(|e| e.into_inner());
        }
        *used += bytes;
        BudgetPermit(bytes)
    }
}

impl Drop for BudgetPermit {
    fn drop(&mut self) {
        let (lock, ready) = &BUDGET;
        let mut used = lock.lock().unwrap_or_else(|e| e.into_inner());
        *used -= self.0;
        ready.notify_all();
    }
}

/// Limits and shortcuts applied while decoding.
#[derive(Debug, Clone, Copy)]
pub struct DecodeOptions {
    /// Images with more pixels than this are refused with [`ImageProblem::TooLarge`].
    pub max_pixels: u64,
    /// When set, JPEGs are decoded at the smallest DCT scale (1/8, 1/4, 3/8, ...) that keeps
    /// at least this many pixels on the short side: a 12 MP photo bound for a 224 px model
    /// decodes at 1/8 in a fraction of the time. `None` decodes at full size (exact parity
    /// with the reference).
    pub min_side: Option<u32>,
}

impl Default for DecodeOptions {
    fn default() -> Self {
        DecodeOptions { max_pixels: DEFAULT_MAX_PIXELS, min_side: None }
    }
}

/// A decoded photo: upright RGB pixels (possibly reduced by [`DecodeOptions::min_side`]) and
/// the upright size of the full image.
#[derive(Debug, Clone)]
pub struct Photo {
    /// Upright 8-bit RGB pixels.
    pub image: RgbImage,
    /// Full upright width.
    pub width: u32,
    /// Full upright height.
    pub height: u32,
}

/// Metadata from a photo's EXIF block.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ExifInfo {
    /// Date taken (`DateTimeOriginal`, else `DateTime`), seconds since the epoch, the camera's
    /// local time read as UTC.
    pub taken: Option<i64>,
    /// `Make Model`.
    pub camera: Option<String>,
    /// Latitude and longitude in degrees.
    pub gps: Option<(f64, f64)>,
    /// `LensMake LensModel` (the EXIF 2.3 tags), when the camera records its lens.
    pub lens: Option<String>,
}

/// Reads and decodes the image at `path`.
pub fn open_rgb(path: &Path, options: &DecodeOptions) -> Result<RgbImage> {
    let bytes = read_image_file(path, options.max_pixels).map_err(|problem| Error::image(path, problem))?;
    decode_rgb(&bytes, options).map_err(|problem| Error::image(path, problem))
}

/// Opens a file to read it without waiting: a FIFO (or a device) put where a photo or a movie
/// is expected would otherwise block the open until a writer came. Anything but a regular file
/// is an error. Reads of a regular file are not affected by the flag.
pub fn open_regular_file(path: &Path) -> std::io::Result<std::fs::File> {
    let mut options = std::fs::OpenOptions::new();
    options.read(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::custom_flags(&mut options, libc::O_NONBLOCK);
    let file = options.open(path)?;
    if !file.metadata()?.is_file() {
        return Err(std::io::Error::other("not a regular file"));
    }
    Ok(file)
}

/// Reads an image file whole, once its first bytes say it is an image and its header declares
/// a size within `max_pixels` that the file's length is plausible for. What fails here was
/// never loaded: a 3 GB file of zeros named `.jpg` costs a few kilobytes.
pub fn read_image_file(path: &Path, max_pixels: u64) -> Result<Vec<u8>, ImageProblem> {
    use std::io::Read;
    let file = std::fs::File::open(path).map_err(|e| io_problem(&e))?;
    let size = file.metadata().map_err(|e| io_problem(&e))?.len();
    if size == 0 {
        return Err(ImageProblem::Empty);
    }
    let mut head = Vec::with_capacity(64);
    (&file).take(64).read_to_end(&mut head).map_err(|e| io_problem(&e))?;
    if heif::sniff(&head).is_some() {
        if !heif::available() {
            return Err(heif::missing());
        }
        return read_then_measure(file, size, max_pixels, |bytes| {
            Ok(heif::HeifFile::parse(bytes, max_pixels)?.dimensions())
        });
    }
    if jxl::sniff(&head) {
        return read_then_measure(file, size, max_pixels, jxl::dimensions);
    }
    if raw::sniff(&head).is_some() {
        // RAF, CR3, ORF, RW2: a RAW by its first bytes alone.
        return read_raw_file(file, size, max_pixels, None);
    }
    // A TIFF may be a RAW (DNG, NEF, CR2, ...), which only its directories tell: one whose
    // header the TIFF decoder refuses, or whose file is far larger than its first image, is
    // looked at as a RAW before it is refused.
    let tiff = head.starts_with(b"II*\0") || head.starts_with(b"MM\0*");
    if image::guess_format(&head).is_err() {
        return Err(unrecognised(&head));
    }
    let header = std::fs::File::open(path).map_err(|e| io_problem(&e))?;
    let reader = ImageReader::new(std::io::BufReader::new(header))
        .with_guessed_format()
        .map_err(|e| ImageProblem::Io(e.to_string()))?;
    let (width, height) = match reader.into_dimensions() {
        Ok(size) => size,
        Err(e) if tiff => return read_raw_file(file, size, max_pixels, Some(decode_problem(e))),
        Err(e) => return Err(decode_problem(e)),
    };
    let pixels = u64::from(width) * u64::from(height);
    if pixels > max_pixels {
        return Err(ImageProblem::TooLarge { width, height, limit: max_pixels });
    }
    // 16-bit RGBA uncompressed is the largest encoding of a pixel any supported format has.
    if size > pixels.saturating_mul(8).saturating_add(FILE_SLACK_BYTES) {
        let oversized = ImageProblem::Oversized { size_mb: size >> 20, width, height };
        return if tiff { read_raw_file(file, size, max_pixels, Some(oversized)) } else { Err(oversized) };
    }
    let mut bytes = Vec::with_capacity(size as usize);
    let mut file = file;
    std::io::Seek::rewind(&mut file).map_err(|e| io_problem(&e))?;
    // Read no more than was measured: a file growing meanwhile cannot grow the buffer.
    file.take(size).read_to_end(&mut bytes).map_err(|e| io_problem(&e))?;
    Ok(bytes)
}

/// Reads a camera RAW file whole (up to [`RAW_MAX_FILE_BYTES`]) and checks the size of the
/// preview it will be indexed by. A file that turns out to be no RAW fails with `otherwise`
/// (the problem the ordinary path found), else as no image.
fn read_raw_file(
    mut file: std::fs::File,
    size: u64,
    max_pixels: u64,
    otherwise: Option<ImageProblem>,
) -> Result<Vec<u8>, ImageProblem> {
    use std::io::Read;
    if size > RAW_MAX_FILE_BYTES {
        return Err(otherwise.unwrap_or(ImageProblem::Corrupt(format!(
            "a RAW file of {} MB, larger than any camera writes (the limit is {} MB)",
            size >> 20,
            RAW_MAX_FILE_BYTES >> 20
        ))));
    }
    let mut bytes = Vec::with_capacity(size as usize);
    std::io::Seek::rewind(&mut file).map_err(|e| io_problem(&e))?;
    file.take(size).read_to_end(&mut bytes).map_err(|e| io_problem(&e))?;
    let Some(kind) = raw::sniff(&bytes) else {
        return Err(otherwise.unwrap_or(ImageProblem::NotAnImage));
    };
    let preview = raw::find_preview(&bytes, kind)?.preview;
    let (width, height) = (preview.width, preview.height);
    if u64::from(width) * u64::from(height) > max_pixels {
        return Err(ImageProblem::TooLarge { width, height, limit: max_pixels });
    }
    Ok(bytes)
}

/// For indexing: a camera RAW whose embedded preview (decoded as `photo`) is smaller than
/// the model's input (`need` px on the short side) is refused, since its sensor data is not
/// decoded. Thumbnails, masks and the other uses take whatever preview there is.
pub fn check_raw_preview(bytes: &[u8], photo: &Photo, need: Option<u32>) -> Result<(), ImageProblem> {
    match (raw::sniff(bytes), need) {
        (Some(kind), Some(need)) if photo.width.min(photo.height) < need => Err(ImageProblem::Unsupported(format!(
            "{kind} whose largest embedded preview is {}x{}, smaller than the {need} px the model needs \
             (decoding the sensor data is not supported; export it as JPEG)",
            photo.width, photo.height
        ))),
        _ => Ok(()),
    }
}

/// Decodes a camera RAW file's largest embedded JPEG preview, turned upright by the RAW's own
/// orientation (RAF: by the preview's EXIF, where Fujifilm keeps it).
fn decode_raw(bytes: &[u8], kind: &'static str, options: &DecodeOptions) -> Result<Photo, ImageProblem> {
    let found = raw::find_preview(bytes, kind)?;
    let p = found.preview;
    if u64::from(p.width) * u64::from(p.height) > options.max_pixels {
        return Err(ImageProblem::TooLarge { width: p.width, height: p.height, limit: options.max_pixels });
    }
    let jpeg = &bytes[p.offset..p.offset + p.len];
    let Some(orientation) = found.orientation else {
        return decode_photo(jpeg, options);
    };
    use image::metadata::Orientation as O;
    let orientation = O::from_exif(orientation as u8).unwrap_or(O::NoTransforms);
    let swaps = matches!(orientation, O::Rotate90 | O::Rotate270 | O::Rotate90FlipH | O::Rotate270FlipH);
    let turns = swaps || orientation == O::Rotate180;
    let scans = jpeg_scans(jpeg);
    if scans > MAX_JPEG_SCANS {
        return Err(ImageProblem::Corrupt(format!(
            "a {kind} preview with {scans} scans (real ones have at most a few dozen; the limit is {MAX_JPEG_SCANS})"
        )));
    }
    let (rgb, _permit) = match decode_jpeg_libjpeg(jpeg, options.min_side, options.max_pixels, turns)? {
        Some(decoded) => decoded,
        None => return Err(ImageProblem::Unsupported(format!("{kind} with a CMYK preview"))),
    };
    let mut rgb = DynamicImage::ImageRgb8(rgb);
    rgb.apply_orientation(orientation);
    let (width, height) = if swaps { (p.height, p.width) } else { (p.width, p.height) };
    Ok(Photo { image: rgb.into_rgb8(), width, height })
}

/// Reads a file whose size is declared in boxes that may sit anywhere in it (HEIF, JPEG XL
/// containers) whole, once it is no larger than any encoding of `max_pixels`, then checks the
/// size `measure` finds in its header.
fn read_then_measure(
    file: std::fs::File,
    size: u64,
    max_pixels: u64,
    measure: impl Fn(&[u8]) -> Result<(u32, u32), ImageProblem>,
) -> Result<Vec<u8>, ImageProblem> {
    use std::io::Read;
    if size > max_pixels.saturating_mul(8).saturating_add(FILE_SLACK_BYTES) {
        return Err(ImageProblem::Corrupt(format!(
            "the file is {} MB, larger than any image within the pixel limit",
            size >> 20
        )));
    }
    let mut bytes = Vec::with_capacity(size as usize);
    let mut file = file;
    std::io::Seek::rewind(&mut file).map_err(|e| io_problem(&e))?;
    file.take(size).read_to_end(&mut bytes).map_err(|e| io_problem(&e))?;
    let (width, height) = measure(&bytes)?;
    let pixels = u64::from(width) * u64::from(height);
    if pixels > max_pixels {
        return Err(ImageProblem::TooLarge { width, height, limit: max_pixels });
    }
    if size > pixels.saturating_mul(8).saturating_add(FILE_SLACK_BYTES) {
        return Err(ImageProblem::Oversized { size_mb: size >> 20, width, height });
    }
    Ok(bytes)
}

/// Decodes the primary image of a HEIC/HEIF or AVIF file after checking its declared size
/// against the pixel limit and the decode budget. libheif applies the container's
/// `irot`/`imir`, so EXIF orientation is not applied again (as with `pillow-heif`, which
/// resets it).
fn decode_heif(bytes: &[u8], options: &DecodeOptions) -> Result<Photo, ImageProblem> {
    let file = heif::HeifFile::parse(bytes, options.max_pixels)?;
    let (width, height) = file.dimensions();
    let pixels = u64::from(width) * u64::from(height);
    if pixels > options.max_pixels {
        return Err(ImageProblem::TooLarge { width, height, limit: options.max_pixels });
    }
    // Decoded YCbCr planes (two bytes a sample past 8 bits), libheif's RGB conversion, its
    // rotated copy, and ours.
    let sample = if file.bit_depth() > 8 { 2 } else { 1 };
    let _permit = reserve(width, height, pixels * (3 * sample + 9))?;
    let image = file.decode_rgb()?;
    let (width, height) = image.dimensions();
    Ok(Photo { image, width, height })
}

/// Decodes a JPEG XL file's first frame after checking the size its header declares; the
/// codestream's orientation is applied by the decoder.
fn decode_jxl(bytes: &[u8], options: &DecodeOptions) -> Result<Photo, ImageProblem> {
    let (width, height) = jxl::dimensions(bytes)?;
    let pixels = u64::from(width) * u64::from(height);
    if pixels > options.max_pixels {
        return Err(ImageProblem::TooLarge { width, height, limit: options.max_pixels });
    }
    // jxl-oxide renders into 32-bit float planes (colour, and the XYB or YCbCr ones they come
    // from), then 8-bit RGB.
    let needed = pixels * (6 * 4 + 3);
    let _permit = reserve(width, height, needed)?;
    // The decoder's own cap on what it allocates: generous (group buffers, small images), bounded.
    let image = jxl::JxlFile::parse(bytes, needed.saturating_mul(4).max(64 << 20))?.decode_rgb()?;
    let (width, height) = image.dimensions();
    Ok(Photo { image, width, height })
}

/// The memory decoding a `width` x `height` image of `color` takes at its peak: the decoded
/// samples, the RGB conversion (and the 16-bit intermediate it goes through), and a rotated
/// copy when the orientation turns it.
fn decode_bytes(width: u32, height: u32, color: image::ColorType, turns: bool) -> u64 {
    let pixels = u64::from(width) * u64::from(height);
    let decoded = pixels * u64::from(color.bytes_per_pixel());
    let rgb = pixels * 3;
    let conversion = match color {
        image::ColorType::Rgb8 => 0,
        image::ColorType::L16 | image::ColorType::La16 | image::ColorType::Rgb16 | image::ColorType::Rgba16 => {
            pixels * 6 + rgb
        }
        _ => rgb,
    };
    decoded + conversion + if turns { rgb } else { 0 }
}

/// Draws a decode's memory from the budget, or refuses an image that alone needs more.
fn reserve(width: u32, height: u32, bytes: u64) -> Result<BudgetPermit, ImageProblem> {
    if bytes > DECODE_BUDGET_BYTES {
        return Err(ImageProblem::TooMuchMemory {
            width,
            height,
            needed_mb: bytes.div_ceil(1 << 20),
            limit_mb: DECODE_BUDGET_BYTES >> 20,
        });
    }
    Ok(BudgetPermit::acquire(bytes))
}

/// Decodes an encoded image held in memory (an upload, say).
pub fn decode_rgb(bytes: &[u8], options: &DecodeOptions) -> Result<RgbImage, ImageProblem> {
    decode_photo(bytes, options).map(|p| p.image)
}

/// Decodes an encoded image, keeping its full upright size beside the pixels.
pub fn decode_photo(bytes: &[u8], options: &DecodeOptions) -> Result<Photo, ImageProblem> {
    decode_photo_then(bytes, options, |photo| photo)
}

/// Decodes an encoded image into pixels at most `max_side` on the long side (a larger photo
/// is reduced: JPEGs at a DCT scale, then any format by area averaging), keeping its full
/// upright size beside them. The full-size pixels, when a photo needs them decoded, exist
/// only while the decode holds its share of the budget, so what models, masks and crops
/// work on afterwards costs at most `max_side`² pixels however large the photo.
pub fn decode_photo_within(bytes: &[u8], options: &DecodeOptions, max_side: u32) -> Result<Photo, ImageProblem> {
    let max_side = max_side.max(1);
    let min_side = Some(options.min_side.map_or(max_side, |side| side.min(max_side)));
    decode_photo_then(bytes, &DecodeOptions { min_side, ..*options }, |photo| Photo {
        image: fit_within(photo.image, max_side),
        ..photo
    })
}

/// Reads and decodes the photo at `path` into pixels at most `max_side` on the long side
/// (see [`decode_photo_within`]).
pub fn open_photo_within(path: &Path, options: &DecodeOptions, max_side: u32) -> Result<Photo> {
    let bytes = read_image_file(path, options.max_pixels).map_err(|problem| Error::image(path, problem))?;
    decode_photo_within(&bytes, options, max_side).map_err(|problem| Error::image(path, problem))
}

/// The image reduced to at most `max_side` on its long side (aspect ratio kept, each side
/// rounded, at least 1 px), or itself when it fits. Area averaging (a box filter stretched
/// over each output pixel, by `fast_image_resize`): besides the output, one pass's
/// intermediate of output width x input height.
pub fn fit_within(image: RgbImage, max_side: u32) -> RgbImage {
    let (w, h) = image.dimensions();
    if w.max(h) <= max_side {
        return image;
    }
    let scale = f64::from(max_side) / f64::from(w.max(h));
    let side = |n: u32| ((f64::from(n) * scale).round() as u32).clamp(1, max_side);
    let (tw, th) = (side(w), side(h));
    let resized = fast_image_resize::images::ImageRef::new(w, h, image.as_raw(), fast_image_resize::PixelType::U8x3)
        .ok()
        .and_then(|src| {
            let mut dst = fast_image_resize::images::Image::new(tw, th, fast_image_resize::PixelType::U8x3);
            let box_filter = fast_image_resize::ResizeAlg::Convolution(fast_image_resize::FilterType::Box);
            let options = fast_image_resize::ResizeOptions::new().resize_alg(box_filter);
            fast_image_resize::Resizer::new().resize(&src, &mut dst, &options).ok()?;
            RgbImage::from_raw(tw, th, dst.into_vec())
        });
    // The resizer refuses only buffers that do not match their size, which an RgbImage cannot
    // have; the image crate's own (slower) area averaging stands in all the same.
    resized.unwrap_or_else(|| image::imageops::thumbnail(&image, tw, th))
}

/// Decodes an encoded image and hands it to `finish` while the decode still holds its share
/// of the budget (so a reduced copy made there is counted with the full-size pixels).
fn decode_photo_then<T>(
    bytes: &[u8],
    options: &DecodeOptions,
    finish: impl FnOnce(Photo) -> T,
) -> Result<T, ImageProblem> {
    if bytes.is_empty() {
        return Err(ImageProblem::Empty);
    }
    if heif::sniff(bytes).is_some() {
        return decode_heif(bytes, options).map(finish);
    }
    if jxl::sniff(bytes) {
        return decode_jxl(bytes, options).map(finish);
    }
    if let Some(kind) = raw::sniff(bytes) {
        return decode_raw(bytes, kind, options).map(finish);
    }
    let reader =
        ImageReader::new(Cursor::new(bytes)).with_guessed_format().map_err(|e| ImageProblem::Io(e.to_string()))?;
    if reader.format().is_none() {
        return Err(unrecognised(bytes));
    }
    let is_jpeg = reader.format() == Some(image::ImageFormat::Jpeg);
    if is_jpeg {
        let scans = jpeg_scans(bytes);
        if scans > MAX_JPEG_SCANS {
            return Err(ImageProblem::Corrupt(format!(
                "a JPEG with {scans} scans (real ones have at most a few dozen; the limit is {MAX_JPEG_SCANS})"
            )));
        }
    }
    let mut decoder = reader.into_decoder().map_err(decode_problem)?;
    let (width, height) = decoder.dimensions();
    if u64::from(width) * u64::from(height) > options.max_pixels {
        return Err(ImageProblem::TooLarge { width, height, limit: options.max_pixels });
    }
    // A broken EXIF block must not cost the picture: decode it as stored.
    let orientation = decoder.orientation().unwrap_or(image::metadata::Orientation::NoTransforms);
    use image::metadata::Orientation as O;
    let swaps = matches!(orientation, O::Rotate90 | O::Rotate270 | O::Rotate90FlipH | O::Rotate270FlipH);
    let turns = swaps || orientation == O::Rotate180;
    let libjpeg = if is_jpeg { decode_jpeg_libjpeg(bytes, options.min_side, options.max_pixels, turns)? } else { None };
    // The permit is held until the image is upright.
    let (rgb, _permit) = match libjpeg {
        Some(decoded) => decoded,
        None => {
            let permit = reserve(width, height, decode_bytes(width, height, decoder.color_type(), turns))?;
            (to_rgb8(DynamicImage::from_decoder(decoder).map_err(decode_problem)?), permit)
        }
    };
    let mut rgb = DynamicImage::ImageRgb8(rgb);
    rgb.apply_orientation(orientation);
    let (width, height) = if swaps { (height, width) } else { (width, height) };
    Ok(finish(Photo { image: rgb.into_rgb8(), width, height }))
}

/// Reads date taken, camera and GPS position from the EXIF block, when there is one.
///
/// HEIC/HEIF and AVIF files carry it as an `Exif` item, read through libheif where it is
/// installed; JPEG XL files in an `Exif` box.
pub fn read_exif(bytes: &[u8]) -> ExifInfo {
    let Some(exif) = parse_exif(bytes) else {
        return ExifInfo::default();
    };
    exif_info(&exif)
}

/// The EXIF of a JPEG, PNG, WebP, HEIC/AVIF or JPEG XL file, `None` when it has none (or it
/// cannot be read).
pub fn parse_exif(bytes: &[u8]) -> Option<exif::Exif> {
    let boxed_exif = if jxl::sniff(bytes) {
        jxl::exif(bytes)
    } else {
        heif::sniff(bytes)
            .filter(|_| heif::available())
            .and_then(|_| heif::HeifFile::parse(bytes, DEFAULT_MAX_PIXELS).ok()?.exif())
    };
    let exif = match boxed_exif {
        Some(tiff) => exif::Reader::new().read_raw(tiff),
        None => exif::Reader::new().read_from_container(&mut Cursor::new(bytes)),
    };
    exif.ok()
}

fn exif_info(exif: &exif::Exif) -> ExifInfo {
    let text = |tag| {
        exif.get_field(tag, exif::In::PRIMARY).and_then(|f| match &f.value {
            exif::Value::Ascii(v) => {
                v.first().map(|s| String::from_utf8_lossy(s).trim_end_matches('\0').trim().to_string())
            }
            _ => None,
        })
    };
    let taken = text(exif::Tag::DateTimeOriginal)
        .or_else(|| text(exif::Tag::DateTime))
        .and_then(|s| chrono::NaiveDateTime::parse_from_str(&s, "%Y:%m:%d %H:%M:%S").ok())
        .map(|d| d.and_utc().timestamp());
    // Make and model (or lens make and model) as one name, the make left out when the model
    // already starts with it (`Canon Canon EOS R5`).
    let make_model = |make: Option<String>, model: Option<String>| match (
        make.filter(|s| !s.is_empty()),
        model.filter(|s| !s.is_empty()),
    ) {
        (Some(make), Some(model)) if model.starts_with(&make) => Some(model),
        (Some(make), Some(model)) => Some(format!("{make} {model}")),
        (a, b) => a.or(b),
    };
    let camera = make_model(text(exif::Tag::Make), text(exif::Tag::Model));
    let lens = make_model(text(exif::Tag::LensMake), text(exif::Tag::LensModel));
    let degrees = |tag, ref_tag, negative: &str| -> Option<f64> {
        let f = exif.get_field(tag, exif::In::PRIMARY)?;
        let exif::Value::Rational(v) = &f.value else { return None };
        if v.len() < 3 {
            return None;
        }
        let d = v[0].to_f64() + v[1].to_f64() / 60.0 + v[2].to_f64() / 3600.0;
        let sign = if text(ref_tag).is_some_and(|r| r.eq_ignore_ascii_case(negative)) { -1.0 } else { 1.0 };
        d.is_finite().then_some(sign * d)
    };
    let gps = degrees(exif::Tag::GPSLatitude, exif::Tag::GPSLatitudeRef, "S").zip(degrees(
        exif::Tag::GPSLongitude,
        exif::Tag::GPSLongitudeRef,
        "W",
    ));
    ExifInfo { taken, camera, gps, lens }
}

/// Decodes a YCbCr, RGB or grayscale JPEG with libjpeg-turbo's decoder, the one PIL uses
/// (accurate integer IDCT, smooth chroma upsampling, block smoothing for progressive files), so
/// our pixels are PIL's to the bit; with `min_side`, at the smallest DCT scale (n/8) that keeps
/// that many pixels on the short side. CMYK and YCCK JPEGs (`None`) go to the `image` crate,
/// which converts them as PIL does. A warning (data cut short, a corrupt segment) fails the
/// decode as an error does: PIL refuses truncated files too.
fn decode_jpeg_libjpeg(
    bytes: &[u8],
    min_side: Option<u32>,
    max_pixels: u64,
    turns: bool,
) -> Result<Option<(RgbImage, BudgetPermit)>, ImageProblem> {
    // libjpeg reports errors through callbacks that unwind (the C code is built with unwind
    // tables for this); the unwind ends here as an error, never as a panic of the caller.
    let decoded = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        let io_problem = |e: std::io::Error| ImageProblem::Corrupt(e.to_string());
        let mut jpeg = mozjpeg::Decompress::with_err(strict_jpeg_errors()).from_mem(bytes).map_err(io_problem)?;
        // The size libjpeg itself will decode, whatever a container or another parser said.
        let (width, height) = (jpeg.width() as u32, jpeg.height() as u32);
        if u64::from(width) * u64::from(height) > max_pixels {
            return Err(ImageProblem::TooLarge { width, height, limit: max_pixels });
        }
        if matches!(jpeg.color_space(), mozjpeg_sys::J_COLOR_SPACE::JCS_CMYK | mozjpeg_sys::J_COLOR_SPACE::JCS_YCCK) {
            return Ok(None);
        }
        if let Some(min_side) = min_side {
            let (w, h) = (jpeg.width() as u64, jpeg.height() as u64);
            let scaled = |n: u64| (w * n).div_ceil(8).min((h * n).div_ceil(8));
            if let Some(n) = (1..8).find(|&n| scaled(n) >= u64::from(min_side)) {
                jpeg.scale(n as u8);
            }
        }
        let mut started = jpeg.rgb().map_err(io_problem)?;
        let (w, h) = (started.width(), started.height());
        let permit = reserve(w as u32, h as u32, (w * h * 3) as u64 * if turns { 2 } else { 1 })?;
        let mut pixels = vec![0u8; w * h * 3];
        started.read_scanlines_into(&mut pixels).map_err(io_problem)?;
        started.finish().map_err(io_problem)?;
        Ok(RgbImage::from_raw(w as u32, h as u32, pixels).map(|rgb| (rgb, permit)))
    }));
    decoded.unwrap_or_else(|payload| {
        let message = payload
            .downcast_ref::<String>()
            .cloned()
            .or_else(|| payload.downcast_ref::<&str>().map(|s| s.to_string()))
            .unwrap_or_else(|| "the JPEG decoder failed".to_string());
        Err(ImageProblem::Corrupt(message))
    })
}

/// libjpeg's standard error manager, with errors and warnings alike ending the decode by
/// unwinding with the library's own message.
fn strict_jpeg_errors() -> mozjpeg_sys::jpeg_error_mgr {
    use mozjpeg_sys::jpeg_common_struct;
    unsafe extern "C-unwind" fn fail(cinfo: &mut jpeg_common_struct) {
        let mut buffer = [0u8; 80];
        // SAFETY: `err` is the manager this decoder was built with, and libjpeg's
        // `format_message` writes at most JMSG_LENGTH_MAX (80) bytes, NUL included.
        let message = unsafe {
            let err = &*cinfo.err;
            match err.format_message {
                Some(format) => {
                    let format: unsafe extern "C-unwind" fn(&mut jpeg_common_struct, &mut [u8; 80]) =
                        std::mem::transmute(format);
                    format(cinfo, &mut buffer);
                    let text = buffer.split(|&b| b == 0).next().unwrap_or_default();
                    String::from_utf8_lossy(text).into_owned()
                }
                None => format!("libjpeg error {}", err.msg_code),
            }
        };
        std::panic::resume_unwind(Box::new(message));
    }
    unsafe extern "C-unwind" fn message(cinfo: &mut jpeg_common_struct, level: std::os::raw::c_int) {
        if level < 0 {
            // SAFETY: called by libjpeg with its own decoder state.
            unsafe { fail(cinfo) }
        }
    }
    // SAFETY: `jpeg_std_error` fills in every field of a zeroed manager.
    let mut err: mozjpeg_sys::jpeg_error_mgr = unsafe { std::mem::zeroed() };
    unsafe { mozjpeg_sys::jpeg_std_error(&mut err) };
    err.error_exit = Some(fail);
    err.emit_message = Some(message);
    err
}

/// The number of scans (SOS segments) in a JPEG, found by walking its markers: each segment
/// says its length, and a scan's entropy-coded data runs to the next marker that is neither a
/// stuffed `FF 00` nor a restart marker. Stops at the end of the image or of the bytes.
fn jpeg_scans(bytes: &[u8]) -> usize {
    let mut scans = 0;
    let mut i = 2; // past SOI
    while i + 4 <= bytes.len() {
        if bytes[i] != 0xFF {
            return scans; // not at a marker: leave the rest to the decoder
        }
        let marker = bytes[i + 1];
        match marker {
            0xFF => {
                i += 1; // fill byte
                continue;
            }
            0xD9 => return scans,
            0x01 | 0xD0..=0xD7 => {
                i += 2;
                continue;
            }
            _ => {}
        }
        let length = usize::from(u16::from_be_bytes([bytes[i + 2], bytes[i + 3]]));
        i += 2 + length;
        if marker == 0xDA {
            scans += 1;
            while i + 1 < bytes.len()
                && !(bytes[i] == 0xFF && bytes[i + 1] != 0 && !(0xD0..=0xD7).contains(&bytes[i + 1]))
            {
                i += 1;
            }
        }
    }
    scans
}

/// Converts any decoded image to 8-bit RGB the way PIL's `convert("RGB")` does, except that
/// 16-bit and float samples are scaled into 0..=255 rather than clipped.
fn to_rgb8(image: DynamicImage) -> RgbImage {
    match image {
        DynamicImage::ImageRgb8(rgb) => rgb,
        DynamicImage::ImageLuma16(_)
        | DynamicImage::ImageLumaA16(_)
        | DynamicImage::ImageRgb16(_)
        | DynamicImage::ImageRgba16(_) => {
            let rgb16 = image.into_rgb16();
            let (w, h) = rgb16.dimensions();
            let samples = rgb16.into_raw().into_iter().map(|v| ((u32::from(v) * 255 + 32_767) / 65_535) as u8);
            RgbImage::from_raw(w, h, samples.collect()).expect("same dimensions, three samples each")
        }
        DynamicImage::ImageRgb32F(_) | DynamicImage::ImageRgba32F(_) => {
            let rgbf = image.into_rgb32f();
            let (w, h) = rgbf.dimensions();
            let samples = rgbf.into_raw().into_iter().map(|v| (v.clamp(0.0, 1.0) * 255.0).round() as u8);
            RgbImage::from_raw(w, h, samples.collect()).expect("same dimensions, three samples each")
        }
        other => other.into_rgb8(),
    }
}

/// What an I/O error opening a photo means for the user.
pub(crate) fn io_problem(e: &std::io::Error) -> ImageProblem {
    match e.kind() {
        std::io::ErrorKind::NotFound => ImageProblem::NotFound,
        std::io::ErrorKind::PermissionDenied => ImageProblem::PermissionDenied,
        _ => ImageProblem::Io(e.to_string()),
    }
}

fn decode_problem(e: image::ImageError) -> ImageProblem {
    use image::ImageError as E;
    match e {
        E::Unsupported(u) => ImageProblem::Unsupported(u.to_string()),
        E::Limits(l) => ImageProblem::Corrupt(format!("exceeds a decoder limit: {l}")),
        E::IoError(io) if io.kind() == std::io::ErrorKind::UnexpectedEof => {
            ImageProblem::Corrupt("the file ends early (truncated)".into())
        }
        other => ImageProblem::Corrupt(other.to_string()),
    }
}

/// Names formats we recognise but cannot decode, so the user learns what to convert.
fn unrecognised(bytes: &[u8]) -> ImageProblem {
    if heif::sniff(bytes).is_some() && !heif::available() {
        return heif::missing();
    }
    ImageProblem::NotAnImage
}

#[cfg(test)]
mod tests {
    use super::*;

    /// FNV-1a, 64 bits: the checksum `tools/make_jpeg_decode_goldens.py` records.
    fn fnv1a64(bytes: &[u8]) -> String {
        let h = bytes.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, &b| (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3));
        format!("{h:016x}")
    }

    #[test]
    fn jpeg_pixels_are_pillows_at_every_dct_scale() {
        let fixtures = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures");
        let golden: serde_json::Value =
            serde_json::from_slice(&std::fs::read(fixtures.join("golden/jpeg_decode.json")).unwrap()).unwrap();
        let mut checked = 0;
        for image in golden["images"].as_array().unwrap() {
            let file = image["file"].as_str().unwrap();
            let bytes = std::fs::read(fixtures.join(file)).unwrap();
            for (denom, want) in image["scales"].as_object().unwrap() {
                let n = 8 / denom.parse::<u64>().unwrap();
                let size: Vec<u64> = want["size"].as_array().unwrap().iter().map(|v| v.as_u64().unwrap()).collect();
                // The short side at scale n/8 is what makes the decoder pick that scale.
                let min_side = (n < 8).then(|| size[0].min(size[1]) as u32);
                let (rgb, _permit) = decode_jpeg_libjpeg(&bytes, min_side, u64::MAX, false).unwrap().unwrap();
                assert_eq!([u64::from(rgb.width()), u64::from(rgb.height())], size[..], "{file} at {n}/8");
                assert_eq!(fnv1a64(rgb.as_raw()), want["fnv1a64"].as_str().unwrap(), "{file} at {n}/8: pixels differ");
                checked += 1;
            }
        }
        assert!(checked >= 32, "{checked} decodes checked");
    }

    #[test]
    fn a_truncated_jpeg_is_refused_with_the_decoders_reason() {
        let fixtures = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures");
        let bytes = std::fs::read(fixtures.join("images/astronaut.jpg")).unwrap();
        let cut = &bytes[..bytes.len() / 2];
        match decode_jpeg_libjpeg(cut, None, u64::MAX, false) {
            Err(ImageProblem::Corrupt(reason)) => assert!(reason.contains("Premature end"), "{reason}"),
            Err(other) => panic!("expected a corrupt-file error, got {other}"),
            Ok(_) => panic!("a truncated JPEG decoded"),
        }
        let garbage = [&bytes[..400], &[0xFFu8, 0xC0, 0x00, 0x03][..], &bytes[400..]].concat();
        assert!(decode_jpeg_libjpeg(&garbage, None, u64::MAX, false).is_err());
    }

    #[test]
    fn libjpeg_checks_the_pixel_limit_against_the_size_it_decodes() {
        // Whatever a container or another parser claimed (a RAW preview whose markers were
        // crafted to mislead one), the size libjpeg reads from the frame header is checked.
        let fixtures = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures");
        let bytes = std::fs::read(fixtures.join("images/astronaut.jpg")).unwrap();
        let decoded = image::load_from_memory(&bytes).unwrap();
        let (w, h) = (decoded.width(), decoded.height());
        let limit = u64::from(w) * u64::from(h) - 1;
        match decode_jpeg_libjpeg(&bytes, None, limit, false) {
            Err(ImageProblem::TooLarge { width, height, .. }) => assert_eq!((width, height), (w, h)),
            Err(other) => panic!("expected too large, got {other}"),
            Ok(_) => panic!("decoded past the limit"),
        }
        assert!(decode_jpeg_libjpeg(&bytes, None, limit + 1, false).unwrap().is_some());
    }

    fn encode(img: DynamicImage, format: image::ImageFormat) -> Vec<u8> {
        let mut out = Cursor::new(Vec::new());
        img.write_to(&mut out, format).unwrap();
        out.into_inner()
    }

    #[test]
    fn sixteen_bit_samples_are_scaled_not_clipped() {
        let img = image::ImageBuffer::<image::Luma<u16>, _>::from_fn(3, 1, |x, _| {
            image::Luma([[0u16, 32_896, 65_535][x as usize]])
        });
        let png = encode(DynamicImage::ImageLuma16(img), image::ImageFormat::Png);
        let rgb = decode_rgb(&png, &DecodeOptions::default()).unwrap();
        assert_eq!(rgb.get_pixel(0, 0).0, [0, 0, 0]);
        assert_eq!(rgb.get_pixel(1, 0).0, [128, 128, 128]);
        assert_eq!(rgb.get_pixel(2, 0).0, [255, 255, 255]);
    }

    #[test]
    fn refuses_images_over_the_pixel_limit_before_decoding() {
        let png = encode(DynamicImage::new_rgb8(100, 50), image::ImageFormat::Png);
        let err = decode_rgb(&png, &DecodeOptions { max_pixels: 4_999, min_side: None }).unwrap_err();
        assert_eq!(err, ImageProblem::TooLarge { width: 100, height: 50, limit: 4_999 });
        assert!(decode_rgb(&png, &DecodeOptions { max_pixels: 5_000, min_side: None }).is_ok());
    }

    #[test]
    fn large_photos_decode_within_a_bounded_side_and_keep_their_size() {
        let png = encode(DynamicImage::new_rgb8(3000, 1000), image::ImageFormat::Png);
        let photo = decode_photo_within(&png, &DecodeOptions::default(), 1024).unwrap();
        assert_eq!((photo.image.dimensions(), photo.width, photo.height), ((1024, 341), 3000, 1000));
        // A JPEG is reduced at a DCT scale first, then to the bound.
        let jpeg = encode(DynamicImage::new_rgb8(4000, 3000), image::ImageFormat::Jpeg);
        let photo = decode_photo_within(&jpeg, &DecodeOptions::default(), 500).unwrap();
        assert_eq!((photo.image.dimensions(), photo.width, photo.height), ((500, 375), 4000, 3000));
        // What fits is left as it is.
        let small = encode(DynamicImage::new_rgb8(800, 600), image::ImageFormat::Png);
        assert_eq!(
            decode_photo_within(&small, &DecodeOptions::default(), 1024).unwrap().image.dimensions(),
            (800, 600)
        );
        assert_eq!(fit_within(RgbImage::new(5, 40_000), 2048).dimensions(), (1, 2048));
    }

    #[test]
    fn names_what_is_wrong_with_non_images() {
        let opts = DecodeOptions::default();
        assert_eq!(decode_rgb(b"", &opts).unwrap_err(), ImageProblem::Empty);
        assert_eq!(decode_rgb(b"hello, I am a text file\n", &opts).unwrap_err(), ImageProblem::NotAnImage);
        // A HEIC header with nothing behind it: corrupt where libheif is installed, and where
        // it is not, a failure that names the package to install.
        let heic = b"\0\0\0\x18ftypheic\0\0\0\0mif1heic";
        let err = decode_rgb(heic, &opts).unwrap_err();
        if heif::available() {
            assert!(matches!(&err, ImageProblem::Corrupt(m) if m.starts_with("HEIC/HEIF: ")), "{err}");
        } else {
            assert!(matches!(&err, ImageProblem::Unsupported(m) if m.contains("apt install libheif1")), "{err}");
        }
        let mut jpeg = encode(DynamicImage::new_rgb8(64, 64), image::ImageFormat::Jpeg);
        jpeg.truncate(jpeg.len() / 3);
        assert!(matches!(decode_rgb(&jpeg, &opts).unwrap_err(), ImageProblem::Corrupt(_)));
    }

    #[test]
    fn heif_files_are_recognised_by_their_brands() {
        let ftyp = |major: &[u8], compatible: &[&[u8]]| {
            let mut b = ((16 + 4 * compatible.len()) as u32).to_be_bytes().to_vec();
            b.extend_from_slice(b"ftyp");
            b.extend_from_slice(major);
            b.extend_from_slice(&[0; 4]);
            compatible.iter().for_each(|c| b.extend_from_slice(c));
            b
        };
        assert_eq!(heif::sniff(&ftyp(b"heic", &[b"mif1", b"heic"])), Some("HEIC/HEIF"));
        assert_eq!(heif::sniff(&ftyp(b"mif1", &[b"avif", b"miaf"])), Some("AVIF"));
        assert_eq!(heif::sniff(&ftyp(b"avis", &[])), Some("AVIF"));
        assert_eq!(heif::sniff(&ftyp(b"msf1", &[])), Some("HEIC/HEIF"));
        // A QuickTime movie and an MP4 are ISO-BMFF too, and no images.
        assert_eq!(heif::sniff(&ftyp(b"qt  ", &[b"qt  "])), None);
        assert_eq!(heif::sniff(&ftyp(b"isom", &[b"isom", b"mp41"])), None);
        assert_eq!(heif::sniff(b"\xff\xd8\xff\xe0"), None);
    }

    #[test]
    fn file_errors_name_the_file() {
        let err = open_rgb(Path::new("/no/such/photo.jpg"), &DecodeOptions::default()).unwrap_err();
        assert_eq!(err.to_string(), "/no/such/photo.jpg: no such file");
    }

    #[test]
    fn io_errors_map_to_what_the_user_can_act_on() {
        // Root reads any file, so a chmod 000 photo cannot fail here when tests run as root;
        // the mapping from the error the OS gives is checked directly.
        let denied = std::io::Error::from(std::io::ErrorKind::PermissionDenied);
        assert_eq!(io_problem(&denied), ImageProblem::PermissionDenied);
        assert_eq!(ImageProblem::PermissionDenied.to_string(), "permission denied");
        assert_eq!(io_problem(&std::io::Error::from(std::io::ErrorKind::NotFound)), ImageProblem::NotFound);
        let other = std::io::Error::other("disk on fire");
        assert!(matches!(io_problem(&other), ImageProblem::Io(m) if m.contains("disk on fire")));
    }
}
