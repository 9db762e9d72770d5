//! `ponder-load`: a thin shell over the `ponder_load` library.
use clap::Parser;

fn main() -> anyhow::Result<()> {
    let cli = ponder_load::Cli::parse();
    tokio::runtime::Runtime::new()?.block_on(ponder_load::main(cli))
}
