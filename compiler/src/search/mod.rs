//! Hardware-aware sparsity search (REFERENCE §1, §4): per-layer weight and activation
//! thresholds chosen together with the allocation, to maximise an objective while the
//! accuracy drop on calibration images stays within a budget.
//!
//! - [`evaluate`]: what a set of knobs achieves, computed incrementally.
//! - [`ladder`]: the threshold values each layer's knobs step through.
//! - `hass`: the default strategy, driven by the hardware model (see its docs), ending with
//!   `local`, a seeded local search that trades sparsity between layers.
//! - `global_greedy`: the public predecessor's loop, as a baseline.
//! - `uniform`: the same fraction pruned in every layer, blind to the hardware, as a baseline.
//! - [`pareto`]: every evaluated design, the accuracy-throughput front and its plot.
//!
//! Every strategy starts from the dense model measured on the calibration images, so the
//! zeros its ReLUs produce for free are in the hardware model from the start, and accepts
//! only designs within the budget: the accepted state is always a valid answer, which is
//! what `--time-budget` and `--max-evaluations` return when they run out.

mod budget;
pub mod evaluate;
mod global_greedy;
mod hass;
pub mod ladder;
mod local;
mod options;
pub mod pareto;
mod report;
mod uniform;

pub use budget::{AccuracyBudget, CHANGE_GUARD, DIVERGENCE_GUARD};
pub use options::{Objective, SearchOptions, Strategy};
pub use report::{Figures, LayerChoice, Point, SearchSummary, Stop};

use crate::board::Board;
use crate::design::DesignOptions;
use crate::error::Result;
use crate::ir::Graph;
use crate::sparsity::{KnobKind, LayerKnobs, PerKnob, SparsityConfig};
use evaluate::{Candidate, Evaluator, Metrics};
use std::time::{Duration, Instant};

/// What the search found.
pub struct SearchResult {
    /// The chosen knobs, as a config `--sparsity-config` takes.
    pub config: SparsityConfig,
    /// The report block.
    pub summary: SearchSummary,
    /// Every evaluated design.
    pub points: Vec<Point>,
    /// The dense model's Gram matrices the search re-fitted pruned layers from, by layer
    /// name: compiling the chosen design re-fits from the same ones.
    pub(crate) grams: std::collections::BTreeMap<String, crate::sparsity::reconstruct::Gram>,
}

/// State shared by the strategies: budget, clock, the record of evaluations, progress.
pub(crate) struct Context {
    budget: AccuracyBudget,
    seed: u64,
    deadline: Option<Instant>,
    /// Largest number of evaluations (see [`SearchOptions::max_evaluations`]).
    max_evaluations: Option<usize>,
    points: Vec<Point>,
    bar: indicatif::ProgressBar,
    /// Per target, what stopped each knob, for the report.
    pub(crate) limits: Vec<PerKnob<Option<String>>>,
    /// Per target, the top-1 points its accepted moves cost (when moves are per layer).
    pub(crate) costs: Vec<Option<f64>>,
    /// Whether operand widths are searched (see [`SearchOptions::widths`]).
    pub(crate) widths: bool,
}

impl Context {
    /// Top-1 drop of `m` from the dense model, points.
    pub(crate) fn drop(&self, m: &Metrics) -> f64 {
        self.budget.drop(m)
    }

    /// Whether `m` is within the accuracy budget (see [`AccuracyBudget::within`]).
    pub(crate) fn within_budget(&self, m: &Metrics) -> bool {
        self.budget.within(m)
    }

    /// The divergence guard, nats (see [`AccuracyBudget::divergence_limit`]).
    pub(crate) fn divergence_limit(&self) -> f64 {
        self.budget.divergence_limit()
    }

    /// Which limits `m` breaks, for the report ("the next step would lose 1.2 points ...").
    pub(crate) fn overrun(&self, m: &Metrics) -> String {
        format!("the next step would {}", self.budget.broken_limits(m).join(" and "))
    }

    /// Whether the search must stop: its time budget is spent or its evaluations made.
    pub(crate) fn out_of_time(&self) -> bool {
        self.stop_reason().is_some()
    }

    /// Which budget is spent, if any.
    pub(crate) fn stop_reason(&self) -> Option<Stop> {
        // The starting point is no evaluation.
        let made = self.points.len().saturating_sub(1);
        if self.max_evaluations.is_some_and(|max| made >= max) {
            Some(Stop::EvaluationBudget)
        } else if self.deadline.is_some_and(|d| Instant::now() >= d) {
            Some(Stop::TimeBudget)
        } else {
            None
        }
    }

    /// Record an evaluated candidate; returns its point's index.
    pub(crate) fn record(&mut self, c: &Candidate) -> usize {
        let m = c.metrics;
        self.points.push(Point {
            evaluation: self.points.len(),
            accuracy_drop: self.drop(&m),
            throughput_fps: m.throughput_fps,
            score: m.score,
            accepted: false,
            on_front: false,
            chosen: false,
            reported_throughput_fps: None,
        });
        self.bar.inc(1);
        self.points.len() - 1
    }

    /// Mark point `index` (with metrics `m`) accepted and show it.
    pub(crate) fn accept(&mut self, index: usize, m: &Metrics) {
        self.points[index].accepted = true;
        self.bar.set_message(format!(
            "best {:.0} images/s at top-1 {:.2} % ({:+.2} points)",
            m.throughput_fps,
            m.top1,
            -self.drop(m)
        ));
    }
}

/// Search `graph` (after the passes, unpruned) on `board` with calibration `images`, on the
/// fixed-point datapath with activation formats chosen from `ranges` (the dense model's on
/// `images`; `None`: float); pruned weights are quantized again as they change. With
/// reconstruction on, pruned layers are re-fitted from `grams` (the dense float model's on
/// `images`, e.g. from the run that measured `ranges`), else from a dense run of its own.
pub fn search(
    graph: &Graph,
    board: &Board,
    design: &DesignOptions,
    images: &hass_runtime::Tensor,
    options: &SearchOptions,
    ranges: Option<&crate::quantize::MeasuredRanges>,
    grams: Option<std::collections::BTreeMap<String, crate::sparsity::reconstruct::Gram>>,
) -> Result<SearchResult> {
    let _span = tracing::info_span!("search", strategy = ?options.strategy, images = images.batch()).entered();
    let started = Instant::now();
    if !(0.0..=100.0).contains(&options.max_accuracy_drop) {
        return Err(crate::CompileError::Options(format!(
            "the accuracy budget must be between 0 and 100 points, got {}",
            options.max_accuracy_drop
        )));
    }
    let labels = options.labels.as_deref();
    // With reconstruction, every conv and fully connected layer's Gram matrices (the ones
    // the caller already has, else from a dense float run of their own).
    let grams = match (options.reconstruct, grams) {
        (false, _) => None,
        (true, Some(known)) => Some(known),
        (true, None) => Some(
            tracing::debug_span!("grams")
                .in_scope(|| crate::sparsity::reconstruct::grams(graph, board, images, |_| true))?,
        ),
    };
    let mut eval =
        Evaluator::new(graph, board, design, ranges, options.objective, images, labels, options.seed, grams)?;
    let dense_design =
        crate::design::design(graph, board, &DesignOptions { sparsity: Default::default(), ..design.clone() })?;
    let free = eval.accepted().metrics;
    // The sample's figure would differ from what a compile with --calib reports.
    let free_zeros_fps = tracing::debug_span!("all-images").in_scope(|| eval.throughput_on_all_images())?;
    let bar = progress_bar(options.progress);
    let mut ctx = Context {
        budget: AccuracyBudget { dense_top1: free.top1, max_drop: options.max_accuracy_drop },
        seed: options.seed,
        deadline: options.time_budget.map(|d| started + d),
        max_evaluations: options.max_evaluations,
        points: Vec::new(),
        bar,
        limits: vec![PerKnob::default(); eval.targets().len()],
        costs: vec![None; eval.targets().len()],
        widths: options.widths && eval.searches_widths(),
    };
    let first = ctx.record(eval.accepted());
    ctx.accept(first, &free);
    let stopped = match options.strategy {
        Strategy::Hass => hass::run(&mut eval, &mut ctx)?,
        Strategy::GlobalGreedy => global_greedy::run(&mut eval, &mut ctx)?,
        Strategy::Uniform => uniform::run(&mut eval, &mut ctx)?,
        Strategy::None => Stop::NotSearched,
    };
    ctx.bar.finish_and_clear();
    let chosen = eval.accepted().clone();
    let mut points = std::mem::take(&mut ctx.points);
    pareto::mark_front(&mut points);
    if let Some(p) = points.iter_mut().rev().find(|p| p.accepted) {
        p.chosen = true;
    }
    let config = config_of(&eval, &chosen.knobs);
    let message = (options.max_accuracy_drop == 0.0 && options.labels.is_some()).then(|| {
        format!(
            "budget 0.0: kept only changes that lose no top-1 on the {} calibration images (the model's own zeros are exploited either way)",
            images.batch()
        )
    });
    let layers = layer_choices(&eval, &ctx, &chosen);
    let summary = SearchSummary {
        strategy: options.strategy,
        objective: options.objective,
        seed: options.seed,
        max_accuracy_drop: options.max_accuracy_drop,
        accuracy: if options.labels.is_some() {
            "top-1 against the calibration labels".into()
        } else {
            "top-1 agreement with the dense model".into()
        },
        within_budget: ctx.budget.describe(),
        calibration_images: images.batch(),
        evaluations: eval.evaluations,
        wall_seconds: started.elapsed().as_secs_f64(),
        stopped,
        dense: Figures { top1: free.top1, throughput_fps: dense_design.throughput_fps() },
        free_zeros: Figures { top1: free.top1, throughput_fps: free_zeros_fps },
        chosen: Figures { top1: chosen.metrics.top1, throughput_fps: chosen.metrics.throughput_fps },
        message,
        layers,
    };
    Ok(SearchResult { config, summary, points, grams: eval.into_grams() })
}

/// A spinner with the evaluations and the best design so far, or a hidden bar.
fn progress_bar(shown: bool) -> indicatif::ProgressBar {
    if !shown {
        return indicatif::ProgressBar::hidden();
    }
    let bar = indicatif::ProgressBar::new_spinner();
    if let Ok(style) = indicatif::ProgressStyle::with_template("{spinner} {elapsed} {pos} evaluations; {msg}") {
        bar.set_style(style);
    }
    bar.enable_steady_tick(Duration::from_millis(200));
    bar
}

/// The knobs as a sparsity config (only what is set; pruned layers re-fitted when the
/// search re-fitted them), with the widths of every layer that differs from the default:
/// [`SparsityConfig::widths`] gives the accepted widths back.
fn config_of(eval: &Evaluator, knobs: &[LayerKnobs]) -> SparsityConfig {
    let refit = |t: usize, k: &LayerKnobs| LayerKnobs {
        reconstruct: (eval.refits_target(t) && k.any()).then_some(true),
        weight_bits: None,
        ..*k
    };
    let mut layers: std::collections::BTreeMap<String, LayerKnobs> = eval
        .targets()
        .iter()
        .zip(knobs)
        .enumerate()
        .filter(|(_, (_, k))| k.any())
        .map(|(i, (t, k))| (t.name.clone(), refit(i, k)))
        .collect();
    let widths = eval.widths();
    let default = widths.default;
    for (name, p) in &widths.layers {
        if *p != default {
            let k = layers.entry(name.clone()).or_default();
            k.weight_bits = (p.weight_bits != default.weight_bits).then_some(p.weight_bits);
            k.activation_bits = (p.activation_bits != default.activation_bits).then_some(p.activation_bits);
        }
    }
    let global = LayerKnobs {
        weight_bits: Some(default.weight_bits),
        activation_bits: Some(default.activation_bits),
        ..LayerKnobs::default()
    };
    SparsityConfig { global, layers }
}

/// Per target, the chosen knobs, the sparsity they give and why.
fn layer_choices(eval: &Evaluator, ctx: &Context, chosen: &Candidate) -> Vec<LayerChoice> {
    let shares = eval.cycle_shares();
    eval.targets()
        .iter()
        .enumerate()
        .map(|(t, target)| {
            let k = chosen.knobs[t];
            let (weight_zeros, input_zeros) = eval.sparsity_of_target(t);
            let share = shares[target.stage];
            let mut reason = format!("{:.0} % of II", 100.0 * share);
            let reconstructed = eval.refits_target(t) && k.any();
            if k.prunes() {
                reason += &format!("; weights pruned to {:.0} % zeros", 100.0 * weight_zeros);
            }
            if k.activation_threshold.is_some() {
                reason += &format!("; inputs thresholded to {:.0} % zeros", 100.0 * input_zeros);
            }
            if reconstructed {
                let what = if k.prunes() { "kept weights" } else { "weights" };
                let from = if k.activation_threshold.is_some() { " from the thresholded inputs" } else { "" };
                reason += &format!("; {what} and bias re-fitted to the dense outputs{from}");
            }
            let operands = eval.widths().of_stage(eval.graph(), eval.node_of(t));
            if k.weight_bits.is_some() {
                reason += &format!(
                    "; operands narrowed to {}-bit weights, {}-bit inputs",
                    operands.weight_bits, operands.activation_bits
                );
            }
            if let Some(cost) = ctx.costs[t] {
                reason += &format!("; {cost:.2} points");
            }
            for kind in KnobKind::ALL {
                if let Some(l) = &ctx.limits[t][kind] {
                    reason += &format!("; {}: {l}", kind.name());
                }
            }
            LayerChoice {
                name: target.name.clone(),
                weight_threshold: k.weight_threshold,
                weight_sparsity: weight_zeros,
                activation_threshold: k.activation_threshold,
                activation_sparsity: input_zeros,
                reconstructed,
                weight_bits: operands.weight_bits,
                input_bits: operands.activation_bits,
                reason,
            }
        })
        .collect()
}
