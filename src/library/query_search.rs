//! Searching with the query language: a query string (see [`crate::query::syntax`]) turned
//! into a query vector and a filter, searched, cut at a relevance and ordered. The CLI, the
//! API and the web UI all come through [`Library::search_query`], so one string gives the
//! same results everywhere.

use std::collections::HashMap;
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use serde::Serialize;

use super::Library;
use crate::error::{Error, Result};
use crate::query::relevance::{self, Calibration, SortOrder};
use crate::query::syntax::{self, ParsedQuery, TermSource};
use crate::query::{SearchFilter, SearchHit};

/// The setting the calibration is kept in.
const CALIBRATION_SETTING: &str = "relevance_calibration";

/// How deep a search ranks when results are ordered by something else than the score: the
/// order applies to the best this many results above the cut-off.
pub const SORT_POOL: usize = 1000;

/// How long a process trusts its copy of the calibration before reading the store again.
const CALIBRATION_TTL: Duration = Duration::from_secs(60);

/// How a query is searched, beyond the query string.
#[derive(Debug, Clone, Default)]
pub struct QueryOptions {
    /// Results wanted (best first, or the first in `sort`'s order).
    pub k: usize,
    /// Keep only results of at least this relevance (0–100).
    pub min_relevance: Option<f32>,
    /// The order of the results that pass.
    pub sort: SortOrder,
    /// Whether image terms may name files (`./pool.jpg`): the CLI's user's own files, yes; a
    /// request to the server, no (it names indexed photos `#ID`, or uploads one).
    pub allow_paths: bool,
}

/// One result of a query: the hit and its relevance (0–100). In JSON the hit's fields and
/// `"relevance"`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RankedHit {
    #[serde(flatten)]
    pub hit: SearchHit,
    /// 0–100, calibrated for the model on this library ([`crate::query::relevance`]); for a
    /// tag-only query, the tag's probability × 100.
    pub relevance: f32,
    /// Where the photo was taken (null without GPS).
    pub place: Option<crate::places::Place>,
}

/// Relevance of a cosine score: calibrated, or 0 without a calibration (an empty library).
pub fn relevance_of(calibration: Option<&Calibration>, score: f32) -> f32 {
    calibration.map_or(0.0, |c| c.relevance(score))
}

/// The calibrations this process has read or measured, by library and model.
fn calibrations() -> &'static Mutex<HashMap<String, (Instant, Calibration)>> {
    static CACHE: OnceLock<Mutex<HashMap<String, (Instant, Calibration)>>> = OnceLock::new();
    CACHE.get_or_init(Default::default)
}

impl Library {
    /// Parses `query` and searches it: see [`Library::search_parsed`].
    pub fn search_query(&self, query: &str, filter: &SearchFilter, options: &QueryOptions) -> Result<Vec<RankedHit>> {
        let parsed = syntax::parse(query)?;
        self.search_parsed(&parsed, None, filter, options)
    }

    /// Searches a parsed query: `filter` narrowed by the query's filters; ranked by the query
    /// vector ([`Library::query_vector`], with `upload` as one more image term of weight 1),
    /// or, when the query has no term and names a tag, by the tag's probability, or with
    /// filters alone, every image that passes them, newest first ([`Library::list_filtered`],
    /// relevance 100); cut at
    /// `options.min_relevance`; ordered by `options.sort`.
    pub fn search_parsed(
        &self,
        query: &ParsedQuery,
        upload: Option<&[u8]>,
        filter: &SearchFilter,
        options: &QueryOptions,
    ) -> Result<Vec<RankedHit>> {
        self.search_parsed_with(query, upload, filter, options, &|t| self.embed_text(t))
    }

    /// [`Library::search_parsed`] with texts embedded by `embed_text` (the server's cache).
    pub fn search_parsed_with(
        &self,
        query: &ParsedQuery,
        upload: Option<&[u8]>,
        filter: &SearchFilter,
        options: &QueryOptions,
        embed_text: &dyn Fn(&str) -> Result<Vec<f32>>,
    ) -> Result<Vec<RankedHit>> {
        let filter = self.narrow_query(query, filter)?;
        for name in &filter.attributes.persons {
            self.find_named(name)?;
        }
        let depth = if options.sort == SortOrder::Score { options.k } else { options.k.max(SORT_POOL) };
        let mut ranked: Vec<RankedHit> = if query.has_terms() || upload.is_some() {
            let vector = self.query_vector(query, upload, options.allow_paths, embed_text)?;
            let hits = self.search_vector(&vector, depth, &filter)?;
            let calibration = self.calibration()?;
            hits.into_iter()
                .map(|hit| RankedHit { relevance: relevance_of(calibration.as_ref(), hit.score), hit, place: None })
                .collect()
        } else if filter.tag.is_some() {
            let hits = self.search_tag(depth, &filter)?;
            hits.into_iter()
                .map(|hit| RankedHit { relevance: (hit.score * 100.0).clamp(0.0, 100.0), hit, place: None })
                .collect()
        } else if !filter.attributes.persons.is_empty() {
            // Persons (and maybe other filters): their photos, newest first.
            let mut hits = Vec::new();
            for id in self.images_with_persons(&filter.attributes.persons)? {
                if hits.len() == depth {
                    break;
                }
                if let Some(path) = crate::query::passing_path(self.store(), id, &filter)? {
                    let media = crate::query::Media::of_image(self.store(), id)?;
                    let hit = SearchHit { id, path, score: 1.0, media, companions: Default::default() };
                    hits.push(RankedHit { hit, relevance: 100.0, place: None });
                }
            }
            hits
        } else if !filter.is_empty() || !query.filters.texts.is_empty() || !query.filters.not_texts.is_empty() {
            // Filters alone: every photo that passes them, newest first. A `-text:` that
            // matched no photo leaves nothing out, and is a filter all the same.
            self.list_filtered(depth, &filter)?
                .into_iter()
                .map(|hit| RankedHit { relevance: 100.0, hit, place: None })
                .collect()
        } else {
            return Err(Error::Invalid(
                "the query has nothing to look for: add words, an image (#ID or a path) or a filter (tag:dog, \
                 person:Anna, place:Lisbon, after:2024, ...)"
                    .into(),
            ));
        };
        if let Some(min) = options.min_relevance {
            ranked.retain(|r| r.relevance >= min);
        }
        if options.sort != SortOrder::Score {
            let mut hits: Vec<SearchHit> = ranked.iter().map(|r| r.hit.clone()).collect();
            relevance::sort_hits(self.store(), &mut hits, options.sort)?;
            let by_id: HashMap<_, f32> = ranked.iter().map(|r| (r.hit.id, r.relevance)).collect();
            ranked = hits.into_iter().map(|hit| RankedHit { relevance: by_id[&hit.id], hit, place: None }).collect();
        }
        ranked.truncate(options.k);
        for r in &mut ranked {
            r.place = self.store().image(r.hit.id)?.and_then(|record| record.place());
        }
        Ok(ranked)
    }

    /// The first `k` images, newest first ([`crate::store::ImageRecord::date`], then id), that
    /// pass `filter`: what a query of filters alone lists. Each has score 1 (it matches all
    /// there is to match).
    pub fn list_filtered(&self, k: usize, filter: &SearchFilter) -> Result<Vec<SearchHit>> {
        let filter = self.resolve_tag(filter)?;
        let mut dated: Vec<(i64, crate::store::ImageId)> = Vec::new();
        for entry in self.store().images() {
            let (id, record) = entry?;
            let kind_passes = match filter.kind {
                crate::query::Kind::All => true,
                crate::query::Kind::Photo => !record.is_video(),
                crate::query::Kind::Video => record.is_video(),
            };
            let date = record.date();
            if kind_passes
                && filter.after.is_none_or(|a| date >= a)
                && filter.before.is_none_or(|b| date < b)
                && (!filter.attributes.reads_record() || filter.attributes.record_passes(&record))
            {
                dated.push((date, id));
            }
        }
        dated.sort_unstable_by(|a, b| b.cmp(a));
        let mut hits = Vec::with_capacity(k.min(dated.len()));
        for (_, id) in dated {
            if hits.len() == k {
                break;
            }
            if let Some(path) = crate::query::passing_path(self.store(), id, &filter)? {
                let media = crate::query::Media::of_image(self.store(), id)?;
                hits.push(SearchHit { id, path, score: 1.0, media, companions: Default::default() });
            }
        }
        self.attach_companions(&mut hits)?;
        Ok(hits)
    }

    /// The query vector of a parsed query's terms (and an uploaded image, weight 1): each
    /// term's embedding normalised, times its signed weight, summed, the sum normalised
    /// ([`syntax::combine`]). Texts are embedded by `embed_text` (the server passes its
    /// cache); `#ID` is the stored vector; a path is embedded from its pixels (a video in the
    /// library by its stored vector), only when `allow_paths`.
    pub fn query_vector(
        &self,
        query: &ParsedQuery,
        upload: Option<&[u8]>,
        allow_paths: bool,
        embed_text: &dyn Fn(&str) -> Result<Vec<f32>>,
    ) -> Result<Vec<f32>> {
        let mut terms = Vec::with_capacity(query.terms.len() + 1);
        for term in &query.terms {
            let vector = match &term.source {
                TermSource::Text(text) => embed_text(text)?,
                TermSource::Image(id) => self.stored_vector(*id)?,
                TermSource::Path(path) if !allow_paths => {
                    return Err(Error::Invalid(format!(
                        "query, column {}: {}: a search through the server names photos by #ID (or uploads one), \
                         not by a path",
                        term.column,
                        path.display()
                    )));
                }
                TermSource::Path(path) => self.path_vector(path).map_err(|e| match e {
                    Error::NotFound(m) => Error::NotFound(format!("query, column {}: {m}", term.column)),
                    other => other,
                })?,
            };
            terms.push((term.weight, vector));
        }
        if let Some(bytes) = upload {
            terms.push((1.0, self.embed_image_bytes(bytes)?));
        }
        syntax::combine(&terms)
    }

    /// The embedding of an image file named in a query: its pixels, or a video's stored vector.
    fn path_vector(&self, path: &std::path::Path) -> Result<Vec<f32>> {
        if crate::indexer::videos::is_video_file(path) {
            return self.stored_vector(self.resolve_image(path)?);
        }
        if !path.is_file() {
            return Err(Error::NotFound(format!("{}: no such image file", path.display())));
        }
        let clip = self.clip()?;
        let options = crate::photo::DecodeOptions { max_pixels: self.config.max_pixels, min_side: None };
        let image = crate::photo::open_rgb(path, &options)?;
        Ok(clip.embed_images(&[image])?.remove(0))
    }

    /// The relevance calibration of this library's model ([`crate::query::relevance`]),
    /// measured on first use and again when the library has doubled or halved since; `None`
    /// for a library without vectors.
    pub fn calibration(&self) -> Result<Option<Calibration>> {
        let model = self.model();
        let key = format!("{}\u{0}{model}", self.store().location());
        if let Some((at, c)) = calibrations().lock().unwrap_or_else(|p| p.into_inner()).get(&key)
            && at.elapsed() < CALIBRATION_TTL
        {
            return Ok(Some(c.clone()));
        }
        // Ids start above 0: every vector, counted by key (cheaper than all the counts).
        let vectors = self.store().vectors_after(0)?;
        if vectors == 0 {
            return Ok(None);
        }
        let stored: Option<Calibration> = self.store().setting(CALIBRATION_SETTING).unwrap_or(None);
        let calibration = match stored.filter(|c| !c.is_stale(&model, vectors)) {
            Some(c) => c,
            None => {
                let Some(c) = self.measure_calibration(vectors)? else { return Ok(None) };
                // Another process may calibrate at the same time: both measure the same.
                self.store().set_setting(CALIBRATION_SETTING, &c)?;
                c
            }
        };
        calibrations().lock().unwrap_or_else(|p| p.into_inner()).insert(key, (Instant::now(), calibration.clone()));
        Ok(Some(calibration))
    }

    /// Scores the calibration texts against the first [`relevance::CALIBRATION_VECTORS`]
    /// stored vectors.
    fn measure_calibration(&self, vectors: u64) -> Result<Option<Calibration>> {
        let texts = relevance::calibration_texts();
        let embedded = self.clip()?.embed_texts(&texts)?;
        let mut sample = Vec::with_capacity(relevance::CALIBRATION_VECTORS);
        for entry in self.store().vectors().take(relevance::CALIBRATION_VECTORS) {
            sample.push(entry?.1);
        }
        let cosine = |a: &[f32], b: &[f32]| {
            let (mut dot, mut na, mut nb) = (0f32, 0f32, 0f32);
            for (x, y) in a.iter().zip(b) {
                dot += x * y;
                na += x * x;
                nb += y * y;
            }
            dot / (na.sqrt() * nb.sqrt())
        };
        let scores: Vec<f32> =
            embedded.iter().flat_map(|t| sample.iter().filter(|v| v.len() == t.len()).map(|v| cosine(t, v))).collect();
        Ok(Calibration::from_scores(&self.model(), vectors, scores))
    }
}
