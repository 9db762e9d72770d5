//! `ponder-generator`: a thin shell over the `ponder_generator` library.
use clap::Parser;

fn main() -> anyhow::Result<()> {
    let args = ponder_generator::GeneratorArgs::parse();
    ponder_worker::runtime()?.block_on(ponder_generator::run(args))
}
