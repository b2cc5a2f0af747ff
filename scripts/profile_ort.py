#!/usr/bin/env python3
"""Where onnxruntime spends its time on a model, per kind of layer, to set beside
`hass-run OUT.hass --bench N --profile --profile-batch B` (same machine, same minute).

Usage: scripts/profile_ort.py MODEL.onnx [BATCH] [RUNS] [THREADS] [--layers]

Runs the model on the CPU provider (THREADS intra-op threads, default 1) with its profiler
on: a few warm-up runs, then RUNS timed ones (default 20) on standard-normal input of the
model's shape at batch BATCH (default 1). Prints the mean kernel time per image of each
kind: convolutions by kernel size and whether depthwise or pointwise, the rest by operator
(onnxruntime's own names: its NCHWc reorders show up as ReorderInput/ReorderOutput). With
--layers, also each convolution shape's total. The profiler's overhead is in the figures:
compare shares and ratios, not totals, with `scripts/bench_ort.py`'s throughput.
"""
import collections
import json
import os
import sys
import tempfile

import numpy as np
import onnxruntime as ort


def kind(args):
    """A layer kind in hass-run's words, from the profiler's record of one node."""
    op = args["op_name"]
    if op != "Conv":
        return op
    weight = args["input_type_shape"][1]["float"]
    if weight[1] == 1 and weight[0] > 1:
        return f"conv {weight[2]}x{weight[3]} depthwise"
    if weight[2:] == [1, 1]:
        return "conv 1x1"
    return f"conv {weight[2]}x{weight[3]}, {weight[1]} -> {weight[0]} channels"


def main():
    flags = [a for a in sys.argv[1:] if a.startswith("--")]
    rest = [a for a in sys.argv[1:] if not a.startswith("--")]
    if not rest or set(flags) - {"--layers"}:
        sys.exit(__doc__)
    model = rest[0]
    batch, runs, threads = (int(rest[i]) if len(rest) > i else d for i, d in [(1, 1), (2, 20), (3, 1)])
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.enable_profiling = True
    options.profile_file_prefix = os.path.join(tempfile.mkdtemp(), "ort")
    session = ort.InferenceSession(model, options, providers=["CPUExecutionProvider"])
    source = session.get_inputs()[0]
    shape = [batch] + [d if isinstance(d, int) else 1 for d in source.shape[1:]]
    x = np.random.default_rng(0).standard_normal(shape).astype(np.float32)
    for _ in range(5 + runs):
        session.run(None, {source.name: x})
    path = session.end_profiling()
    with open(path) as f:
        events = json.load(f)
    os.remove(path)
    times, records = collections.defaultdict(list), {}
    for e in events:
        if e.get("cat") == "Node" and e["name"].endswith("_kernel_time"):
            times[e["name"]].append(e["dur"])
            records[e["name"]] = e["args"]
    per_image = {n: sum(d[-runs:]) / runs / 1000 / batch for n, d in times.items()}
    by_kind = collections.Counter()
    for n, ms in per_image.items():
        by_kind[kind(records[n])] += ms
    total = sum(by_kind.values())
    print(f"onnxruntime {ort.__version__}, {model}, batch {batch}, {threads} thread(s), {runs} runs")
    print(f"{'kind':44s} {'ms/image':>9s} {'share':>7s}")
    for k, ms in by_kind.most_common():
        print(f"{k:44s} {ms:9.3f} {100 * ms / total:6.1f}%")
    print(f"{'total':44s} {total:9.3f}")
    if "--layers" in flags:
        shapes = collections.Counter()
        for n, ms in per_image.items():
            a = records[n]
            if a["op_name"] == "Conv":
                w, o = a["input_type_shape"][1]["float"], a["output_type_shape"][0]["float"]
                shapes[f"{kind(a)} ({w[1]} -> {w[0]}) -> {o[2]}x{o[3]}"] += ms
        for k, ms in shapes.most_common():
            print(f"  {k:60s} {ms:.3f}")


if __name__ == "__main__":
    main()
