//! The documentation keeps up with the code: every diagnostic code the
//! source can emit is documented, and every builtin appears in the
//! language reference.

fn read(path: &str) -> String {
    std::fs::read_to_string(format!("{}/{path}", env!("CARGO_MANIFEST_DIR"))).unwrap()
}

fn source_files(dir: &std::path::Path, out: &mut Vec<String>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            source_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(std::fs::read_to_string(path).unwrap());
        }
    }
}

/// Codes written as string literals in the source: `"E0042"`, `"W0001"`.
fn emitted_codes() -> std::collections::BTreeSet<String> {
    let mut files = Vec::new();
    source_files(
        &std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src"),
        &mut files,
    );
    let mut codes = std::collections::BTreeSet::new();
    for text in files {
        for (i, _) in text.match_indices("\"E0").chain(text.match_indices("\"W0")) {
            let code = &text[i + 1..(i + 6).min(text.len())];
            if code[1..].chars().all(|c| c.is_ascii_digit()) && text[i + 6..].starts_with('"') {
                codes.insert(code.to_string());
            }
        }
    }
    codes
}

#[test]
fn every_diagnostic_code_is_documented() {
    let doc = read("docs/diagnostics.md");
    let codes = emitted_codes();
    assert!(codes.len() >= 30, "found only {codes:?}");
    let missing: Vec<&String> = codes
        .iter()
        .filter(|c| !doc.contains(&format!("## {c}")))
        .collect();
    assert!(missing.is_empty(), "undocumented codes: {missing:?}");
}

#[test]
fn every_builtin_and_standard_loss_is_in_the_language_reference() {
    let doc = read("docs/language.md");
    for b in lossc::sema::builtins::BUILTINS {
        assert!(
            doc.contains(&format!("`{}", b.name)),
            "builtin {} missing from docs/language.md",
            b.name
        );
    }
    for stmt in &lossc::sema::prelude().stmts {
        if let lossc::ast::StmtKind::Def(d) = &stmt.kind {
            assert!(
                doc.contains(&d.name.name),
                "standard loss {} missing from docs/language.md",
                d.name.name
            );
        }
    }
}
