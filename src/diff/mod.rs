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

use crate::ir::{Cmp, Func, Graph, Id, IdxRange, Node, RedOp, SymKind};
use std::collections::{BTreeMap, BTreeSet, HashMap};

/// What to differentiate with respect to.
#[derive(Clone, Debug)]
pub enum Wrt {
    /// One node (a scalar symbol, such as a sample reduction `R0`).
    Node(Id),
    /// A pred: its value in the current row, or for a vector pred its
    /// component `out` (an index node, usually `k`). Uses of the pred in
    /// other rows (`z@j`) contribute through batch coupling.
    Pred {
        /// The pred's name.
        name: String,
        /// The output component index, for a vector pred.
        out: Option<Id>,
    },
}

/// The derivative of `root` with respect to the node `wrt` (a symbol).
pub fn derivative(g: &mut Graph, root: Id, wrt: Id) -> Id {
    derivative_of(g, root, &Wrt::Node(wrt), &mut Vec::new())
}

/// Like [`derivative`], also listing each node the chain rule passed
/// through, outermost first, with the rule applied there.
pub fn derivative_traced(
    g: &mut Graph,
    root: Id,
    wrt: Id,
    trace: &mut Vec<(&'static str, Id)>,
) -> Id {
    derivative_of(g, root, &Wrt::Node(wrt), trace)
}

fn is_leaf(g: &Graph, id: Id, wrt: &Wrt) -> bool {
    match (wrt, g.node(id)) {
        (Wrt::Node(w), _) => id == *w,
        (Wrt::Pred { name, .. }, Node::Sym(SymKind::Pred, n)) => n == name,
        (
            Wrt::Pred { name, .. },
            Node::Elem {
                kind: SymKind::Pred,
                name: n,
                ..
            },
        ) => n == name,
        _ => false,
    }
}

/// The derivative of `root` with respect to `wrt`, recording the chain rule.
///
/// Inside a reduction the adjoints carry the reduction's free index; when
/// an adjoint flows into a node that does not depend on that index, it is
/// summed over the index there (`Σ_c`), which is exactly the chain rule for
/// a quantity used once per component. At the leaves, a component `z[c]`
/// is contracted against the output index (`c := k`), a class-indexed
/// `z[y]` becomes `δ(y, k)`, and a use in another row `z@j` is turned into
/// the current row's share by swapping the roles of the two rows.
pub fn derivative_of(
    g: &mut Graph,
    root: Id,
    wrt: &Wrt,
    trace: &mut Vec<(&'static str, Id)>,
) -> Id {
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
        let dep = is_leaf(g, id, wrt)
            || match node {
                Node::StopGrad(_) | Node::Cmp(..) | Node::And(..) | Node::Or(..) | Node::Not(_) => {
                    false
                }
                Node::Delta(..) | Node::Idx(_) | Node::Row | Node::Elem { .. } | Node::Sym(..) => {
                    false
                }
                Node::Select(_, a, b) => depends.contains(a) || depends.contains(b),
                Node::Reduce { body, .. } => depends.contains(body),
                other => other.children().iter().any(|c| depends.contains(c)),
            };
        if dep {
            depends.insert(id);
        }
    }
    if !depends.contains(&root) {
        return g.num(0.0);
    }
    let mut free: HashMap<Id, BTreeSet<String>> = HashMap::new();
    let mut adjoint: BTreeMap<Id, Vec<Id>> = BTreeMap::new();
    let one = g.num(1.0);
    adjoint.insert(root, vec![one]);
    let mut leaves = Vec::new();
    for &id in depends.iter().rev() {
        let Some(parts) = adjoint.remove(&id) else {
            continue;
        };
        let a = g.add(parts);
        if is_leaf(g, id, wrt) {
            leaves.push((id, a));
            continue;
        }
        trace.push((rule_name(g.node(id)), id));
        for (child, contribution) in rule(g, id, a) {
            if !depends.contains(&child) {
                continue;
            }
            let contribution = sum_out(g, contribution, id, child, &mut free);
            adjoint.entry(child).or_default().push(contribution);
        }
    }
    let parts: Vec<Id> = leaves
        .into_iter()
        .map(|(leaf, a)| contract(g, leaf, a, wrt))
        .collect();
    g.add(parts)
}

/// Sums a contribution over the indices free in its parent but not in `child`.
fn sum_out(
    g: &mut Graph,
    contribution: Id,
    parent: Id,
    child: Id,
    free: &mut HashMap<Id, BTreeSet<String>>,
) -> Id {
    // The parent's adjoint is one value per binding of its free indices
    // (even where the expression does not mention them): a child outside
    // an index's scope receives the sum over that index.
    let mut f = |g: &Graph, x: Id| free.entry(x).or_insert_with(|| g.free_indices(x)).clone();
    let extra: Vec<String> = f(g, parent).difference(&f(g, child)).cloned().collect();
    let mut out = contribution;
    for idx in extra.into_iter().rev() {
        let range = g.range(&idx).cloned().unwrap_or(IdxRange::Batch);
        out = g.reduce(RedOp::Sum, &idx, range, None, out);
    }
    out
}

/// A leaf's adjoint as a contribution to the gradient at the current row
/// (and output component `k` for a vector pred).
fn contract(g: &mut Graph, leaf: Id, a: Id, wrt: &Wrt) -> Id {
    let (row, comp) = match g.node(leaf) {
        Node::Elem { row, comp, .. } => (row.clone(), *comp),
        _ => (None, None),
    };
    let out = match wrt {
        Wrt::Pred { out: Some(k), .. } => Some(*k),
        _ => None,
    };
    let a = match (comp, out) {
        (Some(c), Some(k)) => match g.node(c).clone() {
            Node::Idx(name) if !g.free_indices(k).contains(&name) => g.subst(a, &name, k),
            _ => {
                let d = g.delta(c, k);
                g.mul2(a, d)
            }
        },
        _ => a,
    };
    match row {
        // Row i's loss uses this pred at row j: for the current row m that
        // is Σ_i (adjoint with j := m), i.e. Σ_j (adjoint with rows swapped).
        Some(j) => {
            let swapped = g.swap_rows(a, &j);
            g.reduce(RedOp::Sum, &j, IdxRange::Batch, None, swapped)
        }
        None => a,
    }
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
        Node::Reduce { op, .. } => match op {
            RedOp::Sum => "d sum[c](u) = sum[c](du)",
            RedOp::Mean => "d mean[c](u) = mean[c](du)",
            RedOp::Max | RedOp::Min => "d max[c](u) = du at the maximising c",
            RedOp::LogSumExp => "d logsumexp[c](u) = sum[c](softmax(u)[c] du)",
        },
        _ => "leaf",
    }
}

/// The contributions of node `n` with adjoint `a` to its children.
fn rule(g: &mut Graph, n: Id, a: Id) -> Vec<(Id, Id)> {
    let zero = g.num(0.0);
    match g.node(n).clone() {
        Node::Num(_) | Node::Sym(..) | Node::StopGrad(_) => Vec::new(),
        Node::Idx(_) | Node::Row | Node::Elem { .. } | Node::Delta(..) => Vec::new(),
        Node::Reduce {
            op,
            idx,
            range,
            filter,
            body,
        } => {
            let weight = match op {
                RedOp::Sum => None,
                RedOp::Mean => {
                    let one = g.num(1.0);
                    let count = g.reduce(RedOp::Sum, &idx, range.clone(), filter, one);
                    let m1 = g.num(-1.0);
                    Some(g.pow(count, m1))
                }
                // Every component equal to the maximum takes the derivative.
                RedOp::Max | RedOp::Min => {
                    let one = g.num(1.0);
                    let at = g.cmp(Cmp::Eq, body, n);
                    Some(g.select(at, one, zero))
                }
                // d logsumexp = softmax weights.
                RedOp::LogSumExp => {
                    let d = g.sub(body, n);
                    Some(g.func(Func::Exp, d))
                }
            };
            let c = match weight {
                Some(w) => g.mul2(a, w),
                None => a,
            };
            let c = match filter {
                Some(f) => g.select(f, c, zero),
                None => c,
            };
            vec![(body, c)]
        }
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
