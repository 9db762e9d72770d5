//! A recording of real calls: what a generator or verifier node answered, keyed by the
//! content of what it was asked, on disk as JSON lines.
//!
//! Why per sample and per candidate rather than per call: sample `i` of a generate call
//! with seed `s` is the engine's stream `(s, i)` whatever `n` is, and the search seeds
//! its calls by wave, so a run that grants a query fewer generations (load-adaptive
//! budgets) asks for a prefix of the samples a fixed run recorded. Keying each sample by
//! (prompt, sampling parameters, seed, index) lets such a run replay; keying whole calls
//! would not. Scores are keyed per candidate (question and steps) for the same reason:
//! the search batches candidates differently under different budgets.
//!
//! Files of a recording directory: `info.json` (the node's ModelInfo), and one
//! `calls-<instance>.jsonl` per node that recorded into it (lines of [`Line`]).

use ponder_search::{Finish, GenRequest, Sample};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::path::Path;

/// The ModelInfo file of a recording directory.
pub const INFO_FILE: &str = "info.json";
/// The prefix and suffix of its call files.
pub const CALLS_PREFIX: &str = "calls-";
pub const CALLS_SUFFIX: &str = ".jsonl";

/// What the recorded node reported about its model: its ModelInfo answer, less what
/// belongs to an instance.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RecordedInfo {
    /// "generator" or "verifier".
    pub role: String,
    pub model_id: String,
    pub architecture: String,
    pub format: String,
    pub dtype: String,
    pub parameters: u64,
    pub vocab_size: u32,
    pub context_length: u32,
    /// The PRM readout on a verifier; empty on a generator.
    pub prm: String,
    pub max_token_bytes: u32,
    pub prm_prompt_overhead: u64,
    pub prm_step_overhead: u64,
    pub max_samples_per_request: u32,
}

/// One line of a calls file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum Line {
    /// A prompt's length in tokens.
    Prompt { key: String, tokens: u32 },
    /// Sample `index` of a seeded generate call.
    Sample {
        key: String,
        text: String,
        tokens: u32,
        /// "stop", "eos" or "length".
        finish: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        stop: Option<String>,
        logprob: f64,
    },
    /// One candidate's per-step rewards, and its share of its call's PRM tokens.
    Candidate {
        key: String,
        scores: Vec<f32>,
        tokens: u64,
    },
    /// A whole score call's PRM tokens: exact when the same candidates come together
    /// again (the shares are the fallback for another grouping).
    ScoreCall { key: String, tokens: u64 },
}

/// Hex of the first 8 bytes of the SHA-256 of `parts`, each length-prefixed so no two
/// different part lists hash alike by concatenation.
fn digest<'a>(parts: impl IntoIterator<Item = &'a [u8]>) -> String {
    let mut h = Sha256::new();
    for p in parts {
        h.update((p.len() as u64).to_le_bytes());
        h.update(p);
    }
    let d = h.finalize();
    d[..8].iter().map(|b| format!("{b:02x}")).collect()
}

/// The key of a prompt (its token count does not depend on the sampling).
pub fn prompt_key(prompt: &str) -> String {
    digest([b"prompt".as_slice(), prompt.as_bytes()])
}

/// The key of sample `index` of `req`: everything that decides its text.
pub fn sample_key(req: &GenRequest, index: u32) -> String {
    let numbers = [
        u64::from(req.temperature.to_bits()),
        u64::from(req.top_p.to_bits()),
        u64::from(req.top_k),
        u64::from(req.max_tokens),
        req.seed,
        u64::from(index),
    ];
    let numbers: Vec<u8> = numbers.iter().flat_map(|n| n.to_le_bytes()).collect();
    let mut parts: Vec<&[u8]> = vec![b"sample", req.prompt.as_bytes(), &numbers];
    parts.extend(req.stop.iter().map(|s| s.as_bytes()));
    digest(parts)
}

/// The key of a candidate scored for `question`.
pub fn candidate_key(question: &str, steps: &[String]) -> String {
    let mut parts: Vec<&[u8]> = vec![b"candidate", question.as_bytes()];
    parts.extend(steps.iter().map(|s| s.as_bytes()));
    digest(parts)
}

/// The key of a score call: its question and every candidate, in order.
pub fn score_call_key(question: &str, candidates: &[ponder_search::Candidate]) -> String {
    let counts: Vec<u8> = candidates
        .iter()
        .flat_map(|c| (c.steps.len() as u64).to_le_bytes())
        .collect();
    let mut parts: Vec<&[u8]> = vec![b"score_call", question.as_bytes(), &counts];
    parts.extend(
        candidates
            .iter()
            .flat_map(|c| c.steps.iter().map(|s| s.as_bytes())),
    );
    digest(parts)
}

pub fn finish_name(f: Finish) -> &'static str {
    match f {
        Finish::Stop => "stop",
        Finish::Eos => "eos",
        Finish::Length => "length",
    }
}

fn finish_from_name(name: &str) -> Option<Finish> {
    Some(match name {
        "stop" => Finish::Stop,
        "eos" => Finish::Eos,
        "length" => Finish::Length,
        _ => return None,
    })
}

/// A candidate's recorded rewards and PRM tokens.
#[derive(Debug, Clone, PartialEq)]
pub struct ScoredCandidate {
    pub scores: Vec<f32>,
    pub tokens: u64,
}

/// A recording directory, loaded: every answer by key.
#[derive(Debug)]
pub struct Recording {
    pub info: RecordedInfo,
    pub prompts: HashMap<String, u32>,
    pub samples: HashMap<String, Sample>,
    pub candidates: HashMap<String, ScoredCandidate>,
    pub score_calls: HashMap<String, u64>,
    /// Keys recorded twice with different answers (the first is kept). A batch of
    /// different composition can round differently, so a rerun is not always
    /// bit-identical; the count says how often.
    pub conflicts: u64,
}

impl Recording {
    /// Reads `dir`: its `info.json` and every calls file.
    pub fn load(dir: &Path) -> anyhow::Result<Self> {
        let info_path = dir.join(INFO_FILE);
        let info: RecordedInfo =
            serde_json::from_slice(&std::fs::read(&info_path).map_err(|e| {
                anyhow::anyhow!(
                    "{}: {e} (a recording directory holds the info.json and calls-*.jsonl \
                     that a node started with --record-calls wrote)",
                    info_path.display()
                )
            })?)
            .map_err(|e| anyhow::anyhow!("{}: {e}", info_path.display()))?;
        let mut rec = Self {
            info,
            prompts: HashMap::new(),
            samples: HashMap::new(),
            candidates: HashMap::new(),
            score_calls: HashMap::new(),
            conflicts: 0,
        };
        let mut files: Vec<_> = std::fs::read_dir(dir)?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| {
                p.file_name()
                    .and_then(|n| n.to_str())
                    .is_some_and(|n| n.starts_with(CALLS_PREFIX) && n.ends_with(CALLS_SUFFIX))
            })
            .collect();
        files.sort();
        anyhow::ensure!(
            !files.is_empty(),
            "{}: no {CALLS_PREFIX}*{CALLS_SUFFIX} files: nothing was recorded here",
            dir.display()
        );
        for file in files {
            let text = std::fs::read_to_string(&file)?;
            for (n, line) in text.lines().enumerate() {
                if line.trim().is_empty() {
                    continue;
                }
                let parsed: Line = serde_json::from_str(line)
                    .map_err(|e| anyhow::anyhow!("{}:{}: {e}", file.display(), n + 1))?;
                rec.add(parsed)
                    .map_err(|e| anyhow::anyhow!("{}:{}: {e}", file.display(), n + 1))?;
            }
        }
        Ok(rec)
    }

    fn add(&mut self, line: Line) -> anyhow::Result<()> {
        let conflict = match line {
            Line::Prompt { key, tokens } => *self.prompts.entry(key).or_insert(tokens) != tokens,
            Line::Sample {
                key,
                text,
                tokens,
                finish,
                stop,
                logprob,
            } => {
                let finish = finish_from_name(&finish)
                    .ok_or_else(|| anyhow::anyhow!("unknown finish {finish:?}"))?;
                let sample = Sample {
                    text,
                    tokens,
                    finish,
                    stop,
                    logprob,
                };
                let kept = self.samples.entry(key).or_insert_with(|| sample.clone());
                kept.text != sample.text
            }
            Line::Candidate {
                key,
                scores,
                tokens,
            } => {
                let c = ScoredCandidate { scores, tokens };
                // Shares depend on the grouping; only the rewards must agree.
                self.candidates
                    .entry(key)
                    .or_insert_with(|| c.clone())
                    .scores
                    != c.scores
            }
            Line::ScoreCall { key, tokens } => {
                *self.score_calls.entry(key).or_insert(tokens) != tokens
            }
        };
        self.conflicts += u64::from(conflict);
        Ok(())
    }
}

/// The key of the `nth` (from 0) score call of key `call` in a recording: identical calls
/// are recorded once each, since what they cost differs (the verifier's caches).
pub fn numbered_call(call: &str, nth: u32) -> String {
    format!("{call}#{nth}")
}

/// Each candidate's cost bound (`VerifierCost::bound`): what [`token_shares`] splits a
/// call's tokens by.
pub fn candidate_bounds(
    req: &ponder_search::ScoreRequest,
    cost: &ponder_search::traits::VerifierCost,
) -> Vec<u64> {
    req.candidates
        .iter()
        .map(|c| cost.bound(&req.question, &c.steps))
        .collect()
}

/// Splits a call's PRM tokens over its candidates in proportion to each one's cost
/// bound (`bound`), so that the shares add up to `tokens` exactly (largest remainder).
/// The engine does not report tokens per candidate; replaying a candidate in another
/// batch then costs its share.
pub fn token_shares(tokens: u64, bounds: &[u64]) -> Vec<u64> {
    let total: u64 = bounds.iter().sum();
    if total == 0 {
        let each = tokens / bounds.len().max(1) as u64;
        let mut shares = vec![each; bounds.len()];
        if let Some(first) = shares.first_mut() {
            *first += tokens - each * bounds.len() as u64;
        }
        return shares;
    }
    let exact: Vec<f64> = bounds
        .iter()
        .map(|&b| tokens as f64 * b as f64 / total as f64)
        .collect();
    let mut shares: Vec<u64> = exact.iter().map(|x| x.floor() as u64).collect();
    let mut left = tokens - shares.iter().sum::<u64>();
    let mut order: Vec<usize> = (0..bounds.len()).collect();
    order.sort_by(|&a, &b| {
        let fa = exact[a] - exact[a].floor();
        let fb = exact[b] - exact[b].floor();
        fb.total_cmp(&fa).then(a.cmp(&b))
    });
    for i in order {
        if left == 0 {
            break;
        }
        shares[i] += 1;
        left -= 1;
    }
    shares
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(seed: u64) -> GenRequest {
        GenRequest {
            prompt: "Q: 1+2\n".into(),
            n: 4,
            temperature: 0.8,
            top_p: 1.0,
            top_k: 0,
            max_tokens: 64,
            stop: vec!["\n".into()],
            seed,
            affinity: 9,
            deadline: None,
            request_id: "a".into(),
            tenant: 3,
        }
    }

    #[test]
    fn a_sample_key_follows_what_decides_the_text_and_nothing_else() {
        let a = req(1);
        // Routing, tenancy, ids and n do not change sample i's text.
        let mut same = a.clone();
        (same.affinity, same.tenant, same.request_id, same.n) = (1, 1, "b".into(), 64);
        assert_eq!(sample_key(&a, 2), sample_key(&same, 2));
        assert_ne!(sample_key(&a, 2), sample_key(&a, 3));
        assert_ne!(sample_key(&a, 0), sample_key(&req(2), 0));
        let mut hotter = a.clone();
        hotter.temperature = 0.9;
        assert_ne!(sample_key(&a, 0), sample_key(&hotter, 0));
        let mut stops = a.clone();
        stops.stop = vec!["\n\n".into()];
        assert_ne!(sample_key(&a, 0), sample_key(&stops, 0));
        // Length-prefixed parts: moving a byte across a boundary changes the key.
        assert_ne!(
            candidate_key("q", &["ab".into(), "c".into()]),
            candidate_key("q", &["a".into(), "bc".into()])
        );
    }

    #[test]
    fn token_shares_add_up_and_follow_the_bounds() {
        assert_eq!(token_shares(10, &[1, 1]), vec![5, 5]);
        assert_eq!(token_shares(10, &[1, 2]), vec![3, 7]);
        assert_eq!(token_shares(7, &[0, 0, 0]), vec![3, 2, 2]);
        for (t, b) in [(101u64, vec![3u64, 5, 7, 11]), (1, vec![1, 1, 1])] {
            assert_eq!(token_shares(t, &b).iter().sum::<u64>(), t);
        }
    }
}
