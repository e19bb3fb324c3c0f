//! Video sampling cost: a 20-second 1080p clip at 30 frames/s (FFmpeg's `testsrc2` pattern,
//! made by FFmpeg here) in H.264 and in HEVC, sampled as indexing will sample it (the first
//! frame, then at least every 2 s and at scene changes, scaled to fit 448 px): seconds per
//! clip, sampled frames, and the cost per minute of video. FFmpeg decodes every frame of the
//! clip to find the ones to keep, so the cost is the decoder's, not the number kept. Then the
//! whole of indexing them (`index_pass`: hashing, probing, sampling, embedding the frames with
//! ViT-B/32 shapes and random weights, storing): seconds per minute of video.
//!
//!     cargo bench --bench video

mod common;

use std::time::{Duration, Instant};

use candle_core::Device;
use clipdex::indexer::{IndexOptions, index_pass};
use clipdex::photo::{DEFAULT_MAX_PIXELS, DecodeOptions};
use clipdex::store::Store;
use clipdex::video::{self, SampleOptions, Tools};

fn main() {
    let tools = Tools::from_env();
    if std::process::Command::new(&tools.ffmpeg).arg("-version").output().is_err() {
        println!("FFmpeg is not installed: nothing to measure (apt install ffmpeg)");
        return;
    }
    let dir = tempfile::tempdir().expect("a temporary folder");
    let clips = dir.path().join("clips");
    std::fs::create_dir_all(&clips).expect("a clip folder");
    let seconds = 20.0;
    for (codec, preset, name) in [("libx264", "veryfast", "H.264"), ("libx265", "ultrafast", "HEVC")] {
        let clip = clips.join(format!("{codec}.mp4"));
        let made = std::process::Command::new(&tools.ffmpeg)
            .args(["-nostdin", "-v", "error", "-y", "-f", "lavfi", "-i"])
            .arg(format!("testsrc2=size=1920x1080:rate=30:duration={seconds}"))
            .args(["-c:v", codec, "-preset", preset, "-pix_fmt", "yuv420p", "-x265-params", "log-level=error"])
            .arg(&clip)
            .status()
            .expect("ffmpeg runs");
        assert!(made.success(), "encoding the {name} clip");
        let info = video::probe(&tools, &clip, Duration::from_secs(30)).expect("probe");
        let mut runs = Vec::new();
        let mut frames = 0;
        for _ in 0..3 {
            let started = Instant::now();
            frames = video::sample(&tools, &clip, &info, &SampleOptions::default(), &mut |_| true).expect("sample");
            runs.push(started.elapsed().as_secs_f64());
        }
        runs.sort_by(f64::total_cmp);
        let median = runs[1];
        println!(
            "{name} 1920×1080, {seconds} s at 30 frames/s: {frames} frames sampled in {median:.2} s (median of 3) = \
             {:.0} decoded frames/s; {:.1} s per minute of video",
            seconds * 30.0 / median,
            median * 60.0 / seconds
        );
    }

    // A long video's way, on a minute of 1080p H.264 with a keyframe every second: sampled among
    // its keyframes against decoding every frame.
    let gop = clips.join("gop1.mp4.tmp");
    let made = std::process::Command::new(&tools.ffmpeg)
        .args(["-nostdin", "-v", "error", "-y", "-f", "lavfi", "-i", "testsrc2=size=1920x1080:rate=30:duration=60"])
        .args(["-c:v", "libx264", "-preset", "ultrafast", "-g", "30", "-pix_fmt", "yuv420p", "-f", "mp4"])
        .arg(&gop)
        .status()
        .expect("ffmpeg runs");
    assert!(made.success(), "encoding the keyframe clip");
    let info = video::probe(&tools, &gop, Duration::from_secs(30)).expect("probe");
    for (name, keyframes_after) in [("every frame", f64::INFINITY), ("keyframes only", 0.0)] {
        let options = SampleOptions { keyframes_after, ..Default::default() };
        let started = Instant::now();
        let n = video::sample(&tools, &gop, &info, &options, &mut |_| true).expect("sample");
        println!(
            "a minute of 1080p, a keyframe a second, decoding {name}: {n} frames in {:.2} s",
            started.elapsed().as_secs_f64()
        );
    }
    std::fs::remove_file(&gop).expect("the keyframe clip removed");

    // Ranking the frames of a library's videos for one query (exact scan, best frame per video).
    for (videos, per_video) in [(100, 100), (1_000, 100), (1_000, 300)] {
        let mut rng = 0x9e37_79b9_7f4a_7c15u64;
        let mut unit = move || {
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            (rng >> 40) as f32 / (1u64 << 24) as f32 - 0.5
        };
        let frames: Vec<clipdex::Result<(u64, clipdex::store::FrameVector)>> = (0..videos as u64)
            .flat_map(|v| (0..per_video).map(move |f| (v + 1, f)))
            .map(|(id, f)| {
                Ok((id, clipdex::store::FrameVector { time: f as f32, vector: (0..512).map(|_| unit()).collect() }))
            })
            .collect();
        let index = clipdex::ann::FrameIndex::from_frames(frames.into_iter()).expect("an index");
        let query: Vec<f32> = (0..512).map(|_| unit()).collect();
        let seconds = common::median_time(21, || {
            std::hint::black_box(index.top_videos(&query));
        });
        println!(
            "ranking {} frames of {videos} videos (512-d) for one query: {:.2} ms",
            index.len(),
            seconds.as_secs_f64() * 1e3
        );
    }

    // Indexing them end to end, at the precision CLIPDEX_PRECISION names.
    let clip = common::random_vit_b32(&Device::Cpu).expect("the model");
    let mut runs = Vec::new();
    let mut report = Default::default();
    for run in 0..3 {
        let store = Store::open(dir.path().join(format!("db{run}"))).expect("a library");
        store.add_root(&std::fs::canonicalize(&clips).unwrap()).expect("a root");
        let options = IndexOptions {
            decode: DecodeOptions { max_pixels: DEFAULT_MAX_PIXELS, min_side: Some(224) },
            batch_size: 32,
            prune: false,
            video: SampleOptions::default(),
        };
        let started = Instant::now();
        report = index_pass(&store, &clip, &options, &|_, _| {}).expect("indexing");
        runs.push(started.elapsed().as_secs_f64());
    }
    runs.sort_by(f64::total_cmp);
    let minutes = 2.0 * seconds / 60.0;
    println!(
        "indexing both clips ({:.1} min of 1080p video, {} frames embedded, ViT-B/32 {}): {:.2} s (median of 3) = \
         {:.1} s per minute of video",
        minutes,
        report.frames,
        clip.precision(),
        runs[1],
        runs[1] / minutes
    );
}
