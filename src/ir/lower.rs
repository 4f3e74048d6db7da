//! From a checked spec to the IR: lets substituted, defs (the prelude's
//! standard losses included) inlined, params kept as symbols.
//!
//! The objective `minimize E` becomes an [`Objective`]: the per-sample
//! bodies of its sample reductions (`mean(...)`, `sum(...)`), and the outer
//! expression that combines them, written over symbols `R0, R1, ...`.

use super::{Cmp, Fact, Func, Graph, Id, SymKind};
use crate::ast::{Arg, BinOp, Def, Expr, ExprKind, StmtKind, UnOp};
use crate::sema::types::{Dom, Shape};
use crate::sema::{Checked, prelude};
use crate::span::Span;
use std::collections::BTreeMap;

/// How a sample reduction combines its rows.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SampleReduction {
    /// `mean(...)`: the gradient carries a factor `1/n`.
    Mean,
    /// `sum(...)`
    Sum,
}

/// One `mean(...)` or `sum(...)` of the objective.
#[derive(Clone, Debug)]
pub struct Reduction {
    /// Mean or sum.
    pub kind: SampleReduction,
    /// The per-sample body.
    pub body: Id,
    /// The reduction's name in [`Objective::outer`] (`R0`, `R1`, ...).
    pub name: String,
}

/// The lowered objective.
#[derive(Clone, Debug)]
pub struct Objective {
    /// The sample reductions, in source order.
    pub reductions: Vec<Reduction>,
    /// The objective over symbols `R0, R1, ...` (of kind [`SymKind::Reduced`]).
    pub outer: Id,
}

/// A construct the IR cannot represent yet, with where it is.
#[derive(Clone, Debug, thiserror::Error)]
#[error("{what} is not supported by differentiation yet")]
pub struct Unsupported {
    /// What was met.
    pub what: String,
    /// Where.
    pub span: Span,
}

/// Lowers `checked` into `g`.
pub fn lower(checked: &Checked, g: &mut Graph) -> Result<Objective, Unsupported> {
    for v in checked.preds.iter().chain(&checked.data) {
        if let Shape::Vector(_) = v.shape {
            return Err(Unsupported {
                what: format!("the vector `{}`", v.name),
                span: v.span,
            });
        }
    }
    for v in &checked.data {
        match &v.dom {
            Dom::Labels(vs) => g.set_fact(&v.name, Fact::Labels(vs.clone())),
            Dom::Range(r) => g.set_fact(&v.name, Fact::Range(r.lo, r.hi)),
            _ => {}
        }
    }
    let mut defs: BTreeMap<&str, Vec<&Def>> = BTreeMap::new();
    for stmt in &prelude().stmts {
        if let StmtKind::Def(d) = &stmt.kind {
            defs.entry(d.name.name.as_str()).or_default().push(d);
        }
    }
    let mut user: BTreeMap<&str, Vec<&Def>> = BTreeMap::new();
    for stmt in &checked.spec.stmts {
        if let StmtKind::Def(d) = &stmt.kind {
            user.entry(d.name.name.as_str()).or_default().push(d);
        }
    }
    defs.extend(user);
    let mut globals: BTreeMap<String, Id> = BTreeMap::new();
    for v in &checked.data {
        globals.insert(v.name.clone(), g.sym(SymKind::Data, &v.name));
    }
    for v in &checked.preds {
        globals.insert(v.name.clone(), g.sym(SymKind::Pred, &v.name));
    }
    for p in &checked.params {
        globals.insert(p.name.clone(), g.sym(SymKind::Param, &p.name));
    }
    let mut cx = Lowerer {
        g,
        defs,
        globals,
        lets: BTreeMap::new(),
        reductions: Vec::new(),
    };
    let mut outer = None;
    for stmt in &checked.spec.stmts {
        match &stmt.kind {
            StmtKind::Let(n, e) => {
                let id = cx.expr(e, &BTreeMap::new(), true)?;
                cx.lets.insert(n.name.clone(), id);
            }
            StmtKind::Minimize(e) => outer = Some(cx.expr(e, &BTreeMap::new(), true)?),
            _ => {}
        }
    }
    let outer = outer.ok_or(Unsupported {
        what: "a spec without `minimize`".into(),
        span: checked.spec.span,
    })?;
    Ok(Objective {
        reductions: cx.reductions,
        outer,
    })
}

struct Lowerer<'a, 'g> {
    g: &'g mut Graph,
    defs: BTreeMap<&'a str, Vec<&'a Def>>,
    globals: BTreeMap<String, Id>,
    lets: BTreeMap<String, Id>,
    reductions: Vec<Reduction>,
}

impl<'a> Lowerer<'a, '_> {
    /// Lowers `e` with `env` binding def parameters; `top` says whether
    /// lets and globals are visible (outside defs) or only globals.
    fn expr(&mut self, e: &Expr, env: &BTreeMap<String, Id>, top: bool) -> Result<Id, Unsupported> {
        let unsupported = |what: &str| Unsupported {
            what: what.to_string(),
            span: e.span,
        };
        Ok(match &e.kind {
            ExprKind::Num(v) => self.g.num(*v),
            ExprKind::Var(n) => {
                if let Some(&id) = env.get(n) {
                    id
                } else if let Some(&id) = self.lets.get(n).filter(|_| top) {
                    id
                } else if let Some(&id) = self.globals.get(n) {
                    id
                } else {
                    return Err(unsupported(&format!("the name `{n}` (a size or an index)")));
                }
            }
            ExprKind::Row => return Err(unsupported("the row index `i`")),
            ExprKind::Unary(UnOp::Neg, a) => {
                let a = self.expr(a, env, top)?;
                self.g.neg(a)
            }
            ExprKind::Unary(UnOp::Not, a) => {
                let a = self.expr(a, env, top)?;
                self.g.not(a)
            }
            ExprKind::Binary(op, a, b) => {
                let a = self.expr(a, env, top)?;
                let b = self.expr(b, env, top)?;
                let g = &mut *self.g;
                match op {
                    BinOp::Add => g.add2(a, b),
                    BinOp::Sub => g.sub(a, b),
                    BinOp::Mul => g.mul2(a, b),
                    BinOp::Div => g.div(a, b),
                    BinOp::Pow => g.pow(a, b),
                    BinOp::Eq => g.cmp(Cmp::Eq, a, b),
                    BinOp::Ne => g.cmp(Cmp::Ne, a, b),
                    BinOp::Lt => g.cmp(Cmp::Lt, a, b),
                    BinOp::Le => g.cmp(Cmp::Le, a, b),
                    BinOp::Gt => g.cmp(Cmp::Gt, a, b),
                    BinOp::Ge => g.cmp(Cmp::Ge, a, b),
                    BinOp::And => g.and(a, b),
                    BinOp::Or => g.or(a, b),
                }
            }
            ExprKind::If(c, a, b) => {
                let c = self.expr(c, env, top)?;
                let a = self.expr(a, env, top)?;
                let b = self.expr(b, env, top)?;
                self.g.select(c, a, b)
            }
            ExprKind::Index(..) => return Err(unsupported("indexing a vector")),
            ExprKind::At(..) => return Err(unsupported("batch coupling (`x@j`)")),
            ExprKind::Reduce { .. } => return Err(unsupported("an indexed reduction")),
            ExprKind::Call(f, args) => self.call(&f.name, args, env, top, e.span)?,
        })
    }

    fn call(
        &mut self,
        name: &str,
        args: &[Arg],
        env: &BTreeMap<String, Id>,
        top: bool,
        span: Span,
    ) -> Result<Id, Unsupported> {
        let unsupported = |what: String| Unsupported { what, span };
        if let Some(f) = Func::from_name(name) {
            let x = self.expr(&args[0].value, env, top)?;
            return Ok(self.g.func(f, x));
        }
        match name {
            "mean" | "sum" => {
                let body = self.expr(&args[0].value, env, top)?;
                let kind = if name == "mean" {
                    SampleReduction::Mean
                } else {
                    SampleReduction::Sum
                };
                let rname = format!("R{}", self.reductions.len());
                self.reductions.push(Reduction {
                    kind,
                    body,
                    name: rname.clone(),
                });
                return Ok(self.g.sym(SymKind::Reduced, &rname));
            }
            "const" => {
                let x = self.expr(&args[0].value, env, top)?;
                return Ok(self.g.stop_grad(x));
            }
            "max" | "min" | "clip" => {
                let vals: Vec<Id> = args
                    .iter()
                    .map(|a| self.expr(&a.value, env, top))
                    .collect::<Result<_, _>>()?;
                // Named arguments of max/min/clip follow their positions.
                let names: &[&str] = if name == "clip" {
                    &["x", "lo", "hi"]
                } else {
                    &["a", "b"]
                };
                let ordered = order_args(names, args, &vals);
                return Ok(match name {
                    "max" => self.g.max(ordered[0], ordered[1]),
                    "min" => self.g.min(ordered[0], ordered[1]),
                    _ => {
                        let upper = self.g.min(ordered[0], ordered[2]);
                        self.g.max(ordered[1], upper)
                    }
                });
            }
            "softmax" | "logsumexp" | "dot" | "norm" | "dist" | "cosine" | "onehot" => {
                return Err(unsupported(format!("the vector function `{name}`")));
            }
            _ => {}
        }
        let Some(candidates) = self.defs.get(name).cloned() else {
            return Err(unsupported(format!("the function `{name}`")));
        };
        // Vectors are not lowered, so the scalar overload is the one.
        let def = candidates
            .iter()
            .find(|d| {
                !d.params
                    .first()
                    .and_then(|p| p.ty.as_ref())
                    .is_some_and(|t| is_vector_type(&t.name.name))
            })
            .copied()
            .unwrap_or(candidates[0]);
        let vals: Vec<Id> = args
            .iter()
            .map(|a| self.expr(&a.value, env, top))
            .collect::<Result<_, _>>()?;
        let mut inner = BTreeMap::new();
        let mut positional = args
            .iter()
            .zip(&vals)
            .filter(|(a, _)| a.name.is_none())
            .map(|(_, v)| *v);
        for p in &def.params {
            let named = args
                .iter()
                .zip(&vals)
                .find(|(a, _)| a.name.as_ref().is_some_and(|n| n.name == p.name.name));
            let value = match named {
                Some((_, v)) => *v,
                None => match positional.next() {
                    Some(v) => v,
                    None => self.g.num(p.default.map_or(0.0, |d| d.value)),
                },
            };
            inner.insert(p.name.name.clone(), value);
        }
        self.expr(&def.body, &inner, false)
    }
}

fn is_vector_type(name: &str) -> bool {
    matches!(name, "onehot" | "multihot" | "probs" | "vector")
}

fn order_args(names: &[&str], args: &[Arg], vals: &[Id]) -> Vec<Id> {
    let mut out: Vec<Option<Id>> = vec![None; names.len()];
    let mut next = 0;
    for (a, v) in args.iter().zip(vals) {
        let slot = match &a.name {
            Some(n) => names.iter().position(|x| *x == n.name).unwrap_or(next),
            None => {
                let s = next;
                next += 1;
                s
            }
        };
        if slot < out.len() {
            out[slot] = Some(*v);
        }
    }
    out.into_iter().map(|v| v.unwrap_or(vals[0])).collect()
}
