//! Replays the committed fuzz corpora (`fuzz/corpus/<target>/`, grown and minimised by
//! cargo-fuzz, see fuzz/README.md) through the same checks as the fuzz targets, on
//! stable, in the normal test suite: a crash the fuzzer once found stays fixed, and
//! the checks keep compiling against the code they check.

#[path = "../fuzz/src/lib.rs"]
mod check;

use check::Verdict;
use std::path::Path;

fn corpus(target: &str) -> Vec<(String, Vec<u8>)> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fuzz/corpus")
        .join(target);
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_file())
        .map(|p| (p.display().to_string(), std::fs::read(&p).unwrap()))
        .collect();
    files.sort();
    files
}

/// Runs every file; both sides of the validation must be reached, so the corpus is
/// not all noise.
fn replay(target: &str, run: fn(&[u8]) -> Verdict) {
    let files = corpus(target);
    assert!(files.len() >= 5, "{target}: only {} files", files.len());
    let (mut accepted, mut rejected) = (0, 0);
    for (path, bytes) in &files {
        let verdict = std::panic::catch_unwind(|| run(bytes))
            .unwrap_or_else(|_| panic!("{target}: {path} panicked (see above)"));
        match verdict {
            Verdict::Accepted => accepted += 1,
            Verdict::Rejected => rejected += 1,
            Verdict::Undecodable => {}
        }
    }
    assert!(
        accepted > 0 && rejected > 0,
        "{target}: {accepted} accepted, {rejected} rejected of {}",
        files.len()
    );
}

#[test]
fn solve_request_corpus() {
    replay("solve_request", check::solve_request);
}

#[test]
fn worker_requests_corpus() {
    replay("worker_requests", check::worker_requests);
}

/// The hand-written seeds get the verdicts they were written for (the corpus files
/// are renamed by minimisation, so the seeds are checked from their source).
#[test]
fn seeds_get_their_verdicts() {
    for (target, name, bytes, expected) in check::seeds() {
        let got = match target {
            "solve_request" => check::solve_request(&bytes),
            _ => check::worker_requests(&bytes),
        };
        assert_eq!(got, expected, "{target}/{name}");
    }
}
