//! Plausible wrong steps, for training data (revision pairs, PRM negatives): a slipped
//! column, a dropped carry, a miscopied number, a misread operator, or `+`/`-` done
//! before a following `*`. Each stays a well-formed step line whose `<rest>` a solution
//! can continue from, so a wrong attempt looks like a model's own mistake.

use rand::Rng;

use super::work::{work, Fault, Faults};
use super::{next_path, next_step, node_at, operands, replace_at, step_line, to_u32, Step};
use crate::task::{parse_relaxed, Expr, Op, MAX_VALUE};

/// A plausible but wrong step from `expr`, for training data (revision pairs, PRM
/// negatives). One of: a column result off by one or two (propagated consistently to the
/// result), a dropped carry or borrow, a miscopied number in `<rest>` (the new result or
/// another operand), a misread operator, or `+`/`-` done before a following `*`.
///
/// The returned expression is exactly the line's `<rest>` (re-parsed), so a solution can
/// continue from it with [`next_step`]. `None` when `expr` is a number, or (rarely) when no
/// corruption keeps every value of `<rest>` in `0..=9999`.
pub fn corrupt_step(expr: &Expr, rng: &mut impl Rng) -> Option<(Expr, String)> {
    let (_, correct) = next_step(expr)?;
    let path = next_path(expr)?;
    let at = (expr, path.as_slice(), operands(node_at(expr, &path)));
    for _ in 0..64 {
        let candidate = match rng.random_range(0..5) {
            0 => {
                let size = if rng.random_bool(0.75) { 1 } else { 2 };
                let delta = if rng.random_bool(0.5) { size } else { -size };
                work_fault(at, Fault::Digit(delta), rng)
            }
            1 => work_fault(at, Fault::DropCarry, rng),
            2 => copy_error(at, rng),
            3 => misread(at, rng),
            _ => precedence_error(expr, rng),
        };
        match candidate {
            Some((next, line)) if line != correct => return Some((next, line)),
            _ => {}
        }
    }
    None
}

/// An expression, the path to its next operation, and that operation.
type At<'a> = (&'a Expr, &'a [bool], Step);
type Corrupt = Option<(Expr, String)>;

/// The line `a op b: work => next` and the expression its rest states (`None` when the
/// rest has a value outside `0..=9999`).
fn emit((a, op, b): Step, work: &str, next: &Expr) -> Corrupt {
    let stated = parse_relaxed(&next.to_string()).ok()?;
    Some((stated, step_line(a, op, b, work, next)))
}

/// `expr` with the operation at `path` replaced by `value`, if that is in range.
fn with_value(expr: &Expr, path: &[bool], value: u128) -> Option<Expr> {
    let value = u32::try_from(value).ok().filter(|&v| v <= MAX_VALUE)?;
    Some(replace_at(expr, path, Expr::Num(value)))
}

fn work_fault((expr, path, step): At, fault: Fault, rng: &mut impl Rng) -> Corrupt {
    let (a, op, b) = step;
    let mut faults = Faults::default();
    work(a, op, b, &mut faults);
    let target = Some((rng.random_range(0..faults.next), fault));
    let mut faults = Faults {
        target,
        ..Faults::default()
    };
    let (text, value) = work(a, op, b, &mut faults);
    if !faults.applied {
        return None;
    }
    emit(step, &text, &with_value(expr, path, value)?)
}

fn copy_error((expr, path, step): At, rng: &mut impl Rng) -> Corrupt {
    let (a, op, b) = step;
    let (text, value) = work(a, op, b, &mut Faults::default());
    let next = if rng.random_bool(0.5) {
        // The result itself is miscopied.
        replace_at(expr, path, Expr::Num(mutate_number(to_u32(value), rng)))
    } else {
        let mut next = with_value(expr, path, value)?;
        let mut leaves = Vec::new();
        leaves_mut(&mut next, &mut leaves);
        let i = rng.random_range(0..leaves.len());
        *leaves[i] = mutate_number(*leaves[i], rng);
        next
    };
    emit(step, &text, &next)
}

fn misread((expr, path, (a, op, b)): At, rng: &mut impl Rng) -> Corrupt {
    let others = [Op::Add, Op::Sub, Op::Mul].into_iter().filter(|&o| o != op);
    let wrong = others.collect::<Vec<_>>()[rng.random_range(0..2)];
    if wrong == Op::Sub && a < b {
        return None;
    }
    let (text, value) = work(a, wrong, b, &mut Faults::default());
    emit((a, wrong, b), &text, &with_value(expr, path, value)?)
}

/// `a+b*c` (or `a-b*c`) reduced as if it were `(a+b)*c`.
fn precedence_error(expr: &Expr, rng: &mut impl Rng) -> Corrupt {
    let mut sites = Vec::new();
    precedence_sites(expr, &mut Vec::new(), &mut sites);
    if sites.is_empty() {
        return None;
    }
    let path = &sites[rng.random_range(0..sites.len())];
    let Expr::Bin { op, lhs, rhs, .. } = node_at(expr, path) else {
        return None;
    };
    let Expr::Bin { lhs: b, rhs: c, .. } = &**rhs else {
        return None;
    };
    let (a, op, b) = (lhs.as_num()?, *op, b.as_num()?);
    if op == Op::Sub && a < b {
        return None;
    }
    let (text, value) = work(a, op, b, &mut Faults::default());
    // `a op b*c` becomes `value*c`, keeping the node's parentheses.
    let paren = matches!(node_at(expr, path), Expr::Bin { paren: true, .. });
    let mut product = Expr::bin(Op::Mul, Expr::Num(to_u32(value)), (**c).clone());
    if let Expr::Bin { paren: p, .. } = &mut product {
        *p = paren;
    }
    emit((a, op, b), &text, &replace_at(expr, path, product))
}

fn precedence_sites(e: &Expr, path: &mut Vec<bool>, out: &mut Vec<Vec<bool>>) {
    if let Expr::Bin { op, lhs, rhs, .. } = e {
        let mul_next = matches!(&**rhs, Expr::Bin { op: Op::Mul, paren: false, lhs, .. }
            if lhs.as_num().is_some());
        if *op != Op::Mul && lhs.as_num().is_some() && mul_next {
            out.push(path.clone());
        }
        for (right, child) in [(false, lhs), (true, rhs)] {
            path.push(right);
            precedence_sites(child, path, out);
            path.pop();
        }
    }
}

fn leaves_mut<'a>(e: &'a mut Expr, out: &mut Vec<&'a mut u32>) {
    match e {
        Expr::Num(n) => out.push(n),
        Expr::Bin { lhs, rhs, .. } => {
            leaves_mut(lhs, out);
            leaves_mut(rhs, out);
        }
    }
}

/// `n` with one decimal digit replaced by a different one (no new leading zero).
fn mutate_number(n: u32, rng: &mut impl Rng) -> u32 {
    let mut digits: Vec<u32> = n.to_string().bytes().map(|c| u32::from(c - b'0')).collect();
    let i = rng.random_range(0..digits.len());
    let low = u32::from(i == 0 && digits.len() > 1);
    let old = digits[i];
    let mut new = rng.random_range(low..=8);
    if new >= old {
        new += 1;
    }
    digits[i] = new;
    digits.iter().fold(0, |acc, d| acc * 10 + d)
}

#[cfg(test)]
mod tests {
    use rand::SeedableRng;
    use rand_chacha::ChaCha8Rng;

    use super::*;
    use crate::solution::solve_expr;
    use crate::task::{generate, parse};

    fn rest(line: &str) -> &str {
        line.rsplit_once(" => ").unwrap().1
    }

    #[test]
    fn corrupt_steps_are_wrong_but_continuable() {
        let mut rng = ChaCha8Rng::seed_from_u64(5);
        let (mut total, mut same_head, mut value_changed) = (0, 0, 0);
        for i in 0..1_000 {
            let p = generate((i % 6) as u8 + 1, &mut rng);
            let mut expr = parse(&p.question).unwrap();
            while let Some((next, correct)) = next_step(&expr) {
                let (wrong_expr, wrong) = corrupt_step(&expr, &mut rng).expect("a corruption");
                assert_ne!(wrong, correct);
                assert_eq!(parse_relaxed(rest(&wrong)).unwrap(), wrong_expr, "{wrong}");
                assert_eq!(wrong_expr.to_string(), rest(&wrong));
                solve_expr(&wrong_expr);
                total += 1;
                same_head += usize::from(wrong.split(':').next() == correct.split(':').next());
                value_changed += usize::from(wrong_expr.value() != p.answer);
                expr = next;
            }
        }
        assert!(same_head > total / 3 && same_head < total, "{same_head}");
        assert!(value_changed > total * 8 / 10, "{value_changed}/{total}");
        assert!(corrupt_step(&Expr::Num(3), &mut rng).is_none());
    }
}
