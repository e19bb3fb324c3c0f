//! One-shot commands load only what they need: a text search reads the text tower and leaves
//! the image tower's weights unread, so a model folder whose image tower is missing still
//! answers text queries (and says what is missing when asked to embed a photo).
//!
//! `cold_search_benchmark` (ignored: it writes a 605 MB model and a 10,000-photo library) times
//! cold `clipdex search` runs with a ViT-B/32-shaped CLIP of random weights, with the peak
//! memory that `/usr/bin/time -v` reports; the figures are in the docs' speed chapter.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Mutex};

use candle_core::{DType, Device, Shape, Tensor};
use candle_nn::var_builder::SimpleBackend;
use candle_nn::{Init, VarBuilder};
use clipdex::models::clip::{ClipConfig, ClipModel};
use clipdex::store::{ImageRecord, Store};

const TINY: &str = "tests/fixtures/clip-tiny-p32";

fn clipdex(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_clipdex")).args(args).env_remove("RUST_LOG").output().unwrap()
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        std::fs::copy(entry.path(), to.join(entry.file_name())).unwrap();
    }
}

fn record(i: usize) -> ImageRecord {
    ImageRecord {
        hash: format!("h{i}"),
        size: 1,
        width: 4,
        height: 3,
        modified: 1_700_000_000 + i as i64,
        taken: None,
        camera: None,
        lens: None,
        gps: None,
        video: None,
        motion_video: None,
        motion_video_problem: None,
    }
}

/// A library of `n` photos with pseudo-random unit vectors, as made by `model` (`dim` wide).
fn synthetic_library(db: &Path, model: &Path, dim: usize, n: usize) {
    let model = std::fs::canonicalize(model).unwrap();
    let store = Store::open(db).unwrap();
    store.set_model(model.to_str().unwrap(), dim).unwrap();
    let mut state = 0x9e3779b97f4a7c15u64;
    let mut next = move || {
        state = state.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        ((state >> 40) as f32 / (1u64 << 24) as f32) - 0.5
    };
    for i in 0..n {
        let mut v: Vec<f32> = (0..dim).map(|_| next()).collect();
        let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt();
        v.iter_mut().for_each(|x| *x /= norm);
        store.commit_image(&PathBuf::from(format!("/photos/{i:05}.jpg")), 1, 0, &record(i), &v).unwrap();
    }
    store.flush().unwrap();
}

#[test]
fn a_text_search_answers_without_the_image_tower() {
    let tmp = tempfile::tempdir().unwrap();
    let model = tmp.path().join("clip");
    copy_dir(Path::new(TINY), &model);
    // Drop every tensor of the image tower: a text query must not need them.
    let weights = model.join("model.safetensors");
    let all = candle_core::safetensors::load(&weights, &Device::Cpu).unwrap();
    let kept: HashMap<String, Tensor> = all
        .into_iter()
        .filter(|(name, _)| !name.starts_with("vision_model.") && name != "visual_projection.weight")
        .collect();
    candle_core::safetensors::save(&kept, &weights).unwrap();
    let db = tmp.path().join("db");
    synthetic_library(&db, &model, 24, 5);

    let out = clipdex(&["--db", db.to_str().unwrap(), "search", "a dog", "--json"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "text search failed: {stderr}");
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(json["results"].as_array().map(Vec::len), Some(5), "{json}");

    // An image still needs the image tower, and the error says what is missing.
    let out = clipdex(&[
        "--model",
        model.to_str().unwrap(),
        "embed",
        "--image",
        "tests/fixtures/images/astronaut.jpg",
        "--json",
    ]);
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let error = json["images"][0]["error"].as_str().unwrap_or_default();
    assert!(error.contains("image tower") && error.contains("vision_model."), "{json}");
}

#[test]
fn the_image_tower_is_built_by_the_first_image_only() {
    let clip = clipdex::ClipEmbedder::load(TINY, &Device::Cpu).unwrap();
    let text = clip.embed_texts(&["a dog"]).unwrap();
    assert_eq!(text[0].len(), 24);
    assert!(!clip.model().unwrap().has_image_tower(), "a text query built the image tower");
    let image = image::RgbImage::from_pixel(32, 32, image::Rgb([200, 30, 30]));
    assert_eq!(clip.embed_images(&[image]).unwrap()[0].len(), 24);
    assert!(clip.model().unwrap().has_image_tower());
}

/// Records the name and shape of every weight a model asks for (and hands it zeros).
#[derive(Clone, Default)]
struct Recorder(Arc<Mutex<Vec<(String, Shape)>>>);

impl SimpleBackend for Recorder {
    fn get(&self, s: Shape, name: &str, _: Init, dtype: DType, dev: &Device) -> candle_core::Result<Tensor> {
        self.0.lock().unwrap().push((name.to_string(), s.clone()));
        Tensor::zeros(s, dtype, dev)
    }

    fn get_unchecked(&self, name: &str, _: DType, _: &Device) -> candle_core::Result<Tensor> {
        candle_core::bail!("no shape for {name}")
    }

    fn contains_tensor(&self, _: &str) -> bool {
        true
    }
}

/// A CLIP folder at the shapes of `config` (a Hugging Face `config.json`) with random weights
/// (N(0, 0.02); `logit_scale` ln 100), in f32 as OpenAI's checkpoints are, and the real CLIP
/// tokenizer of the fixtures.
fn random_clip(config: &Path, dir: &Path) {
    std::fs::create_dir_all(dir).unwrap();
    std::fs::copy(config, dir.join("config.json")).unwrap();
    for file in ["tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "preprocessor_config.json"] {
        std::fs::copy(Path::new(TINY).join(file), dir.join(file)).unwrap();
    }
    let parsed: ClipConfig = serde_json::from_str(&std::fs::read_to_string(config).unwrap()).unwrap();
    let recorder = Recorder::default();
    let vb = VarBuilder::from_backend(Box::new(recorder.clone()), DType::F32, Device::Cpu);
    drop(ClipModel::load(&parsed, vb).unwrap());
    let names = std::mem::take(&mut *recorder.0.lock().unwrap());
    let weights: HashMap<String, Tensor> = names
        .into_iter()
        .map(|(name, shape)| {
            let t = if name == "logit_scale" {
                Tensor::new(100f32.ln(), &Device::Cpu).unwrap()
            } else {
                Tensor::randn(0f32, 0.02, shape, &Device::Cpu).unwrap()
            };
            (name, t)
        })
        .collect();
    candle_core::safetensors::save(&weights, dir.join("model.safetensors")).unwrap();
}

/// What `/usr/bin/time -v` measured of one command.
struct Measured {
    wall_s: f64,
    /// User plus system CPU seconds (on a busy machine, the figure that does not depend on
    /// how long the process waited for a core).
    cpu_s: f64,
    peak_rss_kb: u64,
    stdout: String,
}

fn timed(args: &[&str]) -> Measured {
    let out = Command::new("/usr/bin/time")
        .arg("-v")
        .arg(env!("CARGO_BIN_EXE_clipdex"))
        .args(args)
        .env_remove("RUST_LOG")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(out.status.success(), "{stderr}");
    let field = |name: &str| {
        stderr.lines().find_map(|l| l.trim().strip_prefix(name)).map(str::trim).unwrap_or_default().to_string()
    };
    let seconds = |name: &str| field(name).parse::<f64>().unwrap_or(0.0);
    // h:mm:ss or m:ss.ss
    let wall_s = field("Elapsed (wall clock) time (h:mm:ss or m:ss):")
        .split(':')
        .fold(0.0, |total, part| total * 60.0 + part.parse::<f64>().unwrap_or(0.0));
    Measured {
        wall_s,
        cpu_s: seconds("User time (seconds):") + seconds("System time (seconds):"),
        peak_rss_kb: field("Maximum resident set size (kbytes):").parse().unwrap_or(0),
        stdout: String::from_utf8_lossy(&out.stdout).to_string(),
    }
}

/// `CLIPDEX_BENCH_DIR` keeps the model and the library between runs (made when missing).
#[test]
#[ignore = "writes a 605 MB model and a 10,000-photo library; prints the cold search figures"]
fn cold_search_benchmark() {
    let kept = std::env::var_os("CLIPDEX_BENCH_DIR").map(PathBuf::from);
    let tmp = tempfile::tempdir().unwrap();
    let root = kept.unwrap_or_else(|| tmp.path().to_path_buf());
    let model = root.join("clip-vit-b32-random");
    if !model.join("model.safetensors").exists() {
        random_clip(Path::new("tests/fixtures/hub-configs/openai--clip-vit-base-patch32/config.json"), &model);
    }
    let db = root.join("library-10k");
    if !db.exists() {
        synthetic_library(&db, &model, 512, 10_000);
    }
    let db = db.to_str().unwrap();
    for query in ["a dog", "a red car at night", "a dog", "children playing on a beach"] {
        let m = timed(&["--db", db, "search", query, "-k", "10"]);
        assert_eq!(m.stdout.lines().count(), 10, "{}", m.stdout);
        println!(
            "cold search {query:?}: {:.2} s wall, {:.2} s CPU, peak RSS {} MB",
            m.wall_s,
            m.cpu_s,
            m.peak_rss_kb / 1024
        );
    }
}
