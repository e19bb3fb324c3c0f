//! Every library command while `clipdex serve` holds a folder library: the command is run by
//! the server and prints exactly what it prints on its own (timings aside), JSON included;
//! commands that change the library take effect in the server; a server with a token needs
//! CLIPDEX_TOKEN; commands that cannot run through the server say so in one line.

use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_json::Value;

mod common;
use common::{Served, fixtures, start_server};

fn model() -> PathBuf {
    fixtures().join("clip-tiny-p32")
}

fn serve(db: &Path, extra: &[&str]) -> Served {
    let mut command = Command::new(env!("CARGO_BIN_EXE_clipdex"));
    command.arg("--db").arg(db).arg("--model").arg(model()).args(["serve", "--bind", "127.0.0.1:0"]).args(extra);
    start_server(command).0
}

fn clipdex<S: AsRef<OsStr>>(db: &Path, cwd: &Path, env: &[(&str, &str)], args: &[S]) -> Output {
    let mut c = Command::new(env!("CARGO_BIN_EXE_clipdex"));
    c.current_dir(cwd).arg("--db").arg(db).arg("--model").arg(model()).args(args).env_remove("CLIPDEX_TOKEN");
    for (k, v) in env {
        c.env(k, v);
    }
    c.output().unwrap()
}

/// Output with timings taken out (`took_ms` in JSON), for comparing two runs.
fn comparable(out: &Output) -> String {
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    text.lines()
        .map(|line| match serde_json::from_str::<Value>(line) {
            Ok(Value::Object(mut o)) => {
                o.remove("took_ms");
                serde_json::to_string(&o).unwrap()
            }
            _ => line.to_string(),
        })
        .collect::<Vec<_>>()
        .join("\n")
}

fn ok(out: Output) -> Output {
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    out
}

fn photo_library(tmp: &Path) -> (PathBuf, PathBuf) {
    let photos = tmp.join("photos");
    std::fs::create_dir_all(photos.join("cats")).unwrap();
    for name in ["coffee.png", "rocket.webp", "camera_gray.png", "chelsea_small.bmp", "astronaut.jpg"] {
        std::fs::copy(fixtures().join("images").join(name), photos.join(name)).unwrap();
    }
    std::fs::copy(fixtures().join("images/chelsea_exif3.jpg"), photos.join("cats/chelsea.jpg")).unwrap();
    std::fs::write(photos.join("broken.jpg"), b"\xFF\xD8\xFF not really a jpeg").unwrap();
    (photos.canonicalize().unwrap(), tmp.join("db"))
}

#[test]
fn library_commands_run_through_the_server_and_print_the_same() {
    let tmp = tempfile::tempdir().unwrap();
    let (photos, db) = photo_library(tmp.path());
    ok(clipdex(&db, tmp.path(), &[], &[OsStr::new("add"), photos.as_os_str()]));
    ok(clipdex(&db, tmp.path(), &[], &["index"]));
    ok(clipdex(&db, tmp.path(), &[], &["autotag", "--vocab", &fixture_vocab(tmp.path()), "--prior-ratio", "1"]));

    // Read-only commands; relative paths are the caller's (run from the photo folder).
    let id = {
        let out = ok(clipdex(&db, tmp.path(), &[], &["search", "a cat", "-k", "1", "--json"]));
        serde_json::from_slice::<Value>(&out.stdout).unwrap()["results"][0]["id"].as_u64().unwrap().to_string()
    };
    let commands: Vec<Vec<String>> = [
        vec!["search", "a cat", "-k", "4"],
        vec!["search", "a cat", "-k", "4", "--json", "--under", "cats"],
        vec!["search", "--tag", "cat", "--json"],
        // The query language: image paths in it are the caller's too.
        vec!["search", "a cat + ./coffee.png -rocket in:cats", "-k", "3", "--json"],
        vec!["search", "0.5:astronaut.jpg + a cat ext:png,jpg", "--sort", "name", "--min-score", "1"],
        vec!["similar", "coffee.png", "-k", "3", "--json"],
        vec!["similar", "astronaut.jpg", "-k", "2"],
        vec!["similar", &id, "-k", "2", "--json"],
        vec!["similar", &format!("#{id}"), "-k", "2"],
        vec!["show", "cats/chelsea.jpg", "--json"],
        vec!["stats"],
        vec!["stats", "--json"],
        vec!["tags", "--json"],
        vec!["tags"],
        vec!["show", &id],
        vec!["show", &id, "--json"],
        vec!["failures", "--json"],
        vec!["failures"],
        vec!["roots", "--json"],
        vec!["duplicates", "--json"],
        vec!["duplicates"],
    ]
    .iter()
    .map(|c| c.iter().map(|s| s.to_string()).collect())
    .collect();
    let served: Vec<Output> = {
        let _server = serve(&db, &["--no-watch"]);
        assert!(db.join("server.json").is_file(), "the server records where it listens");
        let held = clipdex(&db, &photos, &[], &["reindex", "--model", "x"]);
        assert!(!held.status.success());
        let said = String::from_utf8_lossy(&held.stderr);
        assert!(said.contains("held by `clipdex serve` at http://127.0.0.1:"), "{said}");
        commands.iter().map(|c| clipdex(&db, &photos, &[], c)).collect()
    };
    assert!(!db.join("server.json").exists(), "the record goes with the server");
    for (c, through_server) in commands.iter().zip(&served) {
        assert!(through_server.status.success(), "{c:?}: {}", String::from_utf8_lossy(&through_server.stderr));
        let alone = ok(clipdex(&db, &photos, &[], c));
        assert_eq!(comparable(through_server), comparable(&alone), "{c:?}");
        assert!(!through_server.stdout.is_empty(), "{c:?}");
    }
    // An error is the command's own, on stderr, with its exit status.
    let _server = serve(&db, &["--no-watch"]);
    let missing = clipdex(&db, &photos, &[], &["show", "123456789"]);
    assert!(!missing.status.success());
    assert!(String::from_utf8_lossy(&missing.stderr).contains("no image with id 123456789"));
}

#[test]
fn changes_through_the_server_take_effect_in_it() {
    let tmp = tempfile::tempdir().unwrap();
    let (photos, db) = photo_library(tmp.path());
    let _server = serve(&db, &[]);
    let more = tmp.path().join("more");
    std::fs::create_dir_all(&more).unwrap();
    std::fs::copy(fixtures().join("images/coffee_palette.png"), more.join("palette.png")).unwrap();

    let added = ok(clipdex(&db, tmp.path(), &[], &[OsStr::new("add"), photos.as_os_str(), OsStr::new("more")]));
    let said = String::from_utf8_lossy(&added.stdout);
    assert!(
        said.contains(&format!("added {}", more.canonicalize().unwrap().display())),
        "relative to the caller: {said}"
    );
    // `index` waits for a pass that started after it was asked for.
    let report: Value =
        serde_json::from_slice(&ok(clipdex(&db, tmp.path(), &[], &["index", "--json"])).stdout).unwrap();
    // The pass that `add` started may have embedded some photos already: each of the seven is
    // embedded by one pass or the other, and this one sees all eight files.
    let count = |key: &str| report[key].as_u64().unwrap_or(0);
    assert_eq!(count("seen"), 8, "{report}");
    assert_eq!(count("embedded") + count("unchanged") + count("linked"), 7, "{report}");
    let stats: Value = serde_json::from_slice(&ok(clipdex(&db, tmp.path(), &[], &["stats", "--json"])).stdout).unwrap();
    assert_eq!((stats["images"].as_u64(), stats["failures"].as_u64()), (Some(7), Some(1)), "{stats}");

    let removed = ok(clipdex(&db, tmp.path(), &[], &["remove", "more"]));
    assert!(String::from_utf8_lossy(&removed.stdout).contains("1 files forgotten"));
    let tagged = ok(clipdex(&db, tmp.path(), &[], &["autotag", "--vocab", &fixture_vocab(tmp.path()), "--json"]));
    let tagged: Value = serde_json::from_slice(&tagged.stdout).unwrap();
    assert_eq!(tagged["images"], 6, "{tagged}");

    // Commands that need the library to themselves say which server holds it.
    for args in [vec!["watch"], vec!["reindex", "--model", "x"], vec!["index", "--prune"]] {
        let out = clipdex(&db, tmp.path(), &[], &args);
        assert!(!out.status.success(), "{args:?}");
        let said = String::from_utf8_lossy(&out.stderr);
        assert!(said.contains("stop") && said.contains("server"), "{args:?}: {said}");
    }
}

#[test]
fn a_server_with_a_token_needs_it() {
    let tmp = tempfile::tempdir().unwrap();
    let (photos, db) = photo_library(tmp.path());
    ok(clipdex(&db, tmp.path(), &[], &[OsStr::new("add"), photos.as_os_str()]));
    let _server = serve(&db, &["--no-watch", "--token", "sesame"]);
    let refused = clipdex(&db, tmp.path(), &[], &["stats", "--json"]);
    assert!(!refused.status.success());
    assert!(String::from_utf8_lossy(&refused.stderr).contains("CLIPDEX_TOKEN"));
    let wrong = clipdex(&db, tmp.path(), &[("CLIPDEX_TOKEN", "open")], &["stats", "--json"]);
    assert!(!wrong.status.success());
    let stats = ok(clipdex(&db, tmp.path(), &[("CLIPDEX_TOKEN", "sesame")], &["stats", "--json"]));
    let stats: Value = serde_json::from_slice(&stats.stdout).unwrap();
    assert_eq!(stats["roots"], 1);
    // The token is never written into the database folder.
    let record = std::fs::read_to_string(db.join("server.json")).unwrap();
    assert!(!record.contains("sesame"), "{record}");
}

#[test]
fn a_record_left_by_a_killed_server_is_ignored() {
    let tmp = tempfile::tempdir().unwrap();
    let (photos, db) = photo_library(tmp.path());
    ok(clipdex(&db, tmp.path(), &[], &[OsStr::new("add"), photos.as_os_str()]));
    let mut server = std::mem::ManuallyDrop::new(serve(&db, &["--no-watch"]));
    server.0.kill().unwrap();
    server.0.wait().unwrap();
    assert!(db.join("server.json").is_file(), "a SIGKILLed server leaves its record");
    let stats = ok(clipdex(&db, tmp.path(), &[], &["stats", "--json"]));
    assert_eq!(serde_json::from_slice::<Value>(&stats.stdout).unwrap()["roots"], 1);
}

/// A small vocabulary file for `autotag`.
fn fixture_vocab(dir: &Path) -> String {
    let path = dir.join("vocab.txt");
    std::fs::write(&path, "cat\ncoffee\nrocket\nastronaut\ncamera\n").unwrap();
    path.to_string_lossy().into_owned()
}

/// A listener that plays a server: each connection's request head goes to `answer`, whose
/// reply is sent back (`None`: the connection is closed without a word). Returns its address
/// and everything it received.
fn fake_server(
    answer: impl Fn(&str) -> Option<String> + Send + 'static,
) -> (std::net::SocketAddr, std::sync::Arc<std::sync::Mutex<Vec<u8>>>) {
    use std::io::{Read, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let received = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let log = received.clone();
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(mut conn) = conn else { continue };
            conn.set_read_timeout(Some(std::time::Duration::from_secs(5))).unwrap();
            let mut head = Vec::new();
            let mut buf = [0u8; 4096];
            while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                match conn.read(&mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => head.extend_from_slice(&buf[..n]),
                }
            }
            log.lock().unwrap().extend_from_slice(&head);
            if let Some(reply) = answer(&String::from_utf8_lossy(&head)) {
                let _ = conn.write_all(reply.as_bytes());
            }
        }
    });
    (addr, received)
}

fn http_json(body: &str) -> String {
    format!(
        "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
}

/// Points the library's record at `addr`, as a record left by a killed server whose address
/// (and process id) another program took over.
fn record_at(db: &Path, addr: std::net::SocketAddr) {
    let record = serde_json::json!({"url": format!("http://{addr}"), "pid": std::process::id()});
    std::fs::write(db.join("server.json"), record.to_string()).unwrap();
}

#[test]
fn a_program_at_the_recorded_address_gets_nothing_unless_it_proves_the_secret() {
    let tmp = tempfile::tempdir().unwrap();
    let (photos, db) = photo_library(tmp.path());
    ok(clipdex(&db, tmp.path(), &[], &[OsStr::new("add"), photos.as_os_str()]));
    let _server = serve(&db, &["--no-watch", "--token", "sesame"]);
    let secret = std::fs::read_to_string(db.join("server.secret")).unwrap_or_default();
    let (addr, received) = fake_server(|_| Some(http_json(r#"{"stdout": "impostor\n", "stderr": "", "exit": 0}"#)));
    record_at(&db, addr);
    let out = clipdex(&db, tmp.path(), &[("CLIPDEX_TOKEN", "sesame")], &["stats", "--json"]);
    assert!(!out.status.success());
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(said.contains("is not the `clipdex serve` that holds it"), "{said}");
    assert!(!said.contains("stop the server first"), "{said}");
    assert!(!String::from_utf8_lossy(&out.stdout).contains("impostor"));
    let received = String::from_utf8_lossy(&received.lock().unwrap()).into_owned();
    assert!(received.contains("GET /api/cli/proof?nonce="), "it was asked to prove itself: {received}");
    assert!(!received.contains("sesame"), "{received}");
    assert!(!secret.trim().is_empty() && !received.contains(secret.trim()), "{received}");
}

#[test]
fn a_server_that_dies_while_it_runs_a_command_is_said_to_have_stopped() {
    let tmp = tempfile::tempdir().unwrap();
    let (photos, db) = photo_library(tmp.path());
    ok(clipdex(&db, tmp.path(), &[], &[OsStr::new("add"), photos.as_os_str()]));
    // This process holds the library and plays its server, which dies with the command.
    let _held = clipdex::Library::open_as_stored(clipdex::LibraryConfig::new(
        clipdex::store::DbLocation::Dir(db.clone()),
        model().to_string_lossy(),
    ))
    .unwrap();
    let secret = "5ec12e7".repeat(8);
    std::fs::write(db.join("server.secret"), &secret).unwrap();
    let addr = std::sync::Arc::new(std::sync::OnceLock::<String>::new());
    let at = addr.clone();
    let (bound, received) = fake_server(move |head| {
        let nonce = head.split_once("nonce=")?.1.split([' ', '&']).next()?.to_string();
        let proof = clipdex::server::server_proof(&"5ec12e7".repeat(8), at.get()?, &nonce);
        Some(http_json(&serde_json::json!({ "proof": proof }).to_string()))
    });
    addr.set(bound.to_string()).unwrap();
    record_at(&db, bound);
    let out = clipdex(&db, tmp.path(), &[], &["stats", "--json"]);
    assert!(!out.status.success());
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(said.contains("stopped answering while it ran `stats`"), "{said}");
    assert!(!said.contains("stop the server first"), "{said}");
    let received = String::from_utf8_lossy(&received.lock().unwrap()).into_owned();
    assert!(received.contains("POST /api/cli") && received.to_lowercase().contains("x-clipdex-secret"), "{received}");
}

#[test]
fn options_the_server_does_not_run_with_are_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let (photos, db) = photo_library(tmp.path());
    ok(clipdex(&db, tmp.path(), &[], &[OsStr::new("add"), photos.as_os_str()]));
    ok(clipdex(&db, tmp.path(), &[], &["index"]));
    let _server = serve(&db, &["--no-watch"]);
    let other = fixtures().join("clip-tiny-p16");
    let out = clipdex(
        &db,
        tmp.path(),
        &[],
        &[OsStr::new("search"), OsStr::new("a cat"), OsStr::new("--model"), other.as_os_str()],
    );
    assert!(!out.status.success(), "{}", String::from_utf8_lossy(&out.stdout));
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(said.contains("holds vectors of model") && said.contains("clip-tiny-p32"), "{said}");
    for (args, env) in
        [(vec!["search", "a cat", "--precision", "bf16"], vec![]), (vec!["stats"], vec![("CLIPDEX_PRECISION", "int8")])]
    {
        let out = clipdex(&db, tmp.path(), &env, &args);
        assert!(!out.status.success(), "{args:?}");
        let said = String::from_utf8_lossy(&out.stderr);
        assert!(said.contains("runs with --precision f32"), "{args:?}: {said}");
    }
    // The server's own settings, said or not, are fine.
    ok(clipdex(&db, tmp.path(), &[], &["search", "a cat", "--precision", "f32"]));
    ok(clipdex(&db, tmp.path(), &[], &["stats"]));
}

#[test]
fn commands_from_another_user_are_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let (photos, db) = photo_library(tmp.path());
    ok(clipdex(&db, tmp.path(), &[], &[OsStr::new("add"), photos.as_os_str()]));
    ok(clipdex(&db, tmp.path(), &[], &["index"]));
    let secret_file = tmp.path().join("only-mine.txt");
    std::fs::write(&secret_file, "password123\nhunter2\n").unwrap();
    let tags_before = ok(clipdex(&db, tmp.path(), &[], &["tags", "--json"])).stdout;
    let (_server, url) = {
        let mut command = Command::new(env!("CARGO_BIN_EXE_clipdex"));
        command.arg("--db").arg(&db).arg("--model").arg(model()).args(["serve", "--bind", "127.0.0.1:0", "--no-watch"]);
        start_server(command)
    };
    // A caller without the secret (another user, who cannot read server.secret), simulated.
    let command = serde_json::json!({"args": ["autotag", "--vocab", secret_file], "cwd": "/"});
    for secret in [None, Some("not-the-secret")] {
        let mut request = ureq::post(&format!("{url}/api/cli"));
        if let Some(secret) = secret {
            request = request.set("X-Clipdex-Secret", secret);
        }
        match request.send_json(command.clone()) {
            Err(ureq::Error::Status(403, response)) => {
                let body: Value = response.into_json().unwrap();
                assert!(body["error"].as_str().unwrap().contains("server.secret"), "{body}");
            }
            other => panic!("{secret:?}: {other:?}"),
        }
    }
    // Nor may they have the server read a folder of theirs choosing (then serve its files):
    // without a token, folders are added and removed with the secret only.
    let private = tmp.path().join("private");
    std::fs::create_dir_all(&private).unwrap();
    for secret in [None, Some("not-the-secret")] {
        let add = ureq::post(&format!("{url}/api/roots"));
        let add = match secret {
            Some(s) => add.set("X-Clipdex-Secret", s),
            None => add,
        };
        match add.send_json(serde_json::json!({"path": private})) {
            Err(ureq::Error::Status(403, _)) => {}
            other => panic!("{secret:?}: {other:?}"),
        }
        let remove = ureq::delete(&format!("{url}/api/roots")).query("path", photos.to_str().unwrap());
        let remove = match secret {
            Some(s) => remove.set("X-Clipdex-Secret", s),
            None => remove,
        };
        assert!(matches!(remove.call(), Err(ureq::Error::Status(403, _))), "{secret:?}");
    }
    let roots: Value = ureq::get(&format!("{url}/api/roots")).call().unwrap().into_json().unwrap();
    assert_eq!(roots["roots"].as_array().unwrap().len(), 1, "{roots}");
    // The server's own user, with the secret, may.
    let mine = std::fs::read_to_string(db.join("server.secret")).unwrap();
    let added = ureq::post(&format!("{url}/api/roots"))
        .set("X-Clipdex-Secret", mine.trim())
        .send_json(serde_json::json!({"path": private}));
    assert_eq!(added.unwrap().status(), 201);
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(db.join("server.secret")).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600, "only the server's user reads the secret");
    // A real second user, where this test may switch to one (root, as CI runs it).
    // SAFETY: geteuid has no preconditions.
    let root = unsafe { libc::geteuid() } == 0;
    if root && Path::new("/usr/bin/setpriv").exists() {
        // Everything but the secret is open to them, so their command gets as far as the lock.
        let run = |args: &[&str]| Command::new("chmod").args(args).status().unwrap().success();
        assert!(run(&["-R", "a+rwX", tmp.path().to_str().unwrap()]));
        assert!(run(&["600", db.join("server.secret").to_str().unwrap()]));
        // The binary, where they can run it (the build folder may sit in root's home).
        let binary = tmp.path().join("clipdex");
        std::fs::copy(env!("CARGO_BIN_EXE_clipdex"), &binary).unwrap();
        let out = Command::new("setpriv")
            .args(["--reuid=65534", "--regid=65534", "--clear-groups", "--"])
            .arg(&binary)
            .arg("--db")
            .arg(&db)
            .arg("--model")
            .arg(model())
            .args(["autotag", "--vocab"])
            .arg(&secret_file)
            .current_dir(tmp.path())
            .env_remove("CLIPDEX_TOKEN")
            .output()
            .unwrap();
        assert!(!out.status.success(), "{}", String::from_utf8_lossy(&out.stdout));
        let said = String::from_utf8_lossy(&out.stderr);
        assert!(said.contains("another user runs"), "{said}");
    } else {
        assert!(std::env::var_os("CI").is_none(), "CI runs this test as root, with setpriv, to be a second user");
        eprintln!("not root: the second user is only simulated");
    }
    // Nothing ran: the file's lines are no tags.
    drop(_server);
    let tags_after = ok(clipdex(&db, tmp.path(), &[], &["tags", "--json"])).stdout;
    assert_eq!(tags_after, tags_before);
    assert!(!String::from_utf8_lossy(&tags_after).contains("hunter2"));
}
