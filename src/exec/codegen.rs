//! The second backend: Rust source for a spec's evaluator, generated ahead
//! of time and compiled with the program that uses it.
//!
//! The interpreter runs one vector loop per instruction, so each
//! intermediate goes through a register in cache; for a cheap loss on many
//! rows that traffic, not arithmetic, sets the speed. Generated code has one
//! loop per pass in which every intermediate is a local variable, which the
//! Rust compiler keeps in vector registers: the hand-written loop, written
//! by lossc. It is used through the same API (`Evaluator::with_kernel`), for
//! two kinds of pass; others (batch-coupled ones, loops inside loops) keep
//! running on the interpreter:
//!
//! - **flat** passes (every input a scalar per row): one loop over rows,
//!   vectorised along them;
//! - **looped** passes (a row's vectors reduced or written over their
//!   components, as in softmax cross-entropy): a loop over rows, and inside
//!   it one loop per reduction or gradient, vectorised along the components.
//!   A reduction's values go to a per-row buffer (the worker's scratch) and
//!   are folded eight lanes at a time; a softmax `exp(x - logsumexp(x))`
//!   reuses the exps its logsumexp kept, so each logit costs one `exp`, as
//!   in a hand-written softmax (kept in the gradient row the softmax
//!   rescales, where that is safe: see `softmax_into_gradient`). Vectors
//!   narrower than `NARROW` (32) run on transposed blocks of rows instead,
//!   vectorised across the rows (`narrow_fn`).
//!
//! A single-pass kernel also tests every value it reads against its domain
//! (a compare or two per value, in registers), so input validation costs
//! no second read of the inputs; the evaluator reports the first bad value
//! when a block fails. Values it cannot test as it reads them (label sets,
//! class indices, whole rows, components read only by index) are tested
//! for the block before any is used.
//!
//! ```text
//! lossc codegen examples/focal_logits.loss > src/focal_kernel.rs
//! ```
//!
//! ```ignore
//! mod focal_kernel;
//! let eval = loss.compile::<f32>()?.with_kernel(focal_kernel::focal_logits::kernel())?;
//! ```

use super::plan::{BFn, CompSrc, Fold, Item, LoopKind, Op, Pass, Plan, Range, Reg, RowSrc, UFn};
use crate::ir::{Func, RedOp};
use crate::sema::types::Dom;
use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write;

/// Rows per chunk of a generated loop at most: per-row losses wait in a
/// stack buffer of this length before they are summed.
const CHUNK: usize = 512;

/// Rows per chunk as bytes of one per-row value: 512 rows of f32, 256 of
/// f64, so that each input's, gradient's and loss's chunk is 2 KiB (the
/// loss buffers keep `CHUNK` entries, since an array's length cannot depend
/// on `T`; f64 uses half). In eight paired harness runs of the Huber loop
/// over 10^7 f64 rows (40-60 rounds each), 256-row chunks beat 512-row ones
/// in every run, by 6-10% (1.09-1.13x the hand-written loop against
/// 1.18-1.21x); f32 measured the same at 512 and 1024 rows.
const CHUNK_BYTES: usize = 2048;

/// Vectors narrower than this (in every loop of a pass) run on transposed
/// blocks of rows (`narrow_fn`) rather than in loops over each row's
/// components (measured: at C = 10 the interpreter's rows-innermost layout
/// was 1.3-1.8x faster than a generated loop per row, and the transposed
/// blocks are faster still; at C = 1000 the loops per row are 2.5-3x faster
/// than the interpreter).
const NARROW: usize = 32;

/// Rows per block of a narrow pass (see `narrow_fn`): 64 rows are four
/// AVX-512 vectors of f32, and ten components of every input, output and
/// kept exp of such a block fit in the first-level cache.
const NARROW_ROWS: usize = 64;

/// A 64-bit FNV-1a hash of the plan's text and its inputs' domains: a
/// generated kernel is only accepted by an evaluator with the same plan.
pub(crate) fn fingerprint(plan: &Plan) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    // The inputs' domains too: generated code tests values against them.
    let mut text = plan.describe();
    for d in &plan.inputs {
        let _ = writeln!(text, "input {} : {:?}", d.name, d.dom);
    }
    for b in text.bytes() {
        h ^= b as u64;
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h
}

/// Whether a pass is generated at all: one of the two kinds below, reading
/// only the spec's inputs (a scatter's buffer is the interpreter's own; its
/// values need no domain tests either).
fn generable(plan: &Plan, pass: &Pass) -> bool {
    let own = |sc: &super::plan::ScopeDef| {
        sc.items.iter().all(|i| match i {
            Item::Op(Op::Load { slot, .. }) => (*slot as usize) < plan.inputs.len(),
            _ => true,
        })
    };
    pass.scopes.iter().all(own) && (flat(pass) || looped(plan, pass))
}

/// Whether a pass can be generated: no loops, and only current-row reads.
fn flat(pass: &super::plan::Pass) -> bool {
    pass.scopes.len() == 1
        && pass.scopes[0].items.iter().all(|i| match i {
            Item::Op(Op::Load { row, comp, .. }) => {
                matches!((row, comp), (RowSrc::Cur, CompSrc::None))
            }
            Item::Op(Op::TableLoad { row, .. }) => matches!(row, RowSrc::Cur),
            Item::Op(Op::Iota { .. }) => false,
            Item::Op(Op::Store { scope, .. }) => scope.is_none(),
            Item::Op(_) => true,
            Item::Loop { .. } => false,
        })
}

/// The module's source: `pub mod NAME` with `kernel::<T>()`.
pub(crate) fn rust_module(plan: &Plan, module: &str, origin: &str) -> String {
    let mut s = String::new();
    let fp = fingerprint(plan);
    let _ = writeln!(
        s,
        "// Generated by `lossc codegen` from {origin}. Do not edit: regenerate after changing\n\
         // the spec or upgrading lossc (`Evaluator::with_kernel` refuses a stale kernel).\n"
    );
    let _ = writeln!(
        s,
        "#[rustfmt::skip]\n#[allow(unused, clippy::all, clippy::pedantic, clippy::nursery)]\npub mod {module} {{"
    );
    let _ = writeln!(s, "    use lossc::exec::check;");
    let _ = writeln!(s, "    use lossc::exec::math::{{self, Float}};");
    let _ = writeln!(s, "    use lossc::exec::{{Block, Kernel}};\n");
    let _ = writeln!(
        s,
        "    /// The plan this kernel implements.\n    pub const FINGERPRINT: u64 = {fp:#018x};\n"
    );
    let entries: Vec<String> = plan
        .passes
        .iter()
        .enumerate()
        .map(|(i, p)| {
            if generable(plan, p) {
                format!("Some(pass{i}::<T>)")
            } else {
                "None".to_string()
            }
        })
        .collect();
    let _ = writeln!(
        s,
        "    /// The kernel, for `Evaluator::with_kernel` (passes marked `None` run on\n    \
         /// lossc's interpreter).\n    \
         pub fn kernel<T: Float>() -> Kernel<T> {{\n        \
         // SAFETY: generated by lossc from the plan with this fingerprint, which\n        \
         // `with_kernel` checks.\n        \
         unsafe {{ Kernel::new(FINGERPRINT, vec![{}]) }}\n    }}",
        entries.join(", ")
    );
    for (i, pass) in plan.passes.iter().enumerate() {
        if !generable(plan, pass) {
            continue;
        }
        if flat(pass) {
            pass_fn(plan, pass, i, &mut s);
        } else if looped(plan, pass) {
            loop_pass_fn(plan, pass, i, &mut s);
        }
    }
    s.push_str("}\n");
    s
}

/// The pass function's signature, its dispatch between the AVX-512, the
/// AVX2+FMA and the baseline build of its body, and the body's first lines.
fn pass_header(index: usize, s: &mut String) {
    let sig = "b: &Block<'_, T>, b0: usize, b1: usize, sums: &mut [f64]) -> bool";
    let _ = write!(
        s,
        "
    fn pass{index}<T: Float>({sig} {{
        #[cfg(target_arch = \"x86_64\")]
        {{
            #[target_feature(enable = \"avx512f,avx512bw,avx512dq,avx512vl,avx2,fma\")]
            unsafe fn wide512<T: Float>({sig} {{
                unsafe {{ body::<T, true>(b, b0, b1, sums) }}
            }}
            #[target_feature(enable = \"avx2,fma\")]
            unsafe fn wide<T: Float>({sig} {{
                unsafe {{ body::<T, true>(b, b0, b1, sums) }}
            }}
            if lossc::exec::avx512() {{
                // SAFETY: the CPU has AVX-512 and FMA.
                return unsafe {{ wide512::<T>(b, b0, b1, sums) }};
            }}
            if lossc::exec::avx2() {{
                // SAFETY: the CPU has AVX2 and FMA.
                return unsafe {{ wide::<T>(b, b0, b1, sums) }};
            }}
        }}
        // SAFETY: no target feature is needed.
        return unsafe {{ body::<T, false>(b, b0, b1, sums) }};

        #[inline(always)]
        unsafe fn body<T: Float, const F: bool>({sig} {{
            const L: usize = {CHUNK};
            let lc = L.min({CHUNK_BYTES} / std::mem::size_of::<T>());
            let n = b.rows();
"
    );
}

fn pass_fn(plan: &Plan, pass: &super::plan::Pass, index: usize, s: &mut String) {
    pass_header(index, s);
    let items: Vec<&Op> = pass.scopes[0]
        .items
        .iter()
        .filter_map(|i| match i {
            Item::Op(op) => Some(op),
            Item::Loop { .. } => None,
        })
        .collect();
    let rowdep = |r: u32| pass.regs[r as usize].rowdep;
    // Inputs, tables and outputs as slices.
    let mut slots = std::collections::BTreeSet::new();
    let mut tables_in = std::collections::BTreeSet::new();
    for op in &items {
        match op {
            Op::Load { slot, .. } => {
                slots.insert(*slot);
            }
            Op::TableLoad { table, .. } => {
                tables_in.insert(*table);
            }
            _ => {}
        }
    }
    for slot in &slots {
        let _ = writeln!(
            s,
            "            // `{}`\n            let x{slot} = unsafe {{ std::slice::from_raw_parts(b.input({slot}), n) }};",
            plan.inputs[*slot as usize].name
        );
    }
    for t in &tables_in {
        let _ = writeln!(
            s,
            "            let t{t} = unsafe {{ std::slice::from_raw_parts(b.table({t}), n) }};"
        );
    }
    for op in &items {
        if let Op::Store {
            output, hessian, ..
        } = op
        {
            let (v, get) = if *hessian {
                ("h", "hessian")
            } else {
                ("g", "grad")
            };
            let _ = writeln!(
                s,
                "            // SAFETY: each block writes only its own rows.\n            let {v}{output} = unsafe {{ std::slice::from_raw_parts_mut(b.{get}({output}).add(b0), b1 - b0) }};"
            );
        }
    }
    for (_, t) in &pass.tables {
        let _ = writeln!(
            s,
            "            let to{t} = unsafe {{ std::slice::from_raw_parts_mut(b.table_out({t}).add(b0), b1 - b0) }};"
        );
    }
    let _ = writeln!(s, "            let scale = b.scale();");
    // Input checks: inline where the domain is a plain test on the value,
    // else by the evaluator's block check.
    let checked = plan.checks_per_block();
    let _ = writeln!(
        s,
        "            let mut ok = true;\n            let mut bad = T::Bits::default();"
    );
    if checked {
        for (slot, decl) in plan.inputs.iter().enumerate() {
            let slot = slot as u16;
            if !slots.contains(&slot) || check_expr(&decl.dom, "v").is_none() {
                let _ = writeln!(
                    s,
                    "            ok &= b.valid({slot}, b0, b1); // `{}`",
                    decl.name
                );
            }
        }
    }
    // Row-independent values once, before the loop.
    for op in &items {
        if let Some(out) = super::plan::op_writes(op)
            && !rowdep(out)
        {
            let _ = writeln!(s, "            let v{out}: T = {};", expr(op, &flat_leaf));
        }
    }
    for (k, _) in pass.sums.iter().enumerate() {
        let _ = writeln!(s, "            let mut s{k} = [T::ZERO; L];");
    }
    let _ = writeln!(
        s,
        "            let mut r0 = b0;\n            while r0 < b1 {{\n                let len = lc.min(b1 - r0);"
    );
    for slot in &slots {
        let _ = writeln!(s, "                let x{slot} = &x{slot}[r0..r0 + len];");
    }
    for t in &tables_in {
        let _ = writeln!(s, "                let t{t} = &t{t}[r0..r0 + len];");
    }
    for op in &items {
        if let Op::Store {
            output, hessian, ..
        } = op
        {
            let v = if *hessian { "h" } else { "g" };
            let _ = writeln!(
                s,
                "                let {v}{output} = &mut {v}{output}[r0 - b0..r0 - b0 + len];"
            );
        }
    }
    for (_, t) in &pass.tables {
        let _ = writeln!(
            s,
            "                let to{t} = &mut to{t}[r0 - b0..r0 - b0 + len];"
        );
    }
    let _ = writeln!(s, "                for l in 0..len {{");
    for op in &items {
        match op {
            Op::Store {
                reg,
                output,
                hessian,
                ..
            } => {
                let v = if *hessian { "h" } else { "g" };
                let _ = writeln!(s, "                    {v}{output}[l] = v{reg} * scale;");
            }
            _ => {
                if let Some(out) = super::plan::op_writes(op)
                    && rowdep(out)
                {
                    let _ = writeln!(
                        s,
                        "                    let v{out}: T = {};",
                        expr(op, &flat_leaf)
                    );
                    if let Op::Load { slot, .. } = op
                        && checked
                        && let Some(test) =
                            check_expr(&plan.inputs[*slot as usize].dom, &format!("v{out}"))
                    {
                        let _ = writeln!(s, "                    bad |= {test};");
                    }
                }
            }
        }
    }
    pass_footer(pass, "l", s);
}

/// The end of a row's work and of the pass: the row's contributions to the
/// sample sums and tables (`table_row` is its index in the table slices),
/// then each chunk's sums folded in.
fn pass_footer(pass: &Pass, table_row: &str, s: &mut String) {
    for (k, (reg, _)) in pass.sums.iter().enumerate() {
        let _ = writeln!(s, "                    s{k}[l] = v{reg};");
    }
    for (reg, t) in &pass.tables {
        let _ = writeln!(s, "                    to{t}[{table_row}] = v{reg};");
    }
    let _ = writeln!(s, "                }}");
    for (k, (_, slot)) in pass.sums.iter().enumerate() {
        let _ = writeln!(
            s,
            "                sums[{slot}] += math::sum_lanes(&s{k}[..len]);"
        );
    }
    let _ = writeln!(
        s,
        "                r0 += len;\n            }}\n            ok & (bad == T::Bits::default())\n        }}\n    }}"
    );
}

/// In a loop over components, a comparison `c == u` of the component number
/// with a value `u` computed outside the loop: `(the test's register, u)`.
fn one_hot(sc: &super::plan::ScopeDef) -> Option<(Reg, Reg)> {
    let ops = || {
        sc.items.iter().filter_map(|i| match i {
            Item::Op(op) => Some(op),
            Item::Loop { .. } => None,
        })
    };
    let iota = |r: Reg| ops().any(|op| matches!(op, Op::Iota { out, .. } if out == &r));
    let inside = |r: Reg| ops().any(|op| super::plan::op_writes(op) == Some(r));
    ops().find_map(|op| match *op {
        Op::Bin {
            out,
            f: BFn::Cmp(crate::ir::Cmp::Eq),
            a,
            b,
        } => {
            if iota(a) && !inside(b) {
                Some((out, b))
            } else if iota(b) && !inside(a) {
                Some((out, a))
            } else {
                None
            }
        }
        _ => None,
    })
}

/// A logsumexp from its maximum `m{acc}`: the exps of `src` (the values,
/// or the buffer `k` that holds them) shifted by the maximum, into `k`,
/// and their sum. A row without a finite maximum is that maximum (as the
/// interpreter). When `keep`, the exps stay in `k` for a softmax of the same
/// values (`exp / sum`; without a finite maximum, exp(x - lse) itself).
fn lse_tail(acc: Reg, k: &str, src: &str, keep: bool, pad: &str, s: &mut String) {
    let exps = if src == k {
        format!(
            "{pad}    for x in {k}.iter_mut() {{\n{pad}        *x = (*x - m{acc}).exp::<F>();\n{pad}    }}"
        )
    } else {
        format!(
            "{pad}    for (x, &y) in {k}.iter_mut().zip({src}) {{\n{pad}        *x = (y - m{acc}).exp::<F>();\n{pad}    }}"
        )
    };
    let _ = writeln!(
        s,
        "{pad}let (v{acc}, sum{acc}): (T, T) = if m{acc} > T::of(f64::NEG_INFINITY) && m{acc} < T::of(f64::INFINITY) {{\n\
         {exps}\n\
         {pad}    let t = T::of(math::sum_lanes({k}));\n\
         {pad}    (m{acc} + t.ln::<F>(), t)\n\
         {pad}}} else {{"
    );
    if keep {
        let _ = writeln!(s, "{exps}");
    }
    let _ = writeln!(s, "{pad}    (m{acc}, T::ONE)\n{pad}}};");
    if keep {
        let _ = writeln!(s, "{pad}let inv{acc}: T = T::ONE / sum{acc};");
    }
}

/// A Rust test that value `v` lies in `dom`, when one is plain enough to
/// run inline on every value read (else the evaluator checks the block):
/// an expression that is zero when it does, ORed into the kernel's `bad`.
fn check_expr(dom: &Dom, v: &str) -> Option<String> {
    let lit = |x: f64| {
        if x == f64::INFINITY {
            "f64::INFINITY".to_string()
        } else if x == f64::NEG_INFINITY {
            "f64::NEG_INFINITY".to_string()
        } else {
            format!("{x:?}")
        }
    };
    match dom {
        Dom::Unknown => Some(format!("check::is_nan({v})")),
        Dom::Range(r) => Some(format!(
            "check::out_of_range({v}, {}, {}, {}, {})",
            lit(r.lo),
            lit(r.hi),
            r.lo_closed,
            r.hi_closed
        )),
        Dom::Labels(vs) if vs.len() == 2 => Some(format!(
            "check::not_either({v}, {}, {})",
            lit(vs[0]),
            lit(vs[1])
        )),
        _ => None,
    }
}

/// How a flat pass reads its leaves: the row is `r0 + l`.
fn flat_leaf(op: &Op) -> String {
    match op {
        Op::CurRow { .. } => "T::of((r0 + l) as f64)".into(),
        Op::Load { slot, .. } => format!("x{slot}[l]"),
        Op::TableLoad { table, .. } => format!("t{table}[l]"),
        _ => unreachable!("not in a flat pass"),
    }
}

/// The Rust expression computing an instruction from its operands; `leaf`
/// writes the reads of rows, components and indices.
fn expr(op: &Op, leaf: &dyn Fn(&Op) -> String) -> String {
    let v = |r: &u32| format!("v{r}");
    match op {
        Op::Const { v: x, .. } => format!("T::of({x:?})"),
        Op::Uniform { u, .. } => format!("b.uniform({u})"),
        Op::CurRow { .. } | Op::Load { .. } | Op::TableLoad { .. } | Op::Iota { .. } => leaf(op),
        Op::Un { f, a, .. } => {
            let a = v(a);
            match f {
                UFn::Neg => format!("-{a}"),
                UFn::Recip => format!("T::ONE / {a}"),
                UFn::Not => format!("math::truth::<T>({a} == T::ZERO)"),
                UFn::F(func) => match func {
                    Func::Exp => format!("{a}.exp::<F>()"),
                    Func::Log => format!("{a}.ln::<F>()"),
                    Func::Sqrt => format!("{a}.sqrt()"),
                    Func::Abs => format!("{a}.abs()"),
                    Func::Sign => format!("math::sign({a})"),
                    Func::Relu => format!("{a}.max(T::ZERO)"),
                    Func::Log1p => format!("math::log1p::<T, F>({a})"),
                    Func::Expm1 => format!("math::expm1::<T, F>({a})"),
                    Func::Sigmoid => format!("math::sigmoid::<T, F>({a})"),
                    Func::Softplus => format!("math::softplus::<T, F>({a})"),
                    Func::Tanh => format!("math::tanh::<T, F>({a})"),
                    Func::Cosh => format!("math::cosh::<T, F>({a})"),
                    Func::Sinh => format!("math::sinh::<T, F>({a})"),
                },
            }
        }
        Op::Powi { a, n, .. } => {
            let a = v(a);
            match n {
                2 => format!("{a} * {a}"),
                3 => format!("{a} * {a} * {a}"),
                4 => format!("({a} * {a}) * ({a} * {a})"),
                -1 => format!("T::ONE / {a}"),
                -2 => format!("T::ONE / ({a} * {a})"),
                _ => format!("math::powi({a}, {n})"),
            }
        }
        Op::Bin { f, a, b, .. } => {
            let (a, b) = (v(a), v(b));
            match f {
                BFn::Add => format!("{a} + {b}"),
                BFn::Sub => format!("{a} - {b}"),
                BFn::Mul => format!("{a} * {b}"),
                BFn::Div => format!("{a} / {b}"),
                BFn::Pow => format!("math::pow::<T, F>({a}, {b})"),
                BFn::Max => format!("{a}.max({b})"),
                BFn::Min => format!("{a}.min({b})"),
                BFn::Cmp(c) => {
                    let sym = c.symbol();
                    format!("math::truth::<T>({a} {sym} {b})")
                }
                BFn::And => format!("math::truth::<T>(({a} != T::ZERO) & ({b} != T::ZERO))"),
                BFn::Or => format!("math::truth::<T>(({a} != T::ZERO) | ({b} != T::ZERO))"),
            }
        }
        Op::Sel { c, a, b, .. } => format!("math::sel({} != T::ZERO, {}, {})", v(c), v(a), v(b)),
        Op::Softmax { .. } => unreachable!("a softmax reads its logsumexp's buffer"),
        Op::Store { .. } => unreachable!("a store is a statement"),
    }
}

/// Whether a pass can be generated as loops over a vector's components:
/// it reads only its own rows, and no loop runs inside another (a row's
/// loops then each become one loop over the components, vectorised along
/// them).
fn looped(plan: &Plan, pass: &Pass) -> bool {
    !pass.coupled
        && pass.scopes.iter().enumerate().all(|(i, sc)| {
            (i == 0 || matches!(sc.range, Some(Range::Feature(_))))
                && sc.items.iter().all(|item| match item {
                    Item::Loop { .. } => i == 0,
                    // A component loop reads a vector over its own size (so the
                    // loop's extent is the row's width).
                    Item::Op(Op::Load {
                        row,
                        comp: CompSrc::Loop(_),
                        slot,
                        ..
                    }) => {
                        matches!(row, RowSrc::Cur)
                            && plan.inputs[*slot as usize].size.map(Range::Feature) == sc.range
                    }
                    Item::Op(Op::Load { row, .. } | Op::TableLoad { row, .. }) => {
                        matches!(row, RowSrc::Cur)
                    }
                    Item::Op(Op::Iota { scope, .. }) => *scope as usize == i,
                    Item::Op(Op::Store { scope, .. }) => scope.map_or(i == 0, |s| s as usize == i),
                    Item::Op(_) => true,
                })
        })
}

/// A logsumexp whose exps a softmax rescales into a gradient row, written
/// there directly rather than into a scratch row (see
/// [`softmax_into_gradient`]).
struct Alias {
    /// The loop that reads its exps and writes the gradient row.
    store: u16,
    hessian: bool,
    output: u16,
}

impl Alias {
    fn v(&self) -> &'static str {
        if self.hessian { "h" } else { "g" }
    }
    /// The row's slice in the store loop.
    fn row(&self) -> String {
        format!("{}r{}", self.v(), self.output)
    }
    /// The output's width, per row.
    fn width(&self) -> String {
        format!("{}w{}", self.v(), self.output)
    }
}

/// The logsumexps whose kept exps can live in the gradient row that their
/// softmax writes, by logsumexp loop. A hand-written softmax cross-entropy
/// puts the exps in the gradient row and rescales them there: the row is
/// written while the `exp`s compute, and the rescaling finds it in L1. Kept
/// in a scratch row instead, the exps cost a second row of L1, and the
/// rescaling writes a gradient row that is not in cache, with little
/// arithmetic to hide the wait (`cce_logits` with C = 1000 in f64 ran 1.5x
/// the hand loop on AVX-512 that way, and 1.02-1.12x this way). Safe when
/// the softmax is read only in one gradient loop over the same components,
/// which writes that row's component `c` after reading the exp at `c`, is
/// the only writer of that output in the pass, and takes no other
/// logsumexp's exps into its row.
fn softmax_into_gradient(pass: &Pass, soft: &BTreeMap<Reg, (u16, Reg)>) -> BTreeMap<u16, Alias> {
    let mut out = BTreeMap::new();
    let range = |sc: u16| match pass.scopes[sc as usize].range {
        Some(Range::Feature(z)) => Some(z),
        _ => None,
    };
    let stores = |sc: &super::plan::ScopeDef| -> Vec<(usize, bool, u16)> {
        sc.items
            .iter()
            .enumerate()
            .filter_map(|(i, it)| match it {
                Item::Op(Op::Store {
                    output, hessian, ..
                }) => Some((i, *hessian, *output)),
                _ => None,
            })
            .collect()
    };
    let lses: BTreeSet<u16> = soft.values().map(|&(ls, _)| ls).collect();
    // A gradient row holds one logsumexp's exps: a second softmax in the
    // same loop (distillation: a hard and a softened cross-entropy) keeps
    // its exps in scratch.
    let mut claimed = BTreeSet::new();
    for ls in lses {
        // Every loop with a softmax of this logsumexp, and where in it.
        let mut readers = BTreeMap::<u16, Vec<usize>>::new();
        for (si, sc) in pass.scopes.iter().enumerate() {
            for (i, it) in sc.items.iter().enumerate() {
                if let Item::Op(Op::Softmax { out: o, .. }) = it
                    && soft.get(o).is_some_and(|&(l, _)| l == ls)
                {
                    readers.entry(si as u16).or_default().push(i);
                }
            }
        }
        let [(&m, reads)] = readers.iter().collect::<Vec<_>>()[..] else {
            continue;
        };
        let is_store_loop = pass.scopes[0]
            .items
            .iter()
            .any(|it| matches!(it, Item::Loop { scope, kind: LoopKind::Store } if *scope == m));
        let [(at, hessian, output)] = stores(&pass.scopes[m as usize])[..] else {
            continue;
        };
        let writers = pass
            .scopes
            .iter()
            .flat_map(&stores)
            .filter(|&(_, h, o)| (h, o) == (hessian, output))
            .count();
        if is_store_loop
            && !claimed.contains(&m)
            && range(m).is_some()
            && range(m) == range(ls)
            && stores(&pass.scopes[ls as usize]).is_empty()
            && writers == 1
            && reads.iter().all(|&i| i < at)
        {
            claimed.insert(m);
            out.insert(
                ls,
                Alias {
                    store: m,
                    hessian,
                    output,
                },
            );
        }
    }
    out
}

/// A pass with loops over components, generated row by row: the row's
/// scalars are locals, each loop over components is one Rust loop over
/// them (its values in a per-row buffer of this worker's scratch, or in
/// the gradient row a softmax of it rescales, then reduced eight lanes at
/// a time), and the row's gradient components are written in that loop.
fn loop_pass_fn(plan: &Plan, pass: &Pass, index: usize, s: &mut String) {
    pass_header(index, s);
    // Softmaxes read the exps their logsumexp kept (see `softmax`).
    let mut soft: BTreeMap<Reg, (u16, Reg)> = BTreeMap::new();
    let mut cached: BTreeSet<u16> = BTreeSet::new();
    for sc in &pass.scopes {
        for item in &sc.items {
            match item {
                Item::Op(Op::Softmax {
                    out, lse, scope, ..
                }) => {
                    soft.insert(*out, (*scope, *lse));
                }
                Item::Loop {
                    scope,
                    kind: LoopKind::Reduce { cache: Some(_), .. },
                } => {
                    cached.insert(*scope);
                }
                _ => {}
            }
        }
    }
    let alias = softmax_into_gradient(pass, &soft);
    // What the pass reads, in the order it is emitted (root instructions,
    // each loop's in place), and each input's first full read: a scalar
    // read at all, a vector read over its components (which `looped`
    // makes its whole row). Inputs read fully are tested there, once, as
    // they are read.
    let mut slots = BTreeSet::new();
    let mut tables_in = BTreeSet::new();
    let mut test_at: BTreeMap<u16, Reg> = BTreeMap::new();
    for item in &pass.scopes[0].items {
        let ops: Vec<&Op> = match item {
            Item::Op(op) => vec![op],
            Item::Loop { scope, .. } => pass.scopes[*scope as usize]
                .items
                .iter()
                .filter_map(|i| match i {
                    Item::Op(op) => Some(op),
                    Item::Loop { .. } => None,
                })
                .collect(),
        };
        for op in ops {
            match op {
                Op::Load {
                    out, slot, comp, ..
                } => {
                    slots.insert(*slot);
                    if !matches!(comp, CompSrc::Reg(_)) {
                        test_at.entry(*slot).or_insert(*out);
                    }
                }
                Op::TableLoad { table, .. } => {
                    tables_in.insert(*table);
                }
                _ => {}
            }
        }
    }
    let outs = stores(pass);
    looped_io(plan, pass, &slots, &tables_in, &outs, "            ", s);
    let _ = writeln!(s, "            let scale = b.scale();");
    // Loop extents, and a scratch buffer per reducing loop.
    let mut reducing = Vec::new();
    let mut widths = Vec::new();
    for item in &pass.scopes[0].items {
        if let Item::Loop { scope, kind } = item {
            let Some(Range::Feature(z)) = pass.scopes[*scope as usize].range else {
                unreachable!("looped passes loop over components");
            };
            let _ = writeln!(s, "            let e{scope} = b.size({z});");
            widths.push(format!("e{scope}"));
            if matches!(kind, LoopKind::Reduce { .. }) && !alias.contains_key(scope) {
                reducing.push(*scope);
            }
        }
    }
    // Narrow vectors run on transposed blocks of rows (`narrow_fn`): a
    // loop per row over a handful of components costs more in per-row
    // overhead than it saves.
    // (A pass without loops here reads a vector only by index.)
    if let Some((first, rest)) = widths.split_first() {
        let _ = writeln!(
            s,
            "            if {} < {NARROW} {{\n                return unsafe {{ narrow{index}::<T, F>(b, b0, b1, sums) }};\n            }}",
            rest.iter()
                .fold(first.clone(), |a, w| format!("{a}.max({w})"))
        );
    }
    let checked = plan.checks_per_block();
    let inline = |slot: u16| inline_test(plan, &test_at, slot);
    block_tests(plan, &test_at, "            ", s);
    if !reducing.is_empty() {
        let total: Vec<String> = reducing.iter().map(|l| format!("e{l}")).collect();
        let _ = writeln!(
            s,
            "            let mut scratch = b.scratch({});\n            let rest: &mut [T] = &mut scratch;",
            total.join(" + ")
        );
        for l in &reducing {
            let _ = writeln!(s, "            let (k{l}, rest) = rest.split_at_mut(e{l});");
        }
    }
    for (k, _) in pass.sums.iter().enumerate() {
        let _ = writeln!(s, "            let mut s{k} = [T::ZERO; L];");
    }
    let _ = writeln!(
        s,
        "            let mut r0 = b0;\n            while r0 < b1 {{\n                let len = lc.min(b1 - r0);\n                for l in 0..len {{\n                    let r = r0 + l;"
    );
    for slot in &slots {
        if plan.inputs[*slot as usize].size.is_some() {
            let _ = writeln!(
                s,
                "                    let xr{slot} = &x{slot}[r * w{slot}..(r + 1) * w{slot}];"
            );
        }
    }
    let leaf = |op: &Op| -> String {
        match op {
            Op::CurRow { .. } => "T::of(r as f64)".into(),
            Op::Iota { .. } => "math::index::<T>(c)".into(),
            Op::TableLoad { table, .. } => format!("t{table}[r]"),
            Op::Load { slot, comp, .. } => match comp {
                CompSrc::None => format!("x{slot}[r]"),
                CompSrc::Loop(_) => format!("xr{slot}[c]"),
                CompSrc::Reg(i) => format!("math::gather(xr{slot}, v{i})"),
            },
            _ => unreachable!("not a leaf"),
        }
    };
    // One instruction as a `let`, with its inline domain test.
    let op_line = |op: &Op, pad: &str, s: &mut String| {
        let Some(out) = super::plan::op_writes(op) else {
            return;
        };
        if let Some(&(ls, acc)) = soft.get(&out) {
            let k = match alias.get(&ls) {
                Some(a) => a.row(),
                None => format!("k{ls}"),
            };
            let _ = writeln!(s, "{pad}let v{out}: T = {k}[c] * inv{acc};");
            return;
        }
        let _ = writeln!(s, "{pad}let v{out}: T = {};", expr(op, &leaf));
        if let Op::Load { slot, .. } = op
            && checked
            && inline(*slot)
            && test_at.get(slot) == Some(&out)
            && let Some(test) = check_expr(&plan.inputs[*slot as usize].dom, &format!("v{out}"))
        {
            let _ = writeln!(s, "{pad}bad |= {test};");
        }
    };
    // A gradient (or Hessian) value into the block's output (`whole`) or
    // into the row's slice of it (in a loop over components).
    let store_line = |op: &Op, whole: bool, pad: &str, s: &mut String| {
        if let Op::Store {
            reg,
            output,
            hessian,
            ..
        } = op
        {
            let v = if *hessian { "h" } else { "g" };
            let at = if whole {
                format!("{v}{output}[(r - b0) * {v}w{output}]")
            } else {
                format!("{v}r{output}[c]")
            };
            let _ = writeln!(s, "{pad}{at} = v{reg} * scale;");
        }
    };
    let pad = "                    ";
    let inner = "                        ";
    for item in &pass.scopes[0].items {
        match item {
            Item::Op(op @ Op::Store { .. }) => {
                let _ = writeln!(s, "{pad}// a scalar pred's gradient");
                store_line(op, true, pad, s);
            }
            Item::Op(op) => op_line(op, pad, s),
            Item::Loop { scope, kind } => {
                let sc = &pass.scopes[*scope as usize];
                let e = format!("e{scope}");
                // Bounds known once per row, so the loop has no checks.
                for slot in &slots {
                    let reads = sc.items.iter().any(|i| {
                        matches!(i, Item::Op(Op::Load { slot: q, comp: CompSrc::Loop(_), .. }) if q == slot)
                    });
                    if reads {
                        let _ = writeln!(s, "{pad}let xr{slot} = &xr{slot}[..{e}];");
                    }
                }
                let stores: BTreeSet<(bool, u16)> = sc
                    .items
                    .iter()
                    .filter_map(|i| match i {
                        Item::Op(Op::Store {
                            output, hessian, ..
                        }) => Some((*hessian, *output)),
                        _ => None,
                    })
                    .collect();
                if let Some(a) = alias.get(scope) {
                    let _ = writeln!(
                        s,
                        "{pad}// its exps go straight to the gradient row, which the softmax rescales in place\n{pad}let k{scope}: &mut [T] = &mut {}{}[(r - b0) * {}..][..{e}];",
                        a.v(),
                        a.output,
                        a.width()
                    );
                }
                let taken = alias.iter().find(|(_, a)| a.store == *scope);
                for (hessian, output) in &stores {
                    let v = if *hessian { "h" } else { "g" };
                    match taken {
                        Some((lse, a)) => {
                            let _ = writeln!(s, "{pad}let {} = &mut k{lse}[..{e}];", a.row());
                        }
                        None => {
                            let _ = writeln!(
                                s,
                                "{pad}let {v}r{output} = &mut {v}{output}[(r - b0) * {v}w{output}..][..{e}];"
                            );
                        }
                    }
                }
                let mut count = false;
                if let LoopKind::Reduce {
                    op: RedOp::Mean,
                    filter: Some(_),
                    ..
                } = kind
                {
                    let _ = writeln!(s, "{pad}let mut cnt{scope} = 0usize;");
                    count = true;
                }
                // A logsumexp of an input's row as it stands: its maximum
                // and its test in one pass over the input, and the exps
                // straight from it, with no copy of the row.
                let direct = match (kind, sc.items.as_slice()) {
                    (
                        LoopKind::Reduce {
                            op: RedOp::LogSumExp,
                            fold: Fold::Reg(f),
                            filter: None,
                            acc,
                            ..
                        },
                        [
                            Item::Op(Op::Load {
                                out,
                                slot,
                                comp: CompSrc::Loop(_),
                                ..
                            }),
                        ],
                    ) if out == f => Some((*out, *slot, *acc)),
                    _ => None,
                };
                if let Some((out, slot, acc)) = direct {
                    let test = if checked && inline(slot) && test_at.get(&slot) == Some(&out) {
                        check_expr(&plan.inputs[slot as usize].dom, "x")
                    } else {
                        None
                    };
                    let (m, row) = (format!("m{acc}"), format!("xr{slot}"));
                    match test {
                        Some(t) => {
                            let _ = writeln!(
                                s,
                                "{pad}let ({m}, bad{acc}) = math::max_lanes_tested({row}, T::of(f64::NEG_INFINITY), #[inline(always)] |x| {t});\n{pad}bad |= bad{acc};"
                            );
                        }
                        None => {
                            let _ = writeln!(
                                s,
                                "{pad}let {m} = math::max_lanes({row}, T::of(f64::NEG_INFINITY));"
                            );
                        }
                    }
                    lse_tail(
                        acc,
                        &format!("k{scope}"),
                        &row,
                        cached.contains(scope),
                        pad,
                        s,
                    );
                    continue;
                }
                // The body, with the peeled comparison (if any) as `d`.
                let body = |d: Option<(Reg, &str)>, s: &mut String| {
                    for it in &sc.items {
                        match it {
                            Item::Op(op @ Op::Store { .. }) => store_line(op, false, inner, s),
                            Item::Op(op) => match (d, super::plan::op_writes(op)) {
                                (Some((r, v)), Some(out)) if out == r => {
                                    let _ = writeln!(s, "{inner}let v{r}: T = {v};");
                                }
                                _ => op_line(op, inner, s),
                            },
                            Item::Loop { .. } => unreachable!("no loop in a loop"),
                        }
                    }
                    if let LoopKind::Reduce {
                        op, fold, filter, ..
                    } = kind
                    {
                        if let (true, Some(f)) = (count, filter) {
                            let _ =
                                writeln!(s, "{inner}cnt{scope} += usize::from(v{f} != T::ZERO);");
                        }
                        let val = fold_value(*op, fold, *filter);
                        let _ = writeln!(s, "{inner}k{scope}[c] = {val};");
                    }
                };
                // A one-hot test `c == u` (u fixed for the row) is false
                // but at one component (at two or more only where f32
                // rounds component numbers beyond 2^24 together): the loop
                // runs with it false, then again over the components where
                // it holds (`math::index_range`), which redo their work and
                // overwrite what they wrote. The same values as testing
                // every component, for a compare, a conversion and a select
                // less per component. (A count of the components that pass
                // a filter would count them twice, so such loops are not
                // peeled. A loop that rescales exps kept in its own row
                // would read what it overwrote, so it runs before, over and
                // after the components where the test holds instead.)
                let peel = if count { None } else { one_hot(sc) };
                match peel {
                    // A loop that rescales its own row in place must visit
                    // each component once: the components where the test
                    // holds, and those before and after them.
                    Some((d, u)) if taken.is_some() => {
                        let _ = writeln!(
                            s,
                            "{pad}let hot{scope} = math::index_range::<T>(v{u}, {e});\n{pad}for c in 0..hot{scope}.start {{"
                        );
                        body(Some((d, "T::ZERO")), s);
                        let _ = writeln!(s, "{pad}}}\n{pad}for c in hot{scope}.clone() {{");
                        body(Some((d, "T::ONE")), s);
                        let _ = writeln!(s, "{pad}}}\n{pad}for c in hot{scope}.end..{e} {{");
                        body(Some((d, "T::ZERO")), s);
                        let _ = writeln!(s, "{pad}}}");
                    }
                    _ => {
                        let _ = writeln!(s, "{pad}for c in 0..{e} {{");
                        body(peel.map(|(d, _)| (d, "T::ZERO")), s);
                        let _ = writeln!(s, "{pad}}}");
                        if let Some((d, u)) = peel {
                            let _ =
                                writeln!(s, "{pad}for c in math::index_range::<T>(v{u}, {e}) {{");
                            body(Some((d, "T::ONE")), s);
                            let _ = writeln!(s, "{pad}}}");
                        }
                    }
                }
                if let LoopKind::Reduce { op, acc, .. } = kind {
                    let k = format!("k{scope}");
                    match op {
                        RedOp::Sum => {
                            let _ =
                                writeln!(s, "{pad}let v{acc}: T = T::of(math::sum_lanes({k}));");
                        }
                        RedOp::Mean => {
                            let n = if count {
                                format!("cnt{scope}")
                            } else {
                                e.clone()
                            };
                            let _ = writeln!(
                                s,
                                "{pad}let v{acc}: T = T::of(math::sum_lanes({k})) / T::of({n} as f64);"
                            );
                        }
                        RedOp::Max => {
                            let _ = writeln!(
                                s,
                                "{pad}let v{acc}: T = math::max_lanes({k}, T::of(f64::NAN));"
                            );
                        }
                        RedOp::Min => {
                            let _ = writeln!(
                                s,
                                "{pad}let v{acc}: T = math::min_lanes({k}, T::of(f64::NAN));"
                            );
                        }
                        RedOp::LogSumExp => {
                            let _ = writeln!(
                                s,
                                "{pad}let m{acc} = math::max_lanes({k}, T::of(f64::NEG_INFINITY));"
                            );
                            lse_tail(*acc, &k, &k, cached.contains(scope), pad, s);
                        }
                    }
                }
            }
        }
    }
    pass_footer(pass, "r - b0", s);
    if !widths.is_empty() {
        narrow_fn(plan, pass, index, &soft, &test_at, s);
    }
}

/// What a reduction starts from, and what a component its filter drops
/// adds: nothing to a sum, a NaN to a maximum or minimum (which ignore it),
/// `-inf` to a logsumexp.
fn fold_identity(op: RedOp) -> &'static str {
    match op {
        RedOp::Sum | RedOp::Mean => "T::ZERO",
        RedOp::Max | RedOp::Min => "T::of(f64::NAN)",
        RedOp::LogSumExp => "T::of(f64::NEG_INFINITY)",
    }
}

/// The value a reduction folds at one component (`v{reg}` locals), the
/// identity where its filter drops the component.
fn fold_value(op: RedOp, fold: &Fold, filter: Option<Reg>) -> String {
    let val = match fold {
        Fold::Reg(r) => format!("v{r}"),
        Fold::Prod(a, b) => format!("v{a} * v{b}"),
    };
    match filter {
        None => val,
        Some(f) => format!("math::sel(v{f} != T::ZERO, {val}, {})", fold_identity(op)),
    }
}

/// Every output a pass stores, as `(hessian, output)`.
fn stores(pass: &Pass) -> BTreeSet<(bool, u16)> {
    let mut outs = BTreeSet::new();
    for sc in &pass.scopes {
        for item in &sc.items {
            if let Item::Op(Op::Store {
                output, hessian, ..
            }) = item
            {
                outs.insert((*hessian, *output));
            }
        }
    }
    outs
}

/// A looped pass's inputs (`w` values per row), tables, outputs (from row
/// `b0` on, `gw`/`hw` values per row) and output tables as slices, each
/// line indented by `pad`.
fn looped_io(
    plan: &Plan,
    pass: &Pass,
    slots: &BTreeSet<u16>,
    tables_in: &BTreeSet<u16>,
    outs: &BTreeSet<(bool, u16)>,
    pad: &str,
    s: &mut String,
) {
    for slot in slots {
        let _ = writeln!(
            s,
            "{pad}// `{}`\n{pad}let w{slot} = b.width({slot});\n{pad}let x{slot} = unsafe {{ std::slice::from_raw_parts(b.input({slot}), n * w{slot}) }};",
            plan.inputs[*slot as usize].name
        );
    }
    for t in tables_in {
        let _ = writeln!(
            s,
            "{pad}let t{t} = unsafe {{ std::slice::from_raw_parts(b.table({t}), n) }};"
        );
    }
    for (hessian, output) in outs {
        let (v, get, decl) = if *hessian {
            ("h", "hessian", &plan.hessians[*output as usize])
        } else {
            ("g", "grad", &plan.grads[*output as usize])
        };
        let _ = writeln!(
            s,
            "{pad}let {v}w{output} = b.width({});\n{pad}// SAFETY: each block writes only its own rows.\n{pad}let {v}{output} = unsafe {{ std::slice::from_raw_parts_mut(b.{get}({output}).add(b0 * {v}w{output}), (b1 - b0) * {v}w{output}) }};",
            decl.slot
        );
    }
    for (_, t) in &pass.tables {
        let _ = writeln!(
            s,
            "{pad}let to{t} = unsafe {{ std::slice::from_raw_parts_mut(b.table_out({t}).add(b0), b1 - b0) }};"
        );
    }
}

/// Whether a looped pass tests input `slot` as it reads it (a plain test
/// of each value, at its first full read `test_at`).
fn inline_test(plan: &Plan, test_at: &BTreeMap<u16, Reg>, slot: u16) -> bool {
    test_at.contains_key(&slot) && check_expr(&plan.inputs[slot as usize].dom, "v").is_some()
}

/// A looped pass's `ok` and `bad`, and, when the plan tests block by
/// block, the values it cannot test as it reads them (label sets, classes,
/// rows, components read only by index), tested before any is read: an
/// index is only used once known to be valid.
fn block_tests(plan: &Plan, test_at: &BTreeMap<u16, Reg>, pad: &str, s: &mut String) {
    let _ = writeln!(
        s,
        "{pad}let mut ok = true;\n{pad}let mut bad = T::Bits::default();"
    );
    if plan.checks_per_block() {
        for slot in 0..plan.inputs.len() as u16 {
            if !inline_test(plan, test_at, slot) {
                let _ = writeln!(
                    s,
                    "{pad}ok &= b.valid({slot}, b0, b1); // `{}`",
                    plan.inputs[slot as usize].name
                );
            }
        }
        let _ = writeln!(s, "{pad}if !ok {{\n{pad}    return false;\n{pad}}}");
    }
}

/// A looped pass's body for narrow vectors (every loop under `NARROW`
/// components): rows in blocks of `NARROW_ROWS`, each input's block
/// transposed into scratch so that a component's values lie contiguous
/// across the rows. Every instruction then runs as a loop over the block's
/// rows, vectorised along them, and a loop over components runs its rows
/// innermost; a row's scalars are per-row arrays on the stack, reductions
/// fold a component at a time into per-row accumulators, and gradients are
/// written transposed and copied out a row at a time. The hand-written
/// softmax cross-entropy for ten classes is written this way; a loop per
/// row over ten components spent more on per-row overhead than on the
/// arithmetic. Rows past the end of a short last block repeat its last
/// row, so that every lane computes on (and tests) real values.
fn narrow_fn(
    plan: &Plan,
    pass: &Pass,
    index: usize,
    soft: &BTreeMap<Reg, (u16, Reg)>,
    test_at: &BTreeMap<u16, Reg>,
    s: &mut String,
) {
    let sig = "b: &Block<'_, T>, b0: usize, b1: usize, sums: &mut [f64]) -> bool";
    let _ = writeln!(
        s,
        "\n    #[inline(always)]\n    unsafe fn narrow{index}<T: Float, const F: bool>({sig} {{\n        const R: usize = {NARROW_ROWS};\n        let n = b.rows();\n        let scale = b.scale();"
    );
    let ops_of = |sc: u16| {
        pass.scopes[sc as usize]
            .items
            .iter()
            .filter_map(|i| match i {
                Item::Op(op) => Some(op),
                Item::Loop { .. } => None,
            })
    };
    let all_ops: Vec<&Op> = (0..pass.scopes.len() as u16).flat_map(ops_of).collect();
    let mut slots = BTreeSet::new();
    let mut tables_in = BTreeSet::new();
    for op in &all_ops {
        match op {
            Op::Load { slot, .. } => {
                slots.insert(*slot);
            }
            Op::TableLoad { table, .. } => {
                tables_in.insert(*table);
            }
            _ => {}
        }
    }
    let outs = stores(pass);
    let is_vector = |slot: u16| plan.inputs[slot as usize].size.is_some();
    looped_io(plan, pass, &slots, &tables_in, &outs, "        ", s);
    for t in &tables_in {
        let _ = writeln!(s, "        let mut tt{t} = [T::ZERO; R];");
    }
    let out_name = |hessian: bool| if hessian { "h" } else { "g" };
    // Loops: extents; a logsumexp's values wait in a transposed buffer for
    // its maximum.
    let mut lse_loops = Vec::new();
    for item in &pass.scopes[0].items {
        if let Item::Loop { scope, kind } = item {
            let Some(Range::Feature(z)) = pass.scopes[*scope as usize].range else {
                unreachable!("looped passes loop over components");
            };
            let _ = writeln!(s, "        let e{scope} = b.size({z});");
            if let LoopKind::Reduce {
                op: RedOp::LogSumExp,
                ..
            } = kind
            {
                lse_loops.push(*scope);
            }
        }
    }
    // Input tests, as in the row-by-row body.
    let checked = plan.checks_per_block();
    let inline = |slot: u16| inline_test(plan, test_at, slot);
    block_tests(plan, test_at, "        ", s);
    // Scratch: the transposed inputs, logsumexp values and outputs.
    let mut parts: Vec<(String, String)> = Vec::new();
    for slot in &slots {
        if is_vector(*slot) {
            parts.push((format!("tx{slot}"), format!("w{slot} * R")));
        } else {
            let _ = writeln!(s, "        let mut tx{slot} = [T::ZERO; R];");
        }
    }
    for l in &lse_loops {
        parts.push((format!("k{l}"), format!("e{l} * R")));
    }
    for (hessian, output) in &outs {
        let v = out_name(*hessian);
        parts.push((format!("t{v}{output}"), format!("{v}w{output} * R")));
    }
    let total: Vec<&str> = parts.iter().map(|(_, len)| len.as_str()).collect();
    let _ = writeln!(
        s,
        "        let mut scratch = b.scratch({});\n        let rest: &mut [T] = &mut scratch;",
        total.join(" + ")
    );
    for (name, len) in &parts {
        let _ = writeln!(s, "        let ({name}, rest) = rest.split_at_mut({len});");
    }
    // A per-row array for every value of the root scope: its instructions'
    // and its loops' results.
    let mut root_regs = BTreeSet::new();
    for item in &pass.scopes[0].items {
        match item {
            Item::Op(op) => {
                if let Some(out) = super::plan::op_writes(op) {
                    root_regs.insert(out);
                }
            }
            Item::Loop {
                kind: LoopKind::Reduce { acc, op, .. },
                ..
            } => {
                root_regs.insert(*acc);
                if *op == RedOp::LogSumExp {
                    let _ = writeln!(s, "        let mut inv{acc} = [T::ONE; R];");
                }
            }
            Item::Loop { .. } => {}
        }
    }
    for r in &root_regs {
        let _ = writeln!(s, "        let mut a{r} = [T::ZERO; R];");
    }
    let _ = writeln!(
        s,
        "        let mut r0 = b0;\n        while r0 < b1 {{\n            let len = R.min(b1 - r0);"
    );
    // Transposed in, the last row repeated past the end of the block. A
    // whole block reads each component's column across the rows (vector
    // gathers: `cce_logits` f32 at C = 10 took 12.2 ms instead of 14.5 ms
    // with a row at a time, on Zen 5); the way out is a row at a time
    // (scattered stores took 5-15% longer).
    for slot in &slots {
        if is_vector(*slot) {
            let _ = writeln!(
                s,
                "            if len == R {{\n                let xb = &x{slot}[r0 * w{slot}..(r0 + R) * w{slot}];\n                for (c, col) in tx{slot}.chunks_exact_mut(R).enumerate() {{\n                    for l in 0..R {{\n                        // SAFETY: l < R and c < w{slot}, and `xb` has R rows of w{slot}.\n                        col[l] = unsafe {{ *xb.get_unchecked(l * w{slot} + c) }};\n                    }}\n                }}\n            }} else {{\n                for l in 0..R {{\n                    let r = r0 + l.min(len - 1);\n                    for (c, &v) in x{slot}[r * w{slot}..(r + 1) * w{slot}].iter().enumerate() {{\n                        tx{slot}[c * R + l] = v;\n                    }}\n                }}\n            }}"
            );
        } else {
            let _ = writeln!(
                s,
                "            for l in 0..R {{\n                tx{slot}[l] = x{slot}[r0 + l.min(len - 1)];\n            }}"
            );
        }
    }
    for t in &tables_in {
        let _ = writeln!(
            s,
            "            for l in 0..R {{\n                tt{t}[l] = t{t}[r0 + l.min(len - 1)];\n            }}"
        );
    }
    let leaf = |op: &Op| -> String {
        match op {
            Op::CurRow { .. } => "T::of((r0 + l) as f64)".into(),
            Op::Iota { .. } => "math::index::<T>(c)".into(),
            Op::TableLoad { table, .. } => format!("tt{table}[l]"),
            Op::Load { slot, comp, .. } => match comp {
                CompSrc::None => format!("tx{slot}[l]"),
                CompSrc::Loop(_) => format!("tx{slot}c[l]"),
                CompSrc::Reg(i) => format!("math::gather_lane(tx{slot}, w{slot}, R, v{i}, l)"),
            },
            _ => unreachable!("not a leaf"),
        }
    };
    let p4 = "                ";
    let p5 = "                    ";
    // The root's values a group of instructions reads, as locals.
    let copy_in = |reads: &BTreeSet<Reg>, defined: &BTreeSet<Reg>, pad: &str, s: &mut String| {
        for r in reads {
            if defined.contains(r) {
                let _ = writeln!(s, "{pad}let v{r}: T = a{r}[l];");
            }
        }
    };
    // One instruction inside a loop over the block's rows.
    let op_line = |op: &Op, pad: &str, s: &mut String| match op {
        Op::Store {
            reg,
            output,
            hessian,
            scope,
        } => {
            let c = if scope.is_some() { "c" } else { "" };
            let _ = writeln!(
                s,
                "{pad}t{}{output}{c}[l] = v{reg} * scale;",
                out_name(*hessian)
            );
        }
        Op::Softmax { out, .. } => {
            let (ls, acc) = soft[out];
            let _ = writeln!(s, "{pad}let v{out}: T = k{ls}c[l] * inv{acc}[l];");
        }
        _ => {
            let Some(out) = super::plan::op_writes(op) else {
                return;
            };
            let _ = writeln!(s, "{pad}let v{out}: T = {};", expr(op, &leaf));
            if let Op::Load { slot, .. } = op
                && checked
                && inline(*slot)
                && test_at.get(slot) == Some(&out)
                && let Some(test) = check_expr(&plan.inputs[*slot as usize].dom, &format!("v{out}"))
            {
                let _ = writeln!(s, "{pad}bad |= {test};");
            }
        }
    };
    let reads_of = |op: &Op| -> Vec<Reg> {
        match op {
            // (a softmax reads its logsumexp's buffers, not registers)
            Op::Softmax { .. } => Vec::new(),
            _ => super::plan::op_reads(op),
        }
    };
    let mut defined: BTreeSet<Reg> = BTreeSet::new();
    let items = &pass.scopes[0].items;
    let mut i = 0;
    while i < items.len() {
        match &items[i] {
            Item::Op(_) => {
                // A run of the root's instructions, one loop over the rows.
                let mut j = i;
                while j < items.len() && matches!(items[j], Item::Op(_)) {
                    j += 1;
                }
                let group: Vec<&Op> = items[i..j]
                    .iter()
                    .filter_map(|it| match it {
                        Item::Op(op) => Some(op),
                        Item::Loop { .. } => None,
                    })
                    .collect();
                let reads: BTreeSet<Reg> = group.iter().flat_map(|op| reads_of(op)).collect();
                let _ = writeln!(s, "            for l in 0..R {{");
                copy_in(&reads, &defined, p4, s);
                for op in &group {
                    op_line(op, p4, s);
                    if let Some(out) = super::plan::op_writes(op) {
                        let _ = writeln!(s, "{p4}a{out}[l] = v{out};");
                        defined.insert(out);
                    }
                }
                let _ = writeln!(s, "            }}");
                i = j;
            }
            Item::Loop { scope, kind } => {
                let sc = *scope;
                let e = format!("e{sc}");
                let body: Vec<&Op> = ops_of(sc).collect();
                let mut reads: BTreeSet<Reg> = body.iter().flat_map(|op| reads_of(op)).collect();
                reads.extend(super::plan::loop_reads(kind));
                // Accumulators' starting values.
                if let LoopKind::Reduce {
                    op, acc, filter, ..
                } = kind
                {
                    let _ = writeln!(s, "            a{acc} = [{}; R];", fold_identity(*op));
                    if *op == RedOp::Mean && filter.is_some() {
                        let _ = writeln!(s, "            let mut cnt{sc} = [T::ZERO; R];");
                    }
                }
                let _ = writeln!(s, "            for c in 0..{e} {{");
                // This component's row of every transposed buffer the loop
                // reads or writes, `R` long, so the row loop has no checks.
                let mut cols: BTreeSet<(String, bool)> = BTreeSet::new();
                for op in &body {
                    match op {
                        Op::Load {
                            slot,
                            comp: CompSrc::Loop(_),
                            ..
                        } => {
                            cols.insert((format!("tx{slot}"), false));
                        }
                        Op::Softmax { out, .. } => {
                            cols.insert((format!("k{}", soft[out].0), false));
                        }
                        Op::Store {
                            output, hessian, ..
                        } => {
                            cols.insert((format!("t{}{output}", out_name(*hessian)), true));
                        }
                        _ => {}
                    }
                }
                if let LoopKind::Reduce {
                    op: RedOp::LogSumExp,
                    ..
                } = kind
                {
                    cols.insert((format!("k{sc}"), true));
                }
                for (buf, write) in &cols {
                    let m = if *write { "mut " } else { "" };
                    let _ = writeln!(s, "{p4}let {buf}c = &{m}{buf}[c * R..][..R];");
                }
                let _ = writeln!(s, "{p4}for l in 0..R {{");
                copy_in(&reads, &defined, p5, s);
                for op in &body {
                    op_line(op, p5, s);
                }
                if let LoopKind::Reduce {
                    op,
                    acc,
                    fold,
                    filter,
                    ..
                } = kind
                {
                    if let (RedOp::Mean, Some(f)) = (op, filter) {
                        let _ = writeln!(
                            s,
                            "{p5}cnt{sc}[l] = cnt{sc}[l] + math::truth::<T>(v{f} != T::ZERO);"
                        );
                    }
                    let val = fold_value(*op, fold, *filter);
                    let line = match op {
                        RedOp::Sum | RedOp::Mean => format!("a{acc}[l] = a{acc}[l] + {val};"),
                        RedOp::Max => format!("a{acc}[l] = a{acc}[l].max({val});"),
                        RedOp::Min => format!("a{acc}[l] = a{acc}[l].min({val});"),
                        RedOp::LogSumExp => format!("k{sc}c[l] = {val};"),
                    };
                    let _ = writeln!(s, "{p5}{line}");
                }
                let _ = writeln!(s, "{p4}}}\n            }}");
                if let LoopKind::Reduce {
                    op, acc, filter, ..
                } = kind
                {
                    match op {
                        RedOp::Mean => {
                            let count = if filter.is_some() {
                                format!("cnt{sc}[l]")
                            } else {
                                format!("T::of({e} as f64)")
                            };
                            let _ = writeln!(
                                s,
                                "            for l in 0..R {{\n{p4}a{acc}[l] = a{acc}[l] / {count};\n            }}"
                            );
                        }
                        // Each row's maximum, the exps shifted by it (kept
                        // for a softmax), their sum; a row without a finite
                        // maximum is that maximum, as in the interpreter.
                        RedOp::LogSumExp => {
                            let _ = writeln!(
                                s,
                                "            for col in k{sc}.chunks_exact(R) {{\n{p4}for l in 0..R {{\n{p5}a{acc}[l] = a{acc}[l].max(col[l]);\n{p4}}}\n            }}\n            let mut sum{acc} = [T::ZERO; R];\n            for col in k{sc}.chunks_exact_mut(R) {{\n{p4}for l in 0..R {{\n{p5}let x = (col[l] - a{acc}[l]).exp::<F>();\n{p5}col[l] = x;\n{p5}sum{acc}[l] = sum{acc}[l] + x;\n{p4}}}\n            }}\n            for l in 0..R {{\n{p4}let m = a{acc}[l];\n{p4}let finite = (m > T::of(f64::NEG_INFINITY)) & (m < T::of(f64::INFINITY));\n{p4}a{acc}[l] = math::sel(finite, m + sum{acc}[l].ln::<F>(), m);\n{p4}inv{acc}[l] = math::sel(finite, T::ONE / sum{acc}[l], T::ONE);\n            }}"
                            );
                        }
                        _ => {}
                    }
                    defined.insert(*acc);
                }
                i += 1;
            }
        }
    }
    // Gradients out a row at a time; the block's sums and tables.
    for (hessian, output) in &outs {
        let v = out_name(*hessian);
        let _ = writeln!(
            s,
            "            for l in 0..len {{\n{p4}let row = &mut {v}{output}[(r0 - b0 + l) * {v}w{output}..][..{v}w{output}];\n{p4}for (c, o) in row.iter_mut().enumerate() {{\n{p5}// SAFETY: c < {v}w{output} and l < R, the buffer's shape.\n{p5}*o = unsafe {{ *t{v}{output}.get_unchecked(c * R + l) }};\n{p4}}}\n            }}"
        );
    }
    for (reg, slot) in &pass.sums {
        let _ = writeln!(
            s,
            "            sums[{slot}] += math::sum_lanes(&a{reg}[..len]);"
        );
    }
    for (reg, t) in &pass.tables {
        let _ = writeln!(
            s,
            "            to{t}[r0 - b0..r0 - b0 + len].copy_from_slice(&a{reg}[..len]);"
        );
    }
    let _ = writeln!(
        s,
        "            r0 += len;\n        }}\n        ok & (bad == T::Bits::default())\n    }}"
    );
}
