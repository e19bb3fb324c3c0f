//! Getting models onto this machine once (`clipdex models download`), and saying exactly what to
//! copy where when the network is out of reach.
//!
//! Two kinds of source:
//!
//! - **Hugging Face hub ids** (CLIP, OpenCLIP, SigLIP, Chinese-CLIP, BLIP, CLIPSeg): the files
//!   a loader reads ([`hub_files_to_fetch`]) go into the standard Hugging Face cache (`HF_HOME`,
//!   default `~/.cache/huggingface`), where [`super::source::ModelRepo`] finds them later, also
//!   with `HF_HUB_OFFLINE=1`.
//! - **Pinned PyPI files** for the models that no hub repository ships in a layout clipdex reads:
//!   the PP-OCR models (from the `rapidocr` wheel) and dlib's face models (from the
//!   `face_recognition_models` source package). Each file is pinned by URL and SHA-256; nothing
//!   is unpacked before its hash matches, and the unpacked folder only appears, complete, at
//!   [`default_model_dir`] once every member is written (a `.complete` marker, as
//!   `tools/fetch_ocr_models.sh` and `tools/fetch_face_models.sh` leave).
//!
//! Nothing here reaches the network unless asked to: tests run it against a local server or
//! an unreachable address.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

use hf_hub::api::sync::{ApiBuilder, ApiError};
use hf_hub::{Cache, Repo};
use sha2::{Digest, Sha256};

use crate::error::{Error, Result};

/// The models that are fetched as pinned files rather than from the hub.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ModelKind {
    /// PP-OCRv6 small detector and recogniser with the v2 line orientation classifier
    /// (`clipdex ocr`, `--ocr-model`).
    Ocr,
    /// dlib's CNN face detector, 5-point landmarks and face embedding (`clipdex faces`,
    /// `--face-model`).
    Faces,
}

impl ModelKind {
    /// The name `clipdex models download` takes (`ocr`, `faces`).
    pub fn name(self) -> &'static str {
        match self {
            ModelKind::Ocr => "ocr",
            ModelKind::Faces => "faces",
        }
    }

    /// The kind named `name`, if any.
    pub fn from_name(name: &str) -> Option<ModelKind> {
        match name {
            "ocr" => Some(ModelKind::Ocr),
            "faces" => Some(ModelKind::Faces),
            _ => None,
        }
    }

    /// The command-line option that takes a folder of this kind.
    pub fn option(self) -> &'static str {
        match self {
            ModelKind::Ocr => "--ocr-model",
            ModelKind::Faces => "--face-model",
        }
    }
}

/// Where `clipdex models download ocr|faces` puts a kind's models, and where `ocr` and `faces`
/// look when no model folder is given (`ocr_model`/`face_model` left at `default`):
/// `clipdex/models/ocr` and `clipdex/models/faces` in the platform's cache folder
/// (`$XDG_CACHE_HOME` or `~/.cache` on Linux, `~/Library/Caches` on macOS). A folder counts only
/// once complete ([`is_complete`]).
pub fn default_model_dir(kind: ModelKind) -> PathBuf {
    dirs::cache_dir().unwrap_or_else(|| PathBuf::from(".cache")).join("clipdex").join("models").join(kind.name())
}

/// Whether `dir` holds a finished download (its `.complete` marker): a download cut short
/// leaves no folder there at all, and a folder filled by hand without the marker is used
/// when named explicitly, never found by default.
pub fn is_complete(dir: &Path) -> bool {
    dir.join(COMPLETE).is_file()
}

/// [`default_model_dir`] of `kind` when it holds a finished download.
pub fn downloaded_model_dir(kind: ModelKind) -> Option<PathBuf> {
    let dir = default_model_dir(kind);
    is_complete(&dir).then_some(dir)
}

const COMPLETE: &str = ".complete";

/// One pinned file of a PyPI package.
#[derive(Debug, Clone, Copy)]
pub struct PinnedPackage {
    /// Its file name, as PyPI and `pip download` name it.
    pub file: &'static str,
    /// Its path under the PyPI file host ([`PYPI_FILES`]).
    pub url_path: &'static str,
    /// Its SHA-256, as `tools/fetch_*_models.sh` pin it.
    pub sha256: &'static str,
    /// Its size in MB, for the messages.
    pub size_mb: u32,
    /// The files taken out of it: the path inside the archive, the name in the model folder,
    /// and, where pinned, the member's own SHA-256.
    pub members: &'static [(&'static str, &'static str, Option<&'static str>)],
    /// Licence of the models.
    pub licence: &'static str,
}

/// Where PyPI serves package files; `CLIPDEX_PYPI_FILES_URL` replaces it (a mirror of
/// `files.pythonhosted.org`, or a local server in tests).
pub const PYPI_FILES: &str = "https://files.pythonhosted.org";

/// The PP-OCRv6 small models, as `tools/fetch_ocr_models.sh` takes them into its `v6` folder.
pub const OCR_PACKAGE: PinnedPackage = PinnedPackage {
    file: "rapidocr-3.10.0-py3-none-any.whl",
    url_path: "packages/py3/r/rapidocr/rapidocr-3.10.0-py3-none-any.whl",
    sha256: "2fc34e26cd0f48514804a94f8832283039c7334076bff60768b1fed9ad068050",
    size_mb: 27,
    members: &[
        ("rapidocr/models/PP-OCRv6_det_small.onnx", "PP-OCRv6_det_small.onnx", None),
        ("rapidocr/models/PP-OCRv6_rec_small.onnx", "PP-OCRv6_rec_small.onnx", None),
        ("rapidocr/models/ch_ppocr_mobile_v2.0_cls_mobile.onnx", "ch_ppocr_mobile_v2.0_cls_mobile.onnx", None),
    ],
    licence: "Apache-2.0",
};

/// dlib's face models, as `tools/fetch_face_models.sh` takes them (the 68-point model is left
/// out: its training set is licensed for non-commercial use only).
pub const FACES_PACKAGE: PinnedPackage = PinnedPackage {
    file: "face_recognition_models-0.3.0.tar.gz",
    url_path: "packages/source/f/face_recognition_models/face_recognition_models-0.3.0.tar.gz",
    sha256: "b79bd200a88c87c9a9d446c990ae71c5a626d1f3730174e6d570157ff1d896cf",
    size_mb: 100,
    members: &[
        (
            "face_recognition_models-0.3.0/face_recognition_models/models/mmod_human_face_detector.dat",
            "mmod_human_face_detector.dat",
            Some("4cb19393e2fbaf2b1609a9319ad5386618c886a6234ec1b971f3e87c85d87fe6"),
        ),
        (
            "face_recognition_models-0.3.0/face_recognition_models/models/shape_predictor_5_face_landmarks.dat",
            "shape_predictor_5_face_landmarks.dat",
            Some("c4b1e9804792707d3a405c2c16a80a20269e6675021f64a41d30fffafbc41888"),
        ),
        (
            "face_recognition_models-0.3.0/face_recognition_models/models/dlib_face_recognition_resnet_model_v1.dat",
            "dlib_face_recognition_resnet_model_v1.dat",
            Some("55533b28a95800a551ba546ba62fe69625c7e95a7061c338adffead08719da30"),
        ),
    ],
    licence: "CC0",
};

/// The pinned package of `kind`.
pub fn pinned_package(kind: ModelKind) -> &'static PinnedPackage {
    match kind {
        ModelKind::Ocr => &OCR_PACKAGE,
        ModelKind::Faces => &FACES_PACKAGE,
    }
}

/// Where a pinned package comes from.
#[derive(Debug, Clone)]
pub enum PackageSource {
    /// Downloaded from this base URL ([`pypi_files_url`]).
    Url(String),
    /// Already downloaded into this folder (copied from a machine with network).
    Folder(PathBuf),
}

/// The PyPI file host: `CLIPDEX_PYPI_FILES_URL`, else [`PYPI_FILES`].
pub fn pypi_files_url() -> String {
    std::env::var("CLIPDEX_PYPI_FILES_URL")
        .ok()
        .filter(|s| !s.trim().is_empty())
        .unwrap_or_else(|| PYPI_FILES.to_string())
}

/// The full URL of `package` on `base`.
pub fn package_url(base: &str, package: &PinnedPackage) -> String {
    format!("{}/{}", base.trim_end_matches('/'), package.url_path)
}

/// Called with (bytes so far, total bytes if known) while a file downloads.
pub type DownloadProgress<'a> = &'a dyn Fn(u64, Option<u64>);

/// Fetches `kind`'s pinned package (or takes it from a folder), checks its SHA-256, unpacks
/// the model files into `dest` (checking the members' own hashes where pinned) and marks the
/// folder complete. `dest` is replaced only once everything is in place; a failure leaves no
/// partial folder behind. Returns `dest`.
pub fn install_pinned(
    kind: ModelKind,
    source: &PackageSource,
    dest: &Path,
    progress: DownloadProgress<'_>,
) -> Result<PathBuf> {
    let package = pinned_package(kind);
    let parent = dest.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(parent).map_err(|e| io_error(parent, "create", &e))?;
    let staging = Staging::create(parent.join(format!(".{}-download-{}", kind.name(), std::process::id())))?;
    let archive = match source {
        PackageSource::Folder(dir) => {
            let path = dir.join(package.file);
            if !path.is_file() {
                return Err(Error::NotFound(format!(
                    "{} is not in {}: copy {} there (from {}), or run `clipdex models download {}` on a machine \
                     with network",
                    package.file,
                    dir.display(),
                    package.file,
                    package_url(PYPI_FILES, package),
                    kind.name()
                )));
            }
            verify_sha256(&path, package.sha256)?;
            path
        }
        PackageSource::Url(base) => {
            let path = staging.path().join(package.file);
            download_checked(kind, &package_url(base, package), &path, package.sha256, progress)?;
            path
        }
    };
    let unpacked = staging.path().join("models");
    std::fs::create_dir(&unpacked).map_err(|e| io_error(&unpacked, "create", &e))?;
    if package.file.ends_with(".whl") {
        unpack_zip(&archive, package.members, &unpacked)?;
    } else {
        unpack_tar_gz(&archive, package.members, &unpacked)?;
    }
    for (_, name, sha256) in package.members {
        if let Some(expected) = sha256 {
            verify_sha256(&unpacked.join(name), expected)?;
        }
    }
    std::fs::write(unpacked.join(COMPLETE), b"").map_err(|e| io_error(&unpacked, "write in", &e))?;
    if dest.exists() {
        std::fs::remove_dir_all(dest).map_err(|e| io_error(dest, "replace", &e))?;
    }
    std::fs::rename(&unpacked, dest).map_err(|e| io_error(dest, "create", &e))?;
    Ok(dest.to_path_buf())
}

/// A working folder beside the destination, removed however the download ends.
struct Staging(PathBuf);

impl Staging {
    fn create(path: PathBuf) -> Result<Staging> {
        if path.exists() {
            // Left by a download of an earlier process with the same id that was killed.
            std::fs::remove_dir_all(&path).map_err(|e| io_error(&path, "remove", &e))?;
        }
        std::fs::create_dir(&path).map_err(|e| io_error(&path, "create", &e))?;
        Ok(Staging(path))
    }

    fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for Staging {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// What to do when `kind`'s package cannot be downloaded here.
pub fn pinned_offline_advice(kind: ModelKind, dest: &Path) -> String {
    let package = pinned_package(kind);
    let names: Vec<&str> = package.members.iter().map(|(_, name, _)| *name).collect();
    format!(
        "On a machine with network, either run `clipdex models download {kind}` and copy the folder {dest} to \
         the same place here, or download {url} ({mb} MB, sha256 {sha}). Then here: \
         `clipdex models download {kind} --from DIR` (DIR holding {file}) checks and unpacks it into {dest}; \
         or put {names} in any folder and pass `{option} DIR`.",
        kind = kind.name(),
        dest = dest.display(),
        url = package_url(PYPI_FILES, package),
        mb = package.size_mb,
        sha = package.sha256,
        file = package.file,
        names = names.join(", "),
        option = kind.option(),
    )
}

/// Downloads `url` to `path`, hashing while writing; a mismatch removes the file.
fn download_checked(
    kind: ModelKind,
    url: &str,
    path: &Path,
    sha256: &str,
    progress: DownloadProgress<'_>,
) -> Result<()> {
    let agent = ureq::AgentBuilder::new()
        .timeout_connect(Duration::from_secs(15))
        .timeout_read(Duration::from_secs(60))
        .build();
    let response = match agent.get(url).call() {
        Ok(r) => r,
        Err(ureq::Error::Status(code, _)) => {
            return Err(Error::NotFound(format!(
                "{url} answered HTTP {code}; the pinned file is not there (a mirror in CLIPDEX_PYPI_FILES_URL must \
                 serve PyPI's paths)"
            )));
        }
        Err(ureq::Error::Transport(t)) => {
            return Err(Error::Unreachable {
                what: format!("cannot download {url} ({t})"),
                advice: pinned_offline_advice(kind, &default_model_dir(kind)),
            });
        }
    };
    let total = response.header("Content-Length").and_then(|v| v.parse::<u64>().ok());
    let mut reader = response.into_reader();
    let mut file = std::fs::File::create(path).map_err(|e| io_error(path, "create", &e))?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 16];
    let mut done = 0u64;
    loop {
        let n = match reader.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => {
                return Err(Error::Unreachable {
                    what: format!("the download of {url} broke off after {done} bytes ({e})"),
                    advice: "run the command again".into(),
                });
            }
        };
        hasher.update(&buf[..n]);
        file.write_all(&buf[..n]).map_err(|e| io_error(path, "write", &e))?;
        done += n as u64;
        progress(done, total);
    }
    file.flush().map_err(|e| io_error(path, "write", &e))?;
    let found = hex(&hasher.finalize());
    if found != sha256 {
        let _ = std::fs::remove_file(path);
        return Err(hash_mismatch(url, sha256, &found));
    }
    Ok(())
}

/// The SHA-256 of a file, in lowercase hex.
pub fn sha256_file(path: &Path) -> Result<String> {
    let mut file = std::fs::File::open(path).map_err(|e| io_error(path, "read", &e))?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 16];
    loop {
        match file.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => hasher.update(&buf[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(io_error(path, "read", &e)),
        }
    }
    Ok(hex(&hasher.finalize()))
}

/// Refuses `path` unless its SHA-256 is `expected`.
pub fn verify_sha256(path: &Path, expected: &str) -> Result<()> {
    let found = sha256_file(path)?;
    if found == expected { Ok(()) } else { Err(hash_mismatch(&path.display().to_string(), expected, &found)) }
}

fn hash_mismatch(what: &str, expected: &str, found: &str) -> Error {
    Error::Invalid(format!(
        "{what}: sha256 {found}, expected {expected}; the file is damaged or not the pinned one, and nothing \
         was unpacked: delete it and download it again"
    ))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn io_error(path: &Path, doing: &str, e: &std::io::Error) -> Error {
    Error::Store(format!("cannot {doing} {}: {e}", path.display()))
}

fn corrupt_archive(archive: &Path, e: impl std::fmt::Display) -> Error {
    Error::Invalid(format!("{}: cannot unpack ({e}); delete it and download it again", archive.display()))
}

/// Copies the `members` of a wheel (a zip file) into `dest`.
fn unpack_zip(archive: &Path, members: &[(&str, &str, Option<&str>)], dest: &Path) -> Result<()> {
    let file = std::fs::File::open(archive).map_err(|e| io_error(archive, "read", &e))?;
    let mut zip = zip::ZipArchive::new(std::io::BufReader::new(file)).map_err(|e| corrupt_archive(archive, e))?;
    for (inside, name, _) in members {
        // The raw entry, inflated here: the zip crate is built without its codecs (as candle
        // uses it), and the archive's SHA-256 was checked before.
        let entry =
            zip.by_name_raw(inside.as_bytes()).map_err(|e| corrupt_archive(archive, format!("{inside}: {e}")))?;
        let method = entry.compression();
        let expected = entry.size();
        let mut reader: Box<dyn Read + '_> = if method == zip::CompressionMethod::Stored {
            Box::new(entry)
        } else if method == zip::CompressionMethod::DEFLATE {
            Box::new(flate2::read::DeflateDecoder::new(entry))
        } else {
            return Err(corrupt_archive(archive, format!("{inside} is compressed with {method}")));
        };
        let out_path = dest.join(name);
        let mut out = std::fs::File::create(&out_path).map_err(|e| io_error(&out_path, "create", &e))?;
        let written =
            std::io::copy(&mut reader, &mut out).map_err(|e| corrupt_archive(archive, format!("{inside}: {e}")))?;
        if written != expected {
            return Err(corrupt_archive(archive, format!("{inside}: {written} bytes, expected {expected}")));
        }
    }
    Ok(())
}

/// Copies the `members` of a gzip-compressed tar file into `dest`. Reads POSIX ustar headers
/// (with their name prefix), GNU long names (`L`) and pax `path` records, which is what Python's
/// sdists use; other entries are skipped.
fn unpack_tar_gz(archive: &Path, members: &[(&str, &str, Option<&str>)], dest: &Path) -> Result<()> {
    let file = std::fs::File::open(archive).map_err(|e| io_error(archive, "read", &e))?;
    let mut tar = flate2::read::GzDecoder::new(std::io::BufReader::new(file));
    let mut found = vec![false; members.len()];
    let mut long_name: Option<String> = None;
    let mut header = [0u8; 512];
    loop {
        if !read_block(&mut tar, &mut header).map_err(|e| corrupt_archive(archive, e))?
            || header.iter().all(|&b| b == 0)
        {
            break;
        }
        let size =
            octal(&header[124..136]).ok_or_else(|| corrupt_archive(archive, "a tar header's size is unreadable"))?;
        let kind = header[156];
        let padded = size.div_ceil(512) * 512;
        match kind {
            b'L' | b'x' => {
                if padded > 1 << 20 {
                    return Err(corrupt_archive(archive, "an oversized tar name record"));
                }
                let mut data = vec![0u8; padded as usize];
                tar.read_exact(&mut data).map_err(|e| corrupt_archive(archive, e))?;
                data.truncate(size as usize);
                long_name = if kind == b'L' { Some(c_string(&data)) } else { pax_path(&data) };
            }
            _ => {
                let name = long_name.take().unwrap_or_else(|| {
                    let name = c_string(&header[0..100]);
                    let prefix =
                        if &header[257..262] == b"ustar" { c_string(&header[345..500]) } else { String::new() };
                    if prefix.is_empty() { name } else { format!("{prefix}/{name}") }
                });
                let wanted = members.iter().position(|(inside, _, _)| *inside == name);
                match wanted {
                    Some(i) if kind == b'0' || kind == 0 => {
                        let out_path = dest.join(members[i].1);
                        let mut out =
                            std::fs::File::create(&out_path).map_err(|e| io_error(&out_path, "create", &e))?;
                        let copied = std::io::copy(&mut (&mut tar).take(size), &mut out)
                            .map_err(|e| corrupt_archive(archive, e))?;
                        if copied != size {
                            return Err(corrupt_archive(archive, format!("{name} is truncated")));
                        }
                        std::io::copy(&mut (&mut tar).take(padded - size), &mut std::io::sink())
                            .map_err(|e| corrupt_archive(archive, e))?;
                        found[i] = true;
                    }
                    _ => {
                        std::io::copy(&mut (&mut tar).take(padded), &mut std::io::sink())
                            .map_err(|e| corrupt_archive(archive, e))?;
                    }
                }
            }
        }
    }
    if let Some(i) = found.iter().position(|f| !f) {
        return Err(corrupt_archive(archive, format!("{} is not in it", members[i].0)));
    }
    Ok(())
}

/// Fills `block`; `false` at a clean end of the stream.
fn read_block(r: &mut impl Read, block: &mut [u8; 512]) -> std::io::Result<bool> {
    let mut got = 0;
    while got < block.len() {
        match r.read(&mut block[got..]) {
            Ok(0) if got == 0 => return Ok(false),
            Ok(0) => return Err(std::io::ErrorKind::UnexpectedEof.into()),
            Ok(n) => got += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(true)
}

fn octal(field: &[u8]) -> Option<u64> {
    let text = std::str::from_utf8(field).ok()?.trim_matches(|c: char| c == '\0' || c == ' ');
    if text.is_empty() { Some(0) } else { u64::from_str_radix(text, 8).ok() }
}

fn c_string(bytes: &[u8]) -> String {
    let end = bytes.iter().position(|&b| b == 0).unwrap_or(bytes.len());
    String::from_utf8_lossy(&bytes[..end]).into_owned()
}

/// The `path` of a pax extended header ("LEN path=VALUE\n" records).
fn pax_path(data: &[u8]) -> Option<String> {
    let text = String::from_utf8_lossy(data);
    text.lines().find_map(|line| line.split_once(' ').and_then(|(_, kv)| kv.strip_prefix("path=")).map(str::to_string))
}

/// A hub model fetched into the cache.
#[derive(Debug, Clone)]
pub struct HubDownload {
    /// The snapshot folder in the Hugging Face cache that holds the files.
    pub dir: PathBuf,
    /// The files fetched (or found already there).
    pub files: Vec<String>,
}

/// The configuration, tokenizer and preprocessing files a loader may read, in any folder of
/// the repository (a sentence-transformers model keeps its towers in subfolders).
const SMALL_FILES: &[&str] = &[
    "config.json",
    "open_clip_config.json",
    "preprocessor_config.json",
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "vocab.json",
    "merges.txt",
    "vocab.txt",
    "spiece.model",
    "modules.json",
    "sentence_bert_config.json",
    "config_sentence_transformers.json",
];

/// Which of a hub repository's files (`siblings`, as the hub lists them) clipdex's loaders
/// read: the small files of [`SMALL_FILES`] at the top or one folder down, and in each such
/// folder one weights file, `model.safetensors` before `pytorch_model.bin`; at the top,
/// OpenCLIP's own weights only where the repository has no `config.json` (the loaders take the
/// Hugging Face layout first). TensorFlow, Flax, ONNX and other copies are left out.
pub fn hub_files_to_fetch(siblings: &[String]) -> Vec<String> {
    let has = |f: &str| siblings.iter().any(|s| s == f);
    let mut files: Vec<String> = Vec::new();
    let mut folders: Vec<&str> = vec![""];
    for s in siblings {
        let (folder, name) = match s.rsplit_once('/') {
            Some((folder, name)) if !folder.contains('/') => (folder, name),
            Some(_) => continue,
            None => ("", s.as_str()),
        };
        if SMALL_FILES.contains(&name) {
            files.push(s.clone());
            if !folders.contains(&folder) {
                folders.push(folder);
            }
        }
    }
    for folder in folders {
        let at = |f: &str| if folder.is_empty() { f.to_string() } else { format!("{folder}/{f}") };
        let mut weights = vec!["model.safetensors", "pytorch_model.bin"];
        if folder.is_empty() && !has("config.json") {
            weights = vec!["open_clip_model.safetensors", "open_clip_pytorch_model.bin"];
        }
        if let Some(w) = weights.iter().map(|w| at(w)).find(|w| has(w)) {
            files.push(w);
        }
    }
    files
}

/// Downloads what clipdex's loaders read of the hub model `id` into the Hugging Face cache
/// (files already there are not fetched again), with a progress bar per file when `progress`.
/// Without network (or with `HF_HUB_OFFLINE` set) it fails with [`Error::Unreachable`], whose
/// advice says which files to copy where; `option` is the command-line option that takes the
/// model (`--model`, `--caption-model`, ...).
pub fn download_hub_model(id: &str, option: &str, progress: bool) -> Result<HubDownload> {
    if !super::source::looks_like_hub_id(id) {
        return Err(Error::Invalid(format!(
            "{id:?} is not a Hugging Face id (owner/name), nor `ocr` or `faces`; `clipdex models` lists the \
             recommended ids"
        )));
    }
    let repo = Repo::model(id.to_string());
    let offline_advice = || hub_offline_advice(id, option);
    if super::source::offline() {
        return Err(Error::Unreachable {
            what: format!("cannot download {id}: HF_HUB_OFFLINE is set"),
            advice: offline_advice(),
        });
    }
    let api = ApiBuilder::from_env()
        .with_progress(progress)
        .build()
        .map_err(|e| Error::model(id, format!("cannot set up the Hugging Face client ({e})")))?
        .repo(repo);
    let unreachable_or = |e: ApiError, doing: &str| -> Error {
        match &e {
            ApiError::RequestError(inner) if matches!(**inner, ureq::Error::Transport(_)) => Error::Unreachable {
                what: format!("cannot reach the Hugging Face hub to {doing} ({e})"),
                advice: offline_advice(),
            },
            ApiError::RequestError(inner) if matches!(**inner, ureq::Error::Status(404 | 401, _)) => Error::model(
                id,
                "the Hugging Face hub has no such public model; check the id (`clipdex models` lists the recommended ones)",
            ),
            _ => Error::model(id, format!("cannot {doing} ({e})")),
        }
    };
    let info = api.info().map_err(|e| unreachable_or(e, &format!("list the files of {id}")))?;
    let siblings: Vec<String> = info.siblings.into_iter().map(|s| s.rfilename).collect();
    let files = hub_files_to_fetch(&siblings);
    if !files.iter().any(|f| f.ends_with(".safetensors") || f.ends_with(".bin")) {
        return Err(Error::model(
            id,
            "the repository has no weights clipdex reads (model.safetensors, pytorch_model.bin or OpenCLIP's \
             open_clip_model.safetensors)",
        ));
    }
    let mut dir = None;
    for file in &files {
        let path = api.get(file).map_err(|e| unreachable_or(e, &format!("download {file}")))?;
        if dir.is_none() {
            // The snapshot folder: the file's path less its (possibly nested) name.
            let depth = file.matches('/').count() + 1;
            dir = path.ancestors().nth(depth).map(Path::to_path_buf);
        }
    }
    Ok(HubDownload { dir: dir.unwrap_or_else(|| Cache::from_env().path().clone()), files })
}

/// What to do when the hub model `id` cannot be downloaded here.
pub fn hub_offline_advice(id: &str, option: &str) -> String {
    let cache = Cache::from_env();
    let folder = cache.path().join(Repo::model(id.to_string()).folder_name());
    format!(
        "Either (1) on a machine with network run `clipdex models download {id}` and copy its folder {folder} \
         (in that machine's Hugging Face cache: $HF_HOME/hub, default ~/.cache/huggingface/hub) to {folder} \
         here; or (2) download the model's config.json, its weights (model.safetensors, else pytorch_model.bin; \
         OpenCLIP repositories without config.json: open_clip_config.json and open_clip_model.safetensors), its \
         tokenizer files (tokenizer.json, tokenizer_config.json, special_tokens_map.json, and vocab.json with \
         merges.txt, vocab.txt or spiece.model, whichever it has) and preprocessor_config.json from \
         https://huggingface.co/{id}/tree/main into one folder DIR, and pass `{option} DIR`. \
         See the manual's page \"Models and offline machines\".",
        folder = folder.display()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn a_clip_repository_gives_its_config_tokenizer_and_safetensors_only() {
        let siblings = names(&[
            ".gitattributes",
            "README.md",
            "config.json",
            "flax_model.msgpack",
            "merges.txt",
            "model.safetensors",
            "preprocessor_config.json",
            "pytorch_model.bin",
            "special_tokens_map.json",
            "tf_model.h5",
            "tokenizer.json",
            "tokenizer_config.json",
            "vocab.json",
        ]);
        let mut got = hub_files_to_fetch(&siblings);
        got.sort();
        assert_eq!(
            got,
            names(&[
                "config.json",
                "merges.txt",
                "model.safetensors",
                "preprocessor_config.json",
                "special_tokens_map.json",
                "tokenizer.json",
                "tokenizer_config.json",
                "vocab.json",
            ])
        );
    }

    #[test]
    fn openclip_weights_only_without_a_hugging_face_config() {
        let laion = names(&[
            "config.json",
            "model.safetensors",
            "open_clip_config.json",
            "open_clip_model.safetensors",
            "tokenizer.json",
        ]);
        let got = hub_files_to_fetch(&laion);
        assert!(got.contains(&"model.safetensors".into()) && !got.contains(&"open_clip_model.safetensors".into()));
        let dfn = names(&["open_clip_config.json", "open_clip_pytorch_model.bin", "README.md"]);
        assert_eq!(hub_files_to_fetch(&dfn), names(&["open_clip_config.json", "open_clip_pytorch_model.bin"]));
        let bin_only = names(&["config.json", "pytorch_model.bin", "vocab.txt"]);
        assert!(hub_files_to_fetch(&bin_only).contains(&"pytorch_model.bin".into()));
    }

    #[test]
    fn a_sentence_transformers_model_brings_each_tower_folder() {
        let siblings = names(&[
            "modules.json",
            "0_CLIPModel/config.json",
            "0_CLIPModel/model.safetensors",
            "0_CLIPModel/pytorch_model.bin",
            "0_CLIPModel/vocab.json",
            "1_Pooling/config.json",
            "deep/a/b/config.json",
        ]);
        let got = hub_files_to_fetch(&siblings);
        assert!(got.contains(&"0_CLIPModel/model.safetensors".into()));
        assert!(!got.contains(&"0_CLIPModel/pytorch_model.bin".into()));
        assert!(got.contains(&"1_Pooling/config.json".into()));
        assert!(!got.iter().any(|f| f.starts_with("deep/")));
    }

    #[test]
    fn the_hash_check_refuses_a_changed_byte() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        std::fs::write(&path, b"abc").unwrap();
        // SHA-256 of "abc" (FIPS 180-2's example).
        let abc = "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad";
        verify_sha256(&path, abc).unwrap();
        std::fs::write(&path, b"abd").unwrap();
        let err = verify_sha256(&path, abc).unwrap_err().to_string();
        assert!(err.contains("expected ba7816bf") && err.contains("nothing was unpacked"), "{err}");
    }

    /// A tar.gz with a GNU long name, a ustar prefix and a plain name, as the tar module of
    /// Python writes them.
    fn tar_gz(entries: &[(&str, &[u8], bool)]) -> Vec<u8> {
        fn header(name: &str, size: usize, kind: u8, prefix: &str) -> [u8; 512] {
            let mut h = [0u8; 512];
            h[..name.len().min(100)].copy_from_slice(&name.as_bytes()[..name.len().min(100)]);
            h[124..135].copy_from_slice(format!("{size:011o}").as_bytes());
            h[156] = kind;
            h[257..263].copy_from_slice(b"ustar\0");
            h[345..345 + prefix.len()].copy_from_slice(prefix.as_bytes());
            h
        }
        let mut tar = Vec::new();
        let pad = |tar: &mut Vec<u8>| tar.resize(tar.len().div_ceil(512) * 512, 0);
        for (name, data, gnu) in entries {
            if *gnu {
                tar.extend_from_slice(&header("././@LongLink", name.len() + 1, b'L', ""));
                tar.extend_from_slice(name.as_bytes());
                tar.push(0);
                pad(&mut tar);
                tar.extend_from_slice(&header(&name[..100], data.len(), b'0', ""));
            } else if let Some((prefix, rest)) = name.rsplit_once('/').filter(|_| name.len() > 100) {
                tar.extend_from_slice(&header(rest, data.len(), b'0', prefix));
            } else {
                tar.extend_from_slice(&header(name, data.len(), b'0', ""));
            }
            tar.extend_from_slice(data);
            pad(&mut tar);
        }
        tar.extend_from_slice(&[0u8; 1024]);
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        gz.write_all(&tar).unwrap();
        gz.finish().unwrap()
    }

    #[test]
    fn members_come_out_of_a_tar_gz_by_their_long_names() {
        let long = format!("pkg-1.0/{}/a.dat", "x".repeat(100));
        let prefixed = format!("pkg-1.0/{}/b.dat", "y".repeat(100));
        let dir = tempfile::tempdir().unwrap();
        let archive = dir.path().join("p.tar.gz");
        let big = vec![7u8; 1500];
        let entries: [(&str, &[u8], bool); 3] = [
            ("pkg-1.0/skip.txt", &b"no"[..], false),
            (long.as_str(), &b"AAA"[..], true),
            (prefixed.as_str(), &big[..], false),
        ];
        std::fs::write(&archive, tar_gz(&entries)).unwrap();
        let out = dir.path().join("out");
        std::fs::create_dir(&out).unwrap();
        let members = [(long.as_str(), "a.dat", None), (prefixed.as_str(), "b.dat", None)];
        unpack_tar_gz(&archive, &members, &out).unwrap();
        assert_eq!(std::fs::read(out.join("a.dat")).unwrap(), b"AAA");
        assert_eq!(std::fs::read(out.join("b.dat")).unwrap(), big);
        let missing = [("pkg-1.0/none.dat", "n.dat", None)];
        let err = unpack_tar_gz(&archive, &missing, &out).unwrap_err().to_string();
        assert!(err.contains("pkg-1.0/none.dat is not in it"), "{err}");
    }

    #[test]
    fn the_default_folders_are_in_the_cache_and_count_only_when_complete() {
        let ocr = default_model_dir(ModelKind::Ocr);
        assert!(ocr.ends_with("clipdex/models/ocr"), "{}", ocr.display());
        assert!(default_model_dir(ModelKind::Faces).ends_with("clipdex/models/faces"));
        let dir = tempfile::tempdir().unwrap();
        assert!(!is_complete(dir.path()));
        std::fs::write(dir.path().join(".complete"), b"").unwrap();
        assert!(is_complete(dir.path()));
    }
}
