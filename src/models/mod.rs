//! The neural models, one file (or folder) per family, and what they share: finding a model's
//! files ([`source`]) and preprocessing images the way Hugging Face processors do
//! ([`preprocess`]). Nothing here knows about the database.

pub mod bert;
pub mod blip;
pub mod clip;
pub mod clipseg;
pub mod ocr;
pub mod precision;
pub mod preprocess;
pub mod sentence;
pub mod source;
