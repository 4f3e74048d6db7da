//! Python source for a derivation: every IR node becomes one array
//! expression, vectorised over the rows and over every index it depends
//! on, so batch-coupled specs (`x@j`) run as matrix operations rather than
//! Python loops.
//!
//! Each value carries the sorted list of the indices it depends on (the
//! current row `i`, batch indices `j`, feature indices `c`, the gradient's
//! output index `k`); its array has exactly one axis per index, in a global
//! order fixed once per file. Combining values expands each operand to the
//! union of their indices with `None` axes, which NumPy and JAX broadcast;
//! a reduction sums (or maxes, ...) over its index's axis. A sum of a
//! product is written as `einsum`, so `dot(q, k@j)` is one matrix product
//! instead of an n x n x D temporary.

use crate::grad::{Derivation, Factor};
use crate::ir::{Func, Graph, Id, IdxRange, Node, RedOp, SymKind};
use crate::sema::Checked;
use crate::sema::types::{Shape, Size};
use std::collections::{BTreeMap, HashMap};
use std::fmt::Write;

/// The array module the code calls.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Flavor {
    /// `np`: NumPy.
    Numpy,
    /// `jnp`: JAX's NumPy.
    Jax,
    /// `torch`: PyTorch tensors, on whatever device and in whatever float
    /// dtype the preds come in.
    Torch,
}

impl Flavor {
    fn m(self) -> &'static str {
        match self {
            Flavor::Numpy => "np",
            Flavor::Jax => "jnp",
            Flavor::Torch => "torch",
        }
    }
}

/// A value: its Python expression (a name or a literal) and its indices.
#[derive(Clone, Debug)]
pub struct Val {
    /// The Python expression.
    pub code: String,
    /// The indices it depends on, in the file's axis order.
    pub idx: Vec<String>,
}

/// Emits the body of a function computing the objective and every
/// gradient, as assignments to `t<N>` names.
pub struct Emitter<'a> {
    g: &'a Graph,
    checked: &'a Checked,
    flavor: Flavor,
    /// Index name -> its position in the global axis order.
    order: BTreeMap<String, usize>,
    done: HashMap<Id, Val>,
    /// Lengths of indices the graph does not record (a gradient's output index).
    lengths: BTreeMap<String, String>,
    /// The emitted lines (without indentation).
    pub lines: Vec<String>,
    next: usize,
    /// Inputs whose Python name differs from the spec's (a booster's `score`).
    pub rename: BTreeMap<String, String>,
    /// Torch: a tensor whose dtype and device literals take (`z.new_tensor(1.0)`).
    pub like: String,
}

impl<'a> Emitter<'a> {
    /// An emitter for `d`'s graph.
    pub fn new(d: &'a Derivation, checked: &'a Checked, flavor: Flavor) -> Self {
        let mut order = BTreeMap::new();
        order.insert("i".to_string(), 0);
        Emitter {
            g: &d.graph,
            checked,
            flavor,
            order,
            done: HashMap::new(),
            lengths: BTreeMap::new(),
            lines: Vec::new(),
            next: 0,
            rename: BTreeMap::new(),
            like: String::new(),
        }
    }

    fn m(&self) -> &'static str {
        self.flavor.m()
    }

    fn rank(&mut self, name: &str) -> usize {
        let n = self.order.len();
        *self.order.entry(name.to_string()).or_insert(n)
    }

    fn sort(&mut self, mut v: Vec<String>) -> Vec<String> {
        for x in &v {
            self.rank(x);
        }
        v.sort_by_key(|x| self.order[x]);
        v.dedup();
        v
    }

    fn union(&mut self, vals: &[&Val]) -> Vec<String> {
        let all: Vec<String> = vals.iter().flat_map(|v| v.idx.iter().cloned()).collect();
        self.sort(all)
    }

    /// `v` viewed with the axes of `want` (a superset, in global order).
    fn expand(&self, v: &Val, want: &[String]) -> String {
        if v.idx.is_empty() || v.idx.len() == want.len() {
            return v.code.clone();
        }
        let parts: Vec<&str> = want
            .iter()
            .map(|w| if v.idx.contains(w) { ":" } else { "None" })
            .collect();
        format!("{}[{}]", v.code, parts.join(", "))
    }

    fn bind(&mut self, code: String, idx: Vec<String>) -> Val {
        // Literals and plain names need no temporary.
        if code.parse::<f64>().is_ok() || code.chars().all(|c| c.is_alphanumeric() || c == '_') {
            return Val { code, idx };
        }
        let name = format!("t{}", self.next);
        self.next += 1;
        self.lines.push(format!("{name} = {code}"));
        Val { code: name, idx }
    }

    /// The length of an index's range, as Python.
    fn len_of(&self, idx: &str) -> String {
        if let Some(l) = self.lengths.get(idx) {
            return l.clone();
        }
        match self.g.range(idx) {
            Some(IdxRange::Batch) | None if idx == "i" => "n".into(),
            Some(IdxRange::Batch) => "n".into(),
            Some(IdxRange::Feature(Size::Lit(k))) => k.to_string(),
            Some(IdxRange::Feature(Size::Name(s))) => super::py_name(s),
            None => "n".into(),
        }
    }

    fn torch(&self) -> bool {
        self.flavor == Flavor::Torch
    }

    /// The keyword naming an axis: NumPy's `axis`, torch's `dim`.
    fn axis(&self) -> &'static str {
        if self.torch() { "dim" } else { "axis" }
    }

    /// A literal as a tensor where torch needs one (both operands of
    /// `maximum`, both branches of `where`); other code is left alone.
    fn tensor(&self, code: &str) -> String {
        let literal = code.parse::<f64>().is_ok() || code.trim_start_matches('-') == "torch.inf";
        if self.torch() && literal {
            format!("{}.new_tensor({code})", self.like)
        } else {
            code.to_string()
        }
    }

    /// `log(1 + exp(x))` without overflow.
    fn softplus(&self, x: &str) -> String {
        if self.torch() {
            format!("_softplus({x})")
        } else {
            format!("{}.logaddexp(0.0, {x})", self.m())
        }
    }

    /// `where(c, a, b)`; torch needs one branch to be a tensor.
    fn where_(&self, c: &str, a: &str, b: &str) -> String {
        let a = if b.parse::<f64>().is_ok() {
            self.tensor(a)
        } else {
            a.to_string()
        };
        format!("{}.where({c}, {a}, {b})", self.m())
    }

    /// `broadcast_to(x, shape)`, with a literal made a tensor first for torch.
    fn broadcast(&self, x: &str, shape: &[String]) -> String {
        format!(
            "{}.broadcast_to({}, ({},))",
            self.m(),
            self.tensor(x),
            shape.join(", ")
        )
    }

    /// A data input or pred as the Python argument holding it.
    fn input_name(&self, name: &str) -> String {
        self.rename
            .get(name)
            .cloned()
            .unwrap_or_else(|| super::py_name(name))
    }

    /// An index as a value: `arange` along its own axis.
    fn index_val(&mut self, name: &str) -> Val {
        let len = self.len_of(name);
        let m = self.m();
        let device = if self.torch() { ", device=device" } else { "" };
        self.bind(format!("{m}.arange({len}{device})"), vec![name.to_string()])
    }

    /// A float as a Python literal.
    pub fn num_text(x: f64) -> String {
        if x.is_infinite() {
            return if x > 0.0 { "inf".into() } else { "-inf".into() };
        }
        let s = format!("{x:?}");
        if s.contains('.') || s.contains('e') || s.contains("inf") || s.contains("NaN") {
            s
        } else {
            format!("{s}.0")
        }
    }

    /// Emits `id` (and everything it needs) and returns its value.
    pub fn emit(&mut self, id: Id) -> Val {
        if let Some(v) = self.done.get(&id) {
            return v.clone();
        }
        let m = self.m();
        let g = self.g;
        let v = match g.node(id).clone() {
            Node::Num(x) => Val {
                code: Self::num_text(x.0),
                idx: vec![],
            },
            Node::Sym(kind, name) => match kind {
                SymKind::Data | SymKind::Pred => Val {
                    code: self.input_name(&name),
                    idx: vec!["i".into()],
                },
                // R0, R1, ... are the file's own names, not the spec's.
                SymKind::Reduced => Val {
                    code: name.clone(),
                    idx: vec![],
                },
                SymKind::Param => Val {
                    code: super::py_name(&name),
                    idx: vec![],
                },
                // A size is a Python int (it also sizes arrays); in
                // arithmetic torch needs it as a tensor (`sqrt(D)`).
                SymKind::Size if self.torch() => {
                    let code = format!("{}.new_tensor({})", self.like, super::py_name(&name));
                    self.bind(code, vec![])
                }
                SymKind::Size => Val {
                    code: super::py_name(&name),
                    idx: vec![],
                },
            },
            Node::Idx(n) => self.index_val(&n),
            Node::Row => self.index_val("i"),
            Node::Elem {
                name, row, comp, ..
            } => self.elem(&name, row.as_deref(), comp),
            Node::Add(xs) => {
                let vs: Vec<Val> = xs.iter().map(|x| self.emit(*x)).collect();
                let refs: Vec<&Val> = vs.iter().collect();
                let u = self.union(&refs);
                let parts: Vec<String> = vs.iter().map(|v| self.expand(v, &u)).collect();
                let mut code = parts[0].clone();
                for p in &parts[1..] {
                    match p.strip_prefix('-') {
                        Some(rest) => {
                            code.push_str(" - ");
                            code.push_str(rest);
                        }
                        None => {
                            code.push_str(" + ");
                            code.push_str(p);
                        }
                    }
                }
                self.bind(code, u)
            }
            Node::Mul(xs) => {
                let vs: Vec<Val> = xs.iter().map(|x| self.emit(*x)).collect();
                let refs: Vec<&Val> = vs.iter().collect();
                let u = self.union(&refs);
                let mut parts: Vec<String> =
                    vs.iter().map(|v| paren(&self.expand(v, &u))).collect();
                let negate = g.as_num(xs[0]) == Some(-1.0) && parts.len() > 1;
                if negate {
                    parts.remove(0);
                }
                let code = if negate {
                    format!("-{}", paren(&parts.join(" * ")))
                } else {
                    parts.join(" * ")
                };
                self.bind(code, u)
            }
            Node::Pow(b, e) => {
                let (vb, ve) = (self.emit(b), self.emit(e));
                let u = self.union(&[&vb, &ve]);
                let code = match g.as_num(e) {
                    Some(2.0) => {
                        let x = paren(&self.expand(&vb, &u));
                        format!("{x} * {x}")
                    }
                    Some(0.5) => format!("{m}.sqrt({})", self.expand(&vb, &u)),
                    Some(-1.0) => format!("1.0 / {}", paren(&self.expand(&vb, &u))),
                    _ => format!(
                        "{} ** {}",
                        paren(&self.expand(&vb, &u)),
                        paren(&self.expand(&ve, &u))
                    ),
                };
                self.bind(code, u)
            }
            Node::Func(f, a) => self.func(f, a),
            Node::Max(a, b) | Node::Min(a, b) => {
                let (va, vb) = (self.emit(a), self.emit(b));
                let u = self.union(&[&va, &vb]);
                let f = if matches!(g.node(id), Node::Max(..)) {
                    "maximum"
                } else {
                    "minimum"
                };
                let code = format!(
                    "{m}.{f}({}, {})",
                    self.tensor(&self.expand(&va, &u)),
                    self.tensor(&self.expand(&vb, &u))
                );
                self.bind(code, u)
            }
            Node::Select(c, a, b) => {
                let (vc, va, vb) = (self.emit(c), self.emit(a), self.emit(b));
                let u = self.union(&[&vc, &va, &vb]);
                let code = self.where_(
                    &self.expand(&vc, &u),
                    &self.expand(&va, &u),
                    &self.expand(&vb, &u),
                );
                self.bind(code, u)
            }
            Node::Cmp(op, a, b) => {
                let (va, vb) = (self.emit(a), self.emit(b));
                let u = self.union(&[&va, &vb]);
                let o = op.symbol();
                let code = format!(
                    "{} {o} {}",
                    paren(&self.expand(&va, &u)),
                    paren(&self.expand(&vb, &u))
                );
                self.bind(code, u)
            }
            Node::Delta(a, b) => {
                let (va, vb) = (self.emit(a), self.emit(b));
                let u = self.union(&[&va, &vb]);
                let eq = format!(
                    "{} == {}",
                    paren(&self.expand(&va, &u)),
                    paren(&self.expand(&vb, &u))
                );
                let code = self.where_(&eq, "1.0", "0.0");
                self.bind(code, u)
            }
            Node::And(a, b) | Node::Or(a, b) => {
                let (va, vb) = (self.emit(a), self.emit(b));
                let u = self.union(&[&va, &vb]);
                let f = if matches!(g.node(id), Node::And(..)) {
                    "logical_and"
                } else {
                    "logical_or"
                };
                let code = format!(
                    "{m}.{f}({}, {})",
                    self.expand(&va, &u),
                    self.expand(&vb, &u)
                );
                self.bind(code, u)
            }
            Node::Not(a) => {
                let va = self.emit(a);
                self.bind(format!("{m}.logical_not({})", va.code), va.idx)
            }
            Node::StopGrad(a) => self.emit(a),
            Node::Reduce {
                op,
                idx,
                filter,
                body,
                ..
            } => self.reduce(op, &idx, filter, body),
        };
        self.done.insert(id, v.clone());
        v
    }

    fn func(&mut self, f: Func, a: Id) -> Val {
        let m = self.m();
        let g = self.g;
        // Stable forms, as lossc evaluates them: log(sigmoid(z)) and
        // log(1 - sigmoid(z)) through softplus.
        if f == Func::Log {
            if let Node::Func(Func::Sigmoid, z) = *g.node(a) {
                let vz = self.emit(z);
                let sp = self.softplus(&format!("-{}", paren(&vz.code)));
                return self.bind(format!("-{sp}"), vz.idx);
            }
            if let Node::Add(xs) = g.node(a)
                && xs.len() == 2
                && xs.iter().any(|&t| g.as_num(t) == Some(1.0))
                && let Some(z) = xs.iter().find_map(|&t| match g.node(t) {
                    Node::Mul(fs) if fs.len() == 2 && g.as_num(fs[0]) == Some(-1.0) => {
                        match g.node(fs[1]) {
                            Node::Func(Func::Sigmoid, z) => Some(*z),
                            _ => None,
                        }
                    }
                    _ => None,
                })
            {
                let vz = self.emit(z);
                let sp = self.softplus(&vz.code);
                return self.bind(format!("-{sp}"), vz.idx);
            }
        }
        let va = self.emit(a);
        let x = va.code.clone();
        let code = match f {
            Func::Exp => format!("{m}.exp({x})"),
            Func::Log => format!("{m}.log({x})"),
            Func::Log1p => format!("{m}.log1p({x})"),
            Func::Expm1 => format!("{m}.expm1({x})"),
            Func::Sqrt => format!("{m}.sqrt({x})"),
            Func::Sigmoid if self.torch() => format!("torch.sigmoid({x})"),
            Func::Sigmoid => format!("_sigmoid({x})"),
            Func::Softplus => self.softplus(&x),
            Func::Tanh => format!("{m}.tanh({x})"),
            Func::Cosh => format!("{m}.cosh({x})"),
            Func::Sinh => format!("{m}.sinh({x})"),
            Func::Abs => format!("{m}.abs({x})"),
            Func::Sign => format!("{m}.sign({x})"),
            Func::Relu if self.torch() => format!("torch.clamp({x}, min=0.0)"),
            Func::Relu => format!("{m}.maximum({x}, 0.0)"),
        };
        self.bind(code, va.idx)
    }

    /// `name` at row `row` (the current one when None), component `comp`.
    fn elem(&mut self, name: &str, row: Option<&str>, comp: Option<Id>) -> Val {
        let name = &self.input_name(name);
        let r = row.unwrap_or("i").to_string();
        self.rank(&r);
        let Some(comp) = comp else {
            // A scalar in another row: the same array along that row's axis.
            return Val {
                code: name.to_string(),
                idx: vec![r],
            };
        };
        if let Node::Idx(c) = self.g.node(comp).clone() {
            self.rank(&c);
            let code = if self.order[&r] < self.order[&c] {
                name.to_string()
            } else {
                format!("{name}.T")
            };
            let idx = self.sort(vec![r, c]);
            return self.bind(code, idx);
        }
        // A computed component (a class label, a number): gather with
        // broadcast integer indices.
        let vc = self.emit(comp);
        let rv = self.index_val(&r);
        let u = self.union(&[&rv, &vc]);
        let rows = self.expand(&rv, &u);
        let comps = self.expand(&vc, &u);
        let comps = if vc.idx.is_empty() {
            format!("int({comps})")
        } else {
            let cast = if self.torch() {
                "long()"
            } else {
                "astype(int)"
            };
            format!("{}.{cast}", paren(&comps))
        };
        self.bind(format!("{name}[{rows}, {comps}]"), u)
    }

    fn reduce(&mut self, op: RedOp, idx: &str, filter: Option<Id>, body: Id) -> Val {
        let m = self.m();
        self.rank(idx);
        // Sum of a product with no filter: one einsum, no big temporary
        // (and the product itself is never formed).
        if op == RedOp::Sum
            && filter.is_none()
            && let Node::Mul(fs) = self.g.node(body).clone()
        {
            let vals: Vec<Val> = fs.iter().map(|f| self.emit(*f)).collect();
            if vals.iter().any(|v| v.idx.iter().any(|x| x == idx)) {
                let refs: Vec<&Val> = vals.iter().collect();
                let u = self.union(&refs);
                let out: Vec<String> = u.iter().filter(|x| *x != idx).cloned().collect();
                let letter = |s: &String| {
                    (b'a' + u.iter().position(|x| x == s).expect("in the union") as u8) as char
                };
                let (mut scalars, mut arrays, mut specs) = (Vec::new(), Vec::new(), Vec::new());
                for v in &vals {
                    if v.idx.is_empty() {
                        scalars.push(paren(&v.code));
                    } else {
                        specs.push(v.idx.iter().map(letter).collect::<String>());
                        arrays.push(v.code.clone());
                    }
                }
                let rhs: String = out.iter().map(letter).collect();
                let mut code = format!(
                    "{m}.einsum(\"{}->{rhs}\", {})",
                    specs.join(","),
                    arrays.join(", ")
                );
                if !scalars.is_empty() {
                    code = format!("{} * {code}", scalars.join(" * "));
                }
                return self.bind(code, out);
            }
        }
        let vb = self.emit(body);
        let vf = filter.map(|f| self.emit(f));
        let mut parts: Vec<&Val> = vec![&vb];
        if let Some(f) = &vf {
            parts.push(f);
        }
        let mut u = self.union(&parts);
        if !u.iter().any(|x| x == idx) {
            u.push(idx.to_string());
            u = self.sort(u);
        }
        let out: Vec<String> = u.iter().filter(|x| *x != idx).cloned().collect();
        let pos = u.iter().position(|x| x == idx).expect("added above");
        let body_e = self.expand(&vb, &u);
        // The body broadcast to every index, so a sum over an index it does
        // not depend on still counts each value.
        let full_shape: Vec<String> = u.iter().map(|x| self.len_of(x)).collect();
        let body_full = if vb.idx.len() == u.len() {
            body_e
        } else {
            self.broadcast(&body_e, &full_shape)
        };
        let mask = vf.as_ref().map(|f| {
            let e = self.expand(f, &u);
            self.broadcast(&e, &full_shape)
        });
        let ax = self.axis();
        let code = match op {
            RedOp::Sum => match &mask {
                Some(mk) => format!("{m}.sum({m}.where({mk}, {body_full}, 0.0), {ax}={pos})"),
                None => format!("{m}.sum({body_full}, {ax}={pos})"),
            },
            RedOp::Mean => match &mask {
                Some(mk) => format!(
                    "{m}.sum({m}.where({mk}, {body_full}, 0.0), {ax}={pos}) / {m}.sum({mk}, {ax}={pos})"
                ),
                None => format!("{m}.mean({body_full}, {ax}={pos})"),
            },
            RedOp::Max | RedOp::Min => {
                let max = op == RedOp::Max;
                let f = match (max, self.torch()) {
                    (true, false) => "max",
                    (false, false) => "min",
                    (true, true) => "amax",
                    (false, true) => "amin",
                };
                let fill = if max {
                    format!("-{m}.inf")
                } else {
                    format!("{m}.inf")
                };
                match &mask {
                    Some(mk) => {
                        format!("{m}.{f}({m}.where({mk}, {body_full}, {fill}), {ax}={pos})")
                    }
                    None => format!("{m}.{f}({body_full}, {ax}={pos})"),
                }
            }
            RedOp::LogSumExp => {
                let masked = match &mask {
                    Some(mk) => format!("{m}.where({mk}, {body_full}, -{m}.inf)"),
                    None => body_full,
                };
                let x = self.bind(masked, u.clone());
                if self.torch() {
                    format!("torch.logsumexp({}, dim={pos})", x.code)
                } else {
                    format!("_logsumexp({}, axis={pos})", x.code)
                }
            }
        };
        self.bind(code, out)
    }

    /// Python for the sizes the spec names, read from the arrays' shapes.
    pub fn sizes(&self) -> Vec<String> {
        let mut out: BTreeMap<String, String> = BTreeMap::new();
        for v in self.checked.data.iter().chain(&self.checked.preds) {
            if let Shape::Vector(Size::Name(s)) = &v.shape {
                let s = super::py_name(s);
                out.entry(s.clone())
                    .or_insert_with(|| format!("{s} = {}.shape[1]", self.input_name(&v.name)));
            }
        }
        out.into_values().collect()
    }

    /// The gradient with respect to a pred, full shape, times the factor.
    pub fn gradient(&mut self, d: &Derivation, k: usize) -> String {
        let p = &d.preds[k];
        let m = self.m();
        let want: Vec<String> = match &p.component {
            Some(c) => {
                let len = match &self.checked.preds[k].shape {
                    Shape::Vector(Size::Lit(l)) => l.to_string(),
                    Shape::Vector(Size::Name(s)) => super::py_name(s),
                    Shape::Scalar => "1".into(),
                };
                self.lengths.insert(c.clone(), len);
                self.rank(c);
                vec!["i".into(), c.clone()]
            }
            None => vec!["i".into()],
        };
        let want = self.sort(want);
        let v = self.emit(p.per_sample);
        let e = self.expand(&v, &want);
        let shape: Vec<String> = want.iter().map(|x| self.len_of(x)).collect();
        let full = if v.idx.len() == want.len() {
            e
        } else {
            self.broadcast(&e, &shape)
        };
        let full = if want.len() == 2 && want[0] != "i" {
            format!("({full}).T")
        } else {
            full
        };
        match d.factor {
            Factor::OneOverN => format!("{} / n", paren(&full)),
            Factor::One if self.torch() => {
                format!("torch.as_tensor({full}, dtype=dtype, device=device)")
            }
            Factor::One => format!("{m}.asarray({full}, dtype=float)"),
        }
    }

    /// A per-row value (the Hessian's diagonal of a scalar pred), full shape.
    pub fn per_row(&mut self, id: Id) -> String {
        let v = self.emit(id);
        let e = self.expand(&v, &["i".to_string()]);
        if v.idx.is_empty() {
            self.broadcast(&e, &["n".to_string()])
        } else {
            e
        }
    }

    /// Writes the lines, indented.
    pub fn write(&self, out: &mut String, indent: &str) {
        for l in &self.lines {
            let _ = writeln!(out, "{indent}{l}");
        }
    }
}

fn paren(s: &str) -> String {
    let simple = s
        .chars()
        .all(|c| c.is_alphanumeric() || "_.[]:, ".contains(c))
        && !s.contains(' ')
        || s.parse::<f64>().is_ok() && !s.starts_with('-');
    if simple {
        s.to_string()
    } else {
        format!("({s})")
    }
}
