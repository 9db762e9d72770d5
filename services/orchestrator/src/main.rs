//! `ponder-orchestrator`: a thin shell over the `ponder_orchestrator` library.
use clap::Parser;

fn main() -> anyhow::Result<()> {
    let args = ponder_orchestrator::OrchestratorArgs::parse();
    tokio::runtime::Runtime::new()?.block_on(ponder_orchestrator::run(args))
}
