//! Where a library's database is: `--db` is a folder (the embedded sled store) or a
//! `postgres://` URL. Anything else that looks like a URL is refused rather than taken for a
//! folder named `scheme:` in the working directory.

use std::ffi::OsStr;
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};

/// A library's database.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DbLocation {
    /// A folder holding the sled store (and the HNSW graph and thumbnails beside it).
    Dir(PathBuf),
    /// A PostgreSQL database, `postgres://user:password@host:port/dbname`.
    Postgres(String),
}

impl DbLocation {
    /// Reads a `--db` value: a `postgres://` or `postgresql://` URL, else a folder. A value
    /// with another URL scheme is an error.
    pub fn parse(value: &OsStr) -> Result<Self> {
        let Some(text) = value.to_str() else { return Ok(DbLocation::Dir(PathBuf::from(value))) };
        match url_scheme(text) {
            None => Ok(DbLocation::Dir(PathBuf::from(text))),
            Some(scheme) if scheme.eq_ignore_ascii_case("postgres") || scheme.eq_ignore_ascii_case("postgresql") => {
                Ok(DbLocation::Postgres(text.to_string()))
            }
            Some(scheme) => Err(Error::Invalid(format!(
                "--db {}: unsupported database URL scheme {scheme:?}; --db takes a folder or a \
                 postgres://user:password@host:port/dbname URL",
                redact(text)
            ))),
        }
    }

    /// The folder for what the library keeps in files next to its database: the HNSW graph
    /// and thumbnails. For a folder database, the folder itself; for PostgreSQL, a folder of
    /// this machine's cache named after the database (host, port, name and user; never the
    /// password).
    pub fn local_dir(&self) -> PathBuf {
        match self {
            DbLocation::Dir(dir) => dir.clone(),
            DbLocation::Postgres(url) => {
                // Not the query: connection options (sslmode, timeouts) name the same database.
                let database = redact(url.split_once('?').map_or(url.as_str(), |(head, _)| head));
                let key = blake3::hash(database.as_bytes()).to_hex();
                let base = dirs::cache_dir().unwrap_or_else(std::env::temp_dir);
                base.join("clipdex").join(format!("pg-{}", &key[..16]))
            }
        }
    }

    /// Whether a database is there already (a folder with a sled store in it; a PostgreSQL
    /// URL is taken to be there: connecting tells).
    pub fn exists(&self) -> bool {
        match self {
            DbLocation::Dir(dir) => dir.join("sled").exists(),
            DbLocation::Postgres(_) => true,
        }
    }
}

impl std::fmt::Display for DbLocation {
    /// The folder, or the URL with its password replaced by `***`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            DbLocation::Dir(dir) => write!(f, "{}", dir.display()),
            DbLocation::Postgres(url) => f.write_str(&redact(url)),
        }
    }
}

impl From<PathBuf> for DbLocation {
    fn from(dir: PathBuf) -> Self {
        DbLocation::Dir(dir)
    }
}

impl From<&Path> for DbLocation {
    fn from(dir: &Path) -> Self {
        DbLocation::Dir(dir.to_path_buf())
    }
}

impl From<&PathBuf> for DbLocation {
    fn from(dir: &PathBuf) -> Self {
        DbLocation::Dir(dir.clone())
    }
}

impl From<&DbLocation> for DbLocation {
    fn from(location: &DbLocation) -> Self {
        location.clone()
    }
}

/// The scheme of `text` when it starts like a URL (`scheme://`, the scheme being a letter and
/// then letters, digits, `+`, `-` or `.`).
fn url_scheme(text: &str) -> Option<&str> {
    let (scheme, _) = text.split_once("://")?;
    let mut chars = scheme.chars();
    let first = chars.next()?;
    (first.is_ascii_alphabetic() && chars.all(|c| c.is_ascii_alphanumeric() || "+-.".contains(c))).then_some(scheme)
}

/// A URL with the password of its user info (`user:password@`) replaced by `***`.
pub(crate) fn redact(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else { return url.to_string() };
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(authority_end);
    match authority.rsplit_once('@') {
        Some((userinfo, host)) => match userinfo.split_once(':') {
            Some((user, _)) => format!("{scheme}://{user}:***@{host}{tail}"),
            None => url.to_string(),
        },
        None => url.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(s: &str) -> Result<DbLocation> {
        DbLocation::parse(OsStr::new(s))
    }

    #[test]
    fn folders_and_postgres_urls_are_told_apart_and_other_schemes_refused() {
        assert_eq!(parse("lib/db").unwrap(), DbLocation::Dir("lib/db".into()));
        assert_eq!(parse("/abs/odd:name").unwrap(), DbLocation::Dir("/abs/odd:name".into()));
        assert_eq!(parse("C:/photos").unwrap(), DbLocation::Dir("C:/photos".into()));
        for url in ["postgres://u:p@h:5432/db", "postgresql://h/db", "POSTGRES://h/db"] {
            assert_eq!(parse(url).unwrap(), DbLocation::Postgres(url.into()));
        }
        for bad in ["mysql://u:secret@h/db", "sqlite://x.db", "http://h/"] {
            let e = parse(bad).unwrap_err().to_string();
            assert!(e.contains("unsupported database URL scheme"), "{e}");
            assert!(!e.contains("secret"), "the password leaked: {e}");
        }
    }

    #[test]
    fn a_url_is_shown_without_its_password() {
        let loc = parse("postgres://clip:s3cret@db.lan:5433/photos?sslmode=disable").unwrap();
        assert_eq!(loc.to_string(), "postgres://clip:***@db.lan:5433/photos?sslmode=disable");
        assert_eq!(redact("postgres://clip@db/photos"), "postgres://clip@db/photos");
        assert_eq!(redact("postgres://db/photos"), "postgres://db/photos");
        // The cache folder does not depend on the password, so changing it keeps the graph.
        let other = parse("postgres://clip:other@db.lan:5433/photos?sslmode=disable").unwrap();
        assert_eq!(loc.local_dir(), other.local_dir());
        assert_ne!(loc.local_dir(), parse("postgres://clip:x@db.lan:5433/films").unwrap().local_dir());
        // Nor on connection options: TLS switched on keeps the thumbnails.
        let tls = parse("postgres://clip:s3cret@db.lan:5433/photos?sslmode=verify-full&sslrootcert=/ca.pem").unwrap();
        assert_eq!(loc.local_dir(), tls.local_dir());
    }
}
