//! `hassc boards [show NAME]`.

use anyhow::{bail, Result};
use clap::{Args, Subcommand};
use hassc::board::{Board, BUILTIN};

#[derive(Args)]
pub struct BoardsArgs {
    #[command(subcommand)]
    command: Option<BoardsCommand>,
}

#[derive(Subcommand)]
enum BoardsCommand {
    /// Print a built-in board as TOML, to copy and edit.
    Show {
        /// Built-in board name.
        name: String,
    },
}

pub fn run(args: BoardsArgs) -> Result<()> {
    match args.command {
        None => {
            hass_runtime::output::print(format_args!(
                "{:<8}  {:<22}  {:>6}  {:>6}  {:>5}  {:>8}  {:>6}  {:>8}\n",
                "name", "part", "DSP", "BRAM18", "URAM", "LUT", "MHz", "DDR Gbps"
            ))?;
            for (name, text) in BUILTIN {
                let b = Board::parse(text, name)?;
                let (r, s) = (&b.resources, &b.system);
                hass_runtime::output::print(format_args!(
                    "{:<8}  {:<22}  {:>6}  {:>6}  {:>5}  {:>8}  {:>6}  {:>8}\n",
                    name, b.device.part, r.dsp, r.bram18, r.uram, r.lut, s.clock_mhz, s.memory_bandwidth_gbps
                ))?;
            }
        }
        Some(BoardsCommand::Show { name }) => match BUILTIN.iter().find(|(n, _)| *n == name) {
            Some((_, text)) => hass_runtime::output::print(format_args!("{text}"))?,
            None => bail!("no built-in board {name:?}; `hassc boards` lists them"),
        },
    }
    Ok(())
}
