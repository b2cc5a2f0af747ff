//! `hassc`: the command line. Thin: parsing and printing here, work in the library.

mod cli;

use clap::Parser;
use std::process::ExitCode;

fn main() -> ExitCode {
    hass_runtime::memory::keep_freed_memory();
    hass_runtime::output::remove_staged_on_interrupt();
    let args = cli::Cli::parse();
    cli::init_tracing(args.verbose, args.quiet);
    match cli::run(args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
