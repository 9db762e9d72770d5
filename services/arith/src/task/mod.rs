//! The arithmetic question grammar: parsing, printing and random generation.
//!
//! Ponder's bundled task is integer arithmetic because every step of a solution can be
//! checked exactly (see [`crate::checker`]), so search strategies and process reward
//! models can be evaluated against ground truth. This module fixes what a *question* is;
//! it is a public contract shared by the generator, the verifier and the data sets.
//!
//! # Grammar
//!
//! - A question is an integer expression written without spaces, e.g. `(47+38)*3-19`.
//! - It has 1 to 6 binary operators from `+ - *`; its *level* is that operator count.
//! - Operands are integers `0..=99` written without leading zeros (`0` is fine, `07` is not).
//! - Parentheses may group any sub-expression that contains at least one operator, also
//!   redundantly (`(3*4)+5`), but never a bare number (`(5)`), never nothing (`()`), and
//!   never twice around the same sub-expression (`((3+4))`).
//! - Usual precedence (`*` before `+`/`-`), operators of equal precedence associate left.
//! - Every intermediate value of the evaluation lies in `0..=9999`.
//!
//! Random questions: [`generate`] (demos, load, benchmarks) and [`train_question`] (the
//! trainer's stream) live in `sample.rs`; evaluation has its own sampler,
//! [`crate::eval_sampler`].
//!
//! [`parse`] enforces all of it. [`parse_relaxed`] accepts the expressions written on the
//! lines of a solution (any operator count, operands up to 9999, the same value range).
//! An [`Expr`] prints (`Display`) exactly as it was written.
//!
//! Error positions in [`GrammarError`] are 1-based character positions.

use std::fmt;

use serde::{Deserialize, Serialize};
use thiserror::Error;

mod sample;
pub use sample::{
    generate, generate_mix, held_out_set, pick_level, styled_set, train_question, validation_set,
    TrainingMix,
};

/// Largest allowed value of any operand or intermediate result.
pub const MAX_VALUE: u32 = 9999;
/// Largest operand of a question.
pub const MAX_OPERAND: u32 = 99;
/// Operator counts (levels) a question may have.
pub const LEVELS: std::ops::RangeInclusive<u8> = 1..=6;
/// Nesting depth beyond which input is rejected (keeps recursion bounded).
const MAX_DEPTH: usize = 100;

/// A binary operator.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Op {
    Add,
    Sub,
    Mul,
}

impl Op {
    /// The character the operator is written with.
    pub fn symbol(self) -> char {
        match self {
            Op::Add => '+',
            Op::Sub => '-',
            Op::Mul => '*',
        }
    }

    /// `a op b`, or `None` when the result is negative or exceeds [`MAX_VALUE`].
    pub fn apply(self, a: u32, b: u32) -> Option<u32> {
        let v = match self {
            Op::Add => a.checked_add(b)?,
            Op::Sub => a.checked_sub(b)?,
            Op::Mul => a.checked_mul(b)?,
        };
        (v <= MAX_VALUE).then_some(v)
    }

    fn from_byte(c: u8) -> Option<Op> {
        match c {
            b'+' => Some(Op::Add),
            b'-' => Some(Op::Sub),
            b'*' => Some(Op::Mul),
            _ => None,
        }
    }
}

/// An expression tree that remembers where parentheses were written.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Expr {
    Num(u32),
    Bin {
        op: Op,
        lhs: Box<Expr>,
        rhs: Box<Expr>,
        /// This sub-expression was written inside parentheses.
        paren: bool,
    },
}

impl Expr {
    /// Builds an unparenthesised binary node.
    pub fn bin(op: Op, lhs: Expr, rhs: Expr) -> Expr {
        Expr::Bin {
            op,
            lhs: Box::new(lhs),
            rhs: Box::new(rhs),
            paren: false,
        }
    }

    /// The value of the expression. Exact for every expression [`parse`] or
    /// [`parse_relaxed`] accept; hand-built trees saturate instead of wrapping.
    pub fn value(&self) -> u32 {
        match self {
            Expr::Num(n) => *n,
            Expr::Bin { op, lhs, rhs, .. } => {
                let (a, b) = (lhs.value(), rhs.value());
                match op {
                    Op::Add => a.saturating_add(b),
                    Op::Sub => a.saturating_sub(b),
                    Op::Mul => a.saturating_mul(b),
                }
            }
        }
    }

    /// Number of binary operators.
    pub fn op_count(&self) -> usize {
        match self {
            Expr::Num(_) => 0,
            Expr::Bin { lhs, rhs, .. } => 1 + lhs.op_count() + rhs.op_count(),
        }
    }

    /// The level of a question: its operator count (1..=6 for questions; saturates at 255).
    pub fn level(&self) -> u8 {
        u8::try_from(self.op_count()).unwrap_or(u8::MAX)
    }

    /// The number, if the expression is a single number.
    pub fn as_num(&self) -> Option<u32> {
        match self {
            Expr::Num(n) => Some(*n),
            Expr::Bin { .. } => None,
        }
    }
}

impl fmt::Display for Expr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let paren = matches!(self, Expr::Bin { paren: true, .. });
        match self {
            Expr::Num(n) => write!(f, "{n}"),
            Expr::Bin { op, lhs, rhs, .. } if paren => write!(f, "({lhs}{}{rhs})", op.symbol()),
            Expr::Bin { op, lhs, rhs, .. } => write!(f, "{lhs}{}{rhs}", op.symbol()),
        }
    }
}

/// Why a string is not a valid question (or solution-line expression).
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum GrammarError {
    #[error("empty expression: write a question such as 47+38")]
    Empty,
    #[error("space at position {pos}: write the question without spaces")]
    Space { pos: usize },
    #[error("division '/' at position {pos} is not supported: use only + - *")]
    Division { pos: usize },
    #[error("unexpected character {ch:?} at position {pos}: use only digits, + - * and ( )")]
    BadChar { ch: char, pos: usize },
    #[error("operand {text} at position {pos} has a leading zero: write it without leading zeros")]
    LeadingZero { text: String, pos: usize },
    #[error("operand {text} at position {pos} is out of range 0..{max}: use a smaller number")]
    OperandRange { text: String, pos: usize, max: u32 },
    #[error("expected a number or '(' at position {pos}, found {found}")]
    ExpectedOperand { pos: usize, found: String },
    #[error("expected an operator (+ - *) at position {pos}, found {found}")]
    ExpectedOperator { pos: usize, found: String },
    #[error("unbalanced parentheses: '(' at position {pos} is never closed; add a matching ')'")]
    Unclosed { pos: usize },
    #[error("unbalanced parentheses: ')' at position {pos} has no matching '('; remove it")]
    Unopened { pos: usize },
    #[error("empty parentheses '()' at position {pos}: put an expression inside or remove them")]
    EmptyParens { pos: usize },
    #[error("parentheses around the bare number {value} at position {pos}: remove them")]
    ParenNumber { value: u32, pos: usize },
    #[error("double parentheses at position {pos}: remove the redundant outer pair")]
    DoubleParens { pos: usize },
    #[error("parentheses nested deeper than {MAX_DEPTH} at position {pos}: simplify")]
    TooDeep { pos: usize },
    #[error("intermediate value {expr} at position {pos} is negative: every intermediate value must be in 0..9999")]
    Negative { expr: String, pos: usize },
    #[error("intermediate value {expr} at position {pos} exceeds 9999: use smaller operands")]
    Overflow { expr: String, pos: usize },
    #[error("the question has no operator: it needs 1 to 6 operators")]
    NoOperator,
    #[error("the question has {count} operators: at most 6 are allowed, shorten it")]
    TooManyOperators { count: usize },
}

type E = GrammarError;
/// An expression with its value.
type Parsed = (Expr, u32);

/// Parses a question, enforcing the whole grammar (see the module documentation).
pub fn parse(text: &str) -> Result<Expr, GrammarError> {
    let expr = parse_with(text, MAX_OPERAND)?;
    match expr.op_count() {
        0 => Err(E::NoOperator),
        n if n > usize::from(*LEVELS.end()) => Err(E::TooManyOperators { count: n }),
        _ => Ok(expr),
    }
}

/// Parses an expression as written on a solution line: the question grammar with any
/// operator count (a bare number is fine) and operands up to 9999. Intermediate values
/// must still lie in `0..=9999`.
pub fn parse_relaxed(text: &str) -> Result<Expr, GrammarError> {
    parse_with(text, MAX_VALUE)
}

fn parse_with(text: &str, max_operand: u32) -> Result<Expr, GrammarError> {
    for (i, ch) in text.chars().enumerate() {
        let pos = i + 1;
        match ch {
            '0'..='9' | '+' | '-' | '*' | '(' | ')' => {}
            ' ' => return Err(E::Space { pos }),
            '/' => return Err(E::Division { pos }),
            _ => return Err(E::BadChar { ch, pos }),
        }
    }
    if text.is_empty() {
        return Err(E::Empty);
    }
    // All characters are ASCII now, so byte offsets are character offsets.
    let mut p = Parser {
        s: text.as_bytes(),
        i: 0,
        depth: 0,
        max_operand,
    };
    let (expr, _) = p.chain(false)?;
    match p.peek() {
        None => Ok(expr),
        Some(b')') => Err(E::Unopened { pos: p.i + 1 }),
        Some(_) => Err(p.expected_operator()),
    }
}

struct Parser<'a> {
    s: &'a [u8],
    i: usize,
    depth: usize,
    max_operand: u32,
}

impl Parser<'_> {
    fn peek(&self) -> Option<u8> {
        self.s.get(self.i).copied()
    }

    fn found(&self) -> String {
        match self.peek() {
            None => "the end of the expression".to_string(),
            Some(c) => format!("'{}'", c as char),
        }
    }

    fn expected_operator(&self) -> GrammarError {
        E::ExpectedOperator {
            pos: self.i + 1,
            found: self.found(),
        }
    }

    /// `chain(false)`: `chain(true) (('+' | '-') chain(true))*`;
    /// `chain(true)`: `factor ('*' factor)*`.
    fn chain(&mut self, mul: bool) -> Result<Parsed, GrammarError> {
        let mut acc = if mul {
            self.factor()?
        } else {
            self.chain(true)?
        };
        while let Some(op) = self.peek().and_then(Op::from_byte) {
            if (op == Op::Mul) != mul {
                break;
            }
            let pos = self.i + 1;
            self.i += 1;
            let rhs = if mul {
                self.factor()?
            } else {
                self.chain(true)?
            };
            acc = combine(op, acc, rhs, pos)?;
        }
        Ok(acc)
    }

    /// `number | '(' chain(false) ')'`
    fn factor(&mut self) -> Result<Parsed, GrammarError> {
        let pos = self.i + 1;
        match self.peek() {
            Some(b'(') if self.depth >= MAX_DEPTH => Err(E::TooDeep { pos }),
            Some(b'(') => {
                self.i += 1;
                if self.peek() == Some(b')') {
                    return Err(E::EmptyParens { pos });
                }
                self.depth += 1;
                let (mut inner, v) = self.chain(false)?;
                self.depth -= 1;
                match self.peek() {
                    Some(b')') => self.i += 1,
                    None => return Err(E::Unclosed { pos }),
                    Some(_) => return Err(self.expected_operator()),
                }
                match &mut inner {
                    Expr::Num(value) => Err(E::ParenNumber { value: *value, pos }),
                    Expr::Bin { paren: true, .. } => Err(E::DoubleParens { pos }),
                    Expr::Bin { paren, .. } => {
                        *paren = true;
                        Ok((inner, v))
                    }
                }
            }
            Some(b'0'..=b'9') => {
                let start = self.i;
                while matches!(self.peek(), Some(b'0'..=b'9')) {
                    self.i += 1;
                }
                let text = String::from_utf8_lossy(&self.s[start..self.i]).into_owned();
                let max = self.max_operand;
                if text.len() > 1 && text.starts_with('0') {
                    return Err(E::LeadingZero { text, pos });
                }
                match text.parse::<u32>() {
                    Ok(n) if n <= max => Ok((Expr::Num(n), n)),
                    _ => Err(E::OperandRange { text, pos, max }),
                }
            }
            _ => Err(E::ExpectedOperand {
                pos,
                found: self.found(),
            }),
        }
    }
}

fn combine(op: Op, (lhs, a): Parsed, (rhs, b): Parsed, pos: usize) -> Result<Parsed, E> {
    if let Some(v) = op.apply(a, b) {
        return Ok((Expr::bin(op, lhs, rhs), v));
    }
    let (x, y) = (u64::from(a), u64::from(b));
    let expr = match op {
        Op::Sub => {
            return Err(E::Negative {
                expr: format!("{a}-{b}"),
                pos,
            })
        }
        Op::Add => format!("{a}+{b}={}", x + y),
        Op::Mul => format!("{a}*{b}={}", x * y),
    };
    Err(E::Overflow { expr, pos })
}

/// A question with its answer and level.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Problem {
    pub question: String,
    pub answer: u32,
    pub level: u8,
}

impl Problem {
    /// The problem for a (valid) expression.
    pub fn from_expr(expr: &Expr) -> Problem {
        let (question, answer, level) = (expr.to_string(), expr.value(), expr.level());
        Problem {
            question,
            answer,
            level,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_prints_examples() {
        for q in [
            "(47+38)*3-19",
            "(3*4)+5",
            "3-(4-2)",
            "2*(3*4)",
            "(1+2)",
            "0*0+0",
            "99*99",
            "((1+2)*3)+4",
        ] {
            let e = parse(q).unwrap_or_else(|err| panic!("{q}: {err}"));
            assert_eq!(e.to_string(), q);
        }
        let e = parse("(47+38)*3-19").unwrap();
        assert_eq!((e.value(), e.level()), (236, 3));
        assert_eq!(parse("2+3*4").unwrap().value(), 14);
        assert_eq!(parse("10-3-2").unwrap().value(), 5);
        assert_eq!(parse("10-(3-2)").unwrap().value(), 9);
        assert_eq!(parse_relaxed("1786").unwrap(), Expr::Num(1786));
        assert_eq!(parse_relaxed("9999+0").unwrap().value(), 9999);
    }

    #[test]
    fn rejects_invalid_questions_with_helpful_messages() {
        let table = [
            ("47 + 38", "space at position 3"),
            ("07+3", "operand 07 at position 1 has a leading zero"),
            ("3*100", "operand 100 at position 3 is out of range 0..99"),
            ("1+123456789012", "out of range 0..99"),
            ("1+1+1+1+1+1+1+1", "7 operators: at most 6"),
            ("5", "no operator"),
            ("", "empty"),
            ("(3+4", "'(' at position 1 is never closed"),
            ("3+4)", "')' at position 4 has no matching '('"),
            ("()", "empty parentheses"),
            ("3+()", "empty parentheses '()' at position 3"),
            ("(5)+3", "bare number 5"),
            ("((7))+1", "bare number 7"),
            ("((3+4))*2", "double parentheses"),
            ("3-5", "3-5 at position 2 is negative"),
            ("99*99*2", "9801*2=19602 at position 6 exceeds 9999"),
            ("8/2", "division '/' at position 2"),
            ("3x4", "unexpected character 'x'"),
            ("3+", "expected a number or '(' at position 3, found the"),
            ("3(4+5)", "expected an operator (+ - *) at position 2"),
            ("(3+4(1+1))", "expected an operator (+ - *) at position 5"),
            ("+3", "expected a number"),
        ];
        for (input, fragment) in table {
            let err = parse(input).expect_err(input).to_string();
            assert!(err.contains(fragment), "{input:?}: {err}");
        }
        let deep = format!("{}1+1{}", "(".repeat(500), ")".repeat(500));
        let err = parse_relaxed(&deep).unwrap_err().to_string();
        assert!(err.contains("nested deeper"), "{err}");
        assert!(parse_relaxed("10000").is_err());
        assert!(parse_relaxed("5000*2").is_err());
    }
}
