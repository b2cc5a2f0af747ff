#!/usr/bin/env python3
"""How the search's accuracy figures carry over from the calibration images to unseen ones.

The search accepts a design when, on the calibration images, its top-1 drop, the share of
predictions it changes and its mean KL divergence from the dense model stay within the
budget (compiler/src/search/budget.rs). This script measures all three on both sides: for
each bundled Fashion-MNIST model (or those named), it runs the hass search at several
budgets on zcu102 with the 500 bundled training images and labels, then runs each design
and its dense model (the same widths, ranges from the same images) with `hass-run` on the
calibration images and on the 1000 bundled test images.

Columns per side: top-1 drop against the labels (points), predictions changed against the
dense model (%), mean KL divergence of the design's softmax from the dense one's (nats).

Usage: python3 scripts/guard_carryover.py [--board zcu102] [--budgets 0.5,1,1.5,2,3] [MODEL ...]
       MODEL is a bundled model's short name (cnn, mobilenet, resnet); after `cargo build --release`
"""
import argparse
import json
import os
import subprocess
import tempfile

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
HASSC = os.path.join(ROOT, "target", "release", "hassc")
HASS_RUN = os.path.join(ROOT, "target", "release", "hass-run")
INPUTS = os.path.join(ROOT, "testdata", "inputs")


def outputs(artifact, images, out):
    subprocess.run([HASS_RUN, artifact, "--input", images, "--output", out], check=True, capture_output=True)
    return np.load(out).astype(np.float64)


def softmax(z):
    e = np.exp(z - z.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def figures(dense, design, labels):
    """Top-1 drop (points), predictions changed (%), mean KL(dense || design) (nats)."""
    p, q = softmax(dense), softmax(design)
    kl = (p * (np.log(p + 1e-12) - np.log(q + 1e-12))).sum(axis=1).mean()
    drop = ((dense.argmax(1) == labels).mean() - (design.argmax(1) == labels).mean()) * 100
    return drop, (dense.argmax(1) != design.argmax(1)).mean() * 100, kl


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--board", default="zcu102")
    ap.add_argument("--budgets", default="0.5,1,1.5,2,3")
    ap.add_argument("models", nargs="*", default=["cnn", "mobilenet", "resnet"])
    args = ap.parse_args()
    calib, calib_labels = (os.path.join(INPUTS, f) for f in ("fmnist_train_500.npy", "fmnist_train_500_labels.npy"))
    test, test_labels = (os.path.join(INPUTS, f) for f in ("fmnist_test_1000.npy", "fmnist_test_1000_labels.npy"))
    labels = {calib: np.load(calib_labels), test: np.load(test_labels)}
    print(f"{'model':10} {'budget':>6} {'images/s':>9} | calibration: drop changed% KL | test: drop changed% KL")
    with tempfile.TemporaryDirectory() as tmp:
        scratch = os.path.join(tmp, "out.npy")
        for name in args.models:
            model = os.path.join(ROOT, "testdata", "models", f"fmnist_{name}_op13.onnx")
            dense = os.path.join(tmp, f"{name}.dense.hass")
            subprocess.run([HASSC, model, "--target", args.board, "-q", "-o", dense, "--calib", calib], check=True)
            reference = {images: outputs(dense, images, scratch) for images in labels}
            for budget in (float(b) for b in args.budgets.split(",")):
                design = os.path.join(tmp, f"{name}.{budget}.hass")
                report = design + ".json"
                subprocess.run([HASSC, model, "--target", args.board, "-q", "-o", design, "--report", report,
                                "--calib", calib, "--labels", calib_labels, "--max-accuracy-drop", str(budget)],
                               check=True)
                fps = json.load(open(report))["throughput_fps"]
                sides = [figures(reference[images], outputs(design, images, scratch), labels[images])
                         for images in (calib, test)]
                cells = " | ".join(f"{d:5.1f} {c:5.1f} {k:.4f}" for d, c, k in sides)
                print(f"{name:10} {budget:6.1f} {fps:9.0f} | {cells}", flush=True)


if __name__ == "__main__":
    main()
