//! The Live Photos of a root as the last scan paired them: still → MOV, kept as one setting per
//! root (both backends hold settings; a pass reads and writes it once, and only when it changed).
//!
//! The record answers two questions without reading any photo: which MOV a still was paired
//! with by content identifier (names that differ, so the folder alone cannot say), and whether a
//! still that had a live video at the last pass has lost it (its MOV deleted), which the scan
//! then records as the pair's problem.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde_json::{Map, Value};

use super::Store;
use crate::error::Result;

/// A still's Live Photo video as the last scan saw it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LivePair {
    /// The MOV.
    pub video: PathBuf,
    /// Paired by the content identifier both files carry (their names differ).
    pub by_identifier: bool,
    /// The MOV was gone at the last scan (its still kept; the pair's problem is recorded).
    pub gone: bool,
    /// The modification times (ns) of the still and the MOV when a scan paired them by
    /// identifier: while both are unchanged, the next scan trusts the pair without reading them.
    pub mtimes: Option<(i64, i64)>,
}

/// Still → its live video, for one root.
pub type LivePairs = BTreeMap<PathBuf, LivePair>;

fn key(root: &Path) -> String {
    format!("live_photos:{}", crate::path_text::escaped(root))
}

impl Store {
    /// The Live Photos of `root` as the last scan paired them (none before the first scan).
    pub fn live_pairs(&self, root: &Path) -> Result<LivePairs> {
        let list: Vec<Map<String, Value>> = self.setting(&key(root))?.unwrap_or_default();
        let path = |m: &Map<String, Value>, k: &str| {
            let bytes = m.get(&format!("{k}_bytes")).and_then(Value::as_str);
            crate::path_text::from_json(m.get(k)?.as_str()?, bytes)
        };
        let flag = |m: &Map<String, Value>, k: &str| m.get(k).and_then(Value::as_bool).unwrap_or(false);
        Ok(list
            .iter()
            .filter_map(|m| {
                let mtimes = m.get("mtimes").and_then(Value::as_array).and_then(|a| match a.as_slice() {
                    [still, video] => Some((still.as_i64()?, video.as_i64()?)),
                    _ => None,
                });
                let pair = LivePair {
                    video: path(m, "video")?,
                    by_identifier: flag(m, "by_identifier"),
                    gone: flag(m, "gone"),
                    mtimes,
                };
                Some((path(m, "still")?, pair))
            })
            .collect())
    }

    /// Records the Live Photos of `root`.
    pub fn set_live_pairs(&self, root: &Path, pairs: &LivePairs) -> Result<()> {
        let list: Vec<Value> = pairs
            .iter()
            .map(|(still, pair)| {
                let mut m = Map::new();
                crate::path_text::insert(&mut m, "still", still);
                crate::path_text::insert(&mut m, "video", &pair.video);
                m.insert("by_identifier".into(), pair.by_identifier.into());
                m.insert("gone".into(), pair.gone.into());
                if let Some((still, video)) = pair.mtimes {
                    m.insert("mtimes".into(), serde_json::json!([still, video]));
                }
                Value::Object(m)
            })
            .collect();
        self.set_setting(&key(root), &list)
    }

    /// The recorded pair of the still at `path`, from the root that holds it.
    pub fn live_pair_of(&self, path: &Path) -> Result<Option<LivePair>> {
        for root in self.roots()?.iter().filter(|r| path.starts_with(r)) {
            if let Some(pair) = self.live_pairs(root)?.remove(path) {
                return Ok(Some(pair));
            }
        }
        Ok(None)
    }
}
