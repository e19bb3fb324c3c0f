//! Zero-shot tags in PostgreSQL: `tags` holds each image's tag set as the vocabulary fingerprint
//! and JSON, `tag_index` one row per (label, image) for filters and counts, `label_cache` the
//! label embeddings.

use super::{PgStore, TxError, i64_of, id_of, u64_of};
use crate::error::Result;
use crate::store::{ImageId, MAX_CACHED_LABELS, Tag, TagCount, TagStore};

impl TagStore for PgStore {
    fn set_tags(&self, id: ImageId, vocabulary: &str, tags: &[Tag]) -> Result<bool> {
        let json = serde_json::to_string(tags).expect("tags serialise");
        self.tx("store tags", |tx| {
            if tx.query_opt("SELECT 1 FROM images WHERE id = $1 FOR KEY SHARE", &[&i64_of(id)])?.is_none() {
                return Ok(false);
            }
            tx.execute("DELETE FROM tags WHERE image_id = $1", &[&i64_of(id)])?;
            tx.execute(
                "INSERT INTO tags (image_id, vocabulary, tags) VALUES ($1, $2, $3)",
                &[&i64_of(id), &vocabulary, &json],
            )?;
            for t in tags {
                // A label listed twice keeps its last probability, as the sled store does.
                tx.execute(
                    "INSERT INTO tag_index (label, image_id, probability) VALUES ($1, $2, $3)
                     ON CONFLICT (label, image_id) DO UPDATE SET probability = EXCLUDED.probability",
                    &[&t.label, &i64_of(id), &t.probability],
                )?;
            }
            Ok::<_, TxError>(true)
        })
    }

    fn clear_tags(&self) -> Result<()> {
        self.execute("DELETE FROM tags", &[])?;
        Ok(())
    }

    fn tags_of(&self, id: ImageId) -> Result<Option<(String, Vec<Tag>)>> {
        match self.query_opt("SELECT vocabulary, tags FROM tags WHERE image_id = $1", &[&i64_of(id)])? {
            Some(r) => Ok(Some((r.get(0), self.parse_json("tags", r.get(1))?))),
            None => Ok(None),
        }
    }

    fn has_tag(&self, id: ImageId, label: &str) -> Result<bool> {
        let sql = "SELECT 1 FROM tag_index WHERE label = $1 AND image_id = $2";
        Ok(self.query_opt(sql, &[&label, &i64_of(id)])?.is_some())
    }

    fn tag_in_use(&self, label: &str) -> Result<bool> {
        Ok(self.query_opt("SELECT 1 FROM tag_index WHERE label = $1 LIMIT 1", &[&label])?.is_some())
    }

    fn images_tagged(&self, label: &str) -> Result<Vec<(ImageId, f32)>> {
        let rows = self.query(
            "SELECT image_id, probability FROM tag_index WHERE label = $1 ORDER BY probability DESC, image_id",
            &[&label],
        )?;
        Ok(rows.iter().map(|r| (id_of(r, 0), r.get(1))).collect())
    }

    fn tag_counts(&self) -> Result<Vec<TagCount>> {
        let rows =
            self.query("SELECT label, count(*) FROM tag_index GROUP BY label ORDER BY count(*) DESC, label", &[])?;
        Ok(rows.iter().map(|r| TagCount { label: r.get(0), count: u64_of(r.get(1)) }).collect())
    }

    fn cached_label_embeddings(&self, prefix: &str, labels: &[String]) -> Result<Vec<Option<Vec<f32>>>> {
        let rows = self.query(
            "SELECT label, embedding FROM label_cache WHERE prefix = $1 AND label = ANY($2)",
            &[&prefix.as_bytes(), &labels],
        )?;
        let mut found: std::collections::HashMap<String, Vec<f32>> =
            rows.iter().map(|r| (r.get(0), r.get(1))).collect();
        Ok(labels.iter().map(|l| found.remove(l)).collect())
    }

    fn cache_label_embeddings(&self, prefix: &str, labels: &[String], embeddings: &[Vec<f32>]) -> Result<()> {
        self.tx("cache label embeddings", |tx| {
            let held: i64 = tx.query_one("SELECT count(*) FROM label_cache", &[])?.get(0);
            if held as usize + labels.len() > MAX_CACHED_LABELS {
                tx.execute("DELETE FROM label_cache", &[])?;
            }
            for (label, e) in labels.iter().zip(embeddings) {
                tx.execute(
                    "INSERT INTO label_cache (prefix, label, embedding) VALUES ($1, $2, $3)
                     ON CONFLICT (prefix, label) DO UPDATE SET embedding = EXCLUDED.embedding",
                    &[&prefix.as_bytes(), label, e],
                )?;
            }
            Ok(())
        })
    }
}
