//! Choosing where the models run: the CPU by default, an NVIDIA GPU when clipdex was built with
//! the `cuda` feature and the user asks for it.

use std::fmt;
use std::str::FromStr;

use candle_core::Device;

use crate::error::{Error, Result};

/// The user's choice of compute device (`--device`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum DeviceChoice {
    /// The CPU (always available).
    #[default]
    Cpu,
    /// The first CUDA GPU; an error when unavailable.
    Cuda,
    /// The first CUDA GPU when there is one and support is built in, else the CPU.
    Auto,
}

impl DeviceChoice {
    /// Opens the device.
    pub fn open(self) -> Result<Device> {
        match self {
            DeviceChoice::Cpu => Ok(Device::Cpu),
            DeviceChoice::Cuda => open_cuda(),
            DeviceChoice::Auto => Ok(open_cuda().unwrap_or(Device::Cpu)),
        }
    }
}

#[cfg(feature = "cuda")]
fn open_cuda() -> Result<Device> {
    Device::new_cuda(0).map_err(|e| Error::Device(format!("cannot open CUDA device 0 ({e}); use --device cpu")))
}

#[cfg(not(feature = "cuda"))]
fn open_cuda() -> Result<Device> {
    Err(Error::Device(
        "CUDA was requested, but this clipdex was built without CUDA support; rebuild it with \
         `cargo build --release --features cuda`, or use --device cpu"
            .into(),
    ))
}

impl FromStr for DeviceChoice {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        match s.to_ascii_lowercase().as_str() {
            "cpu" => Ok(DeviceChoice::Cpu),
            "cuda" | "gpu" => Ok(DeviceChoice::Cuda),
            "auto" => Ok(DeviceChoice::Auto),
            other => Err(Error::Invalid(format!("unknown device `{other}`: use cpu, cuda or auto"))),
        }
    }
}

impl fmt::Display for DeviceChoice {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            DeviceChoice::Cpu => "cpu",
            DeviceChoice::Cuda => "cuda",
            DeviceChoice::Auto => "auto",
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_device_names() {
        assert_eq!("CPU".parse::<DeviceChoice>().unwrap(), DeviceChoice::Cpu);
        assert_eq!("cuda".parse::<DeviceChoice>().unwrap(), DeviceChoice::Cuda);
        assert_eq!("auto".parse::<DeviceChoice>().unwrap(), DeviceChoice::Auto);
        assert!("tpu".parse::<DeviceChoice>().is_err());
    }

    #[cfg(not(feature = "cuda"))]
    #[test]
    fn cuda_without_the_feature_says_how_to_get_it() {
        let err = DeviceChoice::Cuda.open().unwrap_err().to_string();
        assert!(err.contains("--features cuda"), "{err}");
        assert!(matches!(DeviceChoice::Auto.open(), Ok(Device::Cpu)));
    }
}
