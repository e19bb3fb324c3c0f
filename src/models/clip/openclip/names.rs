//! open_clip's state-dict names read as transformers' `CLIPModel` names, so that the CLIP
//! towers ([`crate::models::clip::ClipModel`]) load an OpenCLIP checkpoint as it is. A
//! [`SimpleBackend`] over the opened file: each name the towers ask for is translated when it
//! is asked for (nothing is read up front: a tower that is not built is not read), the
//! fused `in_proj_weight` of torch's `MultiheadAttention` is cut into its query, key and value
//! thirds, and the `x @ proj` projections are transposed into linear weights.

use candle_core::{DType, Device, Shape, Tensor};
use candle_nn::{Init, VarBuilder, var_builder::SimpleBackend};

type CResult<T> = candle_core::Result<T>;

/// Where a transformers name comes from in the open_clip file.
#[derive(Debug, PartialEq)]
enum Source {
    /// The same tensor.
    Same(String),
    /// The transpose of a `[in, out]` projection.
    Transposed(String),
    /// One third (0 query, 1 key, 2 value) of a fused `in_proj` along its first axis.
    Third(String, usize),
}

impl Source {
    fn name(&self) -> &str {
        match self {
            Source::Same(n) | Source::Transposed(n) | Source::Third(n, _) => n,
        }
    }
}

/// An open_clip checkpoint seen through transformers' names.
pub(super) struct OpenClipNames {
    inner: VarBuilder<'static>,
    /// Where the text tower lives: the top level (`CLIP`) or `text.` (`CustomTextCLIP`).
    text: &'static str,
}

impl OpenClipNames {
    /// Wraps opened weights; the text tower's prefix is found from the file itself.
    pub(super) fn new(inner: VarBuilder<'static>) -> Self {
        let text = if inner.contains_tensor("text.token_embedding.weight") { "text." } else { "" };
        OpenClipNames { inner, text }
    }

    /// The weights under transformers' names.
    pub(super) fn into_var_builder(self) -> VarBuilder<'static> {
        let (dtype, device) = (self.inner.dtype(), self.inner.device().clone());
        VarBuilder::from_backend(Box::new(self), dtype, device)
    }

    fn source(&self, hf: &str) -> Option<Source> {
        let t = self.text;
        let same = |s: String| Some(Source::Same(s));
        match hf {
            "logit_scale" => return same("logit_scale".into()),
            "visual_projection.weight" => return Some(Source::Transposed("visual.proj".into())),
            "text_projection.weight" => {
                let linear = format!("{t}text_projection.weight");
                return Some(if self.inner.contains_tensor(&linear) {
                    Source::Same(linear)
                } else {
                    Source::Transposed(format!("{t}text_projection"))
                });
            }
            _ => {}
        }
        if let Some(rest) = hf.strip_prefix("vision_model.") {
            let plain = match rest {
                "embeddings.patch_embedding.weight" => "conv1.weight",
                "embeddings.class_embedding" => "class_embedding",
                "embeddings.position_embedding.weight" => "positional_embedding",
                "pre_layrnorm.weight" => "ln_pre.weight",
                "pre_layrnorm.bias" => "ln_pre.bias",
                "post_layernorm.weight" => "ln_post.weight",
                "post_layernorm.bias" => "ln_post.bias",
                _ => return block(rest, "visual."),
            };
            return same(format!("visual.{plain}"));
        }
        if let Some(rest) = hf.strip_prefix("text_model.") {
            let plain = match rest {
                "embeddings.token_embedding.weight" => "token_embedding.weight",
                "embeddings.position_embedding.weight" => "positional_embedding",
                "final_layer_norm.weight" => "ln_final.weight",
                "final_layer_norm.bias" => "ln_final.bias",
                _ => return block(rest, t),
            };
            return same(format!("{t}{plain}"));
        }
        None
    }

    fn load(&self, hf: &str) -> CResult<Tensor> {
        let Some(source) = self.source(hf) else { candle_core::bail!("{hf}: no open_clip weight corresponds to it") };
        let t = self
            .inner
            .get_unchecked(source.name())
            .map_err(|e| candle_core::Error::Msg(format!("open_clip weight {} (for {hf}): {e}", source.name())))?;
        match source {
            Source::Same(_) => Ok(t),
            Source::Transposed(_) => t.t()?.contiguous(),
            Source::Third(name, i) => {
                let n = t.dim(0)?;
                if n % 3 != 0 {
                    candle_core::bail!("{name} has {n} rows, not three equal parts (query, key, value)");
                }
                t.narrow(0, i * n / 3, n / 3)?.contiguous()
            }
        }
    }
}

/// An encoder layer's weight: `encoder.layers.N.<part>` → `transformer.resblocks.N.<part>`.
fn block(rest: &str, prefix: &str) -> Option<Source> {
    let rest = rest.strip_prefix("encoder.layers.")?;
    let (index, part) = rest.split_once('.')?;
    index.parse::<usize>().ok()?;
    let at = format!("{prefix}transformer.resblocks.{index}.");
    let third = |i: usize, kind: &str| Some(Source::Third(format!("{at}attn.in_proj_{kind}"), i));
    let plain = match part {
        "self_attn.q_proj.weight" => return third(0, "weight"),
        "self_attn.k_proj.weight" => return third(1, "weight"),
        "self_attn.v_proj.weight" => return third(2, "weight"),
        "self_attn.q_proj.bias" => return third(0, "bias"),
        "self_attn.k_proj.bias" => return third(1, "bias"),
        "self_attn.v_proj.bias" => return third(2, "bias"),
        "self_attn.out_proj.weight" => "attn.out_proj.weight",
        "self_attn.out_proj.bias" => "attn.out_proj.bias",
        "layer_norm1.weight" => "ln_1.weight",
        "layer_norm1.bias" => "ln_1.bias",
        "layer_norm2.weight" => "ln_2.weight",
        "layer_norm2.bias" => "ln_2.bias",
        "mlp.fc1.weight" => "mlp.c_fc.weight",
        "mlp.fc1.bias" => "mlp.c_fc.bias",
        "mlp.fc2.weight" => "mlp.c_proj.weight",
        "mlp.fc2.bias" => "mlp.c_proj.bias",
        _ => return None,
    };
    Some(Source::Same(format!("{at}{plain}")))
}

impl SimpleBackend for OpenClipNames {
    fn get(&self, s: Shape, name: &str, _: Init, dtype: DType, dev: &Device) -> CResult<Tensor> {
        let t = self.load(name)?;
        if t.shape() != &s {
            candle_core::bail!(
                "open_clip weight for {name} has shape {:?}, the config says {s:?}: the weights do not fit \
                 open_clip_config.json",
                t.dims()
            );
        }
        t.to_dtype(dtype)?.to_device(dev)
    }

    fn get_unchecked(&self, name: &str, dtype: DType, dev: &Device) -> CResult<Tensor> {
        self.load(name)?.to_dtype(dtype)?.to_device(dev)
    }

    fn contains_tensor(&self, name: &str) -> bool {
        self.source(name).is_some_and(|s| self.inner.contains_tensor(s.name()))
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    #[test]
    fn names_map_onto_open_clips_and_fused_projections_split() {
        let dev = Device::Cpu;
        let mut ts = HashMap::new();
        let in_proj = Tensor::arange(0f32, 24.0, &dev).unwrap().reshape((6, 4)).unwrap();
        ts.insert("visual.transformer.resblocks.3.attn.in_proj_weight".to_string(), in_proj);
        ts.insert("visual.proj".to_string(), Tensor::arange(0f32, 6.0, &dev).unwrap().reshape((2, 3)).unwrap());
        ts.insert("text.token_embedding.weight".to_string(), Tensor::zeros((5, 2), DType::F32, &dev).unwrap());
        let names = OpenClipNames::new(VarBuilder::from_tensors(ts, DType::F32, &dev));
        let vb = names.into_var_builder();
        let k = vb.get((2, 4), "vision_model.encoder.layers.3.self_attn.k_proj.weight").unwrap();
        assert_eq!(k.to_vec2::<f32>().unwrap()[0], [8.0, 9.0, 10.0, 11.0]);
        let proj = vb.get((3, 2), "visual_projection.weight").unwrap();
        assert_eq!(proj.to_vec2::<f32>().unwrap(), [[0.0, 3.0], [1.0, 4.0], [2.0, 5.0]]);
        // A CustomTextCLIP keeps its text tower under `text.`.
        assert!(vb.contains_tensor("text_model.embeddings.token_embedding.weight"));
        let err = vb.get((3, 3), "visual_projection.weight").unwrap_err().to_string();
        assert!(err.contains("open_clip_config.json"), "{err}");
        assert!(!vb.contains_tensor("vision_model.encoder.layers.x.mlp.fc1.weight"));
    }
}
