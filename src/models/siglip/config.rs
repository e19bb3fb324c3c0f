//! SigLIP's `config.json`, read as transformers' `SiglipConfig` reads it: every field has
//! transformers' default (the hub's `google/siglip-base-patch16-224` file names only what
//! differs from them), and an absent or `null` tower is the default one.

use serde::{Deserialize, Deserializer};

use crate::models::nn::HiddenAct;

/// The text tower (`SiglipTextConfig`).
#[derive(Debug, Clone, Deserialize)]
#[serde(default)]
pub struct SiglipTextConfig {
    /// Token vocabulary size.
    pub vocab_size: usize,
    /// Width.
    pub hidden_size: usize,
    /// MLP width.
    pub intermediate_size: usize,
    /// Layers.
    pub num_hidden_layers: usize,
    /// Attention heads.
    pub num_attention_heads: usize,
    /// Context length (64): texts are padded to it, and pooled at its last position.
    pub max_position_embeddings: usize,
    /// MLP activation.
    pub hidden_act: HiddenAct,
    /// Layer norm epsilon.
    pub layer_norm_eps: f64,
    /// Width of the text `head` (the embedding width); the tower's width when absent.
    pub projection_size: Option<usize>,
}

impl Default for SiglipTextConfig {
    fn default() -> Self {
        SiglipTextConfig {
            vocab_size: 32000,
            hidden_size: 768,
            intermediate_size: 3072,
            num_hidden_layers: 12,
            num_attention_heads: 12,
            max_position_embeddings: 64,
            hidden_act: HiddenAct::GeluTanh,
            layer_norm_eps: 1e-6,
            projection_size: None,
        }
    }
}

impl SiglipTextConfig {
    /// The width of the text embedding (after the `head`).
    pub fn embedding_width(&self) -> usize {
        self.projection_size.unwrap_or(self.hidden_size)
    }
}

/// The vision tower (`SiglipVisionConfig`).
#[derive(Debug, Clone, Deserialize)]
#[serde(default)]
pub struct SiglipVisionConfig {
    /// Width, which is also the embedding width (no projection follows the pooling head).
    pub hidden_size: usize,
    /// MLP width.
    pub intermediate_size: usize,
    /// Layers.
    pub num_hidden_layers: usize,
    /// Attention heads (of the encoder and of the pooling head).
    pub num_attention_heads: usize,
    /// Input channels.
    pub num_channels: usize,
    /// Input side in pixels.
    pub image_size: usize,
    /// Patch side in pixels.
    pub patch_size: usize,
    /// MLP activation.
    pub hidden_act: HiddenAct,
    /// Layer norm epsilon.
    pub layer_norm_eps: f64,
    /// Whether the tower ends in the attention-pooling head (true unless a config says not).
    pub vision_use_head: Option<bool>,
    /// SigLIP 2 NaFlex (`siglip2`): the rows of its square position table (256), which is
    /// resized to each photo's patch grid; `image_size` means nothing there.
    pub num_patches: Option<usize>,
}

impl Default for SiglipVisionConfig {
    fn default() -> Self {
        SiglipVisionConfig {
            hidden_size: 768,
            intermediate_size: 3072,
            num_hidden_layers: 12,
            num_attention_heads: 12,
            num_channels: 3,
            image_size: 224,
            patch_size: 16,
            hidden_act: HiddenAct::GeluTanh,
            layer_norm_eps: 1e-6,
            vision_use_head: None,
            num_patches: None,
        }
    }
}

/// A whole `SiglipModel` config.
#[derive(Debug, Clone, Deserialize)]
pub struct SiglipConfig {
    /// `siglip`, or `siglip2` for SigLIP 2 NaFlex.
    #[serde(default)]
    pub model_type: Option<String>,
    /// The text tower.
    #[serde(default, deserialize_with = "null_is_default")]
    pub text_config: SiglipTextConfig,
    /// The vision tower.
    #[serde(default, deserialize_with = "null_is_default")]
    pub vision_config: SiglipVisionConfig,
}

fn null_is_default<'de, D: Deserializer<'de>, T: Deserialize<'de> + Default>(d: D) -> Result<T, D::Error> {
    Ok(Option::<T>::deserialize(d)?.unwrap_or_default())
}

impl SiglipConfig {
    /// Whether this is a SigLIP 2 NaFlex (`model_type` `siglip2`): patches cut from each photo
    /// at its own aspect, embedded by a linear layer, a position table resized per photo.
    pub fn is_naflex(&self) -> bool {
        self.model_type.as_deref() == Some("siglip2")
    }

    /// The side of a NaFlex model's square position table (16 for `num_patches` 256); `None`
    /// when `num_patches` is not a square.
    pub fn position_side(&self) -> Option<usize> {
        let n = self.vision_config.num_patches.unwrap_or(256);
        let side = (n as f64).sqrt().round() as usize;
        (side > 0 && side * side == n).then_some(side)
    }

    /// What is wrong with the shapes, if anything (checked before any weight is read).
    pub fn shape_problem(&self) -> Option<String> {
        let (t, v) = (&self.text_config, &self.vision_config);
        if self.is_naflex() {
            if v.patch_size == 0 {
                return Some("patch size 0".into());
            }
            if self.position_side().is_none() {
                return Some(format!(
                    "num_patches {} is not a square number (the position table is square)",
                    v.num_patches.unwrap_or(256)
                ));
            }
        } else if v.patch_size == 0 || v.image_size % v.patch_size != 0 {
            return Some(format!("image size {} is not a multiple of patch size {}", v.image_size, v.patch_size));
        }
        if v.num_attention_heads == 0 || v.hidden_size % v.num_attention_heads != 0 {
            return Some(format!("vision width {} does not split into {} heads", v.hidden_size, v.num_attention_heads));
        }
        if t.num_attention_heads == 0 || t.hidden_size % t.num_attention_heads != 0 {
            return Some(format!("text width {} does not split into {} heads", t.hidden_size, t.num_attention_heads));
        }
        if t.embedding_width() != v.hidden_size {
            return Some(format!(
                "texts embed in {} dimensions but images in {}: not one space",
                t.embedding_width(),
                v.hidden_size
            ));
        }
        if v.vision_use_head == Some(false) {
            return Some("vision_use_head is false: the image tower has no pooled embedding".into());
        }
        None
    }
}
