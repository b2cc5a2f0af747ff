//! The quantizer: chooses the fixed-point format of every value of a graph (ARCHITECTURE.md,
//! "Datapath"). Weight formats follow from the weights themselves ([`weight_formats`], per
//! output channel); activation formats from ranges measured by running the float model
//! ([`ranges`]) on the calibration images, or, without them, on seeded standard-normal
//! images (what a model fed normalised images sees).

pub mod ranges;

use crate::board::Board;
use crate::design::Widths;
use crate::error::Result;
use crate::ir::{Activation, Graph, NodeId, Op, PoolKind};
use hass_proto::fixed::{Format, MAX_DATA_BITS};
use hass_runtime::Tensor;
use rayon::prelude::*;
use std::collections::HashMap;

/// The margin over the largest magnitude seen, so that images beyond the calibration set
/// rarely saturate: 1.25 inside the network, 2 (one bit) on its outputs, where a saturated
/// logit can tie with another and change the prediction.
const HEADROOM: f64 = 1.25;
const OUTPUT_HEADROOM: f64 = 2.0;
/// Finer formats tried below the one that holds everything: each clips the largest values
/// a little more and halves the step for all the others.
const FINER_FORMATS_TRIED: i32 = 3;

/// Which arithmetic an artifact holds.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Datapath {
    /// Fixed point, as the accelerator computes (ARCHITECTURE.md, "Datapath").
    #[default]
    Fixed,
    /// Float32: the reference datapath.
    Float,
}

/// Images drawn when no calibration images are given.
pub const SYNTHETIC_IMAGES: usize = 16;

/// Every value's format, keyed by the node that computes it.
#[derive(Clone, Debug, PartialEq)]
pub struct Quantization {
    /// The input's format.
    pub input: Format,
    /// Per layer: its output's format, and the pre-activation format where its activation
    /// reads one.
    pub layers: HashMap<NodeId, LayerFormats>,
    /// Where the activation ranges came from, for reports.
    pub source: String,
}

/// One layer's value formats.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct LayerFormats {
    /// Its weights' width (per-channel formats follow from the weights when they are
    /// written; unused by layers without weights).
    pub weight_bits: u32,
    /// The output stream's format.
    pub output: Format,
    /// The output is never negative and its width's bits are all magnitude: `output` is
    /// the signed format one bit wider that holds the same values.
    pub unsigned: bool,
    /// HardSigmoid, HardSwish, Sigmoid: where the activation unit reads its input.
    pub pre_activation: Option<Format>,
}

impl Quantization {
    /// The format of value `id` (the input or a layer's output).
    pub fn format_of(&self, graph: &Graph, id: NodeId) -> Format {
        self.stream_of(graph, id).0
    }

    /// The format of value `id` and whether it is unsigned (the input never is).
    pub fn stream_of(&self, graph: &Graph, id: NodeId) -> (Format, bool) {
        if id == graph.input {
            (self.input, false)
        } else {
            (self.layers[&id].output, self.layers[&id].unsigned)
        }
    }
}

/// Per output channel of a weight tensor (rows of its first dimension): the format of
/// `bits` with the least squared error over that channel's weights, of the one holding its
/// largest magnitude and a few finer ones (which clip the largest weights).
pub fn weight_formats(data: &[f32], channels: usize, bits: u32) -> Vec<Format> {
    data.par_chunks(data.len().div_ceil(channels.max(1)).max(1)).map(|row| weight_format(row, bits)).collect()
}

/// The format of one output channel's weights `row` at `bits` (see [`weight_formats`]).
pub fn weight_format(row: &[f32], bits: u32) -> Format {
    let seen = ranges::Seen { max_abs: row.iter().fold(0f64, |m, &w| m.max((w as f64).abs())), sample: row.to_vec() };
    least_error_format(bits, &seen, 1.0, f64::INFINITY)
}

/// A weighted layer in integers.
#[derive(Clone, Debug, PartialEq)]
pub struct QuantizedWeights {
    /// Per output channel, its weights' format.
    pub formats: Vec<Format>,
    /// The weights, each in its channel's format.
    pub weights: Vec<i64>,
    /// Per output channel, the bias at the accumulator's binary point (input frac plus the
    /// channel's), in `accumulator_bits - 1` bits.
    pub biases: Vec<i64>,
    /// The accumulator width the layer needs (ARCHITECTURE.md, "Datapath").
    pub accumulator_bits: u32,
}

/// `weights` (`channels` rows) and `biases` of a layer reading values of format `input`
/// (`unsigned` where the stream is, see [`LayerFormats::unsigned`]), in `bits`-wide
/// integers: what the backend writes and the search evaluates.
pub fn quantize_weights(
    weights: &[f32],
    biases: &[f32],
    channels: usize,
    bits: u32,
    (input, unsigned): (Format, bool),
) -> QuantizedWeights {
    let fan_in = weights.len() / channels.max(1);
    let input_bits = hass_proto::fixed::stream_width(input, unsigned);
    let accumulator_bits = hass_proto::fixed::accumulator_bits(bits, input_bits, fan_in as u64);
    let formats = weight_formats(weights, channels, bits);
    let mut ints = vec![0; weights.len()];
    ints.par_chunks_mut(fan_in.max(1)).zip(weights.par_chunks(fan_in.max(1))).zip(&formats).for_each(
        |((ints, row), f)| {
            for (q, &v) in ints.iter_mut().zip(row) {
                *q = f.quantize(v as f64);
            }
        },
    );
    let biases = biases
        .iter()
        .zip(&formats)
        .map(|(&b, f)| Format { bits: accumulator_bits - 1, frac: input.frac + f.frac }.quantize(b as f64))
        .collect();
    QuantizedWeights { formats, weights: ints, biases, accumulator_bits }
}

/// The largest magnitude `activation` can output, where it is bounded.
fn bound(activation: Option<Activation>) -> f64 {
    match activation {
        Some(Activation::Clip { min, max }) => (min.abs()).max(max.abs()) as f64,
        Some(Activation::HardSigmoid { .. } | Activation::Sigmoid) => 1.0,
        _ => f64::INFINITY,
    }
}

/// The formats [`least_error_format`] weighs: the one of `bits` holding `headroom` times
/// the largest value seen (at most `bound`), and it and the finer ones tried, those whose
/// fractions the format allows.
fn candidate_formats(bits: u32, seen: &ranges::Seen, headroom: f64, bound: f64) -> (Format, Vec<Format>) {
    let holding = Format::for_range(bits, (headroom * seen.max_abs).min(bound));
    let candidates = (0..=FINER_FORMATS_TRIED)
        .map(|k| holding.with_frac(holding.frac + k))
        .filter(|f| hass_proto::fixed::FRAC_RANGE.contains(&f.frac))
        .collect();
    (holding, candidates)
}

/// The format of `bits` for a stream: the one that holds `headroom` times the largest value
/// seen (at most `bound`), or a finer one if that loses less to rounding than it loses to
/// clipping, measured as the squared error over the stream's sample scaled by `headroom`
/// (as if unseen images went that much further). At 16 bits rounding errors are tiny and
/// the first one stays; at 8 bits and below, rare outliers are clipped so that every other
/// value gets finer steps.
fn least_error_format(bits: u32, seen: &ranges::Seen, headroom: f64, bound: f64) -> Format {
    let (holding, candidates) = candidate_formats(bits, seen, headroom, bound);
    let Some(&last) = candidates.last() else { return holding };
    // One pass over the sample for every candidate, in f64 only: rounding half to even and
    // clamping to the integer range is what `Format::quantize` does. The candidates sit in
    // fixed-size arrays (the last repeated where fewer are in range), so that the compiler
    // takes all of them in one vector per value: in `Vec`s it went one at a time, an eighth
    // of a ResNet-18 compile. Each candidate's error still sums the sample in order.
    const TRIED: usize = FINER_FORMATS_TRIED as usize + 1;
    let format = |i: usize| *candidates.get(i).unwrap_or(&last);
    let scale: [f64; TRIED] = std::array::from_fn(|i| format(i).scale());
    let step = scale.map(|s| 1.0 / s);
    let lo: [f64; TRIED] = std::array::from_fn(|i| format(i).min() as f64);
    let hi: [f64; TRIED] = std::array::from_fn(|i| format(i).max() as f64);
    let mut errors = [0f64; TRIED];
    for &x in &seen.sample {
        let x = (headroom * x as f64).clamp(-bound, bound);
        for i in 0..TRIED {
            let d = x - hass_proto::fixed::round_ties_even(x * scale[i]).clamp(lo[i], hi[i]) * step[i];
            errors[i] += d * d;
        }
    }
    // Ties keep the coarser format (the first; a repeat of the last never wins over it).
    let best = errors.iter().enumerate().fold(0, |best, (i, e)| if *e < errors[best] { i } else { best });
    format(best)
}

/// Choose the formats of `graph` at `widths`, measuring activation ranges on `images`
/// (or on [`SYNTHETIC_IMAGES`] seeded standard-normal images when `None`).
pub fn quantize(graph: &Graph, board: &Board, widths: &Widths, images: Option<&Tensor>) -> Result<Quantization> {
    let _span = tracing::info_span!("quantize", bits = widths.default.activation_bits).entered();
    widths.check(graph)?;
    let measured = measure_ranges(graph, board, images)?;
    Ok(formats(graph, widths, &measured))
}

/// What the formats are chosen from: the ranges of every value, and where they come from.
#[derive(Clone, Debug)]
pub struct MeasuredRanges {
    ranges: ranges::Ranges,
    source: String,
    /// The float model's first output on the images measured.
    float_output: Tensor,
}

impl MeasuredRanges {
    /// The float model's first output on the images the ranges were measured on, batch
    /// first: what [`top1_agreement`] compares the fixed-point model's with.
    pub fn float_output(&self) -> &Tensor {
        &self.float_output
    }
}

/// The activation ranges of `graph` on `images` (or on [`SYNTHETIC_IMAGES`] seeded
/// standard-normal images when `None`): what [`formats`] needs at any widths.
pub fn measure_ranges(graph: &Graph, board: &Board, images: Option<&Tensor>) -> Result<MeasuredRanges> {
    Ok(measure_ranges_and(graph, board, images, |_, _| ())?.0)
}

/// [`measure_ranges`], with what `also` makes of the dense float run it measures them on
/// (the runtime plan and every value): one run where a caller needs another view of it.
pub fn measure_ranges_and<T>(
    graph: &Graph,
    board: &Board,
    images: Option<&Tensor>,
    also: impl FnOnce(&hass_runtime::Plan, &hass_runtime::trace::Trace) -> T,
) -> Result<(MeasuredRanges, T)> {
    let _span = tracing::info_span!("ranges").entered();
    let synthetic;
    let (images, source) = match images {
        Some(images) => (images, format!("ranges measured on {} calibration images", images.batch())),
        None => {
            synthetic = ranges::standard_normal_images(graph, SYNTHETIC_IMAGES, 0);
            (&synthetic, format!("ranges measured on {SYNTHETIC_IMAGES} standard-normal images (no --calib)"))
        }
    };
    let (ranges, float_output, also) = ranges::measure(graph, board, images, also)?;
    Ok((MeasuredRanges { ranges, source, float_output }, also))
}

/// The first output of `graph` run in float on `images`, as the compiler's calibration
/// runs compute it ([`crate::sparsity::statistics::calibration_plan`]).
pub fn float_output(graph: &Graph, board: &Board, images: &Tensor) -> Result<Tensor> {
    let _span = tracing::info_span!("float-output").entered();
    let plan = crate::sparsity::statistics::calibration_plan(graph, board, images, None)?;
    Ok(hass_runtime::run(&plan, images)?.swap_remove(0))
}

/// A stream's format, and whether it is unsigned (see [`LayerFormats::unsigned`]).
type StreamFormat = (Format, bool);

/// The formats of `graph` at `widths` (already checked) from ranges `measured` on it.
pub fn formats(graph: &Graph, widths: &Widths, measured: &MeasuredRanges) -> Quantization {
    let (source, measured) = (measured.source.clone(), &measured.ranges);
    let mut layers: HashMap<NodeId, LayerFormats> = HashMap::new();
    let input = least_error_format(widths.default.activation_bits, &measured.input, HEADROOM, f64::INFINITY);
    let order = graph.layers();
    let non_negative = non_negative_values(graph);
    // Every stream's own choice, independent of the others, in parallel; `None` where a
    // layer passes its input's values on and keeps its input's format (the contract's rule
    // for Reshape; free for max pools), resolved in order below.
    let chosen: Vec<(Option<StreamFormat>, Option<Format>)> = order
        .par_iter()
        .enumerate()
        .map(|(i, &id)| {
            let op = &graph.node(id).op;
            let activation = op.activation();
            let width = widths.of(&graph.node(id).name).activation_bits;
            // A stream that is never negative is held unsigned: `width` bits of magnitude,
            // which a signed format one bit wider holds exactly (below 16 bits, the
            // runtime's widest).
            let unsigned = non_negative.contains(&id) && width < MAX_DATA_BITS;
            let bits = if unsigned { width + 1 } else { width };
            let output = match op {
                Op::Reshape(_) | Op::Pool(crate::ir::Pool { kind: PoolKind::Max, .. }) => None,
                // Outputs keep every value: clipping a logit can tie it with another.
                _ if graph.outputs.contains(&id) => Some(Format::for_range(
                    bits,
                    (OUTPUT_HEADROOM * measured.outputs[i].max_abs).min(bound(activation)),
                )),
                _ => Some(least_error_format(bits, &measured.outputs[i], HEADROOM, bound(activation))),
            };
            let pre = match (&measured.pre_activation[i], hass_proto::fixed::reads_pre_activation(activation)) {
                (Some(seen), true) => Some(least_error_format(width, seen, HEADROOM, f64::INFINITY)),
                _ => None,
            };
            (output.map(|f| (f, unsigned)), pre)
        })
        .collect();
    for (&id, &(output, pre_activation)) in order.iter().zip(&chosen) {
        let weight_bits = widths.of(&graph.node(id).name).weight_bits;
        let (output, unsigned) = output.unwrap_or_else(|| {
            let from = graph.inputs_of(id)[0];
            if from == graph.input {
                (input, false)
            } else {
                (layers[&from].output, layers[&from].unsigned)
            }
        });
        layers.insert(id, LayerFormats { weight_bits, output, unsigned, pre_activation });
    }
    Quantization { input, layers, source }
}

/// The values of `graph` that no input can make negative: the outputs of an activation that
/// never outputs a negative value ([`Activation::is_non_negative`]), and what pools,
/// reshapes, concatenations, sums and products make of such values alone (the runtime's
/// `Plan::is_non_negative` follows the same rule on the artifact).
pub fn non_negative_values(graph: &Graph) -> std::collections::HashSet<NodeId> {
    let mut found = std::collections::HashSet::new();
    for id in graph.layers() {
        let op = &graph.node(id).op;
        let non_negative = match op.activation() {
            Some(activation) => activation.is_non_negative(),
            None => {
                matches!(
                    op,
                    Op::Pool(_)
                        | Op::GlobalAveragePool { .. }
                        | Op::Reshape(_)
                        | Op::Concat { .. }
                        | Op::Eltwise { .. }
                ) && graph.inputs_of(id).iter().all(|i| found.contains(i))
            }
        };
        if non_negative {
            found.insert(id);
        }
    }
    found
}

/// % of images on which the fixed-point model's top-1 is the float model's, from their
/// outputs on the same images (batch first; the first of the largest wins a tie).
pub fn top1_agreement(float: &Tensor, fixed: &Tensor) -> f64 {
    let top1 = |out: &Tensor| -> Vec<usize> {
        let per_image = out.data().len() / out.batch().max(1);
        out.data()
            .chunks(per_image.max(1))
            .map(|row| row.iter().enumerate().fold(0, |best, (i, v)| if *v > row[best] { i } else { best }))
            .collect()
    };
    let (float, fixed) = (top1(float), top1(fixed));
    let same = float.iter().zip(&fixed).filter(|(a, b)| a == b).count();
    100.0 * same as f64 / float.len().max(1) as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seen(values: Vec<f32>) -> ranges::Seen {
        ranges::Seen { max_abs: values.iter().fold(0f64, |m, &v| m.max(v.abs() as f64)), sample: values }
    }

    #[test]
    fn top1_agreement_counts_images_whose_largest_output_is_the_same() {
        let outputs = |rows: &[[f32; 3]]| Tensor::new(vec![rows.len(), 3], rows.concat()).unwrap();
        let float = outputs(&[[0.1, 0.9, 0.0], [1.0, 0.0, 0.0], [0.2, 0.2, 0.1], [0.0, 0.0, 5.0]]);
        // The second image's top-1 moves; the third's is a tie, which the first class wins.
        let fixed = outputs(&[[0.0, 0.5, 0.25], [0.0, 0.5, 0.0], [0.25, 0.25, 0.0], [0.0, 0.0, 5.0]]);
        assert_eq!(top1_agreement(&float, &fixed), 75.0);
        assert_eq!(top1_agreement(&float, &float), 100.0);
    }

    #[test]
    fn narrow_formats_clip_rare_outliers_and_wide_ones_hold_everything() {
        // A thousand values within 0.5 and one at 7.9.
        let mut values: Vec<f32> = (0..1000).map(|i| (i as f32 / 1000.0 - 0.5) * 0.999).collect();
        values.push(7.9);
        let s = seen(values);
        let wide = least_error_format(16, &s, 1.0, f64::INFINITY);
        assert_eq!(wide, Format::for_range(16, 7.9), "16 bits: rounding is too small to trade");
        let narrow = least_error_format(4, &s, 1.0, f64::INFINITY);
        assert!(narrow.frac > Format::for_range(4, 7.9).frac, "4 bits: the outlier is clipped ({narrow:?})");
        // Headroom counts: a stream that only just fits a finer format keeps the coarser one.
        let just = seen(vec![0.9, -0.85, 0.5]);
        assert_eq!(least_error_format(16, &just, 1.25, f64::INFINITY), Format::for_range(16, 1.125));
        // A bound (a clip's) caps the range.
        assert_eq!(least_error_format(8, &seen(vec![5.0, 6.0]), 1.25, 6.0), Format::for_range(8, 6.0));
    }

    #[test]
    fn least_error_formats_are_those_of_one_candidate_at_a_time() {
        // The plain form: each candidate in range, its error summed over the sample in order.
        fn reference(bits: u32, seen: &ranges::Seen, headroom: f64, bound: f64) -> Format {
            let (holding, candidates) = candidate_formats(bits, seen, headroom, bound);
            let error = |f: &Format| {
                seen.sample.iter().fold(0f64, |e, &x| {
                    let x = (headroom * x as f64).clamp(-bound, bound);
                    let d = x - hass_proto::fixed::round_ties_even(x * f.scale()).clamp(f.min() as f64, f.max() as f64)
                        * (1.0 / f.scale());
                    e + d * d
                })
            };
            let errors: Vec<f64> = candidates.iter().map(error).collect();
            let best = errors.iter().enumerate().fold(0, |best, (i, e)| if *e < errors[best] { i } else { best });
            candidates.get(best).copied().unwrap_or(holding)
        }
        let mut state = 0x9e37_79b9_7f4a_7c15u64;
        let mut next = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state >> 11) as f64 / (1u64 << 53) as f64
        };
        for case in 0..300 {
            let n = 1 + case % 97;
            // Heavy tails at some scales, so that clipping sometimes wins; tiny and huge
            // magnitudes, so that candidates fall outside the range of fractions.
            let magnitude = [1e-9, 1e-3, 0.05, 1.0, 40.0, 1e6][case % 6];
            let sample: Vec<f32> =
                (0..n).map(|_| ((next() - 0.5) * magnitude * (1.0 + 30.0 * next().powi(12))) as f32).collect();
            let seen = ranges::Seen { max_abs: sample.iter().fold(0f64, |m, &v| m.max(v.abs() as f64)), sample };
            let bits = [2, 4, 6, 8, 12, 16][case % 5];
            let (headroom, bound) = [(1.0, f64::INFINITY), (1.25, f64::INFINITY), (1.0, 6.0)][case % 3];
            let got = least_error_format(bits, &seen, headroom, bound);
            assert_eq!(got, reference(bits, &seen, headroom, bound), "case {case}");
        }
    }

    #[test]
    fn weight_formats_are_per_channel() {
        let w = [0.5f32, -0.25, 3.0, 1.0, 0.001, -0.002];
        let f = weight_formats(&w, 3, 8);
        // 0.5 = 2^-1 takes frac 8 (saturating by one step); 3 < 2^2 takes 5; 0.002 < 2^-8 takes 15.
        assert_eq!(f.iter().map(|f| f.frac).collect::<Vec<_>>(), [8, 5, 15]);
    }
}
