#!/usr/bin/env python3
"""Train the three bundled Fashion-MNIST models and write every file under testdata/ they need.

Produces (paths relative to the repository root):
  testdata/models/fmnist_{cnn,resnet,mobilenet}_op13.onnx  legacy exporter, opset 13, symbolic batch,
                                                           BatchNorm kept (no constant folding)
  testdata/models/fmnist_{cnn,resnet,mobilenet}_op18.onnx  default (dynamo) exporter, opset 18, batch 1
  testdata/inputs/fmnist_test_1000.npy         first 1000 test images, float32 [1000,1,28,28]
  testdata/inputs/fmnist_test_1000_labels.npy  their labels, int64 [1000]
  testdata/golden/<model>.npy                  onnxruntime outputs of each model on those images
  testdata/models/accuracy.json                test accuracy of each trained model (10k images)

Normalisation: pixel / 255, then (x - 0.2860) / 0.3530 (Fashion-MNIST training mean and std).
Data: Debian package `dataset-fashion-mnist` (/usr/share/datasets/fashion-mnist). Seeded; CPU.

Usage: python3 scripts/make_fmnist_models.py [--epochs N]
"""
import argparse
import gzip
import json
import os
import sys

import numpy as np
import onnxruntime as ort
import torch
import torch.nn as nn
import torch.nn.functional as F

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DATA = "/usr/share/datasets/fashion-mnist"
MEAN, STD = 0.2860, 0.3530


def read_idx(name):
    with gzip.open(os.path.join(DATA, name), "rb") as f:
        raw = f.read()
    ndim = raw[3]
    dims = [int.from_bytes(raw[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim)]
    return np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * ndim).reshape(dims)


def load_split(prefix):
    images = read_idx(f"{prefix}-images-idx3-ubyte.gz").astype(np.float32) / 255.0
    images = ((images - MEAN) / STD)[:, None, :, :].astype(np.float32)
    labels = read_idx(f"{prefix}-labels-idx1-ubyte.gz").astype(np.int64)
    return images, labels


def conv_bn(cin, cout, k, stride=1, groups=1):
    return nn.Sequential(
        nn.Conv2d(cin, cout, k, stride, k // 2, groups=groups, bias=False), nn.BatchNorm2d(cout)
    )


class PlainCnn(nn.Module):
    """Conv-BN-ReLU-MaxPool twice, then Gemm."""

    def __init__(self):
        super().__init__()
        self.c1, self.c2 = conv_bn(1, 16, 3), conv_bn(16, 32, 3)
        self.fc = nn.Linear(32 * 7 * 7, 10)

    def forward(self, x):
        x = F.max_pool2d(F.relu(self.c1(x)), 2)
        x = F.max_pool2d(F.relu(self.c2(x)), 2)
        return self.fc(torch.flatten(x, 1))


class BasicBlock(nn.Module):
    def __init__(self, cin, cout, stride):
        super().__init__()
        self.a, self.b = conv_bn(cin, cout, 3, stride), conv_bn(cout, cout, 3)
        self.short = conv_bn(cin, cout, 1, stride) if stride != 1 or cin != cout else None

    def forward(self, x):
        y = self.b(F.relu(self.a(x)))
        return F.relu(y + (self.short(x) if self.short is not None else x))


class TinyResNet(nn.Module):
    """Residual Adds, a strided 1x1 shortcut, global average pooling."""

    def __init__(self):
        super().__init__()
        self.stem = conv_bn(1, 16, 3)
        self.blocks = nn.Sequential(BasicBlock(16, 16, 1), BasicBlock(16, 32, 2), BasicBlock(32, 64, 2))
        self.fc = nn.Linear(64, 10)

    def forward(self, x):
        x = self.blocks(F.relu(self.stem(x)))
        return self.fc(torch.flatten(F.adaptive_avg_pool2d(x, 1), 1))


class SqueezeExcite(nn.Module):
    def __init__(self, c, r):
        super().__init__()
        self.reduce, self.expand = nn.Conv2d(c, r, 1), nn.Conv2d(r, c, 1)

    def forward(self, x):
        s = F.adaptive_avg_pool2d(x, 1)
        return x * F.hardsigmoid(self.expand(F.relu(self.reduce(s))))


class InvertedResidual(nn.Module):
    def __init__(self, cin, hidden, cout, stride, act, se):
        super().__init__()
        self.expand = conv_bn(cin, hidden, 1)
        self.dw = conv_bn(hidden, hidden, 3, stride, groups=hidden)
        self.se = SqueezeExcite(hidden, max(8, hidden // 4)) if se else nn.Identity()
        self.project = conv_bn(hidden, cout, 1)
        self.act = act
        self.residual = stride == 1 and cin == cout

    def forward(self, x):
        y = self.act(self.dw(self.act(self.expand(x))))
        y = self.project(self.se(y))
        return x + y if self.residual else y


class TinyMobileNetV3(nn.Module):
    """Depthwise convs, HardSwish, ReLU6 and a squeeze-excite block."""

    def __init__(self):
        super().__init__()
        self.stem = conv_bn(1, 16, 3)
        self.blocks = nn.Sequential(
            InvertedResidual(16, 32, 24, 2, nn.ReLU6(), se=False),
            InvertedResidual(24, 72, 24, 1, nn.ReLU6(), se=False),
            InvertedResidual(24, 96, 40, 2, nn.Hardswish(), se=True),
            InvertedResidual(40, 120, 40, 1, nn.Hardswish(), se=True),
        )
        self.head = conv_bn(40, 128, 1)
        self.fc = nn.Linear(128, 10)

    def forward(self, x):
        x = self.blocks(F.hardswish(self.stem(x)))
        x = F.hardswish(self.head(x))
        return self.fc(torch.flatten(F.adaptive_avg_pool2d(x, 1), 1))


MODELS = {"cnn": PlainCnn, "resnet": TinyResNet, "mobilenet": TinyMobileNetV3}


def train(model, images, labels, epochs, seed):
    torch.manual_seed(seed)
    opt = torch.optim.Adam(model.parameters(), lr=2e-3)
    sched = torch.optim.lr_scheduler.OneCycleLR(
        opt, max_lr=4e-3, total_steps=epochs * ((len(images) + 127) // 128)
    )
    x_all, y_all = torch.from_numpy(images), torch.from_numpy(labels)
    for epoch in range(epochs):
        model.train()
        perm = torch.randperm(len(images))
        for i in range(0, len(images), 128):
            idx = perm[i: i + 128]
            loss = F.cross_entropy(model(x_all[idx]), y_all[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
        print(f"  epoch {epoch + 1}/{epochs}: last batch loss {loss.item():.3f}", flush=True)
    model.eval()


@torch.no_grad()
def accuracy(model, images, labels):
    correct = 0
    for i in range(0, len(images), 1000):
        correct += (model(torch.from_numpy(images[i: i + 1000])).argmax(1).numpy() == labels[i: i + 1000]).sum()
    return correct / len(images)


def export(model, name):
    example = torch.zeros(1, 1, 28, 28)
    op13 = os.path.join(ROOT, "testdata/models", f"{name}_op13.onnx")
    torch.onnx.export(
        model, (example,), op13, dynamo=False, opset_version=13,
        # No constant folding: BatchNormalization nodes and Constant inputs stay in the
        # graph, so hassc's own BatchNorm folding and constant handling are exercised.
        do_constant_folding=False,
        input_names=["input"], output_names=["logits"], dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}},
    )
    op18 = os.path.join(ROOT, "testdata/models", f"{name}_op18.onnx")
    program = torch.onnx.export(model, (example,), dynamo=True, opset_version=18, external_data=False)
    program.save(op18, external_data=False)
    return [op13, op18]


def onnxruntime_outputs(path, images):
    sess = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    inp = sess.get_inputs()[0]
    batch = inp.shape[0] if isinstance(inp.shape[0], int) else len(images)
    outs = [sess.run(None, {inp.name: images[i: i + batch]})[0] for i in range(0, len(images), batch)]
    return np.concatenate(outs).astype(np.float32)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--epochs", type=int, default=4)
    ap.add_argument("--only", choices=sorted(MODELS), action="append")
    args = ap.parse_args()
    torch.set_num_threads(os.cpu_count() or 1)

    train_x, train_y = load_split("train")
    test_x, test_y = load_split("t10k")
    np.save(os.path.join(ROOT, "testdata/inputs/fmnist_test_1000.npy"), test_x[:1000])
    np.save(os.path.join(ROOT, "testdata/inputs/fmnist_test_1000_labels.npy"), test_y[:1000])

    acc_path = os.path.join(ROOT, "testdata/models/accuracy.json")
    accuracies = json.load(open(acc_path)) if os.path.exists(acc_path) else {}
    for seed, (short, cls) in enumerate(MODELS.items()):
        if args.only and short not in args.only:
            continue
        name = f"fmnist_{short}"
        print(f"training {name}", flush=True)
        torch.manual_seed(seed)
        model = cls()
        train(model, train_x, train_y, args.epochs, seed)
        acc = float(accuracy(model, test_x, test_y))
        print(f"  {name}: test accuracy {acc:.4f} on 10000 images", flush=True)
        if acc < 0.88:
            sys.exit(f"{name} reached only {acc:.4f}; the bundled models must reach 0.88")
        accuracies[name] = round(acc, 4)
        for path in export(model, name):
            golden = onnxruntime_outputs(path, test_x[:1000])
            ref = accuracy(model, test_x[:1000], test_y[:1000])
            top1 = float((golden.argmax(1) == test_y[:1000]).mean())
            print(f"  {os.path.basename(path)}: onnxruntime top-1 {top1:.3f} on 1000 (torch {ref:.3f})")
            stem = os.path.splitext(os.path.basename(path))[0]
            np.save(os.path.join(ROOT, "testdata/golden", f"{stem}.npy"), golden)
    with open(acc_path, "w") as f:
        json.dump(accuracies, f, indent=2, sort_keys=True)
        f.write("\n")


if __name__ == "__main__":
    main()
