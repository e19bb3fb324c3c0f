//! Vectors of the library's images under other models (a fine-tuned CLIP that re-ranks
//! searches), cached in PostgreSQL; they go with their image.

use super::{PgStore, i64_of, id_of, u64_of};
use crate::error::Result;
use crate::store::{ImageId, ModelVectorStore};

impl ModelVectorStore for PgStore {
    fn model_vectors(&self, model: &str, ids: &[ImageId]) -> Result<Vec<Option<Vec<f32>>>> {
        let keys: Vec<i64> = ids.iter().map(|&id| i64_of(id)).collect();
        let rows = self.query(
            "SELECT image_id, embedding FROM model_vectors WHERE model = $1 AND image_id = ANY($2)",
            &[&model.as_bytes(), &keys],
        )?;
        let mut found: std::collections::HashMap<ImageId, Vec<f32>> =
            rows.iter().map(|r| (id_of(r, 0), r.get(1))).collect();
        Ok(ids.iter().map(|id| found.remove(id)).collect())
    }

    fn cache_model_vectors(&self, model: &str, vectors: &[(ImageId, Vec<f32>)]) -> Result<()> {
        self.tx("cache vectors", |tx| {
            for (id, v) in vectors {
                tx.execute(
                    "INSERT INTO model_vectors (model, image_id, embedding)
                     SELECT $1, $2, $3 WHERE EXISTS (SELECT 1 FROM images WHERE id = $2)
                     ON CONFLICT (model, image_id) DO UPDATE SET embedding = EXCLUDED.embedding",
                    &[&model.as_bytes(), &i64_of(*id), v],
                )?;
            }
            Ok(())
        })
    }

    /// Cached vectors go with their image (a cascade), so there is never anything to prune.
    fn prune_model_vectors(&self) -> Result<usize> {
        let n = self.execute(
            "DELETE FROM model_vectors m WHERE NOT EXISTS (SELECT 1 FROM images i WHERE i.id = m.image_id)",
            &[],
        )?;
        Ok(n as usize)
    }

    fn model_vector_count(&self) -> Result<u64> {
        let row = self.query_opt("SELECT count(*) FROM model_vectors", &[])?;
        Ok(row.map(|r| u64_of(r.get(0))).unwrap_or(0))
    }
}
