//! One spec that triggers each lint and one that does not.

use lossc::Loss;
use ndarray::ArrayD;
use std::collections::BTreeMap;

fn codes(loss: &Loss, data: Option<&BTreeMap<String, ArrayD<f64>>>) -> Vec<&'static str> {
    let a = loss.analyze().unwrap();
    loss.lint(&a, data)
        .unwrap()
        .diagnostics
        .iter()
        .map(|d| d.code)
        .collect()
}

fn src(text: &str) -> Loss {
    Loss::from_source(text).unwrap()
}

fn file(name: &str) -> Loss {
    Loss::from_file(format!("examples/{name}.loss")).unwrap()
}

fn column(name: &str, v: Vec<f64>) -> BTreeMap<String, ArrayD<f64>> {
    let n = v.len();
    BTreeMap::from([(
        name.to_string(),
        ArrayD::from_shape_vec(vec![n], v).unwrap(),
    )])
}

#[test]
fn l0001_log_of_a_probability() {
    assert_eq!(codes(&file("bce"), None), ["L0001", "L0001"]);
    assert!(codes(&file("bce_logits"), None).is_empty());
    let loss = file("bce");
    let a = loss.analyze().unwrap();
    let r = loss.lint(&a, None).unwrap().render(lossc::Color::Never);
    insta::assert_snapshot!(r, @"
    warning[L0001]: `log(1 - p)` of a probability that can reach 0
       ┌─ examples/bce.loss:10:1
       │
    10 │ minimize mean(bce(y, p))
       │ ^^^^^^^^^^^^^^^^^^^^^^^^ `1 - p` reaches 0 as the prediction rounds to 1
       │
       = hint: a prediction that rounds to 0 or 1 gives log(0) = -inf: the loss and gradient become inf and NaN in training
       = hint: predict a logit and use the logit form (bce_logits, cce_logits, focal_logits), which lossc evaluates stably

    warning[L0001]: `log(p)` of a probability that can reach 0
       ┌─ examples/bce.loss:10:1
       │
    10 │ minimize mean(bce(y, p))
       │ ^^^^^^^^^^^^^^^^^^^^^^^^ `p` reaches 0 as the prediction rounds to 0
       │
       = hint: a prediction that rounds to 0 or 1 gives log(0) = -inf: the loss and gradient become inf and NaN in training
       = hint: predict a logit and use the logit form (bce_logits, cce_logits, focal_logits), which lossc evaluates stably
    ");
}

#[test]
fn l0002_softmax_in_a_multilabel_task() {
    let bad = "loss m\ntask multilabel\ndata y : class [L]\npred z : vector [L]\nminimize mean(cce_logits(y, z))\n";
    assert_eq!(codes(&src(bad), None), ["L0002"]);
    assert!(codes(&file("multilabel"), None).is_empty());
}

#[test]
fn l0003_pointwise_loss_for_ranking() {
    let bad = "loss r\ntask ranking\ndata rel : real\npred s : real\nminimize mean(mse(rel, s))\n";
    assert_eq!(codes(&src(bad), None), ["L0003"]);
    assert!(codes(&file("pairwise_hinge_ranking"), None).is_empty());
}

#[test]
fn l0004_class_weights_with_expect_calibrated() {
    let bad = "loss w\ntask binary\ndata y : label {0, 1}\npred z : logit\nminimize mean((if y == 1 then 5 else 1) * bce_logits(y, z))\nexpect calibrated\n";
    assert_eq!(codes(&src(bad), None), ["L0004"]);
    assert!(codes(&file("bce_logits"), None).is_empty());
    assert!(
        codes(&file("moderation"), None).is_empty(),
        "expects not calibrated"
    );
}

#[test]
fn l0005_zero_margin() {
    let bad = "loss p\ntask binary\ndata y : label {-1, 1}\npred s : real\nminimize mean(max(0, -y * s))\n";
    assert_eq!(codes(&src(bad), None), ["L0005"]);
    assert!(codes(&file("hinge"), None).is_empty());
    let triplet0 = file("triplet").with_param("margin", 0.0);
    // The margin param's domain excludes 0: the override is refused.
    assert!(triplet0.is_err());
}

#[test]
fn l0006_unbounded_gradient_on_outliers() {
    let mut ys: Vec<f64> = (0..200).map(|i| 100.0 + (i % 17) as f64).collect();
    let clean = column("y", ys.clone());
    ys.extend([5000.0, 8000.0]);
    let dirty = column("y", ys);
    assert_eq!(codes(&file("mse"), Some(&dirty)), ["L0006"]);
    assert!(codes(&file("mse"), Some(&clean)).is_empty());
    assert!(codes(&file("huber"), Some(&dirty)).is_empty());
}

#[test]
fn l0007_plain_loss_on_a_rare_class() {
    let rare = column("y", (0..400).map(|i| (i == 7) as u8 as f64).collect());
    let common = column("y", (0..400).map(|i| (i % 3 == 0) as u8 as f64).collect());
    assert_eq!(codes(&file("bce_logits"), Some(&rare)), ["L0007"]);
    assert!(codes(&file("bce_logits"), Some(&common)).is_empty());
    assert!(
        codes(&file("moderation"), Some(&rare)).is_empty(),
        "weighted"
    );
}

#[test]
fn every_lint_is_documented() {
    let doc = std::fs::read_to_string("docs/lints.md").unwrap();
    for (code, _) in lossc::lint::LINTS {
        assert!(
            doc.contains(&format!("## {code}")),
            "{code} is not in docs/lints.md"
        );
    }
    // And every code the source emits is in the list.
    let src = std::fs::read_to_string("src/lint.rs").unwrap();
    for (i, _) in src.match_indices("\"L0") {
        let code = &src[i + 1..i + 6];
        assert!(lossc::lint::LINTS.iter().any(|(c, _)| *c == code), "{code}");
    }
}
