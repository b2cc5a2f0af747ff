//! The fixed-point datapath in standard ONNX: QuantizeLinear/DequantizeLinear pairs with
//! power-of-two scales and zero points of 0.
//!
//! Why this encoding: `QuantizeLinear` rounds half to even and saturates, exactly the
//! contract's narrowing (ARCHITECTURE.md, "Datapath"), so a value of format `(bits, frac)`
//! is `DequantizeLinear(QuantizeLinear(x, 2^-frac, 0))` in a container of `bits`. ONNX has
//! 8-bit containers from opset 13 and 16-bit ones from opset 21: a model whose every width
//! is at most 8 bits is written at opset 14 (as float models are: HardSwish needs it; what
//! most runtimes and tools read), any other at opset 21, where every value travels in int16.
//! Widths that are not their container's (below 8 bits at opset 14, below 16 at 21) saturate
//! with a `Clip` to the format's range after the pair (rounding first, then clamping at integer
//! bounds, is the contract's order). A stream that is never negative, which the artifact holds
//! in a signed format one bit wider than its magnitude, counts at its magnitude's width and
//! travels in uint8 at opset 14. Weights are stored as the integers the artifact holds,
//! with a per-output-channel `DequantizeLinear` (axis 0).
//!
//! What stays float in such a model: the runtime's convolution sums, the bias (added as
//! the f32 nearest the exact value), and the activation functions between the pairs; so a
//! runtime that accumulates in float32 can round a value on the other side of a tie, rarely.

use crate::quantize::{LayerFormats, Quantization};
use hass_proto::fixed::{stream_width, Format};
use tract_onnx::pb;

/// ONNX `TensorProto` data types.
const UINT8: i32 = 2;
const INT8: i32 = 3;
const INT16: i32 = 5;

/// The opset that holds every width of `q`: 14 when all fit 8 bits, else 21.
pub(super) fn opset(q: &Quantization) -> i64 {
    let widest = q
        .layers
        .values()
        .flat_map(|l: &LayerFormats| {
            let output = stream_width(l.output, l.unsigned);
            [Some(output), l.pre_activation.map(|f| f.bits), Some(l.weight_bits)]
        })
        .flatten()
        .chain([q.input.bits])
        .max()
        .unwrap_or(8);
    if widest <= 8 {
        14
    } else {
        21
    }
}

/// The container every integer of a model quantized as `q` travels in, bits: int8 at
/// opset 14 (every width fits), int16 at opset 21, for 8-bit values too (onnxruntime's QDQ
/// propagation gives an int8 pair moved past a Reshape a uint8 zero point in an opset-21
/// model, which it then rejects; an int16 container with a `Clip` is the same arithmetic).
pub(super) fn container_bits(q: &Quantization) -> u32 {
    if opset(q) == 14 {
        8
    } else {
        16
    }
}

/// An integer initializer in a `container`-bit integer (int8 and int16 travel in
/// `int32_data`).
pub(super) fn int_tensor(name: String, dims: &[usize], container: u32, values: Vec<i32>) -> pb::TensorProto {
    pb::TensorProto {
        name,
        dims: dims.iter().map(|&d| d as i64).collect(),
        data_type: if container <= 8 { INT8 } else { INT16 },
        int32_data: values,
        ..Default::default()
    }
}

/// The zero point (0) of a value in a `container`-bit integer, unsigned where `unsigned`
/// (only at 8 bits: opset 21's containers are all int16).
pub(super) fn zero_point(name: String, container: u32, unsigned: bool) -> pb::TensorProto {
    let mut zero = int_tensor(name, &[], container, vec![0]);
    if unsigned {
        zero.data_type = UINT8;
    }
    zero
}

/// `2^-frac` as f32 (exact: `frac` lies in -32..=40).
pub(super) fn step(frac: i32) -> f32 {
    hass_proto::fixed::pow2(-frac) as f32
}

/// The smallest and largest values of `f`, as f32 (exact: at most 16 bits).
pub(super) fn range(f: Format) -> (f32, f32) {
    (f.to_f64(f.min()) as f32, f.to_f64(f.max()) as f32)
}

/// Whether `f`'s saturation is its `container`'s (no `Clip` needed); an `unsigned` container
/// holds the non-negative half of `f`, one bit wider.
pub(super) fn fills_container(f: Format, container: u32, unsigned: bool) -> bool {
    stream_width(f, unsigned) == container
}
