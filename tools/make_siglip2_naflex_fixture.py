#!/usr/bin/env python3
"""Generate the SigLIP 2 NaFlex test fixture (`model_type` `siglip2`): a tiny random
`Siglip2Model` in the Hugging Face layout, built from the real `google/siglip-base-patch16-224`
config.json with the layer counts and widths cut and `model_type` siglip2, a tiny Gemma-style
`tokenizer.json` (a byte-fallback SentencePiece BPE trained here, converted by transformers'
`GemmaTokenizerFast` as the hub's SigLIP 2 repositories ship it), and golden token ids,
embeddings and sigmoid zero-shot probabilities from transformers (the reference).

    PYTHONPATH=/root/venv-siglip-extra/lib/python3.11/site-packages \\
        /root/venv-torch/bin/python tools/make_siglip2_naflex_fixture.py

Pinned packages: tools/requirements.txt and tools/requirements-siglip.txt. The shapes are odd on
purpose: 3 vision heads of width 12, patch 8, a 5x5 position table resized to every photo's grid,
at most 48 patches (so the portrait, the panorama, the square and the 1-pixel photo all get grids
of their own, padded), a text tower narrower than the embedding. Weights are scaled as in
tools/make_siglip_fixtures.py so that every path (the masked pooling head, the position resize,
the padding) visibly changes the output. Seeded: a re-run with the same versions writes the same
files.
"""

from __future__ import annotations

import io
import json
import shutil
import sys
from pathlib import Path

import numpy as np
import sentencepiece as spm
import torch
import transformers
from PIL import Image
from transformers import GemmaTokenizer, GemmaTokenizerFast, Siglip2Config, Siglip2ImageProcessor, Siglip2Model

sys.path.insert(0, str(Path(__file__).resolve().parent))
from make_siglip_fixtures import FIX, GOLDEN, HUB_CONFIG, TEXTS, WORDS, ZEROSHOT_LABELS, ZEROSHOT_TEMPLATE  # noqa: E402
from make_siglip_fixtures import perturb_, unit, upright_rgb  # noqa: E402

NAME = "siglip2-tiny-naflex"
CONTEXT = 64
PATCH = 8
MAX_PATCHES = 48
SEED = 41
TEXT = {"hidden_size": 24, "intermediate_size": 40, "num_hidden_layers": 2, "num_attention_heads": 3,
        "projection_size": 36}
VISION = {"hidden_size": 36, "intermediate_size": 52, "num_hidden_layers": 2, "num_attention_heads": 3,
          "patch_size": PATCH, "num_patches": 25}

# Portrait (written here: the stored pixels of chelsea_exif6.jpg, halved, without its rotation),
# panorama, square, a single pixel, landscape photos and a grey one.
PORTRAIT = "portrait_150x226.png"
IMAGE_FILES = [PORTRAIT, "chelsea_exif6.jpg", "panorama_4000x300.jpg", "astronaut.jpg", "pixel_1x1.png", "coffee.png",
               "rocket.webp", "camera_gray.jpg"]


def train_tokenizer(out: Path) -> GemmaTokenizerFast:
    """A byte-fallback BPE with Gemma's special pieces, saved as transformers saves Gemma's."""
    rng = np.random.default_rng(SEED)
    sentences = [" ".join(rng.choice(WORDS, int(rng.integers(3, 12)))) for _ in range(600)]
    sentences += [t.lower() for t in TEXTS if t.strip()] * 3
    model = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(sentences), model_writer=model, model_type="bpe", vocab_size=500,
        pad_id=0, eos_id=1, bos_id=2, unk_id=3, pad_piece="<pad>", eos_piece="<eos>", bos_piece="<bos>",
        unk_piece="<unk>", byte_fallback=True, character_coverage=0.9995, num_threads=1,
        shuffle_input_sentence=False, split_digits=True, add_dummy_prefix=False,
        normalization_rule_name="identity", remove_extra_whitespaces=False, allow_whitespace_only_pieces=True,
    )
    spiece = out / "tokenizer.model"
    spiece.write_bytes(model.getvalue())
    slow = GemmaTokenizer(str(spiece), model_max_length=CONTEXT)
    fast = GemmaTokenizerFast(tokenizer_object=None, vocab_file=str(spiece), model_max_length=CONTEXT,
                              from_slow=True)
    assert fast.vocab_size == slow.vocab_size
    # Texts are padded at the end: the model pools the last position (a padding token), as
    # SigLIP 2 was trained and its hub tokenizers pad.
    fast.padding_side = "right"
    fast.save_pretrained(out)
    for extra in ("special_tokens_map.json", "added_tokens.json", "tokenizer.model"):
        (out / extra).unlink(missing_ok=True)
    return fast


def main() -> None:
    out = FIX / NAME
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    tok = train_tokenizer(out)
    portrait = FIX / "images" / PORTRAIT
    if not portrait.exists():
        Image.open(FIX / "images" / "chelsea_exif6.jpg").convert("RGB").resize((150, 226), Image.BICUBIC).save(portrait)

    hub = json.loads(HUB_CONFIG.read_text())
    assert hub["model_type"] == "siglip"
    text_config = {**hub["text_config"], **TEXT, "vocab_size": len(tok), "model_type": "siglip2_text_model"}
    vision_config = {**hub["vision_config"], **VISION, "model_type": "siglip2_vision_model"}
    torch.manual_seed(SEED)
    config = Siglip2Config(text_config=text_config, vision_config=vision_config)
    model = Siglip2Model(config).eval()
    perturb_(model, torch.Generator().manual_seed(SEED))
    model.save_pretrained(out, safe_serialization=True)
    proc = Siglip2ImageProcessor(patch_size=PATCH, max_num_patches=MAX_PATCHES)
    proc.save_pretrained(out)

    golden: dict = {
        "model_dir": NAME,
        "dim": VISION["hidden_size"],
        "logit_scale": float(model.logit_scale.exp().detach()),
        "logit_bias": float(model.logit_bias.detach()),
        "max_length": CONTEXT,
        "versions": {"torch": torch.__version__, "transformers": transformers.__version__,
                     "sentencepiece": spm.__version__, "pillow": Image.__version__},
        "texts": [],
        "images": [],
    }

    def encode(texts: list[str]) -> torch.Tensor:
        # SigLIP 2 was trained on lower-cased texts; clipdex lower-cases them (as Python does).
        return tok([t.lower() for t in texts], padding="max_length", max_length=CONTEXT, truncation=True,
                   return_tensors="pt")["input_ids"]

    with torch.no_grad():
        for text in TEXTS:
            ids = encode([text])
            emb = model.get_text_features(input_ids=ids)
            golden["texts"].append({"text": text, "ids": ids[0].tolist(), "embedding": unit(emb)})
        label_ids = encode([ZEROSHOT_TEMPLATE.format(label) for label in ZEROSHOT_LABELS])
        golden["zeroshot"] = {"labels": ZEROSHOT_LABELS, "template": ZEROSHOT_TEMPLATE}
        for file in IMAGE_FILES:
            rgb = upright_rgb(FIX / "images" / file)
            inputs = proc(images=rgb, return_tensors="pt", input_data_format="channels_last")
            out_all = model(input_ids=label_ids, **inputs)
            emb = model.get_image_features(**inputs)
            probs = torch.sigmoid(out_all.logits_per_image)
            golden["images"].append({"file": file, "size": list(rgb.size),
                                     "grid": inputs["spatial_shapes"][0].tolist(), "embedding": unit(emb),
                                     "probabilities": [float(x) for x in probs[0]]})
    spread = [max(im["probabilities"]) - min(im["probabilities"]) for im in golden["images"]]
    print(f"{NAME}: grids {[im['grid'] for im in golden['images']]}")
    print(f"{NAME}: probability spread per image {['%.3f' % s for s in spread]}")
    (GOLDEN / f"{NAME}.json").write_text(json.dumps(golden, indent=1, ensure_ascii=False))
    print(f"wrote {out} and its goldens")


if __name__ == "__main__":
    main()
