//! Image preprocessing as Hugging Face image processors do it (`CLIPImageProcessor`,
//! `BlipImageProcessor`, ...), configured from the model's `preprocessor_config.json`.
//!
//! The reference works in 8 bits until the very end: PIL resizes the whole RGB image (shortest
//! edge to `size`, the long edge truncated as `int(size * long / short)`), the centre crop takes
//! `(h - crop) // 2` rows from the top, and only then are samples rescaled and normalised in
//! floating point. We do the same; bicubic resizing (what CLIP and BLIP use) reproduces PIL's
//! fixed-point filter exactly, the other filters use `fast_image_resize`.

use std::path::Path;

use candle_core::{Device, Tensor};
use fast_image_resize as fr;
use image::RgbImage;
use serde::Deserialize;

use crate::error::{Error, Result};

/// How the image is resized before cropping.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResizeTo {
    /// The shorter side becomes this long, keeping the aspect ratio (CLIP).
    ShortestEdge(u32),
    /// Exactly this size, ignoring the aspect ratio (BLIP).
    Exact {
        /// Output width.
        width: u32,
        /// Output height.
        height: u32,
    },
}

/// The resampling filter, by PIL's numbering in `resample`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Resample {
    /// PIL 0.
    Nearest,
    /// PIL 2.
    Bilinear,
    /// PIL 3 (CLIP, BLIP).
    Bicubic,
    /// PIL 1.
    Lanczos,
}

/// Where a centre crop starts when the margin to cut is odd.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum CropOffset {
    /// `(size - crop) // 2`, as transformers' `center_crop` does.
    #[default]
    Floor,
    /// `int(round((size - crop) / 2))`, halves to even, as torchvision's `CenterCrop` does
    /// (open_clip's preprocessing): one pixel further when the floor is odd.
    RoundHalfEven,
}

impl CropOffset {
    /// The first kept row or column of a crop of `crop` out of `full`; negative when the
    /// image is smaller than the crop (it is padded with zeros on both sides).
    fn start(self, full: u64, crop: u64) -> i64 {
        let margin = full as i64 - crop as i64;
        let floor = margin.div_euclid(2);
        match self {
            CropOffset::RoundHalfEven if margin > 0 && margin % 2 == 1 && floor % 2 == 1 => floor + 1,
            // torchvision pads a small image by (crop - size) // 2 before it crops.
            CropOffset::RoundHalfEven if margin < 0 => -((-margin) / 2),
            _ => floor,
        }
    }
}

/// A model's image preprocessing.
#[derive(Debug, Clone, PartialEq)]
pub struct ImageProcessor {
    /// Resize step, if any.
    pub resize: Option<ResizeTo>,
    /// Resampling filter for the resize.
    pub resample: Resample,
    /// Centre crop `(height, width)`, if any.
    pub center_crop: Option<(u32, u32)>,
    /// Where the centre crop starts when the margin is odd.
    pub crop_offset: CropOffset,
    /// Multiplier from 8-bit samples to floats (1/255), if rescaling.
    pub rescale: Option<f32>,
    /// Per-channel `(mean, std)`, if normalising.
    pub normalize: Option<([f32; 3], [f32; 3])>,
}

/// `preprocessor_config.json` as written by any transformers version: sizes are plain integers
/// in old files and objects in new ones.
#[derive(Debug, Deserialize)]
struct RawConfig {
    do_resize: Option<bool>,
    size: Option<SizeSpec>,
    resample: Option<u32>,
    do_center_crop: Option<bool>,
    crop_size: Option<SizeSpec>,
    do_rescale: Option<bool>,
    rescale_factor: Option<f32>,
    do_normalize: Option<bool>,
    image_mean: Option<Channels>,
    image_std: Option<Channels>,
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum SizeSpec {
    Square(u32),
    ShortestEdge { shortest_edge: u32 },
    HeightWidth { height: u32, width: u32 },
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum Channels {
    One(f32),
    Three([f32; 3]),
}

impl Channels {
    fn get(self) -> [f32; 3] {
        match self {
            Channels::One(v) => [v; 3],
            Channels::Three(v) => v,
        }
    }
}

/// OpenAI CLIP's normalisation, the default of `CLIPImageProcessor`.
pub const OPENAI_CLIP_MEAN: [f32; 3] = [0.481_454_66, 0.457_827_5, 0.408_210_73];
/// OpenAI CLIP's normalisation, the default of `CLIPImageProcessor`.
pub const OPENAI_CLIP_STD: [f32; 3] = [0.268_629_54, 0.261_302_6, 0.275_777_1];

/// ImageNet normalisation, the default of `ViTImageProcessor` checkpoints such as CLIPSeg's.
pub const IMAGENET_MEAN: [f32; 3] = [0.485, 0.456, 0.406];
/// ImageNet normalisation.
pub const IMAGENET_STD: [f32; 3] = [0.229, 0.224, 0.225];

impl ImageProcessor {
    /// CLIP's defaults for an input of `image_size` pixels: what `CLIPImageProcessor()` does
    /// when a model ships no `preprocessor_config.json`.
    pub fn clip_default(image_size: u32) -> Self {
        ImageProcessor {
            resize: Some(ResizeTo::ShortestEdge(image_size)),
            resample: Resample::Bicubic,
            center_crop: Some((image_size, image_size)),
            crop_offset: CropOffset::Floor,
            rescale: Some(1.0 / 255.0),
            normalize: Some((OPENAI_CLIP_MEAN, OPENAI_CLIP_STD)),
        }
    }

    /// `ViTImageProcessor`'s defaults for a `size` x `size` model (CLIPSeg's processor): an
    /// exact bilinear resize, no crop, ImageNet normalisation.
    pub fn vit_default(size: u32) -> Self {
        ImageProcessor {
            resize: Some(ResizeTo::Exact { width: size, height: size }),
            resample: Resample::Bilinear,
            center_crop: None,
            crop_offset: CropOffset::Floor,
            rescale: Some(1.0 / 255.0),
            normalize: Some((IMAGENET_MEAN, IMAGENET_STD)),
        }
    }

    /// `SiglipImageProcessor`'s defaults for a `size` x `size` model: an exact bicubic resize
    /// (no crop), mean and std 0.5.
    pub fn siglip_default(size: u32) -> Self {
        ImageProcessor {
            resize: Some(ResizeTo::Exact { width: size, height: size }),
            resample: Resample::Bicubic,
            center_crop: None,
            crop_offset: CropOffset::Floor,
            rescale: Some(1.0 / 255.0),
            normalize: Some(([0.5; 3], [0.5; 3])),
        }
    }

    /// Reads `preprocessor_config.json`, filling what it leaves out from `defaults`. A bare
    /// integer `size` means the shortest edge for CLIP's processor and a square for ViT's
    /// (`defaults` says which: an exact resize there means ViT).
    pub fn from_file(model: &str, path: &Path, defaults: ImageProcessor) -> Result<Self> {
        let square_is_exact = matches!(defaults.resize, Some(ResizeTo::Exact { .. }));
        let text = std::fs::read_to_string(path)
            .map_err(|e| Error::model(model, format!("cannot read {}: {e}", path.display())))?;
        let raw: RawConfig =
            serde_json::from_str(&text).map_err(|e| Error::model(model, format!("invalid {}: {e}", path.display())))?;
        let mut p = defaults;
        if let Some(size) = raw.size {
            p.resize = Some(match size {
                // Legacy CLIP files give the shortest edge as a bare integer, ViT files a square.
                SizeSpec::Square(n) if square_is_exact => ResizeTo::Exact { width: n, height: n },
                SizeSpec::Square(n) | SizeSpec::ShortestEdge { shortest_edge: n } => ResizeTo::ShortestEdge(n),
                SizeSpec::HeightWidth { height, width } => ResizeTo::Exact { width, height },
            });
        }
        if raw.do_resize == Some(false) {
            p.resize = None;
        }
        if let Some(r) = raw.resample {
            p.resample = match r {
                0 => Resample::Nearest,
                1 => Resample::Lanczos,
                2 => Resample::Bilinear,
                3 => Resample::Bicubic,
                other => {
                    return Err(Error::model(
                        model,
                        format!("unsupported resample filter {other} in {}", path.display()),
                    ));
                }
            };
        }
        if let Some(crop) = raw.crop_size {
            p.center_crop = Some(match crop {
                SizeSpec::Square(n) | SizeSpec::ShortestEdge { shortest_edge: n } => (n, n),
                SizeSpec::HeightWidth { height, width } => (height, width),
            });
        }
        if raw.do_center_crop == Some(false) {
            p.center_crop = None;
        }
        if let Some(f) = raw.rescale_factor {
            p.rescale = Some(f);
        }
        if raw.do_rescale == Some(false) {
            p.rescale = None;
        }
        let (mut mean, mut std) = p.normalize.unwrap_or((OPENAI_CLIP_MEAN, OPENAI_CLIP_STD));
        if let Some(m) = raw.image_mean {
            mean = m.get();
        }
        if let Some(s) = raw.image_std {
            std = s.get();
        }
        p.normalize = (raw.do_normalize != Some(false)).then_some((mean, std));
        if p.resize.is_none() && p.center_crop.is_none() {
            return Err(Error::model(
                model,
                format!("{} neither resizes nor crops: cannot batch images", path.display()),
            ));
        }
        Ok(p)
    }

    /// The `(height, width)` of the tensors this processor produces.
    pub fn output_size(&self) -> Option<(u32, u32)> {
        match (self.center_crop, self.resize) {
            (Some(c), _) => Some(c),
            (None, Some(ResizeTo::Exact { width, height })) => Some((height, width)),
            _ => None,
        }
    }

    /// Resizes and crops in 8 bits, exactly as the reference does before rescaling.
    ///
    /// Only the pixels that survive the crop are computed: each output sample of PIL's
    /// resampling depends on its own input window alone, so resizing a window of the output
    /// equals resizing everything and cropping, while memory stays bounded by the output
    /// whatever the photo's aspect ratio (a 178,956,970 x 1 PNG resized to a 224 px short side
    /// would otherwise be 40 billion pixels).
    pub fn resize_and_crop(&self, image: &RgbImage) -> Result<RgbImage> {
        let (w, h) = image.dimensions();
        let (full_w, full_h) = match self.resize {
            None => (u64::from(w), u64::from(h)),
            Some(ResizeTo::Exact { width, height }) => (u64::from(width), u64::from(height)),
            Some(ResizeTo::ShortestEdge(s)) => shortest_edge_size(w, h, s),
        };
        let window = match self.center_crop {
            None => Window { left: 0, top: 0, width: full_w, height: full_h },
            Some((ch, cw)) => Window::centred_by(self.crop_offset, full_w, full_h, u64::from(cw), u64::from(ch)),
        };
        if window.width * window.height > MAX_OUTPUT_PIXELS {
            return Err(Error::Invalid(format!(
                "preprocessing a {w}x{h} image would give {}x{} pixels (limit {MAX_OUTPUT_PIXELS})",
                window.width, window.height
            )));
        }
        let (out_w, out_h) = (window.width as u32, window.height as u32);
        // The part of the window inside the resized image; the rest is the crop's zero padding.
        let inside = window.inside(full_w, full_h);
        let resized = if inside.width == 0 || inside.height == 0 {
            None
        } else if (full_w, full_h) == (u64::from(w), u64::from(h)) {
            Some(copy_window(image, &inside))
        } else {
            Some(resize_window(image, full_w, full_h, &inside, self.resample)?)
        };
        if let Some(r) = &resized
            && inside == window
        {
            return Ok(r.clone());
        }
        let mut out = RgbImage::new(out_w, out_h);
        if let Some(r) = resized {
            let (dx, dy) = ((inside.left - window.left) as u32, (inside.top - window.top) as u32);
            image::imageops::replace(&mut out, &r, i64::from(dx), i64::from(dy));
        }
        Ok(out)
    }

    /// The full preprocessing of one image: a `[3, H, W]` float tensor.
    pub fn preprocess(&self, image: &RgbImage, device: &Device) -> Result<Tensor> {
        let cropped = self.resize_and_crop(image)?;
        let (w, h) = cropped.dimensions();
        let plane = (w * h) as usize;
        let mut data = vec![0f32; 3 * plane];
        let scale = self.rescale.unwrap_or(1.0);
        let (mean, std) = self.normalize.unwrap_or(([0.0; 3], [1.0; 3]));
        for (i, px) in cropped.pixels().enumerate() {
            for c in 0..3 {
                data[c * plane + i] = (f32::from(px.0[c]) * scale - mean[c]) / std[c];
            }
        }
        Ok(Tensor::from_vec(data, (3, h as usize, w as usize), device)?)
    }

    /// Preprocesses a batch: a `[N, 3, H, W]` tensor. All outputs must share one size, which
    /// holds whenever the processor crops or resizes exactly.
    pub fn preprocess_batch(&self, images: &[&RgbImage], device: &Device) -> Result<Tensor> {
        let tensors = images.iter().map(|im| self.preprocess(im, device)).collect::<Result<Vec<_>>>()?;
        Ok(Tensor::stack(&tensors, 0)?)
    }
}

/// The most pixels preprocessing may produce (a model input is a few hundred thousand; this
/// only stops a processor config without a crop from turning a huge photo into a huge tensor).
const MAX_OUTPUT_PIXELS: u64 = 1 << 24;

/// `transformers`' `get_resize_output_image_size(default_to_square=False)`: the short side
/// becomes `size`, the long side `int(size * long / short)` (truncated, not rounded). In 64
/// bits: for extreme aspect ratios the long side does not fit 32.
pub fn shortest_edge_size(width: u32, height: u32, size: u32) -> (u64, u64) {
    let (short, long) = if width <= height { (width, height) } else { (height, width) };
    if short == size {
        return (u64::from(width), u64::from(height));
    }
    let new_long = ((f64::from(size) * f64::from(long)) / f64::from(short)) as u64;
    let size = u64::from(size);
    if width <= height { (size, new_long.max(1)) } else { (new_long.max(1), size) }
}

/// A rectangle of the resized image, in its pixel coordinates (which may exceed 32 bits).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Window {
    left: i64,
    top: i64,
    width: u64,
    height: u64,
}

impl Window {
    /// `transformers`' `center_crop` of a `crop_w` x `crop_h` window: offsets
    /// `(size - crop) // 2`, negative (zero padding) where the image is smaller than the crop.
    #[cfg(test)]
    fn centred(full_w: u64, full_h: u64, crop_w: u64, crop_h: u64) -> Self {
        Self::centred_by(CropOffset::Floor, full_w, full_h, crop_w, crop_h)
    }

    /// A centred window whose offsets follow `rule` when a margin is odd.
    fn centred_by(rule: CropOffset, full_w: u64, full_h: u64, crop_w: u64, crop_h: u64) -> Self {
        Window { left: rule.start(full_w, crop_w), top: rule.start(full_h, crop_h), width: crop_w, height: crop_h }
    }

    /// The part of the window inside a `full_w` x `full_h` image.
    fn inside(&self, full_w: u64, full_h: u64) -> Window {
        let span = |start: i64, len: u64, full: u64| {
            let a = start.max(0);
            let b = (start + len as i64).min(full as i64);
            (a, (b - a).max(0) as u64)
        };
        let (left, width) = span(self.left, self.width, full_w);
        let (top, height) = span(self.top, self.height, full_h);
        Window { left, top, width, height }
    }
}

fn copy_window(image: &RgbImage, w: &Window) -> RgbImage {
    image::imageops::crop_imm(image, w.left as u32, w.top as u32, w.width as u32, w.height as u32).to_image()
}

/// The pixels of `window` of `image` resized to `full_w` x `full_h`.
fn resize_window(image: &RgbImage, full_w: u64, full_h: u64, window: &Window, resample: Resample) -> Result<RgbImage> {
    match resample {
        Resample::Bicubic => Ok(pil_resample::resize_window(image, full_w, full_h, window, pil_resample::BICUBIC)),
        Resample::Bilinear => Ok(pil_resample::resize_window(image, full_w, full_h, window, pil_resample::BILINEAR)),
        other => {
            // fast_image_resize makes the whole image: bounded like any output.
            if full_w * full_h > MAX_OUTPUT_PIXELS {
                return Err(Error::Invalid(format!(
                    "resizing to {full_w}x{full_h} pixels with this filter is over the limit of {MAX_OUTPUT_PIXELS}"
                )));
            }
            let (width, height) = (full_w as u32, full_h as u32);
            let (w, h) = image.dimensions();
            let src = fr::images::ImageRef::new(w, h, image.as_raw(), fr::PixelType::U8x3)
                .map_err(|e| Error::Invalid(format!("image buffer: {e}")))?;
            let mut dst = fr::images::Image::new(width, height, fr::PixelType::U8x3);
            let alg = match other {
                Resample::Nearest => fr::ResizeAlg::Nearest,
                _ => fr::ResizeAlg::Convolution(fr::FilterType::Lanczos3),
            };
            fr::Resizer::new()
                .resize(&src, &mut dst, &fr::ResizeOptions::new().resize_alg(alg))
                .map_err(|e| Error::Invalid(format!("resize to {width}x{height}: {e}")))?;
            let full = RgbImage::from_raw(width, height, dst.into_vec())
                .ok_or_else(|| Error::Invalid("resize produced a short buffer".into()))?;
            Ok(copy_window(&full, window))
        }
    }
}

/// PIL's bicubic and bilinear resampling, reproduced to the bit: the models were trained and
/// the goldens made on images resized by PIL, and a general-purpose resizer (with its own
/// rounding and kernel normalisation) lands up to 6/255 away on sharp edges.
///
/// PIL resamples separably, one axis then the other into an 8-bit image (which first: see
/// `vertical_first`; this follows Pillow 13). Each output sample is a normalised window of the filter (the Keys cubic
/// with a = -0.5, or the triangle) stretched by the downscale factor (antialiasing), applied in
/// 22-bit fixed point with rounding, then clamped to 0..=255.
mod pil_resample {
    use image::RgbImage;

    const PRECISION_BITS: u32 = 32 - 8 - 2;

    /// A PIL filter: its kernel and the half-width where it is non-zero.
    #[derive(Clone, Copy)]
    pub(super) struct Filter {
        kernel: fn(f64) -> f64,
        support: f64,
    }

    /// `Image.BICUBIC`.
    pub(super) const BICUBIC: Filter = Filter { kernel: cubic, support: 2.0 };
    /// `Image.BILINEAR`.
    pub(super) const BILINEAR: Filter = Filter { kernel: triangle, support: 1.0 };

    fn triangle(x: f64) -> f64 {
        let x = x.abs();
        if x < 1.0 { 1.0 - x } else { 0.0 }
    }

    fn cubic(x: f64) -> f64 {
        const A: f64 = -0.5;
        let x = x.abs();
        if x < 1.0 {
            ((A + 2.0) * x - (A + 3.0)) * x * x + 1.0
        } else if x < 2.0 {
            (((x - 5.0) * x + 8.0) * x - 4.0) * A
        } else {
            0.0
        }
    }

    /// For each output sample along one axis: the first input index and the fixed-point taps.
    struct Taps {
        start: Vec<usize>,
        weights: Vec<Vec<i32>>,
    }

    /// The taps of output samples `first..first + count` of an `in_size` -> `out_size` resize.
    fn taps(in_size: usize, out_size: u64, first: u64, count: u64, filter: Filter) -> Taps {
        let scale = in_size as f64 / out_size as f64;
        let filter_scale = scale.max(1.0);
        let support = filter.support * filter_scale;
        let mut start = Vec::with_capacity(count as usize);
        let mut weights = Vec::with_capacity(count as usize);
        for xx in first..first + count {
            let center = (xx as f64 + 0.5) * scale;
            // PIL truncates toward zero here (a C cast), then clamps to the image.
            let xmin = ((center - support + 0.5) as i64).max(0) as usize;
            let xmax = (((center + support + 0.5) as i64).min(in_size as i64) as usize).max(xmin);
            let raw: Vec<f64> =
                (xmin..xmax).map(|x| (filter.kernel)((x as f64 - center + 0.5) / filter_scale)).collect();
            let total: f64 = raw.iter().sum();
            let fixed = raw
                .iter()
                .map(|w| {
                    let k = if total != 0.0 { w / total } else { *w };
                    let v = k * f64::from(1u32 << PRECISION_BITS);
                    (if v < 0.0 { v - 0.5 } else { v + 0.5 }) as i32
                })
                .collect();
            start.push(xmin);
            weights.push(fixed);
        }
        Taps { start, weights }
    }

    fn clip8(acc: i64) -> u8 {
        (acc >> PRECISION_BITS).clamp(0, 255) as u8
    }

    const ROUND: i64 = 1 << (PRECISION_BITS - 1);

    /// The horizontal pass over rows `rows` of `src` (RGB, `src_w` pixels a row): one output
    /// sample per tap window, the windows' starts counted from column `offset` of `src`.
    fn horizontal_pass(src: &[u8], src_w: usize, rows: std::ops::Range<usize>, taps: &Taps, offset: usize) -> Vec<u8> {
        let out_w = taps.start.len();
        let mut out = vec![0u8; rows.len() * out_w * 3];
        for (r, row) in rows.enumerate() {
            let line = &src[row * src_w * 3..(row + 1) * src_w * 3];
            let dst = &mut out[r * out_w * 3..(r + 1) * out_w * 3];
            for (xx, (start, ws)) in taps.start.iter().zip(&taps.weights).enumerate() {
                let mut acc = [ROUND; 3];
                for (i, w) in ws.iter().enumerate() {
                    let p = &line[(start - offset + i) * 3..(start - offset + i) * 3 + 3];
                    for c in 0..3 {
                        acc[c] += i64::from(p[c]) * i64::from(*w);
                    }
                }
                for c in 0..3 {
                    dst[xx * 3 + c] = clip8(acc[c]);
                }
            }
        }
        out
    }

    /// The vertical pass over columns `cols` of `src` (RGB, `src_w` pixels a row): one output
    /// row per tap window, the windows' starts counted from row `offset` of `src`.
    fn vertical_pass(src: &[u8], src_w: usize, cols: std::ops::Range<usize>, taps: &Taps, offset: usize) -> Vec<u8> {
        let (stride, out_stride) = (src_w * 3, cols.len() * 3);
        let mut out = vec![0u8; taps.start.len() * out_stride];
        for (yy, (start, ws)) in taps.start.iter().zip(&taps.weights).enumerate() {
            let base = start - offset;
            let row = &mut out[yy * out_stride..(yy + 1) * out_stride];
            for (x, sample) in row.iter_mut().enumerate() {
                let mut acc = ROUND;
                for (i, w) in ws.iter().enumerate() {
                    acc += i64::from(src[(base + i) * stride + cols.start * 3 + x]) * i64::from(*w);
                }
                *sample = clip8(acc);
            }
        }
        out
    }

    /// Whether PIL runs the vertical pass first: since Pillow 12.2 (in 13.0), when the height
    /// shrinks by more than twice as many pixels as the width does (fewer rows for the
    /// horizontal pass). The order changes the 8-bit intermediate, so results differ from
    /// Pillow ≤ 12.1 by a few levels on such resizes (a 300×451 portrait to 384×384).
    pub(super) fn vertical_first(in_w: u64, in_h: u64, out_w: u64, out_h: u64) -> bool {
        let (shrink_w, shrink_h) = (in_w as i64 - out_w as i64, in_h as i64 - out_h as i64);
        shrink_h > 0 && shrink_h > 2 * shrink_w
    }

    /// The samples of `window` (inside the resized image) of `image` resized to
    /// `full_w` x `full_h`, as PIL computes them when it resizes the whole image. Each pass
    /// covers only what the window needs: per-row and per-column results do not depend on the
    /// others, so they equal PIL's.
    pub(super) fn resize_window(
        image: &RgbImage,
        full_w: u64,
        full_h: u64,
        window: &super::Window,
        filter: Filter,
    ) -> RgbImage {
        let (in_w, in_h) = (image.width() as usize, image.height() as usize);
        let (out_w, out_h) = (window.width as usize, window.height as usize);
        if out_w == 0 || out_h == 0 {
            return RgbImage::new(out_w as u32, out_h as u32);
        }
        let (left, top) = (window.left as usize, window.top as usize);
        let src = image.as_raw();
        // PIL skips a pass when that side keeps its size.
        let horiz = (full_w != in_w as u64).then(|| taps(in_w, full_w, window.left as u64, window.width, filter));
        let vert = (full_h != in_h as u64).then(|| taps(in_h, full_h, window.top as u64, window.height, filter));
        let span = |t: &Taps| (t.start[0], t.start[t.start.len() - 1] + t.weights[t.weights.len() - 1].len());
        let pixels = match (&horiz, &vert) {
            (None, None) => {
                let mut out = Vec::with_capacity(out_h * out_w * 3);
                for r in top..top + out_h {
                    out.extend_from_slice(&src[(r * in_w + left) * 3..(r * in_w + left + out_w) * 3]);
                }
                out
            }
            (Some(h), None) => horizontal_pass(src, in_w, top..top + out_h, h, 0),
            (None, Some(v)) => vertical_pass(src, in_w, left..left + out_w, v, 0),
            (Some(h), Some(v)) if vertical_first(in_w as u64, in_h as u64, full_w, full_h) => {
                let (first, last) = span(h);
                let mid = vertical_pass(src, in_w, first..last, v, 0);
                horizontal_pass(&mid, last - first, 0..out_h, h, first)
            }
            (Some(h), Some(v)) => {
                let (first, last) = span(v);
                let mid = horizontal_pass(src, in_w, first..last, h, 0);
                vertical_pass(&mid, out_w, 0..out_w, v, first)
            }
        };
        RgbImage::from_raw(out_w as u32, out_h as u32, pixels).expect("height x width x 3 samples")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shortest_edge_truncates_the_long_side_like_transformers() {
        assert_eq!(shortest_edge_size(4000, 3000, 224), (298, 224));
        assert_eq!(shortest_edge_size(300, 451, 224), (224, 336));
        assert_eq!(shortest_edge_size(4000, 300, 224), (2986, 224));
        assert_eq!(shortest_edge_size(1, 1, 224), (224, 224));
        assert_eq!(shortest_edge_size(224, 500, 224), (224, 500));
        assert_eq!(shortest_edge_size(178_956_970, 1, 224), (40_086_361_280, 224));
    }

    fn crop_only(w: u32, h: u32) -> ImageProcessor {
        ImageProcessor { resize: None, center_crop: Some((h, w)), ..ImageProcessor::clip_default(224) }
    }

    #[test]
    fn torchvision_crops_round_odd_margins_half_to_even() {
        // int(round(m / 2)): 1.5 -> 2, 2.5 -> 2, 3.5 -> 4; even margins and padding as floor.
        let starts: Vec<i64> = [3, 5, 7, 4, 0].iter().map(|&m| CropOffset::RoundHalfEven.start(10 + m, 10)).collect();
        assert_eq!(starts, [2, 2, 4, 2, 0]);
        let floors: Vec<i64> = [3, 5, 7, 4, 0].iter().map(|&m| CropOffset::Floor.start(10 + m, 10)).collect();
        assert_eq!(floors, [1, 2, 3, 2, 0]);
        // A smaller image is padded by (crop - size) // 2 first: 3 short of 10 puts it 1 in.
        assert_eq!(CropOffset::RoundHalfEven.start(7, 10), -1);
        let img = RgbImage::from_fn(5, 4, |x, y| image::Rgb([x as u8, y as u8, 0]));
        let p = ImageProcessor { crop_offset: CropOffset::RoundHalfEven, ..crop_only(2, 2) };
        // Margins 3 and 2: round(1.5) = 2 columns, 1 row.
        assert_eq!(p.resize_and_crop(&img).unwrap().get_pixel(0, 0).0, [2, 1, 0]);
    }

    #[test]
    fn center_crop_takes_the_floor_offset() {
        let img = RgbImage::from_fn(5, 4, |x, y| image::Rgb([x as u8, y as u8, 0]));
        let c = crop_only(2, 2).resize_and_crop(&img).unwrap();
        // (5-2)//2 = 1 column, (4-2)//2 = 1 row.
        assert_eq!(c.get_pixel(0, 0).0, [1, 1, 0]);
        let padded = crop_only(7, 4).resize_and_crop(&img).unwrap();
        assert_eq!(padded.dimensions(), (7, 4));
        assert_eq!(padded.get_pixel(0, 0).0, [0, 0, 0]);
        assert_eq!(padded.get_pixel(1, 0).0, [0, 0, 0]);
        assert_eq!(padded.get_pixel(2, 0).0, [1, 0, 0]);
        assert_eq!(padded.get_pixel(6, 3).0, [0, 0, 0]);
    }

    fn noise(w: u32, h: u32, seed: u32) -> RgbImage {
        let mut state = seed.wrapping_mul(2_654_435_761).max(1);
        RgbImage::from_fn(w, h, |_, _| {
            let mut px = [0u8; 3];
            for c in &mut px {
                state ^= state << 13;
                state ^= state >> 17;
                state ^= state << 5;
                *c = (state >> 24) as u8;
            }
            image::Rgb(px)
        })
    }

    /// Bit for bit against the current Pillow's resizes (`tools/make_resample_goldens.py`),
    /// with both pass orders among the cases.
    #[test]
    fn resizes_equal_pillows_in_both_pass_orders() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/resample");
        let (mut vertical_first, mut horizontal_first, mut checked) = (0, 0, 0);
        for entry in std::fs::read_dir(&dir).unwrap() {
            let name = entry.unwrap().file_name().into_string().unwrap();
            let Some(rest) = name.strip_prefix("out_").and_then(|r| r.strip_suffix(".png")) else { continue };
            let (sizes, filter) = rest.rsplit_once('_').unwrap();
            let (from, to) = sizes.split_once("_to_").unwrap();
            let dims = |s: &str| -> (u64, u64) {
                let (w, h) = s.split_once('x').unwrap();
                (w.parse().unwrap(), h.parse().unwrap())
            };
            let ((w, h), (fw, fh)) = (dims(from), dims(to));
            let input = image::open(dir.join(format!("in_{from}.png"))).unwrap().to_rgb8();
            let want = image::open(dir.join(&name)).unwrap().to_rgb8();
            let filter = if filter == "bicubic" { pil_resample::BICUBIC } else { pil_resample::BILINEAR };
            let all = Window { left: 0, top: 0, width: fw, height: fh };
            let got = pil_resample::resize_window(&input, fw, fh, &all, filter);
            assert!(got == want, "{name}: differs from Pillow");
            if w != fw && h != fh {
                if pil_resample::vertical_first(w, h, fw, fh) {
                    vertical_first += 1;
                } else {
                    horizontal_first += 1;
                }
            }
            checked += 1;
        }
        assert!(
            checked >= 30 && vertical_first >= 4 && horizontal_first >= 4,
            "{checked} {vertical_first} {horizontal_first}"
        );
    }

    #[test]
    fn a_resized_window_equals_the_crop_of_the_whole_resize() {
        // Down and up on each axis, one axis kept, crops inside and larger than the image.
        let cases =
            [(300, 451, 224, 224), (451, 300, 200, 120), (64, 17, 100, 100), (80, 80, 50, 50), (40, 300, 40, 90)];
        for (i, &(w, h, cw, ch)) in cases.iter().enumerate() {
            let img = noise(w, h, i as u32 + 1);
            for resize in [ResizeTo::ShortestEdge(cw.min(ch)), ResizeTo::Exact { width: cw + 3, height: ch + 5 }] {
                for filter in [pil_resample::BICUBIC, pil_resample::BILINEAR] {
                    let (fw, fh) = match resize {
                        ResizeTo::ShortestEdge(s) => shortest_edge_size(w, h, s),
                        ResizeTo::Exact { width, height } => (u64::from(width), u64::from(height)),
                    };
                    let all = Window { left: 0, top: 0, width: fw, height: fh };
                    let full = pil_resample::resize_window(&img, fw, fh, &all, filter);
                    let window = Window::centred(fw, fh, u64::from(cw), u64::from(ch)).inside(fw, fh);
                    let part = pil_resample::resize_window(&img, fw, fh, &window, filter);
                    assert_eq!(part, copy_window(&full, &window), "{w}x{h} -> {fw}x{fh}, window {window:?}");
                }
            }
        }
    }

    #[test]
    fn extreme_aspect_ratios_cost_only_the_output() {
        // 200,000 x 1: resized to a 224 px short side it would be 44.8 million px wide.
        let strip = noise(200_000, 1, 7);
        let p = ImageProcessor::clip_default(224);
        let out = p.resize_and_crop(&strip).unwrap();
        assert_eq!(out.dimensions(), (224, 224));
        let tall = noise(1, 100_000, 3);
        assert_eq!(p.resize_and_crop(&tall).unwrap().dimensions(), (224, 224));
        // No crop and a huge output: refused, not allocated.
        let uncropped = ImageProcessor { center_crop: None, ..p };
        let err = uncropped.resize_and_crop(&strip).unwrap_err();
        assert!(err.to_string().contains("limit"), "{err}");
    }

    #[test]
    fn reads_legacy_and_current_config_layouts() {
        let dir = std::env::temp_dir().join(format!("clipdex-pp-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let legacy = dir.join("legacy.json");
        std::fs::write(
            &legacy,
            r#"{"crop_size": 336, "size": 336, "image_mean": [0.5,0.5,0.5], "image_std": 0.5, "resample": 3}"#,
        )
        .unwrap();
        let p = ImageProcessor::from_file("m", &legacy, ImageProcessor::clip_default(224)).unwrap();
        assert_eq!(p.resize, Some(ResizeTo::ShortestEdge(336)));
        assert_eq!(p.center_crop, Some((336, 336)));
        assert_eq!(p.normalize, Some(([0.5; 3], [0.5; 3])));
        let blip = dir.join("blip.json");
        std::fs::write(&blip, r#"{"size": {"height": 384, "width": 384}, "do_center_crop": false}"#).unwrap();
        let p = ImageProcessor::from_file("m", &blip, ImageProcessor::clip_default(224)).unwrap();
        assert_eq!(p.resize, Some(ResizeTo::Exact { width: 384, height: 384 }));
        assert_eq!(p.output_size(), Some((384, 384)));
        let bad = dir.join("bad.json");
        std::fs::write(&bad, "{not json").unwrap();
        let err = ImageProcessor::from_file("m", &bad, ImageProcessor::clip_default(224)).unwrap_err();
        assert!(err.to_string().contains("bad.json"), "{err}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
