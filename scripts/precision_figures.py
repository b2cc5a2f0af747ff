#!/usr/bin/env python3
"""Float vs 16 vs 8 vs 4 bits, per model: top-1 (against the labels, and agreement with the
float model), modelled images/s, DSP, LUT, BRAM18 and artifact size, as a markdown table.

Each model is compiled with hassc (`--calib` on the calibration images, no sparsity
search) for the board, and its artifact run by hass-run on the test images.

usage: scripts/precision_figures.py [--board zcu102] [MODEL.onnx ...]
  Without models: the bundled Fashion-MNIST ones (opset 13), with the bundled images and
  labels. With models that are not Fashion-MNIST (e.g. torchvision exports from
  scripts/export_torchvision.py), pass --images X.npy --calib C.npy (no labels: agreement only).

Needs numpy; run `cargo build --release` first.
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BIN = os.path.join(ROOT, "target", "release")
DATA = os.path.join(ROOT, "testdata")


def compile_and_run(model, board, calib, images, flags, work):
    artifact, report, out = (os.path.join(work, n) for n in ("m.hass", "r.json", "y.npy"))
    subprocess.run([os.path.join(BIN, "hassc"), model, "--target", board, "-o", artifact, "--report", report,
                    "--calib", calib, "--search", "none", "-q"] + flags, check=True)
    subprocess.run([os.path.join(BIN, "hass-run"), artifact, "--input", images, "--output", out], check=True,
                   stdout=subprocess.DEVNULL)
    r = json.load(open(report))
    return np.load(out), r, os.path.getsize(artifact)


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("models", nargs="*")
    p.add_argument("--board", default="zcu102")
    p.add_argument("--images", default=os.path.join(DATA, "inputs", "fmnist_test_1000.npy"))
    p.add_argument("--labels", default=None)
    p.add_argument("--calib", default=os.path.join(DATA, "inputs", "fmnist_train_500.npy"))
    args = p.parse_args()
    models = args.models or [os.path.join(DATA, "models", f"fmnist_{n}_op13.onnx") for n in ("cnn", "resnet", "mobilenet")]
    labels_path = args.labels or (os.path.join(DATA, "inputs", "fmnist_test_1000_labels.npy") if not args.models else None)
    labels = np.load(labels_path) if labels_path else None
    variants = [("float", ["--datapath", "float"])] + [
        (f"{b} bits", ["--weight-bits", str(b), "--activation-bits", str(b)]) for b in (16, 8, 4)
    ]
    print(f"board {args.board}; images {os.path.basename(args.images)}; calibration {os.path.basename(args.calib)}\n")
    print("| model | datapath | top-1 % | agreement with float % | images/s | DSP | LUT | BRAM18 | artifact bytes |")
    print("|---|---|---|---|---|---|---|---|---|")
    with tempfile.TemporaryDirectory() as work:
        for model in models:
            name = os.path.splitext(os.path.basename(model))[0]
            float_top1 = None
            for label, flags in variants:
                y, r, size = compile_and_run(model, args.board, args.calib, args.images, flags, work)
                top1 = y.reshape(len(y), -1).argmax(1)
                if float_top1 is None:
                    float_top1 = top1
                acc = f"{100 * (top1 == labels).mean():.1f}" if labels is not None else "-"
                agree = f"{100 * (top1 == float_top1).mean():.1f}"
                res = r["resources"]
                print(f"| {name} | {label} | {acc} | {agree} | {r['throughput_fps']:.0f} | {res['dsp']['used']:.0f} | "
                      f"{res['lut']['used']:.0f} | {res['bram18']['used']:.0f} | {size} |", flush=True)


if __name__ == "__main__":
    sys.exit(main())
