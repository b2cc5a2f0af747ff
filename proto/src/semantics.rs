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
    /// `max(x, 0)`.
    Relu,
    /// `min(max(x, min), max)` (ReLU6 is `Clip { min: 0, max: 6 }`).
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

impl Activation {
    /// Apply to one value.
    #[inline]
    pub fn apply(self, x: f32) -> f32 {
        match self {
            Self::Relu => x.max(0.0),
            Self::Clip { min, max } => x.max(min).min(max),
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
