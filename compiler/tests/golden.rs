//! Golden tests: every bundled Fashion-MNIST model, compiled by hassc on the float datapath
//! and executed by the runtime on the 1000 bundled test images, matches onnxruntime's
//! outputs (computed by `scripts/make_fmnist_models.py`) within 1e-4 of the output's
//! largest magnitude, and its top-1 on every image equals the top-1 of the ONNX model run by
//! tract in this test. On the fixed-point datapath (16 bits, ranges calibrated on the 500
//! training images), top-1 agrees with the float model on at least 99.8 % of the test
//! images and no output is off by more than 1 % of the largest.

mod common;

use common::argmax;

use hass_runtime::{npy, Tensor};
use std::path::{Path, PathBuf};
use tract_onnx::prelude::*;

const MODELS: &[&str] = &[
    "fmnist_cnn_op13",
    "fmnist_cnn_op18",
    "fmnist_resnet_op13",
    "fmnist_resnet_op18",
    "fmnist_mobilenet_op13",
    "fmnist_mobilenet_op18",
];

fn testdata() -> PathBuf {
    common::testdata("")
}

/// Top-1 class of every image, by tract on the ONNX file, one image at a time.
fn tract_top1(model: &Path, images: &Tensor) -> Vec<usize> {
    let image_shape = &images.shape()[1..];
    let mut shape = vec![1];
    shape.extend_from_slice(image_shape);
    let plan = tract_onnx::onnx()
        .model_for_path(model)
        .unwrap()
        .with_input_fact(0, f32::fact(&shape).into())
        .unwrap()
        .into_optimized()
        .unwrap()
        .into_runnable()
        .unwrap();
    let per_image: usize = image_shape.iter().product();
    images
        .data()
        .chunks_exact(per_image)
        .map(|image| {
            let input = tract_ndarray::ArrayD::from_shape_vec(shape.clone(), image.to_vec()).unwrap();
            let out = plan.run(tvec!(Tensor_::from(input).into())).unwrap();
            argmax(out[0].to_plain_array_view::<f32>().unwrap().as_slice().unwrap())
        })
        .collect()
}

type Tensor_ = tract_onnx::prelude::Tensor;

fn check(name: &str) {
    check_file(name, &format!("models/{name}.onnx"));
}

/// `model` (relative to testdata/) against the golden outputs of `name`.
fn check_file(name: &str, model: &str) {
    let data = testdata();
    let model = data.join(model);
    let images = npy::read_f32(&data.join("inputs/fmnist_test_1000.npy")).unwrap();
    let golden = npy::read_f32(&data.join(format!("golden/{name}.npy"))).unwrap();

    let board = hassc::board::Board::resolve("zcu102").unwrap();
    let float = hassc::CompileOptions { datapath: hassc::quantize::Datapath::Float, ..Default::default() };
    let bytes = hassc::compile(&model, &board, &float).unwrap().artifact;
    let plan = hass_runtime::load_bytes(&bytes).unwrap();
    let outputs = hass_runtime::run(&plan, &images).unwrap().remove(0);
    assert_eq!(outputs.shape(), golden.shape(), "{name}: output shape");

    let scale = golden.data().iter().fold(0f32, |m, v| m.max(v.abs()));
    let worst = outputs.data().iter().zip(golden.data()).map(|(a, b)| (a - b).abs()).fold(0f32, f32::max);
    assert!(worst <= 1e-4 * scale, "{name}: max |hassc - onnxruntime| = {worst}, allowed {}", 1e-4 * scale);

    let classes = golden.shape()[1];
    let ours: Vec<usize> = outputs.data().chunks_exact(classes).map(argmax).collect();
    let tract = tract_top1(&model, &images);
    let differing: Vec<usize> = (0..ours.len()).filter(|&i| ours[i] != tract[i]).collect();
    assert!(differing.is_empty(), "{name}: top-1 differs from tract on images {differing:?}");

    let calibration = npy::read_f32(&data.join("inputs/fmnist_train_500.npy")).unwrap();
    let fixed_options = hassc::CompileOptions { calibration: Some(calibration.into()), ..Default::default() };
    let fixed_plan =
        hass_runtime::load_bytes(&hassc::compile(&model, &board, &fixed_options).unwrap().artifact).unwrap();
    let fixed = hass_runtime::run(&fixed_plan, &images).unwrap().remove(0);
    let fixed_top1: Vec<usize> = fixed.data().chunks_exact(classes).map(argmax).collect();
    let agreeing = (0..ours.len()).filter(|&i| fixed_top1[i] == ours[i]).count();
    assert!(agreeing * 1000 >= 998 * ours.len(), "{name}: 16-bit top-1 agrees with float on {agreeing} images");
    let scale = outputs.data().iter().fold(0f32, |m, v| m.max(v.abs()));
    let worst = fixed.data().iter().zip(outputs.data()).map(|(a, b)| (a - b).abs()).fold(0f32, f32::max);
    assert!(worst <= 0.01 * scale, "{name}: 16-bit outputs are off by up to {worst} (largest output {scale})");
}

#[test]
fn cnn_opset13() {
    check(MODELS[0]);
}

#[test]
fn cnn_opset18() {
    check(MODELS[1]);
}

#[test]
fn resnet_opset13() {
    check(MODELS[2]);
}

#[test]
fn resnet_opset18() {
    check(MODELS[3]);
}

#[test]
fn mobilenet_opset13() {
    check(MODELS[4]);
}

#[test]
fn mobilenet_opset18() {
    check(MODELS[5]);
}

#[test]
fn weights_in_an_external_data_file() {
    check_file("fmnist_cnn_op18", "models/external/fmnist_cnn_op18_ext.onnx");
}
