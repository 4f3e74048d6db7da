//! From a checked spec to the IR: lets substituted, defs (the prelude's
//! standard losses included) inlined, params kept as symbols, vectors
//! written in index notation.
//!
//! A vector-valued expression is never materialised: it is lowered *at a
//! component*, an index node, so `softmax(z)[c]` becomes
//! `exp(z[c] - logsumexp[k](z[k]))` and `dot(a, b)` becomes
//! `sum[k](a[k] * b[k])`. `x@j` lowers `x` in row `j`. The objective
//! `minimize E` becomes an [`Objective`]: the per-sample bodies of its
//! sample reductions and the outer expression over symbols `R0, R1, ...`.

use super::{Cmp, Fact, Func, Graph, Id, IdxRange, RedOp, SymKind};
use crate::ast::{Arg, BinOp, Def, Expr, ExprKind, Reducer, StmtKind, UnOp};
use crate::hash::HashMap;
use crate::sema::types::{Dom, Shape, Size};
use crate::sema::{Checked, prelude};
use crate::span::Span;
use std::collections::BTreeMap;
use std::rc::Rc;

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

/// A construct the IR cannot represent, with where it is.
#[derive(Clone, Debug, thiserror::Error)]
#[error("{what} is not supported by differentiation yet")]
pub struct Unsupported {
    /// What was met.
    pub what: String,
    /// Where.
    pub span: Span,
}

/// What a name stands for while lowering.
#[derive(Clone)]
enum Bound<'a> {
    /// A scalar, already lowered in the row of the call; the argument is
    /// kept so that `x@j` inside the def can read it in row `j`.
    Scalar(Id, Option<(&'a Expr, Rc<Scope<'a>>, Option<String>)>),
    /// A vector expression, lowered on demand at a component, in the
    /// scope and row it was written in.
    Vector {
        size: Size,
        expr: &'a Expr,
        scope: Rc<Scope<'a>>,
        row: Option<String>,
    },
    /// A class index standing for its one-hot row.
    Class { value: Id, size: Size },
}

/// Names visible in a def body (its parameters) or at the top level.
#[derive(Clone, Default)]
struct Scope<'a> {
    params: BTreeMap<String, Bound<'a>>,
    /// Top level: lets and globals visible. In a def: only globals.
    top: bool,
    /// Reduction indices in scope: written name → IR index name.
    indices: BTreeMap<String, String>,
    /// Inside a standard loss: calls resolve to the prelude only.
    prelude: bool,
}

/// Lowers `checked` into `g`.
pub fn lower(checked: &Checked, g: &mut Graph) -> Result<Objective, Unsupported> {
    let mut cx = Lowerer::new(checked, g, "R");
    let top = Rc::new(Scope {
        top: true,
        ..Scope::default()
    });
    let mut outer = None;
    for stmt in &checked.spec.stmts {
        match &stmt.kind {
            StmtKind::Let(n, e) => {
                cx.lets.insert(n.name.clone(), e);
            }
            StmtKind::Minimize(e) => outer = Some(cx.scalar(e, &top, None)?),
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

/// Lowers one expression over `checked`'s declarations, with `indices`
/// bound (the output index of a printed vector gradient). Sample reductions
/// inside it are returned, named `P0`, `P1`, ... Used to read a printed
/// derivative back in and check it against the derived one.
pub fn lower_expr(
    checked: &Checked,
    g: &mut Graph,
    e: &Expr,
    indices: &[(&str, IdxRange)],
) -> Result<(Id, Vec<Reduction>), Unsupported> {
    let mut cx = Lowerer::new(checked, g, "P");
    let mut scope = Scope {
        top: true,
        ..Scope::default()
    };
    for (name, range) in indices {
        cx.g.set_range(name, range.clone());
        scope.indices.insert(name.to_string(), name.to_string());
    }
    let id = cx.scalar(e, &Rc::new(scope), None)?;
    Ok((id, cx.reductions))
}

#[derive(Clone)]
enum Global {
    Var {
        kind: SymKind,
        size: Option<Size>,
        class: Option<Size>,
    },
    Param,
    Size,
}

struct Lowerer<'a, 'g> {
    g: &'g mut Graph,
    defs: BTreeMap<&'a str, Vec<&'a Def>>,
    prelude_defs: BTreeMap<&'a str, Vec<&'a Def>>,
    globals: BTreeMap<String, Global>,
    lets: BTreeMap<String, &'a Expr>,
    reductions: Vec<Reduction>,
    /// Sample reductions are named `{prefix}0`, `{prefix}1`, ...
    prefix: &'static str,
    let_cache: HashMap<(String, Option<String>, Option<Id>), Id>,
    def_cache: HashMap<DefKey, Id>,
}

/// A def call with scalar arguments: the def, the arguments, the row and component.
type DefKey = (usize, Vec<Id>, Option<String>, Option<Id>);

type Res<T> = Result<T, Unsupported>;

impl<'a, 'g> Lowerer<'a, 'g> {
    /// A lowerer over `checked`'s declarations, the prelude and its defs.
    fn new(checked: &'a Checked, g: &'g mut Graph, prefix: &'static str) -> Self {
        for v in &checked.data {
            match &v.dom {
                Dom::Labels(vs) => g.set_fact(&v.name, Fact::Labels(vs.clone())),
                Dom::Range(r) => g.set_fact(&v.name, Fact::Range(r.lo, r.hi)),
                Dom::Onehot | Dom::Probs => g.set_fact(&v.name, Fact::Simplex),
                _ => {}
            }
        }
        let mut defs: BTreeMap<&'a str, Vec<&'a Def>> = BTreeMap::new();
        for stmt in &prelude().stmts {
            if let StmtKind::Def(d) = &stmt.kind {
                defs.entry(d.name.name.as_str()).or_default().push(d);
            }
        }
        let mut user: BTreeMap<&'a str, Vec<&'a Def>> = BTreeMap::new();
        for stmt in &checked.spec.stmts {
            if let StmtKind::Def(d) = &stmt.kind {
                user.entry(d.name.name.as_str()).or_default().push(d);
            }
        }
        let prelude_defs = defs.clone();
        defs.extend(user);
        let mut globals = BTreeMap::new();
        for v in checked.data.iter().chain(&checked.preds) {
            let kind = if checked.preds.contains(v) {
                SymKind::Pred
            } else {
                SymKind::Data
            };
            let size = match &v.shape {
                Shape::Vector(s) => Some(s.clone()),
                Shape::Scalar => None,
            };
            let class = match &v.dom {
                Dom::Class(s) => Some(s.clone()),
                _ => None,
            };
            globals.insert(v.name.clone(), Global::Var { kind, size, class });
        }
        for p in &checked.params {
            globals.insert(p.name.clone(), Global::Param);
        }
        for s in checked.sizes.keys() {
            globals.insert(s.clone(), Global::Size);
        }
        Lowerer {
            g,
            defs,
            prelude_defs,
            globals,
            lets: BTreeMap::new(),
            reductions: Vec::new(),
            prefix,
            let_cache: HashMap::default(),
            def_cache: HashMap::default(),
        }
    }
}

impl<'a> Lowerer<'a, '_> {
    /// A fresh IR index name for `base` over `range`: distinct from indices
    /// in scope and from names already used for another range.
    fn index_name(&mut self, base: &str, range: &IdxRange, scope: &Scope<'a>) -> String {
        let taken = |name: &str, g: &Graph| {
            scope.indices.values().any(|v| v == name) || g.range(name).is_some_and(|r| r != range)
        };
        let mut name = base.to_string();
        let mut k = 2;
        while taken(&name, self.g) {
            name = format!("{base}_{k}");
            k += 1;
        }
        self.g.set_range(&name, range.clone());
        name
    }

    fn scalar(&mut self, e: &'a Expr, scope: &Rc<Scope<'a>>, row: Option<&str>) -> Res<Id> {
        self.at(e, scope, row, None)
    }

    /// The size of `e` if it is a vector.
    fn size(&mut self, e: &'a Expr, scope: &Rc<Scope<'a>>) -> Option<Size> {
        match &e.kind {
            ExprKind::Var(n) => match scope.params.get(n) {
                Some(Bound::Vector { size, .. }) | Some(Bound::Class { size, .. }) => {
                    Some(size.clone())
                }
                Some(Bound::Scalar(..)) => None,
                None => {
                    if scope.top
                        && let Some(l) = self.lets.get(n).copied()
                    {
                        return self.size(
                            l,
                            &Rc::new(Scope {
                                top: true,
                                ..Scope::default()
                            }),
                        );
                    }
                    match self.globals.get(n) {
                        Some(Global::Var { size, .. }) => size.clone(),
                        _ => None,
                    }
                }
            },
            ExprKind::Num(_) | ExprKind::Row | ExprKind::Index(..) | ExprKind::Reduce { .. } => {
                None
            }
            ExprKind::At(x, _) | ExprKind::Unary(_, x) => self.size(x, scope),
            ExprKind::Binary(op, a, b) if !op.is_comparison() && !op.is_logical() => {
                self.size(a, scope).or_else(|| self.size(b, scope))
            }
            ExprKind::Binary(..) => None,
            ExprKind::If(_, a, b) => self.size(a, scope).or_else(|| self.size(b, scope)),
            ExprKind::Call(f, args) => match f.name.as_str() {
                "logsumexp" | "dot" | "norm" | "dist" | "cosine" | "mean" | "sum" => None,
                "onehot" => args.get(1).and_then(|a| match &a.value.kind {
                    ExprKind::Var(n) => Some(Size::Name(n.clone())),
                    ExprKind::Num(v) => Some(Size::Lit(*v as u64)),
                    _ => None,
                }),
                name if Func::from_name(name).is_some()
                    || matches!(name, "max" | "min" | "clip" | "const" | "softmax") =>
                {
                    args.iter().find_map(|a| self.size(&a.value, scope))
                }
                _ => {
                    let (def, inner) = self.bind(&f.name, args, scope, None).ok()?;
                    self.size(&def.body, &inner)
                }
            },
        }
    }

    /// Lowers `e` in row `row`; a vector-valued `e` is taken at component `comp`.
    fn at(
        &mut self,
        e: &'a Expr,
        scope: &Rc<Scope<'a>>,
        row: Option<&str>,
        comp: Option<Id>,
    ) -> Res<Id> {
        let unsupported = |what: &str| Unsupported {
            what: what.to_string(),
            span: e.span,
        };
        Ok(match &e.kind {
            ExprKind::Num(v) => self.g.num(*v),
            ExprKind::Row => self.g.row(),
            ExprKind::Var(n) => {
                if let Some(ix) = scope.indices.get(n) {
                    return Ok(self.g.idx(ix));
                }
                match scope.params.get(n).cloned() {
                    Some(Bound::Scalar(id, arg)) => {
                        return match arg {
                            // Read in another row than the call's: lower the
                            // argument there.
                            Some((expr, s, call_row)) if row.map(str::to_string) != call_row => {
                                self.at(expr, &s, row, None)
                            }
                            _ => Ok(id),
                        };
                    }
                    Some(Bound::Vector {
                        expr,
                        scope: s,
                        row: r,
                        ..
                    }) => {
                        return self.at(expr, &s, r.as_deref(), comp);
                    }
                    Some(Bound::Class { value, .. }) => {
                        let c =
                            comp.ok_or_else(|| unsupported("a one-hot vector used as a scalar"))?;
                        return Ok(self.g.delta(value, c));
                    }
                    None => {}
                }
                if scope.top
                    && let Some(l) = self.lets.get(n).copied()
                {
                    // A let used many times is lowered once per row and
                    // component: re-lowering at every use is exponential in
                    // chains of lets that use the previous one twice.
                    let key = (n.clone(), row.map(str::to_string), comp);
                    if let Some(&id) = self.let_cache.get(&key) {
                        return Ok(id);
                    }
                    let s = Rc::new(Scope {
                        top: true,
                        indices: scope.indices.clone(),
                        ..Scope::default()
                    });
                    let id = self.at(l, &s, row, comp)?;
                    self.let_cache.insert(key, id);
                    return Ok(id);
                }
                match self.globals.get(n).cloned() {
                    Some(Global::Var { kind, size, .. }) => {
                        let comp = if size.is_some() { comp } else { None };
                        self.g.elem(kind, n, row, comp)
                    }
                    Some(Global::Param) => self.g.sym(SymKind::Param, n),
                    Some(Global::Size) => self.g.sym(SymKind::Size, n),
                    None => return Err(unsupported(&format!("the name `{n}`"))),
                }
            }
            ExprKind::Unary(UnOp::Neg, a) => {
                let a = self.at(a, scope, row, comp)?;
                self.g.neg(a)
            }
            ExprKind::Unary(UnOp::Not, a) => {
                let a = self.at(a, scope, row, comp)?;
                self.g.not(a)
            }
            ExprKind::Binary(op, a, b) => {
                let a = self.at(a, scope, row, comp)?;
                let b = self.at(b, scope, row, comp)?;
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
                let c = self.at(c, scope, row, None)?;
                let a = self.at(a, scope, row, comp)?;
                let b = self.at(b, scope, row, comp)?;
                self.g.select(c, a, b)
            }
            ExprKind::Index(v, k) => {
                let k = self.at(k, scope, row, None)?;
                self.at(v, scope, row, Some(k))?
            }
            ExprKind::At(x, j) => {
                let j = scope
                    .indices
                    .get(&j.name)
                    .cloned()
                    .unwrap_or_else(|| j.name.clone());
                self.at(x, scope, Some(&j), comp)?
            }
            ExprKind::Reduce {
                op,
                index,
                filter,
                body,
            } => {
                let batch = uses_at(body, &index.name)
                    || filter.as_ref().is_some_and(|f| uses_at(f, &index.name));
                let range = if batch {
                    IdxRange::Batch
                } else {
                    let size = self
                        .index_size(body, &index.name, scope)
                        .ok_or_else(|| unsupported("an index whose range is unknown"))?;
                    IdxRange::Feature(size)
                };
                let name = self.index_name(&index.name, &range, scope);
                let mut inner = (**scope).clone();
                inner.indices.insert(index.name.clone(), name.clone());
                let inner = Rc::new(inner);
                let f = match filter {
                    Some(f) => Some(self.at(f, &inner, row, None)?),
                    None => None,
                };
                let b = self.at(body, &inner, row, None)?;
                let op = match op {
                    Reducer::Sum => RedOp::Sum,
                    Reducer::Mean => RedOp::Mean,
                    Reducer::Max => RedOp::Max,
                    Reducer::Min => RedOp::Min,
                    Reducer::LogSumExp => RedOp::LogSumExp,
                };
                self.g.reduce(op, &name, range, f, b)
            }
            ExprKind::Call(f, args) => self.call(&f.name, args, scope, row, comp, e.span)?,
        })
    }

    /// The size of the vectors `idx` indexes in `body`.
    fn index_size(&mut self, body: &'a Expr, idx: &str, scope: &Rc<Scope<'a>>) -> Option<Size> {
        let mut found = None;
        let mut stack = vec![body];
        while let Some(e) = stack.pop() {
            if let ExprKind::Index(v, k) = &e.kind
                && matches!(&k.kind, ExprKind::Var(n) if n == idx)
                && let Some(s) = self.size(v, scope)
            {
                found = Some(s);
                break;
            }
            crate::sema::each_child(e, &mut |c| stack.push(c));
        }
        found
    }

    /// A fresh internal index over the components of a vector of `size`.
    fn fresh(&mut self, size: &Size, scope: &Rc<Scope<'a>>) -> String {
        let depth = scope.indices.len();
        self.index_name(
            &format!("_k{depth}"),
            &IdxRange::Feature(size.clone()),
            scope,
        )
    }

    fn call(
        &mut self,
        name: &str,
        args: &'a [Arg],
        scope: &Rc<Scope<'a>>,
        row: Option<&str>,
        comp: Option<Id>,
        span: Span,
    ) -> Res<Id> {
        let unsupported = |what: String| Unsupported { what, span };
        let arg = |k: usize| &args[k].value;
        if let Some(f) = Func::from_name(name) {
            let x = self.at(arg(0), scope, row, comp)?;
            return Ok(self.g.func(f, x));
        }
        match name {
            "mean" | "sum" => {
                let body = self.at(arg(0), scope, None, None)?;
                let kind = if name == "mean" {
                    SampleReduction::Mean
                } else {
                    SampleReduction::Sum
                };
                let rname = format!("{}{}", self.prefix, self.reductions.len());
                self.reductions.push(Reduction {
                    kind,
                    body,
                    name: rname.clone(),
                });
                return Ok(self.g.sym(SymKind::Reduced, &rname));
            }
            "const" => {
                let x = self.at(arg(0), scope, row, comp)?;
                return Ok(self.g.stop_grad(x));
            }
            "max" | "min" | "clip" => {
                let names: &[&str] = if name == "clip" {
                    &["x", "lo", "hi"]
                } else {
                    &["a", "b"]
                };
                let order = order_args(names, args);
                let mut vals = Vec::new();
                for k in order {
                    vals.push(self.at(arg(k), scope, row, comp)?);
                }
                return Ok(match name {
                    "max" => self.g.max(vals[0], vals[1]),
                    "min" => self.g.min(vals[0], vals[1]),
                    _ => {
                        let upper = self.g.min(vals[0], vals[2]);
                        self.g.max(vals[1], upper)
                    }
                });
            }
            "onehot" => {
                let c =
                    comp.ok_or_else(|| unsupported("a one-hot vector used as a scalar".into()))?;
                let k = self.at(arg(0), scope, row, None)?;
                return Ok(self.g.delta(k, c));
            }
            "softmax" => {
                let c = comp.ok_or_else(|| unsupported("softmax used as a scalar".into()))?;
                let size = self
                    .size(arg(0), scope)
                    .ok_or_else(|| unsupported("softmax of a scalar".into()))?;
                let t = self.fresh(&size, scope);
                let ti = self.g.idx(&t);
                let body = self.at(arg(0), scope, row, Some(ti))?;
                let lse = self
                    .g
                    .reduce(RedOp::LogSumExp, &t, IdxRange::Feature(size), None, body);
                let x = self.at(arg(0), scope, row, Some(c))?;
                let d = self.g.sub(x, lse);
                return Ok(self.g.func(Func::Exp, d));
            }
            "logsumexp" | "dot" | "norm" | "dist" | "cosine" => {
                let size = self
                    .size(arg(0), scope)
                    .ok_or_else(|| unsupported(format!("{name} of a scalar")))?;
                let range = IdxRange::Feature(size.clone());
                let t = self.fresh(&size, scope);
                let ti = self.g.idx(&t);
                let a = self.at(arg(0), scope, row, Some(ti))?;
                let b = if args.len() > 1 {
                    Some(self.at(arg(1), scope, row, Some(ti))?)
                } else {
                    None
                };
                let g = &mut *self.g;
                let two = g.num(2.0);
                let sum_sq = |g: &mut Graph, x: Id| {
                    let sq = g.pow(x, two);
                    let s = g.reduce(RedOp::Sum, &t, range.clone(), None, sq);
                    g.func(Func::Sqrt, s)
                };
                return Ok(match (name, b) {
                    ("logsumexp", _) => g.reduce(RedOp::LogSumExp, &t, range.clone(), None, a),
                    ("norm", _) => sum_sq(g, a),
                    ("dot", Some(b)) => {
                        let p = g.mul2(a, b);
                        g.reduce(RedOp::Sum, &t, range.clone(), None, p)
                    }
                    ("dist", Some(b)) => {
                        let d = g.sub(a, b);
                        sum_sq(g, d)
                    }
                    (_, Some(b)) => {
                        let p = g.mul2(a, b);
                        let dot = g.reduce(RedOp::Sum, &t, range.clone(), None, p);
                        let na = sum_sq(g, a);
                        let nb = sum_sq(g, b);
                        let den = g.mul2(na, nb);
                        g.div(dot, den)
                    }
                    _ => return Err(unsupported(format!("{name} with one argument"))),
                });
            }
            _ => {}
        }
        let (def, inner) = self.bind(name, args, scope, row)?;
        // Defs called again with the same scalar arguments reuse the body.
        let scalars: Option<Vec<Id>> = def
            .params
            .iter()
            .map(|p| match inner.params.get(&p.name.name) {
                Some(Bound::Scalar(id, _)) => Some(*id),
                _ => None,
            })
            .collect();
        let key = scalars.map(|ids| {
            (
                def as *const Def as usize,
                ids,
                row.map(str::to_string),
                comp,
            )
        });
        if let Some(key) = &key
            && inner.indices.is_empty()
            && let Some(&id) = self.def_cache.get(key)
        {
            return Ok(id);
        }
        let id = self.at(&def.body, &inner, row, comp)?;
        if let Some(key) = key
            && inner.indices.is_empty()
        {
            self.def_cache.insert(key, id);
        }
        Ok(id)
    }

    /// Chooses the def `name` for these arguments and binds its parameters.
    fn bind(
        &mut self,
        name: &str,
        args: &'a [Arg],
        scope: &Rc<Scope<'a>>,
        row: Option<&str>,
    ) -> Res<(&'a Def, Rc<Scope<'a>>)> {
        let span = args.first().map_or(Span::default(), |a| a.value.span);
        let table = if scope.prelude {
            &self.prelude_defs
        } else {
            &self.defs
        };
        let candidates = table.get(name).cloned().ok_or_else(|| Unsupported {
            what: format!("the function `{name}`"),
            span,
        })?;
        // Overloads differ by their first parameter: the argument bound to
        // it, by position or by name, decides.
        let mut def = candidates[0];
        for d in &candidates {
            let first = d.params.first().map(|p| p.name.name.as_str());
            let bound = match args.first() {
                Some(a) if a.name.is_none() => Some(a),
                _ => args
                    .iter()
                    .find(|a| a.name.as_ref().map(|n| n.name.as_str()) == first),
            };
            let first_vector = bound.is_some_and(|a| self.size(&a.value, scope).is_some());
            let annotated = d
                .params
                .first()
                .and_then(|p| p.ty.as_ref())
                .map(|t| is_vector_type(&t.name.name));
            if annotated.is_none_or(|v| v == first_vector) {
                def = d;
                break;
            }
        }
        let mut params = BTreeMap::new();
        let mut positional = args.iter().filter(|a| a.name.is_none());
        for p in &def.params {
            let given = args
                .iter()
                .find(|a| a.name.as_ref().is_some_and(|n| n.name == p.name.name))
                .or_else(|| positional.next());
            let bound = match given {
                None => Bound::Scalar(self.g.num(p.default.map_or(0.0, |d| d.value)), None),
                Some(a) => {
                    let wants_vector = p.ty.as_ref().is_some_and(|t| is_vector_type(&t.name.name));
                    match self.size(&a.value, scope) {
                        Some(size) => Bound::Vector {
                            size,
                            expr: &a.value,
                            scope: scope.clone(),
                            row: row.map(str::to_string),
                        },
                        None if wants_vector => {
                            let value = self.at(&a.value, scope, row, None)?;
                            let size = self.class_size(&a.value).ok_or_else(|| Unsupported {
                                what: "a class argument of unknown size".into(),
                                span: a.value.span,
                            })?;
                            Bound::Class { value, size }
                        }
                        None => Bound::Scalar(
                            self.at(&a.value, scope, row, None)?,
                            Some((&a.value, scope.clone(), row.map(str::to_string))),
                        ),
                    }
                }
            };
            params.insert(p.name.name.clone(), bound);
        }
        Ok((
            def,
            Rc::new(Scope {
                params,
                top: false,
                indices: scope.indices.clone(),
                // Standard losses see only standard losses.
                prelude: scope.prelude
                    || self
                        .prelude_defs
                        .get(name)
                        .is_some_and(|ds| ds.iter().any(|d| std::ptr::eq(*d, def))),
            }),
        ))
    }

    fn class_size(&self, e: &Expr) -> Option<Size> {
        match &e.kind {
            ExprKind::Var(n) => match self.globals.get(n) {
                Some(Global::Var { class, .. }) => class.clone(),
                _ => None,
            },
            ExprKind::At(x, _) => self.class_size(x),
            _ => None,
        }
    }
}

fn is_vector_type(name: &str) -> bool {
    matches!(name, "onehot" | "multihot" | "probs" | "vector")
}

/// Positions of the arguments in parameter order (named ones by name).
fn order_args(names: &[&str], args: &[Arg]) -> Vec<usize> {
    let mut out: Vec<Option<usize>> = vec![None; names.len()];
    let mut next = 0;
    for (k, a) in args.iter().enumerate() {
        let slot = match &a.name {
            Some(n) => names.iter().position(|x| *x == n.name).unwrap_or(next),
            None => {
                next += 1;
                next - 1
            }
        };
        if slot < out.len() {
            out[slot] = Some(k);
        }
    }
    out.into_iter().map(|v| v.unwrap_or(0)).collect()
}

/// Whether `name` is used as a batch index (`x@name`) in `e`.
fn uses_at(e: &Expr, name: &str) -> bool {
    let mut found = false;
    crate::sema::walk(e, &mut |x| {
        if let ExprKind::At(_, j) = &x.kind
            && j.name == name
        {
            found = true;
        }
    });
    found
}
