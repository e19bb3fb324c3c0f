#!/usr/bin/env python3
"""Why libheif 1.15's samples of tests/fixtures/formats/avif_10bit.avif differ from dav1d's.

Compares the 10-bit YCbCr 4:2:0 planes libheif hands out (`heif_decode_image` asked for
YCbCr 4:2:0, through ctypes) with those FFmpeg's dav1d gives (the fixture's `.yuv`), and
checks that every differing luma sample is one whose YCbCr lies outside the RGB cube, and that
a YCbCr -> RGB (clipped) -> YCbCr round trip (full-range BT.601, the file's `colr`) gives
libheif's luma. Needs libheif1 and numpy (tools/requirements-formats.txt):

    ~/venv-formats/bin/python tools/probe_avif_libheif.py
"""

import ctypes
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
AVIF = ROOT / "tests" / "fixtures" / "formats" / "avif_10bit.avif"
W, H = 150, 100


class HeifError(ctypes.Structure):
    _fields_ = [("code", ctypes.c_int), ("subcode", ctypes.c_int), ("message", ctypes.c_char_p)]


def libheif_planes(colorspace: int, chroma: int) -> tuple[int, int, list[np.ndarray]]:
    lib = ctypes.CDLL("libheif.so.1")
    for f in ["heif_context_read_from_file", "heif_context_get_primary_image_handle", "heif_decode_image"]:
        getattr(lib, f).restype = HeifError
    lib.heif_context_alloc.restype = ctypes.c_void_p
    lib.heif_image_get_plane_readonly.restype = ctypes.POINTER(ctypes.c_uint8)
    ctx = ctypes.c_void_p(lib.heif_context_alloc())
    assert lib.heif_context_read_from_file(ctx, str(AVIF).encode(), None).code == 0
    handle, img = ctypes.c_void_p(), ctypes.c_void_p()
    assert lib.heif_context_get_primary_image_handle(ctx, ctypes.byref(handle)).code == 0
    err = lib.heif_decode_image(handle, ctypes.byref(img), colorspace, chroma, None)
    assert err.code == 0, err.message
    planes = []
    for channel in (0, 1, 2):  # Y, Cb, Cr
        w, h = lib.heif_image_get_width(img, channel), lib.heif_image_get_height(img, channel)
        if w <= 0:
            continue
        stride = ctypes.c_int()
        data = lib.heif_image_get_plane_readonly(img, channel, ctypes.byref(stride))
        raw = np.frombuffer(ctypes.string_at(data, stride.value * h), dtype="<u2").reshape(h, -1)
        planes.append(raw[:, :w].astype(np.float64))
    return lib.heif_image_get_colorspace(img), lib.heif_image_get_chroma_format(img), planes


def main() -> None:
    ref = np.fromfile(AVIF.with_name(AVIF.name + ".yuv"), dtype="<u2").astype(np.float64)
    n = W * H
    y, cb, cr = ref[:n].reshape(H, W), ref[n:n + n // 4].reshape(H // 2, W // 2), ref[n + n // 4:].reshape(H // 2, W // 2)
    _, _, (hy, hcb, hcr) = libheif_planes(0, 1)  # heif_colorspace_YCbCr, heif_chroma_420
    diff = hy != y
    print(f"luma samples off: {diff.mean():.2%} (max {np.abs(hy - y).max():.0f}/1023); "
          f"chroma: {np.mean(np.concatenate([(hcb != cb).ravel(), (hcr != cr).ravel()])):.2%}")
    up = lambda c: np.repeat(np.repeat(c, 2, 0), 2, 1)  # noqa: E731
    u, v = up(cb) - 512, up(cr) - 512
    kr, kb = 0.299, 0.114
    r, b = y + 2 * (1 - kr) * v, y + 2 * (1 - kb) * u
    g = (y - kr * r - kb * b) / (1 - kr - kb)
    outside = np.zeros_like(diff)
    for c in (r, g, b):
        outside |= (c < -0.5) | (c > 1023.5)
    print(f"outside the RGB cube: {outside.sum()} samples; differing ones among them: "
          f"{(diff & outside).sum()} of {diff.sum()}")
    back = np.round(kr * np.clip(r, 0, 1023) + (1 - kr - kb) * np.clip(g, 0, 1023) + kb * np.clip(b, 0, 1023))
    print(f"YCbCr -> RGB (clipped) -> YCbCr luma equal to libheif's: {(back == hy).mean():.2%}, "
          f"max difference {np.abs(back - hy).max():.0f}")
    colorspace, chroma, _ = libheif_planes(99, 99)  # undefined: what libheif has before converting
    print(f"asked for no conversion, libheif hands out colorspace {colorspace} (1 = RGB), chroma {chroma} (3 = 4:4:4)")


if __name__ == "__main__":
    main()
