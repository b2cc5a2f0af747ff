//! The fixed-point datapath's side of the backend: every layer's formats, and integer
//! weights and biases packed at their width (ARCHITECTURE.md, "Datapath").

use super::layer_op;
use crate::error::{CompileError, Result};
use crate::ir::{Graph, NodeId, Op, WeightId};
use crate::quantize::{quantize_weights, Quantization};
use hass_proto as pb;
use hass_proto::fixed::Format;
use hass_runtime::plan::MAX_EXACT_ACCUMULATOR_BITS;

/// The schedule's form of a format.
pub(super) fn format(f: Format) -> pb::FixedFormat {
    pb::FixedFormat { bits: f.bits, frac: f.frac }
}

/// Layer `id` on the fixed-point datapath: its op (integer weights written to `w`) and
/// its fixed-point record.
pub(super) fn lower_op(
    graph: &Graph,
    id: NodeId,
    q: &Quantization,
    w: &mut pb::WeightsWriter,
) -> Result<(pb::layer::Op, pb::FixedPoint)> {
    let node = graph.node(id);
    let formats = q.layers[&id];
    let mut record = pb::FixedPoint {
        output: Some(format(formats.output)),
        pre_activation: formats.pre_activation.map(format),
        unsigned_output: formats.unsigned,
        ..Default::default()
    };
    let input = q.stream_of(graph, graph.inputs_of(id)[0]);
    let weighted = match &node.op {
        Op::Conv(c) => Some((c.weight, c.bias)),
        Op::Dense(d) => Some((d.weight, d.bias)),
        Op::ScaleShift(s) => Some((s.scale, Some(s.shift))),
        _ => None,
    };
    let refs = match weighted {
        Some((weight, bias)) => {
            Some(integer_weights(graph, &node.name, (weight, bias), input, formats.weight_bits, &mut record, w)?)
        }
        None => None,
    };
    Ok((layer_op(graph, &node.op, refs), record))
}

/// Quantize a layer's weights per output channel and its biases at the accumulator's
/// binary point, write both, and record the fractional bits and the accumulator width.
fn integer_weights(
    graph: &Graph,
    layer: &str,
    (weight, bias): (WeightId, Option<WeightId>),
    input: (Format, bool),
    bits: u32,
    record: &mut pb::FixedPoint,
    w: &mut pb::WeightsWriter,
) -> Result<(pb::WeightRef, pb::WeightRef)> {
    let t = graph.weights.tensor(weight);
    let channels = t.shape[0];
    let biases = bias.map(|b| graph.weights.tensor(b).data.clone()).unwrap_or_else(|| vec![0.0; channels]);
    let q = quantize_weights(&t.data, &biases, channels, bits, input);
    let acc_bits = q.accumulator_bits;
    if acc_bits > MAX_EXACT_ACCUMULATOR_BITS {
        return Err(CompileError::Options(format!(
            "layer {layer} sums {} products of {bits}-bit weights and {}-bit inputs, which needs a {acc_bits}-bit accumulator; hassc computes up to {MAX_EXACT_ACCUMULATOR_BITS}: lower --weight-bits or --activation-bits",
            t.data.len() / channels.max(1),
            hass_proto::fixed::stream_width(input.0, input.1)
        )));
    }
    record.weight_frac = q.formats.iter().map(|f| f.frac).collect();
    record.accumulator_bits = acc_bits;
    Ok((w.push_ints(&t.shape, &q.weights, bits), w.push_ints(&[channels], &q.biases, acc_bits - 1)))
}
