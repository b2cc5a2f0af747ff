//! The whole pipeline (REFERENCE §2.6): every stage runs at once, so the design's
//! initiation interval is its slowest stage; off-chip traffic beyond the bandwidth slows it.

use super::cost::{stage_cost, Folding, Placement};
use super::memory;
use super::modules;
use super::sparse::LayerSparsity;
use super::stage::{Stage, StageKind};
use super::{Budget, Precision, Usage};

/// One stage's choice: folding and weight placement.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Choice {
    /// Folding factors.
    pub folding: Folding,
    /// Where its weights live (ignored for stages without weights).
    pub placement: Placement,
}

impl Choice {
    /// No parallelism, weights in BRAM.
    pub const MIN: Choice = Choice { folding: Folding::ONE, placement: Placement::Bram };
}

/// A network's stages with everything about them that does not depend on the folding.
#[derive(Clone, Debug)]
pub struct Network {
    /// Stages in execution order.
    pub stages: Vec<Stage>,
    /// Which foldings the accelerator's generator can build.
    pub folds: Folds,
    /// Sparsity of each conv stage (`None`: dense).
    pub sparsity: Vec<Option<LayerSparsity>>,
    /// The default operand widths (each stage has its own): those of the network input and
    /// output, and of the streams between partitions.
    pub precision: Precision,
    /// Per stage, resources independent of the folding: the buffer that holds the
    /// early branch of a join until the late one catches up.
    pub fixed: Vec<Usage>,
    /// Per stage, the fraction of an image it must read before its first output.
    pub fill: Vec<f64>,
    /// Bits per image moved between the device and memory regardless of the design
    /// (network input and output).
    pub io_bits: f64,
    /// Dense multiply-accumulates per image.
    pub macs: u64,
}

/// Fraction of its input a stage reads before it can emit: a window needs K_h - 1 rows
/// and K_w pixels; a global pool or a fully connected layer needs everything.
fn fill_fraction(stage: &Stage) -> f64 {
    match &stage.kind {
        StageKind::Conv { kernel, in_hw, .. } if in_hw[0] * in_hw[1] == 1 => {
            let _ = kernel;
            1.0
        }
        StageKind::Conv { kernel, in_hw, .. } => {
            (((kernel[0] - 1) * in_hw[1] + kernel[1]) as f64 / (in_hw[0] * in_hw[1]) as f64).min(1.0)
        }
        StageKind::Lanes { op: super::stage::LaneOp::GlobalPool, .. } => 1.0,
        StageKind::Lanes { rows, cols, window, .. } => {
            let [kh, kw] = window.unwrap_or([1, 1]);
            (((kh - 1) * cols + kw) as f64 / (rows * cols) as f64).min(1.0)
        }
        StageKind::Free => 0.0,
    }
}

/// Parallel words a stage reads (or, with `output`, writes) per cycle; `None` for wiring.
fn lanes(stage: &Stage, choice: &Choice, output: bool) -> Option<usize> {
    let f = choice.folding;
    match stage.kind {
        StageKind::Conv { .. } => Some(if output { f.coarse_out } else { f.coarse_in } * f.coarse_group * f.spatial),
        StageKind::Lanes { .. } => Some(f.coarse_in * f.spatial),
        StageKind::Free => None,
    }
}

/// Which foldings a stage may take.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Folds {
    /// Any factor (idle lanes on the last pass are charged), several pixels per cycle.
    #[default]
    Any,
    /// Factors that divide the loops they unroll, one pixel per cycle: the designs
    /// fpgaConvNet builds, to compare with it at equal folding.
    Divisors,
}

impl Folds {
    /// Name in reports.
    pub fn name(self) -> &'static str {
        match self {
            Folds::Any => "any",
            Folds::Divisors => "divisors",
        }
    }
}

impl Network {
    /// Analyse `stages` once: join buffers, fill fractions, I/O traffic.
    pub fn new(
        stages: Vec<Stage>,
        sparsity: Vec<Option<LayerSparsity>>,
        precision: Precision,
        input_words: usize,
        output_words: usize,
    ) -> Network {
        let fill: Vec<f64> = stages.iter().map(fill_fraction).collect();
        let mut consumers = vec![0usize; stages.len()];
        for s in &stages {
            for i in s.inputs.iter().flatten() {
                consumers[*i] += 1;
            }
        }
        // Delay (in image fractions) from the nearest fork to the end of each input branch.
        let branch_delay = |mut at: Option<usize>| {
            let mut delay = 0.0;
            while let Some(i) = at {
                if consumers[i] > 1 || stages[i].inputs.len() != 1 {
                    break;
                }
                delay += fill[i];
                at = stages[i].inputs[0];
            }
            delay
        };
        let fixed = stages
            .iter()
            .map(|s| {
                if s.inputs.len() < 2 {
                    return Usage::default();
                }
                let delays: Vec<f64> = s.inputs.iter().map(|&i| branch_delay(i)).collect();
                let spread =
                    delays.iter().cloned().fold(0.0, f64::max) - delays.iter().cloned().fold(f64::MAX, f64::min);
                let words = (spread.min(1.0) * s.words_out as f64).ceil() as u64;
                memory::bram(1, s.precision.activation_bits as u64, words).usage()
            })
            .collect();
        let macs = stages.iter().map(|s| s.macs).sum();
        let io_bits = ((input_words + output_words) as u64 * precision.activation_bits as u64) as f64;
        Network { stages, folds: Folds::Any, sparsity, precision, fixed, fill, io_bits, macs }
    }

    /// The width converters `choices` need: wherever a stage reads a stream whose parallel
    /// words (its producer's output lanes) differ from its own input lanes (REFERENCE §2.6;
    /// [`modules::width_converter`]). Reshapes pass streams through. `choices` may cover
    /// only the first stages (a design being built stage by stage).
    pub fn converters(&self, choices: &[Choice]) -> Usage {
        self.converters_counted(choices).1
    }

    /// [`Network::converters`] and how many there are.
    pub fn converters_counted(&self, choices: &[Choice]) -> (usize, Usage) {
        let (mut count, mut total) = (0, Usage::default());
        for (i, s) in self.stages.iter().enumerate().take(choices.len()) {
            let Some(to) = lanes(s, &choices[i], false) else { continue };
            for &input in &s.inputs {
                let Some(j) = self.producer(input) else { continue };
                let Some(from) = lanes(&self.stages[j], &choices[j], true) else { continue };
                if from != to {
                    count += 1;
                    total += self.converter(j, from, to);
                }
            }
        }
        (count, total)
    }

    /// The converter from stage `j`'s `from` lanes to `to`.
    pub fn converter(&self, j: usize, from: usize, to: usize) -> Usage {
        modules::width_converter(1, self.stages[j].precision.activation_bits, from, to)
    }

    /// The stage that produces the stream `input` carries, through reshapes.
    fn producer(&self, mut input: Option<usize>) -> Option<usize> {
        while let Some(j) = input.filter(|&j| matches!(self.stages[j].kind, StageKind::Free)) {
            input = self.stages[j].inputs.first().copied().flatten();
        }
        input
    }

    /// The stage producing stage `i`'s first input, through reshapes (`None` for the
    /// graph's input).
    pub fn first_producer(&self, i: usize) -> Option<usize> {
        self.producer(self.stages[i].inputs.first().copied().flatten())
    }

    /// Parallel words stage `i` writes per cycle under `choice` (`None` for wiring).
    pub fn lanes_out(&self, i: usize, choice: &Choice) -> Option<usize> {
        lanes(&self.stages[i], choice, true)
    }

    /// Parallel words stage `i` reads per cycle under `choice` (`None` for wiring).
    pub fn lanes_in(&self, i: usize, choice: &Choice) -> Option<usize> {
        lanes(&self.stages[i], choice, false)
    }

    /// Total usage of `choices`, whose stages use `usages`: those, the join buffers, the
    /// width converters between stages and the network's I/O traffic.
    pub fn total_usage(&self, choices: &[Choice], usages: impl Iterator<Item = Usage>) -> Usage {
        let mut u = usages.sum::<Usage>() + self.fixed.iter().copied().sum::<Usage>() + self.converters(choices);
        u.offchip_bits += self.io_bits;
        u
    }

    /// Evaluate a full design.
    pub fn evaluate(&self, choices: &[Choice], budget: &Budget) -> Evaluation {
        let costs: Vec<_> = self
            .stages
            .iter()
            .zip(choices)
            .zip(&self.sparsity)
            .map(|((s, c), sp)| stage_cost(s, c.folding, c.placement, sp.as_ref()))
            .collect();
        let cycles: Vec<f64> = costs.iter().map(|c| c.cycles).collect();
        let usage = self.total_usage(choices, costs.iter().map(|c| c.usage));
        let (bottleneck, compute_ii) =
            cycles.iter().enumerate().fold((0, 0.0f64), |best, (i, &c)| if c > best.1 { (i, c) } else { best });
        // Memory traffic beyond the bandwidth stretches the interval.
        let memory_ii = usage.offchip_bits / budget.offchip_bits_at(1.0);
        let ii = compute_ii.max(memory_ii).max(1.0);
        // Latency: along the longest path, each stage's fill at its own rate, then one II.
        let mut arrival = vec![0.0f64; self.stages.len()];
        for (i, s) in self.stages.iter().enumerate() {
            let ready = s.inputs.iter().map(|inp| inp.map_or(0.0, |j| arrival[j])).fold(0.0, f64::max);
            arrival[i] = ready + self.fill[i] * cycles[i];
        }
        let latency_cycles = arrival.iter().cloned().fold(0.0, f64::max) + ii;
        Evaluation {
            cycles,
            ii,
            memory_bound: memory_ii > compute_ii,
            bottleneck,
            usage,
            throughput_fps: budget.clock_hz / ii,
            latency_s: latency_cycles / budget.clock_hz,
            bandwidth_gbps: usage.offchip_bits * budget.clock_hz / ii / 1e9,
        }
    }
}

/// What a design achieves.
#[derive(Clone, Debug)]
pub struct Evaluation {
    /// Cycles per image of each stage.
    pub cycles: Vec<f64>,
    /// Initiation interval, cycles per image.
    pub ii: f64,
    /// Whether off-chip bandwidth, not a stage, sets the interval.
    pub memory_bound: bool,
    /// The slowest stage.
    pub bottleneck: usize,
    /// Total resources (off-chip bits per image included).
    pub usage: Usage,
    /// Images per second in steady state.
    pub throughput_fps: f64,
    /// First image's latency, seconds.
    pub latency_s: f64,
    /// Off-chip bandwidth used, Gbit/s.
    pub bandwidth_gbps: f64,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hw::stage::LaneOp;
    use crate::ir::EltwiseKind;

    fn relu_stage(words: usize, input: Option<usize>) -> Stage {
        Stage {
            node: Default::default(),
            name: "s".into(),
            op: "Add".into(),
            kind: StageKind::Lanes {
                op: LaneOp::Eltwise(EltwiseKind::Add),
                channels: words,
                rows: 1,
                cols: 1,
                words_in: words,
                window: None,
                activation: None,
            },
            macs: 0,
            weights: 0,
            encoded_weight_bits: None,
            precision: Precision::default(),
            words_out: words,
            inputs: vec![input],
        }
    }

    #[test]
    fn bandwidth_slows_the_pipeline_by_the_ratio() {
        // One stage of 1000 cycles; 1e6 bits in and out per image at 100 MHz and 50 Gbit/s:
        // 1e6 bits take 1e6 / 50e9 s = 2000 cycles, so the memory sets the interval.
        let net = Network::new(vec![relu_stage(1000, None)], vec![None], Precision::default(), 31250, 31250);
        let budget =
            Budget { dsp: 1e9, bram18: 1e9, uram: 1e9, lut: 1e9, ff: 1e9, bandwidth_gbps: 50.0, clock_hz: 100e6 };
        let e = net.evaluate(&[Choice::MIN], &budget);
        assert_eq!(e.cycles, vec![1000.0]);
        assert!((e.ii - 2000.0).abs() < 1e-6, "{}", e.ii);
        assert!(e.memory_bound);
        assert!((e.throughput_fps - 50_000.0).abs() < 1e-3);
        // With twice the bandwidth, the stage binds again.
        let wide = Budget { bandwidth_gbps: 200.0, ..budget };
        let e = net.evaluate(&[Choice::MIN], &wide);
        assert_eq!((e.ii, e.memory_bound), (1000.0, false));
    }
}
