#!/usr/bin/env bash
# CPU throughput of the hassc runtime, float and fixed point, against tract, measured in one
# run on this machine.
#
# Usage: scripts/bench_runtime.sh [MODEL.onnx] [RUNS] [ROUNDS]
#   default model: testdata/torchvision/resnet18_op13.onnx (scripts/export_torchvision.py)
# Compiles the model three ways (float32, 16-bit and 8-bit fixed point), then, with 1 and
# 2 threads, runs `hass-run --bench RUNS` on each in turn, ROUNDS times (interleaved, so
# that a slow spell of a shared machine hits every datapath alike), and prints each one's
# images/s in its fastest run (the least disturbed) at batch 1 and 8, with the fixed-point
# paths' ratio to float; then tract's figures.
#
# AVX2_ONLY=1 measures, on a processor with AVX-512, what one without it would do: hass-run
# built (in target/avx2-only) with matrixmultiply's AVX-512 kernels compiled out
# (MMTEST_FEATURE) and run with HASS_AVX2_ONLY=1 (the runtime's own kernels).
set -euo pipefail
cd "$(dirname "$0")/.."
model=${1:-testdata/torchvision/resnet18_op13.onnx}
runs=${2:-5}
rounds=${3:-3}
[ -f "$model" ] || { echo "no $model; run scripts/export_torchvision.py first" >&2; exit 1; }
cargo build --release -q --bin hassc --bin hass-run --example tract_bench
run=target/release/hass-run
if [ -n "${AVX2_ONLY:-}" ]; then
    MMTEST_FEATURE=sse2,avx,avx2,fma CARGO_TARGET_DIR=target/avx2-only cargo build --release -q --bin hass-run
    run=target/avx2-only/release/hass-run
    export HASS_AVX2_ONLY=1
fi
dir=$(mktemp -d)
trap 'rm -rf "$dir"' EXIT
target/release/hassc "$model" --target u250 --datapath float -o "$dir/float.hass" -q > /dev/null
target/release/hassc "$model" --target u250 -o "$dir/fixed16.hass" -q > /dev/null
target/release/hassc "$model" --target u250 --weight-bits 8 --activation-bits 8 -o "$dir/fixed8.hass" -q > /dev/null
echo "model: $model, $runs runs per measurement, best of $rounds rounds, $(nproc) cores${AVX2_ONLY:+, AVX2 only}"
printf '%-8s %-8s %12s %12s %8s %8s\n' threads datapath "batch 1" "batch 8" "b1/float" "b8/float"
for threads in 1 2; do
    for round in $(seq "$rounds"); do
        for path in float fixed16 fixed8; do
            RAYON_NUM_THREADS=$threads "$run" "$dir/$path.hass" --bench "$runs" \
                | awk -v p="$path" '/batch 1:/ {b1=$NF} /batch 8:/ {b8=$NF} END {gsub(/\)/, "", b1); gsub(/\)/, "", b8); print p, b1, b8}'
        done
    done | awk -v t="$threads" '
        { if ($2 > b1[$1]) b1[$1] = $2; if ($3 > b8[$1]) b8[$1] = $3 }
        END {
            n = split("float fixed16 fixed8", order, " ")
            for (i = 1; i <= n; i++) {
                p = order[i]
                printf "%-8s %-8s %12.1f %12.1f %8.2f %8.2f\n", t, p, b1[p], b8[p], b1[p] / b1["float"], b8[p] / b8["float"]
            }
        }'
done
target/release/examples/tract_bench "$model" "$runs"
