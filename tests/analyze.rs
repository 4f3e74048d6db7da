//! Step 3: the property table of every example, and `expect` checking.

use lossc::Loss;

fn examples() -> Vec<std::path::PathBuf> {
    let mut v: Vec<_> = std::fs::read_dir("examples")
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "loss"))
        .collect();
    v.sort();
    v
}

#[test]
fn the_analysis_of_every_example() {
    for path in examples() {
        let stem = path.file_stem().unwrap().to_string_lossy().into_owned();
        let loss = Loss::from_file(&path).unwrap();
        let a = loss.analyze().unwrap();
        insta::assert_snapshot!(format!("analyze_{stem}"), a.text());
        // Every example states what the analysis finds.
        loss.check_expects(&a)
            .unwrap_or_else(|e| panic!("{stem}: {}", e.render(lossc::diag::Color::Never)));
    }
}

/// The verdict for one property of one pred.
fn verdict(spec: &str, pred: &str, property: &str) -> (String, Option<bool>) {
    let a = Loss::from_file(format!("examples/{spec}.loss"))
        .unwrap()
        .analyze()
        .unwrap();
    let p = a.preds.iter().find(|p| p.pred == pred).unwrap();
    let f = p.finding(property).unwrap();
    (f.verdict.clone(), f.holds)
}

#[test]
fn the_standard_losses_agree_with_the_textbook() {
    use lossc::sema::Estimand;
    let est = |spec: &str| {
        let a = Loss::from_file(format!("examples/{spec}.loss"))
            .unwrap()
            .analyze()
            .unwrap();
        a.preds[0].estimand
    };
    // MSE: differentiable, convex, gradient unbounded, mean, Gaussian.
    assert_eq!(verdict("mse", "yhat", "differentiable").1, Some(true));
    assert_eq!(verdict("mse", "yhat", "convex").1, Some(true));
    assert_eq!(
        verdict("mse", "yhat", "gradient for large errors").0,
        "grows linearly"
    );
    assert_eq!(est("mse"), Some(Estimand::Mean));
    assert_eq!(verdict("mse", "yhat", "noise model").0, "Gaussian");
    // MAE: kink at 0, convex, constant gradient magnitude, median, Laplace.
    let (v, h) = verdict("mae", "yhat", "differentiable");
    assert_eq!(h, Some(false), "{v}");
    assert_eq!(verdict("mae", "yhat", "convex").1, Some(true));
    assert!(
        verdict("mae", "yhat", "gradient near optimum")
            .0
            .starts_with("constant magnitude")
    );
    assert_eq!(est("mae"), Some(Estimand::Median));
    assert_eq!(verdict("mae", "yhat", "noise model").0, "Laplace");
    // Huber: differentiable, convex, gradient bounded by delta (1).
    assert_eq!(verdict("huber", "yhat", "differentiable").1, Some(true));
    assert_eq!(verdict("huber", "yhat", "convex").1, Some(true));
    assert_eq!(
        verdict("huber", "yhat", "gradient for large errors").0,
        "bounded by 1"
    );
    // BCE on logits: convex, calibrated, finite.
    assert_eq!(verdict("bce_logits", "z", "convex").1, Some(true));
    assert_eq!(verdict("bce_logits", "z", "calibrated").1, Some(true));
    assert_eq!(verdict("bce_logits", "z", "finite").1, Some(true));
    // BCE on probabilities: flagged for its logarithm at the edge.
    assert_eq!(verdict("bce", "p", "finite").1, Some(false));
    // Hinge: kink at the margin, zero gradient beyond it, not calibrated.
    let (v, h) = verdict("hinge", "s", "differentiable");
    assert!(h == Some(false) && v.contains("kink"), "{v}");
    assert_eq!(
        verdict("hinge", "s", "gradient near optimum").0,
        "zero beyond the margin"
    );
    assert_eq!(verdict("hinge", "s", "calibrated").1, Some(false));
    // Focal: not calibrated, and down-weighting easy examples.
    assert_eq!(verdict("focal_logits", "z", "calibrated").1, Some(false));
    assert_eq!(
        verdict("focal_logits", "z", "easy examples").0,
        "down-weighted"
    );
    assert_eq!(verdict("bce_logits", "z", "easy examples").0, "as in BCE");
    // Quantile(0.9) estimates the 0.9-quantile.
    assert_eq!(est("quantile"), Some(Estimand::Quantile(0.9)));
    // Class-weighted BCE: not calibrated, with the odds-ratio map.
    let (v, h) = verdict("moderation", "z", "calibrated");
    assert_eq!(h, Some(false));
    assert!(v.contains("w₁/w₀ = 20"), "{v}");
}

#[test]
fn a_failed_expectation_names_the_property_verdict_and_evidence() {
    let spec = "loss wrong\ntask regression\ndata y : real\npred yhat : real\nminimize mean(abs(y - yhat))\nexpect differentiable\nexpect estimand = mean\n";
    let loss = Loss::from_source(spec).unwrap();
    let a = loss.analyze().unwrap();
    let e = loss
        .check_expects(&a)
        .unwrap_err()
        .render(lossc::diag::Color::Never);
    insta::assert_snapshot!(e, @"
    error[E0080]: `expect differentiable` does not hold for pred `yhat`
      ┌─ <source>:6:1
      │
    6 │ expect differentiable
      │ ^^^^^^^^^^^^^^^^^^^^^ the analysis finds: no: 1 kink
      │
      = hint: evidence: where y - yhat = 0 (at y = 0, yhat = 0: slope -1 | 1)
      = hint: fix the loss, or state what it does (`lossc analyze` prints the full table)

    error[E0080]: `expect estimand = mean` does not hold for pred `yhat`
      ┌─ <source>:7:1
      │
    7 │ expect estimand = mean
      │ ^^^^^^^^^^^^^^^^^^^^^^ the analysis finds: median
      │
      = hint: evidence: log-normal: minimiser 2, mean 2.3172, median 2, share below 0.505; exponential: minimiser 1.6931, mean 1.9966, median 1.6931, share below 0.505; log-normal x4, wider: minimiser 5, mean 12.6852, median 5, share below 0.505
      = hint: fix the loss, or state what it does (`lossc analyze` prints the full table)
    ");
}
