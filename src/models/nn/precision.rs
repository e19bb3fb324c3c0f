//! The arithmetic precision of the models' linear layers (`--precision`, env
//! `CLIPDEX_PRECISION`). `f32` everywhere by default; `bf16` rounds the operands of the large
//! linear products (a batch of images, a batch of texts) to bfloat16 and sums in f32, about
//! twice as fast on CPUs with AVX-512 BF16; `int8` quantises them to bytes (weights per output
//! column once, inputs per row as they come) and sums exactly in integers, on CPUs with
//! AVX-512 VNNI. Both stay within cosine 0.999 of f32 (the fidelity tests check it on the
//! fixtures). Products of a few rows (one query) stay f32: reading the weight, not
//! arithmetic, bounds them. A CPU without the instructions runs f32 whatever is asked.

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
    /// Bfloat16 operands with f32 sums in the linear layers, where the CPU has AVX-512 BF16.
    Bf16,
    /// Dynamically quantised 8-bit operands with exact integer sums in the linear layers,
    /// where the CPU has AVX-512 VNNI.
    Int8,
}

impl Precision {
    /// The precision that actually runs on this machine: `bf16` falls back to `f32` on a CPU
    /// without AVX-512 BF16, `int8` on one without AVX-512 VNNI.
    pub fn effective(self) -> Precision {
        match self {
            Precision::Bf16 if super::bf16::available() => Precision::Bf16,
            Precision::Int8 if super::int8::available() => Precision::Int8,
            _ => Precision::F32,
        }
    }

    /// The precision for a part whose int8 fails the fidelity gate on the fixtures while its
    /// bf16 passes: `int8` becomes `bf16` (which [`Precision::effective`] may make `f32`).
    pub fn without_int8(self) -> Precision {
        match self {
            Precision::Int8 => Precision::Bf16,
            other => other,
        }
    }
}

impl FromStr for Precision {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        match s.to_ascii_lowercase().as_str() {
            "f32" | "fp32" | "float32" => Ok(Precision::F32),
            "bf16" | "bfloat16" => Ok(Precision::Bf16),
            "int8" | "qint8" => Ok(Precision::Int8),
            other => Err(Error::Invalid(format!("unknown precision `{other}`: use f32, bf16 or int8"))),
        }
    }
}

impl fmt::Display for Precision {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Precision::F32 => "f32",
            Precision::Bf16 => "bf16",
            Precision::Int8 => "int8",
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
        assert!("f16".parse::<Precision>().unwrap_err().to_string().contains("f32, bf16 or int8"));
        assert_eq!(Precision::Bf16.to_string(), "bf16");
        assert_eq!(Precision::Int8.to_string(), "int8");
        assert_eq!(serde_json::to_string(&Precision::Int8).unwrap(), "\"int8\"");
        assert_eq!(Precision::F32.effective(), Precision::F32);
        assert_eq!(Precision::Int8.without_int8(), Precision::Bf16);
        assert_eq!(Precision::F32.without_int8(), Precision::F32);
    }
}
