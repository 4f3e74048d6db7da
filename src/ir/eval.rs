//! A straightforward node-by-node evaluator of IR expressions for one row.
//!
//! It is the reference the fast evaluator and every simplification are
//! checked against, so it favours obviousness over speed: one pass over
//! the reachable nodes in id order (children before parents).

use super::{Graph, Id, Node, SymKind};
use std::collections::HashMap;

/// Evaluates `root`, reading symbols from `value(kind, name)`.
/// Conditions evaluate to 1 (true) or 0 (false).
pub fn eval(g: &Graph, root: Id, value: &dyn Fn(SymKind, &str) -> f64) -> f64 {
    let mut order = Vec::new();
    let mut stack = vec![root];
    let mut seen = std::collections::HashSet::new();
    while let Some(id) = stack.pop() {
        if seen.insert(id) {
            order.push(id);
            stack.extend(g.node(id).children());
        }
    }
    order.sort();
    let mut v: HashMap<Id, f64> = HashMap::with_capacity(order.len());
    for id in order {
        let x = |c: &Id| v[c];
        let truth = |b: bool| if b { 1.0 } else { 0.0 };
        let r = match g.node(id) {
            Node::Num(n) => n.0,
            Node::Sym(kind, name) => value(*kind, name),
            Node::Add(xs) => xs.iter().map(x).sum(),
            Node::Mul(fs) => fs.iter().map(x).product(),
            Node::Pow(b, e) => pow(x(b), x(e)),
            Node::Func(f, a) => f.eval(x(a)),
            Node::Max(a, b) => x(a).max(x(b)),
            Node::Min(a, b) => x(a).min(x(b)),
            Node::Select(c, a, b) => {
                if x(c) != 0.0 {
                    x(a)
                } else {
                    x(b)
                }
            }
            Node::Cmp(op, a, b) => truth(op.holds(x(a), x(b))),
            Node::And(a, b) => truth(x(a) != 0.0 && x(b) != 0.0),
            Node::Or(a, b) => truth(x(a) != 0.0 || x(b) != 0.0),
            Node::Not(a) => truth(x(a) == 0.0),
            Node::StopGrad(a) => x(a),
        };
        v.insert(id, r);
    }
    v[&root]
}

/// `b^e` with integer exponents exact for negative bases.
pub fn pow(b: f64, e: f64) -> f64 {
    if e.fract() == 0.0 && e.abs() < 64.0 {
        b.powi(e as i32)
    } else {
        b.powf(e)
    }
}
