//! Cycle simulation of the dataflow accelerator on real inputs: how many cycles per image
//! each stage spends on these very images, with the artifact's folding, so the compiler's
//! cost model can be checked against it.
//!
//! The hardware simulated (REFERENCE §2.3-2.5):
//! - A sparse K x K conv stage has `coarse_in * coarse_group` input streams (channels dealt
//!   as the artifact's channel-to-stream map says) and `coarse_out` filter lanes; each
//!   (stream, lane) pair owns `fine` multipliers and a crossbar, and runs decoupled from the
//!   others through FIFOs. For each window, each of its channels and each of its filters
//!   (filter f goes to lane `f mod coarse_out`), a pair spends `ceil(nnz / fine)` cycles,
//!   skipping all-zero windows. The stage takes as long as its busiest pair, divided over
//!   `spatial` pixel copies, and never less than its input stream (the padded map: the
//!   window reads padding like any word) or its output stream needs.
//! - A sparse 1x1 (or fully connected) stage compacts the non-zero products of all its
//!   channels across the `coarse_in` streams: `ceil(nnz / coarse_in)` cycles per window and
//!   filter.
//! - Dense conv stages and element-wise stages take their analytic cycle count: the same
//!   formula as the compiler's cost model (nothing in them depends on the data), so a
//!   comparison of model and simulation means something only for zero-skipping stages.
//!
//! Off-chip bandwidth is not simulated: the interval here is the slowest stage.

use crate::exec::run_observed;
use crate::kernels::thresholded;
use crate::kernels::windows::{input_zero_mask, weight_zero_masks};
use crate::plan::{Conv, Layer, Op, Plan};
use crate::{RuntimeError, Tensor};
use rayon::prelude::*;
use std::borrow::Cow;

/// One stage's simulated cycles.
#[derive(Clone, Debug, PartialEq)]
pub struct StageCycles {
    /// Layer name.
    pub name: String,
    /// Cycles per image, averaged over the inputs.
    pub cycles: f64,
}

/// A simulation run.
#[derive(Clone, Debug)]
pub struct Simulation {
    /// Per layer, in execution order.
    pub stages: Vec<StageCycles>,
    /// Images simulated.
    pub images: usize,
    /// The slowest stage's cycles per image.
    pub ii_cycles: f64,
    /// Images per second at the artifact's clock.
    pub throughput_fps: f64,
}

/// Analytic cycles of a dense conv stage (the same formula as the compiler's model).
fn dense_conv_cycles(conv: &Conv, hw: &crate::plan::Hardware, in_hw: [usize; 2], out_hw: [usize; 2]) -> f64 {
    let window = conv.kernel[0] * conv.kernel[1];
    let (cin_g, cout_g) = (conv.c_in / conv.groups, conv.c_out / conv.groups);
    let pixels = (out_hw[0] * out_hw[1].div_ceil(hw.spatial)) as f64;
    let compute = pixels
        * (cin_g.div_ceil(hw.coarse_in) * conv.groups.div_ceil(hw.coarse_group)) as f64
        * window.div_ceil(hw.fine) as f64
        * cout_g.div_ceil(hw.coarse_out) as f64;
    compute.max(stream_bound(conv, hw, in_hw, out_hw))
}

fn stream_bound(conv: &Conv, hw: &crate::plan::Hardware, in_hw: [usize; 2], out_hw: [usize; 2]) -> f64 {
    // The window reads the padded map: its zeros take cycles like any word.
    let [top, left, bottom, right] = conv.pads;
    let padded = (in_hw[0] + top + bottom) * (in_hw[1] + left + right);
    let words_in = (conv.c_in * padded) as f64 / (hw.coarse_in * hw.coarse_group * hw.spatial) as f64;
    let words_out = (conv.c_out * out_hw[0] * out_hw[1]) as f64 / (hw.coarse_out * hw.coarse_group * hw.spatial) as f64;
    words_in.max(words_out)
}

/// Per (stream, lane) work of one image at a sparse conv stage.
fn sparse_work(
    conv: &Conv,
    hw: &crate::plan::Hardware,
    masks: &[u128],
    x: &[f32],
    [h, w]: [usize; 2],
    [oh, ow]: [usize; 2],
) -> Vec<f64> {
    let [kh, kw] = conv.kernel;
    let window = kh * kw;
    let (cin_g, cout_g) = (conv.c_in / conv.groups, conv.c_out / conv.groups);
    let streams = hw.coarse_in * hw.coarse_group;
    let lanes = hw.coarse_out;
    let stream_of = |c: usize| hw.channel_stream.get(c).copied().unwrap_or(c % streams);
    let mut work = vec![0f64; streams * lanes];
    // 1x1 stages: non-zero products per (filter, stream) of the current window.
    let mut nnz_1x1 = vec![0u32; if window == 1 { conv.c_out * streams } else { 0 }];
    // Compaction cannot beat coarse_in products per cycle over the dense pass count.
    let floor_1x1 = cin_g.div_ceil(hw.coarse_in) as f64 / hw.coarse_in as f64;
    let mut pairs_per_lane = vec![0f64; lanes];
    for oy in 0..oh {
        for ox in 0..ow {
            nnz_1x1.iter_mut().for_each(|n| *n = 0);
            for c in 0..conv.c_in {
                let plane = &x[c * h * w..][..h * w];
                let amask = input_zero_mask(conv, plane, [h, w], oy, ox);
                let (g, local) = (c / cin_g, c % cin_g);
                let s = stream_of(c);
                for f in 0..cout_g {
                    let filter = g * cout_g + f;
                    let nnz = window as u32 - (amask | masks[filter * cin_g + local]).count_ones();
                    if window == 1 {
                        nnz_1x1[filter * streams + s] += nnz;
                    } else {
                        work[s * lanes + f % lanes] += nnz.div_ceil(hw.fine as u32) as f64;
                    }
                }
            }
            if window == 1 {
                // Each stream skips its zeros, decoupled from the others by FIFOs; the
                // floor (compaction cannot beat coarse_in) is applied to the totals below.
                for (filter, per_stream) in nnz_1x1.chunks_exact(streams).enumerate() {
                    let f = filter % cout_g;
                    for (s, &n) in per_stream.iter().enumerate() {
                        work[s * lanes + f % lanes] += n as f64;
                    }
                    pairs_per_lane[f % lanes] += 1.0;
                }
            }
        }
    }
    if window == 1 {
        for (k, w) in work.iter_mut().enumerate() {
            *w = w.max(floor_1x1 * pairs_per_lane[k % lanes]);
        }
    }
    work
}

/// Simulate `plan` on `images`.
pub fn simulate(plan: &Plan, images: &Tensor) -> Result<Simulation, RuntimeError> {
    let n = images.batch();
    let masks: Vec<Option<Vec<u128>>> = plan
        .layers
        .iter()
        .map(|l| match &l.op {
            Op::Conv(c) if l.hardware.sparse => Some(weight_zero_masks(&c.weight, c.kernel[0] * c.kernel[1])),
            Op::Dense(d) if l.hardware.sparse => Some(weight_zero_masks(&d.weight, 1)),
            _ => None,
        })
        .collect();
    // (stream, lane) work summed over images, per sparse layer.
    let mut work: Vec<Vec<f64>> = plan.layers.iter().map(|_| Vec::new()).collect();
    let per_image: usize = plan.input_shape.iter().product();
    for start in (0..n).step_by(8) {
        let k = 8.min(n - start);
        let mut shape = vec![k];
        shape.extend_from_slice(&plan.input_shape);
        let chunk = Tensor::new(shape, images.data()[start * per_image..(start + k) * per_image].to_vec())?;
        run_observed(plan, &chunk, &mut |i, layer: &Layer, inputs| {
            let Some(m) = &masks[i] else { return };
            let in_shape = plan.value_shape(layer.inputs[0]);
            let len: usize = in_shape.iter().product();
            let (conv, in_hw, out_hw) = as_conv(layer, in_shape);
            let threshold = conv.input_threshold;
            let total = (0..k)
                .into_par_iter()
                .map(|j| {
                    sparse_work(
                        &conv,
                        &layer.hardware,
                        m,
                        &thresholded(&inputs[0][j * len..][..len], threshold),
                        in_hw,
                        out_hw,
                    )
                })
                .reduce_with(|a, b| a.iter().zip(&b).map(|(x, y)| x + y).collect())
                .unwrap_or_default();
            if work[i].is_empty() {
                work[i] = total;
            } else {
                work[i].iter_mut().zip(&total).for_each(|(a, b)| *a += b);
            }
        })?;
    }
    let stages: Vec<StageCycles> = plan
        .layers
        .iter()
        .enumerate()
        .map(|(i, layer)| {
            let in_shape = plan.value_shape(layer.inputs[0]);
            let hw = &layer.hardware;
            let cycles = match &layer.op {
                Op::Conv(_) | Op::Dense(_) => {
                    let (conv, in_hw, out_hw) = as_conv(layer, in_shape);
                    if hw.sparse {
                        let busiest = work[i].iter().copied().fold(0.0, f64::max) / n.max(1) as f64;
                        let spatial =
                            (out_hw[0] * out_hw[1].div_ceil(hw.spatial)) as f64 / (out_hw[0] * out_hw[1]) as f64;
                        (busiest * spatial).max(stream_bound(&conv, hw, in_hw, out_hw))
                    } else {
                        dense_conv_cycles(&conv, hw, in_hw, out_hw)
                    }
                }
                Op::Reshape => 0.0,
                Op::Pool(_) | Op::GlobalAveragePool => lanes_cycles(hw, in_shape),
                _ => lanes_cycles(hw, &layer.output_shape),
            };
            StageCycles { name: layer.name.clone(), cycles }
        })
        .collect();
    let ii_cycles = stages.iter().map(|s| s.cycles).fold(1.0, f64::max);
    Ok(Simulation { stages, images: n, ii_cycles, throughput_fps: plan.clock_mhz * 1e6 / ii_cycles })
}

/// An element-wise stage walks its map with `coarse_in` channel lanes and `spatial` pixels.
fn lanes_cycles(hw: &crate::plan::Hardware, shape: &[usize]) -> f64 {
    let (c, h, w) = match shape {
        [c, h, w] => (*c, *h, *w),
        [c] => (*c, 1, 1),
        other => (other.iter().product(), 1, 1),
    };
    (c.div_ceil(hw.coarse_in) * h * w.div_ceil(hw.spatial)) as f64
}

/// A conv or fully connected layer as conv geometry (FC: 1x1 on a 1x1 map).
fn as_conv<'a>(layer: &'a Layer, in_shape: &[usize]) -> (Cow<'a, Conv>, [usize; 2], [usize; 2]) {
    match &layer.op {
        Op::Conv(c) => (Cow::Borrowed(c), [in_shape[1], in_shape[2]], [layer.output_shape[1], layer.output_shape[2]]),
        Op::Dense(d) => (Cow::Owned(d.geometry()), [1, 1], [1, 1]),
        _ => unreachable!("conv or dense"),
    }
}
