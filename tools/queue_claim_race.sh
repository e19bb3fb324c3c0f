#!/usr/bin/env bash
# Reproduces, in SQL alone, the race that once handed one job of the PostgreSQL work queue to
# two processes, and shows the claim clipdex uses now does not. Sessions of psql stand for
# processes: each registers a new presence lock before every claim (a process starting, as
# many do at once when a worker pool or several `index` runs start), claims two jobs and
# finishes them. The old claim judged holders alive from `pg_locks`, which PostgreSQL reads
# once per statement (a hashed subplan, kept across the re-checks of rows that a concurrent
# claim changed), so a holder that registered and claimed during another claim statement
# looked gone to it. The new claim takes a holder's presence lock instead, which succeeds only
# once the holder's session has ended.
#
#   tools/queue_claim_race.sh postgres://clipdex:clipdex@localhost:5432/postgres [ROUNDS]
#
# Prints, per claim and round, how many of 1500 jobs were claimed twice. Measured on
# PostgreSQL 15 (2 busy cores): the old claim gave jobs twice in 3 of 10 rounds, the new one in
# none of 10. The table is analysed after each fill: without statistics PostgreSQL plans the
# old claim otherwise, and it did not fail in 16 rounds.
set -euo pipefail
base=${1:?give a PostgreSQL URL whose user may create databases}
rounds=${2:-5}
db=clipdex_claim_race_$$
work=$(mktemp -d)
trap 'psql "$base" -qc "DROP DATABASE IF EXISTS $db" >/dev/null 2>&1; rm -rf "$work"' EXIT
psql "$base" -qc "CREATE DATABASE $db"
# Without TLS: its round trips would leave fewer claims running at once.
url=$(python3 -c 'import sys, urllib.parse as u; p = u.urlsplit(sys.argv[1]); print(p._replace(path="/" + sys.argv[2], query="sslmode=disable").geturl())' "$base" "$db")
psql "$url" -q <<'SQL'
CREATE TABLE jobs (path bytea PRIMARY KEY, size bigint NOT NULL, mtime_ns bigint NOT NULL,
                   worker text, worker_key integer, lease_until timestamptz);
CREATE INDEX jobs_by_lease ON jobs (lease_until);
SQL
space=2003792491 # WORKER_LOCK_SPACE, `work` in ASCII
old_free="(lease_until IS NULL OR lease_until < now() OR NOT EXISTS (SELECT 1 FROM pg_locks l
  WHERE l.locktype = 'advisory' AND l.granted AND l.objsubid = 2 AND l.classid = $space::oid
  AND l.objid::bigint = jobs.worker_key
  AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())))"
new_free="(lease_until IS NULL OR lease_until < now() OR pg_try_advisory_xact_lock($space, worker_key))"
script() { # claim worker first-key
  echo '\set QUIET on'
  echo '\pset tuples_only on'
  echo '\pset format unaligned'
  for i in $(seq 0 199); do
    key=$(($3 + i))
    echo "SELECT pg_advisory_unlock_all(); SELECT pg_advisory_lock($space, $key);"
    if [ "$1" = old ]; then
      echo "UPDATE jobs SET worker = '$2', worker_key = $key, lease_until = now() + make_interval(secs => 600)
            WHERE path IN (SELECT path FROM jobs WHERE $old_free ORDER BY path LIMIT 2 FOR UPDATE SKIP LOCKED)
            RETURNING encode(path, 'escape');"
    else
      echo "WITH picked AS (SELECT path FROM jobs WHERE $new_free ORDER BY path LIMIT 2 FOR UPDATE SKIP LOCKED)
            UPDATE jobs SET worker = '$2', worker_key = $key, lease_until = now() + make_interval(secs => 600)
            FROM picked WHERE jobs.path = picked.path RETURNING encode(jobs.path, 'escape');"
    fi
    echo "DELETE FROM jobs WHERE worker = '$2' AND worker_key = $key AND lease_until > now();"
  done
}
for claim in old new; do
  for w in $(seq 1 12); do script "$claim" "w$w" $((100000 * w)) > "$work/$claim-$w.sql"; done
  for round in $(seq 1 "$rounds"); do
    psql "$url" -qc "DELETE FROM jobs; INSERT INTO jobs (path, size, mtime_ns)
      SELECT convert_to(lpad(i::text, 5, '0'), 'UTF8'), 1, 1 FROM generate_series(1, 1500) i; ANALYZE jobs"
    for w in $(seq 1 12); do psql "$url" -f "$work/$claim-$w.sql" > "$work/out-$w.txt" 2>&1 & done
    wait
    twice=$(cat "$work"/out-*.txt | grep -v '^$' | sort | uniq -d | wc -l)
    echo "$claim claim, round $round: $twice of 1500 jobs claimed twice"
  done
done
