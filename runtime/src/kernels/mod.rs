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
pub mod unfold;
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

/// Run `f` compiled for AVX2 where the processor has it, so that the loops it inlines
/// vectorize; as it is elsewhere. Give `f` as a closure marked `#[inline(always)]`: one
/// that is not inlined is compiled for the baseline and gains nothing.
pub(crate) fn with_avx2<R>(f: impl FnOnce() -> R) -> R {
    #[cfg(target_arch = "x86_64")]
    if let Some(simd) = pulp::x86::V3::try_new() {
        return pulp::Simd::vectorize(simd, f);
    }
    f()
}
