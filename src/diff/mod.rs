//! Reverse-mode symbolic differentiation over the IR.
//!
//! One rule per node kind, each allowed to reuse the node's own value
//! (`d exp(x) = exp(x) dx`, `d sigmoid(x) = sigmoid(x) (1 - sigmoid(x)) dx`).
//! Adjoints are accumulated from the root down in one pass over the arena
//! in reverse id order (parents have larger ids than their children), and
//! only into children that depend on the variable: a branch whose
//! derivative is zero is never built.
//!
//! Non-smooth points use subgradients: `abs` and `sign` follow
//! `sign(0) = 0`; `max(a, b)` passes the derivative to `a` when `a >= b`
//! and to `b` otherwise (`min` likewise with `<=`); `if` differentiates the
//! taken branch; `const(x)` has derivative zero.

use crate::ir::{Cmp, Func, Graph, Id, Node};
use std::collections::{BTreeMap, BTreeSet};

/// The derivative of `root` with respect to the node `wrt` (a symbol).
pub fn derivative(g: &mut Graph, root: Id, wrt: Id) -> Id {
    derivative_traced(g, root, wrt, &mut Vec::new())
}

/// Like [`derivative`], also listing each node the chain rule passed
/// through, outermost first, with the rule applied there.
pub fn derivative_traced(
    g: &mut Graph,
    root: Id,
    wrt: Id,
    trace: &mut Vec<(&'static str, Id)>,
) -> Id {
    // Nodes reachable from the root, and which of them depend on `wrt`.
    let mut reachable = BTreeSet::new();
    let mut stack = vec![root];
    while let Some(id) = stack.pop() {
        if reachable.insert(id) {
            stack.extend(g.node(id).children());
        }
    }
    let mut depends = BTreeSet::new();
    for &id in &reachable {
        let node = g.node(id);
        let dep = id == wrt
            || match node {
                Node::StopGrad(_) | Node::Cmp(..) | Node::And(..) | Node::Or(..) | Node::Not(_) => {
                    false
                }
                Node::Select(_, a, b) => depends.contains(a) || depends.contains(b),
                other => other.children().iter().any(|c| depends.contains(c)),
            };
        if dep {
            depends.insert(id);
        }
    }
    if !depends.contains(&root) {
        return g.num(0.0);
    }
    let mut adjoint: BTreeMap<Id, Vec<Id>> = BTreeMap::new();
    let one = g.num(1.0);
    adjoint.insert(root, vec![one]);
    for &id in depends.iter().rev() {
        if id == wrt {
            continue;
        }
        let Some(parts) = adjoint.remove(&id) else {
            continue;
        };
        let a = g.add(parts);
        trace.push((rule_name(g.node(id)), id));
        for (child, contribution) in rule(g, id, a) {
            if depends.contains(&child) {
                adjoint.entry(child).or_default().push(contribution);
            }
        }
    }
    let parts = adjoint.remove(&wrt).unwrap_or_default();
    g.add(parts)
}

/// The rule applied at a node, as a formula (`u`, `v` are its operands).
pub fn rule_name(n: &Node) -> &'static str {
    match n {
        Node::Add(_) => "sum rule: d(u + v) = du + dv",
        Node::Mul(_) => "product rule: d(u v) = v du + u dv",
        Node::Pow(..) => "power rule: d(u^k) = k u^(k-1) du",
        Node::Func(f, _) => match f {
            Func::Exp => "d exp(u) = exp(u) du",
            Func::Log => "d log(u) = du / u",
            Func::Log1p => "d log1p(u) = du / (1 + u)",
            Func::Expm1 => "d expm1(u) = exp(u) du",
            Func::Sqrt => "d sqrt(u) = du / (2 sqrt(u))",
            Func::Sigmoid => "d sigmoid(u) = sigmoid(u) (1 - sigmoid(u)) du",
            Func::Softplus => "d softplus(u) = sigmoid(u) du",
            Func::Tanh => "d tanh(u) = (1 - tanh(u)^2) du",
            Func::Cosh => "d cosh(u) = sinh(u) du",
            Func::Sinh => "d sinh(u) = cosh(u) du",
            Func::Abs => "d abs(u) = sign(u) du (sign(0) = 0)",
            Func::Sign => "d sign(u) = 0",
            Func::Relu => "d relu(u) = (if u > 0 then 1 else 0) du",
        },
        Node::Max(..) => "d max(u, v) = du where u >= v, else dv",
        Node::Min(..) => "d min(u, v) = du where u <= v, else dv",
        Node::Select(..) => "d (if c then u else v) = the taken branch's derivative",
        Node::StopGrad(_) => "d const(u) = 0",
        _ => "leaf",
    }
}

/// The contributions of node `n` with adjoint `a` to its children.
fn rule(g: &mut Graph, n: Id, a: Id) -> Vec<(Id, Id)> {
    let zero = g.num(0.0);
    match g.node(n).clone() {
        Node::Num(_) | Node::Sym(..) | Node::StopGrad(_) => Vec::new(),
        Node::Cmp(..) | Node::And(..) | Node::Or(..) | Node::Not(_) => Vec::new(),
        Node::Add(xs) => xs.into_iter().map(|x| (x, a)).collect(),
        Node::Mul(fs) => (0..fs.len())
            .map(|k| {
                let mut others: Vec<Id> = fs
                    .iter()
                    .enumerate()
                    .filter(|(j, _)| *j != k)
                    .map(|(_, f)| *f)
                    .collect();
                others.push(a);
                (fs[k], g.mul(others))
            })
            .collect(),
        Node::Pow(b, e) => {
            let mut out = Vec::new();
            // d b^e / db = e b^(e-1)
            let m1 = g.num(-1.0);
            let e1 = g.add2(e, m1);
            let be1 = g.pow(b, e1);
            out.push((b, g.mul(vec![a, e, be1])));
            // d b^e / de = b^e log(b)
            if g.as_num(e).is_none() {
                let lb = g.func(Func::Log, b);
                out.push((e, g.mul(vec![a, n, lb])));
            }
            out
        }
        Node::Func(f, x) => {
            let d = match f {
                Func::Exp => Some(n),
                Func::Log => {
                    let m1 = g.num(-1.0);
                    Some(g.pow(x, m1))
                }
                Func::Log1p => {
                    let one = g.num(1.0);
                    let m1 = g.num(-1.0);
                    let s = g.add2(one, x);
                    Some(g.pow(s, m1))
                }
                Func::Expm1 => Some(g.func(Func::Exp, x)),
                Func::Sqrt => {
                    let half = g.num(0.5);
                    let m1 = g.num(-1.0);
                    let inv = g.pow(n, m1);
                    Some(g.mul2(half, inv))
                }
                Func::Sigmoid => {
                    let one = g.num(1.0);
                    let c = g.sub(one, n);
                    Some(g.mul2(n, c))
                }
                Func::Softplus => Some(g.func(Func::Sigmoid, x)),
                Func::Tanh => {
                    let one = g.num(1.0);
                    let two = g.num(2.0);
                    let sq = g.pow(n, two);
                    Some(g.sub(one, sq))
                }
                Func::Cosh => Some(g.func(Func::Sinh, x)),
                Func::Sinh => Some(g.func(Func::Cosh, x)),
                Func::Abs => Some(g.func(Func::Sign, x)),
                Func::Sign => None,
                Func::Relu => {
                    let one = g.num(1.0);
                    let c = g.cmp(Cmp::Gt, x, zero);
                    Some(g.select(c, one, zero))
                }
            };
            match d {
                Some(d) => vec![(x, g.mul2(a, d))],
                None => Vec::new(),
            }
        }
        Node::Max(x, y) | Node::Min(x, y) => {
            let op = if matches!(g.node(n), Node::Max(..)) {
                Cmp::Ge
            } else {
                Cmp::Le
            };
            let c = g.cmp(op, x, y);
            let to_x = g.select(c, a, zero);
            let to_y = g.select(c, zero, a);
            vec![(x, to_x), (y, to_y)]
        }
        Node::Select(c, x, y) => {
            let to_x = g.select(c, a, zero);
            let to_y = g.select(c, zero, a);
            vec![(x, to_x), (y, to_y)]
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ir::SymKind;

    #[test]
    fn derivative_of_a_product_and_a_power() {
        let mut g = Graph::new();
        let x = g.sym(SymKind::Pred, "x");
        let three = g.num(3.0);
        let cube = g.pow(x, three);
        let d = derivative(&mut g, cube, x);
        let two = g.num(2.0);
        let sq = g.pow(x, two);
        assert_eq!(d, g.mul2(three, sq));
    }

    #[test]
    fn const_blocks_the_gradient() {
        let mut g = Graph::new();
        let x = g.sym(SymKind::Pred, "x");
        let e = g.func(Func::Exp, x);
        let held = g.stop_grad(e);
        let y = g.mul2(held, x);
        assert_eq!(derivative(&mut g, y, x), held);
    }
}
