//! `ponder-verifier`: a thin shell over the `ponder_verifier` library.

fn main() -> anyhow::Result<()> {
    let args: ponder_verifier::VerifierArgs = ponder_cluster::config::parse();
    ponder_worker::runtime()?.block_on(ponder_verifier::run(args))
}
