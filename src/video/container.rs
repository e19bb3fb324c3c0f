//! Which container a video file is, read from its own bytes before FFmpeg sees it.
//!
//! Two things rest on this. FFmpeg is told the demuxer (`-f mov`, `-f matroska`, `-f avi`)
//! instead of guessing one, so a text file named `x.mp4` that is an HLS playlist, an
//! `ffconcat` list or an image sequence can never make FFmpeg open the files it names. And a
//! file's length is checked against what its top-level structure declares (ISO-BMFF boxes,
//! EBML elements, RIFF chunks) before anything reads it whole: a real header followed by
//! gigabytes of zeros (a sparse file) is refused in a few reads instead of being hashed.
//!
//! The walk reads a few bytes per top-level item and seeks over the rest, so its cost does
//! not depend on the file's length.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::Path;

/// Bytes a file may hold past the end of what its structure declares (padding some
/// writers leave, a tag appended by a tool): more than this and the file is refused.
pub const TRAILING_SLACK_BYTES: u64 = 16 << 20;

/// Top-level items walked at most (a fragmented MP4 has two per fragment, a Matroska file
/// one per cluster: a few thousand for hours of video).
const MAX_ITEMS: usize = 1 << 20;

/// A container clipdex hands to FFmpeg, with the demuxer that reads it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Container {
    /// ISO base media: MP4, MOV, M4V, 3GP.
    Mov,
    /// Matroska and WebM.
    Matroska,
    /// AVI (RIFF, with its OpenDML `AVIX` extensions).
    Avi,
}

impl Container {
    /// FFmpeg's name of the demuxer for it (`-f NAME`).
    pub fn demuxer(self) -> &'static str {
        match self {
            Container::Mov => "mov",
            Container::Matroska => "matroska",
            Container::Avi => "avi",
        }
    }
}

/// Why a file is not handed to FFmpeg.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ContainerProblem {
    /// Its first bytes are none of the containers clipdex reads.
    #[error("not an MP4/MOV, Matroska/WebM or AVI file (its first bytes are no such container's)")]
    Unknown,
    /// The file is longer than its structure says, by more than [`TRAILING_SLACK_BYTES`].
    #[error("the file has {size} bytes but its {container} structure accounts for only {declared}: not read further")]
    Oversized { container: &'static str, declared: u64, size: u64 },
    /// The file cannot be read.
    #[error("cannot read it: {0}")]
    Io(String),
}

impl From<std::io::Error> for ContainerProblem {
    fn from(e: std::io::Error) -> Self {
        ContainerProblem::Io(e.to_string())
    }
}

/// The container of the file at `path`, once its length is checked against its structure.
pub fn recognise(path: &Path) -> Result<Container, ContainerProblem> {
    let mut file = File::open(path)?;
    let size = file.metadata()?.len();
    let mut head = [0u8; 12];
    let n = read_up_to(&mut file, &mut head)?;
    let head = &head[..n];
    let (container, declared) = if head.len() >= 12 && &head[..4] == b"RIFF" && &head[8..12] == b"AVI " {
        (Container::Avi, riff_extent(&mut file, size)?)
    } else if head.len() >= 4 && head[..4] == [0x1A, 0x45, 0xDF, 0xA3] {
        (Container::Matroska, ebml_extent(&mut file, size)?)
    } else if head.len() >= 8 && is_leading_box(&head[4..8]) {
        (Container::Mov, box_extent(&mut file, size)?)
    } else {
        return Err(ContainerProblem::Unknown);
    };
    if size > declared.saturating_add(TRAILING_SLACK_BYTES) {
        return Err(ContainerProblem::Oversized { container: container.demuxer(), declared, size });
    }
    Ok(container)
}

/// Reads into `buf` until it is full or the file ends; returns how many bytes were read.
fn read_up_to(file: &mut File, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut filled = 0;
    while filled < buf.len() {
        match file.read(&mut buf[filled..])? {
            0 => break,
            n => filled += n,
        }
    }
    Ok(filled)
}

/// Reads `buf.len()` bytes at `at`, or `None` past the end.
fn read_at(file: &mut File, at: u64, buf: &mut [u8]) -> std::io::Result<Option<()>> {
    file.seek(SeekFrom::Start(at))?;
    Ok((read_up_to(file, buf)? == buf.len()).then_some(()))
}

/// The box types an ISO-BMFF file starts with (`ftyp` in MP4, any of the others in older
/// QuickTime files).
fn is_leading_box(kind: &[u8]) -> bool {
    matches!(kind, b"ftyp" | b"moov" | b"mdat" | b"wide" | b"free" | b"skip" | b"pnot")
}

/// How far a file's top-level ISO-BMFF boxes reach: the walk stops at the end of the file,
/// at a box that is not one (its type is not four printable characters, its size too small)
/// or at a box whose size runs to the end of the file.
fn box_extent(file: &mut File, size: u64) -> Result<u64, ContainerProblem> {
    let mut at = 0u64;
    for _ in 0..MAX_ITEMS {
        let mut header = [0u8; 16];
        if at >= size || read_at(file, at, &mut header[..8])?.is_none() {
            break;
        }
        if !header[4..8].iter().all(|b| (0x20..=0x7E).contains(b)) {
            break;
        }
        let length = match u32::from_be_bytes([header[0], header[1], header[2], header[3]]) {
            0 => return Ok(size), // the last box, to the end of the file
            1 => match read_at(file, at + 8, &mut header[8..16])? {
                Some(()) => u64::from_be_bytes(header[8..16].try_into().unwrap_or_default()),
                None => break,
            },
            n => u64::from(n),
        };
        if length < 8 {
            break;
        }
        at = at.saturating_add(length);
    }
    Ok(at.min(size))
}

/// How far a file's top-level RIFF chunks reach (`RIFF…AVI `, then `RIFF…AVIX` for each
/// further gigabyte of an OpenDML AVI).
fn riff_extent(file: &mut File, size: u64) -> Result<u64, ContainerProblem> {
    let mut at = 0u64;
    for _ in 0..MAX_ITEMS {
        let mut header = [0u8; 8];
        if at >= size || read_at(file, at, &mut header)?.is_none() || &header[..4] != b"RIFF" {
            break;
        }
        let length = u64::from(u32::from_le_bytes([header[4], header[5], header[6], header[7]]));
        at = at.saturating_add(8 + length + (length & 1));
    }
    Ok(at.min(size))
}

/// An EBML variable-length integer at `at`: (its value with the length marker removed,
/// its length in bytes, whether all its value bits are set, i.e. "unknown size").
fn ebml_number(file: &mut File, at: u64) -> std::io::Result<Option<(u64, u64, bool)>> {
    let mut first = [0u8; 1];
    if read_at(file, at, &mut first)?.is_none() || first[0] == 0 {
        return Ok(None);
    }
    let length = u64::from(first[0].leading_zeros()) + 1;
    let mut rest = [0u8; 7];
    let rest = &mut rest[..(length - 1) as usize];
    if read_at(file, at + 1, rest)?.is_none() {
        return Ok(None);
    }
    let mut value = u64::from(first[0]) & (0xFF >> length); // an 8-byte number keeps no bit of its first
    for &b in rest.iter() {
        value = (value << 8) | u64::from(b);
    }
    let unknown = value == (1u64 << (7 * length)) - 1;
    Ok(Some((value, length, unknown)))
}

/// How far a Matroska file's top-level EBML elements reach. A Segment of unknown size (a
/// live recording) is walked through its children; an unknown-size child (a live cluster)
/// ends the walk, as nothing but parsing its contents tells where it ends.
fn ebml_extent(file: &mut File, size: u64) -> Result<u64, ContainerProblem> {
    const SEGMENT: u64 = 0x0853_8067; // 0x18538067 with its length marker removed
    let mut at = 0u64;
    for _ in 0..MAX_ITEMS {
        if at >= size {
            break;
        }
        let Some((id, id_length, _)) = ebml_number(file, at)? else { break };
        if id_length > 4 {
            break;
        }
        let Some((length, size_length, unknown)) = ebml_number(file, at + id_length)? else { break };
        let body = at + id_length + size_length;
        if unknown {
            if id == SEGMENT {
                at = body; // its children follow as if at the top level
                continue;
            }
            return Ok(size);
        }
        at = body.saturating_add(length);
    }
    Ok(at.min(size))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file_with(dir: &Path, name: &str, head: &[u8], size: u64) -> std::path::PathBuf {
        let path = dir.join(name);
        std::fs::write(&path, head).unwrap();
        std::fs::File::options().write(true).open(&path).unwrap().set_len(size).unwrap();
        path
    }

    fn mp4_boxes(mdat: u32) -> Vec<u8> {
        let mut out = Vec::new();
        out.extend_from_slice(&20u32.to_be_bytes());
        out.extend_from_slice(b"ftypisom\0\0\x02\0mp41");
        out.extend_from_slice(&(8 + mdat).to_be_bytes());
        out.extend_from_slice(b"mdat");
        out.resize(out.len() + mdat as usize, 7);
        out
    }

    #[test]
    fn containers_are_recognised_by_their_bytes_and_their_length_checked() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let mp4 = mp4_boxes(100);
        let exact = file_with(d, "exact.bin", &mp4, mp4.len() as u64);
        assert_eq!(recognise(&exact), Ok(Container::Mov));
        // A little padding is tolerated; gigabytes of zeros after the boxes are not.
        let padded = file_with(d, "padded.mp4", &mp4, mp4.len() as u64 + 4096);
        assert_eq!(recognise(&padded), Ok(Container::Mov));
        let sparse = file_with(d, "sparse.mp4", &mp4, 10 << 30);
        assert!(
            matches!(recognise(&sparse), Err(ContainerProblem::Oversized { declared: 128, size, .. }) if size == 10 << 30)
        );
        // A truncated file is FFmpeg's to judge.
        let truncated = file_with(d, "truncated.mp4", &mp4[..60], 60);
        assert_eq!(recognise(&truncated), Ok(Container::Mov));

        // Matroska: an EBML header, then a Segment of known size.
        let mut mkv = vec![0x1A, 0x45, 0xDF, 0xA3, 0x84, 1, 2, 3, 4];
        mkv.extend_from_slice(&[0x18, 0x53, 0x80, 0x67, 0x88]);
        mkv.extend_from_slice(&[0xEC, 0x86, 0, 0, 0, 0, 0, 0]);
        let whole = file_with(d, "whole.mkv", &mkv, mkv.len() as u64);
        assert_eq!(recognise(&whole), Ok(Container::Matroska));
        let sparse = file_with(d, "sparse.mkv", &mkv, 10 << 30);
        assert!(matches!(recognise(&sparse), Err(ContainerProblem::Oversized { declared: 22, .. })));
        // Sizes written on 8 bytes, as some muxers do (WebM from libvpx).
        let mut long = vec![0x1A, 0x45, 0xDF, 0xA3, 0x01, 0, 0, 0, 0, 0, 0, 0];
        long.extend_from_slice(&[0x18, 0x53, 0x80, 0x67, 0x01, 0, 0, 0, 0, 0, 0, 2, 0xEC, 0x80]);
        let long_sizes = file_with(d, "long.webm", &long, long.len() as u64);
        assert_eq!(recognise(&long_sizes), Ok(Container::Matroska));
        // A Segment of unknown size is walked through its children.
        let mut live = vec![0x1A, 0x45, 0xDF, 0xA3, 0x80, 0x18, 0x53, 0x80, 0x67, 0xFF];
        live.extend_from_slice(&[0xEC, 0x82, 0, 0]);
        let live_sparse = file_with(d, "live.mkv", &live, 10 << 30);
        assert!(matches!(recognise(&live_sparse), Err(ContainerProblem::Oversized { declared: 14, .. })));

        // AVI: RIFF chunks.
        let mut avi = b"RIFF".to_vec();
        avi.extend_from_slice(&8u32.to_le_bytes());
        avi.extend_from_slice(b"AVI JUNK");
        avi.extend_from_slice(b"RIFF");
        avi.extend_from_slice(&5u32.to_le_bytes());
        avi.extend_from_slice(b"AVIX\0\0");
        let whole = file_with(d, "whole.avi", &avi, avi.len() as u64);
        assert_eq!(recognise(&whole), Ok(Container::Avi));
        let sparse = file_with(d, "sparse.avi", &avi, 1 << 30);
        assert!(matches!(recognise(&sparse), Err(ContainerProblem::Oversized { declared: 30, .. })));

        // Playlists, lists and other formats FFmpeg would guess are none of them.
        for (name, bytes) in [
            ("hls.mp4", &b"#EXTM3U\n#EXTINF:1,\n/etc/video.mp4\n"[..]),
            ("list.mkv", b"ffconcat version 1.0\nfile '/elsewhere/v.mp4'\n"),
            ("zeros.mkv", &[0; 64]),
            ("empty.mov", b""),
        ] {
            let path = file_with(d, name, bytes, bytes.len() as u64);
            assert_eq!(recognise(&path), Err(ContainerProblem::Unknown), "{name}");
        }
    }
}
