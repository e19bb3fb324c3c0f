//! Videos for the tests, made by Debian's FFmpeg (`.ci/run` installs it).

use std::path::Path;
use std::process::Command;

/// Whether FFmpeg is there to test with (in CI it must be).
pub fn have_ffmpeg() -> bool {
    let found = Command::new("ffmpeg").arg("-version").output().is_ok_and(|o| o.status.success());
    if !found {
        let required =
            std::env::var_os("CI").is_some() || std::env::var("CLIPDEX_FFMPEG_TESTS").is_ok_and(|v| v == "require");
        assert!(!required, "CI must test videos: install FFmpeg (apt install ffmpeg)");
        eprintln!("FFmpeg is not installed: the video tests do nothing");
    }
    found
}

/// Runs FFmpeg quietly with `args`, failing the test when it fails.
pub fn ffmpeg(args: &[&str]) {
    let out = Command::new("ffmpeg").args(["-nostdin", "-v", "error", "-y"]).args(args).output().unwrap();
    assert!(out.status.success(), "ffmpeg {args:?}: {}", String::from_utf8_lossy(&out.stderr));
}

/// A clip that shows photo `a` for 3 s, then photo `b` for 3 s, both scaled to 320×240.
pub fn cut_between(a: &Path, b: &Path, out: &Path) {
    ffmpeg(&[
        "-loop",
        "1",
        "-t",
        "3",
        "-i",
        a.to_str().unwrap(),
        "-loop",
        "1",
        "-t",
        "3",
        "-i",
        b.to_str().unwrap(),
        "-filter_complex",
        "[0:v]scale=320:240,setsar=1,fps=25[a];[1:v]scale=320:240,setsar=1,fps=25[b];[a][b]concat=n=2:v=1[v]",
        "-map",
        "[v]",
        "-c:v",
        "libx264",
        "-pix_fmt",
        "yuv420p",
        out.to_str().unwrap(),
    ]);
}
