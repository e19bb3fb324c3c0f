//! The OpenAPI document against the server itself, by schemathesis, a third-party contract
//! fuzzer (a test tool like Chromium for the browser test; `.ci/run` installs the pinned
//! version into a virtual environment and names it in `CLIPDEX_SCHEMATHESIS`). Every check is
//! on: no 5xx, every status, header and body as documented, schema-valid requests accepted and
//! schema-violating ones refused, 405 for undeclared methods, and the bearer token honoured;
//! with and without `--token`. Fixture models stand in for every model the API loads.
//!
//! `POST /api/cli` is left out: it runs clipdex commands, and fuzzing it would move files
//! (`duplicates --move-to`) wherever the fuzzer's strings point.

use std::path::{Path, PathBuf};
use std::process::Command;

mod common;
use common::{Served, fixtures, start_server};

fn schemathesis() -> Option<PathBuf> {
    if let Some(st) = std::env::var_os("CLIPDEX_SCHEMATHESIS") {
        return Some(PathBuf::from(st));
    }
    std::env::var_os("PATH").and_then(|paths| std::env::split_paths(&paths).map(|p| p.join("st")).find(|p| p.is_file()))
}

fn serve(db: &Path, extra: &[&str]) -> (Served, String) {
    let blip = fixtures().join("blip");
    let mut command = Command::new(env!("CARGO_BIN_EXE_clipdex"));
    command
        .arg("--db")
        .arg(db)
        .arg("--model")
        .arg(fixtures().join("clip-tiny-p32"))
        .arg("--seg-model")
        .arg(fixtures().join("clipseg/clipseg-tiny"))
        .arg("--caption-model")
        .arg(blip.join("blip-tiny-captioning"))
        .arg("--vqa-model")
        .arg(blip.join("blip-tiny-vqa"))
        .arg("--itm-model")
        .arg(blip.join("blip-tiny-itm"))
        // No background indexing: the fuzzer adds folders such as `/`.
        .args(["serve", "--bind", "127.0.0.1:0", "--no-watch"])
        .args(extra);
    start_server(command)
}

#[test]
fn the_openapi_document_describes_the_server_exactly() {
    let required = std::env::var("CLIPDEX_E2E").is_ok_and(|v| v == "require");
    let Some(st) = schemathesis() else {
        assert!(
            !required,
            "CLIPDEX_E2E=require but schemathesis is missing (set CLIPDEX_SCHEMATHESIS; .ci/run installs it)"
        );
        eprintln!("skipped: schemathesis not installed (pip install schemathesis; CLIPDEX_SCHEMATHESIS=path/to/st)");
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let photos = tmp.path().join("photos");
    std::fs::create_dir_all(&photos).unwrap();
    for name in ["astronaut.jpg", "coffee.png", "chelsea_exif3.jpg", "chelsea_small.bmp"] {
        std::fs::copy(fixtures().join("images").join(name), photos.join(name)).unwrap();
    }
    let db = tmp.path().join("db");
    let clipdex = |args: &[&str]| {
        let out = Command::new(env!("CARGO_BIN_EXE_clipdex"))
            .arg("--db")
            .arg(&db)
            .arg("--model")
            .arg(fixtures().join("clip-tiny-p32"))
            .args(args)
            .output()
            .unwrap();
        assert!(out.status.success(), "{args:?}: {}", String::from_utf8_lossy(&out.stderr));
    };
    clipdex(&["add", photos.to_str().unwrap()]);
    clipdex(&["index"]);
    let config = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/schemathesis.toml");
    for token in [None, Some("contract-secret")] {
        let extra: Vec<&str> = token.map(|t| vec!["--token", t]).unwrap_or_default();
        let (_server, url) = serve(&db, &extra);
        let mut run = Command::new(&st);
        run.arg("--config-file")
            .arg(&config)
            .args(["run", &format!("{url}/api/openapi.json"), "--exclude-path", "/api/cli"])
            .args(["--max-examples", "40", "--seed", "1", "--workers", "1", "--no-color"])
            .args(["--generation-database", "none", "--request-timeout", "60"])
            .current_dir(tmp.path());
        if let Some(t) = token {
            run.args(["--header", &format!("Authorization: Bearer {t}")]);
        }
        let out = run.output().unwrap();
        let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
        eprintln!(
            "schemathesis, token {token:?}:\n{}",
            text.lines().rev().take(25).collect::<Vec<_>>().into_iter().rev().collect::<Vec<_>>().join("\n")
        );
        assert!(out.status.success(), "schemathesis found problems (token {token:?}):\n{text}");
    }
}
