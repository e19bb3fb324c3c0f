//! MobileCLIP (Apple's MobileCLIP-S0/S1/S2 and MobileCLIP2-S0…S4 as open_clip and timm hold
//! them: `apple/MobileCLIP-S2-OpenCLIP`, `timm/MobileCLIP2-S2-OpenCLIP`, ...): an OpenCLIP
//! checkpoint whose image tower is timm's FastViT-MCi (`vision_cfg.timm_model_name`
//! `fastvit_mci0` … `fastvit_mci4`) and whose text tower is open_clip's own text transformer
//! (bidirectional for the S models: `no_causal_mask`). This module is the image tower
//! ([`FastVit`]); the OpenCLIP loader ([`crate::models::clip::openclip`]) reads the config, the
//! text tower, the tokenizer and the preprocessing, and builds the tower here when the config
//! names one.
//!
//! The hub checkpoints hold the training-time network (BatchNorm after every convolution,
//! parallel branches); the tower is reparameterised once, at load time, into single
//! convolutions (`fuse`), as timm's `reparameterize_model` does before inference.

mod fastvit;
mod fuse;

pub use fastvit::FastVit;

/// Whether a timm model name is a FastViT-MCi tower that [`FastVit`] runs.
pub fn is_fastvit_mci(timm_model_name: &str) -> bool {
    timm_model_name.starts_with("fastvit_mci")
}
