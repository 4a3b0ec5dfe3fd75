//! Command-line interface: one file per command, each a struct with
//! `execute()`.

mod compile;
mod deploy;
mod run;
mod serve;

use clap::{Args, FromArgMatches, Parser, Subcommand};

#[derive(Parser)]
#[command(name = "terrafirma", version, about = "A serverless WebAssembly edge node")]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

const RUN_ABOUT: &str = "Run a module once: a WASI command, or an HTTP handler with --request";

#[derive(Subcommand)]
pub enum Command {
    /// Run the node.
    Serve(serve::ServeCommand),
    /// Upload a module through the admin API.
    Deploy(deploy::DeployCommand),
    #[command(about = RUN_ABOUT)]
    Run(run::RunCommand),
    /// Compile a module ahead of time for this engine.
    Compile(compile::CompileCommand),
}

impl Command {
    /// The command line, parsed. `terrafirma run` builds only its own
    /// parser: clap building the whole command tree was a tenth of the
    /// instructions of a cached run of a hello world.
    pub fn parse() -> Self {
        let mut args = std::env::args_os().skip(1).peekable();
        if args.peek().is_some_and(|first| first == "run") {
            let parser = run::RunCommand::augment_args(clap::Command::new("run").bin_name("terrafirma run").about(RUN_ABOUT));
            let matches = parser.get_matches_from(args);
            match run::RunCommand::from_arg_matches(&matches) {
                Ok(command) => return Command::Run(command),
                Err(error) => error.exit(),
            }
        }
        Cli::parse().command
    }

    pub fn execute(self) -> anyhow::Result<i32> {
        match self {
            Command::Serve(c) => c.execute(),
            Command::Deploy(c) => c.execute(),
            Command::Run(c) => c.execute(),
            Command::Compile(c) => c.execute(),
        }
    }
}

/// Logs to stderr; `RUST_LOG` overrides the default level.
fn init_logging(default: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let _ = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).with_ansi(ansi).try_init();
}

fn tokio_runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_multi_thread().enable_all().build()?)
}
