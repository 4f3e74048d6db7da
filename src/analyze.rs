//! Step 3, analyse: what a loss does to its pred, with evidence.
//!
//! Every verdict comes from the derived forms, evaluated by the reference
//! evaluator (the unsimplified semantics) and by the compiled evaluator
//! (what training runs, stable forms included), along lines through the
//! pred's declared domain for representative data rows:
//!
//! - kinks: every `abs`, `max`, `min`, `relu`, `sign` and `if` whose
//!   switch depends on the pred is a candidate; it is a kink where the
//!   switch crosses zero and the slope jumps there;
//! - convexity: the second derivative is bounded below by interval
//!   arithmetic over the domains where that proves it, else the slope is
//!   checked to be non-decreasing along a dense grid (which also covers
//!   kinks), with a counterexample when it falls;
//! - the gradient near the minimiser and far from it: its magnitude at
//!   distances 10⁻⁴…10⁶ from the minimiser, or towards the domain's edge;
//! - finiteness: the compiled evaluator in f32 and f64 at the domain's
//!   floating-point edges and at large magnitudes;
//! - calibration: the prediction minimising the expected loss when the
//!   label is positive with probability q, for several q;
//! - the estimand: the minimiser of the expected loss over two skewed
//!   reference distributions, compared with their mean, median and
//!   quantiles.

use crate::Checked;
use crate::grad::{Batch, Derivation, PredGradient, Rng};
use crate::ir::eval::eval_at;
use crate::ir::{Func, Id, Node, SymKind};
use crate::print::Style;
use crate::sema::types::{Dom, Range, Shape, Size};
use crate::sema::{Estimand, Property, Task};
use std::collections::{BTreeMap, HashSet};
use std::fmt::Write;

/// What the analysis says about one property of one pred.
#[derive(Clone, Debug, PartialEq)]
pub struct Finding {
    /// The property's name as printed (`differentiable`, `convex`, ...).
    pub property: &'static str,
    /// The short verdict (`yes`, `no`, `bounded by 1`, `median`, ...).
    pub verdict: String,
    /// Whether the property holds, for the yes/no properties that
    /// `expect` can state; `None` when the analysis could not judge it.
    pub holds: Option<bool>,
    /// Why: a proof, the grid checked, or a counterexample.
    pub evidence: String,
}

/// The property table of one pred.
#[derive(Clone, Debug, PartialEq)]
pub struct PredAnalysis {
    /// The pred.
    pub pred: String,
    /// Its declared type.
    pub type_text: String,
    /// One finding per property, in a fixed order.
    pub findings: Vec<Finding>,
    /// The estimand, for regression.
    pub estimand: Option<Estimand>,
}

/// The analysis of a spec: one table per pred.
#[derive(Clone, Debug, PartialEq)]
pub struct Analysis {
    /// The loss's name.
    pub name: String,
    /// The task.
    pub task: Task,
    /// Whether the objective is a mean or sum of per-row terms (else the
    /// per-sample analyses look at one row of a small batch).
    pub pointwise: bool,
    /// One table per pred, in declaration order.
    pub preds: Vec<PredAnalysis>,
}

impl PredAnalysis {
    /// The finding for a property name.
    pub fn finding(&self, property: &str) -> Option<&Finding> {
        self.findings.iter().find(|f| f.property == property)
    }
}

impl Analysis {
    /// The table as aligned text.
    pub fn text(&self) -> String {
        let mut s = String::new();
        let _ = writeln!(
            s,
            "{} ({} task, {})",
            self.name,
            self.task,
            if self.pointwise {
                "per-row loss"
            } else {
                "the objective couples rows: per-sample properties are judged on one row of a batch"
            }
        );
        for p in &self.preds {
            let _ = writeln!(s, "\npred {} : {}", p.pred, p.type_text);
            let w = p
                .findings
                .iter()
                .map(|f| f.property.len())
                .max()
                .unwrap_or(0);
            let v = p
                .findings
                .iter()
                .map(|f| f.verdict.chars().count())
                .max()
                .unwrap_or(0)
                .min(40);
            for f in &p.findings {
                let pad = v.saturating_sub(f.verdict.chars().count());
                let _ = writeln!(
                    s,
                    "  {:w$}  {}{}  {}",
                    f.property,
                    f.verdict,
                    " ".repeat(pad),
                    f.evidence
                );
            }
        }
        s
    }

    /// The table as one JSON object.
    pub fn json(&self) -> String {
        let q = crate::grad::json_str;
        let preds: Vec<String> = self
            .preds
            .iter()
            .map(|p| {
                let fs: Vec<String> = p
                    .findings
                    .iter()
                    .map(|f| {
                        format!(
                            "{{\"property\": {}, \"verdict\": {}, \"holds\": {}, \"evidence\": {}}}",
                            q(f.property),
                            q(&f.verdict),
                            f.holds.map_or("null".to_string(), |b| b.to_string()),
                            q(&f.evidence)
                        )
                    })
                    .collect();
                format!(
                    "{{\"pred\": {}, \"type\": {}, \"properties\": [{}]}}",
                    q(&p.pred),
                    q(&p.type_text),
                    fs.join(", ")
                )
            })
            .collect();
        format!(
            "{{\"loss\": {}, \"task\": {}, \"pointwise\": {}, \"preds\": [{}]}}",
            q(&self.name),
            q(&self.task.to_string()),
            self.pointwise,
            preds.join(", ")
        )
    }
}

/// A number for evidence text: short, fixed format.
pub(crate) fn num(x: f64) -> String {
    if x == 0.0 {
        return "0".into();
    }
    if !x.is_finite() {
        return format!("{x}");
    }
    let a = x.abs();
    if !(1e-3..1e5).contains(&a) {
        let s = format!("{x:.2e}");
        // 1.00e6 -> 1e6
        return s.replace(".00e", "e");
    }
    let s = format!("{x:.4}");
    let s = s.trim_end_matches('0').trim_end_matches('.');
    if s == "-0" { "0".into() } else { s.into() }
}

/// Six significant digits, for differences `num` would round away.
fn sig6(x: f64) -> String {
    format!("{x:.5e}")
}

struct Cx<'a> {
    loss: &'a crate::Loss,
    /// Representative data rows (the same for every pred).
    scen: Vec<Batch>,
    c: &'a Checked,
    d: &'a Derivation,
    pointwise: bool,
    sizes: BTreeMap<String, usize>,
}

/// Analyses every pred of a spec, from its derivation.
pub fn analyze(loss: &crate::Loss, d: &Derivation) -> Analysis {
    let c = loss.checked();
    let sizes: BTreeMap<String, usize> = c
        .sizes
        .iter()
        .map(|(k, v)| (k.clone(), v.map_or(3, |v| v as usize)))
        .collect();
    let pointwise = d.loss.is_some() && !couples_rows(d);
    let mut cx = Cx {
        loss,
        scen: Vec::new(),
        c,
        d,
        pointwise,
        sizes,
    };
    cx.scen = scenarios(&cx);
    let preds = d.preds.iter().map(|p| analyze_pred(&cx, p)).collect();
    Analysis {
        name: c.name.clone(),
        task: c.task,
        pointwise,
        preds,
    }
}

/// Whether any reduction reads other rows (`@j`).
fn couples_rows(d: &Derivation) -> bool {
    let g = &d.graph;
    let mut stack: Vec<Id> = d.objective.reductions.iter().map(|r| r.body).collect();
    let mut seen = HashSet::new();
    while let Some(id) = stack.pop() {
        if !seen.insert(id) {
            continue;
        }
        match g.node(id) {
            Node::Elem { row: Some(_), .. } | Node::Row => return true,
            n => stack.extend(n.children()),
        }
    }
    false
}

fn var<'a>(c: &'a Checked, name: &str) -> &'a crate::sema::Variable {
    c.data
        .iter()
        .chain(&c.preds)
        .find(|v| v.name == name)
        .expect("a declared name")
}

// ------------------------------------------------------------ scenarios

/// Representative values of one scalar data input.
pub(crate) fn data_values(dom: &Dom, sizes: &BTreeMap<String, usize>) -> Vec<f64> {
    match dom {
        Dom::Labels(vs) => vs.iter().take(5).copied().collect(),
        Dom::Class(s) => {
            let n = match s {
                Size::Lit(v) => *v as usize,
                Size::Name(n) => sizes.get(n).copied().unwrap_or(3),
            };
            (0..n.min(3)).map(|k| k as f64).collect()
        }
        Dom::Range(r) => match (r.lo.is_finite(), r.hi.is_finite()) {
            (true, true) => {
                let w = r.hi - r.lo;
                let lo = if r.lo_closed { r.lo } else { r.lo + 0.1 * w };
                let hi = if r.hi_closed { r.hi } else { r.hi - 0.1 * w };
                vec![lo, 0.5 * (r.lo + r.hi), hi]
            }
            (true, false) => vec![r.lo + 1.0, r.lo + 10.0],
            (false, true) => vec![r.hi - 1.0, r.hi - 10.0],
            (false, false) => vec![0.0, 2.5],
        },
        _ => vec![0.0],
    }
}

/// Representative rows of a vector data input of length `n`.
fn vector_values(dom: &Dom, n: usize, rng: &mut Rng) -> Vec<Vec<f64>> {
    let unit = |k: usize| (0..n).map(|i| (i == k) as u8 as f64).collect::<Vec<_>>();
    match dom {
        Dom::Onehot => (0..n.min(2)).map(unit).collect(),
        Dom::Multihot => vec![
            (0..n).map(|i| (i % 2 == 0) as u8 as f64).collect(),
            (0..n).map(|i| (i % 2 == 1) as u8 as f64).collect(),
        ],
        Dom::Probs => {
            let w: Vec<f64> = (0..n).map(|i| 1.0 / (i + 1) as f64).collect();
            let t: f64 = w.iter().sum();
            vec![w.into_iter().map(|x| x / t).collect()]
        }
        other => vec![(0..n).map(|_| crate::grad::draw(other, rng)).collect()],
    }
}

fn width(cx: &Cx, v: &crate::sema::Variable) -> usize {
    match &v.shape {
        Shape::Scalar => 1,
        Shape::Vector(Size::Lit(n)) => *n as usize,
        Shape::Vector(Size::Name(n)) => cx.sizes.get(n).copied().unwrap_or(3),
    }
}

/// Batches whose row 0 is a representative data row (every combination of
/// representative data values, at most 12), with the other preds drawn at
/// random; coupled objectives get 5 more random rows.
fn scenarios(cx: &Cx) -> Vec<Batch> {
    let mut rng = Rng::new(17);
    let rows = if cx.pointwise { 1 } else { 6 };
    let base = crate::grad::random_batch_sized(cx.c, rows, cx.sizes.clone(), &mut rng);
    let mut combos: Vec<Vec<(String, Vec<f64>)>> = vec![Vec::new()];
    for v in &cx.c.data {
        let options: Vec<Vec<f64>> = match v.shape {
            Shape::Scalar => data_values(&v.dom, &cx.sizes)
                .into_iter()
                .map(|x| vec![x])
                .collect(),
            Shape::Vector(_) => vector_values(&v.dom, width(cx, v), &mut rng),
        };
        let mut next = Vec::new();
        for c in &combos {
            for o in &options {
                let mut c = c.clone();
                c.push((v.name.clone(), o.clone()));
                next.push(c);
            }
        }
        combos = next;
        if combos.len() > 12 {
            combos.truncate(12);
        }
    }
    combos
        .into_iter()
        .map(|combo| {
            let mut b = base.clone();
            for (name, row) in combo {
                b.values.get_mut(&name).expect("data")[0] = row;
            }
            b
        })
        .collect()
}

/// The data of row 0 as `y = 1, s = 5.5`.
fn data_text(cx: &Cx, b: &Batch) -> String {
    let parts: Vec<String> =
        cx.c.data
            .iter()
            .map(|v| {
                let row = &b.values[&v.name][0];
                if row.len() == 1 {
                    format!("{} = {}", v.name, num(row[0]))
                } else {
                    let xs: Vec<String> = row.iter().map(|x| num(*x)).collect();
                    format!("{} = [{}]", v.name, xs.join(", "))
                }
            })
            .collect();
    if parts.is_empty() {
        "random preds".into()
    } else {
        parts.join(", ")
    }
}

// ------------------------------------------------------------ lines

/// The objective along a line through pred space: row 0 of the pred is
/// `base + t·dir` (for a scalar pred, `t` itself).
struct Line<'a> {
    cx: &'a Cx<'a>,
    p: &'a PredGradient,
    batch: Batch,
    base: Vec<f64>,
    dir: Vec<f64>,
    /// Every row moves (calibration: one prediction for all rows).
    all_rows: bool,
}

impl<'a> Line<'a> {
    /// The pred's own axis (a scalar pred), in one row or in all rows.
    fn axis(cx: &'a Cx<'a>, p: &'a PredGradient, batch: Batch, all_rows: bool) -> Line<'a> {
        Line {
            cx,
            p,
            batch,
            base: vec![0.0],
            dir: vec![1.0],
            all_rows,
        }
    }

    fn at(&self, t: f64) -> Batch {
        let mut b = self.batch.clone();
        let rows = b.values.get_mut(&self.p.pred).expect("pred");
        let u: Vec<f64> = self
            .base
            .iter()
            .zip(&self.dir)
            .map(|(b, d)| b + t * d)
            .collect();
        if self.all_rows {
            for r in rows.iter_mut() {
                *r = u.clone();
            }
        } else {
            rows[0] = u;
        }
        b
    }

    /// The directional derivative (the subgradient the rules pick at a
    /// kink), per row: the reduction factor is taken out.
    fn slope(&self, t: f64) -> f64 {
        let mut b = self.at(t);
        // The sample reductions once, not once per row.
        b.reduced = self.cx.d.reductions(&b);
        let rows = if self.all_rows { b.rows } else { 1 };
        let mut total = 0.0;
        for r in 0..rows {
            for (c, d) in self.dir.iter().enumerate() {
                if *d == 0.0 {
                    continue;
                }
                let bind: Vec<(&str, usize)> = match &self.p.component {
                    Some(k) => vec![(k.as_str(), c)],
                    None => Vec::new(),
                };
                total += d * crate::ir::eval::eval_with(
                    &self.cx.d.graph,
                    self.p.per_sample,
                    &b,
                    r,
                    &bind,
                );
            }
        }
        total
    }

    fn point_text(&self, t: f64) -> String {
        if self.dir.len() == 1 {
            format!("{} = {}", self.p.pred, num(self.base[0] + t * self.dir[0]))
        } else {
            format!("{} = {} + {}·d", self.p.pred, vec_text(&self.base), num(t))
        }
    }
}

fn vec_text(v: &[f64]) -> String {
    let xs: Vec<String> = v.iter().map(|x| num(*x)).collect();
    format!("[{}]", xs.join(", "))
}

/// Points along the pred's domain, sorted: dense near the middle, then
/// geometrically out to the edges (or to ±10⁶).
fn grid(dom: &Dom) -> Vec<f64> {
    let r = match dom {
        Dom::Range(r) => *r,
        _ => Range::REAL,
    };
    let sig = |t: f64| 1.0 / (1.0 + (-t).exp());
    let mut v: Vec<f64> = match (r.lo.is_finite(), r.hi.is_finite()) {
        (false, false) => {
            let mut v: Vec<f64> = (-80..=80).map(|i| i as f64 * 0.1).collect();
            for k in 0..12 {
                let x = 10f64.powf(1.0 + k as f64 * 0.5);
                v.push(x);
                v.push(-x);
            }
            v
        }
        (true, true) => (-60..=60)
            .map(|i| r.lo + (r.hi - r.lo) * sig(i as f64 * 0.5))
            .filter(|u| *u > r.lo && *u < r.hi)
            .chain([r.lo, r.hi].into_iter().filter(|_| false))
            .collect(),
        (true, false) => (-125..=70).map(|i| r.lo + (i as f64 * 0.2).exp()).collect(),
        (false, true) => (-125..=70).map(|i| r.hi - (i as f64 * 0.2).exp()).collect(),
    };
    v.sort_by(f64::total_cmp);
    v.dedup();
    v
}

/// The lines to probe for pred `p` in scenario `b`: the pred's own axis
/// for a scalar; for a vector, one coordinate axis and two random
/// directions through a random point.
fn lines<'a>(
    cx: &'a Cx<'a>,
    p: &'a PredGradient,
    b: &Batch,
    rng: &mut Rng,
) -> Vec<(Line<'a>, Vec<f64>)> {
    let v = var(cx.c, &p.pred);
    match v.shape {
        Shape::Scalar => vec![(Line::axis(cx, p, b.clone(), false), grid(&v.dom))],
        Shape::Vector(_) => {
            let n = width(cx, v);
            let base = b.values[&p.pred][0].clone();
            let mut dirs = vec![(0..n).map(|i| (i == 0) as u8 as f64).collect::<Vec<_>>()];
            for _ in 0..2 {
                let d: Vec<f64> = (0..n).map(|_| rng.normal()).collect();
                let norm = d.iter().map(|x| x * x).sum::<f64>().sqrt().max(1e-12);
                dirs.push(d.into_iter().map(|x| x / norm).collect());
            }
            let all_ts: Vec<f64> = grid(&Dom::Range(Range::REAL));
            // Only points whose every component stays in the component
            // domain (a probability vector's line leaves (0, 1) somewhere).
            let inside = |base: &[f64], dir: &[f64]| -> Vec<f64> {
                let r = v.dom.component_range();
                all_ts
                    .iter()
                    .copied()
                    .filter(|t| {
                        r.is_none_or(|r| {
                            base.iter().zip(dir).all(|(b, d)| {
                                let x = b + t * d;
                                x > r.lo && x < r.hi
                            })
                        })
                    })
                    .collect()
            };
            let mut out: Vec<(Line, Vec<f64>)> = dirs
                .into_iter()
                .map(|dir| {
                    (
                        Line {
                            cx,
                            p,
                            batch: b.clone(),
                            base: base.clone(),
                            dir: dir.clone(),
                            all_rows: false,
                        },
                        inside(&base, &dir),
                    )
                })
                .collect();
            // Lines through another pred of the same width: distances and
            // similarities between preds change behaviour where they meet.
            for other in &cx.c.preds {
                if other.name != p.pred && width(cx, other) == n && other.shape != Shape::Scalar {
                    let through = b.values[&other.name][0].clone();
                    let d: Vec<f64> = (0..n).map(|_| rng.normal()).collect();
                    let norm = d.iter().map(|x| x * x).sum::<f64>().sqrt().max(1e-12);
                    let dir: Vec<f64> = d.into_iter().map(|x| x / norm).collect();
                    let ts = inside(&through, &dir);
                    out.push((
                        Line {
                            cx,
                            p,
                            batch: b.clone(),
                            base: through,
                            dir,
                            all_rows: false,
                        },
                        ts,
                    ));
                }
            }
            out
        }
    }
}

// ------------------------------------------------------------ per pred

fn analyze_pred(cx: &Cx, p: &PredGradient) -> PredAnalysis {
    let v = var(cx.c, &p.pred);
    let scen = &cx.scen;
    let mut rng = Rng::new(5);
    // Slopes along every line, computed once.
    let mut probes = Vec::new();
    for b in scen {
        for (line, ts) in lines(cx, p, b, &mut rng) {
            let slopes: Vec<f64> = ts.iter().map(|t| line.slope(*t)).collect();
            probes.push(Probe { line, ts, slopes });
        }
    }
    let kinks = kinks(cx, p, &probes);
    let mut findings = vec![differentiable(cx, &kinks)];
    findings.push(convex(cx, p, &probes, &kinks));
    let (near, far, bounded) = gradient_shape(cx, &probes);
    findings.push(near);
    findings.push(far);
    findings.push(finite(cx, p, v));
    let mut estimand = None;
    match cx.c.task {
        Task::Binary => {
            findings.push(calibrated(cx, p, v));
            if let Some(f) = easy_examples(cx, p, v) {
                findings.push(f);
            }
        }
        Task::Multiclass => findings.push(calibrated(cx, p, v)),
        Task::Regression => {
            let (f, noise, e) = estimand_of(cx, p, v);
            estimand = e;
            findings.push(f);
            findings.push(noise);
        }
        _ => {}
    }
    findings.push(Finding {
        property: "outlier influence",
        verdict: match bounded {
            Some(true) => "bounded".into(),
            Some(false) => "unbounded".into(),
            None => "unknown".into(),
        },
        holds: bounded,
        evidence: "a sample far from the fit pulls with the gradient's magnitude far from the minimiser (above)".into(),
    });
    PredAnalysis {
        pred: p.pred.clone(),
        type_text: v.type_text.clone(),
        findings,
        estimand,
    }
}

struct Probe<'a> {
    line: Line<'a>,
    ts: Vec<f64>,
    slopes: Vec<f64>,
}

// ------------------------------------------------------------ kinks

/// A switch: where a non-smooth operation changes branch.
struct Switch {
    /// `a - b`, zero at the switch.
    expr: (Id, Option<Id>),
    /// Where, in the spec's terms.
    text: String,
}

/// Whether `id` reads pred `pred` (any pred when `None`). A sample
/// reduction's symbol counts: it depends on every pred.
pub(crate) fn reads_pred(d: &Derivation, id: Id, pred: Option<&str>) -> bool {
    let g = &d.graph;
    let mut stack = vec![id];
    let mut seen = HashSet::new();
    while let Some(x) = stack.pop() {
        if !seen.insert(x) {
            continue;
        }
        match g.node(x) {
            Node::Sym(SymKind::Pred, n)
            | Node::Elem {
                kind: SymKind::Pred,
                name: n,
                ..
            } if pred.is_none_or(|p| p == n) => return true,
            Node::Sym(SymKind::Reduced, _) => return true,
            n => stack.extend(n.children()),
        }
    }
    false
}

/// Every non-smooth operation whose switch depends on the pred.
fn switches(cx: &Cx, p: &PredGradient) -> Vec<Switch> {
    let d = cx.d;
    let g = &d.graph;
    let depends = |id: Id| reads_pred(d, id, Some(&p.pred));
    let mut roots: Vec<Id> = d.objective.reductions.iter().map(|r| r.body).collect();
    roots.push(d.objective.outer);
    let mut out: Vec<Switch> = Vec::new();
    let mut seen = HashSet::new();
    let mut stack = roots;
    let pr = |id: Id| d.print(id, Style::Text);
    let push = |expr: (Id, Option<Id>), text: String, out: &mut Vec<Switch>| {
        if !out.iter().any(|s| s.expr == expr) {
            out.push(Switch { expr, text });
        }
    };
    while let Some(id) = stack.pop() {
        if !seen.insert(id) {
            continue;
        }
        let n = g.node(id);
        match n {
            Node::Func(Func::Abs | Func::Sign | Func::Relu | Func::Sqrt, a) if depends(*a) => {
                push((*a, None), format!("{} = 0", pr(*a)), &mut out)
            }
            Node::Max(a, b) | Node::Min(a, b) if depends(*a) || depends(*b) => {
                // The constant side on the right: `1 - y * s = 0`.
                let (a, b) = if matches!(g.node(*a), Node::Num(_)) {
                    (*b, *a)
                } else {
                    (*a, *b)
                };
                push((a, Some(b)), format!("{} = {}", pr(a), pr(b)), &mut out)
            }
            Node::Select(c, ..) if depends(*c) => {
                let mut cs = vec![*c];
                while let Some(x) = cs.pop() {
                    match g.node(x) {
                        Node::Cmp(_, a, b) => {
                            push((*a, Some(*b)), format!("{} = {}", pr(*a), pr(*b)), &mut out)
                        }
                        Node::And(a, b) | Node::Or(a, b) => cs.extend([*a, *b]),
                        Node::Not(a) => cs.push(*a),
                        _ => {}
                    }
                }
            }
            _ => {}
        }
        stack.extend(n.children());
    }
    out.sort_by(|a, b| a.text.cmp(&b.text));
    out
}

/// A confirmed kink: where, and the slope on each side.
struct Kink {
    text: String,
    at: String,
    left: f64,
    right: f64,
}

fn kinks(cx: &Cx, p: &PredGradient, probes: &[Probe]) -> (usize, Vec<Kink>) {
    let sw = switches(cx, p);
    let mut found: Vec<Kink> = Vec::new();
    for s in &sw {
        'probe: for pr in probes {
            let val = |t: f64| {
                let mut b = pr.line.at(t);
                b.reduced = cx.d.reductions(&b);
                let a = eval_at(&cx.d.graph, s.expr.0, &b, 0);
                let c = s.expr.1.map_or(0.0, |x| eval_at(&cx.d.graph, x, &b, 0));
                a - c
            };
            let vals: Vec<f64> = pr.ts.iter().map(|t| val(*t)).collect();
            for i in 0..pr.ts.len().saturating_sub(1) {
                let (v0, v1) = (vals[i], vals[i + 1]);
                if !(v0.is_finite() && v1.is_finite()) || (v0 > 0.0) == (v1 > 0.0) && v0 != 0.0 {
                    continue;
                }
                if v0 == 0.0 {
                    // Touching zero on a grid point (a distance between preds).
                    if let Some(k) = jump(&pr.line, pr.ts[i]) {
                        found.push(Kink {
                            text: s.text.clone(),
                            at: format!(
                                "{}, {}",
                                data_text(cx, &pr.line.batch),
                                pr.line.point_text(pr.ts[i])
                            ),
                            left: k.0,
                            right: k.1,
                        });
                        break 'probe;
                    }
                    continue;
                }
                // Bisect to the crossing.
                let (mut lo, mut hi) = (pr.ts[i], pr.ts[i + 1]);
                let flo = v0 > 0.0;
                for _ in 0..60 {
                    let mid = 0.5 * (lo + hi);
                    if (val(mid) > 0.0) == flo {
                        lo = mid;
                    } else {
                        hi = mid;
                    }
                }
                let t = 0.5 * (lo + hi);
                // Bisection leaves 1e-20 where the switch is at 0.
                let t = if t.abs() < 1e-9 { 0.0 } else { t };
                if let Some((l, r)) = jump(&pr.line, t) {
                    found.push(Kink {
                        text: s.text.clone(),
                        at: format!(
                            "{}, {}",
                            data_text(cx, &pr.line.batch),
                            pr.line.point_text(t)
                        ),
                        left: l,
                        right: r,
                    });
                    break 'probe;
                }
            }
        }
    }
    if found.is_empty() && !sw.is_empty() {
        for pr in probes {
            if let Some((t, l, r)) = numeric_kink(pr) {
                found.push(Kink {
                    text: sw
                        .iter()
                        .map(|s| s.text.as_str())
                        .collect::<Vec<_>>()
                        .join(" or "),
                    at: format!(
                        "{}, {}",
                        data_text(cx, &pr.line.batch),
                        pr.line.point_text(t)
                    ),
                    left: l,
                    right: r,
                });
                break;
            }
        }
    }
    (sw.len(), found)
}

/// The slopes on each side of `t` when they differ there: a kink's jump
/// stays as the step shrinks, a smooth function's difference shrinks with it.
fn jump(line: &Line, t: f64) -> Option<(f64, f64)> {
    let h = 1e-5 * t.abs().max(1.0);
    let (l, r) = (line.slope(t - h), line.slope(t + h));
    let (l2, r2) = (line.slope(t - h / 100.0), line.slope(t + h / 100.0));
    let (j1, j2) = ((l - r).abs(), (l2 - r2).abs());
    let scale = l.abs().max(r.abs()).max(1e-12);
    (l.is_finite() && r.is_finite() && j2 > 0.5 * j1 && j1 > 1e-6 * scale).then_some((l, r))
}

/// Kinks found from the slopes alone (for switches inside reductions,
/// which cannot be evaluated on their own): a jump between neighbouring
/// grid points far larger than the jumps beside it, located by bisection.
fn numeric_kink(pr: &Probe) -> Option<(f64, f64, f64)> {
    let s = &pr.slopes;
    let n = s.len();
    for i in 1..n.saturating_sub(2) {
        let d = |k: usize| (s[k + 1] - s[k]).abs();
        if !(s[i].is_finite() && s[i + 1].is_finite()) || pr.ts[i].abs() > 8.0 {
            continue;
        }
        if d(i) > 10.0 * d(i - 1).max(d(i + 1)) && d(i) > 1e-6 {
            let (mut a, mut b) = (pr.ts[i], pr.ts[i + 1]);
            let (sa, sb) = (s[i], s[i + 1]);
            for _ in 0..50 {
                let m = 0.5 * (a + b);
                let sm = pr.line.slope(m);
                if (sm - sa).abs() < (sb - sm).abs() {
                    a = m;
                } else {
                    b = m;
                }
            }
            let t = 0.5 * (a + b);
            if let Some((l, r)) = jump(&pr.line, t) {
                return Some((t, l, r));
            }
        }
    }
    None
}

fn differentiable(_cx: &Cx, (candidates, kinks): &(usize, Vec<Kink>)) -> Finding {
    if kinks.is_empty() {
        return Finding {
            property: "differentiable",
            verdict: "yes".into(),
            holds: Some(true),
            evidence: if *candidates == 0 {
                "no abs, max, min, relu, sign or if depends on the pred".into()
            } else {
                format!(
                    "{candidates} branch point{} where the slope is continuous",
                    if *candidates == 1 { "" } else { "s" }
                )
            },
        };
    }
    let parts: Vec<String> = kinks
        .iter()
        .map(|k| {
            format!(
                "where {} (at {}: slope {} | {})",
                k.text,
                k.at,
                num(k.left),
                num(k.right)
            )
        })
        .collect();
    Finding {
        property: "differentiable",
        verdict: format!(
            "no: {} kink{}",
            kinks.len(),
            if kinks.len() == 1 { "" } else { "s" }
        ),
        holds: Some(false),
        evidence: parts.join("; "),
    }
}

// ------------------------------------------------------------ convexity

fn convex(cx: &Cx, p: &PredGradient, probes: &[Probe], (_, kinks): &(usize, Vec<Kink>)) -> Finding {
    // Slopes must not fall along any line (subgradients at kinks included).
    for pr in probes {
        let scale = pr
            .slopes
            .iter()
            .filter(|s| s.is_finite())
            .fold(0.0f64, |m, s| m.max(s.abs()))
            .max(1e-12);
        let typical = {
            let mut m: Vec<f64> = pr
                .slopes
                .iter()
                .filter(|x| x.is_finite())
                .map(|x| x.abs())
                .collect();
            m.sort_by(f64::total_cmp);
            m.get(m.len() / 2).copied().unwrap_or(0.0).min(scale)
        };
        // Slopes below 1e-11 of the loss's own size are rounding noise.
        let f0 = cx.d.objective_value(&pr.line.at(0.0));
        let noise = 1e-11 * f0.abs().max(1.0);
        // Each slope against the last finite one (a NaN at a cone's tip
        // must not hide the fall across it).
        let fin: Vec<usize> = (0..pr.slopes.len())
            .filter(|&i| pr.slopes[i].is_finite())
            .collect();
        for w in fin.windows(2) {
            let (i, j) = (w[0], w[1]);
            let (a, b) = (pr.slopes[i], pr.slopes[j]);
            // Relative to the two slopes, with a floor for rounding noise
            // where the slope is ~0.
            if b < a - 1e-6 * a.abs().max(b.abs()) - 1e-9 * typical - noise {
                return Finding {
                    property: "convex",
                    verdict: "no".into(),
                    holds: Some(false),
                    evidence: format!(
                        "at {}: the slope falls from {} ({}) to {} ({})",
                        data_text(cx, &pr.line.batch),
                        sig6(a),
                        pr.line.point_text(pr.ts[i]),
                        sig6(b),
                        pr.line.point_text(pr.ts[j])
                    ),
                };
            }
        }
    }
    // A proof from the second derivative's bounds, where one is known.
    if kinks.is_empty()
        && cx.pointwise
        && let Some(h) = p.hessian
        && let Some(iv) = interval(cx, h)
        && iv.0 >= 0.0
    {
        return Finding {
            property: "convex",
            verdict: "yes (proven)".into(),
            holds: Some(true),
            evidence: format!(
                "d²loss/d{}² lies in [{}, {}] over the declared domains (interval bounds)",
                p.pred,
                num(iv.0),
                num(iv.1)
            ),
        };
    }
    let points: usize = probes.iter().map(|p| p.ts.len()).sum();
    Finding {
        property: "convex",
        verdict: "yes".into(),
        holds: Some(true),
        evidence: format!(
            "slope non-decreasing at {points} points on {} line{} through the domain",
            probes.len(),
            if probes.len() == 1 { "" } else { "s" }
        ),
    }
}

/// Interval bounds of `id` with every data and pred ranging over its
/// declared domain; `None` where an operation has no simple bound.
fn interval(cx: &Cx, id: Id) -> Option<(f64, f64)> {
    let params: BTreeMap<&str, f64> =
        cx.c.params
            .iter()
            .map(|p| (p.name.as_str(), p.value))
            .collect();
    fn dom_iv(d: &Dom) -> Option<(f64, f64)> {
        match d {
            Dom::Range(r) => Some((r.lo, r.hi)),
            Dom::Labels(vs) => Some((vs[0], vs[vs.len() - 1])),
            Dom::Onehot | Dom::Multihot | Dom::Probs => Some((0.0, 1.0)),
            _ => None,
        }
    }
    fn mul(a: (f64, f64), b: (f64, f64)) -> (f64, f64) {
        let ps = [a.0 * b.0, a.0 * b.1, a.1 * b.0, a.1 * b.1];
        let ps: Vec<f64> = ps
            .iter()
            .map(|x| if x.is_nan() { 0.0 } else { *x })
            .collect();
        (
            ps.iter().copied().fold(f64::INFINITY, f64::min),
            ps.iter().copied().fold(f64::NEG_INFINITY, f64::max),
        )
    }
    fn go(cx: &Cx, params: &BTreeMap<&str, f64>, id: Id) -> Option<(f64, f64)> {
        let g = &cx.d.graph;
        let r = match g.node(id) {
            Node::Num(x) => (x.0, x.0),
            Node::Sym(SymKind::Param, n) => {
                let v = *params.get(n.as_str())?;
                (v, v)
            }
            Node::Sym(SymKind::Data | SymKind::Pred, n) => dom_iv(&var(cx.c, n).dom)?,
            Node::Elem {
                kind: SymKind::Data | SymKind::Pred,
                name,
                ..
            } => dom_iv(&var(cx.c, name).dom)?,
            Node::Add(xs) => {
                let mut acc = (0.0, 0.0);
                for x in xs {
                    let v = go(cx, params, *x)?;
                    acc = (acc.0 + v.0, acc.1 + v.1);
                }
                acc
            }
            Node::Mul(xs) => {
                // A repeated factor is a square: even powers are >= 0.
                let mut acc = (1.0, 1.0);
                for x in xs {
                    acc = mul(acc, go(cx, params, *x)?);
                }
                acc
            }
            Node::Pow(b, e) => {
                let e = match g.node(*e) {
                    Node::Num(x) => x.0,
                    _ => return None,
                };
                let b = go(cx, params, *b)?;
                if e.fract() == 0.0 && (e as i64) % 2 == 0 && e > 0.0 {
                    let m = b.0.abs().max(b.1.abs()).powf(e);
                    let lo = if b.0 <= 0.0 && b.1 >= 0.0 {
                        0.0
                    } else {
                        b.0.abs().min(b.1.abs()).powf(e)
                    };
                    (lo, m)
                } else if b.0 > 0.0 || (b.0 >= 0.0 && e > 0.0) {
                    let (x, y) = (b.0.powf(e), b.1.powf(e));
                    (x.min(y), x.max(y))
                } else {
                    return None;
                }
            }
            Node::Func(f, a) => {
                let a = go(cx, params, *a)?;
                match f {
                    Func::Exp
                    | Func::Log
                    | Func::Log1p
                    | Func::Expm1
                    | Func::Sqrt
                    | Func::Sigmoid
                    | Func::Softplus
                    | Func::Tanh
                    | Func::Sinh
                    | Func::Relu => (f.eval(a.0), f.eval(a.1)),
                    Func::Abs => {
                        if a.0 >= 0.0 {
                            a
                        } else if a.1 <= 0.0 {
                            (-a.1, -a.0)
                        } else {
                            (0.0, (-a.0).max(a.1))
                        }
                    }
                    Func::Cosh => {
                        let m = a.0.abs().max(a.1.abs()).cosh();
                        if a.0 <= 0.0 && a.1 >= 0.0 {
                            (1.0, m)
                        } else {
                            (a.0.abs().min(a.1.abs()).cosh(), m)
                        }
                    }
                    Func::Sign => (-1.0, 1.0),
                }
            }
            Node::Max(a, b) => {
                let (a, b) = (go(cx, params, *a)?, go(cx, params, *b)?);
                (a.0.max(b.0), a.1.max(b.1))
            }
            Node::Min(a, b) => {
                let (a, b) = (go(cx, params, *a)?, go(cx, params, *b)?);
                (a.0.min(b.0), a.1.min(b.1))
            }
            Node::Select(_, a, b) => {
                let (a, b) = (go(cx, params, *a)?, go(cx, params, *b)?);
                (a.0.min(b.0), a.1.max(b.1))
            }
            Node::Cmp(..) | Node::And(..) | Node::Or(..) | Node::Not(..) => (0.0, 1.0),
            Node::StopGrad(a) => go(cx, params, *a)?,
            _ => return None,
        };
        if r.0.is_nan() || r.1.is_nan() {
            return None;
        }
        Some(r)
    }
    go(cx, &params, id)
}

// ------------------------------------------------------------ gradient

/// The gradient near the minimiser and for large errors, and whether it is
/// bounded everywhere.
fn gradient_shape(cx: &Cx, probes: &[Probe]) -> (Finding, Finding, Option<bool>) {
    let mut near: Vec<(String, String)> = Vec::new();
    let mut far: Vec<(u8, String, String)> = Vec::new();
    let mut sup = 0.0f64;
    for pr in probes {
        let (ts, s) = (&pr.ts, &pr.slopes);
        let n = ts.len();
        if n < 3 {
            continue;
        }
        for x in s.iter().filter(|x| x.is_finite()) {
            sup = sup.max(x.abs());
        }
        let at = data_text(cx, &pr.line.batch);
        // The minimiser: where the slope changes sign (or is 0 on a stretch).
        // A flat stretch at moderate values (not an underflow far out).
        let zero_run = ts
            .iter()
            .zip(s.iter())
            .filter(|(t, x)| **x == 0.0 && t.abs() <= 8.0)
            .count();
        // Slopes within rounding of zero count as zero (an underflowed
        // `sigmoid(z) - 1` is not a minimiser).
        // Relative to a typical slope, not the largest (which can be huge
        // at a domain edge).
        let typical = {
            let mut m: Vec<f64> = s
                .iter()
                .filter(|x| x.is_finite())
                .map(|x| x.abs())
                .collect();
            m.sort_by(f64::total_cmp);
            m.get(m.len() / 2).copied().unwrap_or(0.0)
        };
        let tol = 1e-9 * typical.max(1e-6 * sup).max(1e-300);
        let sign = |x: f64| {
            if x < -tol {
                -1
            } else if x > tol {
                1
            } else {
                0
            }
        };
        let cross = (0..n - 1).find(|&i| {
            sign(s[i]) < 0
                && (i + 1..n)
                    .find(|&j| sign(s[j]) != 0)
                    .is_some_and(|j| sign(s[j]) > 0)
        });
        let first = s.iter().position(|x| sign(*x) != 0);
        let last = s.iter().rposition(|x| sign(*x) != 0);
        let pred = &pr.line.p.pred;
        let near_text = if zero_run >= 3 {
            "zero beyond the margin".to_string()
        } else if let Some(i) = cross {
            let j = (i + 1..n).find(|&j| sign(s[j]) > 0).unwrap_or(i + 1);
            let (mut lo, mut hi) = (ts[i], ts[j]);
            for _ in 0..60 {
                let mid = 0.5 * (lo + hi);
                if pr.line.slope(mid) < 0.0 {
                    lo = mid;
                } else {
                    hi = mid;
                }
            }
            let t = 0.5 * (lo + hi);
            let scale = t.abs().clamp(1e-3, 1.0);
            let g1 = pr
                .line
                .slope(t + 1e-1 * scale)
                .abs()
                .max(pr.line.slope(t - 1e-1 * scale).abs());
            let g4 = pr
                .line
                .slope(t + 1e-4 * scale)
                .abs()
                .max(pr.line.slope(t - 1e-4 * scale).abs());
            if g4 < 0.01 * g1 {
                "vanishes".to_string()
            } else if g1 > 0.0 && g4 > 0.5 * g1 {
                format!("constant magnitude ({})", num(g4))
            } else {
                "shrinks".to_string()
            }
        } else if last.is_some_and(|l| sign(s[l]) < 0) {
            if s[n - 1].abs() <= 1e-3 * sup.max(1e-300) {
                format!("vanishes as {pred} grows (no finite minimiser)")
            } else {
                format!("no minimiser: the loss keeps falling as {pred} grows")
            }
        } else if first.is_some_and(|f| sign(s[f]) > 0) {
            if s[0].abs() <= 1e-3 * sup.max(1e-300) {
                format!("vanishes as {pred} falls (no finite minimiser)")
            } else {
                format!("no minimiser: the loss keeps falling as {pred} falls")
            }
        } else {
            "unknown".to_string()
        };
        near.push((near_text, at.clone()));
        // Far from the minimiser: the ends of the grid (the last points
        // where the reference evaluator's slope is finite).
        let fin: Vec<usize> = (0..n).filter(|&i| s[i].is_finite()).collect();
        if fin.len() < 4 {
            continue;
        }
        let (f0, f1, fl, fm) = (fin[0], fin[1], fin[fin.len() - 1], fin[fin.len() - 2]);
        for (end, other) in [(f0, f1), (fl, fm)] {
            let (g_end, g_prev) = (s[end].abs(), s[other].abs());
            let (t_end, t_prev) = (ts[end], ts[other]);
            if !g_end.is_finite() {
                far.push((
                    3,
                    "unbounded".into(),
                    format!("{} at {}, {}", num(s[end]), at, pr.line.point_text(t_end)),
                ));
                continue;
            }
            // Growth between the last two grid points, relative to distance.
            let ratio = g_end / g_prev.max(1e-300);
            let dist = {
                let (a, b) = (t_end.abs().max(1e-300), t_prev.abs().max(1e-300));
                // Towards a finite edge the relevant distance is to the edge.
                let edge = edge_distance(pr, end);
                match edge {
                    Some((de, dp)) => dp / de,
                    None => a / b,
                }
            };
            let to_edge = edge_distance(pr, end).is_some();
            let (class, text) = if g_end < 1e-9 * sup.max(1e-300) || ratio <= 1.05 {
                (0, "bounded")
            } else if (ratio - dist).abs() <= 0.1 * dist {
                if to_edge {
                    (1, "unbounded: grows like 1/(distance to the domain's edge)")
                } else {
                    (1, "grows linearly")
                }
            } else if ratio > dist {
                (2, "grows faster than linearly")
            } else {
                (1, "grows")
            };
            far.push((
                class,
                text.into(),
                format!(
                    "|slope| {} at {}, {}",
                    num(g_end),
                    at,
                    pr.line.point_text(t_end)
                ),
            ));
        }
    }
    // Summaries: the most common near-optimum behaviour, the worst far one.
    let near_f = {
        let mut kinds: Vec<&str> = near.iter().map(|(k, _)| k.as_str()).collect();
        kinds.sort();
        kinds.dedup();
        let verdict = if kinds.len() == 1 {
            kinds[0].to_string()
        } else {
            kinds.join(" / ")
        };
        let ev: Vec<String> = near
            .iter()
            .take(4)
            .map(|(k, at)| format!("{k} at {at}"))
            .collect();
        Finding {
            property: "gradient near optimum",
            verdict,
            holds: None,
            evidence: ev.join("; "),
        }
    };
    let worst = far.iter().map(|f| f.0).max().unwrap_or(0);
    let bounded = if far.is_empty() {
        None
    } else {
        Some(worst == 0)
    };
    let far_f = match far.iter().find(|f| f.0 == worst) {
        Some((_, text, ev)) => Finding {
            property: "gradient for large errors",
            verdict: if worst == 0 {
                format!("bounded by {}", num(sup))
            } else {
                text.clone()
            },
            holds: bounded,
            evidence: if worst == 0 {
                format!("max |slope| {} over the probed domain", num(sup))
            } else {
                ev.clone()
            },
        },
        None => Finding {
            property: "gradient for large errors",
            verdict: "unknown".into(),
            holds: None,
            evidence: "no probe".into(),
        },
    };
    (near_f, far_f, bounded)
}

/// For a scalar pred with a finite edge at the grid's end `end`, the
/// distances of the end point and its neighbour to that edge.
fn edge_distance(pr: &Probe, end: usize) -> Option<(f64, f64)> {
    if pr.line.dir.len() != 1 {
        return None;
    }
    let v = var(pr.line.cx.c, &pr.line.p.pred);
    let Dom::Range(r) = &v.dom else { return None };
    let other = if end == 0 { 1 } else { end - 1 };
    let edge = if end == 0 { r.lo } else { r.hi };
    if !edge.is_finite() {
        return None;
    }
    Some(((pr.ts[end] - edge).abs(), (pr.ts[other] - edge).abs()))
}

// ------------------------------------------------------------ finiteness

fn finite(cx: &Cx, p: &PredGradient, v: &crate::sema::Variable) -> Finding {
    let mut problems: Vec<String> = Vec::new();
    let scen = &cx.scen;
    let edges32 = edges(&v.dom, true);
    let edges64 = edges(&v.dom, false);
    let ev32 = cx.loss.compile::<f32>().ok();
    let ev64 = cx.loss.compile::<f64>().ok();
    for (is32, edges) in [(true, &edges32), (false, &edges64)] {
        for b in scen {
            for &u in edges.iter() {
                let mut b = b.clone();
                for r in b.values.get_mut(&p.pred).expect("pred").iter_mut() {
                    for x in r.iter_mut() {
                        *x = u;
                    }
                }
                let r = if is32 {
                    eval_batch(cx.c, ev32.as_ref(), &b)
                } else {
                    eval_batch(cx.c, ev64.as_ref(), &b)
                };
                if let Some(what) = r {
                    problems.push(format!(
                        "{what} in {} at {}, {} = {}",
                        if is32 { "f32" } else { "f64" },
                        data_text(cx, &b),
                        p.pred,
                        num(u)
                    ));
                }
                if problems.len() >= 3 {
                    break;
                }
            }
        }
    }
    let stable: Vec<String> =
        cx.d.stable
            .iter()
            .map(|s| format!("{} is evaluated as {}", s.from, s.to))
            .collect();
    let hazards = hazards(cx, p, v);
    let hz = if hazards.is_empty() {
        String::new()
    } else {
        format!(
            "; as written: {}{}",
            hazards.join("; "),
            if problems.is_empty() {
                " (evaluation is finite there: the stable forms remove it)"
            } else {
                ""
            }
        )
    };
    if problems.is_empty() {
        Finding {
            property: "finite",
            verdict: "yes".into(),
            holds: Some(true),
            evidence: format!(
                "value and gradient finite in f32 and f64 at the domain's edges{}{hz}",
                if stable.is_empty() {
                    String::new()
                } else {
                    format!(" ({})", stable.join("; "))
                }
            ),
        }
    } else {
        problems.truncate(2);
        Finding {
            property: "finite",
            verdict: "no".into(),
            holds: Some(false),
            evidence: format!("{}{hz}", problems.join("; ")),
        }
    }
}

/// The places in the objective as written where a value can become
/// infinite, with the pred's range where it happens (scalar preds of
/// per-row losses): `exp`, `cosh`, `sinh` overflowing in f32 (argument >
/// 88.72) or f64 (> 709.78), and `log` of an argument reaching 0.
fn hazards(cx: &Cx, p: &PredGradient, v: &crate::sema::Variable) -> Vec<String> {
    if !cx.pointwise || v.shape != Shape::Scalar {
        return Vec::new();
    }
    let g = &cx.d.graph;
    let mut nodes = Vec::new();
    let mut stack: Vec<Id> = cx.d.objective.reductions.iter().map(|r| r.body).collect();
    let mut seen = HashSet::new();
    while let Some(id) = stack.pop() {
        if !seen.insert(id) {
            continue;
        }
        let n = g.node(id);
        if let Node::Func(f @ (Func::Exp | Func::Cosh | Func::Sinh | Func::Log), a) = n {
            nodes.push((id, *f, *a));
        }
        stack.extend(n.children());
    }
    nodes.sort();
    let scen = &cx.scen;
    let us = grid(&v.dom);
    let mut out = Vec::new();
    for (id, f, a) in nodes {
        let arg = |b: &Batch, u: f64| {
            let mut b = b.clone();
            b.values.get_mut(&p.pred).expect("pred")[0] = vec![u];
            eval_at(g, a, &b, 0)
        };
        let hit = |x: f64, limit: f64| match f {
            Func::Log => x == 0.0,
            _ => x.abs() > limit,
        };
        // The first scenario where it happens, and the pred values where
        // it starts (bisected between grid points).
        let mut found: Option<(String, Vec<f64>)> = None;
        'scen: for b in scen {
            let flags: Vec<bool> = us.iter().map(|u| hit(arg(b, *u), 88.72)).collect();
            if !flags.iter().any(|x| *x) {
                continue;
            }
            let mut edges = Vec::new();
            for i in 0..us.len() - 1 {
                if flags[i] != flags[i + 1] {
                    let (mut lo, mut hi) = (us[i], us[i + 1]);
                    for _ in 0..60 {
                        let m = 0.5 * (lo + hi);
                        if hit(arg(b, m), 88.72) == flags[i] {
                            lo = m;
                        } else {
                            hi = m;
                        }
                    }
                    edges.push(0.5 * (lo + hi));
                }
            }
            if edges.is_empty() {
                edges.push(us[flags.iter().position(|x| *x).unwrap_or(0)]);
            }
            found = Some((data_text(cx, b), edges));
            break 'scen;
        }
        let Some((at, edges)) = found else { continue };
        let text = cx.d.print(id, Style::Text);
        let text = if text.chars().count() > 60 {
            format!("{}…", text.chars().take(57).collect::<String>())
        } else {
            text
        };
        let points: Vec<String> = edges.iter().take(2).map(|u| num(*u)).collect();
        if f == Func::Log {
            out.push(format!(
                "{text} is log(0) in f64 from {} = {} ({at})",
                p.pred,
                points.join(" and ")
            ));
        } else {
            out.push(format!(
                "{text} overflows in f32 past {} = {} ({at}; f64 at argument 709.78)",
                p.pred,
                points.join(" and ")
            ));
        }
        if out.len() >= 3 {
            break;
        }
    }
    out
}

/// The pred values at which finiteness is tested: the domain's
/// floating-point edges (a probability that rounds to 0 or 1) and large
/// magnitudes, where `exp` overflows.
fn edges(dom: &Dom, f32: bool) -> Vec<f64> {
    let r = match dom {
        Dom::Range(r) => *r,
        _ => Range::REAL,
    };
    let (tiny, eps) = if f32 {
        (f32::from_bits(1) as f64, f32::EPSILON as f64 / 2.0)
    } else {
        (f64::from_bits(1), f64::EPSILON / 2.0)
    };
    let mut v = Vec::new();
    let mags = [1.0, 10.0, 100.0, 1e3, 1e4];
    match (r.lo.is_finite(), r.hi.is_finite()) {
        (false, false) => {
            for m in mags {
                v.push(m);
                v.push(-m);
            }
        }
        (true, true) => {
            let w = r.hi - r.lo;
            v.push(r.lo + w * tiny.max(if f32 { 1e-45 } else { 5e-324 }));
            v.push(r.lo + w * 1e-8);
            v.push(r.lo + w * 0.5);
            v.push(r.hi - w * eps);
            v.push(r.hi - w * 1e-8);
            if r.lo_closed {
                v.push(r.lo);
            }
            if r.hi_closed {
                v.push(r.hi);
            }
        }
        (true, false) => {
            v.push(if r.lo_closed {
                r.lo
            } else {
                r.lo + tiny.max(r.lo.abs() * eps * 2.0)
            });
            for m in mags {
                v.push(r.lo + m);
            }
        }
        (false, true) => {
            v.push(if r.hi_closed {
                r.hi
            } else {
                r.hi - tiny.max(r.hi.abs() * eps * 2.0)
            });
            for m in mags {
                v.push(r.hi - m);
            }
        }
    }
    // Only values the type can hold and the domain admits.
    v.retain(|x| {
        let y = if f32 { *x as f32 as f64 } else { *x };
        y.is_finite() && dom_admits(&r, y)
    });
    v.iter_mut().for_each(|x| {
        if f32 {
            *x = *x as f32 as f64
        }
    });
    v
}

fn dom_admits(r: &Range, x: f64) -> bool {
    let above = if r.lo_closed { x >= r.lo } else { x > r.lo };
    let below = if r.hi_closed { x <= r.hi } else { x < r.hi };
    above && below
}

/// Evaluates a batch with the compiled evaluator; what is not finite.
fn eval_batch<T: crate::Float>(
    c: &Checked,
    ev: Option<&crate::Evaluator<T>>,
    b: &Batch,
) -> Option<String> {
    let ev = ev?;
    let arrays: Vec<(String, ndarray::ArrayD<T>)> = c
        .data
        .iter()
        .chain(&c.preds)
        .map(|v| {
            let rows = &b.values[&v.name];
            let flat: Vec<T> = rows.iter().flatten().map(|x| T::of(*x)).collect();
            let shape = match v.shape {
                Shape::Scalar => vec![b.rows],
                Shape::Vector(_) => vec![b.rows, rows[0].len()],
            };
            (
                v.name.clone(),
                ndarray::ArrayD::from_shape_vec(ndarray::IxDyn(&shape), flat).expect("shape"),
            )
        })
        .collect();
    let mut inputs = crate::Inputs::new();
    for (n, a) in &arrays {
        inputs.insert(n.clone(), a.view());
    }
    let out = ev.eval(&inputs).ok()?;
    if !out.loss().f64().is_finite() {
        return Some(format!("loss {}", out.loss()));
    }
    for (name, g) in out.grads() {
        if let Some(x) = g.iter().find(|x| !x.f64().is_finite()) {
            return Some(format!("d/d{name} {x}"));
        }
    }
    None
}

// ------------------------------------------------------------ calibration

/// Maps a pred value to the probability it claims, when it claims one.
fn to_prob(v: &crate::sema::Variable) -> Option<fn(f64) -> f64> {
    match (&v.dom, v.type_text.as_str()) {
        (Dom::Range(r), _) if *r == Range::PROB => Some(|u| u),
        (_, "logit") => Some(|u| 1.0 / (1.0 + (-u).exp())),
        _ => None,
    }
}

fn calibrated(cx: &Cx, p: &PredGradient, v: &crate::sema::Variable) -> Finding {
    let label =
        cx.c.data.iter().find(|d| {
            matches!(&d.dom, Dom::Labels(vs) if vs.len() == 2) && d.shape == Shape::Scalar
        });
    if cx.c.task == Task::Multiclass {
        return calibrated_multiclass(cx, p, v);
    }
    let Some(label) = label else {
        return Finding {
            property: "calibrated",
            verdict: "unknown".into(),
            holds: None,
            evidence: "no two-valued label to take expectations over".into(),
        };
    };
    let Dom::Labels(vs) = &label.dom else {
        unreachable!()
    };
    let (neg, pos) = (vs[0], vs[1]);
    let qs = [0.1, 0.25, 0.5, 0.75, 0.9];
    let n = 20;
    // Scenario: the other data at their first representative values.
    let scen = &cx.scen;
    let base = scen[0].clone();
    let mut rng = Rng::new(3);
    let mut base_rows = crate::grad::random_batch_sized(cx.c, n, cx.sizes.clone(), &mut rng);
    for (name, rows) in base_rows.values.iter_mut() {
        if *name != label.name {
            let first = base.values[name][0].clone();
            for r in rows.iter_mut() {
                *r = first.clone();
            }
        }
    }
    let grid_u = grid(&v.dom);
    let mut map: Vec<(f64, f64)> = Vec::new();
    for &q in &qs {
        let k = (q * n as f64).round() as usize;
        let mut b = base_rows.clone();
        for (i, r) in b
            .values
            .get_mut(&label.name)
            .expect("label")
            .iter_mut()
            .enumerate()
        {
            *r = vec![if i < k { pos } else { neg }];
        }
        let line = Line::axis(cx, p, b, true);
        let slopes: Vec<f64> = grid_u.iter().map(|u| line.slope(*u)).collect();
        let u_star = match (0..grid_u.len() - 1).find(|&i| slopes[i] < 0.0 && slopes[i + 1] >= 0.0)
        {
            Some(i) => {
                let (mut lo, mut hi) = (grid_u[i], grid_u[i + 1]);
                for _ in 0..80 {
                    let mid = 0.5 * (lo + hi);
                    if line.slope(mid) < 0.0 {
                        lo = mid;
                    } else {
                        hi = mid;
                    }
                }
                0.5 * (lo + hi)
            }
            None if slopes[grid_u.len() - 1] < 0.0 => f64::INFINITY,
            None if slopes[0] > 0.0 => f64::NEG_INFINITY,
            None => f64::NAN,
        };
        map.push((q, u_star));
    }
    let Some(prob) = to_prob(v) else {
        let ev: Vec<String> = map
            .iter()
            .map(|(q, u)| format!("q = {} → {} = {}", num(*q), p.pred, num(*u)))
            .collect();
        return Finding {
            property: "calibrated",
            verdict: "no".into(),
            holds: Some(false),
            evidence: format!(
                "{} is a score, not a probability: {}",
                p.pred,
                ev.join(", ")
            ),
        };
    };
    let pstar: Vec<(f64, f64)> = map
        .iter()
        .map(|(q, u)| {
            (
                *q,
                if u.is_infinite() {
                    if *u > 0.0 { 1.0 } else { 0.0 }
                } else {
                    prob(*u)
                },
            )
        })
        .collect();
    let calibrated = pstar.iter().all(|(q, ps)| (q - ps).abs() < 1e-4);
    let costs = threshold_text(cx, p, &pstar);
    if calibrated {
        return Finding {
            property: "calibrated",
            verdict: "yes".into(),
            holds: Some(true),
            evidence: format!(
                "the expected loss is minimised at p* = q for q in {{0.1, 0.25, 0.5, 0.75, 0.9}}{costs}"
            ),
        };
    }
    // A class weighting gives p* = w1 q / (w1 q + w0 (1 - q)): constant odds ratio.
    let ratios: Vec<f64> = pstar
        .iter()
        .map(|(q, ps)| ps / (1.0 - ps) / (q / (1.0 - q)))
        .collect();
    let r0 = ratios[0];
    let constant = r0.is_finite() && ratios.iter().all(|r| (r - r0).abs() <= 1e-3 * r0.abs());
    let table: Vec<String> = pstar
        .iter()
        .map(|(q, ps)| format!("{} → {}", num(*q), num(*ps)))
        .collect();
    let cond = data_text_except(cx, &base, &label.name);
    Finding {
        property: "calibrated",
        verdict: if constant {
            format!("no: p* = w₁q / (w₁q + w₀(1 − q)), w₁/w₀ = {}", num(r0))
        } else {
            "no".into()
        },
        holds: Some(false),
        evidence: format!(
            "q ↦ p*: {}{}{costs}",
            table.join(", "),
            if cond.is_empty() {
                String::new()
            } else {
                format!(" (at {cond})")
            }
        ),
    }
}

/// How hard the loss pulls on an easy example (the true class at
/// probability 0.9) relative to a hard one (0.1), against BCE, whose ratio
/// is 1/9 on logits and on probabilities alike. Focal loss's point is a
/// much smaller ratio.
fn easy_examples(cx: &Cx, p: &PredGradient, v: &crate::sema::Variable) -> Option<Finding> {
    let prob = to_prob(v)?;
    let is_logit = prob(0.0) == 0.5;
    let label =
        cx.c.data.iter().find(|d| {
            matches!(&d.dom, Dom::Labels(vs) if vs.len() == 2) && d.shape == Shape::Scalar
        })?;
    let Dom::Labels(vs) = &label.dom else {
        return None;
    };
    let at = |pt: f64, positive: bool| {
        let q = if positive { pt } else { 1.0 - pt };
        if is_logit { (q / (1.0 - q)).ln() } else { q }
    };
    let scen = &cx.scen;
    let mut parts = Vec::new();
    let mut ratios = Vec::new();
    for (positive, y) in [(true, vs[1]), (false, vs[0])] {
        let b = scen
            .iter()
            .find(|b| b.values[&label.name][0][0] == y)?
            .clone();
        let line = Line::axis(cx, p, b, false);
        let (easy, hard) = (
            line.slope(at(0.9, positive)).abs(),
            line.slope(at(0.1, positive)).abs(),
        );
        if !(easy.is_finite() && hard.is_finite()) || hard == 0.0 {
            return None;
        }
        ratios.push(easy / hard);
        parts.push(format!("{} = {}: {}", label.name, num(y), num(easy / hard)));
    }
    let r = (ratios[0] * ratios[1]).sqrt();
    let bce = 1.0 / 9.0;
    let verdict = if r < 0.8 * bce {
        "down-weighted"
    } else if r > 1.25 * bce {
        "up-weighted"
    } else {
        "as in BCE"
    };
    Some(Finding {
        property: "easy examples",
        verdict: verdict.into(),
        holds: None,
        evidence: format!(
            "|gradient| at p_t = 0.9 over |gradient| at p_t = 0.1 ({}; BCE: 0.1111)",
            parts.join(", ")
        ),
    })
}

fn data_text_except(cx: &Cx, b: &Batch, skip: &str) -> String {
    cx.c.data
        .iter()
        .filter(|v| v.name != skip && v.shape == Shape::Scalar)
        .map(|v| format!("{} = {}", v.name, num(b.values[&v.name][0][0])))
        .collect::<Vec<_>>()
        .join(", ")
}

/// With `cost fn = A, fp = B`: the true-probability threshold the costs
/// imply, and this loss's prediction at it (the threshold to use on its
/// outputs).
fn threshold_text(cx: &Cx, _p: &PredGradient, pstar: &[(f64, f64)]) -> String {
    let (Some(fn_), Some(fp)) = (cx.c.costs.get("fn"), cx.c.costs.get("fp")) else {
        return String::new();
    };
    let t = fp / (fp + fn_);
    // Interpolate p* at q = t in log-odds, where class weighting is linear.
    let logit = |x: f64| (x / (1.0 - x)).ln();
    let pts: Vec<(f64, f64)> = pstar.iter().map(|(q, p)| (logit(*q), logit(*p))).collect();
    let lt = logit(t);
    let (a, b) = if lt <= pts[0].0 {
        (pts[0], pts[1])
    } else {
        (pts[pts.len() - 2], pts[pts.len() - 1])
    };
    let (a, b) = pts
        .windows(2)
        .find(|w| lt >= w[0].0 && lt <= w[1].0)
        .map_or((a, b), |w| (w[0], w[1]));
    let y = a.1 + (b.1 - a.1) * (lt - a.0) / (b.0 - a.0);
    let p = 1.0 / (1.0 + (-y).exp());
    format!(
        "; costs fn = {}, fp = {} call for a positive when q > {}, where this loss predicts p ≈ {} (the threshold for its outputs)",
        num(*fn_),
        num(*fp),
        num(t),
        num(p)
    )
}

fn calibrated_multiclass(cx: &Cx, p: &PredGradient, v: &crate::sema::Variable) -> Finding {
    let Some(label) =
        cx.c.data
            .iter()
            .find(|d| matches!(d.dom, Dom::Class(_)) || matches!(d.dom, Dom::Onehot))
    else {
        return Finding {
            property: "calibrated",
            verdict: "unknown".into(),
            holds: None,
            evidence: "no class label to take expectations over".into(),
        };
    };
    if v.type_text.starts_with("prob") || !cx.pointwise {
        return Finding {
            property: "calibrated",
            verdict: "unknown".into(),
            holds: None,
            evidence: "only logit vectors of per-row losses are analysed".into(),
        };
    }
    let n = width(cx, v);
    let q: Vec<f64> = {
        let w: Vec<f64> = (0..n).map(|i| (n - i) as f64).collect();
        let t: f64 = w.iter().sum();
        w.into_iter().map(|x| x / t).collect()
    };
    // Rows: one per class, weighted by q; gradient descent on the shared z.
    let mut rng = Rng::new(8);
    let mut b = crate::grad::random_batch_sized(cx.c, n, cx.sizes.clone(), &mut rng);
    for (i, r) in b
        .values
        .get_mut(&label.name)
        .expect("label")
        .iter_mut()
        .enumerate()
    {
        *r = match label.dom {
            Dom::Onehot => (0..n).map(|k| (k == i) as u8 as f64).collect(),
            _ => vec![i as f64],
        };
    }
    let mut z = vec![0.0; n];
    let grad = |z: &[f64], b: &mut Batch| -> Vec<f64> {
        for r in b.values.get_mut(&p.pred).expect("pred").iter_mut() {
            *r = z.to_vec();
        }
        let mut gsum = vec![0.0; n];
        let bb = b.clone();
        for (row, qw) in q.iter().enumerate() {
            for (c, gs) in gsum.iter_mut().enumerate() {
                *gs += qw * cx.d.gradient_at(&bb, p, p.per_sample, row, Some(c)) * bb.rows as f64;
            }
        }
        gsum
    };
    for _ in 0..400 {
        let g = grad(&z, &mut b);
        for (zi, gi) in z.iter_mut().zip(&g) {
            *zi -= 2.0 * gi;
        }
    }
    let m = z.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    let e: Vec<f64> = z.iter().map(|x| (x - m).exp()).collect();
    let t: f64 = e.iter().sum();
    let ps: Vec<f64> = e.iter().map(|x| x / t).collect();
    let err = ps
        .iter()
        .zip(&q)
        .fold(0.0f64, |m, (a, b)| m.max((a - b).abs()));
    Finding {
        property: "calibrated",
        verdict: if err < 1e-3 {
            "yes".into()
        } else {
            "no".into()
        },
        holds: Some(err < 1e-3),
        evidence: format!(
            "for class probabilities q = {}, the expected loss is minimised at softmax({}) = {}",
            vec_text(&q),
            p.pred,
            vec_text(&ps)
        ),
    }
}

// ------------------------------------------------------------ estimand

fn estimand_of(
    cx: &Cx,
    p: &PredGradient,
    v: &crate::sema::Variable,
) -> (Finding, Finding, Option<Estimand>) {
    let unknown = |why: &str| {
        (
            Finding {
                property: "estimand",
                verdict: "unknown".into(),
                holds: None,
                evidence: why.into(),
            },
            Finding {
                property: "noise model",
                verdict: "unknown".into(),
                holds: None,
                evidence: why.into(),
            },
            None,
        )
    };
    if !cx.pointwise || v.shape != Shape::Scalar {
        return unknown("only scalar preds of per-row losses are analysed");
    }
    let Some(target) = cx.c.data.iter().find(|d| d.shape == Shape::Scalar) else {
        return unknown("no scalar target");
    };
    // Two skewed reference distributions (deterministic quantiles).
    let m = 101;
    let normal_q = |u: f64| {
        // Acklam-free: inverse normal by bisection on erf-free CDF.
        let cdf = |x: f64| 0.5 * (1.0 + erf(x / std::f64::consts::SQRT_2));
        let (mut lo, mut hi) = (-10.0, 10.0);
        for _ in 0..100 {
            let mid = 0.5 * (lo + hi);
            if cdf(mid) < u { lo = mid } else { hi = mid }
        }
        0.5 * (lo + hi)
    };
    let us: Vec<f64> = (0..m).map(|i| (i as f64 + 0.5) / m as f64).collect();
    let lognormal: Vec<f64> = us.iter().map(|u| (0.75 * normal_q(*u)).exp()).collect();
    let expo: Vec<f64> = us.iter().map(|u| -(1.0 - u).ln()).collect();
    // Into the target's domain: shifted to a positive range, or kept.
    let fit = |xs: &[f64]| -> Vec<f64> {
        match &target.dom {
            Dom::Range(r) if r.lo.is_finite() && r.hi.is_finite() => {
                let hi = xs.iter().copied().fold(0.0, f64::max);
                xs.iter()
                    .map(|x| r.lo + (r.hi - r.lo) * (0.05 + 0.9 * x / hi))
                    .collect()
            }
            Dom::Labels(vs) => {
                let (lo, hi) = (vs[0], vs[vs.len() - 1]);
                let top = xs.iter().copied().fold(0.0, f64::max);
                xs.iter().map(|x| lo + (hi - lo) * x / top).collect()
            }
            Dom::Range(r) if r.lo.is_finite() => xs.iter().map(|x| r.lo + 1.0 + x).collect(),
            _ => xs.iter().map(|x| 1.0 + x).collect(),
        }
    };
    let scen = &cx.scen;
    let mut rows_base = scen[0].clone();
    let mut results = Vec::new();
    let wide: Vec<f64> = us
        .iter()
        .map(|u| 4.0 * (1.5 * normal_q(*u)).exp())
        .collect();
    // The scaled copy: a quantile estimator keeps its level under scaling,
    // a loss with a built-in scale (Huber's delta) does not.
    for xs in [fit(&lognormal), fit(&expo), fit(&wide)] {
        let mut rng = Rng::new(2);
        let mut b = crate::grad::random_batch_sized(cx.c, xs.len(), cx.sizes.clone(), &mut rng);
        for (name, rows) in b.values.iter_mut() {
            if *name == target.name {
                for (r, x) in rows.iter_mut().zip(&xs) {
                    *r = vec![*x];
                }
            } else if *name != p.pred {
                let first = rows_base.values[name][0].clone();
                for r in rows.iter_mut() {
                    *r = first.clone();
                }
            }
        }
        let line = Line::axis(cx, p, b, true);
        let (lo, hi) = (
            xs.iter().copied().fold(f64::INFINITY, f64::min),
            xs.iter().copied().fold(f64::NEG_INFINITY, f64::max),
        );
        // The pred lives in the target's units unless the spec transforms
        // the target (log); search the pred's own domain broadly.
        let grid_u: Vec<f64> = {
            let mut g = grid(&v.dom);
            g.extend((0..=40).map(|i| lo + (hi - lo) * i as f64 / 40.0));
            g.retain(|u| match &v.dom {
                Dom::Range(r) => dom_admits(r, *u),
                _ => true,
            });
            g.sort_by(f64::total_cmp);
            g.dedup();
            g
        };
        let slopes: Vec<f64> = grid_u.iter().map(|u| line.slope(*u)).collect();
        let Some(i) = (0..grid_u.len() - 1).find(|&i| slopes[i] < 0.0 && slopes[i + 1] >= 0.0)
        else {
            return unknown("the expected loss has no interior minimiser");
        };
        let (mut a, mut c) = (grid_u[i], grid_u[i + 1]);
        for _ in 0..50 {
            let mid = 0.5 * (a + c);
            if line.slope(mid) < 0.0 {
                a = mid
            } else {
                c = mid
            }
        }
        let u = 0.5 * (a + c);
        let mean = xs.iter().sum::<f64>() / xs.len() as f64;
        let median = xs[xs.len() / 2];
        let tau = xs.iter().filter(|x| **x <= u).count() as f64 / xs.len() as f64;
        results.push((u, mean, median, tau, hi - lo));
    }
    let _ = &mut rows_base;
    let close = |a: f64, b: f64, spread: f64| (a - b).abs() <= 2e-3 * spread;
    let is_mean = results
        .iter()
        .all(|(u, mean, _, _, s)| close(*u, *mean, *s));
    let is_median = results
        .iter()
        .all(|(u, _, med, _, s)| close(*u, *med, *s) || (*u - med).abs() <= 0.01 * s);
    let taus: Vec<f64> = results.iter().map(|r| r.3).collect();
    let tau_same = taus.iter().all(|t| (t - taus[0]).abs() <= 0.015);
    let (verdict, est) = if is_mean {
        ("mean".to_string(), Some(Estimand::Mean))
    } else if is_median {
        ("median".to_string(), Some(Estimand::Median))
    } else if tau_same && taus.iter().all(|t| *t > 0.02 && *t < 0.98) {
        let t = (taus.iter().sum::<f64>() / taus.len() as f64 * 100.0).round() / 100.0;
        (format!("quantile({})", num(t)), Some(Estimand::Quantile(t)))
    } else {
        ("other".to_string(), None)
    };
    let ev: Vec<String> = results
        .iter()
        .zip(["log-normal", "exponential", "log-normal x4, wider"])
        .map(|((u, mean, med, tau, _), name)| {
            format!(
                "{name}: minimiser {}, mean {}, median {}, share below {}",
                num(*u),
                num(*mean),
                num(*med),
                num(*tau)
            )
        })
        .collect();
    let noise = match &est {
        Some(Estimand::Mean) => (
            "Gaussian",
            "the loss is the negative log-likelihood of a Gaussian when it is quadratic in the residual",
        ),
        Some(Estimand::Median) => (
            "Laplace",
            "an absolute residual is the negative log-likelihood of a Laplace distribution",
        ),
        Some(Estimand::Quantile(_)) => (
            "asymmetric Laplace",
            "the pinball loss is the negative log-likelihood of an asymmetric Laplace distribution",
        ),
        None => (
            "none of Gaussian, Laplace, asymmetric Laplace",
            "the minimiser is neither the mean, the median nor a fixed quantile",
        ),
    };
    // Gaussian only if the loss is quadratic, Laplace only if piecewise linear.
    let shape_ok = match &est {
        Some(Estimand::Mean) => quadratic_in_pred(cx, p),
        _ => true,
    };
    (
        Finding {
            property: "estimand",
            verdict,
            holds: None,
            evidence: ev.join("; "),
        },
        Finding {
            property: "noise model",
            verdict: if shape_ok {
                noise.0.into()
            } else {
                "none (mean, but not quadratic)".into()
            },
            holds: None,
            evidence: noise.1.into(),
        },
        est,
    )
}

/// Whether the per-row loss has a constant second derivative in the pred.
fn quadratic_in_pred(cx: &Cx, p: &PredGradient) -> bool {
    let scen = &cx.scen;
    let line = Line::axis(cx, p, scen[0].clone(), false);
    let s: Vec<f64> = [-5.0, -1.0, 0.0, 1.0, 5.0, 50.0]
        .iter()
        .map(|u| line.slope(*u))
        .collect();
    let k = (s[3] - s[2]) / 1.0;
    [(-5.0, s[0]), (-1.0, s[1]), (5.0, s[4]), (50.0, s[5])]
        .iter()
        .all(|(u, g)| (g - (s[2] + k * u)).abs() <= 1e-6 * g.abs().max(1.0))
}

/// The error function (Abramowitz–Stegun 7.1.26 is too coarse for
/// quantiles; this is the series/continued-fraction pair, to ~1e-14).
fn erf(x: f64) -> f64 {
    if x.abs() < 2.5 {
        // Taylor series.
        let mut sum = x;
        let mut term = x;
        let x2 = x * x;
        for n in 1..200 {
            term *= -x2 / n as f64;
            let t = term / (2 * n + 1) as f64;
            sum += t;
            if t.abs() < 1e-17 * sum.abs() {
                break;
            }
        }
        2.0 / std::f64::consts::PI.sqrt() * sum
    } else {
        // Continued fraction for erfc.
        let ax = x.abs();
        let mut f = 0.0;
        for n in (1..60).rev() {
            f = n as f64 / 2.0 / (ax + f);
        }
        let erfc = (-ax * ax).exp() / std::f64::consts::PI.sqrt() / (ax + f);
        x.signum() * (1.0 - erfc)
    }
}

// ------------------------------------------------------------ expect

/// One `expect` the analysis contradicts (or cannot judge).
#[derive(Clone, Debug, PartialEq)]
pub struct ExpectFailure {
    /// The statement.
    pub span: crate::span::Span,
    /// The pred it was judged for.
    pub pred: String,
    /// What was expected, as written (`convex`, `not calibrated`, ...).
    pub expected: String,
    /// What the analysis found.
    pub verdict: String,
    /// The evidence.
    pub evidence: String,
    /// Whether the analysis could not judge (a warning, not an error).
    pub undecided: bool,
}

/// Checks every `expect` against the analysis.
pub fn check_expects(c: &Checked, a: &Analysis) -> Vec<ExpectFailure> {
    let mut out = Vec::new();
    for e in &c.expects {
        for p in &a.preds {
            if e.target.as_ref().is_some_and(|t| *t != p.pred) {
                continue;
            }
            let (name, expected) = match &e.property {
                Property::Differentiable => ("differentiable", "differentiable".to_string()),
                Property::Convex => ("convex", "convex".into()),
                Property::BoundedGradient => {
                    ("gradient for large errors", "bounded_gradient".into())
                }
                Property::Finite => ("finite", "finite".into()),
                Property::Calibrated => ("calibrated", "calibrated".into()),
                Property::Estimand(est) => {
                    let want = est_text(est);
                    let Some(f) = p.finding("estimand") else {
                        continue;
                    };
                    let ok = match (&p.estimand, est) {
                        (Some(Estimand::Quantile(a)), Estimand::Quantile(b)) => {
                            (a - b).abs() <= 0.02
                        }
                        (Some(x), y) => x == y,
                        (None, _) => false,
                    } != e.negated;
                    if !ok {
                        out.push(ExpectFailure {
                            span: e.span,
                            pred: p.pred.clone(),
                            expected: format!(
                                "{}estimand = {want}",
                                if e.negated { "not " } else { "" }
                            ),
                            verdict: f.verdict.clone(),
                            evidence: f.evidence.clone(),
                            undecided: p.estimand.is_none() && f.verdict == "unknown",
                        });
                    }
                    continue;
                }
            };
            let Some(f) = p.finding(name) else { continue };
            let expected = if e.negated {
                format!("not {expected}")
            } else {
                expected
            };
            match f.holds {
                Some(h) if h != e.negated => {}
                Some(_) => out.push(ExpectFailure {
                    span: e.span,
                    pred: p.pred.clone(),
                    expected,
                    verdict: f.verdict.clone(),
                    evidence: f.evidence.clone(),
                    undecided: false,
                }),
                None => out.push(ExpectFailure {
                    span: e.span,
                    pred: p.pred.clone(),
                    expected,
                    verdict: f.verdict.clone(),
                    evidence: f.evidence.clone(),
                    undecided: true,
                }),
            }
        }
    }
    out
}

fn est_text(e: &Estimand) -> String {
    match e {
        Estimand::Mean => "mean".into(),
        Estimand::Median => "median".into(),
        Estimand::Quantile(t) => format!("quantile({})", num(*t)),
    }
}

/// The diagnostics for failed expectations: an error (E0080) for each the
/// analysis contradicts, a warning (W0080) for each it cannot judge.
pub fn expect_diagnostics(fails: &[ExpectFailure]) -> Vec<crate::diag::Diagnostic> {
    use crate::diag::Diagnostic;
    fails
        .iter()
        .map(|f| {
            if f.undecided {
                Diagnostic::warning(
                    "W0080",
                    f.span,
                    format!(
                        "cannot verify `expect {}` for pred `{}`",
                        f.expected, f.pred
                    ),
                )
                .with_label(format!("the analysis says: {}", f.verdict))
                .with_hint(f.evidence.clone())
            } else {
                Diagnostic::error(
                    "E0080",
                    f.span,
                    format!(
                        "`expect {}` does not hold for pred `{}`",
                        f.expected, f.pred
                    ),
                )
                .with_label(format!("the analysis finds: {}", f.verdict))
                .with_hint(format!("evidence: {}", f.evidence))
                .with_hint(
                    "fix the loss, or state what it does (`lossc analyze` prints the full table)",
                )
            }
        })
        .collect()
}
