//! # clipdex
//!
//! A semantic image search database: photos are embedded with CLIP and searched by text or by
//! image. This crate is the library behind the `clipdex` binary; the command line, the HTTP
//! server and the tests all go through it.
//!
//! The models load from the Hugging Face hub (downloaded once into the standard cache) or from
//! a local directory in the same layout, and match `transformers` on the fixtures in
//! `tests/fixtures/`.
//!
//! ```no_run
//! use clipdex::{ClipEmbedder, DeviceChoice};
//!
//! # fn main() -> clipdex::Result<()> {
//! let device = DeviceChoice::Cpu.open()?;
//! let clip = ClipEmbedder::load("openai/clip-vit-base-patch32", &device)?;
//! let texts = clip.embed_texts(&["a dog on a beach", "a city at night"])?;
//! let image = clipdex::photo::open_rgb("holiday.jpg".as_ref(), &Default::default())?;
//! let photo = &clip.embed_images(&[image])?[0];
//! let cosine: f32 = photo.iter().zip(&texts[0]).map(|(a, b)| a * b).sum();
//! println!("similarity {cosine:.3}");
//! # Ok(())
//! # }
//! ```
//!
//! Modules, in the order data flows:
//! - [`photo`]: decoding photos into upright 8-bit RGB, EXIF metadata.
//! - [`models`]: model loading, preprocessing and the networks (CLIP so far).
//! - [`indexer`]: scanning the photo folders into the store.
//! - [`store`]: the sled database (records, paths, vectors, failures), with its migrations.
//! - [`ann`]: nearest-neighbour search over the stored vectors.
//! - [`query`]: searches with filters.
//! - [`library`]: the facade over all of it ([`Library`]).
//! - [`thumbnail`]: the web UI's thumbnails.
//! - [`server`]: the HTTP API and the web UI (`clipdex serve`).
//! - [`device`]: CPU or CUDA.
#![recursion_limit = "256"] // the OpenAPI document is one json! literal

pub mod ann;
pub mod device;
pub mod error;
pub mod eval;
pub mod finetune;
pub mod indexer;
pub mod library;
pub mod models;
pub mod output_dir;
pub mod path_text;
pub mod photo;
pub mod places;
pub mod query;
pub mod segment;
pub mod server;
pub mod store;
pub mod text_lines;
pub mod text_terms;
pub mod thumbnail;
pub mod video;

pub use device::DeviceChoice;
pub use error::{Error, ImageProblem, Result};
pub use library::{Library, LibraryConfig};
pub use models::clip::{ClipEmbedder, DEFAULT_CLIP_MODEL, Embedding};
