//! What to ask: the question of each request, its expected answer when known, and the
//! strategy and budget drawn from the mix.
//!
//! Request `i` is a pure function of (workload, seed, `i`): its draws come from a ChaCha
//! stream numbered `i`, so open and closed loops, and two runs at different rates, ask
//! the same questions in the same order whatever the timing.

use crate::mix::Mix;
use ponder_proto::v1 as pb;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::Deserialize;
use std::path::Path;

/// Where questions come from.
#[derive(Debug, Clone)]
pub enum Questions {
    /// ponder-arith questions, the level drawn with these weights; the answer is known.
    Arith { levels: Vec<(u8, f64)> },
    /// Questions from a file, asked in order and cycled.
    File { items: Vec<Item> },
}

/// One question of a JSONL file.
#[derive(Debug, Clone, PartialEq)]
pub struct Item {
    pub question: String,
    pub expected: Option<String>,
}

#[derive(Debug, Clone)]
pub struct Workload {
    pub questions: Questions,
    /// Only the first `cycle` requests, repeated (`--cycle`).
    pub cycle: Option<u64>,
    pub mix: Mix,
    pub seed: u64,
    /// Generator + verifier token limit per query (0: none).
    pub max_tokens: u64,
    /// The generator model every request pins (empty: the cluster's default).
    pub model_id: String,
}

/// One request to send.
#[derive(Debug, Clone)]
pub struct Job {
    pub index: u64,
    /// Index into the mix's entries.
    pub class: usize,
    pub expected: Option<String>,
    pub request: pb::SolveRequest,
}

impl Workload {
    pub fn job(&self, index: u64) -> Job {
        let drawn = self.cycle.map_or(index, |n| index % n);
        let mut rng = ChaCha8Rng::seed_from_u64(self.seed);
        rng.set_stream(drawn);
        let (question, expected) = match &self.questions {
            Questions::Arith { levels } => {
                let p = ponder_arith::task::generate_mix(levels, &mut rng);
                (p.question, Some(p.answer.to_string()))
            }
            Questions::File { items } => {
                let item = &items[(drawn % items.len() as u64) as usize];
                (item.question.clone(), item.expected.clone())
            }
        };
        let class = self.mix.pick(&mut rng);
        let entry = &self.mix.entries()[class];
        Job {
            index,
            class,
            expected,
            request: pb::SolveRequest {
                question,
                budget: Some(pb::Budget {
                    max_generations: entry.budget,
                    max_tokens: self.max_tokens,
                    max_flops: entry.max_flops,
                    min_generations: entry.min_generations,
                }),
                budget_mode: entry.budget_mode_message().into(),
                strategy: entry.strategy_message(),
                seed: rng.random(),
                temperature: 0.0,
                aggregation: String::new(),
                strict: false,
                model_id: self.model_id.clone(),
            },
        }
    }

    pub fn label(&self) -> String {
        let questions = match &self.questions {
            Questions::Arith { levels } => format!(
                "ponder-arith levels {} seed {}",
                levels
                    .iter()
                    .map(|(l, w)| format!("{l}={w}"))
                    .collect::<Vec<_>>()
                    .join(","),
                self.seed
            ),
            Questions::File { items } => format!("{} questions from a file", items.len()),
        };
        match self.cycle {
            Some(n) => format!("{questions}, the first {n} requests cycled"),
            None => questions,
        }
    }
}

/// Whether an answer matches the expected one (exact text, surrounding space ignored).
pub fn is_correct(answer: &str, expected: &str) -> bool {
    !answer.trim().is_empty() && answer.trim() == expected.trim()
}

/// `--levels 1=1,2=1,3=2`: ponder-arith levels (1..=6) with weights.
pub fn parse_levels(text: &str) -> anyhow::Result<Vec<(u8, f64)>> {
    let levels = text
        .split(',')
        .map(str::trim)
        .filter(|e| !e.is_empty())
        .map(|entry| {
            let (l, w) = entry.split_once('=').unwrap_or((entry, "1"));
            let level: u8 = l
                .trim()
                .parse()
                .ok()
                .filter(|l| (1..=6).contains(l))
                .ok_or_else(|| {
                    anyhow::anyhow!("--levels {entry:?}: levels are 1..=6 (LEVEL=WEIGHT,...)")
                })?;
            let weight: f64 = w
                .trim()
                .parse()
                .ok()
                .filter(|w: &f64| w.is_finite() && *w >= 0.0)
                .ok_or_else(|| {
                    anyhow::anyhow!("--levels {entry:?}: the weight must be a non-negative number")
                })?;
            Ok((level, weight))
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    anyhow::ensure!(
        levels.iter().any(|&(_, w)| w > 0.0),
        "--levels needs at least one level with a positive weight, e.g. 1=1,2=1"
    );
    Ok(levels)
}

#[derive(Deserialize)]
struct Line {
    question: String,
    #[serde(default, alias = "expected")]
    answer: Option<serde_json::Value>,
}

/// Reads a JSONL file of `{"question": "...", "answer": "..."}` lines (the answer is
/// optional, a string or a number; `expected` is accepted for `answer`).
pub fn load_jsonl(path: &Path) -> anyhow::Result<Vec<Item>> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| anyhow::anyhow!("cannot read --questions {}: {e}", path.display()))?;
    let mut items = Vec::new();
    for (n, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let l: Line = serde_json::from_str(line).map_err(|e| {
            anyhow::anyhow!(
                "{}:{}: {e}; each line is {{\"question\": \"...\", \"answer\": \"...\"}}",
                path.display(),
                n + 1
            )
        })?;
        anyhow::ensure!(
            !l.question.trim().is_empty(),
            "{}:{}: the question is empty",
            path.display(),
            n + 1
        );
        let expected = match l.answer {
            None | Some(serde_json::Value::Null) => None,
            Some(serde_json::Value::String(s)) => Some(s),
            Some(v @ serde_json::Value::Number(_)) => Some(v.to_string()),
            Some(v) => anyhow::bail!(
                "{}:{}: the answer must be a string or a number, got {v}",
                path.display(),
                n + 1
            ),
        };
        items.push(Item {
            question: l.question,
            expected,
        });
    }
    anyhow::ensure!(
        !items.is_empty(),
        "--questions {} has no questions",
        path.display()
    );
    Ok(items)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn arith(seed: u64) -> Workload {
        Workload {
            cycle: None,
            questions: Questions::Arith {
                levels: parse_levels("1=1,3=1").unwrap(),
            },
            mix: Mix::parse("best_of_n:4=1,beam_search:2:8=1").unwrap(),
            seed,
            max_tokens: 0,
            model_id: String::new(),
        }
    }

    #[test]
    fn a_request_depends_only_on_seed_and_index() {
        let w = arith(9);
        let a = w.job(17);
        let b = w.job(17);
        assert_eq!(a.request, b.request);
        assert_ne!(w.job(18).request, a.request);
        assert_ne!(arith(10).job(17).request, a.request);
    }

    #[test]
    fn a_cycled_workload_repeats_its_first_requests_exactly() {
        let w = Workload {
            cycle: Some(5),
            ..arith(9)
        };
        let plain = arith(9);
        for i in 0..5 {
            assert_eq!(w.job(i).request, plain.job(i).request);
            assert_eq!(w.job(i + 5).request, plain.job(i).request);
            assert_eq!(w.job(i + 5).index, i + 5);
        }
        assert!(
            w.label().ends_with("the first 5 requests cycled"),
            "{}",
            w.label()
        );
    }

    #[test]
    fn arith_questions_carry_their_true_answer() {
        let w = arith(1);
        for i in 0..50 {
            let j = w.job(i);
            let truth = ponder_arith::solution::solve(&j.request.question)
                .unwrap()
                .answer;
            assert_eq!(j.expected, Some(truth.to_string()));
            let budget = j.request.budget.unwrap().max_generations;
            assert_eq!(budget, w.mix.entries()[j.class].budget);
        }
    }

    #[test]
    fn jsonl_answers_may_be_strings_numbers_or_absent() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("q.jsonl");
        std::fs::write(
            &p,
            "{\"question\":\"1+2\",\"answer\":3}\n\n{\"question\":\"What?\"}\n{\"question\":\"x\",\"expected\":\"y\"}\n",
        )
        .unwrap();
        let items = load_jsonl(&p).unwrap();
        assert_eq!(items.len(), 3);
        assert_eq!(items[0].expected.as_deref(), Some("3"));
        assert_eq!(items[1].expected, None);
        assert_eq!(items[2].expected.as_deref(), Some("y"));
        std::fs::write(&p, "{\"answer\":3}\n").unwrap();
        let e = load_jsonl(&p).unwrap_err().to_string();
        assert!(e.contains(":1:") && e.contains("question"), "{e}");
    }

    #[test]
    fn levels_outside_the_task_are_refused() {
        assert_eq!(parse_levels("2").unwrap(), vec![(2, 1.0)]);
        assert!(parse_levels("7=1").is_err());
        assert!(parse_levels("1=0").is_err());
    }

    #[test]
    fn an_empty_answer_is_never_correct() {
        assert!(is_correct(" 42", "42"));
        assert!(!is_correct("", ""));
        assert!(!is_correct("41", "42"));
    }
}
