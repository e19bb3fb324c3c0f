//! The main crate's kernel files, by path, under the module names they have there.
#[path = "../../../../../src/models/nn/bf16.rs"]
pub(crate) mod bf16;
#[path = "../../../../../src/models/nn/cpu.rs"]
pub mod cpu;
#[path = "../../../../../src/models/nn/int8.rs"]
pub(crate) mod int8;
#[cfg(target_arch = "aarch64")]
#[path = "../../../../../src/models/nn/neon.rs"]
mod neon;
#[path = "../../../../../src/models/nn/packed.rs"]
mod packed;
#[path = "../../../../../src/models/nn/short_attention.rs"]
mod short_attention;
#[path = "../../../../../src/models/nn/skinny.rs"]
mod skinny;

/// What the kernels ask of the main crate's `kernels` module.
pub(crate) mod kernels {
    pub(crate) fn avx512f() -> bool {
        super::cpu::has(super::cpu::Feature::Avx512f)
    }
    pub(crate) fn avx2() -> bool {
        super::cpu::has(super::cpu::Feature::Avx2)
    }
    pub(crate) fn neon() -> bool {
        super::cpu::has(super::cpu::Feature::Neon)
    }
}
