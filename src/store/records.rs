//! The records the store keeps, and how keys are encoded: ids as big-endian `u64` (so trees
//! iterate in id order), paths as their raw OS bytes (non-UTF-8 names included).

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// An image's identity in the database. Identical files share one id.
pub type ImageId = u64;

/// What the store knows about one distinct image content.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ImageRecord {
    /// blake3 of the file's bytes, hex.
    pub hash: String,
    /// File size in bytes.
    pub size: u64,
    /// Upright width in pixels.
    pub width: u32,
    /// Upright height in pixels.
    pub height: u32,
    /// The file's modification time when first indexed, seconds since the epoch (the date
    /// filters fall back to it when the photo has no EXIF date).
    pub modified: i64,
    /// EXIF date taken, seconds since the Unix epoch (camera local time read as UTC).
    #[serde(default)]
    pub taken: Option<i64>,
    /// EXIF camera make and model.
    #[serde(default)]
    pub camera: Option<String>,
    /// EXIF GPS position, degrees (latitude, longitude).
    #[serde(default)]
    pub gps: Option<(f64, f64)>,
}

/// One file on disk that holds an indexed image.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PathEntry {
    /// The image it holds.
    pub id: ImageId,
    /// Size when indexed.
    pub size: u64,
    /// Modification time when indexed, nanoseconds since the epoch.
    pub mtime_ns: i64,
}

/// A file that could not be indexed, and the state it was in then; it is retried only once
/// its size or modification time changes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Failure {
    /// Why.
    pub reason: String,
    /// How many times indexing it failed.
    pub attempts: u32,
    /// Size at the last attempt.
    pub size: u64,
    /// Modification time at the last attempt.
    pub mtime_ns: i64,
}

pub(crate) fn id_key(id: ImageId) -> [u8; 8] {
    id.to_be_bytes()
}

pub(crate) fn id_from_key(key: &[u8]) -> Option<ImageId> {
    Some(u64::from_be_bytes(key.get(..8)?.try_into().ok()?))
}

#[cfg(unix)]
pub(crate) fn path_key(path: &Path) -> Vec<u8> {
    use std::os::unix::ffi::OsStrExt;
    path.as_os_str().as_bytes().to_vec()
}

#[cfg(not(unix))]
pub(crate) fn path_key(path: &Path) -> Vec<u8> {
    path.to_string_lossy().as_bytes().to_vec()
}

#[cfg(unix)]
pub(crate) fn path_from_key(key: &[u8]) -> PathBuf {
    use std::os::unix::ffi::OsStrExt;
    PathBuf::from(std::ffi::OsStr::from_bytes(key))
}

#[cfg(not(unix))]
pub(crate) fn path_from_key(key: &[u8]) -> PathBuf {
    PathBuf::from(String::from_utf8_lossy(key).into_owned())
}

/// `id ++ path`: the reverse index from an image to its files.
pub(crate) fn image_path_key(id: ImageId, path: &Path) -> Vec<u8> {
    let mut k = id_key(id).to_vec();
    k.extend_from_slice(&path_key(path));
    k
}

pub(crate) fn vector_bytes(v: &[f32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

pub(crate) fn vector_from_bytes(b: &[u8]) -> Vec<f32> {
    b.chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect()
}

impl ImageRecord {
    /// The date used by date filters: EXIF date taken, else the file's modification time.
    pub fn date(&self) -> i64 {
        self.taken.unwrap_or(self.modified)
    }
}
