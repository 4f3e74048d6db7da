//! The instruction-set tiers agree. lossc compiles its loops for baseline
//! x86-64, for AVX2+FMA and for AVX-512, and runs the widest the CPU has.
//! AVX2 and AVX-512 run the same operations in the same order, so they must
//! give the same bits; baseline has no fused multiply-add, so it must agree
//! to rounding. Input errors must read the same on every tier.
//!
//! This file caps the tier process-wide (`lossc::exec::isa::limit`), so it
//! is its own test binary: tests that compare bits between two runs never
//! see the cap move under them. A tier the CPU lacks cannot be run; the
//! test prints the tiers it covered.

use lossc::exec::isa::{self, Isa};
use lossc::sema::types::{Dom, Shape, Size};
use lossc::{Evaluator, Float, Loss};
use ndarray::ArrayD;
use std::sync::Mutex;

mod common;
use common::{arrays, arrays_sized, examples, inputs_of, kernel};

/// Held by each test for its whole run: the tests here move the cap, and
/// must not move it under each other.
static CAP: Mutex<()> = Mutex::new(());

/// Lifts the cap when dropped, a failed assertion included.
struct Uncap;

impl Drop for Uncap {
    fn drop(&mut self) {
        isa::limit(Isa::Avx512);
    }
}

/// `f` run once on every tier this CPU has, narrowest first.
fn on_every_tier<R>(mut f: impl FnMut() -> R) -> Vec<(Isa, R)> {
    let _uncap = Uncap;
    Isa::available()
        .into_iter()
        .map(|tier| {
            isa::limit(tier);
            assert_eq!(isa::active(), tier);
            (tier, f())
        })
        .collect()
}

/// A batch: each input's name and array.
type Arrays<T> = Vec<(String, ArrayD<T>)>;

/// Every output of an evaluation by name (the loss, each gradient and
/// Hessian), or the error's text.
type Outcome = Result<Vec<(String, Vec<f64>)>, String>;

fn outcome<T: Float>(ev: &Evaluator<T>, arrays: &[(String, ArrayD<T>)]) -> Outcome {
    let out = ev.eval(&inputs_of(arrays)).map_err(|e| e.to_string())?;
    let mut v = vec![("loss".to_string(), vec![out.loss().f64()])];
    for (name, g) in out.grads() {
        v.push((format!("d/d{name}"), g.iter().map(|x| x.f64()).collect()));
    }
    for (name, h) in out.hessians() {
        v.push((format!("d²/d{name}²"), h.iter().map(|x| x.f64()).collect()));
    }
    Ok(v)
}

/// The fused tiers give the same bits, and baseline agrees with them to
/// `tol`, relative to each output's largest value; errors read the same.
fn assert_agree(what: &str, results: &[(Isa, Outcome)], tol: f64) {
    let bits = |o: &Outcome| -> Result<Vec<Vec<u64>>, String> {
        o.clone().map(|v| {
            v.iter()
                .map(|(_, xs)| xs.iter().map(|x| x.to_bits()).collect())
                .collect()
        })
    };
    let fused: Vec<&(Isa, Outcome)> = results
        .iter()
        .filter(|(t, _)| *t != Isa::Baseline)
        .collect();
    for pair in fused.windows(2) {
        assert!(
            bits(&pair[0].1) == bits(&pair[1].1),
            "{what}: {} and {} differ",
            pair[0].0.name(),
            pair[1].0.name()
        );
    }
    let (Some((_, base)), Some((tier, wide))) = (
        results.iter().find(|(t, _)| *t == Isa::Baseline),
        fused.first(),
    ) else {
        return;
    };
    match (base, wide) {
        (Err(a), Err(b)) => assert_eq!(a, b, "{what}: baseline and {}", tier.name()),
        (Ok(a), Ok(b)) => {
            for ((name, xs), (_, ys)) in a.iter().zip(b) {
                let scale = ys
                    .iter()
                    .filter(|y| y.is_finite())
                    .fold(1e-30f64, |m, y| m.max(y.abs()));
                for (i, (x, y)) in xs.iter().zip(ys).enumerate() {
                    assert!(
                        x == y || (x - y).abs() <= tol * scale || (x.is_nan() && y.is_nan()),
                        "{what}: {name}[{i}] is {x} on baseline and {y} on {}",
                        tier.name()
                    );
                }
            }
        }
        _ => panic!(
            "{what}: baseline gave {base:?} and {} gave {wide:?}",
            tier.name()
        ),
    }
}

/// The interpreter, the committed kernel, and the interpreter with the
/// diagonal Hessian (kernels are generated without one).
fn backends<T: Float>(stem: &str, loss: &Loss) -> Vec<(&'static str, Evaluator<T>)> {
    vec![
        ("interpreter", loss.compile::<T>().unwrap()),
        (
            "generated",
            loss.compile::<T>()
                .unwrap()
                .with_kernel(kernel::<T>(stem))
                .unwrap(),
        ),
        ("with Hessian", loss.compile_with_hessian::<T>().unwrap()),
    ]
}

/// The spec's size names (of its vector inputs).
fn size_names(loss: &Loss) -> Vec<String> {
    let c = loss.checked();
    let mut v: Vec<String> = c
        .data
        .iter()
        .chain(&c.preds)
        .filter_map(|x| match &x.shape {
            Shape::Vector(Size::Name(s)) => Some(s.clone()),
            _ => None,
        })
        .collect();
    v.sort();
    v.dedup();
    v
}

/// Every third value that may be zero made `-0`, every fifth `+0`: ties of
/// signed zeros for `max`, `min`, `abs` and `sign`.
fn with_zeros<T: Float>(loss: &Loss, arrays: &mut [(String, ArrayD<T>)]) {
    let c = loss.checked();
    for (name, a) in arrays.iter_mut() {
        let decl = c
            .data
            .iter()
            .chain(&c.preds)
            .find(|v| &v.name == name)
            .unwrap();
        if matches!(&decl.dom, Dom::Range(r) if r.lo < 0.0 && r.hi > 0.0) {
            for (i, x) in a.iter_mut().enumerate() {
                if i % 3 == 0 {
                    *x = T::of(-0.0);
                } else if i % 5 == 0 {
                    *x = T::ZERO;
                }
            }
        }
    }
}

fn every_spec<T: Float>(tol: f64) {
    for path in examples() {
        let stem = path.file_stem().unwrap().to_string_lossy().into_owned();
        let loss = Loss::from_file(&path).unwrap();
        let names = size_names(&loss);
        // Row counts that are not a multiple of any vector width: over one
        // parallel block for scalar losses; batch-coupled specs are O(n²).
        let coupled = std::fs::read_to_string(&path).unwrap().contains('@');
        let mut batches: Vec<(String, Arrays<T>)> = Vec::new();
        if names.is_empty() {
            let n = if coupled { 45 } else { 16_384 + 37 };
            batches.push((String::new(), arrays::<T>(&loss, n)));
        } else {
            // Widths past the generated loops' cut-off (32), around the
            // vector lengths of both tiers (8 and 16 lanes of f32, 4 and 8
            // of f64), and the random batch's narrow default.
            let n = if coupled { 45 } else { 1_000 + 37 };
            batches.push((" (narrow)".into(), arrays::<T>(&loss, n)));
            for w in [33, 48, 100] {
                let sizes: Vec<(&str, usize)> = names.iter().map(|s| (s.as_str(), w)).collect();
                batches.push((format!(" (width {w})"), arrays_sized::<T>(&loss, n, &sizes)));
            }
        }
        let evs = backends::<T>(&stem, &loss);
        for (label, mut arrays) in batches {
            for (backend, ev) in &evs {
                let what = format!("{stem}{label} ({}, {backend})", T::NAME);
                assert_agree(&what, &on_every_tier(|| outcome(ev, &arrays)), tol);
            }
            with_zeros(&loss, &mut arrays);
            for (backend, ev) in &evs {
                let what = format!("{stem}{label} with ±0 ({}, {backend})", T::NAME);
                assert_agree(&what, &on_every_tier(|| outcome(ev, &arrays)), tol);
            }
            // A NaN in each input in turn, near the end of the batch.
            for i in 0..arrays.len() {
                let mut bad = arrays.clone();
                let a = &mut bad[i].1;
                let at = a.len() - 2;
                *a.iter_mut().nth(at).unwrap() = T::of(f64::NAN);
                for (backend, ev) in &evs {
                    let what = format!(
                        "{stem}{label}, NaN in {} ({}, {backend})",
                        bad[i].0,
                        T::NAME
                    );
                    assert_agree(&what, &on_every_tier(|| outcome(ev, &bad)), tol);
                }
            }
        }
    }
}

#[test]
fn every_tier_this_cpu_has_gives_the_same_results() {
    let _cap = CAP.lock().unwrap_or_else(|e| e.into_inner());
    eprintln!(
        "tiers covered: {}",
        Isa::available()
            .iter()
            .map(|t| t.name())
            .collect::<Vec<_>>()
            .join(", ")
    );
    every_spec::<f64>(1e-12);
    every_spec::<f32>(1e-5);
}

#[test]
fn the_cap_never_raises_the_tier_past_the_cpu() {
    let _cap = CAP.lock().unwrap_or_else(|e| e.into_inner());
    let _uncap = Uncap;
    let top = isa::detected();
    isa::limit(Isa::Baseline);
    assert_eq!(isa::active(), Isa::Baseline);
    assert_eq!(lossc::exec::isa(), "baseline");
    assert!(!lossc::exec::avx2() && !lossc::exec::avx512());
    isa::limit(Isa::Avx512);
    assert_eq!(isa::active(), top);
}
