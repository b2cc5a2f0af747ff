#!/usr/bin/env python3
"""A second, independent implementation of hassc's fixed-point datapath.

Written from ARCHITECTURE.md ("Datapath"), the schema (proto/schema/artifact.proto) and the
packed-tensor layout (proto/src/packed.rs's module text), not from the Rust code: numpy
int64 where sums provably fit, Python integers everywhere else. It reads a format-3 `.hass`
artifact and an input `.npy`, and writes the outputs the accelerator computes, as float32.
`cargo test` compares the runtime with these outputs bit for bit
(testdata/fixed/README.md says which files it made).

usage: scripts/fixed_reference.py ARTIFACT.hass INPUT.npy OUTPUT.npy

Needs numpy and grpcio-tools (to compile the schema; nothing is fetched at run time).
"""
import importlib
import math
import os
import struct
import sys
import tempfile

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def load_schema():
    """The schema's Python module, compiled from artifact.proto into a temporary folder."""
    from grpc_tools import protoc

    out = tempfile.mkdtemp()
    schema = os.path.join(ROOT, "proto", "schema")
    if protoc.main(["protoc", f"-I{schema}", f"--python_out={out}", "artifact.proto"]) != 0:
        sys.exit("compiling artifact.proto failed")
    sys.path.insert(0, out)
    return importlib.import_module("artifact_pb2")


def read_container(data):
    """(version, schedule bytes, weights bytes) of a .hass file (CRCs are the runtime's job)."""
    if data[:8] != b"HASSART\0":
        sys.exit("not a .hass file")
    version, count = struct.unpack_from("<II", data, 8)
    sections = {}
    for i in range(count):
        kind, _crc, offset, length = struct.unpack_from("<IIQQ", data, 16 + 24 * i)
        sections[kind] = data[offset : offset + length]
    return version, sections[1], sections[2]


# ---- values and narrowing -------------------------------------------------------------


def round_shift(v, shift):
    """v * 2^-shift, rounded half to even (shift > 0); exact for shift <= 0. Python ints."""
    if shift <= 0:
        return v << -shift
    floor = v >> shift
    rest = v - (floor << shift)
    half = 1 << (shift - 1)
    return floor + 1 if rest > half or (rest == half and floor & 1) else floor


def saturate(v, bits):
    lo, hi = -(1 << (bits - 1)), (1 << (bits - 1)) - 1
    return min(max(v, lo), hi)


def narrow(v, frac_from, fmt):
    """A wide value at frac_from into format (bits, frac): round half to even, saturate."""
    return saturate(round_shift(v, frac_from - fmt[1]), fmt[0])


def quantize(x, fmt):
    """A real into a format: saturate(round_half_even(x * 2^frac)), exact in float64."""
    scaled = float(x) * 2.0 ** fmt[1]
    if math.isnan(scaled):
        return 0
    if math.isinf(scaled):
        return saturate(-(1 << 80) if scaled < 0 else 1 << 80, fmt[0])
    return saturate(int(round(scaled)), fmt[0])  # Python's round() is half to even.


def for_range(bits, m):
    """The format of `bits` with the most fractional bits that holds magnitude m."""
    if not (m > 0 and math.isfinite(m)):
        return (bits, 40)
    e = 0
    while 2.0**e < m:
        e += 1
    while e > -200 and 2.0 ** (e - 1) >= m:
        e -= 1
    return (bits, min(max(bits - 1 - e, -32), 40))


def vectorize(f):
    return np.frompyfunc(f, 1, 1)


# ---- the activation unit --------------------------------------------------------------

SIGMOID = [int(round(65536.0 / (1.0 + math.exp(-i / 64.0)))) for i in range(513)]


def activation_unit(kind, layer_act, pre, out):
    """A function wide value (Python int), its frac -> output integer."""

    def relu(v, frac):
        return narrow(max(v, 0), frac, out)

    def identity(v, frac):
        return narrow(v, frac, out)

    if kind is None:
        return identity
    if kind == "relu":
        return relu
    if kind == "clip":
        lo, hi = quantize(layer_act.clip.min, out), quantize(layer_act.clip.max, out)
        return lambda v, frac: min(max(narrow(v, frac, out), lo), hi)

    def working(v, frac):
        # The product's binary point, raised to at least 0 so 1 is representable.
        return (v << -frac, 0) if frac < 0 else (v, frac)

    if kind == "hard_sigmoid":
        alpha, beta = layer_act.hard_sigmoid.alpha, layer_act.hard_sigmoid.beta
        afmt = for_range(16, abs(float(np.float32(alpha))))
        a = quantize(alpha, afmt)

        def hard_sigmoid(v, frac):
            p = narrow(v, frac, pre)
            t, w = working(p * a, pre[1] + afmt[1])
            b = int(round(float(beta) * 2.0**w))
            return narrow(min(max(t + b, 0), 1 << w), w, out)

        return hard_sigmoid
    if kind == "hard_swish":

        def hard_swish(v, frac):
            p = narrow(v, frac, pre)
            t, w = working(p * 5461, pre[1] + 15)
            g = min(max(t + int(round(0.5 * 2.0**w)), 0), 1 << w)
            return narrow(p * g, pre[1] + w, out)

        return hard_swish
    if kind == "sigmoid":

        def sigmoid(v, frac):
            p = narrow(v, frac, pre)
            x = round_shift(p, pre[1] - 11)
            u = min(abs(x), 8 << 11)
            i, r = u >> 5, u & 31
            lo, hi = SIGMOID[i], SIGMOID[min(i + 1, 512)]
            y = lo * 32 + (hi - lo) * r
            return narrow((1 << 21) - y if x < 0 else y, 21, out)

        return sigmoid
    sys.exit(f"unknown activation {kind}")


def act_kind(a):
    return None if a is None or not a.HasField("kind") else a.WhichOneof("kind")


# ---- weights ----------------------------------------------------------------------------


def unpack(data, count, bits):
    """`count` two's-complement values of `bits`, LSB first in one bit stream."""
    if count == 0:
        return []
    n = int.from_bytes(bytes(data), "little")
    mask, sign = (1 << bits) - 1, 1 << (bits - 1)
    return [((n >> (i * bits)) & mask ^ sign) - sign for i in range(count)]


def packed_len(count, bits):
    return (count * bits + 7) // 8


def int_tensor(ref, weights):
    data = weights[ref.byte_offset : ref.byte_offset + ref.byte_length]
    count = int(np.prod(ref.shape)) if len(ref.shape) else 1
    rows, bits = ref.shape[0] if len(ref.shape) else 1, ref.bits
    out = [0] * count
    if ref.encoding == 0:  # dense
        out = unpack(data, count, bits)
    elif ref.encoding == 1:  # bitmap, then the non-zeros
        m = (count + 7) // 8
        positions = [i for i in range(count) if data[i // 8] >> (i % 8) & 1]
        for i, v in zip(positions, unpack(data[m:], len(positions), bits)):
            out[i] = v
    elif ref.encoding == 2:  # run length: count, skips, values
        (e,) = struct.unpack_from("<I", data, 0)
        pos = 0
        for skip, v in zip(data[4 : 4 + e], unpack(data[4 + e :], e, bits)):
            pos += skip
            out[pos] = v
            pos += 1
    elif ref.encoding == 3:  # CSR: row starts, columns, values
        starts = struct.unpack_from(f"<{rows + 1}I", data, 0)
        nnz = starts[-1]
        cols = struct.unpack_from(f"<{nnz}I", data, 4 * (rows + 1))
        values = unpack(data[4 * (rows + 1) + 4 * nnz :], nnz, bits)
        width = count // rows
        for r in range(rows):
            for k in range(starts[r], starts[r + 1]):
                out[r * width + cols[k]] = values[k]
    return np.array(out, dtype=np.int64).reshape(tuple(ref.shape))


# ---- layers -------------------------------------------------------------------------------


def threshold(q, t, fmt):
    """Inputs with q <= floor(t * 2^frac) read as zero."""
    if t is None:
        return q
    limit = math.floor(float(np.float32(t)) * 2.0 ** fmt[1])
    return np.where(q <= limit, 0, q)


def apply(unit, wide, frac):
    """The activation unit over an array of wide values at `frac` (scalar or per channel)."""
    flat = wide.astype(object).ravel()
    fracs = np.broadcast_to(np.asarray(frac), wide.shape).ravel()
    return np.array([unit(int(v), int(f)) for v, f in zip(flat, fracs)], dtype=object).reshape(wide.shape)


def conv(x, c, weight, groups):
    """Exact int64 convolution of one image x [C, H, W] (sums fit: at most 54 bits)."""
    kh, kw = c.kernel
    sh, sw = c.stride
    dh, dw = c.dilation
    top, left, bottom, right = c.pads
    xp = np.pad(x, ((0, 0), (top, bottom), (left, right)))
    cin, h, w = xp.shape
    oh = (h - dh * (kh - 1) - 1) // sh + 1
    ow = (w - dw * (kw - 1) - 1) // sw + 1
    cout = weight.shape[0]
    ipg, opg = cin // groups, cout // groups
    out = np.zeros((cout, oh, ow), dtype=np.int64)
    for g in range(groups):
        cols = np.empty((ipg, kh, kw, oh, ow), dtype=np.int64)
        for ky in range(kh):
            for kx in range(kw):
                ys, xs = ky * dh, kx * dw
                cols[:, ky, kx] = xp[g * ipg : (g + 1) * ipg, ys : ys + sh * (oh - 1) + 1 : sh, xs : xs + sw * (ow - 1) + 1 : sw]
        wg = weight[g * opg : (g + 1) * opg].reshape(opg, -1)
        out[g * opg : (g + 1) * opg] = (wg @ cols.reshape(ipg * kh * kw, oh * ow)).reshape(opg, oh, ow)
    return out


def pool_windows(x, p, oh, ow):
    """Per output position: (the values inside the window, the count with padding, which
    stops at the padded extent)."""
    kh, kw = p.kernel
    sh, sw = p.stride
    dh, dw = p.dilation
    top, left, bottom, right = p.pads
    c, h, w = x.shape
    for oy in range(oh):
        for ox in range(ow):
            ys = [oy * sh - top + ky * dh for ky in range(kh)]
            xs = [ox * sw - left + kx * dw for kx in range(kw)]
            inside_y = [y for y in ys if 0 <= y < h]
            inside_x = [xx for xx in xs if 0 <= xx < w]
            padded = sum(1 for y in ys if y < h + bottom) * sum(1 for xx in xs if xx < w + right)
            yield oy, ox, x[:, inside_y][:, :, inside_x].reshape(c, -1), padded


def round_div(n, d):
    """n / d rounded half to even (d > 0), Python ints."""
    floor, rest = divmod(n, d)
    return floor + 1 if 2 * rest > d or (2 * rest == d and floor & 1) else floor


def average(total, count, frac_from, out):
    shift = out[1] - frac_from
    n, d = (total << shift, count) if shift >= 0 else (total, count << -shift)
    return saturate(round_div(n, d), out[0])


def broadcast(a, b):
    return np.broadcast_arrays(a.astype(object), b.astype(object))


def run_layer(layer, pb, values, formats, weights):
    kind = layer.WhichOneof("op")
    fx = layer.fixed
    out = (fx.output.bits, fx.output.frac)
    pre = (fx.pre_activation.bits, fx.pre_activation.frac) if fx.HasField("pre_activation") else out
    xs = [values[i] for i in layer.inputs]
    fs = [formats[i] for i in layer.inputs]
    x, f = xs[0], fs[0]
    if kind in ("conv", "dense", "scale_shift"):
        op = getattr(layer, kind)
        w_ref, b_ref = (op.scale, op.shift) if kind == "scale_shift" else (op.weight, op.bias)
        weight, bias = int_tensor(w_ref, weights), int_tensor(b_ref, weights)
        fracs = np.array(list(fx.weight_frac))
        if kind == "conv":
            acc = conv(threshold(x, op.input_threshold if op.HasField("input_threshold") else None, f), op, weight, op.groups)
            shape = (-1, 1, 1)
        elif kind == "dense":
            xt = threshold(x, op.input_threshold if op.HasField("input_threshold") else None, f)
            acc, shape = weight @ xt, (-1,)
        else:
            shape = (-1,) + (1,) * (x.ndim - 1)
            acc = x * weight.reshape(shape)
        acc = acc.astype(object) + bias.reshape(shape).astype(object)
        unit = activation_unit(act_kind(op.activation), op.activation, pre, out)
        return apply(unit, acc, np.broadcast_to((f[1] + fracs).reshape(shape), acc.shape)).astype(np.int64), out
    if kind == "eltwise":
        op = layer.eltwise
        (a, fa), (b, fb) = (xs[0], fs[0]), (xs[1], fs[1])
        if op.kind == 1:  # add: both at the finer binary point
            frac = max(fa[1], fb[1])
            a, b = broadcast(a.astype(object) * (1 << (frac - fa[1])), b.astype(object) * (1 << (frac - fb[1])))
            wide = a + b
        else:
            a, b = broadcast(a, b)
            wide, frac = a * b, fa[1] + fb[1]
        unit = activation_unit(act_kind(op.activation), op.activation, pre, out)
        return apply(unit, wide, frac).astype(np.int64), out
    if kind == "activation":
        unit = activation_unit(act_kind(layer.activation), layer.activation, f, out)
        return apply(unit, x, f[1]).astype(np.int64), out
    if kind == "pool":
        p = layer.pool
        _, oh, ow = layer.output.shape
        result = np.zeros((x.shape[0], oh, ow), dtype=np.int64)
        for oy, ox, inside, padded in pool_windows(x, p, oh, ow):
            for ch in range(x.shape[0]):
                vals = [int(v) for v in inside[ch]]
                if p.kind == 1:
                    result[ch, oy, ox] = narrow(max(vals), f[1], out)
                else:
                    count = padded if p.count_include_pad else len(vals)
                    result[ch, oy, ox] = average(sum(vals), max(count, 1), f[1], out)
        return result, out
    if kind == "global_average_pool":
        c = x.shape[0]
        flat = x.reshape(c, -1)
        res = np.array([average(int(sum(int(v) for v in flat[i])), flat.shape[1], f[1], out) for i in range(c)])
        shape = tuple(layer.output.shape)
        return res.reshape(shape), out
    if kind == "concat":
        parts = [apply(lambda v, fr: narrow(v, fr, out), xi, fi[1]).astype(np.int64) for xi, fi in zip(xs, fs)]
        return np.concatenate(parts, axis=0), out
    if kind == "reshape":
        return x.reshape(tuple(layer.output.shape)), out
    sys.exit(f"unknown layer kind {kind}")


def run(schedule, weights, images):
    fin = (schedule.input_format.bits, schedule.input_format.frac)
    outputs = []
    for image in images:
        values = [np.array(vectorize(lambda v: quantize(v, fin))(image.astype(np.float64)), dtype=np.int64)]
        formats = [fin]
        for layer in schedule.layers:
            v, f = run_layer(layer, schedule, values, formats, weights)
            values.append(v)
            formats.append(f)
        o = schedule.outputs[0]
        outputs.append((values[o].astype(np.float64) * 2.0 ** -formats[o][1]).astype(np.float32))
    return np.stack(outputs)


def main():
    if len(sys.argv) != 4:
        sys.exit(__doc__)
    artifact, inputs, output = sys.argv[1:]
    pb = load_schema()
    version, schedule_bytes, weights = read_container(open(artifact, "rb").read())
    schedule = pb.Schedule()
    schedule.ParseFromString(schedule_bytes)
    if not schedule.HasField("input_format"):
        sys.exit(f"{artifact} is a float artifact (format {version}); compile it with --datapath fixed")
    images = np.load(inputs).astype(np.float32)
    np.save(output, run(schedule, weights, images))


if __name__ == "__main__":
    main()
