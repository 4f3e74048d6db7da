//! The surface syntax tree of a `.loss` file.
//!
//! Every node carries the [`Span`] of the text it came from (a parent's span
//! covers its children), so every later stage can point at the source.
//! [`Spec::to_sexpr`] prints the tree compactly for snapshot tests.

use crate::span::{SourceFile, Span};
use std::fmt::Write;

/// A name as written, with its place.
#[derive(Clone, Debug, PartialEq)]
pub struct Ident {
    /// The name.
    pub name: String,
    /// Where it is written.
    pub span: Span,
}

/// A parsed file: its statements in source order.
#[derive(Clone, Debug, PartialEq)]
pub struct Spec {
    /// The statements, in source order.
    pub stmts: Vec<Stmt>,
    /// The whole file.
    pub span: Span,
}

/// One statement with its span.
#[derive(Clone, Debug, PartialEq)]
pub struct Stmt {
    /// What the statement is.
    pub kind: StmtKind,
    /// From its keyword to its last token.
    pub span: Span,
}

/// The statements of the language.
#[derive(Clone, Debug, PartialEq)]
pub enum StmtKind {
    /// `loss NAME`
    Loss(Ident),
    /// `task KIND`
    Task(Ident),
    /// `data NAME : TYPE ["desc"]`
    Data(Decl),
    /// `pred NAME : TYPE ["desc"]`
    Pred(Decl),
    /// `param NAME = NUMBER [in RANGE] ["desc"]`
    Param(ParamDecl),
    /// `cost NAME = NUMBER, ...`
    Cost(Vec<CostItem>),
    /// `let NAME = EXPR`
    Let(Ident, Expr),
    /// `def NAME(ARGS) = EXPR`
    Def(Def),
    /// `minimize EXPR`
    Minimize(Expr),
    /// `expect [not] PROPERTY [for NAME]`
    Expect(Expect),
}

/// A `data` or `pred` declaration.
#[derive(Clone, Debug, PartialEq)]
pub struct Decl {
    /// The declared name.
    pub name: Ident,
    /// Its type (domain and shape).
    pub ty: TypeExpr,
    /// The optional description string.
    pub desc: Option<String>,
}

/// A type as written: `real [0, 1]`, `label {0, 1}`, `vector [D]`.
#[derive(Clone, Debug, PartialEq)]
pub struct TypeExpr {
    /// The type's name (`real`, `prob`, ...), checked by sema.
    pub name: Ident,
    /// The bracketed argument, if any.
    pub arg: Option<TypeArg>,
    /// The whole type.
    pub span: Span,
}

/// The argument of a type.
#[derive(Clone, Debug, PartialEq)]
pub enum TypeArg {
    /// `[a, b]`, `(a, b)`, ...
    Interval(Interval),
    /// `{v1, v2, ...}`
    Labels(Vec<Number>),
    /// `[C]` or `[10]`
    Size(SizeRef),
}

/// A number with its place.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Number {
    /// The value (`inf` is `f64::INFINITY`).
    pub value: f64,
    /// Where it is written.
    pub span: Span,
}

/// An interval with open or closed ends.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Interval {
    /// Lower bound.
    pub lo: Number,
    /// Upper bound.
    pub hi: Number,
    /// `[` rather than `(`.
    pub lo_closed: bool,
    /// `]` rather than `)`.
    pub hi_closed: bool,
    /// From bracket to bracket.
    pub span: Span,
}

/// A vector size: a literal or a size name.
#[derive(Clone, Debug, PartialEq)]
pub enum SizeRef {
    /// `[10]`
    Lit(u64, Span),
    /// `[C]`
    Name(Ident),
}

impl SizeRef {
    /// Where the size is written.
    pub fn span(&self) -> Span {
        match self {
            SizeRef::Lit(_, s) => *s,
            SizeRef::Name(i) => i.span,
        }
    }
}

/// A `param` declaration.
#[derive(Clone, Debug, PartialEq)]
pub struct ParamDecl {
    /// The name.
    pub name: Ident,
    /// The default value.
    pub value: Number,
    /// The allowed range, if declared.
    pub range: Option<Interval>,
    /// The optional description string.
    pub desc: Option<String>,
}

/// One `NAME = NUMBER` of a `cost` statement.
#[derive(Clone, Debug, PartialEq)]
pub struct CostItem {
    /// The cost's name (`fn`, `fp`, ...).
    pub name: Ident,
    /// Its value.
    pub value: Number,
}

/// A `def` statement.
#[derive(Clone, Debug, PartialEq)]
pub struct Def {
    /// The function's name.
    pub name: Ident,
    /// Its parameters.
    pub params: Vec<DefParam>,
    /// Its body.
    pub body: Expr,
}

/// One parameter of a `def`.
#[derive(Clone, Debug, PartialEq)]
pub struct DefParam {
    /// The name.
    pub name: Ident,
    /// The domain annotation, if any.
    pub ty: Option<TypeExpr>,
    /// The default value, if any.
    pub default: Option<Number>,
}

/// An `expect` statement.
#[derive(Clone, Debug, PartialEq)]
pub struct Expect {
    /// `expect not ...`
    pub negated: bool,
    /// The property's name.
    pub property: Ident,
    /// `= VALUE` or `= VALUE(NUMBER)`, as for `estimand = quantile(0.9)`.
    pub value: Option<(Ident, Option<Number>)>,
    /// `for NAME`
    pub target: Option<Ident>,
}

/// An expression with its span.
#[derive(Clone, Debug, PartialEq)]
pub struct Expr {
    /// What the expression is.
    pub kind: ExprKind,
    /// The text it came from.
    pub span: Span,
}

/// Unary operators.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum UnOp {
    /// `-x`
    Neg,
    /// `not c`
    Not,
}

/// Binary operators.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BinOp {
    /// `+`
    Add,
    /// `-`
    Sub,
    /// `*`
    Mul,
    /// `/`
    Div,
    /// `^`
    Pow,
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
    /// `and`
    And,
    /// `or`
    Or,
}

impl BinOp {
    /// The operator as written.
    pub fn symbol(self) -> &'static str {
        match self {
            BinOp::Add => "+",
            BinOp::Sub => "-",
            BinOp::Mul => "*",
            BinOp::Div => "/",
            BinOp::Pow => "^",
            BinOp::Eq => "==",
            BinOp::Ne => "!=",
            BinOp::Lt => "<",
            BinOp::Le => "<=",
            BinOp::Gt => ">",
            BinOp::Ge => ">=",
            BinOp::And => "and",
            BinOp::Or => "or",
        }
    }

    /// Comparisons produce conditions, not values.
    pub fn is_comparison(self) -> bool {
        matches!(
            self,
            BinOp::Eq | BinOp::Ne | BinOp::Lt | BinOp::Le | BinOp::Gt | BinOp::Ge
        )
    }

    /// `and` / `or` combine conditions.
    pub fn is_logical(self) -> bool {
        matches!(self, BinOp::And | BinOp::Or)
    }
}

/// The reducers that take an index: `sum[c](E)`, `logsumexp[j](E)`, ...
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reducer {
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

impl Reducer {
    /// The reducer as written.
    pub fn name(self) -> &'static str {
        match self {
            Reducer::Sum => "sum",
            Reducer::Mean => "mean",
            Reducer::Max => "max",
            Reducer::Min => "min",
            Reducer::LogSumExp => "logsumexp",
        }
    }
}

/// A call argument, positional or named.
#[derive(Clone, Debug, PartialEq)]
pub struct Arg {
    /// `name =` for a named argument.
    pub name: Option<Ident>,
    /// The value.
    pub value: Expr,
}

/// The expression forms.
#[derive(Clone, Debug, PartialEq)]
pub enum ExprKind {
    /// A number literal.
    Num(f64),
    /// A name: data, pred, param, let, size, index or def parameter.
    Var(String),
    /// `i`, the current row, valid in batch filters.
    Row,
    /// `-x`, `not c`
    Unary(UnOp, Box<Expr>),
    /// `a + b`, `a == b`, ...
    Binary(BinOp, Box<Expr>, Box<Expr>),
    /// `f(a, name = b)`: builtins, standard losses, defs, `mean`, `const`.
    Call(Ident, Vec<Arg>),
    /// `v[k]`
    Index(Box<Expr>, Box<Expr>),
    /// `x@j`
    At(Box<Expr>, Ident),
    /// `sum[c: filter](body)`
    Reduce {
        /// Which reduction.
        op: Reducer,
        /// The bound index.
        index: Ident,
        /// The optional filter condition.
        filter: Option<Box<Expr>>,
        /// The reduced expression.
        body: Box<Expr>,
    },
    /// `if c then a else b`
    If(Box<Expr>, Box<Expr>, Box<Expr>),
}

impl Spec {
    /// A compact, deterministic rendering of the tree: one line per
    /// statement with its `line:col` range and expressions as s-expressions.
    pub fn to_sexpr(&self, file: &SourceFile) -> String {
        let mut out = String::new();
        for stmt in &self.stmts {
            let (l0, c0) = file.line_col(stmt.span.start);
            let (l1, c1) = file.line_col(stmt.span.end);
            let _ = write!(out, "{l0}:{c0}-{l1}:{c1} ");
            stmt.kind.write_sexpr(&mut out);
            out.push('\n');
        }
        out
    }
}

impl StmtKind {
    fn write_sexpr(&self, out: &mut String) {
        let desc = |d: &Option<String>| d.as_ref().map(|d| format!(" {d:?}")).unwrap_or_default();
        match self {
            StmtKind::Loss(n) => {
                let _ = write!(out, "(loss {})", n.name);
            }
            StmtKind::Task(n) => {
                let _ = write!(out, "(task {})", n.name);
            }
            StmtKind::Data(d) | StmtKind::Pred(d) => {
                let kw = if matches!(self, StmtKind::Data(_)) {
                    "data"
                } else {
                    "pred"
                };
                let _ = write!(out, "({kw} {} {}{})", d.name.name, d.ty, desc(&d.desc));
            }
            StmtKind::Param(p) => {
                let range = p.range.map(|r| format!(" in {r}")).unwrap_or_default();
                let _ = write!(
                    out,
                    "(param {} {}{range}{})",
                    p.name.name,
                    fmt_num(p.value.value),
                    desc(&p.desc)
                );
            }
            StmtKind::Cost(items) => {
                out.push_str("(cost");
                for it in items {
                    let _ = write!(out, " ({} {})", it.name.name, fmt_num(it.value.value));
                }
                out.push(')');
            }
            StmtKind::Let(n, e) => {
                let _ = write!(out, "(let {} ", n.name);
                e.write_sexpr(out);
                out.push(')');
            }
            StmtKind::Def(d) => {
                let _ = write!(out, "(def {} (", d.name.name);
                for (k, p) in d.params.iter().enumerate() {
                    if k > 0 {
                        out.push(' ');
                    }
                    out.push_str(&p.name.name);
                    if let Some(t) = &p.ty {
                        let _ = write!(out, " : {t}");
                    }
                    if let Some(v) = p.default {
                        let _ = write!(out, " = {}", fmt_num(v.value));
                    }
                }
                out.push_str(") ");
                d.body.write_sexpr(out);
                out.push(')');
            }
            StmtKind::Minimize(e) => {
                out.push_str("(minimize ");
                e.write_sexpr(out);
                out.push(')');
            }
            StmtKind::Expect(x) => {
                out.push_str("(expect ");
                if x.negated {
                    out.push_str("not ");
                }
                out.push_str(&x.property.name);
                if let Some((v, arg)) = &x.value {
                    let _ = write!(out, " = {}", v.name);
                    if let Some(a) = arg {
                        let _ = write!(out, "({})", fmt_num(a.value));
                    }
                }
                if let Some(t) = &x.target {
                    let _ = write!(out, " for {}", t.name);
                }
                out.push(')');
            }
        }
    }
}

impl Expr {
    /// This expression as an s-expression, e.g. `(* 2 (call sigmoid z))`.
    pub fn to_sexpr(&self) -> String {
        let mut out = String::new();
        self.write_sexpr(&mut out);
        out
    }

    fn write_sexpr(&self, out: &mut String) {
        match &self.kind {
            ExprKind::Num(v) => out.push_str(&fmt_num(*v)),
            ExprKind::Var(n) => out.push_str(n),
            ExprKind::Row => out.push('i'),
            ExprKind::Unary(op, e) => {
                out.push_str(if *op == UnOp::Neg { "(neg " } else { "(not " });
                e.write_sexpr(out);
                out.push(')');
            }
            ExprKind::Binary(op, a, b) => {
                let _ = write!(out, "({} ", op.symbol());
                a.write_sexpr(out);
                out.push(' ');
                b.write_sexpr(out);
                out.push(')');
            }
            ExprKind::Call(f, args) => {
                let _ = write!(out, "({}", f.name);
                for a in args {
                    out.push(' ');
                    if let Some(n) = &a.name {
                        let _ = write!(out, "{}=", n.name);
                    }
                    a.value.write_sexpr(out);
                }
                out.push(')');
            }
            ExprKind::Index(v, k) => {
                out.push_str("(index ");
                v.write_sexpr(out);
                out.push(' ');
                k.write_sexpr(out);
                out.push(')');
            }
            ExprKind::At(e, j) => {
                out.push_str("(at ");
                e.write_sexpr(out);
                let _ = write!(out, " {})", j.name);
            }
            ExprKind::Reduce {
                op,
                index,
                filter,
                body,
            } => {
                let _ = write!(out, "({}[{}", op.name(), index.name);
                if let Some(f) = filter {
                    out.push_str(": ");
                    f.write_sexpr(out);
                }
                out.push_str("] ");
                body.write_sexpr(out);
                out.push(')');
            }
            ExprKind::If(c, a, b) => {
                out.push_str("(if ");
                c.write_sexpr(out);
                out.push(' ');
                a.write_sexpr(out);
                out.push(' ');
                b.write_sexpr(out);
                out.push(')');
            }
        }
    }
}

/// Formats a number the way the language writes it (`inf`, `-inf`, shortest
/// round-trip decimal otherwise).
pub fn fmt_num(v: f64) -> String {
    if v == f64::INFINITY {
        "inf".into()
    } else if v == f64::NEG_INFINITY {
        "-inf".into()
    } else if v != 0.0 && (v.abs() < 1e-5 || v.abs() >= 1e16) {
        // `1e-320` would otherwise print with 320 digits.
        format!("{v:e}")
    } else {
        format!("{v}")
    }
}

impl std::fmt::Display for Interval {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}{}, {}{}",
            if self.lo_closed { '[' } else { '(' },
            fmt_num(self.lo.value),
            fmt_num(self.hi.value),
            if self.hi_closed { ']' } else { ')' }
        )
    }
}

impl std::fmt::Display for TypeExpr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.name.name)?;
        match &self.arg {
            None => Ok(()),
            Some(TypeArg::Interval(i)) => write!(f, " {i}"),
            Some(TypeArg::Labels(ls)) => {
                let vs: Vec<String> = ls.iter().map(|n| fmt_num(n.value)).collect();
                write!(f, " {{{}}}", vs.join(", "))
            }
            Some(TypeArg::Size(SizeRef::Lit(n, _))) => write!(f, " [{n}]"),
            Some(TypeArg::Size(SizeRef::Name(n))) => write!(f, " [{}]", n.name),
        }
    }
}
