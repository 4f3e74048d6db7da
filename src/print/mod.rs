//! Printers for IR expressions: plain text (valid `.loss` syntax, so a
//! printed derivative can be pasted back into a spec), Unicode and LaTeX,
//! from one precedence-aware core.
//!
//! Terms of a sum are printed positive first (`sigmoid(z) - y`, not
//! `-y + sigmoid(z)`); factors with negative exponents go under a fraction
//! bar; a `{...}` of `if` is parenthesised wherever it is an operand.

use crate::ast::fmt_num;
use crate::ir::{Cmp, Func, Graph, Id, Node, RedOp, SymKind};
use std::collections::BTreeMap;

/// Which notation to print.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Style {
    /// ASCII, valid `.loss` expression syntax.
    Text,
    /// Unicode: σ, ·, −, superscripts, Greek letters.
    Unicode,
    /// LaTeX math.
    Latex,
}

/// Binding strength, loosest first.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Prec {
    Cond,
    Sum,
    Product,
    Unary,
    Power,
    Atom,
}

/// Prints IR expressions in one style; `names` gives the text to print for
/// `Reduced` symbols (the objective's `mean(...)` terms).
pub struct Printer<'g> {
    g: &'g Graph,
    style: Style,
    names: BTreeMap<String, String>,
    /// While printing a vector form: the index whose components are elided
    /// (`z[c]` prints as `z`), and whether some other use of it was met.
    elide: Option<String>,
    failed: std::cell::Cell<bool>,
    /// Names for shared subexpressions, printed once as bindings.
    shared: BTreeMap<Id, String>,
    /// The shared node being defined (printed in full, not by name).
    defining: std::cell::Cell<Option<Id>>,
}

/// Subexpressions used more than once and at least this large (as a tree)
/// are printed once, as a binding, so that the text of a deeply nested
/// derivative stays proportional to its DAG, not exponential.
const SHARE_AT: usize = 16;

const GREEK: &[(&str, &str, &str)] = &[
    ("alpha", "α", "\\alpha"),
    ("beta", "β", "\\beta"),
    ("gamma", "γ", "\\gamma"),
    ("delta", "δ", "\\delta"),
    ("epsilon", "ε", "\\epsilon"),
    ("eta", "η", "\\eta"),
    ("theta", "θ", "\\theta"),
    ("kappa", "κ", "\\kappa"),
    ("lambda", "λ", "\\lambda"),
    ("mu", "μ", "\\mu"),
    ("nu", "ν", "\\nu"),
    ("rho", "ρ", "\\rho"),
    ("sigma", "σ", "\\sigma"),
    ("tau", "τ", "\\tau"),
    ("phi", "φ", "\\phi"),
    ("omega", "ω", "\\omega"),
];

impl<'g> Printer<'g> {
    /// A printer for `g` in `style`.
    pub fn new(g: &'g Graph, style: Style) -> Self {
        Printer {
            g,
            style,
            names: BTreeMap::new(),
            elide: None,
            failed: std::cell::Cell::new(false),
            shared: BTreeMap::new(),
            defining: std::cell::Cell::new(None),
        }
    }

    /// Prints `Reduced` symbol `name` as `text` (already in this style).
    pub fn name(mut self, name: &str, text: String) -> Self {
        self.names.insert(name.to_string(), text);
        self
    }

    /// The expression as a string.
    pub fn print(&self, id: Id) -> String {
        self.expr(id).0
    }

    /// The expression with large shared subexpressions bound to names
    /// (`_t1`, `_t2`, ...): the bindings in order (each may use earlier
    /// ones), then the expression.
    pub fn print_shared(mut self, root: Id) -> (Vec<(String, String)>, String) {
        let g = self.g;
        let mut uses: BTreeMap<Id, usize> = BTreeMap::new();
        let mut stack = vec![root];
        let mut seen = std::collections::HashSet::new();
        while let Some(x) = stack.pop() {
            if seen.insert(x) {
                for c in g.node(x).children() {
                    *uses.entry(c).or_insert(0) += 1;
                    stack.push(c);
                }
            }
        }
        // Bound indices make a node's meaning depend on where it stands;
        // only closed subexpressions are shared.
        let mut shared: Vec<Id> = uses
            .iter()
            .filter(|&(&id, &n)| {
                n >= 2 && g.tree_size(id) >= SHARE_AT && g.free_indices(id).is_empty()
            })
            .map(|(&id, _)| id)
            .collect();
        shared.sort();
        for (k, &id) in shared.iter().enumerate() {
            self.shared.insert(id, format!("_t{}", k + 1));
        }
        let mut bindings = Vec::new();
        for &id in &shared {
            self.defining.set(Some(id));
            bindings.push((self.shared[&id].clone(), self.expr(id).0));
        }
        self.defining.set(None);
        (bindings, self.expr(root).0)
    }

    /// `body` (a component with free index `idx`) written as the vector it
    /// is a component of: `z[c] / t` over `c` is `z / t`. `None` when `idx`
    /// is used other than as a component.
    fn vector_form(&self, body: Id, idx: &str) -> Option<String> {
        // Only a feature index makes components; a batch index makes rows.
        if !matches!(self.g.range(idx), Some(crate::ir::IdxRange::Feature(_))) {
            return None;
        }
        let sub = Printer {
            g: self.g,
            style: self.style,
            names: self.names.clone(),
            elide: Some(idx.to_string()),
            failed: std::cell::Cell::new(false),
            shared: self.shared.clone(),
            defining: std::cell::Cell::new(None),
        };
        let s = sub.print(body);
        let uses = self.g.free_indices(body).contains(idx);
        (uses && !sub.failed.get()).then_some(s)
    }

    /// The reduction written as the builtin it is, when it is one:
    /// `logsumexp(z)`, `dot(a, b)`.
    fn named_reduction(
        &self,
        op: RedOp,
        idx: &str,
        filter: Option<Id>,
        body: Id,
    ) -> Option<String> {
        if filter.is_some() || !matches!(self.g.range(idx), Some(crate::ir::IdxRange::Feature(_))) {
            return None;
        }
        match op {
            RedOp::LogSumExp => Some(format!(
                "{}({})",
                self.fname("logsumexp"),
                self.vector_form(body, idx)?
            )),
            RedOp::Sum => match self.g.node(body) {
                Node::Mul(fs) if fs.len() == 2 => {
                    let a = self.vector_form(fs[0], idx)?;
                    let b = self.vector_form(fs[1], idx)?;
                    Some(format!("{}({a}, {b})", self.fname("dot")))
                }
                _ => None,
            },
            _ => None,
        }
    }

    /// `sqrt(sum[c](a[c]^2))` as `norm(a)`, `sqrt(sum[c]((a[c] - b[c])^2))` as `dist(a, b)`.
    fn named_sqrt(&self, x: Id) -> Option<String> {
        let Node::Reduce {
            op: RedOp::Sum,
            idx,
            filter: None,
            body,
            ..
        } = self.g.node(x)
        else {
            return None;
        };
        let Node::Pow(b, e) = *self.g.node(*body) else {
            return None;
        };
        if self.g.as_num(e) != Some(2.0) {
            return None;
        }
        if let Node::Add(ts) = self.g.node(b)
            && ts.len() == 2
            && let Node::Mul(fs) = self.g.node(ts[1])
            && fs.len() == 2
            && self.g.as_num(fs[0]) == Some(-1.0)
        {
            let a = self.vector_form(ts[0], idx)?;
            let c = self.vector_form(fs[1], idx)?;
            return Some(format!("{}({a}, {c})", self.fname("dist")));
        }
        Some(format!(
            "{}({})",
            self.fname("norm"),
            self.vector_form(b, idx)?
        ))
    }

    /// `exp(x[a] - logsumexp[c](x[c]))` as `softmax(x)[a]`.
    fn named_softmax(&self, arg: Id) -> Option<String> {
        let Node::Add(ts) = self.g.node(arg) else {
            return None;
        };
        if ts.len() != 2 {
            return None;
        }
        for (k, &t) in ts.iter().enumerate() {
            let Node::Mul(fs) = self.g.node(t) else {
                continue;
            };
            if fs.len() != 2 || self.g.as_num(fs[0]) != Some(-1.0) {
                continue;
            }
            let Node::Reduce {
                op: RedOp::LogSumExp,
                idx,
                filter: None,
                body,
                ..
            } = self.g.node(fs[1])
            else {
                continue;
            };
            let v = self.vector_form(*body, idx)?;
            let x = ts[1 - k];
            let free = self.g.free_indices(x);
            let a = free.iter().next()?;
            if free.len() != 1 || self.vector_form(x, a)? != v {
                return None;
            }
            let a = match self.style {
                Style::Latex => a.clone(),
                _ => a.clone(),
            };
            return Some(match self.style {
                Style::Latex => format!("\\operatorname{{softmax}}\\left({v}\\right)_{{{a}}}"),
                _ => format!("softmax({v})[{a}]"),
            });
        }
        None
    }

    fn fname(&self, name: &str) -> String {
        match self.style {
            Style::Latex => format!("\\operatorname{{{name}}}"),
            _ => name.to_string(),
        }
    }

    fn index_name(&self, name: &str) -> String {
        if self.elide.as_deref() == Some(name) {
            self.failed.set(true);
        }
        name.to_string()
    }

    fn wrap(&self, (s, p): (String, Prec), min: Prec) -> String {
        if p < min {
            match self.style {
                Style::Latex => format!("\\left({s}\\right)"),
                _ => format!("({s})"),
            }
        } else {
            s
        }
    }

    fn times(&self) -> &'static str {
        match self.style {
            Style::Text => " * ",
            Style::Unicode => " · ",
            Style::Latex => " \\cdot ",
        }
    }

    fn minus(&self) -> &'static str {
        match self.style {
            Style::Unicode => "−",
            _ => "-",
        }
    }

    fn symbol(&self, name: &str) -> String {
        match self.style {
            Style::Text => name.to_string(),
            Style::Unicode => match GREEK.iter().find(|(n, _, _)| *n == name) {
                Some((_, u, _)) => u.to_string(),
                None if name == "yhat" => "ŷ".into(),
                None => name.to_string(),
            },
            Style::Latex => match GREEK.iter().find(|(n, _, _)| *n == name) {
                Some((_, _, l)) => l.to_string(),
                None if name == "yhat" => "\\hat{y}".into(),
                None if name.chars().count() == 1 => name.to_string(),
                None => format!("\\mathit{{{}}}", name.replace('_', "\\_")),
            },
        }
    }

    fn number(&self, v: f64) -> (String, Prec) {
        let s = fmt_num(v.abs());
        let s = if self.style == Style::Latex && s == "inf" {
            "\\infty".to_string()
        } else {
            s
        };
        if v < 0.0 {
            (format!("{}{s}", self.minus()), Prec::Unary)
        } else {
            (s, Prec::Atom)
        }
    }

    /// Splits a term into (is negative, the term with a positive coefficient).
    fn sign_split(&self, t: Id) -> (bool, Term) {
        let g = self.g;
        match g.node(t) {
            Node::Num(v) if v.0 < 0.0 => (true, Term::Number(-v.0)),
            Node::Num(v) => (false, Term::Number(v.0)),
            Node::Mul(fs) => match g.as_num(fs[0]) {
                Some(c) if c < 0.0 => (true, Term::Product(-c, fs[1..].to_vec())),
                Some(c) => (false, Term::Product(c, fs[1..].to_vec())),
                None => (false, Term::Product(1.0, fs.clone())),
            },
            _ => (false, Term::Product(1.0, vec![t])),
        }
    }

    fn term(&self, t: &Term) -> (String, Prec) {
        match t {
            Term::Number(v) => self.number(*v),
            Term::Product(c, fs) => self.product(*c, fs),
        }
    }

    fn product(&self, c: f64, fs: &[Id]) -> (String, Prec) {
        let g = self.g;
        let mut num = Vec::new();
        let mut den = Vec::new();
        for &f in fs {
            match *g.node(f) {
                Node::Pow(b, e) if g.as_num(e).is_some_and(|k| k < 0.0) => {
                    let k = -g.as_num(e).unwrap_or(1.0);
                    den.push((b, k));
                }
                _ => num.push(f),
            }
        }
        let coeff = if c == 1.0 && !num.is_empty() {
            None
        } else {
            Some(c)
        };
        let numerator: (String, Prec) = match (coeff, num.as_slice()) {
            (None, [f]) => self.expr(*f),
            _ => {
                let mut parts: Vec<String> = Vec::new();
                if let Some(c) = coeff {
                    parts.push(self.number(c).0);
                }
                for &f in &num {
                    parts.push(self.wrap(self.expr(f), Prec::Unary));
                }
                let prec = if parts.len() > 1 {
                    Prec::Product
                } else {
                    Prec::Atom
                };
                (parts.join(self.times()), prec)
            }
        };
        if den.is_empty() {
            return numerator;
        }
        // Simple factors first in a denominator: `p * (1 - p)`.
        den.sort_by_key(|&(b, _)| (self.g.tree_size(b), b));
        let den_parts: Vec<(String, Prec)> = den
            .iter()
            .map(|&(b, k)| {
                if k == 1.0 {
                    self.expr(b)
                } else {
                    self.power(b, k)
                }
            })
            .collect();
        match self.style {
            Style::Latex => {
                let d: Vec<String> = den_parts
                    .into_iter()
                    .map(|p| self.wrap(p, Prec::Unary))
                    .collect();
                (
                    format!("\\frac{{{}}}{{{}}}", numerator.0, d.join(self.times())),
                    Prec::Atom,
                )
            }
            _ => {
                let n = self.wrap(numerator, Prec::Product);
                let d = if den_parts.len() == 1 {
                    self.wrap(den_parts[0].clone(), Prec::Power)
                } else {
                    let inner: Vec<String> = den_parts
                        .into_iter()
                        .map(|p| self.wrap(p, Prec::Unary))
                        .collect();
                    format!("({})", inner.join(self.times()))
                };
                (format!("{n} / {d}"), Prec::Product)
            }
        }
    }

    fn power(&self, b: Id, k: f64) -> (String, Prec) {
        let base = self.wrap(self.expr(b), Prec::Atom);
        let exp = match self.style {
            Style::Unicode if k.fract() == 0.0 && (0.0..10.0).contains(&k) => {
                const SUP: [&str; 10] = ["⁰", "¹", "²", "³", "⁴", "⁵", "⁶", "⁷", "⁸", "⁹"];
                return (format!("{base}{}", SUP[k as usize]), Prec::Power);
            }
            Style::Latex => return (format!("{base}^{{{}}}", fmt_num(k)), Prec::Power),
            _ => self.number(k),
        };
        (
            format!("{base}^{}", self.wrap(exp, Prec::Atom)),
            Prec::Power,
        )
    }

    fn call(&self, name: &str, args: &[Id]) -> (String, Prec) {
        let inner: Vec<String> = args.iter().map(|&a| self.expr(a).0).collect();
        let inner = inner.join(", ");
        match self.style {
            Style::Latex => {
                let f = match name {
                    "exp" | "log" | "tanh" | "cosh" | "sinh" | "max" | "min" => format!("\\{name}"),
                    "sigmoid" => "\\sigma".into(),
                    "sqrt" => return (format!("\\sqrt{{{inner}}}"), Prec::Atom),
                    "abs" => return (format!("\\left|{inner}\\right|"), Prec::Atom),
                    other => format!("\\operatorname{{{}}}", other.replace('_', "\\_")),
                };
                (format!("{f}\\left({inner}\\right)"), Prec::Atom)
            }
            Style::Unicode => match name {
                "sigmoid" => (format!("σ({inner})"), Prec::Atom),
                "abs" => (format!("|{inner}|"), Prec::Atom),
                "sqrt" => (format!("√({inner})"), Prec::Atom),
                _ => (format!("{name}({inner})"), Prec::Atom),
            },
            Style::Text => (format!("{name}({inner})"), Prec::Atom),
        }
    }

    fn cmp_symbol(&self, op: Cmp) -> &'static str {
        match (self.style, op) {
            (Style::Unicode, Cmp::Le) => "≤",
            (Style::Unicode, Cmp::Ge) => "≥",
            (Style::Unicode, Cmp::Ne) => "≠",
            (Style::Latex, Cmp::Le) => "\\le",
            (Style::Latex, Cmp::Ge) => "\\ge",
            (Style::Latex, Cmp::Ne) => "\\ne",
            (Style::Latex, Cmp::Eq) => "=",
            _ => op.symbol(),
        }
    }

    fn expr(&self, id: Id) -> (String, Prec) {
        let g = self.g;
        if let Some(name) = self.shared.get(&id)
            && self.defining.get() != Some(id)
        {
            return (name.clone(), Prec::Atom);
        }
        self.defining.set(None);
        match g.node(id) {
            Node::Num(v) => self.number(v.0),
            Node::Sym(SymKind::Reduced, n) => match self.names.get(n) {
                Some(t) => (t.clone(), Prec::Atom),
                None => (n.clone(), Prec::Atom),
            },
            Node::Sym(_, n) => (self.symbol(n), Prec::Atom),
            Node::Add(xs) => {
                let mut terms: Vec<(bool, Term)> = xs.iter().map(|&x| self.sign_split(x)).collect();
                // Positive terms first, each group in canonical order.
                terms.sort_by_key(|(neg, _)| *neg);
                let mut out = String::new();
                for (k, (neg, t)) in terms.iter().enumerate() {
                    let s = self.wrap(self.term(t), if *neg { Prec::Product } else { Prec::Sum });
                    match (k, neg) {
                        (0, false) => out.push_str(&s),
                        (0, true) => out.push_str(&format!("{}{s}", self.minus())),
                        (_, false) => out.push_str(&format!(" + {s}")),
                        (_, true) => out.push_str(&format!(" {} {s}", self.minus())),
                    }
                }
                (out, Prec::Sum)
            }
            Node::Mul(_) => {
                let (neg, t) = self.sign_split(id);
                let (s, p) = self.term(&t);
                // `-a * b` is `(-a) * b`, equal to `-(a * b)`: no parentheses needed.
                if neg {
                    (
                        format!("{}{}", self.minus(), self.wrap((s, p), Prec::Product)),
                        Prec::Unary,
                    )
                } else {
                    (s, p)
                }
            }
            Node::Pow(b, e) => match g.as_num(*e) {
                Some(k) if k < 0.0 => self.product(1.0, &[id]),
                Some(k) => self.power(*b, k),
                None => {
                    let base = self.wrap(self.expr(*b), Prec::Atom);
                    let exp = self.expr(*e);
                    match self.style {
                        Style::Latex => (format!("{base}^{{{}}}", exp.0), Prec::Power),
                        _ => (
                            format!("{base}^{}", self.wrap(exp, Prec::Power)),
                            Prec::Power,
                        ),
                    }
                }
            },
            Node::Func(Func::Exp, x) if self.named_softmax(*x).is_some() => {
                (self.named_softmax(*x).unwrap_or_default(), Prec::Atom)
            }
            Node::Func(Func::Sqrt, x) if self.named_sqrt(*x).is_some() => {
                (self.named_sqrt(*x).unwrap_or_default(), Prec::Atom)
            }
            Node::Func(f, x) => self.call(f.name(), &[*x]),
            Node::Idx(n) => (self.index_name(n), Prec::Atom),
            Node::Row => ("i".to_string(), Prec::Atom),
            Node::Elem {
                name, row, comp, ..
            } => {
                if row.is_some() && row.as_deref() == self.elide.as_deref() {
                    self.failed.set(true);
                }
                let mut out = self.symbol(name);
                if let Some(j) = row {
                    out = match self.style {
                        Style::Latex => format!("{out}^{{({j})}}"),
                        _ => format!("{out}@{j}"),
                    };
                }
                if let Some(c) = comp {
                    let elided = matches!(g.node(*c), Node::Idx(n) if self.elide.as_deref() == Some(n.as_str()));
                    if !elided {
                        let c = self.expr(*c).0;
                        out = match self.style {
                            Style::Latex => format!("{out}_{{{c}}}"),
                            _ => format!("{out}[{c}]"),
                        };
                    }
                }
                (out, Prec::Atom)
            }
            Node::Delta(a, b) => {
                let (a, b) = (self.expr(*a).0, self.expr(*b).0);
                match self.style {
                    Style::Text => (format!("(if {a} == {b} then 1 else 0)"), Prec::Atom),
                    Style::Unicode => (format!("δ({a}, {b})"), Prec::Atom),
                    Style::Latex => (format!("\\delta_{{{a} {b}}}"), Prec::Atom),
                }
            }
            Node::Reduce {
                op,
                idx,
                filter,
                body,
                ..
            } => {
                if let Some(s) = self.named_reduction(*op, idx, *filter, *body) {
                    return (s, Prec::Atom);
                }
                let body_s = self.expr(*body).0;
                let filter_s = filter.map(|f| self.expr(f).0);
                match self.style {
                    Style::Latex => {
                        let head = match op {
                            RedOp::Sum => "\\sum".to_string(),
                            RedOp::Max => "\\max".to_string(),
                            RedOp::Min => "\\min".to_string(),
                            other => format!("\\operatorname{{{}}}", other.name()),
                        };
                        let sub = match filter_s {
                            Some(f) => format!("{idx} :\\, {f}"),
                            None => idx.clone(),
                        };
                        (
                            format!("{head}_{{{sub}}} \\left({body_s}\\right)"),
                            Prec::Atom,
                        )
                    }
                    _ => {
                        let head = match (self.style, op) {
                            (Style::Unicode, RedOp::Sum) => "Σ".to_string(),
                            _ => op.name().to_string(),
                        };
                        let sub = match filter_s {
                            Some(f) => format!("{idx}: {f}"),
                            None => idx.clone(),
                        };
                        (format!("{head}[{sub}]({body_s})"), Prec::Atom)
                    }
                }
            }
            Node::Max(a, b) => self.call("max", &[*a, *b]),
            Node::Min(a, b) => self.call("min", &[*a, *b]),
            Node::Select(c, a, b) => {
                let (c, a, b) = (self.expr(*c).0, self.expr(*a).0, self.expr(*b).0);
                match self.style {
                    Style::Latex => (
                        format!(
                            "\\begin{{cases}} {a} & \\text{{if }} {c} \\\\ {b} & \\text{{otherwise}} \\end{{cases}}"
                        ),
                        Prec::Atom,
                    ),
                    _ => (format!("if {c} then {a} else {b}"), Prec::Cond),
                }
            }
            Node::Cmp(op, a, b) => {
                let a = self.wrap(self.expr(*a), Prec::Sum);
                let b = self.wrap(self.expr(*b), Prec::Sum);
                (format!("{a} {} {b}", self.cmp_symbol(*op)), Prec::Cond)
            }
            Node::And(a, b) | Node::Or(a, b) => {
                let word = match (self.style, g.node(id)) {
                    (Style::Latex, Node::And(..)) => "\\land",
                    (Style::Latex, _) => "\\lor",
                    (_, Node::And(..)) => "and",
                    _ => "or",
                };
                let a = self.wrap(self.expr(*a), Prec::Cond);
                let b = self.wrap(self.expr(*b), Prec::Cond);
                (format!("{a} {word} {b}"), Prec::Cond)
            }
            Node::Not(a) => {
                let word = if self.style == Style::Latex {
                    "\\lnot "
                } else {
                    "not "
                };
                (
                    format!("{word}{}", self.wrap(self.expr(*a), Prec::Atom)),
                    Prec::Cond,
                )
            }
            Node::StopGrad(a) => self.call("const", &[*a]),
        }
    }
}

enum Term {
    Number(f64),
    Product(f64, Vec<Id>),
}

/// A function's name in a given style (used by explanations).
pub fn func_name(f: Func, style: Style) -> String {
    match (style, f) {
        (Style::Unicode, Func::Sigmoid) => "σ".into(),
        (Style::Latex, Func::Sigmoid) => "\\sigma".into(),
        _ => f.name().into(),
    }
}
