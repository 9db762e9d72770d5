//! How questions become prompts and how solutions split into steps and answers.
//!
//! The orchestrator is model-agnostic; this is the one place that knows the layout a
//! generator writes. The default is the layout of the bundled ponder-arith models
//! (`docs/arith.md`): prompt `Q: <question>\n`, one step per line, a final
//! `Answer: <value>` line, end of sequence after it. Other models get a JSON file with
//! the same fields (`--format` on the orchestrator).

use crate::error::{Result, SearchError};
use serde::{Deserialize, Serialize};
use std::path::Path;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SolutionFormat {
    /// `{question}` is replaced by the question.
    pub prompt_template: String,
    /// `{question}` and `{attempts}` (the earlier attempts, each under `attempt_header`).
    pub revision_template: String,
    pub attempt_header: String,
    /// Steps are separated by this string.
    pub step_delimiter: String,
    /// The answer is the rest of the last line starting with this prefix.
    pub answer_prefix: String,
    /// Most tokens a whole solution may take.
    pub max_solution_tokens: u32,
    /// Most tokens one step may take (step-level search samples one step per call and
    /// reserves this much per step; never more than `max_solution_tokens`).
    pub max_step_tokens: u32,
    /// Longest accepted question, in bytes.
    pub max_question_bytes: usize,
}

impl Default for SolutionFormat {
    fn default() -> Self {
        Self {
            prompt_template: "Q: {question}\n".into(),
            revision_template: "Q: {question}\n{attempts}Revision:\n".into(),
            attempt_header: "Attempt:\n".into(),
            step_delimiter: "\n".into(),
            answer_prefix: "Answer: ".into(),
            max_solution_tokens: 1024,
            max_step_tokens: 256,
            max_question_bytes: 4096,
        }
    }
}

impl SolutionFormat {
    pub fn from_file(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| SearchError::invalid(format!("reading {}: {e}", path.display())))?;
        serde_json::from_str(&text)
            .map_err(|e| SearchError::invalid(format!("{}: {e}", path.display())))
    }

    /// Rejects questions that cannot be sent to a model.
    pub fn check_question(&self, question: &str) -> Result<()> {
        if question.trim().is_empty() {
            return Err(SearchError::invalid(
                "question is empty; send the problem text, e.g. \"(47+38)*3-19\"",
            ));
        }
        if question.len() > self.max_question_bytes {
            return Err(SearchError::invalid(format!(
                "question is {} bytes; the limit is {}",
                question.len(),
                self.max_question_bytes
            )));
        }
        if question.contains(['\n', '\r', '\0']) {
            return Err(SearchError::invalid(
                "question must be a single line without control characters",
            ));
        }
        Ok(())
    }

    /// The most tokens one step is sampled with.
    pub fn step_tokens(&self) -> u32 {
        self.max_step_tokens.min(self.max_solution_tokens).max(1)
    }

    pub fn prompt(&self, question: &str) -> String {
        self.prompt_template.replace("{question}", question)
    }

    /// The prompt that continues a partial solution: the question's prompt, then each
    /// step followed by the step delimiter.
    pub fn partial_prompt(&self, question: &str, steps: &[String]) -> String {
        let mut prompt = self.prompt(question);
        for s in steps {
            prompt.push_str(s);
            prompt.push_str(&self.step_delimiter);
        }
        prompt
    }

    /// The prompt asking for a new attempt after `attempts` (oldest first).
    pub fn revision_prompt(&self, question: &str, attempts: &[String]) -> String {
        let mut block = String::new();
        for a in attempts {
            block.push_str(&self.attempt_header);
            block.push_str(a.trim_end_matches(self.step_delimiter.as_str()));
            block.push_str(&self.step_delimiter);
        }
        self.revision_template
            .replace("{question}", question)
            .replace("{attempts}", &block)
    }

    /// A solution's steps (the answer line included), without delimiters or empty steps.
    pub fn steps(&self, solution: &str) -> Vec<String> {
        solution
            .split(self.step_delimiter.as_str())
            .filter(|s| !s.trim().is_empty())
            .map(String::from)
            .collect()
    }

    /// The final answer, if the solution states one.
    pub fn answer(&self, solution: &str) -> Option<String> {
        solution
            .lines()
            .rev()
            .find_map(|l| l.strip_prefix(self.answer_prefix.as_str()))
            .map(|a| a.trim().to_string())
            .filter(|a| !a.is_empty())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arith_layout() {
        let f = SolutionFormat::default();
        let s = "47+38: 7+8=15, 4+3+1=8 => 85\nAnswer: 85\n";
        assert_eq!(f.prompt("47+38"), "Q: 47+38\n");
        assert_eq!(f.steps(s).len(), 2);
        assert_eq!(f.answer(s).as_deref(), Some("85"));
        assert_eq!(f.answer("47+38: 7+8=15"), None);
        assert_eq!(
            f.revision_prompt("1+1", &["1+1: 1+1=3 => 3\nAnswer: 3\n".into()]),
            "Q: 1+1\nAttempt:\n1+1: 1+1=3 => 3\nAnswer: 3\nRevision:\n"
        );
        assert!(f.check_question("").is_err());
        assert!(f.check_question("1+1\n2").is_err());
        assert!(f.check_question(&"1".repeat(5000)).is_err());
    }

    #[test]
    fn matches_the_arith_crate() {
        let q = "(47+38)*3-19";
        let f = SolutionFormat::default();
        assert_eq!(f.prompt(q), ponder_arith::solution::prompt(q));
        let text = ponder_arith::solution::solve(q).unwrap().text();
        assert_eq!(f.answer(&text).as_deref(), Some("236"));
        let attempts = vec![text.clone(), text];
        assert_eq!(
            f.revision_prompt(q, &attempts),
            ponder_arith::solution::revision_prompt(q, &attempts)
        );
    }
}
