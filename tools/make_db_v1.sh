#!/usr/bin/env bash
# Writes tests/fixtures/db-v1: a schema-1 database of three fixture photos, kept so that every
# later schema version is tested against a database the first version wrote. Run it only with
# a build whose schema is still version 1 (git checkout of that commit), from the repo root.
set -euo pipefail
cargo build -q
tmp=$(mktemp -d)
mkdir -p "$tmp/photos"
cp tests/fixtures/images/{astronaut.jpg,chelsea_small.bmp,rocket.webp} "$tmp/photos/"
rm -rf tests/fixtures/db-v1
./target/debug/clipdex --db tests/fixtures/db-v1 --model tests/fixtures/clip-tiny-p32 add "$tmp/photos"
./target/debug/clipdex --db tests/fixtures/db-v1 --model tests/fixtures/clip-tiny-p32 index
rm -rf "$tmp"
