//! The `terrafirma` binary: parse the command line, dispatch, exit code.

use std::process::ExitCode;

use clap::Parser;

mod cli;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    let args = cli::Cli::parse();
    match args.command.execute() {
        Ok(code) => code,
        Err(error) => {
            eprintln!("terrafirma: {error:#}");
            ExitCode::FAILURE
        }
    }
}
