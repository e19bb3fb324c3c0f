//! End to end in a real browser: `clipdex serve` on a small indexed library, headless
//! Chromium driven through ChromeDriver's WebDriver protocol. Opens the UI, runs a text
//! search, waits for the thumbnails, opens a detail view, runs "more like this" and a search
//! by an uploaded and by a dropped image, then the same server with a token (the UI asks for
//! it once). Then a video: found at its moment, shown with its length, played from there.
//! Screenshots go to `target/e2e/`.
//!
//! Needs Debian's `chromium` and `chromium-driver` (`.ci/run` installs them). Without them the
//! test says so and passes, unless `CLIPDEX_E2E=require` (set by CI) makes that a failure.

use std::io::BufRead;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

mod common;

const ELEMENT: &str = "element-6066-11e4-a52e-4f735466cecf";

fn model() -> String {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/clip-tiny-p32").to_string_lossy().into_owned()
}

fn seg_model() -> String {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/clipseg/clipseg-tiny").to_string_lossy().into_owned()
}

fn which(candidates: &[&str]) -> Option<PathBuf> {
    candidates.iter().map(PathBuf::from).find(|p| p.is_file())
}

/// Kills the process when the test ends, however it ends.
struct Reaped(Child);

impl Drop for Reaped {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// A WebDriver session.
struct Browser {
    base: String,
    session: String,
}

impl Browser {
    fn call(&self, method: &str, path: &str, body: Option<Value>) -> Value {
        let url = format!("{}/session/{}{}", self.base, self.session, path);
        let request = ureq::request(method, &url);
        let response = match body {
            Some(b) => request.send_json(b),
            None => request.call(),
        };
        match response {
            Ok(r) => r.into_json::<Value>().unwrap()["value"].take(),
            Err(ureq::Error::Status(code, r)) => panic!("{method} {path}: {code} {}", r.into_string().unwrap()),
            Err(e) => panic!("{method} {path}: {e}"),
        }
    }

    fn script(&self, script: &str, args: Value) -> Value {
        self.call("POST", "/execute/sync", Some(json!({"script": script, "args": args})))
    }

    fn find(&self, css: &str) -> String {
        let found = self.call("POST", "/element", Some(json!({"using": "css selector", "value": css})));
        found[ELEMENT].as_str().unwrap_or_else(|| panic!("no element {css}: {found}")).to_string()
    }

    fn click(&self, css: &str) {
        let id = self.find(css);
        self.call("POST", &format!("/element/{id}/click"), Some(json!({})));
    }

    fn type_into(&self, css: &str, text: &str) {
        let id = self.find(css);
        self.call("POST", &format!("/element/{id}/value"), Some(json!({"text": text})));
    }

    /// Presses and releases a key (a WebDriver key code such as `\u{E014}`, the right arrow)
    /// on whatever has the focus.
    fn key(&self, key: &str) {
        let actions = json!({"actions": [{"type": "key", "id": "keyboard", "actions": [
            {"type": "keyDown", "value": key}, {"type": "keyUp", "value": key}]}]});
        self.call("POST", "/actions", Some(actions));
    }

    fn location(&self) -> String {
        self.script("return location.search", json!([])).as_str().unwrap().to_string()
    }

    /// Polls `script` until it returns something truthy; returns that.
    fn wait_for(&self, what: &str, script: &str) -> Value {
        let start = Instant::now();
        loop {
            let v = self.script(script, json!([]));
            let truthy = match &v {
                Value::Null | Value::Bool(false) => false,
                Value::Number(n) => n.as_f64() != Some(0.0),
                Value::String(s) => !s.is_empty(),
                _ => true,
            };
            if truthy {
                return v;
            }
            if start.elapsed() > Duration::from_secs(60) {
                let page = self.script("return document.body.innerText", json!([]));
                panic!("timed out waiting for {what}; the page says:\n{page}");
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn screenshot(&self, path: &Path) {
        use base64_png::decode;
        let png = self.call("GET", "/screenshot", None);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, decode(png.as_str().unwrap())).unwrap();
    }
}

/// Screenshots come base64-encoded; a few lines instead of a dependency.
mod base64_png {
    pub fn decode(text: &str) -> Vec<u8> {
        let value = |c: u8| match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            _ => panic!("not base64: {c}"),
        };
        let clean: Vec<u8> = text.bytes().filter(|c| !c.is_ascii_whitespace() && *c != b'=').collect();
        let mut out = Vec::with_capacity(clean.len() * 3 / 4);
        for chunk in clean.chunks(4) {
            let mut n = 0u32;
            for (i, &c) in chunk.iter().enumerate() {
                n |= (value(c) as u32) << (18 - 6 * i);
            }
            out.extend_from_slice(&n.to_be_bytes()[1..chunk.len()]);
        }
        out
    }
}

/// Starts `clipdex serve` on a free loopback port; returns it and its URL.
fn serve(db: &Path, extra: &[&str]) -> (Reaped, String) {
    let mut server = Command::new(env!("CARGO_BIN_EXE_clipdex"))
        .args(["--db", db.to_str().unwrap(), "--model", &model(), "--seg-model", &seg_model()])
        .args(["--vqa-model", &blip("blip-tiny-vqa"), "--itm-model", &blip("blip-tiny-itm")])
        .args(["serve", "--bind", "127.0.0.1:0"])
        .args(extra)
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = server.stdout.take().unwrap();
    let server = Reaped(server);
    let mut line = String::new();
    std::io::BufReader::new(stdout).read_line(&mut line).unwrap();
    let url = line.split_whitespace().find(|w| w.starts_with("http://")).expect("the address is printed").to_string();
    (server, url)
}

fn blip(name: &str) -> String {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/blip").join(name).to_string_lossy().into_owned()
}

fn picture(seed: u32) -> image::RgbImage {
    image::RgbImage::from_fn(320, 240, |x, y| {
        let s = seed as f32;
        let r = 127.0 + 120.0 * (x as f32 / 40.0 + s).sin();
        let g = 127.0 + 120.0 * (y as f32 / 30.0 + s * 1.7).cos();
        let b = if (x / 40 + y / 40 + seed).is_multiple_of(2) { 60.0 } else { 200.0 };
        image::Rgb([r as u8, g as u8, b as u8])
    })
}

#[test]
fn search_detail_and_more_like_this_in_headless_chromium() {
    let Some((chromium, driver)) = chromium_and_driver() else { return };
    let artefacts = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/e2e");

    // A library of twelve photos, indexed before the server starts: eleven pictures and a
    // half-size copy of one of them (a near-duplicate).
    let tmp = tempfile::tempdir().unwrap();
    let photos = tmp.path().join("photos");
    std::fs::create_dir_all(&photos).unwrap();
    for i in 0..11 {
        picture(i).save(photos.join(format!("photo{i:02}.jpg"))).unwrap();
    }
    image::imageops::resize(&picture(3), 160, 120, image::imageops::FilterType::Triangle)
        .save(photos.join("photo03_small.png"))
        .unwrap();
    let db = tmp.path().join("db");
    let bin = env!("CARGO_BIN_EXE_clipdex");
    let run = |args: &[&str]| {
        let out =
            Command::new(bin).args(["--db", db.to_str().unwrap(), "--model", &model()]).args(args).output().unwrap();
        assert!(out.status.success(), "{args:?}: {}", String::from_utf8_lossy(&out.stderr));
    };
    run(&["add", photos.to_str().unwrap()]);
    run(&["index"]);
    // BLIP captions for every photo (tiny fixture model), and one caption word to search for.
    let blip = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/blip/blip-tiny-captioning");
    // (The tiny model ends some captions at once; the prompt gives every caption a word.)
    let caption_args = ["caption", "--library", "--prompt", "a picture of", "--beams", "1", "--max-tokens", "6"];
    run(&[&["--caption-model", blip.to_str().unwrap()][..], &caption_args[..]].concat());
    let out = Command::new(bin)
        .args(["--db", db.to_str().unwrap(), "--model", &model()])
        .args(["search", "x", "-k", "12", "--caption-weight", "0", "--json"])
        .output()
        .unwrap();
    let all: Value = serde_json::from_slice(&out.stdout).unwrap();
    let word = all["results"]
        .as_array()
        .unwrap()
        .iter()
        .find_map(|r| {
            let id = r["id"].as_u64().unwrap().to_string();
            let shown = Command::new(bin).args(["--db", db.to_str().unwrap(), "show", &id, "--json"]).output().unwrap();
            let caption = serde_json::from_slice::<Value>(&shown.stdout).unwrap()["caption"].as_str()?.to_string();
            clipdex::query::captions::terms(&caption).into_iter().find(|t| t.chars().all(|c| c.is_ascii_alphanumeric()))
        })
        .expect("a plain word in some caption");

    let (server, url) = serve(&db, &[]);
    let (_driver, browser) = open_browser(&driver, &chromium, tmp.path());
    let _quit = Quit(&browser);

    // The tiny random model scores every photo below the calibrated cut-off (relevance 50, the
    // UI's default): the address turns the cut-off off.
    let home = format!("{}/?min=0", url.trim_end_matches('/'));
    browser.call("POST", "/url", Some(json!({ "url": home })));
    browser
        .wait_for("the indexer's status", "return document.getElementById('status').textContent.includes('12 photos')");
    assert_eq!(browser.script("return document.getElementById('cutoff').value", json!([])), json!("0"));

    // A text search: thumbnails appear, with scores.
    browser.type_into("#q", "a photo of a cat");
    browser.click("#search button[type=submit]");
    let loaded = "const n = [...document.querySelectorAll('#results .card img')]
        .filter(i => i.complete && i.naturalWidth > 0).length; return n >= 12 ? n : 0";
    let shown = browser.wait_for("12 thumbnails", loaded);
    assert_eq!(shown, json!(12));
    let summary = browser.script("return document.getElementById('summary').textContent", json!([]));
    assert!(summary.as_str().unwrap().contains("12 results for “a photo of a cat”"), "{summary}");
    let scores = browser.script(
        "return [...document.querySelectorAll('#results .score')].map(s => parseFloat(s.textContent))",
        json!([]),
    );
    let scores: Vec<f64> = scores.as_array().unwrap().iter().map(|s| s.as_f64().unwrap()).collect();
    assert!(scores.windows(2).all(|w| w[0] >= w[1]), "sorted by relevance: {scores:?}");
    browser.screenshot(&artefacts.join("search.png"));

    // The detail view of the first result.
    let first_id = browser.script("return document.querySelector('#results .card').dataset.id", json!([]));
    browser.click("#results .card img");
    let meta = browser.wait_for(
        "the detail view",
        "const d = document.getElementById('detail'); return d.open && document.getElementById('detail-meta').innerText",
    );
    let meta = meta.as_str().unwrap();
    assert!(meta.contains("Files") && meta.contains(photos.file_name().unwrap().to_str().unwrap()), "{meta}");
    assert!(meta.contains("320 × 240 px"), "{meta}");
    let shown_caption = browser.script("return document.getElementById('detail-caption').textContent", json!([]));
    assert!(!shown_caption.as_str().unwrap().is_empty(), "the detail view shows the caption");
    browser.wait_for(
        "the large thumbnail",
        "const i = document.getElementById('detail-image'); return i.complete && i.naturalWidth > 0",
    );
    browser.screenshot(&artefacts.join("detail.png"));

    // Ask a question about the open photo: the answer is the API's (BLIP VQA).
    browser.click("#ask-question");
    browser.type_into("#ask-question", "what is in the picture?");
    browser.click("#ask button[type=submit]");
    let answer = browser
        .wait_for("the answer", "const a = document.getElementById('ask-answer').textContent; return a !== '…' && a");
    let id = first_id.as_str().unwrap();
    let want: Value = ureq::post(&format!("{}/api/images/{id}/ask", url.trim_end_matches('/')))
        .send_json(json!({"question": "what is in the picture?"}))
        .unwrap()
        .into_json()
        .unwrap();
    assert_eq!(answer, want["answer"], "{want}");
    browser.screenshot(&artefacts.join("ask.png"));

    // More like this: the other photos, the photo itself left out (as `similar` leaves it out).
    browser.click("#detail-like");
    browser.wait_for(
        "the similar photos",
        "return document.getElementById('summary').textContent.includes('photos like')",
    );
    let others = "const n = [...document.querySelectorAll('#results .card img')]
        .filter(i => i.complete && i.naturalWidth > 0).length; return n >= 11 ? n : 0";
    browser.wait_for("the 11 others' thumbnails", others);
    let shown =
        browser.script("return [...document.querySelectorAll('#results .card')].map(c => c.dataset.id)", json!([]));
    let shown = shown.as_array().unwrap();
    assert!(!shown.is_empty() && !shown.contains(&first_id), "{shown:?}");
    assert_eq!(browser.script("return document.getElementById('detail').open", json!([])), json!(false));

    // Search by an image of one's own (the file picker; dropping a file takes the same path).
    let query = photos.join("photo07.jpg");
    let input = browser.find("#image-input");
    browser.call("POST", &format!("/element/{input}/value"), Some(json!({"text": query.to_str().unwrap()})));
    browser.wait_for(
        "the upload's results",
        "return document.getElementById('summary').textContent.includes('like photo07.jpg')",
    );
    let top_path =
        browser.wait_for("a result", "const i = document.querySelector('#results .card img'); return i && i.alt");
    assert!(top_path.as_str().unwrap().ends_with("photo07.jpg"), "{top_path}");
    browser.screenshot(&artefacts.join("by-image.png"));

    // "Show where": CLIPSeg boxes drawn over the thumbnails of a text search.
    browser.click("#filters summary");
    browser.click("#crops");
    browser.click("#search button[type=submit]");
    let boxes = browser.wait_for(
        "region boxes",
        "return document.getElementById('summary').textContent.includes('a photo of a cat')
            && document.querySelectorAll('#results .thumb .box').length",
    );
    assert!(boxes.as_u64().unwrap() >= 1, "{boxes}");
    browser.wait_for("their thumbnails", loaded);
    browser.screenshot(&artefacts.join("show-where.png"));
    browser.click("#crops");

    // Dropping an image on the page: a real drop event carrying a file.
    let dropped = browser.script("return document.querySelectorAll('#results .card')[5].dataset.id", json!([]));
    let drop = "const [id, done] = arguments;
        fetch(`/api/images/${id}/file`).then(r => r.blob()).then(b => {
          const dt = new DataTransfer();
          dt.items.add(new File([b], 'dropped.jpg', {type: 'image/jpeg'}));
          window.dispatchEvent(new DragEvent('drop', {dataTransfer: dt, bubbles: true, cancelable: true}));
          done(true);
        });";
    browser.call("POST", "/execute/async", Some(json!({"script": drop, "args": [dropped]})));
    browser.wait_for(
        "the drop's results",
        "return document.getElementById('summary').textContent.includes('like dropped.jpg')",
    );
    let top =
        browser.wait_for("a result", "const c = document.querySelector('#results .card'); return c && c.dataset.id");
    assert_eq!(top, dropped);

    // Search the captions: every result's caption (its tooltip) holds the word.
    browser.click("#in-captions");
    let q = browser.find("#q");
    browser.call("POST", &format!("/element/{q}/clear"), Some(json!({})));
    browser.type_into("#q", &word);
    browser.click("#search button[type=submit]");
    let titles = browser.wait_for(
        "the caption search",
        &format!(
            "return document.getElementById('summary').textContent.includes('“{word}”')
                && [...document.querySelectorAll('#results .card img')].map(i => i.title)"
        ),
    );
    let titles: Vec<&str> = titles.as_array().unwrap().iter().map(|t| t.as_str().unwrap()).collect();
    assert!(!titles.is_empty());
    for t in &titles {
        let caption = t.lines().next().unwrap();
        assert!(clipdex::query::captions::terms(caption).contains(&word), "{word} not in {t:?}");
    }
    browser.screenshot(&artefacts.join("captions.png"));
    browser.click("#in-captions");

    // The address holds the search: Back and Forward walk through searches, a photo opened
    // is in it too (Back closes it), and the address alone reopens the view.
    for text in ["a red bus", "a green field"] {
        let q = browser.find("#q");
        browser.call("POST", &format!("/element/{q}/clear"), Some(json!({})));
        browser.type_into("#q", text);
        browser.click("#search button[type=submit]");
        browser.wait_for(
            "the search",
            &format!("return document.getElementById('summary').textContent.includes('“{text}”')"),
        );
    }
    // (The cut-off set by the first address stays in it.)
    assert_eq!(browser.location(), "?q=a+green+field&min=0");
    browser.call("POST", "/back", Some(json!({})));
    browser.wait_for(
        "the previous search again",
        "return document.getElementById('summary').textContent.includes('“a red bus”')
            && document.getElementById('q').value === 'a red bus'",
    );
    browser.call("POST", "/forward", Some(json!({})));
    browser.wait_for(
        "the later search again",
        "return document.getElementById('summary').textContent.includes('“a green field”')",
    );
    browser.wait_for("its thumbnails", loaded);

    // Keyboard: arrows through the grid, Enter opens, arrows step in the detail view, Esc closes.
    let ids =
        browser.script("return [...document.querySelectorAll('#results .card')].map(c => c.dataset.id)", json!([]));
    browser.script("document.querySelector('#results .card').focus(); return true", json!([]));
    browser.key("\u{E014}"); // right
    assert_eq!(browser.script("return document.activeElement.dataset.id", json!([])), ids[1]);
    browser.key("\u{E007}"); // enter
    browser.wait_for(
        "the detail of the second result",
        &format!("return location.search.includes('open={}')", ids[1].as_str().unwrap()),
    );
    browser.key("\u{E014}");
    browser.wait_for(
        "the third result in the detail view",
        &format!("return location.search.includes('open={}')", ids[2].as_str().unwrap()),
    );
    // A reload of that address shows the same search with the same photo open.
    let address = browser.script("return location.href", json!([]));
    browser.call("POST", "/url", Some(json!({"url": address})));
    browser.wait_for(
        "the view from the address alone",
        &format!(
            "return document.getElementById('summary').textContent.includes('“a green field”')
                && document.getElementById('detail').open && location.search.includes('open={}')",
            ids[2].as_str().unwrap()
        ),
    );
    browser.key("\u{E00C}"); // escape
    browser.wait_for(
        "the detail view closed",
        "return !document.getElementById('detail').open && !location.search.includes('open=')",
    );
    // (The cut-off set by the first address stays in it.)
    assert_eq!(browser.location(), "?q=a+green+field&min=0");

    // The duplicates page: the copy grouped with its original, which is the one to keep;
    // "Not duplicates" is remembered by the server.
    browser.click("#duplicates-link");
    let group = browser.wait_for(
        "a group of near-duplicates",
        "const g = document.querySelectorAll('.dup-group'); return g.length === 1
            && [...g[0].querySelectorAll('.card img')].filter(i => i.complete && i.naturalWidth > 0).length === 2
            && [...g[0].querySelectorAll('.card')].map(c => [c.classList.contains('keep'), c.querySelector('img').alt])",
    );
    let group = group.as_array().unwrap();
    assert_eq!(group[0][0], json!(true));
    assert!(group[0][1].as_str().unwrap().ends_with("photo03.jpg"), "{group:?}");
    assert!(group[1][1].as_str().unwrap().ends_with("photo03_small.png"), "{group:?}");
    assert_eq!(browser.location(), "?view=duplicates");
    browser.screenshot(&artefacts.join("duplicates.png"));
    browser.click(".dup-group .dismiss");
    browser.wait_for(
        "the group dismissed",
        "return document.getElementById('dup-summary').textContent.includes('No near-duplicates')",
    );
    let left: Value =
        ureq::get(&format!("{}/api/duplicates", url.trim_end_matches('/'))).call().unwrap().into_json().unwrap();
    assert_eq!(left["groups"], json!([]), "{left}");
    browser.call("POST", "/back", Some(json!({})));
    browser.wait_for("the search before the duplicates page", "return document.getElementById('summary').textContent.includes('“a green field”') && !document.getElementById('results').hidden");

    // With a token: the UI asks for it once, then every call (thumbnails too) carries it.
    drop_server(server);
    let p16 = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/clip-tiny-p16");
    let finetuned = format!("p16={}", p16.display());
    let (_server, url) = serve(&db, &["--token", "e2e-secret", "--finetuned", &finetuned]);
    browser.call("POST", "/url", Some(json!({ "url": format!("{}/?min=0", url.trim_end_matches('/')) })));
    browser.wait_for("the token prompt", "return document.getElementById('login').open");
    browser.type_into("#token", "e2e-secret");
    browser.click("#login-form button");
    browser.wait_for(
        "the status with the token",
        "return document.getElementById('status').textContent.includes('12 photos')",
    );
    // Into the box as a user would: a click first (after the modal prompt, keys sent without one
    // do not reach the page in headless Chromium).
    browser.click("#q");
    browser.type_into("#q", "a red bus");
    browser.click("#search button[type=submit]");
    browser.wait_for("thumbnails fetched with the token", loaded);
    let sources = browser.script(
        "return [...document.querySelectorAll('#results .card img')].every(i => i.src.startsWith('blob:'))",
        json!([]),
    );
    assert_eq!(sources, json!(true));
    browser.screenshot(&artefacts.join("with-token.png"));

    // Re-rank with the registered fine-tuned model: the switch appears, and choosing it
    // re-runs the search ordered by that model's cosines (each card's score says so).
    browser.wait_for("the re-rank switch", "return !document.getElementById('rerank-label').hidden");
    browser.script(
        "const s = document.getElementById('rerank'); s.value = 'clip:p16'; s.dispatchEvent(new Event('change')); return true",
        json!([]),
    );
    let titles = browser.wait_for(
        "re-ranked results",
        "const t = [...document.querySelectorAll('#results .card .score')].map(s => s.title);
         return t.length > 0 && t.every(x => x.startsWith('fine-tuned model')) && t",
    );
    let scores: Vec<f64> = titles
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t.as_str().unwrap().split_whitespace().nth(2).unwrap().trim_end_matches(';').parse().unwrap())
        .collect();
    assert!(scores.windows(2).all(|w| w[0] >= w[1]), "{scores:?}");
    browser.screenshot(&artefacts.join("reranked.png"));

    // Re-rank with BLIP's image-text matching instead: ordered by match probability.
    browser.script(
        "const s = document.getElementById('rerank'); s.value = 'itm'; s.dispatchEvent(new Event('change')); return true",
        json!([]),
    );
    let scores = browser.wait_for(
        "results re-ranked by BLIP",
        "const s = [...document.querySelectorAll('#results .card .score')];
         return s.length > 0 && s.every(x => x.title.startsWith('BLIP match')) && s.map(x => parseFloat(x.textContent))",
    );
    let scores: Vec<f64> = scores.as_array().unwrap().iter().map(|s| s.as_f64().unwrap()).collect();
    assert!(scores.windows(2).all(|w| w[0] >= w[1]), "{scores:?}");
    assert!(browser.location().contains("rerank=itm"), "{}", browser.location());
}

/// Ends the WebDriver session when dropped.
struct Quit<'a>(&'a Browser);

impl Drop for Quit<'_> {
    fn drop(&mut self) {
        let _ = ureq::delete(&format!("{}/session/{}", self.0.base, self.0.session)).call();
    }
}

/// ChromeDriver started on a free port, and a headless Chromium session through it (its
/// profile in `tmp`).
fn open_browser(driver: &Path, chromium: &Path, tmp: &Path) -> (Reaped, Browser) {
    let port = free_port();
    let driver = Reaped(
        Command::new(driver).arg(format!("--port={port}")).stdout(Stdio::null()).stderr(Stdio::null()).spawn().unwrap(),
    );
    let base = format!("http://127.0.0.1:{port}");
    let start = Instant::now();
    while ureq::get(&format!("{base}/status")).call().is_err() {
        assert!(start.elapsed() < Duration::from_secs(30), "chromedriver did not start");
        std::thread::sleep(Duration::from_millis(100));
    }
    let profile = tmp.join("chromium-profile");
    let capabilities = json!({"capabilities": {"alwaysMatch": {"browserName": "chrome", "goog:chromeOptions": {
        "binary": chromium,
        // The password manager's save prompt would take the keyboard after the token is typed.
        "prefs": {"credentials_enable_service": false, "profile.password_manager_enabled": false},
        "args": ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--disable-quic",
                 "--no-first-run", "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 format!("--user-data-dir={}", profile.display()), "--window-size=1280,900"]}}}});
    let session: Value = ureq::post(&format!("{base}/session")).send_json(capabilities).unwrap().into_json().unwrap();
    (driver, Browser { base, session: session["value"]["sessionId"].as_str().unwrap().to_string() })
}

/// Chromium and ChromeDriver, or `None` (a failure when `CLIPDEX_E2E=require`).
fn chromium_and_driver() -> Option<(PathBuf, PathBuf)> {
    let required = std::env::var("CLIPDEX_E2E").is_ok_and(|v| v == "require");
    let (Some(chromium), Some(driver)) = (
        which(&["/usr/bin/chromium", "/usr/bin/chromium-browser", "/usr/bin/google-chrome"]),
        which(&["/usr/bin/chromedriver", "/usr/lib/chromium/chromedriver"]),
    ) else {
        assert!(
            !required,
            "CLIPDEX_E2E=require but chromium or chromedriver is missing (apt install chromium chromium-driver)"
        );
        eprintln!("skipped: chromium and chromedriver not installed (apt install chromium chromium-driver)");
        return None;
    };
    Some((chromium, driver))
}

/// A video in the web UI: its card shows the frame that matched and its length, and the detail
/// view plays it from that moment (the browser fetching it by byte ranges).
#[test]
fn a_video_plays_from_the_matching_moment_in_headless_chromium() {
    let Some((chromium, driver)) = chromium_and_driver() else { return };
    if !common::video::have_ffmpeg() {
        return;
    }
    let artefacts = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/e2e");
    let tmp = tempfile::tempdir().unwrap();
    let photos = tmp.path().join("photos");
    std::fs::create_dir_all(&photos).unwrap();
    picture(1).save(photos.join("photo.jpg")).unwrap();
    // A cut between two photos at 3 s, in VP9 (every Chromium build plays it).
    let images = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/images");
    let mp4 = tmp.path().join("cut.mp4");
    common::video::cut_between(&images.join("astronaut.jpg"), &images.join("coffee.png"), &mp4);
    let webm = photos.join("cut.webm");
    common::video::ffmpeg(&["-i", mp4.to_str().unwrap(), "-c:v", "libvpx-vp9", "-b:v", "300k", webm.to_str().unwrap()]);
    let db = tmp.path().join("db");
    for args in [&["add", photos.to_str().unwrap()][..], &["index"]] {
        let out = Command::new(env!("CARGO_BIN_EXE_clipdex"))
            .args(["--db", db.to_str().unwrap(), "--model", &model()])
            .args(args)
            .output()
            .unwrap();
        assert!(out.status.success(), "{args:?}: {}", String::from_utf8_lossy(&out.stderr));
    }
    let (server, url) = serve(&db, &[]);
    let (_driver, browser) = open_browser(&driver, &chromium, tmp.path());
    let _quit = Quit(&browser);

    browser.call("POST", "/url", Some(json!({"url": format!("{url}?q=a%20cup&kind=video&min=0")})));
    let badge = browser.wait_for(
        "the video's card",
        "const b = document.querySelector('#results .card .badge'); return b ? b.textContent : false",
    );
    assert_eq!(badge, "▶ 0:06");
    assert_eq!(browser.script("return document.querySelectorAll('#results .card').length", json!([])), 1);
    let src = browser.wait_for(
        "the matching frame as the thumbnail",
        "const i = document.querySelector('#results .card img'); return i.complete && i.naturalWidth > 0 && i.src",
    );
    let time: f64 = src.as_str().unwrap().split("time=").nth(1).expect("a frame at a time").parse().unwrap();
    assert!([0.0, 2.0, 3.0, 5.0].contains(&time), "{src}");
    browser.screenshot(&artefacts.join("video-grid.png"));

    browser.click("#results .card img");
    let playing = browser.wait_for(
        "the video ready at the moment that matched",
        "const v = document.getElementById('detail-video');
         return !v.hidden && v.readyState >= 1 && [v.currentTime, v.duration]",
    );
    let (at, duration) = (playing[0].as_f64().unwrap(), playing[1].as_f64().unwrap());
    assert!((at - time).abs() < 0.5, "starts at {at} s, matched at {time} s");
    assert!((duration - 6.0).abs() < 0.2, "{duration}");
    assert_eq!(browser.script("return document.getElementById('detail-image').hidden", json!([])), true);
    let meta = browser.script("return document.getElementById('detail-meta').textContent", json!([]));
    assert!(meta.as_str().unwrap().contains("0:06, vp9"), "{meta}");
    browser.screenshot(&artefacts.join("video-detail.png"));
    drop_server(server);
}

/// Stops a server (killed and waited for, so its database is free again).
fn drop_server(server: Reaped) {
    drop(server);
}

/// Presses (`keyDown`) or releases (`keyUp`) a key on whatever has the focus.
fn key_action(browser: &Browser, kind: &str, key: &str) {
    let actions = json!({"actions": [{"type": "key", "id": "keyboard", "actions": [{"type": kind, "value": key}]}]});
    browser.call("POST", "/actions", Some(actions));
}

/// A Live Photo and a Motion Photo in the web UI: their cards carry a badge, and the detail view
/// plays their video while the play badge is held (here: Space held on it, the keyboard's
/// press-and-hold), fetched from `/api/images/{id}/live` and `/motion`.
#[test]
fn live_and_motion_photos_play_while_held_in_headless_chromium() {
    let Some((chromium, driver)) = chromium_and_driver() else { return };
    let artefacts = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/e2e");
    let tmp = tempfile::tempdir().unwrap();
    let photos = tmp.path().join("photos");
    std::fs::create_dir_all(&photos).unwrap();
    let fixtures = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/companions");
    for name in ["IMG_0002.JPG", "IMG_0002.mov", "PXL_0004.MP.jpg"] {
        std::fs::copy(fixtures.join(name), photos.join(name)).unwrap();
    }
    let db = tmp.path().join("db");
    for args in [&["add", photos.to_str().unwrap()][..], &["index"]] {
        let out = Command::new(env!("CARGO_BIN_EXE_clipdex"))
            .args(["--db", db.to_str().unwrap(), "--model", &model()])
            .args(args)
            .output()
            .unwrap();
        assert!(out.status.success(), "{args:?}: {}", String::from_utf8_lossy(&out.stderr));
    }
    let (server, url) = serve(&db, &[]);
    let (_driver, browser) = open_browser(&driver, &chromium, tmp.path());
    let _quit = Quit(&browser);

    browser.call("POST", "/url", Some(json!({"url": format!("{url}?q=a%20photo&min=0")})));
    let badges = browser.wait_for(
        "two cards with badges",
        "const b = [...document.querySelectorAll('#results .card .badge')].map(b => b.textContent).sort();
         return b.length === 2 && b",
    );
    assert_eq!(badges, json!(["LIVE", "MOTION"]));
    for (badge, kind, label) in [("LIVE", "live", "▶ LIVE"), ("MOTION", "motion", "▶ MOTION")] {
        browser.script(
            "[...document.querySelectorAll('#results .card')].find(c => c.querySelector('.badge').textContent === arguments[0])
               .querySelector('img').click()",
            json!([badge]),
        );
        // The badge of the photo just opened (the dialog's last content stays until the new one
        // has loaded): waited for by its label, so a wrong label times out naming the page.
        let shown = browser.wait_for(
            &format!("the play badge {label}"),
            &format!(
                "const b = document.getElementById('detail-play');
                 return document.getElementById('detail').open && !b.hidden && b.textContent === '{label}' && b.textContent"
            ),
        );
        assert_eq!(shown, label);
        browser.script("document.getElementById('detail-play').focus()", json!([]));
        key_action(&browser, "keyDown", "\u{E00D}");
        let src = browser.wait_for(
            "the video shown while Space is held",
            "const v = document.getElementById('detail-motion');
             return !v.hidden && document.getElementById('detail-play').getAttribute('aria-pressed') === 'true' && v.src",
        );
        assert!(src.as_str().unwrap().ends_with(&format!("/{kind}")), "{src}");
        browser.screenshot(&artefacts.join(format!("{kind}-photo.png")));
        key_action(&browser, "keyUp", "\u{E00D}");
        browser.wait_for("the video hidden on release", "return document.getElementById('detail-motion').hidden");
        // What the player fetched is the video.
        let checked = browser.call(
            "POST",
            "/execute/async",
            Some(json!({"script": "const done = arguments[arguments.length - 1];
                fetch(document.getElementById('detail-motion').src, {headers: {Range: 'bytes=0-11'}})
                  .then(async r => done([r.status, r.headers.get('content-type'), new TextDecoder().decode((await r.arrayBuffer()).slice(4, 8))]))",
                "args": []})),
        );
        let want_type = if kind == "live" { "video/quicktime" } else { "video/mp4" };
        assert_eq!(checked, json!([206, want_type, "ftyp"]), "{kind}");
        browser.key("\u{E00C}"); // Escape closes the detail view
        browser.wait_for("the detail view closed", "return !document.getElementById('detail').open");
    }
    drop_server(server);
}

/// A picture of any size (the pattern of [`picture`]).
fn shaped_picture(seed: u32, width: u32, height: u32) -> image::RgbImage {
    image::RgbImage::from_fn(width, height, |x, y| {
        let s = seed as f32;
        let r = 127.0 + 120.0 * (x as f32 / 40.0 + s).sin();
        let g = 127.0 + 120.0 * (y as f32 / 30.0 + s * 1.7).cos();
        let b = if (x / 40 + y / 40 + seed).is_multiple_of(2) { 60.0 } else { 200.0 };
        image::Rgb([r as u8, g as u8, b as u8])
    })
}

/// The justified rows of every `.justified` grid on the page, measured from the DOM: how many
/// photos each full row holds (a grid's last row is not full), and the largest relative
/// difference between a photo's shown aspect ratio and its file's (named `_WxH.` in its path).
const MEASURE_ROWS: &str = "
    const counts = [], errors = [];
    for (const grid of document.querySelectorAll('.justified')) {
        if (!grid.offsetParent) continue;
        const rows = new Map();
        for (const img of grid.querySelectorAll('img')) {
            const box = img.getBoundingClientRect();
            const top = Math.round(box.top);
            rows.set(top, (rows.get(top) || 0) + 1);
            const [, w, h] = img.title.match(/_(\\d+)x(\\d+)\\./);
            errors.push(Math.abs((box.width / box.height) / (w / h) - 1));
        }
        counts.push(...[...rows.values()].slice(0, -1));
    }
    return [counts, Math.max(...errors), document.documentElement.clientWidth];";

/// Browsing without a query: the home page is the timeline, grouped by month with a month
/// scrubber, loading more as the page scrolls; the Folders view lists folders with their counts
/// and shows a folder's photos; photos lie in justified rows that keep their aspect ratios, at
/// 1280 px and at a phone's 390 px, in the timeline and in search results; a tile is one tab
/// stop that Enter opens.
#[test]
fn timeline_folders_and_justified_rows_in_headless_chromium() {
    let Some((chromium, driver)) = chromium_and_driver() else { return };
    let artefacts = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/e2e");
    // 120 photos of five shapes in three folders (one inside another), dated by their file
    // times over January to April 2024 (30 a month), the newest last.
    let tmp = tempfile::tempdir().unwrap();
    let photos = tmp.path().join("photos");
    let shapes = [(320, 240), (300, 200), (240, 240), (320, 180), (180, 240)];
    let month_starts = [0, 31, 60, 91]; // days from 2024-01-01
    for i in 0..120u32 {
        let folder = photos.join(["2024/trip", "2024", "scans"][i as usize % 3]);
        std::fs::create_dir_all(&folder).unwrap();
        let (w, h) = shapes[i as usize % shapes.len()];
        let path = folder.join(format!("p{i:03}_{w}x{h}.jpg"));
        shaped_picture(i, w, h).save(&path).unwrap();
        let day = month_starts[i as usize / 30] + 1 + u64::from(i % 30) / 2;
        let time = std::time::UNIX_EPOCH + Duration::from_secs(1_704_067_200 + day * 86_400 + u64::from(i) * 60);
        std::fs::File::options().write(true).open(&path).unwrap().set_modified(time).unwrap();
    }
    let db = tmp.path().join("db");
    for args in [&["add", photos.to_str().unwrap()][..], &["index"]] {
        let out = Command::new(env!("CARGO_BIN_EXE_clipdex"))
            .args(["--db", db.to_str().unwrap(), "--model", &model()])
            .args(args)
            .output()
            .unwrap();
        assert!(out.status.success(), "{args:?}: {}", String::from_utf8_lossy(&out.stderr));
    }
    let (server, url) = serve(&db, &[]);
    let url = url.trim_end_matches('/').to_string();
    let (_driver, browser) = open_browser(&driver, &chromium, tmp.path());
    let _quit = Quit(&browser);
    let tiles = "return [...document.querySelectorAll('#timeline-groups .tile')].map(t => t.dataset.id)";
    let loaded_tiles = |n: usize| {
        format!(
            "const imgs = [...document.querySelectorAll('#timeline-groups .tile img')];
             return imgs.length >= {n} && imgs.slice(0, 5).every(i => i.complete && i.naturalWidth > 0) && imgs.length"
        )
    };

    // The home page: the first page of the timeline, newest month first.
    browser.call("POST", "/url", Some(json!({ "url": format!("{url}/") })));
    let first = browser.wait_for("the first page of the timeline", &loaded_tiles(50));
    assert_eq!(first, json!(50), "one page (50) fills a 1280 × 900 window; the rest waits for scrolling");
    let months = browser.script(
        "return [...document.querySelectorAll('#timeline-groups .month h2')].map(h => h.textContent)",
        json!([]),
    );
    assert_eq!(months, json!(["April 2024", "March 2024"]), "30 in April, 20 of March's 30 on the first page");
    let scrubber = browser.wait_for(
        "the month scrubber",
        "return [...document.querySelectorAll('#scrubber button')].map(b => b.dataset.month).join(' ')",
    );
    assert_eq!(scrubber, json!("2024-04 2024-03 2024-02 2024-01"));
    let (counts, error, width) = measured(&browser);
    assert!(width > 1200.0, "{width}");
    assert!(counts.iter().all(|&n| n >= 3) && counts.iter().any(|&n| n >= 4), "rows at 1280 px: {counts:?}");
    assert!(error < 0.02, "aspect ratios kept within 2% (worst {error})");
    browser.screenshot(&artefacts.join("timeline.png"));

    // Keyboard: Tab reaches a tile (one stop each); Enter opens it, Escape closes it.
    browser.script("document.querySelector('#timeline-groups .tile').focus(); return true", json!([]));
    let first_id = browser.script("return document.activeElement.dataset.id", json!([]));
    browser.key("\u{E004}"); // tab
    let next = browser.script("return document.activeElement.dataset.id", json!([]));
    let ids = browser.script(tiles, json!([]));
    assert_eq!(next, ids[1], "Tab goes to the next photo (first {first_id})");
    browser.key("\u{E007}"); // enter
    browser.wait_for("the detail view", "return document.getElementById('detail').open");
    browser.key("\u{E00C}"); // escape
    browser.wait_for("the detail view to close", "return !document.getElementById('detail').open");

    // The scrubber jumps to a month not loaded yet, and back to the newest.
    browser.click("#scrubber button[data-month='2024-01']");
    browser.wait_for(
        "January first",
        "const m = document.querySelector('#timeline-groups .month'); return m && m.dataset.month === '2024-01'
            && !document.getElementById('timeline-newest').hidden",
    );
    browser.click("#timeline-newest");
    browser.wait_for(
        "the newest again",
        "const m = document.querySelector('#timeline-groups .month'); return m && m.dataset.month === '2024-04'",
    );

    // Scrolling loads the rest, each photo once, newest first.
    let all = browser.wait_for(
        "every photo after scrolling",
        "window.scrollTo(0, document.body.scrollHeight);
         return document.querySelectorAll('#timeline-groups .tile').length >= 120",
    );
    assert_eq!(all, json!(true));
    let ids = browser.script(tiles, json!([]));
    let ids: Vec<&str> = ids.as_array().unwrap().iter().map(|v| v.as_str().unwrap()).collect();
    assert_eq!(ids.len(), 120);
    assert_eq!(ids.iter().collect::<std::collections::HashSet<_>>().len(), 120, "no photo twice");
    let names = browser
        .script("return [...document.querySelectorAll('#timeline-groups .tile img')].map(i => i.alt)", json!([]));
    let names: Vec<&str> = names.as_array().unwrap().iter().map(|v| v.as_str().unwrap()).collect();
    let mut newest_first: Vec<&str> = names.clone();
    newest_first.sort_by(|a, b| b.cmp(a)); // p119_… is the newest
    assert_eq!(names, newest_first, "alt text is the file name; newest first");

    // A phone's width: three or four photos a row, aspect ratios kept.
    browser.call(
        "POST",
        "/goog/cdp/execute",
        Some(json!({"cmd": "Emulation.setDeviceMetricsOverride",
                    "params": {"width": 390, "height": 844, "deviceScaleFactor": 1, "mobile": true}})),
    );
    browser.script("window.scrollTo(0, 0); return true", json!([]));
    let start = Instant::now();
    let (counts, error) = loop {
        let (counts, error, width) = measured(&browser);
        if width <= 390.0 && !counts.is_empty() && counts.iter().all(|&n| (3..=4).contains(&n)) {
            break (counts, error);
        }
        assert!(start.elapsed() < Duration::from_secs(20), "rows at {width} px: {counts:?}");
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(counts.len() >= 20, "{counts:?}");
    assert!(error < 0.02, "aspect ratios kept within 2% at 390 px (worst {error})");
    browser.screenshot(&artefacts.join("timeline-phone.png"));

    // Search results lie in the same rows.
    browser.call("POST", "/url", Some(json!({ "url": format!("{url}/?q=a+photo&min=0") })));
    browser.wait_for(
        "search results",
        "const imgs = [...document.querySelectorAll('#results .card img')];
         return imgs.length >= 20 && imgs.slice(0, 5).every(i => i.complete && i.naturalWidth > 0)",
    );
    let start = Instant::now();
    loop {
        let (counts, error, _) = measured(&browser);
        if !counts.is_empty() && counts.iter().all(|&n| (3..=4).contains(&n)) {
            assert!(error < 0.02, "search results keep aspect ratios (worst {error})");
            break;
        }
        assert!(start.elapsed() < Duration::from_secs(20), "search result rows at 390 px: {counts:?}");
        std::thread::sleep(Duration::from_millis(100));
    }
    let stops = browser.script(
        "const c = document.querySelector('#results .card');
         return [...c.querySelectorAll('*')].concat([c]).filter(e => e.tabIndex >= 0).length",
        json!([]),
    );
    assert_eq!(stops, json!(1), "one tab stop per result");
    browser.screenshot(&artefacts.join("search-phone.png"));
    browser.call(
        "POST",
        "/goog/cdp/execute",
        Some(json!({"cmd": "Emulation.clearDeviceMetricsOverride", "params": {}})),
    );

    // Folders: the library's folder with its count, then its subfolders, then one's photos.
    browser.call("POST", "/url", Some(json!({ "url": format!("{url}/") })));
    browser.wait_for("the timeline", &loaded_tiles(1));
    browser.click("#folders-link");
    let roots = browser.wait_for(
        "the library's folders",
        "return [...document.querySelectorAll('#folder-list li')].map(l => l.textContent).join('|')",
    );
    assert!(roots.as_str().unwrap().ends_with("photos 120 photos"), "{roots}");
    assert_eq!(browser.location(), "?view=folders");
    browser.click("#folder-list a");
    let subfolders = browser.wait_for(
        "the subfolders",
        "const t = [...document.querySelectorAll('#folder-list li')].map(l => l.textContent).join('|');
         return t.startsWith('2024') && t",
    );
    assert_eq!(subfolders, json!("2024 80 photos|scans 40 photos"));
    browser.script(
        "[...document.querySelectorAll('#folder-list a')].find(a => a.textContent === '2024').click(); return true",
        json!([]),
    );
    browser.wait_for(
        "the folder's subfolder",
        "return [...document.querySelectorAll('#folder-list li')].map(l => l.textContent).join('|') === 'trip 40 photos'",
    );
    let shown = browser.wait_for(
        "the folder's photos",
        "window.scrollTo(0, document.body.scrollHeight);
         const t = [...document.querySelectorAll('#timeline-groups .tile img')];
         return t.length >= 80 && t.map(i => i.title)",
    );
    let shown = shown.as_array().unwrap();
    assert_eq!(shown.len(), 80);
    assert!(shown.iter().all(|t| t.as_str().unwrap().contains("/photos/2024/")), "only the folder's photos");
    let crumbs = browser.script("return document.getElementById('crumbs').textContent", json!([]));
    assert!(
        crumbs.as_str().unwrap().starts_with("All folders › /") && crumbs.as_str().unwrap().ends_with("photos › 2024"),
        "{crumbs}"
    );
    assert!(browser.location().starts_with("?view=folders&path="), "{}", browser.location());
    browser.script("window.scrollTo(0, 0); return true", json!([]));
    browser.screenshot(&artefacts.join("folders.png"));
    drop_server(server);
}

/// [`MEASURE_ROWS`]: the photos per full row, the worst aspect-ratio error, the page's width.
fn measured(browser: &Browser) -> (Vec<u64>, f64, f64) {
    let v = browser.script(MEASURE_ROWS, json!([]));
    let counts = v[0].as_array().unwrap().iter().map(|n| n.as_u64().unwrap()).collect();
    (counts, v[1].as_f64().unwrap_or(f64::INFINITY), v[2].as_f64().unwrap())
}

/// The settings page: the library's settings as labelled controls; a change saved there is in
/// use at once, without a restart (background jobs stop and the header says so; a captioning
/// model named there captions), and is what `clipdex config` then shows.
#[test]
fn settings_page_changes_apply_without_restart_in_headless_chromium() {
    let Some((chromium, driver)) = chromium_and_driver() else { return };
    let artefacts = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/e2e");
    let tmp = tempfile::tempdir().unwrap();
    let photos = tmp.path().join("photos");
    std::fs::create_dir_all(&photos).unwrap();
    for i in 0..3 {
        picture(i).save(photos.join(format!("photo{i}.jpg"))).unwrap();
    }
    let db = tmp.path().join("db");
    for args in [&["add", photos.to_str().unwrap()][..], &["index"]] {
        let out = Command::new(env!("CARGO_BIN_EXE_clipdex"))
            .args(["--db", db.to_str().unwrap(), "--model", &model()])
            .args(args)
            .output()
            .unwrap();
        assert!(out.status.success(), "{args:?}: {}", String::from_utf8_lossy(&out.stderr));
    }
    // No --caption-model: the default hub model, which cannot be fetched offline.
    let mut server = Command::new(env!("CARGO_BIN_EXE_clipdex"))
        .args(["--db", db.to_str().unwrap(), "serve", "--bind", "127.0.0.1:0"])
        .env("HF_HUB_OFFLINE", "1")
        .env_remove("CLIPDEX_CAPTION_MODEL")
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = server.stdout.take().unwrap();
    let server = Reaped(server);
    let mut line = String::new();
    std::io::BufReader::new(stdout).read_line(&mut line).unwrap();
    let url = line.split_whitespace().find(|w| w.starts_with("http://")).unwrap().trim_end_matches('/').to_string();
    let id: Value = ureq::get(&format!("{url}/api/timeline")).call().unwrap().into_json().unwrap();
    let id = id["items"][0]["id"].as_u64().expect("a photo in the timeline");
    let caption_of = |id: u64| match ureq::post(&format!("{url}/api/images/{id}/caption")).call() {
        Ok(r) => r.status(),
        Err(ureq::Error::Status(code, _)) => code,
        Err(e) => panic!("{e}"),
    };
    assert_eq!(caption_of(id), 503, "the default captioner is not there offline");

    let (_driver, browser) = open_browser(&driver, &chromium, tmp.path());
    let _quit = Quit(&browser);
    browser.call("POST", "/url", Some(json!({ "url": format!("{url}/") })));
    browser.wait_for("the indexer", "return document.getElementById('status').textContent.includes('up to date')");
    browser.click("#settings-link");
    browser.wait_for("the settings", "return document.getElementById('setting-caption_model')");
    assert!(browser.location().contains("view=settings"));
    // Every control has its label and its description.
    let unlabelled = browser.script(
        "return [...document.querySelectorAll('#settings-form input, #settings-form select')]
            .filter(c => !document.querySelector(`label[for='${c.id}']`) || !c.getAttribute('aria-describedby'))
            .map(c => c.id)",
        json!([]),
    );
    assert_eq!(unlabelled, json!([]));

    browser.type_into("#setting-caption_model", &blip("blip-tiny-captioning"));
    browser.click("#setting-background_jobs");
    browser.click("#settings-form button[type=submit]");
    browser.wait_for("saved", "return document.getElementById('settings-message').textContent.includes('Saved')");
    browser.wait_for(
        "the jobs paused",
        "return document.getElementById('status').textContent.includes('background jobs off')",
    );
    browser.script("window.scrollTo(0, 0)", json!([]));
    browser.screenshot(&artefacts.join("settings.png"));
    // In use without a restart: the captioner named in the page captions.
    assert_eq!(caption_of(id), 200);
    let listed = Command::new(env!("CARGO_BIN_EXE_clipdex"))
        .args(["--db", db.to_str().unwrap(), "config", "get", "background_jobs"])
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&listed.stdout).trim(), "off", "{}", String::from_utf8_lossy(&listed.stderr));

    // A value that cannot be a model is refused with the reason, and changes nothing.
    browser.type_into("#setting-itm_model", "/no/such/model");
    browser.click("#setting-background_jobs");
    browser.click("#settings-form button[type=submit]");
    let refused =
        browser.wait_for("refused", "return document.getElementById('settings-message').textContent.includes('Not saved') && document.getElementById('settings-message').textContent");
    assert!(refused.as_str().unwrap().contains("/no/such/model"), "{refused}");
    // Jobs on again: the indexer comes back.
    browser.call("POST", "/url", Some(json!({ "url": format!("{url}/?view=settings") })));
    browser.wait_for("the settings", "return document.getElementById('setting-background_jobs')");
    assert_eq!(browser.script("return document.getElementById('setting-itm_model').value", json!([])), json!(""));
    browser.click("#setting-background_jobs");
    browser.click("#settings-form button[type=submit]");
    browser.wait_for("jobs on", "return document.getElementById('status').textContent.includes('up to date')");
    drop_server(server);
}

/// First run on a machine without network or model: the server keeps serving, says once in
/// its log that it waits for a model, and the UI shows a setup page naming the model and how to
/// get it there (a download once, a copied Hugging Face cache, a model folder and `--model`);
/// once the model is there (here: the library pointed at a copied folder) the page goes away
/// without a restart.
#[test]
fn a_first_run_without_a_model_shows_the_setup_page_in_headless_chromium() {
    let Some((chromium, driver)) = chromium_and_driver() else { return };
    let artefacts = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/e2e");
    let tmp = tempfile::tempdir().unwrap();
    let db = tmp.path().join("db");
    let log = tmp.path().join("serve.log");
    // A new library, no --model: the default hub model, absent from an empty cache, offline.
    let mut server = Command::new(env!("CARGO_BIN_EXE_clipdex"))
        .args(["--db", db.to_str().unwrap(), "serve", "--bind", "127.0.0.1:0"])
        .env("HF_HOME", tmp.path().join("hf"))
        .env("HF_HUB_OFFLINE", "1")
        .env_remove("CLIPDEX_MODEL")
        .env_remove("RUST_LOG")
        .stdout(Stdio::piped())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let stdout = server.stdout.take().unwrap();
    let server = Reaped(server);
    let mut line = String::new();
    std::io::BufReader::new(stdout).read_line(&mut line).unwrap();
    let url = line.split_whitespace().find(|w| w.starts_with("http://")).unwrap().trim_end_matches('/').to_string();

    let (_driver, browser) = open_browser(&driver, &chromium, tmp.path());
    let _quit = Quit(&browser);
    browser.call("POST", "/url", Some(json!({ "url": format!("{url}/") })));
    browser.wait_for("the setup page", "return !document.getElementById('setup').hidden");
    let status = browser.script("return document.getElementById('status').textContent", json!([]));
    assert!(status.as_str().unwrap().contains("waiting for a model"), "{status}");
    let page = browser.script("return document.getElementById('setup').innerText", json!([]));
    let page = page.as_str().unwrap();
    for says in [
        "openai/clip-vit-base-patch32",
        "clipdex --model openai/clip-vit-base-patch32 embed --text hello",
        "models--openai--clip-vit-base-patch32",
        "HF_HUB_OFFLINE=1",
        "clipdex --model /path/to/folder serve",
        "not in the Hugging Face cache",
    ] {
        assert!(page.contains(says), "the setup page does not say {says:?}:\n{page}");
    }
    browser.screenshot(&artefacts.join("setup.png"));
    if let Some(axe) = axe_script() {
        let found = browser.axe_violations(&axe);
        assert!(found.is_empty(), "axe-core found on the setup page:\n{}", found.join("\n"));
    }

    // The model folder arrives: pointed at it, the server loads it and the page goes away.
    let put = ureq::put(&format!("{url}/api/settings")).send_json(json!({ "model": model() })).unwrap();
    assert_eq!(put.status(), 200);
    browser.wait_for("the setup page to go", "return document.getElementById('setup').hidden");
    browser.wait_for("the indexer", "return document.getElementById('status').textContent.includes('no folders yet')");
    drop_server(server);
    // One line in the log, however many tries.
    let logged = std::fs::read_to_string(&log).unwrap();
    assert_eq!(logged.matches("waiting for a model").count(), 1, "{logged}");
}

/// axe-core's script: `CLIPDEX_AXE`, else the copy `.ci/run` fetches into
/// `~/.cache/clipdex-ci/` (`npm pack axe-core`, pinned; never committed). `None` when it is not
/// there: a failure under CI (`CI` set, or `CLIPDEX_E2E=require`), a skip with a message otherwise.
fn axe_script() -> Option<String> {
    let path = std::env::var_os("CLIPDEX_AXE").map(PathBuf::from).or_else(|| {
        let cache = std::env::var_os("XDG_CACHE_HOME")
            .map(PathBuf::from)
            .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))?;
        Some(cache.join("clipdex-ci/axe-core-4.14.1/package/axe.min.js"))
    });
    match path.as_deref().map(std::fs::read_to_string) {
        Some(Ok(script)) => Some(script),
        _ => {
            let required =
                std::env::var_os("CI").is_some() || std::env::var("CLIPDEX_E2E").is_ok_and(|v| v == "require");
            assert!(!required, "axe-core is missing ({path:?}): .ci/run fetches it (npm pack axe-core@4.14.1)");
            eprintln!("skipped: axe-core not found at {path:?} (set CLIPDEX_AXE, or run .ci/run once)");
            None
        }
    }
}

impl Browser {
    /// The accessibility violations axe-core finds on the page as it is now (every rule it
    /// runs by default: WCAG 2.1 A and AA, and its best practices), one line each: the rule,
    /// its help text and the elements.
    fn axe_violations(&self, axe: &str) -> Vec<String> {
        if self.script("return typeof window.axe", json!([])) != json!("object") {
            // Run as the WebDriver script itself: the page's CSP allows no inline script.
            self.script(&format!("{axe}\n;return typeof window.axe"), json!([]));
        }
        let found = self.call(
            "POST",
            "/execute/async",
            Some(json!({"script": "const done = arguments[arguments.length - 1];
                axe.run(document).then(r => done(r.violations.map(v => `${v.id} (${v.impact}): ${v.help}: ` +
                    v.nodes.map(n => n.target.join(' ') + (n.failureSummary ? ` [${n.failureSummary.replace(/\\s+/g, ' ')}]` : '')).join('; '))))
                  .catch(e => done([`axe failed: ${e}`]));", "args": []})),
        );
        found.as_array().unwrap().iter().map(|v| v.as_str().unwrap().to_string()).collect()
    }
}

/// Accessibility, checked by axe-core on the home page (timeline), search results, the detail
/// view and the settings page: no violation on any. And the keyboard: `/` goes to the search
/// box, a search by image is started from the keyboard, each photo is one tab stop, and
/// thumbnails are named by their caption or file name.
#[test]
fn home_results_detail_and_settings_pass_axe_core_and_work_by_keyboard_in_headless_chromium() {
    let Some((chromium, driver)) = chromium_and_driver() else { return };
    let Some(axe) = axe_script() else { return };
    let tmp = tempfile::tempdir().unwrap();
    let photos = tmp.path().join("photos");
    std::fs::create_dir_all(&photos).unwrap();
    for i in 0..6 {
        picture(i).save(photos.join(format!("photo{i}.jpg"))).unwrap();
    }
    let db = tmp.path().join("db");
    for args in [&["add", photos.to_str().unwrap()][..], &["index"]] {
        let out = Command::new(env!("CARGO_BIN_EXE_clipdex"))
            .args(["--db", db.to_str().unwrap(), "--model", &model()])
            .args(args)
            .output()
            .unwrap();
        assert!(out.status.success(), "{args:?}: {}", String::from_utf8_lossy(&out.stderr));
    }
    let (server, url) = serve(&db, &[]);
    let url = url.trim_end_matches('/').to_string();
    let (_driver, browser) = open_browser(&driver, &chromium, tmp.path());
    let _quit = Quit(&browser);
    let mut violations = Vec::new();
    let mut check = |page: &str| {
        for v in browser.axe_violations(&axe) {
            violations.push(format!("{page}: {v}"));
        }
    };

    // Home: the timeline.
    browser.call("POST", "/url", Some(json!({ "url": format!("{url}/?min=0") })));
    browser.wait_for("the timeline", "return document.querySelectorAll('#timeline-groups .tile img').length === 6");
    browser.wait_for("the status", "return document.getElementById('status').textContent.includes('up to date')");
    check("home");

    // Results: `/` from anywhere goes to the search box.
    browser.script("document.activeElement.blur()", json!([]));
    browser.key("/");
    assert_eq!(browser.script("return document.activeElement.id", json!([])), json!("q"));
    browser.type_into("#q", "a photo\u{E007}");
    browser.wait_for("the results", "return document.querySelectorAll('#results .card img').length === 6");
    check("results");
    // One tab stop per photo, named by its file name (no captions here), not its path.
    let stops = browser.script(
        "return [...document.querySelectorAll('#results .card, #timeline-groups .tile')].map(el =>
            (el.tabIndex >= 0 ? 1 : 0) + [...el.querySelectorAll('a, button, input, select, textarea, [tabindex]')]
                .filter(c => c.tabIndex >= 0).length)",
        json!([]),
    );
    assert!(stops.as_array().unwrap().iter().all(|n| n == 1), "tab stops per photo: {stops}");
    let alts = browser.script("return [...document.querySelectorAll('#results .card img')].map(i => i.alt)", json!([]));
    assert!(
        alts.as_array()
            .unwrap()
            .iter()
            .all(|a| a.as_str().unwrap().starts_with("photo") && !a.as_str().unwrap().contains('/')),
        "{alts}"
    );
    // A search by image from the keyboard: "By image…" is a tab stop, and Enter opens the file
    // picker (caught here: a headless browser has no dialog to show).
    browser.script(
        "document.getElementById('image-input').addEventListener('click', e => { window.picked = true; e.preventDefault(); });
         document.getElementById('q').focus();",
        json!([]),
    );
    let mut reached = false;
    for _ in 0..4 {
        browser.key("\u{E004}"); // Tab
        if browser.script("return document.activeElement.id", json!([])) == json!("image-button") {
            reached = true;
            break;
        }
    }
    assert!(reached, "Tab from the search box reaches \"By image…\"");
    browser.key("\u{E007}"); // Enter
    browser.wait_for("the file picker", "return window.picked === true");

    // Detail.
    browser.click("#results .card img");
    browser.wait_for("the detail view", "return document.getElementById('detail').open");
    browser.wait_for(
        "its image",
        "const i = document.getElementById('detail-image'); return i.complete && i.naturalWidth > 0",
    );
    check("detail");
    browser.key("\u{E00C}"); // Esc
    browser.wait_for("the detail view to close", "return !document.getElementById('detail').open");

    // Settings.
    browser.click("#settings-link");
    browser.wait_for("the settings", "return document.getElementById('setting-caption_model')");
    check("settings");
    drop_server(server);
    assert!(violations.is_empty(), "axe-core found:\n{}", violations.join("\n"));
}

/// The Jobs view: the background passes with their progress, and the files that could not be
/// read, reached from the header's "N unreadable", each with its reason.
#[test]
fn the_jobs_view_lists_the_passes_and_the_unreadable_files_in_headless_chromium() {
    let Some((chromium, driver)) = chromium_and_driver() else { return };
    let artefacts = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/e2e");
    let tmp = tempfile::tempdir().unwrap();
    let photos = tmp.path().join("photos");
    std::fs::create_dir_all(&photos).unwrap();
    for i in 0..3 {
        picture(i).save(photos.join(format!("photo{i}.jpg"))).unwrap();
    }
    std::fs::write(photos.join("broken.jpg"), b"\xff\xd8\xff\xe0 not really a JPEG").unwrap();
    let db = tmp.path().join("db");
    let bin = env!("CARGO_BIN_EXE_clipdex");
    let out = Command::new(bin)
        .args(["--db", db.to_str().unwrap(), "--model", &model(), "add"])
        .arg(&photos)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    // `index` reports the broken file and exits with failure; the library keeps the others.
    Command::new(bin).args(["--db", db.to_str().unwrap(), "--model", &model(), "index"]).output().unwrap();
    let (server, url) = serve(&db, &[]);
    let url = url.trim_end_matches('/').to_string();
    let (_driver, browser) = open_browser(&driver, &chromium, tmp.path());
    let _quit = Quit(&browser);
    browser.call("POST", "/url", Some(json!({ "url": format!("{url}/") })));
    browser.wait_for("the failures link", "return document.getElementById('failures-link')");
    browser.click("#failures-link");
    assert!(browser.location().contains("view=jobs"));
    let listed = browser.wait_for(
        "the failures",
        "const l = document.getElementById('failures-list'); return l.children.length && l.innerText",
    );
    let listed = listed.as_str().unwrap();
    assert!(listed.contains("broken.jpg") && listed.len() > "broken.jpg".len() + 10, "{listed}");
    assert!(
        browser
            .script("return document.getElementById('failures-title').textContent", json!([]))
            .as_str()
            .unwrap()
            .starts_with("1 file could not be read")
    );
    let jobs = browser.wait_for(
        "the passes",
        "return [...document.querySelectorAll('#jobs-list .job')].map(j => j.dataset.name + ': ' + j.querySelector('.job-text').textContent)",
    );
    let jobs: Vec<&str> = jobs.as_array().unwrap().iter().map(|j| j.as_str().unwrap()).collect();
    assert_eq!(
        jobs.iter().map(|j| j.split(':').next().unwrap()).collect::<Vec<_>>(),
        ["indexing", "tagging", "captioning", "finding_faces", "thumbnails"]
    );
    assert!(jobs.contains(&"tagging: off") && jobs.contains(&"captioning: off"), "{jobs:?}");
    assert!(jobs.contains(&"finding_faces: off"), "{jobs:?}");
    browser.screenshot(&artefacts.join("jobs.png"));
    if let Some(axe) = axe_script() {
        let found = browser.axe_violations(&axe);
        assert!(found.is_empty(), "axe-core found on the jobs view:\n{}", found.join("\n"));
    }
    // The API behind it.
    let api: Value = ureq::get(&format!("{url}/api/failures?limit=5")).call().unwrap().into_json().unwrap();
    assert_eq!(api["total"], 1);
    assert!(api["failures"][0]["path"].as_str().unwrap().ends_with("broken.jpg"));

    // Retry: the file is tried again at once, and still fails, with why.
    browser.click("#failures-list .retry");
    let said = browser.wait_for(
        "the retry",
        "const t = document.getElementById('failures-list').innerText; return t.includes('Still failing') && t",
    );
    assert!(said.as_str().unwrap().contains("broken.jpg"), "{said}");

    // Pause: the pass says so, and stays paused when the server starts again.
    browser.click("#jobs-list .job[data-name=thumbnails] .job-pause");
    browser.wait_for(
        "the pause",
        "const j = document.querySelector('#jobs-list .job[data-name=thumbnails]');
         return j.querySelector('.job-text').textContent === 'paused' && j.querySelector('.job-pause').textContent === 'Resume'",
    );
    let paused = |url: &str| -> Vec<String> {
        let jobs: Value = ureq::get(&format!("{url}/api/jobs")).call().unwrap().into_json().unwrap();
        jobs["jobs"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|j| j["paused"] == true)
            .map(|j| j["name"].as_str().unwrap().to_string())
            .collect()
    };
    assert_eq!(paused(&url), ["thumbnails"]);
    drop_server(server);
    let (server, url) = serve(&db, &[]);
    let url = url.trim_end_matches('/').to_string();
    assert_eq!(paused(&url), ["thumbnails"], "remembered across a restart");
    browser.call("POST", "/url", Some(json!({ "url": format!("{url}/?view=jobs") })));
    browser.wait_for(
        "the paused pass",
        "const b = document.querySelector('#jobs-list .job[data-name=thumbnails] .job-pause'); return b && b.textContent === 'Resume'",
    );
    browser.click("#jobs-list .job[data-name=thumbnails] .job-pause");
    browser.wait_for(
        "the resume",
        "const b = document.querySelector('#jobs-list .job[data-name=thumbnails] .job-pause'); return b && b.textContent === 'Pause'",
    );
    assert!(paused(&url).is_empty());
    let refused = ureq::post(&format!("{url}/api/jobs/sleeping/pause")).call();
    assert!(matches!(refused, Err(ureq::Error::Status(404, _))), "{refused:?}");
    drop_server(server);
}

/// Runs `clipdex --db DB --model MODEL ARGS` and checks it succeeded.
fn clipdex_ok(db: &Path, args: &[&str]) {
    let out = Command::new(env!("CARGO_BIN_EXE_clipdex"))
        .args(["--db", db.to_str().unwrap(), "--model", &model()])
        .args(args)
        .output()
        .unwrap();
    assert!(out.status.success(), "{args:?}: {}", String::from_utf8_lossy(&out.stderr));
}

/// Near-duplicates for the duplicates page: the astronaut, a smaller copy and a re-encoded
/// copy (one group), the cat and a small BMP of it (another), and a photo like no other.
fn duplicate_photos(tmp: &Path) -> PathBuf {
    let photos = tmp.join("photos");
    let images = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/images");
    for dir in ["trip", "backup"] {
        std::fs::create_dir_all(photos.join(dir)).unwrap();
    }
    for name in ["astronaut.jpg", "chelsea_exif3.jpg", "chelsea_small.bmp", "coffee.png"] {
        std::fs::copy(images.join(name), photos.join("trip").join(name)).unwrap();
    }
    let astronaut = image::open(images.join("astronaut.jpg")).unwrap().to_rgb8();
    image::imageops::resize(&astronaut, 256, 256, image::imageops::FilterType::Lanczos3)
        .save(photos.join("trip/astronaut_small.png"))
        .unwrap();
    let mut out = std::fs::File::create(photos.join("backup/astronaut_copy.jpg")).unwrap();
    image::codecs::jpeg::JpegEncoder::new_with_quality(&mut out, 60).encode_image(&astronaut).unwrap();
    std::fs::canonicalize(photos).unwrap()
}

/// The duplicate groups as the API lists them: each group's file names, sorted.
fn api_groups(url: &str) -> Vec<Vec<String>> {
    let report: Value = ureq::get(&format!("{url}/api/duplicates")).call().unwrap().into_json().unwrap();
    let mut groups: Vec<Vec<String>> = report["groups"]
        .as_array()
        .unwrap()
        .iter()
        .map(|g| {
            let mut names: Vec<String> = g["images"]
                .as_array()
                .unwrap()
                .iter()
                .map(|i| i["path"].as_str().unwrap().rsplit('/').next().unwrap().to_string())
                .collect();
            names.sort();
            names
        })
        .collect();
    groups.sort();
    groups
}

/// Duplicates resolved in the web UI: "Keep this one" in a group moves the group's other photos
/// out of the library folder into a batch of the duplicates folder (laid out as `clipdex
/// duplicates --move-to` lays out its folder, with its journal), "Undo" puts them back and they
/// are indexed again; "Keep the suggested photo in every group" does it for all groups, and is
/// undone the same way. The page passes axe-core.
#[test]
fn duplicates_are_moved_out_and_back_in_headless_chromium() {
    let Some((chromium, driver)) = chromium_and_driver() else { return };
    let artefacts = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/e2e");
    let tmp = tempfile::tempdir().unwrap();
    let photos = duplicate_photos(tmp.path());
    let db = tmp.path().join("db");
    clipdex_ok(&db, &["add", photos.to_str().unwrap()]);
    clipdex_ok(&db, &["index"]);
    let (server, url) = serve(&db, &[]);
    let url = url.trim_end_matches('/').to_string();
    let astronauts = ["astronaut.jpg", "astronaut_copy.jpg", "astronaut_small.png"].map(String::from).to_vec();
    let cats = ["chelsea_exif3.jpg", "chelsea_small.bmp"].map(String::from).to_vec();
    assert_eq!(api_groups(&url), [astronauts.clone(), cats.clone()]);

    let (_driver, browser) = open_browser(&driver, &chromium, tmp.path());
    let _quit = Quit(&browser);
    browser.call("POST", "/url", Some(json!({ "url": format!("{url}/?view=duplicates") })));
    browser
        .wait_for("two groups", "return document.querySelectorAll('#dup-groups .dup-group .keep-button').length === 5");
    if let Some(axe) = axe_script() {
        let found = browser.axe_violations(&axe);
        assert!(found.is_empty(), "axe-core found on the duplicates page:\n{}", found.join("\n"));
    }
    browser.screenshot(&artefacts.join("duplicates.png"));

    // Keep the small astronaut: the other two leave the library folder for a batch folder.
    browser.click("#dup-groups .keep-button[aria-label^='Keep this one: astronaut_small.png;']");
    browser.wait_for("the undo button", "return document.getElementById('dup-undo-button')");
    assert_eq!(
        browser.script("return document.querySelectorAll('#dup-groups .dup-group').length", json!([])),
        json!(1)
    );
    let batches: Vec<PathBuf> =
        std::fs::read_dir(db.join("moved-duplicates")).unwrap().map(|e| e.unwrap().path()).collect();
    assert_eq!(batches.len(), 1, "{batches:?}");
    let batch = &batches[0];
    let (moved_original, moved_copy) = (photos.join("trip/astronaut.jpg"), photos.join("backup/astronaut_copy.jpg"));
    assert!(!moved_original.exists() && !moved_copy.exists());
    assert!(photos.join("trip/astronaut_small.png").exists());
    assert!(
        batch.join("photos/trip/astronaut.jpg").is_file() && batch.join("photos/backup/astronaut_copy.jpg").is_file()
    );
    let journal = std::fs::read_to_string(batch.join("clipdex-moves.jsonl")).unwrap();
    assert_eq!(journal.lines().count(), 2, "{journal}");
    let said = browser.script("return document.getElementById('dup-undo').textContent", json!([]));
    assert!(said.as_str().unwrap().contains("Moved 2 files"), "{said}");
    assert_eq!(api_groups(&url), std::slice::from_ref(&cats));

    // Undo: both back where they were, indexed again, and the group is listed again.
    browser.click("#dup-undo-button");
    browser.wait_for(
        "the group again",
        "return document.getElementById('dup-undo').textContent.startsWith('Put back 2 files')
            && document.querySelectorAll('#dup-groups .dup-group').length === 2",
    );
    assert!(moved_original.is_file() && moved_copy.is_file());
    assert!(!batch.join("photos/trip/astronaut.jpg").exists());
    assert_eq!(api_groups(&url), [astronauts.clone(), cats.clone()]);

    // Every group at once: the suggested photo of each stays.
    browser.click("#dup-all");
    browser.wait_for("the undo button", "return document.getElementById('dup-undo-button')");
    assert_eq!(
        browser.script("return document.querySelectorAll('#dup-groups .dup-group').length", json!([])),
        json!(0)
    );
    assert!(api_groups(&url).is_empty());
    let left: Vec<&str> = ["trip/astronaut.jpg", "trip/astronaut_small.png", "backup/astronaut_copy.jpg"]
        .into_iter()
        .filter(|p| photos.join(p).exists())
        .collect();
    assert_eq!(left.len(), 1, "one astronaut stays: {left:?}");
    assert_eq!(
        ["trip/chelsea_exif3.jpg", "trip/chelsea_small.bmp"].iter().filter(|p| photos.join(p).exists()).count(),
        1,
        "one cat stays"
    );
    assert!(photos.join("trip/coffee.png").exists(), "a photo in no group stays");
    browser.click("#dup-undo-button");
    browser.wait_for(
        "the groups again",
        "return document.getElementById('dup-undo').textContent.startsWith('Put back 3 files')
            && document.querySelectorAll('#dup-groups .dup-group').length === 2",
    );
    assert_eq!(api_groups(&url), [astronauts, cats]);
    drop_server(server);
}

/// Selection on the timeline: Space on a photo selects it (its state shown and exposed as
/// `aria-pressed`), a click then adds another, Shift-click a range, Esc clears; the bar's "Add
/// a tag" tags exactly the selected photos, so that a `tag:` search finds exactly them.
#[test]
fn selected_photos_are_tagged_and_found_by_tag_in_headless_chromium() {
    let Some((chromium, driver)) = chromium_and_driver() else { return };
    let artefacts = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/e2e");
    let tmp = tempfile::tempdir().unwrap();
    let photos = tmp.path().join("photos");
    std::fs::create_dir_all(&photos).unwrap();
    for i in 0..6 {
        picture(i).save(photos.join(format!("photo{i}.jpg"))).unwrap();
    }
    let db = tmp.path().join("db");
    clipdex_ok(&db, &["add", photos.to_str().unwrap()]);
    clipdex_ok(&db, &["index"]);
    let (server, url) = serve(&db, &[]);
    let url = url.trim_end_matches('/').to_string();
    let (_driver, browser) = open_browser(&driver, &chromium, tmp.path());
    let _quit = Quit(&browser);
    browser.call("POST", "/url", Some(json!({ "url": format!("{url}/") })));
    browser.wait_for("the timeline", "return document.querySelectorAll('#timeline-groups .tile img').length === 6");
    let tile_ids = browser
        .script("return [...document.querySelectorAll('#timeline-groups .tile')].map(t => t.dataset.id)", json!([]));
    let tile_ids: Vec<String> = tile_ids.as_array().unwrap().iter().map(|v| v.as_str().unwrap().to_string()).collect();
    let selected = || {
        let v = browser.script(
            "return [...document.querySelectorAll('#timeline-groups .tile[aria-pressed=true]')].map(t => t.dataset.id)",
            json!([]),
        );
        v.as_array().unwrap().iter().map(|v| v.as_str().unwrap().to_string()).collect::<Vec<_>>()
    };
    let nth = |n: usize| format!("#timeline-groups .tile:nth-of-type({})", n + 1);

    // Space on a focused photo selects it and opens no detail view; a click then selects
    // another; Shift-click selects the range from there.
    browser.script("arguments[0].focus()", json!([{ELEMENT: browser.find(&nth(0))}]));
    browser.key(" ");
    assert_eq!(selected(), [tile_ids[0].clone()]);
    assert_eq!(browser.script("return document.getElementById('detail').open", json!([])), json!(false));
    let count = browser.script("return document.getElementById('select-count').textContent", json!([]));
    assert_eq!(count, json!("1 photo selected"));
    browser.click(&nth(2));
    let shift_click = json!({"actions": [
        {"type": "key", "id": "keys", "actions": [{"type": "keyDown", "value": "\u{E008}"}, {"type": "pause"}, {"type": "pause"}, {"type": "keyUp", "value": "\u{E008}"}]},
        {"type": "pointer", "id": "mouse", "actions": [
            {"type": "pointerMove", "origin": {ELEMENT: browser.find(&nth(4))}, "x": 0, "y": 0},
            {"type": "pointerDown", "button": 0}, {"type": "pointerUp", "button": 0}]}]});
    browser.call("POST", "/actions", Some(shift_click));
    assert_eq!(selected(), [0, 2, 3, 4].map(|i| tile_ids[i].clone()));
    // Esc clears; then three by keyboard alone: Space, Tab, Space, Tab, Tab, Space.
    browser.key("\u{E00C}");
    assert!(selected().is_empty());
    assert_eq!(browser.script("return document.getElementById('select-bar').hidden", json!([])), json!(true));
    browser.script("arguments[0].focus()", json!([{ELEMENT: browser.find(&nth(1))}]));
    for key in [" ", "\u{E004}", " ", "\u{E004}", "\u{E004}", " "] {
        browser.key(key);
    }
    let chosen = [1, 2, 4].map(|i| tile_ids[i].clone());
    assert_eq!(selected(), chosen);
    browser.screenshot(&artefacts.join("selection.png"));
    if let Some(axe) = axe_script() {
        let found = browser.axe_violations(&axe);
        assert!(found.is_empty(), "axe-core found while selecting:\n{}", found.join("\n"));
    }

    // Tag them from the bar (by keyboard: typed, then Enter).
    browser.type_into("#select-tag", "picked\u{E007}");
    browser.wait_for(
        "the tagging",
        "return document.getElementById('select-status').textContent.startsWith('Tagged 3 photos')",
    );
    browser.click("#select-clear");
    assert!(selected().is_empty());

    // A `tag:` search shows exactly those three (with no relevance cut-off).
    browser.script("document.getElementById('cutoff').value = 0", json!([]));
    browser.type_into("#q", "tag:picked\u{E007}");
    browser.wait_for("the results", "return document.querySelectorAll('#results .card img').length > 0");
    std::thread::sleep(Duration::from_millis(500));
    let found = browser
        .script("return [...document.querySelectorAll('#results .card')].map(c => c.dataset.id).sort()", json!([]));
    let mut want = chosen.to_vec();
    want.sort();
    assert_eq!(found, json!(want));
    // The API agrees, and counts the tag.
    let tags: Value = ureq::get(&format!("{url}/api/tags")).call().unwrap().into_json().unwrap();
    assert!(tags["tags"].as_array().unwrap().iter().any(|t| t["label"] == "picked" && t["count"] == 3), "{tags}");
    drop_server(server);
}

/// A library whose faces are written through the library's API (no face model runs): Anna in
/// photos 0-2, an unnamed person in photos 3-4, another in photo 5, and a face of nobody in
/// photo 0. Returns the photos' ids in file order and the two unnamed persons' ids.
fn library_with_people(photos: &Path, db: &Path) -> (Vec<u64>, [u64; 2]) {
    use clipdex::store::{FaceScan, NewFace, PeopleChange, Person};
    std::fs::create_dir_all(photos).unwrap();
    for i in 0..6 {
        picture(i).save(photos.join(format!("photo{i}.jpg"))).unwrap();
    }
    for args in [&["add", photos.to_str().unwrap()][..], &["index"]] {
        let out = Command::new(env!("CARGO_BIN_EXE_clipdex"))
            .args(["--db", db.to_str().unwrap(), "--model", &model()])
            .args(args)
            .output()
            .unwrap();
        assert!(out.status.success(), "{args:?}: {}", String::from_utf8_lossy(&out.stderr));
    }
    let lib = clipdex::Library::open(clipdex::LibraryConfig::new(db, model())).unwrap();
    let root = std::fs::canonicalize(photos).unwrap();
    let ids: Vec<u64> =
        (0..6).map(|i| lib.store().path_entry(&root.join(format!("photo{i}.jpg"))).unwrap().unwrap().id).collect();
    let persons = lib.store().new_person_ids(3).unwrap();
    let change = PeopleChange {
        persons: persons.iter().map(|&id| Person { id, name: None, hidden: false, representative: None }).collect(),
        ..Default::default()
    };
    lib.store().apply_people(&change).unwrap();
    let face = |bbox: [f32; 4], person: Option<u64>, axis: usize| {
        let mut embedding = vec![0.0; 128];
        embedding[axis] = 1.0;
        let [x, y, w, h] = bbox;
        let landmarks = [
            [x + 0.3 * w, y + 0.4 * h],
            [x + 0.7 * w, y + 0.4 * h],
            [x + 0.5 * w, y + 0.6 * h],
            [x + 0.35 * w, y + 0.8 * h],
            [x + 0.65 * w, y + 0.8 * h],
        ];
        NewFace { bbox, score: 0.9, landmarks, embedding, person, pinned: false }
    };
    let who = [0, 0, 0, 1, 1, 2];
    for (i, &id) in ids.iter().enumerate() {
        let hash = lib.store().image(id).unwrap().unwrap().hash;
        let mut faces = vec![face([100.0, 60.0, 80.0, 80.0], Some(persons[who[i]]), who[i])];
        if i == 0 {
            faces.push(face([220.0, 120.0, 50.0, 50.0], None, 9));
        }
        lib.store_found_faces(id, &FaceScan { model: "test-faces".into(), hash }, faces).unwrap();
    }
    lib.name_person(persons[0], "Anna").unwrap();
    (ids, [persons[1], persons[2]])
}

/// The People page: one face per person with its photo count, named persons first; rename
/// inline from the keyboard (Enter saves and a reload shows it, Escape cancels); merging two
/// persons leaves one with their photos together; a person opens exactly their photos (a
/// `person:` search with its chip, or the person's own page when unnamed); the detail view
/// draws the faces' boxes with their names, and "Not this person" takes a face out. axe-core
/// finds nothing on the People page or the detail view with its boxes.
#[test]
fn the_people_page_renames_merges_and_opens_a_persons_photos_in_headless_chromium() {
    let Some((chromium, driver)) = chromium_and_driver() else { return };
    let artefacts = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/e2e");
    let tmp = tempfile::tempdir().unwrap();
    let db = tmp.path().join("db");
    let (ids, [ben, cleo]) = library_with_people(&tmp.path().join("photos"), &db);
    let (server, url) = serve(&db, &[]);
    let url = url.trim_end_matches('/').to_string();
    let people = || -> Vec<(Option<String>, u64)> {
        let list: Value = ureq::get(&format!("{url}/api/people")).call().unwrap().into_json().unwrap();
        let mut out: Vec<(Option<String>, u64)> = list["people"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| (p["name"].as_str().map(str::to_string), p["images"].as_u64().unwrap()))
            .collect();
        out.sort();
        out
    };
    let (_driver, browser) = open_browser(&driver, &chromium, tmp.path());
    let _quit = Quit(&browser);
    // The People page showing `n` persons, loaded (not the list before a change).
    let listed = |n: usize| {
        format!(
            "const g = document.getElementById('people-grid');
             return !g.hasAttribute('aria-busy') && !document.getElementById('people-list').hidden
               && g.querySelectorAll('.person').length === {n}"
        )
    };
    let cards = "return [...document.querySelectorAll('#people-grid .person')].map(p =>
        p.querySelector('.person-name').textContent + ' | ' + p.querySelector('.person-count').textContent)";

    // The list: named first, then the unnamed by photo count; one face each, a square crop.
    browser.call("POST", "/url", Some(json!({ "url": format!("{url}/") })));
    browser.wait_for("the header", "return document.getElementById('people-link')");
    browser.click("#people-link");
    assert!(browser.location().contains("view=people"), "{}", browser.location());
    browser.wait_for("the persons", &listed(3));
    assert_eq!(
        browser.script(cards, json!([])),
        json!([
            "Anna | 3 photos",
            format!("Unnamed person {ben} | 2 photos"),
            format!("Unnamed person {cleo} | 1 photo")
        ])
    );
    let faces = browser.wait_for(
        "the faces",
        "const i = [...document.querySelectorAll('#people-grid .person-open img')];
         return i.every(i => i.complete && i.naturalWidth > 0) && i.map(i => [i.naturalWidth, i.naturalHeight])",
    );
    // Photos of 320 × 240 px, faces of 80 px: crops of 128 px (1.6 times the face), square.
    assert_eq!(faces, json!([[128, 128], [128, 128], [128, 128]]));
    browser.screenshot(&artefacts.join("people.png"));
    if let Some(axe) = axe_script() {
        let found = browser.axe_violations(&axe);
        assert!(found.is_empty(), "axe-core found on the People page:\n{}", found.join("\n"));
    }

    // Rename from the keyboard: Escape cancels, Enter saves.
    let rename = |person: u64| format!("#people-grid .person[data-id='{person}'] .person-actions button");
    browser.script(&format!("document.querySelector(\"{}\").focus()", rename(cleo)), json!([]));
    browser.key("\u{E007}"); // Enter on "Rename"
    assert_eq!(browser.script("return document.activeElement.className", json!([])), json!("person-name-input"));
    browser.type_into(".person-name-input", "Zed");
    browser.key("\u{E00C}"); // Escape
    assert_eq!(browser.script("return document.querySelectorAll('.person-name-input').length", json!([])), 0);
    assert_eq!(
        browser.script(
            &format!("return document.activeElement === document.querySelector(\"{}\")", rename(cleo)),
            json!([])
        ),
        true
    );
    browser.script(&format!("document.querySelector(\"{}\").focus()", rename(ben)), json!([]));
    browser.key("\u{E007}");
    browser.type_into(".person-name-input", "Ben\u{E007}");
    browser.wait_for("saved", "return document.getElementById('people-message').textContent.includes('Named Ben')");
    browser.call("POST", "/url", Some(json!({ "url": format!("{url}/?view=people") })));
    browser.wait_for("the persons again", &listed(3));
    assert_eq!(
        browser.script(cards, json!([])),
        json!(["Anna | 3 photos", "Ben | 2 photos", format!("Unnamed person {cleo} | 1 photo")])
    );

    // An unnamed person opens their own page: exactly their photo.
    browser.click(&format!("#people-grid .person[data-id='{cleo}'] .person-open"));
    browser.wait_for("the person's photos", "return document.querySelectorAll('#person-photos .tile').length");
    assert!(browser.location().contains(&format!("person={cleo}")), "{}", browser.location());
    assert_eq!(
        browser.script(
            "return [...document.querySelectorAll('#person-photos .tile')].map(t => Number(t.dataset.id))",
            json!([])
        ),
        json!([ids[5]])
    );
    browser.click("#people-back");
    browser.wait_for("the persons again", &listed(3));

    // Merge: select two, press Merge; one person with the photos of both.
    assert_eq!(browser.script("return document.getElementById('people-merge').disabled", json!([])), true);
    browser.click(&format!("#people-grid .person[data-id='{ben}'] input[type=checkbox]"));
    browser.click(&format!("#people-grid .person[data-id='{cleo}'] input[type=checkbox]"));
    assert_eq!(
        browser.script("return document.getElementById('people-merge').textContent", json!([])),
        json!("Merge selected (2)")
    );
    browser.click("#people-merge");
    browser.wait_for("merged", &listed(2));
    assert_eq!(browser.script(cards, json!([])), json!(["Anna | 3 photos", "Ben | 3 photos"]));
    assert_eq!(people(), [(Some("Anna".to_string()), 3), (Some("Ben".to_string()), 3)]);

    // Hide: off the list, back with "Show hidden people", and shown again.
    let hide = format!("#people-grid .person[data-id='{ben}'] .person-actions button:last-child");
    assert_eq!(
        browser.script(&format!("return document.querySelector(\"{hide}\").textContent"), json!([])),
        json!("Hide")
    );
    browser.click(&hide);
    browser.wait_for("hidden", &listed(1));
    assert_eq!(people(), [(Some("Anna".to_string()), 3)]);
    browser.click("#people-hidden");
    browser.wait_for("the hidden listed", &listed(2));
    assert_eq!(browser.script(cards, json!([])), json!(["Anna | 3 photos", "Ben | 3 photos · hidden"]));
    browser.click(&hide);
    browser.wait_for(
        "shown again",
        "return document.getElementById('people-message').textContent.includes('shown again')",
    );
    browser.click("#people-hidden");
    browser.wait_for("both listed", &listed(2));
    assert_eq!(people(), [(Some("Anna".to_string()), 3), (Some("Ben".to_string()), 3)]);

    // A named person: a person: search with its chip, exactly their photos.
    browser.click("#people-grid .person[data-id] .person-open");
    browser.wait_for("Anna's photos", "return document.querySelectorAll('#results .card').length === 3");
    assert!(browser.location().contains("q=person%3AAnna"), "{}", browser.location());
    let mut shown: Vec<u64> =
        serde_json::from_value(browser.script(
            "return [...document.querySelectorAll('#results .card')].map(c => Number(c.dataset.id))",
            json!([]),
        ))
        .unwrap();
    shown.sort_unstable();
    let mut anna = ids[..3].to_vec();
    anna.sort_unstable();
    assert_eq!(shown, anna);
    assert_eq!(
        browser.script("return [...document.querySelectorAll('#chips .chip')].map(c => c.textContent)", json!([])),
        json!(["Person: Anna×"])
    );

    // The detail view of photo 0: Anna's box and a face of nobody, named on the photo.
    browser.click(&format!("#results .card[data-id='{}'] img", ids[0]));
    browser.wait_for(
        "the detail view",
        "return document.getElementById('detail').open && !document.getElementById('detail-people').hidden",
    );
    browser.wait_for(
        "its image",
        "const i = document.getElementById('detail-image'); return i.complete && i.naturalWidth > 0",
    );
    assert_eq!(browser.script("return document.getElementById('detail-faces').hidden", json!([])), true);
    browser.click("#detail-faces-toggle");
    let boxes = browser.script(
        "const f = document.getElementById('detail-faces'); if (f.hidden) return 'hidden';
         const i = document.getElementById('detail-image').getBoundingClientRect();
         return [...f.querySelectorAll('.face-box')].map(b => { const r = b.getBoundingClientRect();
           return [b.textContent, Math.round(100 * (r.left - i.left) / i.width), Math.round(100 * (r.width) / i.width)]; })",
        json!([]),
    );
    // Boxes at 100/320 and 220/320 of the width, 80 and 50 px wide (2 px borders inside).
    assert_eq!(boxes, json!([["Anna", 31, 25], ["Unknown", 69, 16]]));
    browser.screenshot(&artefacts.join("detail-faces.png"));
    if let Some(axe) = axe_script() {
        let found = browser.axe_violations(&axe);
        assert!(found.is_empty(), "axe-core found on the detail view with faces:\n{}", found.join("\n"));
    }
    // "Not this person": the face leaves Anna, who keeps her other two photos.
    browser.click("#detail-face-list .face-not");
    browser.wait_for(
        "the face taken out",
        "return [...document.querySelectorAll('#detail-faces .face-box')].map(b => b.textContent).join() === 'Unknown,Unknown'",
    );
    assert_eq!(people(), [(Some("Anna".to_string()), 2), (Some("Ben".to_string()), 3)]);
    // The chip's ×: the search without the filter (nothing left: the timeline).
    browser.key("\u{E00C}"); // Esc
    browser.wait_for("the detail view to close", "return !document.getElementById('detail').open");
    browser.click("#chips .chip-remove");
    browser.wait_for("the timeline", "return !document.getElementById('timeline').hidden");
    assert_eq!(browser.script("return document.getElementById('q').value", json!([])), json!(""));
    assert!(!browser.location().contains("person"), "{}", browser.location());
    drop_server(server);
}

/// The search box's help and autocompletion: "?" opens the syntax with examples; typing a key's
/// start suggests the key, `place:` the library's places (from their GPS), taken with the arrow
/// keys and Enter (which then does not search), closed with Escape. axe-core finds nothing
/// with the suggestions or the help open.
#[test]
fn the_search_box_completes_places_and_shows_its_syntax_in_headless_chromium() {
    let Some((chromium, driver)) = chromium_and_driver() else { return };
    let Some(axe) = axe_script() else { return };
    let tmp = tempfile::tempdir().unwrap();
    let photos = tmp.path().join("photos");
    std::fs::create_dir_all(&photos).unwrap();
    let fixtures = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/places");
    for name in ["lisbon.jpg", "munich.jpg", "tokyo.jpg"] {
        std::fs::copy(fixtures.join(name), photos.join(name)).unwrap();
    }
    let db = tmp.path().join("db");
    for args in [&["add", photos.to_str().unwrap()][..], &["index"]] {
        let out = Command::new(env!("CARGO_BIN_EXE_clipdex"))
            .args(["--db", db.to_str().unwrap(), "--model", &model()])
            .args(args)
            .output()
            .unwrap();
        assert!(out.status.success(), "{args:?}: {}", String::from_utf8_lossy(&out.stderr));
    }
    let (server, url) = serve(&db, &[]);
    let url = url.trim_end_matches('/').to_string();
    let (_driver, browser) = open_browser(&driver, &chromium, tmp.path());
    let _quit = Quit(&browser);
    let mut violations = Vec::new();
    browser.call("POST", "/url", Some(json!({ "url": format!("{url}/?min=0") })));
    browser.wait_for("the search box", "return document.getElementById('q').getAttribute('role') === 'combobox'");
    let options = "return [...document.querySelectorAll('#query-suggestions [role=option]')]
        .filter(o => !o.closest('[hidden]')).map(o => o.textContent).join('|')";

    // A key's start suggests the key; Enter takes it and the key's values follow.
    browser.type_into("#q", "dog pla");
    let keys = browser.wait_for("the key suggestions", options);
    assert!(keys.as_str().unwrap().starts_with("place:"), "{keys}");
    assert_eq!(browser.script("return document.getElementById('q').getAttribute('aria-expanded')", json!([])), "true");
    browser.key("\u{E015}"); // Down
    browser.key("\u{E007}"); // Enter
    assert_eq!(browser.script("return document.getElementById('q').value", json!([])), "dog place:");
    // Then the places: cities, regions and countries that start with what is typed.
    browser.type_into("#q", "Li");
    let places = browser.wait_for("the place suggestions", options);
    assert_eq!(places, "Lisbon (1)", "Lisbon the city and the region, one photo");
    let active = "return document.getElementById('q').getAttribute('aria-activedescendant') || ''";
    browser.key("\u{E015}"); // Down
    let selected = browser.script(active, json!([]));
    assert_eq!(
        browser.script(&format!("return document.getElementById({selected}).getAttribute('aria-selected')"), json!([])),
        "true"
    );
    for v in browser.axe_violations(&axe) {
        violations.push(format!("suggestions: {v}"));
    }
    browser.key("\u{E007}"); // Enter: takes it, does not search
    assert_eq!(browser.script("return document.getElementById('q').value", json!([])), "dog place:Lisbon ");
    assert!(browser.script("return document.getElementById('query-suggestions').hidden", json!([])) == true);
    assert!(!browser.location().contains("q="), "Enter on a suggestion does not search: {}", browser.location());
    // Escape closes the list without clearing the box; Enter then searches.
    browser.type_into("#q", "place:Mu");
    assert_eq!(browser.wait_for("Munich", options), "Munich (1)");
    browser.key("\u{E00C}"); // Esc
    assert!(browser.script("return document.getElementById('query-suggestions').hidden", json!([])) == true);
    assert_eq!(browser.script("return document.getElementById('q').value", json!([])), "dog place:Lisbon place:Mu");
    browser.script("document.getElementById('q').value = 'a photo place:Lisbon'", json!([]));
    browser.key("\u{E007}"); // Enter
    browser.wait_for("the results", "return document.querySelectorAll('#results .card img').length === 1");
    // Cameras: those of the library's photos (a filter-only query's facets).
    browser.script("document.getElementById('q').value = ''", json!([]));
    browser.type_into("#q", "camera:fix");
    let cameras =
        format!("const o = {}; return o.startsWith('camera:') ? '' : o", options.trim_start_matches("return "));
    assert_eq!(browser.wait_for("the cameras", &cameras), "FixtureCam (3)");
    browser.key("\u{E00C}"); // Esc

    // The help: a labelled button, the syntax with examples, closed by Escape.
    browser.click("#query-help-button");
    browser.wait_for("the help", "return !document.getElementById('query-help').hidden");
    let help = browser.script("return document.getElementById('query-help').textContent", json!([]));
    for example in ["-night", "place:Lisboa", "camera:fuji", "near:"] {
        assert!(help.as_str().unwrap().contains(example), "{example}: {help}");
    }
    assert_eq!(
        browser.script("return document.getElementById('query-help-button').getAttribute('aria-expanded')", json!([])),
        "true"
    );
    for v in browser.axe_violations(&axe) {
        violations.push(format!("help: {v}"));
    }
    browser.key("\u{E00C}"); // Esc
    assert!(browser.script("return document.getElementById('query-help').hidden", json!([])) == true);
    assert_eq!(browser.script("return document.activeElement.id", json!([])), "query-help-button");
    drop_server(server);
    assert!(violations.is_empty(), "axe-core found:\n{}", violations.join("\n"));
}

/// Selection on search results: a photo chosen by Ctrl-click, another by a plain click once
/// something is selected, a third by Space; the bar counts them, tags them, and its Download
/// saves one zip of their originals (the browser's own download); the detail view downloads one
/// original. axe-core finds nothing while photos are selected. At a phone's width the search
/// box's suggestions stay on the screen.
#[test]
fn search_results_are_selected_tagged_and_downloaded_in_headless_chromium() {
    let Some((chromium, driver)) = chromium_and_driver() else { return };
    let tmp = tempfile::tempdir().unwrap();
    let photos = tmp.path().join("photos");
    std::fs::create_dir_all(&photos).unwrap();
    for i in 0..6 {
        picture(i).save(photos.join(format!("photo{i}.jpg"))).unwrap();
    }
    let db = tmp.path().join("db");
    clipdex_ok(&db, &["add", photos.to_str().unwrap()]);
    clipdex_ok(&db, &["index"]);
    let (server, url) = serve(&db, &[]);
    let url = url.trim_end_matches('/').to_string();
    let (_driver, browser) = open_browser(&driver, &chromium, tmp.path());
    let _quit = Quit(&browser);
    let downloads = tmp.path().join("downloads");
    std::fs::create_dir_all(&downloads).unwrap();
    browser.call(
        "POST",
        "/goog/cdp/execute",
        Some(json!({"cmd": "Page.setDownloadBehavior", "params": {"behavior": "allow", "downloadPath": downloads}})),
    );
    browser.call("POST", "/url", Some(json!({ "url": format!("{url}/?min=0") })));
    browser.wait_for("the search box", "return document.getElementById('q').getAttribute('role') === 'combobox'");
    browser.script("document.getElementById('cutoff').value = 0", json!([]));
    browser.type_into("#q", "a photo\u{E007}");
    browser.wait_for("the results", "return document.querySelectorAll('#results .card img').length === 6");
    let card_ids =
        browser.script("return [...document.querySelectorAll('#results .card')].map(c => c.dataset.id)", json!([]));
    let card_ids: Vec<String> = card_ids.as_array().unwrap().iter().map(|v| v.as_str().unwrap().to_string()).collect();
    let file_of = |id: &str| -> PathBuf {
        let record: Value = ureq::get(&format!("{url}/api/images/{id}")).call().unwrap().into_json().unwrap();
        PathBuf::from(record["paths"][0].as_str().unwrap())
    };
    let selected = || {
        let v = browser.script(
            "return [...document.querySelectorAll('#results .card[aria-pressed=true]')].map(c => c.dataset.id)",
            json!([]),
        );
        v.as_array().unwrap().iter().map(|v| v.as_str().unwrap().to_string()).collect::<Vec<_>>()
    };
    let nth = |n: usize| format!("#results .card:nth-of-type({})", n + 1);

    // Ctrl-click selects (a plain click would open the photo); then a plain click selects
    // another, and Space on a focused photo a third; none opens the detail view.
    let ctrl_click = json!({"actions": [
        {"type": "key", "id": "keys", "actions": [{"type": "keyDown", "value": "\u{E009}"}, {"type": "pause"}, {"type": "pause"}, {"type": "keyUp", "value": "\u{E009}"}]},
        {"type": "pointer", "id": "mouse", "actions": [
            {"type": "pointerMove", "origin": {ELEMENT: browser.find(&nth(0))}, "x": 0, "y": 0},
            {"type": "pointerDown", "button": 0}, {"type": "pointerUp", "button": 0}]}]});
    browser.call("POST", "/actions", Some(ctrl_click));
    assert_eq!(selected(), [card_ids[0].clone()]);
    assert_eq!(browser.script("return document.getElementById('select-bar').hidden", json!([])), json!(false));
    browser.click(&nth(2));
    browser.script("arguments[0].focus()", json!([{ELEMENT: browser.find(&nth(3))}]));
    browser.key(" ");
    let chosen = [0, 2, 3].map(|i| card_ids[i].clone());
    assert_eq!(selected(), chosen);
    assert_eq!(browser.script("return document.getElementById('detail').open", json!([])), json!(false));
    let count = browser.script("return document.getElementById('select-count').textContent", json!([]));
    assert_eq!(count, json!("3 photos selected"));
    if let Some(axe) = axe_script() {
        let found = browser.axe_violations(&axe);
        assert!(found.is_empty(), "axe-core found on selected results:\n{}", found.join("\n"));
    }

    // A tag for the three, from the bar.
    browser.type_into("#select-tag", "chosen\u{E007}");
    browser.wait_for(
        "the tagging",
        "return document.getElementById('select-status').textContent.startsWith('Tagged 3 photos')",
    );
    let tags: Value = ureq::get(&format!("{url}/api/tags")).call().unwrap().into_json().unwrap();
    assert!(tags["tags"].as_array().unwrap().iter().any(|t| t["label"] == "chosen" && t["count"] == 3), "{tags}");

    // Download: one zip of their originals, saved by the browser itself.
    browser.click("#select-download");
    let zip_path = downloads.join("clipdex-3-photos.zip");
    let start = Instant::now();
    while !zip_path.is_file() {
        assert!(start.elapsed() < Duration::from_secs(60), "no download in {downloads:?}");
        std::thread::sleep(Duration::from_millis(100));
    }
    let mut zip = zip::ZipArchive::new(std::fs::File::open(&zip_path).unwrap()).unwrap();
    let mut names: Vec<String> = (0..zip.len()).map(|i| zip.by_index(i).unwrap().name().unwrap().to_string()).collect();
    names.sort();
    let mut want: Vec<String> =
        chosen.iter().map(|id| file_of(id).file_name().unwrap().to_str().unwrap().to_string()).collect();
    want.sort();
    assert_eq!(names, want);
    for id in &chosen {
        let file = file_of(id);
        let mut entry = zip.by_name(file.file_name().unwrap().to_str().unwrap()).unwrap();
        let mut bytes = Vec::new();
        std::io::Read::read_to_end(&mut entry, &mut bytes).unwrap();
        assert_eq!(bytes, std::fs::read(&file).unwrap(), "{file:?}");
    }

    // Esc clears; Enter on a photo opens it, and its Download link is the original.
    browser.key("\u{E00C}");
    assert!(selected().is_empty());
    browser.script("arguments[0].focus()", json!([{ELEMENT: browser.find(&nth(1))}]));
    browser.key("\u{E007}");
    browser.wait_for("the detail view", "return document.getElementById('detail').open");
    let link = browser.script(
        "const a = document.getElementById('detail-download'); return [a.getAttribute('href'), a.download]",
        json!([]),
    );
    let file = file_of(&card_ids[1]);
    assert_eq!(link, json!([format!("/api/images/{}/file", card_ids[1]), file.file_name().unwrap().to_str().unwrap()]));
    let mut original = Vec::new();
    std::io::Read::read_to_end(
        &mut ureq::get(&format!("{url}{}", link[0].as_str().unwrap())).call().unwrap().into_reader(),
        &mut original,
    )
    .unwrap();
    assert_eq!(original, std::fs::read(&file).unwrap());
    browser.key("\u{E00C}");

    // At a phone's width the suggestions fit on the screen (they overflowed it by 7 px).
    browser.call(
        "POST",
        "/goog/cdp/execute",
        Some(json!({"cmd": "Emulation.setDeviceMetricsOverride",
                    "params": {"width": 390, "height": 844, "deviceScaleFactor": 1, "mobile": true}})),
    );
    browser.script("const q = document.getElementById('q'); q.value = ''; q.focus(); return true", json!([]));
    browser.type_into("#q", "pla");
    browser.wait_for("the suggestions", "return !document.getElementById('query-suggestions').hidden");
    let fits = browser.script(
        "const r = document.getElementById('query-suggestions').getBoundingClientRect();
         return [r.left, r.right, window.innerWidth, document.documentElement.scrollWidth]",
        json!([]),
    );
    let [left, right, width, scroll] = [0, 1, 2, 3].map(|i| fits[i].as_f64().unwrap());
    assert!(left >= 0.0 && right <= 390.0 && width <= 390.0 && scroll <= 390.0, "the suggestions at 390 px: {fits}");
    drop_server(server);
}

/// Filters set in the Filters panel show as chips beside the query's own while the panel is
/// closed (a page with no results says why), and a chip's × takes its filter away.
#[test]
fn panel_filters_stay_in_sight_as_removable_chips_in_headless_chromium() {
    let Some((chromium, driver)) = chromium_and_driver() else { return };
    let tmp = tempfile::tempdir().unwrap();
    let photos = tmp.path().join("photos");
    std::fs::create_dir_all(&photos).unwrap();
    for i in 0..3 {
        picture(i).save(photos.join(format!("photo{i}.jpg"))).unwrap();
    }
    let db = tmp.path().join("db");
    clipdex_ok(&db, &["add", photos.to_str().unwrap()]);
    clipdex_ok(&db, &["index"]);
    let (server, url) = serve(&db, &[]);
    let url = url.trim_end_matches('/').to_string();
    let (_driver, browser) = open_browser(&driver, &chromium, tmp.path());
    let _quit = Quit(&browser);
    // Videos only, in a library of photos, and a date: as a shared link opens it.
    let address = format!("{url}/?q=a+photo&kind=video&after=2001-02-03&min=0");
    browser.call("POST", "/url", Some(json!({ "url": address })));
    browser.wait_for("the chips", "return document.querySelectorAll('#chips .chip').length === 2");
    let chips = || {
        browser.script("return [...document.querySelectorAll('#chips .chip span')].map(c => c.textContent)", json!([]))
    };
    assert_eq!(chips(), json!(["After: 2001-02-03", "Only: videos"]));
    assert_eq!(browser.script("return document.getElementById('filters').open", json!([])), json!(false));
    assert_eq!(browser.script("return document.querySelectorAll('#results .card').length", json!([])), json!(0));
    if let Some(axe) = axe_script() {
        let found = browser.axe_violations(&axe);
        assert!(found.is_empty(), "axe-core found on results with filter chips:\n{}", found.join("\n"));
    }

    // × on "Only: videos": the panel's value goes, the photos come.
    browser.click("#chips .chip[data-key=kind] .chip-remove");
    browser.wait_for("the photos", "return document.querySelectorAll('#results .card img').length === 3");
    assert_eq!(chips(), json!(["After: 2001-02-03"]));
    assert_eq!(browser.script("return document.getElementById('kind').value", json!([])), json!(""));
    browser.click("#chips .chip[data-key=after] .chip-remove");
    browser.wait_for("no chip", "return document.querySelectorAll('#chips .chip').length === 0");
    browser.wait_for("the photos again", "return document.querySelectorAll('#results .card img').length === 3");
    assert_eq!(browser.script("return document.getElementById('q').value", json!([])), json!("a photo"));
    drop_server(server);
}

/// The relevance cut-off lives in the address: moving the slider puts `min=` there, a reload
/// keeps it, and with every result under it the page says how many are below; lowering it
/// shows them again. A `-text:` filter in the query shows as a chip ("Not Text: …") whose
/// button searches again without it, and the photo it left out comes back.
#[test]
fn the_cut_off_and_a_not_text_chip_in_the_address_in_headless_chromium() {
    let Some((chromium, driver)) = chromium_and_driver() else { return };
    let Some(ocr) = common::ocr_models("v6") else { return };
    let tmp = tempfile::tempdir().unwrap();
    let photos = tmp.path().join("photos");
    std::fs::create_dir_all(&photos).unwrap();
    let fixtures = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/ocr");
    for name in ["receipt.png", "sign.jpg"] {
        std::fs::copy(fixtures.join(name), photos.join(name)).unwrap();
    }
    for seed in 0..2 {
        picture(seed).save(photos.join(format!("plain-{seed}.png"))).unwrap();
    }
    let db = tmp.path().join("db");
    clipdex_ok(&db, &["add", photos.to_str().unwrap()]);
    clipdex_ok(&db, &["index"]);
    clipdex_ok(&db, &["ocr", "--library", "--ocr-model", ocr.to_str().unwrap()]);
    let (server, url) = serve(&db, &[]);
    let url = url.trim_end_matches('/').to_string();
    // A cut-off above every result's relevance (the tiny test model's relevances are low).
    let best =
        ureq::get(&format!("{url}/api/search?q=photo&k=20")).call().unwrap().into_json::<Value>().unwrap()["results"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["relevance"].as_f64().unwrap())
            .fold(0.0, f64::max);
    assert!(best < 100.0, "a result of relevance 100 leaves no cut-off above it");
    let high = best.floor() as u32 + 1;
    let (_driver, browser) = open_browser(&driver, &chromium, tmp.path());
    let _quit = Quit(&browser);
    let cards = "return document.querySelectorAll('#results .card').length";
    browser.call("POST", "/url", Some(json!({ "url": format!("{url}/?q=photo&min=0") })));
    browser.wait_for("four results", &format!("{} === 4", cards));

    // The slider, moved above them all: the address holds it, the page says what is below.
    let slide = |to: u32| {
        browser.script(
            "const c = document.getElementById('cutoff'); c.value = arguments[0];
             c.dispatchEvent(new Event('input')); c.dispatchEvent(new Event('change'));",
            json!([to]),
        );
    };
    let message = "return document.getElementById('message').textContent";
    let below = "const m = document.getElementById('message').textContent;
        return m.includes('below the relevance cut-off') ? m : ''";
    slide(high);
    let said = browser.wait_for("the cut-off message", below);
    assert_eq!(said, "4 results are below the relevance cut-off: lower it to see them.");
    assert_eq!(browser.script(cards, json!([])), 0);
    assert!(browser.location().contains(&format!("min={high}")), "{}", browser.location());
    // A reload keeps the cut-off, and says the same.
    browser.call("POST", "/refresh", Some(json!({})));
    let said = browser.wait_for("the cut-off message after a reload", below);
    assert_eq!(said, "4 results are below the relevance cut-off: lower it to see them.");
    assert_eq!(browser.script("return document.getElementById('cutoff').value", json!([])), high.to_string());
    assert!(browser.location().contains(&format!("min={high}")), "{}", browser.location());
    // Lowered: every result shows, the message goes, the address follows.
    slide(0);
    browser.wait_for("the results again", &format!("{} === 4", cards));
    assert!(!browser.script(message, json!([])).as_str().unwrap().contains("below"));
    assert!(browser.location().contains("min=0"), "{}", browser.location());

    // -text: as a chip: shown, and removed by its button, which brings the photo back.
    let q = "photo -text:48213";
    browser.call("POST", "/url", Some(json!({ "url": format!("{url}/?q={}&min=0", q.replace(' ', "%20")) })));
    browser.wait_for("three results", &format!("{} === 3", cards));
    let names = "return [...document.querySelectorAll('#results .card img')].map(i => i.title).join('|')";
    let chips = "return [...document.querySelectorAll('#chips .chip span')].map(c => c.textContent).join('|')";
    assert_eq!(browser.wait_for("the chip", chips), "Not Text: 48213");
    assert!(!browser.script(names, json!([])).as_str().unwrap().contains("receipt"));
    browser.click("#chips .chip-remove");
    browser.wait_for("four results without the chip", &format!("{} === 4", cards));
    assert_eq!(browser.script("return document.getElementById('q').value", json!([])), "photo");
    assert_eq!(browser.script(chips, json!([])), "");
    assert!(browser.script(names, json!([])).as_str().unwrap().contains("receipt.png"));
    assert!(browser.location().contains("q=photo&"), "{}", browser.location());
    drop_server(server);
}
