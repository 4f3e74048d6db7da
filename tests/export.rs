//! `lossc export`: the generated NumPy and JAX code, run by Python on random
//! in-domain data, computes the same objective and gradients as lossc's
//! evaluator (1e-10, f64) for every example; JAX's `jax.grad` of the
//! exported loss returns lossc's gradient, and JAX's own autodiff of the
//! exported forward pass agrees with it. The files pass `ruff check`.
//!
//! Python comes from `LOSSC_PYTHON` (`.ci/run` creates a virtual
//! environment with numpy, jax and ruff and sets it). Without it the Python
//! checks are skipped with a message, except under CI, where a missing
//! interpreter is a failure.

use lossc::Loss;
use lossc::export::{Target, export};
use ndarray::{Array1, Array2, ArrayD};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

/// Every bundled example, then the specs in `tests/python/specs` whose
/// input names clash with the names exported code uses for itself.
fn examples() -> Vec<PathBuf> {
    let mut all = Vec::new();
    for dir in ["examples", "tests/python/specs"] {
        let mut v: Vec<PathBuf> =
            std::fs::read_dir(Path::new(env!("CARGO_MANIFEST_DIR")).join(dir))
                .unwrap()
                .map(|e| e.unwrap().path())
                .filter(|p| p.extension().is_some_and(|e| e == "loss"))
                .collect();
        v.sort();
        all.extend(v);
    }
    all
}

/// The spec's path as the header of an exported file names it.
fn origin(path: &Path) -> String {
    path.strip_prefix(env!("CARGO_MANIFEST_DIR"))
        .unwrap()
        .display()
        .to_string()
}

fn python() -> Option<String> {
    match std::env::var("LOSSC_PYTHON") {
        Ok(p) if !p.is_empty() => Some(p),
        _ => {
            assert!(
                std::env::var_os("CI").is_none(),
                "CI must set LOSSC_PYTHON to a Python with numpy, jax and ruff"
            );
            eprintln!("LOSSC_PYTHON is not set: skipping the Python half of the export tests");
            None
        }
    }
}

fn scratch() -> PathBuf {
    let dir = std::env::temp_dir().join(format!("lossc-export-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Random in-domain inputs for a spec, as arrays.
fn inputs(loss: &Loss, rows: usize) -> Vec<(String, ArrayD<f64>)> {
    let c = loss.checked();
    let sizes: BTreeMap<String, usize> = c
        .sizes
        .iter()
        .map(|(k, v)| (k.clone(), v.map_or(3, |v| v as usize)))
        .collect();
    let mut rng = lossc::grad::Rng::new(17);
    let b = lossc::grad::random_batch_sized(c, rows, sizes, &mut rng);
    c.data
        .iter()
        .chain(&c.preds)
        .map(|v| {
            let rows_v = &b.values[&v.name];
            let a = if v.shape == lossc::sema::types::Shape::Scalar {
                Array1::from_iter(rows_v.iter().map(|r| r[0])).into_dyn()
            } else {
                let w = rows_v[0].len();
                Array2::from_shape_fn((rows_v.len(), w), |(r, k)| rows_v[r][k]).into_dyn()
            };
            (v.name.clone(), a)
        })
        .collect()
}

const RUNNER: &str = r#"
import importlib.util, sys
import numpy as np
import jax
import jax.numpy as jnp

jax.config.update("jax_enable_x64", True)

# One job per line: module path, flavor, input npz, output npz, inputs, preds.
for line in open(sys.argv[1]).read().splitlines():
    path, flavor, inp, out, names, preds = line.split("|")
    names, preds = names.split(","), preds.split(",")
    spec = importlib.util.spec_from_file_location("exported_" + flavor, path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    arrays = dict(np.load(inp))
    args = [arrays[n] for n in names]
    value, grads = mod.value_and_grad(*args)
    res = {"value": np.asarray(value, dtype=float)}
    for p in preds:
        res["grad_" + p] = np.asarray(grads[p], dtype=float)
    if flavor == "jax":
        k = [names.index(p) for p in preds]
        xs = [jnp.asarray(a, dtype=float) for a in args]
        g = jax.grad(lambda *a: mod.loss(*a), argnums=k)(*xs)
        for p, gp in zip(preds, g):
            res["jaxgrad_" + p] = np.asarray(gp)
        # JAX's own autodiff of the exported forward pass (no custom rule).
        raw = jax.grad(lambda *a: mod._value_and_grad(*a)[0], argnums=k)(*xs)
        for p, gp in zip(preds, raw):
            res["autodiff_" + p] = np.asarray(gp)
        res["jit_value"] = np.asarray(jax.jit(lambda *a: mod.loss(*a))(*xs))
    np.savez(out, **res)
"#;

fn close(a: f64, b: f64, tol: f64) -> bool {
    (a - b).abs() <= tol * (1.0 + a.abs().max(b.abs()))
}

/// An example's spec, name, random in-domain inputs (9 rows), and those
/// inputs written to `dir/NAME_in.npz` for Python.
fn example_case(dir: &Path, path: &Path) -> (Loss, String, Vec<(String, ArrayD<f64>)>, PathBuf) {
    let loss = Loss::from_file(path).unwrap();
    let stem = path.file_stem().unwrap().to_string_lossy().to_string();
    let arrays = inputs(&loss, 9);
    let views: Vec<(String, ndarray::ArrayViewD<f64>)> =
        arrays.iter().map(|(n, a)| (n.clone(), a.view())).collect();
    let inp = dir.join(format!("{stem}_in.npz"));
    lossc::io::write_npz(&inp, &views).unwrap();
    (loss, stem, arrays, inp)
}

/// The largest `|a - b| / (1 + |b|)` over two sequences of equal length.
fn worst<'a>(a: impl IntoIterator<Item = &'a f64>, b: impl IntoIterator<Item = &'a f64>) -> f64 {
    a.into_iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs() / (1.0 + y.abs()))
        .fold(0.0, f64::max)
}

/// lossc's value, gradients (and Hessians) of `loss` on `arrays`.
fn lossc_eval(loss: &Loss, arrays: &[(String, ArrayD<f64>)]) -> lossc::Output<f64> {
    let mut ins = lossc::Inputs::new();
    for (n, a) in arrays {
        ins.insert(n.as_str(), a.view());
    }
    loss.compile_with_hessian::<f64>()
        .unwrap()
        .eval(&ins)
        .unwrap()
}

/// Runs `py script args...`, failing the test with Python's stderr if it
/// fails, and returns its standard output.
fn run_python(py: &str, script: &Path, args: &[&Path]) -> String {
    let out = Command::new(py).arg(script).args(args).output().unwrap();
    assert!(
        out.status.success(),
        "python {} failed:\n{}",
        script.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// `ruff check` on every file of `dir`.
fn ruff(py: &str, dir: &Path) {
    let out = Command::new(py)
        .args(["-m", "ruff", "check", "--isolated", "--no-cache", "--quiet"])
        .arg(dir)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "ruff:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn exported_numpy_and_jax_agree_with_lossc_on_every_example() {
    let Some(py) = python() else { return };
    let dir = scratch();
    let runner = dir.join("runner.py");
    std::fs::write(&runner, RUNNER).unwrap();
    let mut failures = Vec::new();
    let mut jobs = String::new();
    let mut checks = Vec::new();
    for path in examples() {
        let (loss, stem, arrays, inp) = example_case(&dir, &path);
        let names: Vec<String> = arrays.iter().map(|(n, _)| n.clone()).collect();
        let preds: Vec<String> = loss
            .checked()
            .preds
            .iter()
            .map(|p| p.name.clone())
            .collect();
        for (target, flavor) in [(Target::Numpy, "numpy"), (Target::Jax, "jax")] {
            let code = export(&loss, target, &origin(&path)).unwrap();
            let file = dir.join(format!("{stem}_{flavor}.py"));
            std::fs::write(&file, &code).unwrap();
            let out = dir.join(format!("{stem}_{flavor}_out.npz"));
            jobs.push_str(&format!(
                "{}|{flavor}|{}|{}|{}|{}\n",
                file.display(),
                inp.display(),
                out.display(),
                names.join(","),
                preds.join(",")
            ));
            checks.push((
                stem.clone(),
                flavor,
                out,
                preds.clone(),
                loss.clone(),
                arrays.clone(),
            ));
        }
    }
    let jobs_file = dir.join("jobs.txt");
    std::fs::write(&jobs_file, jobs).unwrap();
    run_python(&py, &runner, &[&jobs_file]);
    for (stem, flavor, out, preds, loss, arrays) in checks {
        let want = lossc_eval(&loss, &arrays);
        let got = read(&out);
        let v = got["value"].iter().next().copied().unwrap();
        if !close(v, want.loss(), 1e-10) {
            failures.push(format!(
                "{stem} {flavor}: value {v} vs lossc {}",
                want.loss()
            ));
        }
        let mut keys = vec!["grad_"];
        if flavor == "jax" {
            keys.extend(["jaxgrad_", "autodiff_"]);
            let jv = got["jit_value"].iter().next().copied().unwrap();
            if !close(jv, want.loss(), 1e-10) {
                failures.push(format!(
                    "{stem} jax.jit: value {jv} vs lossc {}",
                    want.loss()
                ));
            }
        }
        for p in &preds {
            let lossc_g = want.grad(p);
            for key in &keys {
                let g = &got[&format!("{key}{p}")];
                let worst = worst(g, lossc_g.iter());
                let tol = if *key == "autodiff_" { 1e-8 } else { 1e-10 };
                if g.shape() != lossc_g.shape() || worst.is_nan() || worst > tol {
                    failures.push(format!(
                        "{stem} {flavor} {key}{p}: worst relative difference {worst:e} (shape {:?} vs {:?})",
                        g.shape(),
                        lossc_g.shape()
                    ));
                }
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

fn read(path: &Path) -> BTreeMap<String, ArrayD<f64>> {
    lossc::io::read_npz_all::<f64>(path).unwrap()
}

#[test]
fn exported_files_pass_ruff() {
    let Some(py) = python() else { return };
    let dir = scratch().join("ruff");
    std::fs::create_dir_all(&dir).unwrap();
    for path in examples() {
        let loss = Loss::from_file(&path).unwrap();
        let stem = path.file_stem().unwrap().to_string_lossy().to_string();
        for (target, flavor) in [
            (Target::Numpy, "numpy"),
            (Target::Jax, "jax"),
            (Target::PyTorch, "pytorch"),
            (Target::LightGbm, "lightgbm"),
            (Target::XgBoost, "xgboost"),
        ] {
            // A spec a booster cannot serve is refused (tested above).
            if let Ok(code) = export(&loss, target, &origin(&path)) {
                std::fs::write(dir.join(format!("{stem}_{flavor}.py")), code).unwrap();
            }
        }
    }
    ruff(&py, &dir);
}

#[test]
fn exported_files_are_snapshotted() {
    for path in examples() {
        let loss = Loss::from_file(&path).unwrap();
        let stem = path.file_stem().unwrap().to_string_lossy().to_string();
        for (target, flavor) in [
            (Target::Numpy, "numpy"),
            (Target::Jax, "jax"),
            (Target::PyTorch, "pytorch"),
            (Target::Latex, "latex"),
        ] {
            let code = export(&loss, target, &origin(&path)).unwrap();
            insta::assert_snapshot!(format!("export_{flavor}__{stem}"), code);
        }
        // XGBoost's file differs from LightGBM's only in the calling
        // convention: one snapshot of it is enough.
        let libs: &[(Target, &str)] = if stem == "moderation" {
            &[(Target::LightGbm, "lightgbm"), (Target::XgBoost, "xgboost")]
        } else {
            &[(Target::LightGbm, "lightgbm")]
        };
        for (target, lib) in libs {
            if let Ok(code) = export(&loss, *target, &origin(&path)) {
                insta::assert_snapshot!(format!("export_{lib}__{stem}"), code);
            }
        }
    }
}

#[test]
fn a_rename_that_would_collide_is_refused() {
    let src = "loss clash\ntask regression\ndata y : real\ndata n : real\npred p : real\nparam n_ = 3 in [0, 10]\nminimize mean(n_ * n * (y - p)^2)\n";
    let loss = Loss::from_named_source("spec.loss", src).unwrap();
    for target in [
        Target::Numpy,
        Target::Jax,
        Target::PyTorch,
        Target::LightGbm,
    ] {
        let e = export(&loss, target, "spec.loss").unwrap_err();
        assert!(e.to_string().contains("E0092"), "{e}");
    }
    // LaTeX has no Python names to clash.
    assert!(export(&loss, Target::Latex, "spec.loss").is_ok());
    let e = export(&loss, Target::Numpy, "spec.loss").unwrap_err();
    insta::assert_snapshot!(e.render(lossc::Color::Never), @"
    error[E0092]: `n` is renamed `n_` in exported Python (the generated code uses `n` itself, or it is a Python keyword), which is the name of `n_`
      ┌─ spec.loss:4:6
      │
    4 │ data n : real
      │      ^ becomes `n_`
      │
      = hint: rename `n` or `n_` in the spec
    ");
}

#[test]
fn booster_exports_refuse_what_a_booster_cannot_fit() {
    let refuse = |spec: &str| {
        // cargo runs tests in the package's directory: paths stay relative.
        let loss = Loss::from_file(format!("examples/{spec}.loss")).unwrap();
        export(&loss, Target::LightGbm, spec)
            .unwrap_err()
            .render(lossc::Color::Never)
    };
    insta::assert_snapshot!(refuse("cce_logits"), @r#"
    error[E0091]: a LightGBM objective fits one number per example, but pred `z` is a `vector [C]`
      ┌─ examples/cce_logits.loss:9:6
      │
    9 │ pred z : vector [C]  "species logits"
      │      ^ a vector pred
      │
      = hint: a booster fits one raw score per example to a mean (or sum) of per-example losses; export this spec to numpy, jax or pytorch instead
    "#);
    insta::assert_snapshot!(refuse("infonce"), @r#"
    error[E0091]: a LightGBM objective fits one pred, but `infonce` declares 2
      ┌─ examples/infonce.loss:8:7
      │
    8 │ pred  k : vector [D]  "key (image) embedding of the same pair"
      │       ^ a second pred
      │
      = hint: a booster fits one raw score per example to a mean (or sum) of per-example losses; export this spec to numpy, jax or pytorch instead
    "#);
    insta::assert_snapshot!(refuse("pairwise_hinge_ranking"), @"
    error[E0091]: a LightGBM objective needs each example's own Hessian, but `pairwise_hinge_ranking` couples rows
       ┌─ examples/pairwise_hinge_ranking.loss:11:1
       │
    11 │ minimize mean(sum[j: query@j == query and rel@j < rel](max(0, 1 - (s - s@j))))
       │ ^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^ not a mean (or sum) of per-example losses
       │
       = hint: a booster fits one raw score per example to a mean (or sum) of per-example losses; export this spec to numpy, jax or pytorch instead
    ");
}

#[test]
fn targets_parse_and_unknown_ones_are_refused() {
    assert_eq!(
        Target::parse("matlab").unwrap_err(),
        "unknown target `matlab`; expected numpy, jax, pytorch, lightgbm, xgboost or latex"
    );
    for (name, t) in [
        ("numpy", Target::Numpy),
        ("jax", Target::Jax),
        ("pytorch", Target::PyTorch),
        ("torch", Target::PyTorch),
        ("lightgbm", Target::LightGbm),
        ("xgboost", Target::XgBoost),
        ("latex", Target::Latex),
    ] {
        assert_eq!(Target::parse(name), Ok(t));
    }
}

#[test]
fn cli_exports_to_a_file_and_refuses_unknown_targets() {
    let lossc = |args: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_lossc"))
            .args(args)
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .output()
            .unwrap()
    };
    let out_file = scratch().join("cli_focal.py");
    let out = lossc(&[
        "export",
        "examples/focal_logits.loss",
        "--to",
        "numpy",
        "--param",
        "gamma=3",
        "-o",
        out_file.to_str().unwrap(),
    ]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = std::fs::read_to_string(&out_file).unwrap();
    assert!(text.contains("Param defaults overridden at export: gamma=3."));
    assert!(text.contains("def value_and_grad(y, z, *, gamma=3.0, alpha=0.25):"));
    let out = lossc(&["export", "examples/focal_logits.loss", "--to", "matlab"]);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        String::from_utf8_lossy(&out.stderr),
        "error: --to: unknown target `matlab`; expected numpy, jax, pytorch, lightgbm, xgboost or latex\n"
    );
    let out = lossc(&["export", "examples/missing.loss", "--to", "jax"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("cannot read `examples/missing.loss`"));
}

// ---------------------------------------------------------------------------
// Gradient boosting: LightGBM and XGBoost objectives.

/// The examples a booster objective cannot serve, and why (vector or
/// several preds, rows coupled).
const NOT_BOOSTABLE: &[&str] = &[
    "cce_logits",
    "contrastive",
    "dice",
    "infonce",
    "multilabel",
    "pairwise_hinge_ranking",
    "triplet",
    "scaled_dot",
    "size_clash",
];

/// How the exported objective maps a raw score to the pred, its first and
/// second derivative: the links documented in `lossc::export::booster`.
fn link(dom: &lossc::sema::types::Dom, s: f64) -> (f64, f64, f64) {
    use lossc::sema::types::Dom;
    let Dom::Range(r) = dom else {
        return (s, 1.0, 0.0);
    };
    match (r.lo.is_finite(), r.hi.is_finite()) {
        (true, true) => {
            let q = 1.0 / (1.0 + (-s).exp());
            let w = r.hi - r.lo;
            (
                r.lo + w * q,
                w * q * (1.0 - q),
                w * q * (1.0 - q) * (1.0 - 2.0 * q),
            )
        }
        (true, false) => (r.lo + s.exp(), s.exp(), s.exp()),
        (false, true) => (r.hi - (-s).exp(), (-s).exp(), -(-s).exp()),
        (false, false) => (s, 1.0, 0.0),
    }
}

/// The raw score whose link gives the pred value `p`.
fn unlink(dom: &lossc::sema::types::Dom, p: f64) -> f64 {
    use lossc::sema::types::Dom;
    let Dom::Range(r) = dom else { return p };
    match (r.lo.is_finite(), r.hi.is_finite()) {
        (true, true) => {
            let q = (p - r.lo) / (r.hi - r.lo);
            (q / (1.0 - q)).ln()
        }
        (true, false) => (p - r.lo).ln(),
        (false, true) => -(r.hi - p).ln(),
        (false, false) => p,
    }
}

const BOOSTER_RUNNER: &str = r#"
import importlib.util, sys
import numpy as np

class Data:
    """What a LightGBM Dataset / XGBoost DMatrix offers an objective."""
    def __init__(self, label, weight):
        self.label, self.weight = label, weight
    def get_label(self):
        return self.label
    def get_weight(self):
        return self.weight

# One job per line: module path, input npz, output npz, data names, their Python
# names, label name, library.
for line in open(sys.argv[1]).read().splitlines():
    path, inp, out, names, pynames, label, lib = line.split("|")
    pynames = pynames.split(",") if pynames else []
    names = names.split(",") if names else []
    spec = importlib.util.spec_from_file_location("booster", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    a = dict(np.load(inp))
    s = a["score"]
    loss, grad, hess = mod.per_example(*[a[n] for n in names], s)
    h = 1e-6 * (1.0 + np.abs(s))
    fd = (mod.per_example(*[a[n] for n in names], s + h)[1]
          - mod.per_example(*[a[n] for n in names], s - h)[1]) / (2 * h)
    # Keyword arguments take the Python names (a clashing `n` is `n_`).
    extra = {k: a[n] for n, k in zip(names, pynames) if n != label}
    w = a["weight"]
    data = Data(a[label], w if lib == "lightgbm" else w)
    g_obj, h_obj = mod.objective(**extra)(s, data)
    m = mod.metric(**extra)(s, data)
    data_nw = Data(a[label], None if lib == "lightgbm" else np.empty(0))
    m_nw = mod.metric(**extra)(s, data_nw)
    # Columns given per data set, as a dict keyed by the data set object.
    m_dict = mod.metric(**{k: {data: v} for k, v in extra.items()})(s, data)
    init = mod.init_score(*[a[n] for n in names])
    g_init = mod.per_example(*[a[n] for n in names], np.full(s.shape, init))[1].sum()
    np.savez(out, loss=loss, grad=grad, hess=hess, fd=fd, g_obj=g_obj, h_obj=h_obj,
             metric=m[1], metric_nw=m_nw[1], metric_dict=m_dict[1], init_grad=g_init)
"#;

#[test]
fn booster_objectives_match_lossc_on_every_example_they_serve() {
    let dir = scratch().join("booster");
    std::fs::create_dir_all(&dir).unwrap();
    let mut refused = Vec::new();
    let mut fragile = Vec::new();
    let mut jobs = String::new();
    let mut checks = Vec::new();
    for path in examples() {
        let loss = Loss::from_file(&path).unwrap();
        let stem = path.file_stem().unwrap().to_string_lossy().to_string();
        let origin = origin(&path);
        let code = match export(&loss, Target::LightGbm, &origin) {
            Ok(code) => code,
            Err(e) => {
                // Both libraries refuse the same specs.
                assert_eq!(
                    export(&loss, Target::XgBoost, &origin)
                        .unwrap_err()
                        .to_string(),
                    e.to_string().replace("LightGBM", "XGBoost")
                );
                refused.push(stem);
                continue;
            }
        };
        if code.contains("Warning: lossc could not cancel") {
            fragile.push(stem.clone());
        }
        let c = loss.checked();
        let pred = &c.preds[0];
        let mut arrays = inputs(&loss, 9);
        // The booster sees raw scores: the pred's values through the inverse link.
        let p = arrays
            .iter()
            .find(|(n, _)| *n == pred.name)
            .unwrap()
            .1
            .clone();
        let score = p.mapv(|v| unlink(&pred.dom, v));
        let weight = Array1::from_iter((0..9).map(|i| 0.5 + 0.25 * f64::from(i % 4))).into_dyn();
        let mut npz = arrays.clone();
        npz.retain(|(n, _)| *n != pred.name);
        let names: Vec<String> = npz.iter().map(|(n, _)| n.clone()).collect();
        npz.push(("score".into(), score.clone()));
        npz.push(("weight".into(), weight.clone()));
        let views: Vec<(String, ndarray::ArrayViewD<f64>)> =
            npz.iter().map(|(n, a)| (n.clone(), a.view())).collect();
        let inp = dir.join(format!("{stem}_in.npz"));
        lossc::io::write_npz(&inp, &views).unwrap();
        let label = code
            .lines()
            .find_map(|l| l.strip_prefix("The label is `"))
            .and_then(|l| l.split('`').next())
            .unwrap()
            .to_string();
        for (target, lib) in [(Target::LightGbm, "lightgbm"), (Target::XgBoost, "xgboost")] {
            let code = export(&loss, target, &origin).unwrap();
            let file = dir.join(format!("{stem}_{lib}.py"));
            std::fs::write(&file, code).unwrap();
            let out = dir.join(format!("{stem}_{lib}_out.npz"));
            jobs.push_str(&format!(
                "{}|{}|{}|{}|{}|{label}|{lib}\n",
                file.display(),
                inp.display(),
                out.display(),
                names.join(","),
                names
                    .iter()
                    .map(|n| lossc::export::py_name(n))
                    .collect::<Vec<_>>()
                    .join(",")
            ));
            checks.push((stem.clone(), out, None));
        }
        // lossc evaluates the spec at the linked pred values.
        for (n, a) in &mut arrays {
            if *n == pred.name {
                *a = score.mapv(|s| link(&pred.dom, s).0);
            }
        }
        let mut want = expected(&loss, &arrays, &score, &weight);
        want.flat = code.contains("np.where(hess == 0.0, 1.0");
        let k = checks.len();
        for check in &mut checks[k - 2..] {
            check.2 = Some(want.clone());
        }
    }
    assert_eq!(refused, NOT_BOOSTABLE);
    // Only this example's gradient keeps a division by sigmoid(score) (its
    // entropy term); the file says so.
    assert_eq!(fragile, ["weighted_bce_entropy"]);
    let Some(py) = python() else { return };
    let runner = dir.join("runner.py");
    std::fs::write(&runner, BOOSTER_RUNNER).unwrap();
    let jobs_file = dir.join("jobs.txt");
    std::fs::write(&jobs_file, jobs).unwrap();
    run_python(&py, &runner, &[&jobs_file]);
    let mut failures = Vec::new();
    for (stem, out, want) in checks {
        want.expect("filled for both libraries")
            .compare(&stem, &read(&out), &mut failures);
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// What lossc says a booster objective must return, per example, in terms
/// of the raw score: the chain rule through the link applied to lossc's
/// own gradient and Hessian of the spec.
#[derive(Clone)]
struct Expected {
    value: f64,
    mean: bool,
    grad: Vec<f64>,
    hess: Option<Vec<f64>>,
    weight: Vec<f64>,
    /// The objective turns a zero Hessian into 1 (a locally linear loss).
    flat: bool,
}

fn expected(
    loss: &Loss,
    arrays: &[(String, ArrayD<f64>)],
    score: &ArrayD<f64>,
    weight: &ArrayD<f64>,
) -> Expected {
    let c = loss.checked();
    let pred = &c.preds[0];
    let out = lossc_eval(loss, arrays);
    let d = loss.derive().unwrap();
    let mean = d.factor == lossc::grad::Factor::OneOverN;
    let scale = if mean { score.len() as f64 } else { 1.0 };
    let gp: Vec<f64> = out.grad(&pred.name).iter().map(|g| g * scale).collect();
    let links: Vec<(f64, f64, f64)> = score.iter().map(|&s| link(&pred.dom, s)).collect();
    let grad = gp.iter().zip(&links).map(|(g, l)| g * l.1).collect();
    let hess = out.hessian(&pred.name).map(|h| {
        h.iter()
            .zip(&gp)
            .zip(&links)
            .map(|((h, g), l)| h * scale * l.1 * l.1 + g * l.2)
            .collect()
    });
    Expected {
        value: out.loss(),
        mean,
        grad,
        hess,
        weight: weight.iter().copied().collect(),
        flat: false,
    }
}

impl Expected {
    fn compare(&self, stem: &str, got: &BTreeMap<String, ArrayD<f64>>, failures: &mut Vec<String>) {
        let v = |k: &str| -> Vec<f64> { got[k].iter().copied().collect() };
        let mut check = |what: &str, a: &[f64], b: &[f64], tol: f64| {
            let worst = worst(a, b);
            if a.len() != b.len() || worst.is_nan() || worst > tol {
                failures.push(format!(
                    "{stem} {what}: worst relative difference {worst:e}"
                ));
            }
        };
        let (loss, grad, hess, fd) = (v("loss"), v("grad"), v("hess"), v("fd"));
        let reduce = |xs: &[f64], w: Option<&[f64]>| -> f64 {
            let w: Vec<f64> = w.map_or(vec![1.0; xs.len()], <[f64]>::to_vec);
            let s: f64 = xs.iter().zip(&w).map(|(x, w)| x * w).sum();
            if self.mean {
                s / w.iter().sum::<f64>()
            } else {
                s
            }
        };
        check(
            "objective value",
            &[reduce(&loss, None)],
            &[self.value],
            1e-10,
        );
        check("gradient", &grad, &self.grad, 1e-9);
        if let Some(h) = &self.hess {
            check("Hessian", &hess, h, 1e-8);
        }
        check("Hessian against finite differences", &hess, &fd, 1e-5);
        let w = &self.weight;
        let gw: Vec<f64> = grad.iter().zip(w).map(|(g, w)| g * w).collect();
        let hw: Vec<f64> = hess
            .iter()
            .zip(w)
            .map(|(h, w)| if self.flat && *h == 0.0 { 1.0 } else { h.max(1e-6) } * w)
            .collect();
        check("objective() gradient", &v("g_obj"), &gw, 1e-12);
        check("objective() Hessian", &v("h_obj"), &hw, 1e-12);
        check(
            "metric() weighted",
            &v("metric"),
            &[reduce(&loss, Some(w))],
            1e-12,
        );
        check("metric() unweighted", &v("metric_nw"), &[self.value], 1e-10);
        check(
            "metric() with per-data-set columns",
            &v("metric_dict"),
            &v("metric"),
            0.0,
        );
        // The best constant score zeroes the summed gradient (to within one
        // example's step, where the loss is piecewise linear and its
        // gradient jumps).
        let g0 = v("init_grad")[0].abs();
        let allowed = if hess.contains(&0.0) {
            1.0 + grad.iter().map(|g| g.abs()).fold(0.0, f64::max)
        } else {
            1e-6 * (1.0 + grad.iter().map(|g| g.abs()).sum::<f64>())
        };
        if g0.is_nan() || g0 > allowed {
            failures.push(format!(
                "{stem} init_score: summed gradient {g0:e} at the best constant"
            ));
        }
    }
}

/// The issue's bar: a LightGBM booster trained with the exported
/// `moderation` objective catches more violations than one trained with
/// LightGBM's own binary log-loss, at the precision the plain model reaches
/// at probability 0.5. Trained on the scenario's rows (seed 0), scored on
/// four fresh draws (seeds 1-4: 80,000 rows, 400 positives). XGBoost is
/// trained the same way; its numbers are recorded in docs/export.md, and
/// here only its training is checked.
#[test]
fn lightgbm_with_the_exported_objective_beats_plain_logloss_on_moderation() {
    let Some(py) = python() else { return };
    let dir = scratch().join("moderation");
    std::fs::create_dir_all(&dir).unwrap();
    let lossc = |args: &[&str]| {
        let out = Command::new(env!("CARGO_BIN_EXE_lossc"))
            .args(args)
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "lossc {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    let mut csvs = Vec::new();
    for seed in 0..5 {
        let csv = dir.join(format!("moderation_{seed}.csv"));
        let s = seed.to_string();
        lossc(&[
            "validate",
            "--scenario",
            "moderation",
            "--seed",
            &s,
            "--save-data",
            csv.to_str().unwrap(),
        ]);
        csvs.push(csv);
    }
    let (lgb, xgb) = (dir.join("lgb.py"), dir.join("xgb.py"));
    for (to, file) in [("lightgbm", &lgb), ("xgboost", &xgb)] {
        lossc(&[
            "export",
            "examples/moderation.loss",
            "--to",
            to,
            "-o",
            file.to_str().unwrap(),
        ]);
    }
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/python/boost_moderation.py");
    let mut args: Vec<&Path> = vec![&lgb, &xgb];
    args.extend(csvs.iter().map(PathBuf::as_path));
    let text = run_python(&py, &script, &args);
    eprintln!("{text}");
    let number = |lib: &str, key: &str| -> f64 {
        let name = format!("{lib}.{key} ");
        text.lines()
            .find_map(|l| l.strip_prefix(&name))
            .unwrap_or_else(|| panic!("no {name}in:\n{text}"))
            .parse()
            .unwrap()
    };
    let plain = number("lightgbm", "plain_recall_at_precision");
    let custom = number("lightgbm", "custom_recall_at_precision");
    assert!(
        custom >= 1.25 * plain,
        "LightGBM: exported objective recall {custom} vs plain {plain} at the same precision"
    );
    assert!(number("lightgbm", "plain_precision") > 0.2);
    // Both libraries minimise the exported metric while training.
    for lib in ["lightgbm", "xgboost"] {
        let (first, last) = (number(lib, "metric_first"), number(lib, "metric_last"));
        assert!(
            last < 0.5 * first,
            "{lib}: training metric {first} -> {last}"
        );
    }
}

// ---------------------------------------------------------------------------
// PyTorch: tested when `LOSSC_TORCH_PYTHON` names a Python with torch
// (several GB, so not installed by .ci/run); `scripts/check-pytorch` sets it
// up and runs this test. The result is recorded in docs/export.md.

const TORCH_RUNNER: &str = r#"
import importlib.util, sys
import numpy as np
import torch

devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
print("torch", torch.__version__, "devices", ",".join(devices))
for line in open(sys.argv[1]).read().splitlines():
    path, inp, out, names, preds, cls = line.split("|")
    names, preds = names.split(","), preds.split(",")
    spec = importlib.util.spec_from_file_location("exported_torch", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    arrays = dict(np.load(inp))
    res = {}
    for device in devices:
        args = [torch.tensor(arrays[n], dtype=torch.float64, device=device) for n in names]
        # value_and_grad, plain tensors.
        value, grads = mod.value_and_grad(*args)
        res[device + "_value"] = value.item()
        for p in preds:
            res[device + "_grad_" + p] = grads[p].cpu().numpy()
        # The module's backward (lossc's gradient through autograd).
        xs = [a.clone().requires_grad_(n in preds) for n, a in zip(names, args)]
        criterion = getattr(mod, cls)()
        criterion(*xs).backward()
        for n, x in zip(names, xs):
            if n in preds:
                res[device + "_backward_" + n] = x.grad.cpu().numpy()
        # Torch's own autodiff of the exported forward computation.
        xs = [a.clone().requires_grad_(n in preds) for n, a in zip(names, args)]
        v, _ = mod.value_and_grad(*xs)
        gs = torch.autograd.grad(v, [x for n, x in zip(names, xs) if n in preds])
        for p, g in zip(preds, gs):
            res[device + "_autodiff_" + p] = g.cpu().numpy()
    # Lower precision: dtypes follow the preds; values stay close.
    for dt in (torch.float32, torch.float16, torch.bfloat16):
        args = [torch.tensor(arrays[n], dtype=torch.float64).to(dt if n in preds else torch.float64) for n in names]
        value, grads = mod.value_and_grad(*args)
        assert value.dtype == dt, (path, dt, value.dtype)
        assert all(grads[p].dtype == dt for p in preds), (path, dt)
        res[str(dt).split(".")[1] + "_value"] = value.double().item()
    # Labels as integers, as a classifier's targets usually are.
    ints = [torch.tensor(arrays[n]).long() if n not in preds and np.all(arrays[n] == np.round(arrays[n])) else torch.tensor(arrays[n]) for n in names]
    res["int_labels_value"] = mod.value_and_grad(*ints)[0].item()
    # torch.autograd.gradcheck: finite differences of the module against its backward.
    pidx = [k for k, n in enumerate(names) if n in preds]
    base = [torch.tensor(arrays[n], dtype=torch.float64) for n in names]
    def f(*ps):
        xs = list(base)
        for k, p in zip(pidx, ps):
            xs[k] = p
        return getattr(mod, cls)()(*xs)
    ps = [base[k].clone().requires_grad_(True) for k in pidx]
    res["gradcheck"] = float(torch.autograd.gradcheck(f, ps, eps=1e-6, atol=1e-7, rtol=1e-5, raise_exception=False))
    np.savez(out, **{k: np.asarray(v, dtype=float) for k, v in res.items()})

# The README's path: a model trained in PyTorch with an exported criterion.
spec = importlib.util.spec_from_file_location("focal", sys.argv[2])
focal = importlib.util.module_from_spec(spec)
spec.loader.exec_module(focal)
torch.manual_seed(0)
x = torch.randn(512, 8)
y = (x[:, 0] + 0.5 * x[:, 1] > 1.0).long()
model = torch.nn.Linear(8, 1)
criterion = focal.FocalLogitsLoss(gamma=2.0)
opt = torch.optim.SGD(model.parameters(), lr=0.5)
losses = []
for _ in range(200):
    opt.zero_grad()
    loss = criterion(y, model(x).squeeze(-1))
    loss.backward()
    opt.step()
    losses.append(loss.item())
accuracy = ((model(x).squeeze(-1) > 0).long() == y).float().mean().item()
print(f"train focal_logits: loss {losses[0]:.4f} -> {losses[-1]:.4f}, accuracy {accuracy:.3f}")
"#;

#[test]
#[ignore = "needs PyTorch (several GB): scripts/check-pytorch installs it and runs this"]
fn exported_pytorch_agrees_with_lossc_on_every_example() {
    let py = std::env::var("LOSSC_TORCH_PYTHON")
        .expect("LOSSC_TORCH_PYTHON must name a Python with torch, numpy and ruff");
    let dir = scratch().join("torch");
    std::fs::create_dir_all(&dir).unwrap();
    let mut jobs = String::new();
    let mut checks = Vec::new();
    for path in examples() {
        let (loss, stem, arrays, inp) = example_case(&dir, &path);
        let code = export(&loss, Target::PyTorch, &origin(&path)).unwrap();
        let class = code
            .lines()
            .find_map(|l| {
                l.strip_prefix("class ")
                    .and_then(|r| r.strip_suffix("(torch.nn.Module):"))
            })
            .unwrap()
            .to_string();
        let file = dir.join(format!("{stem}_torch.py"));
        std::fs::write(&file, &code).unwrap();
        let out = dir.join(format!("{stem}_torch_out.npz"));
        let names: Vec<String> = arrays.iter().map(|(n, _)| n.clone()).collect();
        let preds: Vec<String> = loss
            .checked()
            .preds
            .iter()
            .map(|p| p.name.clone())
            .collect();
        jobs.push_str(&format!(
            "{}|{}|{}|{}|{}|{class}\n",
            file.display(),
            inp.display(),
            out.display(),
            names.join(","),
            preds.join(",")
        ));
        checks.push((stem, out, preds, loss, arrays));
    }
    // The runner sits outside `dir`, which the linter checks below.
    let runner = scratch().join("torch_runner.py");
    std::fs::write(&runner, TORCH_RUNNER).unwrap();
    let jobs_file = dir.join("jobs.txt");
    std::fs::write(&jobs_file, jobs).unwrap();
    let stdout = run_python(
        &py,
        &runner,
        &[&jobs_file, &dir.join("focal_logits_torch.py")],
    );
    let trained = stdout
        .lines()
        .find_map(|l| l.strip_prefix("train focal_logits: loss "))
        .unwrap();
    let nums: Vec<f64> = trained
        .split(|c: char| !(c.is_ascii_digit() || c == '.'))
        .filter_map(|w| w.parse().ok())
        .collect();
    assert!(
        nums[1] < 0.5 * nums[0] && nums[2] > 0.9,
        "training with the exported criterion: {trained}"
    );
    eprintln!("{stdout}");
    let devices: Vec<&str> = stdout
        .lines()
        .find_map(|l| l.split_once(" devices ").map(|(_, d)| d))
        .unwrap()
        .split(',')
        .collect();
    let mut failures = Vec::new();
    for (stem, out, preds, loss, arrays) in checks {
        let want = lossc_eval(&loss, &arrays);
        let got = read(&out);
        let scalar = |k: &str| got[k].iter().next().copied().unwrap();
        let mut value_check = |what: &str, v: f64, tol: f64| {
            if !close(v, want.loss(), tol) {
                failures.push(format!("{stem} {what}: {v} vs lossc {}", want.loss()));
            }
        };
        for d in &devices {
            value_check(&format!("{d} value"), scalar(&format!("{d}_value")), 1e-10);
        }
        value_check("float32 value", scalar("float32_value"), 1e-5);
        value_check("float16 value", scalar("float16_value"), 2e-2);
        value_check("bfloat16 value", scalar("bfloat16_value"), 5e-2);
        value_check("integer labels value", scalar("int_labels_value"), 1e-10);
        if scalar("gradcheck") != 1.0 {
            failures.push(format!("{stem}: torch.autograd.gradcheck failed"));
        }
        for d in &devices {
            for p in &preds {
                let lossc_g = want.grad(p);
                for (key, tol) in [("grad_", 1e-10), ("backward_", 1e-10), ("autodiff_", 1e-8)] {
                    let g = &got[&format!("{d}_{key}{p}")];
                    let worst = worst(g, lossc_g.iter());
                    if g.shape() != lossc_g.shape() || worst.is_nan() || worst > tol {
                        failures.push(format!(
                            "{stem} {d} {key}{p}: worst relative difference {worst:e}"
                        ));
                    }
                }
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    // And the files pass the linter.
    ruff(&py, &dir);
}
