//! The `lossc` binary end to end: exit codes, what goes to stdout and
//! stderr, and the flags of `lossc check`.

use std::process::{Command, Output};

fn lossc(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_lossc"))
        .args(args)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .env_remove("NO_COLOR")
        .output()
        .expect("lossc runs")
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn scratch(name: &str, contents: &str) -> String {
    // A directory per file: tests run in parallel and two of them may
    // write files of the same name with different contents.
    static NEXT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let dir = std::env::temp_dir().join(format!("lossc-cli-{}/{n}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(name);
    std::fs::write(&path, contents).unwrap();
    path.to_string_lossy().into_owned()
}

#[test]
fn check_prints_a_summary_line_and_exits_zero() {
    let out = lossc(&["check", "examples/xray_triage.loss"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    insta::assert_snapshot!(text(&out.stdout), @"examples/xray_triage.loss: ok · loss xray_triage · task binary · pred p : prob · data y : label {0, 1}, s : real [1, 10] · params alpha = 1");
    assert!(out.stderr.is_empty());
}

#[test]
fn check_takes_many_files_and_reports_each() {
    let out = lossc(&["check", "examples/mse.loss", "examples/cce_logits.loss"]);
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(text(&out.stdout).lines().count(), 2);
}

#[test]
fn check_fails_with_every_diagnostic_and_a_count() {
    let bad = scratch(
        "two_errors.loss",
        "loss x\ntask binary\ndata y : label {0, 1}\npred z : logit\nminimize mean(bce(y, z) + hinge(y, z))\n",
    );
    let out = lossc(&["check", "--color", "never", &bad]);
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    assert!(err.contains("error[E0060]: `bce` expects"), "{err}");
    assert!(err.contains("error[E0060]: `hinge` expects"), "{err}");
    assert!(err.contains("two_errors.loss:5:"), "{err}");
    assert!(err.trim_end().ends_with("2 errors"), "{err}");
    assert!(out.stdout.is_empty());
}

#[test]
fn a_bad_file_among_good_ones_fails_the_run_but_all_are_checked() {
    let bad = scratch(
        "bad_task.loss",
        "loss x\ntask regresion\ndata y : real\npred f : real\nminimize mean(mse(y, f))\n",
    );
    let out = lossc(&[
        "check",
        "--color",
        "never",
        "examples/mse.loss",
        &bad,
        "examples/mae.loss",
    ]);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(text(&out.stdout).lines().count(), 2);
    assert!(text(&out.stderr).contains("did you mean `regression`?"));
}

#[test]
fn warnings_pass_unless_denied() {
    let warn = scratch(
        "unused.loss",
        "loss x\ntask regression\ndata y : real\ndata w : real\npred f : real\nminimize mean(mse(y, f))\n",
    );
    let out = lossc(&["check", "--color", "never", &warn]);
    assert_eq!(out.status.code(), Some(0));
    assert!(text(&out.stderr).contains("warning[W0001]: data `w` is never used"));
    let out = lossc(&["check", "--color", "never", "--deny-warnings", &warn]);
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains("1 warning denied by --deny-warnings"));
}

#[test]
fn missing_files_directories_and_binary_files_are_clean_errors() {
    let out = lossc(&["check", "no/such/file.loss"]);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        text(&out.stderr),
        "error: cannot read `no/such/file.loss`: no such file\n"
    );
    let out = lossc(&["check", "examples"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains("it is a directory"));
    let bin = scratch("binary.loss", "\u{0}\u{1}");
    std::fs::write(&bin, [0xff, 0xfe, 0x00]).unwrap();
    let out = lossc(&["check", &bin]);
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains("is not UTF-8 text"));
}

#[test]
fn an_override_can_replace_a_default_that_would_not_pass() {
    let spec = scratch(
        "override.loss",
        "loss x\ntask binary\ndata y : label {0, 1}\npred z : logit\nparam g = 2 in [0, 5]\nminimize mean(focal_logits(y, z, alpha = g))\n",
    );
    let out = lossc(&["check", "--color", "never", &spec]);
    assert_eq!(out.status.code(), Some(1), "alpha = 2 is outside [0, 1]");
    let out = lossc(&["check", "--color", "never", "--param", "g=0.5", &spec]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
}

#[test]
fn huge_files_are_refused_before_reading() {
    let big = scratch("big.loss", "");
    std::fs::write(&big, vec![b'#'; 5 << 20]).unwrap();
    let out = lossc(&["check", &big]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("a spec may be at most"),
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn param_overrides_are_range_checked() {
    let out = lossc(&[
        "check",
        "--color",
        "never",
        "--param",
        "alpha=3",
        "examples/xray_triage.loss",
    ]);
    assert_eq!(out.status.code(), Some(0));
    assert!(text(&out.stdout).contains("alpha = 3"));
    let out = lossc(&[
        "check",
        "--color",
        "never",
        "--param",
        "alpha=30",
        "examples/xray_triage.loss",
    ]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("the value given with --param is outside [0, 10]"),
        "{}",
        text(&out.stderr)
    );
    let out = lossc(&[
        "check",
        "--color",
        "never",
        "--param",
        "gama=3",
        "examples/focal_logits.loss",
    ]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("did you mean `gamma`?"),
        "{}",
        text(&out.stderr)
    );
    let out = lossc(&["check", "--param", "alpha", "examples/xray_triage.loss"]);
    assert_eq!(
        out.status.code(),
        Some(2),
        "a malformed flag is a usage error"
    );
}

#[test]
fn color_always_colours_and_never_does_not() {
    let bad = scratch("color.loss", "loss x\n");
    let out = lossc(&["check", "--color", "always", &bad]);
    assert!(text(&out.stderr).contains('\u{1b}'));
    let out = lossc(&["check", "--color", "never", &bad]);
    assert!(!text(&out.stderr).contains('\u{1b}'));
}

#[test]
fn help_lists_every_command_and_flag() {
    let out = lossc(&["--help"]);
    assert_eq!(out.status.code(), Some(0));
    let help = text(&out.stdout);
    for word in ["check", "prelude", "--color"] {
        assert!(help.contains(word), "{word} missing from:\n{help}");
    }
    let out = lossc(&["check", "--help"]);
    let help = text(&out.stdout);
    for word in ["--deny-warnings", "--param", "SPEC", "Exits 0"] {
        assert!(help.contains(word), "{word} missing from:\n{help}");
    }
    let out = lossc(&["check"]);
    assert_eq!(out.status.code(), Some(2), "no spec given is a usage error");
}

#[test]
fn prelude_prints_the_standard_losses() {
    let out = lossc(&["prelude"]);
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(text(&out.stdout), lossc::sema::PRELUDE_SOURCE);
}

#[test]
fn grad_prints_each_format_and_fails_cleanly() {
    let out = lossc(&["grad", "examples/bce_logits.loss"]);
    assert_eq!(out.status.code(), Some(0));
    assert!(
        text(&out.stdout).contains("dloss/dz = sigmoid(z) - y"),
        "{}",
        text(&out.stdout)
    );
    let out = lossc(&["grad", "--format", "unicode", "examples/bce_logits.loss"]);
    assert!(
        text(&out.stdout).contains("∂ℓ/∂z = σ(z) − y"),
        "{}",
        text(&out.stdout)
    );
    let out = lossc(&[
        "grad",
        "--format",
        "json",
        "--hessian",
        "examples/bce_logits.loss",
    ]);
    let json = text(&out.stdout);
    assert!(
        json.starts_with('{')
            && json.contains("\"derivative\": \"sigmoid(z) - y\"")
            && json.contains("\"hessian\""),
        "{json}"
    );
    let out = lossc(&["grad", "--color", "never", "no/such.loss"]);
    assert_eq!(out.status.code(), Some(1));
    let out = lossc(&["grad", "--format", "yaml", "examples/bce_logits.loss"]);
    assert_eq!(
        out.status.code(),
        Some(2),
        "an unknown format is a usage error"
    );
}

#[test]
fn gradcheck_passes_on_examples_and_fails_above_the_tolerance() {
    let out = lossc(&[
        "gradcheck",
        "--rows",
        "8",
        "--seed",
        "3",
        "examples/infonce.loss",
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stdout));
    assert!(text(&out.stdout).contains("q: worst relative error"));
    let out = lossc(&["gradcheck", "--tolerance", "0", "examples/mse.loss"]);
    assert_eq!(
        out.status.code(),
        Some(1),
        "a zero tolerance cannot be met by finite differences"
    );
    assert!(text(&out.stdout).contains("FAILED"));
    let out = lossc(&["gradcheck", "--rows", "0", "examples/mse.loss"]);
    assert_eq!(out.status.code(), Some(2), "zero rows is a usage error");
}

/// Writes arrays to an `.npz` in the scratch directory.
fn npz(name: &str, arrays: &[(&str, ndarray::ArrayD<f64>)]) -> String {
    let path = scratch(name, "");
    let mut w = ndarray_npy::NpzWriter::new(std::fs::File::create(&path).unwrap());
    for (n, a) in arrays {
        w.add_array(*n, a).unwrap();
    }
    w.finish().unwrap();
    path
}

fn arr(v: &[f64]) -> ndarray::ArrayD<f64> {
    ndarray::ArrayD::from_shape_vec(ndarray::IxDyn(&[v.len()]), v.to_vec()).unwrap()
}

#[test]
fn eval_prints_the_loss_and_writes_gradients() {
    let input = npz(
        "bce_in.npz",
        &[("y", arr(&[1.0, 0.0])), ("z", arr(&[0.0, 0.0]))],
    );
    let out_path = scratch("bce_out.npz", "");
    let out = lossc(&[
        "eval",
        "examples/bce_logits.loss",
        "--npz",
        &input,
        "--out",
        &out_path,
        "--hessian",
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    insta::assert_snapshot!(text(&out.stdout), @r#"{"loss": 0.6931471805599453}"#);
    let mut r = ndarray_npy::NpzReader::new(std::fs::File::open(&out_path).unwrap()).unwrap();
    let g: ndarray::ArrayD<f64> = r.by_name("z").unwrap();
    assert_eq!(g.as_slice().unwrap(), &[-0.25, 0.25]);
    let h: ndarray::ArrayD<f64> = r.by_name("z_hessian").unwrap();
    assert_eq!(h.as_slice().unwrap(), &[0.125, 0.125]);
}

#[test]
fn eval_reads_integer_classes_and_f32() {
    let path = scratch("cce_int.npz", "");
    let mut w = ndarray_npy::NpzWriter::new(std::fs::File::create(&path).unwrap());
    w.add_array("y", &ndarray::array![0i64, 2]).unwrap();
    w.add_array("z", &ndarray::Array2::<f32>::zeros((2, 3)))
        .unwrap();
    w.finish().unwrap();
    for dtype in ["f32", "f64"] {
        let out = lossc(&[
            "eval",
            "examples/cce_logits.loss",
            "--npz",
            &path,
            "--dtype",
            dtype,
            "--threads",
            "2",
        ]);
        assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
        let v: f64 = text(&out.stdout)
            .trim()
            .trim_start_matches("{\"loss\": ")
            .trim_end_matches('}')
            .parse()
            .unwrap();
        assert!((v - 3f64.ln()).abs() < 1e-6, "{dtype}: {v}");
    }
}

#[test]
fn eval_reads_csv_columns() {
    let csv = scratch("huber.csv", "y,yhat\n1.0, 1.5\n2.0,0.0\n");
    let out_path = scratch("huber_grad.csv", "");
    let out = lossc(&[
        "eval",
        "examples/huber.loss",
        "--csv",
        &csv,
        "--out",
        &out_path,
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    // (0.5²/2 + (2 - 0.5)) / 2
    insta::assert_snapshot!(text(&out.stdout), @r#"{"loss": 0.8125}"#);
    insta::assert_snapshot!(std::fs::read_to_string(&out_path).unwrap(), @r"
    yhat
    0.25
    -0.5
    ");
}

#[test]
fn eval_errors_are_clean_and_exit_one() {
    let cases: Vec<(Vec<String>, &str)> = vec![
        (
            vec!["--npz".into(), npz("missing.npz", &[("y", arr(&[1.0]))])],
            "has no array `z` (for pred `z`); it has: y",
        ),
        (
            vec![
                "--npz".into(),
                npz(
                    "bad_label.npz",
                    &[("y", arr(&[1.0, 3.0])), ("z", arr(&[0.0, 0.0]))],
                ),
            ],
            "error: `y` at row 1 is 3, outside `label {0, 1}` (a label in {0, 1})",
        ),
        (
            vec!["--npz".into(), scratch("not_a_zip.npz", "hello")],
            "is not a valid .npz file",
        ),
        (
            vec!["--npz".into(), "/nonexistent/x.npz".into()],
            "cannot read `/nonexistent/x.npz`: no such file",
        ),
        (
            vec!["--csv".into(), scratch("bad.csv", "y,z\n1,abc\n")],
            "bad.csv:2: column `z`: `abc` is not a number",
        ),
        (
            vec!["--csv".into(), scratch("nocol.csv", "y,w\n1,2\n")],
            "nocol.csv:1: no column `z` (for pred `z`); the header has: y, w",
        ),
    ];
    for (args, want) in cases {
        let mut all = vec![
            "eval".to_string(),
            "--color".into(),
            "never".into(),
            "examples/focal_logits.loss".into(),
        ];
        all.extend(args);
        let refs: Vec<&str> = all.iter().map(String::as_str).collect();
        let out = lossc(&refs);
        assert_eq!(out.status.code(), Some(1), "{all:?}: {}", text(&out.stderr));
        assert!(
            text(&out.stderr).contains(want),
            "{all:?}: {}",
            text(&out.stderr)
        );
        assert!(out.stdout.is_empty());
    }
    // A string array, as NumPy writes `np.array(["a"])`.
    let path = scratch("strings.npz", "");
    let mut zw = zip::ZipWriter::new(std::fs::File::create(&path).unwrap());
    let opts =
        zip::write::SimpleFileOptions::default().compression_method(zip::CompressionMethod::Stored);
    let mut y = Vec::new();
    ndarray_npy::WriteNpyExt::write_npy(&ndarray::array![1.0f64], &mut y).unwrap();
    zw.start_file("y.npy", opts).unwrap();
    std::io::Write::write_all(&mut zw, &y).unwrap();
    zw.start_file("z.npy", opts).unwrap();
    std::io::Write::write_all(&mut zw, &npy_bytes("<U1", b"a\0\0\0")).unwrap();
    zw.finish().unwrap();
    let out = lossc(&["eval", "examples/focal_logits.loss", "--npz", &path]);
    assert_eq!(out.status.code(), Some(1));
    insta::assert_snapshot!(text(&out.stderr).replace(&path, "IN.npz"), @"error: array `z` in `IN.npz` has dtype '<U1'; lossc reads floats, integers and booleans");
    // A vector spec from CSV.
    let csv = scratch("vec.csv", "y,z\n1,2\n");
    let out = lossc(&["eval", "examples/cce_logits.loss", "--csv", &csv]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("use --npz"),
        "{}",
        text(&out.stderr)
    );
}

/// A one-element `.npy` file with the given dtype descriptor and data.
fn npy_bytes(descr: &str, data: &[u8]) -> Vec<u8> {
    let mut header = format!("{{'descr': '{descr}', 'fortran_order': False, 'shape': (1,), }}");
    while (10 + header.len() + 1) % 64 != 0 {
        header.push(' ');
    }
    header.push('\n');
    let mut v = b"\x93NUMPY\x01\x00".to_vec();
    v.extend_from_slice(&(header.len() as u16).to_le_bytes());
    v.extend_from_slice(header.as_bytes());
    v.extend_from_slice(data);
    v
}

#[test]
fn eval_plan_prints_the_program() {
    let out = lossc(&["eval", "examples/bce_logits.loss", "--plan"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(
        text(&out.stdout).starts_with("pass 0:"),
        "{}",
        text(&out.stdout)
    );
}

#[test]
fn codegen_refuses_a_module_name_rust_cannot_use() {
    let out = lossc(&["codegen", "examples/huber.loss", "--module", "fn"]);
    assert_eq!(out.status.code(), Some(1));
    insta::assert_snapshot!(text(&out.stderr), @"error: `fn` is not a Rust module name (letters, digits and `_`, not a keyword)");
    let out = lossc(&["codegen", "examples/huber.loss"]);
    assert_eq!(out.status.code(), Some(0));
    assert!(text(&out.stdout).contains("pub mod huber {"));
}

#[test]
fn analyze_prints_the_table_and_lints_with_data() {
    let out = lossc(&["--color", "never", "analyze", "examples/mse.loss"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let table = text(&out.stdout);
    assert!(table.contains("estimand                   mean"), "{table}");
    let json = lossc(&["analyze", "--json", "examples/hinge.loss"]);
    assert!(text(&json.stdout).starts_with("{\"loss\": \"hinge\""));
    // Outliers in the targets: a lint, fatal only with --deny-warnings.
    let mut csv = String::from("y\n");
    for i in 0..100 {
        csv.push_str(&format!("{}\n", 10 + i % 7));
    }
    csv.push_str("100000\n");
    let data = scratch("outliers.csv", &csv);
    let out = lossc(&[
        "--color",
        "never",
        "analyze",
        "examples/mse.loss",
        "--data",
        &data,
    ]);
    assert_eq!(out.status.code(), Some(0));
    assert!(
        text(&out.stderr).contains("warning[L0006]"),
        "{}",
        text(&out.stderr)
    );
    let out = lossc(&[
        "--color",
        "never",
        "analyze",
        "examples/mse.loss",
        "--data",
        &data,
        "--deny-warnings",
    ]);
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains("1 warning denied by --deny-warnings"));
    // Bad data is a clean error naming the file.
    let bad = scratch("bad.csv", "y\n1\nabc\n");
    let out = lossc(&[
        "--color",
        "never",
        "analyze",
        "examples/mse.loss",
        "--data",
        &bad,
    ]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("bad.csv"),
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn check_fails_when_an_expectation_does_not_hold() {
    let spec = scratch(
        "wrong.loss",
        "loss wrong\ntask regression\ndata y : real\npred f : real\nminimize mean(abs(y - f))\nexpect differentiable\n",
    );
    let out = lossc(&["--color", "never", "check", &spec]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("error[E0080]"),
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn plot_writes_an_svg_and_refuses_what_cannot_share_a_figure() {
    let dir = std::env::temp_dir().join(format!("lossc-plot-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let svg = dir.join("cmp.svg").to_string_lossy().into_owned();
    let out = lossc(&[
        "plot",
        "examples/bce_logits.loss",
        "examples/focal_logits.loss:gamma=5",
        "-o",
        &svg,
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let s = std::fs::read_to_string(&svg).unwrap();
    assert!(s.starts_with("<svg"));
    for want in [
        "bce_logits vs focal_logits gamma=5",
        "loss, y = 0",
        "derivative, y = 1",
        "d loss / d z",
    ] {
        assert!(s.contains(want), "missing {want}");
    }
    // A vector pred, different preds, a bad override, an unwritable file.
    let cases: [(&[&str], &str); 4] = [
        (
            &["plot", "examples/cce_logits.loss", "-o", &svg],
            "plots need a scalar pred",
        ),
        (
            &["plot", "examples/mse.loss", "examples/bce.loss", "-o", &svg],
            "cannot share a figure",
        ),
        (
            &["plot", "examples/focal_logits.loss:gamma", "-o", &svg],
            "NAME=VALUE",
        ),
        (
            &["plot", "examples/mse.loss", "-o", "/nonexistent/dir/x.svg"],
            "cannot write `/nonexistent/dir/x.svg`",
        ),
    ];
    for (args, want) in cases {
        let out = lossc(args);
        assert_eq!(out.status.code(), Some(1), "{args:?}");
        assert!(
            text(&out.stderr).contains(want),
            "{args:?}: {}",
            text(&out.stderr)
        );
    }
}
