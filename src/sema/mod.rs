//! Semantic checks: from a parsed [`Spec`] to a [`Checked`] spec, or every
//! error in the file.
//!
//! The checker walks the statements once, in order, typing every expression
//! with a [`Ty`] (shape, domain, level). `def`s, including the prelude's
//! standard losses, are checked at each call with the argument types bound
//! to their parameters, which is how one `def` serves scalars and vectors;
//! their parameter annotations are checked against the arguments first, so
//! a logit passed as a probability is reported at the call, in the user's
//! terms. Nothing here panics on user input: every problem becomes a
//! [`Diagnostic`] and checking goes on, so one run reports all of them.

pub mod builtins;
pub mod types;

use crate::ast::*;
use crate::diag::{Diagnostic, did_you_mean};
use crate::span::Span;
use builtins::Kind;
use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::sync::OnceLock;
use types::{Dom, Level, Range, Shape, Size, Ty, arith};

/// The reserved words of the language.
pub const RESERVED: &[&str] = &[
    "loss", "task", "data", "pred", "param", "cost", "let", "def", "minimize", "expect", "if",
    "then", "else", "and", "or", "not", "in", "for", "i", "inf",
];

/// What kind of problem a spec solves; decides which properties and metrics apply.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Task {
    /// Two classes.
    Binary,
    /// One of C classes.
    Multiclass,
    /// Any subset of C labels.
    Multilabel,
    /// A real target.
    Regression,
    /// An order within groups.
    Ranking,
    /// Vectors whose distances mean similarity.
    Embedding,
}

impl Task {
    const ALL: [(&'static str, Task); 6] = [
        ("binary", Task::Binary),
        ("multiclass", Task::Multiclass),
        ("multilabel", Task::Multilabel),
        ("regression", Task::Regression),
        ("ranking", Task::Ranking),
        ("embedding", Task::Embedding),
    ];

    /// The task as written in a spec.
    pub fn name(self) -> &'static str {
        Task::ALL
            .iter()
            .find(|(_, t)| *t == self)
            .map_or("", |(n, _)| n)
    }
}

impl fmt::Display for Task {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// What a regression loss's minimiser estimates.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Estimand {
    /// The conditional mean.
    Mean,
    /// The conditional median.
    Median,
    /// The conditional tau-quantile.
    Quantile(f64),
}

/// A property an `expect` statement states.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Property {
    /// No kinks.
    Differentiable,
    /// Convex in the pred.
    Convex,
    /// The derivative stays bounded for large errors.
    BoundedGradient,
    /// Value and gradient stay finite on the whole domain.
    Finite,
    /// The expected loss is minimised at the true probability.
    Calibrated,
    /// What the minimiser estimates.
    Estimand(Estimand),
}

const PROPERTIES: &[&str] = &[
    "differentiable",
    "convex",
    "bounded_gradient",
    "finite",
    "calibrated",
    "estimand",
];
const TYPES: &[&str] = &[
    "real", "prob", "logit", "label", "class", "onehot", "multihot", "probs", "vector",
];
const COSTS: &[&str] = &["fn", "fp", "tn", "tp"];

/// A declared `data` or `pred`.
#[derive(Clone, Debug, PartialEq)]
pub struct Variable {
    /// Its name.
    pub name: String,
    /// The type as written, for messages and summaries.
    pub type_text: String,
    /// Scalar or vector.
    pub shape: Shape,
    /// Its declared domain.
    pub dom: Dom,
    /// The description string.
    pub desc: Option<String>,
    /// The declaration.
    pub span: Span,
}

/// A declared `param`.
#[derive(Clone, Debug, PartialEq)]
pub struct Param {
    /// Its name.
    pub name: String,
    /// Its value (the default, or an override).
    pub value: f64,
    /// The allowed range, if declared.
    pub range: Option<Range>,
    /// The description string.
    pub desc: Option<String>,
    /// The declaration.
    pub span: Span,
}

/// One `expect` statement.
#[derive(Clone, Debug, PartialEq)]
pub struct Expectation {
    /// `expect not ...`
    pub negated: bool,
    /// The property.
    pub property: Property,
    /// `for NAME`, or every pred.
    pub target: Option<String>,
    /// The statement.
    pub span: Span,
}

/// A spec that passed every check.
#[derive(Clone, Debug)]
pub struct Checked {
    /// `loss NAME`
    pub name: String,
    /// `task KIND`
    pub task: Task,
    /// The `data` declarations, in source order.
    pub data: Vec<Variable>,
    /// The `pred` declarations, in source order.
    pub preds: Vec<Variable>,
    /// The `param` declarations, in source order.
    pub params: Vec<Param>,
    /// `cost` entries by name.
    pub costs: BTreeMap<String, f64>,
    /// The `expect` statements.
    pub expects: Vec<Expectation>,
    /// Every size name, with the number the spec binds it to, if any.
    pub sizes: BTreeMap<String, Option<u64>>,
    /// The syntax tree it was checked from.
    pub spec: Spec,
}

impl Checked {
    /// One line: name, task, preds with types, data, params.
    pub fn summary(&self) -> String {
        let vars = |vs: &[Variable]| {
            if vs.is_empty() {
                "none".to_string()
            } else {
                vs.iter()
                    .map(|v| format!("{} : {}", v.name, v.type_text))
                    .collect::<Vec<_>>()
                    .join(", ")
            }
        };
        let params = if self.params.is_empty() {
            "none".to_string()
        } else {
            self.params
                .iter()
                .map(|p| format!("{} = {}", p.name, fmt_num(p.value)))
                .collect::<Vec<_>>()
                .join(", ")
        };
        format!(
            "loss {} · task {} · pred {} · data {} · params {}",
            self.name,
            self.task,
            vars(&self.preds),
            vars(&self.data),
            params
        )
    }
}

/// The standard losses, as source text.
pub const PRELUDE_SOURCE: &str = include_str!("../prelude.loss");

/// The parsed prelude. It is part of the binary and tested to parse and check
/// cleanly, so a failure here is a bug in lossc, not in the user's spec.
pub fn prelude() -> &'static Spec {
    static PRELUDE: OnceLock<Spec> = OnceLock::new();
    PRELUDE
        .get_or_init(|| crate::parse::parse(PRELUDE_SOURCE).expect("the prelude parses (tested)"))
}

/// Checks a spec; returns it with its warnings, or every diagnostic.
pub fn check(spec: Spec, src: &str) -> Result<(Checked, Vec<Diagnostic>), Vec<Diagnostic>> {
    check_with(spec, src, &BTreeMap::new())
}

/// Like [`check`], with some params' values overridden (`--param NAME=VALUE`).
/// An override is checked against the param's declared range like a default.
pub fn check_with(
    spec: Spec,
    src: &str,
    overrides: &BTreeMap<String, f64>,
) -> Result<(Checked, Vec<Diagnostic>), Vec<Diagnostic>> {
    let mut c = Checker::new(src, false);
    let checked = c.file(&spec, overrides);
    let diags = c.finish();
    match checked {
        Some(mut out) if !diags.iter().any(Diagnostic::is_error) => {
            out.spec = spec;
            Ok((out, diags))
        }
        _ => Err(diags),
    }
}

/// Checks a library of `def`s (the prelude): only `def` statements, each
/// body type-checked with its annotated parameter types.
pub fn check_library(spec: &Spec, src: &str) -> Vec<Diagnostic> {
    let mut c = Checker::new(src, true);
    c.library(spec);
    c.finish()
}

// ------------------------------------------------------------------ checker

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Origin {
    User,
    Prelude,
}

#[derive(Clone, Copy)]
struct DefRef<'a> {
    def: &'a Def,
    origin: Origin,
}

#[derive(Clone, Debug)]
enum Global {
    Data(Variable),
    Pred(Variable),
    Param(f64),
    Size,
    /// Declared with an invalid type (already reported): uses of it are
    /// silently typed as errors, so one mistake gives one message.
    Broken,
}

struct LetInfo {
    ty: Ty,
    uses: BTreeSet<String>,
    span: Span,
    used: bool,
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum IndexKind {
    Feature,
    Batch,
}

struct IndexVar {
    name: String,
    kind: IndexKind,
    size: Option<Size>,
    /// An inner reduction reused the name (already reported): its range
    /// cannot be inferred, and saying so again would only repeat that.
    shadowed: bool,
}

struct DefFrame {
    params: BTreeMap<String, Ty>,
    sizes: BTreeMap<String, Size>,
    sees_globals: bool,
    /// Parameters whose argument already reads another row (`s@j`): using
    /// them with `@` again would mean two rows at once.
    in_other_row: BTreeSet<String>,
}

struct SizeBinding {
    value: Option<(u64, Span)>,
}

struct Checker<'a> {
    src: &'a str,
    library: bool,
    diags: Vec<Diagnostic>,
    names: BTreeMap<String, (Span, &'static str)>,
    globals: BTreeMap<String, Global>,
    all_lets: BTreeMap<String, Span>,
    lets: BTreeMap<String, LetInfo>,
    defs: BTreeMap<String, Vec<DefRef<'a>>>,
    /// The standard losses alone: calls inside a standard loss resolve here
    /// (lexically), whatever the user's file defines.
    prelude_defs: BTreeMap<String, Vec<DefRef<'a>>>,
    used_defs: BTreeSet<String>,
    sizes: BTreeMap<String, SizeBinding>,
    frames: Vec<DefFrame>,
    indices: Vec<IndexVar>,
    sample_depth: usize,
    uses: Vec<BTreeSet<String>>,
    def_stack: Vec<String>,
    override_span: Option<Span>,
    task: Option<Task>,
    in_minimize: bool,
    /// The let being checked, so that `let a = a + 1` is called what it is.
    current_let: Option<String>,
    /// Types of def bodies already checked, by def, argument types and context.
    instantiated: BTreeMap<String, (Ty, BTreeSet<String>)>,
}

/// How deeply def calls may nest (each level is a recursion in the checker).
const MAX_DEF_DEPTH: usize = 64;

impl<'a> Checker<'a> {
    fn new(src: &'a str, library: bool) -> Self {
        Checker {
            src,
            library,
            diags: Vec::new(),
            names: BTreeMap::new(),
            globals: BTreeMap::new(),
            all_lets: BTreeMap::new(),
            lets: BTreeMap::new(),
            defs: BTreeMap::new(),
            prelude_defs: BTreeMap::new(),
            used_defs: BTreeSet::new(),
            sizes: BTreeMap::new(),
            frames: Vec::new(),
            indices: Vec::new(),
            sample_depth: 0,
            uses: vec![BTreeSet::new()],
            def_stack: Vec::new(),
            override_span: None,
            task: None,
            in_minimize: false,
            current_let: None,
            instantiated: BTreeMap::new(),
        }
    }

    /// Diagnostics in source order, each reported once.
    fn finish(mut self) -> Vec<Diagnostic> {
        let mut seen = BTreeSet::new();
        self.diags
            .retain(|d| seen.insert((d.span, d.code, d.message.clone())));
        self.diags.sort_by_key(|d| {
            (
                d.span.map_or(0, |s| s.start),
                d.severity == crate::diag::Severity::Warning,
            )
        });
        self.diags
    }

    fn emit(&mut self, mut d: Diagnostic) {
        // Inside a standard loss's body the prelude's spans mean nothing to
        // the user: point at their call instead.
        if let Some(at) = self.override_span {
            d.span = Some(at);
            d.secondary.clear();
            d.message = format!("in this call: {}", d.message);
        }
        self.diags.push(d);
    }

    fn text(&self, span: Span) -> &str {
        if self.override_span.is_some() {
            ""
        } else {
            span.text(self.src)
        }
    }

    // -------------------------------------------------------------- files

    fn library(&mut self, spec: &'a Spec) {
        for stmt in &spec.stmts {
            match &stmt.kind {
                StmtKind::Def(d) => self.declare_def(d, Origin::User),
                _ => self.emit(
                    Diagnostic::error(
                        "E0004",
                        stmt.span,
                        "a library may only contain `def` statements",
                    )
                    .with_label("not a def"),
                ),
            }
        }
        self.check_defs(spec);
    }

    fn file(&mut self, spec: &'a Spec, overrides: &BTreeMap<String, f64>) -> Option<Checked> {
        for stmt in &prelude().stmts {
            if let StmtKind::Def(d) = &stmt.kind {
                let r = DefRef {
                    def: d,
                    origin: Origin::Prelude,
                };
                self.defs.entry(d.name.name.clone()).or_default().push(r);
                self.prelude_defs
                    .entry(d.name.name.clone())
                    .or_default()
                    .push(r);
            }
        }
        let mut name: Option<&Ident> = None;
        let mut task_stmt: Option<Span> = None;
        let mut minimize: Option<Span> = None;
        let mut data = Vec::new();
        let mut preds = Vec::new();
        let mut params = Vec::new();
        let mut costs = BTreeMap::new();
        let mut expects = Vec::new();
        let mut cost_span: Option<Span> = None;
        let mut remaining: BTreeMap<&str, f64> =
            overrides.iter().map(|(k, v)| (k.as_str(), *v)).collect();

        // Pass 1: the statement structure and every declaration, so names
        // may be used before the statement that declares them.
        for (k, stmt) in spec.stmts.iter().enumerate() {
            match &stmt.kind {
                StmtKind::Loss(n) => {
                    if let Some(first) = name {
                        self.emit(
                            Diagnostic::error("E0005", stmt.span, "a second `loss` statement")
                                .with_label("second")
                                .with_secondary(first.span, "first")
                                .with_hint("one file describes one loss"),
                        );
                    } else {
                        if k != 0 {
                            self.emit(
                                Diagnostic::error(
                                    "E0004",
                                    stmt.span,
                                    "`loss NAME` must be the first statement",
                                )
                                .with_label("move this to the top"),
                            );
                        }
                        self.check_reserved(n);
                        name = Some(n);
                    }
                }
                StmtKind::Task(t) => {
                    if let Some(first) = task_stmt {
                        self.emit(
                            Diagnostic::error("E0005", stmt.span, "a second `task` statement")
                                .with_label("second")
                                .with_secondary(first, "first"),
                        );
                    } else {
                        task_stmt = Some(stmt.span);
                        self.task = self.task_kind(t);
                    }
                }
                StmtKind::Data(d) => {
                    if let Some(v) = self.declare_var(d, false) {
                        data.push(v);
                    }
                }
                StmtKind::Pred(d) => {
                    if let Some(v) = self.declare_var(d, true) {
                        preds.push(v);
                    }
                }
                StmtKind::Param(p) => {
                    let value = remaining
                        .remove(p.name.name.as_str())
                        .unwrap_or(p.value.value);
                    let overridden = overrides.contains_key(&p.name.name);
                    if let Some(param) = self.declare_param(p, value, overridden) {
                        params.push(param);
                    }
                }
                StmtKind::Cost(items) => {
                    cost_span.get_or_insert(stmt.span);
                    for it in items {
                        if !COSTS.contains(&it.name.name.as_str()) {
                            self.emit(
                                Diagnostic::error(
                                    "E0071",
                                    it.name.span,
                                    format!("unknown cost `{}`", it.name.name),
                                )
                                .with_label("not a cost")
                                .with_hint_opt(
                                    did_you_mean(&it.name.name, COSTS.iter().copied())
                                        .map(|s| format!("did you mean `{s}`?")),
                                )
                                .with_hint(
                                    "costs are fn, fp, tn and tp (false/true negatives/positives)",
                                ),
                            );
                        } else if costs.contains_key(&it.name.name) {
                            self.emit(
                                Diagnostic::error(
                                    "E0071",
                                    it.name.span,
                                    format!("cost `{}` given twice", it.name.name),
                                )
                                .with_label("again"),
                            );
                        } else if !(it.value.value >= 0.0 && it.value.value.is_finite()) {
                            self.emit(
                                Diagnostic::error(
                                    "E0071",
                                    it.value.span,
                                    "a cost must be a finite number ≥ 0",
                                )
                                .with_label("here"),
                            );
                        } else {
                            costs.insert(it.name.name.clone(), it.value.value);
                        }
                    }
                }
                StmtKind::Let(n, _) => {
                    if self.declare_name(n, "let") {
                        self.all_lets.insert(n.name.clone(), n.span);
                    }
                }
                StmtKind::Def(d) => self.declare_def(d, Origin::User),
                StmtKind::Minimize(_) => {
                    if let Some(first) = minimize {
                        self.emit(
                            Diagnostic::error("E0031", stmt.span, "a second `minimize` statement")
                                .with_label("second")
                                .with_secondary(first, "first")
                                .with_hint(
                                    "combine the objectives into one: minimize A + lambda * B",
                                ),
                        );
                    } else {
                        minimize = Some(stmt.span);
                    }
                }
                StmtKind::Expect(_) => {}
            }
        }
        for (k, _) in remaining {
            // An override for a param the spec does not declare is a usage
            // error; report it against the file's first statement.
            let at = spec.stmts.first().map_or(Span::default(), |s| s.span);
            let names: Vec<&str> = params.iter().map(|p: &Param| p.name.as_str()).collect();
            self.emit(
                Diagnostic::error(
                    "E0010",
                    at,
                    format!("`--param {k}`: this spec has no param `{k}`"),
                )
                .with_label("in this spec")
                .with_hint_opt(
                    did_you_mean(k, names.iter().copied()).map(|s| format!("did you mean `{s}`?")),
                )
                .with_hint(if names.is_empty() {
                    "it declares no params".to_string()
                } else {
                    format!("its params: {}", names.join(", "))
                }),
            );
        }
        let file_start = spec.stmts.first().map_or(Span::default(), |s| s.span);
        if name.is_none() {
            self.emit(
                Diagnostic::error(
                    "E0004",
                    Span::new(file_start.start, file_start.start),
                    "missing `loss NAME`",
                )
                .with_label("expected `loss NAME` here")
                .with_hint("every spec starts with `loss my_loss`"),
            );
        }
        if task_stmt.is_none() {
            self.emit(
                Diagnostic::error("E0004", file_start, "missing `task`")
                    .with_label("this spec has no task")
                    .with_hint("add one of: task binary, multiclass, multilabel, regression, ranking, embedding"),
            );
        }
        if preds.is_empty()
            && !spec
                .stmts
                .iter()
                .any(|s| matches!(s.kind, StmtKind::Pred(_)))
        {
            self.emit(
                Diagnostic::error(
                    "E0004",
                    file_start,
                    "missing `pred`: nothing to differentiate",
                )
                .with_label("this spec declares no model output")
                .with_hint("declare what the model predicts, e.g. `pred z : logit`"),
            );
        }
        if minimize.is_none() {
            self.emit(
                Diagnostic::error(
                    "E0030",
                    file_start,
                    "missing `minimize`: the spec has no objective",
                )
                .with_label("this spec has no objective")
                .with_hint("add e.g. `minimize mean(bce(y, p))`"),
            );
        }

        if let (Some(at), Some(task)) = (cost_span, self.task)
            && task != Task::Binary
        {
            self.emit(
                Diagnostic::error(
                    "E0071",
                    at,
                    format!("`cost` does not apply to a {task} task"),
                )
                .with_label("decision costs are for binary classification")
                .with_hint(
                    "remove it, or weight the loss itself to express which errors cost more",
                ),
            );
        }

        self.check_defs(spec);

        // Pass 2: lets, the objective and expectations, in order.
        let mut objective_uses = BTreeSet::new();
        for stmt in &spec.stmts {
            match &stmt.kind {
                StmtKind::Let(n, e) => {
                    self.uses.push(BTreeSet::new());
                    self.current_let = Some(n.name.clone());
                    let ty = self.expr(e);
                    self.current_let = None;
                    let uses = self.uses.pop().unwrap_or_default();
                    if self.all_lets.get(&n.name) == Some(&n.span) {
                        self.lets.insert(
                            n.name.clone(),
                            LetInfo {
                                ty,
                                uses,
                                span: n.span,
                                used: false,
                            },
                        );
                    }
                }
                StmtKind::Minimize(e) if Some(stmt.span) == minimize => {
                    self.uses.push(BTreeSet::new());
                    self.in_minimize = true;
                    let ty = self.expr(e);
                    self.in_minimize = false;
                    objective_uses = self.uses.pop().unwrap_or_default();
                    self.check_objective(e, &ty);
                }
                StmtKind::Expect(x) => {
                    if let Some(e) = self.expectation(x, stmt.span) {
                        let clash = expects.iter().find(|o: &&Expectation| {
                            o.property == e.property
                                && o.target == e.target
                                && o.negated != e.negated
                        });
                        if let Some(first) = clash {
                            self.emit(
                                Diagnostic::error("E0070", e.span, format!("this contradicts an earlier `expect` of `{}`", e.property))
                                    .with_label("contradicts")
                                    .with_secondary(first.span, "the earlier expectation")
                                    .with_hint("keep the one you believe; `lossc analyze` will tell which holds"),
                            );
                        }
                        expects.push(e);
                    }
                }
                _ => {}
            }
        }

        // Warnings: declared but never reaching the objective. After an
        // error the use analysis is incomplete, so they would mislead.
        let has_errors = self.diags.iter().any(Diagnostic::is_error);
        let reached = reach(&objective_uses, &self.lets);
        if minimize.is_some() && !has_errors {
            for v in data.iter().chain(&preds) {
                if !reached.contains(&v.name) {
                    let kind = if preds.contains(v) { "pred" } else { "data" };
                    self.emit(
                        Diagnostic::warning(
                            "W0001",
                            v.span,
                            format!("{kind} `{}` is never used by the objective", v.name),
                        )
                        .with_label("declared here")
                        .with_hint(if kind == "pred" {
                            "its gradient would be zero; use it in `minimize` or remove it"
                        } else {
                            "use it in `minimize` or remove it"
                        }),
                    );
                }
            }
        }
        let unused_lets: Vec<(String, Span)> = self
            .lets
            .iter()
            .filter(|(_, l)| !l.used && !has_errors)
            .map(|(n, l)| (n.clone(), l.span))
            .collect();
        for (n, span) in unused_lets {
            self.emit(
                Diagnostic::warning("W0002", span, format!("`let {n}` is never used"))
                    .with_label("defined here")
                    .with_hint("use it or remove it"),
            );
        }
        for stmt in &spec.stmts {
            let registered = |d: &Def| {
                self.defs
                    .get(&d.name.name)
                    .is_some_and(|v| v.iter().any(|r| std::ptr::eq(r.def, d)))
            };
            if let StmtKind::Def(d) = &stmt.kind
                && !has_errors
                && registered(d)
                && !self.used_defs.contains(&d.name.name)
            {
                self.emit(
                    Diagnostic::warning(
                        "W0002",
                        d.name.span,
                        format!("`def {}` is never used", d.name.name),
                    )
                    .with_label("defined here")
                    .with_hint("call it or remove it"),
                );
            }
        }

        let sizes = self
            .sizes
            .iter()
            .map(|(k, v)| (k.clone(), v.value.map(|(n, _)| n)))
            .collect();
        Some(Checked {
            name: name?.name.clone(),
            task: self.task?,
            data,
            preds,
            params,
            costs,
            expects,
            sizes,
            spec: Spec {
                stmts: Vec::new(),
                span: spec.span,
            },
        })
    }

    fn task_kind(&mut self, t: &Ident) -> Option<Task> {
        if let Some((_, k)) = Task::ALL.iter().find(|(n, _)| *n == t.name) {
            return Some(*k);
        }
        let names = Task::ALL.iter().map(|(n, _)| *n);
        self.emit(
            Diagnostic::error("E0013", t.span, format!("unknown task `{}`", t.name))
                .with_label("not a task")
                .with_hint_opt(did_you_mean(&t.name, names).map(|s| format!("did you mean `{s}`?")))
                .with_hint("tasks: binary, multiclass, multilabel, regression, ranking, embedding"),
        );
        None
    }

    fn check_reserved(&mut self, n: &Ident) -> bool {
        if RESERVED.contains(&n.name.as_str()) {
            self.emit(
                Diagnostic::error("E0012", n.span, format!("`{}` is a reserved word", n.name))
                    .with_label("cannot be used as a name")
                    .with_hint(format!("pick another name, such as `{}_`", n.name)),
            );
            return false;
        }
        true
    }

    /// Registers a user-declared name; false (with an error) if taken.
    fn declare_name(&mut self, n: &Ident, kind: &'static str) -> bool {
        if !self.check_reserved(n) {
            return false;
        }
        if let Some((first, first_kind)) = self.names.get(&n.name).copied() {
            self.emit(
                Diagnostic::error("E0011", n.span, format!("`{}` is already declared", n.name))
                    .with_label(format!("second declaration, as a {kind}"))
                    .with_secondary(first, format!("first declared here, as a {first_kind}"))
                    .with_hint("every data, pred, param, let, def and size name must be distinct"),
            );
            return false;
        }
        self.names.insert(n.name.clone(), (n.span, kind));
        true
    }

    fn declare_var(&mut self, d: &Decl, is_pred: bool) -> Option<Variable> {
        let ok = self.declare_name(&d.name, if is_pred { "pred" } else { "data" });
        let Some((shape, dom)) = self.resolve_type(&d.ty, None) else {
            if ok {
                self.globals.insert(d.name.name.clone(), Global::Broken);
            }
            return None;
        };
        let var = Variable {
            name: d.name.name.clone(),
            type_text: d.ty.to_string(),
            shape,
            dom,
            desc: d.desc.clone(),
            span: d.name.span,
        };
        if is_pred
            && matches!(
                var.dom,
                Dom::Labels(_) | Dom::Class(_) | Dom::Onehot | Dom::Multihot
            )
        {
            self.emit(
                Diagnostic::error("E0061", d.ty.span, format!("pred `{}` has a discrete type", var.name))
                    .with_label(format!("`{}` takes only discrete values", d.ty))
                    .with_hint("a pred is a model output to differentiate: use real, prob, logit, probs [C] or vector [C]"),
            );
            if ok {
                self.globals.insert(var.name.clone(), Global::Broken);
            }
            return None;
        }
        if !ok {
            return None;
        }
        self.globals.insert(
            var.name.clone(),
            if is_pred {
                Global::Pred(var.clone())
            } else {
                Global::Data(var.clone())
            },
        );
        Some(var)
    }

    fn declare_param(&mut self, p: &ParamDecl, value: f64, overridden: bool) -> Option<Param> {
        let ok = self.declare_name(&p.name, "param");
        let range = p.range.as_ref().and_then(|r| self.interval(r));
        if let Some(r) = range
            && !r.contains(value)
        {
            let how = if overridden {
                "the value given with --param"
            } else {
                "the default"
            };
            self.emit(
                Diagnostic::error(
                    "E0050",
                    p.value.span,
                    format!(
                        "param `{}` = {} is outside its range {r}",
                        p.name.name,
                        fmt_num(value)
                    ),
                )
                .with_label(format!("{how} is outside {r}"))
                .with_hint(format!("choose a value in {r}, or widen the range")),
            );
        }
        if !value.is_finite() {
            self.emit(
                Diagnostic::error(
                    "E0050",
                    p.value.span,
                    format!("param `{}` must be finite", p.name.name),
                )
                .with_label("not a finite number"),
            );
        }
        if !ok {
            return None;
        }
        self.globals
            .insert(p.name.name.clone(), Global::Param(value));
        Some(Param {
            name: p.name.name.clone(),
            value,
            range,
            desc: p.desc.clone(),
            span: p.name.span,
        })
    }

    fn declare_def(&mut self, d: &'a Def, origin: Origin) {
        let n = &d.name;
        if !self.check_reserved(n) {
            return;
        }
        if builtins::lookup(&n.name).is_some() {
            self.emit(
                Diagnostic::error(
                    "E0012",
                    n.span,
                    format!("`{}` is a builtin function", n.name),
                )
                .with_label("cannot be redefined")
                .with_hint(format!(
                    "name your function differently, such as `my_{}`",
                    n.name
                )),
            );
            return;
        }
        let mut seen_params = BTreeMap::new();
        for p in &d.params {
            self.check_reserved(&p.name);
            if let Some(first) = seen_params.insert(p.name.name.clone(), p.name.span) {
                self.emit(
                    Diagnostic::error(
                        "E0011",
                        p.name.span,
                        format!("parameter `{}` appears twice", p.name.name),
                    )
                    .with_label("second")
                    .with_secondary(first, "first"),
                );
            }
        }
        let existing = self.defs.get(&n.name).cloned().unwrap_or_default();
        let user_existing: Vec<&DefRef<'a>> = existing
            .iter()
            .filter(|r| r.origin == Origin::User)
            .collect();
        if existing.iter().any(|r| r.origin == Origin::Prelude) && user_existing.is_empty() {
            self.emit(
                Diagnostic::warning(
                    "W0003",
                    n.span,
                    format!("`def {}` replaces the standard loss `{}`", n.name, n.name),
                )
                .with_label("shadows the prelude")
                .with_hint("calls in this file use your definition (the standard losses keep theirs); rename it to keep both"),
            );
            self.defs.insert(n.name.clone(), Vec::new());
        }
        if let Some(first) = user_existing.first() {
            let overload_ok = user_existing.iter().all(|r| {
                matches!((first_param_shape(r.def), first_param_shape(d)), (Some(a), Some(b)) if a != b)
            });
            if !overload_ok {
                self.emit(
                    Diagnostic::error("E0011", n.span, format!("`{}` is already defined", n.name))
                        .with_label("second definition")
                        .with_secondary(first.def.name.span, "first defined here")
                        .with_hint("two defs may share a name only when their first parameters are annotated, one scalar and one vector"),
                );
                return;
            }
        } else if origin == Origin::User && !self.library {
            if let Some((first, kind)) = self.names.get(&n.name).copied() {
                self.emit(
                    Diagnostic::error("E0011", n.span, format!("`{}` is already declared", n.name))
                        .with_label("second declaration, as a def")
                        .with_secondary(first, format!("first declared here, as a {kind}")),
                );
                return;
            }
            self.names.insert(n.name.clone(), (n.span, "def"));
        }
        self.defs
            .entry(n.name.clone())
            .or_default()
            .push(DefRef { def: d, origin });
    }

    /// Per-def checks that do not need a call: names resolve, annotations are
    /// valid, no recursion; defs whose parameters are all annotated are also
    /// type-checked once with those types.
    fn check_defs(&mut self, spec: &'a Spec) {
        let user_defs: Vec<&'a Def> = spec
            .stmts
            .iter()
            .filter_map(|s| {
                if let StmtKind::Def(d) = &s.kind {
                    Some(d)
                } else {
                    None
                }
            })
            .collect();
        for d in &user_defs {
            let mut scope: BTreeSet<String> =
                d.params.iter().map(|p| p.name.name.clone()).collect();
            for p in &d.params {
                if let Some(t) = &p.ty {
                    let mut local = BTreeMap::new();
                    self.resolve_type(t, Some(&mut local));
                    scope.extend(local.into_keys());
                }
            }
            self.resolve_names(&d.body, &mut scope);
        }
        self.check_recursion(&user_defs);
        for d in user_defs {
            if !d.params.is_empty()
                && d.params.iter().all(|p| p.ty.is_some())
                && !self.is_recursive(d)
            {
                let mut frame = DefFrame {
                    params: BTreeMap::new(),
                    sizes: BTreeMap::new(),
                    sees_globals: !self.library,
                    in_other_row: BTreeSet::new(),
                };
                let mut ok = true;
                for p in &d.params {
                    let Some(t) = &p.ty else { continue };
                    let mut local = BTreeMap::new();
                    match self.resolve_type(t, Some(&mut local)) {
                        Some((shape, dom)) => {
                            // A def's size names are its own: give them names
                            // no file size can have, so checking the def alone
                            // never binds the file's `K`.
                            for (k, _) in local {
                                let generic = Size::Name(format!("{k} (of {})", d.name.name));
                                frame.sizes.entry(k).or_insert(generic);
                            }
                            let level = if p.default.is_some() {
                                Level::Const
                            } else {
                                Level::Sample
                            };
                            frame
                                .params
                                .insert(p.name.name.clone(), Ty::Val { shape, dom, level });
                        }
                        None => ok = false,
                    }
                }
                if ok {
                    let used = self.used_defs.clone();
                    self.frames.push(frame);
                    self.def_stack.push(d.name.name.clone());
                    self.uses.push(BTreeSet::new());
                    self.expr(&d.body);
                    self.uses.pop();
                    self.def_stack.pop();
                    self.frames.pop();
                    self.used_defs = used;
                }
            }
        }
    }

    fn is_recursive(&self, d: &Def) -> bool {
        self.diags
            .iter()
            .any(|x| x.code == "E0023" && x.span == Some(d.name.span))
    }

    fn check_recursion(&mut self, defs: &[&'a Def]) {
        let names: BTreeSet<&str> = defs.iter().map(|d| d.name.name.as_str()).collect();
        let mut graph: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
        for d in defs {
            let mut calls = Vec::new();
            walk(&d.body, &mut |e| {
                if let ExprKind::Call(f, _) = &e.kind
                    && names.contains(f.name.as_str())
                {
                    calls.push(names.get(f.name.as_str()).copied().unwrap_or(""));
                }
            });
            graph.entry(d.name.name.as_str()).or_default().extend(calls);
        }
        let mut reported: BTreeSet<Vec<&str>> = BTreeSet::new();
        for d in defs {
            let start = d.name.name.as_str();
            // Breadth-first search for a way back to `start`, keeping only
            // each node's parent: linear per def, not a path copy per step.
            let mut parent: BTreeMap<&str, &str> = BTreeMap::new();
            let mut queue = std::collections::VecDeque::from([start]);
            let mut closing = None;
            'search: while let Some(node) = queue.pop_front() {
                for &next in graph.get(node).map(Vec::as_slice).unwrap_or(&[]) {
                    if next == start {
                        closing = Some(node);
                        break 'search;
                    }
                    if next != start && !parent.contains_key(next) {
                        parent.insert(next, node);
                        queue.push_back(next);
                    }
                }
            }
            let Some(last) = closing else { continue };
            let mut path = vec![last];
            while let Some(&p) = parent.get(path[path.len() - 1]) {
                path.push(p);
            }
            if path[path.len() - 1] != start {
                path.push(start);
            }
            path.reverse();
            let mut members = path.clone();
            members.sort_unstable();
            members.dedup();
            if !reported.insert(members) {
                continue;
            }
            let msg = if path.len() == 1 {
                format!("`{start}` calls itself")
            } else {
                let mut cycle = path.clone();
                cycle.push(start);
                format!("`{start}` calls itself through {}", cycle.join(" → "))
            };
            self.emit(
                Diagnostic::error("E0023", d.name.span, msg)
                    .with_label("recursive definition")
                    .with_hint(
                        "defs are expanded inline, so recursion is not allowed; unroll it by hand",
                    ),
            );
        }
    }

    fn resolve_names(&mut self, e: &Expr, scope: &mut BTreeSet<String>) {
        match &e.kind {
            ExprKind::Var(n) => {
                let known = scope.contains(n)
                    || (!self.library
                        && (self.globals.contains_key(n) || self.sizes.contains_key(n)));
                if !known {
                    let candidates: Vec<String> =
                        scope.iter().chain(self.globals.keys()).cloned().collect();
                    let is_let = self.all_lets.contains_key(n);
                    let hint = did_you_mean(n, candidates.iter().map(String::as_str))
                        .filter(|_| !is_let)
                        .map(|s| format!("did you mean `{s}`?"));
                    let extra = if is_let {
                        Some(format!(
                            "`{n}` is a let; lets are not visible inside a def: pass it as an argument"
                        ))
                    } else {
                        None
                    };
                    self.emit(
                        Diagnostic::error("E0010", e.span, format!("unknown name `{n}`"))
                            .with_label("not declared")
                            .with_hint_opt(hint)
                            .with_hint_opt(extra),
                    );
                }
            }
            ExprKind::Reduce {
                index,
                filter,
                body,
                ..
            } => {
                let fresh = scope.insert(index.name.clone());
                if let Some(f) = filter {
                    self.resolve_names(f, scope);
                }
                self.resolve_names(body, scope);
                if fresh {
                    scope.remove(&index.name);
                }
            }
            ExprKind::Call(f, args) => {
                if builtins::lookup(&f.name).is_none() && !self.defs.contains_key(&f.name) {
                    self.unknown_function(f);
                }
                for a in args {
                    self.resolve_names(&a.value, scope);
                }
            }
            ExprKind::At(x, j) => {
                self.resolve_names(x, scope);
                if !scope.contains(&j.name) {
                    self.emit(unbound_index(j));
                }
            }
            _ => each_child(e, &mut |c| self.resolve_names(c, scope)),
        }
    }

    fn unknown_function(&mut self, f: &Ident) {
        let mut candidates: Vec<&str> = builtins::BUILTINS.iter().map(|b| b.name).collect();
        candidates.extend(self.defs.keys().map(String::as_str));
        let hint = did_you_mean(&f.name, candidates.iter().copied())
            .map(|s| format!("did you mean `{s}`?"));
        let is_value = self.globals.contains_key(&f.name) || self.all_lets.contains_key(&f.name);
        let d = Diagnostic::error("E0016", f.span, format!("unknown function `{}`", f.name))
            .with_label("no builtin, standard loss or def has this name")
            .with_hint_opt(hint)
            .with_hint_opt(is_value.then(|| {
                format!(
                    "`{}` is a value, not a function; write `{} * (...)` to multiply",
                    f.name, f.name
                )
            }))
            .with_hint_opt(
                (!is_value).then(|| "`lossc prelude` lists the standard losses".to_string()),
            );
        self.emit(d);
    }

    // -------------------------------------------------------------- types

    fn interval(&mut self, r: &Interval) -> Option<Range> {
        let range = Range::new(r.lo.value, r.hi.value, r.lo_closed, r.hi_closed);
        let empty =
            r.lo.value > r.hi.value || (r.lo.value == r.hi.value && !(r.lo_closed && r.hi_closed));
        if empty {
            self.emit(
                Diagnostic::error("E0051", r.span, format!("the interval {range} is empty"))
                    .with_label("lower bound must be below the upper bound")
                    .with_hint(if r.lo.value > r.hi.value {
                        format!(
                            "did you mean {}?",
                            Range::new(r.hi.value, r.lo.value, r.lo_closed, r.hi_closed)
                        )
                    } else {
                        format!(
                            "a single value is [{0}, {0}]; a constant needs no interval",
                            fmt_num(r.lo.value)
                        )
                    }),
            );
            return None;
        }
        let closed_inf =
            (r.lo_closed && r.lo.value.is_infinite()) || (r.hi_closed && r.hi.value.is_infinite());
        if closed_inf {
            self.emit(
                Diagnostic::error("E0051", r.span, "an infinite bound must be open")
                    .with_label("no number equals infinity")
                    .with_hint("write (0, inf) or [0, inf)"),
            );
            return None;
        }
        Some(range)
    }

    /// Resolves a type; `local` collects size names for def annotations,
    /// which are local to the def rather than the file's.
    fn resolve_type(
        &mut self,
        t: &TypeExpr,
        local: Option<&mut BTreeMap<String, Span>>,
    ) -> Option<(Shape, Dom)> {
        let name = t.name.name.as_str();
        let arg = t.arg.as_ref();
        let bad_arg = |this: &mut Self, what: &str, hint: String| {
            let span = match arg {
                Some(TypeArg::Interval(i)) => i.span,
                Some(TypeArg::Labels(ls)) => ls.first().map_or(t.span, |n| n.span),
                Some(TypeArg::Size(s)) => s.span(),
                None => t.span,
            };
            this.emit(
                Diagnostic::error("E0014", span, format!("`{name}` {what}"))
                    .with_label("in this type")
                    .with_hint(hint),
            );
            None
        };
        match name {
            "real" => match arg {
                None => Some((Shape::Scalar, Dom::Range(Range::REAL))),
                Some(TypeArg::Interval(i)) => {
                    self.interval(i).map(|r| (Shape::Scalar, Dom::Range(r)))
                }
                Some(_) => bad_arg(
                    self,
                    "takes an interval",
                    "write real, real [0, 1] or real (0, inf); for a vector use vector [D]".into(),
                ),
            },
            "prob" | "logit" => match arg {
                None => Some((
                    Shape::Scalar,
                    Dom::Range(if name == "prob" {
                        Range::PROB
                    } else {
                        Range::REAL
                    }),
                )),
                Some(_) => bad_arg(
                    self,
                    "takes no argument",
                    format!(
                        "write `{name}` alone; for a vector use {}",
                        if name == "prob" {
                            "probs [C]"
                        } else {
                            "vector [C]"
                        }
                    ),
                ),
            },
            "label" => match arg {
                Some(TypeArg::Labels(ls)) => {
                    let mut seen = BTreeSet::new();
                    for n in ls {
                        if !n.value.is_finite() {
                            self.emit(
                                Diagnostic::error(
                                    "E0053",
                                    n.span,
                                    "a label must be a finite number",
                                )
                                .with_label("here"),
                            );
                            return None;
                        }
                        if !seen.insert(n.value.to_bits()) {
                            self.emit(
                                Diagnostic::error(
                                    "E0053",
                                    n.span,
                                    format!("label {} is listed twice", fmt_num(n.value)),
                                )
                                .with_label("duplicate"),
                            );
                            return None;
                        }
                    }
                    if ls.len() < 2 {
                        self.emit(
                            Diagnostic::error(
                                "E0053",
                                t.span,
                                "a label set needs at least two values",
                            )
                            .with_label("one value is a constant, not a label")
                            .with_hint("for binary labels write label {0, 1}"),
                        );
                        return None;
                    }
                    Some((
                        Shape::Scalar,
                        Dom::labels(ls.iter().map(|n| n.value).collect()),
                    ))
                }
                _ => bad_arg(
                    self,
                    "needs its set of values",
                    "write label {0, 1} or label {-1, 1}".into(),
                ),
            },
            "class" | "onehot" | "multihot" | "probs" | "vector" => match arg {
                Some(TypeArg::Size(s)) => {
                    let size = self.size_ref(s, local)?;
                    Some(match name {
                        "class" => (Shape::Scalar, Dom::Class(size)),
                        "onehot" => (Shape::Vector(size), Dom::Onehot),
                        "multihot" => (Shape::Vector(size), Dom::Multihot),
                        "probs" => (Shape::Vector(size), Dom::Probs),
                        _ => (Shape::Vector(size), Dom::Range(Range::REAL)),
                    })
                }
                _ => bad_arg(
                    self,
                    "needs a size",
                    format!("write {name} [C] with a size name, or {name} [10]"),
                ),
            },
            _ => {
                self.emit(
                    Diagnostic::error("E0014", t.name.span, format!("unknown type `{name}`"))
                        .with_label("not a type")
                        .with_hint_opt(did_you_mean(name, TYPES.iter().copied()).map(|s| format!("did you mean `{s}`?")))
                        .with_hint("types: real, prob, logit, label {..}, class [C], onehot [C], multihot [C], probs [C], vector [D]"),
                );
                None
            }
        }
    }

    fn size_ref(
        &mut self,
        s: &SizeRef,
        local: Option<&mut BTreeMap<String, Span>>,
    ) -> Option<Size> {
        match s {
            SizeRef::Lit(0, span) => {
                self.emit(
                    Diagnostic::error("E0052", *span, "a vector size must be at least 1")
                        .with_label("size 0"),
                );
                None
            }
            SizeRef::Lit(n, _) => Some(Size::Lit(*n)),
            SizeRef::Name(n) => {
                if let Some(local) = local {
                    local.entry(n.name.clone()).or_insert(n.span);
                    return Some(Size::Name(n.name.clone()));
                }
                if !self.sizes.contains_key(&n.name) {
                    if !self.check_reserved(n) {
                        return None;
                    }
                    if let Some((first, kind)) = self.names.get(&n.name).copied() {
                        self.emit(
                            Diagnostic::error(
                                "E0011",
                                n.span,
                                format!("`{}` is already declared as a {kind}", n.name),
                            )
                            .with_label("used as a size name here")
                            .with_secondary(first, format!("declared as a {kind} here"))
                            .with_hint("size names must differ from every other name"),
                        );
                        return None;
                    }
                    self.names.insert(n.name.clone(), (n.span, "size"));
                    self.sizes
                        .insert(n.name.clone(), SizeBinding { value: None });
                    self.globals.insert(n.name.clone(), Global::Size);
                }
                Some(Size::Name(n.name.clone()))
            }
        }
    }

    /// Makes two vector sizes agree, binding size names to numbers.
    fn unify(&mut self, a: &Size, b: &Size, span: Span) -> bool {
        // Global names stay names here, so that a name bound to two
        // different numbers is reported as such rather than as two numbers.
        let a = self.local(a);
        let b = self.local(b);
        match (&a, &b) {
            _ if a == b => true,
            (Size::Name(n), Size::Lit(v)) | (Size::Lit(v), Size::Name(n))
                if self.sizes.contains_key(n) =>
            {
                let binding = self.sizes.get_mut(n).expect("checked above");
                match binding.value {
                    None => {
                        binding.value = Some((*v, span));
                        true
                    }
                    Some((w, _)) if w == *v => true,
                    Some((w, first)) => {
                        self.emit(
                            Diagnostic::error(
                                "E0044",
                                span,
                                format!("size `{n}` is bound to two numbers: {w} and {v}"),
                            )
                            .with_label(format!("here `{n}` must be {v}"))
                            .with_secondary(first, format!("here `{n}` became {w}"))
                            .with_hint("a size name stands for one length in the whole file"),
                        );
                        false
                    }
                }
            }
            _ => {
                let generic = |s: &Size| matches!(s, Size::Name(n) if n.contains(" (of "));
                let hint = if generic(&a) || generic(&b) {
                    "a size name in a def's annotation stands for whatever size each call passes; annotate the literal size if the def needs one"
                } else if matches!((&a, &b), (Size::Name(_), Size::Name(_))) {
                    "if they are the same length, use one size name for both"
                } else {
                    "vectors combined component by component must have the same size"
                };
                self.emit(
                    Diagnostic::error(
                        "E0043",
                        span,
                        format!("vectors of different sizes combined: {a} and {b}"),
                    )
                    .with_label(format!("sizes {a} and {b}"))
                    .with_hint(hint),
                );
                false
            }
        }
    }

    /// A size with a def's local names replaced by what they stand for in
    /// this call.
    fn local(&self, s: &Size) -> Size {
        if let Size::Name(n) = s
            && let Some(f) = self.frames.last()
            && let Some(actual) = f.sizes.get(n)
            && actual != s
        {
            return actual.clone();
        }
        s.clone()
    }

    /// A size with global names replaced by their bound numbers and a def's
    /// local names by what they stand for in this call.
    fn subst(&self, s: &Size) -> Size {
        match s {
            Size::Name(n) => {
                if let Some(f) = self.frames.last()
                    && let Some(actual) = f.sizes.get(n)
                    && actual != s
                {
                    return self.subst(actual);
                }
                match self.sizes.get(n).and_then(|b| b.value) {
                    Some((v, _)) => Size::Lit(v),
                    None => s.clone(),
                }
            }
            lit => lit.clone(),
        }
    }

    // -------------------------------------------------------- statements

    fn check_objective(&mut self, e: &Expr, ty: &Ty) {
        match ty {
            Ty::Val { shape: Shape::Vector(s), .. } => self.emit(
                Diagnostic::error("E0047", e.span, format!("the objective is a vector of size {s}"))
                    .with_label("must be one number")
                    .with_hint("reduce the components first: minimize mean(sum[c](...))"),
            ),
            Ty::Val { level: Level::Sample, .. } => self.emit(
                Diagnostic::error("E0034", e.span, "the objective is a per-sample value")
                    .with_label("not reduced over the samples")
                    .with_hint(format!("wrap it in a sample reduction: minimize mean({})", self.text(e.span))),
            ),
            Ty::Val { level: Level::Const, .. } => self.emit(
                Diagnostic::error("E0034", e.span, "the objective is a constant")
                    .with_label("does not depend on any data or pred")
                    .with_hint("minimize a sample reduction of a per-sample loss, e.g. minimize mean(mse(y, yhat))"),
            ),
            Ty::Cond => self.emit(
                Diagnostic::error("E0048", e.span, "the objective is a condition, not a number")
                    .with_label("a comparison")
                    .with_hint("use if ... then ... else ... to turn a condition into a value"),
            ),
            _ => {}
        }
    }

    fn expectation(&mut self, x: &Expect, span: Span) -> Option<Expectation> {
        let name = x.property.name.as_str();
        if !PROPERTIES.contains(&name) {
            self.emit(
                Diagnostic::error("E0015", x.property.span, format!("unknown property `{name}`"))
                    .with_label("not a property")
                    .with_hint_opt(did_you_mean(name, PROPERTIES.iter().copied()).map(|s| format!("did you mean `{s}`?")))
                    .with_hint("properties: differentiable, convex, bounded_gradient, finite, calibrated, estimand = mean|median|quantile(tau)"),
            );
            return None;
        }
        let property = match (name, &x.value) {
            ("estimand", Some((v, arg))) => {
                match (v.name.as_str(), arg) {
                    ("mean", None) => Property::Estimand(Estimand::Mean),
                    ("median", None) => Property::Estimand(Estimand::Median),
                    ("quantile", Some(t)) if t.value > 0.0 && t.value < 1.0 => {
                        Property::Estimand(Estimand::Quantile(t.value))
                    }
                    ("quantile", Some(t)) => {
                        self.emit(
                            Diagnostic::error(
                                "E0015",
                                t.span,
                                "a quantile level must lie in (0, 1)",
                            )
                            .with_label("outside (0, 1)")
                            .with_hint("e.g. estimand = quantile(0.9)"),
                        );
                        return None;
                    }
                    ("mean" | "median", Some(arg)) => {
                        self.emit(
                            Diagnostic::error(
                                "E0015",
                                arg.span,
                                format!("`{}` takes no argument", v.name),
                            )
                            .with_label("remove this")
                            .with_hint(format!(
                                "write estimand = {}; only quantile takes a level",
                                v.name
                            )),
                        );
                        return None;
                    }
                    ("quantile", None) => {
                        self.emit(
                            Diagnostic::error("E0015", v.span, "`quantile` needs its level")
                                .with_label("which quantile?")
                                .with_hint("write estimand = quantile(0.9)"),
                        );
                        return None;
                    }
                    _ => {
                        self.emit(
                        Diagnostic::error("E0015", v.span, format!("unknown estimand `{}`", self.text(v.span)))
                            .with_label("not an estimand")
                            .with_hint("write estimand = mean, estimand = median or estimand = quantile(0.9)"),
                    );
                        return None;
                    }
                }
            }
            ("estimand", None) => {
                self.emit(
                    Diagnostic::error("E0015", x.property.span, "`estimand` needs a value")
                        .with_label("estimand of what?")
                        .with_hint(
                            "write estimand = mean, estimand = median or estimand = quantile(0.9)",
                        ),
                );
                return None;
            }
            (_, Some((v, _))) => {
                self.emit(
                    Diagnostic::error("E0015", v.span, format!("`{name}` takes no value"))
                        .with_label("only estimand takes a value")
                        .with_hint(format!("write `expect {name}` or `expect not {name}`")),
                );
                return None;
            }
            ("differentiable", None) => Property::Differentiable,
            ("convex", None) => Property::Convex,
            ("bounded_gradient", None) => Property::BoundedGradient,
            ("finite", None) => Property::Finite,
            _ => Property::Calibrated,
        };
        if let Some(task) = self.task {
            let fits = match property {
                Property::Calibrated => matches!(task, Task::Binary | Task::Multiclass),
                Property::Estimand(_) => task == Task::Regression,
                _ => true,
            };
            if !fits {
                let (what, tasks) = match property {
                    Property::Calibrated => ("calibrated", "binary and multiclass tasks"),
                    _ => ("estimand", "regression tasks"),
                };
                self.emit(
                    Diagnostic::error(
                        "E0070",
                        x.property.span,
                        format!("`{what}` does not apply to a {task} task"),
                    )
                    .with_label(format!("only for {tasks}"))
                    .with_hint("remove this expect, or check the task"),
                );
                return None;
            }
        }
        if let Some(t) = &x.target
            && !matches!(self.globals.get(&t.name), Some(Global::Pred(_)))
        {
            let preds: Vec<String> = self
                .globals
                .iter()
                .filter(|(_, g)| matches!(g, Global::Pred(_)))
                .map(|(n, _)| n.clone())
                .collect();
            self.emit(
                Diagnostic::error("E0070", t.span, format!("`{}` is not a pred", t.name))
                    .with_label("expect ... for NAME takes a pred")
                    .with_hint_opt(
                        did_you_mean(&t.name, preds.iter().map(String::as_str))
                            .map(|s| format!("did you mean `{s}`?")),
                    )
                    .with_hint(format!(
                        "preds: {}",
                        if preds.is_empty() {
                            "none".into()
                        } else {
                            preds.join(", ")
                        }
                    )),
            );
            return None;
        }
        Some(Expectation {
            negated: x.negated,
            property,
            target: x.target.as_ref().map(|t| t.name.clone()),
            span,
        })
    }

    // ------------------------------------------------------- expressions

    fn record_use(&mut self, name: &str) {
        if let Some(u) = self.uses.last_mut() {
            u.insert(name.to_string());
        }
    }

    fn in_per_sample_context(&self) -> bool {
        self.sample_depth > 0 || !self.indices.is_empty()
    }

    fn value(&mut self, e: &Expr) -> Ty {
        let ty = self.expr(e);
        if ty == Ty::Cond {
            self.emit(
                Diagnostic::error("E0048", e.span, "a condition is used as a number")
                    .with_label("this is true or false, not a number")
                    .with_hint(format!(
                        "write `if {} then 1 else 0` for an indicator",
                        self.text(e.span)
                    )),
            );
            return Ty::Error;
        }
        ty
    }

    /// Checks a condition; returns its level (a condition on params is
    /// constant, one on a sample reduction is reduced).
    fn cond(&mut self, e: &Expr) -> Level {
        match &e.kind {
            ExprKind::Binary(op, a, b) if op.is_logical() => {
                let (la, lb) = (self.cond(a), self.cond(b));
                self.combine_levels(&[(a.span, la), (b.span, lb)])
            }
            ExprKind::Unary(UnOp::Not, a) => self.cond(a),
            ExprKind::Binary(op, a, b) if op.is_comparison() => self.comparison(*op, a, b),
            _ => match self.expr(e) {
                Ty::Cond => Level::Sample,
                Ty::Error => Level::Const,
                _ => {
                    self.emit(
                        Diagnostic::error("E0048", e.span, "expected a condition")
                            .with_label("this is a number, not true or false")
                            .with_hint(format!("compare it, as in `{} == 1`", self.text(e.span))),
                    );
                    Level::Const
                }
            },
        }
    }

    fn combine_levels(&mut self, parts: &[(Span, Level)]) -> Level {
        let has = |l| parts.iter().any(|(_, x)| *x == l);
        if has(Level::Sample) && has(Level::Reduced) && !self.in_minimize {
            let span = parts
                .iter()
                .find(|(_, l)| *l == Level::Reduced)
                .map(|(s, _)| *s)
                .unwrap_or_default();
            self.emit(
                Diagnostic::error("E0032", span, format!("`{}` reduces over all samples, outside `minimize`", self.text(span)))
                    .with_label("a sample reduction inside a per-sample value")
                    .with_hint("mean(...) and sum(...) without an index belong only in `minimize`")
                    .with_hint("for a batch statistic in a per-sample value use a batch reduction, as in mean[j](x@j)"),
            );
            return Level::Sample;
        }
        if has(Level::Sample) && has(Level::Reduced) {
            let span = parts
                .iter()
                .find(|(_, l)| *l == Level::Sample)
                .map(|(s, _)| *s)
                .unwrap_or_default();
            self.emit(
                Diagnostic::error(
                    "E0034",
                    span,
                    "a per-sample value is combined with a sample reduction",
                )
                .with_label("this varies per sample, outside any mean(...) or sum(...)")
                .with_hint(format!(
                    "move it inside the reduction, e.g. mean({} * ...)",
                    self.text(span)
                )),
            );
            return Level::Reduced;
        }
        parts.iter().map(|(_, l)| *l).max().unwrap_or(Level::Const)
    }

    fn broadcast(&mut self, parts: &[(Span, &Shape)], span: Span) -> Shape {
        let mut out: Option<Size> = None;
        for (_, s) in parts {
            if let Shape::Vector(size) = s {
                match &out {
                    None => out = Some(size.clone()),
                    Some(prev) => {
                        let prev = prev.clone();
                        self.unify(&prev, size, span);
                    }
                }
            }
        }
        out.map_or(Shape::Scalar, Shape::Vector)
    }

    fn expr(&mut self, e: &Expr) -> Ty {
        match &e.kind {
            ExprKind::Num(v) => Ty::scalar(Dom::labels(vec![*v]), Level::Const),
            ExprKind::Var(n) => self.var(n, e.span),
            ExprKind::Row => {
                self.emit(row_misuse(e.span));
                Ty::Error
            }
            ExprKind::Unary(UnOp::Not, a) => {
                self.cond(a);
                Ty::Cond
            }
            ExprKind::Unary(UnOp::Neg, a) => match self.value(a) {
                Ty::Val { shape, dom, level } => Ty::Val {
                    shape,
                    dom: arith::neg(&dom),
                    level,
                },
                other => other,
            },
            ExprKind::Binary(op, a, b) if op.is_logical() => {
                self.cond(a);
                self.cond(b);
                Ty::Cond
            }
            ExprKind::Binary(op, a, b) if op.is_comparison() => {
                self.comparison(*op, a, b);
                Ty::Cond
            }
            ExprKind::Binary(op, a, b) => {
                let ta = self.value(a);
                let tb = self.value(b);
                let (Some((sa, da, la)), Some((sb, db, lb))) = (ta.parts(), tb.parts()) else {
                    return Ty::Error;
                };
                let shape = self.broadcast(&[(a.span, &sa), (b.span, &sb)], e.span);
                let level = self.combine_levels(&[(a.span, la), (b.span, lb)]);
                let dom = match op {
                    BinOp::Add => arith::add(&da, &db),
                    BinOp::Sub => arith::add(&da, &arith::neg(&db)),
                    BinOp::Mul => arith::mul(&da, &db),
                    BinOp::Div => arith::div(&da, &db),
                    _ => Dom::Unknown,
                };
                Ty::Val { shape, dom, level }
            }
            ExprKind::If(c, a, b) => {
                let lc = self.cond(c);
                let ta = self.value(a);
                let tb = self.value(b);
                let (Some((sa, da, la)), Some((sb, db, lb))) = (ta.parts(), tb.parts()) else {
                    return Ty::Error;
                };
                let shape = self.broadcast(&[(a.span, &sa), (b.span, &sb)], e.span);
                let level = self.combine_levels(&[(a.span, la), (b.span, lb), (c.span, lc)]);
                let dom = match (&da, &db) {
                    (Dom::Labels(x), Dom::Labels(y)) => {
                        Dom::labels(x.iter().chain(y).copied().collect())
                    }
                    _ => Dom::Unknown,
                };
                Ty::Val { shape, dom, level }
            }
            ExprKind::Index(v, k) => self.index(v, k, e.span),
            ExprKind::At(x, j) => self.at(x, j),
            ExprKind::Reduce {
                op,
                index,
                filter,
                body,
            } => self.reduce(*op, index, filter.as_deref(), body),
            ExprKind::Call(f, args) => self.call(f, args, e.span),
        }
    }

    fn var(&mut self, n: &str, span: Span) -> Ty {
        if let Some(ix) = self.indices.iter().rev().find(|i| i.name == n) {
            return match ix.kind {
                IndexKind::Batch => {
                    self.emit(batch_misuse(n, span));
                    Ty::Error
                }
                IndexKind::Feature => {
                    let dom = ix.size.clone().map_or(Dom::Unknown, Dom::Class);
                    Ty::scalar(dom, Level::Sample)
                }
            };
        }
        if let Some(frame) = self.frames.last() {
            if let Some(t) = frame.params.get(n) {
                return t.clone();
            }
            if frame.sizes.contains_key(n) {
                return Ty::scalar(
                    Dom::Range(Range::new(1.0, f64::INFINITY, true, false)),
                    Level::Const,
                );
            }
            if !frame.sees_globals {
                return self.unknown_name(n, span);
            }
        } else if let Some(l) = self.lets.get_mut(n) {
            l.used = true;
            let ty = l.ty.clone();
            let def_span = l.span;
            // Record the let itself; what it uses is added once, at the end
            // (copying its uses here made long let chains quadratic).
            self.record_use(n);
            if ty.level() == Level::Reduced && self.in_per_sample_context() {
                self.emit(
                    Diagnostic::error("E0032", span, format!("`{n}` is a sample reduction, used inside a per-sample expression"))
                        .with_label("reduced over the samples")
                        .with_secondary(def_span, "defined here")
                        .with_hint("mean(...) and sum(...) over samples belong only in `minimize`; for a batch statistic per sample use mean[j](x@j)"),
                );
                return Ty::Error;
            }
            return ty;
        }
        match self.globals.get(n).cloned() {
            Some(Global::Data(v)) | Some(Global::Pred(v)) => {
                self.record_use(n);
                Ty::Val {
                    shape: v.shape,
                    dom: v.dom,
                    level: Level::Sample,
                }
            }
            Some(Global::Param(value)) => Ty::scalar(Dom::labels(vec![value]), Level::Const),
            Some(Global::Size) => Ty::scalar(
                Dom::Range(Range::new(1.0, f64::INFINITY, true, false)),
                Level::Const,
            ),
            Some(Global::Broken) => Ty::Error,
            None => {
                if self.frames.is_empty() && self.current_let.as_deref() == Some(n) {
                    self.emit(
                        Diagnostic::error("E0024", span, format!("`let {n}` refers to itself"))
                            .with_label("the let being defined")
                            .with_hint("a let is defined once, from values above it; give the new value its own name"),
                    );
                    return Ty::Error;
                }
                if self.frames.is_empty()
                    && let Some(later) = self.all_lets.get(n).copied()
                {
                    self.emit(
                        Diagnostic::error("E0024", span, format!("`{n}` is used before its `let`"))
                            .with_label("used here")
                            .with_secondary(later, "defined later here")
                            .with_hint(
                                "lets are evaluated top to bottom: move the let above this line",
                            ),
                    );
                    return Ty::Error;
                }
                self.unknown_name(n, span)
            }
        }
    }

    /// Whether `n` names a value visible here (so `z[n]` indexes by a value,
    /// not by an unbound index).
    fn is_value_name(&self, n: &str) -> bool {
        match self.frames.last() {
            Some(f) => {
                f.params.contains_key(n)
                    || f.sizes.contains_key(n)
                    || (f.sees_globals && self.globals.contains_key(n))
            }
            None => self.globals.contains_key(n) || self.all_lets.contains_key(n),
        }
    }

    fn unknown_name(&mut self, n: &str, span: Span) -> Ty {
        let mut candidates: Vec<String> = self.indices.iter().map(|i| i.name.clone()).collect();
        if let Some(f) = self.frames.last() {
            candidates.extend(f.params.keys().cloned());
            if f.sees_globals {
                candidates.extend(self.globals.keys().cloned());
            }
        } else {
            candidates.extend(self.globals.keys().cloned());
            candidates.extend(self.lets.keys().cloned());
        }
        let hint = did_you_mean(n, candidates.iter().map(String::as_str))
            .map(|s| format!("did you mean `{s}`?"));
        let fallback = hint
            .is_none()
            .then(|| "declare it with data, pred, param or let".to_string());
        self.emit(
            Diagnostic::error("E0010", span, format!("unknown name `{n}`"))
                .with_label("not declared")
                .with_hint_opt(hint)
                .with_hint_opt(fallback),
        );
        Ty::Error
    }

    fn comparison(&mut self, outer: BinOp, a: &Expr, b: &Expr) -> Level {
        // Row indices (`i`, batch `j`) may be compared with each other; any
        // other operand must be a scalar value.
        let is_row = |this: &Self, e: &Expr| match &e.kind {
            ExprKind::Row => true,
            ExprKind::Var(n) => this
                .indices
                .iter()
                .rev()
                .find(|i| &i.name == n)
                .is_some_and(|i| i.kind == IndexKind::Batch),
            _ => false,
        };
        if let ExprKind::Binary(op, _, mid) = &a.kind
            && op.is_comparison()
        {
            self.emit(
                Diagnostic::error("E0048", a.span.to(b.span), "comparisons do not chain")
                    .with_label("read as (a < b) < c, comparing a condition with a number")
                    .with_hint(format!(
                        "write `{} and {} {} {}`",
                        self.text(a.span),
                        self.text(mid.span),
                        outer.symbol(),
                        self.text(b.span)
                    )),
            );
            return Level::Const;
        }
        let (ra, rb) = (is_row(self, a), is_row(self, b));
        if ra && rb {
            return Level::Sample;
        }
        if ra || rb {
            let (row, other) = if ra { (a, b) } else { (b, a) };
            self.emit(
                Diagnostic::error(
                    "E0041",
                    row.span,
                    format!("row index `{}` compared with a value", self.text(row.span)),
                )
                .with_label("a row index")
                .with_secondary(other.span, "a value")
                .with_hint("compare rows with rows (j != i) and values with values (y@j == y)"),
            );
            return Level::Const;
        }
        let mut levels = Vec::new();
        for side in [a, b] {
            let t = self.value(side);
            levels.push((side.span, t.level()));
            if let Ty::Val {
                shape: Shape::Vector(s),
                ..
            } = t
            {
                self.emit(
                    Diagnostic::error(
                        "E0047",
                        side.span,
                        format!("cannot compare a vector of size {s}"),
                    )
                    .with_label("a vector")
                    .with_hint("compare one component, as in z[c] > 0"),
                );
            }
        }
        self.combine_levels(&levels)
    }

    fn index(&mut self, v: &Expr, k: &Expr, span: Span) -> Ty {
        let tv = self.value(v);
        let Ty::Val { shape, dom, level } = tv else {
            self.expr(k);
            return Ty::Error;
        };
        let Shape::Vector(size) = shape else {
            self.expr(k);
            self.emit(
                Diagnostic::error("E0042", v.span, format!("`{}` is a scalar and cannot be indexed", self.text(v.span)))
                    .with_label("a scalar")
                    .with_hint(format!(
                        "only vectors take an index: declare `{}` as probs [C] or vector [C] to pick a component",
                        self.text(v.span)
                    )),
            );
            return Ty::Error;
        };
        let comp = Ty::Val {
            shape: Shape::Scalar,
            dom: dom.component(),
            level,
        };
        // A reduction's feature index: binds or checks its range.
        if let ExprKind::Var(n) = &k.kind
            && let Some(pos) = self.indices.iter().rposition(|i| &i.name == n)
        {
            if self.indices[pos].kind == IndexKind::Batch {
                self.emit(batch_misuse(n, k.span));
                return Ty::Error;
            }
            match self.indices[pos].size.clone() {
                None => self.indices[pos].size = Some(size),
                Some(prev) => {
                    self.unify(&prev, &size, span);
                }
            }
            return comp;
        }
        if let ExprKind::Num(x) = k.kind {
            let lit = self.subst(&size);
            let valid =
                x >= 0.0 && x.fract() == 0.0 && !matches!(lit, Size::Lit(n) if x >= n as f64);
            if !valid {
                self.emit(
                    Diagnostic::error(
                        "E0045",
                        k.span,
                        format!(
                            "index {} is out of range for a vector of size {lit}",
                            fmt_num(x)
                        ),
                    )
                    .with_label("not a valid component")
                    .with_hint(match lit {
                        Size::Lit(n) => format!("components are numbered 0 to {}", n - 1),
                        Size::Name(n) => format!("components are numbered 0 to {n} - 1"),
                    }),
                );
                return Ty::Error;
            }
            return comp;
        }
        if let ExprKind::Var(n) = &k.kind
            && !self.is_value_name(n)
        {
            self.emit(
                Diagnostic::error("E0040", k.span, format!("index `{n}` is not bound"))
                    .with_label("no reduction binds it")
                    .with_hint(format!(
                        "bind it with a feature reduction, as in sum[{n}]({})",
                        self.text(span)
                    )),
            );
            return Ty::Error;
        }
        let tk = self.value(k);
        let Ty::Val {
            shape: ks,
            dom: kd,
            level: kl,
        } = tk
        else {
            return Ty::Error;
        };
        let ok = ks == Shape::Scalar
            && match &kd {
                Dom::Class(c) => self.unify(c, &size, span),
                Dom::Labels(vs) => {
                    let bound = match self.subst(&size) {
                        Size::Lit(n) => n as f64,
                        Size::Name(_) => f64::INFINITY,
                    };
                    vs.iter()
                        .all(|x| *x >= 0.0 && x.fract() == 0.0 && *x < bound)
                }
                _ => false,
            };
        if !ok {
            let hint = match (&k.kind, self.indices.is_empty()) {
                (ExprKind::Var(n), _) if self.is_value_name(n) => format!(
                    "to pick a component by `{n}`, declare it as a class: data {n} : class [C]"
                ),
                (ExprKind::Var(n), true) if n.len() == 1 => {
                    format!(
                        "bind `{n}` with a reduction, as in sum[{n}]({})",
                        self.text(span)
                    )
                }
                _ => "index with a reduction index (sum[c](z[c])) or a class [C] value (z[y])"
                    .to_string(),
            };
            self.emit(
                Diagnostic::error(
                    "E0040",
                    k.span,
                    format!("`{}` is not an index", self.text(k.span)),
                )
                .with_label(format!(
                    "{} is {}",
                    self.text(k.span),
                    describe_ty(&ks, &kd)
                ))
                .with_hint(hint),
            );
            return Ty::Error;
        }
        let level = self.combine_levels(&[(v.span, level), (k.span, kl)]);
        Ty::Val {
            shape: Shape::Scalar,
            dom: dom.component(),
            level,
        }
    }

    fn at(&mut self, x: &Expr, j: &Ident) -> Ty {
        let bound = self
            .indices
            .iter()
            .rev()
            .find(|i| i.name == j.name)
            .map(|i| i.kind);
        match bound {
            Some(IndexKind::Batch) => {}
            _ => {
                self.emit(unbound_index(j));
                return Ty::Error;
            }
        }
        let mut nested = None;
        let other_row = self
            .frames
            .last()
            .map(|f| f.in_other_row.clone())
            .unwrap_or_default();
        walk(x, &mut |e| match &e.kind {
            ExprKind::At(_, k) => nested = Some(k.span),
            // A parameter whose argument was written `s@j` is already in row j.
            ExprKind::Var(n) if other_row.contains(n) => nested = Some(e.span),
            _ => {}
        });
        if let Some(k) = nested {
            self.emit(
                Diagnostic::error("E0046", k, "`@` inside `@`")
                    .with_label("already evaluated in another row")
                    .with_hint("write x@j for one row; an expression refers to one row at a time"),
            );
            return Ty::Error;
        }
        match self.value(x) {
            // Evaluated in another row, it varies per sample whatever it is.
            Ty::Val { shape, dom, .. } => Ty::Val {
                shape,
                dom,
                level: Level::Sample,
            },
            other => other,
        }
    }

    fn reduce(&mut self, op: Reducer, index: &Ident, filter: Option<&Expr>, body: &Expr) -> Ty {
        self.check_reserved(index);
        let declared = self
            .names
            .get(&index.name)
            .copied()
            .filter(|_| self.frames.is_empty());
        let outer_index = self.indices.iter().any(|i| i.name == index.name);
        if let Some((first, kind)) = declared {
            self.emit(
                Diagnostic::error(
                    "E0011",
                    index.span,
                    format!("index `{}` shadows the {kind} `{}`", index.name, index.name),
                )
                .with_label("inside the reduction this name would mean the index")
                .with_secondary(first, format!("the {kind}"))
                .with_hint("name the index differently, such as c, k or j"),
            );
        } else if outer_index {
            if let Some(outer) = self.indices.iter_mut().rev().find(|i| i.name == index.name) {
                outer.shadowed = true;
            }
            self.emit(
                Diagnostic::error(
                    "E0011",
                    index.span,
                    format!(
                        "index `{}` is already bound by an enclosing reduction",
                        index.name
                    ),
                )
                .with_label("shadows the outer index")
                .with_hint("give the inner reduction its own index name"),
            );
        }
        let batch = uses_at(body, &index.name) || filter.is_some_and(|f| uses_at(f, &index.name));
        let kind = if batch {
            IndexKind::Batch
        } else {
            IndexKind::Feature
        };
        self.indices.push(IndexVar {
            name: index.name.clone(),
            kind,
            size: None,
            shadowed: false,
        });
        let tb = self.value(body);
        let size = self.indices.last().and_then(|i| i.size.clone());
        let shadowed = self.indices.last().is_some_and(|i| i.shadowed);
        if let Some(f) = filter {
            self.cond(f);
        }
        self.indices.pop();
        let vector_body = matches!(
            tb,
            Ty::Val {
                shape: Shape::Vector(_),
                ..
            }
        );
        if kind == IndexKind::Feature
            && size.is_none()
            && tb != Ty::Error
            && !vector_body
            && !shadowed
        {
            self.emit(
                Diagnostic::error("E0045", index.span, format!("cannot tell what `{}` ranges over", index.name))
                    .with_label("never used to index a vector")
                    .with_hint(format!(
                        "a feature index ranges over a vector's components: use it as z[{0}]; a batch index is used as x@{0}",
                        index.name
                    )),
            );
            return Ty::Error;
        }
        match tb {
            Ty::Val {
                shape: Shape::Vector(s),
                ..
            } => {
                self.emit(
                    Diagnostic::error(
                        "E0047",
                        body.span,
                        format!(
                            "the body of {}[{}] is a vector of size {s}",
                            op.name(),
                            index.name
                        ),
                    )
                    .with_label("must be one number per index")
                    .with_hint(format!("index it with [{}]", index.name)),
                );
                Ty::Error
            }
            Ty::Val { dom, level, .. } => {
                if level == Level::Reduced {
                    self.emit(
                        Diagnostic::error(
                            "E0032",
                            body.span,
                            format!("a sample reduction inside {}[{}]", op.name(), index.name),
                        )
                        .with_label("reduced over all samples")
                        .with_hint(
                            "mean(...) and sum(...) without an index belong only in `minimize`",
                        ),
                    );
                    return Ty::Error;
                }
                let dom = match op {
                    Reducer::Max | Reducer::Min => dom,
                    _ => Dom::Unknown,
                };
                Ty::Val {
                    shape: Shape::Scalar,
                    dom,
                    level: if batch { Level::Sample } else { level },
                }
            }
            other => other,
        }
    }

    fn call(&mut self, f: &Ident, args: &[Arg], span: Span) -> Ty {
        if let Some(b) = builtins::lookup(&f.name) {
            return self.builtin(b, f, args, span);
        }
        let in_prelude = !self.library && self.frames.last().is_some_and(|fr| !fr.sees_globals);
        let table = if in_prelude {
            &self.prelude_defs
        } else {
            &self.defs
        };
        let Some(defs) = table.get(&f.name).cloned() else {
            self.unknown_function(f);
            for a in args {
                self.expr(&a.value);
            }
            return Ty::Error;
        };
        self.used_defs.insert(f.name.clone());
        // Argument types are computed once, in the caller's context.
        let tys: Vec<Ty> = args.iter().map(|a| self.value(&a.value)).collect();
        if tys.contains(&Ty::Error) {
            return Ty::Error;
        }
        let chosen = if defs.len() > 1 {
            // Overloads differ by their first parameter: look at the argument
            // bound to it (by position or by name) in each candidate.
            let is_vector = |t: &Ty| {
                matches!(
                    t,
                    Ty::Val {
                        shape: Shape::Vector(_),
                        ..
                    }
                )
            };
            defs.iter()
                .find(|d| {
                    let first = d.def.params.first().map(|p| p.name.name.as_str());
                    let bound = match args.first() {
                        Some(a) if a.name.is_none() => tys.first(),
                        _ => args
                            .iter()
                            .position(|a| a.name.as_ref().map(|n| n.name.as_str()) == first)
                            .map(|k| &tys[k]),
                    };
                    bound.is_some_and(|t| first_param_shape(d.def) == Some(is_vector(t)))
                })
                .copied()
                .unwrap_or(defs[0])
        } else if let Some(d) = defs.first() {
            *d
        } else {
            return Ty::Error;
        };
        self.def_call(chosen, args, tys, span)
    }

    /// Matches arguments to parameter names: positional first, then named.
    fn bind_args(
        &mut self,
        fname: &str,
        params: &[(&str, bool)],
        args: &[Arg],
        call_span: Span,
    ) -> Option<Vec<Option<usize>>> {
        let mut slots: Vec<Option<usize>> = vec![None; params.len()];
        let mut ok = true;
        let mut seen_named = false;
        // The signature, for hints: `huber(y, yhat, delta)`.
        let names: Vec<&str> = params.iter().map(|(p, _)| *p).collect();
        let sig = format!("{fname}({})", names.join(", "));
        for (k, a) in args.iter().enumerate() {
            match &a.name {
                None if seen_named => {
                    self.emit(
                        Diagnostic::error(
                            "E0020",
                            a.value.span,
                            "a positional argument after a named one",
                        )
                        .with_label("positional")
                        .with_hint("put positional arguments first"),
                    );
                    ok = false;
                }
                None if k >= params.len() => {
                    self.emit(
                        Diagnostic::error(
                            "E0020",
                            a.value.span,
                            format!(
                                "`{fname}` takes {} argument{}, but {} were given",
                                params.len(),
                                plural(params.len()),
                                args.len()
                            ),
                        )
                        .with_label("extra argument")
                        .with_hint(sig.clone()),
                    );
                    ok = false;
                }
                None => slots[k] = Some(k),
                Some(n) => {
                    seen_named = true;
                    match params.iter().position(|(p, _)| *p == n.name) {
                        None => {
                            self.emit(
                                Diagnostic::error(
                                    "E0021",
                                    n.span,
                                    format!("`{fname}` has no parameter `{}`", n.name),
                                )
                                .with_label("unknown parameter")
                                .with_hint_opt(
                                    did_you_mean(&n.name, names.iter().copied())
                                        .map(|s| format!("did you mean `{s}`?")),
                                )
                                .with_hint(sig.clone()),
                            );
                            ok = false;
                        }
                        Some(p) if slots[p].is_some() => {
                            self.emit(
                                Diagnostic::error(
                                    "E0022",
                                    n.span,
                                    format!("argument `{}` given twice", n.name),
                                )
                                .with_label("again")
                                .with_secondary(
                                    args[slots[p].unwrap_or(0)].value.span,
                                    "first given here",
                                ),
                            );
                            ok = false;
                        }
                        Some(p) => slots[p] = Some(k),
                    }
                }
            }
        }
        for (slot, (p, has_default)) in slots.iter().zip(params) {
            if slot.is_none() && !has_default && ok {
                self.emit(
                    Diagnostic::error(
                        "E0020",
                        call_span,
                        format!("`{fname}` is missing argument `{p}`"),
                    )
                    .with_label(format!("`{p}` not given"))
                    .with_hint(sig.clone()),
                );
                ok = false;
            }
        }
        ok.then_some(slots)
    }

    fn builtin(&mut self, b: &builtins::Builtin, f: &Ident, args: &[Arg], span: Span) -> Ty {
        let params: Vec<(&str, bool)> = b.params.iter().map(|p| (*p, false)).collect();
        if b.kind == Kind::SampleReduction {
            return self.sample_reduction(b.name, f, args, span);
        }
        let tys: Vec<Ty> = args.iter().map(|a| self.value(&a.value)).collect();
        let Some(slots) = self.bind_args(b.name, &params, args, span) else {
            return Ty::Error;
        };
        let arg = |k: usize| slots[k].map(|i| (&args[i].value, tys[i].clone()));
        if b.kind == Kind::Onehot {
            return self.onehot_builtin(arg(0), slots[1].map(|i| &args[i].value));
        }
        let mut vals = Vec::new();
        for k in 0..params.len() {
            match arg(k) {
                Some((e, Ty::Val { shape, dom, level })) => vals.push((e, shape, dom, level)),
                _ => return Ty::Error,
            }
        }
        let levels: Vec<(Span, Level)> = vals.iter().map(|(e, _, _, l)| (e.span, *l)).collect();
        let level = self.combine_levels(&levels);
        match b.kind {
            Kind::Componentwise | Kind::Identity => {
                let shapes: Vec<(Span, &Shape)> =
                    vals.iter().map(|(e, s, _, _)| (e.span, s)).collect();
                let shape = self.broadcast(&shapes, span);
                let dom = match (b.name, vals.as_slice()) {
                    ("clip", [_, (_, _, Dom::Labels(lo), _), (_, _, Dom::Labels(hi), _)])
                        if lo.len() == 1 && hi.len() == 1 && lo[0] <= hi[0] =>
                    {
                        Dom::Range(Range::new(lo[0], hi[0], true, true))
                    }
                    ("max" | "min" | "clip", _) => Dom::Unknown,
                    (name, [(_, _, d, _), ..]) => builtins::result_dom(name, d),
                    _ => Dom::Unknown,
                };
                Ty::Val { shape, dom, level }
            }
            Kind::VectorToVector | Kind::VectorToScalar => {
                let mut size: Option<Size> = None;
                for (e, s, _, _) in &vals {
                    match s {
                        Shape::Scalar => {
                            let alt = match b.name {
                                "softmax" => "; for a single logit use sigmoid",
                                "logsumexp" => "; for a scalar, logsumexp is the identity",
                                _ => "",
                            };
                            self.emit(
                                Diagnostic::error(
                                    "E0047",
                                    e.span,
                                    format!(
                                        "`{}` expects a vector, but `{}` is a scalar",
                                        b.name,
                                        self.text(e.span)
                                    ),
                                )
                                .with_label("a scalar")
                                .with_hint(format!(
                                    "{} works on vectors such as vector [D] or probs [C]{alt}",
                                    b.name
                                )),
                            );
                            return Ty::Error;
                        }
                        Shape::Vector(v) => match &size {
                            None => size = Some(v.clone()),
                            Some(prev) => {
                                let prev = prev.clone();
                                self.unify(&prev, v, span);
                            }
                        },
                    }
                }
                let size = size.unwrap_or(Size::Lit(1));
                if b.kind == Kind::VectorToVector {
                    Ty::Val {
                        shape: Shape::Vector(size),
                        dom: Dom::Probs,
                        level,
                    }
                } else {
                    Ty::Val {
                        shape: Shape::Scalar,
                        dom: builtins::result_dom(b.name, &Dom::Unknown),
                        level,
                    }
                }
            }
            _ => Ty::Error,
        }
    }

    fn onehot_builtin(&mut self, k: Option<(&Expr, Ty)>, c: Option<&Expr>) -> Ty {
        let (Some((ke, kt)), Some(ce)) = (k, c) else {
            return Ty::Error;
        };
        let size = match &ce.kind {
            ExprKind::Num(v) if *v >= 1.0 && v.fract() == 0.0 && *v < 1e15 => Size::Lit(*v as u64),
            ExprKind::Var(n)
                if matches!(self.globals.get(n), Some(Global::Size))
                    || self.frames.last().is_some_and(|f| f.sizes.contains_key(n)) =>
            {
                Size::Name(n.clone())
            }
            _ => {
                self.emit(
                    Diagnostic::error(
                        "E0052",
                        ce.span,
                        "the second argument of `onehot` must be a size",
                    )
                    .with_label("not a size")
                    .with_hint("write onehot(y, C) with a size name, or onehot(y, 10)"),
                );
                return Ty::Error;
            }
        };
        let Ty::Val {
            shape: Shape::Scalar,
            dom,
            level,
        } = kt
        else {
            self.emit(
                Diagnostic::error("E0047", ke.span, "`onehot` takes a scalar class index")
                    .with_label("not a scalar")
                    .with_hint("onehot(y, C) with y : class [C]"),
            );
            return Ty::Error;
        };
        let index_like = match &dom {
            Dom::Class(_) | Dom::Unknown => true,
            Dom::Labels(vs) => vs.iter().all(|x| *x >= 0.0 && x.fract() == 0.0),
            _ => false,
        };
        if !index_like {
            self.emit(
                Diagnostic::error(
                    "E0040",
                    ke.span,
                    format!("`{}` is not a class index", self.text(ke.span)),
                )
                .with_label(format!("{} is {}", self.text(ke.span), dom.describe()))
                .with_hint("onehot(k, C) takes a class [C] value or non-negative integer labels"),
            );
            return Ty::Error;
        }
        if let Dom::Class(s) = &dom {
            let s = s.clone();
            self.unify(&s, &size, ke.span);
        }
        Ty::Val {
            shape: Shape::Vector(size),
            dom: Dom::Onehot,
            level,
        }
    }

    fn sample_reduction(&mut self, name: &str, f: &Ident, args: &[Arg], span: Span) -> Ty {
        let Some(_) = self.bind_args(name, &[("x", false)], args, span) else {
            return Ty::Error;
        };
        if self.in_per_sample_context() {
            self.emit(
                Diagnostic::error("E0032", f.span, format!("`{name}(...)` over samples inside a per-sample expression"))
                    .with_label("a sample reduction")
                    .with_hint("mean(...) and sum(...) without an index reduce over all samples and belong only in `minimize`")
                    .with_hint(format!("to reduce over a vector's components write {name}[c](...); over other rows, {name}[j](x@j)")),
            );
            return Ty::Error;
        }
        self.sample_depth += 1;
        let t = self.value(&args[0].value);
        self.sample_depth -= 1;
        if t.level() == Level::Reduced {
            self.emit(
                Diagnostic::error(
                    "E0032",
                    args[0].value.span,
                    format!("`{name}(...)` of a value already reduced over the samples"),
                )
                .with_label("already a sample reduction")
                .with_hint("reduce over the samples once: the argument must be a per-sample value"),
            );
            return Ty::Error;
        }
        match t {
            Ty::Val {
                shape: Shape::Vector(s),
                ..
            } => {
                self.emit(
                    Diagnostic::error(
                        "E0033",
                        args[0].value.span,
                        format!("`{name}` over samples of a vector of size {s}"),
                    )
                    .with_label("one vector per sample")
                    .with_hint(format!(
                        "reduce the components first: {name}(sum[c]({}))",
                        indexed(self.text(args[0].value.span), "c")
                    )),
                );
                Ty::Error
            }
            Ty::Val { .. } => Ty::scalar(Dom::Unknown, Level::Reduced),
            other => other,
        }
    }

    fn def_call(&mut self, d: DefRef<'a>, args: &[Arg], tys: Vec<Ty>, span: Span) -> Ty {
        let def = d.def;
        if self.def_stack.contains(&def.name.name) {
            return Ty::Error; // recursion, reported once by check_recursion
        }
        let params: Vec<(&str, bool)> = def
            .params
            .iter()
            .map(|p| (p.name.name.as_str(), p.default.is_some()))
            .collect();
        let Some(slots) = self.bind_args(&def.name.name, &params, args, span) else {
            return Ty::Error;
        };
        let mut frame = DefFrame {
            params: BTreeMap::new(),
            sizes: BTreeMap::new(),
            sees_globals: d.origin == Origin::User,
            in_other_row: BTreeSet::new(),
        };
        let mut ok = true;
        for (p, slot) in def.params.iter().zip(&slots) {
            let (arg_expr, mut ty) = match slot {
                Some(i) => (Some(&args[*i].value), tys[*i].clone()),
                None => (
                    None,
                    Ty::scalar(
                        Dom::labels(vec![p.default.map_or(0.0, |n| n.value)]),
                        Level::Const,
                    ),
                ),
            };
            if let (Some(t), Ty::Val { shape, dom, level }) = (&p.ty, &ty) {
                let mut local = BTreeMap::new();
                // Annotation errors inside the prelude were ruled out by its
                // own check; resolve quietly here.
                let saved = self.diags.len();
                let resolved = self.resolve_type(t, Some(&mut local));
                self.diags.truncate(saved);
                let Some((want_shape, want_dom)) = resolved else {
                    ok = false;
                    continue;
                };
                // A class index stands for its one-hot row where a
                // probability vector is expected.
                let (shape, dom) = match (&want_shape, shape, dom) {
                    (Shape::Vector(_), Shape::Scalar, Dom::Class(c))
                        if matches!(want_dom, Dom::Probs | Dom::Onehot) =>
                    {
                        (Shape::Vector(c.clone()), Dom::Onehot)
                    }
                    _ => (shape.clone(), dom.clone()),
                };
                let at = arg_expr.map_or(span, |e| e.span);
                match (&want_shape, &shape) {
                    (Shape::Scalar, Shape::Vector(s)) => {
                        self.emit(
                            Diagnostic::error(
                                "E0047",
                                at,
                                format!("`{}` expects a scalar for `{}`, but `{}` is a vector of size {s}", def.name.name, p.name.name, self.text(at)),
                            )
                            .with_label("a vector")
                            .with_hint(format!("apply it per component and sum: sum[c]({})", per_component(&def.name.name, args, &tys, self.src))),
                        );
                        // One shape error per call: the others would repeat it.
                        return Ty::Error;
                    }
                    (Shape::Vector(_), Shape::Scalar) => {
                        self.emit(
                            Diagnostic::error(
                                "E0047",
                                at,
                                format!(
                                    "`{}` expects a vector for `{}`, but `{}` is a scalar",
                                    def.name.name,
                                    p.name.name,
                                    self.text(at)
                                ),
                            )
                            .with_label("a scalar")
                            .with_hint_opt(scalar_alternative(&def.name.name)),
                        );
                        ok = false;
                        continue;
                    }
                    (Shape::Vector(Size::Name(local_name)), Shape::Vector(actual)) => {
                        let actual = self.subst(actual);
                        match frame.sizes.get(local_name).cloned() {
                            None => {
                                frame.sizes.insert(local_name.clone(), actual);
                            }
                            Some(prev) => {
                                if !self.unify(&prev, &actual, at) {
                                    ok = false;
                                }
                            }
                        }
                    }
                    (Shape::Vector(lit @ Size::Lit(_)), Shape::Vector(actual)) => {
                        let (lit, actual) = (lit.clone(), actual.clone());
                        if !self.unify(&lit, &actual, at) {
                            ok = false;
                        }
                    }
                    _ => {}
                }
                if !dom_fits(&dom, &want_dom) {
                    let arg_desc = self.describe_arg(arg_expr, &dom);
                    let hint =
                        mismatch_hint(&def.name.name, &p.name.name, &dom, arg_expr, args, self.src);
                    self.emit(
                        Diagnostic::error(
                            "E0060",
                            at,
                            format!(
                                "`{}` expects {} for `{}`, but {arg_desc}",
                                def.name.name,
                                want_dom.describe(),
                                p.name.name
                            ),
                        )
                        .with_label(format!("not {}", want_dom.describe()))
                        .with_hint_opt(hint),
                    );
                    ok = false;
                    continue;
                }
                ty = Ty::Val {
                    shape,
                    dom,
                    level: *level,
                };
            }
            if arg_expr.is_some_and(|e| {
                let mut at = false;
                walk(e, &mut |x| at |= matches!(x.kind, ExprKind::At(..)));
                at
            }) {
                frame.in_other_row.insert(p.name.name.clone());
            }
            frame.params.insert(p.name.name.clone(), ty);
        }
        if !ok {
            return Ty::Error;
        }
        let saved_override = self.override_span;
        if d.origin == Origin::Prelude && self.override_span.is_none() {
            self.override_span = Some(span);
        }
        if self.def_stack.len() >= MAX_DEF_DEPTH {
            self.emit(
                Diagnostic::error(
                    "E0002",
                    span,
                    format!("defs call each other more than {MAX_DEF_DEPTH} levels deep"),
                )
                .with_label("too deep")
                .with_hint("flatten the chain of defs"),
            );
            self.override_span = saved_override;
            return Ty::Error;
        }
        // A def's body is checked once per distinct argument types and
        // context: defs calling a def twice would otherwise double the
        // work at every level.
        let key = format!(
            "{:p} {:?} {:?} {} {} {}",
            def,
            frame.params,
            (&frame.sizes, &frame.in_other_row),
            self.in_per_sample_context(),
            self.in_minimize,
            self.override_span.is_some()
        );
        if let Some((ty, uses)) = self.instantiated.get(&key).cloned() {
            for u in uses {
                self.record_use(&u);
            }
            self.override_span = saved_override;
            return ty;
        }
        self.frames.push(frame);
        let saved_indices = std::mem::take(&mut self.indices);
        self.def_stack.push(def.name.name.clone());
        self.uses.push(BTreeSet::new());
        let ty = self.value(&def.body);
        let uses = self.uses.pop().unwrap_or_default();
        for u in &uses {
            self.record_use(u);
        }
        self.def_stack.pop();
        self.indices = saved_indices;
        self.frames.pop();
        self.override_span = saved_override;
        self.instantiated.insert(key, (ty.clone(), uses));
        ty
    }

    fn describe_arg(&self, e: Option<&Expr>, dom: &Dom) -> String {
        match e.map(|e| &e.kind) {
            Some(ExprKind::Var(n)) => match self.globals.get(n) {
                Some(Global::Data(v)) | Some(Global::Pred(v)) => {
                    format!("`{n}` is declared `{}`", v.type_text)
                }
                _ => format!("`{n}` is {}", dom.describe()),
            },
            Some(_) => format!(
                "`{}` is {}",
                self.text(e.map_or(Span::default(), |e| e.span)),
                dom.describe()
            ),
            None => format!("the default is {}", dom.describe()),
        }
    }
}

// ----------------------------------------------------------------- helpers

/// `f(a[c], b[c])`: a call rewritten to apply per component, for hints.
fn per_component(f: &str, args: &[Arg], tys: &[Ty], src: &str) -> String {
    let parts: Vec<String> = args
        .iter()
        .zip(tys)
        .map(|(a, t)| {
            let text = a.value.span.text(src);
            let text = if matches!(
                t,
                Ty::Val {
                    shape: Shape::Vector(_),
                    ..
                }
            ) {
                indexed(text, "c")
            } else {
                text.to_string()
            };
            match &a.name {
                Some(n) => format!("{} = {text}", n.name),
                None => text,
            }
        })
        .collect();
    format!("{f}({})", parts.join(", "))
}

/// `text[c]`, parenthesised unless `text` is a plain name.
fn indexed(text: &str, c: &str) -> String {
    if text.chars().all(|ch| ch.is_alphanumeric() || ch == '_') {
        format!("{text}[{c}]")
    } else {
        format!("({text})[{c}]")
    }
}

fn plural(n: usize) -> &'static str {
    if n == 1 { "" } else { "s" }
}

fn describe_ty(shape: &Shape, dom: &Dom) -> String {
    match shape {
        Shape::Vector(_) => format!("{shape}"),
        Shape::Scalar => dom.describe(),
    }
}

/// `Some(true)` if the def's first parameter is annotated with a vector
/// type, `Some(false)` for a scalar type, `None` when not annotated.
fn first_param_shape(d: &Def) -> Option<bool> {
    let t = d.params.first()?.ty.as_ref()?;
    Some(matches!(
        t.name.name.as_str(),
        "onehot" | "multihot" | "probs" | "vector"
    ))
}

fn row_misuse(span: Span) -> Diagnostic {
    Diagnostic::error("E0041", span, "`i` (the current row) used as a value")
        .with_label("only valid in a comparison with a batch index")
        .with_hint(
            "write the current row's value as `x`; compare rows in a filter: sum[j: j != i](...)",
        )
}

fn batch_misuse(n: &str, span: Span) -> Diagnostic {
    Diagnostic::error("E0041", span, format!("batch index `{n}` used without `@`"))
        .with_label(format!("`{n}` is a row index"))
        .with_hint(format!("write x@{n} for the value of x in row {n}; `{n}` itself may only be compared with i or another row index"))
}

fn unbound_index(j: &Ident) -> Diagnostic {
    Diagnostic::error("E0040", j.span, format!("index `{}` is not bound", j.name))
        .with_label("no reduction binds it")
        .with_hint(format!(
            "bind it with a batch reduction, as in sum[{0}](x@{0})",
            j.name
        ))
}

/// Every name in `uses`, directly or through the lets they name.
fn reach(uses: &BTreeSet<String>, lets: &BTreeMap<String, LetInfo>) -> BTreeSet<String> {
    let mut seen: BTreeSet<String> = BTreeSet::new();
    let mut stack: Vec<&str> = uses.iter().map(String::as_str).collect();
    while let Some(u) = stack.pop() {
        if seen.insert(u.to_string())
            && let Some(l) = lets.get(u)
        {
            stack.extend(l.uses.iter().map(String::as_str));
        }
    }
    seen
}

/// Whether `name` is used as a batch index (`x@name`) anywhere in `e`.
fn uses_at(e: &Expr, name: &str) -> bool {
    let mut found = false;
    walk(e, &mut |x| {
        if let ExprKind::At(_, j) = &x.kind
            && j.name == name
        {
            found = true;
        }
    });
    found
}

/// Calls `f` on `e`'s direct children.
pub fn each_child<'e>(e: &'e Expr, f: &mut dyn FnMut(&'e Expr)) {
    match &e.kind {
        ExprKind::Num(_) | ExprKind::Var(_) | ExprKind::Row => {}
        ExprKind::Unary(_, a) | ExprKind::At(a, _) => f(a),
        ExprKind::Binary(_, a, b) | ExprKind::Index(a, b) => {
            f(a);
            f(b);
        }
        ExprKind::Call(_, args) => args.iter().for_each(|a| f(&a.value)),
        ExprKind::Reduce { filter, body, .. } => {
            if let Some(x) = filter {
                f(x);
            }
            f(body);
        }
        ExprKind::If(c, a, b) => {
            f(c);
            f(a);
            f(b);
        }
    }
}

/// Calls `f` on `e` and every expression below it.
pub fn walk<'e>(e: &'e Expr, f: &mut dyn FnMut(&'e Expr)) {
    f(e);
    each_child(e, &mut |c| walk(c, f));
}

/// Whether an argument's domain provably lies inside a parameter's; unknown
/// domains are given the benefit of the doubt.
fn dom_fits(arg: &Dom, want: &Dom) -> bool {
    match (arg, want) {
        (Dom::Unknown, _) | (_, Dom::Unknown) => true,
        (a, Dom::Range(w)) => match a {
            Dom::Range(r) => r.within(w),
            Dom::Labels(vs) => vs.iter().all(|v| w.contains(*v)),
            Dom::Class(Size::Lit(c)) => w.contains(0.0) && w.contains(*c as f64 - 1.0),
            Dom::Class(_) => w.lo <= 0.0 && w.hi == f64::INFINITY,
            vector => vector.component_range().is_none_or(|r| r.within(w)),
        },
        (Dom::Labels(vs), Dom::Labels(ws)) => vs.iter().all(|v| ws.contains(v)),
        (Dom::Class(Size::Lit(c)), Dom::Labels(ws)) => (0..*c).all(|k| ws.contains(&(k as f64))),
        (Dom::Class(_), Dom::Labels(_)) => true,
        (_, Dom::Labels(_)) => false,
        (Dom::Class(_), Dom::Class(_)) => true,
        (Dom::Labels(vs), Dom::Class(_)) => vs.iter().all(|v| *v >= 0.0 && v.fract() == 0.0),
        (_, Dom::Class(_)) => false,
        (Dom::Onehot, Dom::Probs | Dom::Onehot | Dom::Multihot) => true,
        (Dom::Probs, Dom::Probs) | (Dom::Multihot, Dom::Multihot) => true,
        (_, Dom::Probs | Dom::Onehot | Dom::Multihot) => false,
    }
}

fn scalar_alternative(f: &str) -> Option<String> {
    Some(match f {
        "cce" | "cce_logits" => "for a single binary output use bce or bce_logits".into(),
        "entropy" => "entropy of a single probability takes a prob".into(),
        _ => return None,
    })
}

/// Function-specific advice for an argument outside its domain.
fn mismatch_hint(
    f: &str,
    param: &str,
    dom: &Dom,
    arg: Option<&Expr>,
    args: &[Arg],
    src: &str,
) -> Option<String> {
    let a = |k: usize| args.get(k).map_or("?", |x| x.value.span.text(src));
    let zero_one = *dom == Dom::labels(vec![0.0, 1.0]);
    let pm_one = *dom == Dom::labels(vec![-1.0, 1.0]);
    let unbounded =
        matches!(dom, Dom::Range(r) if r.lo == f64::NEG_INFINITY || r.hi == f64::INFINITY);
    // Only a value that can be any real looks like a logit.
    let logit_like = *dom == Dom::Range(Range::REAL);
    let plain_name = arg.is_some_and(|e| matches!(e.kind, ExprKind::Var(_)));
    Some(match (f, param) {
        ("bce" | "focal" | "cce", "p") if logit_like => {
            format!("for logits use {f}_logits({}, {})", a(0), a(1))
        }
        ("bce" | "focal" | "cce", "p") if matches!(dom, Dom::Range(_)) && plain_name => {
            "a probability must stay strictly inside (0, 1), where log is finite: declare it as `prob`, or pass sigmoid(...) of a logit".into()
        }
        ("bce" | "focal" | "cce", "p") if matches!(dom, Dom::Range(_)) => {
            "this expression can leave (0, 1), where log is undefined; pass a `prob` or sigmoid(...) of a logit".into()
        }
        ("cce" | "cce_logits", "y") if *dom == Dom::Multihot => {
            "several labels per example is a multilabel task: use sum[c](bce_logits(y[c], z[c]))"
                .into()
        }
        ("cce", "p") if *dom == Dom::Multihot || matches!(dom, Dom::Range(_)) => {
            format!("for logits use cce_logits({}, {})", a(0), a(1))
        }
        ("hinge" | "squared_hinge", "y") if zero_one => {
            format!(
                "map {{0, 1}} labels to {{-1, 1}}: {f}(2 * {} - 1, {})",
                a(0),
                a(1)
            )
        }
        ("bce" | "bce_logits" | "focal" | "focal_logits", "y") if pm_one => {
            format!(
                "map {{-1, 1}} labels to {{0, 1}}: {f}(({} + 1) / 2, {})",
                a(0),
                a(1)
            )
        }
        ("focal" | "focal_logits", "y") => {
            "focal loss needs hard labels {0, 1}; for soft targets use bce".into()
        }
        ("bce" | "bce_logits", "y") if unbounded => {
            format!(
                "the target of {f} is a label or a probability in [0, 1]; for a real-valued target use a regression loss such as mse"
            )
        }
        _ => return None,
    })
}

impl fmt::Display for Property {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Property::Differentiable => f.write_str("differentiable"),
            Property::Convex => f.write_str("convex"),
            Property::BoundedGradient => f.write_str("bounded_gradient"),
            Property::Finite => f.write_str("finite"),
            Property::Calibrated => f.write_str("calibrated"),
            Property::Estimand(Estimand::Mean) => f.write_str("estimand = mean"),
            Property::Estimand(Estimand::Median) => f.write_str("estimand = median"),
            Property::Estimand(Estimand::Quantile(t)) => {
                write!(f, "estimand = quantile({})", fmt_num(*t))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_prelude_parses_and_checks_cleanly() {
        let diags = check_library(prelude(), PRELUDE_SOURCE);
        assert!(diags.is_empty(), "{diags:#?}");
    }

    #[test]
    fn fmt_labels_is_the_written_form() {
        assert_eq!(types::fmt_labels(&[-1.0, 1.0]), "{-1, 1}");
    }

    #[test]
    fn domains_fit_as_sets() {
        let p = Dom::Range(Range::PROB);
        assert!(dom_fits(&Dom::Range(Range::PROB), &Dom::Range(Range::UNIT)));
        assert!(!dom_fits(&Dom::Range(Range::REAL), &p));
        assert!(dom_fits(&Dom::Onehot, &Dom::Probs));
        assert!(!dom_fits(&Dom::Multihot, &Dom::Probs));
        assert!(!dom_fits(
            &Dom::labels(vec![0.0, 1.0]),
            &Dom::labels(vec![-1.0, 1.0])
        ));
        assert!(dom_fits(&Dom::Unknown, &p));
    }
}
