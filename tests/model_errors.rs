//! Every broken model source gives one clear error naming the model, never a panic.

use std::path::{Path, PathBuf};

use candle_core::Device;
use clipdex::ClipEmbedder;

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures").join(name)
}

/// A copy of a fixture model in a fresh temporary directory, to break at will.
struct Scratch(PathBuf);

impl Scratch {
    fn copy_of(name: &str, tag: &str) -> Self {
        let dir = std::env::temp_dir().join(format!("clipdex-err-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        for entry in std::fs::read_dir(fixture(name)).unwrap() {
            let entry = entry.unwrap();
            std::fs::copy(entry.path(), dir.join(entry.file_name())).unwrap();
        }
        Scratch(dir)
    }

    fn load_error(&self) -> String {
        match ClipEmbedder::load(self.0.to_str().unwrap(), &Device::Cpu) {
            Ok(_) => panic!("loading {} should fail", self.0.display()),
            Err(e) => e.to_string(),
        }
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn assert_one_line_naming(err: &str, model: &Path, words: &[&str]) {
    assert!(!err.contains('\n'), "not one line: {err}");
    assert!(err.contains(model.to_str().unwrap()), "does not name the model: {err}");
    for w in words {
        assert!(err.contains(w), "expected {w:?} in: {err}");
    }
}

#[test]
fn missing_config() {
    let s = Scratch::copy_of("clip-tiny-p32", "noconfig");
    std::fs::remove_file(s.0.join("config.json")).unwrap();
    assert_one_line_naming(&s.load_error(), &s.0, &["config.json not found"]);
}

#[test]
fn wrong_architecture() {
    let s = Scratch::copy_of("clip-tiny-p32", "arch");
    std::fs::write(s.0.join("config.json"), r#"{"model_type": "bert", "hidden_size": 16}"#).unwrap();
    assert_one_line_naming(&s.load_error(), &s.0, &["bert", "not CLIP"]);
}

#[test]
fn config_that_is_not_json() {
    let s = Scratch::copy_of("clip-tiny-p32", "badjson");
    std::fs::write(s.0.join("config.json"), "{\"model_type\": \"clip\", ").unwrap();
    assert_one_line_naming(&s.load_error(), &s.0, &["invalid", "config.json"]);
}

#[test]
fn missing_weights() {
    let s = Scratch::copy_of("clip-tiny-p32", "noweights");
    std::fs::remove_file(s.0.join("model.safetensors")).unwrap();
    assert_one_line_naming(&s.load_error(), &s.0, &["model.safetensors or pytorch_model.bin not found"]);
}

#[test]
fn corrupt_safetensors() {
    let s = Scratch::copy_of("clip-tiny-p32", "badst");
    std::fs::write(s.0.join("model.safetensors"), b"\x10\x00\x00\x00\x00\x00\x00\x00{not a header").unwrap();
    assert_one_line_naming(&s.load_error(), &s.0, &["corrupt", "model.safetensors"]);
}

#[test]
fn truncated_safetensors() {
    let s = Scratch::copy_of("clip-tiny-p32", "shortst");
    let path = s.0.join("model.safetensors");
    let bytes = std::fs::read(&path).unwrap();
    std::fs::write(&path, &bytes[..bytes.len() / 2]).unwrap();
    assert_one_line_naming(&s.load_error(), &s.0, &["model.safetensors"]);
}

#[test]
fn corrupt_pytorch_pickle() {
    let s = Scratch::copy_of("clip-tiny-p16", "badpt");
    std::fs::write(s.0.join("pytorch_model.bin"), b"PK\x03\x04 this is not a zip").unwrap();
    assert_one_line_naming(&s.load_error(), &s.0, &["corrupt", "pytorch_model.bin"]);
}

#[test]
fn weights_of_another_shape() {
    let s = Scratch::copy_of("clip-tiny-p32", "shape");
    let text = std::fs::read_to_string(s.0.join("config.json")).unwrap();
    std::fs::write(s.0.join("config.json"), text.replace("\"projection_dim\": 24", "\"projection_dim\": 32")).unwrap();
    assert_one_line_naming(&s.load_error(), &s.0, &["do not fit config.json"]);
}

#[test]
fn missing_tokenizer() {
    let s = Scratch::copy_of("clip-tiny-p32", "notok");
    std::fs::remove_file(s.0.join("tokenizer.json")).unwrap();
    assert_one_line_naming(&s.load_error(), &s.0, &["no tokenizer"]);
}

#[test]
fn missing_preprocessor_config_falls_back_to_clip_defaults() {
    let s = Scratch::copy_of("clip-tiny-p32", "nopp");
    std::fs::remove_file(s.0.join("preprocessor_config.json")).unwrap();
    // The fixture's preprocessor config *is* CLIP's default at 224 px, so nothing changes.
    let clip = ClipEmbedder::load(s.0.to_str().unwrap(), &Device::Cpu).unwrap();
    assert_eq!(clip.processor(), &clipdex::models::preprocess::ImageProcessor::clip_default(224));
}

#[test]
fn no_such_directory() {
    let err = ClipEmbedder::load("/definitely/not/a/model", &Device::Cpu).err().unwrap().to_string();
    assert!(err.contains("/definitely/not/a/model") && err.contains("no such directory"), "{err}");
}

#[test]
fn hub_id_offline_without_cache() {
    // Run in a child process: the environment must not leak into other tests.
    if std::env::var_os("CLIPDEX_TEST_OFFLINE_CHILD").is_some() {
        let err = ClipEmbedder::load("openai/clip-vit-base-patch32", &Device::Cpu).err().unwrap().to_string();
        assert!(!err.contains('\n'), "{err}");
        assert!(err.contains("openai/clip-vit-base-patch32"), "{err}");
        assert!(err.contains("not in the Hugging Face cache") && err.contains("local model directory"), "{err}");
        return;
    }
    let home = std::env::temp_dir().join(format!("clipdex-hfhome-{}", std::process::id()));
    std::fs::create_dir_all(&home).unwrap();
    let status = std::process::Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "hub_id_offline_without_cache", "--nocapture"])
        .env("CLIPDEX_TEST_OFFLINE_CHILD", "1")
        .env("HF_HOME", &home)
        .env("HF_HUB_OFFLINE", "1")
        .status()
        .unwrap();
    let _ = std::fs::remove_dir_all(&home);
    assert!(status.success());
}
