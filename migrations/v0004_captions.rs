//! Version 4: BLIP captions.
//!
//! - `captions`: id → `StoredCaption` (JSON): the caption's text and the settings fingerprint
//!   it was made with (model, prompt, beams, token limit), so `caption --library` redoes only
//!   images captioned some other way. Removed with the image.

pub const TREES: &[&str] = &["captions"];

pub fn apply(db: &sled::Db) -> sled::Result<()> {
    for name in TREES {
        db.open_tree(name)?;
    }
    Ok(())
}
