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
//! [`parse`] enforces all of it. [`parse_relaxed`] accepts the expressions written on the
//! lines of a solution (any operator count, operands up to 9999, the same value range).
//! An [`Expr`] prints (`Display`) exactly as it was written.
//!
//! Error positions in [`GrammarError`] are 1-based character positions.

use std::fmt;

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};
use thiserror::Error;

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

/// Operand tries per tree shape before a new shape is drawn.
const ATTEMPTS_PER_SHAPE: usize = 200;
/// Shapes tried before falling back to a sum of single digits (never reached in practice).
const MAX_SHAPES: usize = 100;

/// A random valid question of exactly `level` operators.
///
/// Random tree shape and operators; operands are single-digit or two-digit with equal
/// probability; operand draws are rejected until every intermediate value is in range
/// (a subtraction with a smaller left side gets its sides swapped first). Parentheses are
/// written where the tree needs them (a `+`/`-` under a `*`, a right operand of equal
/// precedence) and, at random, redundantly around other sub-expressions.
///
/// # Panics
/// If `level` is not in 1..=6.
pub fn generate(level: u8, rng: &mut impl Rng) -> Problem {
    Problem::from_expr(&generate_expr(level, rng))
}

fn generate_expr<R: Rng + ?Sized>(level: u8, rng: &mut R) -> Expr {
    assert!(LEVELS.contains(&level), "level {level} is not in 1..=6");
    for _ in 0..MAX_SHAPES {
        let mut tree = random_shape(usize::from(level), rng);
        for _ in 0..ATTEMPTS_PER_SHAPE {
            reroll_operands(&mut tree, rng);
            if fix_and_check(&mut tree).is_some() {
                assign_parens(&mut tree, None, rng);
                return tree;
            }
        }
    }
    // Fallback that always fits: a left-associated sum of single digits (at most 63).
    let mut tree = Expr::Num(rng.random_range(0..=9));
    for _ in 0..level {
        tree = Expr::bin(Op::Add, tree, Expr::Num(rng.random_range(0..=9)));
    }
    tree
}

fn random_shape<R: Rng + ?Sized>(ops: usize, rng: &mut R) -> Expr {
    if ops == 0 {
        return Expr::Num(0);
    }
    let left = rng.random_range(0..ops);
    let op = [Op::Add, Op::Sub, Op::Mul][rng.random_range(0..3)];
    let lhs = random_shape(left, rng);
    Expr::bin(op, lhs, random_shape(ops - 1 - left, rng))
}

fn reroll_operands<R: Rng + ?Sized>(e: &mut Expr, rng: &mut R) {
    match e {
        Expr::Num(n) => {
            let two_digits = rng.random_bool(0.5);
            *n = rng.random_range(if two_digits { 10..=99 } else { 0..=9 });
        }
        Expr::Bin { lhs, rhs, .. } => {
            reroll_operands(lhs, rng);
            reroll_operands(rhs, rng);
        }
    }
}

/// Evaluates, swapping the sides of any subtraction whose left side is smaller; `None`
/// when some intermediate value exceeds [`MAX_VALUE`].
fn fix_and_check(e: &mut Expr) -> Option<u32> {
    match e {
        Expr::Num(n) => Some(*n),
        Expr::Bin { op, lhs, rhs, .. } => {
            let (mut a, mut b) = (fix_and_check(lhs)?, fix_and_check(rhs)?);
            if *op == Op::Sub && a < b {
                std::mem::swap(lhs, rhs);
                std::mem::swap(&mut a, &mut b);
            }
            op.apply(a, b)
        }
    }
}

fn assign_parens<R: Rng + ?Sized>(e: &mut Expr, parent: Option<(Op, bool)>, rng: &mut R) {
    if let Expr::Bin {
        op,
        lhs,
        rhs,
        paren,
    } = e
    {
        let additive = *op != Op::Mul;
        let needed = match parent {
            Some((Op::Mul, is_right)) => additive || is_right,
            Some((_, is_right)) => additive && is_right,
            None => false,
        };
        let redundant = if parent.is_none() { 0.05 } else { 0.15 };
        *paren = needed || rng.random_bool(redundant);
        let op = *op;
        assign_parens(lhs, Some((op, false)), rng);
        assign_parens(rhs, Some((op, true)), rng);
    }
}

/// A random question whose level is drawn with the given weights.
///
/// # Panics
/// If `levels` is empty, a weight is negative or not finite, all weights are zero, or a
/// level is outside 1..=6.
pub fn generate_mix(levels: &[(u8, f64)], rng: &mut impl Rng) -> Problem {
    assert!(
        levels.iter().all(|&(_, w)| w.is_finite() && w >= 0.0),
        "level weights must be finite and non-negative"
    );
    let total: f64 = levels.iter().map(|&(_, w)| w).sum();
    assert!(total > 0.0, "level weights must not all be zero");
    let mut r = rng.random::<f64>() * total;
    // The last positive weight absorbs rounding.
    let mut chosen = 0;
    for &(level, w) in levels.iter().filter(|&&(_, w)| w > 0.0) {
        chosen = level;
        if r < w {
            break;
        }
        r -= w;
    }
    generate(chosen, rng)
}

/// A deterministic evaluation set: `per_level` questions of each level 1..=6, in level
/// order, drawn from `ChaCha8Rng::seed_from_u64(seed)`.
pub fn held_out_set(seed: u64, per_level: usize) -> Vec<Problem> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    LEVELS
        .flat_map(|level| (0..per_level).map(move |_| level))
        .map(|level| generate(level, &mut rng))
        .collect()
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

    #[test]
    fn random_questions_satisfy_the_grammar() {
        let mut rng = ChaCha8Rng::seed_from_u64(7);
        let (mut two_digit, mut one_digit, mut parens, mut needed) = (0, 0, 0, 0);
        for i in 0..10_000 {
            let level = (i % 6) as u8 + 1;
            let tree = generate_expr(level, &mut rng);
            let p = Problem::from_expr(&tree);
            let reparsed = parse(&p.question).unwrap_or_else(|e| panic!("{}: {e}", p.question));
            assert_eq!(reparsed, tree, "{}", p.question);
            assert_eq!(reparsed.to_string(), p.question);
            assert_eq!((p.level, reparsed.level()), (level, level));
            assert_eq!(reparsed.value(), p.answer);
            for operand in p.question.split(|c: char| !c.is_ascii_digit()) {
                one_digit += usize::from(operand.len() == 1);
                two_digit += usize::from(operand.len() == 2);
            }
            parens += usize::from(p.question.contains('('));
            needed += usize::from(p.question.contains(")*") || p.question.contains("*("));
        }
        assert!(one_digit > 5_000 && two_digit > 5_000, "{one_digit}");
        assert!(parens > 3_000 && needed > 1_000, "{parens} {needed}");
    }

    #[test]
    fn held_out_set_is_deterministic_and_ordered() {
        let a = held_out_set(42, 5);
        assert_eq!(a, held_out_set(42, 5));
        assert_ne!(a, held_out_set(43, 5));
        let levels: Vec<u8> = a.iter().map(|p| p.level).collect();
        assert_eq!(levels, LEVELS.flat_map(|l| [l; 5]).collect::<Vec<_>>());
    }

    #[test]
    fn generate_mix_follows_weights() {
        let mut rng = ChaCha8Rng::seed_from_u64(1);
        let mut counts = [0usize; 7];
        for _ in 0..3_000 {
            counts[usize::from(generate_mix(&[(1, 1.0), (3, 0.0), (6, 2.0)], &mut rng).level)] += 1;
        }
        assert_eq!(counts[3], 0);
        assert!(counts[1] > 800 && counts[1] < 1_200, "{counts:?}");
        assert_eq!(counts[1] + counts[6], 3_000);
    }
}
