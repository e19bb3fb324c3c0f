//! The neural models, one file (or folder) per family, and what they share: the layers and
//! kernels every family is built from ([`nn`]), finding a model's
//! files ([`source`]) and reading their weights ([`weights`]), preprocessing images the way Hugging Face processors do
//! ([`preprocess`]). Nothing here knows about the database.

pub mod bench;
pub mod bert;
pub mod blip;
pub mod catalog;
pub mod clip;
pub mod clipseg;
pub mod faces;
pub mod fetch;
pub mod mobileclip;
pub mod nn;
pub mod ocr;
pub mod preprocess;
pub mod sentence;
pub mod siglip;
pub mod source;
pub mod weights;

/// Where `clipdex models download ocr|faces` puts those models, and where `ocr` and `faces`
/// find them when no folder is given ([`fetch::default_model_dir`]).
pub use fetch::{ModelKind, default_model_dir};
/// `--precision`: kept at its old path; it lives with the linear layers it sets.
pub use nn::precision;
