//! Filters on what the store records of an image and its files, beyond folder, date, tag and
//! kind: more tags and folders, the camera, the file's extension, orientation, size and place. The
//! query language ([`crate::query::syntax`]) fills them; the folder store checks them here
//! ([`AttributeFilter::record_passes`], [`AttributeFilter::path_passes`]) and PostgreSQL as SQL
//! predicates (`store/postgres/search.rs`), with the same meaning.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use crate::store::{ImageId, ImageRecord};

/// Restrictions on an image's record and on the file a result shows. Every listed tag,
/// folder and camera must match; an extension must be one of those listed.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct AttributeFilter {
    /// Auto-tags the image must all carry (as typed; matched as stored).
    pub tags: Vec<String>,
    /// Folders the result's file must be in: an absolute path is a folder the file is at or
    /// under; a relative one (`Holidays`, `2024/June`) is a folder of that name anywhere in
    /// the file's path.
    pub folders: Vec<PathBuf>,
    /// Case-insensitive substrings of the camera's make and model (EXIF).
    pub cameras: Vec<String>,
    /// Case-insensitive substrings of the lens's make and model (EXIF `LensMake`, `LensModel`).
    pub lenses: Vec<String>,
    /// File extensions, lower case without the dot; the file must have one of them.
    pub extensions: Vec<String>,
    /// The upright picture's shape.
    pub orientation: Option<Orientation>,
    /// Bounds on the upright picture's width and height.
    pub dimensions: Vec<DimensionBound>,
    /// Named persons who must all be in the picture (names compared case-insensitively).
    pub persons: Vec<String>,
    /// Where the photo was taken (its GPS position): every one must hold. A photo without a
    /// position passes none.
    pub places: Vec<PlaceFilter>,
    /// Only these images (`None`: any): what a filter the library resolves to a set of images
    /// keeps (`text:`, the words read in photos; see `Library::images_with_text`).
    pub images: Option<BTreeSet<ImageId>>,
    /// Not these images (`-text:`).
    pub excluded: BTreeSet<ImageId>,
}

/// `place:NAME` or `near:LAT,LON,KM`.
#[derive(Debug, Clone, PartialEq)]
pub enum PlaceFilter {
    /// The photo's place ([`crate::places`]) is a city of this name, or in a region or country
    /// of this name (any language GeoNames holds; case and accents do not matter).
    Named(String),
    /// The photo was taken within `km` kilometres of a position (great-circle distance).
    Near { lat: f64, lon: f64, km: f64 },
}

impl PlaceFilter {
    /// Whether a photo taken at `gps` (latitude, longitude) passes.
    pub fn holds(&self, gps: Option<(f64, f64)>) -> bool {
        let Some((lat, lon)) = gps else { return false };
        match self {
            PlaceFilter::Near { lat: at, lon: on, km } => crate::places::distance_km(lat, lon, *at, *on) <= *km,
            PlaceFilter::Named(name) => {
                let Ok(places) = crate::places::gazetteer() else { return false };
                let wanted = places.resolve(name);
                places.nearest_city(lat, lon).is_some_and(|city| places.city_in(city, &wanted))
            }
        }
    }
}

/// A picture's shape.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Orientation {
    /// Taller than wide.
    Portrait,
    /// Wider than tall.
    Landscape,
    /// As wide as tall.
    Square,
}

/// Width or height.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dimension {
    Width,
    Height,
}

/// How a dimension compares with a number.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Comparison {
    Less,
    AtMost,
    Equal,
    AtLeast,
    Greater,
}

impl Comparison {
    /// The SQL operator.
    pub fn sql(self) -> &'static str {
        match self {
            Comparison::Less => "<",
            Comparison::AtMost => "<=",
            Comparison::Equal => "=",
            Comparison::AtLeast => ">=",
            Comparison::Greater => ">",
        }
    }

    fn holds(self, a: u32, b: u32) -> bool {
        match self {
            Comparison::Less => a < b,
            Comparison::AtMost => a <= b,
            Comparison::Equal => a == b,
            Comparison::AtLeast => a >= b,
            Comparison::Greater => a > b,
        }
    }
}

/// `width>3000` and the like.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DimensionBound {
    pub dimension: Dimension,
    pub comparison: Comparison,
    pub pixels: u32,
}

/// A bound no image meets (narrower than 0 pixels): what two contradicting filters leave.
const NOTHING: DimensionBound = DimensionBound { dimension: Dimension::Width, comparison: Comparison::Less, pixels: 0 };

impl AttributeFilter {
    /// Whether the filter lets every image through.
    pub fn is_empty(&self) -> bool {
        self.tags.is_empty()
            && self.folders.is_empty()
            && self.cameras.is_empty()
            && self.lenses.is_empty()
            && self.extensions.is_empty()
            && self.orientation.is_none()
            && self.dimensions.is_empty()
            && self.persons.is_empty()
            && self.places.is_empty()
            && self.images.is_none()
            && self.excluded.is_empty()
    }

    /// Whether image `id` passes the sets of images kept and excluded.
    pub fn id_passes(&self, id: ImageId) -> bool {
        self.images.as_ref().is_none_or(|keep| keep.contains(&id)) && !self.excluded.contains(&id)
    }

    /// Whether the record's filters (camera, shape, size) are all needed: `false` when none is set.
    pub fn reads_record(&self) -> bool {
        !self.cameras.is_empty()
            || !self.lenses.is_empty()
            || self.orientation.is_some()
            || !self.dimensions.is_empty()
            || !self.places.is_empty()
    }

    /// Adds `other`'s restrictions (both must hold; two orientations that differ pass nothing).
    pub fn merge(&mut self, other: AttributeFilter) {
        self.tags.extend(other.tags);
        self.folders.extend(other.folders);
        self.cameras.extend(other.cameras);
        self.lenses.extend(other.lenses);
        if !other.extensions.is_empty() {
            if self.extensions.is_empty() {
                self.extensions = other.extensions;
            } else {
                // Both lists must hold: what they have in common (nothing: an impossible size).
                self.extensions.retain(|e| other.extensions.contains(e));
                if self.extensions.is_empty() {
                    self.dimensions.push(NOTHING);
                }
            }
        }
        match (self.orientation, other.orientation) {
            (Some(a), Some(b)) if a != b => {
                // Nothing is both: an impossible size keeps the meaning.
                self.dimensions.push(NOTHING);
            }
            (None, b) => self.orientation = b,
            _ => {}
        }
        self.dimensions.extend(other.dimensions);
        for person in other.persons {
            if !self.persons.iter().any(|p| p.to_lowercase() == person.to_lowercase()) {
                self.persons.push(person);
            }
        }
        self.places.extend(other.places);
        self.images = match (self.images.take(), other.images) {
            (Some(a), Some(b)) => Some(a.intersection(&b).copied().collect()),
            (a, b) => a.or(b),
        };
        self.excluded.extend(other.excluded);
    }

    /// Whether an image's record passes the camera, lens, orientation, size and place filters.
    pub fn record_passes(&self, record: &ImageRecord) -> bool {
        let all_in = |wanted: &[String], recorded: Option<&str>| {
            wanted.is_empty()
                || recorded.map(str::to_lowercase).is_some_and(|r| wanted.iter().all(|w| r.contains(&w.to_lowercase())))
        };
        if !all_in(&self.cameras, record.camera.as_deref()) || !all_in(&self.lenses, record.lens.as_deref()) {
            return false;
        }
        let (w, h) = (record.width, record.height);
        let shape = match self.orientation {
            None => true,
            Some(Orientation::Portrait) => h > w,
            Some(Orientation::Landscape) => w > h,
            Some(Orientation::Square) => w == h,
        };
        shape
            && self.dimensions.iter().all(|b| {
                let value = if b.dimension == Dimension::Width { w } else { h };
                b.comparison.holds(value, b.pixels)
            })
            && self.places.iter().all(|p| p.holds(record.gps))
    }

    /// Whether a file passes the folder and extension filters.
    pub fn path_passes(&self, path: &Path) -> bool {
        if !self.extensions.is_empty() {
            let ext = path.extension().map(|e| e.to_string_lossy().to_ascii_lowercase());
            if !ext.is_some_and(|e| self.extensions.contains(&e)) {
                return false;
            }
        }
        self.folders.iter().all(|folder| {
            if folder.is_absolute() {
                path.starts_with(folder)
            } else {
                contains_bytes(path_bytes(path), &folder_needle(folder))
            }
        })
    }
}

/// `/NAME/` for a relative folder `NAME` (slashes at its ends trimmed): the bytes a path holds
/// when the folder is one of its directories.
pub fn folder_needle(folder: &Path) -> Vec<u8> {
    let bytes = path_bytes(folder);
    let trimmed: &[u8] = {
        let mut b = bytes;
        while let [rest @ .., b'/'] = b {
            b = rest;
        }
        while let [b'/', rest @ ..] = b {
            b = rest;
        }
        b
    };
    let mut needle = Vec::with_capacity(trimmed.len() + 2);
    needle.push(b'/');
    needle.extend_from_slice(trimmed);
    needle.push(b'/');
    needle
}

#[cfg(unix)]
fn path_bytes(path: &Path) -> &[u8] {
    use std::os::unix::ffi::OsStrExt;
    path.as_os_str().as_bytes()
}

#[cfg(not(unix))]
fn path_bytes(path: &Path) -> &[u8] {
    path.to_str().map(str::as_bytes).unwrap_or_default()
}

fn contains_bytes(haystack: &[u8], needle: &[u8]) -> bool {
    needle.is_empty() || haystack.windows(needle.len()).any(|w| w == needle)
}

/// SQL `LIKE` pattern text with `%`, `_` and `\` taken literally.
pub fn like_escaped(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if matches!(c, '%' | '_' | '\\') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(width: u32, height: u32, camera: Option<&str>) -> ImageRecord {
        ImageRecord {
            hash: String::new(),
            size: 0,
            width,
            height,
            modified: 0,
            taken: None,
            camera: camera.map(str::to_string),
            gps: None,
            lens: None,
            video: None,
            motion_video: None,
            motion_video_problem: None,
        }
    }

    #[test]
    fn merged_filters_must_both_hold() {
        let mut a = AttributeFilter { extensions: vec!["jpg".into(), "png".into()], ..Default::default() };
        a.merge(AttributeFilter { extensions: vec!["png".into()], ..Default::default() });
        assert_eq!(a.extensions, ["png"]);
        assert!(a.path_passes(Path::new("/x/a.PNG")) && !a.path_passes(Path::new("/x/a.jpg")));
        a.merge(AttributeFilter { extensions: vec!["heic".into()], ..Default::default() });
        assert!(!a.record_passes(&record(10, 10, None)), "no extension is both");
        let mut b = AttributeFilter { orientation: Some(Orientation::Portrait), ..Default::default() };
        assert!(b.record_passes(&record(10, 20, None)));
        b.merge(AttributeFilter { orientation: Some(Orientation::Landscape), ..Default::default() });
        assert!(!b.record_passes(&record(10, 20, None)) && !b.record_passes(&record(20, 10, None)));
    }

    #[test]
    fn folders_cameras_and_sizes() {
        let f = AttributeFilter {
            folders: vec![PathBuf::from("Holidays/"), PathBuf::from("/photos")],
            cameras: vec!["FUJI".into()],
            dimensions: vec![DimensionBound {
                dimension: Dimension::Height,
                comparison: Comparison::AtLeast,
                pixels: 20,
            }],
            ..Default::default()
        };
        assert!(f.path_passes(Path::new("/photos/2024/Holidays/a.jpg")));
        assert!(!f.path_passes(Path::new("/photos/2024/Holidays.jpg")), "a file, not a folder");
        assert!(!f.path_passes(Path::new("/photos/MyHolidays/a.jpg")), "a whole folder name");
        assert!(!f.path_passes(Path::new("/other/Holidays/a.jpg")));
        assert!(f.record_passes(&record(10, 20, Some("Fujifilm X-T3"))));
        assert!(!f.record_passes(&record(10, 19, Some("Fujifilm X-T3"))));
        assert!(!f.record_passes(&record(10, 20, None)));
        assert_eq!(folder_needle(Path::new("/a/b/")), b"/a/b/");
        assert_eq!(like_escaped("50%_\\"), "50\\%\\_\\\\");
    }
}
