//! What the layer kinds compute, defined once for both sides of the contract: the compiler
//! reasons about these operations (shape rules, folding, export) and the runtime executes
//! them, and the two must agree on every value. The wire form of each is in the schema
//! (`schema/artifact.proto`); these are the meanings.
//!
//! Like the rest of this crate, nothing here executes a layer: activations are defined on
//! one value, which is the contract; kernels live in the runtime.

/// An element-wise activation, fused into a layer or standing alone.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Activation {
    /// `max(x, 0)` (`+0` for NaN and for `-0`).
    Relu,
    /// `min(max(x, min), max)`, `min` for NaN (ReLU6 is `Clip { min: 0, max: 6 }`).
    Clip {
        /// Lower bound.
        min: f32,
        /// Upper bound.
        max: f32,
    },
    /// `clamp(alpha * x + beta, 0, 1)`.
    HardSigmoid {
        /// Slope.
        alpha: f32,
        /// Offset.
        beta: f32,
    },
    /// `x * clamp(x / 6 + 1/2, 0, 1)`.
    HardSwish,
    /// `1 / (1 + exp(-x))`.
    Sigmoid,
}

/// `max(x, low)`, `low` for a NaN `x` (as `f32::max`) and for a zero of either sign when
/// `low` is zero (where `f32::max` leaves the sign unspecified): one x86 `max` per vector,
/// where `f32::max` compiled to three instructions (ReLU6 after a depthwise conv spent a
/// sixth of the layer's time on them).
#[inline(always)]
fn at_least(x: f32, low: f32) -> f32 {
    if x > low {
        x
    } else {
        low
    }
}

/// `min(x, high)` of a number `x`, as [`at_least`].
#[inline(always)]
fn at_most(x: f32, high: f32) -> f32 {
    if x < high {
        x
    } else {
        high
    }
}

impl Activation {
    /// Apply to one value.
    #[inline]
    pub fn apply(self, x: f32) -> f32 {
        match self {
            Self::Relu => at_least(x, 0.0),
            Self::Clip { min, max } => at_most(at_least(x, min), max),
            Self::HardSigmoid { alpha, beta } => (alpha * x + beta).clamp(0.0, 1.0),
            Self::HardSwish => x * (x / 6.0 + 0.5).clamp(0.0, 1.0),
            Self::Sigmoid => 1.0 / (1.0 + (-x).exp()),
        }
    }

    /// Whether no input makes it negative: then the stream it writes is unsigned, and the
    /// accelerator carries `b` bits of magnitude on a `b`-bit bus, FINN's convention (in the
    /// artifact, a signed format one bit wider holds the same values exactly).
    pub fn is_non_negative(self) -> bool {
        match self {
            Self::Relu | Self::HardSigmoid { .. } | Self::Sigmoid => true,
            Self::Clip { min, .. } => min >= 0.0,
            // Its minimum is -0.375, at x = -1.5.
            Self::HardSwish => false,
        }
    }

    /// Apply in place to a slice.
    pub fn apply_slice(self, xs: &mut [f32]) {
        for x in xs {
            *x = self.apply(*x);
        }
    }

    /// Short lower-case name, as in reports.
    pub fn name(self) -> &'static str {
        match self {
            Self::Relu => "relu",
            Self::Clip { .. } => "clip",
            Self::HardSigmoid { .. } => "hardsigmoid",
            Self::HardSwish => "hardswish",
            Self::Sigmoid => "sigmoid",
        }
    }
}

/// Max or average pooling.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PoolKind {
    /// Maximum over the window (padding ignored).
    Max,
    /// Mean over the window.
    Average,
}

/// Binary element-wise operation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EltwiseKind {
    /// `a + b`.
    Add,
    /// `a * b`.
    Mul,
}

#[cfg(test)]
mod tests {
    use super::Activation;

    /// NaN goes to the lower bound, either zero to `+0` under ReLU, infinities to the bounds.
    #[test]
    fn relu_and_clip_at_their_edges() {
        let bits = |x: f32| x.to_bits();
        let relu = Activation::Relu;
        assert_eq!(bits(relu.apply(f32::NAN)), bits(0.0));
        assert_eq!(bits(relu.apply(-0.0)), bits(0.0));
        assert_eq!(relu.apply(-3.5), 0.0);
        assert_eq!(relu.apply(2.25), 2.25);
        assert_eq!(relu.apply(f32::INFINITY), f32::INFINITY);
        let relu6 = Activation::Clip { min: 0.0, max: 6.0 };
        assert_eq!(bits(relu6.apply(f32::NAN)), bits(0.0));
        assert_eq!(bits(relu6.apply(-0.0)), bits(0.0));
        for (x, y) in [(-1.0, 0.0), (3.0, 3.0), (6.0, 6.0), (7.5, 6.0), (f32::INFINITY, 6.0), (f32::NEG_INFINITY, 0.0)]
        {
            assert_eq!(relu6.apply(x), y, "relu6({x})");
        }
        let open = Activation::Clip { min: f32::NEG_INFINITY, max: 1.0 };
        assert_eq!(open.apply(-1e30), -1e30);
        assert_eq!(open.apply(f32::NAN), f32::NEG_INFINITY);
    }
}
