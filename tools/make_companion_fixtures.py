#!/usr/bin/env python3
"""Write clipdex's companion-file fixtures: Live Photos, a RAW+JPEG pair and Motion Photos.

Into tests/fixtures/companions/ (small, committed), from the existing fixture photos:

- `IMG_0001.HEIC` + `IMG_0001.MOV`: an Apple Live Photo (HEIC still, a 0.5 s QuickTime movie
  that FFmpeg makes from the same photo);
- `IMG_0002.JPG` + `IMG_0002.mov`: a Live Photo with a JPEG still (the extension's case differs);
- `DSC_0003.JPG` + `DSC_0003.DNG`: a RAW+JPEG pair (the DNG is tests/fixtures/formats/raw_preview.dng);
- `PXL_0004.MP.jpg`: a Google Motion Photo: a JPEG whose XMP (`GCamera:MotionPhoto`, a
  `Container:Directory` with the MotionPhoto item's `Item:Length`) announces the MP4 appended to it;
- `SAM_0005.jpg`: the older form, `GCamera:MicroVideo` with `GCamera:MicroVideoOffset`;
- `PXL_0006.MP.heic`: a Motion Photo whose still is a HEIC (its XMP an item of the HEIC);
- `IMG_0007.JPG` + `IMG_0007_video.MOV`: a Live Photo whose names differ, paired by the content
  identifier both carry (the still's Apple MakerNote tag 0x0011, the MOV's
  `com.apple.quicktime.content.identifier` key). `--identifier-pair` writes only these two.

The hostile variants (a corrupt or missing MOV, a wrong or past-the-end offset, huge XMP) are
derived from these by tests/companions.rs. Needs FFmpeg (libx264) besides
tools/requirements-formats.txt:

    ~/venv-formats/bin/python tools/make_companion_fixtures.py
"""

import io
import shutil
import struct
import subprocess
import tempfile
from pathlib import Path

import pillow_heif

from make_format_fixtures import OUT as FORMATS, jpeg_bytes, photo, phone_exif

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "tests" / "fixtures" / "companions"


def movie(still: Path, container: str) -> bytes:
    """A 0.5 s 64 x 64 H.264 movie of a still photo, in a QuickTime (`mov`) or MP4 container."""
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / f"clip.{container}"
        subprocess.run(
            ["ffmpeg", "-v", "error", "-y", "-loop", "1", "-i", str(still), "-t", "0.5", "-r", "10",
             "-vf", "scale=64:64,format=yuv420p", "-c:v", "libx264", "-preset", "veryslow", "-crf", "40",
             "-bitexact", "-map_metadata", "-1", "-fflags", "+bitexact", "-flags:v", "+bitexact", str(out)],
            check=True,
        )
        return out.read_bytes()


def with_xmp(jpeg: bytes, xmp: str) -> bytes:
    """A JPEG with an APP1 XMP segment right after its SOI."""
    payload = b"http://ns.adobe.com/xap/1.0/\0" + xmp.encode()
    return jpeg[:2] + b"\xff\xe1" + struct.pack(">H", len(payload) + 2) + payload + jpeg[2:]


def xmp_packet(body: str) -> str:
    return ('<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#">'
            '<rdf:Description xmlns:GCamera="http://ns.google.com/photos/1.0/camera/" '
            'xmlns:Container="http://ns.google.com/photos/1.0/container/" '
            'xmlns:Item="http://ns.google.com/photos/1.0/container/item/" ' + body +
            '</rdf:Description></rdf:RDF></x:xmpmeta>')


# The identifier an iPhone writes into both halves of a Live Photo (a UUID).
CONTENT_IDENTIFIER = "6E4B3A1C-2D5F-4A8B-9C0D-1E2F3A4B5C6D"


def apple_makernote(identifier: str) -> bytes:
    """An Apple MakerNote as an iPhone writes it ("Apple iOS", version 1, big-endian), holding
    only tag 0x0011, the Live Photo's ContentIdentifier (an ASCII string; offsets count from the
    start of the MakerNote)."""
    value = identifier.encode() + b"\0"
    header = b"Apple iOS\0" + b"\0\x01" + b"MM"
    ifd = struct.pack(">H", 1) + struct.pack(">HHII", 0x0011, 2, len(value), len(header) + 2 + 12 + 4) + b"\0" * 4
    return header + ifd + value


def tagged_movie(still: Path, identifier: str) -> bytes:
    """A QuickTime movie of a still carrying Apple's `com.apple.quicktime.content.identifier`
    key in its `mdta` metadata (`moov/meta/keys` + `ilst`)."""
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "clip.mov"
        subprocess.run(
            ["ffmpeg", "-v", "error", "-y", "-loop", "1", "-i", str(still), "-t", "0.5", "-r", "10",
             "-vf", "scale=64:64,format=yuv420p", "-c:v", "libx264", "-preset", "veryslow", "-crf", "40",
             "-bitexact", "-map_metadata", "-1", "-fflags", "+bitexact", "-flags:v", "+bitexact",
             "-metadata", f"com.apple.quicktime.content.identifier={identifier}",
             "-movflags", "use_metadata_tags", str(out)],
            check=True,
        )
        return out.read_bytes()


def identifier_pair() -> None:
    """`IMG_0007.JPG` + `IMG_0007_video.MOV`: a Live Photo exported under names that differ,
    paired by the content identifier both carry."""
    from PIL import Image

    exif = Image.Exif()
    exif[0x010F] = "Apple"
    exif[0x0110] = "iPhone 15"
    exif.get_ifd(0x8769)[0x927C] = apple_makernote(CONTENT_IDENTIFIER)
    buf = io.BytesIO()
    photo("astronaut.jpg", (200, 150)).save(buf, "JPEG", quality=90, exif=exif.tobytes())
    (OUT / "IMG_0007.JPG").write_bytes(buf.getvalue())
    with tempfile.TemporaryDirectory() as tmp:
        png = Path(tmp) / "still.png"
        photo("astronaut.jpg", (64, 64)).save(png)
        (OUT / "IMG_0007_video.MOV").write_bytes(tagged_movie(png, CONTENT_IDENTIFIER))


def main() -> None:
    if OUT.exists():
        shutil.rmtree(OUT)
    OUT.mkdir(parents=True)
    pillow_heif.register_heif_opener()

    heic = OUT / "IMG_0001.HEIC"
    photo("chelsea_exif6.jpg", (100, 150)).save(heic, quality=90, exif=phone_exif(6))
    jpg = OUT / "IMG_0002.JPG"
    jpg.write_bytes(jpeg_bytes(photo("rocket.webp", (240, 160))))
    with tempfile.TemporaryDirectory() as tmp:
        for still, name in [("chelsea_exif6.jpg", "IMG_0001.MOV"), ("rocket.webp", "IMG_0002.mov")]:
            png = Path(tmp) / "still.png"
            photo(still, (64, 64)).save(png)
            (OUT / name).write_bytes(movie(png, "mov"))

        (OUT / "DSC_0003.JPG").write_bytes(jpeg_bytes(photo("coffee.png", (360, 240))))
        shutil.copy(FORMATS / "raw_preview.dng", OUT / "DSC_0003.DNG")

        png = Path(tmp) / "motion.png"
        photo("astronaut.jpg", (64, 64)).save(png)
        mp4 = movie(png, "mp4")
        still = jpeg_bytes(photo("astronaut.jpg", (256, 256)))
        directory = xmp_packet(
            'GCamera:MotionPhoto="1" GCamera:MotionPhotoVersion="1" GCamera:MotionPhotoPresentationTimestampUs="0">'
            '<Container:Directory><rdf:Seq>'
            '<rdf:li rdf:parseType="Resource"><Container:Item Item:Mime="image/jpeg" Item:Semantic="Primary" '
            'Item:Length="0" Item:Padding="0"/></rdf:li>'
            f'<rdf:li rdf:parseType="Resource"><Container:Item Item:Mime="video/mp4" Item:Semantic="MotionPhoto" '
            f'Item:Length="{len(mp4)}" Item:Padding="0"/></rdf:li>'
            '</rdf:Seq></Container:Directory>')
        (OUT / "PXL_0004.MP.jpg").write_bytes(with_xmp(still, directory) + mp4)

        still = jpeg_bytes(photo("coffee.png", (300, 200)))
        # Ten digits, so that tests can rewrite the offset in place without moving anything.
        micro = xmp_packet(f'GCamera:MicroVideo="1" GCamera:MicroVideoVersion="1" '
                           f'GCamera:MicroVideoOffset="{len(mp4):010d}">')
        (OUT / "SAM_0005.jpg").write_bytes(with_xmp(still, micro) + mp4)

        heic = io.BytesIO()
        photo("coffee.png", (150, 100)).save(heic, "HEIF", quality=90, xmp=directory.replace("image/jpeg", "image/heic").encode())
        (OUT / "PXL_0006.MP.heic").write_bytes(heic.getvalue() + mp4)
    identifier_pair()
    for p in sorted(OUT.iterdir()):
        print(f"{p.name}: {p.stat().st_size} bytes")


if __name__ == "__main__":
    import sys

    if "--identifier-pair" in sys.argv:
        pillow_heif.register_heif_opener()
        identifier_pair()
    else:
        main()
