//! OCR accuracy on real text: clipdex reads the 200 rendered lines of tests/fixtures/ocr-cer
//! (Latin and Chinese, DejaVu and Noto CJK fonts at 12-64 px, turned up to 10 degrees, a mild
//! perspective, on crops of the fixture photos; written by tools/make_ocr_cer_set.py with
//! their truth), and its character error rate must be within half a point of RapidOCR's on the
//! same images with the same model files (committed in rapidocr-cer.json by that script), for
//! the Latin lines, the Chinese lines and all of them, with both PP-OCRv4 mobile and PP-OCRv6
//! small (RapidOCR's rate is recomputed from its reads, and must equal the committed one).
//! The rate is computed as the script does: NFKC, white space removed, Levenshtein
//! distance in code points summed over images and divided by the truth's length.
//!
//! The models come from tools/fetch_ocr_models.sh (`.ci/run` fetches them); without them the
//! tests say so and pass, unless `CI` is set.

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use clipdex::models::ocr::{OcrConfig, OcrModel};
use clipdex::photo::{DecodeOptions, open_rgb};
use serde_json::Value;
use unicode_normalization::UnicodeNormalization;

/// How far clipdex's rate may be from RapidOCR's, in percentage points.
const TOLERANCE_POINTS: f64 = 0.5;

fn set_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/ocr-cer")
}

/// NFKC without white space, as code points.
fn squeeze(text: &str) -> Vec<char> {
    text.nfkc().filter(|c| !c.is_whitespace()).collect()
}

/// Levenshtein distance (insertions, deletions and substitutions of one code point).
fn distance(a: &[char], b: &[char]) -> usize {
    let mut previous: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.iter().enumerate() {
        let mut current = vec![i + 1];
        for (j, cb) in b.iter().enumerate() {
            let substitute = previous[j] + usize::from(ca != cb);
            current.push(substitute.min(previous[j + 1] + 1).min(current[j] + 1));
        }
        previous = current;
    }
    previous[b.len()]
}

/// Errors and characters of one group of images.
#[derive(Debug, Default, Clone, Copy)]
struct Tally {
    errors: usize,
    chars: usize,
}

impl Tally {
    fn percent(&self) -> f64 {
        100.0 * self.errors as f64 / self.chars.max(1) as f64
    }
}

/// Adds one image's errors to its script's tally and to the overall one.
fn tally<'a>(tallies: &mut BTreeMap<&'a str, Tally>, script: &'a str, read: &str, truth: &str) {
    let want = squeeze(truth);
    let errors = distance(&squeeze(read), &want);
    for group in [script, "overall"] {
        let t = tallies.entry(group).or_default();
        t.errors += errors;
        t.chars += want.len();
    }
}

fn check_accuracy(set: &str) {
    let Some(dir) = common::ocr_models(set) else { return };
    let model = OcrModel::open(&dir, OcrConfig::default()).unwrap();
    let truth: Value = serde_json::from_str(&std::fs::read_to_string(set_dir().join("truth.json")).unwrap()).unwrap();
    let truth = truth.as_array().unwrap();
    assert!(truth.len() >= 200, "the set has {} images", truth.len());
    let reference: Value =
        serde_json::from_str(&std::fs::read_to_string(set_dir().join("rapidocr-cer.json")).unwrap()).unwrap();
    assert_eq!(reference["images"].as_u64(), Some(truth.len() as u64), "rapidocr-cer.json is of another set");
    // By default every 4th image is read (50 per model, Latin and Chinese alike): the whole set
    // costs about 8 CPU-minutes per model in a debug build, too much for every `cargo test`.
    // CLIPDEX_OCR_CER_IMAGES=all reads all 200 (the figures in docs/src/text-in-photos.md);
    // CLIPDEX_OCR_CER_IMAGES=N the first N. RapidOCR's rate is taken over the same images, from
    // its reads.
    let images: Vec<Value> = match std::env::var("CLIPDEX_OCR_CER_IMAGES").ok().as_deref() {
        Some("all") => truth.to_vec(),
        Some(n) => {
            let n: usize = n.parse().expect("CLIPDEX_OCR_CER_IMAGES is `all` or a number");
            truth.iter().take(n).cloned().collect()
        }
        None => truth.iter().step_by(4).cloned().collect(),
    };

    let started = std::time::Instant::now();
    let mut ours: BTreeMap<&str, Tally> = BTreeMap::new();
    let mut theirs: BTreeMap<&str, Tally> = BTreeMap::new();
    for entry in &images {
        let file = entry["file"].as_str().unwrap();
        let script = entry["script"].as_str().unwrap();
        let text = entry["text"].as_str().unwrap();
        let image = open_rgb(&set_dir().join(file), &DecodeOptions::default()).unwrap();
        let read: String = model.read(&image).unwrap().into_iter().map(|l| l.text).collect();
        let rapid = reference[set]["read"][file].as_str().unwrap();
        tally(&mut ours, script, &read, text);
        tally(&mut theirs, script, rapid, text);
        if squeeze(rapid) != squeeze(&read) {
            eprintln!("{set} {file} ({text:?}): clipdex reads {read:?}, RapidOCR {rapid:?}");
        }
    }
    eprintln!("{set}: read {} images in {:.1} s", images.len(), started.elapsed().as_secs_f64());
    let mut failures = Vec::new();
    for group in ["latin", "chinese", "overall"] {
        let (o, t) = (ours.get(group).copied().unwrap_or_default(), theirs.get(group).copied().unwrap_or_default());
        eprintln!(
            "{set} {group}: clipdex CER {:.3}% ({} errors in {} characters), RapidOCR {:.3}% ({} errors)",
            o.percent(),
            o.errors,
            o.chars,
            t.percent(),
            t.errors
        );
        if images.len() == truth.len() {
            // The committed rates are the script's own arithmetic on the same reads.
            let committed = &reference[set][group];
            assert_eq!(committed["chars"].as_u64(), Some(t.chars as u64), "{set} {group}: the truth changed");
            assert_eq!(committed["errors"].as_u64(), Some(t.errors as u64), "{set} {group}: the metric differs");
        }
        if (o.percent() - t.percent()).abs() > TOLERANCE_POINTS {
            failures.push(format!("{set} {group}: clipdex {:.3}%, RapidOCR {:.3}%", o.percent(), t.percent()));
        }
    }
    assert!(failures.is_empty(), "character error rates apart by more than {TOLERANCE_POINTS} points: {failures:?}");
}

#[test]
fn ppocr_v4_mobile_reads_the_rendered_set_as_accurately_as_rapidocr() {
    check_accuracy("v4");
}

#[test]
fn ppocr_v6_small_reads_the_rendered_set_as_accurately_as_rapidocr() {
    check_accuracy("v6");
}

#[test]
fn the_error_rate_counts_code_points_without_spaces() {
    assert_eq!(distance(&squeeze("Total 11.05"), &squeeze("TOTAL11.05")), 4);
    assert_eq!(distance(&squeeze("奶茶 12元"), &squeeze("奶荼12元")), 1);
    // Full-width forms are their ASCII selves after NFKC.
    assert_eq!(distance(&squeeze("１２：３０"), &squeeze("12:30")), 0);
    assert_eq!(distance(&[], &squeeze("abc")), 3);
}
