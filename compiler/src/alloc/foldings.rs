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
    /// Parallel words the stage reads per cycle ([`Network::lanes_in`]; `None` for wiring).
    pub lanes_in: Option<usize>,
    /// Parallel words it writes per cycle ([`Network::lanes_out`]; `None` for wiring).
    pub lanes_out: Option<usize>,
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
    let costed = |choice: Choice, cycles: f64, usage: Usage| CostedChoice {
        choice,
        cycles,
        usage,
        aligned: divides(stage, &choice.folding),
        lanes_in: network.lanes_in(i, &choice),
        lanes_out: network.lanes_out(i, &choice),
    };
    let push = |out: &mut Vec<CostedChoice>, folding: Folding, placement: Placement| {
        let c = stage_cost(stage, folding, placement, sparsity);
        if fits(&c.usage) {
            out.push(costed(Choice { folding, placement }, c.cycles, c.usage));
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
            let couts = factors(cout_g);
            let dsp_per_mult = stage.precision.dsp_per_mult();
            for &cg in &factors(*groups) {
                for &ci in &factors(cin_g) {
                    // Per (fine, spatial): the cycles at the previous coarse_out. Cycles never
                    // rise with coarse_out; once they stop falling (a stream bound that
                    // coarse_out does not move), wider coarse_out only costs more.
                    let mut last = vec![f64::INFINITY; fines.len() * spatials.len()];
                    for &co in &couts {
                        for (fi, &fine) in fines.iter().enumerate() {
                            let full = ci == cin_g && cg == *groups;
                            for (si, &spatial) in if full { &spatials[..] } else { &[1][..] }.iter().enumerate() {
                                // The multipliers alone already over budget: skip the costing.
                                // (Before the cycles: they are most of a sparse stage's
                                // costing, and the multipliers only grow with coarse_out, so
                                // no later slot reads a skipped one.)
                                if ((cg * ci * co * fine * spatial) as f64 * dsp_per_mult).ceil() > budget.dsp {
                                    continue;
                                }
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
                                        out.push(costed(Choice { folding, placement }, core.cycles, usage));
                                    }
                                }
                            }
                        }
                    }
                }
            }
        }
        StageKind::Lanes { channels, cols, .. } => {
            for &l in &factors(*channels) {
                let spatials = if l == *channels { spatial_factors(*cols) } else { vec![1] };
                for &p in spatials.iter().filter(|&&p| p <= MAX_SPATIAL) {
                    push(
                        &mut out,
                        Folding { coarse_in: l, coarse_out: 1, coarse_group: 1, fine: 1, spatial: p },
                        Placement::Bram,
                    );
                }
            }
        }
        StageKind::Free => push(&mut out, Folding::ONE, Placement::Bram),
    }
    out
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
