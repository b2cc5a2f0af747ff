//! `hass-run`: execute a hassc artifact on the CPU.

use anyhow::{bail, Context, Result};
use clap::Parser;
use hass_runtime::output::Outputs;
use hass_runtime::{load_file, npy, run, Plan, Tensor};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

/// Run a compiled `.hass` artifact on the CPU exactly as the accelerator computes it.
#[derive(Parser)]
#[command(
    version,
    about,
    after_help = "Examples:\n  hass-run model.hass --input images.npy --output logits.npy\n  hass-run model.hass --bench 50"
)]
struct Args {
    /// The artifact written by `hassc`.
    artifact: PathBuf,
    /// Input batch: float32 `.npy` of shape [N, ...] matching the model's input.
    #[arg(long, required_unless_present = "bench")]
    input: Option<PathBuf>,
    /// Where to write the outputs (`.npy`, float32). Needs --input.
    #[arg(long, requires = "input")]
    output: Option<PathBuf>,
    /// Time N runs at batch 1 and at batch 8 on generated inputs and print images/s, over
    /// all runs and in the fastest.
    #[arg(long, value_name = "N")]
    bench: Option<u32>,
    /// Count, on the --input images, the cycles per image each stage of the modelled
    /// accelerator spends (the artifact's folding, zero-skipping where built sparse), and
    /// the pipeline's interval and images/s.
    #[arg(long, requires = "input")]
    simulate: bool,
    /// With --simulate: write the per-stage cycles as JSON (the compile report's field names).
    #[arg(long, value_name = "SIM.json", requires = "simulate")]
    report: Option<PathBuf>,
}

fn main() -> ExitCode {
    hass_runtime::output::remove_staged_on_interrupt();
    match real_main(Args::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn real_main(args: Args) -> Result<()> {
    let plan = load_file(&args.artifact).with_context(|| format!("loading {}", args.artifact.display()))?;
    let mut files = Outputs::new(std::iter::once(&args.artifact).chain(&args.input));
    // Refuse a bad output before running, not after.
    let targets = [&args.output, &args.report].map(|p| p.as_deref().map(|p| files.check(p)).transpose());
    if let [Ok(Some(output)), Ok(Some(report))] = &targets {
        if output == report {
            bail!("--output and --report name the same file; give each its own");
        }
    }
    for target in targets {
        target?;
    }
    if let Some(input_path) = &args.input {
        let input = npy::read_f32(input_path)?;
        let start = Instant::now();
        let outputs = run(&plan, &input)?;
        let seconds = start.elapsed().as_secs_f64();
        let [output] = <[Tensor; 1]>::try_from(outputs)
            .map_err(|o| anyhow::anyhow!("model has {} outputs; only single-output models can be written", o.len()))?;
        if let Some(path) = &args.output {
            files.stage(path, &npy::to_npy_bytes(&output))?;
        }
        println!("{}: {} image(s) in {seconds:.3} s, output {:?}", plan.model, input.batch(), output.shape());
        if args.simulate {
            let sim = hass_runtime::sim::simulate(&plan, &input)?;
            print!("{}", simulation_table(&sim));
            if let Some(path) = &args.report {
                files.stage(path, simulation_json(&plan, &sim).as_bytes())?;
            }
        }
    }
    files.commit()?;
    for path in [&args.output, &args.report].into_iter().flatten() {
        println!("wrote {}", path.display());
    }
    if let Some(runs) = args.bench {
        if runs == 0 {
            bail!("--bench needs at least 1 run");
        }
        for batch in [1, 8] {
            let (mean, best) = bench(&plan, batch, runs)?;
            println!("{}: batch {batch}: {mean:.1} images/s ({runs} runs; best run {best:.1})", plan.model);
        }
    }
    Ok(())
}

/// Images per second over `runs` timed runs after one warm-up, on a fixed pseudo-random
/// input, and in the fastest run (on a shared machine, the least disturbed).
fn bench(plan: &Plan, batch: usize, runs: u32) -> Result<(f64, f64)> {
    let mut shape = vec![batch];
    shape.extend_from_slice(&plan.input_shape);
    let len: usize = shape.iter().product();
    let data = (0..len).map(|i| ((i.wrapping_mul(2654435761) >> 7) % 2001) as f32 / 1000.0 - 1.0).collect();
    let input = Tensor::new(shape, data)?;
    run(plan, &input)?;
    let (mut total, mut fastest) = (0.0, f64::INFINITY);
    for _ in 0..runs {
        let start = Instant::now();
        run(plan, &input)?;
        let seconds = start.elapsed().as_secs_f64();
        total += seconds;
        fastest = fastest.min(seconds);
    }
    Ok((f64::from(runs) * batch as f64 / total, batch as f64 / fastest))
}

fn simulation_table(sim: &hass_runtime::sim::Simulation) -> String {
    let width = sim.stages.iter().map(|s| s.name.len()).max().unwrap_or(5).clamp(5, 48);
    let mut out = format!("{:<width$}  {:>12}  {:>6}\n", "layer", "cycles", "% II");
    for s in &sim.stages {
        let mark = if s.cycles == sim.ii_cycles { "  <- bottleneck" } else { "" };
        out += &format!("{:<width$}  {:>12.1}  {:>5.1}%{mark}\n", s.name, s.cycles, 100.0 * s.cycles / sim.ii_cycles);
    }
    out += &format!(
        "simulated on {} image(s): II {:.1} cycles, {:.1} images/s\n",
        sim.images, sim.ii_cycles, sim.throughput_fps
    );
    out
}

/// The simulation as JSON with the compile report's field names.
fn simulation_json(plan: &hass_runtime::Plan, sim: &hass_runtime::sim::Simulation) -> String {
    let layers: Vec<serde_json::Value> = sim
        .stages
        .iter()
        .zip(&plan.layers)
        .map(|(s, l)| {
            let h = &l.hardware;
            serde_json::json!({
                "name": s.name,
                "cycles": s.cycles,
                "coarse_in": h.coarse_in,
                "coarse_out": h.coarse_out,
                "coarse_group": h.coarse_group,
                "fine": h.fine,
                "spatial": h.spatial,
                "bottleneck": s.cycles == sim.ii_cycles,
            })
        })
        .collect();
    let report = serde_json::json!({
        "model": plan.model,
        "board": plan.board,
        "clock_mhz": plan.clock_mhz,
        "images": sim.images,
        "ii_cycles": sim.ii_cycles,
        "throughput_fps": sim.throughput_fps,
        "layers": layers,
    });
    serde_json::to_string_pretty(&report).expect("JSON values serialise") + "\n"
}
