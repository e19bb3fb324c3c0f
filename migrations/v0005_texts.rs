//! Version 5: the text read in photos.
//!
//! - `texts`: id → `StoredText` (JSON): the lines read (text, score, box), the content hash
//!   of the photo they were read from and the OCR model's id, so a pass reads again only
//!   photos whose content or model changed. Removed with the image.

pub const TREES: &[&str] = &["texts"];

pub fn apply(db: &sled::Db) -> sled::Result<()> {
    for name in TREES {
        db.open_tree(name)?;
    }
    Ok(())
}
