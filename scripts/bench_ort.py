#!/usr/bin/env python3
"""onnxruntime's CPU throughput on an ONNX model at batch 1 and 8, measured as
`hass-run --bench` measures it (one warm-up run, then RUNS timed runs on a fixed input),
printed in the same form. Used by scripts/bench_runtime.sh.

Usage: python3 scripts/bench_ort.py MODEL.onnx RUNS THREADS

The batch dimension is made symbolic first (torchvision's opset-13 exports fix it at 1).
"""
import sys
import time

import numpy as np
import onnx
import onnxruntime as ort


def main():
    path, runs, threads = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    model = onnx.load(path)
    for value in list(model.graph.input) + list(model.graph.output):
        value.type.tensor_type.shape.dim[0].dim_param = "N"
    del model.graph.value_info[:]  # inferred shapes with the old batch
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    session = ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
    fed = session.get_inputs()[0]
    image = [d for d in fed.shape[1:]]
    for batch in (1, 8):
        x = np.random.default_rng(0).uniform(-1, 1, (batch, *image)).astype(np.float32)
        session.run(None, {fed.name: x})
        times = []
        for _ in range(runs):
            start = time.perf_counter()
            session.run(None, {fed.name: x})
            times.append(time.perf_counter() - start)
        mean, best = runs * batch / sum(times), batch / min(times)
        print(f"onnxruntime: batch {batch}: {mean:.1f} images/s ({runs} runs; best run {best:.1f})")


if __name__ == "__main__":
    main()
