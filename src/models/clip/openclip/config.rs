//! `open_clip_config.json`, as open_clip's `create_model` reads a hub checkpoint: `model_cfg`
//! (the towers' shapes, open_clip's `CLIPVisionCfg` / `CLIPTextCfg` with their defaults) and
//! `preprocess_cfg` (mean, std, interpolation, resize mode). Only the ViT + text-transformer
//! CLIPs are read; an option that changes the network in a way the CLIP towers do not compute
//! (layer scale, attentional pooling, timm or Hugging Face towers...) is refused by name.

use serde::Deserialize;
use serde_json::Value;

use crate::models::clip::{ClipConfig, HiddenAct, TextConfig, VisionConfig};
use crate::models::preprocess::{CropOffset, ImageProcessor, OPENAI_CLIP_MEAN, OPENAI_CLIP_STD, Resample, ResizeTo};

/// The whole file.
#[derive(Debug, Clone, Deserialize)]
pub struct OpenClipConfig {
    /// The model's shapes.
    pub model_cfg: ModelCfg,
    /// Its preprocessing (open_clip's defaults when absent).
    #[serde(default)]
    pub preprocess_cfg: PreprocessCfg,
}

/// `model_cfg`.
#[derive(Debug, Clone, Deserialize)]
pub struct ModelCfg {
    /// Width of the shared embedding space.
    pub embed_dim: usize,
    /// QuickGELU in both towers (the `-quickgelu` models, OpenAI's and DFN's); GELU otherwise.
    #[serde(default)]
    pub quick_gelu: bool,
    /// The image tower.
    #[serde(default)]
    pub vision_cfg: VisionCfg,
    /// The text tower.
    #[serde(default)]
    pub text_cfg: TextCfg,
    /// Whether the text tower's weights live under `text.` (open_clip's `CustomTextCLIP`).
    #[serde(default)]
    pub custom_text: bool,
    /// Everything else, checked for what clipdex cannot run.
    #[serde(flatten)]
    pub other: serde_json::Map<String, Value>,
}

/// `vision_cfg` (open_clip's `CLIPVisionCfg`).
#[derive(Debug, Clone, Deserialize)]
#[serde(default)]
pub struct VisionCfg {
    /// Layers: a number for a ViT (a list is a ResNet).
    pub layers: Value,
    /// Width.
    pub width: usize,
    /// Width of one attention head (heads = width / head_width).
    pub head_width: usize,
    /// MLP width over the tower's width.
    pub mlp_ratio: f64,
    /// Patch side in pixels.
    pub patch_size: usize,
    /// Input side: a number, or `[height, width]`.
    pub image_size: Value,
    /// Options beyond the plain ViT.
    #[serde(flatten)]
    pub other: serde_json::Map<String, Value>,
}

impl Default for VisionCfg {
    fn default() -> Self {
        VisionCfg {
            layers: Value::from(12),
            width: 768,
            head_width: 64,
            mlp_ratio: 4.0,
            patch_size: 16,
            image_size: Value::from(224),
            other: Default::default(),
        }
    }
}

/// `text_cfg` (open_clip's `CLIPTextCfg`).
#[derive(Debug, Clone, Deserialize)]
#[serde(default)]
pub struct TextCfg {
    /// Context length: texts are cut to it.
    pub context_length: usize,
    /// Token vocabulary size.
    pub vocab_size: usize,
    /// Width.
    pub width: usize,
    /// Attention heads.
    pub heads: usize,
    /// Layers.
    pub layers: usize,
    /// MLP width over the tower's width.
    pub mlp_ratio: f64,
    /// Options beyond the plain causal text transformer.
    #[serde(flatten)]
    pub other: serde_json::Map<String, Value>,
}

impl Default for TextCfg {
    fn default() -> Self {
        TextCfg {
            context_length: 77,
            vocab_size: 49408,
            width: 512,
            heads: 8,
            layers: 12,
            mlp_ratio: 4.0,
            other: Default::default(),
        }
    }
}

/// `preprocess_cfg` (open_clip's `PreprocessCfg`).
#[derive(Debug, Clone, Default, Deserialize)]
pub struct PreprocessCfg {
    /// Per-channel mean (one number for all three, or three); OpenAI's when absent.
    pub mean: Option<Value>,
    /// Per-channel standard deviation; OpenAI's when absent.
    pub std: Option<Value>,
    /// `bicubic` (default), `bilinear` or `random` (bicubic at inference).
    pub interpolation: Option<String>,
    /// `shortest` (default: shortest edge, then a centre crop), `squash` (an exact resize) or
    /// `longest`.
    pub resize_mode: Option<String>,
}

/// An option, and whether a value of it is harmless (what the CLIP towers compute).
type OptionCheck = (&'static str, fn(&Value) -> bool);

/// Options that are harmless at their defaults and change the network otherwise.
const VISION_DEFAULTS: &[OptionCheck] = &[
    ("ls_init_value", Value::is_null),
    ("attentional_pool", is_false),
    ("no_ln_pre", is_false),
    ("pos_embed_type", |v| v.as_str() == Some("learnable")),
    ("final_ln_after_pool", is_false),
    ("pool_type", |v| v.as_str() == Some("tok")),
    ("act_kwargs", is_empty),
    ("block_type", |v| v.is_null() || v.as_str() == Some("default")),
    ("qk_norm", is_false),
    ("scaled_cosine_attn", is_false),
    ("scale_heads", is_false),
    ("scale_attn_inner", is_false),
    ("scale_attn", is_false),
    ("scale_fc", is_false),
    ("timm_model_name", Value::is_null),
];

const TEXT_DEFAULTS: &[OptionCheck] = &[
    ("ls_init_value", Value::is_null),
    ("embed_cls", is_false),
    ("use_pad_mask", is_false),
    ("final_ln_after_pool", is_false),
    ("pool_type", |v| v.as_str() == Some("argmax")),
    ("proj_bias", is_false),
    ("proj_type", |v| v.as_str() == Some("linear")),
    ("act_kwargs", is_empty),
    ("block_type", |v| v.is_null() || v.as_str() == Some("default")),
    ("qk_norm", is_false),
    ("scaled_cosine_attn", is_false),
    ("scale_heads", is_false),
    ("scale_attn_inner", is_false),
    ("scale_attn", is_false),
    ("scale_fc", is_false),
    ("hf_model_name", Value::is_null),
    ("hf_tokenizer_name", Value::is_null),
    ("tokenizer_mode", Value::is_null),
];

fn is_false(v: &Value) -> bool {
    v.is_null() || v.as_bool() == Some(false)
}

fn is_empty(v: &Value) -> bool {
    v.is_null() || v.as_object().is_some_and(|o| o.is_empty())
}

/// The first option of `other` that is set away from what the CLIP towers compute.
fn unsupported(tower: &str, other: &serde_json::Map<String, Value>, defaults: &[OptionCheck]) -> Option<String> {
    defaults.iter().find_map(|(key, harmless)| {
        let v = other.get(*key)?;
        (!harmless(v)).then(|| format!("{tower}.{key} = {v}"))
    })
}

/// The layer norm epsilon of `norm_kwargs` (open_clip's LayerNorm default otherwise).
fn layer_norm_eps(other: &serde_json::Map<String, Value>) -> Result<f64, String> {
    match other.get("norm_kwargs") {
        None | Some(Value::Null) => Ok(1e-5),
        Some(Value::Object(kw)) => match (kw.get("eps"), kw.len()) {
            (None, 0) => Ok(1e-5),
            (Some(eps), 1) => eps.as_f64().ok_or_else(|| format!("norm_kwargs.eps = {eps} is not a number")),
            _ => Err(format!("norm_kwargs {} (only eps is read)", Value::Object(kw.clone()))),
        },
        Some(v) => Err(format!("norm_kwargs = {v} is not an object")),
    }
}

impl OpenClipConfig {
    /// The input side in pixels (square inputs only).
    pub fn image_size(&self) -> Result<usize, String> {
        let side = |v: &Value| v.as_u64().map(|n| n as usize);
        match &self.model_cfg.vision_cfg.image_size {
            Value::Array(hw) if hw.len() == 2 => match (side(&hw[0]), side(&hw[1])) {
                (Some(h), Some(w)) if h == w => Ok(h),
                _ => Err(format!("image_size {hw:?}: only square inputs are supported")),
            },
            v => side(v).ok_or_else(|| format!("image_size {v} is not a number of pixels")),
        }
    }

    /// The same network as a transformers `CLIPConfig`, whose towers compute it: `eos` is the
    /// tokenizer's end-of-text id, where open_clip pools (its `argmax` of the ids finds the
    /// first end-of-text token, the largest id of CLIP's vocabulary). An error says which
    /// option the CLIP towers do not compute.
    pub fn to_clip_config(&self, eos: u32) -> Result<ClipConfig, String> {
        let m = &self.model_cfg;
        let (v, t) = (&m.vision_cfg, &m.text_cfg);
        let fastvit = self.fastvit_tower()?.is_some();
        if let Some(what) = ["timm_model_name", "hf_model_name"]
            .iter()
            .filter(|k| !(fastvit && **k == "timm_model_name"))
            .find_map(|k| v.other.get(*k).or(t.other.get(*k)).filter(|x| !x.is_null()).map(|x| format!("{k} = {x}")))
        {
            return Err(format!(
                "{what}: a timm or Hugging Face tower, which clipdex does not run (ViT + text-transformer \
                 OpenCLIPs and MobileCLIP's FastViT towers load)"
            ));
        }
        // A timm tower ignores the ViT options.
        if let Some(what) = (!fastvit)
            .then(|| unsupported("vision_cfg", &v.other, VISION_DEFAULTS))
            .flatten()
            .or_else(|| unsupported("text_cfg", &t.other, TEXT_DEFAULTS))
        {
            return Err(format!("{what}: an option clipdex's CLIP towers do not compute"));
        }
        if let Some((k, x)) = m
            .other
            .iter()
            .find(|(k, x)| matches!(k.as_str(), "init_logit_bias" | "cast_dtype" | "multimodal_cfg") && !x.is_null())
        {
            return Err(format!("model_cfg.{k} = {x}: not a plain CLIP (a SigLIP or CoCa head?)"));
        }
        let image_size = self.image_size()?;
        // A FastViT is built from its weights (`crate::models::mobileclip`): the ViT shape
        // below is then open_clip's defaults, unread but for the image size.
        let (layers, patch_size) = if fastvit {
            (0, image_size.max(1))
        } else {
            let layers = v.layers.as_u64().ok_or_else(|| {
                format!("vision_cfg.layers = {}: a ResNet image tower, which clipdex does not run", v.layers)
            })? as usize;
            if v.patch_size == 0 || image_size % v.patch_size != 0 {
                return Err(format!("image size {image_size} is not a multiple of patch size {}", v.patch_size));
            }
            (layers, v.patch_size)
        };
        if v.head_width == 0 || v.width % v.head_width != 0 {
            return Err(format!("vision width {} does not split into heads of {}", v.width, v.head_width));
        }
        if t.heads == 0 || t.width % t.heads != 0 {
            return Err(format!("text width {} does not split into {} heads", t.width, t.heads));
        }
        if t.context_length < 2 {
            return Err(format!("context_length {} leaves no room for a text", t.context_length));
        }
        let act = if m.quick_gelu { HiddenAct::QuickGelu } else { HiddenAct::Gelu };
        Ok(ClipConfig {
            model_type: Some("clip".into()),
            text_config: TextConfig {
                vocab_size: t.vocab_size,
                hidden_size: t.width,
                // open_clip's `int(width * mlp_ratio)`.
                intermediate_size: (t.width as f64 * t.mlp_ratio) as usize,
                num_hidden_layers: t.layers,
                num_attention_heads: t.heads,
                max_position_embeddings: t.context_length,
                hidden_act: act,
                layer_norm_eps: layer_norm_eps(&t.other)?,
                eos_token_id: eos,
            },
            bert_text: None,
            vision_config: VisionConfig {
                hidden_size: v.width,
                intermediate_size: (v.width as f64 * v.mlp_ratio) as usize,
                num_hidden_layers: layers,
                num_attention_heads: v.width / v.head_width,
                num_channels: 3,
                image_size,
                patch_size,
                hidden_act: act,
                layer_norm_eps: layer_norm_eps(&v.other)?,
            },
            projection_dim: m.embed_dim,
        })
    }

    /// The FastViT-MCi tower (MobileCLIP) that `vision_cfg.timm_model_name` names, if it names
    /// one; an error for one set up otherwise than open_clip's MobileCLIP configs (average
    /// pooling, timm's classifier head as the projection: `timm_proj: null`).
    pub fn fastvit_tower(&self) -> Result<Option<&str>, String> {
        let v = &self.model_cfg.vision_cfg.other;
        let Some(name) = v.get("timm_model_name").and_then(Value::as_str) else { return Ok(None) };
        if !crate::models::mobileclip::is_fastvit_mci(name) {
            return Ok(None);
        }
        match v.get("timm_pool") {
            None => {}
            Some(p) if p.as_str() == Some("avg") => {}
            Some(p) => return Err(format!("vision_cfg.timm_pool = {p}: a FastViT tower is read with \"avg\" pooling")),
        }
        match v.get("timm_proj") {
            Some(Value::Null) => Ok(Some(name)),
            other => Err(format!(
                "vision_cfg.timm_proj = {}: a FastViT tower is read with timm's head as the projection \
                 (timm_proj null, as MobileCLIP's configs have it)",
                other.map_or("absent (open_clip's \"linear\")".to_string(), Value::to_string)
            )),
        }
    }

    /// Whether the text tower attends both ways (`no_causal_mask`: MobileCLIP-S*), and then
    /// the id open_clip pads every text with to the full context (`pad_id`, 0 by default).
    pub fn text_bidirectional_pad(&self) -> Result<Option<u32>, String> {
        let t = &self.model_cfg.text_cfg.other;
        if !t.get("no_causal_mask").and_then(Value::as_bool).unwrap_or(false) {
            return Ok(None);
        }
        match t.get("pad_id") {
            None | Some(Value::Null) => Ok(Some(0)),
            Some(v) => v
                .as_u64()
                .and_then(|n| u32::try_from(n).ok())
                .map(Some)
                .ok_or_else(|| format!("text_cfg.pad_id = {v} is not a token id")),
        }
    }

    /// open_clip's inference transform (`image_transform(is_train=False)`) for this model:
    /// `shortest` resizes the short side (torchvision on PIL: PIL's filter, the long side
    /// truncated) and crops the centre at torchvision's offsets; `squash` resizes to the
    /// square. Then ToTensor and the config's mean and std.
    pub fn processor(&self) -> Result<ImageProcessor, String> {
        let side = self.image_size()? as u32;
        let p = &self.preprocess_cfg;
        let channels = |v: &Option<Value>, default: [f32; 3], what: &str| -> Result<[f32; 3], String> {
            match v {
                None | Some(Value::Null) => Ok(default),
                Some(Value::Number(n)) => Ok([n.as_f64().unwrap_or(0.0) as f32; 3]),
                Some(Value::Array(a)) if a.len() == 3 && a.iter().all(Value::is_number) => {
                    Ok([0, 1, 2].map(|i| a[i].as_f64().unwrap_or(0.0) as f32))
                }
                Some(other) => Err(format!("preprocess_cfg.{what} = {other}: expected one or three numbers")),
            }
        };
        let mean = channels(&p.mean, OPENAI_CLIP_MEAN, "mean")?;
        let std = channels(&p.std, OPENAI_CLIP_STD, "std")?;
        if std.contains(&0.0) {
            return Err(format!("preprocess_cfg.std {std:?} has a zero"));
        }
        let resample = match p.interpolation.as_deref() {
            None | Some("bicubic" | "random") => Resample::Bicubic,
            Some("bilinear") => Resample::Bilinear,
            Some(other) => return Err(format!("preprocess_cfg.interpolation {other:?}: expected bicubic or bilinear")),
        };
        let (resize, center_crop) = match p.resize_mode.as_deref() {
            None | Some("shortest") => (ResizeTo::ShortestEdge(side), Some((side, side))),
            Some("squash") => (ResizeTo::Exact { width: side, height: side }, None),
            Some(other) => {
                return Err(format!("preprocess_cfg.resize_mode {other:?} is not supported (shortest and squash are)"));
            }
        };
        Ok(ImageProcessor {
            resize: Some(resize),
            resample,
            center_crop,
            crop_offset: CropOffset::RoundHalfEven,
            rescale: Some(1.0 / 255.0),
            normalize: Some((mean, std)),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(json: &str) -> OpenClipConfig {
        serde_json::from_str(json).unwrap()
    }

    #[test]
    fn defaults_are_open_clips_and_quickgelu_switches_both_towers() {
        // open_clip's ViT-H-14-378-quickgelu.json as its hub config carries it.
        let c = parse(
            r#"{"model_cfg": {"embed_dim": 1024, "quick_gelu": true,
                "vision_cfg": {"image_size": 378, "layers": 32, "width": 1280, "head_width": 80, "patch_size": 14},
                "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 1024, "heads": 16, "layers": 24}},
                "preprocess_cfg": {"mean": [0.48145466, 0.4578275, 0.40821073], "std": [0.26862954, 0.26130258, 0.27577711]}}"#,
        );
        let clip = c.to_clip_config(49407).unwrap();
        let (v, t) = (&clip.vision_config, &clip.text_config);
        assert_eq!((v.hidden_size, v.num_attention_heads, v.intermediate_size, v.image_size), (1280, 16, 5120, 378));
        assert_eq!(
            (t.hidden_size, t.num_attention_heads, t.intermediate_size, t.max_position_embeddings),
            (1024, 16, 4096, 77)
        );
        assert_eq!((v.hidden_act, t.hidden_act), (HiddenAct::QuickGelu, HiddenAct::QuickGelu));
        assert_eq!((v.layer_norm_eps, clip.projection_dim), (1e-5, 1024));
        let p = c.processor().unwrap();
        assert_eq!(
            (p.resize, p.center_crop, p.resample),
            (Some(ResizeTo::ShortestEdge(378)), Some((378, 378)), Resample::Bicubic)
        );
        let bare = parse(r#"{"model_cfg": {"embed_dim": 512}}"#);
        let clip = bare.to_clip_config(49407).unwrap();
        assert_eq!((clip.vision_config.patch_size, clip.vision_config.hidden_act), (16, HiddenAct::Gelu));
        assert_eq!(bare.processor().unwrap().normalize, Some((OPENAI_CLIP_MEAN, OPENAI_CLIP_STD)));
    }

    #[test]
    fn mobileclip_configs_name_a_fastvit_and_a_bidirectional_text_tower() {
        // open_clip's MobileCLIP-S2.json as apple/MobileCLIP-S2-OpenCLIP carries it.
        let s2 = r#"{"model_cfg": {"embed_dim": 512, "vision_cfg": {"timm_model_name": "fastvit_mci2",
            "timm_model_pretrained": false, "timm_pool": "avg", "timm_proj": null, "timm_drop": 0.0,
            "timm_drop_path": 0.0, "image_size": 256}, "text_cfg": {"context_length": 77, "vocab_size": 49408,
            "width": 512, "heads": 8, "layers": 12, "no_causal_mask": true}, "custom_text": true},
            "preprocess_cfg": {"mean": [0, 0, 0], "std": [1, 1, 1], "interpolation": "bilinear",
            "resize_mode": "shortest"}}"#;
        let c = parse(s2);
        assert_eq!(c.fastvit_tower(), Ok(Some("fastvit_mci2")));
        assert_eq!(c.text_bidirectional_pad(), Ok(Some(0)));
        let clip = c.to_clip_config(49407).unwrap();
        assert_eq!((clip.projection_dim, clip.vision_config.image_size, clip.text_config.hidden_size), (512, 256, 512));
        let p = c.processor().unwrap();
        assert_eq!((p.resample, p.normalize), (Resample::Bilinear, Some(([0.0; 3], [1.0; 3]))));
        // A causal text tower (MobileCLIP-B's setting) pads as CLIP does.
        assert_eq!(
            parse(&s2.replace("\"no_causal_mask\": true", "\"no_causal_mask\": false")).text_bidirectional_pad(),
            Ok(None)
        );
        // open_clip's default timm_proj adds a projection after the head: not what was checked.
        let err = parse(&s2.replace("\"timm_proj\": null,", "")).fastvit_tower().unwrap_err();
        assert!(err.contains("timm_proj"), "{err}");
        // MobileCLIP-B's tower is a timm ViT with a convolutional stem: refused by name.
        let b = parse(&s2.replace("fastvit_mci2", "vit_base_mci_224"));
        assert_eq!(b.fastvit_tower(), Ok(None));
        assert!(b.to_clip_config(49407).unwrap_err().contains("vit_base_mci_224"));
        // A padding mask is not what open_clip's MobileCLIPs run.
        let masked = parse(&s2.replace("\"no_causal_mask\": true", "\"no_causal_mask\": true, \"use_pad_mask\": true"));
        assert!(masked.to_clip_config(49407).unwrap_err().contains("use_pad_mask"));
    }

    #[test]
    fn what_the_clip_towers_do_not_compute_is_refused_by_name() {
        for (json, said) in [
            (r#"{"embed_dim": 512, "vision_cfg": {"timm_model_name": "convnext_base"}}"#, "timm_model_name"),
            (r#"{"embed_dim": 512, "vision_cfg": {"layers": [3, 4, 6, 3]}}"#, "ResNet"),
            (r#"{"embed_dim": 512, "vision_cfg": {"ls_init_value": 1e-5}}"#, "vision_cfg.ls_init_value"),
            (r#"{"embed_dim": 512, "text_cfg": {"hf_model_name": "xlm-roberta-base"}}"#, "hf_model_name"),
            (r#"{"embed_dim": 512, "text_cfg": {"pool_type": "last"}}"#, "text_cfg.pool_type"),
            (r#"{"embed_dim": 512, "init_logit_bias": -10}"#, "init_logit_bias"),
            (r#"{"embed_dim": 512, "vision_cfg": {"image_size": [224, 256]}}"#, "square"),
        ] {
            let c = parse(&format!(r#"{{"model_cfg": {json}}}"#));
            let err = c.to_clip_config(49407).unwrap_err();
            assert!(err.contains(said), "{json}: {err}");
        }
        let longest = parse(r#"{"model_cfg": {"embed_dim": 8}, "preprocess_cfg": {"resize_mode": "longest"}}"#);
        assert!(longest.processor().unwrap_err().contains("longest"));
        // Options at their defaults are fine.
        let plain = parse(
            r#"{"model_cfg": {"embed_dim": 512, "vision_cfg": {"pool_type": "tok", "ls_init_value": null},
                "text_cfg": {"proj_type": "linear", "norm_kwargs": {"eps": 1e-6}}}}"#,
        );
        assert_eq!(plain.to_clip_config(49407).unwrap().text_config.layer_norm_eps, 1e-6);
    }
}
