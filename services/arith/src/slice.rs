//! Question space cut into slices, so that evaluation questions can never be trained on.
//!
//! Why slices and not seeds: two samplers with different seeds still draw the same easy
//! questions (`3+4` comes up in both), so a "held-out" set drawn by seed overlaps the
//! training data. Instead every question belongs to one of [`SLICES`] slices by a hash of
//! its canonical form (the expression with only the parentheses its tree needs, so
//! `(3*4)+5` and `3*4+5` are one question). The evaluation sampler keeps only slice 0,
//! the trainer's validation set only slice 1, and the training stream rejects both.

use sha2::{Digest, Sha256};

use crate::task::{Expr, Op};

/// How many slices question space is cut into.
pub const SLICES: u64 = 16;

/// What a slice of question space is reserved for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Slice {
    /// Final evaluation (the independent sampler): never trained on, never used to
    /// choose a checkpoint or a threshold.
    Evaluation,
    /// The trainer's periodic evaluation and threshold fitting: never trained on.
    Validation,
    /// Everything else: training data.
    Training,
}

/// The slice a question belongs to.
pub fn slice_of(expr: &Expr) -> Slice {
    let digest = Sha256::digest(canonical_form(expr).as_bytes());
    let mut head = [0u8; 8];
    head.copy_from_slice(&digest[..8]);
    match u64::from_le_bytes(head) % SLICES {
        0 => Slice::Evaluation,
        1 => Slice::Validation,
        _ => Slice::Training,
    }
}

/// The expression written with only the parentheses its tree needs.
pub fn canonical_form(expr: &Expr) -> String {
    let mut out = String::new();
    write_canonical(expr, None, &mut out);
    out
}

/// `parent`: the enclosing operator and whether this is its right operand.
fn write_canonical(e: &Expr, parent: Option<(Op, bool)>, out: &mut String) {
    match e {
        Expr::Num(n) => out.push_str(&n.to_string()),
        Expr::Bin { op, lhs, rhs, .. } => {
            let additive = *op != Op::Mul;
            let needed = match parent {
                None => false,
                Some((Op::Mul, right)) => additive || right,
                Some((_, right)) => additive && right,
            };
            if needed {
                out.push('(');
            }
            write_canonical(lhs, Some((*op, false)), out);
            out.push(op.symbol());
            write_canonical(rhs, Some((*op, true)), out);
            if needed {
                out.push(')');
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::task::parse;

    #[test]
    fn redundant_parentheses_do_not_change_the_canonical_form() {
        for (written, canonical) in [
            ("(3*4)+5", "3*4+5"),
            ("(1+2)", "1+2"),
            ("((1+2)*3)+4", "(1+2)*3+4"),
            ("3-(4-2)", "3-(4-2)"),
            ("2*(3*4)", "2*(3*4)"),
            ("(2*3)*4", "2*3*4"),
            ("80-67+11+7+78-(65+42)", "80-67+11+7+78-(65+42)"),
        ] {
            let e = parse(written).unwrap();
            assert_eq!(canonical_form(&e), canonical, "{written}");
            assert_eq!(parse(canonical).unwrap().value(), e.value());
            assert_eq!(slice_of(&e), slice_of(&parse(canonical).unwrap()));
        }
    }

    #[test]
    fn slices_have_their_share_of_questions() {
        use rand::SeedableRng;
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(1);
        let mut counts = std::collections::HashMap::new();
        for i in 0..16_000 {
            let q = crate::task::generate((i % 6) as u8 + 1, &mut rng);
            *counts
                .entry(slice_of(&parse(&q.question).unwrap()))
                .or_insert(0usize) += 1;
        }
        // 1/16 each for evaluation and validation (easy questions repeat, so loosely).
        for s in [Slice::Evaluation, Slice::Validation] {
            let c = counts[&s];
            assert!((700..1_300).contains(&c), "{s:?}: {c} of 16000");
        }
    }
}
