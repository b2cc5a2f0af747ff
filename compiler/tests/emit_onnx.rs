//! `--emit-onnx`: the compiled model as standard ONNX, run by tract (the reference executor
//! in tests; `scripts/check_qdq.py` runs onnxruntime on the 16-bit ones, which tract cannot
//! read). Float designs as float ONNX; fixed-point ones as QuantizeLinear/DequantizeLinear
//! pairs.

mod common;

use common::{test_images as images, testdata};
use hassc::board::Board;
use hassc::design::Widths;
use hassc::hw::Precision;
use hassc::quantize::Datapath;
use hassc::sparsity::{LayerKnobs, SparsityConfig};
use hassc::CompileOptions;
use prost::Message;
use std::sync::Arc;

fn compile(model: &str, options: CompileOptions) -> hassc::Compiled {
    let board = Board::resolve("zcu102").unwrap();
    hassc::compile(&common::model(model), &board, &options).unwrap()
}

fn knobs(weight_sparsity: f64, activation_threshold: Option<f32>) -> SparsityConfig {
    SparsityConfig {
        global: LayerKnobs { weight_sparsity: Some(weight_sparsity), activation_threshold, ..LayerKnobs::default() },
        ..SparsityConfig::default()
    }
}

/// tract's outputs on ONNX bytes for `x`.
fn tract_outputs(bytes: &[u8], x: &hass_runtime::Tensor) -> Vec<f32> {
    use tract_onnx::prelude::*;
    let model = tract_onnx::onnx()
        .model_for_read(&mut &bytes[..])
        .unwrap()
        .with_input_fact(0, f32::fact(x.shape()).into())
        .unwrap()
        .into_optimized()
        .unwrap()
        .into_runnable()
        .unwrap();
    let input = tract_ndarray::ArrayD::from_shape_vec(x.shape().to_vec(), x.data().to_vec()).unwrap();
    let out = model.run(tvec!(tract_onnx::prelude::Tensor::from(input).into())).unwrap();
    out[0].to_plain_array_view::<f32>().unwrap().iter().copied().collect()
}

#[test]
fn emitted_onnx_of_the_pruned_thresholded_model_runs_in_tract_like_the_artifact() {
    let x = images(100);
    for model in ["fmnist_cnn_op13", "fmnist_resnet_op13", "fmnist_mobilenet_op18"] {
        // The float datapath: the emitted ONNX is float.
        let options =
            CompileOptions { pruning: knobs(0.7, Some(0.05)), datapath: Datapath::Float, ..Default::default() };
        let c = compile(model, options);
        let ours = hass_runtime::run(&hass_runtime::load_bytes(&c.artifact).unwrap(), &x).unwrap().remove(0);
        let reference = tract_outputs(&c.to_onnx().unwrap(), &x);
        let scale = reference.iter().fold(0f32, |m, v| m.max(v.abs()));
        let worst = ours.data().iter().zip(&reference).map(|(a, b)| (a - b).abs()).fold(0f32, f32::max);
        assert!(worst <= 1e-4 * scale, "{model}: {worst} vs scale {scale}");
    }
}

#[test]
fn emitted_onnx_of_the_unpruned_model_reproduces_the_golden_outputs() {
    let x = images(100);
    let c = compile("fmnist_mobilenet_op13", CompileOptions { datapath: Datapath::Float, ..Default::default() });
    let reference = tract_outputs(&c.to_onnx().unwrap(), &x);
    let golden = hass_runtime::npy::read_f32(&testdata("golden/fmnist_mobilenet_op13.npy")).unwrap();
    let scale = golden.data().iter().fold(0f32, |m, v| m.max(v.abs()));
    for (a, b) in reference.iter().zip(golden.data()) {
        assert!((a - b).abs() <= 1e-4 * scale, "{a} vs {b}");
    }
}

/// The fixed-point design at `bits`, calibrated on 100 training images.
fn fixed(model: &str, bits: u32, pruning: SparsityConfig) -> hassc::Compiled {
    let calib = common::image_range("inputs/fmnist_train_500.npy", 0, 100);
    let precision = Widths::uniform(Precision { weight_bits: bits, activation_bits: bits });
    let options = CompileOptions {
        design: hassc::design::DesignOptions { precision, ..Default::default() },
        calibration: Some(Arc::new(calib)),
        pruning,
        ..Default::default()
    };
    compile(model, options)
}

#[test]
fn emitted_qdq_model_of_an_8_bit_design_computes_what_the_artifact_does() {
    let x = images(200);
    for model in ["fmnist_cnn_op13", "fmnist_resnet_op13", "fmnist_mobilenet_op13"] {
        // Pruned and thresholded too: the knobs and the formats travel together.
        let c = fixed(model, 8, knobs(0.5, Some(0.05)));
        let ours = hass_runtime::run(&hass_runtime::load_bytes(&c.artifact).unwrap(), &x).unwrap().remove(0);
        let reference = tract_outputs(&c.to_onnx().unwrap(), &x);
        // Values of the output format: their step is the smallest gap between them.
        let mut values: Vec<f32> = ours.data().to_vec();
        values.sort_by(f32::total_cmp);
        values.dedup();
        let step = values.windows(2).map(|w| w[1] - w[0]).fold(f32::MAX, f32::min);
        let off = ours.data().iter().zip(&reference).filter(|(a, b)| (*a - *b).abs() > step / 2.0).count();
        // tract sums in float32, exactly for 8-bit operands on these layers; allow a rare tie.
        assert!(off * 1000 <= ours.data().len(), "{model}: {off} of {} outputs differ", ours.data().len());
        let top1 = |v: &[f32]| -> Vec<usize> {
            v.chunks(10).map(|r| (0..10).fold(0, |b, i| if r[i] > r[b] { i } else { b })).collect()
        };
        let same = top1(ours.data()).iter().zip(top1(&reference)).filter(|(a, b)| **a == *b).count();
        assert!(same >= 199, "{model}: top-1 agrees on {same} of 200");
    }
}

#[test]
fn qdq_encoding_follows_the_widths() {
    let decode = |c: &hassc::Compiled| tract_onnx::pb::ModelProto::decode(&c.to_onnx().unwrap()[..]).unwrap();
    let ops = |m: &tract_onnx::pb::ModelProto, op: &str| {
        m.graph.as_ref().unwrap().node.iter().filter(|n| n.op_type == op).count()
    };
    // 16 bits: int16 containers, opset 21; every stream but the pass-through max pools and
    // reshape narrowed once (the input too), every weighted layer dequantized.
    let c = fixed("fmnist_cnn_op13", 16, SparsityConfig::default());
    let m = decode(&c);
    assert_eq!(m.opset_import[0].version, 21);
    // input, c1, c2, fc (two max pools and a reshape pass values on).
    assert_eq!(ops(&m, "QuantizeLinear"), 4);
    assert_eq!(ops(&m, "DequantizeLinear"), 4 + 3);
    assert_eq!(ops(&m, "Clip"), 0, "16-bit formats saturate in their container");
    let int16 = m.graph.as_ref().unwrap().initializer.iter().filter(|t| t.data_type == 5).count();
    assert!(int16 >= 3, "int16 weights");
    // 6 bits: int8 containers at opset 14, saturated to 6 bits by a Clip after each pair.
    let m = decode(&fixed("fmnist_cnn_op13", 6, SparsityConfig::default()));
    assert_eq!(m.opset_import[0].version, 14);
    assert_eq!(ops(&m, "Clip"), 4);
    // The ReLUs' outputs (c1, c2) are never negative: 6 bits of magnitude in uint8; the
    // input and the logits are signed, in int8.
    let zero_points = |m: &tract_onnx::pb::ModelProto| -> Vec<(String, i32)> {
        let inits = &m.graph.as_ref().unwrap().initializer;
        inits.iter().filter(|t| t.name.ends_with("q.zero")).map(|t| (t.name.clone(), t.data_type)).collect()
    };
    let unsigned: Vec<String> = zero_points(&m).into_iter().filter(|z| z.1 == 2).map(|z| z.0).collect();
    assert_eq!(unsigned, ["/c1/c1.0/Conv/out/q.zero", "/c2/c2.0/Conv/out/q.zero"]);
    assert_eq!(zero_points(&m).len(), 4, "{:?}", zero_points(&m));
    // Mixed widths (the search's per-layer choice): opset 21, and every integer in int16,
    // 8-bit ones too, saturated by a Clip (onnxruntime mis-types an int8 pair it moves past
    // the reshape in an opset-21 model, and refuses the model).
    let mut widths = Widths::uniform(Precision::default());
    widths.layers.insert("/c2/c2.0/Conv".into(), Precision { weight_bits: 8, activation_bits: 8 });
    let calib = common::image_range("inputs/fmnist_train_500.npy", 0, 100);
    let design = hassc::design::DesignOptions { precision: widths, ..Default::default() };
    let m = decode(&compile(
        "fmnist_cnn_op13",
        CompileOptions { design, calibration: Some(Arc::new(calib)), ..Default::default() },
    ));
    assert_eq!(m.opset_import[0].version, 21);
    let types: Vec<i32> = m.graph.as_ref().unwrap().initializer.iter().map(|t| t.data_type).collect();
    assert!(types.contains(&5) && !types.contains(&3), "{types:?}");
    assert_eq!(ops(&m, "Clip"), 1, "c2's 8-bit output");
    // The float datapath stays float.
    let c = compile("fmnist_cnn_op13", CompileOptions { datapath: Datapath::Float, ..Default::default() });
    let m = decode(&c);
    assert_eq!((m.opset_import[0].version, ops(&m, "QuantizeLinear")), (14, 0));
}
