//! Faces and people in PostgreSQL (`migrations/postgres/0005_faces.sql`): an image's faces
//! hang from its face scan and go with it (and with the image); face embeddings are pgvector
//! values.

use postgres::Row;

use super::{PgStore, TxError, i64_of, id_of, u64_of};
use crate::error::Result;
use crate::store::ImageId;
use crate::store::faces::{FaceId, FaceScan, FaceStore, NewFace, PeopleChange, Person, PersonId, StoredFace};

const FACE_COLUMNS: &str = "id, image_id, box, landmarks, score, embedding::real[], person_id, pinned";

fn face_of(r: &Row) -> StoredFace {
    let bbox: Vec<f32> = r.get(2);
    let points: Vec<f32> = r.get(3);
    let mut b = [0f32; 4];
    for (slot, v) in b.iter_mut().zip(&bbox) {
        *slot = *v;
    }
    let mut landmarks = [[0f32; 2]; 5];
    for (i, pair) in points.chunks(2).take(5).enumerate() {
        landmarks[i] = [pair[0], pair.get(1).copied().unwrap_or(0.0)];
    }
    StoredFace {
        id: id_of(r, 0),
        image: id_of(r, 1),
        face: NewFace {
            bbox: b,
            score: r.get(4),
            landmarks,
            embedding: r.get(5),
            person: r.get::<_, Option<i64>>(6).map(u64_of),
            pinned: r.get(7),
        },
    }
}

fn person_of(r: &Row) -> Person {
    Person { id: id_of(r, 0), name: r.get(1), hidden: r.get(2), representative: r.get::<_, Option<i64>>(3).map(u64_of) }
}

impl FaceStore for PgStore {
    fn face_scan(&self, image: ImageId) -> Result<Option<FaceScan>> {
        let row = self.query_opt("SELECT model, hash FROM face_scans WHERE image_id = $1", &[&i64_of(image)])?;
        Ok(row.map(|r| FaceScan { model: r.get(0), hash: r.get(1) }))
    }

    fn replace_faces(
        &self,
        image: ImageId,
        scan: &FaceScan,
        faces: &[NewFace],
        corrections: &[(usize, PersonId)],
    ) -> Result<Option<Vec<FaceId>>> {
        let id = i64_of(image);
        self.tx("store faces", |tx| {
            if tx.query_opt("SELECT 1 FROM images WHERE id = $1 FOR KEY SHARE", &[&id])?.is_none() {
                return Ok(None);
            }
            // The old faces go with the old scan (a cascade), their corrections with them.
            tx.execute("DELETE FROM face_scans WHERE image_id = $1", &[&id])?;
            tx.execute(
                "INSERT INTO face_scans (image_id, model, hash) VALUES ($1, $2, $3)",
                &[&id, &scan.model, &scan.hash],
            )?;
            let insert = tx.prepare(
                "INSERT INTO faces (id, image_id, box, landmarks, score, embedding, person_id, pinned)
                 VALUES (nextval('face_ids'), $1, $2, $3, $4, $5::real[]::vector,
                         (SELECT id FROM persons WHERE id = $6), $7)
                 RETURNING id",
            )?;
            let mut ids = Vec::with_capacity(faces.len());
            for f in faces {
                let points: Vec<f32> = f.landmarks.iter().flatten().copied().collect();
                let person = f.person.map(i64_of);
                let row = tx.query_one(
                    &insert,
                    &[&id, &f.bbox.to_vec(), &points, &f.score, &f.embedding, &person, &f.pinned],
                )?;
                ids.push(id_of(&row, 0));
            }
            for &(at, person) in corrections {
                if let Some(face) = ids.get(at) {
                    tx.execute(
                        "INSERT INTO face_corrections (face_id, person_id)
                         SELECT $1::bigint, id FROM persons WHERE id = $2 ON CONFLICT DO NOTHING",
                        &[&i64_of(*face), &i64_of(person)],
                    )?;
                }
            }
            Ok::<_, TxError>(Some(ids))
        })
    }

    fn faces_of(&self, image: ImageId) -> Result<Vec<StoredFace>> {
        let sql = format!("SELECT {FACE_COLUMNS} FROM faces WHERE image_id = $1 ORDER BY id");
        Ok(self.query(&sql, &[&i64_of(image)])?.iter().map(face_of).collect())
    }

    fn face(&self, id: FaceId) -> Result<Option<StoredFace>> {
        let sql = format!("SELECT {FACE_COLUMNS} FROM faces WHERE id = $1");
        Ok(self.query_opt(&sql, &[&i64_of(id)])?.as_ref().map(face_of))
    }

    fn all_faces(&self) -> Result<Vec<(StoredFace, String)>> {
        let sql =
            "SELECT f.id, f.image_id, f.box, f.landmarks, f.score, f.embedding::real[], f.person_id, f.pinned, s.model
                   FROM faces f JOIN face_scans s ON s.image_id = f.image_id ORDER BY f.id";
        Ok(self.query(sql, &[])?.iter().map(|r| (face_of(r), r.get(8))).collect())
    }

    fn persons(&self) -> Result<Vec<Person>> {
        Ok(self
            .query("SELECT id, name, hidden, representative FROM persons ORDER BY id", &[])?
            .iter()
            .map(person_of)
            .collect())
    }

    fn corrections(&self) -> Result<Vec<(FaceId, PersonId)>> {
        let rows = self.query("SELECT face_id, person_id FROM face_corrections ORDER BY face_id, person_id", &[])?;
        Ok(rows.iter().map(|r| (id_of(r, 0), id_of(r, 1))).collect())
    }

    fn new_person_ids(&self, n: usize) -> Result<Vec<PersonId>> {
        let rows = self.query("SELECT nextval('person_ids') FROM generate_series(1, $1::bigint)", &[&(n as i64)])?;
        Ok(rows.iter().map(|r| id_of(r, 0)).collect())
    }

    fn apply_people(&self, change: &PeopleChange) -> Result<()> {
        if change.is_empty() {
            return Ok(());
        }
        self.tx("store people", |tx| {
            for p in &change.persons {
                tx.execute(
                    "INSERT INTO persons (id, name, hidden, representative) VALUES ($1, $2, $3, $4)
                     ON CONFLICT (id) DO UPDATE SET name = EXCLUDED.name, hidden = EXCLUDED.hidden,
                                                    representative = EXCLUDED.representative",
                    &[&i64_of(p.id), &p.name, &p.hidden, &p.representative.map(i64_of)],
                )?;
            }
            let update = tx.prepare(
                "UPDATE faces SET person_id = (SELECT id FROM persons WHERE id = $2), pinned = $3 WHERE id = $1",
            )?;
            for &(face, person, pinned) in &change.assignments {
                tx.execute(&update, &[&i64_of(face), &person.map(i64_of), &pinned])?;
            }
            for id in &change.removed {
                // Faces left pointing at it become unassigned (ON DELETE SET NULL), unpinned.
                tx.execute("UPDATE faces SET pinned = false WHERE person_id = $1", &[&i64_of(*id)])?;
                tx.execute("DELETE FROM persons WHERE id = $1", &[&i64_of(*id)])?;
            }
            for &(face, person) in &change.dropped_corrections {
                tx.execute(
                    "DELETE FROM face_corrections WHERE face_id = $1 AND person_id = $2",
                    &[&i64_of(face), &i64_of(person)],
                )?;
            }
            for &(face, person) in &change.corrections {
                tx.execute(
                    "INSERT INTO face_corrections (face_id, person_id)
                     SELECT f.id, p.id FROM faces f, persons p WHERE f.id = $1 AND p.id = $2
                     ON CONFLICT DO NOTHING",
                    &[&i64_of(face), &i64_of(person)],
                )?;
            }
            Ok::<_, TxError>(())
        })
    }

    fn forget_faces(&self) -> Result<()> {
        self.tx("forget faces", |tx| {
            tx.batch_execute(
                "DELETE FROM face_corrections; DELETE FROM faces; DELETE FROM face_scans; DELETE FROM persons;",
            )?;
            Ok::<_, TxError>(())
        })
    }

    fn image_has_person(&self, image: ImageId, name: &str) -> Result<bool> {
        let row = self.query_opt(
            "SELECT 1 FROM faces f JOIN persons p ON p.id = f.person_id
             WHERE f.image_id = $1 AND lower(p.name) = $2 LIMIT 1",
            &[&i64_of(image), &name.to_lowercase()],
        )?;
        Ok(row.is_some())
    }

    fn face_count(&self) -> Result<u64> {
        let row = self.query_opt("SELECT count(*) FROM faces", &[])?;
        Ok(row.map(|r| u64_of(r.get(0))).unwrap_or(0))
    }
}
