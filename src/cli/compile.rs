//! `terrafirma compile`: AOT-compile a module for this engine.

use std::path::PathBuf;

use clap::Args;
use terrafirma::config::Config;
use terrafirma::engine::{EngineShape, build_engine};
use terrafirma::prepare::prepare;

#[derive(Args)]
pub struct CompileCommand {
    /// The module: .wasm binary or .wat text
    file: PathBuf,
    /// Output file [default: FILE with extension .cwasm]
    #[arg(short, long)]
    output: Option<PathBuf>,
    /// Compile for the engine of this node config
    #[arg(long)]
    config: Option<PathBuf>,
}

impl CompileCommand {
    pub fn execute(self) -> anyhow::Result<i32> {
        let config = Config::load(self.config.as_deref(), &Default::default())?;
        let bytes = std::fs::read(&self.file).map_err(|e| anyhow::anyhow!("cannot read {}: {e}", self.file.display()))?;
        let prepared = prepare(&bytes)?;
        let engine = build_engine(EngineShape::from_config(&config))?;
        let compiled = engine.precompile_module(&prepared.rewritten)?;
        let output = self.output.unwrap_or_else(|| self.file.with_extension("cwasm"));
        std::fs::write(&output, compiled).map_err(|e| anyhow::anyhow!("cannot write {}: {e}", output.display()))?;
        println!("{} ({}, sha256 {})", output.display(), prepared.abi, prepared.sha256);
        Ok(libc::EXIT_SUCCESS)
    }
}
