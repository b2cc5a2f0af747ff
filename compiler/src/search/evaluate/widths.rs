//! Operand widths as a knob: the widths a target's bits knob gives the network, the
//! hardware estimate of a change of widths, and its evaluation, which re-quantizes the
//! whole network (every format downstream of a narrowed stream moves).

use super::{
    apply_knobs, layer_weights, tally_all, thresholds_differ, weights_differ, Candidate, Evaluator, Metrics, Target,
};
use crate::alloc::exact::{choices_of_stage, Rounds};
use crate::design::{encoded_weight_bits, DesignOptions, Widths};
use crate::error::Result;
use crate::hw::Budget;
use crate::ir::NodeId;
use crate::sparsity::statistics::calibration_plan;
use crate::sparsity::LayerKnobs;
use hass_runtime::trace::Trace;
use rayon::prelude::*;
use std::collections::HashMap;
use std::sync::Arc;

impl Evaluator<'_> {
    /// Whether widths are knobs: only on the fixed-point datapath do they change the
    /// outputs (on the float datapath a narrower width would look free).
    pub fn searches_widths(&self) -> bool {
        self.weight_bits.is_some()
    }

    /// The widest operands target `t` may ask for: the wider of its weights' and its input
    /// stream's base widths (a bits knob only narrows them).
    pub fn base_bits(&self, t: usize) -> u32 {
        let node = self.node_of(t);
        let p = self.base.of_stage(self.graph, node);
        p.weight_bits.max(p.activation_bits)
    }

    /// The widths in the accepted state.
    pub fn widths(&self) -> &Widths {
        &self.state.widths
    }

    /// The graph the search runs on (dense).
    pub fn graph(&self) -> &crate::ir::Graph {
        self.graph
    }

    /// The graph node of target `t`.
    pub fn node_of(&self, t: usize) -> NodeId {
        self.state.network.stages[self.targets[t].stage].node
    }

    /// The widths `knobs` give: the base widths, except that a target whose bits knob is
    /// set (`weight_bits`) holds its weights at that width, and the stream it reads is as
    /// wide as the widest any of its readers among the targets asks for (a reader without
    /// the knob asks for the base width); never wider than the base. Other layers keep
    /// their widths: a residual sum writes at its own width whatever it reads.
    pub fn widths_of(&self, knobs: &[LayerKnobs]) -> Widths {
        if knobs.iter().all(|k| k.weight_bits.is_none()) {
            return self.base.clone();
        }
        let graph = self.graph;
        let mut widths = self.base.clone();
        // Every layer named, so that narrowing the input's stream (the default's
        // activation width) leaves the others as they were.
        for id in graph.layers() {
            let name = &graph.node(id).name;
            widths.layers.insert(name.clone(), self.base.of(name));
        }
        let mut asked: HashMap<NodeId, u32> = HashMap::new();
        for (t, k) in knobs.iter().enumerate() {
            let node = self.node_of(t);
            let source = crate::design::stream_source(graph, graph.inputs_of(node)[0]);
            let base_stream = self.base.stream_bits(graph, source);
            let wanted = k.weight_bits.map_or(base_stream, |b| b.min(base_stream));
            asked.entry(source).and_modify(|w| *w = (*w).max(wanted)).or_insert(wanted);
            if let Some(bits) = k.weight_bits {
                let layer = widths.layers.get_mut(&graph.node(node).name).expect("every layer named");
                layer.weight_bits = layer.weight_bits.min(bits);
            }
        }
        for (source, bits) in asked {
            if source == graph.input {
                widths.default.activation_bits = bits;
            } else {
                widths.layers.get_mut(&graph.node(source).name).expect("every layer named").activation_bits = bits;
            }
        }
        widths
    }

    /// Per target, its weights' width at `widths` (`None` on the float datapath).
    pub(super) fn weight_bits_at(&self, widths: &Widths) -> Option<Vec<u32>> {
        self.searches_widths().then(|| self.targets.iter().map(|t| widths.of(&t.name).weight_bits).collect())
    }

    /// The layers of `plan` (at `widths`) whose own widths differ from the accepted ones:
    /// every other layer upstream of them computes as before (with the same knobs), since
    /// each stream's format depends only on its own width. `None` when the input's width changed (the input
    /// itself reads differently) or a layer is not found by name.
    fn narrowed_layers(&self, plan: &hass_runtime::Plan, widths: &Widths) -> Option<Vec<usize>> {
        let accepted = &self.state.widths;
        if widths.default != accepted.default {
            return None;
        }
        let mut roots = Vec::new();
        for id in self.graph.layers() {
            let name = &self.graph.node(id).name;
            if widths.of(name) != accepted.of(name) {
                roots.push(plan.layers.iter().position(|l| &l.name == name)?);
            }
        }
        Some(roots)
    }

    /// The hardware metrics of the accepted knobs at `widths`, without running anything:
    /// the stages whose operands change are costed again, statistics kept as accepted.
    pub(super) fn estimate_widths(&self, widths: &Widths) -> Result<Metrics> {
        let mut network = self.state.network.clone();
        let mut changed = Vec::new();
        for (i, stage) in network.stages.iter_mut().enumerate() {
            let precision = widths.of_stage(self.graph, stage.node);
            if precision != stage.precision {
                stage.precision = precision;
                changed.push(i);
            }
        }
        for target in &self.targets {
            let stage = &mut network.stages[target.stage];
            if stage.encoded_weight_bits.is_some() && changed.contains(&target.stage) {
                let bits = stage.precision.weight_bits as u64;
                stage.encoded_weight_bits =
                    encoded_weight_bits(layer_weights(&self.plan, target.layer), target.rows, target.biases, bits);
            }
        }
        let budget = Budget::of(self.board);
        let rebuilt: Vec<_> =
            changed.into_par_iter().map(|i| (i, Arc::new(choices_of_stage(&network, i, &budget)))).collect();
        let mut stage_choices = self.state.stage_choices.clone();
        for (i, c) in rebuilt {
            stage_choices[i] = c;
        }
        let metrics = self.hardware(&network, &stage_choices, Rounds::BelowBest)?;
        let s = self.state.metrics;
        Ok(Metrics { top1: s.top1, disagreement: s.disagreement, divergence: s.divergence, ..metrics })
    }

    /// Evaluate `knobs`, whose `widths` differ from the accepted ones: every format is
    /// chosen again from the dense model's ranges (as a compile at these widths would),
    /// the knobs are applied to a fresh plan, and the whole network runs again.
    pub(super) fn at_widths(&mut self, knobs: &[LayerKnobs], widths: Widths) -> Result<Candidate> {
        let _span = tracing::debug_span!("re-quantize").entered();
        widths.check(self.graph)?;
        if self.ranges.is_none() {
            self.ranges = Some(crate::quantize::measure_ranges(self.graph, self.board, Some(self.images))?);
        }
        let ranges = self.ranges.as_ref().expect("measured above");
        let quantization = crate::quantize::formats(self.graph, &widths, ranges);
        let mut plan = calibration_plan(self.graph, self.board, self.images, Some(&quantization))?;
        let bits = self.weight_bits_at(&widths);
        let dense = vec![LayerKnobs::default(); knobs.len()];
        apply_knobs(&mut plan, &self.targets, &mut self.refits, bits.as_deref(), &dense, knobs);
        let roots = self.narrowed_layers(&plan, &widths).map(|mut roots| {
            // And the layers whose thresholds move with the widths.
            let moved = |t: &usize| thresholds_differ(&knobs[*t], &self.state.knobs[*t]);
            roots.extend((0..knobs.len()).filter(moved).map(|t| self.targets[t].layer));
            roots
        });
        let trace = tracing::debug_span!("rerun").in_scope(|| match &roots {
            Some(roots) => Ok(self.state.trace().rerun(&plan, roots)),
            None => Trace::new(&plan, self.images),
        })?;
        let options = DesignOptions { precision: widths.clone(), ..self.options.clone() };
        let mut network = crate::design::network(self.graph, &options)?;
        // A target whose input and threshold stay keeps its masks, if they were tallied on
        // that very input.
        let accepted = &self.state;
        let known = |t: usize, target: &Target| {
            let input = plan.layers[target.layer].inputs[0];
            let same = accepted.masks_current[target.layer]
                && knobs[t].activation_threshold == accepted.knobs[t].activation_threshold
                && trace.shares(accepted.trace(), input);
            Some((accepted.masks[target.layer].clone().filter(|_| same)?, accepted.mask_zeros[target.layer]))
        };
        let pick = self.statistics_images.as_deref();
        let (masks, mask_zeros) = tracing::debug_span!("tally")
            .in_scope(|| tally_all(&plan, &trace, &self.targets, pick, &mut network, known));
        for (t, target) in self.targets.iter().enumerate() {
            if weights_differ(self.refits_target(t), &LayerKnobs::default(), &knobs[t]) {
                let weight = layer_weights(&plan, target.layer);
                let bits = widths.of(&target.name).weight_bits as u64;
                network.stages[target.stage].encoded_weight_bits =
                    encoded_weight_bits(weight, target.rows, target.biases, bits);
            }
        }
        // A stage's choices depend on nothing but the stage, its statistics, the folds and
        // the board (`alloc::foldings::enumerate`): where they are as accepted, so are its
        // choices.
        let budget = Budget::of(self.board);
        let choices = tracing::debug_span!("choices");
        let stage_choices: Vec<_> = choices.in_scope(|| {
            (0..network.stages.len())
                .into_par_iter()
                .map(|i| {
                    let (was, now) = (&accepted.network, &network);
                    let same = was.folds == now.folds
                        && was.stages.get(i) == Some(&now.stages[i])
                        && was.sparsity.get(i) == Some(&now.sparsity[i]);
                    match accepted.stage_choices.get(i) {
                        Some(kept) if same => kept.clone(),
                        _ => Arc::new(choices_of_stage(&network, i, &budget)),
                    }
                })
                .collect()
        });
        let mut metrics = self.hardware(&network, &stage_choices, Rounds::Whole)?;
        (metrics.top1, metrics.disagreement, metrics.divergence) = self.accuracy.measure(trace.value(plan.outputs[0]));
        Ok(Candidate {
            knobs: knobs.to_vec(),
            metrics,
            trace: Some(trace),
            rerun_roots: roots,
            masks_current: vec![true; masks.len()],
            masks,
            mask_zeros,
            network,
            stage_choices,
            widths,
            plan: Some(Arc::new(plan)),
        })
    }
}
