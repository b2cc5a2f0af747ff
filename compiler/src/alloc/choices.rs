//! The foldings worth considering for each stage, costed once per run.
//!
//! For a loop of n iterations only the factors `ceil(n / t)` matter (any other factor costs
//! more lanes for the same number of passes), so each coarse factor ranges over those
//! "efficient" values: about 2 sqrt(n) of them. Spatial parallelism is considered only once
//! the channels are fully parallel (before that, channel lanes are cheaper: no extra line
//! buffer width or window logic).

use crate::hw::cost::{conv_cost_parts, conv_cycles, stage_cost, Folding, Placement};
use crate::hw::pipeline::{Choice, Folds, Network};
use crate::hw::stage::StageKind;
use crate::hw::{Budget, Usage};

/// Largest spatial parallelism considered (pixels per cycle).
pub const MAX_SPATIAL: usize = 64;

/// How many of a stage's slowest entries within an interval [`StageChoices::cheapest_where`]
/// looks at.
pub const SCAN: usize = 128;

/// A costed choice.
#[derive(Clone, Copy, Debug)]
pub struct CostedChoice {
    /// The choice.
    pub choice: Choice,
    /// Cycles per image.
    pub cycles: f64,
    /// Resources.
    pub usage: Usage,
    /// Whether every factor divides its loop, one pixel per cycle ([`divides`]).
    pub aligned: bool,
}

/// The distinct minimal factors of a loop of `n` iterations, ascending.
pub fn efficient_factors(n: usize) -> Vec<usize> {
    let mut f: Vec<usize> = (1..=n.max(1)).map(|t| n.max(1).div_ceil(t)).collect();
    f.sort_unstable();
    f.dedup();
    f
}

/// The factors worth trying for a loop of `n` iterations.
type Factors = fn(usize) -> Vec<usize>;

/// The divisors of `n`, ascending.
pub fn divisors(n: usize) -> Vec<usize> {
    (1..=n.max(1)).filter(|&d| n.max(1).is_multiple_of(d)).collect()
}

/// Whether `f` only has factors that divide the loops they unroll, one pixel per cycle (what
/// `Folds::Divisors` allows).
pub fn divides(stage: &crate::hw::stage::Stage, f: &Folding) -> bool {
    match stage.kind {
        StageKind::Conv { c_in, c_out, groups, kernel, .. } => {
            (c_in / groups).is_multiple_of(f.coarse_in)
                && (c_out / groups).is_multiple_of(f.coarse_out)
                && groups.is_multiple_of(f.coarse_group)
                && (kernel[0] * kernel[1]).is_multiple_of(f.fine)
                && f.spatial == 1
        }
        StageKind::Lanes { channels, .. } => channels.is_multiple_of(f.coarse_in) && f.spatial == 1,
        StageKind::Free => true,
    }
}

/// Every choice of stage `i` worth considering that could fit `budget` on its own.
pub fn enumerate(network: &Network, i: usize, budget: &Budget) -> Vec<CostedChoice> {
    let stage = &network.stages[i];
    // The factors of a loop of n iterations, and the pixels per cycle over n columns.
    let (factors, spatial_factors): (Factors, Factors) = match network.folds {
        Folds::Any => (efficient_factors, efficient_factors),
        Folds::Divisors => (divisors, |_| vec![1]),
    };
    let sparsity = network.sparsity[i].as_ref();
    let mut out = Vec::new();
    let fits =
        |u: &Usage| u.dsp <= budget.dsp && u.lut <= budget.lut && u.bram18 <= budget.bram18 && u.uram <= budget.uram;
    let mut push = |folding: Folding, placement: Placement| {
        let c = stage_cost(stage, folding, placement, sparsity);
        if fits(&c.usage) {
            let aligned = divides(stage, &folding);
            out.push(CostedChoice { choice: Choice { folding, placement }, cycles: c.cycles, usage: c.usage, aligned });
        }
    };
    match &stage.kind {
        StageKind::Conv { c_in, c_out, groups, kernel, out_hw, .. } => {
            let window = kernel[0] * kernel[1];
            let sparse = sparsity.is_some_and(|s| s.is_sparse());
            let fines: Vec<usize> = match network.folds {
                Folds::Any if sparse => (1..=window).collect(),
                _ => factors(window),
            };
            let (cin_g, cout_g) = (c_in / groups, c_out / groups);
            let placements: &[Placement] = if budget.uram > 0.0 {
                &[Placement::Bram, Placement::Uram, Placement::OffChip]
            } else {
                &[Placement::Bram, Placement::OffChip]
            };
            let spatials: Vec<usize> = spatial_factors(out_hw[1]).into_iter().filter(|&p| p <= MAX_SPATIAL).collect();
            let mut conv_entries = Vec::new();
            for &cg in &factors(*groups) {
                for &ci in &factors(cin_g) {
                    // Per (fine, spatial): the cycles at the previous coarse_out. Cycles never
                    // rise with coarse_out; once they stop falling (a stream bound that
                    // coarse_out does not move), wider coarse_out only costs more.
                    let mut last = vec![f64::INFINITY; fines.len() * spatials.len()];
                    for &co in &factors(cout_g) {
                        for (fi, &fine) in fines.iter().enumerate() {
                            let full = ci == cin_g && cg == *groups;
                            for (si, &spatial) in if full { &spatials[..] } else { &[1][..] }.iter().enumerate() {
                                let folding =
                                    Folding { coarse_in: ci, coarse_out: co, coarse_group: cg, fine, spatial };
                                let cycles = conv_cycles(stage, folding, sparsity);
                                let slot = &mut last[fi * spatials.len() + si];
                                if cycles >= *slot {
                                    continue;
                                }
                                *slot = cycles;
                                let (core, weights) = conv_cost_parts(stage, folding, sparsity);
                                if core.usage.dsp > budget.dsp || core.usage.lut > budget.lut {
                                    continue; // wider spatial parallelism only costs more
                                }
                                for &placement in placements {
                                    let usage = core.usage + weights.at(placement);
                                    if fits(&usage) {
                                        let choice = Choice { folding, placement };
                                        conv_entries.push(CostedChoice {
                                            choice,
                                            cycles: core.cycles,
                                            usage,
                                            aligned: divides(stage, &choice.folding),
                                        });
                                    }
                                }
                            }
                        }
                    }
                }
            }
            out.extend(conv_entries);
        }
        StageKind::Lanes { channels, cols, .. } => {
            for &l in &factors(*channels) {
                let spatials = if l == *channels { spatial_factors(*cols) } else { vec![1] };
                for &p in spatials.iter().filter(|&&p| p <= MAX_SPATIAL) {
                    push(
                        Folding { coarse_in: l, coarse_out: 1, coarse_group: 1, fine: 1, spatial: p },
                        Placement::Bram,
                    );
                }
            }
        }
        StageKind::Free => push(Folding::ONE, Placement::Bram),
    }
    out
}

/// A stage's entries arranged to answer "the cheapest choice with at most II cycles" under
/// per-resource weights, in O(log n).
#[derive(Clone, Debug)]
pub struct StageChoices {
    /// Entries whose weights stay on chip, by ascending cycles.
    on_chip: Vec<CostedChoice>,
    /// Off-chip entries, by ascending cycles.
    off_chip: Vec<CostedChoice>,
    /// `best_on[k]`: index of the cheapest on-chip entry among `on_chip[..=k]`.
    best_on: Vec<usize>,
    best_off: Vec<usize>,
    /// Weights the prefix minima were computed with.
    weights: [f64; 5],
}

/// Scalar cost of the on-chip resources of `u` under `w` (dsp, bram18, uram, lut, ff).
pub fn scalar(u: &Usage, w: &[f64; 5]) -> f64 {
    u.dsp * w[0] + u.bram18 * w[1] + u.uram * w[2] + u.lut * w[3] + u.ff * w[4]
}

fn prefix_best(entries: &[CostedChoice], w: &[f64; 5]) -> Vec<usize> {
    let mut best = Vec::with_capacity(entries.len());
    let (mut at, mut lowest) = (0, f64::INFINITY);
    for (k, e) in entries.iter().enumerate() {
        let cost = scalar(&e.usage, w);
        if cost < lowest {
            (at, lowest) = (k, cost);
        }
        best.push(at);
    }
    best
}

impl StageChoices {
    /// Arrange `entries` for queries under `weights`.
    pub fn new(entries: Vec<CostedChoice>, weights: [f64; 5]) -> StageChoices {
        // Sort small keys, not the entries themselves.
        let mut order: Vec<(f64, Placement, bool, f64, u32)> = entries
            .iter()
            .enumerate()
            .map(|(i, e)| (e.cycles, e.choice.placement, e.aligned, e.usage.dsp, i as u32))
            .collect();
        order.sort_unstable_by(|a, b| {
            a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)).then(a.2.cmp(&b.2)).then(a.3.total_cmp(&b.3)).then(a.4.cmp(&b.4))
        });
        // Among entries of equal cycles and placement keep only those not dominated in
        // DSP, BRAM, URAM and LUT by an earlier (cheaper-in-DSP) one: no weighting can
        // prefer a dominated entry. Different factor splits (2 x 4 vs 4 x 2 passes) often
        // tie on cycles, so this removes most of a conv stage's entries.
        let mut kept: Vec<CostedChoice> = Vec::with_capacity(entries.len() / 4);
        let mut group_start = 0;
        for &(_, _, _, _, i) in &order {
            let e = entries[i as usize];
            // Aligned entries are kept beside the others: the search may be restricted to them.
            let same_group = |k: &CostedChoice| {
                k.cycles == e.cycles && k.choice.placement == e.choice.placement && k.aligned == e.aligned
            };
            if kept.last().is_none_or(|k| !same_group(k)) {
                group_start = kept.len();
            }
            let dominated = kept[group_start..].iter().any(|k| {
                k.usage.dsp <= e.usage.dsp
                    && k.usage.bram18 <= e.usage.bram18
                    && k.usage.uram <= e.usage.uram
                    && k.usage.lut <= e.usage.lut
            });
            if !dominated {
                kept.push(e);
            }
        }
        let entries = kept;
        let (off_chip, on_chip): (Vec<CostedChoice>, Vec<CostedChoice>) =
            entries.into_iter().partition(|e| e.choice.placement == Placement::OffChip);
        let best_on = prefix_best(&on_chip, &weights);
        let best_off = prefix_best(&off_chip, &weights);
        StageChoices { on_chip, off_chip, best_on, best_off, weights }
    }

    /// The aligned entries only ([`divides`]), arranged under `weights`.
    pub fn aligned(&self, weights: [f64; 5]) -> StageChoices {
        StageChoices::new(self.entries().filter(|e| e.aligned).copied().collect(), weights)
    }

    /// Recompute the prefix minima for new weights.
    pub fn reweight(&mut self, weights: [f64; 5]) {
        self.best_on = prefix_best(&self.on_chip, &weights);
        self.best_off = prefix_best(&self.off_chip, &weights);
        self.weights = weights;
    }

    /// All entries (for the greedy allocator and reports).
    pub fn entries(&self) -> impl Iterator<Item = &CostedChoice> {
        self.on_chip.iter().chain(&self.off_chip)
    }

    /// The fewest cycles any entry reaches.
    pub fn min_cycles(&self) -> f64 {
        let first = |v: &[CostedChoice]| v.first().map_or(f64::INFINITY, |e| e.cycles);
        first(&self.on_chip).min(first(&self.off_chip))
    }

    /// The weighted price of `u` under the current weights.
    pub fn price(&self, u: &Usage, offchip_weight: f64) -> f64 {
        scalar(u, &self.weights) + u.offchip_bits * offchip_weight
    }

    /// The cheapest entry among the slowest [`SCAN`] on chip and off chip with at most `ii`
    /// cycles that `keep` accepts: the cheap entries are the slow ones, and the bound keeps
    /// a pick O(stages x SCAN).
    pub fn cheapest_where(
        &self,
        ii: f64,
        offchip_weight: f64,
        keep: impl Fn(&Choice) -> bool,
    ) -> Option<&CostedChoice> {
        let within = |v: &'_ [CostedChoice]| v.len().min(v.partition_point(|e| e.cycles <= ii));
        let (on, off) = (&self.on_chip[..within(&self.on_chip)], &self.off_chip[..within(&self.off_chip)]);
        on.iter()
            .rev()
            .take(SCAN)
            .chain(off.iter().rev().take(SCAN))
            .filter(|e| keep(&e.choice))
            .min_by(|a, b| self.price(&a.usage, offchip_weight).total_cmp(&self.price(&b.usage, offchip_weight)))
    }

    /// The cheapest entry with at most `ii` cycles, counting off-chip weight bits against
    /// `offchip_weight` per bit.
    pub fn cheapest(&self, ii: f64, offchip_weight: f64) -> Option<&CostedChoice> {
        fn pick<'e>(entries: &'e [CostedChoice], best: &[usize], ii: f64) -> Option<&'e CostedChoice> {
            let k = entries.partition_point(|e| e.cycles <= ii);
            (k > 0).then(|| &entries[best[k - 1]])
        }
        let on = pick(&self.on_chip, &self.best_on, ii);
        let off = pick(&self.off_chip, &self.best_off, ii);
        match (on, off) {
            (Some(a), Some(b)) => {
                let cost_b = scalar(&b.usage, &self.weights) + b.usage.offchip_bits * offchip_weight;
                Some(if scalar(&a.usage, &self.weights) <= cost_b { a } else { b })
            }
            (a, b) => a.or(b),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn efficient_factors_are_the_minimal_ones_per_pass_count() {
        assert_eq!(efficient_factors(9), vec![1, 2, 3, 5, 9]);
        assert_eq!(efficient_factors(1), vec![1]);
        let f64s = efficient_factors(64);
        assert!(f64s.contains(&22) && f64s.contains(&32) && !f64s.contains(&31));
        for n in [3usize, 64, 96, 512, 2048] {
            let f = efficient_factors(n);
            // Every pass count 1..=n is reached by exactly one factor, the smallest.
            let passes: std::collections::BTreeSet<usize> = f.iter().map(|x| n.div_ceil(*x)).collect();
            assert_eq!(passes.len(), f.len());
            assert!(f.len() <= 2 * (n as f64).sqrt() as usize + 2);
        }
    }
}
