-- Schema 7: typo tolerance for the text in photos.
--
-- `search --in text` matches a word of 5 or more letters also where the photo's text holds a
-- word one edit away from it ("airpert" finds "Airport"). The database finds the candidate
-- photos with pg_trgm (it ships with the PostgreSQL server; it is a trusted extension, so the
-- database's owner may create it): a trigram index over the terms each text was cut into
-- (src/text_terms.rs), queried with the strict word similarity operator `<<%`. clipdex then
-- keeps only the words exactly one edit away, as the folder library does.

CREATE EXTENSION IF NOT EXISTS pg_trgm;
CREATE INDEX texts_terms_trigrams ON texts USING gin (terms gin_trgm_ops);
