//! `clipdex serve`: the HTTP API and the web UI over the library, indexing meanwhile; commands
//! of other processes on the library it holds run here ([`super::forward`]).

use std::io::Write;
use std::process::ExitCode;

use clap::Args;

use clipdex::Library;

use super::GlobalOptions;

/// `clipdex serve`.
#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Address to listen on. Anything but loopback needs --token.
    #[arg(long, default_value = clipdex::server::DEFAULT_BIND, value_name = "HOST:PORT")]
    pub bind: String,
    /// Serve only: do not index or follow the folders.
    #[arg(long)]
    pub no_watch: bool,
    /// Bearer token every API call must send (`Authorization: Bearer TOKEN`); required to
    /// listen off loopback.
    #[arg(long, env = "CLIPDEX_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// Largest image upload accepted, bytes (suffixes K, M, G).
    #[arg(long, default_value = "32M", value_parser = parse_size, value_name = "SIZE")]
    pub max_upload: usize,
    /// Allow web pages from this origin (e.g. https://photos.example.org) to call the API;
    /// repeat for several. None by default.
    #[arg(long = "cors-origin", value_name = "ORIGIN")]
    pub cors_origins: Vec<String>,
    /// A fine-tuned CLIP that searches may be re-ranked with, as NAME=DIR (repeatable); the API
    /// takes `rerank=clip:NAME` and the web UI offers a switch. Only registered models, never
    /// a path from a request.
    #[arg(long = "finetuned", value_name = "NAME=DIR", value_parser = parse_named_model)]
    pub finetuned: Vec<(String, String)>,
    /// Photos embedded per model call while indexing.
    #[arg(long, default_value_t = 32, value_parser = clap::value_parser!(u64).range(1..=1024))]
    pub batch_size: u64,
    /// Quiet time after a change before indexing, in milliseconds.
    #[arg(long, default_value_t = 2000)]
    pub debounce_ms: u64,
    /// Full rescan interval in seconds.
    #[arg(long, default_value_t = 600, value_parser = clap::value_parser!(u64).range(1..))]
    pub rescan_secs: u64,
    /// Model-heavy requests (captions, questions, matching, masks, crops, re-ranking,
    /// regions) that run at once; each holds a photo reduced to at most 2048 px and a model's
    /// working memory.
    #[arg(long, default_value_t = clipdex::server::DEFAULT_HEAVY_RUNNING as u64, value_parser = clap::value_parser!(u64).range(1..=64))]
    pub heavy_requests: u64,
    /// Model-heavy requests that may wait for a turn; more are answered 503 with Retry-After.
    #[arg(long, default_value_t = clipdex::server::DEFAULT_HEAVY_WAITING as u64, value_parser = clap::value_parser!(u64).range(0..=1024))]
    pub heavy_queue: u64,
    /// Read the text in photos in the background with this OCR model (a folder of PP-OCR ONNX
    /// files); recorded as the library's `ocr_model` setting the first time, and refused when
    /// it differs from the recorded one (`clipdex config set ocr_model DIR|default` changes it).
    #[arg(long, value_name = "DIR|none")]
    pub ocr_model: Option<String>,
    /// Print a systemd user unit that runs this binary's `serve` (with --db and --bind as
    /// given), with how to install it, and exit.
    #[arg(long)]
    pub print_systemd_unit: bool,
    /// Find the faces in photos in the background with these face models (a folder with dlib's
    /// files), or `none` to make no face data; the library remembers it.
    #[arg(long, value_name = "DIR|none")]
    pub face_model: Option<String>,
}

fn parse_size(s: &str) -> Result<usize, String> {
    let s = s.trim();
    let (digits, unit) = match s.char_indices().find(|(_, c)| !c.is_ascii_digit()) {
        Some((i, _)) => s.split_at(i),
        None => (s, ""),
    };
    let n: usize = digits.parse().map_err(|_| format!("{s:?} is not a size (e.g. 32M)"))?;
    let unit: usize = match unit.trim().to_ascii_uppercase().trim_end_matches("IB").trim_end_matches('B') {
        "" => 1,
        "K" => 1 << 10,
        "M" => 1 << 20,
        "G" => 1 << 30,
        _ => return Err(format!("{s:?}: unknown unit (use K, M or G)")),
    };
    n.checked_mul(unit).filter(|&n| n > 0).ok_or_else(|| format!("{s:?} is not a usable size"))
}

fn parse_named_model(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((name, dir))
            if !name.is_empty()
                && !dir.is_empty()
                && name.chars().all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c)) =>
        {
            Ok((name.to_string(), dir.to_string()))
        }
        _ => Err(format!("{s:?}: expected NAME=DIR, NAME of letters, digits, '-', '_' or '.'")),
    }
}

/// Serves `library` until the process is stopped.
pub fn serve(g: &GlobalOptions, library: Library, args: &ServeArgs) -> anyhow::Result<ExitCode> {
    super::ocr::choose_model(&library, args.ocr_model.as_deref(), false)?;
    super::people::choose_face_model(&library, args.face_model.as_deref(), false)?;
    let options = clipdex::server::ServeOptions {
        bind: args.bind.clone(),
        token: args.token.clone(),
        watch: !args.no_watch,
        watch_options: clipdex::indexer::watch::WatchOptions {
            debounce: std::time::Duration::from_millis(args.debounce_ms),
            rescan_every: std::time::Duration::from_secs(args.rescan_secs),
        },
        max_upload: args.max_upload,
        cors_origins: args.cors_origins.clone(),
        workers: 0,
        finetuned: args.finetuned.clone(),
        body_timeout: clipdex::server::ServeOptions::default().body_timeout,
        blip: clipdex::server::BlipModels {
            caption: g.caption_model.clone(),
            vqa: g.vqa_model.clone(),
            itm: g.itm_model.clone(),
        },
        commands: Some(super::forward::runner(g)),
        heavy_running: args.heavy_requests as usize,
        heavy_waiting: args.heavy_queue as usize,
    };
    let photos = library.store().counts()?.images;
    let watching = if args.no_watch { "not indexing (--no-watch)" } else { "indexing in the background" };
    clipdex::server::serve(library, options, |addrs| {
        let mut out = std::io::stdout().lock();
        for a in addrs {
            let _ = writeln!(out, "clipdex serving http://{a}/ ({photos} photos; {watching})");
        }
        let _ = out.flush();
    })?;
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_parse_or_say_why() {
        assert_eq!(parse_size("32M"), Ok(32 << 20));
        assert_eq!(parse_size("512k"), Ok(512 << 10));
        assert_eq!(parse_size("1GiB"), Ok(1 << 30));
        assert_eq!(parse_size("1000"), Ok(1000));
        assert!(parse_size("0").is_err());
        assert!(parse_size("12X").unwrap_err().contains("unknown unit"));
        assert!(parse_size("lots").is_err());
    }
}
