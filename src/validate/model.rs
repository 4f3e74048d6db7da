//! The models `lossc validate` trains: a linear map or a one-hidden-layer
//! MLP from the features to each pred, followed by a link that keeps the
//! pred inside its declared domain (a `prob` through a sigmoid, `probs`
//! through a softmax). Gradients flow back by hand-written chain rule from
//! the compiled evaluator's gradient with respect to the pred.

use crate::grad::Rng;
use ndarray::{Array2, ArrayView2, Axis, s};

/// Which model maps the features to a pred.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ModelKind {
    /// `u = x W + b`: linear / logistic regression, linear-softmax, or a
    /// linear map into an embedding, depending on the pred and its link.
    Linear,
    /// `u = tanh(x W1 + b1) W2 + b2`, with `hidden` units.
    Mlp {
        /// Hidden units.
        hidden: usize,
    },
}

impl ModelKind {
    /// Parses `linear` or `mlp:H`.
    pub fn parse(s: &str) -> Result<ModelKind, String> {
        if s == "linear" {
            return Ok(ModelKind::Linear);
        }
        if let Some(h) = s.strip_prefix("mlp:") {
            return match h.parse::<usize>() {
                Ok(h) if (1..=4096).contains(&h) => Ok(ModelKind::Mlp { hidden: h }),
                _ => Err(format!("`{h}` is not a hidden-layer width from 1 to 4096")),
            };
        }
        if s == "mlp" {
            return Ok(ModelKind::Mlp { hidden: 32 });
        }
        Err(format!(
            "unknown model `{s}`; expected `linear` or `mlp:H` (e.g. mlp:32)"
        ))
    }

    /// The name as the command line writes it.
    pub fn name(self) -> String {
        match self {
            ModelKind::Linear => "linear".into(),
            ModelKind::Mlp { hidden } => format!("mlp:{hidden}"),
        }
    }
}

/// How a model's raw output becomes a pred inside its declared domain.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Link {
    /// Unbounded preds: logits, reals, embeddings.
    Identity,
    /// `lo + (hi - lo) sigmoid(u)` for a bounded interval such as `prob`.
    Interval {
        /// The lower end.
        lo: f64,
        /// The upper end.
        hi: f64,
    },
    /// `lo + softplus(u)` for an interval open above.
    Above(f64),
    /// `hi - softplus(-u)` for an interval open below.
    Below(f64),
    /// A row of the simplex, for `probs`.
    Softmax,
}

impl Link {
    /// Applies the link row-wise.
    pub fn apply(self, u: &Array2<f64>) -> Array2<f64> {
        match self {
            Link::Identity => u.clone(),
            Link::Interval { lo, hi } => u.mapv(|u| lo + (hi - lo) * sigmoid(u)),
            Link::Above(lo) => u.mapv(|u| lo + softplus(u)),
            Link::Below(hi) => u.mapv(|u| hi - softplus(-u)),
            Link::Softmax => {
                let mut p = u.clone();
                for mut row in p.rows_mut() {
                    softmax_in_place(row.as_slice_mut().expect("rows of a standard array"));
                }
                p
            }
        }
    }

    /// The gradient with respect to `u` given the gradient with respect to
    /// the pred `p = link(u)`.
    pub fn back(self, u: &Array2<f64>, p: &Array2<f64>, dp: ArrayView2<f64>) -> Array2<f64> {
        match self {
            Link::Identity => dp.to_owned(),
            Link::Interval { lo, hi } => {
                let mut du = dp.to_owned();
                du.zip_mut_with(p, |d, &p| {
                    let s = (p - lo) / (hi - lo);
                    *d *= (hi - lo) * s * (1.0 - s);
                });
                du
            }
            Link::Above(_) => {
                let mut du = dp.to_owned();
                du.zip_mut_with(u, |d, &u| *d *= sigmoid(u));
                du
            }
            Link::Below(_) => {
                let mut du = dp.to_owned();
                du.zip_mut_with(u, |d, &u| *d *= sigmoid(-u));
                du
            }
            Link::Softmax => {
                // du_k = p_k (dp_k - sum_j p_j dp_j)
                let mut du = dp.to_owned();
                for (mut d, p) in du.rows_mut().into_iter().zip(p.rows()) {
                    let dot: f64 = d.iter().zip(p).map(|(a, b)| a * b).sum();
                    d.zip_mut_with(&p, |d, &p| *d = p * (*d - dot));
                }
                du
            }
        }
    }
}

/// The logistic function, computed without overflow.
pub fn sigmoid(u: f64) -> f64 {
    if u >= 0.0 {
        1.0 / (1.0 + (-u).exp())
    } else {
        let e = u.exp();
        e / (1.0 + e)
    }
}

fn softplus(u: f64) -> f64 {
    u.max(0.0) + (-u.abs()).exp().ln_1p()
}

/// Replaces a row of logits by its softmax.
pub fn softmax_in_place(row: &mut [f64]) {
    let m = row.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    let mut sum = 0.0;
    for v in row.iter_mut() {
        *v = (*v - m).exp();
        sum += *v;
    }
    for v in row.iter_mut() {
        *v /= sum;
    }
}

/// One pred's model: its shape, where its parameters sit in the flat
/// parameter vector, and the output normalisation (`u = scale * net + offset`)
/// that lets every model start at the best constant with unit-scale weights,
/// whatever the units of the target.
#[derive(Clone, Debug)]
pub struct Net {
    /// The model.
    pub kind: ModelKind,
    /// Input features.
    pub inputs: usize,
    /// Output width (1 for a scalar pred).
    pub outputs: usize,
    /// Added to each raw output.
    pub offset: Vec<f64>,
    /// Multiplies the network's output.
    pub scale: f64,
    /// First parameter's index in the flat vector.
    pub start: usize,
    /// Start a linear model from small random weights instead of zero.
    pub random: bool,
}

/// Intermediate values the backward pass needs.
pub struct Cache {
    hidden: Option<Array2<f64>>,
}

impl Net {
    /// A net whose parameters start at `start`.
    pub fn new(kind: ModelKind, inputs: usize, outputs: usize, start: usize) -> Net {
        Net {
            kind,
            inputs,
            outputs,
            offset: vec![0.0; outputs],
            scale: 1.0,
            start,
            random: false,
        }
    }

    /// The number of parameters.
    pub fn len(&self) -> usize {
        match self.kind {
            ModelKind::Linear => (self.inputs + 1) * self.outputs,
            ModelKind::Mlp { hidden } => (self.inputs + 1) * hidden + (hidden + 1) * self.outputs,
        }
    }

    /// Whether the net has no parameters (never: every net has a bias).
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Starting values: zero for a linear model (its loss is usually convex,
    /// and zero starts at the best constant thanks to the offset) unless
    /// `random`; small random first-layer weights for an MLP, so hidden
    /// units differ.
    pub fn init(&self, theta: &mut [f64], rng: &mut Rng) {
        let t = &mut theta[self.start..self.start + self.len()];
        t.fill(0.0);
        if self.random && self.kind == ModelKind::Linear {
            // Small: large random embeddings saturate a softmax over the
            // batch and start training where its gradient vanishes.
            let s = 0.1 * (1.0 / self.inputs.max(1) as f64).sqrt();
            for v in &mut t[..self.inputs * self.outputs] {
                *v = s * rng.normal();
            }
        }
        if let ModelKind::Mlp { hidden } = self.kind {
            let s1 = (1.0 / self.inputs.max(1) as f64).sqrt();
            for v in &mut t[..self.inputs * hidden] {
                *v = s1 * rng.normal();
            }
            let w2 = (self.inputs + 1) * hidden;
            let s2 = 0.1 * (1.0 / hidden as f64).sqrt();
            for v in &mut t[w2..w2 + hidden * self.outputs] {
                *v = s2 * rng.normal();
            }
        }
    }

    fn params<'t>(&self, theta: &'t [f64]) -> &'t [f64] {
        &theta[self.start..self.start + self.len()]
    }

    /// Which parameters are weights (penalised by L2) rather than biases.
    pub fn is_weight(&self, k: usize) -> bool {
        match self.kind {
            ModelKind::Linear => k < self.inputs * self.outputs,
            ModelKind::Mlp { hidden } => {
                let w2 = (self.inputs + 1) * hidden;
                k < self.inputs * hidden || (w2..w2 + hidden * self.outputs).contains(&k)
            }
        }
    }

    /// The raw outputs `u` (n x outputs) for features `x`.
    pub fn forward(&self, theta: &[f64], x: ArrayView2<f64>) -> (Array2<f64>, Cache) {
        let t = self.params(theta);
        let (f, k) = (self.inputs, self.outputs);
        let (mut u, hidden) = match self.kind {
            ModelKind::Linear => {
                let w = ArrayView2::from_shape((f, k), &t[..f * k]).expect("sized by len()");
                let mut u = x.dot(&w);
                u += &ndarray::ArrayView1::from(&t[f * k..]);
                (u, None)
            }
            ModelKind::Mlp { hidden: h } => {
                let w1 = ArrayView2::from_shape((f, h), &t[..f * h]).expect("sized by len()");
                let mut a = x.dot(&w1);
                a += &ndarray::ArrayView1::from(&t[f * h..(f + 1) * h]);
                a.mapv_inplace(f64::tanh);
                let o = (f + 1) * h;
                let w2 = ArrayView2::from_shape((h, k), &t[o..o + h * k]).expect("sized by len()");
                let mut u = a.dot(&w2);
                u += &ndarray::ArrayView1::from(&t[o + h * k..]);
                (u, Some(a))
            }
        };
        let off = ndarray::ArrayView1::from(&self.offset[..]);
        u.mapv_inplace(|v| v * self.scale);
        u += &off;
        (u, Cache { hidden })
    }

    /// Adds the gradient of the objective with respect to this net's
    /// parameters, given its gradient `du` with respect to the raw outputs.
    pub fn backward(
        &self,
        theta: &[f64],
        x: ArrayView2<f64>,
        cache: &Cache,
        du: ArrayView2<f64>,
        g: &mut [f64],
    ) {
        let t = self.params(theta);
        let g = &mut g[self.start..self.start + self.len()];
        let (f, k) = (self.inputs, self.outputs);
        let du = du.mapv(|v| v * self.scale);
        let accumulate = |g: &mut [f64], m: Array2<f64>| {
            for (g, v) in g.iter_mut().zip(m.iter()) {
                *g += v;
            }
        };
        match self.kind {
            ModelKind::Linear => {
                accumulate(&mut g[..f * k], x.t().dot(&du));
                accumulate(&mut g[f * k..], du.sum_axis(Axis(0)).insert_axis(Axis(0)));
            }
            ModelKind::Mlp { hidden: h } => {
                let a = cache
                    .hidden
                    .as_ref()
                    .expect("an MLP's forward pass keeps its hidden layer");
                let o = (f + 1) * h;
                accumulate(&mut g[o..o + h * k], a.t().dot(&du));
                accumulate(
                    &mut g[o + h * k..],
                    du.sum_axis(Axis(0)).insert_axis(Axis(0)),
                );
                let w2 = ArrayView2::from_shape((h, k), &t[o..o + h * k]).expect("sized by len()");
                let mut da = du.dot(&w2.t());
                da.zip_mut_with(a, |d, &a| *d *= 1.0 - a * a);
                accumulate(&mut g[..f * h], x.t().dot(&da));
                accumulate(&mut g[f * h..o], da.sum_axis(Axis(0)).insert_axis(Axis(0)));
            }
        }
    }
}

/// Standardises columns with the training rows' mean and standard
/// deviation (a constant column is only centred), so one learning rate and
/// one L2 weight suit every feature whatever its units.
pub fn standardize(train: &mut Array2<f64>, others: &mut [&mut Array2<f64>]) {
    let n = train.nrows().max(1) as f64;
    for c in 0..train.ncols() {
        let col = train.slice(s![.., c]);
        let mean = col.sum() / n;
        let var = col.iter().map(|v| (v - mean) * (v - mean)).sum::<f64>() / n;
        let sd = if var > 1e-24 { var.sqrt() } else { 1.0 };
        train.column_mut(c).mapv_inplace(|v| (v - mean) / sd);
        for o in others.iter_mut() {
            o.column_mut(c).mapv_inplace(|v| (v - mean) / sd);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::array;

    /// The hand-written backward pass agrees with finite differences of the
    /// forward pass, for both models and a non-trivial scale and offset.
    #[test]
    fn backward_matches_finite_differences() {
        let x = array![[0.5, -1.0, 2.0], [1.5, 0.25, -0.5], [-1.0, 0.0, 1.0]];
        let dout = array![[1.0, -2.0], [0.5, 0.25], [-1.0, 3.0]];
        for kind in [ModelKind::Linear, ModelKind::Mlp { hidden: 4 }] {
            let mut net = Net::new(kind, 3, 2, 1);
            net.scale = 1.7;
            net.offset = vec![0.3, -0.2];
            let mut rng = Rng::new(7);
            let mut theta: Vec<f64> = (0..net.len() + 1).map(|_| 0.5 * rng.normal()).collect();
            let objective = |theta: &[f64]| -> f64 {
                let (u, _) = net.forward(theta, x.view());
                (&u * &dout).sum()
            };
            let (_, cache) = net.forward(&theta, x.view());
            let mut g = vec![0.0; theta.len()];
            net.backward(&theta, x.view(), &cache, dout.view(), &mut g);
            assert_eq!(g[0], 0.0, "parameters before `start` are not touched");
            for k in 1..theta.len() {
                let h = 1e-6;
                let t0 = theta[k];
                theta[k] = t0 + h;
                let up = objective(&theta);
                theta[k] = t0 - h;
                let down = objective(&theta);
                theta[k] = t0;
                let fd = (up - down) / (2.0 * h);
                assert!(
                    (fd - g[k]).abs() < 1e-6 * (1.0 + fd.abs()),
                    "{kind:?} param {k}: {fd} vs {}",
                    g[k]
                );
            }
        }
    }

    /// Each link's backward pass is the derivative of its forward pass.
    #[test]
    fn links_differentiate_correctly() {
        let u = array![[0.3, -1.2, 2.0]];
        let dp = array![[1.0, 0.5, -2.0]];
        for link in [
            Link::Identity,
            Link::Interval { lo: 0.0, hi: 1.0 },
            Link::Interval { lo: 1.0, hi: 10.0 },
            Link::Above(0.0),
            Link::Below(2.0),
            Link::Softmax,
        ] {
            let p = link.apply(&u);
            let du = link.back(&u, &p, dp.view());
            for k in 0..3 {
                let h = 1e-6;
                let mut up = u.clone();
                up[[0, k]] += h;
                let mut down = u.clone();
                down[[0, k]] -= h;
                let fd = ((&link.apply(&up) - &link.apply(&down)) * &dp).sum() / (2.0 * h);
                assert!(
                    (fd - du[[0, k]]).abs() < 1e-7,
                    "{link:?} component {k}: {fd} vs {}",
                    du[[0, k]]
                );
            }
        }
    }

    #[test]
    fn model_names_parse() {
        assert_eq!(ModelKind::parse("linear"), Ok(ModelKind::Linear));
        assert_eq!(
            ModelKind::parse("mlp:32"),
            Ok(ModelKind::Mlp { hidden: 32 })
        );
        assert!(ModelKind::parse("mlp:0").unwrap_err().contains("`0`"));
        assert!(
            ModelKind::parse("forest")
                .unwrap_err()
                .contains("unknown model `forest`")
        );
    }
}
