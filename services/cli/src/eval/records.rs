//! The evaluation's records: one per question x strategy x budget, and the accuracy
//! table they summarize to.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::Path;

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Record {
    /// The question's position in the evaluated set (questions may repeat).
    #[serde(default)]
    pub index: usize,
    pub question: String,
    pub level: u8,
    pub truth: String,
    pub answer: String,
    pub correct: bool,
    pub strategy: String,
    pub chosen: String,
    pub difficulty_bin: u32,
    pub budget: u32,
    pub generations: u32,
    pub generator_tokens: u64,
    pub verifier_tokens: u64,
    pub flops: f64,
    /// For replayed records, the draw's latency pro rata (an estimate).
    pub latency_s: f64,
    /// Derived from the shared draw (see `ponder_search::replay`) rather than run.
    #[serde(default)]
    pub replayed: bool,
    /// The generator model that answered (`SolveResponse.model_id`; empty in-process,
    /// where every record runs on the default model).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub model: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct Cell {
    pub strategy: String,
    pub budget: u32,
    pub questions: usize,
    pub accuracy: f64,
    pub accuracy_by_level: BTreeMap<u8, f64>,
    pub mean_generations: f64,
    pub mean_tokens: f64,
    pub mean_latency_s: f64,
}

/// Accuracy and mean compute per (strategy, budget).
pub fn summarize(records: &[Record]) -> Vec<Cell> {
    let mut groups: BTreeMap<(String, u32), Vec<&Record>> = BTreeMap::new();
    for r in records {
        groups
            .entry((r.strategy.clone(), r.budget))
            .or_default()
            .push(r);
    }
    groups
        .into_iter()
        .map(|((strategy, budget), rs)| {
            let n = rs.len() as f64;
            let mut by_level: BTreeMap<u8, (usize, usize)> = BTreeMap::new();
            for r in &rs {
                let e = by_level.entry(r.level).or_default();
                e.0 += r.correct as usize;
                e.1 += 1;
            }
            Cell {
                strategy,
                budget,
                questions: rs.len(),
                accuracy: rs.iter().filter(|r| r.correct).count() as f64 / n,
                accuracy_by_level: by_level
                    .into_iter()
                    .map(|(l, (c, t))| (l, c as f64 / t as f64))
                    .collect(),
                mean_generations: rs.iter().map(|r| r.generations as f64).sum::<f64>() / n,
                mean_tokens: rs
                    .iter()
                    .map(|r| (r.generator_tokens + r.verifier_tokens) as f64)
                    .sum::<f64>()
                    / n,
                mean_latency_s: rs.iter().map(|r| r.latency_s).sum::<f64>() / n,
            }
        })
        .collect()
}

/// Prints the accuracy table: one row per strategy, one column per budget.
pub fn print_table(cells: &[Cell], out: &Path) {
    let mut budgets: Vec<u32> = cells.iter().map(|c| c.budget).collect();
    budgets.sort();
    budgets.dedup();
    print!("{:<22}", "strategy \\ budget");
    for b in &budgets {
        print!("{b:>14}");
    }
    println!();
    let mut names: Vec<&str> = cells.iter().map(|c| c.strategy.as_str()).collect();
    names.dedup();
    for name in names {
        print!("{name:<22}");
        for b in &budgets {
            match cells.iter().find(|c| c.strategy == name && c.budget == *b) {
                Some(c) => print!("{:>7.1}% ({:>4.1})", 100.0 * c.accuracy, c.mean_generations),
                None => print!("{:>14}", "-"),
            }
        }
        println!();
    }
    println!(
        "accuracy (mean generations used); records and summary in {}",
        out.display()
    );
}
