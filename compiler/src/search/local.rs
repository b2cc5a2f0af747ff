//! The hass strategy's last phase: once the greedy has converged, a seeded local search
//! that trades sparsity between knobs.
//!
//! Why it pays: the greedy raises one knob at a time, in the order its ranking finds, and
//! closes a knob for good when its next step breaks the budget. Top-1 and changed
//! predictions on a few hundred images move in whole images, so a knob can be closed by a
//! step that happens to flip one image too many, and the budget the early moves spent may
//! buy more elsewhere: on the bundled Fashion-MNIST CNN, less thresholding of the second
//! conv's inputs and much more pruning of its weights is both faster and within budget, a
//! trade no single raise can find.
//!
//! Each sample raises a knob of a layer whose stage binds the interval (sparsity elsewhere
//! only frees resources the allocator may not be able to use) by a random share of that
//! layer's weights or inputs, and half the time lowers another knob (gives budget back).
//! A sample whose hardware estimate (statistics of the changed layers, no network run)
//! scores below the accepted design is dropped unevaluated; the others are evaluated and
//! kept when within the budget and scoring higher, or scoring the same with less
//! divergence from the dense model (budget freed for the next sample). The number of
//! samples follows from the model's size and the generator is seeded, so the result
//! depends only on the inputs and the seed.

use super::evaluate::Evaluator;
use super::ladder::{sorted_magnitudes, sorted_positive};
use super::Context;
use crate::error::Result;
use crate::sparsity::{KnobKind, LayerKnobs};
use rand::{RngExt, SeedableRng};

/// Samples evaluated (accuracy and hardware) at most.
pub const SAMPLES: usize = 32;
/// ... and at most about this many multiply-accumulates' worth of evaluations, but at
/// least [`MIN_SAMPLES`]: on an ImageNet-size model each evaluation takes seconds and the
/// refinement gains least (ResNet-18: +3.7 % from 48 samples, after the greedy's +32 %),
/// on the small models it is cheap and gains most.
const SAMPLE_MACS: f64 = 1.5e11;
/// Samples evaluated at least.
const MIN_SAMPLES: usize = 8;
/// A stage binds when its cycles are at least this share of the interval.
const BINDING_SHARE: f64 = 0.9;
/// Largest share of a layer's weights or inputs one sample moves a knob by.
const MAX_STEP: f64 = 0.1;
/// Highest share a knob is raised to.
const MAX_SHARE: f64 = 0.95;
/// Values sampled from an activation tensor to place its thresholds.
const ACTIVATION_SAMPLE: usize = 1 << 16;

/// One knob and the values that place its threshold at a share.
struct KnobScale {
    target: usize,
    kind: KnobKind,
    /// Weight magnitudes or positive input values, ascending.
    values: Vec<f32>,
    /// The threshold at share 0: none, or 0 for inputs with negative values whose
    /// threshold the greedy already set (zeroing them is a large step taken once).
    floor: Option<f32>,
}

impl KnobScale {
    /// The threshold that zeroes `share` of the values (`floor` at 0).
    fn threshold(&self, share: f64) -> Option<f32> {
        let n = self.values.len();
        let k = ((share * n as f64).round() as usize).min(n.saturating_sub(1));
        if k == 0 || n == 0 {
            return self.floor;
        }
        Some(match self.kind {
            // |w| < t prunes: the k-th smallest magnitude prunes the k below it.
            KnobKind::Weights => self.values[k],
            // x <= t zeroes: the k-th smallest value zeroes k of them.
            KnobKind::Inputs => self.values[k - 1],
            KnobKind::Bits => unreachable!("the refinement moves thresholds only"),
        })
        .filter(|&t| t > 0.0)
        .or(self.floor)
    }

    /// The share of the values `threshold` zeroes.
    fn share(&self, threshold: Option<f32>) -> f64 {
        let Some(t) = threshold else { return 0.0 };
        let k = match self.kind {
            KnobKind::Weights => self.values.partition_point(|&v| v < t),
            KnobKind::Inputs => self.values.partition_point(|&v| v <= t),
            KnobKind::Bits => unreachable!("the refinement moves thresholds only"),
        };
        k as f64 / self.values.len().max(1) as f64
    }

    fn get(&self, knobs: &[LayerKnobs]) -> Option<f32> {
        knobs[self.target].threshold(self.kind)
    }

    fn set(&self, knobs: &mut [LayerKnobs], threshold: Option<f32>) {
        knobs[self.target].set_threshold(self.kind, threshold);
    }
}

/// The knobs the refinement may move, from the accepted state.
fn knobs(eval: &Evaluator) -> Vec<KnobScale> {
    let accepted = &eval.accepted().knobs;
    let mut out = Vec::new();
    for (t, target) in eval.targets().iter().enumerate() {
        out.push(KnobScale {
            target: t,
            kind: KnobKind::Weights,
            values: sorted_magnitudes(&target.weights),
            floor: None,
        });
        if target.reads_image {
            continue;
        }
        let input = eval.input_of(t);
        let has_negative = input.iter().any(|&v| v < 0.0);
        if has_negative && accepted[t].activation_threshold.is_none() {
            continue;
        }
        let floor = has_negative.then_some(0.0);
        out.push(KnobScale {
            target: t,
            kind: KnobKind::Inputs,
            values: sorted_positive(input, ACTIVATION_SAMPLE),
            floor,
        });
    }
    out
}

/// Evaluate up to [`SAMPLES`] samples from the evaluator's accepted state, seeded by `seed`;
/// returns the knobs (target, kind) it changed.
pub(super) fn refine(eval: &mut Evaluator, ctx: &mut Context, seed: u64) -> Result<Vec<(usize, KnobKind)>> {
    let samples = ((SAMPLE_MACS / eval.macs_per_evaluation().max(1.0)) as usize).clamp(MIN_SAMPLES, SAMPLES);
    let _span = tracing::info_span!("refine", samples).entered();
    let mut rng = rand::rngs::Xoshiro256PlusPlus::seed_from_u64(seed);
    let all = knobs(eval);
    let mut changed = Vec::new();
    let mut evaluated = 0;
    // A drawn sample whose hardware estimate (no network run) cannot beat the accepted
    // design is dropped before it costs an evaluation; draws are bounded too.
    for _ in 0..4 * samples {
        if evaluated == samples || ctx.out_of_time() {
            break;
        }
        let current = eval.accepted().metrics;
        let knobs_now = eval.accepted().knobs.clone();
        let shares = eval.cycle_shares();
        let binding = |k: &&KnobScale| shares[eval.targets()[k.target].stage] >= BINDING_SHARE;
        let raisable: Vec<&KnobScale> =
            all.iter().filter(binding).filter(|k| k.share(k.get(&knobs_now)) < MAX_SHARE).collect();
        if raisable.is_empty() {
            break;
        }
        let up = raisable[rng.random_range(0..raisable.len())];
        let mut next = knobs_now.clone();
        let from = up.share(up.get(&knobs_now));
        up.set(&mut next, up.threshold((from + rng.random_range(0.01..MAX_STEP)).min(MAX_SHARE)));
        let mut moved = vec![(up.target, up.kind)];
        if rng.random_bool(0.5) {
            let lowerable: Vec<&KnobScale> = all
                .iter()
                .filter(|k| !std::ptr::eq(*k, up) && k.get(&knobs_now).is_some() && k.get(&knobs_now) != k.floor)
                .collect();
            if !lowerable.is_empty() {
                let down = lowerable[rng.random_range(0..lowerable.len())];
                let from = down.share(down.get(&knobs_now));
                down.set(&mut next, down.threshold((from - rng.random_range(0.01..MAX_STEP)).max(0.0)));
                moved.push((down.target, down.kind));
            }
        }
        if next == knobs_now || eval.estimate(&next)?.score < current.score * (1.0 - 1e-12) {
            continue;
        }
        evaluated += 1;
        let candidate = eval.evaluate(&next)?;
        let point = ctx.record(&candidate);
        let m = candidate.metrics;
        let better = m.score > current.score * (1.0 + 1e-9)
            || (m.score >= current.score * (1.0 - 1e-12) && m.divergence < current.divergence);
        tracing::debug!(score = m.score, drop = ctx.drop(&m), divergence = m.divergence, better, "sample");
        if !better || !ctx.within_budget(&m) {
            continue;
        }
        tracing::info!(fps = m.throughput_fps, drop = ctx.drop(&m), divergence = m.divergence, "refined");
        *ctx.costs[up.target].get_or_insert(0.0) += ctx.drop(&m) - ctx.drop(&current);
        ctx.accept(point, &m);
        eval.accept(candidate)?;
        changed.extend(moved);
    }
    changed.sort_unstable();
    changed.dedup();
    Ok(changed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shares_and_thresholds_invert_each_other() {
        let weights = KnobScale {
            target: 0,
            kind: KnobKind::Weights,
            values: (1..=100).map(|v| v as f32).collect(),
            floor: None,
        };
        assert_eq!(weights.threshold(0.0), None);
        // |w| < 31 prunes 30 of 1..=100.
        assert_eq!(weights.threshold(0.3), Some(31.0));
        assert_eq!(weights.share(Some(31.0)), 0.3);
        let inputs = KnobScale {
            target: 0,
            kind: KnobKind::Inputs,
            values: (1..=100).map(|v| v as f32).collect(),
            floor: Some(0.0),
        };
        // x <= 30 zeroes 30; share 0 keeps the negative values zeroed.
        assert_eq!(inputs.threshold(0.3), Some(30.0));
        assert_eq!(inputs.share(Some(30.0)), 0.3);
        assert_eq!(inputs.threshold(0.0), Some(0.0));
    }
}
