//! clipdex as an installed tool: completions and manual pages generated from the command
//! definition, the systemd user unit of `serve`, `models download` (offline, against a local
//! server, and from copied files), and messages that name a command the user has.

use std::io::{Read, Write};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

mod common;

fn bin() -> PathBuf {
    std::fs::canonicalize(env!("CARGO_BIN_EXE_clipdex")).unwrap()
}

/// clipdex with its caches (Hugging Face's and its own) in `home`, and no network settings
/// from outside.
fn clipdex_in(home: &Path, args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut cmd = Command::new(bin());
    cmd.args(args)
        .env("HOME", home)
        .env("XDG_CACHE_HOME", home.join("cache"))
        .env("HF_HOME", home.join("hf"))
        .env("CLIPDEX_DB", home.join("db"))
        .env_remove("HF_HUB_OFFLINE")
        .env_remove("HF_ENDPOINT")
        .env_remove("CLIPDEX_PYPI_FILES_URL")
        .env_remove("CLIPDEX_OCR_MODEL")
        .env_remove("CLIPDEX_FACE_MODEL")
        .env_remove("CLIPDEX_MODEL");
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.output().unwrap()
}

fn stdout(out: &Output) -> String {
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout.clone()).unwrap()
}

fn subcommands() -> Vec<String> {
    let home = tempfile::tempdir().unwrap();
    let help = stdout(&clipdex_in(home.path(), &["--help"], &[]));
    let end = help.find("\nOptions:\n").unwrap();
    help[..end]
        .lines()
        .filter_map(|l| l.strip_prefix("  ").filter(|l| !l.starts_with(' ')))
        .filter_map(|l| l.split_whitespace().next())
        .map(str::to_string)
        .collect()
}

#[test]
fn completions_know_every_command() {
    let home = tempfile::tempdir().unwrap();
    let commands = subcommands();
    assert!(commands.len() >= 30 && commands.iter().any(|c| c == "completions"), "{commands:?}");
    for shell in ["bash", "zsh", "fish"] {
        let script = stdout(&clipdex_in(home.path(), &["completions", shell], &[]));
        for name in &commands {
            assert!(script.contains(name.as_str()), "the {shell} completions lack `{name}`");
        }
        // Options of a command, and the value of one (the shells of `completions`).
        assert!(script.contains("min-score") && script.contains("powershell"), "{shell}");
    }
    let bash = stdout(&clipdex_in(home.path(), &["completions", "bash"], &[]));
    assert!(bash.contains("complete -F _clipdex"), "{bash}");
    let bad = clipdex_in(home.path(), &["completions", "tcsh"], &[]);
    assert_eq!(bad.status.code(), Some(2));
}

#[test]
fn the_manual_page_names_every_command_and_out_writes_one_page_each() {
    let home = tempfile::tempdir().unwrap();
    let page = stdout(&clipdex_in(home.path(), &["man"], &[])).replace("\\-", "-");
    assert!(page.starts_with(".ie") || page.contains(".TH clipdex"), "{page}");
    for name in subcommands() {
        assert!(page.contains(&format!("clipdex-{name}(1)")), "the manual page does not name `{name}`");
    }
    let dir = home.path().join("man1");
    stdout(&clipdex_in(home.path(), &["man", "--out", dir.to_str().unwrap()], &[]));
    for name in ["clipdex.1", "clipdex-search.1", "clipdex-models.1", "clipdex-models-download.1"] {
        assert!(dir.join(name).is_file(), "no {name}");
    }
    let search = std::fs::read_to_string(dir.join("clipdex-search.1")).unwrap().replace("\\-", "-");
    assert!(search.contains("--min-score"), "{search}");
}

#[test]
fn the_systemd_unit_runs_serve_with_the_installed_binary() {
    let home = tempfile::tempdir().unwrap();
    let db = home.path().join("photos db");
    let unit = stdout(&clipdex_in(
        home.path(),
        &["--db", db.to_str().unwrap(), "serve", "--print-systemd-unit", "--bind", "127.0.0.1:7999"],
        &[],
    ));
    // An INI file: sections, then NAME=value lines.
    let mut section = String::new();
    let mut entries = Vec::new();
    for line in unit.lines().map(str::trim).filter(|l| !l.is_empty() && !l.starts_with('#')) {
        if let Some(name) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            section = name.to_string();
        } else {
            let (key, value) = line.split_once('=').unwrap_or_else(|| panic!("not NAME=value: {line:?}"));
            entries.push((section.clone(), key.to_string(), value.to_string()));
        }
    }
    let get = |s: &str, k: &str| entries.iter().find(|(es, ek, _)| es == s && ek == k).map(|e| e.2.clone());
    let exec = get("Service", "ExecStart").expect("ExecStart in [Service]");
    let expected = format!("{} --db \"{}\" serve --bind 127.0.0.1:7999", bin().display(), db.display());
    assert_eq!(exec, expected);
    assert_eq!(get("Install", "WantedBy").as_deref(), Some("default.target"));
    assert_eq!(get("Service", "KillSignal").as_deref(), Some("SIGINT"));
    assert!(get("Unit", "Description").is_some());
    // It opened no library.
    assert!(!db.exists());

    // systemd's own check, where systemd is installed.
    let Ok(version) = Command::new("systemd-analyze").arg("--version").output() else {
        eprintln!("systemd-analyze is not installed: the unit was checked as INI only");
        return;
    };
    assert!(version.status.success());
    let file = home.path().join("clipdex.service");
    std::fs::write(&file, &unit).unwrap();
    let verify = Command::new("systemd-analyze").arg("verify").arg(&file).output().unwrap();
    let said = String::from_utf8_lossy(&verify.stderr).to_string() + &String::from_utf8_lossy(&verify.stdout);
    assert!(verify.status.success(), "systemd-analyze verify: {said}");
    assert!(!said.contains("clipdex.service:"), "systemd-analyze found problems in the unit: {said}");
}

#[test]
fn add_names_a_command_the_user_has() {
    let home = tempfile::tempdir().unwrap();
    let photos = home.path().join("photos");
    std::fs::create_dir(&photos).unwrap();
    // Run from a build folder that is not on PATH (`cargo run`): the message names the binary.
    let out = clipdex_in(home.path(), &["add", photos.to_str().unwrap()], &[("PATH", "/usr/bin:/bin")]);
    let text = stdout(&out);
    assert!(text.contains(&format!("`{} index`", bin().display())), "{text}");
    // Installed on PATH: its name.
    let dir = bin().parent().unwrap().to_string_lossy().into_owned();
    let out = clipdex_in(home.path(), &["add", photos.to_str().unwrap()], &[("PATH", &format!("{dir}:/usr/bin:/bin"))]);
    let text = stdout(&out);
    assert!(text.contains("`clipdex index`") && text.contains("`clipdex serve`"), "{text}");
}

/// A one-file HTTP server: answers every request with `body`; returns its base URL and the
/// paths it was asked for.
fn serve_bytes(body: Vec<u8>) -> (String, std::sync::mpsc::Receiver<String>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { return };
            let mut request = Vec::new();
            let mut byte = [0u8; 1];
            while !request.ends_with(b"\r\n\r\n") && stream.read(&mut byte).unwrap_or(0) == 1 {
                request.push(byte[0]);
            }
            let line = String::from_utf8_lossy(&request).lines().next().unwrap_or_default().to_string();
            let _ = tx.send(line.split_whitespace().nth(1).unwrap_or_default().to_string());
            let head = format!("HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n", body.len());
            let _ = stream.write_all(head.as_bytes()).and_then(|_| stream.write_all(&body));
        }
    });
    (url, rx)
}

#[test]
fn without_network_models_download_says_what_to_copy_where() {
    let home = tempfile::tempdir().unwrap();
    // Nothing listens on port 1: a refused connection, as on a machine without network.
    let id = "openai/clip-vit-base-patch32";
    for env in [[("HF_ENDPOINT", "http://127.0.0.1:1")], [("HF_HUB_OFFLINE", "1")]] {
        let out = clipdex_in(home.path(), &["models", "download", id], &env);
        assert_eq!(out.status.code(), Some(69), "{env:?}: {}", String::from_utf8_lossy(&out.stderr));
        let err = String::from_utf8_lossy(&out.stderr);
        let cache = home.path().join("hf/hub/models--openai--clip-vit-base-patch32");
        for needed in [
            &format!("clipdex models download {id}"),
            &cache.display().to_string(),
            "config.json",
            "model.safetensors",
            "tokenizer.json",
            "preprocessor_config.json",
            "`--model DIR`",
            "https://huggingface.co/openai/clip-vit-base-patch32",
        ] {
            assert!(err.contains(needed), "{env:?}: the message lacks {needed:?}:\n{err}");
        }
    }
    // A BLIP is pointed to by its own option.
    let out = clipdex_in(
        home.path(),
        &["models", "download", "Salesforce/blip-image-captioning-base"],
        &[("HF_HUB_OFFLINE", "1")],
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("`--caption-model DIR`"));

    let out =
        clipdex_in(home.path(), &["models", "download", "ocr"], &[("CLIPDEX_PYPI_FILES_URL", "http://127.0.0.1:1")]);
    assert_eq!(out.status.code(), Some(69), "{}", String::from_utf8_lossy(&out.stderr));
    let err = String::from_utf8_lossy(&out.stderr);
    let dest = home.path().join("cache/clipdex/models/ocr");
    for needed in [
        "rapidocr-3.10.0-py3-none-any.whl",
        "2fc34e26cd0f48514804a94f8832283039c7334076bff60768b1fed9ad068050",
        "https://files.pythonhosted.org/packages/py3/r/rapidocr/rapidocr-3.10.0-py3-none-any.whl",
        "clipdex models download ocr --from DIR",
        &dest.display().to_string(),
        "PP-OCRv6_det_small.onnx",
        "`--ocr-model DIR`",
    ] {
        assert!(err.contains(needed), "the message lacks {needed:?}:\n{err}");
    }
    assert!(!dest.exists());
    let bad = clipdex_in(home.path(), &["models", "download", "not an id"], &[]);
    assert_eq!(bad.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&bad.stderr).contains("not a Hugging Face id"));
}

#[test]
fn a_download_whose_hash_differs_is_refused_and_leaves_nothing() {
    let home = tempfile::tempdir().unwrap();
    let (url, asked) = serve_bytes(b"not the face models".to_vec());
    let out = clipdex_in(home.path(), &["models", "download", "faces"], &[("CLIPDEX_PYPI_FILES_URL", &url)]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("expected b79bd200a88c87c9a9d446c990ae71c5a626d1f3730174e6d570157ff1d896cf")
            && err.contains("nothing was unpacked"),
        "{err}"
    );
    assert_eq!(
        asked.recv().unwrap(),
        "/packages/source/f/face_recognition_models/face_recognition_models-0.3.0.tar.gz"
    );
    let models = home.path().join("cache/clipdex/models");
    let left: Vec<_> =
        std::fs::read_dir(&models).map(|d| d.flatten().map(|e| e.file_name()).collect()).unwrap_or_default();
    assert!(left.is_empty(), "left behind: {left:?}");

    // The same file copied by hand is refused too.
    let copied = home.path().join("usb");
    std::fs::create_dir(&copied).unwrap();
    std::fs::write(copied.join("rapidocr-3.10.0-py3-none-any.whl"), b"damaged").unwrap();
    let out = clipdex_in(home.path(), &["models", "download", "ocr", "--from", copied.to_str().unwrap()], &[]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("expected 2fc34e26"));
    assert!(!models.join("ocr").exists());
}

/// Where a wheel that `pip download rapidocr==3.10.0` fetched may lie on this machine.
fn ocr_wheel_folder() -> Option<PathBuf> {
    let dir = std::env::var_os("CLIPDEX_OCR_WHEELS")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache/clipdex-ci/ocr-models/dl")))?;
    dir.join("rapidocr-3.10.0-py3-none-any.whl").is_file().then_some(dir)
}

#[test]
fn the_ocr_models_unpacked_from_the_wheel_are_found_without_an_option() {
    let Some(wheels) = ocr_wheel_folder() else {
        eprintln!("skipped: no rapidocr-3.10.0 wheel here (CLIPDEX_OCR_WHEELS)");
        return;
    };
    let home = tempfile::tempdir().unwrap();
    let out =
        clipdex_in(home.path(), &["models", "download", "ocr", "--from", wheels.to_str().unwrap(), "--json"], &[]);
    let doc: serde_json::Value = serde_json::from_str(&stdout(&out)).unwrap();
    let dir = home.path().join("cache/clipdex/models/ocr");
    assert_eq!(doc["dir"], dir.to_string_lossy().as_ref());
    for name in
        ["PP-OCRv6_det_small.onnx", "PP-OCRv6_rec_small.onnx", "ch_ppocr_mobile_v2.0_cls_mobile.onnx", ".complete"]
    {
        assert!(dir.join(name).is_file(), "no {name}");
    }
    // `ocr` reads with them without --ocr-model.
    let image = common::fixtures().join("ocr/receipt.png");
    if image.is_file() {
        let out = clipdex_in(home.path(), &["ocr", image.to_str().unwrap(), "--json"], &[]);
        let doc: serde_json::Value = serde_json::from_str(&stdout(&out)).unwrap();
        assert!(!doc[0]["lines"].as_array().unwrap().is_empty(), "{doc}");
    }
}

/// A Hugging Face hub of one repository, `test/clip-tiny`, holding the files of `dir` plus a
/// TensorFlow copy it lists but must not be asked for: what hf-hub asks (the file list, then
/// each file's headers with `Range: bytes=0-0`, then the bytes). Returns the endpoint and the
/// paths asked for.
fn serve_hub(dir: PathBuf) -> (String, std::sync::mpsc::Receiver<String>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { return };
            let mut request = Vec::new();
            let mut byte = [0u8; 1];
            while !request.ends_with(b"\r\n\r\n") && stream.read(&mut byte).unwrap_or(0) == 1 {
                request.push(byte[0]);
            }
            let request = String::from_utf8_lossy(&request).to_string();
            let path = request.split_whitespace().nth(1).unwrap_or_default().to_string();
            let range =
                request.lines().find_map(|l| l.to_ascii_lowercase().strip_prefix("range: bytes=").map(str::to_string));
            let _ = tx.send(path.clone());
            let (status, headers, body) = if path == "/api/models/test/clip-tiny/revision/main" {
                let mut names: Vec<String> = std::fs::read_dir(&dir)
                    .unwrap()
                    .flatten()
                    .map(|e| e.file_name().to_string_lossy().into())
                    .collect();
                names.push("tf_model.h5".into());
                let siblings: Vec<_> = names.iter().map(|n| serde_json::json!({"rfilename": n})).collect();
                let doc = serde_json::json!({"siblings": siblings, "sha": "0123456789abcdef0123456789abcdef01234567"});
                ("200 OK", String::new(), doc.to_string().into_bytes())
            } else if let Some(file) = path.strip_prefix("/test/clip-tiny/resolve/main/")
                && let Ok(data) = std::fs::read(dir.join(file))
            {
                let start: usize = range.as_deref().and_then(|r| r.split('-').next()?.trim().parse().ok()).unwrap_or(0);
                let end = if range.as_deref().is_some_and(|r| r.trim() == "0-0") { 1 } else { data.len() };
                let headers = format!(
                    "x-repo-commit: 0123456789abcdef0123456789abcdef01234567\r\netag: \"{}-{}\"\r\n\
                     content-range: bytes {start}-{}/{}\r\n",
                    file.replace('.', "-"),
                    data.len(),
                    end.max(1) - 1,
                    data.len()
                );
                ("206 Partial Content", headers, data[start.min(data.len())..end].to_vec())
            } else {
                ("404 Not Found", String::new(), Vec::new())
            };
            let head =
                format!("HTTP/1.1 {status}\r\n{headers}Content-Length: {}\r\nConnection: close\r\n\r\n", body.len());
            let _ = stream.write_all(head.as_bytes()).and_then(|_| stream.write_all(&body));
        }
    });
    (url, rx)
}

#[test]
fn a_hub_model_comes_into_the_cache_and_loads_from_there_offline() {
    let home = tempfile::tempdir().unwrap();
    let fixture = common::fixtures().join("clip-tiny-p32");
    let (endpoint, asked) = serve_hub(fixture.clone());
    let out =
        clipdex_in(home.path(), &["models", "download", "test/clip-tiny", "--json"], &[("HF_ENDPOINT", &endpoint)]);
    let doc: serde_json::Value = serde_json::from_str(&stdout(&out)).unwrap();
    let snapshot =
        home.path().join("hf/hub/models--test--clip-tiny/snapshots/0123456789abcdef0123456789abcdef01234567");
    assert_eq!(doc["dir"], snapshot.to_string_lossy().as_ref());
    for entry in std::fs::read_dir(&fixture).unwrap().flatten() {
        let name = entry.file_name();
        assert_eq!(std::fs::read(snapshot.join(&name)).unwrap(), std::fs::read(entry.path()).unwrap(), "{name:?}");
    }
    let paths: Vec<String> = asked.try_iter().collect();
    assert!(!paths.iter().any(|p| p.contains("tf_model")), "{paths:?}");
    // The id now loads from the cache with the network off.
    let out = clipdex_in(
        home.path(),
        &["--model", "test/clip-tiny", "embed", "--text", "a dog", "--json"],
        &[("HF_HUB_OFFLINE", "1")],
    );
    let text = stdout(&out);
    assert!(text.contains("a dog"), "{text}");
}
