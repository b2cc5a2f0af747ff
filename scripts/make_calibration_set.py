#!/usr/bin/env python3
"""Write the bundled calibration set: the first 500 images of Fashion-MNIST's training split
(normalised as the bundled models expect) and their labels, from the Debian package
`dataset-fashion-mnist` (offline).

    testdata/inputs/fmnist_train_500.npy         float32 [500, 1, 28, 28]
    testdata/inputs/fmnist_train_500_labels.npy  int64 [500]

Usage: python3 scripts/make_calibration_set.py
"""
import gzip
import os

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DATA = "/usr/share/datasets/fashion-mnist"
MEAN, STD = 0.2860, 0.3530
N = 500


def main():
    raw = gzip.open(os.path.join(DATA, "train-images-idx3-ubyte.gz")).read()
    x = np.frombuffer(raw, dtype=np.uint8, offset=16).reshape(-1, 1, 28, 28)[:N].astype(np.float32) / 255.0
    raw = gzip.open(os.path.join(DATA, "train-labels-idx1-ubyte.gz")).read()
    y = np.frombuffer(raw, dtype=np.uint8, offset=8)[:N].astype(np.int64)
    out = os.path.join(ROOT, "testdata", "inputs")
    np.save(os.path.join(out, "fmnist_train_500.npy"), ((x - MEAN) / STD).astype(np.float32))
    np.save(os.path.join(out, "fmnist_train_500_labels.npy"), y)
    print(f"wrote {N} training images and labels (classes: {np.bincount(y, minlength=10).tolist()})")


if __name__ == "__main__":
    main()
