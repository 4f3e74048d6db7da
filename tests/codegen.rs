//! The generated backend: `lossc codegen` output for every example is
//! committed in `tests/kernels/` (so that it is compiled here and in the
//! benchmarks), must match what lossc generates today, and must evaluate to
//! the same loss and gradients as the reference.

use lossc::sema::types::Dom;
use lossc::{Evaluator, Float, Loss};

mod common;
use common::{arrays, arrays_sized, examples, inputs_of, kernel};

#[test]
fn committed_kernels_are_what_lossc_generates() {
    let bless = std::env::var_os("LOSSC_BLESS").is_some();
    let mut index = String::from(
        "//! Generated kernels of every example and of `specs/` (`LOSSC_BLESS=1 cargo test --test codegen` rewrites them).\n\n",
    );
    for path in examples() {
        let stem = path.file_stem().unwrap().to_string_lossy().into_owned();
        let loss = Loss::from_file(&path).unwrap();
        let src = loss.codegen(&stem).unwrap();
        let file = format!("tests/kernels/{stem}.rs");
        index.push_str(&format!(
            "#[path = \"{stem}.rs\"]\nmod {stem}_file;\npub use {stem}_file::{stem};\n"
        ));
        if bless {
            std::fs::write(&file, &src).unwrap();
        } else {
            let committed = std::fs::read_to_string(&file).unwrap_or_default();
            assert!(
                committed == src,
                "{file} is stale: run LOSSC_BLESS=1 cargo test --test codegen"
            );
        }
    }
    index.push_str("\n/// The kernel of the example named `name`.\npub fn by_name<T: lossc::Float>(name: &str) -> Option<lossc::Kernel<T>> {\n    match name {\n");
    for path in examples() {
        let stem = path.file_stem().unwrap().to_string_lossy().into_owned();
        index.push_str(&format!("        \"{stem}\" => Some({stem}::kernel()),\n"));
    }
    index.push_str("        _ => None,\n    }\n}\n");
    if bless {
        std::fs::write("tests/kernels/mod.rs", &index).unwrap();
    } else {
        let committed = std::fs::read_to_string("tests/kernels/mod.rs").unwrap_or_default();
        assert!(
            committed == index,
            "tests/kernels/mod.rs is stale: run LOSSC_BLESS=1 cargo test --test codegen"
        );
    }
}

fn check<T: Float>(tol: f64) {
    for path in examples() {
        let stem = path.file_stem().unwrap().to_string_lossy().into_owned();
        let loss = Loss::from_file(&path).unwrap();
        let k = kernel::<T>(&stem);
        let interp = loss.compile::<T>().unwrap();
        let generated = loss.compile::<T>().unwrap().with_kernel(k).unwrap();
        let n = if std::fs::read_to_string(&path).unwrap().contains('@') {
            40
        } else {
            20_000
        };
        let arrays = arrays::<T>(&loss, n);
        let inputs = inputs_of(&arrays);
        let (a, b) = (
            interp.eval(&inputs).unwrap(),
            generated.eval(&inputs).unwrap(),
        );
        let close = |x: f64, y: f64, scale: f64| (x - y).abs() <= tol * y.abs().max(scale);
        assert!(
            close(b.loss().f64(), a.loss().f64(), 1e-30),
            "{stem}: loss {} vs {}",
            b.loss(),
            a.loss()
        );
        for (name, ga) in a.grads() {
            let gb = b.grad(name);
            let scale = ga.iter().fold(0.0f64, |m, x| m.max(x.f64().abs()));
            for (x, y) in gb.iter().zip(ga.iter()) {
                assert!(
                    close(x.f64(), y.f64(), scale),
                    "{stem} d/d{name}: {x} vs {y}"
                );
            }
        }
    }
}

#[test]
fn generated_kernels_agree_with_the_interpreter_in_f64() {
    check::<f64>(1e-13);
}

#[test]
fn generated_kernels_agree_with_the_interpreter_in_f32() {
    check::<f32>(1e-5);
}

#[test]
fn a_kernel_for_another_spec_is_refused() {
    let loss = Loss::from_file("examples/huber.loss").unwrap();
    let e = loss
        .compile::<f64>()
        .unwrap()
        .with_kernel(kernel::<f64>("mse"))
        .unwrap_err()
        .to_string();
    assert!(e.contains("does not match this spec"), "{e}");
    // A changed param changes the plan.
    let other = loss.with_param("delta", 2.0).unwrap();
    assert!(
        other
            .compile::<f64>()
            .unwrap()
            .with_kernel(kernel::<f64>("huber"))
            .is_err()
    );
}

/// Values just outside a domain (and NaN, outside every domain).
fn outside(dom: &Dom) -> Vec<f64> {
    let mut v = vec![f64::NAN];
    match dom {
        Dom::Range(r) => {
            if r.lo.is_finite() {
                v.push(r.lo - 0.5);
                if !r.lo_closed {
                    v.push(r.lo);
                }
            } else {
                v.push(f64::NEG_INFINITY);
            }
            if r.hi.is_finite() {
                v.push(r.hi + 0.5);
                if !r.hi_closed {
                    v.push(r.hi);
                }
            } else {
                v.push(f64::INFINITY);
            }
        }
        Dom::Labels(vs) => v.push(vs[vs.len() - 1] + 0.5),
        Dom::Class(_) => v.extend([-1.0, 0.5]),
        _ => v.push(2.0),
    }
    v
}

#[test]
fn generated_kernels_report_the_same_input_errors_as_the_interpreter() {
    // In f64 an arithmetic-bound pass tests its inputs in a loop of their
    // own, in f32 inline.
    same_input_errors::<f32>();
    same_input_errors::<f64>();
}

fn same_input_errors<T: Float>() {
    // Generated single-pass kernels test values as they read them; the
    // error must be the interpreter's, wherever the bad value is.
    let mut cases = 0;
    for path in examples() {
        let stem = path.file_stem().unwrap().to_string_lossy().into_owned();
        let loss = Loss::from_file(&path).unwrap();
        let interp = loss.compile::<T>().unwrap();
        let generated = loss
            .compile::<T>()
            .unwrap()
            .with_kernel(kernel(&stem))
            .unwrap();
        let n = if std::fs::read_to_string(&path).unwrap().contains('@') {
            40
        } else {
            20_000
        };
        let c = loss.checked();
        // Every vector 40 wide too, so that generated loops over each row's
        // components run (narrower ones run on transposed blocks of rows);
        // the bad value in the first and in the last component of its row,
        // in a row inside a chunk and in the last chunk.
        let names: Vec<String> = c.sizes.keys().cloned().collect();
        let wide: Vec<(&str, usize)> = names.iter().map(|k| (k.as_str(), 40)).collect();
        let layouts: Vec<(bool, bool)> = if wide.is_empty() {
            vec![(false, false)]
        } else {
            vec![(false, false), (true, false), (true, true)]
        };
        for v in c.data.iter().chain(&c.preds) {
            for bad in outside(&v.dom) {
                for (&(is_wide, last), row) in
                    layouts.iter().flat_map(|l| [(l, n / 2 + 1), (l, n - 3)])
                {
                    let mut arrays = if is_wide {
                        arrays_sized::<T>(&loss, n, &wide)
                    } else {
                        arrays::<T>(&loss, n)
                    };
                    let a = &mut arrays.iter_mut().find(|(k, _)| *k == v.name).unwrap().1;
                    let width = a.len() / n;
                    let at = width * row + if last { width - 1 } else { 0 };
                    a.as_slice_mut().unwrap()[at] = T::of(bad);
                    let inputs = inputs_of(&arrays);
                    let want = interp.eval(&inputs).err().map(|e| e.to_string());
                    let got = generated.eval(&inputs).err().map(|e| e.to_string());
                    assert!(
                        want.is_some(),
                        "{stem}: {} = {bad} at row {row} accepted",
                        v.name
                    );
                    assert!(
                        want.as_deref()
                            .is_some_and(|w| w.contains(&format!("row {row}"))),
                        "{stem}: {want:?}"
                    );
                    assert_eq!(
                        got, want,
                        "{stem}: {} = {bad} (wide {is_wide}, last {last})",
                        v.name
                    );
                    cases += 1;
                }
            }
        }
    }
    assert!(cases > 100, "{cases} cases");
}

/// The interpreter and the committed kernel `stem` for one spec file.
fn both<T: Float>(path: &str, stem: &str) -> (Loss, Evaluator<T>, Evaluator<T>) {
    let loss = Loss::from_file(path).unwrap();
    let interp = loss.compile::<T>().unwrap();
    let generated = loss
        .compile::<T>()
        .unwrap()
        .with_kernel(kernel::<T>(stem))
        .unwrap();
    (loss, interp, generated)
}

#[test]
fn loop_kernels_agree_for_every_vector_width_and_thread_count() {
    // Generated loops over components: widths that are not, are, and are
    // just past a multiple of the eight and sixteen lanes, one component,
    // and 1000; a row count that leaves a short last block, a single row,
    // and one row past a block of 64; results identical with one and two
    // threads.
    for (stem, size) in [
        ("cce_logits", "C"),
        ("multilabel", "L"),
        ("triplet", "D"),
        ("contrastive", "D"),
        ("reductions", "C"),
        ("two_softmaxes", "C"),
        ("scalar_pred_of_a_row", "C"),
    ] {
        let path = examples()
            .into_iter()
            .find(|p| p.file_stem().is_some_and(|f| f == stem))
            .unwrap();
        let loss = Loss::from_file(&path).unwrap();
        let cases = [1usize, 7, 8, 9, 31, 32, 33, 47, 48, 64, 100, 1000]
            .into_iter()
            .map(|w| (w, if w == 1000 { 300 } else { 16_384 + 37 }))
            // (one row, and a block of rows and one more, on both bodies)
            .chain([(1, 1), (10, 1), (10, 65), (40, 1), (40, 65)]);
        for (width, n) in cases {
            let arrays = arrays_sized::<f64>(&loss, n, &[(size, width)]);
            let inputs = inputs_of(&arrays);
            let reference = loss.compile::<f64>().unwrap().eval(&inputs).unwrap();
            let mut bits = Vec::new();
            for threads in [1, 2] {
                let ev = loss
                    .compile::<f64>()
                    .unwrap()
                    .with_kernel(kernel(stem))
                    .unwrap()
                    .with_threads(threads)
                    .unwrap();
                let out = ev.eval(&inputs).unwrap();
                let close =
                    |x: f64, y: f64, scale: f64| (x - y).abs() <= 1e-13 * y.abs().max(scale);
                assert!(
                    close(out.loss(), reference.loss(), 1e-30),
                    "{stem} {size}={width}: loss {} vs {}",
                    out.loss(),
                    reference.loss()
                );
                let mut all = vec![out.loss().to_bits()];
                for (name, want) in reference.grads() {
                    let got = out.grad(name);
                    assert_eq!(got.shape(), want.shape());
                    let scale = want.iter().fold(0.0f64, |m, x| m.max(x.abs()));
                    for (x, y) in got.iter().zip(want.iter()) {
                        assert!(
                            close(*x, *y, scale),
                            "{stem} {size}={width} d/d{name}: {x} vs {y}"
                        );
                    }
                    all.extend(got.iter().map(|x| x.to_bits()));
                }
                bits.push(all);
            }
            assert!(
                bits[0] == bits[1],
                "{stem} {size}={width}: 1 and 2 threads differ"
            );
        }
    }
}

#[test]
fn a_pass_that_reads_a_vector_only_by_index_is_generated() {
    // No loop over components, one gather: a generated per-row pass (this
    // used to panic in the generator, which expected a loop).
    let loss = Loss::from_source(
        "loss gather_weight\ntask binary\ndata w : vector [C]\ndata c : class [C]\n\
         data y : label {0, 1}\npred z : logit\nminimize mean(w[c] * bce_logits(y, z))\n",
    )
    .unwrap();
    let src = loss.codegen("gather_weight").unwrap();
    assert!(src.contains("vec![Some(pass0::<T>)]"), "{src}");
    assert!(src.contains("math::gather(xr0, v3)"), "{src}");
    assert!(!src.contains("b.interpret"), "{src}");
}

#[test]
fn peeled_one_hot_loops_agree_with_the_interpreter_for_every_kind_of_value() {
    // `peel.loss` compares the component number with `k` in every kind of
    // loop the generator peels; `k` takes component numbers (first, inside,
    // last), -0, and values no component has (negative, fractional, one past
    // the last, huge, tiny negative).
    fn run<T: Float>(tol: f64) {
        let (loss, interp, generated) = both::<T>("tests/kernels/specs/peel.loss", "peel");
        // (below 32 components nothing is peeled: the transposed blocks
        // compare every component, which must give the same values)
        for width in [10usize, 33, 40, 100] {
            let last = (width - 1) as f64;
            for k in [
                0.0,
                -0.0,
                5.0,
                32.0,
                last,
                last + 1.0,
                -1.0,
                3.5,
                1e9,
                -1e-300,
            ] {
                let mut arrays = arrays_sized::<T>(&loss, 64, &[("C", width)]);
                for (name, a) in arrays.iter_mut() {
                    if name == "k" {
                        a.fill(T::of(k));
                    }
                }
                let inputs = inputs_of(&arrays);
                let want = interp.eval(&inputs).unwrap();
                let got = generated.eval(&inputs).unwrap();
                let close = |x: f64, y: f64, scale: f64| (x - y).abs() <= tol * y.abs().max(scale);
                let (a, b) = (got.loss().f64(), want.loss().f64());
                assert!(close(a, b, 1e-30), "C={width} k={k}: loss {a} vs {b}");
                for (name, gw) in want.grads() {
                    let scale = gw.iter().fold(0.0f64, |m, x| m.max(x.f64().abs()));
                    for (x, y) in got.grad(name).iter().zip(gw.iter()) {
                        assert!(
                            close(x.f64(), y.f64(), scale),
                            "C={width} k={k} d/d{name}: {x} vs {y}"
                        );
                    }
                }
            }
        }
    }
    run::<f64>(1e-13);
    run::<f32>(1e-5);
}

#[test]
fn a_logsumexp_read_straight_from_its_input_reports_a_bad_value_anywhere_in_the_row() {
    // The maximum and the test of a row run sixteen lanes at a time and
    // then over the leftover components: a bad value in the first, the
    // eighth, the sixteenth, the next-to-last or the last component of rows
    // whose width is and is not a multiple of sixteen is reported as the
    // interpreter reports it. Below 32 components the rows run in
    // transposed blocks, tested a component at a time across the rows.
    let (loss, interp, generated) = both::<f32>("examples/cce_logits.loss", "cce_logits");
    let n = 5000;
    for width in [1usize, 2, 10, 17, 31, 33, 37, 39, 40, 48, 64, 100] {
        let ats = [0usize, 7, 15, width.saturating_sub(2), width - 1];
        for at in ats.into_iter().filter(|&at| at < width) {
            for bad in [f32::NAN, f32::INFINITY, f32::NEG_INFINITY] {
                let mut arrays = arrays_sized::<f32>(&loss, n, &[("C", width)]);
                let z = &mut arrays.iter_mut().find(|(name, _)| name == "z").unwrap().1;
                z.as_slice_mut().unwrap()[width * (n - 3) + at] = bad;
                let inputs = inputs_of(&arrays);
                let want = interp.eval(&inputs).err().map(|e| e.to_string());
                assert!(want.is_some(), "C={width} at {at}: {bad} accepted");
                let got = generated.eval(&inputs).err().map(|e| e.to_string());
                assert_eq!(got, want, "C={width} at {at} bad {bad}");
            }
        }
    }
}
