//! The planner: from the derived forms to passes of loop-nest programs.
//!
//! 1. **Conversion.** The value and gradient expressions are copied out of
//!    the IR into a small hash-consed graph whose bound indices are de Bruijn
//!    indices, so that a closed subexpression (`logsumexp(z)`, a `dot`, a
//!    `dist`) is one node wherever it occurs: the loss and every gradient
//!    share it. Params become constants; numerically stable forms replace
//!    `log(sigmoid(z))` and `log(1 - sigmoid(z))`.
//! 2. **Tabulation.** In a batch-coupled spec a per-row quantity may be
//!    needed at another row (`logsumexp[j2](dot(k@j2, q@j))` inside a
//!    `sum[j]` is row `j`'s `logsumexp`). Recomputing it there would cost
//!    O(n) per use and O(n³) in all; instead it is computed once per row in
//!    an earlier pass into an n-sized table and read back, keeping the spec
//!    O(n²) in time and O(n) in memory.
//! 3. **Emission.** Each pass is a tree of scopes: the root runs over a chunk
//!    of rows, and every reduction opens a loop scope over tiles of its index
//!    (a feature axis or a tile of other rows). An instruction is placed in
//!    the outermost scope where its indices are bound, which hoists
//!    loop-invariant work. Registers hold one value per (tile position, row
//!    of the chunk), rows innermost, so every instruction is a vector loop.

use crate::grad::Derivation;
use crate::hash::HashMap;
use crate::ir::{Cmp, F64, Func, Graph, Id, IdxRange, Node, RedOp, SymKind};
use crate::sema::types::{Dom, Shape, Size};
use std::collections::{BTreeMap, BTreeSet};

/// A node of the planner's graph.
pub(crate) type P = u32;

/// Where a row-indexed value is read.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub(crate) enum RowRef {
    /// The current row.
    Cur,
    /// The row bound by the batch index with this de Bruijn index.
    Var(u16),
}

/// What a reduction ranges over.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub(crate) enum Range {
    /// The components `0..size` (a size slot).
    Feature(u16),
    /// The rows of the batch.
    Batch,
}

/// Unary operations.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub(crate) enum UFn {
    Neg,
    Recip,
    Not,
    F(Func),
}

/// Binary operations.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub(crate) enum BFn {
    Add,
    Sub,
    Mul,
    Div,
    Pow,
    Max,
    Min,
    Cmp(Cmp),
    And,
    Or,
}

/// A node: an expression with bound indices as de Bruijn indices.
#[derive(Clone, PartialEq, Eq, Hash, Debug)]
pub(crate) enum PNode {
    Num(F64),
    /// A per-evaluation scalar: a size's length or a sample reduction.
    Uniform(u16),
    /// A data or pred: input slot, row, component (an index-valued node).
    Input {
        slot: u16,
        row: RowRef,
        comp: Option<P>,
    },
    /// A tabulated per-row quantity, read at a row.
    Table {
        table: u16,
        row: RowRef,
    },
    /// The value of a bound index (a component number or a row number).
    Var(u16),
    /// The current row's number.
    CurRow,
    Un(UFn, P),
    Bin(BFn, P, P),
    Sel(P, P, P),
    Powi(P, i32),
    Red {
        op: RedOp,
        range: Range,
        filter: Option<P>,
        body: P,
    },
}

/// Facts about a node, computed when it is interned.
#[derive(Clone, Debug, Default)]
pub(crate) struct Info {
    /// Free de Bruijn indices, sorted.
    pub free: Vec<u16>,
    /// Whether the value depends on the current row.
    pub rowdep: bool,
    /// Whether a reduction occurs inside (worth tabulating).
    pub has_red: bool,
}

/// The hash-consed graph.
#[derive(Default, Debug)]
pub(crate) struct PGraph {
    pub nodes: Vec<PNode>,
    pub info: Vec<Info>,
    map: HashMap<PNode, P>,
}

impl PGraph {
    pub(crate) fn intern(&mut self, n: PNode) -> P {
        // Commutative operands in id order, so `dot(q, k@j)` and
        // `dot(k@j, q)` are one node.
        let n = match n {
            PNode::Bin(f, a, b) if a > b && commutes(f) => PNode::Bin(f, b, a),
            other => other,
        };
        if let Some(&p) = self.map.get(&n) {
            return p;
        }
        let info = self.compute_info(&n);
        let p = self.nodes.len() as P;
        self.nodes.push(n.clone());
        self.info.push(info);
        self.map.insert(n, p);
        p
    }

    fn compute_info(&self, n: &PNode) -> Info {
        let mut out = Info::default();
        let take = |p: P, out: &mut Info, shift: u16| {
            let i = &self.info[p as usize];
            out.rowdep |= i.rowdep;
            out.has_red |= i.has_red;
            out.free
                .extend(i.free.iter().filter(|v| **v >= shift).map(|v| v - shift));
        };
        let row = |r: &RowRef, out: &mut Info| match r {
            RowRef::Cur => out.rowdep = true,
            RowRef::Var(v) => out.free.push(*v),
        };
        match n {
            PNode::Num(_) | PNode::Uniform(_) => {}
            PNode::Input { row: r, comp, .. } => {
                row(r, &mut out);
                if let Some(c) = comp {
                    take(*c, &mut out, 0);
                }
            }
            PNode::Table { row: r, .. } => row(r, &mut out),
            PNode::Var(v) => out.free.push(*v),
            PNode::CurRow => out.rowdep = true,
            PNode::Un(_, a) | PNode::Powi(a, _) => take(*a, &mut out, 0),
            PNode::Bin(_, a, b) => {
                take(*a, &mut out, 0);
                take(*b, &mut out, 0);
            }
            PNode::Sel(c, a, b) => {
                for x in [c, a, b] {
                    take(*x, &mut out, 0);
                }
            }
            PNode::Red { filter, body, .. } => {
                out.has_red = true;
                take(*body, &mut out, 1);
                if let Some(f) = filter {
                    take(*f, &mut out, 1);
                }
            }
        }
        out.free.sort_unstable();
        out.free.dedup();
        out
    }

    pub(crate) fn num(&mut self, v: f64) -> P {
        self.intern(PNode::Num(F64(v)))
    }

    pub(crate) fn as_num(&self, p: P) -> Option<f64> {
        match self.nodes[p as usize] {
            PNode::Num(v) => Some(v.0),
            _ => None,
        }
    }

    /// `a op b`, folding constants and the identities the IR leaves in
    /// sums and products (`x + -1·y` becomes `x - y`).
    pub(crate) fn bin(&mut self, f: BFn, a: P, b: P) -> P {
        if let (Some(x), Some(y)) = (self.as_num(a), self.as_num(b)) {
            let v = match f {
                BFn::Add => Some(x + y),
                BFn::Sub => Some(x - y),
                BFn::Mul => Some(x * y),
                BFn::Div => Some(x / y),
                _ => None,
            };
            if let Some(v) = v {
                return self.num(v);
            }
        }
        if let Some(p) = self.fold_affine(f, a, b) {
            return p;
        }
        match f {
            BFn::Mul if self.as_num(a) == Some(1.0) => return b,
            BFn::Mul if self.as_num(a) == Some(-1.0) => return self.intern(PNode::Un(UFn::Neg, b)),
            BFn::Add if self.as_num(a) == Some(0.0) => return b,
            BFn::Add => {
                if let PNode::Un(UFn::Neg, y) = self.nodes[b as usize] {
                    return self.intern(PNode::Bin(BFn::Sub, a, y));
                }
            }
            _ => {}
        }
        self.intern(PNode::Bin(f, a, b))
    }

    pub(crate) fn un(&mut self, f: UFn, a: P) -> P {
        if let Some(x) = self.as_num(a) {
            let v = match f {
                UFn::Neg => -x,
                UFn::Recip => 1.0 / x,
                UFn::Not => {
                    if x == 0.0 {
                        1.0
                    } else {
                        0.0
                    }
                }
                UFn::F(func) => func.eval(x),
            };
            return self.num(v);
        }
        if let (UFn::Neg, PNode::Un(UFn::Neg, y)) = (f, &self.nodes[a as usize]) {
            return *y;
        }
        if f == UFn::Neg {
            let (k, x, c) = self.affine_parts(a);
            if x != a && f32_constant(k) && f32_constant(c) {
                // Negating both constants is exact (but for the sign of a
                // zero result, see `fold_affine`).
                return self.affine(-k, x, -c);
            }
        }
        self.intern(PNode::Un(f, a))
    }

    /// `p` as `k·x + c` with constants `k` and `c`, reading one level of
    /// the shapes `affine` builds; `(1, p, 0)` for anything else.
    fn affine_parts(&self, p: P) -> (f64, P, f64) {
        let scaled = |q: P| -> (f64, P) {
            match self.nodes[q as usize] {
                PNode::Bin(BFn::Mul, a, b) => match (self.as_num(a), self.as_num(b)) {
                    (Some(k), None) => (k, b),
                    (None, Some(k)) => (k, a),
                    _ => (1.0, q),
                },
                PNode::Un(UFn::Neg, x) => (-1.0, x),
                _ => (1.0, q),
            }
        };
        match self.nodes[p as usize] {
            PNode::Bin(BFn::Add, a, b) => match (self.as_num(a), self.as_num(b)) {
                (Some(c), None) => {
                    let (k, x) = scaled(b);
                    (k, x, c)
                }
                (None, Some(c)) => {
                    let (k, x) = scaled(a);
                    (k, x, c)
                }
                _ => (1.0, p, 0.0),
            },
            PNode::Bin(BFn::Sub, a, b) => match (self.as_num(a), self.as_num(b)) {
                (Some(c), None) => {
                    let (k, x) = scaled(b);
                    (-k, x, c)
                }
                (None, Some(c)) => {
                    let (k, x) = scaled(a);
                    (k, x, -c)
                }
                _ => (1.0, p, 0.0),
            },
            _ => {
                let (k, x) = scaled(p);
                (k, x, 0.0)
            }
        }
    }

    /// The one node for `k·x + c`: `c + k·x`, `c - x`, `c + x`, `k·x`,
    /// `-x` or `x`, so that the loss's `-(20·(1 + 0.1·s))` and its
    /// gradient's `-20 - 2·s` are the same node, evaluated once.
    fn affine(&mut self, k: f64, x: P, c: f64) -> P {
        let term = if k == 1.0 {
            x
        } else if k == -1.0 && c != 0.0 {
            let c = self.num(c);
            return self.intern(PNode::Bin(BFn::Sub, c, x));
        } else if k == -1.0 {
            self.intern(PNode::Un(UFn::Neg, x))
        } else {
            let k = self.num(k);
            self.intern(PNode::Bin(BFn::Mul, k, x))
        };
        if c == 0.0 {
            return term;
        }
        let c = self.num(c);
        self.intern(PNode::Bin(BFn::Add, c, term))
    }

    /// `a op b` in the shape `affine` builds, when one operand is a
    /// constant and the other is already affine in some `x`: constant
    /// offsets and scales collect into one of each. A scale is folded into
    /// an offset only when `k` is not a power of two, so that `k·x` rounds
    /// for most `x` (`20·(1 + 0.1·s)` becomes `20 + 2·s`): the folded form
    /// is then within a few roundings of the written one. `20·(1 - p)` and
    /// `0.75·(2 - 2·p)` stay as they are: `1 - p` is exact for `p` near 1,
    /// and `20 - 20·p` would lose the digits of the difference (the inner
    /// term may also be shared, as `1 - sigmoid(z)` is in focal loss).
    ///
    /// What is given up: where `k·x` happens to be exact (integer data)
    /// and `c + k·x` is exactly 0, the written form gives 0 and the folded
    /// one may give a value of the order of `1e-16·|c|`, of either sign;
    /// and negating `c + k·x` as `(-c) + (-k)·x` gives +0 where the
    /// written form gives -0. Both differ from the written form by less
    /// than its own rounding error for any inexact `x`.
    fn fold_affine(&mut self, f: BFn, a: P, b: P) -> Option<P> {
        let (n, e, num_first) = match (self.as_num(a), self.as_num(b)) {
            (Some(n), None) => (n, b, true),
            (None, Some(n)) => (n, a, false),
            _ => return None,
        };
        if !n.is_finite() {
            return None;
        }
        let (k, x, c) = self.affine_parts(e);
        if x == e {
            return None;
        }
        let (k, c) = match f {
            BFn::Add => (k, c + n),
            BFn::Sub if num_first => (-k, n - c),
            BFn::Sub => (k, c - n),
            BFn::Mul => {
                // `k·x` with `k` a power of two is exact: `1 - p`, `2 - 2·p`.
                let exact = k.abs().is_normal() && k.to_bits() << 12 == 0;
                if n == 0.0 || (c != 0.0 && exact) {
                    return None;
                }
                (k * n, c * n)
            }
            _ => return None,
        };
        if k == 0.0 || !f32_constant(k) || !f32_constant(c) {
            return None;
        }
        Some(self.affine(k, x, c))
    }

    /// `p` with the batch index `b` (a free de Bruijn index) made the
    /// current row: the per-row quantity that `p` reads at row `b`.
    fn at_current_row(&mut self, p: P, b: u16, memo: &mut HashMap<(P, u16), P>) -> P {
        self.rows_mapped(p, b, false, memo)
    }

    /// `p` with the current row and the row bound by index `b` exchanged:
    /// a term of row `i`'s gather over rows `j`, seen from row `j`.
    fn swap_rows(&mut self, p: P, b: u16, memo: &mut HashMap<(P, u16), P>) -> P {
        self.rows_mapped(p, b, true, memo)
    }

    /// `p` with row `b` read at the current row instead, and (`swap`) the
    /// current row read at row `b`.
    fn rows_mapped(&mut self, p: P, b: u16, swap: bool, memo: &mut HashMap<(P, u16), P>) -> P {
        let info = &self.info[p as usize];
        // (nothing to exchange: row `b` not read, and the current row not
        // read or not moved)
        let moved = info.free.contains(&b) || (swap && info.rowdep);
        if !moved {
            return p;
        }
        if let Some(&r) = memo.get(&(p, b)) {
            return r;
        }
        let row = |r: RowRef| match r {
            RowRef::Var(v) if v == b => RowRef::Cur,
            RowRef::Cur if swap => RowRef::Var(b),
            other => other,
        };
        let mut map = |g: &mut PGraph, x: P, b: u16| g.rows_mapped(x, b, swap, memo);
        let n = match self.nodes[p as usize].clone() {
            PNode::Input { slot, row: r, comp } => PNode::Input {
                slot,
                row: row(r),
                comp: comp.map(|c| map(self, c, b)),
            },
            PNode::Table { table, row: r } => PNode::Table { table, row: row(r) },
            PNode::Var(v) if v == b => PNode::CurRow,
            PNode::CurRow if swap => PNode::Var(b),
            PNode::Un(f, a) => PNode::Un(f, map(self, a, b)),
            PNode::Powi(a, k) => PNode::Powi(map(self, a, b), k),
            PNode::Bin(f, x, y) => PNode::Bin(f, map(self, x, b), map(self, y, b)),
            PNode::Sel(c, x, y) => PNode::Sel(map(self, c, b), map(self, x, b), map(self, y, b)),
            PNode::Red {
                op,
                range,
                filter,
                body,
            } => PNode::Red {
                op,
                range,
                filter: filter.map(|f| map(self, f, b + 1)),
                body: map(self, body, b + 1),
            },
            other => other,
        };
        let r = self.intern(n);
        memo.insert((p, b), r);
        r
    }
}

impl PGraph {
    /// Whether `p` reads, at the row bound by index `b`, a per-row quantity
    /// (one the tabulator would move to a table) with a reduction over the
    /// batch inside: one that costs a pass over all pairs of rows.
    fn reads_reduced_at(&self, p: P, b: u16, memo: &mut HashMap<(P, u16), bool>) -> bool {
        let info = &self.info[p as usize];
        if !info.has_red || !info.free.contains(&b) {
            return false;
        }
        if !info.rowdep && info.free == [b] {
            return self.has_batch_reduction(p);
        }
        if let Some(&r) = memo.get(&(p, b)) {
            return r;
        }
        let r = match self.nodes[p as usize].clone() {
            PNode::Input { comp: Some(c), .. } => self.reads_reduced_at(c, b, memo),
            PNode::Un(_, a) | PNode::Powi(a, _) => self.reads_reduced_at(a, b, memo),
            PNode::Bin(_, x, y) => {
                self.reads_reduced_at(x, b, memo) || self.reads_reduced_at(y, b, memo)
            }
            PNode::Sel(c, x, y) => [c, x, y]
                .into_iter()
                .any(|q| self.reads_reduced_at(q, b, memo)),
            PNode::Red { filter, body, .. } => {
                self.reads_reduced_at(body, b + 1, memo)
                    || filter.is_some_and(|f| self.reads_reduced_at(f, b + 1, memo))
            }
            _ => false,
        };
        memo.insert((p, b), r);
        r
    }

    /// Whether a reduction over the batch occurs in `p`.
    fn has_batch_reduction(&self, p: P) -> bool {
        self.any_node(p, |n| {
            matches!(
                n,
                PNode::Red {
                    range: Range::Batch,
                    ..
                }
            )
        })
    }

    /// Whether `found` holds for `p` or a node inside it.
    fn any_node(&self, p: P, mut found: impl FnMut(&PNode) -> bool) -> bool {
        let mut stack = vec![p];
        let mut seen = vec![false; self.nodes.len()];
        while let Some(x) = stack.pop() {
            if std::mem::replace(&mut seen[x as usize], true) {
                continue;
            }
            let node = &self.nodes[x as usize];
            if found(node) {
                return true;
            }
            match node {
                PNode::Input { comp: Some(c), .. } => stack.push(*c),
                PNode::Un(_, a) | PNode::Powi(a, _) => stack.push(*a),
                PNode::Bin(_, a, b) => stack.extend([*a, *b]),
                PNode::Sel(c, a, b) => stack.extend([*c, *a, *b]),
                PNode::Red { filter, body, .. } => {
                    stack.push(*body);
                    stack.extend(filter.iter().copied());
                }
                _ => {}
            }
        }
        false
    }
}

/// A gradient's gather over the batch computed by scattering instead.
///
/// Autodiff gives the gradient at row `m` of a pred that row `i`'s loss
/// reads at row `j` as a gather, `Σ_i t(i, m)`, written from row `m` as
/// `Σ_j t'(m, j)` with the rows exchanged. When `t'` reads a per-row
/// reduction at the other row `j` (InfoNCE's `dK`: row `j`'s softmax needs
/// row `j`'s logsumexp), the gather needs a table pass before it and
/// computes every pair's term again, transposed. Scattered, the term is
/// `t(i, m)` computed at the current row `i` for every row `m`, the very
/// pairs row `i`'s own gradient and logsumexp compute: one pass computes
/// them once, adds `Σ_i t(i, m)` into a buffer of `n` rows, and a later
/// pass reads the buffer like an input (slot `inputs.len()` on).
#[derive(Clone, Debug)]
pub(crate) struct ScatterDecl {
    /// `t(i, m)`: the current row is `i`, index 0 the row `m` it adds to,
    /// index 1 the output component (for a vector).
    pub body: P,
    /// The components per row: the gradient's size slot, or `None` for
    /// one value per row.
    pub size: Option<u16>,
    /// For messages: the gradient the buffer feeds.
    pub pred: String,
    /// The gradient output (its index) whose array can hold the first
    /// group's sums: the one pass that reads the buffer copies each
    /// row's values before it stores that row's gradient there (see
    /// `output_for_scatter`).
    pub into: Option<u16>,
}

/// Replaces each batch gather in `root` (a gradient's root, `depth` bound
/// indices around it: 1 for a vector pred's component) that reads a
/// reduction at its other row by a read of a scatter buffer, and records
/// the scatter. Only gathers outside any other reduction: their value is
/// one per row (and component), as a buffer holds.
fn scatter_gathers(
    g: &mut PGraph,
    root: P,
    depth: u16,
    pred: &str,
    sizes: (u16, Option<u16>),
    scatters: &mut Vec<ScatterDecl>,
) -> P {
    let (first_slot, size) = sizes;
    let node = g.nodes[root as usize].clone();
    let n = match node {
        PNode::Red {
            op: RedOp::Sum,
            range: Range::Batch,
            filter: None,
            body,
        } => {
            let mut memo = HashMap::default();
            if !g.reads_reduced_at(body, 0, &mut memo) {
                return root;
            }
            let swapped = g.swap_rows(body, 0, &mut HashMap::default());
            if g.reads_reduced_at(swapped, 0, &mut HashMap::default()) {
                return root;
            }
            // Index 1 is the component (index 0 the row added to).
            let vector = depth == 1 && g.info[swapped as usize].free.contains(&1);
            let slot = first_slot + scatters.len() as u16;
            scatters.push(ScatterDecl {
                body: swapped,
                size: if vector { size } else { None },
                pred: pred.to_string(),
                into: None,
            });
            let comp = vector.then(|| g.intern(PNode::Var(0)));
            return g.intern(PNode::Input {
                slot,
                row: RowRef::Cur,
                comp,
            });
        }
        PNode::Un(f, a) => PNode::Un(f, scatter_gathers(g, a, depth, pred, sizes, scatters)),
        PNode::Powi(a, k) => PNode::Powi(scatter_gathers(g, a, depth, pred, sizes, scatters), k),
        PNode::Bin(f, a, b) => PNode::Bin(
            f,
            scatter_gathers(g, a, depth, pred, sizes, scatters),
            scatter_gathers(g, b, depth, pred, sizes, scatters),
        ),
        PNode::Sel(c, a, b) => PNode::Sel(
            scatter_gathers(g, c, depth, pred, sizes, scatters),
            scatter_gathers(g, a, depth, pred, sizes, scatters),
            scatter_gathers(g, b, depth, pred, sizes, scatters),
        ),
        _ => return root,
    };
    g.intern(n)
}

/// Whether a constant the planner folds is also a normal number (or 0) in
/// f32, where the evaluator may run: `1e20·(1e20·x)` folded is not.
fn f32_constant(v: f64) -> bool {
    v == 0.0 || (f32::MIN_POSITIVE as f64..=f32::MAX as f64).contains(&v.abs())
}

/// A data or pred the evaluator reads.
#[derive(Clone, Debug)]
pub struct InputDecl {
    /// Its name.
    pub name: String,
    /// `pred` (true) or `data`.
    pub is_pred: bool,
    /// `None` for a scalar per row, the size slot for a vector.
    pub size: Option<u16>,
    /// Its declared domain, checked before evaluation.
    pub dom: Dom,
    /// The declared type as written, for messages.
    pub type_text: String,
}

/// Where a per-evaluation scalar comes from.
#[derive(Clone, Debug)]
pub(crate) enum UniformSrc {
    /// A size's length.
    Size(u16),
    /// The value of sample reduction number `i`.
    Reduced(usize),
}

/// A gradient or Hessian output.
#[derive(Clone, Debug)]
pub(crate) struct OutputDecl {
    /// The pred's input slot (the output has its shape).
    pub slot: u16,
    /// The root, in the context of the output index for a vector pred.
    pub root: P,
}

/// Everything the planner derives from a spec, before the shapes are known.
#[derive(Debug)]
pub(crate) struct Plan {
    pub g: PGraph,
    pub inputs: Vec<InputDecl>,
    pub sizes: Vec<Size>,
    pub uniforms: Vec<UniformSrc>,
    /// The sample reductions' bodies, closed.
    pub reductions: Vec<P>,
    /// Whether each reduction is a mean (else a sum).
    pub mean: Vec<bool>,
    pub grads: Vec<OutputDecl>,
    pub hessians: Vec<OutputDecl>,
    /// Tabulated per-row quantities (closed nodes), in dependency order.
    pub tables: Vec<P>,
    /// Gathers computed by scattering, read as inputs from slot
    /// `inputs.len()` on.
    pub scatters: Vec<ScatterDecl>,
    /// The objective over the sample reductions (uniforms).
    pub outer: P,
    pub passes: Vec<Pass>,
}

/// Index of a register.
pub(crate) type Reg = u32;

/// Where a load takes its row.
#[derive(Clone, Copy, Debug)]
pub(crate) enum RowSrc {
    Cur,
    Loop(u16),
}

/// Where a load takes its component.
#[derive(Clone, Copy, Debug)]
pub(crate) enum CompSrc {
    None,
    Loop(u16),
    Reg(Reg),
}

/// One instruction.
#[derive(Clone, Debug)]
pub(crate) enum Op {
    Const {
        out: Reg,
        v: f64,
    },
    Uniform {
        out: Reg,
        u: u16,
    },
    /// The index values of a loop's current tile.
    Iota {
        out: Reg,
        scope: u16,
    },
    CurRow {
        out: Reg,
    },
    Load {
        out: Reg,
        slot: u16,
        row: RowSrc,
        comp: CompSrc,
    },
    TableLoad {
        out: Reg,
        table: u16,
        row: RowSrc,
    },
    Un {
        out: Reg,
        f: UFn,
        a: Reg,
    },
    Bin {
        out: Reg,
        f: BFn,
        a: Reg,
        b: Reg,
    },
    Sel {
        out: Reg,
        c: Reg,
        a: Reg,
        b: Reg,
    },
    Powi {
        out: Reg,
        a: Reg,
        n: i32,
    },
    /// `exp(x - lse)` where `lse` is the logsumexp of `x` over the same
    /// components: `cache * inv`, the exp the logsumexp kept times the
    /// reciprocal of its sum (see `softmax`). A row whose `lse` is not
    /// finite, or a logsumexp the interpreter ran in several tiles, takes
    /// `exp(x - lse)`, except over the batch where the exps were kept and
    /// `x` is not computed (`Layout::skip`).
    Softmax {
        out: Reg,
        x: SoftmaxX,
        cache: Reg,
        inv: Reg,
        lse: Reg,
        /// The logsumexp's loop.
        scope: u16,
    },
    /// Writes a gradient (times the reduction factor) for the chunk; for a
    /// vector pred, `scope` is the loop over its components.
    Store {
        reg: Reg,
        output: u16,
        hessian: bool,
        scope: Option<u16>,
    },
}

/// Where a softmax reads its `x` when it computes `exp(x - lse)` itself.
#[derive(Clone, Copy, Debug)]
pub(crate) enum SoftmaxX {
    Reg(Reg),
    /// The input's component at the softmax's loop index, current row: read
    /// only by the rows that need it.
    Input(u16),
}

/// What a reduction folds in per index value.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Fold {
    Reg(Reg),
    /// A product folded without materialising it (a `dot`).
    Prod(Reg, Reg),
}

/// A loop over the tiles of a scope.
#[derive(Clone, Debug)]
pub(crate) enum LoopKind {
    Reduce {
        op: RedOp,
        acc: Reg,
        /// The running count (mean) or shifted sum (logsumexp).
        aux: Reg,
        /// Logsumexp, in the interpreter: the maximum before the current
        /// tile, then (once the sum is rescaled) each row's shift, the
        /// maximum or 0 where that is not finite.
        aux2: Reg,
        fold: Fold,
        filter: Option<Reg>,
        /// Where a logsumexp read by an `Op::Softmax` keeps its exps
        /// (`exp(x - max)` per component). When the interpreter keeps them
        /// (the loop ran in one tile), `aux` then holds the reciprocal of
        /// their sum; generated code keeps both in its row buffer and locals.
        cache: Option<Reg>,
    },
    /// The components of a vector pred's gradient (or of a scatter's
    /// rows): a loop whose items store them.
    Store,
    /// Adds, for every row `m` of the batch tile (and component, in loop
    /// `comp`), the fold summed over the chunk's rows into row `m` of
    /// scatter `target`'s buffer.
    Scatter {
        target: u16,
        fold: Fold,
        comp: Option<u16>,
    },
}

/// An item of a scope.
#[derive(Clone, Debug)]
pub(crate) enum Item {
    Op(Op),
    Loop { scope: u16, kind: LoopKind },
}

/// A scope: the root (rows) or a loop over an index's tiles.
#[derive(Clone, Debug)]
pub(crate) struct ScopeDef {
    pub depth: u16,
    pub range: Option<Range>,
    pub items: Vec<Item>,
}

/// A register: one value per position in the tiles of its loops (outer to
/// inner) and per row of the chunk if it depends on the row.
#[derive(Clone, Debug)]
pub(crate) struct RegDef {
    pub loops: Vec<u16>,
    pub rowdep: bool,
}

/// One pass over all rows.
#[derive(Clone, Debug, Default)]
pub(crate) struct Pass {
    pub scopes: Vec<ScopeDef>,
    pub regs: Vec<RegDef>,
    /// Root registers summed over rows into sample-reduction slots.
    pub sums: Vec<(Reg, usize)>,
    /// Root registers stored per row into tables.
    pub tables: Vec<(Reg, u16)>,
    /// Whether any loop ranges over the batch (the pass is O(n²)).
    pub coupled: bool,
    /// The scatters whose buffers this pass fills.
    pub scatters: Vec<u16>,
}

/// The deepest loop nest the evaluator runs.
pub(crate) const MAX_LOOPS: usize = 8;

/// Why a spec cannot be planned.
#[derive(Debug, Clone)]
pub(crate) struct PlanError(pub String);

struct Converter<'a> {
    g: &'a Graph,
    pg: PGraph,
    inputs: Vec<InputDecl>,
    sizes: Vec<Size>,
    uniforms: Vec<UniformSrc>,
    params: BTreeMap<String, f64>,
    reduced: BTreeMap<String, usize>,
    memo: HashMap<(Id, Vec<String>), P>,
}

impl Converter<'_> {
    fn size_slot(&mut self, s: &Size) -> u16 {
        if let Some(i) = self.sizes.iter().position(|x| x == s) {
            return i as u16;
        }
        self.sizes.push(s.clone());
        (self.sizes.len() - 1) as u16
    }

    fn slot(&self, name: &str) -> Result<u16, PlanError> {
        self.inputs
            .iter()
            .position(|i| i.name == name)
            .map(|i| i as u16)
            .ok_or_else(|| PlanError(format!("`{name}` is not a declared data or pred")))
    }

    fn var(env: &[String], name: &str) -> Result<u16, PlanError> {
        env.iter()
            .rev()
            .position(|n| n == name)
            .map(|i| i as u16)
            .ok_or_else(|| PlanError(format!("index `{name}` is not bound")))
    }

    fn conv(&mut self, id: Id, env: &[String]) -> Result<P, PlanError> {
        let free = self.g.free_indices(id);
        let key_env: Vec<String> = if free.is_empty() {
            Vec::new()
        } else {
            env.to_vec()
        };
        if let Some(&p) = self.memo.get(&(id, key_env.clone())) {
            return Ok(p);
        }
        let p = self.conv_node(id, env)?;
        self.memo.insert((id, key_env), p);
        Ok(p)
    }

    fn conv_node(&mut self, id: Id, env: &[String]) -> Result<P, PlanError> {
        let node = self.g.node(id).clone();
        Ok(match node {
            Node::Num(v) => self.pg.num(v.0),
            Node::Sym(kind, name) => match kind {
                SymKind::Param => {
                    let v = *self
                        .params
                        .get(&name)
                        .ok_or_else(|| PlanError(format!("param `{name}` has no value")))?;
                    self.pg.num(v)
                }
                SymKind::Size => {
                    let s = self.size_slot(&Size::Name(name));
                    self.uniform(UniformSrc::Size(s))
                }
                SymKind::Reduced => {
                    let i = *self
                        .reduced
                        .get(&name)
                        .ok_or_else(|| PlanError(format!("reduction `{name}` is unknown")))?;
                    self.uniform(UniformSrc::Reduced(i))
                }
                SymKind::Data | SymKind::Pred => {
                    let slot = self.slot(&name)?;
                    self.pg.intern(PNode::Input {
                        slot,
                        row: RowRef::Cur,
                        comp: None,
                    })
                }
            },
            Node::Elem {
                name, row, comp, ..
            } => {
                let slot = self.slot(&name)?;
                let row = match row {
                    Some(j) => RowRef::Var(Self::var(env, &j)?),
                    None => RowRef::Cur,
                };
                let comp = match comp {
                    Some(c) => Some(self.conv(c, env)?),
                    None => None,
                };
                self.pg.intern(PNode::Input { slot, row, comp })
            }
            Node::Idx(name) => {
                let v = Self::var(env, &name)?;
                self.pg.intern(PNode::Var(v))
            }
            Node::Row => self.pg.intern(PNode::CurRow),
            Node::Add(xs) => {
                let mut acc = self.conv(xs[0], env)?;
                for &x in &xs[1..] {
                    let b = self.conv(x, env)?;
                    acc = self.pg.bin(BFn::Add, acc, b);
                }
                acc
            }
            Node::Mul(fs) => {
                let mut acc = self.conv(fs[0], env)?;
                for &x in &fs[1..] {
                    let b = self.conv(x, env)?;
                    acc = self.pg.bin(BFn::Mul, acc, b);
                }
                acc
            }
            Node::Pow(b, e) => {
                let base = self.conv(b, env)?;
                // The exponent after params became constants: `(1 - p)^gamma`
                // with gamma = 2 is a square, not an exp of a log.
                let ex = self.conv(e, env)?;
                match self.pg.as_num(ex) {
                    Some(-1.0) => self.pg.un(UFn::Recip, base),
                    Some(0.5) => self.pg.un(UFn::F(Func::Sqrt), base),
                    Some(-0.5) => {
                        let s = self.pg.un(UFn::F(Func::Sqrt), base);
                        self.pg.un(UFn::Recip, s)
                    }
                    Some(1.0) => base,
                    Some(0.0) => self.pg.num(1.0),
                    Some(k) if k.fract() == 0.0 && k.abs() <= 64.0 => {
                        self.pg.intern(PNode::Powi(base, k as i32))
                    }
                    _ => self.pg.bin(BFn::Pow, base, ex),
                }
            }
            Node::Func(Func::Log, x) => {
                // Stable forms: log(sigmoid(z)) = -softplus(-z) and
                // log(1 - sigmoid(z)) = -softplus(z).
                if let Node::Func(Func::Sigmoid, z) = *self.g.node(x) {
                    let z = self.conv(z, env)?;
                    let nz = self.pg.un(UFn::Neg, z);
                    let sp = self.func(Func::Softplus, nz);
                    return Ok(self.pg.un(UFn::Neg, sp));
                }
                if let Some(z) = one_minus_sigmoid(self.g, x) {
                    let z = self.conv(z, env)?;
                    let sp = self.pg.un(UFn::F(Func::Softplus), z);
                    return Ok(self.pg.un(UFn::Neg, sp));
                }
                let a = self.conv(x, env)?;
                self.pg.un(UFn::F(Func::Log), a)
            }
            Node::Func(f, x) => {
                let a = self.conv(x, env)?;
                self.func(f, a)
            }
            Node::Max(a, b) | Node::Min(a, b) => {
                let f = if matches!(node, Node::Max(..)) {
                    BFn::Max
                } else {
                    BFn::Min
                };
                let (a, b) = (self.conv(a, env)?, self.conv(b, env)?);
                self.pg.bin(f, a, b)
            }
            Node::Select(c, a, b) => {
                let (c, a, b) = (self.conv(c, env)?, self.conv(a, env)?, self.conv(b, env)?);
                match self.pg.as_num(c) {
                    Some(v) if v != 0.0 => a,
                    Some(_) => b,
                    None if a == b => a,
                    None => self.pg.intern(PNode::Sel(c, a, b)),
                }
            }
            Node::Cmp(op, a, b) => {
                let (a, b) = (self.conv(a, env)?, self.conv(b, env)?);
                self.pg.intern(PNode::Bin(BFn::Cmp(op), a, b))
            }
            Node::Delta(a, b) => {
                let (a, b) = (self.conv(a, env)?, self.conv(b, env)?);
                self.pg.intern(PNode::Bin(BFn::Cmp(Cmp::Eq), a, b))
            }
            Node::And(a, b) | Node::Or(a, b) => {
                let f = if matches!(node, Node::And(..)) {
                    BFn::And
                } else {
                    BFn::Or
                };
                let (a, b) = (self.conv(a, env)?, self.conv(b, env)?);
                self.pg.intern(PNode::Bin(f, a, b))
            }
            Node::Not(a) => {
                let a = self.conv(a, env)?;
                self.pg.un(UFn::Not, a)
            }
            Node::StopGrad(a) => self.conv(a, env)?,
            Node::Reduce {
                op,
                idx,
                range,
                filter,
                body,
            } => {
                let range = match range {
                    IdxRange::Feature(s) => Range::Feature(self.size_slot(&s)),
                    IdxRange::Batch => Range::Batch,
                };
                let mut inner = env.to_vec();
                inner.push(idx);
                let body = self.conv(body, &inner)?;
                let filter = match filter {
                    Some(f) => Some(self.conv(f, &inner)?),
                    None => None,
                };
                self.pg.intern(PNode::Red {
                    op,
                    range,
                    filter,
                    body,
                })
            }
        })
    }

    /// `f(a)`, sharing work between related functions: `softplus(-x)` is
    /// `softplus(x) - x`, so a spec using both (log p and log(1 - p) on a
    /// logit) evaluates one.
    fn func(&mut self, f: Func, a: P) -> P {
        if f == Func::Softplus
            && let PNode::Un(UFn::Neg, x) = self.pg.nodes[a as usize]
        {
            let sp = self.pg.un(UFn::F(Func::Softplus), x);
            return self.pg.bin(BFn::Sub, sp, x);
        }
        self.pg.un(UFn::F(f), a)
    }

    fn uniform(&mut self, u: UniformSrc) -> P {
        let i = self
            .uniforms
            .iter()
            .position(|x| format!("{x:?}") == format!("{u:?}"))
            .unwrap_or_else(|| {
                self.uniforms.push(u);
                self.uniforms.len() - 1
            });
        self.pg.intern(PNode::Uniform(i as u16))
    }
}

/// `z` when `x` is `1 - sigmoid(z)`.
fn one_minus_sigmoid(g: &Graph, x: Id) -> Option<Id> {
    let Node::Add(xs) = g.node(x) else {
        return None;
    };
    if xs.len() != 2 || !xs.iter().any(|&t| g.as_num(t) == Some(1.0)) {
        return None;
    }
    xs.iter().find_map(|&t| match g.node(t) {
        Node::Mul(fs) if fs.len() == 2 && g.as_num(fs[0]) == Some(-1.0) => match g.node(fs[1]) {
            Node::Func(Func::Sigmoid, z) => Some(*z),
            _ => None,
        },
        _ => None,
    })
}

pub(crate) fn commutes(f: BFn) -> bool {
    matches!(
        f,
        BFn::Add
            | BFn::Mul
            | BFn::Max
            | BFn::Min
            | BFn::And
            | BFn::Or
            | BFn::Cmp(Cmp::Eq)
            | BFn::Cmp(Cmp::Ne)
    )
}

/// Plans the evaluation of a derivation.
pub(crate) fn plan(d: &Derivation, checked: &crate::Checked) -> Result<Plan, PlanError> {
    let mut sizes = Vec::new();
    let mut inputs = Vec::new();
    for (v, is_pred) in checked
        .data
        .iter()
        .map(|v| (v, false))
        .chain(checked.preds.iter().map(|v| (v, true)))
    {
        let size = match &v.shape {
            Shape::Scalar => None,
            Shape::Vector(s) => Some(slot_of(&mut sizes, s)),
        };
        if let Dom::Class(s) = &v.dom {
            slot_of(&mut sizes, s);
        }
        inputs.push(InputDecl {
            name: v.name.clone(),
            is_pred,
            size,
            dom: v.dom.clone(),
            type_text: v.type_text.clone(),
        });
    }
    let mut cv = Converter {
        g: &d.graph,
        pg: PGraph::default(),
        inputs,
        sizes,
        uniforms: Vec::new(),
        params: checked
            .params
            .iter()
            .map(|p| (p.name.clone(), p.value))
            .collect(),
        reduced: d
            .objective
            .reductions
            .iter()
            .enumerate()
            .map(|(i, r)| (r.name.clone(), i))
            .collect(),
        memo: HashMap::default(),
    };
    let mut reductions = Vec::new();
    for r in &d.objective.reductions {
        reductions.push(cv.conv(r.body, &[])?);
    }
    let outer = cv.conv(d.objective.outer, &[])?;
    let mut grads = Vec::new();
    let mut hessians = Vec::new();
    for pg in &d.preds {
        let slot = cv.slot(&pg.pred)?;
        let env: Vec<String> = pg.component.iter().cloned().collect();
        let root = cv.conv(pg.per_sample, &env)?;
        grads.push(OutputDecl { slot, root });
        if let Some(h) = pg.hessian {
            let root = cv.conv(h, &[])?;
            hessians.push(OutputDecl { slot, root });
        }
    }
    let mean = d
        .objective
        .reductions
        .iter()
        .map(|r| r.kind == crate::ir::lower::SampleReduction::Mean)
        .collect();
    let Converter {
        mut pg,
        inputs,
        sizes,
        uniforms,
        ..
    } = cv;

    // Select before the function for two-valued labels.
    for (slot, decl) in inputs.iter().enumerate() {
        if let (Dom::Labels(vs), None) = (&decl.dom, decl.size)
            && vs.len() == 2
        {
            let mut roots: Vec<&mut P> = reductions
                .iter_mut()
                .chain(grads.iter_mut().map(|o| &mut o.root))
                .chain(hessians.iter_mut().map(|o| &mut o.root))
                .collect();
            super::select::rewrite(&mut pg, slot as u16, vs[0], vs[1], &mut roots);
        }
    }

    // Gathers over the batch that read other rows' reductions, scattered.
    let mut scatters = Vec::new();
    let first_slot = inputs.len() as u16;
    for o in grads.iter_mut() {
        let decl = &inputs[o.slot as usize];
        let depth = decl.size.is_some() as u16;
        let sizes = (first_slot, decl.size);
        o.root = scatter_gathers(&mut pg, o.root, depth, &decl.name, sizes, &mut scatters);
    }

    // Tabulation.
    let mut tab = Tabulator::default();
    let reductions: Vec<P> = reductions
        .into_iter()
        .map(|p| tab.rewrite(&mut pg, p, &[]))
        .collect();
    let vec_ctx = |slot: u16| {
        if inputs[slot as usize].size.is_some() {
            vec![false]
        } else {
            vec![]
        }
    };
    for o in grads.iter_mut().chain(hessians.iter_mut()) {
        o.root = tab.rewrite(&mut pg, o.root, &vec_ctx(o.slot));
    }
    for sc in scatters.iter_mut() {
        let ctx = if sc.size.is_some() {
            vec![false, true]
        } else {
            vec![true]
        };
        sc.body = tab.rewrite(&mut pg, sc.body, &ctx);
    }
    let tables = tab.tables.clone();

    let mut plan = Plan {
        g: pg,
        inputs,
        sizes,
        uniforms,
        reductions,
        mean,
        grads,
        hessians,
        tables,
        scatters,
        outer,
        passes: Vec::new(),
    };
    plan.passes = schedule(&mut plan)?;
    // (one scatter per gradient array: two adding into one would each
    // read the other's sums)
    for i in 0..plan.scatters.len() {
        let into = output_for_scatter(&plan, i);
        let taken = plan.scatters[..i]
            .iter()
            .any(|s| s.into.is_some() && s.into == into);
        plan.scatters[i].into = into.filter(|_| !taken);
    }
    Ok(plan)
}

/// The gradient output whose array can hold scatter `i`'s first group of
/// sums (an `n` x width buffer fewer): the scatter's own pred's gradient,
/// as wide as the scatter, stored by the one pass that reads the buffer,
/// in the scope that reads it once, after that read. A vector's read
/// copies the tile before the tile is stored; a scalar's read is in place,
/// so every instruction reading it must come before the store too.
fn output_for_scatter(plan: &Plan, i: usize) -> Option<u16> {
    let sc = &plan.scatters[i];
    let slot = (plan.inputs.len() + i) as u16;
    let output = plan
        .grads
        .iter()
        .position(|o| plan.inputs[o.slot as usize].name == sc.pred)?;
    if plan.inputs[plan.grads[output].slot as usize].size != sc.size {
        return None;
    }
    let reads = |op: &Op| matches!(op, Op::Load { slot: s, .. } if *s == slot);
    let mut readers = plan.passes.iter().filter(|p| {
        p.scopes.iter().any(|sc| {
            sc.items
                .iter()
                .any(|it| matches!(it, Item::Op(op) if reads(op)))
        })
    });
    let pass = readers.next()?;
    if readers.next().is_some() {
        return None;
    }
    let loads: Vec<(usize, usize, &Op)> = pass
        .scopes
        .iter()
        .enumerate()
        .flat_map(|(si, sc)| {
            sc.items
                .iter()
                .enumerate()
                .filter_map(move |(ii, it)| match it {
                    Item::Op(op) if reads(op) => Some((si, ii, op)),
                    _ => None,
                })
        })
        .collect();
    let [(si, li, load)] = loads[..] else {
        return None;
    };
    let scope = &pass.scopes[si];
    let store = scope.items.iter().position(|it| {
        matches!(it, Item::Op(Op::Store { output: o, hessian: false, .. }) if *o as usize == output)
    })?;
    let Op::Load { out, comp, .. } = *load else {
        return None;
    };
    let ok = match comp {
        // The tile's components, copied, in the store's own loop.
        CompSrc::Loop(c) => c as usize == si && si != 0 && li < store,
        // In place: nothing reads it from the store on, nor in a loop.
        CompSrc::None => {
            si == 0
                && li < store
                && pass.scopes.iter().enumerate().all(|(k, sc)| {
                    sc.items.iter().enumerate().all(|(j, it)| match it {
                        Item::Op(op) => !op_reads(op).contains(&out) || (k == 0 && j < store),
                        Item::Loop { kind, .. } => !loop_reads(kind).contains(&out),
                    })
                })
        }
        CompSrc::Reg(_) => false,
    };
    ok.then_some(output as u16)
}

fn slot_of(sizes: &mut Vec<Size>, s: &Size) -> u16 {
    if let Some(i) = sizes.iter().position(|x| x == s) {
        return i as u16;
    }
    sizes.push(s.clone());
    (sizes.len() - 1) as u16
}

/// Finds per-row quantities read at other rows and moves them to tables.
#[derive(Default)]
struct Tabulator {
    tables: Vec<P>,
    memo: HashMap<(P, Vec<bool>), P>,
}

impl Tabulator {
    /// `ctx[i]` tells whether de Bruijn index `i` (innermost last, as a
    /// stack) ranges over the batch.
    fn rewrite(&mut self, g: &mut PGraph, p: P, ctx: &[bool]) -> P {
        let info = &g.info[p as usize];
        if info.free.is_empty() && !info.has_red {
            return p;
        }
        let relevant: Vec<bool> = ctx.to_vec();
        if let Some(&r) = self.memo.get(&(p, relevant.clone())) {
            return r;
        }
        let depth = ctx.len() as u16;
        let is_batch = |v: u16| v < depth && ctx[(depth - 1 - v) as usize];
        let r = if info.has_red && !info.rowdep && info.free.len() == 1 && is_batch(info.free[0]) {
            let b = info.free[0];
            let f = g.at_current_row(p, b, &mut HashMap::default());
            let f = self.rewrite(g, f, &[]);
            let t = match self.tables.iter().position(|&x| x == f) {
                Some(t) => t,
                None => {
                    self.tables.push(f);
                    self.tables.len() - 1
                }
            };
            g.intern(PNode::Table {
                table: t as u16,
                row: RowRef::Var(b),
            })
        } else {
            match g.nodes[p as usize].clone() {
                PNode::Input { slot, row, comp } => {
                    let comp = comp.map(|c| self.rewrite(g, c, ctx));
                    g.intern(PNode::Input { slot, row, comp })
                }
                PNode::Un(f, a) => {
                    let a = self.rewrite(g, a, ctx);
                    g.intern(PNode::Un(f, a))
                }
                PNode::Powi(a, k) => {
                    let a = self.rewrite(g, a, ctx);
                    g.intern(PNode::Powi(a, k))
                }
                PNode::Bin(f, a, b) => {
                    let (a, b) = (self.rewrite(g, a, ctx), self.rewrite(g, b, ctx));
                    g.intern(PNode::Bin(f, a, b))
                }
                PNode::Sel(c, a, b) => {
                    let c = self.rewrite(g, c, ctx);
                    let (a, b) = (self.rewrite(g, a, ctx), self.rewrite(g, b, ctx));
                    g.intern(PNode::Sel(c, a, b))
                }
                PNode::Red {
                    op,
                    range,
                    filter,
                    body,
                } => {
                    let mut inner = ctx.to_vec();
                    inner.push(range == Range::Batch);
                    let body = self.rewrite(g, body, &inner);
                    let filter = filter.map(|f| self.rewrite(g, f, &inner));
                    g.intern(PNode::Red {
                        op,
                        range,
                        filter,
                        body,
                    })
                }
                _ => p,
            }
        };
        self.memo.insert((p, relevant), r);
        r
    }
}

/// The tables a node reads.
fn tables_read(g: &PGraph, p: P, out: &mut Vec<u16>, seen: &mut Vec<bool>) {
    if seen[p as usize] {
        return;
    }
    seen[p as usize] = true;
    match &g.nodes[p as usize] {
        PNode::Table { table, .. } if !out.contains(table) => out.push(*table),
        PNode::Input { comp: Some(c), .. } => tables_read(g, *c, out, seen),
        PNode::Un(_, a) | PNode::Powi(a, _) => tables_read(g, *a, out, seen),
        PNode::Bin(_, a, b) => {
            tables_read(g, *a, out, seen);
            tables_read(g, *b, out, seen);
        }
        PNode::Sel(c, a, b) => {
            for x in [c, a, b] {
                tables_read(g, *x, out, seen);
            }
        }
        PNode::Red { filter, body, .. } => {
            tables_read(g, *body, out, seen);
            if let Some(f) = filter {
                tables_read(g, *f, out, seen);
            }
        }
        _ => {}
    }
}

fn reads_reduced(plan: &Plan, p: P) -> bool {
    plan.g.any_node(p, |n| {
        matches!(n, PNode::Uniform(u) if matches!(plan.uniforms[*u as usize], UniformSrc::Reduced(_)))
    })
}

/// Whether `p` reads a scatter's buffer (an input slot past the plan's).
fn reads_scatter(plan: &Plan, p: P) -> bool {
    let first = plan.inputs.len() as u16;
    plan.g.any_node(
        p,
        |n| matches!(n, PNode::Input { slot, .. } if *slot >= first),
    )
}

/// Orders the work into passes: tables by dependency level, then the
/// reductions when a gradient needs their values, then the rest.
fn schedule(plan: &mut Plan) -> Result<Vec<Pass>, PlanError> {
    let nt = plan.tables.len();
    let mut level = vec![0usize; nt];
    // Tables were appended after the tables they read, so one sweep in
    // order settles the levels.
    for t in 0..nt {
        let mut read = Vec::new();
        tables_read(
            &plan.g,
            plan.tables[t],
            &mut read,
            &mut vec![false; plan.g.nodes.len()],
        );
        level[t] = read
            .iter()
            .filter(|&&r| (r as usize) != t)
            .map(|&r| level[r as usize] + 1)
            .max()
            .unwrap_or(0);
    }
    let mut passes = Vec::new();
    let levels = level.iter().copied().max().map_or(0, |m| m + 1);
    for l in 0..levels {
        let mut em = Emitter::new(plan, |t| level[t as usize] < l);
        for (t, &lt) in level.iter().enumerate() {
            if lt == l {
                let r = em.emit(plan.tables[t], &[]);
                em.pass.tables.push((r, t as u16));
            }
        }
        passes.push(em.finish());
    }
    let all_tables = |_: u16| true;
    let outputs: Vec<(OutputDecl, bool)> = plan
        .grads
        .iter()
        .map(|o| (o.clone(), false))
        .chain(plan.hessians.iter().map(|o| (o.clone(), true)))
        .collect();
    let needs_reduced = outputs.iter().any(|(o, _)| reads_reduced(plan, o.root))
        || plan.scatters.iter().any(|sc| reads_reduced(plan, sc.body));
    let mut em = Emitter::new(plan, all_tables);
    for (i, &r) in plan.reductions.iter().enumerate() {
        let reg = em.emit(r, &[]);
        em.pass.sums.push((reg, i));
    }
    if needs_reduced {
        passes.push(em.finish());
        em = Emitter::new(plan, all_tables);
    }
    for i in 0..plan.scatters.len() {
        em.scatter(i as u16);
    }
    // Outputs that read a scatter's buffer wait for a pass after it.
    let mut out_index = [0u16; 2];
    let mut late = Vec::new();
    for (o, hessian) in outputs {
        let k = &mut out_index[hessian as usize];
        if reads_scatter(plan, o.root) {
            late.push((o, *k, hessian));
        } else {
            em.store(&o, *k, hessian);
        }
        *k += 1;
    }
    if !late.is_empty() {
        passes.push(em.finish());
        em = Emitter::new(plan, all_tables);
        for (o, k, hessian) in late {
            em.store(&o, k, hessian);
        }
    }
    passes.push(em.finish());
    for p in &mut passes {
        super::softmax::fuse(p);
        fold_negations(p);
        fold_reciprocals(p);
        drop_unread(p);
    }
    for p in &passes {
        let depth = p.scopes.iter().map(|s| s.depth as usize).max().unwrap_or(0);
        if depth > MAX_LOOPS {
            return Err(PlanError(format!(
                "reductions nested {depth} deep (the evaluator runs at most {MAX_LOOPS})"
            )));
        }
    }
    Ok(passes)
}

/// Rewrites `b + (-a)` as `b - a` (the same value, bit for bit): one
/// instruction and one pass over its register fewer, and the negation is
/// dropped when nothing else reads it.
fn fold_negations(pass: &mut Pass) {
    let mut negated: BTreeMap<Reg, Reg> = BTreeMap::new();
    for sc in &pass.scopes {
        for item in &sc.items {
            if let Item::Op(Op::Un {
                out,
                f: UFn::Neg,
                a,
            }) = item
            {
                negated.insert(*out, *a);
            }
        }
    }
    for sc in &mut pass.scopes {
        for item in &mut sc.items {
            if let Item::Op(Op::Bin {
                f: f @ BFn::Add,
                a,
                b,
                ..
            }) = item
            {
                if let Some(&n) = negated.get(b) {
                    (*f, *b) = (BFn::Sub, n);
                } else if let Some(&n) = negated.get(a) {
                    (*f, *a, *b) = (BFn::Sub, *b, n);
                }
            }
        }
    }
}

/// Rewrites `a · (1/b)` as `a / b` when nothing else reads `1/b` and it
/// has the product's shape: one rounding and one instruction fewer, the
/// same number of divisions. A reciprocal read twice stays, so `a/b` and `c/b`
/// keep sharing one division; so does one computed for fewer values than
/// the product (once per chunk, or per row outside a loop over
/// components), or one division would become one per row or component.
fn fold_reciprocals(pass: &mut Pass) {
    let mut ones = BTreeSet::new();
    let mut recips: BTreeMap<Reg, Reg> = BTreeMap::new();
    let mut reads: BTreeMap<Reg, usize> = BTreeMap::new();
    let mut count = |r: Reg| *reads.entry(r).or_default() += 1;
    for r in pass
        .sums
        .iter()
        .map(|s| s.0)
        .chain(pass.tables.iter().map(|t| t.0))
    {
        count(r);
    }
    for sc in &pass.scopes {
        for item in &sc.items {
            match item {
                Item::Op(op) => {
                    op_reads(op).into_iter().for_each(&mut count);
                    match *op {
                        Op::Const { out, v: 1.0 } => {
                            ones.insert(out);
                        }
                        Op::Bin {
                            out,
                            f: BFn::Div,
                            a,
                            b,
                        } if ones.contains(&a) => {
                            recips.insert(out, b);
                        }
                        Op::Un {
                            out,
                            f: UFn::Recip,
                            a,
                        } => {
                            recips.insert(out, a);
                        }
                        _ => {}
                    }
                }
                Item::Loop { kind, .. } => loop_reads(kind).into_iter().for_each(&mut count),
            }
        }
    }
    let regs = &pass.regs;
    let same_shape = |x: Reg, y: Reg| {
        let (x, y) = (&regs[x as usize], &regs[y as usize]);
        x.loops == y.loops && x.rowdep == y.rowdep
    };
    for sc in &mut pass.scopes {
        for item in &mut sc.items {
            if let Item::Op(Op::Bin {
                out,
                f: f @ BFn::Mul,
                a,
                b,
            }) = item
            {
                let sole = |r: &Reg| {
                    recips
                        .get(r)
                        .filter(|_| reads.get(r) == Some(&1) && same_shape(*r, *out))
                        .copied()
                };
                if let Some(y) = sole(b) {
                    (*f, *b) = (BFn::Div, y);
                } else if let Some(y) = sole(a) {
                    (*f, *a, *b) = (BFn::Div, *b, y);
                }
            }
        }
    }
}

/// Removes instructions whose result nothing reads, until none is left.
fn drop_unread(pass: &mut Pass) {
    loop {
        let mut read: BTreeSet<Reg> = pass.sums.iter().map(|s| s.0).collect();
        read.extend(pass.tables.iter().map(|t| t.0));
        for sc in &pass.scopes {
            for item in &sc.items {
                match item {
                    Item::Op(op) => read.extend(op_reads(op)),
                    Item::Loop { kind, .. } => read.extend(loop_reads(kind)),
                }
            }
        }
        let mut dropped = false;
        for sc in &mut pass.scopes {
            sc.items.retain(|item| match item {
                Item::Op(op) => {
                    let keep = op_writes(op).is_none_or(|w| read.contains(&w));
                    dropped |= !keep;
                    keep
                }
                Item::Loop { .. } => true,
            });
        }
        if !dropped {
            return;
        }
    }
}

struct Emitter<'a, F: Fn(u16) -> bool> {
    plan: &'a Plan,
    /// Tables filled by earlier passes.
    ready: F,
    pass: Pass,
    memo: HashMap<(P, Vec<u16>), Reg>,
    /// Closed nodes that a ready table holds.
    table_of: HashMap<P, u16>,
}

impl<'a, F: Fn(u16) -> bool> Emitter<'a, F> {
    fn new(plan: &'a Plan, ready: F) -> Self {
        let table_of = plan
            .tables
            .iter()
            .enumerate()
            .filter(|(t, _)| ready(*t as u16))
            .map(|(t, &p)| (p, t as u16))
            .collect();
        let mut pass = Pass::default();
        pass.scopes.push(ScopeDef {
            depth: 0,
            range: None,
            items: Vec::new(),
        });
        Emitter {
            plan,
            ready,
            pass,
            memo: HashMap::default(),
            table_of,
        }
    }

    fn finish(self) -> Pass {
        self.pass
    }

    /// The loops a node's free indices are bound by, outer to inner.
    fn loops_of(&self, p: P, ctx: &[u16]) -> Vec<u16> {
        let n = ctx.len();
        let mut ls: Vec<u16> = self.plan.g.info[p as usize]
            .free
            .iter()
            .map(|&v| ctx[n - 1 - v as usize])
            .collect();
        ls.sort_by_key(|&s| self.pass.scopes[s as usize].depth);
        ls.dedup();
        ls
    }

    fn new_reg(&mut self, loops: Vec<u16>, rowdep: bool) -> Reg {
        self.pass.regs.push(RegDef { loops, rowdep });
        (self.pass.regs.len() - 1) as Reg
    }

    fn push(&mut self, scope: u16, op: Op) {
        self.pass.scopes[scope as usize].items.push(Item::Op(op));
    }

    fn row_src(r: RowRef, ctx: &[u16]) -> RowSrc {
        match r {
            RowRef::Cur => RowSrc::Cur,
            RowRef::Var(v) => RowSrc::Loop(ctx[ctx.len() - 1 - v as usize]),
        }
    }

    /// Emits `p` (in the de Bruijn context `ctx`: the loop bound to each
    /// index, innermost last) and returns its register.
    fn emit(&mut self, p: P, ctx: &[u16]) -> Reg {
        let loops = self.loops_of(p, ctx);
        let key = (p, loops.clone());
        if let Some(&r) = self.memo.get(&key) {
            return r;
        }
        let g = &self.plan.g;
        let rowdep = g.info[p as usize].rowdep;
        let place = loops.last().copied().unwrap_or(0);
        let node = g.nodes[p as usize].clone();
        // A closed per-row quantity an earlier pass tabulated.
        if loops.is_empty()
            && rowdep
            && let Some(&t) = self.table_of.get(&p)
            && (self.ready)(t)
        {
            let out = self.new_reg(loops, true);
            self.push(
                0,
                Op::TableLoad {
                    out,
                    table: t,
                    row: RowSrc::Cur,
                },
            );
            self.memo.insert(key, out);
            return out;
        }
        let out = match node {
            PNode::Red {
                op,
                range,
                filter,
                body,
            } => {
                let scope = self.pass.scopes.len() as u16;
                let depth = self.pass.scopes[place as usize].depth + 1;
                self.pass.coupled |= range == Range::Batch;
                self.pass.scopes.push(ScopeDef {
                    depth,
                    range: Some(range),
                    items: Vec::new(),
                });
                let mut inner = ctx.to_vec();
                inner.push(scope);
                let fold = match (&self.plan.g.nodes[body as usize], op, filter) {
                    (PNode::Bin(BFn::Mul, a, b), RedOp::Sum, None) => {
                        let (a, b) = (*a, *b);
                        Fold::Prod(self.emit(a, &inner), self.emit(b, &inner))
                    }
                    _ => Fold::Reg(self.emit(body, &inner)),
                };
                let filter = filter.map(|f| self.emit(f, &inner));
                let acc = self.new_reg(loops.clone(), rowdep);
                let aux = self.new_reg(loops.clone(), rowdep);
                let aux2 = self.new_reg(loops, rowdep);
                self.pass.scopes[place as usize].items.push(Item::Loop {
                    scope,
                    kind: LoopKind::Reduce {
                        op,
                        acc,
                        aux,
                        aux2,
                        fold,
                        filter,
                        cache: None,
                    },
                });
                acc
            }
            other => {
                let out = self.new_reg(loops, rowdep);
                let op = match other {
                    PNode::Num(v) => Op::Const { out, v: v.0 },
                    PNode::Uniform(u) => Op::Uniform { out, u },
                    PNode::Input { slot, row, comp } => {
                        let comp = match comp {
                            None => CompSrc::None,
                            Some(c) => match self.plan.g.nodes[c as usize] {
                                PNode::Var(v) => CompSrc::Loop(ctx[ctx.len() - 1 - v as usize]),
                                _ => CompSrc::Reg(self.emit(c, ctx)),
                            },
                        };
                        Op::Load {
                            out,
                            slot,
                            row: Self::row_src(row, ctx),
                            comp,
                        }
                    }
                    PNode::Table { table, row } => Op::TableLoad {
                        out,
                        table,
                        row: Self::row_src(row, ctx),
                    },
                    PNode::Var(v) => Op::Iota {
                        out,
                        scope: ctx[ctx.len() - 1 - v as usize],
                    },
                    PNode::CurRow => Op::CurRow { out },
                    PNode::Un(f, a) => Op::Un {
                        out,
                        f,
                        a: self.emit(a, ctx),
                    },
                    PNode::Powi(a, n) => Op::Powi {
                        out,
                        a: self.emit(a, ctx),
                        n,
                    },
                    PNode::Bin(f, a, b) => {
                        let a = self.emit(a, ctx);
                        let b = self.emit(b, ctx);
                        Op::Bin { out, f, a, b }
                    }
                    PNode::Sel(c, a, b) => {
                        let c = self.emit(c, ctx);
                        let a = self.emit(a, ctx);
                        let b = self.emit(b, ctx);
                        Op::Sel { out, c, a, b }
                    }
                    PNode::Red { .. } => unreachable!("handled above"),
                };
                self.push(place, op);
                out
            }
        };
        self.memo.insert(key, out);
        out
    }

    /// Emits scatter `index`: a loop over the batch (inside one over the
    /// components for a vector) adding its terms into its buffer.
    fn scatter(&mut self, index: u16) {
        let sc = &self.plan.scatters[index as usize];
        let (body, size) = (sc.body, sc.size);
        let comp = size.map(|size| {
            self.pass.scopes.push(ScopeDef {
                depth: 1,
                range: Some(Range::Feature(size)),
                items: Vec::new(),
            });
            (self.pass.scopes.len() - 1) as u16
        });
        let rows = self.pass.scopes.len() as u16;
        self.pass.scopes.push(ScopeDef {
            depth: comp.map_or(1, |_| 2),
            range: Some(Range::Batch),
            items: Vec::new(),
        });
        self.pass.coupled = true;
        let ctx: Vec<u16> = comp.into_iter().chain([rows]).collect();
        let fold = match self.plan.g.nodes[body as usize] {
            PNode::Bin(BFn::Mul, a, b) => Fold::Prod(self.emit(a, &ctx), self.emit(b, &ctx)),
            _ => Fold::Reg(self.emit(body, &ctx)),
        };
        let item = Item::Loop {
            scope: rows,
            kind: LoopKind::Scatter {
                target: index,
                fold,
                comp,
            },
        };
        match comp {
            Some(c) => {
                self.pass.scopes[c as usize].items.push(item);
                self.pass.scopes[0].items.push(Item::Loop {
                    scope: c,
                    kind: LoopKind::Store,
                });
            }
            None => self.pass.scopes[0].items.push(item),
        }
        self.pass.scatters.push(index);
    }

    /// Emits a gradient (or Hessian) output and its store.
    fn store(&mut self, o: &OutputDecl, index: u16, hessian: bool) {
        let vector = self.plan.inputs[o.slot as usize].size;
        match vector {
            None => {
                let reg = self.emit(o.root, &[]);
                self.push(
                    0,
                    Op::Store {
                        reg,
                        output: index,
                        hessian,
                        scope: None,
                    },
                );
            }
            Some(size) => {
                let scope = self.pass.scopes.len() as u16;
                self.pass.scopes.push(ScopeDef {
                    depth: 1,
                    range: Some(Range::Feature(size)),
                    items: Vec::new(),
                });
                let reg = self.emit(o.root, &[scope]);
                self.push(
                    scope,
                    Op::Store {
                        reg,
                        output: index,
                        hessian,
                        scope: Some(scope),
                    },
                );
                self.pass.scopes[0].items.push(Item::Loop {
                    scope,
                    kind: LoopKind::Store,
                });
            }
        }
    }
}

/// The registers an op reads.
pub(crate) fn op_reads(op: &Op) -> Vec<Reg> {
    match op {
        Op::Load {
            comp: CompSrc::Reg(r),
            ..
        } => vec![*r],
        Op::Un { a, .. } | Op::Powi { a, .. } => vec![*a],
        Op::Bin { a, b, .. } => vec![*a, *b],
        Op::Sel { c, a, b, .. } => vec![*c, *a, *b],
        Op::Store { reg, .. } => vec![*reg],
        Op::Softmax {
            x, cache, inv, lse, ..
        } => {
            let mut v = vec![*cache, *inv, *lse];
            if let SoftmaxX::Reg(r) = x {
                v.push(*r);
            }
            v
        }
        _ => Vec::new(),
    }
}

/// The registers a loop reads from inside it (what it folds and filters
/// by), at its end.
pub(crate) fn loop_reads(kind: &LoopKind) -> Vec<Reg> {
    match kind {
        LoopKind::Reduce { fold, filter, .. } => {
            let mut v = match fold {
                Fold::Reg(r) => vec![*r],
                Fold::Prod(a, b) => vec![*a, *b],
            };
            v.extend(*filter);
            v
        }
        LoopKind::Scatter { fold, .. } => match fold {
            Fold::Reg(r) => vec![*r],
            Fold::Prod(a, b) => vec![*a, *b],
        },
        LoopKind::Store => Vec::new(),
    }
}

/// The registers a loop keeps across its tiles (written at its start,
/// final at its end).
pub(crate) fn loop_state(kind: &LoopKind) -> Vec<Reg> {
    match kind {
        LoopKind::Reduce {
            acc,
            aux,
            aux2,
            cache,
            ..
        } => [*acc, *aux, *aux2].into_iter().chain(*cache).collect(),
        LoopKind::Store | LoopKind::Scatter { .. } => Vec::new(),
    }
}

/// The register an op writes.
pub(crate) fn op_writes(op: &Op) -> Option<Reg> {
    match op {
        Op::Const { out, .. }
        | Op::Uniform { out, .. }
        | Op::Iota { out, .. }
        | Op::CurRow { out }
        | Op::Load { out, .. }
        | Op::TableLoad { out, .. }
        | Op::Un { out, .. }
        | Op::Bin { out, .. }
        | Op::Sel { out, .. }
        | Op::Powi { out, .. }
        | Op::Softmax { out, .. } => Some(*out),
        Op::Store { .. } => None,
    }
}

impl Plan {
    /// Whether input values are checked block by block, just before (or,
    /// in generated code, while) each block is computed, rather than all
    /// before any work: when the plan is one pass that reads only its own
    /// block's rows, so no block reads a row that has not been checked.
    pub(crate) fn checks_per_block(&self) -> bool {
        self.passes.len() == 1 && !self.passes[0].coupled && self.tables.is_empty()
    }

    /// Evaluates a scalar expression over uniforms (the objective over its
    /// reductions) in f64, without allocating.
    pub(crate) fn scalar(&self, p: P, uniform: &dyn Fn(u16) -> f64) -> f64 {
        let ev = |x: P| self.scalar(x, uniform);
        match &self.g.nodes[p as usize] {
            PNode::Num(v) => v.0,
            PNode::Uniform(u) => uniform(*u),
            PNode::Un(f, a) => {
                let x = ev(*a);
                match f {
                    UFn::Neg => -x,
                    UFn::Recip => 1.0 / x,
                    UFn::Not => (x == 0.0) as u8 as f64,
                    UFn::F(func) => func.eval(x),
                }
            }
            PNode::Powi(a, k) => ev(*a).powi(*k),
            PNode::Bin(f, a, b) => {
                let (x, y) = (ev(*a), ev(*b));
                match f {
                    BFn::Add => x + y,
                    BFn::Sub => x - y,
                    BFn::Mul => x * y,
                    BFn::Div => x / y,
                    BFn::Pow => crate::ir::eval::pow(x, y),
                    BFn::Max => x.max(y),
                    BFn::Min => x.min(y),
                    BFn::Cmp(c) => c.holds(x, y) as u8 as f64,
                    BFn::And => (x != 0.0 && y != 0.0) as u8 as f64,
                    BFn::Or => (x != 0.0 || y != 0.0) as u8 as f64,
                }
            }
            PNode::Sel(c, a, b) => {
                if ev(*c) != 0.0 {
                    ev(*a)
                } else {
                    ev(*b)
                }
            }
            // The objective is over reductions, sizes and constants only.
            _ => f64::NAN,
        }
    }

    /// The passes as text: one instruction per line, loops indented.
    pub(crate) fn describe(&self) -> String {
        let mut s = String::new();
        for (i, p) in self.passes.iter().enumerate() {
            s.push_str(&format!(
                "pass {i}{}:\n",
                if p.coupled { " (coupled)" } else { "" }
            ));
            self.describe_scope(p, 0, 1, &mut s);
            for (r, i) in &p.sums {
                s.push_str(&format!("  sum r{r} into R{i}\n"));
            }
            for (r, t) in &p.tables {
                s.push_str(&format!("  store r{r} into table {t}\n"));
            }
        }
        for (i, sc) in self.scatters.iter().enumerate() {
            let name = self.slot_name((self.inputs.len() + i) as u16);
            s.push_str(&match sc.into {
                Some(o) => format!("{name}: first group in grad {o}'s array\n"),
                None => format!("{name}: two buffers\n"),
            });
        }
        s
    }

    /// An input slot's name for messages: a scatter's buffer is named
    /// after the gradient it feeds.
    pub(crate) fn slot_name(&self, slot: u16) -> String {
        match self.inputs.get(slot as usize) {
            Some(d) => d.name.clone(),
            None => {
                let i = slot as usize - self.inputs.len();
                format!("scatter {i} (for grad {})", self.scatters[i].pred)
            }
        }
    }

    fn describe_scope(&self, p: &Pass, scope: u16, indent: usize, s: &mut String) {
        let pad = "  ".repeat(indent);
        let reg = |r: Reg| {
            let d = &p.regs[r as usize];
            let loops: Vec<String> = d.loops.iter().map(|l| format!("L{l}")).collect();
            format!(
                "r{r}[{}{}]",
                loops.join(","),
                if d.rowdep { ";rows" } else { "" }
            )
        };
        for item in &p.scopes[scope as usize].items {
            match item {
                Item::Op(op) => {
                    let text = match op {
                        Op::Const { out, v } => format!("{} = {v}", reg(*out)),
                        Op::Uniform { out, u } => {
                            format!("{} = uniform {:?}", reg(*out), self.uniforms[*u as usize])
                        }
                        Op::Iota { out, scope } => format!("{} = index L{scope}", reg(*out)),
                        Op::CurRow { out } => format!("{} = row", reg(*out)),
                        Op::Load {
                            out,
                            slot,
                            row,
                            comp,
                        } => format!(
                            "{} = load {} row {row:?} comp {comp:?}",
                            reg(*out),
                            self.slot_name(*slot)
                        ),
                        Op::TableLoad { out, table, row } => {
                            format!("{} = table {table} row {row:?}", reg(*out))
                        }
                        Op::Un { out, f, a } => format!("{} = {f:?} {}", reg(*out), reg(*a)),
                        Op::Bin { out, f, a, b } => {
                            format!("{} = {f:?} {} {}", reg(*out), reg(*a), reg(*b))
                        }
                        Op::Sel { out, c, a, b } => {
                            format!(
                                "{} = if {} then {} else {}",
                                reg(*out),
                                reg(*c),
                                reg(*a),
                                reg(*b)
                            )
                        }
                        Op::Powi { out, a, n } => format!("{} = {} ^ {n}", reg(*out), reg(*a)),
                        Op::Softmax {
                            out,
                            x,
                            cache,
                            inv,
                            lse,
                            ..
                        } => format!(
                            "{} = softmax {} * {} (else Exp({} - {}))",
                            reg(*out),
                            reg(*cache),
                            reg(*inv),
                            match x {
                                SoftmaxX::Reg(r) => reg(*r),
                                SoftmaxX::Input(i) => self.inputs[*i as usize].name.clone(),
                            },
                            reg(*lse)
                        ),
                        Op::Store {
                            reg: r,
                            output,
                            hessian,
                            ..
                        } => format!(
                            "store {} into {} {output}",
                            reg(*r),
                            if *hessian { "hessian" } else { "grad" }
                        ),
                    };
                    s.push_str(&format!("{pad}{text}\n"));
                }
                Item::Loop { scope: sc, kind } => {
                    let range = p.scopes[*sc as usize].range;
                    match kind {
                        LoopKind::Reduce {
                            op,
                            acc,
                            fold,
                            filter,
                            cache,
                            ..
                        } => {
                            s.push_str(&format!(
                                "{pad}{} = {} over L{sc} {range:?} of {}{}{}:\n",
                                reg(*acc),
                                op.name(),
                                match fold {
                                    Fold::Reg(r) => reg(*r),
                                    Fold::Prod(a, b) => format!("{} * {}", reg(*a), reg(*b)),
                                },
                                filter.map_or(String::new(), |f| format!(" where {}", reg(f))),
                                cache.map_or(String::new(), |c| format!(
                                    ", exps kept in {}",
                                    reg(c)
                                ))
                            ));
                        }
                        LoopKind::Store => s.push_str(&format!("{pad}for L{sc} {range:?}:\n")),
                        LoopKind::Scatter { target, fold, .. } => s.push_str(&format!(
                            "{pad}scatter {} over L{sc} {range:?} into rows of {}:\n",
                            match fold {
                                Fold::Reg(r) => reg(*r),
                                Fold::Prod(a, b) => format!("{} * {}", reg(*a), reg(*b)),
                            },
                            self.slot_name(self.inputs.len() as u16 + target)
                        )),
                    }
                    self.describe_scope(p, *sc, indent + 1, s);
                }
            }
        }
    }
}
