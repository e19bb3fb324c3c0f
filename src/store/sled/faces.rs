//! Faces and people in sled. `faces` holds each image's faces in one value, with the scan
//! they came from ([`ImageFaces`]), so an image's faces change at once and go with the image
//! (its removal drops the key). `face_index` maps a face id to its image; an entry whose image
//! no longer holds the face is stale (the image went, or was scanned again) and is ignored and
//! pruned. `persons` maps a person id to its record; `face_corrections` holds `face ++ person`
//! keys.

use serde::{Deserialize, Serialize};
use sled::Transactional;
use sled::transaction::TransactionalTree;

use super::keys::{id_from_key, id_key};
use super::{SledStore, TxResult, abort, json, parse};
use crate::error::Result;
use crate::store::faces::{FaceId, FaceScan, FaceStore, NewFace, PeopleChange, Person, PersonId, StoredFace};
use crate::store::{Backend, ImageId};

/// One image's faces as stored.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(super) struct ImageFaces {
    scan: FaceScan,
    faces: Vec<StoredFace>,
}

fn correction_key(face: FaceId, person: PersonId) -> [u8; 16] {
    let mut k = [0u8; 16];
    k[..8].copy_from_slice(&face.to_be_bytes());
    k[8..].copy_from_slice(&person.to_be_bytes());
    k
}

fn correction_of(key: &[u8]) -> Option<(FaceId, PersonId)> {
    Some((id_from_key(key.get(..8)?)?, id_from_key(key.get(8..16)?)?))
}

impl SledStore {
    fn image_faces(&self, image: ImageId) -> Result<Option<ImageFaces>> {
        match self.faces.get(id_key(image)).map_err(|e| self.err(e))? {
            Some(b) => Ok(Some(parse(&self.dir, "faces", &b)?)),
            None => Ok(None),
        }
    }

    /// The faces records' problems: faces of missing images, faces of missing persons,
    /// faces in a person they are marked as not being.
    pub(super) fn check_faces(&self, problems: &mut Vec<String>) -> Result<()> {
        let persons: std::collections::HashSet<PersonId> = self.persons()?.iter().map(|p| p.id).collect();
        let corrections: std::collections::HashSet<(FaceId, PersonId)> = self.corrections()?.into_iter().collect();
        for kv in self.faces.iter() {
            let (k, v) = kv.map_err(|e| self.err(e))?;
            let Some(image) = id_from_key(&k) else { continue };
            if self.images.get(k).map_err(|e| self.err(e))?.is_none() {
                problems.push(format!("faces of missing image {image}"));
            }
            let faces: ImageFaces = parse(&self.dir, "faces", &v)?;
            for f in &faces.faces {
                if let Some(p) = f.face.person {
                    if !persons.contains(&p) {
                        problems.push(format!("face {} belongs to missing person {p}", f.id));
                    }
                    if corrections.contains(&(f.id, p)) {
                        problems.push(format!("face {} is in person {p}, which it is marked as not being", f.id));
                    }
                }
            }
        }
        Ok(())
    }
}

/// Inside a transaction: an image's faces.
fn tx_image_faces(faces: &TransactionalTree, image: ImageId) -> TxResult<Option<ImageFaces>> {
    match faces.get(id_key(image))? {
        Some(b) => serde_json::from_slice(&b).map(Some).map_err(abort),
        None => Ok(None),
    }
}

impl FaceStore for SledStore {
    fn face_scan(&self, image: ImageId) -> Result<Option<FaceScan>> {
        Ok(self.image_faces(image)?.map(|f| f.scan))
    }

    fn replace_faces(
        &self,
        image: ImageId,
        scan: &FaceScan,
        faces: &[NewFace],
        corrections: &[(usize, PersonId)],
    ) -> Result<Option<Vec<FaceId>>> {
        let ids: Vec<FaceId> =
            (0..faces.len()).map(|_| self.db.generate_id().map_err(|e| self.err(e))).collect::<Result<_>>()?;
        let stored: Vec<StoredFace> =
            faces.iter().zip(&ids).map(|(f, &id)| StoredFace { id, image, face: f.clone() }).collect();
        let value = json(&ImageFaces { scan: scan.clone(), faces: stored });
        // The corrections of the faces replaced go with them.
        let mut stale = Vec::new();
        for old in self.faces_of(image)? {
            for k in self.face_corrections.scan_prefix(id_key(old.id)).keys() {
                stale.push(k.map_err(|e| self.err(e))?);
            }
        }
        let outcome = (&self.images, &self.faces, &self.face_index, &self.face_corrections)
            .transaction(|(images, faces_tree, index, fixes)| {
                if images.get(id_key(image))?.is_none() {
                    return Ok(false);
                }
                if let Some(old) = tx_image_faces(faces_tree, image)? {
                    for f in old.faces {
                        index.remove(&id_key(f.id))?;
                    }
                }
                for k in &stale {
                    fixes.remove(k)?;
                }
                faces_tree.insert(&id_key(image), value.as_slice())?;
                for id in &ids {
                    index.insert(&id_key(*id), &id_key(image))?;
                }
                for &(at, person) in corrections {
                    if let Some(id) = ids.get(at) {
                        fixes.insert(&correction_key(*id, person), &[] as &[u8])?;
                    }
                }
                Ok(true)
            })
            .map_err(|e: sled::transaction::TransactionError<String>| self.err(format!("store faces: {e}")))?;
        Ok(outcome.then_some(ids))
    }

    fn faces_of(&self, image: ImageId) -> Result<Vec<StoredFace>> {
        Ok(self.image_faces(image)?.map(|f| f.faces).unwrap_or_default())
    }

    fn face(&self, id: FaceId) -> Result<Option<StoredFace>> {
        let Some(image) = self.face_index.get(id_key(id)).map_err(|e| self.err(e))? else { return Ok(None) };
        let Some(image) = id_from_key(&image) else { return Ok(None) };
        Ok(self.faces_of(image)?.into_iter().find(|f| f.id == id))
    }

    fn all_faces(&self) -> Result<Vec<(StoredFace, String)>> {
        let mut all = Vec::new();
        for v in self.faces.iter().values() {
            let faces: ImageFaces = parse(&self.dir, "faces", &v.map_err(|e| self.err(e))?)?;
            all.extend(faces.faces.into_iter().map(|f| (f, faces.scan.model.clone())));
        }
        all.sort_by_key(|(f, _)| f.id);
        Ok(all)
    }

    fn persons(&self) -> Result<Vec<Person>> {
        self.persons.iter().values().map(|v| parse(&self.dir, "person", &v.map_err(|e| self.err(e))?)).collect()
    }

    fn corrections(&self) -> Result<Vec<(FaceId, PersonId)>> {
        let mut all = Vec::new();
        for k in self.face_corrections.iter().keys() {
            if let Some(c) = correction_of(&k.map_err(|e| self.err(e))?) {
                all.push(c);
            }
        }
        Ok(all)
    }

    fn new_person_ids(&self, n: usize) -> Result<Vec<PersonId>> {
        // Person ids and face ids come from one counter: never 0, never reused.
        (0..n).map(|_| self.db.generate_id().map(|id| id + 1).map_err(|e| self.err(e))).collect()
    }

    fn apply_people(&self, change: &PeopleChange) -> Result<()> {
        if change.is_empty() {
            return Ok(());
        }
        // Which image holds each face moved (read before the transaction; checked inside it).
        let mut images_of = std::collections::BTreeMap::<ImageId, Vec<usize>>::new();
        for (at, (face, _, _)) in change.assignments.iter().enumerate() {
            if let Some(image) =
                self.face_index.get(id_key(*face)).map_err(|e| self.err(e))?.and_then(|v| id_from_key(&v))
            {
                images_of.entry(image).or_default().push(at);
            }
        }
        let removed: std::collections::HashSet<PersonId> = change.removed.iter().copied().collect();
        let persons: Vec<(PersonId, Vec<u8>)> = change.persons.iter().map(|p| (p.id, json(p))).collect();
        (&self.faces, &self.persons, &self.face_corrections)
            .transaction(|(faces, persons_tree, fixes)| {
                for (image, moves) in &images_of {
                    let Some(mut stored) = tx_image_faces(faces, *image)? else { continue };
                    for &at in moves {
                        let (face, person, pinned) = change.assignments[at];
                        if let Some(f) = stored.faces.iter_mut().find(|f| f.id == face) {
                            f.face.person = person;
                            f.face.pinned = pinned;
                        }
                    }
                    faces.insert(&id_key(*image), json(&stored))?;
                }
                for id in &change.removed {
                    persons_tree.remove(&id_key(*id))?;
                }
                for (id, bytes) in &persons {
                    persons_tree.insert(&id_key(*id), bytes.as_slice())?;
                }
                for &(face, person) in &change.dropped_corrections {
                    fixes.remove(&correction_key(face, person))?;
                }
                for &(face, person) in &change.corrections {
                    fixes.insert(&correction_key(face, person), &[] as &[u8])?;
                }
                Ok(())
            })
            .map_err(|e: sled::transaction::TransactionError<String>| self.err(format!("store people: {e}")))?;
        if !removed.is_empty() {
            // Faces still pointing at a removed person (the caller moved the ones it knew of)
            // become unassigned; corrections naming it go.
            let mut orphans = Vec::new();
            for (face, _) in self.all_faces()? {
                if face.face.person.is_some_and(|p| removed.contains(&p)) {
                    orphans.push((face.id, None, false));
                }
            }
            let stale: Vec<(FaceId, PersonId)> =
                self.corrections()?.into_iter().filter(|(_, p)| removed.contains(p)).collect();
            if !orphans.is_empty() || !stale.is_empty() {
                self.apply_people(&PeopleChange {
                    assignments: orphans,
                    dropped_corrections: stale,
                    ..Default::default()
                })?;
            }
        }
        Ok(())
    }

    fn forget_faces(&self) -> Result<()> {
        for tree in [&self.faces, &self.face_index, &self.persons, &self.face_corrections] {
            tree.clear().map_err(|e| self.err(e))?;
        }
        self.flush()
    }

    fn image_has_person(&self, image: ImageId, name: &str) -> Result<bool> {
        let name = name.to_lowercase();
        let mut seen = std::collections::HashSet::new();
        for face in self.faces_of(image)? {
            let Some(p) = face.face.person else { continue };
            if !seen.insert(p) {
                continue;
            }
            if let Some(v) = self.persons.get(id_key(p)).map_err(|e| self.err(e))? {
                let person: Person = parse(&self.dir, "person", &v)?;
                if person.name.is_some_and(|n| n.to_lowercase() == name) {
                    return Ok(true);
                }
            }
        }
        Ok(false)
    }

    fn face_count(&self) -> Result<u64> {
        let mut n = 0;
        for v in self.faces.iter().values() {
            let faces: ImageFaces = parse(&self.dir, "faces", &v.map_err(|e| self.err(e))?)?;
            n += faces.faces.len() as u64;
        }
        Ok(n)
    }
}
