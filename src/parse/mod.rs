//! Text to AST: the pest grammar in `grammar/loss.pest`, then a walk over
//! pest's pairs that builds [`crate::ast`] nodes, with operators resolved by
//! pest's Pratt parser.
//!
//! Each builder function quotes the grammar rule it handles. Syntax errors
//! become one [`Diagnostic`] (pest stops at the first), with pest's rule
//! names replaced by words a user knows.

use crate::ast::*;
use crate::diag::Diagnostic;
use crate::span::Span;
use pest::Parser;
use pest::iterators::{Pair, Pairs};
use pest::pratt_parser::{Assoc, Op, PrattParser};
use std::sync::OnceLock;

/// The generated parser stays private: its `Rule` names are an
/// implementation detail, never shown to users.
mod generated {
    #[derive(pest_derive::Parser)]
    #[grammar = "../grammar/loss.pest"]
    pub struct LossParser;
}
use generated::{LossParser, Rule};

/// Deeper bracket nesting than this is rejected before pest sees it: the
/// parser is recursive, and a hostile file must not overflow the stack.
pub const MAX_NESTING: usize = 64;

/// The most operators one expression may chain at one bracket level (the
/// Pratt parser recurses on right-associative and prefix operators).
pub const MAX_OPERATORS: usize = 256;

/// The deepest expression tree accepted; every later stage walks trees
/// recursively, so this bounds their stack use too.
pub const MAX_DEPTH: usize = 200;

/// Parses a whole `.loss` file.
///
/// Returns the AST, or every diagnostic found: a syntax error stops parsing,
/// while problems in literals (a number too large) are collected.
pub fn parse(src: &str) -> Result<Spec, Vec<Diagnostic>> {
    if let Some(d) = check_nesting(src) {
        return Err(vec![d]);
    }
    let mut pairs = parse_file(src).map_err(|e| vec![syntax_error(src, e)])?;
    let file = pairs.next().expect("the file rule always yields one pair");
    let mut b = Builder { diags: Vec::new() };
    let span = Span::from(file.as_span());
    let body = file.into_inner().find(|p| p.as_rule() == Rule::body);
    let stmts = body
        .into_iter()
        .flat_map(|p| p.into_inner())
        .map(|p| b.stmt(p))
        .collect();
    let spec = Spec { stmts, span };
    if b.diags.is_empty() {
        check_depth(&spec).map_or(Ok(spec), |d| Err(vec![d]))
    } else {
        Err(b.diags)
    }
}

/// Parses one expression (used to read printed derivatives back in, and by tests).
pub fn parse_expr(src: &str) -> Result<Expr, Vec<Diagnostic>> {
    if let Some(d) = check_nesting(src) {
        return Err(vec![d]);
    }
    let text = format!("loss x\nminimize {src}\n");
    let offset = "loss x\nminimize ".len();
    let shift = |mut d: Diagnostic| {
        d.span = d
            .span
            .map(|s| Span::new(s.start.saturating_sub(offset), s.end.saturating_sub(offset)));
        d
    };
    let spec = parse(&text).map_err(|ds| ds.into_iter().map(shift).collect::<Vec<_>>())?;
    if spec.stmts.len() != 2 {
        return Err(vec![
            Diagnostic::error("E0001", Span::new(0, src.len()), "expected one expression")
                .with_label("more than an expression"),
        ]);
    }
    match spec.stmts.into_iter().nth(1).map(|s| s.kind) {
        Some(StmtKind::Minimize(e)) => Ok(shift_expr(e, offset)),
        _ => Err(vec![Diagnostic::error(
            "E0001",
            Span::new(0, src.len()),
            "expected one expression",
        )]),
    }
}

fn shift_expr(mut e: Expr, by: usize) -> Expr {
    fn shift(s: &mut Span, by: usize) {
        s.start -= by;
        s.end -= by;
    }
    fn walk(e: &mut Expr, by: usize) {
        shift(&mut e.span, by);
        match &mut e.kind {
            ExprKind::Num(_) | ExprKind::Var(_) | ExprKind::Row => {}
            ExprKind::Unary(_, a) => walk(a, by),
            ExprKind::Binary(_, a, b) | ExprKind::Index(a, b) => {
                walk(a, by);
                walk(b, by);
            }
            ExprKind::Call(f, args) => {
                shift(&mut f.span, by);
                for a in args {
                    if let Some(n) = &mut a.name {
                        shift(&mut n.span, by);
                    }
                    walk(&mut a.value, by);
                }
            }
            ExprKind::At(a, j) => {
                walk(a, by);
                shift(&mut j.span, by);
            }
            ExprKind::Reduce {
                index,
                filter,
                body,
                ..
            } => {
                shift(&mut index.span, by);
                if let Some(f) = filter {
                    walk(f, by);
                }
                walk(body, by);
            }
            ExprKind::If(c, a, b) => {
                walk(c, by);
                walk(a, by);
                walk(b, by);
            }
        }
    }
    walk(&mut e, by);
    e
}

/// Runs the pest parser. The first attempt runs without pest's tracking of
/// expected tokens, which more than doubles parsing time; only a failed
/// parse is repeated with tracking on, to name the missing token. The flag
/// is global to pest, so a lock keeps a concurrent failure from turning it
/// off under another one (a concurrent success merely runs slower).
fn parse_file(src: &str) -> Result<Pairs<'_, Rule>, pest::error::Error<Rule>> {
    static DETAIL: std::sync::Mutex<()> = std::sync::Mutex::new(());
    LossParser::parse(Rule::file, src).or_else(|_| {
        let _guard = DETAIL
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        pest::set_error_detail(true);
        let detailed = LossParser::parse(Rule::file, src);
        pest::set_error_detail(false);
        detailed
    })
}

/// Rejects absurdly deep bracket nesting up front, with a located error.
fn check_nesting(src: &str) -> Option<Diagnostic> {
    let mut depth = 0usize;
    for (i, ch) in brackets(src) {
        if matches!(ch, '(' | '[' | '{') {
            depth += 1;
            if depth > MAX_NESTING {
                return Some(
                    Diagnostic::error(
                        "E0002",
                        Span::new(i, i + 1),
                        format!("brackets nested more than {MAX_NESTING} deep"),
                    )
                    .with_label("too deep")
                    .with_hint("split the expression into `let` bindings"),
                );
            }
        } else {
            depth = depth.saturating_sub(1);
        }
    }
    None
}

/// The brackets of `src` with their offsets, skipping comments and
/// description strings: the one scanner both the nesting limit and the
/// "never closed" hint use.
fn brackets(src: &str) -> impl Iterator<Item = (usize, char)> + '_ {
    let mut in_comment = false;
    let mut in_string = false;
    src.char_indices().filter(move |&(_, c)| {
        match c {
            '\n' => {
                in_comment = false;
                in_string = false;
            }
            _ if in_comment => {}
            '"' => in_string = !in_string,
            _ if in_string => {}
            '#' => in_comment = true,
            '(' | '[' | '{' | ')' | ']' | '}' => return true,
            _ => {}
        }
        false
    })
}

/// Rejects expression trees deeper than [`MAX_DEPTH`], measured without
/// recursion so the measurement itself cannot overflow.
fn check_depth(spec: &Spec) -> Option<Diagnostic> {
    let roots = spec.stmts.iter().filter_map(|s| match &s.kind {
        StmtKind::Let(_, e) | StmtKind::Minimize(e) => Some(e),
        StmtKind::Def(d) => Some(&d.body),
        _ => None,
    });
    for root in roots {
        let mut stack = vec![(root, 1usize)];
        while let Some((e, depth)) = stack.pop() {
            if depth > MAX_DEPTH {
                return Some(
                    Diagnostic::error(
                        "E0002",
                        root.span,
                        format!("expression nested more than {MAX_DEPTH} levels deep"),
                    )
                    .with_label("too deep")
                    .with_hint("split it into `let` bindings"),
                );
            }
            crate::sema::each_child(e, &mut |c| stack.push((c, depth + 1)));
        }
    }
    None
}

fn pratt() -> &'static PrattParser<Rule> {
    static PRATT: OnceLock<PrattParser<Rule>> = OnceLock::new();
    PRATT.get_or_init(|| {
        PrattParser::new()
            .op(Op::infix(Rule::or, Assoc::Left))
            .op(Op::infix(Rule::and, Assoc::Left))
            .op(Op::prefix(Rule::not))
            .op(Op::infix(Rule::eq, Assoc::Left)
                | Op::infix(Rule::ne, Assoc::Left)
                | Op::infix(Rule::lt, Assoc::Left)
                | Op::infix(Rule::le, Assoc::Left)
                | Op::infix(Rule::gt, Assoc::Left)
                | Op::infix(Rule::ge, Assoc::Left))
            .op(Op::infix(Rule::add, Assoc::Left) | Op::infix(Rule::sub, Assoc::Left))
            .op(Op::infix(Rule::mul, Assoc::Left) | Op::infix(Rule::div, Assoc::Left))
            .op(Op::prefix(Rule::neg))
            .op(Op::infix(Rule::pow, Assoc::Right))
            .op(Op::postfix(Rule::index) | Op::postfix(Rule::at))
    })
}

struct Builder {
    diags: Vec<Diagnostic>,
}

/// A pair's span without the whitespace and comments that pest's implicit
/// skipping leaves at its end when a trailing optional part is absent.
fn trimmed_span(p: &Pair<'_, Rule>) -> Span {
    let start = p.as_span().start();
    let mut text = p.as_str();
    loop {
        let trimmed = text.trim_end();
        let line_start = trimmed.rfind('\n').map_or(0, |i| i + 1);
        // A `#` outside a description string starts a comment.
        let mut in_string = false;
        let comment = trimmed[line_start..]
            .char_indices()
            .find_map(|(i, c)| match c {
                '"' => {
                    in_string = !in_string;
                    None
                }
                '#' if !in_string => Some(line_start + i),
                _ => None,
            });
        match comment {
            Some(at) => text = &trimmed[..at],
            None => {
                text = trimmed;
                break;
            }
        }
    }
    Span::new(start, start + text.len())
}

fn ident(p: Pair<'_, Rule>) -> Ident {
    Ident {
        name: p.as_str().to_string(),
        span: p.as_span().into(),
    }
}

/// Skips the keyword tokens, which carry no information.
fn significant<'i>(p: Pair<'i, Rule>) -> impl Iterator<Item = Pair<'i, Rule>> {
    use Rule::*;
    p.into_inner().filter(|q| {
        !matches!(
            q.as_rule(),
            kw_loss
                | kw_task
                | kw_data
                | kw_pred
                | kw_param
                | kw_cost
                | kw_let
                | kw_def
                | kw_minimize
                | kw_expect
                | kw_if
                | kw_then
                | kw_else
                | kw_and
                | kw_or
                | kw_not
                | kw_in
                | kw_for
        )
    })
}

impl Builder {
    fn stmt(&mut self, p: Pair<'_, Rule>) -> Stmt {
        let span = trimmed_span(&p);
        let rule = p.as_rule();
        let mut it = significant(p);
        let kind = match rule {
            // loss_stmt = { kw_loss ~ name }
            Rule::loss_stmt => StmtKind::Loss(ident(it.next().unwrap())),
            // task_stmt = { kw_task ~ name }
            Rule::task_stmt => StmtKind::Task(ident(it.next().unwrap())),
            // data_stmt = { kw_data ~ name ~ ":" ~ type_expr ~ description? }
            Rule::data_stmt | Rule::pred_stmt => {
                let name = ident(it.next().unwrap());
                let ty = self.type_expr(it.next().unwrap());
                let desc = it.next().map(description);
                let d = Decl { name, ty, desc };
                if rule == Rule::data_stmt {
                    StmtKind::Data(d)
                } else {
                    StmtKind::Pred(d)
                }
            }
            // param_stmt = { kw_param ~ name ~ "=" ~ signed_number ~ (kw_in ~ interval)? ~ description? }
            Rule::param_stmt => {
                let name = ident(it.next().unwrap());
                let value = self.number(it.next().unwrap());
                let mut range = None;
                let mut desc = None;
                for q in it {
                    match q.as_rule() {
                        Rule::interval => range = Some(self.interval(q)),
                        _ => desc = Some(description(q)),
                    }
                }
                StmtKind::Param(ParamDecl {
                    name,
                    value,
                    range,
                    desc,
                })
            }
            // cost_stmt = { kw_cost ~ cost_item ~ ("," ~ cost_item)* }
            Rule::cost_stmt => StmtKind::Cost(
                it.map(|item| {
                    let mut parts = item.into_inner();
                    let name = ident(parts.next().unwrap());
                    let value = self.number(parts.next().unwrap());
                    CostItem { name, value }
                })
                .collect(),
            ),
            // let_stmt = { kw_let ~ name ~ "=" ~ nl* ~ expr }
            Rule::let_stmt => {
                let name = ident(it.next().unwrap());
                StmtKind::Let(name, self.expr(it.next().unwrap()))
            }
            // def_stmt = { kw_def ~ name ~ "(" ~ (def_param ~ ("," ~ def_param)*)? ~ ")" ~ "=" ~ nl* ~ expr }
            Rule::def_stmt => {
                let name = ident(it.next().unwrap());
                let mut params = Vec::new();
                let mut body = None;
                for q in it {
                    match q.as_rule() {
                        Rule::def_param => params.push(self.def_param(q)),
                        _ => body = Some(self.expr(q)),
                    }
                }
                StmtKind::Def(Def {
                    name,
                    params,
                    body: body.unwrap(),
                })
            }
            // minimize_stmt = { kw_minimize ~ nl* ~ expr }
            Rule::minimize_stmt => StmtKind::Minimize(self.expr(it.next().unwrap())),
            // expect_stmt = { kw_expect ~ negation? ~ property ~ (kw_for ~ name)? }
            Rule::expect_stmt => {
                let mut negated = false;
                let mut property = None;
                let mut value = None;
                let mut target = None;
                for q in it {
                    match q.as_rule() {
                        Rule::negation => negated = true,
                        // property = { name ~ ("=" ~ name ~ ("(" ~ signed_number ~ ")")?)? }
                        Rule::property => {
                            let mut parts = q.into_inner();
                            property = Some(ident(parts.next().unwrap()));
                            if let Some(v) = parts.next() {
                                let arg = parts.next().map(|n| self.number(n));
                                value = Some((ident(v), arg));
                            }
                        }
                        _ => target = Some(ident(q)),
                    }
                }
                StmtKind::Expect(Expect {
                    negated,
                    property: property.unwrap(),
                    value,
                    target,
                })
            }
            other => unreachable!("the grammar has no statement {other:?}"),
        };
        Stmt { kind, span }
    }

    // def_param = { name ~ (":" ~ type_expr)? ~ ("=" ~ signed_number)? }
    fn def_param(&mut self, p: Pair<'_, Rule>) -> DefParam {
        let mut it = p.into_inner();
        let name = ident(it.next().unwrap());
        let mut ty = None;
        let mut default = None;
        for q in it {
            match q.as_rule() {
                Rule::type_expr => ty = Some(self.type_expr(q)),
                _ => default = Some(self.number(q)),
            }
        }
        DefParam { name, ty, default }
    }

    // type_expr = { name ~ (interval | label_set | size_arg)? }
    fn type_expr(&mut self, p: Pair<'_, Rule>) -> TypeExpr {
        let span = trimmed_span(&p);
        let mut it = p.into_inner();
        let name = ident(it.next().unwrap());
        let arg = it.next().map(|q| match q.as_rule() {
            Rule::interval => TypeArg::Interval(self.interval(q)),
            // label_set = { "{" ~ signed_number ~ ("," ~ signed_number)* ~ "}" }
            Rule::label_set => TypeArg::Labels(q.into_inner().map(|n| self.number(n)).collect()),
            // size_arg = { "[" ~ (integer | name) ~ "]" }
            _ => {
                let inner = q.into_inner().next().unwrap();
                let s: Span = inner.as_span().into();
                match inner.as_rule() {
                    Rule::integer => match inner.as_str().parse::<u64>() {
                        Ok(n) => TypeArg::Size(SizeRef::Lit(n, s)),
                        Err(_) => {
                            self.diags.push(
                                Diagnostic::error("E0003", s, "size is too large")
                                    .with_label("does not fit in 64 bits"),
                            );
                            TypeArg::Size(SizeRef::Lit(0, s))
                        }
                    },
                    _ => TypeArg::Size(SizeRef::Name(ident(inner))),
                }
            }
        });
        TypeExpr { name, arg, span }
    }

    // interval = { interval_open ~ signed_number ~ "," ~ signed_number ~ interval_close }
    fn interval(&mut self, p: Pair<'_, Rule>) -> Interval {
        let span = p.as_span().into();
        let mut it = p.into_inner();
        let lo_closed = it.next().unwrap().as_str() == "[";
        let lo = self.number(it.next().unwrap());
        let hi = self.number(it.next().unwrap());
        let hi_closed = it.next().unwrap().as_str() == "]";
        Interval {
            lo,
            hi,
            lo_closed,
            hi_closed,
            span,
        }
    }

    // number = @{ "inf" | digits ("." digits?)? exponent? | "." digits exponent? }
    // signed_number = @{ "-"? ~ number }
    fn number(&mut self, p: Pair<'_, Rule>) -> Number {
        let span: Span = p.as_span().into();
        let text: String = p.as_str().chars().filter(|c| !c.is_whitespace()).collect();
        let (neg, body) = match text.strip_prefix('-') {
            Some(b) => (true, b),
            None => (false, text.as_str()),
        };
        let mut value = if body == "inf" {
            f64::INFINITY
        } else {
            body.parse::<f64>().unwrap_or(f64::NAN)
        };
        if body != "inf" && !value.is_finite() {
            self.diags.push(
                Diagnostic::error(
                    "E0003",
                    span,
                    format!("number `{}` is too large", p.as_str()),
                )
                .with_label("overflows a 64-bit float")
                .with_hint("write `inf` for infinity"),
            );
            value = 0.0;
        }
        Number {
            value: if neg { -value } else { value },
            span,
        }
    }

    // expr = { prefix* ~ postfixed ~ (infix ~ nl* ~ prefix* ~ postfixed)* }
    fn expr(&mut self, p: Pair<'_, Rule>) -> Expr {
        let span: Span = p.as_span().into();
        let operators = p
            .clone()
            .into_inner()
            .filter(|q| is_operator(q.as_rule()))
            .count();
        if operators > MAX_OPERATORS {
            self.diags.push(
                Diagnostic::error(
                    "E0002",
                    span,
                    format!("more than {MAX_OPERATORS} operators in one expression"),
                )
                .with_label("too long")
                .with_hint("split it into `let` bindings"),
            );
            return Expr {
                kind: ExprKind::Num(0.0),
                span,
            };
        }
        self.pratt_expr(p.into_inner())
    }

    fn pratt_expr(&mut self, pairs: Pairs<'_, Rule>) -> Expr {
        // The Pratt parser's closures each need the builder; a RefCell-free
        // way is to collect literal diagnostics into a local and merge after.
        let cell = std::cell::RefCell::new(std::mem::take(&mut self.diags));
        let out = pratt()
            .map_primary(|p| {
                let mut b = Builder { diags: Vec::new() };
                let e = b.primary(p);
                cell.borrow_mut().extend(b.diags);
                e
            })
            .map_prefix(|op, e| {
                let span = Span::from(op.as_span()).to(e.span);
                let u = if op.as_rule() == Rule::neg {
                    UnOp::Neg
                } else {
                    UnOp::Not
                };
                Expr {
                    kind: ExprKind::Unary(u, Box::new(e)),
                    span,
                }
            })
            .map_postfix(|e, op| {
                let span = e.span.to(op.as_span().into());
                match op.as_rule() {
                    // index = { "[" ~ expr ~ "]" }
                    Rule::index => {
                        let mut b = Builder { diags: Vec::new() };
                        let k = b.expr(op.into_inner().next().unwrap());
                        cell.borrow_mut().extend(b.diags);
                        Expr {
                            kind: ExprKind::Index(Box::new(e), Box::new(k)),
                            span,
                        }
                    }
                    // at = { "@" ~ ident }
                    _ => Expr {
                        kind: ExprKind::At(Box::new(e), ident(op.into_inner().next().unwrap())),
                        span,
                    },
                }
            })
            .map_infix(|a, op, b| {
                let bop = match op.as_rule() {
                    Rule::add => BinOp::Add,
                    Rule::sub => BinOp::Sub,
                    Rule::mul => BinOp::Mul,
                    Rule::div => BinOp::Div,
                    Rule::pow => BinOp::Pow,
                    Rule::eq => BinOp::Eq,
                    Rule::ne => BinOp::Ne,
                    Rule::lt => BinOp::Lt,
                    Rule::le => BinOp::Le,
                    Rule::gt => BinOp::Gt,
                    Rule::ge => BinOp::Ge,
                    Rule::and => BinOp::And,
                    _ => BinOp::Or,
                };
                let span = a.span.to(b.span);
                Expr {
                    kind: ExprKind::Binary(bop, Box::new(a), Box::new(b)),
                    span,
                }
            })
            .parse(pairs);
        self.diags = cell.into_inner();
        out
    }

    fn primary(&mut self, p: Pair<'_, Rule>) -> Expr {
        let span: Span = p.as_span().into();
        let kind = match p.as_rule() {
            Rule::number => ExprKind::Num(self.number(p).value),
            Rule::ident => ExprKind::Var(p.as_str().to_string()),
            Rule::row => ExprKind::Row,
            // paren = { "(" ~ expr ~ ")" }: the span grows to cover the parentheses.
            Rule::paren => {
                let inner = self.expr(p.into_inner().next().unwrap());
                return Expr {
                    kind: inner.kind,
                    span,
                };
            }
            // if_expr = { kw_if ~ expr ~ kw_then ~ expr ~ kw_else ~ expr }
            Rule::if_expr => {
                let mut it = significant(p);
                let c = self.expr(it.next().unwrap());
                let a = self.expr(it.next().unwrap());
                let b = self.expr(it.next().unwrap());
                ExprKind::If(Box::new(c), Box::new(a), Box::new(b))
            }
            // reduction = { reducer ~ "[" ~ ident ~ (":" ~ expr)? ~ "]" ~ "(" ~ expr ~ ")" }
            Rule::reduction => {
                let mut it = p.into_inner();
                let op = match it.next().unwrap().as_str() {
                    "sum" => Reducer::Sum,
                    "mean" => Reducer::Mean,
                    "max" => Reducer::Max,
                    "min" => Reducer::Min,
                    _ => Reducer::LogSumExp,
                };
                let index = ident(it.next().unwrap());
                let first = self.expr(it.next().unwrap());
                let (filter, body) = match it.next() {
                    Some(b) => (Some(Box::new(first)), self.expr(b)),
                    None => (None, first),
                };
                ExprKind::Reduce {
                    op,
                    index,
                    filter,
                    body: Box::new(body),
                }
            }
            // call = { ident ~ "(" ~ (arg ~ ("," ~ arg)*)? ~ ")" }
            Rule::call => {
                let mut it = p.into_inner();
                let f = ident(it.next().unwrap());
                // arg = { (ident ~ "=")? ~ expr }
                let args = it
                    .map(|a| {
                        let mut parts: Vec<_> = a.into_inner().collect();
                        let value = self.expr(parts.pop().unwrap());
                        Arg {
                            name: parts.pop().map(ident),
                            value,
                        }
                    })
                    .collect();
                ExprKind::Call(f, args)
            }
            other => unreachable!("the grammar has no primary {other:?}"),
        };
        Expr { kind, span }
    }
}

/// Infix and prefix operators: what the Pratt parser recurses on.
fn is_operator(r: Rule) -> bool {
    use Rule::*;
    matches!(
        r,
        add | sub | mul | div | pow | eq | ne | lt | le | gt | ge | and | or | neg | not
    )
}

fn description(p: Pair<'_, Rule>) -> String {
    p.into_inner()
        .next()
        .map(|s| s.as_str().to_string())
        .unwrap_or_default()
}

/// A user-facing name for a grammar rule, or `None` for rules that would
/// only add noise to "expected ..." lists.
fn rule_name(r: Rule) -> Option<&'static str> {
    Some(match r {
        Rule::expr
        | Rule::paren
        | Rule::call
        | Rule::ident
        | Rule::number
        | Rule::if_expr
        | Rule::reduction => "an expression",
        Rule::add | Rule::sub | Rule::mul | Rule::div | Rule::pow => "an operator",
        Rule::eq | Rule::ne | Rule::lt | Rule::le | Rule::gt | Rule::ge | Rule::and | Rule::or => {
            "an operator"
        }
        Rule::index | Rule::at => "an operator",
        Rule::neg | Rule::not | Rule::row => "an expression",
        Rule::loss_stmt
        | Rule::task_stmt
        | Rule::data_stmt
        | Rule::pred_stmt
        | Rule::param_stmt
        | Rule::cost_stmt
        | Rule::let_stmt
        | Rule::def_stmt
        | Rule::minimize_stmt
        | Rule::expect_stmt => "a statement",
        Rule::name => "a name",
        Rule::type_expr => "a type",
        Rule::interval | Rule::interval_open => "an interval like [0, 1]",
        Rule::label_set => "a label set like {0, 1}",
        Rule::size_arg => "a size like [C]",
        Rule::signed_number | Rule::integer => "a number",
        Rule::description => "a description string",
        Rule::def_param => "a parameter name",
        Rule::arg => "an argument",
        Rule::property => "a property",
        Rule::cost_item => "a cost like fn = 20",
        Rule::kw_in => "`in`",
        Rule::kw_then => "`then`",
        Rule::kw_else => "`else`",
        Rule::kw_for => "`for`",
        Rule::EOI => "the end of the line",
        Rule::kw_loss
        | Rule::kw_task
        | Rule::kw_data
        | Rule::kw_pred
        | Rule::kw_param
        | Rule::kw_cost
        | Rule::kw_let
        | Rule::kw_def
        | Rule::kw_minimize
        | Rule::kw_expect => "a statement",
        _ => return None,
    })
}

fn syntax_error(src: &str, e: pest::error::Error<Rule>) -> Diagnostic {
    use pest::error::{ErrorVariant, InputLocation};
    let pos = match e.location {
        InputLocation::Pos(p) => p,
        InputLocation::Span((s, _)) => s,
    };
    let mut expected: Vec<String> = Vec::new();
    let mut push = |s: String| {
        if !expected.contains(&s) {
            expected.push(s);
        }
    };
    if let ErrorVariant::ParsingError { positives, .. } = &e.variant {
        for r in positives {
            if let Some(n) = rule_name(*r) {
                push(n.to_string());
            }
        }
    }
    if let Some(attempts) = e.parse_attempts() {
        for t in attempts.expected_tokens() {
            // Literal tokens print as themselves; ranges (`a..z`) and built-in
            // rules are noise in a message.
            let token = t.to_string();
            let t = token.trim();
            let literal = !t.is_empty() && t != "#" && !t.contains("..") && t != "BUILTIN_RULE";
            if literal && !t.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
                push(format!("`{t}`"));
            }
        }
    }
    // Single operator symbols say nothing "an operator" does not; keep the
    // closing brackets and separators, which tell what is missing.
    const OPERATORS: &[&str] = &[
        "`+`", "`-`", "`*`", "`/`", "`^`", "`==`", "`!=`", "`<`", "`<=`", "`>`", "`>=`", "`@`",
        "`[`",
    ];
    if expected.iter().any(|e| OPERATORS.contains(&e.as_str()))
        && !expected.iter().any(|e| e == "an operator")
    {
        expected.push("an operator".into());
    }
    // `.` is only ever the inside of a number like `1.5`.
    expected.retain(|e| {
        !OPERATORS.contains(&e.as_str())
            && e != "`.`"
            && e.chars().all(|c| c.is_ascii_graphic() || c == ' ')
    });
    let line_start = src[..pos].rfind('\n').map_or(0, |i| i + 1);
    let before = &src[line_start..pos];
    if before.trim().is_empty() && expected.iter().any(|e| e == "a statement") {
        expected.retain(|e| e != "the end of the line");
    }
    if before.trim_end().ends_with(':') && expected == ["a name"] {
        expected = vec!["a type".to_string()];
    }
    let found = found_token(src, pos);
    let at_line_end = found.is_empty() || found.starts_with(['\n', '\r']);
    let shown = if src[pos..].is_empty() {
        "the end of the file".to_string()
    } else if at_line_end {
        "the end of the line".to_string()
    } else {
        format!("`{found}`")
    };
    // At a line end the span is empty: underlining the newline itself
    // would spill onto the next line.
    let width = if at_line_end { 0 } else { found.len() };
    let span = Span::new(pos, pos + width);
    let message = if expected.is_empty() {
        format!("syntax error: unexpected {shown}")
    } else {
        format!(
            "syntax error: expected {}, found {shown}",
            join_or(&expected)
        )
    };
    let label = if at_line_end {
        format!("{shown} comes too early")
    } else {
        format!("unexpected {shown}")
    };
    let mut d = Diagnostic::error("E0001", span, message).with_label(label);
    let starts_line = before.trim().is_empty();
    // A bracket still open when the next line starts a statement is the
    // likely cause; inside a line, an open bracket is just where we are.
    if let Some(open) = unclosed_bracket(&src[..pos]).filter(|_| starts_line || pos == src.len()) {
        let ch = &src[open..open + 1];
        d = d
            .with_secondary(
                Span::new(open, open + 1),
                format!("this `{ch}` is never closed"),
            )
            .with_hint(format!("close the `{ch}` before the next statement"));
    } else if let Some(h) = syntax_hint(src, pos, &found, &expected) {
        d = d.with_hint(h);
    }
    d
}

/// The byte offset of the last bracket in `text` that is still open.
fn unclosed_bracket(text: &str) -> Option<usize> {
    let mut open = Vec::new();
    for (i, c) in brackets(text) {
        if matches!(c, '(' | '[' | '{') {
            open.push(i);
        } else {
            open.pop();
        }
    }
    open.pop()
}

fn found_token(src: &str, pos: usize) -> String {
    let rest = &src[pos..];
    let mut chars = rest.chars();
    match chars.next() {
        None => String::new(),
        Some(c) if c.is_ascii_alphanumeric() || c == '_' || c == '.' => rest
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_' || *c == '.')
            .collect(),
        Some('\r') if rest.starts_with("\r\n") => "\r\n".into(),
        Some(c) => c.to_string(),
    }
}

fn syntax_hint(src: &str, pos: usize, found: &str, expected: &[String]) -> Option<String> {
    let line_start = src[..pos].rfind('\n').map_or(0, |i| i + 1);
    let before = &src[line_start..pos];
    if found == "=" && expected.iter().any(|e| e == "an operator") {
        return Some("compare with `==`; `=` only binds names in let, param and def".into());
    }
    if found == "**" || (found == "*" && before.trim_end().ends_with('*')) {
        return Some("powers are written with `^`, as in `x^2`".into());
    }
    if expected.iter().any(|e| e == "a statement") {
        const STATEMENTS: [&str; 10] = [
            "loss", "task", "data", "pred", "param", "cost", "let", "def", "minimize", "expect",
        ];
        if let Some(s) = crate::diag::did_you_mean(found, STATEMENTS) {
            return Some(format!("did you mean `{s}`?"));
        }
        return Some(
            "every line starts with a statement: loss, task, data, pred, param, cost, let, def, minimize or expect".into(),
        );
    }
    if expected.iter().any(|e| e == "the end of the line") && !before.trim().is_empty() {
        return Some("each statement goes on its own line".into());
    }
    if expected.iter().any(|e| e == "an expression")
        && found.starts_with(|c: char| c.is_ascii_alphabetic())
    {
        return Some(format!(
            "`{found}` is a reserved word and cannot be used as a value"
        ));
    }
    None
}

fn join_or(items: &[String]) -> String {
    match items {
        [] => String::new(),
        [a] => a.clone(),
        [init @ .., last] => format!("{} or {last}", init.join(", ")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sx(src: &str) -> String {
        parse_expr(src).unwrap().to_sexpr()
    }

    #[test]
    fn power_binds_tighter_than_unary_minus_and_is_right_associative() {
        assert_eq!(sx("-x^2"), "(neg (^ x 2))");
        assert_eq!(sx("a^b^c"), "(^ a (^ b c))");
        assert_eq!(sx("2^-x"), "(^ 2 (neg x))");
    }

    #[test]
    fn arithmetic_is_left_associative_with_usual_precedence() {
        assert_eq!(sx("a - b - c"), "(- (- a b) c)");
        assert_eq!(sx("a / b * c"), "(* (/ a b) c)");
        assert_eq!(sx("a + b * c"), "(+ a (* b c))");
    }

    #[test]
    fn conditions_bind_looser_than_arithmetic() {
        assert_eq!(
            sx("if y == 1 and not s < 2 then a else b"),
            "(if (and (== y 1) (not (< s 2))) a b)"
        );
        assert_eq!(
            sx("if a then b else if c then d else e"),
            "(if a b (if c d e))"
        );
    }

    #[test]
    fn postfix_indexing_and_batch_access() {
        assert_eq!(sx("z@j[c]"), "(index (at z j) c)");
        assert_eq!(sx("(y - p)[c]"), "(index (- y p) c)");
        assert_eq!(
            sx("sum[j: j != i and y@j == y](x@j)"),
            "(sum[j: (and (!= j i) (== (at y j) y))] (at x j))"
        );
        assert_eq!(sx("max[c: c != y](z[c])"), "(max[c: (!= c y)] (index z c))");
    }

    #[test]
    fn calls_with_named_arguments_and_reductions() {
        assert_eq!(
            sx("huber(y, yhat, delta = 0.5)"),
            "(huber y yhat delta=0.5)"
        );
        assert_eq!(sx("max(a, b) + mean(x)"), "(+ (max a b) (mean x))");
        assert_eq!(sx("f(a == b)"), "(f (== a b))");
    }

    #[test]
    fn numbers_in_every_written_form() {
        assert_eq!(
            sx(".5 + 1e-7 + 2.5E3 + inf + 1."),
            "(+ (+ (+ (+ 0.5 1e-7) 2500) inf) 1)"
        );
    }

    #[test]
    fn newlines_continue_inside_brackets_and_after_operators() {
        let src = "loss x\ntask regression\nminimize mean(\n  a\n  + b) +\n  c\n";
        let spec = parse(src).unwrap();
        assert_eq!(spec.stmts.len(), 3);
    }

    #[test]
    fn a_newline_ends_a_statement() {
        assert!(parse("loss x task binary\n").is_err());
        assert!(parse("loss x\nminimize a\n+ b\n").is_err());
    }

    #[test]
    fn spans_cover_children_and_parentheses() {
        let e = parse_expr("(a + b) * c").unwrap();
        assert_eq!(e.span, Span::new(0, 11));
        let ExprKind::Binary(_, lhs, _) = &e.kind else {
            panic!()
        };
        assert_eq!(lhs.span, Span::new(0, 7));
    }

    #[test]
    fn deep_nesting_is_a_located_error_not_a_stack_overflow() {
        let src = format!("{}x{}", "(".repeat(5000), ")".repeat(5000));
        let d = parse_expr(&src).unwrap_err();
        assert_eq!(d[0].code, "E0002");
    }
}
