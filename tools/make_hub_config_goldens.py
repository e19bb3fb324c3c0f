#!/usr/bin/env python3
"""What transformers derives from the configuration files the Hugging Face hub really ships.

tests/fixtures/hub-configs/ holds those files verbatim (tests/fixtures/hub-configs/SOURCES.md
says where each copy comes from). This script loads each with the pinned transformers and
writes tests/fixtures/hub-configs/derived.json: the shapes, special token ids, context length,
image size and preprocessing the reference takes from them. tests/hub_configs.rs checks that
clipdex derives the same. No weights are involved.

    ~/venv-ref/bin/python tools/make_hub_config_goldens.py
"""

from __future__ import annotations

import json
from pathlib import Path

import transformers
from transformers import AutoConfig, AutoImageProcessor

ROOT = Path(__file__).resolve().parent.parent / "tests" / "fixtures" / "hub-configs"
TEXT_KEYS = ["vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads",
             "max_position_embeddings", "hidden_act", "layer_norm_eps", "bos_token_id", "eos_token_id",
             "sep_token_id", "pad_token_id", "encoder_hidden_size"]
VISION_KEYS = ["hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads", "image_size",
               "patch_size", "hidden_act", "layer_norm_eps", "num_channels"]


def pick(config, keys: list[str]) -> dict:
    return {k: getattr(config, k) for k in keys if getattr(config, k, None) is not None}


def derive(model_dir: Path) -> dict:
    config = AutoConfig.from_pretrained(model_dir)
    out: dict = {"model_type": config.model_type, "projection_dim": getattr(config, "projection_dim", None),
                 "text": pick(config.text_config, TEXT_KEYS), "vision": pick(config.vision_config, VISION_KEYS)}
    if config.model_type == "blip":
        out["image_text_hidden_size"] = config.image_text_hidden_size
        # BlipForConditionalGeneration.generate stops at the text config's sep_token_id.
        out["stop_token_id"] = config.text_config.sep_token_id
    if config.model_type in ("clip", "clipseg"):
        # CLIPTextTransformer pools at the highest token id when eos_token_id is 2 (legacy).
        out["legacy_pooling"] = config.text_config.eos_token_id == 2
    if (model_dir / "preprocessor_config.json").exists():
        p = AutoImageProcessor.from_pretrained(model_dir)
        out["processor"] = {
            "class": type(p).__name__, "size": dict(p.size), "resample": int(p.resample),
            "do_resize": p.do_resize, "do_center_crop": getattr(p, "do_center_crop", False),
            "crop_size": dict(p.crop_size) if getattr(p, "crop_size", None) else None,
            "do_rescale": p.do_rescale, "rescale_factor": p.rescale_factor,
            "do_normalize": p.do_normalize, "image_mean": list(p.image_mean), "image_std": list(p.image_std),
        }
    return out


def main() -> None:
    derived = {"transformers": transformers.__version__, "models": {}}
    for model_dir in sorted(p for p in ROOT.iterdir() if p.is_dir()):
        derived["models"][model_dir.name] = derive(model_dir)
        print(model_dir.name, json.dumps(derived["models"][model_dir.name]))
    (ROOT / "derived.json").write_text(json.dumps(derived, indent=1) + "\n")


if __name__ == "__main__":
    main()
