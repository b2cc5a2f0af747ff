//! Calibration's window tallies (`stats::window_masks`): which taps of each window read a
//! zero, counted per input channel, on ResNet-18's conv shapes (one per kind) over 8 images
//! whose values are zero about half the time, in patches as post-ReLU maps are.
//!
//! Run single-threaded: `RAYON_NUM_THREADS=1 cargo bench -p hass-runtime --bench window_masks`.

mod common;

use common::on_pool;
use criterion::{criterion_group, criterion_main, Criterion};
use hass_runtime::plan::{Conv, Plan};
use hass_runtime::stats::window_masks;
use rand::{RngExt, SeedableRng};

/// (name, input channels, map side, kernel, stride, padding) of ResNet-18's convs.
const SHAPES: [(&str, usize, usize, usize, usize, usize); 5] = [
    ("stem 7x7/2 3ch 224", 3, 224, 7, 2, 3),
    ("3x3/1 64ch 56", 64, 56, 3, 1, 1),
    ("3x3/2 64ch 56", 64, 56, 3, 2, 1),
    ("3x3/1 256ch 14", 256, 14, 3, 1, 1),
    ("1x1/2 128ch 28", 128, 28, 1, 2, 0),
];
const IMAGES: usize = 8;

/// Values that are zero where a smooth random field is negative (patches, as after a
/// ReLU), with some isolated zeros and non-zeros mixed in.
fn activations(rng: &mut rand::rngs::SmallRng, channels: usize, side: usize) -> Vec<f32> {
    let mut out = Vec::with_capacity(IMAGES * channels * side * side);
    for _ in 0..IMAGES * channels {
        let (fy, fx, phase): (f32, f32, f32) =
            (rng.random_range(0.1..0.6), rng.random_range(0.1..0.6), rng.random_range(0.0..6.3));
        for y in 0..side {
            for x in 0..side {
                let field = (fy * y as f32 + phase).sin() + (fx * x as f32).cos() + rng.random_range(-0.6..0.6);
                out.push(if field > 0.0 { field } else { 0.0 });
            }
        }
    }
    out
}

fn bench(c: &mut Criterion) {
    let mut rng = rand::rngs::SmallRng::seed_from_u64(3);
    for (name, channels, side, k, s, p) in SHAPES {
        let conv = Conv { stride: [s, s], pads: [p; 4], ..Conv::new(vec![1.0; channels * k * k], channels, 1, [k, k]) };
        let plan = Plan::one_conv(conv, [side, side]).unwrap();
        let input = activations(&mut rng, channels, side);
        c.bench_function(&format!("window masks {name} x{IMAGES}"), |b| {
            b.iter_custom(|iters| {
                on_pool(iters, || {
                    std::hint::black_box(window_masks(&plan, 0, &input));
                })
            })
        });
    }
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(10).measurement_time(std::time::Duration::from_secs(2));
    targets = bench
}
criterion_main!(benches);
