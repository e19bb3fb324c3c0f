//! Regions of photos (CLIPSeg): `segment` (masks, overlays, crops of one image), `crop-search`
//! (regions of the library rather than whole photos) and `search --crops` (where in each
//! result the query is). Each calls the library and writes files, a table or JSON.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;
use clap::Args;
use serde_json::{Value, json};

use clipdex::Library;
use clipdex::models::clipseg::{Prompt, Segmenter};
use clipdex::path_text;
use clipdex::photo::{DecodeOptions, Photo, WORKING_SIDE, open_photo_within};
use clipdex::query::{Media, SearchHit};
use clipdex::segment::{self, RegionOptions};

use super::search::{FilterArgs, clock, filter_of};
use super::session::with_progress;
use super::{GlobalOptions, parse_probability};

/// `clipdex segment`.
#[derive(Debug, Args)]
pub struct SegmentArgs {
    /// The image.
    #[arg(value_name = "IMAGE")]
    pub image: PathBuf,
    /// What to find, in words (repeatable; all run in one batch).
    #[arg(long = "prompt", value_name = "TEXT")]
    pub prompts: Vec<String>,
    /// An example image of what to find (a visual prompt; repeatable; after the texts).
    #[arg(long = "example", value_name = "IMG")]
    pub examples: Vec<PathBuf>,
    /// Probability a pixel needs to count as part of a region.
    #[arg(long, default_value_t = clipdex::segment::DEFAULT_THRESHOLD, value_parser = parse_probability)]
    pub threshold: f32,
    /// Folder for the masks, overlays and crops (created if needed).
    #[arg(long, value_name = "DIR")]
    pub out: PathBuf,
    /// Print JSON: {"image", "width", "height", "prompts": [{"index", "prompt" or "example",
    /// "mask", "overlay", "regions": [{"box", "area", "mean_probability", "crop"}]}]}.
    #[arg(long)]
    pub json: bool,
}

/// `clipdex crop-search`.
#[derive(Debug, Args)]
pub struct CropSearchArgs {
    /// What to look for, in words.
    pub text: String,
    /// Photos (best CLIP matches) examined for regions [default: 3 x k, at least 20].
    #[arg(long, value_name = "N")]
    pub candidates: Option<usize>,
    /// Probability a pixel needs to count as part of a region.
    #[arg(long, default_value_t = clipdex::segment::DEFAULT_THRESHOLD, value_parser = parse_probability)]
    pub threshold: f32,
    /// Write the crops as PNG files into this folder.
    #[arg(long, value_name = "DIR")]
    pub out: Option<PathBuf>,
    #[command(flatten)]
    pub filter: FilterArgs,
}

fn save_png<P>(image: &image::ImageBuffer<P, Vec<u8>>, path: &Path) -> anyhow::Result<()>
where
    P: image::Pixel<Subpixel = u8> + image::PixelWithColorType,
{
    // Written beside it, then renamed into place: a link planted at `path` is replaced, never
    // followed, so nothing outside the output folder is overwritten.
    let mut png = std::io::Cursor::new(Vec::new());
    image.write_to(&mut png, image::ImageFormat::Png).with_context(|| format!("cannot encode {}", path.display()))?;
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let staged = path.with_file_name(format!(".{name}.tmp-{}", std::process::id()));
    let written = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&staged)
        .and_then(|mut f| std::io::Write::write_all(&mut f, png.get_ref()))
        .and_then(|()| std::fs::rename(&staged, path));
    if written.is_err() {
        let _ = std::fs::remove_file(&staged);
    }
    written.with_context(|| format!("cannot write {}", path.display()))
}

pub fn segment(g: &GlobalOptions, args: &SegmentArgs) -> anyhow::Result<ExitCode> {
    anyhow::ensure!(
        !args.prompts.is_empty() || !args.examples.is_empty(),
        "nothing to look for: give --prompt \"a dog\" (repeatable) or --example IMAGE"
    );
    if let Some(empty) = args.prompts.iter().find(|p| p.trim().is_empty()) {
        anyhow::bail!("empty prompt {empty:?}");
    }
    // Refused before any work when --out holds something else than clipdex's output.
    clipdex::output_dir::prepare_output_dir(&args.out, "segment --out", None)?;
    // Masks, overlays and crops are made at most MAX_MASK_SIDE px on the long side; boxes
    // are reported in the photo's own pixels.
    let decode = DecodeOptions { max_pixels: g.max_pixels, min_side: None };
    let Photo { image: photo, width, height } = open_photo_within(&args.image, &decode, segment::MAX_MASK_SIDE)?;
    let examples = args
        .examples
        .iter()
        .map(|p| open_photo_within(p, &decode, WORKING_SIDE).map(|e| e.image))
        .collect::<clipdex::Result<Vec<_>>>()?;
    let segmenter = Segmenter::load(&g.seg_model, &g.device.open()?)?;
    let mut prompts: Vec<Prompt> = args.prompts.iter().map(|p| Prompt::Text(p)).collect();
    prompts.extend(examples.iter().map(Prompt::Example));
    let options = RegionOptions { threshold: args.threshold, ..Default::default() };
    let found = segment::segment_photo(&segmenter, &photo, &segmenter.embed_prompts(&prompts)?, &options)?;
    drop(examples);

    // Output names keep the photo's name byte for byte (a non-UTF-8 name stays one).
    let stem = args.image.file_stem().unwrap_or(std::ffi::OsStr::new("image"));
    let named = |suffix: String| {
        let mut name = stem.to_os_string();
        name.push(suffix);
        args.out.join(name)
    };
    let mut rows = Vec::new();
    for (i, s) in found.iter().enumerate() {
        let mask = named(format!(".{i}.mask.png"));
        let overlay = named(format!(".{i}.overlay.png"));
        save_png(&segment::probability_png(&s.map), &mask)?;
        save_png(&segment::overlay(&photo, &s.map, args.threshold), &overlay)?;
        let mut regions = Vec::new();
        for (j, region) in s.regions.iter().enumerate() {
            let crop = named(format!(".{i}.crop{j}.png"));
            save_png(&segment::crop(&photo, region), &crop)?;
            let mut r =
                serde_json::to_value(segment::scale_region(region.clone(), photo.dimensions(), (width, height)))?;
            if let Some(r) = r.as_object_mut() {
                path_text::insert(r, "crop", &crop);
            }
            regions.push(r);
        }
        let mut row = json!({"index": i, "regions": regions});
        if let Some(row) = row.as_object_mut() {
            path_text::insert(row, "mask", &mask);
            path_text::insert(row, "overlay", &overlay);
        }
        match i.checked_sub(args.prompts.len()) {
            None => row["prompt"] = json!(args.prompts[i]),
            Some(e) => row["example"] = json!(args.examples[e]),
        }
        rows.push(row);
    }
    let mut out = std::io::stdout().lock();
    if args.json {
        let mut doc = json!({"width": width, "height": height, "prompts": rows});
        if let Some(doc) = doc.as_object_mut() {
            path_text::insert(doc, "image", &args.image);
        }
        writeln!(out, "{doc}")?;
    } else {
        for row in &rows {
            let what = row.get("prompt").or(row.get("example")).cloned().unwrap_or(Value::Null);
            let regions = row["regions"].as_array().map_or(0, Vec::len);
            writeln!(out, "{what}: {regions} region(s); mask {}", row["mask"].as_str().unwrap_or_default())?;
            for r in row["regions"].as_array().into_iter().flatten() {
                writeln!(
                    out,
                    "  box {}  {:.1}% of the image  p̄ {:.3}  {}",
                    r["box"],
                    r["area"].as_f64().unwrap_or(0.0) * 100.0,
                    r["mean_probability"].as_f64().unwrap_or(0.0),
                    r["crop"].as_str().unwrap_or_default()
                )?;
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// `search --crops`: the hits with the region of each that best shows the text.
pub fn print_located_hits(
    library: &Library,
    text: &str,
    hits: &[SearchHit],
    threshold: f32,
    started: std::time::Instant,
    json_out: bool,
    out: &mut dyn Write,
) -> anyhow::Result<()> {
    let options = RegionOptions { threshold, ..Default::default() };
    let regions = with_progress(|progress| library.locate(text, hits, &options, progress))?;
    let took_ms = started.elapsed().as_secs_f64() * 1e3;
    if json_out {
        // Each result as `search --json` has it (a video's kind, time and duration included),
        // with its region.
        let mut rows = Vec::with_capacity(hits.len());
        for (h, r) in hits.iter().zip(&regions) {
            let mut row = serde_json::to_value(h)?;
            row["region"] = json!(r);
            rows.push(row);
        }
        writeln!(out, "{}", json!({"results": rows, "took_ms": took_ms}))?;
    } else {
        for (h, r) in hits.iter().zip(&regions) {
            let at = match r {
                Some(r) => format!("  at {:?} (p̄ {:.2})", r.bbox, r.mean_probability),
                None => "  (no region)".into(),
            };
            let when = match h.media {
                Media::Photo => String::new(),
                Media::Video { time, .. } => format!("  @ {}", clock(time)),
            };
            writeln!(out, "{:.4}  {}{when}{at}", h.score, path_text::escaped(&h.path))?;
        }
    }
    Ok(())
}

/// `crop-search`: regions of the best-matching photos, most probable first.
pub fn crop_search(library: &Library, args: &CropSearchArgs, out: &mut dyn Write) -> anyhow::Result<ExitCode> {
    let filter = &filter_of(&args.filter)?;
    let k = args.filter.k as usize;
    let candidates = args.candidates.unwrap_or((3 * k).max(20)).max(1);
    if let Some(dir) = &args.out {
        library.check_outside_library(dir, "write the crops")?;
        clipdex::output_dir::prepare_output_dir(dir, "crop-search --out", None)?;
    }
    let started = std::time::Instant::now();
    let query = library.embed_text(&args.text)?;
    let options = RegionOptions { threshold: args.threshold, ..Default::default() };
    let crops =
        with_progress(|progress| library.crops(&args.text, &query, (candidates, k), filter, &options, progress))?;
    let mut rows = Vec::new();
    for (n, crop) in crops.iter().enumerate() {
        let clipdex::library::Crop { hit, region } = crop;
        // A photo's crop, or a video's at the moment that matched.
        let file: Option<PathBuf> = match &args.out {
            Some(dir) => {
                let path = dir.join(format!("{n:03}.{}.png", hit.id));
                save_png(&library.crop_image(crop)?, &path)?;
                Some(path)
            }
            None => None,
        };
        let mut row = path_text::object(
            &hit.path,
            json!({
                "id": hit.id, "score": hit.score, "box": region.bbox,
                "area": region.area, "mean_probability": region.mean_probability,
                "crop": file.as_deref().map(path_text::display),
            }),
        );
        if let (Some(row), Value::Object(media)) = (row.as_object_mut(), serde_json::to_value(hit.media)?) {
            row.extend(media);
        }
        rows.push((row, path_text::escaped(&hit.path)));
    }
    let took_ms = started.elapsed().as_secs_f64() * 1e3;
    if args.filter.json {
        let rows: Vec<&Value> = rows.iter().map(|(row, _)| row).collect();
        writeln!(out, "{}", json!({"crops": rows, "took_ms": took_ms}))?;
    } else {
        for (r, path) in &rows {
            writeln!(
                out,
                "{:.3}  {path}  box {}{}",
                r["mean_probability"].as_f64().unwrap_or(0.0),
                r["box"],
                r["crop"].as_str().map(|c| format!("  → {c}")).unwrap_or_default()
            )?;
        }
        if rows.is_empty() {
            writeln!(out, "no regions found (try a lower --threshold or more --candidates)")?;
        }
    }
    Ok(ExitCode::SUCCESS)
}
