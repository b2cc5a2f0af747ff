//! From a compiled graph to a hardware design: the stages, their sparsity statistics, the
//! allocation, and what the design achieves. The glue between `hw`, `search` and `backend`.

use crate::alloc::exact::Rounds;
use crate::alloc::{Allocation, Allocator};
use crate::board::Board;
use crate::error::{CompileError, Result};
use crate::hw::cost::{stage_cost, Folding, Placement};
use crate::hw::pipeline::{Folds, Network};
use crate::hw::sparse::{channel_streams, LayerSparsity};
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
    /// Which foldings the allocator may choose.
    pub folds: Folds,
    /// Operand widths, per layer.
    pub precision: Widths,
    /// Sparsity statistics.
    pub sparsity: SparsitySource,
    /// Images per batch, for the batched throughput (pipeline fill, reconfiguration).
    pub batch: usize,
}

impl Default for DesignOptions {
    fn default() -> Self {
        DesignOptions {
            allocator: Allocator::Exact,
            folds: Folds::Any,
            precision: Widths::default(),
            sparsity: SparsitySource::Dense,
            batch: 256,
        }
    }
}

/// Operand widths per layer: a default for every layer and overrides by layer name. A
/// layer's `weight_bits` is its weights' width; its `activation_bits` the width of the
/// stream it writes (max pools and reshapes pass their input's values on in its format).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Widths {
    /// Every layer's widths unless named below; also the network input's.
    pub default: Precision,
    /// Overrides by layer name.
    pub layers: BTreeMap<String, Precision>,
}

impl Widths {
    /// The same widths everywhere.
    pub fn uniform(precision: Precision) -> Widths {
        Widths { default: precision, layers: BTreeMap::new() }
    }

    /// The widths of the layer named `name`.
    pub fn of(&self, name: &str) -> Precision {
        self.layers.get(name).copied().unwrap_or(self.default)
    }

    /// The width of the stream value `id` of `graph` carries (the input's, or what its
    /// producer writes).
    pub fn stream_bits(&self, graph: &Graph, id: NodeId) -> u32 {
        let source = stream_source(graph, id);
        if source == graph.input {
            self.default.activation_bits
        } else {
            self.of(&graph.node(source).name).activation_bits
        }
    }

    /// The widths a stage of layer `id` computes at: its weights', and the widest stream it
    /// reads (what its windows, line buffers and multipliers hold).
    pub fn of_stage(&self, graph: &Graph, id: NodeId) -> Precision {
        let reads = graph.inputs_of(id).iter().map(|&i| self.stream_bits(graph, i)).max();
        Precision {
            weight_bits: self.of(&graph.node(id).name).weight_bits,
            activation_bits: reads.unwrap_or(self.default.activation_bits),
        }
    }

    /// Every width is 2 to 16 bits and names a layer of `graph`; weight widths name a layer
    /// with weights.
    pub fn check(&self, graph: &Graph) -> Result<()> {
        let bad = |m: String| Err(CompileError::Options(m));
        let range = 2..=16;
        for (what, p) in std::iter::once((
            "the global setting (--weight-bits/--activation-bits or the config file's top level)".to_string(),
            &self.default,
        ))
        .chain(self.layers.iter().map(|(n, p)| (format!("layer {n:?}"), p)))
        {
            if !range.contains(&p.weight_bits) || !range.contains(&p.activation_bits) {
                return bad(format!(
                    "{what} sets {} weight bits and {} activation bits; widths must be 2 to 16 bits",
                    p.weight_bits, p.activation_bits
                ));
            }
        }
        let layers = graph.layers();
        for (name, p) in &self.layers {
            let Some(&id) = layers.iter().find(|&&id| &graph.node(id).name == name) else {
                let names: Vec<&str> = layers.iter().map(|&id| graph.node(id).name.as_str()).collect();
                return bad(format!(
                    "widths are set for layer {name:?}, which is not a layer of this model; valid names: {}",
                    names.join(", ")
                ));
            };
            if p.weight_bits != self.default.weight_bits && graph.node(id).op.weight_ids().is_empty() {
                return bad(format!("layer {name:?} has no weights: set only activation_bits on it"));
            }
        }
        Ok(())
    }
}

/// The value whose format value `id` of `graph` carries: `id` itself, or, through max
/// pools and reshapes (which pass their input's values on), the input or the layer that
/// wrote it.
pub fn stream_source(graph: &Graph, mut id: NodeId) -> NodeId {
    while id != graph.input {
        match &graph.node(id).op {
            crate::ir::Op::Reshape(_) | crate::ir::Op::Pool(crate::ir::Pool { kind: crate::ir::PoolKind::Max, .. }) => {
                id = graph.inputs_of(id)[0]
            }
            _ => break,
        }
    }
    id
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
    options.precision.check(graph)?;
    let sparsity = sparsity_for(graph, &options.sparsity)?;
    let words = |id: NodeId| graph.shape(id).iter().product::<usize>();
    let output_words = graph.outputs.iter().map(|&o| words(o)).sum();
    let mut stages = stages(graph);
    for s in &mut stages {
        s.precision = options.precision.of_stage(graph, s.node);
        s.encoded_weight_bits = encoded_bits(graph, s.node, s.precision.weight_bits as u64);
    }
    let mut network = Network::new(stages, sparsity, options.precision.default, words(graph.input), output_words);
    network.folds = options.folds;
    Ok(network)
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
    let (encoding, _) = hass_proto::encoding::smallest(weight, rows);
    if encoding == hass_proto::WeightEncoding::Dense {
        return None;
    }
    Some(hass_proto::encoding::hardware_bits(weight, rows, encoding, weight_bits) + biases as u64 * weight_bits)
}

/// Allocate `graph` on `board`.
pub fn design(graph: &Graph, board: &Board, options: &DesignOptions) -> Result<Design> {
    from_network_with(network(graph, options)?, board, options, None, Rounds::Whole)
}

/// Allocate an analysed `network` on `board` (the search builds networks without a graph),
/// with the stages' stage_choices already built when given (see
/// [`crate::alloc::exact::choices_of_stage`]), the exact allocator's rounds as `rounds` says.
pub fn from_network_with(
    network: Network,
    board: &Board,
    options: &DesignOptions,
    stage_choices: Option<Vec<crate::alloc::choices::StageChoices>>,
    rounds: Rounds,
) -> Result<Design> {
    let budget = Budget::of(board);
    let partitions = crate::alloc::allocate_with(&network, &budget, options.allocator, stage_choices, rounds)?;
    let mut layers = HashMap::new();
    for (p, part) in partitions.iter().enumerate() {
        for (k, choice) in part.choices.iter().enumerate() {
            let stage = &network.stages[part.offset + k];
            let channel_stream = match &stage.kind {
                StageKind::Conv { c_in, .. } => {
                    let streams = choice.folding.coarse_in * choice.folding.coarse_group;
                    let sparsity = network.sparsity[part.offset + k].as_ref();
                    let assignment =
                        channel_streams(sparsity, stage.window_size(), choice.folding.fine, streams, *c_in);
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
    (stage_cost(s, choice.folding, choice.placement, design.network.sparsity[global].as_ref()), p)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cnn() -> Graph {
        crate::load_model(&crate::testing::testdata("models/fmnist_cnn_op13.onnx")).unwrap()
    }

    fn id_of(graph: &Graph, name: &str) -> NodeId {
        graph.layers().into_iter().find(|&id| graph.node(id).name == name).unwrap()
    }

    #[test]
    fn a_stage_computes_at_its_weights_width_and_the_width_it_reads() {
        let graph = cnn();
        let eight = Precision { weight_bits: 8, activation_bits: 8 };
        let mut widths = Widths::uniform(Precision::default());
        widths.layers.insert("/c1/c1.0/Conv".into(), Precision { weight_bits: 16, activation_bits: 8 });
        widths.layers.insert("/c2/c2.0/Conv".into(), Precision { weight_bits: 8, activation_bits: 16 });
        widths.check(&graph).unwrap();
        // c2 reads c1's 8-bit stream through a max pool, which passes it on.
        assert_eq!(widths.of_stage(&graph, id_of(&graph, "/c2/c2.0/Conv")), eight);
        assert_eq!(widths.stream_bits(&graph, id_of(&graph, "/MaxPool")), 8);
        // The fully connected layer reads c2's 16-bit output (via a pool and a reshape).
        assert_eq!(widths.of_stage(&graph, id_of(&graph, "/fc/Gemm")), Precision::default());
        // The stages carry them, and c2's multipliers pack two to a DSP.
        let net = network(&graph, &DesignOptions { precision: widths, ..DesignOptions::default() }).unwrap();
        let c2 = net.stages.iter().find(|s| s.name == "/c2/c2.0/Conv").unwrap();
        assert_eq!((c2.precision, c2.precision.dsp_per_mult()), (eight, 0.5));
    }

    #[test]
    fn widths_name_real_layers_within_range() {
        let graph = cnn();
        let with = |name: &str, p: Precision| {
            let mut w = Widths::default();
            w.layers.insert(name.into(), p);
            w.check(&graph).map_err(|e| e.to_string())
        };
        let err = with("/c3/Conv", Precision::default()).unwrap_err();
        assert!(err.contains("\"/c3/Conv\"") && err.contains("/c2/c2.0/Conv"), "{err}");
        let err = with("/MaxPool", Precision { weight_bits: 8, activation_bits: 16 }).unwrap_err();
        assert!(err.contains("has no weights"), "{err}");
        with("/MaxPool", Precision { weight_bits: 16, activation_bits: 8 }).unwrap();
        let err = with("/fc/Gemm", Precision { weight_bits: 17, activation_bits: 16 }).unwrap_err();
        assert!(err.contains("2 to 16 bits"), "{err}");
    }
}
