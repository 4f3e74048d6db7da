//! The compiled evaluator against the reference: the unsimplified
//! derivative evaluated node by node, on random in-domain data.

use lossc::grad::{Batch, Derivation, Rng, random_batch_sized};
use lossc::sema::types::Shape;
use lossc::{Float, Inputs, Loss};
use ndarray::{ArrayD, IxDyn};
use std::collections::BTreeMap;

fn examples() -> Vec<std::path::PathBuf> {
    let mut v: Vec<_> = std::fs::read_dir("examples")
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "loss"))
        .collect();
    v.sort();
    v
}

fn coupled(loss: &Loss) -> bool {
    std::fs::read_to_string(loss.source().name())
        .map(|t| t.contains('@'))
        .unwrap_or(false)
}

/// The batch's arrays, in `T`, by name.
fn arrays<T: Float>(loss: &Loss, batch: &Batch) -> BTreeMap<String, ArrayD<T>> {
    let c = loss.checked();
    c.data
        .iter()
        .chain(&c.preds)
        .map(|v| {
            let rows = &batch.values[&v.name];
            let a = match v.shape {
                Shape::Scalar => ArrayD::from_shape_vec(
                    IxDyn(&[batch.rows]),
                    rows.iter().map(|r| T::of(r[0])).collect(),
                ),
                Shape::Vector(_) => {
                    let w = rows.first().map_or(0, Vec::len);
                    ArrayD::from_shape_vec(
                        IxDyn(&[batch.rows, w]),
                        rows.iter().flatten().map(|x| T::of(*x)).collect(),
                    )
                }
            };
            (v.name.clone(), a.unwrap())
        })
        .collect()
}

/// The batch with every value rounded to `T`, so that the reference sees
/// the same data as an evaluator in `T`.
fn rounded<T: Float>(batch: &Batch) -> Batch {
    let mut b = batch.clone();
    for rows in b.values.values_mut() {
        for r in rows {
            for x in r {
                *x = T::of(*x).f64();
            }
        }
    }
    b
}

/// Reference: the objective and each pred's gradient from the raw
/// derivative, evaluated node by node.
fn reference(d: &Derivation, batch: &Batch) -> (f64, BTreeMap<String, Vec<f64>>) {
    let mut b = batch.clone();
    b.reduced = d.reductions(batch);
    let value = d.objective_value(batch);
    let mut grads = BTreeMap::new();
    for p in &d.preds {
        let width = batch.values[&p.pred][0].len();
        let mut g = Vec::new();
        for row in 0..batch.rows {
            for c in 0..width {
                let bind: Vec<(&str, usize)> = match &p.component {
                    Some(k) => vec![(k.as_str(), c)],
                    None => vec![],
                };
                let v = lossc::ir::eval::eval_with(&d.graph, p.raw, &b, row, &bind);
                g.push(match d.factor {
                    lossc::grad::Factor::OneOverN => v / batch.rows as f64,
                    lossc::grad::Factor::One => v,
                });
            }
        }
        grads.insert(p.pred.clone(), g);
    }
    (value, grads)
}

/// `|a - b| <= tol * max(|b|, floor * scale)`: relative per entry, except
/// that an entry which cancels to nearly zero (`sigmoid(z) - y` with
/// `sigmoid(z)` near `y`) is judged against `floor` times the array's
/// largest magnitude. In f32 that floor is the whole scale: a difference of
/// two numbers near 1 has an absolute error of an f32 ulp of 1, which no
/// evaluator in f32 can beat relative to the small difference.
fn assert_close(what: &str, got: &[f64], want: &[f64], tol: f64, floor: f64) {
    assert_eq!(got.len(), want.len(), "{what}: length");
    let scale = want.iter().fold(0.0f64, |m, x| m.max(x.abs()));
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        let err = (g - w).abs();
        let bound = tol * w.abs().max(floor * scale).max(1e-300);
        assert!(
            err <= bound || (g.is_nan() && w.is_nan()),
            "{what}[{i}]: got {g}, reference {w} (error {err:e}, bound {bound:e})"
        );
    }
}

fn check<T: Float>(path: &std::path::Path, n: usize, sizes: usize, seed: u64, tol: f64) {
    let loss = Loss::from_file(path).unwrap();
    let c = loss.checked();
    let sz: BTreeMap<String, usize> = c
        .sizes
        .iter()
        .map(|(k, v)| (k.clone(), v.map_or(sizes, |v| v as usize)))
        .collect();
    let batch = random_batch_sized(c, n, sz, &mut Rng::new(seed));
    let batch = rounded::<T>(&batch);
    let d = loss.derive().unwrap();
    let (value, grads) = reference(&d, &batch);
    let eval = loss.compile::<T>().unwrap();
    let arrays = arrays::<T>(&loss, &batch);
    let mut inputs = Inputs::new();
    for (k, a) in &arrays {
        inputs.insert(k.clone(), a.view());
    }
    let out = eval.eval(&inputs).unwrap();
    let name = format!("{} ({}, n = {n}, size {sizes})", path.display(), T::NAME);
    let floor = if T::NAME == "f32" { 1.0 } else { 1e-3 };
    assert_close(&format!("{name} loss"), &[out.loss().f64()], &[value], tol, floor);
    for (p, want) in &grads {
        let got: Vec<f64> = out.grad(p).iter().map(|x| x.f64()).collect();
        assert_close(&format!("{name} d/d{p}"), &got, want, tol, floor);
    }
}

#[test]
fn every_example_matches_the_reference_in_f64() {
    for path in examples() {
        let loss = Loss::from_file(&path).unwrap();
        let big = if coupled(&loss) { 45 } else { 1200 };
        for (n, sizes) in [(1, 1), (1, 4), (7, 1), (big, 3), (big + 13, 6)] {
            check::<f64>(&path, n, sizes, 11 + n as u64, 1e-12);
        }
    }
}

#[test]
fn every_example_matches_the_reference_in_f32() {
    for path in examples() {
        let loss = Loss::from_file(&path).unwrap();
        let big = if coupled(&loss) { 45 } else { 1200 };
        for (n, sizes) in [(1, 1), (7, 5), (big + 13, 3)] {
            check::<f32>(&path, n, sizes, 5 + n as u64, 1e-5);
        }
    }
}
