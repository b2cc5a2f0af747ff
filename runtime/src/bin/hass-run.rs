//! `hass-run`: execute a hassc artifact on the CPU.

use anyhow::{bail, Context, Result};
use clap::Parser;
use hass_runtime::output::Outputs;
use hass_runtime::plan::{Layer, Op};
use hass_runtime::{load_file, npy, run, Plan, Tensor};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

/// Run a compiled `.hass` artifact on the CPU exactly as the accelerator computes it.
#[derive(Parser)]
#[command(
    version,
    about,
    after_help = "Examples:\n  hass-run model.hass --input images.npy --output logits.npy\n  hass-run model.hass --bench 50 --profile"
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
    /// With --bench: then time each layer over the N runs at batch 8 (or --profile-batch)
    /// and print where the time goes, per kind of layer (ms per image, share).
    #[arg(long, requires = "bench")]
    profile: bool,
    /// The batch --profile runs at, every layer over the whole batch (a plain run takes the
    /// layers before a network's pooled tail a few images at a time): large maps at batch 1
    /// stay in the caches that a batch of 8 overflows.
    #[arg(long, value_name = "N", default_value_t = 8, requires = "profile", value_parser = clap::value_parser!(u32).range(1..=1024))]
    profile_batch: u32,
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
    hass_runtime::memory::keep_freed_memory();
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
        hass_runtime::output::print(format_args!(
            "{}: {} image(s) in {seconds:.3} s, output {:?}\n",
            plan.model,
            input.batch(),
            output.shape()
        ))?;
        if args.simulate {
            let sim = hass_runtime::sim::simulate(&plan, &input)?;
            hass_runtime::output::print(format_args!("{}", simulation_table(&sim)))?;
            if let Some(path) = &args.report {
                files.stage(path, simulation_json(&plan, &sim).as_bytes())?;
            }
        }
    }
    files.commit()?;
    for path in [&args.output, &args.report].into_iter().flatten() {
        hass_runtime::output::print(format_args!("wrote {}\n", path.display()))?;
    }
    if let Some(runs) = args.bench {
        if runs == 0 {
            bail!("--bench needs at least 1 run");
        }
        for batch in [1, 8] {
            let (mean, best) = bench(&plan, batch, runs)?;
            hass_runtime::output::print(format_args!(
                "{}: batch {batch}: {mean:.1} images/s ({runs} runs; best run {best:.1})\n",
                plan.model
            ))?;
        }
        if args.profile {
            hass_runtime::output::print(format_args!("{}", profile(&plan, runs, args.profile_batch as usize)?))?;
        }
    }
    Ok(())
}

/// A fixed pseudo-random input batch for the plan.
fn bench_input(plan: &Plan, batch: usize) -> Result<Tensor> {
    let mut shape = vec![batch];
    shape.extend_from_slice(&plan.input_shape);
    let len: usize = shape.iter().product();
    let data = (0..len).map(|i| ((i.wrapping_mul(2654435761) >> 7) % 2001) as f32 / 1000.0 - 1.0).collect();
    Ok(Tensor::new(shape, data)?)
}

/// What kind of layer this is, for the profile: the op, and for convolutions the window,
/// the grouping and the output map (layers of one kind cost alike).
fn layer_kind(plan: &Plan, layer: &Layer) -> String {
    let map = match layer.output_shape.as_slice() {
        [_, h, w] => format!(" -> {h}x{w}"),
        _ => String::new(),
    };
    match &layer.op {
        Op::Conv(c) => {
            let grouping = match c.groups {
                1 => "",
                g if g == c.c_in && g == c.c_out => " depthwise",
                _ => " grouped",
            };
            let [kh, kw] = c.kernel;
            let stride = if c.stride == [1, 1] { String::new() } else { format!("/{}", c.stride[0]) };
            let input = plan.value_shape(layer.inputs[0]);
            format!("conv {kh}x{kw}{stride}{grouping}, {} -> {} channels{map}", input[0], c.c_out)
        }
        Op::Dense(_) => "fully connected".into(),
        Op::Pool(p) => format!("{:?} pool{map}", p.kind).to_lowercase(),
        Op::GlobalAveragePool => "global average pool".into(),
        Op::Eltwise { kind, .. } => format!("element-wise {kind:?}").to_lowercase(),
        Op::ScaleShift { .. } => "scale and shift".into(),
        Op::Activation(_) => "activation".into(),
        Op::Concat => "concat".into(),
        Op::Reshape => "reshape".into(),
    }
}

/// Time each layer over `runs` runs at `batch` and tabulate the time per layer kind.
fn profile(plan: &Plan, runs: u32, batch: usize) -> Result<String> {
    let input = bench_input(plan, batch)?;
    // Per layer, over all runs: each layer's time runs from its call to the next (or to the
    // end of the run).
    let mut seconds = vec![0.0; plan.layers.len()];
    let mut total = 0.0;
    for _ in 0..runs {
        let mut current: Option<(usize, Instant)> = None;
        let start = Instant::now();
        hass_runtime::exec::run_observed(plan, &input, &mut |i, _, _| {
            if let Some((previous, since)) = current.replace((i, Instant::now())) {
                seconds[previous] += since.elapsed().as_secs_f64();
            }
        })?;
        if let Some((last, since)) = current {
            seconds[last] += since.elapsed().as_secs_f64();
        }
        total += start.elapsed().as_secs_f64();
    }
    let mut by_kind: std::collections::HashMap<String, (f64, usize)> = Default::default();
    for (layer, s) in plan.layers.iter().zip(&seconds) {
        let entry = by_kind.entry(layer_kind(plan, layer)).or_default();
        entry.0 += s;
        entry.1 += 1;
    }
    let mut rows: Vec<(String, (f64, usize))> = by_kind.into_iter().collect();
    rows.sort_by(|a, b| b.1 .0.total_cmp(&a.1 .0).then_with(|| a.0.cmp(&b.0)));
    let per_image = |s: f64| 1e3 * s / (f64::from(runs) * batch as f64);
    let width = rows.iter().map(|r| r.0.len()).max().unwrap_or(4).max(4);
    let mut out = format!("{}: time per layer kind, batch {batch}, {runs} runs\n", plan.model);
    out += &format!("{:<width$}  {:>6}  {:>10}  {:>6}\n", "kind", "layers", "ms/image", "share");
    for (kind, (s, n)) in &rows {
        out += &format!("{kind:<width$}  {n:>6}  {:>10.3}  {:>5.1}%\n", per_image(*s), 100.0 * s / total.max(1e-12));
    }
    out += &format!("{:<width$}  {:>6}  {:>10.3}\n", "total", plan.layers.len(), per_image(total));
    Ok(out)
}

/// Images per second over `runs` timed runs after one warm-up, on a fixed pseudo-random
/// input, and in the fastest run (on a shared machine, the least disturbed).
fn bench(plan: &Plan, batch: usize, runs: u32) -> Result<(f64, f64)> {
    let input = bench_input(plan, batch)?;
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
