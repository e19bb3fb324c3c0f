//! The text read in photos in PostgreSQL: one row of `texts` per image, gone with the image,
//! with a `tsvector` of its search terms that `search --in text` queries in the database.

use super::{PgStore, TxError, i64_of, u64_of};
use crate::error::Result;
use crate::store::{ImageId, Records, StoredText, TextLine, TextStore};

fn lines_of(store: &PgStore, json: &str) -> Result<Vec<TextLine>> {
    serde_json::from_str(json).map_err(|e| store.err(format!("corrupt photo text record: {e}")))
}

/// A `tsquery` matching any of `terms` (each quoted as one lexeme).
fn any_of(terms: &[String]) -> String {
    terms.iter().map(|t| format!("'{}'", t.replace('\'', "''").replace('\\', "\\\\"))).collect::<Vec<_>>().join(" | ")
}

impl TextStore for PgStore {
    fn set_text(&self, id: ImageId, text: &StoredText) -> Result<bool> {
        let lines = serde_json::to_string(&text.lines).map_err(|e| self.err(e))?;
        let terms = crate::text_terms::terms_joined(&text.joined());
        self.tx("store photo text", |tx| {
            let row = tx.query_opt("SELECT hash FROM images WHERE id = $1 FOR KEY SHARE", &[&i64_of(id)])?;
            match row {
                Some(r) if r.get::<_, String>(0) == text.hash => {}
                _ => return Ok(false),
            }
            tx.execute(
                "INSERT INTO texts (image_id, hash, model, lines, terms) VALUES ($1, $2, $3, $4, $5)
                 ON CONFLICT (image_id) DO UPDATE SET hash = EXCLUDED.hash, model = EXCLUDED.model,
                     lines = EXCLUDED.lines, terms = EXCLUDED.terms",
                &[&i64_of(id), &text.hash, &text.model, &lines, &terms],
            )?;
            tx.execute("SELECT nextval('text_changes')", &[])?;
            Ok::<_, TxError>(true)
        })
    }

    fn text_of(&self, id: ImageId) -> Result<Option<StoredText>> {
        let row = self.query_opt("SELECT hash, model, lines FROM texts WHERE image_id = $1", &[&i64_of(id)])?;
        match row {
            Some(r) => Ok(Some(StoredText { hash: r.get(0), model: r.get(1), lines: lines_of(self, r.get(2))? })),
            None => Ok(None),
        }
    }

    fn texts_of(&self, ids: &[ImageId]) -> Result<Vec<(ImageId, StoredText)>> {
        let mut out = Vec::with_capacity(ids.len());
        for batch in ids.chunks(TEXTS_A_QUERY) {
            let keys: Vec<i64> = batch.iter().map(|&id| i64_of(id)).collect();
            for r in self.query("SELECT image_id, hash, model, lines FROM texts WHERE image_id = ANY($1)", &[&keys])? {
                let text = StoredText { hash: r.get(1), model: r.get(2), lines: lines_of(self, r.get(3))? };
                out.push((u64_of(r.get(0)), text));
            }
        }
        Ok(out)
    }

    fn texts(&self) -> Records<'_, StoredText> {
        self.pages(
            "SELECT image_id, hash, model, lines FROM texts WHERE image_id > $1 ORDER BY image_id LIMIT $2",
            |s, r| Ok(StoredText { hash: r.get(1), model: r.get(2), lines: lines_of(s, r.get(3))? }),
        )
    }

    fn text_count(&self) -> Result<u64> {
        let rows = self.query("SELECT count(*) FROM texts", &[])?;
        Ok(rows.first().map(|r| u64_of(r.get(0))).unwrap_or(0))
    }

    fn text_changes(&self) -> Result<u64> {
        self.sequence_value("text_changes")
    }

    /// Ranks in the database: the photos' texts (and with `captions` their captions) whose
    /// `tsvector` matches any term, by the sum of `ts_rank` over both; and the texts holding a
    /// word like one of `near` (pg_trgm's strict word similarity, at a threshold low enough
    /// for every word one edit away from a word of 5 letters or more), ranked by a thousandth of
    /// the similarity: below any exact match (`ts_rank` of one match is about 0.06), so at
    /// `limit` near words never push out exact ones.
    fn search_text_in_database(
        &self,
        terms: &[String],
        near: &[String],
        captions: bool,
        limit: usize,
    ) -> Result<Option<Vec<(ImageId, f32)>>> {
        if terms.is_empty() {
            return Ok(Some(Vec::new()));
        }
        let query = any_of(terms);
        let rows = self.tx("search the text in photos", |tx| {
            // One substituted letter in a 5-letter word leaves 3 of its 9 trigrams in common.
            tx.execute("SELECT set_config('pg_trgm.strict_word_similarity_threshold', $1, true)", &[&NEAR_THRESHOLD])?;
            Ok::<_, TxError>(tx.query(
                "WITH q AS (SELECT to_tsquery('simple', $1) AS q)
                 SELECT image_id, sum(rank)::real FROM (
                     SELECT image_id, ts_rank(search, q.q) AS rank FROM texts, q WHERE search @@ q.q
                     UNION ALL
                     SELECT image_id, ts_rank(search, q.q) FROM captions, q WHERE $2 AND search @@ q.q
                     UNION ALL
                     SELECT image_id, 0.001 * strict_word_similarity(w, terms)
                         FROM texts, unnest($4::text[]) w WHERE w <<% terms
                 ) m GROUP BY image_id ORDER BY 2 DESC, 1 LIMIT $3",
                &[&query, &captions, &(limit as i64), &near],
            )?)
        })?;
        Ok(Some(rows.iter().map(|r| (u64_of(r.get(0)), r.get::<_, f32>(1))).collect()))
    }
}

/// At most this many texts [`TextStore::texts_of`] reads in one query.
const TEXTS_A_QUERY: usize = 10_000;

/// pg_trgm's strict word similarity at or above which a word of the text is a candidate for
/// one edit away from a query's word (a substitution in a 5-letter word: 3 / 9).
const NEAR_THRESHOLD: &str = "0.3";

#[cfg(test)]
mod tests {
    #[test]
    fn terms_are_quoted_lexemes() {
        assert_eq!(super::any_of(&["a'b".into(), "奶茶".into()]), "'a''b' | '奶茶'");
    }
}
