//! `clipdex migrate`: a whole folder library copied into an empty PostgreSQL database in one
//! transaction, with binary `COPY` (the fast path PostgreSQL offers for bulk loads), ids kept,
//! nothing re-embedded. Records, files, vectors, video frames, failures, folders, tags, captions, faces with
//! their persons and corrections, and settings are copied; the label-embedding and fine-tuned-vector caches are not (they refill on use).

use std::collections::BTreeMap;
use std::path::Path;

use postgres::Transaction;
use postgres::binary_copy::BinaryCopyInWriter;
use postgres::types::{ToSql, Type};
use serde::Serialize;

use super::{PgStore, i64_of, path_key};
use crate::error::{Error, Result};
use crate::store::{Backend, StoredCaption, StoredText};

/// What an import copied.
#[derive(Debug, Clone, Default, Serialize)]
pub struct ImportReport {
    /// Images (records with their vectors).
    pub images: u64,
    /// Files pointing at them.
    pub paths: u64,
    /// Vectors.
    pub vectors: u64,
    /// Video frames with their vectors.
    pub frames: u64,
    /// Recorded failures.
    pub failures: u64,
    /// Watched folders.
    pub roots: u64,
    /// Images with tags.
    pub tagged: u64,
    /// Captions.
    pub captions: u64,
    /// Photos' texts copied.
    pub texts: u64,
    /// Faces, with their persons and corrections.
    pub faces: u64,
    /// Persons (named or not).
    pub persons: u64,
    /// The settings copied, by key.
    pub settings: Vec<String>,
}

/// Rows written through one binary COPY.
fn copy(
    tx: &mut Transaction,
    sql: &str,
    types: &[Type],
    rows: &mut dyn Iterator<Item = Result<Vec<Box<dyn ToSql + Sync>>>>,
) -> Result<u64> {
    let sink = tx.copy_in(sql).map_err(db)?;
    let mut writer = BinaryCopyInWriter::new(sink, types);
    let mut n = 0;
    for row in rows {
        let row = row?;
        let refs: Vec<&(dyn ToSql + Sync)> = row.iter().map(|v| v.as_ref() as &(dyn ToSql + Sync)).collect();
        writer.write(&refs).map_err(db)?;
        n += 1;
    }
    writer.finish().map_err(db)?;
    Ok(n)
}

fn db(e: postgres::Error) -> Error {
    Error::Store(super::db_message(&e))
}

fn boxed<T: ToSql + Sync + 'static>(v: T) -> Box<dyn ToSql + Sync> {
    Box::new(v)
}

impl PgStore {
    /// Copies the library in `source` into this database, which must hold no library yet;
    /// `settings` names the JSON settings to carry over. All or nothing: one transaction.
    pub fn import(&self, source: &dyn Backend, settings: &[&str]) -> Result<ImportReport> {
        if let Some(target) = source.reindex_target()? {
            return Err(Error::Invalid(format!(
                "the library is being moved to {}: finish `clipdex reindex` (or cancel it) before migrating",
                target.model
            )));
        }
        let mut conn = self.conn()?;
        let mut tx = conn.transaction().map_err(|e| self.err(super::db_message(&e)))?;
        let held: i64 = tx
            .query_one(
                "SELECT (SELECT count(*) FROM images) + (SELECT count(*) FROM roots) + (SELECT count(*) FROM failures)",
                &[],
            )
            .map_err(db)?
            .get(0);
        if held > 0 {
            return Err(self.err("it already holds a library; migrate into a new, empty database"));
        }
        let mut report = ImportReport::default();
        let meta =
            "INSERT INTO meta (key, value) VALUES ($1, $2) ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value";
        if let Some((model, dim)) = source.model()? {
            tx.execute(meta, &[&"model", &model]).map_err(db)?;
            tx.execute(meta, &[&"dim", &dim.to_string()]).map_err(db)?;
        }
        if let Some(f) = source.model_fingerprint()? {
            tx.execute(meta, &[&"model_fingerprint", &f]).map_err(db)?;
        }
        for key in settings {
            if let Some(json) = source.setting_json(key)? {
                tx.execute(meta, &[key, &String::from_utf8_lossy(&json).into_owned()]).map_err(db)?;
                report.settings.push(key.to_string());
            }
        }

        let mut max_id = 0i64;
        let mut ids = Vec::new();
        let mut images = source.images().map(|r| {
            let (id, record) = r?;
            max_id = max_id.max(i64_of(id));
            ids.push(id);
            let json = serde_json::to_string(&record).expect("records serialise");
            let video = record.is_video();
            Ok(vec![boxed(i64_of(id)), boxed(record.hash.clone()), boxed(json), boxed(record.date()), boxed(video)])
        });
        report.images = copy(
            &mut tx,
            "COPY images (id, hash, record, date, video) FROM STDIN BINARY",
            &[Type::INT8, Type::TEXT, Type::TEXT, Type::INT8, Type::BOOL],
            &mut images,
        )?;
        drop(images);

        let paths = source.paths_under(Path::new("/"))?;
        let mut rows = paths.into_iter().map(|(path, e)| {
            Ok(vec![boxed(path_key(&path)), boxed(i64_of(e.id)), boxed(i64_of(e.size)), boxed(e.mtime_ns)])
        });
        report.paths = copy(
            &mut tx,
            "COPY paths (path, image_id, size, mtime_ns) FROM STDIN BINARY",
            &[Type::BYTEA, Type::INT8, Type::INT8, Type::INT8],
            &mut rows,
        )?;

        tx.batch_execute("CREATE TEMP TABLE import_vectors (image_id bigint, embedding real[]) ON COMMIT DROP")
            .map_err(db)?;
        let mut rows = source.vectors().map(|r| {
            let (id, v) = r?;
            Ok(vec![boxed(i64_of(id)), boxed(v)])
        });
        copy(
            &mut tx,
            "COPY import_vectors (image_id, embedding) FROM STDIN BINARY",
            &[Type::INT8, Type::FLOAT4_ARRAY],
            &mut rows,
        )?;
        report.vectors = tx
            .execute(
                &format!(
                    "INSERT INTO vectors (generation, image_id, embedding)
                     SELECT {}, image_id, embedding::vector FROM import_vectors",
                    super::CURRENT
                ),
                &[],
            )
            .map_err(db)?;

        tx.batch_execute(
            "CREATE TEMP TABLE import_frames (image_id bigint, idx integer, time real, embedding real[]) ON COMMIT DROP",
        )
        .map_err(db)?;
        let (mut last, mut idx) = (None, 0i32);
        let mut rows = source.frame_vectors().map(|r| {
            let (id, f) = r?;
            idx = if last == Some(id) { idx + 1 } else { 0 };
            last = Some(id);
            Ok(vec![boxed(i64_of(id)), boxed(idx), boxed(f.time), boxed(f.vector)])
        });
        copy(
            &mut tx,
            "COPY import_frames (image_id, idx, time, embedding) FROM STDIN BINARY",
            &[Type::INT8, Type::INT4, Type::FLOAT4, Type::FLOAT4_ARRAY],
            &mut rows,
        )?;
        drop(rows);
        report.frames = tx
            .execute(
                &format!(
                    "INSERT INTO frames (generation, image_id, idx, time, embedding)
                     SELECT {}, image_id, idx, time, embedding::vector FROM import_frames",
                    super::CURRENT
                ),
                &[],
            )
            .map_err(db)?;

        let failures = source.failures()?;
        let mut rows = failures.into_iter().map(|(path, f)| {
            Ok(vec![
                boxed(path_key(&path)),
                boxed(f.reason),
                boxed(f.attempts as i32),
                boxed(i64_of(f.size)),
                boxed(f.mtime_ns),
            ])
        });
        report.failures = copy(
            &mut tx,
            "COPY failures (path, reason, attempts, size, mtime_ns) FROM STDIN BINARY",
            &[Type::BYTEA, Type::TEXT, Type::INT4, Type::INT8, Type::INT8],
            &mut rows,
        )?;

        for root in source.roots()? {
            let device = source.root_device(&root)?.map(i64_of);
            tx.execute("INSERT INTO roots (path, device) VALUES ($1, $2)", &[&path_key(&root), &device]).map_err(db)?;
            report.roots += 1;
        }

        let mut index = Vec::new();
        let mut tag_rows = Vec::new();
        for &id in &ids {
            if let Some((vocabulary, tags)) = source.tags_of(id)? {
                // A label listed twice keeps its last probability, as both stores do.
                let by_label: BTreeMap<&str, f32> = tags.iter().map(|t| (t.label.as_str(), t.probability)).collect();
                for (label, p) in by_label {
                    index.push(Ok(vec![boxed(label.to_string()), boxed(i64_of(id)), boxed(p)]));
                }
                let json = serde_json::to_string(&tags).expect("tags serialise");
                tag_rows.push(Ok(vec![boxed(i64_of(id)), boxed(vocabulary), boxed(json)]));
            }
        }
        report.tagged = copy(
            &mut tx,
            "COPY tags (image_id, vocabulary, tags) FROM STDIN BINARY",
            &[Type::INT8, Type::TEXT, Type::TEXT],
            &mut tag_rows.into_iter(),
        )?;
        copy(
            &mut tx,
            "COPY tag_index (label, image_id, probability) FROM STDIN BINARY",
            &[Type::TEXT, Type::INT8, Type::FLOAT4],
            &mut index.into_iter(),
        )?;

        let mut rows = source.captions().map(|r| {
            let (id, c) = r?;
            // Captions of older libraries hold NUL, which PostgreSQL's text cannot.
            let c = StoredCaption::new(&c.text, &c.settings);
            Ok(vec![boxed(i64_of(id)), boxed(c.text), boxed(c.settings)])
        });
        report.captions = copy(
            &mut tx,
            "COPY captions (image_id, text, settings) FROM STDIN BINARY",
            &[Type::INT8, Type::TEXT, Type::TEXT],
            &mut rows,
        )?;

        let mut rows = source.texts().map(|r| {
            let (id, t) = r?;
            let t = StoredText::new(&t.hash, &t.model, t.lines);
            let terms = crate::text_terms::terms_joined(&t.joined());
            let lines = serde_json::to_string(&t.lines).map_err(|e| crate::Error::Store(e.to_string()))?;
            Ok(vec![boxed(i64_of(id)), boxed(t.hash), boxed(t.model), boxed(lines), boxed(terms)])
        });
        report.texts = copy(
            &mut tx,
            "COPY texts (image_id, hash, model, lines, terms) FROM STDIN BINARY",
            &[Type::INT8, Type::TEXT, Type::TEXT, Type::TEXT, Type::TEXT],
            &mut rows,
        )?;

        let (faces, persons) = copy_faces(&mut tx, source)?;
        report.faces = faces;
        report.persons = persons;

        // New images continue after the copied ids; every process's caches see a change.
        if max_id > 0 {
            tx.execute("SELECT setval('image_ids', $1)", &[&max_id]).map_err(db)?;
        }
        tx.batch_execute(
            "SELECT nextval('changes'); SELECT nextval('caption_changes'); SELECT nextval('text_changes')",
        )
        .map_err(db)?;
        tx.commit().map_err(db)?;
        Ok(report)
    }
}

/// Copies faces, persons and corrections, ids kept (the sequences continue after them).
/// Returns how many faces and persons were copied.
fn copy_faces(tx: &mut Transaction, source: &dyn Backend) -> Result<(u64, u64)> {
    let persons = source.persons()?;
    let mut max_person = 0;
    for p in &persons {
        tx.execute(
            "INSERT INTO persons (id, name, hidden, representative) VALUES ($1, $2, $3, $4)",
            &[&i64_of(p.id), &p.name, &p.hidden, &p.representative.map(i64_of)],
        )
        .map_err(db)?;
        max_person = max_person.max(p.id);
    }
    let known: std::collections::HashSet<u64> = persons.iter().map(|p| p.id).collect();
    let (mut faces, mut max_face) = (0u64, 0u64);
    for item in source.images() {
        let (id, _) = item?;
        let Some(scan) = source.face_scan(id)? else { continue };
        tx.execute(
            "INSERT INTO face_scans (image_id, model, hash) VALUES ($1, $2, $3)",
            &[&i64_of(id), &scan.model, &scan.hash],
        )
        .map_err(db)?;
        for f in source.faces_of(id)? {
            let points: Vec<f32> = f.face.landmarks.iter().flatten().copied().collect();
            let person = f.face.person.filter(|p| known.contains(p)).map(i64_of);
            tx.execute(
                "INSERT INTO faces (id, image_id, box, landmarks, score, embedding, person_id, pinned)
                 VALUES ($1, $2, $3, $4, $5, $6::real[]::vector, $7, $8)",
                &[
                    &i64_of(f.id),
                    &i64_of(id),
                    &f.face.bbox.to_vec(),
                    &points,
                    &f.face.score,
                    &f.face.embedding,
                    &person,
                    &(f.face.pinned && person.is_some()),
                ],
            )
            .map_err(db)?;
            faces += 1;
            max_face = max_face.max(f.id);
        }
    }
    for (face, person) in source.corrections()? {
        tx.execute(
            "INSERT INTO face_corrections (face_id, person_id)
             SELECT f.id, p.id FROM faces f, persons p WHERE f.id = $1 AND p.id = $2 ON CONFLICT DO NOTHING",
            &[&i64_of(face), &i64_of(person)],
        )
        .map_err(db)?;
    }
    for (sequence, max) in [("person_ids", max_person), ("face_ids", max_face)] {
        if max > 0 {
            tx.execute(&format!("SELECT setval('{sequence}', $1)"), &[&i64_of(max)]).map_err(db)?;
        }
    }
    Ok((faces, persons.len() as u64))
}
