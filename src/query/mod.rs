//! Answering searches: rank the library against a query vector, then walk the ranking keeping
//! what passes the filters until `k` results are found, so a filter never returns fewer than
//! `k` results when `k` exist. Videos are ranked by their frames: a video comes once, at its
//! best frame, scored by that frame's cosine ([`search_videos`]). Query strings are parsed by
//! [`syntax`] into terms and filters; [`crate::store::attributes`] holds the filters beyond
//! folder, date, tag and kind, and [`relevance`] the calibrated 0–100 relevance and the result
//! orders.

pub use crate::store::attributes;
pub mod autotag;
pub mod captions;
pub mod duplicates;
pub mod fulltext;
pub mod people;
pub mod relevance;
pub mod rerank;
pub mod syntax;
pub mod tags;
pub mod text_index;

use std::path::PathBuf;

use crate::ann::{AnnIndex, FrameIndex};
use crate::error::Result;
use crate::photo::companions::Companions;
pub use crate::store::search_types::{Kind, Media, SearchFilter, SearchHit};
use crate::store::{ImageId, Store};

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
    // Rank only as deep as needed: k without filters; with filters a few times k first (more
    // when the index scans every vector anyway: the scan, not the depth, is the cost, and the
    // candidates are checked only until k pass), then eight times deeper each time that was
    // not enough. (Going from 256 straight to the whole library, sorting all of it, made a
    // filtered query over 100,000 photos cost four times the plain one whenever the first
    // candidates held just too few that passed.) What a pass found of each candidate is kept
    // for the next.
    let mut depth = match (filter.is_empty(), index.scans()) {
        (true, _) => k,
        (false, true) => (k * 4).max(4096),
        (false, false) => (k * 4).max(256),
    };
    let mut verdicts: std::collections::HashMap<ImageId, Option<PathBuf>> = std::collections::HashMap::new();
    loop {
        hits.clear();
        let ranked = index.top(query, depth);
        for &(id, score) in &ranked {
            let path = match verdicts.get(&id) {
                Some(verdict) => verdict.clone(),
                None => {
                    let verdict = passing_path(store, id, filter)?;
                    verdicts.insert(id, verdict.clone());
                    verdict
                }
            };
            let Some(path) = path else { continue };
            hits.push(SearchHit::photo(id, path, score));
            if hits.len() == k {
                return Ok(hits);
            }
        }
        if ranked.len() < depth || depth >= index.len() {
            return Ok(hits);
        }
        depth = depth.saturating_mul(8).min(index.len());
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
        let media = Media::Video { time: f64::from(time), duration };
        hits.push(SearchHit { id, path, score, media, companions: Companions::default() });
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
            let media = Media::of_image(store, id)?;
            hits.push(SearchHit { id, path, score: probability, media, companions: Companions::default() });
        }
    }
    Ok(hits)
}

/// The first file of image `id` that passes `filter`, or `None` (also when the image is gone).
pub(crate) fn passing_path(store: &Store, id: ImageId, filter: &SearchFilter) -> Result<Option<PathBuf>> {
    if filter.is_empty() {
        return Ok(store.paths_of(id)?.into_iter().next());
    }
    let more = &filter.attributes;
    if !more.id_passes(id) {
        return Ok(None);
    }
    // The record is read (and parsed) once, for every filter on it, before the paths: most
    // candidates of a filtered search fail here.
    let dated = filter.after.is_some() || filter.before.is_some();
    if filter.kind != Kind::All || dated || more.reads_record() {
        let Some(record) = store.image(id)? else { return Ok(None) };
        if filter.kind != Kind::All && record.is_video() != (filter.kind == Kind::Video) {
            return Ok(None);
        }
        let date = record.date();
        if filter.after.is_some_and(|a| date < a) || filter.before.is_some_and(|b| date >= b) {
            return Ok(None);
        }
        if more.reads_record() && !more.record_passes(&record) {
            return Ok(None);
        }
    }
    if let Some(tag) = &filter.tag
        && !store.has_tag(id, tag)?
    {
        return Ok(None);
    }
    for tag in &more.tags {
        if !store.has_tag(id, tag)? {
            return Ok(None);
        }
    }
    for person in &more.persons {
        if !store.image_has_person(id, person)? {
            return Ok(None);
        }
    }
    Ok(store
        .paths_of(id)?
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
