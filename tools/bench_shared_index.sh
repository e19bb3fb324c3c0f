#!/usr/bin/env bash
# Indexing throughput of one library shared by 1 and 2 `clipdex index` processes (PostgreSQL),
# beside one process on a folder library, with the tiny fixture CLIP: the model costs next to
# nothing, so the figures are what the rest costs per photo (reading, hashing, decoding,
# preprocessing, and the database: queueing, claiming, finishing, committing).
#
#   CLIPDEX_BENCH_PG=postgres://USER:PASS@localhost:5432/postgres bash tools/bench_shared_index.sh [PHOTOS]
set -euo pipefail
base=${CLIPDEX_BENCH_PG:?set CLIPDEX_BENCH_PG to a server URL whose role may create databases}
n=${1:-200}
root=$(cd "$(dirname "$0")/.." && pwd)
bin=$root/target/release/clipdex
model=$root/tests/fixtures/clip-tiny-p32
cargo build --release --quiet --manifest-path "$root/Cargo.toml"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
# n distinct 12-megapixel JPEGs: the fixture photo with a different trailer after its end
# marker (decoders ignore it; the content hash differs), so each is decoded and embedded.
mkdir -p "$work/photos"
for i in $(seq -w 1 "$n"); do
  { cat "$root/tests/fixtures/images/coffee_12mp.jpg"; printf 'clipdex-bench-%s' "$i"; } > "$work/photos/p$i.jpg"
done
db_url() { echo "${base%/*}/$1"; }
psql_admin() { psql "$base" -qAtc "$1" >/dev/null; }
run() { # label, db, processes
  local label=$1 db=$2 procs=$3 start end
  "$bin" --db "$db" --model "$model" add "$work/photos" >/dev/null
  start=$(date +%s.%N)
  for _ in $(seq "$procs"); do "$bin" --db "$db" --model "$model" index --json > "$work/report.$_" & done
  wait
  end=$(date +%s.%N)
  echo "$label: $(python3 -c "print(f'{$n / ($end - $start):.1f} photos/s ({$end - $start:.1f} s for $n)')")"
}
run "folder library, 1 process" "$work/sled" 1
for procs in 1 2; do
  name=clipdex_bench_idx_$$_$procs
  psql_admin "CREATE DATABASE $name"
  run "PostgreSQL, $procs process(es)" "$(db_url "$name")" "$procs"
  psql_admin "DROP DATABASE $name WITH (FORCE)"
done
