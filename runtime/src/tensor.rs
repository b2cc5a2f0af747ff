//! A batch of fp32 tensors in NCHW (or N x features) order.

use crate::RuntimeError;

/// A dense f32 tensor whose first dimension is the batch.
#[derive(Clone, Debug, PartialEq)]
pub struct Tensor {
    shape: Vec<usize>,
    data: Vec<f32>,
}

impl Tensor {
    /// Wrap `data` (row-major) as a tensor of `shape`; the lengths must agree.
    pub fn new(shape: Vec<usize>, data: Vec<f32>) -> Result<Self, RuntimeError> {
        let expected: usize = shape.iter().product();
        if expected != data.len() {
            return Err(RuntimeError::Input(format!(
                "shape {shape:?} holds {expected} values but {} were given",
                data.len()
            )));
        }
        Ok(Self { shape, data })
    }

    /// Full shape, batch first.
    pub fn shape(&self) -> &[usize] {
        &self.shape
    }

    /// Values, row-major.
    pub fn data(&self) -> &[f32] {
        &self.data
    }

    /// Batch size (first dimension).
    pub fn batch(&self) -> usize {
        self.shape.first().copied().unwrap_or(1)
    }

    /// Consume into shape and values.
    pub fn into_parts(self) -> (Vec<usize>, Vec<f32>) {
        (self.shape, self.data)
    }
}
