//! Training speed: logistic regression with the compiled focal loss, the
//! objective `lossc validate` minimises, against the same training loop
//! with a hand-written focal gradient, in the same run.
//!
//! Both sides share the model code (`X w + b` forward, `Xᵀ du` backward,
//! ndarray's matrix products) and the optimiser (L-BFGS, a fixed number of
//! epochs, no convergence stop); they differ only in how the loss and its
//! derivative with respect to the logit are computed: lossc's compiled
//! evaluator (through `validate::Training`) or a loop written for focal
//! loss alone. Rounds alternate between the two so machine noise hits both;
//! the median epochs per second of each and their ratio are printed.
//!
//! `cargo bench --bench train` uses 10^6 rows x 20 features, one thread
//! (set before anything starts rayon), 10 epochs per round, 5 rounds;
//! `LOSSC_BENCH_QUICK=1` uses 10^5 rows.

use lossc::Loss;
use lossc::validate::Training;
use lossc::validate::ValidateError;
use lossc::validate::model::{ModelKind, Net, sigmoid};
use lossc::validate::optim::{self, Budget, Objective, Optimizer};
use ndarray::{Array1, Array2, ArrayD};
use std::time::Instant;

const GAMMA: f64 = 2.0;
const ALPHA: f64 = 0.25;

/// Focal loss on logits and its derivative, written by hand for this one
/// loss (stable logs through softplus).
struct HandFocal {
    x: Array2<f64>,
    y: Array1<f64>,
    l2: f64,
    net: Net,
}

impl Objective for HandFocal {
    fn rows(&self) -> usize {
        self.x.nrows()
    }

    fn eval(
        &mut self,
        theta: &[f64],
        grad: &mut [f64],
        _: Option<&[usize]>,
    ) -> Result<f64, ValidateError> {
        let (z, cache) = self.net.forward(theta, self.x.view());
        let n = z.len() as f64;
        let mut loss = 0.0;
        let mut du = Array2::zeros(z.raw_dim());
        for ((&z, &y), d) in z.iter().zip(&self.y).zip(du.iter_mut()) {
            // One exp and one log1p per row give p, log p and log(1 - p).
            let e = (-z.abs()).exp();
            let l1p = e.ln_1p();
            let p = if z >= 0.0 {
                1.0 / (1.0 + e)
            } else {
                e / (1.0 + e)
            };
            let (lp, lq) = (-((-z).max(0.0) + l1p), -(z.max(0.0) + l1p));
            if y == 1.0 {
                let q = 1.0 - p;
                let qg = q * q; // gamma = 2
                loss -= ALPHA * qg * lp;
                *d = ALPHA * qg * (GAMMA * p * lp - q) / n;
            } else {
                let pg = p * p;
                loss -= (1.0 - ALPHA) * pg * lq;
                *d = (1.0 - ALPHA) * pg * (p - GAMMA * (1.0 - p) * lq) / n;
            }
        }
        grad.fill(0.0);
        self.net
            .backward(theta, self.x.view(), &cache, du.view(), grad);
        let mut total = loss / n;
        for k in 0..self.net.inputs {
            grad[k] += self.l2 * theta[k];
            total += 0.5 * self.l2 * theta[k] * theta[k];
        }
        Ok(total)
    }
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn epochs_per_second(obj: &mut dyn Objective, params: usize, epochs: usize) -> f64 {
    let mut theta = vec![0.0; params];
    let budget = Budget { epochs, tol: 0.0 };
    let t = Instant::now();
    let fit = optim::minimize(
        Optimizer::Lbfgs { memory: 10 },
        obj,
        &mut theta,
        budget,
        0,
        &mut |_, _| {},
    )
    .expect("training runs");
    fit.epochs as f64 / t.elapsed().as_secs_f64()
}

fn main() {
    // One thread for both sides: the comparison is of the loss code, not of
    // how many cores each side happens to use. Set before rayon starts.
    unsafe { std::env::set_var("RAYON_NUM_THREADS", "1") };
    if std::env::args().any(|a| a == "--list") {
        println!("train: bench");
        return;
    }
    let quick = std::env::var_os("LOSSC_BENCH_QUICK").is_some();
    let (n, f) = (if quick { 100_000 } else { 1_000_000 }, 20);
    let mut rng = lossc::grad::Rng::new(42);
    let truth: Vec<f64> = (0..f).map(|_| rng.normal() * 0.5).collect();
    let mut x = Array2::zeros((n, f));
    let mut y = Array1::zeros(n);
    for r in 0..n {
        let mut z = -2.0;
        for c in 0..f {
            let v = rng.normal();
            x[[r, c]] = v;
            z += truth[c] * v;
        }
        y[r] = f64::from(u8::from(rng.uniform() < sigmoid(z)));
    }
    let loss = Loss::from_file(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/examples/focal_logits.loss"
    ))
    .expect("the bundled example")
    .with_param("gamma", GAMMA)
    .and_then(|l| l.with_param("alpha", ALPHA))
    .expect("params in range");
    let l2 = 1e-4;
    let data: Vec<(String, ArrayD<f64>)> = vec![("y".into(), y.clone().into_dyn())];
    let mut compiled = Training::linear(&loss, data, x.clone(), l2).expect("focal compiles");
    let net = Net::new(ModelKind::Linear, f, 1, 0);
    let mut hand = HandFocal { x, y, l2, net };

    // The baseline must compute the same thing: compare at a non-trivial point.
    let params = compiled.params();
    let theta: Vec<f64> = (0..params).map(|k| 0.1 * ((k % 7) as f64 - 3.0)).collect();
    let (mut g1, mut g2) = (vec![0.0; params], vec![0.0; params]);
    let f1 = compiled.eval(&theta, &mut g1, None).unwrap();
    let f2 = hand.eval(&theta, &mut g2, None).unwrap();
    assert!((f1 - f2).abs() < 1e-9 * f1.abs(), "objective {f1} vs {f2}");
    for (a, b) in g1.iter().zip(&g2) {
        assert!(
            (a - b).abs() < 1e-9 * (1e-6 + a.abs()),
            "gradient {a} vs {b}"
        );
    }

    let (rounds, epochs) = (5, 10);
    let (mut a, mut b) = (Vec::new(), Vec::new());
    for _ in 0..rounds {
        a.push(epochs_per_second(&mut compiled, params, epochs));
        b.push(epochs_per_second(&mut hand, params, epochs));
    }
    let (a, b) = (median(a), median(b));
    println!(
        "logistic regression, focal loss (gamma {GAMMA}, alpha {ALPHA}), {n} rows x {f} features, L-BFGS, 1 thread"
    );
    println!("  compiled focal (lossc validate):  {a:8.2} epochs/s");
    println!("  hand-written focal gradient:      {b:8.2} epochs/s");
    println!(
        "  time per epoch, compiled / hand-written: {:.3}  (1.0 = as fast as the hand-written loop)",
        b / a
    );
}
