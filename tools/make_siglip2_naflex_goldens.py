#!/usr/bin/env python3
"""Goldens for the first pieces of SigLIP 2 NaFlex (`model_type` `siglip2`), from transformers:
the processor's patch grid for a photo (`get_image_size_for_max_num_patches`, aspect kept, at most
`max_num_patches` patches) and the vision embeddings' position-table resize
(`Siglip2VisionEmbeddings.resize_positional_embeddings`: torch's antialiased bilinear
interpolation, align_corners=False), on a small deterministic table, up and down and mixed.

Writes tests/fixtures/golden/siglip2-naflex-math.json.

    /root/venv-torch/bin/python tools/make_siglip2_naflex_goldens.py

Pinned packages: tools/requirements.txt (torch 2.9.1, transformers 4.57.3).
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import torch
import transformers
from transformers.models.siglip2.image_processing_siglip2 import get_image_size_for_max_num_patches
from transformers.models.siglip2.modeling_siglip2 import Siglip2VisionEmbeddings

OUT = Path(__file__).resolve().parent.parent / "tests" / "fixtures" / "golden" / "siglip2-naflex-math.json"

# (height, width, patch size, max patches): portrait, panorama, square, tiny, huge and odd.
SIZES = [
    (4032, 3024, 16, 256), (3024, 4032, 16, 256), (300, 4000, 16, 256), (4000, 300, 16, 256),
    (512, 512, 16, 256), (224, 224, 16, 196), (17, 5, 16, 256), (1, 1, 14, 1024), (6000, 9000, 14, 1024),
    (333, 777, 16, 576), (768, 1366, 32, 64), (100, 40000, 16, 256), (40000, 100, 16, 256),
    (1080, 1920, 16, 512),
]
# (side of the square table, channels, target height, target width).
RESIZES = [(4, 3, 2, 7), (4, 3, 3, 3), (4, 3, 1, 5), (4, 3, 6, 2), (5, 2, 16, 1), (16, 4, 4, 64), (16, 4, 23, 11),
           (6, 2, 6, 6), (3, 1, 9, 4), (6, 2, 3, 1), (4, 1, 4, 1), (16, 2, 256, 1)]


def main() -> None:
    golden: dict = {"versions": {"torch": torch.__version__, "transformers": transformers.__version__},
                    "sizes": [], "resizes": []}
    for h, w, p, n in SIZES:
        th, tw = get_image_size_for_max_num_patches(h, w, p, n)
        golden["sizes"].append({"height": h, "width": w, "patch": p, "max_patches": n, "target": [th, tw]})
    for side, d, th, tw in RESIZES:
        table = torch.tensor([[math.sin(0.37 * i + 1.3 * c) + 0.1 * c for c in range(d)] for i in range(side * side)],
                             dtype=torch.float32)
        resized = Siglip2VisionEmbeddings.resize_positional_embeddings(
            table.reshape(side, side, d), torch.tensor([[th, tw]]), th * tw + 2)
        golden["resizes"].append({"side": side, "channels": d, "target": [th, tw],
                                  "table": table.reshape(-1).tolist(), "resized": resized[0].reshape(-1).tolist()})
    OUT.write_text(json.dumps(golden) + "\n")
    print("wrote", OUT)


if __name__ == "__main__":
    main()
