//! `ponder-orchestrator`: a thin shell over the `ponder_orchestrator` library.

fn main() -> anyhow::Result<()> {
    let args: ponder_orchestrator::OrchestratorArgs = ponder_cluster::config::parse();
    tokio::runtime::Runtime::new()?.block_on(ponder_orchestrator::run(args))
}
