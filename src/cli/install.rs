//! Fitting clipdex into a machine as an installed tool: shell completions
//! (`clipdex completions SHELL`) and manual pages (`clipdex man`), both generated from the same
//! command definition as `--help` ([`super::help::command`]), and the systemd user unit that
//! runs `serve` (`clipdex serve --print-systemd-unit`).

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;
use clap::Args;

use super::GlobalOptions;
use super::serve::ServeArgs;

/// `clipdex completions`.
#[derive(Debug, Args)]
pub struct CompletionsArgs {
    /// The shell to complete in.
    #[arg(value_enum)]
    pub shell: clap_complete::Shell,
}

/// `clipdex man`.
#[derive(Debug, Args)]
pub struct ManArgs {
    /// Write clipdex.1 and one page a command (clipdex-search.1, ...) into this folder, e.g.
    /// ~/.local/share/man/man1, instead of printing clipdex.1.
    #[arg(long, value_name = "DIR")]
    pub out: Option<PathBuf>,
}

/// Prints the completion script of `args.shell`.
pub fn completions(args: &CompletionsArgs) -> anyhow::Result<ExitCode> {
    let mut out = std::io::stdout().lock();
    clap_complete::generate(args.shell, &mut super::help::command(), "clipdex", &mut out);
    out.flush()?;
    Ok(ExitCode::SUCCESS)
}

/// Prints the manual page, or writes every page into `--out`.
pub fn man(args: &ManArgs) -> anyhow::Result<ExitCode> {
    let cmd = super::help::command();
    match &args.out {
        Some(dir) => {
            std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
            clap_mangen::generate_to(cmd, dir)
                .with_context(|| format!("cannot write the pages into {}", dir.display()))?;
            writeln!(std::io::stdout().lock(), "manual pages in {} (`man clipdex`)", dir.display())?;
        }
        None => {
            let mut out = std::io::stdout().lock();
            clap_mangen::Man::new(cmd).render(&mut out)?;
            out.flush()?;
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// Prints the systemd user unit that runs `serve` with this very binary.
pub fn print_systemd_unit(g: &GlobalOptions, args: &ServeArgs) -> anyhow::Result<ExitCode> {
    let exe = std::env::current_exe().context("cannot tell where this program is")?;
    let exe = std::fs::canonicalize(&exe).unwrap_or(exe);
    let db = match &g.db {
        Some(db) if !db.to_string_lossy().contains("://") => Some(std::path::absolute(db)?),
        Some(db) => Some(db.clone()),
        None => None,
    };
    let bind = (args.bind != clipdex::server::DEFAULT_BIND).then_some(args.bind.as_str());
    write!(std::io::stdout().lock(), "{}", systemd_unit(&exe, db.as_deref(), bind))?;
    Ok(ExitCode::SUCCESS)
}

/// The unit text: `ExecStart` names `exe` (and `--db`, `--bind` where given); secrets and
/// other settings go in the optional environment file, never in the unit. `serve` stops
/// cleanly on SIGINT (as on Ctrl-C), so that is the signal systemd sends.
pub fn systemd_unit(exe: &Path, db: Option<&Path>, bind: Option<&str>) -> String {
    let mut command = vec![systemd_word(&exe.to_string_lossy())];
    if let Some(db) = db {
        command.push("--db".into());
        command.push(systemd_word(&db.to_string_lossy()));
    }
    command.push("serve".into());
    if let Some(bind) = bind {
        command.push("--bind".into());
        command.push(systemd_word(bind));
    }
    let address = bind.unwrap_or(clipdex::server::DEFAULT_BIND);
    format!(
        "# clipdex serve as a systemd user service. Install it with:\n\
         #   clipdex serve --print-systemd-unit > ~/.config/systemd/user/clipdex.service\n\
         #   systemctl --user daemon-reload && systemctl --user enable --now clipdex\n\
         # Logs: journalctl --user -u clipdex. To keep it running while you are logged out:\n\
         #   loginctl enable-linger \"$USER\"\n\
         # CLIPDEX_TOKEN, HF_HUB_OFFLINE, RUST_LOG and the like go in ~/.config/clipdex/serve.env\n\
         # (lines of NAME=value), not here.\n\
         \n\
         [Unit]\n\
         Description=clipdex photo search (web UI and HTTP API on {address})\n\
         \n\
         [Service]\n\
         Type=simple\n\
         ExecStart={command}\n\
         EnvironmentFile=-%h/.config/clipdex/serve.env\n\
         KillSignal=SIGINT\n\
         TimeoutStopSec=30\n\
         Restart=on-failure\n\
         RestartSec=10\n\
         \n\
         [Install]\n\
         WantedBy=default.target\n",
        command = command.join(" ")
    )
}

/// One word of a systemd command line: `%` and `$` escaped, quoted when it holds a space,
/// a quote or a backslash.
fn systemd_word(word: &str) -> String {
    let escaped = word.replace('%', "%%").replace('$', "$$");
    if escaped.chars().any(|c| c.is_whitespace() || "\"'\\;".contains(c)) {
        format!("\"{}\"", escaped.replace('\\', "\\\\").replace('"', "\\\""))
    } else {
        escaped
    }
}

/// How the user runs this program again: `clipdex` when that name on `PATH` is this very
/// program (an installed build), else its full path (a build started with `cargo run`, or a
/// copy outside `PATH`), so a message never names a command the user does not have.
pub fn program() -> String {
    let Ok(me) = std::env::current_exe().and_then(std::fs::canonicalize) else { return "clipdex".into() };
    let on_path = std::env::var_os("PATH").and_then(|path| {
        std::env::split_paths(&path)
            .map(|dir| dir.join("clipdex"))
            .find(|p| p.is_file())
            .and_then(|p| std::fs::canonicalize(p).ok())
    });
    if on_path.as_deref() == Some(me.as_path()) {
        return "clipdex".into();
    }
    let text = me.to_string_lossy().into_owned();
    if text.chars().any(|c| c.is_whitespace() || "'\"$`\\".contains(c)) {
        format!("'{}'", text.replace('\'', "'\\''"))
    } else {
        text
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unit_words_are_escaped_for_systemd() {
        assert_eq!(systemd_word("/usr/bin/clipdex"), "/usr/bin/clipdex");
        assert_eq!(systemd_word("/home/a b/clipdex"), "\"/home/a b/clipdex\"");
        assert_eq!(systemd_word("/x/100%/$HOME"), "/x/100%%/$$HOME");
    }

    #[test]
    fn the_unit_runs_serve_with_the_binary_and_the_options_given() {
        let unit = systemd_unit(Path::new("/opt/c d/clipdex"), Some(Path::new("/srv/lib")), Some("0.0.0.0:80"));
        let exec = unit.lines().find_map(|l| l.strip_prefix("ExecStart=")).unwrap();
        assert_eq!(exec, "\"/opt/c d/clipdex\" --db /srv/lib serve --bind 0.0.0.0:80");
        let plain = systemd_unit(Path::new("/usr/bin/clipdex"), None, None);
        assert!(plain.contains("\nExecStart=/usr/bin/clipdex serve\n"), "{plain}");
    }
}
