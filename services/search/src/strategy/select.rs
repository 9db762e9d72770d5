//! Final-answer selection: majority vote, best-of-N, best-of-N weighted.

use std::collections::HashMap;

/// How a final answer is chosen among finished candidates.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rule {
    /// The most frequent answer.
    Majority,
    /// The answer of the single best-scored candidate.
    Best,
    /// The answer with the largest sum of candidate scores.
    Weighted,
}

/// A finished candidate: its text, extracted answer and aggregated score (if scored).
#[derive(Debug, Clone, PartialEq)]
pub struct Scored {
    pub text: String,
    pub answer: Option<String>,
    pub score: Option<f32>,
}

/// One distinct answer: how many candidates gave it and their summed score.
#[derive(Debug, Clone, PartialEq)]
pub struct Tally {
    pub answer: String,
    pub votes: u32,
    pub weight: f32,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Selection {
    /// Index into the candidates.
    pub winner: usize,
    pub answer: Option<String>,
    /// Aggregated PRM score of the winner, or its answer's vote share for majority.
    pub score: f32,
    /// Best first, in the strategy's order.
    pub tallies: Vec<Tally>,
}

/// Picks the final answer. Ties go to the candidate or answer seen first, so the
/// result depends only on the candidates' order (which is seeded), not on timing.
/// `None` when there are no candidates.
pub fn select(kind: Rule, candidates: &[Scored]) -> Option<Selection> {
    if candidates.is_empty() {
        return None;
    }
    let mut tallies: Vec<Tally> = Vec::new();
    let mut index: HashMap<&str, usize> = HashMap::new();
    for c in candidates {
        if let Some(a) = &c.answer {
            let i = *index.entry(a.as_str()).or_insert_with(|| {
                tallies.push(Tally {
                    answer: a.clone(),
                    votes: 0,
                    weight: 0.0,
                });
                tallies.len() - 1
            });
            tallies[i].votes += 1;
            tallies[i].weight += c.score.unwrap_or(0.0);
        }
    }
    let answered: u32 = tallies.iter().map(|t| t.votes).sum();
    // Stable sorts keep first-seen order among equals.
    match kind {
        Rule::Majority => tallies.sort_by_key(|t| std::cmp::Reverse(t.votes)),
        _ => tallies.sort_by(|a, b| b.weight.total_cmp(&a.weight)),
    }
    let score_of = |c: &Scored| c.score.unwrap_or(0.0);
    let best_with = |answer: Option<&str>| -> usize {
        let mut best: Option<usize> = None;
        for (i, c) in candidates.iter().enumerate() {
            if answer.is_some() && c.answer.as_deref() != answer {
                continue;
            }
            if best.is_none_or(|b| score_of(c) > score_of(&candidates[b])) {
                best = Some(i);
            }
        }
        best.unwrap_or(0)
    };
    let (winner, score) = match (kind, tallies.first()) {
        (_, None) => {
            let w = best_with(None);
            (w, score_of(&candidates[w]))
        }
        (Rule::Majority, Some(top)) => {
            let w = candidates
                .iter()
                .position(|c| c.answer.as_deref() == Some(top.answer.as_str()))
                .unwrap_or(0);
            (w, top.votes as f32 / answered as f32)
        }
        (Rule::Best, Some(_)) => {
            let mut best = None::<usize>;
            for (i, c) in candidates.iter().enumerate() {
                if c.answer.is_some() && best.is_none_or(|b| score_of(c) > score_of(&candidates[b]))
                {
                    best = Some(i);
                }
            }
            let w = best.unwrap_or(0);
            (w, score_of(&candidates[w]))
        }
        (Rule::Weighted, Some(top)) => {
            let w = best_with(Some(top.answer.as_str()));
            (w, score_of(&candidates[w]))
        }
    };
    if kind == Rule::Best {
        // Order the tallies by their best single candidate, as best-of-N ranks.
        let best_single = |a: &str| {
            candidates
                .iter()
                .filter(|c| c.answer.as_deref() == Some(a))
                .map(score_of)
                .fold(f32::MIN, f32::max)
        };
        tallies.sort_by(|a, b| best_single(&b.answer).total_cmp(&best_single(&a.answer)));
    }
    Some(Selection {
        winner,
        answer: candidates[winner].answer.clone(),
        score,
        tallies,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn c(answer: Option<&str>, score: f32) -> Scored {
        Scored {
            text: format!("{answer:?}"),
            answer: answer.map(String::from),
            score: Some(score),
        }
    }

    #[test]
    fn the_three_rules_disagree_where_they_should() {
        // "7" is most frequent, "9" has the single best score, "8" the largest sum.
        let cands = vec![
            c(Some("7"), 0.1),
            c(Some("7"), 0.1),
            c(Some("7"), 0.1),
            c(Some("9"), 0.95),
            c(Some("8"), 0.6),
            c(Some("8"), 0.6),
            c(None, 1.0),
        ];
        let sc = select(Rule::Majority, &cands).unwrap();
        assert_eq!(sc.answer.as_deref(), Some("7"));
        assert!((sc.score - 0.5).abs() < 1e-6);
        assert_eq!(sc.winner, 0);
        let bon = select(Rule::Best, &cands).unwrap();
        assert_eq!(bon.answer.as_deref(), Some("9"));
        assert_eq!(bon.winner, 3);
        let w = select(Rule::Weighted, &cands).unwrap();
        assert_eq!(w.answer.as_deref(), Some("8"));
        assert_eq!(w.winner, 4);
        assert_eq!(w.tallies[0].votes, 2);
        assert!((w.tallies[0].weight - 1.2).abs() < 1e-6);
    }

    #[test]
    fn no_answers_still_returns_the_best_text() {
        let cands = vec![c(None, 0.2), c(None, 0.7)];
        let s = select(Rule::Weighted, &cands).unwrap();
        assert_eq!((s.winner, s.answer), (1, None));
        assert!(select(Rule::Best, &[]).is_none());
    }
}
