//! `clipdex duplicates`: near-duplicate groups, marking groups as not duplicates, moving the
//! extra copies out of the library and back.

use std::io::Write;
use std::path::PathBuf;

use clipdex::library::{MoveReport, restore_moved};
use clipdex::path_text;
use clipdex::query::duplicates::DuplicateReport;
use clipdex::{Library, store::ImageId};

/// What the command was asked to do.
pub struct DuplicatesArgs {
    pub threshold: f32,
    pub json: bool,
    pub move_to: Option<PathBuf>,
    pub dismiss: Vec<ImageId>,
}

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
    let report = crate::with_progress(|progress| library.duplicates(args.threshold, progress))?;
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
pub fn restore(dir: &std::path::Path, json: bool) -> anyhow::Result<()> {
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
        writeln!(out, "{verb} {} -> {}", path_text::escaped(&m.from), path_text::escaped(&m.to))?;
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
