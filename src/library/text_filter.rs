//! The `text:` filter of the query language: the photos whose read text (OCR, see
//! [`super::photo_text`]) matches a text query, as a set of image ids that the search then
//! keeps (or, for `-text:`, leaves out) on both backends ([`AttributeFilter::images`]).
//!
//! [`Library::images_with_text`] is the one place the filter asks the full-text search: a
//! photo matches when its text holds every word and phrase of the query, folded as the text
//! search folds them (case, accents, width; [`crate::query::fulltext`]).

use std::collections::{BTreeSet, HashMap};

use super::Library;
use crate::error::{Error, Result};
use crate::query::SearchFilter;
use crate::query::fulltext::{FullTextIndex, TextQuery};
use crate::query::syntax::ParsedQuery;
use crate::store::ImageId;
use crate::store::attributes::AttributeFilter;

/// At most this many photos a text filter's database search returns (PostgreSQL).
const MAX_TEXT_MATCHES: usize = 1_000_000;

impl Library {
    /// The images whose read text matches `query` (words and `"phrases"`, as `search --in
    /// text` reads them), every word and phrase of it. PostgreSQL finds the candidates with its
    /// full-text (and trigram) index; the folder library asks the index its text searches ask
    /// ([`Library::full_text`]: the one on disk, or the in-memory one where that cannot open).
    pub fn images_with_text(&self, query: &str) -> Result<BTreeSet<ImageId>> {
        let parsed = TextQuery::parse(query);
        if parsed.is_empty() {
            return Ok(BTreeSet::new());
        }
        let text_of = |id: ImageId| self.store.text_of(id).ok().flatten().map(|t| t.joined());
        let matches = match self.store.search_text_in_database(
            &parsed.terms(),
            &parsed.typo_tolerant_words(),
            false,
            MAX_TEXT_MATCHES,
        )? {
            Some(candidates) => {
                // The candidates' texts in a few queries (not one per candidate), kept for
                // the phrases' check.
                let ids: Vec<ImageId> = candidates.iter().map(|&(id, _)| id).collect();
                let texts: HashMap<ImageId, String> =
                    self.store.texts_of(&ids)?.into_iter().map(|(id, t)| (id, t.joined())).collect();
                let index = FullTextIndex::build(std::iter::empty(), texts.iter().map(|(&id, t)| (id, t.clone())));
                index.rank_text(&parsed, &|id: ImageId| texts.get(&id).cloned())
            }
            None => self.full_text()?.rank_text(&parsed, &text_of)?,
        };
        Ok(matches.hits.iter().filter(|m| m.coverage >= 1.0).map(|m| m.id).collect())
    }

    /// `filter` narrowed by the query's filters ([`ParsedQuery::narrow`]), its `text:` filters
    /// resolved to the images they keep or leave out: the filter every kind of search
    /// (CLIP, captions, text, blended, re-ranked) takes for a query string.
    pub fn narrow_query(&self, query: &ParsedQuery, filter: &SearchFilter) -> Result<SearchFilter> {
        let mut narrowed = query.narrow(filter)?;
        self.resolve_text_filters(&query.filters.texts, &query.filters.not_texts, &mut narrowed.attributes)?;
        Ok(narrowed)
    }

    /// Resolves a query's `text:` and `-text:` filters into `attributes`' sets of images.
    /// Refused, saying how to turn text reading on, when the library reads no text and has
    /// none read.
    fn resolve_text_filters(
        &self,
        texts: &[String],
        not_texts: &[String],
        attributes: &mut AttributeFilter,
    ) -> Result<()> {
        if texts.is_empty() && not_texts.is_empty() {
            return Ok(());
        }
        if self.ocr_settings()?.is_none() && !self.has_text()? {
            return Err(Error::Invalid(
                "text: looks for the words read in photos, and this library reads none: turn text reading on with \
                 `clipdex config set ocr_model DIR` (a PP-OCR model folder; `clipdex models download ocr` fetches \
                 one), then `clipdex ocr --library` (serve and watch read new photos by themselves); see the docs' \
                 \"Text in photos\" chapter"
                    .into(),
            ));
        }
        for text in texts {
            let found = self.images_with_text(text)?;
            attributes.images = Some(match attributes.images.take() {
                Some(keep) => keep.intersection(&found).copied().collect(),
                None => found,
            });
        }
        for text in not_texts {
            attributes.excluded.extend(self.images_with_text(text)?);
        }
        Ok(())
    }
}
