#!/usr/bin/env python3
"""A tiny BLIP captioning model whose config.json is the hub's own
`Salesforce/blip-image-captioning-base` file (tests/fixtures/hub-configs/) with only its sizes
cut down: every other key as the hub ships it (transformers 4.26's layout: no
`encoder_hidden_size`, `eos_token_id: 2` beside `sep_token_id: 102`, legacy generation keys,
`"transformers_version": null`), and the hub's preprocessor_config.json verbatim (a bare
integer `size`). The vision tower is made wider than the text one, so the text's cross-attention
only fits when `encoder_hidden_size` is taken from the vision width, as transformers'
`BlipConfig` does. Golden: greedy captions of two photos (ids) from transformers.

    ~/venv-ref/bin/python tools/make_legacy_blip_fixture.py
"""

from __future__ import annotations

import json
import re
import shutil
import sys
from pathlib import Path

import torch
from safetensors.torch import save_file
from transformers import BlipConfig, BlipForConditionalGeneration, BlipImageProcessor, BertTokenizerFast

sys.path.insert(0, str(Path(__file__).resolve().parent))
from make_blip_fixtures import scale_  # noqa: E402
from make_fixtures import FIX, IMAGES, reference_rgb  # noqa: E402

REAL = FIX / "hub-configs" / "Salesforce--blip-image-captioning-base"
OUT = FIX / "hub-configs-tiny" / "blip-legacy"
PHOTOS = ["astronaut.jpg", "coffee.png"]
# Sizes replaced in the real file's text: (tower, key) -> value.
SIZES = {
    ("text_config", "hidden_size"): 32, ("text_config", "intermediate_size"): 64,
    ("text_config", "num_hidden_layers"): 2, ("text_config", "num_attention_heads"): 2,
    ("vision_config", "hidden_size"): 48, ("vision_config", "intermediate_size"): 96,
    ("vision_config", "num_hidden_layers"): 2, ("vision_config", "num_attention_heads"): 2,
    ("vision_config", "patch_size"): 48,
}


def cut_sizes(text: str) -> str:
    """The real config's text with the sizes above replaced, nothing else touched."""
    for tower in ("text_config", "vision_config"):
        start = text.index(f'"{tower}": {{')
        end = text.index("\n  }", start)
        block = text[start:end]
        for (t, key), value in SIZES.items():
            if t == tower:
                block, n = re.subn(rf'("{key}" ?: )\d+', rf"\g<1>{value}", block, count=1)
                assert n == 1, (tower, key)
        text = text[:start] + block + text[end:]
    return text


def main() -> None:
    torch.set_num_threads(2)
    if OUT.exists():
        shutil.rmtree(OUT)
    OUT.mkdir(parents=True)
    (OUT / "config.json").write_text(cut_sizes((REAL / "config.json").read_text()))
    shutil.copy(REAL / "preprocessor_config.json", OUT / "preprocessor_config.json")
    for f in ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"):
        src = FIX / "blip" / "blip-tiny-captioning" / f
        shutil.copy(src.resolve(), OUT / f)
    config = BlipConfig.from_pretrained(OUT)
    assert "encoder_hidden_size" not in json.loads((OUT / "config.json").read_text())["text_config"]
    assert config.text_config.encoder_hidden_size == 48, config.text_config.encoder_hidden_size
    torch.manual_seed(21)
    model = BlipForConditionalGeneration(config).eval()
    scale_(model, 21)
    state = {k: v.half().contiguous() for k, v in model.state_dict().items() if not k.startswith("text_decoder.cls.predictions.decoder")}
    save_file(state, OUT / "model.safetensors", metadata={"format": "pt"})
    model.load_state_dict({k: v.float() for k, v in state.items()}, strict=False)
    model.text_decoder.cls.predictions.decoder.weight = model.text_decoder.bert.embeddings.word_embeddings.weight
    processor = BlipImageProcessor.from_pretrained(OUT)
    tok = BertTokenizerFast.from_pretrained(OUT)
    golden = {"model_dir": "hub-configs-tiny/blip-legacy", "cases": []}
    with torch.no_grad():
        for photo in PHOTOS:
            pixels = processor(images=reference_rgb(IMAGES / photo, {}), return_tensors="pt")["pixel_values"]
            ids = model.generate(pixel_values=pixels, max_new_tokens=8, num_beams=1, do_sample=False)[0].tolist()
            golden["cases"].append({"image": photo, "ids": ids, "text": tok.decode(ids, skip_special_tokens=True)})
            print(photo, ids)
    assert golden["cases"][0]["ids"] != golden["cases"][1]["ids"], "the photo must change the caption"
    (OUT.parent / "blip-legacy.golden.json").write_text(json.dumps(golden, indent=1) + "\n")


if __name__ == "__main__":
    main()
