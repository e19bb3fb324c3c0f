//! How file paths leave clipdex as text.
//!
//! On Unix a file name is bytes, not necessarily UTF-8 (photos copied from old cameras, Latin-1
//! archives, a ZIP from another system). Inside clipdex a path stays a `PathBuf`, its exact
//! bytes. It becomes text only at the edges, and there it must neither fail nor lie:
//!
//! - **JSON**: `"path"` is the name for display (invalid bytes become U+FFFD), and
//!   `"path_bytes"`, present only when the path is not UTF-8, is the standard base64 of its
//!   exact bytes, so a script can always get back at the file. Lists of paths (`"paths"`,
//!   `"roots"`) get a parallel `"paths_bytes"` / `"roots_bytes"` list (`null` for UTF-8
//!   entries) under the same rule.
//! - **Text output**: [`escaped`] prints a path on one line that shows every byte: control
//!   characters as `\n`, `\t`, `\u{1b}`..., invalid bytes as `\xE9`, and a backslash doubled.
//!   A UTF-8 path without control characters or backslashes prints as it is.

use std::path::{Path, PathBuf};

use base64::Engine;
use serde::ser::{SerializeMap, Serializer};
use serde_json::{Map, Value};

/// The exact bytes of a path.
#[cfg(unix)]
fn bytes(path: &Path) -> &[u8] {
    use std::os::unix::ffi::OsStrExt;
    path.as_os_str().as_bytes()
}

#[cfg(not(unix))]
fn bytes(path: &Path) -> &[u8] {
    path.to_str().map(str::as_bytes).unwrap_or_default()
}

/// The path for display: invalid UTF-8 replaced by U+FFFD.
pub fn display(path: &Path) -> String {
    path.to_string_lossy().into_owned()
}

/// Base64 of the path's exact bytes when they are not UTF-8 (`None` when `display` is exact).
pub fn exact_bytes(path: &Path) -> Option<String> {
    match path.to_str() {
        Some(_) => None,
        None => Some(base64::engine::general_purpose::STANDARD.encode(bytes(path))),
    }
}

/// A path decoded back from its JSON form: `path_bytes` when present, else `path`.
pub fn from_json(path: &str, path_bytes: Option<&str>) -> Option<PathBuf> {
    match path_bytes {
        None => Some(PathBuf::from(path)),
        Some(b64) => {
            let raw = base64::engine::general_purpose::STANDARD.decode(b64).ok()?;
            #[cfg(unix)]
            {
                use std::os::unix::ffi::OsStringExt;
                Some(PathBuf::from(std::ffi::OsString::from_vec(raw)))
            }
            #[cfg(not(unix))]
            {
                String::from_utf8(raw).ok().map(PathBuf::from)
            }
        }
    }
}

/// The path on one line of text, every byte visible (see the module doc).
pub fn escaped(path: &Path) -> String {
    let mut out = String::new();
    for chunk in bytes(path).utf8_chunks() {
        for c in chunk.valid().chars() {
            match c {
                '\\' => out.push_str("\\\\"),
                '\n' => out.push_str("\\n"),
                '\r' => out.push_str("\\r"),
                '\t' => out.push_str("\\t"),
                c if c.is_control() => out.push_str(&format!("\\u{{{:x}}}", c as u32)),
                c => out.push(c),
            }
        }
        for b in chunk.invalid() {
            out.push_str(&format!("\\x{b:02X}"));
        }
    }
    out
}

/// Sets `key` (and `KEY_bytes` when needed) of a JSON object to `path`.
pub fn insert(object: &mut Map<String, Value>, key: &str, path: &Path) {
    object.insert(key.to_string(), Value::String(display(path)));
    if let Some(b) = exact_bytes(path) {
        object.insert(format!("{key}_bytes"), Value::String(b));
    }
}

/// A JSON object of `fields` with `"path"` (and `"path_bytes"`) set to `path`.
pub fn object(path: &Path, fields: Value) -> Value {
    let mut map = match fields {
        Value::Object(map) => map,
        _ => Map::new(),
    };
    insert(&mut map, "path", path);
    Value::Object(map)
}

/// Sets the list `key` (and `KEY_bytes` when any entry needs it) of a JSON object to `paths`.
pub fn insert_list(object: &mut Map<String, Value>, key: &str, bytes_key: &str, paths: &[PathBuf]) {
    object.insert(key.to_string(), paths.iter().map(|p| Value::String(display(p))).collect());
    if paths.iter().any(|p| p.to_str().is_none()) {
        let exact = paths.iter().map(|p| exact_bytes(p).map_or(Value::Null, Value::String)).collect();
        object.insert(bytes_key.to_string(), exact);
    }
}

/// For `#[serde(flatten, serialize_with = "path_text::path_field")]` on a `path: PathBuf`:
/// writes `"path"` and, when needed, `"path_bytes"`.
pub fn path_field<S: Serializer>(path: &Path, s: S) -> Result<S::Ok, S::Error> {
    let exact = exact_bytes(path);
    let mut map = s.serialize_map(Some(1 + usize::from(exact.is_some())))?;
    map.serialize_entry("path", &display(path))?;
    if let Some(b) = exact {
        map.serialize_entry("path_bytes", &b)?;
    }
    map.end()
}

/// For `#[serde(flatten, serialize_with = "path_text::paths_field")]` on a `paths:
/// Vec<PathBuf>`: writes `"paths"` and, when needed, `"paths_bytes"`.
pub fn paths_field<S: Serializer>(paths: &[PathBuf], s: S) -> Result<S::Ok, S::Error> {
    let mut object = Map::new();
    insert_list(&mut object, "paths", "paths_bytes", paths);
    s.collect_map(object)
}

/// For `#[serde(serialize_with = "path_text::display_list")]`: a list of paths for display
/// only (roots a report mentions).
pub fn display_list<S: Serializer>(paths: &[PathBuf], s: S) -> Result<S::Ok, S::Error> {
    s.collect_seq(paths.iter().map(|p| display(p)))
}

#[cfg(all(test, unix))]
mod tests {
    use std::os::unix::ffi::OsStrExt;

    use super::*;

    fn latin1() -> PathBuf {
        PathBuf::from(std::ffi::OsStr::from_bytes(b"/photos/caf\xe9\n.jpg"))
    }

    #[test]
    fn json_keeps_the_exact_bytes_of_non_utf8_paths() {
        let p = latin1();
        let v = object(&p, serde_json::json!({"score": 1}));
        assert_eq!(v["path"], "/photos/caf\u{fffd}\n.jpg");
        let b = v["path_bytes"].as_str().unwrap();
        assert_eq!(from_json(v["path"].as_str().unwrap(), Some(b)).unwrap(), p);
        assert_eq!(v["score"], 1);
        let plain = object(Path::new("/photos/café.jpg"), Value::Null);
        assert_eq!(plain, serde_json::json!({"path": "/photos/café.jpg"}));
    }

    #[test]
    fn text_shows_every_byte_on_one_line() {
        assert_eq!(escaped(&latin1()), "/photos/caf\\xE9\\n.jpg");
        assert_eq!(escaped(Path::new("/a b/ü\\x\u{1b}.png")), "/a b/ü\\\\x\\u{1b}.png");
        assert_eq!(escaped(Path::new("/plain/photo.jpg")), "/plain/photo.jpg");
    }

    #[test]
    fn serde_fields_flatten_into_the_record() {
        #[derive(serde::Serialize)]
        struct Hit {
            id: u64,
            #[serde(flatten, serialize_with = "path_field")]
            path: PathBuf,
            #[serde(flatten, serialize_with = "paths_field")]
            paths: Vec<PathBuf>,
        }
        let hit = Hit { id: 3, path: latin1(), paths: vec![PathBuf::from("/ok.jpg"), latin1()] };
        let v = serde_json::to_value(&hit).unwrap();
        assert_eq!(v["id"], 3);
        assert!(v["path_bytes"].is_string());
        assert_eq!(v["paths"][0], "/ok.jpg");
        assert_eq!(v["paths_bytes"][0], Value::Null);
        assert_eq!(v["paths_bytes"][1], v["path_bytes"]);
    }
}
