#!/usr/bin/env bash
# Fetches the real PP-OCR models (Apache-2.0) from the PyPI wheels that ship them, once, into
# DEST (default ~/.cache/clipdex-ci/ocr-models):
#   DEST/v4: PP-OCRv4 mobile det/rec + the v2 orientation classifier (rapidocr_onnxruntime 1.3.24)
#   DEST/v6: PP-OCRv6 small det/rec + the v2 orientation classifier (rapidocr 3.10.0)
# The recognisers carry their dictionary in the ONNX metadata ("character"). Each folder can be
# given to `clipdex ocr --ocr-model`. Nothing is downloaded when both folders are complete.
set -euo pipefail
dest="${1:-${XDG_CACHE_HOME:-$HOME/.cache}/clipdex-ci/ocr-models}"
mkdir -p "$dest"
[ -f "$dest/v4/.complete" ] && [ -f "$dest/v6/.complete" ] && exit 0

python=${PYTHON:-python3}
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
# Debian's python3 has no pip: a throwaway venv brings one (.ci/run installs python3-venv).
if ! "$python" -m pip --version >/dev/null 2>&1; then
  "$python" -m venv "$tmp/venv"
  python="$tmp/venv/bin/python"
fi
"$python" -m pip download -q --no-deps --dest "$tmp" \
  rapidocr_onnxruntime==1.3.24 rapidocr==3.10.0
check() { echo "$2  $1" | sha256sum -c --quiet - || { echo "checksum mismatch: $1" >&2; exit 1; }; }
check "$tmp/rapidocr_onnxruntime-1.3.24-py3-none-any.whl" 4282ff0b8db05ad2a53afc8d0ef2e7d879c53022fc61a4f8e84c58d737822cd2
check "$tmp/rapidocr-3.10.0-py3-none-any.whl" 2fc34e26cd0f48514804a94f8832283039c7334076bff60768b1fed9ad068050

rm -rf "$dest/v4" "$dest/v6"
mkdir -p "$dest/v4" "$dest/v6"
(cd "$tmp" && "$python" -m zipfile -e rapidocr_onnxruntime-1.3.24-py3-none-any.whl v4 \
  && "$python" -m zipfile -e rapidocr-3.10.0-py3-none-any.whl v6)
cp "$tmp"/v4/rapidocr_onnxruntime/models/*.onnx "$dest/v4/"
cp "$tmp"/v6/rapidocr/models/PP-OCRv6_det_small.onnx "$tmp"/v6/rapidocr/models/PP-OCRv6_rec_small.onnx \
  "$tmp"/v6/rapidocr/models/ch_ppocr_mobile_v2.0_cls_mobile.onnx "$dest/v6/"
touch "$dest/v4/.complete" "$dest/v6/.complete"
echo "OCR models in $dest"
