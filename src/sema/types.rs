//! The checker's view of values: shape (scalar or vector of a size), domain
//! (the set a value lives in) and level (constant, per sample, or reduced
//! over samples).
//!
//! Domains are deliberately coarse: enough to prove that a logit is not a
//! probability or that `{0, 1}` labels are not `{-1, 1}`, and `Unknown`
//! wherever a bound would need real analysis. Unknown never causes an error.

use crate::ast::fmt_num;
use std::fmt;

/// The length of a vector: a literal or a size name.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Size {
    /// A number written in the spec.
    Lit(u64),
    /// A size name, bound from array shapes at evaluation.
    Name(String),
}

impl fmt::Display for Size {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Size::Lit(n) => write!(f, "{n}"),
            Size::Name(n) => f.write_str(n),
        }
    }
}

/// One number per sample, or one row of `Size` numbers per sample.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Shape {
    /// `(n,)`
    Scalar,
    /// `(n, C)`
    Vector(Size),
}

impl fmt::Display for Shape {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Shape::Scalar => f.write_str("a scalar"),
            Shape::Vector(s) => write!(f, "a vector of size {s}"),
        }
    }
}

/// An interval of the real line.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Range {
    /// Lower bound (may be `-inf`).
    pub lo: f64,
    /// Upper bound (may be `inf`).
    pub hi: f64,
    /// Whether `lo` itself belongs.
    pub lo_closed: bool,
    /// Whether `hi` itself belongs.
    pub hi_closed: bool,
}

impl Range {
    /// All reals.
    pub const REAL: Range = Range {
        lo: f64::NEG_INFINITY,
        hi: f64::INFINITY,
        lo_closed: false,
        hi_closed: false,
    };
    /// `(0, 1)`, the domain of `prob`.
    pub const PROB: Range = Range {
        lo: 0.0,
        hi: 1.0,
        lo_closed: false,
        hi_closed: false,
    };
    /// `[0, 1]`.
    pub const UNIT: Range = Range {
        lo: 0.0,
        hi: 1.0,
        lo_closed: true,
        hi_closed: true,
    };

    /// A range from its bounds.
    pub fn new(lo: f64, hi: f64, lo_closed: bool, hi_closed: bool) -> Range {
        Range {
            lo,
            hi,
            lo_closed,
            hi_closed,
        }
    }

    /// Whether `v` lies inside.
    pub fn contains(&self, v: f64) -> bool {
        (v > self.lo || (self.lo_closed && v == self.lo))
            && (v < self.hi || (self.hi_closed && v == self.hi))
    }

    /// Whether every point of `self` lies in `other`.
    pub fn within(&self, other: &Range) -> bool {
        let lo_ok =
            self.lo > other.lo || (self.lo == other.lo && (other.lo_closed || !self.lo_closed));
        let hi_ok =
            self.hi < other.hi || (self.hi == other.hi && (other.hi_closed || !self.hi_closed));
        lo_ok && hi_ok
    }
}

impl fmt::Display for Range {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}{}, {}{}",
            if self.lo_closed { '[' } else { '(' },
            fmt_num(self.lo),
            fmt_num(self.hi),
            if self.hi_closed { ']' } else { ')' }
        )
    }
}

/// The set a value (or each component of a vector) lives in.
#[derive(Clone, Debug, PartialEq)]
pub enum Dom {
    /// Nothing is known: never a reason for an error.
    Unknown,
    /// Any value of an interval.
    Range(Range),
    /// One of finitely many values, sorted and distinct.
    Labels(Vec<f64>),
    /// An integer class index in `0..C`.
    Class(Size),
    /// A row with one 1 and zeros elsewhere.
    Onehot,
    /// A row of zeros and ones.
    Multihot,
    /// A row of the probability simplex.
    Probs,
}

impl Dom {
    /// A finite label set, normalised.
    pub fn labels(mut vs: Vec<f64>) -> Dom {
        vs.sort_by(f64::total_cmp);
        vs.dedup();
        Dom::Labels(vs)
    }

    /// The range each component lies in, when one is known.
    pub fn component_range(&self) -> Option<Range> {
        match self {
            Dom::Range(r) => Some(*r),
            Dom::Onehot | Dom::Multihot | Dom::Probs => Some(Range::UNIT),
            Dom::Labels(vs) => Some(Range::new(vs[0], vs[vs.len() - 1], true, true)),
            _ => None,
        }
    }

    /// The domain of one component of a vector with this domain.
    pub fn component(&self) -> Dom {
        match self {
            Dom::Onehot | Dom::Multihot => Dom::labels(vec![0.0, 1.0]),
            // A component of a probability vector may be exactly 0 or 1 in
            // data but is strictly inside for a softmax: undecided, so no
            // argument check rejects it.
            Dom::Probs => Dom::Unknown,
            other => other.clone(),
        }
    }

    /// A phrase for messages: "a probability in (0, 1)".
    pub fn describe(&self) -> String {
        match self {
            Dom::Unknown => "a value".into(),
            Dom::Range(r) if *r == Range::REAL => "any real number".into(),
            Dom::Range(r) if *r == Range::PROB => "a probability in (0, 1)".into(),
            Dom::Range(r) => format!("a value in {r}"),
            Dom::Labels(vs) if vs.len() == 1 => format!("the constant {}", fmt_num(vs[0])),
            Dom::Labels(vs) => format!("a label in {}", fmt_labels(vs)),
            Dom::Class(c) => format!("a class index in 0..{c}"),
            Dom::Onehot => "a one-hot vector".into(),
            Dom::Multihot => "a multi-hot vector (several 1s per row)".into(),
            Dom::Probs => "a probability vector (a row summing to 1)".into(),
        }
    }
}

/// `{0, 1}` as written in the language.
pub fn fmt_labels(vs: &[f64]) -> String {
    let parts: Vec<String> = vs.iter().map(|v| fmt_num(*v)).collect();
    format!("{{{}}}", parts.join(", "))
}

/// Whether a value is a constant, varies per sample, or is already reduced
/// over the samples (a `mean(...)` or `sum(...)`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Level {
    /// Numbers, params, sizes.
    Const,
    /// Depends on the row.
    Sample,
    /// A sample reduction: one number for the whole batch.
    Reduced,
}

/// The type of a checked expression.
#[derive(Clone, Debug, PartialEq)]
pub enum Ty {
    /// A number or vector of numbers.
    Val {
        /// Scalar or vector.
        shape: Shape,
        /// Where its values lie.
        dom: Dom,
        /// Constant, per sample or reduced.
        level: Level,
    },
    /// A condition (comparison, `and`, `or`, `not`).
    Cond,
    /// The type could not be determined because of an error already reported.
    Error,
}

impl Ty {
    /// A scalar value.
    pub fn scalar(dom: Dom, level: Level) -> Ty {
        Ty::Val {
            shape: Shape::Scalar,
            dom,
            level,
        }
    }

    /// Shape, domain and level of a value; `None` for conditions and errors.
    pub fn parts(self) -> Option<(Shape, Dom, Level)> {
        match self {
            Ty::Val { shape, dom, level } => Some((shape, dom, level)),
            _ => None,
        }
    }

    /// The level of a value (`Const` for conditions and errors).
    pub fn level(&self) -> Level {
        match self {
            Ty::Val { level, .. } => *level,
            _ => Level::Const,
        }
    }

    /// The domain of a value (`Unknown` otherwise).
    pub fn dom(&self) -> Dom {
        match self {
            Ty::Val { dom, .. } => dom.clone(),
            _ => Dom::Unknown,
        }
    }
}

/// Interval arithmetic where it is cheap and exact; `Unknown` elsewhere.
pub mod arith {
    use super::*;

    fn map_labels(vs: &[f64], f: impl Fn(f64) -> f64) -> Dom {
        let out: Vec<f64> = vs.iter().map(|v| f(*v)).collect();
        if out.iter().all(|v| v.is_finite()) {
            Dom::labels(out)
        } else {
            Dom::Unknown
        }
    }

    fn as_range(d: &Dom) -> Option<Range> {
        match d {
            Dom::Range(r) => Some(*r),
            Dom::Labels(vs) if vs.len() == 1 => Some(Range::new(vs[0], vs[0], true, true)),
            _ => None,
        }
    }

    /// The domain of `-a`.
    pub fn neg(a: &Dom) -> Dom {
        match a {
            Dom::Range(r) => Dom::Range(Range::new(-r.hi, -r.lo, r.hi_closed, r.lo_closed)),
            Dom::Labels(vs) => map_labels(vs, |v| -v),
            _ => Dom::Unknown,
        }
    }

    /// The domain of `a + b`.
    pub fn add(a: &Dom, b: &Dom) -> Dom {
        match (a, b) {
            (Dom::Labels(x), Dom::Labels(y)) if x.len() == 1 => map_labels(y, |v| v + x[0]),
            (Dom::Labels(x), Dom::Labels(y)) if y.len() == 1 => map_labels(x, |v| v + y[0]),
            _ => match (as_range(a), as_range(b)) {
                (Some(x), Some(y)) => Dom::Range(Range::new(
                    x.lo + y.lo,
                    x.hi + y.hi,
                    x.lo_closed && y.lo_closed,
                    x.hi_closed && y.hi_closed,
                )),
                _ => Dom::Unknown,
            },
        }
    }

    /// The domain of `a * b`, known when one side is a constant.
    pub fn mul(a: &Dom, b: &Dom) -> Dom {
        let (k, other) = match (a, b) {
            (Dom::Labels(x), o) if x.len() == 1 => (x[0], o),
            (o, Dom::Labels(y)) if y.len() == 1 => (y[0], o),
            _ => return Dom::Unknown,
        };
        match other {
            Dom::Labels(vs) => map_labels(vs, |v| v * k),
            Dom::Range(r) if k > 0.0 => {
                Dom::Range(Range::new(r.lo * k, r.hi * k, r.lo_closed, r.hi_closed))
            }
            Dom::Range(r) if k < 0.0 => {
                Dom::Range(Range::new(r.hi * k, r.lo * k, r.hi_closed, r.lo_closed))
            }
            Dom::Range(_) => Dom::labels(vec![0.0]),
            _ => Dom::Unknown,
        }
    }

    /// The domain of `a / b`, known when `b` is a non-zero constant.
    pub fn div(a: &Dom, b: &Dom) -> Dom {
        match b {
            Dom::Labels(y) if y.len() == 1 && y[0] != 0.0 => mul(a, &Dom::labels(vec![1.0 / y[0]])),
            _ => Dom::Unknown,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_compare_with_open_and_closed_ends() {
        assert!(Range::PROB.within(&Range::UNIT));
        assert!(!Range::UNIT.within(&Range::PROB));
        assert!(!Range::REAL.within(&Range::PROB));
        assert!(Range::PROB.contains(0.5) && !Range::PROB.contains(0.0));
    }

    #[test]
    fn label_arithmetic_maps_zero_one_to_minus_one_one() {
        let y = Dom::labels(vec![0.0, 1.0]);
        let two_y = arith::mul(&Dom::labels(vec![2.0]), &y);
        let shifted = arith::add(&two_y, &Dom::labels(vec![-1.0]));
        assert_eq!(shifted, Dom::labels(vec![-1.0, 1.0]));
    }

    #[test]
    fn one_minus_a_probability_is_a_probability() {
        let p = Dom::Range(Range::PROB);
        let d = arith::add(&Dom::labels(vec![1.0]), &arith::neg(&p));
        assert_eq!(d, Dom::Range(Range::PROB));
    }
}
