//! Input validation: every value against its declared domain.
//!
//! Two entry points share one per-value test ([`Check::ok`]):
//!
//! - [`block_ok`] answers "is every value of rows `r0..r1` valid?" with a
//!   branch-free loop compiled for the wide vector units. A single-pass
//!   plan calls it on each block right before computing that block, while
//!   the block's rows are in cache, so validation costs no second read of
//!   the inputs from memory (for a memory-bound loss that read was as
//!   expensive as the loss itself).
//! - [`check_domain`] finds the first offending value of a whole input and
//!   describes it; it runs before any work for plans that read other rows,
//!   and after a block reports a failure, so errors are the same either way.

use super::plan::InputDecl;
use super::{EvalError, Float};
use crate::sema::types::{Dom, Size};
use ndarray::ArrayViewD;
use rayon::prelude::*;

/// The per-value test of a domain, resolved for one evaluation.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Check<'a> {
    /// Not NaN (a domain that says nothing else).
    NotNan,
    /// Inside an interval; `lo_closed`, `hi_closed` as declared.
    Range {
        lo: f64,
        hi: f64,
        lo_closed: bool,
        hi_closed: bool,
    },
    /// One of two labels.
    Two(f64, f64),
    /// One of a set of labels.
    Set(&'a [f64]),
    /// An integer class index below the class count.
    Class(f64),
    /// 0 or 1 (one-hot, multi-hot, and their rows' sums checked apart).
    ZeroOne,
    /// In `[0, 1]` (a simplex row, whose sum is checked apart).
    Unit,
}

impl<'a> Check<'a> {
    /// The test for `dom`, with the class count from the evaluation's sizes.
    pub(crate) fn new(dom: &'a Dom, sizes: &[Size], lens: &[usize]) -> Check<'a> {
        match dom {
            Dom::Unknown => Check::NotNan,
            Dom::Range(r) => Check::Range {
                lo: r.lo,
                hi: r.hi,
                lo_closed: r.lo_closed,
                hi_closed: r.hi_closed,
            },
            Dom::Labels(vs) if vs.len() == 2 => Check::Two(vs[0], vs[1]),
            Dom::Labels(vs) => Check::Set(vs),
            Dom::Class(s) => Check::Class(
                sizes
                    .iter()
                    .position(|x| x == s)
                    .map_or(usize::MAX, |i| lens[i]) as f64,
            ),
            Dom::Onehot | Dom::Multihot => Check::ZeroOne,
            Dom::Probs => Check::Unit,
        }
    }

    /// Whether `v` belongs. `&` rather than `&&`, so loops over it stay
    /// branch-free and vectorise.
    #[inline(always)]
    pub(crate) fn ok(&self, v: f64) -> bool {
        match *self {
            Check::NotNan => !v.is_nan(),
            Check::Range {
                lo,
                hi,
                lo_closed,
                hi_closed,
            } => {
                let above = if lo_closed { v >= lo } else { v > lo };
                let below = if hi_closed { v <= hi } else { v < hi };
                above & below
            }
            Check::Two(x, y) => (v == x) | (v == y),
            Check::Set(vs) => vs.contains(&v),
            Check::Class(c) => (v >= 0.0) & (v < c) & (v.fract() == 0.0),
            Check::ZeroOne => (v == 0.0) | (v == 1.0),
            Check::Unit => (0.0..=1.0).contains(&v),
        }
    }
}

// Tests for generated code. Each returns zero when `v` belongs and a
// nonzero mask when it does not; the kernel ORs them per lane and tests the
// total once per block (see [`Float::Bits`]). Bounds exact in `T` are
// compared in `T`, which after inlining is decided at compile time, so a
// test is one or two vector compares (a finite test, one subtraction).

/// Nonzero unless `v` lies in an interval (for generated code).
#[inline(always)]
pub fn out_of_range<T: Float>(v: T, lo: f64, hi: f64, lo_closed: bool, hi_closed: bool) -> T::Bits {
    if lo == f64::NEG_INFINITY && hi == f64::INFINITY && !lo_closed && !hi_closed {
        return not_finite(v);
    }
    T::mask(!if T::of(lo).f64() == lo && T::of(hi).f64() == hi {
        let (lo, hi) = (T::of(lo), T::of(hi));
        let above = if lo_closed { v >= lo } else { v > lo };
        let below = if hi_closed { v <= hi } else { v < hi };
        above & below
    } else {
        Check::Range {
            lo,
            hi,
            lo_closed,
            hi_closed,
        }
        .ok(v.f64())
    })
}

/// Nonzero unless `v` is one of two labels (for generated code).
#[inline(always)]
pub fn not_either<T: Float>(v: T, a: f64, b: f64) -> T::Bits {
    T::mask(!if T::of(a).f64() == a && T::of(b).f64() == b {
        (v == T::of(a)) | (v == T::of(b))
    } else {
        let x = v.f64();
        (x == a) | (x == b)
    })
}

/// Nonzero unless `v` is finite: `v - v` is +0 for every finite value and
/// NaN for an infinity or a NaN, so its bits are the test (a subtraction,
/// where two compares would be needed).
#[inline(always)]
#[allow(clippy::eq_op)]
fn not_finite<T: Float>(v: T) -> T::Bits {
    (v - v).bits()
}

/// Nonzero when `v` is NaN (for generated code).
#[inline(always)]
#[allow(clippy::eq_op)]
pub fn is_nan<T: Float>(v: T) -> T::Bits {
    T::mask(v != v)
}

/// The tolerance on a simplex row's sum: rounding grows with the width.
fn simplex_tol<T: Float>(width: usize) -> f64 {
    (if T::NAME == "f32" { 1e-4 } else { 1e-9 } * width as f64).max(1e-6)
}

/// What a one-hot row's or simplex row's sum test looks at: the number of
/// ones, or the sum.
#[inline(always)]
fn row_total<T: Float>(dom: &Dom, row: impl Iterator<Item = T>) -> f64 {
    match dom {
        Dom::Onehot => row.filter(|v| v.f64() == 1.0).count() as f64,
        _ => row.map(|v| v.f64()).sum(),
    }
}

/// Whether a one-hot or simplex row is well formed (its values already
/// checked one by one).
#[inline(always)]
fn row_ok<T: Float>(dom: &Dom, width: usize, row: impl Iterator<Item = T>) -> bool {
    match dom {
        Dom::Onehot => row_total(dom, row) == 1.0,
        Dom::Probs => (row_total(dom, row) - 1.0).abs() <= simplex_tol::<T>(width),
        _ => true,
    }
}

/// Whether some value of `s` fails `check`, without branches in the loop:
/// one arm per test so each loop is a plain vector loop, comparing in `T`
/// when the bounds are exact in `T` (the same answer as in `f64`, without
/// widening every value). Failures are ORed as masks as wide as `T`, as in
/// generated code ([`out_of_range`]).
#[inline(always)]
fn any_bad<T: Float>(s: &[T], check: Check<'_>) -> bool {
    macro_rules! scan {
        (|$v:ident| $ok:expr) => {
            scan_bits!(|$v| T::mask(!($ok)))
        };
    }
    macro_rules! scan_bits {
        (|$v:ident| $bad:expr) => {{
            let mut bad = T::Bits::default();
            for &$v in s {
                bad |= $bad;
            }
            bad != T::Bits::default()
        }};
    }
    let exact = |x: f64| T::of(x).f64() == x;
    match check {
        Check::NotNan => scan_bits!(|v| is_nan(v)),
        Check::Range {
            lo: f64::NEG_INFINITY,
            hi: f64::INFINITY,
            lo_closed: false,
            hi_closed: false,
        } => scan_bits!(|v| not_finite(v)),
        Check::Range {
            lo,
            hi,
            lo_closed,
            hi_closed,
        } if exact(lo) && exact(hi) => {
            let (lo, hi) = (T::of(lo), T::of(hi));
            match (lo_closed, hi_closed) {
                (true, true) => scan!(|v| (v >= lo) & (v <= hi)),
                (true, false) => scan!(|v| (v >= lo) & (v < hi)),
                (false, true) => scan!(|v| (v > lo) & (v <= hi)),
                (false, false) => scan!(|v| (v > lo) & (v < hi)),
            }
        }
        Check::Two(a, b) if exact(a) && exact(b) => {
            let (a, b) = (T::of(a), T::of(b));
            scan!(|v| (v == a) | (v == b))
        }
        // (`fract` is a vector rounding; through `ok` in f64 the loop ran
        // at a third of memory speed, 7% of `cce_logits` at C = 10)
        Check::Class(c) if exact(c) => {
            let c = T::of(c);
            scan!(|v| (v >= T::ZERO) & (v < c) & v.is_integer())
        }
        Check::ZeroOne => scan!(|v| (v == T::ZERO) | (v == T::ONE)),
        Check::Unit => scan!(|v| (v >= T::ZERO) & (v <= T::ONE)),
        _ => scan!(|v| check.ok(v.f64())),
    }
}

/// Whether every value of rows `r0..r1` of an input (`width` values per
/// row, row-major) is valid, rows included.
///
/// # Safety
/// `ptr` must point to at least `r1 * width` readable values.
pub(crate) unsafe fn block_ok<T: Float>(
    dom: &Dom,
    check: Check<'_>,
    ptr: *const T,
    width: usize,
    r0: usize,
    r1: usize,
) -> bool {
    // SAFETY: the caller guarantees the rows are readable.
    let s = unsafe { std::slice::from_raw_parts(ptr.add(r0 * width), (r1 - r0) * width) };
    let bad = match super::isa::active() {
        #[cfg(target_arch = "x86_64")]
        super::Isa::Avx512 => {
            #[target_feature(enable = "avx512f,avx512bw,avx512dq,avx512vl,avx2,fma")]
            unsafe fn wide<T: Float>(s: &[T], check: Check<'_>) -> bool {
                any_bad(s, check)
            }
            // SAFETY: the CPU has AVX-512.
            unsafe { wide(s, check) }
        }
        #[cfg(target_arch = "x86_64")]
        super::Isa::Avx2 => {
            #[target_feature(enable = "avx2,fma")]
            unsafe fn wide<T: Float>(s: &[T], check: Check<'_>) -> bool {
                any_bad(s, check)
            }
            // SAFETY: the CPU has AVX2 and FMA.
            unsafe { wide(s, check) }
        }
        _ => any_bad(s, check),
    };
    !bad && (width == 1
        || s.chunks_exact(width)
            .all(|r| row_ok(dom, width, r.iter().copied())))
}

/// Checks that every value of an input lies in its declared domain, and
/// describes the first that does not.
pub(crate) fn check_domain<T: Float>(
    decl: &InputDecl,
    a: &ArrayViewD<'_, T>,
    sizes: &[Size],
    lens: &[usize],
) -> Result<(), EvalError> {
    let width = if a.ndim() == 2 { a.shape()[1] } else { 1 };
    let dom = &decl.dom;
    let check = Check::new(dom, sizes, lens);
    let bad = |i: usize| {
        let v = a.iter().nth(i).map_or(f64::NAN, |v| v.f64());
        EvalError::Domain {
            name: decl.name.clone(),
            type_text: decl.type_text.clone(),
            row: i / width,
            component: (a.ndim() == 2).then_some(i % width),
            value: v,
            domain: dom.describe(),
        }
    };
    // Vectorised over contiguous data; only on a failure is the offending
    // position searched for.
    let all = match a.as_slice() {
        Some(s) => s.par_chunks(1 << 16).all(|c| !any_bad(c, check)),
        None => a.iter().all(|v| check.ok(v.f64())),
    };
    if !all && let Some(i) = a.iter().position(|v| !check.ok(v.f64())) {
        return Err(bad(i));
    }
    if matches!(dom, Dom::Onehot | Dom::Probs) {
        for (r, row) in a.outer_iter().enumerate() {
            if row_ok(dom, width, row.iter().copied()) {
                continue;
            }
            let total = row_total(dom, row.iter().copied());
            let problem = if matches!(dom, Dom::Onehot) {
                format!("a one-hot row needs exactly one 1, this one has {total}")
            } else {
                format!("a probability vector must sum to 1, this one sums to {total}")
            };
            return Err(EvalError::Row {
                name: decl.name.clone(),
                row: r,
                problem,
            });
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The generated code's tests agree with [`Check::ok`] on every edge:
    /// bounds open and closed, infinities, NaN, -0, and in f32 a bound
    /// (0.1) that is not exact in the type.
    #[test]
    fn mask_tests_agree_with_the_per_value_test() {
        let values = [
            f64::NAN,
            f64::NEG_INFINITY,
            -1.0,
            -0.0,
            0.0,
            0.1,
            0.5,
            1.0,
            10.0,
            f64::INFINITY,
        ];
        let ranges = [
            (f64::NEG_INFINITY, f64::INFINITY, false, false),
            (f64::NEG_INFINITY, f64::INFINITY, true, true),
            (0.0, 1.0, false, false),
            (0.0, 1.0, true, true),
            (0.0, f64::INFINITY, true, false),
            (0.1, 10.0, false, true),
        ];
        fn run<T: Float>(values: &[f64], ranges: &[(f64, f64, bool, bool)]) {
            for &x in values {
                let v = T::of(x);
                let wide = v.f64();
                for &(lo, hi, lc, hc) in ranges {
                    let want = Check::Range {
                        lo,
                        hi,
                        lo_closed: lc,
                        hi_closed: hc,
                    }
                    .ok(wide);
                    let got = out_of_range(v, lo, hi, lc, hc) == T::Bits::default();
                    assert_eq!(got, want, "{} {x} in ({lo}, {hi}) {lc} {hc}", T::NAME);
                }
                let got = not_either(v, 0.0, 1.0) == T::Bits::default();
                assert_eq!(got, Check::Two(0.0, 1.0).ok(wide), "{x}");
                let got = is_nan(v) == T::Bits::default();
                assert_eq!(got, Check::NotNan.ok(wide), "{x}");
            }
        }
        run::<f64>(&values, &ranges);
        run::<f32>(&values, &ranges);
    }
}
