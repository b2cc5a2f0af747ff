//! `hassc MODEL --target BOARD [-o OUT] [--report R.json]`: compile a model into an artifact
//! and say what the design achieves.

use super::values::{AllocatorArg, DatapathArg, FoldingArg, ObjectiveArg, StrategyArg, Switch};
use anyhow::{Context, Result};
use clap::Args;
use hass_runtime::output::Outputs;
use hassc::board::Board;
use hassc::design::{check_fraction, DesignOptions, SparsitySource};
use hassc::search::{SearchOptions, Strategy};
use hassc::sparsity::{LayerKnobs, SparsityConfig};
use hassc::CompileOptions;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

#[derive(Args)]
pub struct CompileArgs {
    /// The ONNX model to compile.
    #[arg(required = true)]
    model: Option<PathBuf>,
    /// Target board: a built-in name (see `hassc boards`) or the path of a board TOML.
    #[arg(long, short, required = true)]
    target: Option<String>,
    /// Where to write the artifact [default: the model's path with extension .hass].
    #[arg(long, short)]
    output: Option<PathBuf>,
    /// Write the design report as JSON to FILE.
    #[arg(long, value_name = "FILE")]
    report: Option<PathBuf>,
    /// Allocator: `exact` searches the initiation interval; `greedy` is fpgaConvNet's rule.
    #[arg(long, value_enum, default_value_t = AllocatorArg::Exact)]
    allocator: AllocatorArg,
    /// Foldings: `any` factor and several pixels per cycle where that pays; `divisors`:
    /// factors that divide the channels and the window, one pixel per cycle (the designs
    /// fpgaConvNet builds, to compare with it at equal folding).
    #[arg(long, value_enum, default_value_t = FoldingArg::Any)]
    folding: FoldingArg,
    /// Model every conv and fully connected layer with this product sparsity (0 to <1).
    #[arg(long, value_name = "S", conflicts_with = "assume_sparsity_file")]
    assume_sparsity: Option<f64>,
    /// Per-layer product sparsity: a TOML or JSON table of layer name = value.
    #[arg(long, value_name = "FILE")]
    assume_sparsity_file: Option<PathBuf>,
    /// Weight width in bits, 2 to 16 (formats per output channel, from the weights' range)
    /// [default: 16, or the --sparsity-config file's global weight_bits].
    #[arg(long, value_parser = clap::value_parser!(u32).range(2..=16))]
    weight_bits: Option<u32>,
    /// Activation width in bits, 2 to 16 (formats per stream, from ranges measured on
    /// --calib) [default: 16, or the --sparsity-config file's global activation_bits].
    #[arg(long, value_parser = clap::value_parser!(u32).range(2..=16))]
    activation_bits: Option<u32>,
    /// The arithmetic the artifact holds: `fixed` is what the accelerator computes at
    /// --weight-bits/--activation-bits; `float` is the float32 reference.
    #[arg(long, value_enum, default_value_t = DatapathArg::Fixed)]
    datapath: DatapathArg,
    /// Batch size for the batched throughput (pipeline fill, reconfiguration).
    #[arg(long, default_value_t = 256, value_parser = clap::value_parser!(u32).range(1..))]
    batch: u32,
    /// Prune every conv and fully connected weight with |w| below T.
    #[arg(long, value_name = "T", conflicts_with = "weight_sparsity")]
    weight_threshold: Option<f32>,
    /// Prune this fraction (0 to <1) of each conv and fully connected layer's weights, the
    /// smallest in magnitude.
    #[arg(long, value_name = "S")]
    weight_sparsity: Option<f64>,
    /// Zero each conv's input where it is at or below T (not the network input).
    #[arg(long, value_name = "T")]
    activation_threshold: Option<f32>,
    /// Per-layer knobs and widths (TOML or JSON): `[layers."NAME"] weight_sparsity = 0.8`,
    /// `weight_bits = 8`, `activation_bits = 8`, ...; they override the global flags. A
    /// file that sets only widths leaves the sparsity search on.
    #[arg(long, value_name = "FILE")]
    sparsity_config: Option<PathBuf>,
    /// Calibration images (float32 NCHW `.npy`, normalised as the model expects): measure
    /// the sparsity that actually occurs and feed it to the hardware model.
    #[arg(long, value_name = "X.npy", conflicts_with_all = ["assume_sparsity", "assume_sparsity_file"])]
    calib: Option<PathBuf>,
    /// Also write the compiled (pruned, thresholded) model as standard ONNX, to check its
    /// accuracy with onnxruntime or tract.
    #[arg(long, value_name = "FILE")]
    emit_onnx: Option<PathBuf>,
    /// Sparsity search over per-layer thresholds: `hass` (the default with --calib and no
    /// pruning or threshold options), `global-greedy` (one global weight and one global
    /// activation threshold, the public predecessor), `uniform` (the same fraction pruned in
    /// every layer, blind to the hardware), or `none`.
    #[arg(long, value_enum, requires_ifs = [("hass", "calib"), ("global-greedy", "calib"), ("uniform", "calib")])]
    search: Option<StrategyArg>,
    /// Class labels of the calibration images (integer `.npy`, one per image): the search
    /// measures top-1 against them; without, top-1 agreement with the dense model.
    #[arg(long, value_name = "Y.npy", requires = "calib")]
    labels: Option<PathBuf>,
    /// Largest top-1 drop the search may accept on the calibration images, in percentage
    /// points.
    #[arg(long, value_name = "POINTS", default_value_t = 1.0)]
    max_accuracy_drop: f64,
    /// What the search maximises.
    #[arg(long, value_enum, default_value_t = ObjectiveArg::Throughput)]
    objective: ObjectiveArg,
    /// Seed of the search's random choices; same inputs and seed give the same artifact.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Stop the search after this many seconds and keep the best design found so far.
    #[arg(long, value_name = "SECONDS")]
    time_budget: Option<f64>,
    /// Stop the search after N evaluations (runs of the network on the calibration images)
    /// and keep the best design found so far: unlike --time-budget, the same N gives the
    /// same design however busy the machine is.
    #[arg(long, value_name = "N")]
    max_evaluations: Option<usize>,
    /// Re-fit pruned layers' kept weights and biases to their dense outputs on the
    /// calibration images (least squares) inside the search: `on` by default for `hass`,
    /// `off` for the baselines.
    #[arg(long, value_enum, value_name = "on|off", requires = "calib")]
    reconstruct: Option<Switch>,
    /// Search each conv and fully connected layer's operand widths (its weights' and the
    /// stream it reads, 12 / 8 / 6 / 4 bits below --weight-bits/--activation-bits) beside
    /// its thresholds: `on` by default for `hass` on the fixed-point datapath.
    #[arg(long, value_enum, value_name = "on|off", requires = "calib")]
    search_widths: Option<Switch>,
    /// Write every design the search evaluated (accuracy drop, throughput, front, chosen)
    /// to FILE.json, and the front's plot beside it as FILE.svg.
    #[arg(long, value_name = "FILE.json", requires = "calib")]
    pareto: Option<PathBuf>,
}

/// The search to run, if any: explicit knobs mean none (a `--sparsity-config` counts even
/// when it sets nothing: the user chose the knobs); otherwise `hass` by default.
fn strategy(args: &CompileArgs, pruning: &SparsityConfig) -> Result<Option<Strategy>> {
    if args.calib.is_none() {
        return Ok(None);
    }
    // A file that sets nothing at all still means "these knobs" (none); one that sets only
    // widths leaves the thresholds to the search.
    let file_sets_knobs = args.sparsity_config.is_some() && (pruning.any() || !pruning.sets_widths());
    match (args.search, pruning.any() || file_sets_knobs) {
        // Explicit knobs and no search: the ordinary compile with those knobs.
        (Some(StrategyArg::None), true) => Ok(None),
        (Some(StrategyArg::None), false) => Ok(Some(Strategy::None)),
        (Some(s), true) => anyhow::bail!(
            "--search {} chooses the thresholds itself: drop the pruning and threshold options, or use --search none",
            s.name()
        ),
        (None, true) => Ok(None),
        (s, false) => Ok(Some(s.map_or(Strategy::Hass, Strategy::from))),
    }
}

/// Longest `--time-budget` (about 31 years): beyond it a duration is no budget at all.
const MAX_TIME_BUDGET_S: f64 = 1e9;

fn search_options(args: &CompileArgs, strategy: Strategy, quiet: bool) -> Result<SearchOptions> {
    if !(args.max_accuracy_drop.is_finite() && (0.0..=100.0).contains(&args.max_accuracy_drop)) {
        anyhow::bail!("--max-accuracy-drop must be between 0 and 100 points, got {}", args.max_accuracy_drop);
    }
    let time_budget = match args.time_budget {
        Some(s) if s > 0.0 && s <= MAX_TIME_BUDGET_S => Some(std::time::Duration::from_secs_f64(s)),
        Some(s) => anyhow::bail!("--time-budget must be a number of seconds above 0 and at most 1e9, got {s}"),
        None => None,
    };
    let max_evaluations = match args.max_evaluations {
        Some(0) => anyhow::bail!("--max-evaluations must be at least 1 (the search's first evaluation), got 0"),
        n => n,
    };
    let labels = args.labels.as_deref().map(hass_runtime::npy::read_labels).transpose()?;
    Ok(SearchOptions {
        strategy,
        objective: args.objective.into(),
        max_accuracy_drop: args.max_accuracy_drop,
        seed: args.seed,
        time_budget,
        max_evaluations,
        labels,
        progress: !quiet,
        reconstruct: match args.reconstruct {
            Some(s) => s == Switch::On,
            None => strategy == Strategy::Hass,
        },
        widths: match (args.search_widths, strategy, args.datapath) {
            (Some(Switch::On), Strategy::Hass, DatapathArg::Fixed) => true,
            (Some(Switch::On), Strategy::Hass, _) => anyhow::bail!(
                "--search-widths on needs the fixed-point datapath: on float32 a narrower width changes no output"
            ),
            (Some(Switch::On), ..) => anyhow::bail!(
                "--search-widths on belongs to --search hass; --search {} keeps one width everywhere (set it with --weight-bits/--activation-bits)",
                args.search.map_or_else(|| "hass".to_string(), |s| s.name())
            ),
            (Some(Switch::Off), ..) => false,
            (None, s, d) => s == Strategy::Hass && d == DatapathArg::Fixed,
        },
    })
}

fn pruning(args: &CompileArgs) -> Result<SparsityConfig> {
    let mut config = match &args.sparsity_config {
        Some(path) => {
            let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
            SparsityConfig::parse(&text, path.extension().is_some_and(|e| e == "json"))
                .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?
        }
        None => SparsityConfig::default(),
    };
    let flags = LayerKnobs {
        weight_threshold: args.weight_threshold,
        weight_sparsity: args.weight_sparsity,
        activation_threshold: args.activation_threshold,
        reconstruct: None,
        weight_bits: args.weight_bits,
        activation_bits: args.activation_bits,
    };
    config.global = flags.or(config.global);
    Ok(config)
}

fn sparsity_file(path: &Path) -> Result<BTreeMap<String, f64>> {
    let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let parsed: Result<BTreeMap<String, f64>> = if path.extension().is_some_and(|e| e == "json") {
        serde_json::from_str(&text).map_err(Into::into)
    } else {
        toml::from_str(&text).map_err(|e: toml::de::Error| anyhow::anyhow!(e.message().to_string()))
    };
    parsed.with_context(|| format!("{}: expected a table of layer name = product sparsity", path.display()))
}

/// The outputs of this compile, each checked against every input before any work is done.
fn output_files(args: &CompileArgs, model: &Path, artifact: &Path) -> Result<Outputs> {
    let target = args.target.as_deref().map(Path::new).filter(|p| p.is_file());
    let inputs = [Some(model), args.calib.as_deref(), args.labels.as_deref(), args.sparsity_config.as_deref()]
        .into_iter()
        .chain([args.assume_sparsity_file.as_deref(), target])
        .flatten();
    let files = Outputs::new(inputs);
    let svg = args.pareto.as_ref().map(|p| p.with_extension("svg"));
    let outputs =
        [Some(artifact), args.report.as_deref(), args.emit_onnx.as_deref(), args.pareto.as_deref(), svg.as_deref()];
    let mut targets = Vec::new();
    for path in outputs.into_iter().flatten() {
        let target = files.check(path)?;
        if targets.contains(&target) {
            anyhow::bail!("{} is named for two outputs; give each output its own file", path.display());
        }
        targets.push(target);
    }
    Ok(files)
}

pub fn run(args: CompileArgs, quiet: bool) -> Result<()> {
    let pruning = pruning(&args)?;
    let model = args.model.clone().expect("clap requires it");
    let board = Board::resolve(args.target.as_deref().expect("clap requires it"))?;
    let sparsity = match (args.assume_sparsity, &args.assume_sparsity_file) {
        (Some(s), _) => {
            check_fraction("--assume-sparsity", s)?;
            SparsitySource::Uniform(s)
        }
        (None, Some(path)) => SparsitySource::PerLayer(sparsity_file(path)?),
        (None, None) => SparsitySource::Dense,
    };
    let calibration = match &args.calib {
        Some(path) => Some(std::sync::Arc::new(hass_runtime::npy::read_f32(path)?)),
        None => None,
    };
    let options = CompileOptions {
        design: DesignOptions {
            allocator: args.allocator.into(),
            folds: args.folding.into(),
            precision: pruning.widths(),
            sparsity,
            batch: args.batch as usize,
        },
        pruning,
        calibration,
        datapath: args.datapath.into(),
    };
    let name = model.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default();
    let out = args.output.clone().unwrap_or_else(|| model.with_extension("hass"));
    let mut files = output_files(&args, &model, &out)?;
    let (compiled, searched) = match strategy(&args, &options.pruning)? {
        Some(s) => {
            let search = search_options(&args, s, quiet)?;
            let (compiled, result) = hassc::compile_searched(&model, &board, &options, &search)?;
            (compiled, Some(result))
        }
        None => {
            if args.pareto.is_some() || args.labels.is_some() {
                anyhow::bail!("--pareto and --labels belong to the sparsity search, which explicit pruning or threshold options turn off");
            }
            (hassc::compile(&model, &board, &options)?, None)
        }
    };
    let mut report = hassc::report::report(&name, &board, &compiled.design);
    report.search = searched.as_ref().map(|r| r.summary.clone());
    report.datapath = compiled.datapath_report();
    if let (Some(path), Some(result)) = (&args.pareto, &searched) {
        let sample = result.summary.sample();
        let json =
            serde_json::to_string_pretty(&hassc::search::pareto::to_json(&name, &result.points, &sample))? + "\n";
        let svg = hassc::search::pareto::to_svg(&name, &result.points, &sample)
            .map_err(|e| anyhow::anyhow!("drawing the Pareto plot: {e}"))?;
        files.stage(path, json.as_bytes())?;
        files.stage(&path.with_extension("svg"), svg.as_bytes())?;
    }
    if let Some(path) = &args.report {
        files.stage(path, (serde_json::to_string_pretty(&report)? + "\n").as_bytes())?;
    }
    if let Some(path) = &args.emit_onnx {
        files.stage(path, &compiled.to_onnx()?)?;
    }
    files.stage(&out, &compiled.artifact)?;
    // Every file at once: the artifact and its report never disagree.
    files.commit()?;
    if !quiet {
        hass_runtime::output::print(format_args!("{}", report.to_table()))?;
        hass_runtime::output::print(format_args!("wrote {} ({} bytes)\n", out.display(), compiled.artifact.len()))?;
    }
    Ok(())
}
