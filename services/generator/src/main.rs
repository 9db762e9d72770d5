//! `ponder-generator`: a thin shell over the `ponder_generator` library.

fn main() -> anyhow::Result<()> {
    let args: ponder_generator::GeneratorArgs = ponder_cluster::config::parse();
    ponder_worker::runtime()?.block_on(ponder_generator::run(args))
}
