//! The fixed-point datapath's layers (ARCHITECTURE.md, "Datapath"). Values arrive as `f32`
//! holding exact fixed-point numbers of their format; each kernel computes in integers (or
//! in `f64` where that is exact: the convolution's and the fully connected layer's
//! accumulation, see [`FixedChannels`]) and writes the exact values of its output format.

use super::conv::{accumulate, group_columns, parallel_gemm, unfolds};
use super::igemm::{gemm_with, PackedA};
use super::{eltwise, pool, scratch, thresholded, with_avx2};
use crate::plan::{EltwiseKind, Fixed, FixedChannels, Format, Layer, Op, Plan, PoolKind};
use hass_proto::fixed::{average, pow2, requantize, ActivationUnit};
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
    let out_step = pow2(-unit.out().frac) as f32; // exact, as `Format::to_f32`
    let to_out = |v: i128, frac: i32| unit.apply(v, frac) as f32 * out_step;
    let per_image = |out: &mut [f32], f: &(dyn Fn(usize, &mut [f32]) + Sync)| {
        out.par_chunks_mut(out_len).enumerate().for_each(|(n, o)| f(n, o));
    };
    let hw = |s: &[usize]| [s[1], s[2]];
    let channels = || fixed.channels.as_ref().expect("validated: weighted layers have channels");
    let x = formats[0];
    match &layer.op {
        Op::Conv(conv) if conv.groups == conv.c_in && conv.groups == conv.c_out => per_image(out, &|n, o| {
            // Depthwise: a direct loop, exact in f64.
            let input: Vec<f64> = thresholded(image(0, n), conv.input_threshold).iter().map(|&v| v as f64).collect();
            let mut acc = vec![0.0f64; out_len];
            accumulate(conv, channels().weight(), &input, hw(in_shape(0)), &mut acc, hw(out_shape));
            let pixels = out_len / conv.c_out;
            epilogue(channels(), x, &integer_sums(channels(), x, &acc, pixels), pixels, o, unit);
        }),
        Op::Conv(conv) => {
            // The integer GEMM, its weights packed once for the batch.
            let ch = channels();
            let out_per_group = conv.c_out / conv.groups;
            let k = conv.weight.len() / conv.c_out.max(1);
            let packed: &Vec<PackedA> = ch.derived(|| {
                let ints = integer_weights(ch, k);
                ints.chunks_exact(out_per_group * k)
                    .map(|group| PackedA::new(group, out_per_group, k, x.bits))
                    .collect()
            });
            // At or below `floor` reads as zero (no threshold: below every 16-bit integer).
            let floor = conv.input_threshold.map_or(i32::MIN, |t| hass_proto::fixed::threshold(t, x) as i32);
            let scale = pow2(x.frac) as f32; // exact: `frac` lies within f32's exponents
            per_image(out, &|n, o| {
                // The input's integers (16 bits at most: scaling the f32 by a power of two
                // is exact), thresholded on integers.
                let mut input = scratch::take_len(in_len(0), 0i16);
                with_avx2(
                    #[inline(always)]
                    || {
                        for (q, &v) in input.iter_mut().zip(image(0, n)) {
                            let i = (v * scale) as i32;
                            *q = if i <= floor { 0 } else { i as i16 };
                        }
                    },
                );
                let pixels = out_len / conv.c_out;
                // The unfolding writes every column.
                let mut cols = scratch::take_len(if unfolds(conv) { k * pixels } else { 0 }, 0i16);
                for (g, a) in packed.iter().enumerate() {
                    let b = group_columns(conv, &input, g, hw(in_shape(0)), hw(out_shape), &mut cols);
                    let o = &mut o[g * out_per_group * pixels..][..out_per_group * pixels];
                    gemm_with(
                        a,
                        b,
                        pixels,
                        o,
                        #[inline(always)]
                        |row, sums, out| finish_channel(unit, ch, x, g * out_per_group + row, sums, out),
                    );
                }
                scratch::give_back(cols);
                scratch::give_back(input);
            })
        }
        Op::Dense(dense) => {
            let input: Vec<f64> = thresholded(inputs[0], dense.input_threshold).iter().map(|&v| v as f64).collect();
            let mut acc = vec![0.0f64; batch * dense.outputs];
            let xs = ArrayView2::from_shape((batch, dense.inputs), &input).expect("validated input shape");
            let w = ArrayView2::from_shape((dense.outputs, dense.inputs), channels().weight())
                .expect("validated weight shape");
            let ys = ArrayViewMut2::from_shape((batch, dense.outputs), &mut acc[..]).expect("validated output shape");
            // Y^T = W X^T: one column per image, as the parallel GEMM splits columns.
            parallel_gemm(w, xs.t(), ys.reversed_axes());
            let ch = channels();
            for (acc, o) in acc.chunks_exact(dense.outputs).zip(out.chunks_exact_mut(dense.outputs)) {
                epilogue(ch, x, &integer_sums(ch, x, acc, 1), 1, o, unit);
            }
        }
        Op::ScaleShift { .. } => per_image(out, &|n, o| {
            let ch = channels();
            let pixels = out_len / ch.bias().len();
            let scales = integer_weights(ch, 1);
            let products: Vec<i64> = image(0, n)
                .chunks_exact(pixels)
                .zip(&scales)
                .flat_map(|(plane, &s)| plane.iter().map(move |&v| int(v, x) as i64 * s))
                .collect();
            epilogue(ch, x, &products, pixels, o, unit);
        }),
        Op::Eltwise { kind, .. } => per_image(out, &|n, o| {
            let y = formats[1];
            let (a, b) = ((image(0, n), in_shape(0)), (image(1, n), in_shape(1)));
            match kind {
                EltwiseKind::Add => {
                    if !(a.0.len() == o.len() && b.0.len() == o.len() && residual_sum(unit, (a.0, x), (b.0, y), o)) {
                        // Both operands at the finer binary point: exact.
                        let frac = x.frac.max(y.frac);
                        let align = |v: f32, f: Format| int(v, f) << (frac - f.frac);
                        eltwise::broadcast_image(a, b, o, out_shape, |p, q| to_out(align(p, x) + align(q, y), frac));
                    }
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
                    // Padding never wins a max; ordering the reals orders the integers. In
                    // the input's own format (the quantizer's choice) narrowing is the identity.
                    PoolKind::Max if to == x => return values.iter().copied().fold(f32::MIN, f32::max),
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

/// The weights of `ch` as integers of their channels' formats (`per_channel` each; exact:
/// each is `q * 2^-frac` with `q` within 16 bits).
fn integer_weights(ch: &FixedChannels, per_channel: usize) -> Vec<i64> {
    ch.weight()
        .chunks(per_channel.max(1))
        .zip(ch.weight_frac())
        .flat_map(|(row, &f)| row.iter().map(move |&w| (w * pow2(f)) as i64))
        .collect()
}

/// Sums accumulated exactly in `f64` (`pixels` per output channel, reals of `x` times
/// `ch`'s weights) as the integers of their binary points, `x.frac + weight_frac[c]` (exact:
/// at most 54 bits, see [`FixedChannels`]).
fn integer_sums(ch: &FixedChannels, x: Format, acc: &[f64], pixels: usize) -> Vec<i64> {
    acc.chunks_exact(pixels)
        .zip(ch.weight_frac())
        .flat_map(|(sums, &f)| sums.iter().map(move |&a| (a * pow2(x.frac + f)) as i64))
        .collect()
}

/// Output channel `c`'s integer sums of products (at `x.frac + weight_frac[c]`): plus its
/// bias, through the activation unit, into `out`.
#[inline(always)]
fn finish_channel(unit: &ActivationUnit, ch: &FixedChannels, x: Format, c: usize, sums: &[i64], out: &mut [f32]) {
    unit.apply_all(sums, ch.bias()[c], x.frac + ch.weight_frac()[c], out);
}

/// [`finish_channel`] for every output channel of `acc` (`pixels` sums each).
fn epilogue(ch: &FixedChannels, x: Format, acc: &[i64], pixels: usize, out: &mut [f32], unit: &ActivationUnit) {
    with_avx2(
        #[inline(always)]
        move || {
            for (c, (acc, out)) in acc.chunks_exact(pixels).zip(out.chunks_exact_mut(pixels)).enumerate() {
                finish_channel(unit, ch, x, c, acc, out);
            }
        },
    )
}

/// `a + b` (same shapes, operands of formats `x` and `y`) through `unit` into `out` by a
/// fast path, if one applies (else `false`, nothing written). Binary points at most 7 bits
/// apart: the f32 sum of two 16-bit values is exact (at most 24 significant bits), and so
/// is narrowing it in f32. At most 14 apart: each operand at the finer binary point fits
/// 31 bits (its f32 times a power of two is exact), summed in 64 bits.
fn residual_sum(unit: &ActivationUnit, (a, x): (&[f32], Format), (b, y): (&[f32], Format), out: &mut [f32]) -> bool {
    let apart = x.frac.abs_diff(y.frac);
    if apart <= 7
        && with_avx2(
            #[inline(always)]
            || unit.apply_all_f32(a.iter().zip(b).map(|(p, q)| p + q), out),
        )
    {
        return true;
    }
    if apart > 14 {
        return false;
    }
    let frac = x.frac.max(y.frac);
    let scale = pow2(frac) as f32;
    let mut sums = scratch::take::<i64>();
    with_avx2(
        #[inline(always)]
        || {
            sums.extend(a.iter().zip(b).map(|(&p, &q)| (p * scale) as i32 as i64 + (q * scale) as i32 as i64));
            unit.apply_all(&sums, 0, frac, out);
        },
    );
    scratch::give_back(sums);
    true
}
