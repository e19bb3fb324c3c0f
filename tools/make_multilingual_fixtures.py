#!/usr/bin/env python3
"""Generate the multilingual text-tower fixtures: tiny random sentence-transformers models in
the layouts the hub uses (a Transformer at the root or in `0_Transformer/`, `1_Pooling`, an
optional `2_Dense`), with golden token ids and embeddings from sentence-transformers itself.

    ~/venv-ref/bin/pip install --no-deps sentence-transformers==5.1.2 && ~/venv-ref/bin/pip install scikit-learn==1.6.1
    ~/venv-ref/bin/python tools/make_multilingual_fixtures.py /tmp/cnclip/cn_clip-1.6.0-py3-none-any.whl

Three encoders, one of each family `--text-model` reads, each with another pooling and head:
- `st-distilbert-tiny`: DistilBERT at the root (the layout of
  sentence-transformers/clip-ViT-B-32-multilingual-v1), a cased WordPiece vocabulary given as
  vocab.txt only, mean pooling, a bias-free Dense to 24 (the width of the fixture CLIP
  `clip-tiny-p32`, whose image space it pretends to share), weights as PyTorch pickles.
- `st-bert-tiny`: BERT in `0_Transformer/` (older layout), tokenizer.json, lower-cased by the
  module (`do_lower_case`), CLS pooling, a Dense with bias and tanh, safetensors.
- `st-xlmr-tiny`: XLM-RoBERTa (positions from padding_idx + 1), a SentencePiece-style Unigram
  tokenizer.json, max pooling, no Dense, a Normalize module.

The WordPiece vocabulary is Chinese-CLIP's (from the cn-clip wheel), which covers CJK and Latin
pieces. Seeded: a re-run with the same versions writes the same files.
"""

from __future__ import annotations

import json
import math
import shutil
import sys
import zipfile
from pathlib import Path

import numpy as np
import sentence_transformers
import torch
import transformers
from sentence_transformers import SentenceTransformer, models
from tokenizers import SentencePieceUnigramTokenizer
from tokenizers.processors import TemplateProcessing
from transformers import (
    BertConfig,
    BertModel,
    BertTokenizerFast,
    DistilBertConfig,
    DistilBertModel,
    DistilBertTokenizer,
    XLMRobertaConfig,
    XLMRobertaModel,
    XLMRobertaTokenizerFast,
)

ROOT = Path(__file__).resolve().parent.parent
FIX = ROOT / "tests" / "fixtures"
GOLDEN = FIX / "golden"

TEXTS = [
    "",
    "a photo of a cat",
    "A Photo Of A CAT!!",
    "一只猫坐在沙发上",
    "北京天安门广场的夜景，灯火辉煌。",
    "東京タワーと富士山の写真",
    "ひらがなとカタカナ",
    "서울의 밤 풍경 사진",
    "naïve café résumé Ångström",
    "cafe\u0301 (decomposed accent)",
    "Straße in München, Ölgemälde",
    "¿Dónde está la playa? ¡Aquí!",
    "Фотография кошки на диване",
    "Ένα σκυλί στην παραλία",
    "صورة قطة على الأريكة",
    "एक बिल्ली की तस्वीर",
    "２０２４年５月１日　ＡＢＣ　全角文字",
    "🐶🐱 a dog and a cat 🚗",
    "tabs\tand\nnewlines   and    spaces",
    "control\u0000chars\u0007here\u200b",
    "1234 3.14159 2024-05-01",
    "un chien qui court sur la plage au coucher du soleil",
    "ein Hund, der am Strand läuft",
    "cane che corre sulla spiaggia",
    " ".join(["sunset over the mountains with a lake"] * 12),
    "中文" * 60,
]


def perturb_(model: torch.nn.Module, gen: torch.Generator) -> None:
    """Weights under which every path visibly changes the output, rounded to fp16 once (the
    saved weights are half precision)."""
    with torch.no_grad():
        for name, p in model.named_parameters():
            lower = name.lower()
            shape = p.shape
            if "layernorm" in lower or "layer_norm" in lower:
                p.copy_(1.0 + 0.4 * torch.randn(shape, generator=gen) if name.endswith("weight")
                        else 0.3 * torch.randn(shape, generator=gen))
            elif name.endswith("bias"):
                p.copy_(0.2 * torch.randn(shape, generator=gen))
            elif "embedding" in lower and p.dim() <= 2:
                p.copy_(0.8 * torch.randn(shape, generator=gen))
            else:
                fan_in = int(np.prod(shape[1:])) if p.dim() > 1 else shape[0]
                gain = 3.0 if "attention" in lower else 1.3
                p.copy_(gain * torch.randn(shape, generator=gen) / math.sqrt(fan_in))
        for p in model.parameters():
            p.copy_(p.half().float())


def save_half(model: torch.nn.Module, out: Path, safetensors: bool) -> None:
    model.half().save_pretrained(out, safe_serialization=safetensors)
    model.float()


def write_json(path: Path, value: dict | list) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(value, indent=2))


def compact_tokenizer_json(path: Path) -> None:
    path.write_text(json.dumps(json.loads(path.read_text(encoding="utf-8")), ensure_ascii=False,
                               separators=(",", ":")), encoding="utf-8")


def dense_(dense: torch.nn.Linear, gen: torch.Generator) -> None:
    with torch.no_grad():
        dense.weight.copy_((1.3 * torch.randn(dense.weight.shape, generator=gen) / math.sqrt(dense.in_features)).half().float())
        if dense.bias is not None:
            dense.bias.copy_((0.2 * torch.randn(dense.bias.shape, generator=gen)).half().float())


def write_modules(out: Path, modules: list[tuple[str, str]]) -> None:
    write_json(out / "modules.json", [
        {"idx": i, "name": str(i), "path": path, "type": f"sentence_transformers.models.{kind}"}
        for i, (path, kind) in enumerate(modules)
    ])


def distilbert(out: Path, vocab_txt: str) -> None:
    """clip-ViT-B-32-multilingual-v1's layout: DistilBERT at the root, mean pooling, a Dense
    without bias or activation, every module's weights as pytorch_model.bin."""
    (out / "vocab.txt").write_text(vocab_txt, encoding="utf-8")
    vocab_size = len(vocab_txt.rstrip("\n").split("\n"))
    tok = DistilBertTokenizer(str(out / "vocab.txt"), do_lower_case=False, model_max_length=512)
    tok.save_pretrained(out)
    for extra in ("tokenizer.json", "special_tokens_map.json"):
        (out / extra).unlink(missing_ok=True)
    torch.manual_seed(7)
    config = DistilBertConfig(vocab_size=vocab_size, dim=32, hidden_dim=48, n_layers=3, n_heads=4,
                              max_position_embeddings=64, activation="gelu")
    model = DistilBertModel(config).eval()
    gen = torch.Generator().manual_seed(7)
    perturb_(model, gen)
    save_half(model, out, safetensors=False)
    write_json(out / "sentence_bert_config.json", {"max_seq_length": 40, "do_lower_case": False})
    write_json(out / "1_Pooling" / "config.json", {
        "word_embedding_dimension": 32, "pooling_mode_cls_token": False, "pooling_mode_mean_tokens": True,
        "pooling_mode_max_tokens": False, "pooling_mode_mean_sqrt_len_tokens": False})
    dense = torch.nn.Linear(32, 24, bias=False)
    dense_(dense, gen)
    write_json(out / "2_Dense" / "config.json", {
        "in_features": 32, "out_features": 24, "bias": False,
        "activation_function": "torch.nn.modules.linear.Identity"})
    torch.save({"linear.weight": dense.weight.detach().half()}, out / "2_Dense" / "pytorch_model.bin")
    write_modules(out, [("", "Transformer"), ("1_Pooling", "Pooling"), ("2_Dense", "Dense")])


def bert(out: Path, vocab_txt: str) -> None:
    """The older layout: BERT in 0_Transformer/, tokenizer.json, CLS pooling, a Dense with bias
    and tanh, safetensors."""
    inner = out / "0_Transformer"
    inner.mkdir(parents=True)
    (inner / "vocab.txt").write_text(vocab_txt, encoding="utf-8")
    vocab_size = len(vocab_txt.rstrip("\n").split("\n"))
    tok = BertTokenizerFast(str(inner / "vocab.txt"), do_lower_case=True, model_max_length=512)
    tok.save_pretrained(inner)
    (inner / "vocab.txt").unlink()
    compact_tokenizer_json(inner / "tokenizer.json")
    torch.manual_seed(8)
    config = BertConfig(vocab_size=vocab_size, hidden_size=24, intermediate_size=40, num_hidden_layers=2,
                        num_attention_heads=2, max_position_embeddings=48, type_vocab_size=2, hidden_act="gelu")
    model = BertModel(config, add_pooling_layer=True).eval()
    gen = torch.Generator().manual_seed(8)
    perturb_(model, gen)
    save_half(model, inner, safetensors=True)
    write_json(inner / "sentence_bert_config.json", {"max_seq_length": 32, "do_lower_case": True})
    write_json(out / "1_Pooling" / "config.json", {
        "word_embedding_dimension": 24, "pooling_mode_cls_token": True, "pooling_mode_mean_tokens": False,
        "pooling_mode_max_tokens": False, "pooling_mode_mean_sqrt_len_tokens": False})
    dense = torch.nn.Linear(24, 16, bias=True)
    dense_(dense, gen)
    write_json(out / "2_Dense" / "config.json", {
        "in_features": 24, "out_features": 16, "bias": True,
        "activation_function": "torch.nn.modules.activation.Tanh"})
    from safetensors.torch import save_file
    save_file({"linear.weight": dense.weight.detach().half().contiguous(),
               "linear.bias": dense.bias.detach().half().contiguous()}, out / "2_Dense" / "model.safetensors")
    write_modules(out, [("0_Transformer", "Transformer"), ("1_Pooling", "Pooling"), ("2_Dense", "Dense")])


def xlmr(out: Path) -> None:
    """XLM-RoBERTa (positions numbered from padding_idx + 1) with a Unigram tokenizer.json,
    max pooling, no Dense, a Normalize module."""
    unigram = SentencePieceUnigramTokenizer()
    corpus = TEXTS * 3 + ["the quick brown fox jumps over the lazy dog", "猫 狗 鸟 鱼 山 水 海 天"]
    unigram.train_from_iterator(corpus, vocab_size=400, special_tokens=["<s>", "<pad>", "</s>", "<unk>"],
                                unk_token="<unk>", show_progress=False)
    unigram.add_special_tokens(["<mask>"])
    unigram.post_processor = TemplateProcessing(
        single="<s> $A </s>", pair="<s> $A </s> </s> $B </s>",
        special_tokens=[("<s>", 0), ("</s>", 2)])
    tok = XLMRobertaTokenizerFast(tokenizer_object=unigram, bos_token="<s>", eos_token="</s>", sep_token="</s>",
                                  cls_token="<s>", unk_token="<unk>", pad_token="<pad>", mask_token="<mask>",
                                  model_max_length=512)
    tok.save_pretrained(out)
    for extra in ("sentencepiece.bpe.model",):
        (out / extra).unlink(missing_ok=True)
    compact_tokenizer_json(out / "tokenizer.json")
    torch.manual_seed(9)
    config = XLMRobertaConfig(vocab_size=tok.backend_tokenizer.get_vocab_size(), hidden_size=20, intermediate_size=36,
                              num_hidden_layers=2, num_attention_heads=5, max_position_embeddings=40, type_vocab_size=1,
                              pad_token_id=1, bos_token_id=0, eos_token_id=2, hidden_act="gelu")
    model = XLMRobertaModel(config, add_pooling_layer=False).eval()
    perturb_(model, torch.Generator().manual_seed(9))
    save_half(model, out, safetensors=True)
    write_json(out / "sentence_bert_config.json", {"max_seq_length": 38, "do_lower_case": False})
    write_json(out / "1_Pooling" / "config.json", {
        "word_embedding_dimension": 20, "pooling_mode_cls_token": False, "pooling_mode_mean_tokens": False,
        "pooling_mode_max_tokens": True, "pooling_mode_mean_sqrt_len_tokens": False})
    write_modules(out, [("", "Transformer"), ("1_Pooling", "Pooling"), ("2_Normalize", "Normalize")])
    (out / "2_Normalize").mkdir(exist_ok=True)


def goldens(name: str) -> None:
    out = FIX / name
    model = SentenceTransformer(str(out), device="cpu")
    model.eval()
    golden: dict = {
        "model_dir": name,
        "dim": model.get_sentence_embedding_dimension(),
        "versions": {"torch": torch.__version__, "transformers": transformers.__version__,
                     "sentence_transformers": sentence_transformers.__version__},
        "texts": [],
    }
    with torch.no_grad():
        embeddings = model.encode(TEXTS, batch_size=len(TEXTS), normalize_embeddings=True, convert_to_numpy=True)
        for text, emb in zip(TEXTS, embeddings):
            ids = model.tokenize([text])["input_ids"][0].tolist()
            golden["texts"].append({"text": text, "ids": ids, "embedding": [float(x) for x in emb]})
    e = np.array(embeddings)
    c = e @ e.T
    print(f"{name}: dim {golden['dim']}, mean pairwise cosine {c[np.triu_indices(len(e), 1)].mean():.3f}")
    (GOLDEN / f"{name}.json").write_text(json.dumps(golden, indent=1, ensure_ascii=False))


def main() -> None:
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    with zipfile.ZipFile(sys.argv[1]) as wheel:
        vocab_txt = wheel.read("cn_clip/clip/vocab.txt").decode("utf-8")
    for name, build in (("st-distilbert-tiny", lambda o: distilbert(o, vocab_txt)),
                        ("st-bert-tiny", lambda o: bert(o, vocab_txt)),
                        ("st-xlmr-tiny", xlmr)):
        out = FIX / name
        if out.exists():
            shutil.rmtree(out)
        out.mkdir(parents=True)
        build(out)
        goldens(name)


if __name__ == "__main__":
    main()
