//! `ponder-verifier`: a thin shell over the `ponder_verifier` library.
use clap::Parser;

fn main() -> anyhow::Result<()> {
    let args = ponder_verifier::VerifierArgs::parse();
    ponder_worker::runtime()?.block_on(ponder_verifier::run(args))
}
