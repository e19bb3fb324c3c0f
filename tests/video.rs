//! Videos through FFmpeg: clips made by FFmpeg itself (its `testsrc` pattern, colour bars, a cut
//! between two fixture photos at a known time), in H.264 and HEVC, with and without rotation
//! metadata, and broken files. Sampling must give the specified times, and each sampled frame
//! must be the pixels FFmpeg's own command line decodes at that time. Then the library: videos
//! indexed beside photos, searches that find the moment, re-indexing, and FFmpeg missing.
//!
//! FFmpeg comes from Debian's `ffmpeg` package (`.ci/run` installs it). Without it these tests
//! say so and pass, except in CI (`CI` set, or `CLIPDEX_FFMPEG_TESTS=require`), where they fail.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use clipdex::video::{self, ContainerProblem, FrameSize, SampleOptions, Tools, VideoProblem};
use common::video::{cut_between, ffmpeg, have_ffmpeg};

fn fixture_image(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/images").join(name)
}

/// FFmpeg's own decoding of the frame at `t`, scaled to `w`×`h`, as raw RGB.
fn ffmpeg_frame(path: &Path, t: f64, w: u32, h: u32) -> Vec<u8> {
    let out = Command::new("ffmpeg")
        .args(["-nostdin", "-v", "error", "-ss", &format!("{t}"), "-i"])
        .arg(path)
        .args(["-vf", &format!("scale={w}:{h}"), "-frames:v", "1", "-f", "rawvideo", "-pix_fmt", "rgb24", "-"])
        .output()
        .unwrap();
    assert!(out.status.success());
    out.stdout
}

/// A `seconds`-long clip of FFmpeg's test pattern at 25 frames/s.
fn test_pattern(dir: &Path, name: &str, seconds: u32, codec: &str) -> PathBuf {
    let path = dir.join(name);
    let source = format!("testsrc=duration={seconds}:size=320x240:rate=25");
    ffmpeg(&["-f", "lavfi", "-i", &source, "-c:v", codec, "-pix_fmt", "yuv420p", path.to_str().unwrap()]);
    path
}

fn sampled(path: &Path, options: &SampleOptions) -> (video::VideoInfo, Vec<video::Frame>) {
    let tools = Tools::from_env();
    let info = video::probe(&tools, path, Duration::from_secs(30)).unwrap();
    let mut frames = Vec::new();
    let n = video::sample(&tools, path, &info, options, &mut |f| {
        frames.push(f);
        true
    })
    .unwrap();
    assert_eq!(n, frames.len());
    (info, frames)
}

fn times(frames: &[video::Frame]) -> Vec<f64> {
    frames.iter().map(|f| (f.time * 1000.0).round() / 1000.0).collect()
}

#[test]
fn frames_are_sampled_every_interval_and_are_ffmpegs_own_pixels() {
    if !have_ffmpeg() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    for (codec, name, codec_name) in [("libx264", "h264.mp4", "h264"), ("libx265", "hevc.mp4", "hevc")] {
        let clip = test_pattern(dir.path(), name, 7, codec);
        let (info, frames) = sampled(&clip, &SampleOptions::default());
        assert_eq!(info.codec, codec_name);
        assert!((info.duration - 7.0).abs() < 0.05, "{info:?}");
        assert_eq!((info.width, info.height, info.rotation), (320, 240, 0));
        assert_eq!(times(&frames), [0.0, 2.0, 4.0, 6.0], "{codec}");
        for f in &frames {
            assert_eq!(f.image.dimensions(), (320, 240));
            assert!(f.image.as_raw() == &ffmpeg_frame(&clip, f.time, 320, 240), "{codec} at {} s", f.time);
        }
        // Scaled down to fit, and the frame at a time is the one shown then.
        let small = SampleOptions { max_side: 160, ..Default::default() };
        let (_, frames) = sampled(&clip, &small);
        assert_eq!(frames[1].image.dimensions(), (160, 120));
        assert!(frames[1].image.as_raw() == &ffmpeg_frame(&clip, 2.0, 160, 120));
        let at = video::frame_at(
            &Tools::from_env(),
            &clip,
            &info,
            2.0,
            FrameSize::Fit(160),
            u64::MAX,
            Duration::from_secs(30),
        )
        .unwrap();
        assert!(at.as_raw() == frames[1].image.as_raw(), "frame_at(2 s) is the sampled frame at 2 s");
    }
}

#[test]
fn colour_bars_in_vp9_are_sampled_and_decoded_as_ffmpeg_decodes_them() {
    if !have_ffmpeg() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let clip = dir.path().join("bars.webm");
    let source = "smptebars=duration=5:size=640x360:rate=30";
    ffmpeg(&["-f", "lavfi", "-i", source, "-c:v", "libvpx-vp9", "-b:v", "200k", clip.to_str().unwrap()]);
    let (info, frames) = sampled(&clip, &SampleOptions::default());
    assert_eq!((info.codec.as_str(), info.width, info.height), ("vp9", 640, 360));
    assert_eq!(times(&frames), [0.0, 2.0, 4.0]);
    for f in &frames {
        assert_eq!(f.image.dimensions(), (448, 252), "scaled to fit 448 px");
        assert!(f.image.as_raw() == &ffmpeg_frame(&clip, f.time, 448, 252), "at {} s", f.time);
    }
}

#[test]
fn a_cut_between_two_photos_is_sampled_when_it_happens() {
    if !have_ffmpeg() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let clip = dir.path().join("cut.mp4");
    let (a, b) = (fixture_image("astronaut.jpg"), fixture_image("coffee.png"));
    cut_between(&a, &b, &clip);
    let (_, frames) = sampled(&clip, &SampleOptions::default());
    // Every 2 s, and at the cut (3 s), from which the 2 s count again.
    assert_eq!(times(&frames), [0.0, 2.0, 3.0, 5.0]);
    // The frame at the cut shows the second photo.
    let photo = |p: &Path| image::open(p).unwrap().resize_exact(320, 240, image::imageops::Triangle).to_rgb8();
    let distance = |x: &image::RgbImage, y: &image::RgbImage| -> f64 {
        x.as_raw().iter().zip(y.as_raw()).map(|(p, q)| (f64::from(*p) - f64::from(*q)).abs()).sum::<f64>()
    };
    let (pa, pb) = (photo(&a), photo(&b));
    assert!(distance(&frames[1].image, &pa) < distance(&frames[1].image, &pb), "2 s: the first photo");
    assert!(distance(&frames[2].image, &pb) < distance(&frames[2].image, &pa), "3 s: the second photo");
}

#[test]
fn rotated_videos_are_sampled_upright() {
    if !have_ffmpeg() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let plain = test_pattern(dir.path(), "plain.mp4", 3, "libx264");
    let rotated = dir.path().join("rotated.mp4");
    ffmpeg(&["-i", plain.to_str().unwrap(), "-c", "copy", "-metadata:s:v:0", "rotate=90", rotated.to_str().unwrap()]);
    let (info, frames) = sampled(&rotated, &SampleOptions::default());
    assert_eq!(info.rotation.abs(), 90);
    assert_eq!((info.width, info.height), (240, 320), "upright size");
    assert_eq!(times(&frames), [0.0, 2.0]);
    for f in &frames {
        assert_eq!(f.image.dimensions(), (240, 320));
        // FFmpeg's command line turns it upright too.
        assert!(f.image.as_raw() == &ffmpeg_frame(&rotated, f.time, 240, 320), "at {} s", f.time);
    }
    // Turned, not just reshaped: the stored frame rotated by a quarter turn one way or the other.
    let (_, upright) = sampled(&plain, &SampleOptions::default());
    let turned = [image::imageops::rotate90(&upright[0].image), image::imageops::rotate270(&upright[0].image)];
    let close = |x: &image::RgbImage, y: &image::RgbImage| {
        x.as_raw().iter().zip(y.as_raw()).map(|(p, q)| u32::from(p.abs_diff(*q))).sum::<u32>()
            < x.as_raw().len() as u32 * 2
    };
    assert!(turned.iter().any(|t| close(t, &frames[0].image)));
}

#[test]
fn a_long_video_is_sampled_within_the_frame_budget() {
    if !have_ffmpeg() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let clip = test_pattern(dir.path(), "long.mp4", 20, "libx264");
    let options = SampleOptions { max_frames: 4, ..Default::default() };
    assert!((video::sampling_interval(20.0, &options) - 5.0).abs() < 1e-9);
    let (_, frames) = sampled(&clip, &options);
    assert_eq!(times(&frames), [0.0, 5.0, 10.0, 15.0]);
    // A caller may stop early.
    let tools = Tools::from_env();
    let info = video::probe(&tools, &clip, Duration::from_secs(30)).unwrap();
    let mut seen = 0;
    let n = video::sample(&tools, &clip, &info, &SampleOptions::default(), &mut |_| {
        seen += 1;
        seen < 2
    })
    .unwrap();
    assert_eq!((n, seen), (2, 2));
}

#[test]
fn a_video_longer_than_the_threshold_is_decoded_keyframes_only() {
    if !have_ffmpeg() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    // A keyframe every 3 s (75 frames at 25 frames/s), none at scene cuts.
    let clip = dir.path().join("gop3.mp4");
    let source = "testsrc=duration=10:size=320x240:rate=25";
    ffmpeg(
        &["-f", "lavfi", "-i", source, "-c:v", "libx264", "-g", "75", "-sc_threshold", "0", "-pix_fmt", "yuv420p"]
            .into_iter()
            .chain([clip.to_str().unwrap()])
            .collect::<Vec<_>>(),
    );
    // Short enough: every frame is decoded, sampled every 2 s.
    let (_, frames) = sampled(&clip, &SampleOptions::default());
    assert_eq!(times(&frames), [0.0, 2.0, 4.0, 6.0, 8.0]);
    // Past the threshold: only keyframes, so at least 2 s apart means the next keyframe.
    let long = SampleOptions { keyframes_after: 5.0, ..Default::default() };
    let (_, frames) = sampled(&clip, &long);
    assert_eq!(times(&frames), [0.0, 3.0, 6.0, 9.0]);
    for f in &frames {
        assert!(f.image.as_raw() == &ffmpeg_frame(&clip, f.time, 320, 240), "at {} s", f.time);
    }
}

#[test]
fn broken_files_and_missing_tools_are_clear_problems() {
    if !have_ffmpeg() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let tools = Tools::from_env();
    let limit = Duration::from_secs(30);
    let good = test_pattern(dir.path(), "good.mp4", 3, "libx264");
    let bytes = std::fs::read(&good).unwrap();

    let truncated = dir.path().join("truncated.mp4");
    std::fs::write(&truncated, &bytes[..bytes.len() / 3]).unwrap();
    let empty = dir.path().join("empty.mp4");
    std::fs::write(&empty, b"").unwrap();
    let text = dir.path().join("notes.mov");
    std::fs::write(&text, b"this is not a video at all\n").unwrap();
    for path in [&empty, &text] {
        // Not handed to FFmpeg at all: no container clipdex reads.
        let problem = video::probe(&tools, path, limit).unwrap_err();
        assert_eq!(problem, VideoProblem::Container(ContainerProblem::Unknown), "{}", path.display());
    }
    // A truncated file is either refused or gives the frames before the cut, never a hang.
    match video::probe(&tools, &truncated, limit) {
        Err(VideoProblem::Unreadable(_)) => {}
        Ok(info) => match video::sample(&tools, &truncated, &info, &SampleOptions::default(), &mut |_| true) {
            Ok(n) => assert!(n <= 2, "{n} frames from a third of a 3-s clip"),
            Err(problem) => assert!(matches!(problem, VideoProblem::Unreadable(_)), "{problem}"),
        },
        Err(problem) => panic!("{problem}"),
    }

    let audio = dir.path().join("audio.m4a");
    ffmpeg(&["-f", "lavfi", "-i", "sine=frequency=440:duration=2", "-c:a", "aac", audio.to_str().unwrap()]);
    assert_eq!(video::probe(&tools, &audio, limit).unwrap_err(), VideoProblem::NoVideoStream);

    let missing = Tools { ffmpeg: "/no/such/ffmpeg".into(), ffprobe: "/no/such/ffprobe".into() };
    let problem = video::probe(&missing, &good, limit).unwrap_err();
    assert!(problem.to_string().contains("apt install ffmpeg"), "{problem}");

    // An FFmpeg that hangs is stopped.
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let hang = dir.path().join("hang.sh");
        std::fs::write(&hang, "#!/bin/sh\nexec sleep 30\n").unwrap();
        std::fs::set_permissions(&hang, std::fs::Permissions::from_mode(0o755)).unwrap();
        let stuck = Tools { ffmpeg: hang.clone(), ffprobe: hang };
        let started = std::time::Instant::now();
        assert_eq!(video::probe(&stuck, &good, Duration::from_secs(1)).unwrap_err(), VideoProblem::Stalled(1));
        let info = video::probe(&tools, &good, limit).unwrap();
        let options = SampleOptions { stall: Duration::from_secs(1), ..Default::default() };
        let problem = video::sample(&stuck, &good, &info, &options, &mut |_| true).unwrap_err();
        assert_eq!(problem, VideoProblem::Stalled(1));
        assert!(started.elapsed() < Duration::from_secs(20), "the hung processes were not waited for");
    }
}

/// The tiny CLIP fixture whose random weights still tell the two photos of the cut apart.
fn model() -> PathBuf {
    common::fixtures().join("clip-tiny-p16")
}

fn results(out: std::process::Output) -> Vec<serde_json::Value> {
    common::ok_json(out)["results"].as_array().unwrap().clone()
}

#[test]
fn videos_are_indexed_beside_photos_and_searches_find_the_moment() {
    if !have_ffmpeg() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let (db, lib) = (dir.path().join("db"), dir.path().join("photos"));
    std::fs::create_dir(&lib).unwrap();
    let (astronaut, coffee) = (fixture_image("astronaut.jpg"), fixture_image("coffee.png"));
    cut_between(&astronaut, &coffee, &lib.join("cut.mp4"));
    std::fs::copy(lib.join("cut.mp4"), lib.join("copy.MOV")).unwrap();
    // HEVC, turned a quarter by its metadata.
    let pattern = test_pattern(dir.path(), "pattern.mp4", 5, "libx265");
    let turned = lib.join("turned.mov");
    ffmpeg(&["-i", pattern.to_str().unwrap(), "-c", "copy", "-metadata:s:v:0", "rotate=90", turned.to_str().unwrap()]);
    std::fs::copy(fixture_image("chelsea_exif3.jpg"), lib.join("cat.jpg")).unwrap();
    let bytes = std::fs::read(lib.join("cut.mp4")).unwrap();
    std::fs::write(lib.join("broken.mp4"), &bytes[..4000]).unwrap();
    let audio = lib.join("audio.mp4");
    ffmpeg(&["-f", "lavfi", "-i", "sine=frequency=440:duration=2", "-c:a", "aac", audio.to_str().unwrap()]);

    let run = |args: &[&str]| common::clipdex_on(&db, model(), args);
    assert!(run(&["add", lib.to_str().unwrap()]).status.success());
    let report = common::ok_json(run(&["index", "--json"]));
    // cut (0, 2, 3, 5 s) and turned (0, 2, 4 s): 7 frames; the copy linked, not decoded again.
    assert_eq!(
        (&report["embedded"], &report["videos"], &report["frames"], &report["linked"], &report["failed"]),
        (&3.into(), &2.into(), &7.into(), &1.into(), &2.into()),
        "{report}"
    );
    let failures = common::ok_json(run(&["failures", "--json"]));
    let reason = |name: &str| {
        failures["failures"].as_array().unwrap().iter().find(|f| f["path"].as_str().unwrap().ends_with(name)).unwrap()
            ["reason"]
            .as_str()
            .unwrap()
            .to_string()
    };
    assert_eq!(reason("audio.mp4"), "no video stream in it");
    assert!(reason("broken.mp4").starts_with("FFmpeg cannot read it"), "{}", reason("broken.mp4"));
    let stats = common::ok_json(run(&["stats", "--json"]));
    assert_eq!((&stats["videos"], &stats["frames"]), (&2.into(), &7.into()), "{stats}");

    // Each photo of the cut finds the clip at the moment it shows (± one sampling interval).
    for (photo, shown_at) in [(&astronaut, 0.0), (&coffee, 3.0)] {
        let hits = results(run(&["similar", photo.to_str().unwrap(), "--kind", "video", "--json"]));
        let best = &hits[0];
        assert!(best["path"].as_str().unwrap().ends_with("copy.MOV"), "{best}");
        assert_eq!(best["kind"], "video");
        assert!((best["duration"].as_f64().unwrap() - 6.0).abs() < 0.1, "{best}");
        let time = best["time"].as_f64().unwrap();
        assert!((time - shown_at).abs() <= 2.0, "{} found at {time} s, shown at {shown_at} s", photo.display());
        assert!(hits.iter().all(|h| h["kind"] == "video"));
        assert_eq!(hits.len(), 2, "each video once: {hits:?}");
    }
    let photos = results(run(&["similar", coffee.to_str().unwrap(), "--kind", "photo", "--json"]));
    assert_eq!(photos.len(), 1);
    assert_eq!((&photos[0]["kind"], photos[0].get("time")), (&"photo".into(), None));
    let all = results(run(&["similar", coffee.to_str().unwrap(), "--json"]));
    assert_eq!(all.len(), 3, "{all:?}");
    let scores: Vec<f64> = all.iter().map(|h| h["score"].as_f64().unwrap()).collect();
    assert!(scores.windows(2).all(|w| w[0] >= w[1]), "merged by score: {scores:?}");
    // Human output shows the moment.
    let text = String::from_utf8(run(&["similar", coffee.to_str().unwrap(), "--kind", "video"]).stdout).unwrap();
    assert!(text.lines().next().unwrap().contains("copy.MOV  @ 0:0"), "{text}");

    // The video's record, and "more like this" from a video: the mean of its frames.
    let cut = results(run(&["similar", coffee.to_str().unwrap(), "--kind", "video", "--json"]))[0]["id"].clone();
    let shown = common::ok_json(run(&["show", &cut.to_string(), "--json"]));
    assert_eq!(shown["video"]["codec"], "h264", "{shown}");
    let like = results(run(&["similar", lib.join("cut.mp4").to_str().unwrap(), "--json"]));
    // The other two files; the video asked about is left out.
    assert_eq!(like.len(), 2, "{like:?}");
    assert!(like.iter().all(|h| !h["path"].as_str().unwrap().ends_with("cut.mp4")), "{like:?}");
    let turned_id = like.iter().find(|h| h["path"].as_str().unwrap().ends_with("turned.mov")).unwrap()["id"].clone();
    let shown = common::ok_json(run(&["show", &turned_id.to_string(), "--json"]));
    assert_eq!((&shown["width"], &shown["height"]), (&240.into(), &320.into()), "upright");
    assert_eq!(shown["video"]["codec"], "hevc");
    let outside = run(&["similar", pattern.to_str().unwrap()]);
    assert!(!outside.status.success());
    assert!(String::from_utf8_lossy(&outside.stderr).contains("not in the library"));

    // A second pass decodes nothing; a new video without FFmpeg is a failure that says what to
    // install, and a new photo beside it is indexed as ever.
    let again = common::ok_json(run(&["index", "--json"]));
    assert_eq!(
        (&again["unchanged"], &again["embedded"], &again["skipped_failures"]),
        (&4.into(), &0.into(), &2.into())
    );
    test_pattern(&lib, "new.webm", 2, "libvpx-vp9");
    std::fs::copy(fixture_image("coffee.png"), lib.join("new.png")).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_clipdex"))
        .args(["--db", db.to_str().unwrap(), "--model", model().to_str().unwrap(), "index", "--json"])
        .env("CLIPDEX_FFPROBE", "/no/such/ffprobe")
        .env("CLIPDEX_FFMPEG", "/no/such/ffmpeg")
        .output()
        .unwrap();
    let report = common::ok_json(out);
    assert_eq!((&report["embedded"], &report["failed"]), (&1.into(), &1.into()), "{report}");
    let failures = common::ok_json(run(&["failures", "--json"]));
    let new =
        failures["failures"].as_array().unwrap().iter().find(|f| f["path"].as_str().unwrap().ends_with("new.webm"));
    assert!(new.unwrap()["reason"].as_str().unwrap().contains("apt install ffmpeg"), "{failures}");
    // Once the file changes (or FFmpeg comes, and the file is touched), it is indexed: here VP9.
    let touched = std::fs::File::options().append(true).open(lib.join("new.webm")).unwrap();
    touched.set_modified(std::time::SystemTime::now() + Duration::from_secs(5)).unwrap();
    let report = common::ok_json(run(&["index", "--json"]));
    assert_eq!((&report["videos"], &report["frames"]), (&1.into(), &1.into()), "{report}");

    // BLIP captions a video by its poster frame.
    let blip = common::fixtures().join("blip/blip-tiny-captioning");
    let captions = ["--caption-model", blip.to_str().unwrap(), "caption", "--library", "--max-tokens", "5", "--json"];
    let report = common::ok_json(run(&captions));
    assert_eq!(
        (&report["images"], &report["captioned"], &report["failed"]),
        (&5.into(), &5.into(), &0.into()),
        "{report}"
    );

    // Re-indexing with another model samples the videos again and keeps them.
    let other = common::fixtures().join("clip-tiny-p32");
    let out = common::clipdex_on(&db, &other, &["reindex", "--json"]);
    let report = common::ok_json(out);
    assert_eq!(report["failed"], 0, "{report}");
    let stats = common::ok_json(common::clipdex_on(&db, &other, &["stats", "--json"]));
    assert_eq!((&stats["videos"], &stats["frames"]), (&3.into(), &8.into()), "{stats}");
    let hits =
        results(common::clipdex_on(&db, &other, &["similar", coffee.to_str().unwrap(), "--kind", "video", "--json"]));
    assert_eq!(hits.len(), 3);
}

/// A clip of FFmpeg's test pattern at `rate` frames/s, `frames` frames long, in H.264.
fn pattern_at_rate(dir: &Path, name: &str, rate: u32, frames: u32) -> PathBuf {
    let path = dir.join(name);
    let source = format!("testsrc=size=320x240:rate={rate}");
    let n = frames.to_string();
    ffmpeg(&[
        "-f",
        "lavfi",
        "-i",
        &source,
        "-frames:v",
        &n,
        "-c:v",
        "libx264",
        "-pix_fmt",
        "yuv420p",
        path.to_str().unwrap(),
    ]);
    path
}

/// Any time inside a video has a frame: the last one that starts at or before it. After the
/// last frame of a clip (9.9 s of a 10-s clip at 1 frame/s) and anywhere in a one-frame
/// video, that is the last frame, where FFmpeg's accurate seek gave nothing.
#[test]
fn a_frame_is_served_for_every_time_inside_the_video() {
    if !have_ffmpeg() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let tools = Tools::from_env();
    let limit = Duration::from_secs(30);
    let at = |path: &Path, t: f64| {
        let info = video::probe(&tools, path, limit).unwrap();
        video::frame_at(&tools, path, &info, t, FrameSize::Fit(320), u64::MAX, limit)
            .unwrap_or_else(|p| panic!("{} at {t} s: {p}", path.display()))
    };
    let slow = pattern_at_rate(dir.path(), "slow.mp4", 1, 10);
    for (t, shown) in [(0.0, 0.0), (3.0, 3.0), (3.5, 3.0), (9.0, 9.0), (9.9, 9.0), (10.0, 9.0)] {
        assert!(at(&slow, t).as_raw() == &ffmpeg_frame(&slow, shown, 320, 240), "at {t} s: the frame of {shown} s");
    }
    let single = pattern_at_rate(dir.path(), "single.mp4", 25, 1);
    let first = ffmpeg_frame(&single, 0.0, 320, 240);
    for t in [0.0, 0.02, 0.5, 10.0] {
        assert!(at(&single, t).as_raw() == &first, "a one-frame video at {t} s");
    }
}

/// Frames reach clipdex scaled down by FFmpeg within the pixel budget, whatever size is asked.
#[test]
fn frames_are_scaled_within_the_pixel_budget() {
    if !have_ffmpeg() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let tools = Tools::from_env();
    let limit = Duration::from_secs(30);
    let clip = test_pattern(dir.path(), "clip.mp4", 1, "libx264");
    let info = video::probe(&tools, &clip, limit).unwrap();
    let frame = |size, budget| video::frame_at(&tools, &clip, &info, 0.0, size, budget, limit).unwrap().dimensions();
    assert_eq!(frame(FrameSize::Full, u64::MAX), (320, 240));
    assert_eq!(
        frame(FrameSize::Full, 10_000),
        (115, 86),
        "the largest frame of the video's shape within 10,000 pixels"
    );
    assert_eq!(frame(FrameSize::Fit(1000), 10_000), (115, 86));
    assert_eq!(frame(FrameSize::Cover(60), u64::MAX), (80, 60));
    assert_eq!(frame(FrameSize::Cover(1000), u64::MAX), (320, 240), "never scaled up");
    let options = SampleOptions { max_pixels: 10_000, ..Default::default() };
    let (_, frames) = sampled(&clip, &options);
    assert!(!frames.is_empty() && frames.iter().all(|f| f.image.dimensions() == (115, 86)));
}

/// FFmpeg reads only the file it is given, as the container clipdex recognised: text files
/// with a video's name that FFmpeg would read as an HLS playlist, a concat list or an image
/// are refused before FFmpeg runs, and a file whose name looks like a URL is a file.
#[test]
fn playlists_and_lists_with_video_names_are_refused() {
    if !have_ffmpeg() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let tools = Tools::from_env();
    let limit = Duration::from_secs(30);
    let outside = pattern_at_rate(dir.path(), "outside.mp4", 5, 10);
    let hls = dir.path().join("playlist.mp4");
    let target = outside.display();
    std::fs::write(&hls, format!("#EXTM3U\n#EXT-X-TARGETDURATION:2\n#EXTINF:2,\n{target}\n#EXT-X-ENDLIST\n")).unwrap();
    let concat = dir.path().join("list.mkv");
    std::fs::write(&concat, format!("ffconcat version 1.0\nfile '{target}'\n")).unwrap();
    let jpeg = dir.path().join("still.mov");
    image::RgbImage::from_pixel(32, 32, image::Rgb([200, 10, 10]))
        .save_with_format(&jpeg, image::ImageFormat::Jpeg)
        .unwrap();
    for path in [&hls, &concat, &jpeg] {
        let problem = video::probe(&tools, path, limit).unwrap_err();
        assert_eq!(problem, VideoProblem::Container(ContainerProblem::Unknown), "{}", path.display());
    }
    // A real video whose name FFmpeg would read as a protocol is opened as the file it is.
    let odd = dir.path().join("concat:x.mp4");
    std::fs::copy(&outside, &odd).unwrap();
    let info = video::probe(&tools, &odd, limit).unwrap();
    assert_eq!((info.width, info.height), (320, 240));
}

/// At most `FRAME_DECODES_AT_ONCE` FFmpeg frame decodes run at once in a process: the others
/// wait their turn. Seen by an `ffmpeg` stand-in that records how many of it run.
#[cfg(unix)]
#[test]
fn frame_decodes_run_a_few_at_a_time() {
    use std::os::unix::fs::PermissionsExt;
    if !have_ffmpeg() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let clip = test_pattern(dir.path(), "clip.mp4", 1, "libx264");
    let runs = dir.path().join("runs");
    std::fs::create_dir(&runs).unwrap();
    let stand_in = dir.path().join("ffmpeg.sh");
    let script = format!(
        "#!/bin/sh\ntouch {r}/running.$$\nls {r} | grep -c '^running' >> {r}/../counts\nsleep 1\nrm {r}/running.$$\nexit 1\n",
        r = runs.display()
    );
    std::fs::write(&stand_in, script).unwrap();
    std::fs::set_permissions(&stand_in, std::fs::Permissions::from_mode(0o755)).unwrap();
    let tools = Tools { ffmpeg: stand_in, ..Tools::from_env() };
    let info = video::probe(&tools, &clip, Duration::from_secs(30)).unwrap();
    std::thread::scope(|s| {
        for i in 0..6 {
            let (tools, clip, info) = (&tools, &clip, &info);
            s.spawn(move || {
                let limit = Duration::from_secs(30);
                assert!(
                    video::frame_at(tools, clip, info, i as f64 / 10.0, FrameSize::Fit(64), u64::MAX, limit).is_err()
                );
            });
        }
    });
    let counts = std::fs::read_to_string(dir.path().join("counts")).unwrap();
    let counts: Vec<usize> = counts.lines().map(|l| l.trim().parse().unwrap()).collect();
    assert_eq!(counts.len(), 6, "every request ran FFmpeg once");
    assert!(
        counts.iter().all(|&n| n <= video::FRAME_DECODES_AT_ONCE),
        "at most {} at once: {counts:?}",
        video::FRAME_DECODES_AT_ONCE
    );
    // The probes before them wait their turn too.
    std::fs::remove_file(dir.path().join("counts")).unwrap();
    let tools = Tools { ffprobe: dir.path().join("ffmpeg.sh"), ..Tools::from_env() };
    std::thread::scope(|s| {
        for _ in 0..10 {
            let (tools, clip) = (&tools, &clip);
            s.spawn(move || assert!(video::probe(tools, clip, Duration::from_secs(30)).is_err()));
        }
    });
    let counts = std::fs::read_to_string(dir.path().join("counts")).unwrap();
    let counts: Vec<usize> = counts.lines().map(|l| l.trim().parse().unwrap()).collect();
    assert_eq!(counts.len(), 10, "every probe ran once");
    assert!(
        counts.iter().all(|&n| n <= video::PROBES_AT_ONCE),
        "at most {} at once: {counts:?}",
        video::PROBES_AT_ONCE
    );
}

/// `crop-search --out` cuts a video's crop out of the frame that matched, and `search --crops
/// --json` keeps what makes a result a video (its kind, time and duration), as `search --json`
/// does.
#[test]
fn videos_among_crops_are_cropped_and_keep_their_kind() {
    if !have_ffmpeg() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let (db, lib) = (dir.path().join("db"), dir.path().join("photos"));
    std::fs::create_dir(&lib).unwrap();
    let clip = lib.join("pattern.mp4");
    let source = "testsrc=duration=3:size=160x120:rate=25";
    ffmpeg(&["-f", "lavfi", "-i", source, "-c:v", "libx264", "-pix_fmt", "yuv420p", clip.to_str().unwrap()]);
    std::fs::copy(fixture_image("coffee.png"), lib.join("coffee.png")).unwrap();
    let seg = common::fixtures().join("clipseg/clipseg-tiny-refined");
    let run = |args: &[&str]| {
        let mut all = vec!["--seg-model", seg.to_str().unwrap()];
        all.extend_from_slice(args);
        common::clipdex_on(&db, common::fixtures().join("clip-tiny-p32"), &all)
    };
    assert!(run(&["add", lib.to_str().unwrap()]).status.success());
    let report = common::ok_json(run(&["index", "--json"]));
    assert_eq!((&report["videos"], &report["failed"]), (&1.into(), &0.into()), "{report}");

    // Threshold 0: every photo and every frame is one region, the whole picture.
    let out = dir.path().join("crops");
    let doc = common::ok_json(run(&[
        "crop-search",
        "a test pattern",
        "--threshold",
        "0",
        "-k",
        "5",
        "--out",
        out.to_str().unwrap(),
        "--json",
    ]));
    let crops = doc["crops"].as_array().unwrap();
    let video = crops.iter().find(|c| c["path"].as_str().unwrap().ends_with("pattern.mp4")).expect("the video");
    assert_eq!(video["kind"], "video", "{video}");
    assert!(video["time"].is_f64() && (video["duration"].as_f64().unwrap() - 3.0).abs() < 0.1, "{video}");
    let cut = image::open(video["crop"].as_str().unwrap()).unwrap();
    assert_eq!((cut.width(), cut.height()), (160, 120));
    assert_eq!(video["box"], serde_json::json!([0, 0, 160, 120]));
    let photo = crops.iter().find(|c| c["path"].as_str().unwrap().ends_with("coffee.png")).expect("the photo");
    assert_eq!((&photo["kind"], photo.get("time")), (&"photo".into(), None), "{photo}");

    let hits = results(run(&["search", "a test pattern", "--crops", "--threshold", "0", "--json"]));
    let video = hits.iter().find(|h| h["path"].as_str().unwrap().ends_with("pattern.mp4")).expect("the video");
    assert_eq!(video["kind"], "video", "{video}");
    assert!(video["time"].is_f64() && (video["duration"].as_f64().unwrap() - 3.0).abs() < 0.1, "{video}");
    assert_eq!(video["region"]["box"], serde_json::json!([0, 0, 160, 120]), "{video}");
    let photo = hits.iter().find(|h| h["path"].as_str().unwrap().ends_with("coffee.png")).expect("the photo");
    assert_eq!(photo["kind"], "photo", "{photo}");
}
