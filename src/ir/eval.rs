//! A straightforward evaluator of IR expressions, node by node.
//!
//! It is the reference the fast evaluator and every simplification are
//! checked against, so it favours obviousness over speed: a recursive walk
//! with a memo per binding of the reduction indices.

use super::{Graph, Id, IdxRange, Node, RedOp, SymKind};
use crate::hash::HashMap;
use crate::sema::types::Size;
use std::collections::BTreeMap;

/// Where an expression's inputs come from.
pub trait Values {
    /// The value of a data, pred, param or reduction symbol at `row`, or of
    /// component `comp` of a vector.
    fn value(&self, kind: SymKind, name: &str, row: usize, comp: Option<usize>) -> f64;
    /// The number of rows in the batch.
    fn rows(&self) -> usize;
    /// The length of a size name or literal.
    fn size(&self, size: &Size) -> usize;
}

/// Evaluates `root` at `row`. Conditions evaluate to 1 (true) or 0 (false).
pub fn eval_at(g: &Graph, root: Id, inputs: &dyn Values, row: usize) -> f64 {
    eval_with(g, root, inputs, row, &[])
}

/// Evaluates `root` at `row` with free indices bound (the output index `k`
/// of a vector pred's gradient).
pub fn eval_with(
    g: &Graph,
    root: Id,
    inputs: &dyn Values,
    row: usize,
    indices: &[(&str, usize)],
) -> f64 {
    let idx = indices.iter().map(|(n, v)| (n.to_string(), *v)).collect();
    let mut e = Eval {
        g,
        inputs,
        row,
        idx,
    };
    e.ev(root, &mut HashMap::default())
}

/// Evaluates an expression over scalar symbols only (one row, no vectors).
pub fn eval(g: &Graph, root: Id, value: &dyn Fn(SymKind, &str) -> f64) -> f64 {
    struct Scalars<'a>(&'a dyn Fn(SymKind, &str) -> f64);
    impl Values for Scalars<'_> {
        fn value(&self, kind: SymKind, name: &str, _: usize, _: Option<usize>) -> f64 {
            (self.0)(kind, name)
        }
        fn rows(&self) -> usize {
            1
        }
        fn size(&self, size: &Size) -> usize {
            match size {
                Size::Lit(n) => *n as usize,
                Size::Name(_) => 0,
            }
        }
    }
    eval_at(g, root, &Scalars(value), 0)
}

struct Eval<'a> {
    g: &'a Graph,
    inputs: &'a dyn Values,
    row: usize,
    idx: BTreeMap<String, usize>,
}

impl Eval<'_> {
    fn index(&mut self, id: Id, memo: &mut HashMap<Id, f64>) -> Option<usize> {
        let v = self.ev(id, memo);
        (v >= 0.0 && v.fract() == 0.0 && v.is_finite()).then_some(v as usize)
    }

    fn ev(&mut self, id: Id, memo: &mut HashMap<Id, f64>) -> f64 {
        if let Some(&v) = memo.get(&id) {
            return v;
        }
        let truth = |b: bool| if b { 1.0 } else { 0.0 };
        let g = self.g;
        let r = match g.node(id) {
            Node::Num(n) => n.0,
            Node::Sym(kind, name) => self.inputs.value(*kind, name, self.row, None),
            Node::Idx(n) => self.idx.get(n).map_or(f64::NAN, |v| *v as f64),
            Node::Row => self.row as f64,
            Node::Elem {
                kind,
                name,
                row,
                comp,
            } => {
                let r = match row {
                    Some(j) => self.idx.get(j).copied(),
                    None => Some(self.row),
                };
                let c = match comp {
                    Some(c) => self.index(*c, memo).map(Some),
                    None => Some(None),
                };
                match (r, c) {
                    (Some(r), Some(c)) => self.inputs.value(*kind, name, r, c),
                    _ => f64::NAN,
                }
            }
            Node::Add(xs) => xs.iter().map(|x| self.ev(*x, memo)).sum(),
            Node::Mul(fs) => fs.iter().map(|x| self.ev(*x, memo)).product(),
            Node::Pow(b, e) => {
                let (b, e) = (self.ev(*b, memo), self.ev(*e, memo));
                pow(b, e)
            }
            Node::Func(f, a) => f.eval(self.ev(*a, memo)),
            Node::Max(a, b) => self.ev(*a, memo).max(self.ev(*b, memo)),
            Node::Min(a, b) => self.ev(*a, memo).min(self.ev(*b, memo)),
            Node::Select(c, a, b) => {
                if self.ev(*c, memo) != 0.0 {
                    self.ev(*a, memo)
                } else {
                    self.ev(*b, memo)
                }
            }
            Node::Cmp(op, a, b) => {
                let (a, b) = (self.ev(*a, memo), self.ev(*b, memo));
                truth(op.holds(a, b))
            }
            Node::And(a, b) => truth(self.ev(*a, memo) != 0.0 && self.ev(*b, memo) != 0.0),
            Node::Or(a, b) => truth(self.ev(*a, memo) != 0.0 || self.ev(*b, memo) != 0.0),
            Node::Not(a) => truth(self.ev(*a, memo) == 0.0),
            Node::StopGrad(a) => self.ev(*a, memo),
            Node::Delta(a, b) => truth(self.ev(*a, memo) == self.ev(*b, memo)),
            Node::Reduce {
                op,
                idx,
                range,
                filter,
                body,
            } => {
                let n = match range {
                    IdxRange::Feature(s) => self.inputs.size(s),
                    IdxRange::Batch => self.inputs.rows(),
                };
                let saved = self.idx.get(idx).copied();
                let mut vals = Vec::with_capacity(n);
                for v in 0..n {
                    self.idx.insert(idx.clone(), v);
                    // Values inside depend on this binding: a fresh memo.
                    let mut inner = HashMap::default();
                    if let Some(f) = filter
                        && self.ev(*f, &mut inner) == 0.0
                    {
                        continue;
                    }
                    vals.push(self.ev(*body, &mut inner));
                }
                match saved {
                    Some(v) => self.idx.insert(idx.clone(), v),
                    None => self.idx.remove(idx),
                };
                reduce(*op, &vals)
            }
        };
        memo.insert(id, r);
        r
    }
}

/// Combines a reduction's values; an empty max, min or mean is NaN.
pub fn reduce(op: RedOp, vals: &[f64]) -> f64 {
    match op {
        RedOp::Sum => vals.iter().sum(),
        RedOp::Mean if vals.is_empty() => f64::NAN,
        RedOp::Mean => vals.iter().sum::<f64>() / vals.len() as f64,
        RedOp::Max => vals.iter().copied().fold(f64::NAN, f64::max),
        RedOp::Min => vals.iter().copied().fold(f64::NAN, f64::min),
        RedOp::LogSumExp => {
            let m = vals.iter().copied().fold(f64::NEG_INFINITY, f64::max);
            if !m.is_finite() {
                return m;
            }
            m + vals.iter().map(|v| (v - m).exp()).sum::<f64>().ln()
        }
    }
}

/// `b^e` with integer exponents exact for negative bases.
pub fn pow(b: f64, e: f64) -> f64 {
    if e.fract() == 0.0 && e.abs() < 64.0 {
        b.powi(e as i32)
    } else {
        b.powf(e)
    }
}
