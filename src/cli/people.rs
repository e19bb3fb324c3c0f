//! `clipdex people`: the persons the library's faces are grouped into, and the user's
//! decisions about them (name, merge, hide, split a face off, "not this person"), regrouping
//! from scratch and forgetting every face. Human-readable by default; `--json` prints
//! `{"people": [{"id", "name", "hidden", "faces", "images", "representative": {"id", "image",
//! "box", "score", "landmarks", "person_id", "person"}}]}` for the list and `{"ok": true, ...}`
//! for a change.

use std::io::Write;

use clap::Args;
use serde_json::json;

use clipdex::Library;
use clipdex::query::people::{ClusterOptions, DEFAULT_MAX_DISTANCE, DEFAULT_MIN_FACES};
use clipdex::store::{FaceId, PersonId};

/// `clipdex people`.
#[derive(Debug, Args)]
pub struct PeopleArgs {
    /// Name a person (`--name ID NAME`; an empty NAME takes the name away).
    #[arg(long, num_args = 2, value_names = ["ID", "NAME"], group = "change")]
    pub name: Option<Vec<String>>,
    /// Merge person B into person A (`--merge A B`): B's faces become A's.
    #[arg(long, num_args = 2, value_names = ["A", "B"], group = "change")]
    pub merge: Option<Vec<String>>,
    /// Hide a person from the list (`--unhide ID` shows it again).
    #[arg(long, value_name = "ID", group = "change")]
    pub hide: Option<String>,
    /// Show a hidden person again.
    #[arg(long, value_name = "ID", group = "change")]
    pub unhide: Option<String>,
    /// Split a face off its person into a person of its own.
    #[arg(long, value_name = "FACE", group = "change")]
    pub split: Option<FaceId>,
    /// Mark a face as not this person (`--not FACE PERSON`): it leaves the person and is never
    /// grouped into it again.
    #[arg(long = "not", num_args = 2, value_names = ["FACE", "PERSON"], group = "change")]
    pub not_person: Option<Vec<String>>,
    /// Group every face again from scratch (names, merges, hides, splits and corrections are
    /// kept).
    #[arg(long, group = "change")]
    pub recluster: bool,
    /// Delete every face, person, name and correction of the library.
    #[arg(long, group = "change")]
    pub forget: bool,
    /// Find the faces in every photo not yet looked at with the library's face model (or
    /// --face-model), and group them into persons.
    #[arg(long, group = "change")]
    pub scan: bool,
    /// With --scan: a folder holding dlib's face models (tools/fetch_face_models.sh fetches
    /// them; see `clipdex faces`); the library remembers it (`config set face_model`).
    #[arg(long, value_name = "DIR", requires = "scan")]
    pub face_model: Option<String>,
    /// With --recluster: faces further apart than this are not one person (Euclidean
    /// distance between face vectors; remembered for later passes).
    #[arg(long, value_name = "D", requires = "recluster")]
    pub max_distance: Option<f32>,
    /// With --recluster: faces that must agree before they form a new person (remembered).
    #[arg(long, value_name = "N", requires = "recluster")]
    pub min_faces: Option<usize>,
    /// List hidden persons too.
    #[arg(long)]
    pub all: bool,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
}

/// Sets the library's face model from `--face-model DIR|none` when the library records none
/// (`none`: no face data is made); a flag that disagrees with the recorded one is refused. With
/// `required` (`index --faces`, `people --scan`) a model must be known: given, recorded, or in
/// `CLIPDEX_FACE_MODEL`.
pub fn choose_face_model(library: &Library, spec: Option<&str>, required: bool) -> anyhow::Result<()> {
    let settings = library.settings()?;
    let spec = match spec {
        Some(s) => Some(s.to_string()),
        None if required && settings.face_model.is_none() => std::env::var("CLIPDEX_FACE_MODEL").ok(),
        None => None,
    };
    if let Some(spec) = spec.as_deref() {
        if let Some(refusal) = settings.disagreement("face_model", spec)? {
            anyhow::bail!(refusal);
        }
        if settings.face_model.is_none() {
            // Checked now (the folder holds the models), so a wrong folder is an error here,
            // not in the background.
            library.set_setting_value("face_model", Some(spec))?;
        }
    }
    if required && library.settings()?.face_model_dir().is_none() {
        anyhow::bail!(match library.settings()?.face_model {
            Some(_) => "the library is set to --face-model none: record a folder of face models with \
                        `clipdex config set face_model DIR`"
                .to_string(),
            None => "no face model: give --face-model DIR (a folder with dlib's face models; \
                     tools/fetch_face_models.sh fetches them), set CLIPDEX_FACE_MODEL, or record it with \
                     `clipdex config set face_model DIR`"
                .to_string(),
        });
    }
    Ok(())
}

fn person_id(library: &Library, spec: &str) -> anyhow::Result<PersonId> {
    Ok(library.find_person(spec)?.id)
}

fn face_id(spec: &str) -> anyhow::Result<FaceId> {
    spec.trim().parse().map_err(|_| anyhow::anyhow!("{spec:?} is not a face id (`clipdex people --json` lists them)"))
}

/// Runs `clipdex people` on the open library.
pub fn run(library: &Library, args: PeopleArgs, out: &mut dyn Write) -> anyhow::Result<()> {
    let done = |out: &mut dyn Write, text: String, value: serde_json::Value| -> anyhow::Result<()> {
        if args.json {
            writeln!(out, "{value}")?;
        } else {
            writeln!(out, "{text}")?;
        }
        Ok(())
    };
    if args.scan {
        choose_face_model(library, args.face_model.as_deref(), true)?;
        let Some(finder) = library.face_finder()? else { anyhow::bail!("the library has no face model") };
        let report = super::session::with_progress(|progress| library.find_faces_with(&*finder, progress, &|| false))?;
        let failed: Vec<_> = report.failed.iter().map(|(id, why)| json!({"id": id, "error": why})).collect();
        return done(
            out,
            format!(
                "{} photos looked at: {} faces, {} placed into persons, {} new persons, {} failed",
                report.scanned,
                report.faces,
                report.placed,
                report.new_persons,
                report.failed.len()
            ),
            json!({"ok": true, "scanned": report.scanned, "faces": report.faces, "placed": report.placed,
                   "new_persons": report.new_persons, "failed": failed}),
        );
    }
    if let Some([id, name]) = args.name.as_deref() {
        let id = person_id(library, id)?;
        library.name_person(id, name)?;
        return done(out, format!("person {id} is now {name:?}"), json!({"ok": true, "person": id, "name": name}));
    }
    if let Some([a, b]) = args.merge.as_deref() {
        let (a, b) = (person_id(library, a)?, person_id(library, b)?);
        library.merge_people(a, b)?;
        return done(out, format!("person {b} merged into person {a}"), json!({"ok": true, "person": a, "merged": b}));
    }
    if let Some(spec) = args.hide.as_deref().or(args.unhide.as_deref()) {
        let id = person_id(library, spec)?;
        let hidden = args.hide.is_some();
        library.hide_person(id, hidden)?;
        let what = if hidden { "hidden" } else { "shown again" };
        return done(out, format!("person {id} is {what}"), json!({"ok": true, "person": id, "hidden": hidden}));
    }
    if let Some(face) = args.split {
        let id = library.split_face(face)?;
        return done(out, format!("face {face} is now person {id}"), json!({"ok": true, "face": face, "person": id}));
    }
    if let Some([face, person]) = args.not_person.as_deref() {
        let (face, person) = (face_id(face)?, person_id(library, person)?);
        library.not_person(face, person)?;
        return done(
            out,
            format!("face {face} is not person {person}"),
            json!({"ok": true, "face": face, "not": person}),
        );
    }
    if args.recluster {
        if args.max_distance.is_some() || args.min_faces.is_some() {
            let old = library.cluster_options()?;
            library.set_cluster_options(&ClusterOptions {
                max_distance: args.max_distance.unwrap_or(old.max_distance),
                min_faces: args.min_faces.unwrap_or(old.min_faces),
            })?;
        }
        let (placed, formed) = library.recluster()?;
        return done(
            out,
            format!("{placed} faces grouped again; {formed} new persons"),
            json!({"ok": true, "placed": placed, "new_persons": formed}),
        );
    }
    if args.forget {
        library.forget_faces()?;
        return done(out, "every face and person is forgotten".into(), json!({"ok": true, "forgotten": true}));
    }
    let people = library.people(args.all)?;
    if args.json {
        writeln!(out, "{}", json!({ "people": people }))?;
        return Ok(());
    }
    if people.is_empty() {
        writeln!(
            out,
            "no people yet: faces are grouped into persons once the face pass has found them \
             (grouping: max distance {DEFAULT_MAX_DISTANCE}, min faces {DEFAULT_MIN_FACES} by default)"
        )?;
        return Ok(());
    }
    for p in &people {
        let name = p.name.as_deref().unwrap_or("(unnamed)");
        let hidden = if p.hidden { "  hidden" } else { "" };
        let face = p.representative.as_ref().map(|f| format!("  face {} in #{}", f.id, f.image)).unwrap_or_default();
        let faces = if p.faces == 1 { "1 face".to_string() } else { format!("{} faces", p.faces) };
        let images = if p.images == 1 { "1 photo".to_string() } else { format!("{} photos", p.images) };
        writeln!(out, "{:>6}  {name}  {faces} in {images}{face}{hidden}", p.id)?;
    }
    Ok(())
}
