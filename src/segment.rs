//! From CLIPSeg's probability maps to what a user wants: the map at the photo's own
//! resolution, the regions where it passes a threshold (connected components, specks
//! dropped), their padded boxes, crops and an overlay for the eye.
//!
//! Memory stays bounded whatever the photo's size: CLIPSeg computes its maps at the model's
//! resolution, and they are upscaled to the pixels segmented, which are the photo reduced to
//! at most [`MAX_MASK_SIDE`] on the long side ([`crate::photo::decode_photo_within`]).
//! Masks, overlays and crops have that size; boxes reported to users are scaled back to the
//! photo's own pixels with [`scale_region`].

use image::imageops::FilterType;
use image::{GrayImage, ImageBuffer, Luma, Rgb, RgbImage};
use serde::Serialize;

use crate::error::Result;
use crate::models::clipseg::{ProbabilityMap, PromptEmbeddings, Segmenter};

/// The default probability a pixel needs to belong to a region.
pub const DEFAULT_THRESHOLD: f32 = 0.4;

/// The longest side of the pixels segmented, and so of masks, overlays and crops: a larger
/// photo is reduced to it before segmentation (a 12000 x 12000 photo's mask is 2048 x 2048,
/// 4 MB of probabilities instead of 576 MB).
pub const MAX_MASK_SIDE: u32 = 2048;

/// How regions are cut out of a map.
#[derive(Debug, Clone, Copy)]
pub struct RegionOptions {
    /// A pixel belongs to a region when its probability is at least this.
    pub threshold: f32,
    /// Components smaller than this fraction of the image are specks and dropped.
    pub min_area: f32,
    /// Boxes grow by this fraction of their size on every side (at least 2 px), within the image.
    pub padding: f32,
}

impl Default for RegionOptions {
    fn default() -> Self {
        RegionOptions { threshold: DEFAULT_THRESHOLD, min_area: 0.002, padding: 0.05 }
    }
}

/// One connected region of a thresholded map.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Region {
    /// Padded box `[x, y, width, height]` in the map's pixels.
    #[serde(rename = "box")]
    pub bbox: [u32; 4],
    /// The region's pixels as a fraction of the image.
    pub area: f32,
    /// Mean probability over the region's pixels.
    pub mean_probability: f32,
}

/// What one prompt found in one photo.
#[derive(Debug, Clone)]
pub struct Segmentation {
    /// The probability map at the photo's own size.
    pub map: ProbabilityMap,
    /// Its regions, largest first.
    pub regions: Vec<Region>,
}

/// Segments a photo for each prompt (the photo is encoded once; the prompts, embedded by
/// [`Segmenter::embed_prompts`], may serve many photos): maps at the photo's size and their
/// regions.
pub fn segment_photo(
    segmenter: &Segmenter,
    photo: &RgbImage,
    prompts: &PromptEmbeddings,
    options: &RegionOptions,
) -> Result<Vec<Segmentation>> {
    let maps = segmenter.probabilities(photo, prompts)?;
    Ok(maps
        .iter()
        .map(|m| {
            let map = resize_map(m, photo.width(), photo.height());
            let regions = regions(&map, options);
            Segmentation { map, regions }
        })
        .collect())
}

/// The region of a photo that best shows the prompt: the most probable of its regions.
pub fn best_region(regions: &[Region]) -> Option<&Region> {
    regions.iter().max_by(|a, b| a.mean_probability.total_cmp(&b.mean_probability))
}

/// The map as an 8-bit grayscale image: `round(p * 255)`.
pub fn probability_png(map: &ProbabilityMap) -> GrayImage {
    let bytes = map.values.iter().map(|p| (p.clamp(0.0, 1.0) * 255.0).round() as u8).collect();
    GrayImage::from_raw(map.width, map.height, bytes).expect("width x height values")
}

/// The map resampled (bilinear) to `width` x `height`, the photo's own size.
pub fn resize_map(map: &ProbabilityMap, width: u32, height: u32) -> ProbabilityMap {
    if (map.width, map.height) == (width, height) {
        return map.clone();
    }
    let src: ImageBuffer<Luma<f32>, Vec<f32>> =
        ImageBuffer::from_raw(map.width, map.height, map.values.clone()).expect("width x height values");
    let out = image::imageops::resize(&src, width.max(1), height.max(1), FilterType::Triangle);
    ProbabilityMap { width: out.width(), height: out.height(), values: out.into_raw() }
}

/// The connected regions (8-neighbourhood) of the pixels at or above the threshold, largest
/// first.
pub fn regions(map: &ProbabilityMap, options: &RegionOptions) -> Vec<Region> {
    let (w, h) = (map.width as usize, map.height as usize);
    let total = (w * h).max(1) as f32;
    let inside = |i: usize| map.values[i] >= options.threshold;
    let mut label = vec![false; w * h];
    let mut found = Vec::new();
    let mut stack = Vec::new();
    for start in 0..w * h {
        if label[start] || !inside(start) {
            continue;
        }
        label[start] = true;
        stack.push(start);
        let (mut x0, mut y0, mut x1, mut y1) = (usize::MAX, usize::MAX, 0, 0);
        let (mut count, mut sum) = (0usize, 0f64);
        while let Some(i) = stack.pop() {
            let (x, y) = (i % w, i / w);
            (x0, y0, x1, y1) = (x0.min(x), y0.min(y), x1.max(x), y1.max(y));
            count += 1;
            sum += f64::from(map.values[i]);
            for dy in -1i64..=1 {
                for dx in -1i64..=1 {
                    let (nx, ny) = (x as i64 + dx, y as i64 + dy);
                    if nx < 0 || ny < 0 || nx >= w as i64 || ny >= h as i64 {
                        continue;
                    }
                    let j = ny as usize * w + nx as usize;
                    if !label[j] && inside(j) {
                        label[j] = true;
                        stack.push(j);
                    }
                }
            }
        }
        let area = count as f32 / total;
        if area < options.min_area {
            continue;
        }
        let (bw, bh) = ((x1 - x0 + 1) as f32, (y1 - y0 + 1) as f32);
        let px = ((bw * options.padding).round() as usize).max(2);
        let py = ((bh * options.padding).round() as usize).max(2);
        let (bx0, by0) = (x0.saturating_sub(px), y0.saturating_sub(py));
        let (bx1, by1) = ((x1 + px).min(w - 1), (y1 + py).min(h - 1));
        found.push(Region {
            bbox: [bx0 as u32, by0 as u32, (bx1 - bx0 + 1) as u32, (by1 - by0 + 1) as u32],
            area,
            mean_probability: (sum / count as f64) as f32,
        });
    }
    found.sort_by(|a, b| b.area.total_cmp(&a.area).then(b.mean_probability.total_cmp(&a.mean_probability)));
    found
}

/// A region found on a `from`-sized copy of an image, in the pixels of its `to`-sized
/// original (the box grows outwards to whole pixels and stays inside).
pub fn scale_region(mut r: Region, from: (u32, u32), to: (u32, u32)) -> Region {
    if from == to || from.0 == 0 || from.1 == 0 || to.0 == 0 || to.1 == 0 {
        return r;
    }
    let (sx, sy) = (f64::from(to.0) / f64::from(from.0), f64::from(to.1) / f64::from(from.1));
    let [x, y, w, h] = r.bbox;
    let x0 = ((f64::from(x) * sx).floor() as u32).min(to.0 - 1);
    let y0 = ((f64::from(y) * sy).floor() as u32).min(to.1 - 1);
    let x1 = ((f64::from(x + w) * sx).ceil() as u32).clamp(x0 + 1, to.0);
    let y1 = ((f64::from(y + h) * sy).ceil() as u32).clamp(y0 + 1, to.1);
    r.bbox = [x0, y0, x1 - x0, y1 - y0];
    r
}

/// The region's box cut out of the photo (the map and the photo share a size).
pub fn crop(image: &RgbImage, region: &Region) -> RgbImage {
    let [x, y, w, h] = region.bbox;
    image::imageops::crop_imm(image, x, y, w, h).to_image()
}

/// The photo dimmed where the map is low and tinted red where it passes the threshold.
pub fn overlay(image: &RgbImage, map: &ProbabilityMap, threshold: f32) -> RgbImage {
    RgbImage::from_fn(image.width(), image.height(), |x, y| {
        let p = map.values[(y * map.width + x) as usize].clamp(0.0, 1.0);
        let Rgb([r, g, b]) = *image.get_pixel(x, y);
        let dim = 0.35 + 0.65 * p;
        let (r, g, b) = (r as f32 * dim, g as f32 * dim, b as f32 * dim);
        if p >= threshold {
            Rgb([(r * 0.5 + 127.5) as u8, (g * 0.5) as u8, (b * 0.5) as u8])
        } else {
            Rgb([r as u8, g as u8, b as u8])
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(w: u32, h: u32, f: impl Fn(u32, u32) -> f32) -> ProbabilityMap {
        let values = (0..h).flat_map(|y| (0..w).map(move |x| (x, y))).map(|(x, y)| f(x, y)).collect();
        ProbabilityMap { width: w, height: h, values }
    }

    #[test]
    fn finds_known_components_with_padded_boxes() {
        // Two blobs (a 20x10 rectangle and a 6x6 square touching it only diagonally is one
        // region with 8-neighbours) and a lone speck.
        let m = map(100, 80, |x, y| {
            let rect = (10..30).contains(&x) && (10..20).contains(&y);
            let square = (60..66).contains(&x) && (50..56).contains(&y);
            let speck = x == 90 && y == 5;
            if rect {
                0.9
            } else if square {
                0.5
            } else if speck {
                1.0
            } else {
                0.1
            }
        });
        let found = regions(&m, &RegionOptions { min_area: 0.002, ..Default::default() });
        assert_eq!(found.len(), 2, "{found:?}");
        assert_eq!(found[0].bbox, [8, 8, 24, 14]);
        assert!((found[0].area - 200.0 / 8000.0).abs() < 1e-6);
        assert!((found[0].mean_probability - 0.9).abs() < 1e-6);
        assert_eq!(found[1].bbox, [58, 48, 10, 10]);
        assert!((found[1].mean_probability - 0.5).abs() < 1e-6);
        // A lower bar for specks keeps the speck; a higher threshold drops the square.
        assert_eq!(regions(&m, &RegionOptions { min_area: 0.0, ..Default::default() }).len(), 3);
        assert_eq!(regions(&m, &RegionOptions { threshold: 0.6, ..Default::default() }).len(), 1);
    }

    #[test]
    fn diagonal_neighbours_join_and_boxes_stay_inside_the_image() {
        let m = map(20, 20, |x, y| if x == y { 0.8 } else { 0.0 });
        let found = regions(&m, &RegionOptions { min_area: 0.0, ..Default::default() });
        assert_eq!(found.len(), 1);
        assert_eq!(found[0].bbox, [0, 0, 20, 20]);
        assert!(regions(&map(5, 5, |_, _| 0.0), &RegionOptions::default()).is_empty());
    }

    #[test]
    fn regions_scale_to_the_original_and_stay_inside() {
        let r = Region { bbox: [10, 20, 30, 40], area: 0.1, mean_probability: 0.7 };
        let up = scale_region(r.clone(), (100, 100), (400, 300));
        assert_eq!(up.bbox, [40, 60, 120, 120]);
        assert_eq!((up.area, up.mean_probability), (0.1, 0.7));
        let edge = Region { bbox: [90, 90, 10, 10], ..r.clone() };
        let up = scale_region(edge, (100, 100), (333, 333));
        assert!(up.bbox[0] + up.bbox[2] <= 333 && up.bbox[1] + up.bbox[3] <= 333);
        assert_eq!(scale_region(r.clone(), (100, 100), (100, 100)).bbox, r.bbox);
        let down = scale_region(Region { bbox: [1000, 0, 2000, 12000], ..r.clone() }, (12000, 12000), (2048, 2048));
        assert_eq!(down.bbox, [170, 0, 342, 2048]);
    }

    #[test]
    fn maps_resize_to_the_photo_and_become_pngs() {
        let m = map(4, 4, |x, _| if x < 2 { 0.0 } else { 1.0 });
        let big = resize_map(&m, 40, 20);
        assert_eq!((big.width, big.height, big.values.len()), (40, 20, 800));
        assert!(big.values[0] < 0.01 && big.values[39] > 0.99);
        let png = probability_png(&m);
        assert_eq!((png.get_pixel(0, 0).0[0], png.get_pixel(3, 3).0[0]), (0, 255));
    }
}
