//! The evaluation question sampler, written apart from the training one.
//!
//! Why a second sampler: a model trained on one sampler's questions learns that sampler's
//! habits (its operand sizes, its tree shapes), and a held-out set drawn from the same
//! sampler cannot see that. This one follows only the grammar contract of [`crate::task`]
//! and shares no sampling code with the trainer's stream ([`crate::task::train_question`]):
//!
//! - the tree shape is uniform over all binary trees with `level` operators (drawn with
//!   Catalan numbers), the operators uniform over `+ - *`;
//! - operands are uniform over `0..=99` (so 90% have two digits);
//! - a whole draw (shape, operators, operands) is rejected when any intermediate value
//!   leaves `0..=9999`: subtractions are never swapped to make them fit, so the result is
//!   the uniform distribution conditioned on the contract;
//! - parentheses are written where the tree needs them and, with probability
//!   [`REDUNDANT_PARENS`], around any other sub-expression;
//! - only questions in the evaluation slice ([`crate::slice::Slice::Evaluation`]) are kept,
//!   a part of question space the training stream rejects, so no evaluation question can
//!   have been trained on ([`validation_set`] draws the validation slice instead, for
//!   fixing thresholds).
//!
//! The trainer never calls this module; `services/arith-train/tests/walls.rs` checks it.

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::slice::{slice_of, Slice};
use crate::task::{Expr, Op, Problem, LEVELS, MAX_OPERAND, MAX_VALUE};

/// Probability of parentheses around a sub-expression that does not need them.
pub const REDUNDANT_PARENS: f64 = 0.15;

/// Catalan numbers: the count of binary trees with `n` internal nodes, `n` in 0..=6.
const CATALAN: [u64; 7] = [1, 1, 2, 5, 14, 42, 132];

/// A question of exactly `level` operators from the evaluation distribution.
///
/// # Panics
/// If `level` is not in 1..=6.
pub fn eval_question(level: u8, rng: &mut impl Rng) -> Problem {
    question_in(level, Slice::Evaluation, rng)
}

/// `per_level` evaluation questions of each level 1..=6, in level order, from `seed`.
pub fn eval_set(seed: u64, per_level: usize) -> Vec<Problem> {
    set_in(Slice::Evaluation, seed, per_level)
}

/// The same distribution in the validation slice: where a report fixes its thresholds
/// (never on evaluation questions). This sampler never yields training-slice questions.
pub fn validation_set(seed: u64, per_level: usize) -> Vec<Problem> {
    set_in(Slice::Validation, seed, per_level)
}

fn set_in(slice: Slice, seed: u64, per_level: usize) -> Vec<Problem> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    LEVELS
        .flat_map(|level| std::iter::repeat_n(level, per_level))
        .map(|level| question_in(level, slice, &mut rng))
        .collect()
}

fn question_in(level: u8, slice: Slice, rng: &mut impl Rng) -> Problem {
    assert!(LEVELS.contains(&level), "level {level} is not in 1..=6");
    assert_ne!(
        slice,
        Slice::Training,
        "the evaluation sampler never feeds training"
    );
    loop {
        let mut tree = uniform_tree(usize::from(level), rng);
        if evaluate(&tree).is_none() {
            continue;
        }
        parenthesize(&mut tree, Parent::Root, rng);
        if slice_of(&tree) == slice {
            return Problem::from_expr(&tree);
        }
    }
}

/// A uniformly random tree with `ops` operators, random operators and operands.
fn uniform_tree(ops: usize, rng: &mut impl Rng) -> Expr {
    if ops == 0 {
        return Expr::Num(rng.random_range(0..=MAX_OPERAND));
    }
    // P(left subtree has k operators) = C(k) C(ops-1-k) / C(ops).
    let mut pick = rng.random_range(0..CATALAN[ops]);
    let mut left = 0;
    loop {
        let ways = CATALAN[left] * CATALAN[ops - 1 - left];
        if pick < ways {
            break;
        }
        pick -= ways;
        left += 1;
    }
    let op = [Op::Add, Op::Sub, Op::Mul][rng.random_range(0..3)];
    let lhs = uniform_tree(left, rng);
    Expr::bin(op, lhs, uniform_tree(ops - 1 - left, rng))
}

/// The value when every intermediate lies in `0..=MAX_VALUE`, else `None`.
fn evaluate(e: &Expr) -> Option<u32> {
    match e {
        Expr::Num(n) => Some(*n),
        Expr::Bin { op, lhs, rhs, .. } => {
            let (a, b) = (evaluate(lhs)?, evaluate(rhs)?);
            let v = match op {
                Op::Add => a.checked_add(b)?,
                Op::Sub => a.checked_sub(b)?,
                Op::Mul => a.checked_mul(b)?,
            };
            (v <= MAX_VALUE).then_some(v)
        }
    }
}

#[derive(Clone, Copy)]
enum Parent {
    Root,
    Left(Op),
    Right(Op),
}

fn parenthesize(e: &mut Expr, parent: Parent, rng: &mut impl Rng) {
    let Expr::Bin {
        op,
        lhs,
        rhs,
        paren,
    } = e
    else {
        return;
    };
    let additive = *op != Op::Mul;
    let needed = match parent {
        Parent::Root => false,
        // `(a+b)*c`: a sum under a product.
        Parent::Left(p) => p == Op::Mul && additive,
        // `a*(b*c)`, `a-(b+c)`, `a*(b+c)`: a right operand of equal or higher binding.
        Parent::Right(p) => p == Op::Mul || additive,
    };
    *paren = needed || rng.random_bool(REDUNDANT_PARENS);
    let op = *op;
    parenthesize(lhs, Parent::Left(op), rng);
    parenthesize(rhs, Parent::Right(op), rng);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::task::parse;

    #[test]
    fn eval_questions_follow_the_contract_and_print_their_tree() {
        let mut rng = ChaCha8Rng::seed_from_u64(11);
        let mut two_digit = 0usize;
        let mut operands = 0usize;
        for i in 0..3_000 {
            let level = (i % 6) as u8 + 1;
            let p = eval_question(level, &mut rng);
            let reparsed = parse(&p.question).unwrap_or_else(|e| panic!("{}: {e}", p.question));
            assert_eq!(reparsed.to_string(), p.question);
            assert_eq!((reparsed.level(), reparsed.value()), (level, p.answer));
            assert_eq!(slice_of(&reparsed), Slice::Evaluation, "{}", p.question);
            for n in p.question.split(|c: char| !c.is_ascii_digit()) {
                operands += usize::from(!n.is_empty());
                two_digit += usize::from(n.len() == 2);
            }
        }
        // Uniform over 0..=99 gives 90% two-digit operands (less after rejection).
        let share = two_digit as f64 / operands as f64;
        assert!(share > 0.75, "two-digit share {share}");
    }

    #[test]
    fn tree_shapes_are_uniform() {
        // Level 3 has 5 shapes, each 1/5 before rejection: count shapes of raw draws.
        let mut rng = ChaCha8Rng::seed_from_u64(3);
        let mut counts = std::collections::HashMap::new();
        for _ in 0..10_000 {
            let t = uniform_tree(3, &mut rng);
            *counts.entry(shape(&t)).or_insert(0) += 1;
        }
        assert_eq!(counts.len(), 5);
        for (s, c) in counts {
            assert!((1_800..2_200).contains(&c), "shape {s}: {c} of 10000");
        }
    }

    fn shape(e: &Expr) -> String {
        match e {
            Expr::Num(_) => "x".into(),
            Expr::Bin { lhs, rhs, .. } => format!("({}{})", shape(lhs), shape(rhs)),
        }
    }

    #[test]
    fn eval_set_is_deterministic() {
        assert_eq!(eval_set(5, 3), eval_set(5, 3));
        assert_ne!(eval_set(5, 3), eval_set(6, 3));
    }
}
