//! Elementary functions for the evaluator's inner loops.
//!
//! libm's `exp` and `ln` are calls the compiler cannot vectorise; a loss
//! evaluated through them runs 4-15x slower than one whose functions are
//! inlined. These are branch-free (every special case is a select), use only
//! arithmetic and bit operations that have vector forms on every x86-64
//! level, and stay within a few ulp of the correctly rounded result (the
//! tests measure it). `FMA` selects fused multiply-adds, for the code paths
//! compiled with the `fma` target feature; elsewhere `mul_add` would be a
//! library call.
//!
//! Results below the smallest normal number flush to zero (`exp(-740)` is 0
//! rather than a subnormal), which no loss can observe.

#![allow(clippy::excessive_precision)] // published constants, digit for digit

use std::fmt::{Debug, Display};
use std::ops::{Add, Div, Mul, Neg, Sub};

/// The floating-point types the evaluator runs in: `f32` and `f64`.
pub trait Float:
    Copy
    + Send
    + Sync
    + PartialOrd
    + Debug
    + Display
    + Default
    + Add<Output = Self>
    + Sub<Output = Self>
    + Mul<Output = Self>
    + Div<Output = Self>
    + Neg<Output = Self>
    + 'static
{
    /// `"f32"` or `"f64"`, for messages and file headers.
    const NAME: &'static str;
    /// 0
    const ZERO: Self;
    /// 1
    const ONE: Self;
    /// Machine epsilon, for tolerances.
    const EPSILON: Self;
    /// The nearest value of this type.
    fn of(v: f64) -> Self;
    /// Widened to `f64`.
    fn f64(self) -> f64;
    /// `a * b + c`, fused when `FMA`.
    fn madd<const FMA: bool>(a: Self, b: Self, c: Self) -> Self;
    /// `e^x`
    fn exp<const FMA: bool>(self) -> Self;
    /// Natural logarithm.
    fn ln<const FMA: bool>(self) -> Self;
    /// Square root (a hardware instruction).
    fn sqrt(self) -> Self;
    /// `|x|`
    fn abs(self) -> Self;
    /// The larger, ignoring a NaN (as `f64::max`).
    fn max(self, other: Self) -> Self;
    /// The smaller, ignoring a NaN (as `f64::min`).
    fn min(self, other: Self) -> Self;
    /// `x` with the sign of `s`.
    fn copysign(self, s: Self) -> Self;
    /// Whether the value is an integer (false for NaN and infinities).
    fn is_integer(self) -> bool;
    /// Whether `|x|` is odd, for integer `x`.
    fn is_odd(self) -> bool;
    /// An unsigned integer as wide as the float. Generated code ORs its
    /// input tests into one of these per lane: a test is then one or two
    /// compares and an OR, where a `bool` accumulator costs a narrowing
    /// shuffle per vector.
    type Bits: Copy
        + Default
        + PartialEq
        + std::ops::BitOr<Output = Self::Bits>
        + std::ops::BitOrAssign
        + Send
        + Sync;
    /// The raw bits.
    fn bits(self) -> Self::Bits;
    /// 1 when `b`, else 0. Not all ones: an OR with an all-ones mask lets
    /// the compiler rewrite it as a select, and the loop then stays scalar.
    fn mask(b: bool) -> Self::Bits;
}

/// `if c { a } else { b }` written so that it compiles to a blend.
#[inline(always)]
pub fn sel<T: Float>(c: bool, a: T, b: T) -> T {
    if c { a } else { b }
}

macro_rules! float_impl {
    ($t:ty, $bits:ty, $ibits:ty, $mant:expr, $bias:expr,
     exp_lo = $exp_lo:expr, exp_hi = $exp_hi:expr,
     ln2_hi = $ln2_hi:expr, ln2_lo = $ln2_lo:expr,
     exp_poly = [$($ec:expr),*],
     ln = $ln:ident) => {
        impl Float for $t {
            const NAME: &'static str = stringify!($t);
            const ZERO: Self = 0.0;
            const ONE: Self = 1.0;
            const EPSILON: Self = <$t>::EPSILON;
            type Bits = $bits;

            #[inline(always)]
            fn bits(self) -> $bits {
                self.to_bits()
            }

            #[inline(always)]
            fn mask(b: bool) -> $bits {
                b as $bits
            }

            #[inline(always)]
            fn of(v: f64) -> Self {
                v as $t
            }

            #[inline(always)]
            fn f64(self) -> f64 {
                self as f64
            }

            #[inline(always)]
            fn madd<const FMA: bool>(a: Self, b: Self, c: Self) -> Self {
                if FMA { a.mul_add(b, c) } else { a * b + c }
            }

            #[inline(always)]
            fn exp<const FMA: bool>(self) -> Self {
                const MANT: u32 = $mant;
                const BIAS: $ibits = $bias;
                // 1.5 * 2^MANT: adding it rounds to an integer held in the
                // low mantissa bits, with no float-to-int conversion (which
                // has no AVX2 form for f64).
                const SHIFT: $t = 1.5 * (1u64 << $mant) as $t;
                let x = self;
                let xc = sel(x > $exp_hi, $exp_hi, sel(x < $exp_lo, $exp_lo, x));
                let kf = Self::madd::<FMA>(xc, std::f64::consts::LOG2_E as $t, SHIFT);
                let k = (kf.to_bits() as $ibits).wrapping_sub(SHIFT.to_bits() as $ibits);
                let kf = kf - SHIFT;
                let r = Self::madd::<FMA>(-kf, $ln2_hi, xc);
                let r = Self::madd::<FMA>(-kf, $ln2_lo, r);
                let mut p: $t = 0.0;
                $( p = Self::madd::<FMA>(p, r, $ec); )*
                // k runs one past the largest exponent at the top (x near
                // the overflow threshold): there, 2^(k-1) * 2.
                let hi = k > 0;
                let k = k - hi as $ibits;
                let scale = <$t>::from_bits(((k + BIAS) as $bits) << MANT);
                let y = p * scale * sel(hi, 2.0, 1.0);
                let y = sel(x > $exp_hi, <$t>::INFINITY, y);
                let y = sel(x < $exp_lo, 0.0, y);
                sel(x.is_nan(), x, y)
            }

            #[inline(always)]
            fn ln<const FMA: bool>(self) -> Self {
                $ln::<FMA>(self)
            }

            #[inline(always)]
            fn sqrt(self) -> Self {
                <$t>::sqrt(self)
            }

            #[inline(always)]
            fn abs(self) -> Self {
                <$t>::abs(self)
            }

            #[inline(always)]
            fn max(self, other: Self) -> Self {
                <$t>::max(self, other)
            }

            #[inline(always)]
            fn min(self, other: Self) -> Self {
                <$t>::min(self, other)
            }

            #[inline(always)]
            fn copysign(self, s: Self) -> Self {
                <$t>::copysign(self, s)
            }

            #[inline(always)]
            fn is_integer(self) -> bool {
                self.is_finite() && self.fract() == 0.0
            }

            #[inline(always)]
            fn is_odd(self) -> bool {
                (self * 0.5).fract() != 0.0
            }
        }
    };
}

// Taylor coefficients 1/k!, highest first: on |r| <= ln(2)/2 the truncation
// error is below half an ulp (degree 13 for f64, 7 for f32).
float_impl!(
    f64,
    u64,
    i64,
    52,
    1023,
    exp_lo = -708.0,
    exp_hi = 709.782712893384,
    ln2_hi = 6.931_471_803_691_238_164_9e-1,
    ln2_lo = 1.908_214_929_270_587_7e-10,
    exp_poly = [
        1.0 / 6227020800.0,
        1.0 / 479001600.0,
        1.0 / 39916800.0,
        1.0 / 3628800.0,
        1.0 / 362880.0,
        1.0 / 40320.0,
        1.0 / 5040.0,
        1.0 / 720.0,
        1.0 / 120.0,
        1.0 / 24.0,
        1.0 / 6.0,
        0.5,
        1.0,
        1.0
    ],
    ln = ln_f64
);

float_impl!(
    f32,
    u32,
    i32,
    23,
    127,
    exp_lo = -87.3,
    exp_hi = 88.722_83,
    ln2_hi = 6.931_457_5e-1,
    ln2_lo = 1.428_606_8e-6,
    exp_poly = [
        1.0 / 5040.0,
        1.0 / 720.0,
        1.0 / 120.0,
        1.0 / 24.0,
        1.0 / 6.0,
        0.5,
        1.0,
        1.0
    ],
    ln = ln_f32
);

/// fdlibm's `log`: `x = 2^e (1 + f)` with `1 + f` in `[√2/2, √2)`, then
/// `log(1 + f) = f - f²/2 + s (f²/2 + R(s²))` with `s = f / (2 + f)`.
#[inline(always)]
fn ln_f64<const FMA: bool>(x: f64) -> f64 {
    const LG: [f64; 7] = [
        6.666_666_666_666_735e-1,
        3.999_999_999_940_942e-1,
        2.857_142_874_366_239e-1,
        2.222_219_843_214_978_4e-1,
        1.818_357_216_161_805e-1,
        1.531_383_769_920_937_3e-1,
        1.479_819_860_511_658_6e-1,
    ];
    // A function item, not a closure: a closure instance shared by the
    // AVX2 and AVX-512 builds could be left out of line, built for
    // baseline x86-64.
    let m = <f64 as Float>::madd::<FMA>;
    // Subnormals are scaled into the normal range first.
    let tiny = x < f64::MIN_POSITIVE;
    let xs = sel(tiny, x * 18014398509481984.0, x); // 2^54
    let bits = xs.to_bits();
    // The biased exponent as a float without an int-to-float conversion:
    // 2^52 + e has the exponent's bits as its low mantissa bits.
    let ebits = bits >> 52;
    let e = f64::from_bits(0x4330_0000_0000_0000 | ebits) - (4503599627370496.0 + 1023.0);
    let e = sel(tiny, e - 54.0, e);
    let mant = f64::from_bits((bits & 0x000f_ffff_ffff_ffff) | 0x3ff0_0000_0000_0000);
    let big = mant > std::f64::consts::SQRT_2;
    let mant = sel(big, mant * 0.5, mant);
    let e = sel(big, e + 1.0, e);
    let f = mant - 1.0;
    let s = f / (2.0 + f);
    let z = s * s;
    let w = z * z;
    let t1 = w * m(w, m(w, LG[5], LG[3]), LG[1]);
    let t2 = z * m(w, m(w, m(w, LG[6], LG[4]), LG[2]), LG[0]);
    let r = t2 + t1;
    let hfsq = 0.5 * f * f;
    let y = e * 6.931_471_803_691_238_164_9e-1
        - ((hfsq - m(s, hfsq + r, e * 1.908_214_929_270_587_7e-10)) - f);
    let y = sel(x == 0.0, f64::NEG_INFINITY, y);
    let y = sel(x == f64::INFINITY, x, y);
    sel(x < 0.0 || x.is_nan(), f64::NAN, y)
}

/// musl's `logf`, the same scheme with a shorter polynomial.
#[inline(always)]
fn ln_f32<const FMA: bool>(x: f32) -> f32 {
    const LG: [f32; 4] = [0.666_666_6, 0.400_009_72, 0.284_987_87, 0.242_790_79];
    // A function item, not a closure: a closure instance shared by the
    // AVX2 and AVX-512 builds could be left out of line, built for
    // baseline x86-64.
    let m = <f32 as Float>::madd::<FMA>;
    let tiny = x < f32::MIN_POSITIVE;
    let xs = sel(tiny, x * 33554432.0, x); // 2^25
    let bits = xs.to_bits();
    let ebits = bits >> 23;
    let e = f32::from_bits(0x4b00_0000 | ebits) - (8388608.0 + 127.0);
    let e = sel(tiny, e - 25.0, e);
    let mant = f32::from_bits((bits & 0x007f_ffff) | 0x3f80_0000);
    let big = mant > std::f32::consts::SQRT_2;
    let mant = sel(big, mant * 0.5, mant);
    let e = sel(big, e + 1.0, e);
    let f = mant - 1.0;
    let s = f / (2.0 + f);
    let z = s * s;
    let w = z * z;
    let t1 = w * m(w, LG[3], LG[1]);
    let t2 = z * m(w, LG[2], LG[0]);
    let r = t2 + t1;
    let hfsq = 0.5 * f * f;
    let y = m(s, hfsq + r, e * 9.058_001e-6) - hfsq + f + e * 6.931_381_2e-1;
    let y = sel(x == 0.0, f32::NEG_INFINITY, y);
    let y = sel(x == f32::INFINITY, x, y);
    sel(x < 0.0 || x.is_nan(), f32::NAN, y)
}

/// `log(1 + x)`, accurate for small `x`: the rounding of `u = 1 + x` is
/// corrected by `(x - (u - 1)) / u`.
#[inline(always)]
pub fn log1p<T: Float, const FMA: bool>(x: T) -> T {
    let u = T::ONE + x;
    let y = u.ln::<FMA>() + (x - (u - T::ONE)) / u;
    let y = sel(u == T::ZERO, u.ln::<FMA>(), y);
    sel(x > T::of(1e30), x.ln::<FMA>(), y)
}

/// `e^x - 1`, accurate for small `x` (a Taylor series below 1/2).
#[inline(always)]
pub fn expm1<T: Float, const FMA: bool>(x: T) -> T {
    let terms = if T::NAME == "f64" { 16 } else { 9 };
    let mut p = T::ZERO;
    let mut k = terms;
    while k >= 1 {
        // p = x/k (1 + p): Horner on x(1 + x/2(1 + x/3(...)))
        p = T::madd::<FMA>(x * T::of(1.0 / k as f64), p, x * T::of(1.0 / k as f64));
        k -= 1;
    }
    sel(x.abs() < T::of(0.5), p, x.exp::<FMA>() - T::ONE)
}

/// `1 / (1 + e^-x)`
#[inline(always)]
pub fn sigmoid<T: Float, const FMA: bool>(x: T) -> T {
    // From `e^-|x|`, the exponential `softplus` takes: where both are
    // evaluated at the same `x` (a logistic loss and its gradient) the
    // compiler computes it once.
    let e = (-x.abs()).exp::<FMA>();
    let d = T::ONE / (T::ONE + e);
    sel(x >= T::ZERO, d, e * d)
}

/// `log(1 + e^x)` as `max(x, 0) + log1p(e^-|x|)`, finite for every finite x.
#[inline(always)]
pub fn softplus<T: Float, const FMA: bool>(x: T) -> T {
    x.max(T::ZERO) + log1p::<T, FMA>((-x.abs()).exp::<FMA>())
}

/// `tanh(x)` from `expm1(2|x|)`, so small arguments keep their digits.
#[inline(always)]
pub fn tanh<T: Float, const FMA: bool>(x: T) -> T {
    let a = x.abs();
    let t = expm1::<T, FMA>(a + a);
    let y = sel(a > T::of(40.0), T::ONE, t / (t + T::of(2.0)));
    sel(x.nan(), x, y.copysign(x))
}

/// `cosh(x)`
#[inline(always)]
pub fn cosh<T: Float, const FMA: bool>(x: T) -> T {
    let e = x.abs().exp::<FMA>();
    T::of(0.5) * (e + T::ONE / e)
}

/// `sinh(x)` from `expm1(|x|)`.
#[inline(always)]
pub fn sinh<T: Float, const FMA: bool>(x: T) -> T {
    let a = x.abs();
    let s = expm1::<T, FMA>(a);
    let y = T::of(0.5) * (s + s / (s + T::ONE));
    let y = sel(s == s + T::ONE, s, y);
    sel(x.nan(), x, y.copysign(x))
}

/// `b^e` for any exponent: `exp(e log|b|)` with the sign of an odd integer
/// power; a non-integer power of a negative number is NaN, `0^e` follows IEEE.
#[inline(always)]
pub fn pow<T: Float, const FMA: bool>(b: T, e: T) -> T {
    let a = b.abs();
    let y = (e * a.ln::<FMA>()).exp::<FMA>();
    let y = sel(e == T::ZERO, T::ONE, y);
    let int = e.is_integer();
    let y = sel(b < T::ZERO && int && e.is_odd(), -y, y);
    sel(b < T::ZERO && !int, T::of(f64::NAN), y)
}

/// `x^n` for a small integer `n`, by repeated squaring (as `powi`).
#[inline(always)]
pub fn powi<T: Float>(x: T, n: i32) -> T {
    let mut k = n.unsigned_abs();
    let mut base = x;
    let mut acc = T::ONE;
    while k > 0 {
        if k & 1 == 1 {
            acc = acc * base;
        }
        base = base * base;
        k >>= 1;
    }
    if n < 0 { T::ONE / acc } else { acc }
}

/// 1 for true, 0 for false: the value of a condition.
#[inline(always)]
pub fn truth<T: Float>(b: bool) -> T {
    sel(b, T::ONE, T::ZERO)
}

/// `sign(x)`, with `sign(±0) = 0` and `sign(NaN) = 0`: one compare, one
/// blend and the bitwise `copysign`, where testing both signs takes two
/// compares and two blends (about 2% of a Huber loop over 10^7 f64 rows).
#[inline(always)]
pub fn sign<T: Float>(x: T) -> T {
    sel(x.abs() > T::ZERO, T::ONE.copysign(x), T::ZERO)
}

/// The sum of a chunk's values: eight partial sums in `T` (so the loop
/// vectorises), then one in `f64`. The order is fixed, so the result is.
#[inline(always)]
pub fn sum_lanes<T: Float>(v: &[T]) -> f64 {
    let mut lanes = [T::ZERO; 8];
    let mut chunks = v.chunks_exact(8);
    for c in &mut chunks {
        for k in 0..8 {
            lanes[k] = lanes[k] + c[k];
        }
    }
    let mut t: f64 = lanes.iter().map(|x| x.f64()).sum();
    for x in chunks.remainder() {
        t += x.f64();
    }
    t
}

/// The largest of `init` and the values, ignoring NaNs (as `f64::max`):
/// eight running maxima (so the loop vectorises), then one.
#[inline(always)]
pub fn max_lanes<T: Float>(v: &[T], init: T) -> T {
    fold_lanes(v, init, T::max)
}

/// [`max_lanes`], and the OR of `test` over the values: a row that is
/// both checked and reduced is read once, sixteen lanes at a time.
///
/// `test` must flag NaN (every domain test does), and `init` must not be
/// NaN. The maximum is then the bare compare-and-select, one instruction
/// where NaN-ignoring `max` is three: with a NaN in the row it may be wrong,
/// but the row fails its test and the value is never used. (A NaN `init`
/// would never be replaced.)
#[inline(always)]
pub fn max_lanes_tested<T: Float>(v: &[T], init: T, test: impl Fn(T) -> T::Bits) -> (T, T::Bits) {
    let max = |a: T, b: T| sel(b > a, b, a);
    // Sixteen lanes: eight f64 are a single AVX-512 register, and one
    // running maximum waits on its compare and blend every step (16 lanes
    // measured 4-6% faster on `cce_logits` with C = 1000).
    let mut lanes = [init; 16];
    let mut bad = [T::Bits::default(); 16];
    let mut chunks = v.chunks_exact(16);
    for c in &mut chunks {
        for k in 0..16 {
            lanes[k] = max(lanes[k], c[k]);
            bad[k] |= test(c[k]);
        }
    }
    let mut m = lanes.iter().fold(init, |a, &b| max(a, b));
    let mut any = bad.iter().fold(T::Bits::default(), |a, &b| a | b);
    for &x in chunks.remainder() {
        m = max(m, x);
        any |= test(x);
    }
    (m, any)
}

/// The smallest of `init` and the values, ignoring NaNs (as `f64::min`).
#[inline(always)]
pub fn min_lanes<T: Float>(v: &[T], init: T) -> T {
    fold_lanes(v, init, T::min)
}

#[inline(always)]
fn fold_lanes<T: Float>(v: &[T], init: T, f: impl Fn(T, T) -> T) -> T {
    let mut lanes = [init; 8];
    let mut chunks = v.chunks_exact(8);
    for c in &mut chunks {
        for k in 0..8 {
            lanes[k] = f(lanes[k], c[k]);
        }
    }
    let m = lanes.iter().fold(init, |a, &b| f(a, b));
    chunks.remainder().iter().fold(m, |a, &b| f(a, b))
}

/// The components `c < e` whose number [`index`] equals `u`: the one
/// numbered `u` when `u` is an integer below `e` (else none), and its
/// neighbours where `T` rounds them to the same value (beyond 2^24 in f32,
/// where the last components may even round up to a `u` of `e` or more),
/// so the range holds exactly the components for which `index(c) == u`.
#[inline]
pub fn index_range<T: Float>(u: T, e: usize) -> std::ops::Range<usize> {
    let x = u.f64();
    // A component number is a whole number from 0 to e - 1, rounded to `T`
    // (which rounds up at most to the next representable value).
    if e == 0 || x.is_nan() || x < 0.0 {
        return 0..0;
    }
    let c = if x < e as f64 { x as usize } else { e - 1 };
    if index::<T>(c) != u {
        return 0..0;
    }
    let (mut lo, mut hi) = (c, c + 1);
    while lo > 0 && index::<T>(lo - 1) == u {
        lo -= 1;
    }
    while hi < e && index::<T>(hi) == u {
        hi += 1;
    }
    lo..hi
}

/// A component number as a value. Through `i32`, which converts to
/// floating point in one vector instruction (a 64-bit integer does not
/// before AVX-512, and would make a loop over components scalar); a row
/// of 2^31 components is beyond any input. Row numbers, which can exceed
/// it, convert through `f64`.
#[inline(always)]
pub fn index<T: Float>(i: usize) -> T {
    T::of(i as i32 as f64)
}

/// [`gather`] from row `lane` of a transposed block (component `c` of that
/// row at `c * stride + lane`, `width` components): generated code for
/// narrow vectors keeps a block of rows this way.
#[inline(always)]
pub fn gather_lane<T: Float>(block: &[T], width: usize, stride: usize, i: T, lane: usize) -> T {
    let f = i.f64();
    if f >= 0.0 && f.fract() == 0.0 && (f as usize) < width {
        block[f as usize * stride + lane]
    } else {
        T::of(f64::NAN)
    }
}

/// `row[i]` for an index-valued `i` (a class label), NaN when `i` is not a
/// component number of the row, as the interpreter reads it.
#[inline(always)]
pub fn gather<T: Float>(row: &[T], i: T) -> T {
    let f = i.f64();
    if f >= 0.0 && f.fract() == 0.0 && (f as usize) < row.len() {
        row[f as usize]
    } else {
        T::of(f64::NAN)
    }
}

/// NaN test without the inherent method (not in the trait's bounds).
trait IsNan {
    fn nan(self) -> bool;
}

impl<T: Float> IsNan for T {
    #[inline(always)]
    #[allow(clippy::eq_op)]
    fn nan(self) -> bool {
        self != self
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ir::Func;

    /// The `copysign` form of `sign` gives the reference's bits in both
    /// types, zeros (a +0 for -0) and NaN (0) included.
    #[test]
    fn sign_matches_the_reference_bit_for_bit() {
        let xs = [
            0.0,
            -0.0,
            f64::NAN,
            -f64::NAN,
            1e-310,
            -1e-310,
            1e-40,
            -1e-40,
            f64::MIN_POSITIVE,
            0.5,
            -3.0,
            f64::INFINITY,
            f64::NEG_INFINITY,
        ];
        for x in xs {
            let want = Func::Sign.eval(x);
            assert_eq!(sign(x).to_bits(), want.to_bits(), "sign({x})");
            // 1e-310 is 0 in f32, 1e-40 a subnormal.
            let y = x as f32;
            let want = Func::Sign.eval(y.into()) as f32;
            assert_eq!(sign(y).to_bits(), want.to_bits(), "sign({y}f32)");
        }
    }

    /// A gather from a transposed block reads what a gather from the row
    /// reads, NaN included, for every lane.
    #[test]
    fn gather_lane_is_gather_on_the_lane_s_row() {
        let (width, stride) = (3usize, 4usize);
        // Row `l` is [10 l, 10 l + 1, 10 l + 2], stored component-major.
        let block: Vec<f64> = (0..width * stride)
            .map(|i| (10 * (i % stride) + i / stride) as f64)
            .collect();
        for l in 0..stride {
            let row: Vec<f64> = (0..width).map(|c| (10 * l + c) as f64).collect();
            for i in [0.0, 1.0, 2.0, 3.0, -1.0, 0.5, -0.0, f64::NAN, f64::INFINITY] {
                let (a, b) = (gather_lane(&block, width, stride, i, l), gather(&row, i));
                assert!(
                    a == b || (a.is_nan() && b.is_nan()),
                    "lane {l}, index {i}: {a} vs {b}"
                );
            }
        }
    }

    /// The components a one-hot fix-up revisits are exactly those whose
    /// number equals the value, in both types (`index_range`).
    #[test]
    fn index_range_is_where_index_equals_the_value() {
        assert_eq!(index_range(3.0f64, 10), 3..4);
        assert_eq!(index_range(-0.0f64, 5), 0..1);
        assert_eq!(index_range(0.0f32, 1), 0..1);
        for u in [3.5f64, -1.0, 10.0, 11.0, f64::NAN, f64::INFINITY, 1e300] {
            assert_eq!(index_range(u, 10), 0..0, "{u}");
        }
        // In f32, 2^24 + 1 rounds to 2^24: two components compare equal,
        // and 2^24 + 3 rounds up to 2^24 + 4, a value past the last component.
        let big = 1usize << 24;
        assert_eq!(index_range(big as f32, big + 4), big..big + 2);
        assert_eq!(index_range(big as f32, big + 1), big..big + 1);
        assert_eq!(index_range((big + 2) as f32, big + 4), big + 2..big + 3);
        assert_eq!(index_range((big + 4) as f32, big + 4), big + 3..big + 4);
        for e in [big + 4, big + 5, big + 8] {
            for u in [big - 1, big, big + 2, big + 4, big + 6, big + 8, big + 12] {
                let u = u as f32;
                let brute: Vec<usize> = (big - 4..e).filter(|&c| index::<f32>(c) == u).collect();
                assert_eq!(index_range(u, e).collect::<Vec<_>>(), brute, "{u} {e}");
            }
        }
        assert_eq!(index_range(0.0f64, 0), 0..0);
    }

    /// Distance in ulps between two finite f64s of the same sign.
    fn ulps64(a: f64, b: f64) -> f64 {
        if a == b {
            return 0.0;
        }
        (a.to_bits() as i64 - b.to_bits() as i64).unsigned_abs() as f64
    }

    fn ulps32(a: f32, b: f32) -> f64 {
        if a == b {
            return 0.0;
        }
        (a.to_bits() as i64 - b.to_bits() as i64).unsigned_abs() as f64
    }

    fn samples(lo: f64, hi: f64, n: usize) -> impl Iterator<Item = f64> {
        let mut rng = crate::grad::Rng::new(7);
        (0..n).map(move |_| lo + (hi - lo) * rng.uniform())
    }

    #[test]
    fn exp_and_ln_f64_within_two_ulp() {
        for fma in [false, true] {
            let (mut we, mut wl) = (0.0f64, 0.0f64);
            for x in samples(-700.0, 700.0, 200_000).chain(samples(-1.0, 1.0, 100_000)) {
                let e = if fma {
                    Float::exp::<true>(x)
                } else {
                    Float::exp::<false>(x)
                };
                we = we.max(ulps64(e, x.exp()));
            }
            for x in samples(0.0, 1.0, 100_000)
                .map(|u| (u * 1400.0 - 700.0).exp())
                .chain(samples(0.5, 2.0, 100_000))
            {
                let l = if fma {
                    Float::ln::<true>(x)
                } else {
                    Float::ln::<false>(x)
                };
                wl = wl.max(ulps64(l, x.ln()));
            }
            assert!(we <= 2.0, "exp f64 off by {we} ulp (fma {fma})");
            assert!(wl <= 2.0, "ln f64 off by {wl} ulp (fma {fma})");
        }
    }

    #[test]
    fn exp_and_ln_f32_within_two_ulp() {
        let (mut we, mut wl) = (0.0f64, 0.0f64);
        for x in samples(-87.0, 88.0, 200_000).chain(samples(-1.0, 1.0, 100_000)) {
            let x = x as f32;
            we = we.max(ulps32(Float::exp::<false>(x), x.exp()));
        }
        for x in samples(0.0, 1.0, 100_000)
            .map(|u| (u * 170.0 - 85.0).exp())
            .chain(samples(0.5, 2.0, 100_000))
        {
            let x = x as f32;
            wl = wl.max(ulps32(Float::ln::<false>(x), x.ln()));
        }
        assert!(we <= 2.0, "exp f32 off by {we} ulp");
        assert!(wl <= 2.0, "ln f32 off by {wl} ulp");
    }

    #[test]
    fn special_values_follow_ieee() {
        type F = f64;
        assert_eq!(Float::exp::<false>(F::INFINITY), F::INFINITY);
        assert_eq!(Float::exp::<false>(F::NEG_INFINITY), 0.0);
        assert_eq!(Float::exp::<false>(800.0), F::INFINITY);
        assert!(Float::exp::<false>(F::NAN).is_nan());
        assert_eq!(Float::ln::<false>(0.0f64), F::NEG_INFINITY);
        assert_eq!(Float::ln::<false>(F::INFINITY), F::INFINITY);
        assert!(Float::ln::<false>(-1.0f64).is_nan());
        assert!(Float::ln::<false>(F::NAN).is_nan());
        assert_eq!(Float::ln::<false>(1.0f64), 0.0);
        // Subnormal input is scaled, not flushed.
        let tiny = 1e-310f64;
        assert!(ulps64(Float::ln::<false>(tiny), tiny.ln()) <= 2.0);
        assert_eq!(Float::ln::<false>(0.0f32), f32::NEG_INFINITY);
        assert_eq!(Float::exp::<false>(100.0f32), f32::INFINITY);
    }

    #[test]
    fn derived_functions_match_std() {
        let close = |a: f64, b: f64, what: &str, x: f64| {
            let tol = 1e-14 * b.abs().max(1e-300);
            assert!(
                (a - b).abs() <= tol.max(4.0 * f64::EPSILON * b.abs()),
                "{what}({x}) = {a}, std says {b}"
            );
        };
        for x in samples(-30.0, 30.0, 20_000).chain(samples(-1e-3, 1e-3, 2000)) {
            close(log1p::<f64, false>(x.abs()), x.abs().ln_1p(), "log1p", x);
            close(expm1::<f64, false>(x), x.exp_m1(), "expm1", x);
            close(tanh::<f64, false>(x), x.tanh(), "tanh", x);
            close(sinh::<f64, false>(x), x.sinh(), "sinh", x);
            close(cosh::<f64, false>(x), x.cosh(), "cosh", x);
            close(
                softplus::<f64, false>(x),
                crate::ir::Func::Softplus.eval(x),
                "softplus",
                x,
            );
            close(
                sigmoid::<f64, false>(x),
                crate::ir::Func::Sigmoid.eval(x),
                "sigmoid",
                x,
            );
            close(pow::<f64, false>(x.abs(), 2.5), x.abs().powf(2.5), "pow", x);
            close(powi::<f64>(x, -3), x.powi(-3), "powi", x);
        }
        assert!((pow::<f64, false>(-2.0, 3.0) + 8.0).abs() < 1e-14);
        assert!(pow::<f64, false>(-2.0, 0.5).is_nan());
        assert_eq!(pow::<f64, false>(0.0, -1.0), f64::INFINITY);
        assert_eq!(pow::<f64, false>(0.0, 0.0), 1.0);
        assert_eq!(log1p::<f64, false>(-1.0), f64::NEG_INFINITY);
        assert_eq!(tanh::<f64, false>(1000.0), 1.0);
        assert_eq!(softplus::<f64, false>(-800.0), 0.0);
    }
}
