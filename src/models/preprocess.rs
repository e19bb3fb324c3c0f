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

/// A model's image preprocessing.
#[derive(Debug, Clone, PartialEq)]
pub struct ImageProcessor {
    /// Resize step, if any.
    pub resize: Option<ResizeTo>,
    /// Resampling filter for the resize.
    pub resample: Resample,
    /// Centre crop `(height, width)`, if any.
    pub center_crop: Option<(u32, u32)>,
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
            rescale: Some(1.0 / 255.0),
            normalize: Some((IMAGENET_MEAN, IMAGENET_STD)),
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
    pub fn resize_and_crop(&self, image: &RgbImage) -> Result<RgbImage> {
        let resized = match self.resize {
            None => image.clone(),
            Some(to) => {
                let (w, h) = image.dimensions();
                let (nw, nh) = match to {
                    ResizeTo::Exact { width, height } => (width, height),
                    ResizeTo::ShortestEdge(s) => shortest_edge_size(w, h, s),
                };
                resize_rgb(image, nw, nh, self.resample)?
            }
        };
        Ok(match self.center_crop {
            None => resized,
            Some((ch, cw)) => center_crop(&resized, cw, ch),
        })
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

/// `transformers`' `get_resize_output_image_size(default_to_square=False)`: the short side
/// becomes `size`, the long side `int(size * long / short)` (truncated, not rounded).
pub fn shortest_edge_size(width: u32, height: u32, size: u32) -> (u32, u32) {
    let (short, long) = if width <= height { (width, height) } else { (height, width) };
    if short == size {
        return (width, height);
    }
    let new_long = ((f64::from(size) * f64::from(long)) / f64::from(short)) as u32;
    if width <= height { (size, new_long.max(1)) } else { (new_long.max(1), size) }
}

fn resize_rgb(image: &RgbImage, width: u32, height: u32, resample: Resample) -> Result<RgbImage> {
    if image.dimensions() == (width, height) {
        return Ok(image.clone());
    }
    match resample {
        Resample::Bicubic => Ok(pil_resample::resize(image, width, height, pil_resample::BICUBIC)),
        Resample::Bilinear => Ok(pil_resample::resize(image, width, height, pil_resample::BILINEAR)),
        other => {
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
            RgbImage::from_raw(width, height, dst.into_vec())
                .ok_or_else(|| Error::Invalid("resize produced a short buffer".into()))
        }
    }
}

/// PIL's bicubic and bilinear resampling, reproduced to the bit: the models were trained and
/// the goldens made on images resized by PIL, and a general-purpose resizer (with its own
/// rounding and kernel normalisation) lands up to 6/255 away on sharp edges.
///
/// PIL resamples separably, horizontal pass first into an 8-bit image holding only the rows the
/// vertical pass reads. Each output sample is a normalised window of the filter (the Keys cubic
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

    fn taps(in_size: usize, out_size: usize, filter: Filter) -> Taps {
        let scale = in_size as f64 / out_size as f64;
        let filter_scale = scale.max(1.0);
        let support = filter.support * filter_scale;
        let mut start = Vec::with_capacity(out_size);
        let mut weights = Vec::with_capacity(out_size);
        for xx in 0..out_size {
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

    pub(super) fn resize(image: &RgbImage, width: u32, height: u32, filter: Filter) -> RgbImage {
        let (in_w, in_h) = (image.width() as usize, image.height() as usize);
        let (out_w, out_h) = (width as usize, height as usize);
        let src = image.as_raw();
        let round = 1i64 << (PRECISION_BITS - 1);

        let vert = taps(in_h, out_h, filter);
        let first_row = vert.start[0];
        let last_row = vert.start[out_h - 1] + vert.weights[out_h - 1].len();

        // Horizontal pass over the rows the vertical pass needs (all columns when the width stays).
        let rows = last_row - first_row;
        let mut mid = vec![0u8; rows * out_w * 3];
        if out_w == in_w {
            mid.copy_from_slice(&src[first_row * in_w * 3..last_row * in_w * 3]);
        } else {
            let horiz = taps(in_w, out_w, filter);
            for r in 0..rows {
                let line = &src[(first_row + r) * in_w * 3..(first_row + r + 1) * in_w * 3];
                let out = &mut mid[r * out_w * 3..(r + 1) * out_w * 3];
                for (xx, (start, ws)) in horiz.start.iter().zip(&horiz.weights).enumerate() {
                    let mut acc = [round; 3];
                    for (i, w) in ws.iter().enumerate() {
                        let p = &line[(start + i) * 3..(start + i) * 3 + 3];
                        for c in 0..3 {
                            acc[c] += i64::from(p[c]) * i64::from(*w);
                        }
                    }
                    for c in 0..3 {
                        out[xx * 3 + c] = clip8(acc[c]);
                    }
                }
            }
        }

        if out_h == in_h {
            return RgbImage::from_raw(width, height, mid).expect("rows x width x 3 samples");
        }
        let stride = out_w * 3;
        let mut out = vec![0u8; out_h * stride];
        for (yy, (start, ws)) in vert.start.iter().zip(&vert.weights).enumerate() {
            let base = start - first_row;
            let row = &mut out[yy * stride..(yy + 1) * stride];
            for (x, sample) in row.iter_mut().enumerate() {
                let mut acc = round;
                for (i, w) in ws.iter().enumerate() {
                    acc += i64::from(mid[(base + i) * stride + x]) * i64::from(*w);
                }
                *sample = clip8(acc);
            }
        }
        RgbImage::from_raw(width, height, out).expect("height x width x 3 samples")
    }
}

/// `transformers`' `center_crop`: offsets `(size - crop) // 2`, zero padding where the image is
/// smaller than the crop.
fn center_crop(image: &RgbImage, crop_w: u32, crop_h: u32) -> RgbImage {
    let (w, h) = image.dimensions();
    if (w, h) == (crop_w, crop_h) {
        return image.clone();
    }
    let top = (i64::from(h) - i64::from(crop_h)).div_euclid(2);
    let left = (i64::from(w) - i64::from(crop_w)).div_euclid(2);
    RgbImage::from_fn(crop_w, crop_h, |x, y| {
        let sx = i64::from(x) + left;
        let sy = i64::from(y) + top;
        if (0..i64::from(w)).contains(&sx) && (0..i64::from(h)).contains(&sy) {
            *image.get_pixel(sx as u32, sy as u32)
        } else {
            image::Rgb([0, 0, 0])
        }
    })
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
    }

    #[test]
    fn center_crop_takes_the_floor_offset() {
        let img = RgbImage::from_fn(5, 4, |x, y| image::Rgb([x as u8, y as u8, 0]));
        let c = center_crop(&img, 2, 2);
        // (5-2)//2 = 1 column, (4-2)//2 = 1 row.
        assert_eq!(c.get_pixel(0, 0).0, [1, 1, 0]);
        let padded = center_crop(&img, 7, 4);
        assert_eq!(padded.get_pixel(0, 0).0, [0, 0, 0]);
        assert_eq!(padded.get_pixel(1, 0).0, [0, 0, 0]);
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
