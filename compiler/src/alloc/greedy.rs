//! fpgaConvNet's greedy rule, as a baseline: start every stage at no parallelism, then
//! repeatedly speed up the slowest stage by one step (fine first, then the cheaper of
//! coarse-in and coarse-out, then groups, then pixels) until a resource check fails.
//! Weights go to URAM, then BRAM (up to half of it), then off-chip, in stage order.

use super::foldings::{enumerate, CostedChoice};
use super::{fits, Allocation};
use crate::hw::cost::{Folding, Placement};
use crate::hw::pipeline::{Choice, Network};
use crate::hw::Budget;
use rayon::prelude::*;

/// The total usage of a design given as costed choices (converters between them included).
fn usage_of(network: &Network, entries: &[CostedChoice]) -> crate::hw::Usage {
    let choices: Vec<Choice> = entries.iter().map(|e| e.choice).collect();
    network.total_usage(&choices, entries.iter().map(|e| e.usage))
}

/// Allocate `network` on `budget` as one partition; `None` if the slowest design does not fit.
pub fn allocate(network: &Network, budget: &Budget) -> Option<Allocation> {
    let entries: Vec<Vec<CostedChoice>> =
        (0..network.stages.len()).into_par_iter().map(|i| enumerate(network, i, budget)).collect();
    // Initial placement, in stage order: URAM while it fits, then BRAM up to half of it
    // (the rest is left for line buffers and the banks that folding adds), then off-chip.
    let mut current: Vec<CostedChoice> = Vec::with_capacity(entries.len());
    for options in &entries {
        let placed = [(Placement::Uram, 1.0), (Placement::Bram, 0.5), (Placement::OffChip, 1.0)].into_iter().find_map(
            |(p, share)| {
                let e = *options.iter().find(|e| e.choice.folding == Folding::ONE && e.choice.placement == p)?;
                let mut trial = current.clone();
                trial.push(e);
                let u = usage_of(network, &trial);
                let room = u.bram18 <= budget.bram18 * share && budget.exceeded(&u).is_empty();
                (room || p == Placement::OffChip).then_some(e)
            },
        );
        current.push(placed.or_else(|| options.first().copied())?);
    }
    let ii_of = |cur: &[CostedChoice]| cur.iter().map(|e| e.cycles).fold(1.0, f64::max);
    if !fits(budget, &usage_of(network, &current), ii_of(&current)) {
        return None;
    }
    let mut steps = 0;
    let binding = loop {
        let slowest =
            (0..current.len()).max_by(|&a, &b| current[a].cycles.total_cmp(&current[b].cycles).then(b.cmp(&a)))?;
        let Some(next) = next_step(&entries[slowest], &current[slowest]) else {
            break "folding".to_string();
        };
        let mut trial = current.clone();
        trial[slowest] = next;
        let u = usage_of(network, &trial);
        let ii = ii_of(&trial);
        if !fits(budget, &u, ii) {
            let mut over = budget.exceeded(&u);
            if u.offchip_bits > budget.offchip_bits_at(ii) {
                over.push("bandwidth");
            }
            break over.first().copied().unwrap_or("folding").to_string();
        }
        current = trial;
        steps += 1;
        tracing::debug!(steps, stage = %network.stages[slowest].name, ii, "greedy step");
    };
    let choices: Vec<_> = current.iter().map(|e| e.choice).collect();
    let eval = network.evaluate(&choices, budget);
    tracing::info!(steps, ii = eval.ii, fps = eval.throughput_fps, binding, "greedy allocation");
    Some(Allocation { network: network.clone(), offset: 0, choices, eval, binding })
}

/// The next faster folding of a stage in fpgaConvNet's order, same placement.
fn next_step(options: &[CostedChoice], now: &CostedChoice) -> Option<CostedChoice> {
    let f = now.choice.folding;
    let faster = |g: Folding| {
        options
            .iter()
            .filter(|e| e.choice.placement == now.choice.placement && e.choice.folding == g && e.cycles < now.cycles)
            .copied()
            .next()
    };
    // The next larger value of one factor that appears among the options.
    let bump = |get: fn(&Folding) -> usize, set: fn(&mut Folding, usize)| {
        let mut values: Vec<usize> = options.iter().map(|e| get(&e.choice.folding)).filter(|&v| v > get(&f)).collect();
        values.sort_unstable();
        values.dedup();
        values.into_iter().find_map(|v| {
            let mut g = f;
            set(&mut g, v);
            faster(g)
        })
    };
    if let Some(e) = bump(|f| f.fine, |f, v| f.fine = v) {
        return Some(e);
    }
    let coarse = [bump(|f| f.coarse_in, |f, v| f.coarse_in = v), bump(|f| f.coarse_out, |f, v| f.coarse_out = v)];
    if let Some(e) = coarse.into_iter().flatten().min_by(|a, b| a.usage.dsp.total_cmp(&b.usage.dsp)) {
        return Some(e);
    }
    bump(|f| f.coarse_group, |f, v| f.coarse_group = v).or_else(|| bump(|f| f.spatial, |f, v| f.spatial = v))
}
