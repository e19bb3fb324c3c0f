//! What several integration tests share: the zero-shot goldens written by
//! `tools/make_fixtures.py`.

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
