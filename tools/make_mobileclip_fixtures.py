#!/usr/bin/env python3
"""Generate the MobileCLIP test fixtures: tiny random MobileCLIPs in open_clip's hub layout
(`open_clip_config.json` + `open_clip_model.safetensors`, a `CustomTextCLIP` whose image tower is
timm's `FastVit` with its training-time branches unfused, as apple/MobileCLIP-S2-OpenCLIP and
timm/MobileCLIP2-*-OpenCLIP hold them), and golden token ids and embeddings from open_clip itself,
loaded back from that folder with `create_model_and_transforms("local-dir:...")`.

timm and open_clip go beside the shared torch venv, never into it:

    /root/venv-torch/bin/pip install --no-deps --target /root/openclip-extra \
        -r tools/requirements-openclip.txt
    /root/venv-torch/bin/pip install --no-deps --target /root/mobileclip-extra \
        -r tools/requirements-mobileclip.txt
    PYTHONPATH=/root/openclip-extra:/root/mobileclip-extra /root/venv-torch/bin/python \
        tools/make_mobileclip_fixtures.py

The towers are timm's `FastVit` at odd widths and few blocks, registered here under names of
their own (`fastvit_mci_tiny_s`, `fastvit_mci_tiny_l`) with the options of timm's
`fastvit_mci2` (4 stages, BatchNorm before attention, a scale branch in the stem) and
`fastvit_mci3`/`fastvit_mci4` (5 stages, LayerNorm2d before attention, no stem scale branch,
no squeeze-excite in the downsamplers): clipdex reads a FastViT's shape from its weights, the
name only says that it is one. Every BatchNorm has non-trivial running statistics and affine
weights, every layer scale is far from timm's 1e-5, so that each parallel branch (k×k, 1×1
scale, BatchNorm identity, large and small kernel, positional encoding) visibly changes the
output; `main` prints how far dropping a few of them moves the image embedding. The text
towers are open_clip's: bidirectional without a padding mask (MobileCLIP-S*) and causal
(MobileCLIP-B). Weights are rounded to fp16 and stored so. Seeded.
"""

from __future__ import annotations

import json
import math
import os
import shutil
from functools import partial
from pathlib import Path

import numpy as np
import open_clip
import safetensors.torch
import timm
import torch
from PIL import Image, ImageOps
from timm.layers import LayerNorm2d
from timm.models._builder import build_model_with_cfg
from timm.models._registry import register_model
from timm.models.fastvit import FastVit, RepConditionalPosEnc

ROOT = Path(__file__).resolve().parent.parent
FIX = ROOT / "tests" / "fixtures"
IMAGES = FIX / "images"
GOLDEN = FIX / "golden"

TEXTS = [
    "",
    "a photo of a cat",
    "A Photo Of A CAT!!",
    "naïve café résumé Ångström",
    "🐶🐱 a dog and a cat 🚗",
    "sunset over the mountains with a lake " * 6,
    "a red bicycle leaning on a wall",
]

IMAGE_FILES = [
    "astronaut.jpg",
    "chelsea_exif6.jpg",  # portrait once upright
    "panorama_4000x300.jpg",  # a long strip: the crop takes its middle
    "coffee.png",
    "camera_gray.jpg",
]


@register_model
def fastvit_mci_tiny_s(pretrained=False, **kwargs):
    """fastvit_mci2's options at odd widths: 4 stages, the last one attention."""
    args = dict(
        layers=(1, 2, 1, 2),
        embed_dims=(12, 24, 48, 96),
        mlp_ratios=(3, 2.5, 3, 2),
        se_downsamples=(False, False, True, True),
        pos_embs=(None, None, None, partial(RepConditionalPosEnc, spatial_shape=(7, 7))),
        token_mixers=("repmixer", "repmixer", "repmixer", "attention"),
        lkc_use_act=True,
    )
    return build_model_with_cfg(FastVit, 'fastvit_mci_tiny', pretrained, **dict(args, **kwargs))


@register_model
def fastvit_mci_tiny_l(pretrained=False, **kwargs):
    """fastvit_mci3/mci4's options at odd widths: 5 stages, the last two attention."""
    args = dict(
        layers=(1, 1, 2, 1, 1),
        embed_dims=(10, 20, 40, 160, 160),
        mlp_ratios=(4, 4, 3, 4, 2),
        se_downsamples=(False, False, False, False, False),
        downsamples=(False, True, True, True, True),
        pos_embs=(None, None, None, partial(RepConditionalPosEnc, spatial_shape=(7, 7)),
                  partial(RepConditionalPosEnc, spatial_shape=(7, 7))),
        token_mixers=("repmixer", "repmixer", "repmixer", "attention", "attention"),
        lkc_use_act=True,
        norm_layer=partial(LayerNorm2d, eps=1e-5),
        stem_use_scale_branch=False,
    )
    return build_model_with_cfg(FastVit, 'fastvit_mci_tiny', pretrained, **dict(args, **kwargs))


def text_cfg(width: int, heads: int, causal: bool) -> dict:
    return {"context_length": 20, "vocab_size": 49408, "width": width, "heads": heads, "layers": 2,
            "no_causal_mask": not causal}


def vision_cfg(timm_name: str, size: int) -> dict:
    # open_clip's MobileCLIP-S2.json with the tower and size swapped.
    return {"timm_model_name": timm_name, "timm_model_pretrained": False, "timm_pool": "avg", "timm_proj": None,
            "timm_drop": 0.0, "timm_drop_path": 0.0, "image_size": size}


FIXTURES = {
    # MobileCLIP-S2's layout (fastvit_mci2, bidirectional text, mean 0 / std 1, bilinear).
    "mobileclip-tiny-s": {
        "seed": 41,
        "model_cfg": {"embed_dim": 24, "vision_cfg": vision_cfg("fastvit_mci_tiny_s", 80),
                      "text_cfg": text_cfg(8, 2, causal=False), "custom_text": True},
        "preprocess_cfg": {"mean": [0.0, 0.0, 0.0], "std": [1.0, 1.0, 1.0], "interpolation": "bilinear",
                           "resize_mode": "shortest"},
    },
    # MobileCLIP2-S3/S4's layout (fastvit_mci3/4), a causal text tower, OpenAI's mean and std.
    "mobileclip-tiny-l": {
        "seed": 42,
        "model_cfg": {"embed_dim": 16, "vision_cfg": vision_cfg("fastvit_mci_tiny_l", 96),
                      "text_cfg": text_cfg(6, 3, causal=True), "custom_text": True},
        "preprocess_cfg": {"mean": [0.48145466, 0.4578275, 0.40821073], "std": [0.26862954, 0.26130258, 0.27577711],
                           "interpolation": "bilinear", "resize_mode": "shortest"},
    },
}


def perturb_(model: torch.nn.Module, gen: torch.Generator) -> None:
    """Weights under which every branch visibly changes the output, rounded to fp16."""
    def randn(shape):
        return torch.randn(shape, generator=gen)

    with torch.no_grad():
        for name, m in model.named_modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.copy_(0.3 * randn(m.running_mean.shape))
                m.running_var.copy_(0.5 + 1.5 * torch.rand(m.running_var.shape, generator=gen))
        for name, p in model.named_parameters():
            shape = p.shape
            if name == "logit_scale":
                p.fill_(math.log(20.0))
            elif ".bn." in name or ".identity." in name or name.endswith("norm.weight") or name.endswith("norm.bias") \
                    or ".ln_" in name or "ln_final" in name:
                p.copy_(1.0 + 0.3 * randn(shape) if name.endswith("weight") else 0.2 * randn(shape))
            elif "gamma" in name:
                p.copy_(0.6 + 0.3 * randn(shape))
            elif name.endswith("bias"):
                p.copy_(0.2 * randn(shape))
            elif "embedding" in name:
                p.copy_(0.8 * randn(shape))
            elif name.endswith("text_projection"):
                p.copy_(randn(shape) / math.sqrt(shape[0]))
            else:
                fan_in = int(np.prod(shape[1:])) if p.dim() > 1 else shape[0]
                gain = 2.0 if ".attn." in name or "qkv" in name else 1.2
                p.copy_(gain * randn(shape) / math.sqrt(fan_in))
        for p in model.parameters():
            p.copy_(p.half().float())
        for b in model.buffers():
            if b.dtype.is_floating_point:
                b.copy_(b.half().float())


def unit(v: torch.Tensor) -> list[float]:
    v = v / v.norm(dim=-1, keepdim=True)
    return [float(x) for x in v.reshape(-1)]


def upright_rgb(path: Path) -> Image.Image:
    return ImageOps.exif_transpose(Image.open(path)).convert("RGB")


def branch_effects(ref, pixels: torch.Tensor) -> dict[str, float]:
    """The cosine of the image embedding to itself with one kind of branch zeroed: how visibly
    each branch counts (1.0 would mean a branch the fixture does not test)."""
    base = ref.encode_image(pixels, normalize=True)
    out = {}
    for what in ["conv_scale", "identity", "small_conv", "pos_enc", "layer_scale", "se."]:
        saved = {k: v.clone() for k, v in ref.state_dict().items()}
        with torch.no_grad():
            for k, v in ref.state_dict().items():
                if what in k and k.startswith("visual.") and v.dtype.is_floating_point:
                    if what == "identity" and not k.endswith("weight") and not k.endswith("bias"):
                        continue
                    v.zero_()
        out[what] = float((ref.encode_image(pixels, normalize=True) * base).sum())
        ref.load_state_dict(saved)
    return out


def write_fixture(name: str, spec: dict) -> None:
    out = FIX / name
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    cfg = spec["model_cfg"]
    torch.manual_seed(spec["seed"])
    model = open_clip.CustomTextCLIP(cfg["embed_dim"], cfg["vision_cfg"], cfg["text_cfg"])
    perturb_(model, torch.Generator().manual_seed(spec["seed"]))
    state = {k: v.half().contiguous() if v.dtype.is_floating_point else v for k, v in model.state_dict().items()}
    state["logit_scale"] = state["logit_scale"].float()
    safetensors.torch.save_file(state, out / "open_clip_model.safetensors")
    (out / "open_clip_model.safetensors").chmod(0o644)
    (out / "open_clip_config.json").write_text(
        json.dumps({"model_cfg": cfg, "preprocess_cfg": spec["preprocess_cfg"]}, indent=2) + "\n")
    os.symlink(os.path.relpath(ROOT / "tests" / "fixtures" / "clip-tiny-p32" / "tokenizer.json", out), out / "tokenizer.json")

    ref, _, preprocess = open_clip.create_model_and_transforms(f"local-dir:{out}")
    ref.eval()
    assert ref.visual.trunk.stem[0].reparam_conv is None, "the reference must run the unfused branches"
    tokenizer = open_clip.get_tokenizer(f"local-dir:{out}")
    context = cfg["text_cfg"]["context_length"]
    eot = tokenizer.eot_token_id
    golden: dict = {
        "model_dir": name,
        "dim": cfg["embed_dim"],
        "context_length": context,
        "logit_scale": float(ref.logit_scale.exp().detach()),
        "preprocess": str(preprocess),
        "versions": {"torch": torch.__version__, "open_clip": open_clip.__version__, "timm": timm.__version__,
                     "pillow": Image.__version__},
        "texts": [],
        "images": [],
    }
    with torch.no_grad():
        for text in TEXTS:
            ids = tokenizer([text])
            row = ids[0].tolist()
            row = row[: row.index(eot) + 1]
            golden["texts"].append({"text": text, "ids": row, "embedding": unit(ref.encode_text(ids))})
        for file in IMAGE_FILES:
            pixels = preprocess(upright_rgb(IMAGES / file)).unsqueeze(0)
            golden["images"].append({"file": file, "embedding": unit(ref.encode_image(pixels))})
        effects = branch_effects(ref, preprocess(upright_rgb(IMAGES / IMAGE_FILES[0])).unsqueeze(0))
        # The same tower reparameterised by timm: what clipdex's load-time fusion must equal.
        ref.visual.trunk = timm.utils.model.reparameterize_model(ref.visual.trunk)
        fused = [unit(ref.encode_image(preprocess(upright_rgb(IMAGES / f)).unsqueeze(0))) for f in IMAGE_FILES]
    golden["fused_cosines"] = [float(np.dot(a["embedding"], b)) for a, b in zip(golden["images"], fused)]
    golden["branch_effects"] = effects
    (GOLDEN / f"{name}.json").write_text(json.dumps(golden, indent=1, ensure_ascii=False))
    size = sum(f.stat().st_size for f in out.iterdir() if f.is_file() and not f.is_symlink())
    print(f"wrote {out} ({size} bytes); cosine to the embedding with a branch zeroed: "
          f"{ {k: round(v, 3) for k, v in effects.items()} }; timm-fused vs unfused: "
          f"{min(golden['fused_cosines']):.6f}")


def write_real_size(out: Path) -> None:
    """MobileCLIP-S2 at its real shapes (open_clip's `MobileCLIP-S2` config, fastvit_mci2 at
    256 px) with random weights perturbed as the fixtures are, in `out` (about 200 MB, not
    committed), golden file included: what `tests/mobileclip_parity.rs`'s ignored real-size
    test reads (`CLIPDEX_MOBILECLIP_REAL=out`)."""
    cfg = json.loads((Path(open_clip.__file__).parent / "model_configs" / "MobileCLIP-S2.json").read_text())
    spec = {"seed": 7, "model_cfg": cfg, "preprocess_cfg": FIXTURES["mobileclip-tiny-s"]["preprocess_cfg"]}
    global FIX, GOLDEN
    FIX, GOLDEN = out.parent, out
    write_fixture(out.name, spec)
    (out / f"{out.name}.json").rename(out / "golden.json")


def main() -> None:
    import sys
    if len(sys.argv) == 3 and sys.argv[1] == "--real-size":
        write_real_size(Path(sys.argv[2]).resolve())
        return
    for name, spec in FIXTURES.items():
        write_fixture(name, spec)


if __name__ == "__main__":
    main()
