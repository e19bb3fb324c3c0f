//! SigLIP 2 NaFlex's geometry and input (`model_type` `siglip2`), as transformers computes it:
//! the patch grid a photo is resized to (its aspect kept, at most `max_num_patches` patches),
//! the patches cut from it and padded to `max_num_patches` ([`NaflexInput`]), and the position
//! table resized to that grid.
//!
//! One image's input is a `[1 + max_patches, channels · patch²]` tensor: row 0 holds its grid
//! (patches down, patches across) in its first two entries, the next rows its patches in
//! reading order, each `(row, column, channel)` flattened as `Siglip2ImageProcessor` does, and
//! zeros after them. Every image of a model has that one shape whatever its aspect, so batches
//! stack as fixed-size images do, and the grid gives the attention mask (its first
//! `rows × columns` patches are real).

use candle_core::{DType, Device, Tensor};
use image::RgbImage;
use serde::Deserialize;

use crate::error::{Error, Result};
use crate::models::preprocess::{ImageProcessor, Resample, ResizeTo};

type CResult<T> = candle_core::Result<T>;

/// How a NaFlex model's images are cut: patch side, most patches per image, channels.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct NaflexInput {
    /// Patch side in pixels.
    pub patch: usize,
    /// The most patches per image (`max_num_patches`, 256 by default); images are padded to it.
    pub max_patches: usize,
    /// Colour channels (3).
    pub channels: usize,
}

/// `preprocessor_config.json`'s NaFlex fields.
#[derive(Deserialize, Default)]
struct NaflexProcessorConfig {
    max_num_patches: Option<usize>,
    patch_size: Option<usize>,
}

impl NaflexInput {
    /// The input of a model whose patches are `patch` pixels, `max_num_patches` read from
    /// `preprocessor_config.json` (`config`, when there is one; 256 when absent, as
    /// `Siglip2ImageProcessor`).
    pub fn from_processor_config(model: &str, config: Option<&str>, patch: usize) -> Result<Self> {
        let raw: NaflexProcessorConfig = match config {
            Some(text) => serde_json::from_str(text)
                .map_err(|e| Error::model(model, format!("invalid preprocessor_config.json: {e}")))?,
            None => NaflexProcessorConfig::default(),
        };
        if let Some(p) = raw.patch_size
            && p != patch
        {
            return Err(Error::model(
                model,
                format!("preprocessor_config.json cuts {p}-pixel patches but config.json's model takes {patch}"),
            ));
        }
        let max_patches = raw.max_num_patches.unwrap_or(256);
        if max_patches == 0 || max_patches > 16_384 {
            return Err(Error::model(
                model,
                format!("preprocessor_config.json's max_num_patches {max_patches} is outside 1..=16384"),
            ));
        }
        Ok(NaflexInput { patch, max_patches, channels: 3 })
    }

    /// `Siglip2ImageProcessor`'s defaults: bilinear, rescaled by 1/255, mean and std 0.5. The
    /// resize is set per image ([`NaflexInput::preprocess`]), so none is set here.
    pub fn default_processor() -> ImageProcessor {
        ImageProcessor {
            resize: Some(ResizeTo::Exact { width: 1, height: 1 }),
            resample: Resample::Bilinear,
            center_crop: None,
            crop_offset: crate::models::preprocess::CropOffset::Floor,
            rescale: Some(1.0 / 255.0),
            normalize: Some(([0.5; 3], [0.5; 3])),
        }
    }

    /// The width of one patch row, `channels · patch²`.
    pub fn row_width(&self) -> usize {
        self.channels * self.patch * self.patch
    }

    /// One image's input (see the module doc): resized to its patch grid with `processor`'s
    /// filter, rescaled and normalised as `processor` says, cut into patches and padded.
    pub fn preprocess(&self, processor: &ImageProcessor, image: &RgbImage, device: &Device) -> Result<Tensor> {
        let (w, h) = image.dimensions();
        let (th, tw) = naflex_size(h, w, self.patch as u32, self.max_patches as u32);
        let sized = ImageProcessor {
            resize: Some(ResizeTo::Exact { width: tw, height: th }),
            center_crop: None,
            ..processor.clone()
        };
        let resized = sized.resize_and_crop(image)?;
        let p = self.patch;
        let (gh, gw) = (th as usize / p, tw as usize / p);
        let width = self.row_width();
        let mut data = vec![0f32; (1 + self.max_patches) * width];
        data[0] = gh as f32;
        data[1] = gw as f32;
        let scale = processor.rescale.unwrap_or(1.0);
        let (mean, std) = processor.normalize.unwrap_or(([0.0; 3], [1.0; 3]));
        for (x, y, px) in resized.enumerate_pixels() {
            let (x, y) = (x as usize, y as usize);
            let row = 1 + (y / p) * gw + x / p;
            let at = row * width + ((y % p) * p + x % p) * 3;
            for c in 0..3 {
                data[at + c] = (f32::from(px.0[c]) * scale - mean[c]) / std[c];
            }
        }
        Ok(Tensor::from_vec(data, (1 + self.max_patches, width), device)?)
    }

    /// A batch of inputs `[b, 1 + max_patches, row]` split into the padded patches
    /// `[b, max_patches, row]` and each image's grid `(rows, columns)`.
    pub fn unpack(&self, pixels: &Tensor) -> CResult<(Tensor, Vec<(usize, usize)>)> {
        let (b, rows, width) = pixels.dims3()?;
        if rows != 1 + self.max_patches || width != self.row_width() {
            candle_core::bail!(
                "a SigLIP 2 NaFlex input is [b, {}, {}] (a grid row, then up to {} patches), got [{b}, {rows}, {width}]",
                1 + self.max_patches,
                self.row_width(),
                self.max_patches
            );
        }
        let header = pixels.narrow(1, 0, 1)?.narrow(2, 0, 2)?.to_dtype(DType::F32)?.flatten_all()?.to_vec1::<f32>()?;
        let mut grids = Vec::with_capacity(b);
        for pair in header.chunks_exact(2) {
            let (gh, gw) = (pair[0], pair[1]);
            let whole = |v: f32| v >= 1.0 && v.fract() == 0.0;
            if !whole(gh) || !whole(gw) || (gh as usize) * (gw as usize) > self.max_patches {
                candle_core::bail!(
                    "a SigLIP 2 NaFlex input names a {gh}x{gw} patch grid; at most {} patches fit",
                    self.max_patches
                );
            }
            grids.push((gh as usize, gw as usize));
        }
        Ok((pixels.narrow(1, 1, self.max_patches)?, grids))
    }
}

/// The size in pixels, `(height, width)`, that `Siglip2ImageProcessor` resizes a
/// `height` × `width` photo to: both sides multiples of `patch` (at least one patch), scaled by
/// one factor found by transformers' binary search (`get_image_size_for_max_num_patches`, with
/// its `eps` 1e-5 and scale range) so that the patch count is at most `max_patches`.
pub fn naflex_size(height: u32, width: u32, patch: u32, max_patches: u32) -> (u32, u32) {
    let p = f64::from(patch);
    let scaled = |scale: f64, size: u32| -> u32 { ((f64::from(size) * scale / p).ceil() * p).max(p) as u32 };
    let eps = 1e-5;
    let (mut low, mut high) = (eps / 10.0, 100.0);
    while high - low >= eps {
        let scale = (low + high) / 2.0;
        let patches = (f64::from(scaled(scale, height)) / p) * (f64::from(scaled(scale, width)) / p);
        if patches <= f64::from(max_patches) {
            low = scale;
        } else {
            high = scale;
        }
    }
    (scaled(low, height), scaled(low, width))
}

/// The position table `[side², d]` (row-major over a `side` × `side` grid) resized to
/// `height` × `width` positions, `[height · width, d]`, as `Siglip2VisionEmbeddings` does it:
/// torch's bilinear interpolation with `antialias=True` and `align_corners=False` (a triangle
/// filter widened by the scale when shrinking, weights normalised to sum 1).
pub fn resize_positions(table: &[f32], side: usize, d: usize, height: usize, width: usize) -> Vec<f32> {
    let mut rows = axis_weights(side, height);
    if width == 1 && height != side {
        // torch 2.9's antialiased kernel, given an output one column wide, gives every output
        // row the first row's weights (measured: a 5x5 table to 7x1 repeats row 0's value);
        // transformers' embeddings are what that kernel computes, so this does the same.
        let first = rows[0].clone();
        rows.iter_mut().for_each(|r| *r = first.clone());
    }
    let cols = axis_weights(side, width);
    // Along the width first: [side, width, d], then along the height: [height, width, d].
    let mut across = vec![0f64; side * width * d];
    for y in 0..side {
        for (x, (start, weights)) in cols.iter().enumerate() {
            let out = &mut across[(y * width + x) * d..][..d];
            for (k, w) in weights.iter().enumerate() {
                let src = &table[(y * side + start + k) * d..][..d];
                for (o, s) in out.iter_mut().zip(src) {
                    *o += w * f64::from(*s);
                }
            }
        }
    }
    let mut out = vec![0f32; height * width * d];
    for (y, (start, weights)) in rows.iter().enumerate() {
        for x in 0..width {
            let dst = &mut out[(y * width + x) * d..][..d];
            for (c, o) in dst.iter_mut().enumerate() {
                let v: f64 =
                    weights.iter().enumerate().map(|(k, w)| w * across[((start + k) * width + x) * d + c]).sum();
                *o = v as f32;
            }
        }
    }
    out
}

/// For each of `output` positions along an axis of `input`, the first input position it reads
/// and the weights of the positions from there (torch's `_compute_weights_aa` for bilinear).
fn axis_weights(input: usize, output: usize) -> Vec<(usize, Vec<f64>)> {
    let scale = input as f64 / output as f64;
    let (support, inverse) = if scale >= 1.0 { (scale, 1.0 / scale) } else { (1.0, 1.0) };
    (0..output)
        .map(|i| {
            let centre = scale * (i as f64 + 0.5);
            // Truncation toward zero, as C++'s cast to an integer.
            let start = ((centre - support + 0.5) as i64).max(0) as usize;
            let end = ((centre + support + 0.5) as i64).min(input as i64).max(start as i64) as usize;
            let mut weights: Vec<f64> =
                (start..end).map(|j| (1.0 - ((j as f64 - centre + 0.5) * inverse).abs()).max(0.0)).collect();
            let total: f64 = weights.iter().sum();
            if total != 0.0 {
                weights.iter_mut().for_each(|w| *w /= total);
            }
            (start, weights)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn golden() -> serde_json::Value {
        let path =
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/golden/siglip2-naflex-math.json");
        serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
    }

    fn n(v: &serde_json::Value) -> usize {
        v.as_u64().unwrap() as usize
    }

    #[test]
    fn inputs_carry_their_grid_and_bad_ones_are_refused() {
        let input = NaflexInput { patch: 2, max_patches: 6, channels: 3 };
        let processor = NaflexInput::default_processor();
        // A 4x6 photo (height 4, width 6) fits 2 rows of 3 patches exactly.
        let photo = image::RgbImage::from_fn(6, 4, |x, y| image::Rgb([(x * 40) as u8, (y * 60) as u8, 255]));
        let t = input.preprocess(&processor, &photo, &Device::Cpu).unwrap();
        assert_eq!(t.dims(), &[7, 12]);
        let batch = Tensor::stack(&[t.clone(), t], 0).unwrap();
        let (patches, grids) = input.unpack(&batch).unwrap();
        assert_eq!(grids, vec![(2, 3), (2, 3)]);
        // Patch 1 (row 0, column 1) starts at pixel (x 2, y 0), channels last: (80 / 255 - 0.5) / 0.5.
        let first: Vec<f32> = patches.get(0).unwrap().get(1).unwrap().narrow(0, 0, 3).unwrap().to_vec1().unwrap();
        let want = [80.0 / 255.0 * 2.0 - 1.0, -1.0, 1.0];
        assert!(first.iter().zip(want).all(|(a, b)| (a - b).abs() < 1e-6), "{first:?}");
        // A grid that names more patches than fit, or none, is an error, not a panic.
        for header in [[3.0f32, 3.0], [0.0, 2.0], [1.5, 2.0]] {
            let mut data = vec![0f32; 7 * 12];
            data[..2].copy_from_slice(&header);
            let bad = Tensor::from_vec(data, (1, 7, 12), &Device::Cpu).unwrap();
            assert!(input.unpack(&bad).is_err(), "{header:?}");
        }
        assert!(input.unpack(&Tensor::zeros((1, 5, 12), DType::F32, &Device::Cpu).unwrap()).is_err());
        let mismatch = NaflexInput::from_processor_config("m", Some(r#"{"patch_size": 14}"#), 16).unwrap_err();
        assert!(mismatch.to_string().contains("14"), "{mismatch}");
        let read = NaflexInput::from_processor_config("m", Some(r#"{"max_num_patches": 576}"#), 16).unwrap();
        assert_eq!(read.max_patches, 576);
    }

    #[test]
    fn photos_get_transformers_patch_grid() {
        for case in golden()["sizes"].as_array().unwrap() {
            let got = naflex_size(
                n(&case["height"]) as u32,
                n(&case["width"]) as u32,
                n(&case["patch"]) as u32,
                n(&case["max_patches"]) as u32,
            );
            let want = (n(&case["target"][0]) as u32, n(&case["target"][1]) as u32);
            assert_eq!(got, want, "{case}");
        }
    }

    #[test]
    fn position_tables_resize_as_torch_antialiased_bilinear() {
        for case in golden()["resizes"].as_array().unwrap() {
            let (side, d) = (n(&case["side"]), n(&case["channels"]));
            let (h, w) = (n(&case["target"][0]), n(&case["target"][1]));
            let floats = |v: &serde_json::Value| -> Vec<f32> {
                v.as_array().unwrap().iter().map(|x| x.as_f64().unwrap() as f32).collect()
            };
            let got = resize_positions(&floats(&case["table"]), side, d, h, w);
            let want = floats(&case["resized"]);
            // The golden is padded with two copies of the first position, as transformers pads.
            assert_eq!(want.len(), (h * w + 2) * d);
            let worst = got.iter().zip(&want).map(|(a, b)| (a - b).abs()).fold(0f32, f32::max);
            assert!(worst < 1e-5, "{side}x{side} -> {h}x{w}: off by {worst}");
        }
    }
}
