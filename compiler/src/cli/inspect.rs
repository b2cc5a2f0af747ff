//! `hassc inspect MODEL [--json] [--dot FILE]`.

use anyhow::{Context, Result};
use clap::Args;
use std::path::PathBuf;

#[derive(Args)]
pub struct InspectArgs {
    /// The ONNX model to inspect.
    model: PathBuf,
    /// Print one JSON object instead of a table.
    #[arg(long)]
    json: bool,
    /// Also write the compiled graph as Graphviz DOT to FILE.
    #[arg(long, value_name = "FILE")]
    dot: Option<PathBuf>,
}

pub fn run(args: InspectArgs) -> Result<()> {
    let graph = hassc::load_model(&args.model)?;
    let summary = hassc::report::summarize(&graph);
    if args.json {
        println!("{}", serde_json::to_string_pretty(&summary)?);
    } else {
        print!("{}", summary.to_table());
    }
    if let Some(path) = &args.dot {
        hass_runtime::npy::write_atomic(path, hassc::report::to_dot(&graph).as_bytes())
            .with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(())
}
