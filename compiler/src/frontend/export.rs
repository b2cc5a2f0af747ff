//! IR -> ONNX: the compiled (folded, fused, pruned, thresholded) model as standard ONNX, so
//! users can check its accuracy with onnxruntime or tract. Opset 14. An activation threshold
//! becomes `ThresholdedRelu(alpha = T)` on the layer's input: `x if x > T else 0`, which is
//! exactly "values at or below T read as zero".

use crate::ir::{Activation, EltwiseKind, Graph, NodeId, Op, Padding, PoolKind, ReshapeTarget};
use prost::Message;
use std::collections::HashMap;
use tract_onnx::pb;

const OPSET: i64 = 14;

struct Writer<'g> {
    graph: &'g Graph,
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

    fn activation(&mut self, base: &str, x: String, act: Option<Activation>) -> String {
        let Some(act) = act else { return x };
        let name = format!("{base}/{}", act.name());
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

    fn layer(&mut self, id: NodeId) -> Result<String, String> {
        let g = self.graph;
        let node = g.node(id);
        let base = node.name.clone();
        let inputs: Vec<String> = g.inputs_of(id).iter().map(|i| self.names[i].clone()).collect();
        let x = inputs[0].clone();
        let pads = |p: &Padding| match p {
            Padding::Explicit(p) => ints("pads", p),
            _ => unreachable!("infer_shapes resolves auto padding"),
        };
        Ok(match &node.op {
            Op::Conv(c) => {
                let x = self.threshold(&base, x, c.input_threshold);
                let mut ins = vec![x, self.weight(&base, "weight", c.weight)];
                if let Some(b) = c.bias {
                    ins.push(self.weight(&base, "bias", b));
                }
                let attrs = vec![
                    ints("strides", &c.stride),
                    ints("dilations", &c.dilation),
                    pads(&c.padding),
                    int("group", c.groups as i64),
                ];
                let y = self.node("Conv", base.clone(), ins, attrs);
                self.activation(&base, y, c.activation)
            }
            Op::Dense(d) => {
                let x = self.threshold(&base, x, d.input_threshold);
                let mut ins = vec![x, self.weight(&base, "weight", d.weight)];
                if let Some(b) = d.bias {
                    ins.push(self.weight(&base, "bias", b));
                }
                let y = self.node("Gemm", base.clone(), ins, vec![int("transB", 1)]);
                self.activation(&base, y, d.activation)
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
                self.activation(&base, y, *activation)
            }
            Op::ScaleShift(s) => {
                let shape = g.shape(id);
                let mut dims = vec![shape[0]];
                dims.extend(std::iter::repeat_n(1, shape.len() - 1));
                let scale = self.constant(format!("{base}.scale"), &dims, g.weights.tensor(s.scale).data.clone());
                let shift = self.constant(format!("{base}.shift"), &dims, g.weights.tensor(s.shift).data.clone());
                let y = self.node("Mul", format!("{base}/mul"), vec![x, scale], vec![]);
                let y = self.node("Add", base.clone(), vec![y, shift], vec![]);
                self.activation(&base, y, s.activation)
            }
            Op::Activation(a) => self.activation(&base, x, Some(*a)),
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

/// `graph` as ONNX bytes (opset 14, symbolic batch).
pub fn to_onnx(graph: &Graph) -> Result<Vec<u8>, String> {
    use pb::tensor_shape_proto::{dimension::Value, Dimension};
    let mut w = Writer { graph, nodes: Vec::new(), initializers: Vec::new(), names: HashMap::new() };
    w.names.insert(graph.input, "input".to_string());
    for id in graph.layers() {
        let out = w.layer(id)?;
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
        opset_import: vec![pb::OperatorSetIdProto { domain: String::new(), version: OPSET }],
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
