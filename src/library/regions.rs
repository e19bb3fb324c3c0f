//! Regions of photos (CLIPSeg): crop search, where in each search result the query is, and
//! the masks of one indexed image.

use crate::error::Result;
use crate::indexer::Progress;
use crate::models::clipseg::Prompt;
use crate::photo::{DecodeOptions, open_photo_within};
use crate::query::{self, SearchFilter, SearchHit};
use crate::segment::{MAX_MASK_SIDE, Region, RegionOptions, Segmentation, best_region, scale_region, segment_photo};
use crate::store::ImageId;
use crate::video::FrameSize;

use super::Library;

/// Photos a look-ahead thread decodes before the model asks for them.
const DECODE_AHEAD: usize = 2;

/// Runs `each` on every hit with what `open` made of it (its decoded photo), in order, while
/// another thread opens the next ones (up to [`DECODE_AHEAD`]); `progress` hears of each hit
/// done, and the photos/s of the whole go to the log.
fn looking_ahead<T: Send>(
    hits: &[SearchHit],
    open: impl Fn(&SearchHit) -> T + Sync,
    progress: Progress,
    mut each: impl FnMut(&SearchHit, T) -> Result<()>,
) -> Result<()> {
    let started = std::time::Instant::now();
    let total = hits.len() as u64;
    progress(0, total);
    std::thread::scope(|scope| -> Result<()> {
        let (opened, received) = std::sync::mpsc::sync_channel(DECODE_AHEAD);
        let open = &open;
        scope.spawn(move || {
            for hit in hits {
                if opened.send(open(hit)).is_err() {
                    return;
                }
            }
        });
        for (done, (hit, photo)) in hits.iter().zip(received).enumerate() {
            each(hit, photo)?;
            progress(done as u64 + 1, total);
        }
        Ok(())
    })?;
    let seconds = started.elapsed().as_secs_f64();
    tracing::info!("CLIPSeg looked at {total} photos in {seconds:.1} s ({:.2} photos/s)", total as f64 / seconds);
    Ok(())
}

/// A region of a photo that shows a text ([`Library::crops`]).
#[derive(Debug, Clone)]
pub struct Crop {
    /// The photo, as the search found it.
    pub hit: SearchHit,
    /// The region, in the photo's full upright pixels (a video's frame size).
    pub region: Region,
}

/// An indexed image segmented ([`Library::segment_indexed`]).
#[derive(Debug, Clone)]
pub struct SegmentedImage {
    /// The image's full upright width.
    pub width: u32,
    /// The image's full upright height.
    pub height: u32,
    /// Per prompt: the map at the size segmented (at most [`MAX_MASK_SIDE`] on the long
    /// side) and the regions in the full upright pixels.
    pub found: Vec<Segmentation>,
}

/// Longest side at which [`Library::locate`] looks for regions.
pub const LOCATE_SIDE: u32 = 1024;

impl Library {
    /// Crop search (`crop-search`, `GET /api/crops`): the regions showing `text` in the
    /// `candidates` photos nearest to `query` (its embedding) that pass `filter`, most probable
    /// first (then by the photo's score), at most `k`. A photo that cannot be read is skipped.
    /// Photos and frames are segmented at most [`MAX_MASK_SIDE`] px on the long side; boxes
    /// are in their full upright pixels (a video's frame size). The text is embedded once; the
    /// next photos are decoded while CLIPSeg looks at one, and `progress` hears of each photo
    /// looked at. [`Library::crop_image`] cuts a crop out.
    pub fn crops(
        &self,
        text: &str,
        query: &[f32],
        (candidates, k): (usize, usize),
        filter: &SearchFilter,
        options: &RegionOptions,
        progress: Progress,
    ) -> Result<Vec<Crop>> {
        let hits = self.search_vector(query, candidates, filter)?;
        let segmenter = self.segmenter()?;
        let prompt = segmenter.embed_prompts(&[Prompt::Text(text)])?;
        let mut crops = Vec::new();
        looking_ahead(
            &hits,
            |hit| self.open_hit(hit, MAX_MASK_SIDE),
            progress,
            |hit, photo| {
                match photo {
                    Ok((pixels, full)) => {
                        for found in segment_photo(&segmenter, &pixels, &prompt, options)? {
                            crops.extend(found.regions.into_iter().map(|region| Crop {
                                hit: hit.clone(),
                                region: scale_region(region, pixels.dimensions(), full),
                            }));
                        }
                    }
                    Err(e) => tracing::warn!("crop search skips {e}"),
                }
                Ok(())
            },
        )?;
        crops.sort_by(|a, b| {
            b.region.mean_probability.total_cmp(&a.region.mean_probability).then(b.hit.score.total_cmp(&a.hit.score))
        });
        crops.truncate(k);
        Ok(crops)
    }

    /// The pixels of a crop found by [`Library::crops`]: its box cut out of the photo (or the
    /// video's frame at the time that matched) as it was segmented, at most
    /// [`MAX_MASK_SIDE`] px on the long side.
    pub fn crop_image(&self, crop: &Crop) -> Result<image::RgbImage> {
        let (pixels, full) = self.open_hit(&crop.hit, MAX_MASK_SIDE)?;
        let region = scale_region(crop.region.clone(), full, pixels.dimensions());
        Ok(crate::segment::crop(&pixels, &region))
    }

    /// What a search hit shows, at most `max_side` px on the long side (a video's frame at
    /// the time that matched), with its full upright size.
    fn open_hit(&self, hit: &SearchHit, max_side: u32) -> Result<(image::RgbImage, (u32, u32))> {
        match hit.media {
            query::Media::Video { time, .. } => {
                let frame = self.frame_image(&hit.path, time, FrameSize::Fit(max_side))?;
                let full = self.store.image(hit.id)?.map_or(frame.dimensions(), |r| (r.width, r.height));
                Ok((frame, full))
            }
            query::Media::Photo => {
                let decode = DecodeOptions { max_pixels: self.config.max_pixels, min_side: None };
                let photo = open_photo_within(&hit.path, &decode, max_side)?;
                Ok((photo.image, (photo.width, photo.height)))
            }
        }
    }

    /// For each hit, the region of its photo that best shows `text` (CLIPSeg), or `None`
    /// when no region passes the threshold or the file cannot be read. Boxes are in the
    /// photo's full upright pixels. For speed the photo is looked at reduced to at most
    /// [`LOCATE_SIDE`] px on the long side and the regions found there are scaled up. The text
    /// is embedded once; the next photos are decoded while CLIPSeg looks at one, and
    /// `progress` hears of each.
    pub fn locate(
        &self,
        text: &str,
        hits: &[SearchHit],
        options: &RegionOptions,
        progress: Progress,
    ) -> Result<Vec<Option<Region>>> {
        let segmenter = self.segmenter()?;
        let prompt = segmenter.embed_prompts(&[Prompt::Text(text)])?;
        // What CLIPSeg looks at (at most LOCATE_SIDE) and the full upright size its regions
        // are scaled to: a video's frame that matched, or the photo.
        let open = |hit: &SearchHit| {
            self.open_hit(hit, LOCATE_SIDE)
                .map_err(|e| tracing::warn!("cannot locate {text:?} in {}: {e}", hit.path.display()))
                .ok()
        };
        let mut located = Vec::with_capacity(hits.len());
        looking_ahead(hits, open, progress, |_, pixels| {
            located.push(match pixels {
                Some((small, full)) => {
                    let found = segment_photo(&segmenter, &small, &prompt, options)?;
                    let best = found.into_iter().next().and_then(|s| best_region(&s.regions).cloned());
                    best.map(|r| scale_region(r, small.dimensions(), full))
                }
                None => None,
            });
            Ok(())
        })?;
        Ok(located)
    }

    /// Segments indexed image `id` for each prompt (`GET /api/images/{id}/segment`): the
    /// photo (a video's poster frame) reduced to at most [`MAX_MASK_SIDE`] px on the long
    /// side, its maps at that size, and their regions in its full upright pixels.
    pub fn segment_indexed(&self, id: ImageId, prompts: &[&str], options: &RegionOptions) -> Result<SegmentedImage> {
        let (pixels, (width, height)) = self.open_indexed_within(id, MAX_MASK_SIDE)?;
        let segmenter = self.segmenter()?;
        let prompts: Vec<Prompt> = prompts.iter().map(|p| Prompt::Text(p)).collect();
        let mut found = segment_photo(&segmenter, &pixels, &segmenter.embed_prompts(&prompts)?, options)?;
        for s in &mut found {
            for r in &mut s.regions {
                *r = scale_region(r.clone(), pixels.dimensions(), (width, height));
            }
        }
        Ok(SegmentedImage { width, height, found })
    }
}
