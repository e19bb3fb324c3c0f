//! The library's settings: which models its commands use (CLIP, text model, captioner,
//! question answering, image–text matching, segmenter, OCR), the precision of their linear
//! layers, the face model of the face pass, and whether the server runs background jobs. Recorded once in the library itself
//! (one JSON setting, the same on both backends), so every command and the server use them
//! without flags.
//!
//! A setting that was never recorded has no value here: whoever opens the library uses its
//! own default (or a flag). A recorded one wins over defaults; a flag that disagrees with it
//! is refused by the command line ([`Settings::disagreement`]). The CLIP model is not kept in
//! this record: it is the model of the library's vectors (or the one chosen before any), and
//! is changed with `reindex` once photos are embedded.

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::models::precision::Precision;
use crate::models::source::{ModelRepo, canonical_spec};

use super::Library;

/// Where the web UI moves duplicates out to in a folder library with no `duplicates_folder`
/// set: this folder inside the database folder.
pub const DEFAULT_DUPLICATES_FOLDER: &str = "moved-duplicates";

/// The store setting that holds [`Settings`].
pub const SETTINGS_KEY: &str = "library_settings";

/// What a library records about the models and jobs its commands use; `None`: not recorded.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Settings {
    /// A multilingual text model embedding queries and labels in place of the CLIP's own.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub text_model: Option<String>,
    /// The BLIP captioning model.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub caption_model: Option<String>,
    /// The BLIP visual question answering model.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vqa_model: Option<String>,
    /// The BLIP image–text matching model.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub itm_model: Option<String>,
    /// The CLIPSeg model.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seg_model: Option<String>,
    /// The PP-OCR model folder.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ocr_model: Option<String>,
    /// The folder of dlib's face models the face pass uses, or `none` (no face data is made).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub face_model: Option<String>,
    /// The arithmetic of the models' linear layers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub precision: Option<Precision>,
    /// Whether the server indexes, follows the folders and runs the enrichment passes in the
    /// background (default: yes).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub background_jobs: Option<bool>,
    /// The folder (outside the library) where the web UI moves the duplicates it is told to
    /// move out, one folder per move below it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duplicates_folder: Option<String>,
}

/// One setting as `config list` and `GET /api/settings` show it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SettingEntry {
    /// Its name (`caption_model`); the flag is the same with dashes (`--caption-model`).
    pub name: &'static str,
    /// The recorded value; `None` when the library records none (the default applies).
    pub value: Option<String>,
    /// What applies when nothing is recorded.
    pub default: String,
    /// What it is for.
    pub about: &'static str,
}

/// Every setting: name, what it is for, and its default.
pub const SETTING_NAMES: &[(&str, &str)] = &[
    ("model", "CLIP model of the library's vectors and queries (changed with `reindex` once photos are embedded)"),
    ("text_model", "multilingual text model embedding queries and labels in place of the CLIP's text tower"),
    ("caption_model", "BLIP captioning model (captions, background captioning)"),
    ("vqa_model", "BLIP visual question answering model (ask)"),
    ("itm_model", "BLIP image-text matching model (match, re-ranking)"),
    ("seg_model", "CLIPSeg model (segment, crop search, where in a photo)"),
    ("ocr_model", "PP-OCR model folder (ocr)"),
    (
        "face_model",
        "folder of dlib's face models (blazeface:DIR: BlazeFace finds the faces): faces found in the background and grouped into people, or none",
    ),
    ("precision", "arithmetic of the models' linear layers: f32, bf16, int8 or auto"),
    ("background_jobs", "whether the server indexes, follows the folders and runs passes in the background: on or off"),
    ("duplicates_folder", "folder outside the library where the web UI moves the duplicates it is told to move out"),
];

/// The value that applies to `name` when the library records none.
pub fn default_of(name: &str) -> String {
    match name {
        "model" => crate::DEFAULT_CLIP_MODEL.to_string(),
        "text_model" => "none (the CLIP's own text tower)".to_string(),
        "caption_model" => crate::models::blip::DEFAULT_CAPTION_MODEL.to_string(),
        "vqa_model" => crate::models::blip::DEFAULT_VQA_MODEL.to_string(),
        "itm_model" => crate::models::blip::DEFAULT_ITM_MODEL.to_string(),
        "seg_model" => crate::models::clipseg::DEFAULT_SEG_MODEL.to_string(),
        "ocr_model" => "none".to_string(),
        "face_model" => "none".to_string(),
        "precision" => Precision::F32.to_string(),
        "background_jobs" => "on".to_string(),
        "duplicates_folder" => format!("DB/{DEFAULT_DUPLICATES_FOLDER} (a folder library; none for PostgreSQL)"),
        _ => String::new(),
    }
}

fn unknown(name: &str) -> Error {
    let known: Vec<&str> = SETTING_NAMES.iter().map(|(n, _)| *n).collect();
    Error::Invalid(format!("no setting {name:?}; the settings are {}", known.join(", ")))
}

/// Reads `on`/`off` (and the usual spellings of yes and no).
fn parse_switch(value: &str) -> Result<bool> {
    match value.trim().to_ascii_lowercase().as_str() {
        "on" | "true" | "yes" | "1" => Ok(true),
        "off" | "false" | "no" | "0" => Ok(false),
        other => Err(Error::Invalid(format!("background_jobs is on or off, not {other:?}"))),
    }
}

/// `none`, or a folder holding dlib's face models or InsightFace's (spelled as
/// [`canonical_spec`] does).
fn checked_face_model(value: &str) -> Result<String> {
    if value == "none" {
        return Ok(value.to_string());
    }
    let (blazeface, dir) = crate::models::faces::detector_spec(value);
    if let Some(file) = blazeface.filter(|f| !std::path::Path::new(dir).join(f).is_file()) {
        return Err(Error::Invalid(format!(
            "{dir} holds no {file}: a BlazeFace face model is a folder of dlib's face models that holds \
             MediaPipe's .tflite files too (tools/fetch_blazeface_models.sh fetches them)"
        )));
    }
    let detector = std::path::Path::new(dir).join(crate::models::faces::DETECTOR_FILE);
    let insight = crate::models::faces::insight::is_insight_dir(std::path::Path::new(dir));
    if !detector.is_file() && (blazeface.is_some() || !insight) {
        return Err(Error::Invalid(format!(
            "{value} holds no {} nor {}: the face model is a folder of dlib's face models \
             (tools/fetch_face_models.sh fetches them), InsightFace's buffalo_l, or none",
            crate::models::faces::DETECTOR_FILE,
            crate::models::faces::insight::DETECTOR_FILE
        )));
    }
    Ok(match value.split_once(':').filter(|_| blazeface.is_some()) {
        Some((detector, _)) => format!("{detector}:{}", canonical_spec(dir)),
        None => canonical_spec(value),
    })
}

impl Settings {
    /// The folder of the face models the face pass uses; `None` when none is recorded or it is
    /// recorded as `none`.
    pub fn face_model_dir(&self) -> Option<&str> {
        self.face_model.as_deref().filter(|m| *m != "none")
    }

    /// The recorded value of `name`, as text (`None`: not recorded). The CLIP model is not
    /// part of this record (see [`Library::setting_entries`]).
    pub fn get(&self, name: &str) -> Result<Option<String>> {
        Ok(match name {
            "text_model" => self.text_model.clone(),
            "caption_model" => self.caption_model.clone(),
            "vqa_model" => self.vqa_model.clone(),
            "itm_model" => self.itm_model.clone(),
            "seg_model" => self.seg_model.clone(),
            "ocr_model" => self.ocr_model.clone(),
            "face_model" => self.face_model.clone(),
            "precision" => self.precision.map(|p| p.to_string()),
            "background_jobs" => self.background_jobs.map(|on| if on { "on" } else { "off" }.to_string()),
            "duplicates_folder" => self.duplicates_folder.clone(),
            _ => return Err(unknown(name)),
        })
    }

    /// Records `value` for `name` (`None` forgets it), checked: a model must be an existing
    /// folder or a Hugging Face id (nothing is downloaded), a precision one `--precision`
    /// takes, background jobs on or off.
    pub fn set(&mut self, name: &str, value: Option<&str>) -> Result<()> {
        // An empty value is no model, precision or switch: only `None` forgets.
        let value = value.map(str::trim);
        let model = |v: Option<&str>| -> Result<Option<String>> {
            match v {
                None => Ok(None),
                Some(spec) => {
                    // A name that cannot be a model is the caller's mistake, not a model failing.
                    ModelRepo::open(spec).map_err(|e| Error::Invalid(e.to_string()))?;
                    Ok(Some(canonical_spec(spec)))
                }
            }
        };
        match name {
            "text_model" => self.text_model = model(value)?,
            "caption_model" => self.caption_model = model(value)?,
            "vqa_model" => self.vqa_model = model(value)?,
            "itm_model" => self.itm_model = model(value)?,
            "seg_model" => self.seg_model = model(value)?,
            "ocr_model" => {
                self.ocr_model = match value {
                    // No model, as when none is recorded: reading the text in photos is off.
                    Some("none") => None,
                    Some(dir) if !std::path::Path::new(dir).is_dir() => {
                        return Err(Error::Invalid(format!(
                            "no such folder {dir}: the OCR model is a folder of PP-OCR ONNX files"
                        )));
                    }
                    Some(dir) => Some(canonical_spec(dir)),
                    None => None,
                }
            }
            "face_model" => self.face_model = value.map(checked_face_model).transpose()?,
            "precision" => self.precision = value.map(str::parse).transpose()?,
            "background_jobs" => self.background_jobs = value.map(parse_switch).transpose()?,
            "duplicates_folder" => {
                self.duplicates_folder = match value {
                    Some(dir) if !std::path::Path::new(dir).is_absolute() => {
                        return Err(Error::Invalid(format!(
                            "the duplicates folder is an absolute path (a folder outside the library), not {dir:?}"
                        )));
                    }
                    other => other.map(str::to_string),
                }
            }
            _ => return Err(unknown(name)),
        }
        Ok(())
    }

    /// Whether the server runs its background jobs (on unless recorded off).
    pub fn background_jobs(&self) -> bool {
        self.background_jobs.unwrap_or(true)
    }

    /// The error for a flag `--NAME value` that disagrees with the recorded setting, if it
    /// does (model names compare as [`canonical_spec`] spells them).
    pub fn disagreement(&self, name: &str, flag_value: &str) -> Result<Option<String>> {
        let Some(recorded) = self.get(name)? else { return Ok(None) };
        let same = match name {
            "precision" => flag_value.parse::<Precision>().map(|p| p.to_string()).ok().as_deref() == Some(&recorded),
            "background_jobs" => {
                parse_switch(flag_value).ok().map(|on| if on { "on" } else { "off" }) == Some(&recorded)
            }
            _ => canonical_spec(flag_value) == recorded,
        };
        let flag = format!("--{}", name.replace('_', "-"));
        Ok((!same).then(|| {
            format!(
                "the library is set to {flag} {recorded}, not {flag_value}: leave {flag} out to use the library's, \
                 or change the library's setting with `clipdex config set {name} {flag_value}`"
            )
        }))
    }
}

impl Library {
    /// The settings the library records (none recorded: all `None`).
    pub fn settings(&self) -> Result<Settings> {
        Ok(self.store.setting(SETTINGS_KEY)?.unwrap_or_default())
    }

    /// Every setting with its recorded value and its default, the CLIP model first.
    pub fn setting_entries(&self) -> Result<Vec<SettingEntry>> {
        let settings = self.settings()?;
        let chosen =
            self.store.model()?.is_some() || self.store.setting_json(super::open::CHOSEN_MODEL_SETTING)?.is_some();
        SETTING_NAMES
            .iter()
            .map(|&(name, about)| {
                let value = if name == "model" { chosen.then(|| self.model()) } else { settings.get(name)? };
                Ok(SettingEntry { name, value, default: default_of(name), about })
            })
            .collect()
    }

    /// One setting's entry.
    pub fn setting_entry(&self, name: &str) -> Result<SettingEntry> {
        self.setting_entries()?.into_iter().find(|e| e.name == name).ok_or_else(|| unknown(name))
    }

    /// Records `value` for the setting `name` (`None` forgets it) and applies it to this open
    /// library: the models it changes load again on their next use, so a server applies it
    /// without a restart. The CLIP model can be chosen only while the library has no vectors
    /// (then `reindex` moves it to another).
    pub fn set_setting_value(&self, name: &str, value: Option<&str>) -> Result<SettingEntry> {
        if name == "model" {
            self.choose_model(value)?;
            return self.setting_entry(name);
        }
        let mut settings = self.settings()?;
        settings.set(name, value)?;
        if let ("duplicates_folder", Some(dir)) = (name, settings.duplicates_folder.as_deref()) {
            // Refused now rather than at the first resolution: moving duplicates into a photo
            // folder would move them back into the library.
            self.check_outside_library(std::path::Path::new(dir), "set duplicates_folder")?;
        }
        self.store.set_setting(SETTINGS_KEY, &settings)?;
        self.apply_settings(&settings);
        self.setting_entry(name)
    }

    /// Makes the recorded text model, precision and segmenter the ones this open library
    /// uses, dropping the loaded models they change.
    pub(super) fn apply_settings(&self, settings: &Settings) {
        let mut live = self.live.write().unwrap_or_else(|p| p.into_inner());
        let text_model = settings.text_model.clone().or_else(|| self.config.text_model.clone());
        let precision = settings.precision.unwrap_or(self.config.precision);
        let seg_model = settings.seg_model.clone().unwrap_or_else(|| self.config.seg_model.clone());
        if live.text_model != text_model || live.precision != precision {
            *self.clip.write().unwrap_or_else(|p| p.into_inner()) = None;
        }
        if live.seg_model != seg_model {
            *self.segmenter.lock().unwrap_or_else(|p| p.into_inner()) = None;
        }
        *live = super::LiveSettings { text_model, precision, seg_model };
    }

    /// What query embeddings depend on besides the text: the CLIP model, the text model and
    /// the precision in use (a cache of query embeddings keys them by it).
    pub fn embedder_key(&self) -> String {
        let live = self.live.read().unwrap_or_else(|p| p.into_inner());
        format!("{} {:?} {}", self.model(), live.text_model, live.precision)
    }

    fn choose_model(&self, value: Option<&str>) -> Result<()> {
        let Some(spec) = value.map(str::trim).filter(|v| !v.is_empty()) else {
            return Err(Error::Invalid("the CLIP model cannot be unset; name one".into()));
        };
        let spec = canonical_spec(spec);
        if let Some((stored, _)) = self.store.model()? {
            if stored == spec {
                return Ok(());
            }
            return Err(Error::Invalid(format!(
                "the library holds vectors of model {stored}: move it to {spec} with `clipdex reindex --model {spec}` \
                 (which re-embeds every photo)"
            )));
        }
        ModelRepo::open(&spec).map_err(|e| Error::Invalid(e.to_string()))?;
        let json = serde_json::to_vec(&spec).map_err(|e| Error::Store(e.to_string()))?;
        self.store.set_setting_json(super::open::CHOSEN_MODEL_SETTING, &json)?;
        *self.model.write().unwrap_or_else(|p| p.into_inner()) = spec;
        *self.clip.write().unwrap_or_else(|p| p.into_inner()) = None;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn settings_parse_check_and_disagree() {
        let mut s = Settings::default();
        s.set("precision", Some("BF16")).unwrap();
        s.set("background_jobs", Some("off")).unwrap();
        assert_eq!(s.get("precision").unwrap().as_deref(), Some("bf16"));
        assert!(!s.background_jobs());
        assert!(s.set("precision", Some("fp12")).is_err());
        assert!(s.set("caption_model", Some("/no/such/folder")).is_err());
        assert!(s.set("colour", Some("red")).unwrap_err().to_string().contains("caption_model"));
        assert_eq!(s.disagreement("precision", "bfloat16").unwrap(), None);
        let refused = s.disagreement("precision", "int8").unwrap().unwrap();
        assert!(refused.contains("--precision bf16") && refused.contains("config set precision int8"), "{refused}");
        // Nothing recorded: any flag goes.
        assert_eq!(s.disagreement("vqa_model", "x/y").unwrap(), None);
        s.set("precision", None).unwrap();
        assert_eq!(s.get("precision").unwrap(), None);
    }

    #[test]
    fn the_face_model_is_a_folder_of_face_models_or_none() {
        let mut s = Settings::default();
        assert_eq!(s.face_model_dir(), None);
        s.set("face_model", Some("none")).unwrap();
        assert_eq!((s.get("face_model").unwrap().as_deref(), s.face_model_dir()), (Some("none"), None));
        // A folder without dlib's detector is refused, naming what is missing.
        let empty = tempfile::tempdir().unwrap();
        let e = s.set("face_model", Some(empty.path().to_str().unwrap())).unwrap_err().to_string();
        assert!(e.contains(crate::models::faces::DETECTOR_FILE), "{e}");
        std::fs::write(empty.path().join(crate::models::faces::DETECTOR_FILE), b"x").unwrap();
        s.set("face_model", Some(empty.path().to_str().unwrap())).unwrap();
        let dir = s.face_model_dir().unwrap().to_string();
        assert_eq!(s.disagreement("face_model", empty.path().to_str().unwrap()).unwrap(), None);
        let refused = s.disagreement("face_model", "none").unwrap().unwrap();
        assert!(refused.contains(&format!("--face-model {dir}")) && refused.contains("config set face_model none"));
    }
}
