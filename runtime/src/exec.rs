//! Executes a [`Plan`] on a batch: layers in order, one buffer per live value, images of a
//! batch in parallel.

use crate::kernels::conv::{conv_batch, conv_batch_then};
use crate::kernels::{dense::dense_batch, eltwise, pool, thresholded};
use crate::plan::{Layer, Op, Plan};
use crate::{RuntimeError, Tensor};
use rayon::prelude::*;

/// Run `plan` on `input` ([batch, ...input_shape]) and return the outputs, batch first.
///
/// A batch runs in shares, one per rayon thread at most, side by side (`images_per_share`:
/// a small network's layers are too short to split between threads). Within a share the
/// layers up to the network's tail ([`tail_start`]: the fully connected layers on pooled
/// features) run over a few images at a time (`images_per_head_run`), so that each value
/// is still in cache when the next layer reads it: layer by layer over a whole batch of
/// mobilenet_v2 (4.8 MB per image in its largest value), each layer read its input from
/// memory and ran at 0.8x its speed at batch 1. The tail then runs over the whole share,
/// its weights read once for all of it. A head whose weights outnumber its values runs
/// over the whole share too, but for its opening layers ([`opening_end`]). An image's
/// outputs do not depend on the run its layers before the split ran in: no kernel's sums
/// there depend on the batch.
pub fn run(plan: &Plan, input: &Tensor) -> Result<Vec<Tensor>, RuntimeError> {
    let batch = batch_of(plan, input)?;
    let share = images_per_share(batch);
    let schedule = Schedule::of(plan, share);
    if share == batch {
        return run_share(plan, input, &schedule);
    }
    let image_len = input.data().len() / batch;
    let shares: Vec<Vec<Tensor>> = input
        .data()
        .par_chunks(share * image_len)
        .with_max_len(1)
        .map(|images| {
            let mut shape = input.shape().to_vec();
            shape[0] = images.len() / image_len;
            run_share(plan, &Tensor::new(shape, images.to_vec())?, &schedule)
        })
        .collect::<Result<_, _>>()?;
    // Each output's shares back in one batch.
    (0..plan.outputs.len())
        .map(|o| {
            let mut shape = shares[0][o].shape().to_vec();
            shape[0] = batch;
            Tensor::new(shape, shares.iter().flat_map(|outputs| outputs[o].data().iter().copied()).collect())
        })
        .collect()
}

/// How a share of a batch runs: the layers before `split` over `head_run` images at a time,
/// the rest over the whole share.
struct Schedule {
    split: usize,
    head_run: usize,
}

impl Schedule {
    /// The head (the layers before the tail) in runs of images, or, where it runs whole,
    /// its opening layers ([`opening_end`]) in runs and the rest whole.
    fn of(plan: &Plan, share: usize) -> Schedule {
        let tail = tail_start(plan);
        let head_run = images_per_head_run(plan, tail, share);
        let opening = opening_end(plan, tail);
        if head_run < share || opening == 0 {
            return Schedule { split: tail, head_run };
        }
        Schedule { split: opening, head_run: images_per_head_run(plan, opening, share) }
    }
}

/// Where the head's opening layers end: its first layers whose values per image (inputs
/// and output) outnumber their weights. ResNet-18's stem and first stages (the stem's
/// output: 3.2 MB per image) have few weights; over a whole batch of 8 each of their
/// values went out to memory and came back for the next layer (its max pool and residual
/// adds ran at 0.6x their speed at batch 1).
fn opening_end(plan: &Plan, tail: usize) -> usize {
    let values = |layer: &Layer| {
        let inputs: usize = layer.inputs.iter().map(|&v| plan.value_shape(v).iter().product::<usize>()).sum();
        inputs + layer.output_shape.iter().product::<usize>()
    };
    plan.layers[..tail].iter().take_while(|layer| values(layer) >= weights_of(layer)).count()
}

/// Weights of a layer that has them.
fn weights_of(layer: &Layer) -> usize {
    match &layer.op {
        Op::Conv(conv) => conv.weight.len(),
        Op::Dense(dense) => dense.weight.len(),
        _ => 0,
    }
}

/// Run `plan` on `input`, one share of a batch, as `schedule` says.
fn run_share(plan: &Plan, input: &Tensor, schedule: &Schedule) -> Result<Vec<Tensor>, RuntimeError> {
    let batch = batch_of(plan, input)?;
    if schedule.head_run >= batch || schedule.split == 0 {
        // On one of rayon's threads (see `run_observed`).
        return rayon::scope(|_| run_layers(plan, input, batch, None));
    }
    rayon::scope(|_| run_split(plan, input, batch, schedule))
}

/// [`run_share`] in two parts: the layers before the split run by run, the values the rest
/// reads joined into one batch, then the rest.
fn run_split(plan: &Plan, input: &Tensor, batch: usize, schedule: &Schedule) -> Result<Vec<Tensor>, RuntimeError> {
    let last_use = last_uses(plan);
    let split = schedule.split;
    // The values computed before the split (or the input) that the rest or the outputs read.
    let crossing: Vec<usize> = (0..=split).filter(|&v| last_use[v] >= split).collect();
    let len_of = |v: usize| plan.value_shape(v).iter().product::<usize>();
    let mut joined: Vec<Vec<f32>> = crossing.iter().map(|&v| Vec::with_capacity(len_of(v) * batch)).collect();
    let mut spare: Vec<Vec<f32>> = VALUE_BUFFERS.with(|kept| kept.take());
    let image_len = input.data().len() / batch;
    for images in input.data().chunks(schedule.head_run * image_len) {
        let run = images.len() / image_len;
        let mut values = first_values(plan, images, &mut spare);
        run_range(plan, images, run, 0..split, &mut values, &mut spare, None);
        for (joined, &v) in joined.iter_mut().zip(&crossing) {
            joined.extend_from_slice(value(&values, images, v));
        }
        give_back(values, &mut spare);
    }
    let mut values: Values = vec![None; plan.layers.len() + 1];
    for (joined, &v) in joined.into_iter().zip(&crossing) {
        let len = joined.len();
        values[v] = Some((joined, len));
    }
    run_range(plan, input.data(), batch, split..plan.layers.len(), &mut values, &mut spare, None);
    let outputs = outputs_of(plan, &values, input.data(), batch);
    give_back(values, &mut spare);
    keep_value_buffers(spare);
    outputs
}

/// Where the tail of `plan` starts: the first of the last layers whose outputs are one
/// value per channel (pooled features and the fully connected layers on them), every later
/// layer's too. Their weights (mobilenet_v3_small's two fully connected layers: 1.6M of
/// its 2.5M) are read once per image over one image; over the batch, once for all of it.
/// `plan.layers.len()` if the last layer's output is a map.
pub fn tail_start(plan: &Plan) -> usize {
    let pooled = |layer: &Layer| layer.output_shape.iter().skip(1).product::<usize>() == 1;
    plan.layers.len() - plan.layers.iter().rev().take_while(|layer| pooled(layer)).count()
}

/// How many images of a share of `share` the layers before `tail` run over at a time.
/// Whatever a run does not keep in cache it reads from memory once per run: layer by layer
/// over many images, the values; over few, the weights. So a head whose values per image
/// outnumber its weights (mobilenet_v2: 7.0M values, 2.2M weights) runs in runs of images
/// whose largest value fits [`RUN_VALUES_BYTES`], one image at least, and one whose weights
/// outnumber its values (ResNet-18: 3.6M values, 11.2M weights) runs the share whole.
fn images_per_head_run(plan: &Plan, tail: usize, share: usize) -> usize {
    let weights: usize = plan.layers[..tail].iter().map(weights_of).sum();
    let sizes = (0..=tail).map(|v| plan.value_shape(v).iter().product::<usize>());
    let (values, largest) = sizes.fold((0, 0), |(total, largest), n| (total + n, largest.max(n)));
    if values <= weights {
        return share;
    }
    (RUN_VALUES_BYTES / (size_of::<f32>() * largest).max(1)).clamp(1, share)
}

/// How many images of a batch of `batch` [`run`] gives each thread: its share of the
/// batch, the shares side by side (mobilenet_v3_small, two threads, batch 8: 536-570
/// images/s over the batch whole, 619-656 in two shares of four; ResNet-18 the same either
/// way).
fn images_per_share(batch: usize) -> usize {
    batch.div_ceil(rayon::current_num_threads().max(1)).max(1)
}

/// Bytes of a head run's largest value, at most (see [`images_per_head_run`]): half of a
/// core's L2 cache, so that a layer's input and output stay in it. mobilenet_v3_small
/// (802 KB at 112x112) at batch 8, one thread: 376-380 images/s over the batch whole,
/// 399-401 two images at a time, 413-421 one at a time.
const RUN_VALUES_BYTES: usize = 1 << 20;

/// Called before each layer with its index, the layer and its input batches.
pub type Observer<'a> = dyn FnMut(usize, &Layer, &[&[f32]]) + Send + 'a;

/// [`run`], calling `observe` before each layer, each layer on its own (none fused: see
/// [`fused_residual`]), over the whole batch.
pub fn run_observed(plan: &Plan, input: &Tensor, observe: &mut Observer) -> Result<Vec<Tensor>, RuntimeError> {
    let batch = batch_of(plan, input)?;
    // On one of rayon's threads, so that the kernels' parallel loops split work among the
    // pool's threads directly: from any other thread each loop would be handed to the pool
    // and waited for, a wake-up per loop (most of a layer's time at batch 1).
    rayon::scope(|_| run_layers(plan, input, batch, Some(observe)))
}

/// Each value's buffer, and how many of its values are the value's: a buffer is longer
/// when it held a larger value before. The float datapath reads the input in place (value
/// 0 has no buffer); the fixed-point one quantizes it into one.
type Values = Vec<Option<(Vec<f32>, usize)>>;

/// Every layer over the whole batch, each observed first if there is an `observe`.
fn run_layers(
    plan: &Plan,
    input: &Tensor,
    batch: usize,
    observe: Option<&mut Observer>,
) -> Result<Vec<Tensor>, RuntimeError> {
    // Buffers of values no longer read, for later layers' outputs, whole: a fresh allocation
    // of a large map costs a page fault per 4 KiB on first touch, more than the layer's work
    // on some (a depthwise conv's), and zeroing a buffer that had been cut to a smaller
    // value's length cost 9 % of mobilenet_v2's time.
    let mut spare: Vec<Vec<f32>> = VALUE_BUFFERS.with(|kept| kept.take());
    let mut values = first_values(plan, input.data(), &mut spare);
    run_range(plan, input.data(), batch, 0..plan.layers.len(), &mut values, &mut spare, observe);
    let outputs = outputs_of(plan, &values, input.data(), batch);
    give_back(values, &mut spare);
    keep_value_buffers(spare);
    outputs
}

/// The values before any layer ran on `input`: the input, quantized into a spare buffer on
/// the fixed-point datapath, read in place on the float one.
fn first_values(plan: &Plan, input: &[f32], spare: &mut Vec<Vec<f32>>) -> Values {
    let mut values: Values = vec![None; plan.layers.len() + 1];
    if let Some(format) = plan.input_format {
        let mut buffer = take_spare(spare, input.len());
        prepare_output(&mut buffer, input.len());
        quantize_into(format, input, &mut buffer[..input.len()]);
        values[0] = Some((buffer, input.len()));
    }
    values
}

/// Value `v` of `values`, the input (`input`) if it has no buffer.
fn value<'a>(values: &'a Values, input: &'a [f32], v: usize) -> &'a [f32] {
    match &values[v] {
        Some((buffer, len)) => &buffer[..*len],
        None if v == 0 => input,
        None => unreachable!("value {v} read after its last use"),
    }
}

/// Every buffer of `values` to `spare`.
fn give_back(values: Values, spare: &mut Vec<Vec<f32>>) {
    spare.extend(values.into_iter().flatten().map(|(buffer, _)| buffer));
}

/// Run `layers` of `plan` over `batch` images, reading and writing `values`; a value's
/// buffer goes to `spare` after its last reader.
/// With `observe`, every layer runs on its own and is observed first; without, a conv and
/// the residual add after it run as one ([`fused_residual`]).
fn run_range(
    plan: &Plan,
    input: &[f32],
    batch: usize,
    layers: std::ops::Range<usize>,
    values: &mut Values,
    spare: &mut Vec<Vec<f32>>,
    mut observe: Option<&mut Observer>,
) {
    let last_use = last_uses(plan);
    let mut i = layers.start;
    while i < layers.end {
        let layer = &plan.layers[i];
        let inputs: Vec<&[f32]> = layer.inputs.iter().map(|&v| value(values, input, v)).collect();
        let len = layer.output_shape.iter().product::<usize>() * batch;
        let mut out = take_spare(spare, len);
        prepare_output(&mut out, len);
        let fused = observe.is_none().then(|| fused_residual(plan, i, layers.end, &last_use)).flatten();
        let ran = match (fused, &layer.op) {
            (Some((residual, activation)), Op::Conv(conv)) => {
                let (residual, image_len) = (value(values, input, residual), len / batch);
                let then = |n: usize, image: &mut [f32]| {
                    eltwise::add_in_place(image, &residual[n * image_len..][..image_len], activation)
                };
                let hw = |s: &[usize]| [s[1], s[2]];
                let in_hw = hw(plan.value_shape(layer.inputs[0]));
                conv_batch_then(conv, inputs[0], in_hw, &mut out[..len], hw(&layer.output_shape), &then);
                i..i + 2
            }
            _ => {
                if let Some(observe) = observe.as_mut() {
                    observe(i, layer, &inputs);
                }
                run_layer_in(plan, layer, &inputs, batch, &mut out[..len]);
                i..i + 1
            }
        };
        // The last layer run's value (a fused conv's own is never made).
        values[ran.end] = Some((out, len));
        for j in ran.clone() {
            for &v in &plan.layers[j].inputs {
                if last_use[v] == j {
                    spare.extend(values[v].take().map(|(buffer, _)| buffer));
                }
            }
        }
        i = ran.end;
    }
}

/// Whether layer `i` (a float conv without an activation) and the next (the residual add
/// that alone reads the conv's output, both inside `end`) run as one: the conv, then, image
/// by image while its output is in cache, the other addend added in place and the add's
/// activation applied. The sums are the add's, bit for bit. Returns the other addend's
/// value and the activation. On its own, the add read both addends back from memory at
/// batch 8 (ResNet-18: eight adds, 2 % of its time).
fn fused_residual(
    plan: &Plan,
    i: usize,
    end: usize,
    last_use: &[usize],
) -> Option<(usize, Option<crate::plan::Activation>)> {
    let (conv_layer, add) = (&plan.layers[i], plan.layers.get(i + 1).filter(|_| i + 1 < end)?);
    let Op::Conv(conv) = &conv_layer.op else { return None };
    let Op::Eltwise { kind: crate::plan::EltwiseKind::Add, activation } = add.op else { return None };
    let own = i + 1;
    let residual = match add.inputs[..] {
        [a, b] if a == own && b != own => b,
        [a, b] if b == own && a != own => a,
        _ => return None,
    };
    let same_shape =
        plan.value_shape(residual) == conv_layer.output_shape && add.output_shape == conv_layer.output_shape;
    let float = conv_layer.fixed.is_none() && add.fixed.is_none();
    (float && same_shape && conv.activation.is_none() && last_use[own] == i + 1).then_some((residual, activation))
}

/// `plan`'s outputs from `values`, batch first.
fn outputs_of(plan: &Plan, values: &Values, input: &[f32], batch: usize) -> Result<Vec<Tensor>, RuntimeError> {
    plan.outputs
        .iter()
        .map(|&o| {
            let mut shape = vec![batch];
            shape.extend_from_slice(plan.value_shape(o));
            Tensor::new(shape, value(values, input, o).to_vec())
        })
        .collect()
}

thread_local! {
    /// Value buffers a thread kept from its last run, for the next: each run allocating
    /// afresh had the allocator zero them (and the kernel map their pages), 1-2 % of
    /// ResNet-18's time at batch 1.
    static VALUE_BUFFERS: std::cell::RefCell<Vec<Vec<f32>>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// Value buffers a thread keeps between runs, at most (the largest).
const KEPT_VALUE_BUFFERS: usize = 8;

/// Keep the largest of `buffers`, with any a run nested on this thread (a rayon worker
/// that picked up another run while it waited) kept meanwhile.
fn keep_value_buffers(mut buffers: Vec<Vec<f32>>) {
    VALUE_BUFFERS.with(|kept| {
        let mut kept = kept.borrow_mut();
        buffers.append(&mut kept);
        buffers.sort_by_key(|b| std::cmp::Reverse(b.len()));
        buffers.truncate(KEPT_VALUE_BUFFERS);
        *kept = buffers;
    })
}

/// The batch size of `input`, once its per-image shape is checked against `plan`'s.
pub(crate) fn batch_of(plan: &Plan, input: &Tensor) -> Result<usize, RuntimeError> {
    let (batch, image_shape) =
        input.shape().split_first().ok_or_else(|| RuntimeError::Input("input has no batch dimension".into()))?;
    if image_shape != plan.input_shape.as_slice() || *batch == 0 {
        return Err(RuntimeError::Input(format!(
            "model {} expects input of shape [N, {}], got {:?}",
            plan.model,
            plan.input_shape.iter().map(|d| d.to_string()).collect::<Vec<_>>().join(", "),
            input.shape()
        )));
    }
    Ok(*batch)
}

/// The input as the first layer reads it: on the fixed-point datapath, each value quantized
/// to the input format (round half to even, saturating).
pub(crate) fn input_values(plan: &Plan, input: &Tensor) -> Vec<f32> {
    match plan.input_format {
        Some(f) => {
            let mut out = vec![0.0f32; input.data().len()];
            quantize_into(f, input.data(), &mut out);
            out
        }
        None => input.data().to_vec(),
    }
}

/// `xs` quantized to `f` and back into `out`, as `f.to_f32(f.quantize(x))` computes it, in
/// a form that vectorizes: in `f64`, scaling by a power of two is exact; NaN becomes 0 as
/// in `quantize`, and `+ 0.0` turns a rounded -0.0 into the integer 0's +0.0 (no conversion
/// to an integer and back, which does not vectorize). A loop over a buffer rather than
/// `collect`, whose body is a function of its own, compiled without the wide instructions
/// (there, rounding was a library call per value).
fn quantize_into(f: hass_proto::fixed::Format, xs: &[f32], out: &mut [f32]) {
    let (scale, step) = (f.scale(), hass_proto::fixed::pow2(-f.frac));
    let (min, max) = (f.min() as f64, f.max() as f64);
    crate::kernels::with_simd(
        #[inline(always)]
        || {
            for (o, &x) in out.iter_mut().zip(xs) {
                let q = (x as f64 * scale).round_ties_even().clamp(min, max) + 0.0;
                *o = (if q.is_nan() { 0.0 } else { q } * step) as f32;
            }
        },
    );
}

/// For each value, the index of the last layer that reads it (`usize::MAX` for outputs).
fn last_uses(plan: &Plan) -> Vec<usize> {
    let mut last = vec![0; plan.layers.len() + 1];
    for (i, layer) in plan.layers.iter().enumerate() {
        for &v in &layer.inputs {
            last[v] = i;
        }
    }
    for &o in &plan.outputs {
        last[o] = usize::MAX;
    }
    last
}

/// The spare buffer that holds `len` values with the least to spare (else a new one).
fn take_spare(spare: &mut Vec<Vec<f32>>, len: usize) -> Vec<f32> {
    let fits = (0..spare.len()).filter(|&k| spare[k].len() >= len).min_by_key(|&k| spare[k].len());
    fits.map_or_else(Vec::new, |k| spare.swap_remove(k))
}

/// `buffer` made at least `len` long: stale values, which the layer overwrites (every
/// kernel writes every value of its output without reading it first: the pruned convs'
/// too, each copying its sums off its grid), or, a buffer too short, a zeroed one in
/// parallel (a batch's output can be tens of megabytes, and zeroing it on one thread
/// stalls the other; see [`zeroed`]).
fn prepare_output(buffer: &mut Vec<f32>, len: usize) {
    if buffer.len() < len {
        *buffer = zeroed(len);
    }
}

/// `len` zeros, written in parallel: the allocator keeps freed memory for reuse
/// ([`crate::memory::keep_freed_memory`]) and clears reused memory on the calling thread,
/// which for a batch's output (hundreds of megabytes in a search) stalls the other cores.
fn zeroed(len: usize) -> Vec<f32> {
    if len <= ZEROED_PER_TASK {
        return vec![0.0; len];
    }
    let mut zeros = Vec::with_capacity(len);
    zeros.par_extend(rayon::iter::repeat_n(0.0f32, len).with_min_len(ZEROED_PER_TASK));
    zeros
}

/// Values per parallel task zeroing an output.
const ZEROED_PER_TASK: usize = 1 << 16;

/// Values per parallel task of an element-wise operation on operands of one shape.
const ELTWISE_PER_TASK: usize = 1 << 16;

/// Compute `layer` on `inputs` (one batch per input value, in `layer.inputs` order).
pub(crate) fn run_layer(plan: &Plan, layer: &Layer, inputs: &[&[f32]], batch: usize) -> Vec<f32> {
    let mut out = zeroed(layer.output_shape.iter().product::<usize>() * batch);
    run_layer_in(plan, layer, inputs, batch, &mut out);
    out
}

/// [`run_layer`] into `out`, the batch's whole output (every value written).
fn run_layer_in(plan: &Plan, layer: &Layer, inputs: &[&[f32]], batch: usize, out: &mut [f32]) {
    let input = |k: usize| inputs[k];
    let in_shape = |k: usize| plan.value_shape(layer.inputs[k]);
    let out_len: usize = layer.output_shape.iter().product();
    let in_len = |k: usize| in_shape(k).iter().product::<usize>();
    let out_shape = &layer.output_shape;
    debug_assert_eq!(out.len(), out_len * batch);
    if let Some(fixed) = &layer.fixed {
        return crate::kernels::fixed::run_layer(plan, layer, fixed, inputs, batch, out);
    }
    let per_image = |out: &mut [f32], f: &(dyn Fn(usize, &mut [f32]) + Sync)| {
        out.par_chunks_mut(out_len).enumerate().for_each(|(n, o)| f(n, o));
    };
    let hw = |s: &[usize]| [s[1], s[2]];
    match &layer.op {
        Op::Conv(conv) => conv_batch(conv, input(0), hw(in_shape(0)), out, hw(out_shape)),
        Op::Dense(dense) => dense_batch(dense, &thresholded(input(0), dense.input_threshold), batch, out),
        Op::Pool(p) => per_image(out, &|n, o| {
            pool::pool_image(p, &input(0)[n * in_len(0)..][..in_len(0)], hw(in_shape(0)), o, hw(out_shape))
        }),
        Op::GlobalAveragePool => {
            per_image(out, &|n, o| pool::global_average_image(&input(0)[n * in_len(0)..][..in_len(0)], out_shape[0], o))
        }
        Op::Eltwise { kind, activation } if in_len(0) == out_len && in_len(1) == out_len => {
            let (a, b) = (input(0), input(1));
            out.par_chunks_mut(ELTWISE_PER_TASK)
                .zip(a.par_chunks(ELTWISE_PER_TASK).zip(b.par_chunks(ELTWISE_PER_TASK)))
                .for_each(|(o, (a, b))| eltwise::eltwise_whole(*kind, a, b, *activation, o))
        }
        Op::Eltwise { kind, activation } => per_image(out, &|n, o| {
            let (a, b) = (&input(0)[n * in_len(0)..][..in_len(0)], &input(1)[n * in_len(1)..][..in_len(1)]);
            eltwise::eltwise_image(*kind, a, in_shape(0), b, in_shape(1), o, out_shape);
            if activation.is_some() {
                crate::kernels::activate_with(o, |v| v, *activation);
            }
        }),
        Op::ScaleShift { scale, shift, activation } => per_image(out, &|n, o| {
            o.copy_from_slice(&input(0)[n * out_len..][..out_len]);
            eltwise::scale_shift_image(o, scale, shift, *activation);
        }),
        Op::Activation(act) => per_image(out, &|n, o| {
            o.copy_from_slice(&input(0)[n * out_len..][..out_len]);
            crate::kernels::activate_with(o, |v| v, Some(*act));
        }),
        Op::Concat => per_image(out, &|n, o| {
            let mut at = 0;
            for k in 0..layer.inputs.len() {
                let len = in_len(k);
                o[at..at + len].copy_from_slice(&input(k)[n * len..][..len]);
                at += len;
            }
        }),
        Op::Reshape => out.copy_from_slice(input(0)),
    }
}

#[cfg(test)]
mod tests {
    use super::{images_per_share, quantize_into, run, run_observed, tail_start, zeroed, Schedule, ZEROED_PER_TASK};
    use crate::Tensor;
    use hass_proto::fixed::Format;

    #[test]
    fn zeroed_outputs_are_zeros_however_long() {
        // Below, at and past the length zeroed in parallel, ending inside a task's share.
        for len in [0, 5, ZEROED_PER_TASK, ZEROED_PER_TASK + 1, 5 * ZEROED_PER_TASK + 77] {
            let z = zeroed(len);
            assert_eq!(z.len(), len);
            assert!(z.iter().all(|&v| v.to_bits() == 0), "len {len}");
        }
    }

    fn fixture(name: &str) -> crate::Plan {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../testdata/fixed");
        crate::load_file(&dir.join(name)).unwrap()
    }

    /// A batch run share by share, each share's head in runs of a few images and its tail
    /// over the whole share, computes what it computes whole, bit for bit: a network with a
    /// fully connected tail on pooled features and one without, on one thread and on two,
    /// over a batch of a few head runs and a part.
    #[test]
    fn a_batch_in_head_runs_then_a_tail_computes_what_it_does_whole() {
        for (name, has_tail) in [("fmnist_mobilenet_op13.b16.hass", true), ("depthwise_clip_threshold.b16.hass", false)]
        {
            let plan = fixture(name);
            assert_eq!(tail_start(&plan) < plan.layers.len(), has_tail, "{name}");
            for threads in [1, 2] {
                let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build().unwrap();
                let head_run = Schedule::of(&plan, usize::MAX).head_run;
                let batch = threads * (3 * head_run + 2);
                let share = pool.install(|| images_per_share(batch));
                assert!(head_run < share && Schedule::of(&plan, share).head_run == head_run, "{name}: {head_run}");
                let image: usize = plan.input_shape.iter().product();
                let values = (0..batch * image).map(|i| ((i * 7919 % 2003) as f32 - 1001.0) / 250.0).collect();
                let mut shape = vec![batch];
                shape.extend_from_slice(&plan.input_shape);
                let input = Tensor::new(shape, values).unwrap();
                let bits = |outputs: Vec<Tensor>| -> Vec<Vec<u32>> {
                    outputs.iter().map(|t| t.data().iter().map(|v| v.to_bits()).collect()).collect()
                };
                let (split, whole) = pool
                    .install(|| (run(&plan, &input).unwrap(), run_observed(&plan, &input, &mut |_, _, _| {}).unwrap()));
                assert_eq!(split[0].shape(), whole[0].shape());
                assert_eq!(bits(split), bits(whole), "{name} on {threads} threads");
            }
        }
    }

    /// A head whose weights outnumber its values runs whole but for its opening layers, whose
    /// values outnumber their weights, in runs of images: and computes what the batch
    /// computes whole, bit for bit, a value crossing the split included.
    #[test]
    fn opening_layers_in_runs_then_the_rest_whole_computes_what_the_batch_does_whole() {
        use crate::plan::{Conv, Layer, Op, Plan};
        // (c_in, c_out, kernel, stride, pad, output side): 3x128x128 -> 8x128x128 (216
        // weights), -> 64x16x16 (32 K), then two 3x3 convs of 147 K and 590 K weights on 16x16.
        let convs = [(3, 8, 3, 1, 1, 128), (8, 64, 8, 8, 0, 16), (64, 256, 3, 1, 1, 16), (256, 256, 3, 1, 1, 16)];
        let layers = convs
            .iter()
            .enumerate()
            .map(|(i, &(c_in, c_out, k, stride, pad, side))| {
                let weight = (0..c_out * c_in * k * k).map(|j| ((j * 37 + i) % 29) as f32 / 29.0 - 0.5).collect();
                let conv = Conv {
                    stride: [stride; 2],
                    pads: [pad; 4],
                    activation: Some(crate::plan::Activation::Relu),
                    ..Conv::new(weight, c_in, c_out, [k, k])
                };
                Layer {
                    name: format!("conv{i}"),
                    inputs: vec![i],
                    output_shape: vec![c_out, side, side],
                    op: Op::Conv(conv),
                    hardware: Default::default(),
                    fixed: None,
                }
            })
            .collect();
        let plan = Plan { layers, outputs: vec![4, 2], ..Plan::one_layer(Op::Reshape, vec![3, 128, 128], vec![]) };
        let schedule = Schedule::of(&plan, 8);
        assert_eq!((schedule.split, schedule.head_run), (2, 2), "the opening layers (two convs) in runs of two images");
        let pool = rayon::ThreadPoolBuilder::new().num_threads(1).build().unwrap();
        let values = (0..8 * 3 * 128 * 128).map(|i| ((i * 7919 % 2003) as f32 - 1001.0) / 250.0).collect();
        let input = Tensor::new(vec![8, 3, 128, 128], values).unwrap();
        let bits = |outputs: Vec<Tensor>| -> Vec<Vec<u32>> {
            outputs.iter().map(|t| t.data().iter().map(|v| v.to_bits()).collect()).collect()
        };
        let (split, whole) =
            pool.install(|| (run(&plan, &input).unwrap(), run_observed(&plan, &input, &mut |_, _, _| {}).unwrap()));
        assert_eq!(bits(split), bits(whole));
    }

    /// A conv and the residual add after it run as one where nothing else reads the conv's
    /// output, and compute what they compute apart, bit for bit: the addend either way
    /// round, over batches that run whole and image by image.
    #[test]
    fn a_conv_and_its_residual_add_run_as_one() {
        use super::{fused_residual, last_uses};
        use crate::plan::{Activation, Conv, EltwiseKind, Layer, Op, Plan};
        let weight = (0..4 * 4 * 9).map(|j| ((j * 37) % 29) as f32 / 29.0 - 0.5).collect();
        let conv = Conv { pads: [1; 4], ..Conv::new(weight, 4, 4, [3, 3]) };
        let layer = |name: &str, inputs: Vec<usize>, op: Op| Layer {
            name: name.into(),
            inputs,
            output_shape: vec![4, 6, 6],
            op,
            hardware: Default::default(),
            fixed: None,
        };
        let add = Op::Eltwise { kind: EltwiseKind::Add, activation: Some(Activation::Relu) };
        for (addends, outputs, fused) in
            [(vec![1, 0], vec![2], true), (vec![0, 1], vec![2], true), (vec![1, 0], vec![2, 1], false)]
        {
            let layers = vec![layer("conv", vec![0], Op::Conv(conv.clone())), layer("add", addends, add.clone())];
            let plan = Plan { layers, outputs, ..Plan::one_layer(Op::Reshape, vec![4, 6, 6], vec![]) };
            let want = fused.then_some((0, Some(Activation::Relu)));
            assert_eq!(fused_residual(&plan, 0, 2, &last_uses(&plan)), want, "{:?}", plan.outputs);
            assert_eq!(fused_residual(&plan, 0, 1, &last_uses(&plan)), None, "the add past the range");
            for batch in [1, 5] {
                let values = (0..batch * 144).map(|i| ((i * 7919 % 2003) as f32 - 1001.0) / 250.0).collect();
                let input = Tensor::new(vec![batch, 4, 6, 6], values).unwrap();
                let bits = |outputs: Vec<Tensor>| -> Vec<Vec<u32>> {
                    outputs.iter().map(|t| t.data().iter().map(|v| v.to_bits()).collect()).collect()
                };
                let apart = run_observed(&plan, &input, &mut |_, _, _| {}).unwrap();
                assert_eq!(bits(run(&plan, &input).unwrap()), bits(apart), "batch {batch}");
            }
        }
    }

    /// The tail is the last layers whose outputs are one value per channel: what follows
    /// the last map.
    #[test]
    fn the_tail_starts_after_the_last_map() {
        let plan = fixture("fmnist_mobilenet_op13.b16.hass");
        let tail = tail_start(&plan);
        let per_channel = |l: &crate::plan::Layer| l.output_shape.iter().skip(1).product::<usize>();
        assert!(tail > 0 && per_channel(&plan.layers[tail - 1]) > 1);
        assert!(plan.layers[tail..].iter().all(|l| per_channel(l) == 1));
    }

    /// Each thread's share of the batch: the whole batch on one thread.
    #[test]
    fn shares_are_a_thread_s_part_of_the_batch() {
        let on = |threads: usize, batch: usize| {
            let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build().unwrap();
            pool.install(|| images_per_share(batch))
        };
        assert_eq!(on(1, 1000), 1000);
        assert_eq!(on(2, 1000), 500);
        assert_eq!(on(2, 8), 4);
        assert_eq!(on(3, 8), 3);
        assert_eq!(on(4, 1), 1);
    }

    /// A spare buffer is picked by how many values it holds, the shortest that holds the
    /// output; kept whole (its tail is another value's past) and not zeroed, and a buffer
    /// too short is replaced by a zeroed one.
    #[test]
    fn output_buffers_come_from_the_shortest_spare_that_holds_them() {
        let mut spare = vec![vec![1.0f32; 10], vec![2.0; 4], vec![3.0; 6]];
        let mut out = super::take_spare(&mut spare, 5);
        assert_eq!(out, vec![3.0; 6]);
        super::prepare_output(&mut out, 5);
        assert_eq!(out, vec![3.0; 6], "stale values the layer overwrites, whole");
        assert!(super::take_spare(&mut spare, 11).is_empty(), "none holds 11: a new buffer");
        let mut short = super::take_spare(&mut spare, 4);
        assert_eq!(short, vec![2.0; 4]);
        super::prepare_output(&mut short, 7);
        assert_eq!(short, vec![0.0; 7]);
        assert_eq!(spare, vec![vec![1.0; 10]]);
    }

    /// A thread keeps the largest value buffers of its runs, those of a nested run included,
    /// and the next run starts from them.
    #[test]
    fn a_thread_keeps_its_largest_value_buffers() {
        std::thread::spawn(|| {
            super::keep_value_buffers((1..=6).map(|n| vec![0.0; n]).collect());
            super::keep_value_buffers((7..=10).map(|n| vec![0.0; n]).collect());
            let kept: Vec<usize> = super::VALUE_BUFFERS.with(|k| k.take()).iter().map(Vec::len).collect();
            assert_eq!(kept, (3..=10).rev().collect::<Vec<_>>());
        })
        .join()
        .unwrap();
    }

    #[test]
    fn quantized_input_matches_the_format() {
        let xs = [
            0.0,
            -0.0,
            0.3,
            -0.3,
            1.5,
            2.5,
            -2.5,
            1e9,
            -1e9,
            f32::INFINITY,
            f32::NEG_INFINITY,
            f32::NAN,
            1e-30,
            0.123456,
        ];
        for (bits, frac) in [(16, 12), (8, 4), (4, 1), (16, -3), (2, 0)] {
            let f = Format { bits, frac };
            let want: Vec<f32> = xs.iter().map(|&x| f.to_f32(f.quantize(x as f64))).collect();
            let mut got = vec![f32::NAN; xs.len()];
            quantize_into(f, &xs, &mut got);
            assert_eq!(
                got.iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
                want.iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
                "{f:?}"
            );
        }
    }
}
