#!/usr/bin/env python3
"""Sparsity end to end on the bundled Fashion-MNIST models (issue 4's figures).

For each testdata/models/fmnist_*.onnx: compile dense and at --weight-sparsity 0.7 (or
--sparsity S) for zcu102, calibrated on 500 training images; then
  - weights section size, dense vs sparse artifact;
  - the sparse artifact run by hass-run vs the --emit-onnx model run by onnxruntime on the
    1000 bundled test images (max error relative to the largest output), and both top-1s;
  - modelled images/s, dense vs sparse, and the simulation on the test images (model vs
    simulation, network and worst stage taking >= 10 % of II).

Usage: python3 scripts/check_sparsity.py [--sparsity S]   (after `cargo build --release`)
"""
import argparse
import glob
import json
import os
import struct
import subprocess
import tempfile

import numpy as np
import onnxruntime as ort

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BIN = os.path.join(ROOT, "target", "release")


def weights_bytes(path):
    data = open(path, "rb").read()
    count = struct.unpack("<I", data[12:16])[0]
    for i in range(count):
        kind, _, _, length = struct.unpack("<IIQQ", data[16 + 24 * i: 40 + 24 * i])
        if kind == 2:
            return length
    raise ValueError("no weights section")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sparsity", type=float, default=0.7)
    args = ap.parse_args()
    images = os.path.join(ROOT, "testdata/inputs/fmnist_test_1000.npy")
    labels = np.load(os.path.join(ROOT, "testdata/inputs/fmnist_test_1000_labels.npy"))
    x = np.load(images)
    print(f"{'model':<22} {'weights dense':>13} {'sparse':>8} {'ratio':>6} {'max rel err':>11} "
          f"{'top-1 ort':>9} {'top-1 ours':>10} {'dense fps':>10} {'sparse fps':>10} {'gain':>5} "
          f"{'sim fps':>10} {'net err':>7} {'stage err':>9}")
    # The bundled calibration set (scripts/make_calibration_set.py): the first 500 training
    # images, normalised.
    calib = os.path.join(ROOT, "testdata/inputs/fmnist_train_500.npy")
    with tempfile.TemporaryDirectory() as tmp:
        for model in sorted(glob.glob(os.path.join(ROOT, "testdata/models/fmnist_*.onnx"))):
            name = os.path.basename(model)[:-5]
            t = lambda s: os.path.join(tmp, f"{name}{s}")
            run = lambda *a: subprocess.run(list(a), check=True, capture_output=True)
            run(f"{BIN}/hassc", model, "--target", "zcu102", "-q", "-o", t(".dense.hass"), "--report", t(".dense.json"))
            run(f"{BIN}/hassc", model, "--target", "zcu102", "-q", "-o", t(".hass"), "--report", t(".json"),
                "--weight-sparsity", str(args.sparsity), "--calib", calib, "--emit-onnx", t(".pruned.onnx"))
            run(f"{BIN}/hass-run", t(".hass"), "--input", images, "--output", t(".out.npy"),
                "--simulate", "--report", t(".sim.json"))
            ours = np.load(t(".out.npy"))
            sess = ort.InferenceSession(t(".pruned.onnx"), providers=["CPUExecutionProvider"])
            ref = sess.run(None, {"input": x})[0]
            err = float(np.abs(ours - ref).max() / np.abs(ref).max())
            dense, sparse, sim = (json.load(open(t(s))) for s in (".dense.json", ".json", ".sim.json"))
            stage_err = max(abs(a["cycles"] / b["cycles"] - 1) for a, b in zip(sparse["layers"], sim["layers"])
                            if b["cycles"] and a["cycles"] >= 0.1 * sparse["ii_cycles"])
            wd, ws = weights_bytes(t(".dense.hass")), weights_bytes(t(".hass"))
            print(f"{name:<22} {wd:>13} {ws:>8} {wd / ws:6.2f} {err:11.2e} "
                  f"{(ref.argmax(1) == labels).mean():9.3f} {(ours.argmax(1) == labels).mean():10.3f} "
                  f"{dense['throughput_fps']:10.0f} {sparse['throughput_fps']:10.0f} "
                  f"{sparse['throughput_fps'] / dense['throughput_fps']:5.2f} {sim['throughput_fps']:10.0f} "
                  f"{100 * (sparse['throughput_fps'] / sim['throughput_fps'] - 1):+6.2f}% {100 * stage_err:8.2f}%",
                  flush=True)


if __name__ == "__main__":
    main()
