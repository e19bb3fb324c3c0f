//! The databases a backend-parametrised test runs on: a sled folder always, and a fresh
//! PostgreSQL database (dropped afterwards) when `CLIPDEX_TEST_PG` names a server, e.g.
//! `postgres://clipdex:clipdex@localhost:5432/postgres` (what `.ci/postgres.sh` prints). With
//! `CLIPDEX_PG=require` (as `.ci/run` sets), or in CI (`CI` set), a missing server fails the
//! test instead of skipping the PostgreSQL half.

use std::ffi::OsString;
use std::sync::atomic::{AtomicU32, Ordering};

use clipdex::store::DbLocation;

/// One database for a test.
pub struct TestDb {
    /// `sled` or `postgres`.
    pub backend: &'static str,
    pub location: DbLocation,
    _folder: Option<tempfile::TempDir>,
    _pg: Option<PgDatabase>,
}

impl TestDb {
    /// The `--db` argument that names it.
    pub fn arg(&self) -> OsString {
        match &self.location {
            DbLocation::Dir(dir) => dir.clone().into_os_string(),
            DbLocation::Postgres(url) => url.into(),
        }
    }
}

/// A sled database in a new temporary folder, and a new PostgreSQL database when a server is
/// configured.
pub fn test_databases() -> Vec<TestDb> {
    let folder = tempfile::tempdir().unwrap();
    let mut out = vec![TestDb {
        backend: "sled",
        location: DbLocation::Dir(folder.path().join("db")),
        _folder: Some(folder),
        _pg: None,
    }];
    if let Some(db) = postgres_database() {
        out.push(TestDb {
            backend: "postgres",
            location: DbLocation::Postgres(db.url.clone()),
            _folder: None,
            _pg: Some(db),
        });
    }
    out
}

/// A new PostgreSQL database on the `CLIPDEX_TEST_PG` server; `None` when none is configured
/// (outside CI, where that fails the test).
pub fn postgres_database() -> Option<PgDatabase> {
    match std::env::var("CLIPDEX_TEST_PG") {
        Ok(base) if !base.is_empty() => Some(PgDatabase::create(&base)),
        _ if std::env::var_os("CI").is_some() || std::env::var("CLIPDEX_PG").is_ok_and(|v| v == "require") => {
            panic!("CI must test the PostgreSQL backend: set CLIPDEX_TEST_PG (.ci/postgres.sh prints it)")
        }
        _ => {
            eprintln!("CLIPDEX_TEST_PG is not set: the PostgreSQL backend is not tested");
            None
        }
    }
}

/// A database created on the test server, dropped when the test ends.
pub struct PgDatabase {
    base: String,
    name: String,
    pub url: String,
}

impl PgDatabase {
    pub fn create(base: &str) -> Self {
        static N: AtomicU32 = AtomicU32::new(0);
        let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().subsec_nanos();
        let name = format!("clipdex_t_{}_{}_{nanos}", std::process::id(), N.fetch_add(1, Ordering::SeqCst));
        off(|| {
            let mut client = postgres::Client::connect(base, postgres::NoTls).expect("connect to CLIPDEX_TEST_PG");
            client.batch_execute(&format!("CREATE DATABASE {name}")).unwrap();
        });
        PgDatabase { base: base.to_string(), url: with_database(base, &name), name }
    }
}

impl Drop for PgDatabase {
    fn drop(&mut self) {
        // The files a PostgreSQL library keeps on this machine (thumbnails, caches).
        let _ = std::fs::remove_dir_all(DbLocation::Postgres(self.url.clone()).local_dir());
        off(|| {
            if let Ok(mut client) = postgres::Client::connect(&self.base, postgres::NoTls) {
                let _ = client.batch_execute(&format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.name));
            }
        });
    }
}

/// Runs `f` on a thread of its own and returns what it returns: the PostgreSQL client blocks on
/// a runtime of its own, which it may not do on a thread that drives another (an async test's;
/// the server itself calls the library on its blocking pool).
pub fn off<R: Send>(f: impl FnOnce() -> R + Send) -> R {
    std::thread::scope(|scope| scope.spawn(f).join().unwrap())
}

/// `url` with its database name replaced by `name`.
fn with_database(url: &str, name: &str) -> String {
    let (head, query) = match url.split_once('?') {
        Some((h, q)) => (h, format!("?{q}")),
        None => (url, String::new()),
    };
    let after_scheme = head.find("://").map(|i| i + 3).unwrap_or(0);
    let host_end = head[after_scheme..].find('/').map(|i| i + after_scheme).unwrap_or(head.len());
    format!("{}/{name}{query}", &head[..host_end])
}
