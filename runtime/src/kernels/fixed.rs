//! The fixed-point datapath's layers (ARCHITECTURE.md, "Datapath"). Values arrive as `f32`
//! holding exact fixed-point numbers of their format; each kernel computes in integers (or
//! in `f32`/`f64` where that is exact: depthwise convolutions' sums and element-wise
//! products, see [`FixedChannels`]) and writes the exact values of its output format.

use super::conv::{
    accumulate, in_image_runs, is_pointwise_on_a_point, put_group_in_images, unfolds, BATCH_GEMM_MAX_PIXELS,
};
use super::dense::transpose_into;
use super::igemm::{
    direct::{self, DirectA},
    gemm_with, PackedA,
};
use super::unfold::{Columns, Matrix, Windows};
use super::{eltwise, pool, scratch, thresholded, with_simd};
use crate::plan::{Conv, EltwiseKind, Fixed, FixedChannels, Format, Layer, Op, Plan, PoolKind};
use hass_proto::fixed::{average, pow2, requantize, ActivationUnit};
use rayon::prelude::*;
use std::ops::RangeInclusive;
use std::sync::OnceLock;

/// `x`'s integer in format `f` (exact: `x` is a value of that format, at most 16 bits; the
/// conversion goes through `i64`, one instruction, where `f64 -> i128` is a library call).
#[inline]
fn int(x: f32, f: Format) -> i128 {
    (x as f64 * f.scale()) as i64 as i128
}

/// `v`, an integer of at most 22 bits held in an `f32`, as an `i32`: adding 1.5 * 2^23
/// puts it in the significand's low bits. Unlike `as i32` (which must saturate and map
/// NaN to 0) this vectorizes.
#[inline(always)]
fn exact_int(v: f32) -> i32 {
    const MAGIC: f32 = 12_582_912.0; // 1.5 * 2^23
    (v + MAGIC).to_bits() as i32 - MAGIC.to_bits() as i32
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
    // The integers the first input can hold: what the integer GEMM packs its weights for
    // (asked once per plan, where the weights are packed).
    let x_range = || if plan.is_non_negative(layer.inputs[0]) { 0 } else { x.min() }..=x.max();
    match &layer.op {
        Op::Conv(conv) if conv.groups == conv.c_in && conv.groups == conv.c_out => per_image(out, &|n, o| {
            let ch = channels();
            let input = thresholded(image(0, n), conv.input_threshold);
            let taps = ch.derived(|| DepthwiseTaps::new(ch, x, conv.kernel[0] * conv.kernel[1]));
            let hws = (hw(in_shape(0)), hw(out_shape));
            match &taps.f32 {
                Some(f32_taps) => depthwise_into((conv, ch, x, unit), (f32_taps, taps.fits_f64), &input, hws, o),
                None => depthwise_into((conv, ch, x, unit), (ch.weight(), taps.fits_f64), &input, hws, o),
            }
        }),
        // A 1x1 conv on a 1x1 map (squeeze-and-excite) is a fully connected layer: the
        // conv's GEMM would pad its one column per image to a tile of 32.
        Op::Conv(conv) if is_pointwise_on_a_point(conv, hw(in_shape(0)), hw(out_shape)) => {
            let dims = (conv.c_in, conv.c_out);
            dense_layer(channels(), unit, (x, &x_range), dims, conv.input_threshold, inputs[0], batch, out)
        }
        Op::Conv(conv) => conv_layer(conv, channels(), unit, (x, &x_range), (inputs[0], in_shape(0)), (out, out_shape)),
        Op::Dense(dense) => {
            let dims = (dense.inputs, dense.outputs);
            dense_layer(channels(), unit, (x, &x_range), dims, dense.input_threshold, inputs[0], batch, out)
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
                    // Products of two values of at most 16 bits: exact in f64 (at most 32
                    // significant bits, far below 2^51 as integers), through the unit's
                    // vectorized epilogue straight from the floats where it takes them.
                    let v_frac = x.frac + y.frac;
                    let (mut products, mut ints) = (scratch::take_len(o.len(), 0.0f64), scratch::take());
                    with_simd(
                        #[inline(always)]
                        || {
                            eltwise::broadcast_image(a, b, &mut products, out_shape, |p, q| p as f64 * q as f64);
                            finish_float_sums(unit, (&products, true), (0, v_frac), &mut ints, o);
                        },
                    );
                    scratch::give_back(ints);
                }
            }
        }),
        Op::Activation(_) => per_image(out, &|n, o| {
            o.iter_mut().zip(image(0, n)).for_each(|(o, &v)| *o = to_out(int(v, x), x.frac));
        }),
        Op::Pool(p) => per_image(out, &|n, o| {
            let to = unit.out();
            if p.kind == PoolKind::Max {
                // Padding never wins a max; ordering the reals orders the integers. In the
                // input's own format (the quantizer's choice) narrowing is the identity.
                pool::max_pool_image(p, image(0, n), hw(in_shape(0)), o, hw(out_shape), f32::MIN);
                if to != x {
                    o.iter_mut().for_each(|v| *v = to.to_f32(requantize(int(*v, x), x.frac, to)));
                }
                return;
            }
            pool::each_window(p, image(0, n), hw(in_shape(0)), o, hw(out_shape), |values, padded| {
                let count = if p.count_include_pad { padded } else { values.len() };
                let sum: i128 = values.iter().map(|&v| int(v, x)).sum();
                to.to_f32(average(sum, count.max(1) as u32, x.frac, to))
            });
        }),
        Op::GlobalAveragePool => per_image(out, &|n, o| {
            let to = unit.out();
            let plane = in_len(0) / o.len();
            // Integers of at most 16 bits (exact in an f32, as their scaled value is): the
            // sum of a plane of at most 2^16 of them fits 32-bit lanes (twice as many per
            // vector as 64-bit ones), a longer plane's 64 bits.
            let scale = x.scale() as f32;
            with_simd(
                #[inline(always)]
                || {
                    for (o, values) in o.iter_mut().zip(image(0, n).chunks_exact(plane)) {
                        let sum: i64 = if plane <= 1 << 16 {
                            values.iter().map(|&v| exact_int(v * scale)).sum::<i32>() as i64
                        } else {
                            values.iter().map(|&v| exact_int(v * scale) as i64).sum()
                        };
                        *o = to.to_f32(average(sum as i128, plane as u32, x.frac, to));
                    }
                },
            );
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

/// A fully connected layer of `k` inputs and `m` outputs (channels `ch`) over `batch` images
/// of `input`: the integer GEMM of the weights (packed once per plan) and one column per
/// image, or dot products for small batches, each output row finished as a conv's.
#[allow(clippy::too_many_arguments)] // the layer's parts, as `run_layer` holds them
fn dense_layer(
    ch: &FixedChannels,
    unit: &ActivationUnit,
    (x, x_range): (Format, &dyn Fn() -> RangeInclusive<i64>),
    (k, m): (usize, usize),
    threshold: Option<f32>,
    input: &[f32],
    batch: usize,
    out: &mut [f32],
) {
    let weights: &DenseWeights = ch.derived(DenseWeights::default);
    let mut ints = scratch::take_len(batch * k, 0i16);
    input_ints(input, &mut ints, x, threshold);
    let mut rows = scratch::take_len(m * batch, 0.0f32);
    if batch <= DOT_MAX_BATCH {
        // Weights of at most 16 bits, as the loader checks.
        let w = weights.rows.get_or_init(|| integer_weights(ch, k).iter().map(|&w| w as i16).collect());
        dot_rows(w, &ints, batch, &mut rows, |row, sums, out| finish_channel(unit, ch, x, row, sums, out));
    } else {
        let packed = weights.packed.get_or_init(|| PackedA::new(&integer_weights(ch, k), m, k, x_range()));
        let mut columns = scratch::take_len(batch * k, 0i16);
        transpose_into(&ints, k, &mut columns);
        gemm_with(packed, &Matrix { values: &columns, n: batch }, &mut rows, true, |row, sums, out| {
            finish_channel(unit, ch, x, row, sums, out)
        });
    }
    transpose_into(&rows, batch, out);
}

/// The weights of `ch` as integers of their channels' formats (`per_channel` each; exact:
/// each is `q * 2^-frac` with `q` within 16 bits).
fn integer_weights(ch: &FixedChannels, per_channel: usize) -> Vec<i64> {
    // Channels side by side: a search re-quantizes every layer's weights, millions each.
    ch.weight()
        .par_chunks(per_channel.max(1))
        .zip(ch.weight_frac())
        .flat_map_iter(|(row, &f)| row.iter().map(move |&w| (w * pow2(f)) as i64))
        .collect()
}

/// Largest batch a fully connected layer computes as dot products: the GEMM's tiles are 32
/// columns wide, one per image (at batch 1, mobilenet_v2's classifier took 0.97 ms on them,
/// 4x the float layer).
const DOT_MAX_BATCH: usize = 8;

/// What a fully connected layer's kernel derives from its weights (kept in the plan): the
/// GEMM's packing, and the integer rows the dot products of small batches read, each made
/// when first needed.
#[derive(Default)]
struct DenseWeights {
    packed: std::sync::OnceLock<PackedA>,
    rows: std::sync::OnceLock<Vec<i16>>,
}

/// `weights` (rows of `images`' length) times each of `batch` images, as exact integer dot
/// products, each row's sums (one per image) finished into `out` ([rows, batch]).
fn dot_rows(
    weights: &[i16],
    images: &[i16],
    batch: usize,
    out: &mut [f32],
    finish: impl Fn(usize, &[i64], &mut [f32]) + Sync,
) {
    let k = images.len() / batch.max(1);
    out.par_chunks_mut(batch).zip(weights.par_chunks_exact(k.max(1))).enumerate().with_min_len(16).for_each(
        |(row, (out, w))| {
            let mut sums = [0i64; DOT_MAX_BATCH];
            with_simd(
                #[inline(always)]
                || {
                    for (sum, image) in sums.iter_mut().zip(images.chunks_exact(k.max(1))) {
                        // 16-bit products fit 32 bits; integers add in any order.
                        *sum = w.iter().zip(image).map(|(&a, &b)| (i32::from(a) * i32::from(b)) as i64).sum();
                    }
                },
            );
            finish(row, &sums[..batch], out);
        },
    );
}

/// What a depthwise layer's kernel derives from its weights (kept in the plan).
struct DepthwiseTaps {
    /// The taps as `f32`, if every sum of products with inputs of the layer's format stays
    /// within f32's 24-bit significand: then the f32 accumulation is exact (in any order,
    /// as the f64 one is), at twice the lanes.
    f32: Option<Vec<f32>>,
    /// Whether every sum plus its channel's bias stays below 2^51 (as integers), so that
    /// the epilogue can take the float sums as they are
    /// ([`ActivationUnit::apply_all_scaled`]).
    fits_f64: bool,
}

impl DepthwiseTaps {
    /// Per channel, the sum of its taps' magnitudes (as integers) times the largest input
    /// integer bounds every partial sum.
    fn new(ch: &FixedChannels, x: Format, taps: usize) -> DepthwiseTaps {
        let max_x = 1u64 << (x.bits.clamp(1, 16) - 1);
        let magnitudes: Vec<u64> = ch
            .weight()
            .chunks(taps.max(1))
            .zip(ch.weight_frac())
            .map(|(row, &f)| row.iter().map(|&w| (w * pow2(f)).abs() as u64).sum::<u64>().saturating_mul(max_x))
            .collect();
        let f32 = magnitudes.iter().all(|&m| m < 1 << f32::MANTISSA_DIGITS);
        let fits_f64 = magnitudes.iter().zip(ch.bias()).all(|(&m, &b)| m.saturating_add(b.unsigned_abs()) < 1 << 51);
        DepthwiseTaps { f32: f32.then(|| ch.weight().iter().map(|&w| w as f32).collect()), fits_f64 }
    }
}

/// A depthwise conv of one image into `out`, accumulated exactly in `T` (`taps` in `T`,
/// with [`DepthwiseTaps::fits_f64`]), each channel's sums then through the activation
/// unit: straight from the float sums where the unit allows, else as integers.
fn depthwise_into<T: Widened>(
    (conv, ch, x, unit): (&Conv, &FixedChannels, Format, &ActivationUnit),
    (taps, fits_f64): (&[T], bool),
    input: &[f32],
    (in_hw, out_hw): ([usize; 2], [usize; 2]),
    out: &mut [f32],
) {
    let pixels = out_hw[0] * out_hw[1];
    let mut acc = scratch::take_len(conv.c_out * pixels, T::zero());
    T::depthwise(conv, taps, input, (in_hw, out_hw), &mut acc);
    let mut ints = scratch::take();
    with_simd(
        #[inline(always)]
        || {
            for (c, (acc, out)) in acc.chunks_exact(pixels).zip(out.chunks_exact_mut(pixels)).enumerate() {
                let v_frac = x.frac + ch.weight_frac()[c];
                finish_float_sums(unit, (acc, fits_f64), (ch.bias()[c], v_frac), &mut ints, out);
            }
        },
    );
    scratch::give_back(ints);
}

/// What depthwise convs accumulate in: `f32` where exact, else `f64`, from `f32` inputs.
trait Widened: super::conv::Element + Into<f64> {
    /// The depthwise conv of `input` with `taps` into `acc`.
    fn depthwise(conv: &Conv, taps: &[Self], input: &[f32], hws: ([usize; 2], [usize; 2]), acc: &mut [Self]);
}

impl Widened for f32 {
    fn depthwise(conv: &Conv, taps: &[f32], input: &[f32], (in_hw, out_hw): ([usize; 2], [usize; 2]), acc: &mut [f32]) {
        accumulate(conv, taps, input, in_hw, acc, out_hw);
    }
}

impl Widened for f64 {
    fn depthwise(conv: &Conv, taps: &[f64], input: &[f32], (in_hw, out_hw): ([usize; 2], [usize; 2]), acc: &mut [f64]) {
        super::depthwise::depthwise_widened(conv, taps, input, in_hw, acc, out_hw);
    }
}

/// `sums` (exact reals whose integers lie at `v_frac` fractional bits) plus `bias` through
/// `unit` into `out`: straight from the floats where `fits_f64` (every sum plus the bias
/// below 2^51) and the unit takes them, else through their integers in `ints` (a buffer).
#[inline(always)]
fn finish_float_sums<T: Copy + Into<f64>>(
    unit: &ActivationUnit,
    (sums, fits_f64): (&[T], bool),
    (bias, v_frac): (i64, i32),
    ints: &mut Vec<i64>,
    out: &mut [f32],
) {
    if fits_f64 && unit.apply_all_scaled(sums, pow2(v_frac), bias, v_frac, out) {
        return;
    }
    ints.clear();
    ints.extend(sums.iter().map(|&s| (s.into() * pow2(v_frac)) as i64));
    unit.apply_all(ints, bias, v_frac, out);
}

/// Output channel `c`'s integer sums of products (at `x.frac + weight_frac[c]`): plus its
/// bias, through the activation unit, into `out`.
#[inline(always)]
fn finish_channel(unit: &ActivationUnit, ch: &FixedChannels, x: Format, c: usize, sums: &[i64], out: &mut [f32]) {
    unit.apply_all(sums, ch.bias()[c], x.frac + ch.weight_frac()[c], out);
}

/// A conv layer's integer weights packed for the kernels that use them, each group's, made
/// on first use: for the GEMM, and (per-image layers with windows, where the processor has
/// the kernel) for [`direct::conv`].
#[derive(Default)]
struct ConvWeights {
    gemm: OnceLock<Vec<PackedA>>,
    direct: OnceLock<Option<Vec<DirectA>>>,
    /// Whether they go in quads (8-bit weights and inputs, where the processor multiplies
    /// them).
    quads: OnceLock<bool>,
}

/// A dense or grouped convolution of `input` (a batch of `in_shape` images) into `out`: the
/// integer GEMM, the weights packed once per plan, the windows packed from the images; or,
/// image by image, the windows read straight from the image ([`direct::conv`]).
fn conv_layer(
    conv: &Conv,
    ch: &FixedChannels,
    unit: &ActivationUnit,
    (x, x_range): (Format, &dyn Fn() -> RangeInclusive<i64>),
    (input, in_shape): (&[f32], &[usize]),
    (out, out_shape): (&mut [f32], &[usize]),
) {
    let out_per_group = conv.c_out / conv.groups;
    let in_per_group = conv.c_in / conv.groups;
    let k = conv.weight.len() / conv.c_out.max(1);
    let weights: &ConvWeights = ch.derived(ConvWeights::default);
    // The integer weights, worked out at most once here for whichever packings are made.
    let ints = OnceLock::new();
    let ints = || ints.get_or_init(|| integer_weights(ch, k));
    let gemm_weights = || {
        weights.gemm.get_or_init(|| {
            let (ints, x_range) = (ints(), x_range());
            ints.chunks_exact(out_per_group * k)
                .map(|group| PackedA::new(group, out_per_group, k, x_range.clone()))
                .collect()
        })
    };
    let (in_hw, out_hw) = ([in_shape[1], in_shape[2]], [out_shape[1], out_shape[2]]);
    let (in_len, out_len) = (in_shape.iter().product::<usize>(), out_shape.iter().product::<usize>());
    let (batch, pixels) = (input.len() / in_len.max(1), out_hw[0] * out_hw[1]);
    let to_ints = |src: &[f32], dst: &mut [i16]| input_ints(src, dst, x, conv.input_threshold);
    // A batch's small maps in one GEMM: the weights read once for all of them. But quads
    // packed for it cost more than the multiplies, and read straight from each image they
    // do not (ResNet-18, 8-bit, one thread, batch 8: its 14x14 layers 2.6 -> 2.0 ms, 7x7
    // 2.6 -> 2.2; its 16-bit 7x7 and 14x14 layers lose 2-3 % that way).
    let small_maps = batch > 1 && pixels <= BATCH_GEMM_MAX_PIXELS;
    let quads = || *weights.quads.get_or_init(|| super::igemm::packs_quads(ints(), &x_range()));
    // Windows read straight from the image where the kernel takes the weights; a pointwise
    // conv's input is its GEMM's matrix as it is.
    let direct = (unfolds(conv) && (!small_maps || quads())).then(|| {
        weights.direct.get_or_init(|| {
            let (ints, x_range, taps) = (ints(), x_range(), conv.kernel[0] * conv.kernel[1]);
            ints.chunks_exact(out_per_group * k)
                .map(|group| {
                    DirectA::new(group, out_per_group, (in_per_group, taps), x_range.clone()).filter(DirectA::pays)
                })
                .collect()
        })
    });
    let direct = direct.and_then(Option::as_ref);
    if small_maps && direct.is_none() {
        let packed = gemm_weights();
        in_image_runs(batch, (input, in_len), (out, out_len), |input, out, parallel| {
            let mut ints = scratch::take_len(input.len(), 0i16);
            ints.chunks_mut(in_len).zip(input.chunks(in_len)).for_each(|(d, s)| to_ints(s, d));
            // Per group: [channel][image][pixel], then each image's channels in place.
            let mut sums = scratch::take_len(out_per_group * (input.len() / in_len) * pixels, 0.0f32);
            for (g, a) in packed.iter().enumerate() {
                let windows = Windows::new(conv, (&ints, in_len), (g * in_per_group, in_per_group), in_hw, out_hw);
                conv_gemm(a, &windows, &mut sums, parallel, (unit, ch, x, g * out_per_group));
                put_group_in_images(&sums, g, out_per_group, pixels, out);
            }
        });
        return;
    }
    let packed = if direct.is_none() { &gemm_weights()[..] } else { &[] };
    // Images in parallel, each GEMM on one thread; or, with fewer images than threads, each
    // GEMM over all of them.
    let parallel = batch < rayon::current_num_threads();
    out.par_chunks_mut(out_len).zip(input.par_chunks(in_len)).for_each(|(o, image)| {
        let mut ints = scratch::take_len(in_len, 0i16);
        to_ints(image, &mut ints);
        for g in 0..conv.groups {
            let o = &mut o[g * out_per_group * pixels..][..out_per_group * pixels];
            let first = g * out_per_group;
            let group_in = &ints[g * in_per_group * in_hw[0] * in_hw[1]..][..in_per_group * in_hw[0] * in_hw[1]];
            if let Some(direct) = direct {
                direct::conv(
                    &direct[g],
                    conv,
                    group_in,
                    in_hw,
                    o,
                    out_hw,
                    parallel,
                    #[inline(always)]
                    |row, sums, out| finish_channel(unit, ch, x, first + row, sums, out),
                );
            } else if unfolds(conv) {
                let windows = Windows::new(conv, (&ints, in_len), (g * in_per_group, in_per_group), in_hw, out_hw);
                conv_gemm(&packed[g], &windows, o, parallel, (unit, ch, x, first));
            } else {
                conv_gemm(&packed[g], &Matrix { values: group_in, n: pixels }, o, parallel, (unit, ch, x, first));
            }
        }
    });
}

/// The integers of `src`, values of format `x` (16 bits at most: scaling the f32 by a
/// power of two is exact), into `dst`; those at or below `threshold` read as zero.
fn input_ints(src: &[f32], dst: &mut [i16], x: Format, threshold: Option<f32>) {
    // No threshold: below every 16-bit integer.
    let floor = threshold.map_or(i32::MIN, |t| hass_proto::fixed::threshold(t, x) as i32);
    let scale = pow2(x.frac) as f32; // exact: `frac` lies within f32's exponents
    with_simd(
        #[inline(always)]
        || {
            for (q, &v) in dst.iter_mut().zip(src) {
                let i = exact_int(v * scale);
                *q = if i <= floor { 0 } else { i as i16 };
            }
        },
    )
}

/// The integer GEMM of a conv group's weights `a` and inputs `b` into `out`, each run of sums
/// finished (output channels from `first` on) while in cache; over rayon's threads if
/// `parallel`.
fn conv_gemm(
    a: &PackedA,
    b: &impl Columns<i16>,
    out: &mut [f32],
    parallel: bool,
    (unit, ch, x, first): (&ActivationUnit, &FixedChannels, Format, usize),
) {
    gemm_with(
        a,
        b,
        out,
        parallel,
        #[inline(always)]
        |row, sums, out| finish_channel(unit, ch, x, first + row, sums, out),
    );
}

/// [`finish_channel`] for every output channel of `acc` (`pixels` sums each).
fn epilogue(ch: &FixedChannels, x: Format, acc: &[i64], pixels: usize, out: &mut [f32], unit: &ActivationUnit) {
    with_simd(
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
        && with_simd(
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
    with_simd(
        #[inline(always)]
        || {
            sums.extend(a.iter().zip(b).map(|(&p, &q)| (p * scale) as i32 as i64 + (q * scale) as i32 as i64));
            unit.apply_all(&sums, 0, frac, out);
        },
    );
    scratch::give_back(sums);
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A 1x1 conv on a 1x1 map computes, bit for bit, the fully connected layer with its
    /// weights: the dense fixture with its layer turned into that conv, at batches through
    /// the dot products (3) and through the GEMM (12), 16 and 8 bits.
    #[test]
    fn a_pointwise_conv_on_a_point_computes_its_fully_connected_twin() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../testdata/fixed");
        for name in ["dense_sigmoid.b16.hass", "dense_sigmoid.b8.hass"] {
            let dense = crate::load_file(&dir.join(name)).unwrap();
            let mut conv = crate::load_file(&dir.join(name)).unwrap();
            let at = conv.layers.iter().position(|l| matches!(l.op, Op::Dense(_))).expect("a dense layer");
            let Op::Dense(d) = conv.layers[at].op.clone() else { unreachable!() };
            let source = conv.layers[at].inputs[0];
            assert_eq!(source, at, "the layer reads the one before it");
            conv.layers[at - 1].output_shape = vec![d.inputs, 1, 1];
            conv.layers[at].output_shape = vec![d.outputs, 1, 1];
            conv.layers[at].op = Op::Conv(Conv {
                bias: d.bias.clone(),
                activation: d.activation,
                input_threshold: d.input_threshold,
                ..Conv::new(d.weight.clone(), d.inputs, d.outputs, [1, 1])
            });
            let Op::Conv(c) = &conv.layers[at].op else { unreachable!() };
            let hw = |s: &[usize]| [s[1], s[2]];
            assert!(is_pointwise_on_a_point(c, hw(conv.value_shape(source)), hw(&conv.layers[at].output_shape)));
            let image: usize = dense.input_shape.iter().product();
            for batch in [3, 12] {
                let values = (0..batch * image).map(|i| ((i * 7919 % 2003) as f32 - 1001.0) / 400.0).collect();
                let mut shape = vec![batch];
                shape.extend_from_slice(&dense.input_shape);
                let input = crate::Tensor::new(shape, values).unwrap();
                let bits = |plan: &Plan| -> Vec<u32> {
                    crate::exec::run(plan, &input).unwrap()[0].data().iter().map(|v| v.to_bits()).collect()
                };
                assert_eq!(bits(&conv), bits(&dense), "{name}, batch {batch}");
            }
        }
    }

    #[test]
    fn f32_taps_only_where_every_partial_sum_fits_24_bits() {
        // 8-bit inputs (integers down to -2^7): the taps' integer magnitudes must sum below
        // 2^17. Four taps of -2^15 reach it; a channel of smaller taps beside them is not
        // enough to save the layer.
        let x = Format { bits: 8, frac: 4 };
        let full = [-32768.0, -32768.0, -32768.0, -32768.0];
        let small = [1.0, 2.0, 3.0, 4.0];
        let wide = FixedChannels::new([small, full].concat(), vec![0, 0], vec![0, 0]);
        assert!(DepthwiseTaps::new(&wide, x, 4).f32.is_none());
        let last = [-32768.0, -32768.0, -32768.0, -32767.0];
        let fits = FixedChannels::new([small, last].concat(), vec![0, 0], vec![0, 0]);
        assert_eq!(
            DepthwiseTaps::new(&fits, x, 4).f32,
            Some([small, last].concat().iter().map(|&w| w as f32).collect())
        );
        // The binary points do not matter, only the integers: 2^-3 at 3 fractional bits is 1.
        let x16 = Format { bits: 16, frac: 8 }; // down to -2^15: the taps must sum below 2^9
        let channel = |w: f64| FixedChannels::new(vec![w / 8.0], vec![3], vec![0]);
        assert!(DepthwiseTaps::new(&channel(511.0), x16, 1).f32.is_some());
        assert!(DepthwiseTaps::new(&channel(512.0), x16, 1).f32.is_none());
    }

    #[test]
    fn float_sums_feed_the_epilogue_only_where_sum_and_bias_stay_below_2_to_51() {
        // 16-bit inputs: sums up to 2^15 times the taps' magnitudes.
        let x = Format { bits: 16, frac: 0 };
        let taps = |w: f64, bias: i64| FixedChannels::new(vec![w, -w], vec![0], vec![bias]);
        let limit = 1i64 << 51;
        // Two taps of 2^34 reach 2^50 in all; the bias takes the rest up to 2^51.
        let w = (1u64 << 34) as f64;
        assert!(DepthwiseTaps::new(&taps(w, limit / 2 - 1), x, 2).fits_f64);
        assert!(!DepthwiseTaps::new(&taps(w, limit / 2), x, 2).fits_f64);
        assert!(!DepthwiseTaps::new(&taps(w, -limit / 2), x, 2).fits_f64, "the bias's magnitude counts");
        assert!(DepthwiseTaps::new(&taps(1.0, 0), x, 2).fits_f64);
    }
}
