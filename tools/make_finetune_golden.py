#!/usr/bin/env python3
"""The fine-tuning parity golden: PyTorch trains the fixture CLIP exactly as `clipdex finetune`
specifies, in float64 (so that float32 noise in the reference does not hide ours).

Setting: tests/fixtures/clip-tiny-p32, the 12 pairs of tests/fixtures/finetune/pairs.jsonl,
`--no-shuffle --batch-size 4 --schedule constant --lr 1e-4 --val-split 0`, 3 steps (one epoch),
AdamW betas (0.9, 0.98), eps 1e-6, weight decay 0.2 on tensors of two or more dimensions only,
`logit_scale` clamped to [0, ln 100] after each step; for `--train all` and `--train last:1`.

Writes tests/fixtures/finetune/golden.json (per-step losses, the trained tensors' names, and
the fine-tuned model's embeddings of two photos and two texts) and delta-{all,last1}.safetensors
(fine-tuned minus base, float16: the test compares them within 5% relative L2). The same for the
fixture Chinese-CLIP tests/fixtures/chinese-clip-tiny-p16 (BERT text tower, padding mask) on the
same photos with Chinese captions: pairs-zh.jsonl, golden-zh.json, delta-zh-{all,last1}.

    ~/venv-ref/bin/python tools/make_finetune_golden.py
"""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import torch
import transformers
from safetensors.torch import save_file
from transformers import ChineseCLIPModel, ChineseCLIPProcessor, CLIPModel, CLIPProcessor

sys.path.insert(0, str(Path(__file__).resolve().parent))
from make_fixtures import FIX, IMAGES, reference_rgb  # noqa: E402

OUT = FIX / "finetune"
MODEL = FIX / "clip-tiny-p32"
MODEL_ZH = FIX / "chinese-clip-tiny-p16"
PAIRS = [
    ("astronaut.jpg", "an astronaut in a white space suit"),
    ("coffee.png", "a cup of coffee on a saucer"),
    ("chelsea_exif3.jpg", "a tabby cat, upside down"),
    ("rocket.webp", "a rocket on its launch pad"),
    ("camera_gray.jpg", "a black and white photo of a man with a camera"),
    ("coffee_palette.gif", "a coffee cup in few colours"),
    ("chelsea_small.bmp", "a small picture of a cat"),
    ("astronaut_exif8.jpg", "an astronaut lying on her side"),
    ("panorama_4000x300.jpg", "a very wide panorama"),
    ("chelsea_exif6.jpg", "a cat turned sideways"),
    ("astronaut_rgba.png", "an astronaut with a transparent background"),
    ("coffee_palette.png", "a drink in a white mug"),
]
CAPTIONS_ZH = [
    "穿着白色宇航服的宇航员",
    "茶碟上的一杯咖啡",
    "一只倒过来的虎斑猫",
    "发射台上的火箭",
    "一个拿着相机的男人的黑白照片",
    "颜色很少的咖啡杯",
    "一张猫的小图片",
    "侧躺着的宇航员",
    "非常宽的全景照片",
    "侧过来的猫",
    "背景透明的宇航员",
    "白色马克杯里的饮料",
]
BATCH = 4
LR = 1e-4
STEPS = 3


def trained(name: str, scope: str, text_layers: int, vision_layers: int) -> bool:
    head = name.startswith(("visual_projection.", "text_projection.")) or name == "logit_scale"
    if scope == "all":
        return True
    n = int(scope.split(":")[1])
    # CLIP's text layers are `layers.N`, Chinese-CLIP's BERT layers `layer.N`.
    for prefix, layers in (("text_model.encoder.layers.", text_layers), ("text_model.encoder.layer.", text_layers),
                           ("vision_model.encoder.layers.", vision_layers)):
        if name.startswith(prefix) and int(name[len(prefix):].split(".")[0]) + n >= layers:
            return True
    return head or name.startswith(("text_model.final_layer_norm.", "vision_model.post_layernorm."))


def train(scope: str, pixels: torch.Tensor, ids: torch.Tensor, mask: torch.Tensor,
          cls=CLIPModel, path: Path = MODEL) -> tuple[list[float], dict, CLIPModel]:
    model = cls.from_pretrained(path).double().eval()
    base = {k: v.detach().clone() for k, v in model.named_parameters()}
    tc, vc = model.config.text_config, model.config.vision_config
    decay, no_decay, names = [], [], []
    for name, p in model.named_parameters():
        if trained(name, scope, tc.num_hidden_layers, vc.num_hidden_layers):
            (decay if p.ndim >= 2 else no_decay).append(p)
            names.append(name)
        else:
            p.requires_grad_(False)
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": 0.2}, {"params": no_decay, "weight_decay": 0.0}],
                            lr=LR, betas=(0.9, 0.98), eps=1e-6)
    losses = []
    for step in range(STEPS):
        batch = slice(step * BATCH, (step + 1) * BATCH)
        out = model(input_ids=ids[batch], attention_mask=mask[batch], pixel_values=pixels[batch], return_loss=True)
        opt.zero_grad()
        out.loss.backward()
        opt.step()
        with torch.no_grad():
            model.logit_scale.clamp_(0, math.log(100))
        losses.append(out.loss.item())
        print(scope, step, out.loss.item())
    deltas = {k: (v.detach() - base[k]).float().half().contiguous() for k, v in model.named_parameters() if k in names}
    frozen_changed = [k for k, v in model.named_parameters() if k not in names and not torch.equal(v, base[k])]
    assert not frozen_changed, frozen_changed
    return losses, {"names": names, "deltas": deltas}, model


def main() -> None:
    torch.set_num_threads(2)
    # float64 everywhere: transformers builds its causal mask in the default dtype.
    torch.set_default_dtype(torch.float64)
    OUT.mkdir(parents=True, exist_ok=True)
    with open(OUT / "pairs.jsonl", "w") as f:
        for image, text in PAIRS:
            f.write(json.dumps({"image": f"../images/{image}", "text": text}) + "\n")
    processor = CLIPProcessor.from_pretrained(MODEL)
    images = [reference_rgb(IMAGES / name, {}) for name, _ in PAIRS]
    enc = processor(text=[t for _, t in PAIRS], images=images, return_tensors="pt", padding=True)
    pixels = enc["pixel_values"].double()
    golden = run_all(CLIPModel, MODEL, enc, pixels, PAIRS, "")
    (OUT / "golden.json").write_text(json.dumps(golden, indent=1) + "\n")

    zh_pairs = [(image, text) for (image, _), text in zip(PAIRS, CAPTIONS_ZH)]
    with open(OUT / "pairs-zh.jsonl", "w") as f:
        for image, text in zh_pairs:
            f.write(json.dumps({"image": f"../images/{image}", "text": text}, ensure_ascii=False) + "\n")
    processor = ChineseCLIPProcessor.from_pretrained(MODEL_ZH)
    enc = processor(text=CAPTIONS_ZH, images=images, return_tensors="pt", padding=True)
    golden = run_all(ChineseCLIPModel, MODEL_ZH, enc, enc["pixel_values"].double(), zh_pairs, "zh-")
    (OUT / "golden-zh.json").write_text(json.dumps(golden, indent=1, ensure_ascii=False) + "\n")
    print("wrote", OUT)


def run_all(cls, path: Path, enc, pixels: torch.Tensor, pairs, prefix: str) -> dict:
    """Both scopes on one model; writes delta-{prefix}{all,last1}.safetensors."""
    golden: dict = {"versions": {"torch": torch.__version__, "transformers": transformers.__version__},
                    "batch_size": BATCH, "lr": LR, "steps": STEPS, "runs": {}}
    for scope, tag in (("all", "all"), ("last:1", "last1")):
        losses, result, model = train(scope, pixels, enc["input_ids"], enc["attention_mask"], cls, path)
        save_file(result["deltas"], OUT / f"delta-{prefix}{tag}.safetensors")
        with torch.no_grad():
            probe = slice(0, 2)
            img = model.get_image_features(pixel_values=pixels[probe])
            if cls is ChineseCLIPModel:
                # What ChineseCLIPModel.forward does (get_text_features reads a pooler it lacks).
                hidden = model.text_model(input_ids=enc["input_ids"][probe], attention_mask=enc["attention_mask"][probe])
                txt = model.text_projection(hidden.last_hidden_state[:, 0, :])
            else:
                txt = model.get_text_features(input_ids=enc["input_ids"][probe],
                                              attention_mask=enc["attention_mask"][probe])
            img = img / img.norm(dim=-1, keepdim=True)
            txt = txt / txt.norm(dim=-1, keepdim=True)
        golden["runs"][tag] = {"train": scope, "losses": losses, "trained": result["names"],
                               "image_embeddings": img.tolist(), "text_embeddings": txt.tolist(),
                               "probe_images": [pairs[0][0], pairs[1][0]], "probe_texts": [pairs[0][1], pairs[1][1]]}
    return golden


if __name__ == "__main__":
    main()
