//! The SIMD kernels of `src/models/nn/` and their unit tests, built without the rest of clipdex
//! so that CI can cross-compile them for aarch64 and run them under qemu-user quickly
//! (`.ci/run`): it builds nothing on other targets. Every kernel file is included from the main crate by path (`models/nn/mod.rs`).
#![allow(dead_code)]
// On other targets the main crate's own tests cover these files.
#[cfg(target_arch = "aarch64")]
pub mod models;
