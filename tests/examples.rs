//! Every bundled example checks cleanly, with no warnings, and its parse
//! tree is snapshot-tested so a grammar change shows up as a reviewed diff.

use lossc::{Loss, SourceFile};

#[test]
fn every_example_checks_without_errors_or_warnings() {
    let mut count = 0;
    for entry in std::fs::read_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/examples")).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "loss") {
            let loss = Loss::from_file(&path)
                .unwrap_or_else(|e| panic!("{}", e.render(lossc::Color::Never)));
            assert!(loss.warnings().is_empty(), "{}", loss.warning_report());
            let stem = path.file_stem().unwrap().to_str().unwrap();
            assert_eq!(
                loss.checked().name,
                stem,
                "the loss name matches the file name"
            );
            count += 1;
        }
    }
    assert!(count >= 21, "only {count} examples");
}

#[test]
fn parse_trees_of_the_examples() {
    insta::glob!(
        concat!(env!("CARGO_MANIFEST_DIR"), "/examples"),
        "*.loss",
        |path| {
            let text = std::fs::read_to_string(path).unwrap();
            let file = SourceFile::new(path.file_name().unwrap().to_string_lossy(), text.clone());
            let spec = lossc::parse::parse(&text).unwrap();
            insta::assert_snapshot!(spec.to_sexpr(&file));
        }
    );
}

#[test]
fn the_prelude_is_valid_and_every_standard_loss_is_callable() {
    let diags = lossc::sema::check_library(lossc::sema::prelude(), lossc::sema::PRELUDE_SOURCE);
    assert!(diags.is_empty(), "{diags:#?}");
    for name in [
        "mse",
        "mae",
        "huber",
        "log_cosh",
        "quantile",
        "power",
        "bce",
        "bce_logits",
        "hinge",
        "squared_hinge",
        "focal",
        "focal_logits",
        "cce",
        "cce_logits",
        "entropy",
        "contrastive",
        "triplet",
    ] {
        assert!(
            lossc::sema::PRELUDE_SOURCE.contains(&format!("def {name}(")),
            "{name} missing from the prelude"
        );
    }
}
