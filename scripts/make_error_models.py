#!/usr/bin/env python3
"""Write the small hand-made ONNX fixtures of the error-path and external-data tests.

  testdata/models/invalid/lstm.onnx       Relu -> LSTM -> Squeeze: two unsupported nodes
  testdata/models/external/fmnist_cnn_op18_ext.onnx (+ .onnx.data)
                                          fmnist_cnn_op18 with its weights in an external
                                          data file (golden: testdata/golden/fmnist_cnn_op18.npy)

Usage: python3 scripts/make_error_models.py  (after scripts/make_fmnist_models.py)
"""
import os

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def lstm_model():
    seq, batch, inp, hidden = 5, 1, 4, 3
    rng = np.random.default_rng(0)
    w = numpy_helper.from_array(rng.standard_normal((1, 4 * hidden, inp)).astype(np.float32), "W")
    r = numpy_helper.from_array(rng.standard_normal((1, 4 * hidden, hidden)).astype(np.float32), "R")
    nodes = [
        helper.make_node("Relu", ["x"], ["x_relu"], name="pre_relu"),
        helper.make_node("LSTM", ["x_relu", "W", "R"], ["y"], name="encoder_lstm", hidden_size=hidden),
        helper.make_node("Squeeze", ["y"], ["out"], name="squeeze_dirs"),
    ]
    graph = helper.make_graph(
        nodes, "lstm",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [seq, batch, inp])],
        [helper.make_tensor_value_info("out", TensorProto.FLOAT, None)],
        initializer=[w, r],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    onnx.save(model, os.path.join(ROOT, "testdata/models/invalid/lstm.onnx"))


def external_copy():
    src = os.path.join(ROOT, "testdata/models/fmnist_cnn_op18.onnx")
    model = onnx.load(src)
    onnx.save_model(
        model, os.path.join(ROOT, "testdata/models/external/fmnist_cnn_op18_ext.onnx"),
        save_as_external_data=True, all_tensors_to_one_file=True,
        location="fmnist_cnn_op18_ext.onnx.data", size_threshold=64,
    )


if __name__ == "__main__":
    lstm_model()
    external_copy()
