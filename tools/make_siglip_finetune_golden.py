#!/usr/bin/env python3
"""The SigLIP fine-tuning parity golden: PyTorch trains the fixture SigLIP exactly as
`clipdex finetune` specifies, in float64, with transformers' `SiglipModel` loss
(`return_loss=True`: logits = exp(logit_scale) * cos + logit_bias, -logsigmoid over the +-1
label matrix, summed per text and averaged).

Setting: tests/fixtures/siglip-tiny-p16, the 12 pairs of tests/fixtures/finetune/pairs.jsonl (the
CLIP golden's), `--no-shuffle --batch-size 4 --schedule constant --lr 1e-4 --val-split 0`, 3 steps
(one epoch), AdamW betas (0.9, 0.98), eps 1e-6, weight decay 0.2 on tensors of two or more
dimensions only (the pooling head's probe included), nothing clamped; texts padded to the
context (64) and given without a mask, as SigLIP was trained; for `--train all`, `--train last:1`
and `--train projection` (the attention-pooling head, the text `head`, logit_scale and logit_bias).

Writes tests/fixtures/finetune/golden-siglip.json and delta-siglip-{all,last1,projection}.safetensors
(fine-tuned minus base, float16).

    PYTHONPATH=/root/venv-siglip-extra/lib/python3.11/site-packages \
        /root/venv-torch/bin/python tools/make_siglip_finetune_golden.py

Pinned packages: tools/requirements.txt (torch 2.9.1, transformers 4.57.3) and
tools/requirements-siglip.txt (sentencepiece, for the tokenizer).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import torch
import transformers
from safetensors.torch import save_file
from transformers import SiglipImageProcessor, SiglipModel, SiglipTokenizer

sys.path.insert(0, str(Path(__file__).resolve().parent))
from make_finetune_golden import BATCH, LR, PAIRS, STEPS  # noqa: E402
from make_fixtures import FIX, IMAGES, reference_rgb  # noqa: E402

OUT = FIX / "finetune"
MODEL = FIX / "siglip-tiny-p16"
CONTEXT = 64


def trained(name: str, scope: str, text_layers: int, vision_layers: int) -> bool:
    scalars = name in ("logit_scale", "logit_bias")
    heads = scalars or name.startswith(("text_model.head.", "vision_model.head."))
    if scope == "all":
        return True
    if scope == "projection":
        return heads
    n = int(scope.split(":")[1])
    for prefix, layers in (("text_model.encoder.layers.", text_layers), ("vision_model.encoder.layers.", vision_layers)):
        if name.startswith(prefix) and int(name[len(prefix):].split(".")[0]) + n >= layers:
            return True
    return heads or name.startswith(("text_model.final_layer_norm.", "vision_model.post_layernorm."))


def train(scope: str, pixels: torch.Tensor, ids: torch.Tensor):
    model = SiglipModel.from_pretrained(MODEL).double().eval()
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
        out = model(input_ids=ids[batch], pixel_values=pixels[batch], return_loss=True)
        opt.zero_grad()
        out.loss.backward()
        opt.step()
        losses.append(out.loss.item())
        print(scope, step, out.loss.item())
    deltas = {k: (v.detach() - base[k]).float().half().contiguous() for k, v in model.named_parameters() if k in names}
    frozen_changed = [k for k, v in model.named_parameters() if k not in names and not torch.equal(v, base[k])]
    assert not frozen_changed, frozen_changed
    return losses, names, deltas, model


def main() -> None:
    torch.set_num_threads(2)
    torch.set_default_dtype(torch.float64)
    tok = SiglipTokenizer.from_pretrained(MODEL)
    proc = SiglipImageProcessor.from_pretrained(MODEL)
    images = [reference_rgb(IMAGES / name, {}) for name, _ in PAIRS]
    texts = [t for _, t in PAIRS]
    ids = tok(texts, padding="max_length", max_length=CONTEXT, truncation=True, return_tensors="pt")["input_ids"]
    pixels = proc(images=images, return_tensors="pt")["pixel_values"].double()
    golden: dict = {"versions": {"torch": torch.__version__, "transformers": transformers.__version__},
                    "batch_size": BATCH, "lr": LR, "steps": STEPS, "runs": {}}
    for scope, tag in (("all", "all"), ("last:1", "last1"), ("projection", "projection")):
        losses, names, deltas, model = train(scope, pixels, ids)
        save_file(deltas, OUT / f"delta-siglip-{tag}.safetensors")
        with torch.no_grad():
            probe = slice(0, 2)
            img = model.get_image_features(pixel_values=pixels[probe])
            txt = model.get_text_features(input_ids=ids[probe])
            img = img / img.norm(dim=-1, keepdim=True)
            txt = txt / txt.norm(dim=-1, keepdim=True)
        golden["runs"][tag] = {"train": scope, "losses": losses, "trained": names,
                               "image_embeddings": img.tolist(), "text_embeddings": txt.tolist(),
                               "probe_images": [PAIRS[0][0], PAIRS[1][0]], "probe_texts": [PAIRS[0][1], PAIRS[1][1]]}
    (OUT / "golden-siglip.json").write_text(json.dumps(golden, indent=1) + "\n")
    print("wrote", OUT)


if __name__ == "__main__":
    main()
