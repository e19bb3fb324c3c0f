"""RapidOCR's photos/s on 12 MP photos, the anchor for `clipdex ocr`'s speed (docs/src/text-in-photos.md).

Makes two 4000x3000 JPEGs in OUT (default /tmp/ocr-bench): the astronaut fixture enlarged, without
text and with the receipt fixture's text pasted in, then times RapidOCR (rapidocr 3.10.0,
onnxruntime) reading each REPEAT times per model set, after one warm-up run.

    python tools/bench_ocr_rapidocr.py [MODELS_DIR] [OUT] [REPEAT] [SETS]

SETS: the model sets to time, comma-separated (default v4,v6). tools/bench_ocr_speed.sh runs it
and then `clipdex ocr` on the same photos, in one go.
"""

import sys
import time
from pathlib import Path

from PIL import Image

ROOT = Path(__file__).resolve().parent.parent
models = Path(sys.argv[1]) if len(sys.argv) > 1 else Path.home() / ".cache/clipdex-ci/ocr-models"
out = Path(sys.argv[2]) if len(sys.argv) > 2 else Path("/tmp/ocr-bench")
repeat = int(sys.argv[3]) if len(sys.argv) > 3 else 3
chosen = sys.argv[4].split(",") if len(sys.argv) > 4 else ["v4", "v6"]
out.mkdir(parents=True, exist_ok=True)

photo = Image.open(ROOT / "tests/fixtures/images/astronaut.jpg").convert("RGB").resize((4000, 3000), Image.BICUBIC)
photo.save(out / "photo-12mp.jpg", quality=90)
receipt = Image.open(ROOT / "tests/fixtures/ocr/receipt.png").convert("RGB").resize((1920, 1440), Image.BICUBIC)
photo.paste(receipt, (1000, 800))
photo.save(out / "text-12mp.jpg", quality=90)

from rapidocr import RapidOCR  # noqa: E402

sets = {
    "v4": ("ch_PP-OCRv4_det_infer.onnx", "ch_PP-OCRv4_rec_infer.onnx", "ch_ppocr_mobile_v2.0_cls_infer.onnx"),
    "v6": ("PP-OCRv6_det_small.onnx", "PP-OCRv6_rec_small.onnx", "ch_ppocr_mobile_v2.0_cls_mobile.onnx"),
}
for name, (det, rec, cls) in sets.items():
    if name not in chosen:
        continue
    engine = RapidOCR(params={"Det.model_path": str(models / name / det), "Rec.model_path": str(models / name / rec),
                              "Cls.model_path": str(models / name / cls), "Global.log_level": "error"})
    for img in ("photo-12mp.jpg", "text-12mp.jpg"):
        engine(str(out / img))
        start = time.perf_counter()
        for _ in range(repeat):
            res = engine(str(out / img))
        took = (time.perf_counter() - start) / repeat
        n = 0 if res.txts is None else len(res.txts)
        print(f"rapidocr {name} {img}: {took:.2f} s/photo ({1 / took:.2f} photos/s), {n} lines")
