//! Softmaxes computed from their logsumexp's exps.
//!
//! Softmax cross-entropy's gradient is `exp(z - logsumexp(z)) - onehot`, and
//! its value needs `logsumexp(z)`: derived and simplified, a pass computes
//! `exp` twice per logit, once in the logsumexp and once in the softmax. A
//! hand-written softmax computes it once: the logsumexp keeps
//! `e = exp(z - max)` per component and the softmax is `e / sum`. This
//! module finds that pattern in a planned pass and rewrites it so: the
//! logsumexp loop gets a cache register for its exps (`LoopKind::Reduce`'s
//! `cache`) and the `exp` becomes an `Op::Softmax` reading it. Both
//! backends then run the rewritten pass: the generated loops keep a row's
//! exps in its buffer, the interpreter keeps them when the logsumexp ran in
//! one tile (and otherwise computes the `exp` it replaced).
//!
//! The two forms differ by rounding only (a few ulp), within the tolerance
//! of the reference tests. A row whose maximum is not finite (all `-inf`,
//! an `inf` or a NaN) takes the `exp` it replaced, so that it gets exactly
//! what the unfused pass would give; over the batch, where the interpreter
//! keeps the exps and skips computing `x` (a product), such a row (whose
//! loss is infinite or NaN) keeps `cache * inv` (see `run::skipped`).

use super::plan::{
    BFn, CompSrc, Fold, Item, LoopKind, Op, Pass, Reg, RegDef, RowSrc, SoftmaxX, UFn,
};
use crate::ir::{Func, RedOp};
use std::collections::{BTreeMap, BTreeSet};

/// Rewrites each softmax of the pass to read its logsumexp's exps (the
/// instructions only the replaced `exp` read are left for
/// `plan::drop_unread`).
pub(crate) fn fuse(pass: &mut Pass) {
    let def = definitions(pass);
    // Only the shape both backends handle: one loop over components at the
    // root, the softmax and its logsumexp as row-dependent as each other.
    let found: Vec<(Reg, u16, Reg, SoftmaxX)> = find(pass, &def)
        .into_iter()
        .filter_map(|(r, (ls, acc, x))| {
            let (d, a) = (&pass.regs[r as usize], &pass.regs[acc as usize]);
            let st = *d.loops.first()?;
            // (a softmax over the batch may sit in a loop over a gradient's
            // components: only the interpreter runs batch loops)
            let over_batch = pass.scopes[st as usize].range == Some(super::plan::Range::Batch);
            let fits = d.loops.len() == 1
                && (pass.scopes[st as usize].depth == 1 || over_batch)
                && pass.scopes[ls as usize].depth == 1
                && a.loops.is_empty()
                && d.rowdep == a.rowdep;
            // `x` as the op reads it when it computes the exp itself: a
            // component of an input is read there, not loaded beforehand
            // for rows that do not need it.
            let x = match def.get(&x) {
                Some((
                    Op::Load {
                        slot,
                        row: RowSrc::Cur,
                        comp: CompSrc::Loop(l),
                        ..
                    },
                    _,
                )) if *l == st && d.rowdep => SoftmaxX::Input(*slot),
                _ if pass.regs[x as usize].loops == d.loops
                    && pass.regs[x as usize].rowdep == d.rowdep =>
                {
                    SoftmaxX::Reg(x)
                }
                _ => return None,
            };
            fits.then_some((r, ls, acc, x))
        })
        .collect();
    // One cache per logsumexp, however many softmaxes read it.
    let mut cache: BTreeMap<Reg, Reg> = BTreeMap::new();
    for &(_, ls, acc, _) in &found {
        if let std::collections::btree_map::Entry::Vacant(e) = cache.entry(acc) {
            let rowdep = pass.regs[acc as usize].rowdep;
            pass.regs.push(RegDef {
                loops: vec![ls],
                rowdep,
            });
            e.insert((pass.regs.len() - 1) as Reg);
        }
    }
    // The logsumexps' `aux`: after a fold with a cache, the reciprocal of
    // the sum of its exps.
    let mut inv: BTreeMap<Reg, Reg> = BTreeMap::new();
    for item in &mut pass.scopes[0].items {
        if let Item::Loop {
            kind:
                LoopKind::Reduce {
                    acc,
                    aux,
                    cache: slot,
                    ..
                },
            ..
        } = item
            && let Some(&c) = cache.get(acc)
        {
            *slot = Some(c);
            inv.insert(*acc, *aux);
        }
    }
    for &(r, ls, acc, x) in &found {
        for sc in &mut pass.scopes {
            for item in &mut sc.items {
                if let Item::Op(op) = item
                    && super::plan::op_writes(op) == Some(r)
                {
                    *op = Op::Softmax {
                        out: r,
                        x,
                        cache: cache[&acc],
                        inv: inv[&acc],
                        lse: acc,
                        scope: ls,
                    };
                }
            }
        }
    }
}

/// Each register's defining instruction and the scope it is in.
fn definitions(pass: &Pass) -> BTreeMap<Reg, (&Op, u16)> {
    let mut def = BTreeMap::new();
    for (si, sc) in pass.scopes.iter().enumerate() {
        for item in &sc.items {
            if let Item::Op(op) = item
                && let Some(out) = super::plan::op_writes(op)
            {
                def.insert(out, (op, si as u16));
            }
        }
    }
    def
}

/// Whether register `a`, read in loop `la`, computes what `b` computes in
/// loop `lb` at the same component.
fn same_at(pass: &Pass, def: &BTreeMap<Reg, (&Op, u16)>, a: Reg, la: u16, b: Reg, lb: u16) -> bool {
    let folds = folds(pass);
    same_memo(def, &folds, a, b, &mut vec![(la, lb)], &mut BTreeSet::new())
}

/// Each reduction's accumulator: its loop's scope, kind and fold.
fn folds(pass: &Pass) -> BTreeMap<Reg, (u16, RedOp, Fold)> {
    let mut out = BTreeMap::new();
    for sc in &pass.scopes {
        for item in &sc.items {
            if let Item::Loop {
                scope,
                kind:
                    LoopKind::Reduce {
                        op,
                        acc,
                        fold,
                        filter: None,
                        ..
                    },
            } = item
            {
                out.insert(*acc, (*scope, *op, *fold));
            }
        }
    }
    out
}

/// `same_at`, remembering the pairs already found equal, so that shared
/// subexpressions (`a2 = a1 + a1`, ...) are compared once, not once per path.
/// `loops` pairs the loops the two sides are compared in (the softmax's
/// and the logsumexp's, then those of reductions inside them).
fn same_memo(
    def: &BTreeMap<Reg, (&Op, u16)>,
    folds: &BTreeMap<Reg, (u16, RedOp, Fold)>,
    a: Reg,
    b: Reg,
    loops: &mut Vec<(u16, u16)>,
    seen: &mut BTreeSet<(Reg, Reg)>,
) -> bool {
    if a == b || seen.contains(&(a, b)) {
        return true;
    }
    // Two reductions of the same kind over paired loops.
    if let (Some(&(sa, opa, fa)), Some(&(sb, opb, fb))) = (folds.get(&a), folds.get(&b)) {
        if opa != opb {
            return false;
        }
        loops.push((sa, sb));
        let mut same =
            |p: Reg, q: Reg, loops: &mut Vec<(u16, u16)>| same_memo(def, folds, p, q, loops, seen);
        let equal = match (fa, fb) {
            (Fold::Reg(x), Fold::Reg(y)) => same(x, y, loops),
            (Fold::Prod(x1, y1), Fold::Prod(x2, y2)) => {
                (same(x1, x2, loops) && same(y1, y2, loops))
                    || (same(x1, y2, loops) && same(y1, x2, loops))
            }
            _ => false,
        };
        loops.pop();
        if equal {
            seen.insert((a, b));
        }
        return equal;
    }
    let paired = |i: u16, j: u16, loops: &Vec<(u16, u16)>| loops.contains(&(i, j));
    let (Some(&(x, _)), Some(&(y, _))) = (def.get(&a), def.get(&b)) else {
        return false;
    };
    let rows_paired = |p: &RowSrc, q: &RowSrc, loops: &Vec<(u16, u16)>| match (p, q) {
        (RowSrc::Cur, RowSrc::Cur) => true,
        (RowSrc::Loop(i), RowSrc::Loop(j)) => paired(*i, *j, loops),
        _ => false,
    };
    let pairs = loops.clone();
    let mut same = |p: Reg, q: Reg| same_memo(def, folds, p, q, loops, seen);
    let equal = match (x, y) {
        (Op::Const { v: p, .. }, Op::Const { v: q, .. }) => p.to_bits() == q.to_bits(),
        (Op::Uniform { u: p, .. }, Op::Uniform { u: q, .. }) => p == q,
        (Op::Iota { scope: p, .. }, Op::Iota { scope: q, .. }) => paired(*p, *q, &pairs),
        (Op::CurRow { .. }, Op::CurRow { .. }) => true,
        (
            Op::TableLoad {
                table: p, row: rp, ..
            },
            Op::TableLoad {
                table: q, row: rq, ..
            },
        ) => p == q && rows_paired(rp, rq, &pairs),
        (
            Op::Load {
                slot: p,
                row: rp,
                comp: cp,
                ..
            },
            Op::Load {
                slot: q,
                row: rq,
                comp: cq,
                ..
            },
        ) => {
            p == q
                && rows_paired(rp, rq, &pairs)
                && match (cp, cq) {
                    (CompSrc::None, CompSrc::None) => true,
                    (CompSrc::Loop(i), CompSrc::Loop(j)) => paired(*i, *j, &pairs),
                    (CompSrc::Reg(i), CompSrc::Reg(j)) => same(*i, *j),
                    _ => false,
                }
        }
        (Op::Un { f: p, a: i, .. }, Op::Un { f: q, a: j, .. }) => p == q && same(*i, *j),
        (Op::Powi { n: p, a: i, .. }, Op::Powi { n: q, a: j, .. }) => p == q && same(*i, *j),
        (
            Op::Bin {
                f: p, a: i, b: k, ..
            },
            Op::Bin {
                f: q, a: j, b: l, ..
            },
        ) => p == q && same(*i, *j) && same(*k, *l),
        (
            Op::Sel {
                c: p, a: i, b: k, ..
            },
            Op::Sel {
                c: q, a: j, b: l, ..
            },
        ) => same(*p, *q) && same(*i, *j) && same(*k, *l),
        _ => false,
    };
    if equal {
        seen.insert((a, b));
    }
    equal
}

/// The softmaxes of a pass: `exp(x - logsumexp(x))` in a loop over the
/// components whose `logsumexp` the pass computed, at the root, over the
/// same range. Maps the `exp` register to the logsumexp loop's scope and
/// accumulator, and the register of its `x`.
fn find(pass: &Pass, def: &BTreeMap<Reg, (&Op, u16)>) -> BTreeMap<Reg, (u16, Reg, Reg)> {
    // Logsumexp loops without a filter: accumulator -> (scope, body).
    let mut lse = BTreeMap::new();
    for item in &pass.scopes[0].items {
        if let Item::Loop {
            scope,
            kind:
                LoopKind::Reduce {
                    op: RedOp::LogSumExp,
                    acc,
                    fold: Fold::Reg(body),
                    filter: None,
                    ..
                },
        } = item
        {
            lse.insert(*acc, (*scope, *body));
        }
    }
    let mut out = BTreeMap::new();
    for (&r, &(op, st)) in def {
        let Op::Un {
            f: UFn::F(Func::Exp),
            a,
            ..
        } = op
        else {
            continue;
        };
        if st == 0 {
            continue;
        }
        // x - lse, as `x + (-lse)` or `x - lse`.
        let split = match def.get(a) {
            Some((
                Op::Bin {
                    f: BFn::Sub,
                    a: x,
                    b: l,
                    ..
                },
                _,
            )) => vec![(*x, *l)],
            Some((
                Op::Bin {
                    f: BFn::Add,
                    a: p,
                    b: q,
                    ..
                },
                _,
            )) => [(*p, *q), (*q, *p)]
                .into_iter()
                .filter_map(|(x, n)| match def.get(&n) {
                    Some((
                        Op::Un {
                            f: UFn::Neg, a: l, ..
                        },
                        _,
                    )) => Some((x, *l)),
                    _ => None,
                })
                .collect(),
            _ => Vec::new(),
        };
        for (x, l) in split {
            if let Some(&(ls, body)) = lse.get(&l)
                && pass.scopes[ls as usize].range == pass.scopes[st as usize].range
                && same_at(pass, def, x, st, body, ls)
            {
                out.insert(r, (ls, l, x));
                break;
            }
        }
    }
    out
}
