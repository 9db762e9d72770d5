//! Digit-level work of one operation (the `<work>` part of a step line), with optional
//! fault injection: [`Faults`] numbers the columns in the order the work visits them and
//! can corrupt one of them, which is how [`super::corrupt_step`] makes plausible slips.

use crate::task::Op;

#[derive(Debug, Clone, Copy)]
pub(super) enum Fault {
    /// The written column result is off by this amount (and propagates).
    Digit(i64),
    /// The incoming carry or borrow of the column is ignored.
    DropCarry,
}

/// Numbers the fault sites (columns) in the order the work visits them; injects one
/// fault at the target site.
#[derive(Default)]
pub(super) struct Faults {
    pub target: Option<(usize, Fault)>,
    pub next: usize,
    pub applied: bool,
}

impl Faults {
    fn site(&mut self) -> Option<Fault> {
        let site = self.next;
        self.next += 1;
        match self.target {
            Some((t, fault)) if t == site => Some(fault),
            _ => None,
        }
    }

    /// Drops the carry `c` if the fault says so and there is one.
    fn carry(&mut self, fault: Option<Fault>, c: u128) -> u128 {
        if matches!(fault, Some(Fault::DropCarry)) && c > 0 {
            self.applied = true;
            return 0;
        }
        c
    }

    /// Shifts the column value `v` if the fault says so and the result stays in `0..=max`.
    fn digit(&mut self, fault: Option<Fault>, v: u128, max: u128) -> u128 {
        if let Some(Fault::Digit(d)) = fault {
            let w = v as i128 + i128::from(d);
            if (0..=max as i128).contains(&w) {
                self.applied = true;
                return w as u128;
            }
        }
        v
    }
}

/// Number of decimal digits (`0` has one).
fn len(n: u128) -> usize {
    n.checked_ilog10().unwrap_or(0) as usize + 1
}

/// The decimal digit of `n` worth `10^i` (0 beyond its length).
fn digit(n: u128, i: usize) -> u128 {
    n / 10u128.pow(i as u32) % 10
}

pub(super) fn work(a: u32, op: Op, b: u32, faults: &mut Faults) -> (String, u128) {
    let (a, b) = (u128::from(a), u128::from(b));
    match op {
        Op::Add => add_work(a, b, faults),
        Op::Sub => sub_work(a, b, faults),
        Op::Mul => mul_work(a, b, faults),
    }
}

fn add_work(a: u128, b: u128, f: &mut Faults) -> (String, u128) {
    let (mut cols, mut carry, mut result, mut place) = (Vec::new(), 0, 0, 1);
    for i in 0..len(a.max(b)) {
        let (x, y) = (digit(a, i), digit(b, i));
        let fault = f.site();
        let c = f.carry(fault, carry);
        let s = f.digit(fault, x + y + c, 19);
        let plus = if c > 0 { "+1" } else { "" };
        cols.push(format!("{x}+{y}{plus}={s}"));
        result += s % 10 * place;
        carry = s / 10;
        place *= 10;
    }
    if carry > 0 {
        cols.push("0+0+1=1".to_string());
        result += place;
    }
    (cols.join(", "), result)
}

fn sub_work(a: u128, b: u128, f: &mut Faults) -> (String, u128) {
    debug_assert!(a >= b, "subtraction {a}-{b} is negative");
    let (mut cols, mut borrow, mut result, mut place) = (Vec::new(), 0, 0, 1);
    for i in 0..len(a.max(b)) {
        let (x, y) = (digit(a, i), digit(b, i));
        let fault = f.site();
        let r = f.carry(fault, borrow);
        let short = x < y + r;
        let v = if short { x + 10 - y - r } else { x - y - r };
        let v = f.digit(fault, v, 9);
        let ten = if short { "1" } else { "" };
        let less = if r > 0 { "-1" } else { "" };
        cols.push(format!("{ten}{x}-{y}{less}={v}"));
        result += v * place;
        borrow = u128::from(short);
        place *= 10;
    }
    (cols.join(", "), result)
}

fn mul_digit_work(a: u128, d: u128, f: &mut Faults) -> (String, u128) {
    let (mut cols, mut carry, mut result, mut place) = (Vec::new(), 0, 0, 1);
    for i in 0..len(a) {
        let x = digit(a, i);
        let fault = f.site();
        let c = f.carry(fault, carry);
        let p = f.digit(fault, x * d + c, 99);
        let plus = if c > 0 {
            format!("+{c}")
        } else {
            String::new()
        };
        cols.push(format!("{x}*{d}{plus}={p}"));
        result += p % 10 * place;
        carry = p / 10;
        place *= 10;
    }
    (cols.join(", "), result + carry * place)
}

fn mul_work(a: u128, b: u128, f: &mut Faults) -> (String, u128) {
    if b < 10 {
        return mul_digit_work(a, b, f);
    }
    let mut parts = Vec::new();
    let mut partials = Vec::new();
    for d in (0..len(b)).map(|i| digit(b, i)) {
        let (work, p) = mul_digit_work(a, d, f);
        parts.push(format!("{a}*{d}: {work}"));
        partials.push(p);
    }
    let mut sum = partials[0];
    let mut place = 10;
    for &p in &partials[1..] {
        let shifted = p * place;
        let (work, s) = add_work(sum, shifted, f);
        parts.push(format!("sum {sum}+{shifted}: {work}"));
        sum = s;
        place *= 10;
    }
    (parts.join(" ; "), sum)
}
