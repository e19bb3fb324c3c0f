//! `clipdex config get|set|list`: the settings the library records (its models, their
//! precision, background jobs), which every command and the server use without flags; and
//! [`settle`], which applies them to a command's options and refuses a flag that disagrees.

use std::io::Write;

use anyhow::Context;
use clap::{Args, Subcommand};
use serde_json::json;

use clipdex::library::{SettingEntry, Settings};
use clipdex::store::Store;
use clipdex::{Library, models::precision::Precision};

use super::GlobalOptions;
use super::session::Runner;

/// `clipdex config`.
#[derive(Debug, Args)]
pub struct ConfigArgs {
    #[command(subcommand)]
    pub action: ConfigAction,
}

/// What `clipdex config` does.
#[derive(Debug, Subcommand)]
pub enum ConfigAction {
    /// Print one setting: the recorded value, else the default that applies.
    Get {
        /// The setting (see `clipdex config list`).
        name: String,
        /// Print JSON: {"name", "value" (null when not recorded), "default", "about"}.
        #[arg(long)]
        json: bool,
    },
    /// Record a setting in the library; `default` forgets it (the default applies again).
    Set {
        /// The setting (see `clipdex config list`).
        name: String,
        /// A model (hub id or folder), a precision (f32, bf16, int8, auto), or on/off.
        value: String,
        /// Print the setting as JSON afterwards.
        #[arg(long)]
        json: bool,
    },
    /// Every setting, with its recorded value or default.
    List {
        /// Print JSON: a list of {"name", "value", "default", "about"}.
        #[arg(long)]
        json: bool,
    },
}

fn entry_json(e: &SettingEntry) -> serde_json::Value {
    json!({"name": e.name, "value": e.value, "default": e.default, "about": e.about})
}

fn entry_line(e: &SettingEntry) -> String {
    match &e.value {
        Some(v) => format!("{:<16} {v}", e.name),
        None => format!("{:<16} {} (default)", e.name, e.default),
    }
}

/// Runs `clipdex config` on the open library (or, forwarded, on the server's: a change
/// applies there at once).
pub fn run(library: &Library, args: ConfigArgs, out: &mut dyn Write, ctx: &Runner) -> anyhow::Result<()> {
    match args.action {
        ConfigAction::Get { name, json } => {
            let entry = library.setting_entry(&name)?;
            if json {
                serde_json::to_writer_pretty(&mut *out, &entry_json(&entry))?;
                writeln!(out)?;
            } else {
                writeln!(out, "{}", entry.value.as_deref().unwrap_or(&entry.default))?;
            }
        }
        ConfigAction::Set { name, value, json } => {
            let value = (value != "default").then_some(value.as_str());
            let entry = library.set_setting_value(&name, value)?;
            if let Some(server) = ctx.server {
                server.settings_changed();
            }
            if json {
                serde_json::to_writer_pretty(&mut *out, &entry_json(&entry))?;
                writeln!(out)?;
            } else {
                writeln!(out, "{}", entry_line(&entry))?;
            }
        }
        ConfigAction::List { json } => {
            let entries = library.setting_entries()?;
            if json {
                serde_json::to_writer_pretty(&mut *out, &entries.iter().map(entry_json).collect::<Vec<_>>())?;
                writeln!(out)?;
            } else {
                for e in &entries {
                    writeln!(out, "{}", entry_line(e))?;
                }
            }
        }
    }
    Ok(())
}

/// The options `g` with the library's recorded settings in place of the defaults; a setting
/// given on the command line or in the environment that disagrees with a recorded one is an
/// error that says so.
pub fn settle(g: &GlobalOptions, settings: &Settings) -> anyhow::Result<GlobalOptions> {
    let mut settled = g.clone();
    let given = |name: &str| g.given.iter().any(|n| n == name);
    let flags: [(&str, Option<String>); 6] = [
        ("text_model", g.text_model.clone()),
        ("caption_model", Some(g.caption_model.clone())),
        ("vqa_model", Some(g.vqa_model.clone())),
        ("itm_model", Some(g.itm_model.clone())),
        ("seg_model", Some(g.seg_model.clone())),
        ("precision", Some(g.precision.to_string())),
    ];
    for (name, value) in flags {
        if let (true, Some(value)) = (given(name), &value)
            && let Some(refusal) = settings.disagreement(name, value)?
        {
            anyhow::bail!(refusal);
        }
        if given(name) {
            continue;
        }
        let Some(recorded) = settings.get(name)? else { continue };
        match name {
            "text_model" => settled.text_model = Some(recorded),
            "caption_model" => settled.caption_model = recorded,
            "vqa_model" => settled.vqa_model = recorded,
            "itm_model" => settled.itm_model = recorded,
            "seg_model" => settled.seg_model = recorded,
            _ => settled.precision = recorded.parse::<Precision>()?,
        }
    }
    settled.ocr_model = settings.ocr_model.clone();
    Ok(settled)
}

/// [`settle`] for a command that opens no library of its own (`tag`, `caption IMAGE`, `ask`,
/// ...): the settings of the library `--db` names, when there is one and no other process
/// holds it; and its CLIP model when no `--model` is given.
pub fn settle_from_db(g: &GlobalOptions, use_model: bool) -> anyhow::Result<GlobalOptions> {
    let Ok(db) = g.database() else { return Ok(g.clone()) };
    if !db.exists() {
        return Ok(g.clone());
    }
    let store = match Store::open(&db) {
        Ok(store) => store,
        Err(e) => {
            // Held by a server, say: the command runs with its own options.
            tracing::debug!("the library's settings are not read: {e}");
            return Ok(g.clone());
        }
    };
    let settings: Settings = store
        .setting(clipdex::library::SETTINGS_KEY)
        .with_context(|| format!("reading the settings of {db}"))?
        .unwrap_or_default();
    let mut settled = settle(g, &settings)?;
    if use_model && g.model.is_none() {
        settled.model = store.model()?.map(|(model, _)| model);
    }
    Ok(settled)
}
