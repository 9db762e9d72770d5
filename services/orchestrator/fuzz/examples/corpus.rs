//! Corpus upkeep, run from this folder on stable:
//! - `cargo run --example corpus -- seed` writes the hand-written seeds
//!   (`ponder_orchestrator_fuzz::seeds`) into `corpus/<target>/seed-<name>`, each
//!   checked against its expected verdict first;
//! - `cargo run --example corpus -- verdict <target> FILE...` prints each file's
//!   verdict (`Accepted`, `Rejected` or `Undecodable`) and path, for `cap_corpus.py`.
use ponder_orchestrator_fuzz::{seeds, solve_request, worker_requests, Verdict};
use std::path::Path;

fn run(target: &str, bytes: &[u8]) -> Verdict {
    match target {
        "solve_request" => solve_request(bytes),
        "worker_requests" => worker_requests(bytes),
        other => panic!("unknown target {other:?}"),
    }
}

fn main() -> std::io::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        Some("seed") => {
            let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("corpus");
            for (target, name, bytes, expected) in seeds() {
                assert_eq!(run(target, &bytes), expected, "seed {target}/{name}");
                let dir = root.join(target);
                std::fs::create_dir_all(&dir)?;
                std::fs::write(dir.join(format!("seed-{name}")), &bytes)?;
            }
        }
        Some("verdict") if args.len() >= 2 => {
            for path in &args[2..] {
                println!("{:?} {path}", run(&args[1], &std::fs::read(path)?));
            }
        }
        _ => eprintln!("usage: corpus seed | corpus verdict <target> FILE..."),
    }
    Ok(())
}
