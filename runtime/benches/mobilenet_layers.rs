//! The float path's time on mobilenet_v2's and mobilenet_v3_small's kinds of layer, one
//! image each (`conv::conv_image`, bias and ReLU6 included): their depthwise 3x3s and 5x5s,
//! their pointwise 1x1s of short and long `k` and their fully connected classifiers, the
//! layers where it trails onnxruntime most (README, "where the rest goes").
//!
//! `RAYON_NUM_THREADS=1 cargo bench -p hass-runtime --bench mobilenet_layers` (add
//! `HASS_BENCH_COLD=1` for layers that find the caches cold).

mod common;

use common::on_pool;
use criterion::{criterion_group, criterion_main, Criterion};
use hass_runtime::kernels::conv::conv_image;
use hass_runtime::kernels::dense::dense_batch;
use hass_runtime::plan::{Activation, Conv, Dense};
use rand::{RngExt, SeedableRng};

/// (channels in, channels out, input side, stride) of pointwise layers.
const POINTWISE: [(usize, usize, usize, usize); 11] = [
    (16, 96, 112, 1),
    (32, 16, 112, 1),
    (24, 144, 56, 1),
    (144, 24, 56, 1),
    (192, 32, 28, 1),
    (96, 576, 14, 1),
    (384, 64, 14, 1),
    (240, 40, 14, 1),
    (576, 96, 7, 1),
    (16, 16, 56, 1),
    (160, 960, 7, 1),
];
/// (channels, input side, stride, kernel side) of depthwise layers: mobilenet_v2's 3x3s and
/// mobilenet_v3_small's 5x5s.
const DEPTHWISE: [(usize, usize, usize, usize); 10] = [
    (96, 112, 2, 3),
    (144, 56, 1, 3),
    (144, 56, 2, 3),
    (192, 28, 1, 3),
    (192, 28, 2, 3),
    (32, 112, 1, 3),
    (384, 14, 1, 3),
    (960, 7, 1, 3),
    (240, 14, 1, 5),
    (576, 7, 1, 5),
];

fn bench(c: &mut Criterion) {
    let mut rng = rand::rngs::SmallRng::seed_from_u64(7);
    let mut random = |n: usize| -> Vec<f32> { (0..n).map(|_| rng.random_range(-1.0..1.0)).collect() };
    let relu6 = Some(Activation::Clip { min: 0.0, max: 6.0 });
    for (channels, side, stride, kernel) in DEPTHWISE {
        let input = random(channels * side * side);
        let conv = Conv {
            pads: [kernel / 2; 4],
            stride: [stride; 2],
            groups: channels,
            activation: relu6,
            ..Conv::new(random(channels * kernel * kernel), channels, channels, [kernel, kernel])
        };
        let o = side.div_ceil(stride);
        let mut out = vec![0.0f32; channels * o * o];
        c.bench_function(&format!("depthwise {kernel}x{kernel} {channels}ch {side}x{side}/{stride}"), |b| {
            b.iter_custom(|iters| on_pool(iters, || conv_image(&conv, &input, [side, side], &mut out, [o, o], true)))
        });
    }
    for (c_in, c_out, side, stride) in POINTWISE {
        let input = random(c_in * side * side);
        let conv =
            Conv { stride: [stride; 2], activation: relu6, ..Conv::new(random(c_in * c_out), c_in, c_out, [1, 1]) };
        let o = side.div_ceil(stride);
        let mut out = vec![0.0f32; c_out * o * o];
        c.bench_function(&format!("pointwise {c_in}->{c_out} {side}x{side}"), |b| {
            b.iter_custom(|iters| on_pool(iters, || conv_image(&conv, &input, [side, side], &mut out, [o, o], true)))
        });
    }
    // The classifiers: mobilenet_v3_small's two (hardswish between) and mobilenet_v2's one,
    // one image: a stream of their weights.
    for (inputs, outputs) in [(576, 1024), (1024, 1000), (1280, 1000)] {
        let dense = Dense {
            weight: random(inputs * outputs),
            bias: random(outputs),
            inputs,
            outputs,
            activation: None,
            input_threshold: None,
            sparse_weight: None,
        };
        let input = random(inputs);
        let mut out = vec![0.0f32; outputs];
        c.bench_function(&format!("fully connected {inputs}->{outputs}"), |b| {
            b.iter_custom(|iters| on_pool(iters, || dense_batch(&dense, &input, 1, &mut out)))
        });
    }
    // The stem, mobilenet_v2's and mobilenet_v3_small's shape: 3x3/2 from 3 channels of 224x224.
    let input = random(3 * 224 * 224);
    let conv = Conv { pads: [1; 4], stride: [2; 2], activation: relu6, ..Conv::new(random(32 * 27), 3, 32, [3, 3]) };
    let mut out = vec![0.0f32; 32 * 112 * 112];
    c.bench_function("stem 3x3/2 3->32 224x224", |b| {
        b.iter_custom(|iters| on_pool(iters, || conv_image(&conv, &input, [224, 224], &mut out, [112, 112], true)))
    });
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(20).measurement_time(std::time::Duration::from_secs(2));
    targets = bench
}
criterion_main!(benches);
