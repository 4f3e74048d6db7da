//! Custom objectives for gradient boosting (LightGBM, XGBoost): a booster
//! fits each tree to the per-example gradient and Hessian of the loss with
//! respect to its raw score, which lossc derives and simplifies.
//!
//! A booster's raw score is unbounded, so a pred declared in a bounded
//! domain is reached through a link (`sigmoid` for `prob`, `exp` for a
//! half-line, the libraries' own conventions for log-loss and Poisson). The
//! link is put into the lowered objective before derivation, so the
//! gradient is simplified through it symbolically: `bce(y, sigmoid(s))`
//! exports as `sigmoid(s) - y`, with no `0 * inf` at saturated scores.

use super::python::{Emitter, Flavor};
use super::{header, helpers, py_name};
use crate::Loss;
use crate::grad::Factor;
use crate::ir::lower::{Objective, Reduction, SampleReduction};
use crate::ir::{Func, Graph, Id, Node, SymKind};
use crate::sema::types::{Dom, Shape};
use crate::validate::Options;
use std::fmt::Write;

/// The gradient-boosting library whose calling convention to follow.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Library {
    /// `lightgbm.train(params={"objective": objective()}, feval=metric())`.
    LightGbm,
    /// `xgboost.train(params, dtrain, obj=objective(), custom_metric=metric())`.
    XgBoost,
}

/// How the raw score becomes the spec's pred.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Link {
    Identity,
    /// `lo + (hi - lo) * sigmoid(s)`.
    Interval(f64, f64),
    /// `lo + exp(s)`.
    Above(f64),
    /// `hi - exp(-s)`.
    Below(f64),
}

impl Link {
    fn of(dom: &Dom) -> Link {
        match dom {
            Dom::Range(r) => match (r.lo.is_finite(), r.hi.is_finite()) {
                (true, true) => Link::Interval(r.lo, r.hi),
                (true, false) => Link::Above(r.lo),
                (false, true) => Link::Below(r.hi),
                (false, false) => Link::Identity,
            },
            _ => Link::Identity,
        }
    }

    /// The link applied to the node `s`.
    fn build(self, g: &mut Graph, s: Id) -> Id {
        match self {
            Link::Identity => s,
            Link::Interval(lo, hi) => {
                let sig = g.func(Func::Sigmoid, s);
                let (l, w) = (g.num(lo), g.num(hi - lo));
                let scaled = g.mul2(w, sig);
                g.add2(l, scaled)
            }
            Link::Above(lo) => {
                let e = g.func(Func::Exp, s);
                let l = g.num(lo);
                g.add2(l, e)
            }
            Link::Below(hi) => {
                let ns = g.neg(s);
                let e = g.func(Func::Exp, ns);
                let h = g.num(hi);
                g.sub(h, e)
            }
        }
    }

    /// The pred in terms of the score, for the docstring.
    fn text(self, pred: &str) -> String {
        let n = crate::analyze::num;
        match self {
            Link::Identity => format!("`{pred} = score`"),
            Link::Interval(0.0, 1.0) => format!("`{pred} = sigmoid(score)`"),
            Link::Interval(lo, hi) => {
                format!("`{pred} = {} + {} * sigmoid(score)`", n(lo), n(hi - lo))
            }
            Link::Above(0.0) => format!("`{pred} = exp(score)`"),
            Link::Above(lo) => format!("`{pred} = {} + exp(score)`", n(lo)),
            Link::Below(hi) => format!("`{pred} = {} - exp(-score)`", n(hi)),
        }
    }
}

/// E0091: the spec is valid but a booster cannot fit it; located at the
/// declaration or statement that is the reason.
fn refuse(
    loss: &Loss,
    span: crate::span::Span,
    message: String,
    label: &str,
    hint: &str,
) -> crate::Error {
    let d = crate::Diagnostic::error("E0091", span, message)
        .with_label(label)
        .with_hint(hint);
    crate::Error::Spec(Box::new(crate::Report {
        file: loss.source().clone(),
        diagnostics: vec![d],
    }))
}

/// A LightGBM or XGBoost objective and metric for a spec with one scalar
/// pred and a per-example loss.
pub fn export(loss: &Loss, lib: Library, origin: &str) -> Result<String, crate::Error> {
    let c = loss.checked();
    let libname = match lib {
        Library::LightGbm => "LightGBM",
        Library::XgBoost => "XGBoost",
    };
    let hint = "a booster fits one raw score per example to a mean (or sum) of per-example losses; export this spec to numpy, jax or pytorch instead";
    let [pred] = c.preds.as_slice() else {
        return Err(refuse(
            loss,
            c.preds[1].span,
            format!(
                "a {libname} objective fits one pred, but `{}` declares {}",
                c.name,
                c.preds.len()
            ),
            "a second pred",
            hint,
        ));
    };
    if pred.shape != Shape::Scalar {
        return Err(refuse(
            loss,
            pred.span,
            format!(
                "a {libname} objective fits one number per example, but pred `{}` is a `{}`",
                pred.name, pred.type_text
            ),
            "a vector pred",
            hint,
        ));
    }
    let minimize = c
        .spec
        .stmts
        .iter()
        .find(|s| matches!(s.kind, crate::ast::StmtKind::Minimize(_)))
        .map_or(c.spec.span, |s| s.span);
    // The label is the task's target; a spec with one scalar data input
    // (a regression on grades, say) needs no rule.
    let scalar_data: Vec<_> = c.data.iter().filter(|v| v.shape == Shape::Scalar).collect();
    let label = crate::validate::target_var(loss, &Options::default(), c.task)
        .ok()
        .flatten()
        .filter(|v| v.shape == Shape::Scalar)
        .or(match scalar_data.as_slice() {
            [only] => Some(*only),
            _ => None,
        })
        .ok_or_else(|| {
            refuse(
                loss,
                c.data.first().map_or(minimize, |d| d.span),
                format!(
                    "`{}` declares no data input that can be the {libname} label",
                    c.name
                ),
                "no scalar target among the data",
                "the label is the spec's target: a two-value `label` for a binary task, a scalar `real` for regression",
            )
        })?;
    let link = Link::of(&pred.dom);
    let pname = pred.name.clone();
    let d = loss.derive_with(move |g, mut o| {
        let s = g.sym(SymKind::Pred, &pname);
        let linked = link.build(g, s);
        for r in &mut o.reductions {
            r.body = g.replace_sym(r.body, SymKind::Pred, &pname, linked);
        }
        merge_means(g, o)
    })?;
    let (Some(h), Some(per_row)) = (d.preds[0].hessian, d.loss) else {
        return Err(refuse(
            loss,
            minimize,
            format!(
                "a {libname} objective needs each example's own Hessian, but `{}` couples rows",
                c.name
            ),
            "not a mean (or sum) of per-example losses",
            hint,
        ));
    };
    let mut e = Emitter::new(&d, c, Flavor::Numpy);
    e.rename.insert(pred.name.clone(), "score".into());
    let l = e.per_row(per_row);
    e.lines.push(format!("loss = {l}"));
    let gr = e.per_row(d.preds[0].per_sample);
    e.lines.push(format!("grad = {gr}"));
    let hs = e.per_row(h);
    e.lines.push(format!("hess = {hs}"));

    let data: Vec<String> = c.data.iter().map(|v| py_name(&v.name)).collect();
    let extra: Vec<String> = c
        .data
        .iter()
        .filter(|v| v.name != label.name)
        .map(|v| py_name(&v.name))
        .collect();
    let params: Vec<String> = c
        .params
        .iter()
        .map(|p| format!("{}={}", py_name(&p.name), Emitter::num_text(p.value)))
        .collect();
    let pass: Vec<String> = c
        .params
        .iter()
        .map(|p| format!("{0}={0}", py_name(&p.name)))
        .collect();
    let mut args = data.clone();
    args.push("score".into());
    // Keyword-only: the data columns (required), then the params, then the
    // objective's own options.
    let kw = |cols: &[&str], own: &[&str]| -> String {
        let mut all: Vec<String> = cols.iter().map(|s| s.to_string()).collect();
        all.extend(params.iter().cloned());
        all.extend(own.iter().map(|s| s.to_string()));
        if all.is_empty() {
            String::new()
        } else {
            format!(", *, {}", all.join(", "))
        }
    };

    // Where the loss is locally linear its Hessian is a literal 0 in the
    // derivation: the whole of it (MAE) or a branch (Huber's tails). Only
    // then is a zero Hessian a gradient step; elsewhere a 0 is underflow.
    let flat = has_flat_region(&d.graph, h);
    let fragile =
        divides_by_sigmoid(&d.graph, d.preds[0].per_sample) || divides_by_sigmoid(&d.graph, h);
    let mut notes = vec![
        if link == Link::Identity {
            format!(
                "The booster's raw score `score` is the pred `{}` itself.",
                pred.name
            )
        } else {
            format!(
                "The booster's raw score is `score`, and {}: lossc derived the loss's gradient and Hessian with respect to the score through that link, and simplified them.",
                link.text(&pred.name)
            )
        },
        format!(
            "The label is `{}`, from the data set's label.{}",
            label.name,
            if extra.is_empty() {
                String::new()
            } else {
                format!(
                    " The other data inputs ({}) are keyword arguments of objective() and metric(): an array with one value per row of the data set, or a dict from each data set (the Dataset or DMatrix object) to its array, for a metric evaluated on several.",
                    extra.join(", ")
                )
            }
        ),
    ];
    if fragile {
        notes.push(format!(
            "Warning: lossc could not cancel a division by sigmoid(score) (or 1 - sigmoid(score)) in the gradient or Hessian, so per_example() returns NaN where sigmoid(score) rounds to 0 or 1 (|score| above about 36). Boosted scores can get there. Declaring `{}` a `logit` and writing the loss with the logit forms (bce_logits, focal_logits) avoids it.",
            pred.name
        ));
    }
    notes.push(
        if flat {
            "per_example() returns the exact Hessian. A booster divides by it, so objective() passes on a usable one: where this loss is locally linear (its Hessian is exactly 0 there) it returns 1, a gradient step, as the libraries' own Huber and L1 objectives do; elsewhere it returns the Hessian, at least min_hessian."
        } else {
            "per_example() returns the exact Hessian. A booster divides by it, so objective() returns it at least min_hessian (where the loss is non-convex, or the Hessian underflows at a saturated score)."
        }
        .to_string(),
    );
    notes.push(match lib {
        Library::LightGbm => "Use: train_set = lightgbm.Dataset(X, label, init_score=np.full(len(label), init_score(label))); booster = lightgbm.train({\"objective\": objective(), ...}, train_set, feval=metric(), valid_sets=[...]); the raw score of new rows is init_score(label) + booster.predict(X_new).".to_string(),
        Library::XgBoost => "Use: init = init_score(label); dtrain = xgboost.DMatrix(X, label, base_margin=np.full(len(label), init)); booster = xgboost.train({\"disable_default_eval_metric\": 1, ...}, dtrain, obj=objective(), custom_metric=metric(), evals=[...]); the raw score of new rows is booster.predict(xgboost.DMatrix(X_new, base_margin=np.full(len(X_new), init)), output_margin=True) (without base_margin XGBoost adds its base_score, 0.5, instead).".to_string(),
    });
    let mut o = header(loss, libname, origin, &notes);
    let _ = writeln!(o, "\"\"\"\n\nimport numpy as np\n");
    o.push_str(&helpers("np"));

    // per_example: the loss, gradient and Hessian of each row.
    let _ = writeln!(o, "\ndef per_example({}{}):", args.join(", "), kw(&[], &[]));
    let _ = writeln!(
        o,
        "    \"\"\"Each example's loss, and its gradient and Hessian with respect to the raw score.\"\"\""
    );
    for a in &args {
        let _ = writeln!(o, "    {a} = np.asarray({a}, dtype=float)");
    }
    if super::uses(&e.lines, "n") {
        let _ = writeln!(o, "    n = score.shape[0]");
    }
    for s in e.sizes() {
        if super::uses(&e.lines, s.split(" = ").next().unwrap_or("")) {
            let _ = writeln!(o, "    {s}");
        }
    }
    let _ = writeln!(o, "    with np.errstate(all=\"ignore\"):");
    e.write(&mut o, "        ");
    let _ = writeln!(o, "    return loss, grad, hess");

    // The best constant score: built-in objectives boost from their average;
    // a custom objective starts at 0 unless given this.
    let _ = writeln!(
        o,
        "\n\ndef init_score({}{}):",
        data.join(", "),
        kw(&[], &["weight=None"])
    );
    let _ = writeln!(
        o,
        "    \"\"\"The best constant raw score (the summed gradient is zero there), found by bisection.\n\n    Boost from it, as built-in objectives boost from the average: LightGBM's\n    Dataset(init_score=...) or XGBoost's DMatrix(base_margin=...), and add it to the\n    raw predictions of the trained booster.\n    \"\"\""
    );
    let first = py_name(&c.data[0].name);
    let _ = writeln!(o, "    {first} = np.asarray({first}, dtype=float)");
    let _ = writeln!(
        o,
        "    w = np.ones({first}.shape[0]) if weight is None else np.asarray(weight, dtype=float)\n"
    );
    let mut cargs: Vec<String> = data.clone();
    cargs.push(format!("np.full({first}.shape[0], c)"));
    cargs.extend(pass.iter().cloned());
    let _ = writeln!(
        o,
        "    def total(c):\n        return float(np.sum(w * per_example({})[1]))\n",
        cargs.join(", ")
    );
    let _ = writeln!(
        o,
        "    lo, hi = -1.0, 1.0\n    while total(lo) > 0.0 and lo > -1e6:\n        lo *= 2.0\n    while total(hi) < 0.0 and hi < 1e6:\n        hi *= 2.0\n    if total(lo) > 0.0 or total(hi) < 0.0:\n        raise ValueError(\"the loss has no best constant score in [-1e6, 1e6]\")\n    for _ in range(200):\n        mid = 0.5 * (lo + hi)\n        if total(mid) < 0.0:\n            lo = mid\n        else:\n            hi = mid\n        if hi - lo <= 1e-12 * max(1.0, abs(mid)):\n            break\n    return 0.5 * (lo + hi)"
    );

    // The objective and the metric, in the library's calling convention.
    let reduce = match d.factor {
        Factor::OneOverN => "np.average(loss, weights=weight)",
        Factor::One => "np.sum(loss if weight is None else loss * weight)",
    };
    let (obj_args, metric_args, get_weight) = match lib {
        Library::LightGbm => ("preds, train_data", "preds, eval_data", "data.get_weight()"),
        Library::XgBoost => (
            "predt, dtrain",
            "predt, dmatrix",
            "data.get_weight()\n    if weight is not None and weight.size == 0:\n        weight = None",
        ),
    };
    let extra_kw: Vec<&str> = extra.iter().map(String::as_str).collect();
    let mut call: Vec<String> = c
        .data
        .iter()
        .map(|v| {
            if v.name == label.name {
                "data.get_label()".to_string()
            } else {
                format!("_rows({}, data, score, \"{}\")", py_name(&v.name), v.name)
            }
        })
        .collect();
    call.push("score".into());
    call.extend(pass.iter().cloned());
    let call = call.join(", ");
    if !extra.is_empty() {
        let _ = writeln!(
            o,
            "\n\ndef _rows(column, data, score, name):\n    if isinstance(column, dict):\n        if data not in column:\n            raise ValueError(f\"{{name}} has no array for this data set\")\n        column = column[data]\n    column = np.asarray(column, dtype=float)\n    if column.shape[0] != score.shape[0]:\n        raise ValueError(\n            f\"{{name}} has {{column.shape[0]}} rows but the data set has {{score.shape[0]}}; \"\n            f\"give {{name}}={{{{data_set: array, ...}}}} to use one metric() on several\"\n        )\n    return column\n"
        );
    }
    let _ = writeln!(o, "\ndef _evaluate(data, score{}):", {
        let mut a: Vec<String> = extra.clone();
        a.extend(c.params.iter().map(|p| py_name(&p.name)));
        if a.is_empty() {
            String::new()
        } else {
            format!(", {}", a.join(", "))
        }
    });
    let _ = writeln!(o, "    score = np.asarray(score, dtype=float).reshape(-1)");
    let _ = writeln!(o, "    weight = {get_weight}");
    let _ = writeln!(o, "    loss, grad, hess = per_example({call})");
    let _ = writeln!(o, "    return loss, grad, hess, weight");
    let fwd: Vec<String> = extra
        .iter()
        .cloned()
        .chain(c.params.iter().map(|p| py_name(&p.name)))
        .collect();
    let fwd = if fwd.is_empty() {
        String::new()
    } else {
        format!(", {}", fwd.join(", "))
    };
    let (obj_doc, metric_doc, metric_ret) = match lib {
        Library::LightGbm => (
            "A LightGBM objective: params={\"objective\": objective(...)}.",
            "The loss as a LightGBM metric (feval=metric(...)); lower is better.",
            format!("\"{}\", value, False", c.name),
        ),
        Library::XgBoost => (
            "An XGBoost objective: xgboost.train(..., obj=objective(...)).",
            "The loss as an XGBoost metric (custom_metric=metric(...)); lower is better.",
            format!("\"{}\", value", c.name),
        ),
    };
    let own: &[&str] = &["min_hessian=1e-6"];
    let _ = writeln!(
        o,
        "\n\ndef objective({}):",
        kw(&extra_kw, own).trim_start_matches(", ")
    );
    let _ = writeln!(o, "    \"\"\"{obj_doc}\"\"\"");
    let _ = writeln!(o, "\n    def fobj({obj_args}):");
    let data_name = obj_args.split(", ").nth(1).expect("two arguments");
    let score_name = obj_args.split(", ").next().expect("two arguments");
    let _ = writeln!(
        o,
        "        _, grad, hess, weight = _evaluate({data_name}, {score_name}{fwd})"
    );
    let rule = if flat {
        "np.where(hess == 0.0, 1.0, np.maximum(hess, min_hessian))"
    } else {
        "np.maximum(hess, min_hessian)"
    };
    let _ = writeln!(o, "        hess = {rule}");
    let _ = writeln!(
        o,
        "        if weight is not None:\n            grad, hess = grad * weight, hess * weight"
    );
    let _ = writeln!(o, "        return grad, hess\n\n    return fobj");
    let _ = writeln!(
        o,
        "\n\ndef metric({}):",
        kw(&extra_kw, &[]).trim_start_matches(", ")
    );
    let _ = writeln!(o, "    \"\"\"{metric_doc}\"\"\"");
    let _ = writeln!(o, "\n    def feval({metric_args}):");
    let data_name = metric_args.split(", ").nth(1).expect("two arguments");
    let score_name = metric_args.split(", ").next().expect("two arguments");
    let _ = writeln!(
        o,
        "        loss, _, _, weight = _evaluate({data_name}, {score_name}{fwd})"
    );
    let _ = writeln!(o, "        value = float({reduce})");
    let _ = writeln!(o, "        return {metric_ret}\n\n    return feval");
    debug_assert!(o.ends_with('\n'));
    Ok(o)
}

/// `a * mean(f) + b * mean(g) + c` as the one mean `mean(a f + b g + c)`
/// (likewise for sums, without the constant), so a loss written as several
/// means of per-example terms has a per-example Hessian. `a`, `b` may be
/// any expression of params and numbers. Anything else is left as it is.
fn merge_means(g: &mut Graph, o: Objective) -> Objective {
    if o.reductions.iter().any(|r| r.kind != o.reductions[0].kind) {
        return o;
    }
    let kind = o.reductions[0].kind;
    let body_of = |name: &str| o.reductions.iter().find(|r| r.name == name).map(|r| r.body);
    let terms = match g.node(o.outer) {
        Node::Add(xs) => xs.clone(),
        _ => vec![o.outer],
    };
    // The same for every row: numbers, params and sizes, however combined.
    let constant = |g: &Graph, id: Id| {
        g.reachable(id).into_iter().all(|x| {
            !matches!(
                g.node(x),
                Node::Sym(SymKind::Data | SymKind::Pred | SymKind::Reduced, _)
                    | Node::Elem { .. }
                    | Node::Idx(_)
                    | Node::Row
                    | Node::Reduce { .. }
            )
        })
    };
    let mut parts = Vec::new();
    for t in terms {
        let factors = match g.node(t) {
            Node::Mul(fs) => fs.clone(),
            _ => vec![t],
        };
        let (reds, coef): (Vec<Id>, Vec<Id>) = factors
            .into_iter()
            .partition(|&f| matches!(g.node(f), Node::Sym(SymKind::Reduced, _)));
        if !coef.iter().all(|&f| constant(g, f)) {
            return o;
        }
        match reds.as_slice() {
            [r] => {
                let Node::Sym(_, name) = g.node(*r).clone() else {
                    unreachable!("partitioned on Reduced symbols")
                };
                let Some(body) = body_of(&name) else { return o };
                let mut fs = coef;
                fs.push(body);
                parts.push(g.mul(fs));
            }
            // A constant term is the same constant in every row's mean.
            [] if kind == SampleReduction::Mean => parts.push(g.mul(coef)),
            _ => return o,
        }
    }
    let body = g.add(parts);
    let name = o.reductions[0].name.clone();
    let outer = g.sym(SymKind::Reduced, &name);
    Objective {
        reductions: vec![Reduction { kind, body, name }],
        outer,
    }
}

/// Whether `id` divides by an expression holding a sigmoid, which rounds
/// to 0 (or its complement to 0) at a saturated score: `inf * 0` there.
fn divides_by_sigmoid(g: &Graph, id: Id) -> bool {
    let has_sigmoid = |b: Id| {
        g.reachable(b)
            .into_iter()
            .any(|x| matches!(g.node(x), Node::Func(Func::Sigmoid, _)))
    };
    g.reachable(id).into_iter().any(|x| match g.node(x) {
        Node::Pow(b, e) => g.as_num(*e).is_some_and(|k| k < 0.0) && has_sigmoid(*b),
        _ => false,
    })
}

/// Whether the Hessian is the literal 0 on a region: all of it, or a
/// branch of a condition (the derivation of a piecewise-linear piece).
fn has_flat_region(g: &Graph, h: Id) -> bool {
    g.as_num(h) == Some(0.0)
        || g.reachable(h).into_iter().any(|x| match g.node(x) {
            Node::Select(_, a, b) => g.as_num(*a) == Some(0.0) || g.as_num(*b) == Some(0.0),
            _ => false,
        })
}
