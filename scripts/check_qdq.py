#!/usr/bin/env python3
"""Does onnxruntime, running the QDQ model `hassc --emit-onnx` writes for a fixed-point
design, predict what `hass-run` computes? For each bundled Fashion-MNIST model and width:
compile (calibrated on the 500 bundled training images, no search), run the artifact with
hass-run and the emitted ONNX with onnxruntime on the 1000 test images, and print the share
of images with the same top-1 and the largest output difference in steps of the output
format (float accumulation in onnxruntime can round a value across a tie).

Usage: python3 scripts/check_qdq.py [--bits 16 8 4] [--models cnn resnet mobilenet]
Needs numpy, onnx and onnxruntime; builds nothing (run `cargo build --release` first).
"""
import argparse
import os
import subprocess
import sys
import tempfile

import numpy as np
import onnx
import onnxruntime as ort

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BIN = os.path.join(ROOT, "target", "release")


def run(cmd):
    result = subprocess.run(cmd, capture_output=True, text=True)
    if result.returncode != 0:
        sys.exit(f"{' '.join(cmd)} failed:\n{result.stderr}")
    return result.stdout


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--bits", type=int, nargs="+", default=[16, 8])
    parser.add_argument("--models", nargs="+", default=["cnn", "resnet", "mobilenet"])
    args = parser.parse_args()
    data = os.path.join(ROOT, "testdata")
    calib = os.path.join(data, "inputs", "fmnist_train_500.npy")
    test = os.path.join(data, "inputs", "fmnist_test_1000.npy")
    x = np.load(test)
    print(f"onnxruntime {ort.__version__}, {len(x)} test images")
    print(f"{'model':<18} {'bits':>4} {'opset':>5} {'top-1 agree %':>14} {'max diff (steps)':>17} {'differing outputs':>18}")
    worst = 100.0
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.models:
            model = os.path.join(data, "models", f"fmnist_{name}_op13.onnx")
            for bits in args.bits:
                hass = os.path.join(tmp, f"{name}{bits}.hass")
                qdq = os.path.join(tmp, f"{name}{bits}.onnx")
                ours = os.path.join(tmp, f"{name}{bits}.npy")
                run([os.path.join(BIN, "hassc"), model, "--target", "zcu102", "--calib", calib, "--search", "none",
                     "--weight-bits", str(bits), "--activation-bits", str(bits), "-o", hass, "--emit-onnx", qdq, "-q"])
                run([os.path.join(BIN, "hass-run"), hass, "--input", test, "--output", ours])
                y_hass = np.load(ours)
                session = ort.InferenceSession(qdq, providers=["CPUExecutionProvider"])
                y_ort = session.run(None, {"input": x})[0]
                agree = 100.0 * np.mean(y_hass.argmax(1) == y_ort.argmax(1))
                # The output's step: the finest difference between its values.
                values = np.unique(y_hass)
                step = np.min(np.diff(values)) if len(values) > 1 else 1.0
                diff = np.abs(y_hass - y_ort)
                opset = onnx.load(qdq).opset_import[0].version
                print(f"fmnist_{name:<12} {bits:>4} {opset:>5} {agree:>14.1f} {diff.max() / step:>17.1f} "
                      f"{np.count_nonzero(diff > step / 2):>10} of {diff.size}")
                worst = min(worst, agree)
    print(f"lowest agreement: {worst:.1f} %")


if __name__ == "__main__":
    main()
