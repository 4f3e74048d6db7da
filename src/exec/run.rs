//! The executor: runs a pass over a block of rows, chunk by chunk.
//!
//! Registers live in one arena per worker, sized for the chunk and tile
//! sizes chosen from the shapes, with buffers reused once a register is
//! dead, so that every intermediate stays in cache. Each instruction is a
//! loop over the register's positions; the row is the innermost, contiguous
//! axis, so the loops vectorise. The same code is compiled three times,
//! for the baseline x86-64 target, with AVX2 and FMA, and with AVX-512,
//! and the widest the CPU has is chosen at run time (`isa.rs`): the
//! default build reaches the vector units without any `RUSTFLAGS`.

use super::isa::{self, Isa};
use super::math::{self, Float, sel};
use super::plan::{
    BFn, CompSrc, Fold, Item, LoopKind, MAX_LOOPS, Op, Pass, Range, Reg, RowSrc, SoftmaxX, UFn,
};
use crate::ir::{Cmp, Func, RedOp};

/// Elements per register at most: 64 KiB of f32, so that the live
/// registers of an instruction fit in L2.
const BUDGET: usize = 16 * 1024;
/// The longest chunk of rows.
const MAX_CHUNK: usize = 512;
/// Bytes per chunk of a logsumexp over the batch kept whole for its
/// softmaxes (`n` exps per row): the second-level cache of the machines we
/// measure on. (InfoNCE at n = 4096: 64 rows of f32, 32 of f64; 64 rows of
/// f64 ran 15-20% slower, 32 of f32 10% slower, its products' contraction
/// over the chunk's rows being shorter.)
const CACHE_BYTES: usize = 1024 * 1024;

#[cfg(test)]
thread_local! {
    /// `CACHE_BYTES` for this thread's layouts, so that a test can run the
    /// layout that keeps no exps at small sizes.
    static CACHE_LIMIT: std::cell::Cell<usize> = const { std::cell::Cell::new(CACHE_BYTES) };
}

fn cache_bytes() -> usize {
    #[cfg(test)]
    return CACHE_LIMIT.with(|c| c.get());
    #[cfg(not(test))]
    CACHE_BYTES
}

/// The longest chunk of rows when a vector is split into tiles.
const SPLIT_CHUNK: usize = 64;

/// Chunk, tile sizes and register buffers of one pass for given shapes.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Layout {
    /// Rows per chunk.
    pub chunk: usize,
    /// Tile size of each scope (the root's entry is unused).
    pub tile: Vec<usize>,
    /// Full extent of each scope's index.
    pub extent: Vec<usize>,
    /// Offset of each register's buffer in the arena.
    pub offset: Vec<usize>,
    /// Arena length.
    pub arena: usize,
    /// Registers not computed at these shapes: those only a softmax's
    /// fallback reads (`exp(x - lse)` from `x`) where its logsumexp runs in
    /// one tile and keeps its exps.
    pub skip: Vec<bool>,
    /// Registers read in place, without a buffer: an input's or a table's
    /// values (for another row's vector, whole rows of it).
    pub in_place: Vec<bool>,
}

/// Chooses chunk and tile sizes and assigns buffers.
pub(crate) fn layout(
    pass: &Pass,
    sizes: &[usize],
    rows: usize,
    width: &dyn Fn(u16) -> usize,
    value_bytes: usize,
) -> Layout {
    let extent: Vec<usize> = pass
        .scopes
        .iter()
        .map(|s| match s.range {
            None => 0,
            Some(Range::Feature(sz)) => sizes[sz as usize],
            Some(Range::Batch) => rows,
        })
        .collect();
    let mut tile: Vec<usize> = extent.iter().map(|&e| e.clamp(1, 4096)).collect();
    let mut chunk = rows.clamp(1, MAX_CHUNK);
    // A logsumexp over the batch whose exps a softmax reads runs in one
    // tile when a chunk's rows of it fit `CACHE_BYTES` (at 16 rows or
    // more): the softmaxes then read the exps and nothing computes their
    // `x` again (for InfoNCE, a whole product of the two embeddings).
    let mut pinned = vec![false; pass.scopes.len()];
    for item in &pass.scopes[0].items {
        if let Item::Loop {
            scope,
            kind: LoopKind::Reduce { cache: Some(_), .. },
        } = item
            && pass.scopes[*scope as usize].range == Some(Range::Batch)
        {
            let e = extent[*scope as usize].max(1);
            let fit = cache_bytes() / value_bytes / e / 16 * 16;
            if fit >= 16 {
                chunk = chunk.min(fit);
                tile[*scope as usize] = e;
                pinned[*scope as usize] = true;
            }
        }
    }
    // Another row's vector, read in place when its rows are whole: no
    // buffer to budget for.
    let mut other_rows = vec![false; pass.regs.len()];
    for item in pass.scopes.iter().flat_map(|s| &s.items) {
        if let Item::Op(Op::Load {
            out,
            row: RowSrc::Loop(_),
            comp: CompSrc::Loop(_),
            ..
        }) = item
        {
            other_rows[*out as usize] = true;
        }
    }
    // Against the budget (`pin`), a register in a pinned loop may hold a
    // chunk's rows of the whole batch, and no more: its other loops shrink
    // until it does (a squared distance's components, for one).
    let cap_of = |tile: &[usize], chunk: usize, r: usize, pin: bool| -> usize {
        let d = &pass.regs[r];
        let rows = if d.rowdep { chunk } else { 1 };
        let in_pinned = pin && d.loops.iter().any(|&l| pinned[l as usize]);
        if in_pinned && other_rows[r] {
            return 0;
        }
        let others: usize = d
            .loops
            .iter()
            .filter(|&&l| !(in_pinned && pinned[l as usize]))
            .map(|&l| tile[l as usize])
            .product();
        if in_pinned {
            others * rows * BUDGET / chunk.max(1)
        } else {
            others * rows
        }
    };
    let cap = |tile: &[usize], chunk: usize, r: usize| cap_of(tile, chunk, r, true);
    // A loop with loops inside reruns them for each of its tiles: shrink
    // the chunk before its tile.
    let nested: Vec<bool> = pass
        .scopes
        .iter()
        .map(|s| s.items.iter().any(|i| matches!(i, Item::Loop { .. })))
        .collect();
    // The fewest rows a chunk shrinks to: a batch loop's tiles are blocked
    // products, whose register blocks span 16-32 rows.
    let floor = if pass.coupled { 64 } else { 16 };
    // Shrink a factor of the largest register until all fit.
    loop {
        let (worst, size) = (0..pass.regs.len())
            .map(|r| (r, cap(&tile, chunk, r)))
            .max_by_key(|&(r, c)| (c, std::cmp::Reverse(r)))
            .unwrap_or((0, 0));
        if size <= BUDGET {
            break;
        }
        let d = &pass.regs[worst];
        // A leaf loop's tile shrinks to 64; below that the chunk of rows
        // shrinks first, so that a wide vector (1000 logits) is read a few
        // rows at a time, whole, rather than in narrow strided strips.
        let leaf = d
            .loops
            .iter()
            .copied()
            .filter(|&l| !nested[l as usize] && !pinned[l as usize] && tile[l as usize] > 64)
            .max_by_key(|&l| (tile[l as usize], l));
        let any = d
            .loops
            .iter()
            .copied()
            .filter(|&l| !pinned[l as usize] && tile[l as usize] > 1)
            .max_by_key(|&l| (!nested[l as usize], tile[l as usize], l));
        match (leaf, any) {
            (Some(l), _) => tile[l as usize] = tile[l as usize].div_ceil(2),
            _ if d.rowdep && chunk > floor => chunk = chunk.div_ceil(2),
            (None, Some(l)) => tile[l as usize] = tile[l as usize].div_ceil(2),
            (None, None) => break,
        }
    }
    // A vector split into tiles is read a tile at a time for every chunk:
    // with fewer rows per chunk its tiles' registers stay in the first-level
    // cache (cce_logits at 1000 logits: 20-25% faster than at 256 rows).
    // A vector that fits whole at the fewer rows is then one tile again (a
    // logsumexp in one tile keeps its exps for a softmax). Batch loops keep
    // their chunks: their tiles are blocked products, which larger chunks
    // feed better.
    if !pass.coupled && (1..pass.scopes.len()).any(|s| tile[s] < extent[s]) {
        chunk = chunk.min(SPLIT_CHUNK);
        for s in 1..pass.scopes.len() {
            if tile[s] < extent[s] {
                let split = tile[s];
                tile[s] = extent[s];
                if (0..pass.regs.len()).any(|r| cap(&tile, chunk, r) > BUDGET) {
                    tile[s] = split;
                }
            }
        }
    }
    // Live ranges over the linearised scope tree, then buffers reused
    // first-fit among dead registers of the same size.
    let n = pass.regs.len();
    let mut def = vec![usize::MAX; n];
    let mut last = vec![0usize; n];
    let mut pos = 0usize;
    linearise(pass, 0, &mut pos, &mut def, &mut last);
    // Sums and tables are read after the chunk's last instruction.
    for &(r, _) in &pass.sums {
        last[r as usize] = pos + 1;
    }
    for &(r, _) in &pass.tables {
        last[r as usize] = pos + 1;
    }
    let mut order: Vec<usize> = (0..n).filter(|&r| def[r] != usize::MAX).collect();
    order.sort_by_key(|&r| (def[r], r));
    let mut offset = vec![0usize; n];
    let mut arena = 0usize;
    // How each register is defined: registers read in place (an input's or
    // a table's values) need no buffer; an elementwise instruction may
    // write over an operand of its shape that it is the last to read.
    let mut in_place = vec![false; n];
    let mut elementwise: Vec<Vec<Reg>> = vec![Vec::new(); n];
    for sc in &pass.scopes {
        for item in &sc.items {
            let Item::Op(op) = item else { continue };
            match *op {
                Op::TableLoad { out, .. }
                | Op::Load {
                    out,
                    comp: CompSrc::None,
                    ..
                } => in_place[out as usize] = true,
                Op::Load {
                    out,
                    slot,
                    row: RowSrc::Loop(j),
                    comp: CompSrc::Loop(c),
                } => {
                    // Whole rows of another row's vector (see `load`).
                    in_place[out as usize] = pass.regs[out as usize].loops == [j, c]
                        && tile[c as usize] == extent[c as usize]
                        && extent[c as usize] == width(slot);
                }
                Op::Un { out, .. }
                | Op::Bin { out, .. }
                | Op::Sel { out, .. }
                | Op::Powi { out, .. } => {
                    let d = &pass.regs[out as usize];
                    elementwise[out as usize] = super::plan::op_reads(op)
                        .into_iter()
                        .filter(|&a| {
                            let da = &pass.regs[a as usize];
                            da.loops == d.loops && da.rowdep == d.rowdep
                        })
                        .collect();
                }
                _ => {}
            }
        }
    }
    // A kept logsumexp's exps overwrite its body, `x`, as the fold computes
    // them, and `x` the registers it was computed from in place (for
    // InfoNCE, the products `S` and `S / t`): one buffer of a chunk's `n`
    // values per row rather than three.
    let skip = skipped(pass, &tile, &extent);
    let mut alias: Vec<Option<usize>> = vec![None; n];
    for item in &pass.scopes[0].items {
        if let Item::Loop {
            scope,
            kind:
                LoopKind::Reduce {
                    fold: Fold::Reg(body),
                    cache: Some(c),
                    ..
                },
        } = item
            && pinned[*scope as usize]
            && !skip[*c as usize]
        {
            let shape = |r: Reg| (&pass.regs[r as usize].loops, pass.regs[r as usize].rowdep);
            let mut x = *body;
            while shape(x) == shape(*c)
                && alias[x as usize].is_none()
                && last[x as usize] <= last[*c as usize]
            {
                alias[x as usize] = Some(*c as usize);
                // The operand `x` was computed from in place, if any.
                match elementwise[x as usize]
                    .iter()
                    .find(|&&y| last[y as usize] == def[x as usize])
                {
                    Some(&y) => x = y,
                    None => break,
                }
            }
        }
    }
    // (free from position, offset, capacity, the register last in it)
    let mut bufs: Vec<(usize, usize, usize, usize)> = Vec::new();
    // A reduction's running count (a mean's) and previous maximum (a
    // logsumexp's) exist only for those: a sum's take no buffer, nor
    // are they written (`init_acc`).
    let mut idle = vec![false; n];
    for item in pass.scopes.iter().flat_map(|s| &s.items) {
        if let Item::Loop {
            kind: LoopKind::Reduce { op, aux, aux2, .. },
            ..
        } = item
        {
            idle[*aux as usize] = !matches!(op, RedOp::Mean | RedOp::LogSumExp);
            idle[*aux2 as usize] = *op != RedOp::LogSumExp;
        }
    }
    for r in order {
        if skip[r] || in_place[r] || idle[r] {
            continue;
        }
        if let Some(c) = alias[r] {
            offset[r] = offset[c];
            continue;
        }
        let c = cap_of(&tile, chunk, r, false).max(1);
        let fits = |&&mut (free, _, bc, prev): &&mut (usize, usize, usize, usize)| {
            bc == c
                && (free < def[r] || (free == def[r] && elementwise[r].contains(&(prev as Reg))))
        };
        match bufs.iter_mut().find(fits) {
            Some(b) => {
                offset[r] = b.1;
                b.0 = last[r];
                b.3 = r;
            }
            None => {
                offset[r] = arena;
                bufs.push((last[r], arena, c, r));
                arena += c;
            }
        }
    }
    Layout {
        chunk,
        tile,
        extent,
        offset,
        arena,
        skip,
        in_place,
    }
}

/// The registers nothing needs at these tiles: live registers are found
/// back from the pass's effects (stores, scatters, sums, tables), and a
/// softmax over the batch needs its `x` only when its logsumexp runs in
/// several tiles. (Over a vector's components `x` is cheap and kept, so
/// that a row whose maximum is not finite gets exactly `exp(x - lse)`;
/// over the batch `x` is a product, and such a row, whose loss is
/// infinite or NaN, gets the kept exps times the reciprocal of their sum:
/// NaN, or 0 where `exp(x)` is finite.)
fn skipped(pass: &Pass, tile: &[usize], extent: &[usize]) -> Vec<bool> {
    let mut need = vec![false; pass.regs.len()];
    for r in pass
        .sums
        .iter()
        .map(|s| s.0)
        .chain(pass.tables.iter().map(|t| t.0))
    {
        need[r as usize] = true;
    }
    loop {
        let mut changed = false;
        let mut mark = |r: Reg, need: &mut Vec<bool>| {
            changed |= !std::mem::replace(&mut need[r as usize], true);
        };
        for sc in &pass.scopes {
            for item in &sc.items {
                match item {
                    Item::Op(op) => {
                        let live = super::plan::op_writes(op).is_none_or(|w| need[w as usize]);
                        if !live {
                            continue;
                        }
                        let mut reads = super::plan::op_reads(op);
                        if let Op::Softmax {
                            x: SoftmaxX::Reg(x),
                            scope,
                            ..
                        } = op
                            && pass.scopes[*scope as usize].range == Some(Range::Batch)
                            && tile[*scope as usize] >= extent[*scope as usize]
                        {
                            reads.retain(|r| r != x);
                        }
                        for r in reads {
                            mark(r, &mut need);
                        }
                    }
                    Item::Loop { kind, .. } => {
                        let live = match kind {
                            LoopKind::Reduce { acc, cache, .. } => {
                                need[*acc as usize] || cache.is_some_and(|c| need[c as usize])
                            }
                            LoopKind::Scatter { .. } => true,
                            LoopKind::Store => false,
                        };
                        if live {
                            for r in super::plan::loop_reads(kind)
                                .into_iter()
                                .chain(super::plan::loop_state(kind))
                            {
                                mark(r, &mut need);
                            }
                        }
                    }
                }
            }
        }
        if !changed {
            return need.into_iter().map(|n| !n).collect();
        }
    }
}

fn linearise(pass: &Pass, s: u16, pos: &mut usize, def: &mut [usize], last: &mut [usize]) {
    let use_at = |r: Reg, p: usize, last: &mut [usize]| {
        last[r as usize] = last[r as usize].max(p);
    };
    for item in &pass.scopes[s as usize].items {
        match item {
            Item::Op(op) => {
                *pos += 1;
                for r in super::plan::op_reads(op) {
                    use_at(r, *pos, last);
                }
                if let Some(w) = super::plan::op_writes(op) {
                    def[w as usize] = *pos;
                    last[w as usize] = last[w as usize].max(*pos);
                }
            }
            Item::Loop { scope, kind } => {
                *pos += 1;
                let start = *pos;
                for r in super::plan::loop_state(kind) {
                    def[r as usize] = start;
                }
                linearise(pass, *scope, pos, def, last);
                *pos += 1;
                let end = *pos;
                for r in super::plan::loop_reads(kind) {
                    use_at(r, end, last);
                }
                for r in super::plan::loop_state(kind) {
                    use_at(r, end, last);
                }
                // A register from outside read inside the loop is read on
                // every tile: it lives to the loop's end.
                for r in 0..def.len() {
                    if def[r] < start && last[r] > start && last[r] < end {
                        last[r] = end;
                    }
                }
            }
        }
    }
}

/// Read access to one input: row-major, `width` components per row.
#[derive(Clone, Copy)]
pub(crate) struct InputData<T> {
    pub ptr: *const T,
    pub width: usize,
}

// SAFETY: inputs are only read, and outlive the evaluation.
unsafe impl<T: Sync> Sync for InputData<T> {}
unsafe impl<T: Sync> Send for InputData<T> {}

/// Where the block's results go (shared by the blocks of a pass, each
/// writing its own rows).
pub(crate) struct Sinks<'a, T> {
    pub grads: &'a [(*mut T, usize)],
    pub hessians: &'a [(*mut T, usize)],
    pub tables: &'a [*mut T],
    /// Each scatter's buffers: the first group's rows, the second's, and
    /// the values per row.
    pub scatters: &'a [(*mut T, *mut T, usize)],
    pub scale: T,
}

// SAFETY: the blocks of a pass write disjoint rows of every sink, except
// the scatters' buffers, where each group of blocks has its own and runs
// its blocks one after another.
unsafe impl<T: Sync> Sync for Sinks<'_, T> {}

/// Everything a block reads.
pub(crate) struct Ctx<'a, T> {
    pub pass: &'a Pass,
    pub layout: &'a Layout,
    pub inputs: &'a [InputData<T>],
    pub tables: &'a [*const T],
    pub uniforms: &'a [T],
    pub sinks: &'a Sinks<'a, T>,
}

// SAFETY: tables are written by an earlier pass and only read during this one.
unsafe impl<T: Sync> Sync for Ctx<'_, T> {}

/// A worker's buffers, kept between evaluations so that a repeated
/// evaluation allocates nothing.
#[derive(Default)]
pub(crate) struct Scratch<T> {
    pub arena: Vec<T>,
    /// Generated code's per-row buffers (see `Block::scratch`).
    pub kernel: Vec<T>,
    /// Where each register's data starts (its buffer, or an input read in
    /// place).
    ptr: Vec<*const T>,
    off: Vec<usize>,
    ext: Vec<usize>,
    /// A scatter's transposed operand.
    tmp: Vec<T>,
}

// SAFETY: the pointers are only used by the worker that owns the scratch,
// during one evaluation, to data that outlives it.
unsafe impl<T: Send> Send for Scratch<T> {}

/// Per-worker state while running a block.
pub(crate) struct Exec<'a, T> {
    cx: &'a Ctx<'a, T>,
    arena: &'a mut [T],
    ptr: &'a mut [*const T],
    off: &'a mut [usize],
    ext: &'a mut [usize],
    tmp: &'a mut Vec<T>,
    row0: usize,
    len: usize,
    /// The group of blocks whose scatter buffers this block adds into.
    group: usize,
}

/// Runs rows `[b0, b1)` of a pass and adds each sample reduction's partial
/// sum into `sums` (and, for a pass that scatters, its terms into group
/// `group`'s buffers).
pub(crate) fn run_block<T: Float>(
    cx: &Ctx<'_, T>,
    scratch: &mut Scratch<T>,
    b0: usize,
    b1: usize,
    sums: &mut [f64],
    group: usize,
) {
    let nregs = cx.pass.regs.len();
    let nscopes = cx.pass.scopes.len();
    if scratch.arena.len() < cx.layout.arena {
        scratch.arena.resize(cx.layout.arena, T::ZERO);
    }
    if scratch.ptr.len() < nregs {
        scratch.ptr.resize(nregs, std::ptr::null());
    }
    if scratch.off.len() < nscopes {
        scratch.off.resize(nscopes, 0);
        scratch.ext.resize(nscopes, 0);
    }
    let mut ex = Exec {
        cx,
        arena: &mut scratch.arena,
        ptr: &mut scratch.ptr,
        off: &mut scratch.off,
        ext: &mut scratch.ext,
        tmp: &mut scratch.tmp,
        row0: 0,
        len: 0,
        group,
    };
    match isa::active() {
        // SAFETY: the CPU has AVX-512 and FMA (checked at run time).
        Isa::Avx512 => unsafe { block_avx512(&mut ex, b0, b1, sums) },
        // SAFETY: the CPU has AVX2 and FMA (checked at run time).
        Isa::Avx2 => unsafe { block_avx2(&mut ex, b0, b1, sums) },
        // SAFETY: no target feature is required.
        Isa::Baseline => unsafe { block_base(&mut ex, b0, b1, sums) },
    }
}

macro_rules! variant {
    ($block:ident, $scope:ident, $op:ident, $fold:ident, $fma:literal, $VB:literal $(, $feat:literal)?) => {
        $(#[target_feature(enable = $feat)])?
        #[allow(unused_unsafe)]
        unsafe fn $block<T: Float>(ex: &mut Exec<'_, T>, b0: usize, b1: usize, sums: &mut [f64]) {
            let chunk = ex.cx.layout.chunk;
            let mut r0 = b0;
            while r0 < b1 {
                ex.row0 = r0;
                ex.len = chunk.min(b1 - r0);
                unsafe { $scope::<T>(ex, 0) };
                finish_chunk::<T>(ex, sums);
                r0 += chunk;
            }
        }

        $(#[target_feature(enable = $feat)])?
        #[allow(unused_unsafe)]
        unsafe fn $scope<T: Float>(ex: &mut Exec<'_, T>, s: u16) {
            let pass = ex.cx.pass;
            let skip = &ex.cx.layout.skip;
            for item in &pass.scopes[s as usize].items {
                match item {
                    Item::Op(op) => {
                        if super::plan::op_writes(op).is_some_and(|w| skip[w as usize]) {
                            continue;
                        }
                        unsafe { $op::<T>(ex, op) }
                    }
                    Item::Loop { kind: LoopKind::Reduce { acc, cache, .. }, .. }
                        if skip[*acc as usize] && cache.is_none_or(|c| skip[c as usize]) => {}
                    Item::Loop { scope, kind } => {
                        let sc = *scope as usize;
                        let extent = ex.cx.layout.extent[sc];
                        let tile = ex.cx.layout.tile[sc];
                        // A logsumexp keeps its exps for a softmax only
                        // when it runs in one tile (the exps of earlier
                        // tiles would be relative to an earlier maximum).
                        let keep = |cache: Option<Reg>| cache.filter(|_| tile >= extent);
                        if let LoopKind::Reduce { op, acc, aux, aux2, cache, .. } = kind {
                            init_acc::<T>(ex, *op, *acc, *aux, *aux2, keep(*cache));
                        }
                        let mut o = 0;
                        while o < extent {
                            ex.off[sc] = o;
                            ex.ext[sc] = tile.min(extent - o);
                            unsafe { $scope::<T>(ex, *scope) };
                            match kind {
                                LoopKind::Reduce { op, acc, aux, aux2, fold, filter, cache } => {
                                    let regs = [*acc, *aux, *aux2];
                                    unsafe { $fold::<T>(ex, *scope, *op, regs, *fold, *filter, keep(*cache)) };
                                }
                                LoopKind::Scatter { target, fold, comp } => {
                                    unsafe { scatter_fold::<T, $fma, $VB>(ex, *scope, *target, *fold, *comp) };
                                }
                                LoopKind::Store => {}
                            }
                            o += tile;
                        }
                        if let LoopKind::Reduce { op, acc, aux, cache, .. } = kind {
                            finish_acc::<T, $fma>(ex, *op, *acc, *aux, keep(*cache).is_some());
                        }
                    }
                }
            }
        }
    };
}

#[cfg(not(target_arch = "x86_64"))]
unsafe fn block_avx2<T: Float>(ex: &mut Exec<'_, T>, b0: usize, b1: usize, sums: &mut [f64]) {
    unsafe { block_base(ex, b0, b1, sums) }
}

#[cfg(not(target_arch = "x86_64"))]
unsafe fn block_avx512<T: Float>(ex: &mut Exec<'_, T>, b0: usize, b1: usize, sums: &mut [f64]) {
    unsafe { block_base(ex, b0, b1, sums) }
}

/// The shape of a register at the current tiles: extents of its loops and
/// its row count.
#[inline(always)]
fn dims<T>(ex: &Exec<'_, T>, r: Reg) -> (usize, usize) {
    let d = &ex.cx.pass.regs[r as usize];
    let blocks: usize = d.loops.iter().map(|&l| ex.ext[l as usize]).product();
    (blocks, if d.rowdep { ex.len } else { 1 })
}

/// A strided walk: the out register's loops (plus the row axis) with one
/// stride per operand, collapsed so that the innermost axis is as long as
/// possible.
struct Walk {
    dims: [usize; MAX_LOOPS + 2],
    strides: [[usize; MAX_LOOPS + 2]; 4],
    nd: usize,
}

impl Walk {
    /// `out` is written contiguously; `ops` are read with broadcasting.
    #[inline(always)]
    fn new<T>(ex: &Exec<'_, T>, loops: &[u16], rowdep_out: bool, ops: &[Reg]) -> Walk {
        let mut w = Walk {
            dims: [1; MAX_LOOPS + 2],
            strides: [[0; MAX_LOOPS + 2]; 4],
            nd: loops.len() + 1,
        };
        // The common case, an instruction of the root scope: one run.
        if loops.is_empty() {
            w.dims[0] = if rowdep_out { ex.len } else { 1 };
            w.strides[0][0] = 1;
            for (k, &r) in ops.iter().enumerate() {
                w.strides[k + 1][0] = ex.cx.pass.regs[r as usize].rowdep as usize;
            }
            return w;
        }
        for (i, &l) in loops.iter().enumerate() {
            w.dims[i] = ex.ext[l as usize];
        }
        w.dims[loops.len()] = if rowdep_out { ex.len } else { 1 };
        // Out: contiguous.
        let mut s = 1;
        for i in (0..w.nd).rev() {
            w.strides[0][i] = s;
            s *= w.dims[i];
        }
        for (k, &r) in ops.iter().enumerate() {
            let d = &ex.cx.pass.regs[r as usize];
            let mut s = if d.rowdep { ex.len } else { 1 };
            w.strides[k + 1][loops.len()] = if d.rowdep { 1 } else { 0 };
            for (i, &l) in loops.iter().enumerate().rev() {
                if d.loops.contains(&l) {
                    w.strides[k + 1][i] = s;
                    s *= ex.ext[l as usize];
                }
            }
        }
        let k = ops.len() + 1;
        // Unit axes do not move anything: drop them (keeping one axis).
        let mut j = 0;
        while j < w.nd && w.nd > 1 {
            if w.dims[j] == 1 {
                w.remove(j, k);
            } else {
                j += 1;
            }
        }
        // Merge an axis into the next inner one when every operand's
        // strides run on contiguously across them.
        let mut i = w.nd - 1;
        while i > 0 {
            if (0..k).all(|o| w.strides[o][i - 1] == w.strides[o][i] * w.dims[i]) {
                w.dims[i] *= w.dims[i - 1];
                w.remove(i - 1, k);
            }
            i -= 1;
        }
        w
    }

    #[inline(always)]
    fn remove(&mut self, j: usize, k: usize) {
        for a in j..self.nd - 1 {
            self.dims[a] = self.dims[a + 1];
            for o in 0..k {
                self.strides[o][a] = self.strides[o][a + 1];
            }
        }
        self.nd -= 1;
    }

    /// Calls `f(offsets, len, inner strides)` per innermost run.
    #[inline(always)]
    fn each(&self, k: usize, mut f: impl FnMut(&[usize; 4], usize, &[usize; 4])) {
        let nd = self.nd;
        let len = self.dims[nd - 1];
        let mut inner = [0usize; 4];
        for (o, s) in inner.iter_mut().enumerate().take(k) {
            *s = self.strides[o][nd - 1];
        }
        let outer: usize = self.dims[..nd - 1].iter().product();
        let mut idx = [0usize; MAX_LOOPS + 2];
        let mut off = [0usize; 4];
        for _ in 0..outer {
            f(&off, len, &inner);
            let mut d = nd - 1;
            while d > 0 {
                d -= 1;
                idx[d] += 1;
                for (o, x) in off.iter_mut().enumerate().take(k) {
                    *x += self.strides[o][d];
                }
                if idx[d] < self.dims[d] {
                    break;
                }
                for (o, x) in off.iter_mut().enumerate().take(k) {
                    *x -= self.strides[o][d] * self.dims[d];
                }
                idx[d] = 0;
            }
        }
    }
}

impl<T: Float> Exec<'_, T> {
    #[inline(always)]
    fn out(&mut self, r: Reg) -> *mut T {
        let p = unsafe {
            self.arena
                .as_mut_ptr()
                .add(self.cx.layout.offset[r as usize])
        };
        self.ptr[r as usize] = p;
        p
    }
}

/// A per-element unary function, as a type so that it is inlined into
/// the loop (a closure of this size would be called per element).
trait K1<T: Float, const F: bool> {
    fn f(x: T) -> T;
}

/// A per-element binary function.
trait K2<T: Float, const F: bool> {
    fn f(a: T, b: T) -> T;
}

macro_rules! k1 {
    ($($name:ident = |$x:ident| $e:expr;)*) => {$(
        struct $name;
        impl<T: Float, const F: bool> K1<T, F> for $name {
            #[inline(always)]
            fn f($x: T) -> T {
                $e
            }
        }
    )*};
}

macro_rules! k2 {
    ($($name:ident = |$a:ident, $b:ident| $e:expr;)*) => {$(
        struct $name;
        impl<T: Float, const F: bool> K2<T, F> for $name {
            #[inline(always)]
            fn f($a: T, $b: T) -> T {
                $e
            }
        }
    )*};
}

k1! {
    KNeg = |x| -x;
    KRecip = |x| T::ONE / x;
    KNot = |x| truth::<T>(x == T::ZERO);
    KExp = |x| x.exp::<F>();
    KLog = |x| x.ln::<F>();
    KSigmoid = |x| math::sigmoid::<T, F>(x);
    KSoftplus = |x| math::softplus::<T, F>(x);
    KLog1p = |x| math::log1p::<T, F>(x);
    KExpm1 = |x| math::expm1::<T, F>(x);
    KSqrt = |x| x.sqrt();
    KAbs = |x| x.abs();
    KSign = |x| math::sign(x);
    KRelu = |x| x.max(T::ZERO);
    KTanh = |x| math::tanh::<T, F>(x);
    KCosh = |x| math::cosh::<T, F>(x);
    KSinh = |x| math::sinh::<T, F>(x);
    KSq = |x| x * x;
    KCube = |x| x * x * x;
    KFourth = |x| (x * x) * (x * x);
    KInvSq = |x| T::ONE / (x * x);
}

k2! {
    KAdd = |a, b| a + b;
    KSub = |a, b| a - b;
    KMul = |a, b| a * b;
    KDiv = |a, b| a / b;
    KPow = |a, b| math::pow::<T, F>(a, b);
    KMax = |a, b| a.max(b);
    KMin = |a, b| a.min(b);
    KEq = |a, b| truth::<T>(a == b);
    KNe = |a, b| truth::<T>(a != b);
    KLt = |a, b| truth::<T>(a < b);
    KLe = |a, b| truth::<T>(a <= b);
    KGt = |a, b| truth::<T>(a > b);
    KGe = |a, b| truth::<T>(a >= b);
    KAnd = |a, b| truth::<T>((a != T::ZERO) & (b != T::ZERO));
    KOr = |a, b| truth::<T>((a != T::ZERO) | (b != T::ZERO));
}

/// Unary kernel over a run: `o[i] = K(a[i*sa])`.
#[inline(always)]
unsafe fn run1<T: Float, const F: bool, K: K1<T, F>>(o: *mut T, a: *const T, sa: usize, n: usize) {
    unsafe {
        // In place (see `layout`): one slice, never a shared and a mutable
        // one over the same values.
        if sa == 1 && std::ptr::eq(o, a) {
            for v in std::slice::from_raw_parts_mut(o, n) {
                *v = K::f(*v);
            }
            return;
        }
        let o = std::slice::from_raw_parts_mut(o, n);
        if sa == 1 {
            let a = std::slice::from_raw_parts(a, n);
            for (o, &a) in o.iter_mut().zip(a) {
                *o = K::f(a);
            }
        } else {
            let v = K::f(*a);
            o.fill(v);
        }
    }
}

/// Binary kernel over a run, specialised on which operands broadcast.
#[inline(always)]
unsafe fn run2<T: Float, const F: bool, K: K2<T, F>>(
    o: *mut T,
    a: *const T,
    sa: usize,
    b: *const T,
    sb: usize,
    n: usize,
) {
    unsafe {
        // In place over an operand (see `layout`): one slice for both.
        let (on_a, on_b) = (sa == 1 && std::ptr::eq(o, a), sb == 1 && std::ptr::eq(o, b));
        if on_a || on_b {
            let v = std::slice::from_raw_parts_mut(o, n);
            match (on_a, on_b, sa, sb) {
                (true, true, ..) => v.iter_mut().for_each(|x| *x = K::f(*x, *x)),
                (true, false, _, 1) => {
                    let b = std::slice::from_raw_parts(b, n);
                    for (x, &b) in v.iter_mut().zip(b) {
                        *x = K::f(*x, b);
                    }
                }
                (true, false, ..) => {
                    let b = *b;
                    v.iter_mut().for_each(|x| *x = K::f(*x, b));
                }
                (false, true, 1, _) => {
                    let a = std::slice::from_raw_parts(a, n);
                    for (x, &a) in v.iter_mut().zip(a) {
                        *x = K::f(a, *x);
                    }
                }
                _ => {
                    let a = *a;
                    v.iter_mut().for_each(|x| *x = K::f(a, *x));
                }
            }
            return;
        }
        let o = std::slice::from_raw_parts_mut(o, n);
        match (sa, sb) {
            (1, 1) => {
                let a = std::slice::from_raw_parts(a, n);
                let b = std::slice::from_raw_parts(b, n);
                for ((o, &a), &b) in o.iter_mut().zip(a).zip(b) {
                    *o = K::f(a, b);
                }
            }
            (1, _) => {
                let a = std::slice::from_raw_parts(a, n);
                let b = *b;
                for (o, &a) in o.iter_mut().zip(a) {
                    *o = K::f(a, b);
                }
            }
            (_, 1) => {
                let b = std::slice::from_raw_parts(b, n);
                let a = *a;
                for (o, &b) in o.iter_mut().zip(b) {
                    *o = K::f(a, b);
                }
            }
            _ => o.fill(K::f(*a, *b)),
        }
    }
}

use math::truth;

/// Dispatches a unary function to its kernel type.
#[rustfmt::skip]
macro_rules! per_unary {
    ($f:expr, |$K:ident| $body:expr) => {
        match $f {
            UFn::Neg => { type $K = KNeg; $body }
            UFn::Recip => { type $K = KRecip; $body }
            UFn::Not => { type $K = KNot; $body }
            UFn::F(Func::Exp) => { type $K = KExp; $body }
            UFn::F(Func::Log) => { type $K = KLog; $body }
            UFn::F(Func::Sigmoid) => { type $K = KSigmoid; $body }
            UFn::F(Func::Softplus) => { type $K = KSoftplus; $body }
            UFn::F(Func::Log1p) => { type $K = KLog1p; $body }
            UFn::F(Func::Expm1) => { type $K = KExpm1; $body }
            UFn::F(Func::Sqrt) => { type $K = KSqrt; $body }
            UFn::F(Func::Abs) => { type $K = KAbs; $body }
            UFn::F(Func::Sign) => { type $K = KSign; $body }
            UFn::F(Func::Relu) => { type $K = KRelu; $body }
            UFn::F(Func::Tanh) => { type $K = KTanh; $body }
            UFn::F(Func::Cosh) => { type $K = KCosh; $body }
            UFn::F(Func::Sinh) => { type $K = KSinh; $body }
        }
    };
}

/// Dispatches a binary function to its kernel type.
#[rustfmt::skip]
macro_rules! per_binary {
    ($f:expr, |$K:ident| $body:expr) => {
        match $f {
            BFn::Add => { type $K = KAdd; $body }
            BFn::Sub => { type $K = KSub; $body }
            BFn::Mul => { type $K = KMul; $body }
            BFn::Div => { type $K = KDiv; $body }
            BFn::Pow => { type $K = KPow; $body }
            BFn::Max => { type $K = KMax; $body }
            BFn::Min => { type $K = KMin; $body }
            BFn::Cmp(Cmp::Eq) => { type $K = KEq; $body }
            BFn::Cmp(Cmp::Ne) => { type $K = KNe; $body }
            BFn::Cmp(Cmp::Lt) => { type $K = KLt; $body }
            BFn::Cmp(Cmp::Le) => { type $K = KLe; $body }
            BFn::Cmp(Cmp::Gt) => { type $K = KGt; $body }
            BFn::Cmp(Cmp::Ge) => { type $K = KGe; $body }
            BFn::And => { type $K = KAnd; $body }
            BFn::Or => { type $K = KOr; $body }
        }
    };
}

/// `o = K(a)` over a walk.
#[inline(always)]
fn unary_walk<T: Float, const F: bool, K: K1<T, F>>(w: &Walk, o: *mut T, pa: *const T) {
    // The closures are marked `inline(always)`: an instance shared by the
    // AVX2 and AVX-512 builds has two callers, and left out of line it
    // would be compiled for baseline x86-64 (its `mul_add`s calling libm).
    w.each(
        2,
        #[inline(always)]
        |off, n, s| unsafe { run1::<T, F, K>(o.add(off[0]), pa.add(off[1]), s[1], n) },
    );
}

/// `o = K(a, b)` over a walk.
#[inline(always)]
fn binary_walk<T: Float, const F: bool, K: K2<T, F>>(
    w: &Walk,
    o: *mut T,
    pa: *const T,
    pb: *const T,
) {
    w.each(
        3,
        #[inline(always)]
        |off, n, s| unsafe {
            run2::<T, F, K>(o.add(off[0]), pa.add(off[1]), s[1], pb.add(off[2]), s[2], n)
        },
    );
}

// The instruction and fold bodies hold the hot loops in closures; a
// closure is compiled with the target features of the function it is
// written in, so these are written out once per instruction set.
macro_rules! def_op {
    ($name:ident, $F:literal $(, $feat:literal)?) => {
$(#[target_feature(enable = $feat)])?
#[allow(unused_unsafe)]
unsafe fn $name<T: Float>(ex: &mut Exec<'_, T>, op: &Op) {
    const F: bool = $F;
    let pass = ex.cx.pass;
    match *op {
        Op::Const { out, v } => {
            let o = ex.out(out);
            unsafe { *o = T::of(v) };
        }
        Op::Uniform { out, u } => {
            let o = ex.out(out);
            unsafe { *o = ex.cx.uniforms[u as usize] };
        }
        Op::CurRow { out } => {
            let o = ex.out(out);
            for l in 0..ex.len {
                unsafe { *o.add(l) = T::of((ex.row0 + l) as f64) };
            }
        }
        Op::Iota { out, scope } => {
            let o = ex.out(out);
            let (off, n) = (ex.off[scope as usize], ex.ext[scope as usize]);
            for t in 0..n {
                unsafe { *o.add(t) = T::of((off + t) as f64) };
            }
        }
        Op::Load {
            out,
            slot,
            row,
            comp,
        } => load::<T>(ex, out, slot, row, comp),
        Op::TableLoad { out, table, row } => {
            let src = ex.cx.tables[table as usize];
            match row {
                RowSrc::Cur => ex.ptr[out as usize] = unsafe { src.add(ex.row0) },
                RowSrc::Loop(l) => ex.ptr[out as usize] = unsafe { src.add(ex.off[l as usize]) },
            }
        }
        Op::Un { out, f, a } => {
            let d = &pass.regs[out as usize];
            let w = Walk::new(ex, &d.loops, d.rowdep, &[a]);
            let o = ex.out(out);
            let pa = ex.ptr[a as usize];
            per_unary!(f, |K| unary_walk::<T, F, K>(&w, o, pa));
        }
        Op::Powi { out, a, n: k } => {
            let d = &pass.regs[out as usize];
            let w = Walk::new(ex, &d.loops, d.rowdep, &[a]);
            let o = ex.out(out);
            let pa = ex.ptr[a as usize];
            // One loop per exponent, so that no loop body branches.
            match k {
                2 => unary_walk::<T, F, KSq>(&w, o, pa),
                3 => unary_walk::<T, F, KCube>(&w, o, pa),
                4 => unary_walk::<T, F, KFourth>(&w, o, pa),
                -1 => unary_walk::<T, F, KRecip>(&w, o, pa),
                -2 => unary_walk::<T, F, KInvSq>(&w, o, pa),
                _ => w.each(2, |off, n, s| unsafe {
                    let (o, a) = (o.add(off[0]), pa.add(off[1]));
                    for i in 0..n {
                        *o.add(i) = math::powi(*a.add(i * s[1]), k);
                    }
                }),
            }
        }
        Op::Bin { out, f, a, b } => {
            let d = &pass.regs[out as usize];
            let w = Walk::new(ex, &d.loops, d.rowdep, &[a, b]);
            let o = ex.out(out);
            let (pa, pb) = (ex.ptr[a as usize], ex.ptr[b as usize]);
            per_binary!(f, |K| binary_walk::<T, F, K>(&w, o, pa, pb));
        }
        Op::Sel { out, c, a, b } => {
            let d = &pass.regs[out as usize];
            let w = Walk::new(ex, &d.loops, d.rowdep, &[c, a, b]);
            let o = ex.out(out);
            let (pc, pa, pb) = (ex.ptr[c as usize], ex.ptr[a as usize], ex.ptr[b as usize]);
            w.each(4, |off, n, s| unsafe {
                if s[1] == 1 && s[2] == 1 && s[3] == 1 {
                    let (o, c, a, b) = (o.add(off[0]), pc.add(off[1]), pa.add(off[2]), pb.add(off[3]));
                    for i in 0..n {
                        *o.add(i) = sel(*c.add(i) != T::ZERO, *a.add(i), *b.add(i));
                    }
                    return;
                }
                for i in 0..n {
                    let cv = *pc.add(off[1] + i * s[1]);
                    let av = *pa.add(off[2] + i * s[2]);
                    let bv = *pb.add(off[3] + i * s[3]);
                    *o.add(off[0] + i) = sel(cv != T::ZERO, av, bv);
                }
            });
        }
        Op::Softmax {
            out,
            x,
            cache,
            inv,
            lse,
            scope,
        } => {
            // Planned with one loop (this op's) and the same rows as its
            // logsumexp, exps, sum and `x` (see `softmax::fuse`).
            let st = pass.regs[out as usize].loops[0] as usize;
            let (nb, r) = dims(ex, out);
            let o = ex.out(out);
            let (pi, pl) = (ex.ptr[inv as usize], ex.ptr[lse as usize]);
            let c0 = ex.off[st];
            // `exp(x - lse)` at component `p` of the tile, row `i`.
            let exp_at = |p: usize, i: usize| unsafe {
                let xv = match x {
                    SoftmaxX::Reg(xr) => *ex.ptr[xr as usize].add(p * r + i),
                    SoftmaxX::Input(slot) => {
                        let d = ex.cx.inputs[slot as usize];
                        *d.ptr.add((ex.row0 + i) * d.width + c0 + p)
                    }
                };
                (xv - *pl.add(i)).exp::<F>()
            };
            let layout = ex.cx.layout;
            if layout.tile[scope as usize] < layout.extent[scope as usize] {
                // The logsumexp ran in several tiles and kept nothing: x's
                // tile into `out` (an input's loaded as the plan's load would
                // have), then its exps in place, as slices so that the loop
                // vectorises.
                match x {
                    SoftmaxX::Reg(xr) => unsafe {
                        std::ptr::copy_nonoverlapping(ex.ptr[xr as usize], o, nb * r);
                    },
                    SoftmaxX::Input(slot) => load::<T>(ex, out, slot, RowSrc::Cur, CompSrc::Loop(st as u16)),
                }
                let l = unsafe { std::slice::from_raw_parts(pl, r) };
                for p in 0..nb {
                    let o = unsafe { std::slice::from_raw_parts_mut(o.add(p * r), r) };
                    for (v, &l) in o.iter_mut().zip(l) {
                        *v = (*v - l).exp::<F>();
                    }
                }
                return;
            }
            unsafe {
                let pc = ex.ptr[cache as usize].add(c0 * r);
                for p in 0..nb {
                    let (o, c) = (o.add(p * r), pc.add(p * r));
                    for i in 0..r {
                        *o.add(i) = *c.add(i) * *pi.add(i);
                    }
                }
                // (where `x` is not computed, see `Layout::skip`, such a row
                // keeps the kept exps times the reciprocal of their sum)
                let has_x = match x {
                    SoftmaxX::Reg(xr) => !layout.skip[xr as usize],
                    SoftmaxX::Input(_) => true,
                };
                for i in 0..r {
                    let l = *pl.add(i);
                    if has_x && !finite(l) {
                        for p in 0..nb {
                            *o.add(p * r + i) = exp_at(p, i);
                        }
                    }
                }
            }
        }
        Op::Store {
            reg,
            output,
            hessian,
            scope,
        } => store::<T>(ex, reg, output, hessian, scope),
    }
}
    };
}

#[inline(always)]
fn load<T: Float>(ex: &mut Exec<'_, T>, out: Reg, slot: u16, row: RowSrc, comp: CompSrc) {
    let input = ex.cx.inputs[slot as usize];
    let d = &ex.cx.pass.regs[out as usize];
    // A scalar of the current row is read in place.
    if let (RowSrc::Cur, CompSrc::None) = (row, comp) {
        ex.ptr[out as usize] = unsafe { input.ptr.add(ex.row0) };
        return;
    }
    if let (RowSrc::Loop(l), CompSrc::None) = (row, comp) {
        ex.ptr[out as usize] = unsafe { input.ptr.add(ex.off[l as usize]) };
        return;
    }
    // A vector's tile of components for the chunk's rows, transposed so
    // that rows are innermost.
    if let (RowSrc::Cur, CompSrc::Loop(c)) = (row, comp)
        && d.loops.len() == 1
    {
        let (off, n, len, row0) = (ex.off[c as usize], ex.ext[c as usize], ex.len, ex.row0);
        let o = ex.out(out);
        for t in 0..n {
            for l in 0..len {
                unsafe { *o.add(t * len + l) = *input.ptr.add((row0 + l) * input.width + off + t) };
            }
        }
        return;
    }
    // Another row's tile of components. Rows outer: a copy per row, or the
    // input itself when the tile is whole rows. Components outer (a
    // gradient gathering another row's components for each of this row's):
    // a transposed copy, eight rows at a time, so that each component's
    // eight values are written together and the eight rows read in step.
    if let (RowSrc::Loop(j), CompSrc::Loop(c)) = (row, comp)
        && (d.loops == [j, c] || d.loops == [c, j])
    {
        let (oj, nj) = (ex.off[j as usize], ex.ext[j as usize]);
        let (oc, nc) = (ex.off[c as usize], ex.ext[c as usize]);
        let src = |t: usize| unsafe { input.ptr.add((oj + t) * input.width + oc) };
        if ex.cx.layout.in_place[out as usize] {
            ex.ptr[out as usize] = src(0);
            return;
        }
        let o = ex.out(out);
        if d.loops[0] == j {
            for t in 0..nj {
                unsafe { std::ptr::copy_nonoverlapping(src(t), o.add(t * nc), nc) };
            }
        } else {
            for t0 in (0..nj).step_by(8) {
                let te = (t0 + 8).min(nj);
                for u in 0..nc {
                    for t in t0..te {
                        unsafe { *o.add(u * nj + t) = *src(t).add(u) };
                    }
                }
            }
        }
        return;
    }
    let pass: &Pass = ex.cx.pass;
    let d = &pass.regs[out as usize];
    let loops: &[u16] = &d.loops;
    let rowdep = d.rowdep;
    let comp_reg = match comp {
        CompSrc::Reg(r) => Some(r),
        _ => None,
    };
    let o = ex.out(out);
    // The generic gather: the position's loop indices give the row and
    // the component.
    let nl = loops.len();
    let mut idx = [0usize; MAX_LOOPS];
    let mut ext = [1usize; MAX_LOOPS];
    for (e, &l) in ext.iter_mut().zip(loops) {
        *e = ex.ext[l as usize];
    }
    let ext = &ext[..nl];
    let rows = if rowdep { ex.len } else { 1 };
    let blocks: usize = ext.iter().product();
    let creg = comp_reg.map(|r| {
        let cd = &ex.cx.pass.regs[r as usize];
        (ex.ptr[r as usize], &cd.loops, cd.rowdep)
    });
    let mut k = 0usize;
    for _ in 0..blocks {
        let at = |l: u16, idx: &[usize; MAX_LOOPS]| -> usize {
            let i = loops.iter().position(|&x| x == l).unwrap_or(0);
            ex.off[l as usize] + idx[i]
        };
        // The comp register's offset at this position.
        let coff = creg.as_ref().map(|(_, cl, crd)| {
            let mut s = if *crd { ex.len } else { 1 };
            let mut off = 0;
            for (i, &l) in loops.iter().enumerate().rev() {
                if cl.contains(&l) {
                    off += idx[i] * s;
                    s *= ext[i];
                }
            }
            off
        });
        for r in 0..rows {
            let rowi = match row {
                RowSrc::Cur => ex.row0 + r,
                RowSrc::Loop(l) => at(l, &idx),
            };
            let c = match comp {
                CompSrc::None => Some(0),
                CompSrc::Loop(l) => Some(at(l, &idx)),
                CompSrc::Reg(_) => {
                    let (p, _, crd) = creg.as_ref().expect("comp register");
                    let v = unsafe { *p.add(coff.unwrap_or(0) + if *crd { r } else { 0 }) };
                    let f = v.f64();
                    (f >= 0.0 && f.fract() == 0.0 && (f as usize) < input.width)
                        .then_some(f as usize)
                }
            };
            let v = match c {
                Some(c) if c < input.width => unsafe { *input.ptr.add(rowi * input.width + c) },
                _ => T::of(f64::NAN),
            };
            unsafe { *o.add(k) = v };
            k += 1;
        }
        let mut dd = nl;
        while dd > 0 {
            dd -= 1;
            idx[dd] += 1;
            if idx[dd] < ext[dd] {
                break;
            }
            idx[dd] = 0;
        }
    }
}

#[inline(always)]
fn store<T: Float>(ex: &mut Exec<'_, T>, reg: Reg, output: u16, hessian: bool, scope: Option<u16>) {
    let sinks = ex.cx.sinks;
    let (dst, width) = if hessian {
        sinks.hessians[output as usize]
    } else {
        sinks.grads[output as usize]
    };
    let scale = sinks.scale;
    let d = &ex.cx.pass.regs[reg as usize];
    let p = ex.ptr[reg as usize];
    let rs = if d.rowdep { 1 } else { 0 };
    match scope {
        None => {
            for l in 0..ex.len {
                unsafe { *dst.add(ex.row0 + l) = *p.add(l * rs) * scale };
            }
        }
        Some(s) => {
            let (off, n) = (ex.off[s as usize], ex.ext[s as usize]);
            let depends = d.loops.contains(&s);
            let rstride = if d.rowdep { ex.len } else { 1 };
            for l in 0..ex.len {
                let row = unsafe { dst.add((ex.row0 + l) * width + off) };
                for t in 0..n {
                    let v = unsafe { *p.add(if depends { t * rstride } else { 0 } + l * rs) };
                    unsafe { *row.add(t) = v * scale };
                }
            }
        }
    }
}

/// Whether a logsumexp's maximum (or result) is finite: a row whose
/// maximum is not is that maximum, unshifted (compares only, so that the
/// loops using it stay branch-free).
#[inline(always)]
fn finite<T: Float>(m: T) -> bool {
    m > T::of(f64::NEG_INFINITY) && m < T::of(f64::INFINITY)
}

#[inline(always)]
fn init_acc<T: Float>(
    ex: &mut Exec<'_, T>,
    op: RedOp,
    acc: Reg,
    aux: Reg,
    aux2: Reg,
    cache: Option<Reg>,
) {
    let (b, r) = dims(ex, acc);
    let n = b * r;
    let init = match op {
        RedOp::Sum | RedOp::Mean => T::ZERO,
        RedOp::Max | RedOp::Min => T::of(f64::NAN),
        RedOp::LogSumExp => T::of(f64::NEG_INFINITY),
    };
    let pa = ex.out(acc);
    let px = ex.out(aux);
    ex.out(aux2);
    if let Some(c) = cache {
        ex.out(c);
    }
    unsafe {
        std::slice::from_raw_parts_mut(pa, n).fill(init);
        // (only a mean's count and a logsumexp's sum have a buffer, see
        // `layout`)
        if matches!(op, RedOp::Mean | RedOp::LogSumExp) {
            std::slice::from_raw_parts_mut(px, n).fill(T::ZERO);
        }
    }
}

macro_rules! def_fold {
    ($name:ident, $F:literal, $VB:literal $(, $feat:literal)?) => {
$(#[target_feature(enable = $feat)])?
#[allow(unused_unsafe)]
unsafe fn $name<T: Float>(
    ex: &mut Exec<'_, T>,
    scope: u16,
    op: RedOp,
    [acc, aux, aux2]: [Reg; 3],
    fold: Fold,
    filter: Option<Reg>,
    cache: Option<Reg>,
) {
    const F: bool = $F;
    let pass = ex.cx.pass;
    let ad = &pass.regs[acc as usize];
    // Walk the accumulator's loops plus this scope's, innermost being
    // the tile; the accumulator does not advance along the tile.
    // (a fixed array: a fold allocates nothing)
    let mut buf = [0u16; MAX_LOOPS + 1];
    buf[..ad.loops.len()].copy_from_slice(&ad.loops);
    buf[ad.loops.len()] = scope;
    let loops = &buf[..ad.loops.len() + 1];
    let rowdep = ad.rowdep;
    let pa = ex.ptr[acc as usize] as *mut T;
    let px = ex.ptr[aux as usize] as *mut T;
    // Strides of the accumulator: contiguous over its own loops.
    match (fold, filter) {
        (Fold::Prod(a, b), None) => {
            let w = Walk::new(ex, &loops, rowdep, &[a, b, acc]);
            let (qa, qb) = (ex.ptr[a as usize], ex.ptr[b as usize]);
            if let Some(g) = Gemm::of(&w, qa, qb, pa) {
                unsafe { g.run::<F, $VB>() };
                return;
            }
            w.each(4, |off, n, s| unsafe {
                let o = pa.add(off[3]);
                let (x, y) = (qa.add(off[1]), qb.add(off[2]));
                match (s[1], s[2], s[3]) {
                    (1, 0, 1) => {
                        let y = *y;
                        for i in 0..n {
                            *o.add(i) = T::madd::<F>(*x.add(i), y, *o.add(i));
                        }
                    }
                    (0, 1, 1) => {
                        let x = *x;
                        for i in 0..n {
                            *o.add(i) = T::madd::<F>(x, *y.add(i), *o.add(i));
                        }
                    }
                    (1, 1, 1) => {
                        for i in 0..n {
                            *o.add(i) = T::madd::<F>(*x.add(i), *y.add(i), *o.add(i));
                        }
                    }
                    (sx, sy, so) => {
                        for i in 0..n {
                            let v = *o.add(i * so);
                            *o.add(i * so) = T::madd::<F>(*x.add(i * sx), *y.add(i * sy), v);
                        }
                    }
                }
            });
        }
        (Fold::Reg(body), _) if op == RedOp::LogSumExp => {
            // Online, one exp per value: the tile's maximum first, then the
            // running sum rescaled once, then the tile's exps added.
            let f = filter.unwrap_or(body);
            let has_filter = filter.is_some();
            let w = Walk::new(ex, &loops, rowdep, &[body, f, acc]);
            let (qb, qf) = (ex.ptr[body as usize], ex.ptr[f as usize]);
            let pm = ex.ptr[aux2 as usize] as *mut T;
            let (nb, r) = dims(ex, acc);
            let cnt = nb * r;
            let ninf = T::of(f64::NEG_INFINITY);
            unsafe { std::ptr::copy_nonoverlapping(pa, pm, cnt) };
            w.each(4, |off, n, s| unsafe {
                let (o, b, fl) = (pa.add(off[3]), qb.add(off[1]), qf.add(off[2]));
                if !has_filter && s[1] == 1 && s[3] == 1 {
                    for i in 0..n {
                        *o.add(i) = (*o.add(i)).max(*b.add(i));
                    }
                    return;
                }
                for i in 0..n {
                    let keep = !has_filter || *fl.add(i * s[2]) != T::ZERO;
                    let v = sel(keep, *b.add(i * s[1]), ninf);
                    *o.add(i * s[3]) = (*o.add(i * s[3])).max(v);
                }
            });
            // Before the first tile the sum is 0: nothing to rescale.
            if ex.off[scope as usize] > 0 {
                for e in 0..cnt {
                    unsafe {
                        let (m_new, m_old) = (*pa.add(e), *pm.add(e));
                        let scaled = *px.add(e) * (m_old - m_new).exp::<F>();
                        *px.add(e) = sel(finite(m_new), scaled, *px.add(e));
                    }
                }
            }
            // Each exp is shifted by its row's maximum, or by 0 where that is
            // not finite (then the sum is 0, inf or NaN whatever the shift);
            // the old maxima are no longer needed: the shifts take their place.
            for e in 0..cnt {
                unsafe {
                    let m = *pa.add(e);
                    *pm.add(e) = sel(finite(m), m, T::ZERO);
                }
            }
            // The cache, when kept, is laid out as the walk's own positions
            // (the accumulator's loops, this scope, the rows).
            let pc = cache.map(|c| ex.ptr[c as usize] as *mut T);
            w.each(4, |off, n, s| unsafe {
                let (sh, x, b, fl) = (pm.add(off[3]), px.add(off[3]), qb.add(off[1]), qf.add(off[2]));
                if !has_filter && s[0] == 1 && s[1] == 1 && s[3] == 1 {
                    // Unit strides, no filter: the loop the compiler vectorises.
                    match pc {
                        // The exps over their `x` (see `Layout`): one pointer,
                        // so that the compiler's overlap test before its
                        // vector loop does not send it to the scalar one.
                        Some(pc) if std::ptr::eq(pc.add(off[0]), b) => {
                            let c = pc.add(off[0]);
                            for i in 0..n {
                                let e = (*c.add(i) - *sh.add(i)).exp::<F>();
                                *c.add(i) = e;
                                *x.add(i) = *x.add(i) + e;
                            }
                        }
                        Some(pc) => {
                            let c = pc.add(off[0]);
                            for i in 0..n {
                                let e = (*b.add(i) - *sh.add(i)).exp::<F>();
                                *c.add(i) = e;
                                *x.add(i) = *x.add(i) + e;
                            }
                        }
                        None => {
                            for i in 0..n {
                                *x.add(i) = *x.add(i) + (*b.add(i) - *sh.add(i)).exp::<F>();
                            }
                        }
                    }
                    return;
                }
                for i in 0..n {
                    let keep = !has_filter || *fl.add(i * s[2]) != T::ZERO;
                    let v = sel(keep, *b.add(i * s[1]), ninf);
                    let e = (v - *sh.add(i * s[3])).exp::<F>();
                    if let Some(pc) = pc {
                        *pc.add(off[0] + i * s[0]) = e;
                    }
                    *x.add(i * s[3]) = *x.add(i * s[3]) + e;
                }
            });
        }
        (Fold::Reg(body), _) => {
            let f = filter.unwrap_or(body);
            let has_filter = filter.is_some();
            let w = Walk::new(ex, &loops, rowdep, &[body, f, acc]);
            let (qb, qf) = (ex.ptr[body as usize], ex.ptr[f as usize]);
            w.each(4, |off, n, s| unsafe {
                let o = pa.add(off[3]);
                // (a mean's count; a sum's `aux` has no buffer)
                let x = px.wrapping_add(off[3]);
                let (b, fl) = (qb.add(off[1]), qf.add(off[2]));
                let keep = |i: usize| !has_filter || *fl.add(i * s[2]) != T::ZERO;
                match op {
                    RedOp::Sum | RedOp::Mean => {
                        if !has_filter && s[1] == 1 && s[3] == 1 {
                            for i in 0..n {
                                *o.add(i) = *o.add(i) + *b.add(i);
                            }
                        } else {
                            for i in 0..n {
                                let k = keep(i);
                                let v = sel(k, *b.add(i * s[1]), T::ZERO);
                                *o.add(i * s[3]) = *o.add(i * s[3]) + v;
                            }
                        }
                        if op == RedOp::Mean {
                            for i in 0..n {
                                let c = sel(keep(i), T::ONE, T::ZERO);
                                *x.add(i * s[3]) = *x.add(i * s[3]) + c;
                            }
                        }
                    }
                    RedOp::Max | RedOp::Min => {
                        for i in 0..n {
                            let v = sel(keep(i), *b.add(i * s[1]), T::of(f64::NAN));
                            let a = *o.add(i * s[3]);
                            *o.add(i * s[3]) = if op == RedOp::Max { a.max(v) } else { a.min(v) };
                        }
                    }
                    RedOp::LogSumExp => unreachable!("folded above"),
                }
            });
        }
        (Fold::Prod(..), Some(_)) => unreachable!("products are folded only without a filter"),
    }
}
    };
}

/// A product folded over a tile that is a small matrix product: for every
/// accumulator position `a` and row `r`, `acc[a, r] += sum_t x[t, r] * y[a, t]`
/// (a dot product over a vector's components for a tile of other rows, or a
/// gradient gathered from a tile of rows). The walk would load and store
/// the accumulator once per multiply-add; this keeps a block of it in
/// registers across the whole tile, 4 positions by 2 vectors of rows, so a
/// vector multiply-add costs half a broadcast and a quarter of a load. Each
/// accumulator still adds its terms in `t` order, one `madd` at a time: the
/// bits are those of the walk.
struct Gemm<T> {
    /// Positions, tile length, rows.
    dims: [usize; 3],
    acc: *mut T,
    /// The accumulator's stride over positions (its rows are contiguous).
    sa: usize,
    x: *const T,
    /// `x`'s stride over the tile (its rows are contiguous).
    sxt: usize,
    y: *const T,
    /// `y`'s strides over positions and over the tile.
    sya: usize,
    syt: usize,
}

impl<T: Float> Gemm<T> {
    /// The walk's shape if it is such a product: three axes, the rows
    /// innermost and contiguous for the accumulator and one operand, the
    /// accumulator not moving along the tile, the other operand not moving
    /// along the rows.
    #[inline(always)]
    fn of(w: &Walk, qa: *const T, qb: *const T, acc: *mut T) -> Option<Gemm<T>> {
        if w.nd != 3 {
            return None;
        }
        let [sa0, sa1, sa2] = [w.strides[1][0], w.strides[1][1], w.strides[1][2]];
        let [sb0, sb1, sb2] = [w.strides[2][0], w.strides[2][1], w.strides[2][2]];
        let [so0, so1, so2] = [w.strides[3][0], w.strides[3][1], w.strides[3][2]];
        // (positions that alias one accumulator would lose all but one
        // block's sums: never from a fold, refused all the same)
        if so0 == 0 || so1 != 0 || so2 != 1 || w.dims[2] < 2 {
            return None;
        }
        // (x strides over the tile and rows, y strides over positions and tile)
        let (x, sxt, y, sya, syt) = if sa0 == 0 && sa2 == 1 && sb2 == 0 {
            (qa, sa1, qb, sb0, sb1)
        } else if sb0 == 0 && sb2 == 1 && sa2 == 0 {
            (qb, sb1, qa, sa0, sa1)
        } else {
            return None;
        };
        Some(Gemm {
            dims: [w.dims[0], w.dims[1], w.dims[2]],
            acc,
            sa: so0,
            x,
            sxt,
            y,
            sya,
            syt,
        })
    }

    /// Blocks of two vectors of rows, `VB` bytes each, by 4 positions (8
    /// independent multiply-add chains, enough to keep both FMA pipes busy
    /// across their latency; one vector of rows would leave half idle), or
    /// by 8 positions for `f64` in 64-byte vectors (16 chains; 8 positions
    /// of 32 `f32` rows spilled registers and ran 2.2x slower).
    #[inline(always)]
    unsafe fn run<const F: bool, const VB: usize>(&self) {
        // Rows short of a whole block (the rest of a chunk) go by half
        // blocks before they go one at a time.
        unsafe {
            let done = match (VB, std::mem::size_of::<T>()) {
                (64, 4) => self.blocked::<F, 16, 4>(self.blocked::<F, 32, 4>(0)),
                (64, _) => self.blocked::<F, 8, 4>(self.blocked::<F, 16, 8>(0)),
                (_, 4) => self.blocked::<F, 16, 4>(0),
                _ => self.blocked::<F, 8, 4>(0),
            };
            self.singles::<F>(done);
        }
    }

    /// Blocks of `AB` positions by `RB` rows from row `from` on, and the
    /// positions left over one at a time; returns the first row not done.
    #[inline(always)]
    unsafe fn blocked<const F: bool, const RB: usize, const AB: usize>(
        &self,
        from: usize,
    ) -> usize {
        let [na, _, nr] = self.dims;
        let full = from + (nr - from) / RB * RB;
        unsafe {
            for r0 in (from..full).step_by(RB) {
                let mut a0 = 0;
                while a0 + AB <= na {
                    self.block::<F, RB, AB>(a0, r0);
                    a0 += AB;
                }
                for a in a0..na {
                    self.block::<F, RB, 1>(a, r0);
                }
            }
        }
        full
    }

    /// Every position for the rows from `from` on, one at a time.
    #[inline(always)]
    unsafe fn singles<const F: bool>(&self, from: usize) {
        let [na, _, nr] = self.dims;
        unsafe {
            for a in 0..na {
                for r in from..nr {
                    self.block::<F, 1, 1>(a, r);
                }
            }
        }
    }

    /// Positions `a0..a0 + AB`, rows `r0..r0 + RB`, over the whole tile,
    /// the accumulators in registers.
    #[inline(always)]
    unsafe fn block<const F: bool, const RB: usize, const AB: usize>(&self, a0: usize, r0: usize) {
        let mut s = [[T::ZERO; RB]; AB];
        unsafe {
            for (i, si) in s.iter_mut().enumerate() {
                let o = self.acc.add((a0 + i) * self.sa + r0);
                for (l, v) in si.iter_mut().enumerate() {
                    *v = *o.add(l);
                }
            }
            for t in 0..self.dims[1] {
                let xp = self.x.add(t * self.sxt + r0);
                let mut xv = [T::ZERO; RB];
                for (l, v) in xv.iter_mut().enumerate() {
                    *v = *xp.add(l);
                }
                for (i, si) in s.iter_mut().enumerate() {
                    let yv = *self.y.add((a0 + i) * self.sya + t * self.syt);
                    for l in 0..RB {
                        si[l] = T::madd::<F>(xv[l], yv, si[l]);
                    }
                }
            }
            for (i, si) in s.iter().enumerate() {
                let o = self.acc.add((a0 + i) * self.sa + r0);
                for (l, v) in si.iter().enumerate() {
                    *o.add(l) = *v;
                }
            }
        }
    }
}

/// Adds a scatter's terms for the current tiles: for each row `m` of the
/// batch tile and component `c` of the component tile, the terms of the
/// chunk's rows, in row order, into row `m`, component `c` of this group's
/// buffer (one `madd` at a time, whichever way the loop is blocked).
///
/// A term that is a product of a value per batch row and one per
/// component (InfoNCE's `P[i, m] q[i, c]`) is a matrix product: the
/// component operand is transposed once per tile so that components are
/// contiguous, and the buffer's rows, components contiguous, are blocked
/// in registers as in [`Gemm`].
#[inline(always)]
unsafe fn scatter_fold<T: Float, const F: bool, const VB: usize>(
    ex: &mut Exec<'_, T>,
    rows_scope: u16,
    target: u16,
    fold: Fold,
    comp: Option<u16>,
) {
    let pass = ex.cx.pass;
    let (first, second, width) = ex.cx.sinks.scatters[target as usize];
    let dst = if ex.group == 0 { first } else { second };
    let (oj, nj) = (ex.off[rows_scope as usize], ex.ext[rows_scope as usize]);
    let (oc, nc) = comp.map_or((0, 1), |c| (ex.off[c as usize], ex.ext[c as usize]));
    let len = ex.len;
    if let (Fold::Prod(p, q), Some(cs)) = (fold, comp) {
        let per_row =
            |r: Reg| pass.regs[r as usize].rowdep && pass.regs[r as usize].loops == [rows_scope];
        let per_comp = |r: Reg| pass.regs[r as usize].rowdep && pass.regs[r as usize].loops == [cs];
        let ab = if per_row(p) && per_comp(q) {
            Some((p, q))
        } else if per_row(q) && per_comp(p) {
            Some((q, p))
        } else {
            None
        };
        if let Some((a, b)) = ab {
            if ex.tmp.len() < len * nc {
                ex.tmp.resize(len * nc, T::ZERO);
            }
            let pb = ex.ptr[b as usize];
            for c in 0..nc {
                for i in 0..len {
                    // SAFETY: `b` holds `nc` components of `len` rows.
                    ex.tmp[i * nc + c] = unsafe { *pb.add(c * len + i) };
                }
            }
            let g = Gemm {
                dims: [nj, len, nc],
                // SAFETY: rows `oj..oj + nj`, components `oc..oc + nc`.
                acc: unsafe { dst.add(oj * width + oc) },
                sa: width,
                x: ex.tmp.as_ptr(),
                sxt: nc,
                y: ex.ptr[a as usize],
                sya: len,
                syt: 1,
            };
            // SAFETY: as above; `a` holds `nj` batch rows of `len` rows.
            unsafe { g.run::<F, VB>() };
            return;
        }
    }
    // An operand at component `c`, batch row `m`: its values over the rows
    // and their stride (0 when it does not depend on the row).
    let at = |r: Reg, c: usize, m: usize| -> (*const T, usize) {
        let d = &pass.regs[r as usize];
        let mut pos = 0;
        for &l in &d.loops {
            let (i, e) = if l == rows_scope { (m, nj) } else { (c, nc) };
            pos = pos * e + i;
        }
        let rs = if d.rowdep { len } else { 1 };
        (
            unsafe { ex.ptr[r as usize].add(pos * rs) },
            d.rowdep as usize,
        )
    };
    for m in 0..nj {
        for c in 0..nc {
            // SAFETY: row `oj + m` of the batch, component `oc + c` of its
            // `width`.
            let o = unsafe { dst.add((oj + m) * width + oc + c) };
            let mut s = unsafe { *o };
            match fold {
                Fold::Reg(x) => {
                    let (px, sx) = at(x, c, m);
                    for i in 0..len {
                        s = s + unsafe { *px.add(i * sx) };
                    }
                }
                Fold::Prod(a, b) => {
                    let ((pa, sa), (pb, sb)) = (at(a, c, m), at(b, c, m));
                    for i in 0..len {
                        s = unsafe { T::madd::<F>(*pa.add(i * sa), *pb.add(i * sb), s) };
                    }
                }
            }
            unsafe { *o = s };
        }
    }
}

#[inline(always)]
fn finish_acc<T: Float, const F: bool>(
    ex: &mut Exec<'_, T>,
    op: RedOp,
    acc: Reg,
    aux: Reg,
    cached: bool,
) {
    let (b, r) = dims(ex, acc);
    let n = b * r;
    let pa = ex.ptr[acc as usize] as *mut T;
    let px = ex.ptr[aux as usize] as *mut T;
    match op {
        RedOp::Mean => unsafe {
            for i in 0..n {
                *pa.add(i) = *pa.add(i) / *px.add(i);
            }
        },
        RedOp::LogSumExp => unsafe {
            for i in 0..n {
                let m = *pa.add(i);
                *pa.add(i) = sel(finite(m), m + (*px.add(i)).ln::<F>(), m);
            }
            // What a softmax multiplies the kept exps by.
            if cached {
                for i in 0..n {
                    *px.add(i) = T::ONE / *px.add(i);
                }
            }
        },
        _ => {}
    }
}

#[inline(always)]
fn finish_chunk<T: Float>(ex: &mut Exec<'_, T>, sums: &mut [f64]) {
    let pass = ex.cx.pass;
    for &(reg, i) in &pass.sums {
        let p = ex.ptr[reg as usize];
        let rowdep = pass.regs[reg as usize].rowdep;
        let total = if rowdep {
            math::sum_lanes(unsafe { std::slice::from_raw_parts(p, ex.len) })
        } else {
            unsafe { (*p).f64() * ex.len as f64 }
        };
        sums[i] += total;
    }
    for &(reg, t) in &pass.tables {
        let p = ex.ptr[reg as usize];
        let rs = if pass.regs[reg as usize].rowdep { 1 } else { 0 };
        let dst = ex.cx.sinks.tables[t as usize];
        for l in 0..ex.len {
            unsafe { *dst.add(ex.row0 + l) = *p.add(l * rs) };
        }
    }
}

def_op!(op_base, false);
def_fold!(fold_base, false, 32);
variant!(block_base, scope_base, op_base, fold_base, false, 32);
#[cfg(target_arch = "x86_64")]
def_op!(op_avx2, true, "avx2,fma");
#[cfg(target_arch = "x86_64")]
def_fold!(fold_avx2, true, 32, "avx2,fma");
#[cfg(target_arch = "x86_64")]
variant!(
    block_avx2, scope_avx2, op_avx2, fold_avx2, true, 32, "avx2,fma"
);
#[cfg(target_arch = "x86_64")]
def_op!(
    op_avx512,
    true,
    "avx512f,avx512bw,avx512dq,avx512vl,avx2,fma"
);
#[cfg(target_arch = "x86_64")]
def_fold!(
    fold_avx512,
    true,
    64,
    "avx512f,avx512bw,avx512dq,avx512vl,avx2,fma"
);
#[cfg(target_arch = "x86_64")]
variant!(
    block_avx512,
    scope_avx512,
    op_avx512,
    fold_avx512,
    true,
    64,
    "avx512f,avx512bw,avx512dq,avx512vl,avx2,fma"
);

#[cfg(test)]
mod tests {
    use super::*;

    /// The first pass of an example's plan.
    fn first_pass(example: &str) -> Pass {
        let loss = crate::Loss::from_file(format!("examples/{example}.loss")).unwrap();
        let ev = loss.compile::<f64>().unwrap();
        ev.shared.plan.passes[0].clone()
    }

    #[test]
    fn a_batch_logsumexp_keeps_its_exps_while_they_fit() {
        let pass = first_pass("infonce");
        let kept = |l: &Layout| {
            pass.scopes[0].items.iter().any(|i| match i {
                Item::Loop {
                    scope,
                    kind: LoopKind::Reduce { cache: Some(_), .. },
                } => l.tile[*scope as usize] == l.extent[*scope as usize],
                _ => false,
            })
        };
        let products = |l: &Layout| {
            pass.scopes
                .iter()
                .flat_map(|s| &s.items)
                .filter(|i| match i {
                    Item::Loop {
                        kind:
                            LoopKind::Reduce {
                                acc,
                                fold: Fold::Prod(..),
                                ..
                            },
                        ..
                    } => !l.skip[*acc as usize],
                    _ => false,
                })
                .count()
        };
        // n = 4096: 64 rows of 4096 exps in f32, 32 in f64 (1 MiB); the
        // gradient's and the scatter's softmaxes read them, so the two
        // products that computed their `x` again are skipped (the
        // logsumexp's, the row's own dot product and the gradient's `P K`
        // remain).
        for (bytes, chunk) in [(4, 64), (8, 32)] {
            let l = layout(&pass, &[128], 4096, &|_| 128, bytes);
            assert!(kept(&l) && l.chunk == chunk, "{l:?}");
            assert_eq!(products(&l), 3);
        }
        // Past 8192 rows of f64 even 16 rows of exps do not fit: nothing is
        // kept and every softmax computes its exps from `x`.
        let l = layout(&pass, &[128], 8200, &|_| 128, 8);
        assert!(!kept(&l), "{l:?}");
        assert_eq!(products(&l), 5);
    }

    #[test]
    fn a_batch_softmax_gives_the_same_with_and_without_its_kept_exps() {
        let loss = crate::Loss::from_file("examples/infonce.loss").unwrap();
        let mut rng = crate::grad::Rng::new(5);
        let (n, d) = (300, 7);
        let q = ndarray::Array2::from_shape_fn((n, d), |_| rng.normal()).into_dyn();
        let k = ndarray::Array2::from_shape_fn((n, d), |_| rng.normal()).into_dyn();
        let inputs = crate::Inputs::new().with("q", q.view()).with("k", k.view());
        let run = |limit: usize| {
            CACHE_LIMIT.with(|c| c.set(limit));
            let out = loss.compile::<f64>().unwrap().eval(&inputs).unwrap();
            CACHE_LIMIT.with(|c| c.set(CACHE_BYTES));
            out
        };
        let (kept, recomputed) = (run(CACHE_BYTES), run(0));
        assert!((kept.loss() - recomputed.loss()).abs() <= 1e-14 * kept.loss().abs());
        for name in ["q", "k"] {
            let (a, b) = (kept.grad(name), recomputed.grad(name));
            let scale = b.iter().fold(0f64, |m, x| m.max(x.abs()));
            for (x, y) in a.iter().zip(b.iter()) {
                assert!((x - y).abs() <= 1e-14 * scale, "d/d{name}: {x} vs {y}");
            }
        }
    }

    #[test]
    fn a_vector_split_into_tiles_is_read_a_few_rows_at_a_time() {
        let pass = first_pass("cce_logits");
        let feature = |l: &Layout| l.tile.iter().zip(&l.extent).skip(1).all(|(t, e)| t == e);
        // 10 and 64 logits: one tile, as many rows as the budget allows.
        let l = layout(&pass, &[10], 100_000, &|_| 10, 8);
        assert!(feature(&l) && l.chunk == MAX_CHUNK, "{l:?}");
        let l = layout(&pass, &[64], 100_000, &|_| 64, 8);
        assert!(feature(&l) && l.chunk == 256, "{l:?}");
        // 100 and 256 logits are split at 256 rows, and whole at 64.
        for c in [100, 256] {
            let l = layout(&pass, &[c], 100_000, &|_| c, 8);
            assert!(feature(&l) && l.chunk == SPLIT_CHUNK, "{l:?}");
        }
        // 1000 logits: tiles of 63, and 64 rows per chunk.
        let l = layout(&pass, &[1000], 100_000, &|_| 1000, 8);
        assert!(!feature(&l) && l.chunk == SPLIT_CHUNK, "{l:?}");
        assert!(l.tile[1..].iter().all(|&t| t == 63), "{l:?}");
        // A batch loop is split into tiles whatever its size, and keeps
        // its chunk.
        let pass = first_pass("pairwise_hinge_ranking");
        assert!(pass.coupled);
        let l = layout(&pass, &[], 4096, &|_| 1, 8);
        assert!(
            l.tile[1..].iter().zip(&l.extent[1..]).any(|(t, e)| t < e),
            "{l:?}"
        );
        assert!(l.chunk > SPLIT_CHUNK, "{l:?}");
    }

    /// A walk over [positions, tile, rows] with `x` as operand `xi` (1 or 2)
    /// and `y` as the other, strides as the fold builds them.
    fn walk(na: usize, nt: usize, nr: usize, x_first: bool) -> Walk {
        let mut w = Walk {
            dims: [1; MAX_LOOPS + 2],
            strides: [[0; MAX_LOOPS + 2]; 4],
            nd: 3,
        };
        w.dims[..3].copy_from_slice(&[na, nt, nr]);
        let x = [0, nr, 1];
        let y = [nt, 1, 0];
        let (s1, s2) = if x_first { (x, y) } else { (y, x) };
        w.strides[1][..3].copy_from_slice(&s1);
        w.strides[2][..3].copy_from_slice(&s2);
        w.strides[3][..3].copy_from_slice(&[nr, 0, 1]);
        w
    }

    /// The blocked product adds each accumulator's terms in the walk's
    /// order: the same bits as one multiply-add per (position, tile, row).
    fn same_bits<T: Float, const F: bool, const VB: usize>() {
        let mut rng = crate::grad::Rng::new(3);
        for &na in &[1, 3, 4, 5, 9] {
            for &nt in &[1, 7, 16] {
                for &nr in &[2, 7, 8, 15, 16, 17, 31, 32, 33, 65] {
                    for x_first in [true, false] {
                        let x: Vec<T> = (0..nt * nr).map(|_| T::of(rng.normal())).collect();
                        let y: Vec<T> = (0..na * nt).map(|_| T::of(rng.normal())).collect();
                        let init: Vec<T> = (0..na * nr).map(|_| T::of(rng.normal())).collect();
                        let mut want = init.clone();
                        for a in 0..na {
                            for t in 0..nt {
                                for r in 0..nr {
                                    let o = &mut want[a * nr + r];
                                    *o = T::madd::<F>(x[t * nr + r], y[a * nt + t], *o);
                                }
                            }
                        }
                        let mut got = init.clone();
                        let w = walk(na, nt, nr, x_first);
                        let (qa, qb) = if x_first {
                            (x.as_ptr(), y.as_ptr())
                        } else {
                            (y.as_ptr(), x.as_ptr())
                        };
                        let g = Gemm::of(&w, qa, qb, got.as_mut_ptr()).expect("a product");
                        unsafe { g.run::<F, VB>() };
                        let bits =
                            |v: &[T]| v.iter().map(|e| e.f64().to_bits()).collect::<Vec<_>>();
                        assert_eq!(
                            bits(&got),
                            bits(&want),
                            "{na} x {nt} x {nr}, x first {x_first}"
                        );
                    }
                }
            }
        }
    }

    #[test]
    fn a_blocked_product_has_the_bits_of_the_walk() {
        same_bits::<f32, false, 32>();
        same_bits::<f64, false, 32>();
        same_bits::<f32, true, 32>();
        same_bits::<f64, true, 32>();
        // (the 64-byte blocks' bits, computed without AVX-512)
        same_bits::<f32, true, 64>();
        same_bits::<f64, true, 64>();
    }

    #[test]
    fn only_a_product_shaped_walk_is_blocked() {
        let (x, y, mut acc) = ([0f64; 64], [0f64; 64], [0f64; 64]);
        let ok = walk(4, 4, 4, true);
        assert!(Gemm::of(&ok, x.as_ptr(), y.as_ptr(), acc.as_mut_ptr()).is_some());
        // The accumulator moving along the tile: not a reduction over it.
        let mut w = walk(4, 4, 4, true);
        w.strides[3][1] = 4;
        assert!(Gemm::of(&w, x.as_ptr(), y.as_ptr(), acc.as_mut_ptr()).is_none());
        // Both operands moving along the rows.
        let mut w = walk(4, 4, 4, true);
        w.strides[2][2] = 1;
        assert!(Gemm::of(&w, x.as_ptr(), y.as_ptr(), acc.as_mut_ptr()).is_none());
        // Every position folding into the same accumulator.
        let mut w = walk(4, 4, 4, true);
        w.strides[3][0] = 0;
        assert!(Gemm::of(&w, x.as_ptr(), y.as_ptr(), acc.as_mut_ptr()).is_none());
        // A single row, or another number of axes.
        let w = walk(4, 4, 1, true);
        assert!(Gemm::of(&w, x.as_ptr(), y.as_ptr(), acc.as_mut_ptr()).is_none());
        let mut w = walk(4, 4, 4, true);
        w.nd = 2;
        assert!(Gemm::of(&w, x.as_ptr(), y.as_ptr(), acc.as_mut_ptr()).is_none());
    }
}
