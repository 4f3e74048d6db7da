//! Derivation speed: lowering, differentiating and simplifying every
//! example, and a deliberately deep spec (30 nested compositions of
//! products, quotients and functions). Node counts before and after
//! simplification are printed once, beside the timings.

use criterion::{Criterion, criterion_group, criterion_main};
use std::hint::black_box;

fn deep_spec() -> String {
    // u_{k+1} = sigmoid(u_k * p) / (1 + u_k^2) + log(1 + exp(u_k)) - u_k * y
    let mut lets = String::from("let u0 = p * y\n");
    for k in 0..30 {
        lets.push_str(&format!(
            "let u{n} = sigmoid(u{k} * p) / (1 + u{k}^2) + softplus(u{k}) - u{k} * y\n",
            n = k + 1
        ));
    }
    format!("loss deep\ntask regression\ndata y : real\npred p : real\n{lets}minimize mean(u30)\n")
}

fn report(name: &str, loss: &lossc::Loss) {
    let d = loss.derive().expect("derivable");
    for p in &d.preds {
        eprintln!(
            "{name:>24} / {:<10} IR nodes: spec {:>5}, raw derivative {:>5}, simplified {:>5}",
            p.pred,
            d.nodes_before,
            d.graph.dag_size(p.raw),
            d.graph.dag_size(p.per_sample)
        );
    }
}

fn derive(c: &mut Criterion) {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/examples");
    let mut examples: Vec<(String, lossc::Loss)> = std::fs::read_dir(dir)
        .expect("examples/")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "loss"))
        .map(|p| {
            (
                p.file_stem().unwrap().to_string_lossy().into_owned(),
                lossc::Loss::from_file(&p).expect("valid"),
            )
        })
        .collect();
    examples.sort_by(|a, b| a.0.cmp(&b.0));
    let deep = lossc::Loss::from_source(deep_spec()).expect("valid deep spec");
    for (name, loss) in &examples {
        report(name, loss);
    }
    report("deep (30 compositions)", &deep);

    let mut group = c.benchmark_group("derive + simplify");
    for (name, loss) in &examples {
        group.bench_function(name.as_str(), |b| {
            b.iter(|| black_box(loss.derive().unwrap()))
        });
    }
    group.bench_function("deep (30 compositions)", |b| {
        b.iter(|| black_box(deep.derive().unwrap()))
    });
    group.finish();
}

criterion_group!(benches, derive);
criterion_main!(benches);
