//! Helpers shared by the test files that run the committed kernels: the
//! spec files, random in-domain inputs for them, and the kernels.
#![allow(dead_code)] // each test file uses its own part

use lossc::grad::{Batch, Rng, random_batch};
use lossc::sema::types::Shape;
use lossc::{Float, Inputs, Kernel, Loss};
use ndarray::{ArrayD, IxDyn};

#[path = "../kernels/mod.rs"]
pub mod kernels;

/// Every example, then the specs in `tests/kernels/specs/` that exercise
/// what no example does (every reduction in a generated loop).
pub fn examples() -> Vec<std::path::PathBuf> {
    let specs = |dir: &str| {
        let mut v: Vec<_> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension().is_some_and(|e| e == "loss"))
            .collect();
        v.sort();
        v
    };
    let mut v = specs("examples");
    v.extend(specs("tests/kernels/specs"));
    v
}

/// The committed kernel of the spec `name`.
pub fn kernel<T: Float>(name: &str) -> Kernel<T> {
    kernels::by_name::<T>(name).unwrap_or_else(|| panic!("no kernel for {name}"))
}

/// Random in-domain arrays for every input of `loss`.
pub fn arrays<T: Float>(loss: &Loss, n: usize) -> Vec<(String, ArrayD<T>)> {
    as_arrays(loss, &random_batch(loss.checked(), n, &mut Rng::new(4)), n)
}

/// A batch's columns as arrays: `[n]` for a scalar, `[n, width]` for a vector.
pub fn as_arrays<T: Float>(loss: &Loss, batch: &Batch, n: usize) -> Vec<(String, ArrayD<T>)> {
    let c = loss.checked();
    c.data
        .iter()
        .chain(&c.preds)
        .map(|v| {
            let rows = &batch.values[&v.name];
            let flat: Vec<T> = rows.iter().flatten().map(|x| T::of(*x)).collect();
            let shape = match v.shape {
                Shape::Scalar => vec![n],
                Shape::Vector(_) => vec![n, rows[0].len()],
            };
            (
                v.name.clone(),
                ArrayD::from_shape_vec(IxDyn(&shape), flat).unwrap(),
            )
        })
        .collect()
}

/// The arrays as evaluator inputs.
pub fn inputs_of<T: Float>(arrays: &[(String, ArrayD<T>)]) -> Inputs<'_, T> {
    let mut inputs = Inputs::new();
    for (name, a) in arrays {
        inputs.insert(name.clone(), a.view());
    }
    inputs
}

/// Random in-domain arrays with the size names given.
pub fn arrays_sized<T: Float>(
    loss: &Loss,
    n: usize,
    sizes: &[(&str, usize)],
) -> Vec<(String, ArrayD<T>)> {
    let sizes = sizes.iter().map(|(k, v)| (k.to_string(), *v)).collect();
    let batch = lossc::grad::random_batch_sized(loss.checked(), n, sizes, &mut Rng::new(9));
    as_arrays(loss, &batch, n)
}
