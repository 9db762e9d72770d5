//! The three calls test-time search makes of an engine, on real ponder-arith prompts:
//! many samples of one prompt (best-of-N, majority), PRM scoring of a batch of candidate
//! solutions, and one-step continuations of partial solutions that share a prefix (beam
//! search, lookahead). Each returns tokens and seconds; rates are the caller's business.

use ponder_arith::task::Problem;
use ponder_engine::{GenerateRequest, ModelWorker, SamplingParams, ScoreRequest};
use ponder_proto::v1::{self, verifier_client::VerifierClient};
use ponder_search::format::SolutionFormat;
use std::time::Instant;

/// Tokens done and the wall time they took.
#[derive(Debug, Clone, Copy, Default)]
pub struct Work {
    pub tokens: u64,
    pub seconds: f64,
    /// Of `tokens`, those the model ran (the rest came from its caches), where known.
    pub computed: Option<u64>,
}

impl Work {
    pub fn rate(&self) -> f64 {
        self.tokens as f64 / self.seconds
    }
}

/// Solutions are capped here, as `ponder-engine generate` measured them (400 tokens).
pub const MAX_SOLUTION_TOKENS: usize = 400;

pub fn sampling(temperature: f32, max_tokens: usize, seed: u64) -> SamplingParams {
    SamplingParams {
        temperature,
        max_tokens,
        seed,
        ..Default::default()
    }
}

/// `n` samples (T = 0.8, or greedy for n = 1) of each question's prompt, one request per
/// question, questions one after another. Generated tokens only (prompts excluded).
pub async fn samples(worker: &ModelWorker, questions: &[Problem], n: u32) -> anyhow::Result<Work> {
    let format = SolutionFormat::default();
    let temperature = if n == 1 { 0.0 } else { 0.8 };
    let before = worker.stats().await?;
    let t = Instant::now();
    let mut tokens = 0u64;
    for (i, q) in questions.iter().enumerate() {
        let resp = worker
            .generate(GenerateRequest {
                prompt: format.prompt(&q.question),
                n,
                params: sampling(temperature, MAX_SOLUTION_TOKENS, i as u64),
            })
            .await?;
        tokens += resp
            .completions
            .iter()
            .map(|c| u64::from(c.tokens))
            .sum::<u64>();
    }
    let seconds = t.elapsed().as_secs_f64();
    let after = worker.stats().await?;
    // Each sample's first token comes from its prompt's row; the rest from decode rows,
    // of which twins share some (`WorkerConfig::share_twins`).
    let first_tokens = u64::from(n) * questions.len() as u64;
    let shared = after.twin_rows - before.twin_rows;
    Ok(Work {
        tokens,
        seconds,
        computed: Some(tokens.saturating_sub(first_tokens + shared)),
    })
}

/// The candidate solutions PRM scoring and step continuation start from: up to `count`
/// *distinct* solutions per question, from `4 * count` samples (T = 1.0, seed fixed),
/// split into steps. Made once, outside any timing. Distinct, because the verifier scores
/// a repeated candidate once: the bundled generator at T = 0.8 gives 6 to 8 distinct
/// solutions in 64 samples, and a batch of copies would time the cache, not the model.
pub async fn candidates(
    worker: &ModelWorker,
    questions: &[Problem],
    count: u32,
) -> anyhow::Result<Vec<Vec<Vec<String>>>> {
    let format = SolutionFormat::default();
    let mut out = Vec::with_capacity(questions.len());
    for q in questions {
        let resp = worker
            .generate(GenerateRequest {
                prompt: format.prompt(&q.question),
                n: 4 * count,
                params: sampling(1.0, MAX_SOLUTION_TOKENS, 1234),
            })
            .await?;
        let mut seen = std::collections::HashSet::new();
        out.push(
            resp.completions
                .iter()
                .map(|c| format.steps(&c.text))
                .filter(|steps| !steps.is_empty() && seen.insert(steps.clone()))
                .take(count as usize)
                .collect(),
        );
    }
    Ok(out)
}

/// The candidates one scoring request of `batch` takes from a question's: the first
/// `batch`, cycling through them where there are fewer.
pub fn picked(cands: &[Vec<String>], batch: usize) -> impl Iterator<Item = &Vec<String>> {
    cands.iter().cycle().take(batch)
}

/// The scoring workload: one request per question with its first `batch` candidates
/// (cycling through them where a question has fewer, see [`picked`]), and the tokens of
/// every scored sequence (question and steps), whatever an engine reuses, so that the
/// figure compares across engine versions.
fn score_requests(
    questions: &[Problem],
    candidates: &[Vec<Vec<String>>],
    batch: usize,
    sequence_tokens: impl Fn(&str, &[String]) -> anyhow::Result<u64>,
) -> anyhow::Result<(Vec<ScoreRequest>, u64)> {
    let mut requests = Vec::new();
    let mut tokens = 0u64;
    for (q, cands) in questions.iter().zip(candidates) {
        let picked: Vec<Vec<String>> = picked(cands, batch).cloned().collect();
        for steps in &picked {
            tokens += sequence_tokens(&q.question, steps)?;
        }
        requests.push(ScoreRequest {
            question: q.question.clone(),
            candidates: picked,
        });
    }
    Ok((requests, tokens))
}

/// Scores [`score_requests`]'s workload on an in-process worker, one request at a time.
pub async fn scoring(
    worker: &ModelWorker,
    questions: &[Problem],
    candidates: &[Vec<Vec<String>>],
    batch: usize,
    sequence_tokens: impl Fn(&str, &[String]) -> anyhow::Result<u64>,
) -> anyhow::Result<Work> {
    let (requests, tokens) = score_requests(questions, candidates, batch, sequence_tokens)?;
    let before = worker.stats().await?.scored_tokens;
    let t = Instant::now();
    for req in requests {
        worker.score(req).await?;
    }
    let seconds = t.elapsed().as_secs_f64();
    Ok(Work {
        tokens,
        seconds,
        computed: Some(worker.stats().await?.scored_tokens - before),
    })
}

/// [`scoring`] through a running verifier node's `Score` RPC instead of an in-process
/// worker: the same requests, one at a time, so that two builds of the node (or two
/// engines behind the same protocol) compare on one workload. What the node ran itself
/// is not known here (`computed` is None).
pub async fn scoring_remote(
    client: &mut VerifierClient<tonic::transport::Channel>,
    questions: &[Problem],
    candidates: &[Vec<Vec<String>>],
    batch: usize,
    sequence_tokens: impl Fn(&str, &[String]) -> anyhow::Result<u64>,
) -> anyhow::Result<Work> {
    let (requests, tokens) = score_requests(questions, candidates, batch, sequence_tokens)?;
    let requests: Vec<v1::ScoreRequest> = requests
        .into_iter()
        .map(|r| v1::ScoreRequest {
            question: r.question,
            candidates: r
                .candidates
                .into_iter()
                .map(|steps| v1::Candidate { steps })
                .collect(),
        })
        .collect();
    let t = Instant::now();
    for req in requests {
        let scored = client.score(req).await?.into_inner();
        anyhow::ensure!(
            scored.candidates.len() == batch,
            "the node scored {} of {batch} candidates",
            scored.candidates.len()
        );
    }
    Ok(Work {
        tokens,
        seconds: t.elapsed().as_secs_f64(),
        computed: None,
    })
}

/// Beam-search rounds: for each question and each depth d, `width` beams (partial
/// solutions of d steps from different candidates, all sharing the question) each ask
/// for `expansions` one-step continuations (stop at the step delimiter), the beams'
/// requests concurrent as the strategy sends them. Generated tokens only.
pub async fn step_rounds(
    worker: &ModelWorker,
    questions: &[Problem],
    candidates: &[Vec<Vec<String>>],
    width: usize,
    expansions: u32,
) -> anyhow::Result<(Work, CacheUse)> {
    let format = SolutionFormat::default();
    let t = Instant::now();
    let mut tokens = 0u64;
    let mut cache = CacheUse::default();
    for (q, cands) in questions.iter().zip(candidates) {
        let depth = cands.iter().map(Vec::len).max().unwrap_or(0);
        for d in 0..depth {
            let beams: Vec<String> = cands
                .iter()
                .filter(|steps| steps.len() > d)
                .take(width)
                .map(|steps| {
                    let mut p = format.prompt(&q.question);
                    for s in &steps[..d] {
                        p.push_str(s);
                        p.push_str(&format.step_delimiter);
                    }
                    p
                })
                .collect();
            let handles: Vec<_> = beams
                .into_iter()
                .enumerate()
                .map(|(i, prompt)| {
                    let w = worker.clone();
                    let mut params = sampling(0.8, 64, (d * 100 + i) as u64);
                    params.stop = vec![format.step_delimiter.clone()];
                    tokio::spawn(async move {
                        w.generate(GenerateRequest {
                            prompt,
                            n: expansions,
                            params,
                        })
                        .await
                    })
                })
                .collect();
            for h in handles {
                let resp = h.await??;
                tokens += resp
                    .completions
                    .iter()
                    .map(|c| u64::from(c.tokens))
                    .sum::<u64>();
                cache.prompt_tokens += u64::from(resp.prompt_tokens);
                cache.cached_tokens += u64::from(resp.cached_prompt_tokens);
            }
        }
    }
    Ok((
        Work {
            tokens,
            seconds: t.elapsed().as_secs_f64(),
            computed: None,
        },
        cache,
    ))
}

/// Prompt tokens sent, and how many of them the prefix cache supplied.
#[derive(Debug, Clone, Copy, Default)]
pub struct CacheUse {
    pub prompt_tokens: u64,
    pub cached_tokens: u64,
}
