//! CPU kernels, one file per layer family. Each works on one image (or, for `dense`, one
//! batch) of a validated plan, so they index without re-checking shapes.

pub mod conv;
pub mod dense;
pub mod eltwise;
pub mod fixed;
pub mod igemm;
pub mod pool;
mod scratch;
pub mod sparse;
pub mod windows;

use std::borrow::Cow;

/// `x` with every value at or below `threshold` read as zero (an activation threshold);
/// borrowed unchanged without one.
pub fn thresholded(x: &[f32], threshold: Option<f32>) -> Cow<'_, [f32]> {
    match threshold {
        None => Cow::Borrowed(x),
        Some(t) => Cow::Owned(x.iter().map(|&v| if v <= t { 0.0 } else { v }).collect()),
    }
}
