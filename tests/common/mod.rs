//! What several integration tests share: the zero-shot goldens written by
//! `tools/make_fixtures.py`, and generated photos.

#![allow(dead_code)] // each test crate uses a different part

use std::path::{Path, PathBuf};

use serde::Deserialize;

/// `tests/fixtures`.
pub fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

/// The reference zero-shot scores of one fixture model.
#[derive(Deserialize)]
pub struct ZeroShotGolden {
    /// The labels, in the order of every case's scores.
    pub labels: Vec<String>,
    /// One photo with one prompt set.
    pub cases: Vec<ZeroShotCase>,
}

/// The reference scores of one photo against every label with one prompt set.
#[derive(Deserialize)]
pub struct ZeroShotCase {
    pub templates: Vec<String>,
    pub image: String,
    pub cosine: Vec<f32>,
    pub probability: Vec<f32>,
}

/// Reads `golden/zeroshot-MODEL.json`.
pub fn zeroshot_golden(model: &str) -> ZeroShotGolden {
    let text = std::fs::read_to_string(fixtures().join(format!("golden/zeroshot-{model}.json"))).unwrap();
    serde_json::from_str(&text).unwrap()
}

/// A photo-like picture that differs with `seed`: smooth colour fields and a checkerboard.
pub fn picture(seed: u32) -> image::RgbImage {
    let s = seed as f32;
    image::RgbImage::from_fn(160, 120, |x, y| {
        let (fx, fy) = (x as f32 / 160.0, y as f32 / 120.0);
        let r = 127.0 + 120.0 * (fx * 6.0 + s * 0.7).sin();
        let g = 127.0 + 120.0 * (fy * 5.0 + s * 1.3).cos();
        let b = if ((x + seed * 13) / 20 + y / 20).is_multiple_of(2) { 40.0 + s * 7.0 % 200.0 } else { 220.0 };
        image::Rgb([r as u8, g as u8, b as u8])
    })
}
