//! Looking after the library: `stats`, `failures`, `reindex` (moving to another model) and
//! `migrate` (copying a folder library into PostgreSQL).

use std::io::Write;
use std::process::ExitCode;

use clap::Args;
use serde_json::json;

use clipdex::store::DbLocation;
use clipdex::{Library, path_text};

use super::GlobalOptions;
use super::session::with_progress;

/// `clipdex stats`.
#[derive(Debug, Args)]
pub struct StatsArgs {
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
}

/// `clipdex failures`.
#[derive(Debug, Args)]
pub struct FailuresArgs {
    /// Print JSON: {"failures": [{"path", "reason", "attempts"}]}.
    #[arg(long)]
    pub json: bool,
}

/// `clipdex reindex`.
#[derive(Debug, Args)]
pub struct ReindexArgs {
    /// Print the report as JSON: {"from", "to", "embedded", "resumed", "failed", "tagged",
    /// "mapped"} ("mapped": vectors mapped through an adapter of the library's model).
    #[arg(long)]
    pub json: bool,
    /// Photos embedded per model call.
    #[arg(long, default_value_t = 32, value_parser = clap::value_parser!(u64).range(1..=1024))]
    pub batch_size: u64,
}

/// `clipdex migrate`.
#[derive(Debug, Args)]
pub struct MigrateArgs {
    /// The PostgreSQL database: postgres://USER:PASSWORD@HOST:PORT/NAME (created and empty).
    #[arg(long, value_name = "URL")]
    pub to: std::ffi::OsString,
    /// Print JSON: {"from", "to", "images", "paths", "vectors", "failures", "roots",
    /// "tagged", "captions", "settings", "checked_searches", "index", "seconds"}.
    #[arg(long)]
    pub json: bool,
}

/// `clipdex stats`.
pub fn stats(library: &Library, args: StatsArgs, out: &mut dyn Write) -> anyhow::Result<()> {
    let json = args.json;
    let s = library.stats()?;
    if json {
        writeln!(out, "{}", serde_json::to_string(&s)?)?;
    } else {
        writeln!(out, "database  {} (schema {})", library.store().location(), s.schema_version)?;
        writeln!(out, "model     {}", s.model.as_deref().unwrap_or("(none yet)"))?;
        let precisions: Vec<String> = s.precisions.iter().map(|p| p.to_string()).collect();
        writeln!(out, "precision {}", precisions.join(", "))?;
        writeln!(out, "images    {}", s.counts.images)?;
        if s.counts.videos > 0 {
            writeln!(out, "videos    {} ({} frames)", s.counts.videos, s.counts.frames)?;
        }
        writeln!(out, "paths     {}", s.counts.paths)?;
        writeln!(out, "vectors   {}", s.counts.vectors)?;
        let mut parts = Vec::new();
        if s.companion_problems > 0 {
            parts.push(format!("{} companion problems", s.companion_problems));
        }
        if s.skipped_links > 0 {
            parts.push(format!("{} links leading outside the folders, not followed", s.skipped_links));
        }
        match parts.is_empty() {
            true => writeln!(out, "failures  {}", s.counts.failures)?,
            false => {
                writeln!(out, "failures  {} ({} unreadable, {})", s.counts.failures, s.unreadable, parts.join(", "))?
            }
        }
        writeln!(out, "roots     {}", s.counts.roots)?;
        writeln!(out, "tags      {} on {} tagged images", s.counts.tags, s.counts.tagged)?;
        if let Some(j) = s.jobs.as_ref().filter(|j| j.pending + j.leased > 0) {
            writeln!(
                out,
                "jobs      {} queued, {} being embedded by {}",
                j.pending,
                j.leased,
                if j.workers.is_empty() { "nobody".to_string() } else { j.workers.join(", ") }
            )?;
        }
        if let Some(r) = &s.reindex {
            writeln!(
                out,
                "reindex   to {}: {} of {} images (run `clipdex reindex --model {}` to finish)",
                r.to, r.done, r.of, r.to
            )?;
        }
        writeln!(out, "index     {} ({} vectors, {} tombstones)", s.index.kind, s.index.vectors, s.index.tombstones)?;
    }
    Ok(())
}

/// `clipdex failures`.
pub fn failures(library: &Library, args: FailuresArgs, out: &mut dyn Write) -> anyhow::Result<()> {
    let json = args.json;
    let failures = library.failures()?;
    if json {
        let rows: Vec<_> = failures
            .iter()
            .map(|(p, f)| path_text::object(p, json!({"reason": f.reason, "attempts": f.attempts})))
            .collect();
        writeln!(out, "{}", json!({ "failures": rows }))?;
    } else {
        for (p, f) in &failures {
            writeln!(out, "{}: {} ({} attempts)", path_text::escaped(p), f.reason, f.attempts)?;
        }
    }
    Ok(())
}

/// `clipdex reindex`: the library opens with the model of its vectors; `--model` names the
/// model to move to.
pub fn reindex(g: &GlobalOptions, args: &ReindexArgs) -> anyhow::Result<ExitCode> {
    let (batch_size, json) = (args.batch_size as usize, args.json);
    let Some(to) = &g.model else {
        anyhow::bail!("reindex moves the library to another model: name it with --model M")
    };
    let library = Library::open_as_stored(g.library_config(batch_size)?)?;
    let report = with_progress(|progress| library.reindex(to, progress))?;
    let mut out = std::io::stdout().lock();
    if json {
        writeln!(out, "{}", serde_json::to_string(&report)?)?;
    } else {
        writeln!(
            out,
            "switched from {} to {}: {} photos embedded ({} already done by an interrupted run), {} forgotten{}",
            report.from,
            report.to,
            report.embedded,
            report.resumed,
            report.failed,
            if report.failed > 0 { " (their files changed or went away; `clipdex index` picks them up)" } else { "" }
        )?;
    }
    Ok(ExitCode::SUCCESS)
}

/// `clipdex migrate --to URL`.
pub fn migrate(g: &GlobalOptions, args: &MigrateArgs) -> anyhow::Result<ExitCode> {
    let (to, json) = (&args.to, args.json);
    let DbLocation::Dir(from) = g.database()? else {
        anyhow::bail!("migrate copies a folder library: --db names it (the library is already in PostgreSQL)");
    };
    let to = DbLocation::parse(to)?;
    let report = clipdex::library::migrate::migrate(&from, &to, clipdex::ann::GRAPH_MIN_VECTORS)?;
    let mut out = std::io::stdout().lock();
    if json {
        writeln!(out, "{}", serde_json::to_string(&report)?)?;
    } else {
        let c = &report.copied;
        writeln!(
            out,
            "copied {} images ({} files, {} vectors), {} failures, {} folders, {} tagged, {} captions into {}",
            c.images, c.paths, c.vectors, c.failures, c.roots, c.tagged, c.captions, report.to
        )?;
        writeln!(
            out,
            "checked: counts agree, {} sample searches return the same images; search index: {}; {:.1} s",
            report.checked_searches, report.index, report.seconds
        )?;
        writeln!(out, "use it with --db {}", report.to)?;
    }
    Ok(ExitCode::SUCCESS)
}
