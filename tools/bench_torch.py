#!/usr/bin/env python3
"""The PyTorch side of `cargo bench --bench clip`: transformers' CLIPModel at ViT-B/32 shapes
with random weights, fp32 (or under bf16 autocast), on the CPU, same batch sizes and token
counts.

    ~/venv-ref/bin/python tools/bench_torch.py [--threads 2] [--bf16]
"""

import argparse
import statistics
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel, CLIPTokenizerFast

ROOT = Path(__file__).resolve().parent.parent


def median_time(runs, fn):
    fn()
    times = []
    for _ in range(runs):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--bf16", action="store_true", help="the towers under bf16 autocast")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    model = CLIPModel(CLIPConfig()).eval()  # the defaults are ViT-B/32's shapes
    tok = CLIPTokenizerFast.from_pretrained(ROOT / "tests/fixtures/clip-tiny-p32")
    precision = "bf16 autocast" if args.bf16 else "f32"
    print(f"transformers CLIP benchmark: ViT-B/32 shapes, random weights, {precision}, {torch.get_num_threads()} threads, torch {torch.__version__}")
    with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=args.bf16):
        for batch in (1, 32):
            pixels = torch.randn(batch, 3, 224, 224)
            t = median_time(15 if batch == 1 else 3, lambda: model.get_image_features(pixel_values=pixels))
            print(f"image tower  batch {batch:>2}: {batch / t:>7.2f} images/s  ({t * 1e3:.1f} ms per batch)")
        for batch in (1, 32):
            ids = torch.randint(320, 40000, (batch, 77))
            ids[:, 0] = 49406
            ids[:, -1] = 49407
            t = median_time(15 if batch == 1 else 3, lambda: model.get_text_features(input_ids=ids))
            print(f"text tower   batch {batch:>2}: {batch / t:>7.2f} texts/s   ({t * 1e3:.1f} ms per batch, 77 tokens)")
        query = "a photo of a dog on the beach"

        def one_query():
            enc = tok([query], return_tensors="pt")
            model.get_text_features(**enc)

        t = median_time(21, one_query)
        print(f"query latency (tokenize + text tower, {query!r}): {t * 1e3:.2f} ms")
    proc = CLIPImageProcessor()
    photo = ROOT / "tests/fixtures/images/coffee_12mp.jpg"
    t_dec = median_time(5, lambda: Image.open(photo).convert("RGB"))
    rgb = Image.open(photo).convert("RGB")
    t_pre = median_time(5, lambda: proc(images=rgb, return_tensors="np"))
    print(f"12 MP JPEG (4000x3000): decode {t_dec * 1e3:.1f} ms, resize + crop + normalise {t_pre * 1e3:.1f} ms")


if __name__ == "__main__":
    main()
