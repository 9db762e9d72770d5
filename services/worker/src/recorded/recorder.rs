//! The recorder: a node started with `--record-calls DIR` appends every answer it gives
//! to `DIR/calls-<instance>.jsonl`, and its ModelInfo to `DIR/info.json`, so that a
//! recorded node (`--engine recorded:DIR`) can give the same answers later.
//!
//! The file is owned by one writer thread (an actor: calls hand it lines over a
//! channel and never wait on the disk). It writes each key once and flushes after every
//! call, so a node killed mid-run leaves a recording of everything it answered.

use super::store::{
    candidate_bounds, candidate_key, finish_name, numbered_call, prompt_key, sample_key,
    score_call_key, token_shares, Line, RecordedInfo, CALLS_PREFIX, CALLS_SUFFIX, INFO_FILE,
};
use ponder_search::traits::VerifierCost;
use ponder_search::{GenOutput, GenRequest, ScoreOutput, ScoreRequest};
use std::collections::{HashMap, HashSet};
use std::io::Write;
use std::path::Path;
use std::sync::mpsc;

/// A handle to a recording's writer thread (cheap to clone).
#[derive(Clone)]
pub struct Recorder {
    tx: mpsc::Sender<Vec<Line>>,
}

impl Recorder {
    /// Starts recording into `dir` as `instance`. `dir` may already hold a recording of
    /// the same model and role (several nodes, or several runs, add to it); one of
    /// another model is an error.
    pub fn create(dir: &Path, instance: &str, info: &RecordedInfo) -> anyhow::Result<Self> {
        std::fs::create_dir_all(dir)
            .map_err(|e| anyhow::anyhow!("--record-calls {}: {e}", dir.display()))?;
        let info_path = dir.join(INFO_FILE);
        if let Ok(bytes) = std::fs::read(&info_path) {
            let old: RecordedInfo = serde_json::from_slice(&bytes)
                .map_err(|e| anyhow::anyhow!("{}: {e}", info_path.display()))?;
            anyhow::ensure!(
                (old.role.as_str(), old.model_id.as_str())
                    == (info.role.as_str(), info.model_id.as_str()),
                "--record-calls {}: it holds a recording of {} {:?}, not of {} {:?}; use one \
                 directory per role and model",
                dir.display(),
                old.role,
                old.model_id,
                info.role,
                info.model_id
            );
        } else {
            let tmp = dir.join(format!(".{INFO_FILE}.{}", std::process::id()));
            std::fs::write(&tmp, serde_json::to_vec_pretty(info)?)?;
            std::fs::rename(&tmp, &info_path)?;
        }
        let safe: String = instance
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || c == '-' {
                    c
                } else {
                    '_'
                }
            })
            .collect();
        let path = dir.join(format!("{CALLS_PREFIX}{safe}{CALLS_SUFFIX}"));
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
        let (tx, rx) = mpsc::channel::<Vec<Line>>();
        std::thread::Builder::new()
            .name("call-recorder".into())
            .spawn(move || write_lines(file, &path, rx))?;
        Ok(Self { tx })
    }

    /// Records the answer `out` to `req`.
    pub fn generated(&self, req: &GenRequest, out: &GenOutput) {
        let mut lines = vec![Line::Prompt {
            key: prompt_key(&req.prompt),
            tokens: out.prompt_tokens,
        }];
        lines.extend(out.samples.iter().enumerate().map(|(i, s)| Line::Sample {
            key: sample_key(req, i as u32),
            text: s.text.clone(),
            tokens: s.tokens,
            finish: finish_name(s.finish).into(),
            stop: s.stop.clone(),
            logprob: s.logprob,
        }));
        let _ = self.tx.send(lines);
    }

    /// Records the answer `out` to `req`, splitting its tokens over the candidates by
    /// `cost`'s bound.
    pub fn scored(&self, req: &ScoreRequest, out: &ScoreOutput, cost: &VerifierCost) {
        let shares = token_shares(out.tokens, &candidate_bounds(req, cost));
        let mut lines = vec![Line::ScoreCall {
            key: score_call_key(&req.question, &req.candidates),
            tokens: out.tokens,
        }];
        lines.extend(req.candidates.iter().zip(&out.scores).zip(shares).map(
            |((c, scores), tokens)| Line::Candidate {
                key: candidate_key(&req.question, &c.steps),
                scores: scores.clone(),
                tokens,
            },
        ));
        let _ = self.tx.send(lines);
    }
}

fn write_lines(file: std::fs::File, path: &Path, rx: mpsc::Receiver<Vec<Line>>) {
    let mut out = std::io::BufWriter::new(file);
    let mut written: HashSet<String> = HashSet::new();
    let mut score_calls: HashMap<String, u32> = HashMap::new();
    for lines in rx {
        let mut failed = None;
        for mut line in lines {
            // Every score call is kept, numbered: an identical call again costs less.
            if let Line::ScoreCall { key, .. } = &mut line {
                let n = score_calls.entry(key.clone()).or_insert(0);
                *key = numbered_call(key, *n);
                *n += 1;
            }
            let key = match &line {
                Line::Prompt { key, .. }
                | Line::Sample { key, .. }
                | Line::Candidate { key, .. }
                | Line::ScoreCall { key, .. } => key,
            };
            if !written.insert(key.clone()) {
                continue;
            }
            let mut text = serde_json::to_string(&line).expect("a line serializes");
            text.push('\n');
            if let Err(e) = out.write_all(text.as_bytes()) {
                failed = Some(e);
                break;
            }
        }
        if let Some(e) = failed.or_else(|| out.flush().err()) {
            tracing::error!(path = %path.display(), error = %e, "recording stopped: cannot write");
            return;
        }
    }
}
