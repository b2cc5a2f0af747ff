//! Building the WEIGHTS section: tensors appended in order, each referenced by a [`WeightRef`].

use crate::{encoding, packed, DataType, WeightEncoding, WeightRef};

/// Appends tensors (float32, or integers packed at their width) to a little-endian weights blob and hands out references to them.
#[derive(Default)]
pub struct WeightsWriter {
    bytes: Vec<u8>,
}

impl WeightsWriter {
    /// Append `values` (row-major, of shape `shape`) densely and return where they live.
    pub fn push_f32(&mut self, shape: &[usize], values: &[f32]) -> WeightRef {
        self.push(shape, WeightEncoding::Dense, values.iter().flat_map(|v| v.to_le_bytes()).collect())
    }

    /// Append `values` in the smallest encoding (rows are the first dimension).
    pub fn push_encoded(&mut self, shape: &[usize], values: &[f32]) -> WeightRef {
        let (enc, bytes) = encoding::encode(values, shape.first().copied().unwrap_or(1));
        self.push(shape, enc, bytes)
    }

    /// Append integer `values` of `bits` (each within that width) in the smallest encoding.
    pub fn push_ints(&mut self, shape: &[usize], values: &[i64], bits: u32) -> WeightRef {
        let (enc, bytes) = packed::encode(values, shape.first().copied().unwrap_or(1), bits);
        WeightRef { dtype: DataType::Int as i32, bits, ..self.push(shape, enc, bytes) }
    }

    fn push(&mut self, shape: &[usize], encoding: WeightEncoding, bytes: Vec<u8>) -> WeightRef {
        let byte_offset = self.bytes.len() as u64;
        let byte_length = bytes.len() as u64;
        self.bytes.extend_from_slice(&bytes);
        WeightRef {
            byte_offset,
            shape: shape.iter().map(|&d| d as u32).collect(),
            dtype: DataType::F32 as i32,
            encoding: encoding as i32,
            byte_length,
            bits: 0,
        }
    }

    /// The finished section.
    pub fn into_bytes(self) -> Vec<u8> {
        self.bytes
    }
}
