//! Motion Photos (Google, Samsung): a JPEG or HEIC still with a short MP4 appended to the file,
//! announced in the still's XMP (`GCamera:MotionPhoto` / `GCamera:MicroVideo`, with either
//! `GCamera:MicroVideoOffset`, the MP4's length counted from the end of the file, or a
//! `Container:Directory` whose `MotionPhoto` item gives its `Item:Length`).
//!
//! The still is indexed as any photo; the embedded video is only located here, never decoded.
//! XMP comes from the file, so it is read as hostile: at most [`MAX_XMP_BYTES`] of it, with
//! plain attribute look-ups that accept any malformed text; a video that the XMP places
//! outside the file, or whose bytes there are not an MP4 (`ftyp` box), is not a video.

use serde::{Deserialize, Serialize};

/// Most XMP text looked at (a JPEG's XMP segment holds at most 64 KB; a HEIC's packet is
/// searched for in the first [`XMP_SEARCH_BYTES`]).
pub const MAX_XMP_BYTES: usize = 256 << 10;

/// How far into a HEIC file its XMP packet is looked for.
const XMP_SEARCH_BYTES: usize = 4 << 20;

/// Where a Motion Photo's MP4 lies in its file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct MotionVideo {
    /// Bytes from the start of the file.
    pub offset: u64,
    /// Its length in bytes.
    pub length: u64,
}

/// The Motion Photo video embedded in `bytes` (a whole photo file): `Ok(None)` for a photo
/// that does not claim one, `Err(reason)` for one that claims a video that is not there.
pub fn find_motion_video(bytes: &[u8]) -> Result<Option<MotionVideo>, String> {
    let Some(xmp) = xmp_of(bytes) else { return Ok(None) };
    let xmp = String::from_utf8_lossy(xmp);
    let flag = |name: &str| attribute(&xmp, name).is_some_and(|v| v.trim() == "1" || v.trim() == "true");
    let items = directory_items(&xmp);
    let in_directory = items.iter().any(|(semantic, _)| semantic == "MotionPhoto");
    if !(flag("MotionPhoto") || flag("MicroVideo") || in_directory) {
        return Ok(None);
    }
    let len = bytes.len() as u64;
    let (offset, length) = if in_directory {
        // Items follow the primary image in order, so the MotionPhoto item starts where the
        // lengths of it and of every item after it, counted back from the end, say.
        let at = items.iter().position(|(s, _)| s == "MotionPhoto").unwrap_or(0);
        let mut tail = 0u64;
        for (_, length) in &items[at..] {
            let Some(length) = length else {
                return Err("Motion Photo: an item of its Container:Directory has no valid Item:Length".into());
            };
            tail = tail.saturating_add(*length);
        }
        let Some(Some(length)) = items.get(at).map(|(_, l)| *l) else {
            return Err("Motion Photo: its MotionPhoto item has no Item:Length".into());
        };
        if tail > len {
            return Err(format!(
                "Motion Photo: its Container:Directory places the video {tail} bytes before the end of a {len}-byte file"
            ));
        }
        (len - tail, length)
    } else {
        let Some(raw) = attribute(&xmp, "MicroVideoOffset") else {
            return Err("Motion Photo: marked as one, but its XMP gives no MicroVideoOffset".into());
        };
        let Ok(from_end) = raw.trim().parse::<u64>() else {
            return Err(format!("Motion Photo: MicroVideoOffset {:?} is not a number", truncated(&raw)));
        };
        if from_end > len {
            return Err(format!(
                "Motion Photo: MicroVideoOffset {from_end} points past the start of a {len}-byte file"
            ));
        }
        (len - from_end, from_end)
    };
    if offset == 0 {
        // The whole file: a HEIC starts with an ftyp box too, and would pass as its own video.
        return Err("Motion Photo: its video would start at the first byte, where the still is".into());
    }
    let start = offset as usize;
    if length < 8 || offset.saturating_add(length) > len || bytes.get(start + 4..start + 8) != Some(b"ftyp") {
        return Err(format!("Motion Photo: the {length} bytes at offset {offset} are not an MP4 (no ftyp box there)"));
    }
    Ok(Some(MotionVideo { offset, length }))
}

/// A value for display in a reason, at most 40 characters.
fn truncated(s: &str) -> String {
    s.chars().take(40).collect()
}

/// The XMP packet of a JPEG (its `APP1` XMP segment) or of another file (the first
/// `<x:xmpmeta` packet in its first [`XMP_SEARCH_BYTES`]), at most [`MAX_XMP_BYTES`].
fn xmp_of(bytes: &[u8]) -> Option<&[u8]> {
    const XMP_NS: &[u8] = b"http://ns.adobe.com/xap/1.0/\0";
    if bytes.starts_with(&[0xFF, 0xD8]) {
        let mut at = 2usize;
        while at + 4 <= bytes.len() {
            if bytes[at] != 0xFF {
                return None;
            }
            let marker = bytes[at + 1];
            if marker == 0xFF {
                at += 1;
                continue;
            }
            // Markers without a length, then the start of the image data: no more metadata.
            if (0xD0..=0xD8).contains(&marker) || marker == 0x01 {
                at += 2;
                continue;
            }
            if marker == 0xDA || marker == 0xD9 {
                return None;
            }
            let length = u16::from_be_bytes([bytes[at + 2], bytes[at + 3]]) as usize;
            let segment = bytes.get(at + 4..(at + 2 + length).min(bytes.len()))?;
            if marker == 0xE1 && segment.starts_with(XMP_NS) {
                return Some(&segment[XMP_NS.len()..]);
            }
            if length < 2 {
                return None;
            }
            at += 2 + length;
        }
        return None;
    }
    let head = &bytes[..bytes.len().min(XMP_SEARCH_BYTES)];
    let start = find(head, b"<x:xmpmeta")?;
    let rest = &head[start..head.len().min(start + MAX_XMP_BYTES)];
    let end = find(rest, b"</x:xmpmeta>").map_or(rest.len(), |e| e + b"</x:xmpmeta>".len());
    Some(&rest[..end])
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// The value of the first property `name` (any namespace prefix), written as an attribute
/// (`prefix:name="value"`) or as an element (`<prefix:name>value<`).
fn attribute(xmp: &str, name: &str) -> Option<String> {
    let mut from = 0;
    while let Some(i) = xmp[from..].find(name) {
        let at = from + i;
        from = at + name.len();
        // The name must be a whole local name: after a prefix's colon.
        if !xmp[..at].ends_with(':') {
            continue;
        }
        let rest = &xmp[from..];
        if let Some(value) = rest.strip_prefix("=\"").or_else(|| rest.strip_prefix("='")) {
            let end = value.find(['"', '\''])?;
            return Some(value[..end].to_string());
        }
        if let Some(value) = rest.strip_prefix('>') {
            let end = value.find('<')?;
            return Some(value[..end].to_string());
        }
    }
    None
}

/// The items of a `Container:Directory`, in order: each one's `Item:Semantic` and its
/// `Item:Length` (`None` when it is not a number; a missing length is 0, as for the primary).
fn directory_items(xmp: &str) -> Vec<(String, Option<u64>)> {
    let mut items = Vec::new();
    let mut from = 0;
    // At most 64 items: a directory lists a handful.
    while items.len() < 64
        && let Some(i) = xmp[from..].find("Container:Item")
    {
        let at = from + i;
        from = at + "Container:Item".len();
        if !xmp[..at].ends_with('<') {
            continue;
        }
        // The element's own text: up to its end, or to the next item.
        let rest = &xmp[from..];
        let end = rest.find("Container:Item").unwrap_or(rest.len());
        let element = &rest[..end];
        let Some(semantic) = attribute(element, "Semantic") else { continue };
        let length = match attribute(element, "Length") {
            None => Some(0),
            Some(l) => l.trim().parse::<u64>().ok(),
        };
        items.push((semantic.trim().to_string(), length));
    }
    items
}

#[cfg(test)]
mod tests {
    use super::*;

    fn jpeg_with_xmp(xmp: &str, video: &[u8]) -> Vec<u8> {
        let mut out = vec![0xFF, 0xD8];
        let mut payload = b"http://ns.adobe.com/xap/1.0/\0".to_vec();
        payload.extend_from_slice(xmp.as_bytes());
        out.extend_from_slice(&[0xFF, 0xE1]);
        out.extend_from_slice(&((payload.len() + 2) as u16).to_be_bytes());
        out.extend_from_slice(&payload);
        out.extend_from_slice(&[0xFF, 0xDA, 0, 2, 0xFF, 0xD9]);
        out.extend_from_slice(video);
        out
    }

    fn mp4(len: usize) -> Vec<u8> {
        let mut v = vec![0, 0, 0, 16];
        v.extend_from_slice(b"ftypisom");
        v.resize(len, 0);
        v
    }

    #[test]
    fn micro_video_offset_and_container_directory_locate_the_mp4() {
        let video = mp4(100);
        let f = jpeg_with_xmp(r#"<x GCamera:MicroVideo="1" GCamera:MicroVideoOffset="100"/>"#, &video);
        let m = find_motion_video(&f).unwrap().unwrap();
        assert_eq!((m.offset, m.length), (f.len() as u64 - 100, 100));
        let dir = r#"<GCamera:MotionPhoto>1</GCamera:MotionPhoto><Container:Directory><rdf:Seq>
            <rdf:li><Container:Item Item:Mime="image/jpeg" Item:Semantic="Primary" Item:Length="0"/></rdf:li>
            <rdf:li><Container:Item Item:Mime="video/mp4" Item:Semantic="MotionPhoto" Item:Length="100"/></rdf:li>"#;
        let f = jpeg_with_xmp(dir, &video);
        assert_eq!(find_motion_video(&f).unwrap(), Some(MotionVideo { offset: f.len() as u64 - 100, length: 100 }));
    }

    #[test]
    fn wrong_offsets_and_hostile_xmp_are_reasons_not_videos() {
        let video = mp4(100);
        let past = jpeg_with_xmp(r#"GCamera:MicroVideo="1" GCamera:MicroVideoOffset="99999999""#, &video);
        assert!(find_motion_video(&past).unwrap_err().contains("past the start"));
        let wrong = jpeg_with_xmp(r#"GCamera:MicroVideo="1" GCamera:MicroVideoOffset="90""#, &video);
        assert!(find_motion_video(&wrong).unwrap_err().contains("not an MP4"));
        // An offset of the whole file's length: the video would be the whole file.
        let probe = jpeg_with_xmp(r#"GCamera:MicroVideo="1" GCamera:MicroVideoOffset="000000""#, &video);
        let len = probe.len();
        let whole = jpeg_with_xmp(&format!(r#"GCamera:MicroVideo="1" GCamera:MicroVideoOffset="{len:06}""#), &video);
        assert_eq!(whole.len(), len);
        assert!(find_motion_video(&whole).unwrap_err().contains("first byte"));
        let none = jpeg_with_xmp(r#"GCamera:MicroVideo="1""#, &video);
        assert!(find_motion_video(&none).is_err());
        let junk = jpeg_with_xmp(r#"GCamera:MicroVideo="1" GCamera:MicroVideoOffset="-5"#, &video);
        assert!(find_motion_video(&junk).is_err());
        // No claim: not a Motion Photo, whatever follows.
        assert_eq!(find_motion_video(&jpeg_with_xmp("<x/>", &video)), Ok(None));
        // Huge malformed XMP (the most a segment holds): a claim, then unclosed junk.
        let huge = format!("GCamera:MotionPhoto=\"1\" {}", "<a:b c:d=\"".repeat(7_000));
        let f = jpeg_with_xmp(&huge[..65_000], &video);
        assert!(find_motion_video(&f).unwrap_err().contains("no MicroVideoOffset"));
        // A segment length running past the end of the file.
        let mut cut = vec![0xFF, 0xD8, 0xFF, 0xE1, 0xFF, 0xFF];
        cut.extend_from_slice(b"http://ns.adobe.com/xap/1.0/\0GCamera:MicroVideo=\"1\"");
        assert!(find_motion_video(&cut).is_err());
        assert_eq!(find_motion_video(&[]), Ok(None));
        // A HEIC-like file: its packet is found by its tag, and read no further than the bound.
        let mut heic = b"\0\0\0\x18ftypheic\0\0\0\0mif1heic".to_vec();
        heic.extend_from_slice(b"<x:xmpmeta GCamera:MotionPhoto=\"1\" ");
        heic.resize(heic.len() + (MAX_XMP_BYTES * 2), b'<');
        heic.extend_from_slice(b"GCamera:MicroVideoOffset=\"8\"");
        assert!(find_motion_video(&heic).unwrap_err().contains("no MicroVideoOffset"), "past the bound");
    }
}
