//! Version 1: the initial trees.
//!
//! - `meta`: `schema_version` (u32 BE), `model` (UTF-8), `dim` (u32 BE)
//! - `roots`: folder path bytes → empty
//! - `images`: id (u64 BE) → `ImageRecord` (JSON)
//! - `paths`: file path bytes → `PathEntry` (JSON)
//! - `image_paths`: id ++ path bytes → empty (the reverse of `paths`)
//! - `refs`: id → number of paths holding it (u32 BE)
//! - `hashes`: blake3 hex → id
//! - `vectors`: id → little-endian f32s
//! - `failures`: file path bytes → `Failure` (JSON)

pub const TREES: &[&str] =
    &["meta", "roots", "images", "paths", "image_paths", "refs", "hashes", "vectors", "failures"];

pub fn apply(db: &sled::Db) -> sled::Result<()> {
    for name in TREES {
        db.open_tree(name)?;
    }
    Ok(())
}
