//! Large photos searched tile by tile, so that their small faces are found with bounded
//! memory.
//!
//! The detector sees faces from its window's size (80 px) up in its input, and that input
//! is capped at [`Budget::max_pixels`]; a photo up to a quarter of the cap is upsampled 2x (as
//! face_recognition does) and so shows faces from 40 px, but a 12 MP photo is reduced to the
//! cap and shows only faces from about 200 px. Such a photo is searched twice:
//!
//! 1. whole, reduced to the cap (the large faces, as before);
//! 2. in tiles of a quarter of the cap, each upsampled 2x exactly as a small photo is, which
//!    overlap by the size of the smallest face the whole search finds (times 1.5, at most half
//!    a tile), so every face the tiles are needed for lies whole in some tile.
//!
//! A tile's detection that touches an edge it shares with another tile is dropped (the face
//! is cut there, and lies whole in the neighbour); the rest join the whole search's
//! detections through the detector's own suppression, the whole search's first, then the
//! tiles' best first. Only one tile's pyramid is in memory at a time.

use image::RgbImage;

use super::detector::{Budget, Detection, Detector};
use super::landmarks::Rect;
use crate::error::Result;

/// What a tiled search did.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub(crate) struct TiledSearch {
    /// The photo was too large to be searched whole at 2x.
    pub reduced: bool,
    /// Tiles searched at 2x (0: none were needed, or more than allowed).
    pub tiles: usize,
    /// Faces down to the minimum size may have been missed: tiles were needed but more than
    /// `max_tiles`.
    pub incomplete: bool,
}

/// Where tiles of `tile` pixels overlapping by `overlap` start along an axis of `len` pixels
/// (the last one ends at the edge).
pub(crate) fn tile_starts(len: u32, tile: u32, overlap: u32) -> Vec<u32> {
    if len <= tile {
        return vec![0];
    }
    let stride = tile.saturating_sub(overlap).max(1);
    let mut starts = Vec::new();
    let mut at = 0;
    while at + tile < len {
        starts.push(at);
        at += stride;
    }
    starts.push(len - tile);
    starts
}

/// The size of the tiles of a `width` x `height` photo and their overlap, for a search that
/// finds faces from `smallest` px whole (see the module's doc).
fn tiling(width: u32, height: u32, max_pixels: u64, smallest: f64) -> (u32, u32, u32) {
    let area = (max_pixels / 4).max(1);
    let side = ((area as f64).sqrt().floor() as u32).max(1);
    let th = height.min(side);
    let tw = width.min(((area / th.max(1) as u64) as u32).max(side));
    let overlap = ((smallest * 1.5).ceil() as u32).min(tw.min(th) / 2);
    (tw, th, overlap)
}

/// Faces in `photo` down to `min_face` px (no smaller than half the detector's window), best
/// first, searching it in tiles when it is too large to be searched whole at 2x; at most
/// `max_tiles` tiles (a photo needing more is searched whole only, and `incomplete` says so).
/// `None` when `stop` said to give up (asked before each search, the whole one and each tile's).
pub(crate) fn detect_tiled(
    detector: &Detector,
    photo: &RgbImage,
    budget: Budget,
    (min_face, max_tiles): (u32, usize),
    stop: &dyn Fn() -> bool,
) -> Result<Option<(Vec<Detection>, TiledSearch)>> {
    if stop() {
        return Ok(None);
    }
    let (mut kept, reduced) = detector.detect(photo, budget)?;
    let mut search = TiledSearch { reduced, ..Default::default() };
    if !reduced {
        return Ok(Some((kept, search)));
    }
    let (width, height) = (photo.width(), photo.height());
    let pixels = width as u64 * height as u64;
    let scale = if pixels <= budget.max_pixels { 1.0 } else { (budget.max_pixels as f64 / pixels as f64).sqrt() };
    let window = detector.window_side() as f64;
    // The smallest face the whole search finds; the tiles are for the smaller ones.
    let smallest = window / scale;
    if f64::from(min_face) >= smallest {
        return Ok(Some((kept, search)));
    }
    let (tw, th, overlap) = tiling(width, height, budget.max_pixels, smallest);
    let (xs, ys) = (tile_starts(width, tw, overlap), tile_starts(height, th, overlap));
    if xs.len() * ys.len() > max_tiles {
        search.incomplete = true;
        return Ok(Some((kept, search)));
    }
    let mut found = Vec::new();
    for &y0 in &ys {
        for &x0 in &xs {
            if stop() {
                return Ok(None);
            }
            let tile = image::imageops::crop_imm(photo, x0, y0, tw, th).to_image();
            let (dets, _) = detector.detect(&tile, budget)?;
            search.tiles += 1;
            let inner = |r: &Rect| {
                !(x0 > 0 && r.left <= 0
                    || y0 > 0 && r.top <= 0
                    || x0 + tw < width && r.right >= tw as i64 - 1
                    || y0 + th < height && r.bottom >= th as i64 - 1)
            };
            for d in dets.into_iter().filter(|d| inner(&d.rect)) {
                let r = d.rect;
                let (dx, dy) = (x0 as i64, y0 as i64);
                let rect = Rect { left: r.left + dx, top: r.top + dy, right: r.right + dx, bottom: r.bottom + dy };
                found.push(Detection { rect, score: d.score });
            }
        }
    }
    found.sort_by(|a, b| b.score.total_cmp(&a.score));
    for d in found {
        if !kept.iter().any(|k| detector.suppresses(&k.rect, &d.rect)) {
            kept.push(d);
        }
    }
    kept.sort_by(|a, b| b.score.total_cmp(&a.score));
    kept.truncate(budget.max_candidates);
    Ok(Some((kept, search)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tiles_cover_the_axis_and_overlap_as_asked() {
        assert_eq!(tile_starts(500, 707, 100), [0]);
        let starts = tile_starts(4032, 707, 296);
        assert_eq!(*starts.last().unwrap(), 4032 - 707);
        for pair in starts.windows(2) {
            // Consecutive tiles overlap by at least `overlap`: a face that small lies whole in one.
            assert!(pair[0] + 707 - pair[1] >= 296, "{starts:?}");
        }
        // A 12 MP photo under the default 2 MP budget: tiles of 707 px overlapping by 1.5 x 197.5 px.
        let (tw, th, overlap) = tiling(4032, 3024, 2_000_000, 80.0 / (2e6f64 / (4032.0 * 3024.0)).sqrt());
        assert_eq!((tw, th), (707, 707));
        assert_eq!(overlap, 297);
        // A strip: tiles as tall as it and as wide as the budget allows.
        assert_eq!(tiling(20_000, 200, 2_000_000, 113.0).0, 2500);
    }
}
