#!/usr/bin/env bash
# CPU throughput of the hassc runtime, float and fixed point, against onnxruntime and tract,
# measured in one run on this machine.
#
# Usage: scripts/bench_runtime.sh [RUNS] [ROUNDS] [MODEL.onnx ...]
#   default models: resnet18, mobilenet_v2 and mobilenet_v3_small from testdata/torchvision
#   (made by scripts/export_torchvision.py); onnxruntime from pip (python3 -m pip install
#   onnxruntime onnx numpy), left out with a note if it is missing.
# Per model: compiles it three ways (float32, 16-bit and 8-bit fixed point), then ROUNDS
# times, one engine after another (interleaved, so that a slow spell of a shared machine
# hits every engine alike), measures each at 1 and 2 threads, RUNS timed runs at batch 1
# and 8 (`hass-run --bench`, scripts/bench_ort.py, tract's example, which runs on one
# thread). Prints each one's images/s in its fastest round (the least disturbed) and the
# ratios of the hass-run rows to onnxruntime at the same threads and to tract.
#
# AVX2_ONLY=1 measures, on a processor with AVX-512, what one without it would do: hass-run
# built (in target/avx2-only) with matrixmultiply's AVX-512 kernels compiled out
# (MMTEST_FEATURE) and run with HASS_AVX2_ONLY=1 (the runtime's own kernels).
set -euo pipefail
cd "$(dirname "$0")/.."
runs=${1:-5}
rounds=${2:-3}
shift $(($# < 2 ? $# : 2))
models=("$@")
[ ${#models[@]} -gt 0 ] || models=(testdata/torchvision/{resnet18,mobilenet_v2,mobilenet_v3_small}_op13.onnx)
for model in "${models[@]}"; do
    [ -f "$model" ] || { echo "no $model; run scripts/export_torchvision.py first" >&2; exit 1; }
done
cargo build --release -q --bin hassc --bin hass-run --example tract_bench
run=target/release/hass-run
if [ -n "${AVX2_ONLY:-}" ]; then
    MMTEST_FEATURE=sse2,avx,avx2,fma CARGO_TARGET_DIR=target/avx2-only cargo build --release -q --bin hass-run
    run=target/avx2-only/release/hass-run
    export HASS_AVX2_ONLY=1
fi
ort=yes
python3 -c "import onnx, onnxruntime" 2>/dev/null || { ort=; echo "(onnxruntime not installed: its rows are left out)"; }
dir=$(mktemp -d)
trap 'rm -rf "$dir"' EXIT
# `threads engine batch1 batch8` from a `--bench`-style output on stdin.
figures() {
    awk -v t="$1" -v e="$2" '/batch 1:/ {b1=$NF} /batch 8:/ {b8=$NF}
        END {gsub(/\)/, "", b1); gsub(/\)/, "", b8); print t, e, b1, b8}'
}
for model in "${models[@]}"; do
    target/release/hassc "$model" --target u250 --datapath float -o "$dir/float.hass" -q > /dev/null
    target/release/hassc "$model" --target u250 -o "$dir/fixed16.hass" -q > /dev/null
    target/release/hassc "$model" --target u250 --weight-bits 8 --activation-bits 8 -o "$dir/fixed8.hass" -q > /dev/null
    echo
    echo "model: $model, $runs runs per measurement, best of $rounds rounds, $(nproc) cores${AVX2_ONLY:+, AVX2 only}"
    for round in $(seq "$rounds"); do
        for threads in 1 2; do
            for path in float fixed16 fixed8; do
                RAYON_NUM_THREADS=$threads "$run" "$dir/$path.hass" --bench "$runs" | figures "$threads" "hass-$path"
            done
            [ -z "$ort" ] || python3 scripts/bench_ort.py "$model" "$runs" "$threads" | figures "$threads" onnxruntime
        done
        target/release/examples/tract_bench "$model" "$runs" | figures 1 tract
    done | awk '
        { key = $1 " " $2; if (!(key in b1) || $3 > b1[key]) b1[key] = $3; if (!(key in b8) || $4 > b8[key]) b8[key] = $4 }
        function ratio(a, b) { return b > 0 ? sprintf("%.2f", a / b) : "-" }
        END {
            printf "%-7s %-12s %9s %9s %8s %8s %8s %8s\n", "threads", "engine", "batch 1", "batch 8", "b1/ort", "b8/ort", "b1/tract", "b8/tract"
            n = split("hass-float hass-fixed16 hass-fixed8 onnxruntime tract", engines, " ")
            for (t = 1; t <= 2; t++) for (i = 1; i <= n; i++) {
                key = t " " engines[i]
                if (!(key in b1)) continue
                o = t " onnxruntime"; r = "1 tract"
                printf "%-7s %-12s %9.1f %9.1f %8s %8s %8s %8s\n", t, engines[i], b1[key], b8[key],
                    ratio(b1[key], b1[o]), ratio(b8[key], b8[o]), ratio(b1[key], b1[r]), ratio(b8[key], b8[r])
            }
        }'
done
