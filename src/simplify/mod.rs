//! Simplification beyond the canonical form the IR builds by itself.
//!
//! Construction already flattens, sorts, folds constants and collects like
//! terms and powers. This pass adds a few named rewrites, each kept only
//! when it makes the expression smaller (by [`Graph::tree_size`], what a
//! reader sees), so the simplifier never grows an expression:
//!
//! - `expand`: distribute products over sums (`y (1 - p) + p (1 - y)` →
//!   `p - y` once like terms cancel);
//! - `together`: bring a sum of fractions over a common denominator
//!   (`-y/p + (1-y)/(1-p)` → `(p - y) / (p (1 - p))`);
//! - `into-branches`: a product with `if c then x else 0` moves into the
//!   branch (`-y · (if m > 0 then 1 else 0)` → `if m > 0 then -y else 0`);
//! - `condition`: comparisons are written with the unknowns on the left and
//!   a positive leading coefficient (`1 - y s > 0` → `y s < 1`);
//! - `label-select`: for a `{0, 1}` label, `if y == 1 then a else b` →
//!   `y a + (1 - y) b` when that is smaller.

use crate::hash::HashMap;
use crate::ir::{Cmp, Fact, Func, Graph, Id, Node, SymKind};
use std::collections::BTreeMap;

/// What a rewrite must not increase: the length of the expression printed
/// as text, which is what a reader sees (`-(a + b)` costs its parentheses,
/// `x * y^-1` is read as `x / y`).
pub fn cost(g: &Graph, id: Id) -> usize {
    // The text form of a DAG can be exponentially long, so its length is
    // estimated node by node, each shared node once per use but computed
    // once (saturating), mirroring what the printer writes.
    let mut memo: HashMap<Id, usize> = HashMap::default();
    for x in g.reachable(id) {
        let len = node_cost(g, x, &|y: &Id| memo.get(y).copied().unwrap_or(0));
        memo.insert(x, len);
    }
    memo[&id]
}

/// [`cost`], remembered in the graph: the simplifier compares the costs of
/// candidate rewrites thousands of times, mostly over the same subterms,
/// and walking each candidate's whole DAG again was a fifth of a spec's
/// compile time. Only the nodes not costed before are visited.
fn cost_of(g: &mut Graph, id: Id) -> usize {
    if let Some(c) = g.known_cost(id) {
        return c;
    }
    let mut todo = Vec::new();
    let mut seen = crate::hash::HashSet::default();
    let mut stack = vec![id];
    while let Some(x) = stack.pop() {
        if g.known_cost(x).is_some() || !seen.insert(x) {
            continue;
        }
        todo.push(x);
        stack.extend(g.node(x).children());
    }
    // Children are interned before their parents: ascending ids cost
    // every child first.
    todo.sort();
    let mut len = 0;
    for x in todo {
        len = node_cost(g, x, &|y: &Id| g.known_cost(*y).unwrap_or(0));
        g.record_cost(x, len);
    }
    // (the last is `id`, the largest id of all)
    len
}

/// One node's printed length, given its children's (`c`).
fn node_cost(g: &Graph, x: Id, c: &dyn Fn(&Id) -> usize) -> usize {
    let paren = |y: &Id| match g.node(*y) {
        Node::Add(_) | Node::Select(..) => 2,
        _ => 0,
    };
    match g.node(x) {
        Node::Num(v) => crate::ast::fmt_num(v.0).len(),
        Node::Sym(_, n) | Node::Idx(n) => n.len(),
        Node::Row => 1,
        Node::Elem {
            name, row, comp, ..
        } => name.len() + row.as_ref().map_or(0, |r| r.len() + 1) + comp.map_or(0, |k| c(&k) + 2),
        Node::Add(xs) => xs
            .iter()
            .map(|t| term_cost(g, *t, &c))
            .fold(0usize, usize::saturating_add)
            .saturating_add(3 * (xs.len() - 1)),
        Node::Mul(fs) => {
            let mut total = 0usize;
            for (k, f) in fs.iter().enumerate() {
                let piece = match g.as_num(*f) {
                    Some(v) if k == 0 && (v == -1.0 || v == 1.0) => 1,
                    _ => c(f).saturating_add(paren(f)),
                };
                total = total.saturating_add(piece).saturating_add(3);
            }
            total
        }
        Node::Pow(b, e) => c(b)
            .saturating_add(paren(b))
            .saturating_add(1)
            .saturating_add(c(e)),
        Node::Func(f, a) => f.name().len().saturating_add(2).saturating_add(c(a)),
        Node::Max(a, b) | Node::Min(a, b) => c(a).saturating_add(c(b)).saturating_add(7),
        Node::Select(k, a, b) => c(k)
            .saturating_add(c(a))
            .saturating_add(c(b))
            .saturating_add(15),
        Node::Cmp(_, a, b) | Node::And(a, b) | Node::Or(a, b) => {
            c(a).saturating_add(c(b)).saturating_add(4)
        }
        Node::Not(a) => c(a).saturating_add(4),
        Node::StopGrad(a) => c(a).saturating_add(7),
        Node::Delta(a, b) => c(a).saturating_add(c(b)).saturating_add(20),
        Node::Reduce {
            op,
            idx,
            filter,
            body,
            ..
        } => op
            .name()
            .len()
            .saturating_add(idx.len())
            .saturating_add(filter.map_or(0, |f| c(&f) + 2))
            .saturating_add(c(body))
            .saturating_add(4),
    }
}

/// A term of a sum costs its product without a leading `-1` (the sign
/// replaces the `+`).
fn term_cost(g: &Graph, t: Id, c: &dyn Fn(&Id) -> usize) -> usize {
    match g.node(t) {
        Node::Mul(fs) if g.as_num(fs[0]) == Some(-1.0) => c(&t).saturating_sub(4),
        _ => c(&t),
    }
}

/// One rewrite the simplifier applied, for `lossc grad --explain`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Step {
    /// The rule's name.
    pub rule: &'static str,
    /// The expression before.
    pub before: Id,
    /// The expression after.
    pub after: Id,
}

thread_local! {
    static TRACE: std::cell::RefCell<Option<Vec<Step>>> = const { std::cell::RefCell::new(None) };
}

fn record(rule: &'static str, before: Id, after: Id) {
    if before != after {
        TRACE.with(|t| {
            if let Some(steps) = t.borrow_mut().as_mut() {
                steps.push(Step {
                    rule,
                    before,
                    after,
                });
            }
        });
    }
}

/// Like [`simplify`], also returning the rewrites applied, in order.
pub fn simplify_traced(g: &mut Graph, root: Id) -> (Id, Vec<Step>) {
    TRACE.with(|t| *t.borrow_mut() = Some(Vec::new()));
    let out = simplify(g, root);
    let steps = TRACE.with(|t| t.borrow_mut().take()).unwrap_or_default();
    (out, steps)
}

/// Expressions longer than this (as text) are left as built: expanding or
/// bringing them over a common denominator is where a simplifier's time
/// goes exponential, and a page-long derivative is no textbook form anyway.
const MAX_REWRITE_COST: usize = 600;

/// Products of sums with more terms than this are not expanded.
const MAX_EXPANSION: usize = 64;

/// Simplifies `root`, returning an equal expression that is no larger.
pub fn simplify(g: &mut Graph, root: Id) -> Id {
    let mut new: BTreeMap<Id, Id> = BTreeMap::new();
    for id in g.reachable(root) {
        let node = g.node(id).clone();
        let m = |x: &Id| new[x];
        let rebuilt = match &node {
            Node::Num(_) | Node::Sym(..) => id,
            Node::Add(xs) => {
                let xs = xs.iter().map(m).collect();
                let s = g.add(xs);
                let s = merge_selects(g, s);
                if matches!(g.node(s), Node::Add(_)) {
                    best_sum(g, s)
                } else {
                    s
                }
            }
            Node::Mul(fs) => {
                let fs = fs.iter().map(m).collect();
                let p = g.mul(fs);
                simplify_product(g, p)
            }
            Node::Pow(b, e) => g.pow(m(b), m(e)),
            Node::Func(f, x) => g.func(*f, m(x)),
            Node::Max(a, b) => g.max(m(a), m(b)),
            Node::Min(a, b) => g.min(m(a), m(b)),
            Node::Select(c, a, b) => {
                let s = g.select(m(c), m(a), m(b));
                let s = zero_last(g, s);
                let s = nested_conditions(g, s);
                label_select(g, s)
            }
            Node::Cmp(op, a, b) => condition(g, *op, m(a), m(b)),
            Node::And(a, b) => g.and(m(a), m(b)),
            Node::Or(a, b) => g.or(m(a), m(b)),
            Node::Not(a) => g.not(m(a)),
            Node::StopGrad(a) => g.stop_grad(m(a)),
            Node::Idx(_) | Node::Row => id,
            Node::Elem {
                kind,
                name,
                row,
                comp,
            } => g.elem(*kind, name, row.as_deref(), comp.map(|c| m(&c))),
            Node::Delta(a, b) => g.delta(m(a), m(b)),
            Node::Reduce {
                op,
                idx,
                range,
                filter,
                body,
            } => g.reduce(*op, idx, range.clone(), filter.map(|f| m(&f)), m(body)),
        };
        // The rewrites only ever shrink; guard against a rebuilt node that
        // canonicalised into something larger.
        let chosen = if cost_of(g, rebuilt) <= cost_of(g, id) {
            rebuilt
        } else {
            id
        };
        new.insert(id, chosen);
    }
    new[&root]
}

/// The smallest of a sum, its expansion and its form over a common denominator.
fn best_sum(g: &mut Graph, s: Id) -> Id {
    let mut best = s;
    let mut size = cost_of(g, s);
    if size > MAX_REWRITE_COST {
        return s;
    }
    let mut rule = "";
    let candidates = [
        ("expand", expand(g, s)),
        ("together", together(g, s)),
        ("common factor", common_factor(g, s)),
    ];
    for (name, candidate) in candidates {
        let c = cost_of(g, candidate);
        if c < size {
            best = candidate;
            size = c;
            rule = name;
        }
    }
    record(rule, s, best);
    best
}

/// Distributes products over sums (and small integer powers of sums).
pub fn expand(g: &mut Graph, id: Id) -> Id {
    expand_memo(g, id, &mut HashMap::default())
}

fn expand_memo(g: &mut Graph, id: Id, memo: &mut HashMap<Id, Id>) -> Id {
    if let Some(&r) = memo.get(&id) {
        return r;
    }
    let out = expand_node(g, id, memo);
    memo.insert(id, out);
    out
}

fn expand_node(g: &mut Graph, id: Id, memo: &mut HashMap<Id, Id>) -> Id {
    match g.node(id).clone() {
        Node::Add(xs) => {
            let xs = xs.iter().map(|&x| expand_memo(g, x, memo)).collect();
            g.add(xs)
        }
        Node::Mul(fs) => {
            let mut terms: Vec<Vec<Id>> = vec![Vec::new()];
            for f in fs {
                let f = expand_memo(g, f, memo);
                let parts = match g.node(f) {
                    Node::Add(xs) => xs.clone(),
                    _ => vec![f],
                };
                if terms.len() * parts.len() > MAX_EXPANSION {
                    return id;
                }
                terms = terms
                    .iter()
                    .flat_map(|t| {
                        parts.iter().map(move |p| {
                            let mut t = t.clone();
                            t.push(*p);
                            t
                        })
                    })
                    .collect();
            }
            let products = terms.into_iter().map(|t| g.mul(t)).collect();
            g.add(products)
        }
        Node::Pow(b, e) => match (g.node(b).clone(), g.as_num(e)) {
            (Node::Add(_), Some(k)) if k.fract() == 0.0 && (2.0..=3.0).contains(&k) => {
                let copies = vec![b; k as usize];
                let p = g.intern(Node::Mul(copies));
                expand_memo(g, p, memo)
            }
            _ => id,
        },
        _ => id,
    }
}

/// A sum of fractions over one common denominator, with the numerator expanded.
pub fn together(g: &mut Graph, id: Id) -> Id {
    let Node::Add(terms) = g.node(id).clone() else {
        return id;
    };
    let mut denominators: BTreeMap<Id, f64> = BTreeMap::new();
    for &t in &terms {
        for f in factors(g, t) {
            if let Node::Pow(b, e) = *g.node(f)
                && let Some(k) = g.as_num(e)
                && k < 0.0
            {
                let entry = denominators.entry(b).or_insert(0.0);
                *entry = entry.max(-k);
            }
        }
    }
    if denominators.is_empty() {
        return id;
    }
    let mut scaled = Vec::new();
    for &t in &terms {
        let mut fs = vec![t];
        for (&b, &k) in &denominators {
            let kn = g.num(k);
            fs.push(g.pow(b, kn));
        }
        scaled.push(g.mul(fs));
    }
    let numerator = g.add(scaled);
    let numerator = expand(g, numerator);
    let mut fs = vec![numerator];
    for (&b, &k) in &denominators {
        let kn = g.num(-k);
        fs.push(g.pow(b, kn));
    }
    g.mul(fs)
}

fn factors(g: &Graph, t: Id) -> Vec<Id> {
    match g.node(t) {
        Node::Mul(fs) => fs.clone(),
        _ => vec![t],
    }
}

/// `k · (if c then x else 0)` → `if c then k x else 0` (either branch
/// zero), and a number times an `if` moves into both branches.
fn into_branches(g: &mut Graph, p: Id) -> Id {
    let Node::Mul(fs) = g.node(p).clone() else {
        return p;
    };
    let zero = g.num(0.0);
    let numeric_only = fs.len() == 2 && g.as_num(fs[0]).is_some();
    let Some(pos) = fs.iter().position(
        |&f| matches!(*g.node(f), Node::Select(_, a, b) if a == zero || b == zero || numeric_only),
    ) else {
        return p;
    };
    let Node::Select(c, a, b) = *g.node(fs[pos]) else {
        return p;
    };
    let others: Vec<Id> = fs
        .iter()
        .enumerate()
        .filter(|(k, _)| *k != pos)
        .map(|(_, f)| *f)
        .collect();
    let mut branch = |x: Id| {
        let mut v = others.clone();
        v.push(x);
        let m = g.mul(v);
        match g.node(m) {
            Node::Add(_) => best_sum(g, m),
            Node::Mul(_) => simplify_product(g, m),
            _ => m,
        }
    };
    let (a, b) = (branch(a), branch(b));
    g.select(c, a, b)
}

/// Tries distributing a product over each sum among its factors, one sum
/// at a time so that the other factors can still cancel against the
/// terms' denominators (`σ (1 - σ) ((1 - y) / (1 - σ) - y / σ)` becomes
/// `σ (1 - y) - y (1 - σ)`, then `σ - y`); keeps the cheapest form.
fn simplify_product(g: &mut Graph, p: Id) -> Id {
    let p = tanh_rule(g, p);
    let mut best = p;
    if cost_of(g, p) > MAX_REWRITE_COST {
        return p;
    }
    let fs = factors(g, p);
    for (k, &f) in fs.iter().enumerate() {
        let Node::Add(terms) = g.node(f).clone() else {
            continue;
        };
        let others: Vec<Id> = fs
            .iter()
            .enumerate()
            .filter(|(j, _)| *j != k)
            .map(|(_, h)| *h)
            .collect();
        let distributed: Vec<Id> = terms
            .iter()
            .map(|&t| {
                let mut v = others.clone();
                v.push(t);
                g.mul(v)
            })
            .collect();
        let sum = g.add(distributed);
        let sum = merge_selects(g, sum);
        let sum = best_sum_or(g, sum);
        if cost_of(g, sum) < cost_of(g, best) {
            best = sum;
        }
    }
    record("distribute", p, best);
    if matches!(g.node(best), Node::Mul(_)) {
        let out = into_branches(g, best);
        record("into branches", best, out);
        out
    } else {
        best
    }
}

/// `(if c then a else b) + (if c then a' else b') + t` →
/// `(if c then a + a' else b + b') + t`: one decision instead of two.
fn merge_selects(g: &mut Graph, s: Id) -> Id {
    let Node::Add(xs) = g.node(s).clone() else {
        return s;
    };
    let mut by_cond: BTreeMap<Id, (Vec<Id>, Vec<Id>)> = BTreeMap::new();
    let mut rest = Vec::new();
    for x in xs {
        match *g.node(x) {
            Node::Select(c, a, b) => {
                // `if not-c then a else b` is `if c then b else a`.
                let (c, a, b) = match negate(g, c) {
                    Some(n) if by_cond.contains_key(&n) => (n, b, a),
                    _ => (c, a, b),
                };
                let e = by_cond.entry(c).or_default();
                e.0.push(a);
                e.1.push(b);
            }
            _ => rest.push(x),
        }
    }
    if by_cond.values().all(|(a, _)| a.len() < 2) {
        return s;
    }
    for (c, (a, b)) in by_cond {
        let a = g.add(a);
        let a = best_sum_or(g, a);
        let b = g.add(b);
        let b = best_sum_or(g, b);
        rest.push(g.select(c, a, b));
    }
    let merged = g.add(rest);
    if cost_of(g, merged) <= cost_of(g, s) {
        record("merge branches", s, merged);
        merged
    } else {
        s
    }
}

fn best_sum_or(g: &mut Graph, x: Id) -> Id {
    if matches!(g.node(x), Node::Add(_)) {
        best_sum(g, x)
    } else {
        x
    }
}

/// `if c then 0 else b` → `if not-c then b else 0` for a comparison `c`,
/// so the interesting case reads first (`if y * s < 1 then -y else 0`).
fn zero_last(g: &mut Graph, s: Id) -> Id {
    let Node::Select(c, a, b) = *g.node(s) else {
        return s;
    };
    if g.as_num(a) != Some(0.0) || g.as_num(b) == Some(0.0) {
        return s;
    }
    match negate(g, c) {
        Some(nc) => {
            let nc = match *g.node(nc) {
                Node::Cmp(op, l, r) => condition(g, op, l, r),
                _ => nc,
            };
            g.select(nc, b, a)
        }
        None => s,
    }
}

/// `if a then (if b then x else 0) else 0` → `if a and b then x else 0`.
fn nested_conditions(g: &mut Graph, s: Id) -> Id {
    let Node::Select(c, a, b) = *g.node(s) else {
        return s;
    };
    if g.as_num(b) != Some(0.0) {
        return s;
    }
    let Node::Select(c2, a2, b2) = *g.node(a) else {
        return s;
    };
    if g.as_num(b2) != Some(0.0) {
        return s;
    }
    let both = g.and(c, c2);
    let out = g.select(both, a2, b);
    record("and conditions", s, out);
    out
}

/// The comparison that holds exactly when `c` does not.
fn negate(g: &mut Graph, c: Id) -> Option<Id> {
    let Node::Cmp(op, l, r) = *g.node(c) else {
        return None;
    };
    let negated = match op {
        Cmp::Lt => Cmp::Ge,
        Cmp::Le => Cmp::Gt,
        Cmp::Gt => Cmp::Le,
        Cmp::Ge => Cmp::Lt,
        Cmp::Eq => Cmp::Ne,
        Cmp::Ne => Cmp::Eq,
    };
    Some(g.cmp(negated, l, r))
}

/// `sinh(x) / cosh(x)` → `tanh(x)`.
fn tanh_rule(g: &mut Graph, p: Id) -> Id {
    let Node::Mul(fs) = g.node(p).clone() else {
        return p;
    };
    for (k, &f) in fs.iter().enumerate() {
        let Node::Func(Func::Sinh, x) = *g.node(f) else {
            continue;
        };
        let cosh = g.func(Func::Cosh, x);
        let m1 = g.num(-1.0);
        let inv = g.pow(cosh, m1);
        if let Some(j) = fs.iter().position(|&h| h == inv) {
            let mut rest: Vec<Id> = fs
                .iter()
                .enumerate()
                .filter(|(i, _)| *i != k && *i != j)
                .map(|(_, h)| *h)
                .collect();
            rest.push(g.func(Func::Tanh, x));
            return g.mul(rest);
        }
    }
    p
}

/// `a x + b x` → `x (a + b)`: factors common to every term come out.
fn common_factor(g: &mut Graph, s: Id) -> Id {
    let Node::Add(xs) = g.node(s).clone() else {
        return s;
    };
    let lists: Vec<Vec<Id>> = xs.iter().map(|&x| factors(g, x)).collect();
    let common: Vec<Id> = lists[0]
        .iter()
        .copied()
        .filter(|f| g.as_num(*f).is_none() && lists.iter().all(|l| l.contains(f)))
        .collect();
    if common.is_empty() {
        return s;
    }
    let mut terms = Vec::new();
    for l in &lists {
        let rest: Vec<Id> = l.iter().copied().filter(|f| !common.contains(f)).collect();
        terms.push(if rest.is_empty() {
            g.num(1.0)
        } else {
            g.mul(rest)
        });
    }
    let inner = g.add(terms);
    let inner = if matches!(g.node(inner), Node::Add(_)) {
        expand_if_smaller(g, inner)
    } else {
        inner
    };
    let mut out = common;
    out.push(inner);
    g.mul(out)
}

fn expand_if_smaller(g: &mut Graph, x: Id) -> Id {
    let e = expand(g, x);
    if cost_of(g, e) < cost_of(g, x) { e } else { x }
}

/// Writes a comparison with the unknowns on the left, constants on the
/// right and a positive leading coefficient; keeps the smaller form.
fn condition(g: &mut Graph, op: Cmp, a: Id, b: Id) -> Id {
    let original = g.cmp(op, a, b);
    let diff = g.sub(a, b);
    let diff = expand_if_smaller(g, diff);
    let (mut lhs, mut rhs) = match g.node(diff).clone() {
        Node::Add(xs) if xs.iter().any(|&x| g.as_num(x).is_some()) => {
            let k = xs.iter().find_map(|&x| g.as_num(x)).unwrap_or(0.0);
            let kn = g.num(k);
            let rest = g.sub(diff, kn);
            (rest, g.num(-k))
        }
        _ => (diff, g.num(0.0)),
    };
    let mut op = op;
    let lead = match g.node(lhs).clone() {
        Node::Mul(fs) => g.as_num(fs[0]),
        Node::Add(xs) => match g.node(xs[0]).clone() {
            Node::Mul(fs) => g.as_num(fs[0]),
            _ => None,
        },
        _ => None,
    };
    if let Some(c) = lead
        && c < 0.0
    {
        let inv = g.num(1.0 / c);
        lhs = g.mul2(inv, lhs);
        rhs = g.mul2(inv, rhs);
        op = flip(op);
    }
    // `u - v op 0` reads better as `u op v`.
    if g.as_num(rhs) == Some(0.0)
        && let Node::Add(xs) = g.node(lhs).clone()
        && xs.len() == 2
    {
        let neg = xs
            .iter()
            .position(|&x| matches!(g.node(x), Node::Mul(fs) if g.as_num(fs[0]) == Some(-1.0)));
        if let Some(k) = neg {
            let v = g.neg(xs[k]);
            lhs = xs[1 - k];
            rhs = v;
        }
    }
    let normal = g.cmp(op, lhs, rhs);
    if cost_of(g, normal) <= cost_of(g, original) {
        record("condition", original, normal);
        normal
    } else {
        original
    }
}

fn flip(op: Cmp) -> Cmp {
    match op {
        Cmp::Lt => Cmp::Gt,
        Cmp::Le => Cmp::Ge,
        Cmp::Gt => Cmp::Lt,
        Cmp::Ge => Cmp::Le,
        other => other,
    }
}

/// For a `{0, 1}` label `y`: `if y == 1 then a else b` = `y a + (1 - y) b`.
fn label_select(g: &mut Graph, s: Id) -> Id {
    let Node::Select(c, a, b) = *g.node(s) else {
        return s;
    };
    let Node::Cmp(op, l, r) = *g.node(c) else {
        return s;
    };
    let binary = |g: &Graph, x: Id| match g.node(x) {
        Node::Sym(SymKind::Data, n) => {
            matches!(g.fact(n), Some(Fact::Labels(vs)) if vs.len() == 2 && vs.contains(&0.0) && vs.contains(&1.0))
        }
        _ => false,
    };
    if !binary(g, l) {
        return s;
    }
    let (when_one, when_zero) = match (op, g.as_num(r)) {
        (Cmp::Eq, Some(1.0)) => (a, b),
        (Cmp::Eq, Some(0.0)) => (b, a),
        (Cmp::Ne, Some(1.0)) => (b, a),
        (Cmp::Ne, Some(0.0)) => (a, b),
        _ => return s,
    };
    let one = g.num(1.0);
    let not_y = g.sub(one, l);
    let t1 = g.mul2(l, when_one);
    let t0 = g.mul2(not_y, when_zero);
    let sum = g.add2(t1, t0);
    let sum = best_sum(g, sum);
    if g.tree_size(sum) < g.tree_size(s) {
        record("label select", s, sum);
        sum
    } else {
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The remembered cost of every node, costed in any order, is the one
    /// computed afresh.
    #[test]
    fn remembered_costs_are_fresh_costs() {
        let mut g = Graph::new();
        let y = g.sym(SymKind::Data, "y");
        let z = g.sym(SymKind::Pred, "z");
        let s = g.func(Func::Sigmoid, z);
        let one = g.num(1.0);
        let q = g.sub(one, s);
        let q2 = g.mul2(q, q);
        let l = g.func(Func::Log, s);
        let a = g.mul2(y, q2);
        let t = g.mul2(a, l);
        let root = g.add(vec![t, q2, l]);
        let simplified = simplify(&mut g, root);
        // A node in the middle first, then everything, then the roots.
        assert_eq!(cost_of(&mut g, q2), cost(&g, q2));
        for i in (0..g.len() as u32).rev() {
            let id = Id(i);
            assert_eq!(cost_of(&mut g, id), cost(&g, id), "node {i}");
        }
        assert_eq!(cost_of(&mut g, simplified), cost(&g, simplified));
        assert_eq!(cost_of(&mut g, root), cost(&g, root));
        // A DAG whose printed length doubles per level saturates, and is
        // remembered as saturated.
        let mut big = z;
        for _ in 0..70 {
            let e = g.func(Func::Exp, big);
            big = g.mul2(big, e);
        }
        assert_eq!(cost(&g, big), usize::MAX);
        assert_eq!(cost_of(&mut g, big), usize::MAX);
        assert_eq!(cost_of(&mut g, big), usize::MAX);
    }

    #[test]
    fn expand_cancels_like_terms() {
        let mut g = Graph::new();
        let y = g.sym(SymKind::Data, "y");
        let p = g.sym(SymKind::Pred, "p");
        let one = g.num(1.0);
        let one_p = g.sub(one, p);
        let one_y = g.sub(one, y);
        let a = g.mul2(y, one_p);
        let b = g.mul2(p, one_y);
        let s = g.sub(b, a);
        let expected = g.sub(p, y);
        assert_eq!(simplify(&mut g, s), expected);
    }

    #[test]
    fn zero_one_label_rules() {
        let mut g = Graph::new();
        g.set_fact("y", Fact::Labels(vec![0.0, 1.0]));
        let y = g.sym(SymKind::Data, "y");
        let p = g.sym(SymKind::Pred, "p");
        let one = g.num(1.0);
        let zero = g.num(0.0);
        // y (1 - y) = 0
        let not_y = g.sub(one, y);
        let both = g.mul2(y, not_y);
        assert_eq!(simplify(&mut g, both), zero);
        // if y == 1 then p else 0  →  y p, shorter than the if
        let c = g.cmp(Cmp::Eq, y, one);
        let s = g.select(c, p, zero);
        let yp = g.mul2(y, p);
        assert_eq!(simplify(&mut g, s), yp);
    }

    #[test]
    fn conditions_are_normalised() {
        let mut g = Graph::new();
        let y = g.sym(SymKind::Data, "y");
        let s = g.sym(SymKind::Pred, "s");
        let one = g.num(1.0);
        let zero = g.num(0.0);
        let ys = g.mul2(y, s);
        let margin = g.sub(one, ys);
        let c = g.cmp(Cmp::Gt, margin, zero);
        let expected = g.cmp(Cmp::Lt, ys, one);
        assert_eq!(simplify(&mut g, c), expected);
    }
}
