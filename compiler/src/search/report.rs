//! The search's report block (`search` in `--report` JSON) and the record of every
//! evaluated design (`--pareto`).

use super::{Objective, Strategy};
use serde::Serialize;

/// One evaluated design.
#[derive(Clone, Debug, Serialize)]
pub struct Point {
    /// Evaluation number (0: the dense model).
    pub evaluation: usize,
    /// Top-1 drop from the dense model on the calibration images, points.
    pub accuracy_drop: f64,
    /// Images per second.
    pub throughput_fps: f64,
    /// The objective's value.
    pub score: f64,
    /// Accepted as the search's state at the time.
    pub accepted: bool,
    /// On the front: no other point is at least as accurate and as fast, and better in one.
    pub on_front: bool,
    /// The design the search returned.
    pub chosen: bool,
    /// For the chosen design, the images/s the report gives: its statistics measured again
    /// on every calibration image (`throughput_fps` is the search's, from a sample of them).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reported_throughput_fps: Option<f64>,
}

/// Why the search stopped.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Stop {
    /// No move left that gains and stays within the budget.
    Converged,
    /// `--time-budget` ran out.
    TimeBudget,
    /// `--max-evaluations` were made.
    EvaluationBudget,
    /// `--search none`.
    NotSearched,
}

/// One layer's outcome, for the report.
#[derive(Clone, Debug, Serialize)]
pub struct LayerChoice {
    /// Layer name.
    pub name: String,
    /// |w| below this was pruned (absent: not pruned).
    pub weight_threshold: Option<f32>,
    /// Fraction of its weights that are zero.
    pub weight_sparsity: f64,
    /// Inputs at or below this read as zero (absent: no threshold).
    pub activation_threshold: Option<f32>,
    /// Fraction of its inputs that are zero on the calibration images.
    pub activation_sparsity: f64,
    /// Whether its kept weights and bias were re-fitted to its dense outputs.
    pub reconstructed: bool,
    /// Its weights' width, bits.
    pub weight_bits: u32,
    /// The width of the stream it reads, bits.
    pub input_bits: u32,
    /// Why, in one line.
    pub reason: String,
}

/// Accuracy and throughput of one design, for the report.
#[derive(Clone, Copy, Debug, Serialize)]
pub struct Figures {
    /// Top-1 on the calibration images, percent.
    pub top1: f64,
    /// Images per second.
    pub throughput_fps: f64,
}

/// The report's `search` block.
#[derive(Clone, Debug, Serialize)]
pub struct SearchSummary {
    /// Strategy.
    pub strategy: Strategy,
    /// Objective.
    pub objective: Objective,
    /// Seed.
    pub seed: u64,
    /// Accuracy budget, points.
    pub max_accuracy_drop: f64,
    /// What top-1 means here.
    pub accuracy: String,
    /// What "within budget" means (see [`super::CHANGE_GUARD`]).
    pub within_budget: String,
    /// Calibration images.
    pub calibration_images: usize,
    /// Designs evaluated (accuracy and hardware).
    pub evaluations: usize,
    /// Wall-clock seconds of the search (the one figure that differs between runs).
    pub wall_seconds: f64,
    /// Why it stopped.
    pub stopped: Stop,
    /// No sparsity exploited at all.
    pub dense: Figures,
    /// The dense model's own zeros exploited (no knob set).
    pub free_zeros: Figures,
    /// The chosen design.
    #[serde(rename = "final")]
    pub chosen: Figures,
    /// A note for the user, if any.
    pub message: Option<String>,
    /// Per conv and fully connected layer.
    pub layers: Vec<LayerChoice>,
}

impl SearchSummary {
    /// What the search's throughput figures were measured on (the chosen design's reported
    /// figure is measured again on every calibration image).
    pub fn sample(&self) -> String {
        let n = self.calibration_images;
        let used = n.min(super::evaluate::STATISTICS_IMAGES);
        if used < n {
            format!("search: statistics on {used} of {n} calibration images")
        } else {
            format!("search: statistics on all {n} calibration images")
        }
    }
}
