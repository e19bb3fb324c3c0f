//! The library's one error type.
//!
//! Every message names what failed (which model, which file) and, where there is one, what the
//! user can do about it. The binary prints them as they are; nothing here panics on bad input.

use std::path::{Path, PathBuf};

/// Everything that can go wrong in clipdex.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A model could not be found, downloaded, parsed or loaded.
    #[error("model {model}: {reason}")]
    Model {
        /// The model as the user named it (hub id or directory).
        model: String,
        /// What went wrong and what to do about it.
        reason: String,
    },

    /// An image could not be read or decoded.
    #[error("{}: {problem}", path.display())]
    Image {
        /// The file.
        path: PathBuf,
        /// Why it cannot be used.
        problem: ImageProblem,
    },

    /// The requested compute device is not available.
    #[error("device: {0}")]
    Device(String),

    /// A text could not be tokenised.
    #[error("tokenizer of {model}: {reason}")]
    Tokenizer {
        /// The model whose tokenizer failed.
        model: String,
        /// The tokenizer's message.
        reason: String,
    },

    /// A tensor operation failed inside a model (a bug or an exhausted device).
    #[error("model computation failed: {0}")]
    Compute(#[from] candle_core::Error),

    /// The database could not be opened, read or written.
    #[error("{0}")]
    Store(String),

    /// An invalid argument from the caller.
    #[error("{0}")]
    Invalid(String),

    /// What the caller asked for does not exist (an image id, say).
    #[error("{0}")]
    NotFound(String),

    /// Files could not be fetched: the network or the server is out of reach. `advice` says
    /// what to copy where instead.
    #[error("{what}\n{advice}")]
    Unreachable {
        /// What could not be fetched, and the transport's reason.
        what: String,
        /// What to do on a machine without network.
        advice: String,
    },
    /// What the caller asked for exists but may not be handed out (a file outside every
    /// library folder).
    #[error("{0}")]
    Forbidden(String),
}

/// Why an image file cannot be used; kept structured so callers (the indexer's failure log, the
/// HTTP API) can report it without parsing messages.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ImageProblem {
    /// The file does not exist (or vanished).
    #[error("no such file")]
    NotFound,
    /// The operating system refused to open it.
    #[error("permission denied")]
    PermissionDenied,
    /// Another I/O error.
    #[error("cannot read the file: {0}")]
    Io(String),
    /// The file is empty.
    #[error("the file is empty")]
    Empty,
    /// A format clipdex recognises but cannot decode.
    #[error("unsupported image format: {0}")]
    Unsupported(String),
    /// Not an image at all, or a format we do not recognise.
    #[error("not an image (unrecognised format)")]
    NotAnImage,
    /// The image is larger than the configured pixel limit (a decompression bomb, or a huge scan).
    #[error("{width}x{height} pixels exceeds the limit of {limit} pixels (raise it with --max-pixels)")]
    TooLarge {
        /// Width in pixels as the header declares it.
        width: u32,
        /// Height in pixels as the header declares it.
        height: u32,
        /// The configured limit.
        limit: u64,
    },
    /// Decoding would need more memory than clipdex lets one image take.
    #[error("{width}x{height} pixels need about {needed_mb} MB to decode, over the limit of {limit_mb} MB")]
    TooMuchMemory {
        /// Width in pixels as the header declares it.
        width: u32,
        /// Height in pixels as the header declares it.
        height: u32,
        /// The memory the decoding would take.
        needed_mb: u64,
        /// The limit.
        limit_mb: u64,
    },
    /// The file is far larger than any encoding of the pixels it declares (a hostile or
    /// damaged file): it is not read.
    #[error("the file is {size_mb} MB, too large for the {width}x{height} pixels it declares")]
    Oversized {
        /// The file's size in MB.
        size_mb: u64,
        /// Width in pixels as the header declares it.
        width: u32,
        /// Height in pixels as the header declares it.
        height: u32,
    },
    /// The data is truncated or corrupt.
    #[error("corrupt or truncated image: {0}")]
    Corrupt(String),
}

impl Error {
    /// A model error. Only the first line of `reason` is kept: candle appends a backtrace to
    /// its messages when `RUST_BACKTRACE` is set, and users need the one-line cause.
    pub(crate) fn model(model: impl Into<String>, reason: impl Into<String>) -> Self {
        let reason = reason.into();
        let reason = reason.lines().next().unwrap_or_default().trim_end().to_string();
        Error::Model { model: model.into(), reason }
    }

    pub(crate) fn image(path: &Path, problem: ImageProblem) -> Self {
        Error::Image { path: path.to_path_buf(), problem }
    }
}

/// The first line of an error's message (candle appends backtraces to its messages).
pub(crate) fn first_line(e: &dyn std::fmt::Display) -> String {
    e.to_string().lines().next().unwrap_or_default().trim_end().to_string()
}

/// The library's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;
