//! Hostile files against the indexer, `similar` and the upload endpoint: crafted headers that
//! declare huge images, extreme aspect ratios, a JPEG scan bomb, a GIF of thousands of frames,
//! multi-GB sparse files. Each must end as a recorded failure, a one-line error or a 4xx, with
//! the process's peak resident memory under 1 GB (measured here) and no abort.

#![cfg(target_os = "linux")]

use std::io::{BufRead, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use serde_json::Value;

mod common;

/// The memory no process may exceed on any of these files.
const RSS_LIMIT: u64 = 1 << 30;

fn model() -> String {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/clip-tiny-p32").to_string_lossy().into_owned()
}

fn crc32(bytes: &[u8]) -> u32 {
    let mut crc = !0u32;
    for &b in bytes {
        crc ^= u32::from(b);
        for _ in 0..8 {
            crc = if crc & 1 == 1 { (crc >> 1) ^ 0xEDB8_8320 } else { crc >> 1 };
        }
    }
    !crc
}

fn png_chunk(out: &mut Vec<u8>, kind: &[u8; 4], data: &[u8]) {
    out.extend_from_slice(&(data.len() as u32).to_be_bytes());
    let mut body = kind.to_vec();
    body.extend_from_slice(data);
    out.extend_from_slice(&body);
    out.extend_from_slice(&crc32(&body).to_be_bytes());
}

/// A PNG whose header declares `width` x `height` of `color` at `depth` bits, with a few
/// bytes of (invalid) image data.
fn png_header(width: u32, height: u32, depth: u8, color: u8) -> Vec<u8> {
    let mut out = b"\x89PNG\r\n\x1a\n".to_vec();
    let mut ihdr = Vec::new();
    ihdr.extend_from_slice(&width.to_be_bytes());
    ihdr.extend_from_slice(&height.to_be_bytes());
    ihdr.extend_from_slice(&[depth, color, 0, 0, 0]);
    png_chunk(&mut out, b"IHDR", &ihdr);
    png_chunk(&mut out, b"IDAT", &[0x78, 0x9c, 0x63, 0x00, 0x00, 0x00, 0x01, 0x00, 0x01]);
    png_chunk(&mut out, b"IEND", &[]);
    out
}

fn gif_with_screen(width: u16, height: u16) -> Vec<u8> {
    let mut out = b"GIF89a".to_vec();
    out.extend_from_slice(&width.to_le_bytes());
    out.extend_from_slice(&height.to_le_bytes());
    out.extend_from_slice(&[0x80, 0, 0, 0, 0, 0, 255, 255, 255]); // 2-colour global table
    out.extend_from_slice(&[0x2C, 0, 0, 0, 0, 1, 0, 1, 0, 0]); // a 1 x 1 frame
    out.extend_from_slice(&[2, 2, 0x44, 0x01, 0, 0x3B]);
    out
}

fn tiff_header(width: u32, height: u32) -> Vec<u8> {
    let mut out = b"II*\0".to_vec();
    out.extend_from_slice(&8u32.to_le_bytes());
    let entries: [(u16, u16, u32, u32); 8] = [
        (256, 4, 1, width),  // ImageWidth
        (257, 4, 1, height), // ImageLength
        (258, 3, 1, 8),      // BitsPerSample
        (259, 3, 1, 1),      // no compression
        (262, 3, 1, 1),      // BlackIsZero
        (273, 4, 1, 200),    // StripOffsets
        (278, 4, 1, height), // RowsPerStrip
        (279, 4, 1, 16),     // StripByteCounts
    ];
    out.extend_from_slice(&(entries.len() as u16).to_le_bytes());
    for (tag, kind, count, value) in entries {
        out.extend_from_slice(&tag.to_le_bytes());
        out.extend_from_slice(&kind.to_le_bytes());
        out.extend_from_slice(&count.to_le_bytes());
        out.extend_from_slice(&value.to_le_bytes());
    }
    out.extend_from_slice(&0u32.to_le_bytes());
    out.resize(216, 0);
    out
}

fn webp_canvas(width: u32, height: u32) -> Vec<u8> {
    let mut vp8x = vec![0u8; 10];
    vp8x[4..7].copy_from_slice(&(width - 1).to_le_bytes()[..3]);
    vp8x[7..10].copy_from_slice(&(height - 1).to_le_bytes()[..3]);
    let mut body = b"WEBPVP8X".to_vec();
    body.extend_from_slice(&10u32.to_le_bytes());
    body.extend_from_slice(&vp8x);
    let mut out = b"RIFF".to_vec();
    out.extend_from_slice(&(body.len() as u32).to_le_bytes());
    out.extend_from_slice(&body);
    out
}

fn jpeg_sof(width: u16, height: u16) -> Vec<u8> {
    let mut out = vec![0xFF, 0xD8, 0xFF, 0xC0, 0, 17, 8];
    out.extend_from_slice(&height.to_be_bytes());
    out.extend_from_slice(&width.to_be_bytes());
    out.extend_from_slice(&[3, 1, 0x22, 0, 2, 0x11, 1, 3, 0x11, 1, 0xFF, 0xD9]);
    out
}

fn bmp_header(width: i32, height: i32) -> Vec<u8> {
    let mut out = b"BM".to_vec();
    out.extend_from_slice(&[0u8; 8]);
    out.extend_from_slice(&54u32.to_le_bytes());
    out.extend_from_slice(&40u32.to_le_bytes());
    out.extend_from_slice(&width.to_le_bytes());
    out.extend_from_slice(&height.to_le_bytes());
    out.extend_from_slice(&1u16.to_le_bytes());
    out.extend_from_slice(&24u16.to_le_bytes());
    out.extend_from_slice(&[0u8; 24]);
    out
}

/// The progressive fixture with one of its scans repeated `copies` times: the decoder walks
/// every block of the 2048 x 2048 image once per scan.
fn scan_bomb(copies: usize) -> Vec<u8> {
    let jpeg = std::fs::read(common::fixtures().join("hostile/progressive_2048.jpg")).unwrap();
    // The segments of the second scan (its Huffman table and SOS with data), located by
    // walking the markers as a decoder does.
    let mut i = 2;
    let mut scans = Vec::new();
    let mut segment_start = None;
    while i + 4 <= jpeg.len() {
        let marker = jpeg[i + 1];
        if marker == 0xD9 {
            break;
        }
        let len = usize::from(u16::from_be_bytes([jpeg[i + 2], jpeg[i + 3]]));
        if marker == 0xC4 && segment_start.is_none() {
            segment_start = Some(i);
        }
        i += 2 + len;
        if marker == 0xDA {
            while !(jpeg[i] == 0xFF && jpeg[i + 1] != 0 && !(0xD0..=0xD7).contains(&jpeg[i + 1])) {
                i += 1;
            }
            scans.push((segment_start.take().unwrap_or(i), i));
        }
    }
    let (start, end) = scans[1];
    let eoi = jpeg.len() - 2;
    let mut out = jpeg[..eoi].to_vec();
    for _ in 0..copies {
        out.extend_from_slice(&jpeg[start..end]);
    }
    out.extend_from_slice(&jpeg[eoi..]);
    out
}

fn many_frames_gif(frames: usize) -> Vec<u8> {
    let mut out = Vec::new();
    {
        let mut encoder = image::codecs::gif::GifEncoder::new(&mut out);
        for f in 0..frames {
            let img = image::RgbaImage::from_fn(64, 64, |x, y| image::Rgba([(x + f as u32) as u8, y as u8, 0, 255]));
            encoder.encode_frame(image::Frame::new(img)).unwrap();
        }
    }
    out
}

/// A file of `size` bytes that starts with `head` and is zeros (a hole) after it.
fn sparse(path: &Path, head: &[u8], size: u64) {
    let mut f = std::fs::File::create(path).unwrap();
    f.write_all(head).unwrap();
    f.set_len(size).unwrap();
}

/// The corpus: (file name, bytes to write, or `None` for the files made in place).
fn corpus(dir: &Path) -> Vec<PathBuf> {
    std::fs::create_dir_all(dir).unwrap();
    let mut files: Vec<(&str, Vec<u8>)> = vec![
        ("png_100000x100000.png", png_header(100_000, 100_000, 8, 2)),
        ("png_rgba16_10000x10000.png", png_header(10_000, 10_000, 16, 6)),
        ("png_1x178956970.png", png_header(1, 178_956_970, 8, 0)),
        ("gif_screen_65535.gif", gif_with_screen(65_535, 65_535)),
        ("gif_3000_frames.gif", many_frames_gif(3000)),
        ("tiff_65535.tif", tiff_header(65_535, 65_535)),
        ("tiff_12000_no_data.tif", tiff_header(12_000, 12_000)),
        ("webp_16384.webp", webp_canvas(16_384, 16_384)),
        ("jpeg_65500.jpg", jpeg_sof(65_500, 65_500)),
        ("jpeg_scan_bomb.jpg", scan_bomb(5000)),
        ("bmp_50000.bmp", bmp_header(50_000, 50_000)),
        ("bmp_negative.bmp", bmp_header(-7, i32::MIN)),
    ];
    let mut strip = Vec::new();
    image::GrayImage::new(178_956_970, 1)
        .write_to(&mut std::io::Cursor::new(&mut strip), image::ImageFormat::Png)
        .unwrap();
    files.push(("png_178956970x1.png", strip));
    let mut paths: Vec<PathBuf> = files
        .into_iter()
        .map(|(name, bytes)| {
            let p = dir.join(name);
            std::fs::write(&p, bytes).unwrap();
            p
        })
        .collect();
    // Multi-GB files that take no disk: zeros named .jpg, and a real PNG header followed by 3
    // GB of zeros.
    let zeros = dir.join("sparse_zeros.jpg");
    sparse(&zeros, &[], 3 << 30);
    let padded = dir.join("sparse_png.png");
    sparse(&padded, &png_header(100, 100, 8, 2), 3 << 30);
    paths.push(zeros);
    paths.push(padded);
    paths
}

/// The two tests take turns: each builds the corpus in this process, and a child's ru_maxrss
/// starts from this process's resident size when it forks (Linux copies it through fork and
/// exec), so this process must stay small while children are measured.
static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// This process's resident size now (bytes): the floor under every child's ru_maxrss.
fn own_rss() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let kb = status.lines().find_map(|l| l.strip_prefix("VmRSS:")).unwrap().trim().trim_end_matches(" kB").trim();
    kb.parse::<u64>().unwrap() * 1024
}

/// Runs the binary; returns its output and peak resident memory (bytes), from wait4.
fn run_measured(args: &[std::ffi::OsString]) -> (Output, u64) {
    let mut command = Command::new(env!("CARGO_BIN_EXE_clipdex"));
    command.args(args);
    common::run_measured(command)
}

fn mb(bytes: u64) -> u64 {
    bytes >> 20
}

#[test]
fn hostile_files_are_refused_within_bounded_memory() {
    let _turn = ONE_AT_A_TIME.lock().unwrap_or_else(|p| p.into_inner());
    let tmp = tempfile::tempdir().unwrap();
    let root = std::fs::canonicalize(tmp.path()).unwrap();
    let photos = root.join("photos");
    let hostile = corpus(&photos.join("hostile"));
    for i in 0..2 {
        common::picture(i).save(photos.join(format!("good{i}.png"))).unwrap();
    }
    let db = root.join("db");
    let os = |s: &str| std::ffi::OsString::from(s);
    let base = [os("--db"), db.clone().into_os_string(), os("--model"), os(&model())];
    let with =
        |extra: &[std::ffi::OsString]| -> Vec<std::ffi::OsString> { base.iter().chain(extra).cloned().collect() };

    let floor = own_rss();
    eprintln!("this test process: {} MB resident (the floor of every measurement below)", mb(floor));
    assert!(floor < RSS_LIMIT / 2, "the test process itself holds {} MB", mb(floor));
    let add = with(&[os("add"), photos.clone().into_os_string()]);
    assert!(run_measured(&add).0.status.success());
    let index = with(&[os("index"), os("--json")]);
    let started = std::time::Instant::now();
    let (out, peak) = run_measured(&index);
    assert!(out.status.success(), "index: {:?} {}", out.status, String::from_utf8_lossy(&out.stderr));
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    eprintln!(
        "index over {} hostile files: {report}; {:.1} s, peak RSS {} MB",
        hostile.len(),
        started.elapsed().as_secs_f64(),
        mb(peak)
    );
    assert!(peak < RSS_LIMIT, "index: peak RSS {} MB", mb(peak));
    let n = |k: &str| report[k].as_u64().unwrap();
    // Two good photos and the many-frame GIF (a real image: its first frame) are embedded;
    // everything else is a recorded failure.
    assert_eq!(n("seen"), hostile.len() as u64 + 2, "{report}");
    assert_eq!((n("embedded"), n("failed")), (3, n("seen") - 3), "{report}");
    let failures =
        Command::new(env!("CARGO_BIN_EXE_clipdex")).args(with(&[os("failures"), os("--json")])).output().unwrap();
    let failures: Value = serde_json::from_slice(&failures.stdout).unwrap();
    let reasons: Vec<(String, String)> = failures["failures"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| (f["path"].as_str().unwrap().to_string(), f["reason"].as_str().unwrap().to_string()))
        .collect();
    for (path, reason) in &reasons {
        eprintln!("  {}: {reason}", Path::new(path).file_name().unwrap().to_string_lossy());
    }
    let reason = |name: &str| reasons.iter().find(|(p, _)| p.ends_with(name)).map(|(_, r)| r.clone());
    assert!(reason("png_100000x100000.png").unwrap().contains("exceeds the limit"));
    assert!(reason("jpeg_scan_bomb.jpg").unwrap().contains("scans"));
    assert!(reason("sparse_zeros.jpg").unwrap().contains("not an image"));
    assert!(reason("sparse_png.png").unwrap().contains("too large for"));
    assert!(reason("png_rgba16_10000x10000.png").unwrap().contains("MB to decode"));
    assert!(reason("gif_3000_frames.gif").is_none(), "a many-frame GIF is a photo like any other");
    assert_eq!(reasons.len() as u64, n("failed"));

    // The same files as `similar` queries: each a one-line error (or results), within bounds.
    for file in &hostile {
        let started = std::time::Instant::now();
        let (out, peak) = run_measured(&with(&[os("similar"), file.clone().into_os_string(), os("--json")]));
        let err = String::from_utf8_lossy(&out.stderr);
        let name = file.file_name().unwrap().to_string_lossy();
        eprintln!(
            "similar {name}: exit {:?}, {:.2} s, peak RSS {} MB: {}",
            out.status.code(),
            started.elapsed().as_secs_f64(),
            mb(peak),
            err.trim()
        );
        assert!(matches!(out.status.code(), Some(0 | 1)), "{name}: {:?} {err}", out.status);
        assert!(peak < RSS_LIMIT, "similar {name}: peak RSS {} MB", mb(peak));
        if out.status.code() == Some(1) {
            assert_eq!(err.trim().lines().count(), 1, "{name}: {err}");
            assert!(err.starts_with("error: "), "{name}: {err}");
        }
    }
}

#[test]
fn hostile_uploads_get_4xx_within_bounded_memory() {
    let _turn = ONE_AT_A_TIME.lock().unwrap_or_else(|p| p.into_inner());
    let tmp = tempfile::tempdir().unwrap();
    let root = std::fs::canonicalize(tmp.path()).unwrap();
    let photos = root.join("photos");
    std::fs::create_dir_all(&photos).unwrap();
    common::picture(1).save(photos.join("good.png")).unwrap();
    let db = root.join("db");
    let clipdex = |args: &[&str]| common::clipdex_on(&db, model(), args);
    assert!(clipdex(&["add", photos.to_str().unwrap()]).status.success());
    assert!(clipdex(&["index"]).status.success());
    let hostile = corpus(&root.join("hostile"));
    let mut server = Command::new(env!("CARGO_BIN_EXE_clipdex"))
        .arg("--db")
        .arg(&db)
        .arg("--model")
        .arg(model())
        .args(["serve", "--bind", "127.0.0.1:0", "--no-watch"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut line = String::new();
    std::io::BufReader::new(server.stdout.take().unwrap()).read_line(&mut line).unwrap();
    let url = line.split_whitespace().find(|w| w.starts_with("http://")).expect("the address is printed").to_string();
    let boundary = "hostileBoundary0123";
    for file in &hostile {
        let name = file.file_name().unwrap().to_string_lossy().into_owned();
        let size = std::fs::metadata(file).unwrap().len();
        // Only the first MiB of a multi-GB file: reading it whole would blow up this test
        // process, whose resident size every child it spawns inherits in its ru_maxrss.
        let bytes = if size > 64 << 20 {
            let mut head = Vec::new();
            std::io::Read::read_to_end(
                &mut std::io::Read::take(std::fs::File::open(file).unwrap(), 1 << 20),
                &mut head,
            )
            .unwrap();
            head
        } else {
            std::fs::read(file).unwrap()
        };
        let mut body = format!(
            "--{boundary}\r\nContent-Disposition: form-data; name=\"image\"; filename=\"{name}\"\r\nContent-Type: application/octet-stream\r\n\r\n"
        )
        .into_bytes();
        body.extend_from_slice(&bytes);
        body.extend_from_slice(format!("\r\n--{boundary}--\r\n").as_bytes());
        let started = std::time::Instant::now();
        let response = ureq::post(&format!("{url}api/search/image"))
            .set("Content-Type", &format!("multipart/form-data; boundary={boundary}"))
            .send_bytes(&body);
        let (status, text) = match response {
            Ok(r) => (r.status(), r.into_string().unwrap_or_default()),
            Err(ureq::Error::Status(code, r)) => (code, r.into_string().unwrap_or_default()),
            Err(e) => panic!("{name}: no answer ({e}): the server died?"),
        };
        eprintln!("upload {name}: {status} in {:.2} s: {text}", started.elapsed().as_secs_f64());
        let json: Value = serde_json::from_str(&text).unwrap_or_else(|_| panic!("{name}: not JSON: {text}"));
        if name == "gif_3000_frames.gif" {
            assert_eq!(status, 200, "{name}: {text}");
        } else {
            assert!((400..500).contains(&status), "{name}: {status} {text}");
            assert!(json["error"].is_string(), "{name}: {text}");
        }
    }
    let status = std::fs::read_to_string(format!("/proc/{}/status", server.id())).unwrap();
    let peak = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .unwrap()
        .trim()
        .trim_end_matches(" kB")
        .trim()
        .parse::<u64>()
        .unwrap()
        * 1024;
    eprintln!("server peak RSS after the hostile uploads: {} MB", mb(peak));
    let _ = server.kill();
    let _ = server.wait();
    assert!(peak < RSS_LIMIT, "server: peak RSS {} MB", mb(peak));
}

/// Hostile videos: a 16000 × 16000 one (48 KB), text files with video names that FFmpeg
/// would read as an HLS playlist or a concat list naming a clip outside the library, or as an
/// image, and 10 GB sparse `.mkv` files (all zeros; a real clip followed by zeros). The
/// indexer, `duplicates` and `caption --library` each stay under 1 GB with FFmpeg's memory
/// counted (the children it waited for are in a process's ru_maxrss), the outside clip is
/// never indexed, the sparse files are refused without being read, and the server serves the
/// large video's thumbnails and frames (of any moment, several at once) within 1 GB.
#[test]
fn hostile_videos_are_refused_or_scaled_within_bounded_memory() {
    if !common::video::have_ffmpeg() {
        return;
    }
    let _turn = ONE_AT_A_TIME.lock().unwrap_or_else(|p| p.into_inner());
    let tmp = tempfile::tempdir().unwrap();
    let root = std::fs::canonicalize(tmp.path()).unwrap();
    let (photos, outside) = (root.join("photos"), root.join("outside"));
    std::fs::create_dir_all(&photos).unwrap();
    std::fs::create_dir_all(&outside).unwrap();
    let secret = outside.join("secret.mp4");
    let clip = |path: &Path| {
        let source = "testsrc=size=160x120:rate=5:duration=2";
        common::video::ffmpeg(
            &["-f", "lavfi", "-i", source, "-c:v", "libx264", "-pix_fmt", "yuv420p"]
                .iter()
                .copied()
                .chain([path.to_str().unwrap()])
                .collect::<Vec<_>>(),
        );
    };
    clip(&secret);
    let s = secret.display();
    std::fs::write(
        photos.join("playlist.mp4"),
        format!("#EXTM3U\n#EXT-X-TARGETDURATION:2\n#EXTINF:2,\n{s}\n#EXT-X-ENDLIST\n"),
    )
    .unwrap();
    std::fs::write(photos.join("list.mkv"), format!("ffconcat version 1.0\nfile '{s}'\n")).unwrap();
    image::RgbImage::from_pixel(32, 32, image::Rgb([0, 0, 255]))
        .save_with_format(photos.join("still.mov"), image::ImageFormat::Jpeg)
        .unwrap();
    std::fs::copy(common::fixtures().join("hostile/video_16000.mkv"), photos.join("huge_16000.mkv")).unwrap();
    sparse(&photos.join("sparse_zeros.mkv"), &[], 10 << 30);
    let real = outside.join("real.mkv");
    clip(&real);
    sparse(&photos.join("sparse_padded.mkv"), &std::fs::read(&real).unwrap(), 10 << 30);
    image::RgbImage::from_pixel(64, 64, image::Rgb([255, 0, 0])).save(photos.join("red.png")).unwrap();

    let db = root.join("db");
    let os = |s: &str| std::ffi::OsString::from(s);
    let base = [os("--db"), db.clone().into_os_string(), os("--model"), os(&model())];
    let with =
        |extra: &[std::ffi::OsString]| -> Vec<std::ffi::OsString> { base.iter().chain(extra).cloned().collect() };
    let floor = own_rss();
    assert!(floor < RSS_LIMIT / 2, "the test process itself holds {} MB", mb(floor));
    assert!(run_measured(&with(&[os("add"), photos.clone().into_os_string()])).0.status.success());
    let (out, peak) = run_measured(&with(&[os("index"), os("--json")]));
    assert!(out.status.success(), "index: {}", String::from_utf8_lossy(&out.stderr));
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    eprintln!("index over the hostile videos: {report}; peak RSS {} MB", mb(peak));
    assert!(peak < RSS_LIMIT, "index: peak RSS {} MB", mb(peak));
    assert_eq!((&report["videos"], &report["failed"]), (&1.into(), &5.into()), "{report}");
    let failures =
        Command::new(env!("CARGO_BIN_EXE_clipdex")).args(with(&[os("failures"), os("--json")])).output().unwrap();
    let failures: Value = serde_json::from_slice(&failures.stdout).unwrap();
    let reason = |name: &str| -> String {
        let all = failures["failures"].as_array().unwrap();
        let found = all.iter().find(|f| f["path"].as_str().unwrap().ends_with(name));
        found.unwrap_or_else(|| panic!("{name} is not a failure: {failures}"))["reason"].as_str().unwrap().to_string()
    };
    for name in ["playlist.mp4", "list.mkv", "still.mov", "sparse_zeros.mkv"] {
        assert!(reason(name).contains("not an MP4/MOV, Matroska/WebM or AVI file"), "{name}: {}", reason(name));
    }
    assert!(reason("sparse_padded.mkv").contains("accounts for only"), "{}", reason("sparse_padded.mkv"));

    // Every path that needs the large video's pixels gets them scaled down by FFmpeg.
    let (out, peak) = run_measured(&with(&[os("duplicates"), os("--threshold=0.001"), os("--json")]));
    assert!(out.status.success(), "duplicates: {}", String::from_utf8_lossy(&out.stderr));
    eprintln!("duplicates: peak RSS {} MB", mb(peak));
    assert!(peak < RSS_LIMIT, "duplicates: peak RSS {} MB", mb(peak));
    let blip = common::fixtures().join("blip/blip-tiny-captioning");
    let caption = [
        os("--caption-model"),
        blip.into_os_string(),
        os("caption"),
        os("--library"),
        os("--max-tokens"),
        os("5"),
        os("--json"),
    ];
    let (out, peak) = run_measured(&with(&caption));
    assert!(out.status.success(), "caption: {}", String::from_utf8_lossy(&out.stderr));
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    eprintln!("caption --library: {report}; peak RSS {} MB", mb(peak));
    assert!(peak < RSS_LIMIT, "caption: peak RSS {} MB", mb(peak));
    assert_eq!((&report["captioned"], &report["failed"]), (&2.into(), &0.into()), "{report}");

    // The server: the video's thumbnail, and its one frame at any moment, several at once.
    let mut server = Command::new(env!("CARGO_BIN_EXE_clipdex"))
        .args(with(&[os("serve"), os("--bind"), os("127.0.0.1:0"), os("--no-watch")]))
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut line = String::new();
    std::io::BufReader::new(server.stdout.take().unwrap()).read_line(&mut line).unwrap();
    let url = line.split_whitespace().find(|w| w.starts_with("http://")).expect("the address is printed").to_string();
    let found: Value = ureq::get(&format!("{url}api/search?q=red&kind=video&k=5")).call().unwrap().into_json().unwrap();
    let id = found["results"][0]["id"].as_u64().unwrap();
    let thumb = |query: &str| -> (u16, Vec<u8>) {
        match ureq::get(&format!("{url}api/images/{id}/thumb?{query}")).call() {
            Ok(r) => {
                let mut bytes = Vec::new();
                std::io::Read::read_to_end(&mut r.into_reader(), &mut bytes).unwrap();
                (200, bytes)
            }
            Err(ureq::Error::Status(code, r)) => (code, r.into_string().unwrap_or_default().into_bytes()),
            Err(e) => panic!("{query}: no answer ({e})"),
        }
    };
    for (query, side) in [("size=256", 256), ("size=256&time=0", 256), ("size=1024&time=0.5", 1024)] {
        let (status, bytes) = thumb(query);
        assert_eq!(status, 200, "{query}: {}", String::from_utf8_lossy(&bytes));
        assert_eq!(image::load_from_memory(&bytes).unwrap().width(), side, "{query}");
    }
    std::thread::scope(|s| {
        for i in 0..6 {
            let thumb = &thumb;
            s.spawn(move || assert_eq!(thumb(&format!("size=512&time=0.{i}")).0, 200));
        }
    });
    let status = std::fs::read_to_string(format!("/proc/{}/status", server.id())).unwrap();
    let kb = status.lines().find_map(|l| l.strip_prefix("VmHWM:")).unwrap().trim().trim_end_matches(" kB").trim();
    let peak = kb.parse::<u64>().unwrap() * 1024;
    eprintln!("server peak RSS after the video's thumbnails and frames: {} MB", mb(peak));
    let _ = server.kill();
    let _ = server.wait();
    assert!(peak < RSS_LIMIT, "server: peak RSS {} MB", mb(peak));
}

/// A 12000 x 12000 PNG that compresses to a few hundred KB, written without this process
/// keeping its pixels (the buffer is unmapped when dropped, so children measured later do not
/// inherit it).
fn huge_png(path: &Path) {
    const SIDE: u32 = 12_000;
    const BLOCK: u32 = 750;
    // Squares of BLOCK px: the rows of one band of squares are the same, so the pixels are
    // made by copying rows (quick even in a debug build).
    let mut pixels = Vec::with_capacity((SIDE * SIDE * 3) as usize);
    for band in 0..SIDE / BLOCK {
        let row: Vec<u8> = (0..SIDE)
            .flat_map(|x| {
                let (bx, by) = (x / BLOCK, band);
                [(bx * 37 % 256) as u8, (by * 53 % 256) as u8, if (bx + by) % 2 == 0 { 40 } else { 220 }]
            })
            .collect();
        for _ in 0..BLOCK {
            pixels.extend_from_slice(&row);
        }
    }
    image::RgbImage::from_raw(SIDE, SIDE, pixels).unwrap().save(path).unwrap();
}

fn seg_model() -> String {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/clipseg/clipseg-tiny-refined")
        .to_string_lossy()
        .into_owned()
}

/// The most model requests `serve` runs at once by default, and what they may take together:
/// one photo decoded at full size (the decode budget admits one 432 MB decode at a time) plus
/// a reduced copy, its maps and CLIPSeg's activations per running request.
const SERVER_RSS_LIMIT: u64 = 1 << 30;

#[test]
fn a_huge_png_is_segmented_within_bounded_memory_by_the_cli_and_the_server() {
    let _turn = ONE_AT_A_TIME.lock().unwrap_or_else(|p| p.into_inner());
    let tmp = tempfile::tempdir().unwrap();
    let root = std::fs::canonicalize(tmp.path()).unwrap();
    let photos = root.join("photos");
    std::fs::create_dir_all(&photos).unwrap();
    let big = photos.join("huge_12000.png");
    huge_png(&big);
    common::picture(0).save(photos.join("good.png")).unwrap();
    let floor = own_rss();
    eprintln!(
        "this test process: {} MB resident; the PNG: {} KB",
        mb(floor),
        std::fs::metadata(&big).unwrap().len() >> 10
    );
    assert!(floor < RSS_LIMIT / 2, "the test process itself holds {} MB", mb(floor));
    let db = root.join("db");
    let os = |s: &str| std::ffi::OsString::from(s);
    let with = |extra: &[std::ffi::OsString]| -> Vec<std::ffi::OsString> {
        [os("--db"), db.clone().into_os_string(), os("--model"), os(&model()), os("--seg-model"), os(&seg_model())]
            .into_iter()
            .chain(extra.iter().cloned())
            .collect()
    };

    // The CLI: masks, overlays and crops at most 2048 px, boxes in the photo's pixels.
    let out_dir = root.join("masks");
    let started = std::time::Instant::now();
    let (out, peak) = run_measured(&with(&[
        os("segment"),
        big.clone().into_os_string(),
        os("--prompt"),
        os("a square"),
        os("--prompt"),
        os("a checkerboard"),
        os("--threshold"),
        os("0"),
        os("--out"),
        out_dir.clone().into_os_string(),
        os("--json"),
    ]));
    eprintln!("segment 12000x12000 PNG: {:.1} s, peak RSS {} MB", started.elapsed().as_secs_f64(), mb(peak));
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let doc: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!((&doc["width"], &doc["height"]), (&12_000.into(), &12_000.into()), "{doc}");
    let first = &doc["prompts"][0];
    let mask = image::image_dimensions(first["mask"].as_str().unwrap()).unwrap();
    assert_eq!(mask, (2048, 2048), "the mask is bounded");
    assert_eq!(first["regions"][0]["box"], serde_json::json!([0, 0, 12_000, 12_000]), "{first}");
    assert!(peak < RSS_LIMIT, "segment: peak RSS {} MB", mb(peak));

    // The server: concurrent segment requests of the indexed photo.
    let add = with(&[os("add"), photos.clone().into_os_string()]);
    assert!(run_measured(&add).0.status.success());
    let (out, peak) = run_measured(&with(&[os("index"), os("--json")]));
    assert!(out.status.success(), "index: {}", String::from_utf8_lossy(&out.stderr));
    eprintln!("index with the 12000x12000 PNG: peak RSS {} MB", mb(peak));
    assert!(peak < RSS_LIMIT, "index: peak RSS {} MB", mb(peak));
    // BLIP is handed the photo reduced as well: captions of the library, a question.
    let blip =
        |name: &str| Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/blip").join(name).into_os_string();
    let caption = with(&[
        os("--caption-model"),
        blip("blip-tiny-captioning"),
        os("caption"),
        os("--library"),
        os("--max-tokens"),
        os("3"),
        os("--json"),
    ]);
    let (out, peak) = run_measured(&caption);
    eprintln!("caption --library with the 12000x12000 PNG: peak RSS {} MB", mb(peak));
    assert!(out.status.success(), "caption: {}", String::from_utf8_lossy(&out.stderr));
    assert!(peak < RSS_LIMIT, "caption --library: peak RSS {} MB", mb(peak));
    let ask = with(&[
        os("--vqa-model"),
        blip("blip-tiny-vqa"),
        os("ask"),
        big.clone().into_os_string(),
        os("what is it?"),
        os("--max-tokens"),
        os("3"),
    ]);
    let (out, peak) = run_measured(&ask);
    eprintln!("ask about the 12000x12000 PNG: peak RSS {} MB", mb(peak));
    assert!(out.status.success(), "ask: {}", String::from_utf8_lossy(&out.stderr));
    assert!(peak < RSS_LIMIT, "ask: peak RSS {} MB", mb(peak));
    let (out, _) = run_measured(&with(&[os("search"), os("a square"), os("--json")]));
    let hits: Value = serde_json::from_slice(&out.stdout).unwrap();
    let id = hits["results"]
        .as_array()
        .unwrap()
        .iter()
        .find(|h| h["path"].as_str().unwrap().ends_with("huge_12000.png"))
        .expect("the huge PNG is indexed")["id"]
        .as_u64()
        .unwrap();

    let serve = |extra: &[&str]| {
        let mut command = Command::new(env!("CARGO_BIN_EXE_clipdex"));
        command.args(with(&[])).args(["serve", "--bind", "127.0.0.1:0", "--no-watch"]).args(extra);
        common::start_server(command)
    };
    let hwm = |pid: u32| {
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
        let kb = status.lines().find_map(|l| l.strip_prefix("VmHWM:")).unwrap().trim().trim_end_matches(" kB").trim();
        kb.parse::<u64>().unwrap() * 1024
    };
    let segment_at_once = |url: &str, n: usize| -> Vec<(u16, Option<String>, String)> {
        let url = format!("{url}/api/images/{id}/segment?prompt=a%20square&format=json&threshold=0");
        let threads: Vec<_> = (0..n)
            .map(|_| {
                let url = url.clone();
                std::thread::spawn(move || match ureq::get(&url).call() {
                    Ok(r) => (r.status(), r.header("Retry-After").map(str::to_string), r.into_string().unwrap()),
                    Err(ureq::Error::Status(code, r)) => {
                        (code, r.header("Retry-After").map(str::to_string), r.into_string().unwrap())
                    }
                    Err(e) => panic!("no answer ({e}): the server died?"),
                })
            })
            .collect();
        threads.into_iter().map(|t| t.join().unwrap()).collect()
    };

    const N: usize = 4;
    let (server, url) = serve(&[]);
    let started = std::time::Instant::now();
    let answers = segment_at_once(&url, N);
    let peak = hwm(server.0.id());
    eprintln!(
        "{N} concurrent segment requests of the 12000x12000 PNG: {:.1} s, server peak RSS {} MB",
        started.elapsed().as_secs_f64(),
        mb(peak)
    );
    for (status, _, body) in &answers {
        assert_eq!(*status, 200, "{body}");
        let doc: Value = serde_json::from_str(body).unwrap();
        assert_eq!((&doc["width"], &doc["height"]), (&12_000.into(), &12_000.into()), "{doc}");
        assert_eq!(doc["prompts"][0]["regions"][0]["box"], serde_json::json!([0, 0, 12_000, 12_000]), "{doc}");
    }
    let mask = ureq::get(&format!("{url}/api/images/{id}/segment?prompt=a%20square")).call().unwrap();
    let mut png = Vec::new();
    std::io::Read::read_to_end(&mut mask.into_reader(), &mut png).unwrap();
    let mask = image::load_from_memory(&png).unwrap();
    assert_eq!((mask.width(), mask.height()), (2048, 2048));
    drop(server);
    assert!(peak < SERVER_RSS_LIMIT, "server: peak RSS {} MB with {N} concurrent requests", mb(peak));

    // A server that runs one at a time with one waiting refuses the rest at once, saying when
    // to come back (each request decodes 144 MP, so eight sent together overlap).
    let (_server, url) = serve(&["--heavy-requests", "1", "--heavy-queue", "1"]);
    let answers = segment_at_once(&url, 8);
    let refused: Vec<_> = answers.iter().filter(|(status, _, _)| *status == 503).collect();
    assert!(answers.iter().all(|(status, _, _)| matches!(status, 200 | 503)), "{answers:?}");
    assert!(!refused.is_empty(), "eight requests against room for two: {answers:?}");
    for (_, retry, body) in refused {
        assert_eq!(retry.as_deref(), Some("5"), "{body}");
        assert!(body.contains("busy"), "{body}");
    }
}
