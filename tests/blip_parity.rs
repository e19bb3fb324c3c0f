//! BLIP against transformers on the tiny fixture (`tools/make_blip_fixtures.py`): so far the
//! image encoder and its preprocessing (issue 6 is in progress).

use std::path::{Path, PathBuf};

use candle_core::Device;
use clipdex::models::blip::BlipImageEncoder;
use clipdex::photo::{DecodeOptions, open_rgb};

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

fn encoder() -> BlipImageEncoder {
    BlipImageEncoder::load(fixtures().join("blip/blip-tiny-captioning").to_str().unwrap(), &Device::Cpu).unwrap()
}

fn photo(name: &str) -> image::RgbImage {
    open_rgb(&fixtures().join("images").join(name), &DecodeOptions::default()).unwrap()
}

#[test]
fn image_encoder_states_match_the_reference() {
    let enc = encoder();
    let golden =
        candle_core::safetensors::load(fixtures().join("blip/blip-tiny-captioning.golden.safetensors"), &Device::Cpu)
            .unwrap();
    for name in ["astronaut.jpg", "coffee.png", "chelsea_exif6.jpg"] {
        let ours = enc.encode(&photo(name)).unwrap();
        let reference = golden[&format!("vision/{name}")].to_dtype(candle_core::DType::F32).unwrap();
        assert_eq!(ours.dims(), reference.dims());
        let diff = (ours - reference).unwrap().abs().unwrap().max_all().unwrap().to_scalar::<f32>().unwrap();
        assert!(diff < 1e-4, "{name}: encoder states differ by {diff}");
    }
}

#[test]
fn preprocessing_is_the_reference_bicubic_384() {
    let enc = encoder();
    let reference = image::open(fixtures().join("blip/chelsea_exif6.jpg.384.png")).unwrap().to_rgb8();
    let pixels = enc.preprocess(&photo("chelsea_exif6.jpg")).unwrap().to_vec3::<f32>().unwrap();
    let (mean, std) = (clipdex::models::preprocess::OPENAI_CLIP_MEAN, clipdex::models::preprocess::OPENAI_CLIP_STD);
    let mut worst = 0f32;
    for (x, y, p) in reference.enumerate_pixels() {
        for c in 0..3 {
            let ours = (pixels[c][y as usize][x as usize] * std[c] + mean[c]) * 255.0;
            worst = worst.max((ours - p.0[c] as f32).abs());
        }
    }
    assert!(worst < 0.01, "resized pixels differ by {worst}");
}

#[test]
fn a_clip_directory_is_not_blip() {
    let e = BlipImageEncoder::load(fixtures().join("clip-tiny-p32").to_str().unwrap(), &Device::Cpu)
        .err()
        .unwrap()
        .to_string();
    assert!(e.contains("not BLIP"), "{e}");
}
