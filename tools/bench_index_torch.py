#!/usr/bin/env python3
"""The PyTorch side of `cargo bench --bench index`: embeds every JPEG of a folder with
transformers' CLIPModel at ViT-B/32 shapes (random weights), in batches of 32, the fastest
way plain PyTorch offers on a CPU: Pillow's draft mode (the JPEG decoded at a reduced DCT
scale, at least 224 px on each side), CLIPImageProcessor, and the model under bf16 autocast
(where the CPU has bf16) or in f32. Prints photos/s for each.

    ~/venv-ref/bin/python tools/bench_index_torch.py FOLDER [--threads 2]
"""

import argparse
import time
from pathlib import Path

import torch
from PIL import Image
from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel


def load(path, draft):
    im = Image.open(path)
    if draft:
        im.draft("RGB", (224, 224))
    return im.convert("RGB")


def run(model, proc, photos, draft, bf16):
    started = time.perf_counter()
    for i in range(0, len(photos), 32):
        images = [load(p, draft) for p in photos[i : i + 32]]
        pixels = proc(images=images, return_tensors="pt")["pixel_values"]
        with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            model.get_image_features(pixel_values=pixels)
    return len(photos) / (time.perf_counter() - started)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("folder")
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    model = CLIPModel(CLIPConfig()).eval()
    proc = CLIPImageProcessor()
    photos = sorted(Path(args.folder).glob("*.jpg"))
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {len(photos)} photos")
    for label, draft, bf16 in [("draft + f32", True, False), ("draft + bf16 autocast", True, True)]:
        print(f"torch index, {label}: {run(model, proc, photos, draft, bf16):.2f} photos/s")


if __name__ == "__main__":
    main()
