//! Version 3: vector generations, for switching models (`clipdex reindex`).
//!
//! - `meta.vectors_generation` (u32 BE, absent = 0): the current generation; its vectors are in
//!   `vectors` for generation 0 and `vectors.N` after that
//! - `vectors.{generation + 1}`: the next model's vectors while a re-indexing is under way
//! - `meta.reindex`: the re-indexing under way (`{"model", "dim"}`, JSON), absent otherwise
//!
//! Nothing moves: a version-2 database is generation 0. The version is bumped so that an older
//! clipdex, which only knows the `vectors` tree, refuses a database that switched models.

pub fn apply(_db: &sled::Db) -> sled::Result<()> {
    Ok(())
}
