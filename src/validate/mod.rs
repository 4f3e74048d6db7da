//! Step 4, validate: train a model with each candidate loss through its
//! compiled gradient and measure the task's metrics on held-out rows, side
//! by side, so a custom loss is judged by the metric the business cares
//! about rather than by its own value.
//!
//! The pipeline, per candidate: read the spec's `data` columns (checked
//! against their declared domains, every bad cell located), standardise the
//! features, build one model per `pred` (a linear map or an MLP, then a link
//! into the pred's domain), start it at the best constant, minimise the
//! spec's objective with L-BFGS or Adam — the gradient with respect to the
//! parameters is the compiled evaluator's gradient with respect to the pred,
//! carried back through the link and the model by the chain rule — then
//! predict the test rows and score them. Every candidate sees the same
//! split; everything is seeded.

pub mod metrics;
pub mod model;
pub mod optim;
pub mod report;
pub mod scenario;
pub mod table;

use crate::Loss;
use crate::ast::{ExprKind, Reducer, StmtKind};
use crate::exec::{EvalError, Evaluator, Inputs, Output};
use crate::grad::Rng;
use crate::sema::Task;
use crate::sema::types::{Dom, Shape, Size};
use model::{Link, ModelKind, Net};
use ndarray::{Array1, Array2, ArrayD, Axis};
use optim::{Budget, Fit, Objective, Optimizer};
use std::collections::BTreeMap;
pub use table::Table;

/// Why a validation could not run.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ValidateError {
    /// A bad file or cell: `at` is `file:line:col` (CSV) or `file: array, row`.
    #[error("{at}: {reason}")]
    Data {
        /// Where.
        at: String,
        /// What is wrong.
        reason: String,
        /// How to fix it.
        hint: Option<String>,
    },
    /// The options do not fit the spec or the data.
    #[error("{reason}")]
    Setup {
        /// What is wrong.
        reason: String,
        /// How to fix it.
        hint: Option<String>,
    },
    /// The compiled evaluator refused a value while training (a spec whose
    /// objective leaves its domain for the model's predictions).
    #[error("training `{spec}`: {source}")]
    Eval {
        /// The candidate.
        spec: String,
        /// The evaluator's reason.
        source: Box<EvalError>,
    },
}

impl ValidateError {
    /// The hint, when there is one.
    pub fn hint(&self) -> Option<&str> {
        match self {
            ValidateError::Data { hint, .. } | ValidateError::Setup { hint, .. } => hint.as_deref(),
            ValidateError::Eval { .. } => None,
        }
    }

    fn setup(reason: impl Into<String>, hint: Option<String>) -> ValidateError {
        ValidateError::Setup {
            reason: reason.into(),
            hint,
        }
    }
}

/// An embedding's width when no data binds it and --size does not give it.
pub const DEFAULT_EMBEDDING: usize = 16;

/// A loss to train with and the name it has in the table.
#[derive(Clone, Debug)]
pub struct Candidate {
    /// The row label (the CLI uses the spec's `loss` name and any overridden params).
    pub label: String,
    /// The checked spec.
    pub loss: Loss,
}

/// How to train and score.
#[derive(Clone, Debug)]
pub struct Options {
    /// Feature columns every pred's model reads.
    pub features: Vec<String>,
    /// Feature columns for one pred (two-tower embedding models).
    pub pred_features: BTreeMap<String, Vec<String>>,
    /// A spec input's name -> the column that holds it.
    pub map: BTreeMap<String, String>,
    /// The model.
    pub model: ModelKind,
    /// The optimiser.
    pub optimizer: Optimizer,
    /// Most epochs (an L-BFGS epoch is one evaluation on every training row).
    pub epochs: usize,
    /// Relative improvement below which training has converged.
    pub tol: f64,
    /// L2 penalty on the weights (not the biases): `l2/2 * |W|^2`.
    pub l2: f64,
    /// Share of rows (or of ranking queries) held out for testing.
    pub test_fraction: f64,
    /// Seeds the split, the initial weights and the mini-batches.
    pub seed: u64,
    /// The `data` input the metrics score against (default: by task).
    pub target: Option<String>,
    /// The column grouping ranking rows into queries.
    pub group: Option<String>,
    /// Binary: also report recall and misses on rows where `COL >= VALUE`.
    pub slice: Option<(String, f64)>,
    /// Sizes no data binds (an embedding's `D`).
    pub sizes: BTreeMap<String, usize>,
    /// Draw a progress bar on standard error.
    pub progress: bool,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            features: Vec::new(),
            pred_features: BTreeMap::new(),
            map: BTreeMap::new(),
            model: ModelKind::Linear,
            optimizer: Optimizer::Lbfgs { memory: 10 },
            epochs: 300,
            tol: 1e-9,
            l2: 1e-4,
            test_fraction: 0.3,
            seed: 0,
            target: None,
            group: None,
            slice: None,
            sizes: BTreeMap::new(),
            progress: false,
        }
    }
}

/// One candidate's results.
#[derive(Clone, Debug)]
pub struct Outcome {
    /// The row label.
    pub label: String,
    /// Metric values in the order of [`Validation::columns`].
    pub values: Vec<f64>,
    /// The training curve and stopping reason.
    pub fit: Fit,
    /// Binary tasks: the test set's precision–recall curve and reliability diagram.
    pub curves: Option<BinaryCurves>,
}

/// Curves of a binary classifier on the test rows.
#[derive(Clone, Debug)]
pub struct BinaryCurves {
    /// (recall, precision) points.
    pub pr: Vec<(f64, f64)>,
    /// (mean predicted, observed fraction, count) per bin.
    pub reliability: Vec<(f64, f64, usize)>,
}

/// The comparison: one row per candidate, the task's metrics as columns.
#[derive(Clone, Debug)]
pub struct Validation {
    /// The task every candidate shares.
    pub task: Task,
    /// The data's origin.
    pub data: String,
    /// Training and test rows.
    pub train_rows: usize,
    /// Test rows.
    pub test_rows: usize,
    /// Metric names.
    pub columns: Vec<String>,
    /// One per candidate, in the order given.
    pub outcomes: Vec<Outcome>,
    /// Facts a reader needs to interpret the numbers (thresholds, slices).
    pub notes: Vec<String>,
    /// The options used.
    pub model: ModelKind,
    /// The optimiser used.
    pub optimizer: Optimizer,
    /// The seed used.
    pub seed: u64,
    /// A scenario's one-line lesson, measured.
    pub conclusion: Option<String>,
}

impl Validation {
    /// The value of `column` for the candidate labelled `label`.
    pub fn value(&self, label: &str, column: &str) -> Option<f64> {
        let c = self.columns.iter().position(|c| c == column)?;
        let o = self.outcomes.iter().find(|o| o.label == label)?;
        o.values.get(c).copied()
    }
}

/// Trains each candidate on the same split of `table` and scores it.
pub fn validate(
    cands: &[Candidate],
    table: &Table,
    opts: &Options,
) -> Result<Validation, ValidateError> {
    let first = cands
        .first()
        .ok_or_else(|| ValidateError::setup("no spec to validate", None))?;
    let task = first.loss.checked().task;
    for c in &cands[1..] {
        let t = c.loss.checked().task;
        if t != task {
            return Err(ValidateError::setup(
                format!(
                    "`{}` is a {} loss, but `{}` is {}: candidates must share a task to share a table",
                    c.label,
                    t.name(),
                    first.label,
                    task.name()
                ),
                None,
            ));
        }
    }
    if opts.features.is_empty() && opts.pred_features.is_empty() {
        return Err(ValidateError::setup(
            "no features: the model needs columns to predict from",
            Some("name them with --features COL,COL,...".into()),
        ));
    }
    let finite = |v: f64| v >= 0.0 && v.is_finite();
    if !(finite(opts.l2) && finite(opts.tol)) {
        return Err(ValidateError::setup(
            format!(
                "--l2 ({}) and --tol ({}) must be finite and not negative",
                opts.l2, opts.tol
            ),
            None,
        ));
    }
    if !(opts.test_fraction > 0.0 && opts.test_fraction < 1.0) {
        return Err(ValidateError::setup(
            format!(
                "the test fraction must be between 0 and 1, not {}",
                opts.test_fraction
            ),
            None,
        ));
    }
    let prepared = cands
        .iter()
        .map(|c| prepare(c, table, opts))
        .collect::<Result<Vec<_>, _>>()?;
    let split = split(first, table, opts, task)?;
    // Decision costs belong to the problem, not to one loss: the first
    // candidate that declares them prices every candidate's decisions.
    let cost = cands.iter().find_map(|c| {
        let k = &c.loss.checked().costs;
        Some((*k.get("fn")?, *k.get("fp")?))
    });
    let mut runs = Vec::new();
    let mut columns: Vec<String> = Vec::new();
    let mut notes: Vec<String> = Vec::new();
    for (c, prep) in cands.iter().zip(prepared) {
        let (cols, values, fit, curves, ns) = run(c, prep, table, opts, &split, cost)?;
        for col in &cols {
            if !columns.contains(col) {
                columns.push(col.clone());
            }
        }
        for n in ns {
            if !notes.contains(&n) {
                notes.push(n);
            }
        }
        runs.push((c.label.clone(), cols, values, fit, curves));
    }
    let outcomes = runs
        .into_iter()
        .map(|(label, cols, values, fit, curves)| Outcome {
            label,
            values: columns
                .iter()
                .map(|c| {
                    cols.iter()
                        .position(|x| x == c)
                        .map_or(f64::NAN, |k| values[k])
                })
                .collect(),
            fit,
            curves,
        })
        .collect();
    Ok(Validation {
        task,
        data: table.origin.clone(),
        train_rows: split.train.len(),
        test_rows: split.test.len(),
        columns,
        outcomes,
        notes,
        model: opts.model,
        optimizer: opts.optimizer,
        seed: opts.seed,
        conclusion: None,
    })
}

/// Training and test row indices.
#[derive(Clone, Debug)]
struct Split {
    train: Vec<usize>,
    test: Vec<usize>,
}

fn column_name<'a>(opts: &'a Options, name: &'a str) -> &'a str {
    opts.map.get(name).map_or(name, String::as_str)
}

/// The `data` input the metrics score against.
pub(crate) fn target_var<'c>(
    loss: &'c Loss,
    opts: &Options,
    task: Task,
) -> Result<Option<&'c crate::sema::Variable>, ValidateError> {
    let c = loss.checked();
    if let Some(t) = &opts.target {
        let d = c.data.iter().find(|d| &d.name == t).ok_or_else(|| {
            ValidateError::setup(
                format!("--target `{t}` is not a data input of `{}`", c.name),
                Some(format!(
                    "its data inputs are: {}",
                    names(c.data.iter().map(|d| d.name.as_str()))
                )),
            )
        })?;
        // The metrics read the target by its type: it must be the kind the task scores.
        let fits = match task {
            Task::Binary | Task::Embedding => matches!(&d.dom, Dom::Labels(v) if v.len() == 2),
            Task::Multiclass => matches!(d.dom, Dom::Class(_) | Dom::Onehot | Dom::Probs),
            Task::Multilabel => matches!(d.dom, Dom::Multihot),
            Task::Regression | Task::Ranking => {
                d.shape == Shape::Scalar && matches!(d.dom, Dom::Range(_))
            }
        };
        if !fits {
            return Err(ValidateError::setup(
                format!(
                    "--target `{t}` is `{}`, which a {} task cannot score",
                    d.type_text,
                    task.name()
                ),
                Some(
                    match task {
                        Task::Binary | Task::Embedding => {
                            "a binary target is a `label` with two values"
                        }
                        Task::Multiclass => "a multiclass target is a `class`, `onehot` or `probs`",
                        Task::Multilabel => "a multilabel target is a `multihot`",
                        Task::Regression | Task::Ranking => {
                            "the target is a scalar `real` (an interval)"
                        }
                    }
                    .into(),
                ),
            ));
        }
        return Ok(Some(d));
    }
    let pick = |f: &dyn Fn(&Dom) -> bool| c.data.iter().find(|d| f(&d.dom));
    let found = match task {
        Task::Binary => pick(&|d| matches!(d, Dom::Labels(v) if v.len() == 2)),
        Task::Multiclass => pick(&|d| matches!(d, Dom::Class(_) | Dom::Onehot | Dom::Probs)),
        Task::Multilabel => pick(&|d| matches!(d, Dom::Multihot)),
        Task::Regression | Task::Ranking => c.data.iter().find(|d| {
            let group = match &opts.group {
                Some(g) => d.name == *g,
                None => task == Task::Ranking && GROUP_NAMES.contains(&d.name.as_str()),
            };
            d.shape == Shape::Scalar && matches!(d.dom, Dom::Range(_)) && !group
        }),
        Task::Embedding => return Ok(pick(&|d| matches!(d, Dom::Labels(v) if v.len() == 2))),
    };
    found.map(Some).ok_or_else(|| {
        ValidateError::setup(
            format!(
                "`{}` declares no data input that can be the {} target",
                c.name,
                task.name()
            ),
            Some("name it with --target NAME".into()),
        )
    })
}

fn names<'a>(it: impl Iterator<Item = &'a str>) -> String {
    let v: Vec<&str> = it.collect();
    if v.is_empty() {
        "none".into()
    } else {
        v.join(", ")
    }
}

/// Columns taken as ranking query ids when --group does not name one.
const GROUP_NAMES: [&str; 3] = ["query", "qid", "group"];

fn group_column(table: &Table, opts: &Options) -> Result<String, ValidateError> {
    if let Some(g) = &opts.group {
        return Ok(g.clone());
    }
    let names = table.names();
    GROUP_NAMES
        .iter()
        .find(|g| names.iter().any(|n| n == *g))
        .map(|g| g.to_string())
        .ok_or_else(|| {
            ValidateError::setup(
                "a ranking task needs a column grouping rows into queries",
                Some("name it with --group COL (columns `query`, `qid` or `group` are found by themselves)".into()),
            )
        })
}

fn shuffle(v: &mut [usize], rng: &mut Rng) {
    for i in (1..v.len()).rev() {
        let j = (rng.next_u64() % (i as u64 + 1)) as usize;
        v.swap(i, j);
    }
}

/// A seeded split: stratified by class for classification, by query for
/// ranking (a query is never split), plain otherwise.
fn split(
    first: &Candidate,
    table: &Table,
    opts: &Options,
    task: Task,
) -> Result<Split, ValidateError> {
    let n = table.rows();
    let mut rng = Rng::new(opts.seed);
    let frac = opts.test_fraction;
    let mut strata: BTreeMap<i64, Vec<usize>> = BTreeMap::new();
    let mut by_group = false;
    let mut label_col = None;
    match task {
        Task::Binary | Task::Multiclass => {
            if let Some(t) = target_var(&first.loss, opts, task)? {
                let col =
                    table.column(column_name(opts, &t.name), &format!("data `{}`", t.name))?;
                for (r, row) in col.values.rows().into_iter().enumerate() {
                    let k = if row.len() == 1 {
                        row[0]
                    } else {
                        row.iter()
                            .enumerate()
                            .fold(
                                (0, f64::NEG_INFINITY),
                                |a, (k, &v)| if v > a.1 { (k, v) } else { a },
                            )
                            .0 as f64
                    };
                    strata.entry((k * 1e6).round() as i64).or_default().push(r);
                }
                label_col = Some(col);
            }
        }
        Task::Ranking => {
            let g = group_column(table, opts)?;
            let col = table.column(&g, "query groups")?;
            for (r, &v) in col.values.column(0).iter().enumerate() {
                strata.entry((v * 1e6).round() as i64).or_default().push(r);
            }
            by_group = true;
        }
        _ => {}
    }
    if n < 2 {
        return Err(ValidateError::Data {
            at: table.origin.clone(),
            reason: format!("{n} rows: too few to split into training and test rows"),
            hint: None,
        });
    }
    let (mut train, mut test) = (Vec::new(), Vec::new());
    if by_group {
        let mut groups: Vec<Vec<usize>> = strata.into_values().collect();
        if groups.len() < 2 {
            return Err(ValidateError::Data {
                at: table.origin.clone(),
                reason: format!(
                    "{} query group(s): need at least 2 to hold whole queries out",
                    groups.len()
                ),
                hint: None,
            });
        }
        let mut order: Vec<usize> = (0..groups.len()).collect();
        shuffle(&mut order, &mut rng);
        let k = ((groups.len() as f64 * frac).round() as usize).clamp(1, groups.len() - 1);
        for (pos, &gi) in order.iter().enumerate() {
            let rows = std::mem::take(&mut groups[gi]);
            if pos < k {
                test.extend(rows)
            } else {
                train.extend(rows)
            }
        }
    } else if strata.is_empty() {
        let mut all: Vec<usize> = (0..n).collect();
        shuffle(&mut all, &mut rng);
        let k = ((n as f64 * frac).round() as usize).clamp(1, n - 1);
        test.extend_from_slice(&all[..k]);
        train.extend_from_slice(&all[k..]);
    } else {
        for (key, mut rows) in strata {
            if rows.len() < 2 {
                let col = label_col
                    .as_ref()
                    .expect("strata come from the label column");
                return Err(ValidateError::Data {
                    at: col.locate(rows[0], 0),
                    reason: format!(
                        "class {} has {} row{}: too few for a stratified split (one to train on, one to test)",
                        crate::analyze::num(key as f64 / 1e6),
                        rows.len(),
                        if rows.len() == 1 { "" } else { "s" }
                    ),
                    hint: Some("add examples of this class or drop them".into()),
                });
            }
            shuffle(&mut rows, &mut rng);
            let k = ((rows.len() as f64 * frac).round() as usize).clamp(1, rows.len() - 1);
            test.extend_from_slice(&rows[..k]);
            train.extend_from_slice(&rows[k..]);
        }
    }
    train.sort_unstable();
    test.sort_unstable();
    Ok(Split { train, test })
}

/// Whether the spec turns its scores into probabilities with a softmax
/// (`softmax`, `cce`, `cce_logits`, `logsumexp`): its multilabel predictions
/// are then read through a softmax too, which is the lesson of the
/// `multilabel` scenario.
fn uses_softmax(loss: &Loss) -> bool {
    calls(loss, &["softmax", "cce", "cce_logits", "logsumexp"], true)
}

/// Whether the spec compares embeddings by distance or by cosine.
fn similarity(loss: &Loss) -> metrics::Similarity {
    if calls(loss, &["dist", "norm", "contrastive", "triplet"], false) {
        metrics::Similarity::Distance
    } else if calls(loss, &["cosine"], false) {
        metrics::Similarity::Cosine
    } else {
        metrics::Similarity::Dot
    }
}

fn calls(loss: &Loss, fns: &[&str], feature_logsumexp: bool) -> bool {
    let mut found = false;
    for stmt in &loss.checked().spec.stmts {
        let e = match &stmt.kind {
            StmtKind::Let(_, e) | StmtKind::Minimize(e) => e,
            StmtKind::Def(d) => &d.body,
            _ => continue,
        };
        crate::sema::walk(e, &mut |e| match &e.kind {
            ExprKind::Call(f, _) if fns.contains(&f.name.as_str()) => found = true,
            ExprKind::Reduce {
                op: Reducer::LogSumExp,
                body,
                ..
            } if feature_logsumexp => {
                // A feature reduction (over a vector's components), not a batch one.
                let mut batch = false;
                crate::sema::walk(body, &mut |b| batch |= matches!(b.kind, ExprKind::At(..)));
                found |= !batch;
            }
            _ => {}
        });
    }
    found
}

/// A pred's link from its declared domain.
fn link_for(dom: &Dom, shape: &Shape) -> Link {
    match (dom, shape) {
        (Dom::Probs, _) => Link::Softmax,
        (Dom::Range(r), _) => match (r.lo.is_finite(), r.hi.is_finite()) {
            (true, true) => Link::Interval { lo: r.lo, hi: r.hi },
            (true, false) => Link::Above(r.lo),
            (false, true) => Link::Below(r.hi),
            (false, false) => Link::Identity,
        },
        _ => Link::Identity,
    }
}

/// Keeps a linked pred strictly inside an open domain, where a sigmoid or
/// softplus rounds onto the edge in floating point.
fn clamp_inside(link: Link, p: &mut Array2<f64>) {
    match link {
        Link::Interval { lo, hi } => {
            let e = 1e-12 * (hi - lo);
            p.mapv_inplace(|v| v.clamp(lo + e, hi - e));
        }
        Link::Above(lo) => p.mapv_inplace(|v| v.max(lo + 1e-300_f64.max(lo.abs() * 1e-15))),
        Link::Below(hi) => p.mapv_inplace(|v| v.min(hi - 1e-300_f64.max(hi.abs() * 1e-15))),
        Link::Identity | Link::Softmax => {}
    }
}

/// One pred: its model, link and features.
struct PredModel {
    name: String,
    scalar: bool,
    net: Net,
    link: Link,
    train_x: Array2<f64>,
    test_x: Array2<f64>,
}

/// The objective on the training rows as a function of the parameters.
struct Problem<'a> {
    label: &'a str,
    eval: Evaluator<f64>,
    data: &'a [(String, ArrayD<f64>)],
    preds: &'a [PredModel],
    l2: f64,
    out: Option<Output<f64>>,
    rows: usize,
}

impl Problem<'_> {
    /// The objective and its gradient with respect to each pred's raw
    /// output, for raw outputs `u` (one per pred) on `rows` (all when None);
    /// `replace` swaps one data input's values (for the target inversion).
    fn at(
        &mut self,
        u: &[Array2<f64>],
        rows: Option<&[usize]>,
        replace: Option<(&str, &ArrayD<f64>)>,
    ) -> Result<(f64, Vec<Array2<f64>>), ValidateError> {
        let sub: Vec<(&str, ArrayD<f64>)>;
        let data: Vec<(&str, ndarray::ArrayViewD<f64>)> = match rows {
            Some(r) => {
                sub = self
                    .data
                    .iter()
                    .map(|(n, a)| (n.as_str(), a.select(Axis(0), r)))
                    .collect();
                sub.iter().map(|(n, a)| (*n, a.view())).collect()
            }
            None => self
                .data
                .iter()
                .map(|(n, a)| (n.as_str(), a.view()))
                .collect(),
        };
        let mut ps = Vec::with_capacity(u.len());
        for (pm, u) in self.preds.iter().zip(u) {
            let mut p = pm.link.apply(u);
            clamp_inside(pm.link, &mut p);
            ps.push(p);
        }
        let mut inputs = Inputs::new();
        for (n, a) in &data {
            inputs.insert(*n, a.clone());
        }
        if let Some((n, a)) = replace {
            inputs.insert(n, a.view());
        }
        for (pm, p) in self.preds.iter().zip(&ps) {
            let v = if pm.scalar {
                p.column(0).into_dyn()
            } else {
                p.view().into_dyn()
            };
            inputs.insert(pm.name.as_str(), v);
        }
        let label = self.label;
        let wrap = |source| ValidateError::Eval {
            spec: label.to_string(),
            source: Box::new(source),
        };
        match &mut self.out {
            Some(out) => self.eval.eval_into(&inputs, out).map_err(wrap)?,
            None => self.out = Some(self.eval.eval(&inputs).map_err(wrap)?),
        }
        let out = self.out.as_ref().expect("just evaluated");
        let mut dus = Vec::with_capacity(u.len());
        for ((pm, u), p) in self.preds.iter().zip(u).zip(&ps) {
            let g = out.grad(&pm.name);
            let g = g
                .to_shape((u.nrows(), u.ncols()))
                .expect("a pred's gradient has the pred's shape");
            dus.push(pm.link.back(u, p, g.view()));
        }
        Ok((out.loss(), dus))
    }
}

impl Objective for Problem<'_> {
    fn rows(&self) -> usize {
        self.rows
    }

    fn eval(
        &mut self,
        theta: &[f64],
        grad: &mut [f64],
        rows: Option<&[usize]>,
    ) -> Result<f64, ValidateError> {
        let preds = self.preds;
        let xs: Vec<ndarray::CowArray<f64, ndarray::Ix2>> = preds
            .iter()
            .map(|pm| match rows {
                Some(r) => pm.train_x.select(Axis(0), r).into(),
                None => pm.train_x.view().into(),
            })
            .collect();
        let mut us = Vec::with_capacity(preds.len());
        let mut caches = Vec::with_capacity(preds.len());
        for (pm, x) in preds.iter().zip(&xs) {
            let (u, c) = pm.net.forward(theta, x.view());
            us.push(u);
            caches.push(c);
        }
        let (mut f, dus) = self.at(&us, rows, None)?;
        grad.fill(0.0);
        for (((pm, x), c), du) in preds.iter().zip(&xs).zip(&caches).zip(&dus) {
            pm.net.backward(theta, x.view(), c, du.view(), grad);
            if self.l2 > 0.0 {
                for k in 0..pm.net.len() {
                    if pm.net.is_weight(k) {
                        let w = theta[pm.net.start + k];
                        f += 0.5 * self.l2 * w * w;
                        grad[pm.net.start + k] += self.l2 * w;
                    }
                }
            }
        }
        Ok(f)
    }
}

/// A per-row function evaluated on a whole column of arguments at once.
type RowFn<'f> = dyn FnMut(&[f64]) -> Result<Vec<f64>, ValidateError> + 'f;

/// The objective `lossc validate` minimises for one spec and a linear model
/// per pred on given features, as a function of the flat parameter vector:
/// for programs and benchmarks that drive their own training loop. Offsets
/// start at zero and the features are used as given (not standardised).
pub struct Training {
    label: String,
    eval: Evaluator<f64>,
    data: Vec<(String, ArrayD<f64>)>,
    preds: Vec<PredModel>,
    l2: f64,
    out: Option<Output<f64>>,
}

impl Training {
    /// One linear model per pred of `loss`, reading `x` (n x features);
    /// `data` holds the spec's `data` inputs in the evaluator's shapes.
    pub fn linear(
        loss: &Loss,
        data: Vec<(String, ArrayD<f64>)>,
        x: Array2<f64>,
        l2: f64,
    ) -> Result<Training, ValidateError> {
        let checked = loss.checked();
        let mut preds = Vec::new();
        let mut start = 0;
        for p in &checked.preds {
            let width = match &p.shape {
                Shape::Scalar => 1,
                Shape::Vector(Size::Lit(k)) => *k as usize,
                Shape::Vector(Size::Name(s)) => {
                    return Err(ValidateError::setup(
                        format!(
                            "pred `{}` has size `{s}`, which Training::linear cannot bind",
                            p.name
                        ),
                        None,
                    ));
                }
            };
            let net = Net::new(ModelKind::Linear, x.ncols(), width, start);
            start += net.len();
            preds.push(PredModel {
                name: p.name.clone(),
                scalar: p.shape == Shape::Scalar,
                net,
                link: link_for(&p.dom, &p.shape),
                train_x: x.clone(),
                test_x: Array2::zeros((0, x.ncols())),
            });
        }
        let eval = loss.compile::<f64>().map_err(|e| {
            ValidateError::setup(format!("`{}` does not compile: {e}", checked.name), None)
        })?;
        Ok(Training {
            label: checked.name.clone(),
            eval,
            data,
            preds,
            l2,
            out: None,
        })
    }

    /// The number of parameters.
    pub fn params(&self) -> usize {
        self.preds.iter().map(|p| p.net.len()).sum()
    }
}

impl Objective for Training {
    fn rows(&self) -> usize {
        self.preds.first().map_or(0, |p| p.train_x.nrows())
    }

    fn eval(
        &mut self,
        theta: &[f64],
        grad: &mut [f64],
        rows: Option<&[usize]>,
    ) -> Result<f64, ValidateError> {
        let n = self.rows();
        let mut p = Problem {
            label: &self.label,
            eval: self.eval.clone(),
            data: &self.data,
            preds: &self.preds,
            l2: self.l2,
            out: self.out.take(),
            rows: n,
        };
        let r = p.eval(theta, grad, rows);
        self.out = p.out.take();
        r
    }
}

/// Finds, for each row independently, where the increasing function whose
/// values `f` returns crosses zero, by bisection between `lo` and `hi`
/// (rows that do not change sign end at the nearer end).
fn bisect_rows(
    mut lo: Vec<f64>,
    mut hi: Vec<f64>,
    iters: usize,
    f: &mut RowFn<'_>,
) -> Result<Vec<f64>, ValidateError> {
    for _ in 0..iters {
        let mid: Vec<f64> = lo.iter().zip(&hi).map(|(a, b)| 0.5 * (a + b)).collect();
        let v = f(&mid)?;
        for k in 0..mid.len() {
            if v[k] > 0.0 {
                hi[k] = mid[k];
            } else {
                lo[k] = mid[k];
            }
        }
    }
    Ok(lo.iter().zip(&hi).map(|(a, b)| 0.5 * (a + b)).collect())
}

/// The constant raw output of pred `k` that minimises the objective with
/// the other preds at their offsets, found by bisection on the derivative;
/// None when the derivative does not change sign (no finite best constant).
fn best_constant(
    problem: &mut Problem<'_>,
    k: usize,
    n: usize,
) -> Result<Option<f64>, ValidateError> {
    let preds = problem.preds;
    let deriv = |c: f64, problem: &mut Problem<'_>| -> Result<f64, ValidateError> {
        let us: Vec<Array2<f64>> = preds
            .iter()
            .enumerate()
            .map(|(j, pm)| {
                let mut u = Array2::zeros((n, pm.net.outputs));
                for (o, col) in u.columns_mut().into_iter().enumerate() {
                    let v = if j == k { c } else { pm.net.offset[o] };
                    let mut col = col;
                    col.fill(v);
                }
                u
            })
            .collect();
        let (_, dus) = problem.at(&us, None, None)?;
        Ok(dus[k].sum())
    };
    let (mut lo, mut hi) = (-1.0, 1.0);
    let mut tries = 0;
    while deriv(lo, problem)? > 0.0 {
        lo *= 8.0;
        tries += 1;
        if tries > 20 {
            return Ok(None);
        }
    }
    while deriv(hi, problem)? < 0.0 {
        hi *= 8.0;
        tries += 1;
        if tries > 40 {
            return Ok(None);
        }
    }
    for _ in 0..60 {
        let mid = 0.5 * (lo + hi);
        if deriv(mid, problem)? > 0.0 {
            hi = mid;
        } else {
            lo = mid;
        }
    }
    Ok(Some(0.5 * (lo + hi)))
}

type RunResult = (
    Vec<String>,
    Vec<f64>,
    Fit,
    Option<BinaryCurves>,
    Vec<String>,
);

fn select_rows(a: &ArrayD<f64>, rows: &[usize]) -> ArrayD<f64> {
    a.select(Axis(0), rows)
}

/// The feature columns side by side (a vector column adds one per component).
fn features(table: &Table, cols: &[String]) -> Result<Array2<f64>, ValidateError> {
    let mut blocks = Vec::new();
    for c in cols {
        // `x*` is every column whose name starts with `x`, in file order.
        if let Some(prefix) = c.strip_suffix('*') {
            let names: Vec<String> = table
                .names()
                .into_iter()
                .filter(|n| n.starts_with(prefix))
                .collect();
            if names.is_empty() {
                return Err(ValidateError::Data {
                    at: table.origin.clone(),
                    reason: format!(
                        "no column starts with `{prefix}` (for the features `{c}`); the file has: {}",
                        table.names().join(", ")
                    ),
                    hint: None,
                });
            }
            for n in names {
                blocks.push(table.column(&n, "a feature")?.values);
            }
            continue;
        }
        blocks.push(table.column(c, "a feature")?.values);
    }
    let views: Vec<_> = blocks.iter().map(|b| b.view()).collect();
    ndarray::concatenate(Axis(1), &views)
        .map_err(|e| ValidateError::setup(format!("features: {e}"), None))
}

/// A candidate's inputs, read and checked before any training starts, so
/// that a bad cell anywhere is reported before minutes of work.
struct Prepared {
    /// Each `data` input, all rows, in the evaluator's shape.
    data: Vec<(String, ArrayD<f64>)>,
    /// The same as read, for locating rows and slicing the target.
    cols: BTreeMap<String, table::Column>,
    /// Per pred: its output width and its feature matrix (all rows).
    preds: Vec<(usize, Array2<f64>)>,
}

fn prepare(c: &Candidate, table: &Table, opts: &Options) -> Result<Prepared, ValidateError> {
    let checked = c.loss.checked();
    let task = checked.task;
    if let Some((col, _)) = &opts.slice {
        table.column(col, "the --slice column")?;
    }

    // The spec's data, checked against the declared domains.
    let mut sizes: BTreeMap<String, usize> = opts.sizes.clone();
    let mut data_full: Vec<(String, ArrayD<f64>)> = Vec::new();
    let mut data_cols = BTreeMap::new();
    for d in &checked.data {
        let colname = column_name(opts, &d.name);
        let what = format!("data `{}` : {}", d.name, d.type_text);
        let col = table.column(colname, &what)?;
        let width = match &d.shape {
            Shape::Vector(s) => Some(s),
            Shape::Scalar => None,
        };
        table::check_domain(&col, &what, &d.dom, width)?;
        if let Shape::Vector(Size::Name(s)) = &d.shape {
            sizes.insert(s.clone(), col.values.ncols());
        }
        if let Dom::Class(size) = &d.dom {
            let max = col.values.iter().copied().fold(0.0, f64::max) as usize;
            match size {
                Size::Lit(k) => {
                    if let Some((r, _)) = col
                        .values
                        .column(0)
                        .iter()
                        .enumerate()
                        .find(|(_, v)| **v >= *k as f64)
                    {
                        return Err(ValidateError::Data {
                            at: col.locate(r, 0),
                            reason: format!(
                                "column `{}` ({what}): {} is not a class index below {k}",
                                col.name,
                                col.values[[r, 0]]
                            ),
                            hint: None,
                        });
                    }
                }
                Size::Name(s) => {
                    let e = sizes.entry(s.clone()).or_insert(max + 1);
                    *e = (*e).max(max + 1);
                }
            }
        }
        let arr = if col.scalar || matches!(d.shape, Shape::Scalar) {
            col.values.column(0).to_owned().into_dyn()
        } else {
            col.values.clone().into_dyn()
        };
        data_cols.insert(d.name.clone(), col);
        data_full.push((d.name.clone(), arr));
    }
    // Each pred's width and features.
    let mut preds = Vec::new();
    for p in &checked.preds {
        let width = match &p.shape {
            Shape::Scalar => 1,
            Shape::Vector(Size::Lit(k)) => *k as usize,
            Shape::Vector(Size::Name(s)) => match sizes.get(s) {
                Some(k) => *k,
                None if task == Task::Embedding => DEFAULT_EMBEDDING,
                None => {
                    return Err(ValidateError::setup(
                        format!("no data binds size `{s}` of pred `{}`", p.name),
                        Some(format!("give it with --size {s}=N")),
                    ));
                }
            },
        };
        let cols = opts.pred_features.get(&p.name).unwrap_or(&opts.features);
        if cols.is_empty() {
            return Err(ValidateError::setup(
                format!("no features for pred `{}`", p.name),
                Some(format!(
                    "give them with --features COL,... or --features {}=COL,...",
                    p.name
                )),
            ));
        }
        preds.push((width, features(table, cols)?));
    }
    Ok(Prepared {
        data: data_full,
        cols: data_cols,
        preds,
    })
}

fn run(
    c: &Candidate,
    prep: Prepared,
    table: &Table,
    opts: &Options,
    split: &Split,
    cost: Option<(f64, f64)>,
) -> Result<RunResult, ValidateError> {
    let checked = c.loss.checked();
    let task = checked.task;
    let Prepared {
        data: data_full,
        cols: data_cols,
        preds: inputs,
    } = prep;
    // One model per pred: embeddings start from random weights, since at
    // zero every tower's gradient is zero (each is the other's output).
    let mut preds = Vec::new();
    let mut start = 0;
    for (p, (width, x)) in checked.preds.iter().zip(inputs) {
        let mut train_x = x.select(Axis(0), &split.train);
        let mut test_x = x.select(Axis(0), &split.test);
        model::standardize(&mut train_x, &mut [&mut test_x]);
        let mut net = Net::new(opts.model, train_x.ncols(), width, start);
        net.random = task == Task::Embedding;
        start += net.len();
        preds.push(PredModel {
            name: p.name.clone(),
            scalar: p.shape == Shape::Scalar,
            net,
            link: link_for(&p.dom, &p.shape),
            train_x,
            test_x,
        });
    }
    let eval = c
        .loss
        .compile::<f64>()
        .map_err(|e| ValidateError::setup(format!("`{}` does not compile: {e}", c.label), None))?;
    let train_data: Vec<(String, ArrayD<f64>)> = data_full
        .iter()
        .map(|(n, a)| (n.clone(), select_rows(a, &split.train)))
        .collect();
    let test_data: Vec<(String, ArrayD<f64>)> = data_full
        .iter()
        .map(|(n, a)| (n.clone(), select_rows(a, &split.test)))
        .collect();
    let ntr = split.train.len();

    // Start each scalar pred at its best constant; for a regression, scale
    // the model to the spread of the per-row perfect fits.
    {
        let frozen: Vec<PredModel> = preds.iter().map(clone_pm).collect();
        let mut problem = Problem {
            label: &c.label,
            eval: eval.clone(),
            data: &train_data,
            preds: &frozen,
            l2: 0.0,
            out: None,
            rows: ntr,
        };
        let mut offsets = Vec::new();
        for (k, pm) in frozen.iter().enumerate() {
            offsets.push(if pm.scalar {
                best_constant(&mut problem, k, ntr)?
            } else {
                None
            });
        }
        for (k, off) in offsets.iter().enumerate() {
            if let Some(off) = off {
                preds[k].net.offset[0] = *off;
            }
        }
        if task == Task::Regression {
            let frozen: Vec<PredModel> = preds.iter().map(clone_pm).collect();
            problem.preds = &frozen;
            for k in 0..frozen.len() {
                if !frozen[k].scalar {
                    continue;
                }
                let fits = perfect_fits(&mut problem, k, ntr)?;
                preds[k].net.scale = robust_spread(&fits);
            }
        }
    }

    let mut theta = vec![0.0; start];
    let mut rng = Rng::new(opts.seed ^ 0x5EED);
    for pm in &preds {
        pm.net.init(&mut theta, &mut rng);
    }
    let mut problem = Problem {
        label: &c.label,
        eval: eval.clone(),
        data: &train_data,
        preds: &preds,
        l2: opts.l2,
        out: None,
        rows: ntr,
    };
    let bar = progress_bar(opts, &c.label);
    let fit = optim::minimize(
        opts.optimizer,
        &mut problem,
        &mut theta,
        Budget {
            epochs: opts.epochs,
            tol: opts.tol,
        },
        opts.seed,
        &mut |e, f| {
            if let Some(b) = &bar {
                b.set_position(e as u64);
                b.set_message(format!("{f:.6}"));
            }
        },
    )?;
    if let Some(b) = bar {
        b.finish_and_clear();
    }

    // Predict the test rows.
    let mut test_u = Vec::new();
    let mut test_p = Vec::new();
    for pm in &preds {
        let (u, _) = pm.net.forward(&theta, pm.test_x.view());
        let mut p = pm.link.apply(&u);
        clamp_inside(pm.link, &mut p);
        test_u.push(u);
        test_p.push(p);
    }
    let target = target_var(&c.loss, opts, task)?;
    let test_target = target.map(|t| {
        let col = &data_cols[&t.name];
        col.values.select(Axis(0), &split.test)
    });
    let mut notes = Vec::new();
    let (cols, values, curves) = match task {
        Task::Binary => {
            let t = target.expect("binary tasks have a target");
            let Dom::Labels(labels) = &t.dom else {
                unreachable!("a binary target has two labels")
            };
            let pos = labels[1];
            let y: Vec<bool> = test_target
                .as_ref()
                .expect("target read")
                .column(0)
                .iter()
                .map(|v| *v == pos)
                .collect();
            let p: Vec<f64> = binary_prob(&preds[0], &test_p[0])?;
            let m = metrics::binary(&y, &p, cost);
            let mut cols = vec![
                "accuracy",
                "precision",
                "recall",
                "F1",
                "ROC-AUC",
                "PR-AUC",
                "ECE",
            ];
            let mut vals = vec![
                m.accuracy,
                m.precision,
                m.recall,
                m.f1,
                m.roc_auc,
                m.pr_auc,
                m.ece,
            ];
            if let (Some(c05), Some(copt), Some(t)) =
                (m.cost_at_half, m.cost_at_optimal, m.optimal_threshold)
            {
                cols.extend(["cost@0.5", "cost@t*"]);
                vals.extend([c05, copt]);
                notes.push(format!(
                    "cost: mean per test example with fn = {}, fp = {}; t* = fp/(fp+fn) = {}, the cost-optimal threshold for calibrated probabilities",
                    crate::analyze::num(cost.expect("costs").0),
                    crate::analyze::num(cost.expect("costs").1),
                    crate::analyze::num(t)
                ));
            }
            let mut cols: Vec<String> = cols.into_iter().map(String::from).collect();
            if let Some((col, min)) = &opts.slice {
                let s = table.column(col, "the --slice column")?;
                let s = s.values.select(Axis(0), &split.test);
                let (mut hit, mut total) = (0usize, 0usize);
                for (k, sv) in s.column(0).iter().enumerate() {
                    if y[k] && *sv >= *min {
                        total += 1;
                        hit += usize::from(p[k] >= 0.5);
                    }
                }
                let tag = format!("{col}>={}", crate::analyze::num(*min));
                cols.push(format!("recall[{tag}]"));
                cols.push(format!("missed[{tag}]"));
                vals.push(if total == 0 {
                    f64::NAN
                } else {
                    hit as f64 / total as f64
                });
                vals.push((total - hit) as f64);
                notes.push(format!(
                    "{tag}: the {total} test positives with {col} >= {}; decisions at p >= 0.5",
                    crate::analyze::num(*min)
                ));
            }
            notes.push(format!(
                "test: {} rows, {} positive ({}); decisions at p >= 0.5",
                y.len(),
                y.iter().filter(|v| **v).count(),
                crate::analyze::num(pos)
            ));
            let curves = BinaryCurves {
                pr: metrics::pr_curve(&y, &p),
                reliability: metrics::reliability(&y, &p, 10),
            };
            (cols, vals, Some(curves))
        }
        Task::Multiclass => {
            let t = target.expect("multiclass tasks have a target");
            let tt = test_target.as_ref().expect("target read");
            let y: Vec<usize> = if matches!(t.dom, Dom::Class(_)) {
                tt.column(0).iter().map(|v| *v as usize).collect()
            } else {
                tt.rows()
                    .into_iter()
                    .map(|r| argmax(r.as_slice().expect("standard layout")))
                    .collect()
            };
            let probs = class_probs(&preds[0], &test_p[0], true);
            if probs.ncols() <= y.iter().copied().max().unwrap_or(0) {
                return Err(ValidateError::setup(
                    format!(
                        "pred `{}` has {} components, fewer than the classes in the data",
                        preds[0].name,
                        probs.ncols()
                    ),
                    None,
                ));
            }
            let m = metrics::multiclass(&y, probs.view());
            (
                vec![
                    "accuracy".into(),
                    "macro-F1".into(),
                    "log-loss".into(),
                    "ECE".into(),
                ],
                vec![m.accuracy, m.macro_f1, m.log_loss, m.ece],
                None,
            )
        }
        Task::Multilabel => {
            let tt = test_target.as_ref().expect("target read");
            let soft = uses_softmax(&c.loss);
            let mut probs = class_probs(&preds[0], &test_p[0], soft);
            if soft {
                // A softmax spreads one unit of probability over the labels:
                // its decision is the most probable label.
                for mut row in probs.rows_mut() {
                    let k = argmax(row.as_slice().expect("standard layout"));
                    row.fill(0.0);
                    row[k] = 1.0;
                }
            }
            notes.push("specs that use a softmax predict their most probable label; others predict each label whose sigmoid is at least 0.5".into());
            let m = metrics::multilabel(tt.view(), probs.view());
            (
                vec![
                    "micro-F1".into(),
                    "macro-F1".into(),
                    "labels/example".into(),
                    "true labels/example".into(),
                ],
                vec![
                    m.micro_f1,
                    m.macro_f1,
                    m.labels_per_example,
                    m.true_labels_per_example,
                ],
                None,
            )
        }
        Task::Regression => {
            let t = target.expect("regression tasks have a target");
            let y: Vec<f64> = test_target
                .as_ref()
                .expect("target read")
                .column(0)
                .to_vec();
            let train_y: Vec<f64> = data_cols[&t.name]
                .values
                .select(Axis(0), &split.train)
                .column(0)
                .to_vec();
            let yhat = invert_target(&c.label, &eval, &test_data, &preds, &test_u, t, &train_y)?;
            let (lo, hi) = (quantile(&train_y, 0.01), quantile(&train_y, 0.99));
            let pick = |bulk: bool| -> (Vec<f64>, Vec<f64>) {
                y.iter()
                    .zip(&yhat)
                    .filter(|(y, _)| ((lo..=hi).contains(*y)) == bulk)
                    .map(|(a, b)| (*a, *b))
                    .unzip()
            };
            let all = metrics::regression(&y, &yhat);
            let (by, bh) = pick(true);
            let (ty, th) = pick(false);
            let bulk = metrics::regression(&by, &bh);
            let tail = metrics::regression(&ty, &th);
            notes.push(format!(
                "predictions in the units of `{}`: the value each prediction fits perfectly; bulk = the {} test rows with {} in [{}, {}] (training 1st-99th percentile), tail = the other {}",
                t.name,
                bulk.n,
                t.name,
                crate::analyze::num(lo),
                crate::analyze::num(hi),
                tail.n
            ));
            let mut cols = Vec::new();
            let mut vals = Vec::new();
            for (prefix, m) in [("", &all), ("bulk ", &bulk), ("tail ", &tail)] {
                for (name, v) in [("RMSE", m.rmse), ("MAE", m.mae), ("MedAE", m.median_ae)] {
                    cols.push(format!("{prefix}{name}"));
                    vals.push(v);
                }
            }
            (cols, vals, None)
        }
        Task::Ranking => {
            let g = group_column(table, opts)?;
            let groups = table
                .column(&g, "query groups")?
                .values
                .select(Axis(0), &split.test);
            let rel: Vec<f64> = test_target
                .as_ref()
                .expect("target read")
                .column(0)
                .to_vec();
            let score: Vec<f64> = test_p[0].column(0).to_vec();
            let m = metrics::ranking(
                groups.column(0).as_slice().expect("standard layout"),
                &rel,
                &score,
            );
            notes.push(format!(
                "{} test queries with a relevant document; MRR counts rel > 0 as relevant",
                m.queries
            ));
            (
                vec!["NDCG@10".into(), "MRR".into()],
                vec![m.ndcg_at_10, m.mrr],
                None,
            )
        }
        Task::Embedding => {
            if test_p.len() < 2 {
                return Err(ValidateError::setup(
                    format!(
                        "`{}` has {} pred; recall@k pairs a query embedding with a key embedding",
                        c.label,
                        test_p.len()
                    ),
                    None,
                ));
            }
            let positive: Option<Vec<bool>> = match (target, &test_target) {
                (Some(t), Some(tt)) => {
                    let Dom::Labels(l) = &t.dom else {
                        unreachable!("an embedding label has two values")
                    };
                    Some(tt.column(0).iter().map(|v| *v == l[1]).collect())
                }
                _ => None,
            };
            let sim = similarity(&c.loss);
            let m =
                metrics::embedding(test_p[0].view(), test_p[1].view(), positive.as_deref(), sim);
            notes.push(format!(
                "recall@k: each of {} test queries (`{}`) ranks every test `{}` by {:?} similarity; embeddings of width {}",
                m.queries, preds[0].name, preds[1].name, sim, preds[0].net.outputs
            ));
            (
                vec!["recall@1".into(), "recall@10".into()],
                vec![m.recall_at_1, m.recall_at_10],
                None,
            )
        }
    };
    Ok((cols, values, fit, curves, notes))
}

fn clone_pm(p: &PredModel) -> PredModel {
    PredModel {
        name: p.name.clone(),
        scalar: p.scalar,
        net: p.net.clone(),
        link: p.link,
        train_x: Array2::zeros((0, 0)),
        test_x: Array2::zeros((0, 0)),
    }
}

fn argmax(v: &[f64]) -> usize {
    let mut best = 0;
    for (k, x) in v.iter().enumerate() {
        if *x > v[best] {
            best = k;
        }
    }
    best
}

/// The probability of the positive class a binary pred states: a pred in
/// [0, 1] is one; an unbounded score (a logit, a margin) is read as a
/// logit; any other domain has no reading as a probability.
fn binary_prob(pm: &PredModel, p: &Array2<f64>) -> Result<Vec<f64>, ValidateError> {
    match pm.link {
        Link::Interval { lo, hi } if lo >= 0.0 && hi <= 1.0 => Ok(p.column(0).to_vec()),
        Link::Identity => Ok(p.column(0).iter().map(|&v| model::sigmoid(v)).collect()),
        _ => Err(ValidateError::setup(
            format!(
                "pred `{}` is neither a probability nor an unbounded score, so binary metrics cannot read it",
                pm.name
            ),
            Some("declare it `prob` or `logit`".into()),
        )),
    }
}

/// Class probabilities from a vector pred: `probs` as they are, scores
/// through a softmax (`soft`) or per-component sigmoids.
fn class_probs(pm: &PredModel, p: &Array2<f64>, soft: bool) -> Array2<f64> {
    if pm.link == Link::Softmax {
        return p.clone();
    }
    if soft {
        Link::Softmax.apply(p)
    } else {
        p.mapv(model::sigmoid)
    }
}

fn quantile(v: &[f64], q: f64) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    let mut s = v.to_vec();
    s.sort_by(f64::total_cmp);
    let pos = q * (s.len() - 1) as f64;
    let (i, f) = (pos.floor() as usize, pos.fract());
    if i + 1 < s.len() {
        s[i] * (1.0 - f) + s[i + 1] * f
    } else {
        s[i]
    }
}

/// 1.4826 * MAD, or the standard deviation when most values coincide, or 1.
fn robust_spread(v: &[f64]) -> f64 {
    let med = quantile(v, 0.5);
    let dev: Vec<f64> = v.iter().map(|x| (x - med).abs()).collect();
    let mad = 1.4826 * quantile(&dev, 0.5);
    if mad.is_finite() && mad > 0.0 {
        return mad;
    }
    let n = v.len().max(1) as f64;
    let mean = v.iter().sum::<f64>() / n;
    let sd = (v.iter().map(|x| (x - mean) * (x - mean)).sum::<f64>() / n).sqrt();
    if sd.is_finite() && sd > 0.0 { sd } else { 1.0 }
}

/// Each training row's perfect fit for scalar pred `k`: the raw output at
/// which that row's own derivative changes sign.
fn perfect_fits(problem: &mut Problem<'_>, k: usize, n: usize) -> Result<Vec<f64>, ValidateError> {
    let preds = problem.preds;
    let c = preds[k].net.offset[0];
    let width = 1e3 * c.abs().max(1.0);
    let mut f = |mid: &[f64]| -> Result<Vec<f64>, ValidateError> {
        let us: Vec<Array2<f64>> = preds
            .iter()
            .enumerate()
            .map(|(j, pm)| {
                if j == k {
                    Array2::from_shape_vec((n, 1), mid.to_vec()).expect("one per row")
                } else {
                    Array2::from_shape_fn((n, pm.net.outputs), |(_, o)| pm.net.offset[o])
                }
            })
            .collect();
        let (_, dus) = problem.at(&us, None, None)?;
        Ok(dus[k].column(0).to_vec())
    };
    bisect_rows(vec![c - width; n], vec![c + width; n], 80, &mut f)
}

/// A regression's predictions in the target's units: for each test row,
/// the target value that the row's prediction fits perfectly (where the
/// derivative of the loss with respect to the pred changes sign as the
/// target moves). This reads `exp` of a log-price model, and the identity
/// for a model of the target itself, with no per-spec rule.
fn invert_target(
    label: &str,
    eval: &Evaluator<f64>,
    test_data: &[(String, ArrayD<f64>)],
    preds: &[PredModel],
    test_u: &[Array2<f64>],
    t: &crate::sema::Variable,
    train_y: &[f64],
) -> Result<Vec<f64>, ValidateError> {
    let n = test_u.first().map_or(0, Array2::nrows);
    let (mn, mx) = train_y
        .iter()
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), &v| {
            (a.min(v), b.max(v))
        });
    let span = (mx - mn).max(1e-12);
    let (mut lo, mut hi) = (mn - span, mx + span);
    if let Dom::Range(r) = &t.dom {
        let e = 1e-12 * span;
        if lo <= r.lo {
            lo = if r.lo_closed {
                r.lo
            } else {
                r.lo + e.max(r.lo.abs() * 1e-12)
            };
            // A positive target spans decades: bisect between its smallest
            // and largest plausible values in log space instead.
        }
        if hi >= r.hi {
            hi = if r.hi_closed {
                r.hi
            } else {
                r.hi - e.max(r.hi.abs() * 1e-12)
            };
        }
    }
    let positive = lo > 0.0;
    let (a, b) = if positive {
        (lo.ln(), hi.ln())
    } else {
        (lo, hi)
    };
    let mut problem = Problem {
        label,
        eval: eval.clone(),
        data: test_data,
        preds,
        l2: 0.0,
        out: None,
        rows: n,
    };
    let pk = 0;
    // Orientation: the derivative with respect to the pred as a function of
    // the target decreases for every sensible loss (a larger target pulls
    // the prediction up); bisection wants an increasing function, so negate.
    let mut f = |mid: &[f64]| -> Result<Vec<f64>, ValidateError> {
        let vals: Vec<f64> = mid
            .iter()
            .map(|&m| if positive { m.exp() } else { m })
            .collect();
        let arr = Array1::from(vals).into_dyn();
        let (_, dus) = problem.at(test_u, None, Some((&t.name, &arr)))?;
        Ok(dus[pk].column(0).iter().map(|v| -v).collect())
    };
    let xs = bisect_rows(vec![a; n], vec![b; n], 80, &mut f)?;
    Ok(xs
        .into_iter()
        .map(|x| if positive { x.exp() } else { x })
        .collect())
}

fn progress_bar(opts: &Options, label: &str) -> Option<indicatif::ProgressBar> {
    if !opts.progress {
        return None;
    }
    let bar = indicatif::ProgressBar::with_draw_target(
        Some(opts.epochs as u64),
        indicatif::ProgressDrawTarget::stderr(),
    );
    if let Ok(style) = indicatif::ProgressStyle::with_template(
        "{prefix:>24} [{bar:30}] {pos}/{len} epochs  loss {msg}",
    ) {
        bar.set_style(style.progress_chars("=> "));
    }
    bar.set_prefix(label.to_string());
    Some(bar)
}
