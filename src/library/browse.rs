//! Browsing without a query: the timeline (the library newest first, paged with an opaque
//! cursor, grouped by month) and the folders (the watched folders and their subfolders, with
//! how many photos each holds). The web UI's home page and its Folders tab read these through
//! `/api/timeline` and `/api/folders`.
//!
//! The timeline's order is [`ImageRecord::date`] (EXIF date taken, else the file's time),
//! newest first, ties by id (newest first): a total order, so a cursor — the `(date, id)` key
//! of the last item shown — names exactly where the next page starts, however the library
//! changes in between (an image added behind the cursor is simply not shown on later pages).

use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};

use serde::Serialize;

use super::Library;
use crate::error::{Error, Result};
use crate::store::{ImageId, ImageRecord, UNDATED_MONTH, month_of};

/// Where a timeline page starts: after an item (the cursor of the previous page), or at the
/// newest item of a month (the date scrubber).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TimelineCursor {
    date: i64,
    id: ImageId,
}

impl TimelineCursor {
    /// The cursor that starts a page at the newest item of `month` (`YYYY-MM`): items dated
    /// before the month's end.
    pub fn month_start(month: &str) -> Result<Self> {
        let invalid = || Error::Invalid(format!("month {month:?}: give it as YYYY-MM, e.g. 2024-05"));
        if month == UNDATED_MONTH {
            return Ok(TimelineCursor { date: crate::store::FIRST_DATE, id: 0 });
        }
        let (year_text, mon_text) = month.split_once('-').ok_or_else(invalid)?;
        if !is_digits(year_text) || !is_digits(mon_text) {
            return Err(invalid());
        }
        let (year, mon): (i32, u32) =
            (year_text.parse().map_err(|_| invalid())?, mon_text.parse().map_err(|_| invalid())?);
        let (next_year, next_mon) = if mon == 12 { (year + 1, 1) } else { (year, mon + 1) };
        if !(1..=12).contains(&mon) || !(0..=9999).contains(&year) || year_text.len() != 4 || mon_text.len() != 2 {
            return Err(invalid());
        }
        let end = chrono::NaiveDate::from_ymd_opt(next_year, next_mon, 1).ok_or_else(invalid)?;
        let end = end.and_hms_opt(0, 0, 0).ok_or_else(invalid)?.and_utc().timestamp();
        // Id 0 comes before every stored id: the page starts with the month's last second.
        Ok(TimelineCursor { date: end, id: 0 })
    }

    fn key(self) -> (i64, ImageId) {
        (self.date, self.id)
    }
}

impl std::fmt::Display for TimelineCursor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}_{}", self.date, self.id)
    }
}

impl std::str::FromStr for TimelineCursor {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        let invalid =
            || Error::Invalid(format!("cursor {s:?} is not one a timeline page gave: start from the first page"));
        let (date, id) = s.split_once('_').ok_or_else(invalid)?;
        // Exactly what Display writes: no sign but a date's minus, no spaces.
        if !is_digits(date.strip_prefix('-').unwrap_or(date)) || !is_digits(id) {
            return Err(invalid());
        }
        Ok(TimelineCursor { date: date.parse().map_err(|_| invalid())?, id: id.parse().map_err(|_| invalid())? })
    }
}

fn is_digits(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit())
}

/// One photo or video of the timeline: what a grid needs to lay it out and label it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TimelineItem {
    pub id: ImageId,
    /// A file holding it (within the folder, when the timeline is of a folder).
    #[serde(flatten, serialize_with = "crate::path_text::path_field")]
    pub path: PathBuf,
    /// EXIF date taken, else the file's time (seconds since the epoch, camera time as UTC).
    pub date: i64,
    /// `YYYY-MM` of `date` (`0000-00` for dates outside years 1 to 9999).
    pub month: String,
    /// Upright pixels.
    pub width: u32,
    pub height: u32,
    /// `photo` or `video`.
    pub kind: &'static str,
    /// A video's length in seconds.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub duration: Option<f64>,
    /// The stored caption, when there is one (the UI's alt text).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub caption: Option<String>,
}

/// A page of the timeline, and the cursor of the next one (none after the oldest item).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TimelinePage {
    pub items: Vec<TimelineItem>,
    pub next: Option<String>,
}

/// How many items a month holds (the date scrubber).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct MonthCount {
    pub month: String,
    pub count: u64,
}

/// A folder as the Folders view lists it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FolderEntry {
    #[serde(flatten, serialize_with = "crate::path_text::path_field")]
    pub path: PathBuf,
    /// What to show: a root's whole path, a subfolder's own name.
    pub name: String,
    /// Distinct photos and videos at or under it.
    pub photos: u64,
    /// Whether it has subfolders holding indexed files.
    pub subfolders: bool,
}

/// The roots (no folder asked) or one folder's subfolders.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FolderListing {
    /// The folder listed; null for the list of roots.
    pub path: Option<String>,
    /// Distinct photos and videos directly in the folder (0 for the list of roots).
    pub photos: u64,
    pub folders: Vec<FolderEntry>,
}

impl Library {
    /// A page of at most `limit` items newest first, after `cursor` (from the newest when
    /// none); with `folder`, only images with a file at or under it.
    pub fn timeline(
        &self,
        cursor: Option<TimelineCursor>,
        limit: usize,
        folder: Option<&Path>,
    ) -> Result<TimelinePage> {
        let store = self.store();
        let folder = folder.map(normalised);
        let folder = folder.as_deref();
        let before = cursor.map(TimelineCursor::key);
        // One more than asked tells whether there is a next page.
        let records = match folder {
            None => store.timeline(before, limit + 1)?,
            Some(folder) => store.timeline_under(folder, before, limit + 1)?,
        };
        let more = records.len() > limit;
        let mut items = Vec::with_capacity(limit.min(records.len()));
        for (id, record) in records.into_iter().take(limit) {
            let paths = store.paths_of(id)?;
            let path = folder.and_then(|f| paths.iter().find(|p| p.starts_with(f))).or(paths.first()).cloned();
            // An image without a file is a broken invariant (`check` reports it); skip it.
            let Some(path) = path else { continue };
            let caption = store.caption_of(id)?.map(|c| c.text).filter(|t| !t.trim().is_empty());
            items.push(item_of(id, &record, path, caption));
        }
        let next =
            if more { items.last().map(|i| TimelineCursor { date: i.date, id: i.id }.to_string()) } else { None };
        Ok(TimelinePage { items, next })
    }

    /// How many items each month holds, newest first; with `folder`, of the images with a
    /// file at or under it.
    pub fn timeline_months(&self, folder: Option<&Path>) -> Result<Vec<MonthCount>> {
        let counts = match folder {
            None => self.store().month_counts()?,
            Some(folder) => self.store().month_counts_under(&normalised(folder))?,
        };
        Ok(counts.into_iter().map(|(month, count)| MonthCount { month, count }).collect())
    }

    /// The roots with their photo counts (`None`), or the subfolders of `folder` (a root or a
    /// folder under one) with theirs.
    pub fn folders(&self, folder: Option<&Path>) -> Result<FolderListing> {
        let store = self.store();
        let Some(folder) = folder.map(normalised) else {
            let mut folders = Vec::new();
            for root in store.roots()? {
                let files = store.paths_under(&root)?;
                let ids: HashSet<ImageId> = files.iter().map(|(_, e)| e.id).collect();
                let subfolders =
                    files.iter().any(|(p, _)| p.strip_prefix(&root).is_ok_and(|r| r.components().count() > 1));
                let name = crate::path_text::display(&root);
                folders.push(FolderEntry { path: root, name, photos: ids.len() as u64, subfolders });
            }
            return Ok(FolderListing { path: None, photos: 0, folders });
        };
        let folder = folder.as_path();
        if !store.roots()?.iter().any(|r| folder.starts_with(r)) {
            return Err(Error::NotFound(format!(
                "{} is not in a library folder: list them with GET /api/folders (no path)",
                crate::path_text::display(folder)
            )));
        }
        let mut here = HashSet::new();
        // Subfolder name → (its images, whether it has subfolders of its own).
        let mut below: BTreeMap<std::ffi::OsString, (HashSet<ImageId>, bool)> = BTreeMap::new();
        for (path, entry) in store.paths_under(folder)? {
            let Ok(relative) = path.strip_prefix(folder) else { continue };
            let mut parts = relative.components();
            let (Some(first), depth) = (parts.next(), relative.components().count()) else { continue };
            if depth == 1 {
                here.insert(entry.id);
            } else {
                let sub = below.entry(first.as_os_str().to_owned()).or_default();
                sub.0.insert(entry.id);
                sub.1 |= depth > 2;
            }
        }
        let folders = below
            .into_iter()
            .map(|(name, (ids, subfolders))| FolderEntry {
                path: folder.join(&name),
                name: name.to_string_lossy().into_owned(),
                photos: ids.len() as u64,
                subfolders,
            })
            .collect();
        Ok(FolderListing { path: Some(crate::path_text::display(folder)), photos: here.len() as u64, folders })
    }
}

/// A folder as stored paths spell it: no `.` components, no trailing slash (stores look
/// folders up by their bytes).
fn normalised(folder: &Path) -> PathBuf {
    folder.components().collect()
}

fn item_of(id: ImageId, record: &ImageRecord, path: PathBuf, caption: Option<String>) -> TimelineItem {
    TimelineItem {
        id,
        path,
        date: record.date(),
        month: month_of(record.date()),
        width: record.width,
        height: record.height,
        kind: if record.is_video() { "video" } else { "photo" },
        duration: record.video.as_ref().map(|v| v.duration),
        caption,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursors_round_trip_and_refuse_what_no_page_gave() {
        let c = TimelineCursor { date: -5, id: 42 };
        assert_eq!(c.to_string().parse::<TimelineCursor>().unwrap(), c);
        for bad in ["", "12", "a_b", "1_-2", "1_2_3", "+1_2", "1_+2", " 1_2", "--1_2"] {
            assert!(matches!(bad.parse::<TimelineCursor>(), Err(Error::Invalid(_))), "{bad:?}");
        }
    }

    #[test]
    fn a_month_starts_before_the_next_month() {
        let may = TimelineCursor::month_start("2024-05").unwrap();
        assert_eq!(may.date, 1_717_200_000, "2024-06-01T00:00:00Z");
        assert_eq!(month_of(may.date - 1), "2024-05");
        let dec = TimelineCursor::month_start("2023-12").unwrap();
        assert_eq!(month_of(dec.date), "2024-01");
        assert!(TimelineCursor::month_start("0000-01").is_ok(), "year 0 is a year");
        for bad in ["2024", "2024-13", "2024-00", "x-01", "10000-01", "+2024-01", "2024-+1", "24-05", "2024-5"] {
            assert!(TimelineCursor::month_start(bad).is_err(), "{bad:?}");
        }
    }
}
