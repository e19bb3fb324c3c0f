//! Zero-shot probabilities equal the reference (transformers, `tools/make_fixtures.py`) within
//! 1e-4, for a single template and a prompt ensemble, on both fixture models.

use std::path::Path;

use candle_core::Device;
use clipdex::ClipEmbedder;
use clipdex::photo::{DecodeOptions, open_rgb};
use clipdex::query::tags::ZeroShotClassifier;

mod common;

fn check(name: &str) {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures");
    let g = common::zeroshot_golden(name);
    let clip = ClipEmbedder::load(root.join(name).to_str().unwrap(), &Device::Cpu).unwrap();
    let mut ensembles = 0;
    for case in &g.cases {
        let classifier = ZeroShotClassifier::new(&clip, &g.labels, &case.templates).unwrap();
        let image = open_rgb(&root.join("images").join(&case.image), &DecodeOptions::default()).unwrap();
        let e = clip.embed_images(&[image]).unwrap().remove(0);
        let scores = classifier.scores(&e);
        for (i, s) in scores.iter().enumerate() {
            assert_eq!(s.label, g.labels[i]);
            assert!(
                (s.cosine - case.cosine[i]).abs() < 1e-4,
                "{name} {} {:?} {}: cosine {} vs {}",
                case.image,
                case.templates,
                s.label,
                s.cosine,
                case.cosine[i]
            );
            assert!(
                (s.probability - case.probability[i]).abs() < 1e-4,
                "{name} {} {} templates, {}: probability {} vs {}",
                case.image,
                case.templates.len(),
                s.label,
                s.probability,
                case.probability[i]
            );
        }
        let ranked = classifier.classify(&e);
        assert!(ranked.windows(2).all(|w| w[0].probability >= w[1].probability));
        ensembles += usize::from(case.templates.len() > 1);
    }
    assert!(ensembles > 0, "the goldens include prompt ensembles");
}

#[test]
fn p32_zero_shot_probabilities_match_the_reference() {
    check("clip-tiny-p32");
}

#[test]
fn p16_zero_shot_probabilities_match_the_reference() {
    check("clip-tiny-p16");
}
