//! What a candidate set of knobs achieves: accuracy on the calibration images and the
//! allocated design's throughput, evaluated incrementally.
//!
//! The evaluator keeps the accepted design's state: the runtime plan with its knobs applied,
//! a [`Trace`] of every value on the calibration images, each counted layer's window masks
//! and the cost model's network. A candidate that changes some layers re-runs only what is
//! downstream of them (sharing the rest of the trace), re-tallies window masks only where a
//! layer's threshold changed or its share of zero inputs drifted by more than
//! [`STATISTICS_DRIFT`], re-combines counts only where masks or weights changed, then
//! allocates (milliseconds). [`Evaluator::estimate`] skips the re-run: the
//! hardware effect of one layer's move, with the statistics downstream of it left as they
//! were, which is what ranking moves needs.

mod accuracy;
mod estimate;
mod targets;
mod widths;

use super::Objective;
use crate::alloc::choices::StageChoices;
use crate::alloc::exact::{choices_of_stage, Rounds};
use crate::board::Board;
use crate::design::{encoded_weight_bits, from_network_with, DesignOptions, Widths};
use crate::error::Result;
use crate::hw::pipeline::Network;
use crate::hw::Budget;
use crate::ir::Graph;
use crate::quantize::{quantize_weights, MeasuredRanges};
use crate::sparsity::counts::layer_counts;
use crate::sparsity::statistics::sparsity_of;
use crate::sparsity::{prune, reconstruct, LayerKnobs};
use accuracy::Accuracy;
use estimate::Estimated;
use hass_runtime::kernels::sparse::SparseRows;
use hass_runtime::plan::{Op, Plan};
use hass_runtime::stats::{window_masks, WindowMasks};
use hass_runtime::trace::Trace;
use hass_runtime::Tensor;
use rayon::prelude::*;
use std::sync::Arc;
pub use targets::Target;

/// How much faster than the accepted design the pressure is probed at.
pub const PROBE: f64 = 0.05;

/// Calibration images the search's hardware statistics are measured on (accuracy always
/// uses all of them): window histograms settle within a few dozen images, and tallying
/// them is most of an evaluation's cost. With more images than this, the seed draws which;
/// the chosen design is measured again on all of them.
pub const STATISTICS_IMAGES: usize = 96;

/// How far (absolute fraction) a layer's share of zero inputs may drift, through changes
/// upstream of it, before its window masks are tallied again: the cost model's statistics
/// move with that share, and re-tallying and re-costing every downstream layer after every
/// upstream change is most of what an evaluation costs on a large model. Changes of the
/// layer's own knobs always re-tally; the chosen design is calibrated afresh on all images.
pub const STATISTICS_DRIFT: f64 = 0.002;

/// What a design achieves.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Metrics {
    /// Top-1 on the calibration images, percent (against the labels, or agreement with the
    /// dense model).
    pub top1: f64,
    /// Calibration images whose top-1 class differs from the dense model's, percent.
    pub disagreement: f64,
    /// Mean KL divergence of the outputs' softmax from the dense model's, nats: a smooth
    /// measure of damage, used to rank moves (top-1 on a few hundred images moves in steps).
    pub divergence: f64,
    /// Steady-state images per second.
    pub throughput_fps: f64,
    /// First image's latency, seconds.
    pub latency_s: f64,
    /// GOP/s per DSP in use.
    pub gops_per_dsp: f64,
    /// [`crate::alloc::exact::pressure`] at an interval [`PROBE`] below the accepted
    /// design's: how close the design is to the next faster one (infinite when partitioned).
    pub pressure: f64,
    /// The objective (higher is better).
    pub score: f64,
}

/// A candidate's evaluated state, ready to be accepted.
#[derive(Clone)]
pub struct Candidate {
    /// LayerKnobs per target.
    pub knobs: Vec<LayerKnobs>,
    /// What it achieves.
    pub metrics: Metrics,
    /// Every value on the calibration images; `None` once shelved ([`Self::shelve`]).
    trace: Option<Trace>,
    /// The layers whose re-run from the accepted trace gives `trace` (`None`: a fresh run of
    /// the plan it runs on): what brings a shelved trace back.
    rerun_roots: Option<Vec<usize>>,
    masks: Vec<Option<Arc<WindowMasks>>>,
    /// Per layer, the share of zero inputs (after its threshold) its masks were tallied from.
    mask_zeros: Vec<f64>,
    /// Per layer, whether its masks were tallied on the input `trace` holds (not kept
    /// through a drift within [`STATISTICS_DRIFT`]).
    masks_current: Vec<bool>,
    network: Network,
    /// Every stage's costed choices for `network` (rebuilt only for changed stages).
    stage_choices: Vec<Arc<StageChoices>>,
    /// The operand widths its knobs give (see [`Evaluator::widths_of`]).
    widths: Widths,
    /// The runtime plan at `widths` with its knobs applied, when they differ from the
    /// accepted state's (a change of width re-quantizes the whole network).
    plan: Option<Arc<Plan>>,
}

impl Candidate {
    /// Drop the values this candidate (evaluated in the accepted state) computed: one held
    /// while others are evaluated would otherwise hold a trace of the network on every
    /// calibration image (hundreds of megabytes on a large model), and memory the process
    /// touches for the first time costs more than re-running the layers (the kernel zeroes
    /// each page). [`Evaluator::accept`] runs them again; the kernels are deterministic, so
    /// the values are the same.
    pub fn shelve(&mut self) {
        self.trace = None;
    }

    /// Every value on the calibration images (not shelved: see [`Self::shelve`]).
    fn trace(&self) -> &Trace {
        self.trace.as_ref().expect("the accepted state and fresh candidates hold their traces")
    }
}

/// Evaluates candidates against the accepted state.
pub struct Evaluator<'a> {
    graph: &'a Graph,
    board: &'a Board,
    images: &'a Tensor,
    /// The accepted state's options (its widths are the accepted widths).
    options: DesignOptions,
    /// The widths the search started from: a bits knob only narrows them.
    base: Widths,
    /// The dense model's activation ranges, from which a change of widths re-derives every
    /// format (`None` on the float datapath).
    ranges: Option<MeasuredRanges>,
    objective: Objective,
    plan: Plan,
    /// The knobs the plan's layers hold now.
    applied: Vec<LayerKnobs>,
    targets: Vec<Target>,
    accuracy: Accuracy,
    state: Candidate,
    /// Interval the pressure is measured at.
    probe_ii: f64,
    /// The images the statistics are measured on (`None`: all), ascending.
    statistics_images: Option<Vec<usize>>,
    /// One-layer estimates' statistics and stage_choices, by (target, knobs); valid while the
    /// layer's accepted input masks are the ones kept in the entry.
    estimates: std::collections::HashMap<estimate::EstimateKey, Estimated>,
    /// Candidates evaluated (accuracy and hardware).
    pub evaluations: usize,
    /// Per target, its weights' width on the fixed-point datapath in the accepted state
    /// (`None`: float): pruned weights are quantized again as the backend would.
    weight_bits: Option<Vec<u32>>,
    /// With reconstruction on, every pruned target is re-fitted (see [`Refits`]).
    refits: Option<Refits>,
    /// What [`Self::set_refitting`] set aside.
    refits_aside: Option<Refits>,
    /// The accepted state's layer of each target the plan holds at other knobs now: coming
    /// back to the accepted knobs (after every candidate) puts it back instead of pruning
    /// and quantizing again.
    accepted_layers: std::collections::HashMap<usize, hass_runtime::plan::Layer>,
}

/// What re-fitting pruned or thresholded targets needs, and what it has computed.
struct Refits {
    /// Per target, its dense inputs' Gram matrices (`None` where the layer has none).
    grams: Vec<Option<reconstruct::Gram>>,
    /// The same at input thresholds, by target and threshold (as bits), once worked out.
    thresholded: std::collections::HashMap<(usize, u32), Arc<reconstruct::Gram>>,
    /// Re-fitted weights and biases by target, knobs and width: a search revisits them.
    cache: std::collections::HashMap<RefitKey, Arc<Refitted>>,
}

/// Target, weight threshold and sparsity, input threshold (as bits), and width of a re-fit.
type RefitKey = (usize, Option<u32>, Option<u64>, Option<u32>, Option<u32>);

/// A target's re-fitted weights and biases.
struct Refitted {
    weights: Vec<f32>,
    biases: Vec<f32>,
}

impl<'a> Evaluator<'a> {
    /// Evaluate the dense `graph` on `images` (with `labels`, else against itself) and make
    /// that the accepted state, on the fixed-point datapath with formats chosen from
    /// `ranges` (the dense model's, on `images`; `None`: float); `seed` draws the images the
    /// statistics are measured on.
    /// With `grams` (the dense `graph`'s on `images`, by layer: [`reconstruct::grams`]),
    /// pruned targets are re-fitted to its outputs; `None`: reconstruction off.
    #[allow(clippy::too_many_arguments)] // each is one thing the evaluation depends on
    pub fn new(
        graph: &'a Graph,
        board: &'a Board,
        options: &DesignOptions,
        ranges: Option<&MeasuredRanges>,
        objective: Objective,
        images: &'a Tensor,
        labels: Option<&[i64]>,
        seed: u64,
        grams: Option<std::collections::BTreeMap<String, reconstruct::Gram>>,
    ) -> Result<Evaluator<'a>> {
        let _span = tracing::debug_span!("evaluator").entered();
        let statistics_images = statistics_images(images.batch(), seed);
        if ranges.is_some() {
            options.precision.check(graph)?;
        }
        let quantization = ranges.map(|r| crate::quantize::formats(graph, &options.precision, r));
        let quantization = quantization.as_ref();
        let plan = crate::sparsity::statistics::calibration_plan(graph, board, images, quantization)?;
        let mut network = crate::design::network(graph, options)?;
        let targets = targets::discover(graph, &plan, &network)?;
        let weight_bits =
            quantization.map(|q| targets.iter().map(|t| q.layers[&network.stages[t.stage].node].weight_bits).collect());
        let trace = tracing::debug_span!("trace").in_scope(|| Trace::new(&plan, images))?;
        let accuracy = Accuracy::new(trace.value(plan.outputs[0]), images.batch(), labels)?;
        let pick = statistics_images.as_deref();
        let (masks, mask_zeros) = tracing::debug_span!("tally")
            .in_scope(|| tally_all(&plan, &trace, &targets, pick, &mut network, |_, _| None));
        let widths = options.precision.clone();
        let refits = grams.map(|mut grams| {
            let grams = targets.iter().map(|t| grams.remove(&t.name)).collect();
            Refits { grams, thresholded: Default::default(), cache: Default::default() }
        });
        let knobs = vec![LayerKnobs::default(); targets.len()];
        let stage_choices = tracing::debug_span!("choices").in_scope(|| all_choices(&network, board));
        let mut evaluator = Evaluator {
            graph,
            board,
            images,
            options: options.clone(),
            base: widths.clone(),
            ranges: ranges.cloned(),
            objective,
            plan,
            applied: knobs.clone(),
            targets,
            accuracy,
            state: Candidate {
                knobs,
                metrics: Metrics::default(),
                trace: Some(trace),
                rerun_roots: None,
                masks_current: vec![true; masks.len()],
                masks,
                mask_zeros,
                network,
                stage_choices,
                widths,
                plan: None,
            },
            probe_ii: 0.0,
            statistics_images,
            estimates: Default::default(),
            refits_aside: None,
            evaluations: 0,
            weight_bits,
            refits,
            accepted_layers: Default::default(),
        };
        evaluator.set_probe()?;
        let design = evaluator.hardware(&evaluator.state.network, &evaluator.state.stage_choices, Rounds::Whole)?;
        let (top1, disagreement, divergence) =
            evaluator.accuracy.measure(evaluator.state.trace().value(evaluator.plan.outputs[0]));
        evaluator.state.metrics = Metrics { top1, disagreement, divergence, ..design };
        Ok(evaluator)
    }

    /// Images per second of the accepted design with its statistics tallied on every
    /// calibration image, as a compile with `--calib` measures them (the search itself
    /// samples [`STATISTICS_IMAGES`]). Reads the kept trace: nothing runs again.
    pub fn throughput_on_all_images(&self) -> Result<f64> {
        let mut network = self.state.network.clone();
        let tallied: Vec<_> = self
            .targets
            .par_iter()
            .map(|t| {
                let input = self.state.trace().value(self.plan.layers[t.layer].inputs[0]);
                let masks = window_masks(&self.plan, t.layer, input);
                sparsity_of(&layer_counts(&self.plan, t.layer, &masks))
            })
            .collect();
        for (t, sparsity) in self.targets.iter().zip(tallied) {
            network.sparsity[t.stage] = Some(sparsity);
        }
        Ok(from_network_with(network, self.board, &self.options, None, Rounds::Whole)?.throughput_fps())
    }

    /// Turn re-fitting off (what it has computed set aside) or back on, for a search start
    /// without it. Only where nothing accepted is pruned or thresholded: the accepted
    /// layers are then the same either way.
    pub fn set_refitting(&mut self, on: bool) {
        debug_assert!(self.state.knobs.iter().all(|k| !k.any()), "set from a state without knobs");
        match on {
            false if self.refits.is_some() => self.refits_aside = self.refits.take(),
            true if self.refits_aside.is_some() => self.refits = self.refits_aside.take(),
            _ => return,
        }
        // Estimates hold statistics of re-fitted (or not) layers.
        self.estimates.clear();
    }

    /// Whether re-fitting is on (see [`Self::set_refitting`]).
    pub fn refitting(&self) -> bool {
        self.refits.is_some()
    }

    /// Whether target `t`'s weights are re-fitted when pruned or thresholded (reconstruction on, and the
    /// layer within [`reconstruct::MAX_REFIT_WORK`]).
    pub fn refits_target(&self, t: usize) -> bool {
        Refits::covers(&self.refits, t)
    }

    /// The Gram matrices re-fits read (none with reconstruction off), by target name: at
    /// the accepted state's input thresholds where worked out.
    pub fn into_grams(self) -> std::collections::BTreeMap<String, reconstruct::Gram> {
        let Some(Refits { grams, mut thresholded, .. }) = self.refits else { return Default::default() };
        let knobs = &self.state.knobs;
        let targets = self.targets.into_iter().zip(grams).enumerate();
        targets
            .filter_map(|(i, (target, plain))| {
                let at = knobs[i].activation_threshold.and_then(|th| thresholded.remove(&(i, th.to_bits())));
                Some((target.name, at.map_or(plain?, Arc::unwrap_or_clone)))
            })
            .collect()
    }

    /// The layers whose knobs are searched, in execution order.
    pub fn targets(&self) -> &[Target] {
        &self.targets
    }

    /// Multiply-accumulates a full evaluation runs: every layer on every calibration image.
    pub fn macs_per_evaluation(&self) -> f64 {
        self.targets.iter().map(|t| t.macs as f64).sum::<f64>() * self.accuracy.images() as f64
    }

    /// The accepted state.
    pub fn accepted(&self) -> &Candidate {
        &self.state
    }

    /// Per stage, its cycles as a fraction of its partition's interval, accepted design.
    pub fn cycle_shares(&self) -> Vec<f64> {
        let design =
            self.design(&self.state.network, &self.state.stage_choices, Rounds::Whole).expect("allocated before");
        let mut shares = vec![0.0; self.state.network.stages.len()];
        for p in &design.partitions {
            for (k, c) in p.eval.cycles.iter().enumerate() {
                shares[p.offset + k] = c / p.eval.ii;
            }
        }
        shares
    }

    /// Fractions of zero weights and zero inputs of target `t`, accepted state.
    pub fn sparsity_of_target(&self, t: usize) -> (f64, f64) {
        let s = self.state.network.sparsity[self.targets[t].stage].as_ref();
        (s.and_then(|s| s.weight).unwrap_or(0.0), s.and_then(|s| s.activation).unwrap_or(0.0))
    }

    /// The calibration input of target `t` in the accepted state (all images).
    pub fn input_of(&self, t: usize) -> &[f32] {
        self.state.trace().value(self.plan.layers[self.targets[t].layer].inputs[0])
    }

    /// Evaluate `knobs` fully: accuracy on every calibration image, statistics, allocation.
    pub fn evaluate(&mut self, knobs: &[LayerKnobs]) -> Result<Candidate> {
        self.evaluations += 1;
        let widths = self.widths_of(knobs);
        if widths != self.state.widths {
            return self.at_widths(knobs, widths);
        }
        let changed = self.apply(knobs);
        let layers: Vec<usize> = changed.iter().map(|&t| self.targets[t].layer).collect();
        let trace = tracing::debug_span!("rerun").in_scope(|| self.state.trace().rerun(&self.plan, &layers));
        let candidate = tracing::debug_span!("statistics").in_scope(|| self.with_statistics(knobs, &changed, trace));
        self.apply(&self.state.knobs.clone());
        let mut candidate = candidate?;
        candidate.rerun_roots = Some(layers);
        let (top1, disagreement, divergence) = self.accuracy.measure(candidate.trace().value(self.plan.outputs[0]));
        candidate.metrics.top1 = top1;
        candidate.metrics.disagreement = disagreement;
        candidate.metrics.divergence = divergence;
        Ok(candidate)
    }

    /// A shelved `candidate`'s values (see [`Candidate::shelve`]), run again on `plan` (the
    /// plan with its knobs applied) from the accepted trace.
    fn unshelve(&self, candidate: &mut Candidate, plan: &Plan) -> Result<()> {
        if candidate.trace.is_some() {
            return Ok(());
        }
        let _span = tracing::debug_span!("unshelve").entered();
        candidate.trace = Some(match &candidate.rerun_roots {
            Some(roots) => self.state.trace().rerun(plan, roots),
            None => Trace::new(plan, self.images)?,
        });
        Ok(())
    }

    /// Make `candidate` the accepted state.
    pub fn accept(&mut self, mut candidate: Candidate) -> Result<()> {
        match candidate.plan.take() {
            Some(plan) => {
                let plan = Arc::try_unwrap(plan).unwrap_or_else(|shared| (*shared).clone());
                self.unshelve(&mut candidate, &plan)?;
                self.plan = plan;
                self.applied = candidate.knobs.clone();
                self.options.precision = candidate.widths.clone();
                self.weight_bits = self.weight_bits_at(&candidate.widths);
                self.estimates.clear();
            }
            None => {
                self.apply(&candidate.knobs);
                self.unshelve(&mut candidate, &self.plan)?;
            }
        }
        self.state = candidate;
        // (Kept for the old state; a move away from the new one keeps its layer afresh.)
        self.accepted_layers.clear();
        let (targets, masks) = (&self.targets, &self.state.masks);
        self.estimates
            .retain(|&(t, _, _), e| masks[targets[t].layer].as_ref().is_some_and(|m| Arc::ptr_eq(m, &e.input)));
        self.set_probe()?;
        self.state.metrics.pressure = self.pressure(&self.state.network, &self.state.stage_choices);
        Ok(())
    }

    /// Probe the pressure [`PROBE`] below the accepted design's interval.
    fn set_probe(&mut self) -> Result<()> {
        let design = self.design(&self.state.network, &self.state.stage_choices, Rounds::Whole)?;
        self.probe_ii = match design.partitions.as_slice() {
            [one] => one.eval.ii * (1.0 - PROBE),
            _ => 0.0,
        };
        Ok(())
    }

    fn pressure(&self, network: &Network, stage_choices: &[Arc<StageChoices>]) -> f64 {
        if self.probe_ii <= 0.0 {
            return f64::INFINITY;
        }
        crate::alloc::exact::pressure(
            network,
            &Budget::of(self.board),
            stage_choices.iter().map(|f| &**f),
            self.probe_ii,
        )
    }

    /// Set the plan's layers to `knobs`; returns the targets whose knobs differ from the
    /// accepted ones.
    fn apply(&mut self, knobs: &[LayerKnobs]) -> Vec<usize> {
        let mut held = self.applied.clone();
        for (t, target) in self.targets.iter().enumerate() {
            let accepted = &self.state.knobs[t];
            if held[t] == *accepted && knobs[t] != *accepted {
                self.accepted_layers.insert(t, self.plan.layers[target.layer].clone());
            } else if held[t] != *accepted && knobs[t] == *accepted {
                if let Some(layer) = self.accepted_layers.remove(&t) {
                    self.plan.layers[target.layer] = layer;
                    held[t] = *accepted;
                }
            }
        }
        let bits = self.weight_bits.as_deref();
        apply_knobs(&mut self.plan, &self.targets, &mut self.refits, bits, &held, knobs);
        self.applied = knobs.to_vec();
        (0..knobs.len()).filter(|&t| knobs[t] != self.state.knobs[t]).collect()
    }

    /// The statistics and design of `knobs` (already applied to the plan) on `trace`.
    fn with_statistics(&self, knobs: &[LayerKnobs], changed: &[usize], trace: Trace) -> Result<Candidate> {
        let mut candidate = self.tallied(knobs, changed, trace);
        candidate.metrics = self.hardware(&candidate.network, &candidate.stage_choices, Rounds::Whole)?;
        Ok(candidate)
    }

    /// The statistics of `knobs` (already applied to the plan) on `trace`, and the costed
    /// choices of the stages they change; not allocated (metrics left at their default).
    fn tallied(&self, knobs: &[LayerKnobs], changed: &[usize], trace: Trace) -> Candidate {
        let (mut candidate, stages) = self.counted(knobs, changed, trace);
        let budget = Budget::of(self.board);
        let network = &candidate.network;
        let rebuilt: Vec<(usize, StageChoices)> =
            stages.into_par_iter().map(|i| (i, choices_of_stage(network, i, &budget))).collect();
        for (i, f) in rebuilt {
            candidate.stage_choices[i] = Arc::new(f);
        }
        candidate
    }

    /// [`Self::tallied`] without costing: the candidate keeps the accepted stages' choices,
    /// and the stages whose statistics or weights changed are returned to be costed.
    fn counted(&self, knobs: &[LayerKnobs], changed: &[usize], trace: Trace) -> (Candidate, Vec<usize>) {
        let mut masks = self.state.masks.clone();
        let mut mask_zeros = self.state.mask_zeros.clone();
        let mut masks_current = self.state.masks_current.clone();
        let mut network = self.state.network.clone();
        let mut stages = Vec::new();
        // What the targets whose inputs changed read now, tallied again in parallel (each on
        // its own) unless their share of zeros barely moved.
        enum Tally {
            Unchanged,
            Drifted,
            New(f64, WindowMasks),
        }
        let retallied: Vec<Tally> = self
            .targets
            .par_iter()
            .enumerate()
            .map(|(t, target)| {
                let input = self.plan.layers[target.layer].inputs[0];
                let threshold = knobs[t].activation_threshold;
                let threshold_changed = threshold != self.state.knobs[t].activation_threshold;
                if !threshold_changed && trace.shares(self.state.trace(), input) {
                    return Tally::Unchanged;
                }
                let pick = self.statistics_images.as_deref();
                let zeros = sampled_zero_share(&self.plan, target.layer, trace.value(input), pick, threshold);
                if !threshold_changed && (zeros - mask_zeros[target.layer]).abs() <= STATISTICS_DRIFT {
                    return Tally::Drifted;
                }
                let images = sample(&self.plan, target.layer, trace.value(input), pick);
                Tally::New(zeros, window_masks(&self.plan, target.layer, &images))
            })
            .collect();
        for ((t, target), retallied) in self.targets.iter().enumerate().zip(retallied) {
            let new_masks = matches!(retallied, Tally::New(..));
            match retallied {
                Tally::Unchanged => {}
                Tally::Drifted => masks_current[target.layer] = false,
                Tally::New(zeros, m) => {
                    masks[target.layer] = Some(Arc::new(m));
                    mask_zeros[target.layer] = zeros;
                    masks_current[target.layer] = true;
                }
            }
            let weights_changed =
                changed.contains(&t) && weights_differ(self.refits_target(t), &self.state.knobs[t], &knobs[t]);
            if new_masks || weights_changed {
                let m = masks[target.layer].as_ref().expect("masks of every target");
                let counts = layer_counts(&self.plan, target.layer, m);
                network.sparsity[target.stage] = Some(sparsity_of(&counts));
                stages.push(target.stage);
            }
            if weights_changed {
                let weight = layer_weights(&self.plan, target.layer);
                let bits = self.options.precision.of(&target.name).weight_bits as u64;
                network.stages[target.stage].encoded_weight_bits =
                    encoded_weight_bits(weight, target.rows, target.biases, bits);
            }
        }
        let candidate = Candidate {
            knobs: knobs.to_vec(),
            metrics: Metrics::default(),
            trace: Some(trace),
            rerun_roots: None,
            masks,
            mask_zeros,
            masks_current,
            network,
            stage_choices: self.state.stage_choices.clone(),
            widths: self.state.widths.clone(),
            plan: None,
        };
        (candidate, stages)
    }

    fn design(
        &self,
        network: &Network,
        stage_choices: &[Arc<StageChoices>],
        rounds: Rounds,
    ) -> Result<crate::design::Design> {
        let stage_choices = stage_choices.iter().map(|f| StageChoices::clone(f)).collect();
        from_network_with(network.clone(), self.board, &self.options, Some(stage_choices), rounds)
    }

    /// The hardware metrics of `network`, allocated with the exact allocator's `rounds`
    /// ([`Rounds::BelowBest`] where a move is only ranked, not measured).
    fn hardware(&self, network: &Network, stage_choices: &[Arc<StageChoices>], rounds: Rounds) -> Result<Metrics> {
        let design = self.design(network, stage_choices, rounds)?;
        let (fps, latency, gops) = (design.throughput_fps(), design.latency_s(), design.gops_per_dsp());
        let score = match self.objective {
            Objective::Throughput => fps,
            Objective::Efficiency => gops,
            Objective::Latency => 1.0 / latency,
        };
        let pressure = self.pressure(network, stage_choices);
        Ok(Metrics {
            top1: 0.0,
            disagreement: 0.0,
            divergence: 0.0,
            throughput_fps: fps,
            latency_s: latency,
            gops_per_dsp: gops,
            pressure,
            score,
        })
    }
}

/// Whether a target's weights differ between knobs `old` and `new`: its weight knobs
/// differ, or, when it is `refitted`, its input threshold (the re-fit reads the inputs as
/// thresholded).
fn weights_differ(refitted: bool, old: &LayerKnobs, new: &LayerKnobs) -> bool {
    (new.weight_threshold, new.weight_sparsity) != (old.weight_threshold, old.weight_sparsity)
        || (refitted && new.activation_threshold != old.activation_threshold)
}

/// Set `plan`'s target layers from knobs `old` to knobs `new`: weights pruned (and re-fitted
/// when `refits` has the layer: pruned or thresholded) where they differ (see
/// [`weights_differ`]), then quantized at `weight_bits` on the fixed-point datapath; input
/// thresholds everywhere.
fn apply_knobs(
    plan: &mut Plan,
    targets: &[Target],
    refits: &mut Option<Refits>,
    weight_bits: Option<&[u32]>,
    old: &[LayerKnobs],
    new: &[LayerKnobs],
) {
    for (t, target) in targets.iter().enumerate() {
        let (new, old) = (new[t], old[t]);
        let input = plan.layers[target.layer].inputs[0];
        let input_format = plan.value_format(input).map(|f| (f, plan.value_unsigned(input)));
        let layer = &mut plan.layers[target.layer];
        let (w, b, s, th, kernel) = match &mut layer.op {
            Op::Conv(c) => {
                // The packed copy of the weights is made again from the new ones.
                c.derived = Default::default();
                (&mut c.weight, &mut c.bias, &mut c.sparse_weight, &mut c.input_threshold, Some(c.kernel))
            }
            Op::Dense(d) => (&mut d.weight, &mut d.bias, &mut d.sparse_weight, &mut d.input_threshold, None),
            _ => unreachable!("targets are conv or fully connected layers"),
        };
        let bits = weight_bits.map(|b| b[t]);
        if weights_differ(Refits::covers(refits, t), &old, &new) {
            let pruned = prune::pruned(&target.weights, &new);
            let refitted = match refits.as_mut() {
                Some(refits) if new.any() => {
                    refits.refit(t, target, &new, pruned.as_deref().unwrap_or(&target.weights), bits)
                }
                _ => None,
            };
            let bias = match refitted {
                Some(r) => {
                    *w = r.weights.clone();
                    r.biases.clone()
                }
                None => {
                    *w = pruned.unwrap_or_else(|| target.weights.to_vec());
                    target.bias_values.to_vec()
                }
            };
            b.copy_from_slice(&bias);
            // The fixed-point datapath: the pruned weights in integers, as the backend
            // writes them (their formats and the biases' follow the weights).
            let channels = layer.fixed.as_mut().and_then(|f| f.channels.as_mut());
            if let (Some(channels), Some(bits), Some(input)) = (channels, bits, input_format) {
                let q = quantize_weights(w, &bias, target.rows, bits, input);
                let fan_in = w.len() / target.rows.max(1);
                let mut exact = Vec::with_capacity(w.len());
                for ((row, ints), f) in w.chunks_mut(fan_in).zip(q.weights.chunks(fan_in)).zip(&q.formats) {
                    for (v, &int) in row.iter_mut().zip(ints) {
                        exact.push(f.to_f64(int));
                        *v = f.to_f32(int);
                    }
                }
                let fracs = q.formats.iter().map(|f| f.frac).collect();
                *channels = hass_runtime::plan::FixedChannels::new(exact, fracs, q.biases);
            }
            *s = match kernel {
                Some(kernel) => SparseRows::for_conv(w, target.rows, kernel),
                None => SparseRows::from_dense(w, target.rows),
            };
        }
        *th = new.activation_threshold;
    }
}

impl Refits {
    /// Whether target `t` is re-fitted (reconstruction on, and the layer has Gram matrices).
    fn covers(refits: &Option<Refits>, t: usize) -> bool {
        refits.as_ref().is_some_and(|r| r.grams[t].is_some())
    }

    /// Target `t`'s weights `pruned` (by `knobs`) re-fitted from its inputs thresholded as
    /// `knobs` say, and its biases, rounded to `bits` on the fixed-point datapath; `None`
    /// where the layer has no Gram matrix.
    fn refit(
        &mut self,
        t: usize,
        target: &Target,
        knobs: &LayerKnobs,
        pruned: &[f32],
        bits: Option<u32>,
    ) -> Option<Arc<Refitted>> {
        let threshold = knobs.activation_threshold.map(f32::to_bits);
        let key =
            (t, knobs.weight_threshold.map(f32::to_bits), knobs.weight_sparsity.map(f64::to_bits), threshold, bits);
        if let Some(hit) = self.cache.get(&key) {
            return Some(hit.clone());
        }
        let plain = self.grams[t].as_ref()?;
        let gram = match threshold {
            None => plain,
            Some(bits) => &**self
                .thresholded
                .entry((t, bits))
                .or_insert_with(|| Arc::new(plain.at_threshold(knobs.activation_threshold).into_owned())),
        };
        let (weights, biases) = gram.refit(pruned, target.biases > 0, bits).ok()?;
        let refitted = Arc::new(Refitted { weights, biases });
        self.cache.insert(key, refitted.clone());
        Some(refitted)
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics {
            top1: 0.0,
            disagreement: 0.0,
            divergence: 0.0,
            throughput_fps: 0.0,
            latency_s: 0.0,
            gops_per_dsp: 0.0,
            pressure: f64::INFINITY,
            score: 0.0,
        }
    }
}

/// Every target's window masks on the images `pick` (all when `None`) of `trace`, by plan
/// layer, with its share of zero inputs under the threshold its layer holds; each target's
/// statistics set in `network`. The targets are tallied in parallel, except where `known`
/// (given a target's index) has its masks and share of zeros on these very inputs.
fn tally_all(
    plan: &Plan,
    trace: &Trace,
    targets: &[Target],
    pick: Option<&[usize]>,
    network: &mut Network,
    known: impl Fn(usize, &Target) -> Option<(Arc<WindowMasks>, f64)> + Sync,
) -> (Vec<Option<Arc<WindowMasks>>>, Vec<f64>) {
    let tallied: Vec<_> = targets
        .par_iter()
        .enumerate()
        .map(|(t, target)| {
            let (masks, zeros) = known(t, target).unwrap_or_else(|| {
                let input = sample(plan, target.layer, trace.value(plan.layers[target.layer].inputs[0]), pick);
                let zeros = zero_share(&input, layer_threshold(plan, target.layer));
                (Arc::new(window_masks(plan, target.layer, &input)), zeros)
            });
            let sparsity = sparsity_of(&layer_counts(plan, target.layer, &masks));
            (masks, zeros, sparsity)
        })
        .collect();
    let mut masks = vec![None; plan.layers.len()];
    let mut mask_zeros = vec![0.0; plan.layers.len()];
    for (target, (m, zeros, sparsity)) in targets.iter().zip(tallied) {
        masks[target.layer] = Some(m);
        mask_zeros[target.layer] = zeros;
        network.sparsity[target.stage] = Some(sparsity);
    }
    (masks, mask_zeros)
}

/// Every stage's costed choices for `network` on `board`, built in parallel.
fn all_choices(network: &Network, board: &Board) -> Vec<Arc<StageChoices>> {
    let budget = Budget::of(board);
    (0..network.stages.len()).into_par_iter().map(|i| Arc::new(choices_of_stage(network, i, &budget))).collect()
}

/// Whether `a` and `b` differ in a threshold (or in pruning or reconstruction): anything
/// but the width knob.
fn thresholds_differ(a: &LayerKnobs, b: &LayerKnobs) -> bool {
    LayerKnobs { weight_bits: None, ..*a } != LayerKnobs { weight_bits: None, ..*b }
}

/// The input threshold layer `layer` of `plan` holds (a target).
fn layer_threshold(plan: &Plan, layer: usize) -> Option<f32> {
    match &plan.layers[layer].op {
        Op::Conv(c) => c.input_threshold,
        Op::Dense(d) => d.input_threshold,
        _ => None,
    }
}

/// The weights layer `layer` of `plan` holds (a target: conv or fully connected).
fn layer_weights(plan: &Plan, layer: usize) -> &[f32] {
    match &plan.layers[layer].op {
        Op::Conv(c) => &c.weight,
        Op::Dense(d) => &d.weight,
        _ => unreachable!("targets are conv or fully connected layers"),
    }
}

/// [`STATISTICS_IMAGES`] of `batch` drawn with `seed`, ascending; `None` when there are no
/// more than that. (Xoshiro256++ is a fixed algorithm: the same seed draws the same images
/// on every platform and version.)
fn statistics_images(batch: usize, seed: u64) -> Option<Vec<usize>> {
    use rand::SeedableRng;
    if batch <= STATISTICS_IMAGES {
        return None;
    }
    let mut rng = rand::rngs::Xoshiro256PlusPlus::seed_from_u64(seed);
    let mut pick = rand::seq::index::sample(&mut rng, batch, STATISTICS_IMAGES).into_vec();
    pick.sort_unstable();
    Some(pick)
}

/// Share of `values` at or below `threshold` (zero when there is none).
fn zero_share(values: &[f32], threshold: Option<f32>) -> f64 {
    zeros(values, threshold) as f64 / values.len().max(1) as f64
}

/// How many of `values` read as zero under `threshold`.
fn zeros(values: &[f32], threshold: Option<f32>) -> usize {
    values.iter().filter(|&&v| v == 0.0 || threshold.is_some_and(|t| v <= t)).count()
}

/// [`zero_share`] of [`sample`], without copying the sample (most evaluations only check
/// how far it drifted).
fn sampled_zero_share(plan: &Plan, layer: usize, value: &[f32], pick: Option<&[usize]>, threshold: Option<f32>) -> f64 {
    let Some(pick) = pick else { return zero_share(value, threshold) };
    let len: usize = plan.value_shape(plan.layers[layer].inputs[0]).iter().product();
    let zeros: usize = pick.iter().map(|&i| zeros(&value[i * len..][..len], threshold)).sum();
    zeros as f64 / (pick.len() * len).max(1) as f64
}

/// The images `pick` (all when `None`) of a batch of layer `layer`'s input.
fn sample<'v>(plan: &Plan, layer: usize, value: &'v [f32], pick: Option<&[usize]>) -> std::borrow::Cow<'v, [f32]> {
    let len: usize = plan.value_shape(plan.layers[layer].inputs[0]).iter().product();
    match pick {
        None => std::borrow::Cow::Borrowed(value),
        Some(p) => std::borrow::Cow::Owned(p.iter().flat_map(|&i| &value[i * len..][..len]).copied().collect()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hw::Precision;
    use crate::sparsity::SparsityConfig;
    use crate::testing::testdata;

    #[test]
    fn incremental_evaluation_matches_a_fresh_one() {
        incremental_matches_fresh(crate::quantize::Datapath::Float);
        incremental_matches_fresh(crate::quantize::Datapath::Fixed);
    }

    #[test]
    fn candidates_leave_the_plan_at_the_accepted_layers() {
        // Pruned and re-fitted layers come back from candidates as they were accepted:
        // estimates and evaluations afterwards see the accepted model.
        let (graph, board, images) = crate::testing::fmnist_cnn(32);
        let options = DesignOptions::default();
        // The Gram matrices from the ranges' float run, as a compile's search takes them.
        let (ranges, grams) = crate::quantize::measure_ranges_and(&graph, &board, Some(&images), |plan, trace| {
            reconstruct::grams_of_run(plan, trace, |_| true)
        })
        .unwrap();
        let q = Some(&ranges);
        let mut eval =
            Evaluator::new(&graph, &board, &options, q, Objective::Throughput, &images, None, 0, Some(grams)).unwrap();
        let n = eval.targets().len();
        let mut accepted = vec![LayerKnobs::default(); n];
        accepted[0].weight_sparsity = Some(0.5);
        let candidate = eval.evaluate(&accepted).unwrap();
        eval.accept(candidate).unwrap();
        let snapshot = |e: &Evaluator| -> Vec<(Vec<f32>, Vec<f64>, Vec<i64>)> {
            let exact = |l: &hass_runtime::plan::Layer| {
                let channels = l.fixed.as_ref().and_then(|f| f.channels.as_ref()).expect("fixed-point weights");
                (channels.weight().to_vec(), channels.bias().to_vec())
            };
            let of = |t: &Target| {
                let (weight, bias) = exact(&e.plan.layers[t.layer]);
                (layer_weights(&e.plan, t.layer).to_vec(), weight, bias)
            };
            e.targets.iter().map(of).collect()
        };
        let before = snapshot(&eval);
        let mut other = accepted.clone();
        other[0].weight_sparsity = Some(0.8);
        other[1].weight_sparsity = Some(0.3);
        other[2].activation_threshold = Some(0.25);
        eval.evaluate(&other).unwrap();
        let mut one = accepted.clone();
        one[0].weight_sparsity = Some(0.7);
        eval.estimate_all(&[one]).remove(0).unwrap();
        assert_eq!(snapshot(&eval), before);
        // Evaluating the accepted knobs again gives the accepted outputs.
        let again = eval.evaluate(&accepted).unwrap();
        let output = |c: &Candidate| c.trace().value(eval.plan.outputs[0]).to_vec();
        assert_eq!(output(&again), output(eval.accepted()));
    }

    #[test]
    fn a_shelved_candidate_is_accepted_as_it_was_measured() {
        // Two evaluators take the same candidates, one of them shelved first: a threshold
        // move (re-run from the accepted plan) and then a width move (a plan of its own).
        let (graph, board, images) = crate::testing::fmnist_cnn(48);
        let options = DesignOptions::default();
        let ranges = crate::quantize::measure_ranges(&graph, &board, Some(&images)).unwrap();
        let new = || {
            Evaluator::new(&graph, &board, &options, Some(&ranges), Objective::Throughput, &images, None, 0, None)
                .unwrap()
        };
        let (mut shelving, mut keeping) = (new(), new());
        let n = shelving.targets().len();
        let same_state = |a: &Evaluator, b: &Evaluator| {
            for v in 0..=a.plan.layers.len() {
                assert_eq!(a.accepted().trace().value(v), b.accepted().trace().value(v), "value {v}");
            }
            assert_eq!(a.accepted().masks, b.accepted().masks);
            assert_eq!(a.accepted().metrics, b.accepted().metrics);
        };
        let mut knobs = vec![LayerKnobs::default(); n];
        knobs[1].weight_sparsity = Some(0.5);
        knobs[2].activation_threshold = Some(0.05);
        for step in 0..2 {
            if step == 1 {
                knobs[0].weight_bits = Some(8);
            }
            let mut shelved = shelving.evaluate(&knobs).unwrap();
            assert_eq!(shelved.plan.is_some(), step == 1, "the second move changes widths");
            shelved.shelve();
            assert!(shelved.trace.is_none());
            // Another evaluation in between, as the search measures other moves.
            let mut other = knobs.clone();
            other[0].weight_sparsity = Some(0.7);
            shelving.evaluate(&other).unwrap();
            shelving.accept(shelved).unwrap();
            let kept = keeping.evaluate(&knobs).unwrap();
            keeping.accept(kept).unwrap();
            same_state(&shelving, &keeping);
        }
        // And the next evaluation from either is the same.
        knobs[0].weight_sparsity = Some(0.3);
        let (a, b) = (shelving.evaluate(&knobs).unwrap(), keeping.evaluate(&knobs).unwrap());
        assert_eq!(a.metrics, b.metrics);
    }

    #[test]
    fn a_change_of_widths_evaluates_as_a_fresh_evaluator_at_those_widths() {
        let (graph, board, images) = crate::testing::fmnist_cnn(64);
        let options = DesignOptions::default();
        let ranges = crate::quantize::measure_ranges(&graph, &board, Some(&images)).unwrap();
        fn new<'a>(
            graph: &'a Graph,
            board: &'a Board,
            images: &'a Tensor,
            o: &DesignOptions,
            ranges: &MeasuredRanges,
        ) -> Evaluator<'a> {
            Evaluator::new(graph, board, o, Some(ranges), Objective::Throughput, images, None, 0, None).unwrap()
        }
        let mut eval = new(&graph, &board, &images, &options, &ranges);
        let n = eval.targets().len();
        // The second conv pruned and narrowed to 8 bits, then the classifier to 4 as well.
        let mut knobs = vec![LayerKnobs::default(); n];
        knobs[1] = LayerKnobs { weight_sparsity: Some(0.5), weight_bits: Some(8), ..LayerKnobs::default() };
        let first = eval.evaluate(&knobs).unwrap();
        let widths = eval.widths_of(&knobs);
        // Its weights and the stream it reads (the first conv's, through a max pool).
        assert_eq!(widths.of("/c2/c2.0/Conv").weight_bits, 8);
        assert_eq!(widths.of("/c1/c1.0/Conv"), Precision { weight_bits: 16, activation_bits: 8 });
        assert_eq!(widths.of("/fc/Gemm"), Precision::default());
        eval.accept(first).unwrap();
        // With a layer whose widths stay (the first conv) pruned in the same move.
        knobs[2].weight_bits = Some(4);
        knobs[0].weight_sparsity = Some(0.3);
        let candidate = eval.evaluate(&knobs).unwrap();
        // The same knobs applied to the graph, evaluated from scratch at the same widths (the
        // formats from the dense model's ranges, as the search takes them).
        let widths = eval.widths_of(&knobs);
        let mut pruned = graph.clone();
        let names = eval.targets().iter().map(|t| t.name.clone());
        let thresholds = knobs.iter().map(|k| LayerKnobs { weight_bits: None, ..*k });
        let layers = names.zip(thresholds).filter(|(_, k)| k.any()).collect();
        crate::sparsity::prune::apply(&mut pruned, &SparsityConfig { global: LayerKnobs::default(), layers }).unwrap();
        let options = DesignOptions { precision: widths.clone(), ..options.clone() };
        let fresh = new(&pruned, &board, &images, &options, &ranges);
        // (Accuracy figures are each against its own evaluator's start: compare the outputs.)
        let output = |c: &Candidate| c.trace().value(fresh.plan.outputs[0]).to_vec();
        assert_eq!(output(&candidate), output(fresh.accepted()));
        let (m, e) = (candidate.metrics, fresh.accepted().metrics);
        assert_eq!((m.throughput_fps, m.latency_s), (e.throughput_fps, e.latency_s));
        eval.accept(candidate).unwrap();
        assert_eq!(eval.widths(), &widths);
        // And back to 16 bits everywhere and dense: the start again.
        let back = eval.evaluate(&vec![LayerKnobs::default(); n]).unwrap().metrics;
        assert_eq!((back.top1, back.divergence), (100.0, 0.0));
    }

    #[test]
    fn a_width_move_tallies_again_the_masks_a_drift_kept() {
        let (graph, board, images) = crate::testing::fmnist_cnn(64);
        let options = DesignOptions::default();
        let ranges = crate::quantize::measure_ranges(&graph, &board, Some(&images)).unwrap();
        let new = |g| Evaluator::new(g, &board, &options, Some(&ranges), Objective::Throughput, &images, None, 0, None);
        let mut eval = new(&graph).unwrap();
        let n = eval.targets().len();
        // The first conv's smallest weights pruned: the second conv's input moves a little,
        // its zeros too, but within the drift its masks are kept through.
        let second = eval.targets()[1].layer;
        let input = eval.plan.layers[second].inputs[0];
        let mut knobs = vec![LayerKnobs::default(); n];
        let drifted = [0.005, 0.01, 0.02, 0.03, 0.05, 0.08].into_iter().find_map(|threshold| {
            knobs[0].weight_threshold = Some(threshold);
            let c = eval.evaluate(&knobs).unwrap();
            let zeros = zero_share(c.trace().value(input), None);
            (!c.masks_current[second] && zeros != c.mask_zeros[second]).then_some(c)
        });
        eval.accept(drifted.expect("a threshold whose drift is within STATISTICS_DRIFT")).unwrap();
        // A width move downstream of it (the classifier and the stream it reads) leaves the
        // second conv's input as it is; its masks are tallied again all the same.
        knobs[n - 1].weight_bits = Some(8);
        let moved = eval.evaluate(&knobs).unwrap();
        assert!(moved.trace().shares(eval.accepted().trace(), eval.plan.layers[second].inputs[0]));
        // A fresh evaluator of the same knobs at the same widths tallies everything.
        let mut pruned = graph.clone();
        let names = eval.targets().iter().map(|t| t.name.clone());
        let thresholds = knobs.iter().map(|k| LayerKnobs { weight_bits: None, ..*k });
        let layers = names.zip(thresholds).filter(|(_, k)| k.any()).collect();
        crate::sparsity::prune::apply(&mut pruned, &SparsityConfig { global: LayerKnobs::default(), layers }).unwrap();
        let options = DesignOptions { precision: eval.widths_of(&knobs), ..options.clone() };
        let fresh =
            Evaluator::new(&pruned, &board, &options, Some(&ranges), Objective::Throughput, &images, None, 0, None)
                .unwrap();
        assert_eq!(moved.masks, fresh.accepted().masks);
        assert_eq!(moved.mask_zeros, fresh.accepted().mask_zeros);
    }

    #[test]
    fn estimates_asked_together_match_estimates_asked_one_at_a_time() {
        let (graph, board, images) = crate::testing::fmnist_cnn(32);
        let options = DesignOptions::default();
        let ranges = crate::quantize::measure_ranges(&graph, &board, Some(&images)).unwrap();
        let new = || {
            let grams = Some(reconstruct::grams(&graph, &board, &images, |_| true).unwrap());
            Evaluator::new(&graph, &board, &options, Some(&ranges), Objective::Throughput, &images, None, 0, grams)
                .unwrap()
        };
        let mut together = new();
        let n = together.targets().len();
        // Every one-layer move of each knob kind, one asked twice, and a width move.
        let mut candidates = Vec::new();
        for t in 0..n {
            let mut knobs = vec![LayerKnobs::default(); n];
            knobs[t].weight_threshold = Some(0.02);
            candidates.push(knobs.clone());
            if !together.targets()[t].reads_image {
                knobs[t].activation_threshold = Some(0.25);
                candidates.push(knobs);
            }
        }
        candidates.push(candidates[0].clone());
        let mut narrower = vec![LayerKnobs::default(); n];
        narrower[1].weight_bits = Some(8);
        candidates.push(narrower);
        let estimates = together.estimate_all(&candidates);
        let mut alone = new();
        for (knobs, estimate) in candidates.iter().zip(estimates) {
            assert_eq!(estimate.unwrap(), alone.estimate(knobs).unwrap(), "{knobs:?}");
        }
    }

    fn incremental_matches_fresh(datapath: crate::quantize::Datapath) {
        let (graph, board, images) = crate::testing::fmnist_cnn(64);
        let labels = &hass_runtime::npy::read_labels(&testdata("inputs/fmnist_train_500_labels.npy")).unwrap()[..64];
        let options = DesignOptions::default();
        let ranges = (datapath == crate::quantize::Datapath::Fixed)
            .then(|| crate::quantize::measure_ranges(&graph, &board, Some(&images)).unwrap());
        let q = ranges.as_ref();
        let mut eval =
            Evaluator::new(&graph, &board, &options, q, Objective::Throughput, &images, Some(labels), 0, None).unwrap();
        let dense = eval.accepted().metrics;
        let names: Vec<String> = eval.targets().iter().map(|t| t.name.clone()).collect();
        let mut knobs = vec![LayerKnobs::default(); names.len()];
        knobs[1].weight_threshold = Some(0.05);
        knobs[2].activation_threshold = Some(0.5);
        let candidate = eval.evaluate(&knobs).unwrap();
        // The same knobs applied to the graph and evaluated from scratch.
        let mut pruned = graph.clone();
        let layers = names.iter().cloned().zip(knobs.iter().copied()).filter(|(_, k)| k.any()).collect();
        crate::sparsity::prune::apply(&mut pruned, &SparsityConfig { global: LayerKnobs::default(), layers }).unwrap();
        let fresh = Evaluator::new(&pruned, &board, &options, q, Objective::Throughput, &images, Some(labels), 0, None)
            .unwrap();
        let (a, b) = (candidate.metrics, fresh.accepted().metrics);
        // (The pressure is probed relative to each evaluator's accepted design, so it differs.)
        assert_eq!((a.top1, a.throughput_fps, a.latency_s), (b.top1, b.throughput_fps, b.latency_s));
        // Pruning sheds work: a faster design, or the same interval with resources to spare.
        assert!(a.divergence > 0.0, "{a:?}");
        assert!(a.throughput_fps > dense.throughput_fps || a.pressure < dense.pressure, "{a:?} {dense:?}");
        // Accepted, then undone: back to the dense figures exactly.
        eval.accept(candidate).unwrap();
        let back = eval.evaluate(&vec![LayerKnobs::default(); names.len()]).unwrap().metrics;
        assert_eq!((back.top1, back.throughput_fps, back.divergence), (dense.top1, dense.throughput_fps, 0.0));
    }
}
