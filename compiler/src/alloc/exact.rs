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
//! Those picks see a width converter only between a stage and the producer already picked;
//! under the winning weights, a last bisection below the interval found picks with every
//! first-input link's converter weighed ([`super::joint`]: slower per query, exact on the
//! links), which can only need less at each interval. Finally the remaining headroom is
//! spent to lower the scarcest resource at the same II.

use super::choices::StageChoices;
use super::foldings::enumerate;
use super::joint::Links;
use super::{fits, Allocation};
use crate::hw::cost::Placement;
use crate::hw::pipeline::{Choice, Folds, Network};
use crate::hw::{Budget, Usage};
use rayon::prelude::*;

/// Re-weighting rounds after the first search.
const ROUNDS: usize = 6;

/// Where phase 1's re-weighting rounds after the first bisect.
///
/// Which intervals fit is not monotone in the interval (the cheapest choices' usages are
/// not, and the price of off-chip bits moves with it), so a bisection finds a fitting
/// interval, not the smallest, and its bracket decides which: the same rounds over the two
/// brackets reach different designs, neither always the faster.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Rounds {
    /// Every round over the whole bracket: the allocation a design gets.
    Whole,
    /// A later round only below the best interval so far, and one pick when nothing below
    /// it fits: a quarter of the picks. For ranking a search's moves, whose measured
    /// candidates are allocated [`Rounds::Whole`] (ResNet-18's capped search: the same
    /// artifact, 8 % less CPU).
    BelowBest,
}

/// How close (relative) phase 1b's bisection brackets the interval: its picks cost far
/// more than phase 1's, and 0.01 % of throughput is below anything the model resolves.
const JOINT_TOLERANCE: f64 = 1e-4;

struct IntervalSearch<'a> {
    network: &'a Network,
    budget: &'a Budget,
    stage_choices: Vec<StageChoices>,
    /// Once set, the picks weigh the converters on these links (slower: every lane pair of
    /// every stage is looked at, not O(log n) per stage).
    joint: Option<Links>,
    /// Multiplier on the price of off-chip bits (raised when bandwidth is scarce).
    offchip_tilt: f64,
}

impl IntervalSearch<'_> {
    /// Per stage, the cheapest choice within `ii` cycles, their total usage and the
    /// interval they need (their slowest stage); `None` if a stage cannot reach `ii`. Once
    /// `joint` is set, the picks weigh the converters on the links ([`Links::pick`]).
    fn pick(&self, ii: f64) -> Option<(Vec<Choice>, Usage, f64)> {
        let offchip_weight = self.offchip_tilt / self.budget.offchip_bits_at(ii).max(1.0);
        if let Some(links) = &self.joint {
            let (choices, usages, interval) = links.pick(&self.stage_choices, ii, offchip_weight)?;
            let usage = self.network.total_usage(&choices, usages.into_iter());
            return Some((choices, usage, interval));
        }
        let mut choices = Vec::with_capacity(self.stage_choices.len());
        // Summed in stage order, as `Network::total_usage` sums them.
        let mut summed = Usage::default();
        let mut interval = 1.0f64;
        for (i, stage) in self.stage_choices.iter().enumerate() {
            let mut e = stage.cheapest(ii, offchip_weight)?;
            // A stream arriving at another width needs a converter; a choice that takes it
            // as it comes may be cheaper than the two together.
            let arriving =
                self.network.first_producer(i).and_then(|j| Some((j, self.network.lanes_out(j, &choices[j])?)));
            if let (Some((j, from)), Some(to)) = (arriving, e.lanes_in) {
                if from != to {
                    let converter = self.network.converter(j, from, to);
                    let with_converter = stage.price(&(e.usage + converter), offchip_weight);
                    let matching = stage.cheapest_taking(from, ii, offchip_weight);
                    if let Some(m) = matching.filter(|m| stage.price(&m.usage, offchip_weight) < with_converter) {
                        e = m;
                    }
                }
            }
            choices.push(e.choice);
            summed += e.usage;
            interval = interval.max(e.cycles);
        }
        let usage = self.network.total_usage(&choices, std::iter::once(summed));
        Some((choices, usage, interval))
    }

    fn feasible(&self, ii: f64) -> Option<(Vec<Choice>, Usage, f64)> {
        self.pick(ii).filter(|(_, u, _)| fits(self.budget, u, ii))
    }

    /// The smallest feasible interval in `(lo, hi]`, `hi` feasible, by bisection on the
    /// value until the bracket is within `tolerance` (relative). The answer is always some
    /// stage's cycle count, so once the bracket is tighter than any two distinct counts the
    /// design picked at `hi` is the optimum; its own interval (the slowest picked stage) is
    /// returned, with the query that picked it: the per-stage cheapest choices are not
    /// monotone in the query (the price of off-chip bits depends on it), so only that query
    /// is sure to pick a feasible design again ([`Self::design_at`]).
    fn smallest_feasible(&self, mut lo: f64, mut hi: f64, tolerance: f64) -> (f64, f64) {
        let mut witness = hi;
        while hi - lo > tolerance * hi.max(1.0) {
            // Halve the ratio while the bracket spans orders of magnitude, then the gap.
            let mid = if hi > 4.0 * lo.max(1.0) { (lo.max(1.0) * hi).sqrt() } else { 0.5 * (lo + hi) };
            match self.feasible(mid) {
                // Jump to what the picked design actually needs: at most mid.
                Some((_, _, interval)) => (hi, witness) = (interval.min(mid), mid),
                None => lo = mid,
            }
        }
        (hi, witness)
    }

    /// The design at interval `ii` that [`Self::smallest_feasible`] found with the query
    /// `witness`: picked at `ii` if that fits, else at `witness`, which is sure to.
    fn design_at(&self, (ii, witness): (f64, f64)) -> Option<(f64, Vec<Choice>, Usage)> {
        match self.feasible(ii) {
            Some((c, u, _)) => Some((ii, c, u)),
            None => self.feasible(witness).map(|(c, u, _)| (witness, c, u)),
        }
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
pub fn choices_of_stage(network: &Network, i: usize, budget: &Budget) -> StageChoices {
    StageChoices::new(enumerate(network, i, budget), base_weights(budget))
}

/// How far `network` is from running at interval `ii`: the largest fraction of any capped
/// on-chip resource that the cheapest choices within `ii` cycles need (budget-normalised
/// prices), infinite when some stage cannot reach `ii`. Unlike the interval itself, which
/// moves in steps, this falls with every bit of work a stage sheds, so a search can see
/// progress toward the next interval before it gets there.
pub fn pressure<'a>(
    network: &Network,
    budget: &Budget,
    stage_choices: impl IntoIterator<Item = &'a StageChoices>,
    ii: f64,
) -> f64 {
    let offchip_weight = 1.0 / budget.offchip_bits_at(ii).max(1.0);
    let (mut choices, mut usages) =
        (Vec::with_capacity(network.stages.len()), Vec::with_capacity(network.stages.len()));
    for f in stage_choices {
        match f.cheapest(ii, offchip_weight) {
            Some(e) => {
                choices.push(e.choice);
                usages.push(e.usage);
            }
            None => return f64::INFINITY,
        }
    }
    let u = network.total_usage(&choices, usages.into_iter());
    // On-chip resources only: the first five.
    utilisation(&u, budget, ii)[..5].iter().copied().fold(0.0, f64::max)
}

/// Allocate `network` on `budget` as one partition; `None` if nothing fits.
pub fn allocate(network: &Network, budget: &Budget) -> Option<Allocation> {
    let stage_choices =
        (0..network.stages.len()).into_par_iter().map(|i| choices_of_stage(network, i, budget)).collect();
    allocate_with(network, budget, stage_choices, Rounds::Whole)
}

/// [`allocate`] with every stage's costed choices already built (by [`choices_of_stage`]):
/// a caller that changes one stage at a time rebuilds only that stage's choices.
///
/// Three phases: the smallest interval (bisection, re-weighting what blocks), then the
/// headroom at that interval spent on the fullest resources, then streamed weights brought
/// back on chip where memory is left.
///
/// Width converters couple neighbouring stages, which the per-stage picks only see one
/// producer at a time. Divisor factors line up between stages far more often, so with any
/// factor allowed the search runs a second time among divisor foldings only, and the faster
/// design is kept.
pub fn allocate_with(
    network: &Network,
    budget: &Budget,
    stage_choices: Vec<StageChoices>,
    rounds: Rounds,
) -> Option<Allocation> {
    let aligned: Option<Vec<StageChoices>> = (network.folds == Folds::Any).then(|| {
        let w = base_weights(budget);
        stage_choices.iter().map(|c| c.aligned(w)).collect()
    });
    // The two searches are independent: side by side.
    let (any, aligned) = rayon::join(
        || allocate_among(network, budget, stage_choices, rounds),
        || aligned.and_then(|c| allocate_among(network, budget, c, rounds)),
    );
    let Some(aligned) = aligned else { return any };
    match any {
        Some(a) if a.eval.throughput_fps >= aligned.eval.throughput_fps => Some(a),
        _ => Some(aligned),
    }
}

fn allocate_among(
    network: &Network,
    budget: &Budget,
    stage_choices: Vec<StageChoices>,
    rounds: Rounds,
) -> Option<Allocation> {
    if stage_choices.iter().any(|f| f.entries().next().is_none()) {
        return None;
    }
    // Every stage can reach `floor`; at `ceiling` every stage is at its slowest, and
    // intervals beyond it are set by memory traffic.
    let floor = stage_choices.iter().map(StageChoices::min_cycles).fold(1.0, f64::max);
    let slowest = stage_choices.iter().map(StageChoices::max_cycles).fold(1.0, f64::max);
    let ceiling = slowest * 256.0;
    tracing::info!(stages = stage_choices.len(), floor, ceiling, "searching the initiation interval");

    let mut search = IntervalSearch { network, budget, stage_choices, joint: None, offchip_tilt: 1.0 };
    let (mut ii, mut choices, mut usage) = search.smallest_interval(floor, ceiling, rounds)?;
    search.weigh_links(floor, &mut ii, &mut choices, &mut usage);
    let below = ii * (1.0 - 1e-9);
    let binding = if below < floor {
        "folding".to_string()
    } else {
        search.blockers(below).first().copied().unwrap_or("folding").to_string()
    };
    search.spend_headroom(ii, &mut choices, &mut usage);
    search.weights_back_on_chip(ii, &mut choices, &mut usage);
    let eval = network.evaluate(&choices, budget);
    tracing::info!(ii = eval.ii, fps = eval.throughput_fps, binding, "allocated");
    Some(Allocation { network: network.clone(), offset: 0, choices, eval, binding })
}

impl IntervalSearch<'_> {
    /// Phase 1: the smallest feasible interval in `[floor, ceiling]`, bisecting under the
    /// base resource weights and then, for a few rounds, with the weights of the resources
    /// that block the next-lower interval raised. Leaves the winning weights in place and
    /// returns the interval with its choices and their usage. `rounds`: where the rounds
    /// after the first bisect.
    fn smallest_interval(&mut self, floor: f64, ceiling: f64, rounds: Rounds) -> Option<(f64, Vec<Choice>, Usage)> {
        let mut weights = base_weights(self.budget);
        let mut best: Option<((f64, f64), [f64; 5])> = None;
        for round in 0..=ROUNDS {
            // Below the best, `top` is where the previous round probed what blocks (the loop
            // ends when that falls under `floor`), so it is never below the bracket.
            let top = match best {
                Some(((ii, _), _)) if rounds == Rounds::BelowBest => ii * (1.0 - 1e-9),
                _ => ceiling,
            };
            let found = self.feasible(top).map(|_| self.smallest_feasible(floor * (1.0 - 1e-9), top, 1e-6));
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
            let raised: Vec<usize> = self.blockers(probe).iter().filter_map(|b| resource_index(b)).collect();
            if raised.is_empty() {
                break;
            }
            for r in raised {
                weights[r] *= 4.0;
            }
            self.stage_choices.iter_mut().for_each(|f| f.reweight(weights));
        }
        let (found, w) = best?;
        self.stage_choices.iter_mut().for_each(|f| f.reweight(w));
        self.design_at(found)
    }

    /// Phase 1b: from here on, pick with the converters on the links weighed; search below
    /// `ii` again (under the weights phase 1 left), and at `ii` keep the joint picks when
    /// they need less. Their weighted price is at most the stage-by-stage picks', so they
    /// may fit where those did not.
    fn weigh_links(&mut self, floor: f64, ii: &mut f64, choices: &mut Vec<Choice>, usage: &mut Usage) {
        // The converters priced under the weights phase 1 left, which stay.
        self.joint = Some(Links::new(self.network, &self.stage_choices));
        let below = *ii * (1.0 - 1e-9);
        if below >= floor && self.feasible(below).is_some() {
            let found = self.smallest_feasible(floor * (1.0 - 1e-9), below, JOINT_TOLERANCE);
            if let Some(found) = self.design_at(found) {
                (*ii, *choices, *usage) = found;
                return;
            }
        }
        if let Some((c, u, _)) = self.feasible(*ii).filter(|(_, u, _)| lower_profile(u, usage, self.budget, *ii)) {
            (*choices, *usage) = (c, u);
        }
    }

    /// Phase 2: at the same interval, re-pick with each resource's weight raised by how full
    /// it is (off-chip bandwidth included), keeping a re-pick when its utilisations, sorted
    /// from the fullest down, are lexicographically lower.
    fn spend_headroom(&mut self, ii: f64, choices: &mut Vec<Choice>, usage: &mut Usage) {
        // Stage by stage: the tilted weights are new each round, and the joint picks'
        // tables would be rebuilt for every one of them (most of a sparsity search's
        // allocation time) for designs at the same interval, alike on the models tried.
        self.joint = None;
        for _ in 0..4 {
            let u = utilisation(usage, self.budget, ii);
            let base = base_weights(self.budget);
            let tilted: [f64; 5] = std::array::from_fn(|r| base[r] * (0.05 + u[r]).powi(4));
            self.offchip_tilt = (0.05 + u[5]).powi(4);
            self.stage_choices.iter_mut().for_each(|f| f.reweight(tilted));
            match self.feasible(ii) {
                Some((c, new, _)) if lower_profile(&new, usage, self.budget, ii) => (*choices, *usage) = (c, new),
                _ => break,
            }
        }
    }

    /// Phase 3: bring streamed weights back on chip where the memory is free: same folding,
    /// so the interval stays, and off-chip traffic (and its energy) drops. Largest layers
    /// first.
    fn weights_back_on_chip(&self, ii: f64, choices: &mut [Choice], usage: &mut Usage) {
        let mut order: Vec<usize> =
            (0..choices.len()).filter(|&i| choices[i].placement == Placement::OffChip).collect();
        order.sort_by_key(|&i| std::cmp::Reverse(self.network.stages[i].weights));
        for i in order {
            let Some(old) = self.stage_choices[i].entries().find(|e| e.choice == choices[i]).map(|e| e.usage) else {
                continue;
            };
            for placement in [Placement::Uram, Placement::Bram] {
                let Some(e) = self.stage_choices[i]
                    .entries()
                    .find(|e| e.choice.folding == choices[i].folding && e.choice.placement == placement)
                else {
                    continue;
                };
                let trial = *usage + e.usage - old;
                if fits(self.budget, &trial, ii) {
                    (choices[i], *usage) = (e.choice, trial);
                    break;
                }
            }
        }
    }
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
