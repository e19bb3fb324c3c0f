//! Searching in PostgreSQL: pgvector ranks the current generation's vectors by cosine
//! distance, with the folder, date and tag filters as SQL predicates, so that every machine
//! sharing the library searches the same index and a filtered search never ranks more than it
//! must.
//!
//! Below `min_vectors` (the library's graph threshold, 20,000 by default) a search is an exact
//! scan. From there on each generation has an HNSW index (cosine, `m = 16`,
//! `ef_construction = 64`, pgvector's defaults), built without blocking writers (`CREATE INDEX
//! CONCURRENTLY`). The column has no fixed width (the model decides it), so the index is on
//! the expression `embedding::vector(dim)` and partial to its generation; searches use the
//! same expression. Filtered searches run pgvector's iterative index scans (`relaxed_order`,
//! re-sorted here), and when those stop short of `k` (a very selective filter) the search is
//! repeated exactly, so it returns `k` whenever `k` images pass.

use postgres::Transaction;

use super::{PgStore, TxError, TxResult, id_of, path_from_key, path_key, u64_of};
use crate::error::Result;
use crate::store::attributes::{AttributeFilter, Dimension, Orientation, PlaceFilter, folder_needle, like_escaped};
use crate::store::search_types::{IndexState, Kind, SearchFilter, SearchHit};

/// `hnsw.ef_search` at least: pgvector's default of 40 misses too often at k = 20.
const EF_SEARCH: usize = 100;

/// The beam width of a search for `k`: `CLIPDEX_PG_EF_SEARCH` when set (a tuning knob: higher
/// is slower and finds more of the true neighbours), else `max(100, k)`, at most 1000.
fn ef_search(k: usize) -> usize {
    let set = std::env::var("CLIPDEX_PG_EF_SEARCH").ok().and_then(|v| v.parse::<usize>().ok()).filter(|&e| e > 0);
    set.unwrap_or(EF_SEARCH).max(k).min(1000)
}

/// The name of the HNSW index of generation `g` at width `dim`.
fn index_name(generation: u32, dim: usize) -> String {
    format!("vectors_hnsw_g{generation}_d{dim}")
}

/// A search's SQL: predicates and parameters after the query vector (`$1`).
struct Predicates {
    sql: String,
    params: Vec<Box<dyn postgres::types::ToSql + Sync>>,
    /// The condition that picks the result's file among the image's paths (`p.path`).
    path_condition: String,
}

impl Predicates {
    fn new(filter: &SearchFilter) -> Self {
        let mut p = Predicates { sql: String::new(), params: Vec::new(), path_condition: "TRUE".into() };
        if let Some(after) = filter.after {
            let n = p.push(Box::new(after));
            p.sql += &format!(" AND (SELECT date FROM images i WHERE i.id = v.image_id) >= ${n}");
        }
        if let Some(before) = filter.before {
            let n = p.push(Box::new(before));
            p.sql += &format!(" AND (SELECT date FROM images i WHERE i.id = v.image_id) < ${n}");
        }
        if filter.kind != Kind::All {
            let video = filter.kind == Kind::Video;
            p.sql += &format!(" AND (SELECT video FROM images i WHERE i.id = v.image_id) = {video}");
        }
        if let Some(tag) = &filter.tag {
            let n = p.push(Box::new(tag.clone()));
            p.sql +=
                &format!(" AND EXISTS (SELECT 1 FROM tag_index t WHERE t.image_id = v.image_id AND t.label = ${n})");
        }
        if let Some(under) = &filter.under {
            // At or under the folder, component-wise as `Path::starts_with`: the folder itself,
            // or a path that continues it after a separator ('0' follows '/' in bytes).
            let mut folder = path_key(under);
            while folder.len() > 1 && folder.ends_with(b"/") {
                folder.pop();
            }
            let base = if folder == b"/" { Vec::new() } else { folder.clone() };
            let (mut low, mut high) = (base.clone(), base);
            low.push(b'/');
            high.push(b'0');
            let (a, b, c) = (p.push(Box::new(folder)), p.push(Box::new(low)), p.push(Box::new(high)));
            p.path_condition = format!("(p.path = ${a} OR (p.path >= ${b} AND p.path < ${c}))");
            p.sql +=
                &format!(" AND EXISTS (SELECT 1 FROM paths p WHERE p.image_id = v.image_id AND {})", p.path_condition);
        }
        p.attributes(&filter.attributes);
        p
    }

    /// The query language's filters ([`AttributeFilter`]), with the meaning
    /// [`AttributeFilter::record_passes`] and [`AttributeFilter::path_passes`] give them.
    fn attributes(&mut self, more: &AttributeFilter) {
        for tag in &more.tags {
            let n = self.push(Box::new(tag.clone()));
            self.sql +=
                &format!(" AND EXISTS (SELECT 1 FROM tag_index t WHERE t.image_id = v.image_id AND t.label = ${n})");
        }
        for person in &more.persons {
            let n = self.push(Box::new(person.to_lowercase()));
            self.sql += &format!(
                " AND EXISTS (SELECT 1 FROM faces f JOIN persons pe ON pe.id = f.person_id
                              WHERE f.image_id = v.image_id AND lower(pe.name) = ${n})"
            );
        }
        // Sets of images the library resolved (`text:`): the database's text search found them.
        if let Some(keep) = &more.images {
            let ids: Vec<i64> = keep.iter().map(|&id| id as i64).collect();
            let n = self.push(Box::new(ids));
            self.sql += &format!(" AND v.image_id = ANY(${n})");
        }
        if !more.excluded.is_empty() {
            let ids: Vec<i64> = more.excluded.iter().map(|&id| id as i64).collect();
            let n = self.push(Box::new(ids));
            self.sql += &format!(" AND NOT (v.image_id = ANY(${n}))");
        }
        // Records are JSON text; the camera and size filters read it only for rows the other
        // predicates leave.
        let record = "(SELECT i.record::jsonb FROM images i WHERE i.id = v.image_id)";
        for camera in &more.cameras {
            let n = self.push(Box::new(format!("%{}%", like_escaped(&camera.to_lowercase()))));
            self.sql += &format!(" AND lower({record} ->> 'camera') LIKE ${n}");
        }
        for lens in &more.lenses {
            let n = self.push(Box::new(format!("%{}%", like_escaped(&lens.to_lowercase()))));
            self.sql += &format!(" AND lower({record} ->> 'lens') LIKE ${n}");
        }
        let (w, h) = (format!("({record} ->> 'width')::bigint"), format!("({record} ->> 'height')::bigint"));
        match more.orientation {
            Some(Orientation::Portrait) => self.sql += &format!(" AND {h} > {w}"),
            Some(Orientation::Landscape) => self.sql += &format!(" AND {w} > {h}"),
            Some(Orientation::Square) => self.sql += &format!(" AND {w} = {h}"),
            None => {}
        }
        for bound in &more.dimensions {
            let side = if bound.dimension == Dimension::Width { &w } else { &h };
            let n = self.push(Box::new(i64::from(bound.pixels)));
            self.sql += &format!(" AND {side} {} ${n}", bound.comparison.sql());
        }
        for place in &more.places {
            // `place:` as the stored place (`images.place`, the nearest city's GeoNames id)
            // among the cities the name stands for; `near:` as the haversine distance from the
            // record's GPS position ([lat, lon]). An image without GPS compares NULL: it
            // passes neither.
            if let PlaceFilter::Named(name) = place {
                let ids: Vec<i64> = match crate::places::gazetteer() {
                    Ok(places) => places.geonameids(&places.resolve(name)),
                    Err(_) => Vec::new(),
                };
                let n = self.push(Box::new(ids));
                self.sql += &format!(" AND (SELECT place FROM images i WHERE i.id = v.image_id) = ANY(${n})");
            }
            if let PlaceFilter::Near { lat, lon, km } = *place {
                let (a, b, c, r) = (
                    self.push(Box::new(lat)),
                    self.push(Box::new(lon)),
                    self.push(Box::new(km)),
                    crate::places::EARTH_RADIUS_KM,
                );
                let (plat, plon) =
                    (format!("(({record} -> 'gps') ->> 0)::float8"), format!("(({record} -> 'gps') ->> 1)::float8"));
                self.sql += &format!(
                    " AND 2 * {r} * asin(least(1, sqrt(power(sin(radians({plat} - ${a}) / 2), 2) \
                     + cos(radians(${a})) * cos(radians({plat})) * power(sin(radians({plon} - ${b}) / 2), 2)))) <= ${c}"
                );
            }
        }
        let mut path = Vec::new();
        if !more.extensions.is_empty() {
            // `encode(…, 'escape')` spells bytes over 127 as \ooo, so an ASCII extension at
            // the end of the text is the file's.
            let patterns: Vec<String> = more.extensions.iter().map(|e| format!("%.{e}")).collect();
            let n = self.push(Box::new(patterns));
            path.push(format!("lower(encode(p.path, 'escape')) LIKE ANY(${n})"));
        }
        for folder in &more.folders {
            if folder.is_absolute() {
                let mut key = path_key(folder);
                while key.len() > 1 && key.ends_with(b"/") {
                    key.pop();
                }
                let base = if key == b"/" { Vec::new() } else { key.clone() };
                let (mut low, mut high) = (base.clone(), base);
                low.push(b'/');
                high.push(b'0');
                let (a, b, c) = (self.push(Box::new(key)), self.push(Box::new(low)), self.push(Box::new(high)));
                path.push(format!("(p.path = ${a} OR (p.path >= ${b} AND p.path < ${c}))"));
            } else {
                let n = self.push(Box::new(folder_needle(folder)));
                path.push(format!("position(${n} in p.path) > 0"));
            }
        }
        if !path.is_empty() {
            let condition = path.join(" AND ");
            self.path_condition = format!("({} AND {condition})", self.path_condition);
            self.sql += &format!(
                " AND EXISTS (SELECT 1 FROM paths p WHERE p.image_id = v.image_id AND {})",
                self.path_condition
            );
        }
    }

    /// Adds a parameter; returns its number (`$2` onwards).
    fn push(&mut self, value: Box<dyn postgres::types::ToSql + Sync>) -> usize {
        self.params.push(value);
        self.params.len() + 1
    }
}

/// The current generation and width, and whether the current generation has a valid index.
fn current(tx: &mut Transaction) -> TxResult<Option<(u32, usize)>> {
    let rows = tx.query("SELECT key, value FROM meta WHERE key IN ('vectors_generation', 'dim')", &[])?;
    let get = |key: &str| rows.iter().find(|r| r.get::<_, String>(0) == key).map(|r| r.get::<_, String>(1));
    let generation = get("vectors_generation").and_then(|g| g.parse().ok()).unwrap_or(0);
    Ok(get("dim").and_then(|d| d.parse().ok()).map(|dim| (generation, dim)))
}

/// Whether the index `name` exists, and whether it is valid (a failed concurrent build leaves
/// an invalid one behind).
fn index_validity(
    tx: &mut impl postgres::GenericClient,
    name: &str,
) -> std::result::Result<Option<bool>, postgres::Error> {
    let row = tx.query_opt(
        "SELECT x.indisvalid FROM pg_index x JOIN pg_class c ON c.oid = x.indexrelid WHERE c.relname = $1",
        &[&name],
    )?;
    Ok(row.map(|r| r.get(0)))
}

impl PgStore {
    /// See [`crate::store::Backend::nearest`].
    pub(super) fn nearest_vectors(&self, query: &[f32], k: usize, filter: &SearchFilter) -> Result<Vec<SearchHit>> {
        if k == 0 {
            return Ok(Vec::new());
        }
        let query = query.to_vec();
        let predicates = Predicates::new(filter);
        // A read needs no serializable transaction: the current generation, width and whether
        // its index is built in one round trip, then the ranking in one more.
        let mut conn = self.conn()?;
        let fail = |e: postgres::Error| self.err(super::db_message(&e));
        let state = conn
            .query_one(
                "WITH m AS (SELECT (SELECT value FROM meta WHERE key = 'vectors_generation') AS g,
                                   (SELECT value FROM meta WHERE key = 'dim') AS d)
                 SELECT m.g, m.d, (SELECT x.indisvalid FROM pg_index x JOIN pg_class c ON c.oid = x.indexrelid
                                   WHERE c.relname = 'vectors_hnsw_g' || m.g || '_d' || m.d) FROM m",
                &[],
            )
            .map_err(fail)?;
        let (generation, dim, indexed): (Option<String>, Option<String>, Option<bool>) =
            (state.get(0), state.get(1), state.get(2));
        let generation: u32 = generation.and_then(|g| g.parse().ok()).unwrap_or(0);
        let Some(dim) = dim.and_then(|d| d.parse::<usize>().ok()) else { return Ok(Vec::new()) };
        if dim != query.len() {
            return Err(self.err(format!("the query has {} dimensions, the library's vectors {dim}", query.len())));
        }
        let sql = format!(
            "SELECT v.image_id, v.embedding::vector({dim}) <=> $1::real[]::vector({dim}) AS distance,
                    (SELECT p.path FROM paths p WHERE p.image_id = v.image_id AND {paths} ORDER BY p.path LIMIT 1)
             FROM vectors v WHERE v.generation = {generation}{filters}
             ORDER BY v.embedding::vector({dim}) <=> $1::real[]::vector({dim}) LIMIT {k}",
            paths = predicates.path_condition,
            filters = predicates.sql,
        );
        let mut params: Vec<&(dyn postgres::types::ToSql + Sync)> = vec![&query];
        params.extend(predicates.params.iter().map(|p| p.as_ref() as &(dyn postgres::types::ToSql + Sync)));
        let rows = if indexed == Some(true) {
            // Session settings of this pooled connection: they only steer HNSW scans.
            conn.batch_execute(&format!(
                "SET hnsw.ef_search = {}; SET hnsw.iterative_scan = relaxed_order",
                ef_search(k)
            ))
            .map_err(fail)?;
            let rows = conn.query(&sql, &params).map_err(fail)?;
            if rows.len() < k {
                // The graph ran out (a very selective filter, or k beyond what the scan
                // visits): rank exactly, which finds every image that passes.
                let mut tx = conn.transaction().map_err(fail)?;
                tx.batch_execute("SET LOCAL enable_indexscan = off; SET LOCAL enable_bitmapscan = off")
                    .map_err(fail)?;
                let rows = tx.query(&sql, &params).map_err(fail)?;
                tx.commit().map_err(fail)?;
                rows
            } else {
                rows
            }
        } else {
            // No usable index (below the threshold, or not built yet): an exact scan.
            conn.query(&sql, &params).map_err(fail)?
        };
        let mut hits: Vec<(f64, SearchHit)> = rows
            .iter()
            .filter_map(|r| {
                let path: Option<Vec<u8>> = r.get(2);
                let distance: f64 = r.get(1);
                path.map(|p| (distance, SearchHit::photo(id_of(r, 0), path_from_key(&p), (1.0 - distance) as f32)))
            })
            .collect();
        // Iterative scans return rows nearly, not exactly, in order.
        hits.sort_by(|a, b| a.0.total_cmp(&b.0).then(a.1.id.cmp(&b.1.id)));
        Ok(hits.into_iter().map(|(_, h)| h).collect())
    }

    /// See [`crate::store::Backend::vector_index_state`] (`build`: false) and
    /// [`crate::store::Backend::maintain_vector_index`] (`build`: true).
    pub(super) fn vector_index(&self, min_vectors: usize, build: bool) -> Result<IndexState> {
        let (state, to_build, to_drop) = self.tx("read the vector index", |tx| {
            let model = current(tx)?;
            let count: i64 = match model {
                Some((generation, _)) => {
                    tx.query_one(&format!("SELECT count(*) FROM vectors WHERE generation = {generation}"), &[])?.get(0)
                }
                None => 0,
            };
            let wanted = model.filter(|_| count as usize >= min_vectors).map(|(g, d)| index_name(g, d));
            let validity = match &wanted {
                Some(name) => index_validity(tx, name)?,
                None => None,
            };
            // Indexes of other generations or widths (a finished or abandoned reindex). The
            // next generation, while `reindex` writes it, is searched by nobody: unindexed.
            let others: Vec<String> = tx
                .query(
                    "SELECT c.relname FROM pg_class c WHERE c.relkind = 'i' AND c.relname LIKE 'vectors\\_hnsw\\_%'",
                    &[],
                )?
                .iter()
                .map(|r| r.get::<_, String>(0))
                .filter(|n| Some(n) != wanted.as_ref())
                .collect();
            let state = IndexState {
                // As the folder store's graph: `hnsw` from the threshold on, `needs_rebuild`
                // until the index is built (searches scan exactly meanwhile).
                kind: if wanted.is_some() { "hnsw" } else { "exact" },
                vectors: u64_of(count),
                tombstones: 0,
                pending: 0,
                needs_rebuild: wanted.is_some() && validity != Some(true),
                caught_up: 0,
                rebuilt: false,
                search_ef: if validity == Some(true) { EF_SEARCH as u64 } else { 0 },
                needs_flat_file: false,
            };
            let to_build = match (model, validity) {
                (Some((g, d)), v) if wanted.is_some() && v != Some(true) => Some((g, d, v.is_some())),
                _ => None,
            };
            Ok::<_, TxError>((state, to_build, others))
        })?;
        if !build {
            return Ok(state);
        }
        let mut state = state;
        for name in to_drop {
            self.execute(&format!("DROP INDEX CONCURRENTLY IF EXISTS {name}"), &[])?;
        }
        if let Some((generation, dim, invalid_exists)) = to_build {
            let name = index_name(generation, dim);
            if invalid_exists {
                self.execute(&format!("DROP INDEX CONCURRENTLY IF EXISTS {name}"), &[])?;
            }
            tracing::info!("building the HNSW index of {} vectors in PostgreSQL", state.vectors);
            // On one connection: the build may use at least 1 GB (pgvector builds far faster
            // when the graph fits in maintenance_work_mem; the server default is 64 MB). A
            // larger setting of the role or server is kept: a million 512-d vectors need ~3 GB.
            let mut conn = self.conn()?;
            let current: i64 = conn
                .query_one("SELECT pg_size_bytes(current_setting('maintenance_work_mem'))", &[])
                .map_err(|e| self.err(super::db_message(&e)))?
                .get(0);
            if current < 1 << 30 {
                conn.batch_execute("SET maintenance_work_mem = '1GB'").map_err(|e| self.err(super::db_message(&e)))?;
            }
            let built = conn.execute(
                &format!(
                    "CREATE INDEX CONCURRENTLY IF NOT EXISTS {name} ON vectors
                     USING hnsw ((embedding::vector({dim})) vector_cosine_ops) WITH (m = 16, ef_construction = 64)
                     WHERE generation = {generation}"
                ),
                &[],
            );
            let reset = conn.batch_execute("RESET maintenance_work_mem");
            built.and(reset).map_err(|e| self.err(super::db_message(&e)))?;
            if index_validity(&mut *conn, &name).map_err(|e| self.err(super::db_message(&e)))? == Some(true) {
                state.needs_rebuild = false;
                state.rebuilt = true;
                state.search_ef = EF_SEARCH as u64;
            }
        }
        Ok(state)
    }
}
