#!/usr/bin/env python3
"""The fine-tuning parity golden: PyTorch trains the fixture CLIP exactly as `clipdex finetune`
specifies, in float64 (so that float32 noise in the reference does not hide ours).

Setting: tests/fixtures/clip-tiny-p32, the 12 pairs of tests/fixtures/finetune/pairs.jsonl,
`--no-shuffle --batch-size 4 --schedule constant --lr 1e-4 --val-split 0`, 3 steps (one epoch),
AdamW betas (0.9, 0.98), eps 1e-6, weight decay 0.2 on tensors of two or more dimensions only,
`logit_scale` clamped to [0, ln 100] after each step; for `--train all` and `--train last:1`.

Writes tests/fixtures/finetune/golden.json (per-step losses, the trained tensors' names, and
the fine-tuned model's embeddings of two photos and two texts) and delta-{all,last1}.safetensors
(fine-tuned minus base, float16: the test compares them within 5% relative L2).

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
from transformers import CLIPModel, CLIPProcessor

sys.path.insert(0, str(Path(__file__).resolve().parent))
from make_fixtures import FIX, IMAGES, reference_rgb  # noqa: E402

OUT = FIX / "finetune"
MODEL = FIX / "clip-tiny-p32"
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
BATCH = 4
LR = 1e-4
STEPS = 3


def trained(name: str, scope: str, text_layers: int, vision_layers: int) -> bool:
    head = name.startswith(("visual_projection.", "text_projection.")) or name == "logit_scale"
    if scope == "all":
        return True
    n = int(scope.split(":")[1])
    for prefix, layers in (("text_model.encoder.layers.", text_layers), ("vision_model.encoder.layers.", vision_layers)):
        if name.startswith(prefix) and int(name[len(prefix):].split(".")[0]) + n >= layers:
            return True
    return head or name.startswith(("text_model.final_layer_norm.", "vision_model.post_layernorm."))


def train(scope: str, pixels: torch.Tensor, ids: torch.Tensor, mask: torch.Tensor) -> tuple[list[float], dict, CLIPModel]:
    model = CLIPModel.from_pretrained(MODEL).double().eval()
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
    golden: dict = {"versions": {"torch": torch.__version__, "transformers": transformers.__version__},
                    "batch_size": BATCH, "lr": LR, "steps": STEPS, "runs": {}}
    for scope, tag in (("all", "all"), ("last:1", "last1")):
        losses, result, model = train(scope, pixels, enc["input_ids"], enc["attention_mask"])
        save_file(result["deltas"], OUT / f"delta-{tag}.safetensors")
        with torch.no_grad():
            probe = slice(0, 2)
            img = model.get_image_features(pixel_values=pixels[probe])
            txt = model.get_text_features(input_ids=enc["input_ids"][probe], attention_mask=enc["attention_mask"][probe])
            img = img / img.norm(dim=-1, keepdim=True)
            txt = txt / txt.norm(dim=-1, keepdim=True)
        golden["runs"][tag] = {"train": scope, "losses": losses, "trained": result["names"],
                               "image_embeddings": img.tolist(), "text_embeddings": txt.tolist(),
                               "probe_images": [PAIRS[0][0], PAIRS[1][0]], "probe_texts": [PAIRS[0][1], PAIRS[1][1]]}
    (OUT / "golden.json").write_text(json.dumps(golden, indent=1) + "\n")
    print("wrote", OUT)


if __name__ == "__main__":
    main()
