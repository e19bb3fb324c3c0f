//! `clipdex show`: one indexed image, as text or as the JSON of `GET /api/images/{id}`.

use std::io::Write;
use std::path::PathBuf;

use clap::Args;

use clipdex::library::ImageDetails;
use clipdex::{Library, path_text};

/// `clipdex show`.
#[derive(Debug, Args)]
pub struct ShowArgs {
    /// The image: its id (`ID` or `#ID`, as search results give it) or one of its paths.
    #[arg(value_name = "ID|PATH")]
    pub image: PathBuf,
    /// Print JSON: the same object as GET /api/images/{id}.
    #[arg(long)]
    pub json: bool,
}

/// `clipdex show ID|PATH`.
pub fn show(library: &Library, args: ShowArgs, out: &mut dyn Write) -> anyhow::Result<()> {
    let details = library.image_details(library.resolve_image(&args.image)?)?;
    if args.json {
        writeln!(out, "{}", serde_json::to_string(&details)?)?;
    } else {
        print_details(out, &details)?;
    }
    Ok(())
}

/// `show ID` as text.
fn print_details(out: &mut dyn Write, d: &ImageDetails) -> anyhow::Result<()> {
    let companions =
        clipdex::photo::companions::Companions { motion_video: d.record.motion_video, ..d.companions.clone() };
    writeln!(out, "id       {}{}", d.id, super::search::companion_markers(&companions))?;
    for p in &d.paths {
        writeln!(out, "file     {}", path_text::escaped(p))?;
    }
    writeln!(out, "size     {} x {} px, {} bytes", d.record.width, d.record.height, d.record.size)?;
    let date = chrono::DateTime::from_timestamp(d.date, 0).map(|t| t.format("%Y-%m-%d %H:%M:%S UTC").to_string());
    let source = if d.record.taken.is_some() { "taken" } else { "file modified" };
    writeln!(out, "date     {} ({source})", date.unwrap_or_else(|| d.date.to_string()))?;
    if let Some(c) = &d.record.camera {
        writeln!(out, "camera   {c}")?;
    }
    if let Some(l) = &d.record.lens {
        writeln!(out, "lens     {l}")?;
    }
    if let Some((lat, lon)) = d.record.gps {
        writeln!(out, "gps      {lat:.5}, {lon:.5}")?;
    }
    if let Some(p) = &d.place {
        let region = p.region.as_deref().map(|r| format!(", {r}")).unwrap_or_default();
        writeln!(out, "place    {}{region}, {}", p.city, p.country)?;
    }
    if let Some(p) = &d.companions.live_video {
        writeln!(out, "live     {} (Live Photo video)", path_text::escaped(p))?;
    }
    if let Some(problem) = &d.live_video_problem {
        writeln!(out, "live     cannot be played: {problem}")?;
    }
    if let Some(p) = &d.companions.raw_path {
        writeln!(out, "raw      {}", path_text::escaped(p))?;
    }
    if let Some(m) = &d.record.motion_video {
        writeln!(out, "motion   Motion Photo video: {} bytes at offset {}", m.length, m.offset)?;
    }
    if let Some(p) = &d.record.motion_video_problem {
        writeln!(out, "motion   none: {p}")?;
    }
    if !d.tags.is_empty() {
        let tags: Vec<String> = d.tags.iter().map(|t| format!("{} ({:.2})", t.label, t.probability)).collect();
        writeln!(out, "tags     {}", tags.join(", "))?;
    }
    writeln!(out, "caption  {}", d.caption.as_deref().unwrap_or("(none: run `clipdex caption --library`)"))?;
    match &d.text {
        None => writeln!(out, "text     (not read: run `clipdex ocr --library`)")?,
        Some(lines) if lines.is_empty() => writeln!(out, "text     (none found)")?,
        Some(lines) => {
            for (i, line) in lines.iter().enumerate() {
                writeln!(out, "{}{}", if i == 0 { "text     " } else { "         " }, line.text)?;
            }
        }
    }
    Ok(())
}
