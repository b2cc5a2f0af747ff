//! The quantizer: chooses the fixed-point format of every value of a graph (ARCHITECTURE.md,
//! "Datapath"). Weight formats follow from the weights themselves ([`weight_formats`], per
//! output channel); activation formats from ranges measured by running the float model
//! ([`ranges`]) on the calibration images, or, without them, on seeded standard-normal
//! images (what a model fed normalised images sees).

pub mod ranges;

use crate::board::Board;
use crate::error::Result;
use crate::hw::Precision;
use crate::ir::{Activation, Graph, NodeId, Op, PoolKind};
use hass_proto::fixed::Format;
use hass_runtime::Tensor;
use std::collections::HashMap;

/// The margin over the largest magnitude seen, so that images beyond the calibration set
/// rarely saturate: 1.25 inside the network, 2 (one bit) on its outputs, where a saturated
/// logit can tie with another and change the prediction.
const HEADROOM: f64 = 1.25;
const OUTPUT_HEADROOM: f64 = 2.0;

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
    /// Bits of the weights (every layer, for now).
    pub weight_bits: u32,
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
    /// The output stream's format.
    pub output: Format,
    /// HardSigmoid, HardSwish, Sigmoid: where the activation unit reads its input.
    pub pre_activation: Option<Format>,
}

impl Quantization {
    /// The format of value `id` (the input or a layer's output).
    pub fn format_of(&self, graph: &Graph, id: NodeId) -> Format {
        if id == graph.input {
            self.input
        } else {
            self.layers[&id].output
        }
    }
}

/// Per output channel of a weight tensor (rows of its first dimension): the format of
/// `bits` holding that channel's largest magnitude.
pub fn weight_formats(data: &[f32], channels: usize, bits: u32) -> Vec<Format> {
    data.chunks(data.len().div_ceil(channels.max(1)).max(1))
        .map(|row| Format::for_range(bits, row.iter().fold(0f64, |m, &w| m.max((w as f64).abs()))))
        .collect()
}

/// Whether `activation` reads a pre-activation format.
pub fn needs_pre_activation(activation: Option<Activation>) -> bool {
    matches!(activation, Some(Activation::HardSigmoid { .. } | Activation::HardSwish | Activation::Sigmoid))
}

/// The largest magnitude `activation` can output, where it is bounded.
fn bound(activation: Option<Activation>) -> f64 {
    match activation {
        Some(Activation::Clip { min, max }) => (min.abs()).max(max.abs()) as f64,
        Some(Activation::HardSigmoid { .. } | Activation::Sigmoid) => 1.0,
        _ => f64::INFINITY,
    }
}

/// Choose the formats of `graph` at `precision`, measuring activation ranges on `images`
/// (or on [`SYNTHETIC_IMAGES`] seeded standard-normal images when `None`).
pub fn quantize(graph: &Graph, board: &Board, precision: Precision, images: Option<&Tensor>) -> Result<Quantization> {
    let _span = tracing::info_span!("quantize", bits = precision.activation_bits).entered();
    let synthetic;
    let (images, source) = match images {
        Some(images) => (images, format!("ranges measured on {} calibration images", images.batch())),
        None => {
            synthetic = ranges::standard_normal_images(graph, SYNTHETIC_IMAGES, 0);
            (&synthetic, format!("ranges measured on {SYNTHETIC_IMAGES} standard-normal images (no --calib)"))
        }
    };
    let measured = ranges::measure(graph, board, images)?;
    let bits = precision.activation_bits;
    let mut layers: HashMap<NodeId, LayerFormats> = HashMap::new();
    let input = Format::for_range(bits, HEADROOM * measured.input);
    for (i, &id) in graph.layers().iter().enumerate() {
        let op = &graph.node(id).op;
        let activation = op.activation();
        let headroom = if graph.outputs.contains(&id) { OUTPUT_HEADROOM } else { HEADROOM };
        let output = match op {
            // Same values: same format (the contract's rule for Reshape; free for max pools).
            Op::Reshape(_) | Op::Pool(crate::ir::Pool { kind: PoolKind::Max, .. }) => {
                let from = graph.inputs_of(id)[0];
                if from == graph.input {
                    input
                } else {
                    layers[&from].output
                }
            }
            _ => Format::for_range(bits, (headroom * measured.outputs[i]).min(bound(activation))),
        };
        let pre_activation =
            needs_pre_activation(activation).then(|| Format::for_range(bits, HEADROOM * measured.pre_activation[i]));
        layers.insert(id, LayerFormats { output, pre_activation });
    }
    Ok(Quantization { weight_bits: precision.weight_bits, input, layers, source })
}
