//! Re-embedding the stored images with another model, for `clipdex reindex`.
//!
//! Each image is read again from one of its files, checked against its content hash (a file
//! edited since it was indexed is not that image any more), decoded, embedded with the new
//! model and written to the store's next vector tree; the current vectors are not touched, so
//! searches keep working until the store switches. An image none of whose files holds its
//! content any more is forgotten, and its files come back through the next `index` pass.
//! A video is sampled again (as `index` samples it now) and its frames embedded with the new
//! model, written with its mean vector in one transaction.

use rayon::prelude::*;

use candle_core::Tensor;

use super::{IndexOptions, Progress};
use crate::error::Result;
use crate::models::clip::ClipEmbedder;
use crate::photo::{check_raw_preview, decode_photo, read_image_file};
use crate::store::{ImageId, Store};

/// What one re-embedding pass did: `(embedded, forgotten)`.
pub fn reembed_pass(
    store: &Store,
    clip: &ClipEmbedder,
    options: &IndexOptions,
    progress: Progress,
) -> Result<(u64, u64)> {
    let todo = store.images_without_next_vector()?;
    let total = todo.len() as u64;
    let (mut embedded, mut forgotten, mut done) = (0, 0, 0);
    progress(0, total);
    for chunk in todo.chunks(options.batch_size.max(1)) {
        let mut photos = Vec::with_capacity(chunk.len());
        for &id in chunk {
            match store.image(id)? {
                Some(record) if record.is_video() => match reembed_video(store, clip, options, id, &record.hash)? {
                    Ok(()) => embedded += 1,
                    Err(reason) => {
                        forget(store, id, &reason)?;
                        forgotten += 1;
                    }
                },
                Some(_) => photos.push(id),
                None => {}
            }
        }
        let prepared: Vec<(ImageId, Result<std::result::Result<Tensor, String>>)> =
            photos.par_iter().map(|&id| (id, pixels_of(store, clip, options, id))).collect();
        let mut good = Vec::new();
        for (id, p) in prepared {
            match p? {
                Ok(pixels) => good.push((id, pixels)),
                Err(reason) => {
                    forget(store, id, &reason)?;
                    forgotten += 1;
                }
            }
        }
        if !good.is_empty() {
            let batch = Tensor::stack(&good.iter().map(|(_, p)| p.clone()).collect::<Vec<_>>(), 0)?;
            for ((id, _), vector) in good.iter().zip(clip.embed_pixels(&batch)?) {
                embedded += u64::from(store.put_next_vector(*id, &vector)?);
            }
        }
        store.flush()?;
        done += chunk.len() as u64;
        progress(done, total);
    }
    Ok((embedded, forgotten))
}

/// Forgets an image that cannot be re-embedded: its files come back through the next pass.
fn forget(store: &Store, id: ImageId, reason: &str) -> Result<()> {
    tracing::warn!("image {id} cannot be re-embedded ({reason}); forgetting it until its files are indexed again");
    for path in store.paths_of(id)? {
        store.unlink_path(&path)?;
    }
    Ok(())
}

/// Samples and embeds a stored video again, from the first of its files that still holds its
/// content, and stores its next vectors; `Err(reason)` inside when no file can be used.
fn reembed_video(
    store: &Store,
    clip: &ClipEmbedder,
    options: &IndexOptions,
    id: ImageId,
    hash: &str,
) -> Result<std::result::Result<(), String>> {
    let mut reason = "no file holds it".to_string();
    let tools = crate::video::Tools::from_env();
    for path in store.paths_of(id)? {
        // Probed before it is hashed, as when it was indexed: a file swapped for a sparse
        // giant is refused without reading it.
        let info = match crate::video::probe(&tools, &path, super::videos::PROBE_LIMIT) {
            Ok(info) => info,
            Err(problem) => {
                reason = format!("{}: {problem}", path.display());
                continue;
            }
        };
        match super::videos::hash_file(&path) {
            Ok((h, _)) if h == hash => {}
            Ok(_) => {
                reason = format!("{} changed since it was indexed", path.display());
                continue;
            }
            Err(e) => {
                reason = format!("{}: {e}", path.display());
                continue;
            }
        }
        match super::videos::embed_video(clip, &path, &info, &options.video, options.batch_size)? {
            Ok(v) => {
                store.put_next_vectors(id, &v.vector, &v.frames)?;
                return Ok(Ok(()));
            }
            Err(problem) => reason = format!("{}: {problem}", path.display()),
        }
    }
    Ok(Err(reason))
}

/// The model input of a stored image, from the first of its files that still holds its
/// content; `Err(reason)` inside when none does.
fn pixels_of(
    store: &Store,
    clip: &ClipEmbedder,
    options: &IndexOptions,
    id: ImageId,
) -> Result<std::result::Result<Tensor, String>> {
    let Some(record) = store.image(id)? else { return Ok(Err("no longer stored".into())) };
    let mut reason = "no file holds it".to_string();
    for path in store.paths_of(id)? {
        let bytes = match read_image_file(&path, options.decode.max_pixels) {
            Ok(b) => b,
            Err(problem) => {
                reason = format!("{}: {problem}", path.display());
                continue;
            }
        };
        if blake3::hash(&bytes).to_hex().as_str() != record.hash {
            reason = format!("{} changed since it was indexed", path.display());
            continue;
        }
        let decoded = decode_photo(&bytes, &options.decode)
            .and_then(|p| check_raw_preview(&bytes, &p, options.decode.min_side).map(|()| p));
        match decoded {
            Ok(photo) => return Ok(Ok(clip.preprocess(&photo.image)?)),
            Err(problem) => reason = format!("{}: {problem}", path.display()),
        }
    }
    Ok(Err(reason))
}
