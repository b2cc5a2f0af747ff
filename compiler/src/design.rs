//! From a compiled graph to a hardware design: the stages, their sparsity statistics, the
//! allocation, and what the design achieves. The glue between `hw`, `search` and `backend`.

use crate::alloc::{Allocation, Allocator};
use crate::board::Board;
use crate::error::{CompileError, Result};
use crate::hw::cost::{stage_cost, Folding, Placement};
use crate::hw::pipeline::Network;
use crate::hw::sparse::{deal_snake, LayerSparsity};
use crate::hw::stage::{stages, StageKind};
use crate::hw::{Budget, Precision};
use crate::ir::{Graph, NodeId};
use std::collections::{BTreeMap, HashMap};

/// Where the sparsity statistics of the cost model come from.
#[derive(Clone, Debug, Default, PartialEq)]
pub enum SparsitySource {
    /// None: every stage dense.
    #[default]
    Dense,
    /// The same product sparsity for every conv and fully connected stage (binomial
    /// histograms): a "what if" before pruning anything.
    Uniform(f64),
    /// Product sparsity per layer name; layers not named are dense.
    PerLayer(BTreeMap<String, f64>),
    /// Histograms per layer name, from the pruned weights or measured on calibration
    /// images; `source` says which, for reports.
    Measured {
        /// Statistics by layer name.
        layers: BTreeMap<String, LayerSparsity>,
        /// Where they come from.
        source: String,
    },
}

/// What shapes a design besides the graph and the board: the allocator, operand widths, the
/// sparsity statistics and the batch. Pruning and calibration images act on the graph
/// before a design is made; they travel in [`crate::CompileOptions`].
#[derive(Clone, Debug)]
pub struct DesignOptions {
    /// Allocator.
    pub allocator: Allocator,
    /// Operand widths.
    pub precision: Precision,
    /// Sparsity statistics.
    pub sparsity: SparsitySource,
    /// Images per batch, for the batched throughput (pipeline fill, reconfiguration).
    pub batch: usize,
}

impl Default for DesignOptions {
    fn default() -> Self {
        DesignOptions {
            allocator: Allocator::Exact,
            precision: Precision::default(),
            sparsity: SparsitySource::Dense,
            batch: 256,
        }
    }
}

/// The hardware of one layer, as the backend records it.
#[derive(Clone, Debug, PartialEq)]
pub struct LayerHardware {
    /// Folding factors.
    pub folding: Folding,
    /// Weight placement.
    pub placement: Placement,
    /// Stream of each input channel (conv stages), in channel order.
    pub channel_stream: Vec<u32>,
    /// Partition the layer runs in.
    pub partition: u32,
    /// Built with a zero-skipping crossbar.
    pub sparse: bool,
}

/// An allocated design.
#[derive(Clone, Debug)]
pub struct Design {
    /// One allocation per partition, in execution order.
    pub partitions: Vec<Allocation>,
    /// The capped budget it was made for.
    pub budget: Budget,
    /// The options it was made with.
    pub options: DesignOptions,
    /// The whole network (all partitions).
    pub network: Network,
    /// Per layer, by node.
    pub layers: HashMap<NodeId, LayerHardware>,
    /// Board reconfiguration time, seconds.
    pub reconfiguration_s: f64,
}

impl Design {
    /// Images per second: steady state for one partition; for several, a batch through
    /// each partition in turn, paying every reconfiguration.
    pub fn throughput_fps(&self) -> f64 {
        if self.partitions.len() == 1 {
            self.partitions[0].eval.throughput_fps
        } else {
            self.batch_fps()
        }
    }

    /// Images per second over one batch of `options.batch`, pipeline fill included (and
    /// reconfigurations when partitioned).
    pub fn batch_fps(&self) -> f64 {
        let b = self.options.batch.max(1) as f64;
        let f = self.budget.clock_hz;
        let reconf = if self.partitions.len() > 1 { self.reconfiguration_s } else { 0.0 };
        let seconds: f64 =
            self.partitions.iter().map(|p| (p.eval.latency_s * f + (b - 1.0) * p.eval.ii) / f + reconf).sum();
        b / seconds
    }

    /// Dense-equivalent GOP/s per DSP in use (the largest partition's DSPs).
    pub fn gops_per_dsp(&self) -> f64 {
        let dsp = self.partitions.iter().map(|p| p.eval.usage.dsp).fold(0.0, f64::max);
        2.0 * self.network.macs as f64 * self.throughput_fps() / 1e9 / dsp.max(1.0)
    }

    /// First image's latency, seconds (partitions run one after another).
    pub fn latency_s(&self) -> f64 {
        let reconf =
            if self.partitions.len() > 1 { self.reconfiguration_s * self.partitions.len() as f64 } else { 0.0 };
        self.partitions.iter().map(|p| p.eval.latency_s).sum::<f64>() + reconf
    }
}

fn sparsity_for(graph: &Graph, source: &SparsitySource) -> Result<Vec<Option<LayerSparsity>>> {
    let stages = stages(graph);
    if let SparsitySource::PerLayer(map) = source {
        let valid: Vec<&str> = stages.iter().filter(|s| s.is_conv()).map(|s| s.name.as_str()).collect();
        for (name, &s) in map {
            if !valid.contains(&name.as_str()) {
                return Err(CompileError::Options(format!(
                    "sparsity file names layer {name:?}, which is not a conv or fully connected layer of this model; valid names: {}",
                    valid.join(", ")
                )));
            }
            check_fraction(&format!("sparsity of {name}"), s)?;
        }
    }
    Ok(stages
        .iter()
        .map(|s| {
            let window = s.window_size();
            let value = match source {
                _ if !s.is_conv() => None,
                SparsitySource::Dense => None,
                SparsitySource::Uniform(v) => Some(*v),
                SparsitySource::PerLayer(map) => map.get(&s.name).copied(),
                SparsitySource::Measured { layers, .. } => return layers.get(&s.name).cloned(),
            };
            value.map(|v| LayerSparsity::uniform(v, window))
        })
        .collect())
}

/// A value in [0, 1).
pub fn check_fraction(what: &str, v: f64) -> Result<()> {
    if (0.0..1.0).contains(&v) {
        Ok(())
    } else {
        Err(CompileError::Options(format!("{what} must be in [0, 1), got {v}")))
    }
}

/// The network model of `graph` under `options`.
pub fn network(graph: &Graph, options: &DesignOptions) -> Result<Network> {
    let sparsity = sparsity_for(graph, &options.sparsity)?;
    let words = |id: NodeId| graph.shape(id).iter().product::<usize>();
    let output_words = graph.outputs.iter().map(|&o| words(o)).sum();
    let mut stages = stages(graph);
    for s in &mut stages {
        s.encoded_weight_bits = encoded_bits(graph, s.node, options.precision.weight_bits as u64);
    }
    Ok(Network::new(stages, sparsity, options.precision, words(graph.input), output_words))
}

/// Bits of a layer's weights (plus dense bias) in the artifact's encoding at `weight_bits`,
/// when that encoding is not dense.
fn encoded_bits(graph: &Graph, node: NodeId, weight_bits: u64) -> Option<u64> {
    let (weight, bias) = match &graph.node(node).op {
        crate::ir::Op::Conv(c) => (c.weight, c.bias),
        crate::ir::Op::Dense(d) => (d.weight, d.bias),
        _ => return None,
    };
    let w = graph.weights.tensor(weight);
    let biases = bias.map_or(0, |b| graph.weights.tensor(b).data.len());
    encoded_weight_bits(&w.data, w.shape[0], biases, weight_bits)
}

/// Bits of `weight` (`rows` filters) plus `biases` dense biases as the artifact encodes them
/// at `weight_bits`, when that encoding is not dense (`None`: dense).
pub fn encoded_weight_bits(weight: &[f32], rows: usize, biases: usize, weight_bits: u64) -> Option<u64> {
    let (encoding, _) = hass_proto::encoding::encode(weight, rows);
    if encoding == hass_proto::WeightEncoding::Dense {
        return None;
    }
    Some(hass_proto::encoding::hardware_bits(weight, rows, encoding, weight_bits) + biases as u64 * weight_bits)
}

/// Allocate `graph` on `board`.
pub fn design(graph: &Graph, board: &Board, options: &DesignOptions) -> Result<Design> {
    from_network_with(network(graph, options)?, board, options, None)
}

/// Allocate an analysed `network` on `board` (the search builds networks without a graph),
/// with the stages' stage_choices already built when given (see
/// [`crate::alloc::exact::choices_of_stage`]).
pub fn from_network_with(
    network: Network,
    board: &Board,
    options: &DesignOptions,
    stage_choices: Option<Vec<crate::alloc::choices::StageChoices>>,
) -> Result<Design> {
    let budget = Budget::of(board);
    let partitions = crate::alloc::allocate_with(&network, &budget, options.allocator, stage_choices)?;
    let mut layers = HashMap::new();
    for (p, part) in partitions.iter().enumerate() {
        for (k, choice) in part.choices.iter().enumerate() {
            let stage = &network.stages[part.offset + k];
            let channel_stream = match &stage.kind {
                StageKind::Conv { c_in, .. } => {
                    let streams = choice.folding.coarse_in * choice.folding.coarse_group;
                    let assignment = match &network.sparsity[part.offset + k] {
                        Some(s) if s.histograms.len() == *c_in => {
                            s.stream_assignment(stage.window_size(), choice.folding.fine, streams)
                        }
                        _ => deal_snake(&vec![1.0; *c_in], streams),
                    };
                    assignment.into_iter().map(|s| s as u32).collect()
                }
                _ => Vec::new(),
            };
            layers.insert(
                stage.node,
                LayerHardware {
                    folding: choice.folding,
                    placement: choice.placement,
                    sparse: network.sparsity[part.offset + k].as_ref().is_some_and(|s| s.is_sparse()),
                    channel_stream,
                    partition: p as u32,
                },
            );
        }
    }
    Ok(Design {
        partitions,
        budget,
        options: options.clone(),
        network,
        layers,
        reconfiguration_s: board.system.reconfiguration_s,
    })
}

/// Cost of stage `global` (index in the whole network) as chosen in `design`.
pub fn chosen_cost(design: &Design, global: usize) -> (crate::hw::cost::StageCost, usize) {
    let (p, part) = design
        .partitions
        .iter()
        .enumerate()
        .find(|(_, a)| (a.offset..a.offset + a.choices.len()).contains(&global))
        .expect("every stage is in a partition");
    let choice = part.choices[global - part.offset];
    let s = &design.network.stages[global];
    (
        stage_cost(
            s,
            choice.folding,
            choice.placement,
            design.network.precision,
            design.network.sparsity[global].as_ref(),
        ),
        p,
    )
}
