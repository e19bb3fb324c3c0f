//! The PostgreSQL backend, for a library that outgrows one machine: every record in a
//! PostgreSQL database with pgvector, shared by any number of clipdex processes.
//!
//! Each write that touches several rows is one SERIALIZABLE transaction, retried when it
//! conflicts with a concurrent one, so concurrent indexers behave as if they ran one after the
//! other; a crash leaves all of a transaction or none. An image's files are the rows of `paths`
//! that point at it (no reference count to keep in step), and deleting an image cascades to its
//! vectors, tags, caption and cached vectors. The schema is in `migrations/postgres/`, applied
//! on connect under an advisory lock, so concurrent first connections do not race.

mod captions;
mod faces;
mod import;
mod jobs;
mod model_vectors;
mod reindex;
pub use import::ImportReport;
mod search;
mod tags;
mod texts;
mod tls;

use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Duration;

use postgres::error::SqlState;
use postgres::{Client, IsolationLevel, NoTls, Row, Transaction};
use rustls::CertificateError;

use super::location::redact;
use super::sled::keys::{path_from_key, path_key};
use super::{
    Backend, FIRST_DATE, Failure, FrameVector, ImageId, ImageRecord, LAST_DATE, PathEntry, Records, StoreCounts,
    UNDATED_MONTH,
};
use crate::error::{Error, Result};

/// The schema version this build writes.
pub const SCHEMA_VERSION: u32 = 7;

/// The schema steps, in version order: (version, description, SQL).
const MIGRATIONS: &[(u32, &str, &str)] = &[
    (1, "initial schema", include_str!("../../../migrations/postgres/0001_initial.sql")),
    (2, "embedding jobs", include_str!("../../../migrations/postgres/0002_jobs.sql")),
    (3, "videos", include_str!("../../../migrations/postgres/0003_videos.sql")),
    (4, "text in photos", include_str!("../../../migrations/postgres/0004_texts.sql")),
    (5, "faces and people", include_str!("../../../migrations/postgres/0005_faces.sql")),
    (6, "places", include_str!("../../../migrations/postgres/0006_places.sql")),
    (7, "typo tolerance for the text in photos", include_str!("../../../migrations/postgres/0007_text_typos.sql")),
];

/// The advisory lock key that serialises migrations (`clipdex` in ASCII).
const MIGRATION_LOCK: i64 = 0x0063_6c69_7064_6578;

/// Rows fetched per round trip when iterating over every vector, record or caption.
const PAGE: i64 = 1024;

/// The current vector generation, inside a query.
const CURRENT: &str = "(SELECT value::integer FROM meta WHERE key = 'vectors_generation')";

/// A library in a PostgreSQL database.
pub struct PgStore {
    /// The URL without its password, for messages.
    shown: String,
    config: postgres::Config,
    /// Idle connections; a call takes one (or opens one) and puts it back when done.
    idle: Mutex<Vec<Client>>,
    /// The connection holding this process's presence lock in the work queue, and its key.
    presence: Mutex<Option<(Client, i32)>>,
    /// TLS as the URL's `sslmode` asks; `None`: `sslmode=disable`.
    tls: Option<tls::MakeRustls>,
}

/// Why a transaction's body stopped: a database error (retried when it is a conflict with a
/// concurrent transaction), or a refusal that no retry changes.
enum TxError {
    Db(postgres::Error),
    Abort(String),
}

impl From<postgres::Error> for TxError {
    fn from(e: postgres::Error) -> Self {
        TxError::Db(e)
    }
}

type TxResult<T> = std::result::Result<T, TxError>;

/// Whether an error means that a concurrent transaction got in the way (a serialization
/// failure, a deadlock, or a key that a concurrent transaction added or removed meanwhile).
fn is_conflict(e: &postgres::Error) -> bool {
    e.code().is_some_and(|c| {
        [
            SqlState::T_R_SERIALIZATION_FAILURE,
            SqlState::T_R_DEADLOCK_DETECTED,
            SqlState::UNIQUE_VIOLATION,
            SqlState::FOREIGN_KEY_VIOLATION,
        ]
        .contains(c)
    })
}

/// How many times a conflicting transaction is tried before the conflict is reported.
const TX_ATTEMPTS: u32 = 30;

fn i64_of(v: u64) -> i64 {
    v as i64
}

fn u64_of(v: i64) -> u64 {
    v as u64
}

fn id_of(row: &Row, column: usize) -> ImageId {
    u64_of(row.get(column))
}

/// A borrowed connection, back to the idle list when dropped (unless it broke).
struct Conn<'a> {
    store: &'a PgStore,
    client: Option<Client>,
}

impl std::ops::Deref for Conn<'_> {
    type Target = Client;

    fn deref(&self) -> &Client {
        self.client.as_ref().expect("connection held")
    }
}

impl std::ops::DerefMut for Conn<'_> {
    fn deref_mut(&mut self) -> &mut Client {
        self.client.as_mut().expect("connection held")
    }
}

impl Drop for Conn<'_> {
    fn drop(&mut self) {
        if let Some(client) = self.client.take()
            && !client.is_closed()
        {
            self.store.idle.lock().expect("connection list lock").push(client);
        }
    }
}

impl Drop for PgStore {
    /// Closing a client blocks on the client's own runtime, which panics on a thread that
    /// drives another one (an async caller dropping the library), so the connections are
    /// closed on a thread of their own.
    fn drop(&mut self) {
        let idle = std::mem::take(self.idle.get_mut().unwrap_or_else(|e| e.into_inner()));
        let presence = self.presence.get_mut().unwrap_or_else(|e| e.into_inner()).take();
        if idle.is_empty() && presence.is_none() {
            return;
        }
        let _ = std::thread::spawn(move || drop((idle, presence))).join();
    }
}

impl PgStore {
    /// Connects to the database at `url` and brings its schema up to date.
    pub fn open(url: &str) -> Result<Self> {
        let shown = redact(url);
        let invalid = |e: String| Error::Invalid(format!("--db {shown}: {e}"));
        let tls_url = tls::split_tls_params(url).map_err(invalid)?;
        let mut config: postgres::Config =
            tls_url.url.parse().map_err(|e| invalid(format!("not a valid PostgreSQL URL: {e}")))?;
        config.ssl_mode(tls_url.mode.on_the_wire());
        let tls = tls::connector(tls_url.mode, tls_url.root_cert.as_deref()).map_err(invalid)?;
        if config.get_connect_timeout().is_none() {
            config.connect_timeout(Duration::from_secs(10));
        }
        if config.get_application_name().is_none() {
            config.application_name("clipdex");
        }
        let store = PgStore { shown, config, idle: Mutex::new(Vec::new()), presence: Mutex::new(None), tls };
        let mut conn = store.conn()?;
        store.migrate(&mut conn)?;
        drop(conn);
        Ok(store)
    }

    fn err(&self, e: impl std::fmt::Display) -> Error {
        Error::Store(format!("database {}: {e}", self.shown))
    }

    /// A connection from the idle list, or a new one.
    fn conn(&self) -> Result<Conn<'_>> {
        let idle = self.idle.lock().expect("connection list lock").pop();
        let client = match idle {
            Some(c) => c,
            None => self.connect()?,
        };
        Ok(Conn { store: self, client: Some(client) })
    }

    /// A new connection, encrypted as the URL asks.
    fn connect(&self) -> Result<Client> {
        match &self.tls {
            Some(tls) => self.config.connect(tls.clone()),
            None => self.config.connect(NoTls),
        }
        .map_err(|e| self.connect_error(&e))
    }

    /// What failing to connect means, and what to do.
    fn connect_error(&self, e: &postgres::Error) -> Error {
        let hint = match e.code() {
            Some(c) if *c == SqlState::INVALID_CATALOG_NAME => {
                let name = self.config.get_dbname().unwrap_or("NAME");
                let user = self.config.get_user().unwrap_or("USER");
                format!("; create it first: createdb --owner {user} {name}")
            }
            Some(c) if *c == SqlState::INVALID_PASSWORD || *c == SqlState::INVALID_AUTHORIZATION_SPECIFICATION => {
                "; check the user and password in the URL".to_string()
            }
            Some(_) => String::new(),
            None => match rustls_error(e) {
                Some(rustls::Error::InvalidCertificate(
                    CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
                )) => "; the server's certificate names another host: connect by the name it holds, or check \
                       only the authority with sslmode=verify-ca"
                    .to_string(),
                Some(rustls::Error::InvalidCertificate(_)) => "; the server's certificate is not signed by an \
                                                               authority in sslrootcert (sslmode=require encrypts \
                                                               without checking it)"
                    .to_string(),
                _ if sources(e).any(|s| s.to_string().contains("server does not support TLS")) => {
                    "; the server does not offer TLS: turn ssl on in postgresql.conf, or connect with \
                     sslmode=prefer"
                        .to_string()
                }
                _ => "; is the server running, and does it listen there?".to_string(),
            },
        };
        self.err(format!("cannot connect: {}{hint}", db_message(e)))
    }

    /// Applies every schema step above the recorded version, under an advisory lock held to
    /// the end of the transaction, so that processes connecting at once apply each step once.
    fn migrate(&self, client: &mut Client) -> Result<()> {
        let mut run = || -> std::result::Result<(), TxError> {
            let mut tx = client.transaction()?;
            tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK])?;
            tx.batch_execute(
                "CREATE TABLE IF NOT EXISTS schema_migrations (
                     version integer PRIMARY KEY,
                     description text NOT NULL,
                     applied_at timestamptz NOT NULL DEFAULT now()
                 )",
            )?;
            let version: i32 = tx.query_one("SELECT coalesce(max(version), 0) FROM schema_migrations", &[])?.get(0);
            if version as u32 > SCHEMA_VERSION {
                return Err(TxError::Abort(format!(
                    "schema version {version} is newer than this clipdex understands ({SCHEMA_VERSION}); upgrade clipdex"
                )));
            }
            for &(v, description, sql) in MIGRATIONS.iter().filter(|m| m.0 > version as u32) {
                tracing::info!("migrating {} to schema {v}: {description}", self.shown);
                tx.batch_execute(sql)?;
                tx.execute(
                    "INSERT INTO schema_migrations (version, description) VALUES ($1, $2)",
                    &[&(v as i32), &description],
                )?;
                if v == 1 {
                    tx.execute("INSERT INTO meta (key, value) VALUES ('vectors_generation', '0')", &[])?;
                }
                if v == 6 {
                    // The images stored before: their place from their record's GPS position.
                    let rows = tx.query(
                        "SELECT id, record FROM images WHERE jsonb_typeof(record::jsonb -> 'gps') = 'array'",
                        &[],
                    )?;
                    for row in rows {
                        let record: String = row.get(1);
                        let place = serde_json::from_str::<ImageRecord>(&record).ok().and_then(|r| r.place_code());
                        tx.execute("UPDATE images SET place = $1 WHERE id = $2", &[&place, &row.get::<_, i64>(0)])?;
                    }
                }
            }
            tx.commit()?;
            Ok(())
        };
        run().map_err(|e| match e {
            TxError::Abort(msg) => self.err(msg),
            TxError::Db(e) if e.code() == Some(&SqlState::INSUFFICIENT_PRIVILEGE) => self.err(format!(
                "migration failed: {}; a superuser must enable pgvector (and pg_trgm) in this database once: \
                 CREATE EXTENSION vector; CREATE EXTENSION pg_trgm;",
                db_message(&e)
            )),
            TxError::Db(e) if e.code() == Some(&SqlState::UNDEFINED_FILE) => self.err(format!(
                "migration failed: {}; the server needs the pgvector extension installed \
                 (Debian: postgresql-NN-pgvector) and pg_trgm (part of the PostgreSQL server package)",
                db_message(&e)
            )),
            TxError::Db(e) => self.err(format!("migration failed: {}", db_message(&e))),
        })
    }

    /// Runs `f` in a SERIALIZABLE transaction, again from the start when it conflicts with a
    /// concurrent one.
    fn tx<T>(&self, what: &str, mut f: impl FnMut(&mut Transaction) -> TxResult<T>) -> Result<T> {
        let mut conn = self.conn()?;
        let mut attempt = 0;
        loop {
            attempt += 1;
            let outcome = (|| {
                let mut tx = conn.build_transaction().isolation_level(IsolationLevel::Serializable).start()?;
                let value = f(&mut tx)?;
                tx.commit()?;
                Ok(value)
            })();
            match outcome {
                Ok(v) => return Ok(v),
                Err(TxError::Db(e)) if is_conflict(&e) && attempt < TX_ATTEMPTS => {
                    std::thread::sleep(Duration::from_millis(u64::from(attempt.min(10)) * 3));
                }
                Err(TxError::Db(e)) => return Err(self.err(format!("{what}: {}", db_message(&e)))),
                Err(TxError::Abort(msg)) => return Err(self.err(format!("{what}: {msg}"))),
            }
        }
    }

    /// One statement's rows, outside any transaction of ours.
    fn query(&self, sql: &str, params: &[&(dyn postgres::types::ToSql + Sync)]) -> Result<Vec<Row>> {
        self.conn()?.query(sql, params).map_err(|e| self.err(db_message(&e)))
    }

    /// One statement's single row, if any.
    fn query_opt(&self, sql: &str, params: &[&(dyn postgres::types::ToSql + Sync)]) -> Result<Option<Row>> {
        self.conn()?.query_opt(sql, params).map_err(|e| self.err(db_message(&e)))
    }

    /// One statement, returning how many rows it touched.
    fn execute(&self, sql: &str, params: &[&(dyn postgres::types::ToSql + Sync)]) -> Result<u64> {
        self.conn()?.execute(sql, params).map_err(|e| self.err(db_message(&e)))
    }

    fn meta(&self, key: &str) -> Result<Option<String>> {
        Ok(self.query_opt("SELECT value FROM meta WHERE key = $1", &[&key])?.map(|r| r.get(0)))
    }

    fn set_meta(&self, key: &str, value: &str) -> Result<()> {
        self.execute(
            "INSERT INTO meta (key, value) VALUES ($1, $2) ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value",
            &[&key, &value],
        )?;
        Ok(())
    }

    /// A sequence's position (0 before its first use).
    fn sequence_value(&self, name: &str) -> Result<u64> {
        let row = self.query_opt(&format!("SELECT last_value, is_called FROM {name}"), &[])?;
        Ok(row.map(|r| if r.get::<_, bool>(1) { u64_of(r.get(0)) } else { 0 }).unwrap_or(0))
    }

    /// Every row of a keyed table in key order, a page at a time: `sql` takes the last key
    /// seen as `$1` and a page size as `$2`, and returns the key first.
    fn pages<'a, T: 'a>(&'a self, sql: &'static str, read: impl Fn(&Self, &Row) -> Result<T> + 'a) -> Records<'a, T> {
        let mut after: i64 = -1;
        let mut page: std::vec::IntoIter<Row> = Vec::new().into_iter();
        let mut done = false;
        Box::new(std::iter::from_fn(move || {
            loop {
                if let Some(row) = page.next() {
                    let id: i64 = row.get(0);
                    after = id;
                    return Some(read(self, &row).map(|v| (u64_of(id), v)));
                }
                if done {
                    return None;
                }
                match self.query(sql, &[&after, &PAGE]) {
                    Ok(rows) => {
                        done = (rows.len() as i64) < PAGE;
                        page = rows.into_iter();
                    }
                    Err(e) => {
                        done = true;
                        return Some(Err(e));
                    }
                }
            }
        }))
    }

    fn parse_json<T: serde::de::DeserializeOwned>(&self, what: &str, text: &str) -> Result<T> {
        serde_json::from_str(text).map_err(|e| self.err(format!("corrupt {what} record: {e}")))
    }
}

/// The message of a database error (PostgreSQL's own words when the server sent some).
/// The errors under `e`, nearest first.
fn sources(e: &postgres::Error) -> impl Iterator<Item = &(dyn std::error::Error + 'static)> {
    std::iter::successors(std::error::Error::source(e), |s| s.source())
}

/// rustls' own error when a TLS handshake failed. It comes wrapped in the `io::Error` the
/// connector returns, whose `source` skips the error it wraps, so that is unwrapped here.
fn rustls_error(e: &postgres::Error) -> Option<&rustls::Error> {
    sources(e).find_map(|s| {
        let wrapped = s.downcast_ref::<std::io::Error>().and_then(|io| io.get_ref());
        wrapped.and_then(|w| w.downcast_ref::<rustls::Error>()).or_else(|| s.downcast_ref::<rustls::Error>())
    })
}

fn db_message(e: &postgres::Error) -> String {
    match e.as_db_error() {
        Some(db) if *db.code() == SqlState::ADMIN_SHUTDOWN || *db.code() == SqlState::CRASH_SHUTDOWN => format!(
            "{} (the server ended the session: nothing half-written is kept; run the command again when it is back)",
            db.message()
        ),
        Some(db) => db.message().to_string(),
        None if e.is_closed() => format!(
            "{e}: the connection to the server was lost (nothing half-written is kept; run the command again when it is back)"
        ),
        None => e.to_string(),
    }
}

/// The first key above every key that starts with `prefix` (`None`: there is none).
/// An image's month as the folder store names it ([`super::month_of`]).
fn month_sql() -> String {
    format!(
        "CASE WHEN date BETWEEN {FIRST_DATE} AND {LAST_DATE} \
         THEN to_char(to_timestamp(date) AT TIME ZONE 'UTC', 'YYYY-MM') ELSE '{UNDATED_MONTH}' END"
    )
}

/// The images with a file at or under a folder: parameter `$n` the folder's key, `$n+1` and
/// `$n+2` the range of the keys under it (see [`folder_keys`]).
fn under_sql(n: usize) -> String {
    let (start, end) = (n + 1, n + 2);
    format!(
        "EXISTS (SELECT 1 FROM paths p WHERE p.image_id = images.id
         AND (p.path = ${n} OR (p.path >= ${start} AND (${end}::bytea IS NULL OR p.path < ${end}))))"
    )
}

/// A folder's key, and the range of the keys of the paths under it (`folder/` up to the next
/// prefix), as [`Path::starts_with`] compares components: `/a/b` holds `/a/b/c`, not `/a/bc`.
fn folder_keys(folder: &Path) -> (Vec<u8>, Vec<u8>, Option<Vec<u8>>) {
    let folder: PathBuf = folder.components().collect();
    let exact = path_key(&folder);
    let mut start = exact.clone();
    if start.last() != Some(&b'/') {
        start.push(b'/');
    }
    let end = prefix_end(&start);
    (exact, start, end)
}

fn prefix_end(prefix: &[u8]) -> Option<Vec<u8>> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < u8::MAX {
            end.push(last + 1);
            return Some(end);
        }
    }
    None
}

fn path_entry_of(row: &Row) -> PathEntry {
    PathEntry { id: id_of(row, 0), size: u64_of(row.get(1)), mtime_ns: row.get(2) }
}

/// Inside a transaction: removes `path`'s mapping, and the image (with, by cascade, its
/// vectors, tags and caption) when no other path holds it. Returns the removed mapping.
/// Inside a transaction: stores the frames of video `id` in generation `generation` (an SQL
/// expression), replacing what that generation held (nothing, for a `fresh` image).
fn tx_put_frames(tx: &mut Transaction, generation: &str, id: i64, frames: &[FrameVector], fresh: bool) -> TxResult<()> {
    if !fresh {
        tx.execute(&format!("DELETE FROM frames WHERE generation = {generation} AND image_id = $1"), &[&id])?;
    }
    if frames.is_empty() {
        return Ok(());
    }
    let insert = tx.prepare(&format!(
        "INSERT INTO frames (generation, image_id, idx, time, embedding) VALUES ({generation}, $1, $2, $3, $4::real[]::vector)"
    ))?;
    for (i, f) in frames.iter().enumerate() {
        tx.execute(&insert, &[&id, &(i as i32), &f.time, &f.vector])?;
    }
    Ok(())
}

fn tx_unlink(tx: &mut Transaction, path: &[u8]) -> TxResult<Option<PathEntry>> {
    let Some(row) = tx.query_opt("DELETE FROM paths WHERE path = $1 RETURNING image_id, size, mtime_ns", &[&path])?
    else {
        return Ok(None);
    };
    let entry = path_entry_of(&row);
    tx.execute(
        "DELETE FROM images WHERE id = $1 AND NOT EXISTS (SELECT 1 FROM paths WHERE image_id = $1)",
        &[&i64_of(entry.id)],
    )?;
    Ok(Some(entry))
}

/// Inside a transaction: points `path` at `entry`. When the path already points at the same
/// image (a touched file, a file restored from a backup) only its size and time change.
fn tx_relink(tx: &mut Transaction, path: &[u8], entry: &PathEntry) -> TxResult<()> {
    let current = tx.query_opt("SELECT image_id FROM paths WHERE path = $1", &[&path])?;
    if let Some(row) = current {
        if id_of(&row, 0) == entry.id {
            tx.execute(
                "UPDATE paths SET size = $2, mtime_ns = $3 WHERE path = $1",
                &[&path, &i64_of(entry.size), &entry.mtime_ns],
            )?;
            return Ok(());
        }
        tx_unlink(tx, path)?;
    }
    tx.execute(
        "INSERT INTO paths (path, image_id, size, mtime_ns) VALUES ($1, $2, $3, $4)",
        &[&path, &i64_of(entry.id), &i64_of(entry.size), &entry.mtime_ns],
    )?;
    Ok(())
}

/// Inside a transaction: moves the change counter (in-memory indexes are stale).
fn tx_changed(tx: &mut Transaction) -> TxResult<()> {
    tx.execute("SELECT nextval('changes')", &[])?;
    Ok(())
}

impl Backend for PgStore {
    fn schema_version(&self) -> Result<u32> {
        let row = self.query_opt("SELECT coalesce(max(version), 0) FROM schema_migrations", &[])?;
        Ok(row.map(|r| r.get::<_, i32>(0) as u32).unwrap_or(0))
    }

    fn setting_json(&self, key: &str) -> Result<Option<Vec<u8>>> {
        Ok(self.meta(key)?.map(String::into_bytes))
    }

    fn set_setting_json(&self, key: &str, json: &[u8]) -> Result<()> {
        self.set_meta(key, &String::from_utf8_lossy(json))
    }

    fn model(&self) -> Result<Option<(String, usize)>> {
        Ok(match (self.meta("model")?, self.meta("dim")?) {
            (Some(name), Some(dim)) => Some((name, dim.parse().map_err(|_| self.err("corrupt dim"))?)),
            _ => None,
        })
    }

    fn set_model(&self, name: &str, dim: usize) -> Result<()> {
        self.tx("record the model", |tx| {
            for (key, value) in [("model", name.to_string()), ("dim", dim.to_string())] {
                tx.execute(
                    "INSERT INTO meta (key, value) VALUES ($1, $2) ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value",
                    &[&key, &value],
                )?;
            }
            Ok(())
        })
    }

    fn rename_model(&self, name: &str) -> Result<()> {
        self.set_meta("model", name)
    }

    fn model_fingerprint(&self) -> Result<Option<String>> {
        self.meta("model_fingerprint")
    }

    fn set_model_fingerprint(&self, fingerprint: Option<&str>) -> Result<()> {
        match fingerprint {
            Some(f) => self.set_meta("model_fingerprint", f),
            None => self.execute("DELETE FROM meta WHERE key = 'model_fingerprint'", &[]).map(drop),
        }
    }

    fn add_root(&self, root: &Path) -> Result<bool> {
        let n = self.execute("INSERT INTO roots (path) VALUES ($1) ON CONFLICT DO NOTHING", &[&path_key(root)])?;
        Ok(n == 1)
    }

    fn root_device(&self, root: &Path) -> Result<Option<u64>> {
        let row = self.query_opt("SELECT device FROM roots WHERE path = $1", &[&path_key(root)])?;
        Ok(row.and_then(|r| r.get::<_, Option<i64>>(0)).map(u64_of))
    }

    fn set_root_device(&self, root: &Path, device: u64) -> Result<()> {
        self.execute("UPDATE roots SET device = $2 WHERE path = $1", &[&path_key(root), &i64_of(device)])?;
        Ok(())
    }

    fn remove_root(&self, root: &Path) -> Result<bool> {
        Ok(self.execute("DELETE FROM roots WHERE path = $1", &[&path_key(root)])? == 1)
    }

    fn roots(&self) -> Result<Vec<PathBuf>> {
        let rows = self.query("SELECT path FROM roots ORDER BY path", &[])?;
        Ok(rows.iter().map(|r| path_from_key(r.get(0))).collect())
    }

    fn path_entry(&self, path: &Path) -> Result<Option<PathEntry>> {
        let row = self.query_opt("SELECT image_id, size, mtime_ns FROM paths WHERE path = $1", &[&path_key(path)])?;
        Ok(row.as_ref().map(path_entry_of))
    }

    fn paths_under(&self, prefix: &Path) -> Result<Vec<(PathBuf, PathEntry)>> {
        let start = path_key(prefix);
        let end = prefix_end(&start);
        let rows = self.query(
            "SELECT image_id, size, mtime_ns, path FROM paths
             WHERE path >= $1 AND ($2::bytea IS NULL OR path < $2) ORDER BY path",
            &[&start, &end],
        )?;
        Ok(rows
            .iter()
            .map(|r| (path_from_key(r.get(3)), path_entry_of(r)))
            .filter(|(p, _)| p.starts_with(prefix))
            .collect())
    }

    fn id_for_hash(&self, hash: &str) -> Result<Option<ImageId>> {
        Ok(self.query_opt("SELECT id FROM images WHERE hash = $1", &[&hash])?.map(|r| id_of(&r, 0)))
    }

    fn image(&self, id: ImageId) -> Result<Option<ImageRecord>> {
        match self.query_opt("SELECT record FROM images WHERE id = $1", &[&i64_of(id)])? {
            Some(row) => Ok(Some(self.parse_json("image", row.get(0))?)),
            None => Ok(None),
        }
    }

    fn paths_of(&self, id: ImageId) -> Result<Vec<PathBuf>> {
        let rows = self.query("SELECT path FROM paths WHERE image_id = $1 ORDER BY path", &[&i64_of(id)])?;
        Ok(rows.iter().map(|r| path_from_key(r.get(0))).collect())
    }

    fn vector(&self, id: ImageId) -> Result<Option<Vec<f32>>> {
        let sql = format!("SELECT embedding::real[] FROM vectors WHERE generation = {CURRENT} AND image_id = $1");
        Ok(self.query_opt(&sql, &[&i64_of(id)])?.map(|r| r.get(0)))
    }

    fn vectors_after(&self, id: ImageId) -> Result<u64> {
        let sql = format!("SELECT count(*) FROM vectors WHERE generation = {CURRENT} AND image_id > $1");
        let row = self.query_opt(&sql, &[&i64_of(id)])?;
        Ok(row.map(|r| u64_of(r.get(0))).unwrap_or(0))
    }

    fn vectors(&self) -> Records<'_, Vec<f32>> {
        self.pages(
            "SELECT image_id, embedding::real[] FROM vectors
             WHERE generation = (SELECT value::integer FROM meta WHERE key = 'vectors_generation')
               AND image_id > $1 ORDER BY image_id LIMIT $2",
            |_, row| Ok(row.get(1)),
        )
    }

    fn images(&self) -> Records<'_, ImageRecord> {
        self.pages("SELECT id, record FROM images WHERE id > $1 ORDER BY id LIMIT $2", |s, row| {
            s.parse_json("image", row.get(1))
        })
    }

    fn timeline(&self, before: Option<(i64, ImageId)>, limit: usize) -> Result<Vec<(ImageId, ImageRecord)>> {
        let (date, id) = before.map_or((None, None), |(d, i)| (Some(d), Some(i64_of(i))));
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let rows = self.query(
            "SELECT id, record FROM images WHERE $1::bigint IS NULL OR (date, id) < ($1, $2::bigint)
             ORDER BY date DESC, id DESC LIMIT $3",
            &[&date, &id, &limit],
        )?;
        rows.iter().map(|r| Ok((id_of(r, 0), self.parse_json("image", r.get(1))?))).collect()
    }

    fn timeline_under(
        &self,
        folder: &Path,
        before: Option<(i64, ImageId)>,
        limit: usize,
    ) -> Result<Vec<(ImageId, ImageRecord)>> {
        let (exact, start, end) = folder_keys(folder);
        let (date, id) = before.map_or((None, None), |(d, i)| (Some(d), Some(i64_of(i))));
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let rows = self.query(
            &format!(
                "SELECT id, record FROM images WHERE ($1::bigint IS NULL OR (date, id) < ($1, $2::bigint)) AND {}
                 ORDER BY date DESC, id DESC LIMIT $3",
                under_sql(4)
            ),
            &[&date, &id, &limit, &exact, &start, &end],
        )?;
        rows.iter().map(|r| Ok((id_of(r, 0), self.parse_json("image", r.get(1))?))).collect()
    }

    fn month_counts_under(&self, folder: &Path) -> Result<Vec<(String, u64)>> {
        let (exact, start, end) = folder_keys(folder);
        let sql = format!(
            "SELECT {} AS month, count(*) FROM images WHERE {} GROUP BY 1 ORDER BY 1 DESC",
            month_sql(),
            under_sql(1)
        );
        Ok(self.query(&sql, &[&exact, &start, &end])?.iter().map(|r| (r.get(0), u64_of(r.get(1)))).collect())
    }

    fn month_counts(&self) -> Result<Vec<(String, u64)>> {
        let sql = format!("SELECT {} AS month, count(*) FROM images GROUP BY 1 ORDER BY 1 DESC", month_sql());
        Ok(self.query(&sql, &[])?.iter().map(|r| (r.get(0), u64_of(r.get(1)))).collect())
    }

    fn changes(&self) -> Result<u64> {
        self.sequence_value("changes")
    }

    fn commit_with_frames(
        &self,
        path: &Path,
        size: u64,
        mtime_ns: i64,
        record: &ImageRecord,
        vector: &[f32],
        frames: &[FrameVector],
    ) -> Result<ImageId> {
        let key = path_key(path);
        let record_json = serde_json::to_string(record).expect("records serialise");
        self.tx("commit image", |tx| {
            let existing = tx.query_opt("SELECT id FROM images WHERE hash = $1", &[&record.hash])?;
            let id = match existing {
                Some(row) => id_of(&row, 0),
                None => {
                    let row = tx.query_one(
                        "INSERT INTO images (id, hash, record, date, video, place)
                         VALUES (nextval('image_ids'), $1, $2, $3, $4, $5) RETURNING id",
                        &[&record.hash, &record_json, &record.date(), &record.is_video(), &record.place_code()],
                    )?;
                    let id: i64 = row.get(0);
                    tx.execute(
                        &format!("INSERT INTO vectors (generation, image_id, embedding) VALUES ({CURRENT}, $1, $2::real[]::vector)"),
                        &[&id, &vector],
                    )?;
                    tx_put_frames(tx, CURRENT, id, frames, true)?;
                    u64_of(id)
                }
            };
            tx_relink(tx, &key, &PathEntry { id, size, mtime_ns })?;
            tx.execute("DELETE FROM failures WHERE path = $1", &[&key])?;
            tx_changed(tx)?;
            Ok(id)
        })
    }

    fn frames_of(&self, id: ImageId) -> Result<Vec<FrameVector>> {
        let sql = format!(
            "SELECT time, embedding::real[] FROM frames WHERE generation = {CURRENT} AND image_id = $1 ORDER BY idx"
        );
        let rows = self.query(&sql, &[&i64_of(id)])?;
        Ok(rows.iter().map(|r| FrameVector { time: r.get(0), vector: r.get(1) }).collect())
    }

    fn frame_vectors(&self) -> Records<'_, FrameVector> {
        let sql = format!(
            "SELECT image_id, time, embedding::real[] FROM frames WHERE generation = {CURRENT} ORDER BY image_id, idx"
        );
        match self.query(&sql, &[]) {
            Ok(rows) => Box::new(
                rows.into_iter()
                    .map(|r| Ok((id_of(&r, 0), FrameVector { time: r.get(1), vector: r.get(2) })))
                    .collect::<Vec<_>>()
                    .into_iter(),
            ),
            Err(e) => Box::new(std::iter::once(Err(e))),
        }
    }

    fn link_path(&self, path: &Path, id: ImageId, size: u64, mtime_ns: i64) -> Result<()> {
        let key = path_key(path);
        self.tx("link path", |tx| {
            if tx.query_opt("SELECT 1 FROM images WHERE id = $1", &[&i64_of(id)])?.is_none() {
                return Err(TxError::Abort(format!("image {id} is not stored")));
            }
            tx_relink(tx, &key, &PathEntry { id, size, mtime_ns })?;
            tx.execute("DELETE FROM failures WHERE path = $1", &[&key])?;
            tx_changed(tx)
        })
    }

    /// [`Backend::relink_dated`]: the image's row is locked, its record and `date` column
    /// rewritten in the transaction that moves the mapping.
    fn relink_dated(&self, path: &Path, id: ImageId, size: u64, mtime_ns: i64) -> Result<bool> {
        let key = path_key(path);
        self.tx("link path", |tx| {
            let Some(row) = tx.query_opt("SELECT record FROM images WHERE id = $1 FOR UPDATE", &[&i64_of(id)])? else {
                return Err(TxError::Abort(format!("image {id} is not stored")));
            };
            let touched = tx
                .query_opt("SELECT mtime_ns FROM paths WHERE path = $1 AND image_id = $2", &[&key, &i64_of(id)])?
                .is_some_and(|r| r.get::<_, i64>(0) != mtime_ns);
            let mut redated = false;
            if touched {
                let text: String = row.get(0);
                let mut record: ImageRecord = serde_json::from_str(&text)
                    .map_err(|e| TxError::Abort(format!("corrupt record of image {id}: {e}")))?;
                let (modified, before) = (ImageRecord::modified_at(mtime_ns), record.date());
                if record.modified != modified {
                    record.modified = modified;
                    let text = serde_json::to_string(&record).expect("records serialise");
                    tx.execute(
                        "UPDATE images SET record = $2, date = $3 WHERE id = $1",
                        &[&i64_of(id), &text, &record.date()],
                    )?;
                    redated = record.date() != before;
                }
            }
            tx_relink(tx, &key, &PathEntry { id, size, mtime_ns })?;
            tx.execute("DELETE FROM failures WHERE path = $1", &[&key])?;
            tx_changed(tx)?;
            Ok(redated)
        })
    }

    fn unlink_path(&self, path: &Path) -> Result<Option<PathEntry>> {
        let key = path_key(path);
        self.tx("unlink path", |tx| {
            tx.execute("DELETE FROM failures WHERE path = $1", &[&key])?;
            let entry = tx_unlink(tx, &key)?;
            tx_changed(tx)?;
            Ok(entry)
        })
    }

    fn record_failure(&self, path: &Path, reason: &str, size: u64, mtime_ns: i64) -> Result<()> {
        self.execute(
            "INSERT INTO failures (path, reason, attempts, size, mtime_ns) VALUES ($1, $2, 1, $3, $4)
             ON CONFLICT (path) DO UPDATE SET reason = EXCLUDED.reason, attempts = failures.attempts + 1,
                 size = EXCLUDED.size, mtime_ns = EXCLUDED.mtime_ns",
            // A decoder's message could quote a NUL from the file; PostgreSQL's text cannot hold it.
            &[&path_key(path), &reason.replace('\0', ""), &i64_of(size), &mtime_ns],
        )?;
        Ok(())
    }

    fn failure(&self, path: &Path) -> Result<Option<Failure>> {
        let row = self
            .query_opt("SELECT reason, attempts, size, mtime_ns FROM failures WHERE path = $1", &[&path_key(path)])?;
        Ok(row.map(|r| failure_of(&r)))
    }

    fn clear_failure(&self, path: &Path) -> Result<()> {
        self.execute("DELETE FROM failures WHERE path = $1", &[&path_key(path)])?;
        Ok(())
    }

    fn failures(&self) -> Result<Vec<(PathBuf, Failure)>> {
        let rows = self.query("SELECT reason, attempts, size, mtime_ns, path FROM failures ORDER BY path", &[])?;
        Ok(rows.iter().map(|r| (path_from_key(r.get(4)), failure_of(r))).collect())
    }

    fn counts(&self) -> Result<StoreCounts> {
        let sql = format!(
            "SELECT (SELECT count(*) FROM images), (SELECT count(*) FROM paths),
                    (SELECT count(*) FROM vectors WHERE generation = {CURRENT}), (SELECT count(*) FROM failures),
                    (SELECT count(*) FROM roots), (SELECT count(*) FROM tags), (SELECT count(*) FROM tag_index),
                    (SELECT count(*) FROM label_cache), (SELECT count(*) FROM captions),
                    (SELECT count(DISTINCT image_id) FROM frames WHERE generation = {CURRENT}),
                    (SELECT count(*) FROM frames WHERE generation = {CURRENT})"
        );
        let rows = self.query(&sql, &[])?;
        let r = rows.first().ok_or_else(|| self.err("no counts"))?;
        let n = |i: usize| u64_of(r.get(i));
        Ok(StoreCounts {
            images: n(0),
            paths: n(1),
            vectors: n(2),
            failures: n(3),
            roots: n(4),
            tagged: n(5),
            tags: n(6),
            cached_labels: n(7),
            captioned: n(8),
            videos: n(9),
            frames: n(10),
        })
    }

    /// Every committed transaction is durable already.
    fn flush(&self) -> Result<()> {
        Ok(())
    }

    fn work_queue(&self) -> Option<&dyn crate::store::WorkQueue> {
        Some(self)
    }

    fn nearest(
        &self,
        query: &[f32],
        k: usize,
        filter: &crate::store::search_types::SearchFilter,
    ) -> Result<Option<Vec<crate::store::search_types::SearchHit>>> {
        self.nearest_vectors(query, k, filter).map(Some)
    }

    fn maintain_vector_index(&self, min_vectors: usize) -> Result<Option<crate::store::search_types::IndexState>> {
        self.vector_index(min_vectors, true).map(Some)
    }

    fn vector_index_state(&self, min_vectors: usize) -> Result<Option<crate::store::search_types::IndexState>> {
        self.vector_index(min_vectors, false).map(Some)
    }

    fn check(&self) -> Result<Vec<String>> {
        let mut problems = Vec::new();
        let no_vector = format!(
            "SELECT id FROM images i WHERE NOT EXISTS
               (SELECT 1 FROM vectors v WHERE v.generation = {CURRENT} AND v.image_id = i.id) ORDER BY id"
        );
        for r in self.query(&no_vector, &[])? {
            problems.push(format!("image {} has no vector", id_of(&r, 0)));
        }
        let no_path =
            "SELECT id FROM images i WHERE NOT EXISTS (SELECT 1 FROM paths p WHERE p.image_id = i.id) ORDER BY id";
        for r in self.query(no_path, &[])? {
            problems.push(format!("image {}: 0 paths", id_of(&r, 0)));
        }
        let stale = format!("SELECT count(*) FROM vectors WHERE generation NOT IN ({CURRENT}, {CURRENT} + 1)");
        let n: i64 = self.query(&stale, &[])?.first().map(|r| r.get(0)).unwrap_or(0);
        if n > 0 {
            problems.push(format!("{n} vectors of a generation neither current nor next"));
        }
        let frames = format!(
            "SELECT id, video, (SELECT count(*) FROM frames f WHERE f.generation = {CURRENT} AND f.image_id = i.id)
             FROM images i WHERE video OR EXISTS (SELECT 1 FROM frames f WHERE f.image_id = i.id) ORDER BY id"
        );
        for r in self.query(&frames, &[])? {
            let (id, video, stored) = (id_of(&r, 0), r.get::<_, bool>(1), r.get::<_, i64>(2));
            match (video, stored) {
                (true, 0) => problems.push(format!("video {id} has no frames")),
                (false, 1..) => problems.push(format!("photo {id} has {stored} frames")),
                _ => {}
            }
        }
        let stale_text = "SELECT t.image_id FROM texts t JOIN images i ON i.id = t.image_id WHERE t.hash <> i.hash";
        for r in self.query(stale_text, &[])? {
            problems.push(format!("photo text of image {} was read from other content", id_of(&r, 0)));
        }
        let untagged =
            "SELECT count(*) FROM tag_index t WHERE NOT EXISTS (SELECT 1 FROM tags s WHERE s.image_id = t.image_id)";
        let n: i64 = self.query(untagged, &[])?.first().map(|r| r.get(0)).unwrap_or(0);
        if n > 0 {
            problems.push(format!("{n} tag index entries without tags"));
        }
        let contradicted = "SELECT f.id, f.person_id FROM faces f JOIN face_corrections c
                              ON c.face_id = f.id AND c.person_id = f.person_id ORDER BY f.id";
        for r in self.query(contradicted, &[])? {
            problems.push(format!(
                "face {} is in person {}, which it is marked as not being",
                id_of(&r, 0),
                id_of(&r, 1)
            ));
        }
        Ok(problems)
    }
}

fn failure_of(r: &Row) -> Failure {
    Failure { reason: r.get(0), attempts: r.get::<_, i32>(1) as u32, size: u64_of(r.get(2)), mtime_ns: r.get(3) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefix_ends_are_the_next_key_past_the_prefix() {
        assert_eq!(prefix_end(b"/a"), Some(b"/b".to_vec()));
        assert_eq!(prefix_end(b"/a\xff"), Some(b"/b".to_vec()));
        assert_eq!(prefix_end(b"\xff\xff"), None);
        assert_eq!(prefix_end(b""), None);
    }
}
