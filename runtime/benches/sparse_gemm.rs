//! Where zero-skipping pays: ResNet-18's 3x3 convolutions (one image, stride 1, pad 1, one
//! per stage) run dense (im2col + SGEMM, `conv::accumulate`; and the float path's own
//! kernel, `conv::conv_image`: the direct kernel on maps at least 14 wide, the packed GEMM
//! turned around on 7x7) and with their weights pruned to several densities at random
//! positions (the direct sparse kernel, `sparse_conv`).
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

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(10).measurement_time(std::time::Duration::from_secs(2));
    targets = bench
}
criterion_main!(benches);
