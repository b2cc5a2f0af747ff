#!/usr/bin/env bash
# Where zero-skipping pays on a whole network: hass-run's float path on one model with its
# conv and fully connected weights pruned by magnitude to several sparsities, against the
# same model dense, measured in one run on this machine.
#
# Usage: scripts/bench_sparse.sh [RUNS] [ROUNDS] [MODEL.onnx]
#   default model: testdata/torchvision/resnet18_op13.onnx (scripts/export_torchvision.py).
# Compiles the model at each sparsity (`--datapath float --weight-sparsity S`, u250), then
# ROUNDS times, one sparsity after another (interleaved, so that a slow spell of a shared
# machine hits every one alike), runs `hass-run --bench RUNS` at 1 and 2 threads. Prints
# each one's images/s at batch 1 and 8 in its fastest round and the ratio to dense.
# Per layer the crossover is measured by `cargo bench -p hass-runtime --bench sparse_gemm`.
set -euo pipefail
cd "$(dirname "$0")/.."
runs=${1:-3}
rounds=${2:-3}
model=${3:-testdata/torchvision/resnet18_op13.onnx}
[ -f "$model" ] || { echo "no $model; run scripts/export_torchvision.py first" >&2; exit 1; }
sparsities=(0 0.3 0.5 0.6 0.7 0.8 0.9)
cargo build --release -q --bin hassc --bin hass-run
dir=$(mktemp -d)
trap 'rm -rf "$dir"' EXIT
for s in "${sparsities[@]}"; do
    target/release/hassc "$model" --target u250 --datapath float --weight-sparsity "$s" -o "$dir/$s.hass" -q > /dev/null
done
echo "model: $model, float path, $runs runs per measurement, best of $rounds rounds, $(nproc) cores"
for round in $(seq "$rounds"); do
    for threads in 1 2; do
        for s in "${sparsities[@]}"; do
            RAYON_NUM_THREADS=$threads target/release/hass-run "$dir/$s.hass" --bench "$runs" |
                awk -v t="$threads" -v s="$s" '/batch 1:/ {b1=$4} /batch 8:/ {b8=$4} END {print t, s, b1, b8}'
        done
    done
done | awk '
    { key = $1 " " $2; if (!(key in b1) || $3 > b1[key]) b1[key] = $3; if (!(key in b8) || $4 > b8[key]) b8[key] = $4 }
    END {
        printf "%-7s %-9s %9s %9s %8s %8s\n", "threads", "sparsity", "batch 1", "batch 8", "b1/dense", "b8/dense"
        n = split("0 0.3 0.5 0.6 0.7 0.8 0.9", sparsities, " ")
        for (t = 1; t <= 2; t++) for (i = 1; i <= n; i++) {
            key = t " " sparsities[i]; d = t " 0"
            printf "%-7s %-9s %9.1f %9.1f %8.2f %8.2f\n", t, sparsities[i], b1[key], b8[key], b1[key] / b1[d], b8[key] / b8[d]
        }
    }'
