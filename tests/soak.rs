//! A soak test of the always-on library: `clipdex serve` indexes 500 generated photos while
//! four clients search, fetch thumbnails, upload images to search by, ask questions, look for
//! duplicates and run CLI commands through the server, for `CLIPDEX_SOAK_SECS` seconds (20 by
//! default; the README's figures come from 60). It fails on any 5xx or failed request, and on
//! resident memory growing by more than 300 MB; latencies are printed, never asserted.
//!
//!     CLIPDEX_SOAK_SECS=60 cargo test --release --test soak -- --nocapture

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::Command;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

mod common;
use common::{Rng, fixtures, start_server};

fn model() -> PathBuf {
    fixtures().join("clip-tiny-p32")
}

/// Resident memory of a process, bytes (Linux).
fn rss(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map_or(0, |kb| kb * 1024)
}

/// A photo-like JPEG that differs with `seed`.
fn jpeg(seed: u32) -> Vec<u8> {
    let s = seed as f32;
    let img = image::RgbImage::from_fn(480, 360, |x, y| {
        let (fx, fy) = (x as f32 / 480.0, y as f32 / 360.0);
        let r = 127.0 + 120.0 * (fx * (3.0 + s % 7.0) + s * 0.37).sin();
        let g = 127.0 + 120.0 * (fy * (2.0 + s % 5.0) + s * 0.71).cos();
        let b = 127.0 + 120.0 * ((fx + fy) * (1.0 + s % 3.0) + s * 1.13).sin();
        image::Rgb([r as u8, g as u8, b as u8])
    });
    let mut out = Vec::new();
    image::codecs::jpeg::JpegEncoder::new_with_quality(&mut out, 85).encode_image(&img).unwrap();
    out
}

fn multipart(bytes: &[u8]) -> (String, Vec<u8>) {
    let boundary = "clipdex-soak-boundary";
    let mut body = format!(
        "--{boundary}\r\nContent-Disposition: form-data; name=\"image\"; filename=\"q.jpg\"\r\nContent-Type: image/jpeg\r\n\r\n"
    )
    .into_bytes();
    body.extend_from_slice(bytes);
    body.extend_from_slice(format!("\r\n--{boundary}--\r\n").as_bytes());
    (format!("multipart/form-data; boundary={boundary}"), body)
}

#[derive(Default)]
struct Tally {
    /// Latencies in ms by operation.
    latencies: BTreeMap<&'static str, Vec<f64>>,
    /// Failures: operation, status or error.
    failures: Vec<String>,
}

#[test]
fn the_server_stays_up_and_fast_while_it_indexes_and_serves() {
    let seconds: u64 = std::env::var("CLIPDEX_SOAK_SECS").ok().and_then(|s| s.parse().ok()).unwrap_or(20);
    let tmp = tempfile::tempdir().unwrap();
    let photos = tmp.path().join("photos");
    for i in 0..500u32 {
        let dir = photos.join(format!("album{:02}", i / 50));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join(format!("p{i:03}.jpg")), jpeg(i)).unwrap();
    }
    let db = tmp.path().join("db");
    let bin = env!("CARGO_BIN_EXE_clipdex");
    let cli =
        |args: &[&str]| Command::new(bin).arg("--db").arg(&db).arg("--model").arg(model()).args(args).output().unwrap();
    assert!(cli(&["add", photos.to_str().unwrap()]).status.success());
    let vqa = fixtures().join("blip/blip-tiny-vqa");
    let mut command = Command::new(bin);
    command.arg("--db").arg(&db).arg("--model").arg(model()).arg("--vqa-model").arg(&vqa).args([
        "serve",
        "--bind",
        "127.0.0.1:0",
        "--debounce-ms",
        "200",
    ]);
    let (server, url) = start_server(command);
    let pid = server.0.id();
    let rss_start = rss(pid);

    let tally = Mutex::new(Tally::default());
    let deadline = Instant::now() + Duration::from_secs(seconds);
    let queries = ["a cat", "sunset over the sea", "red", "a photo of a dog", "mountains", "blue sky"];
    let peak_rss = std::sync::atomic::AtomicU64::new(rss_start);
    std::thread::scope(|scope| {
        for client in 0..4u64 {
            let (tally, url, db, peak_rss) = (&tally, &url, &db, &peak_rss);
            scope.spawn(move || {
                let mut rng = Rng(0x5eed + client);
                let agent = ureq::AgentBuilder::new().timeout(Duration::from_secs(120)).build();
                let mut ids: Vec<u64> = Vec::new();
                let mut first_ask = true;
                while Instant::now() < deadline {
                    let op: &'static str = match rng.below(10) {
                        0..=3 => "search",
                        4..=5 => "thumbnail",
                        6 => "upload",
                        7 => "ask",
                        8 => "duplicates",
                        _ => "cli",
                    };
                    let started = Instant::now();
                    let outcome: Result<(), String> = match op {
                        "search" => {
                            let q = queries[rng.below(queries.len())];
                            agent
                                .get(&format!("{url}/api/search"))
                                .query("q", q)
                                .query("k", "20")
                                .call()
                                .map_err(|e| e.to_string())
                                .and_then(|r| {
                                    let v: Value = r.into_json().map_err(|e| e.to_string())?;
                                    ids = v["results"]
                                        .as_array()
                                        .map(|a| a.iter().filter_map(|h| h["id"].as_u64()).collect())
                                        .unwrap_or_default();
                                    Ok(())
                                })
                        }
                        "thumbnail" if !ids.is_empty() => {
                            let id = ids[rng.below(ids.len())];
                            agent
                                .get(&format!("{url}/api/images/{id}/thumb?size=256"))
                                .call()
                                .map(|_| ())
                                .map_err(|e| e.to_string())
                        }
                        "upload" => {
                            let (content_type, body) = multipart(&jpeg(10_000 + rng.below(1000) as u32));
                            agent
                                .post(&format!("{url}/api/search/image?k=10"))
                                .set("Content-Type", &content_type)
                                .send_bytes(&body)
                                .map(|_| ())
                                .map_err(|e| e.to_string())
                        }
                        "ask" if !ids.is_empty() => {
                            let id = ids[rng.below(ids.len())];
                            agent
                                .post(&format!("{url}/api/images/{id}/ask"))
                                .send_json(json!({"question": "what colour is it?"}))
                                .map(|_| ())
                                .map_err(|e| e.to_string())
                        }
                        "duplicates" => {
                            agent.get(&format!("{url}/api/duplicates")).call().map(|_| ()).map_err(|e| e.to_string())
                        }
                        "cli" => {
                            let out = Command::new(bin)
                                .arg("--db")
                                .arg(db)
                                .arg("--model")
                                .arg(model())
                                .args(["search", "a cat", "-k", "5", "--json"])
                                .output()
                                .unwrap();
                            if out.status.success() {
                                Ok(())
                            } else {
                                Err(String::from_utf8_lossy(&out.stderr).into_owned())
                            }
                        }
                        _ => continue, // nothing found yet to look at
                    };
                    let ms = started.elapsed().as_secs_f64() * 1e3;
                    peak_rss.fetch_max(rss(pid), std::sync::atomic::Ordering::Relaxed);
                    let mut t = tally.lock().unwrap();
                    // The first question loads the answering model: kept apart.
                    let name = if op == "ask" && first_ask { "ask (model load)" } else { op };
                    if op == "ask" {
                        first_ask = false;
                    }
                    t.latencies.entry(name).or_default().push(ms);
                    if let Err(e) = outcome {
                        t.failures.push(format!("{op}: {e}"));
                    }
                }
            });
        }
    });
    let status: Value = ureq::get(&format!("{url}/api/status")).call().unwrap().into_json().unwrap();
    let rss_end = rss(pid);
    let tally = tally.into_inner().unwrap();
    eprintln!(
        "soak: {seconds} s, 4 clients; the server indexed {} of 500 photos meanwhile",
        status["library"]["images"]
    );
    for (op, ms) in &tally.latencies {
        let mut sorted = ms.clone();
        sorted.sort_by(f64::total_cmp);
        let at = |q: f64| sorted[((sorted.len() - 1) as f64 * q) as usize];
        eprintln!(
            "  {op:<18} {:>5} requests  median {:>7.1} ms  p99 {:>7.1} ms  max {:>7.1} ms",
            sorted.len(),
            at(0.5),
            at(0.99),
            sorted[sorted.len() - 1]
        );
    }
    let peak = peak_rss.load(std::sync::atomic::Ordering::Relaxed);
    eprintln!(
        "  server RSS: {:.0} MB at start, {:.0} MB peak, {:.0} MB at the end",
        rss_start as f64 / 1e6,
        peak as f64 / 1e6,
        rss_end as f64 / 1e6
    );
    assert!(
        tally.failures.is_empty(),
        "{} failed requests, e.g. {:?}",
        tally.failures.len(),
        &tally.failures[..tally.failures.len().min(5)]
    );
    assert!(tally.latencies.values().map(Vec::len).sum::<usize>() > 20, "too few requests");
    assert!(rss_end < rss_start + 300_000_000, "RSS grew from {rss_start} to {rss_end}");
    drop(server);
    assert!(!db.join("server.json").exists());
}
