-- Schema 5: faces and people. `face_scans` records which images the face pass has looked at,
-- with the face model and the content hash (re-run when either changes); an image's faces
-- hang from its scan and go with it, and with the image. Face embeddings are pgvector values
-- without a fixed width (dlib's are 128 numbers, ArcFace's 512). A person is kept while it
-- holds a user decision; faces of a removed person become unassigned. `face_corrections`
-- holds the user's "face F is not person P".

CREATE TABLE face_scans (
    image_id bigint PRIMARY KEY REFERENCES images (id) ON DELETE CASCADE,
    model text NOT NULL,
    hash text COLLATE "C" NOT NULL
);

CREATE SEQUENCE person_ids;

CREATE TABLE persons (
    id bigint PRIMARY KEY,
    name text,
    hidden boolean NOT NULL DEFAULT false,
    -- A face id; not a foreign key: a representative gone with its image is replaced on read.
    representative bigint
);

CREATE SEQUENCE face_ids;

CREATE TABLE faces (
    id bigint PRIMARY KEY,
    image_id bigint NOT NULL REFERENCES face_scans (image_id) ON DELETE CASCADE,
    -- x, y, width, height in the upright image's pixels.
    box real[] NOT NULL,
    -- Five (x, y) points, flattened.
    landmarks real[] NOT NULL,
    score real NOT NULL,
    embedding vector NOT NULL,
    person_id bigint REFERENCES persons (id) ON DELETE SET NULL,
    pinned boolean NOT NULL DEFAULT false
);
ALTER TABLE faces ALTER COLUMN embedding SET STORAGE PLAIN;
CREATE INDEX faces_by_image ON faces (image_id);
CREATE INDEX faces_by_person ON faces (person_id);

CREATE TABLE face_corrections (
    face_id bigint NOT NULL REFERENCES faces (id) ON DELETE CASCADE,
    person_id bigint NOT NULL REFERENCES persons (id) ON DELETE CASCADE,
    PRIMARY KEY (face_id, person_id)
);
