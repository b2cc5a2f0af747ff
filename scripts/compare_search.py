#!/usr/bin/env python3
"""Issue 5's table: the sparsity search on the bundled Fashion-MNIST models.

For each testdata/models/fmnist_*_op13.onnx, on zcu102, with the 500 bundled training images
and labels as calibration set and a budget of 1.0 point:
  - dense: no sparsity at all (`hassc MODEL --target zcu102`);
  - global-greedy: the predecessor's one weight and one activation threshold, at 16 bits
    and at the lowest uniform width whose dense model stays within the budget (that
    width's own loss taken out of the budget its search gets);
  - uniform: the same fraction pruned in every layer, blind to the hardware;
  - hass: hassc's per-layer search (thresholds, weight reconstruction, operand widths).
With --ablation, hass also without reconstruction and widths (magnitude pruning only), with
reconstruction only, and with widths only.
The bits column gives the widths of the design's layers' weights (lowest-highest); recon
the layers whose kept weights were re-fitted.
Each design's top-1 on the 1000 bundled test images is measured by onnxruntime on the
`--emit-onnx` model; throughput is the report's modelled steady state; seconds are the
whole `hassc` run (import, search, final calibration, artifact).

Usage: python3 scripts/compare_search.py [--budget 1.0] [--board zcu102] [--ablation]
       (after `cargo build --release`)
"""
import argparse
import glob
import json
import os
import subprocess
import tempfile
import time

import numpy as np
import onnxruntime as ort

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
HASSC = os.path.join(ROOT, "target", "release", "hassc")
INPUTS = os.path.join(ROOT, "testdata", "inputs")


def top1(model, x, y):
    sess = ort.InferenceSession(model, providers=["CPUExecutionProvider"])
    return 100.0 * float((sess.run(None, {"input": x})[0].argmax(1) == y).mean())


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--budget", type=float, default=1.0)
    ap.add_argument("--board", default="zcu102")
    ap.add_argument("--ablation", action="store_true", help="hass without reconstruction and/or widths too")
    ap.add_argument("--models", default="fmnist_*", help="glob of model names (before _op13.onnx)")
    args = ap.parse_args()
    calib = os.path.join(INPUTS, "fmnist_train_500.npy")
    labels = os.path.join(INPUTS, "fmnist_train_500_labels.npy")
    x = np.load(os.path.join(INPUTS, "fmnist_test_1000.npy"))
    y = np.load(os.path.join(INPUTS, "fmnist_test_1000_labels.npy"))
    print(f"{'model':<18} {'design':<18} {'bits':>5} {'recon':>5} {'images/s':>10} {'x dense':>8} "
          f"{'calib top-1':>11} {'test top-1':>10} {'test drop':>9} {'evals':>6} {'seconds':>8}")
    with tempfile.TemporaryDirectory() as tmp:
        for model in sorted(glob.glob(os.path.join(ROOT, f"testdata/models/{args.models}_op13.onnx"))):
            name = os.path.basename(model)[:-len("_op13.onnx")]

            def run(design, bits, search, budget=None, flags=()):
                out = os.path.join(tmp, f"{name}.{design}")
                cmd = [HASSC, model, "--target", args.board, "-q", "-o", out + ".hass", "--report", out + ".json",
                       "--emit-onnx", out + ".onnx", "--weight-bits", str(bits), "--activation-bits", str(bits)]
                if search is not None:
                    cmd += ["--calib", calib, "--labels", labels, "--search", search,
                            "--max-accuracy-drop", str(args.budget if budget is None else budget), *flags]
                start = time.time()
                subprocess.run(cmd, check=True)
                seconds = time.time() - start
                report = json.load(open(out + ".json"))
                search_block = report.get("search") or {}
                layers = search_block.get("layers") or []
                widths = sorted({l["weight_bits"] for l in layers}) or [bits]
                chosen = str(widths[0]) if len(widths) == 1 else f"{widths[0]}-{widths[-1]}"
                recon = sum(1 for l in layers if l["reconstructed"])
                return dict(bits=chosen, recon=recon, fps=report["throughput_fps"], calib=search_block.get("final", {}).get("top1"),
                            test=top1(out + ".onnx", x, y), evals=search_block.get("evaluations", 0),
                            seconds=seconds)

            rows = {"dense": run("dense", 16, None)}
            # The lowest uniform width whose dense model stays within the budget on the
            # calibration images; its own loss is taken out of the budget its search gets.
            reference = run("dense-16-calib", 16, "none")["calib"]
            low, low_budget = 16, args.budget
            for bits in (8, 4):
                lost = reference - run(f"dense-{bits}-calib", bits, "none")["calib"]
                if lost > args.budget:
                    break
                low, low_budget = bits, args.budget - max(lost, 0.0)
            rows["global-greedy"] = run("global-greedy", 16, "global-greedy")
            if low < 16:
                rows[f"global-greedy-{low}b"] = run(f"global-greedy-{low}b", low, "global-greedy", low_budget)
            rows["uniform"] = run("uniform", 16, "uniform")
            if args.ablation:
                off = ("--reconstruct", "off", "--search-widths", "off")
                rows["hass-magnitude"] = run("hass-magnitude", 16, "hass", flags=off)
                rows["hass+recon"] = run("hass+recon", 16, "hass", flags=("--search-widths", "off"))
                rows["hass+widths"] = run("hass+widths", 16, "hass", flags=("--reconstruct", "off"))
            rows["hass"] = run("hass", 16, "hass")
            dense = rows["dense"]
            for design, r in rows.items():
                calib_text = f"{r['calib']:11.1f}" if r["calib"] is not None else f"{'-':>11}"
                print(f"{name:<18} {design:<18} {r['bits']:>5} {r['recon']:5d} {r['fps']:10.0f} {r['fps'] / dense['fps']:8.2f} "
                      f"{calib_text} {r['test']:10.1f} {dense['test'] - r['test']:9.1f} {r['evals']:6d} "
                      f"{r['seconds']:8.1f}")
            greedy = max(r["fps"] for d, r in rows.items() if d.startswith("global-greedy"))
            print(f"{name:<18} hass / better global-greedy: {rows['hass']['fps'] / greedy:.2f}x, "
                  f"hass / uniform: {rows['hass']['fps'] / rows['uniform']['fps']:.2f}x")

if __name__ == "__main__":
    main()
