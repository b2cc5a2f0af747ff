#!/usr/bin/env python3
"""Issue 5's table: the sparsity search on the bundled Fashion-MNIST models.

For each testdata/models/fmnist_*_op13.onnx, on zcu102, with the 500 bundled training images
and labels as calibration set and a budget of 1.0 point:
  - dense: no sparsity at all (`hassc MODEL --target zcu102`);
  - global-greedy: the predecessor's one weight and one activation threshold;
  - hass: hassc's per-layer search.
Each design's top-1 on the 1000 bundled test images is measured by onnxruntime on the
`--emit-onnx` model; throughput is the report's modelled steady state; seconds are the
whole `hassc` run (import, search, final calibration, artifact).

Usage: python3 scripts/compare_search.py [--budget 1.0] [--board zcu102]
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
    args = ap.parse_args()
    calib = os.path.join(INPUTS, "fmnist_train_500.npy")
    labels = os.path.join(INPUTS, "fmnist_train_500_labels.npy")
    x = np.load(os.path.join(INPUTS, "fmnist_test_1000.npy"))
    y = np.load(os.path.join(INPUTS, "fmnist_test_1000_labels.npy"))
    print(f"{'model':<18} {'design':<14} {'images/s':>10} {'x dense':>8} {'calib top-1':>11} "
          f"{'test top-1':>10} {'test drop':>9} {'evals':>6} {'seconds':>8}")
    with tempfile.TemporaryDirectory() as tmp:
        for model in sorted(glob.glob(os.path.join(ROOT, "testdata/models/fmnist_*_op13.onnx"))):
            name = os.path.basename(model)[:-len("_op13.onnx")]
            rows = {}
            for design in ["dense", "global-greedy", "hass"]:
                out = os.path.join(tmp, f"{name}.{design}")
                cmd = [HASSC, model, "--target", args.board, "-q", "-o", out + ".hass", "--report", out + ".json",
                       "--emit-onnx", out + ".onnx"]
                if design != "dense":
                    cmd += ["--calib", calib, "--labels", labels, "--search", design,
                            "--max-accuracy-drop", str(args.budget)]
                start = time.time()
                subprocess.run(cmd, check=True)
                seconds = time.time() - start
                report = json.load(open(out + ".json"))
                search = report.get("search", {})
                rows[design] = (report["throughput_fps"], search.get("final", {}).get("top1"),
                                top1(out + ".onnx", x, y), search.get("evaluations", 0), seconds)
            dense_fps, _, dense_test, _, _ = rows["dense"]
            for design, (fps, calib_top1, test, evals, seconds) in rows.items():
                calib_text = f"{calib_top1:11.1f}" if calib_top1 is not None else f"{'-':>11}"
                print(f"{name:<18} {design:<14} {fps:10.0f} {fps / dense_fps:8.2f} {calib_text} "
                      f"{test:10.1f} {dense_test - test:9.1f} {evals:6d} {seconds:8.1f}")
            print(f"{name:<18} hass / global-greedy: {rows['hass'][0] / rows['global-greedy'][0]:.2f}x")


if __name__ == "__main__":
    main()
