#!/usr/bin/env bash
# Fetches MediaPipe's BlazeFace face detectors (Apache-2.0) from the npm package
# @mediapipe/face_detection 0.4.1657300184, once, into DEST (default
# ~/.cache/clipdex-ci/blazeface-models):
#   face_detection_short_range.tflite   128x128 input, faces within about 2 m of the camera
#   face_detection_full_range.tflite    192x192 input, faces within about 5 m
# The package's sparse full-range model (DENSIFY, DEPTH_TO_SPACE) and its WebAssembly are left
# out. The tarball comes straight from the npm registry (no npm needed) and is checked by
# SHA-256, as is each model. Nothing is downloaded when the folder is complete.
set -euo pipefail
dest="${1:-${XDG_CACHE_HOME:-$HOME/.cache}/clipdex-ci/blazeface-models}"
mkdir -p "$dest"
[ -f "$dest/.complete" ] && exit 0

version=0.4.1657300184
url="${NPM_REGISTRY:-https://registry.npmjs.org}/@mediapipe/face_detection/-/face_detection-$version.tgz"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
curl -fsSL --retry 3 -o "$tmp/package.tgz" "$url"
check() { echo "$2  $1" | sha256sum -c --quiet - || { echo "checksum mismatch: $1" >&2; exit 1; }; }
check "$tmp/package.tgz" a118cde74923dc4435257fbfbb613464a0f58d115dff6314d4ff96c8aebf6419
tar -xzf "$tmp/package.tgz" -C "$tmp" package/face_detection_short_range.tflite package/face_detection_full_range.tflite
check "$tmp/package/face_detection_short_range.tflite" 3bc182eb9f33925d9e58b5c8d59308a760f4adea8f282370e428c51212c26633
check "$tmp/package/face_detection_full_range.tflite" 99bf9494d84f50acc6617d89873f71bf6635a841ea699c17cb3377f9507cfec3
cp "$tmp/package/face_detection_short_range.tflite" "$tmp/package/face_detection_full_range.tflite" "$dest/"
touch "$dest/.complete"
echo "BlazeFace models in $dest"
