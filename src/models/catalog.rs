//! The checkpoints clipdex recommends (`clipdex models`): what each is, how large, and how well
//! it is published to retrieve, with the source of every figure. Only families clipdex loads
//! are listed (CLIP, OpenCLIP, MobileCLIP, SigLIP and fixed-resolution SigLIP 2, Chinese-CLIP).
//!
//! Weight sizes are computed from each architecture's shapes (parameters × 4 bytes, the f32
//! clipdex loads), not copied from the hub; the same formulas count the fixture checkpoints'
//! tensors exactly (tested). Speeds are `None` unless measured with clipdex on this project's
//! machines at the real shapes: none are yet (this project's builds here are debug builds on
//! a shared two-core machine); `clipdex bench --model ID` measures them on yours.

use serde::Serialize;

/// A published quality figure and where it was published.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct Published {
    /// What was measured.
    pub metric: &'static str,
    /// The figure, in percent.
    pub value: f32,
    /// Where it was published.
    pub source: &'static str,
}

/// One recommended checkpoint.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct CatalogEntry {
    /// Hub id (`--model`).
    pub id: &'static str,
    /// `clip`, `open_clip`, `mobileclip`, `siglip` or `chinese_clip`, as `stats` and the library
    /// name it.
    pub family: &'static str,
    /// Input side in pixels.
    pub image_size: u32,
    /// Embedding width.
    pub embedding_width: u32,
    /// The languages its text tower was trained for.
    pub languages: &'static str,
    /// Parameters, from the architecture's shapes.
    pub parameters: u64,
    /// f32 weights in MB (10⁶ bytes): what clipdex holds in memory.
    pub weights_mb: u64,
    /// Published retrieval or zero-shot figures.
    pub published: &'static [Published],
    /// Milliseconds to embed one image on this project's CPU, where measured with clipdex.
    pub image_embed_ms: Option<f64>,
    /// Milliseconds to embed one text query, where measured with clipdex.
    pub text_query_ms: Option<f64>,
}

/// Immich's figure: English text-to-image retrieval, the mean of recall@1, @5 and @10 on
/// Crossmodal-3600.
const IMMICH_RECALL: &str = "mean of R@1/5/10, English, Crossmodal-3600";
const IMMICH: &str = "Immich's CLIP model comparison table (immich.app docs, smart search models)";
const IMAGENET: &str = "zero-shot ImageNet-1k top-1";

/// A two-tower ViT's shapes, enough to count its parameters.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Shapes {
    pub(crate) kind: Kind,
    pub(crate) image: u64,
    pub(crate) patch: u64,
    pub(crate) vision_width: u64,
    pub(crate) vision_layers: u64,
    pub(crate) vision_mlp: u64,
    pub(crate) vocab: u64,
    pub(crate) context: u64,
    pub(crate) text_width: u64,
    pub(crate) text_layers: u64,
    pub(crate) text_mlp: u64,
    pub(crate) embed: u64,
}

/// How the towers differ between families.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum Kind {
    /// CLIP and OpenCLIP: class token, causal text transformer, projections without bias.
    Clip,
    /// SigLIP: no class token, a patch bias, the attention-pooling head, a text `head` with bias.
    Siglip,
    /// Chinese-CLIP: CLIP's image tower, a BERT text tower (token types, embedding norm).
    ChineseClip,
    /// MobileCLIP: a FastViT image tower of `vision` parameters (counted in open_clip's
    /// unfused model: BatchNorm weights and parallel branches included, running statistics
    /// not), open_clip's CLIP text tower.
    FastVit {
        /// The image tower's parameters, its head included.
        vision: u64,
    },
}

impl Shapes {
    /// The parameters of the checkpoint (buffers such as `position_ids` not counted).
    pub(crate) fn parameters(&self) -> u64 {
        let layer = |w: u64, m: u64| 4 * (w * w + w) + (w * m + m) + (m * w + w) + 4 * w;
        let (w, g) = (self.vision_width, self.image / self.patch);
        let patch = 3 * self.patch * self.patch * w;
        let encoder = self.vision_layers * layer(w, self.vision_mlp);
        let vision = match self.kind {
            Kind::FastVit { vision } => vision,
            Kind::Clip | Kind::ChineseClip => patch + w + (g * g + 1) * w + 4 * w + encoder + w * self.embed,
            Kind::Siglip => {
                let head = w
                    + (3 * w * w + 3 * w)
                    + (w * w + w)
                    + 2 * w
                    + (w * self.vision_mlp + self.vision_mlp)
                    + (self.vision_mlp * w + w);
                patch + w + g * g * w + encoder + 2 * w + head
            }
        };
        let t = self.text_width;
        let tokens = (self.vocab + self.context) * t + self.text_layers * layer(t, self.text_mlp);
        let text = match self.kind {
            Kind::Clip | Kind::FastVit { .. } => tokens + 2 * t + t * self.embed + 1,
            Kind::Siglip => tokens + 2 * t + t * self.embed + self.embed + 2,
            Kind::ChineseClip => tokens + 2 * t + 2 * t + t * self.embed + 1,
        };
        vision + text
    }
}

const fn vit(kind: Kind, image: u64, patch: u64, width: u64, layers: u64) -> Shapes {
    Shapes {
        kind,
        image,
        patch,
        vision_width: width,
        vision_layers: layers,
        vision_mlp: 4 * width,
        vocab: 49408,
        context: 77,
        text_width: 512,
        text_layers: 12,
        text_mlp: 2048,
        embed: 512,
    }
}

const fn siglip(image: u64, patch: u64, vocab: u64) -> Shapes {
    Shapes {
        vocab,
        context: 64,
        text_width: 768,
        text_mlp: 3072,
        embed: 768,
        ..vit(Kind::Siglip, image, patch, 768, 12)
    }
}

/// A MobileCLIP with a 512-wide CLIP text tower: `vision` from open_clip's
/// `create_model("MobileCLIP-S2")` (the patch size is not read).
const fn mobileclip(image: u64, vision: u64) -> Shapes {
    Shapes { kind: Kind::FastVit { vision }, ..vit(Kind::Clip, image, 1, 768, 12) }
}

/// fastvit_mci2 with its 512-wide head, as open_clip builds MobileCLIP-S2 and MobileCLIP2-S2.
const FASTVIT_MCI2_PARAMETERS: u64 = 35_815_232;

/// The recommended checkpoints with their shapes, best published quality last within a family.
const MODELS: &[(&str, &str, &str, Shapes, &[Published])] = &[
    (
        "openai/clip-vit-base-patch32",
        "clip",
        "English",
        vit(Kind::Clip, 224, 32, 768, 12),
        &[
            Published { metric: IMMICH_RECALL, value: 59.4, source: IMMICH },
            Published { metric: IMAGENET, value: 63.3, source: "Radford et al. 2021, CLIP (arXiv:2103.00020)" },
        ],
    ),
    (
        "laion/CLIP-ViT-B-32-laion2B-s34B-b79K",
        "open_clip",
        "English",
        vit(Kind::Clip, 224, 32, 768, 12),
        &[Published { metric: IMMICH_RECALL, value: 68.8, source: IMMICH }],
    ),
    ("laion/CLIP-ViT-B-32-256x256-DataComp-s34B-b86K", "open_clip", "English", vit(Kind::Clip, 256, 32, 768, 12), &[]),
    (
        "apple/DFN5B-CLIP-ViT-H-14-378",
        "open_clip",
        "English",
        Shapes {
            vision_mlp: 5120,
            text_width: 1024,
            text_layers: 24,
            text_mlp: 4096,
            embed: 1024,
            ..vit(Kind::Clip, 378, 14, 1280, 32)
        },
        &[Published { metric: IMMICH_RECALL, value: 75.7, source: IMMICH }],
    ),
    (
        "apple/MobileCLIP-S2-OpenCLIP",
        "mobileclip",
        "English",
        mobileclip(256, FASTVIT_MCI2_PARAMETERS),
        &[Published { metric: IMAGENET, value: 74.4, source: "Vasu et al. 2024, MobileCLIP (arXiv:2311.17049)" }],
    ),
    (
        "timm/MobileCLIP2-S2-OpenCLIP",
        "mobileclip",
        "English",
        mobileclip(256, FASTVIT_MCI2_PARAMETERS),
        &[Published { metric: IMAGENET, value: 77.2, source: "Faghri et al. 2025, MobileCLIP2 (arXiv:2508.20691)" }],
    ),
    ("google/siglip-base-patch16-224", "siglip", "English", siglip(224, 16, 32000), &[]),
    (
        "google/siglip2-base-patch32-256",
        "siglip",
        "multilingual",
        siglip(256, 32, 256000),
        &[Published { metric: IMMICH_RECALL, value: 73.2, source: IMMICH }],
    ),
    (
        "google/siglip2-base-patch16-224",
        "siglip",
        "multilingual",
        siglip(224, 16, 256000),
        &[
            Published { metric: IMMICH_RECALL, value: 75.2, source: IMMICH },
            Published { metric: IMAGENET, value: 78.2, source: "Tschannen et al. 2025, SigLIP 2 (arXiv:2502.14786)" },
        ],
    ),
    (
        "OFA-Sys/chinese-clip-vit-base-patch16",
        "chinese_clip",
        "Chinese",
        Shapes {
            vocab: 21128,
            context: 512,
            text_width: 768,
            text_mlp: 3072,
            ..vit(Kind::ChineseClip, 224, 16, 768, 12)
        },
        &[Published {
            metric: "text-to-image R@1, Flickr30K-CN, zero-shot",
            value: 62.7,
            source: "OFA-Sys/Chinese-CLIP Results.md; Yang et al. 2022 (arXiv:2211.01335)",
        }],
    ),
];

/// The recommended checkpoints.
pub fn recommended() -> Vec<CatalogEntry> {
    MODELS
        .iter()
        .map(|&(id, family, languages, shapes, published)| {
            let parameters = shapes.parameters();
            CatalogEntry {
                id,
                family,
                image_size: shapes.image as u32,
                embedding_width: shapes.embed as u32,
                languages,
                parameters,
                weights_mb: (parameters * 4).div_ceil(1_000_000),
                published,
                image_embed_ms: None,
                text_query_ms: None,
            }
        })
        .collect()
}

/// The plain recommendation: best quality, best speed on a CPU, best multilingual.
pub const RECOMMENDATION: &[(&str, &str, &str)] = &[
    (
        "best quality",
        "apple/DFN5B-CLIP-ViT-H-14-378",
        "the highest published recall here, at 4 GB of weights and over 100× ViT-B/32's image compute (730 tokens \
         of width 1280 through 32 layers, against 50 of 768 through 12): for a GPU, or a CPU that indexes overnight",
    ),
    (
        "best speed on a CPU",
        "laion/CLIP-ViT-B-32-laion2B-s34B-b79K",
        "ViT-B/32's cost (49 patches an image, the cheapest here) with 9 points more recall than OpenAI's B/32",
    ),
    (
        "best multilingual",
        "google/siglip2-base-patch16-224",
        "SigLIP 2 was trained on multilingual WebLI with a multilingual tokenizer, and is published second only to \
         DFN's H/14, at 38% of its weights and about a thirtieth of its image compute (for mostly-Chinese libraries: OFA-Sys/chinese-clip-vit-base-patch16)",
    ),
];

#[cfg(test)]
mod tests {
    use super::*;

    fn fixture_parameters(dir: &str) -> u64 {
        let path =
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures").join(dir).join("model.safetensors");
        let tensors = candle_core::safetensors::load(&path, &candle_core::Device::Cpu).unwrap();
        tensors.iter().filter(|(k, _)| !k.ends_with("position_ids")).map(|(_, t)| t.elem_count() as u64).sum()
    }

    #[test]
    fn the_parameter_formulas_count_the_fixture_checkpoints_exactly() {
        // The shapes of clip-tiny-p32's, siglip-tiny-p10's and chinese-clip-tiny-p16's config.json.
        let read = |dir: &str| -> serde_json::Value {
            let p =
                std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures").join(dir).join("config.json");
            serde_json::from_str(&std::fs::read_to_string(p).unwrap()).unwrap()
        };
        let n = |v: &serde_json::Value, k: &str| v[k].as_u64().unwrap_or_else(|| panic!("{k} in {v}"));
        let from = |dir: &str, kind: Kind| -> Shapes {
            let c = read(dir);
            let (t, v) = (&c["text_config"], &c["vision_config"]);
            Shapes {
                kind,
                image: n(v, "image_size"),
                patch: n(v, "patch_size"),
                vision_width: n(v, "hidden_size"),
                vision_layers: n(v, "num_hidden_layers"),
                vision_mlp: n(v, "intermediate_size"),
                vocab: n(t, "vocab_size"),
                context: n(t, "max_position_embeddings"),
                text_width: n(t, "hidden_size"),
                text_layers: n(t, "num_hidden_layers"),
                text_mlp: n(t, "intermediate_size"),
                embed: match kind {
                    Kind::Siglip => t["projection_size"].as_u64().unwrap_or(n(v, "hidden_size")),
                    _ => n(&c, "projection_dim"),
                },
            }
        };
        for (dir, kind) in [
            ("clip-tiny-p32", Kind::Clip),
            ("siglip-tiny-p10", Kind::Siglip),
            ("chinese-clip-tiny-p16", Kind::ChineseClip),
        ] {
            assert_eq!(from(dir, kind).parameters(), fixture_parameters(dir), "{dir}");
        }
    }

    #[test]
    fn the_catalogue_has_the_published_sizes() {
        let all = recommended();
        let find = |id: &str| all.iter().find(|e| e.id == id).unwrap();
        // OpenAI's paper: ViT-B/32 is 151M parameters; SigLIP's base model card: 203M.
        assert_eq!(find("openai/clip-vit-base-patch32").parameters / 1_000_000, 151);
        assert_eq!(find("google/siglip-base-patch16-224").parameters / 1_000_000, 203);
        // open_clip's MobileCLIP-S2: 99,243,329 parameters (its FastViT 35,815,232).
        assert_eq!(find("apple/MobileCLIP-S2-OpenCLIP").parameters, 99_243_329);
        assert!(RECOMMENDATION.iter().all(|(_, id, _)| all.iter().any(|e| e.id == *id)));
        assert!(all.iter().all(|e| e.image_embed_ms.is_none() && e.text_query_ms.is_none()));
    }
}
