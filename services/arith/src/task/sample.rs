//! Random questions: the demo/load sampler ([`generate`]) and the trainer's stream
//! ([`train_question`]).
//!
//! Why the trainer has its own stream: the first generator was trained on [`generate`]
//! alone (half the operands single-digit, subtractions swapped to fit) and learned that
//! sampler instead of the grammar: on questions with uniform two-digit operands and
//! other tree shapes it fell from 88% to 30% at level 6. The training stream is a mixture
//! of styles (tree shapes, operand sizes, parenthesis rates) wide enough to cover the
//! whole grammar contract, and it never yields a question of the evaluation or validation
//! slices ([`crate::slice`]). Evaluation uses a separate, independently written sampler
//! ([`crate::eval_sampler`]) that the trainer never calls.
//!
//! The mixture has two parts ([`TrainingMix`]). The first (random-split and chain shapes,
//! mixed-width or uniform operands, subtractions swapped to fit) is what the ladder trained
//! on from scratch ([`TrainingMix::FIRST`]). It is easier than the contract's own distribution: at level 6 its questions
//! hold 2.2 one-digit operands and a four-digit answer half the time, where uniform
//! questions hold 0.8 and 0.63, with solutions 7% shorter. The second part, the *contract*
//! style, draws the contract itself: tree shapes uniform over all binary trees, operands
//! uniform over 0..=99, and a whole draw rejected when an intermediate leaves the range.
//! The shipped generators were then fine-tuned on a stream half of each
//! ([`TrainingMix::SHIPPED`], models/train-contract.sh).

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use super::{Expr, Op, Problem, LEVELS, MAX_OPERAND};
use crate::slice::{slice_of, Slice};

/// Operand tries per tree shape before a new shape is drawn.
const ATTEMPTS_PER_SHAPE: usize = 200;
/// Shapes tried before falling back to a sum of single digits (never reached in practice).
const MAX_SHAPES: usize = 100;

/// How tree shapes are drawn.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Shape {
    /// The left subtree's operator count is uniform over what is left.
    RandomSplit,
    /// Mostly left-deep chains (`a-b+c+d`), now and then a parenthesised group on the right.
    Chain,
    /// Uniform over all binary trees with the level's operator count (Catalan numbers).
    Uniform,
}

/// How operands are drawn.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Operands {
    /// One or two digits with equal probability.
    MixedWidth,
    /// Uniform over `0..=99`.
    Uniform,
}

/// One way of drawing questions.
#[derive(Debug, Clone, Copy)]
struct Style {
    shape: Shape,
    operands: Operands,
    /// Probability of redundant parentheses around a non-root sub-expression.
    redundant: f64,
    /// How a draw that leaves the value range is handled.
    fit: Fit,
}

/// What happens to a draw with an intermediate value outside 0..=9999.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Fit {
    /// Subtractions with a smaller left side swap their sides; the operands of the same
    /// shape are redrawn until the values fit (shapes that rarely fit are kept).
    SwapAndReroll,
    /// The whole draw (shape, operators, operands) is thrown away: the contract's
    /// distribution conditioned on fitting.
    Reject,
}

/// The trainer's stream: what share of it is drawn in the contract style (see the module
/// docs); the rest is the first mixture.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct TrainingMix {
    pub contract_share: f64,
}

impl TrainingMix {
    /// The first mixture alone: what the ladder trained on from scratch, and what a
    /// checkpoint written before the contract style existed trained on.
    pub const FIRST: TrainingMix = TrainingMix {
        contract_share: 0.0,
    };

    /// The stream the shipped generators finished on: their contract-style fine-tunes
    /// (models/README.md), half of each part.
    pub const SHIPPED: TrainingMix = TrainingMix {
        contract_share: 0.5,
    };

    /// A mix with `contract_share` of contract-style questions; an error names the range.
    pub fn new(contract_share: f64) -> Result<TrainingMix, String> {
        if (0.0..=1.0).contains(&contract_share) {
            Ok(TrainingMix { contract_share })
        } else {
            Err(format!(
                "the contract share must be in 0..=1, not {contract_share}"
            ))
        }
    }
}

/// Checkpoints that predate the field trained on the first mixture.
impl Default for TrainingMix {
    fn default() -> Self {
        TrainingMix::FIRST
    }
}

/// The style of [`generate`] (the first generator's training data).
const CLASSIC: Style = Style {
    shape: Shape::RandomSplit,
    operands: Operands::MixedWidth,
    redundant: 0.15,
    fit: Fit::SwapAndReroll,
};

/// A random valid question of exactly `level` operators.
///
/// Random tree shape and operators; operands are single-digit or two-digit with equal
/// probability; operand draws are rejected until every intermediate value is in range
/// (a subtraction with a smaller left side gets its sides swapped first). Parentheses are
/// written where the tree needs them and, at random, redundantly around other sub-expressions.
/// Used for demos, load and benchmarks; evaluation uses [`crate::eval_sampler`].
///
/// # Panics
/// If `level` is not in 1..=6.
pub fn generate(level: u8, rng: &mut impl Rng) -> Problem {
    Problem::from_expr(&generate_expr(level, CLASSIC, rng))
}

/// A question for training: a mixture of styles, never in the evaluation or validation slice.
///
/// # Panics
/// If `level` is not in 1..=6.
pub fn train_question(level: u8, mix: TrainingMix, rng: &mut impl Rng) -> Problem {
    sliced_question(level, Slice::Training, mix, rng)
}

/// `per_level` questions of each level from the training mixture, in the validation slice:
/// the trainer's periodic evaluation set (never trained on).
pub fn validation_set(seed: u64, per_level: usize, mix: TrainingMix) -> Vec<Problem> {
    styled_set(Slice::Validation, seed, per_level, mix)
}

/// `per_level` questions of each level from the training mixture's styles, in `slice`:
/// the report's second evaluation set (slice [`Slice::Evaluation`]), next to the
/// independent sampler's, so that the gap between the two shows what the model learned
/// of the sampler rather than of the grammar.
pub fn styled_set(slice: Slice, seed: u64, per_level: usize, mix: TrainingMix) -> Vec<Problem> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    LEVELS
        .flat_map(|level| std::iter::repeat_n(level, per_level))
        .map(|level| sliced_question(level, slice, mix, &mut rng))
        .collect()
}

fn sliced_question(level: u8, slice: Slice, mix: TrainingMix, rng: &mut impl Rng) -> Problem {
    loop {
        // A share of 0 draws nothing here, so the shipped models' stream is unchanged.
        let contract = mix.contract_share > 0.0 && rng.random_bool(mix.contract_share);
        let style = if contract {
            Style {
                shape: Shape::Uniform,
                operands: Operands::Uniform,
                redundant: rng.random_range(0.0..0.3),
                fit: Fit::Reject,
            }
        } else {
            Style {
                shape: if rng.random_bool(0.3) {
                    Shape::Chain
                } else {
                    Shape::RandomSplit
                },
                operands: if rng.random_bool(0.6) {
                    Operands::Uniform
                } else {
                    Operands::MixedWidth
                },
                redundant: rng.random_range(0.0..0.3),
                fit: Fit::SwapAndReroll,
            }
        };
        let expr = generate_expr(level, style, rng);
        if slice_of(&expr) == slice {
            return Problem::from_expr(&expr);
        }
    }
}

fn generate_expr<R: Rng + ?Sized>(level: u8, style: Style, rng: &mut R) -> Expr {
    assert!(LEVELS.contains(&level), "level {level} is not in 1..=6");
    if style.fit == Fit::Reject {
        // Every level fits often enough (about 1 draw in 8 at level 6) for this to end.
        loop {
            let mut tree = random_shape(usize::from(level), style.shape, rng);
            reroll_operands(&mut tree, style.operands, rng);
            if value_in_range(&tree).is_some() {
                assign_parens(&mut tree, None, style.redundant, rng);
                return tree;
            }
        }
    }
    for _ in 0..MAX_SHAPES {
        let mut tree = random_shape(usize::from(level), style.shape, rng);
        for _ in 0..ATTEMPTS_PER_SHAPE {
            reroll_operands(&mut tree, style.operands, rng);
            if fix_and_check(&mut tree).is_some() {
                assign_parens(&mut tree, None, style.redundant, rng);
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

fn random_shape<R: Rng + ?Sized>(ops: usize, shape: Shape, rng: &mut R) -> Expr {
    if ops == 0 {
        return Expr::Num(0);
    }
    let left = match shape {
        Shape::RandomSplit => rng.random_range(0..ops),
        Shape::Uniform => uniform_left_size(ops, rng),
        // A right operand that is a group of 1-2 operators a quarter of the time.
        Shape::Chain if ops >= 2 && rng.random_bool(0.25) => {
            ops - 1 - rng.random_range(1..ops.min(3))
        }
        Shape::Chain => ops - 1,
    };
    let op = [Op::Add, Op::Sub, Op::Mul][rng.random_range(0..3)];
    let lhs = random_shape(left, shape, rng);
    let rhs_shape = if shape == Shape::Chain {
        Shape::RandomSplit
    } else {
        shape
    };
    Expr::bin(op, lhs, random_shape(ops - 1 - left, rhs_shape, rng))
}

fn reroll_operands<R: Rng + ?Sized>(e: &mut Expr, operands: Operands, rng: &mut R) {
    match e {
        Expr::Num(n) => {
            *n = match operands {
                Operands::MixedWidth if rng.random_bool(0.5) => rng.random_range(10..=99),
                Operands::MixedWidth => rng.random_range(0..=9),
                Operands::Uniform => rng.random_range(0..=MAX_OPERAND),
            };
        }
        Expr::Bin { lhs, rhs, .. } => {
            reroll_operands(lhs, operands, rng);
            reroll_operands(rhs, operands, rng);
        }
    }
}

/// Binary trees with `n` operators, `n` in 0..=5 (a left subtree has at most 5).
const TREES: [u64; 6] = [1, 1, 2, 5, 14, 42];

/// The left subtree's operator count when a tree of `ops` operators is drawn uniformly
/// from all such trees: `k` with weight trees(k) x trees(ops - 1 - k).
fn uniform_left_size<R: Rng + ?Sized>(ops: usize, rng: &mut R) -> usize {
    let weight = |k: usize| TREES[k] * TREES[ops - 1 - k];
    let total: u64 = (0..ops).map(weight).sum();
    let mut r = rng.random_range(0..total);
    for k in 0..ops {
        if r < weight(k) {
            return k;
        }
        r -= weight(k);
    }
    unreachable!("the weights sum to the total")
}

/// The value when every intermediate lies in range, with no sides swapped.
fn value_in_range(e: &Expr) -> Option<u32> {
    match e {
        Expr::Num(n) => Some(*n),
        Expr::Bin { op, lhs, rhs, .. } => op.apply(value_in_range(lhs)?, value_in_range(rhs)?),
    }
}

/// Evaluates, swapping the sides of any subtraction whose left side is smaller; `None`
/// when some intermediate value exceeds [`super::MAX_VALUE`].
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

fn assign_parens<R: Rng + ?Sized>(
    e: &mut Expr,
    parent: Option<(Op, bool)>,
    redundant: f64,
    rng: &mut R,
) {
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
        let p = if parent.is_none() {
            redundant / 3.0
        } else {
            redundant
        };
        *paren = needed || rng.random_bool(p);
        let op = *op;
        assign_parens(lhs, Some((op, false)), redundant, rng);
        assign_parens(rhs, Some((op, true)), redundant, rng);
    }
}

/// A random question whose level is drawn with the given weights.
///
/// # Panics
/// If `levels` is empty, a weight is negative or not finite, all weights are zero, or a
/// level is outside 1..=6.
pub fn generate_mix(levels: &[(u8, f64)], rng: &mut impl Rng) -> Problem {
    generate(pick_level(levels, rng), rng)
}

/// A level drawn with the given weights (see [`generate_mix`] for the panics).
pub fn pick_level(levels: &[(u8, f64)], rng: &mut impl Rng) -> u8 {
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
    chosen
}

/// A deterministic question set from [`generate`]: `per_level` questions of each level
/// 1..=6, in level order, drawn from `ChaCha8Rng::seed_from_u64(seed)`. Not walled off
/// from training: use [`crate::eval_sampler::eval_set`] for evaluation.
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
    use crate::task::parse;

    #[test]
    fn random_questions_satisfy_the_grammar() {
        let mut rng = ChaCha8Rng::seed_from_u64(7);
        let (mut two_digit, mut one_digit, mut parens, mut needed) = (0, 0, 0, 0);
        for i in 0..10_000 {
            let level = (i % 6) as u8 + 1;
            let tree = generate_expr(level, CLASSIC, &mut rng);
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

    #[test]
    fn the_training_stream_covers_the_contract_outside_the_held_out_slices() {
        let mut rng = ChaCha8Rng::seed_from_u64(9);
        let (mut operands, mut two_digit, mut chains) = (0usize, 0usize, 0usize);
        for i in 0..6_000 {
            let level = (i % 6) as u8 + 1;
            let p = train_question(level, TrainingMix::FIRST, &mut rng);
            let e = parse(&p.question).unwrap_or_else(|e| panic!("{}: {e}", p.question));
            assert_eq!((e.level(), e.value()), (level, p.answer));
            assert_eq!(slice_of(&e), Slice::Training, "{}", p.question);
            for n in p.question.split(|c: char| !c.is_ascii_digit()) {
                operands += usize::from(!n.is_empty());
                two_digit += usize::from(n.len() == 2);
            }
            // A chain: at least 4 operators, every right operand a number.
            chains += usize::from(level >= 4 && left_deep(&e));
        }
        let share = two_digit as f64 / operands as f64;
        assert!(share > 0.6, "two-digit share {share}");
        assert!(chains > 250, "{chains} chains");
    }

    fn left_deep(e: &Expr) -> bool {
        match e {
            Expr::Num(_) => true,
            Expr::Bin { lhs, rhs, .. } => rhs.as_num().is_some() && left_deep(lhs),
        }
    }

    #[test]
    fn validation_questions_are_in_the_validation_slice() {
        for mix in [TrainingMix::FIRST, TrainingMix::SHIPPED] {
            let set = validation_set(1, 20, mix);
            assert_eq!(set.len(), 120);
            for p in &set {
                assert_eq!(slice_of(&parse(&p.question).unwrap()), Slice::Validation);
            }
            assert_eq!(set, validation_set(1, 20, mix));
        }
    }

    /// The stream the shipped models trained on, drawn before the contract style existed:
    /// a share of 0 must keep it question for question.
    #[test]
    fn the_shipped_mix_draws_the_stream_the_shipped_models_trained_on() {
        let mut rng = ChaCha8Rng::seed_from_u64(9);
        let first: Vec<String> = (0..12)
            .map(|i| train_question((i % 6) as u8 + 1, TrainingMix::FIRST, &mut rng).question)
            .collect();
        assert_eq!(
            first,
            [
                "57-5",
                "(7*0*11)",
                "32*(69+53)-30",
                "47*56-60-(89-16)",
                "(85-65)*(45*7)-(44+74)",
                "(91-(4-87*0)*16+2)*55",
                "6+33",
                "93+91*17",
                "81*(39-8)-57",
                "9*17-0-0*9",
                "26+50+87+(44-10)+67",
                "(65+(98-13)-(30+(44+69)-19))"
            ]
        );
        let validation: Vec<String> = validation_set(1, 2, TrainingMix::FIRST)
            .into_iter()
            .map(|p| p.question)
            .collect();
        assert_eq!(
            validation,
            [
                "3*32",
                "6+2",
                "99+29+75",
                "(76+82)*61",
                "72+81-19-61",
                "88+((98-78)+99)",
                "79+8*(46*4)-8",
                "(7*43-(3+22+1))",
                "57+5*69+(1+(37-0))",
                "(88-64+(25*3-13))*14",
                "(8+20)*(0*(63+11*17))+92",
                "((6+74+42)*5+6)*3*3"
            ]
        );
    }

    #[test]
    fn the_contract_style_draws_uniform_trees_and_operands_that_fit_unswapped() {
        let mut rng = ChaCha8Rng::seed_from_u64(3);
        let contract = TrainingMix::new(1.0).unwrap();
        let (mut operands, mut one_digit, mut root_left) = (0usize, 0usize, [0usize; 4]);
        for i in 0..6_000 {
            let level = (i % 6) as u8 + 1;
            let p = train_question(level, contract, &mut rng);
            let e = parse(&p.question).unwrap_or_else(|e| panic!("{}: {e}", p.question));
            assert_eq!((e.level(), e.value()), (level, p.answer));
            assert_eq!(slice_of(&e), Slice::Training, "{}", p.question);
            for n in p.question.split(|c: char| !c.is_ascii_digit()) {
                operands += usize::from(!n.is_empty());
                one_digit += usize::from(n.len() == 1);
            }
            if level == 4 {
                if let Expr::Bin { lhs, .. } = &e {
                    root_left[lhs.op_count()] += 1;
                }
            }
        }
        // Uniform operands over 0..=99 are one digit 10% of the time (a little more after
        // rejection, which favours small values).
        let share = one_digit as f64 / operands as f64;
        assert!((0.08..0.2).contains(&share), "one-digit share {share}");
        // Trees of 4 operators: the root's left subtree has 0..=3 operators with weights
        // 5:2:2:5 over all 14 trees (before rejection, which reshapes them a little).
        let extremes = (root_left[0] + root_left[3]) as f64 / 1_000.0;
        assert!((0.55..0.85).contains(&extremes), "{root_left:?}");
        assert!(TrainingMix::new(1.5).is_err() && TrainingMix::new(-0.1).is_err());
    }
}
