//! The text read in photos (OCR), as every backend stores it: one record per image with the
//! lines read, the content hash of the photo they were read from and the id of the OCR model
//! that read them. A record is current only while both still match, so a pass reads again
//! exactly the photos whose content or model changed, and a pass killed half way loses only
//! the photo it was reading (each record is written as soon as it is read). Records go with
//! their image.

use serde::{Deserialize, Serialize};

use super::{ImageId, Records};
use crate::error::Result;

/// One line of text read in a photo.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TextLine {
    /// The text.
    pub text: String,
    /// The recogniser's confidence, 0..=1.
    pub score: f32,
    /// The line's box in the photo's pixels: top-left, top-right, bottom-right, bottom-left.
    #[serde(rename = "box")]
    pub quad: [[f32; 2]; 4],
}

/// The text read in one photo.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StoredText {
    /// The content hash of the photo the lines were read from.
    pub hash: String,
    /// The OCR model that read them (see `OcrSettings::model_id` in the library).
    pub model: String,
    /// The lines, in reading order (none: the photo holds no text the model could read).
    pub lines: Vec<TextLine>,
}

impl StoredText {
    /// A record as every backend stores it: without NUL characters, which PostgreSQL's `text`
    /// cannot hold.
    pub fn new(hash: &str, model: &str, lines: Vec<TextLine>) -> Self {
        let lines = lines.into_iter().map(|l| TextLine { text: l.text.replace('\0', ""), ..l }).collect();
        StoredText { hash: hash.replace('\0', ""), model: model.replace('\0', ""), lines }
    }

    /// Whether these lines were read from the content `hash` by the model `model`.
    pub fn is_current(&self, hash: &str, model: &str) -> bool {
        self.hash == hash && self.model == model
    }

    /// The lines as one text, one line per line.
    pub fn joined(&self) -> String {
        self.lines.iter().map(|l| l.text.as_str()).collect::<Vec<_>>().join("\n")
    }
}

/// The text read in photos.
pub trait TextStore {
    /// Stores an image's text, replacing any older. Returns false (and stores nothing) when
    /// the image is no longer stored (it went away while being read) or its content is not
    /// the one the text was read from.
    fn set_text(&self, id: ImageId, text: &StoredText) -> Result<bool>;

    /// An image's text.
    fn text_of(&self, id: ImageId) -> Result<Option<StoredText>>;

    /// Every stored text, in id order.
    fn texts(&self) -> Records<'_, StoredText>;

    /// The texts of `ids` that have one (in no particular order): PostgreSQL reads them in a
    /// few queries rather than one per image.
    fn texts_of(&self, ids: &[ImageId]) -> Result<Vec<(ImageId, StoredText)>> {
        let mut out = Vec::with_capacity(ids.len());
        for &id in ids {
            if let Some(text) = self.text_of(id)? {
                out.push((id, text));
            }
        }
        Ok(out)
    }

    /// How many images have a stored text (with lines or without).
    fn text_count(&self) -> Result<u64>;

    /// Moves whenever a text is written (for in-memory full-text indexes; texts of removed
    /// images are filtered out when results are resolved to paths).
    fn text_changes(&self) -> Result<u64>;

    /// A number kept on disk that every caption or photo text written changes, in the same
    /// transaction as the record, so that an index derived from them on disk can tell whether
    /// it is current; `None` where the backend keeps none.
    fn full_text_stamp(&self) -> Result<Option<u64>> {
        Ok(None)
    }

    /// The images that left the library with their caption or text after the full-text stamp
    /// `after`: (the stamp each removal moved to, the image), in stamp order. Every stamp a
    /// removal moved is here until [`Self::forget_full_text_removals`] forgets it; the others
    /// were moved by captions and texts written.
    fn full_text_removals(&self, after: u64) -> Result<Vec<(u64, ImageId)>> {
        let _ = after;
        Ok(Vec::new())
    }

    /// Forgets the removals up to the stamp `upto` (an index holding `upto` has applied them).
    fn forget_full_text_removals(&self, upto: u64) -> Result<()> {
        let _ = upto;
        Ok(())
    }

    /// The backend's own full-text search of photo text and captions, when it has one
    /// (PostgreSQL): the best `limit` images for the normalised `terms` (see
    /// [`crate::text_terms`]), and for the words of `near` also photos whose text holds a
    /// word like them (a superset of those one edit away, which the caller checks), with their
    /// rank, best first. `None`: the backend has none, and the caller ranks in memory.
    fn search_text_in_database(
        &self,
        terms: &[String],
        near: &[String],
        captions: bool,
        limit: usize,
    ) -> Result<Option<Vec<(ImageId, f32)>>> {
        let _ = (terms, near, captions, limit);
        Ok(None)
    }
}
