//! Derivation: the gradient of a spec's objective with respect to each pred.
//!
//! The objective is `F(R0, R1, ...)` over sample reductions `Rm = mean_i
//! f_m(row i)` (or sums). Its gradient at row `i` is
//! `Σ_m ∂F/∂Rm · w_m · ∂f_m/∂pred (row i)` with `w_m = 1/n` for a mean and
//! 1 for a sum. When every reduction is a mean, `1/n` is reported as the
//! reduction factor and the rest as the per-sample derivative `∂ℓ/∂pred`,
//! the form a textbook prints.

use crate::diff::derivative;
use crate::ir::lower::{Objective, SampleReduction, Unsupported, lower};
use crate::ir::{Func, Graph, Id, Node, SymKind};
use crate::print::{Printer, Style};
use crate::sema::Checked;
use crate::simplify::simplify;

/// The factor the per-sample derivative is multiplied by in the gradient.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Factor {
    /// Every reduction is a mean: the gradient is `(1/n) ∂ℓ/∂pred`.
    OneOverN,
    /// Every reduction is a sum: the gradient is `∂ℓ/∂pred`.
    One,
}

impl Factor {
    /// `1/n` or `1`.
    pub fn text(self) -> &'static str {
        match self {
            Factor::OneOverN => "1/n",
            Factor::One => "1",
        }
    }
}

/// The derivative with respect to one pred.
#[derive(Clone, Debug)]
pub struct PredGradient {
    /// The pred's name.
    pub pred: String,
    /// The per-sample derivative as differentiated, before simplification.
    pub raw: Id,
    /// The simplified per-sample derivative.
    pub per_sample: Id,
    /// The second derivative of the per-sample loss (the Hessian's diagonal).
    pub hessian: Id,
}

/// A numerically stable form used in evaluation in place of what the spec wrote.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StableForm {
    /// The rule's name.
    pub rule: &'static str,
    /// What the spec computes, as text.
    pub from: String,
    /// What is evaluated instead, as text.
    pub to: String,
}

/// Everything derived from a spec.
#[derive(Clone, Debug)]
pub struct Derivation {
    /// The arena holding every expression below.
    pub graph: Graph,
    /// The lowered objective.
    pub objective: Objective,
    /// The per-sample loss when the objective is one sample reduction (plus constants).
    pub loss: Option<Id>,
    /// The reduction factor shared by every pred.
    pub factor: Factor,
    /// One entry per pred, in declaration order.
    pub preds: Vec<PredGradient>,
    /// The stable rewrites applied to the value.
    pub stable: Vec<StableForm>,
    /// IR node count of the objective's bodies as lowered (before derivation).
    pub nodes_before: usize,
}

/// Derives the gradient of `checked`'s objective with respect to every pred.
pub fn derive(checked: &Checked) -> Result<Derivation, Unsupported> {
    let mut g = Graph::new();
    let objective = lower(checked, &mut g)?;
    let kinds: Vec<SampleReduction> = objective.reductions.iter().map(|r| r.kind).collect();
    let factor = if kinds.iter().all(|k| *k == SampleReduction::Mean) {
        Factor::OneOverN
    } else if kinds.iter().all(|k| *k == SampleReduction::Sum) {
        Factor::One
    } else {
        return Err(Unsupported {
            what: "an objective mixing mean(...) and sum(...)".into(),
            span: checked.spec.span,
        });
    };
    let nodes_before = g.len();
    let mut preds = Vec::new();
    for p in &checked.preds {
        let wrt = g.sym(SymKind::Pred, &p.name);
        let mut parts = Vec::new();
        for r in objective.reductions.clone() {
            let rsym = g.sym(SymKind::Reduced, &r.name);
            let outer = derivative(&mut g, objective.outer, rsym);
            let inner = derivative(&mut g, r.body, wrt);
            parts.push(g.mul2(outer, inner));
        }
        let raw = g.add(parts);
        let per_sample = simplify(&mut g, raw);
        let second = derivative(&mut g, per_sample, wrt);
        let hessian = simplify(&mut g, second);
        preds.push(PredGradient { pred: p.name.clone(), raw, per_sample, hessian });
    }
    let loss = single_loss(&mut g, &objective);
    let mut stable = Vec::new();
    for r in &objective.reductions {
        stable_forms(&g, r.body, &mut stable);
    }
    Ok(Derivation { graph: g, objective, loss, factor, preds, stable, nodes_before })
}

/// `ℓ` when the objective is `mean(ℓ)` (or `sum(ℓ)`) up to a positive
/// constant factor and an additive constant.
fn single_loss(g: &mut Graph, o: &Objective) -> Option<Id> {
    match o.reductions.as_slice() {
        [r] => {
            let rs = g.sym(SymKind::Reduced, &r.name);
            (o.outer == rs).then_some(r.body)
        }
        _ => None,
    }
}

/// Finds the places where evaluation uses a stable form.
fn stable_forms(g: &Graph, root: Id, out: &mut Vec<StableForm>) {
    let p = |id| Printer::new(g, Style::Text).print(id);
    let mut stack = vec![root];
    let mut seen = std::collections::HashSet::new();
    while let Some(id) = stack.pop() {
        if !seen.insert(id) {
            continue;
        }
        stack.extend(g.node(id).children());
        let Node::Func(Func::Log, x) = *g.node(id) else { continue };
        let found = match g.node(x) {
            Node::Func(Func::Sigmoid, z) => {
                Some(("log-sigmoid", format!("-softplus({})", negated(g, *z))))
            }
            Node::Add(xs) if xs.len() == 2 => {
                let one = xs.iter().any(|&t| g.as_num(t) == Some(1.0));
                let sig = xs.iter().find_map(|&t| match g.node(t) {
                    Node::Mul(fs) if fs.len() == 2 && g.as_num(fs[0]) == Some(-1.0) => match g.node(fs[1]) {
                        Node::Func(Func::Sigmoid, z) => Some(*z),
                        _ => None,
                    },
                    _ => None,
                });
                match (one, sig) {
                    (true, Some(z)) => Some(("log-one-minus-sigmoid", format!("-softplus({})", p(z)))),
                    _ => None,
                }
            }
            _ => None,
        };
        if let Some((rule, to)) = found {
            let form = StableForm { rule, from: p(id), to };
            if !out.contains(&form) {
                out.push(form);
            }
        }
    }
}

fn negated(g: &Graph, z: Id) -> String {
    let text = Printer::new(g, Style::Text).print(z);
    if text.chars().all(|c| c.is_alphanumeric() || c == '_') { format!("-{text}") } else { format!("-({text})") }
}
