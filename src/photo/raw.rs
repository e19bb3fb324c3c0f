//! Camera RAW files: the largest embedded JPEG preview, as most photo tools index them.
//!
//! TIFF-based RAWs (DNG, CR2, NEF, ARW, PEF, SRW, ORF, RW2) are walked IFD by IFD (the chain,
//! SubIFDs): every JPEG a directory points to (`JPEGInterchangeFormat`, a single JPEG-compressed
//! strip, Panasonic's `JpgFromRaw`) is a candidate, and the one with the most pixels wins, as in
//! LibRaw's (`rawpy`'s) `extract_thumb`. Lossless-JPEG sensor data (DNG, CR2) is no preview and is
//! passed over. CR3 keeps its preview in a `PRVW` box, RAF in a JPEG its header points to. The
//! RAW's own orientation (IFD0's tag; CR3's `CMT1` directory; RAF's embedded JPEG's EXIF) turns
//! the preview upright.
//!
//! Nothing here trusts the file: every offset and length is checked against its size before it
//! is read, directories and entries are counted and capped, a directory is visited once, and no
//! allocation is sized by the file.

use crate::error::ImageProblem;

/// Most directories visited in one file (real RAWs have a handful).
const MAX_IFDS: usize = 64;
/// Most entries read from one directory.
const MAX_ENTRIES: usize = 1024;

/// An embedded JPEG preview: where it is and the size its header declares.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Preview {
    /// Byte offset of the JPEG in the file.
    pub offset: usize,
    /// Its length in bytes.
    pub len: usize,
    /// Width its SOF declares.
    pub width: u32,
    /// Height its SOF declares.
    pub height: u32,
}

/// What a RAW file offers to index.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RawPreview {
    /// The container's name (`DNG`, `CR2`, `CR3`, `RAF`, ...).
    pub kind: &'static str,
    /// The largest JPEG preview.
    pub preview: Preview,
    /// EXIF orientation (1-8) from the RAW's own metadata; `None` where it lives in the
    /// preview's EXIF (RAF).
    pub orientation: Option<u16>,
}

/// The container name when `bytes` start a camera RAW file, `None` for anything else (a plain
/// TIFF included: it has no sensor data).
pub fn sniff(bytes: &[u8]) -> Option<&'static str> {
    if bytes.starts_with(b"FUJIFILMCCD-RAW") {
        return Some("RAF");
    }
    if bytes.len() >= 12 && &bytes[4..8] == b"ftyp" && &bytes[8..12] == b"crx " {
        return Some("CR3");
    }
    let tiff = Tiff::new(bytes)?;
    if bytes.starts_with(b"IIRO") || bytes.starts_with(b"IIRS") || bytes.starts_with(b"MMOR") {
        return Some("ORF");
    }
    if bytes.starts_with(b"IIU\0") {
        return Some("RW2");
    }
    if bytes.get(8..10) == Some(b"CR") {
        return Some("CR2");
    }
    let mut is_raw = None;
    tiff.walk(|ifd, _| {
        if ifd.entry(0xC612).is_some() {
            is_raw = Some("DNG");
        } else if is_raw.is_none() && matches!(ifd.number(0x106), Some(32803 | 34892)) {
            is_raw = Some("RAW");
        }
    });
    is_raw
}

/// Finds the largest embedded JPEG preview of a RAW file of kind `kind` (from [`sniff`]).
pub fn find_preview(bytes: &[u8], kind: &'static str) -> Result<RawPreview, ImageProblem> {
    let mut broken = None;
    let mut consider = |offset: u64, len: u64, best: &mut Option<Preview>| match jpeg_at(bytes, offset, len) {
        Ok(Some(p))
            if best.is_none_or(|b| {
                u64::from(p.width) * u64::from(p.height) > u64::from(b.width) * u64::from(b.height)
            }) =>
        {
            *best = Some(p)
        }
        Ok(_) => {}
        Err(reason) => broken = Some(reason),
    };
    let mut best = None;
    let orientation = match kind {
        "RAF" => {
            let offset = be32(bytes, 84);
            let len = be32(bytes, 88);
            if let (Some(offset), Some(len)) = (offset, len) {
                consider(u64::from(offset), u64::from(len), &mut best);
            }
            None
        }
        "CR3" => {
            if let Some((start, end)) = find_box(bytes, b"PRVW") {
                // PRVW (after its box header): 4 unknown bytes, a u16, width and height (u16),
                // a u16, the JPEG's length (u32), then the JPEG.
                let len = be32(bytes, start + 12).map(u64::from).unwrap_or(0);
                consider((start + 16) as u64, len.min(end.saturating_sub(start + 16) as u64), &mut best);
            }
            find_box(bytes, b"CMT1")
                .and_then(|(start, end)| Tiff::new(&bytes[start..end]))
                .and_then(|tiff| tiff.ifd(tiff.first)?.number(0x112))
        }
        _ => {
            let tiff = Tiff::new(bytes).ok_or_else(|| ImageProblem::Corrupt(format!("{kind}: no TIFF header")))?;
            let mut found = Vec::new();
            tiff.walk(|ifd, _| {
                if let (Some(offset), Some(len)) = (ifd.number(0x201), ifd.number(0x202)) {
                    found.push((offset, len));
                }
                if matches!(ifd.number(0x103), Some(6 | 7))
                    && let (Some(offset), Some(len)) = (ifd.single(0x111), ifd.single(0x117))
                {
                    found.push((offset, len));
                }
                if let Some(e) = ifd.entry(0x2E).filter(|e| e.typ == 7) {
                    found.push((e.value_offset as u64, u64::from(e.count)));
                }
            });
            for (offset, len) in found {
                consider(offset, len, &mut best);
            }
            tiff.ifd(tiff.first).and_then(|ifd| ifd.number(0x112))
        }
    };
    let orientation = orientation.and_then(|o| u16::try_from(o).ok()).filter(|o| (1..=8).contains(o));
    match (best, broken) {
        (Some(preview), _) => {
            Ok(RawPreview { kind, preview, orientation: orientation.or(Some(1)).filter(|_| kind != "RAF") })
        }
        (None, Some(reason)) => Err(ImageProblem::Corrupt(format!("{kind}: {reason}"))),
        (None, None) => Err(ImageProblem::Unsupported(format!(
            "{kind} without an embedded JPEG preview (decoding the sensor data is not supported; \
             convert it to DNG with a preview or to JPEG)"
        ))),
    }
}

/// The JPEG at `offset..offset + len`, with the size its first frame header declares; `None`
/// for no JPEG or a lossless one (sensor data), an error for a range outside the file.
fn jpeg_at(bytes: &[u8], offset: u64, len: u64) -> Result<Option<Preview>, String> {
    let end = offset.checked_add(len).filter(|&end| end <= bytes.len() as u64);
    let Some(end) = end else {
        return Err(format!(
            "the preview at bytes {offset}..{} lies past the end of the file ({} bytes; truncated?)",
            offset.saturating_add(len),
            bytes.len()
        ));
    };
    let jpeg = &bytes[offset as usize..end as usize];
    if len < 4 || !jpeg.starts_with(&[0xFF, 0xD8]) {
        return Ok(None);
    }
    // Walk the markers to the first frame header.
    let mut i = 2;
    while i + 9 < jpeg.len() {
        if jpeg[i] != 0xFF {
            return Ok(None);
        }
        let marker = jpeg[i + 1];
        if marker == 0xFF {
            i += 1;
            continue;
        }
        let seg = usize::from(u16::from_be_bytes([jpeg[i + 2], jpeg[i + 3]]));
        match marker {
            // Baseline, extended and progressive DCT: a picture.
            0xC0..=0xC2 => {
                let height = u32::from(u16::from_be_bytes([jpeg[i + 5], jpeg[i + 6]]));
                let width = u32::from(u16::from_be_bytes([jpeg[i + 7], jpeg[i + 8]]));
                if width == 0 || height == 0 {
                    return Ok(None);
                }
                return Ok(Some(Preview { offset: offset as usize, len: len as usize, width, height }));
            }
            // Lossless and the rest: sensor data or nothing we decode.
            0xC3 | 0xC5..=0xC7 | 0xC9..=0xCB | 0xCD..=0xCF | 0xDA | 0xD9 => return Ok(None),
            _ => i += 2 + seg,
        }
    }
    Ok(None)
}

/// The payload range of the first ISO-BMFF box of type `kind` anywhere in `bytes` (CR3 nests
/// its boxes in `uuid` and `moov` boxes; a scan for the type finds them without knowing each).
fn find_box(bytes: &[u8], kind: &[u8; 4]) -> Option<(usize, usize)> {
    let at = bytes.windows(4).position(|w| w == kind)?;
    let start = at.checked_sub(4)?;
    let size = be32(bytes, start)? as usize;
    let end = start.checked_add(size).filter(|&e| e <= bytes.len() && size >= 8)?;
    Some((at + 4, end))
}

fn be32(bytes: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_be_bytes(bytes.get(at..at.checked_add(4)?)?.try_into().ok()?))
}

/// A TIFF structure: its bytes, byte order and first directory.
struct Tiff<'a> {
    bytes: &'a [u8],
    little: bool,
    first: usize,
}

/// One directory entry.
#[derive(Clone, Copy)]
struct Entry {
    tag: u16,
    typ: u16,
    count: u32,
    /// Where the value is: in the entry itself when it fits in 4 bytes, else the offset stored there.
    value_offset: usize,
}

/// One directory: its entries.
struct Ifd<'a> {
    tiff: &'a Tiff<'a>,
    entries: Vec<Entry>,
}

impl<'a> Tiff<'a> {
    fn new(bytes: &'a [u8]) -> Option<Self> {
        let little = match bytes.get(..2)? {
            b"II" => true,
            b"MM" => false,
            _ => return None,
        };
        let tiff = Tiff { bytes, little, first: 0 };
        // 42 for TIFF, 0x55 for RW2, 0x4F52/0x5352 for ORF.
        if !matches!(tiff.u16(2)?, 42 | 0x55 | 0x4F52 | 0x5352) {
            return None;
        }
        let first = tiff.u32(4)? as usize;
        Some(Tiff { first, ..tiff })
    }

    fn u16(&self, at: usize) -> Option<u16> {
        let b: [u8; 2] = self.bytes.get(at..at.checked_add(2)?)?.try_into().ok()?;
        Some(if self.little { u16::from_le_bytes(b) } else { u16::from_be_bytes(b) })
    }

    fn u32(&self, at: usize) -> Option<u32> {
        let b: [u8; 4] = self.bytes.get(at..at.checked_add(4)?)?.try_into().ok()?;
        Some(if self.little { u32::from_le_bytes(b) } else { u32::from_be_bytes(b) })
    }

    /// The directory at `offset`, when it lies inside the file.
    fn ifd(&self, offset: usize) -> Option<Ifd<'_>> {
        let n = usize::from(self.u16(offset)?);
        if n == 0 || n > MAX_ENTRIES || offset.checked_add(2 + 12 * n + 4)? > self.bytes.len() {
            return None;
        }
        let mut entries = Vec::with_capacity(n);
        for k in 0..n {
            let at = offset + 2 + 12 * k;
            let (tag, typ, count) = (self.u16(at)?, self.u16(at + 2)?, self.u32(at + 4)?);
            let size = u64::from(type_size(typ)) * u64::from(count);
            let value_offset = if size <= 4 { at + 8 } else { self.u32(at + 8)? as usize };
            entries.push(Entry { tag, typ, count, value_offset });
        }
        Some(Ifd { tiff: self, entries })
    }

    /// Calls `visit` on every directory reachable from the first: the chain of next
    /// directories and SubIFDs, each once, at most [`MAX_IFDS`].
    fn walk(&self, mut visit: impl FnMut(&Ifd<'_>, usize)) {
        let mut queue = vec![self.first];
        let mut seen = Vec::new();
        while let Some(offset) = queue.pop() {
            if seen.contains(&offset) || seen.len() >= MAX_IFDS {
                continue;
            }
            seen.push(offset);
            let Some(ifd) = self.ifd(offset) else { continue };
            visit(&ifd, offset);
            if let Some(sub) = ifd.entry(0x14A) {
                for k in 0..sub.count.min(16) as usize {
                    if let Some(o) = self.u32(sub.value_offset + 4 * k) {
                        queue.push(o as usize);
                    }
                }
            }
            let next = offset + 2 + 12 * ifd.entries.len();
            match self.u32(next) {
                Some(o) if o != 0 => queue.push(o as usize),
                _ => {}
            }
        }
    }
}

impl Ifd<'_> {
    fn entry(&self, tag: u16) -> Option<Entry> {
        self.entries.iter().copied().find(|e| e.tag == tag)
    }

    /// The first value of a SHORT or LONG entry.
    fn number(&self, tag: u16) -> Option<u64> {
        let e = self.entry(tag)?;
        match e.typ {
            3 => self.tiff.u16(e.value_offset).map(u64::from),
            4 | 13 => self.tiff.u32(e.value_offset).map(u64::from),
            _ => None,
        }
    }

    /// The value of an entry that holds exactly one number.
    fn single(&self, tag: u16) -> Option<u64> {
        self.entry(tag).filter(|e| e.count == 1).and_then(|_| self.number(tag))
    }
}

/// Bytes per value of a TIFF field type (unknown types: 1, so their values stay unread).
fn type_size(typ: u16) -> u32 {
    match typ {
        3 | 8 => 2,
        4 | 9 | 11 | 13 => 4,
        5 | 10 | 12 => 8,
        _ => 1,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_and_plain_tiffs_are_no_raw() {
        assert_eq!(sniff(b"hello, I am a text file named .cr2\n"), None);
        // A TIFF with one directory and no sensor data.
        let mut tiff = b"II*\0\x08\0\0\0\x01\0\x00\x01\x03\0\x01\0\0\0\x10\0\0\0\0\0\0\0".to_vec();
        tiff.resize(64, 0);
        assert_eq!(sniff(&tiff), None);
    }

    #[test]
    fn directories_pointing_outside_the_file_or_at_themselves_end_the_walk() {
        // IFD0 at 8 whose next directory is itself, and whose SubIFDs point far away.
        let mut b = b"II*\0\x08\0\0\0".to_vec();
        b.extend_from_slice(&2u16.to_le_bytes());
        b.extend_from_slice(&[0x4A, 0x01, 4, 0, 1, 0, 0, 0, 0xFF, 0xFF, 0xFF, 0x7F]);
        b.extend_from_slice(&[0x12, 0xC6, 1, 0, 4, 0, 0, 0, 1, 4, 0, 0]);
        b.extend_from_slice(&8u32.to_le_bytes());
        assert_eq!(sniff(&b), Some("DNG"));
        let err = find_preview(&b, "DNG").unwrap_err();
        assert!(
            matches!(err, ImageProblem::Unsupported(ref m) if m.contains("without an embedded JPEG preview")),
            "{err}"
        );
    }
}
