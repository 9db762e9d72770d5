//! Exact, step-level checking of a written solution.
//!
//! Because the solution format ([`crate::solution`]) makes every step a pure function of
//! the expression before it, a step can be checked by recomputing it: a step is right iff
//! it is *exactly* the canonical next step. This gives ground truth for process reward
//! model training labels and for evaluating search strategies step by step.
//!
//! # Rules
//!
//! - `text` is split into lines; one trailing empty line (a final `\n`) is ignored.
//! - A line starting with `Answer:` is an answer line; every other line is a step.
//! - The *stated expression* of a step line is its `<rest>` (the text after the last
//!   ` => `), parsed with [`parse_relaxed`]. A line without a parsable rest cannot be
//!   parsed: later steps are judged against the last expression that could be parsed
//!   (initially the question).
//! - A step is `local_ok` iff it equals, character for character, the canonical
//!   [`next_step`] line of the current expression.
//! - An answer line is `local_ok` iff the current expression is a single number and the
//!   line's value (as [`extract_answer`] reads it) equals it.
//! - `on_track` iff this line and every earlier line are `local_ok` (the prefix is still
//!   exactly the canonical solution); for an answer line, additionally its value is the
//!   true answer (which then follows).
//! - `correct` iff [`extract_answer`] of the whole text is the true answer.
//!
//! The question is parsed with [`parse_relaxed`]; if even that fails, nothing is ok.

use serde::{Deserialize, Serialize};

use crate::solution::{extract_answer, next_step, parse_answer_value, ANSWER_PREFIX};
use crate::task::{parse_relaxed, Expr};

/// The verdict on one line of a solution.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct StepCheck {
    /// The line is exactly the canonical step from the previously stated expression.
    pub local_ok: bool,
    /// This line and all earlier lines are `local_ok`.
    pub on_track: bool,
}

/// The verdict on a whole solution.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Checked {
    /// One entry per line (steps and answer lines, in order).
    pub steps: Vec<StepCheck>,
    /// The extracted answer ([`extract_answer`]).
    pub answer: Option<u32>,
    /// The extracted answer is the true answer.
    pub correct: bool,
}

impl Checked {
    /// The first line that is not on track: where the solution went wrong. None when
    /// every line is (a wrong solution may still stop before its answer).
    pub fn first_wrong_line(&self) -> Option<usize> {
        self.steps.iter().position(|s| !s.on_track)
    }
}

/// Checks every line of `text` as a solution of `question` (see the module docs).
pub fn check_solution(question: &str, text: &str) -> Checked {
    let mut current: Option<Expr> = parse_relaxed(question).ok();
    let truth = current.as_ref().map(Expr::value);
    let body = text.strip_suffix('\n').unwrap_or(text);
    let lines: Vec<&str> = if body.is_empty() {
        Vec::new()
    } else {
        body.split('\n').collect()
    };

    let mut steps = Vec::with_capacity(lines.len());
    let mut track = true;
    for line in lines {
        let (local_ok, on_track) = if line.starts_with("Answer:") {
            let value = line
                .strip_prefix(ANSWER_PREFIX)
                .and_then(parse_answer_value);
            let local_ok = value.is_some() && value == current.as_ref().and_then(Expr::as_num);
            (local_ok, track && local_ok && value == truth)
        } else {
            let canonical = current.as_ref().and_then(next_step).map(|(_, line)| line);
            let local_ok = canonical.as_deref() == Some(line);
            if let Some(stated) = line
                .rsplit_once(" => ")
                .and_then(|(_, rest)| parse_relaxed(rest).ok())
            {
                current = Some(stated);
            }
            (local_ok, track && local_ok)
        };
        track = on_track;
        steps.push(StepCheck { local_ok, on_track });
    }

    let answer = extract_answer(text);
    Checked {
        steps,
        answer,
        correct: answer.is_some() && answer == truth,
    }
}

#[cfg(test)]
mod tests {
    use rand::SeedableRng;
    use rand_chacha::ChaCha8Rng;

    use super::*;
    use crate::solution::{corrupt_step, solve, solve_expr};
    use crate::task::{generate, parse};

    fn flags(c: &Checked) -> Vec<(bool, bool)> {
        c.steps.iter().map(|s| (s.local_ok, s.on_track)).collect()
    }

    #[test]
    fn canonical_solution_is_all_ok() {
        let q = "(47+38)*3-19";
        let text = solve(q).unwrap().text();
        for t in [text.clone(), format!("{text}\n")] {
            let c = check_solution(q, &t);
            assert_eq!(flags(&c), vec![(true, true); 4]);
            assert_eq!(c.first_wrong_line(), None);
            assert_eq!((c.answer, c.correct), (Some(236), true));
        }
    }

    #[test]
    fn corrupted_step_is_flagged_exactly_there() {
        let mut rng = ChaCha8Rng::seed_from_u64(3);
        for i in 0..500 {
            let p = generate((i % 6) as u8 + 1, &mut rng);
            let good = solve(&p.question).unwrap();
            let k = i % good.steps.len();
            // Expression before step k.
            let mut expr = parse(&p.question).unwrap();
            for _ in 0..k {
                expr = next_step(&expr).unwrap().0;
            }
            let (wrong_expr, wrong_line) = corrupt_step(&expr, &mut rng).unwrap();
            let tail = solve_expr(&wrong_expr);
            let mut lines: Vec<String> = good.steps[..k].to_vec();
            lines.push(wrong_line);
            lines.extend(tail.steps.iter().cloned());
            let text = format!("{}\nAnswer: {}", lines.join("\n"), tail.answer);
            let c = check_solution(&p.question, &text);
            let n = lines.len();
            assert_eq!(c.steps.len(), n + 1);
            for (j, s) in c.steps.iter().enumerate() {
                let expected = match j {
                    j if j < k => (true, true),
                    j if j == k => (false, false),
                    _ => (true, false),
                };
                assert_eq!((s.local_ok, s.on_track), expected, "{text}\nline {j}");
            }
            assert_eq!(c.first_wrong_line(), Some(k), "{text}");
            assert_eq!(c.answer, Some(tail.answer));
            assert_eq!(c.correct, tail.answer == p.answer);
        }
    }

    #[test]
    fn wrong_answer_line() {
        let q = "47+38";
        let c = check_solution(q, "47+38: 7+8=15, 4+3+1=8 => 85\nAnswer: 86");
        assert_eq!(flags(&c), [(true, true), (false, false)]);
        assert_eq!((c.answer, c.correct), (Some(86), false));
        // The answer before the expression is reduced is not a valid step.
        let c = check_solution(q, "Answer: 85");
        assert_eq!(flags(&c), [(false, false)]);
        assert!(c.correct);
        // A wrong step, then a consistent answer: locally fine, off track.
        let c = check_solution(q, "47+38: 7+8=15, 4+3=7 => 75\nAnswer: 75");
        assert_eq!(flags(&c), [(false, false), (true, false)]);
        assert!(!c.correct);
        let c = check_solution(q, "47+38: 7+8=15, 4+3+1=8 => 85\nAnswer:85");
        assert_eq!(flags(&c), [(true, true), (false, false)]);
        assert_eq!(c.answer, None);
    }

    #[test]
    fn garbage_and_unparsable_lines() {
        let c = check_solution("47+38", "hello\nworld");
        assert_eq!(flags(&c), [(false, false), (false, false)]);
        assert_eq!((c.answer, c.correct), (None, false));
        assert!(check_solution("47+38", "").steps.is_empty());
        // An unparsable line is skipped as a reference: the next step is judged against
        // the question again.
        let c = check_solution(
            "47+38",
            "47+38: oops => 8 5\n47+38: 7+8=15, 4+3+1=8 => 85\nAnswer: 85",
        );
        assert_eq!(flags(&c), [(false, false), (true, false), (true, false)]);
        assert!(c.correct);
        // An invalid question makes nothing ok.
        let c = check_solution("4/2", "Answer: 2");
        assert_eq!((flags(&c), c.correct), (vec![(false, false)], false));
    }
}
