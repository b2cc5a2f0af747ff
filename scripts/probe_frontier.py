#!/usr/bin/env python3
"""How fast can the bundled Fashion-MNIST models go at all within an accuracy budget?

An upper-bound probe for issue 5's bar (hass at >= 2x dense), independent of any search
strategy: it compiles many sparsity configurations with plain `hassc --sparsity-config`
(or the global flags), measures each design's top-1 drop on the 500 bundled training images
(the calibration set) with onnxruntime on the `--emit-onnx` model, and prints the fastest
design within the budget by top-1 drop alone (none of hassc's extra guards applied).

  cnn:       seeded random configurations of all five knobs (c1 weights; c2 and fc weights
             and input thresholds), --samples of them;
  mobilenet: an upper bound. Every layer whose input is signed (stem: the image; expand and
             head: a linear bottleneck's output), where an input threshold zeroes all the
             negative values, keeps only weight pruning; every other conv is made free
             (95 % of weights pruned, every input zeroed). The throughput of that design
             bounds every design that prunes the signed-input layers as much, and the
             accuracy those layers' pruning costs on its own bounds the loss from below.

Usage: python3 scripts/probe_frontier.py [--samples 200] [--seed 1] [--budget 1.0]
       (after `cargo build --release`; about 1 s per sample on a 2-core machine)
"""
import argparse
import json
import os
import random
import subprocess
import tempfile

import numpy as np
import onnxruntime as ort

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
HASSC = os.path.join(ROOT, "target", "release", "hassc")
INPUTS = os.path.join(ROOT, "testdata", "inputs")
X = np.load(os.path.join(INPUTS, "fmnist_train_500.npy"))
Y = np.load(os.path.join(INPUTS, "fmnist_train_500_labels.npy"))


def top1(model):
    sess = ort.InferenceSession(model, providers=["CPUExecutionProvider"])
    return 100.0 * float((sess.run(None, {"input": X})[0].argmax(1) == Y).mean())


def compile_design(model, tmp, flags):
    out = os.path.join(tmp, "probe")
    cmd = [HASSC, model, "--target", "zcu102", "-q", "-o", out + ".hass", "--report", out + ".json",
           "--emit-onnx", out + ".onnx", "--calib", os.path.join(INPUTS, "fmnist_train_500.npy")] + flags
    subprocess.run(cmd, check=True)
    return json.load(open(out + ".json"))["throughput_fps"], top1(out + ".onnx")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--samples", type=int, default=200)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--budget", type=float, default=1.0)
    args = ap.parse_args()
    rng = random.Random(args.seed)
    with tempfile.TemporaryDirectory() as tmp:
        for name in ["cnn", "mobilenet"]:
            model = os.path.join(ROOT, "testdata", "models", f"fmnist_{name}_op13.onnx")
            subprocess.run([HASSC, model, "--target", "zcu102", "-q", "-o", os.path.join(tmp, "d.hass"),
                            "--report", os.path.join(tmp, "d.json")], check=True)
            dense_fps = json.load(open(os.path.join(tmp, "d.json")))["throughput_fps"]
            dense_top1 = top1(model)
            if name == "cnn":
                probe_cnn(model, tmp, rng, args, dense_fps, dense_top1)
            else:
                bound_mobilenet(model, tmp, dense_fps, dense_top1)


def probe_cnn(model, tmp, rng, args, dense_fps, dense_top1):
    config = os.path.join(tmp, "config.json")
    best, fastest = None, 0.0
    for _ in range(args.samples):
        layers = {
            "/c1/c1.0/Conv": {"weight_sparsity": rng.choice([0.0, 0.0, 0.1, 0.15, 0.2])},
            "/c2/c2.0/Conv": {"weight_sparsity": rng.uniform(0.2, 0.65), "activation_threshold": rng.uniform(0.15, 0.45)},
            "/fc/Gemm": {"weight_sparsity": rng.uniform(0.1, 0.8), "activation_threshold": rng.uniform(0.2, 0.8)},
        }
        json.dump({"layers": layers}, open(config, "w"))
        fps, acc = compile_design(model, tmp, ["--sparsity-config", config])
        fastest = max(fastest, fps)
        if dense_top1 - acc <= args.budget + 1e-9 and (best is None or fps > best[0]):
            best = (fps, dense_top1 - acc, layers)
    print(f"cnn: dense {dense_fps:.0f} images/s; {args.samples} random designs, fastest at any accuracy "
          f"{fastest:.0f} ({fastest / dense_fps:.2f}x)")
    if best:
        print(f"cnn: fastest within {args.budget} points: {best[0]:.0f} images/s = {best[0] / dense_fps:.2f}x dense "
              f"(drop {best[1]:.1f}): {json.dumps(best[2])}")


def bound_mobilenet(model, tmp, dense_fps, dense_top1):
    layers = [l["name"] for l in json.load(open(os.path.join(tmp, "d.json")))["layers"]
              if l["op"].startswith("Conv") or l["op"] == "Dense"]
    signed = [n for n in layers if any(k in n for k in ["/stem/", "/expand/expand.0/", "/head/"])]
    config = os.path.join(tmp, "config.json")
    for s in [0.0, 0.1, 0.2, 0.3, 0.5, 0.8]:
        own = {n: {"weight_sparsity": s} for n in signed if s > 0}
        free = {n: {"weight_sparsity": 0.95, "activation_threshold": 1e9} for n in layers if n not in signed}
        json.dump({"layers": {**free, **own}}, open(config, "w"))
        bound, _ = compile_design(model, tmp, ["--sparsity-config", config])
        json.dump({"layers": own}, open(config, "w"))
        _, acc = compile_design(model, tmp, ["--sparsity-config", config])
        print(f"mobilenet: signed-input layers pruned {s:.0%}: at most {bound:.0f} images/s = "
              f"{bound / dense_fps:.2f}x dense (dense {dense_fps:.0f}); that pruning alone costs "
              f"{dense_top1 - acc:.1f} points")

if __name__ == "__main__":
    main()
