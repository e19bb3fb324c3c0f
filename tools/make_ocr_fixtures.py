"""Rendered text images and RapidOCR's goldens for tests/ocr.rs.

Renders a few text images with Pillow and Debian's DejaVu fonts into tests/fixtures/ocr/, then
runs RapidOCR (rapidocr 3.10.0 with onnxruntime, pinned in tools/requirements-ocr.txt) on them and
on the fixture photos, once per model set (PP-OCRv4 mobile from rapidocr_onnxruntime 1.3.24 and
PP-OCRv6 small from rapidocr 3.10.0, fetched by tools/fetch_ocr_models.sh), and writes what it
read to tests/fixtures/ocr/golden-<set>.json as clipdex ocr --json prints it.

Both model sets run through rapidocr 3.10.0's pipeline (the v4 files given as model paths), the
pipeline clipdex follows.

    python tools/make_ocr_fixtures.py [MODELS_DIR]   # default ~/.cache/clipdex-ci/ocr-models
"""

import json
import os
import sys
from pathlib import Path

from PIL import Image, ImageDraw, ImageFont

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "tests" / "fixtures" / "ocr"
FONTS = Path("/usr/share/fonts/truetype/dejavu")
PHOTOS = ["astronaut.jpg", "chelsea_exif3.jpg", "camera_gray.jpg"]


def render():
    OUT.mkdir(parents=True, exist_ok=True)
    sans = lambda size: ImageFont.truetype(str(FONTS / "DejaVuSans.ttf"), size)
    bold = lambda size: ImageFont.truetype(str(FONTS / "DejaVuSans-Bold.ttf"), size)
    serif = lambda size: ImageFont.truetype(str(FONTS / "DejaVuSerif.ttf"), size)

    # A receipt: several lines, numbers, a few sizes.
    img = Image.new("RGB", (640, 480), (250, 248, 240))
    d = ImageDraw.Draw(img)
    d.text((40, 30), "CORNER CAFE", font=bold(40), fill=(20, 20, 20))
    d.text((40, 110), "Latte 2x       7.80", font=sans(28), fill=(30, 30, 30))
    d.text((40, 160), "Croissant      3.25", font=sans(28), fill=(30, 30, 30))
    d.text((40, 230), "TOTAL 11.05 EUR", font=bold(32), fill=(0, 0, 0))
    d.text((40, 320), "Bill no. 48213", font=serif(26), fill=(40, 40, 90))
    d.text((40, 400), "Thank you!", font=sans(22), fill=(90, 30, 30))
    img.save(OUT / "receipt.png")

    # A street sign: light text on a dark, noisy-ish background, rotated a little.
    sign = Image.new("RGB", (720, 260), (20, 90, 40))
    d = ImageDraw.Draw(sign)
    d.text((40, 50), "Main Street", font=bold(72), fill=(255, 255, 255))
    d.text((44, 170), "Exit 12 -> Airport", font=sans(36), fill=(240, 240, 200))
    sign = sign.rotate(4, resample=Image.BICUBIC, expand=True, fillcolor=(120, 120, 120))
    sign.save(OUT / "sign.jpg", quality=92)

    # Text on a photo, as a phone screenshot or a meme would have it.
    photo = Image.open(ROOT / "tests" / "fixtures" / "images" / "astronaut.jpg").convert("RGB")
    d = ImageDraw.Draw(photo)
    d.rectangle((20, 20, 380, 80), fill=(255, 255, 255))
    d.text((30, 28), "Moon 1969", font=bold(40), fill=(0, 0, 0))
    photo.save(OUT / "photo_caption.jpg", quality=92)

    # A thin strip of text (the vertical padding path) and a blank page.
    strip = Image.new("RGB", (900, 40), (255, 255, 255))
    ImageDraw.Draw(strip).text((10, 6), "a long thin strip of text 2026", font=sans(24), fill=(0, 0, 0))
    strip.save(OUT / "strip.png")
    Image.new("RGB", (300, 200), (0, 0, 0)).save(OUT / "black.png")


def golden(models_dir: Path):
    from rapidocr import RapidOCR

    sets = {
        "v4": {
            "Det.model_path": models_dir / "v4" / "ch_PP-OCRv4_det_infer.onnx",
            "Rec.model_path": models_dir / "v4" / "ch_PP-OCRv4_rec_infer.onnx",
            "Cls.model_path": models_dir / "v4" / "ch_ppocr_mobile_v2.0_cls_infer.onnx",
        },
        "v6": {
            "Det.model_path": models_dir / "v6" / "PP-OCRv6_det_small.onnx",
            "Rec.model_path": models_dir / "v6" / "PP-OCRv6_rec_small.onnx",
            "Cls.model_path": models_dir / "v6" / "ch_ppocr_mobile_v2.0_cls_mobile.onnx",
        },
    }
    images = sorted(p.name for p in OUT.iterdir() if p.suffix in (".png", ".jpg"))
    inputs = [("ocr/" + n, OUT / n) for n in images]
    inputs += [("images/" + n, ROOT / "tests" / "fixtures" / "images" / n) for n in PHOTOS]
    for name, params in sets.items():
        engine = RapidOCR(params={k: str(v) for k, v in params.items()} | {"Global.log_level": "error"})
        results = []
        for rel, path in inputs:
            out = engine(str(path))
            lines = []
            if out.boxes is not None and out.txts is not None:
                for box, text, score in zip(out.boxes, out.txts, out.scores):
                    lines.append({"text": text, "score": float(score),
                                  "box": [[float(x), float(y)] for x, y in box]})
            results.append({"path": rel, "lines": lines})
            print(name, rel, [l["text"] for l in lines], file=sys.stderr)
        with open(OUT / f"golden-{name}.json", "w", encoding="utf-8") as f:
            json.dump(results, f, ensure_ascii=False, indent=1)
            f.write("\n")


if __name__ == "__main__":
    models = Path(sys.argv[1]) if len(sys.argv) > 1 else Path(
        os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "clipdex-ci" / "ocr-models"
    render()
    golden(models)
