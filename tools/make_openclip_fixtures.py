#!/usr/bin/env python3
"""Generate the OpenCLIP test fixtures: tiny random open_clip `CLIP` models in the hub layout
(`open_clip_config.json` with `model_cfg` and `preprocess_cfg`, and `open_clip_model.safetensors`
or `open_clip_pytorch_model.bin`), and golden token ids and embeddings from open_clip itself,
loaded back from that folder with `create_model_and_transforms("local-dir:...")` as a user
would load a hub checkpoint (its config, its weights, its preprocessing, its tokenizer).

open_clip goes beside the shared torch venv, never into it (PyPI's torch is the huge CUDA
build, and the venv is shared); torchvision, which open_clip imports, goes there too:

    /root/venv-torch/bin/pip install --no-deps --target /root/openclip-extra \
        -r tools/requirements-openclip.txt
    PYTHONPATH=/root/openclip-extra /root/venv-torch/bin/python tools/make_openclip_fixtures.py

The two models differ in every shape that could hide a bug: GELU and QuickGELU, heads of 8, 3
and 2 wide, MLP ratios 2.5 and 3, patch sizes 8 and 12, inputs of 40 and 36 px, a 20- and a
16-token context (long texts are cut), shortest-edge + centre-crop bicubic and squashed
bilinear preprocessing with their own mean and std, safetensors and a pickled .bin. Weights are
scaled so that every path changes the result and rounded to fp16 (stored so: the token
embedding, 49,408 rows, is most of each file). The fixtures' `tokenizer.json` is a symbolic link
to the CLIP fixture's (the real CLIP BPE, which open_clip's SimpleTokenizer builds too). Seeded:
a re-run with the same versions writes the same files.
"""

from __future__ import annotations

import json
import math
import os
import shutil
from pathlib import Path

import numpy as np
import open_clip
import safetensors.torch
import torch
from open_clip.model import CLIP
from PIL import Image, ImageOps

ROOT = Path(__file__).resolve().parent.parent
FIX = ROOT / "tests" / "fixtures"
IMAGES = FIX / "images"
GOLDEN = FIX / "golden"

TEXTS = [
    "",
    "a photo of a cat",
    "A Photo Of A CAT!!",
    "don't stop, it's the dog's ball; we'll see",
    "naïve café résumé Ångström",
    "cafe\u0301 (decomposed accent)",
    "🐶🐱 a dog and a cat 🚗",
    "一只猫坐在沙发上",
    "tabs\tand\nnewlines   and    spaces",
    "  leading and trailing spaces  ",
    "1234 3.14159 2024-05-01",
    "a <|endoftext|> in the middle",
    "sunset over the mountains with a lake " * 6,
    "x" * 400,
    # What open_clip's cleaning (ftfy, HTML entities) changes before the BPE sees the text.
    "Tom &amp; Jerry &lt;3 &quot;cartoon&quot; &#39;quoted&#39;",
    "\u201ccurly quotes\u201d and don\u2019t \u2018single\u2019",
    "ＦＵＬＬＷＩＤＴＨ ｃａｔ",
    "the ﬁrst ﬂower",
]

IMAGE_FILES = [
    "astronaut.jpg",
    "chelsea_exif6.jpg",  # portrait once upright
    "panorama_4000x300.jpg",  # the crop takes the middle of a long strip
    "pixel_1x1.png",
    "coffee.png",
    "camera_gray.jpg",
    "rocket.webp",
    "chelsea_small.bmp",
]

FIXTURES = {
    # GELU; shortest edge + centre crop, bicubic; safetensors.
    "openclip-tiny-gelu": {
        "seed": 41,
        "weights": "open_clip_model.safetensors",
        "model_cfg": {
            "embed_dim": 20,
            "vision_cfg": {"image_size": 40, "layers": 2, "width": 24, "head_width": 8, "patch_size": 8,
                           "mlp_ratio": 2.5},
            "text_cfg": {"context_length": 20, "vocab_size": 49408, "width": 6, "heads": 2, "layers": 2},
        },
        "preprocess_cfg": {"mean": [0.52, 0.47, 0.41], "std": [0.21, 0.27, 0.33], "interpolation": "bicubic",
                           "resize_mode": "shortest"},
    },
    # QuickGELU (a `-quickgelu` model); squashed, bilinear, OpenAI mean/std; a pickled .bin.
    "openclip-tiny-quickgelu": {
        "seed": 42,
        "weights": "open_clip_pytorch_model.bin",
        "model_cfg": {
            "embed_dim": 12,
            "quick_gelu": True,
            "vision_cfg": {"image_size": 36, "layers": 3, "width": 30, "head_width": 10, "patch_size": 12,
                           "mlp_ratio": 3.0},
            "text_cfg": {"context_length": 16, "vocab_size": 49408, "width": 4, "heads": 2, "layers": 2},
        },
        "preprocess_cfg": {"mean": [0.48145466, 0.4578275, 0.40821073], "std": [0.26862954, 0.26130258, 0.27577711],
                           "interpolation": "bilinear", "resize_mode": "squash"},
    },
}


def perturb_(model: torch.nn.Module, gen: torch.Generator) -> None:
    """Weights under which every path visibly changes the output, rounded to fp16."""
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name == "logit_scale":
                p.fill_(math.log(20.0))
                continue
            shape = p.shape
            if ".ln_" in name or name.startswith("ln_") or "ln_final" in name:
                p.copy_(1.0 + 0.4 * torch.randn(shape, generator=gen) if name.endswith("weight")
                        else 0.3 * torch.randn(shape, generator=gen))
            elif name.endswith("bias"):
                p.copy_(0.2 * torch.randn(shape, generator=gen))
            elif "embedding" in name:
                p.copy_(0.8 * torch.randn(shape, generator=gen))
            elif name.endswith("proj") or name.endswith("text_projection"):
                p.copy_(torch.randn(shape, generator=gen) / math.sqrt(shape[0]))
            else:
                fan_in = int(np.prod(shape[1:])) if p.dim() > 1 else shape[0]
                gain = 3.0 if ".attn." in name else 1.3
                p.copy_(gain * torch.randn(shape, generator=gen) / math.sqrt(fan_in))
        for p in model.parameters():
            p.copy_(p.half().float())


def unit(v: torch.Tensor) -> list[float]:
    v = v / v.norm(dim=-1, keepdim=True)
    return [float(x) for x in v.reshape(-1)]


def upright_rgb(path: Path) -> Image.Image:
    return ImageOps.exif_transpose(Image.open(path)).convert("RGB")


def write_fixture(name: str, spec: dict) -> None:
    out = FIX / name
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    cfg = spec["model_cfg"]
    torch.manual_seed(spec["seed"])
    model = CLIP(cfg["embed_dim"], cfg["vision_cfg"], cfg["text_cfg"], quick_gelu=cfg.get("quick_gelu", False))
    perturb_(model, torch.Generator().manual_seed(spec["seed"]))
    state = {k: v.half().contiguous() for k, v in model.state_dict().items()}
    state["logit_scale"] = state["logit_scale"].float()
    if spec["weights"].endswith(".safetensors"):
        safetensors.torch.save_file(state, out / spec["weights"])
        (out / spec["weights"]).chmod(0o644)
    else:
        torch.save(state, out / spec["weights"])
    # The layout open_clip's push_to_hf_hub writes.
    (out / "open_clip_config.json").write_text(
        json.dumps({"model_cfg": cfg, "preprocess_cfg": spec["preprocess_cfg"]}, indent=2) + "\n")
    os.symlink("../clip-tiny-p32/tokenizer.json", out / "tokenizer.json")

    # The reference: open_clip reading the folder back, as it reads a hub checkpoint.
    ref, _, preprocess = open_clip.create_model_and_transforms(f"local-dir:{out}")
    ref.eval()
    tokenizer = open_clip.get_tokenizer(f"local-dir:{out}")
    context = cfg["text_cfg"]["context_length"]
    eot = tokenizer.eot_token_id
    golden: dict = {
        "model_dir": name,
        "dim": cfg["embed_dim"],
        "context_length": context,
        "logit_scale": float(ref.logit_scale.exp().detach()),
        "preprocess": str(preprocess),
        "versions": {"torch": torch.__version__, "open_clip": open_clip.__version__, "pillow": Image.__version__},
        "texts": [],
        "images": [],
    }
    with torch.no_grad():
        for text in TEXTS:
            ids = tokenizer([text])
            row = ids[0].tolist()
            assert len(row) == context
            row = row[: row.index(eot) + 1]
            emb = ref.encode_text(ids)
            golden["texts"].append({"text": text, "ids": row, "embedding": unit(emb)})
        for file in IMAGE_FILES:
            pixels = preprocess(upright_rgb(IMAGES / file)).unsqueeze(0)
            golden["images"].append({"file": file, "embedding": unit(ref.encode_image(pixels))})
    (GOLDEN / f"{name}.json").write_text(json.dumps(golden, indent=1, ensure_ascii=False))
    sims = [float(np.dot(golden["texts"][1]["embedding"], golden["texts"][i]["embedding"])) for i in (2, 4, 13)]
    print(f"wrote {out} ({sum(f.stat().st_size for f in out.iterdir() if f.is_file() and not f.is_symlink())} "
          f"bytes); text cosines to 'a photo of a cat': {['%.3f' % s for s in sims]}")


def main() -> None:
    for name, spec in FIXTURES.items():
        write_fixture(name, spec)


if __name__ == "__main__":
    main()
