#!/usr/bin/env python3
"""The PyTorch side of `cargo bench --bench index`: embeds every JPEG of a folder with
transformers' CLIPModel at ViT-B/32 shapes (random weights), in batches of 32, the fastest
way plain PyTorch offers on a CPU: Pillow's draft mode (the JPEG decoded at a reduced DCT
scale, at least 224 px on each side), CLIPImageProcessor, and the model under bf16 autocast
(where the CPU has bf16) or in f32. Prints photos/s for each.

    ~/venv-ref/bin/python tools/bench_index_torch.py FOLDER [--threads 2]

With `--formats heic,avif,dng` it compares the phone and camera formats instead, clipdex and
PyTorch interleaved in one run: it writes `--make` 12 MP photos of each format into
FOLDER/FORMAT/ (from the fixture photos; HEIC by pillow-heif, AVIF by Pillow, DNG as a
container around a 4000x3000 JPEG preview), saves the same random ViT-B/32 as a Hugging Face
folder for clipdex (FOLDER/vit-b32), and for `--rounds` rounds times, for each format, PyTorch
(Pillow + pillow-heif for HEIC, Pillow's libavif for AVIF, rawpy's `extract_thumb` + Pillow's
draft mode for DNG; f32) and `clipdex index` on a fresh library (its start-up, measured as
`clipdex embed` of one small photo with the same model, subtracted). Then the decode time of
one 12 MP HEIC: pillow-heif (`Image.open(...).convert("RGB")`) against clipdex (the `decoded`
lines `RUST_LOG=clipdex=debug` prints while indexing with one thread and the tiny fixture
model). Medians are printed.

(A venv with tools/requirements.txt, plus pillow-heif and rawpy as tools/requirements-formats.txt pins them.)

    ~/venv-torch/bin/python tools/bench_index_torch.py /tmp/bench-formats --formats heic,avif,dng \\
        --make 8 --rounds 3 --clipdex target/debug/clipdex   # a binary built optimised
"""

import argparse
import io
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
from PIL import Image
from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel

ROOT = Path(__file__).resolve().parent.parent
FIXTURES = ROOT / "tests" / "fixtures"


def load(path, draft):
    im = Image.open(path)
    if draft:
        im.draft("RGB", (224, 224))
    return im.convert("RGB")


def load_heif(path, draft):
    # pillow-heif's opener (registered in main) for HEIC, Pillow's own libavif plugin for AVIF:
    # neither has a reduced-scale decode, so `draft` does nothing for them.
    return Image.open(path).convert("RGB")


def load_dng(path, draft):
    import rawpy

    with rawpy.imread(str(path)) as raw:
        thumb = raw.extract_thumb()
    return load(io.BytesIO(thumb.data), draft)


def run(model, proc, photos, draft, bf16, loader=load):
    started = time.perf_counter()
    for i in range(0, len(photos), 32):
        images = [loader(p, draft) for p in photos[i : i + 32]]
        pixels = proc(images=images, return_tensors="pt")["pixel_values"]
        with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            model.get_image_features(pixel_values=pixels)
    return len(photos) / (time.perf_counter() - started)


# --- phone and camera formats ------------------------------------------------------------


def twelve_mp(i):
    """A 4000x3000 photo made from a fixture photo, tinted and marked so no two are alike."""
    import numpy as np

    sources = ["astronaut.jpg", "coffee.png", "chelsea_small.bmp", "rocket.webp"]
    im = Image.open(FIXTURES / "images" / sources[i % len(sources)]).convert("RGB")
    big = np.asarray(im.resize((4000, 3000), Image.Resampling.BILINEAR)).copy()
    big[..., i % 3] = np.clip(big[..., i % 3].astype(int) + (i * 7 % 50), 0, 255)
    big[0, (i * 64) % 4000 : (i * 64) % 4000 + 64] = (255, 0, 255)
    return Image.fromarray(big)


def write_dng(path, preview_jpeg):
    """A DNG as tools/make_format_fixtures.py writes them: a small Bayer sensor image in IFD0
    and the JPEG preview (4000x3000 here) in a SubIFD."""
    sys.path.insert(0, str(ROOT / "tools"))
    from make_format_fixtures import ASCII, BYTE, LONG, SHORT, ascii_value, cfa_ifd, sensor, tiff

    raw0 = cfa_ifd(64, 64, "blob:0", "Clipdex", "Bench DNG")
    raw0.update({330: (LONG, ["ifd:1"]), 50706: (BYTE, [1, 4, 0, 0]), 50708: (ASCII, ascii_value("Bench DNG"))})
    jpeg_ifd = {
        254: (LONG, [1]), 256: (LONG, [4000]), 257: (LONG, [3000]), 258: (SHORT, [8, 8, 8]),
        259: (SHORT, [7]), 262: (SHORT, [6]), 273: (LONG, ["blob:1"]), 277: (SHORT, [3]),
        278: (LONG, [3000]), 279: (LONG, [len(preview_jpeg)]), 284: (SHORT, [1]),
    }
    path.write_bytes(tiff([raw0, jpeg_ifd], [sensor(64, 64), preview_jpeg]))


def make_photos(folder, fmt, n):
    folder.mkdir(parents=True, exist_ok=True)
    have = sorted(folder.glob(f"*.{fmt}"))
    for i in range(len(have), n):
        path = folder / f"photo{i:03}.{fmt}"
        im = twelve_mp(i)
        # The encoders' fastest settings: what is measured is decoding, and the streams they
        # write are decoded by the same tools at about the same cost.
        if fmt == "heic":
            im.save(path, quality=90, enc_params={"preset": "ultrafast"})
        elif fmt == "avif":
            im.save(path, quality=90, speed=10)
        elif fmt == "dng":
            buf = io.BytesIO()
            im.save(buf, "JPEG", quality=90)
            write_dng(path, buf.getvalue())
        print(f"wrote {path} ({path.stat().st_size / 1e6:.1f} MB)", flush=True)
    return sorted(folder.glob(f"*.{fmt}"))[:n]


def save_model(model, proc, folder):
    """The random model as a Hugging Face folder clipdex loads (tokenizer from the fixtures)."""
    if (folder / "model.safetensors").exists():
        return
    model.save_pretrained(folder, safe_serialization=True)
    proc.save_pretrained(folder)
    for name in ["tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"]:
        shutil.copy(FIXTURES / "clip-tiny-p32" / name, folder / name)


def clipdex(binary, model, args, env=None):
    started = time.perf_counter()
    out = subprocess.run([binary, "--model", str(model), *args], capture_output=True, text=True, env=env)
    took = time.perf_counter() - started
    if out.returncode != 0:
        sys.exit(f"clipdex {' '.join(args)} failed:\n{out.stderr}")
    return took, out


def clipdex_rate(binary, model, folder, n, startup):
    with tempfile.TemporaryDirectory() as tmp:
        db = Path(tmp) / "db"
        clipdex(binary, model, ["--db", str(db), "add", str(folder)])
        took, out = clipdex(binary, model, ["--db", str(db), "index", "--json"])
    report = json.loads(out.stdout)
    assert report["embedded"] == n and report["failed"] == 0, f"{folder} holds other photos than the {n} made: {report}"
    return n / (took - startup)


def clipdex_startup(binary, model):
    with tempfile.TemporaryDirectory() as tmp:
        took, _ = clipdex(binary, model, ["--db", str(Path(tmp) / "db"), "embed", "--image",
                                          str(FIXTURES / "images" / "astronaut.jpg")])
    return took


def clipdex_decode_ms(binary, folder):
    """Median decode time of the photos of `folder`, from clipdex's debug log (one thread)."""
    env = dict(os.environ, RUST_LOG="clipdex=debug", RAYON_NUM_THREADS="1")
    tiny = FIXTURES / "clip-tiny-p32"
    with tempfile.TemporaryDirectory() as tmp:
        db = Path(tmp) / "db"
        clipdex(binary, tiny, ["--db", str(db), "add", str(folder)])
        _, out = clipdex(binary, tiny, ["--db", str(db), "index"], env)
    times = [float(m) for m in re.findall(r"ms=([0-9.]+)", out.stderr)]
    assert times, out.stderr
    return statistics.median(times)


def compare_formats(args, model, proc):
    import pillow_heif

    pillow_heif.register_heif_opener()
    root = Path(args.folder)
    formats = args.formats.split(",")
    photos = {fmt: make_photos(root / fmt, fmt, args.make) for fmt in formats}
    loaders = {"heic": load_heif, "avif": load_heif, "dng": load_dng}
    vit = root / "vit-b32"
    save_model(model, proc, vit)
    rates = {(side, fmt): [] for side in ["torch", "clipdex"] for fmt in formats}
    startups = []
    for r in range(args.rounds):
        if args.clipdex:
            startups.append(clipdex_startup(args.clipdex, vit))
        for fmt in formats:
            rate = run(model, proc, photos[fmt], True, False, loaders[fmt])
            rates[("torch", fmt)].append(rate)
            line = f"round {r + 1}, {fmt}: torch {rate:.2f} photos/s"
            if args.clipdex:
                rate = clipdex_rate(args.clipdex, vit, root / fmt, len(photos[fmt]), startups[-1])
                rates[("clipdex", fmt)].append(rate)
                line += f", clipdex {rate:.2f} photos/s (start-up {startups[-1]:.2f} s subtracted)"
            print(line, flush=True)
    print(f"medians of {args.rounds} rounds, {len(photos[formats[0]])} photos of 4000x3000 each:")
    for fmt in formats:
        line = f"  {fmt}: torch {statistics.median(rates[('torch', fmt)]):.2f} photos/s"
        if args.clipdex:
            line += f", clipdex {statistics.median(rates[('clipdex', fmt)]):.2f} photos/s"
        print(line)
    if "heic" in formats:
        one = photos["heic"][0]
        pillow = []
        for _ in range(5):
            started = time.perf_counter()
            Image.open(one).convert("RGB")
            pillow.append((time.perf_counter() - started) * 1e3)
        line = f"one 12 MP HEIC decoded to RGB: pillow-heif {statistics.median(pillow):.0f} ms"
        if args.clipdex:
            line += f", clipdex {clipdex_decode_ms(args.clipdex, root / 'heic'):.0f} ms"
        print(line + " (medians)")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("folder")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--formats", help="compare these formats (heic,avif,dng) instead of the folder's JPEGs")
    ap.add_argument("--make", type=int, default=8, help="photos of each format to write (and use)")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--clipdex", help="the clipdex binary to run beside PyTorch (built optimised)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    model = CLIPModel(CLIPConfig()).eval()
    proc = CLIPImageProcessor()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads")
    if args.formats:
        compare_formats(args, model, proc)
        return
    photos = sorted(Path(args.folder).glob("*.jpg"))
    print(f"{len(photos)} photos")
    for label, draft, bf16 in [("draft + f32", True, False), ("draft + bf16 autocast", True, True)]:
        print(f"torch index, {label}: {run(model, proc, photos, draft, bf16):.2f} photos/s")


if __name__ == "__main__":
    main()
