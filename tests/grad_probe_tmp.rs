#[test]
fn probe() {
    for entry in std::fs::read_dir("examples").unwrap() {
        let path = entry.unwrap().path();
        let loss = lossc::Loss::from_file(&path).unwrap();
        match lossc::grad::derive(loss.checked()) {
            Ok(d) => {
                for p in &d.preds {
                    let pr = lossc::print::Printer::new(&d.graph, lossc::print::Style::Text);
                    println!("{}: d/d{} = {}   [raw {}]  hess {}", path.display(), p.pred, pr.print(p.per_sample), d.graph.tree_size(p.raw), pr.print(p.hessian));
                }
                for s in &d.stable { println!("   stable {} : {} -> {}", s.rule, s.from, s.to); }
            }
            Err(e) => println!("{}: {}", path.display(), e),
        }
    }
}
