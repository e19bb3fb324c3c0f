#!/usr/bin/env bash
# The GPU check: every model's parity tests on the device, then the CLIP, BLIP and CLIPSeg
# benchmarks there, and a table of what passed and how fast.
#
#     tools/device_check.sh [cuda|cpu] [--no-bench]
#
# `cuda` (the default) builds with `--features cuda` and needs what linking that build needs:
# the NVIDIA driver's libcuda.so and the CUDA toolkit's nvcc, cuBLAS, cuRAND and NVRTC (set
# CUDA_COMPUTE_CAP, e.g. 90 for an H100/H200, where nvidia-smi cannot tell). `cpu` runs the
# same steps on the CPU build (a dry run of this script on any machine). The parity tests load
# their models and goldens on CLIPDEX_TEST_DEVICE and the benches on CLIPDEX_DEVICE (the
# commands the tests spawn read CLIPDEX_DEVICE too); tolerances are the CPU's.
set -uo pipefail
cd "$(dirname "$0")/.."

device="${1:-cuda}"
bench=1
[ "${2:-}" = "--no-bench" ] && bench=0
features=()
[ "$device" = cuda ] && features=(--features cuda)
export CLIPDEX_TEST_DEVICE="$device" CLIPDEX_DEVICE="$device"
logs="${DEVICE_CHECK_LOGS:-target/device-check}"
mkdir -p "$logs"

rows=()
failed=0
for t in clip_parity chinese_clip_parity multilingual_parity blip_parity clipseg_parity; do
  if cargo test --release "${features[@]}" --test "$t" >"$logs/$t.log" 2>&1; then
    result=$(grep -E '^test result:' "$logs/$t.log" | tail -n 1 | sed -E 's/^test result: ok\. ([0-9]+) passed.*/\1 passed/')
  else
    failed=1
    result="FAILED (see $logs/$t.log)"
  fi
  rows+=("| $t | $result |")
done

if [ "$bench" = 1 ]; then
  for b in clip caption segment; do
    if cargo bench "${features[@]}" --bench "$b" >"$logs/bench-$b.log" 2>&1; then
      rows+=("| bench $b | see below |")
    else
      failed=1
      rows+=("| bench $b | FAILED (see $logs/bench-$b.log) |")
    fi
  done
fi

echo
echo "clipdex device check on $device, $(date -u +%Y-%m-%d)"
[ "$device" = cuda ] && command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,driver_version --format=csv,noheader
echo
echo "| check | result |"
echo "| --- | --- |"
printf '%s\n' "${rows[@]}"
if [ "$bench" = 1 ]; then
  for b in clip caption segment; do
    echo
    echo "## cargo bench --bench $b ($device)"
    grep -vE '^(warning|\s+(Compiling|Finished|Running))' "$logs/bench-$b.log" || true
  done
fi
exit "$failed"
