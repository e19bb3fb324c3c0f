//! Tags given by hand (the web UI's "Add a tag" on selected photos): stored beside the
//! auto-tags, so `tag:LABEL` finds them and the tag counts include them, and recorded by
//! content hash in a setting, so that an auto-tagging run with another vocabulary, which
//! replaces an image's tags, gives them back ([`crate::query::autotag::autotag_store`]).

use std::collections::{BTreeMap, HashMap};

use serde::{Deserialize, Serialize};

use super::Library;
use crate::error::{Error, Result};
use crate::query::autotag::user_tag;
use crate::store::ImageId;

/// The setting holding the tags given by hand.
pub(super) const USER_TAGS_SETTING: &str = "user_tags";

/// The vocabulary fingerprint of an image that has only tags given by hand (auto-tagging
/// runs tag it, keeping them).
const BY_HAND: &str = "by-hand";

/// The longest tag, in characters.
pub const MAX_TAG_CHARS: usize = 100;

#[derive(Debug, Default, Serialize, Deserialize)]
struct UserTags {
    /// Content hash → labels, in the order they were given.
    by_hash: BTreeMap<String, Vec<String>>,
}

impl Library {
    /// The tags given by hand: labels by content hash.
    pub fn user_tags(&self) -> Result<HashMap<String, Vec<String>>> {
        Ok(self.store.setting::<UserTags>(USER_TAGS_SETTING)?.unwrap_or_default().by_hash.into_iter().collect())
    }

    /// Gives the tag `label` to each image of `ids` (an image that has it keeps it once); the
    /// number of images tagged. Every id is checked before anything is recorded.
    pub fn add_tag(&self, ids: &[ImageId], label: &str) -> Result<u64> {
        // Counted as given (as the API's schema counts it), then trimmed.
        let too_long = label.chars().count() > MAX_TAG_CHARS;
        let label = label.trim();
        if label.is_empty() || too_long || label.chars().any(char::is_control) {
            return Err(Error::Invalid(format!(
                "a tag is 1 to {MAX_TAG_CHARS} characters without control characters, not {label:?}"
            )));
        }
        if ids.is_empty() {
            return Err(Error::Invalid("name at least one image to tag".into()));
        }
        let mut records = Vec::with_capacity(ids.len());
        for &id in ids {
            let record = self.store.image(id)?.ok_or_else(|| Error::NotFound(format!("no image with id {id}")))?;
            records.push((id, record.hash));
        }
        // Recorded first: should the process stop half-way, the next auto-tagging run still
        // gives the tag to the images not yet tagged.
        let mut given = self.store.setting::<UserTags>(USER_TAGS_SETTING)?.unwrap_or_default();
        for (_, hash) in &records {
            let labels = given.by_hash.entry(hash.clone()).or_default();
            if !labels.iter().any(|l| l == label) {
                labels.push(label.to_string());
            }
        }
        self.store.set_setting(USER_TAGS_SETTING, &given)?;
        let mut tagged = 0;
        for (id, _) in records {
            if self.give_tags(id, &[label])? {
                tagged += 1;
            }
        }
        self.store.flush()?;
        Ok(tagged)
    }

    /// Gives the tags given by hand back to images that lack them: a photo moved out and put
    /// back (an undone duplicate resolution), or renamed outside clipdex, is indexed under a
    /// new id with no tags; its content hash still names its tags. Nothing to do (no scan)
    /// when no tag was ever given by hand. The number of images that hold their tags.
    pub(super) fn reapply_user_tags(&self) -> Result<u64> {
        let given = self.store.setting::<UserTags>(USER_TAGS_SETTING)?.unwrap_or_default();
        if given.by_hash.is_empty() {
            return Ok(0);
        }
        let mut tagged = 0;
        for entry in self.store.images() {
            let (id, record) = entry?;
            let Some(labels) = given.by_hash.get(&record.hash) else { continue };
            let labels: Vec<&str> = labels.iter().map(String::as_str).collect();
            if self.give_tags(id, &labels)? {
                tagged += 1;
            }
        }
        Ok(tagged)
    }

    /// Puts the `labels` the image lacks in front of its tags (in the order given), writing
    /// only when one is missing; whether the image is stored with them now. An image without
    /// tags gets the [`BY_HAND`] vocabulary.
    fn give_tags(&self, id: ImageId, labels: &[&str]) -> Result<bool> {
        let (vocabulary, mut tags) = self.store.tags_of(id)?.unwrap_or_else(|| (BY_HAND.to_string(), Vec::new()));
        let missing: Vec<&str> = labels.iter().copied().filter(|l| !tags.iter().any(|t| t.label == *l)).collect();
        if missing.is_empty() {
            // Nothing to add: the image has tags, so it is stored.
            return Ok(true);
        }
        for label in missing.into_iter().rev() {
            tags.insert(0, user_tag(label));
        }
        self.store.set_tags(id, &vocabulary, &tags)
    }
}
