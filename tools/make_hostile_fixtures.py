#!/usr/bin/env python3
"""Write the seed files of clipdex's hostile-file corpus (tests/hostile.rs builds the rest).

Only what Rust cannot write itself is here: a progressive JPEG, which the test multiplies into a
scan bomb (the same scans repeated thousands of times). Pillow's encoder writes it; the pixels
do not matter, so any Pillow version will do. And a one-frame 16000 x 16000 H.264 video of one
colour, 48 KB on disk (FFmpeg's `ffmpeg` must be on PATH; making it takes about 2.6 GB and 20 s,
which is why the test does not make it itself).

    ~/venv-ref/bin/python tools/make_hostile_fixtures.py
"""

import subprocess
from pathlib import Path

from PIL import Image

OUT = Path(__file__).resolve().parent.parent / "tests" / "fixtures" / "hostile"


def main() -> None:
    OUT.mkdir(parents=True, exist_ok=True)
    # Large in pixels, small on disk: smooth, low quality. Each repeated scan touches every
    # 8x8 block of its 2048 x 2048 pixels.
    img = Image.linear_gradient("L").resize((2048, 2048)).convert("RGB")
    img.save(OUT / "progressive_2048.jpg", "JPEG", quality=20, progressive=True, optimize=True)
    print((OUT / "progressive_2048.jpg").stat().st_size, "bytes")
    # The slowest preset at the lowest quality: a uniform frame costs almost nothing.
    video = OUT / "video_16000.mkv"
    subprocess.run(
        ["ffmpeg", "-nostdin", "-v", "error", "-y", "-f", "lavfi", "-i", "color=c=red:s=16000x16000:d=1:r=1",
         "-c:v", "libx264", "-preset", "veryslow", "-crf", "51", "-pix_fmt", "yuv420p", str(video)],
        check=True,
    )
    print(video.stat().st_size, "bytes")


if __name__ == "__main__":
    main()
