#!/usr/bin/env bash
# CPU throughput of the hassc runtime against tract, measured in one run on this machine.
#
# Usage: scripts/bench_runtime.sh [MODEL.onnx] [RUNS]
#   default model: testdata/torchvision/resnet18_op13.onnx (scripts/export_torchvision.py)
# Prints `hass-run --bench` and tract's figures (batch 1 and 8) one after the other.
set -euo pipefail
cd "$(dirname "$0")/.."
model=${1:-testdata/torchvision/resnet18_op13.onnx}
runs=${2:-20}
[ -f "$model" ] || { echo "no $model; run scripts/export_torchvision.py first" >&2; exit 1; }
cargo build --release -q --bin hassc --bin hass-run --example tract_bench
artifact=$(mktemp --suffix=.hass)
trap 'rm -f "$artifact"' EXIT
target/release/hassc "$model" --target u250 -o "$artifact" -q
echo "model: $model, $runs runs each, $(nproc) cores"
target/release/hass-run "$artifact" --bench "$runs"
target/release/examples/tract_bench "$model" "$runs"
