#!/usr/bin/env python3
"""The PyTorch side of `cargo bench --bench text_towers`: one query's text embedding
(tokenise + text tower + projection + normalisation) with transformers at real shapes, random
weights, fp32, on the CPU: CLIP ViT-B/32's text tower, Chinese-CLIP ViT-B/16's (BERT-base) and
clip-ViT-B-32-multilingual-v1's (DistilBERT, mean pooling, 768->512), each with the tokenizer the
Rust side uses (the fast tokenizers; the Chinese-CLIP vocabulary stands in for the multilingual
one, which is not available offline).

    ~/venv-ref/bin/python tools/bench_text_towers_torch.py tests/fixtures/chinese-clip-tiny-p16/vocab.txt [--threads 2]

Prints `torch NAME MS ms` lines that the Rust bench reads.
"""

import argparse
import statistics
import time
from pathlib import Path

import torch
from transformers import (
    BertTokenizerFast,
    ChineseCLIPConfig,
    ChineseCLIPModel,
    CLIPConfig,
    CLIPModel,
    CLIPTokenizerFast,
    DistilBertConfig,
    DistilBertModel,
)

ROOT = Path(__file__).resolve().parent.parent
RUNS = 31


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
    ap.add_argument("vocab")
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    print(f"transformers text towers: random weights, f32, {torch.get_num_threads()} threads, torch {torch.__version__}")
    with torch.inference_mode():
        clip = CLIPModel(CLIPConfig()).eval()
        tok = CLIPTokenizerFast.from_pretrained(ROOT / "tests/fixtures/clip-tiny-p32")

        def clip_query():
            f = clip.get_text_features(**tok(["a dog running on the beach at sunset"], return_tensors="pt"))
            return f / f.norm(dim=-1, keepdim=True)

        print(f"torch clip {median_time(RUNS, clip_query) * 1e3:.2f} ms")
        del clip

        config = ChineseCLIPConfig(text_config={"vocab_size": 21128}, vision_config={"patch_size": 16})
        chinese = ChineseCLIPModel(config).eval()
        zh = BertTokenizerFast(args.vocab, do_lower_case=True, model_max_length=52)

        def chinese_query():
            enc = zh(["海边日落时奔跑的小狗"], truncation=True, return_tensors="pt")
            hidden = chinese.text_model(input_ids=enc["input_ids"], attention_mask=enc["attention_mask"])
            f = chinese.text_projection(hidden.last_hidden_state[:, 0, :])
            return f / f.norm(dim=-1, keepdim=True)

        print(f"torch chinese-clip {median_time(RUNS, chinese_query) * 1e3:.2f} ms")
        del chinese

        distil = DistilBertModel(DistilBertConfig(vocab_size=119547)).eval()
        dense = torch.nn.Linear(768, 512, bias=False)
        cased = BertTokenizerFast(args.vocab, do_lower_case=False, model_max_length=128)

        def multilingual_query():
            enc = cased(["ein Hund, der bei Sonnenuntergang am Strand läuft"], truncation=True, return_tensors="pt")
            states = distil(input_ids=enc["input_ids"], attention_mask=enc["attention_mask"]).last_hidden_state
            mask = enc["attention_mask"].unsqueeze(-1).float()
            pooled = (states * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
            f = dense(pooled)
            return f / f.norm(dim=-1, keepdim=True)

        print(f"torch multilingual {median_time(RUNS, multilingual_query) * 1e3:.2f} ms")


if __name__ == "__main__":
    main()
