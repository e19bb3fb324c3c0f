//! The records the store keeps, whatever the backend.

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
    /// The file's modification time, seconds since the epoch (the date filters fall back to it
    /// when the photo has no EXIF date): the time of the file it was first indexed from, moved
    /// when a later pass finds that file touched with its content unchanged
    /// (`Backend::relink_dated`).
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
    /// EXIF lens make and model (`LensMake LensModel`), when the camera records them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lens: Option<String>,
    /// What a video is (none for a photo). Its vector is the mean of its frames' vectors; the
    /// frames' own vectors are kept beside it ([`FrameVector`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub video: Option<VideoMeta>,
    /// Where a Motion Photo's embedded MP4 lies in the file (none for other photos).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub motion_video: Option<crate::photo::motion::MotionVideo>,
    /// Why a photo that claims to be a Motion Photo has no motion video (its XMP places the
    /// video outside the file, or what is there is no MP4); the still is indexed all the same.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub motion_video_problem: Option<String>,
}

/// What the store knows of a video beyond what a photo has.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct VideoMeta {
    /// Seconds.
    pub duration: f64,
    /// The video stream's codec, as FFmpeg names it (`h264`, `hevc`, …).
    pub codec: String,
    /// Seconds from the start of the frame that stands for the whole video: the one nearest to
    /// the mean of the frames (its thumbnail, and the moment shown when nothing more precise
    /// is asked, as for a tag).
    pub poster: f64,
}

/// A sampled frame of a video as stored: seconds from the start, and its vector.
#[derive(Debug, Clone, PartialEq)]
pub struct FrameVector {
    pub time: f32,
    pub vector: Vec<f32>,
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

impl ImageRecord {
    /// [`ImageRecord::modified`] for a file modified at `mtime_ns` (nanoseconds since the epoch).
    pub fn modified_at(mtime_ns: i64) -> i64 {
        mtime_ns.div_euclid(1_000_000_000)
    }

    /// The date used by date filters: EXIF date taken (a video's creation time), else the
    /// file's modification time.
    pub fn date(&self) -> i64 {
        self.taken.unwrap_or(self.modified)
    }

    /// Whether this is a video.
    pub fn is_video(&self) -> bool {
        self.video.is_some()
    }

    /// The GeoNames id of the city it was taken in, as PostgreSQL keeps it (`images.place`):
    /// `None` without a position, 0 for a position far from any city.
    pub fn place_code(&self) -> Option<i64> {
        let (lat, lon) = self.gps?;
        let places = crate::places::gazetteer().ok()?;
        Some(places.nearest_city(lat, lon).and_then(|i| places.geonameid(i)).map_or(0, i64::from))
    }

    /// Where it was taken: its GPS position reverse-geocoded ([`crate::places`]); `None`
    /// without a position, or far from any city.
    pub fn place(&self) -> Option<crate::places::Place> {
        let (lat, lon) = self.gps?;
        crate::places::gazetteer().ok()?.place_at(lat, lon)
    }
}

/// A tag kept on an image.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Tag {
    /// The vocabulary label.
    pub label: String,
    /// Its zero-shot probability over the vocabulary.
    pub probability: f32,
    /// Cosine between the image and the label's prompt embedding.
    pub cosine: f32,
}

/// How many images carry a label.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TagCount {
    /// The label.
    pub label: String,
    /// Images tagged with it.
    pub count: u64,
}

/// A stored caption.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredCaption {
    /// The caption.
    pub text: String,
    /// What made it (model, prompt, beams, token limit), as `caption --library` compares it.
    pub settings: String,
}

impl StoredCaption {
    /// A caption as every backend stores it: without NUL characters, which PostgreSQL's `text`
    /// cannot hold (a random or broken model can decode one; nothing readable is lost), and
    /// with settings written by an older clipdex (fields separated by NUL) in today's form.
    pub fn new(text: &str, settings: &str) -> Self {
        StoredCaption { text: text.replace('\0', ""), settings: settings_as_stored(settings) }
    }
}

/// Caption settings in today's form: fields written by an older clipdex, separated by NUL,
/// read as separated by [`SETTINGS_SEPARATOR`] (so old and new settings compare equal).
pub fn settings_as_stored(settings: &str) -> String {
    settings.replace('\0', SETTINGS_SEPARATOR)
}

/// What separates the fields of a caption's settings (NUL before PostgreSQL could hold them).
pub const SETTINGS_SEPARATOR: &str = "\u{1f}";

/// The model a re-indexing is moving to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReindexTarget {
    /// The new model's name (hub id or directory).
    pub model: String,
    /// Its vectors' width.
    pub dim: usize,
}

/// Counts of what the store holds.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct StoreCounts {
    /// Distinct images (contents).
    pub images: u64,
    /// Files holding them.
    pub paths: u64,
    /// Stored vectors (equal to `images` in a consistent store).
    pub vectors: u64,
    /// Files that could not be indexed.
    pub failures: u64,
    /// Watched folders.
    pub roots: u64,
    /// Images auto-tagged (with or without confident tags).
    pub tagged: u64,
    /// Tags kept, over all images.
    pub tags: u64,
    /// Label embeddings cached (per model and prompt set).
    pub cached_labels: u64,
    /// Images with a stored caption.
    pub captioned: u64,
    /// Videos (among `images`).
    pub videos: u64,
    /// Video frames with a vector (of the current model).
    pub frames: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stored_captions_hold_no_nul_and_older_settings_read_as_todays() {
        let c = StoredCaption::new("a\0cat", "m\0p\0beams=3\0max=20");
        assert_eq!(c.text, "acat");
        assert_eq!(c.settings, format!("m{0}p{0}beams=3{0}max=20", SETTINGS_SEPARATOR));
        assert_eq!(StoredCaption::new(&c.text, &c.settings), c, "normalising twice changes nothing");
    }
}
