//! IR -> ONNX: the compiled (folded, fused, pruned, thresholded) model as standard ONNX, so
//! users can check its accuracy with onnxruntime or tract. Float models at opset 14; the
//! fixed-point datapath as QuantizeLinear/DequantizeLinear pairs ([`qdq`]). An activation
//! threshold becomes `ThresholdedRelu(alpha = T)` on the layer's input: `x if x > T else 0`,
//! which is exactly "values at or below T read as zero".

mod qdq;

use crate::ir::{Activation, EltwiseKind, Graph, NodeId, Op, Padding, PoolKind, ReshapeTarget};
use crate::quantize::Quantization;
use hass_proto::fixed::Format;
use prost::Message;
use std::collections::HashMap;
use tract_onnx::pb;

const FLOAT_OPSET: i64 = 14;

struct Writer<'g> {
    graph: &'g Graph,
    /// The fixed-point formats (`None`: a float model).
    q: Option<&'g Quantization>,
    /// The integer container's width, bits (see [`qdq::container_bits`]).
    container: u32,
    nodes: Vec<pb::NodeProto>,
    initializers: Vec<pb::TensorProto>,
    names: HashMap<NodeId, String>,
}

fn ints(name: &str, v: &[usize]) -> pb::AttributeProto {
    pb::AttributeProto {
        name: name.into(),
        r#type: 7,
        ints: v.iter().map(|&x| x as i64).collect(),
        ..Default::default()
    }
}
fn int(name: &str, v: i64) -> pb::AttributeProto {
    pb::AttributeProto { name: name.into(), r#type: 2, i: v, ..Default::default() }
}
fn float(name: &str, v: f32) -> pb::AttributeProto {
    pb::AttributeProto { name: name.into(), r#type: 1, f: v, ..Default::default() }
}

impl Writer<'_> {
    fn node(&mut self, op: &str, name: String, inputs: Vec<String>, attrs: Vec<pb::AttributeProto>) -> String {
        let out = format!("{name}:out");
        self.nodes.push(pb::NodeProto {
            op_type: op.into(),
            name,
            input: inputs,
            output: vec![out.clone()],
            attribute: attrs,
            ..Default::default()
        });
        out
    }

    fn constant(&mut self, name: String, dims: &[usize], values: Vec<f32>) -> String {
        self.initializers.push(pb::TensorProto {
            name: name.clone(),
            dims: dims.iter().map(|&d| d as i64).collect(),
            data_type: 1,
            float_data: values,
            ..Default::default()
        });
        name
    }

    fn int_constant(&mut self, name: String, values: Vec<i64>) -> String {
        self.initializers.push(pb::TensorProto {
            name: name.clone(),
            dims: vec![values.len() as i64],
            data_type: 7,
            int64_data: values,
            ..Default::default()
        });
        name
    }

    /// `x` narrowed to format `f`: rounded half to even and saturated. An `unsigned` stream
    /// (never negative, held in `f` one bit wider than its magnitude) travels in a uint8
    /// container where the others take int8.
    fn narrow(&mut self, base: &str, x: String, f: Format, unsigned: bool) -> String {
        let scale = self.constant(format!("{base}/q.scale"), &[], vec![qdq::step(f.frac)]);
        let zero = format!("{base}/q.zero");
        let unsigned = unsigned && self.container == 8;
        self.initializers.push(qdq::zero_point(zero.clone(), self.container, unsigned));
        let q = self.node("QuantizeLinear", format!("{base}/q"), vec![x, scale.clone(), zero.clone()], vec![]);
        let y = self.node("DequantizeLinear", format!("{base}/dq"), vec![q, scale, zero], vec![]);
        if qdq::fills_container(f, self.container, unsigned) {
            return y;
        }
        let (lo, hi) = qdq::range(f);
        let lo = self.constant(format!("{base}/q.min"), &[], vec![lo]);
        let hi = self.constant(format!("{base}/q.max"), &[], vec![hi]);
        self.node("Clip", format!("{base}/saturate"), vec![y, lo, hi], vec![])
    }

    /// The activation unit, reading `x` narrowed to `pre` where the contract says so; its
    /// gates (HardSigmoid, HardSwish) with the constants the accelerator holds.
    fn activation(&mut self, base: &str, x: String, act: Option<Activation>, pre: Option<Format>) -> String {
        let Some(act) = act else { return x };
        let name = format!("{base}/{}", act.name());
        let x = match pre {
            Some(f) => self.narrow(&format!("{base}/pre"), x, f, false),
            None => x,
        };
        // Any output format will do: the gate's constants depend on the input's only.
        let unit = pre.map(|p| hass_proto::fixed::ActivationUnit::new(Some(act), p, p));
        if let Some((slope, offset)) = unit.and_then(|u| u.gate()) {
            let attrs = vec![float("alpha", slope as f32), float("beta", offset as f32)];
            if act == Activation::HardSwish {
                let gate = self.node("HardSigmoid", format!("{name}/gate"), vec![x.clone()], attrs);
                return self.node("Mul", name, vec![x, gate], vec![]);
            }
            return self.node("HardSigmoid", name, vec![x], attrs);
        }
        match act {
            Activation::Relu => self.node("Relu", name, vec![x], vec![]),
            Activation::Sigmoid => self.node("Sigmoid", name, vec![x], vec![]),
            Activation::HardSwish => self.node("HardSwish", name, vec![x], vec![]),
            Activation::HardSigmoid { alpha, beta } => {
                self.node("HardSigmoid", name, vec![x], vec![float("alpha", alpha), float("beta", beta)])
            }
            Activation::Clip { min, max } => {
                let lo = self.constant(format!("{name}/min"), &[], vec![min]);
                let hi = self.constant(format!("{name}/max"), &[], vec![max]);
                self.node("Clip", name, vec![x, lo, hi], vec![])
            }
        }
    }

    fn threshold(&mut self, base: &str, x: String, t: Option<f32>) -> String {
        match t {
            Some(t) => self.node("ThresholdedRelu", format!("{base}/threshold"), vec![x], vec![float("alpha", t)]),
            None => x,
        }
    }

    fn weight(&mut self, base: &str, what: &str, id: crate::ir::WeightId) -> String {
        let w = self.graph.weights.tensor(id);
        self.constant(format!("{base}.{what}"), &w.shape, w.data.clone())
    }

    /// A Conv's or Gemm's weights and bias: float, or on the fixed-point datapath the
    /// integers the artifact holds behind a per-channel `DequantizeLinear` and the bias's
    /// exact value (to f32).
    fn weights_and_bias(
        &mut self,
        id: NodeId,
        weight: crate::ir::WeightId,
        bias: Option<crate::ir::WeightId>,
    ) -> Vec<String> {
        let g = self.graph;
        let base = g.node(id).name.clone();
        let Some(q) = self.q else {
            let mut names = vec![self.weight(&base, "weight", weight)];
            names.extend(bias.map(|b| self.weight(&base, "bias", b)));
            return names;
        };
        let w = g.weights.tensor(weight);
        let channels = w.shape[0];
        let biases = bias.map(|b| g.weights.tensor(b).data.clone()).unwrap_or_else(|| vec![0.0; channels]);
        let input = q.stream_of(g, g.inputs_of(id)[0]);
        let bits = q.layers[&id].weight_bits;
        let qw = crate::quantize::quantize_weights(&w.data, &biases, channels, bits, input);
        let ints = format!("{base}.weight.int");
        self.initializers.push(qdq::int_tensor(
            ints.clone(),
            &w.shape,
            self.container,
            qw.weights.iter().map(|&v| v as i32).collect(),
        ));
        let steps = qw.formats.iter().map(|f| qdq::step(f.frac)).collect();
        let scale = self.constant(format!("{base}.weight.scale"), &[channels], steps);
        let zero = format!("{base}.weight.zero");
        self.initializers.push(qdq::int_tensor(zero.clone(), &[channels], self.container, vec![0; channels]));
        let weight =
            self.node("DequantizeLinear", format!("{base}.weight"), vec![ints, scale, zero], vec![int("axis", 0)]);
        let exact = qw
            .biases
            .iter()
            .zip(&qw.formats)
            .map(|(&b, f)| (b as f64 * hass_proto::fixed::pow2(-(input.0.frac + f.frac))) as f32)
            .collect();
        let bias = self.constant(format!("{base}.bias"), &[channels], exact);
        vec![weight, bias]
    }

    fn layer(&mut self, id: NodeId) -> Result<String, String> {
        let g = self.graph;
        let node = g.node(id);
        let base = node.name.clone();
        let inputs: Vec<String> = g.inputs_of(id).iter().map(|i| self.names[i].clone()).collect();
        let x = inputs[0].clone();
        let pre = self.q.and_then(|q| q.layers[&id].pre_activation);
        let pads = |p: &Padding| match p {
            Padding::Explicit(p) => ints("pads", p),
            _ => unreachable!("infer_shapes resolves auto padding"),
        };
        Ok(match &node.op {
            Op::Conv(c) => {
                let x = self.threshold(&base, x, c.input_threshold);
                let mut ins = vec![x];
                ins.extend(self.weights_and_bias(id, c.weight, c.bias));
                let attrs = vec![
                    ints("strides", &c.stride),
                    ints("dilations", &c.dilation),
                    pads(&c.padding),
                    int("group", c.groups as i64),
                ];
                let y = self.node("Conv", base.clone(), ins, attrs);
                self.activation(&base, y, c.activation, pre)
            }
            Op::Dense(d) => {
                let x = self.threshold(&base, x, d.input_threshold);
                let mut ins = vec![x];
                ins.extend(self.weights_and_bias(id, d.weight, d.bias));
                let y = self.node("Gemm", base.clone(), ins, vec![int("transB", 1)]);
                self.activation(&base, y, d.activation, pre)
            }
            Op::Pool(p) => {
                let mut attrs = vec![
                    ints("kernel_shape", &p.kernel),
                    ints("strides", &p.stride),
                    pads(&p.padding),
                    int("ceil_mode", p.ceil_mode as i64),
                ];
                let op = match p.kind {
                    PoolKind::Max => {
                        attrs.push(ints("dilations", &p.dilation));
                        "MaxPool"
                    }
                    PoolKind::Average if p.dilation != [1, 1] => {
                        return Err(format!("{base}: dilated average pooling needs opset 19"))
                    }
                    PoolKind::Average => {
                        attrs.push(int("count_include_pad", p.count_include_pad as i64));
                        "AveragePool"
                    }
                };
                self.node(op, base, vec![x], attrs)
            }
            Op::GlobalAveragePool { keep_dims } => {
                let y = self.node("GlobalAveragePool", base.clone(), vec![x], vec![]);
                if *keep_dims {
                    y
                } else {
                    self.node("Flatten", format!("{base}/flatten"), vec![y], vec![])
                }
            }
            Op::Eltwise { kind, activation } => {
                let op = if *kind == EltwiseKind::Add { "Add" } else { "Mul" };
                let y = self.node(op, base.clone(), inputs.clone(), vec![]);
                self.activation(&base, y, *activation, pre)
            }
            Op::ScaleShift(s) => {
                let shape = g.shape(id);
                let mut dims = vec![shape[0]];
                dims.extend(std::iter::repeat_n(1, shape.len() - 1));
                let mut scale = g.weights.tensor(s.scale).data.clone();
                let mut shift = g.weights.tensor(s.shift).data.clone();
                if let Some(q) = self.q {
                    // Per channel, as weights and biases are: the values the artifact holds.
                    let input = q.stream_of(g, g.inputs_of(id)[0]);
                    let bits = q.layers[&id].weight_bits;
                    let qw = crate::quantize::quantize_weights(&scale, &shift, shape[0], bits, input);
                    scale = qw.weights.iter().zip(&qw.formats).map(|(&v, f)| f.to_f64(v) as f32).collect();
                    shift = qw
                        .biases
                        .iter()
                        .zip(&qw.formats)
                        .map(|(&v, f)| f.with_frac(f.frac + input.0.frac).to_f64(v) as f32)
                        .collect();
                }
                let scale = self.constant(format!("{base}.scale"), &dims, scale);
                let shift = self.constant(format!("{base}.shift"), &dims, shift);
                let y = self.node("Mul", format!("{base}/mul"), vec![x, scale], vec![]);
                let y = self.node("Add", base.clone(), vec![y, shift], vec![]);
                self.activation(&base, y, s.activation, pre)
            }
            // A layer of its own reads its input's format, already narrowed.
            Op::Activation(a) => self.activation(&base, x, Some(*a), None),
            Op::Concat { .. } => self.node("Concat", base, inputs.clone(), vec![int("axis", 1)]),
            Op::Reshape(target) => {
                let mut dims = vec![0i64];
                match target {
                    ReshapeTarget::Flatten | ReshapeTarget::FlattenFrom(_) => dims.push(-1),
                    ReshapeTarget::Dims(_) => dims.extend(g.shape(id).iter().map(|&d| d as i64)),
                }
                let shape = self.int_constant(format!("{base}.shape"), dims);
                self.node("Reshape", base, vec![x, shape], vec![])
            }
            Op::Input { .. } | Op::Identity | Op::BroadcastConst { .. } => {
                unreachable!("not a layer after the pipeline")
            }
        })
    }
}

/// `graph` as ONNX bytes (symbolic batch): float at opset 14, or with `q` the fixed-point
/// datapath as QDQ pairs (opset 13 or 21, see [`qdq`]).
pub fn to_onnx(graph: &Graph, q: Option<&Quantization>) -> Result<Vec<u8>, String> {
    use pb::tensor_shape_proto::{dimension::Value, Dimension};
    let container = q.map_or(16, qdq::container_bits);
    let mut w = Writer { graph, q, container, nodes: Vec::new(), initializers: Vec::new(), names: HashMap::new() };
    let input = match q {
        Some(q) => w.narrow("input", "input".into(), q.input, false),
        None => "input".to_string(),
    };
    w.names.insert(graph.input, input);
    for id in graph.layers() {
        let mut out = w.layer(id)?;
        // Every layer narrows to its output format, except those that pass values on.
        let passes_on =
            matches!(graph.node(id).op, Op::Reshape(_) | Op::Pool(crate::ir::Pool { kind: PoolKind::Max, .. }));
        if let (Some(q), false) = (q, passes_on) {
            let formats = q.layers[&id];
            out = w.narrow(&format!("{}/out", graph.node(id).name), out, formats.output, formats.unsigned);
        }
        w.names.insert(id, out);
    }
    let value_info = |name: &str, shape: Option<&[usize]>| {
        let dims = shape.map(|s| {
            std::iter::once(Dimension { value: Some(Value::DimParam("batch".into())), ..Default::default() })
                .chain(s.iter().map(|&d| Dimension { value: Some(Value::DimValue(d as i64)), ..Default::default() }))
                .collect()
        });
        pb::ValueInfoProto {
            name: name.into(),
            r#type: Some(pb::TypeProto {
                value: Some(pb::type_proto::Value::TensorType(pb::type_proto::Tensor {
                    elem_type: 1,
                    shape: dims.map(|dim| pb::TensorShapeProto { dim }),
                })),
                ..Default::default()
            }),
            ..Default::default()
        }
    };
    // Rename the outputs' final values to stable names.
    let mut outputs = Vec::new();
    for (k, o) in graph.outputs.iter().enumerate() {
        let name = format!("output{k}");
        let src = w.names[o].clone();
        w.nodes.push(pb::NodeProto {
            op_type: "Identity".into(),
            name: format!("{name}/identity"),
            input: vec![src],
            output: vec![name.clone()],
            ..Default::default()
        });
        outputs.push(value_info(&name, Some(graph.shape(*o))));
    }
    let model = pb::ModelProto {
        ir_version: 8,
        producer_name: "hassc".into(),
        producer_version: env!("CARGO_PKG_VERSION").into(),
        opset_import: vec![pb::OperatorSetIdProto {
            domain: String::new(),
            version: q.map_or(FLOAT_OPSET, qdq::opset),
        }],
        graph: Some(pb::GraphProto {
            name: graph.name.clone(),
            node: w.nodes,
            initializer: w.initializers,
            input: vec![value_info("input", Some(graph.shape(graph.input)))],
            output: outputs,
            ..Default::default()
        }),
        ..Default::default()
    };
    Ok(model.encode_to_vec())
}
