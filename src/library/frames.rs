//! The JPEGs of the video frames served last (`GET /api/images/{id}/thumb?time=T`): a
//! player's scrubbing preview and a page of results showing moments ask for the same frames
//! again and again, and each costs an FFmpeg decode of the video at its full size.

use std::collections::VecDeque;
use std::sync::Arc;

use crate::store::ImageId;

/// The bytes of JPEG the cache keeps at most (a 1024-pixel frame is 100 to 300 KB).
pub const RECENT_FRAME_BYTES: usize = 16 << 20;

/// A frame asked for: the video, its time in milliseconds, the longer side in pixels.
pub(crate) type FrameKey = (ImageId, i64, u32);

/// The key of the frame of `id` at `time` seconds, `size` pixels on its longer side.
pub(crate) fn frame_key(id: ImageId, time: f64, size: u32) -> FrameKey {
    (id, (time * 1000.0).round() as i64, size)
}

/// The frames served last, least recently used first, within [`RECENT_FRAME_BYTES`].
#[derive(Default)]
pub(crate) struct RecentFrames {
    entries: VecDeque<(FrameKey, Arc<Vec<u8>>)>,
    bytes: usize,
}

impl RecentFrames {
    /// The JPEG of `key`, if kept (it becomes the most recently used).
    pub(crate) fn get(&mut self, key: FrameKey) -> Option<Arc<Vec<u8>>> {
        let at = self.entries.iter().position(|(k, _)| *k == key)?;
        let entry = self.entries.remove(at)?;
        let jpeg = entry.1.clone();
        self.entries.push_back(entry);
        Some(jpeg)
    }

    /// Keeps the JPEG of `key`, forgetting the least recently used ones beyond the bound.
    pub(crate) fn put(&mut self, key: FrameKey, jpeg: Arc<Vec<u8>>) {
        if let Some((_, old)) = self.entries.iter().position(|(k, _)| *k == key).and_then(|at| self.entries.remove(at))
        {
            self.bytes -= old.len();
        }
        self.bytes += jpeg.len();
        self.entries.push_back((key, jpeg));
        while self.bytes > RECENT_FRAME_BYTES {
            match self.entries.pop_front() {
                Some((_, old)) => self.bytes -= old.len(),
                None => break,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_least_recently_used_frames_go_first_within_the_bound() {
        let mut frames = RecentFrames::default();
        let jpeg = |n: usize| Arc::new(vec![0u8; n]);
        let third = RECENT_FRAME_BYTES / 3;
        frames.put(frame_key(1, 0.5, 64), jpeg(third));
        frames.put(frame_key(1, 1.0, 64), jpeg(third));
        frames.put(frame_key(2, 1.0, 64), jpeg(third));
        assert!(frames.get(frame_key(1, 0.5004, 64)).is_some(), "times within a millisecond are one frame");
        frames.put(frame_key(3, 0.0, 64), jpeg(third));
        assert!(frames.get(frame_key(1, 1.0, 64)).is_none(), "the least recently used went");
        assert!(frames.get(frame_key(1, 0.5, 64)).is_some());
        assert!(frames.get(frame_key(1, 0.5, 128)).is_none(), "another size is another frame");
        assert!(frames.bytes <= RECENT_FRAME_BYTES);
        frames.put(frame_key(4, 0.0, 64), jpeg(RECENT_FRAME_BYTES + 1));
        assert_eq!((frames.entries.len(), frames.bytes), (0, 0), "nothing larger than the bound is kept");
    }
}
