//! Faces and people in the store: each image's faces as the face model found them (box,
//! landmarks, score, embedding), the persons they are grouped into, and the user's corrections
//! ("face F is not person P").
//!
//! An image's faces are written all at once, with the model and content they were found in
//! ([`FaceScan`]), so a crash leaves an image's old faces or its new ones, never half of each,
//! and a face pass knows which images it has done. Changes to people (a naming, a merge, a
//! reclustering) are one [`PeopleChange`] applied in one transaction. Faces go with their
//! image, in every backend.

use serde::{Deserialize, Serialize};

use super::ImageId;
use crate::error::Result;

/// A face's identity in the database. A face found again by another model is another face.
pub type FaceId = u64;

/// A person's identity in the database: kept through reclustering while the person holds a
/// user decision (a name, a hidden flag, faces placed by the user).
pub type PersonId = u64;

/// What an image's faces were found with: the face model's id and the image's content hash.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FaceScan {
    /// The face model (detector and embedding) that found them.
    pub model: String,
    /// The image's content hash when they were found.
    pub hash: String,
}

/// A face as the model found it, before it is stored.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NewFace {
    /// `[x, y, width, height]` in the upright image's pixels.
    #[serde(rename = "box")]
    pub bbox: [f32; 4],
    /// The detector's confidence.
    pub score: f32,
    /// Eyes, nose and mouth corners: five `[x, y]` points in the upright image's pixels.
    pub landmarks: [[f32; 2]; 5],
    /// The face's embedding (128 numbers for dlib's model, 512 for ArcFace's).
    pub embedding: Vec<f32>,
    /// The person it belongs to, if grouped.
    pub person: Option<PersonId>,
    /// Whether the user put it in its person (a merge, a split, a naming): reclustering keeps
    /// it there.
    pub pinned: bool,
}

/// A stored face.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StoredFace {
    /// Its id.
    pub id: FaceId,
    /// The image it is in.
    pub image: ImageId,
    /// Box, landmarks, score, embedding, person.
    #[serde(flatten)]
    pub face: NewFace,
}

/// A person: a group of faces, with what the user said about it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Person {
    /// Its id.
    pub id: PersonId,
    /// The name the user gave it.
    pub name: Option<String>,
    /// Hidden from the list of people (the user does not care about them).
    pub hidden: bool,
    /// The face that stands for the person (its best-scored face when the user chose none).
    pub representative: Option<FaceId>,
}

/// A change of people, applied at once: persons written or removed, faces moved, corrections
/// added or dropped. Faces and corrections of faces no longer stored are skipped.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct PeopleChange {
    /// Persons to write (new ones, or new names and flags).
    pub persons: Vec<Person>,
    /// Persons to remove (their faces must be moved by `assignments`; faces still pointing at
    /// a removed person become unassigned).
    pub removed: Vec<PersonId>,
    /// Faces to (re)assign: `(face, person or none, pinned)`.
    pub assignments: Vec<(FaceId, Option<PersonId>, bool)>,
    /// Corrections to add: face F is not person P.
    pub corrections: Vec<(FaceId, PersonId)>,
    /// Corrections to drop.
    pub dropped_corrections: Vec<(FaceId, PersonId)>,
}

impl PeopleChange {
    /// Whether the change changes nothing.
    pub fn is_empty(&self) -> bool {
        self.persons.is_empty()
            && self.removed.is_empty()
            && self.assignments.is_empty()
            && self.corrections.is_empty()
            && self.dropped_corrections.is_empty()
    }
}

/// Faces, persons and corrections (see the module documentation).
pub trait FaceStore {
    /// What an image's faces were found with, when they were looked for.
    fn face_scan(&self, image: ImageId) -> Result<Option<FaceScan>>;

    /// Replaces an image's faces with `faces` (none: the image was looked at and holds no
    /// face), recording `scan`, and adds `corrections` (an index into `faces`, and the person
    /// that face is not) in the same transaction. Returns the new faces' ids, or `None` (and
    /// stores nothing) when the image is no longer stored.
    fn replace_faces(
        &self,
        image: ImageId,
        scan: &FaceScan,
        faces: &[NewFace],
        corrections: &[(usize, PersonId)],
    ) -> Result<Option<Vec<FaceId>>>;

    /// An image's faces, in the order they were stored.
    fn faces_of(&self, image: ImageId) -> Result<Vec<StoredFace>>;

    /// One face.
    fn face(&self, id: FaceId) -> Result<Option<StoredFace>>;

    /// Every stored face with the model that found it, in id order.
    fn all_faces(&self) -> Result<Vec<(StoredFace, String)>>;

    /// Every person, in id order.
    fn persons(&self) -> Result<Vec<Person>>;

    /// Every correction: face F is not person P.
    fn corrections(&self) -> Result<Vec<(FaceId, PersonId)>>;

    /// `n` fresh person ids.
    fn new_person_ids(&self, n: usize) -> Result<Vec<PersonId>>;

    /// Applies a change of people in one transaction.
    fn apply_people(&self, change: &PeopleChange) -> Result<()>;

    /// Deletes every face, person, correction and face scan.
    fn forget_faces(&self) -> Result<()>;

    /// How many faces are stored.
    fn face_count(&self) -> Result<u64>;

    /// Whether a person of this name (compared case-insensitively) is in the image.
    fn image_has_person(&self, image: ImageId, name: &str) -> Result<bool>;
}
