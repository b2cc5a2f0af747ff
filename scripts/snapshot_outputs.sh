#!/usr/bin/env bash
# Compile every bundled model three ways (dense; pruned 70 % and calibrated; searched with a
# fixed seed) and keep every file hassc writes, so two builds can be compared byte for byte:
#
#   scripts/snapshot_outputs.sh /tmp/before            # with the old build
#   scripts/snapshot_outputs.sh /tmp/after             # with the new one
#   diff -r /tmp/before /tmp/after                     # must print nothing
#
# A refactor that must not change behaviour is checked this way (issue 10). The only
# run-dependent figure, the search's wall time, is zeroed in the reports and blanked in the
# tables. HASSC and HASS_RUN may name binaries built elsewhere (e.g. from a git worktree of
# the commit before the change).
set -euo pipefail
cd "$(dirname "$0")/.."
out=${1:?usage: scripts/snapshot_outputs.sh OUTDIR}
hassc=${HASSC:-target/release/hassc}
hass_run=${HASS_RUN:-target/release/hass-run}
mkdir -p "$out"
calib=testdata/inputs/fmnist_train_500.npy
labels=testdata/inputs/fmnist_train_500_labels.npy
test_images=testdata/inputs/fmnist_test_1000.npy

# Zero the one field that depends on the machine's speed.
strip_wall() { python3 - "$1" <<'EOF'
import json, sys
path = sys.argv[1]
report = json.load(open(path))
if report.get("search"):
    report["search"]["wall_seconds"] = 0
open(path, "w").write(json.dumps(report, indent=1, sort_keys=True) + "\n")
EOF
}

for model in testdata/models/fmnist_*_op1[38].onnx; do
  name=$(basename "$model" .onnx)
  "$hassc" inspect "$model" > "$out/$name.inspect.txt"
  "$hassc" inspect "$model" --json > "$out/$name.inspect.json"
  for mode in dense pruned searched; do
    case $mode in
      dense) flags=() ;;
      pruned) flags=(--weight-sparsity 0.7 --calib "$calib") ;;
      searched) flags=(--calib "$calib" --labels "$labels" --seed 7 --pareto "$out/$name.$mode.pareto.json") ;;
    esac
    # The searches are the slow part; the op18 models are the same networks as op13.
    if [[ $mode == searched && $name == *op18 ]]; then continue; fi
    "$hassc" "$model" --target zcu102 "${flags[@]}" -o "$out/$name.$mode.hass" \
      --report "$out/$name.$mode.json" --emit-onnx "$out/$name.$mode.onnx" -q
    "$hassc" "$model" --target zcu102 "${flags[@]}" -o "$out/$name.$mode.again.hass" \
      | grep -v '^wrote ' | sed -E 's/ evaluations in [0-9.]+ s / evaluations in - s /' > "$out/$name.$mode.table.txt" || true
    rm -f "$out/$name.$mode.again.hass"
    strip_wall "$out/$name.$mode.json"
    "$hassc" inspect "$out/$name.$mode.hass" > "$out/$name.$mode.hass.inspect.txt"
    "$hass_run" "$out/$name.$mode.hass" --input "$test_images" --output "$out/$name.$mode.logits.npy"
    "$hass_run" "$out/$name.$mode.hass" --input "$calib" --simulate --report "$out/$name.$mode.sim.json" > /dev/null
  done
done
echo "wrote $(ls "$out" | wc -l) files to $out"
