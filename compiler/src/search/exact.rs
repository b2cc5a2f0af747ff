//! The default allocator: a search over the initiation interval (REFERENCE §3).
//!
//! For one partition the problem is min-max: for a target interval II each stage
//! independently takes its cheapest choice with at most II cycles, and II is feasible when
//! the summed resources fit. Feasibility only gets easier as II grows, so a bisection on II
//! (snapping to the interval the picked design really needs, always one of the stages'
//! cycle counts) finds the smallest feasible II. That is exact when
//! one resource binds. When several do, "cheapest" is a weighted sum of resources
//! normalised by the budget; after each search the weights of the resources that blocked
//! the next-lower II are raised and the search repeats, keeping the best design (a few
//! rounds, each a bisection of a few dozen steps over O(log n) per-stage queries).
//! Finally the remaining headroom is spent to lower the scarcest resource at the same II.

use super::options::{enumerate, Front};
use super::{fits, total_usage, Allocation};
use crate::hw::cost::Placement;
use crate::hw::pipeline::{Choice, Network};
use crate::hw::{Budget, Usage};
use rayon::prelude::*;

/// Re-weighting rounds after the first search.
const ROUNDS: usize = 6;

struct Search<'a> {
    network: &'a Network,
    budget: &'a Budget,
    fronts: Vec<Front>,
    /// Multiplier on the price of off-chip bits (raised when bandwidth is scarce).
    offchip_tilt: f64,
}

impl Search<'_> {
    /// Per stage, the cheapest choice within `ii` cycles, their total usage and the
    /// interval they need (their slowest stage); `None` if a stage cannot reach `ii`.
    fn pick(&self, ii: f64) -> Option<(Vec<Choice>, Usage, f64)> {
        let offchip_weight = self.offchip_tilt / self.budget.offchip_bits_at(ii).max(1.0);
        let mut choices = Vec::with_capacity(self.fronts.len());
        let mut usages = Vec::with_capacity(self.fronts.len());
        let mut interval = 1.0f64;
        for front in &self.fronts {
            let e = front.cheapest(ii, offchip_weight)?;
            choices.push(e.choice);
            usages.push(e.usage);
            interval = interval.max(e.cycles);
        }
        Some((choices, total_usage(self.network, usages.into_iter()), interval))
    }

    fn feasible(&self, ii: f64) -> Option<(Vec<Choice>, Usage, f64)> {
        self.pick(ii).filter(|(_, u, _)| fits(self.budget, u, ii))
    }

    /// The smallest feasible interval in `(lo, hi]`, `hi` feasible, by bisection on the
    /// value. The answer is always some stage's cycle count, so once the bracket is tighter
    /// than any two distinct counts the design picked at `hi` is the optimum; its own
    /// interval (the slowest picked stage) is returned, with the query that picked it: the
    /// per-stage cheapest choices are not monotone in the query (the price of off-chip bits
    /// depends on it), so only that query is sure to pick a feasible design again.
    fn smallest_feasible(&self, mut lo: f64, mut hi: f64) -> (f64, f64) {
        let mut witness = hi;
        while hi - lo > 1e-6 * hi.max(1.0) {
            let mid = 0.5 * (lo + hi);
            match self.feasible(mid) {
                // Jump to what the picked design actually needs: at most mid.
                Some((_, _, interval)) => (hi, witness) = (interval.min(mid), mid),
                None => lo = mid,
            }
        }
        (hi, witness)
    }

    /// What blocks interval `ii`: the resources over budget, or "folding" if some stage
    /// cannot go that fast at all.
    fn blockers(&self, ii: f64) -> Vec<&'static str> {
        match self.pick(ii) {
            None => vec!["folding"],
            Some((_, u, _)) => {
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

/// Stage `i`'s choices, arranged for the search (what [`allocate_with`] takes).
pub fn stage_front(network: &Network, i: usize, budget: &Budget) -> Front {
    Front::new(enumerate(network, i, budget), base_weights(budget))
}

/// How far `network` is from running at interval `ii`: the largest fraction of any capped
/// on-chip resource that the cheapest choices within `ii` cycles need (budget-normalised
/// prices), infinite when some stage cannot reach `ii`. Unlike the interval itself, which
/// moves in steps, this falls with every bit of work a stage sheds, so a search can see
/// progress toward the next interval before it gets there.
pub fn pressure<'a>(network: &Network, budget: &Budget, fronts: impl IntoIterator<Item = &'a Front>, ii: f64) -> f64 {
    let offchip_weight = 1.0 / budget.offchip_bits_at(ii).max(1.0);
    let mut usages = Vec::with_capacity(network.stages.len());
    for f in fronts {
        match f.cheapest(ii, offchip_weight) {
            Some(e) => usages.push(e.usage),
            None => return f64::INFINITY,
        }
    }
    let u = total_usage(network, usages.into_iter());
    // On-chip resources only: the first five.
    utilisation(&u, budget, ii)[..5].iter().copied().fold(0.0, f64::max)
}

/// Allocate `network` on `budget` as one partition; `None` if nothing fits.
pub fn allocate(network: &Network, budget: &Budget) -> Option<Allocation> {
    let fronts = (0..network.stages.len()).into_par_iter().map(|i| stage_front(network, i, budget)).collect();
    allocate_with(network, budget, fronts)
}

/// [`allocate`] with every stage's front already built (by [`stage_front`]): a caller that
/// changes one stage at a time rebuilds only that stage's front.
pub fn allocate_with(network: &Network, budget: &Budget, fronts: Vec<Front>) -> Option<Allocation> {
    let mut weights = base_weights(budget);
    if fronts.iter().any(|f| f.entries().next().is_none()) {
        return None;
    }
    // Every stage can reach `floor`; at `ceiling` every stage is at its slowest, and
    // intervals beyond it are set by memory traffic.
    let floor = fronts.iter().map(Front::min_cycles).fold(1.0, f64::max);
    let slowest = fronts.iter().map(|f| f.entries().map(|e| e.cycles).fold(0.0, f64::max)).fold(1.0, f64::max);
    let ceiling = slowest * 256.0;
    tracing::info!(stages = fronts.len(), floor, ceiling, "searching the initiation interval");

    let mut search = Search { network, budget, fronts, offchip_tilt: 1.0 };
    let mut best: Option<((f64, f64), [f64; 5])> = None;
    for round in 0..=ROUNDS {
        let found = search.feasible(ceiling).map(|_| search.smallest_feasible(floor * (1.0 - 1e-9), ceiling));
        tracing::debug!(round, ii = found.map(|f| f.0), "bisection done");
        if let Some(ii) = found {
            if best.is_none_or(|(b, _)| ii.0 < b.0) {
                best = Some((ii, weights));
            }
        }
        let probe = best.map_or(ceiling, |((ii, _), _)| ii * (1.0 - 1e-9));
        if probe < floor {
            break;
        }
        let raised: Vec<usize> = search.blockers(probe).iter().filter_map(|b| resource_index(b)).collect();
        if raised.is_empty() {
            break;
        }
        for r in raised {
            weights[r] *= 4.0;
        }
        search.fronts.iter_mut().for_each(|f| f.reweight(weights));
    }
    let ((ii, witness), w) = best?;
    search.fronts.iter_mut().for_each(|f| f.reweight(w));
    let (mut choices, mut usage, ii) = match search.feasible(ii) {
        Some((c, u, _)) => (c, u, ii),
        None => {
            let (c, u, _) = search.feasible(witness).expect("feasible at the query that found it");
            (c, u, witness)
        }
    };
    let below = ii * (1.0 - 1e-9);
    let binding = if below < floor {
        "folding".to_string()
    } else {
        search.blockers(below).first().copied().unwrap_or("folding").to_string()
    };

    // Spend the headroom: at the same II, re-pick with each resource's weight raised by
    // how full it is (off-chip bandwidth included), keeping a re-pick when its utilisations,
    // sorted from the fullest down, are lexicographically lower.
    for _ in 0..4 {
        let u = utilisation(&usage, budget, ii);
        let base = base_weights(budget);
        let tilted: [f64; 5] = std::array::from_fn(|r| base[r] * (0.05 + u[r]).powi(4));
        search.offchip_tilt = (0.05 + u[5]).powi(4);
        search.fronts.iter_mut().for_each(|f| f.reweight(tilted));
        match search.feasible(ii) {
            Some((c, new, _)) if lower_profile(&new, &usage, budget, ii) => (choices, usage) = (c, new),
            _ => break,
        }
    }
    // Bring streamed weights back on chip where the memory is free: same folding, so the
    // interval stays, and off-chip traffic (and its energy) drops. Largest layers first.
    let mut order: Vec<usize> = (0..choices.len()).filter(|&i| choices[i].placement == Placement::OffChip).collect();
    order.sort_by_key(|&i| std::cmp::Reverse(network.stages[i].weights));
    for i in order {
        for placement in [Placement::Uram, Placement::Bram] {
            let Some(e) = search.fronts[i]
                .entries()
                .find(|e| e.choice.folding == choices[i].folding && e.choice.placement == placement)
            else {
                continue;
            };
            let old = search.fronts[i].entries().find(|e| e.choice == choices[i]).expect("chosen entry").usage;
            let mut trial = usage + e.usage;
            trial.dsp -= old.dsp;
            trial.bram18 -= old.bram18;
            trial.uram -= old.uram;
            trial.lut -= old.lut;
            trial.ff -= old.ff;
            trial.offchip_bits -= old.offchip_bits;
            if fits(budget, &trial, ii) {
                (choices[i], usage) = (e.choice, trial);
                break;
            }
        }
    }
    let eval = network.evaluate(&choices, budget);
    tracing::info!(ii = eval.ii, fps = eval.throughput_fps, binding, "allocated");
    Some(Allocation { network: network.clone(), offset: 0, choices, eval, binding })
}

/// Utilisation of dsp, bram18, uram, lut, ff and off-chip bandwidth at interval `ii`.
fn utilisation(u: &Usage, b: &Budget, ii: f64) -> [f64; 6] {
    let frac = |used: f64, cap: f64| if cap > 0.0 { used / cap } else { 0.0 };
    [
        frac(u.dsp, b.dsp),
        frac(u.bram18, b.bram18),
        frac(u.uram, b.uram),
        frac(u.lut, b.lut),
        frac(u.ff, b.ff),
        frac(u.offchip_bits, b.offchip_bits_at(ii)),
    ]
}

/// Whether `new`'s utilisations, fullest first, are below `old`'s (beyond rounding).
fn lower_profile(new: &Usage, old: &Usage, b: &Budget, ii: f64) -> bool {
    let sorted = |u: &Usage| {
        let mut v = utilisation(u, b, ii);
        v.sort_by(|x, y| y.total_cmp(x));
        v
    };
    for (n, o) in sorted(new).iter().zip(sorted(old)) {
        if (n - o).abs() > 1e-6 {
            return *n < o;
        }
    }
    false
}
