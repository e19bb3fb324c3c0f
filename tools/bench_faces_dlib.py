#!/usr/bin/env python3
"""The reference's speed for docs/src/people.md: dlib's Python bindings (tools/requirements-faces.txt)
running what `clipdex faces` runs (CNN detector with one upsampling up to 0.5 MP, 5 landmarks,
128-d descriptor per face), on each image given, REPEAT times; prints seconds per photo and faces.

    python tools/bench_faces_dlib.py MODELS_DIR IMAGE... [--repeat N]
"""
import argparse
import os
import time

import dlib
import numpy as np
from PIL import Image


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("models")
    ap.add_argument("images", nargs="+")
    ap.add_argument("--repeat", type=int, default=1)
    args = ap.parse_args()
    detector = dlib.cnn_face_detection_model_v1(os.path.join(args.models, "mmod_human_face_detector.dat"))
    predictor = dlib.shape_predictor(os.path.join(args.models, "shape_predictor_5_face_landmarks.dat"))
    encoder = dlib.face_recognition_model_v1(os.path.join(args.models, "dlib_face_recognition_resnet_model_v1.dat"))
    for path in args.images:
        pixels = np.asarray(Image.open(path).convert("RGB"))
        upsample = 1 if pixels.shape[0] * pixels.shape[1] * 4 <= 2_000_000 else 0
        start = time.perf_counter()
        for _ in range(args.repeat):
            dets = detector(pixels, upsample)
            shapes = dlib.full_object_detections()
            for d in dets:
                shapes.append(predictor(pixels, d.rect))
            if len(shapes):
                encoder.compute_face_descriptor(pixels, shapes, 0, 0.25)
        took = (time.perf_counter() - start) / args.repeat
        print(f"{os.path.basename(path)}: {took:.3f} s/photo, {len(dets)} faces")


if __name__ == "__main__":
    main()
