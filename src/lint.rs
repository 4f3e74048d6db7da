//! Lints: the classic loss-design bugs, each with a stable code
//! (`L0001`...) documented in `docs/lints.md`. They are warnings; `lossc
//! analyze --deny-warnings` makes them fail. Two need the training data
//! (`lossc analyze SPEC --data FILE`): they look at the targets and labels
//! the loss will actually see.

use crate::analyze::{Analysis, num};
use crate::ast::{Expr, ExprKind, StmtKind};
use crate::diag::Diagnostic;
use crate::grad::Derivation;
use crate::ir::{Func, Id, Node, SymKind};
use crate::print::Style;
use crate::sema::types::{Dom, Shape};
use crate::sema::{Property, Task};
use crate::span::Span;
use ndarray::ArrayD;
use std::collections::{BTreeMap, HashSet};

/// Every lint code, with its one-line description (the index of
/// `docs/lints.md`).
pub const LINTS: &[(&str, &str)] = &[
    (
        "L0001",
        "log of a probability that can reach 0 or 1, without a stable form",
    ),
    (
        "L0002",
        "softmax or categorical cross-entropy in a multilabel task",
    ),
    ("L0003", "a pointwise regression loss in a ranking task"),
    ("L0004", "class weights together with `expect calibrated`"),
    ("L0005", "a margin loss with a margin of 0"),
    (
        "L0006",
        "an unbounded-gradient loss on targets with outliers (needs --data)",
    ),
    ("L0007", "a plain loss on a rare class (needs --data)"),
];

/// The lints of a spec, given its derivation, its analysis and, optionally,
/// its training data (arrays by data name).
pub fn lints(
    loss: &crate::Loss,
    d: &Derivation,
    a: &Analysis,
    data: Option<&BTreeMap<String, ArrayD<f64>>>,
) -> Vec<Diagnostic> {
    let c = loss.checked();
    let minimize = c
        .spec
        .stmts
        .iter()
        .find(|s| matches!(s.kind, StmtKind::Minimize(_)))
        .map_or(c.spec.span, |s| s.span);
    let mut out = Vec::new();
    unstable_logs(c, d, minimize, &mut out);
    if c.task == Task::Multilabel {
        for (name, span) in calls(c, &["softmax", "cce", "cce_logits", "logsumexp"]) {
            out.push(
                Diagnostic::warning(
                    "L0002",
                    span,
                    format!("`{name}` in a multilabel task"),
                )
                .with_label("makes the labels compete for one unit of probability")
                .with_hint("a softmax spreads probability over the labels, so the model predicts about one label per example")
                .with_hint("use one sigmoid per label: mean(sum[c](bce_logits(y[c], z[c])))"),
            );
        }
    }
    if c.task == Task::Ranking && a.pointwise {
        out.push(
            Diagnostic::warning("L0003", minimize, "a pointwise loss in a ranking task")
                .with_label("each score is fitted on its own")
                .with_hint("the loss can fall while the order within a query (and NDCG) does not improve")
                .with_hint("compare items of the same query: a pairwise loss such as max(0, 1 - (s - s@j)) over pairs with rel > rel@j"),
        );
    }
    for e in &c.expects {
        if matches!(e.property, Property::Calibrated) && !e.negated {
            for p in &a.preds {
                if let Some(f) = p.finding("calibrated")
                    && f.verdict.contains("w₁/w₀")
                {
                    out.push(
                        Diagnostic::warning("L0004", e.span, "class weights with `expect calibrated`")
                            .with_label("weighting a class moves the optimum away from the true probability")
                            .with_hint(format!("the analysis finds {}", f.verdict))
                            .with_hint("keep the weights and recalibrate the outputs (or move the threshold), or drop the weights and use `cost` for the decision"),
                    );
                }
            }
        }
    }
    zero_margins(loss, d, minimize, &mut out);
    if let Some(data) = data {
        outliers(loss, a, data, minimize, &mut out);
        rare_class(loss, a, data, minimize, &mut out);
    }
    out
}

/// L0001: `log(x)` where `x` depends on a pred and can reach 0 over the
/// declared domains, and no stable form replaces it.
fn unstable_logs(c: &crate::Checked, d: &Derivation, span: Span, out: &mut Vec<Diagnostic>) {
    let g = &d.graph;
    let stable: Vec<&str> = d.stable.iter().map(|s| s.from.as_str()).collect();
    let mut roots: Vec<Id> = d.objective.reductions.iter().map(|r| r.body).collect();
    roots.push(d.objective.outer);
    let mut seen = HashSet::new();
    let mut flagged = Vec::new();
    while let Some(id) = roots.pop() {
        if !seen.insert(id) {
            continue;
        }
        let n = g.node(id);
        if let Node::Func(Func::Log, x) = n
            && crate::analyze::reads_pred(d, *x, None)
            && !stable.contains(&d.print(id, Style::Text).as_str())
            && let Some(reach) = reaches_zero(c, d, *x)
        {
            flagged.push((d.print(*x, Style::Text), reach));
        }
        roots.extend(n.children());
    }
    flagged.sort();
    flagged.dedup();
    for (x, reach) in flagged {
        out.push(
            Diagnostic::warning("L0001", span, format!("`log({x})` of a probability that can reach 0"))
                .with_label(format!("`{x}` {reach}"))
                .with_hint("a prediction that rounds to 0 or 1 gives log(0) = -inf: the loss and gradient become inf and NaN in training")
                .with_hint("predict a logit and use the logit form (bce_logits, cce_logits, focal_logits), which lossc evaluates stably"),
        );
    }
}

/// Whether a log's argument can reach 0: a pred of probability type or
/// `1 - p` of one (what `bce`, `cce` on probabilities and hand-written
/// cross-entropies compute).
fn reaches_zero(c: &crate::Checked, d: &Derivation, x: Id) -> Option<String> {
    let g = &d.graph;
    let prob = |name: &str| {
        c.preds.iter().any(|p| {
            p.name == name
                && matches!(&p.dom, Dom::Range(r) if r.lo == 0.0 && r.hi == 1.0)
                    | matches!(p.dom, Dom::Probs)
        })
    };
    let is_prob_pred = |id: Id| match g.node(id) {
        Node::Sym(SymKind::Pred, n)
        | Node::Elem {
            kind: SymKind::Pred,
            name: n,
            ..
        } => prob(n),
        _ => false,
    };
    match g.node(x) {
        _ if is_prob_pred(x) => Some("reaches 0 as the prediction rounds to 0".into()),
        Node::Add(xs) if xs.len() == 2 => {
            let has_one = xs
                .iter()
                .any(|t| matches!(g.node(*t), Node::Num(v) if v.0 == 1.0));
            let neg_pred = xs.iter().any(|t| match g.node(*t) {
                Node::Mul(fs) => {
                    fs.len() == 2
                        && fs
                            .iter()
                            .any(|f| matches!(g.node(*f), Node::Num(v) if v.0 == -1.0))
                        && fs.iter().any(|f| is_prob_pred(*f))
                }
                _ => false,
            });
            (has_one && neg_pred).then(|| "reaches 0 as the prediction rounds to 1".into())
        }
        _ => None,
    }
}

/// Calls by name anywhere in the user's statements, with their spans.
fn calls(c: &crate::Checked, names: &[&str]) -> Vec<(String, Span)> {
    fn walk(e: &Expr, names: &[&str], out: &mut Vec<(String, Span)>) {
        match &e.kind {
            ExprKind::Call(f, args) => {
                if names.contains(&f.name.as_str()) {
                    out.push((f.name.clone(), e.span));
                }
                for a in args {
                    walk(&a.value, names, out);
                }
            }
            ExprKind::Unary(_, a) | ExprKind::At(a, _) => walk(a, names, out),
            ExprKind::Binary(_, a, b) | ExprKind::Index(a, b) => {
                walk(a, names, out);
                walk(b, names, out);
            }
            ExprKind::Reduce { filter, body, .. } => {
                if let Some(f) = filter {
                    walk(f, names, out);
                }
                walk(body, names, out);
            }
            ExprKind::If(a, b, x) => {
                walk(a, names, out);
                walk(b, names, out);
                walk(x, names, out);
            }
            _ => {}
        }
    }
    let mut out = Vec::new();
    for s in &c.spec.stmts {
        match &s.kind {
            StmtKind::Minimize(e) => walk(e, names, &mut out),
            StmtKind::Let(_, e) => walk(e, names, &mut out),
            StmtKind::Def(df) => walk(&df.body, names, &mut out),
            _ => {}
        }
    }
    out
}

/// L0005: `max(0, m + ...)` whose argument is `≤ 0` when every pred is 0:
/// the margin `m` is 0, so a correct sign already costs nothing and the
/// scores are not pushed apart.
fn zero_margins(loss: &crate::Loss, d: &Derivation, span: Span, out: &mut Vec<Diagnostic>) {
    let g = &d.graph;
    let c = loss.checked();
    let mut rng = crate::grad::Rng::new(11);
    let mut batch = crate::grad::random_batch(c, 3, &mut rng);
    for p in &c.preds {
        for row in batch.values.get_mut(&p.name).expect("pred").iter_mut() {
            row.iter_mut().for_each(|x| *x = 0.0);
        }
    }
    batch.reduced = d.reductions(&batch);
    let mut stack: Vec<Id> = d.objective.reductions.iter().map(|r| r.body).collect();
    let mut seen = HashSet::new();
    while let Some(id) = stack.pop() {
        if !seen.insert(id) {
            continue;
        }
        let n = g.node(id);
        if let Node::Max(a, b) = n {
            let (zero, arg) = match (g.node(*a), g.node(*b)) {
                (Node::Num(z), _) if z.0 == 0.0 => (true, *b),
                (_, Node::Num(z)) if z.0 == 0.0 => (true, *a),
                _ => (false, *a),
            };
            if zero && crate::analyze::reads_pred(d, arg, None) {
                let v = crate::ir::eval::eval_at(g, arg, &batch, 0);
                if v.is_finite() && v <= 0.0 {
                    out.push(
                        Diagnostic::warning(
                            "L0005",
                            span,
                            format!("a margin loss with a margin of 0: max(0, {})", d.print(arg, Style::Text)),
                        )
                        .with_label(format!("is {} when the scores are 0", num(v)))
                        .with_hint("with no margin, any score on the right side costs nothing: the model stops at the boundary and generalises poorly")
                        .with_hint("add a positive margin, e.g. max(0, 1 - y * s), or a margin param in (0, inf)"),
                    );
                }
            }
        }
        stack.extend(n.children());
    }
}

/// The first scalar data input of a task kind, with its values.
fn column<'a>(
    loss: &'a crate::Loss,
    data: &'a BTreeMap<String, ArrayD<f64>>,
    want: impl Fn(&Dom) -> bool,
) -> Option<(&'a str, Vec<f64>)> {
    let v = loss
        .checked()
        .data
        .iter()
        .find(|v| v.shape == Shape::Scalar && want(&v.dom))?;
    let a = data.get(&v.name)?;
    Some((v.name.as_str(), a.iter().copied().collect()))
}

/// L0006: regression targets with outliers (beyond 10 robust standard
/// deviations of the median) under a loss whose gradient grows with the
/// error: a few rows dominate every step.
fn outliers(
    loss: &crate::Loss,
    a: &Analysis,
    data: &BTreeMap<String, ArrayD<f64>>,
    span: Span,
    out: &mut Vec<Diagnostic>,
) {
    if loss.checked().task != Task::Regression {
        return;
    }
    let unbounded = a.preds.iter().any(|p| {
        p.finding("gradient for large errors")
            .is_some_and(|f| f.holds == Some(false))
    });
    let Some((name, mut ys)) = column(loss, data, |d| !matches!(d, Dom::Labels(_))) else {
        return;
    };
    if !unbounded || ys.len() < 10 {
        return;
    }
    ys.sort_by(f64::total_cmp);
    let med = ys[ys.len() / 2];
    let mut dev: Vec<f64> = ys.iter().map(|y| (y - med).abs()).collect();
    dev.sort_by(f64::total_cmp);
    let mad = 1.4826 * dev[dev.len() / 2];
    if mad <= 0.0 {
        return;
    }
    let far: Vec<f64> = ys
        .iter()
        .copied()
        .filter(|y| (y - med).abs() > 10.0 * mad)
        .collect();
    if far.is_empty() {
        return;
    }
    let worst = far.iter().copied().fold(med, |m, y| {
        if (y - med).abs() > (m - med).abs() {
            y
        } else {
            m
        }
    });
    out.push(
        Diagnostic::warning(
            "L0006",
            span,
            format!("an unbounded-gradient loss on targets with outliers: {} of {} `{name}` values lie beyond 10 robust deviations", far.len(), ys.len()),
        )
        .with_label("the gradient grows with the error")
        .with_hint(format!("median {}, robust deviation {}, farthest {}: those rows pull hardest on every step", num(med), num(mad), num(worst)))
        .with_hint("use a bounded-influence loss (huber, mae, log_cosh) or fit a transformed target (log)"),
    );
}

/// L0007: a binary label whose minority class is under 5% of the rows,
/// with a loss that is calibrated (so unweighted): predicting the majority
/// class everywhere already scores well.
fn rare_class(
    loss: &crate::Loss,
    a: &Analysis,
    data: &BTreeMap<String, ArrayD<f64>>,
    span: Span,
    out: &mut Vec<Diagnostic>,
) {
    if loss.checked().task != Task::Binary {
        return;
    }
    let plain = a.preds.iter().any(|p| {
        p.finding("calibrated")
            .is_some_and(|f| f.holds == Some(true))
    });
    let Some((name, ys)) = column(loss, data, |d| matches!(d, Dom::Labels(v) if v.len() == 2))
    else {
        return;
    };
    let Some(Dom::Labels(vs)) = loss
        .checked()
        .data
        .iter()
        .find(|v| v.name == name)
        .map(|v| &v.dom)
    else {
        return;
    };
    if !plain || ys.is_empty() {
        return;
    }
    let pos = ys.iter().filter(|y| **y == vs[1]).count();
    let rate = pos as f64 / ys.len() as f64;
    let minority = rate.min(1.0 - rate);
    if minority >= 0.05 {
        return;
    }
    out.push(
        Diagnostic::warning(
            "L0007",
            span,
            format!("a plain loss on a rare class: {} of {} `{name}` values are {} ({}%)", pos, ys.len(), num(vs[1]), num(100.0 * rate)),
        )
        .with_label("every row weighs the same")
        .with_hint(format!("predicting the majority class everywhere reaches {}% accuracy and catches none of the rare class", num(100.0 * (1.0 - minority))))
        .with_hint("weight the rare class (if y == 1 then w else 1), use focal_logits, and choose the threshold from `cost`"),
    );
}
