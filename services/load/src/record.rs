//! One line per request (`--records out.jsonl`): when it was meant to be sent, when it
//! was sent and answered, what came back and whether it was right. Every figure of a
//! report is computed from these records alone, so anyone can recompute or re-slice it.
//!
//! Times are seconds from the start of the run (the first intended send).

use serde::{Deserialize, Serialize};
use std::io::{BufRead, Write};
use std::path::Path;

/// The `code` of a request that had not finished when the grace period ended.
pub const UNFINISHED: &str = "UNFINISHED";

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Record {
    pub index: u64,
    /// The rate step of a sweep this request belongs to (sweeps only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub step: Option<u32>,
    /// Sent during the warm-up: excluded from every figure.
    pub warmup: bool,
    /// The mix entry, `strategy:budget`.
    pub class: String,
    pub question: String,
    pub expected: Option<String>,
    /// When the schedule meant to send it (closed loop: when it was sent).
    pub intended_s: f64,
    /// When it was handed to gRPC; absent if it was still waiting for a concurrency slot
    /// when the run ended.
    pub sent_s: Option<f64>,
    /// SolveStream only: when the first event arrived.
    pub first_event_s: Option<f64>,
    /// When the answer or the error arrived.
    pub done_s: Option<f64>,
    /// `done - intended`: what the user of a system at this load waits.
    pub latency_s: Option<f64>,
    /// `done - sent`: the server's part alone (hides queueing in the client).
    pub service_s: Option<f64>,
    /// `first event - intended`.
    pub first_event_latency_s: Option<f64>,
    /// `OK`, a gRPC code name such as `RESOURCE_EXHAUSTED`, or `UNFINISHED`.
    pub code: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub message: String,
    pub answer: Option<String>,
    /// Whether the answer equals the expected one (when both are known).
    pub correct: Option<bool>,
    /// The deadline cut the search short: the answer is the best found by then.
    #[serde(default)]
    pub partial: Option<bool>,
    /// The strategy the server reports it used.
    pub strategy: Option<String>,
    pub generations: Option<u32>,
    pub generator_tokens: Option<u64>,
    pub verifier_tokens: Option<u64>,
    /// The generations the server granted, why, and in which budget mode
    /// (docs/load-adaptive.md); absent from servers before load-adaptive budgets.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub budget_granted: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub budget_reason: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub budget_mode: Option<String>,
}

impl Record {
    pub fn ok(&self) -> bool {
        self.code == "OK"
    }

    /// Generator plus verifier tokens.
    pub fn tokens(&self) -> Option<u64> {
        Some(self.generator_tokens? + self.verifier_tokens?)
    }
}

pub fn write_jsonl(path: &Path, records: &[Record]) -> anyhow::Result<()> {
    let file = std::fs::File::create(path)
        .map_err(|e| anyhow::anyhow!("cannot write --records {}: {e}", path.display()))?;
    let mut w = std::io::BufWriter::new(file);
    for r in records {
        serde_json::to_writer(&mut w, r)?;
        w.write_all(b"\n")?;
    }
    w.flush()?;
    Ok(())
}

pub fn read_jsonl(path: &Path) -> anyhow::Result<Vec<Record>> {
    let file = std::fs::File::open(path)
        .map_err(|e| anyhow::anyhow!("cannot read {}: {e}", path.display()))?;
    std::io::BufReader::new(file)
        .lines()
        .enumerate()
        .filter(|(_, l)| l.as_ref().map_or(true, |l| !l.trim().is_empty()))
        .map(|(n, l)| {
            serde_json::from_str(&l?)
                .map_err(|e| anyhow::anyhow!("{}:{}: {e}", path.display(), n + 1))
        })
        .collect()
}
