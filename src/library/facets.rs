//! Faceted counts: for what a query matched, how many photos per year, place, camera and tag
//! (`/api/search?facets=…`, `clipdex search --facets …`), so an interface can show them beside
//! the results and offer each as a filter.
//!
//! What a query matched is what [`Library::search_parsed_with`] returns with the same query,
//! filters and cut-off, ranked by score, up to [`FACET_POOL`] results: the photos that pass
//! the filters (and `min_score`, when given), the best first.

use std::collections::{BTreeMap, HashMap};

use serde::Serialize;

use super::{Library, QueryOptions, RankedHit};
use crate::error::{Error, Result};
use crate::query::SearchFilter;
use crate::query::relevance::SortOrder;
use crate::query::syntax::ParsedQuery;

/// The most results facets count over.
pub const FACET_POOL: usize = super::SORT_POOL;

/// The most values one facet lists (the most frequent).
pub const MAX_FACET_VALUES: usize = 50;

/// What can be counted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Facet {
    /// The year of the date searches filter by (EXIF date taken, else file time; UTC).
    Year,
    /// The place ([`crate::places`]): city, with its region and country.
    Place,
    /// The EXIF camera (make and model).
    Camera,
    /// Auto-tags.
    Tag,
}

impl Facet {
    /// Its name in requests and in JSON.
    pub fn name(self) -> &'static str {
        match self {
            Facet::Year => "year",
            Facet::Place => "place",
            Facet::Camera => "camera",
            Facet::Tag => "tag",
        }
    }

    /// A comma-separated list of facets (`year,place,camera,tag`), each once.
    pub fn parse_list(list: &str) -> Result<Vec<Facet>> {
        let mut out = Vec::new();
        for name in list.split(',').map(str::trim).filter(|n| !n.is_empty()) {
            let facet = match name.to_lowercase().as_str() {
                "year" => Facet::Year,
                "place" => Facet::Place,
                "camera" => Facet::Camera,
                "tag" => Facet::Tag,
                _ => {
                    return Err(Error::Invalid(format!(
                        "facets: {name:?} is not a facet; say year, place, camera or tag (comma-separated)"
                    )));
                }
            };
            if !out.contains(&facet) {
                out.push(facet);
            }
        }
        if out.is_empty() {
            return Err(Error::Invalid("facets: name at least one of year, place, camera, tag".into()));
        }
        Ok(out)
    }
}

/// One value of a facet and how many matched photos have it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct FacetValue {
    /// The year (`"2024"`), the city, the camera or the tag.
    pub value: String,
    /// A place's region (places only; null when GeoNames names none).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub region: Option<Option<String>>,
    /// A place's country (places only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub country: Option<String>,
    /// Matched photos with this value.
    pub count: u64,
}

/// Counts per facet asked for, by facet name: in JSON
/// `{"year": [{"value": "2024", "count": 3}], "place": [{"value", "region", "country", "count"}], …}`,
/// each list most frequent first (ties by value), at most [`MAX_FACET_VALUES`] long.
pub type Facets = BTreeMap<&'static str, Vec<FacetValue>>;

/// A facet value as counted: the value, and for a place its region and country.
type FacetKey = (String, Option<Option<String>>, Option<String>);

impl Library {
    /// The facets of what a query matches (see the module doc): the query searched again with
    /// `FACET_POOL` results by score, the same filters and cut-off.
    pub fn search_facets(
        &self,
        query: &ParsedQuery,
        filter: &SearchFilter,
        min_relevance: Option<f32>,
        allow_paths: bool,
        facets: &[Facet],
        embed_text: &dyn Fn(&str) -> Result<Vec<f32>>,
    ) -> Result<Facets> {
        let options = QueryOptions { k: FACET_POOL, min_relevance, sort: SortOrder::Score, allow_paths };
        let matched = self.search_parsed_with(query, None, filter, &options, embed_text)?;
        self.facets_of(&matched, facets)
    }

    /// Counts per facet over `hits` (each image once).
    pub fn facets_of(&self, hits: &[RankedHit], facets: &[Facet]) -> Result<Facets> {
        let mut counts: Vec<HashMap<FacetKey, u64>> = vec![HashMap::new(); facets.len()];
        let mut seen = std::collections::HashSet::new();
        for hit in hits {
            if !seen.insert(hit.hit.id) {
                continue;
            }
            let Some(record) = self.store().image(hit.hit.id)? else { continue };
            for (facet, counts) in facets.iter().zip(counts.iter_mut()) {
                let mut add = |key| *counts.entry(key).or_default() += 1;
                match facet {
                    Facet::Year => {
                        if let Some(t) = chrono::DateTime::from_timestamp(record.date(), 0) {
                            add((t.format("%Y").to_string(), None, None));
                        }
                    }
                    Facet::Place => {
                        let place = match &hit.place {
                            Some(p) => Some(p.clone()),
                            None => record.place(),
                        };
                        if let Some(p) = place {
                            add((p.city, Some(p.region), Some(p.country)));
                        }
                    }
                    Facet::Camera => {
                        if let Some(c) = &record.camera {
                            add((c.clone(), None, None));
                        }
                    }
                    Facet::Tag => {
                        if let Some((_, tags)) = self.store().tags_of(hit.hit.id)? {
                            for t in tags {
                                add((t.label, None, None));
                            }
                        }
                    }
                }
            }
        }
        Ok(facets
            .iter()
            .zip(counts)
            .map(|(facet, counts)| {
                let mut values: Vec<FacetValue> = counts
                    .into_iter()
                    .map(|((value, region, country), count)| FacetValue { value, region, country, count })
                    .collect();
                values.sort_by(|a, b| {
                    b.count
                        .cmp(&a.count)
                        .then_with(|| a.value.cmp(&b.value))
                        .then_with(|| a.country.cmp(&b.country))
                        .then_with(|| a.region.cmp(&b.region))
                });
                values.truncate(MAX_FACET_VALUES);
                (facet.name(), values)
            })
            .collect())
    }
}
