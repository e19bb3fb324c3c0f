#!/usr/bin/env python3
"""Generate the SigLIP test fixtures: tiny random `SiglipModel`s in the Hugging Face layout, built
from the real `google/siglip-base-patch16-224` config.json with the layer counts and widths cut,
a tiny SentencePiece unigram `spiece.model` trained here, and golden token ids, embeddings and
sigmoid zero-shot probabilities from transformers (the reference).

    /root/venv-torch/bin/python tools/make_siglip_fixtures.py [path/to/hub/config.json]

Pinned packages: tools/requirements.txt and tools/requirements-siglip.txt (sentencepiece).
The two models differ in every shape that could hide a bug (heads, widths, patch and input
sizes, a text width apart from the embedding width through the text `head`). Weights are scaled
so that every path (the attention-pooling head, the text head, the last-token pooling, the
padding) visibly changes the output. Seeded: a re-run with the same versions writes the same
files (SentencePiece training is deterministic on one thread).
"""

from __future__ import annotations

import io
import json
import math
import shutil
import sys
from pathlib import Path

import numpy as np
import sentencepiece as spm
import torch
import transformers
from PIL import Image, ImageOps
from transformers import SiglipConfig, SiglipImageProcessor, SiglipModel, SiglipTokenizer

ROOT = Path(__file__).resolve().parent.parent
FIX = ROOT / "tests" / "fixtures"
IMAGES = FIX / "images"
GOLDEN = FIX / "golden"
HUB_CONFIG = FIX / "hub-configs-siglip" / "google--siglip-base-patch16-224" / "config.json"
CONTEXT = 64

# Training text for the tiny SentencePiece model: photo captions, words and a little of
# everything the test texts hold, so that most test texts split into real pieces.
WORDS = ("a photo of the cat dog car rocket coffee cup camera astronaut sitting on sofa beach sunset "
         "mountain lake city night street people portrait panorama black white small large dark bright "
         "blurry picture showing close up snapshot red green blue tree flower bird house window garden "
         "kitchen table food plate birthday party wedding snow rain summer winter morning evening").split()

TEXTS = [
    "",
    "a photo of a cat",
    "A Photo Of A CAT!!",
    "a photo of a dog.",
    "an astronaut, on the moon; (in 1969)",
    "  leading and trailing spaces  ",
    "tabs\tand\nnewlines   and    spaces",
    "don't stop-believing: it's 3.14159",
    "naïve café résumé Ångström",
    "Straße in München, Ölgemälde",
    "ＦＵＬＬＷＩＤＴＨ ｃａｔ",
    "🐶🐱 猫和狗 🚗",
    "unaffable antidisestablishmentarianism",
    "_under_scores_ and ~tildes~ and {braces}",
    "a photo of the sunset over the mountain lake " * 8,
]

ZEROSHOT_LABELS = ["cat", "dog", "rocket", "cup of coffee", "camera", "astronaut"]
ZEROSHOT_TEMPLATE = "a photo of a {}."

IMAGE_FILES = [
    "astronaut.jpg",
    "chelsea_exif6.jpg",  # portrait once upright
    "panorama_4000x300.jpg",  # stretched on one side, squeezed on the other
    "pixel_1x1.png",
    "coffee.png",
    "camera_gray.jpg",
    "rocket.webp",
]

FIXTURES = {
    # Text width = embedding width; patch 16 at 64 px.
    "siglip-tiny-p16": {
        "seed": 16,
        "text": {"hidden_size": 32, "intermediate_size": 48, "num_hidden_layers": 2, "num_attention_heads": 4},
        "vision": {"hidden_size": 32, "intermediate_size": 56, "num_hidden_layers": 2, "num_attention_heads": 2,
                   "patch_size": 16, "image_size": 64},
    },
    # A text tower narrower than the embedding (its head projects 24 -> 40); odd heads, patch
    # 10 at 50 px.
    "siglip-tiny-p10": {
        "seed": 10,
        "text": {"hidden_size": 24, "intermediate_size": 40, "num_hidden_layers": 3, "num_attention_heads": 3,
                 "projection_size": 40},
        "vision": {"hidden_size": 40, "intermediate_size": 64, "num_hidden_layers": 3, "num_attention_heads": 5,
                   "patch_size": 10, "image_size": 50},
    },
}


def train_spiece(out: Path) -> None:
    rng = np.random.default_rng(7)
    sentences = []
    for _ in range(600):
        n = int(rng.integers(3, 12))
        sentences.append(" ".join(rng.choice(WORDS, n)))
    sentences += [t for t in TEXTS if t.strip()] * 3
    model = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(sentences), model_writer=model, model_type="unigram", vocab_size=180,
        pad_id=0, eos_id=1, unk_id=2, bos_id=-1, pad_piece="<pad>", eos_piece="</s>", unk_piece="<unk>",
        character_coverage=0.9995, num_threads=1, shuffle_input_sentence=False, seed_sentencepiece_size=10000,
    )
    (out / "spiece.model").write_bytes(model.getvalue())


def perturb_(model: torch.nn.Module, gen: torch.Generator) -> None:
    """Weights under which every path visibly changes the output, rounded to fp16 once (the
    saved weights are f32, but exact halves keep the goldens independent of summation order)."""
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name in ("logit_scale", "logit_bias"):
                continue
            lower = name.lower()
            shape = p.shape
            if "layernorm" in lower or "layer_norm" in lower:
                p.copy_(1.0 + 0.4 * torch.randn(shape, generator=gen) if name.endswith("weight")
                        else 0.3 * torch.randn(shape, generator=gen))
            elif name.endswith("bias"):
                p.copy_(0.2 * torch.randn(shape, generator=gen))
            elif ("embedding" in lower and "patch" not in lower) or name.endswith("probe"):
                p.copy_(0.8 * torch.randn(shape, generator=gen))
            else:
                fan_in = int(np.prod(shape[1:])) if p.dim() > 1 else shape[0]
                gain = 3.0 if "self_attn" in name or ".attention." in name else 1.3
                p.copy_(gain * torch.randn(shape, generator=gen) / math.sqrt(fan_in))
        model.logit_scale.fill_(math.log(10.0))
        model.logit_bias.fill_(-2.5)
        for p in model.parameters():
            p.copy_(p.half().float())


def unit(v: torch.Tensor) -> list[float]:
    v = v / v.norm(dim=-1, keepdim=True)
    return [float(x) for x in v.reshape(-1)]


def upright_rgb(path: Path) -> Image.Image:
    return ImageOps.exif_transpose(Image.open(path)).convert("RGB")


def write_fixture(name: str, spec: dict, hub: dict) -> None:
    out = FIX / name
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    train_spiece(out)
    tok = SiglipTokenizer(str(out / "spiece.model"), model_max_length=CONTEXT)
    tok.save_pretrained(out)
    # save_pretrained writes a copy of spiece.model and its config; no tokenizer.json (as the hub).
    for extra in ("special_tokens_map.json", "added_tokens.json"):
        (out / extra).unlink(missing_ok=True)

    config_dict = json.loads(json.dumps(hub))
    config_dict["text_config"].update(spec["text"], vocab_size=tok.vocab_size)
    config_dict["vision_config"].update(spec["vision"])
    torch.manual_seed(spec["seed"])
    config = SiglipConfig(**{k: v for k, v in config_dict.items() if k in ("text_config", "vision_config")})
    model = SiglipModel(config).eval()
    perturb_(model, torch.Generator().manual_seed(spec["seed"]))
    model.save_pretrained(out, safe_serialization=True)

    side = spec["vision"]["image_size"]
    proc = SiglipImageProcessor(size={"height": side, "width": side})
    proc.save_pretrained(out)

    golden: dict = {
        "model_dir": name,
        "dim": spec["vision"]["hidden_size"],
        "logit_scale": float(model.logit_scale.exp().detach()),
        "logit_bias": float(model.logit_bias.detach()),
        "max_length": CONTEXT,
        "versions": {"torch": torch.__version__, "transformers": transformers.__version__,
                     "sentencepiece": spm.__version__, "pillow": Image.__version__},
        "texts": [],
        "images": [],
    }
    with torch.no_grad():
        for text in TEXTS:
            enc = tok(text, padding="max_length", max_length=CONTEXT, truncation=True, return_tensors="pt")
            # The model was trained without a mask: SigLIP's own pipeline pools the last (padding)
            # position over unmasked attention, as get_text_features does given only the ids.
            emb = model.get_text_features(input_ids=enc["input_ids"])
            golden["texts"].append({"text": text, "ids": enc["input_ids"][0].tolist(), "embedding": unit(emb)})
        prompts = [ZEROSHOT_TEMPLATE.format(label) for label in ZEROSHOT_LABELS]
        enc = tok(prompts, padding="max_length", max_length=CONTEXT, truncation=True, return_tensors="pt")
        labels = model.get_text_features(input_ids=enc["input_ids"])
        labels = labels / labels.norm(dim=-1, keepdim=True)
        golden["zeroshot"] = {"labels": ZEROSHOT_LABELS, "template": ZEROSHOT_TEMPLATE}
        for file in IMAGE_FILES:
            rgb = upright_rgb(IMAGES / file)
            pv = proc(images=rgb, return_tensors="pt", input_data_format="channels_last")["pixel_values"]
            out_all = model(input_ids=enc["input_ids"], pixel_values=pv)
            emb = model.get_image_features(pixel_values=pv)
            probs = torch.sigmoid(out_all.logits_per_image)
            golden["images"].append({"file": file, "embedding": unit(emb),
                                     "probabilities": [float(x) for x in probs[0]]})
    spread = [max(im["probabilities"]) - min(im["probabilities"]) for im in golden["images"]]
    print(f"{name}: probability spread per image {['%.3f' % s for s in spread]}")
    (GOLDEN / f"{name}.json").write_text(json.dumps(golden, indent=1, ensure_ascii=False))
    print(f"wrote {out} and its goldens")


def write_hub_derived(hub: dict) -> None:
    """What transformers derives from the real hub config.json (tests/hub_configs.rs reads it)."""
    c = SiglipConfig(**{k: v for k, v in hub.items() if k in ("text_config", "vision_config")})
    t, v = c.text_config, c.vision_config
    keys = ["hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads", "hidden_act",
            "layer_norm_eps"]
    derived = {
        "text": {**{k: getattr(t, k) for k in keys}, "vocab_size": t.vocab_size,
                 "max_position_embeddings": t.max_position_embeddings, "projection_size": t.projection_size},
        "vision": {**{k: getattr(v, k) for k in keys}, "image_size": v.image_size, "patch_size": v.patch_size,
                   "num_channels": v.num_channels},
        "processor": SiglipImageProcessor().to_dict(),
    }
    derived["processor"].pop("image_processor_type", None)
    (GOLDEN / "siglip-hub-config.json").write_text(json.dumps(derived, indent=1))


def main() -> None:
    path = Path(sys.argv[1]) if len(sys.argv) > 1 else HUB_CONFIG
    hub = json.loads(path.read_text())
    assert hub["model_type"] == "siglip"
    write_hub_derived(hub)
    for name, spec in FIXTURES.items():
        write_fixture(name, spec, hub)


if __name__ == "__main__":
    main()
