//! Building the WEIGHTS section: tensors appended in order, each referenced by a [`WeightRef`].

use crate::{encoding, DataType, WeightEncoding, WeightRef};

/// Appends f32 tensors to a little-endian weights blob and hands out references to them.
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
        }
    }

    /// The finished section.
    pub fn into_bytes(self) -> Vec<u8> {
        self.bytes
    }
}
