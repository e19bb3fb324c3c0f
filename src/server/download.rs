//! `GET|POST /api/download`: the original files of chosen photos as one zip, streamed as it is
//! made (stored, not compressed again: photos and videos are compressed already), so neither
//! the server nor the client holds it whole.
//!
//! Invariants: every byte in the zip comes from a file opened by [`open_to_serve`], which
//! checks the open file itself (a file inside a library folder, or reached through a link only
//! when its content is the indexed image's), at the moment it is read; a download is bounded
//! ([`MAX_DOWNLOAD_PHOTOS`] photos, [`MAX_DOWNLOAD_BYTES`] bytes), checked before the first
//! byte and again as each file is opened; names inside the zip are plain file names, unique
//! without regard to case. An id the library does not know refuses the whole request; a photo
//! that cannot be read (gone, changed, leading outside) is left out and named, with the reason,
//! in `NOT INCLUDED.txt` inside the zip, also when that happens while the zip streams. A file
//! cut short or written to while its own bytes are being sent breaks the download off (the
//! client gets an incomplete zip, never a whole-looking zip holding a damaged photo).

use std::collections::{HashSet, VecDeque};
use std::io::{Read, Write};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use actix_web::http::header;
use actix_web::{HttpResponse, web};
use serde::Deserialize;
use zip::write::{SimpleFileOptions, StreamWriter};
use zip::{CompressionMethod, ZipWriter};

use super::AppState;
use super::api::{ApiError, ApiResult, blocking, indexed_hash, open_to_serve};
use crate::error::Error;
use crate::store::ImageId;

/// Most photos in one download.
pub(super) const MAX_DOWNLOAD_PHOTOS: usize = 1000;
/// Most bytes of originals in one download (2 GiB: what browsers keep of a download made in
/// memory, and under the 4 GiB a zip without its 64-bit extension can hold).
pub(super) const MAX_DOWNLOAD_BYTES: u64 = 2 << 30;
/// The entry that lists what was left out, and why.
pub(super) const NOT_INCLUDED: &str = "NOT INCLUDED.txt";
/// About how many bytes of zip each step on the blocking pool makes.
const PIECE: usize = 256 * 1024;

pub(super) fn routes(cfg: &mut web::ServiceConfig) {
    cfg.route("/download", web::get().to(download_listed)).route("/download", web::post().to(download_posted));
}

#[derive(Deserialize)]
struct DownloadParams {
    /// Comma-separated ids.
    ids: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct DownloadBody {
    ids: Vec<ImageId>,
}

/// `GET /api/download?ids=1,2,3`: a link a browser saves straight to disk (without a token).
async fn download_listed(state: web::Data<AppState>, params: web::Query<DownloadParams>) -> ApiResult<HttpResponse> {
    let ids = listed_ids(&params.into_inner().ids.unwrap_or_default())?;
    download(state, ids).await
}

/// The ids of `GET /api/download?ids=…`.
fn listed_ids(raw: &str) -> ApiResult<Vec<ImageId>> {
    // Digits and commas only, as the OpenAPI pattern says: `ids=+5` (a space once decoded, or
    // `%2B5`) and `ids=1,,2` are refused rather than read leniently.
    let listed = if raw.is_empty() { Vec::new() } else { raw.split(',').collect() };
    listed
        .into_iter()
        .map(|s| {
            if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
                let shown: String = s.chars().take(40).collect();
                return Err(ApiError::bad_request(format!(
                    "{shown:?} is not an image id: list ids as digits separated by commas (ids=1,2,3)"
                )));
            }
            // Digits past any id (over 2^64) name no photo, as an unknown id does.
            s.parse().map_err(|_| ApiError::not_found(format!("no image has the id {}", &s[..s.len().min(40)])))
        })
        .collect()
}

/// `POST /api/download` with `{"ids": [...]}`.
async fn download_posted(state: web::Data<AppState>, body: web::Json<DownloadBody>) -> ApiResult<HttpResponse> {
    download(state, body.into_inner().ids).await
}

async fn download(state: web::Data<AppState>, ids: Vec<ImageId>) -> ApiResult<HttpResponse> {
    let mut seen = HashSet::new();
    let ids: Vec<ImageId> = ids.into_iter().filter(|id| seen.insert(*id)).collect();
    if ids.is_empty() {
        return Err(ApiError::bad_request("name the photos to download: ids=1,2,3 or {\"ids\": [1, 2, 3]}"));
    }
    if ids.len() > MAX_DOWNLOAD_PHOTOS {
        return Err(ApiError::bad_request(format!(
            "{} photos asked for; a download holds at most {MAX_DOWNLOAD_PHOTOS}: download them in parts",
            ids.len()
        )));
    }
    let shared = state.clone();
    let plan = blocking(move || plan(&shared, &ids)).await?;
    let count = plan.entries.len();
    let zipper = Zipper::new(state.into_inner(), plan);
    let body = futures_util::stream::unfold(Some(zipper), |zipper| async move {
        let mut zipper = zipper?;
        match web::block(move || zipper.step().map(|bytes| (zipper, bytes))).await {
            Ok(Ok((_, None))) => None,
            Ok(Ok((zipper, Some(bytes)))) => Some((Ok(web::Bytes::from(bytes)), Some(zipper))),
            Ok(Err(e)) => {
                tracing::warn!("a download broke off: {e}");
                Some((Err(e), None))
            }
            Err(e) => Some((Err(std::io::Error::other(e.to_string())), None)),
        }
    });
    Ok(HttpResponse::Ok()
        .content_type("application/zip")
        .insert_header((
            header::CONTENT_DISPOSITION,
            format!("attachment; filename=\"clipdex-{count}-photo{}.zip\"", if count == 1 { "" } else { "s" }),
        ))
        .insert_header((header::CACHE_CONTROL, "no-store"))
        .insert_header(("X-Content-Type-Options", "nosniff"))
        .streaming(body))
}

/// A photo to put in the zip: where it is, its content hash and its name inside the zip.
struct Entry {
    id: ImageId,
    path: PathBuf,
    hash: String,
    name: String,
}

/// What a download holds, checked before its first byte.
struct Plan {
    entries: VecDeque<Entry>,
    /// `name: reason` of each photo left out.
    left_out: Vec<String>,
}

/// Checks every id (an unknown one refuses the request), finds each photo's file and names it,
/// and refuses a download over [`MAX_DOWNLOAD_BYTES`]; the files are opened again as they are
/// sent, and the check made on each then.
fn plan(state: &AppState, ids: &[ImageId]) -> crate::Result<Plan> {
    let library = &state.library;
    let mut names = ZipNames::default();
    let (mut entries, mut left_out, mut total) = (VecDeque::new(), Vec::new(), 0u64);
    for &id in ids {
        let hash = indexed_hash(library, id)?;
        let path = match library.image_file(id) {
            Ok(path) => path,
            Err(e @ (Error::NotFound(_) | Error::Forbidden(_))) => {
                left_out.push(format!("#{id}: {e}"));
                continue;
            }
            Err(e) => return Err(e),
        };
        let name = names.claim(&path, id);
        match open_to_serve(library, &path, id, Some(&hash)) {
            Ok((_, len)) => {
                total += len;
                entries.push_back(Entry { id, path, hash, name });
            }
            Err(e) => left_out.push(format!("{name}: {e}")),
        }
    }
    if total > MAX_DOWNLOAD_BYTES {
        return Err(Error::Invalid(format!(
            "these {} photos are {}; a download holds at most {}: select fewer photos",
            entries.len(),
            megabytes(total),
            megabytes(MAX_DOWNLOAD_BYTES)
        )));
    }
    if entries.is_empty() {
        return Err(Error::NotFound(format!("none of the photos can be read: {}", left_out.join("; "))));
    }
    Ok(Plan { entries, left_out })
}

fn megabytes(bytes: u64) -> String {
    format!("{:.0} MB", bytes as f64 / 1e6)
}

/// Names inside a zip: a photo's file name made safe to unpack anywhere ([`portable_name`]),
/// with ` (2)`, ` (3)`... before its extension when another photo took it (compared without
/// case: the folders it is unpacked into may ignore it).
#[derive(Default)]
struct ZipNames(HashSet<String>);

impl ZipNames {
    fn claim(&mut self, path: &std::path::Path, id: ImageId) -> String {
        let plain = path.file_name().map(portable_name).unwrap_or_default();
        let plain = if plain.is_empty() { format!("photo-{id}") } else { plain };
        let (stem, ext) = match plain.rfind('.') {
            Some(dot) if dot > 0 => (&plain[..dot], &plain[dot..]),
            _ => (plain.as_str(), ""),
        };
        let mut name = plain.clone();
        let mut n = 1;
        while self.0.contains(&name.to_lowercase()) || name.eq_ignore_ascii_case(NOT_INCLUDED) {
            n += 1;
            name = format!("{stem} ({n}){ext}");
        }
        self.0.insert(name.to_lowercase());
        name
    }
}

/// Longest name [`portable_name`] makes, in UTF-16 units: Windows allows 255 per name, and
/// [`ZipNames`] may add ` (NNNN)`.
const MAX_NAME_UNITS: usize = 240;

/// A file name as the zip holds it, one that unpacks on Windows, macOS and Linux alike:
/// - bytes that are not UTF-8 become `%XX` (their hex value), so `caf\xe9.jpg` reads
///   `caf%E9.jpg` instead of losing the byte to U+FFFD;
/// - characters Windows refuses in a name (`<>:"/\|?*` and control characters) become `_`,
///   as do trailing dots and spaces (which Windows drops, merging names);
/// - a name Windows reserves for a device (`CON`, `PRN`, `AUX`, `NUL`, `COM1`–`COM9`,
///   `LPT1`–`LPT9`, with any extension) gets a leading `_`;
/// - a name longer than [`MAX_NAME_UNITS`] UTF-16 units loses the end of its stem (its
///   extension kept).
///
/// Empty for a name with nothing left (`.`, `..`): the caller names it.
fn portable_name(raw: &std::ffi::OsStr) -> String {
    use std::os::unix::ffi::OsStrExt;
    let mut name = String::new();
    for chunk in raw.as_bytes().utf8_chunks() {
        for c in chunk.valid().chars() {
            let refused = c.is_control() || matches!(c, '<' | '>' | ':' | '"' | '/' | '\\' | '|' | '?' | '*');
            name.push(if refused { '_' } else { c });
        }
        for b in chunk.invalid() {
            name.push_str(&format!("%{b:02X}"));
        }
    }
    if name == "." || name == ".." {
        return String::new();
    }
    let kept = name.trim_end_matches(['.', ' ']).len();
    let trailing = name.len() - kept;
    name.truncate(kept);
    name.extend(std::iter::repeat_n('_', trailing));
    // Windows reads a device name in the part before the first dot, trailing spaces ignored.
    let base = name.split('.').next().unwrap_or("").trim_end_matches(' ').to_ascii_uppercase();
    let device = matches!(base.as_str(), "CON" | "PRN" | "AUX" | "NUL" | "CONIN$" | "CONOUT$")
        || (base.len() == 4
            && (base.starts_with("COM") || base.starts_with("LPT"))
            && base.as_bytes()[3].is_ascii_digit())
        || base.strip_prefix("COM").or_else(|| base.strip_prefix("LPT")).is_some_and(|n| matches!(n, "¹" | "²" | "³"));
    if device {
        name.insert(0, '_');
    }
    shorten(name)
}

/// `name` cut to [`MAX_NAME_UNITS`] UTF-16 units, from the end of its stem.
fn shorten(name: String) -> String {
    if name.encode_utf16().count() <= MAX_NAME_UNITS {
        return name;
    }
    let (stem, ext) = match name.rfind('.') {
        // An extension of a sane length is kept; a "stem.<300 characters>" is cut as a whole.
        Some(dot) if dot > 0 && name.len() - dot <= 16 => (&name[..dot], &name[dot..]),
        _ => (name.as_str(), ""),
    };
    let room = MAX_NAME_UNITS - ext.encode_utf16().count();
    let mut units = 0;
    let cut: String = stem
        .chars()
        .take_while(|c| {
            units += c.len_utf16();
            units <= room
        })
        .collect();
    // A cut may leave a trailing dot or space, which Windows would drop.
    let kept = cut.trim_end_matches(['.', ' ']);
    format!("{kept}{}{ext}", "_".repeat(cut.len() - kept.len()))
}

/// Where the zip writer's bytes collect between steps (the writer keeps it; the stream takes them).
#[derive(Clone, Default)]
struct Sink(Arc<Mutex<Vec<u8>>>);

impl Sink {
    fn take(&self) -> Vec<u8> {
        std::mem::take(&mut *self.0.lock().unwrap_or_else(std::sync::PoisonError::into_inner))
    }
}

impl Write for Sink {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap_or_else(std::sync::PoisonError::into_inner).extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// A zip being made, one [`PIECE`] at a time as the client takes it.
struct Zipper {
    state: Arc<AppState>,
    zip: Option<ZipWriter<StreamWriter<Sink>>>,
    sink: Sink,
    entries: VecDeque<Entry>,
    /// The file being copied, limited to its length when opened, with what it was then.
    current: Option<Copying>,
    left_out: Vec<String>,
    sent: u64,
}

impl Zipper {
    fn new(state: Arc<AppState>, plan: Plan) -> Self {
        let sink = Sink::default();
        let zip = ZipWriter::new_stream(sink.clone());
        Zipper { state, zip: Some(zip), sink, entries: plan.entries, current: None, left_out: plan.left_out, sent: 0 }
    }

    /// The next bytes of the zip; `None` once it is all sent.
    fn step(&mut self) -> std::io::Result<Option<Vec<u8>>> {
        let mut buf = vec![0u8; PIECE];
        while self.sink.0.lock().map_or(0, |b| b.len()) < PIECE {
            let Some(zip) = self.zip.as_mut() else { break };
            if let Some(copying) = self.current.as_mut() {
                let n = copying.file.read(&mut buf)?;
                if n == 0 {
                    let copying =
                        self.current.take().ok_or_else(|| std::io::Error::other("no file is being copied"))?;
                    copying.check()?;
                } else {
                    copying.copied += n as u64;
                    zip.write_all(&buf[..n])?;
                }
            } else if let Some(entry) = self.entries.pop_front() {
                self.start(entry)?;
            } else {
                let mut zip = self.zip.take().ok_or_else(|| std::io::Error::other("the zip is finished"))?;
                if !self.left_out.is_empty() {
                    zip.start_file(
                        NOT_INCLUDED,
                        SimpleFileOptions::default().compression_method(CompressionMethod::Stored),
                    )
                    .map_err(std::io::Error::other)?;
                    let text = format!(
                        "These photos could not be read when the download was made, and are not in it:\n\n{}\n",
                        self.left_out.join("\n")
                    );
                    zip.write_all(text.as_bytes())?;
                }
                zip.finish().map_err(std::io::Error::other)?;
            }
        }
        let bytes = self.sink.take();
        Ok(if bytes.is_empty() && self.zip.is_none() { None } else { Some(bytes) })
    }

    /// Opens the next photo (checked again now: it may have gone or changed since the plan)
    /// and starts its entry; a photo that cannot be sent is listed as left out.
    fn start(&mut self, entry: Entry) -> std::io::Result<()> {
        let opened = open_to_serve(&self.state.library, &entry.path, entry.id, Some(&entry.hash));
        let (file, len) = match opened {
            Ok(opened) => opened,
            Err(e) => {
                self.left_out.push(format!("{}: {e}", entry.name));
                return Ok(());
            }
        };
        if self.sent + len > MAX_DOWNLOAD_BYTES {
            self.left_out.push(format!(
                "{}: the download reached its limit of {} (the file grew since it was asked for)",
                entry.name,
                megabytes(MAX_DOWNLOAD_BYTES)
            ));
            return Ok(());
        }
        self.sent += len;
        let mut options = SimpleFileOptions::default().compression_method(CompressionMethod::Stored);
        if let Some(time) = file.metadata().and_then(|m| m.modified()).ok().and_then(zip_time) {
            options = options.last_modified_time(time);
        }
        let zip = self.zip.as_mut().ok_or_else(|| std::io::Error::other("the zip is finished"))?;
        zip.start_file(entry.name.as_str(), options).map_err(std::io::Error::other)?;
        let when = FileStamp::of(&file)?;
        self.current = Some(Copying { file: file.take(len), name: entry.name, len, when, copied: 0 });
        Ok(())
    }
}

/// A photo being copied into the zip.
struct Copying {
    file: std::io::Take<std::fs::File>,
    name: String,
    len: u64,
    when: FileStamp,
    copied: u64,
}

impl Copying {
    /// After the last byte: a file that was cut short or written to while it was copied has
    /// gone into the zip damaged, and its bytes are already sent; the download then breaks off
    /// (the client sees an incomplete zip) rather than end as a whole zip holding a damaged photo.
    fn check(&self) -> std::io::Result<()> {
        let now = FileStamp::of(self.file.get_ref())?;
        if self.copied != self.len || now != self.when {
            return Err(std::io::Error::other(format!(
                "{} changed while it was being sent ({} of {} bytes); the zip is left incomplete",
                self.name, self.copied, self.len
            )));
        }
        Ok(())
    }
}

/// What says a file was written to: its length, its modification time and its status-change
/// time (which `touch` cannot set back).
#[derive(Debug, PartialEq, Eq)]
struct FileStamp {
    len: u64,
    modified: Option<std::time::SystemTime>,
    changed: (i64, i64),
}

impl FileStamp {
    fn of(file: &std::fs::File) -> std::io::Result<Self> {
        let meta = file.metadata()?;
        #[cfg(unix)]
        let changed = {
            use std::os::unix::fs::MetadataExt;
            (meta.ctime(), meta.ctime_nsec())
        };
        #[cfg(not(unix))]
        let changed = (0, 0);
        Ok(FileStamp { len: meta.len(), modified: meta.modified().ok(), changed })
    }
}

/// A file's time as a zip entry keeps it (local time, two-second steps, 1980 to 2107), so
/// unpacked photos keep their dates.
fn zip_time(time: std::time::SystemTime) -> Option<zip::DateTime> {
    use chrono::{Datelike, Timelike};
    let local = chrono::DateTime::<chrono::Local>::from(time);
    zip::DateTime::from_date_and_time(
        u16::try_from(local.year()).ok()?,
        local.month() as u8,
        local.day() as u8,
        local.hour() as u8,
        local.minute() as u8,
        local.second() as u8,
    )
    .ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_inside_the_zip_are_unique_without_regard_to_case() {
        let mut names = ZipNames::default();
        let got: Vec<String> =
            ["/a/IMG_1.jpg", "/b/img_1.JPG", "/c/IMG_1.jpg", "/d/README", "/e/readme", "/f/NOT INCLUDED.txt"]
                .iter()
                .map(|p| names.claim(std::path::Path::new(p), 7))
                .collect();
        assert_eq!(
            got,
            ["IMG_1.jpg", "img_1 (2).JPG", "IMG_1 (3).jpg", "README", "readme (2)", "NOT INCLUDED (2).txt"]
        );
        assert_eq!(names.claim(std::path::Path::new("/"), 7), "photo-7");
    }

    #[test]
    fn listed_ids_are_digits_and_commas_only() {
        use actix_web::ResponseError;
        assert_eq!(listed_ids("1,20,3").unwrap(), [1, 20, 3]);
        assert!(listed_ids("").unwrap().is_empty(), "no ids: the caller says to name some");
        // `+5` (what `ids=%2B5` decodes to), ` 5` (`ids=+5`), empty parts, signs and letters.
        for bad in ["+2000000", " 2000000", "1, 2", "1,,2", "1,", "-1", "0x10", "1e3", "٣"] {
            let e = listed_ids(bad).unwrap_err();
            assert_eq!(e.status_code(), actix_web::http::StatusCode::BAD_REQUEST, "{bad:?}");
        }
        // Digits past any id name no photo: as an unknown id.
        let e = listed_ids(&"9".repeat(30)).unwrap_err();
        assert_eq!(e.status_code(), actix_web::http::StatusCode::NOT_FOUND);
    }

    fn portable(bytes: &[u8]) -> String {
        use std::os::unix::ffi::OsStrExt;
        portable_name(std::ffi::OsStr::from_bytes(bytes))
    }

    #[test]
    fn names_inside_the_zip_unpack_on_windows_and_keep_bytes_that_are_not_utf8_readable() {
        // Characters Windows refuses, and controls.
        assert_eq!(portable(b"a:b*?.tiff"), "a_b__.tiff");
        assert_eq!(portable(b"<x>|\"y\".jpg"), "_x___y_.jpg");
        assert_eq!(portable(b"tab\there\x7f.png"), "tab_here_.png");
        // Trailing dots and spaces, which Windows drops.
        assert_eq!(portable(b"photo. ."), "photo___");
        assert_eq!(portable(b"scan.jpg "), "scan.jpg_");
        // Device names, with or without an extension, in any case.
        for (raw, want) in [
            (&b"CON"[..], "_CON"),
            (b"nul.jpg", "_nul.jpg"),
            (b"Com1.tar.gz", "_Com1.tar.gz"),
            (b"lpt9 .png", "_lpt9 .png"),
            (b"COM\xc2\xb9.jpg", "_COM\u{b9}.jpg"),
        ] {
            assert_eq!(portable(raw), want);
        }
        for plain in ["CONSOLE.jpg", "com10.jpg", "lpt.png", "aux-1.jpg", "caf\u{e9} \u{1f4f7}.heic"] {
            assert_eq!(portable(plain.as_bytes()), plain);
        }
        // Bytes that are not UTF-8: escaped, so two such names stay apart and readable.
        assert_eq!(portable(b"caf\xe9.jpg"), "caf%E9.jpg");
        assert_eq!(portable(b"caf\xe8.jpg"), "caf%E8.jpg");
        assert_eq!(portable(b"\xff\xfe"), "%FF%FE");
        assert!(!portable(b"caf\xe9.jpg").contains('\u{fffd}'));
        // Nothing left, or too long for Windows.
        assert_eq!(portable(b".."), "");
        let long = format!("{}.jpg", "\u{1f4f7}".repeat(200));
        let cut = portable(long.as_bytes());
        assert!(cut.ends_with(".jpg") && cut.encode_utf16().count() <= MAX_NAME_UNITS, "{cut}");
        let dots = format!("{}.{}", "a".repeat(120), ". ".repeat(100));
        assert!(portable(dots.as_bytes()).encode_utf16().count() <= MAX_NAME_UNITS);

        // Through the names a zip claims: unique, also where replacing made two names alike.
        let mut names = ZipNames::default();
        let claim = |names: &mut ZipNames, raw: &[u8]| {
            use std::os::unix::ffi::OsStrExt;
            names.claim(&std::path::Path::new("/p").join(std::ffi::OsStr::from_bytes(raw)), 3)
        };
        assert_eq!(claim(&mut names, b"a:b.jpg"), "a_b.jpg");
        assert_eq!(claim(&mut names, b"a?b.jpg"), "a_b (2).jpg");
        assert_eq!(claim(&mut names, b"A_B.JPG"), "A_B (3).JPG");
        assert_eq!(claim(&mut names, b"nul"), "_nul");
        assert_eq!(claim(&mut names, b"\xe9"), "%E9");
        assert_eq!(claim(&mut names, b"%E9"), "%E9 (2)");
    }

    /// Copies `path` as the zip does, with `meanwhile` done to the file after it is opened.
    fn copy_with(path: &std::path::Path, meanwhile: impl FnOnce()) -> std::io::Result<()> {
        let file = std::fs::File::open(path)?;
        let len = file.metadata()?.len();
        let when = FileStamp::of(&file)?;
        let mut copying = Copying { file: file.take(len), name: "a.jpg".into(), len, when, copied: 0 };
        // Past the coarse clock the kernel stamps files with, so a write shows in their times.
        std::thread::sleep(std::time::Duration::from_millis(30));
        meanwhile();
        let mut buf = [0u8; 256];
        loop {
            let n = copying.file.read(&mut buf)?;
            if n == 0 {
                return copying.check();
            }
            copying.copied += n as u64;
        }
    }

    #[test]
    fn a_photo_cut_short_or_rewritten_while_it_is_sent_breaks_the_download_off() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("a.jpg");
        let write = || std::fs::write(&path, vec![7u8; 4096]).unwrap();
        write();
        copy_with(&path, || {}).expect("an untouched file is sent whole");
        let cut = copy_with(&path, || std::fs::File::options().write(true).open(&path).unwrap().set_len(1000).unwrap());
        assert!(cut.unwrap_err().to_string().contains("changed while it was being sent"));
        write();
        // Rewritten in place, same length, its modification time set back as `touch -r` would.
        let rewritten = copy_with(&path, || {
            let before = std::fs::metadata(&path).unwrap().modified().unwrap();
            let file = std::fs::File::options().write(true).open(&path).unwrap();
            std::io::Write::write_all(&mut &file, &[0u8; 4096]).unwrap();
            file.set_modified(before).unwrap();
        });
        assert!(rewritten.is_err(), "a same-length rewrite is seen by its status-change time");
    }
}
