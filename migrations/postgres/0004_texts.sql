-- Schema 4: the text read in photos (OCR), searched in the database.
--
-- One row per image: the lines read (JSON: text, score, box), the content hash of the photo
-- they were read from and the OCR model's id (a pass reads again only photos whose content or
-- model changed), and the lines as clipdex cuts them into search terms (NFKC, lowercase, no
-- accents, CJK runs as character pairs; see src/text_terms.rs), which `search` indexes.
-- Captions gain the same kind of column: the photo text and the captions are searched
-- together, with one text search query over both.

CREATE TABLE texts (
    image_id bigint PRIMARY KEY REFERENCES images (id) ON DELETE CASCADE,
    hash text NOT NULL,
    model text NOT NULL,
    lines text NOT NULL,
    terms text NOT NULL,
    search tsvector GENERATED ALWAYS AS (to_tsvector('simple', terms)) STORED
);
CREATE INDEX texts_search ON texts USING gin (search);

ALTER TABLE captions ADD COLUMN search tsvector GENERATED ALWAYS AS (to_tsvector('simple', text)) STORED;
CREATE INDEX captions_search ON captions USING gin (search);

-- Moved by every text written (in-memory views of every process compare it).
CREATE SEQUENCE text_changes;
