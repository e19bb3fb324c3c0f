//! Switching the library to another model in PostgreSQL: `vectors` rows carry their
//! generation; `reindex` writes the next one while the current one answers, and one
//! transaction makes it current and drops the old one.

use super::{CURRENT, PgStore, TxError, i64_of, id_of, tx_changed, tx_put_frames, u64_of};
use crate::error::{Error, Result};
use crate::store::{FrameVector, ImageId, ReindexStore, ReindexTarget};

const TARGET_KEY: &str = "reindex";

impl ReindexStore for PgStore {
    fn vectors_generation(&self) -> Result<u32> {
        let g = self.meta("vectors_generation")?.unwrap_or_default();
        g.parse().map_err(|_| self.err("corrupt vectors_generation"))
    }

    fn reindex_target(&self) -> Result<Option<ReindexTarget>> {
        match self.meta(TARGET_KEY)? {
            Some(json) => Ok(Some(self.parse_json("reindex", &json)?)),
            None => Ok(None),
        }
    }

    fn begin_reindex(&self, target: &ReindexTarget) -> Result<()> {
        if self.reindex_target()?.as_ref() == Some(target) {
            return Ok(());
        }
        let json = serde_json::to_string(target).expect("targets serialise");
        self.tx("begin re-indexing", |tx| {
            tx.execute(&format!("DELETE FROM vectors WHERE generation = {CURRENT} + 1"), &[])?;
            tx.execute(&format!("DELETE FROM frames WHERE generation = {CURRENT} + 1"), &[])?;
            tx.execute(
                "INSERT INTO meta (key, value) VALUES ($1, $2) ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value",
                &[&TARGET_KEY, &json],
            )?;
            Ok(())
        })
    }

    fn cancel_reindex(&self) -> Result<()> {
        self.tx("cancel re-indexing", |tx| {
            tx.execute(&format!("DELETE FROM vectors WHERE generation = {CURRENT} + 1"), &[])?;
            tx.execute(&format!("DELETE FROM frames WHERE generation = {CURRENT} + 1"), &[])?;
            tx.execute("DELETE FROM meta WHERE key = $1", &[&TARGET_KEY])?;
            Ok(())
        })
    }

    fn images_without_next_vector(&self) -> Result<Vec<ImageId>> {
        let sql = format!(
            "SELECT id FROM images i WHERE NOT EXISTS
               (SELECT 1 FROM vectors v WHERE v.generation = {CURRENT} + 1 AND v.image_id = i.id) ORDER BY id"
        );
        Ok(self.query(&sql, &[])?.iter().map(|r| id_of(r, 0)).collect())
    }

    fn next_vector_count(&self) -> Result<u64> {
        let sql = format!("SELECT count(*) FROM vectors WHERE generation = {CURRENT} + 1");
        Ok(self.query_opt(&sql, &[])?.map(|r| u64_of(r.get(0))).unwrap_or(0))
    }

    fn put_next_vectors(&self, id: ImageId, vector: &[f32], frames: &[FrameVector]) -> Result<bool> {
        let vector = vector.to_vec();
        self.tx("store a vector", |tx| {
            if tx.query_opt("SELECT 1 FROM images WHERE id = $1 FOR KEY SHARE", &[&i64_of(id)])?.is_none() {
                return Ok(false);
            }
            tx.execute(
                &format!(
                    "INSERT INTO vectors (generation, image_id, embedding) VALUES ({CURRENT} + 1, $1, $2::real[]::vector)
                     ON CONFLICT (generation, image_id) DO UPDATE SET embedding = EXCLUDED.embedding"
                ),
                &[&i64_of(id), &vector],
            )?;
            tx_put_frames(tx, &format!("{CURRENT} + 1"), i64_of(id), frames, false)?;
            Ok::<_, TxError>(true)
        })
    }

    fn switch_to_next_vectors(&self) -> Result<bool> {
        let Some(target) = self.reindex_target()? else {
            return Err(Error::Invalid("no re-indexing is under way".into()));
        };
        let target_json = serde_json::to_string(&target).expect("targets serialise");
        self.tx("switch models", |tx| {
            // The target read inside the transaction: a re-indexing begun meanwhile wins.
            let now: Option<String> =
                tx.query_opt("SELECT value FROM meta WHERE key = $1", &[&TARGET_KEY])?.map(|r| r.get(0));
            if now.as_deref() != Some(target_json.as_str()) {
                return Err(TxError::Abort("the re-indexing target changed meanwhile".into()));
            }
            let missing = format!(
                "SELECT 1 FROM images i WHERE NOT EXISTS
                   (SELECT 1 FROM vectors v WHERE v.generation = {CURRENT} + 1 AND v.image_id = i.id) LIMIT 1"
            );
            if tx.query_opt(&missing, &[])?.is_some() {
                return Ok(false);
            }
            let old: i32 = tx.query_one(&format!("SELECT {CURRENT}"), &[])?.get(0);
            let set =
                "INSERT INTO meta (key, value) VALUES ($1, $2) ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value";
            tx.execute(set, &[&"model", &target.model])?;
            tx.execute(set, &[&"dim", &target.dim.to_string()])?;
            tx.execute(set, &[&"vectors_generation", &(old + 1).to_string()])?;
            tx.execute("DELETE FROM meta WHERE key IN ('model_fingerprint', 'reindex')", &[])?;
            tx.execute("DELETE FROM vectors WHERE generation = $1", &[&old])?;
            tx.execute("DELETE FROM frames WHERE generation = $1", &[&old])?;
            tx_changed(tx)?;
            Ok(true)
        })
    }
}
