#!/usr/bin/env bash
# RapidOCR and `clipdex ocr` on the same two 12 MP photos (with text and without), one after the
# other in one run, with the machine's load before each: the speed table of
# docs/src/text-in-photos.md.
#
#   tools/bench_ocr_speed.sh CLIPDEX_BINARY [SETS] [REPEAT]
#
# SETS: v4,v6 (default v6); REPEAT: timed runs per photo after one warm-up (default 1).
# Needs /root/venv-ocr (tools/requirements-ocr.txt) and the models of tools/fetch_ocr_models.sh.
set -euo pipefail
clipdex=${1:?usage: $0 CLIPDEX_BINARY [SETS] [REPEAT]}
sets=${2:-v6}
repeat=${3:-1}
models=${CLIPDEX_OCR_MODELS:-$HOME/.cache/clipdex-ci/ocr-models}
out=${OUT:-/tmp/ocr-bench}
here=$(cd "$(dirname "$0")" && pwd)
python=${PYTHON:-/root/venv-ocr/bin/python}
echo "load before RapidOCR: $(cut -d' ' -f1-3 /proc/loadavg)"
"$python" "$here/bench_ocr_rapidocr.py" "$models" "$out" "$repeat" "$sets"
for set in ${sets//,/ }; do
    for photo in photo-12mp.jpg text-12mp.jpg; do
        "$clipdex" ocr --ocr-model "$models/$set" "$out/$photo" > /dev/null  # warm-up
        echo "load before clipdex $set $photo: $(cut -d' ' -f1-3 /proc/loadavg)"
        start=$(date +%s.%N)
        for _ in $(seq "$repeat"); do
            /usr/bin/time -f "clipdex $set $photo: peak %M KB" "$clipdex" ocr --json --ocr-model "$models/$set" "$out/$photo" > "$out/clipdex-$set-$photo.json"
        done
        end=$(date +%s.%N)
        lines=$(python3 -c "import json,sys; print(sum(len(p['lines']) for p in json.load(open(sys.argv[1]))))" "$out/clipdex-$set-$photo.json")
        awk -v s="$start" -v e="$end" -v r="$repeat" -v n="$lines" -v name="clipdex $set $photo" \
            'BEGIN { t = (e - s) / r; printf "%s: %.2f s/photo (%.2f photos/s), %d lines\n", name, t, 1 / t, n }'
    done
done
