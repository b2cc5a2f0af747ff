#!/usr/bin/env bash
# Fuzz one reader of untrusted input with libFuzzer for SECONDS (issue 11):
#
#   scripts/fuzz.sh onnx|artifact|npy|board SECONDS
#
# The corpus starts from the bundled files (fuzz/corpus/TARGET, kept between runs); crashes
# land in fuzz/artifacts/TARGET/ and make the script fail. Needs the nightly toolchain and
# cargo-fuzz (`cargo install cargo-fuzz`). The same readers are also fuzzed, bounded and
# seeded, inside `cargo test` (compiler/tests/fuzz.rs, runtime/tests/fuzz.rs).
set -euo pipefail
cd "$(dirname "$0")/.."
target=${1:?usage: scripts/fuzz.sh onnx|artifact|npy|board SECONDS}
seconds=${2:-60}
corpus=fuzz/corpus/$target
mkdir -p "$corpus"
case $target in
  onnx) cp testdata/models/*.onnx "$corpus"/; max_len=262144 ;;
  artifact) cp testdata/artifacts/*.hass testdata/fixed/*.hass "$corpus"/; max_len=262144 ;;
  npy) cp testdata/inputs/*labels.npy "$corpus"/; max_len=65536 ;;
  board) cp compiler/src/board/builtin/*.toml "$corpus"/; cp testdata/boards/zcu102.toml "$corpus"/file.toml; max_len=8192 ;;
  *) echo "unknown target $target (onnx, artifact, npy, board)" >&2; exit 2 ;;
esac
cd fuzz
exec cargo +nightly fuzz run --release "$target" "corpus/$target" -- \
  -max_total_time="$seconds" -max_len="$max_len" -rss_limit_mb=4096 -timeout=20 -print_final_stats=1
