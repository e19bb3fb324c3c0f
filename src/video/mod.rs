//! Videos through FFmpeg's command-line tools (Debian's `ffmpeg` package): what a video is
//! (`ffprobe`), and the frames that stand for it, sampled at scene changes and at least every
//! few seconds, decoded upright and scaled down by `ffmpeg` into raw RGB read from its output.
//!
//! The tools run as subprocesses rather than through libav* bindings: nothing to build or link
//! (the system's FFmpeg decodes whatever codecs it was built with: H.264, HEVC, VP9, AV1), a
//! crash or hang in a decoder cannot take the library down, and a stalled decode is killed.
//! The indexer's use of them is in [`crate::indexer::videos`].
//!
//! FFmpeg only ever reads the file it is given, as the container clipdex recognised in it
//! ([`container`]): the demuxer is named, local files are the only protocol, so a playlist
//! or concat list with a video's name cannot make it read other files. A frame reaches
//! clipdex scaled down in FFmpeg's filter graph to what was asked and within the pixel
//! budget (`--max-pixels`), however large the video's frames are.

use std::ffi::{OsStr, OsString};
use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use image::RgbImage;

pub mod container;

pub use container::{Container, ContainerProblem};

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
    /// The file is not handed to FFmpeg: not a container clipdex reads, or longer than its
    /// structure says.
    #[error("{0}")]
    Container(ContainerProblem),
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
    /// Where it was recorded (latitude, longitude in degrees), when the container says: the
    /// ISO 6709 string of QuickTime's `©xyz` or `com.apple.quicktime.location.ISO6709`, or of
    /// an MP4's `location` (as FFmpeg reads and writes them).
    pub location: Option<(f64, f64)>,
    /// The first timestamp, seconds: frame times are counted from it.
    start: f64,
    /// Its container, whose demuxer FFmpeg is told to use.
    container: Container,
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
    /// And to hold at most this many pixels (`--max-pixels`).
    pub max_pixels: u64,
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
            max_pixels: crate::photo::DEFAULT_MAX_PIXELS,
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

/// How large a decoded frame is asked to be; [`scaled_size`] also keeps it within the pixel
/// budget whatever is asked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FrameSize {
    /// Scaled down to fit this many pixels on its longer side.
    Fit(u32),
    /// Scaled down as far as its shorter side stays at least this many pixels (what a model
    /// resizes from, or a perceptual hash).
    Cover(u32),
    /// As large as it is stored.
    Full,
}

/// FFmpeg frame decodes (`frame_at`) running at once in this process, at most. Each costs a
/// decoder at the video's full size (a 16000 × 16000 H.264 frame takes FFmpeg about 0.7 GB),
/// so a burst of thumbnail requests waits its turn instead of starting one FFmpeg each.
pub const FRAME_DECODES_AT_ONCE: usize = 2;

/// Above this many pixels a video's decoder runs one thread: each frame thread holds frames
/// of its own, and a frame this large is hundreds of MB.
const ONE_THREAD_PIXELS: u64 = 3840 * 2160;

/// `ffprobe` runs at once in this process, at most: each is small, but a burst of requests for
/// frames of different moments would otherwise start one each before their decodes queue.
pub const PROBES_AT_ONCE: usize = 4;

/// A count of runs in flight and a condition to wait on.
type Slots = (std::sync::Mutex<usize>, std::sync::Condvar);

/// Decodes of `frame_at` in flight.
static FRAME_DECODES: Slots = (std::sync::Mutex::new(0), std::sync::Condvar::new());
/// Runs of `ffprobe` in flight.
static PROBES: Slots = (std::sync::Mutex::new(0), std::sync::Condvar::new());

/// One of a bounded number of FFmpeg runs ([`FRAME_DECODES_AT_ONCE`], [`PROBES_AT_ONCE`]),
/// held while it runs; the others wait their turn.
struct RunPermit(&'static Slots);

impl RunPermit {
    fn acquire(slots: &'static Slots, at_once: usize) -> Self {
        let (lock, ready) = slots;
        let mut running = lock.lock().unwrap_or_else(|e| e.into_inner());
        while *running >= at_once {
            running = ready.wait(running).unwrap_or_else(|e| e.into_inner());
        }
        *running += 1;
        RunPermit(slots)
    }
}

impl Drop for RunPermit {
    fn drop(&mut self) {
        let (lock, ready) = self.0;
        let mut running = lock.lock().unwrap_or_else(|e| e.into_inner());
        *running -= 1;
        ready.notify_one();
    }
}

/// Runs `program before… input after…` with its output piped.
fn spawn(program: &Path, before: &[&str], input: &OsStr, after: &[&str]) -> Result<Child, VideoProblem> {
    Command::new(program)
        .args(before)
        .arg(input)
        .args(after)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| VideoProblem::NoFfmpeg(program.display().to_string(), e.to_string()))
}

/// The options that open `path` as `container` and nothing else: its demuxer named (FFmpeg
/// guesses none: no playlist, concat list or image sequence), local files the only protocol
/// (`file:` before the path, so no name is read as a URL), and no QuickTime references to
/// other files. They go right before `-i`; the returned input goes after it.
fn input_of(path: &Path, container: Container) -> (Vec<&'static str>, OsString) {
    let mut options = vec!["-f", container.demuxer(), "-protocol_whitelist", "file"];
    if container == Container::Mov {
        options.extend(["-enable_drefs", "0"]);
    }
    let mut input = OsString::from("file:");
    input.push(path.as_os_str());
    (options, input)
}

/// The last lines FFmpeg wrote to stderr, as one reason.
fn reason(stderr: &[String]) -> String {
    let lines: Vec<&str> = stderr.iter().map(|l| l.trim()).filter(|l| !l.is_empty()).collect();
    let tail = &lines[lines.len().saturating_sub(2)..];
    if tail.is_empty() { "no output".to_string() } else { tail.join("; ") }
}

/// Runs a child to its end, killing it when it outlives `limit`; returns stdout and stderr.
fn run_bounded(mut child: Child, limit: Duration) -> Result<(Vec<u8>, Vec<String>, bool), VideoProblem> {
    let (Some(mut stdout), Some(stderr)) = (child.stdout.take(), child.stderr.take()) else {
        return Err(VideoProblem::Unreadable("FFmpeg's output is not piped".into()));
    };
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

/// What a video is: its container recognised and its length checked ([`container`]), then
/// `ffprobe` on it with that container's demuxer. Nothing reads the whole file.
pub fn probe(tools: &Tools, path: &Path, limit: Duration) -> Result<VideoInfo, VideoProblem> {
    let container = container::recognise(path).map_err(VideoProblem::Container)?;
    let (mut before, input) = input_of(path, container);
    before.splice(0..0, ["-v", "error", "-print_format", "json", "-show_format", "-show_streams"]);
    let permit = RunPermit::acquire(&PROBES, PROBES_AT_ONCE);
    let child = spawn(&tools.ffprobe, &before, &input, &[])?;
    let (out, err, ok) = run_bounded(child, limit)?;
    drop(permit);
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
    let side = |v: &serde_json::Value| v.as_u64().and_then(|v| u32::try_from(v).ok()).unwrap_or(0);
    let (w, h) = (side(&video["width"]), side(&video["height"]));
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
    // FFmpeg names `©xyz` `location` (with a language copy, `location-eng`).
    let location = ["com.apple.quicktime.location.ISO6709", "location", "location-eng"]
        .iter()
        .find_map(|key| doc["format"]["tags"][key].as_str().or_else(|| video["tags"][key].as_str()))
        .and_then(parse_iso6709);
    Ok(VideoInfo {
        duration,
        width,
        height,
        codec: video["codec_name"].as_str().unwrap_or("unknown").to_string(),
        rotation,
        created,
        location,
        start,
        container,
    })
}

/// A position written as ISO 6709 (Annex H) says it: latitude then longitude, each signed, in
/// degrees (`+38.7223-009.1393`), degrees and minutes (`+3843.338-00908.358`) or degrees,
/// minutes and seconds (`+384320.3-0090821.5`), told apart by the digits before the point; an
/// altitude and the closing `/` or a `CRS…` suffix may follow. `None` when it is not such a
/// string or lies off the globe (and for 0,0, what recorders write when they had no fix).
pub fn parse_iso6709(text: &str) -> Option<(f64, f64)> {
    let text = text.trim();
    let bytes = text.as_bytes();
    // Signed numbers: the sign of each starts a new one.
    let end = text.find(['/', 'C']).unwrap_or(text.len());
    let mut starts: Vec<usize> = (0..end).filter(|&i| bytes[i] == b'+' || bytes[i] == b'-').collect();
    if starts.len() < 2 || starts[0] != 0 {
        return None;
    }
    starts.push(end);
    let number = |from: usize, to: usize, degree_digits: usize| -> Option<f64> {
        let field = text.get(from..to)?;
        let (sign, digits) = field.split_at(1);
        let int_len = digits.find('.').unwrap_or(digits.len());
        if !digits.bytes().all(|b| b.is_ascii_digit() || b == b'.') || int_len < degree_digits {
            return None;
        }
        let value: f64 = digits.parse().ok()?;
        let degrees = match int_len - degree_digits {
            0 => value,
            2 => {
                let d = (value / 100.0).trunc();
                d + (value - d * 100.0) / 60.0
            }
            4 => {
                let d = (value / 10_000.0).trunc();
                let m = ((value - d * 10_000.0) / 100.0).trunc();
                d + m / 60.0 + (value - d * 10_000.0 - m * 100.0) / 3600.0
            }
            _ => return None,
        };
        Some(if sign == "-" { -degrees } else { degrees })
    };
    let lat = number(starts[0], starts[1], 2)?;
    let lon = number(starts[1], *starts.get(2)?, 3)?;
    let on_globe = (-90.0..=90.0).contains(&lat) && (-180.0..=180.0).contains(&lon);
    (on_globe && (lat, lon) != (0.0, 0.0)).then_some((lat, lon))
}

/// The size a frame of `info` is decoded to: the upright size, scaled down as `size` asks,
/// then further if need be to hold at most `max_pixels` pixels (FFmpeg scales it in its
/// filter graph: no larger frame reaches clipdex).
pub fn scaled_size(info: &VideoInfo, size: FrameSize, max_pixels: u64) -> (u32, u32) {
    let (w, h) = (f64::from(info.width), f64::from(info.height));
    let scale = match size {
        FrameSize::Fit(side) => f64::from(side.max(1)) / w.max(h),
        FrameSize::Cover(side) => f64::from(side.max(1)) / w.min(h),
        FrameSize::Full => 1.0,
    }
    .min(1.0);
    let side = |v: f64, scale: f64, round: fn(f64) -> f64| (round(v * scale) as u32).clamp(1, v as u32);
    let (sw, sh) = (side(w, scale, f64::round), side(h, scale, f64::round));
    if u64::from(sw) * u64::from(sh) <= max_pixels.max(1) {
        return (sw, sh);
    }
    // Rounded down, so the product stays within the budget.
    let scale = (max_pixels.max(1) as f64 / (w * h)).sqrt();
    (side(w, scale, f64::floor), side(h, scale, f64::floor))
}

/// The seconds between interval samples for a video of `duration`: `interval`, widened so that
/// they number at most `max_frames`.
pub fn sampling_interval(duration: f64, options: &SampleOptions) -> f64 {
    options.interval.max(duration / options.max_frames.max(1) as f64)
}

/// An `ffmpeg` decoding a video into raw RGB frames of one size, each with its time as
/// `showinfo` (the filter graph's last filter) reports it. At most two frames wait in the
/// pipe between FFmpeg and the reader, so a slow consumer holds FFmpeg back instead of
/// piling frames up in memory.
struct FrameStream {
    child: Child,
    size: (u32, u32),
    frames: mpsc::Receiver<Vec<u8>>,
    times: mpsc::Receiver<f64>,
    reader: std::thread::JoinHandle<()>,
    errors: std::thread::JoinHandle<Vec<String>>,
}

impl FrameStream {
    /// Starts `ffmpeg [seek…] -i path -vf filter,showinfo` on `info`'s video, frames of `size`.
    fn start(
        tools: &Tools,
        path: &Path,
        info: &VideoInfo,
        seek: &[&str],
        filter: &str,
        size: (u32, u32),
    ) -> Result<Self, VideoProblem> {
        let (opening, input) = input_of(path, info.container);
        let mut before = vec!["-nostdin", "-hide_banner", "-nostats", "-loglevel", "info"];
        if u64::from(info.width) * u64::from(info.height) > ONE_THREAD_PIXELS {
            before.extend(["-threads", "1"]);
        }
        before.extend(seek);
        before.extend(opening);
        before.push("-i");
        let filter = format!("{filter},showinfo");
        let after = [
            "-an",
            "-sn",
            "-dn",
            "-vf",
            &filter,
            "-fps_mode",
            "passthrough",
            "-f",
            "rawvideo",
            "-pix_fmt",
            "rgb24",
            "-",
        ];
        let mut child = spawn(&tools.ffmpeg, &before, &input, &after)?;
        let (Some(mut stdout), Some(stderr)) = (child.stdout.take(), child.stderr.take()) else {
            let _ = child.kill();
            let _ = child.wait();
            return Err(VideoProblem::Unreadable("FFmpeg's output is not piped".into()));
        };
        // stderr: the frames' times (showinfo) and, at the end, FFmpeg's complaints.
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
        let (frame_tx, frames) = mpsc::sync_channel::<Vec<u8>>(1);
        let bytes = size.0 as usize * size.1 as usize * 3;
        let reader = std::thread::spawn(move || {
            loop {
                let mut buf = vec![0u8; bytes];
                if stdout.read_exact(&mut buf).is_err() || frame_tx.send(buf).is_err() {
                    break;
                }
            }
        });
        Ok(FrameStream { child, size, frames, times, reader, errors })
    }

    /// The next frame: its time as FFmpeg gives it (NaN when it gave none) and its pixels;
    /// `None` at the end.
    fn next(&self, stall: Duration) -> Result<Option<(f64, RgbImage)>, VideoProblem> {
        match self.frames.recv_timeout(stall) {
            Ok(bytes) => {
                let pts = self.times.recv_timeout(stall).unwrap_or(f64::NAN);
                let image = RgbImage::from_raw(self.size.0, self.size.1, bytes)
                    .ok_or_else(|| VideoProblem::Unreadable("a frame of the wrong size".into()))?;
                Ok(Some((pts, image)))
            }
            Err(mpsc::RecvTimeoutError::Disconnected) => Ok(None),
            Err(mpsc::RecvTimeoutError::Timeout) => Err(VideoProblem::Stalled(stall.as_secs())),
        }
    }

    /// Waits for FFmpeg (stopping it first when `stop`); whether it succeeded, and its
    /// last complaints.
    fn finish(mut self, stop: bool) -> (bool, Vec<String>) {
        if stop {
            let _ = self.child.kill();
        }
        // The reader stops at its next frame, so FFmpeg never waits on a full pipe.
        drop(self.frames);
        let status = self.child.wait();
        let _ = self.reader.join();
        (status.is_ok_and(|s| s.success()), self.errors.join().unwrap_or_default())
    }
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
    let (w, h) = scaled_size(info, FrameSize::Fit(options.max_side), options.max_pixels);
    let interval = sampling_interval(info.duration, options);
    // Selected first, then scaled: scaling every decoded 1080p frame cost more than the
    // decoding itself (2.5 s against 1.5 s for 20 s of 1080p H.264 here).
    let filter =
        format!("select='eq(n\\,0)+gte(t-prev_selected_t\\,{interval})+gt(scene\\,{})',scale={w}:{h}", options.scene);
    // A long video: only its keyframes are decoded (a few seconds apart in camera files),
    // and sampled among as any frames are.
    let seek: &[&str] = if info.duration > options.keyframes_after { &["-skip_frame", "nokey"] } else { &[] };
    let stream = FrameStream::start(tools, path, info, seek, &filter, (w, h))?;
    let mut count = 0;
    // Whether FFmpeg's output ended (rather than the caller or the frame budget stopping it).
    let outcome = loop {
        match stream.next(options.stall) {
            Ok(Some((pts, image))) => {
                let time = if pts.is_finite() { (pts - info.start).max(0.0) } else { count as f64 * interval };
                count += 1;
                if !on_frame(Frame { time, image }) || count >= options.max_frames {
                    break Ok(false);
                }
            }
            Ok(None) => break Ok(true),
            Err(problem) => break Err(problem),
        }
    };
    let ended = outcome.as_ref().is_ok_and(|&ended| ended);
    let (succeeded, complaints) = stream.finish(!ended);
    outcome?;
    if ended && (count == 0 || !succeeded) {
        // A video whose decoding failed part way keeps the frames it gave; one that gave none
        // cannot be used.
        if count == 0 {
            return Err(VideoProblem::Unreadable(reason(&complaints)));
        }
        tracing::warn!("{}: FFmpeg stopped early: {}", path.display(), reason(&complaints));
    }
    Ok(count)
}

/// The upright frame shown at `time` seconds from the start: the last frame that starts at or
/// before it (the first frame for an earlier time, the last one for a time past it), scaled
/// as `size` asks within `max_pixels` ([`scaled_size`]). At most [`FRAME_DECODES_AT_ONCE`]
/// of these run at once in a process; the others wait.
pub fn frame_at(
    tools: &Tools,
    path: &Path,
    info: &VideoInfo,
    time: f64,
    size: FrameSize,
    max_pixels: u64,
    limit: Duration,
) -> Result<RgbImage, VideoProblem> {
    let (w, h) = scaled_size(info, size, max_pixels);
    let time = if time.is_finite() { time.clamp(0.0, info.duration.max(0.0)) } else { 0.0 };
    // FFmpeg seeks to the keyframe before `time` and keeps the stream's own timestamps; the
    // frames from there are read until one starts after `time`. An accurate seek (FFmpeg's
    // default) gives nothing for a time past the last frame: the end of a clip, or any time
    // but 0 in a one-frame video. The tolerance covers the f32 a sampled frame's time is
    // stored in.
    let at = format!("{time:.6}");
    let seek = ["-noaccurate_seek", "-copyts", "-ss", at.as_str()];
    let tolerance = 1e-3 + time * f64::from(f32::EPSILON);
    let _permit = RunPermit::acquire(&FRAME_DECODES, FRAME_DECODES_AT_ONCE);
    let started = std::time::Instant::now();
    let stream = FrameStream::start(tools, path, info, &seek, &format!("scale={w}:{h}"), (w, h))?;
    let mut shown = None;
    let outcome = loop {
        let left = limit.saturating_sub(started.elapsed());
        match stream.next(left.max(Duration::from_millis(1))) {
            Ok(Some((pts, image))) => {
                let after = pts.is_finite() && pts - info.start > time + tolerance;
                if after && shown.is_some() {
                    break Ok(true);
                }
                shown = Some(image);
                if after || !pts.is_finite() {
                    break Ok(true);
                }
            }
            Ok(None) => break Ok(false),
            Err(VideoProblem::Stalled(_)) => break Err(VideoProblem::Stalled(limit.as_secs())),
            Err(problem) => break Err(problem),
        }
    };
    let stop = outcome.as_ref().is_ok_and(|&stopped| stopped) || outcome.is_err();
    let (_, complaints) = stream.finish(stop);
    outcome?;
    shown.ok_or_else(|| VideoProblem::Unreadable(reason(&complaints)))
}

#[cfg(test)]
mod tests {
    use super::parse_iso6709;

    #[test]
    fn iso6709_positions() {
        let near = |got: Option<(f64, f64)>, want: (f64, f64)| {
            let (lat, lon) = got.unwrap_or_else(|| panic!("no position, want {want:?}"));
            assert!((lat - want.0).abs() < 1e-6 && (lon - want.1).abs() < 1e-6, "{lat},{lon} vs {want:?}");
        };
        near(parse_iso6709("+38.7223-009.1393/"), (38.7223, -9.1393));
        near(parse_iso6709("+38.7223-009.1393+012.500/"), (38.7223, -9.1393));
        near(parse_iso6709("-33.8688+151.2093+000.000CRSWGS_84/"), (-33.8688, 151.2093));
        near(parse_iso6709(" +48.1374+011.5755 "), (48.1374, 11.5755));
        // Degrees and minutes, degrees minutes and seconds.
        near(parse_iso6709("+4808.244+01134.530/"), (48.0 + 8.244 / 60.0, 11.0 + 34.530 / 60.0));
        near(
            parse_iso6709("-225426.4-0431055.2/"),
            (-(22.0 + 54.0 / 60.0 + 26.4 / 3600.0), -(43.0 + 10.0 / 60.0 + 55.2 / 3600.0)),
        );
        for bad in [
            "",
            "/",
            "38.7223-009.1393/",
            "+38.7223/",
            "+98.0+011.0/",
            "+38.7+190.0/",
            "+0.0+000.0/",
            "+3.5+011.0/",
            "+38.7x-009.1/",
        ] {
            assert_eq!(parse_iso6709(bad), None, "{bad:?}");
        }
    }
}
