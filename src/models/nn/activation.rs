//! The activations between a transformer MLP's two layers, as Hugging Face configs name them
//! (`hidden_act`). The fused CPU path applies them row by row in `kernels`; this is
//! the generic tensor form for other devices and dtypes.

use candle_core::Tensor;
use serde::Deserialize;

type CResult<T> = candle_core::Result<T>;

/// The activation between the two MLP layers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
pub enum HiddenAct {
    /// `x * sigmoid(1.702 x)`: OpenAI's CLIP.
    #[serde(rename = "quick_gelu")]
    QuickGelu,
    /// The exact (erf) GELU.
    #[serde(rename = "gelu")]
    Gelu,
    /// The tanh approximation of GELU.
    #[serde(alias = "gelu_new", alias = "gelu_pytorch_tanh", alias = "gelu_fast")]
    GeluTanh,
    /// ReLU.
    #[serde(rename = "relu")]
    Relu,
}

impl HiddenAct {
    /// The activation of every value of `xs`.
    pub(super) fn apply(self, xs: &Tensor) -> CResult<Tensor> {
        match self {
            HiddenAct::QuickGelu => xs * candle_nn::ops::sigmoid(&(xs * 1.702)?)?,
            HiddenAct::Gelu => xs.gelu_erf(),
            HiddenAct::GeluTanh => xs.gelu(),
            HiddenAct::Relu => xs.relu(),
        }
    }
}
