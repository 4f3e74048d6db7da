//! `lossc export`: a spec as one self-contained source file for the tools
//! models are trained with, carrying lossc's derived, stable gradient
//! rather than a re-typed formula.
//!
//! NumPy and JAX share one emitter ([`python`]); JAX wraps the same forward
//! computation in `jax.custom_vjp` so its backward pass is lossc's gradient.
//! LaTeX prints the objective, gradients and Hessians for a paper.

pub mod booster;
pub mod python;
pub mod torch;

use crate::Loss;
use crate::sema::types::{Dom, Shape};
use python::{Emitter, Flavor};
use std::fmt::Write;

/// What to generate.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Target {
    /// `value_and_grad(**arrays)` with NumPy.
    Numpy,
    /// A `jax.custom_vjp` loss and `value_and_grad`, with `jax.numpy`.
    Jax,
    /// A `torch.autograd.Function` with lossc's gradient as its backward,
    /// wrapped in an `nn.Module`.
    PyTorch,
    /// A LaTeX fragment: loss, gradient and Hessian.
    Latex,
    /// A LightGBM custom objective and metric.
    LightGbm,
    /// An XGBoost custom objective and metric.
    XgBoost,
}

impl Target {
    /// Parses a `--to` value.
    pub fn parse(s: &str) -> Result<Target, String> {
        match s {
            "numpy" => Ok(Target::Numpy),
            "jax" => Ok(Target::Jax),
            "latex" => Ok(Target::Latex),
            "lightgbm" => Ok(Target::LightGbm),
            "xgboost" => Ok(Target::XgBoost),
            "pytorch" | "torch" => Ok(Target::PyTorch),
            _ => Err(format!(
                "unknown target `{s}`; expected numpy, jax, pytorch, lightgbm, xgboost or latex"
            )),
        }
    }
}

/// Python's reserved words, which a spec may use as names (`lambda`).
const PY_KEYWORDS: &[&str] = &[
    "False", "None", "True", "and", "as", "assert", "async", "await", "break", "class", "continue",
    "def", "del", "elif", "else", "except", "finally", "for", "from", "global", "if", "import",
    "in", "is", "lambda", "nonlocal", "not", "or", "pass", "raise", "return", "try", "while",
    "with", "yield",
];

/// Names the generated code itself uses: its locals (`n`, `value`, the
/// booster's `score` and `weight`, torch's `dtype` and `device`), the
/// modules, the Python builtins it calls and `nn.Module`'s attributes. An
/// input named like one would be overwritten or shadow it, silently.
#[rustfmt::skip]
const GENERATED: &[&str] = &[
    "n", "value", "loss", "grad", "hess", "grads", "score", "weight", "data", "label", "dtype",
    "device", "out_dtype", "ctx", "g", "f", "fwd", "bwd", "res", "np", "jnp", "jax", "torch",
    "functools", "w", "c", "lo", "hi", "mid", "total", "column", "name", "first", "preds",
    "train_data", "eval_data", "predt", "dtrain", "dmatrix", "fobj", "feval", "min_hessian",
    "self", "float", "int", "abs", "max", "min", "range", "len", "super", "training", "train",
    "eval", "forward", "to", "cuda", "cpu", "half", "double", "type", "apply", "parameters",
    "buffers", "children", "modules", "state_dict", "extra_repr", "zero_grad", "value_and_grad",
    "per_example", "objective", "metric", "init_score",
];

/// A spec name as a Python identifier: a keyword, a name the generated code
/// uses, or one shaped like its temporaries (`t3`, `R0`, `grad_z`) gets a
/// trailing `_`.
pub fn py_name(s: &str) -> String {
    let numbered = |p: &str| {
        s.strip_prefix(p)
            .is_some_and(|d| !d.is_empty() && d.chars().all(|c| c.is_ascii_digit()))
    };
    if PY_KEYWORDS.contains(&s)
        || GENERATED.contains(&s)
        || numbered("t")
        || numbered("R")
        || s.starts_with("grad_")
        || s.starts_with('_')
    {
        format!("{s}_")
    } else {
        s.to_string()
    }
}

fn dom_text(v: &crate::sema::Variable) -> String {
    let shape = match &v.shape {
        Shape::Scalar => "(n,)".to_string(),
        Shape::Vector(s) => format!("(n, {s})"),
    };
    let cls = if matches!(v.dom, Dom::Class(_)) {
        ", integers or floats"
    } else {
        ""
    };
    // The argument's name, and the spec's where the two differ.
    let name = match py_name(&v.name) {
        p if p == v.name => p,
        p => format!("{p} (`{}` in the spec)", v.name),
    };
    format!("{name} : {}, shape {shape}{cls}", v.type_text)
}

/// E0092: renaming a spec name for Python (`n` -> `n_`) would make it
/// another spec name; the generated code would confuse the two.
fn check_renames(loss: &Loss) -> Result<(), crate::Error> {
    let c = loss.checked();
    let mut names: Vec<(&str, Option<crate::span::Span>)> = Vec::new();
    names.extend(
        c.data
            .iter()
            .chain(&c.preds)
            .map(|v| (v.name.as_str(), Some(v.span))),
    );
    names.extend(c.params.iter().map(|p| (p.name.as_str(), Some(p.span))));
    names.extend(c.sizes.keys().map(|s| (s.as_str(), None)));
    for (a, span) in &names {
        let renamed = py_name(a);
        if renamed == *a {
            continue;
        }
        if let Some((b, other)) = names
            .iter()
            .find(|(b, _)| *b != *a && py_name(b) == renamed || *b == renamed)
        {
            // A size has no declaration of its own: point at the other name.
            let (at, label) = match (span, other) {
                (Some(s), _) => (*s, format!("becomes `{renamed}`")),
                (None, Some(o)) => (*o, format!("size `{a}` would become this name")),
                (None, None) => (c.spec.span, format!("`{a}` becomes `{renamed}`")),
            };
            let d = crate::Diagnostic::error(
                "E0092",
                at,
                format!(
                    "`{a}` is renamed `{renamed}` in exported Python (the generated code uses `{a}` itself, or it is a Python keyword), which is the name of `{b}`"
                ),
            )
            .with_label(label)
            .with_hint(format!("rename `{a}` or `{b}` in the spec"));
            return Err(crate::Error::Spec(Box::new(crate::Report {
                file: loss.source().clone(),
                diagnostics: vec![d],
            })));
        }
    }
    Ok(())
}

/// Generates the source for `target`.
pub fn export(loss: &Loss, target: Target, origin: &str) -> Result<String, crate::Error> {
    let d = loss.derive()?;
    let c = loss.checked();
    if target != Target::Latex {
        check_renames(loss)?;
    }
    match target {
        Target::Latex => return Ok(latex(loss, &d)),
        Target::LightGbm => return booster::export(loss, booster::Library::LightGbm, origin),
        Target::XgBoost => return booster::export(loss, booster::Library::XgBoost, origin),
        Target::Numpy | Target::Jax | Target::PyTorch => {}
    }
    let flavor = match target {
        Target::Jax => Flavor::Jax,
        Target::PyTorch => Flavor::Torch,
        _ => Flavor::Numpy,
    };
    let m = match target {
        Target::Jax => "jnp",
        Target::PyTorch => "torch",
        _ => "np",
    };
    let mut e = Emitter::new(&d, c, flavor);
    e.like = py_name(&c.preds[0].name);
    // Sample reductions first (R0, R1, ...), then the objective and gradients.
    let mut reds = Vec::new();
    for r in &d.objective.reductions {
        let body = e.per_row(r.body);
        let f = match r.kind {
            crate::ir::lower::SampleReduction::Mean => "mean",
            crate::ir::lower::SampleReduction::Sum => "sum",
        };
        e.lines.push(format!("{} = {m}.{f}({body})", r.name));
        reds.push(r.name.clone());
    }
    let value = e.emit(d.objective.outer);
    e.lines.push(format!("value = {}", value.code));
    let mut grads = Vec::new();
    for k in 0..d.preds.len() {
        let g = e.gradient(&d, k);
        let name = format!("grad_{}", py_name(&d.preds[k].pred));
        e.lines.push(format!("{name} = {g}"));
        grads.push((d.preds[k].pred.clone(), name));
    }
    let inputs: Vec<&crate::sema::Variable> = c.data.iter().chain(&c.preds).collect();
    let args: Vec<String> = inputs.iter().map(|v| py_name(&v.name)).collect();
    let params: Vec<String> = c
        .params
        .iter()
        .map(|p| {
            format!(
                "{}={}",
                py_name(&p.name),
                python::Emitter::num_text(p.value)
            )
        })
        .collect();
    let pnames: Vec<String> = c.params.iter().map(|p| py_name(&p.name)).collect();
    let first_pred = py_name(&c.preds[0].name);
    if target == Target::PyTorch {
        return Ok(torch::file(loss, &e, &grads, origin));
    }

    let lib = if target == Target::Jax {
        "JAX"
    } else {
        "NumPy"
    };
    let mut o = header(loss, lib, origin, &[]);
    let _ = writeln!(o, "\"\"\"");
    let _ = writeln!(o);
    match target {
        Target::Numpy => {
            let _ = writeln!(o, "import numpy as np\n");
        }
        _ => {
            let _ = writeln!(
                o,
                "import functools\n\nimport jax\nimport jax.numpy as jnp\n"
            );
        }
    }
    o.push_str(&helpers(m));
    let sig_params = if pnames.is_empty() {
        String::new()
    } else if target == Target::Numpy {
        format!(", *, {}", params.join(", "))
    } else {
        format!(", {}", params.join(", "))
    };
    let fname = if target == Target::Numpy {
        "value_and_grad"
    } else {
        "_value_and_grad"
    };
    let _ = writeln!(o, "\ndef {fname}({}{sig_params}):", args.join(", "));
    let _ = writeln!(
        o,
        "    \"\"\"The objective and its gradient with respect to each pred (same shapes).\"\"\""
    );
    for a in &args {
        let _ = writeln!(o, "    {a} = {m}.asarray({a}, dtype=float)");
    }
    // Only the sizes the code reads (an unused name is a linter warning).
    let uses = |name: &str| uses(&e.lines, name);
    if uses("n") {
        let _ = writeln!(o, "    n = {first_pred}.shape[0]");
    }
    for s in e.sizes() {
        let name = s.split(" = ").next().unwrap_or("");
        if uses(name) {
            let _ = writeln!(o, "    {s}");
        }
    }
    let indent = if target == Target::Numpy {
        let _ = writeln!(o, "    with np.errstate(all=\"ignore\"):");
        "        "
    } else {
        "    "
    };
    e.write(&mut o, indent);
    let dict: Vec<String> = grads.iter().map(|(p, g)| format!("\"{p}\": {g}")).collect();
    let _ = writeln!(o, "    return value, {{{}}}", dict.join(", "));
    if target == Target::Jax {
        let data: Vec<String> = c.data.iter().map(|v| py_name(&v.name)).collect();
        let params_call = if pnames.is_empty() {
            String::new()
        } else {
            format!(", {}", pnames.join(", "))
        };
        let _ = writeln!(o, "\n\n@functools.cache\ndef _loss({}):", pnames.join(", "));
        let _ = writeln!(o, "    @jax.custom_vjp\n    def f({}):", args.join(", "));
        let _ = writeln!(
            o,
            "        return _value_and_grad({}{params_call})[0]\n",
            args.join(", ")
        );
        let _ = writeln!(o, "    def fwd({}):", args.join(", "));
        let _ = writeln!(
            o,
            "        value, grads = _value_and_grad({}{params_call})",
            args.join(", ")
        );
        let tuple = match data.len() {
            0 => "()".to_string(),
            1 => format!("({},)", data[0]),
            _ => format!("({})", data.join(", ")),
        };
        let _ = writeln!(o, "        return value, ({tuple}, grads)\n");
        let _ = writeln!(o, "    def bwd(res, g):");
        let _ = writeln!(
            o,
            "        {}, grads = res",
            if data.is_empty() { "_" } else { "data" }
        );
        let mut cot: Vec<String> = Vec::new();
        for k in 0..c.data.len() {
            cot.push(format!("jnp.zeros_like(data[{k}])"));
        }
        for p in &c.preds {
            cot.push(format!("g * grads[\"{}\"]", p.name));
        }
        let _ = writeln!(o, "        return ({},)\n", cot.join(", "));
        let _ = writeln!(o, "    f.defvjp(fwd, bwd)\n    return f\n");
        let kw = if params.is_empty() {
            String::new()
        } else {
            format!(", *, {}", params.join(", "))
        };
        let _ = writeln!(o, "\ndef loss({}{kw}):", args.join(", "));
        let _ = writeln!(
            o,
            "    \"\"\"The objective; differentiable by jax.grad with lossc's derived gradient, and jit-compatible.\"\"\""
        );
        let floats: Vec<String> = c
            .params
            .iter()
            .map(|p| format!("float({})", py_name(&p.name)))
            .collect();
        let conv: Vec<String> = args
            .iter()
            .map(|a| format!("jnp.asarray({a}, dtype=float)"))
            .collect();
        let _ = writeln!(
            o,
            "    return _loss({})({})",
            floats.join(", "),
            conv.join(", ")
        );
        let _ = writeln!(o, "\n\ndef value_and_grad({}{kw}):", args.join(", "));
        let _ = writeln!(
            o,
            "    \"\"\"The objective and its gradient with respect to each pred.\"\"\""
        );
        let _ = writeln!(
            o,
            "    return _value_and_grad({}{})",
            args.join(", "),
            if pnames.is_empty() {
                String::new()
            } else {
                format!(", {}", pnames.join(", "))
            }
        );
    }
    Ok(o)
}

/// The module docstring every Python export opens with: what it was made
/// from (the spec's whole source), its inputs with domains and shapes, its
/// params with defaults and ranges, then `notes` (one paragraph each). The
/// closing quotes are left to the caller.
fn header(loss: &Loss, lib: &str, origin: &str, notes: &[String]) -> String {
    let c = loss.checked();
    let mut o = String::new();
    let overrides: Vec<String> = loss
        .overrides()
        .iter()
        .map(|(k, v)| format!("{k}={}", crate::analyze::num(*v)))
        .collect();
    let _ = writeln!(
        o,
        "\"\"\"lossc export of `{}` ({origin}) for {lib}.",
        c.name
    );
    let _ = writeln!(o);
    let _ = writeln!(
        o,
        "Generated by lossc {} from the spec below; regenerate it rather than edit it.",
        env!("CARGO_PKG_VERSION")
    );
    if !overrides.is_empty() {
        let _ = writeln!(
            o,
            "Param defaults overridden at export: {}.",
            overrides.join(", ")
        );
    }
    let _ = writeln!(o);
    for line in loss.source().text().lines() {
        let line = line.trim_end();
        if line.is_empty() {
            let _ = writeln!(o);
            continue;
        }
        let _ = writeln!(
            o,
            "    {}",
            line.replace('\\', "\\\\").replace("\"\"\"", "'''")
        );
    }
    let _ = writeln!(o);
    let _ = writeln!(o, "Inputs (float arrays; row i is one example):");
    for v in c.data.iter().chain(&c.preds) {
        let kind = if c.preds.iter().any(|p| p.name == v.name) {
            "pred"
        } else {
            "data"
        };
        let _ = writeln!(o, "    {kind} {}", dom_text(v));
    }
    if !c.params.is_empty() {
        let _ = writeln!(o, "Params (keyword arguments, with their defaults):");
        for p in &c.params {
            let range = p.range.map_or(String::new(), |r| format!(" in {r}"));
            let _ = writeln!(
                o,
                "    {} = {}{range}",
                py_name(&p.name),
                crate::analyze::num(p.value)
            );
        }
    }
    for n in notes {
        let _ = writeln!(o);
        for line in wrap(n, 88) {
            let _ = writeln!(o, "{line}");
        }
    }
    o
}

/// The numeric helpers every Python export defines: a sigmoid that cannot
/// overflow, and logsumexp with its maximum shifted out (as lossc evaluates).
fn helpers(m: &str) -> String {
    format!(
        "\ndef _sigmoid(x):\n    return 0.5 * (1.0 + {m}.tanh(0.5 * x))\n\n\ndef _logsumexp(x, axis):\n    top = {m}.max(x, axis=axis, keepdims=True)\n    top = {m}.where({m}.isfinite(top), top, 0.0)\n    return {m}.squeeze(top, axis=axis) + {m}.log({m}.sum({m}.exp(x - top), axis=axis))\n\n"
    )
}

/// Whether any of `lines` reads the Python name `name`.
fn uses(lines: &[String], name: &str) -> bool {
    lines.iter().any(|l| {
        l.split(|c: char| !(c.is_alphanumeric() || c == '_'))
            .any(|w| w == name)
    })
}

/// Words of `text` in lines of at most `width` characters.
fn wrap(text: &str, width: usize) -> Vec<String> {
    let mut lines = Vec::new();
    let mut cur = String::new();
    for w in text.split_whitespace() {
        if !cur.is_empty() && cur.len() + 1 + w.len() > width {
            lines.push(std::mem::take(&mut cur));
        }
        if !cur.is_empty() {
            cur.push(' ');
        }
        cur.push_str(w);
    }
    if !cur.is_empty() {
        lines.push(cur);
    }
    lines
}

fn latex(loss: &Loss, d: &crate::grad::Derivation) -> String {
    use crate::print::Style;
    let c = loss.checked();
    let mut o = String::new();
    let _ = writeln!(
        o,
        "% lossc export of `{}`: the objective, its gradient and Hessian.",
        c.name
    );
    let _ = writeln!(
        o,
        "% Generated by lossc {}; needs amsmath.",
        env!("CARGO_PKG_VERSION")
    );
    let _ = writeln!(o, "\\begin{{align*}}");
    let _ = writeln!(
        o,
        "  \\mathcal{{L}} &= {} \\\\",
        d.print(d.objective.outer, Style::Latex)
    );
    let factor = match d.factor {
        crate::grad::Factor::OneOverN => "\\frac{1}{n}",
        crate::grad::Factor::One => "",
    };
    for p in &d.preds {
        let lhs = crate::grad::latex_component(&p.pred, p.component.as_deref());
        let _ = writeln!(
            o,
            "  \\frac{{\\partial \\mathcal{{L}}}}{{\\partial {lhs}_i}} &= {factor}\\left({}\\right) \\\\",
            d.print(p.per_sample, Style::Latex)
        );
        if let Some(h) = p.hessian {
            let _ = writeln!(
                o,
                "  \\frac{{\\partial^2 \\ell_i}}{{\\partial {}_i^2}} &= {} \\\\",
                crate::grad::latex_name(&p.pred),
                d.print(h, Style::Latex)
            );
        }
    }
    let _ = writeln!(o, "\\end{{align*}}");
    o
}
