//! The instruction-set tiers agree. lossc compiles its loops for baseline
//! x86-64, for AVX2+FMA and for AVX-512, and runs the widest the CPU has.
//! AVX2 and AVX-512 run the same operations in the same order, so they must
//! give the same bits; baseline has no fused multiply-add, so it must agree
//! to rounding. This file caps the tier process-wide
//! (`lossc::exec::isa::limit`), so it is its own test binary: tests that
//! compare bits between two runs never see the cap move under them.
//!
//! A tier the CPU lacks cannot be run; the test prints which it covered.

use lossc::exec::isa::{self, Isa};
use lossc::{Evaluator, Float, Loss};
use ndarray::ArrayD;
use std::sync::Mutex;

/// Held by each test for its whole run: the tests here move the cap, and
/// must not move it under each other.
static CAP: Mutex<()> = Mutex::new(());

mod common;
use common::{arrays, arrays_sized, examples, inputs_of, kernel};

/// The loss and every gradient, in bits, and as values.
fn run<T: Float>(ev: &Evaluator<T>, arrays: &[(String, ArrayD<T>)]) -> (Vec<u64>, Vec<f64>) {
    let out = ev.eval(&inputs_of(arrays)).unwrap();
    let mut values = vec![out.loss().f64()];
    for (_, g) in out.grads() {
        values.extend(g.iter().map(|x| x.f64()));
    }
    (values.iter().map(|x| x.to_bits()).collect(), values)
}

/// Evaluates `arrays` on every tier this CPU has, with the interpreter and
/// with the committed kernel, and checks the tiers agree.
fn check_tiers<T: Float>(stem: &str, loss: &Loss, arrays: &[(String, ArrayD<T>)], tol: f64) {
    let backends: [(&str, Evaluator<T>); 2] = [
        ("interpreter", loss.compile::<T>().unwrap()),
        (
            "generated",
            loss.compile::<T>()
                .unwrap()
                .with_kernel(kernel::<T>(stem))
                .unwrap(),
        ),
    ];
    for (backend, ev) in &backends {
        let mut fused: Option<(Isa, Vec<u64>)> = None;
        let mut base: Option<Vec<f64>> = None;
        for tier in Isa::available() {
            isa::limit(tier);
            assert_eq!(isa::active(), tier);
            let (bits, values) = run(ev, arrays);
            if tier == Isa::Baseline {
                base = Some(values);
                continue;
            }
            match &fused {
                None => fused = Some((tier, bits)),
                Some((first, want)) => assert!(
                    bits == *want,
                    "{stem} ({}, {backend}): {} and {} differ",
                    T::NAME,
                    first.name(),
                    tier.name()
                ),
            }
            if let Some(b) = &base {
                let scale = b.iter().fold(1e-30f64, |m, x| m.max(x.abs()));
                for (i, (x, y)) in values.iter().zip(b).enumerate() {
                    assert!(
                        (x - y).abs() <= tol * scale,
                        "{stem} ({}, {backend}): value {i} is {x} on {} and {y} on baseline",
                        T::NAME,
                        tier.name()
                    );
                }
            }
        }
    }
    isa::limit(Isa::Avx512);
}

fn every_spec<T: Float>(tol: f64) {
    for path in examples() {
        let stem = path.file_stem().unwrap().to_string_lossy().into_owned();
        let loss = Loss::from_file(&path).unwrap();
        // A row count that is not a multiple of any vector width, and over
        // one parallel block; batch-coupled specs are O(n²).
        let coupled = std::fs::read_to_string(&path).unwrap().contains('@');
        let n = if coupled { 45 } else { 16_384 + 37 };
        check_tiers(&stem, &loss, &arrays::<T>(&loss, n), tol);
    }
    // The generated loops over a vector's components, at widths around the
    // vector lengths of both tiers (8 and 16 lanes of f32, 4 and 8 of f64).
    for (stem, size) in [("cce_logits", "C"), ("multilabel", "L"), ("triplet", "D")] {
        let loss = Loss::from_file(format!("examples/{stem}.loss")).unwrap();
        for width in [33, 47, 100] {
            check_tiers(
                stem,
                &loss,
                &arrays_sized::<T>(&loss, 301, &[(size, width)]),
                tol,
            );
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
    let top = isa::detected();
    isa::limit(Isa::Baseline);
    assert_eq!(isa::active(), Isa::Baseline);
    assert_eq!(lossc::exec::isa(), "baseline");
    assert!(!lossc::exec::avx2() && !lossc::exec::avx512());
    isa::limit(Isa::Avx512);
    assert_eq!(isa::active(), top);
}
