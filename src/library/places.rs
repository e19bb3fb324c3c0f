//! The library's places: how many photos were taken in each (`clipdex places`, the UI's place
//! filter). A photo's place is its GPS position reverse-geocoded ([`crate::places`]).

use std::collections::HashMap;

use serde::Serialize;

use super::Library;
use crate::error::Result;

/// A place and how many photos were taken there.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PlaceCount {
    /// The nearest city of 1,000+ inhabitants.
    pub city: String,
    /// Its region, when GeoNames names one.
    pub region: Option<String>,
    /// Its country.
    pub country: String,
    /// Photos (distinct images) taken there.
    pub count: u64,
}

/// Every place of the library with its count, most photos first, and how many photos have a
/// GPS position at all.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct PlaceCounts {
    pub places: Vec<PlaceCount>,
    /// Images with a GPS position.
    pub located: u64,
    /// Images with a position but no city within reach (at sea, a bogus 0,0).
    pub unplaced: u64,
}

impl Library {
    /// How many photos were taken in each place. The place data is read only when a photo
    /// has a position.
    pub fn place_counts(&self) -> Result<PlaceCounts> {
        let mut by_city: HashMap<u32, u64> = HashMap::new();
        let mut counts = PlaceCounts::default();
        for entry in self.store().images() {
            let (_, record) = entry?;
            let Some((lat, lon)) = record.gps else { continue };
            counts.located += 1;
            match crate::places::gazetteer()?.nearest_city(lat, lon) {
                Some(city) => *by_city.entry(city).or_default() += 1,
                None => counts.unplaced += 1,
            }
        }
        if by_city.is_empty() {
            return Ok(counts);
        }
        let places = crate::places::gazetteer()?;
        let mut merged: HashMap<(&str, Option<&str>, &str), u64> = HashMap::new();
        for (city, n) in by_city {
            if let Some(names) = places.names_of(city) {
                *merged.entry(names).or_default() += n;
            }
        }
        counts.places = merged
            .into_iter()
            .map(|((city, region, country), count)| PlaceCount {
                city: city.to_string(),
                region: region.map(str::to_string),
                country: country.to_string(),
                count,
            })
            .collect();
        counts.places.sort_by(|a, b| {
            b.count.cmp(&a.count).then_with(|| (&a.country, &a.region, &a.city).cmp(&(&b.country, &b.region, &b.city)))
        });
        Ok(counts)
    }
}
