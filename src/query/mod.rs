//! Answering searches: rank the library against a query vector, then walk the ranking keeping
//! what passes the filters until `k` results are found, so a filter never returns fewer than
//! `k` results when `k` exist. Videos are ranked by their frames: a video comes once, at its
//! best frame, scored by that frame's cosine ([`search_videos`]). Query strings are parsed by
//! [`syntax`] into terms and filters; [`attributes`] holds the filters beyond folder, date,
//! tag and kind, and [`relevance`] the calibrated 0–100 relevance and the result orders.

pub mod attributes;
pub mod autotag;
pub mod captions;
pub mod duplicates;
pub mod relevance;
pub mod rerank;
pub mod syntax;
pub mod tags;

use std::path::PathBuf;

use serde::Serialize;

use crate::ann::{AnnIndex, FrameIndex};
use crate::error::Result;
use crate::store::{ImageId, Store};

/// Restrictions on results.
#[derive(Debug, Clone, Default)]
pub struct SearchFilter {
    /// Only images with a file at or under this folder.
    pub under: Option<PathBuf>,
    /// Only images dated at or after this (seconds since the epoch; EXIF date, else mtime).
    pub after: Option<i64>,
    /// Only images dated before this.
    pub before: Option<i64>,
    /// Only images auto-tagged with this label.
    pub tag: Option<String>,
    /// Only photos, only videos, or both.
    pub kind: Kind,
    /// More tags and folders, camera, extension, orientation and size (the query language's
    /// filters).
    pub attributes: attributes::AttributeFilter,
}

/// What a search returns (`--kind`, API `kind=`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    /// Photos and videos.
    #[default]
    All,
    Photo,
    Video,
}

impl std::str::FromStr for Kind {
    type Err = crate::Error;

    fn from_str(s: &str) -> Result<Self> {
        match s {
            "all" => Ok(Kind::All),
            "photo" => Ok(Kind::Photo),
            "video" => Ok(Kind::Video),
            _ => Err(crate::Error::Invalid(format!("kind {s:?}: say photo, video or all"))),
        }
    }
}

impl SearchFilter {
    /// Whether the filter lets every image through.
    pub fn is_empty(&self) -> bool {
        self.under.is_none()
            && self.after.is_none()
            && self.before.is_none()
            && self.tag.is_none()
            && self.kind == Kind::All
            && self.attributes.is_empty()
    }
}

/// What a result is: a photo, or a video at a moment.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum Media {
    Photo,
    Video {
        /// Seconds from the start of the frame the score is of (for a result that is not
        /// ranked by frames, as a tag's, the video's poster frame).
        time: f64,
        /// The video's length, seconds.
        duration: f64,
    },
}

impl Media {
    /// A stored image's kind, a video at its poster frame.
    pub fn of(record: &crate::store::ImageRecord) -> Self {
        match &record.video {
            Some(v) => Media::Video { time: v.poster, duration: v.duration },
            None => Media::Photo,
        }
    }

    /// The kind of stored image `id`, a video at its poster frame (a photo when it is gone).
    pub fn of_image(store: &Store, id: ImageId) -> Result<Self> {
        Ok(store.image(id)?.as_ref().map(Media::of).unwrap_or(Media::Photo))
    }
}

/// One result.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SearchHit {
    /// The image's id.
    pub id: ImageId,
    /// A file holding it (under the filter's folder, when there is one). In JSON: `path`, and
    /// `path_bytes` when it is not UTF-8 (see [`crate::path_text`]).
    #[serde(flatten, serialize_with = "crate::path_text::path_field")]
    pub path: PathBuf,
    /// Cosine similarity to the query.
    pub score: f32,
    /// Photo or video; in JSON `"kind"` (`"photo"`, `"video"`), and for a video `"time"` and
    /// `"duration"` (seconds).
    #[serde(flatten)]
    pub media: Media,
}

impl SearchHit {
    /// A photo's result.
    pub fn photo(id: ImageId, path: PathBuf, score: f32) -> Self {
        SearchHit { id, path, score, media: Media::Photo }
    }
}

/// The `k` best images for `query` that pass `filter`.
pub fn search(
    store: &Store,
    index: &AnnIndex,
    query: &[f32],
    k: usize,
    filter: &SearchFilter,
) -> Result<Vec<SearchHit>> {
    let mut hits = Vec::with_capacity(k);
    if k == 0 {
        return Ok(hits);
    }
    // Rank only as deep as needed: k without filters; with filters a few times k first, then
    // the whole library if that was not enough.
    let mut depth = if filter.is_empty() { k } else { (k * 4).max(256) };
    loop {
        hits.clear();
        let ranked = index.top(query, depth);
        for &(id, score) in &ranked {
            let Some(path) = passing_path(store, id, filter)? else { continue };
            hits.push(SearchHit::photo(id, path, score));
            if hits.len() == k {
                return Ok(hits);
            }
        }
        if ranked.len() < depth || depth >= index.len() {
            return Ok(hits);
        }
        depth = index.len();
    }
}

/// The `k` best videos for `query` that pass `filter`, each once at its best frame.
pub fn search_videos(
    store: &Store,
    frames: &FrameIndex,
    query: &[f32],
    k: usize,
    filter: &SearchFilter,
) -> Result<Vec<SearchHit>> {
    let mut hits = Vec::with_capacity(k);
    if k == 0 || filter.kind == Kind::Photo {
        return Ok(hits);
    }
    let ranked = frames.top_videos(query);
    for (id, score, time) in ranked {
        let Some(path) = passing_path(store, id, filter)? else { continue };
        let duration = store.image(id)?.and_then(|r| r.video).map_or(0.0, |v| v.duration);
        hits.push(SearchHit { id, path, score, media: Media::Video { time: f64::from(time), duration } });
        if hits.len() == k {
            break;
        }
    }
    Ok(hits)
}

/// The `k` most probable images carrying `filter.tag` that pass the other filters; the score
/// is the tag's probability.
pub fn search_tagged(store: &Store, k: usize, filter: &SearchFilter) -> Result<Vec<SearchHit>> {
    let Some(tag) = &filter.tag else { return Err(crate::Error::Invalid("no tag to search for".into())) };
    let mut hits = Vec::with_capacity(k);
    for (id, probability) in store.images_tagged(tag)? {
        if hits.len() == k {
            break;
        }
        if let Some(path) = passing_path(store, id, filter)? {
            hits.push(SearchHit { id, path, score: probability, media: Media::of_image(store, id)? });
        }
    }
    Ok(hits)
}

/// The first file of image `id` that passes `filter`, or `None` (also when the image is gone).
pub(crate) fn passing_path(store: &Store, id: ImageId, filter: &SearchFilter) -> Result<Option<PathBuf>> {
    let paths = store.paths_of(id)?;
    if filter.is_empty() {
        return Ok(paths.into_iter().next());
    }
    if filter.kind != Kind::All {
        let Some(record) = store.image(id)? else { return Ok(None) };
        if record.is_video() != (filter.kind == Kind::Video) {
            return Ok(None);
        }
    }
    if let Some(tag) = &filter.tag
        && !store.has_tag(id, tag)?
    {
        return Ok(None);
    }
    if filter.after.is_some() || filter.before.is_some() {
        let Some(record) = store.image(id)? else { return Ok(None) };
        let date = record.date();
        if filter.after.is_some_and(|a| date < a) || filter.before.is_some_and(|b| date >= b) {
            return Ok(None);
        }
    }
    let more = &filter.attributes;
    for tag in &more.tags {
        if !store.has_tag(id, tag)? {
            return Ok(None);
        }
    }
    if more.reads_record() {
        let Some(record) = store.image(id)? else { return Ok(None) };
        if !more.record_passes(&record) {
            return Ok(None);
        }
    }
    Ok(paths
        .into_iter()
        .find(|p| filter.under.as_ref().is_none_or(|prefix| p.starts_with(prefix)) && more.path_passes(p)))
}

/// Parses a date given on the command line: `YYYY`, `YYYY-MM`, `YYYY-MM-DD` or RFC 3339;
/// the start of that period, in seconds since the epoch (UTC).
pub fn parse_date(s: &str) -> Result<i64> {
    use chrono::NaiveDate;
    let s = s.trim();
    let date = match s.len() {
        4 => s.parse::<i32>().ok().and_then(|y| NaiveDate::from_ymd_opt(y, 1, 1)),
        7 => NaiveDate::parse_from_str(&format!("{s}-01"), "%Y-%m-%d").ok(),
        10 => NaiveDate::parse_from_str(s, "%Y-%m-%d").ok(),
        _ => None,
    };
    if let Some(d) = date {
        return Ok(d.and_hms_opt(0, 0, 0).expect("midnight exists").and_utc().timestamp());
    }
    chrono::DateTime::parse_from_rfc3339(s).map(|d| d.timestamp()).map_err(|_| {
        crate::Error::Invalid(format!("bad date {s:?}: use YYYY, YYYY-MM, YYYY-MM-DD or 2024-05-01T12:00:00Z"))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_dates_at_the_start_of_the_period() {
        assert_eq!(parse_date("2024").unwrap(), 1_704_067_200);
        assert_eq!(parse_date("2024-02").unwrap(), 1_706_745_600);
        assert_eq!(parse_date("2024-02-29").unwrap(), 1_709_164_800);
        assert_eq!(parse_date("2024-02-29T01:00:00Z").unwrap(), 1_709_168_400);
        assert!(parse_date("yesterday").is_err());
        assert!(parse_date("2023-02-30").is_err());
    }
}
