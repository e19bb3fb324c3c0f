#!/usr/bin/env python3
"""Generate the Chinese-CLIP test fixtures: tiny random `ChineseCLIPModel`s in the Hugging Face
layout with Chinese-CLIP's real WordPiece vocabulary, and golden token ids and embeddings from
transformers (the reference).

    ~/venv-ref/bin/pip download cn-clip==1.6.0 --no-deps -d /tmp/cnclip   # for its vocab.txt
    ~/venv-ref/bin/python tools/make_chinese_clip_fixtures.py /tmp/cnclip/cn_clip-1.6.0-py3-none-any.whl

The two models differ in every shape that could hide a bug (heads, widths, depths, patch and
input sizes), one ships only `vocab.txt` (as the hub's main branch does) and safetensors, the
other a `tokenizer.json` too and a PyTorch pickle. Weights are scaled so that every path (the
padding mask, the token-type row, the post-norm layers, the image tower) visibly changes the
output. Seeded: a re-run with the same versions writes the same files.
"""

from __future__ import annotations

import json
import math
import shutil
import sys
import zipfile
from pathlib import Path

import numpy as np
import torch
import transformers
from PIL import Image, ImageOps
from transformers import (
    BertTokenizer,
    BertTokenizerFast,
    ChineseCLIPConfig,
    ChineseCLIPImageProcessor,
    ChineseCLIPModel,
)

ROOT = Path(__file__).resolve().parent.parent
FIX = ROOT / "tests" / "fixtures"
IMAGES = FIX / "images"
GOLDEN = FIX / "golden"

# Chinese-CLIP's context: its tokenizer truncates to 52 tokens.
CONTEXT = 52
MEAN = [0.48145466, 0.4578275, 0.40821073]
STD = [0.26862954, 0.26130258, 0.27577711]

TEXTS = [
    "",
    "一只猫坐在沙发上",
    "杰尼龟",
    "皮卡丘和小火龙在草地上玩耍",
    "北京天安门广场的夜景，灯火辉煌。",
    "a photo of a cat",
    "A Photo Of A CAT!!",
    "一只 dog 和一只 cat 在公园里",
    "２０２４年５月１日　ＡＢＣ　全角文字",
    "東京タワーと富士山の写真",
    "ひらがなとカタカナ",
    "서울의 밤 풍경 사진",
    "naïve café résumé Ångström",
    "cafe\u0301 (decomposed accent)",
    "Straße in München, Ölgemälde",
    "¿Dónde está la playa? ¡Aquí!",
    "Фотография кошки на диване",
    "🐶🐱 猫和狗 🚗",
    "tabs\tand\nnewlines   and    spaces",
    "control\u0000chars\u0007here\u200b",
    "1234 3.14159 2024-05-01",
    "[CLS] 已经 [SEP] 特殊 [MASK] 词",
    "unaffable antidisestablishmentarianism",
    "中文" * 40,
    " ".join(["夕阳下的山和湖"] * 12),
    "x" * 400,
]

# Zero-shot tagging in Chinese: labels and the prompt CN-CLIP's own zero-shot evaluation uses.
ZEROSHOT_LABELS = ["猫", "狗", "火箭", "一杯咖啡", "相机", "宇航员"]
ZEROSHOT_TEMPLATE = "{}的照片。"

IMAGE_FILES = [
    "astronaut.jpg",
    "chelsea_exif6.jpg",  # portrait once upright
    "panorama_4000x300.jpg",  # stretched on one side, squeezed on the other
    "pixel_1x1.png",  # upscaled on both
    "coffee_palette.gif",
    "camera_gray.jpg",
    "rocket.webp",
    "coffee.png",
    "chelsea_small.bmp",
    "camera_gray.png",
    "astronaut_rgba.png",
]

FIXTURES = {
    # vocab.txt only (the hub's main branch), safetensors, patch 16 at 224 px.
    "chinese-clip-tiny-p16": {
        "seed": 16,
        "weights": "safetensors",
        "tokenizer_json": False,
        "image": 224,
        "projection_dim": 24,
        "text": {"hidden_size": 32, "intermediate_size": 48, "num_hidden_layers": 2, "num_attention_heads": 4,
                 "max_position_embeddings": 64, "type_vocab_size": 2, "hidden_act": "gelu",
                 "layer_norm_eps": 1e-12},
        "vision": {"hidden_size": 24, "intermediate_size": 40, "num_hidden_layers": 2, "num_attention_heads": 2,
                   "patch_size": 16, "image_size": 224, "hidden_act": "quick_gelu", "layer_norm_eps": 1e-5},
    },
    # tokenizer.json too, a PyTorch pickle, patch 32 at 160 px, other heads and depths.
    "chinese-clip-tiny-p32": {
        "seed": 35,  # seed 32 pools nearly every text alike (mean cosine 0.93); 35: 0.52
        "weights": "bin",
        "tokenizer_json": True,
        "image": 160,
        "projection_dim": 16,
        "text": {"hidden_size": 24, "intermediate_size": 36, "num_hidden_layers": 3, "num_attention_heads": 2,
                 "max_position_embeddings": 52, "type_vocab_size": 2, "hidden_act": "gelu",
                 "layer_norm_eps": 1e-12},
        "vision": {"hidden_size": 32, "intermediate_size": 48, "num_hidden_layers": 3, "num_attention_heads": 4,
                   "patch_size": 32, "image_size": 160, "hidden_act": "quick_gelu", "layer_norm_eps": 1e-5},
    },
}


def perturb_(model: torch.nn.Module, gen: torch.Generator) -> None:
    """Weights under which every path visibly changes the output (the default init, std 0.02,
    makes tiny models nearly linear and attention nearly uniform), rounded to fp16 once so the
    saved half-precision weights are exactly those the goldens were computed with."""
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("logit_scale"):
                continue
            lower = name.lower()
            shape = p.shape
            if "layernorm" in lower or "layer_norm" in lower or "layrnorm" in lower:
                p.copy_(1.0 + 0.4 * torch.randn(shape, generator=gen) if name.endswith("weight")
                        else 0.3 * torch.randn(shape, generator=gen))
            elif name.endswith("bias"):
                p.copy_(0.2 * torch.randn(shape, generator=gen))
            elif "embedding" in lower and p.dim() <= 2 and "patch" not in lower:
                p.copy_(0.8 * torch.randn(shape, generator=gen))
            else:
                fan_in = int(np.prod(shape[1:])) if p.dim() > 1 else shape[0]
                # Sharper attention in the text tower: the pooled [CLS] state learns about the
                # other tokens only through attention, which at the usual scale stays nearly
                # uniform and leaves every text with almost the same embedding.
                gain = 3.0 if name.startswith("text_model.") and ".attention." in name else 1.3
                p.copy_(gain * torch.randn(shape, generator=gen) / math.sqrt(fan_in))
        for p in model.parameters():
            p.copy_(p.half().float())


def unit(v: torch.Tensor) -> list[float]:
    v = v / v.norm(dim=-1, keepdim=True)
    return [float(x) for x in v.reshape(-1)]


def upright_rgb(path: Path) -> Image.Image:
    img = Image.open(path)
    img = ImageOps.exif_transpose(img)
    return img.convert("RGB")


def write_fixture(name: str, spec: dict, vocab_txt: str) -> None:
    out = FIX / name
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    (out / "vocab.txt").write_text(vocab_txt, encoding="utf-8")
    # Lines end at "\n" only: the vocabulary holds U+2028, which splitlines() would also split at.
    vocab_size = len(vocab_txt.rstrip("\n").split("\n"))
    slow = BertTokenizer(str(out / "vocab.txt"), do_lower_case=True, model_max_length=CONTEXT)
    fast = BertTokenizerFast(str(out / "vocab.txt"), do_lower_case=True, model_max_length=CONTEXT)
    # The hub's tokenizer_config.json names the slow class; AutoTokenizer still builds the fast
    # one from vocab.txt, whose ids must agree (asserted below).
    (out / "tokenizer_config.json").write_text(json.dumps(
        {"do_lower_case": True, "model_max_length": CONTEXT, "tokenizer_class": "BertTokenizer"}, indent=2))
    if spec["tokenizer_json"]:
        fast.backend_tokenizer.save(str(out / "tokenizer.json"))
        tj = out / "tokenizer.json"
        tj.write_text(json.dumps(json.loads(tj.read_text(encoding="utf-8")), ensure_ascii=False,
                                 separators=(",", ":")), encoding="utf-8")

    torch.manual_seed(spec["seed"])
    config = ChineseCLIPConfig(
        text_config={**spec["text"], "vocab_size": vocab_size},
        vision_config=spec["vision"],
        projection_dim=spec["projection_dim"],
        logit_scale_init_value=math.log(100.0),
    )
    model = ChineseCLIPModel(config).eval()
    perturb_(model, torch.Generator().manual_seed(spec["seed"]))
    half = ChineseCLIPModel(config).half()
    half.load_state_dict(model.state_dict())
    half.save_pretrained(out, safe_serialization=spec["weights"] == "safetensors")

    side = spec["image"]
    proc = ChineseCLIPImageProcessor(
        size={"height": side, "width": side}, crop_size={"height": side, "width": side},
        do_center_crop=False, image_mean=MEAN, image_std=STD, resample=3,
    )
    proc.save_pretrained(out)

    golden: dict = {
        "model_dir": name,
        "dim": spec["projection_dim"],
        "logit_scale": float(model.logit_scale.exp()),
        "max_length": CONTEXT,
        "versions": {"torch": torch.__version__, "transformers": transformers.__version__,
                     "pillow": Image.__version__},
        "texts": [],
        "images": [],
    }
    with torch.no_grad():
        for text in TEXTS:
            enc = slow(text, truncation=True, max_length=CONTEXT, return_tensors="pt")
            fast_ids = fast(text, truncation=True, max_length=CONTEXT)["input_ids"]
            assert enc["input_ids"][0].tolist() == fast_ids, f"slow and fast tokenizers differ on {text!r}"
            # What ChineseCLIPModel.forward does (get_text_features reads a pooler it lacks).
            hidden = model.text_model(input_ids=enc["input_ids"], attention_mask=enc["attention_mask"])
            emb = model.text_projection(hidden.last_hidden_state[:, 0, :])
            golden["texts"].append({"text": text, "ids": enc["input_ids"][0].tolist(), "embedding": unit(emb)})
        prompts = [ZEROSHOT_TEMPLATE.format(label) for label in ZEROSHOT_LABELS]
        enc = slow(prompts, truncation=True, max_length=CONTEXT, padding=True, return_tensors="pt")
        hidden = model.text_model(input_ids=enc["input_ids"], attention_mask=enc["attention_mask"])
        labels = model.text_projection(hidden.last_hidden_state[:, 0, :])
        labels = labels / labels.norm(dim=-1, keepdim=True)
        golden["zeroshot"] = {"labels": ZEROSHOT_LABELS, "template": ZEROSHOT_TEMPLATE}
        for file in IMAGE_FILES:
            rgb = upright_rgb(IMAGES / file)
            pv = proc(images=rgb, return_tensors="pt", input_data_format="channels_last")["pixel_values"]
            emb = model.get_image_features(pixel_values=pv)
            emb = emb / emb.norm(dim=-1, keepdim=True)
            probs = (model.logit_scale.exp() * emb @ labels.T).softmax(dim=-1)
            golden["images"].append({"file": file, "embedding": unit(emb),
                                     "probabilities": [float(x) for x in probs[0]]})
    (GOLDEN / f"{name}.json").write_text(json.dumps(golden, indent=1, ensure_ascii=False))
    print(f"wrote {out} and its goldens")


def main() -> None:
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    with zipfile.ZipFile(sys.argv[1]) as wheel:
        vocab_txt = wheel.read("cn_clip/clip/vocab.txt").decode("utf-8")
    for name, spec in FIXTURES.items():
        write_fixture(name, spec, vocab_txt)


if __name__ == "__main__":
    main()
