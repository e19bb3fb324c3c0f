-- Schema 6: places. The GeoNames id of the city nearest to an image's GPS position (the place
-- data built into clipdex, src/places.rs), so that `place:` filters are SQL predicates of the
-- vector search: 0 for a position with no city within reach, NULL for an image without GPS.
-- Rows stored before this step are geocoded by the migration itself (in clipdex, not in SQL).

ALTER TABLE images ADD COLUMN place bigint;
