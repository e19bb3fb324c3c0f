#!/usr/bin/env python3
"""The PyTorch side of `cargo bench --bench clip`: transformers' CLIPModel at ViT-B/32 shapes
with random weights, fp32 (or under bf16 autocast), on the CPU, same batch sizes and token
counts. The bench itself runs these rows through `tools/bench_models_torch.py clip` when
CLIPDEX_TORCH_PYTHON is set; run alone, this prints them for reading.

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


def clip_rows(model, tok):
    """(row, seconds) of the towers, the query and a 12 MP JPEG, as `cargo bench --bench clip`
    names and runs them (the caller sets the threads and any autocast)."""
    for batch in (1, 32):
        pixels = torch.randn(batch, 3, 224, 224)
        yield f"image tower, batch {batch}", median_time(15 if batch == 1 else 3,
                                                         lambda: model.get_image_features(pixel_values=pixels))
    for batch in (1, 32):
        ids = torch.randint(320, 40000, (batch, 77))
        ids[:, 0] = 49406
        ids[:, -1] = 49407
        yield f"text tower, batch {batch}, 77 tokens", median_time(15 if batch == 1 else 3,
                                                                   lambda: model.get_text_features(input_ids=ids))

    def one_query():
        enc = tok([QUERY], return_tensors="pt")
        model.get_text_features(**enc)

    yield "query (tokenise + text tower)", median_time(21, one_query)
    proc = CLIPImageProcessor()
    photo = ROOT / "tests/fixtures/images/coffee_12mp.jpg"
    yield "12 MP JPEG: decode", median_time(5, lambda: Image.open(photo).convert("RGB"))
    rgb = Image.open(photo).convert("RGB")
    yield "12 MP JPEG: resize + crop + normalise", median_time(5, lambda: proc(images=rgb, return_tensors="np"))


def random_clip():
    """transformers' CLIPModel at ViT-B/32 shapes (its defaults), random weights, and the
    tokenizer."""
    torch.manual_seed(0)
    model = CLIPModel(CLIPConfig()).eval()
    return model, CLIPTokenizerFast.from_pretrained(ROOT / "tests/fixtures/clip-tiny-p32")


QUERY = "a photo of a dog on the beach"


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--bf16", action="store_true", help="the towers under bf16 autocast")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    model, tok = random_clip()
    precision = "bf16 autocast" if args.bf16 else "f32"
    print(f"transformers CLIP benchmark: ViT-B/32 shapes, random weights, {precision}, {torch.get_num_threads()} threads, torch {torch.__version__}")
    with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=args.bf16):
        for name, t in clip_rows(model, tok):
            if name.startswith("image tower"):
                batch = int(name.rsplit(" ", 1)[1])
                print(f"{name}: {batch / t:>7.2f} images/s  ({t * 1e3:.1f} ms per batch)")
            elif name.startswith("text tower"):
                batch = int(name.split(",")[1].split()[1])
                print(f"{name}: {batch / t:>7.2f} texts/s   ({t * 1e3:.1f} ms per batch)")
            else:
                print(f"{name}: {t * 1e3:.2f} ms")


if __name__ == "__main__":
    main()
