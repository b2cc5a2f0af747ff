//! Networks that do not fit one device run as partitions, one after another, each a full
//! reconfiguration of the device (REFERENCE §2.6). Stages are cut in execution order: a
//! partition grows while its cheapest design still fits; values crossing a cut go through
//! off-chip memory.

use super::{Allocation, AllocationError, Allocator};
use crate::hw::pipeline::{Choice, Network};
use crate::hw::Budget;

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
                None => {
                    crossing_in += 0;
                    None
                }
            };
        }
    }
    let read_later: usize = network.stages[range.clone()]
        .iter()
        .enumerate()
        .filter(|(k, _)| {
            let global = range.start + k;
            network.stages[range.end..].iter().any(|s| s.inputs.contains(&Some(global)))
        })
        .map(|(_, s)| s.words_out)
        .sum();
    let bits = network.precision.activation_bits as f64;
    Network {
        stages,
        sparsity: network.sparsity[range.clone()].to_vec(),
        precision: network.precision,
        fixed: network.fixed[range.clone()].to_vec(),
        fill: network.fill[range.clone()].to_vec(),
        // The first partition streams the network input; the last writes its output.
        io_bits: (crossing_in + read_later) as f64 * bits + if range.start == 0 { network.io_bits } else { 0.0 },
        macs: network.stages[range].iter().map(|s| s.macs).sum(),
    }
}

fn cheapest_fits(network: &Network, budget: &Budget) -> bool {
    let choices: Vec<Choice> = network
        .stages
        .iter()
        .map(|s| Choice {
            placement: if s.is_conv() { crate::hw::cost::Placement::OffChip } else { crate::hw::cost::Placement::Bram },
            ..Choice::MIN
        })
        .collect();
    let e = network.evaluate(&choices, budget);
    budget.exceeded(&e.usage).is_empty()
}

/// Cut `network` into partitions and allocate each.
pub fn partition(network: &Network, budget: &Budget, allocator: Allocator) -> Result<Vec<Allocation>, AllocationError> {
    let mut parts = Vec::new();
    let mut start = 0;
    while start < network.stages.len() {
        let mut end = start + 1;
        if !cheapest_fits(&slice(network, start..end), budget) {
            let one = slice(network, start..end);
            let choices: Vec<Choice> =
                vec![Choice { placement: crate::hw::cost::Placement::OffChip, ..Choice::MIN }; 1];
            let u = one.evaluate(&choices, budget).usage;
            return Err(AllocationError::StageTooLarge {
                stage: network.stages[start].name.clone(),
                needs: format!(
                    "{} DSP, {} BRAM18, {} LUT, {} FF (weights streamed off-chip)",
                    u.dsp,
                    u.bram18,
                    u.lut.round(),
                    u.ff.round()
                ),
                budget: format!("{} DSP, {} BRAM18, {} LUT, {} FF", budget.dsp, budget.bram18, budget.lut, budget.ff),
            });
        }
        while end < network.stages.len() && cheapest_fits(&slice(network, start..end + 1), budget) {
            end += 1;
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
                budget: format!("{budget:?}"),
            })?;
            a.offset = range.start;
            Ok(a)
        })
        .collect()
}
