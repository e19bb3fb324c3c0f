#!/usr/bin/env python3
"""Pillow's bicubic and bilinear resizes of small noise images, for the bit-exact resampling
test in src/models/preprocess.rs: `tests/fixtures/resample/in_WxH.png` and
`out_WxH_to_W2xH2_FILTER.png`. Shapes cover both pass orders of Pillow 13 (vertical first when
the height shrinks by more than twice as many pixels as the width), one side upscaled while the
other shrinks, and a single-axis resize; `in_300x451.png` is a real photo (scikit-image's
chelsea, turned to portrait) at the sizes the models resize to: BLIP's 384×384, CLIPSeg's
352×352, Chinese-CLIP's 224×224 (each upscales the width and shrinks the height: vertical pass
first) and CLIP's shortest edge 224 (224×336).

    ~/venv-ref/bin/python tools/make_resample_goldens.py   # Pillow as pinned in requirements.txt
"""

from pathlib import Path

import numpy as np
from PIL import Image
from skimage import data as skdata

OUT = Path(__file__).resolve().parent.parent / "tests/fixtures/resample"

CASES = {
    (30, 45): [(38, 38), (22, 22), (40, 20), (12, 40), (50, 60), (30, 20), (29, 44)],
    (45, 30): [(38, 38), (22, 22), (20, 40), (90, 10)],
    (13, 200): [(24, 24), (40, 100), (13, 50)],
    (200, 13): [(24, 24), (100, 40)],
}


FILTERS = {"bicubic": Image.BICUBIC, "bilinear": Image.BILINEAR}
# The portrait at each model's size, with that model's filter (CLIPSeg's processor: bilinear).
PORTRAIT = [((384, 384), "bicubic"), ((352, 352), "bilinear"), ((224, 224), "bicubic"), ((224, 336), "bicubic")]


def main() -> None:
    OUT.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(20261130)
    inputs = [
        (Image.fromarray((rng.random((h, w, 3)) * 256).astype(np.uint8)), [(t, f) for t in targets for f in FILTERS])
        for (w, h), targets in CASES.items()
    ]
    inputs.append((Image.fromarray(skdata.chelsea()).transpose(Image.Transpose.ROTATE_90), PORTRAIT))
    for im, targets in inputs:
        w, h = im.size
        im.save(OUT / f"in_{w}x{h}.png")
        for (tw, th), name in targets:
            im.resize((tw, th), FILTERS[name]).save(OUT / f"out_{w}x{h}_to_{tw}x{th}_{name}.png")
    print(f"Pillow {Image.__version__}: wrote {OUT}")


if __name__ == "__main__":
    main()
