-- Schema 1 of a clipdex library in PostgreSQL: the same records as the sled store's trees.
-- Paths are the raw bytes of OS file names (bytea: non-UTF-8 names included; ordered as bytes).
-- An image's files are the rows of `paths` that point at it; the last one to go takes the
-- image, and with it (ON DELETE CASCADE) its vectors, tags, caption and cached vectors.

CREATE EXTENSION IF NOT EXISTS vector;

-- Settings and bookkeeping: model, dim, vectors_generation, model_fingerprint, reindex, and
-- the JSON settings of commands (autotag, caption).
CREATE TABLE meta (
    key text COLLATE "C" PRIMARY KEY,
    value text NOT NULL
);

CREATE TABLE roots (
    path bytea PRIMARY KEY,
    device bigint
);

CREATE SEQUENCE image_ids;

CREATE TABLE images (
    id bigint PRIMARY KEY,
    hash text COLLATE "C" NOT NULL UNIQUE,
    -- The image record as JSON (size, dimensions, dates, camera, position).
    record text NOT NULL,
    -- EXIF date taken, else the file's time when indexed (seconds): what date filters read.
    date bigint NOT NULL
);

CREATE TABLE paths (
    path bytea PRIMARY KEY,
    image_id bigint NOT NULL REFERENCES images (id),
    size bigint NOT NULL,
    mtime_ns bigint NOT NULL
);
CREATE INDEX paths_by_image ON paths (image_id, path);

-- One row per image and vector generation: the current generation answers searches; the next
-- one is what `reindex` writes for the model it moves to. Stored inline (PLAIN): a 512-d
-- vector is 2 kB, past which the default would compress or move it out of line.
CREATE TABLE vectors (
    generation integer NOT NULL,
    image_id bigint NOT NULL REFERENCES images (id) ON DELETE CASCADE,
    embedding vector NOT NULL,
    PRIMARY KEY (generation, image_id)
);
ALTER TABLE vectors ALTER COLUMN embedding SET STORAGE PLAIN;
CREATE INDEX vectors_by_image ON vectors (image_id);

CREATE TABLE failures (
    path bytea PRIMARY KEY,
    reason text NOT NULL,
    attempts integer NOT NULL,
    size bigint NOT NULL,
    mtime_ns bigint NOT NULL
);

CREATE TABLE tags (
    image_id bigint PRIMARY KEY REFERENCES images (id) ON DELETE CASCADE,
    vocabulary text NOT NULL,
    -- The tags as JSON, most probable first.
    tags text NOT NULL
);

CREATE TABLE tag_index (
    label text COLLATE "C" NOT NULL,
    image_id bigint NOT NULL REFERENCES tags (image_id) ON DELETE CASCADE,
    probability real NOT NULL,
    PRIMARY KEY (label, image_id)
);
CREATE INDEX tag_index_by_image ON tag_index (image_id);

-- Prefix: model and prompt-set fingerprint, as bytes (it holds a NUL separator).
CREATE TABLE label_cache (
    prefix bytea NOT NULL,
    label text COLLATE "C" NOT NULL,
    embedding real[] NOT NULL,
    PRIMARY KEY (prefix, label)
);

CREATE TABLE captions (
    image_id bigint PRIMARY KEY REFERENCES images (id) ON DELETE CASCADE,
    text text NOT NULL,
    settings text NOT NULL
);

CREATE TABLE model_vectors (
    model bytea NOT NULL,
    image_id bigint NOT NULL REFERENCES images (id) ON DELETE CASCADE,
    embedding real[] NOT NULL,
    PRIMARY KEY (model, image_id)
);
CREATE INDEX model_vectors_by_image ON model_vectors (image_id);

-- Moved by every change of images or vectors, and by every caption written: in-memory indexes
-- of every process compare them to know when they are stale. Sequences, so that concurrent
-- writers never conflict on them.
CREATE SEQUENCE changes;
CREATE SEQUENCE caption_changes;
