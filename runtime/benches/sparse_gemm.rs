//! Where zero-skipping pays: ResNet-18's 3x3 convolutions (one image, stride 1, pad 1, one
//! per stage) run dense (im2col + SGEMM, `conv::accumulate`; and the float path's own
//! kernel, `conv::conv_image`: the direct kernel on maps at least 14 wide, the packed GEMM
//! turned around on 7x7) and with their weights pruned to several densities at random
//! positions (the direct sparse kernel, `sparse_conv`).
//!
//! Then convs with a short fan-in, dense and pruned (`-- "fan-in"`: where zero-skipping
//! starts to pay, `SPARSE_MIN_FAN_IN`).
//!
//! Run single-threaded, as the crossover in `sparse_rows.rs` was measured:
//! `RAYON_NUM_THREADS=1 cargo bench -p hass-runtime --bench sparse_gemm`.

mod common;

use common::on_pool;
use criterion::{criterion_group, criterion_main, Criterion};
use hass_runtime::kernels::conv::{accumulate, conv_image};
use hass_runtime::kernels::sparse::SparseRows;
use hass_runtime::plan::Conv;
use rand::{RngExt, SeedableRng};

/// (channels in and out, map side) of ResNet-18's 3x3 convs, one per stage.
const STAGES: [(usize, usize); 4] = [(64, 56), (128, 28), (256, 14), (512, 7)];
const DENSITIES: [f64; 5] = [0.1, 0.2, 0.3, 0.4, 0.5];

fn bench(c: &mut Criterion) {
    let mut rng = rand::rngs::SmallRng::seed_from_u64(7);
    for (channels, side) in STAGES {
        let input: Vec<f32> = (0..channels * side * side).map(|_| rng.random_range(-1.0..1.0)).collect();
        let weight: Vec<f32> = (0..channels * channels * 9).map(|_| rng.random_range(-1.0..1.0)).collect();
        let mut out = vec![0.0f32; channels * side * side];
        let hw = [side, side];
        let dense = Conv { pads: [1; 4], ..Conv::new(weight.clone(), channels, channels, [3, 3]) };
        c.bench_function(&format!("conv {channels}ch {side}x{side} dense"), |b| {
            b.iter_custom(|iters| on_pool(iters, || accumulate(&dense, &dense.weight, &input, hw, &mut out, hw)))
        });
        c.bench_function(&format!("conv {channels}ch {side}x{side} dense float path"), |b| {
            b.iter_custom(|iters| on_pool(iters, || conv_image(&dense, &input, hw, &mut out, hw, true)))
        });
        for density in DENSITIES {
            let pruned: Vec<f32> =
                weight.iter().map(|&w| if rng.random::<f64>() < density { w } else { 0.0 }).collect();
            let sparse = Conv { sparse_weight: Some(SparseRows::of_dense(&pruned, channels)), ..dense.clone() };
            c.bench_function(&format!("conv {channels}ch {side}x{side} sparse {density}"), |b| {
                b.iter_custom(|iters| on_pool(iters, || accumulate(&sparse, &pruned, &input, hw, &mut out, hw)))
            });
        }
    }
}

/// (channels in and out, map side, kernel, stride) of convs with a short fan-in: a 3x3/2 stem
/// on 3 channels (27), a 3x3 on 8 channels (72), 16 (144) and 32 (288), ResNet-18's 7x7/2
/// stem (147).
const SHORT_FAN_INS: [([usize; 2], usize, usize, usize); 5] =
    [([3, 32], 224, 3, 2), ([8, 32], 112, 3, 1), ([16, 32], 56, 3, 1), ([32, 32], 28, 3, 1), ([3, 64], 224, 7, 2)];

/// Where zero-skipping starts to pay by fan-in (`SPARSE_MIN_FAN_IN`): the float path's own
/// kernel dense, and the direct sparse kernel at 30 and 40 % non-zeros.
fn bench_fan_in(c: &mut Criterion) {
    let mut rng = rand::rngs::SmallRng::seed_from_u64(11);
    for ([c_in, c_out], side, k, s) in SHORT_FAN_INS {
        let input: Vec<f32> = (0..c_in * side * side).map(|_| rng.random_range(-1.0..1.0)).collect();
        let weight: Vec<f32> = (0..c_out * c_in * k * k).map(|_| rng.random_range(-1.0..1.0)).collect();
        let (hw, out_side) = ([side, side], (side + 2 * (k / 2) - k) / s + 1);
        let out_hw = [out_side, out_side];
        let mut out = vec![0.0f32; c_out * out_side * out_side];
        let dense = Conv { pads: [k / 2; 4], stride: [s, s], ..Conv::new(weight.clone(), c_in, c_out, [k, k]) };
        let name = format!("fan-in {} ({c_in} -> {c_out}, {k}x{k}/{s} on {side}x{side})", c_in * k * k);
        c.bench_function(&format!("{name} dense"), |b| {
            b.iter_custom(|iters| on_pool(iters, || conv_image(&dense, &input, hw, &mut out, out_hw, true)))
        });
        for density in [0.3, 0.4] {
            let pruned: Vec<f32> =
                weight.iter().map(|&w| if rng.random::<f64>() < density { w } else { 0.0 }).collect();
            let sparse = Conv { sparse_weight: Some(SparseRows::of_dense(&pruned, c_out)), ..dense.clone() };
            c.bench_function(&format!("{name} sparse {density}"), |b| {
                b.iter_custom(|iters| on_pool(iters, || conv_image(&sparse, &input, hw, &mut out, out_hw, true)))
            });
        }
    }
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(10).measurement_time(std::time::Duration::from_secs(2));
    targets = bench, bench_fan_in
}
criterion_main!(benches);
