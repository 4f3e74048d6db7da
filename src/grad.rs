//! Derivation: the gradient of a spec's objective with respect to each pred.
//!
//! The objective is `F(R0, R1, ...)` over sample reductions `Rm = mean_i
//! f_m(row i)` (or sums). Its gradient at row `i` is
//! `Σ_m ∂F/∂Rm · w_m · ∂f_m/∂pred (row i)` with `w_m = 1/n` for a mean and
//! 1 for a sum. When every reduction is a mean, `1/n` is reported as the
//! reduction factor and the rest as the per-sample derivative `∂ℓ/∂pred`,
//! the form a textbook prints.

use crate::diff::{Wrt, derivative, derivative_of};
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
    /// The second derivative of the per-sample loss (the Hessian's
    /// diagonal), for a scalar pred.
    pub hessian: Option<Id>,
    /// For a vector pred, the name of the output component index (`k`):
    /// the derivative is with respect to `pred[k]`.
    pub component: Option<String>,
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
    derive_with(checked, &mut |_, o| o)
}

/// Derives the objective after `hook` has rewritten its lowered form: how
/// an export re-derives a loss whose pred is a function of the model's raw
/// score (a booster's margin), so the link is differentiated and simplified
/// symbolically with the loss rather than chained numerically.
pub fn derive_with(
    checked: &Checked,
    hook: &mut dyn FnMut(&mut Graph, Objective) -> Objective,
) -> Result<Derivation, Unsupported> {
    let mut g = Graph::new();
    let objective = lower(checked, &mut g)?;
    let objective = hook(&mut g, objective);
    let kinds: Vec<SampleReduction> = objective.reductions.iter().map(|r| r.kind).collect();
    let factor = if kinds.iter().all(|k| *k == SampleReduction::Mean) {
        Factor::OneOverN
    } else if kinds.iter().all(|k| *k == SampleReduction::Sum) {
        Factor::One
    } else {
        return Err(Unsupported {
            what: "an objective mixing mean(...) and sum(...)".into(),
            span: checked
                .spec
                .stmts
                .iter()
                .find(|s| matches!(s.kind, crate::ast::StmtKind::Minimize(_)))
                .map_or(checked.spec.span, |s| s.span),
        });
    };
    let nodes_before = g.len();
    let mut preds = Vec::new();
    for p in &checked.preds {
        let component = match &p.shape {
            crate::sema::types::Shape::Vector(size) => {
                let range = crate::ir::IdxRange::Feature(size.clone());
                let k = output_index(&g, checked, &range);
                g.set_range(&k, range);
                Some(k)
            }
            crate::sema::types::Shape::Scalar => None,
        };
        let out = component.as_ref().map(|k| g.idx(k));
        let wrt = Wrt::Pred {
            name: p.name.clone(),
            out,
        };
        let mut parts = Vec::new();
        for r in objective.reductions.clone() {
            let rsym = g.sym(SymKind::Reduced, &r.name);
            let outer = derivative(&mut g, objective.outer, rsym);
            let inner = derivative_of(&mut g, r.body, &wrt, &mut Vec::new());
            parts.push(g.mul2(outer, inner));
        }
        let raw = g.add(parts);
        let per_sample = simplify(&mut g, raw);
        // The diagonal of the Hessian of a per-sample loss: only where the
        // objective is one mean (or sum) of a loss with no batch coupling.
        let per_sample_loss =
            single_loss(&mut g, &objective).is_some_and(|l| !batch_coupled(&g, l));
        let hessian = if component.is_none() && per_sample_loss {
            let second = derivative_of(&mut g, per_sample, &wrt, &mut Vec::new());
            Some(simplify(&mut g, second))
        } else {
            None
        };
        preds.push(PredGradient {
            pred: p.name.clone(),
            raw,
            per_sample,
            hessian,
            component,
        });
    }
    let loss = single_loss(&mut g, &objective);
    let mut stable = Vec::new();
    for r in &objective.reductions {
        stable_forms(&g, r.body, &mut stable);
    }
    Ok(Derivation {
        graph: g,
        objective,
        loss,
        factor,
        preds,
        stable,
        nodes_before,
    })
}

/// Reduction bodies larger than this (as a tree) print by name.
const LARGE_BODY: usize = 200;

/// The output index name for a vector pred's gradient: `k`, unless the
/// spec's own reductions or declarations use it.
fn output_index(g: &Graph, checked: &Checked, range: &crate::ir::IdxRange) -> String {
    let declared = |n: &str| {
        checked
            .data
            .iter()
            .chain(&checked.preds)
            .any(|v| v.name == n)
            || checked.params.iter().any(|p| p.name == n)
            || checked.sizes.contains_key(n)
    };
    // A name already used as another pred's output index over the same
    // range is free again: each derivative is a separate expression.
    ["k", "m", "l", "k2", "m2"]
        .iter()
        .find(|n| {
            g.range(n)
                .is_none_or(|r| r == range && !in_spec(checked, n))
                && !declared(n)
        })
        .map_or_else(|| "k_out".to_string(), |n| n.to_string())
}

/// Whether the spec itself binds `name` as a reduction index.
fn in_spec(checked: &Checked, name: &str) -> bool {
    let mut found = false;
    for stmt in &checked.spec.stmts {
        let e = match &stmt.kind {
            crate::ast::StmtKind::Let(_, e) | crate::ast::StmtKind::Minimize(e) => e,
            crate::ast::StmtKind::Def(d) => &d.body,
            _ => continue,
        };
        crate::sema::walk(e, &mut |x| {
            if let crate::ast::ExprKind::Reduce { index, .. } = &x.kind
                && index.name == name
            {
                found = true;
            }
        });
    }
    found
}

/// Whether `id` reaches into other rows (`x@j`).
fn batch_coupled(g: &Graph, id: Id) -> bool {
    g.reachable(id)
        .into_iter()
        .any(|x| matches!(g.node(x), Node::Elem { row: Some(_), .. }))
}

/// `ℓ` when the objective is exactly `mean(ℓ)` (or `sum(ℓ)`).
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
    let push = |out: &mut Vec<StableForm>, form: StableForm| {
        if !out.contains(&form) {
            out.push(form);
        }
    };
    for id in g.reachable(root) {
        // logsumexp is evaluated with its maximum shifted out.
        if let Node::Reduce {
            op: crate::ir::RedOp::LogSumExp,
            ..
        } = g.node(id)
        {
            let text = p(id);
            push(
                out,
                StableForm {
                    rule: "logsumexp-shift",
                    from: text.clone(),
                    to: "m + log(sum(exp(x - m))) with m = max(x)".into(),
                },
            );
        }
        // log(softmax(z)[c]) was lowered to z[c] - logsumexp(z).
        if let Node::Add(ts) = g.node(id)
            && ts.iter().any(|&t| {
                matches!(g.node(t), Node::Mul(fs) if fs.len() == 2 && g.as_num(fs[0]) == Some(-1.0)
                && matches!(g.node(fs[1]), Node::Reduce { op: crate::ir::RedOp::LogSumExp, .. }))
            })
        {
            push(
                out,
                StableForm {
                    rule: "log-softmax",
                    from: "log(softmax(...)[c])".into(),
                    to: p(id),
                },
            );
        }
        let Node::Func(Func::Log, x) = *g.node(id) else {
            continue;
        };
        let found = match g.node(x) {
            Node::Func(Func::Sigmoid, z) => {
                Some(("log-sigmoid", format!("-softplus({})", negated(g, *z))))
            }
            Node::Add(xs) if xs.len() == 2 => {
                let one = xs.iter().any(|&t| g.as_num(t) == Some(1.0));
                let sig = xs.iter().find_map(|&t| match g.node(t) {
                    Node::Mul(fs) if fs.len() == 2 && g.as_num(fs[0]) == Some(-1.0) => {
                        match g.node(fs[1]) {
                            Node::Func(Func::Sigmoid, z) => Some(*z),
                            _ => None,
                        }
                    }
                    _ => None,
                });
                match (one, sig) {
                    (true, Some(z)) => {
                        Some(("log-one-minus-sigmoid", format!("-softplus({})", p(z))))
                    }
                    _ => None,
                }
            }
            _ => None,
        };
        if let Some((rule, to)) = found {
            push(
                out,
                StableForm {
                    rule,
                    from: p(id),
                    to,
                },
            );
        }
    }
}

fn negated(g: &Graph, z: Id) -> String {
    let text = Printer::new(g, Style::Text).print(z);
    if text
        .chars()
        .all(|c| c.is_alphanumeric() || "_[]@".contains(c))
    {
        format!("-{text}")
    } else {
        format!("-({text})")
    }
}

/// A small deterministic generator (SplitMix64), so checks are reproducible
/// from a seed without a dependency.
#[derive(Clone, Debug)]
pub struct Rng(u64);

impl Rng {
    /// A generator seeded with `seed`.
    pub fn new(seed: u64) -> Self {
        Rng(seed ^ 0x9E37_79B9_7F4A_7C15)
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `[0, 1)`.
    pub fn uniform(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// Standard normal (Box–Muller).
    pub fn normal(&mut self) -> f64 {
        let u = self.uniform().max(1e-300);
        let v = self.uniform();
        (-2.0 * u.ln()).sqrt() * (2.0 * std::f64::consts::PI * v).cos()
    }
}

/// A random value inside a declared scalar domain, kept away from the
/// domain's edges (where a derivative may legitimately blow up).
pub fn draw(dom: &crate::sema::types::Dom, rng: &mut Rng) -> f64 {
    use crate::sema::types::Dom;
    match dom {
        Dom::Labels(vs) => vs[(rng.next_u64() % vs.len() as u64) as usize],
        Dom::Class(crate::sema::types::Size::Lit(c)) => (rng.next_u64() % c) as f64,
        Dom::Range(r) => match (r.lo.is_finite(), r.hi.is_finite()) {
            (true, true) => {
                let margin = 0.05 * (r.hi - r.lo);
                r.lo + margin + rng.uniform() * (r.hi - r.lo - 2.0 * margin)
            }
            (true, false) => r.lo + (0.5 * rng.normal()).exp(),
            (false, true) => r.hi - (0.5 * rng.normal()).exp(),
            (false, false) => 2.0 * rng.normal(),
        },
        _ => rng.normal(),
    }
}

/// The worst disagreement between the symbolic gradient and central finite
/// differences for one pred.
#[derive(Clone, Debug)]
pub struct CheckResult {
    /// The pred.
    pub pred: String,
    /// The largest relative error over all rows (and components).
    pub worst: f64,
    /// The row where it occurred.
    pub row: usize,
    /// The component, for a vector pred.
    pub component: Option<usize>,
    /// The symbolic gradient there.
    pub symbolic: f64,
    /// The finite-difference gradient there.
    pub numeric: f64,
}

/// A batch of inputs: every data and pred by name, one row of components
/// per sample (a scalar has one component), plus params and sizes.
#[derive(Clone, Debug, Default)]
pub struct Batch {
    /// Values by name: `values[name][row][component]`.
    pub values: std::collections::BTreeMap<String, Vec<Vec<f64>>>,
    /// Param values.
    pub params: std::collections::BTreeMap<String, f64>,
    /// Lengths of the size names.
    pub sizes: std::collections::BTreeMap<String, usize>,
    /// Values of the sample reductions (`R0`, ...), filled in when needed.
    pub reduced: std::collections::BTreeMap<String, f64>,
    /// Number of rows.
    pub rows: usize,
}

impl crate::ir::eval::Values for Batch {
    fn value(&self, kind: SymKind, name: &str, row: usize, comp: Option<usize>) -> f64 {
        match kind {
            SymKind::Param => self.params.get(name).copied().unwrap_or(f64::NAN),
            SymKind::Reduced => self.reduced.get(name).copied().unwrap_or(f64::NAN),
            SymKind::Size => self.sizes.get(name).map_or(f64::NAN, |s| *s as f64),
            SymKind::Data | SymKind::Pred => self
                .values
                .get(name)
                .and_then(|rows| rows.get(row))
                .and_then(|r| r.get(comp.unwrap_or(0)))
                .copied()
                .unwrap_or(f64::NAN),
        }
    }

    fn rows(&self) -> usize {
        self.rows
    }

    fn size(&self, size: &crate::sema::types::Size) -> usize {
        match size {
            crate::sema::types::Size::Lit(n) => *n as usize,
            crate::sema::types::Size::Name(n) => self.sizes.get(n).copied().unwrap_or(0),
        }
    }
}

/// Draws `n` rows of in-domain data and preds; size names get small
/// lengths (3, 4, 5, ...) so that vector specs are exercised too.
pub fn random_batch(checked: &Checked, n: usize, rng: &mut Rng) -> Batch {
    let sizes = checked
        .sizes
        .iter()
        .enumerate()
        .map(|(k, (name, bound))| (name.clone(), bound.map_or(3 + k, |v| v as usize)))
        .collect();
    random_batch_sized(checked, n, sizes, rng)
}

/// Like [`random_batch`], with the lengths of the size names given.
pub fn random_batch_sized(
    checked: &Checked,
    n: usize,
    sizes: std::collections::BTreeMap<String, usize>,
    rng: &mut Rng,
) -> Batch {
    use crate::sema::types::{Dom, Shape, Size};
    let mut batch = Batch {
        rows: n,
        sizes,
        ..Batch::default()
    };
    let len = |s: &Size, b: &Batch| match s {
        Size::Lit(v) => *v as usize,
        Size::Name(name) => b.sizes.get(name).copied().unwrap_or(3),
    };
    for v in checked.data.iter().chain(&checked.preds) {
        let mut rows = Vec::with_capacity(n);
        for _ in 0..n {
            let row = match (&v.shape, &v.dom) {
                (Shape::Scalar, Dom::Class(s)) => {
                    vec![(rng.next_u64() % len(s, &batch).max(1) as u64) as f64]
                }
                // Unbounded real data (targets, ids) on a half-unit grid,
                // so that equality filters such as `query@j == query` hold
                // for some pairs.
                (Shape::Scalar, Dom::Range(r))
                    if *r == crate::sema::types::Range::REAL && !is_pred(checked, &v.name) =>
                {
                    vec![(2.0 * rng.normal()).round() / 2.0]
                }
                (Shape::Scalar, dom) => vec![draw(dom, rng)],
                (Shape::Vector(s), dom) => {
                    let c = len(s, &batch);
                    match dom {
                        Dom::Onehot => {
                            let hot = (rng.next_u64() % c.max(1) as u64) as usize;
                            (0..c).map(|i| if i == hot { 1.0 } else { 0.0 }).collect()
                        }
                        Dom::Multihot => (0..c).map(|_| (rng.next_u64() % 2) as f64).collect(),
                        Dom::Probs => {
                            let e: Vec<f64> = (0..c).map(|_| rng.normal().exp()).collect();
                            let total: f64 = e.iter().sum();
                            e.into_iter().map(|x| x / total).collect()
                        }
                        other => (0..c).map(|_| draw(other, rng)).collect(),
                    }
                }
            };
            rows.push(row);
        }
        batch.values.insert(v.name.clone(), rows);
    }
    for p in &checked.params {
        batch.params.insert(p.name.clone(), p.value);
    }
    batch
}

fn is_pred(checked: &Checked, name: &str) -> bool {
    checked.preds.iter().any(|p| p.name == name)
}

impl Derivation {
    /// The values of the sample reductions over the batch.
    pub fn reductions(&self, batch: &Batch) -> std::collections::BTreeMap<String, f64> {
        use crate::ir::eval::eval_at;
        let n = batch.rows as f64;
        self.objective
            .reductions
            .iter()
            .map(|r| {
                let total: f64 = (0..batch.rows)
                    .map(|row| eval_at(&self.graph, r.body, batch, row))
                    .sum();
                let v = if r.kind == SampleReduction::Mean {
                    total / n
                } else {
                    total
                };
                (r.name.clone(), v)
            })
            .collect()
    }

    /// The objective's value over the batch.
    pub fn objective_value(&self, batch: &Batch) -> f64 {
        let mut b = batch.clone();
        b.reduced = self.reductions(batch);
        crate::ir::eval::eval_at(&self.graph, self.objective.outer, &b, 0)
    }

    /// The gradient of the objective with respect to a pred at `row` (and
    /// component), from `expr`: the simplified or the raw derivative.
    pub fn gradient_at(
        &self,
        batch: &Batch,
        p: &PredGradient,
        expr: Id,
        row: usize,
        comp: Option<usize>,
    ) -> f64 {
        let mut b = batch.clone();
        b.reduced = self.reductions(batch);
        let bind: Vec<(&str, usize)> = match (&p.component, comp) {
            (Some(k), Some(c)) => vec![(k.as_str(), c)],
            _ => Vec::new(),
        };
        let v = crate::ir::eval::eval_with(&self.graph, expr, &b, row, &bind);
        match self.factor {
            Factor::OneOverN => v / batch.rows as f64,
            Factor::One => v,
        }
    }

    /// Compares every pred's symbolic gradient with central finite differences.
    pub fn gradcheck(&self, batch: &Batch) -> Vec<CheckResult> {
        let mut out = Vec::new();
        for p in &self.preds {
            let mut worst = CheckResult {
                pred: p.pred.clone(),
                worst: 0.0,
                row: 0,
                component: None,
                symbolic: 0.0,
                numeric: 0.0,
            };
            let width = batch
                .values
                .get(&p.pred)
                .and_then(|r| r.first())
                .map_or(1, Vec::len);
            let base = self.objective_value(batch);
            for r in 0..batch.rows {
                for c in 0..width {
                    let comp = p.component.as_ref().map(|_| c);
                    let x = batch.values[&p.pred][r][c];
                    let h = 1e-5 * x.abs().max(1.0);
                    let mut shifted = batch.clone();
                    if let Some(rows) = shifted.values.get_mut(&p.pred) {
                        rows[r][c] = x + h;
                    }
                    let up = self.objective_value(&shifted);
                    if let Some(rows) = shifted.values.get_mut(&p.pred) {
                        rows[r][c] = x - h;
                    }
                    let down = self.objective_value(&shifted);
                    let numeric = (up - down) / (2.0 * h);
                    let symbolic = self.gradient_at(batch, p, p.per_sample, r, comp);
                    // Central differences lose about eps·|L|/h to rounding: the
                    // error is relative to the gradient, with a floor at that
                    // level so that vanishing gradients are not judged on noise.
                    let floor = 1e-3 * base.abs().max(1.0) / batch.rows as f64;
                    let scale = numeric.abs().max(symbolic.abs()).max(floor);
                    let err = (numeric - symbolic).abs() / scale;
                    if err > worst.worst || err.is_nan() {
                        worst = CheckResult {
                            pred: p.pred.clone(),
                            worst: err,
                            row: r,
                            component: comp,
                            symbolic,
                            numeric,
                        };
                    }
                }
            }
            out.push(worst);
        }
        out
    }
}

/// How `lossc grad` prints.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    /// Plain text; derivatives in `.loss` syntax.
    Text,
    /// Unicode mathematics.
    Unicode,
    /// LaTeX.
    Latex,
    /// One JSON object.
    Json,
}

/// What `lossc grad` shows besides the derivatives.
#[derive(Clone, Copy, Debug, Default)]
pub struct ReportOptions {
    /// Also the second derivative of the per-sample loss.
    pub hessian: bool,
    /// The derivation step by step.
    pub explain: bool,
}

impl Derivation {
    fn printer(&self, style: Style) -> Printer<'_> {
        let mut p = Printer::new(&self.graph, style);
        // Reductions print inline, `sum(y * p)`, so the text stays valid
        // syntax; a large body is named instead (`mean(loss_0)`) and its
        // definition printed once, with shared parts bound.
        for (m, r) in self.objective.reductions.iter().enumerate() {
            let body = if self.graph.tree_size(r.body) > LARGE_BODY {
                format!("loss_{m}")
            } else {
                Printer::new(&self.graph, style).print(r.body)
            };
            let f = match r.kind {
                SampleReduction::Mean => "mean",
                SampleReduction::Sum => "sum",
            };
            let text = match style {
                Style::Latex => format!("\\operatorname{{{f}}}\\left({body}\\right)"),
                _ => format!("{f}({body})"),
            };
            p = p.name(&r.name, text);
        }
        p
    }

    /// Prints an expression of this derivation.
    pub fn print(&self, id: Id, style: Style) -> String {
        self.printer(style).print(id)
    }

    /// Prints an expression with large shared subexpressions as bindings.
    pub fn print_shared(&self, id: Id, style: Style) -> (Vec<(String, String)>, String) {
        self.printer(style).print_shared(id)
    }

    /// The report `lossc grad` prints.
    pub fn report(&self, checked: &Checked, format: Format, opts: ReportOptions) -> String {
        match format {
            Format::Json => self.json(checked, opts),
            Format::Text => self.human(checked, Style::Text, opts),
            Format::Unicode => self.human(checked, Style::Unicode, opts),
            Format::Latex => self.human(checked, Style::Latex, opts),
        }
    }

    fn human(&self, checked: &Checked, style: Style, opts: ReportOptions) -> String {
        use std::fmt::Write;
        let mut out = String::new();
        let (d, ell) = match style {
            Style::Text => ("d", "loss"),
            Style::Unicode => ("∂", "ℓ"),
            Style::Latex => ("\\partial ", "\\ell"),
        };
        let _ = writeln!(out, "loss {} · task {}", checked.name, checked.task);
        self.write_shared(&mut out, "objective: ", self.objective.outer, style);
        for (m, r) in self.objective.reductions.iter().enumerate() {
            if self.graph.tree_size(r.body) > LARGE_BODY {
                self.write_shared(&mut out, &format!("  where loss_{m} = "), r.body, style);
            }
        }
        if opts.explain
            && let Some(l) = self.loss
        {
            let _ = writeln!(
                out,
                "per-sample loss, with lets and standard losses inlined:"
            );
            let _ = writeln!(out, "  {ell} = {}", self.print(l, style));
        }
        for (p, v) in self.preds.iter().zip(&checked.preds) {
            let _ = writeln!(out);
            let _ = writeln!(out, "pred {} : {}", p.pred, v.type_text);
            let lhs = match style {
                Style::Latex => format!(
                    "\\frac{{\\partial \\ell}}{{\\partial {}}}",
                    latex_component(&p.pred, p.component.as_deref())
                ),
                _ => format!(
                    "{d}{ell}/{d}{}",
                    component_name(&p.pred, p.component.as_deref())
                ),
            };
            if opts.explain {
                self.explain(p, style, &mut out);
            }
            self.write_shared(&mut out, &format!("  {lhs} = "), p.per_sample, style);
            let factor = match (self.factor, style) {
                (Factor::OneOverN, Style::Latex) => "\\frac{1}{n}",
                (Factor::OneOverN, _) => "1/n",
                (Factor::One, _) => "1",
            };
            let _ = writeln!(
                out,
                "  factor: {factor}  (the gradient at row i is {factor} times this, evaluated at row i)"
            );
            if opts.hessian && p.hessian.is_none() {
                let _ = writeln!(
                    out,
                    "  (no second derivative: it is printed for scalar preds of a per-sample loss, one mean or sum without batch coupling)"
                );
            }
            if let (true, Some(h)) = (opts.hessian, p.hessian) {
                let lhs2 = match style {
                    Style::Latex => format!(
                        "\\frac{{\\partial^2 \\ell}}{{\\partial {}^2}}",
                        latex_name(&p.pred)
                    ),
                    Style::Unicode => format!("∂²ℓ/∂{}²", p.pred),
                    Style::Text => format!("d2loss/d{}2", p.pred),
                };
                self.write_shared(&mut out, &format!("  {lhs2} = "), h, style);
            }
        }
        if !self.stable.is_empty() {
            let _ = writeln!(out);
            let _ = writeln!(out, "stable forms used in evaluation:");
            for s in &self.stable {
                let _ = writeln!(out, "  {} → {}   ({})", s.from, s.to, s.rule);
            }
        }
        out
    }

    /// `head` and the expression, then `where _t1 = ...` lines for
    /// shared subexpressions.
    fn write_shared(&self, out: &mut String, head: &str, id: Id, style: Style) {
        use std::fmt::Write;
        let (bindings, text) = self.print_shared(id, style);
        let _ = writeln!(out, "{head}{text}");
        for (k, (name, def)) in bindings.iter().enumerate() {
            let word = if k == 0 { "where" } else { "     " };
            let _ = writeln!(out, "    {word} {name} = {def}");
        }
    }

    /// The text form with shared subexpressions as `let`s, one statement
    /// per line, ending with the expression: valid `.loss` lines.
    pub fn text_with_lets(&self, id: Id) -> String {
        let (bindings, text) = self.print_shared(id, Style::Text);
        let mut out: Vec<String> = bindings
            .into_iter()
            .map(|(n, d)| format!("let {n} = {d}"))
            .collect();
        out.push(text);
        out.join("\n")
    }

    fn explain(&self, p: &PredGradient, style: Style, out: &mut String) {
        use std::fmt::Write;
        // Re-run the two stages with tracing on a copy of the arena, so the
        // derivation itself stays untouched.
        let mut g = self.graph.clone();
        let wrt = g.sym(SymKind::Pred, &p.pred);
        let mut chain = Vec::new();
        let mut seen_rules = std::collections::BTreeSet::new();
        for r in &self.objective.reductions {
            crate::diff::derivative_traced(&mut g, r.body, wrt, &mut chain);
        }
        let view = Derivation {
            graph: g.clone(),
            ..self.clone()
        };
        let _ = writeln!(out, "  chain rule, outermost node first:");
        for (rule, node) in chain {
            if seen_rules.insert((rule, node)) {
                let _ = writeln!(out, "    at {}: {rule}", view.print(node, style));
            }
        }
        let _ = writeln!(
            out,
            "  derivative as differentiated: {}",
            view.print(p.raw, style)
        );
        let mut g2 = g;
        let (_, steps) = crate::simplify::simplify_traced(&mut g2, p.raw);
        let view = Derivation {
            graph: g2,
            ..self.clone()
        };
        if !steps.is_empty() {
            let _ = writeln!(out, "  simplification:");
            for s in steps {
                let _ = writeln!(
                    out,
                    "    {}: {}  →  {}",
                    s.rule,
                    view.print(s.before, style),
                    view.print(s.after, style)
                );
            }
        }
    }

    fn json(&self, checked: &Checked, opts: ReportOptions) -> String {
        let mut preds = Vec::new();
        for p in &self.preds {
            let mut fields = vec![
                format!("\"name\": {}", json_str(&p.pred)),
                format!(
                    "\"derivative\": {}",
                    json_str(&self.text_with_lets(p.per_sample))
                ),
                format!("\"factor\": {}", json_str(self.factor.text())),
            ];
            if let (true, Some(h)) = (opts.hessian, p.hessian) {
                fields.push(format!(
                    "\"hessian\": {}",
                    json_str(&self.text_with_lets(h))
                ));
            }
            preds.push(format!("{{{}}}", fields.join(", ")));
        }
        let stable: Vec<String> = self
            .stable
            .iter()
            .map(|s| {
                format!(
                    "{{\"rule\": {}, \"from\": {}, \"to\": {}}}",
                    json_str(s.rule),
                    json_str(&s.from),
                    json_str(&s.to)
                )
            })
            .collect();
        format!(
            "{{\"loss\": {}, \"objective\": {}, \"preds\": [{}], \"stable\": [{}]}}\n",
            json_str(&checked.name),
            json_str(&self.print(self.objective.outer, Style::Text)),
            preds.join(", "),
            stable.join(", ")
        )
    }
}

fn component_name(pred: &str, k: Option<&str>) -> String {
    match k {
        Some(k) => format!("{pred}[{k}]"),
        None => pred.to_string(),
    }
}

pub(crate) fn latex_component(pred: &str, k: Option<&str>) -> String {
    match k {
        Some(k) => format!("{}_{{{k}}}", latex_name(pred)),
        None => latex_name(pred),
    }
}

pub(crate) fn latex_name(name: &str) -> String {
    if name.chars().count() == 1 {
        name.to_string()
    } else {
        format!("\\mathit{{{}}}", name.replace('_', "\\_"))
    }
}

/// A JSON string literal.
pub fn json_str(s: &str) -> String {
    let mut out = String::from("\"");
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}
