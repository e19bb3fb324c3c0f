#!/usr/bin/env python3
"""Write clipdex's still-format fixtures and the pixels a Python user gets from each.

From the existing fixture photos (tests/fixtures/images/) this writes into tests/fixtures/formats/
small HEIC and AVIF files (8 and 10-bit, rotation in the container with the EXIF orientation
beside it, alpha, a grid, a file of several images whose primary is not the first), two JPEG XL
files (lossy with EXIF, lossless), and RAW containers around a JPEG preview (a DNG and a
NEF-like TIFF with a Bayer sensor image, which LibRaw opens; RAF and CR3 laid out as Fujifilm's
and Canon's, which it does not, lacking sensor data). For each `NAME.EXT` the reference RGB
pixels go to `NAME.EXT.png`: what Pillow 13 (+ pillow-heif for HEIC, Pillow's own AVIF plugin,
pillow-jxl-plugin's libjxl) gives after `ImageOps.exif_transpose` and `convert("RGB")`, the
steps clipdex's reference pipeline takes for every photo; for RAWs, rawpy's `extract_thumb()`
(checked to be the preview written) turned by the RAW's orientation. The 10-bit AVIF is encoded
by FFmpeg's libaom (Pillow writes 8-bit AVIF only); its planes as FFmpeg decodes them go to
`avif_10bit.avif.yuv`. Hostile variants (truncated, absurd sizes,
a missing primary, previews past the end) are derived from these files by tests/formats.rs.
Running it again rewrites the same bytes.

    python3 -m venv ~/venv-formats
    ~/venv-formats/bin/pip install -r tools/requirements-formats.txt
    ~/venv-formats/bin/python tools/make_format_fixtures.py
"""

import io
import struct
import subprocess
import tempfile
from pathlib import Path

import numpy as np
import pillow_heif
import pillow_jxl  # noqa: F401  (registers the JPEG XL plugin with Pillow)
from PIL import Image, ImageOps

ROOT = Path(__file__).resolve().parent.parent
IMAGES = ROOT / "tests" / "fixtures" / "images"
OUT = ROOT / "tests" / "fixtures" / "formats"


def photo(name: str, size: tuple[int, int]) -> Image.Image:
    """A fixture photo, resized as stored (its EXIF orientation is kept, not applied)."""
    im = Image.open(IMAGES / name)
    exif = im.getexif()
    small = im.convert("RGBA" if im.mode == "RGBA" else "RGB").resize(size, Image.Resampling.LANCZOS)
    small.info["exif"] = exif.tobytes()
    return small


def phone_exif(orientation: int) -> bytes:
    """EXIF as a phone writes it: orientation, camera, date taken, position."""
    exif = Image.Exif()
    exif[0x0112] = orientation
    exif[0x010F] = "Apple"
    exif[0x0110] = "iPhone 15"
    exif.get_ifd(0x8769)[0x9003] = "2024:05:06 07:08:09"
    gps = exif.get_ifd(0x8825)
    gps.update({1: "N", 2: (48.0, 51.0, 24.0), 3: "E", 4: (2.0, 21.0, 0.0)})
    return exif.tobytes()


def reference(path: Path) -> None:
    """The pixels Pillow (with the pillow-heif opener) gives a user, saved beside the file."""
    with Image.open(path) as im:
        rgb = ImageOps.exif_transpose(im).convert("RGB")
    rgb.save(path.with_name(path.name + ".png"))
    print(f"{path.name}: {path.stat().st_size} bytes, {rgb.size[0]}x{rgb.size[1]}")


def heic_files() -> list[Path]:
    written = []
    astronaut = photo("astronaut.jpg", (128, 128))
    path = OUT / "heic_8bit.heic"
    astronaut.save(path, quality=90)
    written.append(path)

    # 16-bit samples in, a 10-bit HEVC stream out (pillow-heif's default for deep images).
    coffee = np.asarray(photo("coffee.png", (150, 100)), dtype=np.uint16) * 257
    deep = pillow_heif.from_bytes(mode="RGB;16", size=(150, 100), data=coffee.tobytes())
    path = OUT / "heic_10bit.heic"
    deep.save(path, quality=90)
    written.append(path)

    # Stored sideways with EXIF orientation 6: pillow-heif writes the turn as `irot` and keeps
    # the EXIF block, as phones do; a reader that also applied EXIF would turn it twice.
    cat = photo("chelsea_exif6.jpg", (100, 150))
    path = OUT / "heic_rotated.heic"
    cat.save(path, quality=90, exif=phone_exif(6))
    written.append(path)

    rgba = photo("astronaut_rgba.png", (128, 128))
    path = OUT / "heic_alpha.heic"
    rgba.save(path, quality=90)
    written.append(path)

    # Three images, the second one primary (a burst whose pick is not the first frame).
    burst = pillow_heif.from_pillow(photo("rocket.webp", (160, 107)))
    burst.add_from_pillow(photo("coffee.png", (150, 100)))
    burst.add_from_pillow(photo("astronaut.jpg", (96, 96)))
    path = OUT / "heic_burst.heic"
    burst.save(path, quality=90, primary_index=1)
    written.append(path)

    # A grid: six 64 x 64 tiles that libheif assembles into one 192 x 128 image.
    path = OUT / "heic_grid.heic"
    photo("coffee.png", (192, 128)).save(path, quality=90, tile_size=64)
    written.append(path)
    return written


def avif_files() -> list[Path]:
    written = []
    rocket = photo("rocket.webp", (160, 107))
    path = OUT / "avif_8bit.avif"
    rocket.save(path, quality=90)
    written.append(path)

    cat = photo("chelsea_exif6.jpg", (100, 150))
    path = OUT / "avif_rotated.avif"
    cat.save(path, quality=90, exif=cat.info["exif"])
    written.append(path)

    with tempfile.TemporaryDirectory() as tmp:
        source = Path(tmp) / "coffee.png"
        photo("coffee.png", (150, 100)).save(source)
        path = OUT / "avif_10bit.avif"
        subprocess.run(
            # Full-range BT.601 like a phone's, said so in the file (FFmpeg's defaults would
            # leave the matrix unspecified).
            ["ffmpeg", "-v", "error", "-y", "-i", str(source), "-vf", "scale=out_color_matrix=bt601:out_range=full",
             "-c:v", "libaom-av1", "-crf", "12", "-pix_fmt", "yuv420p10le", "-color_range", "pc",
             "-colorspace", "bt470bg", "-color_primaries", "bt709", "-color_trc", "iec61966-2-1",
             "-still-picture", "1", "-frames:v", "1", str(path)],
            check=True,
        )
    # Its YCbCr planes as FFmpeg's AV1 decoder (dav1d) gives them, the same samples libavif
    # gives the reference: tests/formats.rs converts them with clipdex's colour conversion, apart
    # from libheif's decoding (whose samples differ slightly, see docs/src/models.md).
    subprocess.run(
        ["ffmpeg", "-v", "error", "-y", "-i", str(path), "-f", "rawvideo", "-pix_fmt", "yuv420p10le",
         str(path.with_name(path.name + ".yuv"))],
        check=True,
    )
    written.append(path)
    return written


def jxl_files() -> list[Path]:
    written = []
    # Lossy (XYB) and lossless, as libjxl (pillow-jxl-plugin) writes them.
    path = OUT / "jxl_lossy.jxl"
    photo("rocket.webp", (160, 107)).save(path, quality=90, exif=phone_exif(1))
    written.append(path)
    path = OUT / "jxl_lossless.jxl"
    photo("coffee.png", (150, 100)).save(path, lossless=True)
    written.append(path)
    return written


# --- camera RAW: TIFF containers written here, byte by byte -----------------------------------

SHORT, LONG, ASCII, BYTE, SRATIONAL = 3, 4, 2, 1, 10
SIZES = {BYTE: 1, ASCII: 1, SHORT: 2, LONG: 4, SRATIONAL: 8}


def ascii_value(text: str) -> list[int]:
    return list(text.encode() + b"\0")


def tiff(ifds: list[dict], blobs: list[bytes]) -> bytes:
    """A little-endian TIFF: the blobs (pixel data, JPEGs) first, then the directories, each
    with its out-of-line values after it. A value "blob:K" is blob K's offset, "ifd:K" directory
    K's; the directories are linked only through SubIFDs (tag 330)."""
    out = bytearray(b"II*\0\0\0\0\0")
    blob_at = []
    for blob in blobs:
        out += b"\0" * (len(out) % 2)
        blob_at.append(len(out))
        out += blob
    out += b"\0" * (len(out) % 2)

    def size(ifd: dict) -> int:
        extra = sum(SIZES[t] * len(v) for t, v in ifd.values() if SIZES[t] * len(v) > 4)
        return 2 + 12 * len(ifd) + 4 + extra + len(ifd)  # + padding bytes at most one each

    ifd_at, pos = [], len(out)
    for ifd in ifds:
        ifd_at.append(pos)
        pos += size(ifd)

    def resolve(v):
        if isinstance(v, str):
            kind, k = v.split(":")
            return (blob_at if kind == "blob" else ifd_at)[int(k)]
        return v

    def pack(typ: int, values: list) -> bytes:
        values = [resolve(v) for v in values]
        if typ in (BYTE, ASCII):
            return bytes(values)
        if typ == SHORT:
            return struct.pack(f"<{len(values)}H", *values)
        if typ == LONG:
            return struct.pack(f"<{len(values)}I", *values)
        return b"".join(struct.pack("<ii", n, d) for n, d in values)

    for k, ifd in enumerate(ifds):
        out += b"\0" * (ifd_at[k] - len(out))
        data_at = ifd_at[k] + 2 + 12 * len(ifd) + 4
        entries, data = bytearray(struct.pack("<H", len(ifd))), bytearray()
        for tag in sorted(ifd):
            typ, values = ifd[tag]
            raw = pack(typ, values)
            if len(raw) <= 4:
                entries += struct.pack("<HHI", tag, typ, len(values)) + raw.ljust(4, b"\0")
            else:
                entries += struct.pack("<HHII", tag, typ, len(values), data_at + len(data))
                data += raw + b"\0" * (len(raw) % 2)
        out += entries + struct.pack("<I", 0) + data
    struct.pack_into("<I", out, 4, ifd_at[0])
    return bytes(out)


def jpeg_bytes(im: Image.Image, quality: int = 90) -> bytes:
    buf = io.BytesIO()
    im.save(buf, "JPEG", quality=quality)
    return buf.getvalue()


def cfa_ifd(width: int, height: int, blob: str, make: str, model: str) -> dict:
    """A 16-bit uncompressed Bayer (RGGB) sensor image."""
    return {
        254: (LONG, [0]), 256: (LONG, [width]), 257: (LONG, [height]), 258: (SHORT, [16]),
        259: (SHORT, [1]), 262: (SHORT, [32803]), 271: (ASCII, ascii_value(make)),
        272: (ASCII, ascii_value(model)), 273: (LONG, [blob]), 277: (SHORT, [1]),
        278: (LONG, [height]), 279: (LONG, [width * height * 2]), 284: (SHORT, [1]),
        33421: (SHORT, [2, 2]), 33422: (BYTE, [0, 1, 1, 2]),
    }


def sensor(width: int, height: int) -> bytes:
    rng = np.random.default_rng(0)
    return rng.integers(0, 4095, size=(height, width), dtype="<u2").tobytes()


def raw_files() -> list[tuple[Path, bytes, int]]:
    """(path, its preview JPEG, its orientation) for each RAW written. Previews are at least
    224 px on the short side: clipdex refuses smaller ones for a 224 px model."""
    written = []
    # DNG: the sensor image in IFD0, a 360 x 240 baseline JPEG preview in a SubIFD, stored as the
    # camera held it (sideways: orientation 8, turn 90 degrees counter-clockwise to view).
    preview = jpeg_bytes(photo("coffee.png", (360, 240)))
    raw0 = cfa_ifd(64, 64, "blob:0", "Clipdex", "Test DNG")
    raw0.update({
        274: (SHORT, [8]), 306: (ASCII, ascii_value("2024:05:06 07:08:09")), 330: (LONG, ["ifd:1"]),
        50706: (BYTE, [1, 4, 0, 0]), 50708: (ASCII, ascii_value("Clipdex Test DNG")),
        50721: (SRATIONAL, [(1, 1), (0, 1), (0, 1), (0, 1), (1, 1), (0, 1), (0, 1), (0, 1), (1, 1)]),
        50778: (SHORT, [21]),
    })
    jpeg_ifd = {
        254: (LONG, [1]), 256: (LONG, [360]), 257: (LONG, [240]), 258: (SHORT, [8, 8, 8]),
        259: (SHORT, [7]), 262: (SHORT, [6]), 273: (LONG, ["blob:1"]), 277: (SHORT, [3]),
        278: (LONG, [240]), 279: (LONG, [len(preview)]), 284: (SHORT, [1]),
    }
    path = OUT / "raw_preview.dng"
    path.write_bytes(tiff([raw0, jpeg_ifd], [sensor(64, 64), preview]))
    written.append((path, preview, 8))

    # NEF-like: IFD0 a tiny uncompressed RGB thumbnail, SubIFDs a JPEG preview (by
    # JPEGInterchangeFormat) and the sensor image, as Nikon lays them out; orientation 6.
    preview = jpeg_bytes(photo("rocket.webp", (384, 256)))
    thumb = np.asarray(photo("rocket.webp", (32, 21))).tobytes()
    ifd0 = {
        254: (LONG, [1]), 256: (LONG, [32]), 257: (LONG, [21]), 258: (SHORT, [8, 8, 8]),
        259: (SHORT, [1]), 262: (SHORT, [2]), 271: (ASCII, ascii_value("NIKON CORPORATION")),
        272: (ASCII, ascii_value("NIKON D-TEST")), 273: (LONG, ["blob:0"]), 274: (SHORT, [6]),
        277: (SHORT, [3]), 278: (LONG, [21]), 279: (LONG, [len(thumb)]), 284: (SHORT, [1]),
        330: (LONG, ["ifd:1", "ifd:2"]),
    }
    jpeg_ifd = {254: (LONG, [1]), 259: (SHORT, [6]), 513: (LONG, ["blob:1"]), 514: (LONG, [len(preview)])}
    raw = cfa_ifd(64, 64, "blob:2", "NIKON CORPORATION", "NIKON D-TEST")
    path = OUT / "raw_preview.nef"
    path.write_bytes(tiff([ifd0, jpeg_ifd, raw], [thumb, preview, sensor(64, 64)]))
    written.append((path, preview, 6))
    return written


def bmff_box(kind: bytes, payload: bytes) -> bytes:
    return struct.pack(">I", 8 + len(payload)) + kind + payload


def other_raw_files() -> list[tuple[Path, bytes, int]]:
    """RAF and CR3 containers around a preview, laid out as Fujifilm and Canon write them (no
    sensor data, so LibRaw does not open them: the preview written is the reference)."""
    written = []
    # RAF: a 160-byte header whose bytes 84..92 give the JPEG's offset and length; the JPEG
    # carries the orientation in its own EXIF, as Fujifilm's do.
    exif = Image.Exif()
    exif[0x0112] = 3
    buf = io.BytesIO()
    photo("astronaut.jpg", (256, 256)).save(buf, "JPEG", quality=90, exif=exif.tobytes())
    preview = buf.getvalue()
    header = bytearray(b"FUJIFILMCCD-RAW 0201FF383501" + b"X-TEST".ljust(32, b"\0"))
    header = header.ljust(160, b"\0")
    struct.pack_into(">II", header, 84, 160, len(preview))
    path = OUT / "raw_preview.raf"
    path.write_bytes(bytes(header) + preview)
    written.append((path, preview, 0))

    # CR3: ftyp `crx `, a moov holding Canon's uuid box with CMT1 (a TIFF IFD0: orientation 8),
    # and the preview uuid box with PRVW (1620 x 1080 on a camera; smaller here).
    preview = jpeg_bytes(photo("rocket.webp", (360, 240)))
    cmt1 = tiff([{271: (ASCII, ascii_value("Canon")), 272: (ASCII, ascii_value("Canon EOS TEST")), 274: (SHORT, [8])}], [])
    canon = bmff_box(b"uuid", bytes.fromhex("85c0b687820f11e08111f4ce462b6a48") + bmff_box(b"CMT1", cmt1))
    prvw = bmff_box(b"PRVW", struct.pack(">IHHHHI", 0, 1, 360, 240, 1, len(preview)) + preview)
    preview_box = bmff_box(b"uuid", bytes.fromhex("eaf42b5e1c984b88b9fbb7dc406e4d16") + bytes(8) + prvw)
    ftyp = bmff_box(b"ftyp", b"crx " + struct.pack(">I", 1) + b"crx isom")
    path = OUT / "raw_preview.cr3"
    path.write_bytes(ftyp + bmff_box(b"moov", canon) + preview_box)
    written.append((path, preview, 8))
    return written


def raw_reference(path: Path, preview: bytes, orientation: int) -> None:
    """rawpy's (LibRaw's) extract_thumb, decoded by Pillow and turned upright by the RAW's
    orientation. (LibRaw hands the preview back with an EXIF block of its own added, so its
    pixels, not its bytes, are compared with the JPEG written.)"""
    import rawpy

    written = Image.open(io.BytesIO(preview))
    if orientation == 0:  # the preview's own EXIF (RAF)
        orientation = written.getexif().get(0x0112, 1)
    written = written.convert("RGB")
    try:
        with rawpy.imread(str(path)) as raw:
            thumb = raw.extract_thumb()
        assert thumb.format == rawpy.ThumbFormat.JPEG
        extracted = Image.open(io.BytesIO(thumb.data)).convert("RGB")
        assert np.array_equal(np.asarray(extracted), np.asarray(written)), f"{path.name}: LibRaw picked another preview"
    except rawpy.LibRawError as e:
        print(f"{path.name}: LibRaw does not open it ({type(e).__name__}): the preview written is the reference")
        extracted = written
    turn = {1: None, 2: Image.Transpose.FLIP_LEFT_RIGHT, 3: Image.Transpose.ROTATE_180,
            4: Image.Transpose.FLIP_TOP_BOTTOM, 5: Image.Transpose.TRANSPOSE, 6: Image.Transpose.ROTATE_270,
            7: Image.Transpose.TRANSVERSE, 8: Image.Transpose.ROTATE_90}[orientation]
    upright = extracted if turn is None else extracted.transpose(turn)
    upright.save(path.with_name(path.name + ".png"))
    print(f"{path.name}: {path.stat().st_size} bytes, preview {extracted.size}, upright {upright.size}")


def main() -> None:
    OUT.mkdir(parents=True, exist_ok=True)
    pillow_heif.register_heif_opener()
    for path in heic_files() + avif_files() + jxl_files():
        reference(path)
    for path, preview, orientation in raw_files() + other_raw_files():
        raw_reference(path, preview, orientation)


if __name__ == "__main__":
    main()
