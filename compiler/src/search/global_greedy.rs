//! The public HASS predecessor's loop (REFERENCE §4), as a baseline: ONE weight threshold
//! and ONE activation threshold for every layer (never on the image itself), raised in steps
//! of 0.001 and 0.01. At each step both are tried; the one that loses less top-1 per unit
//! of throughput gained is kept, as long as it stays within the budget. The loop stops when
//! neither step fits the budget (or pruning runs out of weights).

use super::evaluate::{Candidate, Evaluator};
use super::{Context, Stop};
use crate::error::Result;
use crate::sparsity::LayerKnobs;

/// The predecessor's steps.
const WEIGHT_STEP: f32 = 0.001;
const ACTIVATION_STEP: f32 = 0.01;

fn knobs(eval: &Evaluator, weight: f32, activation: f32) -> Vec<LayerKnobs> {
    let weights = LayerKnobs { weight_threshold: (weight > 0.0).then_some(weight), ..LayerKnobs::default() };
    everywhere(eval, weights, activation)
}

/// `weights` (the weight knobs) on every target, and the activation `threshold` (none at 0)
/// on every target's input but the image's: the knobs of the baselines that set one value for
/// the whole network.
pub(super) fn everywhere(eval: &Evaluator, weights: LayerKnobs, threshold: f32) -> Vec<LayerKnobs> {
    eval.targets()
        .iter()
        .map(|t| LayerKnobs {
            activation_threshold: (threshold > 0.0 && !t.reads_image).then_some(threshold),
            ..weights
        })
        .collect()
}

/// Run the loop from the dense model.
pub(super) fn run(eval: &mut Evaluator, ctx: &mut Context) -> Result<Stop> {
    let largest = eval.targets().iter().flat_map(|t| t.weights.iter()).fold(0.0f32, |m, w| m.max(w.abs()));
    let (mut weight, mut activation) = (0.0f32, 0.0f32);
    loop {
        if let Some(stop) = ctx.stop_reason() {
            return Ok(stop);
        }
        let current = eval.accepted().metrics;
        let mut best: Option<(f64, Candidate, usize, f32, f32)> = None;
        for (w, a) in [(weight + WEIGHT_STEP, activation), (weight, activation + ACTIVATION_STEP)] {
            if w > largest || ctx.out_of_time() {
                continue;
            }
            let candidate = eval.evaluate(&knobs(eval, w, a))?;
            let point = ctx.record(&candidate);
            let m = candidate.metrics;
            if !ctx.within_budget(&m) {
                continue;
            }
            // Top-1 lost per relative throughput gained; a step that gains nothing ranks
            // last, one that loses nothing first.
            let gain = m.score / current.score - 1.0;
            let loss = (current.top1 - m.top1).max(0.0);
            let cost = if gain > 0.0 { loss / gain } else { f64::INFINITY };
            if best.as_ref().is_none_or(|b| cost < b.0) {
                best = Some((cost, candidate, point, w, a));
            }
        }
        let Some((_, candidate, point, w, a)) = best else { return Ok(ctx.stop_reason().unwrap_or(Stop::Converged)) };
        ctx.accept(point, &candidate.metrics);
        eval.accept(candidate)?;
        (weight, activation) = (w, a);
    }
}
