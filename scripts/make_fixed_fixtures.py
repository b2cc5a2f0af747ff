#!/usr/bin/env python3
"""Golden files for the fixed-point datapath, from the independent reference.

For every per-op fixture model (built here with the onnx package: odd shapes, every layer
kind and activation, grouped, dilated and strided windows, thresholds) and for the bundled
Fashion-MNIST models, this compiles an artifact with hassc at 16 and 8 bits and runs
scripts/fixed_reference.py on inputs; `cargo test` (runtime/tests/fixed_golden.rs) then
checks that the runtime reproduces every output bit for bit. The per-op fixtures are
calibrated on inputs a quarter the size of the test inputs, so the test inputs saturate
the input and most streams.

Writes testdata/fixed/: models/*.onnx, NAME.bBITS.hass, NAME.x.npy (inputs),
NAME.bBITS.y.npy (reference outputs). Rerun after a change to the artifact format or to the quantizer:

    cargo build --release && python3 scripts/make_fixed_fixtures.py
"""
import os
import subprocess
import sys

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OUT = os.path.join(ROOT, "testdata", "fixed")
HASSC = os.path.join(ROOT, "target", "release", "hassc")
RNG = np.random.default_rng(12)


def tensor(name, shape, scale=0.5):
    return numpy_helper.from_array((RNG.standard_normal(shape) * scale).astype(np.float32), name)


def model(name, input_shape, nodes, inits, output="y", opset=13):
    graph = helper.make_graph(
        nodes,
        name,
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1] + input_shape)],
        [helper.make_tensor_value_info(output, TensorProto.FLOAT, None)],
        inits,
    )
    m = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    m.ir_version = 8
    # Shape inference gives the output its shape; then the model must check.
    m = onnx.shape_inference.infer_shapes(m, strict_mode=True)
    onnx.checker.check_model(m)
    return m


def fixtures():
    """(name, model, extra hassc flags) per fixture."""
    n = helper.make_node
    yield "conv_grouped_dilated_relu", model(
        "g",
        [6, 9, 11],
        [
            n("Conv", ["x", "w", "b"], ["c"], group=3, dilations=[2, 1], strides=[2, 1], pads=[2, 1, 1, 0]),
            n("Relu", ["c"], ["y"]),
        ],
        [tensor("w", [9, 2, 3, 3]), tensor("b", [9])],
    ), []
    yield "depthwise_clip_threshold", model(
        "d",
        [5, 8, 7],
        [
            # The threshold applies to computed inputs (never the image): put a layer first.
            n("Conv", ["x", "v"], ["p"]),
            n("Conv", ["p", "w"], ["c"], group=5, pads=[1, 1, 1, 1]),
            n("Clip", ["c", "lo", "hi"], ["y"]),
        ],
        [
            tensor("v", [5, 5, 1, 1]),
            tensor("w", [5, 1, 3, 3]),
            numpy_helper.from_array(np.float32(0.0), "lo"),
            numpy_helper.from_array(np.float32(1.5), "hi"),
        ],
    ), ["--activation-threshold", "0.1"]
    yield "dense_sigmoid", model(
        "s",
        [3, 5, 5],
        [n("Flatten", ["x"], ["f"]), n("Gemm", ["f", "w", "b"], ["g"], transB=1), n("Sigmoid", ["g"], ["y"])],
        [tensor("w", [7, 75], 0.3), tensor("b", [7])],
    ), []
    yield "squeeze_excite_hardswish", model(
        "se",
        [4, 6, 6],
        [
            n("Conv", ["x", "w"], ["c"], pads=[1, 1, 1, 1]),
            n("HardSwish", ["c"], ["h"]),
            n("GlobalAveragePool", ["h"], ["p"]),
            n("Conv", ["p", "w2", "b2"], ["q"]),
            n("HardSigmoid", ["q"], ["g"], alpha=0.2, beta=0.5),
            n("Mul", ["h", "g"], ["y"]),
        ],
        [tensor("w", [4, 4, 3, 3]), tensor("w2", [4, 4, 1, 1]), tensor("b2", [4])],
        opset=14,
    ), []
    yield "pools_concat_add", model(
        "p",
        [3, 9, 10],
        [
            n("AveragePool", ["x"], ["a"], kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1], ceil_mode=1, count_include_pad=1),
            n("MaxPool", ["x"], ["m"], kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1], ceil_mode=1),
            n("AveragePool", ["x"], ["e"], kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1], ceil_mode=1),
            n("Concat", ["a", "m"], ["c"], axis=1),
            n("Conv", ["c", "w"], ["k"]),
            n("Add", ["k", "e"], ["s"]),
            n("Relu", ["s"], ["y"]),
        ],
        [tensor("w", [3, 6, 1, 1])],
    ), []
    yield "unfolded_batchnorm_then_sigmoid", model(
        "bn",
        [4, 5, 6],
        [
            n("Conv", ["x", "w"], ["c"]),
            n("Relu", ["c"], ["r"]),
            n("BatchNormalization", ["r", "g", "b", "mu", "var"], ["n"]),
            n("MaxPool", ["n"], ["m"], kernel_shape=[2, 2], strides=[2, 2]),
            n("Sigmoid", ["m"], ["y"]),
        ],
        [
            tensor("w", [4, 4, 1, 1]),
            tensor("g", [4]),
            tensor("b", [4]),
            tensor("mu", [4]),
            numpy_helper.from_array(np.abs(RNG.standard_normal(4)).astype(np.float32) + 0.5, "var"),
        ],
    ), []


def run(cmd):
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)


def golden(name, onnx_path, x, calib, flags, bits):
    tag = f"{name}.b{bits}"
    artifact = os.path.join(OUT, f"{tag}.hass")
    calib_path = os.path.join(OUT, "calib.tmp.npy")
    np.save(calib_path, calib)
    run([HASSC, onnx_path, "--target", "u250", "-o", artifact, "--calib", calib_path, "--search", "none",
         "--weight-bits", str(bits), "--activation-bits", str(bits)] + flags)
    os.remove(calib_path)
    inputs = os.path.join(OUT, f"{name}.x.npy")
    np.save(inputs, x)
    run([sys.executable, os.path.join(ROOT, "scripts", "fixed_reference.py"), artifact, inputs,
         os.path.join(OUT, f"{tag}.y.npy")])
    print(tag)


def main():
    os.makedirs(os.path.join(OUT, "models"), exist_ok=True)
    for name, m, flags in fixtures():
        path = os.path.join(OUT, "models", f"{name}.onnx")
        onnx.save(m, path)
        shape = [d.dim_value for d in m.graph.input[0].type.tensor_type.shape.dim][1:]
        x = RNG.standard_normal([3] + shape).astype(np.float32)
        calib = (RNG.standard_normal([8] + shape) * 0.25).astype(np.float32)
        for bits in (16, 8):
            golden(name, path, x, calib, flags, bits)
    images = np.load(os.path.join(ROOT, "testdata", "inputs", "fmnist_test_1000.npy"))[:16]
    calib = np.load(os.path.join(ROOT, "testdata", "inputs", "fmnist_train_500.npy"))
    for net in ("cnn", "resnet", "mobilenet"):
        path = os.path.join(ROOT, "testdata", "models", f"fmnist_{net}_op13.onnx")
        for bits in (16, 8):
            golden(f"fmnist_{net}_op13", path, images, calib, [], bits)


if __name__ == "__main__":
    main()
