//! `clipdex duplicates`: near-duplicate groups, marking groups as not duplicates, moving the
//! extra copies out of the library and back.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::Args;

use clipdex::library::{MoveReport, restore_moved};
use clipdex::path_text;
use clipdex::query::duplicates::DuplicateReport;
use clipdex::{Library, store::ImageId};

use super::GlobalOptions;
use super::session::with_progress;

/// `clipdex duplicates`.
#[derive(Debug, Args)]
pub struct DuplicatesArgs {
    /// Cosine similarity from which two photos are candidates (then confirmed by their
    /// perceptual hashes).
    #[arg(long, value_name = "T", default_value_t = clipdex::query::duplicates::DEFAULT_THRESHOLD)]
    pub threshold: f32,
    /// Print JSON: {"groups": [{"images": [{"id", "path", "width", "height", "size",
    /// "date"}], "similarity", "keep"}]}.
    #[arg(long)]
    pub json: bool,
    /// Move every photo of each group but the one to keep into DIR (outside the library),
    /// recorded in DIR/clipdex-moves.jsonl; `--restore DIR` puts them back.
    #[arg(long, value_name = "DIR", conflicts_with_all = ["restore", "dismiss"])]
    pub move_to: Option<PathBuf>,
    /// Put back the photos a `--move-to DIR` moved (then `clipdex index` indexes them again).
    #[arg(long, value_name = "DIR", conflicts_with = "dismiss")]
    pub restore: Option<PathBuf>,
    /// Mark these images (ids, comma-separated) as not duplicates of each other; remembered
    /// by later runs.
    #[arg(long, value_name = "ID,ID,...", value_delimiter = ',')]
    pub dismiss: Vec<ImageId>,
}

/// `clipdex duplicates`: `--restore DIR` needs no library; the rest runs on it, here or in
/// the server that holds it.
pub fn duplicates(g: &GlobalOptions, args: DuplicatesArgs) -> anyhow::Result<ExitCode> {
    if let Some(dir) = &args.restore {
        restore(dir, args.json)?;
        return Ok(ExitCode::SUCCESS);
    }
    super::session::run(g, super::Command::Duplicates(args))
}

/// Finds, dismisses or moves near-duplicates of the open library.
pub fn run(library: &Library, args: DuplicatesArgs, out: &mut dyn Write) -> anyhow::Result<()> {
    if !args.dismiss.is_empty() {
        library.dismiss_duplicates(&args.dismiss)?;
        if args.json {
            writeln!(out, "{}", serde_json::json!({ "dismissed": args.dismiss }))?;
        } else {
            let ids: Vec<String> = args.dismiss.iter().map(|id| format!("#{id}")).collect();
            writeln!(out, "{} will no longer be grouped as duplicates of each other", ids.join(", "))?;
        }
        return Ok(());
    }
    let report = with_progress(|progress| library.duplicates(args.threshold, progress))?;
    if let Some(dir) = &args.move_to {
        let moved = library.move_duplicates(&report.groups, dir)?;
        return print_moves(out, &moved, args.json, "moved");
    }
    if args.json {
        writeln!(out, "{}", serde_json::to_string(&report)?)?;
    } else {
        print_groups(out, &report)?;
    }
    Ok(())
}

/// `duplicates --restore DIR`: needs no library.
fn restore(dir: &std::path::Path, json: bool) -> anyhow::Result<()> {
    let report = restore_moved(dir)?;
    print_moves(&mut std::io::stdout().lock(), &report, json, "restored")
}

fn print_groups(out: &mut dyn Write, report: &DuplicateReport) -> anyhow::Result<()> {
    if report.groups.is_empty() {
        writeln!(out, "no near-duplicates found")?;
        return Ok(());
    }
    for (n, group) in report.groups.iter().enumerate() {
        writeln!(out, "group {} ({} photos, similarity {:.3}):", n + 1, group.images.len(), group.similarity)?;
        for image in &group.images {
            let date = chrono::DateTime::from_timestamp(image.date, 0)
                .map(|d| d.format("%Y-%m-%d").to_string())
                .unwrap_or_default();
            writeln!(
                out,
                "  {} #{:<6} {:>5}x{:<5} {:>9} {}  {}",
                if image.id == group.keep { "keep" } else { "    " },
                image.id,
                image.width,
                image.height,
                human_size(image.size),
                date,
                path_text::escaped(&image.path)
            )?;
        }
    }
    let extra: usize = report.groups.iter().map(|g| g.images.len() - 1).sum();
    writeln!(
        out,
        "{} groups, {extra} photos beside the suggested ones to keep (`--move-to DIR` moves them out, `--dismiss ID,ID` marks a group as not duplicates)",
        report.groups.len()
    )?;
    Ok(())
}

fn print_moves(out: &mut dyn Write, report: &MoveReport, json: bool, verb: &str) -> anyhow::Result<()> {
    if json {
        let moved: Vec<serde_json::Value> = report
            .moved
            .iter()
            .map(|m| {
                let mut o = serde_json::Map::new();
                o.insert("id".into(), m.id.into());
                path_text::insert(&mut o, "from", &m.from);
                path_text::insert(&mut o, "to", &m.to);
                serde_json::Value::Object(o)
            })
            .collect();
        let skipped: Vec<serde_json::Value> = report
            .skipped
            .iter()
            .map(|s| path_text::object(&s.path, serde_json::json!({ "reason": s.reason })))
            .collect();
        let mut o = serde_json::Map::new();
        o.insert(verb.into(), moved.into());
        o.insert("skipped".into(), skipped.into());
        path_text::insert(&mut o, "journal", &report.journal);
        writeln!(out, "{}", serde_json::Value::Object(o))?;
        return Ok(());
    }
    for m in &report.moved {
        // The arrow points the way the file went: out of the library, or back into it.
        let (from, to) = if verb == "restored" { (&m.to, &m.from) } else { (&m.from, &m.to) };
        writeln!(out, "{verb} {} -> {}", path_text::escaped(from), path_text::escaped(to))?;
    }
    for s in &report.skipped {
        writeln!(out, "left {}: {}", path_text::escaped(&s.path), s.reason)?;
    }
    writeln!(
        out,
        "{} {verb}, {} left; journal: {}",
        report.moved.len(),
        report.skipped.len(),
        path_text::escaped(&report.journal)
    )?;
    Ok(())
}

fn human_size(bytes: u64) -> String {
    match bytes {
        b if b >= 1 << 30 => format!("{:.1} GB", b as f64 / f64::from(1u32 << 30)),
        b if b >= 1 << 20 => format!("{:.1} MB", b as f64 / f64::from(1u32 << 20)),
        b if b >= 1 << 10 => format!("{:.0} kB", b as f64 / 1024.0),
        b => format!("{b} B"),
    }
}
