//! The fixed-point datapath's layers (ARCHITECTURE.md, "Datapath"). Values arrive as `f32`
//! holding exact fixed-point numbers of their format; each kernel computes in integers (or
//! in `f64` where that is exact: the convolution's and the fully connected layer's
//! accumulation, see [`FixedChannels`]) and writes the exact values of its output format.

use super::conv::{accumulate, parallel_gemm};
use super::{eltwise, pool, thresholded};
use crate::plan::{EltwiseKind, Fixed, FixedChannels, Format, Layer, Op, Plan, PoolKind};
use hass_proto::fixed::{average, requantize};
use ndarray::{ArrayView2, ArrayViewMut2};
use rayon::prelude::*;

/// `x`'s integer in format `f` (exact: `x` is a value of that format, at most 16 bits; the
/// conversion goes through `i64`, one instruction, where `f64 -> i128` is a library call).
#[inline]
fn int(x: f32, f: Format) -> i128 {
    (x as f64 * f.scale()) as i64 as i128
}

/// Compute fixed-point `layer` on `inputs` (one batch per input value) into `out`.
pub(crate) fn run_layer(plan: &Plan, layer: &Layer, fixed: &Fixed, inputs: &[&[f32]], batch: usize, out: &mut [f32]) {
    let formats: Vec<Format> =
        layer.inputs.iter().map(|&v| plan.value_format(v).expect("validated: every value has a format")).collect();
    let in_shape = |k: usize| plan.value_shape(layer.inputs[k]);
    let in_len = |k: usize| in_shape(k).iter().product::<usize>();
    let image = |k: usize, n: usize| &inputs[k][n * in_len(k)..][..in_len(k)];
    let out_shape = &layer.output_shape;
    let out_len: usize = out_shape.iter().product();
    let unit = &fixed.unit;
    let to_out = |v: i128, frac: i32| unit.out().to_f32(unit.apply(v, frac));
    let per_image = |out: &mut [f32], f: &(dyn Fn(usize, &mut [f32]) + Sync)| {
        out.par_chunks_mut(out_len).enumerate().for_each(|(n, o)| f(n, o));
    };
    let hw = |s: &[usize]| [s[1], s[2]];
    let channels = || fixed.channels.as_ref().expect("validated: weighted layers have channels");
    let x = formats[0];
    match &layer.op {
        Op::Conv(conv) => per_image(out, &|n, o| {
            let input: Vec<f64> = thresholded(image(0, n), conv.input_threshold).iter().map(|&v| v as f64).collect();
            let mut acc = vec![0.0f64; out_len];
            accumulate(conv, &channels().weight, &input, hw(in_shape(0)), &mut acc, hw(out_shape));
            let pixels = out_len / conv.c_out;
            epilogue(channels(), x, &acc, pixels, o, &to_out);
        }),
        Op::Dense(dense) => {
            let input: Vec<f64> = thresholded(inputs[0], dense.input_threshold).iter().map(|&v| v as f64).collect();
            let mut acc = vec![0.0f64; batch * dense.outputs];
            let xs = ArrayView2::from_shape((batch, dense.inputs), &input).expect("validated input shape");
            let w = ArrayView2::from_shape((dense.outputs, dense.inputs), &channels().weight[..])
                .expect("validated weight shape");
            let ys = ArrayViewMut2::from_shape((batch, dense.outputs), &mut acc[..]).expect("validated output shape");
            // Y^T = W X^T: one column per image, as the parallel GEMM splits columns.
            parallel_gemm(w, xs.t(), ys.reversed_axes());
            for (acc, o) in acc.chunks_exact(dense.outputs).zip(out.chunks_exact_mut(dense.outputs)) {
                epilogue(channels(), x, acc, 1, o, &to_out);
            }
        }
        Op::ScaleShift { .. } => per_image(out, &|n, o| {
            let ch = channels();
            let pixels = out_len / ch.bias.len();
            let products: Vec<f64> = image(0, n)
                .chunks_exact(pixels)
                .zip(&ch.weight)
                .flat_map(|(plane, &s)| plane.iter().map(move |&v| v as f64 * s))
                .collect();
            epilogue(ch, x, &products, pixels, o, &to_out);
        }),
        Op::Eltwise { kind, .. } => per_image(out, &|n, o| {
            let y = formats[1];
            let (a, b) = ((image(0, n), in_shape(0)), (image(1, n), in_shape(1)));
            match kind {
                EltwiseKind::Add => {
                    // Both operands at the finer binary point: exact.
                    let frac = x.frac.max(y.frac);
                    let align = |v: f32, f: Format| int(v, f) << (frac - f.frac);
                    eltwise::broadcast_image(a, b, o, out_shape, |p, q| to_out(align(p, x) + align(q, y), frac));
                }
                EltwiseKind::Mul => {
                    eltwise::broadcast_image(a, b, o, out_shape, |p, q| to_out(int(p, x) * int(q, y), x.frac + y.frac));
                }
            }
        }),
        Op::Activation(_) => per_image(out, &|n, o| {
            o.iter_mut().zip(image(0, n)).for_each(|(o, &v)| *o = to_out(int(v, x), x.frac));
        }),
        Op::Pool(p) => per_image(out, &|n, o| {
            let to = unit.out();
            pool::each_window(p, image(0, n), hw(in_shape(0)), o, hw(out_shape), |values, padded| {
                let q = match p.kind {
                    // Padding never wins a max; ordering the reals orders the integers.
                    PoolKind::Max => requantize(int(values.iter().copied().fold(f32::MIN, f32::max), x), x.frac, to),
                    PoolKind::Average => {
                        let count = if p.count_include_pad { padded } else { values.len() };
                        let sum: i128 = values.iter().map(|&v| int(v, x)).sum();
                        average(sum, count.max(1) as u32, x.frac, to)
                    }
                };
                to.to_f32(q)
            });
        }),
        Op::GlobalAveragePool => per_image(out, &|n, o| {
            let to = unit.out();
            let plane = in_len(0) / o.len();
            for (o, values) in o.iter_mut().zip(image(0, n).chunks_exact(plane)) {
                let sum: i128 = values.iter().map(|&v| int(v, x)).sum();
                *o = to.to_f32(average(sum, plane as u32, x.frac, to));
            }
        }),
        Op::Concat => per_image(out, &|n, o| {
            let mut at = 0;
            for (k, f) in formats.iter().enumerate() {
                let part = image(k, n);
                for (o, &v) in o[at..at + part.len()].iter_mut().zip(part) {
                    *o = to_out(int(v, *f), f.frac);
                }
                at += part.len();
            }
        }),
        Op::Reshape => out.copy_from_slice(inputs[0]),
    }
}

/// Per output channel `c` of `acc` (`pixels` values each, the exact accumulation of
/// `x * w` as reals): the integer accumulator at `x.frac + weight_frac[c]`, plus the bias,
/// through the activation unit.
fn epilogue(
    ch: &FixedChannels,
    x: Format,
    acc: &[f64],
    pixels: usize,
    out: &mut [f32],
    to_out: &impl Fn(i128, i32) -> f32,
) {
    for (c, (acc, out)) in acc.chunks_exact(pixels).zip(out.chunks_exact_mut(pixels)).enumerate() {
        let frac = x.frac + ch.weight_frac[c];
        let scale = hass_proto::fixed::pow2(frac);
        let bias = ch.bias[c] as i128;
        for (o, &a) in out.iter_mut().zip(acc) {
            // Exact: the accumulator holds at most 54 bits (see `FixedChannels`).
            *o = to_out((a * scale) as i64 as i128 + bias, frac);
        }
    }
}
