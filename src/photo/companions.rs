//! Companion files: files that belong to a photo rather than being library items of their own.
//!
//! Files with the same name stem in the same folder (the extension compared without regard to
//! case) form a group, and [`roles`] alone decides what each member of a group is, for the
//! scanner (what to embed, what to leave out) and for everything that shows an item (results,
//! `show`, the API):
//!
//! - an **Apple Live Photo**: a HEIC/HEIF or JPEG still and a MOV. The still is the item; the
//!   MOV is its `live_video`, not a video of its own. A HEIC is preferred over a JPEG when a
//!   group has both.
//! - a **RAW+JPEG pair**: a JPEG and a camera RAW (DNG, CR2, CR3, NEF, ARW, RAF, ORF, RW2,
//!   PEF, SRW). The JPEG's pixels are the item; the RAW is its `raw_path`. (The indexer
//!   makes the RAW the item instead while the JPEG is a recorded failure: a pair whose JPEG
//!   cannot be decoded is not lost from search.)
//!
//! Pairing is decided from the folder as it is now, every pass: a MOV indexed as a video
//! before its still arrived is forgotten as a video once the pair forms, and becomes a video
//! again when its still is deleted. A Motion Photo's video lives inside its still's file and is
//! found by [`crate::photo::motion`] instead.

use std::collections::HashMap;
use std::ffi::{OsStr, OsString};
use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::photo::motion::MotionVideo;

/// Extensions of the stills a Live Photo's MOV pairs with, preferred first.
const LIVE_STILLS: &[&[&str]] = &[&["heic", "heif", "hif"], &["jpg", "jpeg", "jpe"]];

/// Extensions of a Live Photo's video.
const LIVE_VIDEOS: &[&str] = &["mov"];

/// Extensions of the JPEG a RAW pairs with.
const RAW_TWINS: &[&str] = &["jpg", "jpeg", "jpe"];

/// Extensions of camera RAW files that pair with a JPEG.
const RAWS: &[&str] = &["dng", "cr2", "cr3", "nef", "arw", "raf", "orf", "rw2", "pef", "srw"];

/// The files an item's still owns, and the video embedded in it. In JSON: `live_video`,
/// `raw_path` (each with a `_bytes` twin when the path is not UTF-8, see
/// [`crate::path_text`]) and `motion_video` (`{"offset": N, "length": N}`), each only when
/// present.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Companions {
    /// A Live Photo's MOV.
    pub live_video: Option<PathBuf>,
    /// The RAW of a RAW+JPEG pair.
    pub raw_path: Option<PathBuf>,
    /// A Motion Photo's embedded MP4.
    pub motion_video: Option<MotionVideo>,
}

impl Companions {
    /// Whether there is nothing to show.
    pub fn is_empty(&self) -> bool {
        self.live_video.is_none() && self.raw_path.is_none() && self.motion_video.is_none()
    }
}

impl Serialize for Companions {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        let mut map = serde_json::Map::new();
        if let Some(p) = &self.live_video {
            crate::path_text::insert(&mut map, "live_video", p);
        }
        if let Some(p) = &self.raw_path {
            crate::path_text::insert(&mut map, "raw_path", p);
        }
        if let Some(m) = &self.motion_video {
            map.insert("motion_video".into(), serde_json::json!({"offset": m.offset, "length": m.length}));
        }
        s.collect_map(map)
    }
}

/// What a file is within its group.
#[derive(Debug, Clone, PartialEq)]
pub enum Role {
    /// A library item, with the companion files it owns.
    Item(Companions),
    /// A companion of the still at this path: not an item of its own.
    Companion {
        /// The still it belongs to.
        still: PathBuf,
        /// Whether it is a Live Photo's video (else a RAW twin).
        live_video: bool,
    },
}

fn extension(path: &Path) -> Option<String> {
    path.extension().and_then(OsStr::to_str).map(str::to_ascii_lowercase)
}

fn has_extension(path: &Path, list: &[&str]) -> bool {
    extension(path).is_some_and(|e| list.contains(&e.as_str()))
}

/// The role of every file of one group (same folder, same stem), in the group's order.
pub fn roles(group: &[PathBuf]) -> Vec<(PathBuf, Role)> {
    let first = |list: &[&str]| {
        let mut found: Vec<&PathBuf> = group.iter().filter(|p| has_extension(p, list)).collect();
        found.sort();
        found.first().map(|p| (*p).clone())
    };
    let video = first(LIVE_VIDEOS);
    let live_still = video.as_ref().and_then(|_| LIVE_STILLS.iter().find_map(|list| first(list)));
    let raw = first(RAWS);
    let raw_still = raw.as_ref().and_then(|_| first(RAW_TWINS));
    group
        .iter()
        .map(|p| {
            let role = if live_still.is_some() && Some(p) == video.as_ref() {
                Role::Companion { still: live_still.clone().unwrap_or_default(), live_video: true }
            } else if raw_still.is_some() && Some(p) == raw.as_ref() {
                Role::Companion { still: raw_still.clone().unwrap_or_default(), live_video: false }
            } else {
                let mut companions = Companions::default();
                if live_still.as_ref() == Some(p) {
                    companions.live_video = video.clone();
                }
                if raw_still.as_ref() == Some(p) {
                    companions.raw_path = raw.clone();
                }
                Role::Item(companions)
            };
            (p.clone(), role)
        })
        .collect()
}

/// The role of one file, from its folder as it is now.
pub fn role_of(path: &Path) -> Role {
    FolderGroups::of(&[path]).role(path)
}

/// The companion files of the still at `path` (none when it is not one).
pub fn companions_of(path: &Path) -> Companions {
    match role_of(path) {
        Role::Item(c) => c,
        Role::Companion { .. } => Companions::default(),
    }
}

/// The groups of the folders one scan walks, each folder listed once (a scan asks about every
/// file, and listing the folder each time would cost the square of its size).
#[derive(Default)]
pub struct FolderGroups {
    folders: HashMap<PathBuf, HashMap<OsString, Vec<PathBuf>>>,
    /// Whether Live Photos are also paired by content identifier (the scan; see
    /// [`FolderGroups::for_scan`]).
    read_identifiers: bool,
    /// Pairs by content identifier that the last scan found, with the files' modification times.
    known: HashMap<PathBuf, (PathBuf, (i64, i64))>,
    /// Still → MOV, paired by content identifier.
    video_of_still: HashMap<PathBuf, PathBuf>,
    /// MOV → still, the same pairs.
    still_of_video: HashMap<PathBuf, PathBuf>,
}

impl FolderGroups {
    /// The groups of `paths` only (the results of a search): each folder is listed once, and
    /// only the names with one of their stems are kept, so a folder of 30,000 photos costs one
    /// listing, not 30,000 paths.
    pub fn of(paths: &[&Path]) -> Self {
        let mut wanted: HashMap<&Path, std::collections::HashSet<&OsStr>> = HashMap::new();
        for p in paths {
            if let (Some(dir), Some(stem)) = (p.parent(), p.file_stem()) {
                wanted.entry(dir).or_default().insert(stem);
            }
        }
        let mut folders = HashMap::new();
        for (dir, stems) in wanted {
            let mut groups: HashMap<OsString, Vec<PathBuf>> = HashMap::new();
            if let Ok(entries) = std::fs::read_dir(dir) {
                for entry in entries.filter_map(|e| e.ok()) {
                    let name = entry.file_name();
                    let name = Path::new(&name);
                    if let (Some(stem), Some(_)) = (name.file_stem(), name.extension())
                        && stems.contains(stem)
                    {
                        groups.entry(stem.to_os_string()).or_default().push(dir.join(name));
                    }
                }
            }
            folders.insert(dir.to_path_buf(), groups);
        }
        FolderGroups { folders, ..Default::default() }
    }

    /// The groups of the folders a scan walks, where a still and a MOV whose names differ also
    /// pair when both carry the same Apple content identifier
    /// ([`crate::photo::live_identifier`]). Only the stills and MOVs of a folder that no name
    /// pairs are read, the stills only when one of those MOVs has an identifier. `known` are the pairs by identifier of the last scan, still → (MOV,
    /// the modification times of both then, as [`modified_ns`] gives them): while both files
    /// keep those times they pair again without being read.
    pub fn for_scan(known: HashMap<PathBuf, (PathBuf, (i64, i64))>) -> Self {
        FolderGroups { read_identifiers: true, known, ..Default::default() }
    }

    /// The role of `path` within its folder.
    pub fn role(&mut self, path: &Path) -> Role {
        let (Some(dir), Some(stem)) = (path.parent(), path.file_stem()) else {
            return Role::Item(Companions::default());
        };
        if !self.folders.contains_key(dir) {
            let mut groups: HashMap<OsString, Vec<PathBuf>> = HashMap::new();
            if let Ok(entries) = std::fs::read_dir(dir) {
                for p in entries.filter_map(|e| e.ok()).map(|e| e.path()) {
                    if let (Some(s), Some(_)) = (p.file_stem(), p.extension()) {
                        groups.entry(s.to_os_string()).or_default().push(p);
                    }
                }
            }
            if self.read_identifiers {
                for (still, video) in pair_by_identifier(&groups, &self.known) {
                    self.still_of_video.insert(video.clone(), still.clone());
                    self.video_of_still.insert(still, video);
                }
            }
            self.folders.insert(dir.to_path_buf(), groups);
        }
        if let Some(still) = self.still_of_video.get(path) {
            return Role::Companion { still: still.clone(), live_video: true };
        }
        let by_name = self
            .folders
            .get(dir)
            .and_then(|folder| folder.get(stem))
            .filter(|g| g.len() > 1 && g.iter().any(|p| p == path))
            .and_then(|group| roles(group).into_iter().find(|(p, _)| p == path).map(|(_, r)| r));
        match (by_name, self.video_of_still.get(path)) {
            (Some(Role::Item(mut c)), Some(video)) => {
                c.live_video = Some(video.clone());
                Role::Item(c)
            }
            (None, Some(video)) => Role::Item(Companions { live_video: Some(video.clone()), ..Default::default() }),
            (Some(role), _) => role,
            (None, None) => Role::Item(Companions::default()),
        }
    }
}

/// Stills and MOVs of one folder's groups that no name pairs, paired by content identifier:
/// (still, MOV). A HEIC is preferred over a JPEG carrying the same identifier.
fn pair_by_identifier(
    groups: &HashMap<OsString, Vec<PathBuf>>,
    known: &HashMap<PathBuf, (PathBuf, (i64, i64))>,
) -> Vec<(PathBuf, PathBuf)> {
    let mut videos = Vec::new();
    let mut stills = Vec::new();
    for group in groups.values() {
        for (path, role) in roles(group) {
            let Role::Item(c) = role else { continue };
            if has_extension(&path, LIVE_VIDEOS) {
                videos.push(path);
            } else if c.live_video.is_none() && LIVE_STILLS.iter().any(|list| has_extension(&path, list)) {
                stills.push(path);
            }
        }
    }
    if videos.is_empty() || stills.is_empty() {
        return Vec::new();
    }
    // The last scan's pairs whose files have not changed since: no reading.
    let mut pairs = Vec::new();
    stills.retain(|still| {
        let Some((video, mtimes)) = known.get(still) else { return true };
        if let Some(at) = videos.iter().position(|v| v == video)
            && (modified_ns(still), modified_ns(video)) == (Some(mtimes.0), Some(mtimes.1))
        {
            pairs.push((still.clone(), videos.swap_remove(at)));
            return false;
        }
        true
    });
    if videos.is_empty() || stills.is_empty() {
        return pairs;
    }
    videos.sort();
    let mut by_identifier: HashMap<String, PathBuf> = HashMap::new();
    for video in videos {
        if let Some(id) = crate::photo::live_identifier::movie_identifier(&video) {
            by_identifier.entry(id).or_insert(video);
        }
    }
    if by_identifier.is_empty() {
        return pairs;
    }
    stills.sort_by_key(|p| (LIVE_STILLS.iter().position(|list| has_extension(p, list)), p.clone()));
    for still in stills {
        if let Some(video) =
            crate::photo::live_identifier::still_identifier(&still).and_then(|id| by_identifier.remove(&id))
        {
            pairs.push((still, video));
        }
        if by_identifier.is_empty() {
            break;
        }
    }
    pairs
}

/// A file's modification time in nanoseconds since the epoch, `None` when it cannot be read.
pub fn modified_ns(path: &Path) -> Option<i64> {
    let modified = std::fs::metadata(path).ok()?.modified().ok()?;
    Some(modified.duration_since(std::time::UNIX_EPOCH).ok()?.as_nanos() as i64)
}

/// Whether the first bytes of a file are those of a QuickTime / ISO media file (a box whose
/// type is one a MOV starts with).
pub fn looks_like_quicktime(head: &[u8]) -> bool {
    const FIRST_BOXES: &[&[u8; 4]] = &[b"ftyp", b"moov", b"mdat", b"wide", b"free", b"skip", b"pnot"];
    head.len() >= 8 && FIRST_BOXES.iter().any(|b| &head[4..8] == *b)
}

/// Why a Live Photo's video cannot be played, `None` when it looks fine: unreadable, or not a
/// QuickTime movie.
pub fn live_video_problem(video: &Path) -> Option<String> {
    use std::io::Read;
    let mut head = Vec::with_capacity(16);
    match super::open_regular_file(video).and_then(|f| f.take(16).read_to_end(&mut head)) {
        Err(e) => Some(format!("{LIVE_VIDEO_PROBLEM}: cannot read it: {e}")),
        Ok(_) if !looks_like_quicktime(&head) => Some(format!("{LIVE_VIDEO_PROBLEM}: not a QuickTime movie")),
        Ok(_) => None,
    }
}

/// How the recorded failure of a Live Photo's unusable video starts (its still is indexed).
pub const LIVE_VIDEO_PROBLEM: &str = "the video of a Live Photo (its still is indexed without it)";

#[cfg(test)]
mod tests {
    use super::*;

    #[cfg(unix)]
    #[test]
    fn a_fifo_named_like_a_mov_is_a_problem_not_a_wait() {
        let dir = tempfile::tempdir().unwrap();
        let fifo = dir.path().join("IMG_0001.MOV");
        let name = std::ffi::CString::new(fifo.as_os_str().as_encoded_bytes()).unwrap();
        assert_eq!(unsafe { libc::mkfifo(name.as_ptr(), 0o600) }, 0);
        let (sender, receiver) = std::sync::mpsc::channel();
        std::thread::spawn(move || sender.send(live_video_problem(&fifo)));
        let problem = receiver.recv_timeout(std::time::Duration::from_secs(20)).expect("no answer: it waited");
        assert!(problem.unwrap().contains("not a regular file"));
    }

    fn paths(names: &[&str]) -> Vec<PathBuf> {
        names.iter().map(|n| PathBuf::from(format!("/p/{n}"))).collect()
    }

    fn role<'a>(roles: &'a [(PathBuf, Role)], name: &str) -> &'a Role {
        &roles.iter().find(|(p, _)| p == Path::new(&format!("/p/{name}"))).unwrap().1
    }

    #[test]
    fn live_photos_and_raw_pairs_are_one_item_each() {
        let r = roles(&paths(&["IMG_1.HEIC", "IMG_1.mov"]));
        assert_eq!(
            role(&r, "IMG_1.HEIC"),
            &Role::Item(Companions { live_video: Some("/p/IMG_1.mov".into()), ..Default::default() })
        );
        assert_eq!(role(&r, "IMG_1.mov"), &Role::Companion { still: "/p/IMG_1.HEIC".into(), live_video: true });
        let r = roles(&paths(&["a.JPG", "a.CR3", "a.MOV", "a.heic"]));
        assert_eq!(
            role(&r, "a.JPG"),
            &Role::Item(Companions { raw_path: Some("/p/a.CR3".into()), ..Default::default() })
        );
        assert_eq!(
            role(&r, "a.heic"),
            &Role::Item(Companions { live_video: Some("/p/a.MOV".into()), ..Default::default() })
        );
        assert!(matches!(role(&r, "a.CR3"), Role::Companion { live_video: false, .. }));
        // Alone, a MOV is a video and a RAW a photo.
        let r = roles(&paths(&["b.mov", "b.dng", "b.png"]));
        assert!(r.iter().all(|(_, role)| *role == Role::Item(Companions::default())));
    }

    #[cfg(unix)]
    #[test]
    fn json_gives_companions_with_their_exact_bytes() {
        use std::os::unix::ffi::OsStrExt;
        let latin1 = PathBuf::from(OsStr::from_bytes(b"/p/caf\xe9.MOV"));
        let c = Companions {
            live_video: Some(latin1.clone()),
            raw_path: Some("/p/a.DNG".into()),
            motion_video: Some(MotionVideo { offset: 10, length: 20 }),
        };
        let v = serde_json::to_value(&c).unwrap();
        assert_eq!(v["live_video"], "/p/caf\u{fffd}.MOV");
        let bytes = v["live_video_bytes"].as_str().unwrap();
        assert_eq!(crate::path_text::from_json("", Some(bytes)).unwrap(), latin1);
        assert_eq!((v["raw_path"].as_str(), v.get("raw_path_bytes")), (Some("/p/a.DNG"), None));
        assert_eq!(v["motion_video"], serde_json::json!({"offset": 10, "length": 20}));
        assert_eq!(serde_json::to_value(Companions::default()).unwrap(), serde_json::json!({}));
    }

    #[test]
    fn quicktime_is_recognised_by_its_first_box() {
        assert!(looks_like_quicktime(b"\0\0\0\x14ftypqt  \0\0\0\0"));
        assert!(!looks_like_quicktime(b"not a movie at all"));
        assert!(!looks_like_quicktime(b"\0\0"));
    }
}
