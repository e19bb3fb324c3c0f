//! The configuration files the Hugging Face hub really ships (verbatim copies in
//! `tests/fixtures/hub-configs/`, their sources in its `SOURCES.md`), read by clipdex and
//! compared with what transformers derives from them (`derived.json`, written by
//! `tools/make_hub_config_goldens.py`): shapes, special token ids, context length, image size,
//! resizing, cropping and normalisation. No weights are needed.

use std::path::{Path, PathBuf};

use clipdex::models::blip::{BlipConfig, blip_processor_default};
use clipdex::models::clip::{ClipConfig, HiddenAct};
use clipdex::models::preprocess::{ImageProcessor, Resample, ResizeTo};
use serde_json::Value;

fn dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/hub-configs")
}

fn derived() -> Value {
    serde_json::from_str(&std::fs::read_to_string(dir().join("derived.json")).unwrap()).unwrap()
}

fn act(name: &Value) -> HiddenAct {
    match name.as_str().unwrap() {
        "gelu" => HiddenAct::Gelu,
        "quick_gelu" => HiddenAct::QuickGelu,
        "relu" => HiddenAct::Relu,
        other => panic!("activation {other}"),
    }
}

fn n(v: &Value) -> usize {
    v.as_u64().unwrap() as usize
}

/// The preprocessing clipdex derives from the model's `preprocessor_config.json` (with the
/// model family's defaults for what the file leaves out) against transformers'.
fn check_processor(model: &str, p: &ImageProcessor, want: &Value) {
    let size = &want["size"];
    let expected_resize = if let Some(s) = size.get("shortest_edge") {
        ResizeTo::ShortestEdge(n(s) as u32)
    } else {
        ResizeTo::Exact { width: n(&size["width"]) as u32, height: n(&size["height"]) as u32 }
    };
    assert_eq!(p.resize, want["do_resize"].as_bool().unwrap().then_some(expected_resize), "{model}: resize");
    let resample = match want["resample"].as_u64().unwrap() {
        0 => Resample::Nearest,
        1 => Resample::Lanczos,
        2 => Resample::Bilinear,
        3 => Resample::Bicubic,
        other => panic!("resample {other}"),
    };
    assert_eq!(p.resample, resample, "{model}: resample");
    let crop = want["do_center_crop"]
        .as_bool()
        .unwrap()
        .then(|| (n(&want["crop_size"]["height"]) as u32, n(&want["crop_size"]["width"]) as u32));
    assert_eq!(p.center_crop, crop, "{model}: crop");
    let rescale = want["do_rescale"].as_bool().unwrap().then(|| want["rescale_factor"].as_f64().unwrap() as f32);
    assert_eq!(p.rescale, rescale, "{model}: rescale");
    let three = |v: &Value| -> [f32; 3] {
        let v: Vec<f32> = v.as_array().unwrap().iter().map(|x| x.as_f64().unwrap() as f32).collect();
        [v[0], v[1], v[2]]
    };
    let normalize =
        want["do_normalize"].as_bool().unwrap().then(|| (three(&want["image_mean"]), three(&want["image_std"])));
    assert_eq!(p.normalize, normalize, "{model}: normalisation");
}

#[test]
fn real_clip_configs_read_as_transformers_reads_them() {
    let derived = derived();
    let mut checked = 0;
    for (model, want) in derived["models"].as_object().unwrap() {
        if want["model_type"] != "clip" {
            continue;
        }
        let text = std::fs::read_to_string(dir().join(model).join("config.json")).unwrap();
        let c: ClipConfig = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{model}: {e}"));
        let (t, v) = (&c.text_config, &c.vision_config);
        let (wt, wv) = (&want["text"], &want["vision"]);
        assert_eq!(c.model_type.as_deref(), Some("clip"));
        assert_eq!(c.projection_dim, n(&want["projection_dim"]), "{model}");
        assert_eq!(
            (t.vocab_size, t.hidden_size, t.intermediate_size, t.num_hidden_layers, t.num_attention_heads),
            (
                n(&wt["vocab_size"]),
                n(&wt["hidden_size"]),
                n(&wt["intermediate_size"]),
                n(&wt["num_hidden_layers"]),
                n(&wt["num_attention_heads"])
            ),
            "{model}: text shapes"
        );
        assert_eq!(t.max_position_embeddings, n(&wt["max_position_embeddings"]), "{model}: context length");
        assert_eq!(t.hidden_act, act(&wt["hidden_act"]));
        assert_eq!(t.layer_norm_eps, wt["layer_norm_eps"].as_f64().unwrap());
        assert_eq!(t.eos_token_id == 2, want["legacy_pooling"].as_bool().unwrap(), "{model}: pooling");
        assert_eq!(
            (
                v.hidden_size,
                v.intermediate_size,
                v.num_hidden_layers,
                v.num_attention_heads,
                v.image_size,
                v.patch_size
            ),
            (
                n(&wv["hidden_size"]),
                n(&wv["intermediate_size"]),
                n(&wv["num_hidden_layers"]),
                n(&wv["num_attention_heads"]),
                n(&wv["image_size"]),
                n(&wv["patch_size"])
            ),
            "{model}: vision shapes"
        );
        assert_eq!(
            (v.hidden_act, v.layer_norm_eps, v.num_channels),
            (act(&wv["hidden_act"]), wv["layer_norm_eps"].as_f64().unwrap(), n(&wv["num_channels"]))
        );
        if let Some(p) = want.get("processor") {
            let path = dir().join(model).join("preprocessor_config.json");
            let processor =
                ImageProcessor::from_file(model, &path, ImageProcessor::clip_default(v.image_size as u32)).unwrap();
            check_processor(model, &processor, p);
        }
        checked += 1;
    }
    assert!(checked >= 1);
}

#[test]
fn real_blip_configs_read_as_transformers_reads_them() {
    let derived = derived();
    let mut checked = 0;
    for (model, want) in derived["models"].as_object().unwrap() {
        if want["model_type"] != "blip" {
            continue;
        }
        // The hub's blip-image-captioning-base (saved by transformers 4.26) has no
        // encoder_hidden_size: clipdex used to refuse it, so every first `caption` failed.
        let text = std::fs::read_to_string(dir().join(model).join("config.json")).unwrap();
        let c: BlipConfig = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{model}: {e}"));
        let (t, v) = (&c.text_config, &c.vision_config);
        let (wt, wv) = (&want["text"], &want["vision"]);
        assert_eq!(
            (
                t.vocab_size,
                t.hidden_size,
                t.encoder_hidden_size,
                t.intermediate_size,
                t.num_hidden_layers,
                t.num_attention_heads
            ),
            (
                n(&wt["vocab_size"]),
                n(&wt["hidden_size"]),
                n(&wt["encoder_hidden_size"]),
                n(&wt["intermediate_size"]),
                n(&wt["num_hidden_layers"]),
                n(&wt["num_attention_heads"])
            ),
            "{model}: text shapes"
        );
        assert_eq!(t.max_position_embeddings, n(&wt["max_position_embeddings"]));
        assert_eq!((t.hidden_act, t.layer_norm_eps), (act(&wt["hidden_act"]), wt["layer_norm_eps"].as_f64().unwrap()));
        assert_eq!(t.bos_token_id as u64, wt["bos_token_id"].as_u64().unwrap(), "{model}: [DEC]");
        // Generation stops at [SEP], not at the file's eos_token_id.
        assert_eq!(t.sep_token_id as u64, want["stop_token_id"].as_u64().unwrap(), "{model}: stop token");
        assert_ne!(wt["eos_token_id"], want["stop_token_id"]);
        assert_eq!(
            (
                v.hidden_size,
                v.intermediate_size,
                v.num_hidden_layers,
                v.num_attention_heads,
                v.image_size,
                v.patch_size
            ),
            (
                n(&wv["hidden_size"]),
                n(&wv["intermediate_size"]),
                n(&wv["num_hidden_layers"]),
                n(&wv["num_attention_heads"]),
                n(&wv["image_size"]),
                n(&wv["patch_size"])
            ),
            "{model}: vision shapes"
        );
        assert_eq!((v.hidden_act, v.layer_norm_eps), (act(&wv["hidden_act"]), wv["layer_norm_eps"].as_f64().unwrap()));
        assert_eq!(c.image_text_hidden_size, n(&want["image_text_hidden_size"]));
        if let Some(p) = want.get("processor") {
            let path = dir().join(model).join("preprocessor_config.json");
            let processor =
                ImageProcessor::from_file(model, &path, blip_processor_default(v.image_size as u32)).unwrap();
            check_processor(model, &processor, p);
        }
        checked += 1;
    }
    assert!(checked >= 1);
}

#[test]
fn every_file_in_the_folder_is_checked_and_named_in_sources() {
    let sources = std::fs::read_to_string(dir().join("SOURCES.md")).unwrap();
    let derived = derived();
    for entry in std::fs::read_dir(dir()).unwrap() {
        let entry = entry.unwrap();
        if !entry.file_type().unwrap().is_dir() {
            continue;
        }
        let model = entry.file_name().to_string_lossy().into_owned();
        assert!(
            derived["models"].get(&model).is_some(),
            "{model} has no derived values: run tools/make_hub_config_goldens.py"
        );
        for file in std::fs::read_dir(entry.path()).unwrap() {
            let name = file.unwrap().file_name().to_string_lossy().into_owned();
            assert!(
                sources.contains(&format!("{model}/{name}")),
                "SOURCES.md does not say where {model}/{name} comes from"
            );
        }
    }
}

/// A tiny BLIP captioner whose config.json is the hub's `blip-image-captioning-base` file with
/// only its sizes cut (`tools/make_legacy_blip_fixture.py`): no `encoder_hidden_size`, a vision
/// tower wider (48) than the text one (32), the hub's preprocessor file with a bare integer
/// `size`. It loads, and captions as transformers does.
#[test]
fn a_captioner_with_the_hubs_config_layout_matches_transformers() {
    use clipdex::models::blip::BlipCaptioner;
    use clipdex::photo::{DecodeOptions, open_rgb};
    let fixtures = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures");
    let dir = fixtures.join("hub-configs-tiny/blip-legacy");
    let golden: Value = serde_json::from_str(
        &std::fs::read_to_string(fixtures.join("hub-configs-tiny/blip-legacy.golden.json")).unwrap(),
    )
    .unwrap();
    let config: Value = serde_json::from_str(&std::fs::read_to_string(dir.join("config.json")).unwrap()).unwrap();
    assert!(config["text_config"].get("encoder_hidden_size").is_none(), "the hub's layout: no encoder_hidden_size");
    let captioner = BlipCaptioner::load(dir.to_str().unwrap(), &candle_core::Device::Cpu).unwrap();
    let start = captioner.start_ids(None).unwrap();
    for case in golden["cases"].as_array().unwrap() {
        let image = open_rgb(&fixtures.join("images").join(case["image"].as_str().unwrap()), &DecodeOptions::default())
            .unwrap();
        let ids = captioner.beam_search(&image, &start, 1, 8).unwrap();
        let want: Vec<u32> = case["ids"].as_array().unwrap().iter().map(|v| v.as_u64().unwrap() as u32).collect();
        assert_eq!(ids, want, "{}", case["image"]);
    }
}
