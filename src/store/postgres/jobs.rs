//! The shared work queue in PostgreSQL (`jobs`; see `migrations/postgres/0002_jobs.sql`).
//! Scanning a root is serialised by a session advisory lock held on a connection of its own
//! (the server drops it with the connection when a process dies).

use std::path::{Path, PathBuf};
use std::time::Duration;

use postgres::Client;

use super::{PgStore, i64_of, path_from_key, path_key, u64_of};
use crate::error::Result;
use crate::store::{Job, JobCounts, RootLock, WorkQueue};

/// The first key of the two-key advisory locks that guard roots (`root` in ASCII).
const ROOT_LOCK_SPACE: i32 = 0x726f_6f74;

/// The first key of the advisory locks that say a claiming process is alive (`work`).
const WORKER_LOCK_SPACE: i32 = 0x776f_726b;

/// SQL: whether some session holds a two-key advisory lock `(space, key)` of this database
/// whose second key (`pg_locks.objid`, as bigint) satisfies `key_matches`.
fn advisory_held(space: i32, key_matches: &str) -> String {
    format!(
        "EXISTS (SELECT 1 FROM pg_locks l WHERE l.locktype = 'advisory' AND l.granted AND l.objsubid = 2
           AND l.classid = {space}::oid AND l.objid::bigint {key_matches}
           AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database()))"
    )
}

/// A claim is free when its lease ended or its process is gone (its presence lock released),
/// as `pg_locks` shows it (for counting; [`claimable`] decides claims).
fn free() -> String {
    format!(
        "(lease_until IS NULL OR lease_until < now() OR NOT {})",
        advisory_held(WORKER_LOCK_SPACE, "= jobs.worker_key")
    )
}

/// A root's lock: the connection that holds it. Closing the connection releases it.
struct HeldRoot(#[allow(dead_code)] Client);

/// A positive 31-bit advisory-lock key derived from `bytes` (positive, so that it reads back
/// unchanged from `pg_locks`' unsigned `objid`).
fn lock_key(bytes: &[u8]) -> i32 {
    let h = blake3::hash(bytes);
    (u32::from_le_bytes(h.as_bytes()[..4].try_into().expect("4 bytes")) & 0x7fff_ffff) as i32
}

impl PgStore {
    /// For each of `paths`, whether `statement` (over [`LIVE_LEASE`], returning `path`) gave it
    /// back: whether `worker` holds its job's lease.
    fn live_leases(&self, statement: &str, worker: &str, paths: &[&Path]) -> Result<Vec<bool>> {
        if paths.is_empty() {
            return Ok(Vec::new());
        }
        let key = self.presence()?;
        let keys: Vec<Vec<u8>> = paths.iter().map(|p| path_key(p)).collect();
        let leased: std::collections::HashSet<Vec<u8>> =
            self.query(statement, &[&keys, &worker, &key])?.iter().map(|r| r.get(0)).collect();
        Ok(keys.iter().map(|k| leased.contains(k)).collect())
    }

    /// Takes the session advisory lock `(space, key)` on a connection of its own, which holds
    /// it until dropped (or until the process dies); `None` while another session holds it.
    fn lock_on_own_connection(&self, space: i32, key: i32) -> Result<Option<Client>> {
        let mut client = self.connect()?;
        let locked: bool = client
            .query_one("SELECT pg_try_advisory_lock($1, $2)", &[&space, &key])
            .map_err(|e| self.err(super::db_message(&e)))?
            .get(0);
        Ok(locked.then_some(client))
    }

    /// This process's presence key, holding its lock on a connection of its own from the first
    /// claim on (the server releases it when the process dies).
    fn presence(&self) -> Result<i32> {
        let mut held = self.presence.lock().expect("presence lock");
        if let Some((_, key)) = held.as_ref() {
            return Ok(*key);
        }
        for _ in 0..16 {
            let seed = format!("{:?}{}", std::time::SystemTime::now(), std::process::id());
            let key = lock_key(seed.as_bytes());
            if let Some(client) = self.lock_on_own_connection(WORKER_LOCK_SPACE, key)? {
                *held = Some((client, key));
                return Ok(key);
            }
        }
        Err(self.err("cannot register this process with the work queue"))
    }
}

impl WorkQueue for PgStore {
    fn lock_root(&self, root: &Path) -> Result<Option<RootLock>> {
        let held = self.lock_on_own_connection(ROOT_LOCK_SPACE, lock_key(&path_key(root)))?;
        Ok(held.map(|client| Box::new(HeldRoot(client)) as RootLock))
    }

    fn being_scanned(&self, roots: &[PathBuf]) -> Result<bool> {
        // Read from pg_locks on a pooled connection: taking each lock to test it would open a
        // connection (and a TLS session) per root on every poll.
        let keys: Vec<i64> = roots.iter().map(|r| i64::from(lock_key(&path_key(r)))).collect();
        let row = self.query_opt(&format!("SELECT {}", advisory_held(ROOT_LOCK_SPACE, "= ANY($1)")), &[&keys])?;
        Ok(row.is_some_and(|r| r.get(0)))
    }

    fn enqueue(&self, jobs: &[Job]) -> Result<()> {
        for chunk in jobs.chunks(super::PAGE as usize) {
            let paths: Vec<Vec<u8>> = chunk.iter().map(|(p, _, _)| path_key(p)).collect();
            let sizes: Vec<i64> = chunk.iter().map(|(_, s, _)| i64_of(*s)).collect();
            let mtimes: Vec<i64> = chunk.iter().map(|(_, _, m)| *m).collect();
            // A file that changed again since it was queued gets its new state and loses any
            // claim on the old one.
            self.execute(
                "INSERT INTO jobs (path, size, mtime_ns)
                 SELECT * FROM unnest($1::bytea[], $2::bigint[], $3::bigint[])
                 ON CONFLICT (path) DO UPDATE SET size = EXCLUDED.size, mtime_ns = EXCLUDED.mtime_ns,
                     worker = NULL, lease_until = NULL
                 WHERE jobs.size <> EXCLUDED.size OR jobs.mtime_ns <> EXCLUDED.mtime_ns",
                &[&paths, &sizes, &mtimes],
            )?;
        }
        Ok(())
    }

    fn claim(&self, worker: &str, n: usize, lease: Duration) -> Result<Vec<Job>> {
        let key = self.presence()?;
        let rows = self.query(
            &format!(
                "WITH picked AS (
                     SELECT path FROM jobs WHERE {} ORDER BY path LIMIT $3 FOR UPDATE SKIP LOCKED
                 )
                 UPDATE jobs SET worker = $1, worker_key = $4, lease_until = now() + make_interval(secs => $2)
                 FROM picked WHERE jobs.path = picked.path
                 RETURNING jobs.path, jobs.size, jobs.mtime_ns",
                claimable()
            ),
            &[&worker, &lease.as_secs_f64(), &(n as i64), &key],
        )?;
        let mut jobs: Vec<Job> =
            rows.iter().map(|r| (path_from_key(&r.get::<_, Vec<u8>>(0)), u64_of(r.get(1)), r.get(2))).collect();
        jobs.sort();
        Ok(jobs)
    }

    fn held(&self, worker: &str, paths: &[&Path]) -> Result<Vec<bool>> {
        self.live_leases(&format!("SELECT path FROM jobs WHERE {LIVE_LEASE}"), worker, paths)
    }

    fn finish(&self, worker: &str, paths: &[&Path]) -> Result<Vec<bool>> {
        self.live_leases(&format!("DELETE FROM jobs WHERE {LIVE_LEASE} RETURNING path"), worker, paths)
    }

    fn job_counts(&self) -> Result<JobCounts> {
        let row = self.query_opt(
            &format!(
                "SELECT count(*) FILTER (WHERE {free}), count(*) FILTER (WHERE NOT {free}),
                        coalesce(array_agg(DISTINCT worker ORDER BY worker) FILTER (WHERE NOT {free}), '{{}}')
                 FROM jobs",
                free = free()
            ),
            &[],
        )?;
        Ok(match row {
            Some(r) => JobCounts { pending: u64_of(r.get(0)), leased: u64_of(r.get(1)), workers: r.get(2) },
            None => JobCounts::default(),
        })
    }
}

/// SQL: whether a job may be claimed, judged on the row as locked: never claimed, its lease
/// ended, or its holder gone, which taking the holder's presence lock proves (it succeeds only
/// once the holder's session has ended; held to the end of the claim, so no new process can
/// take that key meanwhile).
///
/// Not a look at `pg_locks`: PostgreSQL reads that view once per statement (a hashed subplan,
/// kept across the re-checks of rows locked after a concurrent claim), so a process that
/// registered and claimed a job while another's claim statement ran looked gone to that
/// statement, and both processes got the job.
fn claimable() -> String {
    format!(
        "(lease_until IS NULL OR lease_until < now() OR pg_try_advisory_xact_lock({WORKER_LOCK_SPACE}, worker_key))"
    )
}

/// The jobs among `$1` (paths) that worker `$2` (with presence key `$3`) holds a live lease of.
const LIVE_LEASE: &str = "path = ANY($1) AND worker = $2 AND worker_key = $3 AND lease_until > now()";
