//! CPU kernels, one file per layer family. Each works on one image (or, for `dense`, one
//! batch) of a validated plan, so they index without re-checking shapes.

pub mod conv;
pub mod dense;
pub mod eltwise;
pub mod pool;
