//! Command-line definitions and dispatch; one file per subcommand.

mod boards;
mod compile;
mod inspect;
mod values;

use clap::{Parser, Subcommand};

/// Compile ONNX CNNs for dataflow FPGA accelerators.
#[derive(Parser)]
#[command(
    name = "hassc",
    version,
    about,
    args_conflicts_with_subcommands = true,
    // `--max-accuracy-drop -1` is a (wrong) value, to be refused as such, not a new flag.
    allow_negative_numbers = true,
    subcommand_negates_reqs = true,
    after_help = "Examples:\n  hassc model.onnx --target u250 -o model.hass\n  hassc inspect model.onnx --json\n  hassc boards show zcu102 > my_board.toml"
)]
pub struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    compile: compile::CompileArgs,
    /// Show pass and search steps (-v info, -vv debug).
    #[arg(short, long, action = clap::ArgAction::Count, global = true)]
    pub verbose: u8,
    /// Print nothing but errors.
    #[arg(short, long, global = true, conflicts_with = "verbose")]
    pub quiet: bool,
}

#[derive(Subcommand)]
enum Command {
    /// Print a per-layer table of a model (op, shapes, parameters, MACs) or an artifact.
    Inspect(inspect::InspectArgs),
    /// List the built-in boards, or print one as TOML.
    Boards(boards::BoardsArgs),
}

/// Set up `tracing` output on stderr for `-v`.
pub fn init_tracing(verbose: u8, quiet: bool) {
    let level = match (quiet, verbose) {
        (true, _) => "error",
        (false, 0) => "warn",
        (false, 1) => "hassc=info",
        (false, _) => "hassc=debug",
    };
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::new(level))
        .with_span_events(tracing_subscriber::fmt::format::FmtSpan::CLOSE)
        .with_writer(std::io::stderr)
        .with_target(false)
        .init();
}

/// Run the chosen command.
pub fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Some(Command::Inspect(args)) => inspect::run(args),
        Some(Command::Boards(args)) => boards::run(args),
        None => compile::run(cli.compile, cli.quiet),
    }
}
