//! Sparsity knobs (REFERENCE §4): weight pruning and activation thresholds per layer, and
//! the statistics the cost model takes from them.
//!
//! - [`prune`]: applies the knobs to the graph (weights zeroed, thresholds set on conv and
//!   fully connected inputs).
//! - [`counts`]: window histograms from the runtime's window masks and the weights.
//! - [`reconstruct`]: re-fits the weights pruning keeps so the layer reproduces its dense
//!   outputs (least squares on calibration inputs).
//! - [`statistics`]: the cost model's statistics, from the weights alone or measured by the
//!   runtime on calibration images.
//!
//! What an activation threshold means: the input of the layer reads as zero wherever it is
//! at or below T. After a ReLU this is ONNX `ThresholdedRelu` (small positives dropped).
//! After HardSwish, or on a residual sum, the input can be negative: a threshold T >= 0 then
//! also zeroes every negative value, which changes the function more than after a ReLU; use
//! per-layer values (`--sparsity-config`) to leave such layers alone. The network input is
//! never thresholded by the global value (it is an image, not an activation).

pub mod counts;
pub mod prune;
pub mod reconstruct;
pub mod statistics;

use crate::hw::Precision;
use serde::Deserialize;
use std::collections::BTreeMap;

/// Which of a layer's knobs: the threshold on its weights, the one on its input, or the
/// width of its operands.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum KnobKind {
    /// Weight magnitude pruning.
    Weights,
    /// Activation threshold on the layer's input.
    Inputs,
    /// The width of its weights and of the stream it reads (the two operands of its
    /// multipliers: a DSP packs more multiplies the narrower both are).
    Bits,
}

impl KnobKind {
    /// Every kind, weights first (the order ties are broken in).
    pub const ALL: [KnobKind; 3] = [KnobKind::Weights, KnobKind::Inputs, KnobKind::Bits];

    /// The two sparsity knobs, which are thresholds.
    pub const THRESHOLDS: [KnobKind; 2] = [KnobKind::Weights, KnobKind::Inputs];

    /// Name in logs and reports.
    pub fn name(self) -> &'static str {
        match self {
            KnobKind::Weights => "weights",
            KnobKind::Inputs => "inputs",
            KnobKind::Bits => "bits",
        }
    }
}

/// One value per [`KnobKind`] of a layer.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct PerKnob<T> {
    /// For the weights' knob.
    pub weights: T,
    /// For the input's knob.
    pub inputs: T,
    /// For the operand width's knob.
    pub bits: T,
}

impl<T> std::ops::Index<KnobKind> for PerKnob<T> {
    type Output = T;
    fn index(&self, kind: KnobKind) -> &T {
        match kind {
            KnobKind::Weights => &self.weights,
            KnobKind::Inputs => &self.inputs,
            KnobKind::Bits => &self.bits,
        }
    }
}

impl<T> std::ops::IndexMut<KnobKind> for PerKnob<T> {
    fn index_mut(&mut self, kind: KnobKind) -> &mut T {
        match kind {
            KnobKind::Weights => &mut self.weights,
            KnobKind::Inputs => &mut self.inputs,
            KnobKind::Bits => &mut self.bits,
        }
    }
}

/// The knobs of one layer (or the global defaults).
#[derive(Clone, Copy, Debug, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LayerKnobs {
    /// Weights with |w| below this become 0.
    pub weight_threshold: Option<f32>,
    /// This fraction of the layer's weights, the smallest in magnitude, become 0.
    pub weight_sparsity: Option<f64>,
    /// Inputs at or below this read as 0.
    pub activation_threshold: Option<f32>,
    /// Re-fit the weights pruning keeps, and the bias, to the dense layer's outputs on the
    /// calibration images, from the inputs as the layer's threshold leaves them
    /// ([`reconstruct`]; needs `--calib`). A layer that is thresholded but not pruned is
    /// re-fitted too.
    pub reconstruct: Option<bool>,
    /// Its weights' width in bits (`None`: the global width). Not a sparsity knob, but set
    /// per layer in the same file.
    pub weight_bits: Option<u32>,
    /// The width in bits of the stream it writes (`None`: the global width).
    pub activation_bits: Option<u32>,
}

impl LayerKnobs {
    /// The threshold of knob `kind` (weights: |w| below it pruned; inputs: at or below it
    /// read as zero; widths are no threshold).
    pub fn threshold(&self, kind: KnobKind) -> Option<f32> {
        match kind {
            KnobKind::Weights => self.weight_threshold,
            KnobKind::Inputs => self.activation_threshold,
            KnobKind::Bits => None,
        }
    }

    /// Set the threshold of knob `kind` (one of [`KnobKind::THRESHOLDS`]).
    pub fn set_threshold(&mut self, kind: KnobKind, threshold: Option<f32>) {
        match kind {
            KnobKind::Weights => self.weight_threshold = threshold,
            KnobKind::Inputs => self.activation_threshold = threshold,
            KnobKind::Bits => unreachable!("widths are set through weight_bits"),
        }
    }

    /// `self` where set, else `fallback`.
    pub fn or(self, fallback: LayerKnobs) -> LayerKnobs {
        // A layer that sets one weight knob overrides both global weight knobs.
        let own_weight = self.weight_threshold.is_some() || self.weight_sparsity.is_some();
        LayerKnobs {
            weight_threshold: if own_weight { self.weight_threshold } else { fallback.weight_threshold },
            weight_sparsity: if own_weight { self.weight_sparsity } else { fallback.weight_sparsity },
            activation_threshold: self.activation_threshold.or(fallback.activation_threshold),
            reconstruct: self.reconstruct.or(fallback.reconstruct),
            weight_bits: self.weight_bits.or(fallback.weight_bits),
            activation_bits: self.activation_bits.or(fallback.activation_bits),
        }
    }

    /// Whether any sparsity knob is set (widths are not).
    pub fn any(&self) -> bool {
        self.weight_threshold.is_some() || self.weight_sparsity.is_some() || self.activation_threshold.is_some()
    }

    /// Whether the weights are pruned.
    pub fn prunes(&self) -> bool {
        self.weight_threshold.is_some() || self.weight_sparsity.is_some()
    }

    /// Whether the weights are re-fitted (pruned or thresholded, with reconstruction on).
    pub fn refits(&self) -> bool {
        self.any() && self.reconstruct == Some(true)
    }
}

/// Global knobs and per-layer overrides by layer name: sparsity knobs, and widths.
#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SparsityConfig {
    /// Defaults for every conv and fully connected layer.
    #[serde(flatten)]
    pub global: LayerKnobs,
    /// Overrides by layer name (as in `hassc inspect`).
    #[serde(default)]
    pub layers: BTreeMap<String, LayerKnobs>,
}

impl SparsityConfig {
    /// Whether anything is pruned or thresholded.
    pub fn any(&self) -> bool {
        self.global.any() || self.layers.values().any(LayerKnobs::any)
    }

    /// Whether any layer's pruned weights are re-fitted.
    pub fn refits(&self) -> bool {
        self.layers.values().map(|k| k.or(self.global)).chain([self.global]).any(|k| k.refits())
    }

    /// Whether it sets any width.
    pub fn sets_widths(&self) -> bool {
        std::iter::once(&self.global).chain(self.layers.values()).any(|k| k.weight_bits.or(k.activation_bits).is_some())
    }

    /// The widths it sets, over `default` (16 bits for what neither sets).
    pub fn widths(&self) -> crate::design::Widths {
        let over = |k: &LayerKnobs, d: Precision| Precision {
            weight_bits: k.weight_bits.unwrap_or(d.weight_bits),
            activation_bits: k.activation_bits.unwrap_or(d.activation_bits),
        };
        let default = over(&self.global, Precision::default());
        let layers = self
            .layers
            .iter()
            .filter(|(_, k)| k.weight_bits.or(k.activation_bits).is_some())
            .map(|(name, k)| (name.clone(), over(k, default)))
            .collect();
        crate::design::Widths { default, layers }
    }

    /// Parse a TOML or JSON config (`json` picks the format).
    pub fn parse(text: &str, json: bool) -> Result<SparsityConfig, String> {
        if json {
            serde_json::from_str(text).map_err(|e| e.to_string())
        } else {
            toml::from_str(text).map_err(|e: toml::de::Error| e.message().trim().replace('\n', " "))
        }
    }
}
