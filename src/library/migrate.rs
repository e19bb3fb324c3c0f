//! `clipdex migrate --to URL`: a folder library copied into PostgreSQL, then checked: the
//! counts must agree and sample searches (stored vectors as queries) must return the same
//! images in both. The folder library is only read.

use std::path::Path;

use serde::Serialize;

use crate::error::{Error, Result};
use crate::query::SearchFilter;
use crate::store::postgres::{ImportReport, PgStore};
use crate::store::{DbLocation, ImageId, Store, StoreCounts};

/// Sample searches compared after a migration.
const CHECKED_SEARCHES: usize = 10;

/// What `migrate` did, as `--json` prints it.
#[derive(Debug, Clone, Serialize)]
pub struct MigrateReport {
    /// The folder library.
    pub from: String,
    /// The PostgreSQL database, password hidden.
    pub to: String,
    /// What was copied.
    #[serde(flatten)]
    pub copied: ImportReport,
    /// Sample searches run on both, each returning the same images.
    pub checked_searches: usize,
    /// Whether the search index was built (libraries past the graph threshold).
    pub index: &'static str,
    /// Seconds the whole migration took.
    pub seconds: f64,
}

/// The counts that must be equal after a migration (the caches are not copied).
fn copied_counts(c: &StoreCounts) -> [u64; 8] {
    [c.images, c.paths, c.vectors, c.failures, c.roots, c.tagged, c.tags, c.captioned]
}

/// Copies the folder library at `from` into the empty PostgreSQL database `to` and checks it.
pub fn migrate(from: &Path, to: &DbLocation, graph_min: usize) -> Result<MigrateReport> {
    let started = std::time::Instant::now();
    let DbLocation::Postgres(url) = to else {
        return Err(Error::Invalid(format!("migrate copies into PostgreSQL: --to takes a postgres:// URL, not {to}")));
    };
    if !from.join("sled").is_dir() {
        return Err(Error::Invalid(format!("no library at {}: --db names the folder library to copy", from.display())));
    }
    let source = Store::open(DbLocation::Dir(from.to_path_buf()))?;
    let target = PgStore::open(url)?;
    let copied = target.import(&*source, super::SETTINGS)?;
    let (a, b) = (source.counts()?, crate::store::Backend::counts(&target)?);
    if copied_counts(&a) != copied_counts(&b) {
        return Err(Error::Store(format!(
            "the copy in {} does not match the folder library (images, paths, vectors, failures, roots, tagged, tags, captioned: {:?} vs {:?}); drop that database and migrate again",
            to,
            copied_counts(&b),
            copied_counts(&a)
        )));
    }
    // Sample searches: stored vectors spread over the library, ranked exactly in the folder
    // library and by PostgreSQL.
    let vectors: Vec<(ImageId, Vec<f32>)> = source.vectors().collect::<Result<_>>()?;
    let step = (vectors.len() / CHECKED_SEARCHES).max(1);
    let mut checked = 0;
    for (_, query) in vectors.iter().step_by(step).take(CHECKED_SEARCHES) {
        let k = 10.min(vectors.len());
        let mut exact: Vec<(f32, ImageId)> =
            vectors.iter().map(|(id, v)| (v.iter().zip(query).map(|(x, y)| x * y).sum(), *id)).collect();
        exact.sort_by(|x, y| y.0.total_cmp(&x.0).then(x.1.cmp(&y.1)));
        let hits = crate::store::Backend::nearest(&target, query, k, &SearchFilter::default())?.unwrap_or_default();
        // Same images, allowing ties to come in either order.
        let kth = exact[k - 1].0;
        let agree = hits.len() == k && hits.iter().all(|h| exact.iter().any(|(s, id)| *id == h.id && *s >= kth - 1e-5));
        if !agree {
            return Err(Error::Store(format!(
                "a sample search in {to} returned other images than in the folder library; drop that database and migrate again"
            )));
        }
        checked += 1;
    }
    let index = match crate::store::Backend::maintain_vector_index(&target, graph_min)? {
        Some(s) if s.kind == "hnsw" && !s.needs_rebuild => "hnsw",
        _ => "exact",
    };
    Ok(MigrateReport {
        from: from.display().to_string(),
        to: to.to_string(),
        copied,
        checked_searches: checked,
        index,
        seconds: started.elapsed().as_secs_f64(),
    })
}
