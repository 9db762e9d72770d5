//! The figures the bundled pair is judged by, computed through the engine (the
//! same path the cluster uses): greedy accuracy per level, pass@k, PRM AUROC at
//! step and final-answer level, and revision versus fresh-sample accuracy.

use crate::vocab::EOS;
use anyhow::Result;
use ponder_arith::checker::check_solution;
use ponder_arith::solution;
use ponder_arith::task::{self, Problem};
use ponder_engine::{GenerateRequest, ModelWorker, SamplingParams, ScoreRequest};
use serde::Serialize;

/// Seed of the fixed held-out set (200 questions per level in the report).
pub const HELD_OUT_SEED: u64 = 20_261_129;

/// Area under the ROC curve of `scores` for binary `labels` (Mann-Whitney U,
/// ties counted half). `None` when one class is absent.
pub fn auroc(scores: &[f32], labels: &[bool]) -> Option<f64> {
    let mut pairs: Vec<(f32, bool)> = scores.iter().copied().zip(labels.iter().copied()).collect();
    pairs.sort_by(|a, b| a.0.total_cmp(&b.0));
    let positives = pairs.iter().filter(|p| p.1).count();
    let negatives = pairs.len() - positives;
    if positives == 0 || negatives == 0 {
        return None;
    }
    // Sum of ranks of positives, with average ranks for tied scores.
    let mut rank_sum = 0f64;
    let mut i = 0;
    while i < pairs.len() {
        let mut j = i;
        while j < pairs.len() && pairs[j].0 == pairs[i].0 {
            j += 1;
        }
        let avg_rank = (i + 1 + j) as f64 / 2.0;
        rank_sum += pairs[i..j].iter().filter(|p| p.1).count() as f64 * avg_rank;
        i = j;
    }
    let u = rank_sum - (positives * (positives + 1)) as f64 / 2.0;
    Some(u / (positives * negatives) as f64)
}

#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub greedy_by_level: Vec<(u8, usize, usize)>,
    pub greedy_overall: f64,
    pub pass_at_k: f64,
    pub k: u32,
    pub pass_questions: usize,
    pub prm_step_auroc: Option<f64>,
    pub prm_final_auroc: Option<f64>,
    pub revision_correct: f64,
    pub fresh_correct: f64,
    pub revision_pairs: usize,
}

fn strip(text: &str) -> String {
    text.trim_end_matches(EOS).trim_end().to_string()
}

async fn generate(
    worker: &ModelWorker,
    prompt: String,
    n: u32,
    params: &SamplingParams,
) -> Result<Vec<String>> {
    let resp = worker
        .generate(GenerateRequest {
            prompt,
            n,
            params: params.clone(),
        })
        .await?;
    Ok(resp
        .completions
        .into_iter()
        .map(|c| strip(&c.text))
        .collect())
}

/// Runs every measurement; `per_level` greedy questions, `pass_per_level` questions
/// with `k` samples each (these samples also feed the PRM and revision figures).
pub async fn run(
    gen: &ModelWorker,
    prm: &ModelWorker,
    per_level: usize,
    pass_per_level: usize,
    k: u32,
) -> Result<Report> {
    let greedy = SamplingParams {
        max_tokens: 1500,
        ..Default::default()
    };
    let problems = task::held_out_set(HELD_OUT_SEED, per_level);
    let mut by_level = [(0usize, 0usize); 7];
    // Chunks keep the requests in flight under the worker's queue limit.
    for chunk in problems.chunks(128) {
        let mut tasks = Vec::new();
        for p in chunk {
            let (w, prompt, params) = (gen.clone(), solution::prompt(&p.question), greedy.clone());
            tasks.push(tokio::spawn(async move {
                generate(&w, prompt, 1, &params).await
            }));
        }
        for (p, t) in chunk.iter().zip(tasks) {
            let text = t.await??.remove(0);
            by_level[p.level as usize].1 += 1;
            by_level[p.level as usize].0 +=
                (solution::extract_answer(&text) == Some(p.answer)) as usize;
        }
    }
    let (right, total): (usize, usize) =
        by_level.iter().fold((0, 0), |a, b| (a.0 + b.0, a.1 + b.1));

    // Sampled solutions: pass@k, PRM scores, and wrong first attempts for revisions.
    let sampled: Vec<Problem> = problems
        .chunks(per_level.max(1))
        .flat_map(|level| level.iter().take(pass_per_level).cloned())
        .collect();
    let hot = SamplingParams {
        temperature: 0.8,
        max_tokens: 1500,
        seed: 11,
        ..Default::default()
    };
    let (mut passed, mut step_scores, mut step_labels, mut final_scores, mut final_labels) =
        (0, vec![], vec![], vec![], vec![]);
    let (mut revised_ok, mut fresh_ok, mut pairs) = (0, 0, 0);
    for p in &sampled {
        let samples = generate(gen, solution::prompt(&p.question), k, &hot).await?;
        passed += samples
            .iter()
            .any(|s| solution::extract_answer(s) == Some(p.answer)) as usize;
        let candidates: Vec<Vec<String>> = samples
            .iter()
            .map(|s| s.lines().map(String::from).collect())
            .collect();
        let nonempty: Vec<(usize, Vec<String>)> = candidates
            .into_iter()
            .enumerate()
            .filter(|(_, c)| !c.is_empty())
            .collect();
        if !nonempty.is_empty() {
            let req = ScoreRequest {
                question: p.question.clone(),
                candidates: nonempty.iter().map(|c| c.1.clone()).collect(),
            };
            let scored = prm.score(req).await?;
            for ((i, _), scores) in nonempty.iter().zip(&scored.scores) {
                let checked = check_solution(&p.question, &samples[*i]);
                for (s, c) in scores.iter().zip(&checked.steps) {
                    step_scores.push(*s);
                    step_labels.push(c.on_track);
                }
                final_scores.push(*scores.last().unwrap_or(&0.0));
                final_labels.push(checked.correct);
            }
        }
        // Revision of the first wrong sample versus one more independent sample.
        if let Some(wrong) = samples
            .iter()
            .find(|s| solution::extract_answer(s) != Some(p.answer))
        {
            let rev_params = SamplingParams {
                seed: 12,
                ..hot.clone()
            };
            let revised = generate(
                gen,
                solution::revision_prompt(&p.question, std::slice::from_ref(wrong)),
                1,
                &rev_params,
            )
            .await?;
            let fresh = generate(gen, solution::prompt(&p.question), 1, &rev_params).await?;
            pairs += 1;
            revised_ok += (solution::extract_answer(&revised[0]) == Some(p.answer)) as usize;
            fresh_ok += (solution::extract_answer(&fresh[0]) == Some(p.answer)) as usize;
        }
    }
    Ok(Report {
        greedy_by_level: (1..=6)
            .map(|l| (l as u8, by_level[l].0, by_level[l].1))
            .collect(),
        greedy_overall: right as f64 / total.max(1) as f64,
        pass_at_k: passed as f64 / sampled.len().max(1) as f64,
        k,
        pass_questions: sampled.len(),
        prm_step_auroc: auroc(&step_scores, &step_labels),
        prm_final_auroc: auroc(&final_scores, &final_labels),
        revision_correct: revised_ok as f64 / pairs.max(1) as f64,
        fresh_correct: fresh_ok as f64 / pairs.max(1) as f64,
        revision_pairs: pairs,
    })
}

#[cfg(test)]
mod tests {
    use super::auroc;

    #[test]
    fn auroc_is_one_for_perfect_ranking_half_for_ties_and_none_without_a_class() {
        assert_eq!(
            auroc(&[0.1, 0.2, 0.8, 0.9], &[false, false, true, true]),
            Some(1.0)
        );
        assert_eq!(
            auroc(&[0.9, 0.8, 0.2, 0.1], &[false, false, true, true]),
            Some(0.0)
        );
        assert_eq!(auroc(&[0.5, 0.5], &[false, true]), Some(0.5));
        assert_eq!(auroc(&[0.5, 0.7], &[true, true]), None);
        let a = auroc(&[0.1, 0.4, 0.35, 0.8], &[false, false, true, true]).unwrap();
        assert!((a - 0.75).abs() < 1e-12);
    }
}
