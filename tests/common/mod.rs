//! What several integration tests share: the zero-shot goldens written by
//! `tools/make_fixtures.py`, and generated photos.

#![allow(dead_code)] // each test crate uses a different part

pub mod backends;
pub mod video;

use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde::Deserialize;
use serde_json::Value;

/// xorshift64*: small, seeded, reproducible.
pub struct Rng(pub u64);

impl Rng {
    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    pub fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    /// Uniform in [0, 1).
    pub fn unit(&mut self) -> f32 {
        (self.next() >> 40) as f32 / (1u64 << 24) as f32
    }

    pub fn pick<'a, T>(&mut self, items: &'a [T]) -> Option<&'a T> {
        (!items.is_empty()).then(|| &items[self.below(items.len())])
    }
}

/// `tests/fixtures`.
pub fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

/// Runs the clipdex binary on the library `db` with the CLIP `model`, then `args`, to its end.
pub fn clipdex_on<S: AsRef<OsStr>>(db: &Path, model: impl AsRef<OsStr>, args: &[S]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_clipdex"))
        .arg("--db")
        .arg(db)
        .arg("--model")
        .arg(model)
        .args(args)
        .output()
        .unwrap()
}

/// What a successful command printed, as JSON; fails the test with its stderr otherwise.
pub fn ok_json(out: Output) -> Value {
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).unwrap()
}

/// The cosine of two vectors.
pub fn cosine(a: &[f32], b: &[f32]) -> f32 {
    let dot: f32 = a.iter().zip(b).map(|(x, y)| x * y).sum();
    let na: f32 = a.iter().map(|x| x * x).sum::<f32>().sqrt();
    let nb: f32 = b.iter().map(|x| x * x).sum::<f32>().sqrt();
    dot / (na * nb)
}

/// The reference zero-shot scores of one fixture model.
#[derive(Deserialize)]
pub struct ZeroShotGolden {
    /// The labels, in the order of every case's scores.
    pub labels: Vec<String>,
    /// One photo with one prompt set.
    pub cases: Vec<ZeroShotCase>,
}

/// The reference scores of one photo against every label with one prompt set.
#[derive(Deserialize)]
pub struct ZeroShotCase {
    pub templates: Vec<String>,
    pub image: String,
    pub cosine: Vec<f32>,
    pub probability: Vec<f32>,
}

/// Reads `golden/zeroshot-MODEL.json`.
pub fn zeroshot_golden(model: &str) -> ZeroShotGolden {
    let text = std::fs::read_to_string(fixtures().join(format!("golden/zeroshot-{model}.json"))).unwrap();
    serde_json::from_str(&text).unwrap()
}

/// A photo-like picture that differs with `seed`: smooth colour fields and a checkerboard.
pub fn picture(seed: u32) -> image::RgbImage {
    let s = seed as f32;
    image::RgbImage::from_fn(160, 120, |x, y| {
        let (fx, fy) = (x as f32 / 160.0, y as f32 / 120.0);
        let r = 127.0 + 120.0 * (fx * 6.0 + s * 0.7).sin();
        let g = 127.0 + 120.0 * (fy * 5.0 + s * 1.3).cos();
        let b = if ((x + seed * 13) / 20 + y / 20).is_multiple_of(2) { 40.0 + s * 7.0 % 200.0 } else { 220.0 };
        image::Rgb([r as u8, g as u8, b as u8])
    })
}

/// Runs `command` to its end with its output captured; returns the output and the process's
/// peak resident memory in bytes (wait4's `ru_maxrss`). Note that Linux starts a child's
/// `ru_maxrss` from its parent's resident size at the fork: keep the test process small.
#[cfg(unix)]
pub fn run_measured(mut command: std::process::Command) -> (std::process::Output, u64) {
    use std::os::unix::process::ExitStatusExt;
    use std::process::Stdio;
    let mut child = command.stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
    let pid = child.id() as libc::pid_t;
    let (mut out, mut err) = (child.stdout.take().unwrap(), child.stderr.take().unwrap());
    // Read the pipes on threads so the child never blocks on a full pipe, then reap it with
    // wait4 to get its rusage.
    let out_t = std::thread::spawn(move || {
        let mut v = Vec::new();
        std::io::Read::read_to_end(&mut out, &mut v).unwrap();
        v
    });
    let err_t = std::thread::spawn(move || {
        let mut v = Vec::new();
        std::io::Read::read_to_end(&mut err, &mut v).unwrap();
        v
    });
    let mut status = 0;
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    assert_eq!(unsafe { libc::wait4(pid, &mut status, 0, &mut usage) }, pid);
    std::mem::forget(child); // reaped above
    let output = std::process::Output {
        status: std::process::ExitStatus::from_raw(status),
        stdout: out_t.join().unwrap(),
        stderr: err_t.join().unwrap(),
    };
    (output, usage.ru_maxrss as u64 * 1024)
}

/// A `clipdex serve` process for a test, stopped with SIGTERM (a graceful stop, which removes
/// its record in the database folder) and waited for when dropped.
pub struct Served(pub std::process::Child);

impl Drop for Served {
    fn drop(&mut self) {
        // SAFETY: signalling a child process of ours by its id.
        unsafe { libc::kill(self.0.id() as libc::pid_t, libc::SIGTERM) };
        let _ = self.0.wait();
    }
}

/// Starts `command` (a `clipdex ... serve --bind 127.0.0.1:0 ...`) and returns it with the base
/// URL it prints first, without a trailing slash.
pub fn start_server(mut command: Command) -> (Served, String) {
    use std::io::BufRead;
    let mut child = command.stdout(std::process::Stdio::piped()).stderr(std::process::Stdio::null()).spawn().unwrap();
    let mut line = String::new();
    std::io::BufReader::new(child.stdout.take().unwrap()).read_line(&mut line).unwrap();
    let served = Served(child);
    let url = line
        .split_whitespace()
        .find(|w| w.starts_with("http://"))
        .unwrap_or_else(|| panic!("the server did not print its address: {line:?}"))
        .trim_end_matches('/')
        .to_string();
    (served, url)
}

/// Where the parity tests run their models: `CLIPDEX_TEST_DEVICE` (`cpu`, the default, or
/// `cuda`, as `--device` takes it; `tools/device_check.sh` sets it on a GPU machine). The
/// goldens are loaded onto the same device.
pub fn device() -> candle_core::Device {
    let choice = std::env::var("CLIPDEX_TEST_DEVICE").unwrap_or_else(|_| "cpu".into());
    let choice: clipdex::device::DeviceChoice = choice.parse().expect("CLIPDEX_TEST_DEVICE: cpu or cuda");
    choice.open().expect("CLIPDEX_TEST_DEVICE names a device this build and machine have")
}

/// The folder of one PP-OCR model set (`v4`, `v6`) that tools/fetch_ocr_models.sh fetched, or
/// `None` (with a message) when it is absent; in CI its absence is a failure.
pub fn ocr_models(set: &str) -> Option<PathBuf> {
    let root = std::env::var_os("CLIPDEX_OCR_MODELS").map(PathBuf::from).unwrap_or_else(|| {
        let cache = std::env::var_os("XDG_CACHE_HOME")
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from(std::env::var_os("HOME").unwrap_or_default()).join(".cache"));
        cache.join("clipdex-ci/ocr-models")
    });
    let dir = root.join(set);
    if dir.join(".complete").exists() {
        return Some(dir);
    }
    if std::env::var_os("CI").is_some() {
        panic!("CI is set but the OCR models are not in {}: run tools/fetch_ocr_models.sh", dir.display());
    }
    eprintln!("skipped: no OCR models in {} (run tools/fetch_ocr_models.sh)", dir.display());
    None
}
