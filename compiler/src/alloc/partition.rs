//! Networks that do not fit one device run as partitions, one after another, each a full
//! reconfiguration of the device (REFERENCE §2.6). Stages are cut in execution order: a
//! partition grows while its cheapest design still fits; values crossing a cut go through
//! off-chip memory.

use super::{foldings, Allocation, AllocationError, Allocator};
use crate::hw::cost::{stage_cost, Placement};
use crate::hw::pipeline::{Choice, Folds, Network};
use crate::hw::{Budget, Usage};

/// The stages `range` of `network` as a network of their own: inputs from before the cut
/// become off-chip inputs, outputs read after it become off-chip outputs.
pub fn slice(network: &Network, range: std::ops::Range<usize>) -> Network {
    let mut stages: Vec<_> = network.stages[range.clone()].to_vec();
    let mut crossing_in = 0usize;
    for s in &mut stages {
        for inp in &mut s.inputs {
            *inp = match *inp {
                Some(j) if range.contains(&j) => Some(j - range.start),
                Some(j) => {
                    crossing_in += network.stages[j].words_out;
                    None
                }
                None => None,
            };
        }
    }
    // A stage's output leaves the partition when its last reader comes after the cut.
    let mut last_reader = vec![None; range.len()];
    for (j, s) in network.stages.iter().enumerate().skip(range.end) {
        for &i in s.inputs.iter().flatten() {
            if range.contains(&i) {
                last_reader[i - range.start] = Some(j);
            }
        }
    }
    let read_later: usize = network.stages[range.clone()]
        .iter()
        .zip(&last_reader)
        .filter(|(_, reader)| reader.is_some())
        .map(|(s, _)| s.words_out)
        .sum();
    let bits = network.precision.activation_bits as f64;
    Network {
        stages,
        folds: network.folds,
        sparsity: network.sparsity[range.clone()].to_vec(),
        precision: network.precision,
        fixed: network.fixed[range.clone()].to_vec(),
        fill: network.fill[range.clone()].to_vec(),
        // The first partition streams the network input; the last writes its output.
        io_bits: (crossing_in + read_later) as f64 * bits + if range.start == 0 { network.io_bits } else { 0.0 },
        macs: network.stages[range].iter().map(|s| s.macs).sum(),
    }
}

/// The cheapest choice of stage `i`: coarse factors 1, weights streamed off chip, and the
/// `fine` that costs least against `budget` (one multiplier per window needs a squeeze
/// that can cost more than the window's multipliers).
fn cheapest(network: &Network, i: usize, budget: &Budget) -> Choice {
    let stage = &network.stages[i];
    let placement = if stage.is_conv() { Placement::OffChip } else { Placement::Bram };
    let price = |u: &Usage| {
        // A resource the board lacks makes any use of it infinitely dear.
        let share = |used: f64, cap: f64| {
            if cap > 0.0 {
                used / cap
            } else if used > 0.0 {
                f64::INFINITY
            } else {
                0.0
            }
        };
        share(u.dsp, budget.dsp).max(share(u.lut, budget.lut)).max(share(u.bram18, budget.bram18))
    };
    let factors = match network.folds {
        Folds::Any => foldings::efficient_factors(stage.window_size()),
        Folds::Divisors => foldings::divisors(stage.window_size()),
    };
    factors
        .into_iter()
        .map(|fine| Choice { placement, folding: crate::hw::cost::Folding { fine, ..Choice::MIN.folding } })
        .min_by(|a, b| {
            let cost =
                |c: &Choice| price(&stage_cost(stage, c.folding, c.placement, network.sparsity[i].as_ref()).usage);
            cost(a).total_cmp(&cost(b))
        })
        .unwrap_or(Choice { placement, ..Choice::MIN })
}

/// The on-chip usage of a run of stages at their cheapest, grown one stage at a time. A
/// stage's cost does not depend on where the cut falls, so growing a partition costs one
/// stage's cost, not a re-evaluation of the whole run (which made partitioning a long
/// network quadratic). Sums in stage order, as [`Network::evaluate`] does.
struct CheapestRun {
    costs: Usage,
    fixed: Usage,
}

impl CheapestRun {
    fn new() -> CheapestRun {
        CheapestRun { costs: Usage::default(), fixed: Usage::default() }
    }

    /// The usage with stage `i` added, and whether it fits `budget`.
    fn with(&self, network: &Network, i: usize, budget: &Budget) -> (CheapestRun, bool) {
        let c = cheapest(network, i, budget);
        let cost = stage_cost(&network.stages[i], c.folding, c.placement, network.sparsity[i].as_ref());
        let grown = CheapestRun { costs: self.costs + cost.usage, fixed: self.fixed + network.fixed[i] };
        let fits = budget.exceeded(&(grown.costs + grown.fixed)).is_empty();
        (grown, fits)
    }
}

/// The capped budget in words, for errors.
fn budget_text(budget: &Budget) -> String {
    format!("{} DSP, {} BRAM18, {} LUT, {} FF", budget.dsp, budget.bram18, budget.lut, budget.ff)
}

/// Cut `network` into partitions and allocate each.
pub fn partition(network: &Network, budget: &Budget, allocator: Allocator) -> Result<Vec<Allocation>, AllocationError> {
    let mut parts = Vec::new();
    let mut start = 0;
    while start < network.stages.len() {
        let mut end = start + 1;
        let (mut run, fits) = CheapestRun::new().with(network, start, budget);
        if !fits {
            let one = slice(network, start..end);
            let u = one.evaluate(&[cheapest(&one, 0, budget)], budget).usage;
            return Err(AllocationError::StageTooLarge {
                stage: network.stages[start].name.clone(),
                needs: format!(
                    "{} DSP, {} BRAM18, {} LUT, {} FF (weights streamed off-chip)",
                    u.dsp,
                    u.bram18,
                    u.lut.round(),
                    u.ff.round()
                ),
                budget: budget_text(budget),
            });
        }
        while end < network.stages.len() {
            let (grown, fits) = run.with(network, end, budget);
            if !fits {
                break;
            }
            (run, end) = (grown, end + 1);
        }
        parts.push(start..end);
        start = end;
    }
    tracing::info!(partitions = parts.len(), "the network does not fit one device; partitioning");
    parts
        .into_iter()
        .map(|range| {
            let sub = slice(network, range.clone());
            let single = match allocator {
                Allocator::Exact => super::exact::allocate(&sub, budget),
                Allocator::Greedy => super::greedy::allocate(&sub, budget),
            };
            let mut a = single.ok_or_else(|| AllocationError::StageTooLarge {
                stage: network.stages[range.start].name.clone(),
                needs: "more than the board offers".into(),
                budget: budget_text(budget),
            })?;
            a.offset = range.start;
            Ok(a)
        })
        .collect()
}
