//! The arithmetic precision of the models' linear layers (`--precision`, env
//! `CLIPDEX_PRECISION`). `f32` everywhere by default; `bf16` rounds the operands of the large
//! linear products (a batch of images, a batch of texts) to bfloat16 and sums in f32, about
//! twice as fast on CPUs with AVX-512 BF16 (and on 64-bit ARM with bf16, `bfmmla`); `int8`
//! quantises them to bytes (weights per output column once, inputs per row as they come) and
//! sums exactly in integers, on CPUs with AVX-512 VNNI, AVX-VNNI or AVX2 (weights scaled by
//! pairs there), and on 64-bit ARM (`smmla` with i8mm, `sdot`, or NEON's widening
//! multiplies). Both stay within cosine 0.999 of f32 (the fidelity tests check it on the
//! fixtures). Products of a few rows (one query) stay f32: reading the weight, not
//! arithmetic, bounds them. A CPU without the instructions runs f32 whatever is asked. `auto`
//! picks per CPU class (see [`Precision::resolved`]).

use std::fmt;
use std::str::FromStr;

use crate::error::{Error, Result};

/// The precision asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Precision {
    /// Float32 throughout.
    #[default]
    F32,
    /// Bfloat16 operands with f32 sums in the linear layers, where the CPU has AVX-512 BF16 or
    /// is a 64-bit ARM with bf16.
    Bf16,
    /// Dynamically quantised 8-bit operands with exact integer sums in the linear layers,
    /// where the CPU has AVX-512 VNNI, AVX-VNNI or AVX2, or is a 64-bit ARM.
    Int8,
    /// The fastest of the three on this CPU class that passes the fidelity gate (see
    /// [`Precision::resolved`]).
    Auto,
}

impl Precision {
    /// Every precision `--precision` takes.
    pub const ASKABLE: [Precision; 4] = [Precision::F32, Precision::Bf16, Precision::Int8, Precision::Auto];

    /// What is asked for, `auto` replaced by this CPU class's choice: `int8` with AVX-512 VNNI
    /// or AVX-VNNI (`vpdpbusd`: four times an f32 FMA's multiply-adds), `bf16` with AVX-512
    /// BF16 alone, `int8` with AVX2 alone (where it measured faster than f32), `int8` on ARM
    /// with `sdot` (four times a NEON FMA's multiply-adds) or `smmla` (eight times; i8mm always
    /// comes with `sdot`), `bf16` on an ARM with bf16 but no `sdot` (`bfmmla`: four times), `f32`
    /// elsewhere (ARM with neither included: its widening multiplies do no more per instruction
    /// than an f32 FMA). The ARM choices count instructions; none has been measured on an ARM
    /// machine yet.
    pub fn resolved(self) -> Precision {
        match self {
            Precision::Auto => auto_for(super::cpu::has),
            other => other,
        }
    }

    /// The precision that actually runs on this machine: `bf16` falls back to `f32` on a CPU
    /// with neither AVX-512 BF16 nor ARM's bf16, `int8` on one with none of AVX-512 VNNI, AVX-VNNI, AVX2 and NEON.
    pub fn effective(self) -> Precision {
        match self.resolved() {
            Precision::Bf16 if super::bf16::available() => Precision::Bf16,
            Precision::Int8 if super::int8::available() => Precision::Int8,
            _ => Precision::F32,
        }
    }

    /// The precision for a part whose int8 fails the fidelity gate on the fixtures while its
    /// bf16 passes: `int8` becomes `bf16` (which [`Precision::effective`] may make `f32`).
    pub fn without_int8(self) -> Precision {
        match self.resolved() {
            Precision::Int8 => Precision::Bf16,
            other => other,
        }
    }
}

/// Whether `auto` takes int8 on a CPU whose int8 kernel is AVX2's (see `docs/src/speed.md`).
const AUTO_INT8_ON_AVX2: bool = true;

/// What `auto` resolves to on a CPU whose kernels use the features `has` says.
fn auto_for(has: impl Fn(super::cpu::Feature) -> bool) -> Precision {
    use super::cpu::Feature;
    if has(Feature::Avx512Vnni) || has(Feature::AvxVnni) || has(Feature::Dotprod) {
        Precision::Int8
    } else if has(Feature::Avx512Bf16) || has(Feature::Bf16) {
        Precision::Bf16
    } else if AUTO_INT8_ON_AVX2 && has(Feature::Avx2) {
        Precision::Int8
    } else {
        Precision::F32
    }
}

impl FromStr for Precision {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        match s.to_ascii_lowercase().as_str() {
            "f32" | "fp32" | "float32" => Ok(Precision::F32),
            "bf16" | "bfloat16" => Ok(Precision::Bf16),
            "int8" | "qint8" => Ok(Precision::Int8),
            "auto" => Ok(Precision::Auto),
            other => Err(Error::Invalid(format!("unknown precision `{other}`: use f32, bf16, int8 or auto"))),
        }
    }
}

impl fmt::Display for Precision {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Precision::F32 => "f32",
            Precision::Bf16 => "bf16",
            Precision::Int8 => "int8",
            Precision::Auto => "auto",
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_prints_precisions() {
        assert_eq!("BF16".parse::<Precision>().unwrap(), Precision::Bf16);
        assert_eq!("f32".parse::<Precision>().unwrap(), Precision::F32);
        assert_eq!("int8".parse::<Precision>().unwrap(), Precision::Int8);
        assert!("f16".parse::<Precision>().unwrap_err().to_string().contains("f32, bf16, int8 or auto"));
        assert_eq!("auto".parse::<Precision>().unwrap(), Precision::Auto);
        assert_ne!(Precision::Auto.resolved(), Precision::Auto);
        assert_ne!(Precision::Auto.effective(), Precision::Auto);
        assert_eq!(Precision::Auto.without_int8(), Precision::Auto.resolved().without_int8());
        assert_eq!(Precision::Bf16.to_string(), "bf16");
        assert_eq!(Precision::Int8.to_string(), "int8");
        assert_eq!(serde_json::to_string(&Precision::Int8).unwrap(), "\"int8\"");
        assert_eq!(Precision::F32.effective(), Precision::F32);
        assert_eq!(Precision::Int8.without_int8(), Precision::Bf16);
        assert_eq!(Precision::F32.without_int8(), Precision::F32);
    }

    /// `auto` on each CPU class, as the speed chapter's tables give it (`i8mm` always comes
    /// with `dotprod`: `cpu` counts it as built on it).
    #[test]
    fn auto_picks_per_cpu_class() {
        use super::super::cpu::Feature::{self, *};
        let class = |features: &'static [Feature]| auto_for(move |f| features.contains(&f));
        assert_eq!(class(&[]), Precision::F32);
        assert_eq!(class(&[Neon]), Precision::F32);
        assert_eq!(class(&[Neon, Dotprod]), Precision::Int8);
        assert_eq!(class(&[Neon, Dotprod, I8mm]), Precision::Int8);
        assert_eq!(class(&[Neon, Dotprod, I8mm, Bf16]), Precision::Int8);
        assert_eq!(class(&[Neon, Bf16]), Precision::Bf16);
        assert_eq!(class(&[Avx512f, Avx512Vnni, Avx512Bf16, Avx2]), Precision::Int8);
        assert_eq!(class(&[Avx512f, Avx512Bf16, Avx2]), Precision::Bf16);
        assert_eq!(class(&[Avx2, AvxVnni]), Precision::Int8);
        assert_eq!(class(&[Avx2]), Precision::Int8);
    }
}
