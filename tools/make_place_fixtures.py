#!/usr/bin/env python3
"""Writes tests/fixtures/places/: small JPEGs with EXIF GPS positions in several countries (both
hemispheres, both sides of Greenwich) and one without, for tests/places.rs; two of them also
name their lens (EXIF LensMake and LensModel), for `lens:`.

    /root/venv-formats/bin/python tools/make_place_fixtures.py   # Pillow (tools/requirements-formats.txt)

Each position lies within about 100 m of a GeoNames city of 1,000+ inhabitants; the test names
the GeoNames row (id, name, region, country) it must resolve to.
"""

import os

from PIL import Image
from PIL.TiffImagePlugin import IFDRational

OUT = os.path.join(os.path.dirname(__file__), "..", "tests", "fixtures", "places")

# name: (latitude, longitude, colour)
PHOTOS = {
    "munich.jpg": (48.1378, 11.5750, (200, 40, 40)),
    "lisbon.jpg": (38.7255, -9.1495, (40, 200, 40)),
    "rio.jpg": (-22.9068, -43.1820, (40, 40, 200)),
    "sydney.jpg": (-33.8690, 151.2080, (200, 200, 40)),
    "tokyo.jpg": (35.6890, 139.6915, (40, 200, 200)),
    "reykjavik.jpg": (64.1358, -21.8950, (200, 40, 200)),
}


# name: (LensMake, LensModel)
LENSES = {
    "munich.jpg": ("FUJIFILM", "XF23mmF2 R WR"),
    "lisbon.jpg": ("Canon", "EF50mm f/1.8 STM"),
}


def dms(value):
    """Degrees as EXIF's three rationals: degrees, minutes, seconds (1/1000)."""
    value = abs(value)
    d = int(value)
    m = int((value - d) * 60)
    s = round(((value - d) * 60 - m) * 60 * 1000)
    return (IFDRational(d, 1), IFDRational(m, 1), IFDRational(s, 1000))


def main():
    os.makedirs(OUT, exist_ok=True)
    for name, (lat, lon, colour) in PHOTOS.items():
        img = Image.new("RGB", (64, 48), colour)
        exif = Image.Exif()
        exif[0x010F] = "FixtureCam"  # Make
        if name in LENSES:
            ifd = exif.get_ifd(0x8769)  # the Exif IFD
            ifd[0xA433], ifd[0xA434] = LENSES[name]  # LensMake, LensModel
        gps = exif.get_ifd(0x8825)
        gps[1] = "N" if lat >= 0 else "S"
        gps[2] = dms(lat)
        gps[3] = "E" if lon >= 0 else "W"
        gps[4] = dms(lon)
        img.save(os.path.join(OUT, name), quality=90, exif=exif)
    Image.new("RGB", (64, 48), (120, 120, 120)).save(os.path.join(OUT, "nogps.jpg"), quality=90)


if __name__ == "__main__":
    main()
