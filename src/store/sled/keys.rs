//! How the sled store encodes keys: ids as big-endian `u64` (so trees iterate in id order),
//! paths as their raw OS bytes (non-UTF-8 names included), vectors as little-endian `f32`s.

use std::path::{Path, PathBuf};

use crate::store::ImageId;

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

/// The `frames` tree holds, per vector generation (as the vector trees) and video, two entries:
/// under [`FRAME_COUNTS`] how many frames the video has (a `u32`), so that counting frames and
/// finding stale generations read no vector, and under [`FRAME_VECTORS`] the frames themselves
/// ([`frames_bytes`]).
pub(crate) const FRAME_COUNTS: u8 = b'n';
pub(crate) const FRAME_VECTORS: u8 = b'v';

/// `part ++ generation`: where the entries of one part ([`FRAME_COUNTS`], [`FRAME_VECTORS`]) of a
/// generation begin.
pub(crate) fn frames_prefix(part: u8, generation: u32) -> [u8; 5] {
    let mut k = [part, 0, 0, 0, 0];
    k[1..].copy_from_slice(&generation.to_be_bytes());
    k
}

/// `part ++ generation ++ id`: a video's entry of one part in the `frames` tree.
pub(crate) fn frames_key(part: u8, generation: u32, id: ImageId) -> [u8; 13] {
    let mut k = [0u8; 13];
    k[..5].copy_from_slice(&frames_prefix(part, generation));
    k[5..].copy_from_slice(&id.to_be_bytes());
    k
}

/// The generation and video id of a `frames` key.
pub(crate) fn frames_key_parts(key: &[u8]) -> Option<(u32, ImageId)> {
    Some((u32::from_be_bytes(key.get(1..5)?.try_into().ok()?), id_from_key(key.get(5..)?)?))
}

/// A video's frames as one value: their number (`u32`), then each frame's time and vector,
/// little-endian `f32`s.
pub(crate) fn frames_bytes(frames: &[crate::store::FrameVector]) -> Vec<u8> {
    let mut b = (frames.len() as u32).to_le_bytes().to_vec();
    for f in frames {
        b.extend_from_slice(&f.time.to_le_bytes());
        b.extend(vector_bytes(&f.vector));
    }
    b
}

/// The frames [`frames_bytes`] wrote; `None` when the bytes are not such a value.
pub(crate) fn frames_from_bytes(b: &[u8]) -> Option<Vec<crate::store::FrameVector>> {
    let n = u32::from_le_bytes(b.get(..4)?.try_into().ok()?) as usize;
    let rest = &b[4..];
    if n == 0 {
        return rest.is_empty().then(Vec::new);
    }
    if !rest.len().is_multiple_of(4 * n) || rest.len() / (4 * n) < 2 {
        return None;
    }
    let each = rest.len() / n;
    Some(
        rest.chunks_exact(each)
            .map(|c| crate::store::FrameVector {
                time: f32::from_le_bytes([c[0], c[1], c[2], c[3]]),
                vector: vector_from_bytes(&c[4..]),
            })
            .collect(),
    )
}
