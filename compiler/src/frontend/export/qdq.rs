//! The fixed-point datapath in standard ONNX: QuantizeLinear/DequantizeLinear pairs with
//! power-of-two scales and zero points of 0.
//!
//! Why this encoding: `QuantizeLinear` rounds half to even and saturates, exactly the
//! contract's narrowing (ARCHITECTURE.md, "Datapath"), so a value of format `(bits, frac)`
//! is `DequantizeLinear(QuantizeLinear(x, 2^-frac, 0))` in a container of `bits`. ONNX has
//! 8-bit containers from opset 13 and 16-bit ones from opset 21: a model whose every width
//! is at most 8 bits is written at opset 14 (as float models are: HardSwish needs it; what
//! most runtimes and tools read), any other at opset 21. Widths that are not a container's own (2-7, 9-15 bits) saturate with a
//! `Clip` to the format's range after the pair (rounding first, then clamping at integer
//! bounds, is the contract's order). Weights are stored as the integers the artifact holds,
//! with a per-output-channel `DequantizeLinear` (axis 0).
//!
//! What stays float in such a model: the runtime's convolution sums, the bias (added as
//! the f32 nearest the exact value), and the activation functions between the pairs; so a
//! runtime that accumulates in float32 can round a value on the other side of a tie, rarely.

use crate::quantize::{LayerFormats, Quantization};
use hass_proto::fixed::Format;
use tract_onnx::pb;

/// ONNX `TensorProto` data types.
const INT8: i32 = 3;
const INT16: i32 = 5;

/// The opset that holds every width of `q`: 14 when all fit 8 bits, else 21.
pub(super) fn opset(q: &Quantization) -> i64 {
    let widest = q
        .layers
        .values()
        .flat_map(|l: &LayerFormats| [Some(l.output.bits), l.pre_activation.map(|f| f.bits), Some(l.weight_bits)])
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

/// The container type of a `bits`-wide integer.
fn container(bits: u32) -> i32 {
    if bits <= 8 {
        INT8
    } else {
        INT16
    }
}

/// An integer initializer (int8 and int16 travel in `int32_data`).
pub(super) fn int_tensor(name: String, dims: &[usize], bits: u32, values: Vec<i32>) -> pb::TensorProto {
    pb::TensorProto {
        name,
        dims: dims.iter().map(|&d| d as i64).collect(),
        data_type: container(bits),
        int32_data: values,
        ..Default::default()
    }
}

/// `2^-frac` as f32 (exact: `frac` lies in -32..=40).
pub(super) fn step(frac: i32) -> f32 {
    hass_proto::fixed::pow2(-frac) as f32
}

/// The smallest and largest values of `f`, as f32 (exact: at most 16 bits).
pub(super) fn range(f: Format) -> (f32, f32) {
    (f.to_f64(f.min()) as f32, f.to_f64(f.max()) as f32)
}

/// Whether `f`'s saturation is its container's (no `Clip` needed).
pub(super) fn fills_container(f: Format) -> bool {
    f.bits == 8 || f.bits == 16
}
