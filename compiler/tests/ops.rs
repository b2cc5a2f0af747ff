//! Every supported ONNX op and attribute variant, end to end: a small ONNX model is built
//! here, compiled by hassc, executed by the runtime, and compared with tract running the
//! very same ONNX bytes (the independent reference).

use hass_runtime::Tensor;
use prost::Message;
use tract_onnx::pb;
use tract_onnx::prelude::*;

/// A tiny ONNX graph under construction.
struct Model {
    opset: i64,
    input: Vec<i64>,
    nodes: Vec<pb::NodeProto>,
    inits: Vec<pb::TensorProto>,
    seed: u32,
}

fn attr_ints(name: &str, v: &[i64]) -> pb::AttributeProto {
    pb::AttributeProto { name: name.into(), r#type: 7, ints: v.to_vec(), ..Default::default() }
}
fn attr_int(name: &str, v: i64) -> pb::AttributeProto {
    pb::AttributeProto { name: name.into(), r#type: 2, i: v, ..Default::default() }
}
fn attr_float(name: &str, v: f32) -> pb::AttributeProto {
    pb::AttributeProto { name: name.into(), r#type: 1, f: v, ..Default::default() }
}
fn attr_str(name: &str, v: &str) -> pb::AttributeProto {
    pb::AttributeProto { name: name.into(), r#type: 3, s: v.as_bytes().to_vec(), ..Default::default() }
}

impl Model {
    fn new(opset: i64, input: &[i64]) -> Self {
        Model { opset, input: input.to_vec(), nodes: vec![], inits: vec![], seed: 1 }
    }

    fn node(&mut self, op: &str, inputs: &[&str], output: &str, attrs: Vec<pb::AttributeProto>) -> &mut Self {
        self.nodes.push(pb::NodeProto {
            op_type: op.into(),
            name: format!("{op}_{}", self.nodes.len()),
            input: inputs.iter().map(|s| s.to_string()).collect(),
            output: vec![output.into()],
            attribute: attrs,
            ..Default::default()
        });
        self
    }

    /// A float initializer with deterministic pseudo-random values in [-1, 1).
    fn weight(&mut self, name: &str, dims: &[i64]) -> &mut Self {
        let n: i64 = dims.iter().product();
        let values = (0..n as u32)
            .map(|i| {
                self.seed = self.seed.wrapping_mul(1664525).wrapping_add(1013904223).wrapping_add(i);
                (self.seed >> 9) as f32 / (1u32 << 22) as f32 - 1.0
            })
            .collect();
        self.values(name, dims, values)
    }

    fn values(&mut self, name: &str, dims: &[i64], values: Vec<f32>) -> &mut Self {
        self.inits.push(pb::TensorProto {
            name: name.into(),
            dims: dims.to_vec(),
            data_type: 1,
            float_data: values,
            ..Default::default()
        });
        self
    }

    fn ints(&mut self, name: &str, values: &[i64]) -> &mut Self {
        self.inits.push(pb::TensorProto {
            name: name.into(),
            dims: vec![values.len() as i64],
            data_type: 7,
            int64_data: values.to_vec(),
            ..Default::default()
        });
        self
    }

    fn bytes(&self, output: &str) -> Vec<u8> {
        use pb::tensor_shape_proto::{dimension::Value, Dimension};
        let dims =
            self.input.iter().map(|&d| Dimension { value: Some(Value::DimValue(d)), ..Default::default() }).collect();
        let input = pb::ValueInfoProto {
            name: "x".into(),
            r#type: Some(pb::TypeProto {
                value: Some(pb::type_proto::Value::TensorType(pb::type_proto::Tensor {
                    elem_type: 1,
                    shape: Some(pb::TensorShapeProto { dim: dims }),
                })),
                ..Default::default()
            }),
            ..Default::default()
        };
        let out = pb::ValueInfoProto { name: output.into(), ..Default::default() };
        let graph = pb::GraphProto {
            name: "g".into(),
            node: self.nodes.clone(),
            initializer: self.inits.clone(),
            input: vec![input],
            output: vec![out],
            ..Default::default()
        };
        pb::ModelProto {
            ir_version: 8,
            opset_import: vec![pb::OperatorSetIdProto { domain: String::new(), version: self.opset }],
            graph: Some(graph),
            ..Default::default()
        }
        .encode_to_vec()
    }

    /// Compile with hassc, run with the runtime and with tract; compare. Returns the layer
    /// op names hassc produced, so tests can also check what was folded and fused.
    fn check(&self, output: &str) -> Vec<String> {
        let bytes = self.bytes(output);
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("m.onnx");
        std::fs::write(&path, &bytes).unwrap();

        let graph = hassc::load_model(&path).unwrap_or_else(|e| panic!("hassc: {e}"));
        let ops = hassc::report::summarize(&graph).layers.into_iter().map(|l| l.op).collect();
        let board = hassc::board::Board::resolve("u250").unwrap();
        let plan = hass_runtime::load_bytes(&hassc::backend::emit(&graph, &board, &Default::default(), None).unwrap())
            .unwrap();

        let shape: Vec<usize> = self.input.iter().map(|&d| d as usize).collect();
        let n: usize = shape.iter().product();
        let data: Vec<f32> =
            (0..n as u32).map(|i| ((i.wrapping_mul(2654435761) >> 9) % 2000) as f32 / 500.0 - 2.0).collect();
        let input = Tensor::new(shape.clone(), data.clone()).unwrap();
        let ours = hass_runtime::run(&plan, &input).unwrap().remove(0);
        // The fixed-point datapath at 16 bits, its ranges calibrated on this very input.
        let quantization = hassc::quantize::quantize(&graph, &board, &Default::default(), Some(&input)).unwrap();
        let fixed_plan = hass_runtime::load_bytes(
            &hassc::backend::emit(&graph, &board, &Default::default(), Some(&quantization)).unwrap(),
        )
        .unwrap();
        let fixed = hass_runtime::run(&fixed_plan, &input).unwrap().remove(0);

        let reference = tract_onnx::onnx()
            .model_for_path(&path)
            .unwrap()
            .into_optimized()
            .unwrap()
            .into_runnable()
            .unwrap()
            .run(tvec!(
                tract_onnx::prelude::Tensor::from(tract_ndarray::ArrayD::from_shape_vec(shape, data).unwrap()).into()
            ))
            .unwrap();
        let expected = reference[0].to_plain_array_view::<f32>().unwrap();
        assert_eq!(ours.shape(), expected.shape(), "output shape vs tract");
        let expected: Vec<f32> = expected.iter().copied().collect();
        let scale = expected.iter().fold(1e-6f32, |m, v| m.max(v.abs()));
        for (i, (a, b)) in ours.data().iter().zip(&expected).enumerate() {
            assert!((a - b).abs() <= 1e-4 * scale, "element {i}: hassc {a}, tract {b} (ops {ops:?})");
        }
        // 16-bit values carry 2^-15 of their range; a few roundings and the activation
        // units' approximations stay well within 0.2 % of the largest output.
        for (i, (a, b)) in fixed.data().iter().zip(&expected).enumerate() {
            assert!((a - b).abs() <= 2e-3 * scale, "element {i}: fixed point {a}, tract {b} (ops {ops:?})");
        }
        ops
    }
}

#[test]
fn conv_same_upper_strided_dilated_with_bias() {
    let mut m = Model::new(13, &[2, 3, 11, 11]);
    m.weight("w", &[4, 3, 3, 3]).weight("b", &[4]);
    m.node(
        "Conv",
        &["x", "w", "b"],
        "y",
        vec![attr_str("auto_pad", "SAME_UPPER"), attr_ints("strides", &[2, 2]), attr_ints("dilations", &[1, 1])],
    );
    assert_eq!(m.check("y"), ["Conv"]);
}

#[test]
fn conv_same_lower_and_dilation() {
    let mut m = Model::new(13, &[1, 2, 10, 10]);
    m.weight("w", &[3, 2, 3, 3]);
    m.node(
        "Conv",
        &["x", "w"],
        "y",
        vec![attr_str("auto_pad", "SAME_LOWER"), attr_ints("strides", &[3, 3]), attr_ints("dilations", &[2, 2])],
    );
    m.check("y");
}

#[test]
fn grouped_conv_with_asymmetric_pads() {
    let mut m = Model::new(13, &[1, 4, 9, 8]);
    m.weight("w", &[6, 2, 3, 2]).weight("b", &[6]);
    m.node("Conv", &["x", "w", "b"], "y", vec![attr_int("group", 2), attr_ints("pads", &[0, 1, 2, 1])]);
    m.check("y");
}

#[test]
fn depthwise_conv_then_relu6_from_constant_nodes() {
    let mut m = Model::new(13, &[1, 5, 8, 8]);
    m.weight("w", &[5, 1, 3, 3]);
    m.node(
        "Conv",
        &["x", "w"],
        "c",
        vec![attr_int("group", 5), attr_ints("pads", &[1, 1, 1, 1]), attr_ints("strides", &[2, 2])],
    );
    let scalar = |v: f32| pb::AttributeProto {
        name: "value".into(),
        r#type: 4,
        t: Some(pb::TensorProto { data_type: 1, float_data: vec![v], ..Default::default() }),
        ..Default::default()
    };
    m.node("Constant", &[], "lo", vec![scalar(0.0)]);
    m.node("Constant", &[], "hi", vec![scalar(0.5)]);
    m.node("Clip", &["c", "lo", "hi"], "y", vec![]);
    assert_eq!(m.check("y"), ["Conv+clip"]);
}

#[test]
fn clip_bounds_as_attributes_before_opset_11() {
    let mut m = Model::new(10, &[1, 2, 4, 4]);
    m.node("Clip", &["x"], "y", vec![attr_float("min", -0.5), attr_float("max", 1.0)]);
    assert_eq!(m.check("y"), ["clip"]);
}

#[test]
fn batchnorm_folds_into_conv_and_relu_fuses() {
    let mut m = Model::new(13, &[1, 3, 6, 6]);
    m.weight("w", &[4, 3, 3, 3]).weight("gamma", &[4]).weight("beta", &[4]).weight("mean", &[4]);
    m.values("var", &[4], vec![0.5, 1.0, 1.5, 2.0]);
    m.node("Conv", &["x", "w"], "c", vec![]);
    m.node("BatchNormalization", &["c", "gamma", "beta", "mean", "var"], "bn", vec![attr_float("epsilon", 1e-3)]);
    m.node("Relu", &["bn"], "y", vec![]);
    assert_eq!(m.check("y"), ["Conv+relu"]);
}

#[test]
fn batchnorm_after_an_activation_stays_a_scale_shift() {
    let mut m = Model::new(13, &[1, 3, 6, 6]);
    m.weight("w", &[4, 3, 1, 1]).weight("gamma", &[4]).weight("beta", &[4]).weight("mean", &[4]);
    m.values("var", &[4], vec![0.5, 1.0, 1.5, 2.0]);
    m.node("Conv", &["x", "w"], "c", vec![]);
    m.node("Relu", &["c"], "r", vec![]);
    m.node("BatchNormalization", &["r", "gamma", "beta", "mean", "var"], "y", vec![]);
    assert_eq!(m.check("y"), ["Conv+relu", "ScaleShift"]);
}

#[test]
fn reshape_spelling_a_fixed_batch() {
    let mut m = Model::new(13, &[3, 2, 2, 2]);
    m.weight("w", &[4, 8]).ints("shape", &[3, 8]);
    m.node("Reshape", &["x", "shape"], "f", vec![]);
    m.node("Gemm", &["f", "w"], "y", vec![attr_int("transB", 1)]);
    m.check("y");
}

#[test]
fn gemm_with_alpha_beta_and_untransposed_b() {
    let mut m = Model::new(13, &[3, 2, 3, 3]);
    m.weight("b", &[18, 5]).weight("c", &[1, 5]);
    m.node("Flatten", &["x"], "f", vec![]);
    m.node("Gemm", &["f", "b", "c"], "y", vec![attr_float("alpha", 0.5), attr_float("beta", 2.0)]);
    assert_eq!(m.check("y"), ["Reshape", "Dense"]);
}

#[test]
fn matmul_add_relu_becomes_one_dense_stage() {
    let mut m = Model::new(13, &[2, 4, 2, 2]);
    m.weight("w", &[16, 7]).weight("bias", &[7]).ints("shape", &[0, -1]);
    m.node("Reshape", &["x", "shape"], "f", vec![]);
    m.node("MatMul", &["f", "w"], "mm", vec![]);
    m.node("Add", &["mm", "bias"], "a", vec![]);
    m.node("Relu", &["a"], "y", vec![]);
    assert_eq!(m.check("y"), ["Reshape", "Dense+relu"]);
}

#[test]
fn pools_with_padding_ceil_mode_and_divisor_choices() {
    for (op, extra) in [
        ("MaxPool", vec![attr_ints("pads", &[1, 0, 1, 1]), attr_int("ceil_mode", 1)]),
        ("AveragePool", vec![attr_ints("pads", &[1, 1, 1, 1]), attr_int("count_include_pad", 1)]),
        ("AveragePool", vec![attr_ints("pads", &[1, 1, 0, 0]), attr_int("ceil_mode", 1)]),
    ] {
        let mut m = Model::new(13, &[1, 2, 7, 6]);
        let mut attrs = vec![attr_ints("kernel_shape", &[3, 2]), attr_ints("strides", &[2, 2])];
        attrs.extend(extra);
        m.node(op, &["x"], "y", attrs);
        m.check("y");
    }
}

#[test]
fn reduce_mean_over_h_w_both_opsets_and_keepdims() {
    let mut m = Model::new(13, &[2, 3, 4, 5]);
    m.node("ReduceMean", &["x"], "y", vec![attr_ints("axes", &[2, 3]), attr_int("keepdims", 0)]);
    assert_eq!(m.check("y"), ["GlobalAvgPool"]);
    let mut m = Model::new(18, &[2, 3, 4, 5]);
    m.ints("axes", &[-2, -1]);
    m.node("ReduceMean", &["x", "axes"], "y", vec![]);
    m.check("y");
    let mut m = Model::new(13, &[1, 3, 4, 5]);
    m.node("GlobalAveragePool", &["x"], "y", vec![]);
    m.check("y");
}

#[test]
fn concat_of_two_branches_on_channels() {
    let mut m = Model::new(13, &[1, 2, 5, 5]);
    m.weight("w1", &[3, 2, 1, 1]).weight("w2", &[4, 2, 3, 3]);
    m.node("Conv", &["x", "w1"], "a", vec![]);
    m.node("Conv", &["x", "w2"], "b", vec![attr_ints("pads", &[1, 1, 1, 1])]);
    m.node("Concat", &["a", "b"], "y", vec![attr_int("axis", 1)]);
    m.check("y");
}

#[test]
fn squeeze_excite_gate_and_hardswish_spellings() {
    // opset 13: HardSwish is x * HardSigmoid(x, 1/6, 1/2); the gate is a per-channel Mul.
    let mut m = Model::new(13, &[1, 4, 6, 6]);
    m.weight("w", &[4, 4, 1, 1]).weight("b", &[4]);
    m.node("HardSigmoid", &["x"], "hs", vec![attr_float("alpha", 1.0 / 6.0), attr_float("beta", 0.5)]);
    m.node("Mul", &["x", "hs"], "hswish", vec![]);
    m.node("GlobalAveragePool", &["hswish"], "g", vec![]);
    m.node("Conv", &["g", "w", "b"], "s", vec![]);
    m.node("Sigmoid", &["s"], "gate", vec![]);
    m.node("Mul", &["gate", "hswish"], "y", vec![]);
    assert_eq!(m.check("y"), ["hardswish", "GlobalAvgPool", "Conv+sigmoid", "Mul"]);
    // opset 14+: HardSwish is one op.
    let mut m = Model::new(14, &[1, 4, 6, 6]);
    m.node("HardSwish", &["x"], "y", vec![]);
    m.check("y");
}

#[test]
fn residual_add_with_relu_and_constant_affines() {
    let mut m = Model::new(13, &[1, 3, 5, 5]);
    m.weight("w", &[3, 3, 3, 3]).values("two", &[], vec![2.0]).weight("shift", &[1, 3, 1, 1]);
    m.node("Conv", &["x", "w"], "c", vec![attr_ints("pads", &[1, 1, 1, 1])]);
    m.node("Add", &["c", "x"], "sum", vec![]);
    m.node("Relu", &["sum"], "r", vec![]);
    m.node("Mul", &["two", "r"], "scaled", vec![]);
    m.node("Add", &["scaled", "shift"], "y", vec![]);
    assert_eq!(m.check("y"), ["Conv", "Add+relu", "ScaleShift", "ScaleShift"]);
}

#[test]
fn identity_and_dropout_vanish() {
    let mut m = Model::new(13, &[1, 2, 4, 4]);
    m.node("Identity", &["x"], "i", vec![]);
    m.node("Relu", &["i"], "r", vec![]);
    m.node("Dropout", &["r"], "y", vec![]);
    assert_eq!(m.check("y"), ["relu"]);
}

#[test]
fn unsupported_uses_of_supported_ops_name_the_node() {
    let dir = tempfile::tempdir().unwrap();
    let compile = |m: &Model| {
        let path = dir.path().join("m.onnx");
        std::fs::write(&path, m.bytes("y")).unwrap();
        hassc::load_model(&path).unwrap_err().to_string()
    };
    let mut m = Model::new(13, &[1, 2, 4, 4]);
    m.weight("w", &[2, 2, 3]);
    m.node("Conv", &["x", "w"], "y", vec![]);
    assert!(compile(&m).contains("only 2-D convolutions"));
    let mut m = Model::new(13, &[1, 2, 4, 4]);
    m.weight("map", &[4, 4]);
    m.node("Add", &["x", "map"], "y", vec![]);
    let err = compile(&m);
    assert!(err.contains("Add_0") && err.contains("per-channel"), "{err}");
    let mut m = Model::new(13, &[1, 2, 4, 4]);
    m.node("Concat", &["x", "x"], "y", vec![attr_int("axis", 2)]);
    assert!(compile(&m).contains("only along channels"));
    let m = Model::new(21, &[1, 2, 4, 4]);
    assert!(compile(&m).contains("opset 21 is not supported"));
}

/// Models onnxruntime refuses, or that hold values the accelerator cannot represent, are
/// refused with one line naming the node or tensor (issue 11).
#[test]
fn invalid_models_are_refused_naming_the_culprit() {
    let dir = tempfile::tempdir().unwrap();
    let compile = |m: &Model| {
        let path = dir.path().join("m.onnx");
        std::fs::write(&path, m.bytes("y")).unwrap();
        hassc::load_model(&path).unwrap_err().to_string()
    };
    let bn = |m: &mut Model, var: Vec<f32>, attrs| {
        m.weight("g", &[2]).weight("b", &[2]).weight("mean", &[2]).values("var", &[2], var);
        m.node("BatchNormalization", &["x", "g", "b", "mean", "var"], "y", attrs);
    };
    let mut m = Model::new(15, &[1, 2, 4, 4]);
    bn(&mut m, vec![1.0, 1.0], vec![attr_int("training_mode", 1)]);
    assert!(compile(&m).contains("training_mode=1"), "{}", compile(&m));
    let mut m = Model::new(13, &[1, 2, 4, 4]);
    bn(&mut m, vec![1.0, -2.0], vec![]);
    let err = compile(&m);
    assert!(err.contains("BatchNormalization_0") && err.contains("variance + epsilon of channel 1"), "{err}");

    let mut m = Model::new(13, &[1, 2, 4, 4]);
    m.values("w", &[2, 2, 1, 1], vec![1.0, f32::NAN, 0.0, 1.0]);
    m.node("Conv", &["x", "w"], "y", vec![]);
    assert!(compile(&m).contains("tensor w holds NaN at index 1"), "{}", compile(&m));

    let mut m = Model::new(13, &[1, 2, 4, 4]);
    m.weight("w", &[2, 2, 3, 3]);
    m.node("Conv", &["x", "w"], "y", vec![attr_str("auto_pad", "SAME_UPPER"), attr_ints("pads", &[1, 1, 1, 1])]);
    assert!(compile(&m).contains("sets both auto_pad and pads"), "{}", compile(&m));

    let mut m = Model::new(13, &[1, 2, 4, 4]);
    m.node("Relu", &["x"], "h", vec![]).node("Relu", &["h"], "y", vec![]);
    m.nodes[1].name = m.nodes[0].name.clone();
    assert!(compile(&m).contains("Relu_0") && compile(&m).contains("same name"), "{}", compile(&m));
    let mut m = Model::new(13, &[1, 2, 4, 4]);
    m.node("Relu", &["x"], "y", vec![]).node("Sigmoid", &["x"], "y", vec![]);
    assert!(compile(&m).contains("its output \"y\" is already defined"), "{}", compile(&m));
}

/// Graph inputs onnxruntime refuses are refused, not ignored: a second real input, a name
/// declared twice, and an initializer-backed input whose declaration contradicts it.
#[test]
fn contradictory_graph_inputs_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let mut m = Model::new(13, &[1, 2, 4, 4]);
    m.weight("w", &[2, 2, 1, 1]).node("Conv", &["x", "w"], "y", vec![]);
    let compile = |edit: &dyn Fn(&mut pb::GraphProto)| {
        let mut model = pb::ModelProto::decode(m.bytes("y").as_slice()).unwrap();
        edit(model.graph.as_mut().unwrap());
        let path = dir.path().join("m.onnx");
        std::fs::write(&path, model.encode_to_vec()).unwrap();
        hassc::load_model(&path).map(|_| ()).map_err(|e| e.to_string())
    };
    let declare = |name: &str, elem_type: i32, dims: &[i64]| {
        let mut input = pb::ModelProto::decode(m.bytes("y").as_slice()).unwrap().graph.unwrap().input.remove(0);
        input.name = name.into();
        let Some(pb::type_proto::Value::TensorType(t)) = input.r#type.as_mut().unwrap().value.as_mut() else {
            unreachable!()
        };
        t.elem_type = elem_type;
        t.shape.as_mut().unwrap().dim.truncate(dims.len());
        for (d, &n) in t.shape.as_mut().unwrap().dim.iter_mut().zip(dims) {
            d.value = Some(pb::tensor_shape_proto::dimension::Value::DimValue(n));
        }
        input
    };
    assert_eq!(compile(&|_| ()), Ok(()));
    assert_eq!(compile(&|g| g.input.push(declare("w", 1, &[2, 2, 1, 1]))), Ok(()), "a truthful declaration is fine");

    let err = compile(&|g| g.input.push(declare("z", 1, &[1, 2, 4, 4]))).unwrap_err();
    assert!(err.contains("exactly one input") && err.contains("\"z\""), "{err}");
    let err = compile(&|g| g.input.push(g.input[0].clone())).unwrap_err();
    assert!(err.contains("graph input \"x\" is declared twice"), "{err}");
    let err = compile(&|g| g.input.push(declare("w", 1, &[2, 2, 3, 3]))).unwrap_err();
    assert!(err.contains("graph input \"w\"") && err.contains("[2, 2, 1, 1]"), "{err}");
    let err = compile(&|g| g.input.push(declare("w", 7, &[2, 2, 1, 1]))).unwrap_err();
    assert!(err.contains("graph input \"w\" is declared with element type 7"), "{err}");
}

/// Graphs at the edges of what a pipeline is: a per-image value that is a scalar, and a
/// graph with no stage left once plumbing is removed (found by the ONNX node tests).
#[test]
fn scalar_images_compile_and_empty_pipelines_are_refused() {
    let mut m = Model::new(13, &[3]);
    m.node("Relu", &["x"], "y", vec![]);
    assert_eq!(m.check("y"), vec!["relu"]);
    let board = hassc::board::Board::resolve("zcu102").unwrap();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("m.onnx");
    std::fs::write(&path, m.bytes("y")).unwrap();
    assert!(hassc::compile(&path, &board, &Default::default()).is_ok());
    let mut m = Model::new(13, &[1, 2, 4, 4]);
    m.node("Identity", &["x"], "y", vec![]);
    std::fs::write(&path, m.bytes("y")).unwrap();
    let err = hassc::compile(&path, &board, &Default::default()).err().unwrap().to_string();
    assert!(err.contains("computes nothing"), "{err}");
}
