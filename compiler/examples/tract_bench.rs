//! Reference CPU throughput: tract (optimised plan) on an ONNX model, at batch 1 and 8,
//! measured like `hass-run --bench` (one warm-up run, then N timed runs on a fixed input).
//!
//! `cargo run --release --example tract_bench -- MODEL.onnx N`
//! (used by `scripts/bench_runtime.sh` to print both side by side).

use std::time::Instant;
use tract_onnx::prelude::*;
use tract_onnx::tract_hir::infer::Factoid;

fn main() -> TractResult<()> {
    let mut args = std::env::args().skip(1);
    let (Some(path), Some(runs)) = (args.next(), args.next()) else {
        eprintln!("usage: tract_bench MODEL.onnx RUNS");
        std::process::exit(2);
    };
    let runs: u32 = runs.parse()?;
    let model = tract_onnx::onnx().model_for_path(&path)?;
    let fact = model.input_fact(0)?.clone();
    let dims: Vec<usize> = fact
        .shape
        .dims()
        .skip(1)
        .map(|d| d.concretize().and_then(|d| d.to_i64().ok().map(|v| v as usize)).expect("static image shape"))
        .collect();
    for batch in [1usize, 8] {
        let mut shape = vec![batch];
        shape.extend_from_slice(&dims);
        let plan = tract_onnx::onnx()
            .model_for_path(&path)?
            .with_input_fact(0, f32::fact(&shape).into())?
            .into_optimized()?
            .into_runnable()?;
        let len: usize = shape.iter().product();
        let data: Vec<f32> =
            (0..len).map(|i| ((i.wrapping_mul(2654435761) >> 7) % 2001) as f32 / 1000.0 - 1.0).collect();
        let input: Tensor = tract_ndarray::ArrayD::from_shape_vec(shape.clone(), data)?.into();
        plan.run(tvec!(input.clone().into()))?;
        let (mut total, mut fastest) = (0.0, f64::INFINITY);
        for _ in 0..runs {
            let start = Instant::now();
            plan.run(tvec!(input.clone().into()))?;
            let seconds = start.elapsed().as_secs_f64();
            total += seconds;
            fastest = fastest.min(seconds);
        }
        let (mean, best) = (f64::from(runs) * batch as f64 / total, batch as f64 / fastest);
        // As `hass-run --bench` prints it.
        println!("tract: batch {batch}: {mean:.1} images/s ({runs} runs; best run {best:.1})");
    }
    Ok(())
}
