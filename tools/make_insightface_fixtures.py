"""Tiny random-weight InsightFace-style ONNX models (the buffalo_l layout) and their goldens.

Two stages, in two environments (tools/requirements-insightface.txt pins both):

    # 1. export the models from PyTorch (torch 2.9.1, e.g. /root/venv-torch)
    python tools/make_insightface_fixtures.py export tests/fixtures/insightface-tiny
    # 2. run insightface's own code on onnxruntime over the fixture photos (the golden)
    pip download insightface==0.7.3 --no-deps -d /tmp/if && tar xzf /tmp/if/insightface-0.7.3.tar.gz -C /tmp/if
    python tools/make_insightface_fixtures.py golden tests/fixtures/insightface-tiny /tmp/if/insightface-0.7.3

`det_10g.onnx` has SCRFD-10GF's interface: input `input.1` [N, 3, ?, ?] (dynamic size, so the
caller's 640x640 applies, as FaceAnalysis sets it), nine 2-D outputs in the real order (scores of
strides 8, 16, 32, then boxes [K, 4], then 5 keypoints [K, 10]; two anchors per cell), scores
through a sigmoid. `w600k_r50.onnx` has ArcFace R50's: input `input.1` [N, 3, 112, 112], one
output [N, 512]. (Output names differ from the real ones: TorchScript refuses numbers.) The weights are random, small and smooth; the score bias of each stride is set so
that a few anchors per photo pass 0.5, with every fixture photo's scores at least MARGIN away from
0.5 (checked), so that one-level rounding differences cannot flip a detection. Box and keypoint
biases put the boxes and points at face-like offsets of their anchors. The detector's
convolutions pad by repeating the edge (ONNX Pad, mode edge), so that the map's border cells do
not stand out and detections fall on the photos' content.

The golden stage imports SCRFD (model_zoo/scrfd.py), ArcFaceONNX (model_zoo/arcface_onnx.py)
and face_align.norm_crop (utils/face_align.py) straight from insightface 0.7.3's source
(the PyPI sdist; its package __init__ needs compiled extensions, so those three modules are
loaded alone), and runs FaceAnalysis's steps: detect at det_size 640x640, det_thresh 0.5, NMS
0.4, then norm_crop + get_feat per face. Photos are read with cv2.imread (BGR), as insightface
expects.
"""

import json
import os
import sys
import types

PHOTOS = [
    "astronaut.png",
    "astronaut_tilt15.png",
    "biden.png",
    "coffee.png",
    "obama.png",
    "obama_small.png",
    "obama_rot90.png",
    "two_people.png",
]
MARGIN = 0.002  # in probability, around the 0.5 threshold (0.008 in logits)


def export(out):
    import torch
    from torch import nn

    torch.manual_seed(42)

    class Scrfd(nn.Module):
        def __init__(self):
            super().__init__()
            self.stem = nn.Sequential(
                nn.Conv2d(3, 8, 3, 2, 1, padding_mode="replicate"), nn.ReLU(),
                nn.Conv2d(8, 12, 3, 2, 1, padding_mode="replicate"), nn.ReLU(),
                nn.Conv2d(12, 16, 3, 2, 1, padding_mode="replicate"), nn.ReLU(),
            )
            self.down16 = nn.Sequential(nn.Conv2d(16, 16, 3, 2, 1, padding_mode="replicate"), nn.ReLU())
            self.down32 = nn.Sequential(nn.Conv2d(16, 16, 3, 2, 1, padding_mode="replicate"), nn.ReLU())
            self.score = nn.ModuleList([nn.Conv2d(16, 2, 3, 1, 1, padding_mode="replicate") for _ in range(3)])
            self.bbox = nn.ModuleList([nn.Conv2d(16, 8, 3, 1, 1, padding_mode="replicate") for _ in range(3)])
            self.kps = nn.ModuleList([nn.Conv2d(16, 20, 3, 1, 1, padding_mode="replicate") for _ in range(3)])

        def forward(self, x):
            f8 = self.stem(x)
            f16 = self.down16(f8)
            f32 = self.down32(f16)
            feats = [f8, f16, f32]
            flat = lambda t, c: t.permute(0, 2, 3, 1).reshape(-1, c)
            scores = [torch.sigmoid(flat(self.score[i](f), 1)) for i, f in enumerate(feats)]
            boxes = [flat(self.bbox[i](f), 4) for i, f in enumerate(feats)]
            kps = [flat(self.kps[i](f), 10) for i, f in enumerate(feats)]
            return tuple(scores + boxes + kps)

    class ArcFace(nn.Module):
        def __init__(self):
            super().__init__()
            self.body = nn.Sequential(
                nn.Conv2d(3, 8, 3, 2, 1), nn.BatchNorm2d(8), nn.PReLU(8),
                nn.Conv2d(8, 16, 3, 2, 1), nn.BatchNorm2d(16), nn.PReLU(16),
                nn.Conv2d(16, 16, 3, 2, 1), nn.BatchNorm2d(16), nn.PReLU(16),
                nn.AvgPool2d(4, stride=3),
            )
            self.fc = nn.Linear(256, 512)
            self.features = nn.BatchNorm1d(512)

        def forward(self, x):
            return self.features(self.fc(self.body(x).flatten(1)))

    det = Scrfd()
    with torch.no_grad():
        for m in det.modules():
            if isinstance(m, nn.Conv2d):
                m.weight.mul_(0.5)
        # Boxes about 4 strides wide, centred a little below the anchor; keypoints where eyes,
        # nose and mouth corners sit in such a box (offsets in strides).
        kps = [-0.7, -0.5, 0.7, -0.5, 0.0, 0.2, -0.55, 0.9, 0.55, 0.9]
        for i in range(3):
            det.score[i].bias.zero_()
            det.bbox[i].weight.mul_(0.1)
            det.bbox[i].bias.copy_(torch.tensor([2.0, 1.8, 2.0, 2.4] * 2))
            det.kps[i].weight.mul_(0.1)
            det.kps[i].bias.copy_(torch.tensor(kps * 2))
    det.eval()
    rec = ArcFace()
    with torch.no_grad():
        for bn in [m for m in rec.modules() if isinstance(m, (nn.BatchNorm2d, nn.BatchNorm1d))]:
            bn.running_mean.normal_(0, 0.1)
            bn.running_var.uniform_(0.5, 1.5)
    rec.eval()

    # The score bias: per stride, a few anchors over 0.5 on the fixture photos, none near it.
    import numpy as np
    from PIL import Image

    photos = os.path.join(os.path.dirname(out), "faces")
    logits = [[], [], []]
    with torch.no_grad():
        for name in PHOTOS:
            x = letterbox(np.asarray(Image.open(os.path.join(photos, name)).convert("RGB")))
            outs = det.stem(torch.from_numpy(x))
            feats = [outs, det.down16(outs)]
            feats.append(det.down32(feats[1]))
            for i, f in enumerate(feats):
                # Cells on the map's edge (zero padding makes them stand out) are set apart.
                edge = torch.zeros_like(f[:, :2])
                edge[..., 0, :] = edge[..., -1, :] = edge[..., :, 0] = edge[..., :, -1] = 1
                logits[i].append((det.score[i](f).flatten().numpy(), edge.flatten().numpy() > 0))
    with torch.no_grad():
        black = torch.full((1, 3, 640, 640), -127.5 / 128.0)
        f = det.stem(black)
        band = [f, det.down16(f)]
        band.append(det.down32(band[1]))
        band = [float(det.score[i](t).max()) for i, t in enumerate(band)]
        for i in range(3):
            # Scores spread over a standard deviation of 8, 32 or 64 in logits (the bias is zero here).
            raw = np.concatenate([l for l, _ in logits[i]])
            edge = np.concatenate([e for _, e in logits[i]])
            # The sign that puts fewer edge cells among the best scores.
            k = [4, 6, 8][i] * len(PHOTOS)
            if edge[np.argsort(-raw)[:k]].sum() > edge[np.argsort(raw)[:k]].sum():
                det.score[i].weight.neg_()
                raw, band[i] = -raw, float("-inf")
            spread = [8.0, 32.0, 64.0][i] / float(raw.std())
            det.score[i].weight.mul_(spread)
            every = raw * spread
            # About 4 anchors per photo (stride 8), more on the coarser strides, pass: the cut
            # goes into the widest gap between sorted logits around that rank, for a margin.
            # (The letterbox's black band gives one repeated logit, which must stay below.)
            s = np.sort(every)[::-1]
            lo, hi = k // 4, 4 * k
            gaps = s[lo:hi] - s[lo + 1:hi + 1]
            gaps[s[lo + 1:hi + 1] <= band[i] * spread] = 0
            j = lo + int(np.argmax(gaps))
            cut = float((s[j] + s[j + 1]) / 2)
            det.score[i].bias.fill_(-cut)
            shifted = every - cut
            margin = float(np.min(np.abs(1 / (1 + np.exp(-shifted)) - 0.5)))
            passing = shifted > 0
            print(f"stride {8 << i}: {int(passing.sum())} anchors pass ({int(edge[passing].sum())} on the edge); margin {margin:.4f}")
            assert margin >= MARGIN, "move MARGIN or the quantiles"

    os.makedirs(out, exist_ok=True)
    # The real files name their outputs by number ("448", ...), which TorchScript refuses;
    # insightface and clipdex go by their order.
    names = [f"{kind}_{stride}" for kind in ["score", "bbox", "kps"] for stride in [8, 16, 32]]
    torch.onnx.export(
        det, torch.zeros(1, 3, 640, 640), os.path.join(out, "det_10g.onnx"),
        input_names=["input.1"], output_names=names, opset_version=11, dynamo=False,
        dynamic_axes={"input.1": {0: "None", 2: "?", 3: "?"}},
    )
    torch.onnx.export(
        rec, torch.zeros(1, 3, 112, 112), os.path.join(out, "w600k_r50.onnx"),
        input_names=["input.1"], output_names=["embedding"], opset_version=11, dynamo=False,
        dynamic_axes={"input.1": {0: "None"}, "embedding": {0: "None"}},
    )


def letterbox(rgb):
    """SCRFD.detect's 640x640 letterbox and blob, for the bias search only (PIL's resize is close
    enough to cv2's here)."""
    import numpy as np
    from PIL import Image

    h, w = rgb.shape[:2]
    if h / w > 1.0:
        nh, nw = 640, int(640 / (h / w))
    else:
        nw, nh = 640, int(640 * (h / w))
    canvas = np.zeros((640, 640, 3), np.float32)
    canvas[:nh, :nw] = np.asarray(Image.fromarray(rgb).resize((nw, nh), Image.BILINEAR), np.float32)
    return ((canvas - 127.5) / 128.0).transpose(2, 0, 1)[None].copy()


def letterbox_cv2(img):
    """The image SCRFD.detect hands to forward at 640x640 (its own code, repeated)."""
    import cv2
    import numpy as np

    im_ratio = float(img.shape[0]) / img.shape[1]
    if im_ratio > 1.0:
        new_height = 640
        new_width = int(new_height / im_ratio)
    else:
        new_width = 640
        new_height = int(new_width * im_ratio)
    det_img = np.zeros((640, 640, 3), dtype=np.uint8)
    det_img[:new_height, :new_width, :] = cv2.resize(img, (new_width, new_height))
    return det_img


def load_insightface(src):
    """insightface 0.7.3's scrfd, arcface_onnx and face_align modules, without its __init__."""
    import importlib

    for package in ["insightface", "insightface.model_zoo", "insightface.utils"]:
        module = types.ModuleType(package)
        module.__path__ = [os.path.join(src, *package.split("."))]
        sys.modules[package] = module
    scrfd = importlib.import_module("insightface.model_zoo.scrfd")
    arcface = importlib.import_module("insightface.model_zoo.arcface_onnx")
    align = importlib.import_module("insightface.utils.face_align")
    return scrfd, arcface, align


def golden(out, src):
    import cv2
    import numpy as np

    scrfd, arcface, align = load_insightface(src)
    det = scrfd.SCRFD(os.path.join(out, "det_10g.onnx"))
    det.prepare(-1, input_size=(640, 640), det_thresh=0.5)
    rec = arcface.ArcFaceONNX(os.path.join(out, "w600k_r50.onnx"))
    rec.prepare(-1)
    assert (rec.input_mean, rec.input_std) == (127.5, 127.5)
    photos = os.path.join(os.path.dirname(out), "faces")
    result = []
    for name in PHOTOS:
        img = cv2.imread(os.path.join(photos, name))
        bboxes, kpss = det.detect(img, max_num=0, metric="default")
        # No anchor's score within MARGIN of the threshold on cv2's letterbox either.
        scores, _, _ = det.forward(letterbox_cv2(img), -1.0)
        margin = min(float(np.min(np.abs(s - 0.5))) for s in scores)
        assert margin >= MARGIN, f"{name}: a score {margin} from 0.5"
        faces = []
        for box, kps in zip(bboxes, kpss):
            crop = align.norm_crop(img, landmark=kps, image_size=112)
            feat = rec.get_feat(crop).flatten()
            faces.append({
                "box": [float(v) for v in box[:4]],
                "score": float(box[4]),
                "landmarks": [[float(x), float(y)] for x, y in kps],
                "embedding": [float(v) for v in feat],
            })
        print(f"{name}: {len(faces)} faces")
        result.append({"photo": name, "faces": faces})
    with open(os.path.join(out, "golden.json"), "w") as f:
        json.dump({"insightface": "0.7.3", "det_size": [640, 640], "photos": result}, f)


if __name__ == "__main__":
    if sys.argv[1] == "export":
        export(sys.argv[2])
    else:
        golden(sys.argv[2], sys.argv[3])
