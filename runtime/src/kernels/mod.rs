//! CPU kernels, one file per layer family. Each works on one image (or, for `dense`, one
//! batch) of a validated plan, so they index without re-checking shapes.

pub mod conv;
pub mod dense;
pub mod depthwise;
pub mod direct;
pub mod eltwise;
pub mod fixed;
pub mod igemm;
pub mod pool;
mod scratch;
pub mod sgemm;
pub mod sparse;
pub mod sparse_conv;
pub mod unfold;
pub mod windows;
pub mod winograd;

use std::borrow::Cow;

/// `x` with every value at or below `threshold` read as zero (an activation threshold);
/// borrowed unchanged without one.
pub fn thresholded(x: &[f32], threshold: Option<f32>) -> Cow<'_, [f32]> {
    match threshold {
        None => Cow::Borrowed(x),
        Some(t) => {
            // A loop over a buffer, compiled wide (`collect`'s body would not be).
            let mut out = vec![0.0f32; x.len()];
            with_simd(
                #[inline(always)]
                || {
                    for (o, &v) in out.iter_mut().zip(x) {
                        *o = if v <= t { 0.0 } else { v };
                    }
                },
            );
            Cow::Owned(out)
        }
    }
}

/// `activation(pre(x))` for every `x` of `xs`, in place (no activation: `pre(x)`). The
/// activation is matched once, outside the loop, so that each kind runs as one vectorized
/// pass; every value is computed exactly as `Activation::apply` computes it.
pub fn activate_with(xs: &mut [f32], pre: impl Fn(f32) -> f32 + Copy, activation: Option<crate::plan::Activation>) {
    use crate::plan::Activation;
    fn each(xs: &mut [f32], f: impl Fn(f32) -> f32) {
        with_simd(
            #[inline(always)]
            || xs.iter_mut().for_each(|x| *x = f(*x)),
        )
    }
    match activation {
        None => each(xs, pre),
        Some(Activation::Relu) => each(xs, |x| Activation::Relu.apply(pre(x))),
        Some(Activation::Clip { min, max }) => each(xs, |x| Activation::Clip { min, max }.apply(pre(x))),
        Some(act) => each(xs, |x| act.apply(pre(x))),
    }
}

/// `dst[i] = activation(pre(src[i]))`, as [`activate_with`] computes it, in one pass (for
/// a GEMM's epilogue). Not compiled for AVX2 itself: call it where that is done (the
/// GEMMs' `finish`).
#[inline(always)]
pub(crate) fn activate_into(
    dst: &mut [f32],
    src: &[f32],
    pre: impl Fn(f32) -> f32 + Copy,
    activation: Option<crate::plan::Activation>,
) {
    use crate::plan::Activation;
    #[inline(always)]
    fn each(dst: &mut [f32], src: &[f32], f: impl Fn(f32) -> f32) {
        dst.iter_mut().zip(src).for_each(|(d, &s)| *d = f(s));
    }
    match activation {
        None => each(dst, src, pre),
        Some(Activation::Relu) => each(dst, src, |x| Activation::Relu.apply(pre(x))),
        Some(Activation::Clip { min, max }) => each(dst, src, |x| Activation::Clip { min, max }.apply(pre(x))),
        Some(act) => each(dst, src, |x| act.apply(pre(x))),
    }
}

/// `f(&mut dst[i], src[i * stride])` for every `i` of `dst` (`src` holding at least
/// `(dst.len() - 1) * stride + 1` values): stride 2 from pairs (`step_by` does not
/// vectorize), an odd last value on its own.
#[inline(always)]
pub(crate) fn each_strided<D, T: Copy>(dst: &mut [D], src: &[T], stride: usize, f: impl Fn(&mut D, T)) {
    match stride {
        1 => dst.iter_mut().zip(src).for_each(|(d, &s)| f(d, s)),
        2 => {
            let whole = dst.len().min(src.len() / 2);
            dst[..whole].iter_mut().zip(src.chunks_exact(2)).for_each(|(d, two)| f(d, two[0]));
            if let Some(d) = dst.get_mut(whole) {
                f(d, src[2 * whole]);
            }
        }
        _ => dst.iter_mut().zip(src.iter().step_by(stride)).for_each(|(d, &s)| f(d, s)),
    }
}

/// Whether this processor has AVX2 and FMA, the kernels' 256-bit builds' instructions
/// (detected once, cached by `std`).
#[cfg(target_arch = "x86_64")]
pub(crate) fn avx2_available() -> bool {
    std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma")
}

/// Whether this processor has AVX-512F beside AVX2 and FMA, every feature the kernels'
/// `avx2,fma,avx512f` builds enable, and `HASS_AVX2_ONLY` leaves AVX-512 in use.
#[cfg(target_arch = "x86_64")]
pub(crate) fn avx512f_available() -> bool {
    !avx2_only() && std::arch::is_x86_feature_detected!("avx512f") && avx2_available()
}

/// Whether the environment sets `HASS_AVX2_ONLY` (non-empty): the kernels then leave the
/// processor's AVX-512 unused, to measure here what one without it would do
/// (`scripts/bench_runtime.sh`). Read once.
pub(crate) fn avx2_only() -> bool {
    static AVX2_ONLY: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *AVX2_ONLY.get_or_init(|| std::env::var_os("HASS_AVX2_ONLY").is_some_and(|v| !v.is_empty()))
}

/// Run `f` compiled for the widest vector instructions the processor has (AVX-512, else
/// AVX2 and FMA; the baseline elsewhere), so that the loops it inlines vectorize that wide.
/// Give `f` as a closure marked `#[inline(always)]`: one that is not inlined is compiled
/// for the baseline and gains nothing. Every build computes the same values: the compiler
/// only widens loops, and fuses no multiply with an add that the source does not.
pub(crate) fn with_simd<R>(f: impl FnOnce() -> R) -> R {
    #[cfg(target_arch = "x86_64")]
    {
        if avx512::available() {
            return avx512::run(f);
        }
        if let Some(simd) = pulp::x86::V3::try_new() {
            return pulp::Simd::vectorize(simd, f);
        }
    }
    f()
}

/// [`with_simd`]'s AVX-512 build (`pulp` keeps AVX-512 behind a feature of its own).
#[cfg(target_arch = "x86_64")]
#[allow(unsafe_code)]
mod avx512 {
    /// Whether this processor has the instructions (detected once, cached by `std`) and
    /// `HASS_AVX2_ONLY` leaves them in use.
    pub(super) fn available() -> bool {
        // Worked out once: kernels ask before every call (a small layer's many calls
        // spent 5 % of their time in the six checks).
        static AVAILABLE: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
        *AVAILABLE.get_or_init(|| {
            !super::avx2_only()
                && std::arch::is_x86_feature_detected!("avx512f")
                && std::arch::is_x86_feature_detected!("avx512vl")
                && std::arch::is_x86_feature_detected!("avx512bw")
                && std::arch::is_x86_feature_detected!("avx512dq")
                && std::arch::is_x86_feature_detected!("fma")
        })
    }

    /// `f()` compiled for AVX-512; call only when [`available`].
    pub(super) fn run<R>(f: impl FnOnce() -> R) -> R {
        assert!(available());
        // SAFETY: the features `compiled` enables were detected just above.
        unsafe { compiled(f) }
    }

    #[target_feature(enable = "avx2,fma,avx512f,avx512vl,avx512bw,avx512dq")]
    fn compiled<R>(f: impl FnOnce() -> R) -> R {
        f()
    }
}
