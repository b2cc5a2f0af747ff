//! The fixed-point side of loading (format 3): formats, integer weights and the
//! accumulator, each checked against the contract (ARCHITECTURE.md, "Datapath") before any
//! kernel runs.

use super::{tensor_bytes, LayerIn};
use crate::error::invalid;
use crate::plan::{Activation, FixedChannels, Format, MAX_EXACT_ACCUMULATOR_BITS};
use crate::RuntimeError;
use hass_proto as pb;
use hass_proto::fixed::{self, MAX_DATA_BITS, MIN_DATA_BITS};

/// A stored value's format: 2 to 16 bits, fractional bits in range.
pub(super) fn data_format(layer: &str, what: &str, f: Option<&pb::FixedFormat>) -> Result<Format, RuntimeError> {
    let f = f.ok_or_else(|| invalid(layer, format!("fixed-point layer has no {what} format")))?;
    if !(MIN_DATA_BITS..=MAX_DATA_BITS).contains(&f.bits) {
        return Err(invalid(layer, format!("{what} format has {} bits; stored values take 2 to 16", f.bits)));
    }
    Format::new(f.bits, f.frac).map_err(|e| invalid(layer, format!("{what} format: {e}")))
}

/// Whether `activation` reads a pre-activation format (the ones that are not monotone
/// re-scalings of their input).
pub(super) fn needs_pre_activation(activation: Option<Activation>) -> bool {
    matches!(activation, Some(Activation::HardSigmoid { .. } | Activation::HardSwish | Activation::Sigmoid))
}

/// An integer tensor: `(values, bits)`.
fn ints(l: &LayerIn, what: &str, r: Option<&pb::WeightRef>, expected: &[usize]) -> Result<(Vec<i64>, u32), RuntimeError> {
    let (r, encoding, bytes) = tensor_bytes(l, what, r, expected)?;
    if r.dtype != pb::DataType::Int as i32 {
        return Err(invalid(l.name, format!("{what} is not an integer tensor, as the fixed-point datapath needs")));
    }
    let count: usize = expected.iter().product();
    let values = hass_proto::packed::decode(encoding, bytes, count, expected.first().copied().unwrap_or(1), r.bits)
        .map_err(|e| invalid(l.name, format!("{what}: {e}")))?;
    Ok((values, r.bits))
}

/// A Conv's, Dense's or ScaleShift's integer weights (`shape`, output channels first) and
/// biases, checked against the layer's record: the weights dequantized (`f32`, exact), the
/// biases dequantized, and the accumulator side for the kernels.
pub(super) fn channels(
    l: &LayerIn,
    (weight_name, bias_name): (&str, &str),
    weight: Option<&pb::WeightRef>,
    bias: Option<&pb::WeightRef>,
    shape: &[usize],
) -> Result<(Vec<f32>, Vec<f32>, FixedChannels), RuntimeError> {
    let (record, input) = match (l.fixed, l.input_formats.first()) {
        (Some(record), Some(&input)) => (record, input),
        _ => return Err(invalid(l.name, "fixed-point weights outside a fixed-point layer")),
    };
    let c_out = shape[0];
    let fan_in: usize = shape[1..].iter().product();
    let (weights, weight_bits) = ints(l, weight_name, weight, shape)?;
    if !(MIN_DATA_BITS..=MAX_DATA_BITS).contains(&weight_bits) {
        return Err(invalid(l.name, format!("{weight_name} has {weight_bits}-bit values; weights take 2 to 16")));
    }
    let weight_frac: Vec<i32> = record.weight_frac.clone();
    if weight_frac.len() != c_out || weight_frac.iter().any(|f| !fixed::FRAC_RANGE.contains(f)) {
        return Err(invalid(
            l.name,
            format!("needs {c_out} weight fractional-bit counts in {:?}", fixed::FRAC_RANGE),
        ));
    }
    let needed = fixed::accumulator_bits(weight_bits, input.bits, fan_in as u64);
    if record.accumulator_bits != needed {
        return Err(invalid(
            l.name,
            format!(
                "records a {}-bit accumulator; {weight_bits}-bit weights, {}-bit inputs and {fan_in} products need {needed}",
                record.accumulator_bits, input.bits
            ),
        ));
    }
    if needed > MAX_EXACT_ACCUMULATOR_BITS {
        return Err(invalid(l.name, format!("needs a {needed}-bit accumulator; this runtime computes up to {MAX_EXACT_ACCUMULATOR_BITS}")));
    }
    let (biases, bias_bits) = ints(l, bias_name, bias, &[c_out])?;
    if bias_bits != needed - 1 {
        return Err(invalid(l.name, format!("{bias_name} has {bias_bits}-bit values; the contract says {}", needed - 1)));
    }
    let mut dequantized = Vec::with_capacity(weights.len());
    let mut exact = Vec::with_capacity(weights.len());
    for (row, &frac) in weights.chunks_exact(fan_in.max(1)).zip(&weight_frac) {
        let f = Format { bits: weight_bits, frac };
        dequantized.extend(row.iter().map(|&q| f.to_f32(q)));
        exact.extend(row.iter().map(|&q| f.to_f64(q)));
    }
    let bias_real = biases
        .iter()
        .zip(&weight_frac)
        .map(|(&b, &frac)| Format { bits: bias_bits, frac: input.frac + frac }.to_f64(b) as f32)
        .collect();
    let channels =
        FixedChannels { weight: exact, weight_frac, bias: biases, accumulator_bits: needed };
    Ok((dequantized, bias_real, channels))
}
