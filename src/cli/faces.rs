//! `clipdex faces IMAGE...`: the faces in photos, indexed or not, found with dlib's models
//! ([`clipdex::models::faces`]). Human-readable lines by default; `--json` prints
//! `[{"path": P, "faces": [{"box": [x, y, w, h], "score": S, "landmarks": [[x, y] x5],
//! "person": null}]}]` (`person` is filled in once faces are grouped into people).

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::Args;
use serde_json::json;

use clipdex::models::faces::{FaceModel, FaceOptions};
use clipdex::path_text;
use clipdex::photo::{DecodeOptions, open_rgb};

use super::GlobalOptions;

/// `clipdex faces`.
#[derive(Debug, Args)]
pub struct FacesArgs {
    /// The images to search (any file clipdex decodes; they need not be in a library).
    #[arg(required = true, value_name = "IMAGE")]
    pub images: Vec<PathBuf>,
    /// The face models: a folder with dlib's mmod_human_face_detector.dat,
    /// shape_predictor_5_face_landmarks.dat and dlib_face_recognition_resnet_model_v1.dat
    /// (`clipdex models download faces` fetches them into the folder used by default), a folder
    /// with InsightFace's det_10g.onnx and w600k_r50.onnx (buffalo_l; non-commercial use only),
    /// or `none` to find nothing. `blazeface:DIR` (or `blazeface-full:DIR`) finds the faces with
    /// MediaPipe's BlazeFace, whose .tflite file is in DIR too, and describes them with dlib's
    /// landmarks and embedding (tools/fetch_blazeface_models.sh fetches it).
    #[arg(long, value_name = "DIR|blazeface:DIR|none", env = "CLIPDEX_FACE_MODEL")]
    pub face_model: Option<String>,
    /// Ignore faces smaller than this many pixels on the long side of their box.
    #[arg(long, default_value_t = 40, value_name = "PX")]
    pub min_face: u32,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
}

/// Runs `clipdex faces`.
pub fn run(g: &GlobalOptions, args: &FacesArgs) -> anyhow::Result<ExitCode> {
    let downloaded = clipdex::models::fetch::downloaded_model_dir(clipdex::models::ModelKind::Faces)
        .map(|dir| dir.to_string_lossy().into_owned());
    let Some(spec) = args.face_model.as_deref().or(downloaded.as_deref()) else {
        anyhow::bail!(
            "no face model: run `clipdex models download faces` once, or give --face-model DIR (a folder with \
             dlib's face models) or set CLIPDEX_FACE_MODEL"
        );
    };
    let model = if spec == "none" {
        None
    } else {
        let mut model = FaceModel::open(spec)?;
        model.set_options(FaceOptions { min_face: args.min_face, ..FaceOptions::default() });
        Some(model)
    };
    let options = DecodeOptions { max_pixels: g.max_pixels, ..DecodeOptions::default() };
    let mut out = std::io::stdout().lock();
    let (mut rows, mut failures) = (Vec::new(), 0usize);
    for path in &args.images {
        let outcome = open_rgb(path, &options).and_then(|image| match &model {
            Some(model) => model.scan(&image),
            None => Ok(Default::default()),
        });
        match outcome {
            Ok(scan) => {
                if scan.capped {
                    eprintln!(
                        "{}: more faces than {} were found; only the best were kept",
                        path_text::escaped(path),
                        model.as_ref().map_or(0, |m| m.options().max_faces)
                    );
                }
                if scan.incomplete {
                    tracing::info!(
                        "{}: too large to be searched in tiles; faces under about 200 px may be missed",
                        path_text::escaped(path)
                    );
                } else if scan.tiles > 0 {
                    tracing::info!("{}: searched whole, then in {} tiles", path_text::escaped(path), scan.tiles);
                }
                if args.json {
                    let faces: Vec<_> = scan
                        .faces
                        .iter()
                        .map(|f| json!({ "box": f.bbox, "score": f.score, "landmarks": f.landmarks, "person": null }))
                        .collect();
                    rows.push(path_text::object(path, json!({ "faces": faces })));
                } else {
                    let n = scan.faces.len();
                    writeln!(out, "{}: {n} face{}", path_text::escaped(path), if n == 1 { "" } else { "s" })?;
                    for f in &scan.faces {
                        let [x, y, w, h] = f.bbox;
                        writeln!(out, "  {w}x{h} at {x},{y}  score {:.3}", f.score)?;
                    }
                }
            }
            Err(e) => {
                failures += 1;
                if args.json {
                    rows.push(path_text::object(path, json!({ "faces": [], "error": e.to_string() })));
                } else {
                    writeln!(out, "{}: error: {e}", path_text::escaped(path))?;
                }
            }
        }
    }
    if args.json {
        writeln!(out, "{}", serde_json::Value::Array(rows))?;
    }
    if failures > 0 {
        eprintln!("error: {failures} of {} images could not be read", args.images.len());
        return Ok(ExitCode::FAILURE);
    }
    Ok(ExitCode::SUCCESS)
}
