//! Videos in an indexing pass. A video is one entry of the library, like a photo: one content
//! hash (a copy or a rename is linked, not decoded again), one record (duration, codec, size,
//! creation date) and one vector, the normalised mean of its frames' vectors, which is what
//! "more like this", zero-shot tags and duplicates use. Its frames, sampled by FFmpeg at scene
//! changes and at least every `--video-interval` seconds ([`crate::video::sample`]), are
//! embedded in batches as FFmpeg decodes them and stored with their times: searches rank them
//! to find the moment ([`crate::ann::FrameIndex`]).
//!
//! Whatever FFmpeg cannot do with a file (no FFmpeg, no video stream, corrupt, stalled) is a
//! recorded failure with FFmpeg's reason; the pass goes on.

use std::path::Path;
use std::time::Duration;

use candle_core::Tensor;

use super::{Candidate, Prepared};
use crate::error::{Error, Result};
use crate::models::clip::ClipEmbedder;
use crate::store::{FrameVector, ImageRecord, Store, VideoMeta};
use crate::video::{self, SampleOptions, Tools, VideoInfo, VideoProblem};

/// Video file extensions the indexer looks at (case-insensitive).
pub const VIDEO_EXTENSIONS: &[&str] = &["mp4", "mov", "m4v", "mkv", "webm", "avi", "3gp"];

/// How long `ffprobe` may take on one file (and `ffmpeg` to give one frame).
pub(crate) const PROBE_LIMIT: Duration = Duration::from_secs(30);

pub(crate) fn is_video_file(path: &Path) -> bool {
    path.extension()
        .and_then(|e| e.to_str())
        .is_some_and(|e| VIDEO_EXTENSIONS.iter().any(|x| x.eq_ignore_ascii_case(e)))
}

/// blake3 of a file read in pieces (a video need not fit in memory), and its length.
pub(crate) fn hash_file(path: &Path) -> std::io::Result<(String, u64)> {
    let mut hasher = blake3::Hasher::new();
    hasher.update_reader(std::fs::File::open(path)?)?;
    Ok((hasher.finalize().to_hex().to_string(), hasher.count()))
}

/// The cheap part of a video's indexing, run beside the photos' decoding: what `ffprobe`
/// says of it, then its hash (a stored content is only linked). Probed first, as photos are
/// checked from their header first: only a file whose container accounts for its length is
/// read whole, so a sparse or padded file of terabytes costs a few reads, not an hour.
pub(super) fn prepare(store: &Store, c: &Candidate, scanned: bool) -> Result<Prepared> {
    let path = c.read_from.as_ref().unwrap_or(&c.path);
    let unreadable = |e: std::io::Error| {
        if !scanned {
            Prepared::Unreadable(format!("cannot read: {e}"))
        } else if e.kind() == std::io::ErrorKind::NotFound {
            Prepared::Vanished
        } else {
            Prepared::Failed(format!("cannot read: {e}"))
        }
    };
    if let Err(e) = std::fs::File::open(path) {
        return Ok(unreadable(e));
    }
    let info = match video::probe(&Tools::from_env(), path, PROBE_LIMIT) {
        Ok(info) => info,
        Err(problem) => return Ok(Prepared::Failed(problem.to_string())),
    };
    let (hash, size) = match hash_file(path) {
        Ok(h) => h,
        Err(e) => return Ok(unreadable(e)),
    };
    if let Some(id) = store.id_for_hash(&hash)? {
        return Ok(Prepared::Known { id });
    }
    let record = ImageRecord {
        hash,
        size,
        width: info.width,
        height: info.height,
        modified: ImageRecord::modified_at(c.mtime_ns),
        taken: info.created,
        camera: None,
        gps: info.location,
        lens: None,
        video: Some(VideoMeta { duration: info.duration, codec: info.codec.clone(), poster: 0.0 }),
        motion_video: None,
        motion_video_problem: None,
    };
    Ok(Prepared::NewVideo { record, info })
}

/// A video's frames embedded.
#[derive(Debug, Clone)]
pub struct EmbeddedVideo {
    /// Every sampled frame's time and vector, in time order.
    pub frames: Vec<FrameVector>,
    /// The normalised mean of the frames' vectors.
    pub vector: Vec<f32>,
    /// The time of the frame nearest to the mean.
    pub poster: f64,
}

/// Samples a video's frames and embeds them, `batch` at a time while FFmpeg decodes the
/// next ones. The outer error is the model's; the inner one FFmpeg's (the video cannot be used).
pub fn embed_video(
    clip: &ClipEmbedder,
    path: &Path,
    info: &VideoInfo,
    options: &SampleOptions,
    batch: usize,
) -> Result<std::result::Result<EmbeddedVideo, VideoProblem>> {
    let mut times = Vec::new();
    let mut pending: Vec<Tensor> = Vec::new();
    let mut vectors: Vec<Vec<f32>> = Vec::new();
    let mut failure: Option<Error> = None;
    let embed = |pending: &mut Vec<Tensor>, vectors: &mut Vec<Vec<f32>>| -> Result<()> {
        if !pending.is_empty() {
            vectors.extend(clip.embed_pixels(&Tensor::stack(pending, 0)?)?);
            pending.clear();
        }
        Ok(())
    };
    let sampled = video::sample(&Tools::from_env(), path, info, options, &mut |frame| {
        let step = clip.preprocess(&frame.image).map(|pixels| pending.push(pixels)).and_then(|()| {
            times.push(frame.time);
            if pending.len() >= batch.max(1) { embed(&mut pending, &mut vectors) } else { Ok(()) }
        });
        match step {
            Ok(()) => true,
            Err(e) => {
                failure = Some(e);
                false
            }
        }
    });
    if let Some(e) = failure {
        return Err(e);
    }
    if let Err(problem) = sampled {
        return Ok(Err(problem));
    }
    embed(&mut pending, &mut vectors)?;
    if vectors.is_empty() {
        return Ok(Err(VideoProblem::Unreadable("FFmpeg decoded no frame".into())));
    }
    let vector = crate::query::tags::mean_direction(&vectors);
    let poster = vectors
        .iter()
        .map(|v| crate::ann::dot(v, &vector))
        .enumerate()
        .max_by(|a, b| a.1.total_cmp(&b.1))
        .map(|(i, _)| times[i])
        .unwrap_or(0.0);
    let frames = times.iter().zip(vectors).map(|(&t, vector)| FrameVector { time: t as f32, vector }).collect();
    Ok(Ok(EmbeddedVideo { frames, vector, poster }))
}
