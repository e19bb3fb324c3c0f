//! What the web UI's Jobs view changes: background passes the user paused
//! (`POST /api/jobs/NAME/pause`), recorded in the library so that a paused pass stays paused
//! when the server starts again, and failures to try again.
//!
//! Pausing indexing pauses what follows it too (the other passes run after an index pass);
//! pausing tagging, captioning or thumbnails leaves the rest running.

use super::Library;
use crate::error::{Error, Result};

/// The setting holding the paused passes.
const PAUSED_SETTING: &str = "paused_passes";

/// The passes that can be paused, as `GET /api/jobs` names them.
pub const PAUSABLE_PASSES: &[&str] =
    &["indexing", "tagging", "captioning", "reading_text", "finding_faces", "thumbnails"];

impl Library {
    /// The passes paused, in [`PAUSABLE_PASSES`] order.
    pub fn paused_passes(&self) -> Result<Vec<String>> {
        let mut paused: Vec<String> = self.store.setting(PAUSED_SETTING)?.unwrap_or_default();
        paused.retain(|p| PAUSABLE_PASSES.contains(&p.as_str()));
        Ok(paused)
    }

    /// Whether the pass `name` is paused (a read error counts as not paused: the pass runs).
    pub fn pass_paused(&self, name: &str) -> bool {
        self.paused_passes().is_ok_and(|p| p.iter().any(|n| n == name))
    }

    /// Pauses or resumes the pass `name`; the passes paused afterwards.
    pub fn set_pass_paused(&self, name: &str, paused: bool) -> Result<Vec<String>> {
        if !PAUSABLE_PASSES.contains(&name) {
            return Err(Error::NotFound(format!(
                "no background pass {name:?}; the passes are {}",
                PAUSABLE_PASSES.join(", ")
            )));
        }
        let mut now = self.paused_passes()?;
        now.retain(|p| p != name);
        if paused {
            now.push(name.to_string());
        }
        now.sort_by_key(|p| PAUSABLE_PASSES.iter().position(|q| q == p));
        self.store.set_setting(PAUSED_SETTING, &now)?;
        Ok(now)
    }

    /// The failure recorded for `path`, if any.
    pub fn failure(&self, path: &std::path::Path) -> Result<Option<crate::store::Failure>> {
        self.store.failure(path)
    }

    /// Forgets the failure recorded for `path`, so that the next index pass tries the file
    /// again (the web UI's "Retry" in the failures list).
    pub fn retry_failure(&self, path: &std::path::Path) -> Result<()> {
        if self.store.failure(path)?.is_none() {
            return Err(Error::NotFound(format!("no failure is recorded for {}", path.display())));
        }
        self.store.clear_failure(path)
    }
}
