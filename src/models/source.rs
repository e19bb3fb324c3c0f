//! Where a model's files come from: a local directory in the Hugging Face layout, or a Hugging
//! Face hub id downloaded once into the standard cache (`HF_HOME`, default
//! `~/.cache/huggingface`). With `HF_HUB_OFFLINE=1` only the cache is consulted.
//!
//! A model family asks its [`ModelRepo`] for file names; this module only knows how to find
//! them and how to explain why one is missing.

use std::path::{Path, PathBuf};

use candle_core::{DType, Device};
use candle_nn::VarBuilder;
use hf_hub::api::sync::{ApiBuilder, ApiRepo};
use hf_hub::{Cache, Repo};

use crate::error::{Error, Result, first_line};

/// A model's file store: a local directory or a hub repository.
pub struct ModelRepo {
    name: String,
    place: Place,
}

enum Place {
    Local(PathBuf),
    Hub { cache: hf_hub::CacheRepo, api: Option<Box<ApiRepo>> },
}

impl ModelRepo {
    /// Opens `spec`: an existing directory, or else a hub id such as
    /// `openai/clip-vit-base-patch32`. Nothing is downloaded until a file is asked for.
    pub fn open(spec: &str) -> Result<Self> {
        let path = Path::new(spec);
        if path.is_dir() {
            return Ok(ModelRepo { name: spec.to_string(), place: Place::Local(path.to_path_buf()) });
        }
        if !looks_like_hub_id(spec) {
            return Err(Error::model(
                spec,
                "no such directory, and not a Hugging Face id (owner/name); pass a model \
                 directory or a hub id such as openai/clip-vit-base-patch32",
            ));
        }
        let repo = Repo::model(spec.to_string());
        let cache = Cache::from_env().repo(repo.clone());
        let api = if offline() {
            None
        } else {
            let builder = ApiBuilder::from_env().with_progress(std::io::IsTerminal::is_terminal(&std::io::stderr()));
            match builder.build() {
                Ok(api) => Some(Box::new(api.repo(repo))),
                Err(e) => {
                    tracing::warn!("cannot set up the Hugging Face client ({e}); using the cache only");
                    None
                }
            }
        };
        Ok(ModelRepo { name: spec.to_string(), place: Place::Hub { cache, api } })
    }

    /// The model's name as the user gave it.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// A file that must exist.
    pub fn required(&self, file: &str) -> Result<PathBuf> {
        self.optional(file)?.ok_or_else(|| self.missing(&[file]))
    }

    /// The first of `files` that exists (for alternatives such as `model.safetensors` or
    /// `pytorch_model.bin`).
    pub fn first_of(&self, files: &[&str]) -> Result<(usize, PathBuf)> {
        for (i, f) in files.iter().enumerate() {
            if let Some(p) = self.optional(f)? {
                return Ok((i, p));
            }
        }
        Err(self.missing(files))
    }

    /// A file that may be absent; `Err` only when we cannot tell (the network failed).
    pub fn optional(&self, file: &str) -> Result<Option<PathBuf>> {
        match &self.place {
            Place::Local(dir) => {
                let p = dir.join(file);
                Ok(p.is_file().then_some(p))
            }
            Place::Hub { cache, api } => {
                if let Some(p) = cache.get(file) {
                    return Ok(Some(p));
                }
                let Some(api) = api else { return Ok(None) };
                match api.get(file) {
                    Ok(p) => Ok(Some(p)),
                    // ureq reports HTTP statuses as "...: status code 404"; matching the text
                    // spares a direct dependency on hf-hub's HTTP client.
                    Err(e) if e.to_string().contains("status code 404") => Ok(None),
                    Err(e) => Err(Error::model(
                        &self.name,
                        format!(
                            "cannot download {file} from the Hugging Face hub ({e}); check the \
                             network and the id, or pass a local model directory"
                        ),
                    )),
                }
            }
        }
    }

    fn missing(&self, files: &[&str]) -> Error {
        let list = files.join(" or ");
        let reason = match &self.place {
            Place::Local(dir) => format!("{list} not found in {}", dir.display()),
            Place::Hub { api: None, .. } => format!(
                "{list} is not in the Hugging Face cache ({}) and downloads are off \
                 (HF_HUB_OFFLINE or no client); download it once with network, or pass a local \
                 model directory",
                Cache::from_env().path().display()
            ),
            Place::Hub { api: Some(_), .. } => {
                format!("the hub repository has no {list}; is this the right model id?")
            }
        };
        Error::model(&self.name, reason)
    }
}

/// How a library records a model: a local directory by its canonical path (so `./model`,
/// `/abs/model/` and a symbolic link to it are one model), a hub id as given.
pub fn canonical_spec(spec: &str) -> String {
    let path = Path::new(spec);
    if path.is_dir()
        && let Ok(canonical) = std::fs::canonicalize(path)
        && let Some(s) = canonical.to_str()
    {
        return s.to_string();
    }
    spec.to_string()
}

/// What a local model directory holds, in a few bytes: a hash of `config.json`, and of the
/// weights file's size, first and last MiB (its header, and tensors at both ends). Two
/// directories with the same fingerprint hold the same model, so a library follows its model
/// when the folder moves. `None` for a hub id or a directory without those files.
pub fn local_fingerprint(spec: &str) -> Option<String> {
    use std::io::{Read, Seek, SeekFrom};
    const SPAN: u64 = 1 << 20;
    let dir = Path::new(spec);
    if !dir.is_dir() {
        return None;
    }
    // A Hugging Face layout, or an OpenCLIP checkpoint's.
    let layouts = [
        ("config.json", ["model.safetensors", "pytorch_model.bin"]),
        ("open_clip_config.json", ["open_clip_model.safetensors", "open_clip_pytorch_model.bin"]),
    ];
    let (config, weights) = layouts.iter().find_map(|(config, weights)| {
        let config = std::fs::read(dir.join(config)).ok()?;
        Some((config, weights.iter().map(|f| dir.join(f)).find(|p| p.is_file())?))
    })?;
    let mut file = std::fs::File::open(&weights).ok()?;
    let size = file.metadata().ok()?.len();
    let mut h = blake3::Hasher::new();
    h.update(&(config.len() as u64).to_le_bytes());
    h.update(&config);
    h.update(&size.to_le_bytes());
    let mut span = Vec::new();
    (&mut file).take(SPAN).read_to_end(&mut span).ok()?;
    h.update(&span);
    if size > SPAN {
        file.seek(SeekFrom::Start(size.saturating_sub(SPAN).max(SPAN))).ok()?;
        span.clear();
        file.take(SPAN).read_to_end(&mut span).ok()?;
        h.update(&span);
    }
    Some(h.finalize().to_hex()[..32].to_string())
}

pub(crate) fn offline() -> bool {
    std::env::var("HF_HUB_OFFLINE")
        .map(|v| matches!(v.trim().to_ascii_lowercase().as_str(), "1" | "true" | "yes" | "on"))
        .unwrap_or(false)
}

/// `owner/name` with hub-legal characters; anything else was meant as a path.
pub(crate) fn looks_like_hub_id(spec: &str) -> bool {
    let mut parts = spec.split('/');
    let ok = |s: Option<&str>| {
        s.is_some_and(|s| {
            !s.is_empty() && !s.starts_with('.') && s.chars().all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
        })
    };
    ok(parts.next()) && ok(parts.next()) && parts.next().is_none()
}

/// The weights of a repository: `model.safetensors`, else `pytorch_model.bin`.
pub(crate) fn repo_weights(repo: &ModelRepo, device: &Device) -> Result<VarBuilder<'static>> {
    repo_weights_at(repo, "", device)
}

/// The weights in the repository's folder `at` (empty, or ending in `/`).
pub(crate) fn repo_weights_at(repo: &ModelRepo, at: &str, device: &Device) -> Result<VarBuilder<'static>> {
    let (which, weights) = repo.first_of(&[&format!("{at}model.safetensors"), &format!("{at}pytorch_model.bin")])?;
    open_weights(repo.name(), &weights, which == 0, device)
}

/// The weights in the first of `files` the repository holds: a `.safetensors` file
/// (read on demand), else a pickled PyTorch state dict (open_clip's hub files have their own
/// names, `open_clip_model.safetensors` and `open_clip_pytorch_model.bin`).
pub(crate) fn repo_weights_named(repo: &ModelRepo, files: &[&str], device: &Device) -> Result<VarBuilder<'static>> {
    let (which, weights) = repo.first_of(files)?;
    open_weights(repo.name(), &weights, files[which].ends_with(".safetensors"), device)
}

/// Opens `model.safetensors` (read tensor by tensor) or `pytorch_model.bin` (a zip, read
/// tensor by tensor from it), converting to f32.
fn open_weights(model: &str, path: &Path, safetensors: bool, device: &Device) -> Result<VarBuilder<'static>> {
    let opened = if safetensors {
        // Read tensor by tensor as the model asks for them (see `weights`): a model that
        // builds only some of its parts reads only their weights.
        crate::models::weights::SafetensorsFile::open(path)
            .map(|file| VarBuilder::from_backend(Box::new(file), DType::F32, device.clone()))
    } else {
        VarBuilder::from_pth(path, DType::F32, device)
    };
    opened.map_err(|e| {
        Error::model(
            model,
            format!(
                "cannot read weights {} ({}); the file is corrupt or incomplete: delete it and download it again",
                path.display(),
                first_line(&e)
            ),
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tells_hub_ids_from_paths() {
        assert!(looks_like_hub_id("openai/clip-vit-base-patch32"));
        assert!(looks_like_hub_id("OFA-Sys/chinese-clip-vit-base-patch16"));
        assert!(!looks_like_hub_id("clip"));
        assert!(!looks_like_hub_id("/models/clip"));
        assert!(!looks_like_hub_id("./clip/x"));
        assert!(!looks_like_hub_id("a/b/c"));
        assert!(!looks_like_hub_id("../x"));
    }

    #[test]
    fn one_model_by_any_spelling_and_in_any_place() {
        let fixture = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/clip-tiny-p32");
        let canonical = canonical_spec(fixture.to_str().unwrap());
        assert_eq!(canonical_spec(&format!("{}/", fixture.display())), canonical);
        assert_eq!(canonical_spec(&format!("{}/../clip-tiny-p32", fixture.display())), canonical);
        assert_eq!(canonical_spec("openai/clip-vit-base-patch32"), "openai/clip-vit-base-patch32");
        let tmp = tempfile::tempdir().unwrap();
        let moved = tmp.path().join("moved");
        std::fs::create_dir(&moved).unwrap();
        for entry in std::fs::read_dir(&fixture).unwrap() {
            let entry = entry.unwrap();
            std::fs::copy(entry.path(), moved.join(entry.file_name())).unwrap();
        }
        let here = local_fingerprint(&canonical).unwrap();
        assert_eq!(local_fingerprint(moved.to_str().unwrap()).as_deref(), Some(here.as_str()));
        let other = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/clip-tiny-p16");
        assert_ne!(local_fingerprint(other.to_str().unwrap()).unwrap(), here);
        assert_eq!(local_fingerprint("openai/clip-vit-base-patch32"), None);
    }

    #[test]
    fn an_openclip_folder_has_a_fingerprint_of_its_own_files() {
        let dir = |name: &str| Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures").join(name);
        let gelu = local_fingerprint(dir("openclip-tiny-gelu").to_str().unwrap()).unwrap();
        let quick = local_fingerprint(dir("openclip-tiny-quickgelu").to_str().unwrap()).unwrap();
        assert_ne!(gelu, quick);
    }

    #[test]
    fn a_missing_directory_is_a_clear_error() {
        let err = ModelRepo::open("/no/such/model/dir").err().unwrap().to_string();
        assert!(err.contains("/no/such/model/dir") && err.contains("no such directory"), "{err}");
    }
}
