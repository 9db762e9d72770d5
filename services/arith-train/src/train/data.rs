//! Training examples for the generator: (prompt, target) text pairs, seeded by
//! step so a resumed run sees exactly the data it would have seen.
//!
//! Questions come from the trainer's stream ([`task::train_question`]), which never
//! yields a question of the evaluation or validation slices.
//!
//! - Fresh attempts: `Q: <question>\n` -> the canonical solution.
//! - Revisions: the revision prompt holding a wrong attempt -> the canonical
//!   solution. Wrong attempts are canonical up to a random step, then one
//!   corrupted step (a plausible slip), then a faithful continuation of the
//!   wrong expression, so they look like the model's own mistakes.

use anyhow::Result;
use ponder_arith::solution::{self, Solution};
use ponder_arith::task;
use rand::Rng;

/// One supervised example: loss is taken on `target` only.
#[derive(Debug, Clone, PartialEq)]
pub struct Example {
    pub prompt: String,
    pub target: String,
}

/// Level weights for sampling questions (higher levels have longer solutions,
/// so they carry more of the learning signal per example).
pub const DEFAULT_LEVEL_MIX: &[(u8, f64)] =
    &[(1, 1.0), (2, 1.0), (3, 1.2), (4, 1.4), (5, 1.6), (6, 1.8)];

/// The text an attempt ends with: the solution, a newline and end-of-sequence.
pub fn completion(solution: &Solution) -> String {
    format!("{}\n{}", solution.text(), crate::vocab::EOS)
}

/// A wrong attempt at `question`: canonical steps, one corrupted step, faithful continuation.
pub fn wrong_attempt(question: &str, rng: &mut impl Rng) -> Result<Option<String>> {
    let mut expr = task::parse(question)?;
    let total = expr.level() as usize;
    let slip_at = rng.random_range(0..total);
    let mut lines = Vec::new();
    for _ in 0..slip_at {
        let Some((next, line)) = solution::next_step(&expr) else {
            break;
        };
        lines.push(line);
        expr = next;
    }
    let Some((wrong, line)) = solution::corrupt_step(&expr, rng) else {
        return Ok(None);
    };
    lines.push(line);
    let rest = solution::solve_expr(&wrong);
    lines.extend(rest.steps);
    lines.push(format!("{}{}", solution::ANSWER_PREFIX, rest.answer));
    Ok(Some(lines.join("\n")))
}

/// One example for `problem`: a revision (when `revision` and a wrong attempt
/// exists) or a fresh attempt.
pub fn example_for(problem: &task::Problem, revision: bool, rng: &mut impl Rng) -> Result<Example> {
    let target = completion(&solution::solve(&problem.question)?);
    if revision {
        if let Some(attempt) = wrong_attempt(&problem.question, rng)? {
            let prompt = solution::revision_prompt(&problem.question, &[attempt]);
            return Ok(Example { prompt, target });
        }
    }
    Ok(Example {
        prompt: solution::prompt(&problem.question),
        target,
    })
}

/// Draws one example: a revision with probability `revision_fraction`, else a fresh attempt.
pub fn sample_example(
    rng: &mut impl Rng,
    levels: &[(u8, f64)],
    mix: task::TrainingMix,
    revision_fraction: f64,
) -> Result<Example> {
    let problem = task::train_question(task::pick_level(levels, rng), mix, rng);
    let revision = rng.random_bool(revision_fraction);
    example_for(&problem, revision, rng)
}

/// A batch of about `char_budget` characters whose examples share one level and
/// one kind (fresh or revision), so padding to the longest wastes little.
///
/// Why: solutions range from ~40 to ~1,000 characters; padding a mixed batch to
/// its longest member made most of the computed tokens padding.
pub fn sample_batch(
    rng: &mut impl Rng,
    levels: &[(u8, f64)],
    mix: task::TrainingMix,
    revision_fraction: f64,
    char_budget: usize,
) -> Result<Vec<Example>> {
    let level = task::pick_level(levels, rng);
    let revision = rng.random_bool(revision_fraction);
    let mut batch = Vec::new();
    let mut chars = 0;
    while chars < char_budget || batch.is_empty() {
        let problem = task::train_question(level, mix, rng);
        let ex = example_for(&problem, revision, rng)?;
        chars += ex.prompt.len() + ex.target.len();
        batch.push(ex);
    }
    Ok(batch)
}

/// A batch of revision examples whose wrong attempts are the model's own wrong
/// samples (`attempts`: question and attempt text), about `char_budget` characters.
pub fn own_revision_batch(
    rng: &mut impl Rng,
    attempts: &[(String, String)],
    char_budget: usize,
) -> Result<Vec<Example>> {
    let mut batch = Vec::new();
    let mut chars = 0;
    while (chars < char_budget || batch.is_empty()) && !attempts.is_empty() {
        let (question, attempt) = &attempts[rng.random_range(0..attempts.len())];
        let ex = Example {
            prompt: solution::revision_prompt(question, std::slice::from_ref(attempt)),
            target: completion(&solution::solve(question)?),
        };
        chars += ex.prompt.len() + ex.target.len();
        batch.push(ex);
    }
    Ok(batch)
}

#[cfg(test)]
mod tests {
    use super::*;
    use ponder_arith::checker::check_solution;
    use rand::SeedableRng;

    #[test]
    fn examples_are_well_formed_and_revisions_hold_a_wrong_attempt() {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(5);
        let (mut revisions, mut lens) = (0, Vec::new());
        for _ in 0..500 {
            let ex =
                sample_example(&mut rng, DEFAULT_LEVEL_MIX, task::TrainingMix::FIRST, 0.3).unwrap();
            assert!(ex.prompt.starts_with("Q: ") && ex.target.ends_with(crate::vocab::EOS));
            let question = ex
                .prompt
                .lines()
                .next()
                .unwrap()
                .trim_start_matches("Q: ")
                .to_string();
            let solution = ex.target.trim_end_matches(crate::vocab::EOS);
            assert!(check_solution(&question, solution).correct);
            if let Some(attempt) = ex.prompt.split("Attempt:\n").nth(1) {
                revisions += 1;
                let attempt = attempt.trim_end_matches("Revision:\n");
                let checked = check_solution(&question, attempt);
                assert!(
                    checked.steps.iter().any(|s| !s.local_ok),
                    "the attempt has no wrong step:\n{attempt}"
                );
            }
            lens.push(ex.prompt.len() + ex.target.len());
        }
        lens.sort_unstable();
        assert!(revisions > 100, "{revisions} revisions in 500 at 30%");
        eprintln!(
            "example chars: median {} p90 {} max {}",
            lens[250], lens[450], lens[499]
        );
    }
}
