//! One hardware stage per layer: the geometry the cost model needs, read off the IR.

use crate::ir::{Activation, EltwiseKind, Graph, NodeId, Op, Padding, PoolKind};

/// What a non-MAC stage does to each word (it sets the per-lane logic).
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum LaneOp {
    /// Max or average pooling over a window.
    Pool(PoolKind),
    /// Mean over H x W.
    GlobalPool,
    /// Element-wise add or multiply of two streams.
    Eltwise(EltwiseKind),
    /// Per-channel multiply-add.
    ScaleShift,
    /// A stand-alone activation.
    Activation(Activation),
    /// Merging streams along channels.
    Concat,
}

/// The geometry of a stage.
#[derive(Clone, Debug, PartialEq)]
pub enum StageKind {
    /// Convolution or fully connected (a 1x1 convolution on a 1x1 map): multipliers.
    Conv {
        /// Input channels.
        c_in: usize,
        /// Output channels.
        c_out: usize,
        /// Channel groups.
        groups: usize,
        /// `[K_h, K_w]`.
        kernel: [usize; 2],
        /// Input `[H, W]`.
        in_hw: [usize; 2],
        /// Input `[H, W]` as the sliding window streams it: padding included.
        padded_hw: [usize; 2],
        /// Output `[H, W]`.
        out_hw: [usize; 2],
        /// Fused activation (its per-lane logic is charged to the stage).
        activation: Option<Activation>,
    },
    /// Streams processed lane by lane without weights.
    Lanes {
        /// What each lane does.
        op: LaneOp,
        /// Channels of the stream (lanes are dealt over channels).
        channels: usize,
        /// Rows of the map the stage walks (input for pooling, output otherwise).
        rows: usize,
        /// Columns of that map (spatial parallelism splits these).
        cols: usize,
        /// Words per image read over all inputs.
        words_in: usize,
        /// Pooling window `[K_h, K_w]` (for line buffers), if any.
        window: Option<[usize; 2]>,
        /// Fused activation.
        activation: Option<Activation>,
    },
    /// Wiring only (reshape): no logic, no cycles.
    Free,
}

/// One layer's stage.
#[derive(Clone, Debug, PartialEq)]
pub struct Stage {
    /// The layer.
    pub node: NodeId,
    /// Layer name (as in `inspect` and reports).
    pub name: String,
    /// Op name (as in `inspect`).
    pub op: String,
    /// Geometry.
    pub kind: StageKind,
    /// Dense multiply-accumulates per image.
    pub macs: u64,
    /// Weight values (weights and biases).
    pub weights: u64,
    /// Bits of the weights in their sparse encoding at the hardware width, when that is
    /// smaller than dense (set by `design::network`, which knows the width).
    pub encoded_weight_bits: Option<u64>,
    /// Operand widths: its weights', and the widest stream it reads (set by
    /// `design::network`, which knows the widths; 16 bits until then).
    pub precision: super::Precision,
    /// Output words per image.
    pub words_out: usize,
    /// Indices (in the stage list) of the stages feeding this one; `None` is the graph input.
    pub inputs: Vec<Option<usize>>,
}

impl Stage {
    /// Whether the stage has multipliers with weights.
    pub fn is_conv(&self) -> bool {
        matches!(self.kind, StageKind::Conv { .. })
    }

    /// K_h * K_w for conv stages, 1 otherwise.
    pub fn window_size(&self) -> usize {
        match &self.kind {
            StageKind::Conv { kernel, .. } => kernel[0] * kernel[1],
            _ => 1,
        }
    }
}

/// The stages of a compiled graph, in execution order.
pub fn stages(graph: &Graph) -> Vec<Stage> {
    let layers = graph.layers();
    let index: std::collections::HashMap<NodeId, usize> = layers.iter().enumerate().map(|(i, &n)| (n, i)).collect();
    layers
        .iter()
        .map(|&id| {
            let node = graph.node(id);
            let out = graph.shape(id).clone();
            let inputs: Vec<NodeId> = graph.inputs_of(id);
            let in_shape = graph.shape(inputs[0]).clone();
            let words = |s: &[usize]| s.iter().product::<usize>();
            let hw = |s: &[usize]| if s.len() == 3 { [s[1], s[2]] } else { [1, 1] };
            let weights: u64 = node.op.weight_ids().iter().map(|&w| graph.weights.tensor(w).data.len() as u64).sum();
            let lanes = |op, rows_cols: [usize; 2], window, activation| StageKind::Lanes {
                op,
                channels: out.first().copied().unwrap_or(1).max(1),
                rows: rows_cols[0],
                cols: rows_cols[1],
                words_in: inputs.iter().map(|&i| words(graph.shape(i))).sum(),
                window,
                activation,
            };
            let (kind, macs) = match &node.op {
                Op::Conv(c) => {
                    let w = &graph.weights.tensor(c.weight).shape;
                    let [h, w_in] = hw(&in_shape);
                    // Shape inference made every padding explicit.
                    let [top, left, bottom, right] = match c.padding {
                        Padding::Explicit(p) => p,
                        Padding::SameUpper | Padding::SameLower => [0; 4],
                    };
                    let kind = StageKind::Conv {
                        c_in: in_shape[0],
                        c_out: out[0],
                        groups: c.groups,
                        kernel: [w[2], w[3]],
                        in_hw: [h, w_in],
                        padded_hw: [h + top + bottom, w_in + left + right],
                        out_hw: hw(&out),
                        activation: c.activation,
                    };
                    (kind, (words(&out) * w[1] * w[2] * w[3]) as u64)
                }
                Op::Dense(d) => {
                    let kind = StageKind::Conv {
                        c_in: in_shape[0],
                        c_out: out[0],
                        groups: 1,
                        kernel: [1, 1],
                        in_hw: [1, 1],
                        padded_hw: [1, 1],
                        out_hw: [1, 1],
                        activation: d.activation,
                    };
                    (kind, graph.weights.tensor(d.weight).data.len() as u64)
                }
                Op::Pool(p) => (lanes(LaneOp::Pool(p.kind), hw(&in_shape), Some(p.kernel), None), 0),
                Op::GlobalAveragePool { .. } => (lanes(LaneOp::GlobalPool, hw(&in_shape), None, None), 0),
                Op::Eltwise { kind, activation } => (lanes(LaneOp::Eltwise(*kind), hw(&out), None, *activation), 0),
                Op::ScaleShift(s) => (lanes(LaneOp::ScaleShift, hw(&out), None, s.activation), 0),
                Op::Activation(a) => (lanes(LaneOp::Activation(*a), hw(&out), None, None), 0),
                Op::Concat { .. } => (lanes(LaneOp::Concat, hw(&out), None, None), 0),
                Op::Reshape(_) => (StageKind::Free, 0),
                Op::Input { .. } | Op::Identity | Op::BroadcastConst { .. } => {
                    unreachable!("not a layer after the pipeline")
                }
            };
            Stage {
                node: id,
                name: node.name.clone(),
                op: node.op.kind_name(),
                kind,
                macs,
                weights,
                encoded_weight_bits: None,
                precision: super::Precision::default(),
                words_out: words(&out),
                inputs: inputs.iter().map(|n| index.get(n).copied()).collect(),
            }
        })
        .collect()
}
