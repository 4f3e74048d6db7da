//! `eval_into` allocates nothing once the buffers exist (this test binary
//! counts every allocation).

use lossc::{Inputs, Loss};

#[path = "kernels/mod.rs"]
mod kernels;
use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};

struct Counting;
static COUNT: AtomicUsize = AtomicUsize::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        COUNT.fetch_add(1, Ordering::SeqCst);
        unsafe { System.alloc(l) }
    }
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        unsafe { System.dealloc(p, l) }
    }
}

#[global_allocator]
static ALLOC: Counting = Counting;

#[test]
fn repeated_evaluations_allocate_nothing() {
    for (spec, vector) in [
        ("examples/focal_logits.loss", false),
        ("examples/cce_logits.loss", true),
        ("examples/dice.loss", false),
    ] {
        let loss = Loss::from_file(spec).unwrap();
        let stem = spec
            .trim_start_matches("examples/")
            .trim_end_matches(".loss");
        // The interpreter, and the generated code (whose loops over a
        // vector's components keep per-row buffers in the worker's scratch).
        // Each is built just before it is measured: the count is
        // process-wide, and another evaluator's pool thread, still starting
        // up on a loaded machine, would be counted too.
        for generated in [false, true] {
            let ev = loss.compile::<f64>().unwrap();
            let ev = if generated {
                ev.with_kernel(kernels::by_name(stem).unwrap()).unwrap()
            } else {
                ev
            };
            let ev = ev.with_threads(1).unwrap();
            let n = 3000;
            let y = ndarray::Array1::from_iter((0..n).map(|i| (i % 2) as f64));
            let z1 = ndarray::Array1::from_iter((0..n).map(|i| ((i % 7) as f64 - 3.0) / 4.0 + 0.0));
            let p = ndarray::Array1::from_iter((0..n).map(|i| 0.1 + (i % 8) as f64 / 10.0));
            let z2 = ndarray::Array2::from_shape_fn((n, 5), |(i, j)| ((i + j) % 5) as f64);
            let inputs = match (vector, spec.contains("dice")) {
                (true, _) => Inputs::new()
                    .with("y", y.view().into_dyn())
                    .with("z", z2.view().into_dyn()),
                (false, true) => Inputs::new()
                    .with("y", y.view().into_dyn())
                    .with("p", p.view().into_dyn()),
                _ => Inputs::new()
                    .with("y", y.view().into_dyn())
                    .with("z", z1.view().into_dyn()),
            };
            let mut out = ev.eval(&inputs).unwrap();
            ev.eval_into(&inputs, &mut out).unwrap();
            let before = COUNT.load(Ordering::SeqCst);
            for _ in 0..3 {
                ev.eval_into(&inputs, &mut out).unwrap();
            }
            let allocations = COUNT.load(Ordering::SeqCst) - before;
            assert_eq!(
                allocations, 0,
                "{spec}: {allocations} allocations in 3 evaluations"
            );
        }
    }
}
