//! BLIP captions in PostgreSQL: one row per image, gone with the image.

use super::{PgStore, TxError, i64_of};
use crate::error::Result;
use crate::store::{CaptionStore, ImageId, Records, StoredCaption};

impl CaptionStore for PgStore {
    fn set_caption(&self, id: ImageId, caption: &StoredCaption) -> Result<bool> {
        self.tx("store caption", |tx| {
            if tx.query_opt("SELECT 1 FROM images WHERE id = $1 FOR KEY SHARE", &[&i64_of(id)])?.is_none() {
                return Ok(false);
            }
            tx.execute(
                "INSERT INTO captions (image_id, text, settings) VALUES ($1, $2, $3)
                 ON CONFLICT (image_id) DO UPDATE SET text = EXCLUDED.text, settings = EXCLUDED.settings",
                &[&i64_of(id), &caption.text, &caption.settings],
            )?;
            tx.execute("SELECT nextval('caption_changes')", &[])?;
            Ok::<_, TxError>(true)
        })
    }

    fn caption_of(&self, id: ImageId) -> Result<Option<StoredCaption>> {
        let row = self.query_opt("SELECT text, settings FROM captions WHERE image_id = $1", &[&i64_of(id)])?;
        Ok(row.map(|r| StoredCaption { text: r.get(0), settings: r.get(1) }))
    }

    fn captions(&self) -> Records<'_, StoredCaption> {
        self.pages(
            "SELECT image_id, text, settings FROM captions WHERE image_id > $1 ORDER BY image_id LIMIT $2",
            |_, r| Ok(StoredCaption { text: r.get(1), settings: r.get(2) }),
        )
    }

    fn caption_changes(&self) -> Result<u64> {
        self.sequence_value("caption_changes")
    }
}
