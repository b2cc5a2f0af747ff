//! How to search: the strategy, the objective, the budget and the seed.

use serde::Serialize;
use std::time::Duration;

/// Which search to run.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Strategy {
    /// Per-layer thresholds, moves ranked by the hardware model (default).
    Hass,
    /// One global weight and one global activation threshold, stepped (the predecessor).
    GlobalGreedy,
    /// The same fraction pruned in every layer and one activation threshold, as far as the
    /// accuracy budget allows, without looking at the hardware (a baseline).
    Uniform,
    /// No search: the dense model with the zeros it produces by itself.
    None,
}

/// What the search maximises.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Objective {
    /// Images per second.
    Throughput,
    /// GOP/s per DSP in use.
    Efficiency,
    /// First image's latency (minimised).
    Latency,
}

/// How to search.
#[derive(Clone, Debug)]
pub struct SearchOptions {
    /// Strategy.
    pub strategy: Strategy,
    /// Objective.
    pub objective: Objective,
    /// Largest accepted top-1 drop on the calibration images, percentage points.
    pub max_accuracy_drop: f64,
    /// Seed of the search's random choices: which calibration images the hardware
    /// statistics are measured on when there are more than
    /// [`super::evaluate::STATISTICS_IMAGES`], and the hass strategy's refinement samples.
    pub seed: u64,
    /// Stop after this long and keep the best design found.
    pub time_budget: Option<Duration>,
    /// Stop after this many evaluations and keep the best design found: unlike the time
    /// budget, the same cap gives the same design however busy the machine is.
    pub max_evaluations: Option<usize>,
    /// Calibration labels; without them accuracy is agreement with the dense model.
    pub labels: Option<Vec<i64>>,
    /// Draw a progress bar on stderr (when it is a terminal).
    pub progress: bool,
    /// Re-fit every pruned layer's kept weights and bias to its dense outputs
    /// ([`crate::sparsity::reconstruct`]), as the search evaluates it and in the result.
    pub reconstruct: bool,
    /// Search each layer's operand widths beside its thresholds (hass, fixed-point
    /// datapath only): a bits knob per conv and fully connected layer.
    pub widths: bool,
}
