//! Videos through FFmpeg's command-line tools (Debian's `ffmpeg` package): what a video is
//! (`ffprobe`), and the frames that stand for it, sampled at scene changes and at least every
//! few seconds, decoded upright and scaled down by `ffmpeg` into raw RGB read from its output.
//!
//! The tools run as subprocesses rather than through libav* bindings: nothing to build or link
//! (the system's FFmpeg decodes whatever codecs it was built with: H.264, HEVC, VP9, AV1), a
//! crash or hang in a decoder cannot take the library down, and a stalled decode is killed.
//! The indexer's use of them is in [`crate::indexer::videos`].

use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use image::RgbImage;

/// Why a video cannot be used.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum VideoProblem {
    /// `ffmpeg` or `ffprobe` cannot be run.
    #[error("{0} cannot be run ({1}); videos need FFmpeg: on Debian or Ubuntu, sudo apt install ffmpeg")]
    NoFfmpeg(String, String),
    /// The file holds no video stream (audio only, say).
    #[error("no video stream in it")]
    NoVideoStream,
    /// FFmpeg cannot read it (truncated, corrupt, not a video).
    #[error("FFmpeg cannot read it: {0}")]
    Unreadable(String),
    /// FFmpeg went longer than this without a frame, and was stopped.
    #[error("FFmpeg produced nothing for {0} s and was stopped")]
    Stalled(u64),
}

/// The FFmpeg programs to run: `CLIPDEX_FFMPEG` and `CLIPDEX_FFPROBE` when set, else `ffmpeg`
/// and `ffprobe` from `PATH`.
#[derive(Debug, Clone)]
pub struct Tools {
    pub ffmpeg: PathBuf,
    pub ffprobe: PathBuf,
}

impl Tools {
    pub fn from_env() -> Self {
        let tool = |var: &str, name: &str| std::env::var_os(var).map(PathBuf::from).unwrap_or_else(|| name.into());
        Tools { ffmpeg: tool("CLIPDEX_FFMPEG", "ffmpeg"), ffprobe: tool("CLIPDEX_FFPROBE", "ffprobe") }
    }
}

/// What `ffprobe` says of a video.
#[derive(Debug, Clone, PartialEq)]
pub struct VideoInfo {
    /// Seconds.
    pub duration: f64,
    /// The upright frame's size (rotation applied), in pixels.
    pub width: u32,
    pub height: u32,
    /// The video stream's codec, as FFmpeg names it (`h264`, `hevc`, `vp9`, `av1`, …).
    pub codec: String,
    /// Degrees the player turns the stored frames by (0, ±90, 180).
    pub rotation: i32,
    /// The container's creation time, Unix seconds, when it records one.
    pub created: Option<i64>,
    /// The first timestamp, seconds: frame times are counted from it.
    start: f64,
}

/// How a video is sampled.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SampleOptions {
    /// At most this many seconds between two sampled frames.
    pub interval: f64,
    /// At most this many frames per video; a long video's interval widens to keep within it.
    pub max_frames: usize,
    /// Frames are scaled down to fit this many pixels on their longer side.
    pub max_side: u32,
    /// FFmpeg's scene-change score (0–1) above which a frame is sampled too.
    pub scene: f64,
    /// FFmpeg is stopped when it produces nothing for this long.
    pub stall: Duration,
    /// Videos longer than this many seconds are decoded keyframes only: decoding every frame of
    /// a 10-hour video would take over an hour on two cores, and only a few hundred are kept.
    pub keyframes_after: f64,
}

impl Default for SampleOptions {
    fn default() -> Self {
        SampleOptions {
            interval: 2.0,
            max_frames: 300,
            max_side: 448,
            scene: 0.3,
            stall: Duration::from_secs(60),
            keyframes_after: 600.0,
        }
    }
}

/// A sampled frame: its time (seconds from the start) and its upright, scaled pixels.
#[derive(Debug, Clone)]
pub struct Frame {
    pub time: f64,
    pub image: RgbImage,
}

/// Runs `program before… path after…` with its output piped.
fn spawn(program: &Path, before: &[&str], path: &Path, after: &[&str]) -> Result<Child, VideoProblem> {
    Command::new(program)
        .args(before)
        .arg(path)
        .args(after)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| VideoProblem::NoFfmpeg(program.display().to_string(), e.to_string()))
}

/// The last lines FFmpeg wrote to stderr, as one reason.
fn reason(stderr: &[String]) -> String {
    let lines: Vec<&str> = stderr.iter().map(|l| l.trim()).filter(|l| !l.is_empty()).collect();
    let tail = &lines[lines.len().saturating_sub(2)..];
    if tail.is_empty() { "no output".to_string() } else { tail.join("; ") }
}

/// Runs a child to its end, killing it when it outlives `limit`; returns stdout and stderr.
fn run_bounded(mut child: Child, limit: Duration) -> Result<(Vec<u8>, Vec<String>, bool), VideoProblem> {
    let mut stdout = child.stdout.take().expect("piped");
    let stderr = child.stderr.take().expect("piped");
    let out = std::thread::spawn(move || {
        let mut bytes = Vec::new();
        let _ = stdout.read_to_end(&mut bytes);
        bytes
    });
    let err = std::thread::spawn(move || BufReader::new(stderr).lines().map_while(Result::ok).collect::<Vec<_>>());
    let started = std::time::Instant::now();
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break status,
            Ok(None) if started.elapsed() > limit => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(VideoProblem::Stalled(limit.as_secs()));
            }
            Ok(None) => std::thread::sleep(Duration::from_millis(10)),
            Err(e) => return Err(VideoProblem::Unreadable(e.to_string())),
        }
    };
    Ok((out.join().unwrap_or_default(), err.join().unwrap_or_default(), status.success()))
}

/// What a video is, from `ffprobe`.
pub fn probe(tools: &Tools, path: &Path, limit: Duration) -> Result<VideoInfo, VideoProblem> {
    let child =
        spawn(&tools.ffprobe, &["-v", "error", "-print_format", "json", "-show_format", "-show_streams"], path, &[])?;
    let (out, err, ok) = run_bounded(child, limit)?;
    if !ok {
        return Err(VideoProblem::Unreadable(reason(&err)));
    }
    let doc: serde_json::Value =
        serde_json::from_slice(&out).map_err(|e| VideoProblem::Unreadable(format!("ffprobe's answer: {e}")))?;
    let streams = doc["streams"].as_array().cloned().unwrap_or_default();
    // The first video stream that is not a cover picture.
    let video = streams
        .iter()
        .find(|s| s["codec_type"] == "video" && s["disposition"]["attached_pic"] != 1)
        .ok_or(VideoProblem::NoVideoStream)?;
    let number = |v: &serde_json::Value| v.as_f64().or_else(|| v.as_str().and_then(|s| s.parse().ok()));
    let (w, h) = (video["width"].as_u64().unwrap_or(0) as u32, video["height"].as_u64().unwrap_or(0) as u32);
    if w == 0 || h == 0 {
        return Err(VideoProblem::Unreadable("the video stream has no frame size".into()));
    }
    let rotation = video["side_data_list"]
        .as_array()
        .and_then(|list| list.iter().find_map(|d| d["rotation"].as_i64()))
        .or_else(|| video["tags"]["rotate"].as_str().and_then(|r| r.parse().ok()))
        .unwrap_or(0) as i32;
    let (width, height) = if rotation.rem_euclid(180) == 90 { (h, w) } else { (w, h) };
    let duration = number(&doc["format"]["duration"]).or_else(|| number(&video["duration"])).unwrap_or(0.0);
    let start = number(&doc["format"]["start_time"]).or_else(|| number(&video["start_time"])).unwrap_or(0.0);
    let created = doc["format"]["tags"]["creation_time"]
        .as_str()
        .or_else(|| video["tags"]["creation_time"].as_str())
        .and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok())
        .map(|t| t.timestamp());
    Ok(VideoInfo {
        duration,
        width,
        height,
        codec: video["codec_name"].as_str().unwrap_or("unknown").to_string(),
        rotation,
        created,
        start,
    })
}

/// The size a frame of `info` is scaled to: the upright size, scaled down to fit `max_side`.
pub fn scaled_size(info: &VideoInfo, max_side: u32) -> (u32, u32) {
    let longer = info.width.max(info.height);
    if longer <= max_side {
        return (info.width, info.height);
    }
    let scale = f64::from(max_side) / f64::from(longer);
    let side = |v: u32| ((f64::from(v) * scale).round() as u32).max(1);
    (side(info.width), side(info.height))
}

/// The seconds between interval samples for a video of `duration`: `interval`, widened so that
/// they number at most `max_frames`.
pub fn sampling_interval(duration: f64, options: &SampleOptions) -> f64 {
    options.interval.max(duration / options.max_frames.max(1) as f64)
}

/// Samples the frames of a video: the first, then one whenever `interval` seconds passed since
/// the last sampled one or the scene changes, at most `max_frames` (among its keyframes only,
/// for a video longer than `keyframes_after`); each is handed to
/// `on_frame` as it is decoded (which returns `false` to stop early). Returns how many were.
pub fn sample(
    tools: &Tools,
    path: &Path,
    info: &VideoInfo,
    options: &SampleOptions,
    on_frame: &mut dyn FnMut(Frame) -> bool,
) -> Result<usize, VideoProblem> {
    let (w, h) = scaled_size(info, options.max_side);
    let interval = sampling_interval(info.duration, options);
    // Selected first, then scaled: scaling every decoded 1080p frame cost more than the
    // decoding itself (2.5 s against 1.5 s for 20 s of 1080p H.264 here).
    let filter = format!(
        "select='eq(n\\,0)+gte(t-prev_selected_t\\,{interval})+gt(scene\\,{})',scale={w}:{h},showinfo",
        options.scene
    );
    let mut before = vec!["-nostdin", "-hide_banner", "-nostats", "-loglevel", "info"];
    if info.duration > options.keyframes_after {
        // A long video: only its keyframes are decoded (a few seconds apart in camera files),
        // and sampled among as any frames are.
        before.extend(["-skip_frame", "nokey"]);
    }
    before.push("-i");
    let after = ["-an", "-sn", "-dn", "-vf", &filter, "-fps_mode", "vfr", "-f", "rawvideo", "-pix_fmt", "rgb24", "-"];
    let mut child = spawn(&tools.ffmpeg, &before, path, &after)?;
    let mut stdout = child.stdout.take().expect("piped");
    let stderr = child.stderr.take().expect("piped");

    // stderr: the sampled frames' times (showinfo) and, at the end, FFmpeg's complaints.
    let (time_tx, times) = mpsc::channel::<f64>();
    let errors = std::thread::spawn(move || {
        let mut other = Vec::new();
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if line.contains("Parsed_showinfo") {
                if let Some(t) = line.split("pts_time:").nth(1).and_then(|r| r.split_whitespace().next()) {
                    let _ = time_tx.send(t.parse().unwrap_or(f64::NAN));
                }
            } else {
                other.push(line);
                if other.len() > 50 {
                    other.remove(0);
                }
            }
        }
        other
    });
    // stdout: the frames' bytes.
    let (frame_tx, frames) = mpsc::channel::<Vec<u8>>();
    let size = (w * h * 3) as usize;
    let reader = std::thread::spawn(move || {
        loop {
            let mut buf = vec![0u8; size];
            if stdout.read_exact(&mut buf).is_err() || frame_tx.send(buf).is_err() {
                break;
            }
        }
    });

    let mut count = 0;
    let outcome = loop {
        match frames.recv_timeout(options.stall) {
            Ok(bytes) => {
                let pts = times.recv_timeout(options.stall).unwrap_or(f64::NAN);
                let time = if pts.is_finite() { (pts - info.start).max(0.0) } else { count as f64 * interval };
                let image = RgbImage::from_raw(w, h, bytes).expect("w × h × 3 bytes");
                count += 1;
                if !on_frame(Frame { time, image }) || count >= options.max_frames {
                    break Ok(());
                }
            }
            Err(mpsc::RecvTimeoutError::Disconnected) => break Ok(()),
            Err(mpsc::RecvTimeoutError::Timeout) => break Err(VideoProblem::Stalled(options.stall.as_secs())),
        }
    };
    let finished = outcome.is_ok() && count < options.max_frames;
    if !finished {
        let _ = child.kill();
    }
    let status = child.wait();
    drop(frames);
    let _ = reader.join();
    let complaints = errors.join().unwrap_or_default();
    outcome?;
    if finished && (count == 0 || !status.is_ok_and(|s| s.success())) {
        // A video whose decoding failed part way keeps the frames it gave; one that gave none
        // cannot be used.
        if count == 0 {
            return Err(VideoProblem::Unreadable(reason(&complaints)));
        }
        tracing::warn!("{}: FFmpeg stopped early: {}", path.display(), reason(&complaints));
    }
    Ok(count)
}

/// The upright frame shown at `time` seconds from the start, scaled to fit `max_side`.
pub fn frame_at(
    tools: &Tools,
    path: &Path,
    info: &VideoInfo,
    time: f64,
    max_side: u32,
    limit: Duration,
) -> Result<RgbImage, VideoProblem> {
    let (w, h) = scaled_size(info, max_side);
    let at = format!("{:.6}", time.clamp(0.0, info.duration.max(0.0)));
    let filter = format!("scale={w}:{h}");
    let before = ["-nostdin", "-hide_banner", "-loglevel", "error", "-ss", &at, "-i"];
    let after = ["-an", "-sn", "-dn", "-vf", &filter, "-frames:v", "1", "-f", "rawvideo", "-pix_fmt", "rgb24", "-"];
    let (out, err, ok) = run_bounded(spawn(&tools.ffmpeg, &before, path, &after)?, limit)?;
    if !ok || out.len() < (w * h * 3) as usize {
        return Err(VideoProblem::Unreadable(reason(&err)));
    }
    Ok(RgbImage::from_raw(w, h, out[..(w * h * 3) as usize].to_vec()).expect("w × h × 3 bytes"))
}
