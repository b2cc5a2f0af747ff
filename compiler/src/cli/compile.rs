//! `hassc MODEL --target BOARD [-o OUT]`: compile a model into an artifact.

use anyhow::{Context, Result};
use clap::Args;
use hassc::board::Board;
use std::path::PathBuf;

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
}

pub fn run(args: CompileArgs, quiet: bool) -> Result<()> {
    let model = args.model.expect("clap requires it");
    let board = Board::resolve(&args.target.expect("clap requires it"))?;
    let bytes = hassc::compile(&model, &board)?;
    let out = args.output.unwrap_or_else(|| model.with_extension("hass"));
    hass_runtime::npy::write_atomic(&out, &bytes).with_context(|| format!("writing {}", out.display()))?;
    if !quiet {
        println!("wrote {} ({} bytes) for {}", out.display(), bytes.len(), board.device.name);
    }
    Ok(())
}
