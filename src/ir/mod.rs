//! The expression IR: a hash-consed DAG in an arena.
//!
//! Nodes refer to their children by [`Id`]; a child is always created
//! before its parent, so the arena is in topological order and every walk
//! can be a loop over ids instead of a recursion. Nodes are interned: asking
//! for a node that exists returns its id, which makes common subexpressions
//! shared for free and keeps differentiation from blowing up.
//!
//! Constructors put expressions in canonical form as they are built:
//! sums and products are flattened and sorted, constants folded, like terms
//! (`2x + 3x = 5x`) and powers (`x · x⁻¹ = 1`) collected, and domain facts
//! applied (`y² = y` for a `{0, 1}` label). Division is `a · b⁻¹` and
//! subtraction `a + (-1)·b`, so one rule set covers all four operations.

use crate::hash::{HashMap, HashSet};
use std::collections::BTreeMap;
use std::fmt;

pub mod eval;
pub mod lower;

/// A node's index in its [`Graph`].
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Debug)]
pub struct Id(pub u32);

/// A float that can be hashed and compared exactly (by bits; `-0` is `0`).
#[derive(Clone, Copy, Debug)]
pub struct F64(pub f64);

impl PartialEq for F64 {
    fn eq(&self, other: &Self) -> bool {
        self.0.to_bits() == other.0.to_bits()
    }
}
impl Eq for F64 {}
impl std::hash::Hash for F64 {
    fn hash<H: std::hash::Hasher>(&self, h: &mut H) {
        self.0.to_bits().hash(h)
    }
}

/// Unary functions.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Debug)]
pub enum Func {
    /// `exp`
    Exp,
    /// `log`
    Log,
    /// `log1p`
    Log1p,
    /// `expm1`
    Expm1,
    /// `sqrt`
    Sqrt,
    /// `sigmoid`
    Sigmoid,
    /// `softplus`
    Softplus,
    /// `tanh`
    Tanh,
    /// `cosh`
    Cosh,
    /// `sinh` (appears in derivatives of `cosh`)
    Sinh,
    /// `abs`
    Abs,
    /// `sign`, with `sign(0) = 0`
    Sign,
    /// `relu`
    Relu,
}

impl Func {
    /// The name as written in the language.
    pub fn name(self) -> &'static str {
        match self {
            Func::Exp => "exp",
            Func::Log => "log",
            Func::Log1p => "log1p",
            Func::Expm1 => "expm1",
            Func::Sqrt => "sqrt",
            Func::Sigmoid => "sigmoid",
            Func::Softplus => "softplus",
            Func::Tanh => "tanh",
            Func::Cosh => "cosh",
            Func::Sinh => "sinh",
            Func::Abs => "abs",
            Func::Sign => "sign",
            Func::Relu => "relu",
        }
    }

    /// Looks a function up by its language name.
    pub fn from_name(name: &str) -> Option<Func> {
        use Func::*;
        [
            Exp, Log, Log1p, Expm1, Sqrt, Sigmoid, Softplus, Tanh, Cosh, Sinh, Abs, Sign, Relu,
        ]
        .into_iter()
        .find(|f| f.name() == name)
    }

    /// The function's value at `x`, with the language's conventions.
    pub fn eval(self, x: f64) -> f64 {
        match self {
            Func::Exp => x.exp(),
            Func::Log => x.ln(),
            Func::Log1p => x.ln_1p(),
            Func::Expm1 => x.exp_m1(),
            Func::Sqrt => x.sqrt(),
            Func::Sigmoid => {
                if x >= 0.0 {
                    1.0 / (1.0 + (-x).exp())
                } else {
                    let e = x.exp();
                    e / (1.0 + e)
                }
            }
            Func::Softplus => x.max(0.0) + (-x.abs()).exp().ln_1p(),
            Func::Tanh => x.tanh(),
            Func::Cosh => x.cosh(),
            Func::Sinh => x.sinh(),
            Func::Abs => x.abs(),
            Func::Sign => {
                if x > 0.0 {
                    1.0
                } else if x < 0.0 {
                    -1.0
                } else {
                    0.0
                }
            }
            Func::Relu => x.max(0.0),
        }
    }
}

/// Comparison operators of conditions.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Debug)]
pub enum Cmp {
    /// `==`
    Eq,
    /// `!=`
    Ne,
    /// `<`
    Lt,
    /// `<=`
    Le,
    /// `>`
    Gt,
    /// `>=`
    Ge,
}

impl Cmp {
    /// The operator as written.
    pub fn symbol(self) -> &'static str {
        match self {
            Cmp::Eq => "==",
            Cmp::Ne => "!=",
            Cmp::Lt => "<",
            Cmp::Le => "<=",
            Cmp::Gt => ">",
            Cmp::Ge => ">=",
        }
    }

    /// Whether `a op b` holds.
    pub fn holds(self, a: f64, b: f64) -> bool {
        match self {
            Cmp::Eq => a == b,
            Cmp::Ne => a != b,
            Cmp::Lt => a < b,
            Cmp::Le => a <= b,
            Cmp::Gt => a > b,
            Cmp::Ge => a >= b,
        }
    }
}

/// What a symbol stands for.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Debug)]
pub enum SymKind {
    /// A `data` input of the current row.
    Data,
    /// A `pred` of the current row.
    Pred,
    /// A `param` (one number for the whole batch).
    Param,
    /// A sample reduction of the objective (`R0`, `R1`, ...).
    Reduced,
    /// A size name used as a value (`sum[c](E) / C`).
    Size,
}

/// One IR node.
#[derive(Clone, PartialEq, Eq, Hash, Debug)]
pub enum Node {
    /// A number.
    Num(F64),
    /// A data, pred or param by name.
    Sym(SymKind, String),
    /// A sum of two or more terms, sorted.
    Add(Vec<Id>),
    /// A product of two or more factors, sorted, constant first.
    Mul(Vec<Id>),
    /// `base ^ exponent`
    Pow(Id, Id),
    /// A unary function.
    Func(Func, Id),
    /// `max(a, b)`
    Max(Id, Id),
    /// `min(a, b)`
    Min(Id, Id),
    /// `if cond then a else b`
    Select(Id, Id, Id),
    /// A comparison (a condition).
    Cmp(Cmp, Id, Id),
    /// `a and b`
    And(Id, Id),
    /// `a or b`
    Or(Id, Id),
    /// `not a`
    Not(Id),
    /// `const(a)`: `a`, with a zero derivative.
    StopGrad(Id),
    /// An index variable: a reduction's index, or the output index `k` of a
    /// vector pred's gradient.
    Idx(String),
    /// The current row `i` (in batch filters).
    Row,
    /// A data or pred in another row (`x@j`), or a vector's component
    /// (`z[c]`), or both. A scalar in the current row is a [`Node::Sym`].
    Elem {
        /// Data or pred.
        kind: SymKind,
        /// Its name.
        name: String,
        /// `Some(j)` for `x@j`.
        row: Option<String>,
        /// The component for a vector: an index, a class value or a number.
        comp: Option<Id>,
    },
    /// A reduction over an index: `sum[c: filter](body)` and friends.
    Reduce {
        /// Which reduction.
        op: RedOp,
        /// The bound index.
        idx: String,
        /// What it ranges over.
        range: IdxRange,
        /// Only indices where this condition holds take part.
        filter: Option<Id>,
        /// The reduced expression.
        body: Id,
    },
    /// Kronecker delta: 1 where `a == b`, else 0 (both index-valued).
    Delta(Id, Id),
}

/// The reductions over an index.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Debug)]
pub enum RedOp {
    /// `sum`
    Sum,
    /// `mean`
    Mean,
    /// `max`
    Max,
    /// `min`
    Min,
    /// `logsumexp`
    LogSumExp,
}

impl RedOp {
    /// The reducer as written.
    pub fn name(self) -> &'static str {
        match self {
            RedOp::Sum => "sum",
            RedOp::Mean => "mean",
            RedOp::Max => "max",
            RedOp::Min => "min",
            RedOp::LogSumExp => "logsumexp",
        }
    }
}

/// What an index ranges over.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Debug)]
pub enum IdxRange {
    /// The components `0..size` of a vector.
    Feature(crate::sema::types::Size),
    /// The rows of the batch.
    Batch,
}

impl Node {
    /// The node's children, in order.
    pub fn children(&self) -> Vec<Id> {
        match self {
            Node::Num(_) | Node::Sym(..) | Node::Idx(_) | Node::Row => Vec::new(),
            Node::Elem { comp, .. } => comp.iter().copied().collect(),
            Node::Reduce { filter, body, .. } => filter.iter().copied().chain([*body]).collect(),
            Node::Delta(a, b) => vec![*a, *b],
            Node::Add(xs) | Node::Mul(xs) => xs.clone(),
            Node::Pow(a, b)
            | Node::Max(a, b)
            | Node::Min(a, b)
            | Node::Cmp(_, a, b)
            | Node::And(a, b)
            | Node::Or(a, b) => {
                vec![*a, *b]
            }
            Node::Select(c, a, b) => vec![*c, *a, *b],
            Node::Func(_, a) | Node::Not(a) | Node::StopGrad(a) => vec![*a],
        }
    }
}

/// What the simplifier may assume about a data symbol.
#[derive(Clone, Debug, PartialEq)]
pub enum Fact {
    /// Takes only these values.
    Labels(Vec<f64>),
    /// Lies in `[lo, hi]` (ends may be open; only signs are used).
    Range(f64, f64),
    /// A vector whose components sum to 1 (one-hot or a probability row).
    Simplex,
}

/// An arena of interned nodes.
#[derive(Clone, Debug, Default)]
pub struct Graph {
    nodes: Vec<Node>,
    interned: HashMap<Node, Id>,
    /// The simplifier's cost of each node, once computed. A node never
    /// changes once interned, and its cost depends only on it and its
    /// children's, so it is computed once per graph rather than once per
    /// comparison of two rewrites.
    text_cost: Vec<Option<usize>>,
    /// The canonical sum and product of each operand list already built:
    /// both are pure functions of their operands (and the facts, which
    /// clear them), and the simplifier asks for the same ones many times
    /// over as it tries rewrites.
    sums: HashMap<Vec<Id>, Id>,
    products: HashMap<Vec<Id>, Id>,
    facts: BTreeMap<String, Fact>,
    ranges: BTreeMap<String, IdxRange>,
}

impl Graph {
    /// An empty graph.
    pub fn new() -> Self {
        Graph::default()
    }

    /// Records what the simplifier may assume about a symbol.
    pub fn set_fact(&mut self, name: &str, fact: Fact) {
        self.facts.insert(name.to_string(), fact);
        self.sums.clear();
        self.products.clear();
    }

    /// Records what an index name ranges over (names are unique per range).
    pub fn set_range(&mut self, name: &str, range: IdxRange) {
        self.ranges.insert(name.to_string(), range);
    }

    /// What an index name ranges over.
    pub fn range(&self, name: &str) -> Option<&IdxRange> {
        self.ranges.get(name)
    }

    /// The fact recorded for a symbol.
    pub fn fact(&self, name: &str) -> Option<&Fact> {
        self.facts.get(name)
    }

    /// The node behind an id.
    pub fn node(&self, id: Id) -> &Node {
        &self.nodes[id.0 as usize]
    }

    /// How many nodes the arena holds.
    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    /// Whether the arena is empty.
    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }

    /// The cost `simplify` recorded for a node, if any.
    pub(crate) fn known_cost(&self, id: Id) -> Option<usize> {
        self.text_cost.get(id.0 as usize).copied().flatten()
    }

    /// Records a node's cost for [`Graph::known_cost`].
    pub(crate) fn record_cost(&mut self, id: Id, cost: usize) {
        let i = id.0 as usize;
        if self.text_cost.len() <= i {
            self.text_cost.resize(self.nodes.len().max(i + 1), None);
        }
        self.text_cost[i] = Some(cost);
    }

    /// Interns a node exactly as given (no canonicalisation).
    pub fn intern(&mut self, n: Node) -> Id {
        if let Some(&id) = self.interned.get(&n) {
            return id;
        }
        let id = Id(self.nodes.len() as u32);
        self.nodes.push(n.clone());
        self.interned.insert(n, id);
        id
    }

    /// The distinct nodes reachable from `root`, children before parents
    /// (ascending ids): the order every bottom-up pass walks in.
    pub fn reachable(&self, root: Id) -> Vec<Id> {
        let mut seen = HashSet::default();
        let mut order = Vec::new();
        let mut stack = vec![root];
        while let Some(id) = stack.pop() {
            if seen.insert(id) {
                order.push(id);
                stack.extend(self.node(id).children());
            }
        }
        order.sort();
        order
    }

    /// The number of distinct nodes reachable from `root`.
    pub fn dag_size(&self, root: Id) -> usize {
        self.reachable(root).len()
    }

    /// The size of `root` written out as a tree (shared nodes counted at
    /// each use): what a reader sees, so what the simplifier minimises.
    pub fn tree_size(&self, root: Id) -> usize {
        // Children precede parents, so one pass in id order suffices.
        let mut size: HashMap<Id, usize> = HashMap::default();
        for id in self.reachable(root) {
            let s = self
                .node(id)
                .children()
                .iter()
                .fold(1usize, |acc, c| acc.saturating_add(size[c]));
            size.insert(id, s);
        }
        size[&root]
    }

    // ---------------------------------------------------------- leaves

    /// A number.
    pub fn num(&mut self, v: f64) -> Id {
        let v = if v == 0.0 { 0.0 } else { v };
        self.intern(Node::Num(F64(v)))
    }

    /// A symbol.
    pub fn sym(&mut self, kind: SymKind, name: &str) -> Id {
        self.intern(Node::Sym(kind, name.to_string()))
    }

    /// The value of a number node.
    pub fn as_num(&self, id: Id) -> Option<f64> {
        match self.node(id) {
            Node::Num(v) => Some(v.0),
            _ => None,
        }
    }

    fn labels(&self, id: Id) -> Option<&[f64]> {
        match self.node(id) {
            Node::Sym(SymKind::Data, n) => match self.facts.get(n) {
                Some(Fact::Labels(vs)) => Some(vs),
                _ => None,
            },
            _ => None,
        }
    }

    // ---------------------------------------------------------- arithmetic

    /// `a + b`
    pub fn add2(&mut self, a: Id, b: Id) -> Id {
        self.add(vec![a, b])
    }

    /// `a - b`
    pub fn sub(&mut self, a: Id, b: Id) -> Id {
        let nb = self.neg(b);
        self.add(vec![a, nb])
    }

    /// `-a`
    pub fn neg(&mut self, a: Id) -> Id {
        let m1 = self.num(-1.0);
        self.mul(vec![m1, a])
    }

    /// `a * b`
    pub fn mul2(&mut self, a: Id, b: Id) -> Id {
        self.mul(vec![a, b])
    }

    /// `a / b`
    pub fn div(&mut self, a: Id, b: Id) -> Id {
        let m1 = self.num(-1.0);
        let inv = self.pow(b, m1);
        self.mul(vec![a, inv])
    }

    /// Splits a term into its numeric coefficient and the rest.
    fn coeff(&mut self, t: Id) -> (f64, Id) {
        if let Some(v) = self.as_num(t) {
            let one = self.num(1.0);
            return (v, one);
        }
        if let Node::Mul(fs) = self.node(t).clone()
            && let Some(c) = self.as_num(fs[0])
        {
            let rest = if fs.len() == 2 {
                fs[1]
            } else {
                self.intern(Node::Mul(fs[1..].to_vec()))
            };
            return (c, rest);
        }
        (1.0, t)
    }

    /// A canonical sum.
    pub fn add(&mut self, terms: Vec<Id>) -> Id {
        if let Some(&id) = self.sums.get(&terms) {
            return id;
        }
        let id = self.add_uncached(&terms);
        self.sums.insert(terms, id);
        id
    }

    fn add_uncached(&mut self, terms: &[Id]) -> Id {
        let mut flat = Vec::new();
        for &t in terms {
            match self.node(t) {
                Node::Add(xs) => flat.extend(xs.iter().copied()),
                _ => flat.push(t),
            }
        }
        let mut constant = 0.0;
        let mut like: BTreeMap<Id, f64> = BTreeMap::new();
        for t in flat {
            if let Some(v) = self.as_num(t) {
                constant += v;
                continue;
            }
            let (c, rest) = self.coeff(t);
            *like.entry(rest).or_insert(0.0) += c;
        }
        let mut out = Vec::new();
        for (rest, c) in like {
            if c == 0.0 {
                continue;
            }
            let cn = self.num(c);
            out.push(self.mul(vec![cn, rest]));
        }
        if constant != 0.0 || out.is_empty() {
            out.push(self.num(constant));
        }
        if out.len() == 1 {
            return out[0];
        }
        out.sort();
        self.intern(Node::Add(out))
    }

    /// Splits a factor into base and exponent (`x^k`, or `x^1`).
    fn base_exp(&mut self, f: Id) -> (Id, Id) {
        match *self.node(f) {
            Node::Pow(b, e) => (b, e),
            _ => (f, self.num(1.0)),
        }
    }

    /// A canonical product.
    pub fn mul(&mut self, factors: Vec<Id>) -> Id {
        if let Some(&id) = self.products.get(&factors) {
            return id;
        }
        let id = self.mul_uncached(&factors);
        self.products.insert(factors, id);
        id
    }

    fn mul_uncached(&mut self, factors: &[Id]) -> Id {
        let mut flat = Vec::new();
        for &f in factors {
            match self.node(f) {
                Node::Mul(xs) => flat.extend(xs.iter().copied()),
                _ => flat.push(f),
            }
        }
        let mut constant = 1.0;
        let mut powers: BTreeMap<Id, Vec<Id>> = BTreeMap::new();
        for f in flat {
            if let Some(v) = self.as_num(f) {
                constant *= v;
                continue;
            }
            let (b, e) = self.base_exp(f);
            powers.entry(b).or_default().push(e);
        }
        if constant == 0.0 {
            return self.num(0.0);
        }
        let mut out = Vec::new();
        for (b, es) in powers {
            let e = self.add(es);
            let p = self.pow(b, e);
            if let Some(v) = self.as_num(p) {
                constant *= v;
            } else {
                match self.node(p) {
                    Node::Mul(xs) => {
                        for x in xs.clone() {
                            if let Some(v) = self.as_num(x) {
                                constant *= v;
                            } else {
                                out.push(x);
                            }
                        }
                    }
                    _ => out.push(p),
                }
            }
        }
        if constant == 0.0 {
            return self.num(0.0);
        }
        out.sort();
        if constant != 1.0 || out.is_empty() {
            out.insert(0, self.num(constant));
        }
        if out.len() == 1 {
            return out[0];
        }
        self.intern(Node::Mul(out))
    }

    /// A canonical power.
    pub fn pow(&mut self, b: Id, e: Id) -> Id {
        let ev = self.as_num(e);
        match ev {
            Some(0.0) => return self.num(1.0),
            Some(1.0) => return b,
            _ => {}
        }
        if let (Some(bv), Some(evv)) = (self.as_num(b), ev) {
            let v = eval::pow(bv, evv);
            if v.is_finite() {
                return self.num(v);
            }
        }
        if let Some(k) = ev {
            // A {0, 1} label to a positive power is itself.
            if k > 0.0
                && let Some(vs) = self.labels(b)
                && vs.iter().all(|v| *v == 0.0 || *v == 1.0)
            {
                return b;
            }
            let integer = k.fract() == 0.0;
            match self.node(b).clone() {
                // (x^a)^k = x^(a k) for integer k.
                Node::Pow(x, a) if integer => {
                    let ak = self.mul(vec![a, e]);
                    return self.pow(x, ak);
                }
                // (a b)^k = a^k b^k for integer k: lets factors cancel.
                Node::Mul(fs) if integer => {
                    let parts = fs.iter().map(|&f| self.pow(f, e)).collect();
                    return self.mul(parts);
                }
                _ => {}
            }
        }
        self.intern(Node::Pow(b, e))
    }

    /// A unary function, folded on numbers and simplified against its inverse.
    pub fn func(&mut self, f: Func, a: Id) -> Id {
        if let Some(v) = self.as_num(a) {
            let r = f.eval(v);
            if r.is_finite()
                && (r.fract() == 0.0 || matches!(f, Func::Abs | Func::Sign | Func::Relu))
            {
                return self.num(r);
            }
        }
        match (f, self.node(a).clone()) {
            (Func::Log, Node::Func(Func::Exp, x)) => return x,
            (Func::Exp, Node::Func(Func::Log, x)) => return x,
            (Func::Abs, Node::Func(Func::Abs, _)) => return a,
            (Func::Sign, Node::Func(Func::Sign, _)) => return a,
            _ => {}
        }
        self.intern(Node::Func(f, a))
    }

    /// `max(a, b)`
    pub fn max(&mut self, a: Id, b: Id) -> Id {
        self.extremum(a, b, true)
    }

    /// `min(a, b)`
    pub fn min(&mut self, a: Id, b: Id) -> Id {
        self.extremum(a, b, false)
    }

    /// `max` or `min`: equal operands and numbers fold.
    fn extremum(&mut self, a: Id, b: Id, is_max: bool) -> Id {
        if a == b {
            return a;
        }
        if let (Some(x), Some(y)) = (self.as_num(a), self.as_num(b)) {
            return self.num(if is_max { x.max(y) } else { x.min(y) });
        }
        self.intern(if is_max {
            Node::Max(a, b)
        } else {
            Node::Min(a, b)
        })
    }

    /// `if c then a else b`, with a constant condition decided and equal
    /// branches merged.
    pub fn select(&mut self, c: Id, a: Id, b: Id) -> Id {
        if a == b {
            return a;
        }
        if let Some(v) = self.as_bool(c) {
            return if v { a } else { b };
        }
        self.intern(Node::Select(c, a, b))
    }

    /// A comparison, decided when both sides are numbers.
    pub fn cmp(&mut self, op: Cmp, a: Id, b: Id) -> Id {
        self.intern(Node::Cmp(op, a, b))
    }

    /// `a and b`
    pub fn and(&mut self, a: Id, b: Id) -> Id {
        self.intern(Node::And(a, b))
    }

    /// `a or b`
    pub fn or(&mut self, a: Id, b: Id) -> Id {
        self.intern(Node::Or(a, b))
    }

    /// `not a`
    pub fn not(&mut self, a: Id) -> Id {
        self.intern(Node::Not(a))
    }

    /// `const(a)`
    pub fn stop_grad(&mut self, a: Id) -> Id {
        if self.as_num(a).is_some() {
            return a;
        }
        self.intern(Node::StopGrad(a))
    }

    /// An index variable.
    pub fn idx(&mut self, name: &str) -> Id {
        self.intern(Node::Idx(name.to_string()))
    }

    /// The current row `i`.
    pub fn row(&mut self) -> Id {
        self.intern(Node::Row)
    }

    /// A data or pred at a row and component; a scalar of the current row
    /// is the plain symbol, so each value has one form.
    pub fn elem(&mut self, kind: SymKind, name: &str, row: Option<&str>, comp: Option<Id>) -> Id {
        if row.is_none() && comp.is_none() {
            return self.sym(kind, name);
        }
        self.intern(Node::Elem {
            kind,
            name: name.to_string(),
            row: row.map(str::to_string),
            comp,
        })
    }

    /// A reduction, canonical: a sum of zero is zero; factors that do not
    /// depend on the index come out of a sum; a Kronecker delta on the
    /// index contracts it (`Σ_c δ(c, a) f(c) = f(a)`); and `Σ_c y[c] = 1`
    /// for a one-hot or probability vector `y`.
    pub fn reduce(
        &mut self,
        op: RedOp,
        idx: &str,
        range: IdxRange,
        filter: Option<Id>,
        body: Id,
    ) -> Id {
        if op == RedOp::Sum && self.as_num(body) == Some(0.0) {
            return body;
        }
        if let Some(f) = filter
            && self.as_bool(f) == Some(true)
        {
            return self.reduce(op, idx, range, None, body);
        }
        if op == RedOp::Sum && filter.is_none() {
            let me = self.idx(idx);
            let factors = match self.node(body) {
                Node::Mul(fs) => fs.clone(),
                _ => vec![body],
            };
            // Contract a delta on the index.
            for (k, &f) in factors.iter().enumerate() {
                if let Node::Delta(a, b) = *self.node(f) {
                    let other = if a == me {
                        Some(b)
                    } else if b == me {
                        Some(a)
                    } else {
                        None
                    };
                    if let Some(other) = other
                        && !self.free_indices(other).contains(idx)
                    {
                        let rest: Vec<Id> = factors
                            .iter()
                            .enumerate()
                            .filter(|(j, _)| *j != k)
                            .map(|(_, h)| *h)
                            .collect();
                        let rest = self.mul(rest);
                        return self.subst(rest, idx, other);
                    }
                }
            }
            // A sum of a constant over the components of a vector of size C
            // is C times it.
            if !self.free_indices(body).contains(idx)
                && let IdxRange::Feature(size) = &range
            {
                let c = match size {
                    crate::sema::types::Size::Lit(n) => self.num(*n as f64),
                    crate::sema::types::Size::Name(n) => self.sym(SymKind::Size, n),
                };
                return self.mul2(c, body);
            }
            // Pull out what does not depend on the index.
            let (outside, inside): (Vec<Id>, Vec<Id>) = factors
                .iter()
                .partition(|&&f| !self.free_indices(f).contains(idx));
            if !outside.is_empty() && !inside.is_empty() {
                let inner_body = self.mul(inside);
                let inner = self.reduce(op, idx, range, None, inner_body);
                let mut all = outside;
                all.push(inner);
                return self.mul(all);
            }
            if let Node::Elem {
                name,
                comp: Some(c),
                ..
            } = self.node(body)
                && *c == me
                && matches!(self.facts.get(name), Some(Fact::Simplex))
            {
                return self.num(1.0);
            }
        }
        self.intern(Node::Reduce {
            op,
            idx: idx.to_string(),
            range,
            filter,
            body,
        })
    }

    /// `id` with index `name` replaced by the node `with`; reductions that
    /// bind `name` themselves are left alone.
    pub fn subst(&mut self, id: Id, name: &str, with: Id) -> Id {
        let mut memo = HashMap::default();
        let bound_here = |n: &Node| matches!(n, Node::Reduce { idx, .. } if idx == name);
        self.rewrite(
            id,
            &mut memo,
            None,
            &mut |n| match n {
                Node::Idx(x) if x == name => Some(with),
                _ => None,
            },
            &bound_here,
        )
    }

    /// `id` with the symbol `name` of `kind` (on the current row) replaced
    /// by the node `with`, which may itself mention the symbol: export puts a
    /// booster's link function in front of a pred this way.
    pub fn replace_sym(&mut self, id: Id, kind: SymKind, name: &str, with: Id) -> Id {
        let mut memo = HashMap::default();
        self.rewrite(
            id,
            &mut memo,
            None,
            &mut |n| match n {
                Node::Sym(k, x) if *k == kind && x == name => Some(with),
                _ => None,
            },
            &|_| false,
        )
    }

    /// `id` with the roles of the current row and batch index `j` swapped:
    /// `x` ↔ `x@j`, `i` ↔ `j`. Used to turn "row i's loss, differentiated
    /// through row j" into a contribution to the current row's gradient.
    pub fn swap_rows(&mut self, id: Id, j: &str) -> Id {
        // A reduction inside that binds `j` itself is renamed first, so that
        // the swapped expression can still say "row j" inside it.
        let id = self.rename_inner_binders(id, j);
        let row = self.row();
        let jj = self.idx(j);
        let mut memo = HashMap::default();
        self.rewrite(
            id,
            &mut memo,
            Some(j),
            &mut |n| match n {
                Node::Row => Some(jj),
                Node::Idx(x) if x == j => Some(row),
                _ => None,
            },
            &|_| false,
        )
    }

    /// Renames every reduction inside `id` that binds `j` to a fresh name.
    fn rename_inner_binders(&mut self, id: Id, j: &str) -> Id {
        let mut stack = vec![id];
        let mut seen = HashSet::default();
        let mut found = false;
        while let Some(x) = stack.pop() {
            if seen.insert(x) {
                if matches!(self.node(x), Node::Reduce { idx, .. } if idx == j) {
                    found = true;
                    break;
                }
                stack.extend(self.node(x).children());
            }
        }
        if !found {
            return id;
        }
        let range = self.range(j).cloned().unwrap_or(IdxRange::Batch);
        let mut k = 2;
        let fresh = loop {
            let name = format!("{j}_{k}");
            if self.range(&name).is_none() {
                break name;
            }
            k += 1;
        };
        self.set_range(&fresh, range);
        let mut memo = HashMap::default();
        self.rename_rec(id, j, &fresh, false, &mut memo)
    }

    /// Renames index `old` to `new` inside reductions binding `old` (and,
    /// once inside one, every use of `old`).
    fn rename_rec(
        &mut self,
        id: Id,
        old: &str,
        new: &str,
        inside: bool,
        memo: &mut HashMap<(Id, bool), Id>,
    ) -> Id {
        if let Some(&r) = memo.get(&(id, inside)) {
            return r;
        }
        let out = match self.node(id).clone() {
            Node::Reduce {
                op,
                idx,
                range,
                filter,
                body,
            } if idx == old => {
                let filter = filter.map(|f| self.rename_rec(f, old, new, true, memo));
                let body = self.rename_rec(body, old, new, true, memo);
                self.reduce(op, new, range, filter, body)
            }
            Node::Idx(x) if inside && x == old => self.idx(new),
            Node::Elem {
                kind,
                name,
                row,
                comp,
            } => {
                let comp = comp.map(|c| self.rename_rec(c, old, new, inside, memo));
                let row = match row {
                    Some(r) if inside && r == old => Some(new.to_string()),
                    r => r,
                };
                self.elem(kind, &name, row.as_deref(), comp)
            }
            n if n.children().is_empty() => id,
            _ => {
                let mut local = HashMap::default();
                let changed: Vec<(Id, Id)> = self
                    .node(id)
                    .children()
                    .into_iter()
                    .map(|c| (c, self.rename_rec(c, old, new, inside, memo)))
                    .collect();
                for (c, r) in changed {
                    local.insert(c, r);
                }
                self.rewrite(id, &mut local, None, &mut |_| None, &|_| false)
            }
        };
        memo.insert((id, inside), out);
        out
    }

    /// Rebuilds `id` bottom-up through the canonical constructors, letting
    /// `leaf` replace nodes first; with `swap = Some(j)`, elements of the
    /// current row and of row `j` trade places.
    fn rewrite(
        &mut self,
        id: Id,
        memo: &mut HashMap<Id, Id>,
        swap: Option<&str>,
        leaf: &mut dyn FnMut(&Node) -> Option<Id>,
        shielded: &dyn Fn(&Node) -> bool,
    ) -> Id {
        if let Some(&r) = memo.get(&id) {
            return r;
        }
        let node = self.node(id).clone();
        // A reduction binding the name being replaced hides it: no capture.
        if shielded(&node) {
            return id;
        }
        if let Some(r) = leaf(&node) {
            memo.insert(id, r);
            return r;
        }
        let mut c = |g: &mut Graph, x: Id| g.rewrite(x, memo, swap, leaf, shielded);
        let out = match node {
            Node::Num(_) | Node::Idx(_) | Node::Row => id,
            Node::Sym(kind, name) => match (swap, kind) {
                (Some(j), SymKind::Data | SymKind::Pred) => self.elem(kind, &name, Some(j), None),
                _ => id,
            },
            Node::Elem {
                kind,
                name,
                row,
                comp,
            } => {
                let comp = comp.map(|x| c(self, x));
                let row = match (swap, row) {
                    (Some(j), None) => Some(j.to_string()),
                    (Some(j), Some(r)) if r == j => None,
                    (_, r) => r,
                };
                self.elem(kind, &name, row.as_deref(), comp)
            }
            Node::Add(xs) => {
                let xs = xs.iter().map(|&x| c(self, x)).collect();
                self.add(xs)
            }
            Node::Mul(fs) => {
                let fs = fs.iter().map(|&x| c(self, x)).collect();
                self.mul(fs)
            }
            Node::Pow(b, e) => {
                let (b, e) = (c(self, b), c(self, e));
                self.pow(b, e)
            }
            Node::Func(f, a) => {
                let a = c(self, a);
                self.func(f, a)
            }
            Node::Max(a, b) => {
                let (a, b) = (c(self, a), c(self, b));
                self.max(a, b)
            }
            Node::Min(a, b) => {
                let (a, b) = (c(self, a), c(self, b));
                self.min(a, b)
            }
            Node::Select(k, a, b) => {
                let (k, a, b) = (c(self, k), c(self, a), c(self, b));
                self.select(k, a, b)
            }
            Node::Cmp(op, a, b) => {
                let (a, b) = (c(self, a), c(self, b));
                self.cmp(op, a, b)
            }
            Node::And(a, b) => {
                let (a, b) = (c(self, a), c(self, b));
                self.and(a, b)
            }
            Node::Or(a, b) => {
                let (a, b) = (c(self, a), c(self, b));
                self.or(a, b)
            }
            Node::Not(a) => {
                let a = c(self, a);
                self.not(a)
            }
            Node::StopGrad(a) => {
                let a = c(self, a);
                self.stop_grad(a)
            }
            Node::Delta(a, b) => {
                let (a, b) = (c(self, a), c(self, b));
                self.delta(a, b)
            }
            Node::Reduce {
                op,
                idx,
                range,
                filter,
                body,
            } => {
                let filter = filter.map(|f| c(self, f));
                let body = c(self, body);
                self.reduce(op, &idx, range, filter, body)
            }
        };
        memo.insert(id, out);
        out
    }

    /// Kronecker delta, decided when both sides are the same node or numbers.
    pub fn delta(&mut self, a: Id, b: Id) -> Id {
        if a == b {
            return self.num(1.0);
        }
        if let (Some(x), Some(y)) = (self.as_num(a), self.as_num(b)) {
            return self.num(if x == y { 1.0 } else { 0.0 });
        }
        let (a, b) = if a < b { (a, b) } else { (b, a) };
        self.intern(Node::Delta(a, b))
    }

    /// The index variables free in `id` (bound by no reduction inside it).
    pub fn free_indices(&self, id: Id) -> std::collections::BTreeSet<String> {
        let mut memo: HashMap<Id, std::collections::BTreeSet<String>> = HashMap::default();
        self.free_memo(id, &mut memo)
    }

    fn free_memo(
        &self,
        id: Id,
        memo: &mut HashMap<Id, std::collections::BTreeSet<String>>,
    ) -> std::collections::BTreeSet<String> {
        if let Some(f) = memo.get(&id) {
            return f.clone();
        }
        let mut out = std::collections::BTreeSet::new();
        match self.node(id) {
            Node::Idx(n) => {
                out.insert(n.clone());
            }
            Node::Elem { row, comp, .. } => {
                if let Some(j) = row {
                    out.insert(j.clone());
                }
                if let Some(c) = comp {
                    out.extend(self.free_memo(*c, memo));
                }
            }
            Node::Reduce {
                idx, filter, body, ..
            } => {
                out.extend(self.free_memo(*body, memo));
                if let Some(f) = filter {
                    out.extend(self.free_memo(*f, memo));
                }
                out.remove(idx);
            }
            n => {
                for c in n.children() {
                    out.extend(self.free_memo(c, memo));
                }
            }
        }
        memo.insert(id, out.clone());
        out
    }

    /// A condition's value when it is decided by numbers alone.
    pub fn as_bool(&self, c: Id) -> Option<bool> {
        match *self.node(c) {
            Node::Cmp(op, a, b) => Some(op.holds(self.as_num(a)?, self.as_num(b)?)),
            Node::And(a, b) => Some(self.as_bool(a)? && self.as_bool(b)?),
            Node::Or(a, b) => Some(self.as_bool(a)? || self.as_bool(b)?),
            Node::Not(a) => Some(!self.as_bool(a)?),
            _ => None,
        }
    }
}

impl fmt::Display for Id {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "%{}", self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sums_collect_like_terms_and_fold_constants() {
        let mut g = Graph::new();
        let x = g.sym(SymKind::Pred, "x");
        let two = g.num(2.0);
        let three = g.num(3.0);
        let a = g.mul2(two, x);
        let b = g.mul2(three, x);
        let s = g.add(vec![a, b, two, three]);
        let five = g.num(5.0);
        let fx = g.mul2(five, x);
        let expected = g.add2(fx, five);
        assert_eq!(s, expected);
        assert_eq!(g.sub(x, x), g.num(0.0));
    }

    #[test]
    fn products_collect_powers_and_cancel() {
        let mut g = Graph::new();
        let x = g.sym(SymKind::Pred, "x");
        let y = g.sym(SymKind::Data, "y");
        let xy = g.mul2(x, y);
        let back = g.div(xy, x);
        assert_eq!(back, y);
        let xx = g.mul2(x, x);
        let two = g.num(2.0);
        assert_eq!(xx, g.pow(x, two));
    }

    #[test]
    fn zero_one_labels_are_idempotent_under_powers() {
        let mut g = Graph::new();
        g.set_fact("y", Fact::Labels(vec![0.0, 1.0]));
        let y = g.sym(SymKind::Data, "y");
        assert_eq!(g.mul2(y, y), y);
    }

    #[test]
    fn interning_shares_equal_nodes() {
        let mut g = Graph::new();
        let x = g.sym(SymKind::Pred, "x");
        let a = g.func(Func::Sigmoid, x);
        let n = g.len();
        let b = g.func(Func::Sigmoid, x);
        assert_eq!(a, b);
        assert_eq!(g.len(), n);
    }
}
