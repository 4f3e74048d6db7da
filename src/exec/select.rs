//! Select before the function: a planner rewrite for two-valued labels.
//!
//! A loss written for a label `y ∈ {0, 1}` mixes both cases arithmetically:
//! `y·log(p) + (1 − y)·log(1 − p)` computes two logarithms per row and
//! throws one away (multiplies it by 0). An expert's loop picks the case
//! first and computes one: `log(if y == 1 then p else 1 − p)`. This pass
//! does the same for every per-row root (the value's summand, each gradient
//! and Hessian) that reads a two-valued label at the current row:
//!
//! 1. specialise the root at each label value (`y := 1`, `y := 0`) and fold
//!    the constants (`0·x`, `1·x`, `x + 0`, comparisons of numbers);
//! 2. merge the two specialisations from the top by anti-unification: where
//!    both have the same operation, apply it once to merged operands, so
//!    the select sinks to the leaves (`log(p)` and `−log(1 − p)` become
//!    `−1·log(…)` and `log(…)`, merged into `sel(c, w, −1)·log(sel(c, p, 1 − p))`).
//!
//! Every step is an exact identity on the label's two values (which input
//! validation guarantees), except that `0·x` is folded to 0: where the
//! original would compute `0·∞ = NaN` from a discarded branch, the
//! rewritten form gives the branch actually taken. The rewrite is kept only
//! when it makes the plan cheaper by a weighted operation count.

use super::plan::{BFn, P, PGraph, PNode, RowRef, UFn, commutes};
use crate::hash::{HashMap, HashSet};
use crate::ir::{Cmp, Func};

/// Rewrites `roots` for the two-valued label in input `slot` (values
/// `lo < hi`), in place, when that lowers their joint cost.
pub(crate) fn rewrite(g: &mut PGraph, slot: u16, lo: f64, hi: f64, roots: &mut [&mut P]) {
    let label = g.intern(PNode::Input {
        slot,
        row: RowRef::Cur,
        comp: None,
    });
    let hi_num = g.num(hi);
    let cond = g.intern(PNode::Bin(BFn::Cmp(Cmp::Eq), label, hi_num));
    let before: Vec<P> = roots.iter().map(|r| **r).collect();
    let mut after = before.clone();
    let mut spec_hi = HashMap::default();
    let mut spec_lo = HashMap::default();
    let mut merged = Memo::default();
    let mut changed = false;
    for r in &mut after {
        if !reads(g, *r, label, &mut HashSet::default()) {
            continue;
        }
        let a = specialise(g, *r, label, hi, &mut spec_hi);
        let b = specialise(g, *r, label, lo, &mut spec_lo);
        *r = merge(g, cond, a, b, &mut merged);
        changed = true;
    }
    if changed && cost(g, &after) < cost(g, &before) {
        for (r, a) in roots.iter_mut().zip(after) {
            **r = a;
        }
    }
}

/// Whether `p` reads node `label` (the label at the current row).
fn reads(g: &PGraph, p: P, label: P, seen: &mut HashSet<P>) -> bool {
    if p == label {
        return true;
    }
    if !g.info[p as usize].rowdep || !seen.insert(p) {
        return false;
    }
    children(g, p).into_iter().any(|c| reads(g, c, label, seen))
}

fn children(g: &PGraph, p: P) -> Vec<P> {
    match &g.nodes[p as usize] {
        PNode::Input { comp, .. } => comp.iter().copied().collect(),
        PNode::Un(_, a) | PNode::Powi(a, _) => vec![*a],
        PNode::Bin(_, a, b) => vec![*a, *b],
        PNode::Sel(c, a, b) => vec![*c, *a, *b],
        PNode::Red { filter, body, .. } => filter.iter().copied().chain([*body]).collect(),
        _ => Vec::new(),
    }
}

/// `p` with `label` replaced by the number `v`, constants folded.
fn specialise(g: &mut PGraph, p: P, label: P, v: f64, memo: &mut HashMap<P, P>) -> P {
    if p == label {
        return g.num(v);
    }
    if !g.info[p as usize].rowdep {
        return p;
    }
    if let Some(&r) = memo.get(&p) {
        return r;
    }
    let mut s = |g: &mut PGraph, x: P| specialise(g, x, label, v, memo);
    let r = match g.nodes[p as usize].clone() {
        PNode::Un(f, a) => {
            let a = s(g, a);
            g.un(f, a)
        }
        PNode::Powi(a, n) => {
            let a = s(g, a);
            match g.as_num(a) {
                Some(x) => g.num(x.powi(n)),
                None => g.intern(PNode::Powi(a, n)),
            }
        }
        PNode::Bin(f, a, b) => {
            let (a, b) = (s(g, a), s(g, b));
            fold(g, f, a, b)
        }
        PNode::Sel(c, a, b) => {
            let c = s(g, c);
            match g.as_num(c) {
                Some(x) if x != 0.0 => s(g, a),
                Some(_) => s(g, b),
                None => {
                    let (a, b) = (s(g, a), s(g, b));
                    if a == b {
                        a
                    } else {
                        g.intern(PNode::Sel(c, a, b))
                    }
                }
            }
        }
        PNode::Input { slot, row, comp } => {
            let comp = comp.map(|c| s(g, c));
            g.intern(PNode::Input { slot, row, comp })
        }
        PNode::Red {
            op,
            range,
            filter,
            body,
        } => {
            let filter = filter.map(|f| s(g, f));
            let body = s(g, body);
            g.intern(PNode::Red {
                op,
                range,
                filter,
                body,
            })
        }
        _ => p,
    };
    memo.insert(p, r);
    r
}

/// `a f b` with the identities that specialisation exposes folded.
fn fold(g: &mut PGraph, f: BFn, a: P, b: P) -> P {
    let (x, y) = (g.as_num(a), g.as_num(b));
    match (f, x, y) {
        (BFn::Cmp(c), Some(x), Some(y)) => g.num(if c.holds(x, y) { 1.0 } else { 0.0 }),
        (BFn::And, Some(x), Some(y)) => g.num(((x != 0.0) && (y != 0.0)) as u8 as f64),
        (BFn::Or, Some(x), Some(y)) => g.num(((x != 0.0) || (y != 0.0)) as u8 as f64),
        (BFn::Max, Some(x), Some(y)) => g.num(x.max(y)),
        (BFn::Min, Some(x), Some(y)) => g.num(x.min(y)),
        (BFn::Mul, Some(0.0), _) | (BFn::Mul, _, Some(0.0)) => g.num(0.0),
        (BFn::Mul, _, Some(1.0)) => a,
        (BFn::Mul, _, Some(-1.0)) => g.un(UFn::Neg, a),
        (BFn::Add, _, Some(0.0)) => a,
        (BFn::Sub, _, Some(0.0)) => a,
        (BFn::Sub, Some(0.0), _) => g.un(UFn::Neg, b),
        (BFn::Div, Some(0.0), _) => g.num(0.0),
        (BFn::Div, _, Some(1.0)) => a,
        _ => g.bin(f, a, b),
    }
}

/// The node for "`a` when `c`, else `b`" with the select pushed as far
/// down as the two sides share structure.
fn merge(g: &mut PGraph, c: P, a: P, b: P, memo: &mut Memo) -> P {
    if a == b {
        return a;
    }
    if let Some(&r) = memo.merged.get(&(a, b)) {
        return r;
    }
    let plain = g.intern(PNode::Sel(c, a, b));
    let mut best = (plain, memo.weight(g, plain));
    let consider = |g: &mut PGraph, memo: &mut Memo, best: &mut (P, u64), cand: P| {
        let w = memo.weight(g, cand);
        if w < best.1 {
            *best = (cand, w);
        }
    };
    let (na, nb) = (g.nodes[a as usize].clone(), g.nodes[b as usize].clone());
    match (&na, &nb) {
        (PNode::Un(f, x), PNode::Un(h, y)) if f == h => {
            let m = merge(g, c, *x, *y, memo);
            let cand = g.un(*f, m);
            consider(g, memo, &mut best, cand);
        }
        (PNode::Powi(x, n), PNode::Powi(y, k)) if n == k => {
            let m = merge(g, c, *x, *y, memo);
            let cand = g.intern(PNode::Powi(m, *n));
            consider(g, memo, &mut best, cand);
        }
        (PNode::Bin(f, x1, x2), PNode::Bin(h, y1, y2)) if f == h => {
            let cand = merge_bin(g, c, *f, (*x1, *x2), (*y1, *y2), memo);
            consider(g, memo, &mut best, cand);
        }
        _ => {}
    }
    // One side as a product or quotient with an identity operand, so an
    // expensive factor shared with the other side's product is computed once:
    // `−x` as `−1·x`, `x` as `1·x`, `1/x` as a quotient.
    for (prod, lone, side_is_a) in [(a, b, true), (b, a, false)] {
        if let PNode::Bin(f @ (BFn::Mul | BFn::Div), p1, p2) = g.nodes[prod as usize].clone() {
            let (one, neg) = (g.num(1.0), g.num(-1.0));
            let as_pair: Vec<(P, P)> = match (&g.nodes[lone as usize], f) {
                (PNode::Un(UFn::Neg, x), BFn::Mul) => vec![(neg, *x), (*x, neg)],
                (PNode::Un(UFn::Recip, x), BFn::Div) => vec![(one, *x)],
                (_, BFn::Mul) => vec![(one, lone), (lone, one)],
                (_, BFn::Div) => vec![(lone, one)],
                _ => Vec::new(),
            };
            for (l1, l2) in as_pair {
                let cand = if side_is_a {
                    merge_bin(g, c, f, (p1, p2), (l1, l2), memo)
                } else {
                    merge_bin(g, c, f, (l1, l2), (p1, p2), memo)
                };
                consider(g, memo, &mut best, cand);
            }
        }
    }
    memo.merged.insert((a, b), best.0);
    best.0
}

/// `f` applied once to merged operands, trying both pairings for a
/// commutative `f`.
fn merge_bin(
    g: &mut PGraph,
    c: P,
    f: BFn,
    (x1, x2): (P, P),
    (y1, y2): (P, P),
    memo: &mut Memo,
) -> P {
    let straight = {
        let (m1, m2) = (merge(g, c, x1, y1, memo), merge(g, c, x2, y2, memo));
        fold(g, f, m1, m2)
    };
    if !commutes(f) {
        return straight;
    }
    let crossed = {
        let (m1, m2) = (merge(g, c, x1, y2, memo), merge(g, c, x2, y1, memo));
        fold(g, f, m1, m2)
    };
    if memo.weight(g, crossed) < memo.weight(g, straight) {
        crossed
    } else {
        straight
    }
}

/// What `merge` has worked out: the merge of each pair of sides, and the
/// weight of each candidate (a node never changes once interned, so
/// neither does the cost of its DAG).
#[derive(Default)]
struct Memo {
    merged: HashMap<(P, P), P>,
    weights: HashMap<P, u64>,
}

impl Memo {
    /// The weighted operation count of one node's DAG.
    fn weight(&mut self, g: &PGraph, p: P) -> u64 {
        *self.weights.entry(p).or_insert_with(|| cost(g, &[p]))
    }
}

/// The weighted operation count of the DAG under `roots`, each node once:
/// transcendental functions and powers dominate, then divisions and square
/// roots, then everything else.
fn cost(g: &PGraph, roots: &[P]) -> u64 {
    let mut seen = HashSet::default();
    let mut stack: Vec<P> = roots.to_vec();
    let mut total = 0;
    while let Some(p) = stack.pop() {
        if !seen.insert(p) {
            continue;
        }
        total += match &g.nodes[p as usize] {
            PNode::Num(_) => 0,
            PNode::Un(UFn::F(Func::Abs | Func::Sign | Func::Relu), _) => 1,
            PNode::Un(UFn::F(Func::Sqrt) | UFn::Recip, _) => 6,
            PNode::Un(UFn::F(_), _) => 20,
            PNode::Bin(BFn::Div, ..) => 6,
            PNode::Bin(BFn::Pow, ..) => 45,
            PNode::Powi(_, n) => 1 + n.unsigned_abs().max(1).ilog2() as u64 + 6 * (*n < 0) as u64,
            _ => 1,
        };
        stack.extend(children(g, p));
    }
    total
}
