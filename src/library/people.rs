//! People: every face in the library, grouped into persons the user can name, merge, hide and
//! correct, and searched by (`person:Anna`).
//!
//! The face pass ([`Library::find_faces`], run by itself after indexing: see `face_pass.rs`)
//! looks at each image whose content or face model changed since it was last looked at,
//! through a [`FaceFinder`] (the face model), and stores its faces at once. New faces then
//! join persons incrementally ([`crate::query::people`]).
//!
//! The user's decisions are kept where reclustering and a new model cannot lose them:
//! - naming, hiding or merging a person, and splitting a face off into a person of its own,
//!   **pin** the faces involved to their person: reclustering moves only unpinned faces, and a
//!   person with a name, a hidden flag or a pinned face keeps its id;
//! - "face F is not person P" is a stored correction that every grouping respects;
//! - when a new face model finds an image's faces again, each new face takes over the person,
//!   pin and corrections of the old face whose box it overlaps most
//!   ([`crate::query::people::match_boxes`]).
//!
//! A merge of B into A is a statement that B is A: corrections against B become corrections
//! against A, except for faces now in A (the later decision wins).

use std::collections::{HashMap, HashSet};

use serde::Serialize;

use super::Library;
use crate::error::{Error, Result};
use crate::models::faces::EmbeddingKind;
use crate::query::people::{ClusterOptions, FacePoint, MIN_BOX_OVERLAP, Placement, match_boxes, place_faces};
use crate::store::{FaceId, FaceScan, ImageId, NewFace, PeopleChange, Person, PersonId, StoredFace};

/// The setting that keeps the grouping's parameters.
pub(crate) const PEOPLE_SETTING: &str = "people";

/// The longest side images are looked at for faces, pixels (boxes are stored in the image's
/// own pixels): a 12 MP phone photo (4032 x 3024) is looked at in full, so that its small
/// faces are found (the model searches a large photo tile by tile).
pub const FACE_SIDE: u32 = 4096;

/// A face as a face model finds it.
#[derive(Debug, Clone, PartialEq)]
pub struct FoundFace {
    /// `[x, y, width, height]` in the pixels of the image handed to the model.
    pub bbox: [f32; 4],
    /// The detector's confidence.
    pub score: f32,
    /// Eyes, nose and mouth corners, in the same pixels.
    pub landmarks: [[f32; 2]; 5],
    /// The face's embedding (128 numbers for dlib's model, 512 for ArcFace's).
    pub embedding: Vec<f32>,
}

/// A face model: finds the faces in a photo, each with its embedding.
pub trait FaceFinder: Send + Sync {
    /// What identifies the model (its files): faces are found again when it changes.
    fn id(&self) -> String;

    /// The faces in an upright RGB photo.
    fn faces(&self, photo: &image::RgbImage) -> Result<Vec<FoundFace>>;

    /// The faces, or `None` when `stop` said to give up before they were all found (a model
    /// asks it between the parts of its work; this default looks at the whole photo).
    fn faces_unless(&self, photo: &image::RgbImage, stop: &dyn Fn() -> bool) -> Result<Option<Vec<FoundFace>>> {
        if stop() { Ok(None) } else { self.faces(photo).map(Some) }
    }
}

/// The face models ([`crate::models::faces::FaceModel`]: dlib's or InsightFace's) as the
/// library's face pass uses them.
impl FaceFinder for crate::models::faces::FaceModel {
    fn id(&self) -> String {
        crate::models::faces::FaceModel::id(self).to_string()
    }

    fn faces(&self, photo: &image::RgbImage) -> Result<Vec<FoundFace>> {
        Ok(crate::models::faces::FaceModel::faces(self, photo)?
            .into_iter()
            .map(|f| FoundFace { bbox: f.bbox, score: f.score, landmarks: f.landmarks, embedding: f.embedding })
            .collect())
    }

    fn faces_unless(&self, photo: &image::RgbImage, stop: &dyn Fn() -> bool) -> Result<Option<Vec<FoundFace>>> {
        Ok(crate::models::faces::FaceModel::scan_unless(self, photo, stop)?.map(|scan| {
            scan.faces
                .into_iter()
                .map(|f| FoundFace { bbox: f.bbox, score: f.score, landmarks: f.landmarks, embedding: f.embedding })
                .collect()
        }))
    }
}

/// What a face pass did.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct FaceReport {
    /// Images looked at.
    pub scanned: usize,
    /// Faces found in them.
    pub faces: usize,
    /// Images that could not be looked at, with why (they are tried again next time).
    pub failed: Vec<(ImageId, String)>,
    /// Faces put into persons.
    pub placed: usize,
    /// Persons formed.
    pub new_persons: usize,
}

/// One person as listed (`clipdex people`, `/api/people`).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PersonSummary {
    /// Its id.
    pub id: PersonId,
    /// Its name, once given.
    pub name: Option<String>,
    /// Whether it is hidden.
    pub hidden: bool,
    /// Its faces.
    pub faces: usize,
    /// The images they are in.
    pub images: usize,
    /// The face that stands for it.
    pub representative: Option<FaceDetails>,
}

/// One face as shown (`/api/images/{id}`'s `"faces"`, `clipdex faces`).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct FaceDetails {
    /// Its id.
    pub id: FaceId,
    /// The image it is in.
    pub image: ImageId,
    /// `[x, y, width, height]` in the upright image's pixels.
    #[serde(rename = "box")]
    pub bbox: [f32; 4],
    /// The detector's confidence.
    pub score: f32,
    /// Five `[x, y]` points.
    pub landmarks: [[f32; 2]; 5],
    /// Its person's id, if grouped.
    pub person_id: Option<PersonId>,
    /// Its person's name, if named.
    pub person: Option<String>,
}

/// Serialises changes of people within this process (each is read, decided and written).
static PEOPLE_LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn people_lock() -> std::sync::MutexGuard<'static, ()> {
    PEOPLE_LOCK.lock().unwrap_or_else(|e| e.into_inner())
}

fn details(face: &StoredFace, names: &HashMap<PersonId, Option<String>>) -> FaceDetails {
    FaceDetails {
        id: face.id,
        image: face.image,
        bbox: face.face.bbox,
        score: face.face.score,
        landmarks: face.face.landmarks,
        person_id: face.face.person,
        person: face.face.person.and_then(|p| names.get(&p).cloned().flatten()),
    }
}

impl Library {
    /// The grouping's parameters: as set, else the defaults for the library's face model's
    /// embeddings (dlib's Euclidean scale, or ArcFace's unit vectors: [`ClusterOptions::arcface`]).
    pub fn cluster_options(&self) -> Result<ClusterOptions> {
        if let Some(options) = self.store.setting(PEOPLE_SETTING)? {
            return Ok(options);
        }
        Ok(match self.face_embedding_kind()? {
            EmbeddingKind::ArcFace => ClusterOptions::arcface(),
            EmbeddingKind::Dlib => ClusterOptions::default(),
        })
    }

    /// Keeps the grouping's parameters for later passes.
    pub fn set_cluster_options(&self, options: &ClusterOptions) -> Result<()> {
        if !(options.max_distance > 0.0 && options.max_distance.is_finite()) || options.min_faces == 0 {
            return Err(Error::Invalid(format!(
                "grouping: max distance {} and min faces {} must both be above 0",
                options.max_distance, options.min_faces
            )));
        }
        self.store.set_setting(PEOPLE_SETTING, options)
    }

    /// Looks for faces in every image whose content or face model changed since its faces were
    /// last looked for, then groups the new faces (see [`Library::find_faces_with`]).
    pub fn find_faces(&self, finder: &dyn FaceFinder) -> Result<FaceReport> {
        self.find_faces_with(finder, &|_, _| {}, &|| false)
    }

    /// Stores an image's faces as found by a model (boxes in the image's pixels), carrying
    /// the person, pin and corrections of each old face over to the new face whose box
    /// overlaps it most. Returns how many faces the image has.
    pub fn store_found_faces(&self, id: ImageId, scan: &FaceScan, mut faces: Vec<NewFace>) -> Result<usize> {
        let _guard = people_lock();
        let old = self.store.faces_of(id)?;
        let mut corrections = Vec::new();
        if !old.is_empty() {
            let persons: HashSet<PersonId> = self.store.persons()?.iter().map(|p| p.id).collect();
            let mut fixes: HashMap<FaceId, Vec<PersonId>> = HashMap::new();
            for (face, person) in self.store.corrections()? {
                fixes.entry(face).or_default().push(person);
            }
            let old_boxes: Vec<[f32; 4]> = old.iter().map(|f| f.face.bbox).collect();
            let new_boxes: Vec<[f32; 4]> = faces.iter().map(|f| f.bbox).collect();
            for (at, matched) in match_boxes(&old_boxes, &new_boxes, MIN_BOX_OVERLAP).into_iter().enumerate() {
                let Some(j) = matched else { continue };
                let was = &old[j];
                faces[at].person = was.face.person.filter(|p| persons.contains(p));
                faces[at].pinned = was.face.pinned && faces[at].person.is_some();
                for &p in fixes.get(&was.id).into_iter().flatten() {
                    if persons.contains(&p) {
                        corrections.push((at, p));
                    }
                }
            }
        }
        let n = faces.len();
        self.store.replace_faces(id, scan, &faces, &corrections)?;
        Ok(n)
    }

    /// Groups the faces without a person (each model's faces among themselves). Returns how
    /// many faces were placed and how many persons formed.
    pub fn place_pending_faces(&self) -> Result<(usize, usize)> {
        let _guard = people_lock();
        let options = self.cluster_options()?;
        let all = self.store.all_faces()?;
        let persons: HashSet<PersonId> = self.store.persons()?.iter().map(|p| p.id).collect();
        let forbidden: HashSet<(FaceId, PersonId)> = self.store.corrections()?.into_iter().collect();
        let mut by_model: HashMap<&str, Vec<FacePoint>> = HashMap::new();
        for (face, model) in &all {
            by_model.entry(model.as_str()).or_default().push(FacePoint {
                id: face.id,
                embedding: &face.face.embedding,
                person: face.face.person.filter(|p| persons.contains(p)),
            });
        }
        let mut models: Vec<&str> = by_model.keys().copied().collect();
        models.sort_unstable();
        let mut change = PeopleChange::default();
        let mut placed = 0;
        for model in models {
            let points = &by_model[model];
            if points.iter().all(|p| p.person.is_some()) {
                continue;
            }
            let placements = place_faces(points, &forbidden, &options);
            let groups = placements
                .iter()
                .filter_map(|(_, p)| if let Placement::NewPerson(g) = p { Some(*g + 1) } else { None })
                .max()
                .unwrap_or(0);
            let ids = self.store.new_person_ids(groups)?;
            for &id in &ids {
                change.persons.push(Person { id, name: None, hidden: false, representative: None });
            }
            for (face, placement) in placements {
                let person = match placement {
                    Placement::Person(p) => p,
                    Placement::NewPerson(g) => ids[g],
                };
                change.assignments.push((face, Some(person), false));
                placed += 1;
            }
        }
        let new_persons = change.persons.len();
        self.store.apply_people(&change)?;
        Ok((placed, new_persons))
    }

    /// Groups every face again from scratch, keeping the user's decisions: persons with a
    /// name, a hidden flag or pinned faces keep their id and pinned faces; every other face is
    /// placed again. Returns how many faces were placed and how many persons formed.
    pub fn recluster(&self) -> Result<(usize, usize)> {
        {
            let _guard = people_lock();
            let all = self.store.all_faces()?;
            let pinned_persons: HashSet<PersonId> =
                all.iter().filter(|(f, _)| f.face.pinned).filter_map(|(f, _)| f.face.person).collect();
            let mut change = PeopleChange::default();
            for p in self.store.persons()? {
                if p.name.is_none() && !p.hidden && !pinned_persons.contains(&p.id) {
                    change.removed.push(p.id);
                }
            }
            for (f, _) in &all {
                if !f.face.pinned && f.face.person.is_some() {
                    change.assignments.push((f.id, None, false));
                }
            }
            self.store.apply_people(&change)?;
        }
        self.place_pending_faces()
    }

    /// Every person (the hidden ones too with `hidden`), most faces first, named ones before
    /// unnamed ones of as many faces; persons without a face or a name are left out.
    pub fn people(&self, hidden: bool) -> Result<Vec<PersonSummary>> {
        let all = self.store.all_faces()?;
        let persons = self.store.persons()?;
        let names: HashMap<PersonId, Option<String>> = persons.iter().map(|p| (p.id, p.name.clone())).collect();
        let mut faces_of: HashMap<PersonId, Vec<&StoredFace>> = HashMap::new();
        for (f, _) in &all {
            if let Some(p) = f.face.person {
                faces_of.entry(p).or_default().push(f);
            }
        }
        let mut out = Vec::new();
        for p in persons {
            if p.hidden && !hidden {
                continue;
            }
            let faces = faces_of.get(&p.id).map(Vec::as_slice).unwrap_or_default();
            if faces.is_empty() && p.name.is_none() {
                continue;
            }
            let images: HashSet<ImageId> = faces.iter().map(|f| f.image).collect();
            let representative = p
                .representative
                .and_then(|r| faces.iter().find(|f| f.id == r))
                .or_else(|| faces.iter().max_by(|a, b| a.face.score.total_cmp(&b.face.score).then(b.id.cmp(&a.id))))
                .map(|f| details(f, &names));
            out.push(PersonSummary {
                id: p.id,
                name: p.name,
                hidden: p.hidden,
                faces: faces.len(),
                images: images.len(),
                representative,
            });
        }
        out.sort_by(|a, b| b.faces.cmp(&a.faces).then(b.name.is_some().cmp(&a.name.is_some())).then(a.id.cmp(&b.id)));
        Ok(out)
    }

    /// The faces in an image, with their persons' names.
    pub fn faces_in(&self, image: ImageId) -> Result<Vec<FaceDetails>> {
        let names: HashMap<PersonId, Option<String>> =
            self.store.persons()?.into_iter().map(|p| (p.id, p.name)).collect();
        Ok(self.store.faces_of(image)?.iter().map(|f| details(f, &names)).collect())
    }

    /// The faces of a person, best-scored first.
    pub fn faces_of_person(&self, id: PersonId) -> Result<Vec<FaceDetails>> {
        let names: HashMap<PersonId, Option<String>> =
            self.store.persons()?.into_iter().map(|p| (p.id, p.name)).collect();
        let mut faces: Vec<FaceDetails> = self
            .store
            .all_faces()?
            .iter()
            .filter(|(f, _)| f.face.person == Some(id))
            .map(|(f, _)| details(f, &names))
            .collect();
        faces.sort_by(|a, b| b.score.total_cmp(&a.score).then(a.id.cmp(&b.id)));
        Ok(faces)
    }

    /// A person by id (digits) or name (compared case-insensitively).
    pub fn find_person(&self, spec: &str) -> Result<Person> {
        let persons = self.store.persons()?;
        let spec = spec.trim();
        if let Ok(id) = spec.parse::<PersonId>()
            && let Some(p) = persons.iter().find(|p| p.id == id)
        {
            return Ok(p.clone());
        }
        let lower = spec.to_lowercase();
        persons
            .into_iter()
            .find(|p| p.name.as_ref().is_some_and(|n| n.to_lowercase() == lower))
            .ok_or_else(|| Error::NotFound(format!("no person {spec:?}: `clipdex people` lists them with their ids")))
    }

    fn person(&self, id: PersonId) -> Result<Person> {
        self.store
            .persons()?
            .into_iter()
            .find(|p| p.id == id)
            .ok_or_else(|| Error::NotFound(format!("no person {id}: `clipdex people` lists them with their ids")))
    }

    fn face_of(&self, id: FaceId) -> Result<StoredFace> {
        self.store.face(id)?.ok_or_else(|| {
            Error::NotFound(format!("no face {id}: `clipdex people --json` and `/api/images/ID` list face ids"))
        })
    }

    /// The faces of a person, pinned: the user has just said who they are.
    fn pin_all(&self, person: PersonId, change: &mut PeopleChange) -> Result<()> {
        for (f, _) in self.store.all_faces()? {
            if f.face.person == Some(person) && !f.face.pinned {
                change.assignments.push((f.id, Some(person), true));
            }
        }
        Ok(())
    }

    /// Names a person (an empty name takes the name away). Its faces are pinned to it. Two
    /// persons cannot share a name: merge them instead.
    pub fn name_person(&self, id: PersonId, name: &str) -> Result<()> {
        let _guard = people_lock();
        let mut person = self.person(id)?;
        let name = name.trim();
        if name.chars().count() > 200 || name.chars().any(|c| c.is_ascii_control()) {
            return Err(Error::Invalid("a person's name is at most 200 characters, without control characters".into()));
        }
        if !name.is_empty()
            && let Some(other) = self
                .store
                .persons()?
                .into_iter()
                .find(|p| p.id != id && p.name.as_ref().is_some_and(|n| n.to_lowercase() == name.to_lowercase()))
        {
            return Err(Error::Invalid(format!(
                "person {} is already named {name:?}: merge the two with `clipdex people --merge {} {id}`",
                other.id, other.id
            )));
        }
        person.name = (!name.is_empty()).then(|| name.to_string());
        let mut change = PeopleChange { persons: vec![person], ..Default::default() };
        self.pin_all(id, &mut change)?;
        self.store.apply_people(&change)
    }

    /// Hides a person from the list of people (or shows it again). Its faces are pinned to it.
    pub fn hide_person(&self, id: PersonId, hidden: bool) -> Result<()> {
        let _guard = people_lock();
        let mut person = self.person(id)?;
        person.hidden = hidden;
        let mut change = PeopleChange { persons: vec![person], ..Default::default() };
        self.pin_all(id, &mut change)?;
        self.store.apply_people(&change)
    }

    /// Merges person `from` into person `into`: every face of `from` is pinned to `into`,
    /// `into` takes `from`'s name if it has none, and corrections against `from` hold
    /// against `into` (but for faces now in `into`).
    pub fn merge_people(&self, into: PersonId, from: PersonId) -> Result<()> {
        if into == from {
            return Err(Error::Invalid(format!("person {into} cannot be merged into itself")));
        }
        let _guard = people_lock();
        let mut target = self.person(into)?;
        let source = self.person(from)?;
        if target.name.is_none() {
            target.name = source.name.clone();
        }
        target.hidden = target.hidden || source.hidden;
        let mut change = PeopleChange { persons: vec![target], removed: vec![from], ..Default::default() };
        let mut members = HashSet::new();
        for (f, _) in self.store.all_faces()? {
            if f.face.person == Some(from) || f.face.person == Some(into) {
                members.insert(f.id);
                change.assignments.push((f.id, Some(into), true));
            }
        }
        for (face, person) in self.store.corrections()? {
            if person == from {
                change.dropped_corrections.push((face, from));
                if !members.contains(&face) {
                    change.corrections.push((face, into));
                }
            }
            if person == into && members.contains(&face) {
                change.dropped_corrections.push((face, into));
            }
        }
        self.store.apply_people(&change)
    }

    /// Splits a face off its person into a new person of its own (pinned there), marked as
    /// not its old person. Returns the new person's id.
    pub fn split_face(&self, face: FaceId) -> Result<PersonId> {
        let _guard = people_lock();
        let f = self.face_of(face)?;
        let id = self.store.new_person_ids(1)?[0];
        let mut change = PeopleChange {
            persons: vec![Person { id, name: None, hidden: false, representative: Some(face) }],
            assignments: vec![(face, Some(id), true)],
            ..Default::default()
        };
        if let Some(old) = f.face.person {
            change.corrections.push((face, old));
        }
        self.store.apply_people(&change)?;
        Ok(id)
    }

    /// Marks a face as not being a person: it leaves the person if it is in it, and no
    /// grouping puts it there again.
    pub fn not_person(&self, face: FaceId, person: PersonId) -> Result<()> {
        let _guard = people_lock();
        let f = self.face_of(face)?;
        self.person(person)?;
        let mut change = PeopleChange { corrections: vec![(face, person)], ..Default::default() };
        if f.face.person == Some(person) {
            change.assignments.push((face, None, false));
        }
        self.store.apply_people(&change)
    }

    /// Deletes every face, person, name and correction. The next face pass finds the faces
    /// again unless the library is run without a face model.
    pub fn forget_faces(&self) -> Result<()> {
        let _guard = people_lock();
        self.store.forget_faces()
    }

    /// The images in which every one of the named persons is, newest first.
    pub fn images_with_persons(&self, names: &[String]) -> Result<Vec<ImageId>> {
        let mut wanted = Vec::new();
        for name in names {
            wanted.push(self.find_named(name)?.id);
        }
        let mut seen: HashMap<ImageId, HashSet<PersonId>> = HashMap::new();
        for (f, _) in self.store.all_faces()? {
            if let Some(p) = f.face.person
                && wanted.contains(&p)
            {
                seen.entry(f.image).or_default().insert(p);
            }
        }
        let mut images: Vec<(i64, ImageId)> = Vec::new();
        for (image, persons) in seen {
            if persons.len() == wanted.len()
                && let Some(record) = self.store.image(image)?
            {
                images.push((record.date(), image));
            }
        }
        images.sort_unstable_by(|a, b| b.cmp(a));
        Ok(images.into_iter().map(|(_, id)| id).collect())
    }

    /// A person by name, or an error that says which names there are.
    pub(super) fn find_named(&self, name: &str) -> Result<Person> {
        let lower = name.to_lowercase();
        let persons = self.store.persons()?;
        if let Some(p) = persons.iter().find(|p| p.name.as_ref().is_some_and(|n| n.to_lowercase() == lower)) {
            return Ok(p.clone());
        }
        let mut known: Vec<&str> = persons.iter().filter_map(|p| p.name.as_deref()).collect();
        known.sort_unstable();
        Err(Error::Invalid(if known.is_empty() {
            format!("person:{name}: no person has a name yet (`clipdex people --name ID NAME` names one)")
        } else {
            format!("person:{name}: no person of that name; the named persons are {}", known.join(", "))
        }))
    }
}
