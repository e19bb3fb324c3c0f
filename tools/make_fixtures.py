#!/usr/bin/env python3
"""Generate clipdex's test fixtures: tiny random CLIP models in the Hugging Face layout, test
photos with every awkward property we must handle, and golden outputs from the reference
implementation (transformers + PIL).

The Rust tests compare against what this script writes; CI never runs Python. Re-run it after
changing it (or a pinned version below) and commit tests/fixtures/.

    python3 -m venv ~/venv-ref
    ~/venv-ref/bin/pip install -r tools/requirements.txt
    ~/venv-ref/bin/pip install --no-deps open-clip-torch==3.2.0   # only for its BPE merges file
    ~/venv-ref/bin/python tools/make_fixtures.py

Everything is seeded, so a re-run with the same versions writes the same files.
"""

from __future__ import annotations

import gzip
import io
import json
import math
import shutil
import struct
import sys
import zlib
from pathlib import Path

import numpy as np
import torch
import transformers
from PIL import Image, ImageOps
from skimage import data as skdata
from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel, CLIPTokenizerFast

PINNED = {"torch": "2.9.1", "transformers": "4.57.3"}

ROOT = Path(__file__).resolve().parent.parent
FIX = ROOT / "tests" / "fixtures"
IMAGES = FIX / "images"
GOLDEN = FIX / "golden"

OPENAI_MEAN = [0.48145466, 0.4578275, 0.40821073]
OPENAI_STD = [0.26862954, 0.26130258, 0.27577711]

# Strings that have tripped CLIP tokenizers somewhere: case, punctuation, contractions, accents
# (NFC), emoji and CJK (byte fallback), whitespace runs, literal special tokens, and truncation.
TEXTS = [
    "",
    "a photo of a cat",
    "A Photo Of A CAT!!",
    "don't stop, it's the dog's ball; we'll see",
    "naïve café résumé Ångström",
    "cafe\u0301 (decomposed accent)",
    "🐶🐱 a dog and a cat 🚗",
    "一只猫坐在沙发上",
    "tabs\tand\nnewlines   and    spaces",
    "1234 3.14159 2024-05-01",
    "a <|endoftext|> in the middle",
    "<|startoftext|>already started",
    " ".join(["sunset over the mountains with a lake"] * 12),
    "x" * 400,
]


def bytes_to_unicode() -> dict[int, str]:
    """GPT-2's reversible byte -> printable character map, as CLIP's vocabulary uses it."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, (chr(c) for c in cs)))


def clip_vocab_and_merges() -> tuple[dict[str, int], list[str]]:
    """CLIP's real 49,408-token vocabulary, rebuilt from the BPE merges open-clip-torch ships."""
    import importlib.util

    spec = importlib.util.find_spec("open_clip")
    if spec is None or spec.origin is None:
        sys.exit("open-clip-torch is not installed: pip install --no-deps open-clip-torch==3.2.0")
    bpe = Path(spec.origin).parent / "bpe_simple_vocab_16e6.txt.gz"
    lines = gzip.open(bpe).read().decode("utf-8").split("\n")
    merges = lines[1 : 49152 - 256 - 2 + 1]
    symbols = list(bytes_to_unicode().values())
    vocab_list = symbols + [s + "</w>" for s in symbols] + ["".join(m.split()) for m in merges]
    vocab_list += ["<|startoftext|>", "<|endoftext|>"]
    assert len(vocab_list) == 49408, len(vocab_list)
    return {tok: i for i, tok in enumerate(vocab_list)}, merges


def write_tokenizer_files(dst: Path, max_len: int) -> CLIPTokenizerFast:
    vocab, merges = clip_vocab_and_merges()
    dst.mkdir(parents=True, exist_ok=True)
    (dst / "vocab.json").write_text(json.dumps(vocab, ensure_ascii=False), encoding="utf-8")
    (dst / "merges.txt").write_text("#version: 0.2\n" + "\n".join(merges) + "\n", encoding="utf-8")
    tok = CLIPTokenizerFast(
        vocab_file=str(dst / "vocab.json"),
        merges_file=str(dst / "merges.txt"),
        model_max_length=max_len,
        pad_token="<|endoftext|>",
    )
    return tok


def perturb_(model: CLIPModel, gen: torch.Generator) -> None:
    """Replace the default init (std 0.02, which makes tiny models nearly linear and attention
    nearly uniform) with weights under which every path visibly changes the output."""
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("logit_scale"):
                continue
            shape = p.shape
            if "layer_norm" in name or "layrnorm" in name or "layernorm" in name:
                if name.endswith("weight"):
                    p.copy_(1.0 + 0.4 * torch.randn(shape, generator=gen))
                else:
                    p.copy_(0.3 * torch.randn(shape, generator=gen))
            elif name.endswith("bias"):
                p.copy_(0.2 * torch.randn(shape, generator=gen))
            elif "embedding" in name and p.dim() <= 2 and "patch" not in name:
                p.copy_(0.8 * torch.randn(shape, generator=gen))
            else:
                fan_in = int(np.prod(shape[1:])) if p.dim() > 1 else shape[0]
                p.copy_(1.3 * torch.randn(shape, generator=gen) / math.sqrt(fan_in))
        # Round to fp16 once so the saved half-precision weights are exactly the ones the
        # goldens below were computed with.
        for p in model.parameters():
            p.copy_(p.half().float())


# ---------------------------------------------------------------------------------------------
# Test photos


def png_rgb16(path: Path, arr: np.ndarray) -> None:
    """Write a 16-bit RGB PNG (PIL cannot): signature, IHDR, one IDAT, IEND."""
    h, w, _ = arr.shape
    raw = b"".join(b"\x00" + arr[y].astype(">u2").tobytes() for y in range(h))

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body) & 0xFFFFFFFF)

    ihdr = struct.pack(">IIBBBBB", w, h, 16, 2, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(raw, 9)) + chunk(b"IEND", b""))


def with_orientation(img: Image.Image, orientation: int) -> bytes:
    exif = Image.Exif()
    exif[0x0112] = orientation
    buf = io.BytesIO()
    img.save(buf, "JPEG", quality=90, exif=exif.tobytes())
    return buf.getvalue()


def make_images() -> dict[str, np.ndarray]:
    """Writes the photos; returns the 8-bit RGB array the reference must see for each file whose
    correct decoding PIL alone does not give (16-bit sources)."""
    IMAGES.mkdir(parents=True, exist_ok=True)
    special: dict[str, np.ndarray] = {}
    astronaut = Image.fromarray(skdata.astronaut())
    coffee = Image.fromarray(skdata.coffee())
    chelsea = Image.fromarray(skdata.chelsea())
    rocket = Image.fromarray(skdata.rocket())

    astronaut.save(IMAGES / "astronaut.jpg", quality=92)
    coffee.save(IMAGES / "coffee.png")
    rocket.save(IMAGES / "rocket.webp", quality=85)
    chelsea.resize((225, 150), Image.BICUBIC).save(IMAGES / "chelsea_small.bmp")
    coffee.resize((300, 200), Image.BICUBIC).save(IMAGES / "coffee_small.tiff")
    # Sideways photos: the stored pixels are rotated, the EXIF tag says how to turn them upright.
    (IMAGES / "chelsea_exif6.jpg").write_bytes(with_orientation(chelsea.transpose(Image.ROTATE_90), 6))
    (IMAGES / "chelsea_exif3.jpg").write_bytes(with_orientation(chelsea.transpose(Image.ROTATE_180), 3))
    (IMAGES / "astronaut_exif8.jpg").write_bytes(with_orientation(astronaut.transpose(Image.ROTATE_270), 8))
    Image.fromarray(skdata.camera()).save(IMAGES / "camera_gray.png")
    Image.fromarray(skdata.camera()).save(IMAGES / "camera_gray.jpg", quality=90)
    rgba = astronaut.convert("RGBA")
    alpha = np.tile(np.linspace(0, 255, 512, dtype=np.uint8), (512, 1))
    rgba.putalpha(Image.fromarray(alpha))
    rgba.resize((256, 256), Image.BICUBIC).save(IMAGES / "astronaut_rgba.png")
    chelsea.convert("LA").save(IMAGES / "chelsea_la.png")
    chelsea.convert("CMYK").save(IMAGES / "chelsea_cmyk.jpg", quality=90)
    coffee.convert("P", palette=Image.ADAPTIVE, colors=64).save(IMAGES / "coffee_palette.gif")
    coffee.convert("P", palette=Image.ADAPTIVE, colors=32).save(IMAGES / "coffee_palette.png")

    # 16 bits: a smooth gradient whose low bytes matter, gray and RGB.
    yy, xx = np.mgrid[0:120, 0:200]
    gray16 = ((xx * 300 + yy * 45) % 65536).astype(np.uint16)
    Image.fromarray(gray16).save(IMAGES / "gradient_gray16.png")
    special["gradient_gray16.png"] = np.repeat(np.round(gray16 / 257.0).astype(np.uint8)[..., None], 3, axis=2)
    rgb16 = np.stack([gray16, (65535 - gray16), ((yy * 500) % 65536).astype(np.uint16)], axis=2)
    png_rgb16(IMAGES / "gradient_rgb16.png", rgb16)
    special["gradient_rgb16.png"] = np.round(rgb16 / 257.0).astype(np.uint8)

    Image.new("RGB", (1, 1), (200, 30, 90)).save(IMAGES / "pixel_1x1.png")
    # A 4000x300 panorama: the short side is far below the long one.
    pano = np.asarray(astronaut.resize((4000, 300), Image.BILINEAR))
    Image.fromarray(pano).save(IMAGES / "panorama_4000x300.jpg", quality=80)
    # A 12-megapixel phone-sized photo (4000x3000).
    big = coffee.resize((4000, 3000), Image.BICUBIC)
    big.save(IMAGES / "coffee_12mp.jpg", quality=60)
    return special


def reference_rgb(path: Path, special: dict[str, np.ndarray]) -> Image.Image:
    """The reference decoding: first frame, EXIF orientation applied, then RGB."""
    if path.name in special:
        return Image.fromarray(special[path.name], "RGB")
    img = Image.open(path)
    img = ImageOps.exif_transpose(img)
    return img.convert("RGB")


# ---------------------------------------------------------------------------------------------
# Models and goldens


def build_model(spec: dict, seed: int) -> CLIPModel:
    torch.manual_seed(seed)
    config = CLIPConfig(
        text_config=spec["text"], vision_config=spec["vision"], projection_dim=spec["projection_dim"],
        logit_scale_init_value=spec["logit_scale"],
    )
    model = CLIPModel(config).eval()
    gen = torch.Generator().manual_seed(seed)
    perturb_(model, gen)
    return model


def unit(v: torch.Tensor) -> list[float]:
    v = v / v.norm(dim=-1, keepdim=True)
    return [float(x) for x in v.reshape(-1)]


def write_fixture(name: str, spec: dict, special: dict[str, np.ndarray]) -> None:
    out = FIX / name
    if out.exists():
        shutil.rmtree(out)
    max_len = spec["text"]["max_position_embeddings"]
    tok = write_tokenizer_files(out, max_len)
    model = build_model(spec, spec["seed"])

    # Weights: one fixture as safetensors, the other as a PyTorch pickle, both in fp16.
    half = CLIPModel(model.config).half()
    half.load_state_dict(model.state_dict())
    half.save_pretrained(out, safe_serialization=spec["weights"] == "safetensors")
    tok.save_pretrained(out)
    # The same tokenizer.json, without the indentation (a third of its size).
    tj = out / "tokenizer.json"
    tj.write_text(json.dumps(json.loads(tj.read_text(encoding="utf-8")), ensure_ascii=False, separators=(",", ":")), encoding="utf-8")
    if spec["tokenizer"] == "json":
        for f in ("vocab.json", "merges.txt"):
            (out / f).unlink()
    else:
        (out / "tokenizer.json").unlink()

    proc = CLIPImageProcessor(
        size={"shortest_edge": spec["image"]}, crop_size={"height": spec["image"], "width": spec["image"]},
        image_mean=spec["mean"], image_std=spec["std"], resample=3, do_center_crop=True,
    )
    if spec["legacy_preprocessor"]:
        # The layout of openai/clip-vit-*'s preprocessor_config.json: sizes as plain integers.
        legacy = {
            "crop_size": spec["image"], "do_center_crop": True, "do_normalize": True, "do_resize": True,
            "feature_extractor_type": "CLIPFeatureExtractor", "image_mean": spec["mean"],
            "image_std": spec["std"], "resample": 3, "size": spec["image"],
        }
        (out / "preprocessor_config.json").write_text(json.dumps(legacy, indent=2))
    else:
        proc.save_pretrained(out)

    golden: dict = {
        "model_dir": name,
        "dim": spec["projection_dim"],
        "logit_scale": float(model.logit_scale.exp()),
        "max_length": max_len,
        "versions": {"torch": torch.__version__, "transformers": transformers.__version__},
        "texts": [],
        "images": [],
    }
    with torch.no_grad():
        for text in TEXTS:
            enc = tok(text, truncation=True, max_length=max_len, return_tensors="pt")
            emb = model.get_text_features(input_ids=enc["input_ids"])
            golden["texts"].append({"text": text, "ids": enc["input_ids"][0].tolist(), "embedding": unit(emb)})

        crops = GOLDEN / f"{name}-crops"
        crops.mkdir(parents=True, exist_ok=True)
        for path in sorted(IMAGES.iterdir()):
            rgb = reference_rgb(path, special)
            pv = proc(images=rgb, return_tensors="np", input_data_format="channels_last")["pixel_values"]
            emb = model.get_image_features(pixel_values=torch.from_numpy(pv))
            # The processor resizes and crops in 8 bits, then rescales and normalises. Undoing the
            # last two recovers its 8-bit crop exactly; store it losslessly.
            mean = np.array(spec["mean"], dtype=np.float64)[:, None, None]
            std = np.array(spec["std"], dtype=np.float64)[:, None, None]
            u8 = np.round((pv[0].astype(np.float64) * std + mean) * 255.0)
            assert np.abs(u8 - ((pv[0] * std + mean) * 255.0)).max() < 1e-2
            crop_name = path.name + ".png"
            Image.fromarray(u8.clip(0, 255).astype(np.uint8).transpose(1, 2, 0)).save(crops / crop_name)
            golden["images"].append({
                "file": path.name,
                "upright_size": [rgb.width, rgb.height],
                "crop": f"{name}-crops/{crop_name}",
                "pixel_head": [float(x) for x in pv[0, :, 0, :4].reshape(-1)],
                "embedding": unit(emb),
            })
    (GOLDEN / f"{name}.json").write_text(json.dumps(golden, indent=1, ensure_ascii=False))
    print(f"wrote {out} and its goldens")


FIXTURES = {
    # ViT-B/32-like geometry at real input size, OpenAI's normalisation, quick_gelu, safetensors,
    # tokenizer.json, the current preprocessor layout.
    "clip-tiny-p32": {
        "seed": 32,
        "projection_dim": 24,
        "logit_scale": math.log(100.0),
        "image": 224,
        "mean": OPENAI_MEAN,
        "std": OPENAI_STD,
        "weights": "safetensors",
        "tokenizer": "json",
        "legacy_preprocessor": False,
        "text": {"vocab_size": 49408, "hidden_size": 16, "intermediate_size": 40, "num_hidden_layers": 2,
                 "num_attention_heads": 2, "max_position_embeddings": 77, "hidden_act": "quick_gelu",
                 "eos_token_id": 2, "bos_token_id": 0, "pad_token_id": 1},
        "vision": {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2, "num_attention_heads": 4,
                   "image_size": 224, "patch_size": 32, "hidden_act": "quick_gelu"},
    },
    # Patch 16 at 96 px, other widths, exact GELU, another normalisation, a PyTorch pickle,
    # vocab.json + merges.txt only, the legacy integer preprocessor sizes, a shorter context
    # (truncation at 32 tokens) and the newer end-of-text pooling (eos_token_id = 49407).
    "clip-tiny-p16": {
        "seed": 16,
        "projection_dim": 20,
        "logit_scale": 2.6592,
        "image": 96,
        "mean": [0.5, 0.45, 0.4],
        "std": [0.22, 0.25, 0.28],
        "weights": "pytorch",
        "tokenizer": "vocab+merges",
        "legacy_preprocessor": True,
        "text": {"vocab_size": 49408, "hidden_size": 24, "intermediate_size": 48, "num_hidden_layers": 3,
                 "num_attention_heads": 3, "max_position_embeddings": 32, "hidden_act": "gelu",
                 "eos_token_id": 49407, "bos_token_id": 49406, "pad_token_id": 49407},
        "vision": {"hidden_size": 24, "intermediate_size": 56, "num_hidden_layers": 3, "num_attention_heads": 2,
                   "image_size": 96, "patch_size": 16, "hidden_act": "gelu"},
    },
}


# Zero-shot classification goldens (issue 4): labels, a single template and an ensemble.
ZEROSHOT_LABELS = ["cat", "dog", "astronaut", "cup of coffee", "rocket", "red car", "café crème"]
ZEROSHOT_TEMPLATES = {
    "single": ["a photo of a {}."],
    "ensemble": ["a photo of a {}.", "a blurry photo of the {}.", "a close-up photo of a {}.", "{}"],
}
# Every fixture photo but the 16-bit ones (PIL's own 16-bit conversion is not the reference
# decoding) and the CMYK one (decoded within 1/255 of PIL, not exactly): the goldens double as the reference ranking for `eval zeroshot`'s test.
def zeroshot_images() -> list[str]:
    return sorted(p.name for p in IMAGES.iterdir() if "16" not in p.name and "cmyk" not in p.name)


def write_zeroshot(name: str, spec: dict) -> None:
    """CLIP-paper zero-shot classification: each label's prompt embeddings are normalised,
    averaged and normalised again; probabilities are softmax(logit_scale x cosine)."""
    out = FIX / name
    model = build_model(spec, spec["seed"])
    tok = CLIPTokenizerFast.from_pretrained(out) if (out / "tokenizer.json").exists() else CLIPTokenizerFast(
        vocab_file=str(out / "vocab.json"), merges_file=str(out / "merges.txt"))
    proc = CLIPImageProcessor.from_pretrained(out)
    golden = {"labels": ZEROSHOT_LABELS, "cases": []}
    with torch.no_grad():
        for kind, templates in ZEROSHOT_TEMPLATES.items():
            label_embs = []
            for label in ZEROSHOT_LABELS:
                prompts = [t.replace("{}", label) for t in templates]
                enc = tok(prompts, padding=True, truncation=True, max_length=spec["text"]["max_position_embeddings"], return_tensors="pt")
                e = model.get_text_features(**enc)
                e = e / e.norm(dim=-1, keepdim=True)
                m = e.mean(dim=0)
                label_embs.append(m / m.norm())
            text = torch.stack(label_embs)
            for file in zeroshot_images():
                rgb = reference_rgb(IMAGES / file, {})
                pv = proc(images=rgb, return_tensors="pt", input_data_format="channels_last")["pixel_values"]
                img = model.get_image_features(pixel_values=pv)
                img = img / img.norm(dim=-1, keepdim=True)
                cos = (img @ text.T)[0]
                probs = (model.logit_scale.exp() * cos).softmax(dim=-1)
                golden["cases"].append({"templates": templates, "image": file,
                                        "cosine": [float(x) for x in cos], "probability": [float(x) for x in probs]})
    (GOLDEN / f"zeroshot-{name}.json").write_text(json.dumps(golden, indent=1, ensure_ascii=False))
    print(f"wrote zero-shot goldens for {name}")


def main() -> None:
    if sys.argv[1:] == ["--zeroshot-only"]:
        for name, spec in FIXTURES.items():
            write_zeroshot(name, spec)
        return
    for pkg, want in PINNED.items():
        have = {"torch": torch.__version__, "transformers": transformers.__version__}[pkg].split("+")[0]
        if have != want:
            print(f"warning: {pkg} {have} is not the pinned {want}; goldens may differ", file=sys.stderr)
    torch.set_num_threads(2)
    if IMAGES.exists():
        shutil.rmtree(IMAGES)
    if GOLDEN.exists():
        shutil.rmtree(GOLDEN)
    GOLDEN.mkdir(parents=True)
    special = make_images()
    for name, spec in FIXTURES.items():
        write_fixture(name, spec, special)
        write_zeroshot(name, spec)


if __name__ == "__main__":
    main()
