//! `hassc inspect MODEL [--json] [--dot FILE] [--after PASS]`.

use anyhow::{Context, Result};
use clap::Args;
use std::path::PathBuf;

#[derive(Args)]
pub struct InspectArgs {
    /// The ONNX model (per-layer shapes, parameters, MACs) or `.hass` artifact (per-layer
    /// folding and weight encoding) to inspect.
    model: PathBuf,
    /// Print one JSON object instead of a table.
    #[arg(long)]
    json: bool,
    /// Also write the compiled graph as Graphviz DOT to FILE.
    #[arg(long, value_name = "FILE")]
    dot: Option<PathBuf>,
    /// Print the IR as it stands after PASS (`import` for the graph as imported, before any
    /// pass; then infer_shapes, remove_plumbing, fold_batchnorm, fuse_activation), one node
    /// per line, instead of the table.
    #[arg(long, value_name = "PASS", conflicts_with_all = ["json", "dot"])]
    after: Option<String>,
}

pub fn run(args: InspectArgs) -> Result<()> {
    let bytes = std::fs::read(&args.model).with_context(|| format!("reading {}", args.model.display()))?;
    if bytes.starts_with(&hass_proto::MAGIC) {
        if args.after.is_some() {
            anyhow::bail!("--after shows the IR of an ONNX model; {} is an artifact", args.model.display());
        }
        // The whole artifact is validated first, as the runtime would: inspect shows only
        // what would load.
        hass_runtime::load_bytes(&bytes).with_context(|| format!("reading {}", args.model.display()))?;
        let summary =
            hassc::report::summarize_artifact(&bytes).with_context(|| format!("reading {}", args.model.display()))?;
        if args.json {
            hass_runtime::output::print(format_args!("{}\n", serde_json::to_string_pretty(&summary)?))?;
        } else {
            hass_runtime::output::print(format_args!("{}", summary.to_table()))?;
        }
        return Ok(());
    }
    if let Some(stop) = &args.after {
        hass_runtime::output::print(format_args!("{}", hassc::load_model_after(&args.model, stop)?))?;
        return Ok(());
    }
    let graph = hassc::load_model(&args.model)?;
    let summary = hassc::report::summarize(&graph);
    if args.json {
        hass_runtime::output::print(format_args!("{}\n", serde_json::to_string_pretty(&summary)?))?;
    } else {
        hass_runtime::output::print(format_args!("{}", summary.to_table()))?;
    }
    if let Some(path) = &args.dot {
        let mut files = hass_runtime::output::Outputs::new([&args.model]);
        files.stage(path, hassc::report::to_dot(&graph).as_bytes())?;
        files.commit()?;
    }
    Ok(())
}
