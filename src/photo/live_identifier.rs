//! The content identifier that ties an Apple Live Photo's still to its movie when their names
//! differ (a renamed export such as `IMG_1234.HEIC` + `IMG_1234_video.MOV`).
//!
//! The camera writes one UUID into both files: into the still's Apple MakerNote as tag 0x0011
//! (`ContentIdentifier` in ExifTool's Apple tags), and into the movie's QuickTime metadata as the
//! `mdta` key `com.apple.quicktime.content.identifier` (`moov/meta/keys` + `ilst`). Reads are
//! bounded (the first [`MAX_STILL_READ`] bytes of a still, a movie's `moov` box only when it is
//! at most [`MAX_MOOV`] bytes, found by skipping box headers) and every length is checked, so a
//! hostile file gives `None`, never a panic or a large allocation.

use std::io::{Read, Seek, SeekFrom};
use std::path::Path;

/// How much of a still is read for its EXIF (an iPhone HEIC's metadata sits near its start).
pub const MAX_STILL_READ: u64 = 8 << 20;

/// The largest `moov` box read for a movie's metadata (a Live Photo's is a few KB).
pub const MAX_MOOV: u64 = 4 << 20;

/// The QuickTime metadata key of the identifier.
const MOVIE_KEY: &[u8] = b"com.apple.quicktime.content.identifier";

/// The MakerNote tag of the identifier.
const MAKERNOTE_TAG: u16 = 0x0011;

/// The longest identifier kept (a UUID is 36 characters).
const MAX_IDENTIFIER: usize = 256;

/// The content identifier of a still (HEIC/HEIF or JPEG), from its Apple MakerNote.
pub fn still_identifier(path: &Path) -> Option<String> {
    let mut bytes = Vec::new();
    std::fs::File::open(path).ok()?.take(MAX_STILL_READ).read_to_end(&mut bytes).ok()?;
    let exif = crate::photo::parse_exif(&bytes)?;
    let field = exif.get_field(exif::Tag::MakerNote, exif::In::PRIMARY)?;
    // UNDEFINED as cameras write it; BYTE as some writers (Pillow) do.
    match &field.value {
        exif::Value::Undefined(note, _) | exif::Value::Byte(note) => apple_makernote_identifier(note),
        _ => None,
    }
}

/// Tag 0x0011 of an Apple MakerNote: `Apple iOS\0`, a version, a byte order mark, then an IFD
/// whose offsets count from the start of the MakerNote.
pub fn apple_makernote_identifier(note: &[u8]) -> Option<String> {
    if !note.starts_with(b"Apple iOS\0") || note.len() < 16 {
        return None;
    }
    let big = match &note[12..14] {
        b"MM" => true,
        b"II" => false,
        _ => return None,
    };
    let u16_at = |at: usize| -> Option<u16> {
        let b: [u8; 2] = note.get(at..at + 2)?.try_into().ok()?;
        Some(if big { u16::from_be_bytes(b) } else { u16::from_le_bytes(b) })
    };
    let u32_at = |at: usize| -> Option<u32> {
        let b: [u8; 4] = note.get(at..at + 4)?.try_into().ok()?;
        Some(if big { u32::from_be_bytes(b) } else { u32::from_le_bytes(b) })
    };
    let count = usize::from(u16_at(14)?);
    for i in 0..count {
        let entry = 16 + 12 * i;
        if u16_at(entry)? != MAKERNOTE_TAG {
            continue;
        }
        // ASCII (2) or UNDEFINED (7), one byte per character.
        if !matches!(u16_at(entry + 2)?, 2 | 7) {
            return None;
        }
        let len = usize::try_from(u32_at(entry + 4)?).ok()?;
        let value = if len <= 4 {
            note.get(entry + 8..entry + 8 + len)?
        } else {
            let at = usize::try_from(u32_at(entry + 8)?).ok()?;
            note.get(at..at.checked_add(len)?)?
        };
        return identifier_text(value);
    }
    None
}

/// The content identifier of a QuickTime movie, from its `mdta` metadata.
pub fn movie_identifier(path: &Path) -> Option<String> {
    let mut file = std::io::BufReader::new(std::fs::File::open(path).ok()?);
    let end = file.get_ref().metadata().ok()?.len();
    let mut at = 0u64;
    // Top-level boxes, headers only: a movie written without `faststart` has `moov` last.
    for _ in 0..64 {
        if at.checked_add(8)? > end {
            return None;
        }
        file.seek(SeekFrom::Start(at)).ok()?;
        let mut header = [0u8; 16];
        file.read_exact(&mut header[..8]).ok()?;
        let mut size = u64::from(u32::from_be_bytes(header[..4].try_into().ok()?));
        let is_moov = &header[4..8] == b"moov";
        let mut header_len = 8;
        if size == 1 {
            file.read_exact(&mut header[8..16]).ok()?;
            size = u64::from_be_bytes(header[8..16].try_into().ok()?);
            header_len = 16;
        } else if size == 0 {
            size = end - at;
        }
        if size < header_len || at.checked_add(size)? > end {
            return None;
        }
        if is_moov {
            if size > MAX_MOOV {
                return None;
            }
            let mut moov = vec![0u8; (size - header_len) as usize];
            file.read_exact(&mut moov).ok()?;
            return moov_identifier(&moov);
        }
        at += size;
    }
    None
}

/// The child boxes of `data`: (type, content), stopping at the first malformed one.
fn boxes(data: &[u8]) -> impl Iterator<Item = (&[u8], &[u8])> {
    let mut rest = data;
    std::iter::from_fn(move || {
        if rest.len() < 8 {
            return None;
        }
        let size = u32::from_be_bytes(rest[..4].try_into().ok()?) as usize;
        let size = if size == 0 { rest.len() } else { size };
        if size < 8 || size > rest.len() {
            return None;
        }
        let (this, next) = rest.split_at(size);
        rest = next;
        Some((&this[4..8], &this[8..]))
    })
}

fn child<'a>(data: &'a [u8], kind: &[u8]) -> Option<&'a [u8]> {
    boxes(data).find(|(k, _)| *k == kind).map(|(_, c)| c)
}

/// The identifier in `moov/meta` (or `moov/udta/meta`).
fn moov_identifier(moov: &[u8]) -> Option<String> {
    let metas = [child(moov, b"meta"), child(moov, b"udta").and_then(|u| child(u, b"meta"))];
    metas.into_iter().flatten().find_map(meta_identifier)
}

fn meta_identifier(meta: &[u8]) -> Option<String> {
    // QuickTime's `meta` has no version and flags; ISO's has four bytes of them.
    let meta = if meta.get(4..8) == Some(b"hdlr") { meta } else { meta.get(4..)? };
    let keys = child(meta, b"keys")?;
    let ilst = child(meta, b"ilst")?;
    // `keys`: version and flags, a count, then (size, namespace, name) entries.
    let mut index = None;
    for (i, (namespace, name)) in boxes(keys.get(8..)?).enumerate() {
        if namespace == b"mdta" && name == MOVIE_KEY {
            index = Some(u32::try_from(i + 1).ok()?);
            break;
        }
    }
    let index = index?;
    // `ilst`: items whose box type is the key's 1-based index, each holding a `data` box
    // (type indicator, locale, value).
    let (_, item) = boxes(ilst).find(|(k, _)| <[u8; 4]>::try_from(*k).ok().map(u32::from_be_bytes) == Some(index))?;
    let data = child(item, b"data")?;
    identifier_text(data.get(8..)?)
}

fn identifier_text(value: &[u8]) -> Option<String> {
    let text = std::str::from_utf8(value).ok()?.trim_end_matches('\0').trim();
    (!text.is_empty() && text.len() <= MAX_IDENTIFIER).then(|| text.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn makernote(id: &str) -> Vec<u8> {
        let mut note = b"Apple iOS\0\0\x01MM".to_vec();
        note.extend_from_slice(&1u16.to_be_bytes());
        note.extend_from_slice(&MAKERNOTE_TAG.to_be_bytes());
        note.extend_from_slice(&2u16.to_be_bytes());
        note.extend_from_slice(&(id.len() as u32 + 1).to_be_bytes());
        note.extend_from_slice(&32u32.to_be_bytes());
        note.extend_from_slice(&0u32.to_be_bytes());
        note.extend_from_slice(id.as_bytes());
        note.push(0);
        note
    }

    #[test]
    fn makernote_identifiers_are_read_and_hostile_ones_refused() {
        let id = "0D4E4A8C-5B8F-4E5B-9C5E-6B1F3D2A7C90";
        let note = makernote(id);
        assert_eq!(apple_makernote_identifier(&note).as_deref(), Some(id));
        // Every truncation, and offsets and counts past the end, give nothing, never a panic.
        for n in 0..note.len() {
            assert_eq!(apple_makernote_identifier(&note[..n]), None, "{n}");
        }
        let mut bad = note.clone();
        bad[24..28].copy_from_slice(&u32::MAX.to_be_bytes());
        assert_eq!(apple_makernote_identifier(&bad), None);
        // A count past the end, and no entry of the tag: the walk ends at the end of the note.
        let mut bad = note.clone();
        bad[14..16].copy_from_slice(&u16::MAX.to_be_bytes());
        bad[16..18].copy_from_slice(&0x0012u16.to_be_bytes());
        assert_eq!(apple_makernote_identifier(&bad), None);
        assert_eq!(apple_makernote_identifier(b"Nikon\0\0\0\0\0\0\0MM\0\0\0\0"), None);
    }

    #[test]
    fn hostile_boxes_end_the_walk() {
        assert_eq!(boxes(&[0, 0, 0, 4, b'f', b'r', b'e', b'e']).count(), 0);
        assert_eq!(boxes(&[0xff, 0xff, 0xff, 0xff, b'm', b'e', b't', b'a', 0]).count(), 0);
        assert_eq!(moov_identifier(b"\0\0\0\x10meta\0\0\0\x08keys"), None);
    }
}
