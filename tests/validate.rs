//! Step 4, `lossc validate`: every built-in scenario reproduces its lesson
//! with a margin, every model and optimiser trains, results are
//! deterministic, and every kind of bad data gets a located error.

use lossc::Loss;
use lossc::validate::{Candidate, Options, Table, ValidateError, Validation, scenario};
use std::process::{Command, Output};

fn run_scenario(name: &str) -> Validation {
    let s = scenario::scenario(name, 0).expect("a built-in scenario");
    let v = s.run().expect("the scenario trains");
    eprintln!("{}", v.table());
    // The README shows each scenario's table as the command prints it.
    let readme =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).unwrap();
    let shown = format!("$ lossc validate --scenario {name}\n{}```", v.table());
    assert!(
        readme.contains(&shown),
        "README.md is out of date for `{name}`; it should show:\n{shown}"
    );
    v
}

fn val(v: &Validation, label: &str, col: &str) -> f64 {
    v.value(label, col)
        .unwrap_or_else(|| panic!("no {col} for {label}:\n{}", v.table()))
}

#[test]
fn moderation_plain_bce_is_accurate_but_misses_the_violations() {
    let v = run_scenario("moderation");
    assert!(val(&v, "bce", "accuracy") > 0.99, "{}", v.table());
    assert!(val(&v, "bce", "recall") < 0.2, "{}", v.table());
    assert!(
        val(&v, "weighted bce (w=20)", "recall") > 0.6,
        "{}",
        v.table()
    );
    assert!(
        val(&v, "focal (alpha=0.99)", "recall") > 0.6,
        "{}",
        v.table()
    );
    // The weighted loss also lowers the expected cost of its decisions at 0.5.
    assert!(val(&v, "weighted bce (w=20)", "cost@0.5") < 0.8 * val(&v, "bce", "cost@0.5"));
    // ... but is no longer calibrated; plain BCE is.
    assert!(val(&v, "bce", "ECE") < 0.01 && val(&v, "weighted bce (w=20)", "ECE") > 0.02);
    let c = v.conclusion.as_deref().unwrap();
    assert!(
        c.starts_with("plain BCE is 99.5% accurate but recalls 10% of violations"),
        "{c}"
    );
}

#[test]
fn xray_severity_weighting_misses_fewer_severe_cases() {
    let v = run_scenario("xray");
    let missed = |l: &str| val(&v, l, "missed[s>=7]");
    assert!(
        missed("severity-weighted (alpha=1)") < 0.7 * missed("class-weighted (alpha=0)"),
        "{}",
        v.table()
    );
    assert!(
        missed("class-weighted (alpha=0)") < 0.5 * missed("bce"),
        "{}",
        v.table()
    );
    assert!(val(&v, "severity-weighted (alpha=1)", "recall[s>=7]") > 0.7);
}

#[test]
fn houses_mse_fits_the_regular_houses_badly() {
    let v = run_scenario("houses");
    let bulk = |l: &str| val(&v, l, "bulk MAE");
    for robust in [
        "huber (delta=50K)",
        "mae",
        "mse on log-price",
        "huber on log-price",
    ] {
        assert!(bulk(robust) < 0.6 * bulk("mse"), "{robust}\n{}", v.table());
    }
    // The predictions are read in price units: a log-price model's errors
    // are of the same size as a price model's, not of log size.
    assert!(bulk("mse on log-price") > 1000.0 && bulk("mse on log-price") < 100_000.0);
}

#[test]
fn multilabel_softmax_predicts_one_label_sigmoid_the_right_number() {
    let v = run_scenario("multilabel");
    let truth = val(&v, "sigmoid + bce", "true labels/example");
    assert!((3.9..=4.1).contains(&truth));
    assert!(
        (val(&v, "softmax + cce", "labels/example") - 1.0).abs() < 0.05,
        "{}",
        v.table()
    );
    assert!(
        (val(&v, "sigmoid + bce", "labels/example") - truth).abs() < 0.5,
        "{}",
        v.table()
    );
    assert!(val(&v, "sigmoid + bce", "micro-F1") > val(&v, "softmax + cce", "micro-F1") + 0.3);
}

#[test]
fn ranking_pairwise_losses_beat_mse_on_ndcg() {
    let v = run_scenario("ranking");
    let ndcg = |l: &str| val(&v, l, "NDCG@10");
    assert!(
        ndcg("pairwise hinge") > ndcg("mse on relevance") + 0.1,
        "{}",
        v.table()
    );
    assert!(
        ndcg("ranknet") > ndcg("mse on relevance") + 0.1,
        "{}",
        v.table()
    );
}

#[test]
fn unknown_scenarios_list_the_known_ones() {
    let Err(e) = scenario::scenario("fraud", 0) else {
        panic!("no such scenario")
    };
    assert_eq!(e.to_string(), "unknown scenario `fraud`");
    assert_eq!(
        e.hint(),
        Some("the scenarios are: moderation, xray, houses, multilabel, ranking")
    );
}

// ---- user data -------------------------------------------------------

fn scratch(name: &str, contents: &str) -> String {
    let dir = std::env::temp_dir().join(format!("lossc-validate-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(name);
    std::fs::write(&path, contents).unwrap();
    path.to_string_lossy().into_owned()
}

/// A deterministic binary data set: `clicked` depends on `age` and `visits`.
fn clicks_csv(rows: usize) -> String {
    let mut rng = lossc::grad::Rng::new(3);
    let mut s = String::from("id,clicked,age,visits,comment\n");
    for i in 0..rows {
        let (a, v) = (rng.normal(), rng.normal());
        let p = 1.0 / (1.0 + (-(2.0 * a - v)).exp());
        let y = u8::from(rng.uniform() < p);
        s.push_str(&format!("u{i},{y},{a:.4},{v:.4},free text\n"));
    }
    s
}

fn bce() -> Candidate {
    Candidate {
        label: "bce_logits".into(),
        loss: Loss::from_file(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/examples/bce_logits.loss"
        ))
        .unwrap(),
    }
}

fn click_options() -> Options {
    Options {
        features: vec!["age".into(), "visits".into()],
        map: [("y".to_string(), "clicked".to_string())].into(),
        ..Options::default()
    }
}

#[test]
fn a_csv_trains_with_mapped_columns_and_ignores_text_columns() {
    let path = scratch("clicks.csv", &clicks_csv(600));
    let table = Table::read(&path).unwrap();
    let v = lossc::validate::validate(&[bce()], &table, &click_options()).unwrap();
    assert_eq!((v.train_rows, v.test_rows), (420, 180));
    assert!(val(&v, "bce_logits", "ROC-AUC") > 0.8, "{}", v.table());
    assert!(val(&v, "bce_logits", "ECE") < 0.1, "{}", v.table());
    // Same seed, same everything.
    let again = lossc::validate::validate(&[bce()], &table, &click_options()).unwrap();
    assert_eq!(v.json(), again.json());
    // Another seed, another split.
    let other = lossc::validate::validate(
        &[bce()],
        &table,
        &Options {
            seed: 9,
            ..click_options()
        },
    )
    .unwrap();
    assert_ne!(v.json(), other.json());
}

#[test]
fn the_split_is_stratified() {
    // 10% positives: both sides of the split keep the rate (to a row).
    let mut s = String::from("y,x\n");
    for i in 0..200 {
        s.push_str(&format!("{},{}\n", u8::from(i % 10 == 0), i % 7));
    }
    let table = Table::read(scratch("strat.csv", &s)).unwrap();
    let opts = Options {
        features: vec!["x".into()],
        ..Options::default()
    };
    let v = lossc::validate::validate(&[bce()], &table, &opts).unwrap();
    assert!(
        v.notes
            .iter()
            .any(|n| n == "test: 60 rows, 6 positive (1); decisions at p >= 0.5"),
        "{:?}",
        v.notes
    );
}

#[test]
fn an_mlp_learns_what_a_linear_model_cannot() {
    // XOR of the signs of two features.
    let mut rng = lossc::grad::Rng::new(5);
    let mut s = String::from("y,a,b\n");
    for _ in 0..800 {
        let (a, b) = (rng.normal(), rng.normal());
        s.push_str(&format!("{},{a},{b}\n", u8::from((a > 0.0) != (b > 0.0))));
    }
    let table = Table::read(scratch("xor.csv", &s)).unwrap();
    let opts = Options {
        features: vec!["a".into(), "b".into()],
        ..Options::default()
    };
    let linear = lossc::validate::validate(&[bce()], &table, &opts).unwrap();
    let mlp = lossc::validate::validate(
        &[bce()],
        &table,
        &Options {
            model: lossc::validate::model::ModelKind::Mlp { hidden: 16 },
            ..opts.clone()
        },
    )
    .unwrap();
    assert!(
        val(&linear, "bce_logits", "accuracy") < 0.65,
        "{}",
        linear.table()
    );
    assert!(val(&mlp, "bce_logits", "accuracy") > 0.9, "{}", mlp.table());
}

#[test]
fn adam_on_mini_batches_reaches_what_lbfgs_reaches() {
    let table = Table::read(scratch("clicks_adam.csv", &clicks_csv(600))).unwrap();
    let lbfgs = lossc::validate::validate(&[bce()], &table, &click_options()).unwrap();
    let adam = lossc::validate::validate(
        &[bce()],
        &table,
        &Options {
            optimizer: lossc::validate::optim::Optimizer::Adam {
                lr: 0.05,
                batch: Some(64),
            },
            epochs: 200,
            ..click_options()
        },
    )
    .unwrap();
    for col in ["ROC-AUC", "accuracy"] {
        let (a, b) = (
            val(&lbfgs, "bce_logits", col),
            val(&adam, "bce_logits", col),
        );
        assert!((a - b).abs() < 0.02, "{col}: {a} vs {b}");
    }
    // It stopped by its convergence test, before the budget.
    assert!(
        adam.outcomes[0].fit.epochs < 200,
        "{:?}",
        adam.outcomes[0].fit.stop
    );
}

#[test]
fn multiclass_trains_a_linear_softmax() {
    // Three classes around three centres.
    let mut rng = lossc::grad::Rng::new(8);
    let mut s = String::from("y,a,b\n");
    let centres = [(0.0, 2.0), (-2.0, -1.0), (2.0, -1.0)];
    for i in 0..600 {
        let (cx, cy) = centres[i % 3];
        s.push_str(&format!(
            "{},{},{}\n",
            i % 3,
            cx + rng.normal(),
            cy + rng.normal()
        ));
    }
    let table = Table::read(scratch("three.csv", &s)).unwrap();
    let cce = Candidate {
        label: "cce_logits".into(),
        loss: Loss::from_file(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/examples/cce_logits.loss"
        ))
        .unwrap(),
    };
    let opts = Options {
        features: vec!["a".into(), "b".into()],
        ..Options::default()
    };
    let v = lossc::validate::validate(&[cce], &table, &opts).unwrap();
    assert!(val(&v, "cce_logits", "accuracy") > 0.85, "{}", v.table());
    assert!(val(&v, "cce_logits", "log-loss") < 0.45, "{}", v.table());
    assert!(val(&v, "cce_logits", "ECE") < 0.1, "{}", v.table());
}

#[test]
fn embeddings_are_learned_by_a_linear_map_per_tower() {
    // Queries and keys are two noisy linear views of a shared 16-d code (in
    // fewer dimensions, unnormalised dot products cannot rank every true
    // partner first: a longer vector in the same direction wins).
    let mut rng = lossc::grad::Rng::new(11);
    let (n, d) = (600, 16);
    let mut arrays = std::collections::BTreeMap::new();
    let mut q = ndarray::Array2::<f64>::zeros((n, d));
    let mut k = ndarray::Array2::<f64>::zeros((n, d));
    for r in 0..n {
        let code: Vec<f64> = (0..d).map(|_| rng.normal()).collect();
        for c in 0..d {
            q[[r, c]] = code[c] + 0.1 * rng.normal();
            k[[r, c]] = code[(c + 1) % d] - 0.3 * code[c] + 0.1 * rng.normal();
        }
    }
    for c in 0..d {
        arrays.insert(format!("qf{c}"), q.column(c).to_owned().into_dyn());
        arrays.insert(format!("kf{c}"), k.column(c).to_owned().into_dyn());
    }
    let table = Table::from_arrays("pairs", arrays).unwrap();
    let infonce = Candidate {
        label: "infonce".into(),
        loss: Loss::from_file(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/examples/infonce.loss"
        ))
        .unwrap(),
    };
    let opts = Options {
        pred_features: [
            ("q".to_string(), vec!["qf*".to_string()]),
            ("k".to_string(), vec!["kf*".to_string()]),
        ]
        .into(),
        sizes: [("D".to_string(), 16)].into(),
        ..Options::default()
    };
    let v = lossc::validate::validate(&[infonce], &table, &opts).unwrap();
    // Chance is 1/180 for recall@1 and 10/180 for recall@10.
    assert!(val(&v, "infonce", "recall@1") > 0.7, "{}", v.table());
    assert!(val(&v, "infonce", "recall@10") > 0.95, "{}", v.table());
}

#[test]
fn json_and_html_carry_the_table() {
    let table = Table::read(scratch("clicks_report.csv", &clicks_csv(300))).unwrap();
    let v = lossc::validate::validate(&[bce()], &table, &click_options()).unwrap();
    let j = v.json();
    assert!(j.starts_with("{\"task\": \"binary\""), "{j}");
    assert!(j.contains("\"columns\": [\"accuracy\", \"precision\", \"recall\", \"F1\", \"ROC-AUC\", \"PR-AUC\", \"ECE\"]"), "{j}");
    assert!(j.contains("\"stop\": \"converged\""), "{j}");
    let h = v.html("report").unwrap();
    assert_eq!(
        h.matches("<svg").count(),
        3,
        "training, reliability, precision-recall"
    );
    assert!(h.contains("<td>bce_logits</td>"));
}

// ---- bad data ----------------------------------------------------------

fn err(csv: &str, opts: Options) -> ValidateError {
    let path = scratch("bad.csv", csv);
    let r = Table::read(&path).and_then(|t| lossc::validate::validate(&[bce()], &t, &opts));
    let e = r.expect_err("bad data is refused");
    // Messages name the file as `bad.csv` for stable snapshots.
    match e {
        ValidateError::Data { at, reason, hint } => ValidateError::Data {
            at: at.replace(&path, "bad.csv"),
            reason,
            hint,
        },
        other => other,
    }
}

fn show(e: &ValidateError) -> String {
    match e.hint() {
        Some(h) => format!("{e}\nhint: {h}"),
        None => e.to_string(),
    }
}

fn opts_x() -> Options {
    Options {
        features: vec!["x".into()],
        ..Options::default()
    }
}

#[test]
fn bad_data_errors_name_the_file_line_and_column() {
    let e = err(
        "y,x\n0,1\n1,2\n",
        Options {
            features: vec!["x".into(), "size".into()],
            ..Options::default()
        },
    );
    insta::assert_snapshot!(show(&e), @r"
    bad.csv: no column `size` (a feature); the file has: y, x
    hint: name a column `size` (a vector as `size[0]`, `size[1]`, ...), or map another column with --map size=COLUMN
    ");
    let e = err("label,x\n0,1\n1,2\n", opts_x());
    insta::assert_snapshot!(show(&e), @r"
    bad.csv: no column `y` (data `y` : label {0, 1}); the file has: label, x
    hint: name a column `y` (a vector as `y[0]`, `y[1]`, ...), or map another column with --map y=COLUMN
    ");
    let e = err("y,x\n0,1\n1,two\n0,3\n", opts_x());
    insta::assert_snapshot!(show(&e), @"bad.csv:3:2: column `x` (a feature): `two` is not a number");
    let e = err("y,x\n0,1\n1,\n", opts_x());
    insta::assert_snapshot!(show(&e), @r"
    bad.csv:3:2: column `x` (a feature): the cell is empty
    hint: every row needs a number in every column lossc reads
    ");
    let e = err("y,x\n0,1\n1,NaN\n", opts_x());
    insta::assert_snapshot!(show(&e), @r"
    bad.csv:3:2: column `x` (a feature): NaN is not a finite number
    hint: drop or impute missing values before validating
    ");
    let e = err("y,x\n0,1\n1,inf\n", opts_x());
    insta::assert_snapshot!(show(&e), @r"
    bad.csv:3:2: column `x` (a feature): inf is not a finite number
    hint: drop or impute missing values before validating
    ");
    let e = err("y,x\n0,1\n1,2\n2,3\n", opts_x());
    insta::assert_snapshot!(show(&e), @"bad.csv:4:1: column `y` (data `y` : label {0, 1}): 2 is not one of the declared labels {0, 1}");
    let e = err("y,x\n0,1\n0,2\n0,3\n1,4\n", opts_x());
    insta::assert_snapshot!(show(&e), @r"
    bad.csv:5:1: class 1 has 1 row: too few for a stratified split (one to train on, one to test)
    hint: add examples of this class or drop them
    ");
    let e = err("y,x\n0,1\n1,2,3\n", opts_x());
    insta::assert_snapshot!(show(&e), @"bad.csv:3: this row has 3 fields, but the header has 2");
    let e = err("", opts_x());
    insta::assert_snapshot!(show(&e), @"bad.csv:1: the file is empty; lossc needs a header line naming the columns");
}

#[test]
fn bad_files_and_options_are_refused() {
    let Err(e) = Table::read("/nonexistent/data.csv") else {
        panic!()
    };
    assert!(
        e.to_string()
            .starts_with("/nonexistent/data.csv: cannot read it: "),
        "{e}"
    );
    let Err(e) = Table::read(scratch("junk.npz", "not a zip")) else {
        panic!()
    };
    assert!(e.to_string().contains("is not a valid .npz file"), "{e}");
    // A 3-D array is no column.
    let mut arrays = std::collections::BTreeMap::new();
    arrays.insert(
        "x".to_string(),
        ndarray::ArrayD::<f64>::zeros(ndarray::IxDyn(&[2, 2, 2])),
    );
    let e = Table::from_arrays("cube.npz", arrays).unwrap_err();
    assert_eq!(
        e.to_string(),
        "cube.npz: array `x` has shape [2, 2, 2]; a column is one value per row ([n]) or one row per example ([n, C])"
    );
    // No features.
    let e = err("y,x\n0,1\n1,2\n", Options::default());
    insta::assert_snapshot!(show(&e), @r"
    no features: the model needs columns to predict from
    hint: name them with --features COL,COL,...
    ");
    // Candidates of different tasks cannot share a table.
    let table = Table::read(scratch("mixed.csv", "y,x\n0,1\n1,2\n0,1\n1,2\n")).unwrap();
    let mse = Candidate {
        label: "mse".into(),
        loss: Loss::from_file(concat!(env!("CARGO_MANIFEST_DIR"), "/examples/mse.loss")).unwrap(),
    };
    let e = lossc::validate::validate(&[bce(), mse], &table, &opts_x()).unwrap_err();
    assert_eq!(
        e.to_string(),
        "`mse` is a regression loss, but `bce_logits` is binary: candidates must share a task to share a table"
    );
    // An unknown target.
    let e = lossc::validate::validate(
        &[bce()],
        &table,
        &Options {
            target: Some("w".into()),
            ..opts_x()
        },
    )
    .unwrap_err();
    assert_eq!(
        show(&e),
        "--target `w` is not a data input of `bce_logits`\nhint: its data inputs are: y"
    );
    // A target of the wrong kind for the task is refused, not misread.
    let xray = Candidate {
        label: "xray".into(),
        loss: Loss::from_file(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/examples/xray_triage.loss"
        ))
        .unwrap(),
    };
    let t2 = Table::read(scratch("xray_t.csv", "y,s,x\n0,1,1\n1,2,2\n0,1,1\n1,3,2\n")).unwrap();
    let e = lossc::validate::validate(
        &[xray],
        &t2,
        &Options {
            target: Some("s".into()),
            ..opts_x()
        },
    )
    .unwrap_err();
    assert_eq!(
        show(&e),
        "--target `s` is `real [1, 10]`, which a binary task cannot score\nhint: a binary target is a `label` with two values"
    );
}

#[test]
fn npz_errors_name_the_array_and_row() {
    let mut arrays = std::collections::BTreeMap::new();
    arrays.insert(
        "y".to_string(),
        ndarray::arr1(&[0.0, 1.0, 0.5, 1.0]).into_dyn(),
    );
    arrays.insert(
        "x".to_string(),
        ndarray::arr1(&[0.0, 1.0, 2.0, 3.0]).into_dyn(),
    );
    let table = Table::from_arrays("in.npz", arrays).unwrap();
    let e = lossc::validate::validate(&[bce()], &table, &opts_x()).unwrap_err();
    assert_eq!(
        e.to_string(),
        "in.npz: array `y`, row 2: column `y` (data `y` : label {0, 1}): 0.5 is not one of the declared labels {0, 1}"
    );
}

// ---- the command line ---------------------------------------------------

fn lossc(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_lossc"))
        .args(args)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .expect("lossc runs")
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

#[test]
fn cli_validates_a_spec_against_a_baseline_with_json_and_a_report() {
    let data = scratch("cli_clicks.csv", &clicks_csv(400));
    let report = scratch("cli_report.html", "");
    let out = lossc(&[
        "validate",
        "examples/bce_logits.loss",
        "--baseline",
        "examples/focal_logits.loss:gamma=1",
        "--data",
        &data,
        "--features",
        "age,visits",
        "--map",
        "y=clicked",
        "--report",
        &report,
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let table = text(&out.stdout);
    let lines: Vec<&str> = table.lines().collect();
    assert!(
        lines[1].starts_with("spec ") && lines[1].contains("ROC-AUC"),
        "{table}"
    );
    assert!(lines[3].starts_with("bce_logits "), "{table}");
    assert!(lines[4].starts_with("focal_logits gamma=1 "), "{table}");
    let html = std::fs::read_to_string(&report).unwrap();
    assert!(html.contains("<td>focal_logits gamma=1</td>"));
    let json = lossc(&[
        "validate",
        "examples/bce_logits.loss",
        "--data",
        &data,
        "--features",
        "age,visits",
        "--map",
        "y=clicked",
        "--json",
    ]);
    assert_eq!(json.status.code(), Some(0));
    assert!(text(&json.stdout).starts_with("{\"task\": \"binary\""));
}

#[test]
fn cli_runs_a_scenario() {
    let out = lossc(&["validate", "--scenario", "xray", "--json"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let j = text(&out.stdout);
    assert!(
        j.contains("\"conclusion\": \"abnormal X-rays missed where s>=7: plain BCE"),
        "{j}"
    );
}

#[test]
fn cli_errors_exit_one_with_a_hint() {
    let data = scratch("cli_bad.csv", "y,x\n0,1\n1,oops\n");
    let out = lossc(&[
        "validate",
        "examples/bce_logits.loss",
        "--data",
        &data,
        "--features",
        "x",
    ]);
    assert_eq!(out.status.code(), Some(1));
    insta::assert_snapshot!(text(&out.stderr).replace(&data, "bad.csv"), @"error: bad.csv:3:2: column `x` (a feature): `oops` is not a number");
    let out = lossc(&["validate", "--scenario", "fraud"]);
    assert_eq!(out.status.code(), Some(1));
    insta::assert_snapshot!(text(&out.stderr), @r"
    error: unknown scenario `fraud`
      = hint: the scenarios are: moderation, xray, houses, multilabel, ranking
    ");
    let out = lossc(&["validate", "examples/bce_logits.loss"]);
    assert_eq!(out.status.code(), Some(1));
    insta::assert_snapshot!(text(&out.stderr), @r"
    error: no data
      = hint: give --data FILE (.csv or .npz), or use --scenario NAME
    ");
    let out = lossc(&[
        "validate",
        "examples/bce_logits.loss",
        "--data",
        &data,
        "--features",
        "x",
        "--model",
        "forest",
    ]);
    assert_eq!(out.status.code(), Some(1));
    insta::assert_snapshot!(text(&out.stderr), @"error: --model: unknown model `forest`; expected `linear` or `mlp:H` (e.g. mlp:32)");
    let out = lossc(&["validate", "--scenario", "xray", "--data", &data]);
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains("--scenario brings its own data"));
}

#[test]
fn cli_saves_a_scenarios_data_for_other_tools() {
    // CSV: vector columns spread over name[0], name[1], ...; read back by `validate`.
    let csv = scratch("saved_multilabel.csv", "");
    let out = lossc(&["validate", "--scenario", "multilabel", "--save-data", &csv]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert_eq!(text(&out.stderr), format!("wrote {csv} (5000 rows)\n"));
    assert_eq!(
        out.stdout.len(),
        0,
        "no training: the data is written and lossc stops"
    );
    let table = Table::read(&csv).unwrap();
    assert_eq!(table.rows(), 5000);
    let y = table.column("y", "the label").unwrap();
    assert_eq!(y.values.shape()[0], 5000);
    assert!(y.values.shape()[1] > 1 && !y.scalar);
    // NPZ keeps the arrays as they are, and equals the CSV.
    let npz = scratch("saved_multilabel.npz", "");
    let out = lossc(&["validate", "--scenario", "multilabel", "--save-data", &npz]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let from_npz = Table::read(&npz).unwrap().column("y", "the label").unwrap();
    assert_eq!(from_npz.values, y.values);
    // The same seed gives the same rows as the scenario trains on.
    let again = scratch("saved_multilabel_again.csv", "");
    lossc(&[
        "validate",
        "--scenario",
        "multilabel",
        "--save-data",
        &again,
    ]);
    assert_eq!(
        std::fs::read_to_string(&csv).unwrap(),
        std::fs::read_to_string(&again).unwrap()
    );

    let out = lossc(&[
        "validate",
        "--scenario",
        "moderation",
        "--save-data",
        "data.parquet",
    ]);
    assert_eq!(out.status.code(), Some(1));
    insta::assert_snapshot!(text(&out.stderr), @"
    error: cannot tell the format of `data.parquet`
      = hint: name the file .csv or .npz
    ");
    let out = lossc(&[
        "validate",
        "--scenario",
        "moderation",
        "--save-data",
        "/no/such/dir/m.csv",
    ]);
    assert_eq!(out.status.code(), Some(1));
    insta::assert_snapshot!(text(&out.stderr), @"error: cannot write `/no/such/dir/m.csv`: No such file or directory (os error 2)");
    let out = lossc(&["validate", "examples/mse.loss", "--save-data", "m.csv"]);
    assert_eq!(
        out.status.code(),
        Some(2),
        "clap refuses --save-data without --scenario"
    );
    assert!(text(&out.stderr).contains("--scenario <NAME>"));
}
