-- Schema 3: videos. A video is a row of `images` (its record has a "video" member and `video`
-- is true) whose vector is the mean of its sampled frames' vectors; the frames' own vectors are
-- rows of `frames`, one per frame and vector generation, as `vectors` (the current generation
-- answers searches, the next one is what `reindex` writes). They go with their video.

ALTER TABLE images ADD COLUMN video boolean NOT NULL DEFAULT false;

CREATE TABLE frames (
    generation integer NOT NULL,
    image_id bigint NOT NULL REFERENCES images (id) ON DELETE CASCADE,
    -- The frame's place among the video's sampled frames, from 0, in time order.
    idx integer NOT NULL,
    -- Seconds from the start of the video.
    time real NOT NULL,
    embedding vector NOT NULL,
    PRIMARY KEY (generation, image_id, idx)
);
ALTER TABLE frames ALTER COLUMN embedding SET STORAGE PLAIN;
CREATE INDEX frames_by_image ON frames (image_id);
