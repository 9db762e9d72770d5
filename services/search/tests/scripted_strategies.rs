//! Each strategy's exact behaviour on scripted samples and scripted step rewards
//! (`ponder_search::scripted`): which candidates survive each round, what a search
//! costs, how REBASE shares its width, when adaptive stopping fires, which answer each
//! selection rule picks, what revision prompts look like, where compute-optimal
//! routes, and that no budget limit is ever passed.
//!
//! Every expected survivor, cost, width and pick below is worked out by hand from the
//! script (the arithmetic is in the comments), never computed by the code under test.
//!
//! Conventions of the scripts: the question is `q`, so the first prompt is `Q: q\n`
//! and a partial solution's prompt adds one line per step ([`at`]); a step text ends
//! with the step delimiter `\n` unless it is the answer line, which ends the solution.
//! Solutions are scored with the default aggregation, `last`: a path's score is its
//! last step's reward.

use ponder_search::scripted::{ScriptedGenerator, ScriptedVerifier};
use ponder_search::strategy::compute_optimal::Policy;
use ponder_search::{
    solve, Budget, Outcome, Rule, SearchError, SolutionFormat, SolveParams, StrategyKind,
};
use std::sync::Arc;

const ROOT: &str = "Q: q\n";

/// The prompt that continues the partial solution `steps`.
fn at(steps: &[&str]) -> String {
    let mut p = ROOT.to_string();
    for s in steps {
        p.push_str(s);
        p.push('\n');
    }
    p
}

fn steps(list: &[&str]) -> Vec<String> {
    list.iter().map(|s| s.to_string()).collect()
}

fn calls(list: &[(&str, u32)]) -> Vec<(String, u32)> {
    list.iter().map(|(p, n)| (p.to_string(), *n)).collect()
}

fn params(strategy: StrategyKind, generations: u32, max_tokens: u64) -> SolveParams {
    let mut p = SolveParams::new("q", Budget::new(generations, max_tokens, None).unwrap(), 1);
    p.strategy = Some(strategy);
    p
}

async fn run(
    g: &ScriptedGenerator,
    v: &ScriptedVerifier,
    strategy: StrategyKind,
    generations: u32,
) -> Outcome {
    solve(
        g,
        Some(v),
        &SolutionFormat::default(),
        params(strategy, generations, 0),
        None,
    )
    .await
    .unwrap()
}

fn close(a: f32, b: f32) -> bool {
    (a - b).abs() < 1e-5
}

// ---------------------------------------------------------------------------------
// Beam search and lookahead

#[tokio::test]
async fn beam_search_keeps_the_top_n_over_m_by_score_each_round() {
    // N = 4 beams, width M = 2: each round keeps the best N/M = 2 paths of all open
    // ones (not the best child of each parent) and expands each 2 ways.
    let g = ScriptedGenerator::new()
        .reply(ROOT, ["a\n", "b\n", "c\n", "d\n"])
        .reply(&at(&["b"]), ["b1\n", "b2\n"])
        .reply(&at(&["d"]), ["d1\n", "d2\n"])
        .reply(&at(&["b", "b1"]), ["Answer: 7", "Answer: 7"])
        .reply(&at(&["b", "b2"]), ["Answer: 9", "Answer: 7"]);
    let v = ScriptedVerifier::per_step(
        &[
            ("a", 0.1),
            ("b", 0.9),
            ("c", 0.5),
            ("d", 0.7),
            // Both survivors of round 2 are children of b: d1 (0.6) is d's best child
            // but only third overall.
            ("b1", 0.85),
            ("b2", 0.8),
            ("d1", 0.6),
            ("d2", 0.4),
            ("Answer: 7", 0.4),
            ("Answer: 9", 0.9),
        ],
        0.0,
    );
    let o = run(&g, &v, StrategyKind::parse("beam_search:2").unwrap(), 4).await;
    // Round 1 keeps b (0.9) and d (0.7); round 2 keeps b/b1 (0.85) and b/b2 (0.8).
    assert_eq!(
        g.calls(),
        calls(&[
            (ROOT, 4),
            (&at(&["b"]), 2),
            (&at(&["d"]), 2),
            (&at(&["b", "b1"]), 2),
            (&at(&["b", "b2"]), 2),
        ])
    );
    assert_eq!(
        v.scored(),
        vec![
            vec![steps(&["a"]), steps(&["b"]), steps(&["c"]), steps(&["d"])],
            vec![
                steps(&["b", "b1"]),
                steps(&["b", "b2"]),
                steps(&["d", "d1"]),
                steps(&["d", "d2"]),
            ],
            vec![
                steps(&["b", "b1", "Answer: 7"]),
                steps(&["b", "b1", "Answer: 7"]),
                steps(&["b", "b2", "Answer: 9"]),
                steps(&["b", "b2", "Answer: 7"]),
            ],
        ]
    );
    // Final pick, best-of-N weighted: "7" weighs 3 x 0.4 = 1.2 against "9"'s 0.9; the
    // first best-scored "7" wins.
    assert_eq!(o.answer.as_deref(), Some("7"));
    assert_eq!(o.solution, "b\nb1\nAnswer: 7");
    assert!(close(o.score, 0.4), "{}", o.score);
    assert_eq!((o.candidates, o.usage.generations), (4, 4));
}

#[tokio::test]
async fn lookahead_costs_n_times_k_plus_one_and_picks_the_step_with_the_best_rollout() {
    // Budget 6 with k = 2: 6 / (2 + 1) = 2 beams, width 2, so 1 beam survives a round.
    let g = ScriptedGenerator::new()
        .reply(ROOT, ["a\n", "b\n"])
        .greedy(&at(&["a"]), ["a1\na2\n"])
        .greedy(&at(&["b"]), ["b1\nb2\n"])
        .reply(&at(&["b"]), ["Answer: 1", "Answer: 2"]);
    let v = ScriptedVerifier::per_step(
        &[
            // a looks better on its own, but its rollout ends worse than b's.
            ("a", 0.9),
            ("b", 0.2),
            ("a2", 0.1),
            ("b2", 0.8),
            ("Answer: 1", 0.3),
            ("Answer: 2", 0.6),
        ],
        0.5,
    );
    let o = run(&g, &v, StrategyKind::parse("lookahead:2").unwrap(), 6).await;
    // N(k+1) = 2 x 3 generations, charged up front.
    assert_eq!(o.usage.generations, 6);
    let reqs = g.requests();
    let shape: Vec<(String, u32, f32, u32)> = reqs
        .iter()
        .map(|r| (r.prompt.clone(), r.n, r.temperature, r.max_tokens))
        .collect();
    assert_eq!(
        shape,
        vec![
            (ROOT.to_string(), 2, 0.8, 256),
            // Greedy rollouts of k = 2 steps of at most 256 tokens.
            (at(&["a"]), 1, 0.0, 512),
            (at(&["b"]), 1, 0.0, 512),
            // b is expanded: its rollout scored 0.8 against a's 0.1.
            (at(&["b"]), 2, 0.8, 256),
        ]
    );
    assert_eq!(
        v.scored(),
        vec![
            vec![steps(&["a"]), steps(&["b"])],
            vec![steps(&["a", "a1", "a2"]), steps(&["b", "b1", "b2"])],
            vec![steps(&["b", "Answer: 1"]), steps(&["b", "Answer: 2"])],
        ]
    );
    // The rollout is discarded: the candidate keeps its own steps and scores.
    assert_eq!(o.answer.as_deref(), Some("2"));
    assert_eq!(o.solution, "b\nAnswer: 2");
    assert!(close(o.score, 0.6), "{}", o.score);

    // Below k + 1 generations not even one beam fits.
    let g = ScriptedGenerator::new();
    let e = solve(
        &g,
        Some(&v),
        &SolutionFormat::default(),
        params(StrategyKind::parse("lookahead:2").unwrap(), 2, 0),
        None,
    )
    .await
    .unwrap_err();
    assert!(
        matches!(&e, SearchError::Invalid(m) if m.contains("costs 3 generations per beam")),
        "{e:?}"
    );
    assert!(g.calls().is_empty());
}

// ---------------------------------------------------------------------------------
// REBASE

#[tokio::test]
async fn rebase_shares_the_width_by_softmax_of_score_over_temperature() {
    // N = 4, T = 0.4. The first round finishes one solution, so the width left is
    // W = 4 - 1 = 3, shared among the 3 open nodes a (0.9), b (0.5), c (0.1):
    //   weights exp((s - 0.9) / 0.4) = exp(0), exp(-1), exp(-2) = 1, 0.368, 0.135
    //   shares of 3 (sum 1.503): 1.996, 0.734, 0.270 -> floors 1, 0, 0; the 2 left
    //   go to the largest remainders (a 0.996, b 0.734) -> widths 2, 1, 0: c is
    //   pruned.
    let g = ScriptedGenerator::new()
        .reply(ROOT, ["a\n", "b\n", "c\n", "Answer: 5"])
        .reply(&at(&["a"]), ["Answer: 7", "Answer: 7"])
        .reply(&at(&["b"]), ["Answer: 8"]);
    let v = ScriptedVerifier::per_step(
        &[
            ("a", 0.9),
            ("b", 0.5),
            ("c", 0.1),
            ("Answer: 5", 0.3),
            ("Answer: 7", 0.6),
            ("Answer: 8", 0.95),
        ],
        0.0,
    );
    let rebase = StrategyKind::Rebase {
        temperature: 0.4,
        max_rounds: 40,
    };
    let o = run(&g, &v, rebase, 4).await;
    assert_eq!(
        g.calls(),
        calls(&[(ROOT, 4), (&at(&["a"]), 2), (&at(&["b"]), 1)])
    );
    // Candidates: 5 (0.3), 7 (0.6), 7 (0.6), 8 (0.95): "7" weighs 1.2.
    assert_eq!(o.answer.as_deref(), Some("7"));
    assert_eq!(o.solution, "a\nAnswer: 7");
    assert_eq!((o.candidates, o.usage.generations), (4, 4));
}

// ---------------------------------------------------------------------------------
// DVTS

/// DVTS with N = 4, width 2: two subtrees, each started by its own call for 2 first
/// steps (a, b and c, d), each keeping only its best child per depth.
fn dvts_script(c: f32) -> (ScriptedGenerator, ScriptedVerifier) {
    let g = ScriptedGenerator::new()
        .reply(ROOT, ["a\n", "b\n", "c\n", "d\n"])
        .reply(&at(&["a"]), ["a1\n", "a2\n"])
        .reply(&at(&["a", "a2"]), ["Answer: 1", "Answer: 2"])
        .reply(&at(&["c"]), ["c1\n", "c2\n"])
        .reply(&at(&["c", "c1"]), ["Answer: 3", "Answer: 4"])
        .reply(&at(&["d"]), ["d1\n", "d2\n"])
        .reply(&at(&["d", "d1"]), ["Answer: 3", "Answer: 4"]);
    let v = ScriptedVerifier::per_step(
        &[
            // Subtree 1 (a, b): b would be second overall, but a subtree keeps one.
            ("a", 0.9),
            ("b", 0.8),
            ("a1", 0.4),
            ("a2", 0.6),
            ("Answer: 1", 0.5),
            ("Answer: 2", 0.7),
            // Subtree 2 (c, d).
            ("c", c),
            ("d", 0.3),
            ("c1", 0.5),
            ("c2", 0.2),
            // d1 beats every child in subtree 1; it must not matter there.
            ("d1", 0.7),
            ("d2", 0.5),
            ("Answer: 3", 0.9),
            ("Answer: 4", 0.1),
        ],
        0.0,
    );
    (g, v)
}

#[tokio::test]
async fn dvts_subtrees_expand_on_their_own_scores_only() {
    let dvts = StrategyKind::parse("dvts:2").unwrap();
    let (g, v) = dvts_script(0.2);
    let o = run(&g, &v, dvts, 4).await;
    // Subtree 1: a (0.9 > b 0.8), then a2 (0.6 > a1 0.4), then Answer: 2 (0.7).
    // Subtree 2: d (0.3 > c 0.2), then d1 (0.7 > d2 0.5), then Answer: 3 (0.9).
    assert_eq!(
        g.calls(),
        calls(&[
            (ROOT, 2),
            (ROOT, 2),
            (&at(&["a"]), 2),
            (&at(&["d"]), 2),
            (&at(&["a", "a2"]), 2),
            (&at(&["d", "d1"]), 2),
        ])
    );
    // One candidate per subtree: "2" (0.7) and "3" (0.9).
    assert_eq!(o.candidates, 2);
    assert_eq!(o.answer.as_deref(), Some("3"));
    assert_eq!(o.solution, "d\nd1\nAnswer: 3");
    assert_eq!(o.usage.generations, 4);

    // Changing only subtree 2's scores (c now 0.95: best of all first steps) changes
    // only subtree 2's path; subtree 1 expands exactly as before.
    let (g2, v2) = dvts_script(0.95);
    let o2 = run(&g2, &v2, dvts, 4).await;
    assert_eq!(
        g2.calls(),
        calls(&[
            (ROOT, 2),
            (ROOT, 2),
            (&at(&["a"]), 2),
            (&at(&["c"]), 2),
            (&at(&["a", "a2"]), 2),
            (&at(&["c", "c1"]), 2),
        ])
    );
    assert_eq!(o2.solution, "c\nc1\nAnswer: 3");
}

// ---------------------------------------------------------------------------------
// Adaptive early stopping

#[tokio::test]
async fn adaptive_stopping_waits_for_four_answers_before_the_share_rule_fires() {
    // Waves of 1, budget 8, stop_share 0.75; every sample says 7 with reward 0.9.
    // The share rule needs max(4, wave) = 4 answered samples: it fires before the
    // fifth wave. (The margin rule would first fire at 5: 0.9 x 5 > 8 - 5.)
    let g = ScriptedGenerator::new().reply(ROOT, ["Answer: 7"; 8]);
    let v = ScriptedVerifier::per_step(&[("Answer: 7", 0.9)], 0.0);
    let adaptive = StrategyKind::Adaptive {
        wave: 1,
        share: 0.75,
        rule: Rule::Weighted,
    };
    let o = run(&g, &v, adaptive, 8).await;
    assert_eq!(o.usage.generations, 4);
    assert_eq!(g.calls(), calls(&[(ROOT, 1); 4]));
    assert_eq!(o.answer.as_deref(), Some("7"));
}

#[tokio::test]
async fn adaptive_stopping_fires_once_the_leader_cannot_be_overtaken() {
    // Majority vote, waves of 1, budget 6, stop_share 1 (so only a unanimous vote
    // stops by share). Before each wave, with `left` samples still allowed:
    //   7,7,3,7: leader 3 - runner-up 1 = 2, not > left 2: go on;
    //   7,7,3,7,7: 4 - 1 = 3 > left 1: stop after 5 samples.
    let g = ScriptedGenerator::new().reply(
        ROOT,
        [
            "Answer: 7",
            "Answer: 7",
            "Answer: 3",
            "Answer: 7",
            "Answer: 7",
            "Answer: 7",
        ],
    );
    let v = ScriptedVerifier::per_step(&[], 0.5);
    let adaptive = StrategyKind::Adaptive {
        wave: 1,
        share: 1.0,
        rule: Rule::Majority,
    };
    let o = run(&g, &v, adaptive, 6).await;
    assert_eq!(o.usage.generations, 5);
    assert_eq!(o.answer.as_deref(), Some("7"));
    assert!(close(o.score, 0.8), "vote share 4/5, got {}", o.score);
    // Majority needs no verifier.
    assert!(v.requests().is_empty());
}

// ---------------------------------------------------------------------------------
// Final selection over independent samples

/// Six samples: "7" three times (0.1 each), "9" once (0.95), "8" twice (0.6 each).
/// Majority says 7, the single best says 9, the sum of scores says 8 (1.2 > 0.95 > 0.3).
fn six_samples() -> (ScriptedGenerator, ScriptedVerifier) {
    let g = ScriptedGenerator::new().reply(
        ROOT,
        [
            "Answer: 7",
            "Answer: 7",
            "Answer: 7",
            "Answer: 9",
            "Answer: 8",
            "Answer: 8",
        ],
    );
    let v = ScriptedVerifier::per_step(
        &[("Answer: 7", 0.1), ("Answer: 9", 0.95), ("Answer: 8", 0.6)],
        0.0,
    );
    (g, v)
}

#[tokio::test]
async fn majority_picks_the_most_frequent_answer() {
    let (g, v) = six_samples();
    let o = run(&g, &v, StrategyKind::SelfConsistency, 6).await;
    // One wave: 6 samples fit in a wave of 8.
    assert_eq!(g.calls(), calls(&[(ROOT, 6)]));
    assert_eq!(o.answer.as_deref(), Some("7"));
    assert!(close(o.score, 0.5), "vote share 3/6, got {}", o.score);
    let votes: Vec<(&str, u32)> = o
        .tallies
        .iter()
        .map(|t| (t.answer.as_str(), t.votes))
        .collect();
    assert_eq!(votes, [("7", 3), ("8", 2), ("9", 1)]);
    assert!(v.requests().is_empty(), "majority scores nothing");
}

#[tokio::test]
async fn best_of_n_picks_the_single_best_scored_sample() {
    let (g, v) = six_samples();
    let o = run(&g, &v, StrategyKind::BestOfN, 6).await;
    assert_eq!(o.answer.as_deref(), Some("9"));
    assert!(close(o.score, 0.95), "{}", o.score);
    assert_eq!(o.candidates, 6);
}

#[tokio::test]
async fn weighted_best_of_n_picks_the_answer_with_the_largest_score_sum() {
    let (g, v) = six_samples();
    let o = run(&g, &v, StrategyKind::WeightedBestOfN, 6).await;
    assert_eq!(o.answer.as_deref(), Some("8"));
    assert!(close(o.score, 0.6), "{}", o.score);
    let tallies: Vec<(&str, u32)> = o
        .tallies
        .iter()
        .map(|t| (t.answer.as_str(), t.votes))
        .collect();
    assert_eq!(tallies, [("8", 2), ("9", 1), ("7", 3)]);
    assert!(close(o.tallies[0].weight, 1.2), "{:?}", o.tallies);
    assert!(close(o.tallies[2].weight, 0.3), "{:?}", o.tallies);
}

// ---------------------------------------------------------------------------------
// Sequential revisions

#[tokio::test]
async fn revisions_revise_each_chain_from_the_step_the_verifier_doubts() {
    // 4 attempts in 2 chains. Round 1 starts both chains from the question.
    let g = ScriptedGenerator::new()
        .reply(ROOT, ["a\nb\nAnswer: 1", "y\nz\nAnswer: 2"])
        // Round 2, chain 1: rewards 0.9, 0.3, 0.3 fall to 0.9, 0.33 and 1.0 of the one
        // before, so "b" is doubted and "a" kept. Of its 8 proposals "b" again is out
        // however it scores, and "e" (0.6) beats "c" (0.5, proposed 4 times).
        .reply(
            &at(&["a"]),
            ["b\n", "c\n", "d\n", "c\n", "c\n", "e\n", "b\n", "c\n"],
        )
        // Chain 2: rewards 0.8, 0.7, 0.1 fall to 0.8, 0.875 and 0.14: the answer line
        // is doubted. "Answer: 4" and "Answer: 5" score the same and are proposed
        // once each: the earlier wins.
        .reply(
            &at(&["y", "z"]),
            ["Answer: 2", "Answer: 4", "Answer: 2", "Answer: 5"]
                .into_iter()
                .chain(["Answer: 2"; 4]),
        )
        // Then the model finishes each revision; the second is already whole.
        .reply(&at(&["a", "e"]), ["Answer: 3"])
        .reply(&at(&["y", "z", "Answer: 4"]), [""]);
    let v = ScriptedVerifier::per_step(
        &[
            ("a", 0.9),
            ("b", 0.3),
            ("e", 0.6),
            ("Answer: 1", 0.3),
            ("y", 0.8),
            ("z", 0.7),
            ("Answer: 2", 0.1),
            ("Answer: 3", 0.8),
            ("Answer: 4", 0.6),
            ("Answer: 5", 0.6),
        ],
        0.5,
    );
    let o = run(&g, &v, StrategyKind::parse("revisions:2").unwrap(), 4).await;
    assert_eq!(
        g.calls(),
        calls(&[
            (ROOT, 1),
            (ROOT, 1),
            (&at(&["a"]), 8),
            (&at(&["y", "z"]), 8),
            (&at(&["a", "e"]), 1),
            (&at(&["y", "z", "Answer: 4"]), 1),
        ])
    );
    // Every attempt is scored whole, all of a round in one call; between the rounds
    // one call scores the 16 proposals, each after its chain's kept steps.
    let scored = v.scored();
    assert_eq!(scored.len(), 3);
    assert_eq!(
        scored[0],
        vec![
            steps(&["a", "b", "Answer: 1"]),
            steps(&["y", "z", "Answer: 2"])
        ]
    );
    assert_eq!(scored[1].len(), 16);
    assert_eq!(
        (&scored[1][0], &scored[1][8]),
        (&steps(&["a", "b"]), &steps(&["y", "z", "Answer: 2"]))
    );
    assert_eq!(
        scored[2],
        vec![
            steps(&["a", "e", "Answer: 3"]),
            steps(&["y", "z", "Answer: 4"])
        ]
    );
    // Last-step scores: "1" 0.3, "2" 0.1, "3" 0.8, "4" 0.6.
    assert_eq!(o.answer.as_deref(), Some("3"));
    assert_eq!(o.solution, "a\ne\nAnswer: 3");
    // The proposals are tokens, not generations: one generation per attempt.
    assert_eq!((o.candidates, o.usage.generations), (4, 4));
}

#[tokio::test]
async fn a_revision_whose_proposals_all_repeat_the_doubted_step_keeps_it() {
    // One chain of 2: the only step is doubted; every proposal repeats it, so the
    // revision is the same line again, finished by the model.
    let g = ScriptedGenerator::new()
        .reply(ROOT, ["Answer: 1"])
        .reply(ROOT, ["Answer: 1"; 8])
        .reply(&at(&["Answer: 1"]), [""]);
    let v = ScriptedVerifier::per_step(&[], 0.4);
    let o = run(&g, &v, StrategyKind::parse("revisions:1").unwrap(), 2).await;
    assert_eq!(
        g.calls(),
        calls(&[(ROOT, 1), (ROOT, 8), (&at(&["Answer: 1"]), 1)])
    );
    assert_eq!(o.candidates, 2);
    assert_eq!(o.solution, "Answer: 1");
}

#[tokio::test]
async fn unguided_revisions_show_the_model_at_most_its_last_four_attempts() {
    // Under the majority rule nothing is scored, so nothing locates an error: the
    // model is shown its earlier attempts. One chain of 6 attempts; attempt i answers i.
    let prompts = [
        "Q: q\n".to_string(),
        "Q: q\nAttempt:\nAnswer: 0\nRevision:\n".to_string(),
        "Q: q\nAttempt:\nAnswer: 0\nAttempt:\nAnswer: 1\nRevision:\n".to_string(),
        "Q: q\nAttempt:\nAnswer: 0\nAttempt:\nAnswer: 1\nAttempt:\nAnswer: 2\nRevision:\n"
            .to_string(),
        "Q: q\nAttempt:\nAnswer: 0\nAttempt:\nAnswer: 1\nAttempt:\nAnswer: 2\nAttempt:\nAnswer: 3\nRevision:\n"
            .to_string(),
        // The sixth attempt sees attempts 1..=4: attempt 0 has dropped out.
        "Q: q\nAttempt:\nAnswer: 1\nAttempt:\nAnswer: 2\nAttempt:\nAnswer: 3\nAttempt:\nAnswer: 4\nRevision:\n"
            .to_string(),
    ];
    let mut g = ScriptedGenerator::new();
    for (i, p) in prompts.iter().enumerate() {
        g = g.reply(p, [format!("Answer: {i}")]);
    }
    let v = ScriptedVerifier::per_step(&[], 0.5);
    let majority = StrategyKind::Revisions {
        chains: 1,
        rule: Rule::Majority,
    };
    run(&g, &v, majority, 6).await;
    assert!(v.scored().is_empty());
    let sent: Vec<String> = g.requests().into_iter().map(|r| r.prompt).collect();
    assert_eq!(sent, prompts);
}

// ---------------------------------------------------------------------------------
// Compute-optimal

fn policy() -> Arc<Policy> {
    // Row 8 names a different strategy per bin; rows 4 and 16 must not be used at
    // budget 8.
    let p: Policy = serde_json::from_str(
        r#"{"probes": 4, "bin_edges": [0.2, 0.4, 0.6, 0.8],
            "table": {
              "4": ["self_consistency", "self_consistency", "self_consistency",
                    "self_consistency", "self_consistency"],
              "8": ["best_of_n", "weighted_best_of_n", "self_consistency",
                    "adaptive:4", "revisions:2"],
              "16": ["dvts:2", "dvts:2", "dvts:2", "dvts:2", "dvts:2"]}}"#,
    )
    .unwrap();
    p.validate().unwrap();
    Arc::new(p)
}

async fn route(g: &ScriptedGenerator, v: &ScriptedVerifier) -> Outcome {
    let mut p = params(StrategyKind::ComputeOptimal, 8, 0);
    p.policy = Some(policy());
    solve(g, Some(v), &SolutionFormat::default(), p, None)
        .await
        .unwrap()
}

#[tokio::test]
async fn compute_optimal_routes_by_the_mean_probe_score() {
    // Easy: 4 probes at 0.9, mean 0.9 >= every edge: bin 1 (index 0), best_of_n.
    let g = ScriptedGenerator::new().reply(ROOT, ["Answer: 7"; 8]);
    let v = ScriptedVerifier::per_step(&[("Answer: 7", 0.9)], 0.0);
    let o = route(&g, &v).await;
    let d = o.decision.clone().unwrap();
    assert_eq!((d.bin, d.chosen), (0, StrategyKind::BestOfN));
    assert!(close(d.mean_probe_score, 0.9));
    assert_eq!(o.strategy, StrategyKind::BestOfN);
    // Probes (one wave of 4), then best-of-N with the 4 generations left; the probes
    // are candidates too.
    assert_eq!(g.calls(), calls(&[(ROOT, 4), (ROOT, 4)]));
    assert_eq!((o.candidates, o.usage.generations), (8, 8));

    // Middle: probe rewards 0.9, 0.5, 0.7, 0.7, mean 0.7: at or above 0.2, 0.4 and 0.6
    // but not 0.8, so bin 2 (index 1): weighted_best_of_n.
    let g = ScriptedGenerator::new()
        .reply(ROOT, ["Answer: 1", "Answer: 2", "Answer: 3", "Answer: 4"])
        .reply(ROOT, ["Answer: 1"; 4]);
    let v = ScriptedVerifier::per_step(
        &[
            ("Answer: 1", 0.9),
            ("Answer: 2", 0.5),
            ("Answer: 3", 0.7),
            ("Answer: 4", 0.7),
        ],
        0.0,
    );
    let o = route(&g, &v).await;
    let d = o.decision.clone().unwrap();
    assert_eq!((d.bin, d.chosen), (1, StrategyKind::WeightedBestOfN));
    assert!(close(d.mean_probe_score, 0.7));

    // Hard: mean 0.1 is below every edge: bin 5 (index 4), two revision chains. Each
    // chain's first attempt, "Answer: 5", is its only step and doubted; of its 8
    // proposals "Answer: 6" (0.1) outscores "Answer: 7" (0), and the model adds
    // nothing after it.
    let g = ScriptedGenerator::new()
        .reply(ROOT, ["Answer: 5"; 6])
        .reply(
            ROOT,
            ["Answer: 5", "Answer: 6", "Answer: 6", "Answer: 7"].repeat(4),
        )
        .reply(&at(&["Answer: 6"]), ["", ""]);
    let v = ScriptedVerifier::per_step(&[("Answer: 5", 0.1), ("Answer: 6", 0.1)], 0.0);
    let o = route(&g, &v).await;
    let d = o.decision.clone().unwrap();
    assert_eq!(
        (d.bin, d.chosen),
        (
            4,
            StrategyKind::Revisions {
                chains: 2,
                rule: Rule::Weighted
            }
        )
    );
    let revision = at(&["Answer: 6"]);
    assert_eq!(
        g.calls(),
        calls(&[
            (ROOT, 4),
            (ROOT, 1),
            (ROOT, 1),
            (ROOT, 8),
            (ROOT, 8),
            (&revision, 1),
            (&revision, 1)
        ])
    );
    assert_eq!(o.usage.generations, 8);
}

// ---------------------------------------------------------------------------------
// Budgets

#[tokio::test]
async fn sampling_launches_only_waves_whose_worst_case_fits_the_token_budget() {
    // Solutions of at most 16 tokens; one-byte tokens; scoring costs the question's
    // byte plus the steps' bytes. A scored sample's worst case is 1 + 16 x 2 = 33
    // tokens, so with 100 tokens:
    //   wave 1: 3 samples (99 <= 100; 4 would need 132). Each "Answer: 7" really
    //           costs 9 generated + 10 scored = 19 tokens: 57 spent, 43 left.
    //   wave 2: 1 sample (33 <= 43). 76 spent, 24 left.
    //   then not even a shortened sample fits: (24 - 1) / 2 = 11 tokens < 32.
    let format = SolutionFormat {
        max_solution_tokens: 16,
        ..SolutionFormat::default()
    };
    let g = ScriptedGenerator::new().reply(ROOT, ["Answer: 7"; 8]);
    let v = ScriptedVerifier::per_step(&[("Answer: 7", 0.9)], 0.0);
    let o = solve(
        &g,
        Some(&v),
        &format,
        params(StrategyKind::WeightedBestOfN, 8, 100),
        None,
    )
    .await
    .unwrap();
    assert_eq!(g.calls(), calls(&[(ROOT, 3), (ROOT, 1)]));
    assert!(g.requests().iter().all(|r| r.max_tokens == 16));
    assert_eq!(o.usage.generations, 4);
    assert_eq!(
        (o.usage.generator_tokens, o.usage.verifier_tokens),
        (36, 40)
    );
}

/// Answers any call: steps until the second, then the answer; rollouts and whole
/// solutions of a few steps. Texts are long enough that a wrong reservation shows.
fn anything() -> (ScriptedGenerator, ScriptedVerifier) {
    let g = ScriptedGenerator::new().otherwise(|req| {
        let depth = req.prompt.lines().count() - 1;
        if req.stop.is_empty() {
            format!(
                "{}\n{}\nAnswer: {}",
                "w".repeat(30),
                "v".repeat(20),
                req.seed % 3
            )
        } else if depth >= 2 {
            format!("Answer: {}", req.seed % 3)
        } else {
            format!("{}\n", "s".repeat(40 + depth))
        }
    });
    let v =
        ScriptedVerifier::new(|steps| steps.iter().map(|s| (s.len() % 7) as f32 / 7.0).collect());
    (g, v)
}

#[tokio::test]
async fn no_strategy_spends_past_any_limit() {
    let format = SolutionFormat {
        max_solution_tokens: 64,
        ..SolutionFormat::default()
    };
    let specs = ponder_search::scripted::STRATEGY_SPECS;
    let mut answered = 0;
    for spec in specs {
        for (generations, max_tokens) in [
            (1, 0),
            (3, 0),
            (8, 0),
            (8, 300),
            (16, 700),
            (16, 2000),
            (5, 120),
            (12, 64),
        ] {
            let (g, v) = anything();
            let p = params(StrategyKind::parse(spec).unwrap(), generations, max_tokens);
            let result = solve(&g, Some(&v), &format, p, None).await;
            answered += usize::from(result.is_ok());
            ponder_search::scripted::assert_within_budget(spec, generations, max_tokens, &result);
        }
    }
    assert!(answered >= 60, "only {answered} budgets were usable");
}

#[tokio::test]
async fn no_strategy_spends_past_a_flops_limit() {
    use ponder_search::traits::{GeneratorLimits, VerifierCost};
    let format = SolutionFormat {
        max_solution_tokens: 64,
        ..SolutionFormat::default()
    };
    // A small and a large generator, each with a verifier of another size: a 64-token
    // sample after the 5-byte prompt costs at most 2 x P x (64 + 7) FLOPs to draw, so
    // the limits, in those units, allow from no whole sample (0.5) to the whole budget
    // of 16 generations with room to spare (100; a step-level search reserves a
    // whole round of N steps and their scoring at once).
    let mut answered = 0;
    let mut limited = 0;
    for (gen_params, ver_params) in [(1_000u64, 3_000u64), (40_000, 2_000)] {
        let sample = 2.0 * gen_params as f64 * 71.0;
        for spec in ponder_search::scripted::STRATEGY_SPECS {
            for max_flops in [0.5, 2.0, 8.0, 30.0, 100.0].map(|k| k * sample) {
                let (g, v) = anything();
                let g = g.with_limits(GeneratorLimits {
                    max_token_bytes: 1,
                    context_length: 1 << 20,
                    max_samples: 256,
                    parameters: gen_params,
                });
                let v = v.with_cost(VerifierCost {
                    prompt_overhead: 4,
                    step_overhead: 2,
                    parameters: ver_params,
                });
                let mut p = params(StrategyKind::parse(spec).unwrap(), 16, 0);
                p.budget = p.budget.with_max_flops(max_flops).unwrap();
                let result = solve(&g, Some(&v), &format, p, None).await;
                let label = format!("{spec} on {gen_params}/{ver_params} parameters");
                ponder_search::scripted::assert_within_flops(&label, 16, max_flops, &result);
                if let Ok(o) = &result {
                    answered += 1;
                    // The FLOPs each call really cost, from what it processed.
                    let sampled: u64 = g.requests().iter().map(|r| r.prompt.len() as u64).sum();
                    assert!(o.usage.generator_flops >= 2.0 * gen_params as f64 * sampled as f64);
                    limited += usize::from(o.usage.flops > 0.5 * max_flops);
                }
            }
        }
    }
    assert!(answered >= 65, "only {answered} budgets were usable");
    assert!(
        limited >= 30,
        "only {limited} searches came near their FLOPs limit"
    );
}

#[tokio::test]
async fn calls_are_seeded_in_call_order() {
    // Call i of a query samples with wave_seed(seed, i), whatever the strategy, so a
    // replayed draw equals a live run.
    let (g, v) = anything();
    let o = run(&g, &v, StrategyKind::parse("beam_search:2").unwrap(), 4).await;
    assert!(o.answer.is_some());
    let seeds: Vec<u64> = g.requests().iter().map(|r| r.seed).collect();
    let expected: Vec<u64> = (0..seeds.len() as u64)
        .map(|i| ponder_search::solve::wave_seed(1, i))
        .collect();
    assert_eq!(seeds, expected);
    assert!(seeds.len() >= 3);
}

#[tokio::test]
async fn greedy_is_one_unscored_sample_at_temperature_zero() {
    // Sampled calls would answer 9; the one greedy call answers 7.
    let g = ScriptedGenerator::new()
        .reply(ROOT, ["Answer: 9"; 8])
        .greedy(ROOT, ["Answer: 7"]);
    let v = ScriptedVerifier::per_step(&[], 0.5);
    let o = run(&g, &v, StrategyKind::Greedy, 8).await;
    assert_eq!(o.answer.as_deref(), Some("7"));
    assert_eq!((o.usage.generations, o.candidates), (1, 1));
    assert_eq!(g.requests()[0].temperature, 0.0);
    assert!(v.requests().is_empty(), "greedy scored its sample");
    assert_eq!(o.usage.verifier_tokens, 0);
}
