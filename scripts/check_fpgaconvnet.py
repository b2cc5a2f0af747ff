#!/usr/bin/env python3
"""Cross-check hassc's cost model layer by layer against fpgaConvNet's (chisel backend,
linear-regression resource models fitted to synthesis), at equal folding.

For each model: `hassc --folding divisors` (factors that divide, one pixel per cycle: the
designs fpgaConvNet builds) writes a report with every layer's folding and costs; the same
conv and fully connected layers are then built as fpgaConvNet layer models at that folding
(16-bit data and weights, its defaults; the accumulator as wide as hassc's) and both are printed side by
side: DSP, LUT, FF, BRAM18, URAM and cycles per image (weights placed where hassc put
them), with the ratio hassc / fpgaConvNet, then
totals and how many layers agree within 30 %.

fpgaConvNet runs in a venv this script creates (not part of CI): fpgaconvnet-model from its
public repository at a pinned commit, without its long dependency list, plus the few
packages its layer models import, at versions that agree with its protobuf pin.

Where the two models count different things: hassc fuses the activation into the conv
stage (fpgaConvNet has a separate ReLU layer, not counted here); fpgaConvNet's
InnerProductLayer keeps its weights in BRAM whatever it is asked, so for a fully connected
layer whose weights hassc put in URAM or off chip, the BRAM column compares everything but
the weights and the URAM column is not compared.

Usage: python3 scripts/check_fpgaconvnet.py [--board u250] [--source SRC] [MODEL.onnx ...]
  default models: testdata/torchvision/{resnet18,mobilenet_v2,mobilenet_v3_small}_op13.onnx
  (scripts/export_torchvision.py); SRC: a pip source for fpgaconvnet-model (default the
  pinned commit on GitHub; a local checkout or archive of that commit works offline).
Run `cargo build --release` first.
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile

import numpy as np
import onnx
from onnx import shape_inference

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
HASSC = os.path.join(ROOT, "target", "release", "hassc")
COMMIT = "edfbeb6189acd7a1fe331d0e408bd9cc520b8eab"
SOURCE = f"git+https://github.com/AlexMontgomerie/fpgaconvnet-model@{COMMIT}"
# What its layer models import, at versions compatible with its protobuf==3.20.3 pin.
VENV_PACKAGES = [
    "numpy<2.3", "scipy", "networkx", "graphviz", "toml", "fpbinary", "tabulate", "pandas",
    "xgboost", "protobuf==3.20.3", "pyparsing<3", "onnx==1.14.1", "pydot==1.4.2",
]
VENV = os.path.join(ROOT, "target", "fpgaconvnet-venv")

# Runs inside the venv: layer descriptions (JSON on stdin) -> fpgaConvNet's estimates.
FPGACONVNET_SIDE = r"""
import json, sys
from fpgaconvnet.data_types import FixedPoint
from fpgaconvnet.models.layers import ConvolutionLayer, InnerProductLayer
out = []
for l in json.load(sys.stdin):
    acc = FixedPoint(l["acc_bits"], l["acc_bits"] // 2)
    if l["kind"] == "conv":
        layer = ConvolutionLayer(
            l["filters"], l["rows"], l["cols"], l["channels"],
            coarse_in=l["coarse_in"], coarse_out=l["coarse_out"], coarse_group=l["coarse_group"],
            kernel_rows=l["kernel"][0], kernel_cols=l["kernel"][1],
            stride_rows=l["stride"][0], stride_cols=l["stride"][1], groups=l["groups"],
            pad_top=l["pads"][0], pad_left=l["pads"][1], pad_bottom=l["pads"][2], pad_right=l["pads"][3],
            fine=l["fine"], has_bias=1, use_uram=l["uram"], stream_weights=l["stream"], acc_t=acc)
    else:
        layer = InnerProductLayer(
            l["filters"], 1, 1, l["channels"], coarse_in=l["coarse_in"], coarse_out=l["coarse_out"], has_bias=1,
            use_uram=l["uram"], stream_weights=l["stream"], acc_t=acc)
    r = layer.resource()
    bram = r["BRAM"]
    # Its InnerProductLayer keeps weights in BRAM whatever it is asked: where hassc put them
    # in URAM or off chip, compare the rest.
    weights_elsewhere = l["kind"] == "fc" and (l["uram"] or l["stream"])
    if weights_elsewhere:
        bram -= layer.weights_ram_usage
    out.append({"dsp": r["DSP"], "lut": r["LUT"], "ff": r["FF"], "bram18": bram, "uram": r.get("URAM", 0),
                "cycles": layer.latency(), "weights_elsewhere": weights_elsewhere})
json.dump(out, sys.stdout)
"""


def venv_python(source):
    python = os.path.join(VENV, "bin", "python")
    if not os.path.exists(python):
        print(f"creating {VENV} (fpgaconvnet-model from {source})", file=sys.stderr)
        subprocess.run([sys.executable, "-m", "venv", VENV], check=True)
        pip = [python, "-m", "pip", "install", "-q"]
        subprocess.run(pip + ["--no-deps", source], check=True)
        subprocess.run(pip + VENV_PACKAGES, check=True)
    return python


def accumulator_bits(fan_in, bits=16):
    """hassc's accumulator (hass_proto::fixed::accumulator_bits): no sum can overflow it.
    fpgaConvNet's layers are given the same width (its default, 32 bits, would overflow)."""
    return 2 * bits + max(fan_in - 1, 0).bit_length()


def geometry(model_path):
    """Conv and Gemm/MatMul layers of the ONNX model by node name: what fpgaConvNet needs."""
    model = shape_inference.infer_shapes(onnx.load(model_path))
    shapes = {v.name: [d.dim_value for d in v.type.tensor_type.shape.dim]
              for v in list(model.graph.value_info) + list(model.graph.input) + list(model.graph.output)}
    inits = {i.name: list(i.dims) for i in model.graph.initializer}
    layers = {}
    for n in model.graph.node:
        attrs = {a.name: onnx.helper.get_attribute_value(a) for a in n.attribute}
        if n.op_type == "Conv":
            w = inits[n.input[1]]
            _, c, h, wd = shapes[n.input[0]]
            pads = list(attrs.get("pads", [0, 0, 0, 0]))
            layers[n.name] = {
                "kind": "conv", "filters": w[0], "channels": c, "rows": h, "cols": wd,
                "acc_bits": accumulator_bits(w[1] * w[2] * w[3]),
                "kernel": w[2:4], "stride": list(attrs.get("strides", [1, 1])), "groups": attrs.get("group", 1),
                "pads": pads,
            }
        elif n.op_type in ("Gemm", "MatMul"):
            w = inits[n.input[1]]
            trans_b = attrs.get("transB", 0) if n.op_type == "Gemm" else 0
            out_f, in_f = (w[0], w[1]) if trans_b else (w[1], w[0])
            layers[n.name] = {"kind": "fc", "filters": out_f, "channels": in_f, "acc_bits": accumulator_bits(in_f)}
    return layers


def ratio(a, b):
    return a / b if b else (1.0 if a == 0 else float("inf"))


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("models", nargs="*")
    ap.add_argument("--board", default="u250")
    ap.add_argument("--source", default=SOURCE)
    args = ap.parse_args()
    models = args.models or [os.path.join(ROOT, "testdata", "torchvision", f"{m}_op13.onnx")
                             for m in ("resnet18", "mobilenet_v2", "mobilenet_v3_small")]
    for m in models:
        if not os.path.exists(m):
            sys.exit(f"no {m}; run scripts/export_torchvision.py first")
    python = venv_python(args.source)
    keys = ("dsp", "lut", "ff", "bram18", "uram", "cycles")
    within = {k: [0, 0] for k in keys}
    for path in models:
        with tempfile.TemporaryDirectory() as work:
            report = os.path.join(work, "r.json")
            subprocess.run([HASSC, path, "--target", args.board, "--folding", "divisors", "-q",
                            "-o", os.path.join(work, "m.hass"), "--report", report], check=True, stdout=subprocess.DEVNULL)
            design = json.load(open(report))
        shapes = geometry(path)
        rows, queries = [], []
        for layer in design["layers"]:
            g = shapes.get(layer["name"])
            if g is None:
                continue
            # Weights where hassc put them: URAM, or streamed from off-chip memory.
            q = dict(g, coarse_in=layer["coarse_in"], coarse_out=layer["coarse_out"],
                     coarse_group=layer["coarse_group"], fine=layer["fine"],
                     uram=layer["weights"] == "uram", stream=int(layer["weights"] == "off-chip"))
            rows.append(layer)
            queries.append(q)
        theirs = json.loads(subprocess.run([python, "-c", FPGACONVNET_SIDE], input=json.dumps(queries),
                                           capture_output=True, text=True, check=True).stdout)
        name = os.path.basename(path)
        print(f"\n## {name} on {args.board} (hassc --folding divisors), hassc / fpgaConvNet\n")
        print("| layer | folding (ci, co, g, fine), weights | " + " | ".join(keys) + " |")
        print("|---|---|" + "---|" * len(keys))
        totals = {k: [0.0, 0.0] for k in keys}
        for ours, q, fcn in zip(rows, queries, theirs):
            cells = []
            for k in keys:
                if k == "uram" and fcn["weights_elsewhere"]:
                    cells.append(f"{ours[k]:.0f} / n/a")
                    continue
                a, b = float(ours[k]), float(fcn[k])
                totals[k][0] += a
                totals[k][1] += b
                r = ratio(a, b)
                within[k][0] += abs(r - 1.0) <= 0.3
                within[k][1] += 1
                cells.append(f"{a:.0f} / {b:.0f} ({r:.2f})")
            fold = f"{q['coarse_in']}, {q['coarse_out']}, {q['coarse_group']}, {q['fine']}, {ours['weights']}"
            print(f"| {ours['name']} | {fold} | " + " | ".join(cells) + " |")
        print("| **total** | | " + " | ".join(
            f"{a:.0f} / {b:.0f} ({ratio(a, b):.2f})" for a, b in (totals[k] for k in keys)) + " |")
    print("\nlayers within 30 %: " + ", ".join(f"{k} {n}/{t} ({100.0 * n / max(t, 1):.0f} %)"
                                               for k, (n, t) in within.items()))


if __name__ == "__main__":
    main()
