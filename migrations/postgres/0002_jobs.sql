-- Schema 2: the indexing work that several processes share. A scanner (the one process that
-- holds a root's advisory lock) queues the new and changed files it finds; every indexing
-- process claims batches of them with a lease (FOR UPDATE SKIP LOCKED), so each file is read
-- and embedded once. A claim ends with its lease, or at once when its process is gone: every
-- claiming process holds a session advisory lock (worker_key) while it lives, and a claim whose
-- lock is no longer held is free. The result of an ended claim is discarded (the job is
-- finished only by its live lease holder).
CREATE TABLE jobs (
    path bytea PRIMARY KEY,
    size bigint NOT NULL,
    mtime_ns bigint NOT NULL,
    worker text,
    worker_key integer,
    lease_until timestamptz
);
CREATE INDEX jobs_by_lease ON jobs (lease_until);
