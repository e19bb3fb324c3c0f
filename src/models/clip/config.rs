//! CLIP's `config.json`, read straight from the Hugging Face file. Every field has
//! transformers' default, so old and new files, and every size (B/32, B/16, L/14, L/14-336...),
//! load without a hard-coded shape.

use serde::Deserialize;

pub use crate::models::nn::HiddenAct;

/// The text tower.
#[derive(Debug, Clone, Deserialize)]
#[serde(default)]
pub struct TextConfig {
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
    /// Context length (77 for CLIP): texts are truncated to it.
    pub max_position_embeddings: usize,
    /// MLP activation.
    pub hidden_act: HiddenAct,
    /// Layer norm epsilon.
    pub layer_norm_eps: f64,
    /// End-of-text id. The value 2 marks legacy configs, where pooling takes the position of
    /// the largest token id instead (transformers keeps that behaviour for them).
    pub eos_token_id: u32,
}

impl Default for TextConfig {
    fn default() -> Self {
        TextConfig {
            vocab_size: 49408,
            hidden_size: 512,
            intermediate_size: 2048,
            num_hidden_layers: 12,
            num_attention_heads: 8,
            max_position_embeddings: 77,
            hidden_act: HiddenAct::QuickGelu,
            layer_norm_eps: 1e-5,
            eos_token_id: 49407,
        }
    }
}

/// The text tower of a Chinese-CLIP (`ChineseCLIPTextConfig`): a BERT (post-norm,
/// bidirectional, token types), read with transformers' defaults.
pub type BertTextConfig = crate::models::bert::BertShape;

/// The vision tower.
#[derive(Debug, Clone, Deserialize)]
#[serde(default)]
pub struct VisionConfig {
    /// Width.
    pub hidden_size: usize,
    /// MLP width.
    pub intermediate_size: usize,
    /// Layers.
    pub num_hidden_layers: usize,
    /// Attention heads.
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
}

impl Default for VisionConfig {
    fn default() -> Self {
        VisionConfig {
            hidden_size: 768,
            intermediate_size: 3072,
            num_hidden_layers: 12,
            num_attention_heads: 12,
            num_channels: 3,
            image_size: 224,
            patch_size: 32,
            hidden_act: HiddenAct::QuickGelu,
            layer_norm_eps: 1e-5,
        }
    }
}

/// A whole `CLIPModel` or `ChineseCLIPModel` config (and the CLIP inside a CLIPSeg one), read
/// as transformers' `CLIPConfig` reads it: a tower's `*_config_dict` (the layout of configs
/// saved before transformers 4.22, which some checkpoints still carry) takes precedence over
/// its `*_config`, completed with the defaults as transformers completes it, and an absent or
/// `null` tower is the default one.
#[derive(Debug, Clone, Deserialize)]
#[serde(try_from = "RawClipConfig")]
pub struct ClipConfig {
    /// `clip` or `chinese_clip`.
    pub model_type: Option<String>,
    /// The text tower of a CLIP (for a Chinese-CLIP, [`ClipConfig::bert_text`] is the text
    /// tower and this one is unused, at its defaults).
    pub text_config: TextConfig,
    /// A Chinese-CLIP's BERT text tower.
    pub bert_text: Option<BertTextConfig>,
    /// The vision tower.
    pub vision_config: VisionConfig,
    /// Width of the shared embedding space.
    pub projection_dim: usize,
}

/// `config.json` as written, before `CLIPConfig`'s rules apply.
#[derive(Deserialize)]
struct RawClipConfig {
    #[serde(default)]
    model_type: Option<String>,
    #[serde(default)]
    text_config: Option<serde_json::Value>,
    #[serde(default)]
    text_config_dict: Option<serde_json::Value>,
    #[serde(default)]
    vision_config: Option<VisionConfig>,
    #[serde(default)]
    vision_config_dict: Option<VisionConfig>,
    #[serde(default = "default_projection_dim")]
    projection_dim: usize,
}

impl TryFrom<RawClipConfig> for ClipConfig {
    type Error = String;

    fn try_from(raw: RawClipConfig) -> Result<Self, String> {
        let text = raw.text_config_dict.or(raw.text_config).filter(|v| !v.is_null());
        let (text_config, bert_text) = match (raw.model_type.as_deref(), text) {
            (Some("chinese_clip"), Some(v)) => {
                (TextConfig::default(), Some(serde_json::from_value(v).map_err(|e| format!("text_config: {e}"))?))
            }
            (Some("chinese_clip"), None) => (TextConfig::default(), Some(BertTextConfig::default())),
            (_, Some(v)) => (serde_json::from_value(v).map_err(|e| format!("text_config: {e}"))?, None),
            (_, None) => (TextConfig::default(), None),
        };
        Ok(ClipConfig {
            model_type: raw.model_type,
            text_config,
            bert_text,
            vision_config: raw.vision_config_dict.or(raw.vision_config).unwrap_or_default(),
            projection_dim: raw.projection_dim,
        })
    }
}

fn default_projection_dim() -> usize {
    512
}

impl ClipConfig {
    /// ViT-B/32's shapes (`openai/clip-vit-base-patch32`), for benchmarks with random weights.
    pub fn vit_base_patch32() -> Self {
        ClipConfig {
            model_type: Some("clip".into()),
            text_config: TextConfig::default(),
            bert_text: None,
            vision_config: VisionConfig::default(),
            projection_dim: 512,
        }
    }

    /// `OFA-Sys/chinese-clip-vit-base-patch16`'s shapes, for benchmarks with random weights.
    pub fn chinese_vit_base_patch16() -> Self {
        ClipConfig {
            model_type: Some("chinese_clip".into()),
            text_config: TextConfig::default(),
            bert_text: Some(BertTextConfig { vocab_size: 21128, ..BertTextConfig::default() }),
            vision_config: VisionConfig { patch_size: 16, ..VisionConfig::default() },
            projection_dim: 512,
        }
    }

    /// Whether this is a Chinese-CLIP (a BERT text tower).
    pub fn is_chinese(&self) -> bool {
        self.bert_text.is_some()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn legacy_config_dicts_take_precedence_and_absent_towers_are_defaults() {
        let legacy: ClipConfig = serde_json::from_str(
            r#"{"model_type": "clip", "text_config": null, "text_config_dict": {"hidden_size": 64, "eos_token_id": 2},
                "vision_config": {"patch_size": 32}, "vision_config_dict": {"patch_size": 16, "hidden_size": 96},
                "projection_dim": 48, "some_unknown_key": [1, 2]}"#,
        )
        .unwrap();
        assert_eq!((legacy.text_config.hidden_size, legacy.text_config.eos_token_id), (64, 2));
        // The dict wins whole: its defaults too, as transformers' `update` with a full dict does.
        assert_eq!(legacy.text_config.num_hidden_layers, 12);
        assert_eq!((legacy.vision_config.patch_size, legacy.vision_config.hidden_size), (16, 96));
        assert_eq!(legacy.projection_dim, 48);
        let bare: ClipConfig = serde_json::from_str(r#"{"model_type": "clip"}"#).unwrap();
        assert_eq!((bare.vision_config.patch_size, bare.text_config.max_position_embeddings), (32, 77));
        assert_eq!(bare.projection_dim, 512);
    }

    #[test]
    fn a_chinese_clip_config_reads_a_bert_text_tower() {
        let c: ClipConfig = serde_json::from_str(
            r#"{"model_type": "chinese_clip", "projection_dim": 512,
                "text_config": {"vocab_size": 1}, "text_config_dict": {"vocab_size": 21128, "hidden_size": 1024, "num_attention_heads": 16},
                "vision_config_dict": {"patch_size": 14, "hidden_size": 1024, "image_size": 336}}"#,
        )
        .unwrap();
        let bert = c.bert_text.as_ref().unwrap();
        assert_eq!((bert.vocab_size, bert.hidden_size, bert.num_attention_heads), (21128, 1024, 16));
        // transformers' ChineseCLIPTextConfig defaults for what the file leaves out.
        assert_eq!((bert.type_vocab_size, bert.max_position_embeddings, bert.hidden_act), (2, 512, HiddenAct::Gelu));
        assert_eq!(bert.layer_norm_eps, 1e-12);
        assert_eq!((c.vision_config.patch_size, c.vision_config.image_size), (14, 336));
        assert_eq!(c.vision_config.hidden_act, HiddenAct::QuickGelu);
        let bare: ClipConfig = serde_json::from_str(r#"{"model_type": "chinese_clip"}"#).unwrap();
        assert_eq!(bare.bert_text.unwrap().hidden_size, 768);
        assert!(serde_json::from_str::<ClipConfig>(r#"{"model_type": "clip"}"#).unwrap().bert_text.is_none());
        assert!(
            serde_json::from_str::<ClipConfig>(
                r#"{"model_type": "chinese_clip", "text_config": {"hidden_size": "wide"}}"#
            )
            .is_err()
        );
    }
}
