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
    // In f64 the reference itself is off by a few ulp of the scale where
    // terms cancel: on InfoNCE (n = 58, size 6) its d/dk is 5.4e-15 of the
    // scale from the exact value (mpmath, 50 digits), lossc's 5.9e-16.
    let floor = if T::NAME == "f32" { 1.0 } else { 1e-2 };
    assert_close(
        &format!("{name} loss"),
        &[out.loss().f64()],
        &[value],
        tol,
        floor,
    );
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

#[test]
fn a_softmax_reads_its_logsumexps_exps_at_every_width() {
    // The interpreter keeps the exps of a logsumexp that runs in one tile
    // (10 and 33 logits, and 100 at 64 rows per chunk) and computes the
    // softmax's own exp when it runs in several (1000 logits at 20 rows:
    // 2 tiles of 500): both agree with the reference, in f64 and f32. (The
    // reference's gradient costs C² per row, which keeps the sizes small.)
    let path = std::path::Path::new("examples/cce_logits.loss");
    let plan = Loss::from_file(path)
        .unwrap()
        .compile::<f64>()
        .unwrap()
        .describe();
    assert!(plan.contains("exps kept in"), "{plan}");
    assert_eq!(plan.matches("= softmax ").count(), 1, "{plan}");
    // `z[y] + (-lse)` and `softmax + (-onehot)` are subtractions, and the
    // negation of the logsumexp, read by nothing else, is gone.
    assert_eq!(plan.matches(" Sub ").count(), 2, "{plan}");
    assert_eq!(plan.matches(" Add ").count(), 0, "{plan}");
    assert_eq!(plan.matches(" Neg ").count(), 1, "{plan}");
    // The same with a softmax of a computed `x` (read from its register
    // when the exps are not kept, rather than from the input).
    let scaled = std::env::temp_dir().join(format!("lossc-softmax-{}.loss", std::process::id()));
    std::fs::write(
        &scaled,
        "loss s\ntask multiclass\ndata y : class [C]\npred z : vector [C]\n\
         minimize mean(logsumexp[c](2 * z[c]) - 2 * z[y])\n",
    )
    .unwrap();
    let plan = Loss::from_file(&scaled)
        .unwrap()
        .compile::<f64>()
        .unwrap()
        .describe();
    assert!(plan.contains("exps kept in"), "{plan}");
    for p in [path, scaled.as_path()] {
        for (n, c) in [(1, 1), (300, 10), (300, 33), (300, 100), (20, 1000)] {
            check::<f64>(p, n, c, 3 + c as u64, 1e-12);
            check::<f32>(p, n, c, 5 + c as u64, 1e-5);
        }
    }
    std::fs::remove_file(&scaled).unwrap();
}

#[test]
fn a_softmax_row_without_a_finite_maximum_gets_the_unfused_value() {
    // Row 0's scaled logits are [inf, 1000]: its maximum is infinite, so the
    // kept exps (exp(1000 - 0) = inf, times 1/inf) would give NaN where the
    // derivative is exp(1000 - inf) = 0. Row 1 is ordinary: [1, 2].
    let spec = "loss t\ntask multiclass\ndata y : class [C]\npred z : vector [C]\n\
                minimize mean(logsumexp[c](1e300 * z[c]) - 1e300 * z[y])\n";
    let ev = Loss::from_source(spec).unwrap().compile::<f64>().unwrap();
    assert!(ev.describe().contains("= softmax "), "{}", ev.describe());
    let y = ndarray::array![1.0, 0.0].into_dyn();
    let z = ndarray::array![[1e10, 1e-297], [1e-300, 2e-300]].into_dyn();
    let out = ev
        .eval(&Inputs::new().with("y", y.view()).with("z", z.view()))
        .unwrap();
    let g = out.grad("z");
    let (e1, e2) = (1f64.exp(), 2f64.exp());
    let want = [
        f64::NAN,                             // exp(inf - inf)
        (0.0 - 1.0) * 1e300 / 2.0,            // exp(1000 - inf) = 0, minus the one-hot
        (e1 / (e1 + e2) - 1.0) * 1e300 / 2.0, // softmax minus the one-hot
        e2 / (e1 + e2) * 1e300 / 2.0,
    ];
    for (i, (got, want)) in g.iter().zip(want).enumerate() {
        assert!(
            (got.is_nan() && want.is_nan()) || (got - want).abs() <= 1e-13 * want.abs(),
            "component {i}: {got} vs {want}"
        );
    }
}

/// The focal spec's arrays: `n` rows of labels and logits.
fn focal_inputs(n: usize) -> (ndarray::Array1<f64>, ndarray::Array1<f64>) {
    let mut rng = Rng::new(3);
    let y = (0..n).map(|_| (rng.next_u64() % 2) as f64).collect();
    let z = (0..n).map(|_| 3.0 * rng.normal()).collect();
    (y, z)
}

#[test]
fn a_gather_that_reads_other_rows_reductions_is_scattered() {
    // InfoNCE's dK (a vector per row) and a scalar score's gradient under a
    // softmax over the batch with a sharpness per row: both are computed by
    // scattering into a buffer that a second pass reads.
    // A vector pred whose gathered term does not depend on the component:
    // one value per row, which the gradient's array (a vector per row)
    // cannot hold, so both groups get buffers of their own.
    let per_row = std::env::temp_dir().join("lossc_scatter_per_row.loss");
    std::fs::write(
        &per_row,
        "loss t\ntask ranking\ndata w : real [0, 4]\npred z : vector [C]\n\
         minimize mean(logsumexp[j](w * sum[c](z@j[c])) - w * sum[c](z[c]))\n",
    )
    .unwrap();
    // Two scatters into one gradient: only one may use its array.
    let two = std::env::temp_dir().join("lossc_two_scatters.loss");
    std::fs::write(
        &two,
        "loss t\ntask ranking\ndata w : real [0, 4]\ndata v : real [0, 4]\npred s : real\n\
         minimize mean(logsumexp[j](w * s@j)) * mean(logsumexp[j](v * s@j + s))\n",
    )
    .unwrap();
    for (path, pred, first, before) in [
        // (the gradient reads both means: a pass for them first)
        (
            two.to_str().unwrap(),
            "s",
            "scatter 1 (for grad s): two buffers",
            1,
        ),
        (
            "examples/infonce.loss",
            "k",
            "first group in grad 1's array",
            0,
        ),
        (
            "tests/kernels/specs/batch_softmax_scalar.loss",
            "s",
            "first group in grad 0's array",
            0,
        ),
        // (its row sums are a table: the logsumexp reads them at other rows)
        (per_row.to_str().unwrap(), "z", "two buffers", 1),
    ] {
        let loss = Loss::from_file(path).unwrap();
        let ev = loss.compile::<f64>().unwrap();
        let plan = ev.describe();
        // One pass computes each pair's softmax weight once, for the value,
        // the gathered gradient and the scattered one; no table pass.
        // (`before`: passes before the one that scatters, for tables or for
        // the sample reductions a gradient reads)
        assert_eq!(ev.passes(), 2 + before, "{plan}");
        let tables = plan.matches("into table").count();
        assert!(tables <= before, "{plan}");
        let into = format!("into rows of scatter 0 (for grad {pred})");
        let read = format!("= load scatter 0 (for grad {pred}) row Cur");
        assert!(plan.contains(&into) && plan.contains(&read), "{plan}");
        assert!(plan.contains("exps kept in"), "{plan}");
        // Where the first group of sums is added.
        assert!(plan.contains(first), "{plan}");
        let path = std::path::Path::new(path);
        for (n, sizes) in [(1, 1), (2, 3), (7, 1), (45, 3), (58, 6)] {
            check::<f64>(path, n, sizes, 11 + n as u64, 1e-12);
        }
        for (n, sizes) in [(1, 1), (7, 5), (58, 3)] {
            check::<f32>(path, n, sizes, 5 + n as u64, 1e-5);
        }
        same_bits_with_threads(path);
        // A repeated evaluation into the same arrays (the gradient's among
        // them) gives the same bits.
        let batch = lossc::grad::random_batch(loss.checked(), 300, &mut Rng::new(4));
        let arrays = arrays::<f64>(&loss, &batch);
        let mut inputs = Inputs::new();
        for (k, a) in &arrays {
            inputs.insert(k.clone(), a.view());
        }
        let mut out = ev.eval(&inputs).unwrap();
        let first: Vec<Vec<u64>> = out
            .grads()
            .map(|(_, g)| g.iter().map(|x| x.to_bits()).collect())
            .collect();
        ev.eval_into(&inputs, &mut out).unwrap();
        let again: Vec<Vec<u64>> = out
            .grads()
            .map(|(_, g)| g.iter().map(|x| x.to_bits()).collect())
            .collect();
        assert_eq!(first, again, "{}", path.display());
    }
}

#[test]
fn results_are_the_same_bits_with_one_and_two_threads() {
    for path in examples() {
        same_bits_with_threads(&path);
    }
}

fn same_bits_with_threads(path: &std::path::Path) {
    {
        let loss = Loss::from_file(path).unwrap();
        // Enough rows for several parallel blocks (fewer for O(n²) specs).
        let n = if coupled(&loss) { 700 } else { 70_001 };
        let batch = lossc::grad::random_batch(loss.checked(), n, &mut Rng::new(9));
        for threads in [1usize, 2, 3] {
            let arrays = arrays::<f64>(&loss, &batch);
            let mut inputs = Inputs::new();
            for (k, a) in &arrays {
                inputs.insert(k.clone(), a.view());
            }
            let one = loss.compile::<f64>().unwrap().with_threads(1).unwrap();
            let many = loss
                .compile::<f64>()
                .unwrap()
                .with_threads(threads)
                .unwrap();
            let (a, b) = (one.eval(&inputs).unwrap(), many.eval(&inputs).unwrap());
            assert_eq!(
                a.loss().to_bits(),
                b.loss().to_bits(),
                "{} loss",
                path.display()
            );
            for (name, g) in a.grads() {
                let h = b.grad(name);
                assert!(
                    g.iter()
                        .zip(h.iter())
                        .all(|(x, y)| x.to_bits() == y.to_bits()),
                    "{} d/d{name} differs with {threads} threads",
                    path.display()
                );
            }
        }
    }
}

#[test]
fn eval_into_reuses_the_result_and_agrees_with_eval() {
    let loss = Loss::from_file("examples/focal_logits.loss").unwrap();
    let ev = loss.compile::<f64>().unwrap();
    let (y, z) = focal_inputs(5000);
    let inputs = Inputs::new()
        .with("y", y.view().into_dyn())
        .with("z", z.view().into_dyn());
    let mut out = ev.eval(&inputs).unwrap();
    let first = out.grad("z").to_owned();
    let ptr = out.grad("z").as_ptr();
    ev.eval_into(&inputs, &mut out).unwrap();
    assert_eq!(out.grad("z").as_ptr(), ptr, "the gradient buffer is reused");
    assert_eq!(out.grad("z"), first.view());
    assert!(out.try_grad("y").is_none());
}

#[test]
fn the_hessian_diagonal_matches_the_derivation() {
    let loss = Loss::from_file("examples/bce_logits.loss").unwrap();
    let ev = loss.compile_with_hessian::<f64>().unwrap();
    let (y, z) = focal_inputs(100);
    let inputs = Inputs::new()
        .with("y", y.view().into_dyn())
        .with("z", z.view().into_dyn());
    let out = ev.eval(&inputs).unwrap();
    let h = out.hessian("z").unwrap();
    for (i, (&zi, &hi)) in z.iter().zip(h.iter()).enumerate() {
        let s = 1.0 / (1.0 + (-zi).exp());
        let want = s * (1.0 - s) / 100.0;
        assert!((hi - want).abs() <= 1e-14, "row {i}: {hi} vs {want}");
    }
    assert!(
        loss.compile::<f64>()
            .unwrap()
            .eval(&inputs)
            .unwrap()
            .hessian("z")
            .is_none()
    );
}

fn err<T: Float>(spec: &str, inputs: &Inputs<'_, T>) -> String {
    let loss = Loss::from_file(spec).unwrap();
    loss.compile::<T>()
        .unwrap()
        .eval(inputs)
        .unwrap_err()
        .to_string()
}

#[test]
fn input_errors_name_the_input_row_and_value() {
    use ndarray::{Array1, Array2, array};
    let (y, z) = (array![1.0, 0.0, 1.0], array![0.5, -1.0, 2.0]);
    let focal = "examples/focal_logits.loss";
    // Missing.
    let e = err(focal, &Inputs::new().with("y", y.view().into_dyn()));
    insta::assert_snapshot!(e, @"no array for pred `z` (logit); given: y");
    // A label outside its set.
    let bad = array![1.0, 2.0, 1.0];
    let e = err(
        focal,
        &Inputs::new()
            .with("y", bad.view().into_dyn())
            .with("z", z.view().into_dyn()),
    );
    insta::assert_snapshot!(e, @"`y` at row 1 is 2, outside `label {0, 1}` (a label in {0, 1})");
    // NaN in a logit.
    let nan = array![0.5, f64::NAN, 2.0];
    let e = err(
        focal,
        &Inputs::new()
            .with("y", y.view().into_dyn())
            .with("z", nan.view().into_dyn()),
    );
    insta::assert_snapshot!(e, @"`z` at row 1 is NaN, outside `logit` (any real number)");
    // Infinity in a logit.
    let inf = array![0.5, 1.0, f64::INFINITY];
    let e = err(
        focal,
        &Inputs::new()
            .with("y", y.view().into_dyn())
            .with("z", inf.view().into_dyn()),
    );
    insta::assert_snapshot!(e, @"`z` at row 2 is inf, outside `logit` (any real number)");
    // Rows disagree.
    let short = array![0.5, 1.0];
    let e = err(
        focal,
        &Inputs::new()
            .with("y", y.view().into_dyn())
            .with("z", short.view().into_dyn()),
    );
    insta::assert_snapshot!(e, @"`z` has 2 rows, but `y` has 3");
    // Wrong number of axes.
    let m = Array2::<f64>::zeros((3, 2));
    let e = err(
        focal,
        &Inputs::new()
            .with("y", y.view().into_dyn())
            .with("z", m.view().into_dyn()),
    );
    insta::assert_snapshot!(e, @"`z` has shape [3, 2], but logit needs one value per row, shape [n]");
    // Empty batch.
    let none = Array1::<f64>::zeros(0);
    let e = err(
        focal,
        &Inputs::new()
            .with("y", none.view().into_dyn())
            .with("z", none.view().into_dyn()),
    );
    insta::assert_snapshot!(e, @"the batch is empty: `y` has 0 rows");
    // A probability at 0 and at 1, and outside.
    let bce = "examples/bce.loss";
    for (p, row) in [(0.0, 0), (1.0, 0), (1.5, 0)] {
        let ps = array![p, 0.5, 0.5];
        let e = err(
            bce,
            &Inputs::new()
                .with("y", y.view().into_dyn())
                .with("p", ps.view().into_dyn()),
        );
        assert_eq!(
            e,
            format!("`p` at row {row} is {p}, outside `prob` (a probability in (0, 1))")
        );
    }
    // A class index out of range, and not an integer.
    let cce = "examples/cce_logits.loss";
    let logits = Array2::<f64>::zeros((2, 4));
    for (c, shown) in [(4.0, "4"), (1.5, "1.5"), (-1.0, "-1")] {
        let cls = array![0.0, c];
        let e = err(
            cce,
            &Inputs::new()
                .with("y", cls.view().into_dyn())
                .with("z", logits.view().into_dyn()),
        );
        assert_eq!(
            e,
            format!("`y` at row 1 is {shown}, outside `class [C]` (a class index in 0..C)")
        );
    }
    // Sizes that disagree between inputs.
    let ml = "examples/infonce.loss";
    let (q, k) = (Array2::<f64>::zeros((2, 4)), Array2::<f64>::zeros((2, 5)));
    let e = err(
        ml,
        &Inputs::new()
            .with("q", q.view().into_dyn())
            .with("k", k.view().into_dyn()),
    );
    insta::assert_snapshot!(e, @"size D is 5 for `k`, but it is 4 for `q`");
}

#[test]
fn errors_in_f32_are_reported_the_same_way() {
    use ndarray::array;
    let (y, z) = (array![1.0f32, 0.0], array![f32::NAN, 0.0]);
    let e = err(
        "examples/focal_logits.loss",
        &Inputs::new()
            .with("y", y.view().into_dyn())
            .with("z", z.view().into_dyn()),
    );
    insta::assert_snapshot!(e, @"`z` at row 0 is NaN, outside `logit` (any real number)");
}

#[test]
fn non_contiguous_inputs_are_read_correctly() {
    use ndarray::{Array2, s};
    let loss = Loss::from_file("examples/cce_logits.loss").unwrap();
    let ev = loss.compile::<f64>().unwrap();
    let wide = Array2::from_shape_fn((6, 8), |(i, j)| (i * 8 + j) as f64 / 10.0);
    let z = wide.slice(s![.., ..4]);
    let y = ndarray::array![0.0, 1.0, 2.0, 3.0, 0.0, 1.0];
    let strided = ev
        .eval(
            &Inputs::new()
                .with("y", y.view().into_dyn())
                .with("z", z.into_dyn()),
        )
        .unwrap();
    let owned = z.to_owned();
    let contiguous = ev
        .eval(
            &Inputs::new()
                .with("y", y.view().into_dyn())
                .with("z", owned.view().into_dyn()),
        )
        .unwrap();
    assert_eq!(strided.loss(), contiguous.loss());
    assert_eq!(strided.grad("z"), contiguous.grad("z"));
}

#[test]
fn simplex_and_one_hot_row_errors_are_reported() {
    use ndarray::array;
    let spec = "loss s\ntask multiclass\ndata y : probs [C]\npred z : vector [C]\nminimize mean(cce_logits(y, z))\n";
    let loss = Loss::from_source(spec).unwrap();
    let ev = loss.compile::<f64>().unwrap();
    let z = array![[0.0, 0.0], [0.0, 0.0]];
    let y = array![[0.5, 0.5], [0.5, 0.4]];
    let e = ev
        .eval(
            &Inputs::new()
                .with("y", y.view().into_dyn())
                .with("z", z.view().into_dyn()),
        )
        .unwrap_err()
        .to_string();
    insta::assert_snapshot!(e, @"`y` at row 1: a probability vector must sum to 1, this one sums to 0.9");
    let spec = "loss o\ntask multiclass\ndata y : onehot [C]\npred z : vector [C]\nminimize mean(cce_logits(y, z))\n";
    let ev = Loss::from_source(spec).unwrap().compile::<f64>().unwrap();
    let y = array![[1.0, 0.0], [1.0, 1.0]];
    let e = ev
        .eval(
            &Inputs::new()
                .with("y", y.view().into_dyn())
                .with("z", z.view().into_dyn()),
        )
        .unwrap_err()
        .to_string();
    insta::assert_snapshot!(e, @"`y` at row 1: a one-hot row needs exactly one 1, this one has 2");
}

#[test]
fn an_error_in_a_late_block_is_found_whatever_the_thread_count() {
    // Single-pass specs check each block just before computing it; the
    // error must still be the first bad value in declaration order, the
    // same with any number of threads, and the loss must not look valid.
    let loss = Loss::from_file("examples/focal_logits.loss").unwrap();
    let (mut y, mut z) = focal_inputs(100_000);
    z[90_001] = f64::NAN; // a late block
    y[70_000] = 3.0; // an earlier block, but `y` is declared first
    let inputs = Inputs::new()
        .with("y", y.view().into_dyn())
        .with("z", z.view().into_dyn());
    for threads in [1, 2, 3] {
        let ev = loss
            .compile::<f64>()
            .unwrap()
            .with_threads(threads)
            .unwrap();
        let e = ev.eval(&inputs).unwrap_err().to_string();
        assert_eq!(
            e, "`y` at row 70000 is 3, outside `label {0, 1}` (a label in {0, 1})",
            "{threads} threads"
        );
    }
    y[70_000] = 1.0;
    let inputs = Inputs::new()
        .with("y", y.view().into_dyn())
        .with("z", z.view().into_dyn());
    let ev = loss.compile::<f64>().unwrap().with_threads(2).unwrap();
    let (good_y, good_z) = focal_inputs(100_000);
    let good = Inputs::new()
        .with("y", good_y.view().into_dyn())
        .with("z", good_z.view().into_dyn());
    let mut out = ev.eval(&good).unwrap();
    assert!(out.loss().is_finite());
    let e = ev.eval_into(&inputs, &mut out).unwrap_err().to_string();
    insta::assert_snapshot!(e, @"`z` at row 90001 is NaN, outside `logit` (any real number)");
    assert!(
        out.loss().is_nan(),
        "a failed eval_into leaves no valid-looking loss"
    );
}

#[test]
fn a_two_valued_label_selects_before_the_logarithm() {
    // `w·bce(y, p)` mixes `log p` and `log(1 − p)`; with `y ∈ {0, 1}` the
    // planner picks the argument first: one logarithm and one division per
    // row in value and gradient, as a hand-written loop would do.
    let loss = Loss::from_file("examples/xray_triage.loss").unwrap();
    let plan = loss.compile::<f64>().unwrap().describe();
    assert_eq!(plan.matches("F(Log)").count(), 1, "{plan}");
    assert_eq!(
        plan.matches(" Div ").count() + plan.matches(" Recip ").count(),
        1,
        "{plan}"
    );
    // The weight `20·(1 + 0.1·s)` in the loss and `-20 - 2·s` in the
    // gradient are one register (a multiply and an add), and the gradient
    // divides by the probability rather than multiplying by its reciprocal:
    // two multiplies in all, the other being the loss's `w·log(p)`.
    assert_eq!(plan.matches(" Mul ").count(), 2, "{plan}");
    assert_eq!(plan.matches(" Add ").count(), 1, "{plan}");
    assert_eq!(plan.matches(" Recip ").count(), 0, "{plan}");
    // Labels other than {0, 1} too: hinge's {-1, 1} keeps agreeing with the
    // reference (every example is checked against it above).
    let spec = "loss t\ntask binary\ndata y : label {-1, 1}\npred p : prob\nminimize mean(-(1 + y) / 2 * log(p) - (1 - y) / 2 * log(1 - p))\n";
    let ev = Loss::from_source(spec).unwrap().compile::<f64>().unwrap();
    let plan = ev.describe();
    assert_eq!(plan.matches("F(Log)").count(), 1, "{plan}");
    let (y, p) = (ndarray::array![-1.0, 1.0], ndarray::array![0.3, 0.8]);
    let out = ev
        .eval(
            &Inputs::new()
                .with("y", y.view().into_dyn())
                .with("p", p.view().into_dyn()),
        )
        .unwrap();
    let want = -(0.7f64.ln() + 0.8f64.ln()) / 2.0;
    assert!(
        (out.loss() - want).abs() < 1e-15,
        "{} vs {want}",
        out.loss()
    );
    let g = out.grad("p");
    assert!(
        (g[0] - 1.0 / 0.7 / 2.0).abs() < 1e-15 && (g[1] + 1.0 / 0.8 / 2.0).abs() < 1e-15,
        "{g}"
    );
}

/// The plan of a spec's f64 evaluator, as `describe` prints it.
fn plan_of(spec: &str) -> String {
    Loss::from_source(spec)
        .unwrap()
        .compile::<f64>()
        .unwrap()
        .describe()
}

#[test]
fn a_reciprocal_becomes_a_division_only_where_that_saves_work() {
    // Dice divides every row by `sum(y) + sum(p)`: its reciprocal is taken
    // once per chunk and every row multiplies by it.
    let plan = Loss::from_file("examples/dice.loss")
        .unwrap()
        .compile::<f64>()
        .unwrap()
        .describe();
    let rows: Vec<&str> = plan.lines().filter(|l| l.contains(";rows]")).collect();
    assert!(rows.iter().all(|l| !l.contains(" Div ")), "{plan}");
    assert_eq!(plan.matches(" Recip ").count(), 1, "{plan}");
    // A reciprocal read twice stays shared: one division for `a/d` and
    // `b/d`.
    let spec = "loss t\ntask regression\ndata a : real\ndata b : real\npred d : real (0, inf)\nminimize mean(a / d + b * b / d)\n";
    let plan = plan_of(spec);
    assert_eq!(
        plan.matches(" Div ").count() + plan.matches(" Recip ").count(),
        1,
        "{plan}"
    );
    // A reciprocal per row, read once per component inside a loop, stays
    // outside it: one reciprocal per row and a multiply per component. (The
    // `exp` keeps the simplifier from taking `1/d` out of the sum, and `d`
    // is data so that no gradient reads `1/d` a second time.)
    let spec = "loss t\ntask regression\ndata a : vector [D]\ndata d : real (0, inf)\npred z : real\nminimize mean(z * sum[k](exp(a[k] / d)))\n";
    let plan = plan_of(spec);
    let inner: Vec<&str> = plan.lines().filter(|l| l.contains("[L")).collect();
    assert!(inner.iter().any(|l| l.contains(" Mul ")), "{plan}");
    assert!(
        inner
            .iter()
            .all(|l| !l.contains(" Div ") && !l.contains(" Recip ")),
        "{plan}"
    );
    assert!(plan.contains(" Recip ") || plan.contains(" Div "), "{plan}");
}

#[test]
fn a_constant_scale_is_distributed_only_where_no_digits_are_lost() {
    // `0.3·(1 - p)` as `0.3 - 0.3·p` would round `0.3·p` before the
    // difference, losing all but a few digits of `1 - p` for `p` near 1.
    let spec = "loss t\ntask regression\npred p : prob\nminimize mean(-log(0.3 * (1 - p)))\n";
    let plan = plan_of(spec);
    assert!(plan.contains("Sub "), "{plan}");
    let ev = Loss::from_source(spec).unwrap().compile::<f64>().unwrap();
    let p = ndarray::array![1.0 - 1e-9, 1.0 - 3e-13];
    let out = ev
        .eval(&Inputs::new().with("p", p.view().into_dyn()))
        .unwrap();
    let want = -((0.3 * (1.0 - p[0])).ln() + (0.3 * (1.0 - p[1])).ln()) / 2.0;
    assert!(
        ((out.loss() - want) / want).abs() < 1e-14,
        "{} vs {want}",
        out.loss()
    );
    // An inner product that already rounds is distributed: `2·(0.5 + 0.1·s)`
    // and `1 + 0.2·s` are one register, computed once.
    let spec = "loss t\ntask regression\ndata s : real\npred p : prob\nminimize mean(2 * (0.5 + 0.1 * s) * p + (1 + 0.2 * s) * p * p)\n";
    let plan = plan_of(spec);
    let s = plan
        .lines()
        .find(|l| l.ends_with("= load s row Cur comp None"))
        .and_then(|l| l.split_whitespace().next())
        .unwrap();
    // `s` is read twice: once for the shared weight, once for the
    // gradient's `2 + 0.4·s`.
    let reads = plan
        .lines()
        .filter(|l| l.contains(s) && !l.trim_start().starts_with(s))
        .count();
    assert_eq!(reads, 2, "{plan}");
}
