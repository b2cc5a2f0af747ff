//! Hardware estimates of candidate knobs without re-running the network, and the cache
//! that makes re-estimating a one-layer move cost one allocation.

use super::{Evaluator, Metrics};
use crate::alloc::choices::StageChoices;
use crate::error::{CompileError, Result};
use crate::sparsity::LayerKnobs;
use hass_runtime::stats::WindowMasks;
use std::sync::Arc;

/// What a one-layer move does to its own stage.
pub(super) struct Estimated {
    /// The accepted input masks it was computed against.
    pub(super) input: Arc<WindowMasks>,
    sparsity: crate::hw::sparse::LayerSparsity,
    encoded_weight_bits: Option<u64>,
    choices: Arc<StageChoices>,
}

fn internal(what: &str) -> CompileError {
    CompileError::internal(format!("search estimate: {what}"))
}

impl Evaluator<'_> {
    /// The hardware metrics of `knobs` without re-running the network: statistics of the
    /// changed layers from the accepted activations, every other layer's as accepted.
    /// Accuracy fields are the accepted state's. A change of widths alone is costed from
    /// the accepted statistics ([`Self::estimate_widths`]).
    pub fn estimate(&mut self, knobs: &[LayerKnobs]) -> Result<Metrics> {
        let widths = self.widths_of(knobs);
        if widths != self.state.widths {
            let thresholds = |k: &LayerKnobs| LayerKnobs { weight_bits: None, ..*k };
            if knobs.iter().zip(&self.state.knobs).all(|(a, b)| thresholds(a) == thresholds(b)) {
                return self.estimate_widths(&widths);
            }
            // Widths and thresholds at once (the greedy never asks): measured in full.
            return Ok(self.at_widths(knobs, widths)?.metrics);
        }
        let changed: Vec<usize> = (0..knobs.len()).filter(|&t| knobs[t] != self.state.knobs[t]).collect();
        if let [t] = changed[..] {
            return self.estimate_one(knobs, t);
        }
        let changed = self.apply(knobs);
        let candidate = self.with_statistics(knobs, &changed, self.state.trace.clone());
        self.apply(&self.state.knobs.clone());
        let metrics = candidate?.metrics;
        let s = self.state.metrics;
        Ok(Metrics { top1: s.top1, disagreement: s.disagreement, divergence: s.divergence, ..metrics })
    }

    /// [`Self::estimate`] of a move of target `t` alone: its stage's statistics and costed choices
    /// are cached, so re-estimating it after other layers moved costs one allocation.
    fn estimate_one(&mut self, knobs: &[LayerKnobs], t: usize) -> Result<Metrics> {
        let (layer, stage) = (self.targets[t].layer, self.targets[t].stage);
        let key = (t, knobs[t].weight_threshold.map(f32::to_bits), knobs[t].activation_threshold.map(f32::to_bits));
        let input = self.state.masks[layer].clone().ok_or_else(|| internal("a target without window masks"))?;
        let fresh = self.estimates.get(&key).is_some_and(|e| Arc::ptr_eq(&e.input, &input));
        if !fresh {
            self.apply(knobs);
            let c = self.tallied(knobs, &[t], self.state.trace.clone());
            self.apply(&self.state.knobs.clone());
            let entry = Estimated {
                input,
                sparsity: c.network.sparsity[stage].clone().ok_or_else(|| internal("a target without statistics"))?,
                encoded_weight_bits: c.network.stages[stage].encoded_weight_bits,
                choices: c.stage_choices[stage].clone(),
            };
            self.estimates.insert(key, entry);
        }
        let entry = &self.estimates[&key];
        let mut network = self.state.network.clone();
        network.sparsity[stage] = Some(entry.sparsity.clone());
        network.stages[stage].encoded_weight_bits = entry.encoded_weight_bits;
        let mut stage_choices = self.state.stage_choices.clone();
        stage_choices[stage] = entry.choices.clone();
        let metrics = self.hardware(&network, &stage_choices)?;
        let s = self.state.metrics;
        Ok(Metrics { top1: s.top1, disagreement: s.disagreement, divergence: s.divergence, ..metrics })
    }
}
