//! Folders the user names for clipdex to write into (`segment --out`, `crop-search --out`,
//! `duplicates --move-to`) or to replace (`finetune --out --force`): the one place that says
//! which folders clipdex may touch.
//!
//! The rule: clipdex writes into a folder that is missing (it makes it), empty, or one it
//! made for its output (it leaves [`OUTPUT_MARKER`] there); and it replaces only a model
//! folder it wrote (its [`MODEL_MARKER`] lists the files it wrote, and nothing else is there),
//! or a Hugging Face model folder with `config.json`, weights and nothing but model files.
//! Anything else — a folder of photos, a pairs file, a library database — is refused with a
//! message that names what is there, so no flag can make clipdex delete or litter it.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// Written beside an adapter model's weights: which model the adapter applies to, so stored
/// vectors of that model can be re-ranked without embedding again.
pub const ADAPTER_FILE: &str = "clipdex_adapter.json";

/// The adapter matrix, `[d, d]`, under the name `adapter`.
pub const ADAPTER_WEIGHTS: &str = "clipdex_adapter.safetensors";

/// Written into every model folder clipdex saves: which files it wrote there.
pub const MODEL_MARKER: &str = ".clipdex-model";

/// Written into every folder clipdex makes (or adopts while empty) for a command's output.
pub const OUTPUT_MARKER: &str = ".clipdex-output";

/// The files of a Hugging Face model folder, which a model folder without the marker may hold
/// (and nothing else) to be replaced.
const MODEL_FILES: &[&str] = &[
    "config.json",
    "model.safetensors",
    "pytorch_model.bin",
    "preprocessor_config.json",
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "vocab.json",
    "merges.txt",
    "vocab.txt",
    ADAPTER_FILE,
    ADAPTER_WEIGHTS,
];

/// What [`MODEL_MARKER`] holds.
#[derive(Debug, Serialize, Deserialize)]
struct ModelMarker {
    /// The program and version that wrote the folder.
    written_by: String,
    /// The files it wrote, by name.
    files: Vec<String>,
}

/// What [`OUTPUT_MARKER`] holds.
#[derive(Debug, Serialize, Deserialize)]
struct OutputMarker {
    written_by: String,
    /// The command whose output the folder holds.
    command: String,
}

/// The entries of a folder, by name, sorted.
fn entries(dir: &Path) -> Result<Vec<String>> {
    let read = std::fs::read_dir(dir).map_err(|e| Error::Invalid(format!("cannot read {}: {e}", dir.display())))?;
    let mut names = Vec::new();
    for entry in read {
        let entry = entry.map_err(|e| Error::Invalid(format!("cannot read {}: {e}", dir.display())))?;
        let mut name = entry.file_name().to_string_lossy().into_owned();
        if entry.file_type().is_ok_and(|t| t.is_dir()) {
            name.push('/');
        }
        names.push(name);
    }
    names.sort();
    Ok(names)
}

/// A short account of what a folder holds, for a refusal: a library database, a model, or
/// its first few entries.
fn describe(dir: &Path, names: &[String]) -> String {
    let has = |n: &str| names.iter().any(|x| x == n);
    if has("sled/") || has("thumbs/") {
        let parts: Vec<&str> = ["sled/", "thumbs/"].into_iter().filter(|n| has(n)).collect();
        return format!("{} holds a clipdex library database ({})", dir.display(), parts.join(", "));
    }
    // Photos and videos summed up, anything else (a pairs file, notes) named.
    let (media, other): (Vec<String>, Vec<String>) =
        names.iter().cloned().partition(|n| crate::indexer::is_media_file(Path::new(n)));
    let mut parts = Vec::new();
    if !media.is_empty() {
        let noun = if media.len() == 1 { "photo or video" } else { "photos or videos" };
        parts.push(format!("{} {noun} ({})", media.len(), listed(&media)));
    }
    if !other.is_empty() {
        parts.push(listed(&other));
    }
    format!("{} holds {}", dir.display(), parts.join(" and "))
}

/// The first few of `names`, and how many more.
fn listed(names: &[String]) -> String {
    let shown: Vec<&str> = names.iter().take(5).map(String::as_str).collect();
    let more = if names.len() > 5 { format!(" and {} more", names.len() - 5) } else { String::new() };
    format!("{}{more}", shown.join(", "))
}

/// The reason a path that exists is not a plain folder, if it is not.
fn not_a_folder(path: &Path) -> Option<String> {
    match std::fs::symlink_metadata(path) {
        Ok(m) if m.file_type().is_symlink() => Some(format!(
            "{} is a symbolic link{}",
            path.display(),
            std::fs::read_link(path).map(|t| format!(" to {}", t.display())).unwrap_or_default()
        )),
        Ok(m) if !m.is_dir() => Some(format!("{} is a file, not a folder", path.display())),
        _ => None,
    }
}

/// Whether `dir` (which exists) may be replaced by a model that clipdex saves
/// (`finetune --force`): a model folder clipdex wrote and nothing else, or a Hugging Face
/// model folder (`config.json`, weights, tokenizer and preprocessor files) and nothing else.
/// The refusal names what is there.
pub fn check_replaceable_model(dir: &Path) -> Result<()> {
    let refuse = |what: String| {
        Error::Invalid(format!(
            "{what}; --force replaces only a model folder that clipdex wrote: choose another --out, or move it \
             away yourself"
        ))
    };
    if let Some(why) = not_a_folder(dir) {
        return Err(refuse(why));
    }
    let names = entries(dir)?;
    if names.is_empty() {
        return Ok(());
    }
    let marker =
        std::fs::read(dir.join(MODEL_MARKER)).ok().and_then(|b| serde_json::from_slice::<ModelMarker>(&b).ok());
    let allowed = |name: &str| match &marker {
        // A marker vouches only for the model files clipdex writes, never for other names
        // (a forged marker listing the photos must not make them replaceable).
        Some(m) => name == MODEL_MARKER || (MODEL_FILES.contains(&name) && m.files.iter().any(|f| f == name)),
        None => MODEL_FILES.contains(&name),
    };
    let others: Vec<String> = names.iter().filter(|n| !allowed(n.as_str())).cloned().collect();
    let has_weights = names.iter().any(|n| n == "model.safetensors" || n == "pytorch_model.bin");
    if marker.is_none() && !(names.iter().any(|n| n == "config.json") && has_weights) {
        return Err(refuse(format!("{}, not a model", describe(dir, &names))));
    }
    if !others.is_empty() {
        return Err(refuse(format!("{} holds more than a model: {}", dir.display(), listed(&others))));
    }
    Ok(())
}

/// Whether `dir` holds nothing but model files clipdex writes (a save that may be incomplete:
/// what an interrupted run leaves behind), so that removing it loses nothing of the user's.
pub fn holds_only_model_files(dir: &Path) -> bool {
    not_a_folder(dir).is_none()
        && entries(dir).is_ok_and(|names| names.iter().all(|n| n == MODEL_MARKER || MODEL_FILES.contains(&n.as_str())))
}

/// Records in `dir` (a model folder being written) that clipdex wrote it, with its files.
pub fn write_model_marker(dir: &Path, files: &[String]) -> Result<()> {
    let marker = ModelMarker { written_by: written_by(), files: files.to_vec() };
    let json = serde_json::to_vec_pretty(&marker).map_err(|e| Error::Invalid(e.to_string()))?;
    std::fs::write(dir.join(MODEL_MARKER), json)
        .map_err(|e| Error::Invalid(format!("cannot write {}: {e}", dir.join(MODEL_MARKER).display())))
}

/// Makes `dir` ready for `command` to write its files into: creates it when missing, takes it
/// when empty or already an output folder of clipdex (`adopt` names another file that marks a
/// folder clipdex wrote, such as the journal of `duplicates --move-to`), and refuses anything
/// else, naming what is there. Returns the folder.
pub fn prepare_output_dir(dir: &Path, command: &str, adopt: Option<&str>) -> Result<PathBuf> {
    if let Some(why) = not_a_folder(dir).filter(|_| !dir.is_dir()) {
        return Err(Error::Invalid(format!("{why}; {command} writes its files into a folder: choose another one")));
    }
    if !dir.exists() {
        std::fs::create_dir_all(dir).map_err(|e| Error::Invalid(format!("cannot create {}: {e}", dir.display())))?;
    }
    let names = entries(dir)?;
    let ours = names.iter().any(|n| n == OUTPUT_MARKER || adopt.is_some_and(|a| n == a));
    if !names.is_empty() && !ours {
        return Err(Error::Invalid(format!(
            "{}; {command} writes only into a new or empty folder (or one it wrote before): choose another one",
            describe(dir, &names)
        )));
    }
    if !names.iter().any(|n| n == OUTPUT_MARKER) {
        let marker = OutputMarker { written_by: written_by(), command: command.to_string() };
        let json = serde_json::to_vec_pretty(&marker).map_err(|e| Error::Invalid(e.to_string()))?;
        std::fs::write(dir.join(OUTPUT_MARKER), json)
            .map_err(|e| Error::Invalid(format!("cannot write into {}: {e}", dir.display())))?;
    }
    Ok(dir.to_path_buf())
}

fn written_by() -> String {
    format!("clipdex {}", env!("CARGO_PKG_VERSION"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_model_folder_is_replaceable_and_anything_else_is_not() {
        let tmp = tempfile::tempdir().unwrap();
        // A Hugging Face folder without the marker, with model files only.
        let hf = tmp.path().join("hf");
        std::fs::create_dir(&hf).unwrap();
        for f in ["config.json", "model.safetensors", "tokenizer.json"] {
            std::fs::write(hf.join(f), b"x").unwrap();
        }
        check_replaceable_model(&hf).unwrap();
        // Photos beside it: refused, naming them.
        std::fs::write(hf.join("cat.jpg"), b"x").unwrap();
        let e = check_replaceable_model(&hf).unwrap_err().to_string();
        assert!(e.contains("cat.jpg") && e.contains("--force"), "{e}");
        // A marker lists what clipdex wrote; anything else is refused.
        let ours = tmp.path().join("ours");
        std::fs::create_dir(&ours).unwrap();
        std::fs::write(ours.join("model.safetensors"), b"x").unwrap();
        write_model_marker(&ours, &["model.safetensors".into()]).unwrap();
        check_replaceable_model(&ours).unwrap();
        std::fs::create_dir(ours.join("sub")).unwrap();
        assert!(check_replaceable_model(&ours).unwrap_err().to_string().contains("sub/"));
        // A library database, a folder of photos, a file.
        let db = tmp.path().join("db");
        std::fs::create_dir_all(db.join("sled")).unwrap();
        std::fs::create_dir_all(db.join("thumbs")).unwrap();
        let e = check_replaceable_model(&db).unwrap_err().to_string();
        assert!(e.contains("library database (sled/, thumbs/)"), "{e}");
        let photos = tmp.path().join("photos");
        std::fs::create_dir(&photos).unwrap();
        for i in 0..7 {
            std::fs::write(photos.join(format!("{i}.jpg")), b"x").unwrap();
        }
        std::fs::write(photos.join("pairs.csv"), b"x").unwrap();
        let e = check_replaceable_model(&photos).unwrap_err().to_string();
        assert!(e.contains("7 photos or videos (0.jpg, 1.jpg") && e.contains("and pairs.csv"), "{e}");
        // A forged marker that lists the photos vouches for none of them.
        let names: Vec<String> = (0..7).map(|i| format!("{i}.jpg")).chain(["pairs.csv".into()]).collect();
        write_model_marker(&photos, &names).unwrap();
        let e = check_replaceable_model(&photos).unwrap_err().to_string();
        assert!(e.contains("0.jpg") && e.contains("holds more than a model"), "{e}");
        let file = tmp.path().join("file");
        std::fs::write(&file, b"x").unwrap();
        assert!(check_replaceable_model(&file).unwrap_err().to_string().contains("is a file"));
    }

    #[test]
    fn output_goes_only_into_new_empty_or_own_folders() {
        let tmp = tempfile::tempdir().unwrap();
        let new = tmp.path().join("a/b");
        prepare_output_dir(&new, "segment", None).unwrap();
        assert!(new.join(OUTPUT_MARKER).exists());
        std::fs::write(new.join("x.png"), b"x").unwrap();
        prepare_output_dir(&new, "crop-search", None).unwrap();
        let empty = tmp.path().join("empty");
        std::fs::create_dir(&empty).unwrap();
        prepare_output_dir(&empty, "segment", None).unwrap();
        let full = tmp.path().join("full");
        std::fs::create_dir(&full).unwrap();
        std::fs::write(full.join("holiday.jpg"), b"x").unwrap();
        let e = prepare_output_dir(&full, "segment", None).unwrap_err().to_string();
        assert!(e.contains("holiday.jpg"), "{e}");
        assert!(!full.join(OUTPUT_MARKER).exists());
        std::fs::write(full.join("journal"), b"").unwrap();
        prepare_output_dir(&full, "duplicates --move-to", Some("journal")).unwrap();
    }
}
