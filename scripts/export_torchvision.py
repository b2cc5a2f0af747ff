#!/usr/bin/env python3
"""Export torchvision CNNs (random weights, seeded; no download) to ONNX for benchmarks and
manual checks. Not committed; `cargo test` does not need them.

Writes testdata/torchvision/<model>_op13.onnx (legacy exporter, opset 13, batch 1) and
<model>_op18.onnx (default exporter, opset 18, single file), plus
mobilenet_v3_small_op18_ext.onnx with its weights in an external .onnx.data file.

Usage: python3 scripts/export_torchvision.py [MODEL ...]
"""
import os
import sys

import torch
import torchvision

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OUT = os.path.join(ROOT, "testdata", "torchvision")
MODELS = ["resnet18", "resnet50", "mobilenet_v2", "mobilenet_v3_small", "mobilenet_v3_large"]


def main():
    names = sys.argv[1:] or MODELS
    os.makedirs(OUT, exist_ok=True)
    example = torch.zeros(1, 3, 224, 224)
    for name in names:
        torch.manual_seed(0)
        model = getattr(torchvision.models, name)(weights=None).eval()
        with torch.no_grad():
            # Random BatchNorm statistics, so folding is exercised with non-trivial values.
            for m in model.modules():
                if isinstance(m, torch.nn.BatchNorm2d):
                    m.running_mean.uniform_(-0.1, 0.1)
                    m.running_var.uniform_(0.5, 1.5)
        path13 = os.path.join(OUT, f"{name}_op13.onnx")
        torch.onnx.export(model, (example,), path13, dynamo=False, opset_version=13,
                          input_names=["input"], output_names=["logits"])
        program = torch.onnx.export(model, (example,), dynamo=True, opset_version=18, external_data=False)
        program.save(os.path.join(OUT, f"{name}_op18.onnx"), external_data=False)
        if name == "mobilenet_v3_small":
            program.save(os.path.join(OUT, f"{name}_op18_ext.onnx"), external_data=True)
        print(f"exported {name}", flush=True)


if __name__ == "__main__":
    main()
