//! Allocation: which folding (and weight placement) each stage gets under a board's budget.
//!
//! - [`foldings`]: every sensible folding of a stage, costed once.
//! - [`choices`]: a stage's foldings arranged for "the cheapest within II cycles"
//!   ([`choices::StageChoices`]).
//! - [`exact`]: the default allocator, a bisection over the initiation interval (REFERENCE §3).
//! - [`joint`]: its per-stage picks at one interval, weighing the width converters between
//!   stages.
//! - [`lane_pairs`]: a stage's cheapest entry per pair of lanes taken and written, for
//!   those picks.
//! - [`greedy`]: fpgaConvNet's rule, as a baseline.
//! - [`partition`]: splitting a network that does not fit one device.
//!
//! Architecture invariant: the allocator reads the cost model (`hw`) and never the IR
//! directly; it is deterministic (no randomness, ties broken by order).

pub mod choices;
pub mod exact;
pub mod foldings;
pub mod greedy;
pub mod joint;
pub mod lane_pairs;
pub mod partition;

use crate::hw::pipeline::{Choice, Evaluation, Network};
use crate::hw::{Budget, Usage};

/// Which allocator to run.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Allocator {
    /// Search over the initiation interval (default).
    Exact,
    /// fpgaConvNet's greedy rule (baseline).
    Greedy,
}

impl Allocator {
    /// Name in reports.
    pub fn name(self) -> &'static str {
        match self {
            Allocator::Exact => "exact",
            Allocator::Greedy => "greedy",
        }
    }
}

/// An allocation of one partition (a contiguous run of stages).
#[derive(Clone, Debug)]
pub struct Allocation {
    /// The partition's network.
    pub network: Network,
    /// First stage of the partition in the whole network.
    pub offset: usize,
    /// One choice per stage.
    pub choices: Vec<Choice>,
    /// What it achieves.
    pub eval: Evaluation,
    /// The resource that kept the interval from going lower: a resource name, "bandwidth",
    /// or "folding" when every bottleneck stage is already fully unrolled.
    pub binding: String,
}

/// Why no design exists.
#[derive(Debug, thiserror::Error)]
pub enum AllocationError {
    /// Even one stage alone at its cheapest does not fit the board.
    #[error("the board's budget is too small for {stage}: at its cheapest it needs {needs}, the capped budget is {budget}; use a larger board or raise its [limits]")]
    StageTooLarge {
        /// The stage.
        stage: String,
        /// Its minimum needs.
        needs: String,
        /// The budget.
        budget: String,
    },
}

/// Whether `u` fits the on-chip budget and the bandwidth at interval `ii`.
pub fn fits(budget: &Budget, u: &Usage, ii: f64) -> bool {
    budget.exceeded(u).is_empty() && u.offchip_bits <= budget.offchip_bits_at(ii) * (1.0 + 1e-9)
}

/// The design for `network` on `budget` with `allocator`, partitioned if it must be.
pub fn allocate(network: &Network, budget: &Budget, allocator: Allocator) -> Result<Vec<Allocation>, AllocationError> {
    allocate_with(network, budget, allocator, None, exact::Rounds::Whole)
}

/// [`allocate`], reusing every stage's costed choices (from [`exact::choices_of_stage`]) when given and
/// the allocator is exact, its re-weighting rounds bisecting as `rounds` says.
pub fn allocate_with(
    network: &Network,
    budget: &Budget,
    allocator: Allocator,
    stage_choices: Option<Vec<choices::StageChoices>>,
    rounds: exact::Rounds,
) -> Result<Vec<Allocation>, AllocationError> {
    let _span = tracing::info_span!("allocate", allocator = allocator.name()).entered();
    let single = match (allocator, stage_choices) {
        (Allocator::Exact, Some(stage_choices)) => exact::allocate_with(network, budget, stage_choices, rounds),
        (Allocator::Exact, None) => exact::allocate(network, budget),
        (Allocator::Greedy, _) => greedy::allocate(network, budget),
    };
    match single {
        Some(a) => Ok(vec![a]),
        None => partition::partition(network, budget, allocator),
    }
}
