//! Schema migrations of the sled store, one file per schema version. `Store::open` applies, in
//! order, every migration above the version recorded in the database, each followed by a flush,
//! so an interrupted upgrade resumes where it stopped.
//!
//! To change the schema: add `vNNNN_what.rs` here, append it to [`MIGRATIONS`], and add a test
//! that opens a database written by the previous version.

mod v0001_initial;
mod v0002_tags;
mod v0003_vector_generations;
mod v0004_captions;
mod v0005_texts;

/// One schema step.
pub struct Migration {
    /// The schema version this migration produces.
    pub version: u32,
    /// What it does, for logs.
    pub description: &'static str,
    /// Applies it to an open database.
    pub apply: fn(&sled::Db) -> sled::Result<()>,
}

/// All migrations, in version order.
pub const MIGRATIONS: &[Migration] = &[
    Migration {
        version: 1,
        description: "initial schema: meta, roots, images, paths, image_paths, refs, hashes, vectors, failures",
        apply: v0001_initial::apply,
    },
    Migration { version: 2, description: "zero-shot tags: tags, tag_index, label_cache", apply: v0002_tags::apply },
    Migration {
        version: 3,
        description: "vector generations for switching models",
        apply: v0003_vector_generations::apply,
    },
    Migration { version: 4, description: "BLIP captions", apply: v0004_captions::apply },
    Migration { version: 5, description: "text in photos", apply: v0005_texts::apply },
];
