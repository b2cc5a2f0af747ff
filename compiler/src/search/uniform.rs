//! A baseline that does not look at the hardware: the same fraction of weights pruned in
//! every layer (the smallest magnitudes of each) and one activation threshold on every
//! layer's input (never the image), pushed as far as the accuracy budget allows, then
//! allocated. At each step both knobs are tried and the one that damages the outputs less
//! (top-1 first, then divergence from the dense model) is kept; throughput plays no part.
//! This is the "non-hardware-aware sparse design" the HASS paper states its gains against.

use super::evaluate::{Candidate, Evaluator};
use super::{Context, Stop};
use crate::error::Result;
use crate::sparsity::LayerKnobs;

/// Fraction of each layer's weights added per step.
const SPARSITY_STEP: f64 = 0.025;
/// The most of a layer that is ever pruned.
const MAX_SPARSITY: f64 = 0.975;
/// Activation threshold added per step (as the predecessor's loop).
const ACTIVATION_STEP: f32 = 0.01;

fn knobs(eval: &Evaluator, sparsity: f64, activation: f32) -> Vec<LayerKnobs> {
    let weights = LayerKnobs { weight_sparsity: (sparsity > 0.0).then_some(sparsity), ..LayerKnobs::default() };
    super::global_greedy::everywhere(eval, weights, activation)
}

/// A step tried: what it does to the outputs, and where it leads.
struct Step {
    /// Top-1 lost (negated top-1), then divergence: lower is better.
    damage: (f64, f64),
    candidate: Candidate,
    point: usize,
    steps: usize,
    activation: f32,
}

/// Run the loop from the dense model.
pub(super) fn run(eval: &mut Evaluator, ctx: &mut Context) -> Result<Stop> {
    let (mut steps, mut activation) = (0usize, 0.0f32);
    loop {
        if let Some(stop) = ctx.stop_reason() {
            return Ok(stop);
        }
        let mut best: Option<Step> = None;
        for (s, a) in [(steps + 1, activation), (steps, activation + ACTIVATION_STEP)] {
            let sparsity = s as f64 * SPARSITY_STEP;
            if sparsity > MAX_SPARSITY || ctx.out_of_time() {
                continue;
            }
            let candidate = eval.evaluate(&knobs(eval, sparsity, a))?;
            let point = ctx.record(&candidate);
            let m = candidate.metrics;
            if !ctx.within_budget(&m) {
                continue;
            }
            let damage = (-m.top1, m.divergence);
            if best.as_ref().is_none_or(|b| damage.0 < b.damage.0 || (damage.0 == b.damage.0 && damage.1 < b.damage.1))
            {
                best = Some(Step { damage, candidate, point, steps: s, activation: a });
            }
        }
        let Some(step) = best else { return Ok(ctx.stop_reason().unwrap_or(Stop::Converged)) };
        ctx.accept(step.point, &step.candidate.metrics);
        eval.accept(step.candidate)?;
        (steps, activation) = (step.steps, step.activation);
    }
}
