//! Duplicates resolved the way the web UI does it: the user picks the photo to keep in a group
//! (or takes the suggested one in every group), the others move out of the library with
//! [`Library::move_duplicates`], and the move can be undone with [`restore_moved`].
//!
//! Each resolution is one *batch*: a folder of its own below the library's duplicates folder
//! (the `duplicates_folder` setting; by default `moved-duplicates` in a folder library's
//! database folder), laid out as `clipdex duplicates --move-to` lays out its folder and with
//! its own journal, so that undoing it puts back exactly its files, and
//! `clipdex duplicates --restore FOLDER/BATCH` does the same from the command line.
//!
//! A choice is checked against the groups as they are now: a photo to move must still be in
//! the same group as the photo to keep, so a stale page cannot move a photo that is no longer
//! a duplicate.

use std::path::{Component, Path, PathBuf};

use serde::Deserialize;

use super::Library;
use super::duplicates::{MoveReport, restore_moved};
use super::settings::DEFAULT_DUPLICATES_FOLDER;
use crate::error::{Error, Result};
use crate::query::duplicates::DuplicateGroup;
use crate::store::{DbLocation, ImageId};

/// One group's choice: the photo to keep and the photos of its group to move out.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct GroupChoice {
    /// The photo that stays.
    pub keep: ImageId,
    /// Photos of the same group to move out of the library.
    #[serde(rename = "move")]
    pub move_out: Vec<ImageId>,
}

/// What a resolution did: the move's report and the batch that undoes it.
#[derive(Debug, Clone)]
pub struct ResolvedBatch {
    /// The batch's name (a folder below the duplicates folder).
    pub batch: String,
    /// Its folder.
    pub folder: PathBuf,
    /// What moved and what stayed.
    pub report: MoveReport,
}

impl Library {
    /// The folder the web UI moves duplicates out to: the `duplicates_folder` setting, else
    /// [`DEFAULT_DUPLICATES_FOLDER`] in a folder library's database folder.
    pub fn duplicates_folder(&self) -> Result<PathBuf> {
        if let Some(dir) = self.settings()?.duplicates_folder {
            return Ok(PathBuf::from(dir));
        }
        match &self.config.db {
            DbLocation::Dir(db) => Ok(std::path::absolute(db)
                .map_err(|e| Error::Invalid(format!("{}: {e}", db.display())))?
                .join(DEFAULT_DUPLICATES_FOLDER)),
            DbLocation::Postgres(_) => Err(Error::Invalid(
                "a PostgreSQL library has no folder of its own to move duplicates to: choose one outside the \
                 library with `clipdex config set duplicates_folder DIR` (or on the Settings page)"
                    .into(),
            )),
        }
    }

    /// Moves out the photos the choices name (`None`: every group's photos but the suggested
    /// one to keep) into a new batch below [`Library::duplicates_folder`]. The groups are
    /// found again at `threshold` first; a choice whose photos are no longer grouped together
    /// is refused before anything moves.
    pub fn resolve_duplicates(&self, threshold: f32, choices: Option<&[GroupChoice]>) -> Result<ResolvedBatch> {
        let _one_at_a_time = MOVES.lock().unwrap_or_else(|e| e.into_inner());
        let report = self.duplicates(threshold, &|_, _| {})?;
        let groups: Vec<DuplicateGroup> = match choices {
            None => report.groups,
            Some(choices) => choices.iter().map(|c| chosen_group(&report.groups, c)).collect::<Result<_>>()?,
        };
        let root = self.duplicates_folder()?;
        self.check_outside_library(&root, "move duplicates")?;
        let (batch, folder) = new_batch(&root)?;
        let report = self.move_duplicates(&groups, &folder)?;
        Ok(ResolvedBatch { batch, folder, report })
    }

    /// Puts back the files of one batch ([`Library::resolve_duplicates`]); the next index
    /// pass indexes them again.
    pub fn restore_duplicates(&self, batch: &str) -> Result<MoveReport> {
        let _one_at_a_time = MOVES.lock().unwrap_or_else(|e| e.into_inner());
        let mut parts = Path::new(batch).components();
        if !matches!((parts.next(), parts.next()), (Some(Component::Normal(_)), None)) {
            return Err(Error::Invalid(format!("{batch:?} is not the name of a batch of moved duplicates")));
        }
        let folder = self.duplicates_folder()?.join(batch);
        if !folder.is_dir() {
            return Err(Error::NotFound(format!("no batch of moved duplicates at {}", folder.display())));
        }
        restore_moved(&folder)
    }
}

/// Resolutions and restores run one at a time (two requests at once would otherwise move the
/// same files into two batches, or race on a batch's journal).
static MOVES: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// The group of `choice.keep` narrowed to it and the photos to move, each checked to be there.
fn chosen_group(groups: &[DuplicateGroup], choice: &GroupChoice) -> Result<DuplicateGroup> {
    if choice.move_out.is_empty() {
        return Err(Error::Invalid(format!("name at least one photo to move out of the group of #{}", choice.keep)));
    }
    let group = groups.iter().find(|g| g.images.iter().any(|i| i.id == choice.keep)).ok_or_else(|| {
        Error::Invalid(format!("photo #{} is in no group of duplicates now: look at the groups again", choice.keep))
    })?;
    if let Some(stray) =
        choice.move_out.iter().find(|id| **id == choice.keep || !group.images.iter().any(|i| i.id == **id))
    {
        return Err(Error::Invalid(format!(
            "photo #{stray} is not another photo of the group of #{}: look at the groups again",
            choice.keep
        )));
    }
    let images =
        group.images.iter().filter(|i| i.id == choice.keep || choice.move_out.contains(&i.id)).cloned().collect();
    Ok(DuplicateGroup { keep: choice.keep, images, similarity: group.similarity })
}

/// A new, empty batch folder below `root`, named after the time (UTC) it was made.
fn new_batch(root: &Path) -> Result<(String, PathBuf)> {
    let stamp = chrono::Utc::now().format("%Y-%m-%dT%H-%M-%SZ").to_string();
    for n in 1..1000 {
        let name = if n == 1 { stamp.clone() } else { format!("{stamp}-{n}") };
        let folder = root.join(&name);
        if !folder.exists() {
            return Ok((name, folder));
        }
    }
    Err(Error::Invalid(format!("{} holds too many batches made this second; try again", root.display())))
}
