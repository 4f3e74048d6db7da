//! The builtin functions: their parameter names and how each maps argument
//! types to a result type. Standard losses are not here: they live in the
//! prelude, written in the language.

use super::types::{Dom, Range};

/// How a builtin computes its result's shape.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// Applies to each component; vectors of one size and scalars broadcast.
    Componentwise,
    /// Takes vectors, returns a vector of the same size (`softmax`).
    VectorToVector,
    /// Takes vectors of one size, returns a scalar (`dot`, `logsumexp`).
    VectorToScalar,
    /// `onehot(k, C)`: a class index and a size.
    Onehot,
    /// `const(E)`: the argument's own type.
    Identity,
    /// `mean(E)`, `sum(E)` over the samples.
    SampleReduction,
}

/// One builtin function.
#[derive(Clone, Copy, Debug)]
pub struct Builtin {
    /// Its name.
    pub name: &'static str,
    /// Parameter names (for named arguments and messages).
    pub params: &'static [&'static str],
    /// How the result is typed.
    pub kind: Kind,
    /// One line for `docs/` and hints.
    pub doc: &'static str,
}

const X: &[&str] = &["x"];

macro_rules! builtins {
    ($($name:literal $params:expr, $kind:ident, $doc:literal;)*) => {
        /// Every builtin, in alphabetical order within each group.
        pub const BUILTINS: &[Builtin] = &[$(Builtin { name: $name, params: $params, kind: Kind::$kind, doc: $doc }),*];
    };
}

builtins! {
    "abs" X, Componentwise, "absolute value; subgradient sign(x), 0 at 0";
    "cosh" X, Componentwise, "hyperbolic cosine";
    "exp" X, Componentwise, "e^x";
    "expm1" X, Componentwise, "e^x - 1, accurate near 0";
    "log" X, Componentwise, "natural logarithm";
    "log1p" X, Componentwise, "log(1 + x), accurate near 0";
    "relu" X, Componentwise, "max(0, x)";
    "sigmoid" X, Componentwise, "1 / (1 + e^-x)";
    "sign" X, Componentwise, "-1, 0 or 1";
    "softplus" X, Componentwise, "log(1 + e^x), computed stably";
    "sqrt" X, Componentwise, "square root";
    "tanh" X, Componentwise, "hyperbolic tangent";
    "max" &["a", "b"], Componentwise, "the larger of a and b";
    "min" &["a", "b"], Componentwise, "the smaller of a and b";
    "clip" &["x", "lo", "hi"], Componentwise, "x limited to [lo, hi]";
    "softmax" &["z"], VectorToVector, "exp(z[c]) / sum[k](exp(z[k]))";
    "logsumexp" &["z"], VectorToScalar, "log(sum[c](exp(z[c]))), computed stably";
    "dot" &["a", "b"], VectorToScalar, "sum[c](a[c] * b[c])";
    "norm" &["a"], VectorToScalar, "Euclidean length of a";
    "dist" &["a", "b"], VectorToScalar, "Euclidean distance between a and b";
    "cosine" &["a", "b"], VectorToScalar, "cosine similarity of a and b";
    "onehot" &["k", "C"], Onehot, "the one-hot row of class k among C";
    "const" X, Identity, "x, held constant when differentiating (stop-gradient)";
    "mean" X, SampleReduction, "mean over the samples (only in minimize)";
    "sum" X, SampleReduction, "sum over the samples (only in minimize)";
}

/// Looks a builtin up by name.
pub fn lookup(name: &str) -> Option<&'static Builtin> {
    BUILTINS.iter().find(|b| b.name == name)
}

/// The domain of a componentwise builtin's result, from its argument's.
pub fn result_dom(name: &str, arg: &Dom) -> Dom {
    let r = |lo, hi, lc, hc| Dom::Range(Range::new(lo, hi, lc, hc));
    let inf = f64::INFINITY;
    match name {
        "abs" | "relu" | "sqrt" => r(0.0, inf, true, false),
        "exp" | "softplus" => r(0.0, inf, false, false),
        "expm1" => r(-1.0, inf, false, false),
        "sigmoid" => Dom::Range(Range::PROB),
        "tanh" => r(-1.0, 1.0, false, false),
        "cosh" => r(1.0, inf, true, false),
        "sign" => Dom::labels(vec![-1.0, 0.0, 1.0]),
        "norm" | "dist" => r(0.0, inf, true, false),
        "cosine" => r(-1.0, 1.0, true, true),
        "const" => arg.clone(),
        _ => Dom::Unknown,
    }
}
