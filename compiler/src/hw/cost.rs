//! Cycles and resources of one stage at one folding (REFERENCE §2.1-2.7).
//!
//! Where this model departs from fpgaConvNet's, and why:
//! - Folding factors need not divide the channel counts: a stage with `coarse_out = 3` on 64
//!   channels runs `ceil(64 / 3) = 22` passes with one lane idle on the last. Divisor-only
//!   factors quantise parallelism so coarsely (64 channels: 1, 2, 4, 8, ...) that a balanced
//!   pipeline sits far below the DSP roofline; the idle lanes are charged all the same.
//! - `spatial` (pixels per cycle, FINN's multi-pixel mode, HPIPE) lets the stages on large
//!   early maps take several pixels per cycle. It multiplies multipliers, window logic and
//!   line-buffer width, not weight memory (the pixels share the weights).
//! - Cycles count what the hardware streams: a conv stage's window reads the padded map,
//!   padding included, as fpgaConvNet's does (a 3x3 depthwise stage on a 7x7 map is bound by
//!   81 words per channel, not 49).
//! - Activations are fused into the stage that produces their input and charged per output
//!   lane; stand-alone element-wise stages get as many lanes as the pipeline needs.
//!
//! Resources: each stage is the sum of its building blocks ([`modules`]: sliding window
//! and line buffers per input stream, squeeze, fork, dot products, accumulators, adder tree,
//! bias, activation), each calibrated on fpgaConvNet's per-module coefficients fitted to
//! synthesis; widths enter every term (the accumulator is the fixed-point datapath's). The
//! weights of a dense stage are one memory as wide as all its multipliers' words (they read
//! one address together), as fpgaConvNet's generator packs them; the biases sit beside them
//! at the accumulator's width. `scripts/check_fpgaconvnet.py` compares whole layers with
//! fpgaConvNet's layer models at equal folding (`tests::matches_fpgaconvnet_layer_models_at_equal_folding`
//! pins three). Where hassc departs from fpgaConvNet on purpose, the hardware is priced:
//! idle lanes of non-divisor factors, `spatial` copies of the window and datapath, an
//! accumulator wherever a sum runs over several cycles (fpgaConvNet drops it when each
//! stream sees one channel even at `fine` below the window), width converters between
//! stages ([`super::pipeline::Network::converters`]), and the zero-skipping crossbar, which
//! replaces the squeeze (its per-pair LUT constant is an estimate, not a fit).

use super::memory;
use super::modules;
use super::sparse::{max_stream_mean, LayerSparsity, MemoKey};
use super::stage::{LaneOp, Stage, StageKind};
use super::{Precision, Usage};
use crate::ir::{Activation, EltwiseKind, PoolKind};

/// Sparse crossbar per input lane, per (tap x multiplier) pair at 16 bit, plus zero detect.
pub const LUT_PER_XBAR_16: f64 = 6.0;

/// How many ways a stage is unrolled.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Folding {
    /// Input channels in parallel (per group); channel lanes for element-wise stages.
    pub coarse_in: usize,
    /// Output channels in parallel (per group).
    pub coarse_out: usize,
    /// Groups in parallel.
    pub coarse_group: usize,
    /// Multipliers per window.
    pub fine: usize,
    /// Output pixels per cycle.
    pub spatial: usize,
}

impl Folding {
    /// No parallelism at all.
    pub const ONE: Folding = Folding { coarse_in: 1, coarse_out: 1, coarse_group: 1, fine: 1, spatial: 1 };
}

/// Where a conv stage keeps its weights.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Placement {
    /// Block RAM (or LUTRAM when tiny).
    Bram,
    /// UltraRAM.
    Uram,
    /// Streamed from off-chip memory once per image, through a small on-chip FIFO.
    OffChip,
}

impl Placement {
    /// Name in reports.
    pub fn name(self) -> &'static str {
        match self {
            Placement::Bram => "bram",
            Placement::Uram => "uram",
            Placement::OffChip => "off-chip",
        }
    }
}

/// A stage's cost at one folding.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct StageCost {
    /// Cycles per image.
    pub cycles: f64,
    /// Resources.
    pub usage: Usage,
}

/// Cost of `stage` at `folding`, weights at `placement`, with `sparsity` (conv stages only),
/// at the stage's own operand widths.
pub fn stage_cost(
    stage: &Stage,
    folding: Folding,
    placement: Placement,
    sparsity: Option<&LayerSparsity>,
) -> StageCost {
    match &stage.kind {
        StageKind::Conv { .. } => conv_cost(stage, folding, placement, sparsity),
        StageKind::Lanes { .. } => lanes_cost(stage, folding),
        StageKind::Free => StageCost { cycles: 0.0, usage: Usage::default() },
    }
}

/// Cycles of a conv stage (REFERENCE §2.2-2.4, with ceilings for non-divisor factors).
pub fn conv_cycles(stage: &Stage, f: Folding, sparsity: Option<&LayerSparsity>) -> f64 {
    let StageKind::Conv { c_in, c_out, groups, kernel, padded_hw, out_hw, .. } = stage.kind else {
        unreachable!("conv stage")
    };
    let window = kernel[0] * kernel[1];
    let (cin_g, cout_g) = (c_in / groups, c_out / groups);
    let pixels = (out_hw[0] * out_hw[1].div_ceil(f.spatial)) as f64;
    let channel_passes = cin_g.div_ceil(f.coarse_in) * groups.div_ceil(f.coarse_group);
    let filter_passes = cout_g.div_ceil(f.coarse_out) as f64;
    let compute = match sparsity.filter(|s| s.is_sparse()) {
        None => pixels * channel_passes as f64 * window.div_ceil(f.fine) as f64 * filter_passes,
        Some(s) => {
            let key = MemoKey::Folding {
                fine: f.fine,
                coarse_in: f.coarse_in,
                coarse_group: f.coarse_group,
                coarse_out: f.coarse_out,
            };
            pixels * s.memo.get_or(key, || sparse_pixel_cycles(&stage.kind, f, s))
        }
    };
    // The window reads the padded map: its zeros take cycles like any word.
    let words_in = (c_in * padded_hw[0] * padded_hw[1]) as f64 / (f.coarse_in * f.coarse_group * f.spatial) as f64;
    let words_out = (c_out * out_hw[0] * out_hw[1]) as f64 / (f.coarse_out * f.coarse_group * f.spatial) as f64;
    compute.max(words_in).max(words_out)
}

/// Compute cycles per output pixel of a sparse conv stage at folding `f` (any spatial).
fn sparse_pixel_cycles(kind: &StageKind, f: Folding, s: &LayerSparsity) -> f64 {
    let StageKind::Conv { c_in, c_out, groups, kernel, .. } = *kind else { unreachable!("conv stage") };
    let window = kernel[0] * kernel[1];
    let (cin_g, cout_g) = (c_in / groups, c_out / groups);
    let channel_passes = cin_g.div_ceil(f.coarse_in) * groups.div_ceil(f.coarse_group);
    let filter_passes = cout_g.div_ceil(f.coarse_out) as f64;
    match s {
        s if !s.pair_cycles.is_empty() => {
            let streams = f.coarse_in * f.coarse_group;
            let floor = (window == 1).then(|| cin_g.div_ceil(f.coarse_in) as f64 / f.coarse_in as f64);
            s.busiest_unit(window, f.fine, c_in, streams, f.coarse_out, floor).unwrap_or(0.0)
        }
        s => {
            let streams = f.coarse_in * f.coarse_group;
            let worst = s.memo.get_or(MemoKey::BusiestStream { fine: f.fine, streams }, || {
                let loads = s.loads(window, f.fine);
                if loads.channels.len() == 1 {
                    loads.channels[0]
                } else {
                    max_stream_mean(&loads.channels, &s.stream_assignment(window, f.fine, streams), streams)
                }
            });
            // A 1x1 window holds one product: skipping needs compaction across the input
            // streams, so the speed-up is capped at coarse_in (none with one stream).
            let worst = if window == 1 { worst.max(1.0 / f.coarse_in as f64) } else { worst };
            // Filter lanes: the busiest one, if filters differ.
            let lanes = s.memo.get_or(MemoKey::LanePasses { fine: f.fine, lanes: f.coarse_out }, || {
                s.lane_passes(window, f.fine, groups, f.coarse_out)
            });
            let filter_passes = if lanes.is_nan() { filter_passes } else { lanes };
            channel_passes as f64 * filter_passes * worst
        }
    }
}

fn bits_scale(bits: u32) -> f64 {
    bits as f64 / 16.0
}

/// LUTs, DSPs and BRAMs of an activation applied on `lanes` parallel words.
fn activation_usage(act: Option<Activation>, lanes: f64, precision: Precision) -> Usage {
    let b = precision.activation_bits as f64;
    let (lut, dsp, bram18) = match act {
        None => (0.0, 0.0, 0.0),
        Some(Activation::Relu) => (0.5 * b, 0.0, 0.0),
        Some(Activation::Clip { .. }) => (1.0 * b, 0.0, 0.0),
        // A multiply by a constant and a clamp: shift-add logic.
        Some(Activation::HardSigmoid { .. }) => (3.0 * b, 0.0, 0.0),
        // x * relu6(x + 3) / 6: one real multiplier.
        Some(Activation::HardSwish) => (3.0 * b, precision.dsp_per_mult(), 0.0),
        // A 1024-entry lookup table shared by two lanes (one BRAM18 port each).
        Some(Activation::Sigmoid) => (1.0 * b, 0.0, 0.5),
    };
    Usage {
        lut: lut * lanes,
        // The result is registered.
        ff: if act.is_some() { b * lanes } else { 0.0 },
        dsp: (dsp * lanes).ceil(),
        bram18: (bram18 * lanes).ceil(),
        ..Usage::default()
    }
}

/// Resources and cycles of a conv stage.
pub fn conv_cost(stage: &Stage, f: Folding, placement: Placement, sparsity: Option<&LayerSparsity>) -> StageCost {
    let (core, weights) = conv_cost_parts(stage, f, sparsity);
    StageCost { cycles: core.cycles, usage: core.usage + weights.at(placement) }
}

/// The weight memory of a conv stage under each placement.
#[derive(Clone, Copy, Debug)]
pub struct WeightMemory {
    banks: u64,
    depth: u64,
    width: u64,
    /// Whether the banks share one address (one wide memory) or each has its own.
    packed: bool,
    bits: f64,
}

impl WeightMemory {
    /// Resources of the weights at `placement`.
    pub fn at(&self, placement: Placement) -> Usage {
        match placement {
            Placement::Bram if self.packed => memory::bram(1, self.banks * self.width, self.depth).usage(),
            Placement::Bram => memory::bram(self.banks, self.width, self.depth).usage(),
            Placement::Uram => {
                let (banks, width) = if self.packed { (1, self.banks * self.width) } else { (self.banks, self.width) };
                Usage { uram: memory::uram(banks, width, self.depth) as f64, ..Usage::default() }
            }
            Placement::OffChip => Usage {
                // A 512-deep FIFO per 36 bits of bank width, refilled from memory.
                bram18: ((self.banks * self.width) as f64 / 36.0).ceil(),
                offchip_bits: self.bits,
                ..Usage::default()
            },
        }
    }
}

/// A conv stage's cost without its weight memory, and that memory's shape: the
/// allocator prices every placement of one folding from a single evaluation.
///
/// The stage is built from [`modules`]: each input stream (`coarse_in x coarse_group x
/// spatial` of them) has its padding, sliding window and, when `fine` is below the window
/// size, a squeeze; a fork copies its windows to the `coarse_out` output lanes; every
/// input-output stream pair has a dot product of `fine` multipliers and, when a sum runs
/// over several cycles, an accumulator; an adder tree joins the input streams; then bias
/// and activation per output lane.
pub fn conv_cost_parts(stage: &Stage, f: Folding, sparsity: Option<&LayerSparsity>) -> (StageCost, WeightMemory) {
    let precision = stage.precision;
    let StageKind::Conv { c_in, c_out, groups, kernel, in_hw, padded_hw, activation, .. } = stage.kind else {
        unreachable!("conv stage")
    };
    let window = kernel[0] * kernel[1];
    let (cin_g, cout_g) = (c_in / groups, c_out / groups);
    let data = precision.activation_bits;
    // The fixed-point datapath's accumulator: wide enough that no sum can overflow.
    let acc = hass_proto::fixed::accumulator_bits(precision.weight_bits, data, (cin_g * window) as u64);
    let in_streams = f.coarse_in * f.coarse_group * f.spatial;
    let out_streams = f.coarse_out * f.coarse_group * f.spatial;
    let pair_streams = f.coarse_in * f.coarse_out * f.coarse_group * f.spatial;
    let channels_per_stream = c_in.div_ceil(f.coarse_in * f.coarse_group);

    let mut usage = Usage::default();
    if padded_hw != in_hw {
        usage += modules::pad();
    }
    if window > 1 {
        let cols = padded_hw[1].div_ceil(f.spatial);
        usage += modules::sliding_window(in_streams, data, kernel, channels_per_stream, cols);
    }
    let sparse = sparsity.is_some_and(|s| s.is_sparse());
    // With zero skipping the crossbar below hands the window's non-zero taps to the
    // multipliers: it replaces the squeeze.
    if f.fine < window && !sparse {
        usage += modules::squeeze(in_streams, data, window, f.fine);
    }
    usage += modules::fork(in_streams, data, f.fine, f.coarse_out);
    let mults = (f.fine * pair_streams) as f64;
    usage.dsp += (mults * precision.dsp_per_mult()).ceil();
    usage += modules::dot_products(pair_streams, f.fine, acc);
    // Partial sums per output: the input channels a stream takes in turn, times the window
    // slices when fine is below the window.
    let depth = cin_g.div_ceil(f.coarse_in) * window.div_ceil(f.fine);
    usage += modules::accumulators(pair_streams, acc, cout_g.div_ceil(f.coarse_out), depth);
    usage += modules::input_adder_tree(out_streams, acc, f.coarse_in);
    usage += modules::bias(out_streams, data);
    // The biases, at the accumulator's width, one word per output lane read together: one
    // memory beside the weights but always on chip.
    let bias_lanes = (f.coarse_out * f.coarse_group) as u64;
    usage += memory::bram(1, acc as u64 * bias_lanes, c_out.div_ceil(f.coarse_out * f.coarse_group) as u64).usage();
    if sparse {
        // Zero skipping: a crossbar per input stream from the window's taps to the
        // multipliers, and zero detection.
        let xbar = (in_streams * window * f.fine) as f64 * LUT_PER_XBAR_16 * bits_scale(data);
        usage += Usage { lut: xbar, ff: xbar, ..Usage::default() };
    }
    usage += activation_usage(activation, out_streams as f64, precision);

    // Weights: one memory as wide as all multipliers' words together (every multiplier reads
    // its weight at the same address), holding the filters' share of each; a sparse encoding
    // gives each bank its own depth: its share of the encoded bits.
    let banks = (f.fine * f.coarse_in * f.coarse_out * f.coarse_group) as u64;
    let wb = precision.weight_bits as u64;
    let dense_depth = (cout_g.div_ceil(f.coarse_out)
        * cin_g.div_ceil(f.coarse_in)
        * groups.div_ceil(f.coarse_group)
        * window.div_ceil(f.fine)) as u64;
    let weights = match stage.encoded_weight_bits {
        Some(encoded) => WeightMemory {
            banks,
            depth: encoded.div_ceil(banks * wb).min(dense_depth),
            width: wb,
            packed: false,
            bits: encoded as f64,
        },
        None => WeightMemory { banks, depth: dense_depth, width: wb, packed: true, bits: (stage.weights * wb) as f64 },
    };
    (StageCost { cycles: conv_cycles(stage, f, sparsity), usage }, weights)
}

/// Resources and cycles of an element-wise, pooling or concatenation stage with
/// `coarse_in` channel lanes times `spatial` pixels, built from [`modules`].
pub fn lanes_cost(stage: &Stage, f: Folding) -> StageCost {
    let precision = stage.precision;
    let StageKind::Lanes { op, channels, rows, cols, window, activation, .. } = stage.kind else {
        unreachable!("lanes stage")
    };
    let lanes = f.coarse_in * f.spatial;
    let cycles = (channels.div_ceil(f.coarse_in) * rows * cols.div_ceil(f.spatial)) as f64;
    let data = precision.activation_bits;
    let b = data as f64;
    let per_stream = channels.div_ceil(f.coarse_in);
    // One multiplier per lane, for the ops that multiply.
    let multipliers = Usage { dsp: (lanes as f64 * precision.dsp_per_mult()).ceil(), ..Usage::default() };
    let mut usage = match op {
        LaneOp::Pool(kind) => {
            let kernel = window.unwrap_or([1, 1]);
            let mut u = modules::pool(lanes, data, kernel);
            if kernel[0] * kernel[1] > 1 {
                u += modules::sliding_window(lanes, data, kernel, per_stream, cols.div_ceil(f.spatial));
            }
            if kind == PoolKind::Average {
                // The division by the window size: a multiply by a constant.
                u.lut += 3.0 * b * lanes as f64;
            }
            u
        }
        LaneOp::GlobalPool => modules::global_pool(data, 2 * data, per_stream) * lanes as f64,
        LaneOp::Eltwise(EltwiseKind::Add) => modules::eltwise() * lanes as f64,
        LaneOp::Eltwise(EltwiseKind::Mul) => modules::eltwise() * lanes as f64 + multipliers,
        LaneOp::ScaleShift => (modules::eltwise() + modules::bias(1, data)) * lanes as f64 + multipliers,
        LaneOp::Activation(a) => activation_usage(Some(a), lanes as f64, precision),
        // A mux per lane and bit, registered.
        LaneOp::Concat => Usage { lut: b * lanes as f64, ff: b * lanes as f64, ..Usage::default() },
    };
    usage += activation_usage(activation, lanes as f64, precision);
    StageCost { cycles, usage }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hw::sparse::LayerSparsity;

    #[test]
    fn the_window_streams_the_padded_map() {
        // Depthwise 3x3 on 7x7, pad 1, fully unrolled: compute takes 49 cycles per channel
        // stream, reading the padded 9x9 map 81.
        let mut stage = conv(32, 32, 32, 3, 7, 1);
        let full = Folding { coarse_in: 1, coarse_out: 1, coarse_group: 32, fine: 9, spatial: 1 };
        assert_eq!(conv_cycles(&stage, full, None), 49.0);
        if let StageKind::Conv { padded_hw, .. } = &mut stage.kind {
            *padded_hw = [9, 9];
        }
        assert_eq!(conv_cycles(&stage, full, None), 81.0);
        // Where compute dominates (one multiplier per window, 8 channel passes), padding
        // changes nothing.
        let slow = Folding { coarse_group: 4, fine: 1, ..full };
        assert_eq!(conv_cycles(&stage, slow, None), 49.0 * 9.0 * 8.0);
    }

    fn conv(c_in: usize, c_out: usize, groups: usize, k: usize, hw: usize, stride: usize) -> Stage {
        let out = hw / stride;
        Stage {
            node: Default::default(),
            name: "c".into(),
            op: "Conv".into(),
            kind: StageKind::Conv {
                c_in,
                c_out,
                groups,
                kernel: [k, k],
                in_hw: [hw, hw],
                padded_hw: [hw, hw],
                out_hw: [out, out],
                activation: None,
            },
            macs: (c_out * out * out * c_in / groups * k * k) as u64,
            weights: (c_out * c_in / groups * k * k) as u64,
            encoded_weight_bits: None,
            precision: Precision::default(),
            words_out: c_out * out * out,
            inputs: vec![None],
        }
    }

    fn fold(ci: usize, co: usize, cg: usize, fine: usize, p: usize) -> Folding {
        Folding { coarse_in: ci, coarse_out: co, coarse_group: cg, fine, spatial: p }
    }

    #[test]
    fn dense_3x3_conv_cycles() {
        // 64 -> 64, 3x3, 56x56, ci 4, co 8, fine 3: 3136 px * (64 * 9 / 12) * (64 / 8) = 1,204,224.
        let s = conv(64, 64, 1, 3, 56, 1);
        assert_eq!(conv_cycles(&s, fold(4, 8, 1, 3, 1), None), 3136.0 * 48.0 * 8.0);
        // Fully unrolled it is bound by streaming the output, 64 words over 64 lanes per pixel.
        assert_eq!(conv_cycles(&s, fold(64, 64, 1, 9, 1), None), 3136.0);
        // Two pixels per cycle halve it.
        assert_eq!(conv_cycles(&s, fold(64, 64, 1, 9, 2), None), 1568.0);
    }

    #[test]
    fn non_divisor_factors_round_up() {
        // 64 output channels over 3 lanes: 22 passes.
        let s = conv(8, 64, 1, 1, 4, 1);
        assert_eq!(conv_cycles(&s, fold(8, 3, 1, 1, 1), None), 16.0 * 22.0);
    }

    #[test]
    fn reference_sparse_example_two_cycles_per_window() {
        // Every window has 5 non-zero products: at fine 3, 2 cycles per window, not 3.
        let s = conv(16, 16, 1, 3, 8, 1);
        let mut h = vec![0.0; 10];
        h[4] = 1.0;
        let sp = LayerSparsity {
            weight: None,
            activation: None,
            product: 4.0 / 9.0,
            histograms: std::sync::Arc::new(vec![h]),
            filter_histograms: Default::default(),
            pair_cycles: Default::default(),
            memo: Default::default(),
        };
        let dense = conv_cycles(&s, fold(4, 4, 1, 3, 1), None);
        let sparse = conv_cycles(&s, fold(4, 4, 1, 3, 1), Some(&sp));
        assert_eq!(dense, 64.0 * 4.0 * 3.0 * 4.0);
        assert_eq!(sparse, 64.0 * 4.0 * 2.0 * 4.0);
    }

    #[test]
    fn cached_figures_are_those_of_each_folding_on_its_own() {
        // Channels and filters of unlike sparsity (no per-pair figures): the busiest stream
        // and the lane passes are shared by foldings with the same (fine, streams) and
        // (fine, coarse_out); each must come out as a fresh cache gives it.
        for (k, groups) in [(3, 1), (1, 1), (3, 2)] {
            let window = k * k;
            let histogram = |seed: usize| {
                let mut h: Vec<f64> = (0..=window).map(|j| ((seed * 7 + j * 13) % 11) as f64 + 0.5).collect();
                let total: f64 = h.iter().sum();
                h.iter_mut().for_each(|v| *v /= total);
                h
            };
            let sparsity = || LayerSparsity {
                weight: None,
                activation: None,
                product: 0.5,
                histograms: std::sync::Arc::new((0..12).map(histogram).collect()),
                filter_histograms: std::sync::Arc::new((0..10).map(|f| histogram(f + 50)).collect()),
                pair_cycles: Default::default(),
                memo: Default::default(),
            };
            let stage = conv(12, 10, groups, k, 6, 1);
            let foldings: Vec<Folding> = (1..=window)
                .flat_map(|fine| (1..=12 / groups).flat_map(move |ci| (1..=10 / groups).map(move |co| (fine, ci, co))))
                .flat_map(|(fine, ci, co)| (1..=groups).map(move |cg| fold(ci, co, cg, fine, 1)))
                .collect();
            let shared = sparsity();
            for f in foldings.iter().rev().chain(&foldings) {
                let alone = conv_cycles(&stage, *f, Some(&sparsity()));
                assert_eq!(conv_cycles(&stage, *f, Some(&shared)), alone, "{f:?}, k {k}, groups {groups}");
            }
        }
    }

    #[test]
    fn pointwise_with_one_input_stream_gets_no_sparse_speedup() {
        let s = conv(64, 64, 1, 1, 8, 1);
        let sp = LayerSparsity::uniform(0.6, 1);
        let f1 = fold(1, 8, 1, 1, 1);
        assert_eq!(conv_cycles(&s, f1, Some(&sp)), conv_cycles(&s, f1, None));
        // With 4 input streams the 40 % non-zeros are compacted: 0.4 of dense.
        let f4 = fold(4, 8, 1, 1, 1);
        let ratio = conv_cycles(&s, f4, Some(&sp)) / conv_cycles(&s, f4, None);
        assert!((ratio - 0.4).abs() < 1e-9, "{ratio}");
        // ... but never faster than coarse_in allows: at 90 % sparsity, 1/4.
        let very = LayerSparsity::uniform(0.9, 1);
        assert!((conv_cycles(&s, f4, Some(&very)) / conv_cycles(&s, f4, None) - 0.25).abs() < 1e-9);
    }

    #[test]
    fn weight_memory_in_bram_for_a_given_shape() {
        // 512 -> 512, 3x3 at ci 8, co 8, fine 9: 576 multipliers read one 16-bit word each at
        // one address: one memory 9216 bits wide, 512/8 * 512/8 = 4096 words deep. 36 x 512
        // blocks: 256 across, 8 down; 18 x 1024: 512 x 4; the same 2048 BRAM18s.
        let s = conv(512, 512, 1, 3, 7, 1);
        let f = fold(8, 8, 1, 9, 1);
        let (_, weights) = conv_cost_parts(&s, f, None);
        assert_eq!(weights.at(Placement::Bram).bram18, 2048.0);
        // The stage adds its line buffers and the bias memory (32 + 13 = 45-bit words, 8
        // lanes x 64 deep: 360 bits wide, 10 blocks) to its weights.
        let total = conv_cost(&s, f, Placement::Bram, None).usage.bram18;
        assert!(total >= 2048.0 + 10.0, "{total}");
        // In URAM: 9216 / 72 = 128 columns of 4096 words.
        assert_eq!(conv_cost(&s, f, Placement::Uram, None).usage.uram, 128.0);
        let off = conv_cost(&s, f, Placement::OffChip, None).usage;
        assert_eq!(off.offchip_bits, (512 * 512 * 9 * 16) as f64);
    }

    #[test]
    fn precision_sets_dsps_per_multiplier() {
        let s = conv(16, 16, 1, 3, 8, 1);
        let f = fold(4, 4, 1, 3, 1);
        let at = |bits| {
            let s = Stage { precision: Precision { weight_bits: bits, activation_bits: bits }, ..s.clone() };
            conv_cost(&s, f, Placement::Bram, None).usage.dsp
        };
        assert_eq!((at(16), at(8), at(4)), (48.0, 24.0, 12.0));
    }

    #[test]
    fn matches_fpgaconvnet_layer_models_at_equal_folding() {
        // fpgaConvNet's own layer models (chisel, edfbeb6) for three resnet18 / mobilenet_v2
        // layers at hassc's folding, as `scripts/check_fpgaconvnet.py` printed them (the
        // accumulator as wide as hassc's): (LUT, FF, BRAM18).
        let padded = |mut s: Stage, p: usize| {
            if let StageKind::Conv { padded_hw, in_hw, .. } = &mut s.kind {
                *padded_hw = [in_hw[0] + 2 * p, in_hw[1] + 2 * p];
            }
            s
        };
        let cases = [
            // layer1.0.conv1: 64 -> 64, 3x3, 56x56, pad 1.
            (padded(conv(64, 64, 1, 3, 56, 1), 1), fold(8, 16, 1, 3, 1), (67373.0, 55907.0, 198.0)),
            // layer2.0.downsample: 64 -> 128, 1x1, stride 2.
            (conv(64, 128, 1, 1, 56, 2), fold(8, 4, 1, 1, 1), (10416.0, 7676.0, 20.0)),
            // features.2 depthwise: 96 channels, 3x3, stride 2, 112x112, pad 1.
            (padded(conv(96, 96, 96, 3, 112, 2), 1), fold(1, 1, 24, 3, 1), (43815.0, 24966.0, 78.0)),
        ];
        for (stage, f, (lut, ff, bram18)) in cases {
            let u = conv_cost(&stage, f, Placement::Bram, None).usage;
            for (ours, theirs, what) in [(u.lut, lut, "LUT"), (u.ff, ff, "FF"), (u.bram18, bram18, "BRAM18")] {
                assert!((ours / theirs - 1.0).abs() < 0.1, "{what}: {ours} vs fpgaConvNet's {theirs} at {f:?}");
            }
        }
    }
}
