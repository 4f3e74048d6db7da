//! The optimisers: full-batch L-BFGS with a backtracking line search (the
//! default: no learning rate to tune, and it converges in tens of epochs on
//! the smooth, mostly convex objectives of linear models), and Adam, full
//! batch or on shuffled mini-batches, for non-smooth losses and MLPs.

use super::ValidateError;
use crate::grad::Rng;

/// How to minimise.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Optimizer {
    /// Limited-memory BFGS with `memory` pairs.
    Lbfgs {
        /// Curvature pairs kept.
        memory: usize,
    },
    /// Adam with step size `lr`, on mini-batches of `batch` rows (all rows when `None`).
    Adam {
        /// The step size.
        lr: f64,
        /// Rows per step.
        batch: Option<usize>,
    },
}

impl Optimizer {
    /// Parses `lbfgs`, `adam` or `adam:LR`.
    pub fn parse(s: &str, batch: Option<usize>) -> Result<Optimizer, String> {
        match s {
            "lbfgs" if batch.is_some() => {
                Err("--batch needs --optimizer adam (L-BFGS works on all rows at once)".into())
            }
            "lbfgs" => Ok(Optimizer::Lbfgs { memory: 10 }),
            "adam" => Ok(Optimizer::Adam { lr: 0.05, batch }),
            _ => match s.strip_prefix("adam:").map(str::parse::<f64>) {
                Some(Ok(lr)) if lr > 0.0 && lr.is_finite() => Ok(Optimizer::Adam { lr, batch }),
                Some(_) => Err(format!(
                    "`{s}`: the learning rate must be a positive number"
                )),
                None => Err(format!(
                    "unknown optimizer `{s}`; expected `lbfgs`, `adam` or `adam:LR`"
                )),
            },
        }
    }

    /// The name as the command line writes it.
    pub fn name(self) -> String {
        match self {
            Optimizer::Lbfgs { .. } => "lbfgs".into(),
            Optimizer::Adam { lr, batch: None } => format!("adam:{lr}"),
            Optimizer::Adam { lr, batch: Some(b) } => format!("adam:{lr} (batch {b})"),
        }
    }
}

/// What a training run needs from its objective.
pub trait Objective {
    /// Training rows.
    fn rows(&self) -> usize;
    /// The objective's value at `theta`, with its gradient written into `grad`,
    /// on every row or on the given ones.
    fn eval(
        &mut self,
        theta: &[f64],
        grad: &mut [f64],
        rows: Option<&[usize]>,
    ) -> Result<f64, ValidateError>;
}

/// When to stop.
#[derive(Clone, Copy, Debug)]
pub struct Budget {
    /// The most epochs (passes over the training rows).
    pub epochs: usize,
    /// Converged when an epoch lowers the objective by less than this, relatively.
    pub tol: f64,
}

/// How training went.
#[derive(Clone, Debug)]
pub struct Fit {
    /// The objective after each epoch: (epoch, value).
    pub curve: Vec<(usize, f64)>,
    /// Epochs run.
    pub epochs: usize,
    /// Why training stopped.
    pub stop: Stop,
}

/// Why training stopped.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stop {
    /// The objective stopped improving (relative change below the tolerance).
    Converged,
    /// The epoch budget ran out first.
    Budget,
    /// No step along the search direction lowered the objective (a kink or
    /// the limit of floating-point precision).
    Stalled,
}

impl Stop {
    /// A word for tables.
    pub fn name(self) -> &'static str {
        match self {
            Stop::Converged => "converged",
            Stop::Budget => "epoch budget",
            Stop::Stalled => "stalled",
        }
    }
}

fn dot(a: &[f64], b: &[f64]) -> f64 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

/// No optimiser can descend from a NaN or infinite objective: say so
/// rather than report the metrics of a model that never trained.
fn not_finite_at_start(f: f64) -> Result<(), ValidateError> {
    if f.is_finite() {
        return Ok(());
    }
    Err(ValidateError::Setup {
        reason: format!("the objective is {f} at the starting point, so training cannot descend"),
        hint: Some(
            "`lossc analyze` shows where the loss or its gradient stop being finite; a pred declared `prob` or `logit` keeps the model's outputs where the loss is defined"
                .into(),
        ),
    })
}

/// Minimises `obj` from `theta`, calling `tick` after each epoch.
pub fn minimize(
    opt: Optimizer,
    obj: &mut dyn Objective,
    theta: &mut [f64],
    budget: Budget,
    seed: u64,
    tick: &mut dyn FnMut(usize, f64),
) -> Result<Fit, ValidateError> {
    match opt {
        Optimizer::Lbfgs { memory } => lbfgs(obj, theta, budget, memory, tick),
        Optimizer::Adam { lr, batch } => adam(obj, theta, budget, lr, batch, seed, tick),
    }
}

fn lbfgs(
    obj: &mut dyn Objective,
    x: &mut [f64],
    budget: Budget,
    memory: usize,
    tick: &mut dyn FnMut(usize, f64),
) -> Result<Fit, ValidateError> {
    let n = x.len();
    let mut g = vec![0.0; n];
    let mut f = obj.eval(x, &mut g, None)?;
    not_finite_at_start(f)?;
    let mut epochs = 1;
    let mut curve = vec![(epochs, f)];
    tick(epochs, f);
    let mut mem: std::collections::VecDeque<(Vec<f64>, Vec<f64>, f64)> = Default::default();
    let (mut xn, mut gn, mut d) = (vec![0.0; n], vec![0.0; n], vec![0.0; n]);
    let mut stop = Stop::Budget;
    while epochs < budget.epochs {
        // Two-loop recursion: d = -H g.
        d.iter_mut().zip(&g).for_each(|(d, g)| *d = -g);
        let mut alphas = Vec::with_capacity(mem.len());
        for (s, y, rho) in mem.iter().rev() {
            let a = rho * dot(s, &d);
            d.iter_mut().zip(y).for_each(|(d, y)| *d -= a * y);
            alphas.push(a);
        }
        if let Some((s, y, _)) = mem.back() {
            let gamma = dot(s, y) / dot(y, y);
            d.iter_mut().for_each(|d| *d *= gamma);
        }
        for ((s, y, rho), a) in mem.iter().zip(alphas.iter().rev()) {
            let b = rho * dot(y, &d);
            d.iter_mut().zip(s).for_each(|(d, s)| *d += (a - b) * s);
        }
        let mut slope = dot(&g, &d);
        if slope.is_nan() || slope >= 0.0 {
            mem.clear();
            d.iter_mut().zip(&g).for_each(|(d, g)| *d = -g);
            slope = dot(&g, &d);
        }
        if slope == 0.0 {
            stop = Stop::Converged;
            break;
        }
        // The first step has no curvature yet: move by about one unit.
        let mut t = if mem.is_empty() {
            1.0 / dot(&d, &d).sqrt().max(1.0)
        } else {
            1.0
        };
        let mut accepted = None;
        while epochs < budget.epochs {
            xn.iter_mut()
                .zip(x.iter().zip(&d))
                .for_each(|(xn, (x, d))| *xn = x + t * d);
            let fnew = obj.eval(&xn, &mut gn, None)?;
            epochs += 1;
            if fnew.is_finite() && fnew <= f + 1e-4 * t * slope {
                accepted = Some(fnew);
                break;
            }
            t *= 0.5;
            if t < 1e-20 {
                break;
            }
        }
        let Some(fnew) = accepted else {
            if !mem.is_empty() && epochs < budget.epochs {
                mem.clear();
                continue;
            }
            stop = if epochs >= budget.epochs {
                Stop::Budget
            } else {
                Stop::Stalled
            };
            break;
        };
        let s: Vec<f64> = xn.iter().zip(x.iter()).map(|(a, b)| a - b).collect();
        let y: Vec<f64> = gn.iter().zip(&g).map(|(a, b)| a - b).collect();
        let sy = dot(&s, &y);
        if sy > 1e-12 * dot(&y, &y).max(1e-300) {
            if mem.len() == memory {
                mem.pop_front();
            }
            mem.push_back((s, y, 1.0 / sy));
        }
        x.copy_from_slice(&xn);
        g.copy_from_slice(&gn);
        let fold = f;
        f = fnew;
        curve.push((epochs, f));
        tick(epochs, f);
        if (fold - f).abs() <= budget.tol * fold.abs().max(1e-12) {
            stop = Stop::Converged;
            break;
        }
    }
    Ok(Fit {
        curve,
        epochs,
        stop,
    })
}

fn adam(
    obj: &mut dyn Objective,
    x: &mut [f64],
    budget: Budget,
    lr: f64,
    batch: Option<usize>,
    seed: u64,
    tick: &mut dyn FnMut(usize, f64),
) -> Result<Fit, ValidateError> {
    let n = x.len();
    let rows = obj.rows();
    let (mut m, mut v, mut g) = (vec![0.0; n], vec![0.0; n], vec![0.0; n]);
    let (b1, b2, eps): (f64, f64, f64) = (0.9, 0.999, 1e-8);
    let mut order: Vec<usize> = (0..rows).collect();
    let mut rng = Rng::new(seed ^ 0xADA4);
    let mut curve = Vec::new();
    let mut step = 0i32;
    let mut stop = Stop::Budget;
    let mut best = f64::INFINITY;
    let mut flat = 0;
    let mut halvings = 0;
    let mut lr = lr;
    // The parameters at the best epoch's start (full batch: exactly the
    // point whose objective was `best`), returned at the end, since Adam's
    // last iterate may have wandered past the minimum.
    let mut best_x = x.to_vec();
    let mut start_x = x.to_vec();
    for epoch in 1..=budget.epochs {
        let mut total = 0.0;
        start_x.copy_from_slice(x);
        let chunks: Vec<Option<&[usize]>> = match batch {
            Some(b) if b < rows => {
                // Fisher–Yates with the seeded generator: the same batches every run.
                for i in (1..rows).rev() {
                    let j = (rng.next_u64() % (i as u64 + 1)) as usize;
                    order.swap(i, j);
                }
                order.chunks(b).map(Some).collect()
            }
            _ => vec![None],
        };
        for rows_b in chunks {
            let f = obj.eval(x, &mut g, rows_b)?;
            let w = rows_b.map_or(rows, <[usize]>::len) as f64 / rows.max(1) as f64;
            total += w * f;
            step += 1;
            let (c1, c2) = (1.0 - b1.powi(step), 1.0 - b2.powi(step));
            for k in 0..n {
                m[k] = b1 * m[k] + (1.0 - b1) * g[k];
                v[k] = b2 * v[k] + (1.0 - b2) * g[k] * g[k];
                x[k] -= lr * (m[k] / c1) / ((v[k] / c2).sqrt() + eps);
            }
        }
        if epoch == 1 {
            not_finite_at_start(total)?;
        }
        curve.push((epoch, total));
        tick(epoch, total);
        // A constant step size leaves Adam circling the minimum: after 10
        // epochs without a new best, halve it; converged when 10 halvings
        // (1/1024 of the step) bring no relative improvement either.
        if !best.is_finite() || total < best - budget.tol * best.abs().max(1e-12) {
            best = total;
            best_x.copy_from_slice(&start_x);
            flat = 0;
        } else {
            flat += 1;
            if flat >= 10 {
                flat = 0;
                halvings += 1;
                lr *= 0.5;
                if halvings >= 10 {
                    stop = Stop::Converged;
                    break;
                }
            }
        }
    }
    if best.is_finite() {
        x.copy_from_slice(&best_x);
    }
    Ok(Fit {
        epochs: curve.len(),
        curve,
        stop,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A badly scaled convex quadratic, f = sum_k k^2 (x_k - 1)^2 / 2.
    struct Quadratic;
    impl Objective for Quadratic {
        fn rows(&self) -> usize {
            1
        }
        fn eval(
            &mut self,
            x: &[f64],
            g: &mut [f64],
            _: Option<&[usize]>,
        ) -> Result<f64, ValidateError> {
            let mut f = 0.0;
            for (k, (x, g)) in x.iter().zip(g.iter_mut()).enumerate() {
                let a = ((k + 1) * (k + 1)) as f64;
                f += 0.5 * a * (x - 1.0) * (x - 1.0);
                *g = a * (x - 1.0);
            }
            Ok(f)
        }
    }

    #[test]
    fn both_optimizers_find_the_minimum() {
        let budget = Budget {
            epochs: 3000,
            tol: 1e-14,
        };
        for (opt, tol) in [
            (Optimizer::Lbfgs { memory: 10 }, 1e-6),
            (
                Optimizer::Adam {
                    lr: 0.05,
                    batch: None,
                },
                1e-3,
            ),
        ] {
            let mut x = vec![0.0; 6];
            let fit = minimize(opt, &mut Quadratic, &mut x, budget, 1, &mut |_, _| {}).unwrap();
            for v in &x {
                assert!((v - 1.0).abs() < tol, "{opt:?}: {x:?}");
            }
            assert!(fit.curve.last().unwrap().1 < fit.curve[0].1);
            assert!(
                fit.curve.windows(2).all(|w| w[0].0 < w[1].0),
                "epochs increase"
            );
        }
    }

    /// log(x) at x = 0: the objective is -inf before any step.
    struct LogAtZero;
    impl Objective for LogAtZero {
        fn rows(&self) -> usize {
            1
        }
        fn eval(
            &mut self,
            x: &[f64],
            g: &mut [f64],
            _: Option<&[usize]>,
        ) -> Result<f64, ValidateError> {
            g[0] = 1.0 / x[0];
            Ok(x[0].ln())
        }
    }

    #[test]
    fn a_non_finite_start_is_an_error() {
        let budget = Budget {
            epochs: 10,
            tol: 0.0,
        };
        for opt in [
            Optimizer::Lbfgs { memory: 10 },
            Optimizer::Adam {
                lr: 0.1,
                batch: None,
            },
        ] {
            let e =
                minimize(opt, &mut LogAtZero, &mut [0.0], budget, 1, &mut |_, _| {}).unwrap_err();
            assert_eq!(
                e.to_string(),
                "the objective is -inf at the starting point, so training cannot descend"
            );
        }
    }

    #[test]
    fn the_budget_is_respected() {
        let mut x = vec![0.0; 6];
        let budget = Budget {
            epochs: 4,
            tol: 0.0,
        };
        let fit = minimize(
            Optimizer::Lbfgs { memory: 10 },
            &mut Quadratic,
            &mut x,
            budget,
            1,
            &mut |_, _| {},
        )
        .unwrap();
        assert!(fit.epochs <= 4);
        assert_eq!(fit.stop, Stop::Budget);
    }

    #[test]
    fn optimizer_names_parse() {
        assert_eq!(
            Optimizer::parse("adam:0.1", Some(64)),
            Ok(Optimizer::Adam {
                lr: 0.1,
                batch: Some(64)
            })
        );
        assert!(
            Optimizer::parse("lbfgs", Some(64))
                .unwrap_err()
                .contains("--batch needs")
        );
        assert!(
            Optimizer::parse("adam:-1", None)
                .unwrap_err()
                .contains("positive")
        );
        assert!(
            Optimizer::parse("sgd", None)
                .unwrap_err()
                .contains("unknown optimizer")
        );
    }
}
