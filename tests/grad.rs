//! Derivation end to end: the textbook gradients, finite-difference checks
//! of every example, printed derivatives read back in, and snapshots of
//! `lossc grad` in every format.

use lossc::Loss;
use lossc::grad::{Batch, Derivation, Format, ReportOptions, Rng, random_batch};
use lossc::ir::IdxRange;
use lossc::ir::eval::{eval_at, eval_with};
use lossc::print::Style;

fn derive(src: &str) -> (Loss, Derivation) {
    let loss = Loss::from_source(src).unwrap_or_else(|e| panic!("{e}"));
    let d = loss.derive().unwrap_or_else(|e| panic!("{e}"));
    (loss, d)
}

fn gradient_text(src: &str) -> String {
    let (_, d) = derive(src);
    d.print(d.preds[0].per_sample, Style::Text)
}

fn examples() -> Vec<std::path::PathBuf> {
    let mut out: Vec<_> = std::fs::read_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/examples"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "loss"))
        .collect();
    out.sort();
    out
}

#[test]
fn textbook_gradients_in_their_simplest_form() {
    let cases = [
        (
            "data y : label {0, 1}\npred z : logit\nminimize mean(bce_logits(y, z))",
            "sigmoid(z) - y",
        ),
        (
            "data y : onehot [C]\npred z : vector [C]\nminimize mean(cce_logits(y, z))",
            "softmax(z)[k] - y[k]",
        ),
        (
            "data y : real\npred yhat : real\nminimize mean(mse(y, yhat))",
            "-2 * (y - yhat)",
        ),
        (
            "data y : real\npred yhat : real\nminimize mean(mae(y, yhat))",
            "-sign(y - yhat)",
        ),
        (
            "data y : label {-1, 1}\npred s : real\nminimize mean(hinge(y, s))",
            "if y * s < 1 then -y else 0",
        ),
        (
            "data y : real\npred yhat : real\nparam delta = 1\nminimize mean(huber(y, yhat, delta))",
            "if abs(y - yhat) <= delta then yhat - y else -delta * sign(y - yhat)",
        ),
        (
            "data y : label {0, 1}\npred p : prob\nminimize mean(bce(y, p))",
            "(p - y) / (p * (1 - p))",
        ),
        (
            "data y : real\npred yhat : real\nparam tau = 0.9 in (0, 1)\nminimize mean(quantile(y, yhat, tau))",
            "if y < yhat then 1 - tau else -tau",
        ),
        (
            "data y : multihot [L]\npred z : vector [L]\nminimize mean(sum[c](bce_logits(y[c], z[c])))",
            "sigmoid(z[k]) - y[k]",
        ),
        (
            "data y : real\npred yhat : real\nminimize mean(log_cosh(y, yhat))",
            "-tanh(y - yhat)",
        ),
    ];
    for (body, expected) in cases {
        let src = format!("loss t\ntask regression\n{body}\n");
        assert_eq!(gradient_text(&src), expected, "for\n{body}");
    }
}

#[test]
fn the_reduction_factor_is_stated_separately() {
    let (_, d) =
        derive("loss t\ntask regression\ndata y : real\npred f : real\nminimize mean(mse(y, f))\n");
    assert_eq!(d.factor.text(), "1/n");
    let (_, d) =
        derive("loss t\ntask regression\ndata y : real\npred f : real\nminimize sum(mse(y, f))\n");
    assert_eq!(d.factor.text(), "1");
}

fn gradcheck(path: &std::path::Path, seed: u64) {
    let loss = Loss::from_file(path).unwrap();
    let d = loss.derive().unwrap_or_else(|e| panic!("{e}"));
    let batch = random_batch(loss.checked(), 12, &mut Rng::new(seed));
    for r in d.gradcheck(&batch) {
        assert!(
            r.worst <= 1e-6,
            "{}: {} relative error {:e} at row {} {:?} (symbolic {}, numeric {})",
            path.display(),
            r.pred,
            r.worst,
            r.row,
            r.component,
            r.symbolic,
            r.numeric
        );
    }
}

#[test]
fn every_example_matches_finite_differences() {
    for path in examples() {
        for seed in 0..3 {
            gradcheck(&path, seed);
        }
    }
}

/// Evaluates the sample reductions in `reds` over the batch.
fn reduce_all(g: &lossc::ir::Graph, reds: &[lossc::ir::lower::Reduction], batch: &mut Batch) {
    for r in reds {
        let total: f64 = (0..batch.rows)
            .map(|row| eval_at(g, r.body, batch, row))
            .sum();
        let v = match r.kind {
            lossc::ir::lower::SampleReduction::Mean => total / batch.rows as f64,
            lossc::ir::lower::SampleReduction::Sum => total,
        };
        batch.reduced.insert(r.name.clone(), v);
    }
}

fn close(a: f64, b: f64) -> bool {
    (a - b).abs() <= 1e-9 * a.abs().max(b.abs()).max(1.0) || (a.is_nan() && b.is_nan())
}

#[test]
fn printed_derivatives_parse_back_and_agree_with_the_derived_ones() {
    for path in examples() {
        let loss = Loss::from_file(&path).unwrap();
        let d = loss.derive().unwrap();
        let mut batch = random_batch(loss.checked(), 6, &mut Rng::new(7));
        let mut g = d.graph.clone();
        reduce_all(&d.graph, &d.objective.reductions, &mut batch);
        for p in &d.preds {
            let text = d.print(p.per_sample, Style::Text);
            let expr = lossc::parse::parse_expr(&text)
                .unwrap_or_else(|e| panic!("{}: `{text}` does not parse: {e:?}", path.display()));
            let pred = loss
                .checked()
                .preds
                .iter()
                .find(|v| v.name == p.pred)
                .unwrap();
            let indices: Vec<(&str, IdxRange)> = match (&p.component, &pred.shape) {
                (Some(k), lossc::sema::types::Shape::Vector(s)) => {
                    vec![(k.as_str(), IdxRange::Feature(s.clone()))]
                }
                _ => Vec::new(),
            };
            let (back, reds) =
                lossc::ir::lower::lower_expr(loss.checked(), &mut g, &expr, &indices)
                    .unwrap_or_else(|e| panic!("{}: `{text}` does not lower: {e}", path.display()));
            reduce_all(&g, &reds, &mut batch);
            // One component for a scalar pred, C for a vector one.
            let width = batch.values[&p.pred][0].len();
            for row in 0..batch.rows {
                for c in 0..width {
                    let bind: Vec<(&str, usize)> =
                        p.component.iter().map(|k| (k.as_str(), c)).collect();
                    let derived = eval_with(&g, p.per_sample, &batch, row, &bind);
                    let raw = eval_with(&g, p.raw, &batch, row, &bind);
                    let reread = eval_with(&g, back, &batch, row, &bind);
                    assert!(
                        close(derived, reread),
                        "{}: printed `{text}` gives {reread}, derived {derived}",
                        path.display()
                    );
                    assert!(
                        close(derived, raw),
                        "{}: simplified {derived} vs unsimplified {raw}",
                        path.display()
                    );
                }
            }
        }
    }
}

#[test]
fn grad_reports_of_every_example() {
    insta::glob!(
        concat!(env!("CARGO_MANIFEST_DIR"), "/examples"),
        "*.loss",
        |path| {
            let loss = Loss::from_file(path).unwrap();
            let d = loss.derive().unwrap();
            let c = loss.checked();
            let all = ReportOptions {
                hessian: true,
                explain: false,
            };
            let mut out = String::new();
            for (name, format) in [
                ("text", Format::Text),
                ("unicode", Format::Unicode),
                ("latex", Format::Latex),
                ("json", Format::Json),
            ] {
                out.push_str(&format!("===== {name}\n"));
                out.push_str(&d.report(c, format, all));
            }
            out.push_str("===== explain\n");
            out.push_str(&d.report(
                c,
                Format::Text,
                ReportOptions {
                    hessian: false,
                    explain: true,
                },
            ));
            insta::assert_snapshot!(out);
        }
    );
}

/// Specs beyond the examples that exercise the index rules: a term constant
/// in `c` inside `sum[c]` (label smoothing), filtered max over classes (the
/// multiclass hinge), feature means and mins, a one-hot class target, a
/// constant-in-c sum, and a nested composition.
#[test]
fn index_rules_match_finite_differences() {
    let specs = [
        "data y : onehot [C]\npred z : vector [C]\nparam eps = 0.1 in [0, 1]\nminimize mean((1 - eps) * cce_logits(y, z) - eps * mean[c](z[c] - logsumexp(z)))",
        "data y : class [C]\npred z : vector [C]\nminimize mean(max(0, 1 + max[c: c != y](z[c]) - z[y]))",
        "data y : class [C]\npred z : vector [C]\nminimize mean(min[c](z[c]^2) + sum[c](0 * z[c] + 1) * z[y])",
        "data y : class [C]\npred z : vector [C]\nminimize mean(-log(softmax(z)[y]) + sum[c](onehot(y, C)[c] * z[c]^2))",
        "data y : real\npred p : real\nlet u1 = sigmoid(p * y) / (1 + p^2) + softplus(p) - p * y\nlet u2 = sigmoid(u1 * p) / (1 + u1^2) + softplus(u1) - u1 * y\nminimize mean(u2)",
        "data q : real\npred s : real\nminimize mean(logsumexp[j: q@j == q](s@j) - s)",
        // A def reading its scalar parameter in another row.
        "data rel : real [0, 4]\npred s : real\ndef pair(u) = sum[j: rel@j < rel](max(0, 1 - (u - u@j)))\nminimize mean(pair(s))",
        // Overloads chosen by the argument bound to the first parameter, here by name.
        "data y : real\npred z : vector [3]\ndef g(a : real, b : real) = a * b\ndef g(a : vector [K], b : real) = sum[k](a[k]) * b\nminimize mean(g(b = y, a = z))",
        // A user def replacing a standard loss leaves the other standard losses alone.
        "data y : label {0, 1}\npred z : logit\ndef bce(y, p) = (y - p)^2\nminimize mean(bce_logits(y, z) + bce(y, z))",
    ];
    for body in specs {
        let src = format!("loss t\ntask multiclass\n{body}\n");
        let loss = Loss::from_source(src.as_str()).unwrap_or_else(|e| panic!("{e}"));
        let d = loss.derive().unwrap_or_else(|e| panic!("{e}"));
        for seed in 0..3 {
            let batch = random_batch(loss.checked(), 10, &mut Rng::new(seed));
            for r in d.gradcheck(&batch) {
                assert!(
                    r.worst <= 1e-6,
                    "{body}: {} error {:e} (symbolic {}, numeric {})",
                    r.pred,
                    r.worst,
                    r.symbolic,
                    r.numeric
                );
            }
        }
    }
}

#[test]
fn an_objective_mixing_mean_and_sum_is_a_located_error() {
    let loss = Loss::from_named_source(
        "mix.loss",
        "loss t\ntask regression\ndata y : real\npred f : real\nminimize mean(mse(y, f)) + sum(mae(y, f))\n",
    )
    .unwrap();
    let e = loss.derive().unwrap_err();
    insta::assert_snapshot!(e.render(lossc::Color::Never), @"
    error[E0090]: cannot differentiate this spec: an objective mixing mean(...) and sum(...) is not supported by differentiation yet
      ┌─ mix.loss:5:1
      │
    5 │ minimize mean(mse(y, f)) + sum(mae(y, f))
      │ ^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^ not supported by the derivation yet
      │
      = hint: use one kind of sample reduction: a sum is n times a mean
    ");
}

/// The objective the IR computes, against formulas written by hand in
/// Rust on the same data: gradcheck compares the IR with itself, so a
/// lowering mistake that changes value and gradient alike needs this check.
#[test]
fn objective_values_match_hand_written_formulas() {
    let value = |src: &str, seed: u64| {
        let loss = Loss::from_source(src).unwrap_or_else(|e| panic!("{e}"));
        let d = loss.derive().unwrap();
        let batch = random_batch(loss.checked(), 9, &mut Rng::new(seed));
        (d.objective_value(&batch), batch)
    };
    let col = |b: &Batch, name: &str| -> Vec<f64> { b.values[name].iter().map(|r| r[0]).collect() };
    let softplus = |x: f64| x.max(0.0) + (-x.abs()).exp().ln_1p();
    for seed in 0..3 {
        // Binary cross-entropy on logits.
        let (v, b) = value(
            "loss t\ntask binary\ndata y : label {0, 1}\npred z : logit\nminimize mean(bce_logits(y, z))\n",
            seed,
        );
        let (y, z) = (col(&b, "y"), col(&b, "z"));
        let expected: f64 = y
            .iter()
            .zip(&z)
            .map(|(y, z)| y * softplus(-z) + (1.0 - y) * softplus(*z))
            .sum::<f64>()
            / 9.0;
        assert!((v - expected).abs() < 1e-12, "bce_logits {v} vs {expected}");

        // Cross-entropy on logits with a class target.
        let (v, b) = value(
            "loss t\ntask multiclass\ndata y : class [C]\npred z : vector [C]\nminimize mean(cce_logits(y, z))\n",
            seed,
        );
        let mut expected = 0.0;
        for (yr, zr) in b.values["y"].iter().zip(&b.values["z"]) {
            let m = zr.iter().copied().fold(f64::NEG_INFINITY, f64::max);
            let lse = m + zr.iter().map(|x| (x - m).exp()).sum::<f64>().ln();
            expected += lse - zr[yr[0] as usize];
        }
        expected /= 9.0;
        assert!((v - expected).abs() < 1e-12, "cce_logits {v} vs {expected}");

        // Pairwise hinge within a query, written inline and through a def
        // that reads its argument in another row.
        let inline = "loss t\ntask ranking\ndata q : real\ndata rel : real [0, 4]\npred s : real\nminimize mean(sum[j: q@j == q and rel@j < rel](max(0, 1 - (s - s@j))))\n";
        let via_def = "loss t\ntask ranking\ndata q : real\ndata rel : real [0, 4]\npred s : real\ndef pair(u) = sum[j: q@j == q and rel@j < rel](max(0, 1 - (u - u@j)))\nminimize mean(pair(s))\n";
        for src in [inline, via_def] {
            let (v, b) = value(src, seed);
            let (q, rel, s) = (col(&b, "q"), col(&b, "rel"), col(&b, "s"));
            let mut expected = 0.0;
            for i in 0..9 {
                for j in 0..9 {
                    if q[j] == q[i] && rel[j] < rel[i] {
                        expected += (1.0 - (s[i] - s[j])).max(0.0);
                    }
                }
            }
            expected /= 9.0;
            assert!(
                (v - expected).abs() < 1e-12,
                "pairwise {v} vs {expected} for\n{src}"
            );
        }
    }
}
