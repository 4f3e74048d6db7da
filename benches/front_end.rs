//! Front-end speed: parsing and checking specs.
//!
//! The target is "well under a millisecond" for the largest bundled example.
//! Parsing alone is measured beside parse + check, so the two stages'
//! shares are visible in one run.

use criterion::{Criterion, criterion_group, criterion_main};
use std::hint::black_box;

fn examples() -> Vec<(String, String)> {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/examples");
    let mut out: Vec<(String, String)> = std::fs::read_dir(dir)
        .expect("examples/ exists")
        .map(|e| e.expect("readable entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "loss"))
        .map(|p| {
            let name = p.file_stem().unwrap().to_string_lossy().into_owned();
            (name, std::fs::read_to_string(&p).expect("readable example"))
        })
        .collect();
    out.sort();
    out
}

fn front_end(c: &mut Criterion) {
    let all = examples();
    let (name, largest) = all
        .iter()
        .max_by_key(|(_, src)| src.len())
        .expect("at least one example");
    let mut group = c.benchmark_group(format!("largest example ({name}, {} bytes)", largest.len()));
    group.bench_function("parse", |b| {
        b.iter(|| lossc::parse::parse(black_box(largest)).unwrap())
    });
    group.bench_function("parse + check", |b| {
        b.iter(|| lossc::Loss::from_source(black_box(largest.as_str())).unwrap())
    });
    group.finish();
    c.bench_function("parse + check, all examples", |b| {
        b.iter(|| {
            for (_, src) in &all {
                black_box(lossc::Loss::from_source(src.as_str()).unwrap());
            }
        })
    });
}

criterion_group!(benches, front_end);
criterion_main!(benches);
