//! Settings set up once: `clipdex config get|set|list` records the library's models and
//! settings in the library; later commands use them without flags, a flag that disagrees is
//! refused (also when the command goes through the server that holds the library), and
//! `GET`/`PUT /api/settings` show and change the same record while the server runs. On every
//! backend under test (PostgreSQL too when `CLIPDEX_TEST_PG` names a server).

use std::ffi::{OsStr, OsString};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_json::{Value, json};

mod common;
use common::backends::{TestDb, test_databases};
use common::{Served, fixtures, start_server};

fn clip() -> PathBuf {
    fixtures().join("clip-tiny-p32")
}

fn blip(name: &str) -> String {
    fixtures().join("blip").join(name).to_string_lossy().into_owned()
}

/// `clipdex --db DB ARGS` with no model options and none in the environment (offline: a
/// default hub model cannot be fetched).
fn clipdex<S: AsRef<OsStr>>(db: &OsStr, args: &[S]) -> Output {
    let mut c = Command::new(env!("CARGO_BIN_EXE_clipdex"));
    c.arg("--db").arg(db).args(args).env("HF_HUB_OFFLINE", "1").env_remove("CLIPDEX_TOKEN");
    for var in ["CLIPDEX_MODEL", "CLIPDEX_CAPTION_MODEL", "CLIPDEX_VQA_MODEL", "CLIPDEX_ITM_MODEL", "CLIPDEX_PRECISION"]
    {
        c.env_remove(var);
    }
    c.output().unwrap()
}

fn ok(out: Output) -> String {
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap()
}

fn ok_json(out: Output) -> Value {
    serde_json::from_str(&ok(out)).unwrap()
}

fn refused(out: Output) -> String {
    assert!(!out.status.success(), "accepted: {}", String::from_utf8_lossy(&out.stdout));
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn value_of(list: &Value, name: &str) -> Value {
    list.as_array().unwrap().iter().find(|e| e["name"] == name).unwrap_or_else(|| panic!("no {name} in {list}"))["value"]
        .clone()
}

/// A library of two photos indexed with the fixture CLIP, in `db`; its `--db` argument.
fn library(tmp: &Path, db: &TestDb) -> OsString {
    let photos = tmp.join("photos");
    std::fs::create_dir_all(&photos).unwrap();
    for name in ["coffee.png", "rocket.webp"] {
        std::fs::copy(fixtures().join("images").join(name), photos.join(name)).unwrap();
    }
    let db = db.arg();
    ok(clipdex(&db, &[OsStr::new("--model"), clip().as_os_str(), OsStr::new("add"), photos.as_os_str()]));
    ok(clipdex(&db, &["index"]));
    db
}

#[test]
fn settings_are_set_once_and_used_without_flags() {
    for backend in test_databases() {
        let tmp = tempfile::tempdir().unwrap();
        eprintln!("on {}", backend.backend);
        settings_set_once_and_used_without_flags(tmp.path(), &library(tmp.path(), &backend), backend.backend);
    }
}

fn settings_set_once_and_used_without_flags(tmp: &Path, db: &OsStr, backend: &str) {
    let db = db.to_os_string();
    let coffee = fixtures().join("images/coffee.png");
    let coffee = coffee.to_str().unwrap();

    // Nothing recorded but the CLIP model: every other setting shows its default.
    let list = ok_json(clipdex(&db, &["config", "list", "--json"]));
    assert!(value_of(&list, "model").as_str().unwrap().ends_with("clip-tiny-p32"), "{list}");
    assert_eq!(value_of(&list, "caption_model"), Value::Null);
    let default = &list.as_array().unwrap().iter().find(|e| e["name"] == "caption_model").unwrap()["default"];
    assert_eq!(default, "Salesforce/blip-image-captioning-base");

    // Without a recorded captioner, `caption` wants the default hub model (offline: refused).
    refused(clipdex(&db, &["caption", coffee]));

    // Recorded once, it is what `caption` and `ask` use with no flag.
    ok(clipdex(&db, &["config", "set", "caption_model", &blip("blip-tiny-captioning")]));
    ok(clipdex(&db, &["config", "set", "vqa_model", &blip("blip-tiny-vqa")]));
    assert_eq!(ok(clipdex(&db, &["config", "get", "caption_model"])).trim(), blip("blip-tiny-captioning"));
    let captions = ok_json(clipdex(&db, &["caption", coffee, "--json"]));
    assert!(captions["captions"][0]["caption"].is_string(), "{captions}");
    ok(clipdex(&db, &["ask", coffee, "what is it?"]));

    // The same model spelt differently is no disagreement; another one is refused, naming both
    // and how to change the setting.
    let respelt = format!("{}/", blip("blip-tiny-captioning"));
    ok(clipdex(&db, &["--caption-model", &respelt, "caption", coffee]));
    let error = refused(clipdex(&db, &["--caption-model", &blip("blip-tiny-vqa"), "caption", coffee]));
    assert!(error.contains("the library is set to --caption-model"), "{error}");
    assert!(error.contains("clipdex config set caption_model"), "{error}");
    // ... also in the environment.
    let mut env = Command::new(env!("CARGO_BIN_EXE_clipdex"));
    env.arg("--db").arg(&db).args(["caption", coffee]).env("CLIPDEX_CAPTION_MODEL", blip("blip-tiny-vqa"));
    assert!(refused(env.output().unwrap()).contains("--caption-model"));

    // Precision: recorded, used, and a disagreeing flag refused (search opens the library).
    ok(clipdex(&db, &["config", "set", "precision", "bf16"]));
    assert_eq!(ok(clipdex(&db, &["config", "get", "precision"])).trim(), "bf16");
    ok(clipdex(&db, &["search", "a cup of coffee", "--json"]));
    let error = refused(clipdex(&db, &["--precision", "int8", "search", "a cup of coffee"]));
    assert!(error.contains("--precision bf16, not int8"), "{error}");
    ok(clipdex(&db, &["--precision", "bf16", "search", "a cup of coffee"]));

    // Forgotten: the default applies again, and any flag goes.
    ok(clipdex(&db, &["config", "set", "precision", "default"]));
    let got = ok_json(clipdex(&db, &["config", "get", "precision", "--json"]));
    assert_eq!((got["value"].clone(), got["default"].clone()), (Value::Null, json!("f32")));
    ok(clipdex(&db, &["--precision", "int8", "search", "a cup of coffee"]));

    // Bad names and values say what is accepted; the CLIP model of a library with vectors is
    // changed by reindex only.
    assert!(refused(clipdex(&db, &["config", "set", "colour", "red"])).contains("caption_model"));
    assert!(refused(clipdex(&db, &["config", "set", "precision", "fp12"])).contains("f32, bf16, int8 or auto"));
    assert!(refused(clipdex(&db, &["config", "set", "background_jobs", "maybe"])).contains("on or off"));
    let missing = tmp.join("no-such-model");
    assert!(
        refused(clipdex(&db, &["config", "set", "itm_model", missing.to_str().unwrap()])).contains("no such directory")
    );
    let error = refused(clipdex(&db, &["config", "set", "model", &blip("blip-tiny-vqa")]));
    assert!(error.contains("clipdex reindex --model"), "{error}");
    let list = ok_json(clipdex(&db, &["config", "list", "--json"]));
    assert_eq!(value_of(&list, "itm_model"), Value::Null, "a refused value is not recorded");

    // Where the web UI moves duplicates: an absolute folder; by default one in a folder
    // library's database folder, none for PostgreSQL.
    let entry = ok_json(clipdex(&db, &["config", "get", "duplicates_folder", "--json"]));
    assert_eq!(entry["value"], Value::Null);
    let default = entry["default"].as_str().unwrap();
    assert!(default.starts_with("DB/moved-duplicates") && default.contains("PostgreSQL"), "{backend}: {default}");
    assert!(refused(clipdex(&db, &["config", "set", "duplicates_folder", "moved"])).contains("absolute"));
    // Inside a photo folder (or holding one) it is refused when set, not at the first move.
    for inside in [tmp.join("photos/moved"), tmp.to_path_buf()] {
        let set = [OsStr::new("config"), OsStr::new("set"), OsStr::new("duplicates_folder"), inside.as_os_str()];
        let error = refused(clipdex(&db, &set));
        assert!(error.contains("overlaps the library folder"), "{error}");
    }
    let entry = ok_json(clipdex(&db, &["config", "get", "duplicates_folder", "--json"]));
    assert_eq!(entry["value"], Value::Null, "a refused folder is not recorded");
    let folder = tmp.join("moved");
    ok(clipdex(&db, &[OsStr::new("config"), OsStr::new("set"), OsStr::new("duplicates_folder"), folder.as_os_str()]));
    assert_eq!(ok(clipdex(&db, &["config", "get", "duplicates_folder"])).trim(), folder.to_str().unwrap());
}

fn serve(db: &OsStr, extra: &[&str]) -> (Served, String) {
    let mut command = Command::new(env!("CARGO_BIN_EXE_clipdex"));
    command.arg("--db").arg(db).args(["serve", "--bind", "127.0.0.1:0", "--no-watch"]).args(extra);
    command.env("HF_HUB_OFFLINE", "1").env_remove("CLIPDEX_TOKEN").env_remove("CLIPDEX_MODEL");
    start_server(command)
}

#[test]
fn settings_through_a_running_server_and_the_api() {
    for backend in test_databases() {
        let tmp = tempfile::tempdir().unwrap();
        eprintln!("on {}", backend.backend);
        settings_through_a_running_server(&library(tmp.path(), &backend));
    }
}

fn settings_through_a_running_server(db: &OsStr) {
    let db = db.to_os_string();
    ok(clipdex(&db, &["config", "set", "itm_model", &blip("blip-tiny-itm")]));
    let (_server, url) = serve(&db, &["--token", "s3cret"]);
    let auth = "Bearer s3cret";

    // The API shows what the library records.
    let got: Value =
        ureq::get(&format!("{url}/api/settings")).set("Authorization", auth).call().unwrap().into_json().unwrap();
    assert_eq!(value_of(&got["settings"], "itm_model"), json!(blip("blip-tiny-itm")));

    // A command forwarded to the server: a disagreeing flag is refused there too ...
    let forwarded = |args: &[&str]| {
        let mut c = Command::new(env!("CARGO_BIN_EXE_clipdex"));
        c.arg("--db").arg(&db).args(args).env("CLIPDEX_TOKEN", "s3cret").env("HF_HUB_OFFLINE", "1");
        c.env_remove("CLIPDEX_MODEL").env_remove("CLIPDEX_ITM_MODEL").output().unwrap()
    };
    let error = refused(forwarded(&["--itm-model", &blip("blip-tiny-vqa"), "search", "coffee"]));
    assert!(error.contains("the library is set to --itm-model"), "{error}");
    ok(forwarded(&["--itm-model", &blip("blip-tiny-itm"), "search", "coffee"]));

    // ... and `config set` through the server changes what the server uses at once.
    ok(forwarded(&["config", "set", "precision", "int8"]));
    let error = refused(forwarded(&["--precision", "f32", "search", "coffee"]));
    assert!(error.contains("--precision int8, not f32"), "{error}");

    // PUT needs the token, checks every value before recording any, and applies at once.
    let put = |body: Value, token: Option<&str>| {
        let mut request = ureq::put(&format!("{url}/api/settings"));
        if let Some(t) = token {
            request = request.set("Authorization", t);
        }
        match request.send_json(body) {
            Ok(r) => (r.status(), r.into_json::<Value>().unwrap()),
            Err(ureq::Error::Status(code, r)) => (code, r.into_json::<Value>().unwrap_or(Value::Null)),
            Err(e) => panic!("{e}"),
        }
    };
    assert_eq!(put(json!({"precision": "bf16"}), None).0, 401);
    let (status, body) = put(json!({"precision": "bf16", "vqa_model": "/no/such/model"}), Some(auth));
    assert_eq!(status, 400, "{body}");
    assert!(body["error"].as_str().unwrap().contains("/no/such/model"), "{body}");
    let (status, body) = put(json!({"precision": "bf16", "background_jobs": false}), Some(auth));
    assert_eq!(status, 200, "{body}");
    assert_eq!(value_of(&body["settings"], "precision"), json!("bf16"));
    assert_eq!(value_of(&body["settings"], "background_jobs"), json!("off"));
    let listed = ok_json(forwarded(&["config", "list", "--json"]));
    assert_eq!(value_of(&listed, "precision"), json!("bf16"), "the server's library holds the change");
    let (status, body) = put(json!({"itm_model": null}), Some(auth));
    assert_eq!((status, value_of(&body["settings"], "itm_model")), (200, Value::Null));
}
