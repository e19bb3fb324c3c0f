"""Pillow's JPEG decoding of the fixture photos, as checksums of the raw RGB bytes.

clipdex decodes JPEGs with libjpeg-turbo's decoder so that its pixels are Pillow's to the bit
(the reference pipelines all start from Pillow). This records, for each YCbCr/grayscale JPEG
fixture, the size and an FNV-1a 64-bit hash of Pillow's RGB pixels at full scale and at each
DCT scale Pillow's `draft` uses (1/2, 1/4, 1/8), before any EXIF rotation. A progressive
file is among them (its decoder smooths blocks of the first scans).

    ~/venv-ref/bin/python tools/make_jpeg_decode_goldens.py
"""

import json
from pathlib import Path

import PIL
from PIL import Image, features

ROOT = Path(__file__).resolve().parent.parent
IMAGES = ROOT / "tests" / "fixtures" / "images"
OUT = ROOT / "tests" / "fixtures" / "golden" / "jpeg_decode.json"


def fnv1a64(data: bytes) -> str:
    h = 0xCBF29CE484222325
    for b in data:
        h ^= b
        h = (h * 0x100000001B3) & 0xFFFFFFFFFFFFFFFF
    return f"{h:016x}"


def decoded(path: Path, denom: int):
    im = Image.open(path)
    if denom > 1:
        w, h = im.size
        # draft picks the largest power-of-two scale keeping at least this size
        im.draft("RGB", ((w + denom - 1) // denom, (h + denom - 1) // denom))
    im = im.convert("RGB")
    return {"size": list(im.size), "fnv1a64": fnv1a64(im.tobytes())}


def main():
    entries = []
    paths = sorted(IMAGES.glob("*.jpg")) + [ROOT / "tests" / "fixtures" / "hostile" / "progressive_2048.jpg"]
    for path in paths:
        if Image.open(path).mode == "CMYK":
            continue  # decoded by the image crate, not libjpeg
        scales = {}
        for denom in (1, 2, 4, 8):
            scales[str(denom)] = decoded(path, denom)
        entries.append({"file": str(path.relative_to(ROOT / "tests" / "fixtures")), "scales": scales})
        print(path.name, scales["1"]["size"])
    doc = {
        "pillow": PIL.__version__,
        "libjpeg_turbo": features.version("libjpeg_turbo"),
        "images": entries,
    }
    OUT.write_text(json.dumps(doc, indent=1) + "\n")


if __name__ == "__main__":
    main()
