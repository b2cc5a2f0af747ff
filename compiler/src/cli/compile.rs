//! `hassc MODEL --target BOARD [-o OUT] [--report R.json]`: compile a model into an artifact
//! and say what the design achieves.

use anyhow::{Context, Result};
use clap::Args;
use hassc::board::Board;
use hassc::design::{check_fraction, DesignOptions, SparsitySource};
use hassc::hw::Precision;
use hassc::search::Allocator;
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
    #[arg(long, value_enum, default_value_t = Allocator::Exact)]
    allocator: Allocator,
    /// Model every conv and fully connected layer with this product sparsity (0 to <1).
    #[arg(long, value_name = "S", conflicts_with = "assume_sparsity_file")]
    assume_sparsity: Option<f64>,
    /// Per-layer product sparsity: a TOML or JSON table of layer name = value.
    #[arg(long, value_name = "FILE")]
    assume_sparsity_file: Option<PathBuf>,
    /// Weight width in bits (16, 8 or 4 per DSP packing).
    #[arg(long, default_value_t = 16, value_parser = clap::value_parser!(u32).range(1..=32))]
    weight_bits: u32,
    /// Activation width in bits.
    #[arg(long, default_value_t = 16, value_parser = clap::value_parser!(u32).range(1..=32))]
    activation_bits: u32,
    /// Batch size for the batched throughput (pipeline fill, reconfiguration).
    #[arg(long, default_value_t = 256, value_parser = clap::value_parser!(u32).range(1..))]
    batch: u32,
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

pub fn run(args: CompileArgs, quiet: bool) -> Result<()> {
    let model = args.model.expect("clap requires it");
    let board = Board::resolve(&args.target.expect("clap requires it"))?;
    let sparsity = match (args.assume_sparsity, &args.assume_sparsity_file) {
        (Some(s), _) => {
            check_fraction("--assume-sparsity", s)?;
            SparsitySource::Uniform(s)
        }
        (None, Some(path)) => SparsitySource::PerLayer(sparsity_file(path)?),
        (None, None) => SparsitySource::Dense,
    };
    let options = DesignOptions {
        allocator: args.allocator,
        precision: Precision { weight_bits: args.weight_bits, activation_bits: args.activation_bits },
        sparsity,
        batch: args.batch as usize,
    };
    let compiled = hassc::compile(&model, &board, &options)?;
    let name = model.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default();
    let report = hassc::report::report(&name, &board, &compiled.design);
    let out = args.output.unwrap_or_else(|| model.with_extension("hass"));
    if let Some(path) = &args.report {
        let json = serde_json::to_string_pretty(&report)? + "\n";
        hass_runtime::npy::write_atomic(path, json.as_bytes())
            .with_context(|| format!("writing {}", path.display()))?;
    }
    hass_runtime::npy::write_atomic(&out, &compiled.artifact).with_context(|| format!("writing {}", out.display()))?;
    if !quiet {
        print!("{}", report.to_table());
        println!("wrote {} ({} bytes)", out.display(), compiled.artifact.len());
    }
    Ok(())
}
