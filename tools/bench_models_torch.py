#!/usr/bin/env python3
"""The PyTorch side of `cargo bench --bench caption` (BLIP), `cargo bench --bench segment`
(CLIPSeg) and `cargo bench --bench clip` (CLIP's towers): transformers' models at the same
base shapes with random weights, fp32 (or under bf16 autocast), on the CPU, the same rows as
the Rust benches.

Each row prints as `torch <model>, <row>: <ms> ms`; the Rust benches read these lines and print
clipdex / PyTorch for the rows both sides have.

    ~/venv-ref/bin/python tools/bench_models_torch.py blip|clipseg|clip [--threads 2] [--runs 3] [--bf16]

(`clip` runs each row as often as the Rust bench does, whatever `--runs` says.)
"""

import argparse
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from bench_torch import clip_rows, median_time, random_clip  # the CLIP bench's PyTorch side

ROOT = Path(__file__).resolve().parent.parent
PHOTO = ROOT / "tests/fixtures/images/astronaut.jpg"


def row(model, name, seconds):
    print(f"torch {model}, {name}: {seconds * 1e3:.1f} ms", flush=True)


def blip(runs):
    from transformers import (BertTokenizerFast, BlipConfig, BlipForConditionalGeneration, BlipForImageTextRetrieval,
                              BlipForQuestionAnswering, BlipImageProcessor)

    # BlipConfig's defaults are the base checkpoints' shapes (ViT-B/16 at 384 px, 12-layer BERT).
    config = BlipConfig()
    tok = BertTokenizerFast.from_pretrained(ROOT / "tests/fixtures/blip/blip-tiny-captioning")
    pixels = BlipImageProcessor()(images=Image.open(PHOTO).convert("RGB"), return_tensors="pt").pixel_values
    cap = BlipForConditionalGeneration(config).eval()
    # generate() puts BOS in place of [CLS] and drops the trailing [SEP]: the empty prompt.
    start = tok([""], return_tensors="pt").input_ids

    row("blip", "image encoder, 1 image", median_time(runs, lambda: cap.vision_model(pixel_values=pixels)))
    eight = pixels.repeat(8, 1, 1, 1)
    row("blip", "image encoder, batch of 8", median_time(runs, lambda: cap.vision_model(pixel_values=eight)))
    for beams, tokens in ((1, 10), (1, 20), (3, 10), (3, 20)):
        def caption():
            cap.generate(pixel_values=pixels, input_ids=start, num_beams=beams, max_new_tokens=tokens,
                         min_new_tokens=tokens, do_sample=False)
        name = f"caption: {beams} beam{'s' if beams > 1 else ''}, {tokens} tokens"
        row("blip", name, median_time(runs, caption))
    for beams in (1, 3):
        def batch():
            # generate() on a batch: 8 photos, one encoder pass, their beams decoded together.
            cap.generate(pixel_values=eight, input_ids=start.repeat(8, 1), num_beams=beams, max_new_tokens=10,
                         min_new_tokens=10, do_sample=False)
        name = f"caption 8 photos together: {beams} beam{'s' if beams > 1 else ''}, 10 tokens"
        row("blip", name, median_time(runs, batch))
    del cap

    vqa = BlipForQuestionAnswering(config).eval()
    question = tok(["how many dogs are on the beach?"], return_tensors="pt")

    def answer():
        vqa.generate(pixel_values=pixels, input_ids=question.input_ids, attention_mask=question.attention_mask,
                     max_new_tokens=5, min_new_tokens=5, do_sample=False)
    row("blip", "answer: new image, greedy, 5 tokens", median_time(runs, answer))
    del vqa

    itm = BlipForImageTextRetrieval(config).eval()
    for top in (10, 50):
        text = tok(["a dog running on the beach"] * 8, return_tensors="pt")

        def rerank():
            # Eight photos at a time, as clipdex encodes them.
            for first in range(0, top, 8):
                n = min(8, top - first)
                itm(input_ids=text.input_ids[:n], attention_mask=text.attention_mask[:n],
                    pixel_values=pixels.repeat(n, 1, 1, 1), use_itm_head=True)
        row("blip", f"re-rank top {top} with ITM", median_time(runs if top == 10 else 1, rerank))


def clipseg(runs):
    from transformers import CLIPSegConfig, CLIPSegForImageSegmentation, CLIPSegProcessor

    # CIDAS/clipseg-rd64-refined's shapes: ViT-B/16 CLIP (224 px position embeddings, run at
    # 352 px), decoder of width 64 fed by layers 3, 6 and 9, the complex transposed head.
    config = CLIPSegConfig(vision_config={"patch_size": 16}, extract_layers=[3, 6, 9], reduce_dim=64,
                           use_complex_transposed_convolution=True)
    model = CLIPSegForImageSegmentation(config).eval()
    proc = CLIPSegProcessor.from_pretrained(ROOT / "tests/fixtures/clipseg/clipseg-tiny-refined")
    photo = Image.open(PHOTO).convert("RGB").resize((512, 512))
    prompts = ["a person", "a flag", "a helmet", "the sky", "a rocket"]
    pixels = proc(images=[photo], return_tensors="pt").pixel_values
    row("clipseg", "preprocess (512x512 -> 352x352)", median_time(runs, lambda: proc(images=[photo], return_tensors="pt")))
    one = proc(text=prompts[:1], return_tensors="pt", padding=True)
    row("clipseg", "1 prompt", median_time(runs, lambda: model(pixel_values=pixels, **one)))
    five = proc(text=prompts, return_tensors="pt", padding=True)
    # transformers runs the vision tower once per prompt (the pixels repeated): its way of
    # answering five prompts about one photo.
    row("clipseg", "5 prompts (one vision pass)",
        median_time(runs, lambda: model(pixel_values=pixels.repeat(5, 1, 1, 1), **five)))


def clip(_runs):
    model, tok = random_clip()
    for name, seconds in clip_rows(model, tok):
        row("clip", name, seconds)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("model", choices=["blip", "clipseg", "clip"])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--bf16", action="store_true", help="the models under bf16 autocast")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    np.random.seed(0)
    precision = "bf16 autocast" if args.bf16 else "f32"
    print(f"transformers {args.model} benchmark: base shapes, random weights, {precision}, "
          f"{torch.get_num_threads()} threads, torch {torch.__version__}", flush=True)
    with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=args.bf16):
        {"blip": blip, "clipseg": clipseg, "clip": clip}[args.model](args.runs)


if __name__ == "__main__":
    main()
