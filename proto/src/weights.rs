//! Building the WEIGHTS section: tensors appended in order, each referenced by a [`WeightRef`].

use crate::{DataType, WeightRef};

/// Appends f32 tensors to a little-endian weights blob and hands out references to them.
#[derive(Default)]
pub struct WeightsWriter {
    bytes: Vec<u8>,
}

impl WeightsWriter {
    /// Append `values` (row-major, of shape `shape`) and return where they live.
    pub fn push_f32(&mut self, shape: &[usize], values: &[f32]) -> WeightRef {
        debug_assert_eq!(shape.iter().product::<usize>(), values.len());
        let byte_offset = self.bytes.len() as u64;
        self.bytes.reserve(values.len() * 4);
        for v in values {
            self.bytes.extend_from_slice(&v.to_le_bytes());
        }
        WeightRef { byte_offset, shape: shape.iter().map(|&d| d as u32).collect(), dtype: DataType::F32 as i32 }
    }

    /// The finished section.
    pub fn into_bytes(self) -> Vec<u8> {
        self.bytes
    }
}
