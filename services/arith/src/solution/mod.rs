//! The step-by-step solution format the generator model writes.
//!
//! # Why this format
//!
//! Ponder's models are tiny. A tiny transformer cannot multiply 47 by 38 in one token,
//! but it can recall a single-digit fact (`7*8=56`) and copy text. So a solution is
//! written such that every token is either a single-digit fact about two digits and a
//! carry, or a copy of something already on the page. Each step is then a pure function
//! of the previous line, which also makes every step exactly checkable
//! ([`crate::checker`]) and gives process reward models a precise notion of the first
//! wrong step.
//!
//! # Format
//!
//! A solution is one step per line, then a final line `Answer: <value>`:
//!
//! ```text
//! 47+38: 7+8=15, 4+3+1=8 => 85*3-19
//! 85*3: 5*3=15, 8*3+1=25 => 255-19
//! 255-19: 15-9=6, 5-1-1=3, 2-0=2 => 236
//! Answer: 236
//! ```
//!
//! That is the solution of `(47+38)*3-19`. Each step line is
//! `<a><op><b>: <work> => <rest>`:
//!
//! - It reduces exactly one binary operation: the next one in evaluation order, i.e. the
//!   first operation, in a left-to-right post-order traversal of the expression tree,
//!   whose two operands are both numbers. `<a>` and `<b>` are written in the order they
//!   appear in the expression (the left operand is never swapped with the right one).
//! - `<rest>` is the whole expression after that operation is replaced by its value. A
//!   parenthesised sub-expression that becomes a single number loses its parentheses;
//!   all other text is copied unchanged. The last step's `<rest>` is a bare number.
//! - `<work>` processes digits from the units column upward. Every column of the longer
//!   operand is shown; a missing digit counts as 0. Columns are separated by `, `.
//!
//! Work per operation:
//!
//! - **Addition** `a+b`: per column `x+y=s`, or `x+y+1=s` with an incoming carry; `s` is
//!   the full column sum (its tens digit is the next carry). A carry out of the top
//!   column is written as a last column `0+0+1=1`.
//!   `47+38: 7+8=15, 4+3+1=8 => 85`, `95+7: 5+7=12, 9+0+1=10, 0+0+1=1 => 102`.
//! - **Subtraction** `a-b` (`a >= b`): with top digit `x`, bottom digit `y` and incoming
//!   borrow `r`, `v = x-y-r`. If `v >= 0` the column is `x-y=v` (`x-y-1=v` with a borrow);
//!   otherwise ten is borrowed, shown as a leading 1 on `x`: `1x-y=v+10` (`1x-y-1=v+10`).
//!   Leading zeros of the result are dropped, but every column is shown.
//!   `255-19: 15-9=6, 5-1-1=3, 2-0=2 => 236`, `100-1: 10-1=9, 10-0-1=9, 1-0-1=0 => 99`.
//! - **Multiplication by a single digit** `a*b` (`b < 10`): per digit `x` of `a`,
//!   `x*b=p`, or `x*b+c=p` with an incoming carry `c > 0`; `p` is the full product (its
//!   tens are the next carry). A final carry is just the leading part of the result.
//!   `85*3: 5*3=15, 8*3+1=25 => 255`.
//! - **Multiplication by a multi-digit number** `a*b` (`b >= 10`): for each digit `d` of
//!   `b`, units first, a partial product `a*d: <single-digit work>`; then the partial
//!   products, each shifted by its position (multiplied by 10, 100, ...), are added one by
//!   one: `sum <p0>+<p1*10>: <addition work>`, then `sum <s>+<p2*100>: ...`. The parts
//!   are separated by ` ; `. A zero digit of `b` is not special: `47*0: 7*0=0, 4*0=0`
//!   and its shifted partial product is written `0`.
//!   `47*38: 47*8: 7*8=56, 4*8+5=37 ; 47*3: 7*3=21, 4*3+2=14 ; sum 376+1410: 6+0=6, 7+1=8, 3+4=7, 0+1=1 => 1786`.
//!
//! # Prompts
//!
//! The model continues a prompt with step lines. [`prompt`] is `Q: <question>\n`;
//! [`revision_prompt`] (sequential revisions) is `Q: <question>\n`, then per previous
//! attempt `Attempt:\n<attempt text>\n`, then `Revision:\n`.

use serde::{Deserialize, Serialize};

use crate::task::{parse, Expr, GrammarError, Op};

mod faults;
mod work;

pub use faults::corrupt_step;
use work::{work, Faults};

/// Prefix of the final line of a solution.
pub const ANSWER_PREFIX: &str = "Answer: ";

/// A canonical solution: its step lines and the answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Solution {
    pub steps: Vec<String>,
    pub answer: u32,
}

impl Solution {
    /// The text the model is trained to write: the steps, one per line, then
    /// `Answer: N` (no trailing newline).
    pub fn text(&self) -> String {
        let mut text = self.steps.join("\n");
        if !text.is_empty() {
            text.push('\n');
        }
        text.push_str(&format!("{ANSWER_PREFIX}{}", self.answer));
        text
    }
}

/// The canonical solution of a question (which must satisfy the full grammar).
pub fn solve(question: &str) -> Result<Solution, GrammarError> {
    Ok(solve_expr(&parse(question)?))
}

/// The canonical solution starting from any expression, e.g. one stated by a wrong step.
pub fn solve_expr(expr: &Expr) -> Solution {
    let mut steps = Vec::new();
    let mut current = expr.clone();
    while let Some((next, line)) = next_step(&current) {
        steps.push(line);
        current = next;
    }
    let answer = current.value();
    Solution { steps, answer }
}

/// The canonical next step: the reduced expression and the full step line, or `None`
/// when `expr` is a single number.
pub fn next_step(expr: &Expr) -> Option<(Expr, String)> {
    let path = next_path(expr)?;
    let (a, op, b) = operands(node_at(expr, &path));
    let (work, value) = work(a, op, b, &mut Faults::default());
    let next = replace_at(expr, &path, Expr::Num(to_u32(value)));
    let line = step_line(a, op, b, &work, &next);
    Some((next, line))
}

/// The value on the last line that starts with `Answer: `; `None` when there is no such
/// line or its value is not a plain decimal number (surrounding whitespace is ignored).
pub fn extract_answer(text: &str) -> Option<u32> {
    text.lines()
        .rev()
        .find_map(|line| line.strip_prefix(ANSWER_PREFIX))
        .and_then(parse_answer_value)
}

pub(crate) fn parse_answer_value(s: &str) -> Option<u32> {
    let s = s.trim();
    if s.is_empty() || !s.bytes().all(|c| c.is_ascii_digit()) {
        return None;
    }
    s.parse().ok()
}

/// The prompt the model continues with a solution: `Q: <question>\n`.
pub fn prompt(question: &str) -> String {
    format!("Q: {question}\n")
}

/// The prompt for a sequential revision: the question, each previous attempt under
/// `Attempt:`, then `Revision:`. Trailing newlines of an attempt are dropped so every
/// attempt is followed by exactly one.
pub fn revision_prompt(question: &str, previous_attempts: &[String]) -> String {
    let mut text = prompt(question);
    for attempt in previous_attempts {
        text.push_str("Attempt:\n");
        text.push_str(attempt.trim_end_matches('\n'));
        text.push('\n');
    }
    text.push_str("Revision:\n");
    text
}

fn step_line(a: u32, op: Op, b: u32, work: &str, rest: &Expr) -> String {
    format!("{a}{}{b}: {work} => {rest}", op.symbol())
}

fn to_u32(v: u128) -> u32 {
    u32::try_from(v).unwrap_or(u32::MAX)
}

/// Path (false = left, true = right) to the first node in post-order whose children are
/// both numbers.
fn next_path(expr: &Expr) -> Option<Vec<bool>> {
    let mut path = Vec::new();
    let mut node = expr;
    while let Expr::Bin { lhs, rhs, .. } = node {
        let right = lhs.as_num().is_some();
        if right && rhs.as_num().is_some() {
            return Some(path);
        }
        path.push(right);
        node = if right { rhs } else { lhs };
    }
    None
}

fn child(node: &Expr, right: bool) -> &Expr {
    match node {
        Expr::Bin { rhs, .. } if right => rhs,
        Expr::Bin { lhs, .. } => lhs,
        Expr::Num(_) => panic!("path leads through a number"),
    }
}

fn node_at<'a>(expr: &'a Expr, path: &[bool]) -> &'a Expr {
    path.iter().fold(expr, |node, &right| child(node, right))
}

/// `expr` with the node at `path` replaced by `new`.
fn replace_at(expr: &Expr, path: &[bool], new: Expr) -> Expr {
    let mut out = expr.clone();
    let mut node = &mut out;
    for &right in path {
        node = match node {
            Expr::Bin { rhs, .. } if right => rhs,
            Expr::Bin { lhs, .. } => lhs,
            Expr::Num(_) => panic!("path leads through a number"),
        };
    }
    *node = new;
    out
}

/// One operation `a op b`.
type Step = (u32, Op, u32);

fn operands(node: &Expr) -> Step {
    match node {
        Expr::Bin { op, lhs, rhs, .. } => match (lhs.as_num(), rhs.as_num()) {
            (Some(a), Some(b)) => (a, *op, b),
            _ => panic!("operands of an unreduced node"),
        },
        Expr::Num(_) => panic!("operands of a number"),
    }
}

#[cfg(test)]
mod tests {
    use rand::SeedableRng;
    use rand_chacha::ChaCha8Rng;

    use super::*;
    use crate::task::{generate, parse_relaxed};

    fn line(expr: &str) -> String {
        next_step(&parse_relaxed(expr).unwrap()).unwrap().1
    }

    fn rest(line: &str) -> &str {
        line.rsplit_once(" => ").unwrap().1
    }

    #[test]
    fn documented_examples() {
        assert_eq!(line("47+38"), "47+38: 7+8=15, 4+3+1=8 => 85");
        assert_eq!(line("95+7"), "95+7: 5+7=12, 9+0+1=10, 0+0+1=1 => 102");
        assert_eq!(line("255-19"), "255-19: 15-9=6, 5-1-1=3, 2-0=2 => 236");
        assert_eq!(line("100-1"), "100-1: 10-1=9, 10-0-1=9, 1-0-1=0 => 99");
        assert_eq!(line("85*3"), "85*3: 5*3=15, 8*3+1=25 => 255");
        assert_eq!(
            line("47*38"),
            "47*38: 47*8: 7*8=56, 4*8+5=37 ; 47*3: 7*3=21, 4*3+2=14 ; sum 376+1410: 6+0=6, 7+1=8, 3+4=7, 0+1=1 => 1786"
        );
        assert_eq!(line("47*10"), "47*10: 47*0: 7*0=0, 4*0=0 ; 47*1: 7*1=7, 4*1=4 ; sum 0+470: 0+0=0, 0+7=7, 0+4=4 => 470");
        assert_eq!(line("0+0"), "0+0: 0+0=0 => 0");
        let s = solve("(47+38)*3-19").unwrap();
        assert_eq!(
            s.text(),
            "47+38: 7+8=15, 4+3+1=8 => 85*3-19\n85*3: 5*3=15, 8*3+1=25 => 255-19\n\
             255-19: 15-9=6, 5-1-1=3, 2-0=2 => 236\nAnswer: 236"
        );
        // Post-order, leftmost first; parentheses vanish once their content is a number.
        let s = solve("2*3+(4*(5+1))").unwrap();
        let rests: Vec<&str> = s.steps.iter().map(|l| rest(l)).collect();
        assert_eq!(rests, ["6+(4*(5+1))", "6+(4*6)", "6+24", "30"]);
        assert_eq!(solve("(1+2)").unwrap().steps, ["1+2: 1+2=3 => 3"]);
        assert!(solve("3 + 4").is_err());
    }

    #[test]
    fn random_solutions_reach_the_answer() {
        let mut rng = ChaCha8Rng::seed_from_u64(11);
        for i in 0..2_000 {
            let p = generate((i % 6) as u8 + 1, &mut rng);
            let s = solve(&p.question).unwrap();
            assert_eq!(s.answer, p.answer, "{}", p.question);
            assert_eq!(s.steps.len(), usize::from(p.level));
            assert_eq!(extract_answer(&s.text()), Some(p.answer));
            for (i, step) in s.steps.iter().enumerate() {
                let e = parse_relaxed(rest(step)).unwrap_or_else(|e| panic!("{step}: {e}"));
                assert_eq!(e.op_count() + i + 1, usize::from(p.level), "{step}");
                assert_eq!(e.value(), p.answer, "{step}");
            }
        }
    }

    #[test]
    fn answers_and_prompts() {
        assert_eq!(extract_answer("x\nAnswer: 12\n"), Some(12));
        assert_eq!(extract_answer("Answer: 1\nAnswer: 2"), Some(2));
        assert_eq!(extract_answer("Answer: 1\nAnswer: two"), None);
        assert_eq!(extract_answer("Answer: +3"), None);
        assert_eq!(extract_answer("no answer"), None);
        assert_eq!(prompt("1+2"), "Q: 1+2\n");
        let attempts = ["1+2: 1+2=4 => 4\nAnswer: 4".to_string(), "x\n".to_string()];
        assert_eq!(
            revision_prompt("1+2", &attempts),
            "Q: 1+2\nAttempt:\n1+2: 1+2=4 => 4\nAnswer: 4\nAttempt:\nx\nRevision:\n"
        );
        assert_eq!(revision_prompt("1+2", &[]), "Q: 1+2\nRevision:\n");
    }
}
