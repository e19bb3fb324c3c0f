#!/usr/bin/env python3
"""Goldens for clipdex's BlazeFace detector (tests/blazeface.rs), from the reference.

The reference is TensorFlow Lite itself (ai-edge-litert, the runtime MediaPipe ships) running
MediaPipe's own .tflite files from the npm package @mediapipe/face_detection (fetched by
tools/fetch_blazeface_models.sh), and the pre- and post-processing written here from the options
of MediaPipe's face detection graphs (mediapipe/modules/face_detection/face_detection.pbtxt and
its short/full-range variants) and the calculators they configure:

  ImageToTensorCalculator     keep_aspect_ratio: true, float range [-1, 1], BORDER_ZERO; its
                              OpenCV path: cv2.warpPerspective (INTER_LINEAR) of the padded square
                              ROI onto the tensor, then convertTo(scale 2/255, offset -1)
  SsdAnchorsCalculator        short: 4 layers, strides 8,16,16,16, scales 0.1484375..0.75, 128 px;
                              full: 1 layer, stride 4, 192 px, interpolated_scale_aspect_ratio 0;
                              anchor offset 0.5, fixed_anchor_size
  TensorsToDetectionsCalculator  16 coords (box at 0, 6 keypoints at 4), reverse_output_order,
                              x/y/w/h scale = input size, sigmoid scores clipped at 100, min score
                              0.5 (short) / 0.6 (full); boxes with negative size dropped
  NonMaxSuppressionCalculator  WEIGHTED, IoU, min_suppression_threshold 0.3
  DetectionLetterboxRemovalCalculator  undo the padding; then times the photo's width/height

Writes tests/fixtures/blazeface/{input128.png,input192.png,raw.json,detections.json}.
Usage: tools/make_blazeface_goldens.py MODEL_DIR   (pinned in tools/requirements-blazeface.txt)
"""
import glob
import json
import math
import os
import sys

import cv2
import numpy as np
from ai_edge_litert.interpreter import Interpreter
from PIL import Image

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OUT = os.path.join(ROOT, "tests/fixtures/blazeface")

MODELS = {
    "short": dict(file="face_detection_short_range.tflite", size=128, strides=[8, 16, 16, 16],
                  interpolated=1.0, min_score=0.5),
    "full": dict(file="face_detection_full_range.tflite", size=192, strides=[4],
                 interpolated=0.0, min_score=0.6),
}


def anchors(m):
    """SsdAnchorsCalculator with the graphs' options (fixed_anchor_size: centres only)."""
    strides, n = m["strides"], len(m["strides"])
    min_scale, max_scale = 0.1484375, 0.75

    def scale(i):
        return (min_scale + max_scale) * 0.5 if n == 1 else min_scale + (max_scale - min_scale) * i / (n - 1)

    out, layer = [], 0
    while layer < n:
        count, last = 0, layer
        while last < n and strides[last] == strides[layer]:
            count += 1  # aspect ratio 1.0
            if m["interpolated"] > 0:
                count += 1
            _ = scale(last)
            last += 1
        fm = math.ceil(m["size"] / strides[layer])
        for y in range(fm):
            for x in range(fm):
                for _ in range(count):
                    out.append(((x + 0.5) / fm, (y + 0.5) / fm))
        layer = last
    return np.array(out, dtype=np.float32)


def letterbox(rgb, size):
    """ImageToTensorCalculator's OpenCV path; returns the tensor and (left, top, right, bottom) padding."""
    h, w = rgb.shape[:2]
    side = max(w, h)
    cx, cy = w / 2, h / 2
    src = np.array([[cx - side / 2, cy + side / 2], [cx - side / 2, cy - side / 2],
                    [cx + side / 2, cy - side / 2], [cx + side / 2, cy + side / 2]], dtype=np.float32)
    dst = np.array([[0, size], [0, 0], [size, 0], [size, size]], dtype=np.float32)
    matrix = cv2.getPerspectiveTransform(src, dst)
    warped = cv2.warpPerspective(rgb, matrix, (size, size), flags=cv2.INTER_LINEAR,
                                 borderMode=cv2.BORDER_CONSTANT, borderValue=0)
    tensor = warped.astype(np.float32) * (2.0 / 255.0) - 1.0
    hp, vp = (side - w) / side / 2, (side - h) / side / 2
    return tensor, (hp, vp, hp, vp)


def run(interp, tensor):
    interp.set_tensor(interp.get_input_details()[0]["index"], tensor[None])
    interp.invoke()
    outs = {d["name"]: interp.get_tensor(d["index"])[0] for d in interp.get_output_details()}
    reg = next(v for v in outs.values() if v.shape[-1] == 16)
    cls = next(v for v in outs.values() if v.shape[-1] == 1)
    return reg, cls[:, 0]


def decode(m, reg, cls):
    """TensorsToDetectionsCalculator: relative boxes (xmin, ymin, w, h), 6 keypoints, scores."""
    a = anchors(m)
    s = float(m["size"])
    dets = []
    for i in range(len(a)):
        score = 1.0 / (1.0 + math.exp(-min(max(float(cls[i]), -100.0), 100.0)))
        if score < m["min_score"]:
            continue
        r = reg[i]
        xc = r[0] / s + a[i, 0]
        yc = r[1] / s + a[i, 1]
        w, h = r[2] / s, r[3] / s
        box = (xc - w / 2, yc - h / 2, w, h)
        if w < 0 or h < 0:
            continue
        kps = [(r[4 + 2 * k] / s + a[i, 0], r[5 + 2 * k] / s + a[i, 1]) for k in range(6)]
        dets.append(dict(box=box, kps=kps, score=score))
    return dets


def iou(a, b):
    ax0, ay0, ax1, ay1 = a[0], a[1], a[0] + a[2], a[1] + a[3]
    bx0, by0, bx1, by1 = b[0], b[1], b[0] + b[2], b[1] + b[3]
    ix0, iy0, ix1, iy1 = max(ax0, bx0), max(ay0, by0), min(ax1, bx1), min(ay1, by1)
    if ix0 > ix1 or iy0 > iy1:
        return 0.0
    inter = (ix1 - ix0) * (iy1 - iy0)
    union = a[2] * a[3] + b[2] * b[3] - inter
    return inter / union if union > 0 else 0.0


def weighted_nms(dets, threshold=0.3):
    """NonMaxSuppressionCalculator's WeightedNonMaxSuppression."""
    order = sorted(range(len(dets)), key=lambda i: -dets[i]["score"])
    out = []
    while order:
        top = dets[order[0]]
        cands = [i for i in order if iou(dets[i]["box"], top["box"]) > threshold]
        rest = [i for i in order if iou(dets[i]["box"], top["box"]) <= threshold]
        total = sum(dets[i]["score"] for i in cands)
        if cands:
            x0 = sum(dets[i]["box"][0] * dets[i]["score"] for i in cands) / total
            y0 = sum(dets[i]["box"][1] * dets[i]["score"] for i in cands) / total
            x1 = sum((dets[i]["box"][0] + dets[i]["box"][2]) * dets[i]["score"] for i in cands) / total
            y1 = sum((dets[i]["box"][1] + dets[i]["box"][3]) * dets[i]["score"] for i in cands) / total
            kps = [(sum(dets[i]["kps"][k][0] * dets[i]["score"] for i in cands) / total,
                    sum(dets[i]["kps"][k][1] * dets[i]["score"] for i in cands) / total) for k in range(6)]
            top = dict(box=(x0, y0, x1 - x0, y1 - y0), kps=kps, score=top["score"])
        out.append(top)
        if len(rest) == len(order):
            break
        order = rest
    return out


def detect(m, interp, rgb):
    tensor, (left, top, right, bottom) = letterbox(rgb, m["size"])
    reg, cls = run(interp, tensor)
    h, w = rgb.shape[:2]
    sx, sy = 1 - left - right, 1 - top - bottom
    faces = []
    for d in weighted_nms(decode(m, reg, cls)):
        bx, by, bw, bh = d["box"]
        faces.append(dict(
            box=[round(float(bx - left) / sx * w, 3), round(float(by - top) / sy * h, 3), round(float(bw) / sx * w, 3), round(float(bh) / sy * h, 3)],
            score=round(float(d["score"]), 6),
            keypoints=[[round(float(x - left) / sx * w, 3), round(float(y - top) / sy * h, 3)] for x, y in d["kps"]],
        ))
    return faces


def main():
    model_dir = sys.argv[1]
    os.makedirs(OUT, exist_ok=True)
    interps = {}
    for name, m in MODELS.items():
        it = Interpreter(model_path=os.path.join(model_dir, m["file"]))
        it.allocate_tensors()
        interps[name] = it

    # Raw outputs on a fixed input: the model's input size, read as the Rust side reads it.
    raw = {}
    obama = Image.open(os.path.join(ROOT, "tests/fixtures/faces/two_people.png")).convert("RGB")
    for name, m in MODELS.items():
        path = os.path.join(OUT, f"input{m['size']}.png")
        obama.resize((m["size"], m["size"]), Image.BILINEAR).save(path, optimize=True)
        px = np.asarray(Image.open(path).convert("RGB")).astype(np.float32) * (2.0 / 255.0) - 1.0
        reg, cls = run(interps[name], px)
        top = [int(i) for i in np.argsort(-cls)[:16]]
        picked = sorted(set(top) | set(range(0, len(cls), 37)))
        raw[name] = dict(input=os.path.basename(path), scores=[float(v) for v in cls],
                         regressors={str(i): [float(v) for v in reg[i]] for i in picked})
    with open(os.path.join(OUT, "raw.json"), "w") as f:
        json.dump(raw, f)

    # Whole detections on the face fixtures, the face-cluster set and turned/flipped variants.
    photos = sorted(glob.glob(os.path.join(ROOT, "tests/fixtures/faces/*.png"))) + sorted(
        glob.glob(os.path.join(ROOT, "tests/fixtures/face-clusters/*.[jp][pn]g")))
    variants = {"ccw90": lambda a: np.rot90(a, 1), "rot180": lambda a: np.rot90(a, 2), "flip": lambda a: a[:, ::-1]}
    out = {name: {} for name in MODELS}
    for path in photos:
        rel = os.path.relpath(path, ROOT)
        rgb = np.ascontiguousarray(np.asarray(Image.open(path).convert("RGB")))
        items = [(rel, rgb)]
        if "faces/" in rel and not rel.endswith(("coffee.png",)):
            items += [(f"{rel}#{v}", np.ascontiguousarray(f(rgb))) for v, f in variants.items()]
        for key, img in items:
            for name, m in MODELS.items():
                out[name][key] = detect(m, interps[name], img)
    with open(os.path.join(OUT, "detections.json"), "w") as f:
        json.dump(out, f, indent=0)
    n = {k: sum(len(v) for v in d.values()) for k, d in out.items()}
    print(f"{len(photos)} photos; faces: {n}")


if __name__ == "__main__":
    main()
