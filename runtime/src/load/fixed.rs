//! The fixed-point side of loading (format 3): formats, integer weights and the
//! accumulator, each checked against the contract (ARCHITECTURE.md, "Datapath") before any
//! kernel runs.

use super::{tensor_bytes, LayerIn, Weighted};
use crate::error::invalid;
use crate::plan::{FixedChannels, Format, MAX_EXACT_ACCUMULATOR_BITS};
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

/// An integer tensor: `(values, bits)`.
fn ints(
    l: &LayerIn,
    what: &str,
    r: Option<&pb::WeightRef>,
    expected: &[usize],
) -> Result<(Vec<i64>, u32), RuntimeError> {
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
/// biases, checked against the layer's record: both dequantized (`f32`, exact), and the
/// accumulator side for the kernels.
pub(super) fn channels(
    l: &LayerIn,
    (weight_name, bias_name): (&str, &str),
    weight: Option<&pb::WeightRef>,
    bias: Option<&pb::WeightRef>,
    shape: &[usize],
) -> Result<Weighted, RuntimeError> {
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
        return Err(invalid(l.name, format!("needs {c_out} weight fractional-bit counts in {:?}", fixed::FRAC_RANGE)));
    }
    let input_bits = fixed::stream_width(input, l.input_unsigned);
    let needed = fixed::accumulator_bits(weight_bits, input_bits, fan_in as u64);
    if record.accumulator_bits != needed {
        let signedness = if l.input_unsigned { "unsigned" } else { "signed" };
        return Err(invalid(
            l.name,
            format!(
                "records a {}-bit accumulator; {weight_bits}-bit weights, {input_bits}-bit {signedness} inputs and {fan_in} products need {needed}",
                record.accumulator_bits
            ),
        ));
    }
    if needed > MAX_EXACT_ACCUMULATOR_BITS {
        return Err(invalid(
            l.name,
            format!("needs a {needed}-bit accumulator; this runtime computes up to {MAX_EXACT_ACCUMULATOR_BITS}"),
        ));
    }
    let (biases, bias_bits) = ints(l, bias_name, bias, &[c_out])?;
    if bias_bits != needed - 1 {
        return Err(invalid(
            l.name,
            format!("{bias_name} has {bias_bits}-bit values; the contract says {}", needed - 1),
        ));
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
    let channels = FixedChannels::new(exact, weight_frac, biases);
    Ok(Weighted { weight: dequantized, bias: bias_real, channels: Some(channels) })
}

#[cfg(test)]
mod tests {
    //! The loader's fixed-point checks, one broken field at a time, on the same small
    //! network as the float tests (`[2, 4, 4]` -> 3x3 conv -> reshape -> dense 5), in 8 bits.
    use super::*;
    use crate::plan::Plan;

    fn format(bits: u32, frac: i32) -> Option<pb::FixedFormat> {
        Some(pb::FixedFormat { bits, frac })
    }

    fn record(output: Option<pb::FixedFormat>, weight_frac: Vec<i32>, accumulator_bits: u32) -> Option<pb::FixedPoint> {
        Some(pb::FixedPoint { output, pre_activation: None, weight_frac, accumulator_bits, unsigned_output: false })
    }

    /// Input at (8, 4); conv weights 0.5 at (8, 6), 21-bit accumulator, output (8, 3);
    /// dense weights 0.25 at (8, 5), 22-bit accumulator, bias 1, output (12, 4).
    fn valid() -> (pb::Schedule, Vec<u8>) {
        let mut w = hass_proto::WeightsWriter::default();
        let conv = (w.push_ints(&[3, 2, 3, 3], &[32; 54], 8), w.push_ints(&[3], &[0; 3], 20));
        // Bias 1.0 at the accumulator's binary point, 3 + 5 fractional bits.
        let dense = (w.push_ints(&[5, 48], &[8; 240], 8), w.push_ints(&[5], &[256; 5], 21));
        let records = [
            record(format(8, 3), vec![6; 3], 21),
            record(format(8, 3), vec![], 0),
            record(format(12, 4), vec![5; 5], 22),
        ];
        let schedule = super::super::tests::small_network(conv, dense, records);
        (pb::Schedule { input_format: format(8, 4), ..schedule }, w.into_bytes())
    }

    fn load(schedule: &pb::Schedule, weights: &[u8]) -> Result<Plan, RuntimeError> {
        crate::load_bytes(&hass_proto::encode(schedule, weights))
    }

    #[test]
    fn the_valid_fixed_schedule_computes_exactly() {
        let (s, w) = valid();
        let plan = load(&s, &w).unwrap();
        // Ones in: the conv gives 4, 6 or 9 per pixel (corner, edge, inside), 100 per
        // channel; the dense layer 0.25 * 300 + 1 = 76, every value exact in its format.
        let out = crate::run(&plan, &crate::Tensor::new(vec![1, 2, 4, 4], vec![1.0; 32]).unwrap()).unwrap();
        assert_eq!(out[0].data(), [76.0; 5]);
        // An input between two steps of (8, 4) rounds half to even: 1.03125 -> 1.0.
        let out = crate::run(&plan, &crate::Tensor::new(vec![1, 2, 4, 4], vec![1.03125; 32]).unwrap()).unwrap();
        assert_eq!(out[0].data(), [76.0; 5]);
    }

    #[test]
    fn unsigned_outputs_are_those_no_input_can_make_negative() {
        // valid()'s network with a ReLU on the conv, whose output (and the reshape of it)
        // is declared unsigned: 7 bits of magnitude in (8, 3), so the dense layer's
        // accumulator counts 7-bit inputs, 21 bits (its bias 20).
        let unsigned = |output, weight_frac, accumulator_bits| {
            let r = record(output, weight_frac, accumulator_bits).unwrap();
            Some(pb::FixedPoint { unsigned_output: true, ..r })
        };
        let schedule = |dense_accumulator: u32| {
            let mut w = hass_proto::WeightsWriter::default();
            let conv = (w.push_ints(&[3, 2, 3, 3], &[32; 54], 8), w.push_ints(&[3], &[0; 3], 20));
            let dense = (w.push_ints(&[5, 48], &[8; 240], 8), w.push_ints(&[5], &[256; 5], dense_accumulator - 1));
            let records = [
                unsigned(format(8, 3), vec![6; 3], 21),
                unsigned(format(8, 3), vec![], 0),
                record(format(12, 4), vec![5; 5], dense_accumulator),
            ];
            let mut s = super::super::tests::small_network(conv, dense, records);
            s.input_format = format(8, 4);
            match s.layers[0].op.as_mut() {
                Some(pb::layer::Op::Conv(c)) => {
                    c.activation = Some(pb::Activation { kind: Some(pb::activation::Kind::Relu(pb::Relu {})) })
                }
                _ => unreachable!(),
            }
            (s, w.into_bytes())
        };
        let (mut s, w) = schedule(21);
        let plan = load(&s, &w).unwrap();
        let non_negative: Vec<bool> = (0..4).map(|v| plan.is_non_negative(v)).collect();
        assert_eq!(non_negative, [false, true, true, false], "input, conv+relu, reshape, dense");
        assert_eq!((0..4).map(|v| plan.value_unsigned(v)).collect::<Vec<_>>(), [false, true, true, false]);
        // Ones in: as valid()'s, the conv's 4, 6 and 9 per pixel being non-negative anyway.
        let out = crate::run(&plan, &crate::Tensor::new(vec![1, 2, 4, 4], vec![1.0; 32]).unwrap()).unwrap();
        assert_eq!(out[0].data(), [76.0; 5]);
        // A signed input's accumulator is a bit too wide for an unsigned one.
        let (wide, w22) = schedule(22);
        let err = load(&wide, &w22).unwrap_err().to_string();
        assert!(err.contains("7-bit unsigned inputs and 48 products need 21"), "{err}");
        // Only a stream that cannot be negative may be declared unsigned.
        s.layers[2].fixed.as_mut().unwrap().unsigned_output = true;
        assert!(load(&s, &w).unwrap_err().to_string().contains("declares an unsigned output"));
    }

    #[test]
    fn every_broken_fixed_point_field_is_named() {
        fn fixed(s: &mut pb::Schedule, layer: usize) -> &mut pb::FixedPoint {
            s.layers[layer].fixed.as_mut().unwrap()
        }
        type Break = fn(&mut pb::Schedule, &mut Vec<u8>);
        let cases: &[(&str, Break, &str)] = &[
            ("input bits", |s, _| s.input_format = format(17, 4), "input format has 17 bits"),
            ("input frac", |s, _| s.input_format = format(8, 99), "99 fractional bits is outside"),
            ("float input", |s, _| s.input_format = None, "mixes the fixed-point and float datapaths"),
            ("float layer", |s, _| s.layers[1].fixed = None, "mixes the fixed-point and float datapaths"),
            ("no output", |s, _| fixed(s, 0).output = None, "has no output format"),
            ("reshape", |s, _| fixed(s, 1).output = format(8, 2), "a reshape must keep its input's format"),
            ("fracs", |s, _| fixed(s, 0).weight_frac = vec![6; 2], "needs 3 weight fractional-bit counts"),
            ("frac range", |s, _| fixed(s, 2).weight_frac[4] = -40, "needs 5 weight fractional-bit counts"),
            ("accumulator", |s, _| fixed(s, 0).accumulator_bits = 32, "records a 32-bit accumulator"),
            ("bias bits", |s, _| fixed(s, 0).accumulator_bits = 20, "records a 20-bit accumulator; 8-bit weights"),
            ("unsigned", |s, _| fixed(s, 2).unsigned_output = true, "declares an unsigned output, but its inputs"),
            (
                "float weights",
                |s, _| match s.layers[0].op.as_mut() {
                    Some(pb::layer::Op::Conv(c)) => c.weight.as_mut().unwrap().dtype = pb::DataType::F32 as i32,
                    _ => unreachable!(),
                },
                "weight is not an integer tensor",
            ),
            (
                "weight bits",
                |s, _| match s.layers[2].op.as_mut() {
                    Some(pb::layer::Op::Dense(d)) => d.bias.as_mut().unwrap().bits = 20,
                    _ => unreachable!(),
                },
                "bias",
            ),
            (
                "pre-activation",
                |s, _| match s.layers[0].op.as_mut() {
                    Some(pb::layer::Op::Conv(c)) => {
                        c.activation =
                            Some(pb::Activation { kind: Some(pb::activation::Kind::HardSwish(pb::HardSwish {})) })
                    }
                    _ => unreachable!(),
                },
                "has no pre-activation format",
            ),
        ];
        for (case, break_it, expected) in cases {
            let (mut s, mut w) = valid();
            break_it(&mut s, &mut w);
            let err = load(&s, &w).expect_err(case).to_string();
            assert!(err.contains(expected), "{case}: {err}");
        }
    }
}
