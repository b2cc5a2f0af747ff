//! IR -> artifact bytes. The only writer of artifacts.
//!
//! Layers are emitted in the graph's deterministic topological order; weights in the
//! order layers reference them. Value ids: 0 is the input, `i + 1` the output of layer `i`.
//! With a [`Quantization`], the artifact holds the fixed-point datapath (`fixed.rs`):
//! integer weights and every format; without, float32 weights.

mod fixed;

use crate::board::Board;
use crate::design::LayerHardware;
use crate::error::Result;
use crate::hw::cost::Placement;
use crate::ir::{Activation, EltwiseKind, Graph, NodeId, Op, Padding, PoolKind, WeightId};
use crate::quantize::Quantization;
use hass_proto as pb;
use std::collections::HashMap;

/// The artifact bytes for `graph`, compiled for `board`, with each layer's hardware from
/// `hardware` (layers it does not name get no parallelism), on the fixed-point datapath
/// when `quantization` is given. Same inputs, same bytes.
pub fn emit(
    graph: &Graph,
    board: &Board,
    hardware: &HashMap<NodeId, LayerHardware>,
    quantization: Option<&Quantization>,
) -> Result<Vec<u8>> {
    let (schedule, weights) = lower(graph, board, hardware, quantization)?;
    Ok(pb::encode(&schedule, &weights))
}

fn folding(hw: Option<&LayerHardware>) -> pb::Folding {
    let Some(hw) = hw else {
        return pb::Folding { coarse_in: 1, coarse_out: 1, coarse_group: 1, fine: 1, spatial: 1, ..Default::default() };
    };
    let f = hw.folding;
    pb::Folding {
        coarse_in: f.coarse_in as u32,
        coarse_out: f.coarse_out as u32,
        coarse_group: f.coarse_group as u32,
        fine: f.fine as u32,
        spatial: f.spatial as u32,
        channel_stream: hw.channel_stream.clone(),
        placement: match hw.placement {
            Placement::Bram => pb::WeightPlacement::Bram,
            Placement::Uram => pb::WeightPlacement::Uram,
            Placement::OffChip => pb::WeightPlacement::OffChip,
        } as i32,
        partition: hw.partition,
        sparse: hw.sparse,
    }
}

/// The schedule and weights section for `graph`.
pub fn lower(
    graph: &Graph,
    board: &Board,
    hardware: &HashMap<NodeId, LayerHardware>,
    quantization: Option<&Quantization>,
) -> Result<(pb::Schedule, Vec<u8>)> {
    let mut writer = pb::WeightsWriter::default();
    let layers_in_order = graph.layers();
    let mut value_of: HashMap<_, u32> = HashMap::from([(graph.input, 0)]);
    let mut layers = Vec::with_capacity(layers_in_order.len());
    for (i, &id) in layers_in_order.iter().enumerate() {
        let node = graph.node(id);
        let inputs = graph.inputs_of(id).iter().map(|n| value_of[n]).collect();
        let (op, fixed) = match quantization {
            Some(q) => {
                let (op, record) = fixed::lower_op(graph, id, q, &mut writer)?;
                (op, Some(record))
            }
            None => (lower_op(graph, &node.op, graph.shape(id), &mut writer), None),
        };
        layers.push(pb::Layer {
            name: node.name.clone(),
            inputs,
            output: Some(tensor_type(graph.shape(id))),
            folding: Some(folding(hardware.get(&id))),
            fixed,
            op: Some(op),
        });
        value_of.insert(id, i as u32 + 1);
    }
    let schedule = pb::Schedule {
        model: graph.name.clone(),
        producer: format!("hassc {}", env!("CARGO_PKG_VERSION")),
        board: Some(board.to_proto()),
        input: Some(tensor_type(graph.shape(graph.input))),
        layers,
        outputs: graph.outputs.iter().map(|o| value_of[o]).collect(),
        input_format: quantization.map(|q| fixed::format(q.input)),
    };
    Ok((schedule, writer.into_bytes()))
}

fn tensor_type(shape: &[usize]) -> pb::TensorType {
    pb::TensorType { shape: shape.iter().map(|&d| d as u32).collect(), dtype: pb::DataType::F32 as i32 }
}

fn activation(a: Option<Activation>) -> Option<pb::Activation> {
    use pb::activation::Kind;
    a.map(|a| pb::Activation {
        kind: Some(match a {
            Activation::Relu => Kind::Relu(pb::Relu {}),
            Activation::Clip { min, max } => Kind::Clip(pb::Clip { min, max }),
            Activation::HardSigmoid { alpha, beta } => Kind::HardSigmoid(pb::HardSigmoid { alpha, beta }),
            Activation::HardSwish => Kind::HardSwish(pb::HardSwish {}),
            Activation::Sigmoid => Kind::Sigmoid(pb::Sigmoid {}),
        }),
    })
}

fn pads(p: &Padding) -> Vec<u32> {
    match p {
        Padding::Explicit(p) => p.iter().map(|&v| v as u32).collect(),
        _ => unreachable!("infer_shapes resolves auto padding"),
    }
}

fn pair(v: [usize; 2]) -> Vec<u32> {
    v.iter().map(|&d| d as u32).collect()
}

/// The float datapath's layer: float32 weights, in their smallest encoding (biases and
/// per-channel factors dense).
fn lower_op(graph: &Graph, op: &Op, shape: &[usize], w: &mut pb::WeightsWriter) -> pb::layer::Op {
    let push = |w: &mut pb::WeightsWriter, id: WeightId, encoded: bool| {
        let t = graph.weights.tensor(id);
        if encoded {
            w.push_encoded(&t.shape, &t.data)
        } else {
            w.push_f32(&t.shape, &t.data)
        }
    };
    // Conv and Dense outputs have a channel axis (their shape rules say so); others may not.
    let channels = shape.first().copied().unwrap_or(1);
    let with_bias = |w: &mut pb::WeightsWriter, weight: WeightId, bias: Option<WeightId>| {
        let weight = push(w, weight, true);
        let bias = match bias {
            Some(b) => push(w, b, false),
            None => w.push_f32(&[channels], &vec![0.0; channels]),
        };
        (weight, bias)
    };
    let refs = match op {
        Op::Conv(c) => Some(with_bias(w, c.weight, c.bias)),
        Op::Dense(d) => Some(with_bias(w, d.weight, d.bias)),
        Op::ScaleShift(s) => Some((push(w, s.scale, false), push(w, s.shift, false))),
        _ => None,
    };
    layer_op(graph, op, refs)
}

/// The schedule's form of `op`, given its (weight, bias) references where it has weights
/// (ScaleShift: scale, shift).
fn layer_op(graph: &Graph, op: &Op, refs: Option<(pb::WeightRef, pb::WeightRef)>) -> pb::layer::Op {
    use pb::layer::Op as P;
    let (weight_ref, bias) = match refs {
        Some((w, b)) => (Some(w), Some(b)),
        None => (None, None),
    };
    match op {
        Op::Conv(c) => {
            let wt = graph.weights.tensor(c.weight);
            let kernel = vec![wt.shape[2] as u32, wt.shape[3] as u32];
            P::Conv(pb::Conv {
                weight: weight_ref,
                bias,
                kernel,
                stride: pair(c.stride),
                dilation: pair(c.dilation),
                pads: pads(&c.padding),
                groups: c.groups as u32,
                activation: activation(c.activation),
                input_threshold: c.input_threshold,
            })
        }
        Op::Dense(d) => P::Dense(pb::Dense {
            weight: weight_ref,
            bias,
            activation: activation(d.activation),
            input_threshold: d.input_threshold,
        }),
        Op::Pool(p) => P::Pool(pb::Pool {
            kind: match p.kind {
                PoolKind::Max => pb::PoolKind::Max,
                PoolKind::Average => pb::PoolKind::Average,
            } as i32,
            kernel: pair(p.kernel),
            stride: pair(p.stride),
            dilation: pair(p.dilation),
            pads: pads(&p.padding),
            ceil_mode: p.ceil_mode,
            count_include_pad: p.count_include_pad,
        }),
        Op::GlobalAveragePool { .. } => P::GlobalAveragePool(pb::GlobalAveragePool {}),
        Op::Eltwise { kind, activation: a } => P::Eltwise(pb::Eltwise {
            kind: match kind {
                EltwiseKind::Add => pb::EltwiseKind::Add,
                EltwiseKind::Mul => pb::EltwiseKind::Mul,
            } as i32,
            activation: activation(*a),
        }),
        Op::ScaleShift(s) => {
            P::ScaleShift(pb::ScaleShift { scale: weight_ref, shift: bias, activation: activation(s.activation) })
        }
        Op::Activation(a) => P::Activation(activation(Some(*a)).expect("Some in, Some out")),
        Op::Concat { .. } => P::Concat(pb::Concat {}),
        Op::Reshape(_) => P::Reshape(pb::Reshape {}),
        Op::Input { .. } | Op::Identity | Op::BroadcastConst { .. } => {
            unreachable!("not a layer after the pipeline")
        }
    }
}
