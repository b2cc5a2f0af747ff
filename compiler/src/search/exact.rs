//! The default allocator: a search over the initiation interval (REFERENCE §3).
//!
//! For one partition the problem is min-max: for a target interval II each stage
//! independently takes its cheapest choice with at most II cycles, and II is feasible when
//! the summed resources fit. Feasibility only gets easier as II grows, so a binary search
//! over the distinct stage-cycle values finds the smallest feasible II. That is exact when
//! one resource binds. When several do, "cheapest" is a weighted sum of resources
//! normalised by the budget; after each search the weights of the resources that blocked
//! the next-lower II are raised and the search repeats, keeping the best design (a few
//! rounds, each a binary search of a few dozen steps over O(log n) per-stage queries).
//! Finally the remaining headroom is spent to lower the scarcest resource at the same II.

use super::options::{enumerate, Front};
use super::{fits, total_usage, Allocation};
use crate::hw::pipeline::{Choice, Network};
use crate::hw::{Budget, Usage};

/// Re-weighting rounds after the first search.
const ROUNDS: usize = 6;

struct Search<'a> {
    network: &'a Network,
    budget: &'a Budget,
    fronts: Vec<Front>,
}

impl Search<'_> {
    /// Per stage, the cheapest choice within `ii` cycles; `None` if a stage cannot reach it.
    fn pick(&self, ii: f64) -> Option<(Vec<Choice>, Usage)> {
        let offchip_weight = 1.0 / self.budget.offchip_bits_at(ii).max(1.0);
        let mut choices = Vec::with_capacity(self.fronts.len());
        let mut usages = Vec::with_capacity(self.fronts.len());
        for front in &self.fronts {
            let e = front.cheapest(ii, offchip_weight)?;
            choices.push(e.choice);
            usages.push(e.usage);
        }
        Some((choices, total_usage(self.network, usages.into_iter())))
    }

    fn feasible(&self, ii: f64) -> Option<(Vec<Choice>, Usage)> {
        self.pick(ii).filter(|(_, u)| fits(self.budget, u, ii))
    }

    /// Smallest feasible candidate, by binary search.
    fn smallest_feasible(&self, candidates: &[f64]) -> Option<usize> {
        let (mut lo, mut hi) = (0, candidates.len());
        // Invariant: candidates[hi] feasible (or hi == len), candidates[..lo] infeasible.
        while lo < hi {
            let mid = (lo + hi) / 2;
            if self.feasible(candidates[mid]).is_some() {
                hi = mid;
            } else {
                lo = mid + 1;
            }
        }
        (hi < candidates.len()).then_some(hi)
    }

    /// What blocks interval `ii`: the resources over budget, or "folding" if some stage
    /// cannot go that fast at all.
    fn blockers(&self, ii: f64) -> Vec<&'static str> {
        match self.pick(ii) {
            None => vec!["folding"],
            Some((_, u)) => {
                let mut over = self.budget.exceeded(&u);
                if u.offchip_bits > self.budget.offchip_bits_at(ii) {
                    over.push("bandwidth");
                }
                over
            }
        }
    }
}

fn base_weights(b: &Budget) -> [f64; 5] {
    let w = |cap: f64| if cap > 0.0 { 1.0 / cap } else { 1e9 };
    [w(b.dsp), w(b.bram18), w(b.uram), w(b.lut), w(b.ff)]
}

fn resource_index(name: &str) -> Option<usize> {
    ["dsp", "bram18", "uram", "lut", "ff"].iter().position(|r| *r == name)
}

/// Allocate `network` on `budget` as one partition; `None` if nothing fits.
pub fn allocate(network: &Network, budget: &Budget) -> Option<Allocation> {
    let mut weights = base_weights(budget);
    let fronts: Vec<Front> =
        (0..network.stages.len()).map(|i| Front::new(enumerate(network, i, budget), weights)).collect();
    if fronts.iter().any(|f| f.entries().next().is_none()) {
        return None;
    }
    let mut candidates: Vec<f64> = fronts.iter().flat_map(|f| f.entries().map(|e| e.cycles)).collect();
    let floor = fronts.iter().map(Front::min_cycles).fold(0.0, f64::max);
    candidates.retain(|&c| c >= floor);
    candidates.sort_by(f64::total_cmp);
    candidates.dedup();
    // Intervals set by memory traffic lie beyond every stage's slowest choice.
    let slowest = *candidates.last().unwrap_or(&1.0);
    for k in 1..=8 {
        candidates.push(slowest * f64::powi(2.0, k));
    }
    tracing::info!(stages = fronts.len(), candidates = candidates.len(), "searching the initiation interval");

    let mut search = Search { network, budget, fronts };
    let mut best: Option<(usize, [f64; 5])> = None;
    for round in 0..=ROUNDS {
        let found = search.smallest_feasible(&candidates);
        tracing::debug!(round, ii = found.map(|k| candidates[k]), "binary search done");
        if let Some(k) = found {
            if best.is_none_or(|(b, _)| k < b) {
                best = Some((k, weights));
            }
        }
        let probe = best.map_or(candidates.len() - 1, |(k, _)| k.saturating_sub(1));
        let blockers = search.blockers(candidates[probe]);
        let raised: Vec<usize> = blockers.iter().filter_map(|b| resource_index(b)).collect();
        if raised.is_empty() || best.is_some_and(|(k, _)| k == 0) {
            break;
        }
        for r in raised {
            weights[r] *= 4.0;
        }
        search.fronts.iter_mut().for_each(|f| f.reweight(weights));
    }
    let (k, w) = best?;
    search.fronts.iter_mut().for_each(|f| f.reweight(w));
    let ii = candidates[k];
    let (mut choices, mut usage) = search.feasible(ii).expect("found feasible");
    let binding = if k == 0 {
        "folding".to_string()
    } else {
        search.blockers(candidates[k - 1]).first().copied().unwrap_or("folding").to_string()
    };

    // Spend the headroom: at the same II, re-pick with weights that favour the scarcest
    // resource, as long as the result still fits.
    for _ in 0..3 {
        let utilisation = [
            usage.dsp / budget.dsp.max(1.0),
            usage.bram18 / budget.bram18.max(1.0),
            usage.uram / budget.uram.max(1.0),
            usage.lut / budget.lut.max(1.0),
            usage.ff / budget.ff.max(1.0),
        ];
        let base = base_weights(budget);
        let tilted: [f64; 5] = std::array::from_fn(|r| base[r] * (0.05 + utilisation[r]).powi(4));
        search.fronts.iter_mut().for_each(|f| f.reweight(tilted));
        match search.feasible(ii) {
            Some((c, u)) if peak(&u, budget) < peak(&usage, budget) => (choices, usage) = (c, u),
            _ => break,
        }
    }
    let eval = network.evaluate(&choices, budget);
    tracing::info!(ii = eval.ii, fps = eval.throughput_fps, binding, "allocated");
    Some(Allocation { network: network.clone(), offset: 0, choices, eval, binding })
}

/// Highest utilisation over the on-chip resources.
fn peak(u: &Usage, b: &Budget) -> f64 {
    [
        u.dsp / b.dsp,
        u.bram18 / b.bram18,
        u.uram / b.uram.max(1e-9) * (u.uram > 0.0) as u8 as f64,
        u.lut / b.lut,
        u.ff / b.ff,
    ]
    .into_iter()
    .fold(0.0, f64::max)
}
