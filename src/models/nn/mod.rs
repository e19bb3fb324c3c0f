//! The building blocks every model family here is made of, so that a family file holds only
//! what makes it that family: linear layers (`Dense`) and their precisions (f32, and the
//! bf16 and int8 products of `packed`'s layout; `skinny` products of a few rows),
//! attention kernels (short sequences in one pass, long ones in blocks), activations, layer
//! norm, the pre-norm transformer encoder layer, and the fused training kernels beside the
//! inference ones they differentiate (`train_kernels`). The CPU kernels come for x86-64
//! (AVX-512, AVX2) and for 64-bit ARM (`neon`), picked at run time (`cpu`).
//!
//! Nothing here knows a family: CLIP, Chinese-CLIP, BERT, BLIP, CLIPSeg and the sentence
//! towers import from here, never from each other for a kernel.

pub mod activation;
pub(crate) mod bf16;
mod blocked_attention;
pub(crate) mod conv;
pub mod cpu;
pub(crate) mod int8;
pub(crate) mod kernels;
pub(crate) mod layers;
#[cfg(target_arch = "aarch64")]
mod neon;
mod packed;
pub mod precision;
mod short_attention;
mod skinny;
pub(crate) mod train_kernels;
pub(crate) mod trainable;

pub use activation::HiddenAct;
pub(crate) use kernels::Dense;
pub use layers::l2_normalize;

/// An image tower other than the ViT a CLIP family builds itself (MobileCLIP's FastViT), for
/// a family that pairs it with its own text tower: pixels in, unnormalised embeddings out.
pub trait ImageTower: Send + Sync {
    /// `[b, 3, H, W]` preprocessed pixels → `[b, embed_dim]`, projected, not normalised.
    fn image_features(&self, pixels: &candle_core::Tensor) -> candle_core::Result<candle_core::Tensor>;
    /// Runs the tower's linear layers at `precision` from now on.
    fn set_precision(&mut self, precision: precision::Precision);
}

/// The largest batch sent through a tower at once; bigger inputs are split.
pub const MAX_BATCH: usize = 32;

/// An L2-normalised embedding.
pub type Embedding = Vec<f32>;
