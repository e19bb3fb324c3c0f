//! Version 2: zero-shot tags.
//!
//! - `tags`: id → `TagSet` (JSON): the vocabulary fingerprint it was tagged with, and the
//!   confident tags (label, probability, cosine)
//! - `tag_index`: label ++ 0x00 ++ id → probability (f32 LE), for tag filters and counts
//! - `label_cache`: model ++ 0x00 ++ templates fingerprint ++ 0x00 ++ label → the label's
//!   averaged, normalised prompt embedding (f32 LE), so a vocabulary is embedded once per model
//! - `meta.autotag`: the library's auto-tagging settings (JSON), absent until `clipdex autotag`

pub const TREES: &[&str] = &["tags", "tag_index", "label_cache"];

pub fn apply(db: &sled::Db) -> sled::Result<()> {
    for name in TREES {
        db.open_tree(name)?;
    }
    Ok(())
}
