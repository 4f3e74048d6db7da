//! Printers for IR expressions: plain text (valid `.loss` syntax, so a
//! printed derivative can be pasted back into a spec), Unicode and LaTeX,
//! from one precedence-aware core.
//!
//! Terms of a sum are printed positive first (`sigmoid(z) - y`, not
//! `-y + sigmoid(z)`); factors with negative exponents go under a fraction
//! bar; a `{...}` of `if` is parenthesised wherever it is an operand.

use crate::ast::fmt_num;
use crate::ir::{Cmp, Func, Graph, Id, Node, SymKind};
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
}

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
            Node::Func(f, x) => self.call(f.name(), &[*x]),
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
