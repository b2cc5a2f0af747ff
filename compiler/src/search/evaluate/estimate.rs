//! Hardware estimates of candidate knobs without re-running the network, and the cache
//! that makes re-estimating a one-layer move cost one allocation. Estimates only rank
//! moves: the one-layer and width-only ones (nearly all) allocate with
//! [`Rounds::BelowBest`] (a quarter of the allocator's picks), while measured candidates
//! get every round over the whole bracket.

use super::{Evaluator, Metrics};
use crate::alloc::choices::StageChoices;
use crate::alloc::exact::{choices_of_stage, Rounds};
use crate::error::{CompileError, Result};
use crate::sparsity::LayerKnobs;
use hass_runtime::stats::WindowMasks;
use rayon::prelude::*;
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

/// Target, weight threshold and activation threshold (as bits) of a one-layer estimate.
pub(super) type EstimateKey = (usize, Option<u32>, Option<u32>);

/// A one-layer move counted but not yet costed (see [`Evaluator::estimate_all`]).
struct Uncosted {
    key: EstimateKey,
    input: Arc<WindowMasks>,
    /// The accepted network with the move's statistics and weights in its stage.
    network: crate::hw::pipeline::Network,
    stage: usize,
    sparsity: crate::hw::sparse::LayerSparsity,
    encoded_weight_bits: Option<u64>,
}

/// What an estimate of some knobs needs to do.
enum Kind {
    /// Nothing changes.
    Same,
    /// Only widths change: costed from the accepted statistics.
    Widths(crate::design::Widths),
    /// One target's thresholds change: its cached statistics and choices.
    One(usize),
    /// Anything else.
    Other,
}

impl Evaluator<'_> {
    /// The hardware metrics of `knobs` without re-running the network: statistics of the
    /// changed layers from the accepted activations, every other layer's as accepted.
    /// Accuracy fields are the accepted state's. A change of widths alone is costed from
    /// the accepted statistics ([`Self::estimate_widths`]).
    pub fn estimate(&mut self, knobs: &[LayerKnobs]) -> Result<Metrics> {
        match self.kind(knobs) {
            Kind::Other => {}
            _ => return self.estimate_all(&[knobs.to_vec()]).remove(0),
        }
        let widths = self.widths_of(knobs);
        if widths != self.state.widths {
            // Widths and thresholds at once (the greedy never asks): measured in full.
            return Ok(self.at_widths(knobs, widths)?.metrics);
        }
        let changed = self.apply(knobs);
        let candidate = self.with_statistics(knobs, &changed, self.state.trace().clone());
        self.apply(&self.state.knobs.clone());
        let metrics = candidate?.metrics;
        let s = self.state.metrics;
        Ok(Metrics { top1: s.top1, disagreement: s.disagreement, divergence: s.divergence, ..metrics })
    }

    /// [`Self::estimate`] of several candidates, each changing one target's thresholds or
    /// only widths (what ranking moves asks): the statistics they need are tallied first,
    /// then their stages are costed, then the allocations run; both in parallel.
    pub fn estimate_all(&mut self, candidates: &[Vec<LayerKnobs>]) -> Vec<Result<Metrics>> {
        let kinds: Vec<Kind> = candidates.iter().map(|k| self.kind(k)).collect();
        let counting = tracing::debug_span!("count").entered();
        let mut prepared = Vec::with_capacity(kinds.len());
        let mut uncosted = Vec::new();
        for (knobs, kind) in candidates.iter().zip(&kinds) {
            prepared.push(match kind {
                Kind::One(t) => self.count_one(knobs, *t, &uncosted).map(|c| uncosted.extend(c)),
                Kind::Other => Err(internal("estimate_all takes one-layer or width-only moves")),
                _ => Ok(()),
            });
        }
        drop(counting);
        let costing = tracing::debug_span!("cost", stages = uncosted.len());
        // Costing a stage's foldings is most of a one-layer estimate: every move's at once.
        let budget = crate::hw::Budget::of(self.board);
        let costed: Vec<(EstimateKey, Estimated)> = costing.in_scope(|| {
            uncosted
                .into_par_iter()
                .map(|u| {
                    let choices = Arc::new(choices_of_stage(&u.network, u.stage, &budget));
                    let entry = Estimated {
                        input: u.input,
                        sparsity: u.sparsity,
                        encoded_weight_bits: u.encoded_weight_bits,
                        choices,
                    };
                    (u.key, entry)
                })
                .collect()
        });
        self.estimates.extend(costed);
        let this = &*self;
        let _allocating = tracing::debug_span!("allocate-all", candidates = kinds.len()).entered();
        kinds
            .par_iter()
            .zip(candidates)
            .zip(prepared)
            .map(|((kind, knobs), prepared)| {
                prepared?;
                match kind {
                    Kind::Same => Ok(this.state.metrics),
                    Kind::Widths(widths) => this.estimate_widths(widths),
                    Kind::One(t) => this.estimate_one(knobs, *t),
                    Kind::Other => unreachable!("refused above"),
                }
            })
            .collect()
    }

    fn kind(&self, knobs: &[LayerKnobs]) -> Kind {
        let widths = self.widths_of(knobs);
        let moved: Vec<usize> =
            (0..knobs.len()).filter(|&t| super::thresholds_differ(&knobs[t], &self.state.knobs[t])).collect();
        match (widths == self.state.widths, moved.as_slice()) {
            (true, []) => Kind::Same,
            (false, []) => Kind::Widths(widths),
            (true, [t]) => Kind::One(*t),
            _ => Kind::Other,
        }
    }

    fn estimate_key(knobs: &[LayerKnobs], t: usize) -> EstimateKey {
        (t, knobs[t].weight_threshold.map(f32::to_bits), knobs[t].activation_threshold.map(f32::to_bits))
    }

    /// Target `t`'s statistics under `knobs`, to be costed, unless cached or among
    /// `pending`: its stage's entry stays valid while its accepted input masks do, so
    /// re-estimating a move after other layers moved costs one allocation.
    fn count_one(&mut self, knobs: &[LayerKnobs], t: usize, pending: &[Uncosted]) -> Result<Option<Uncosted>> {
        let (layer, stage) = (self.targets[t].layer, self.targets[t].stage);
        let key = Self::estimate_key(knobs, t);
        let input = self.state.masks[layer].clone().ok_or_else(|| internal("a target without window masks"))?;
        if self.estimates.get(&key).is_some_and(|e| Arc::ptr_eq(&e.input, &input))
            || pending.iter().any(|u| u.key == key)
        {
            return Ok(None);
        }
        tracing::debug_span!("apply").in_scope(|| self.apply(knobs));
        let (c, _) = tracing::debug_span!("tally").in_scope(|| self.counted(knobs, &[t], self.state.trace().clone()));
        self.apply(&self.state.knobs.clone());
        let sparsity = c.network.sparsity[stage].clone().ok_or_else(|| internal("a target without statistics"))?;
        let encoded_weight_bits = c.network.stages[stage].encoded_weight_bits;
        Ok(Some(Uncosted { key, input, network: c.network, stage, sparsity, encoded_weight_bits }))
    }

    /// [`Self::estimate`] of a move of target `t` alone, counted by [`Self::count_one`] and
    /// costed in [`Self::estimate_all`].
    fn estimate_one(&self, knobs: &[LayerKnobs], t: usize) -> Result<Metrics> {
        let stage = self.targets[t].stage;
        let entry = self.estimates.get(&Self::estimate_key(knobs, t)).ok_or_else(|| internal("not prepared"))?;
        let mut network = self.state.network.clone();
        network.sparsity[stage] = Some(entry.sparsity.clone());
        network.stages[stage].encoded_weight_bits = entry.encoded_weight_bits;
        let mut stage_choices = self.state.stage_choices.clone();
        stage_choices[stage] = entry.choices.clone();
        let metrics = self.hardware(&network, &stage_choices, Rounds::BelowBest)?;
        let s = self.state.metrics;
        Ok(Metrics { top1: s.top1, disagreement: s.disagreement, divergence: s.divergence, ..metrics })
    }
}
