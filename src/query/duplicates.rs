//! Near-duplicate photos: burst shots, resized or re-encoded copies, light edits.
//!
//! Two images are near-duplicates when they are close in the library's embedding space (the
//! candidates, found through the vector index) *and* their perceptual hashes nearly agree (the
//! confirmation). The embedding finds copies whatever their size or encoding; the hash, which
//! looks only at the coarse layout of brightness, keeps two different photos of the same kind
//! of scene (two beach sunsets) apart however semantic the model is. Groups are the transitive
//! closures of confirmed pairs.

use std::collections::HashMap;

use image::{ImageBuffer, Luma, RgbImage};
use serde::Serialize;

use crate::store::{ImageId, ImageRecord};

/// The default cosine above which two images are candidates. Resized and re-encoded copies of
/// a photo sit above 0.98 with CLIP ViT-B/32, burst shots and light edits (a crop of a few
/// percent, a colour filter) mostly above 0.95; two different photos of one scene, taken
/// moments apart from another angle, mostly below.
pub const DEFAULT_THRESHOLD: f32 = 0.95;

/// The most bits (of 64) in which the perceptual hashes of a confirmed pair may differ.
/// Resizing and re-encoding change a few bits, small edits up to about ten; unrelated images
/// differ in about half (32).
pub const MAX_HASH_DISTANCE: u32 = 12;

/// Neighbours looked at per image: a group larger than this is still found whole, through
/// the transitive closure.
pub const NEIGHBOURS: usize = 16;

/// Side of the grey image the hash is computed from.
const HASH_INPUT: usize = 32;

/// Side of the block of lowest frequencies the hash keeps.
const HASH_BLOCK: usize = 8;

/// A 64-bit perceptual hash (the DCT hash): the image as 32 × 32 grey levels (ITU-R 601
/// luma, area-averaged), its 2-D DCT, and one bit per coefficient of the 8 × 8 lowest
/// frequencies: whether it is above their median (the DC term is left out of the median, as
/// it only says how bright the image is).
pub fn perceptual_hash(rgb: &RgbImage) -> u64 {
    let grey: ImageBuffer<Luma<f32>, Vec<f32>> = ImageBuffer::from_fn(rgb.width(), rgb.height(), |x, y| {
        let [r, g, b] = rgb.get_pixel(x, y).0;
        // In [0, 1]: the range `resize` keeps float samples in.
        Luma([(0.299 * f32::from(r) + 0.587 * f32::from(g) + 0.114 * f32::from(b)) / 255.0])
    });
    let small =
        image::imageops::resize(&grey, HASH_INPUT as u32, HASH_INPUT as u32, image::imageops::FilterType::Triangle);
    let pixels: Vec<f64> = small.pixels().map(|p| f64::from(p.0[0])).collect();
    let coefficients = dct_low_block(&pixels);
    let mut sorted: Vec<f64> = coefficients[1..].to_vec();
    sorted.sort_by(f64::total_cmp);
    let median = (sorted[sorted.len() / 2 - 1] + sorted[sorted.len() / 2]) / 2.0;
    coefficients.iter().enumerate().fold(0u64, |hash, (i, &c)| if c > median { hash | (1 << i) } else { hash })
}

/// The 8 × 8 lowest-frequency coefficients of the 2-D DCT-II of a 32 × 32 block, row-major.
fn dct_low_block(pixels: &[f64]) -> Vec<f64> {
    let n = HASH_INPUT;
    let basis: Vec<f64> = (0..HASH_BLOCK)
        .flat_map(|k| {
            (0..n).map(move |x| (std::f64::consts::PI * k as f64 * (2 * x + 1) as f64 / (2 * n) as f64).cos())
        })
        .collect();
    // Rows first: rows[y][v] = sum_x pixels[y][x] * basis[v][x].
    let mut rows = vec![0.0; n * HASH_BLOCK];
    for y in 0..n {
        for v in 0..HASH_BLOCK {
            rows[y * HASH_BLOCK + v] = (0..n).map(|x| pixels[y * n + x] * basis[v * n + x]).sum();
        }
    }
    let mut out = vec![0.0; HASH_BLOCK * HASH_BLOCK];
    for u in 0..HASH_BLOCK {
        for v in 0..HASH_BLOCK {
            out[u * HASH_BLOCK + v] = (0..n).map(|y| rows[y * HASH_BLOCK + v] * basis[u * n + y]).sum();
        }
    }
    out
}

/// How many bits two hashes differ in.
pub fn hash_distance(a: u64, b: u64) -> u32 {
    (a ^ b).count_ones()
}

/// A hash as the four 16-bit quarters that the store keeps as a small vector (each
/// exact in an `f32`).
pub fn hash_to_vector(hash: u64) -> Vec<f32> {
    (0..4).map(|i| ((hash >> (16 * i)) & 0xFFFF) as f32).collect()
}

/// The hash a [`hash_to_vector`] vector holds; `None` for anything else.
pub fn hash_from_vector(v: &[f32]) -> Option<u64> {
    if v.len() != 4 {
        return None;
    }
    v.iter().enumerate().try_fold(0u64, |hash, (i, &part)| {
        (part.fract() == 0.0 && (0.0..65536.0).contains(&part)).then(|| hash | ((part as u64) << (16 * i)))
    })
}

/// One image of a group, as `duplicates --json` and `GET /api/duplicates` show it.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct DuplicateImage {
    /// The image's id.
    pub id: ImageId,
    /// One of its files. In JSON: `path`, and `path_bytes` when it is not UTF-8.
    #[serde(flatten, serialize_with = "crate::path_text::path_field")]
    pub path: std::path::PathBuf,
    /// Upright width in pixels.
    pub width: u32,
    /// Upright height in pixels.
    pub height: u32,
    /// File size in bytes.
    pub size: u64,
    /// Date taken (EXIF), else the file's modification time, seconds since the epoch.
    pub date: i64,
}

/// A group of near-duplicates, the suggested one to keep first.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct DuplicateGroup {
    /// Its images, best first.
    pub images: Vec<DuplicateImage>,
    /// The lowest cosine among the confirmed pairs that join the group (its weakest link).
    pub similarity: f32,
    /// The id of the image to keep: the highest resolution, then the largest file, then the
    /// earliest date.
    pub keep: ImageId,
}

/// What `duplicates` reports.
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct DuplicateReport {
    /// The groups, most similar first.
    pub groups: Vec<DuplicateGroup>,
}

/// Orders images best first: more pixels, then a larger file, then an earlier date, then the
/// lower id (so the order is total and stable).
pub fn best_first(a: &(ImageId, ImageRecord), b: &(ImageId, ImageRecord)) -> std::cmp::Ordering {
    let pixels = |r: &ImageRecord| u64::from(r.width) * u64::from(r.height);
    pixels(&b.1).cmp(&pixels(&a.1)).then(b.1.size.cmp(&a.1.size)).then(a.1.date().cmp(&b.1.date())).then(a.0.cmp(&b.0))
}

/// Groups confirmed pairs `(a, b, cosine)` into their transitive closures; each group's ids
/// come sorted, with the lowest cosine of the pairs inside it. Groups come in no set order.
pub fn group_pairs(pairs: &[(ImageId, ImageId, f32)]) -> Vec<(Vec<ImageId>, f32)> {
    let mut parent: HashMap<ImageId, ImageId> = HashMap::new();
    fn root(parent: &mut HashMap<ImageId, ImageId>, id: ImageId) -> ImageId {
        let mut r = id;
        while let Some(&p) = parent.get(&r).filter(|&&p| p != r) {
            r = p;
        }
        // Path compression: point everything on the way straight at the root.
        let mut at = id;
        while at != r {
            let next = parent[&at];
            parent.insert(at, r);
            at = next;
        }
        r
    }
    for &(a, b, _) in pairs {
        parent.entry(a).or_insert(a);
        parent.entry(b).or_insert(b);
        let (ra, rb) = (root(&mut parent, a), root(&mut parent, b));
        if ra != rb {
            parent.insert(ra.max(rb), ra.min(rb));
        }
    }
    let mut groups: HashMap<ImageId, (Vec<ImageId>, f32)> = HashMap::new();
    let ids: Vec<ImageId> = parent.keys().copied().collect();
    for id in ids {
        let r = root(&mut parent, id);
        groups.entry(r).or_insert_with(|| (Vec::new(), f32::INFINITY)).0.push(id);
    }
    for &(a, _, cosine) in pairs {
        let r = root(&mut parent, a);
        let g = groups.get_mut(&r).expect("every pair's root has a group");
        g.1 = g.1.min(cosine);
    }
    groups
        .into_values()
        .map(|(mut ids, cosine)| {
            ids.sort_unstable();
            (ids, cosine)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixture(name: &str) -> RgbImage {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/images").join(name);
        image::open(path).unwrap().to_rgb8()
    }

    #[test]
    fn the_hash_survives_resizing_reencoding_and_light_edits_but_not_another_picture() {
        let photo = fixture("astronaut.jpg");
        let h = perceptual_hash(&photo);
        let distance = |edited: &RgbImage| hash_distance(h, perceptual_hash(edited));
        let small = image::imageops::resize(&photo, 200, 200, image::imageops::FilterType::Lanczos3);
        let mut jpeg = Vec::new();
        image::codecs::jpeg::JpegEncoder::new_with_quality(&mut jpeg, 40).encode_image(&photo).unwrap();
        let reencoded = image::load_from_memory(&jpeg).unwrap().to_rgb8();
        let mut brighter = photo.clone();
        brighter.pixels_mut().for_each(|p| p.0 = p.0.map(|c| c.saturating_add(20)));
        let cropped = image::imageops::crop_imm(&photo, 8, 8, 496, 496).to_image();
        let (d_small, d_jpeg, d_bright, d_crop) =
            (distance(&small), distance(&reencoded), distance(&brighter), distance(&cropped));
        assert!(d_small <= 2 && d_jpeg <= 4 && d_bright <= 4, "{d_small} {d_jpeg} {d_bright}");
        assert!(d_crop <= MAX_HASH_DISTANCE, "a 3% crop: {d_crop}");
        for other in ["coffee.png", "chelsea_exif3.jpg", "camera_gray.png"] {
            let d = distance(&fixture(other));
            assert!(d > MAX_HASH_DISTANCE + 8, "{other}: {d}");
        }
        // About half the bits are set, by construction of the median.
        assert!((24..=40).contains(&h.count_ones()), "{h:064b}");
    }

    #[test]
    fn hashes_round_trip_through_the_stored_vector() {
        for h in [0, 1, u64::MAX, 0x8000_0000_0000_0001, 0x0123_4567_89ab_cdef] {
            assert_eq!(hash_from_vector(&hash_to_vector(h)), Some(h));
        }
        assert_eq!(hash_from_vector(&[0.5, 0.0, 0.0, 0.0]), None);
        assert_eq!(hash_from_vector(&[0.0; 3]), None);
    }

    #[test]
    fn groups_are_transitive_closures_with_their_weakest_link() {
        let mut groups = group_pairs(&[(1, 2, 0.99), (2, 3, 0.96), (7, 9, 0.97), (3, 4, 0.98)]);
        groups.sort_by_key(|g| g.0[0]);
        assert_eq!(groups, vec![(vec![1, 2, 3, 4], 0.96), (vec![7, 9], 0.97)]);
        assert!(group_pairs(&[]).is_empty());
    }
}
