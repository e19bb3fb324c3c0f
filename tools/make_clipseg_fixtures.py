#!/usr/bin/env python3
"""Generate the CLIPSeg fixtures: two tiny random CLIPSeg models in the Hugging Face layout (the
plain transposed-convolution head of CIDAS/clipseg-rd64 and the "refined" complex head of
CIDAS/clipseg-rd64-refined) with the real CLIP tokenizer, and golden outputs of
`CLIPSegForImageSegmentation` from transformers: logits for text prompts and for a visual
prompt on several photos, and probability maps as 8-bit PNGs.

    ~/venv-ref/bin/python tools/make_clipseg_fixtures.py

Writes tests/fixtures/clipseg/. Needs tests/fixtures/ from make_fixtures.py (the photos and the
CLIP tokenizer). Seeded: a re-run with the pinned versions writes the same files.
"""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from safetensors.torch import save_file
from transformers import (CLIPSegConfig, CLIPSegForImageSegmentation, CLIPSegProcessor, CLIPTokenizerFast,
                          ViTImageProcessor)

sys.path.insert(0, str(Path(__file__).resolve().parent))
from make_fixtures import FIX, IMAGES, perturb_, reference_rgb  # noqa: E402

OUT = FIX / "clipseg"
PROMPTS = ["a cat", "a red rocket on a launch pad", "coffee"]
PHOTOS = ["astronaut.jpg", "coffee.png", "chelsea_exif6.jpg"]
VISUAL = ("astronaut.jpg", "rocket.webp")  # (image, example image)
STRIDE = 3  # logits are stored on every third row and column of the 352 x 352 map

MODELS = {
    # CIDAS/clipseg-rd64's geometry scaled down: patch 16, a 64 px CLIP interpolated to 352 px,
    # activations of three of four layers, FiLM at the first decoder layer, the plain head.
    "clipseg-tiny": {"seed": 64, "complex": False, "conditional_layer": 0, "film_gain": 1.0, "reduce_gain": 0.2, "head_gain": 4.0},
    # The refined variant: the complex head (conv, two transposed convolutions), FiLM at layer 1.
    "clipseg-tiny-refined": {"seed": 65, "complex": True, "conditional_layer": 1, "film_gain": 1.0, "reduce_gain": 0.05, "head_gain": 2.2},
}


def build(spec: dict) -> CLIPSegForImageSegmentation:
    torch.manual_seed(spec["seed"])
    config = CLIPSegConfig(
        text_config={"vocab_size": 49408, "hidden_size": 16, "intermediate_size": 40, "num_hidden_layers": 2,
                     "num_attention_heads": 2, "max_position_embeddings": 77, "hidden_act": "quick_gelu",
                     "bos_token_id": 49406, "eos_token_id": 49407, "pad_token_id": 1},
        vision_config={"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 4, "num_attention_heads": 2,
                       "image_size": 64, "patch_size": 16, "hidden_act": "quick_gelu"},
        projection_dim=24,
        extract_layers=[0, 2, 3],
        reduce_dim=16,
        decoder_num_attention_heads=2,
        decoder_intermediate_size=32,
        conditional_layer=spec["conditional_layer"],
        use_complex_transposed_convolution=spec["complex"],
    )
    model = CLIPSegForImageSegmentation(config).eval()
    gen = torch.Generator().manual_seed(spec["seed"])
    perturb_(model, gen)
    # Make the prompt matter (FiLM) and the logits span the sigmoid, so that a wrong prompt
    # path or head moves every probability visibly instead of hovering around 0.5.
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.startswith("decoder.film_"):
                p.mul_(spec["film_gain"])
            if name.startswith("decoder.reduces"):
                p.mul_(spec["reduce_gain"])
            if name.startswith("decoder.transposed_convolution") and name.endswith("weight"):
                p.mul_(spec["head_gain"])
            p.copy_(p.half().float())
    return model


def processor(tokenizer_dir: Path) -> CLIPSegProcessor:
    # CIDAS/clipseg-rd64-refined's preprocessor_config.json: ViT preprocessing, 352 px, bilinear,
    # ImageNet mean and std.
    image = ViTImageProcessor(do_resize=True, size={"height": 352, "width": 352}, resample=2, do_rescale=True,
                              do_normalize=True, image_mean=[0.485, 0.456, 0.406], image_std=[0.229, 0.224, 0.225])
    tok = CLIPTokenizerFast.from_pretrained(tokenizer_dir)
    return CLIPSegProcessor(image_processor=image, tokenizer=tok)


def write_model(name: str, spec: dict) -> None:
    out = OUT / name
    out.mkdir(parents=True)
    model = build(spec)
    proc = processor(FIX / "clip-tiny-p32")
    state = {k: v.half().contiguous() for k, v in model.state_dict().items()}
    save_file(state, out / "model.safetensors", metadata={"format": "pt"})
    model.config.save_pretrained(out)
    proc.save_pretrained(out)
    tj = out / "tokenizer.json"
    tj.write_text(json.dumps(json.loads(tj.read_text(encoding="utf-8")), ensure_ascii=False, separators=(",", ":")),
                  encoding="utf-8")
    for f in ("vocab.json", "merges.txt"):
        if (out / f).exists():
            (out / f).unlink()
    # The CLIP fixture's tokenizer, by link rather than a second 1.7 MB copy.
    tj.unlink()
    tj.symlink_to(Path("..") / ".." / "clip-tiny-p32" / "tokenizer.json")

    golden: dict = {"model_dir": name, "stride": STRIDE, "prompts": PROMPTS, "cases": []}
    tensors: dict[str, torch.Tensor] = {}
    previous = None
    with torch.no_grad():
        for photo in PHOTOS:
            rgb = reference_rgb(IMAGES / photo, {})
            enc = proc(text=PROMPTS, images=[rgb] * len(PROMPTS), padding=True, return_tensors="pt")
            logits = model(**enc).logits
            key = f"text/{photo}"
            tensors[key] = logits[:, ::STRIDE, ::STRIDE].contiguous()
            golden["cases"].append({
                "key": key, "image": photo, "prompts": PROMPTS, "ids": enc["input_ids"].tolist(),
                "mean": logits.mean(dim=(1, 2)).tolist(), "std": logits.std(dim=(1, 2)).tolist(),
            })
            # How much each path moves the result: another prompt, another photo.
            spread = (logits[0] - logits[1]).abs().mean().item()
            if previous is not None:
                moved = (logits - previous).abs().mean().item()
                print(f"{name} {photo}: logits std {logits.std():.3f}, prompt change {spread:.3f}, photo change {moved:.3f}")
            previous = logits
        image, example = VISUAL
        rgb, ex = reference_rgb(IMAGES / image, {}), reference_rgb(IMAGES / example, {})
        pixels = proc(images=[rgb], return_tensors="pt")["pixel_values"]
        cond = proc(images=[ex], return_tensors="pt")["pixel_values"]
        logits = model(pixel_values=pixels, conditional_pixel_values=cond).logits
        key = f"visual/{image}"
        tensors[key] = logits[:, ::STRIDE, ::STRIDE].contiguous()
        golden["cases"].append({
            "key": key, "image": image, "example": example,
            "mean": logits.mean(dim=(1, 2)).tolist(), "std": logits.std(dim=(1, 2)).tolist(),
        })
        text_logits = model(**proc(text=PROMPTS[:1], images=[rgb], return_tensors="pt")).logits
        print(f"{name} visual prompt vs text prompt: {(logits - text_logits).abs().mean():.3f}")

        # Probability maps as the CLI writes them at 352 px: round(sigmoid(logit) * 255).
        probs = torch.sigmoid(tensors_full := model(**proc(text=PROMPTS, images=[rgb] * 3, padding=True,
                                                               return_tensors="pt")).logits)
        del tensors_full
        png = f"{name}.{image}.0.prob.png"
        Image.fromarray(np.round(probs[0].numpy().astype(np.float64) * 255.0).astype(np.uint8), "L").save(OUT / png)
        golden["probability_png"] = {"image": image, "prompt": PROMPTS[0], "file": png}

        # The preprocessed pixels of one photo, as the 8-bit image before rescaling (exact).
        pv = proc(images=[reference_rgb(IMAGES / "chelsea_exif6.jpg", {})], return_tensors="np")["pixel_values"][0]
        mean = np.array([0.485, 0.456, 0.406])[:, None, None]
        std = np.array([0.229, 0.224, 0.225])[:, None, None]
        u8 = np.round((pv.astype(np.float64) * std + mean) * 255.0)
        assert np.abs(u8 - (pv * std + mean) * 255.0).max() < 1e-2
        Image.fromarray(u8.clip(0, 255).astype(np.uint8).transpose(1, 2, 0)).save(OUT / f"{name}.resized.png")
        golden["resized_png"] = {"image": "chelsea_exif6.jpg", "file": f"{name}.resized.png"}

    save_file(tensors, OUT / f"{name}.golden.safetensors")
    (OUT / f"{name}.golden.json").write_text(json.dumps(golden, indent=1))
    print(f"wrote {out}")


def main() -> None:
    torch.set_num_threads(2)
    if OUT.exists():
        shutil.rmtree(OUT)
    OUT.mkdir(parents=True)
    for name, spec in MODELS.items():
        write_model(name, spec)


if __name__ == "__main__":
    main()
