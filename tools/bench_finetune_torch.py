#!/usr/bin/env python3
"""PyTorch's side of `cargo bench --bench finetune`: seconds per fine-tuning step of a
ViT-B/32-shaped CLIPModel (random weights), batch 32, AdamW as `clipdex finetune` runs it, for
the same `--train` scopes, on the same threads. Prints `torch --train SCOPE SECONDS ...` lines.

    ~/venv-ref/bin/python tools/bench_finetune_torch.py
"""

import statistics
import time

import torch
from transformers import CLIPConfig, CLIPModel

BATCH = 32


def trained(name: str, scope: str) -> bool:
    head = name.startswith(("visual_projection.", "text_projection.")) or name == "logit_scale"
    if scope == "all":
        return True
    if scope == "projection":
        return head
    n = int(scope.split(":")[1])
    for prefix in ("text_model.encoder.layers.", "vision_model.encoder.layers."):
        if name.startswith(prefix) and int(name[len(prefix):].split(".")[0]) + n >= 12:
            return True
    return head or name.startswith(("text_model.final_layer_norm.", "vision_model.post_layernorm."))


def main() -> None:
    torch.set_num_threads(2)
    torch.manual_seed(0)
    pixels = torch.randn(BATCH, 3, 224, 224)
    ids = torch.tensor([[49406] + [320 + i * 14 + j for j in range(14)] + [49407] for i in range(BATCH)])
    print(f"PyTorch {torch.__version__}, {torch.get_num_threads()} threads")
    for scope in ("projection", "last:2", "all"):
        model = CLIPModel(CLIPConfig())
        model.train()
        decay, no_decay = [], []
        for name, p in model.named_parameters():
            if trained(name, scope):
                (decay if p.ndim >= 2 else no_decay).append(p)
            else:
                p.requires_grad_(False)
        opt = torch.optim.AdamW([{"params": decay, "weight_decay": 0.2}, {"params": no_decay, "weight_decay": 0.0}],
                                lr=1e-5, betas=(0.9, 0.98), eps=1e-6)

        def step():
            loss = model(input_ids=ids, pixel_values=pixels, return_loss=True).loss
            opt.zero_grad()
            loss.backward()
            opt.step()

        step()
        times = []
        for _ in range(3):
            t = time.perf_counter()
            step()
            times.append(time.perf_counter() - t)
        # VmHWM, not ru_maxrss: Linux carries ru_maxrss over from the parent through exec.
        with open("/proc/self/status") as f:
            peak = next(int(line.split()[1]) for line in f if line.startswith("VmHWM:")) // 1024
        print(f"torch --train {scope} {statistics.median(times):.2f} s per step (peak RSS so far {peak} MB)")


if __name__ == "__main__":
    main()
